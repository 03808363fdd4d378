//! `GET /metrics`: the exposition parses strictly, its counters move with
//! alerts, decisions, a real agent's op and HTTP requests, it needs a read
//! token once tokens are configured, a real Prometheus scrapes it with the
//! example config and loads the example rules, and promtool accepts the
//! examples in examples/prometheus/.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::{
    fixture, free_port, http, prometheus_tool, repo, test_dir, wait_agent_polling, wait_until,
    Agent, Prometheus, Server,
};

const CONFIG: &str = r#"
[server]
lease = "5s"

[[source]]
name = "uptime"
alerts = "checks"
alert_name = "'SiteDown'"
status = "'firing'"
labels = "{instance: host}"

[[heartbeat]]
name = "nightly"
every = "1s"
grace = "1s"

[[rule]]
name = "disk"
when = "labels.alertname == 'DiskFull'"
runbook = "nap"
target = "labels.instance"

[runbook.nap]
steps = [ { name = "nap", run = "sleep 0.3" } ]
"#;

const READ_TOKEN: &str = "prometheus-read-0123456789";

const TOKENS: &str = r#"
[[token]]
name = "prometheus"
scopes = ["read"]
secret = "prometheus-read-0123456789"

[[token]]
name = "alertmanager"
scopes = ["webhook"]
secret = "webhook-secret-0123456789"
"#;

/// One scrape, parsed strictly.
#[derive(Debug)]
struct Scrape {
    /// Family name → type.
    types: BTreeMap<String, String>,
    /// Series (sample name, labels in order) → value.
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

type Labels = Vec<(String, String)>;

impl Scrape {
    /// Parses the text exposition format 0.0.4 and checks heal's conventions:
    /// every family has HELP then TYPE before its samples, which follow
    /// together; names are snake_case with the heal_ prefix; counters end in
    /// `_total`; no series twice; histogram buckets are cumulative, end in
    /// `+Inf` and equal `_count`.
    fn parse(text: &str) -> Result<Scrape, String> {
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        let mut samples = BTreeMap::new();
        let mut family: Option<(String, String)> = None;
        if !text.ends_with('\n') {
            return Err("the text does not end with a newline".into());
        }
        for (i, line) in text.lines().enumerate() {
            let at = |m: String| format!("line {}: {m}: {line:?}", i + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("no help text".into()))?;
                check_family_name(name).map_err(at)?;
                unescape(help, false).map_err(at)?;
                if helps.insert(name.to_string(), help.to_string()).is_some() {
                    return Err(at("a second HELP".into()));
                }
                family = None;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| at("no type".into()))?;
                if !helps.contains_key(name) || types.contains_key(name) {
                    return Err(at("TYPE without its HELP just before, or twice".into()));
                }
                if !["counter", "gauge", "histogram"].contains(&kind) {
                    return Err(at(format!("type {kind}")));
                }
                if (kind == "counter") != name.ends_with("_total") {
                    return Err(at("counters, and only counters, end in _total".into()));
                }
                types.insert(name.to_string(), kind.to_string());
                family = Some((name.to_string(), kind.to_string()));
            } else if line.starts_with('#') || line.is_empty() {
                return Err(at("neither HELP, TYPE nor a sample".into()));
            } else {
                let (name, labels, value) = parse_sample(line).map_err(at)?;
                let Some((fam, kind)) = &family else {
                    return Err(at("a sample outside a family".into()));
                };
                let belongs = match kind.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(fam)),
                    _ => name == *fam,
                };
                if !belongs {
                    return Err(at(format!("does not belong to family {fam}")));
                }
                if kind == "counter" && (value.is_nan() || value < 0.0) {
                    return Err(at("a negative counter".into()));
                }
                if samples.insert((name, labels), value).is_some() {
                    return Err(at("the same series twice".into()));
                }
            }
        }
        if let Some(name) = helps.keys().find(|n| !types.contains_key(*n)) {
            return Err(format!("{name} has HELP but no TYPE"));
        }
        let scrape = Scrape { types, samples };
        scrape.check_histograms()?;
        Ok(scrape)
    }

    fn check_histograms(&self) -> Result<(), String> {
        for (fam, _) in self.types.iter().filter(|(_, k)| *k == "histogram") {
            let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for ((name, labels), v) in &self.samples {
                if *name != format!("{fam}_bucket") {
                    continue;
                }
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .ok_or(format!("{fam}: a bucket without le"))?;
                let bound = parse_value(&le.1).map_err(|e| format!("{fam}: le: {e}"))?;
                let rest: Labels = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                series.entry(rest).or_default().push((bound, *v));
            }
            if series.is_empty() {
                return Err(format!("{fam}: no buckets"));
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
                    return Err(format!("{fam}{labels:?}: no +Inf bucket"));
                }
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    return Err(format!(
                        "{fam}{labels:?}: buckets not cumulative: {buckets:?}"
                    ));
                }
                let count = self.samples.get(&(format!("{fam}_count"), labels.clone()));
                if count != buckets.last().map(|b| &b.1) {
                    return Err(format!(
                        "{fam}{labels:?}: _count {count:?} is not the +Inf bucket"
                    ));
                }
                if !self
                    .samples
                    .contains_key(&(format!("{fam}_sum"), labels.clone()))
                {
                    return Err(format!("{fam}{labels:?}: no _sum"));
                }
            }
        }
        Ok(())
    }

    /// The value of one series, if it is there.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut key: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        key.sort();
        self.samples
            .iter()
            .find(|((n, l), _)| {
                let mut l = l.clone();
                l.sort();
                n == name && l == key
            })
            .map(|(_, v)| *v)
    }

    /// The value of one series; panics if it is not there.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape"))
    }
}

