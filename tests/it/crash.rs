//! Crash safety: webhooks stream in from several clients while the server
//! is killed with SIGKILL at random moments and restarted on the same port
//! and database (a SQLite file, or PostgreSQL in the `it_postgres` pass). Afterwards every alert answered 2xx must be stored, no
//! event's step may have run twice, and every event must end (finished or
//! `lost`), none left stuck.
//!
//! `HEAL_CRASH_KILLS` sets the number of kills (default 5, as in CI);
//! `HEAL_CRASH_SEED` replays a run's random kill times (each run prints its seed).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    env_number, fixture, http, seed_from_env, test_dir, wait_agent_polling, wait_until, Agent, Rng,
    Server,
};

/// Client threads sending webhooks.
const CLIENTS: usize = 4;

/// How long a client keeps retrying one alert (as Alertmanager does) before it counts it failed.
const RETRY_FOR: Duration = Duration::from_secs(60);

fn config(ran: &Path) -> String {
    format!(
        r#"
[server]
lease = "30s"
kill_grace = "1s"
dispatch_timeout = "20s"
poll_wait = "5s"

[safety]
max_runs_per_hour = 1000000
max_failed_in_row = 1000000

[[rule]]
name = "fix"
when = "labels.alertname == 'CrashTest'"
runbook = "fix"
target = "labels.agent"

[runbook.fix]
timeout = "10s"
steps = [ {{ name = "mark", run = "echo \"$HEAL_EVENT_ID\" >> {}" }} ]
"#,
        ran.display()
    )
}

/// Sends alerts with unique fingerprints until `stop`, each retried until
/// it is answered 2xx; returns the fingerprints acknowledged and those that
/// never were.
fn stream(url: &Mutex<String>, client: usize, stop: &AtomicBool) -> (Vec<String>, Vec<String>) {
    let template: Value =
        serde_json::from_str(&fixture("alertmanager/raw/single_firing.json")).unwrap();
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) && n < 20_000 {
        n += 1;
        let fingerprint = format!("c{client:01x}{n:014x}");
        let mut body = template.clone();
        let alert = &mut body["alerts"][0];
        alert["fingerprint"] = json!(fingerprint);
        alert["labels"]["alertname"] = json!("CrashTest");
        alert["labels"]["agent"] = json!("crash-agent");
        alert["labels"]["instance"] = json!(format!("web-{client}-{n}"));
        let body = body.to_string();
        let started = Instant::now();
        loop {
            let base = url.lock().unwrap().clone();
            let (status, _) = http(
                "POST",
                &format!("{base}/api/v1/alerts/alertmanager"),
                Some(body.as_bytes()),
                &[("Content-Type", "application/json")],
            );
            if (200..300).contains(&status) {
                acked.push(fingerprint);
                break;
            }
            if started.elapsed() > RETRY_FOR {
                failed.push(fingerprint);
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (acked, failed)
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_alert_and_runs_nothing_twice() {
    let kills = env_number("HEAL_CRASH_KILLS", 5) as usize;
    let seed = seed_from_env("HEAL_CRASH_SEED");
    eprintln!("crash harness: {kills} kills, HEAL_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = test_dir("crash");
    let ran = dir.join("ran.log");
    let config = config(&ran);
    let mut server = Server::start(&dir, &config);
    let listen = server.addr.clone();
    let url = Mutex::new(server.url.clone());
    let agent = Agent::start(&server.url, "crash-agent", &["--allow", "fix"]);
    wait_agent_polling(&server, "crash-agent");
    let stop = AtomicBool::new(false);
    let (acked, failed) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (url, stop) = (&url, &stop);
                s.spawn(move || stream(url, c, stop))
            })
            .collect();
        for k in 0..kills {
            std::thread::sleep(Duration::from_millis(rng.between(150, 1200)));
            server.kill();
            // Down for a moment: clients see refused connections and retry.
            std::thread::sleep(Duration::from_millis(rng.between(0, 300)));
            server = Server::start_with(&dir, &config, &listen, &[]);
            assert_eq!(server.addr, listen, "restart {k} moved to another port");
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let (mut acked, mut failed) = (Vec::new(), Vec::new());
        for c in clients {
            let (a, f) = c.join().expect("client thread");
            acked.extend(a);
            failed.extend(f);
        }
        (acked, failed)
    });
    assert!(
        failed.is_empty(),
        "{} alerts never acknowledged: {failed:?}",
        failed.len()
    );
    assert!(
        acked.len() >= 20,
        "only {} alerts acknowledged",
        acked.len()
    );

    // Every event ends: finished, or lost once its lease or dispatch time passed.
    wait_until("every event to end", Duration::from_secs(90), || {
        (server.store_query("SELECT count(*) FROM event WHERE ended_at IS NULL")[0] == "0")
            .then_some(())
    });
    let events: Vec<(i64, String)> = server
        .store_query("SELECT id || ' ' || state FROM event")
        .iter()
        .map(|row| {
            let (id, state) = row.split_once(' ').expect("id and state");
            (id.parse().expect("an id"), state.to_string())
        })
        .collect();
    let stored: HashSet<String> = server
        .store_query("SELECT fingerprint FROM alert")
        .into_iter()
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|f| !stored.contains(*f)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged alerts are not stored: {lost:?}",
        lost.len(),
        acked.len()
    );

    let marks = std::fs::read_to_string(&ran).unwrap_or_default();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in marks.lines() {
        *runs.entry(line).or_default() += 1;
    }
    let twice: Vec<(&&str, &usize)> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "steps that ran more than once: {twice:?}");

    let mut by_state: HashMap<&str, usize> = HashMap::new();
    for (_, state) in &events {
        *by_state.entry(state.as_str()).or_default() += 1;
    }
    // A succeeded event's step ran exactly once.
    for (id, _) in events.iter().filter(|(_, state)| state == "succeeded") {
        assert_eq!(
            runs.get(id.to_string().as_str()),
            Some(&1),
            "event {id} succeeded"
        );
    }
    eprintln!(
        "crash harness: {kills} kills, {} alerts acknowledged and stored, {} events {by_state:?}, {} steps ran, none twice",
        acked.len(),
        events.len(),
        runs.len(),
    );
    drop(agent);
}
