//! Agent faults, each ending in its documented state (README, "Agents"):
//! two processes with one agent id, an agent frozen with SIGSTOP past its
//! lease or past its op's deadline, and the server gone for 60 s while a
//! step runs.

use std::time::Duration;

use serde_json::{json, Value};

use crate::agent::{fire, only_op, path_str};
use crate::support::{rule_config, test_dir, wait_agent_polling, wait_until, Agent, Server};

fn signal(agent: &Agent, sig: i32) {
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    let rc = unsafe { libc::kill(agent.pid() as i32, sig) };
    assert_eq!(rc, 0, "signal {sig} to agent {}", agent.pid());
}

/// Waits (bounded) for the event to end; heal declares late ops lost only
/// 15 s after it starts, so allow for that.
fn ended(server: &Server, id: i64) -> Value {
    server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost", "cancelled"],
        Duration::from_secs(60),
    )
}

#[test]
fn two_processes_with_one_agent_id_the_first_keeps_it_the_second_takes_over_when_it_dies() {
    let dir = test_dir("faults-same-id");
    let server = Server::start(
        &dir,
        &rule_config("", "", r#"{ name = "who", run = "echo ran" }"#),
    );
    let mut first = Agent::start(&server.url, "web-1", &["--allow", "fix"]);
    wait_agent_polling(&server, "web-1");
    let second = Agent::start(&server.url, "web-1", &["--allow", "fix"]);
    wait_until(
        "the second process to be refused the id",
        Duration::from_secs(20),
        || {
            second
                .logs()
                .contains("is in use by a live agent")
                .then_some(())
        },
    );
    assert!(
        server.logs().contains("a second process"),
        "{}",
        server.logs()
    );
    for n in 0..3 {
        let id = fire(&server, json!({ "instance": "web-1", "n": n.to_string() }));
        let event = ended(&server, id);
        assert_eq!(event["state"], "succeeded", "{event:#}");
        let op = only_op(&event)["id"].as_i64().unwrap();
        assert!(
            first.logs().contains(&format!("op {op}:")),
            "{}",
            first.logs()
        );
        assert!(
            !second.logs().contains(&format!("op {op}:")),
            "{}",
            second.logs()
        );
    }
    // The holder dies (its waiting poll is forgotten with its connection):
    // the second process takes the id over and runs the next op.
    first.kill();
    let id = fire(&server, json!({ "instance": "web-1", "n": "after" }));
    let event = server.wait_event(
        id,
        &["succeeded", "failed", "lost"],
        Duration::from_secs(90),
    );
    assert_eq!(event["state"], "succeeded", "{event:#}\n{}", second.logs());
    let op = only_op(&event)["id"].as_i64().unwrap();
    assert!(
        second.logs().contains(&format!("op {op}:")),
        "{}",
        second.logs()
    );
}

#[test]
fn an_agent_frozen_past_its_lease_loses_the_op_and_never_runs_it() {
    let dir = test_dir("faults-sigstop-lease");
    let mark = dir.join("mark");
    let server = Server::start(
        &dir,
        &rule_config(
            "lease = \"2s\"\npoll_wait = \"20s\"",
            "",
            // A fast step: the agent must hear "lost" before it starts, not while it runs.
            r#"{ name = "fast", run = 'touch "$HEAL_LABEL_MARK"' }"#,
        ),
    );
    let agent = Agent::start(&server.url, "web-1", &["--allow", "fix"]);
    wait_agent_polling(&server, "web-1");
    // Frozen while its poll waits: the op is handed out, and nobody confirms it.
    signal(&agent, libc::SIGSTOP);
    let id = fire(
        &server,
        json!({ "instance": "web-1", "mark": path_str(&mark) }),
    );
    let event = ended(&server, id);
    signal(&agent, libc::SIGCONT);
    assert_eq!(event["state"], "lost", "{event:#}");
    let op = only_op(&event);
    assert!(
        op["error"].as_str().is_some_and(|e| e.contains("lease")),
        "{op:#}"
    );
    // Thawed, the agent reads the op, asks to start it, is told it is lost,
    // and never starts the step.
    let op_id = op["id"].as_i64().unwrap();
    let refused = format!("op {op_id}: not run: the server refused its start (409");
    wait_until(
        "the thawed agent to handle the op",
        Duration::from_secs(20),
        || (agent.logs().contains(&refused) || mark.exists()).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(!mark.exists(), "the lost op's step ran");
    assert!(agent.logs().contains(&refused), "{}", agent.logs());
    let event = server.event(id);
    assert_eq!(event["state"], "lost", "{event:#}");
    // The agent works on.
    let next = dir.join("next");
    let id = fire(
        &server,
        json!({ "instance": "web-1", "mark": path_str(&next) }),
    );
    assert_eq!(ended(&server, id)["state"], "succeeded");
    assert!(next.exists());
}

#[test]
fn an_agent_frozen_past_its_ops_deadline_loses_it_and_its_late_result_is_kept() {
    let dir = test_dir("faults-sigstop-deadline");
    let mark = dir.join("mark");
    let server = Server::start(
        &dir,
        &rule_config(
            "lease = \"5s\"",
            "timeout = \"2s\"",
            r#"{ name = "slow", run = 'touch "$HEAL_LABEL_MARK"; sleep 1; echo finished' }"#,
        ),
    );
    let agent = Agent::start(&server.url, "web-1", &["--allow", "fix"]);
    wait_agent_polling(&server, "web-1");
    let id = fire(
        &server,
        json!({ "instance": "web-1", "mark": path_str(&mark) }),
    );
    wait_until("the step to start", Duration::from_secs(20), || {
        let event = server.event(id);
        (only_op(&event)["state"] == "running" && mark.exists()).then_some(())
    });
    // Frozen while the step runs: the step ends, its result waits in the frozen agent.
    signal(&agent, libc::SIGSTOP);
    let event = ended(&server, id);
    signal(&agent, libc::SIGCONT);
    assert_eq!(event["state"], "lost", "{event:#}");
    let op = only_op(&event);
    assert!(
        op["error"].as_str().is_some_and(|e| e.contains("deadline")),
        "{op:#}"
    );
    // Thawed, the agent delivers the result: it is kept, and the op stays lost.
    let event = wait_until("the late result", Duration::from_secs(30), || {
        let event = server.event(id);
        event["timeline"]
            .as_array()?
            .iter()
            .any(|t| t["kind"] == "late-result")
            .then_some(event)
    });
    assert_eq!(event["state"], "lost", "{event:#}");
    let op = only_op(&event);
    assert_eq!(op["state"], "lost", "{op:#}");
    assert!(
        op["steps"][0]["output"]
            .as_str()
            .is_some_and(|o| o.contains("finished")),
        "{op:#}"
    );
    let id = fire(
        &server,
        json!({ "instance": "web-1", "mark": path_str(&dir.join("next")) }),
    );
    assert_eq!(ended(&server, id)["state"], "succeeded");
}

#[test]
fn a_step_finishes_while_the_server_is_down_for_60_s_and_its_result_arrives_after() {
    let dir = test_dir("faults-server-down");
    let config = rule_config(
        "lease = \"5s\"",
        "timeout = \"10s\"",
        r#"{ name = "slow", run = 'sleep 3; echo "done $HEAL_EVENT_ID"' }"#,
    );
    let mut server = Server::start(&dir, &config);
    let listen = server.addr.clone();
    let agent = Agent::start(&server.url, "web-1", &["--allow", "fix"]);
    wait_agent_polling(&server, "web-1");
    let id = fire(&server, json!({ "instance": "web-1" }));
    wait_until("the step to start", Duration::from_secs(20), || {
        (only_op(&server.event(id))["state"] == "running").then_some(())
    });
    server.kill();
    // The step ends 3 s in; its deadline (10 s + 1 s) passes while nobody listens.
    std::thread::sleep(Duration::from_secs(60));
    let server = Server::start_with(&dir, &config, &listen, &[]);
    let event = ended(&server, id);
    assert_eq!(event["state"], "succeeded", "{event:#}\n{}", agent.logs());
    let op = only_op(&event);
    assert!(
        op["steps"][0]["output"]
            .as_str()
            .is_some_and(|o| o.contains(&format!("done {id}"))),
        "{op:#}"
    );
}
