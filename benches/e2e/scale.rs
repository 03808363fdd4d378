//! Scale benches: many agents waiting on one server, and latency under
//! intake load (with a plot). A store of 100,000 events is the dashboard
//! bench's (`events`).
//!
//! - agents: 2,000 simulated agents long-poll one server (each its own
//!   connection, its own agent id) beside one real `heal agent`; the server's
//!   memory and idle CPU with all of them waiting, and alert → step start
//!   latency for the real agent among them.
//! - load: alert → step start latency (p50, p99, p99.9) while other clients
//!   send Alertmanager webhooks at 0, 25, 50 and 75% of the intake rate the
//!   server sustains flat out; writes a table and, with gnuplot, a PNG.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    alert_to_step, bench_dir, cpu_time, drive_intake, get_json, http_agent, intake_body, loadavg,
    ms, post, quantile, start_server, verdict, wait_for, Marks, Proc, MARK_FLAG,
};

/// Simulated agents of the agents bench.
const AGENTS: usize = 2_000;

/// How long each simulated agent's poll waits (s), as `heal agent` asks.
const AGENT_WAIT_SECS: u64 = 25;

/// Latency iterations per measurement (enough for a p99.9).
const ITERATIONS: usize = 1_000;

/// Load levels of the load bench, as fractions of the flat-out intake rate.
const LEVELS: [f64; 4] = [0.0, 0.25, 0.5, 0.75];

/// A config whose rule runs this executable's marker step on the target agent;
/// webhooks of the intake fixture (`DiskSpaceLow`) are discarded.
pub(super) fn config(marks: &std::path::Path) -> String {
    let exe = std::env::current_exe().expect("own executable");
    let step = json!([
        exe.display().to_string(),
        MARK_FLAG,
        marks.display().to_string()
    ]);
    format!(
        r#"
[server]
http_threads = 32

[safety]
max_runs_per_hour = 1000000

[[rule]]
name = "drop-load"
when = "labels.alertname == 'DiskSpaceLow'"
action = "discard"

[[rule]]
name = "bench"
when = "labels.alertname == 'Bench'"
runbook = "bench"
target = "labels.instance"

[runbook.bench]
timeout = "10s"
steps = [ {{ name = "mark", run = {step} }} ]
"#
    )
}

/// Starts `heal agent --id bench` (logging at `log`) against `url` and waits for its poll.
pub(super) fn real_agent(url: &str, dir: &std::path::Path, log: &str) -> Proc {
    let agent = Proc::spawn(
        "heal agent",
        Command::new(env!("CARGO_BIN_EXE_heal"))
            .args([
                "agent",
                "--server",
                url,
                "--id",
                "bench",
                "--concurrency",
                "4",
            ])
            .env("HEAL_LOG", log)
            .env_remove("HEAL_TOKEN")
            .current_dir(dir),
    );
    let http = http_agent(Duration::from_secs(10));
    wait_for(
        "agent bench to poll",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let agents = get_json(&http, &format!("{url}/api/v1/agents"))?;
            agents["agents"]
                .as_array()?
                .iter()
                .any(|a| a["id"] == "bench" && a["polling"] == true)
                .then_some(())
        },
    );
    agent
}

