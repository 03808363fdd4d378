//! Agent-side probes (`[[probe]] on`) with the real server and real agents:
//! a check runs on each matching agent and alerts per agent, a pair never
//! runs twice at once, a down agent's checks turn unknown instead of
//! failing, a runbook fixes what a check saw on that agent, and the result
//! route refuses what it must.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{http, test_dir, wait_agent_polling, wait_until, Agent, Server};
use crate::watch::{alerts_named, wait_alert};

/// An agent whose `$CHECK_FLAG` is `dir/ID.flag`.
fn agent(server: &Server, dir: &Path, id: &str, tags: &str) -> Agent {
    let flag = dir.join(format!("{id}.flag"));
    Agent::start_with(
        &crate::support::repo(),
        &server.url,
        id,
        &["--tags", tags],
        |cmd| {
            cmd.env("CHECK_FLAG", &flag);
        },
    )
}

fn probe(server: &Server, name: &str) -> Value {
    server.get_ok(&format!("/api/v1/probes/{name}?limit=50"))["probe"].clone()
}

/// The state of `agent`'s run of a probe, once it has one.
fn state_on(server: &Server, name: &str, agent: &str) -> Option<String> {
    probe(server, name)["agents"]
        .as_array()?
        .iter()
        .find(|a| a["agent"] == agent)
        .map(|a| a["state"].as_str().unwrap_or_default().to_string())
}

fn wait_state(server: &Server, name: &str, agent: &str, want: &str, within: Duration) {
    wait_until(
        &format!("probe {name} on agent {agent} to be {want}"),
        within,
        || (state_on(server, name, agent).as_deref() == Some(want)).then_some(()),
    );
}

/// The `ProbeFailing` alerts of a probe on one agent, newest first.
fn failing_on(server: &Server, name: &str, agent: &str) -> Vec<Value> {
    alerts_named(server, "ProbeFailing")
        .into_iter()
        .filter(|a| a["labels"]["probe"] == name && a["labels"]["agent"] == agent)
        .collect()
}

