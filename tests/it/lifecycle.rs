//! The decision lifecycle end to end, with the real server and real agents:
//! the robo-hammer, the deploy guard, the breaker, approvals, pauses,
//! restarts in the middle of a cooldown and an approval, fan-out and
//! verification.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{heal_cli, test_dir, wait_agent_polling, wait_until, Agent, Server};

/// Sends one alert in heal's own format with a fixed start, as a monitoring
/// system re-sending the same occurrence would; returns its decisions.
fn send(server: &Server, name: &str, labels: Value, status: &str) -> Vec<Value> {
    let body = json!({ "name": name, "labels": labels, "status": status, "starts_at": "2026-11-23T10:00:00Z" });
    let (code, answer) = server.post("/api/v1/alerts", &body);
    assert_eq!(code, 200, "{answer}\nserver log:\n{}", server.logs());
    answer["alerts"][0]["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The single decision of a firing alert.
fn decide(server: &Server, name: &str, labels: Value) -> Value {
    let d = send(server, name, labels, "firing");
    assert_eq!(d.len(), 1, "{d:?}");
    d[0].clone()
}

/// Decision counts by outcome, for one rule.
fn counts(server: &Server, rule: &str) -> Value {
    server.get_ok(&format!("/api/v1/decisions?rule={rule}&limit=1000"))["counts"].clone()
}

/// Events of a rule, oldest first.
fn events_of(server: &Server, rule: &str) -> Vec<Value> {
    let mut e = server.get_ok(&format!("/api/v1/events?rule={rule}&limit=1000"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    e.reverse();
    e
}

fn timeline_has(event: &Value, kind: &str, text: &str) -> bool {
    event["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["kind"] == kind && t["message"].as_str().unwrap_or("").contains(text))
}

fn ops_of(event: &Value) -> Vec<Value> {
    event["ops"].as_array().cloned().unwrap_or_default()
}

/// How many times the agent started a runbook.
fn runs_logged(agent: &Agent, runbook: &str) -> usize {
    agent
        .logs()
        .matches(&format!("running runbook {runbook}\n"))
        .count()
}

fn dir_str(dir: &Path) -> String {
    dir.display().to_string()
}

/// The robo-hammer: an alert re-sent every second for 60 s while its 5 s
/// runbook never fixes the problem (cooldown 10 s, max_attempts 3) runs
/// exactly 3 times, then escalates once; every other re-send is a collapse
/// or a cooldown.
#[test]
fn robo_hammer_runs_three_times_then_escalates_once() {
    let dir = test_dir("hammer-never");
    let config = r#"
[server]
lease = "5s"

[[rule]]
name = "hammer"
when = "labels.alertname == 'QueueHigh'"
runbook = "reset-queue"
target = "labels.instance"
key = "[labels.alertname, labels.instance]"
cooldown = "10s"
max_attempts = 3
within = "1h"

[runbook.reset-queue]
timeout = "20s"
steps = [ { name = "reset", run = "sleep 5" } ]
verify = { resolved_within = "1s" }
"#;
    let server = Server::start(&dir, config);
    let agent = Agent::start(&server.url, "lb-1", &[]);
    wait_agent_polling(&server, "lb-1");
    let start = Instant::now();
    let mut sent = 0;
    for i in 0..60u64 {
        let d = decide(&server, "QueueHigh", json!({ "instance": "lb-1" }));
        assert_eq!(d["rule"], "hammer");
        sent += 1;
        let wake = start + Duration::from_secs(i + 1);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    let c = counts(&server, "hammer");
    assert_eq!(c["run"], 3, "{c}\n{}", server.logs());
    assert_eq!(c["escalate"], 1, "{c}");
    let quiet = c["collapse"].as_i64().unwrap() + c["cooldown"].as_i64().unwrap();
    assert_eq!(
        quiet,
        sent - 4,
        "every other re-send is a collapse or cooldown: {c}"
    );
    assert!(
        c["cooldown"].as_i64().unwrap() >= 3,
        "cooldowns between runs: {c}"
    );
    for o in [
        "defer",
        "await-approval",
        "paused",
        "dry-run",
        "breaker",
        "discard",
    ] {
        assert_eq!(c[o], 0, "{o}: {c}");
    }
    assert_eq!(runs_logged(&agent, "reset-queue"), 3, "{}", agent.logs());
    let events = events_of(&server, "hammer");
    let states: Vec<&str> = events
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["failed", "failed", "failed", "escalated"],
        "{events:#?}"
    );
    for e in &events[..3] {
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains("verification failed"),
            "{e}"
        );
    }
    let escalated = server.event(events[3]["id"].as_i64().unwrap());
    let ids: Vec<String> = events[..3]
        .iter()
        .map(|e| format!("event {} failed", e["id"]))
        .collect();
    for id in &ids {
        assert!(
            timeline_has(&escalated, "decision", id),
            "history lacks {id}: {escalated:#}"
        );
    }
    assert!(ops_of(&escalated).is_empty());
    assert!(
        escalated["ended_at"].is_null(),
        "escalation stays open while the alert fires"
    );
    assert!(server.logs().contains("escalate"), "escalations are logged");

    // The alert resolves: the escalation is closed.
    send(
        &server,
        "QueueHigh",
        json!({ "instance": "lb-1" }),
        "resolved",
    );
    let closed = server.event(events[3]["id"].as_i64().unwrap());
    assert!(!closed["ended_at"].is_null(), "{closed:#}");
}

/// The same hammer with a runbook that fixes the problem: one run, and the
/// event succeeds once the alert resolves.
#[test]
fn robo_hammer_with_a_fix_runs_once() {
    let dir = test_dir("hammer-fixed");
    let fixed = dir.join("fixed");
    let config = format!(
        r#"
[[rule]]
name = "hammer"
when = "labels.alertname == 'QueueHigh'"
runbook = "reset-queue"
target = "labels.instance"
key = "[labels.alertname, labels.instance]"
cooldown = "10s"
max_attempts = 3

[runbook.reset-queue]
timeout = "20s"
steps = [ {{ name = "reset", run = "sleep 5 && touch {}" }} ]
verify = {{ resolved_within = "30s" }}
"#,
        fixed.display()
    );
    let server = Server::start(&dir, &config);
    let agent = Agent::start(&server.url, "lb-1", &[]);
    wait_agent_polling(&server, "lb-1");
    let start = Instant::now();
    let mut firing = 0;
    for i in 0..60u64 {
        // The monitoring system sees the fix and reports the alert resolved.
        let status = if fixed.exists() { "resolved" } else { "firing" };
        send(&server, "QueueHigh", json!({ "instance": "lb-1" }), status);
        if status == "firing" {
            firing += 1;
        }
        let wake = start + Duration::from_secs(i + 1);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    let c = counts(&server, "hammer");
    assert_eq!(c["run"], 1, "{c}");
    assert_eq!(c["collapse"], firing - 1, "{c}");
    assert_eq!(runs_logged(&agent, "reset-queue"), 1);
    let events = events_of(&server, "hammer");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["state"], "succeeded", "{:#}", events[0]);
    assert!(events[0]["reason"]
        .as_str()
        .unwrap()
        .contains("resolved within the verification window"));
}

/// The deploy guard: while a `deploy` event runs, the alert is deferred; it
/// runs within a second of the deploy finishing; a deferred alert that
/// resolves never runs.
#[test]
fn deploy_guard_defers_then_runs_and_drops_resolved() {
    let dir = test_dir("deploy-guard");
    let config = r#"
[[rule]]
name = "deploy"
when = "labels.alertname == 'Deploy'"
runbook = "deploy"
target = "labels.instance"

[[rule]]
name = "restart"
when = "labels.alertname == 'Slow'"
runbook = "restart"
target = "labels.instance"
unless = "length(events[?runbook=='deploy' && state=='running']) > `0`"

[runbook.deploy]
steps = [ { name = "roll", run = "sleep 3" } ]

[runbook.restart]
steps = [ { name = "restart", run = "true" } ]
"#;
    let server = Server::start(&dir, config);
    let agent = Agent::start(&server.url, "web-1", &["--concurrency", "4"]);
    wait_agent_polling(&server, "web-1");

    let deploy = decide(&server, "Deploy", json!({ "instance": "web-1", "n": "1" }));
    let deploy_id = deploy["event_id"].as_i64().unwrap();
    server.wait_event(deploy_id, &["running"], Duration::from_secs(10));
    let d = decide(&server, "Slow", json!({ "instance": "web-1" }));
    assert_eq!(d["outcome"], "defer", "{d}");
    assert!(d["reason"].as_str().unwrap().contains("holds"), "{d}");
    let deferred_id = d["event_id"].as_i64().unwrap();
    assert_eq!(server.event(deferred_id)["state"], "deferred");
    // A re-send while deferred joins the deferred event.
    assert_eq!(
        decide(&server, "Slow", json!({ "instance": "web-1" }))["outcome"],
        "collapse"
    );

    let deploy = server.wait_event(deploy_id, &["succeeded"], Duration::from_secs(15));
    let ran = server.wait_event(deferred_id, &["succeeded"], Duration::from_secs(10));
    let gap = ran["started_at"].as_i64().unwrap() - deploy["ended_at"].as_i64().unwrap();
    assert!(
        (0..=1000).contains(&gap),
        "ran {gap} ms after the deploy ended"
    );
    assert!(
        timeline_has(&ran, "guard-cleared", "no longer holds"),
        "{ran:#}"
    );

    // Another deploy; an alert deferred by it resolves before the deploy ends.
    let deploy2 = decide(&server, "Deploy", json!({ "instance": "web-1", "n": "2" }));
    let deploy2_id = deploy2["event_id"].as_i64().unwrap();
    server.wait_event(deploy2_id, &["running"], Duration::from_secs(10));
    let d = decide(
        &server,
        "Slow",
        json!({ "instance": "web-1", "disk": "sdb" }),
    );
    assert_eq!(d["outcome"], "defer", "{d}");
    let dropped_id = d["event_id"].as_i64().unwrap();
    send(
        &server,
        "Slow",
        json!({ "instance": "web-1", "disk": "sdb" }),
        "resolved",
    );
    let dropped = server.event(dropped_id);
    assert_eq!(dropped["state"], "cancelled", "{dropped:#}");
    assert!(dropped["reason"]
        .as_str()
        .unwrap()
        .contains("resolved while the event was deferred"));
    server.wait_event(deploy2_id, &["succeeded"], Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500));
    let dropped = server.event(dropped_id);
    assert_eq!(dropped["state"], "cancelled");
    assert!(
        ops_of(&dropped).is_empty(),
        "a dropped deferral never runs: {dropped:#}"
    );
    assert_eq!(runs_logged(&agent, "restart"), 1);
}

const BREAKER_CONFIG: &str = r#"
[safety]
max_runs_per_hour = 3
max_failed_in_row = 2

[[rule]]
name = "ok"
when = "labels.alertname == 'Ok'"
runbook = "ok"
target = "labels.instance"

[[rule]]
name = "bad"
when = "labels.alertname == 'Bad'"
runbook = "bad"
target = "labels.instance"

[runbook.ok]
steps = [ { name = "ok", run = "true" } ]

[runbook.bad]
steps = [ { name = "bad", run = "exit 1" } ]
"#;

/// The breaker opens at max_runs_per_hour, stops every run, survives a
/// kill -9 of the server, and closes only by command.
#[test]
fn breaker_trips_at_the_rate_survives_restart_and_resets_by_command() {
    let dir = test_dir("breaker-rate");
    let mut server = Server::start(&dir, BREAKER_CONFIG);
    let agent = Agent::start(&server.url, "a1", &[]);
    wait_agent_polling(&server, "a1");
    for n in 0..3 {
        let d = decide(
            &server,
            "Ok",
            json!({ "instance": "a1", "n": n.to_string() }),
        );
        assert_eq!(d["outcome"], "run", "{d}");
        server.wait_event(
            d["event_id"].as_i64().unwrap(),
            &["succeeded"],
            Duration::from_secs(10),
        );
    }
    let d = decide(&server, "Ok", json!({ "instance": "a1", "n": "3" }));
    assert_eq!(d["outcome"], "breaker", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("this would be run 4 within an hour, [safety] max_runs_per_hour = 3"),
        "{d}"
    );
    let d = decide(&server, "Bad", json!({ "instance": "a1" }));
    assert_eq!(d["outcome"], "breaker", "another rule is stopped too: {d}");
    assert!(d["reason"].as_str().unwrap().contains("is open"), "{d}");
    let url = server.url.clone();
    let (code, out, err) = heal_cli(&["breaker", "--server", &url], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("breaker open"), "{out}");

    // kill -9, restart on the same database and port: still open.
    server.kill();
    let addr = server.addr.clone();
    drop(server);
    let server = Server::start_with(&dir, BREAKER_CONFIG, &addr, &[]);
    let d = decide(&server, "Ok", json!({ "instance": "a1", "n": "4" }));
    assert_eq!(d["outcome"], "breaker", "{d}");
    // Time alone does not close it; a person does.
    let (code, out, err) = heal_cli(
        &["breaker", "reset", "--reason", "checked", "--server", &url],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("breaker closed: reset by local: checked"),
        "{out}"
    );
    wait_agent_polling(&server, "a1");
    let d = decide(&server, "Ok", json!({ "instance": "a1", "n": "5" }));
    assert_eq!(d["outcome"], "run", "{d}");
    server.wait_event(
        d["event_id"].as_i64().unwrap(),
        &["succeeded"],
        Duration::from_secs(10),
    );
    assert_eq!(runs_logged(&agent, "ok"), 4);
    // Trip by hand needs a reason.
    let (code, _, err) = heal_cli(&["breaker", "trip", "--server", &url], &[], None);
    assert_eq!(code, 2, "{err}");
    let (code, body) = server.post("/api/v1/breaker/trip", &json!({}));
    assert_eq!(code, 422, "{body}");
}

/// max_failed_in_row failures in a row open the breaker.
#[test]
fn breaker_trips_after_failures_in_a_row() {
    let dir = test_dir("breaker-failures");
    let server = Server::start(&dir, BREAKER_CONFIG);
    let _agent = Agent::start(&server.url, "a1", &[]);
    wait_agent_polling(&server, "a1");
    for n in 0..2 {
        let d = decide(
            &server,
            "Bad",
            json!({ "instance": "a1", "n": n.to_string() }),
        );
        assert_eq!(d["outcome"], "run", "{d}");
        server.wait_event(
            d["event_id"].as_i64().unwrap(),
            &["failed"],
            Duration::from_secs(10),
        );
    }
    let b = wait_until("the breaker to open", Duration::from_secs(5), || {
        let b = server.get_ok("/api/v1/breaker");
        (b["state"] == "open").then_some(b)
    });
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("2 failed events in a row"),
        "{b}"
    );
    let d = decide(&server, "Ok", json!({ "instance": "a1" }));
    assert_eq!(d["outcome"], "breaker", "{d}");
}

/// Approval: approved runs once; expired never runs; resolved while pending
/// is cancelled; rejected never runs; who decided is recorded.
#[test]
fn approvals_run_once_expire_and_cancel() {
    let dir = test_dir("approvals");
    let admin = "admin-secret-0123456789";
    let reader = "reader-secret-0123456789";
    let agent_token = "agent-secret-0123456789";
    let config = format!(
        r#"
[[token]]
name = "alice"
scopes = ["admin"]
secret = "{admin}"

[[token]]
name = "viewer"
scopes = ["read"]
secret = "{reader}"

[[token]]
name = "agent-db-1"
scopes = ["agent"]
agent = "db-1"
secret = "{agent_token}"

[[rule]]
name = "failover"
when = "labels.alertname == 'DbDown'"
runbook = "failover"
target = "labels.instance"
approve = true
approve_timeout = "3s"

[runbook.failover]
steps = [ {{ name = "promote", run = "true" }} ]
"#
    );
    let mut server = Server::start(&dir, &config);
    server.token = Some(admin.into());
    let agent = Agent::start(&server.url, "db-1", &["--token", agent_token]);
    wait_agent_polling(&server, "db-1");
    let url = server.url.clone();

    // Pending, then approved by the CLI: runs once.
    let d = decide(
        &server,
        "DbDown",
        json!({ "instance": "db-1", "cluster": "a" }),
    );
    assert_eq!(d["outcome"], "await-approval", "{d}");
    let id = d["event_id"].as_i64().unwrap();
    assert_eq!(server.event(id)["state"], "pending_approval");
    assert!(ops_of(&server.event(id)).is_empty());
    let (code, _, err) = heal_cli(
        &[
            "approve",
            &id.to_string(),
            "--server",
            &url,
            "--token",
            reader,
        ],
        &[],
        None,
    );
    assert_eq!(code, 1, "a read token cannot approve: {err}");
    assert!(err.contains("lacks the admin scope"), "{err}");
    let (code, out, err) = heal_cli(
        &[
            "approve",
            &id.to_string(),
            "--reason",
            "primary is gone",
            "--server",
            &url,
            "--token",
            admin,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let e = server.wait_event(id, &["succeeded"], Duration::from_secs(10));
    assert_eq!(e["decided_by"], "alice");
    assert!(
        timeline_has(&e, "approved", "approved by alice: primary is gone"),
        "{e:#}"
    );
    assert_eq!(ops_of(&e).len(), 1);
    let (code, _, err) = heal_cli(
        &[
            "approve",
            &id.to_string(),
            "--server",
            &url,
            "--token",
            admin,
        ],
        &[],
        None,
    );
    assert_eq!(code, 1, "approving twice is refused");
    assert!(err.contains("it is succeeded"), "{err}");

    // Expired: never runs, cannot be approved afterwards.
    let d = decide(
        &server,
        "DbDown",
        json!({ "instance": "db-1", "cluster": "b" }),
    );
    let expired = d["event_id"].as_i64().unwrap();
    let e = server.wait_event(expired, &["cancelled"], Duration::from_secs(10));
    assert!(
        e["reason"].as_str().unwrap().contains("approval expired"),
        "{e:#}"
    );
    let (code, body) = server.post(&format!("/api/v1/events/{expired}/approve"), &json!({}));
    assert_eq!(code, 409, "{body}");

    // Resolved while pending: cancelled.
    let d = decide(
        &server,
        "DbDown",
        json!({ "instance": "db-1", "cluster": "c" }),
    );
    let resolved = d["event_id"].as_i64().unwrap();
    send(
        &server,
        "DbDown",
        json!({ "instance": "db-1", "cluster": "c" }),
        "resolved",
    );
    let e = server.event(resolved);
    assert_eq!(e["state"], "cancelled", "{e:#}");
    assert!(e["reason"]
        .as_str()
        .unwrap()
        .contains("resolved while the event was pending_approval"));

    // Rejected: cancelled, never runs.
    let d = decide(
        &server,
        "DbDown",
        json!({ "instance": "db-1", "cluster": "d" }),
    );
    let rejected = d["event_id"].as_i64().unwrap();
    let (code, _, err) = heal_cli(
        &[
            "reject",
            &rejected.to_string(),
            "--server",
            &url,
            "--token",
            admin,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let e = server.event(rejected);
    assert_eq!(
        (e["state"].as_str(), e["decided_by"].as_str()),
        (Some("cancelled"), Some("alice"))
    );

    // Unknown event, bad bodies.
    let (code, _) = server.post("/api/v1/events/99999/approve", &json!({}));
    assert_eq!(code, 404);
    let (code, _) = server.post_raw(&format!("/api/v1/events/{rejected}/approve"), b"{nope", &[]);
    assert_eq!(code, 400);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runs_logged(&agent, "failover"), 1, "{}", agent.logs());
}

/// kill -9 in the middle of a cooldown, of a pending approval and of a
/// pause: after a restart all three still hold.
#[test]
fn restart_keeps_cooldown_approval_and_pause() {
    let dir = test_dir("restart-lifecycle");
    let config = r#"
[[rule]]
name = "settle"
when = "labels.alertname == 'Settle'"
runbook = "quick"
target = "labels.instance"
cooldown = "10m"

[[rule]]
name = "careful"
when = "labels.alertname == 'Careful'"
runbook = "quick"
target = "labels.instance"
approve = true

[[rule]]
name = "paused"
when = "labels.alertname == 'Maint'"
runbook = "maint"
target = "labels.instance"

[runbook.quick]
steps = [ { name = "q", run = "true" } ]

[runbook.maint]
steps = [ { name = "m", run = "true" } ]
"#;
    let mut server = Server::start(&dir, config);
    let agent = Agent::start(&server.url, "h1", &[]);
    wait_agent_polling(&server, "h1");
    let url = server.url.clone();
    let d = decide(&server, "Settle", json!({ "instance": "h1" }));
    let settle = d["event_id"].as_i64().unwrap();
    server.wait_event(settle, &["succeeded"], Duration::from_secs(10));
    // Still firing after the fix: the key is settling.
    assert_eq!(
        decide(&server, "Settle", json!({ "instance": "h1" }))["outcome"],
        "cooldown"
    );
    let pending = decide(&server, "Careful", json!({ "instance": "h1" }))["event_id"]
        .as_i64()
        .unwrap();
    let (code, out, err) = heal_cli(
        &[
            "pause",
            "--runbook",
            "maint",
            "--for",
            "30m",
            "--reason",
            "disk swap",
            "--server",
            &url,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        decide(&server, "Maint", json!({ "instance": "h1" }))["outcome"],
        "paused"
    );

    server.kill();
    let addr = server.addr.clone();
    drop(server);
    let server = Server::start_with(&dir, config, &addr, &[]);
    let d = decide(&server, "Settle", json!({ "instance": "h1" }));
    assert_eq!(d["outcome"], "cooldown", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("event {settle}")),
        "{d}"
    );
    let e = server.event(pending);
    assert_eq!(e["state"], "pending_approval", "{e:#}");
    let d = decide(&server, "Maint", json!({ "instance": "h1" }));
    assert_eq!(d["outcome"], "paused", "{d}");
    assert!(d["reason"].as_str().unwrap().contains("disk swap"), "{d}");
    wait_agent_polling(&server, "h1");
    let (code, _, err) = heal_cli(
        &["approve", &pending.to_string(), "--server", &url],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    server.wait_event(pending, &["succeeded"], Duration::from_secs(10));
    assert_eq!(runs_logged(&agent, "quick"), 2);
    assert_eq!(runs_logged(&agent, "maint"), 0);
}

/// Pauses by runbook, target and label selector; listing; resume; bad input.
#[test]
fn pauses_cover_list_and_resume() {
    let dir = test_dir("pauses");
    let config = r#"
[[rule]]
name = "fix"
when = "labels.alertname == 'X'"
runbook = "fix"
target = "labels.instance"

[runbook.fix]
steps = [ { name = "a", run = "true" } ]
"#;
    let server = Server::start(&dir, config);
    let _agent = Agent::start(&server.url, "h1", &[]);
    wait_agent_polling(&server, "h1");
    let url = server.url.clone();
    let pause = |args: &[&str]| {
        let mut all = vec!["pause"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--for",
            "10m",
            "--reason",
            "maintenance window",
            "--server",
            &url,
        ]);
        let (code, out, err) = heal_cli(&all, &[], None);
        assert_eq!(code, 0, "{out}{err}");
        out.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    let by_target = pause(&["--target", "h1"]);
    let d = decide(&server, "X", json!({ "instance": "h1", "n": "1" }));
    assert_eq!(d["outcome"], "paused", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("pause {by_target} (agent h1) by local")),
        "{d}"
    );
    let (code, out, _) = heal_cli(&["pauses", "--server", &url], &[], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("agent h1") && out.contains("maintenance window"),
        "{out}"
    );
    let (code, _, err) = heal_cli(
        &["resume", &by_target.to_string(), "--server", &url],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = heal_cli(
        &["resume", &by_target.to_string(), "--server", &url],
        &[],
        None,
    );
    assert_eq!(code, 1, "resuming twice is refused");
    let by_match = pause(&["--match", "labels.team == 'db'"]);
    assert_eq!(
        decide(&server, "X", json!({ "instance": "h1", "team": "db" }))["outcome"],
        "paused"
    );
    assert_eq!(
        decide(&server, "X", json!({ "instance": "h1", "team": "web" }))["outcome"],
        "run"
    );
    let (code, _, _) = heal_cli(
        &["resume", &by_match.to_string(), "--server", &url],
        &[],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(
        decide(&server, "X", json!({ "instance": "h1", "team": "db" }))["outcome"],
        "run"
    );

    for (body, want) in [
        (json!({ "for": "10m", "reason": "r" }), "say what it covers"),
        (
            json!({ "runbook": "fix", "for": "10m" }),
            "give a \"reason\"",
        ),
        (
            json!({ "runbook": "fix", "reason": "r" }),
            "give exactly one of \"for\"",
        ),
        (
            json!({ "runbook": "fix", "for": "soon", "reason": "r" }),
            "for:",
        ),
        (
            json!({ "match": "labels.[", "for": "10m", "reason": "r" }),
            "match:",
        ),
        (
            json!({ "runbook": "fix", "for": "1000d", "reason": "r" }),
            "within 90 days",
        ),
        (
            json!({ "runbook": 7, "for": "10m", "reason": "r" }),
            "must be a non-empty string",
        ),
    ] {
        let (code, answer) = server.post("/api/v1/pauses", &body);
        assert_eq!(code, 422, "{body} → {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(want),
            "{body} → {answer}"
        );
    }
    let (code, _) = server.post("/api/v1/pauses/9999/resume", &json!({}));
    assert_eq!(code, 404);
    let (code, _, err) = heal_cli(
        &["pause", "--for", "10m", "--reason", "r", "--server", &url],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");
}

/// Fan-out to tagged agents: max_parallel at a time, the first failure stops
/// the rest, max_targets caps the reach.
#[test]
fn fan_out_respects_max_parallel_failure_and_max_targets() {
    let dir = test_dir("fan-out");
    let config = r#"
[[rule]]
name = "roll"
when = "labels.alertname == 'Roll'"
runbook = "roll"
target = { tags = ["web"] }

[[rule]]
name = "broken"
when = "labels.alertname == 'Broken'"
runbook = "broken"
target = { tags = ["web"] }

[[rule]]
name = "capped"
when = "labels.alertname == 'Capped'"
runbook = "roll"
target = { tags = ["web"] }
max_targets = 2

[runbook.roll]
max_parallel = 1
steps = [ { name = "restart", run = "sleep 0.3" } ]

[runbook.broken]
max_parallel = 1
steps = [ { name = "restart", run = "exit 3" } ]
"#;
    let server = Server::start(&dir, config);
    let _agents: Vec<Agent> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| Agent::start(&server.url, id, &["--tags", "web"]))
        .collect();
    for id in ["w1", "w2", "w3"] {
        wait_agent_polling(&server, id);
    }
    let d = decide(&server, "Roll", json!({}));
    assert_eq!(d["outcome"], "run", "{d}");
    let e = server.wait_event(
        d["event_id"].as_i64().unwrap(),
        &["succeeded"],
        Duration::from_secs(20),
    );
    let ops = ops_of(&e);
    assert_eq!(ops.len(), 3, "{e:#}");
    for pair in ops.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b["started_at"].as_i64().unwrap() >= a["finished_at"].as_i64().unwrap(),
            "max_parallel = 1: one target at a time: {e:#}"
        );
    }
    let d = decide(&server, "Broken", json!({}));
    let e = server.wait_event(
        d["event_id"].as_i64().unwrap(),
        &["failed"],
        Duration::from_secs(20),
    );
    let states: Vec<String> = ops_of(&e)
        .iter()
        .map(|o| o["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["failed", "cancelled", "cancelled"], "{e:#}");
    let d = decide(&server, "Capped", json!({}));
    assert_eq!(d["outcome"], "discard", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("3 agents, more than max_targets = 2"),
        "{d}"
    );
}

/// verify.run: the check is retried on the same agent until it passes; a
/// check that never passes fails the event.
#[test]
fn verify_run_retries_the_check_on_the_same_agent() {
    let dir = test_dir("verify-run");
    let counter = dir.join("tries");
    let config = format!(
        r#"
[[rule]]
name = "v"
when = "labels.alertname == 'V'"
runbook = "checked"
target = "labels.instance"

[[rule]]
name = "never"
when = "labels.alertname == 'Never'"
runbook = "never"
target = "labels.instance"

[runbook.checked]
steps = [ {{ name = "fix", run = "true" }} ]
verify = {{ run = "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo try $n; [ $n -ge 3 ]", retries = 4, interval = "200ms" }}

[runbook.never]
steps = [ {{ name = "fix", run = "true" }} ]
verify = {{ run = "exit 1", retries = 1, interval = "100ms" }}
"#,
        c = counter.display()
    );
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "h1", &[]);
    wait_agent_polling(&server, "h1");
    let d = decide(&server, "V", json!({ "instance": "h1" }));
    let e = server.wait_event(
        d["event_id"].as_i64().unwrap(),
        &["succeeded", "failed"],
        Duration::from_secs(20),
    );
    assert_eq!(e["state"], "succeeded", "{e:#}");
    let ops = ops_of(&e);
    assert_eq!(ops.len(), 2, "{e:#}");
    assert_eq!(
        (ops[1]["kind"].as_str(), ops[1]["agent"].as_str()),
        (Some("verify"), Some("h1"))
    );
    let names: Vec<&str> = ops[1]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "verify (try 1 of 5)",
            "verify (try 2 of 5)",
            "verify (try 3 of 5)"
        ]
    );
    assert!(timeline_has(&e, "state", "verifying"), "{e:#}");

    let d = decide(&server, "Never", json!({ "instance": "h1" }));
    let e = server.wait_event(
        d["event_id"].as_i64().unwrap(),
        &["succeeded", "failed"],
        Duration::from_secs(20),
    );
    assert_eq!(e["state"], "failed", "{e:#}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("verification failed"),
        "{e:#}"
    );
    assert_eq!(ops_of(&e)[1]["steps"].as_array().unwrap().len(), 2);
}

/// Dry-run records what would run, with the environment, and runs nothing;
/// re-sends collapse into it until the alert resolves.
#[test]
fn dry_run_records_and_runs_nothing() {
    let dir = test_dir("dry-run");
    let config = r#"
[[rule]]
name = "trial"
when = "labels.alertname == 'Trial'"
runbook = "t"
target = "labels.instance"
params = { svc = "labels.service" }
mode = "dry-run"

[runbook.t]
steps = [ { name = "a", run = "true" } ]
"#;
    let server = Server::start(&dir, config);
    let agent = Agent::start(&server.url, "h1", &[]);
    wait_agent_polling(&server, "h1");
    let d = decide(
        &server,
        "Trial",
        json!({ "instance": "h1", "service": "nginx" }),
    );
    assert_eq!(d["outcome"], "dry-run", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("live, heal would run"),
        "{d}"
    );
    let id = d["event_id"].as_i64().unwrap();
    assert_eq!(
        decide(
            &server,
            "Trial",
            json!({ "instance": "h1", "service": "nginx" })
        )["outcome"],
        "collapse"
    );
    let e = server.event(id);
    assert_eq!(e["state"], "dry_run");
    assert!(timeline_has(&e, "dry-run", "HEAL_PARAM_SVC=nginx"), "{e:#}");
    assert!(ops_of(&e).is_empty());
    send(
        &server,
        "Trial",
        json!({ "instance": "h1", "service": "nginx" }),
        "resolved",
    );
    assert!(!server.event(id)["ended_at"].is_null());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(runs_logged(&agent, "t"), 0);
}

/// heal run-rule decides from a saved context file and from a live server
/// exactly as the server does.
#[test]
fn run_rule_uses_context_from_file_and_server() {
    let dir = test_dir("run-rule-context");
    let config = r#"
[[rule]]
name = "slow"
when = "labels.alertname == 'Slow'"
runbook = "slow"
target = "labels.instance"
key = "labels.instance"
cooldown = "5m"

[runbook.slow]
steps = [ { name = "a", run = "sleep 20" } ]
"#;
    let server = Server::start(&dir, config);
    let _agent = Agent::start(&server.url, "h1", &[]);
    wait_agent_polling(&server, "h1");
    let d = decide(&server, "Slow", json!({ "instance": "h1" }));
    let id = d["event_id"].as_i64().unwrap();
    server.wait_event(id, &["running"], Duration::from_secs(10));
    let cfg = dir.join("runbooks.toml");
    let alert = dir.join("alert.json");
    std::fs::write(
        &alert,
        json!({ "name": "Slow", "labels": { "instance": "h1", "x": "2" } }).to_string(),
    )
    .unwrap();
    let (cfg, alert) = (dir_str(&cfg), dir_str(&alert));

    let (code, out, err) = heal_cli(
        &[
            "run-rule",
            "--config",
            &cfg,
            &alert,
            "--server",
            &server.url,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "decision: collapse: event {id} for key \"h1\" is running"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("open event {id} (running)")), "{out}");

    let ctx = server.get_ok("/api/v1/context");
    for k in [
        "alerts",
        "events",
        "agents",
        "heartbeats",
        "probes",
        "pauses",
        "breaker",
    ] {
        assert!(ctx.get(k).is_some(), "context lacks {k}: {ctx}");
    }
    let ctx_file = dir.join("ctx.json");
    std::fs::write(&ctx_file, ctx.to_string()).unwrap();
    let (code, out, err) = heal_cli(
        &[
            "run-rule",
            "--config",
            &cfg,
            &alert,
            "--context",
            &dir_str(&ctx_file),
            "--json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let trace: Value = serde_json::from_str(&out).unwrap();
    let d = &trace["alerts"][0]["decisions"][0];
    assert_eq!(d["outcome"], "collapse", "{trace:#}");
    assert_eq!(d["event_id"], id);
    // The server decides the same.
    let d = decide(&server, "Slow", json!({ "instance": "h1", "x": "2" }));
    assert_eq!(d["outcome"], "collapse", "{d}");

    let (code, out, _) = heal_cli(&["run-rule", "--config", &cfg, &alert], &[], None);
    assert_eq!(code, 0);
    assert!(out.contains("no context given"), "{out}");
    assert!(out.contains("decision: run"), "{out}");
    let (code, _, err) = heal_cli(
        &[
            "run-rule",
            "--config",
            &cfg,
            &alert,
            "--context",
            &alert,
            "--server",
            &server.url,
        ],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");

    // Filters and counts.
    let running = server.get_ok("/api/v1/events?state=running,queued&rule=slow&key=h1");
    assert_eq!(running["events"].as_array().unwrap().len(), 1, "{running}");
    let none = server.get_ok("/api/v1/events?state=succeeded&rule=slow");
    assert!(none["events"].as_array().unwrap().is_empty());
    let c = counts(&server, "slow");
    assert_eq!(
        (c["run"].as_i64(), c["collapse"].as_i64()),
        (Some(1), Some(1)),
        "{c}"
    );
    let (code, out, _) = heal_cli(
        &[
            "events",
            "--rule",
            "slow",
            "--key",
            "h1",
            "--server",
            &server.url,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0);
    assert!(out.contains("running"), "{out}");
}

/// The kinds of an event's timeline, in order.
fn timeline_kinds(event: &Value) -> Vec<String> {
    event["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Whether `kinds` holds `want` in this order (others may come between).
fn in_order(kinds: &[String], want: &[&str]) -> bool {
    let mut rest = kinds.iter();
    want.iter().all(|w| rest.any(|k| k == w))
}

/// The README's promise: decision, dispatch, start, result. A step that
/// ends at once on a real agent, and a result that comes without the start
/// acknowledgement (as from an agent whose acknowledgement was lost), both
/// show their start.
#[test]
fn every_op_that_ran_has_its_start_on_the_timeline() {
    let dir = test_dir("start-on-timeline");
    let config = crate::support::one_rule_config(r#"{ name = "go", run = "true" }"#, "");
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    let id = decide(&server, "Quick", json!({ "instance": "web-1" }))["event_id"]
        .as_i64()
        .expect("an event");
    let event = server.wait_event(id, &["succeeded"], Duration::from_secs(20));
    let kinds = timeline_kinds(&event);
    assert!(
        in_order(&kinds, &["decision", "dispatched", "started", "result"]),
        "{kinds:?}"
    );

    // An agent that reports its result without confirming the start.
    let hello = json!({ "instance": "i-1" });
    let (code, answer) = server.post("/api/v1/agents/web-2/poll?wait=0", &hello);
    assert_eq!(code, 200, "{answer}");
    let id = decide(&server, "Quick", json!({ "instance": "web-2" }))["event_id"]
        .as_i64()
        .expect("an event");
    let (code, answer) = server.post("/api/v1/agents/web-2/poll?wait=0", &hello);
    assert_eq!(code, 200, "{answer}");
    let op = answer["ops"][0]["id"]
        .as_i64()
        .expect("the op is handed out");
    let result = json!({
        "state": "succeeded",
        "steps": [{ "name": "go", "exit_code": 0, "duration_ms": 7 }],
    });
    let (code, answer) = server.post(&format!("/api/v1/agents/web-2/ops/{op}/result"), &result);
    assert_eq!(code, 200, "{answer}");
    let event = server.wait_event(id, &["succeeded"], Duration::from_secs(20));
    let kinds = timeline_kinds(&event);
    assert!(
        in_order(&kinds, &["decision", "dispatched", "started", "result"]),
        "{kinds:?}"
    );
    assert!(
        timeline_has(
            &event,
            "started",
            &format!("op {op} started on agent web-2")
        ),
        "{event}"
    );
    assert!(ops_of(&event)[0]["started_at"].is_i64(), "{event}");
}
