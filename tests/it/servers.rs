//! Agents and CLI commands given several servers (`--server A,B`,
//! `HEAL_SERVER=A,B`): a request that gets no answer goes to the next
//! server, and the one that answers is used from then on. The two servers
//! here are independent (each its own database), so only what holds for
//! independent servers is tested: where requests go, not shared state.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::agent::{fire, only_op};
use crate::alert_files::ended;
use crate::support::{
    free_port, heal_cli, one_rule_config, test_dir, wait_agent_polling, Agent, Server,
};

/// Two `heal serve` processes with the same config, each on its own
/// database and free port.
fn two_servers(name: &str, config: &str) -> (Server, Server) {
    let a = Server::start(&test_dir(&format!("{name}-a")), config);
    let b = Server::start(&test_dir(&format!("{name}-b")), config);
    (a, b)
}

/// A stand-in for a proxy whose backend is down: answers 503 to each of
/// up to `n` requests, for at most 30 s.
fn unavailable(n: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < n && Instant::now() < deadline {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.read(&mut [0u8; 8192]);
            let _ = conn.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            served += 1;
        }
    });
    url
}

/// A loopback URL where nothing listens.
fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[test]
fn an_agent_moves_to_the_next_server_when_its_server_dies() {
    let config = one_rule_config(
        r#"{ name = "say", run = "echo healed by $HEAL_AGENT_ID" }"#,
        "",
    );
    let (mut a, b) = two_servers("servers-agent", &config);
    let agent = Agent::start(&format!("{},{}", a.url, b.url), "multi-1", &[]);
    wait_agent_polling(&a, "multi-1");
    let (_, agents_b) = b.get("/api/v1/agents");
    assert_eq!(agents_b["agents"], json!([]), "only A is polled at first");

    a.kill();
    wait_agent_polling(&b, "multi-1");
    let id = fire(&b, json!({ "instance": "multi-1" }));
    let event = ended(&b, id);
    assert_eq!(event["state"], "succeeded", "{event:#}");
    let op = only_op(&event);
    assert_eq!(op["agent"], "multi-1", "{event:#}");
    let logs = agent.logs();
    let switch = format!("switching from heal server {} to {}", a.url, b.url);
    let line = logs
        .lines()
        .find(|l| l.contains(&switch))
        .unwrap_or_else(|| panic!("no switch logged:\n{logs}"));
    assert!(
        line.contains(&format!("{}/api/v1/agents/multi-1/poll", a.url)),
        "the line says why: {line}"
    );
    assert_eq!(logs.matches(&switch).count(), 1, "one line:\n{logs}");
}

#[test]
fn cli_commands_try_the_next_server_and_check_the_list() {
    let config = one_rule_config(r#"{ name = "say", run = "true" }"#, "");
    let token =
        "[[token]]\nname = \"ops\"\nscopes = [\"admin\"]\nsecret = \"ops-token-0123456789\"\n";
    let a = Server::start(&test_dir("servers-cli-a"), &format!("{config}\n{token}"));
    let b = Server::start(&test_dir("servers-cli-b"), &config);
    let id = fire(&b, json!({ "instance": "nobody" }));
    let dead = dead_url();
    let events = |servers: &[&str]| {
        let mut args = vec!["events", "--json"];
        for s in servers {
            args.extend(["--server", s]);
        }
        heal_cli(&args, &[], None)
    };

    let (code, out, err) = events(&[&format!("{dead},{}", b.url)]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("events --json");
    assert_eq!(listed[0]["id"], id, "{out}");
    // The flag repeated is the same list.
    let (code, out, err) = events(&[&dead, &b.url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("\"id\": {id}")), "{out}");

    // 503 (a proxy whose backend is down) goes to the next server too.
    let stand_in = unavailable(2);
    let (code, out, err) = events(&[&format!("{stand_in},{}", b.url)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("\"id\": {id}")), "{out}");
    let (code, _, err) = events(&[&stand_in]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("503"), "{err}");
    // Any other answer is final: A wants a token, and B is not asked.
    let (code, _, err) = events(&[&format!("{},{}", a.url, b.url)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&a.url) && err.contains("401"), "{err}");

    let other_dead = dead_url();
    let (code, _, err) = events(&[&format!("{dead},{other_dead}")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&dead) && err.contains(&other_dead), "{err}");

    for (list, named) in [
        (format!("{dead},,{}", b.url), "empty entry"),
        (
            format!("ftp://127.0.0.1:21,{}", b.url),
            "ftp://127.0.0.1:21",
        ),
        (format!("{},{}/", b.url, b.url), "given twice"),
    ] {
        let (code, _, err) = events(&[&list]);
        assert_eq!(code, 2, "{list}: {err}");
        assert!(err.contains(named), "{list}: {err}");
    }
    let (code, _, err) = heal_cli(&["events"], &[("HEAL_SERVER", "127.0.0.1:7878")], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("HEAL_SERVER") && err.contains("127.0.0.1:7878"),
        "{err}"
    );
}

#[test]
fn ping_reaches_the_next_server_in_heal_server() {
    let config = "[[heartbeat]]\nname = \"backup\"\nevery = \"1h\"\n";
    let (mut a, b) = two_servers("servers-ping", config);
    a.kill();
    let servers = format!("{},{}", a.url, b.url);
    let (code, _, err) = heal_cli(&["ping", "backup"], &[("HEAL_SERVER", &servers)], None);
    assert_eq!(code, 0, "{err}");
    let hb = &b.get_ok("/api/v1/heartbeats/backup")["heartbeat"];
    assert_eq!(hb["state"], "up", "{hb}");

    // No server answers: the wrapped job still runs, and its code is heal's.
    let dead = format!("{},{}", a.url, dead_url());
    let marker = b.dir.join("job-ran");
    let job = format!("touch {}; exit 3", marker.display());
    let (code, _, err) = heal_cli(
        &["ping", "backup", "--", "sh", "-c", &job],
        &[("HEAL_SERVER", &dead)],
        None,
    );
    assert_eq!(code, 3, "{err}");
    assert!(marker.exists(), "the job ran: {err}");
    assert!(err.contains("start ping failed"), "{err}");
}
