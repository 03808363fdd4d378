//! Snapshots of every kind's text, each channel's limits, and hostile input.

use super::channels::{neutralize, plain};
use super::*;
use crate::notify::KINDS;

const BASE: Option<&str> = Some("https://heal.example.com");
const SNAPSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/notify/snapshots/");

/// Compares `actual` with the snapshot file `name`, or writes it when
/// `HEAL_UPDATE_SNAPSHOTS=1`.
fn snapshot(name: &str, actual: &str) {
    let path = format!("{SNAPSHOTS}{name}");
    if std::env::var("HEAL_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::create_dir_all(SNAPSHOTS).expect("create the snapshot directory");
        std::fs::write(&path, actual).expect("write a snapshot");
        return;
    }
    let Ok(expected) = std::fs::read_to_string(&path) else {
        panic!("snapshot {path} is missing: run with HEAL_UPDATE_SNAPSHOTS=1 to create it");
    };
    assert_eq!(
        actual, expected,
        "snapshot {path} differs (HEAL_UPDATE_SNAPSHOTS=1 rewrites it)"
    );
}

/// Sets `value` at `path`, creating objects on the way.
fn set(doc: &mut Value, path: &[&str], value: Value) {
    let mut v = doc;
    for p in path {
        v = &mut v[*p];
    }
    *v = value;
}

fn event_doc(kind: &str) -> Value {
    let labels = json!({"alertname": "NginxDown", "instance": "web-1", "severity": "critical", "team": "web"});
    json!({
        "id": 17, "kind": kind, "at": "2026-11-23T20:50:01.123Z",
        "subject": "42", "dedup_key": "heal/event/42",
        "resolves": kind_named(kind).is_some_and(|k| k.resolves),
        "severity": "critical", "team": "web", "rule": "restart-nginx", "runbook": "nginx-restart",
        "labels": labels,
        "event": {"id": 42, "state": "failed", "reason": "op 7 on web-1: step restart exited 1", "mode": "live",
                  "key": "web-1", "rule": "restart-nginx", "runbook": "nginx-restart", "hits": 3,
                  "created_at": "2026-11-23T20:49:58.000Z", "ended_at": "2026-11-23T20:50:01.100Z",
                  "targets": ["web-1"], "decided_by": null},
        "alert": {"name": "NginxDown", "fingerprint": "a1b2c3d4e5f60718", "status": "firing", "source": "alertmanager",
                  "labels": labels,
                  "annotations": {"summary": "nginx on web-1 is down",
                                  "description": "nginx has not answered on :80 for 1 minute."},
                  "starts_at": "2026-11-23T20:49:50.000Z"},
        "ops": [{"id": 7, "agent": "web-1", "kind": "run", "state": "failed", "exit_code": 1, "duration_ms": 2100,
                 "error": "step restart exited 1", "step": "restart",
                 "output": "+ systemctl restart nginx.service\nJob for nginx.service failed because the control process exited with error code.\nSee \"systemctl status nginx.service\" and \"journalctl -xeu nginx.service\" for details.\n+ nginx -t\nnginx: [emerg] unknown directive \"proxy_pas\" in /etc/nginx/sites-enabled/app.conf:14\nnginx: configuration file /etc/nginx/nginx.conf test failed\n"}],
        "ops_total": 1,
        "heartbeat": null, "probe": null, "agent": null, "breaker": null
    })
}

fn event_sample(kind: &str) -> Value {
    let mut doc = event_doc(kind);
    let mut state = |s: &str, reason: &str| {
        set(&mut doc, &["event", "state"], s.into());
        set(&mut doc, &["event", "reason"], reason.into());
    };
    match kind {
        "event.started" => state("queued", ""),
        "event.succeeded" => state("succeeded", "op 7 on web-1 succeeded; NginxDown no longer firing"),
        "event.escalated" => state("escalated", "3 attempts for key \"web-1\" within 1h (max_attempts = 3): event 40 failed: op 5 on web-1: step restart exited 1; event 41 failed: op 6 on web-1: step restart exited 1; event 42 failed; people must take over, nothing runs"),
        "event.pending_approval" => state("pending_approval", "rule \"restart-nginx\" requires approval"),
        "event.cancelled" => state("cancelled", "rejected: nginx is being upgraded by hand"),
        "event.resolved" => state("escalated", "NginxDown resolved"),
        "event.dry_run" => state("dry_run", "rule \"restart-nginx\" is in dry-run mode; live, heal would run: runbook \"nginx-restart\" on web-1; nothing ran"),
        _ => {}
    }
    match kind {
        "event.started" => {
            set(&mut doc, &["event", "ended_at"], Value::Null);
            set(
                &mut doc,
                &["ops"],
                json!([{"id": 7, "agent": "web-1", "kind": "run", "state": "queued"}]),
            );
        }
        "event.succeeded" => set(
            &mut doc,
            &["ops"],
            json!([{"id": 7, "agent": "web-1", "kind": "run", "state": "succeeded", "exit_code": 0,
                    "duration_ms": 1800, "output": "+ systemctl restart nginx.service\n"}]),
        ),
        "event.failed" => {}
        _ => set(&mut doc, &["ops"], json!([])),
    }
    match kind {
        "event.cancelled" => set(&mut doc, &["event", "decided_by"], "alice".into()),
        "event.resolved" => {
            set(&mut doc, &["alert", "status"], "resolved".into());
            set(&mut doc, &["at"], "2026-11-23T21:35:12.000Z".into());
        }
        "event.dry_run" => set(&mut doc, &["event", "mode"], "dry-run".into()),
        _ => {}
    }
    // An event held by its decision has no reason of its own until it
    // ends: the store gives the decision's reason as `event.decision`.
    if matches!(
        kind,
        "event.escalated" | "event.pending_approval" | "event.dry_run"
    ) {
        let why = doc["event"]["reason"].take();
        set(&mut doc, &["event", "decision"], why);
    }
    doc
}

