//! Notifications end to end: the real server and agents, and local
//! receivers that check each request against the shape the service's public
//! API documents (Slack incoming webhooks, PagerDuty Events API v2, Opsgenie
//! Alert API, heal's signed webhook). Also: a receiver down for 30 s, one
//! that hangs, a kill -9 with deliveries pending, a storm, and give-ups.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{heal_cli, test_dir, wait_agent_polling, wait_until, Agent, Server};

/// A request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    path: String,
    headers: Vec<(String, String)>,
    pub(crate) body: Value,
    raw: Vec<u8>,
    /// When it arrived.
    at: Instant,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a receiver answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// As the real service would (200 for Slack, 202 for PagerDuty and Opsgenie).
    Normal,
    /// Takes the request and never answers.
    Hang,
    /// Answers this status.
    Status(u16),
    /// Answers 429 with `Retry-After` of this many seconds.
    TooMany(u64),
}

/// A local HTTP receiver on 127.0.0.1 that records every request.
pub(crate) struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        Receiver::start_on(0)
    }

    fn start_on(port: u16) -> Receiver {
        let server = tiny_http::Server::http(format!("127.0.0.1:{port}")).expect("bind receiver");
        let port = server.server_addr().to_ip().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(Mode::Normal));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, m, s) = (got.clone(), mode.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let mut raw = Vec::new();
                let _ = std::io::Read::read_to_end(req.as_reader(), &mut raw);
                let path = req.url().to_string();
                g.lock().unwrap().push(Got {
                    headers: req
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                    raw,
                    path: path.clone(),
                    at: Instant::now(),
                });
                let (status, body) = match *m.lock().unwrap() {
                    Mode::Hang => {
                        held.push(req);
                        continue;
                    }
                    Mode::Status(s) => (s, r#"{"message":"refused"}"#.to_string()),
                    Mode::TooMany(secs) => {
                        let header =
                            tiny_http::Header::from_bytes("Retry-After", secs.to_string()).unwrap();
                        let answer = tiny_http::Response::from_string("slow down")
                            .with_status_code(429)
                            .with_header(header);
                        let _ = req.respond(answer);
                        continue;
                    }
                    Mode::Normal if path.starts_with("/slack") => (200, "ok".to_string()),
                    Mode::Normal if path.starts_with("/pd") => (
                        202,
                        r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#
                            .into(),
                    ),
                    Mode::Normal if path.starts_with("/og") => (
                        202,
                        r#"{"result":"Request will be processed","took":0.1,"requestId":"r"}"#
                            .into(),
                    ),
                    Mode::Normal => (200, "{}".to_string()),
                };
                let _ =
                    req.respond(tiny_http::Response::from_string(body).with_status_code(status));
            }
        });
        Receiver {
            port,
            got,
            mode,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    pub(crate) fn on(&self, prefix: &str) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| g.path.starts_with(prefix))
            .collect()
    }

    /// Waits until `n` requests to `prefix` arrived; returns them.
    pub(crate) fn wait(&self, prefix: &str, n: usize, timeout: Duration) -> Vec<Got> {
        wait_until(&format!("{n} requests to {prefix}"), timeout, || {
            let got = self.on(prefix);
            (got.len() >= n).then_some(got)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback port nothing listens on (for now).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fire(server: &Server, name: &str, labels: Value, annotations: Value, status: &str) -> Value {
    let body = json!({ "name": name, "labels": labels, "annotations": annotations, "status": status, "starts_at": "2026-11-23T10:00:00Z" });
    let (code, answer) = server.post("/api/v1/alerts", &body);
    assert_eq!(code, 200, "{answer}\nserver log:\n{}", server.logs());
    answer
}

fn event_of(answer: &Value) -> i64 {
    answer["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no event in {answer}"))
}

pub(crate) const RULES: &str = r#"
[[rule]]
name = "good"
when = "labels.alertname == 'NginxDown'"
runbook = "restart"
target = "labels.instance"

[[rule]]
name = "bad"
when = "labels.alertname == 'DiskFull'"
runbook = "clean"
target = "labels.instance"

[[rule]]
name = "watch"
when = "labels.alertname == 'Watch'"
runbook = "restart"
target = "labels.instance"
mode = "dry-run"

[runbook.restart]
steps = [ { name = "restart", run = "echo restarted" } ]

[runbook.clean]
steps = [ { name = "clean", run = "echo 'rm: cannot remove /var/tmp/x' >&2; exit 3" } ]
"#;

const PD_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";
const OG_KEY: &str = "og-key-5c1e0f3a-0000-4000-8000-000000000001";
const HOOK_SECRET: &str = "hook-secret-0123456789";

fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every length Slack documents for Block Kit, and no unescaped data.
fn check_slack(body: &Value) {
    assert!(
        body["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    let blocks = body["blocks"].as_array().expect("blocks");
    assert!(!blocks.is_empty() && blocks.len() <= 50, "{body}");
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "header" => {
                assert_eq!(b["text"]["type"], "plain_text");
                let t = b["text"]["text"].as_str().unwrap();
                assert!(t.chars().count() <= 150 && !t.contains('\n'), "{t}");
            }
            "section" => {
                if let Some(t) = b["text"]["text"].as_str() {
                    assert!(t.encode_utf16().count() <= 3000, "{t}");
                }
                if let Some(fields) = b["fields"].as_array() {
                    assert!(fields.len() <= 10);
                    for f in fields {
                        assert!(f["text"].as_str().unwrap().encode_utf16().count() <= 2000);
                    }
                }
            }
            "context" => assert!(b["elements"].as_array().unwrap().len() <= 10),
            "divider" => {}
            other => panic!("unexpected block type {other}"),
        }
    }
    let text = body.to_string();
    assert!(
        !text.contains("<script>"),
        "alert data reached Slack unescaped: {text}"
    );
}

#[test]
fn each_channel_gets_what_its_api_documents_and_resolves_follow_triggers() {
    let dir = test_dir("notify-shapes");
    let rx = Receiver::start();
    std::fs::write(dir.join("pd.key"), format!("{PD_KEY}\n")).unwrap();
    let mail = dir.join("mail.txt");
    let config = format!(
        r#"
[server]
lease = "5s"
public_url = "https://heal.example.com/"
{RULES}
[channel.chat]
slack = {{ webhook_url = "{slack}" }}

[channel.oncall]
pagerduty = {{ routing_key_file = "{pdkey}", url = "{pd}" }}

[channel.genie]
opsgenie = {{ api_key = "{OG_KEY}", url = "{og}" }}

[channel.hook]
webhook = {{ url = "{hook}", secret = "{HOOK_SECRET}" }}
rate_limit = "off"

[channel.mail]
command = {{ run = ["sh", "-c", "cat >> {mail}; echo \"== $HEAL_NOTIFICATION_KIND\" >> {mail}"], stdin = "text" }}

[[notify]]
when = "kind == 'event.succeeded'"
channels = ["chat", "hook", "mail"]

[[notify]]
when = "contains(['event.failed', 'event.escalated', 'safety.tripped'], kind)"
channels = ["chat", "oncall", "genie", "hook"]

[[notify]]
channels = ["hook"]
"#,
        slack = rx.url("/slack/services/T000/B000/XXXXSECRETXXXX"),
        pdkey = dir.join("pd.key").display(),
        pd = rx.url("/pd/v2/enqueue"),
        og = rx.url("/og"),
        hook = rx.url("/hook"),
        mail = mail.display(),
    );
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");

    let hostile = json!({ "summary": "<script>alert(1)</script> & *bold* ``` `x`" });
    let good = event_of(&fire(
        &server,
        "NginxDown",
        json!({ "instance": "web-1", "severity": "critical", "team": "web" }),
        hostile,
        "firing",
    ));
    server.wait_event(good, &["succeeded"], Duration::from_secs(20));
    let bad_labels = json!({ "instance": "web-1", "team": "storage" });
    let bad = event_of(&fire(
        &server,
        "DiskFull",
        bad_labels.clone(),
        json!({}),
        "firing",
    ));
    server.wait_event(bad, &["failed"], Duration::from_secs(20));

    // Slack: one message per success and failure, Block Kit within its limits.
    let slack = rx.wait("/slack", 2, Duration::from_secs(15));
    for s in &slack {
        check_slack(&s.body);
        assert_eq!(s.header("content-type"), Some("application/json"));
    }
    let all = slack.iter().map(|s| s.body.to_string()).collect::<String>();
    assert!(
        all.contains(&format!("https://heal.example.com/api/v1/events/{good}")),
        "{all}"
    );
    assert!(
        all.contains("exit 3") || all.contains("exited 3"),
        "the failure names the exit code: {all}"
    );
    assert!(
        all.contains("rm: cannot remove"),
        "the output's tail is shown: {all}"
    );

    // PagerDuty: a trigger for the failure only (a success opened nothing).
    let pd = rx.wait("/pd", 1, Duration::from_secs(15));
    let t = &pd[0].body;
    assert_eq!(
        t["routing_key"], PD_KEY,
        "read from routing_key_file, trimmed"
    );
    assert_eq!(t["event_action"], "trigger");
    assert_eq!(t["dedup_key"], format!("heal/event/{bad}"));
    let summary = t["payload"]["summary"].as_str().unwrap();
    assert!(!summary.is_empty() && summary.len() <= 1024, "{summary}");
    assert!(t["payload"]["source"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(["critical", "error", "warning", "info"]
        .contains(&t["payload"]["severity"].as_str().unwrap()));

    // Opsgenie: create by alias, with the key in the GenieKey header.
    let og = rx.wait("/og", 1, Duration::from_secs(15));
    assert_eq!(og[0].path, "/og/v2/alerts");
    assert_eq!(
        og[0].header("authorization"),
        Some(format!("GenieKey {OG_KEY}").as_str())
    );
    let msg = og[0].body["message"].as_str().unwrap();
    assert!(!msg.is_empty() && msg.chars().count() <= 130, "{msg}");
    assert_eq!(og[0].body["alias"], format!("heal/event/{bad}"));

    // The alert resolves: PagerDuty and Opsgenie close what they opened,
    // though no route sends event.resolved to them.
    fire(&server, "DiskFull", bad_labels, json!({}), "resolved");
    let pd = rx.wait("/pd", 2, Duration::from_secs(15));
    assert_eq!(
        pd[1].body,
        json!({ "routing_key": PD_KEY, "event_action": "resolve", "dedup_key": format!("heal/event/{bad}") })
    );
    let og = rx.wait("/og", 2, Duration::from_secs(15));
    assert_eq!(
        og[1].path,
        format!("/og/v2/alerts/heal%2Fevent%2F{bad}/close?identifierType=alias")
    );
    assert_eq!(
        og[1].header("authorization"),
        Some(format!("GenieKey {OG_KEY}").as_str())
    );

    // The webhook: every kind, signed, in order per event.
    let hooks = rx.wait("/hook", 5, Duration::from_secs(15));
    for h in &hooks {
        let ts = h.header("x-heal-timestamp").expect("timestamp header");
        let mut signed = format!("{ts}.").into_bytes();
        signed.extend_from_slice(&h.raw);
        assert_eq!(
            h.header("x-heal-signature"),
            Some(format!("sha256={}", hmac_hex(HOOK_SECRET, &signed)).as_str())
        );
        let age = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64)
            - ts.parse::<i64>().unwrap();
        assert!((0..120).contains(&age), "timestamp {ts} is now");
        assert!(h.header("x-heal-delivery").is_some());
    }
    let kinds = |id: i64| -> Vec<String> {
        hooks
            .iter()
            .filter(|h| h.body["event"]["id"] == id)
            .map(|h| h.body["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds(good), ["event.started", "event.succeeded"]);
    assert_eq!(
        kinds(bad),
        ["event.started", "event.failed", "event.resolved"]
    );
    let failed = hooks
        .iter()
        .find(|h| h.body["kind"] == "event.failed")
        .unwrap();
    assert_eq!(failed.body["ops"][0]["exit_code"], 3);
    assert_eq!(failed.body["labels"]["team"], "storage");
    assert_eq!(
        failed.body["url"],
        format!("https://heal.example.com/api/v1/events/{bad}")
    );

    // The command channel: plain text on stdin, the kind in its environment.
    let text = wait_until("the mail command to run", Duration::from_secs(10), || {
        std::fs::read_to_string(&mail)
            .ok()
            .filter(|t| t.contains("== event.succeeded"))
    });
    assert!(text.contains("NginxDown"), "{text}");

    // The outbox: everything sent, each delivery on the event's page.
    let outbox = wait_until("the outbox to drain", Duration::from_secs(10), || {
        let o = server.get_ok("/api/v1/outbox?limit=1000");
        (o["counts"]["pending"] == 0 && o["counts"]["unrouted"] == 0).then_some(o)
    });
    assert_eq!(outbox["counts"]["failed"], 0, "{outbox}");
    let e = server.event(bad);
    let channels: Vec<&str> = e["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["channel"].as_str().unwrap())
        .collect();
    for c in ["chat", "oncall", "genie", "hook"] {
        assert!(channels.contains(&c), "{channels:?}");
    }

    // Secrets appear in no answer, no log line and no check-config output.
    let channels = server.get_ok("/api/v1/channels").to_string();
    let (code, out, err) = heal_cli(
        &[
            "check-config",
            "--config",
            dir.join("runbooks.toml").to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("channel chat: slack http://127.0.0.1"),
        "{out}"
    );
    for secret in ["XXXXSECRETXXXX", PD_KEY, OG_KEY, HOOK_SECRET] {
        for (what, text) in [
            ("channels", &channels),
            ("outbox", &outbox.to_string()),
            ("log", &server.logs()),
            ("check-config", &out),
        ] {
            assert!(!text.contains(secret), "{what} shows a secret: {text}");
        }
    }
}

/// A config whose every notification goes to one webhook.
fn hook_config(url: &str, channel_extra: &str) -> String {
    format!(
        r#"
[server]
lease = "5s"
{RULES}
[channel.hook]
webhook = {{ url = "{url}" }}
max_backoff = "2s"
{channel_extra}

[[notify]]
channels = ["hook"]
"#
    )
}

#[test]
fn receiver_down_for_30s_gets_every_notification_once_in_order() {
    let dir = test_dir("notify-down");
    let port = free_port();
    let server = Server::start(
        &dir,
        &hook_config(
            &format!("http://127.0.0.1:{port}/hook"),
            "rate_limit = \"off\"",
        ),
    );
    let _agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    let down_since = Instant::now();
    let mut events = Vec::new();
    for i in 0..4 {
        let e = event_of(&fire(
            &server,
            "NginxDown",
            json!({ "instance": "web-1", "n": i.to_string() }),
            json!({}),
            "firing",
        ));
        server.wait_event(e, &["succeeded"], Duration::from_secs(20));
        events.push(e);
    }
    let o = wait_until(
        "deliveries to fail and wait",
        Duration::from_secs(10),
        || {
            let o = server.get_ok("/api/v1/outbox?state=pending&limit=100");
            (o["deliveries"]
                .as_array()?
                .iter()
                .any(|d| d["attempts"].as_i64() > Some(0)))
            .then_some(o)
        },
    );
    let head = o["deliveries"].as_array().unwrap().last().unwrap();
    let err = head["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("connection refused"),
        "the oldest waits, naming why: {o}"
    );
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down_since.elapsed()));

    let rx = Receiver::start_on(port);
    rx.wait("/hook", 8, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let got = rx.on("/hook");
    assert_eq!(
        got.len(),
        8,
        "each of 4 events' 2 notifications exactly once: {:?}",
        got.iter().map(|g| &g.body["kind"]).collect::<Vec<_>>()
    );
    let ids: Vec<i64> = got.iter().map(|g| g.body["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "in order, none twice");
    for e in events {
        let kinds: Vec<&str> = got
            .iter()
            .filter(|g| g.body["event"]["id"] == e)
            .map(|g| g.body["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["event.started", "event.succeeded"], "event {e}");
    }
    let o = server.get_ok("/api/v1/outbox?limit=100");
    assert_eq!(
        (
            o["counts"]["pending"].as_i64(),
            o["counts"]["sent"].as_i64()
        ),
        (Some(0), Some(8)),
        "{o}"
    );
}

#[test]
fn hanging_receiver_does_not_slow_intake_and_kill_9_keeps_pending_notifications() {
    let dir = test_dir("notify-hang");
    let rx = Receiver::start();
    rx.set(Mode::Hang);
    let mut server = Server::start(
        &dir,
        &hook_config(&rx.url("/hook"), "timeout = \"3s\"\nrate_limit = \"off\""),
    );
    // Dry-run events: a notification each, no agent needed.
    let mut slowest = Duration::ZERO;
    for i in 0..60 {
        let t = Instant::now();
        fire(
            &server,
            "Watch",
            json!({ "instance": "web-1", "n": i.to_string() }),
            json!({}),
            "firing",
        );
        slowest = slowest.max(t.elapsed());
    }
    rx.wait("/hook", 1, Duration::from_secs(10));
    assert!(
        slowest < Duration::from_secs(2),
        "an intake request took {slowest:?} while the channel hung (its timeout is 3s)"
    );
    // The outbox routes every 200 ms: the last alerts' notifications may still be unrouted.
    let o = wait_until("every notification routed", Duration::from_secs(10), || {
        let o = server.get_ok("/api/v1/outbox");
        (o["counts"]["unrouted"] == 0).then_some(o)
    });
    assert_eq!(
        (&o["counts"]["pending"], &o["counts"]["sent"]),
        (&json!(60), &json!(0)),
        "one delivery is in flight, none sent: {o}"
    );

    // kill -9 with everything pending; the receiver comes back; a restart delivers.
    server.kill();
    drop(rx);
    let rx = Receiver::start();
    let config = std::fs::read_to_string(dir.join("runbooks.toml")).unwrap();
    let old = config
        .lines()
        .find(|l| l.starts_with("webhook = "))
        .unwrap()
        .to_string();
    let config = config.replace(
        &old,
        &format!("webhook = {{ url = \"{}\" }}", rx.url("/hook")),
    );
    let server = Server::start(&dir, &config);
    rx.wait("/hook", 60, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let got = rx.on("/hook");
    let mut ids: Vec<i64> = got.iter().map(|g| g.body["id"].as_i64().unwrap()).collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(
        (n, ids.len()),
        (60, 60),
        "each exactly once after the restart"
    );
    assert!(got.iter().all(|g| g.body["kind"] == "event.dry_run"));
    let o = server.get_ok("/api/v1/outbox");
    assert_eq!(o["counts"]["sent"], 60, "{o}");
}

/// A receiver's `Retry-After` longer than the channel's `max_backoff` is
/// waited out in full, not cut to `max_backoff`.
#[test]
fn retry_after_longer_than_max_backoff_is_honoured() {
    let dir = test_dir("notify-retry-after");
    let rx = Receiver::start();
    rx.set(Mode::TooMany(3));
    let config = hook_config(&rx.url("/hook"), "rate_limit = \"off\"")
        .replace("max_backoff = \"2s\"", "max_backoff = \"1s\"");
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    let e = event_of(&fire(
        &server,
        "NginxDown",
        json!({ "instance": "web-1" }),
        json!({}),
        "firing",
    ));
    server.wait_event(e, &["succeeded"], Duration::from_secs(20));
    let got = rx.wait("/hook", 3, Duration::from_secs(20));
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(2900),
            "retried after {gap:?}, though the receiver asked for 3 s"
        );
    }
    rx.set(Mode::Normal);
    wait_until("both notifications sent", Duration::from_secs(20), || {
        let o = server.get_ok("/api/v1/outbox?limit=100");
        (o["counts"]["sent"].as_i64() == Some(2)).then_some(())
    });
}

#[test]
fn a_storm_becomes_a_digest_within_the_rate_limit() {
    let dir = test_dir("notify-storm");
    let rx = Receiver::start();
    let config = format!(
        r#"
{RULES}
[channel.chat]
slack = {{ webhook_url = "{}" }}
rate_limit = "3/1m"

[[notify]]
when = "kind == 'event.dry_run'"
channels = ["chat"]
"#,
        rx.url("/slack/T/B/X")
    );
    let server = Server::start(&dir, &config);
    // One request: the storm's notifications are committed together, so
    // the digest can carry all that the first two messages left.
    let storm: Vec<Value> = (0..40)
        .map(|i| json!({ "name": "Watch", "labels": { "instance": format!("web-{i}") } }))
        .collect();
    let (code, answer) = server.post("/api/v1/alerts", &json!(storm));
    assert_eq!(code, 200, "{answer}");
    let o = wait_until("the storm to be sent", Duration::from_secs(20), || {
        let o = server.get_ok("/api/v1/outbox?limit=100");
        (o["counts"]["sent"] == 40).then_some(o)
    });
    let got = rx.on("/slack");
    assert!(
        got.len() <= 3,
        "at most 3 messages a minute, got {}",
        got.len()
    );
    let last = got.last().unwrap();
    check_slack(&last.body);
    let text = last.body.to_string();
    assert!(text.contains("notifications"), "{text}");
    let digested = o["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["digest"].as_i64().unwrap_or(0) > 1)
        .count();
    assert!(digested >= 38 - 2, "{o}");
}

#[test]
fn refused_and_unreachable_channels_are_given_up_and_recorded() {
    let dir = test_dir("notify-giveup");
    let rx = Receiver::start();
    rx.set(Mode::Status(404));
    let dead = free_port();
    let config = format!(
        r#"
{RULES}
[channel.gone]
slack = {{ webhook_url = "{}" }}

[channel.dead]
webhook = {{ url = "http://127.0.0.1:{dead}/x" }}
give_up_after = "3s"
max_backoff = "1s"

[[notify]]
channels = ["gone", "dead"]
"#,
        rx.url("/slack/T/B/SECRETPART")
    );
    let server = Server::start(&dir, &config);
    fire(
        &server,
        "Watch",
        json!({ "instance": "web-1" }),
        json!({}),
        "firing",
    );
    let o = wait_until(
        "both deliveries to be given up",
        Duration::from_secs(20),
        || {
            let o = server.get_ok("/api/v1/outbox?state=failed");
            (o["deliveries"].as_array()?.len() == 2).then_some(o)
        },
    );
    let err = |c: &str| {
        o["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["channel"] == c)
            .unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        err("gone").contains("HTTP 404") && err("gone").contains("check the channel's URL"),
        "{o}"
    );
    assert_eq!(rx.on("/slack").len(), 1, "a 404 is not retried");
    assert!(
        err("dead").contains("gave up after") && err("dead").contains("connection refused"),
        "{o}"
    );
    assert!(!o.to_string().contains("SECRETPART"));
    assert!(server.logs().contains("gave up"), "giving up is logged");

    // `heal notify test` says how the channel answered, and names the fix.
    let (code, _, stderr) = heal_cli(
        &["notify", "test", "gone", "--server", &server.url],
        &[],
        None,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("test message to gone failed: HTTP 404"),
        "{stderr}"
    );
    rx.set(Mode::Normal);
    let (code, stdout, stderr) = heal_cli(
        &["notify", "test", "gone", "--server", &server.url],
        &[],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("test message sent to gone"), "{stdout}");
    let test = rx.on("/slack").pop().unwrap();
    check_slack(&test.body);
    let (code, _, stderr) = heal_cli(
        &["notify", "test", "nope", "--server", &server.url],
        &[],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no [channel.nope]") && stderr.contains("channels: dead, gone"),
        "{stderr}"
    );
    let (code, stdout, _) = heal_cli(&["notify", "--server", &server.url], &[], None);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("gone")
            && stdout.contains("slack http://127.0.0.1")
            && !stdout.contains("SECRETPART"),
        "{stdout}"
    );
}

#[test]
fn heal_s_own_alerts_page_and_their_end_resolves_the_page() {
    let dir = test_dir("notify-heartbeat");
    let rx = Receiver::start();
    let config = format!(
        r#"
[[heartbeat]]
name = "backup"
every = "2s"
grace = "1s"
team = "infra"

[channel.oncall]
pagerduty = {{ routing_key = "{PD_KEY}", url = "{}" }}

[[notify]]
when = "contains(['heartbeat.down', 'agent.down', 'probe.down', 'safety.tripped'], kind)"
channels = ["oncall"]
"#,
        rx.url("/pd/v2/enqueue")
    );
    let server = Server::start(&dir, &config);
    let (code, _) = server.post("/ping/backup", &json!({}));
    assert_eq!(code, 200);
    let pd = rx.wait("/pd", 1, Duration::from_secs(20));
    assert_eq!(pd[0].body["event_action"], "trigger");
    assert_eq!(pd[0].body["dedup_key"], "heal/heartbeat/backup");
    assert_eq!(pd[0].body["payload"]["group"], "infra");
    let (code, _) = server.post("/ping/backup", &json!({}));
    assert_eq!(code, 200);
    let pd = rx.wait("/pd", 2, Duration::from_secs(20));
    assert_eq!(pd[1].body["event_action"], "resolve");
    assert_eq!(pd[1].body["dedup_key"], "heal/heartbeat/backup");

    // The safety breaker: tripped pages, reset resolves.
    let (code, body) = server.post("/api/v1/breaker/trip", &json!({ "reason": "maintenance" }));
    assert_eq!(code, 200, "{body}");
    let pd = rx.wait("/pd", 3, Duration::from_secs(20));
    assert_eq!(pd[2].body["event_action"], "trigger");
    assert_eq!(pd[2].body["dedup_key"], "heal/safety/breaker");
    assert_eq!(pd[2].body["payload"]["severity"], "critical");
    let summary = pd[2].body["payload"]["summary"].as_str().unwrap();
    assert!(summary.contains("breaker"), "{summary}");
    let (code, body) = server.post("/api/v1/breaker/reset", &json!({ "reason": "done" }));
    assert_eq!(code, 200, "{body}");
    let pd = rx.wait("/pd", 4, Duration::from_secs(20));
    assert_eq!(pd[3].body["event_action"], "resolve");
    assert_eq!(pd[3].body["dedup_key"], "heal/safety/breaker");
}

#[test]
fn bad_channel_and_route_configs_name_file_line_and_fix() {
    let dir = test_dir("notify-config");
    let check = |body: &str, want: &str| {
        let path = dir.join("runbooks.toml");
        std::fs::write(&path, body).unwrap();
        let (code, _, err) = heal_cli(
            &["check-config", "--config", path.to_str().unwrap()],
            &[],
            None,
        );
        assert_eq!(code, 2, "{body}");
        assert!(err.contains(want), "want {want:?} in {err}");
    };
    check(
        "[channel.x]\nslack = { webhook_url = \"hooks.slack.com/x\" }\n",
        "runbooks.toml:2: channel \"x\": slack.webhook_url: must start with http:// or https://",
    );
    check(
        "[channel.x]\nslack = { webhook_url = \"${HEAL_SURELY_UNSET_VAR}\" }\n",
        "environment variable HEAL_SURELY_UNSET_VAR is not set",
    );
    check("[channel.x]\nslack = { webhook_url = \"http://h/x\" }\nwebhook = { url = \"http://h/y\" }\n", "give exactly one of slack, pagerduty, opsgenie, webhook, email or command");
    check(
        "[channel.x]\npagerduty = { routing_key = \"k\" }\nrate_limit = \"5/1m\"\n",
        "never digested; remove rate_limit",
    );
    check(
        "[channel.x]\nslack = { webhook_url = \"http://h/x\" }\nrate_limit = \"lots\"\n",
        "rate_limit: \"lots\" is not COUNT/DURATION",
    );
    check(
        "[[notify]]\nchannels = [\"nope\"]\n",
        "runbooks.toml:2: notify route at line 1: channels: no [channel.nope] (channels: none)",
    );
    check("[channel.x]\nslack = { webhook_url = \"http://h/x\" }\n[[notify]]\nwhen = \"kind == 'event.fail'\"\nchannels = [\"x\"]\n", "unknown kind 'event.fail'");
    check("[channel.x]\nslack = { webhook_url = \"http://h/x\" }\n[[notify]]\nwhen = \"kind ==\"\nchannels = [\"x\"]\n", "notify route at line 3: when:");
    check(
        "[server]\npublic_url = \"heal.example.com\"\n",
        "public_url: must start with http://",
    );
}

#[test]
fn the_example_config_posts_fixes_to_chat_and_pages_only_what_heal_could_not_fix() {
    let dir = test_dir("notify-example");
    let rx = Receiver::start();
    let example =
        std::fs::read_to_string(crate::support::repo().join("examples/notify.toml")).unwrap();
    let (code, out, err) = heal_cli(
        &["check-config", "--config", "examples/notify.toml"],
        &[
            (
                "SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T0/B0/SECRETSLACK",
            ),
            ("PD_ROUTING_KEY", PD_KEY),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("channel ops-chat: slack https://hooks.slack.com/…")
            && !out.contains("SECRETSLACK")
            && !out.contains(PD_KEY),
        "{out}"
    );
    let example = example
        .replace("${SLACK_WEBHOOK_URL}", &rx.url("/slack/T0/B0/X"))
        .replace(
            r#"routing_key = "${PD_ROUTING_KEY}""#,
            &format!(
                r#"routing_key = "{PD_KEY}", url = "{}""#,
                rx.url("/pd/v2/enqueue")
            ),
        )
        .replace("[server]\n", "[server]\nlease = \"5s\"\n");
    let server = Server::start(&dir, &format!("{example}\n{RULES}"));
    let _agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    let good = event_of(&fire(
        &server,
        "NginxDown",
        json!({ "instance": "web-1" }),
        json!({}),
        "firing",
    ));
    server.wait_event(good, &["succeeded"], Duration::from_secs(20));
    rx.wait("/slack", 1, Duration::from_secs(10));
    let bad = event_of(&fire(
        &server,
        "DiskFull",
        json!({ "instance": "web-1" }),
        json!({}),
        "firing",
    ));
    server.wait_event(bad, &["failed"], Duration::from_secs(20));
    let pd = rx.wait("/pd", 1, Duration::from_secs(10));
    rx.wait("/slack", 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pd.len(), 1, "the success paged no one");
    assert_eq!(pd[0].body["dedup_key"], format!("heal/event/{bad}"));
    assert_eq!(
        rx.on("/slack").len(),
        2,
        "chat hears the fix and the failure, not the starts"
    );
}

#[test]
fn an_approval_pages_and_the_approved_fix_resolves_the_page() {
    let dir = test_dir("notify-approval");
    let rx = Receiver::start();
    let config = format!(
        r#"
[server]
lease = "5s"

[[rule]]
name = "careful"
when = "labels.alertname == 'DbDown'"
runbook = "restart"
target = "labels.instance"
approve = true

[runbook.restart]
steps = [ {{ name = "restart", run = "echo restarted" }} ]

[channel.oncall]
pagerduty = {{ routing_key = "{PD_KEY}", url = "{pd}" }}

[channel.hook]
webhook = {{ url = "{hook}" }}
rate_limit = "off"

[[notify]]
when = "kind == 'event.pending_approval'"
channels = ["oncall", "hook"]
continue = true

[[notify]]
channels = ["hook"]
"#,
        pd = rx.url("/pd/v2/enqueue"),
        hook = rx.url("/hook"),
    );
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "db-1", &[]);
    wait_agent_polling(&server, "db-1");
    let id = event_of(&fire(
        &server,
        "DbDown",
        json!({ "instance": "db-1" }),
        json!({}),
        "firing",
    ));
    let pd = rx.wait("/pd", 1, Duration::from_secs(15));
    assert_eq!(pd[0].body["event_action"], "trigger");
    assert_eq!(pd[0].body["dedup_key"], format!("heal/event/{id}"));
    let approve = rx.wait("/hook", 1, Duration::from_secs(15));
    let text = approve[0].body["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("heal approve {id}")),
        "the message says how to approve: {text}"
    );
    let (code, body) = server.post(
        &format!("/api/v1/events/{id}/approve"),
        &json!({ "reason": "go" }),
    );
    assert_eq!(code, 200, "{body}");
    server.wait_event(id, &["succeeded"], Duration::from_secs(20));
    let pd = rx.wait("/pd", 2, Duration::from_secs(15));
    assert_eq!(
        pd[1].body,
        json!({ "routing_key": PD_KEY, "event_action": "resolve", "dedup_key": format!("heal/event/{id}") })
    );
    let hooks = rx.wait("/hook", 3, Duration::from_secs(15));
    let kinds: Vec<&str> = hooks
        .iter()
        .map(|h| h.body["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["event.pending_approval", "event.started", "event.succeeded"]
    );
    assert_eq!(
        hooks[2].body["event"]["decided_by"], "local",
        "who approved is on the event"
    );

    // A test to PagerDuty opens an incident and closes it again.
    let (code, out, err) = heal_cli(
        &["notify", "test", "oncall", "--server", &server.url],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("then resolved"), "{out}");
    let pd = rx.on("/pd");
    assert_eq!(pd.len(), 4, "{pd:?}");
    assert_eq!(
        (
            pd[2].body["event_action"].as_str(),
            pd[3].body["event_action"].as_str()
        ),
        (Some("trigger"), Some("resolve"))
    );
    assert_eq!(pd[2].body["dedup_key"], "heal/test/oncall");
    assert_eq!(pd[3].body["dedup_key"], "heal/test/oncall");
}

/// An alert whose runbook never fixes it runs max_attempts times, then
/// escalates: the chat and the page say why (the attempts, their count and
/// window), and name the alert and host in words, not the rule's raw key.
#[test]
fn an_escalation_says_why_on_chat_and_page() {
    let dir = test_dir("notify-escalation");
    let rx = Receiver::start();
    let config = format!(
        r#"
[server]
lease = "5s"

[[rule]]
name = "hammer"
when = "labels.alertname == 'HAProxyQueueHigh'"
runbook = "reset"
target = "labels.instance"
key = "[labels.alertname, labels.instance]"
max_attempts = 2
within = "1h"

[runbook.reset]
steps = [ {{ name = "reset", run = "echo 'queue still full' >&2; exit 1" }} ]

[channel.chat]
slack = {{ webhook_url = "{slack}" }}
rate_limit = "off"

[channel.oncall]
pagerduty = {{ routing_key = "{PD_KEY}", url = "{pd}" }}

[[notify]]
when = "kind == 'event.escalated'"
channels = ["chat", "oncall"]
"#,
        slack = rx.url("/slack/T0/B0/x"),
        pd = rx.url("/pd/v2/enqueue"),
    );
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "lb-1", &[]);
    wait_agent_polling(&server, "lb-1");
    let labels = json!({ "instance": "lb-1" });
    for _ in 0..2 {
        let id = event_of(&fire(
            &server,
            "HAProxyQueueHigh",
            labels.clone(),
            json!({}),
            "firing",
        ));
        server.wait_event(id, &["failed"], Duration::from_secs(20));
    }
    let answer = fire(&server, "HAProxyQueueHigh", labels, json!({}), "firing");
    assert_eq!(
        answer["alerts"][0]["decisions"][0]["outcome"], "escalate",
        "{answer}"
    );
    let id = event_of(&answer);

    let slack = rx.wait("/slack", 1, Duration::from_secs(15));
    check_slack(&slack[0].body);
    let chat = slack[0].body.to_string();
    let pd = rx.wait("/pd", 1, Duration::from_secs(15));
    let page = &pd[0].body;
    assert_eq!(page["event_action"], "trigger");
    let lines = page["payload"]["custom_details"]["lines"].to_string();
    for (what, body) in [("slack", &chat), ("pagerduty", &lines)] {
        assert!(!body.contains("no reason recorded"), "{what}: {body}");
        assert!(
            body.contains("2 attempts for key"),
            "{what} names the attempts: {body}"
        );
        assert!(
            body.contains("within 1h (max_attempts = 2)"),
            "{what} names the window: {body}"
        );
    }
    let title = format!("Escalated: HAProxyQueueHigh on lb-1 needs a person (event {id})");
    assert_eq!(slack[0].body["text"], title.as_str());
    assert_eq!(page["payload"]["summary"], title.as_str());
    let (_, event) = server.get(&format!("/api/v1/events/{id}"));
    assert_eq!(event["state"], "escalated", "{event}");
}

/// A probe that fails once and recovers, told on chat: what it is for (its
/// description), that it failed (once, in words), and that it recovered,
/// with the result that recovered it and the failure only as what it was.
#[test]
fn a_probe_is_told_with_its_description_and_its_recovery() {
    let dir = test_dir("notify-probe");
    let site = Receiver::start();
    site.set(Mode::Status(503));
    let rx = Receiver::start();
    let config = format!(
        r#"
[[probe]]
name = "api"
every = "1s"
fail_after = 1
recover_after = 1
description = "the public API; customers see errors when it fails"
http = {{ url = "{site}", status = [200] }}

[channel.chat]
slack = {{ webhook_url = "{slack}" }}
rate_limit = "off"

[[notify]]
when = "contains(['probe.down', 'probe.up'], kind)"
channels = ["chat"]
"#,
        site = site.url("/health"),
        slack = rx.url("/slack/T0/B0/x"),
    );
    let server = Server::start(&dir, &config);
    let down = rx.wait("/slack", 1, Duration::from_secs(20));
    check_slack(&down[0].body);
    let text = down[0].body.to_string();
    assert!(text.contains("Probe api is failing"), "{text}");
    assert!(text.contains("api failed; last: "), "{text}");
    assert!(!text.contains("1 times"), "{text}");
    assert!(
        text.contains("*About:* the public API; customers see errors when it fails"),
        "{text}"
    );
    site.set(Mode::Normal);
    let up = rx.wait("/slack", 2, Duration::from_secs(20));
    check_slack(&up[1].body);
    let text = up[1].body.to_string();
    assert_eq!(up[1].body["text"], "Probe api recovered", "{text}");
    assert!(
        text.contains("*Result:* probe api recovered: it passes again (last result: 200"),
        "{text}"
    );
    assert!(text.contains("it was failing since "), "{text}");
    assert!(text.contains("*About:* the public API"), "{text}");
    drop(server);
}

/// An op its agent refuses (not in its --allow list): the timeline and the
/// message say so plainly, and a started message that goes out after the
/// op ended shows neither the end's state nor its output.
#[test]
fn a_refused_op_reads_plainly_and_its_start_message_shows_no_end() {
    let dir = test_dir("notify-refused");
    let rx = Receiver::start();
    let config = format!(
        r#"
[[rule]]
name = "fix"
when = "labels.alertname == 'NginxDown'"
runbook = "fix"
target = "labels.instance"

[runbook.fix]
steps = [ {{ name = "restart", run = "true" }} ]

[channel.hook]
webhook = {{ url = "{hook}" }}
rate_limit = "off"

[[notify]]
channels = ["hook"]
"#,
        hook = rx.url("/hook"),
    );
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(&server.url, "web-1", &["--allow", "other-*"]);
    wait_agent_polling(&server, "web-1");
    let id = event_of(&fire(
        &server,
        "NginxDown",
        json!({ "instance": "web-1" }),
        json!({}),
        "firing",
    ));
    let event = server.wait_event(id, &["failed"], Duration::from_secs(20));
    let result = event["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "result")
        .unwrap_or_else(|| panic!("no result on {event}"));
    let line = result["message"].as_str().unwrap();
    assert!(
        line.contains("failed: agent web-1 refuses runbook \"fix\""),
        "{line}"
    );
    assert!(!line.contains("  "), "{line}");
    let hooks = rx.wait("/hook", 2, Duration::from_secs(15));
    let by_kind = |kind: &str| {
        hooks
            .iter()
            .find(|h| h.body["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {hooks:?}"))
            .body["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let failed = by_kind("event.failed");
    assert!(
        failed.starts_with(&format!("Failed: fix on web-1, no step ran (event {id})")),
        "{failed}"
    );
    assert!(failed.contains("agent web-1 refuses runbook"), "{failed}");
    let started = by_kind("event.started");
    assert!(
        started.contains(&format!("Event:    {id} (started)")),
        "{started}"
    );
    assert!(
        !started.contains("queued") && !started.contains("refuses"),
        "{started}"
    );
}

/// An agent forgotten while down is told as forgotten, not as back.
#[test]
fn a_forgotten_agent_is_told_as_forgotten_not_as_back() {
    let dir = test_dir("notify-forgotten");
    let rx = Receiver::start();
    let config = format!(
        r#"
[server]
poll_wait = "1s"
agent_down_after = "2s"

[channel.chat]
slack = {{ webhook_url = "{slack}" }}
rate_limit = "off"

[[notify]]
when = "contains(['agent.down', 'agent.up'], kind)"
channels = ["chat"]
"#,
        slack = rx.url("/slack/T0/B0/x"),
    );
    let server = Server::start(&dir, &config);
    let mut agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    agent.kill();
    let down = rx.wait("/slack", 1, Duration::from_secs(20));
    assert_eq!(
        down[0].body["text"],
        "Agent web-1 is down: it stopped polling heal"
    );
    let (code, out, err) = heal_cli(
        &["agents", "forget", "web-1", "--server", &server.url],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let up = rx.wait("/slack", 2, Duration::from_secs(20));
    check_slack(&up[1].body);
    let text = up[1].body.to_string();
    assert_eq!(up[1].body["text"], "Agent web-1 is forgotten", "{text}");
    assert!(text.contains("agent web-1 was forgotten"), "{text}");
    assert!(!text.contains("polls again"), "{text}");
    drop(server);
}

/// A heartbeat's and a rule's `priority` reach PagerDuty as its severity
/// and Opsgenie as its priority, show in the message's fields, and routes
/// match it.
#[test]
fn priorities_reach_the_pagers_and_the_routes() {
    let dir = test_dir("notify-priority");
    let rx = Receiver::start();
    let config = format!(
        r#"
[[heartbeat]]
name = "backup"
every = "2s"
grace = "1s"
priority = "p2"

[[rule]]
name = "disk"
when = "labels.alertname == 'DiskFull'"
runbook = "clean"
target = "labels.instance"
mode = "dry-run"
priority = "p1"

[runbook.clean]
steps = [ {{ name = "clean", run = "true" }} ]

[channel.oncall]
pagerduty = {{ routing_key = "{PD_KEY}", url = "{pd}" }}

[channel.genie]
opsgenie = {{ api_key = "{OG_KEY}", url = "{og}" }}

[channel.hook]
webhook = {{ url = "{hook}" }}

[[notify]]
when = "kind != 'test'"
channels = ["oncall", "genie"]
continue = true

[[notify]]
when = "priority == 'p1'"
channels = ["hook"]
"#,
        pd = rx.url("/pd/v2/enqueue"),
        og = rx.url("/og"),
        hook = rx.url("/hook"),
    );
    let server = Server::start(&dir, &config);
    let (code, _) = server.post("/ping/backup", &json!({}));
    assert_eq!(code, 200);
    let pd = rx.wait("/pd", 1, Duration::from_secs(20));
    assert_eq!(pd[0].body["dedup_key"], "heal/heartbeat/backup");
    assert_eq!(pd[0].body["payload"]["severity"], "error");
    let og = rx.wait("/og", 1, Duration::from_secs(20));
    assert_eq!(og[0].body["priority"], "P2");
    assert_eq!(og[0].body["details"]["Priority"], "P2", "{}", og[0].body);
    // The p1 rule pages as critical, and only it reaches the p1 route.
    fire(
        &server,
        "DiskFull",
        json!({"instance": "db-1"}),
        json!({}),
        "firing",
    );
    let pd = rx.wait("/pd", 2, Duration::from_secs(20));
    assert_eq!(
        pd[1].body["payload"]["severity"], "critical",
        "{}",
        pd[1].body
    );
    let og = rx.wait("/og", 2, Duration::from_secs(20));
    assert_eq!(og[1].body["priority"], "P1");
    rx.wait("/hook", 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    for got in rx.on("/hook") {
        assert_eq!(got.body["priority"], "p1", "{}", got.body);
        assert_eq!(got.body["rule"], "disk", "only the p1 rule's: {}", got.body);
    }
}
