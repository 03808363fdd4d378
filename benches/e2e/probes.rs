//! The probes bench: 1,000 probes of mixed kinds run by the server (tcp,
//! http, command, disk) and 200 run on ten real `heal agent` processes
//! (`on`, 20 each, the same kinds), all every 10 s, against a TCP listener
//! and an HTTP server of the bench's own on 127.0.0.1.
//!
//! What it reads comes from the server's own `/metrics`: the scheduler's
//! rounds (`heal_scheduler_round_seconds`, the longest since start), the runs
//! recorded and the due runs skipped, on the server and on agents. Targets:
//! the longest round < 50 ms, no due run skipped, and about one run per
//! probe every 10 s (first runs included). Also the server's CPU and RSS.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{bench_dir, cpu_time, http_agent, start_server, verdict, wait_for, Proc};

const SERVER_PROBES: usize = 1_000;
const AGENTS: usize = 10;
const AGENT_PROBES: usize = 200;
const EVERY: Duration = Duration::from_secs(10);
/// How long the probes run once every agent polls.
const RUN_FOR: Duration = Duration::from_secs(35);
const MAX_ROUND: Duration = Duration::from_millis(50);

/// The kind of probe `i`, as a TOML inline table (tcp, http, command, disk).
fn kind(i: usize, tcp: &str, http: &str) -> String {
    match i % 4 {
        0 => format!("tcp = {{ addr = \"{tcp}\" }}"),
        1 => {
            format!("http = {{ url = \"{http}/health\", status = [200], body_contains = \"ok\" }}")
        }
        2 => "command = { run = \"true\" }".to_string(),
        _ => "disk = { path = \"/\", max_used = \"100%\" }".to_string(),
    }
}

fn config(tcp: &str, http: &str) -> String {
    let mut c = String::from(
        "[server]\npoll_wait = \"20s\"\nagent_down_after = \"60s\"\n\n[safety]\nmax_runs_per_hour = 1000000\n",
    );
    let every = EVERY.as_secs();
    for i in 0..SERVER_PROBES {
        c.push_str(&format!(
            "\n[[probe]]\nname = \"server-{i:04}\"\nevery = \"{every}s\"\ntimeout = \"5s\"\n{}\n",
            kind(i, tcp, http)
        ));
    }
    for i in 0..AGENT_PROBES {
        c.push_str(&format!(
            "\n[[probe]]\nname = \"agent-{i:03}\"\nevery = \"{every}s\"\ntimeout = \"5s\"\non = \"'bench-{}'\"\n{}\n",
            i % AGENTS,
            kind(i, tcp, http)
        ));
    }
    c
}

/// A TCP listener that accepts and closes, and an HTTP server that answers
/// every request `200 ok`; their addresses. They stop with `stop`.
fn targets(stop: &Arc<AtomicBool>) -> (String, String) {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind the tcp target");
    let http = TcpListener::bind("127.0.0.1:0").expect("bind the http target");
    let addrs = (
        tcp.local_addr().unwrap().to_string(),
        format!("http://{}", http.local_addr().unwrap()),
    );
    for (listener, answer) in [(tcp, false), (http, true)] {
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) if answer => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf);
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
    }
    addrs
}

/// A sample's value from a Prometheus text exposition (`name` with its
/// labels written as they appear, e.g. `heal_probe_runs_total{on="agent"}`).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in /metrics"))
}

fn scrape(url: &str) -> String {
    let http = http_agent(Duration::from_secs(10));
    let mut resp = http
        .get(&format!("{url}/metrics"))
        .call()
        .expect("GET /metrics");
    resp.body_mut().read_to_string().expect("read /metrics")
}

fn start_agent(dir: &Path, url: &str, id: &str) -> Proc {
    let state = dir.join(id);
    std::fs::create_dir_all(&state).expect("agent dir");
    Proc::spawn(
        "heal agent",
        Command::new(env!("CARGO_BIN_EXE_heal"))
            .args(["agent", "--server", url, "--id", id])
            .env("HEAL_LOG", "warn")
            .current_dir(&state),
    )
}

pub fn probes() {
    println!(
        "\n== probes: {SERVER_PROBES} on the server, {AGENT_PROBES} on {AGENTS} agents, every {} s, for {} s ==",
        EVERY.as_secs(),
        RUN_FOR.as_secs()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (tcp, http) = targets(&stop);
    let dir = bench_dir("probes");
    let (server, url) = start_server(&dir, &config(&tcp, &http));
    let agents: Vec<Proc> = (0..AGENTS)
        .map(|i| start_agent(&dir, &url, &format!("bench-{i}")))
        .collect();
    let api = http_agent(Duration::from_secs(10));
    wait_for(
        "every agent to poll",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let list = super::get_json(&api, &format!("{url}/api/v1/agents"))?;
            let n = list["agents"].as_array()?.len();
            (n == AGENTS).then_some(())
        },
    );
    let started = Instant::now();
    let cpu_before = cpu_time(server.pid());
    std::thread::sleep(RUN_FOR);
    let elapsed = started.elapsed();
    let cpu = cpu_time(server.pid()) - cpu_before;
    let text = scrape(&url);
    let (rss_peak, rss) = server.rss_kib();
    for line in server
        .logs()
        .lines()
        .filter(|l| l.contains("scheduler: a round took"))
    {
        println!("server log: {line}");
    }
    stop.store(true, Ordering::SeqCst);
    drop(agents);
    drop(server);

    let runs = |on: &str| metric(&text, &format!("heal_probe_runs_total{{on=\"{on}\"}}"));
    let skipped = |on: &str| {
        metric(
            &text,
            &format!("heal_probe_runs_skipped_total{{on=\"{on}\"}}"),
        )
    };
    let rounds = metric(&text, "heal_scheduler_round_seconds_count");
    let round_sum = metric(&text, "heal_scheduler_round_seconds_sum");
    let round_max = Duration::from_secs_f64(metric(&text, "heal_scheduler_round_max_seconds"));
    // Each probe runs at once, then every EVERY: about this many by now.
    let due = |n: usize| n as f64 * (1.0 + (elapsed.as_secs_f64() / EVERY.as_secs_f64()).floor());
    let (server_runs, agent_runs) = (runs("server"), runs("agent"));
    let skipped_all = skipped("server") + skipped("agent");
    println!(
        "scheduler: {rounds} rounds, mean {:.2} ms, longest {:.2} ms (target < {} ms): {}",
        round_sum / rounds.max(1.0) * 1e3,
        round_max.as_secs_f64() * 1e3,
        MAX_ROUND.as_millis(),
        verdict(round_max < MAX_ROUND)
    );
    println!(
        "runs recorded: server {server_runs} of about {} due, agents {agent_runs} of about {} due; skipped: server {}, agents {} (target 0): {}",
        due(SERVER_PROBES),
        due(AGENT_PROBES),
        skipped("server"),
        skipped("agent"),
        verdict(skipped_all == 0.0)
    );
    println!(
        "server: CPU {:.1}% of one core over {:.0} s, RSS {:.1} MiB (peak {:.1} MiB)",
        cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        elapsed.as_secs_f64(),
        rss as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    // Bounds, not targets: a run lost in between would show here.
    assert!(
        server_runs >= due(SERVER_PROBES) * 0.9 && agent_runs >= due(AGENT_PROBES) * 0.9,
        "runs recorded: server {server_runs}, agents {agent_runs}"
    );
}
