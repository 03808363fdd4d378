//! Mutes that end by themselves: heartbeats and probes muted `--for` a time
//! are unmuted by the scheduler, across a restart, with an audit entry;
//! bad `for` and `until` are refused naming the field.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{heal_cli, test_dir, wait_until, Server};
use crate::watch::wait_alert;

/// A heartbeat and a probe that always fails (nothing listens on port 1).
const CONFIG: &str = r#"
[[heartbeat]]
name = "nightly"
every = "1h"

[[probe]]
name = "web"
every = "1s"
fail_after = 1
tcp = { addr = "127.0.0.1:1" }
"#;

/// Waits for the `ProbeFailing` of probe web to be `status`.
fn web_alert(server: &Server, status: &str, secs: u64) {
    wait_alert(
        server,
        "ProbeFailing",
        "probe",
        "web",
        status,
        Duration::from_secs(secs),
    );
}

fn audit_by_heal(server: &Server, action: &str) -> Vec<Value> {
    crate::support::audit_entries(server, action)
        .into_iter()
        .filter(|e| e["actor"] == "heal")
        .collect()
}

#[test]
fn a_probe_muted_for_a_time_raises_nothing_then_unmutes_itself() {
    let dir = test_dir("mute-probe");
    let server = Server::start(&dir, CONFIG);
    web_alert(&server, "firing", 8);
    let (code, out, err) = heal_cli(
        &[
            "probes",
            "mute",
            "web",
            "--for",
            "4s",
            "--reason",
            "deploy",
            "--server",
            &server.url,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("probe web muted until"), "{out}");
    let muted_at = Instant::now();
    // Muting resolves the alert at once; the probe still runs.
    web_alert(&server, "resolved", 2);
    let p = server.get_ok("/api/v1/probes/web")["probe"].clone();
    assert_eq!(p["muted"], true, "{p}");
    assert!(p["muted_until"].as_i64().is_some(), "{p}");
    assert!(
        p["muted_reason"].as_str().unwrap().contains("deploy"),
        "{p}"
    );
    let page = server.get("/probes").1.to_string();
    assert!(
        page.contains("muted, ") && page.contains(" left"),
        "the dashboard shows the time left: {page}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        crate::watch::alerts_named(&server, "ProbeFailing")[0]["status"],
        "resolved",
        "still muted"
    );
    web_alert(&server, "firing", 8);
    assert!(muted_at.elapsed() >= Duration::from_secs(3));
    let p = server.get_ok("/api/v1/probes/web")["probe"].clone();
    assert_eq!(
        (p["muted"].clone(), p["muted_until"].clone()),
        (json!(false), Value::Null)
    );
    let entries = audit_by_heal(&server, "probe.unmuted");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0]["detail"]
        .as_str()
        .unwrap()
        .contains("the mute ended at"));
}

#[test]
fn a_heartbeat_mute_ends_on_time_across_a_restart() {
    let dir = test_dir("mute-restart");
    let mut server = Server::start(&dir, CONFIG);
    let (code, body) = server.post(
        "/api/v1/heartbeats/nightly/mute",
        &json!({ "for": "3s", "reason": "maintenance" }),
    );
    assert_eq!(code, 200, "{body}");
    let until = body["until"].as_i64().unwrap();
    let hb = server.get_ok("/api/v1/heartbeats/nightly")["heartbeat"].clone();
    assert_eq!(
        (hb["state"].clone(), hb["muted_until"].clone()),
        (json!("paused"), json!(until))
    );
    let page = server.get("/heartbeats").1.to_string();
    assert!(page.contains("muted, ") && page.contains(" left"), "{page}");
    server.kill();
    // Down past the mute's end: the restarted server ends it at once.
    std::thread::sleep(Duration::from_secs(4));
    let server = Server::start_with(&dir, CONFIG, &server.addr, &[]);
    wait_until("the mute to end", Duration::from_secs(5), || {
        let hb = server.get_ok("/api/v1/heartbeats/nightly")["heartbeat"].clone();
        (hb["paused"] == false).then_some(())
    });
    let entries = audit_by_heal(&server, "heartbeat.unmuted");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["target"], "/api/v1/heartbeats/nightly/unmute");
    // A mute without an end stays until unmuted.
    let (code, body) = server.post("/api/v1/heartbeats/nightly/mute", &json!({}));
    assert_eq!((code, body["until"].clone()), (200, Value::Null), "{body}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        server.get_ok("/api/v1/heartbeats/nightly")["heartbeat"]["paused"],
        true
    );
}

