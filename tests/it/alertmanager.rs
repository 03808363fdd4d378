//! End to end with the real Prometheus Alertmanager (0.25, Debian package
//! `prometheus-alertmanager`): an alert posted to Alertmanager's API reaches
//! heal as a webhook with the bearer token, runs its runbook on the agent, and
//! its resolution is recorded on the event.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::{http, skip, test_dir, wait_agent_polling, wait_until, Agent, Server};

const WEBHOOK_TOKEN: &str = "am-test-token-0123456789";
const ADMIN_TOKEN: &str = "admin-test-token-0123456789";
const AGENT_TOKEN: &str = "agent-test-token-0123456789";

const CONFIG: &str = r#"
[[token]]
name = "alertmanager"
scopes = ["webhook"]
secret = "am-test-token-0123456789"

[[token]]
name = "admin"
scopes = ["admin"]
secret = "admin-test-token-0123456789"

[[token]]
name = "agent-web-1"
scopes = ["agent"]
agent = "web-1"
secret = "agent-test-token-0123456789"

[[rule]]
name = "disk"
when = "labels.alertname == 'DiskSpaceLow'"
runbook = "clean"
target = "labels.instance"

[runbook.clean]
steps = [ { name = "clean", run = "echo cleaned $HEAL_LABEL_MOUNTPOINT" } ]
"#;

/// The Alertmanager binary, if installed.
fn alertmanager_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus-alertmanager"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let fixed = PathBuf::from("/usr/bin/prometheus-alertmanager");
        fixed.is_file().then_some(fixed)
    })
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// RFC 3339 in UTC with milliseconds, like Alertmanager's own timestamps.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).expect("after 1970");
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A running Alertmanager; killed and reaped (by its own pid) on drop.
struct Alertmanager {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    url: String,
}

