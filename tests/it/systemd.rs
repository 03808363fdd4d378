//! Running under systemd: sd_notify (`READY=1`, `WATCHDOG=1`, `STOPPING=1`),
//! socket activation across restarts under load, bad variables, and the
//! outgoing `watchdog_url` ping.
//!
//! Socket activation needs no systemd here: the test binds the listening
//! socket itself, hands it to each heal as descriptor 3 with `LISTEN_FDS=1`,
//! and `sh` sets `LISTEN_PID` to the pid it then execs heal in. The test
//! keeps the socket open across restarts, as systemd's socket unit does.

use std::collections::HashSet;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    fixture, heal_bin, http, repo, serve_until_exit, test_dir, wait_agent_polling, wait_until,
    Agent, Server,
};

/// `sh` execs heal in its own pid, so `$$` is heal's pid.
const WITH_LISTEN_PID: &str = r#"LISTEN_PID=$$ exec "$0" "$@""#;

/// `heal serve` run through `sh` with `socket` as descriptor 3 and `LISTEN_PID` set to its pid.
fn activated(socket: &TcpListener, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", WITH_LISTEN_PID, heal_bin()])
        .env("LISTEN_FDS", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    pass_as_fd3(&mut cmd, socket.as_raw_fd());
    cmd
}

/// Makes `fd` descriptor 3 of the child, open across exec.
fn pass_as_fd3(cmd: &mut Command, fd: RawFd) {
    // SAFETY: between fork and exec the closure calls only dup2 and fcntl,
    // which are async-signal-safe, and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                // dup2 leaves the new descriptor open across exec.
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs a `heal serve` that must fail at start (empty config); returns its exit code and stderr.
fn serve_must_fail(cmd: Command, dir: &std::path::Path) -> (i32, String) {
    std::fs::write(dir.join("runbooks.toml"), "").expect("write config");
    let (code, stderr) = serve_until_exit(cmd, dir);
    (code.unwrap_or(-1), stderr)
}

/// Every message heal sent to `socket` until `until` arrives (bounded).
fn notifications_until(socket: &UnixDatagram, until: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).to_string();
                let done = message.lines().any(|l| l == until);
                got.push(message);
                if done {
                    return got;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
    panic!("no {until} within {timeout:?}; got {got:?}");
}

#[test]
fn notify_ready_then_watchdog_then_stopping() {
    let dir = test_dir("systemd-notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut cmd = Command::new(heal_bin());
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000");
    let mut server = Server::start_command(&dir, "", cmd, "127.0.0.1:0", &[]);
    let before = notifications_until(&socket, "READY=1", Duration::from_secs(20));
    let ready = before.last().unwrap();
    assert!(
        ready.contains(&format!("STATUS=serving on {}", server.url)),
        "{ready:?}"
    );
    // Every half WATCHDOG_USEC: at least 4 in 2.5 s.
    let started = Instant::now();
    let mut pings = 0;
    let mut buf = [0u8; 256];
    while started.elapsed() < Duration::from_millis(2500) {
        if let Ok(n) = socket.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1");
            pings += 1;
        }
    }
    assert!(pings >= 4, "{pings} WATCHDOG=1 in 2.5s");
    assert_eq!(server.terminate(), Some(0));
    notifications_until(&socket, "STOPPING=1", Duration::from_secs(5));
    let logs = server.logs();
    assert!(
        logs.contains("systemd watchdog: WATCHDOG=1 every 500ms"),
        "{logs}"
    );
}

/// Sends Alertmanager webhooks with unique fingerprints until `stop`; returns
/// the fingerprints answered 2xx and every failure.
fn stream_alerts(url: &str, client: usize, stop: &AtomicBool) -> (Vec<String>, Vec<String>) {
    let template: Value =
        serde_json::from_str(&fixture("alertmanager/raw/single_firing.json")).unwrap();
    let (mut stored, mut failed) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) && n < 5000 {
        n += 1;
        let fingerprint = format!("{client:02x}{n:014x}");
        let mut body = template.clone();
        body["alerts"][0]["fingerprint"] = json!(fingerprint);
        body["alerts"][0]["labels"]["instance"] = json!(format!("web-{client}-{n}"));
        let (status, text) = http(
            "POST",
            &format!("{url}/api/v1/alerts/alertmanager"),
            Some(body.to_string().as_bytes()),
            &[("Content-Type", "application/json")],
        );
        if (200..300).contains(&status) {
            stored.push(fingerprint);
        } else {
            failed.push(format!("{fingerprint}: {status} {text}"));
        }
    }
    (stored, failed)
}

#[test]
fn restarts_under_load_refuse_and_lose_nothing() {
    if crate::support::sqlite_only("systemd::restarts_under_load_refuse_and_lose_nothing") {
        return;
    }
    let dir = test_dir("systemd-restarts");
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().unwrap();
    let url = format!("http://{addr}");
    // Only the agent's own check runs a runbook; the stream is stored and decided.
    let config = r#"
[[rule]]
name = "fix"
when = "name == 'AgentCheck'"
runbook = "fix"
target = "labels.instance"

[runbook.fix]
steps = [ { name = "say", run = "echo still here" } ]
"#;
    let start = || {
        let cmd = activated(&socket, &[("LISTEN_FDNAMES", "heal.socket")]);
        // --listen names another port: heal must not bind it.
        let server = Server::start_command(&dir, config, cmd, "127.0.0.1:0", &[]);
        assert_eq!(server.url, url, "{}", server.logs());
        assert!(
            server.logs().contains(" (socket from systemd)"),
            "{}",
            server.logs()
        );
        server
    };
    let mut server = start();
    // An agent long-polls through every restart: its waiting poll is
    // answered at each stop and it finds the next heal on the same socket.
    let agent = Agent::start(&url, "agent-r", &["--allow", "fix"]);
    wait_agent_polling(&server, "agent-r");
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let (stored, failed) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let (url, stop, sent) = (&url, &stop, &sent);
                s.spawn(move || {
                    let out = stream_alerts(url, client, stop);
                    sent.fetch_add(out.0.len() + out.1.len(), Ordering::SeqCst);
                    out
                })
            })
            .collect();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(300));
            let stopping = Instant::now();
            assert_eq!(server.terminate(), Some(0), "{}", server.logs());
            // The drain ends when the clients have their answers, not at its 10 s cap.
            assert!(
                stopping.elapsed() < Duration::from_secs(5),
                "heal took {:?} to stop:\n{}",
                stopping.elapsed(),
                server.logs()
            );
            server = start();
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        let mut stored = Vec::new();
        let mut failed = Vec::new();
        for c in clients {
            let (s, f) = c.join().expect("client thread");
            stored.extend(s);
            failed.extend(f);
        }
        (stored, failed)
    });
    // The agent is still there: an alert for it runs on it.
    let (status, body) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "AgentCheck", "labels": { "instance": "agent-r" } }),
    );
    assert_eq!(status, 200, "{body}");
    let id = body["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no event in {body}"));
    let event = server.wait_event(id, &["succeeded", "failed"], Duration::from_secs(30));
    assert_eq!(event["state"], "succeeded", "{event:#}\n{}", agent.logs());
    assert_eq!(server.terminate(), Some(0));
    assert!(failed.is_empty(), "{} failed: {failed:#?}", failed.len());
    assert!(stored.len() >= 40, "only {} alerts sent", stored.len());
    let db = rusqlite::Connection::open_with_flags(
        dir.join("heal.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open heal.db");
    let mut stmt = db.prepare("SELECT fingerprint FROM alert").unwrap();
    let in_store: HashSet<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let lost: Vec<&String> = stored.iter().filter(|f| !in_store.contains(*f)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} alerts answered 2xx are not stored: {lost:?}",
        lost.len(),
        stored.len()
    );
    eprintln!(
        "{} alerts over 10 restarts, none refused, none lost",
        stored.len()
    );
}

