//! A throwaway PostgreSQL cluster for the store's tests: the server programs
//! of Debian's `postgresql` package (the highest major under
//! /usr/lib/postgresql), a fresh data directory in the test's temp dir, a
//! free port on 127.0.0.1 and a unix socket inside the temp dir, so nothing
//! is shared with a packaged cluster or another test.
//!
//! `initdb` and `postgres` refuse to run as root: under root they run as the
//! `postgres` system user (else `nobody`) through `setpriv`, which execs, so
//! the postmaster is this process's own child; it is stopped by signals to
//! that pid only, as `pg_ctl stop` would send them, and reaped. Authentication
//! is `trust`, which is safe only because the server listens on 127.0.0.1
//! and in a directory of its own.
//!
//! `start` keeps durability on (crash tests need it); `start_fast` turns
//! fsync, synchronous commit and full-page writes off for tests that only
//! need a database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, skip, test_dir};

/// Settings of a cluster that may lose its last commits on a machine crash.
const FAST: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
];

/// How long the server may take to accept connections, or to stop.
const WAIT: Duration = Duration::from_secs(30);

/// A running PostgreSQL cluster of the test's own; stopped at once and its
/// directory removed on drop.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/heal`, the database `heal`.
    pub url: String,
    /// The port it listens on, on 127.0.0.1 only.
    pub port: u16,
    /// The temp dir: data directory `data`, log `postgres.log`, the socket.
    pub dir: PathBuf,
    bin: PathBuf,
    run_as: Option<User>,
    settings: &'static [&'static str],
    child: Option<Child>,
}

/// The unprivileged user the server runs as when the tests run as root.
struct User {
    uid: u32,
    gid: u32,
}

/// A cluster with durability on (fsync, synchronous commit, full-page
/// writes), or None (the test is skipped, see `skip`) when PostgreSQL's
/// server is not installed.
pub fn start(test: &str) -> Option<Postgres> {
    Postgres::start(test, &[])
}

/// A cluster without durability, quicker to write to, or None as for `start`.
pub fn start_fast(test: &str) -> Option<Postgres> {
    Postgres::start(test, FAST)
}

