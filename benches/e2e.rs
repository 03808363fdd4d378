//! End-to-end benchmarks of the real, optimized `heal` binary.
//!
//! `cargo bench --bench e2e` runs them all; `cargo bench --bench e2e -- latency`
//! (or `-- intake`, `-- ping`, `-- dashboard`, `-- sweep`) runs the benches whose name
//! contains an argument.
//!
//! - latency: alert POST → the runbook step's process starts, through a
//!   separate `heal agent` that is idle and long-polling.
//! - intake: sustained Alertmanager webhooks from many keep-alive clients,
//!   every answer a durable 200.
//! - intake-pg: the same with the store in a PostgreSQL cluster of its own
//!   (Debian's `postgresql`, durable commits), one server, then two.
//! - ping: sustained heartbeat pings (`POST /ping/<name>`, a small body) to
//!   100 heartbeats from many keep-alive clients; every answer must be a 200
//!   and every 200 a counted, stored ping (else the bench fails).
//! - dashboard: every page of the dashboard with 10,000 events in the store,
//!   logged in (`e2e/dashboard.rs`).
//! - sweep: the scheduler's once-a-second sweep of 10,000 heartbeats (half
//!   `every`, half `cron` in Europe/Berlin) from the config file, as its own
//!   `last_sweep.micros` tells it, and the server's CPU and memory at idle.
//!   `last_sweep` is read by listing all heartbeats just after a sweep has
//!   ended; what that listing costs (time, memory) is reported too.
//! - agents, load (`e2e/scale.rs`): 2,000 agents long-polling one server;
//!   latency under 0–75% intake load, with a plot.
//! - events: the dashboard bench with 100,000 events, and the main API reads,
//!   among them an alert by fingerprint and by name.
//! - probes (`e2e/probes.rs`): 1,000 probes of mixed kinds on the server and
//!   200 on ten agents, every 10 s: the scheduler's rounds, runs and skips.
//! - replicas (`e2e/replicas.rs`): two servers on one PostgreSQL: alert →
//!   step start with the alert posted to one and the agent polling the
//!   other; 4,000 agents long-polling, 2,000 on each.
//!
//! Every server and agent is started on 127.0.0.1 port 0 in a fresh temp
//! dir, and killed and reaped by its own pid at the end (also on panic).
//! Every loop is bounded in count and in time. Results go to stdout.
//!
//! The step of the latency bench is this very executable, run as
//! `e2e --heal-bench-mark FILE`: its first act is to read CLOCK_REALTIME and
//! append `$HEAL_LABEL_N <ns>` to FILE, so "step start" is the moment the
//! step's own code runs. The cost of starting that process is measured on
//! its own (spawned directly) and reported, so it can be subtracted. The
//! stages in between come from the timestamps of the server's decision log
//! line and the agent's "running runbook" line (same clock).
//!
//! Diagnostics: `HEAL_BENCH_LOG=warn` runs the server at that log level (to
//! see what logging costs); the bench then picks the port itself.
//! `HEAL_BENCH_CLIENTS=N` sets the number of client threads of intake and
//! ping (by default 32 and 16).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

#[path = "e2e/dashboard.rs"]
mod dashboard;
/// Throwaway PostgreSQL clusters, as the integration tests start them.
#[path = "../tests/it/support/postgres.rs"]
#[allow(dead_code)]
mod pg_cluster;
#[path = "e2e/probes.rs"]
mod probes;
#[path = "e2e/replicas.rs"]
mod replicas;
#[path = "e2e/scale.rs"]
mod scale;

/// The flag that turns this executable into the latency bench's step.
const MARK_FLAG: &str = "--heal-bench-mark";

/// The Alertmanager notification every intake request is made from.
const FIXTURE: &str = include_str!("../tests/fixtures/alertmanager/raw/single_firing.json");

const LATENCY_WARMUP: usize = 20;
const LATENCY_ITERATIONS: usize = 300;
const BASELINE_ITERATIONS: usize = 100;

const INTAKE_THREADS: usize = 32;
const INTAKE_WARMUP: Duration = Duration::from_secs(1);
const INTAKE_DURATION: Duration = Duration::from_secs(10);
/// Upper bound on requests per client thread, whatever the speed.
const INTAKE_MAX_PER_THREAD: usize = 500_000;

const PING_HEARTBEATS: usize = 100;
/// 16 and 32 were tried on 2 cores: 16 gave more pings/s (5.6k-7.1k against
/// 4.7k-5.6k) at a third of the p99 latency.
const PING_THREADS: usize = 16;
const PING_BODY: &[u8] = b"ok";
const PING_WARMUP: Duration = Duration::from_secs(1);
const PING_DURATION: Duration = Duration::from_secs(10);
const PING_MAX_PER_THREAD: usize = 1_000_000;

const SWEEP_HEARTBEATS: usize = 10_000;
/// Distinct sweeps sampled, about one a second.
const SWEEP_SAMPLES: usize = 10;
/// The window with no requests in which idle CPU is measured.
const SWEEP_IDLE: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(MARK_FLAG) {
        let at = now_ns();
        std::process::exit(mark(args.get(2).map(String::as_str), at));
    }
    let filters: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    print_machine();
    let mut ran = false;
    if wanted("latency") {
        latency();
        ran = true;
    }
    if wanted("intake") {
        intake();
        ran = true;
    }
    if wanted("notify") {
        notify_intake();
        ran = true;
    }
    if wanted("ping") {
        ping();
        ran = true;
    }
    if wanted("dashboard") {
        dashboard::dashboard(10_000, false);
        ran = true;
    }
    if wanted("sweep") {
        sweep(false);
        sweep(true);
        ran = true;
    }
    if wanted("agents") {
        scale::agents();
        ran = true;
    }
    if wanted("load") {
        scale::load();
        ran = true;
    }
    if wanted("events") {
        dashboard::dashboard(100_000, true);
        ran = true;
    }
    if wanted("intake-pg") {
        intake_postgres();
        ran = true;
    }
    if wanted("probes") {
        probes::probes();
        ran = true;
    }
    if wanted("replicas") {
        replicas::replicas();
        ran = true;
    }
    if !ran {
        eprintln!("no bench matches {filters:?} (benches: latency, intake, intake-pg, notify, ping, dashboard, sweep, agents, load, events, probes, replicas)");
        std::process::exit(2);
    }
}

// ---- helpers ----------------------------------------------------------------

/// CLOCK_REALTIME in nanoseconds.
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as i64
}

