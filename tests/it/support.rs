//! Test harness: temp dirs, the real `heal` binary as server and agents, and
//! a small HTTP client. Every wait has a deadline; every child is killed and
//! reaped on drop, by its own pid.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A throwaway PostgreSQL cluster (Debian's `postgresql` package).
pub mod postgres;

/// The heal binary under test.
pub fn heal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_heal")
}

/// The repository root (for fixtures and examples).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture file's text.
pub fn fixture(rel: &str) -> String {
    std::fs::read_to_string(repo().join("tests/fixtures").join(rel))
        .unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// A fresh directory under the system temp dir, named after the test.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("heal-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits, if needed, so the next 15 seconds fall in one minute: heal counts
/// failed authentications per minute.
pub fn early_in_a_minute() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970");
    let second = now.as_secs() % 60;
    if second >= 45 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
}

/// An HTTP request; returns status and body text. Transport errors give status 0.
pub fn http(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let result = if method == "GET" {
        let mut req = agent.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.call()
    } else if method == "DELETE" {
        let mut req = agent.delete(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.call()
    } else {
        let mut req = if method == "PUT" {
            agent.put(url)
        } else {
            agent.post(url)
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send(body.unwrap_or(b"").to_vec())
    };
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .unwrap_or_default();
            (status, text)
        }
        Err(e) => (0, e.to_string()),
    }
}

fn collect_lines(stream: impl std::io::Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if std::env::var("HEAL_TEST_ECHO").is_ok() {
                eprintln!("{line}");
            }
            let mut l = log.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
}

/// A running `heal serve`.
pub struct Server {
    child: Option<Child>,
    /// Base URL.
    pub url: String,
    /// The listen address, for a restart on the same port.
    pub addr: String,
    /// The test directory (config and database live here).
    pub dir: PathBuf,
    log: Arc<Mutex<String>>,
    /// Token sent with requests, if any.
    pub token: Option<String>,
    /// In the PostgreSQL pass, the cluster its store is in (shared by the
    /// servers a test starts in one directory).
    pub pg: Option<Arc<postgres::Postgres>>,
}

/// Whether this is the PostgreSQL pass: the `it_postgres` test binary runs
/// these same tests with every server's store in a throwaway PostgreSQL
/// cluster (one per test directory) instead of `heal.db`.
pub fn on_postgres() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.file_name()?.to_str()?.starts_with("it_postgres")))
            .unwrap_or(false)
    })
}

/// In the PostgreSQL pass, a test that reads or damages `heal.db` itself
/// (a SQLite file by nature): says so and returns true, and the test returns.
pub fn sqlite_only(test: &str) -> bool {
    if on_postgres() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("{test}: about the SQLite file itself; runs in the SQLite pass only\n")
                .as_bytes(),
        );
    }
    on_postgres()
}

/// In the PostgreSQL pass, a test that starts PostgreSQL clusters of its
/// own: says so and returns true, and the test returns (it ran in the
/// first pass).
pub fn first_pass_only(test: &str) -> bool {
    if on_postgres() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("{test}: starts its own PostgreSQL clusters; runs in the first pass only\n")
                .as_bytes(),
        );
    }
    on_postgres()
}

