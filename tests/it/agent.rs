//! Agents end to end: the real server and real agent processes (or the agent
//! protocol driven by hand). Ops reach only their target, steps are stopped
//! as a whole process group, output is capped, alert data stays inert, lost
//! ops are never re-run, and the result protocol is idempotent and owned.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    one_rule_config, rule_config, test_dir, wait_agent_polling, wait_until, Agent, Server,
};

/// Fires one alert and returns the id of the event the rule `fix` opened for it.
pub(crate) fn fire(server: &Server, labels: Value) -> i64 {
    let (status, body) = server.post("/api/v1/alerts", &json!({ "name": "X", "labels": labels }));
    assert_eq!(status, 200, "{body}\nserver log:\n{}", server.logs());
    assert_eq!(body["accepted"], 1, "{body}");
    let decision = &body["alerts"][0]["decisions"][0];
    assert_eq!(decision["rule"], "fix", "{body}");
    assert_eq!(decision["outcome"], "run", "{body}");
    decision["event_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no event id in {body}"))
}

/// The event's ops.
pub(crate) fn ops(event: &Value) -> Vec<Value> {
    event["ops"].as_array().cloned().unwrap_or_default()
}

/// The only op of an event.
pub(crate) fn only_op(event: &Value) -> Value {
    let ops = ops(event);
    assert_eq!(ops.len(), 1, "expected exactly one op: {event:#}");
    ops[0].clone()
}

/// Timeline entries of one kind.
fn timeline_kind(event: &Value, kind: &str) -> Vec<Value> {
    event["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["kind"] == kind)
        .cloned()
        .collect()
}

/// Whether a process is gone (or only a zombie, which no longer runs).
pub(crate) fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            matches!(rest.split_whitespace().next(), Some("Z" | "X"))
        }
    }
}

/// Peak resident memory (VmHWM) of a process in KiB, 0 when unreadable.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn path_str(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_string()
}

#[test]
fn ops_reach_only_their_target_agent() {
    let dir = test_dir("agent-targets");
    let config = one_rule_config(
        r#"{ name = "who", run = "printf 'instance=%s n=%s' \"$HEAL_LABEL_INSTANCE\" \"$HEAL_LABEL_N\"" }"#,
        "",
    );
    let server = Server::start(&dir, &config);
    let a = Agent::start(&server.url, "agent-a", &["--allow", "fix"]);
    let b = Agent::start(&server.url, "agent-b", &["--allow", "fix"]);
    wait_agent_polling(&server, "agent-a");
    wait_agent_polling(&server, "agent-b");

    // Interleaved alerts for both agents.
    let mut fired = Vec::new();
    for n in 0..3 {
        for target in ["agent-a", "agent-b"] {
            let id = fire(&server, json!({ "instance": target, "n": n.to_string() }));
            fired.push((target, n, id));
        }
    }

    let mut op_ids: Vec<(&str, i64)> = Vec::new();
    for &(target, n, id) in &fired {
        let event = server.wait_event(
            id,
            &["succeeded", "failed", "timed_out", "lost"],
            Duration::from_secs(20),
        );
        assert_eq!(event["state"], "succeeded", "{event:#}");
        let op = only_op(&event);
        assert_eq!(op["agent"], target, "{event:#}");
        assert_eq!(op["state"], "succeeded", "{event:#}");
        assert_eq!(
            op["steps"][0]["output"],
            format!("instance={target} n={n}"),
            "{event:#}"
        );
        op_ids.push((target, op["id"].as_i64().expect("op id")));
    }

    // Each agent ran exactly its own ops, and never heard of the others'.
    let (la, lb) = (a.logs(), b.logs());
    for &(target, op) in &op_ids {
        let mark = format!("op {op}: running runbook fix");
        let (own, other) = if target == "agent-a" {
            (&la, &lb)
        } else {
            (&lb, &la)
        };
        assert!(own.contains(&mark), "{target} did not run op {op}:\n{own}");
        assert!(
            !other.contains(&format!("op {op}:")),
            "op {op} of {target} showed up at the other agent:\n{other}"
        );
    }
}