/// The step of the latency bench: appends "$HEAL_LABEL_N AT" to `file` in one write.
fn mark(file: Option<&str>, at: i64) -> i32 {
    let Some(file) = file else {
        eprintln!("{MARK_FLAG} needs a file");
        return 2;
    };
    let n = std::env::var("HEAL_LABEL_N").unwrap_or_else(|_| "?".into());
    let line = format!("{n} {at}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{file}: {e}");
            1
        }
    }
}

fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = field_kib(&meminfo, "MemTotal:");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpus} cpus ({model}), {:.1} GiB, kernel {}, loadavg {}",
        mem_kib as f64 / 1048576.0,
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// A `Key:   123 kB` field of a /proc file, in KiB.
fn field_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User+system CPU time a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    stat_cpu_time(&format!("/proc/{pid}/stat"))
}

/// User+system CPU time from a /proc `stat` file (of a process or of one thread).
fn stat_cpu_time(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing paren are fixed.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // After ")": state is field 3 (index 0), utime field 14 (index 11), stime field 15 (index 12).
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// CPU time of each thread of a process, by thread id.
fn thread_cpu_times(pid: u32) -> HashMap<u64, Duration> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| {
            let tid: u64 = t.file_name().to_str()?.parse().ok()?;
            Some((tid, stat_cpu_time(&format!("/proc/{pid}/task/{tid}/stat"))))
        })
        .collect()
}

/// The largest CPU time any one thread used between two samples.
fn busiest_thread(before: &HashMap<u64, Duration>, after: &HashMap<u64, Duration>) -> Duration {
    after
        .iter()
        .map(|(tid, t)| t.saturating_sub(before.get(tid).copied().unwrap_or_default()))
        .max()
        .unwrap_or_default()
}

/// CPU time all cpus of the machine spent busy (everything but idle and iowait), from /proc/stat.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(busy * 1_000_000_000 / hz)
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

/// This process's own user+system CPU time (all threads).
fn own_cpu_time() -> Duration {
    cpu_time(std::process::id())
}

/// The value at quantile `q` (0..=1) of sorted samples (nearest rank).
fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(ns: i64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

/// A fresh directory for one bench, on the same disk as `target/`, so fsyncs are real.
fn bench_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("heal-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_connections_per_host(4)
        .build()
        .into()
}

/// POST a JSON body; status and body text. Transport errors give status 0.
fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> (u16, String) {
    post_as(agent, url, "application/json", body)
}

/// POST a body of `content_type`; status and body text. Transport errors give status 0.
fn post_as(agent: &ureq::Agent, url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    match agent
        .post(url)
        .header("Content-Type", content_type)
        .send(body)
    {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (status, text)
        }
        Err(e) => (0, e.to_string()),
    }
}

fn get_json(agent: &ureq::Agent, url: &str) -> Option<Value> {
    let mut resp = agent.get(url).call().ok()?;
    if resp.status() != 200 {
        return None;
    }
    // Listing 10,000 heartbeats is more than ureq's default 10 MB limit.
    let text = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// Polls `f` every `every` until it gives Some; panics after `timeout`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// A child process (server or agent), killed and reaped by its pid when dropped.
struct Proc {
    what: &'static str,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(what: &'static str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        // Drains stderr so the child never blocks on a full pipe; keeps a bounded head for errors.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                if l.len() < 1 << 20 {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Proc {
            what,
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))))
    }

    /// Resident memory (VmHWM peak, VmRSS now) in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        (field_kib(&status, "VmHWM:"), field_kib(&status, "VmRSS:"))
    }

    fn threads(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("Threads:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL by pid and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} log (head) ---\n{}", self.what, self.logs());
        }
    }
}

/// Starts `heal serve` with `config` in `dir` on a free port; the process and its base URL.
///
/// The port comes from the server's own "listening on" line, which needs log
/// level info. With `HEAL_BENCH_LOG` set to a quieter level (a diagnostic, to
/// measure what logging costs), the bench picks a free port itself instead
/// and waits for `/-/healthy`.
fn start_server(dir: &Path, config: &str) -> (Proc, String) {
    start_server_on(dir, config, dir.join("heal.db").as_os_str())
}

/// `start_server` on the store `db`: a SQLite file or a PostgreSQL URL.
fn start_server_on(dir: &Path, config: &str, db: &std::ffi::OsStr) -> (Proc, String) {
    std::fs::write(dir.join("runbooks.toml"), config).expect("write config");
    let level = std::env::var("HEAL_BENCH_LOG").unwrap_or_else(|_| "info".into());
    let announces = ["info", "debug", "trace"].contains(&level.as_str());
    let listen = if announces {
        "127.0.0.1:0".to_string()
    } else {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("bound address").to_string()
    };
    let mut server = Proc::spawn(
        "heal serve",
        Command::new(env!("CARGO_BIN_EXE_heal"))
            .arg("serve")
            .arg("--config")
            .arg(dir.join("runbooks.toml"))
            .arg("--db")
            .arg(db)
            .args(["--listen", &listen])
            .env("HEAL_LOG", &level)
            .current_dir(dir),
    );
    let probe = http_agent(Duration::from_secs(2));
    let addr = wait_for(
        "heal serve to listen",
        Duration::from_secs(20),
        Duration::from_millis(10),
        || {
            if server.exited() {
                panic!("heal serve exited early:\n{}", server.logs());
            }
            if !announces {
                return get_json(&probe, &format!("http://{listen}/-/healthy"))
                    .map(|_| listen.clone());
            }
            let logs = server.logs();
            let at = logs.find("listening on http://")?;
            let rest = &logs[at + "listening on http://".len()..];
            Some(rest.lines().next()?.trim().to_string())
        },
    );
    (server, format!("http://{addr}"))
}

// ---- latency ------------------------------------------------------------------

/// Reads the marks appended to a file so far: iteration → CLOCK_REALTIME ns.
struct Marks {
    path: PathBuf,
    offset: usize,
    pending: String,
    seen: HashMap<usize, i64>,
}

impl Marks {
    fn new(path: PathBuf) -> Marks {
        Marks {
            path,
            offset: 0,
            pending: String::new(),
            seen: HashMap::new(),
        }
    }

