//! Several `heal serve` on one PostgreSQL database (Debian's `postgresql`,
//! a throwaway cluster per test): one leads, an op decided on one reaches an
//! agent polling another at once, an alert posted to two servers at once is
//! decided once, and when the leader is killed another leads within 15 s
//! without raising what was raised already.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::postgres::{start_fast, Postgres};
use crate::support::{
    first_pass_only, heal_bin, http, test_dir, wait_agent_polling, wait_until, Agent, Server,
};

/// A server in `dir` on the cluster's database.
fn replica(dir: &Path, pg: &Postgres, config: &str) -> Server {
    Server::start_on(
        dir,
        config,
        Command::new(heal_bin()),
        pg.url.as_ref(),
        "127.0.0.1:0",
        &[],
    )
}

fn leads(server: &Server) -> bool {
    server.logs().contains("this server leads now")
}

/// An Alertmanager notification of one firing alert.
fn alert(name: &str, fingerprint: &str, agent: &str) -> Vec<u8> {
    json!({
        "version": "4", "status": "firing", "receiver": "heal",
        "groupKey": format!("{{}}:{{fp=\"{fingerprint}\"}}"),
        "alerts": [{
            "status": "firing", "fingerprint": fingerprint,
            "labels": {"alertname": name, "agent": agent, "fp": fingerprint},
            "annotations": {}, "startsAt": "2026-12-04T10:00:00Z"
        }]
    })
    .to_string()
    .into_bytes()
}

fn post_alert(server: &Server, body: &[u8]) -> u16 {
    let (status, _) = http(
        "POST",
        &format!("{}/api/v1/alerts/alertmanager", server.url),
        Some(body),
        &[("Content-Type", "application/json")],
    );
    status
}