#[test]
fn runbooks_inherit_neither_the_socket_nor_the_variables() {
    let dir = test_dir("systemd-inherit");
    let out = dir.join("env.txt");
    let config = format!(
        r#"
[[rule]]
name = "disk"
when = "labels.alertname == 'DiskSpaceLow'"
runbook = "show"
target = "labels.instance"

[runbook.show]
steps = [ {{ name = "env", run = "echo \"${{LISTEN_FDS:-unset}} ${{LISTEN_PID:-unset}} ${{NOTIFY_SOCKET:-unset}} ${{WATCHDOG_USEC:-unset}}\" > {out}; if [ -e /proc/self/fd/3 ] && [ -S /proc/self/fd/3 ]; then echo fd3-socket >> {out}; fi" }} ]
"#,
        out = out.display()
    );
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let notify = dir.join("notify.sock");
    let _receiver = UnixDatagram::bind(&notify).expect("bind notify socket");
    let cmd = activated(
        &socket,
        &[
            ("NOTIFY_SOCKET", notify.to_str().unwrap()),
            ("WATCHDOG_USEC", "30000000"),
        ],
    );
    let server = Server::start_command(
        &dir,
        &config,
        cmd,
        "127.0.0.1:0",
        &["--local-agent", "--local-agent-id", "web-1"],
    );
    let (status, text) = server.post_raw(
        "/api/v1/alerts/alertmanager",
        fixture("alertmanager/raw/single_firing.json").as_bytes(),
        &[],
    );
    assert_eq!(status, 200, "{text}");
    let seen = wait_until("the runbook to run", Duration::from_secs(20), || {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_eq!(seen, "unset unset unset unset\n", "{}", server.logs());
}

#[test]
fn bad_socket_activation_variables_are_refused_by_name() {
    let dir = test_dir("systemd-bad-vars");
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("LISTEN_FDS", "abc")],
            "LISTEN_FDS \"abc\": is not a number of sockets",
        ),
        (
            &[("LISTEN_FDS", "2")],
            "LISTEN_FDS \"2\": heal serves one socket",
        ),
        (
            &[("LISTEN_FDNAMES", "a:b")],
            "LISTEN_FDNAMES \"a:b\": names 2 sockets, LISTEN_FDS 1",
        ),
        (
            &[("NOTIFY_SOCKET", "run/notify")],
            "NOTIFY_SOCKET \"run/notify\": is neither an absolute path",
        ),
        (
            &[("WATCHDOG_USEC", "30s")],
            "WATCHDOG_USEC \"30s\" is not a positive number of microseconds",
        ),
    ];
    for (env, expected) in cases {
        let (code, stderr) = serve_must_fail(activated(&socket, env), &dir);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
    // Descriptor 3 is not a socket.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", WITH_LISTEN_PID, heal_bin()])
        .env("LISTEN_FDS", "1");
    let file = std::fs::File::open(repo().join("Cargo.toml")).unwrap();
    pass_as_fd3(&mut cmd, file.as_raw_fd());
    let (code, stderr) = serve_must_fail(cmd, &dir);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("LISTEN_FDS: descriptor 3 is not a socket"),
        "{stderr}"
    );
    // A socket on every address without a token is refused, as --listen would be.
    let open = TcpListener::bind("0.0.0.0:0").expect("bind 0.0.0.0");
    let (code, stderr) = serve_must_fail(activated(&open, &[]), &dir);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no [[token]] configured, so heal refuses to listen on 0.0.0.0:"),
        "{stderr}"
    );
}