    fn get(&mut self, n: usize) -> Option<i64> {
        if let Some(at) = self.seen.get(&n) {
            return Some(*at);
        }
        let mut f = std::fs::File::open(&self.path).ok()?;
        let mut buf = Vec::new();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(self.offset as u64)).ok()?;
        f.read_to_end(&mut buf).ok()?;
        self.offset += buf.len();
        self.pending.push_str(&String::from_utf8_lossy(&buf));
        while let Some(nl) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=nl).collect();
            let mut parts = line.split_whitespace();
            if let (Some(Ok(i)), Some(Ok(at))) = (
                parts.next().map(str::parse::<usize>),
                parts.next().map(str::parse::<i64>),
            ) {
                self.seen.insert(i, at);
            }
        }
        self.seen.get(&n).copied()
    }
}

fn latency() {
    let dir = bench_dir("latency");
    let marks_path = dir.join("marks.txt");
    let exe = std::env::current_exe().expect("own executable");
    let step = json!([
        exe.display().to_string(),
        MARK_FLAG,
        marks_path.display().to_string()
    ]);
    let config = format!(
        r#"
[server]
http_threads = 16

# The bench runs far more than an hour's worth of fixes on purpose.
[safety]
max_runs_per_hour = 1000000

[[rule]]
name = "bench"
when = "labels.alertname == 'Bench'"
runbook = "bench"
target = "labels.instance"

[runbook.bench]
timeout = "10s"
steps = [ {{ name = "mark", run = {step} }} ]
"#
    );

    // Baseline: the same step spawned directly, like the agent does (own process group).
    let baseline_path = dir.join("baseline.txt");
    let mut baseline_marks = Marks::new(baseline_path.clone());
    let mut baseline = Vec::new();
    for i in 0..BASELINE_ITERATIONS + 10 {
        let t0 = now_ns();
        let status = Command::new(&exe)
            .arg(MARK_FLAG)
            .arg(&baseline_path)
            .env("HEAL_LABEL_N", i.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .status()
            .expect("run the marker");
        assert!(status.success(), "marker failed: {status}");
        let at = baseline_marks.get(i).expect("the marker wrote its line");
        if i >= 10 {
            baseline.push(at - t0);
        }
    }
    baseline.sort_unstable();
    let startup_p50 = quantile(&baseline, 0.5);

    let (server, url) = start_server(&dir, &config);
    let agent_proc = scale::real_agent(&url, &dir, "info");
    let http = http_agent(Duration::from_secs(30));

    let mut marks = Marks::new(marks_path);
    let mut samples = Vec::new();
    let started = Instant::now();
    for i in 0..LATENCY_WARMUP + LATENCY_ITERATIONS {
        let sample = alert_to_step(&http, &url, &mut marks, i, "bench");
        if i >= LATENCY_WARMUP {
            samples.push(sample);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let (agent_hwm, _) = agent_proc.rss_kib();
    let (server_hwm, _) = server.rss_kib();
    let (server_log, agent_log) = (server.logs(), agent_proc.logs());
    drop(agent_proc);
    drop(server);

    // Stages, from the log lines' own timestamps (CLOCK_REALTIME, like the marks).
    let decided = log_times(&server_log, |line| {
        let rest = line.split(" alert Bench ").nth(1)?;
        Some(rest.split(':').next()?.to_string())
    });
    let received = log_times(&agent_log, |line| {
        let rest = line.split(" op ").nth(1)?;
        let (op, what) = rest.split_once(':')?;
        what.starts_with(" running runbook").then(|| op.to_string())
    });
    let mut stage_a = Vec::new();
    let mut stage_b = Vec::new();
    let mut stage_c = Vec::new();
    for s in &samples {
        let (Some(d), Some(r)) = (decided.get(&s.fingerprint), received.get(&s.op.to_string()))
        else {
            continue;
        };
        stage_a.push(d - s.sent);
        stage_b.push(r - d);
        stage_c.push(s.step_started - r);
    }
    let sorted = |mut v: Vec<i64>| {
        v.sort_unstable();
        v
    };
    let raw = sorted(samples.iter().map(|s| s.step_started - s.sent).collect());
    let acked = sorted(samples.iter().map(|s| s.answered - s.sent).collect());
    let net = sorted(raw.iter().map(|v| v - startup_p50).collect());
    println!();
    println!(
        "latency: alert POST -> step process start, idle `heal agent --concurrency 4`, {LATENCY_ITERATIONS} iterations after {LATENCY_WARMUP} warm-up ({:.1} s)",
        elapsed.as_secs_f64()
    );
    println!(
        "  {:<44} {:>8} {:>8} {:>8} {:>8}",
        "ms", "p50", "p90", "p99", "max"
    );
    let row = |name: &str, v: &[i64]| {
        if v.is_empty() {
            println!("  {name:<44} (no samples)");
            return;
        }
        println!(
            "  {:<44} {:>8} {:>8} {:>8} {:>8}",
            name,
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.9)),
            ms(quantile(v, 0.99)),
            ms(*v.last().expect("samples"))
        );
    };
    row("step start, raw", &raw);
    row("step start minus process startup p50", &net);
    row("step process startup (spawned alone)", &baseline);
    row("POST answered (durable commit)", &acked);
    row("  stage: POST sent -> rules decided", &sorted(stage_a));
    row("  stage: decided -> agent has the op", &sorted(stage_b));
    row("  stage: agent has the op -> step start", &sorted(stage_c));
    println!(
        "  targets (raw): p50 <= 3 ms {}, p99 <= 15 ms {}",
        verdict(quantile(&raw, 0.5) <= 3_000_000),
        verdict(quantile(&raw, 0.99) <= 15_000_000)
    );
    println!("  peak RSS: server {server_hwm} KiB, agent {agent_hwm} KiB");
    println!("  loadavg (1 min) at the end: {}", loadavg());
    let _ = std::fs::remove_dir_all(&dir);
}

/// One latency iteration (CLOCK_REALTIME ns).
struct Sample {
    sent: i64,
    answered: i64,
    step_started: i64,
    fingerprint: String,
    op: i64,
}

/// One alert for agent `instance` whose runbook's step writes mark `i`:
/// the times it was sent, answered and its step started, once its event has
/// ended (so the agent is idle again).
fn alert_to_step(
    http: &ureq::Agent,
    url: &str,
    marks: &mut Marks,
    i: usize,
    instance: &str,
) -> Sample {
    let body = json!({
        "name": "Bench",
        "labels": { "alertname": "Bench", "instance": instance, "n": i.to_string() },
    })
    .to_string();
    let t0 = now_ns();
    let (status, text) = post(http, &format!("{url}/api/v1/alerts"), body.as_bytes());
    let t_ack = now_ns();
    assert_eq!(status, 200, "intake {i}: {text}");
    let answer: Value = serde_json::from_str(&text).expect("intake answers JSON");
    let event = answer["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("intake {i} made no event: {answer}"));
    let fingerprint = answer["alerts"][0]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let at = wait_for(
        &format!("step of iteration {i} to start"),
        Duration::from_secs(10),
        Duration::from_micros(200),
        || marks.get(i),
    );
    let ended = wait_for(
        &format!("event {event} to end"),
        Duration::from_secs(10),
        Duration::from_millis(2),
        || {
            let e = get_json(http, &format!("{url}/api/v1/events/{event}"))?;
            let state = e["state"].as_str()?;
            let active = [
                "pending_approval",
                "deferred",
                "queued",
                "running",
                "verifying",
            ];
            (!active.contains(&state)).then_some(e)
        },
    );
    assert_eq!(
        ended["state"], "succeeded",
        "event {event} of iteration {i}: {ended}"
    );
    Sample {
        sent: t0,
        answered: t_ack,
        step_started: at,
        fingerprint,
        op: ended["ops"][0]["id"].as_i64().unwrap_or(-1),
    }
}

/// For each log line `key` picks out, the line's timestamp (first of each key).
fn log_times(log: &str, key: impl Fn(&str) -> Option<String>) -> HashMap<String, i64> {
    let mut times = HashMap::new();
    for line in log.lines() {
        if let (Some(k), Some(at)) = (key(line), log_time_ns(line)) {
            times.entry(k).or_insert(at);
        }
    }
    times
}

/// The RFC 3339 UTC timestamp that starts a heal log line, as ns since the epoch.
fn log_time_ns(line: &str) -> Option<i64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|v| v.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|v| v.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i64 = digits.parse().ok()?;
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3_600 + min * 60 + sec) * 1_000_000_000) + nanos)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