#[test]
fn step_timeout_kills_whole_process_group() {
    let dir = test_dir("agent-timeout-group");
    let pidfile = dir.join("pids");
    // The step's shell and its background grandchild both ignore SIGTERM.
    let config = one_rule_config(
        r#"{ name = "stubborn", timeout = "1s", run = '''trap '' TERM; sh -c 'trap "" TERM; echo $$ >> "$HEAL_LABEL_PIDFILE"; while :; do sleep 0.05; done' & echo $$ >> "$HEAL_LABEL_PIDFILE"; echo started; while :; do sleep 0.05; done''' }"#,
        "",
    );
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "agent-a", &["--allow", "fix"]);
    wait_agent_polling(&server, "agent-a");

    let start = Instant::now();
    let id = fire(
        &server,
        json!({ "instance": "agent-a", "pidfile": path_str(&pidfile) }),
    );
    let event = server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost"],
        Duration::from_secs(20),
    );
    let elapsed = start.elapsed();
    assert_eq!(event["state"], "timed_out", "{event:#}");
    let op = only_op(&event);
    assert_eq!(op["state"], "timed_out", "{event:#}");
    let step = &op["steps"][0];
    assert_eq!(step["timed_out"], true, "{event:#}");
    assert_eq!(step["exit_code"], Value::Null, "{event:#}");
    let output = step["output"].as_str().unwrap_or_default();
    assert!(output.starts_with("started\n"), "{output:?}");
    assert!(
        output.contains("[heal: step timed out after 1s; sent SIGTERM, then SIGKILL]"),
        "{output:?}"
    );
    // 1 s timeout + 1 s grace, plus dispatch and reporting.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");

    let pids: Vec<i32> = std::fs::read_to_string(&pidfile)
        .expect("the step wrote its pids")
        .lines()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(pid), "process {pid} of the timed-out step survived");
    }
}

#[test]
fn huge_output_is_capped_without_memory_blowup() {
    const MAX: usize = 100_000;
    let dir = test_dir("agent-huge-output");
    let config = one_rule_config(
        r#"{ name = "flood", run = "head -c 50000000 /dev/zero | tr '\\0' x" }"#,
        &format!("max_output = {MAX}"),
    );
    let server = Server::start(&dir, &config);
    let agent = Agent::start(&server.url, "agent-a", &["--allow", "fix"]);
    wait_agent_polling(&server, "agent-a");

    let id = fire(&server, json!({ "instance": "agent-a" }));
    let event = server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost"],
        Duration::from_secs(30),
    );
    let agent_peak = agent.peak_rss_kib();
    let server_peak = peak_rss_kib(server.pid());
    eprintln!("peak RSS for 50 MB of output: agent {agent_peak} KiB, server {server_peak} KiB");

    assert_eq!(event["state"], "succeeded", "{event:#}");
    let step = &only_op(&event)["steps"][0];
    let output = step["output"].as_str().unwrap_or_default();
    assert!(output.len() <= MAX, "stored {} bytes", output.len());
    assert!(output.len() > MAX / 2, "stored only {} bytes", output.len());
    assert!(output.bytes().all(|b| b == b'x'), "unexpected bytes kept");
    assert_eq!(step["truncated"], true, "{step}");
    assert_eq!(step["output_bytes"], 50_000_000, "{step}");

    assert!(agent_peak > 0, "cannot read the agent's VmHWM");
    assert!(server_peak > 0, "cannot read the server's VmHWM");
    assert!(
        agent_peak < 64 * 1024,
        "agent peak RSS {agent_peak} KiB for 50 MB of output"
    );
    assert!(
        server_peak < 64 * 1024,
        "server peak RSS {server_peak} KiB for 50 MB of output"
    );
}

