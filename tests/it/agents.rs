//! Forgetting agents: a retired host's agent is removed by hand
//! (`heal agents forget`, `DELETE /api/v1/agents/{id}`) or once silent for
//! `[server] forget_agents_after`; its `AgentDown` resolves, the removal is
//! audited, and an agent that comes back registers again. An agent that
//! polls, or has an op that has not ended, is not forgotten.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    heal_cli, http, rule_config, test_dir, wait_agent_polling, wait_until, Agent, Server,
};

fn config(extra: &str) -> String {
    rule_config(
        &format!("poll_wait = \"1s\"\nagent_down_after = \"2s\"\n{extra}"),
        "timeout = \"60s\"",
        r#"{ name = "s", run = "sleep 30" }"#,
    )
}

fn agent_ids(server: &Server) -> Vec<String> {
    server.get_ok("/api/v1/agents")["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str().map(String::from))
        .collect()
}

/// The status of web-1's `AgentDown`, if it was ever raised.
fn agent_down(server: &Server) -> Option<String> {
    server.get_ok("/api/v1/alerts?name=AgentDown")["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["agent"] == "web-1")
        .and_then(|a| a["status"].as_str().map(String::from))
}

fn forget(server: &Server, id: &str) -> (u16, Value) {
    let (status, text) = http(
        "DELETE",
        &format!("{}/api/v1/agents/{id}", server.url),
        None,
        &[],
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn audited(server: &Server, action: &str) -> Vec<Value> {
    server.get_ok(&format!("/api/v1/audit?action={action}"))["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Agent web-1 polls, then dies: its `AgentDown` fires.
fn gone(server: &Server) {
    let mut agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(server, "web-1");
    agent.kill();
    wait_until("AgentDown to fire", Duration::from_secs(20), || {
        (agent_down(server).as_deref() == Some("firing")).then_some(())
    });
}

#[test]
fn a_gone_agent_is_forgotten_its_agent_down_resolved_and_it_may_come_back() {
    let dir = test_dir("agents-forget");
    let server = Server::start(&dir, &config(""));
    gone(&server);
    let (code, out, err) = heal_cli(
        &["agents", "forget", "web-1", "--server", &server.url],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("agent web-1 forgotten"), "{out}");
    assert!(agent_ids(&server).is_empty());
    assert_eq!(agent_down(&server).as_deref(), Some("resolved"));
    let entries = audited(&server, "agent.forgotten");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["target"], "/api/v1/agents/web-1");
    // Twice: there is nothing left to forget.
    let (status, body) = forget(&server, "web-1");
    assert_eq!(status, 404, "{body}");
    let (code, _, err) = heal_cli(
        &["agents", "forget", "web-1", "--server", &server.url],
        &[],
        None,
    );
    assert_eq!(code, 1, "{err}");
    // It comes back: it registers again, as a new agent does.
    let _again = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    assert_eq!(agent_ids(&server), ["web-1"]);
}

#[test]
fn an_agent_that_polls_or_has_an_op_that_has_not_ended_is_not_forgotten() {
    let dir = test_dir("agents-busy");
    let server = Server::start(&dir, &config(""));
    let mut agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    let (status, body) = forget(&server, "web-1");
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("agent web-1 is polling"),
        "{body}"
    );
    let (status, _) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "Disk", "labels": { "instance": "web-1" } }),
    );
    assert_eq!(status, 200);
    let id = wait_until("the event to start", Duration::from_secs(20), || {
        server
            .events()
            .first()
            .filter(|e| e["state"] == "running")
            .and_then(|e| e["id"].as_i64())
    });
    agent.kill();
    wait_until("the agent to stop polling", Duration::from_secs(20), || {
        let (status, body) = forget(&server, "web-1");
        (status == 409
            && body["error"]
                .as_str()?
                .contains("has ops that have not ended"))
        .then_some(body)
    });
    let (_, body) = forget(&server, "web-1");
    let e = body["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(&format!("event {id})")) && e.contains("op ") && e.contains("cancel"),
        "{e}"
    );
    assert_eq!(agent_ids(&server), ["web-1"]);
    assert!(audited(&server, "agent.forgotten").is_empty());
    let (status, body) = forget(&server, "nobody");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn an_agent_silent_past_forget_agents_after_is_forgotten() {
    let dir = test_dir("agents-expire");
    let server = Server::start(&dir, &config("forget_agents_after = \"4s\""));
    gone(&server);
    wait_until("web-1 to be forgotten", Duration::from_secs(20), || {
        agent_ids(&server).is_empty().then_some(())
    });
    wait_until("AgentDown to resolve", Duration::from_secs(10), || {
        (agent_down(&server).as_deref() == Some("resolved")).then_some(())
    });
    let entries = audited(&server, "agent.forgotten");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["actor"], "heal");
    assert_eq!(entries[0]["target"], "web-1");
    assert!(
        server
            .logs()
            .contains("agent web-1 forgotten: silent for longer than forget_agents_after (4s)"),
        "{}",
        server.logs()
    );
}