// ---- intake -----------------------------------------------------------------

/// The fixture with its instance label and fingerprint made unique to (thread, i).
fn intake_body(thread: usize, i: usize) -> Vec<u8> {
    FIXTURE
        .replace(
            "\"instance\":\"web-1\"",
            &format!("\"instance\":\"web-{thread}-{i}\""),
        )
        .replace(
            "\"fingerprint\":\"5a7cb4c60d175e51\"",
            &format!("\"fingerprint\":\"{thread:06x}{i:010x}\""),
        )
        .into_bytes()
}

#[derive(Default)]
struct ClientTally {
    /// Latencies (µs) of requests answered 200 within the measured window.
    latencies_us: Vec<u32>,
    ok_total: usize,
    failed: usize,
    first_failure: Option<String>,
}

/// Sustained Alertmanager webhooks (`intake_body`) from keep-alive clients
/// at `urls` (servers sharing one store), each client
/// thread posting to one of them; CPU figures are the first server's.
fn drive_intake(server: &Proc, urls: &[&str]) -> (LoadSpec, Load) {
    let targets: Vec<String> = urls
        .iter()
        .map(|url| format!("{url}/api/v1/alerts/alertmanager"))
        .collect();
    let spec = LoadSpec {
        threads: clients(INTAKE_THREADS),
        warmup: INTAKE_WARMUP,
        duration: INTAKE_DURATION,
        max_per_thread: INTAKE_MAX_PER_THREAD,
    };
    let load = drive(
        server,
        &spec,
        |t, i| (t, intake_body(t, i)),
        |http, (t, body)| post(http, &targets[t % targets.len()], body),
    );
    (spec, load)
}

// ---- the same intake into PostgreSQL ----------------------------------------

// What `pg_cluster` (the integration tests' harness) takes from its parent.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn test_dir(name: &str) -> PathBuf {
    bench_dir(name)
}

fn skip(bench: &str, missing: &str) {
    println!("\n*** SKIPPED: {bench}: needs {missing}; the bench did not run ***\n");
}

/// The intake bench with the store in PostgreSQL (a cluster of its own on
/// 127.0.0.1, durable: fsync and synchronous commit on): one server, then
/// two sharing the database, each client thread posting to one of them.
fn intake_postgres() {
    for servers in [1, 2] {
        let name = format!("intake-pg-{servers}");
        let Some(pg) = pg_cluster::start(&name) else {
            return;
        };
        let config = "[server]\nhttp_threads = 64\n\n[[rule]]\nname = \"drop-bench\"\nwhen = \"labels.alertname == 'DiskSpaceLow'\"\naction = \"discard\"\n";
        let started: Vec<(Proc, String, PathBuf)> = (0..servers)
            .map(|n| {
                let dir = bench_dir(&format!("{name}-{n}"));
                let (server, url) = start_server_on(&dir, config, pg.url.as_ref());
                (server, url, dir)
            })
            .collect();
        let urls: Vec<&str> = started.iter().map(|(_, url, _)| url.as_str()).collect();
        let (spec, load) = drive_intake(&started[0].0, &urls);
        let rss: Vec<String> = started
            .iter()
            .map(|(p, _, _)| format!("{}", p.rss_kib().0))
            .collect();
        for (mut server, _, dir) in started {
            server.kill();
            let _ = std::fs::remove_dir_all(&dir);
        }
        let stored: i64 = pg
            .psql("SELECT count(*) FROM alert")
            .trim()
            .parse()
            .unwrap_or(-1);
        let alerts_per_req = FIXTURE.matches("\"fingerprint\"").count();
        println!();
        println!(
            "intake on PostgreSQL, {servers} server(s) sharing the database (durable commits): {} keep-alive clients spread over them, {:.0} s measured after {:.0} s warm-up; CPU figures are the first server's",
            spec.threads,
            load.secs,
            INTAKE_WARMUP.as_secs_f64()
        );
        let mut rows = load.rows();
        rows.insert(
            3,
            (
                "alerts/s",
                format!("{:.0}", load.rps() * alerts_per_req as f64),
            ),
        );
        rows.extend([
            ("servers' VmHWM (KiB)", rss.join(", ")),
            (
                "alert rows stored / 200s (all)",
                format!("{stored} / {}", load.ok_total),
            ),
            ("loadavg (1 min) at the end", loadavg()),
        ]);
        print_rows(&rows);
        if servers == 2 {
            println!(
                "  target: >= 3000 durable alerts/s with two servers: {}",
                verdict(load.rps() * alerts_per_req as f64 >= 3000.0)
            );
        }
    }
}