#[test]
fn bad_mutes_are_refused_naming_the_field() {
    let dir = test_dir("mute-bad");
    let server = Server::start(&dir, CONFIG);
    let in_the_past = "2020-01-01T00:00:00Z";
    for path in ["/api/v1/heartbeats/nightly/mute", "/api/v1/probes/web/mute"] {
        for (body, field) in [
            (json!({ "for": "2 hours" }), "for"),
            (json!({ "for": "0s" }), "for"),
            (json!({ "for": "400d" }), "for"),
            (json!({ "for": 7200 }), "for"),
            (json!({ "until": in_the_past }), "until"),
            (json!({ "until": "tomorrow" }), "until"),
            (
                json!({ "for": "2h", "until": "2099-01-01T00:00:00Z" }),
                "for",
            ),
        ] {
            let (code, answer) = server.post(path, &body);
            assert_eq!(code, 400, "{path} {body}: {answer}");
            let error = answer["error"].as_str().unwrap();
            assert!(
                error.starts_with(&format!("{field}: ")),
                "{path} {body}: {error}"
            );
        }
    }
    let (code, answer) = server.post("/api/v1/probes/web/unmute", &json!({ "for": "1h" }));
    assert_eq!(code, 400, "{answer}");
    for path in [
        "/api/v1/probes/nope/mute",
        "/api/v1/heartbeats/nope/mute",
        "/api/v1/probes/%3Cscript%3E/mute",
    ] {
        assert_eq!(server.post(path, &json!({ "for": "1h" })).0, 404, "{path}");
    }
    let huge = format!(r#"{{"reason": "{}"}}"#, "x".repeat(2 << 20));
    let (code, _) = server.post_raw("/api/v1/probes/web/mute", huge.as_bytes(), &[]);
    assert_eq!(code, 413);
    // Nothing refused was applied.
    let p = server.get_ok("/api/v1/probes/web")["probe"].clone();
    assert_eq!(p["muted"], false, "{p}");
    let (code, _, err) = heal_cli(
        &[
            "heartbeats",
            "unmute",
            "nightly",
            "--for",
            "1h",
            "--server",
            &server.url,
        ],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = heal_cli(
        &[
            "heartbeats",
            "mute",
            "nightly",
            "--until",
            in_the_past,
            "--server",
            &server.url,
        ],
        &[],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("until: "), "{err}");
}

#[test]
fn a_probe_that_leaves_the_file_forgets_its_mute() {
    let dir = test_dir("mute-forget");
    let server = Server::start(&dir, CONFIG);
    assert_eq!(server.post("/api/v1/probes/web/mute", &json!({})).0, 200);
    let reload = |config: &str| {
        std::fs::write(dir.join("runbooks.toml"), config).unwrap();
        let (code, body) = server.post_raw("/api/v1/config", b"", &[]);
        assert_eq!(code, 200, "{body}");
    };
    let without_probe = CONFIG.split("[[probe]]").next().unwrap();
    reload(without_probe);
    reload(CONFIG);
    let p = server.get_ok("/api/v1/probes/web")["probe"].clone();
    assert_eq!(p["muted"], false, "back in the file, not muted unseen: {p}");
    assert!(server.logs().contains("its mute is forgotten"));
}
