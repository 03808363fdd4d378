//! End-to-end benchmarks of the real, optimized `heal` binary.
//!
//! `cargo bench --bench e2e` runs both; `cargo bench --bench e2e -- latency`
//! or `-- intake` runs the benches whose name contains an argument.
//!
//! - latency: alert POST → the runbook step's process starts, through a
//!   separate `heal agent` that is idle and long-polling.
//! - intake: sustained Alertmanager webhooks from many keep-alive clients,
//!   every answer a durable 200.
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

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

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
    if !ran {
        eprintln!("no bench matches {filters:?} (benches: latency, intake)");
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
    match agent
        .post(url)
        .header("Content-Type", "application/json")
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
    serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
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
            .arg(dir.join("heal.db"))
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
    let agent_proc = Proc::spawn(
        "heal agent",
        Command::new(env!("CARGO_BIN_EXE_heal"))
            .args([
                "agent",
                "--server",
                &url,
                "--id",
                "bench",
                "--concurrency",
                "4",
            ])
            .env("HEAL_LOG", "info")
            .env_remove("HEAL_TOKEN")
            .current_dir(&dir),
    );
    let http = http_agent(Duration::from_secs(30));
    wait_for(
        "agent bench to poll",
        Duration::from_secs(20),
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

    let mut marks = Marks::new(marks_path);
    let mut samples = Vec::new();
    let intake_url = format!("{url}/api/v1/alerts");
    let started = Instant::now();
    for i in 0..LATENCY_WARMUP + LATENCY_ITERATIONS {
        let body = json!({
            "name": "Bench",
            "labels": { "alertname": "Bench", "instance": "bench", "n": i.to_string() },
        })
        .to_string();
        let t0 = now_ns();
        let (status, text) = post(&http, &intake_url, body.as_bytes());
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
        // The agent is idle again once the event has ended.
        let ended = wait_for(
            &format!("event {event} to end"),
            Duration::from_secs(10),
            Duration::from_millis(2),
            || {
                let e = get_json(&http, &format!("{url}/api/v1/events/{event}"))?;
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
        if i >= LATENCY_WARMUP {
            samples.push(Sample {
                sent: t0,
                answered: t_ack,
                step_started: at,
                fingerprint,
                op: ended["ops"][0]["id"].as_i64().unwrap_or(-1),
            });
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
    let target = format!("{url}/api/v1/alerts/alertmanager");

    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let measure_from = start + INTAKE_WARMUP;
    let measure_to = measure_from + INTAKE_DURATION;
    let mut server_cpu = (Duration::ZERO, Duration::ZERO);
    let mut threads_cpu = (HashMap::new(), HashMap::new());
    let mut client_cpu = (Duration::ZERO, Duration::ZERO);
    let mut machine_cpu = (Duration::ZERO, Duration::ZERO);
    let tallies: Vec<ClientTally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..INTAKE_THREADS)
            .map(|t| {
                let (target, stop) = (&target, &stop);
                s.spawn(move || {
                    let http = http_agent(Duration::from_secs(30));
                    let mut tally = ClientTally {
                        latencies_us: Vec::with_capacity(16_384),
                        ..ClientTally::default()
                    };
                    for i in 0..INTAKE_MAX_PER_THREAD {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= measure_to {
                            break;
                        }
                        let body = intake_body(t, i);
                        let t0 = Instant::now();
                        let (status, text) = post(&http, target, &body);
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
    let (hwm, rss) = server.rss_kib();
    let threads = server.threads();
    let mut server = server;
    server.kill();

    let failed: usize = tallies.iter().map(|t| t.failed).sum();
    if let Some(f) = tallies.iter().find_map(|t| t.first_failure.clone()) {
        println!("intake: {failed} requests failed; first: {f}");
    }
    let ok_total: usize = tallies.iter().map(|t| t.ok_total).sum();
    let mut lat: Vec<u32> = tallies.into_iter().flat_map(|t| t.latencies_us).collect();
    lat.sort_unstable();
    let measured = lat.len();
    let secs = INTAKE_DURATION.as_secs_f64();
    let rps = measured as f64 / secs;
    let alerts_per_req = FIXTURE.matches("\"fingerprint\"").count();
    let server_cpu_s = (server_cpu.1 - server_cpu.0).as_secs_f64();
    let client_cpu_s = (client_cpu.1 - client_cpu.0).as_secs_f64();
    let machine_s = (machine_cpu.1.saturating_sub(machine_cpu.0)).as_secs_f64();
    let busiest_s = busiest_thread(&threads_cpu.0, &threads_cpu.1).as_secs_f64();

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
        "intake: POST /api/v1/alerts/alertmanager (single_firing.json, unique instance+fingerprint each), {INTAKE_THREADS} keep-alive clients, {:.0} s measured after {:.0} s warm-up, http_threads = 64, rule action = discard",
        secs,
        INTAKE_WARMUP.as_secs_f64()
    );
    let line = |k: &str, v: String| println!("  {k:<40} {v:>14}");
    line("requests answered 200 (measured)", measured.to_string());
    line("requests failed", failed.to_string());
    line("requests/s", format!("{rps:.0}"));
    line("alerts/s", format!("{:.0}", rps * alerts_per_req as f64));
    if measured > 0 {
        line(
            "client latency p50 (ms)",
            format!("{:.2}", quantile(&lat, 0.5) as f64 / 1e3),
        );
        line(
            "client latency p90 (ms)",
            format!("{:.2}", quantile(&lat, 0.9) as f64 / 1e3),
        );
        line(
            "client latency p99 (ms)",
            format!("{:.2}", quantile(&lat, 0.99) as f64 / 1e3),
        );
        line(
            "client latency max (ms)",
            format!("{:.2}", *lat.last().expect("samples") as f64 / 1e3),
        );
    }
    line(
        "server CPU (cores busy, avg)",
        format!("{:.2}", server_cpu_s / secs),
    );
    line(
        "server CPU per request (us)",
        format!("{:.0}", server_cpu_s * 1e6 / measured.max(1) as f64),
    );
    line(
        "busiest server thread (cores, avg)",
        format!("{:.2}", busiest_s / secs),
    );
    line(
        "client CPU (cores busy, avg)",
        format!("{:.2}", client_cpu_s / secs),
    );
    line(
        "machine busy (cores, avg)",
        format!("{:.2}", machine_s / secs),
    );
    line(
        "  of which others (cores, avg)",
        format!(
            "{:.2}",
            (machine_s - server_cpu_s - client_cpu_s).max(0.0) / secs
        ),
    );
    line("server VmHWM (KiB)", hwm.to_string());
    line("server VmRSS at end (KiB)", rss.to_string());
    line("server threads", threads.to_string());
    line(
        "alert rows stored / 200s (all)",
        format!("{stored} / {ok_total}"),
    );
    line(
        "db + wal size (MiB)",
        format!("{:.1}", db_bytes as f64 / 1048576.0),
    );
    line("loadavg (1 min) at the end", loadavg());
    println!(
        "  target: >= 5000 notifications/s: {}",
        verdict(rps >= 5000.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