fn intake() {
    assert!(
        FIXTURE.contains("\"instance\":\"web-1\"")
            && FIXTURE.contains("\"fingerprint\":\"5a7cb4c60d175e51\""),
        "the fixture changed: update intake_body"
    );
    let dir = bench_dir("intake");
    let config = r#"
[server]
http_threads = 64

[[rule]]
name = "drop-bench"
when = "labels.alertname == 'DiskSpaceLow'"
action = "discard"
"#;
    let (server, url) = start_server(&dir, config);
    let (spec, load) = drive_intake(&server, &[url.as_str()]);
    let (hwm, rss) = server.rss_kib();
    let threads = server.threads();
    let mut server = server;
    server.kill();

    if let Some(f) = &load.first_failure {
        println!("intake: {} requests failed; first: {f}", load.failed);
    }
    let alerts_per_req = FIXTURE.matches("\"fingerprint\"").count();

    // Every 200 must be a stored row.
    let stored: i64 = rusqlite::Connection::open(dir.join("heal.db"))
        .and_then(|c| c.query_row("SELECT count(*) FROM alert", [], |r| r.get(0)))
        .unwrap_or(-1);
    let db_bytes: u64 = ["heal.db", "heal.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();

    println!();
    println!(
        "intake: POST /api/v1/alerts/alertmanager (single_firing.json, unique instance+fingerprint each), {} keep-alive clients, {:.0} s measured after {:.0} s warm-up, http_threads = 64, rule action = discard",
        spec.threads,
        load.secs,
        INTAKE_WARMUP.as_secs_f64()
    );
    let mut rows = load.rows();
    rows.insert(
        3,
        (
            "alerts/s",
            format!("{:.0}", load.rps() * alerts_per_req as f64),
        ),
    );
    rows.extend([
        ("server VmHWM (KiB)", hwm.to_string()),
        ("server VmRSS at end (KiB)", rss.to_string()),
        ("server threads", threads.to_string()),
        (
            "alert rows stored / 200s (all)",
            format!("{stored} / {}", load.ok_total),
        ),
        (
            "db + wal size (MiB)",
            format!("{:.1}", db_bytes as f64 / 1048576.0),
        ),
        ("loadavg (1 min) at the end", loadavg()),
    ]);
    print_rows(&rows);
    println!(
        "  target: >= 5000 notifications/s: {}",
        verdict(load.rps() >= 5000.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- intake while a notification channel hangs ---------------------------------

/// A receiver that accepts connections and never answers.
fn hanging_receiver(stop: Arc<AtomicBool>) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (url, t)
}

/// A receiver that answers every request 200 at once. Its listener sets
/// TCP_NODELAY (connections inherit it): tiny_http writes an answer's head
/// and body apart, and with Nagle on, each answer would wait for heal's
/// delayed ACK, 40 ms, capping the bench at 25 deliveries a second.
fn answering_receiver(stop: Arc<AtomicBool>) -> (String, std::thread::JoinHandle<()>) {
    let listener = heal::server::nodelay_loopback_listener().expect("a receiver's listener");
    let server = tiny_http::Server::from_listener(listener, None).expect("serve");
    let url = format!("http://{}/hook", server.server_addr());
    let t = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(50)) {
                let _ = req.respond(tiny_http::Response::from_string("{}"));
            }
        }
    });
    (url, t)
}

/// Rounds of the notify bench's three cases.
const NOTIFY_ROUNDS: usize = 3;

/// Intake of alerts that each become a (dry-run) event and a notification,
/// with no channel, a channel that answers, and a channel that hangs: a
/// dead receiver must not slow intake (hanging against answering; no channel
/// shows what routing costs at all). The cases take turns for
/// `NOTIFY_ROUNDS` rounds and each is judged by its median: a single 10 s
/// window swung by 15% from run to run on a shared 2-CPU machine.
fn notify_intake() {
    const CASES: [&str; 3] = ["no channel", "channel answering", "channel hanging"];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for round in 0..NOTIFY_ROUNDS {
        for (i, case) in CASES.iter().enumerate() {
            results[i].push(notify_case(case, round == 0));
        }
    }
    let medians: Vec<f64> = results
        .iter_mut()
        .map(|runs| {
            let mut sorted = runs.clone();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        })
        .collect();
    let (none, answering) = (medians[0].max(1.0), medians[1].max(1.0));
    println!();
    println!("notify: {NOTIFY_ROUNDS} rounds of the three cases in turn; the median of each");
    for ((case, runs), median) in CASES.iter().zip(&results).zip(&medians) {
        let runs: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "  {case:<18} {median:>8.0} requests/s ({:.0}% of no channel, {:.0}% of answering; runs {})",
            median * 100.0 / none,
            median * 100.0 / answering,
            runs.join(", ")
        );
    }
    // The same channel answering is the baseline: routing and recording
    // deliveries costs the same whether the receiver answers or hangs.
    println!(
        "  target: intake unchanged within noise (>= 90% of the channel answering) while it hangs: {}",
        verdict(medians[2] >= 0.9 * answering)
    );
}

/// One case of `notify_intake` on a fresh server; returns its requests/s.
/// With `detail`, prints its whole table, else one line.
fn notify_case(case: &str, detail: bool) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = match case {
        "channel answering" => Some(answering_receiver(stop.clone())),
        "channel hanging" => Some(hanging_receiver(stop.clone())),
        _ => None,
    };
    let notify = receiver.as_ref().map_or(String::new(), |(url, _)| {
        format!(
            "[channel.hook]\nwebhook = {{ url = \"{url}\" }}\nrate_limit = \"off\"\ntimeout = \"10s\"\n\n[[notify]]\nchannels = [\"hook\"]\n"
        )
    });
    let dir = bench_dir("notify");
    let config = format!(
        r#"
[server]
http_threads = 64

[[rule]]
name = "watch"
when = "labels.alertname == 'DiskSpaceLow'"
runbook = "noop"
target = "labels.instance"
mode = "dry-run"

[runbook.noop]
steps = [ {{ name = "noop", run = "true" }} ]

{notify}"#
    );
    let (server, url) = start_server(&dir, &config);
    let (spec, load) = drive_intake(&server, &[url.as_str()]);
    let outbox = get_json(
        &http_agent(Duration::from_secs(10)),
        &format!("{url}/api/v1/outbox?limit=1"),
    )
    .map(|o| o["counts"].to_string())
    .unwrap_or_default();
    let mut server = server;
    server.kill();
    stop.store(true, Ordering::SeqCst);
    if let Some((_, t)) = receiver {
        let _ = t.join();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(f) = &load.first_failure {
        println!(
            "notify ({case}): {} requests failed; first: {f}",
            load.failed
        );
    }
    if detail {
        println!();
        println!(
            "notify ({case}): POST /api/v1/alerts/alertmanager, each alert a dry-run event and one notification, {} keep-alive clients, {:.0} s measured",
            spec.threads, load.secs
        );
        let mut rows = load.rows();
        rows.push(("outbox at the end", outbox));
        print_rows(&rows);
    } else {
        println!(
            "notify ({case}): {:.0} requests/s, outbox at the end {outbox}",
            load.rps()
        );
    }
    load.rps()
}