impl Postgres {
    fn start(test: &str, settings: &'static [&'static str]) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            skip(test, "PostgreSQL's server (apt-get install postgresql)");
            return None;
        };
        let run_as = unprivileged_user();
        // Numbered, not named after the test: the server's socket path in
        // it must fit in 107 bytes.
        static CLUSTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = test_dir(&format!("pg{n}"));
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
        }
        let mut pg = Postgres {
            url: String::new(),
            port: free_port(),
            dir,
            bin,
            run_as,
            settings,
            child: None,
        };
        let begun = Instant::now();
        let initdb = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C")
            .output()
            .expect("run initdb");
        assert!(initdb.status.success(), "initdb: {}", describe(&initdb));
        let initialized = Instant::now();
        pg.run();
        pg.psql_in("postgres", "CREATE DATABASE heal");
        pg.url = format!("postgres://postgres@127.0.0.1:{}/heal", pg.port);
        eprintln!(
            "postgres: {} ready in {} ms (initdb {} ms, start and create database {} ms){}",
            pg.url,
            begun.elapsed().as_millis(),
            (initialized - begun).as_millis(),
            initialized.elapsed().as_millis(),
            if settings.is_empty() { "" } else { ", fast" }
        );
        Some(pg)
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Runs `sql` in the database `heal` with the package's psql over TCP;
    /// returns its unaligned, tuples-only output (one line per row, columns
    /// separated by `|`) without the last newline. Panics, with psql's
    /// errors, when a statement fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("heal", sql)
    }

    /// Fast shutdown (what `pg_ctl stop -m fast` does: SIGINT to the
    /// postmaster): sessions are ended, a checkpoint is written.
    pub fn stop(&mut self) {
        self.shut_down(libc::SIGINT, "fast");
    }

    /// Immediate shutdown (`pg_ctl stop -m immediate`: SIGQUIT), as in a
    /// crash: no checkpoint, the next start replays the WAL.
    pub fn kill(&mut self) {
        self.shut_down(libc::SIGQUIT, "immediate");
    }

    /// Stops the server (fast) if it runs, and starts it again on the same
    /// port and data.
    pub fn restart(&mut self) {
        self.restart_after(Duration::ZERO);
    }

    /// `restart`, down for `pause` between the stop and the start.
    pub fn restart_after(&mut self, pause: Duration) {
        self.stop();
        std::thread::sleep(pause);
        self.run();
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A program of the package, run as the unprivileged user under root,
    /// in the temp dir and without the caller's PG* variables.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .args(["--init-groups", "--"])
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                command.env_remove(name);
            }
        }
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    /// Starts the postmaster and waits until it accepts connections on
    /// 127.0.0.1; panics with the log's tail if it exits or is not ready
    /// within `WAIT`.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("open the postgres log");
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(&self.dir);
        for setting in self.settings {
            command.args(["-c", setting]);
        }
        let child = command
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        for _ in 0..2000 {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!("postgres exited with {status}:\n{}", self.log_tail());
            }
            if self.ready(pid) {
                return;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "postgres did not accept connections on 127.0.0.1:{} within {WAIT:?}:\n{}",
            self.port,
            self.log_tail()
        );
    }

    /// Whether the postmaster `pid` (ours, per DATA/postmaster.pid: not
    /// another server that took the port) is ready and answers on 127.0.0.1.
    fn ready(&self, pid: u32) -> bool {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid"));
        let ours_and_ready = pid_file.is_ok_and(|text| {
            let lines: Vec<&str> = text.lines().collect();
            lines.first() == Some(&pid.to_string().as_str())
                && lines.get(7).map(|status| status.trim()) == Some("ready")
        });
        ours_and_ready
            && self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", "postgres", "-t", "5", "-q"])
                .status()
                .is_ok_and(|status| status.success())
    }

    /// Shuts the server down with `signal` (the `pg_ctl` `mode` it stands
    /// for), if it runs; panics with the log's tail if it did not stop.
    fn shut_down(&mut self, signal: libc::c_int, mode: &str) {
        let stopped = self.signal_and_reap(signal);
        assert!(
            stopped,
            "postgres did not stop within {WAIT:?} ({mode} shutdown):\n{}",
            self.log_tail()
        );
    }

    /// Sends `signal` to our postmaster, if it runs, and reaps it; false
    /// when it had to be killed (SIGKILL) after not stopping within `WAIT`.
    fn signal_and_reap(&mut self, signal: libc::c_int) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + WAIT;
        for _ in 0..5000 {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn psql_in(&self, database: &str, sql: &str) -> String {
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres dbname={database} connect_timeout=10",
            self.port
        );
        let mut command = self.command("psql");
        let mut child = command
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                "-",
                "-d",
            ])
            .arg(conninfo)
            // A statement waiting on a lock fails instead of hanging the test.
            .env("PGOPTIONS", "-c statement_timeout=60s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql");
        // Written from a thread: psql may fill its output pipe before it has
        // read all of its input.
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = sql.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().expect("wait for psql");
        let _ = writer.join();
        assert!(out.status.success(), "psql {sql:?}: {}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        text.strip_suffix('\n').unwrap_or(&text).to_string()
    }

    /// The last 40 lines of the server's log.
    fn log_tail(&self) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- postgres log ---\n{}", self.log_tail());
        }
        // Not `kill()`: a panic in a drop while unwinding would abort.
        self.signal_and_reap(libc::SIGQUIT);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The bin directory of the highest PostgreSQL major installed with all the
/// programs the harness runs.
fn bin_dir() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|major| {
            let bin = root.join(major.to_string()).join("bin");
            ["initdb", "postgres", "pg_isready", "psql"]
                .iter()
                .all(|program| bin.join(program).is_file())
        })
        .max()
        .map(|major| root.join(major.to_string()).join("bin"))
}

/// Under root, the user to run the server as: `postgres` (the package's),
/// else `nobody`; None when the tests do not run as root.
fn unprivileged_user() -> Option<User> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // System users are local: /etc/passwd is enough, and unlike getpwnam it
    // is safe to read from the tests' parallel threads.
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let user = |name: &str| {
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != name {
                return None;
            }
            let mut ids = fields.skip(1);
            Some(User {
                uid: ids.next()?.parse().ok()?,
                gid: ids.next()?.parse().ok()?,
            })
        })
    };
    let found = user("postgres").or_else(|| user("nobody"));
    assert!(
        found.is_some(),
        "PostgreSQL refuses to run as root, and /etc/passwd has neither a postgres nor a nobody user"
    );
    found
}

/// A finished command's status and output, for a failure message.
fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