fn internal(kind: &str, subject: &str, alert: &str, annotations: Value) -> Value {
    let k = kind_named(kind).expect("a known kind");
    let labels = match k.subject {
        "heartbeat" | "heartbeat-runtime" => json!({"heartbeat": subject, "team": "infra"}),
        "probe" => json!({"probe": subject, "probe_type": "http", "team": "web"}),
        "agent" => json!({"agent": subject}),
        _ => json!({}),
    };
    json!({
        "id": 18, "kind": kind, "at": "2026-11-23T04:00:01.200Z",
        "subject": subject, "dedup_key": dedup_key(k, subject), "resolves": k.resolves,
        "severity": k.severity, "team": labels["team"], "rule": null, "runbook": null,
        "labels": labels,
        "event": null,
        "alert": {"name": alert, "fingerprint": "0f1e2d3c4b5a6978", "status": if k.resolves { "resolved" } else { "firing" },
                  "source": "heal", "labels": labels, "annotations": annotations,
                  "starts_at": "2026-11-23T04:00:01.000Z"},
        "ops": [], "ops_total": 0,
        "heartbeat": null, "probe": null, "agent": null, "breaker": null
    })
}

fn internal_sample(kind: &str) -> Value {
    let backup = "nightly-backup";
    let mut doc = match kind.split('.').next().unwrap_or_default() {
        "heartbeat" if kind.ends_with("overrun") || kind.ends_with("finished") => {
            let why = "last ping 2026-11-23T01:00:02Z; next due 2026-11-24T01:00:00Z; started 3h ago and has not finished (max runtime 2h)";
            let mut d = internal(
                kind,
                backup,
                "HeartbeatRuntimeExceeded",
                json!({
                "summary": "heartbeat nightly-backup: a run has taken longer than 2h",
                "description": why, "runbook_url": "https://wiki.example/backup"}),
            );
            d["heartbeat"] = json!({"name": backup, "reason": "overrun", "description": why});
            d
        }
        "heartbeat" => {
            let why = if kind.ends_with("up") {
                "last ping 2026-11-23T05:12:39Z; next due 2026-11-24T03:00:00Z"
            } else {
                "no ping since 2026-11-22T03:00:05Z; due 2026-11-23T03:00:00Z, grace 1h"
            };
            let mut d = internal(
                kind,
                backup,
                "HeartbeatMissing",
                json!({
                "summary": "heartbeat nightly-backup is down", "description": why,
                "reason": "missed", "runbook_url": "https://wiki.example/backup"}),
            );
            d["heartbeat"] = json!({"name": backup, "reason": "missed", "description": why});
            d
        }
        "probe" => {
            let why = "api-health failed 3 times in a row; last: HTTP 503 from https://api.example.com/healthz (want 200)";
            let mut d = internal(
                kind,
                "api-health",
                "ProbeFailing",
                json!({
                "summary": "probe api-health is failing: HTTP 503 from https://api.example.com/healthz (want 200)",
                "description": why}),
            );
            d["alert"]["annotations"]["probe_description"] =
                "the public API behind api.example.com; customers see errors when it fails".into();
            d["probe"] = json!({"name": "api-health", "description": why});
            if kind == "probe.up" {
                d["probe"]["last_result"] = "HTTP 200 in 42ms".into();
            }
            d
        }
        "agent" => {
            let why = "agent web-1 last polled 3m ago (agent_down_after 2m)";
            let mut d = internal(
                kind,
                "web-1",
                "AgentDown",
                json!({
                "summary": "agent web-1 stopped polling", "description": why}),
            );
            d["agent"] = json!({"id": "web-1", "description": why});
            d
        }
        _ => {
            let why = "5 failed events in a row, [safety] max_failed_in_row = 5";
            let mut d = internal(
                kind,
                "breaker",
                "SafetyBreakerOpen",
                json!({
                "summary": "heal's safety breaker is open: automation is stopped",
                "description": format!("{why}; reset with `heal breaker reset`")}),
            );
            d["breaker"] = json!({"reason": why});
            d
        }
    };
    if kind_named(kind).is_some_and(|k| k.resolves) {
        doc["at"] = "2026-11-23T05:12:40.000Z".into();
    }
    doc
}