#[test]
fn sockets_for_another_process_are_ignored() {
    let dir = test_dir("systemd-other-pid");
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut cmd = Command::new(heal_bin());
    cmd.env("LISTEN_FDS", "1").env("LISTEN_PID", "1");
    pass_as_fd3(&mut cmd, socket.as_raw_fd());
    let server = Server::start_command(&dir, "", cmd, "127.0.0.1:0", &[]);
    assert_ne!(server.addr, socket.local_addr().unwrap().to_string());
    let logs = server.logs();
    assert!(logs.contains("LISTEN_PID 1 is not heal's pid"), "{logs}");
    assert!(!logs.contains("socket from systemd"), "{logs}");
    let (status, _) = http("GET", &format!("{}/-/healthy", server.url), None, &[]);
    assert_eq!(status, 200);
}

/// A local receiver that counts GETs and answers `status`.
struct PingReceiver {
    url: String,
    gets: Arc<Mutex<Vec<String>>>,
    status: Arc<Mutex<u16>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PingReceiver {
    fn start() -> PingReceiver {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind receiver");
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let gets = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st, sp) = (gets.clone(), status.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                g.lock()
                    .unwrap()
                    .push(format!("{} {}", req.method(), req.url()));
                let code = *st.lock().unwrap();
                let _ = req.respond(tiny_http::Response::from_string("OK").with_status_code(code));
            }
        });
        PingReceiver {
            url,
            gets,
            status,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.gets.lock().unwrap().len()
    }
}