#[test]
fn hostile_labels_are_inert() {
    let dir = test_dir("agent-hostile-labels");
    let marker = dir.join("pwned");
    let m = path_str(&marker);
    let hostile = [
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("; touch {m}"),
        format!("x\ntouch {m}"),
        format!("' \"; touch {m}; echo '\" $HOME \\"),
    ];
    let big = "b".repeat(1_000_000);
    let mut labels = json!({ "instance": "agent-a", "big": big });
    for (i, v) in hostile.iter().enumerate() {
        labels[format!("evil{i}")] = json!(v);
    }
    // One step per hostile label, plus the sizes of the big one as seen by a step.
    let mut steps: Vec<String> = (0..hostile.len())
        .map(|i| format!(r#"{{ name = "evil{i}", run = 'printf "%s" "$HEAL_LABEL_EVIL{i}"' }}"#))
        .collect();
    steps.push(
        r#"{ name = "big", run = 'printf "%s %s" "$(printf "%s" "$HEAL_LABEL_BIG" | wc -c)" "$(wc -c < "$HEAL_ALERT_JSON")"' }"#
            .to_string(),
    );
    let config = one_rule_config(&steps.join(",\n"), "");
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "agent-a", &["--allow", "fix"]);
    wait_agent_polling(&server, "agent-a");

    let id = fire(&server, labels);
    let event = server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost"],
        Duration::from_secs(20),
    );
    assert_eq!(event["state"], "succeeded", "{event:#}");
    let op = only_op(&event);
    let steps = op["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), hostile.len() + 1, "{op:#}");
    for (i, v) in hostile.iter().enumerate() {
        assert_eq!(
            steps[i]["output"].as_str(),
            Some(v.as_str()),
            "label evil{i}"
        );
    }
    // The environment value is cut to 32 KiB; the alert file holds all of it.
    let sizes: Vec<u64> = steps[hostile.len()]["output"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .map(|n| n.parse().expect("a byte count"))
        .collect();
    assert_eq!(sizes.len(), 2, "{op:#}");
    assert_eq!(sizes[0], 32 * 1024, "HEAL_LABEL_BIG length");
    assert!(
        sizes[1] > 1_000_000,
        "HEAL_ALERT_JSON holds {} bytes",
        sizes[1]
    );
    assert!(!marker.exists(), "a label value was executed");
}

#[test]
fn agent_killed_mid_step_op_is_lost_and_never_rerun() {
    let dir = test_dir("agent-killed-mid-step");
    let runs = dir.join("runs");
    let config = one_rule_config(
        r#"{ name = "slow", run = 'echo run >> "$HEAL_LABEL_RUNS"; sleep 30' }"#,
        "",
    );
    let server = Server::start(&dir, &config);
    let mut first = Agent::start(&server.url, "agent-a", &["--allow", "fix"]);
    wait_agent_polling(&server, "agent-a");

    let id = fire(
        &server,
        json!({ "instance": "agent-a", "runs": path_str(&runs) }),
    );
    let op_id = wait_until("the op to run", Duration::from_secs(20), || {
        let event = server.event(id);
        let op = ops(&event).into_iter().next()?;
        (op["state"] == "running" && runs.exists()).then(|| op["id"].as_i64().expect("op id"))
    });
    first.kill();

    let restarted = Instant::now();
    let second = Agent::start(&server.url, "agent-a", &["--allow", "fix"]);
    let event = server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost"],
        Duration::from_secs(10),
    );
    // Far sooner than the op's deadline (20 s + 1 s + 2 s): the new instance gave it away.
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "{:?}",
        restarted.elapsed()
    );
    assert_eq!(event["state"], "lost", "{event:#}");
    let op = only_op(&event);
    assert_eq!(op["id"], op_id);
    assert_eq!(op["state"], "lost", "{event:#}");
    assert!(
        op["error"]
            .as_str()
            .is_some_and(|e| e.contains("restarted")),
        "{op:#}"
    );
    assert_eq!(timeline_kind(&event, "lost").len(), 1, "{event:#}");

    // Give a wrongful re-dispatch time to happen, then check it did not.
    wait_agent_polling(&server, "agent-a");
    std::thread::sleep(Duration::from_millis(1500));
    let event = server.event(id);
    assert_eq!(event["state"], "lost", "{event:#}");
    assert_eq!(ops(&event).len(), 1, "{event:#}");
    assert_eq!(timeline_kind(&event, "dispatched").len(), 1, "{event:#}");
    assert_eq!(
        std::fs::read_to_string(&runs).expect("the step ran"),
        "run\n",
        "the step ran more than once"
    );
    assert!(
        !second.logs().contains(&format!("op {op_id}:")),
        "the new agent touched the lost op:\n{}",
        second.logs()
    );
}

#[test]
fn agent_reconnects_after_server_restart() {
    let dir = test_dir("agent-server-restart");
    let config = one_rule_config(r#"{ name = "a", run = "echo ok" }"#, "");
    let mut old = Server::start(&dir, &config);
    let agent = Agent::start(&old.url, "agent-a", &["--allow", "fix"]);
    wait_agent_polling(&old, "agent-a");
    old.kill();

    let server = Server::start_with(&dir, &config, &old.addr, &[]);
    assert_eq!(server.url, old.url);
    wait_until(
        "the agent to poll the restarted server",
        Duration::from_secs(40),
        || {
            let agents = server.get_ok("/api/v1/agents");
            agents["agents"]
                .as_array()?
                .iter()
                .any(|a| a["id"] == "agent-a" && a["polling"] == true)
                .then_some(())
        },
    );
    let id = fire(&server, json!({ "instance": "agent-a" }));
    let event = server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost"],
        Duration::from_secs(20),
    );
    assert_eq!(event["state"], "succeeded", "{event:#}");
    let op = only_op(&event);
    assert_eq!(op["agent"], "agent-a");
    assert_eq!(op["steps"][0]["output"], "ok\n");
    assert!(
        agent.logs().contains("connected to"),
        "the agent did not log its reconnection:\n{}",
        agent.logs()
    );
}

/// Registers an agent by polling once without waiting.
fn manual_poll(server: &Server, agent: &str, instance: &str) -> Vec<Value> {
    let (status, body) = server.post(
        &format!("/api/v1/agents/{agent}/poll?capacity=4&wait=0"),
        &json!({ "instance": instance }),
    );
    assert_eq!(status, 200, "poll of {agent}: {body}");
    body["ops"]
        .as_array()
        .cloned()
        .expect("ops in the poll answer")
}

fn step_result(name: &str, output: &str) -> Value {
    json!({
        "name": name, "exit_code": 0, "signal": null, "timed_out": false,
        "duration_ms": 5, "output": output, "output_bytes": output.len(), "truncated": false,
    })
}

#[test]
fn result_posted_twice_is_counted_once() {
    let dir = test_dir("agent-result-twice");
    let config = one_rule_config(r#"{ name = "a", run = "true" }"#, "");
    let server = Server::start(&dir, &config);
    assert!(manual_poll(&server, "manual", "i1").is_empty());

    let id = fire(&server, json!({ "instance": "manual" }));
    let handed = manual_poll(&server, "manual", "i1");
    assert_eq!(handed.len(), 1, "{handed:?}");
    let op = handed[0]["id"].as_i64().expect("op id");
    assert_eq!(handed[0]["event_id"], id);
    assert!(
        manual_poll(&server, "manual", "i1").is_empty(),
        "op handed out twice"
    );

    let base = format!("/api/v1/agents/manual/ops/{op}");
    let (status, body) = server.post(&format!("{base}/start"), &json!({ "budget_ms": 60_000 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.event(id)["state"], "running");

    let result =
        json!({ "state": "succeeded", "steps": [step_result("a", "done\n")], "error": null });
    let (status, body) = server.post(&format!("{base}/result"), &result);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recorded"], true, "{body}");
    let (status, body) = server.post(&format!("{base}/result"), &result);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "recorded": false, "duplicate": true }));
    // A late, different result for the same op changes nothing either.
    let other = json!({ "state": "failed", "steps": [step_result("a", "other\n")], "error": "x" });
    let (status, body) = server.post(&format!("{base}/result"), &other);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], true, "{body}");

    let event = server.event(id);
    assert_eq!(event["state"], "succeeded", "{event:#}");
    assert_eq!(timeline_kind(&event, "result").len(), 1, "{event:#}");
    let op = only_op(&event);
    assert_eq!(op["state"], "succeeded", "{event:#}");
    assert_eq!(op["error"], Value::Null, "{event:#}");
    let steps = op["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{event:#}");
    assert_eq!(steps[0]["output"], "done\n");
}