fn check_family_name(name: &str) -> Result<(), String> {
    let snake = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name.starts_with("heal_") || !snake {
        return Err(format!("{name} is not snake_case with the heal_ prefix"));
    }
    Ok(())
}

/// A sample line: `name{label="value",...} value`.
fn parse_sample(line: &str) -> Result<(String, Labels, f64), String> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .ok_or("no value")?;
    let name = &line[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            let eq = inner.find('=').ok_or("a label without =")?;
            let key = &inner[..eq];
            let good_key = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !good_key || labels.iter().any(|(k, _): &(String, String)| k == key) {
                return Err(format!("bad or repeated label name {key:?}"));
            }
            let quoted = inner[eq + 1..]
                .strip_prefix('"')
                .ok_or("an unquoted label value")?;
            let close = closing_quote(quoted).ok_or("an unterminated label value")?;
            labels.push((key.to_string(), unescape(&quoted[..close], true)?));
            inner = &quoted[close + 1..];
            if let Some(after) = inner.strip_prefix(',') {
                inner = after;
            } else if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            } else {
                return Err("labels not separated by , or closed by }".into());
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or("no single space before the value")?;
    Ok((name.to_string(), labels, parse_value(value)?))
}

/// The index of the first unescaped `"`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Undoes `\\` and `\n` (and `\"` in label values); any other escape is an error.
fn unescape(s: &str, label: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label => out.push('"'),
            other => return Err(format!("bad escape \\{other:?} in {s:?}")),
        }
    }
    Ok(out)
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if v.contains(char::is_whitespace) => {
            Err(format!("a timestamp or junk after the value: {v:?}"))
        }
        _ => v.parse().map_err(|e| format!("value {v:?}: {e}")),
    }
}

/// GET /metrics with an optional token: status, Content-Type and body.
fn get_metrics(server: &Server, token: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("{}/metrics", server.url));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("GET /metrics");
    let content_type = resp
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), content_type, body)
}