// ---- load from keep-alive clients ---------------------------------------------

/// The number of client threads of a load bench: `default`, or `HEAL_BENCH_CLIENTS`.
fn clients(default: usize) -> usize {
    std::env::var("HEAL_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=1024).contains(n))
        .unwrap_or(default)
}

/// How a load bench drives the server.
struct LoadSpec {
    /// Keep-alive client threads, each sending its next request once answered.
    threads: usize,
    /// Sent but not measured, first.
    warmup: Duration,
    /// The measured window.
    duration: Duration,
    /// Upper bound on requests per client thread, whatever the speed.
    max_per_thread: usize,
}

/// What a load run measured.
struct Load {
    /// Length of the measured window (s).
    secs: f64,
    /// Requests answered 200, warm-up included.
    ok_total: usize,
    /// Requests answered otherwise, or not at all.
    failed: usize,
    first_failure: Option<String>,
    /// Latencies (µs) of the 200s sent and answered within the window, sorted.
    latencies_us: Vec<u32>,
    /// CPU seconds used within the window: the server, its busiest thread,
    /// this process (the clients), the whole machine.
    server_cpu: f64,
    busiest_thread: f64,
    client_cpu: f64,
    machine_busy: f64,
}

impl Load {
    /// 200s per second within the window.
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.secs
    }

    /// Server CPU per measured 200 (µs).
    fn server_us_per_request(&self) -> f64 {
        self.server_cpu * 1e6 / self.latencies_us.len().max(1) as f64
    }

    /// The figures every load bench prints: rate, latency, CPU.
    fn rows(&self) -> Vec<(&'static str, String)> {
        let secs = self.secs;
        let lat = &self.latencies_us;
        let mut rows = vec![
            ("requests answered 200 (measured)", lat.len().to_string()),
            ("requests failed", self.failed.to_string()),
            ("requests/s", format!("{:.0}", self.rps())),
        ];
        if !lat.is_empty() {
            let as_ms = |us: u32| format!("{:.2}", us as f64 / 1e3);
            rows.extend([
                ("client latency p50 (ms)", as_ms(quantile(lat, 0.5))),
                ("client latency p90 (ms)", as_ms(quantile(lat, 0.9))),
                ("client latency p99 (ms)", as_ms(quantile(lat, 0.99))),
                (
                    "client latency max (ms)",
                    as_ms(*lat.last().expect("samples")),
                ),
            ]);
        }
        rows.extend([
            (
                "server CPU (cores busy, avg)",
                format!("{:.2}", self.server_cpu / secs),
            ),
            (
                "server CPU per request (us)",
                format!("{:.0}", self.server_us_per_request()),
            ),
            (
                "busiest server thread (cores, avg)",
                format!("{:.2}", self.busiest_thread / secs),
            ),
            (
                "client CPU (cores busy, avg)",
                format!("{:.2}", self.client_cpu / secs),
            ),
            (
                "machine busy (cores, avg)",
                format!("{:.2}", self.machine_busy / secs),
            ),
            (
                "  of which others (cores, avg)",
                format!(
                    "{:.2}",
                    (self.machine_busy - self.server_cpu - self.client_cpu).max(0.0) / secs
                ),
            ),
        ]);
        rows
    }
}

fn print_rows(rows: &[(&str, String)]) {
    for (k, v) in rows {
        println!("  {k:<40} {v:>14}");
    }
}