#[test]
fn agent_refuses_runbooks_outside_allow() {
    let dir = test_dir("agent-allow");
    let marker = dir.join("ran");
    let config = one_rule_config(r#"{ name = "a", run = 'touch "$HEAL_LABEL_MARKER"' }"#, "");
    let server = Server::start(&dir, &config);
    let agent = Agent::start(&server.url, "agent-a", &["--allow", "other-*"]);
    wait_agent_polling(&server, "agent-a");

    let id = fire(
        &server,
        json!({ "instance": "agent-a", "marker": path_str(&marker) }),
    );
    let event = server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost"],
        Duration::from_secs(20),
    );
    assert_eq!(event["state"], "failed", "{event:#}");
    let op = only_op(&event);
    assert_eq!(op["state"], "failed", "{event:#}");
    let error = op["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("\"fix\""),
        "error does not name the runbook: {error}"
    );
    assert!(
        error.contains("other-*"),
        "error does not name the allow list: {error}"
    );
    assert!(op["steps"].as_array().is_some_and(Vec::is_empty), "{op:#}");
    assert!(!marker.exists(), "the refused step ran");
    assert!(agent.logs().contains("refuses runbook"), "{}", agent.logs());
}

#[test]
fn result_for_foreign_or_unknown_op_is_refused() {
    let dir = test_dir("agent-foreign-result");
    let config = one_rule_config(r#"{ name = "a", run = "true" }"#, "");
    let server = Server::start(&dir, &config);
    manual_poll(&server, "a", "ia");
    manual_poll(&server, "b", "ib");

    let id = fire(&server, json!({ "instance": "a" }));
    let handed = manual_poll(&server, "a", "ia");
    assert_eq!(handed.len(), 1, "{handed:?}");
    let op = handed[0]["id"].as_i64().expect("op id");
    let (status, body) = server.post(
        &format!("/api/v1/agents/a/ops/{op}/start"),
        &json!({ "budget_ms": 60_000 }),
    );
    assert_eq!(status, 200, "{body}");
    let before = server.event(id);
    assert_eq!(before["state"], "running", "{before:#}");

    let result =
        json!({ "state": "succeeded", "steps": [step_result("a", "forged\n")], "error": null });
    let cases = [
        ("b", op, 403, "belongs to agent"),
        ("nobody", op, 404, "unknown agent"),
        ("a", op + 1000, 404, "no op"),
        ("b", op + 1000, 404, "no op"),
    ];
    for (agent, op_id, want, words) in cases {
        for what in ["result", "start", "log"] {
            let body = match what {
                "result" => result.clone(),
                "start" => json!({ "budget_ms": 60_000 }),
                _ => json!({ "seq": 0, "step": 0, "skipped": 0, "data": "forged\n" }),
            };
            let (status, answer) =
                server.post(&format!("/api/v1/agents/{agent}/ops/{op_id}/{what}"), &body);
            assert_eq!(status, want, "{what} by {agent} for op {op_id}: {answer}");
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains(words), "{what} by {agent}: {error}");
        }
    }

    let after = server.event(id);
    assert_eq!(after, before, "a refused request changed the event");
    assert_eq!(only_op(&after)["live_output"], "");

    // The owner's result still counts: nothing was used up by the refusals.
    let good =
        json!({ "state": "succeeded", "steps": [step_result("a", "real\n")], "error": null });
    let (status, body) = server.post(&format!("/api/v1/agents/a/ops/{op}/result"), &good);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recorded"], true, "{body}");
    let event = server.event(id);
    assert_eq!(event["state"], "succeeded", "{event:#}");
    assert_eq!(only_op(&event)["steps"][0]["output"], "real\n");
}