/// Raises this process's open-file limit to its hard limit (2,000 connections need more than 1,024).
pub(super) fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit on this frame.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// One simulated agent: polls as `sim-<n>` until `stop`, each poll its own
/// kept-alive connection; counts polls answered.
pub(super) fn simulated_agent(
    url: String,
    n: usize,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) {
    let http = http_agent(Duration::from_secs(AGENT_WAIT_SECS + 15));
    let poll = format!("{url}/api/v1/agents/sim-{n:04}/poll?capacity=1&wait={AGENT_WAIT_SECS}");
    let hello = json!({
        "instance": format!("sim-{n:04}-{}", std::process::id()),
        "tags": ["sim"],
        "allow": ["none"],
        "version": "bench",
        "hostname": "bench",
    })
    .to_string();
    let mut failures = 0;
    while !stop.load(Ordering::SeqCst) && failures < 100 {
        let (status, _) = post(&http, &poll, hello.as_bytes());
        if status == 200 {
            answered.fetch_add(1, Ordering::Relaxed);
            failures = 0;
        } else {
            failures += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Latencies (ns, sorted) of `n` alerts for the real agent, marks from `first`.
pub(super) fn latencies(url: &str, marks: &mut Marks, first: usize, n: usize) -> Vec<i64> {
    let http = http_agent(Duration::from_secs(30));
    let mut v: Vec<i64> = (first..first + n)
        .map(|i| {
            let s = alert_to_step(&http, url, marks, i, "bench");
            std::thread::sleep(Duration::from_millis(2));
            s.step_started - s.sent
        })
        .collect();
    v.sort_unstable();
    v
}

pub(super) fn print_latency(label: &str, v: &[i64]) {
    println!(
        "  {label:<44} p50 {:>7} ms  p99 {:>7} ms  p99.9 {:>7} ms  max {:>7} ms",
        ms(quantile(v, 0.5)),
        ms(quantile(v, 0.99)),
        ms(quantile(v, 0.999)),
        ms(*v.last().unwrap_or(&0))
    );
}

/// 2,000 agents waiting on one server.
pub fn agents() {
    raise_nofile();
    let dir = bench_dir("agents");
    let marks_path = dir.join("marks.txt");
    let (server, url) = start_server(&dir, &config(&marks_path));
    let agent = real_agent(&url, &dir, "warn");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut pollers = Vec::with_capacity(AGENTS);
    for n in 0..AGENTS {
        let (u, s, a) = (url.clone(), stop.clone(), answered.clone());
        let t = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || simulated_agent(u, n, s, a))
            .expect("start a simulated agent");
        pollers.push(t);
        // A connection burst larger than the listen backlog would only measure SYN retries.
        if n % 100 == 99 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let http = http_agent(Duration::from_secs(30));
    let connected = wait_for(
        "2,000 simulated agents to wait",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || {
            let agents = get_json(&http, &format!("{url}/api/v1/agents"))?;
            let polling = agents["agents"]
                .as_array()?
                .iter()
                .filter(|a| a["polling"] == true)
                .count();
            (polling > AGENTS).then_some(polling)
        },
    );
    let ramp = started.elapsed();
    // Idle: everyone waits; polls end every 25 s and are made again.
    let idle = Duration::from_secs(30);
    let cpu0 = cpu_time(server.pid());
    std::thread::sleep(idle);
    let idle_cpu = (cpu_time(server.pid()) - cpu0).as_secs_f64() / idle.as_secs_f64();
    let (hwm_idle, rss_idle) = server.rss_kib();
    let threads = server.threads();
    let mut marks = Marks::new(marks_path);
    let cpu1 = cpu_time(server.pid());
    let t1 = Instant::now();
    let lat = latencies(&url, &mut marks, 0, ITERATIONS);
    let busy_cpu = (cpu_time(server.pid()) - cpu1).as_secs_f64() / t1.elapsed().as_secs_f64();
    let (hwm, rss) = server.rss_kib();
    let polls = answered.load(Ordering::Relaxed);
    stop.store(true, Ordering::SeqCst);
    let mut server = server;
    server.kill();
    drop(agent);
    for t in pollers {
        let _ = t.join();
    }
    println!();
    println!(
        "agents: {AGENTS} simulated agents long-polling (wait {AGENT_WAIT_SECS} s, one connection each) and one real `heal agent`; {ITERATIONS} alerts for the real one"
    );
    println!(
        "  agents polling at once                       {connected} (all connected in {:.1} s)",
        ramp.as_secs_f64()
    );
    println!("  polls answered to simulated agents           {polls}");
    println!(
        "  server CPU, all waiting ({:.0} s)              {:.3} cores",
        idle.as_secs_f64(),
        idle_cpu
    );
    println!("  server CPU while alerts run                  {busy_cpu:.3} cores");
    println!("  server RSS, all waiting (KiB)                {rss_idle} (peak {hwm_idle})");
    println!("  server RSS at the end (KiB)                  {rss} (peak {hwm})");
    println!("  server threads                               {threads}");
    print_latency("alert -> step start among them", &lat);
    println!(
        "  targets: server RSS < 300 MB {}, alert -> step start p99 < 100 ms {}",
        verdict(hwm < 300 * 1024),
        verdict(quantile(&lat, 0.99) < 100_000_000)
    );
    println!("  loadavg (1 min) at the end: {}", loadavg());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends webhooks at `rate` per second from `threads` kept-alive clients until `stop`.
fn paced_load(url: &str, rate: f64, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<usize>> {
    if rate <= 0.0 {
        return Vec::new();
    }
    let threads = 8;
    let gap = Duration::from_secs_f64(threads as f64 / rate);
    (0..threads)
        .map(|t| {
            let (url, stop) = (format!("{url}/api/v1/alerts/alertmanager"), stop.clone());
            std::thread::spawn(move || {
                let http = http_agent(Duration::from_secs(30));
                let mut next = Instant::now() + gap.mul_f64(t as f64 / threads as f64);
                let mut sent = 0;
                while !stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep(next - now);
                    }
                    next += gap;
                    let (status, _) = post(&http, &url, &intake_body(1000 + t, sent));
                    if status == 200 {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect()
}

/// Latency of alert → step start at several intake loads, and its plot.
pub fn load() {
    let dir = bench_dir("load");
    let marks_path = dir.join("marks.txt");
    let (server, url) = start_server(&dir, &config(&marks_path));
    let (_, flat_out) = drive_intake(&server, &[url.as_str()]);
    let max_rate = flat_out.rps();
    let agent = real_agent(&url, &dir, "warn");
    let mut marks = Marks::new(marks_path);
    let mut rows = Vec::new();
    for (k, level) in LEVELS.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let rate = max_rate * level;
        let load = paced_load(&url, rate, &stop);
        let cpu0 = cpu_time(server.pid());
        let t0 = Instant::now();
        let lat = latencies(&url, &mut marks, k * ITERATIONS, ITERATIONS);
        let secs = t0.elapsed().as_secs_f64();
        let cpu = (cpu_time(server.pid()) - cpu0).as_secs_f64() / secs;
        stop.store(true, Ordering::SeqCst);
        let sent: usize = load.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        rows.push((*level, sent as f64 / secs, cpu, lat));
    }
    let (hwm, _) = server.rss_kib();
    drop(agent);
    drop(server);
    println!();
    println!(
        "load: alert -> step start ({ITERATIONS} alerts each) while other clients send webhooks at a share of the flat-out rate ({max_rate:.0}/s, {} s measured)",
        flat_out.secs
    );
    let mut data = String::from("# load_share webhooks_per_s p50_ms p99_ms p999_ms\n");
    for (level, rate, cpu, lat) in &rows {
        print_latency(
            &format!(
                "{:>3.0}% load ({rate:>5.0} webhooks/s, server {cpu:.2} cores)",
                level * 100.0
            ),
            lat,
        );
        data.push_str(&format!(
            "{:.0} {rate:.0} {} {} {}\n",
            level * 100.0,
            ms(quantile(lat, 0.5)),
            ms(quantile(lat, 0.99)),
            ms(quantile(lat, 0.999))
        ));
    }
    println!("  server peak RSS (KiB)                        {hwm}");
    println!("  loadavg (1 min) at the end: {}", loadavg());
    plot(&data);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes the load bench's table and, if gnuplot is installed, its PNG
/// (`target/bench/latency-vs-load.png`; docs/ holds a copy).
fn plot(data: &str) {
    let out = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let dat = out.join("latency-vs-load.dat");
    std::fs::write(&dat, data).expect("write the plot's data");
    let png = out.join("latency-vs-load.png");
    let script = format!(
        "set terminal png size 800,480\nset output '{}'\nset title 'heal: alert to step start vs. intake load'\nset xlabel 'intake load (% of flat-out rate)'\nset ylabel 'ms'\nset key top left\nset grid\nset xrange [-5:80]\nset yrange [0:*]\nplot '{d}' using 1:3 with linespoints title 'p50', '{d}' using 1:4 with linespoints title 'p99', '{d}' using 1:5 with linespoints title 'p99.9'\n",
        png.display(),
        d = dat.display()
    );
    match Command::new("gnuplot")
        .arg("-e")
        .arg(script.replace('\n', "; "))
        .status()
    {
        Ok(s) if s.success() => println!("  plot: {}", png.display()),
        Ok(s) => println!("  plot: gnuplot failed ({s}); data in {}", dat.display()),
        Err(_) => println!(
            "  plot: SKIPPED, gnuplot is not installed (apt-get install gnuplot-nox); data in {}",
            dat.display()
        ),
    }
}
