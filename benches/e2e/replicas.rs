//! Two servers on one PostgreSQL database (a throwaway cluster, as the
//! integration tests start it):
//!
//! - alert → step start across servers: the alert is posted to A, the real
//!   `heal agent` polls B, so the op reaches it through LISTEN/NOTIFY;
//!   beside it the same within B, for comparison;
//! - 4,000 simulated agents long-polling, 2,000 on each server, beside the
//!   real one: each server's memory and idle CPU with all of them waiting,
//!   and the cross-server latency again among them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::scale::{config, latencies, print_latency, raise_nofile, real_agent, simulated_agent};
use super::{
    bench_dir, cpu_time, get_json, http_agent, loadavg, ms, pg_cluster, quantile, start_server_on,
    verdict, wait_for, Marks, Proc,
};

/// Latency iterations per measurement.
const ITERATIONS: usize = 1_000;

/// Simulated agents on each server.
const AGENTS_EACH: usize = 2_000;

pub fn replicas() {
    raise_nofile();
    let Some(pg) = pg_cluster::start("replicas-bench") else {
        return;
    };
    let dir = bench_dir("replicas");
    let marks_path = dir.join("marks.txt");
    let config = config(&marks_path);
    let start = |name: &str| -> (Proc, String, PathBuf) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("create a server's dir");
        let (p, url) = start_server_on(&d, &config, pg.url.as_ref());
        (p, url, d)
    };
    let (a, url_a, _) = start("a");
    let (b, url_b, _) = start("b");
    let agent = real_agent(&url_b, &dir, "warn");
    let mut marks = Marks::new(marks_path);
    // Warm-up, then across (posted to A) and within (posted to B).
    let _ = latencies(&url_a, &mut marks, 0, 20);
    let across = latencies(&url_a, &mut marks, 20, ITERATIONS);
    let within = latencies(&url_b, &mut marks, 20 + ITERATIONS, ITERATIONS / 2);
    let mut next = 20 + ITERATIONS + ITERATIONS / 2;

    // 4,000 simulated agents, half on each server.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut pollers = Vec::with_capacity(2 * AGENTS_EACH);
    for n in 0..2 * AGENTS_EACH {
        let url = if n < AGENTS_EACH { &url_a } else { &url_b };
        let (u, s, c) = (url.clone(), stop.clone(), answered.clone());
        let t = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || simulated_agent(u, n, s, c))
            .expect("start a simulated agent");
        pollers.push(t);
        if n % 100 == 99 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let http = http_agent(Duration::from_secs(30));
    let polling = |url: &str| -> Option<usize> {
        let agents = get_json(&http, &format!("{url}/api/v1/agents"))?;
        Some(
            agents["agents"]
                .as_array()?
                .iter()
                .filter(|a| a["polling"] == true)
                .count(),
        )
    };
    let connected = wait_for(
        "4,000 simulated agents to wait",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || {
            let (on_a, on_b) = (polling(&url_a)?, polling(&url_b)?);
            (on_a >= AGENTS_EACH && on_b > AGENTS_EACH).then_some(on_a + on_b)
        },
    );
    let ramp = started.elapsed();
    let idle = Duration::from_secs(30);
    let cpu0 = (cpu_time(a.pid()), cpu_time(b.pid()));
    std::thread::sleep(idle);
    let idle_cpu =
        |now: Duration, before: Duration| (now - before).as_secs_f64() / idle.as_secs_f64();
    let idle_cpu = (
        idle_cpu(cpu_time(a.pid()), cpu0.0),
        idle_cpu(cpu_time(b.pid()), cpu0.1),
    );
    let rss_idle = (a.rss_kib(), b.rss_kib());
    let loaded = latencies(&url_a, &mut marks, next, ITERATIONS);
    next += ITERATIONS;
    let hwm = (a.rss_kib().0, b.rss_kib().0);
    let polls = answered.load(Ordering::Relaxed);
    stop.store(true, Ordering::SeqCst);
    let (mut a, mut b) = (a, b);
    a.kill();
    b.kill();
    drop(agent);
    for t in pollers {
        let _ = t.join();
    }
    println!();
    println!(
        "replicas: two servers on one PostgreSQL; the real `heal agent` polls B; {ITERATIONS} alerts per row ({next} in all)"
    );
    print_latency("alert to A -> step start (agent on B)", &across);
    print_latency("alert to B -> step start (agent on B)", &within);
    println!(
        "  with {AGENTS_EACH} simulated agents waiting on each server ({connected} polling, all in {:.1} s, {polls} polls answered):",
        ramp.as_secs_f64()
    );
    print_latency("alert to A -> step start (agent on B)", &loaded);
    println!(
        "  server CPU, all waiting ({:.0} s)              A {:.3}, B {:.3} cores",
        idle.as_secs_f64(),
        idle_cpu.0,
        idle_cpu.1
    );
    println!(
        "  server RSS, all waiting (KiB)                A {} (peak {}), B {} (peak {})",
        rss_idle.0 .1, rss_idle.0 .0, rss_idle.1 .1, rss_idle.1 .0
    );
    println!(
        "  server peak RSS at the end (KiB)             A {}, B {}",
        hwm.0, hwm.1
    );
    println!(
        "  targets: across servers p50 <= 10 ms {} ({} ms), p99 <= 30 ms {} ({} ms); each server's RSS < 300 MB with 2,000 agents {}",
        verdict(quantile(&across, 0.5) <= 10_000_000),
        ms(quantile(&across, 0.5)),
        verdict(quantile(&across, 0.99) <= 30_000_000),
        ms(quantile(&across, 0.99)),
        verdict(hwm.0.max(hwm.1) < 300 * 1024)
    );
    println!("  loadavg (1 min) at the end: {}", loadavg());
    let _ = std::fs::remove_dir_all(&dir);
}