#[test]
fn output_streams_while_the_step_runs() {
    let dir = test_dir("agent-stream");
    let server = Server::start(
        &dir,
        &one_rule_config(
            r#"{ name = "slow", run = "echo first-part; sleep 4; echo second-part" }"#,
            "",
        ),
    );
    let _agent = Agent::start(&server.url, "streamer", &[]);
    wait_agent_polling(&server, "streamer");
    let id = fire(&server, json!({"instance": "streamer"}));
    let live = wait_until(
        "the first line to stream while the step runs",
        Duration::from_secs(10),
        || {
            let event = server.event(id);
            let op = only_op(&event);
            let live = op["live_output"].as_str().unwrap_or_default().to_string();
            (op["state"] == "running" && live.contains("first-part")).then_some(live)
        },
    );
    assert!(!live.contains("second-part"), "{live}");
    let event = server.wait_event(id, &["succeeded"], Duration::from_secs(15));
    let op = only_op(&event);
    assert_eq!(
        op["live_output"], "",
        "streamed chunks give way to the stored result"
    );
    assert_eq!(op["steps"][0]["output"], "first-part\nsecond-part\n");
}

#[test]
fn sigterm_ends_an_idle_agents_poll_at_once_and_no_op_is_taken_after_it() {
    let dir = test_dir("agent-sigterm-idle");
    let mark = dir.join("mark");
    let server = Server::start(
        &dir,
        &rule_config(
            "poll_wait = \"20s\"",
            "",
            r#"{ name = "touch", run = 'touch "$HEAL_LABEL_MARK"' }"#,
        ),
    );
    let agent = Agent::start(&server.url, "web-1", &["--allow", "fix"]);
    wait_agent_polling(&server, "web-1");
    let pid = agent.pid() as i32;
    let asked = Instant::now();
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // An op queued right after the stop was asked for.
    std::thread::sleep(Duration::from_millis(100));
    let id = fire(
        &server,
        json!({ "instance": "web-1", "mark": path_str(&mark) }),
    );
    wait_until("the idle agent to exit", Duration::from_secs(30), || {
        gone(pid).then_some(())
    });
    let took = asked.elapsed();
    eprintln!("the idle agent exited {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    // The server forgot the closed poll: the op waits for the next poll.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!mark.exists(), "the stopping agent ran the op");
    let event = server.event(id);
    assert_eq!(only_op(&event)["state"], "queued", "{event:#}");
    // The agent's next process takes it.
    let _next = Agent::start(&server.url, "web-1", &["--allow", "fix"]);
    let event = server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost"],
        Duration::from_secs(20),
    );
    assert_eq!(event["state"], "succeeded", "{event:#}");
    assert!(mark.exists());
}