/// Runs `spec.threads` keep-alive clients against `server` until the window
/// ends. `prepare(thread, i)` makes request `i` of a thread outside the timed
/// part; `send` sends it. More than 100 failures in one thread stop all.
fn drive<B>(
    server: &Proc,
    spec: &LoadSpec,
    prepare: impl Fn(usize, usize) -> B + Sync,
    send: impl Fn(&ureq::Agent, &B) -> (u16, String) + Sync,
) -> Load {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let measure_to = measure_from + spec.duration;
    let mut server_cpu = (Duration::ZERO, Duration::ZERO);
    let mut threads_cpu = (HashMap::new(), HashMap::new());
    let mut client_cpu = (Duration::ZERO, Duration::ZERO);
    let mut machine_cpu = (Duration::ZERO, Duration::ZERO);
    let tallies: Vec<ClientTally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.threads)
            .map(|t| {
                let (stop, prepare, send) = (&stop, &prepare, &send);
                s.spawn(move || {
                    let http = http_agent(Duration::from_secs(30));
                    let mut tally = ClientTally {
                        latencies_us: Vec::with_capacity(16_384),
                        ..ClientTally::default()
                    };
                    for i in 0..spec.max_per_thread {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= measure_to {
                            break;
                        }
                        let input = prepare(t, i);
                        let t0 = Instant::now();
                        let (status, text) = send(&http, &input);
                        let t1 = Instant::now();
                        if status == 200 {
                            tally.ok_total += 1;
                            if t0 >= measure_from && t1 <= measure_to {
                                tally
                                    .latencies_us
                                    .push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
                            }
                        } else {
                            tally.failed += 1;
                            if tally.first_failure.is_none() {
                                tally.first_failure = Some(format!("{status}: {text}"));
                            }
                            if tally.failed > 100 {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
        server_cpu.0 = cpu_time(server.pid());
        threads_cpu.0 = thread_cpu_times(server.pid());
        client_cpu.0 = own_cpu_time();
        machine_cpu.0 = machine_busy();
        std::thread::sleep(measure_to.saturating_duration_since(Instant::now()));
        server_cpu.1 = cpu_time(server.pid());
        threads_cpu.1 = thread_cpu_times(server.pid());
        client_cpu.1 = own_cpu_time();
        machine_cpu.1 = machine_busy();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let mut latencies_us: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies_us.sort_unstable();
    Load {
        secs: spec.duration.as_secs_f64(),
        ok_total: tallies.iter().map(|t| t.ok_total).sum(),
        failed: tallies.iter().map(|t| t.failed).sum(),
        first_failure: tallies.iter().find_map(|t| t.first_failure.clone()),
        latencies_us,
        server_cpu: server_cpu.1.saturating_sub(server_cpu.0).as_secs_f64(),
        busiest_thread: busiest_thread(&threads_cpu.0, &threads_cpu.1).as_secs_f64(),
        client_cpu: client_cpu.1.saturating_sub(client_cpu.0).as_secs_f64(),
        machine_busy: machine_cpu.1.saturating_sub(machine_cpu.0).as_secs_f64(),
    }
}

// ---- ping -------------------------------------------------------------------

/// `[[heartbeat]]` tables named `hb-0` .. `hb-{n-1}`; `def(i)` gives each one's schedule lines.
fn heartbeat_config(n: usize, def: impl Fn(usize) -> String) -> String {
    let mut config = String::with_capacity(n * 64);
    for i in 0..n {
        config.push_str(&format!("\n[[heartbeat]]\nname = \"hb-{i}\"\n{}\n", def(i)));
    }
    config
}

/// What `GET /api/v1/heartbeats` tells the benches.
struct Listing {
    /// Heartbeats listed.
    count: usize,
    /// The sum of their `pings`.
    pings: i64,
    /// The scheduler's last sweep, once there was one.
    sweep: Option<Sweep>,
}

fn heartbeats(http: &ureq::Agent, url: &str) -> Option<Listing> {
    let v = get_json(http, &format!("{url}/api/v1/heartbeats?limit=10000"))?;
    let list = v["heartbeats"].as_array()?;
    let s = &v["last_sweep"];
    Some(Listing {
        count: list.len(),
        pings: list.iter().map(|h| h["pings"].as_i64().unwrap_or(0)).sum(),
        sweep: s["at"].as_i64().map(|at| Sweep {
            at,
            heartbeats: s["heartbeats"].as_u64().unwrap_or(0) as usize,
            micros: s["micros"].as_u64().unwrap_or(0),
        }),
    })
}

/// The scheduler's last heartbeat sweep, as `GET /api/v1/heartbeats` tells it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Sweep {
    /// Its start (ms since the epoch, the server's clock).
    at: i64,
    heartbeats: usize,
    micros: u64,
}

fn ping() {
    let dir = bench_dir("ping");
    let config = format!(
        "[server]\nhttp_threads = 64\n{}",
        heartbeat_config(PING_HEARTBEATS, |_| "every = \"1h\"".into())
    );
    let (server, url) = start_server(&dir, &config);
    let http = http_agent(Duration::from_secs(30));
    // Config heartbeats are stored by the scheduler thread shortly after start.
    wait_for(
        "the config's heartbeats to be stored",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let listing = heartbeats(&http, &url)?;
            (listing.count == PING_HEARTBEATS).then_some(())
        },
    );

    let spec = LoadSpec {
        threads: clients(PING_THREADS),
        warmup: PING_WARMUP,
        duration: PING_DURATION,
        max_per_thread: PING_MAX_PER_THREAD,
    };
    // Consecutive requests of all clients go to consecutive heartbeats.
    let threads = spec.threads;
    let load = drive(
        &server,
        &spec,
        |t, i| format!("{url}/ping/hb-{}", (i * threads + t) % PING_HEARTBEATS),
        |http, target| post_as(http, target, "text/plain", PING_BODY),
    );
    let (hwm, rss) = server.rss_kib();
    let server_threads = server.threads();
    let server_cpu_total = cpu_time(server.pid());
    // Every 200 must be a ping counted by its heartbeat, and a stored ping row.
    let counted = heartbeats(&http, &url)
        .expect("GET /api/v1/heartbeats")
        .pings;
    let mut server = server;
    server.kill();
    let rows: i64 = rusqlite::Connection::open(dir.join("heal.db"))
        .and_then(|c| c.query_row("SELECT count(*) FROM ping", [], |r| r.get(0)))
        .unwrap_or(-1);

    if let Some(f) = &load.first_failure {
        println!("ping: {} requests failed; first: {f}", load.failed);
    }
    println!();
    println!(
        "ping: POST /ping/hb-<n % {PING_HEARTBEATS}> (body {:?}, {PING_HEARTBEATS} heartbeats every 1h), {} keep-alive clients, {:.0} s measured after {:.0} s warm-up, http_threads = 64",
        String::from_utf8_lossy(PING_BODY),
        spec.threads,
        load.secs,
        PING_WARMUP.as_secs_f64()
    );
    let mut rows_out = load.rows();
    rows_out.extend([
        ("server VmHWM (KiB)", hwm.to_string()),
        ("server VmRSS at end (KiB)", rss.to_string()),
        ("server threads", server_threads.to_string()),
        (
            "server CPU since start (s)",
            format!("{:.2}", server_cpu_total.as_secs_f64()),
        ),
        (
            "pings counted / ping rows / 200s (all)",
            format!("{counted} / {rows} / {}", load.ok_total),
        ),
        ("loadavg (1 min) at the end", loadavg()),
    ]);
    print_rows(&rows_out);
    println!(
        "  target: >= 10000 pings/s: {}",
        verdict(load.rps() >= 10_000.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        load.failed, 0,
        "ping: every request must be answered 200 (first failure: {:?})",
        load.first_failure
    );
    assert!(
        counted == load.ok_total as i64 && rows == load.ok_total as i64,
        "ping: {} pings answered 200, but the heartbeats count {counted} and {rows} rows are stored",
        load.ok_total
    );
}

// ---- sweep ------------------------------------------------------------------

/// With `down`, every heartbeat is down (every = "1s", grace = "1s", never
/// pinged), so each sweep also compares 10,000 raised HeartbeatMissing alerts.
fn sweep(down: bool) {
    let dir = bench_dir("sweep");
    let config = heartbeat_config(SWEEP_HEARTBEATS, |i| {
        if down {
            "every = \"1s\"\ngrace = \"1s\"".into()
        } else if i % 2 == 0 {
            "every = \"1h\"".into()
        } else {
            "cron = \"*/5 * * * *\"\ntz = \"Europe/Berlin\"".into()
        }
    });
    let spawned = Instant::now();
    let (server, url) = start_server(&dir, &config);
    let listening = spawned.elapsed();
    let http = http_agent(Duration::from_secs(60));
    // The scheduler stores the config's heartbeats (the last one last), then
    // sweeps them all within a second. Asking for one keeps the big listing
    // (and its memory) out of the idle window.
    let last_name = format!("hb-{}", SWEEP_HEARTBEATS - 1);
    wait_for(
        "the config's heartbeats to be stored",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || get_json(&http, &format!("{url}/api/v1/heartbeats/{last_name}")),
    );
    if down {
        wait_for(
            "every heartbeat to be down with its alert raised",
            Duration::from_secs(120),
            Duration::from_millis(250),
            || {
                let v = get_json(
                    &http,
                    &format!("{url}/api/v1/alerts?name=HeartbeatMissing&status=firing&limit=10000"),
                )?;
                (v["alerts"].as_array()?.len() == SWEEP_HEARTBEATS).then_some(())
            },
        );
    }
    let stored = spawned.elapsed();

    // Idle: no requests at all, so what the server uses is its own timekeeping.
    std::thread::sleep(Duration::from_secs(2));
    let idle_from = (
        Instant::now(),
        cpu_time(server.pid()),
        thread_cpu_times(server.pid()),
    );
    std::thread::sleep(SWEEP_IDLE);
    let idle_secs = idle_from.0.elapsed().as_secs_f64();
    let idle_cpu = cpu_time(server.pid()).saturating_sub(idle_from.1);
    let idle_busiest = busiest_thread(&idle_from.2, &thread_cpu_times(server.pid()));
    let (idle_hwm, idle_rss) = server.rss_kib();

    // Sampling: one GET just after each sweep should have ended, so listing
    // 10,000 heartbeats does not run alongside the next sweep. The first GET
    // comes at any moment, so the first sweep it reports is dropped.
    let mut samples: Vec<Sweep> = Vec::new();
    let mut get_ms: Vec<i64> = Vec::new();
    let mut last: Option<Sweep> = None;
    let sampling_from = (Instant::now(), cpu_time(server.pid()));
    let deadline = Instant::now() + Duration::from_secs(SWEEP_SAMPLES as u64 * 3);
    while samples.len() < SWEEP_SAMPLES + 1 && Instant::now() < deadline {
        if let Some(last) = last {
            let next_end = last.at + 1000 + (2 * last.micros as i64 / 1000).max(100);
            let wait_ms = (next_end - now_ns() / 1_000_000).clamp(0, 1500);
            std::thread::sleep(Duration::from_millis(wait_ms as u64));
        }
        let t0 = now_ns();
        let listing = heartbeats(&http, &url).expect("GET /api/v1/heartbeats");
        get_ms.push(now_ns() - t0);
        assert_eq!(listing.count, SWEEP_HEARTBEATS, "heartbeats listed");
        let s = listing.sweep.expect("a sweep has run");
        if last.is_none_or(|l| l.at != s.at) {
            assert_eq!(
                s.heartbeats, SWEEP_HEARTBEATS,
                "a sweep saw {} heartbeats",
                s.heartbeats
            );
            samples.push(s);
            last = Some(s);
        }
    }
    let sampling_secs = sampling_from.0.elapsed().as_secs_f64();
    let sampling_cpu = cpu_time(server.pid()).saturating_sub(sampling_from.1);
    let (hwm, rss) = server.rss_kib();
    let server_cpu_total = cpu_time(server.pid());
    drop(server);
    if !samples.is_empty() {
        samples.remove(0);
    }

    let mut micros: Vec<u64> = samples.iter().map(|s| s.micros).collect();
    micros.sort_unstable();
    get_ms.sort_unstable();
    let sweep_ms = |us: u64| format!("{:.1}", us as f64 / 1e3);
    println!();
    let kind = if down {
        "all down (every = \"1s\", never pinged), each with its HeartbeatMissing alert raised"
    } else {
        "half every = \"1h\", half cron = \"*/5 * * * *\" tz = \"Europe/Berlin\""
    };
    println!(
        "sweep: the scheduler's heartbeat sweep with {SWEEP_HEARTBEATS} heartbeats in runbooks.toml ({kind}), {} sweeps sampled",
        samples.len()
    );
    let as_secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let mut rows: Vec<(&str, String)> = vec![
        ("server listening after (s)", as_secs(listening)),
        (
            if down {
                "all heartbeats stored, down and alerted after (s)"
            } else {
                "all heartbeats stored after (s)"
            },
            as_secs(stored),
        ),
    ];
    if !micros.is_empty() {
        rows.extend([
            ("sweep min (ms)", sweep_ms(micros[0])),
            ("sweep p50 (ms)", sweep_ms(quantile(&micros, 0.5))),
            ("sweep max (ms)", sweep_ms(*micros.last().expect("samples"))),
            (
                "sweep per heartbeat (us, p50)",
                format!(
                    "{:.2}",
                    quantile(&micros, 0.5) as f64 / SWEEP_HEARTBEATS as f64
                ),
            ),
        ]);
    }
    rows.extend([
        (
            "idle server CPU (% of a core)",
            format!("{:.1}", idle_cpu.as_secs_f64() * 100.0 / idle_secs),
        ),
        (
            "  busiest thread (% of a core)",
            format!("{:.1}", idle_busiest.as_secs_f64() * 100.0 / idle_secs),
        ),
        ("idle VmRSS, before any listing (KiB)", idle_rss.to_string()),
        (
            "CPU while sampling (% of a core)",
            format!("{:.1}", sampling_cpu.as_secs_f64() * 100.0 / sampling_secs),
        ),
    ]);
    if !get_ms.is_empty() {
        rows.extend([
            (
                "listing GET + JSON parse p50 (ms)",
                ms(quantile(&get_ms, 0.5)),
            ),
            (
                "listing GET + JSON parse max (ms)",
                ms(*get_ms.last().expect("samples")),
            ),
        ]);
    }
    rows.extend([
        ("server VmHWM (KiB)", hwm.max(idle_hwm).to_string()),
        ("server VmRSS after the listings (KiB)", rss.to_string()),
        (
            "server CPU since start (s)",
            format!("{:.2}", server_cpu_total.as_secs_f64()),
        ),
        ("loadavg (1 min) at the end", loadavg()),
    ]);
    print_rows(&rows);
    println!(
        "  sweeps (ms): {}",
        samples
            .iter()
            .map(|s| sweep_ms(s.micros))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  target: every sweep of {SWEEP_HEARTBEATS} < 50 ms: {}",
        verdict(!micros.is_empty() && *micros.last().expect("samples") < 50_000)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        samples.len() >= SWEEP_SAMPLES / 2,
        "only {} distinct sweeps in {:.0} s",
        samples.len(),
        sampling_secs
    );
}