#[test]
fn a_check_runs_on_each_tagged_agent_alerts_per_agent_and_goes_unknown_when_its_agent_is_down() {
    let dir = test_dir("agent-checks");
    let config = r#"
[server]
poll_wait = "2s"
agent_down_after = "3s"

[[probe]]
name = "flag"
every = "1s"
fail_after = 1
recover_after = 1
on = { tags = ["db"] }
command = { run = 'test ! -e "$CHECK_FLAG" || { echo "flag on $(basename "$CHECK_FLAG")"; exit 1; }' }

[[probe]]
name = "root-disk"
every = "1s"
on = "agents[?contains(tags, 'db')].id | [0]"
disk = { path = "/", max_used = "100%" }
"#;
    let server = Server::start(&dir, config);
    let mut db1 = agent(&server, &dir, "db-1", "db");
    let _db2 = agent(&server, &dir, "db-2", "db,eu");
    let web = agent(&server, &dir, "web-1", "web");
    for a in ["db-1", "db-2", "web-1"] {
        wait_agent_polling(&server, a);
    }
    wait_state(&server, "flag", "db-1", "up", Duration::from_secs(10));
    wait_state(&server, "flag", "db-2", "up", Duration::from_secs(10));
    let p = probe(&server, "flag");
    assert_eq!(p["on"], r#"{ tags = ["db"] }"#, "{p}");
    assert_eq!(p["state"], "up", "{p}");
    assert!(state_on(&server, "flag", "web-1").is_none(), "{p}");
    let results = p["agents"][0]["recent_results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["ok"] == true), "{p}");
    let (code, page) = http("GET", &format!("{}/probes/flag", server.url), None, &[]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("On agents") && page.contains("db-2"),
        "{page}"
    );
    // The expression picks the first db agent; the disk check reads its root filesystem.
    wait_state(&server, "root-disk", "db-1", "up", Duration::from_secs(10));
    let d = probe(&server, "root-disk");
    assert_eq!(d["agents"].as_array().unwrap().len(), 1, "{d}");
    assert!(
        d["agents"][0]["last_detail"]
            .as_str()
            .unwrap()
            .contains("% used"),
        "{d}"
    );

    // A problem on db-2 alone: one alert, with the agent label.
    std::fs::write(dir.join("db-2.flag"), "x").unwrap();
    wait_alert(
        &server,
        "ProbeFailing",
        "agent",
        "db-2",
        "firing",
        Duration::from_secs(10),
    );
    let a = &failing_on(&server, "flag", "db-2")[0];
    assert_eq!(a["labels"]["probe_type"], "command");
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("probe flag on agent db-2 is failing: exit 1: flag on db-2.flag"),
        "{a}"
    );
    assert!(failing_on(&server, "flag", "db-1").is_empty());
    assert_eq!(probe(&server, "flag")["state"], "down");
    assert_eq!(state_on(&server, "flag", "db-1").as_deref(), Some("up"));
    std::fs::remove_file(dir.join("db-2.flag")).unwrap();
    wait_alert(
        &server,
        "ProbeFailing",
        "agent",
        "db-2",
        "resolved",
        Duration::from_secs(10),
    );

    // db-1 fails, then dies: its check turns unknown and its alert
    // resolves; AgentDown says what is wrong.
    std::fs::write(dir.join("db-1.flag"), "x").unwrap();
    wait_alert(
        &server,
        "ProbeFailing",
        "agent",
        "db-1",
        "firing",
        Duration::from_secs(10),
    );
    db1.kill();
    wait_alert(
        &server,
        "AgentDown",
        "agent",
        "db-1",
        "firing",
        Duration::from_secs(10),
    );
    wait_state(&server, "flag", "db-1", "unknown", Duration::from_secs(5));
    wait_alert(
        &server,
        "ProbeFailing",
        "agent",
        "db-1",
        "resolved",
        Duration::from_secs(5),
    );
    let p = probe(&server, "flag");
    let on_db1 = p["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "db-1")
        .unwrap();
    assert!(
        on_db1["last_detail"]
            .as_str()
            .unwrap()
            .contains("agent db-1 is down"),
        "{p}"
    );
    assert_eq!(failing_on(&server, "flag", "db-1").len(), 1, "raised once");
    // Back: it runs again, sees the flag, and fails again.
    std::fs::remove_file(dir.join("db-1.flag")).unwrap();
    let _db1 = agent(&server, &dir, "db-1", "db");
    wait_alert(
        &server,
        "AgentDown",
        "agent",
        "db-1",
        "resolved",
        Duration::from_secs(10),
    );
    wait_state(&server, "flag", "db-1", "up", Duration::from_secs(10));
    // The web agent never ran a check.
    assert!(!web.logs().contains("probe flag"), "{}", web.logs());
}

#[test]
fn a_slow_check_never_runs_twice_at_once_on_an_agent() {
    let dir = test_dir("agent-checks-slow");
    let log = dir.join("runs.log");
    let config = format!(
        r#"
[server]
poll_wait = "2s"

[[probe]]
name = "slow"
every = "1s"
timeout = "5s"
on = "'solo'"
command = {{ run = 'echo "start $(date +%s%N)" >> {log}; sleep 1.6; echo "end $(date +%s%N)" >> {log}' }}
"#,
        log = log.display()
    );
    let server = Server::start(&dir, &config);
    let _a = agent(&server, &dir, "solo", "x");
    wait_agent_polling(&server, "solo");
    let started = Instant::now();
    wait_until("four runs to end", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.matches("end ").count() >= 4).then_some(())
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let kinds: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    for pair in kinds.windows(2) {
        assert_ne!(pair[0], pair[1], "two runs overlapped:\n{text}");
    }
    // Due every second, it took 1.6 s: the runs due meanwhile were skipped, not queued.
    let ends = text.matches("end ").count() as f64;
    assert!(
        ends <= started.elapsed().as_secs_f64() / 1.6 + 1.0,
        "{ends} runs in {:?}",
        started.elapsed()
    );
    assert!(
        server.logs().contains(
            "probe slow on agent solo: still running from last time; this run is skipped"
        ),
        "{}",
        server.logs()
    );
}

#[test]
fn a_runbook_fixes_on_its_agent_what_a_check_saw() {
    let dir = test_dir("agent-checks-fix");
    let config = r#"
[server]
poll_wait = "2s"

[[probe]]
name = "flag"
every = "1s"
fail_after = 2
on = { tags = ["db"] }
command = { run = 'test ! -e "$CHECK_FLAG"' }

[runbook.clear-flag]
steps = [{ name = "clear", run = 'rm -f "$CHECK_FLAG"' }]

[[rule]]
name = "flag-fix"
when = "labels.alertname == 'ProbeFailing' && labels.probe == 'flag'"
runbook = "clear-flag"
target = "labels.agent"
"#;
    let server = Server::start(&dir, config);
    let _a = agent(&server, &dir, "db-7", "db");
    let _b = agent(&server, &dir, "db-8", "db");
    wait_agent_polling(&server, "db-7");
    wait_agent_polling(&server, "db-8");
    wait_state(&server, "flag", "db-8", "up", Duration::from_secs(10));
    std::fs::write(dir.join("db-8.flag"), "x").unwrap();
    let event = wait_until(
        "an event for the failing check",
        Duration::from_secs(15),
        || {
            server
                .events()
                .into_iter()
                .find(|e| e["rule"] == "flag-fix")
        },
    );
    let id = event["id"].as_i64().unwrap();
    let done = server.wait_event(id, &["succeeded"], Duration::from_secs(15));
    let ops = done["ops"].as_array().unwrap();
    assert_eq!(ops.len(), 1, "{done}");
    assert_eq!(ops[0]["agent"], "db-8", "{done}");
    assert!(!dir.join("db-8.flag").exists());
    wait_alert(
        &server,
        "ProbeFailing",
        "agent",
        "db-8",
        "resolved",
        Duration::from_secs(10),
    );
}

#[test]
fn the_result_route_and_the_config_refuse_what_they_must() {
    if crate::support::sqlite_only(
        "agent_checks::the_result_route_and_the_config_refuse_what_they_must",
    ) {
        return;
    }
    let dir = test_dir("agent-checks-refuse");
    let config = r#"
[server]
poll_wait = "2s"

[[probe]]
name = "disk"
every = "1h"
on = { tags = ["db"] }
disk = { path = "/", max_used = "100%", warn_used = "99.9%" }
"#;
    let server = Server::start(&dir, config);
    let _a = agent(&server, &dir, "db-3", "db");
    wait_agent_polling(&server, "db-3");
    wait_state(&server, "disk", "db-3", "up", Duration::from_secs(10));
    let path = "/api/v1/agents/db-3/checks/disk/result";
    // The run was reported: the same due again is a duplicate, an older one
    // stale, one never handed out unknown.
    let db = rusqlite::Connection::open(dir.join("heal.db")).unwrap();
    let due: i64 = db
        .query_row(
            "SELECT due FROM agent_check WHERE probe = 'disk' AND agent = 'db-3'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let body = |due: i64| json!({ "due": due, "ok": false, "detail": "forged" });
    let (got, answer) = server.post(path, &body(due));
    assert_eq!((got, &answer["duplicate"]), (200, &json!(true)), "{answer}");
    assert_eq!(answer["recorded"], false, "{answer}");
    for (b, code, says) in [
        (body(due - 1), 409, "a later run was handed out"),
        (json!({ "ok": true, "detail": "x" }), 422, "due"),
        (json!({ "due": 1, "detail": "x" }), 422, "ok"),
        (json!({ "due": 1, "ok": true }), 422, "detail"),
        (
            json!({ "due": 1, "ok": true, "warning": true, "detail": "x" }),
            422,
            "both true",
        ),
        (
            json!({ "due": 1, "ok": true, "detail": "x", "value": "high" }),
            422,
            "value",
        ),
        (body(due + 3_600_000), 404, "no run"),
    ] {
        let (got, answer) = server.post(path, &b);
        assert_eq!(got, code, "{b}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{b}: {answer}"
        );
    }
    let (got, answer) = server.post_raw(path, b"{not json", &[]);
    assert_eq!(got, 400, "{answer}");
    let (got, answer) = server.post("/api/v1/agents/ghost/checks/disk/result", &body(due));
    assert_eq!(got, 404, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("unknown agent"),
        "{answer}"
    );
    // Nothing forged was counted.
    let p = probe(&server, "disk");
    assert_eq!(p["agents"][0]["state"], "up", "{p}");
    assert!(!p.to_string().contains("forged"), "{p}");

    // Through the API: disk and tcp checks may run on agents; a command
    // may not (only runbooks.toml runs programs as root), nor may a sql
    // probe run on agents at all.
    let put = |name: &str, body: Value| {
        let url = format!("{}/api/v1/probes/{name}", server.url);
        let body = body.to_string();
        let (code, text) = http(
            "PUT",
            &url,
            Some(body.as_bytes()),
            &[("Content-Type", "application/json")],
        );
        (
            code,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let (got, answer) = put(
        "api-disk",
        json!({ "every": "1s", "on": "'db-3'", "disk": { "path": "/", "max_used": "100%" } }),
    );
    assert!(got == 200 || got == 201, "{answer}");
    wait_state(&server, "api-disk", "db-3", "up", Duration::from_secs(10));
    let (got, answer) = put(
        "api-cmd",
        json!({ "every": "1s", "on": { "tags": ["db"] }, "command": { "run": "true" } }),
    );
    assert_eq!(got, 422, "{answer}");
    let (got, answer) = put(
        "api-sql",
        json!({ "every": "1s", "on": { "tags": ["db"] }, "sql": { "url": "postgres://u@127.0.0.1/x", "query": "SELECT 1", "expect": "== 1" } }),
    );
    assert_eq!(got, 422, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("run on the server"),
        "{answer}"
    );
    let (got, answer) = put(
        "api-empty",
        json!({ "every": "1s", "on": { "tags": [] }, "tcp": { "addr": "127.0.0.1:1" } }),
    );
    assert_eq!(got, 422, "{answer}");
    // Deleting it forgets its runs on agents.
    let url = format!("{}/api/v1/probes/api-disk", server.url);
    let (got, answer) = http("DELETE", &url, None, &[]);
    assert_eq!(got, 200, "{answer}");
    let (got, _) = server.get("/api/v1/probes/api-disk");
    assert_eq!(got, 404);
}
