//! TLS end to end with a CA made at test time: the server speaks HTTPS,
//! the agent and the CLI trust the private CA with --ca-file or
//! HEAL_CA_FILE, and the front door's limits hold.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{heal_cli, test_dir, wait_until, Agent, Server};

/// Writes a test CA and a certificate for 127.0.0.1 and localhost signed by
/// it; returns (ca.pem, cert.pem, key.pem).
pub(crate) fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "heal test ca");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

const ADMIN: &str = "admin-secret-0123456789";
const AGENT: &str = "agent-secret-0123456789";

fn config(cert: &Path, key: &Path) -> String {
    format!(
        r#"
[server]
tls_cert = "{}"
tls_key = "{}"
lease = "5s"

[[token]]
name = "admin"
scopes = ["admin"]
secret = "{ADMIN}"

[[token]]
name = "agent-web-1"
scopes = ["agent"]
agent = "web-1"
secret = "{AGENT}"

[[rule]]
name = "fix"
runbook = "fix"
target = "labels.instance"

[runbook.fix]
steps = [ {{ name = "fix", run = "echo fixed over tls" }} ]
"#,
        cert.display(),
        key.display()
    )
}

#[test]
fn server_agent_and_cli_speak_tls_with_a_private_ca() {
    let dir = test_dir("tls-e2e");
    let (ca, cert, key) = pki(&dir);
    let mut server = Server::start(&dir, &config(&cert, &key));
    server.token = Some(ADMIN.into());
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let ca_s = ca.to_str().unwrap();
    let url = server.url.clone();

    // The CLI trusts the CA through HEAL_CA_FILE; without it, it refuses.
    let (code, out, err) = heal_cli(
        &["events", "--server", &url, "--token", ADMIN, "--json"],
        &[("HEAL_CA_FILE", ca_s)],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        serde_json::json!([])
    );
    let (code, _, err) = heal_cli(&["events", "--server", &url, "--token", ADMIN], &[], None);
    assert_eq!(code, 1, "an unknown CA is refused");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );

    // A real agent over TLS runs a fired alert's runbook.
    let _agent = Agent::start(&url, "web-1", &["--ca-file", ca_s, "--token", AGENT]);
    let (code, out, err) = heal_cli(
        &[
            "fire",
            "Down",
            "instance=web-1",
            "--server",
            &url,
            "--token",
            ADMIN,
            "--json",
        ],
        &[("HEAL_CA_FILE", ca_s)],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let fired: Value = serde_json::from_str(&out).unwrap();
    let id = fired["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap();
    let done = wait_until(
        "the event to succeed over TLS",
        Duration::from_secs(30),
        || {
            let (code, out, _) = heal_cli(
                &[
                    "events",
                    "show",
                    &id.to_string(),
                    "--server",
                    &url,
                    "--token",
                    ADMIN,
                    "--json",
                ],
                &[("HEAL_CA_FILE", ca_s)],
                None,
            );
            let e: Value = serde_json::from_str(&out).ok()?;
            (code == 0 && e["state"] == "succeeded").then_some(e)
        },
    );
    assert!(done.to_string().contains("fixed over tls"), "{done}");

    // A body and an answer many times the front's buffers and TLS records
    // (about 330 kB each way) pass whole.
    let client = heal::client::Client::new(
        std::sync::Arc::new(heal::client::Servers::of(vec![url.clone()])),
        Some(ADMIN.into()),
        Duration::from_secs(30),
        Some(ca.as_path()),
    )
    .unwrap();
    let pad = "p".repeat(1000);
    let alerts: Vec<Value> = (0..300)
        .map(|n| serde_json::json!({"name": "Bulk", "labels": {"n": n.to_string(), "pad": pad}}))
        .collect();
    let (code, answer) = client
        .request("POST", "/api/v1/alerts", Some(&Value::Array(alerts)))
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    let (code, listed) = client
        .request("GET", "/api/v1/alerts?name=Bulk&limit=1000", None)
        .unwrap();
    assert_eq!(code, 200, "{listed}");
    let listed = listed["alerts"].as_array().unwrap();
    assert_eq!(listed.len(), 300);
    assert!(listed.iter().all(|a| a["labels"]["pad"] == pad.as_str()));

    // Plain HTTP on the TLS port is not served.
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("\"ok\""),
        "plain http answered"
    );

    // With TLS, heal may listen beyond loopback without --insecure-http.
    let dir2 = test_dir("tls-public");
    let public = Server::start_with(&dir2, &config(&cert, &key), "0.0.0.0:0", &[]);
    assert!(public.url.starts_with("https://0.0.0.0:"), "{}", public.url);
}