/// The PostgreSQL cluster of a test directory in the PostgreSQL pass:
/// the one a server started there before still holds, or a new one.
fn cluster_for(dir: &Path) -> Arc<postgres::Postgres> {
    static CLUSTERS: Mutex<Vec<(PathBuf, std::sync::Weak<postgres::Postgres>)>> =
        Mutex::new(Vec::new());
    let mut clusters = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    clusters.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(pg) = clusters
        .iter()
        .find(|(d, _)| d == dir)
        .and_then(|(_, weak)| weak.upgrade())
    {
        return pg;
    }
    let Some(pg) = postgres::start_fast(&format!("the PostgreSQL pass ({})", dir.display())) else {
        // Without PostgreSQL's server the whole pass is skipped (`skip`
        // said so, loudly, and fails under CI): no test of it can run.
        std::process::exit(0);
    };
    let pg = Arc::new(pg);
    clusters.push((dir.to_path_buf(), Arc::downgrade(&pg)));
    // Kept until the test's thread ends, so a server dropped and started
    // again in the directory finds its database.
    thread_local! {
        static HELD: std::cell::RefCell<Vec<Arc<postgres::Postgres>>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    HELD.with(|held| held.borrow_mut().push(pg.clone()));
    pg
}

impl Server {
    /// The first column of each row of a query on the server's store, as
    /// text: `heal.db`, or its PostgreSQL database in the PostgreSQL pass.
    pub fn store_query(&self, sql: &str) -> Vec<String> {
        if let Some(pg) = &self.pg {
            let out = pg.psql(sql);
            return out.lines().map(str::to_string).collect();
        }
        let conn = rusqlite::Connection::open_with_flags(
            self.dir.join("heal.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open heal.db");
        let mut statement = conn.prepare(sql).expect("prepare");
        statement
            .query_map([], |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                    rusqlite::types::ValueRef::Real(f) => f.to_string(),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                })
            })
            .expect("query")
            .map(Result::unwrap)
            .collect()
    }

    /// Writes `config` to dir/runbooks.toml and starts a server on a free port.
    pub fn start(dir: &Path, config: &str) -> Server {
        Self::start_with(dir, config, "127.0.0.1:0", &[])
    }

    /// Starts with a listen address and extra arguments.
    pub fn start_with(dir: &Path, config: &str, listen: &str, extra: &[&str]) -> Server {
        Self::start_command(dir, config, Command::new(heal_bin()), listen, extra)
    }

    /// Starts `heal serve` through `program`: heal itself, or a wrapper that
    /// execs its arguments, with an environment or descriptors prepared.
    pub fn start_command(
        dir: &Path,
        config: &str,
        program: Command,
        listen: &str,
        extra: &[&str],
    ) -> Server {
        if on_postgres() {
            let pg = cluster_for(dir);
            let mut server = Self::start_on(dir, config, program, pg.url.as_ref(), listen, extra);
            server.pg = Some(pg);
            return server;
        }
        let db = dir.join("heal.db");
        Self::start_on(dir, config, program, db.as_os_str(), listen, extra)
    }

    /// `start_command` on the store `db`: a SQLite file or a PostgreSQL URL.
    pub fn start_on(
        dir: &Path,
        config: &str,
        mut program: Command,
        db: &std::ffi::OsStr,
        listen: &str,
        extra: &[&str],
    ) -> Server {
        std::fs::write(dir.join("runbooks.toml"), config).expect("write config");
        let mut child = program
            .arg("serve")
            .arg("--config")
            .arg(dir.join("runbooks.toml"))
            .arg("--db")
            .arg(db)
            .arg("--listen")
            .arg(listen)
            .args(extra)
            .env("HEAL_LOG", "debug")
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn heal serve");
        let log = Arc::new(Mutex::new(String::new()));
        collect_lines(child.stderr.take().expect("stderr is piped"), log.clone());
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            addr: String::new(),
            dir: dir.to_path_buf(),
            log,
            token: None,
            pg: None,
        };
        let addr = wait_until(
            "the server to log its address",
            Duration::from_secs(20),
            || {
                if let Some(Ok(Some(status))) = server.child.as_mut().map(|c| c.try_wait()) {
                    panic!("heal serve exited with {status}:\n{}", server.logs());
                }
                let logs = server.logs();
                let at = logs.find("listening on http")?;
                let rest = &logs[at + "listening on http".len()..];
                let rest = rest.trim_start_matches('s').strip_prefix("://")?;
                Some(rest.split_whitespace().next()?.to_string())
            },
        );
        let scheme = if server.logs().contains("listening on https://") {
            "https"
        } else {
            "http"
        };
        server.url = format!("{scheme}://{addr}");
        server.addr = addr;
        server
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "heal serve did not stop within 20s of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn headers(&self) -> Vec<(String, String)> {
        let mut h = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(t) = &self.token {
            h.push(("Authorization".into(), format!("Bearer {t}")));
        }
        h
    }

    /// POST raw bytes with the default headers plus `extra`.
    pub fn post_raw(&self, path: &str, body: &[u8], extra: &[(&str, &str)]) -> (u16, String) {
        let own = self.headers();
        let mut headers: Vec<(&str, &str)> = own
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .filter(|(k, _)| !extra.iter().any(|(ek, _)| ek.eq_ignore_ascii_case(k)))
            .collect();
        headers.extend_from_slice(extra);
        http("POST", &format!("{}{path}", self.url), Some(body), &headers)
    }

    /// POST JSON; returns status and parsed body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.post_raw(path, body.to_string().as_bytes(), &[]);
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET; returns status and parsed body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let own = self.headers();
        let headers: Vec<(&str, &str)> =
            own.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, text) = http("GET", &format!("{}{path}", self.url), None, &headers);
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET that must answer 200.
    pub fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(
            status,
            200,
            "GET {path}: {body}\nserver log:\n{}",
            self.logs()
        );
        body
    }

    /// One event in full.
    pub fn event(&self, id: i64) -> Value {
        self.get_ok(&format!("/api/v1/events/{id}"))
    }

    /// All events, newest first.
    pub fn events(&self) -> Vec<Value> {
        self.get_ok("/api/v1/events?limit=1000")["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until event `id` is in one of `states`.
    pub fn wait_event(&self, id: i64, states: &[&str], timeout: Duration) -> Value {
        wait_until(
            &format!("event {id} to be one of {states:?}"),
            timeout,
            || {
                let e = self.event(id);
                states
                    .contains(&e["state"].as_str().unwrap_or(""))
                    .then_some(e)
            },
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- heal serve log ---\n{}", self.logs());
        }
    }
}

/// A running `heal agent`.
pub struct Agent {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// Its id.
    pub id: String,
}

impl Agent {
    /// Starts `heal agent --server URL --id ID` plus `extra`.
    pub fn start(server_url: &str, id: &str, extra: &[&str]) -> Agent {
        Self::start_in(&repo(), server_url, id, extra)
    }

    /// As `start`, in the working directory `cwd`.
    pub fn start_in(cwd: &Path, server_url: &str, id: &str, extra: &[&str]) -> Agent {
        Self::start_with(cwd, server_url, id, extra, |_| {})
    }

    /// As `start_in`, with `setup` changing the command first (its user, say).
    pub fn start_with(
        cwd: &Path,
        server_url: &str,
        id: &str,
        extra: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Agent {
        let mut cmd = Command::new(heal_bin());
        setup(&mut cmd);
        let mut child = cmd
            .args(["agent", "--server", server_url, "--id", id])
            .args(extra)
            .env("HEAL_LOG", "debug")
            .env_remove("HEAL_TOKEN")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn heal agent");
        let log = Arc::new(Mutex::new(String::new()));
        collect_lines(child.stderr.take().expect("stderr is piped"), log.clone());
        Agent {
            child: Some(child),
            log,
            id: id.to_string(),
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Everything the agent logged so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- heal agent {} log ---\n{}", self.id, self.logs());
        }
    }
}

/// Waits until the server lists the agent as polling.
pub fn wait_agent_polling(server: &Server, id: &str) {
    wait_until(
        &format!("agent {id} to poll"),
        Duration::from_secs(20),
        || {
            let agents = server.get_ok("/api/v1/agents");
            agents["agents"]
                .as_array()?
                .iter()
                .any(|a| a["id"] == id && a["polling"] == true)
                .then_some(())
        },
    );
}

/// The audit log's entries of one action, newest first.
pub fn audit_entries(server: &Server, action: &str) -> Vec<Value> {
    server.get_ok(&format!("/api/v1/audit?action={action}"))["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Runs the heal CLI with args; returns (exit code, stdout, stderr).
pub fn heal_cli(
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut cmd = Command::new(heal_bin());
    cmd.args(args)
        .current_dir(repo())
        .env_remove("HEAL_TOKEN")
        .env_remove("HEAL_SERVER");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn heal");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait heal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `heal check-config --config PATH`: its exit code, stdout and stderr.
pub fn check_config(path: &Path) -> (i32, String, String) {
    heal_cli(
        &[
            "check-config",
            "--config",
            path.to_str().expect("a UTF-8 path"),
        ],
        &[],
        None,
    )
}

/// A minimal config: one rule `fix` running runbook `fix` with `steps_toml` on `labels.instance`.
pub fn one_rule_config(steps_toml: &str, server_extra: &str) -> String {
    rule_config(
        &format!("lease = \"5s\"\n{server_extra}"),
        "timeout = \"20s\"",
        steps_toml,
    )
}

/// One rule `fix` running runbook `fix` with `steps` on `labels.instance`,
/// with `server` and `runbook` settings of the test's own.
pub fn rule_config(server: &str, runbook: &str, steps: &str) -> String {
    format!(
        r#"
[server]
kill_grace = "1s"
{server}

[[rule]]
name = "fix"
when = "labels.alertname != 'Ignored'"
runbook = "fix"
target = "labels.instance"

[runbook.fix]
{runbook}
steps = [ {steps} ]
"#
    )
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Whether this run is CI (`CI` set, other than to `false` or `0`): there a
/// test whose outside program is missing fails instead of being skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips `test`, which needs `missing` (the program and how to install it):
/// a failure under CI (`.ci/run` installs it), else a SKIPPED message
/// written straight to stderr, past libtest's capture, so it shows in the
/// output of `cargo test` even though the test counts as passed.
pub fn skip(test: &str, missing: &str) {
    assert!(
        !in_ci(),
        "{test}: {missing} is missing, and CI must run this test (.ci/run installs it)"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("\n*** SKIPPED: {test}: needs {missing}; the test did not run ***\n\n").as_bytes(),
    );
}

/// A tool of Debian's `prometheus` package (`prometheus`, `promtool`), or
/// None (the test is skipped, see `skip`) when it is not installed.
pub fn prometheus_tool(name: &str, test: &str) -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin").join(name);
    if path.exists() {
        return Some(path);
    }
    skip(
        test,
        &format!("{} (apt-get install prometheus)", path.display()),
    );
    None
}

/// A running Prometheus on a free loopback port; killed and reaped on drop.
pub struct Prometheus {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Prometheus {
    /// Starts `bin` with the config `config(port)` (written to dir/prometheus.yml,
    /// so relative rule files resolve in `dir`), its storage in dir/tsdb, and
    /// waits until it is ready.
    pub fn start(bin: &Path, dir: &Path, config: impl FnOnce(u16) -> String) -> Prometheus {
        let port = free_port();
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config(port)).expect("write prometheus.yml");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_until("prometheus to be ready", Duration::from_secs(30), || {
            (http("GET", &format!("{}/-/ready", prometheus.url), None, &[]).0 == 200).then_some(())
        });
        prometheus
    }

    /// Runs an instant query (`/api/v1/query`) until it returns at least one
    /// series, and returns them.
    pub fn wait_for(&self, query: &str, timeout: Duration) -> Vec<Value> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url,
            query
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>()
        );
        wait_until(&format!("prometheus to answer {query}"), timeout, || {
            let (code, body) = http("GET", &url, None, &[]);
            let body: Value = serde_json::from_str(&body).ok()?;
            let result = body["data"]["result"].as_array()?.clone();
            (code == 200 && !result.is_empty()).then_some(result)
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running graphite-web (Debian's `graphite-web` and `python3-whisper`,
/// started by `tests/graphite_server.py` with Debian's python3) on a free
/// loopback port; killed and reaped on drop.
pub struct GraphiteWeb {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl GraphiteWeb {
    /// Writes `series` ("metric.path=1,null,3", one point a minute up to a
    /// minute ago) as whisper files under dir/graphite and starts graphite-web
    /// on them; None (the test is skipped, see `skip`) when it is not installed.
    pub fn start(dir: &Path, test: &str, series: &[&str]) -> Option<GraphiteWeb> {
        let python = "/usr/bin/python3";
        let installed = Command::new(python)
            .args(["-c", "import graphite.render, whisper, django"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            skip(test, "graphite-web (apt-get install graphite-web)");
            return None;
        }
        let port = free_port();
        let child = Command::new(python)
            .arg(repo().join("tests/graphite_server.py"))
            .arg(port.to_string())
            .arg(dir.join("graphite"))
            .args(series)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start graphite-web");
        let graphite = GraphiteWeb {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let probe = format!("{}/render?target=none&format=json", graphite.url);
        wait_until("graphite-web to answer", Duration::from_secs(30), || {
            (http("GET", &probe, None, &[]).0 == 200).then_some(())
        });
        Some(graphite)
    }
}

impl Drop for GraphiteWeb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small xorshift generator: kill times and choices of the chaos tests
/// need to vary, not to be secret.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// A whole number from the environment variable `name`, else `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A random seed, or the one `name` replays (odd, never zero).
pub fn seed_from_env(name: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    env_number(name, now) | 1
}

/// Runs `heal serve` through `program` (heal itself, or a wrapper that execs
/// it) on dir/runbooks.toml and dir/heal.db, expecting it to stop by itself
/// within 20 s (a refusal at start); returns its exit code and stderr.
pub fn serve_until_exit(program: Command, dir: &Path) -> (Option<i32>, String) {
    serve_until_exit_on(program, dir, dir.join("heal.db").as_os_str())
}

/// `serve_until_exit` on the store `db`: a SQLite file or a PostgreSQL URL.
pub fn serve_until_exit_on(
    mut program: Command,
    dir: &Path,
    db: &std::ffi::OsStr,
) -> (Option<i32>, String) {
    let mut child = program
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("runbooks.toml"))
        .arg("--db")
        .arg(db)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn heal serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait heal serve") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("heal serve was expected to stop by itself but kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        std::io::Read::read_to_string(&mut stderr, &mut err).expect("read stderr");
    }
    (status.code(), err)
}