impl Drop for PingReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn watchdog_url_is_pinged_on_schedule_and_its_secret_never_logged() {
    let dir = test_dir("systemd-watchdog-url");
    let receiver = PingReceiver::start();
    let secret = "0f3c9a1e-watchdog-secret";
    let config = format!(
        "[server]\nwatchdog_url = \"{}/ping/${{HEAL_TEST_WATCHDOG_KEY}}\"\nwatchdog_every = \"1s\"\n",
        receiver.url
    );
    let mut cmd = Command::new(heal_bin());
    cmd.env("HEAL_TEST_WATCHDOG_KEY", secret);
    let mut server = Server::start_command(&dir, &config, cmd, "127.0.0.1:0", &[]);
    wait_until("three pings", Duration::from_secs(10), || {
        (receiver.count() >= 3).then_some(())
    });
    let started = Instant::now();
    let before = receiver.count();
    std::thread::sleep(Duration::from_millis(3100));
    let in_3s = receiver.count() - before;
    assert!(
        (2..=5).contains(&in_3s),
        "{in_3s} pings in {:?} at watchdog_every = 1s",
        started.elapsed()
    );
    assert!(receiver
        .gets
        .lock()
        .unwrap()
        .iter()
        .all(|g| g == &format!("GET /ping/{secret}")));
    // A failing receiver is logged once, by host only.
    *receiver.status.lock().unwrap() = 500;
    let shown = format!("watchdog_url {}/…: answered HTTP 500", receiver.url);
    wait_until("the failure to be logged", Duration::from_secs(10), || {
        server.logs().contains(&shown).then_some(())
    });
    *receiver.status.lock().unwrap() = 200;
    wait_until("the recovery to be logged", Duration::from_secs(10), || {
        server
            .logs()
            .contains("pinged again (HTTP 200)")
            .then_some(())
    });
    assert_eq!(server.terminate(), Some(0));
    let logs = server.logs();
    assert_eq!(logs.matches(&shown).count(), 1, "{logs}");
    assert!(!logs.contains(secret), "the secret was logged:\n{logs}");
    // A bad URL is a config error that names the field.
    std::fs::write(
        dir.join("bad.toml"),
        "[server]\nwatchdog_url = \"hc-ping.com/x\"\n",
    )
    .unwrap();
    let (code, _, stderr) = crate::support::heal_cli(
        &[
            "check-config",
            "--config",
            dir.join("bad.toml").to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("[server]: watchdog_url: must start with http:// or https://"),
        "{stderr}"
    );
}

/// A program from Debian's systemd package, or None (the test is skipped,
/// see `skip`).
fn systemd_tool(name: &str, test: &str) -> Option<std::path::PathBuf> {
    let found = ["/usr/bin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists());
    if found.is_none() {
        crate::support::skip(test, &format!("{name} (apt-get install systemd)"));
    }
    found
}

#[test]
#[ignore = "needs systemd-socket-activate (apt-get install systemd); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_real_systemd_socket_activate_hands_heal_its_socket() {
    let Some(tool) = systemd_tool(
        "systemd-socket-activate",
        "the_real_systemd_socket_activate_hands_heal_its_socket",
    ) else {
        return;
    };
    let dir = test_dir("systemd-socket-activate");
    let addr = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().unwrap()
    };
    let mut cmd = Command::new(tool);
    cmd.args(["-l", &addr.to_string(), "--fdname=heal", heal_bin()]);
    // The tool execs heal at the first connection: this one waits in the
    // socket's backlog meanwhile and is answered by heal.
    let first = std::thread::spawn(move || {
        let url = format!("http://{addr}/-/healthy");
        for _ in 0..200 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return http("GET", &url, None, &[]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("systemd-socket-activate never listened on {addr}");
    });
    let mut server = Server::start_command(&dir, "", cmd, "127.0.0.1:0", &[]);
    let (status, body) = first.join().expect("first client");
    assert_eq!(status, 200, "{body}\n{}", server.logs());
    assert_eq!(server.url, format!("http://{addr}"), "{}", server.logs());
    assert!(server.logs().contains(" (socket from systemd)"));
    let (status, _) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "Activated", "labels": { "instance": "web-1" } }),
    );
    assert_eq!(status, 200, "{}", server.logs());
    assert_eq!(server.terminate(), Some(0), "{}", server.logs());
}