/// Scrapes and parses, failing the test on any error.
fn scrape(server: &Server, token: Option<&str>) -> Scrape {
    let (status, content_type, body) = get_metrics(server, token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    Scrape::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

#[test]
fn metrics_parse_and_count_alerts_decisions_an_agent_op_and_requests() {
    let dir = test_dir("metrics-counters");
    let server = Server::start(&dir, CONFIG);
    let before = scrape(&server, None);
    for outcome in ["run", "discard", "collapse", "breaker"] {
        assert_eq!(
            before.value("heal_decisions_total", &[("outcome", outcome)]),
            0.0
        );
    }
    assert_eq!(
        before.value("heal_alerts_received_total", &[("source", "uptime")]),
        0.0,
        "every [[source]] has a series from the start"
    );
    assert_eq!(
        before.value("heal_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = before.value("heal_process_start_time_seconds", &[]);
    assert!((now - 60.0..=now).contains(&started), "{started} vs {now}");

    let _agent = Agent::start(&server.url, "node-1", &[]);
    wait_agent_polling(&server, "node-1");
    let (status, answer) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "DiskFull", "labels": { "instance": "node-1" } }),
    );
    assert_eq!(status, 200, "{answer}");
    let event = answer["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap();
    let body = fixture("alertmanager/raw/single_firing.json");
    let (status, text) = server.post_raw("/api/v1/alerts/alertmanager", body.as_bytes(), &[]);
    assert_eq!(status, 200, "{text}");
    let (status, answer) =
        server.post("/hooks/uptime", &json!({ "checks": [{ "host": "web-1" }] }));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.get("/api/v1/events/999999").0, 404);
    assert_eq!(server.get("/no/such/route").0, 404);
    server.wait_event(event, &["succeeded"], Duration::from_secs(20));
    // The heartbeat, never pinged, goes down and raises an internal alert.
    let after = wait_until("the heartbeat to go down", Duration::from_secs(15), || {
        let s = scrape(&server, None);
        (s.value("heal_heartbeats", &[("state", "down")]) == 1.0
            && s.value("heal_alerts_received_total", &[("source", "internal")]) >= 1.0
            && s.value("heal_agents_connected", &[]) == 1.0)
            .then_some(s)
    });

    let received = |source| after.value("heal_alerts_received_total", &[("source", source)]);
    assert_eq!(
        (
            received("heal"),
            received("alertmanager"),
            received("uptime")
        ),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(
        after.value("heal_decisions_total", &[("outcome", "run")]),
        1.0
    );
    // DiskSpaceLow, SiteDown and HeartbeatMissing match no rule.
    assert!(after.value("heal_decisions_total", &[("outcome", "discard")]) >= 3.0);

    let succeeded = [("state", "succeeded")];
    assert_eq!(
        after.value("heal_op_duration_seconds_count", &succeeded),
        1.0
    );
    let ran = after.value("heal_op_duration_seconds_sum", &succeeded);
    assert!((0.3..10.0).contains(&ran), "the op slept 0.3 s: {ran}");
    let bucket = |le| {
        after.value(
            "heal_op_duration_seconds_bucket",
            &[("state", "succeeded"), ("le", le)],
        )
    };
    assert_eq!(
        (bucket("0.1"), bucket("0.5"), bucket("+Inf")),
        (0.0, 1.0, 1.0)
    );
    assert_eq!(
        after.value("heal_op_duration_seconds_count", &[("state", "failed")]),
        0.0
    );

    for state in ["queued", "running", "verifying", "pending_approval"] {
        assert_eq!(
            after.value("heal_events", &[("state", state)]),
            0.0,
            "{state}"
        );
    }
    assert_eq!(after.value("heal_ops", &[("state", "running")]), 0.0);
    assert_eq!(after.value("heal_agents", &[("state", "up")]), 1.0);
    assert_eq!(after.value("heal_agents", &[("state", "down")]), 0.0);
    assert_eq!(after.value("heal_breaker_open", &[]), 0.0);
    assert!(after.value("heal_store_commit_seconds_count", &[]) > 0.0);

    let requests = |method, route, code| {
        after
            .find(
                "heal_http_requests_total",
                &[("method", method), ("route", route), ("code", code)],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(requests("POST", "/api/v1/alerts", "200"), 1.0);
    assert_eq!(requests("POST", "/api/v1/alerts/alertmanager", "200"), 1.0);
    assert_eq!(requests("POST", "/hooks/{source}", "200"), 1.0);
    assert_eq!(requests("GET", "/api/v1/events/{id}", "404"), 1.0);
    assert_eq!(requests("GET", "other", "404"), 1.0);
    assert!(requests("GET", "/metrics", "200") >= 1.0);
    assert_eq!(
        requests("POST", "/api/v1/agents/{agent}/ops/{op}/result", "200"),
        1.0
    );
    assert!(requests("POST", "/api/v1/agents/{agent}/poll", "200") >= 1.0);
    // Routes are templates: no raw path, id or name becomes a label value.
    for (_, labels) in after.samples.keys() {
        for (_, v) in labels {
            assert!(
                !v.contains("999999") && !v.contains("node-1") && !v.contains("/no/such"),
                "{labels:?}"
            );
        }
    }
}

#[test]
fn metrics_count_probe_runs_on_the_server_and_agents_skipped_runs_and_scheduler_rounds() {
    let dir = test_dir("metrics-probes");
    let config = r#"
[server]
poll_wait = "2s"

[[probe]]
name = "quick"
every = "1s"
command = { run = "true" }

[[probe]]
name = "slow"
every = "1s"
timeout = "10s"
command = { run = "sleep 4" }

[[probe]]
name = "on-agent"
every = "1s"
on = "'metrics-agent'"
command = { run = "true" }
"#;
    let server = Server::start(&dir, config);
    let _agent = crate::support::Agent::start(&server.url, "metrics-agent", &[]);
    let s = wait_until(
        "probe runs on the server and an agent",
        Duration::from_secs(20),
        || {
            let s = scrape(&server, None);
            (s.value("heal_probe_runs_total", &[("on", "server")]) >= 3.0
                && s.value("heal_probe_runs_total", &[("on", "agent")]) >= 2.0
                && s.value("heal_probe_runs_skipped_total", &[("on", "server")]) >= 1.0)
                .then_some(s)
        },
    );
    // The slow probe's runs overlap its schedule: skipped, never queued twice.
    // The agent's quick check never is.
    assert_eq!(
        s.value("heal_probe_runs_skipped_total", &[("on", "agent")]),
        0.0
    );
    let rounds = s.value("heal_scheduler_round_seconds_count", &[]);
    assert!(rounds >= 3.0, "{rounds} rounds");
    let max = s.value("heal_scheduler_round_max_seconds", &[]);
    assert!(max > 0.0 && max < 5.0, "longest round {max} s");
    assert!(
        server
            .logs()
            .contains("probe slow: still running from last time; this run is skipped"),
        "{}",
        server.logs()
    );
}

#[test]
fn metrics_need_a_read_token_once_tokens_are_configured() {
    let dir = test_dir("metrics-token");
    let server = Server::start(&dir, TOKENS);
    let (status, _, body) = get_metrics(&server, None);
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = get_metrics(&server, Some("webhook-secret-0123456789"));
    assert_eq!(status, 403, "{body}");
    let s = scrape(&server, Some(READ_TOKEN));
    let refused = |code| {
        s.value(
            "heal_http_requests_total",
            &[("method", "GET"), ("route", "/metrics"), ("code", code)],
        )
    };
    assert_eq!((refused("401"), refused("403")), (1.0, 1.0));
}

#[test]
fn metrics_show_the_outbox_pending_then_given_up_per_channel() {
    let dir = test_dir("metrics-outbox");
    let dead = free_port();
    let config = format!(
        r#"
[[rule]]
name = "watch"
when = "labels.alertname == 'Watch'"
runbook = "nap"
target = "labels.instance"
mode = "dry-run"

[runbook.nap]
steps = [ {{ name = "nap", run = "sleep 0.3" }} ]

[channel.dead]
webhook = {{ url = "http://127.0.0.1:{dead}/x" }}
give_up_after = "3s"
max_backoff = "1s"

[channel.quiet]
webhook = {{ url = "http://127.0.0.1:{dead}/y" }}

[[notify]]
when = "kind == 'event.dry_run'"
channels = ["dead"]
"#
    );
    let server = Server::start(&dir, &config);
    let (status, answer) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "Watch", "labels": { "instance": "web-1" } }),
    );
    assert_eq!(status, 200, "{answer}");
    let outbox = |s: &Scrape, state| s.value("heal_outbox_deliveries", &[("state", state)]);
    let gave_up =
        |s: &Scrape, channel| s.value("heal_outbox_failures_total", &[("channel", channel)]);
    let pending = wait_until(
        "the delivery to wait for a retry",
        Duration::from_secs(10),
        || {
            let s = scrape(&server, None);
            (outbox(&s, "pending") == 1.0).then_some(s)
        },
    );
    assert_eq!(gave_up(&pending, "dead"), 0.0);
    assert_eq!(pending.value("heal_events", &[("state", "dry_run")]), 1.0);
    let failed = wait_until(
        "the delivery to be given up",
        Duration::from_secs(20),
        || {
            let s = scrape(&server, None);
            (outbox(&s, "failed") == 1.0).then_some(s)
        },
    );
    assert_eq!(outbox(&failed, "pending"), 0.0);
    assert_eq!(failed.value("heal_outbox_unrouted", &[]), 0.0);
    assert_eq!(
        (gave_up(&failed, "dead"), gave_up(&failed, "quiet")),
        (1.0, 0.0)
    );
}

/// The example scrape config, pointed at `server` with `token_file`, every second.
fn example_scrape_config(server_addr: &str, token_file: &Path) -> String {
    let mut config = std::fs::read_to_string(repo().join("examples/prometheus/prometheus.yml"))
        .expect("examples/prometheus/prometheus.yml");
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_string()),
        (
            "evaluation_interval: 15s",
            "evaluation_interval: 1s".to_string(),
        ),
        (
            "/etc/prometheus/heal.token",
            token_file.display().to_string(),
        ),
        ("heal.example.internal:7878", server_addr.to_string()),
    ] {
        assert!(
            config.contains(from),
            "the example prometheus.yml no longer has {from:?}"
        );
        config = config.replace(from, &to);
    }
    config
}