/// A step knows where it runs: `HEAL_AGENT_ID` and `HEAL_AGENT_TAGS`.
#[test]
fn steps_know_their_agent_and_its_tags() {
    let dir = test_dir("agent-env-id");
    let config = one_rule_config(
        r#"{ name = "who", run = "printf 'id=%s tags=%s' \"$HEAL_AGENT_ID\" \"$HEAL_AGENT_TAGS\"" }"#,
        "",
    );
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(
        &server.url,
        "agent-a",
        &["--allow", "fix", "--tags", "db,eu"],
    );
    wait_agent_polling(&server, "agent-a");
    let id = fire(&server, json!({ "instance": "agent-a" }));
    let event = server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost"],
        Duration::from_secs(20),
    );
    assert_eq!(event["state"], "succeeded", "{event:#}");
    assert_eq!(
        only_op(&event)["steps"][0]["output"],
        "id=agent-a tags=db,eu",
        "{event:#}"
    );
}

/// A server with `config` and agent `agent-a`, allowed runbook `fix`, polling it.
fn server_and_agent(dir: &Path, config: &str) -> (Server, Agent) {
    let server = Server::start(dir, config);
    let agent = Agent::start(&server.url, "agent-a", &["--allow", "fix"]);
    wait_agent_polling(&server, "agent-a");
    (server, agent)
}

/// Fires an alert with `labels` and waits for its event to end: its id and detail.
fn ended_event(server: &Server, labels: Value) -> (i64, Value) {
    let id = fire(server, labels);
    let ended = ["succeeded", "failed", "timed_out", "lost"];
    (id, server.wait_event(id, &ended, Duration::from_secs(20)))
}