#[test]
fn bad_certificates_are_refused_at_start_with_the_file_named() {
    if crate::support::sqlite_only("tls::bad_certificates_are_refused_at_start_with_the_file_named")
    {
        return;
    }
    let dir = test_dir("tls-bad");
    let (_, cert, key) = pki(&dir);
    std::fs::write(dir.join("junk.pem"), "not a pem").unwrap();
    for (c, k, want) in [
        (dir.join("junk.pem"), key.clone(), "tls_cert"),
        (cert.clone(), dir.join("missing.pem"), "tls_key"),
        (key.clone(), cert.clone(), "tls_cert"),
    ] {
        std::fs::write(dir.join("runbooks.toml"), config(&c, &k)).unwrap();
        let cfg = dir.join("runbooks.toml");
        let db = dir.join("heal.db");
        let (code, _, err) = heal_cli(
            &[
                "serve",
                "--config",
                cfg.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
            None,
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want), "want {want} in {err}");
    }
}

/// Sends raw bytes on a new connection; returns what came back before the
/// server closed it, and how long that took.
pub(crate) fn raw(addr: &str, parts: &[&[u8]], pause: Duration) -> (String, Duration) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t = Instant::now();
    for p in parts {
        s.write_all(p).unwrap();
        std::thread::sleep(pause);
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    (String::from_utf8_lossy(&got).into_owned(), t.elapsed())
}

#[test]
fn the_front_door_cuts_off_slow_huge_and_chunked_requests_and_others_go_on() {
    let dir = test_dir("front-limits");
    let server = Server::start(
        &dir,
        "[server]\nrequest_timeout = \"2s\"\nmax_header = 2048\nmax_connections = 40\nhttp_threads = 2\n",
    );
    let addr = server.addr.clone();
    // Stalled clients, more than there are HTTP workers.
    let stalled: Vec<_> = (0..8)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let head: &[u8] = if i % 2 == 0 {
                    b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Ty"
                } else {
                    b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":"
                };
                raw(&addr, &[head], Duration::ZERO)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (status, body) = server.post("/api/v1/alerts", &serde_json::json!({ "name": "Fine" }));
    assert_eq!(status, 200, "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "others are served at once: {:?}",
        t.elapsed()
    );
    for s in stalled {
        let (answer, took) = s.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    let big = format!(
        "GET /-/healthy HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4000)
    );
    let (answer, _) = raw(&addr, &[big.as_bytes()], Duration::ZERO);
    assert!(
        answer.starts_with("HTTP/1.1 431") && answer.contains("max_header"),
        "{answer}"
    );
    let (answer, _) = raw(
        &addr,
        &[b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
        Duration::ZERO,
    );
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    // A request sent in pieces, slower than nothing but within the timeout, is served.
    let (answer, _) = raw(
        &addr,
        &[
            b"GET /-/heal",
            b"thy HTTP/1.1\r\nHost: localhost\r\n",
            b"Connection: close\r\n\r\n",
        ],
        Duration::from_millis(300),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Beyond max_connections with none idle (each holds a partly sent request): 503 at once.
    let held: Vec<_> = (0..40)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /-/healthy HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (answer, _) = raw(&addr, &[b"GET /-/healthy HTTP/1.1\r\n\r\n"], Duration::ZERO);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(held);
    wait_until("connections to free up", Duration::from_secs(10), || {
        let (status, _) = server.get("/-/healthy");
        (status == 200).then_some(())
    });
}