#[test]
#[ignore = "needs prometheus (apt-get install prometheus); cargo test -- --include-ignored runs it, as .ci/run does"]
fn prometheus_scrapes_heal_with_the_example_config_and_loads_the_example_rules() {
    let test = "prometheus_scrapes_heal_with_the_example_config_and_loads_the_example_rules";
    let Some(bin) = prometheus_tool("prometheus", test) else {
        return;
    };
    let dir = test_dir("metrics-prometheus");
    let server = Server::start(&dir, TOKENS);
    let token_file = dir.join("heal.token");
    std::fs::write(&token_file, READ_TOKEN).unwrap();
    let rules = repo().join("examples/prometheus/heal-rules.yml");
    std::fs::copy(&rules, dir.join("heal-rules.yml")).unwrap();
    let prom = Prometheus::start(&bin, &dir, |_| {
        example_scrape_config(&server.addr, &token_file)
    });
    prom.wait_for("up{job=\"heal\"} == 1", Duration::from_secs(30));
    let info = prom.wait_for("heal_build_info{job=\"heal\"}", Duration::from_secs(10));
    assert_eq!(
        info[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{info:?}"
    );
    prom.wait_for(
        "heal_http_requests_total{route=\"/metrics\", code=\"200\"} > 0",
        Duration::from_secs(10),
    );
    // Every example rule is loaded and evaluates without error on real data.
    let groups = wait_until(
        "the example rules to be evaluated",
        Duration::from_secs(20),
        || {
            let (code, body) = http("GET", &format!("{}/api/v1/rules", prom.url), None, &[]);
            let body: Value = serde_json::from_str(&body).ok()?;
            let groups = body["data"]["groups"].as_array()?.clone();
            let rules: Vec<&Value> = groups
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap())
                .collect();
            (code == 200
                && !rules.is_empty()
                && rules.iter().all(|r| {
                    r["health"] == "ok"
                        && r["lastEvaluation"]
                            .as_str()
                            .is_some_and(|t| !t.starts_with("0001"))
                }))
            .then_some(groups)
        },
    );
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["name"], "heal");
    let names: Vec<&str> = groups[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"HealDown") && names.contains(&"HealBreakerOpen"),
        "{names:?}"
    );
    // A healthy heal raises none of them.
    let firing: Vec<&str> = groups[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "firing")
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(firing.is_empty(), "{firing:?}");
}