#[test]
#[ignore = "needs systemd-analyze (apt-get install systemd); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_example_units_pass_systemd_analyze_verify() {
    let Some(tool) = systemd_tool(
        "systemd-analyze",
        "the_example_units_pass_systemd_analyze_verify",
    ) else {
        return;
    };
    let dir = test_dir("systemd-units");
    let units = ["heal.socket", "heal.service", "heal-agent.service"];
    for unit in units {
        let text = std::fs::read_to_string(repo().join("examples/systemd").join(unit))
            .unwrap_or_else(|e| panic!("examples/systemd/{unit}: {e}"));
        // verify checks that ExecStart= exists: point it at the heal under test.
        assert_eq!(
            text.contains("ExecStart=/usr/bin/heal "),
            unit.ends_with(".service"),
            "{unit}"
        );
        std::fs::write(
            dir.join(unit),
            text.replace("/usr/bin/heal ", &format!("{} ", heal_bin())),
        )
        .unwrap();
    }
    let out = Command::new(tool)
        .args(["verify", "--man=no"])
        .args(units.iter().map(|u| dir.join(u)))
        .current_dir(&dir)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Warnings count too (unknown keys, bad values); only systemd's own noise about the host is allowed.
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("heal")).collect();
    assert!(complaints.is_empty(), "{stderr}");
    // The server unit is what the docs promise: notify, watchdog, the socket.
    let service = std::fs::read_to_string(dir.join("heal.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Requires=heal.socket",
        "ExecReload=",
    ] {
        assert!(service.contains(line), "heal.service lacks {line}");
    }
}

/// Every setting of /etc/default/heal-agent (examples/debian/heal-agent.default)
/// is one heal-agent.service passes to heal, or one heal reads itself, and back.
#[test]
fn the_agent_settings_file_names_what_the_agent_unit_reads() {
    let unit = std::fs::read_to_string(repo().join("examples/systemd/heal-agent.service")).unwrap();
    let settings =
        std::fs::read_to_string(repo().join("examples/debian/heal-agent.default")).unwrap();
    assert!(
        unit.contains("\nEnvironmentFile=-/etc/default/heal-agent\n"),
        "{unit}"
    );
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    // The ones heal reads from its environment (heal agent --help says so).
    let mut read: Vec<String> = vec!["HEAL_SERVER".into(), "HEAL_CA_FILE".into()];
    read.extend(
        exec.split("${")
            .skip(1)
            .map(|s| s.split('}').next().unwrap().to_string()),
    );
    read.sort();
    let mut named: Vec<String> = settings
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(name, _)| name.to_string())
        .filter(|name| name.starts_with("HEAL_") && !name.contains(' '))
        .collect();
    named.sort();
    assert_eq!(named, read, "{exec}");
    let help = crate::support::heal_cli(&["agent", "--help"], &[], None).1;
    for name in ["HEAL_SERVER", "HEAL_CA_FILE"] {
        assert!(help.contains(&format!("${name}")), "{help}");
    }
    // Each ${NAME} of ExecStart= has a default in the unit's Environment=.
    let defaults = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment="))
        .expect("Environment=");
    for name in read.iter().filter(|n| exec.contains(&format!("${{{n}}}"))) {
        assert!(defaults.contains(&format!("{name}=")), "{name}: {defaults}");
    }
}
