//! The front door against hostile and careless clients: slow bodies and
//! upgrade requests hold no HTTP worker, idle connections are closed however
//! they dribble, a TLS handshake has a deadline, the connection cap makes
//! room by closing the connection idle longest, and odd requests get an
//! answer at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{one_rule_config, test_dir, wait_agent_polling, Agent, Server};
use crate::tls::{pki, raw};

/// Reads until the server closes the connection or `limit` passes; returns
/// what came and whether the server closed it.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true)
            }
            Err(_) => {}
        }
    }
}

/// Reads one answer whose body is `Content-Length` long (the connection stays open).
fn read_answer(s: &mut TcpStream, limit: Duration) -> String {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A raw long poll of agent `id` that waits up to `wait` seconds.
fn poll_request(id: &str, wait: u64) -> Vec<u8> {
    let body = r#"{"instance":"raw-poll-1"}"#;
    format!(
        "POST /api/v1/agents/{id}/poll?wait={wait} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads the answer of a raw poll sent at `sent` with wait=5: no ops, after the whole wait.
fn assert_empty_poll_answer(s: &mut TcpStream, sent: Instant) {
    let answer = read_answer(s, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"ops\":[]"), "{answer}");
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(4500), "{waited:?}");
}

/// Sends `byte` every `every` until the server closes the connection;
/// returns how long that took, or None if it stayed open for 6 s.
fn dribble_until_closed(s: &mut TcpStream, byte: &[u8], every: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        if s.write_all(byte).is_err() || read_until_closed(s, every).1 {
            return Some(t.elapsed());
        }
    }
    None
}

#[test]
fn slow_bodies_and_upgrade_requests_hold_no_http_worker() {
    let dir = test_dir("front-slow-bodies");
    let threads = 2;
    let server = Server::start(
        &dir,
        &one_rule_config(
            r#"{ name = "fix", run = "true" }"#,
            &format!("http_threads = {threads}\npoll_wait = \"5s\""),
        ),
    );
    let _agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    let addr = server.addr.clone();
    // Three times as many slow bodies as there are HTTP workers, left open.
    let slow: Vec<TcpStream> = (0..3 * threads)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(
                b"POST /api/v1/alerts HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    // And as many upgrade requests with an empty body, then a blank line every second.
    let stop = Arc::new(AtomicBool::new(false));
    let upgrades: Vec<_> = (0..3 * threads)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let _ = s.write_all(
                    b"POST /login HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n",
                );
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                for _ in 0..20 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                    if s.write_all(b"\r\n").is_err() {
                        break;
                    }
                }
                String::from_utf8_lossy(&got).into_owned()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let t = Instant::now();
    let (status, body) = server.get("/-/healthy");
    assert_eq!(status, 200, "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "healthy took {:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let (status, body) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "Down", "labels": { "instance": "web-1" } }),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the webhook took {:?}",
        t.elapsed()
    );
    let id = body["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("an event: {body}"));
    // The agent's poll answer, its acknowledgement and its result all pass.
    let t = Instant::now();
    let done = server.wait_event(id, &["succeeded"], Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the op took {:?}: {done}",
        t.elapsed()
    );

    stop.store(true, Ordering::SeqCst);
    for u in upgrades {
        let answer = u.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("Upgrade"), "{answer}");
    }
    // The slow bodies are still held by the front, not by a worker: they end in 408 later.
    drop(slow);
}

#[test]
fn an_idle_connection_is_closed_whatever_dribbles_in_and_a_waiting_poll_is_not_idle() {
    let dir = test_dir("front-idle");
    let server = Server::start(
        &dir,
        "[server]\nidle_timeout = \"2s\"\npoll_wait = \"5s\"\nrequest_timeout = \"3s\"\n",
    );
    // Blank lines every 400 ms start no request: the idle clock keeps running.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let took = dribble_until_closed(&mut s, b"\r\n", Duration::from_millis(400))
        .expect("a dribbling idle connection was kept open");
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(4)).contains(&took),
        "closed after {took:?} (idle_timeout 2s)"
    );

    // After an answer, idle_timeout counts from its end.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut s, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let t = Instant::now();
    let (_, gone) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(gone, "an idle connection stayed open");
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(4)).contains(&t.elapsed()),
        "closed after {:?}",
        t.elapsed()
    );

    // A poll waiting longer than idle_timeout for its answer is not idle.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let t = Instant::now();
    s.write_all(&poll_request("raw-1", 5)).unwrap();
    assert_empty_poll_answer(&mut s, t);
}

#[test]
fn a_tls_handshake_dribbled_byte_by_byte_is_cut_at_request_timeout() {
    let dir = test_dir("front-tls-handshake");
    let (_, cert, key) = pki(&dir);
    let server = Server::start(
        &dir,
        &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\nrequest_timeout = \"2s\"\n",
            cert.display(),
            key.display()
        ),
    );
    let mut s = TcpStream::connect(&server.addr).unwrap();
    // A handshake record announcing 16 KiB, then one byte every 300 ms.
    s.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00]).unwrap();
    let took = dribble_until_closed(&mut s, &[0x01], Duration::from_millis(300))
        .expect("a dribbled handshake was kept open");
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
}