/// A realistic document of `kind`.
fn sample(kind: &str) -> Value {
    match kind {
        "test" => json!({"id": 19, "kind": "test", "at": "2026-11-23T12:00:00.000Z",
                         "severity": "info", "channel": "ops-chat"}),
        k if k.starts_with("event.") => event_sample(k),
        k => internal_sample(k),
    }
}

/// 25 notifications, as a storm delivers them.
fn storm() -> Vec<Value> {
    let mut docs = Vec::new();
    for i in 0..25u64 {
        let kind = match i % 5 {
            _ if i < 15 && i % 5 != 4 => "event.succeeded",
            _ if i >= 23 => "heartbeat.down",
            _ if i >= 21 => "event.failed",
            _ => "event.started",
        };
        let mut doc = sample(kind);
        if kind.starts_with("event.") {
            let host = format!("web-{}", i % 6 + 1);
            set(&mut doc, &["event", "id"], json!(100 + i));
            set(&mut doc, &["event", "targets"], json!([host]));
            set(&mut doc, &["event", "key"], json!(host));
        }
        docs.push(doc);
    }
    docs
}

#[test]
fn every_kind_reads_well_in_plain_text() {
    for kind in KINDS {
        let doc = sample(kind.name);
        snapshot(&format!("{}.txt", kind.name), &text(&message(&doc, BASE)));
    }
}

/// Every body a channel sends for `doc`: plain text, Slack, PagerDuty,
/// Opsgenie, the webhook (and a command's stdin, which is one of those).
fn every_body(doc: &Value) -> Vec<(&'static str, String)> {
    let m = message(doc, BASE);
    vec![
        ("text", text(&m)),
        ("html", html(&m)),
        ("slack", slack(&m, doc).to_string()),
        ("pagerduty", pagerduty(doc, &m, "R0UT1NG").to_string()),
        ("opsgenie", opsgenie(doc, &m).1.to_string()),
        ("webhook", webhook(doc, &m)["text"].to_string()),
    ]
}

#[test]
fn every_kind_gives_the_reason_it_was_given() {
    for kind in KINDS {
        let doc = sample(kind.name);
        for (channel, body) in every_body(&doc) {
            assert!(
                !body.contains("no reason recorded"),
                "{} on {channel}: {body}",
                kind.name
            );
        }
    }
    for kind in ["event.escalated", "event.pending_approval", "event.dry_run"] {
        let doc = sample(kind);
        let why = doc["event"]["decision"].as_str().unwrap_or_default();
        let why = &why[..why.len().min(40)];
        assert!(!why.is_empty(), "{kind}: the sample has a decision");
        // As it reads in the text, and as JSON bodies escape it.
        let escaped = serde_json::to_string(why).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        let in_html = escape_within(why, usize::MAX, html_char);
        for (channel, body) in every_body(&doc) {
            assert!(
                body.contains(why) || body.contains(escaped) || body.contains(&in_html),
                "{kind} on {channel} lacks {why:?}: {body}"
            );
        }
    }
}

#[test]
fn a_probe_or_heartbeat_description_reaches_every_channel() {
    let mut heartbeat = sample("heartbeat.down");
    heartbeat["alert"]["annotations"]["heartbeat_description"] =
        "nightly pg_dump of the orders database".into();
    for (doc, about) in [
        (
            sample("probe.down"),
            "the public API behind api.example.com",
        ),
        (sample("probe.up"), "the public API behind api.example.com"),
        (heartbeat, "nightly pg_dump of the orders database"),
    ] {
        for (channel, body) in every_body(&doc) {
            // A resolve to PagerDuty carries no text, and one to Opsgenie
            // only the title as its note.
            if matches!(channel, "pagerduty" | "opsgenie") && doc["resolves"] == true {
                continue;
            }
            assert!(body.contains(about), "{} on {channel}: {body}", doc["kind"]);
        }
    }
}