/// A runbook's and a step's `env` and `cwd`, read on the agent.
#[test]
fn steps_get_their_env_and_cwd_and_a_missing_one_is_the_steps_failure() {
    let dir = test_dir("agent-env-cwd");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config = rule_config(
        "",
        &format!(
            "env = {{ SITE = \"eu\", MODE = \"runbook\" }}\ncwd = \"{}\"",
            work.display()
        ),
        &format!(
            r#"{{ name = "show", run = "printf 'site=%s mode=%s path=%s dir=%s' \"$SITE\" \"$MODE\" \"$WHERE\" \"$(pwd)\"", env = {{ MODE = "step", WHERE = "${{PATH}}" }} }},
               {{ name = "tmp", run = "pwd", cwd = "/tmp" }},
               {{ name = "gone", run = "echo never", cwd = "{}/missing" }}"#,
            dir.display()
        ),
    );
    let (server, _agent) = server_and_agent(&dir, &config);
    let (_, event) = ended_event(&server, json!({ "instance": "agent-a" }));
    assert_eq!(event["state"], "failed", "{event:#}");
    let steps = &only_op(&event)["steps"];
    let path = std::env::var("PATH").unwrap();
    assert_eq!(
        steps[0]["output"],
        format!("site=eu mode=step path={path} dir={}", work.display()),
        "{event:#}"
    );
    assert_eq!(steps[1]["output"], "/tmp\n");
    let gone = steps[2]["output"].as_str().unwrap();
    assert!(
        gone.contains("did not start") && gone.contains("missing does not exist on this agent"),
        "{event:#}"
    );
    assert!(!gone.contains("never"));
}

/// `retries` runs a failed step again after `retry_delay`, each try shown;
/// a step that never passes fails after its last try.
#[test]
fn a_failing_step_is_tried_again_and_each_try_is_recorded() {
    let dir = test_dir("agent-retries");
    let count = dir.join("count");
    let config = rule_config(
        "",
        "",
        &format!(
            r#"{{ name = "flaky", run = "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo try $n; [ $n -ge 3 ]", retries = 3, retry_delay = "200ms" }},
               {{ name = "broken", run = "echo no; exit 7", retries = 1, retry_delay = "100ms" }}"#,
            c = count.display()
        ),
    );
    let (server, _agent) = server_and_agent(&dir, &config);
    let (_, event) = ended_event(&server, json!({ "instance": "agent-a" }));
    assert_eq!(event["state"], "failed", "{event:#}");
    let steps: Vec<(String, Value, String)> = only_op(&event)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["exit_code"].clone(),
                s["output"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (
                "flaky (try 1 of 4)".to_string(),
                json!(1),
                "try 1\n".to_string()
            ),
            (
                "flaky (try 2 of 4)".to_string(),
                json!(1),
                "try 2\n".to_string()
            ),
            (
                "flaky (try 3 of 4)".to_string(),
                json!(0),
                "try 3\n".to_string()
            ),
            (
                "broken (try 1 of 2)".to_string(),
                json!(7),
                "no\n".to_string()
            ),
            (
                "broken (try 2 of 2)".to_string(),
                json!(7),
                "no\n".to_string()
            ),
        ],
        "{event:#}"
    );
    let timeline = event["timeline"].to_string();
    assert!(timeline.contains("flaky (try 2 of 4)"), "{timeline}");
}

/// `on_failure` runs after a step fails, knows which, is recorded, and the
/// op stays failed; after a success it does not run.
#[test]
fn on_failure_steps_run_after_a_failure_only_and_leave_it_failed() {
    let dir = test_dir("agent-on-failure");
    let config = format!(
        "{}\non_failure = [ {{ name = \"diagnose\", run = \"echo failed at $HEAL_FAILED_STEP\" }}, {{ name = \"rollback\", run = \"exit 3\" }}, {{ name = \"notes\", run = \"echo after\" }} ]\n",
        rule_config(
            "",
            "",
            r#"{ name = "check", run = "test \"$HEAL_LABEL_MODE\" = ok" }, { name = "after", run = "echo not reached" }"#,
        )
    );
    let (server, _agent) = server_and_agent(&dir, &config);
    let (_, event) = ended_event(&server, json!({ "instance": "agent-a", "mode": "broken" }));
    assert_eq!(event["state"], "failed", "{event:#}");
    let steps: Vec<(String, String)> = only_op(&event)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["output"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("check".to_string(), String::new()),
            (
                "on_failure: diagnose".to_string(),
                "failed at check\n".to_string()
            ),
            ("on_failure: rollback".to_string(), String::new()),
        ],
        "{event:#}"
    );
    let (_, event) = ended_event(&server, json!({ "instance": "agent-a", "mode": "ok" }));
    assert_eq!(event["state"], "succeeded", "{event:#}");
    let op = only_op(&event);
    let names: Vec<&str> = op["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["check", "after"]);
}