#[test]
fn at_max_connections_the_connection_idle_longest_makes_room() {
    let dir = test_dir("front-evict");
    let server = Server::start(
        &dir,
        "[server]\nmax_connections = 3\npoll_wait = \"5s\"\nrequest_timeout = \"10s\"\n",
    );
    let addr = server.addr.clone();
    // A parked poll: awaiting its answer, never idle.
    let mut poll = TcpStream::connect(&addr).unwrap();
    poll.write_all(&poll_request("raw-1", 5)).unwrap();
    let t = Instant::now();
    // Idle after one answer, then idle from the start (newer).
    let mut older = TcpStream::connect(&addr).unwrap();
    older
        .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut older, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    std::thread::sleep(Duration::from_millis(200));
    let mut newer = TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // A fourth connection is served; the one idle longest is closed for it.
    let (answer, _) = raw(
        &addr,
        &[b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"],
        Duration::ZERO,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, gone) = read_until_closed(&mut older, Duration::from_secs(1));
    assert!(gone, "the connection idle longest was kept");
    let (_, gone) = read_until_closed(&mut newer, Duration::from_millis(300));
    assert!(!gone, "a newer idle connection was closed first");

    // Two partly sent requests: the newer idle one goes for the second.
    let mut busy: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /-/healthy HTTP/1.1\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(200));
            s
        })
        .collect();
    let (_, gone) = read_until_closed(&mut newer, Duration::from_secs(1));
    assert!(gone, "the idle connection was kept while a busy one waited");
    // None idle (a poll awaiting its answer, two requests in flight): 503.
    let (answer, _) = raw(&addr, &[b"GET /-/healthy HTTP/1.1\r\n\r\n"], Duration::ZERO);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // The busy ones finish their requests and are answered.
    for s in &mut busy {
        s.write_all(b"Host: localhost\r\n\r\n").unwrap();
        let answer = read_answer(s, Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // The parked poll was never closed: it gets its answer.
    assert_empty_poll_answer(&mut poll, t);
}

#[test]
fn odd_requests_get_an_answer_at_once() {
    let dir = test_dir("front-odd");
    let server = Server::start(&dir, "[server]\nmax_body = 4096\n");
    let addr = &server.addr;
    for (request, want) in [
        (&b"GET /-/healthy\xff HTTP/1.1\r\nHost: localhost\r\n\r\n"[..], "HTTP/1.1 400"),
        (b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\nX-Name: \xc3\x28\r\n\r\n", "HTTP/1.1 400"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.1 505"),
        (
            b"POST /api/v1/alerts HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n",
            "HTTP/1.1 413",
        ),
    ] {
        // Left open after sending: the answer must come without waiting for more.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request).unwrap();
        let t = Instant::now();
        let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(5));
        let shown = String::from_utf8_lossy(request);
        assert!(answer.starts_with(want), "{shown:?}: {answer}");
        assert!(closed, "{shown:?}: the connection stays open");
        assert!(t.elapsed() < Duration::from_secs(1), "{shown:?}: {:?}", t.elapsed());
    }
    // A whole request before a refused one is answered first, then the refusal.
    let (answer, _) = raw(
        addr,
        &[b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\nGET /\xff HTTP/1.1\r\n\r\n"],
        Duration::ZERO,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let refusal = answer
        .find("HTTP/1.1 400")
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(
        answer[..refusal].ends_with('}'),
        "the 200 came whole: {answer}"
    );

    // A client that waits for 100 Continue before its body gets it from the front.
    let mut s = TcpStream::connect(addr).unwrap();
    let body = br#"{"name":"Continued"}"#;
    s.write_all(
        format!(
            "POST /api/v1/alerts HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = [0u8; 25];
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body).unwrap();
    let answer = read_answer(&mut s, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Connections that arrive together, each kept open after its answer, are
/// all answered within seconds. tiny_http could queue one of two
/// connections arriving while one of its threads was waking; that one then
/// waited, unread, until some other connection closed (up to
/// `idle_timeout`). It depends on timing, so the test makes many bursts.
#[test]
fn connections_arriving_together_are_all_answered() {
    let dir = test_dir("front-burst");
    let server = Server::start(
        &dir,
        &one_rule_config(r#"{ name = "s", run = "true" }"#, ""),
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    let (rounds, per_round) = (20, 48);
    for round in 0..rounds {
        let start = Arc::new(std::sync::Barrier::new(per_round));
        let clients: Vec<_> = (0..per_round)
            .map(|_| {
                let (start, addr) = (start.clone(), addr.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let mut s = TcpStream::connect(&addr).unwrap();
                    s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\n")
                        .unwrap();
                    let sent = Instant::now();
                    let answer = read_answer(&mut s, Duration::from_secs(5));
                    // Kept open until the whole burst is answered.
                    (answer, sent.elapsed(), s)
                })
            })
            .collect();
        let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        for (answer, took, _) in &answers {
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "round {round}: a connection got {answer:?} after {took:?}\n{}",
                server.logs()
            );
            assert!(took < &Duration::from_secs(3), "round {round}: {took:?}");
        }
    }
}