#[test]
fn a_list_key_is_said_in_words() {
    let mut doc = sample("event.escalated");
    set(
        &mut doc,
        &["event", "key"],
        r#"["NginxDown","web-1"]"#.into(),
    );
    set(&mut doc, &["event", "targets"], json!([]));
    set(
        &mut doc,
        &["alert", "labels"],
        json!({"alertname": "NginxDown"}),
    );
    set(&mut doc, &["labels"], json!({"alertname": "NginxDown"}));
    let m = message(&doc, BASE);
    assert_eq!(
        m.title,
        "Escalated: NginxDown on web-1 needs a person (event 42)"
    );
    assert!(!text(&m).contains('['), "{}", text(&m));
    set(&mut doc, &["event", "key"], r#"["db-1","/var"]"#.into());
    assert_eq!(
        message(&doc, BASE).title,
        "Escalated: NginxDown on db-1, /var needs a person (event 42)"
    );
}

#[test]
fn a_started_event_shows_no_end() {
    // Routed after its op ended: the document holds the failed op.
    let mut doc = sample("event.failed");
    set(&mut doc, &["kind"], "event.started".into());
    set(&mut doc, &["event", "state"], "queued".into());
    let m = message(&doc, BASE);
    assert_eq!(m.output, None);
    let plain = text(&m);
    assert!(plain.contains("Event:    42 (started)"), "{plain}");
    assert!(
        !plain.contains("queued") && !plain.contains("proxy_pas"),
        "{plain}"
    );
}

#[test]
fn slack_of_a_failed_event() {
    let doc = sample("event.failed");
    let body = slack(&message(&doc, BASE), &doc);
    let pretty = serde_json::to_string_pretty(&body).expect("json serializes");
    snapshot("slack-event.failed.json", &(pretty + "\n"));
}

#[test]
fn digest_of_a_storm() {
    let m = digest(&storm(), BASE);
    assert_eq!(
        m.title,
        "25 notifications: 12 event.succeeded, 9 event.started, 2 event.failed, 2 heartbeat.down"
    );
    assert_eq!(m.lines.len(), DIGEST_LINES + 1);
    assert_eq!(m.lines[DIGEST_LINES], "… and 5 more");
    snapshot("digest.txt", &text(&m));
}

#[test]
fn webhook_digest_renders_each_notification() {
    let docs = storm();
    let body = webhook_digest(&docs, &digest(&docs, BASE), BASE);
    assert_eq!(body["kind"], "digest");
    assert_eq!(body["count"], 25);
    let first = &body["notifications"][0];
    assert_eq!(first["kind"], "event.succeeded");
    assert_eq!(first["url"], "https://heal.example.com/api/v1/events/100");
    assert!(first["text"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Fixed: "));
}

#[test]
fn webhook_is_the_document_with_title_text_and_url() {
    let doc = sample("heartbeat.down");
    let body = webhook(&doc, &message(&doc, None));
    assert_eq!(body["kind"], "heartbeat.down");
    assert_eq!(body["heartbeat"]["name"], "nightly-backup");
    assert_eq!(body["url"], Value::Null);
    assert!(body["title"]
        .as_str()
        .unwrap_or_default()
        .contains("nightly-backup"));
}

#[test]
fn links_by_kind() {
    let check = |doc: &Value, base: Option<&str>, want: Option<&str>| {
        assert_eq!(link(doc, base).as_deref(), want, "{doc}");
    };
    let base = Some("https://heal.example.com/");
    check(
        &sample("event.failed"),
        base,
        Some("https://heal.example.com/api/v1/events/42"),
    );
    check(&sample("event.failed"), None, None);
    check(
        &sample("heartbeat.overrun"),
        base,
        Some("https://heal.example.com/api/v1/heartbeats/nightly-backup"),
    );
    check(
        &sample("probe.up"),
        base,
        Some("https://heal.example.com/api/v1/probes/api-health"),
    );
    check(
        &sample("agent.down"),
        base,
        Some("https://heal.example.com/api/v1/agents"),
    );
    check(
        &sample("safety.tripped"),
        base,
        Some("https://heal.example.com/api/v1/breaker"),
    );
    check(&sample("test"), base, None);
    let odd = json!({"kind": "heartbeat.down", "heartbeat": {"name": "backup db/1 ü"}});
    check(
        &odd,
        base,
        Some("https://heal.example.com/api/v1/heartbeats/backup%20db%2F1%20%C3%BC"),
    );
    check(&json!({"kind": "event.failed"}), base, None);
    check(
        &json!({"kind": "event.failed", "subject": "7"}),
        base,
        Some("https://heal.example.com/api/v1/events/7"),
    );
}

#[test]
fn pagerduty_triggers_or_resolves_by_kind() {
    for kind in KINDS {
        let doc = sample(kind.name);
        let body = pagerduty(&doc, &message(&doc, BASE), "R0UT1NG");
        let action = if kind.resolves { "resolve" } else { "trigger" };
        assert_eq!(body["event_action"], action, "{}", kind.name);
        assert_eq!(body["routing_key"], "R0UT1NG");
        assert!(
            body["dedup_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("heal/")),
            "{}",
            kind.name
        );
        if kind.resolves {
            assert_eq!(body.as_object().map(Map::len), Some(3), "{}", kind.name);
        }
    }
    let doc = sample("event.failed");
    let body = pagerduty(&doc, &message(&doc, BASE), "R0UT1NG");
    let p = &body["payload"];
    assert_eq!(body["dedup_key"], "heal/event/42");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["source"], "web-1");
    assert_eq!(p["component"], "nginx-restart");
    assert_eq!(p["group"], "web");
    assert_eq!(p["class"], "event.failed");
    assert_eq!(p["timestamp"], "2026-11-23T20:50:01.123Z");
    assert_eq!(p["custom_details"]["Rule"], "restart-nginx");
    assert!(p["custom_details"]["output"]
        .as_str()
        .unwrap_or_default()
        .contains("proxy_pas"));
    assert_eq!(
        body["links"][0]["href"],
        "https://heal.example.com/api/v1/events/42"
    );
    assert_eq!(body["links"][0]["text"], "View event 42");
    assert_eq!(
        body["client_url"],
        "https://heal.example.com/api/v1/events/42"
    );
}

#[test]
fn opsgenie_creates_or_closes_by_alias() {
    let doc = sample("event.failed");
    let (path, body) = opsgenie(&doc, &message(&doc, BASE));
    assert_eq!(path, "/v2/alerts");
    assert_eq!(body["alias"], "heal/event/42");
    assert_eq!(body["priority"], "P1");
    assert_eq!(
        body["tags"],
        json!(["heal", "event.failed", "web", "critical"])
    );
    assert_eq!(body["details"]["Runbook"], "nginx-restart");
    assert_eq!(body["entity"], "web-1");
    let doc = sample("heartbeat.up");
    let (path, body) = opsgenie(&doc, &message(&doc, BASE));
    assert_eq!(
        path,
        "/v2/alerts/heal%2Fheartbeat%2Fnightly-backup/close?identifierType=alias"
    );
    assert_eq!(body["source"], "heal");
    assert_eq!(body["note"], "Heartbeat nightly-backup is up again");
    let priorities: Vec<Value> = ["warning", "error", "info", "page"]
        .iter()
        .map(|s| {
            let doc = json!({"kind": "probe.down", "severity": s});
            opsgenie(&doc, &message(&doc, None)).1["priority"].clone()
        })
        .collect();
    assert_eq!(
        priorities,
        [json!("P3"), json!("P2"), json!("P5"), json!("P1")]
    );
}

#[test]
fn a_probe_s_severity_and_its_change_are_in_the_title() {
    let title = |severity: &str, was: Option<&str>| {
        let mut doc = sample("probe.down");
        doc["alert"]["labels"]["severity"] = severity.into();
        if let Some(was) = was {
            doc["probe"]["previous_severity"] = was.into();
        }
        message(&doc, None).title
    };
    assert_eq!(title("critical", None), "Probe api-health is failing");
    assert_eq!(
        title("warning", None),
        "Probe api-health is failing (warning)"
    );
    assert_eq!(
        title("critical", Some("warning")),
        "Probe api-health is critical now (was warning)"
    );
    assert_eq!(
        title("warning", Some("critical")),
        "Probe api-health is warning now (was critical)"
    );
}

#[test]
fn signature_is_hmac_sha256_of_timestamp_dot_body() {
    // RFC 4231 test case 2.
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
    let tag = hmac::sign(&key, b"what do ya want for nothing?");
    assert_eq!(
        crate::config::hex(tag.as_ref()),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // printf '1700000000.{"kind":"test"}' | openssl dgst -sha256 -hmac Jefe
    assert_eq!(
        signature("Jefe", 1_700_000_000, br#"{"kind":"test"}"#),
        "sha256=d85359376e3c56a8af469c1d558d97ea1b1a11a324cc665e9cd1613664d3422a"
    );
}

#[test]
fn failed_events_name_the_step_and_how_it_ended() {
    let check = |state: &str, op: Value, want: &str| {
        let mut doc = sample("event.failed");
        set(&mut doc, &["event", "state"], state.into());
        set(&mut doc, &["ops"], json!([op]));
        assert_eq!(message(&doc, None).title, want);
    };
    let op = |state: &str, code: Value| json!({"agent": "web-1", "step": "restart", "state": state, "exit_code": code});
    check(
        "failed",
        op("failed", json!(1)),
        "Failed: nginx-restart on web-1, step restart exited 1 (event 42)",
    );
    check(
        "timed_out",
        op("timed_out", Value::Null),
        "Timed out: nginx-restart on web-1, step restart timed out (event 42)",
    );
    check(
        "lost",
        op("lost", Value::Null),
        "Lost: nginx-restart on web-1, op lost (event 42)",
    );
    check(
        "failed",
        json!({}),
        "Failed: nginx-restart on web-1 (event 42)",
    );
    // An agent that refused the op: no step ran, and the output is its words.
    let refused =
        "agent web-1 refuses runbook \"nginx-restart\": not in its --allow list (deploy-*)";
    check(
        "failed",
        json!({"agent": "web-1", "state": "failed", "step": null, "exit_code": null, "error": refused}),
        "Failed: nginx-restart on web-1, no step ran (event 42)",
    );
    let mut doc = sample("event.failed");
    set(
        &mut doc,
        &["ops"],
        json!([{"agent": "web-1", "state": "failed", "error": refused, "output": ""}]),
    );
    let (heading, tail) = message(&doc, None).output.expect("the refusal is shown");
    assert_eq!(
        (heading.as_str(), tail.as_str()),
        ("web-1 · failed", refused)
    );
}

#[test]
fn events_with_many_ops_list_them() {
    let mut doc = sample("event.failed");
    set(
        &mut doc,
        &["event", "targets"],
        json!(["web-1", "web-2", "web-3", "web-4"]),
    );
    set(&mut doc, &["ops_total"], json!(7));
    set(
        &mut doc,
        &["ops"],
        json!([
            {"agent": "web-1", "state": "failed", "step": "restart", "exit_code": 1},
            {"agent": "web-2", "state": "succeeded", "exit_code": 0},
            {"agent": "web-3", "state": "timed_out", "step": "drain"},
        ]),
    );
    let m = message(&doc, None);
    assert!(
        m.title.starts_with(
            "Failed: nginx-restart on web-1, web-2, web-3 and 1 more, step restart exited 1"
        ),
        "{}",
        m.title
    );
    assert!(m.lines.contains(&"Ops: web-1 failed (step restart exited 1); web-2 succeeded; web-3 failed (step drain timed out); and 4 more".to_string()), "{:?}", m.lines);
}

#[test]
fn output_tail_keeps_the_last_whole_lines() {
    let long: String = (0..500).map(|i| format!("line {i}\n")).collect();
    let t = tail(&long, 100);
    assert!(units(&t) <= 100, "{t}");
    assert!(t.starts_with("…\nline "), "{t}");
    assert!(t.ends_with("line 499"), "{t}");
    assert_eq!(
        tail("\x1b[31mred\x1b[0m\r\n\tdone\n\n", 100),
        "red\n    done"
    );
    assert_eq!(tail("short", 100), "short");
    let one_line = "x".repeat(5000);
    assert!(units(&tail(&one_line, 100)) <= 100);
}

#[test]
fn cutting_counts_utf16_and_marks_the_cut() {
    assert_eq!(cut("abcdef", 4), "abc…");
    assert_eq!(cut("abc", 3), "abc");
    assert_eq!(cut("😀😀😀", 4), "😀…");
    assert_eq!(escape_within("a&b", 6, plain), "a…");
    assert_eq!(escape_within("a&b", 7, plain), "a&amp;b");
    assert_eq!(clean(" a\n\tb  <c>\u{202E} ", 100), "a b <c>");
    assert_eq!(
        neutralize("*x* _y_ disk_full ~z~ `c`"),
        "∗x∗ ＿y＿ disk_full ∼z∼ ˋcˋ"
    );
}

// ---- hostile input ------------------------------------------------------

const HOSTILE: &str =
    "<script>alert(1)</script> & *bold* _it_ ~gone~ ```code``` | > quote\nnext line <!channel>";

fn hostile(kind: &str) -> Value {
    let mut doc = sample(kind);
    let huge = format!("{HOSTILE}\n").repeat(100_000 / HOSTILE.len());
    let labels =
        json!({"alertname": HOSTILE, "instance": HOSTILE, "team": HOSTILE, "severity": HOSTILE});
    for path in [&["labels"][..], &["alert", "labels"]] {
        set(&mut doc, path, labels.clone());
    }
    set(&mut doc, &["alert", "name"], HOSTILE.into());
    set(
        &mut doc,
        &["alert", "annotations"],
        json!({"summary": HOSTILE, "description": huge, "runbook_url": HOSTILE}),
    );
    set(&mut doc, &["team"], HOSTILE.into());
    set(&mut doc, &["channel"], huge.as_str().into());
    if kind.starts_with("event.") {
        for field in ["reason", "rule", "runbook", "key", "decided_by"] {
            set(&mut doc, &["event", field], HOSTILE.into());
        }
        set(
            &mut doc,
            &["event", "targets"],
            json!([HOSTILE, HOSTILE, HOSTILE, HOSTILE]),
        );
        let output = format!("```\n{}", huge.replace('\n', "\n```\n"));
        set(
            &mut doc,
            &["ops"],
            json!([{"id": 7, "agent": HOSTILE, "state": "failed", "exit_code": 1,
                                         "step": HOSTILE, "error": huge, "output": output}]),
        );
    }
    for object in ["heartbeat", "probe", "agent", "breaker"] {
        if !doc[object].is_null() {
            doc[object] =
                json!({"name": HOSTILE, "id": HOSTILE, "reason": HOSTILE, "description": huge});
        }
    }
    doc
}

#[test]
fn email_html_escapes_every_alert_text() {
    const TAGS: &[&str] = &[
        "<!DOCTYPE html>",
        "<html>",
        "</html>",
        "<body>",
        "</body>",
        "<h2>",
        "</h2>",
        "<p>",
        "</p>",
        "<table>",
        "</table>",
        "<tr>",
        "</tr>",
        "<th align=\"left\">",
        "</th>",
        "<td>",
        "</td>",
        "<pre>",
        "</pre>",
        "</a>",
    ];
    for kind in KINDS {
        let body = html(&message(&hostile(kind.name), BASE));
        assert!(
            body.contains("&lt;script&gt;"),
            "{}: {body:.300}",
            kind.name
        );
        let mut rest = body.clone();
        for tag in TAGS {
            rest = rest.replace(tag, "");
        }
        // heal's own link: <a href="https://heal.example.com/...">.
        while let Some(start) = rest.find("<a href=\"https://heal.example.com/") {
            let end = rest[start..]
                .find('>')
                .map_or(rest.len(), |e| start + e + 1);
            rest.replace_range(start..end, "");
        }
        assert_escaped(&rest.replace("&quot;", "").replace("&#39;", ""));
    }
    let m = message(&sample("event.failed"), BASE);
    let body = html(&m);
    assert!(
        body.contains(&format!("<h2>{}</h2>", m.title.replace('\'', "&#39;"))),
        "{body}"
    );
}

/// Every `text` in the Slack body, with the limit that applies to it.
fn slack_texts(body: &Value) -> Vec<(String, usize)> {
    let mut out = vec![(
        body["text"].as_str().unwrap_or_default().to_string(),
        SLACK_TEXT_MAX,
    )];
    for block in body["blocks"].as_array().expect("blocks") {
        let max = if block["type"] == "header" {
            SLACK_HEADER_MAX
        } else {
            SLACK_TEXT_MAX
        };
        if let Some(t) = block["text"]["text"].as_str() {
            out.push((t.to_string(), max));
        }
        for field in block["fields"].as_array().into_iter().flatten() {
            out.push((
                field["text"].as_str().unwrap_or_default().to_string(),
                SLACK_FIELD_MAX,
            ));
        }
        for element in block["elements"].as_array().into_iter().flatten() {
            out.push((
                element["text"].as_str().unwrap_or_default().to_string(),
                SLACK_TEXT_MAX,
            ));
        }
    }
    out
}

/// The text without heal's own link `<https://heal.example.com/…|…>`.
fn without_link(text: &str) -> String {
    let mut rest = text.to_string();
    if let Some(start) = rest.find("<https://heal.example.com/") {
        let end = rest[start..]
            .find('>')
            .map_or(rest.len(), |e| start + e + 1);
        rest.replace_range(start..end, "");
    }
    rest
}

/// No `<`, `>` or bare `&` but heal's own link.
fn assert_escaped(text: &str) {
    let rest = without_link(text);
    assert!(
        !rest.contains('<') && !rest.contains('>'),
        "unescaped < or >: {rest}"
    );
    for (i, _) in rest.match_indices('&') {
        let after = &rest[i..];
        assert!(
            after.starts_with("&amp;") || after.starts_with("&lt;") || after.starts_with("&gt;"),
            "bare &: {after:.40}"
        );
    }
}

fn assert_slack_safe(body: &Value, kind: &str) {
    let blocks = body["blocks"].as_array().expect("blocks");
    assert!(blocks.len() <= SLACK_BLOCKS, "{kind}");
    for (i, (text, max)) in slack_texts(body).into_iter().enumerate() {
        assert!(units(&text) <= max, "{kind}: {} > {max}", units(&text));
        assert_escaped(&text);
        // The fallback and the header are plain text and a code block
        // is not formatted: Slack formats nothing there.
        let formatted = without_link(text.split("```").next().unwrap_or_default());
        if i > 1 {
            assert!(
                !formatted.contains("*bold*") && !formatted.contains("~gone~"),
                "{kind}: {text:.200}"
            );
        }
    }
    let header = blocks[0]["text"]["text"].as_str().unwrap_or_default();
    assert!(!header.contains('\n'), "{kind}");
    for block in blocks {
        assert!(
            block["fields"].as_array().map_or(0, Vec::len) <= SLACK_FIELDS,
            "{kind}"
        );
        let text = block["text"]["text"].as_str().unwrap_or_default();
        if text.contains("```") {
            assert_eq!(
                text.matches("```").count(),
                2,
                "{kind}: a code block closed early"
            );
        }
    }
}

#[test]
fn hostile_input_stays_within_every_limit() {
    for kind in KINDS {
        let doc = hostile(kind.name);
        let m = message(&doc, BASE);
        assert!(
            units(&m.title) <= TITLE_MAX && !m.title.contains('\n'),
            "{}",
            kind.name
        );
        for line in &m.lines {
            assert!(
                units(line) <= LINE_MAX && !line.contains('\n'),
                "{}",
                kind.name
            );
        }
        if let Some((heading, tail)) = &m.output {
            assert!(
                !heading.contains('\n') && units(tail) <= OUTPUT_MAX,
                "{}",
                kind.name
            );
        }
        let body = slack(&m, &doc);
        assert!(!body.to_string().contains("<script>"), "{}", kind.name);
        assert_slack_safe(&body, kind.name);
        let pd = pagerduty(&doc, &m, "key");
        let summary = pd["payload"]["summary"].as_str().unwrap_or_default();
        assert!(
            summary.chars().count() <= PAGERDUTY_SUMMARY_MAX,
            "{}",
            kind.name
        );
        let (_, og) = opsgenie(&doc, &m);
        let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
        assert!(len(&og["message"]) <= OPSGENIE_MESSAGE_MAX, "{}", kind.name);
        assert!(
            len(&og["description"]) <= OPSGENIE_DESCRIPTION_MAX,
            "{}",
            kind.name
        );
        assert!(len(&og["entity"]) <= OPSGENIE_ALIAS_MAX, "{}", kind.name);
        for tag in og["tags"].as_array().into_iter().flatten() {
            assert!(len(tag) <= OPSGENIE_TAG_MAX, "{}", kind.name);
        }
    }
}

#[test]
fn hostile_digest_stays_within_slack_limits() {
    let docs: Vec<Value> = KINDS
        .iter()
        .cycle()
        .take(60)
        .map(|k| hostile(k.name))
        .collect();
    let m = digest(&docs, BASE);
    assert_slack_safe(&slack(&m, &json!({"kind": "digest"})), "digest");
}

#[test]
fn empty_documents_render_without_panic() {
    let mut docs: Vec<Value> = KINDS.iter().map(|k| json!({"kind": k.name})).collect();
    docs.extend([
        Value::Null,
        json!({}),
        json!({"kind": 5}),
        json!({"kind": "event.new_thing"}),
        json!([1, 2]),
    ]);
    for doc in &docs {
        let m = message(doc, BASE);
        assert!(!m.title.is_empty(), "{doc}");
        assert!(!text(&m).is_empty());
        assert_slack_safe(&slack(&m, doc), &doc.to_string());
        let _ = pagerduty(doc, &m, "key");
        let (path, _) = opsgenie(doc, &m);
        assert!(path.starts_with("/v2/alerts"));
        let _ = webhook(doc, &m);
    }
    let m = digest(&docs, None);
    let _ = webhook_digest(&docs, &m, None);
    assert!(text(&digest(&[], None)).starts_with("0 notifications"));
}

#[test]
fn a_forgotten_agent_is_not_said_to_be_back() {
    let mut doc = sample("agent.up");
    doc["agent"]["forgotten"] = true.into();
    let said = text(&message(&doc, BASE));
    assert!(said.starts_with("Agent web-1 is forgotten\n"), "{said}");
    assert!(said.contains("agent web-1 was forgotten"), "{said}");
    assert!(!said.contains("polls again"), "{said}");
    let back = text(&message(&sample("agent.up"), BASE));
    assert!(back.starts_with("Agent web-1 is back\n"), "{back}");
}

#[test]
fn a_priority_sets_the_pagers_level_and_shows_in_every_message() {
    for (priority, level, opsgenie_priority) in [
        ("p1", "critical", "P1"),
        ("p2", "error", "P2"),
        ("p3", "warning", "P3"),
        ("p4", "info", "P4"),
        ("P5", "info", "P5"),
    ] {
        let mut doc = sample("probe.down");
        doc["priority"] = json!(priority);
        let m = message(&doc, BASE);
        let pd = pagerduty(&doc, &m, "key");
        assert_eq!(pd["payload"]["severity"], level, "{priority}");
        assert_eq!(opsgenie(&doc, &m).1["priority"], opsgenie_priority);
        assert!(
            text(&m).contains(&format!("Priority: {opsgenie_priority}")),
            "{}",
            text(&m)
        );
        assert!(m.fields.contains(&("Severity", level.to_string())));
    }
    // Without one, the severity decides, and no Priority line is written.
    let doc = sample("probe.down");
    let m = message(&doc, BASE);
    assert!(!text(&m).contains("Priority"), "{}", text(&m));
    // A word pagers do not know is no priority.
    let mut doc = sample("probe.down");
    doc["priority"] = json!("urgent");
    assert!(!text(&message(&doc, BASE)).contains("Priority"));
}

#[test]
fn the_document_takes_a_priority_label_pagers_know() {
    let kind = crate::notify::kind_named("heartbeat.down").unwrap();
    let doc = |label: &str| {
        crate::notify::document(
            1,
            kind,
            "backup",
            0,
            json!({"alert": {"labels": {"priority": label}}}),
        )
    };
    assert_eq!(doc("P2")["priority"], "p2");
    assert_eq!(doc("high")["priority"], Value::Null);
}
