//! The dashboard bench: every page's time to answer with 10,000 events in the
//! store, logged in with a session cookie, as a person's browser asks.
//!
//! The store is filled through the API as heal fills it in use: 10,000
//! alerts decided by a dry-run rule (each its own event, 9,900 of them then
//! resolved and so ended, 100 still open), a few events waiting for
//! approval, and live runs on a real `heal agent` with 2 KB of output each.
//! Every notification goes to a webhook receiver that answers at once, so
//! each event has its deliveries; measuring starts once the outbox is empty.
//! Then each page is fetched `PAGE_SAMPLES` times in a row after
//! `PAGE_WARMUP`, one request at a time on a kept-alive connection; the time
//! is the whole request as the client sees it (loopback).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    answering_receiver, bench_dir, http_agent, loadavg, ms, quantile, start_server, verdict,
    wait_for, Proc,
};

const STILL_OPEN: usize = 100;
const LIVE_RUNS: usize = 200;
const WAITING: usize = 20;
const BATCH: usize = 200;
const PAGE_WARMUP: usize = 5;
const PAGE_SAMPLES: usize = 50;
/// The bar each page must clear (p99).
const TARGET_MS: i64 = 50;
/// The bar an alert looked up by fingerprint or name must clear (p99, µs).
const LOOKUP_TARGET_US: i64 = 2_000;
const ADMIN: &str = "bench-admin-secret-0123456789";

fn config(hook: &str) -> String {
    format!(
        r#"
[channel.hook]
webhook = {{ url = "{hook}" }}
rate_limit = "off"

[[notify]]
when = "kind != 'test'"
channels = ["hook"]
[server]
poll_wait = "5s"

[safety]
max_runs_per_hour = 100000
max_failed_in_row = 100000

[[token]]
name = "bench-admin"
scopes = ["admin", "agent"]
secret = "{ADMIN}"

[[rule]]
name = "bulk"
when = "labels.alertname == 'Bulk'"
runbook = "clean"
target = "'bench'"
mode = "dry-run"

[[rule]]
name = "careful"
when = "labels.alertname == 'Careful'"
runbook = "clean"
target = "'bench'"
approve = true

[[rule]]
name = "live"
when = "labels.alertname == 'Live'"
runbook = "clean"
target = "'bench'"

[runbook.clean]
steps = [ {{ name = "clean", run = "head -c 1500 /dev/zero | tr '\\0' x; echo; echo cleaned $HEAL_LABEL_N" }} ]

[[heartbeat]]
name = "backup"
every = "1h"
"#
    )
}

/// POSTs one batch of alerts as the admin.
fn fire(http: &ureq::Agent, url: &str, alerts: Vec<Value>) {
    let body = Value::Array(alerts).to_string();
    let answer = http
        .post(&format!("{url}/api/v1/alerts"))
        .header("Content-Type", "application/json")
        .header("Authorization", &format!("Bearer {ADMIN}"))
        .send(body.as_bytes());
    match answer {
        Ok(r) if r.status() == 200 => {}
        Ok(r) => panic!("filling the store: {}", r.status()),
        Err(e) => panic!("filling the store: {e}"),
    }
}

fn alert(name: &str, n: usize, status: &str) -> Value {
    json!({ "name": name, "status": status, "labels": { "n": n.to_string(), "instance": format!("host-{}", n % 50) } })
}

/// Fills the store; returns (an old ended event, a live event with output).
fn fill(http: &ureq::Agent, url: &str, events: usize) -> (i64, i64) {
    for start in (0..events).step_by(BATCH) {
        fire(
            http,
            url,
            (start..start + BATCH)
                .map(|n| alert("Bulk", n, "firing"))
                .collect(),
        );
    }
    for start in (0..events - STILL_OPEN).step_by(BATCH) {
        fire(
            http,
            url,
            (start..start + BATCH)
                .map(|n| alert("Bulk", n, "resolved"))
                .collect(),
        );
    }
    fire(
        http,
        url,
        (0..WAITING)
            .map(|n| alert("Careful", n, "firing"))
            .collect(),
    );
    for start in (0..LIVE_RUNS).step_by(50) {
        fire(
            http,
            url,
            (start..start + 50)
                .map(|n| alert("Live", n, "firing"))
                .collect(),
        );
    }
    let admin = format!("Bearer {ADMIN}");
    let events = |query: &str| -> Vec<Value> {
        let mut r = http
            .get(&format!("{url}/api/v1/events?{query}"))
            .header("Authorization", &admin)
            .call()
            .expect("list events");
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null);
        v["events"].as_array().cloned().unwrap_or_default()
    };
    wait_for(
        "the live runs to end",
        Duration::from_secs(300),
        Duration::from_millis(250),
        || {
            events("rule=live&open=true&limit=1")
                .is_empty()
                .then_some(())
        },
    );
    let live = events("rule=live&limit=1")[0]["id"]
        .as_i64()
        .expect("a live event");
    let old = events("rule=bulk&state=dry_run&before=100&limit=1")[0]["id"]
        .as_i64()
        .expect("an old event");
    (old, live)
}

