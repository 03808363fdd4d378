//! People acting on events through the API: a runbook run by hand
//! (`POST /api/v1/runs`) is an event like any other, with its notifications
//! and audit entry; `POST /api/v1/events/{id}/cancel` ends an open event.
//! Bad requests are refused and store nothing.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{http, test_dir, wait_agent_polling, wait_until, Agent, Server};

const ADMIN: &str = "admin-secret-0123456789";
const READ: &str = "read-secret-0123456789";
const AGENT: &str = "agent-secret-0123456789";

fn config(dir: &Path) -> String {
    format!(
        r#"
[server]
lease = "5s"
kill_grace = "1s"
poll_wait = "2s"

[[token]]
name = "admin-token"
scopes = ["admin"]
secret = "{ADMIN}"

[[token]]
name = "read-token"
scopes = ["read"]
secret = "{READ}"

[[token]]
name = "web-1"
scopes = ["agent"]
agent = "web-1"
secret = "{AGENT}"

[[rule]]
name = "careful"
when = "labels.alertname == 'NeedsApproval'"
runbook = "fix"
target = "labels.instance"
approve = true

[runbook.fix]
timeout = "20s"
steps = [ {{ name = "say", run = "echo \"by $HEAL_LABEL_REQUESTED_BY for $HEAL_PARAM_WHY: $HEAL_ANNOTATION_SUMMARY\"" }} ]
verify = {{ resolved_within = "5m" }}

[runbook.slow]
timeout = "20s"
steps = [ {{ name = "wait", run = "sleep 3; echo slept" }} ]

[channel.log]
command = {{ run = ["sh", "-c", "echo \"$HEAL_NOTIFICATION_KIND $HEAL_NOTIFICATION_TITLE\" >> {}"] }}

[[notify]]
when = "kind != 'test'"
channels = ["log"]
"#,
        dir.join("notified.txt").display()
    )
}

fn start(name: &str) -> (Server, Agent) {
    let dir = test_dir(name);
    let mut server = Server::start(&dir, &config(&dir));
    server.token = Some(ADMIN.into());
    let token_file = dir.join("agent.token");
    std::fs::write(&token_file, AGENT).unwrap();
    let agent = Agent::start(
        &server.url,
        "web-1",
        &["--token-file", token_file.to_str().unwrap()],
    );
    wait_agent_polling(&server, "web-1");
    (server, agent)
}

fn post_as(server: &Server, token: Option<&str>, path: &str, body: &Value) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let (status, text) = http(
        "POST",
        &format!("{}{path}", server.url),
        Some(body.to_string().as_bytes()),
        &headers,
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn notified(server: &Server) -> String {
    std::fs::read_to_string(server.dir.join("notified.txt")).unwrap_or_default()
}

fn audit_actions(server: &Server) -> Vec<Value> {
    server.get_ok("/api/v1/audit?limit=1000")["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_run_by_hand_is_an_event_with_its_notifications_and_audit_entry() {
    let (server, _agent) = start("manual-run");
    let (status, body) = server.post(
        "/api/v1/runs",
        &json!({ "runbook": "fix", "target": "web-1", "reason": "disk filled by a bad deploy", "params": { "why": "cleanup" } }),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["event"]["id"].as_i64().unwrap();
    assert_eq!(body["event"]["rule"], "manual");
    assert_eq!(body["event"]["decided_by"], "admin-token");
    let event = server.wait_event(id, &["succeeded"], Duration::from_secs(20));
    let output = event["ops"][0]["steps"][0]["output"].as_str().unwrap();
    assert!(
        output.contains("by admin-token for cleanup: admin-token asked to run fix on web-1: disk filled by a bad deploy"),
        "the steps see who asked, why and the params: {output}"
    );
    let timeline = event["timeline"].to_string();
    assert!(
        timeline.contains("run by hand by admin-token: disk filled by a bad deploy"),
        "{timeline}"
    );
    assert!(
        timeline.contains("resolved_within does not apply"),
        "no alert resolves a run by hand: {timeline}"
    );
    assert_eq!(
        event["decisions"][0]["outcome"], "run",
        "{}",
        event["decisions"]
    );
    assert_eq!(event["decisions"][0]["rule"], "manual");
    assert_eq!(event["alert"]["name"], "ManualRun");
    assert_eq!(event["alert"]["status"], "resolved");
    let listed = server.get_ok("/api/v1/events?rule=manual&agent=web-1&since=1h")["events"].clone();
    assert_eq!(listed[0]["id"], id, "{listed}");
    let older = server.get_ok(&format!("/api/v1/events?before={id}"))["events"].clone();
    assert_eq!(older, json!([]), "nothing before the first event");
    let (status, body) = server.get("/api/v1/events?before=x");
    assert_eq!(status, 400, "{body}");
    let decisions = server.get_ok("/api/v1/decisions?rule=manual")["counts"].clone();
    assert_eq!(decisions["run"], 1, "{decisions}");
    wait_until("the run's notifications", Duration::from_secs(20), || {
        let n = notified(&server);
        (n.contains("event.started") && n.contains("event.succeeded")).then_some(())
    });
    let audit = audit_actions(&server);
    let run = audit
        .iter()
        .find(|e| e["action"] == "runbook.run")
        .unwrap_or_else(|| panic!("{audit:?}"));
    assert_eq!(run["actor"], "admin-token");
    assert_eq!(run["target"], "/api/v1/runs");
    assert!(run["detail"].as_str().unwrap().contains("\"manual\""));
}

#[test]
fn bad_runs_by_hand_are_refused_and_store_nothing() {
    let (server, _agent) = start("manual-bad");
    let good = json!({ "runbook": "fix", "target": "web-1", "reason": "r" });
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({ "runbook": "fix", "target": "web-1" }),
            422,
            "give a \"reason\"",
        ),
        (with("reason", json!("  ")), 422, "give a \"reason\""),
        (with("runbook", json!("nope")), 422, "no runbook \"nope\""),
        (with("runbook", json!(7)), 422, "give \"runbook\""),
        (
            with("target", json!("web 1; rm -rf /")),
            422,
            "target: agent id",
        ),
        (with("params", json!({ "a": 1 })), 422, "params.a"),
        (with("params", json!({ "a-b": "x" })), 422, "params.a-b"),
        (
            with("params", json!(["x"])),
            422,
            "\"params\" must be an object",
        ),
        (json!([1]), 422, "give \"runbook\""),
    ];
    for (body, want, words) in cases {
        let (status, answer) = server.post("/api/v1/runs", &body);
        assert_eq!(status, want, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(words),
            "{body}: {answer}"
        );
    }
    let (status, answer) = server.post_raw("/api/v1/runs", b"{not json", &[]);
    assert_eq!(status, 400, "{answer}");
    let (status, _) = post_as(&server, Some(READ), "/api/v1/runs", &good);
    assert_eq!(status, 403, "a read token runs nothing");
    let (status, _) = post_as(&server, None, "/api/v1/runs", &good);
    assert_eq!(status, 401);
    assert!(server.events().is_empty(), "nothing was stored");
    assert!(!audit_actions(&server)
        .iter()
        .any(|e| e["action"] == "runbook.run"));
}

#[test]
fn a_run_by_hand_waits_for_no_pause_breaker_or_earlier_run() {
    let (server, _agent) = start("manual-held");
    let run = json!({ "runbook": "slow", "target": "web-1", "reason": "try" });
    let (status, body) = server.post("/api/v1/runs", &run);
    assert_eq!(status, 201, "{body}");
    let first = body["event"]["id"].as_i64().unwrap();
    let (status, body) = server.post("/api/v1/runs", &run);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("event {first} still runs slow on web-1")),
        "{body}"
    );
    server.wait_event(first, &["succeeded"], Duration::from_secs(20));
    let (status, body) = server.post(
        "/api/v1/pauses",
        &json!({ "target": "web-1", "for": "10m", "reason": "hands off web-1" }),
    );
    assert_eq!(status, 201, "{body}");
    let pause = body["pause"]["id"].as_i64().unwrap();
    let (status, body) = server.post("/api/v1/runs", &run);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("resume it first"),
        "{body}"
    );
    let (status, _) = server.post(&format!("/api/v1/pauses/{pause}/resume"), &json!({}));
    assert_eq!(status, 200);
    let (status, _) = server.post("/api/v1/breaker/trip", &json!({ "reason": "stop" }));
    assert_eq!(status, 200);
    let (status, body) = server.post("/api/v1/runs", &run);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("breaker is open"),
        "{body}"
    );
    let (status, _) = server.post("/api/v1/breaker/reset", &json!({}));
    assert_eq!(status, 200);
    let (status, body) = server.post("/api/v1/runs", &run);
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.events().len(), 2);
}