impl Alertmanager {
    fn start(bin: &Path, dir: &Path, heal_url: &str) -> Alertmanager {
        let token_file = dir.join("am-token");
        std::fs::write(&token_file, WEBHOOK_TOKEN).expect("write token file");
        let config = format!(
            r#"global:
  resolve_timeout: 5s
route:
  receiver: heal
  group_by: ["alertname"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: heal
    webhook_configs:
      - url: "{heal_url}/api/v1/alerts/alertmanager"
        send_resolved: true
        http_config:
          follow_redirects: false
          authorization:
            type: Bearer
            credentials_file: "{}"
"#,
            token_file.display()
        );
        let config_file = dir.join("alertmanager.yml");
        std::fs::write(&config_file, config).expect("write alertmanager.yml");
        let port = free_port();
        let mut child = Command::new(bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut am = Alertmanager {
            child: Some(child),
            log,
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_until(
            "Alertmanager to answer /-/ready",
            Duration::from_secs(30),
            || {
                if let Some(Ok(Some(status))) = am.child.as_mut().map(|c| c.try_wait()) {
                    panic!("Alertmanager exited with {status}:\n{}", am.logs());
                }
                let (status, _) = http("GET", &format!("{}/-/ready", am.url), None, &[]);
                (status == 200).then_some(())
            },
        );
        am
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// POST /api/v2/alerts with a list of alerts; must answer 200.
    fn post_alerts(&self, alerts: &Value) {
        let (status, body) = http(
            "POST",
            &format!("{}/api/v2/alerts", self.url),
            Some(alerts.to_string().as_bytes()),
            &[("Content-Type", "application/json")],
        );
        assert_eq!(
            status,
            200,
            "Alertmanager refused {alerts}: {body}\nAlertmanager log:\n{}",
            self.logs()
        );
    }

    /// GET /api/v2/alerts (active, silenced, inhibited, unprocessed).
    fn alerts(&self) -> Vec<Value> {
        let (status, body) = http("GET", &format!("{}/api/v2/alerts", self.url), None, &[]);
        assert_eq!(status, 200, "GET /api/v2/alerts: {body}");
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- alertmanager log ---\n{}", self.logs());
        }
    }
}

/// The installed Alertmanager, or None (the test is skipped, see `skip`).
fn require_alertmanager(test: &str) -> Option<PathBuf> {
    let bin = alertmanager_bin();
    if bin.is_none() {
        skip(
            test,
            "prometheus-alertmanager on PATH or at /usr/bin/prometheus-alertmanager \
             (apt-get install prometheus-alertmanager)",
        );
    }
    bin
}

fn disk_alert(starts_at: SystemTime, ends_at: SystemTime) -> Value {
    json!([{
        "labels": {
            "alertname": "DiskSpaceLow",
            "instance": "web-1",
            "mountpoint": "/var",
            "severity": "warning"
        },
        "annotations": { "summary": "/var on web-1 is almost full" },
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at),
        "generatorURL": "http://127.0.0.1/heal-it"
    }])
}

#[test]
#[ignore = "needs prometheus-alertmanager (apt-get install prometheus-alertmanager); cargo test -- --include-ignored runs it, as .ci/run does"]
fn alertmanager_webhook_runs_runbook_and_records_resolution() {
    let test = "alertmanager_webhook_runs_runbook_and_records_resolution";
    let Some(bin) = require_alertmanager(test) else {
        return;
    };
    let dir = test_dir("alertmanager-e2e");
    let mut server = Server::start(&dir, CONFIG);
    server.token = Some(ADMIN_TOKEN.into());
    let _agent = Agent::start(&server.url, "web-1", &["--token", AGENT_TOKEN]);
    wait_agent_polling(&server, "web-1");
    let am = Alertmanager::start(&bin, &dir, &server.url);

    // Firing: endsAt an hour ahead, so resolve_timeout never resolves it on its own.
    let starts_at = SystemTime::now();
    am.post_alerts(&disk_alert(
        starts_at,
        starts_at + Duration::from_secs(3600),
    ));

    let event = wait_until(
        "heal to run the DiskSpaceLow runbook to success",
        Duration::from_secs(30),
        || {
            let e = server
                .events()
                .into_iter()
                .find(|e| e["rule"] == "disk" && e["runbook"] == "clean")?;
            let detail = server.event(e["id"].as_i64()?);
            assert!(
                !matches!(
                    detail["state"].as_str(),
                    Some("failed" | "timed_out" | "lost" | "cancelled")
                ),
                "event ended badly: {detail:#}"
            );
            (detail["state"] == "succeeded").then_some(detail)
        },
    );
    let event_id = event["id"].as_i64().expect("event id");
    let ops = event["ops"].as_array().expect("ops");
    assert_eq!(ops.len(), 1, "one op, for web-1: {event:#}");
    assert_eq!(ops[0]["agent"], "web-1", "{event:#}");
    assert_eq!(ops[0]["state"], "succeeded", "{event:#}");
    let output: String = ops[0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["output"].as_str())
        .collect();
    assert!(
        output.contains("cleaned /var"),
        "step output lacks \"cleaned /var\": {event:#}"
    );
    assert_eq!(event["alert"]["labels"]["mountpoint"], "/var", "{event:#}");
    assert_eq!(event["alert"]["status"], "firing", "{event:#}");

    // heal's fingerprint is Alertmanager's.
    let fingerprint = event["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let am_alerts = am.alerts();
    assert!(
        am_alerts
            .iter()
            .any(|a| a["fingerprint"] == fingerprint.as_str()),
        "heal's fingerprint {fingerprint} is not among Alertmanager's alerts: {am_alerts:?}"
    );

    // Resolve: same labels and startsAt, endsAt a second ago.
    am.post_alerts(&disk_alert(
        starts_at,
        SystemTime::now() - Duration::from_secs(1),
    ));
    let stored = wait_until(
        "heal to record the resolution",
        Duration::from_secs(30),
        || {
            let list = server.get_ok(&format!("/api/v1/alerts?fingerprint={fingerprint}"));
            let a = list["alerts"].as_array()?.first()?.clone();
            (a["status"] == "resolved").then_some(a)
        },
    );
    assert_eq!(stored["fingerprint"], fingerprint.as_str(), "{stored:#}");
    assert_eq!(stored["source"], "alertmanager", "{stored:#}");
    let event = wait_until(
        "the event's timeline to show alert-resolved",
        Duration::from_secs(10),
        || {
            let e = server.event(event_id);
            e["timeline"]
                .as_array()?
                .iter()
                .any(|t| t["kind"] == "alert-resolved")
                .then_some(e)
        },
    );
    assert_eq!(event["state"], "succeeded", "{event:#}");
    assert_eq!(
        server.events().len(),
        1,
        "the resolution starts no second event"
    );

    // Every webhook carried the bearer token: none was refused.
    let logs = server.logs();
    assert!(
        !logs.contains("unknown token") && !logs.contains("missing bearer token"),
        "heal refused a webhook:\n{logs}"
    );
}

#[test]
fn alertmanager_route_refuses_requests_without_the_token() {
    let dir = test_dir("alertmanager-auth");
    let server = Server::start(&dir, CONFIG);
    let body = crate::support::fixture("alertmanager/raw/single_firing.json");
    let url = format!("{}/api/v1/alerts/alertmanager", server.url);
    let json_ct = ("Content-Type", "application/json");

    let (status, text) = http("POST", &url, Some(body.as_bytes()), &[json_ct]);
    assert_eq!(status, 401, "no Authorization header: {text}");

    let wrong = "Bearer not-the-token-0123456789";
    let (status, text) = http(
        "POST",
        &url,
        Some(body.as_bytes()),
        &[json_ct, ("Authorization", wrong)],
    );
    assert_eq!(status, 401, "wrong token: {text}");

    let agent = format!("Bearer {AGENT_TOKEN}");
    let (status, text) = http(
        "POST",
        &url,
        Some(body.as_bytes()),
        &[json_ct, ("Authorization", &agent)],
    );
    assert_eq!(status, 403, "agent token lacks the webhook scope: {text}");

    let good = format!("Bearer {WEBHOOK_TOKEN}");
    let (status, text) = http(
        "POST",
        &url,
        Some(body.as_bytes()),
        &[json_ct, ("Authorization", &good)],
    );
    assert_eq!(status, 200, "webhook token: {text}");
}