/// The fingerprint of the newest resolved alert, for the lookups.
fn one_fingerprint(http: &ureq::Agent, url: &str, bearer: &str) -> String {
    let mut r = http
        .get(&format!("{url}/api/v1/alerts?status=resolved&limit=1"))
        .header("Authorization", bearer)
        .call()
        .expect("list alerts");
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
        .unwrap_or(Value::Null);
    v["alerts"][0]["fingerprint"]
        .as_str()
        .expect("a resolved alert")
        .to_string()
}

/// Logs in through the form and returns the session cookie.
fn login(url: &str) -> String {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let r = http
        .post(&format!("{url}/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Origin", url)
        .send(format!("token={ADMIN}&next=%2F").as_bytes())
        .expect("log in");
    assert_eq!(r.status(), 303, "login");
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie");
    cookie.split(';').next().unwrap_or_default().to_string()
}

/// Times one page: `PAGE_SAMPLES` GETs after `PAGE_WARMUP`, with header
/// `auth` (the session cookie, or a bearer token for an API route); sorted
/// ns and the size.
fn time_page(http: &ureq::Agent, url: &str, path: &str, auth: (&str, &str)) -> (Vec<i64>, usize) {
    let mut samples = Vec::with_capacity(PAGE_SAMPLES);
    let mut bytes = 0;
    for i in 0..PAGE_WARMUP + PAGE_SAMPLES {
        let t = Instant::now();
        let mut r = http
            .get(&format!("{url}{path}"))
            .header(auth.0, auth.1)
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default();
        let took = t.elapsed().as_nanos() as i64;
        assert_eq!(r.status(), 200, "GET {path}: {body}");
        assert!(!body.contains("<h1>Log in"), "GET {path}: not logged in");
        bytes = body.len();
        if i >= PAGE_WARMUP {
            samples.push(took);
        }
    }
    samples.sort_unstable();
    (samples, bytes)
}

/// The dashboard's pages with `events` events in the store; with `api`, the
/// main API reads too (the `events` bench: 100,000 events).
pub fn dashboard(events: usize, api: bool) {
    let dir = bench_dir("dashboard");
    let stop = Arc::new(AtomicBool::new(false));
    let (hook, receiver) = answering_receiver(stop.clone());
    let (server, url) = start_server(&dir, &config(&hook));
    let _agent = Proc::spawn(
        "heal agent",
        Command::new(env!("CARGO_BIN_EXE_heal"))
            .args([
                "agent",
                "--server",
                &url,
                "--id",
                "bench",
                "--concurrency",
                "8",
            ])
            .env("HEAL_LOG", "warn")
            .env("HEAL_TOKEN", ADMIN)
            .current_dir(&dir),
    );
    let http = http_agent(Duration::from_secs(60));
    wait_for(
        "agent bench to poll",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let mut r = http
                .get(&format!("{url}/api/v1/agents"))
                .header("Authorization", &format!("Bearer {ADMIN}"))
                .call()
                .ok()?;
            let agents: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
            agents["agents"]
                .as_array()?
                .iter()
                .any(|a| a["id"] == "bench" && a["polling"] == true)
                .then_some(())
        },
    );
    let started = Instant::now();
    let (old, live) = fill(&http, &url, events);
    let sent = wait_for(
        "the outbox to empty",
        Duration::from_secs(300),
        Duration::from_millis(250),
        || {
            let mut r = http
                .get(&format!("{url}/api/v1/outbox?limit=1"))
                .header("Authorization", &format!("Bearer {ADMIN}"))
                .call()
                .ok()?;
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
            let c = &v["counts"];
            (c["pending"] == 0 && c["unrouted"] == 0).then(|| c["sent"].as_i64().unwrap_or(0))
        },
    );
    let filled = started.elapsed();
    let cookie = login(&url);
    let pages = [
        "/".to_string(),
        "/events".into(),
        "/events?state=open".into(),
        "/events?state=succeeded".into(),
        "/events?runbook=clean&since=24h".into(),
        "/events?rule=careful".into(),
        "/events?target=bench".into(),
        format!("/events?before={}", events / 2),
        format!("/events/{live}"),
        format!("/events/{old}"),
        "/agents".into(),
        "/heartbeats".into(),
        "/heartbeats/backup".into(),
        "/probes".into(),
        "/pauses".into(),
        "/runbooks".into(),
        "/audit".into(),
    ];
    println!();
    println!(
        "dashboard: each page {PAGE_SAMPLES} times after {PAGE_WARMUP} warm-up, logged in, {events} events + {WAITING} waiting + {LIVE_RUNS} live runs and {sent} notifications delivered in the store (filled in {:.1} s)",
        filled.as_secs_f64()
    );
    println!(
        "  {:<40} {:>8} {:>8} {:>8} {:>9}",
        "ms", "p50", "p99", "max", "KiB"
    );
    let mut worst = 0;
    let mut worst_lookup = 0;
    let bearer = format!("Bearer {ADMIN}");
    let fingerprint = one_fingerprint(&http, &url, &bearer);
    // The lookups held to the target: one alert, and a name's 20 alerts.
    // A name's 100 alerts (`Bulk`) are listed beside them: what they cost
    // is what any 100 alerts listed cost (`?limit=100`), each with its
    // decisions, not the lookup.
    let lookups = [
        format!("/api/v1/alerts?fingerprint={fingerprint}"),
        "/api/v1/alerts?name=Careful&limit=100".into(),
    ];
    let api_reads = [
        "/api/v1/events?limit=100".to_string(),
        "/api/v1/events?state=dry_run&limit=100".into(),
        "/api/v1/events?rule=bulk&limit=20".into(),
        format!("/api/v1/events/{old}"),
        format!("/api/v1/events/{live}"),
        "/api/v1/alerts?limit=100".into(),
        "/api/v1/decisions?since=1h&limit=100".into(),
        "/api/v1/context".into(),
        "/api/v1/outbox?limit=100".into(),
        "/metrics".into(),
        lookups[0].clone(),
        lookups[1].clone(),
        "/api/v1/alerts?name=Bulk&limit=100".into(),
    ];
    let timed = pages
        .iter()
        .map(|p| (p, ("Cookie", cookie.as_str())))
        .chain(
            api_reads
                .iter()
                .filter(|_| api)
                .map(|p| (p, ("Authorization", bearer.as_str()))),
        );
    for (path, auth) in timed {
        let page = auth.0 == "Cookie";
        if !page && path == &api_reads[0] {
            println!("  API reads (bearer token; not held to the page target):");
        }
        let (samples, bytes) = time_page(&http, &url, path, auth);
        let p99 = quantile(&samples, 0.99);
        if page {
            worst = worst.max(p99);
        }
        if lookups.contains(path) {
            worst_lookup = worst_lookup.max(p99);
        }
        println!(
            "  {:<40} {:>8} {:>8} {:>8} {:>9.1}",
            path,
            ms(quantile(&samples, 0.5)),
            ms(p99),
            ms(*samples.last().expect("samples")),
            bytes as f64 / 1024.0
        );
    }
    println!(
        "  target: every page p99 < {TARGET_MS} ms {}",
        verdict(worst < TARGET_MS * 1_000_000)
    );
    if api {
        println!(
            "  target: an alert by fingerprint, a name's {WAITING} alerts, p99 < {} ms {}",
            LOOKUP_TARGET_US as f64 / 1000.0,
            verdict(worst_lookup < LOOKUP_TARGET_US * 1_000)
        );
    }
    let (hwm, _) = server.rss_kib();
    println!(
        "  peak RSS: server {hwm} KiB; loadavg (1 min) at the end: {}",
        loadavg()
    );
    stop.store(true, Ordering::SeqCst);
    let _ = receiver.join();
    let _ = std::fs::remove_dir_all(&dir);
}