#[test]
fn cancel_ends_an_open_event_and_says_what_still_runs() {
    let (server, agent) = start("manual-cancel");
    let (status, body) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "NeedsApproval", "labels": { "instance": "web-1" } }),
    );
    assert_eq!(status, 200, "{body}");
    let waiting = body["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap();
    let (status, body) = server.post(
        &format!("/api/v1/events/{waiting}/cancel"),
        &json!({ "reason": "not today" }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event"]["state"], "cancelled");
    assert!(body["event"]["reason"]
        .as_str()
        .unwrap()
        .contains("cancelled by admin-token: not today"));
    let (status, body) = server.post(&format!("/api/v1/events/{waiting}/cancel"), &json!({}));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already ended cancelled"),
        "{body}"
    );
    let (status, _) = server.post("/api/v1/events/999999/cancel", &json!({}));
    assert_eq!(status, 404);
    let (status, _) = server.post_raw(&format!("/api/v1/events/{waiting}/cancel"), b"[", &[]);
    assert_eq!(status, 400);
    let (status, _) = post_as(
        &server,
        Some(READ),
        &format!("/api/v1/events/{waiting}/cancel"),
        &json!({}),
    );
    assert_eq!(status, 403);

    // A running event: cancelled now, its step runs to its end and is recorded.
    let (status, body) = server.post(
        "/api/v1/runs",
        &json!({ "runbook": "slow", "target": "web-1", "reason": "slow one" }),
    );
    assert_eq!(status, 201, "{body}");
    let running = body["event"]["id"].as_i64().unwrap();
    server.wait_event(running, &["running"], Duration::from_secs(20));
    let (status, body) = server.post(&format!("/api/v1/events/{running}/cancel"), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert!(
        body["event"]["reason"]
            .as_str()
            .unwrap()
            .contains("runs to its end"),
        "{body}"
    );
    let event = wait_until("the late result", Duration::from_secs(20), || {
        let e = server.event(running);
        (e["ops"][0]["state"] == "succeeded").then_some(e)
    });
    assert_eq!(event["state"], "cancelled", "the result changes nothing");
    assert!(agent.logs().contains("running runbook slow"));
    wait_until(
        "the cancellations notified",
        Duration::from_secs(20),
        || (notified(&server).matches("event.cancelled").count() >= 2).then_some(()),
    );
    let cancels = audit_actions(&server)
        .into_iter()
        .filter(|e| e["action"] == "event.cancelled")
        .count();
    assert_eq!(cancels, 2);
}