/// Runs promtool; panics with its output unless it succeeds.
fn promtool(bin: &Path, args: &[&str]) {
    let out = Command::new(bin).args(args).output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus); cargo test -- --include-ignored runs it, as .ci/run does"]
fn promtool_accepts_the_example_rules_their_tests_and_the_scrape_config() {
    let test = "promtool_accepts_the_example_rules_their_tests_and_the_scrape_config";
    let Some(bin) = prometheus_tool("promtool", test) else {
        return;
    };
    let examples = repo().join("examples/prometheus");
    let rules = examples.join("heal-rules.yml");
    promtool(&bin, &["check", "rules", rules.to_str().unwrap()]);
    let tests = examples.join("heal-rules.test.yml");
    promtool(&bin, &["test", "rules", tests.to_str().unwrap()]);
    // check config also opens the token file, so check a copy that names one.
    let dir = test_dir("metrics-promtool");
    let token_file = dir.join("heal.token");
    std::fs::write(&token_file, READ_TOKEN).unwrap();
    std::fs::copy(&rules, dir.join("heal-rules.yml")).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        example_scrape_config("127.0.0.1:7878", &token_file),
    )
    .unwrap();
    promtool(&bin, &["check", "config", config.to_str().unwrap()]);
}

#[test]
fn the_strict_parser_refuses_what_the_format_or_the_conventions_forbid() {
    let good =
        "# HELP heal_x_total X.\n# TYPE heal_x_total counter\nheal_x_total{a=\"q\\\"\\\\\\n\"} 1\n";
    Scrape::parse(good).unwrap();
    let bad = [
        ("no newline at the end", "# HELP heal_x X.\n# TYPE heal_x gauge\nheal_x 1"),
        ("no HELP", "# TYPE heal_x gauge\nheal_x 1\n"),
        ("no TYPE", "# HELP heal_x X.\nheal_x 1\n"),
        ("counter without _total", "# HELP heal_x X.\n# TYPE heal_x counter\nheal_x 1\n"),
        ("gauge with _total", "# HELP heal_x_total X.\n# TYPE heal_x_total gauge\nheal_x_total 1\n"),
        ("no prefix", "# HELP x X.\n# TYPE x gauge\nx 1\n"),
        ("camel case", "# HELP heal_X X.\n# TYPE heal_X gauge\nheal_X 1\n"),
        ("other family", "# HELP heal_x X.\n# TYPE heal_x gauge\nheal_y 1\n"),
        ("twice", "# HELP heal_x X.\n# TYPE heal_x gauge\nheal_x 1\nheal_x 2\n"),
        ("bad escape", "# HELP heal_x X.\n# TYPE heal_x gauge\nheal_x{a=\"\\t\"} 1\n"),
        ("unquoted", "# HELP heal_x X.\n# TYPE heal_x gauge\nheal_x{a=b} 1\n"),
        ("timestamp", "# HELP heal_x X.\n# TYPE heal_x gauge\nheal_x 1 1700000000\n"),
        (
            "not cumulative",
            "# HELP heal_h X.\n# TYPE heal_h histogram\nheal_h_bucket{le=\"1\"} 2\nheal_h_bucket{le=\"+Inf\"} 1\nheal_h_sum 1\nheal_h_count 1\n",
        ),
        (
            "count is not +Inf",
            "# HELP heal_h X.\n# TYPE heal_h histogram\nheal_h_bucket{le=\"1\"} 1\nheal_h_bucket{le=\"+Inf\"} 2\nheal_h_sum 1\nheal_h_count 3\n",
        ),
        (
            "no +Inf",
            "# HELP heal_h X.\n# TYPE heal_h histogram\nheal_h_bucket{le=\"1\"} 1\nheal_h_sum 1\nheal_h_count 1\n",
        ),
    ];
    for (what, text) in bad {
        assert!(Scrape::parse(text).is_err(), "{what}: accepted {text:?}");
    }
}
