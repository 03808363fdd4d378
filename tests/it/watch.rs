//! What heal watches by itself, with the real server and agents: heartbeats
//! that go late and down and heal themselves, `heal ping -- CMD`,
//! `max_runtime`, agents that die, http probes against a local server that
//! starts failing, a prometheus probe against a real Prometheus, a graphite
//! probe against a real graphite-web, and scheduled runbooks.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    heal_bin, heal_cli, prometheus_tool, test_dir, wait_agent_polling, wait_until, Agent,
    GraphiteWeb, Prometheus, Server,
};

/// The firing or resolved internal alerts of a name, newest first.
pub(crate) fn alerts_named(server: &Server, name: &str) -> Vec<Value> {
    server.get_ok(&format!("/api/v1/alerts?name={name}&limit=100"))["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn alert_status(server: &Server, name: &str, label: &str, value: &str) -> Option<String> {
    alerts_named(server, name)
        .into_iter()
        .find(|a| a["labels"][label] == value)
        .map(|a| a["status"].as_str().unwrap_or_default().to_string())
}

pub(crate) fn wait_alert(
    server: &Server,
    name: &str,
    label: &str,
    value: &str,
    status: &str,
    within: Duration,
) {
    wait_until(
        &format!("{name} {label}={value} to be {status}"),
        within,
        || (alert_status(server, name, label, value).as_deref() == Some(status)).then_some(()),
    );
}

fn heartbeat(server: &Server, name: &str) -> Value {
    server.get_ok(&format!("/api/v1/heartbeats/{name}"))["heartbeat"].clone()
}

#[test]
fn silent_heartbeat_goes_late_then_down_heals_itself_and_resolves() {
    let dir = test_dir("hb-heal");
    let url_file = dir.join("url");
    let cron_job = dir.join("cron-job.sh");
    let restarts = dir.join("restarts");
    // The "cron job": pings every 500 ms, for at most 60 pings.
    std::fs::write(
        &cron_job,
        format!(
            "#!/bin/sh\nfor i in $(seq 1 60); do {heal} ping backup --server \"$(cat {url})\" >/dev/null 2>&1; sleep 0.5; done\n",
            heal = heal_bin(),
            url = url_file.display()
        ),
    )
    .unwrap();
    let config = format!(
        r#"
[server]
lease = "5s"

[[heartbeat]]
name = "backup"
every = "2s"
grace = "2s"
team = "infra"
runbook_url = "https://wiki.example/backup"

[[rule]]
name = "restart-cron"
when = "labels.alertname == 'HeartbeatMissing' && labels.heartbeat == 'backup'"
runbook = "restart-cron"
target = "'node-1'"

[runbook.restart-cron]
steps = [ {{ name = "start", run = "echo restarted >> {restarts}; setsid sh {job} >/dev/null 2>&1 < /dev/null &" }} ]
"#,
        restarts = restarts.display(),
        job = cron_job.display()
    );
    let server = Server::start(&dir, &config);
    std::fs::write(&url_file, &server.url).unwrap();
    let _agent = Agent::start(&server.url, "node-1", &[]);
    wait_agent_polling(&server, "node-1");

    // Never pinged: new, then it counts from registration like any other.
    assert_eq!(heartbeat(&server, "backup")["state"], "new");
    let (code, _, err) = heal_cli(&["ping", "backup", "--server", &server.url], &[], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(heartbeat(&server, "backup")["state"], "up");

    // The job stops: late within the grace, then down.
    wait_until("late", Duration::from_secs(5), || {
        (heartbeat(&server, "backup")["state"] == "late").then_some(())
    });
    wait_until("down", Duration::from_secs(5), || {
        (heartbeat(&server, "backup")["state"] == "down").then_some(())
    });
    wait_alert(
        &server,
        "HeartbeatMissing",
        "heartbeat",
        "backup",
        "firing",
        Duration::from_secs(5),
    );
    let a = &alerts_named(&server, "HeartbeatMissing")[0];
    assert_eq!(a["labels"]["team"], "infra", "{a}");
    assert_eq!(
        a["annotations"]["runbook_url"],
        "https://wiki.example/backup"
    );
    assert_eq!(a["annotations"]["reason"], "missed");

    // The rule restarts the job on the agent; its pings resolve the alert.
    let events = wait_until("the runbook to run", Duration::from_secs(10), || {
        let e = server.get_ok("/api/v1/events?rule=restart-cron")["events"].clone();
        (e.as_array()?.len() == 1).then_some(e)
    });
    let id = events[0]["id"].as_i64().unwrap();
    server.wait_event(id, &["succeeded"], Duration::from_secs(10));
    wait_until(
        "the heartbeat to be up again",
        Duration::from_secs(10),
        || (heartbeat(&server, "backup")["state"] == "up").then_some(()),
    );
    wait_alert(
        &server,
        "HeartbeatMissing",
        "heartbeat",
        "backup",
        "resolved",
        Duration::from_secs(5),
    );
    let event = server.event(id);
    assert!(
        event["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["kind"] == "alert-resolved"),
        "the alert's resolution is on the event: {event}"
    );
    assert_eq!(
        std::fs::read_to_string(&restarts).unwrap().lines().count(),
        1,
        "restarted once"
    );
    // Stop the restarted job.
    let _ = Command::new("pkill")
        .arg("-f")
        .arg(cron_job.to_str().unwrap())
        .status();
}

#[test]
fn ping_wraps_a_command_keys_and_unknown_names() {
    let dir = test_dir("hb-ping");
    let config = r#"
[[token]]
name = "ops"
scopes = ["admin"]
secret = "ops-token-0123456789"

[[token]]
name = "cron"
scopes = ["ping"]
secret = "ping-token-0123456789"

[[heartbeat]]
name = "backup"
every = "1h"
ping_key = "backup-key-0123456789"
"#;
    let mut server = Server::start(&dir, config);
    server.token = Some("ops-token-0123456789".into());
    let tok = ["--server", &server.url, "--token", "ping-token-0123456789"];

    // A failing command: its exit code, its output, and heal exits with its code.
    let mut args = vec!["ping", "backup"];
    args.extend_from_slice(&tok);
    args.extend_from_slice(&[
        "--",
        "sh",
        "-c",
        "echo copying files; echo disk full >&2; false",
    ]);
    let (code, out, _) = heal_cli(&args, &[], None);
    assert_eq!(code, 1);
    assert!(
        out.contains("copying files"),
        "output passes through: {out}"
    );
    let hb = heartbeat(&server, "backup");
    assert_eq!(hb["last_end_ok"], false, "{hb}");
    assert_eq!(hb["last_end_code"], 1);
    assert_eq!(hb["state"], "down");
    let pings = hb["recent_pings"].as_array().unwrap();
    assert_eq!(pings[0]["kind"], "fail");
    assert_eq!(pings[0]["exit_code"], 1);
    assert!(
        pings[0]["body"].as_str().unwrap().contains("disk full"),
        "{pings:?}"
    );
    assert_eq!(pings[1]["kind"], "start");
    wait_alert(
        &server,
        "HeartbeatMissing",
        "heartbeat",
        "backup",
        "firing",
        Duration::from_secs(5),
    );
    let a = &alerts_named(&server, "HeartbeatMissing")[0];
    assert_eq!(a["annotations"]["reason"], "failed");
    assert!(
        a["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("exit code 1"),
        "{a}"
    );

    // `heal ping NAME -- false` exactly, then a success resolves.
    let mut args = vec!["ping", "backup"];
    args.extend_from_slice(&tok);
    args.extend_from_slice(&["--", "false"]);
    assert_eq!(heal_cli(&args, &[], None).0, 1);
    assert_eq!(
        heartbeat(&server, "backup")["recent_pings"][0]["exit_code"],
        1
    );
    let mut args = vec!["ping", "backup"];
    args.extend_from_slice(&tok);
    args.extend_from_slice(&["--", "true"]);
    assert_eq!(heal_cli(&args, &[], None).0, 0);
    wait_alert(
        &server,
        "HeartbeatMissing",
        "heartbeat",
        "backup",
        "resolved",
        Duration::from_secs(5),
    );

    // The ping key works in the URL without a token; a wrong one does not.
    let http =
        |path: &str| crate::support::http("GET", &format!("{}{path}", server.url), None, &[]);
    assert_eq!(http("/ping/backup?key=backup-key-0123456789").0, 200);
    assert_eq!(http("/ping/backup/7?key=backup-key-0123456789").0, 200);
    assert_eq!(heartbeat(&server, "backup")["last_end_code"], 7);
    assert_eq!(http("/ping/backup?key=wrong-key-0123456789").0, 401);
    assert_eq!(http("/ping/backup").0, 401, "no token, no key");
    // Unknown names and paths are clear 404s; the CLI fails with exit 1.
    let (code, body) = server.get("/ping/nope");
    assert_eq!(code, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no heartbeat \"nope\""),
        "{body}"
    );
    assert_eq!(server.get("/ping/backup/999").0, 404);
    let mut args = vec!["ping", "nope"];
    args.extend_from_slice(&tok);
    let (code, _, err) = heal_cli(&args, &[], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no heartbeat"), "{err}");
    // A huge body is refused; nothing is recorded from it.
    let before = heartbeat(&server, "backup")["pings"].as_i64().unwrap();
    let big = vec![b'x'; 2 << 20];
    let (code, _) = server.post_raw("/ping/backup", &big, &[]);
    assert_eq!(code, 413);
    assert_eq!(
        heartbeat(&server, "backup")["pings"].as_i64().unwrap(),
        before
    );
    // The CLI lists and shows.
    let (code, out, err) = heal_cli(
        &[
            "heartbeats",
            "--server",
            &server.url,
            "--token",
            "ops-token-0123456789",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backup") && out.contains("every 1h"), "{out}");
    let (code, out, _) = heal_cli(
        &[
            "heartbeats",
            "show",
            "backup",
            "--server",
            &server.url,
            "--token",
            "ops-token-0123456789",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("recent pings") && out.contains("exit 7"),
        "{out}"
    );
}

#[test]
fn a_run_that_never_finishes_trips_max_runtime() {
    let dir = test_dir("hb-runtime");
    let config = r#"
[[heartbeat]]
name = "backup"
every = "1h"
max_runtime = "2s"
"#;
    let server = Server::start(&dir, config);
    assert_eq!(server.post_raw("/ping/backup/start", b"", &[]).0, 200);
    let hb = heartbeat(&server, "backup");
    assert!(hb["running_since"].is_i64(), "{hb}");
    assert_eq!(hb["overrun"], false);
    wait_alert(
        &server,
        "HeartbeatRuntimeExceeded",
        "heartbeat",
        "backup",
        "firing",
        Duration::from_secs(6),
    );
    assert!(
        alert_status(&server, "HeartbeatMissing", "heartbeat", "backup").is_none(),
        "a hung run is not a missed start"
    );
    assert!(heartbeat(&server, "backup")["reason"]
        .as_str()
        .unwrap()
        .contains("not finished"));
    assert_eq!(server.post_raw("/ping/backup", b"done", &[]).0, 200);
    wait_alert(
        &server,
        "HeartbeatRuntimeExceeded",
        "heartbeat",
        "backup",
        "resolved",
        Duration::from_secs(5),
    );
}

#[test]
fn heartbeats_register_mute_and_delete_through_the_api() {
    let dir = test_dir("hb-api");
    let config = "[[heartbeat]]\nname = \"from-file\"\nevery = \"1h\"\n";
    let server = Server::start(&dir, config);
    let put = |name: &str, body: &Value| {
        crate::support::http(
            "PUT",
            &format!("{}/api/v1/heartbeats/{name}", server.url),
            Some(body.to_string().as_bytes()),
            &[("Content-Type", "application/json")],
        )
    };
    let (code, body) = put(
        "nightly",
        &json!({"cron": "0 3 * * *", "tz": "Europe/Berlin", "grace": "1h", "tags": ["db"]}),
    );
    assert_eq!(code, 201, "{body}");
    let hb = heartbeat(&server, "nightly");
    assert_eq!(hb["origin"], "api");
    assert_eq!(hb["schedule"], "cron `0 3 * * *` (Europe/Berlin)");
    assert_eq!(put("nightly", &json!({"every": "2h"})).0, 200);
    let (code, body) = put("nightly", &json!({"every": "2h", "tz": "Mars/Olympus"}));
    assert_eq!(code, 422, "{body}");
    let (code, body) = put("bad%20name!", &json!({"every": "1h"}));
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        put("x", &json!({"every": "1h", "evil": 1})).0,
        422,
        "unknown fields are refused"
    );
    let (code, body) = put("from-file", &json!({"every": "2h"}));
    assert_eq!(code, 409, "{body}");
    // Mute: no alert while muted; unmute restarts the clock.
    assert_eq!(
        server
            .post(
                "/api/v1/heartbeats/nightly/mute",
                &json!({"reason": "maintenance"})
            )
            .0,
        200
    );
    let hb = heartbeat(&server, "nightly");
    assert_eq!(hb["state"], "paused");
    assert!(hb["paused_reason"]
        .as_str()
        .unwrap()
        .contains("maintenance"));
    assert_eq!(
        server
            .post("/api/v1/heartbeats/nightly/unmute", &json!({}))
            .0,
        200
    );
    assert_eq!(heartbeat(&server, "nightly")["state"], "new");
    assert_eq!(
        server.post("/api/v1/heartbeats/none/mute", &json!({})).0,
        404
    );
    let del = |name: &str| {
        crate::support::http(
            "DELETE",
            &format!("{}/api/v1/heartbeats/{name}", server.url),
            None,
            &[],
        )
    };
    assert_eq!(del("from-file").0, 409);
    assert_eq!(del("nightly").0, 200);
    assert_eq!(del("nightly").0, 404);
    assert_eq!(server.get("/api/v1/heartbeats/nightly").0, 404);
}

#[test]
fn a_killed_agent_raises_agent_down_until_it_polls_again() {
    let dir = test_dir("agent-down");
    let config = "[server]\npoll_wait = \"1s\"\nagent_down_after = \"3s\"\n";
    let server = Server::start(&dir, config);
    let mut agent = Agent::start(&server.url, "web-9", &["--tags", "web"]);
    wait_agent_polling(&server, "web-9");
    agent.kill();
    let killed = Instant::now();
    wait_alert(
        &server,
        "AgentDown",
        "agent",
        "web-9",
        "firing",
        Duration::from_secs(8),
    );
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "not before agent_down_after"
    );
    let a = &alerts_named(&server, "AgentDown")[0];
    assert_eq!(a["labels"]["tags"], "web");
    let _agent = Agent::start(&server.url, "web-9", &["--tags", "web"]);
    wait_alert(
        &server,
        "AgentDown",
        "agent",
        "web-9",
        "resolved",
        Duration::from_secs(8),
    );
}

/// A local HTTP server answering every request with the current status.
struct Site {
    addr: String,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl Site {
    fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let status = Arc::new(AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (status.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !sp.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let code = st.load(Ordering::Relaxed);
                let body = if code == 200 { "all good" } else { "broken" };
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Site { addr, status, stop }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn http_probe_fails_after_fail_after_and_recovers() {
    let site = Site::start();
    let dir = test_dir("probe-http");
    let config = format!(
        r#"
[[probe]]
name = "web"
every = "1s"
fail_after = 3
recover_after = 2
tags = ["frontend"]
http = {{ url = "http://{}/health", status = [200], body_contains = "good" }}
"#,
        site.addr
    );
    let server = Server::start(&dir, &config);
    let probe = |s: &Server| s.get_ok("/api/v1/probes/web?limit=50")["probe"].clone();
    wait_until("the probe to be up", Duration::from_secs(5), || {
        (probe(&server)["state"] == "up").then_some(())
    });
    site.status.store(500, Ordering::Relaxed);
    wait_alert(
        &server,
        "ProbeFailing",
        "probe",
        "web",
        "firing",
        Duration::from_secs(8),
    );
    let p = probe(&server);
    let results = p["recent_results"].as_array().unwrap();
    let failures = results.iter().take_while(|r| r["ok"] == false).count();
    assert!(failures >= 3, "fired only after 3 failures in a row: {p}");
    assert!(
        results[0]["detail"].as_str().unwrap().contains("500"),
        "{p}"
    );
    let a = &alerts_named(&server, "ProbeFailing")[0];
    assert_eq!(a["labels"]["probe_type"], "http");
    assert_eq!(a["labels"]["tags"], "frontend");
    site.status.store(200, Ordering::Relaxed);
    wait_alert(
        &server,
        "ProbeFailing",
        "probe",
        "web",
        "resolved",
        Duration::from_secs(8),
    );
    assert_eq!(probe(&server)["state"], "up");
    let (code, out, err) = heal_cli(&["probes", "--server", &server.url], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("web") && out.contains("http") && out.contains("up"),
        "{out}"
    );
}

#[test]
#[ignore = "needs prometheus (apt-get install prometheus); cargo test -- --include-ignored runs it, as .ci/run does"]
fn prometheus_probe_evaluates_a_real_query() {
    let Some(bin) = prometheus_tool("prometheus", "prometheus_probe_evaluates_a_real_query") else {
        return;
    };
    let dir = test_dir("probe-prom");
    let prom = Prometheus::start(&bin, &dir, |port| {
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    });
    // Ready once it has scraped itself.
    prom.wait_for("up", Duration::from_secs(30));
    let url = &prom.url;
    let config = format!(
        r#"
[[probe]]
name = "self-up"
every = "1s"
fail_after = 1
prometheus = {{ url = "{url}", query = "up{{job='self'}}", expect = "== 1" }}

[[probe]]
name = "impossible"
every = "1s"
fail_after = 1
prometheus = {{ url = "{url}", query = "up{{job='self'}}", expect = "> 1" }}
"#
    );
    let server = Server::start(&dir, &config);
    let state = |name: &str| server.get_ok(&format!("/api/v1/probes/{name}"))["probe"].clone();
    wait_until("self-up to be up", Duration::from_secs(10), || {
        (state("self-up")["state"] == "up").then_some(())
    });
    wait_alert(
        &server,
        "ProbeFailing",
        "probe",
        "impossible",
        "firing",
        Duration::from_secs(10),
    );
    let p = state("impossible");
    let detail = p["last_detail"].as_str().unwrap();
    assert!(
        detail.contains("job=\"self\"") && detail.contains("> 1"),
        "the failing series is named: {p}"
    );
    assert!(alert_status(&server, "ProbeFailing", "probe", "self-up").is_none());
}

#[test]
#[ignore = "needs graphite-web (apt-get install graphite-web); cargo test -- --include-ignored runs it, as .ci/run does"]
fn graphite_probe_reads_a_real_graphite_web() {
    let test = "graphite_probe_reads_a_real_graphite_web";
    let dir = test_dir("probe-graphite");
    let series = ["servers.web1.cpu=10,null,30", "servers.web2.cpu=90,95,null"];
    let Some(graphite) = GraphiteWeb::start(&dir, test, &series) else {
        return;
    };
    std::env::set_var("HEAL_TEST_GRAPHITE_URL", &graphite.url);
    let config = r#"
[[probe]]
name = "web1-cpu"
every = "1s"
fail_after = 1
graphite = { url = "${HEAL_TEST_GRAPHITE_URL}", target = "servers.web1.cpu", aggregate = "avg", expect = "< 85" }

[[probe]]
name = "all-cpu"
every = "1s"
fail_after = 1
graphite = { url = "${HEAL_TEST_GRAPHITE_URL}", target = "servers.*.cpu", from = "-10min", aggregate = "max", expect = "< 85" }

[[probe]]
name = "nothing"
every = "1s"
fail_after = 1
graphite = { url = "${HEAL_TEST_GRAPHITE_URL}", target = "servers.nothing", expect = "< 85" }

[[probe]]
name = "nothing-ok"
every = "1s"
fail_after = 1
graphite = { url = "${HEAL_TEST_GRAPHITE_URL}", target = "servers.nothing", expect = "< 85", empty_ok = true }

[[probe]]
name = "bad-function"
every = "1s"
fail_after = 1
graphite = { url = "${HEAL_TEST_GRAPHITE_URL}", target = "nosuchfn(servers.web1.cpu)", expect = "< 85" }
"#;
    let server = Server::start(&dir, config);
    let state = |name: &str| server.get_ok(&format!("/api/v1/probes/{name}"))["probe"].clone();
    let settled = |name: &str, want: &str| {
        wait_until(
            &format!("{name} to be {want}"),
            Duration::from_secs(20),
            || {
                let p = state(name);
                (p["state"] == want).then_some(p)
            },
        )
    };
    // Nulls are skipped: the mean of 10 and 30.
    let p = settled("web1-cpu", "up");
    assert_eq!(
        p["last_detail"], "1 sample < 85, worst avg(servers.web1.cpu) = 20",
        "{p}"
    );
    let p = settled("all-cpu", "down");
    assert_eq!(
        p["last_detail"], "max(servers.web2.cpu) = 95, expected < 85",
        "{p}"
    );
    wait_alert(
        &server,
        "ProbeFailing",
        "probe",
        "all-cpu",
        "firing",
        Duration::from_secs(10),
    );
    let p = settled("nothing", "down");
    assert_eq!(
        p["last_detail"], "target \"servers.nothing\" returned no data from -5min",
        "{p}"
    );
    settled("nothing-ok", "up");
    let p = settled("bad-function", "down");
    let detail = p["last_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("/render: 400 Bad Request: Invalid parameters (Received request for unknown function: nosuchfn)"),
        "{p}"
    );
    assert!(alert_status(&server, "ProbeFailing", "probe", "web1-cpu").is_none());
}

#[test]
fn scheduled_runbook_runs_on_its_target_through_the_event_path() {
    let dir = test_dir("schedule");
    let marker = dir.join("runs");
    let config = format!(
        r#"
[[schedule]]
name = "cleanup"
cron = "*/2 * * * * *"
runbook = "cleanup"
target = "node-1"
params = {{ scope = "tmp" }}

[runbook.cleanup]
steps = [ {{ name = "clean", run = "echo $HEAL_PARAM_SCOPE >> {}" }} ]
"#,
        marker.display()
    );
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "node-1", &[]);
    wait_agent_polling(&server, "node-1");
    let events = wait_until("two scheduled runs", Duration::from_secs(15), || {
        let e =
            server.get_ok("/api/v1/events?rule=schedule.cleanup&state=succeeded")["events"].clone();
        (e.as_array()?.len() >= 2).then_some(e)
    });
    let e = server.event(events[0]["id"].as_i64().unwrap());
    assert_eq!(e["runbook"], "cleanup", "{e}");
    let runs = std::fs::read_to_string(&marker).unwrap();
    assert!(runs.lines().all(|l| l == "tmp"), "{runs}");
    let s = server.get_ok("/api/v1/schedules");
    assert_eq!(s["schedules"][0]["name"], "cleanup");
    assert!(s["schedules"][0]["next_run"].is_i64());
    // The alert that stands for a run does not stay firing.
    let fired = alerts_named(&server, "ScheduledRun");
    assert!(fired.iter().all(|a| a["status"] == "resolved"), "{fired:?}");
}

#[test]
fn internal_alerts_and_schedules_survive_a_kill_without_repeats_or_bursts() {
    let dir = test_dir("watch-restart");
    let marker = dir.join("runs");
    let config = format!(
        r#"
[[heartbeat]]
name = "backup"
every = "1s"
grace = "1s"

[[schedule]]
name = "tick"
cron = "*/2 * * * * *"
runbook = "tick"
target = "node-1"

[runbook.tick]
steps = [ {{ name = "mark", run = "date +%s%N >> {}" }} ]
"#,
        marker.display()
    );
    let mut server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "node-1", &["--tags", "x"]);
    wait_agent_polling(&server, "node-1");
    assert_eq!(server.post_raw("/ping/backup", b"", &[]).0, 200);
    wait_alert(
        &server,
        "HeartbeatMissing",
        "heartbeat",
        "backup",
        "firing",
        Duration::from_secs(6),
    );
    wait_until("a scheduled run", Duration::from_secs(6), || {
        std::fs::metadata(&marker).ok()
    });
    let receipts = |s: &Server| {
        alerts_named(s, "HeartbeatMissing")[0]["receipts"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(receipts(&server), 1);

    // Down for about 7 s: three schedule times pass while heal is not running.
    let addr = server.addr.clone();
    server.kill();
    let runs_before = std::fs::read_to_string(&marker).unwrap().lines().count();
    std::thread::sleep(Duration::from_secs(7));
    let restarted = Instant::now();
    let server = Server::start_with(&dir, &config, &addr, &[]);
    wait_agent_polling(&server, "node-1");
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(restarted.elapsed()));
    let runs_after = std::fs::read_to_string(&marker).unwrap().lines().count();
    assert!(
        runs_after - runs_before <= 2,
        "missed times are not replayed: {runs_before} runs before, {runs_after} about 3.5 s after the restart"
    );
    // Still down: the alert stays raised once, not raised again by the restart.
    assert_eq!(
        alert_status(&server, "HeartbeatMissing", "heartbeat", "backup").as_deref(),
        Some("firing")
    );
    assert_eq!(receipts(&server), 1, "{}", server.logs());
    assert_eq!(server.post_raw("/ping/backup", b"", &[]).0, 200);
    wait_alert(
        &server,
        "HeartbeatMissing",
        "heartbeat",
        "backup",
        "resolved",
        Duration::from_secs(3),
    );
}