/// Lines of the marks file: one event id per step that ran.
fn marks(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn config(marks: &Path, rule_on: &str, extra: &str) -> String {
    format!(
        r#"
[server]
poll_wait = "20s"
agent_down_after = "30s"
{extra}
[[rule]]
name = "fix"
when = "labels.alertname == '{rule_on}'"
cooldown = "1m"
runbook = "fix"
target = "'r-agent'"

[runbook.fix]
timeout = "10s"
steps = [ {{ name = "mark", run = "echo \"$HEAL_EVENT_ID\" >> {}" }} ]
"#,
        marks.display()
    )
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn two_servers_on_one_database_one_leads_work_crosses_at_once_and_a_repeat_is_one_event() {
    let test = "replicas::two_servers_on_one_database_one_leads_work_crosses_at_once_and_a_repeat_is_one_event";
    if first_pass_only(test) {
        return;
    }
    let Some(pg) = start_fast(test) else {
        return;
    };
    let dir = test_dir("replicas-two");
    let ran = dir.join("ran.log");
    let config = config(&ran, "ReplicaTest", "");
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = replica(&dir_a, &pg, &config);
    let b = replica(&dir_b, &pg, &config);
    // One of them leads, not both.
    wait_until("a leader", Duration::from_secs(15), || {
        (leads(&a) || leads(&b)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!(leads(&a) && leads(&b)), "{}\n{}", a.logs(), b.logs());
    // The agent polls B only; the alert goes to A. poll_wait is 20 s: only
    // A's word to B brings the op to the agent at once.
    let _agent = Agent::start(&b.url, "r-agent", &["--allow", "fix"]);
    wait_agent_polling(&b, "r-agent");
    std::thread::sleep(Duration::from_millis(500));
    let posted = Instant::now();
    assert_eq!(
        post_alert(&a, &alert("ReplicaTest", "f-one", "r-agent")),
        200
    );
    wait_until("the step to run", Duration::from_secs(10), || {
        (!marks(&ran).is_empty()).then_some(())
    });
    let crossed = posted.elapsed();
    eprintln!("replicas: alert posted to A, step started on the agent polling B after {crossed:?}");
    assert!(crossed < Duration::from_secs(5), "took {crossed:?}");
    // One alert posted to both at once (Alertmanager with a receiver per
    // server): one event, one run.
    let body = alert("ReplicaTest", "f-both", "r-agent");
    let (sa, sb) = std::thread::scope(|s| {
        let ta = s.spawn(|| post_alert(&a, &body));
        let tb = s.spawn(|| post_alert(&b, &body));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!((sa, sb), (200, 200));
    wait_until("two steps in all", Duration::from_secs(10), || {
        (marks(&ran).len() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let events = pg.psql("SELECT count(*) FROM event_alert WHERE fingerprint = 'f-both'");
    assert_eq!(events.trim(), "1", "one event for the alert posted twice");
    assert_eq!(marks(&ran).len(), 2, "{:?}", marks(&ran));
    // Either server answers for the store: the same events.
    assert_eq!(a.events().len(), b.events().len());
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn when_the_leader_is_killed_another_leads_within_15_s_and_raises_nothing_twice() {
    let test =
        "replicas::when_the_leader_is_killed_another_leads_within_15_s_and_raises_nothing_twice";
    if first_pass_only(test) {
        return;
    }
    let Some(pg) = start_fast(test) else {
        return;
    };
    let dir = test_dir("replicas-kill");
    let ran = dir.join("ran.log");
    let extra = r#"
[[heartbeat]]
name = "nightly"
every = "2s"
grace = "1s"

[[probe]]
name = "alive"
every = "1s"
command = { run = "true" }
"#;
    let config = config(&ran, "HeartbeatMissing", extra);
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let mut a = replica(&dir_a, &pg, &config);
    wait_until("A to lead", Duration::from_secs(15), || {
        leads(&a).then_some(())
    });
    let b = replica(&dir_b, &pg, &config);
    let _agent = Agent::start(
        &format!("{},{}", a.url, b.url),
        "r-agent",
        &["--allow", "fix"],
    );
    // The heartbeat, never pinged, goes missing once: one event, one run.
    wait_until("the HeartbeatMissing run", Duration::from_secs(30), || {
        (!marks(&ran).is_empty()).then_some(())
    });
    let runs = |pg: &Postgres| -> i64 {
        pg.psql("SELECT count(*) FROM probe_result WHERE probe = 'alive'")
            .trim()
            .parse()
            .unwrap()
    };
    let before = runs(&pg);
    assert!(!leads(&b), "B leads beside A:\n{}", b.logs());
    // The leader dies; B leads within 15 s and the probe runs on.
    a.kill();
    let killed = Instant::now();
    wait_until("B to lead", Duration::from_secs(20), || {
        leads(&b).then_some(())
    });
    let took = killed.elapsed();
    eprintln!("replicas: the leader killed, the other led after {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    wait_until("the probe to run on B", Duration::from_secs(10), || {
        (runs(&pg) > before + 2).then_some(())
    });
    // What A raised, B does not raise again.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(marks(&ran).len(), 1, "{:?}\n{}", marks(&ran), b.logs());
    let raised = pg.psql("SELECT count(*) FROM event WHERE rule = 'fix'");
    assert_eq!(raised.trim(), "1");
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn an_agent_id_held_through_one_server_is_refused_on_another_until_its_holder_dies() {
    let test =
        "replicas::an_agent_id_held_through_one_server_is_refused_on_another_until_its_holder_dies";
    if first_pass_only(test) {
        return;
    }
    let Some(pg) = start_fast(test) else {
        return;
    };
    let dir = test_dir("replicas-identity");
    let ran = dir.join("ran.log");
    let config = config(&ran, "IdentityTest", "");
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = replica(&dir_a, &pg, &config);
    let b = replica(&dir_b, &pg, &config);
    let mut first = Agent::start(&a.url, "r-agent", &["--allow", "fix"]);
    wait_agent_polling(&a, "r-agent");
    // A second process with the same id polls the other server: the store
    // knows the first holds it, and A answers the first's waiting poll when
    // B asks, so the first shows it is alive and the second is refused.
    let second = Agent::start(&b.url, "r-agent", &["--allow", "fix"]);
    wait_until("the second to be refused", Duration::from_secs(15), || {
        second
            .logs()
            .contains("in use by a live agent")
            .then_some(())
    });
    assert!(
        b.logs().contains("a second process"),
        "B logs the refusal:\n{}",
        b.logs()
    );
    // Its work still goes to the first, through either server.
    assert_eq!(
        post_alert(&b, &alert("IdentityTest", "f-1", "r-agent")),
        200
    );
    wait_until("the first run", Duration::from_secs(10), || {
        (!marks(&ran).is_empty()).then_some(())
    });
    // The holder dies: the second takes the id within seconds and runs
    // what comes next.
    first.kill();
    let killed = Instant::now();
    wait_agent_polling(&b, "r-agent");
    let took = killed.elapsed();
    eprintln!("replicas: the holder killed, the other process held the id after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        post_alert(&a, &alert("IdentityTest", "f-2", "r-agent")),
        200
    );
    wait_until("the second run", Duration::from_secs(10), || {
        (marks(&ran).len() >= 2).then_some(())
    });
    assert_eq!(marks(&ran).len(), 2, "{:?}", marks(&ran));
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn every_server_shows_every_replica_which_leads_and_whose_config_differs() {
    let test = "replicas::every_server_shows_every_replica_which_leads_and_whose_config_differs";
    if first_pass_only(test) {
        return;
    }
    let Some(pg) = start_fast(test) else {
        return;
    };
    let dir = test_dir("replicas-status");
    let ran = dir.join("ran.log");
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = replica(&dir_a, &pg, &config(&ran, "StatusTest", ""));
    wait_until("A to lead", Duration::from_secs(15), || {
        leads(&a).then_some(())
    });
    // B runs another config: flagged.
    let b = replica(&dir_b, &pg, &config(&ran, "OtherTest", ""));
    let status = wait_until("both servers listed", Duration::from_secs(15), || {
        let s = b.get_ok("/api/v1/status");
        (s["replicas"].as_array()?.len() == 2).then_some(s)
    });
    assert_eq!(status["server"]["store"], "postgresql");
    assert_eq!(status["server"]["leads"], false);
    assert_eq!(status["server"]["address"], b.url.as_str());
    let replicas = status["replicas"].as_array().unwrap();
    let of = |url: &str| {
        replicas
            .iter()
            .find(|r| r["address"] == url)
            .unwrap_or_else(|| panic!("{url} not listed: {status}"))
            .clone()
    };
    let (ra, rb) = (of(&a.url), of(&b.url));
    assert_eq!(
        (ra["leader"].clone(), rb["leader"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(ra["config_differs"], false);
    assert_eq!(rb["config_differs"], true, "{status}");
    assert!(ra["up"] == true && rb["up"] == true);
    assert_eq!(ra["version"], env!("CARGO_PKG_VERSION"));
    assert_ne!(ra["config_version"], rb["config_version"]);
    // A says the same; /-/ready carries it too.
    let ready = a.get_ok("/-/ready");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["server"]["leads"], true);
    assert_eq!(ready["replicas"].as_array().unwrap().len(), 2);
    // /metrics.
    let (code, text) = crate::support::http("GET", &format!("{}/metrics", a.url), None, &[]);
    assert_eq!(code, 200);
    assert!(text.contains("heal_leader 1"), "{text}");
    let info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("heal_replica_info{"))
        .collect();
    assert_eq!(info.len(), 2, "{info:?}");
    assert!(info
        .iter()
        .any(|l| l.contains(&format!("address=\"{}\"", a.url)) && l.contains("leader=\"true\"")));
    let differs = format!(
        "heal_replica_config_differs{{id=\"{}\"}} 1",
        rb["id"].as_str().unwrap()
    );
    assert!(text.contains(&differs), "{differs} in\n{text}");
    // heal status, asking B.
    let (code, out, err) = crate::support::heal_cli(&["status", "--server", &b.url], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("does not lead") && out.contains("postgresql"),
        "{out}"
    );
    assert!(out.contains(&a.url) && out.contains("leader"), "{out}");
    assert!(out.contains("CONFIG DIFFERS FROM THE LEADER'S"), "{out}");
    // The dashboard's agents page lists both.
    let (code, page) = crate::support::http("GET", &format!("{}/agents", a.url), None, &[]);
    assert_eq!(code, 200);
    assert!(
        page.contains("heal servers") && page.contains(&b.url) && page.contains("config differs"),
        "{page}"
    );
}