/// A step's `when` reads the alert, the params and the steps so far on the
/// agent; false skips the step, recorded as skipped.
#[test]
fn when_skips_a_step_on_the_alert_the_params_or_an_earlier_step() {
    let dir = test_dir("agent-when");
    let config = r#"
[server]
kill_grace = "1s"

[[rule]]
name = "fix"
when = "labels.alertname != 'Ignored'"
runbook = "fix"
target = "labels.instance"
params = { mode = "labels.mode" }

[runbook.fix]
steps = [
  { name = "check", run = "exit 1", continue_on_error = true },
  { name = "repair", run = "echo repaired", when = "steps.check.status == 'failed' && steps.check.exit_code == `1`" },
  { name = "deep", run = "echo deep", when = "params.mode == 'deep'" },
  { name = "here", run = "echo here", when = "alert.labels.instance == 'agent-a'" },
]
"#;
    let (server, _agent) = server_and_agent(&dir, config);
    let (_, event) = ended_event(&server, json!({ "instance": "agent-a", "mode": "quick" }));
    assert_eq!(event["state"], "succeeded", "{event:#}");
    let op = only_op(&event);
    let steps: Vec<(&str, bool, &str)> = op["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["skipped"] == true,
                s["output"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("check", false, ""),
            ("repair", false, "repaired\n"),
            (
                "deep",
                true,
                "[heal: skipped: when `params.mode == 'deep'` is false]\n"
            ),
            ("here", false, "here\n"),
        ],
        "{event:#}"
    );
    let timeline = event["timeline"].to_string();
    assert!(timeline.contains("deep: skipped"), "{timeline}");
}

/// `env_files` secrets reach the step, never the server: its output carries
/// `***` in their place; a file others may read fails the step, named.
#[test]
fn env_file_secrets_reach_the_step_but_never_its_output_or_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let dir = test_dir("agent-env-files");
    let secret = "pa55-w0rd-7f3a9c";
    let private = dir.join("db.env");
    std::fs::write(&private, format!("DB_PASSWORD={secret}\n")).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let open = dir.join("open.env");
    std::fs::write(&open, "X=1\n").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = rule_config(
        "",
        "",
        &format!(
            r#"{{ name = "use", run = "printf 'connect with %s (%s chars)\n' \"$DB_PASSWORD\" ${{#DB_PASSWORD}}; sleep 1; printf 'again %s\n' \"$DB_PASSWORD\"", env_files = ["{}"] }},
               {{ name = "open", run = "echo never", env_files = ["{}"] }}"#,
            private.display(),
            open.display()
        ),
    );
    let (server, agent) = server_and_agent(&dir, &config);
    let (id, event) = ended_event(&server, json!({ "instance": "agent-a" }));
    assert_eq!(event["state"], "failed", "{event:#}");
    let op = only_op(&event);
    let used = op["steps"][0]["output"].as_str().unwrap();
    assert_eq!(used, "connect with *** (16 chars)\nagain ***\n");
    let refused = op["steps"][1]["output"].as_str().unwrap();
    assert!(
        refused.contains("open.env is readable by everyone (chmod o-rwx"),
        "{refused}"
    );
    // Nowhere the server keeps or shows it.
    let everything = [
        server.get_ok(&format!("/api/v1/events/{id}")).to_string(),
        server.get_ok("/api/v1/config").to_string(),
        server.logs(),
        agent.logs(),
    ];
    for text in everything {
        assert!(!text.contains(secret), "{text}");
    }
}
