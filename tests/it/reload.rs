//! Config reload under load: `POST /api/v1/config` and SIGHUP swap the
//! config whole; an invalid file is refused and the running one stays.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{http, test_dir, wait_until, Server};

fn config(rule: &str) -> String {
    format!(
        r#"
[[rule]]
name = "{rule}"
action = "discard"

[channel.chat]
slack = {{ webhook_url = "http://127.0.0.1:9/services/T0/B0/SECRETSLACK" }}

[[notify]]
channels = ["chat"]
"#
    )
}

fn decision_rule(answer: &Value) -> String {
    answer["alerts"][0]["decisions"][0]["rule"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_reload_under_load_loses_no_alert_and_the_next_alert_meets_the_new_rules() {
    let dir = test_dir("reload-load");
    let server = Arc::new(Server::start(&dir, &config("old")));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for t in 0..3 {
        let (server, stop, sent) = (server.clone(), stop.clone(), sent.clone());
        clients.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 5000 {
                let body =
                    json!({ "name": "Load", "labels": { "t": t.to_string(), "i": i.to_string() } });
                let (status, answer) = server.post("/api/v1/alerts", &body);
                assert_eq!(status, 200, "{answer}");
                sent.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.join("runbooks.toml"), config("new")).unwrap();
    let (status, body) = server.post("/api/v1/config", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["version"].as_i64(), body["changed"].as_bool()),
        (Some(2), Some(true)),
        "{body}"
    );
    let (_, answer) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "After", "labels": { "x": "1" } }),
    );
    assert_eq!(
        decision_rule(&answer),
        "new",
        "the next alert meets the new rules: {answer}"
    );

    // An invalid file is refused with its error; the running config stays.
    std::fs::write(
        dir.join("runbooks.toml"),
        "[[rule]]\nname = \"broken\"\naction = \"discard\"\nwhen = \"labels.(\"\n",
    )
    .unwrap();
    let (status, body) = server.post("/api/v1/config", &json!({}));
    assert_eq!(status, 422, "{body}");
    let e = body["error"].as_str().unwrap();
    assert!(e.contains("runbooks.toml:4: rule \"broken\": when:"), "{e}");
    let (_, answer) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "Still", "labels": { "x": "2" } }),
    );
    assert_eq!(decision_rule(&answer), "new", "{answer}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let acked = sent.load(Ordering::SeqCst);
    let stored = server.get_ok("/api/v1/alerts?name=Load&limit=10000")["alerts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(stored, acked, "every acknowledged alert is stored");
    assert!(acked > 50, "{acked}");

    // SIGHUP does the same; an unchanged file makes no new version.
    std::fs::write(dir.join("runbooks.toml"), config("third")).unwrap();
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    wait_until("SIGHUP to reload", Duration::from_secs(10), || {
        server.logs().contains("(sighup): version 3").then_some(())
    });
    let (status, body) = server.post("/api/v1/config", &json!({}));
    assert_eq!(status, 200);
    assert_eq!(
        (body["version"].as_i64(), body["changed"].as_bool()),
        (Some(3), Some(false))
    );

    // The running config, secrets redacted, with its version.
    let shown = server.get_ok("/api/v1/config");
    assert_eq!(shown["version"], 3);
    assert_eq!(shown["config"]["rule"][0]["name"], "third");
    assert_eq!(
        shown["config"]["channel"]["chat"]["slack"]["webhook_url"],
        "<redacted>"
    );
    assert!(!shown.to_string().contains("SECRETSLACK"));
    let audit = server.get_ok("/api/v1/audit?limit=100")["entries"].clone();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "config.applied").count(),
        3,
        "{actions:?}"
    );
    assert!(actions.contains(&"config.refused"), "{actions:?}");
    let (status, _) = http("GET", &format!("{}/api/v1/config", server.url), None, &[]);
    assert_eq!(status, 200, "no tokens: loopback is open");
}
