//! `heal serve`: builds the state (config, store, listener), runs every
//! thread inside one `std::thread::scope`, and owns shutdown and reload.
//!
//! Threads: N HTTP workers (`api::handle`), one store writer (group commit),
//! one sweeper (ends long-poll waits, declares expired ops lost), the
//! scheduler (`watch`), the outbox and its channel workers (`outbox`), one
//! signal thread (SIGTERM/SIGINT stop, SIGHUP reload), and with
//! `--local-agent` an in-process agent. Shared memory holds only the current
//! `Arc<Config>`, the parked polls, the shutdown flag, a few caches and the
//! metric counters; everything else lives in SQLite.

pub mod api;
pub mod dashboard;
pub mod front;
pub mod intake;
pub mod leader;
pub mod lifecycle;
pub mod longpoll;
pub mod manual;
pub mod metrics;
pub mod outbox;
pub mod peers;
pub mod replicas;
pub mod systemd;
pub mod watch;
pub mod watchdog;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::{self, Config, Scope, Token};
use crate::error::{Error, Result};
use crate::store::sql::Db;
use crate::store::{self, Writer};
use crate::time::now_ms;

pub use crate::shutdown::Shutdown;

/// What every server thread shares.
pub struct State {
    config: RwLock<Arc<Config>>,
    /// The store's writer thread.
    pub writer: Writer,
    /// Polls waiting for work.
    pub waiters: longpoll::Waiters,
    /// The SQLite file, for the sweeper's, scheduler's and outbox's own
    /// connections.
    pub location: store::Location,
    /// The HTTP workers' read connections, lent per request.
    pub readers: store::Readers,
    /// Tokens heal made for itself (the local agent's).
    pub internal_tokens: Vec<Token>,
    /// With no `[[token]]` configured, requests need no token (loopback only).
    pub open_without_tokens: bool,
    /// What the scheduler shares with the API.
    pub watch: watch::Shared,
    /// What the outbox shares with the API.
    pub outbox: outbox::Shared,
    /// Refused tokens this minute: (minute, count, not yet recorded).
    refusals: Mutex<(i64, u64, u64)>,
    /// The front door (TLS, request limits); knows each request's client.
    pub front: Arc<front::Front>,
    /// When the sweeper last finished a round (the watchdogs ping only while it is recent).
    pub alive: watchdog::Alive,
    /// The counters of `/metrics`.
    pub metrics: metrics::Metrics,
    /// What the dashboard keeps in memory (the CSRF secret of an open dashboard).
    pub dashboard: dashboard::Shared,
    /// Failed authentications (API tokens and logins) by client address this minute.
    pub auth_failures: api::limit::Failures,
    /// Whether this server leads (runs the sweeper, scheduler and outbox).
    pub leadership: Arc<leader::Leadership>,
    /// The other servers on a shared database, told of wake-ups.
    pub peers: peers::Peers,
    /// This server's host, address and start, for the replica list.
    pub me: replicas::Me,
}

impl State {
    /// The current config snapshot; a unit of work clones it once and uses that.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Offers newly queued ops and checks to the parked polls of these
    /// agents (after the commit that queued them); an agent without a parked
    /// poll gets them when it next polls.
    pub fn wake(&self, agents: &[String]) {
        let elsewhere = self.wake_here(agents);
        if !elsewhere.is_empty() {
            self.peers.wake(&elsewhere);
        }
    }

    /// Another process asks for `agent`'s id: the holder's waiting poll,
    /// here or on another server, is answered, so a live holder polls
    /// again at once (`store::claim_agent`).
    /// (A refused newcomer has no poll parked: the one parked is the holder's.)
    pub fn ask_holder(&self, agent: &str) {
        if !self.waiters.release(agent) {
            self.peers.ask(agent);
        }
    }

    /// `wake` for the polls parked on this server; returns the agents that
    /// have none here (on a shared database, another server may have it).
    pub fn wake_here(&self, agents: &[String]) -> Vec<String> {
        let mut agents = agents.to_vec();
        agents.sort();
        agents.dedup();
        let lease = self.config().server.lease.as_millis() as i64;
        let checks = self.watch.checks.any();
        let mut elsewhere = Vec::new();
        for agent in agents {
            let Some(parked) = self.waiters.take(&agent) else {
                elsewhere.push(agent);
                continue;
            };
            let id = agent.clone();
            let claimed = self.writer.write(move |conn| {
                let now = now_ms();
                let claimed = store::claim_ops(
                    conn,
                    &id,
                    &parked.instance,
                    parked.capacity,
                    now + lease,
                    now,
                )?;
                let runs = match checks {
                    true => store::claim_checks(conn, &id, now)?,
                    false => Vec::new(),
                };
                Ok((parked, claimed, runs))
            });
            match claimed {
                Ok((parked, claimed, runs)) if claimed.is_empty() && runs.is_empty() => {
                    self.waiters.put_back(&agent, parked)
                }
                Ok((parked, claimed, runs)) => {
                    let specs = self.watch.checks.specs(&runs);
                    longpoll::respond_ops(parked.request, &claimed, &specs)
                }
                // The poll was dropped with the failed job (answered 500); the agent polls again.
                Err(e) => log::error!("handing new ops to agent {agent}: {e}"),
            }
        }
        elsewhere
    }

    /// Runs a lifecycle job in the store, then wakes agents and logs.
    pub fn lifecycle(
        &self,
        f: impl FnOnce(Db<'_>) -> Result<lifecycle::Done> + Send + 'static,
    ) -> Result<()> {
        let done = self.writer.write(f)?;
        for (level, line) in &done.log {
            log::log!(*level, "{line}");
        }
        self.wake(&done.woke);
        Ok(())
    }

    /// Reloads the config file: validated first, then swapped whole and
    /// recorded as a version (new only when the text changed). An invalid
    /// file is refused with its error and the running config stays; so is
    /// one that would leave no token or no rule where some run now
    /// (`config::emptied`), unless it sets `[server] allow_empty` or `force`.
    pub fn reload(&self, by: &str, force: bool) -> Result<(i64, bool)> {
        let running = self.config();
        let path = running.path.clone();
        let refuse = |result: &'static str, e: Error| {
            log::error!("reload by {by} refused, the running config stays: {e}");
            self.metrics.observe_reload(result);
            self.audit(
                by,
                "config.refused",
                &path.display().to_string(),
                &e.to_string(),
                None,
            );
            Err(e)
        };
        let new = match config::load(&path) {
            Ok(new) => new,
            Err(e) => return refuse("invalid", e),
        };
        let mut forced = None;
        if let Some(why) = config::emptied(&running, &new) {
            if !force && !new.server.allow_empty {
                return refuse("refused", Error::Config(why));
            }
            log::warn!("reload by {by} applied though the new config {why}");
            forced = Some(why);
        }
        let (hash, shown) = (new.hash.clone(), path.display().to_string());
        let (rules, runbooks) = (new.rules.len(), new.runbooks.len());
        warn_expiring_tokens(&new);
        log_config_warnings(&new);
        self.front.set_max_body(new.server.max_body);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        self.metrics.observe_reload("applied");
        if let Some(why) = forced {
            let how = if force { "forced" } else { "allow_empty" };
            self.audit(by, "config.emptied", &shown, &format!("{how}: {why}"), None);
        }
        let by_ = by.to_string();
        let applied = self.config();
        let (version, changed) = self.writer.write(move |conn| {
            let now = now_ms();
            let recorded = store::apply_config(conn, &hash, &by_, &shown, now)?;
            watch::sync_heartbeats(conn, &applied, now)?;
            Ok(recorded)
        })?;
        log::info!(
            "reloaded {} ({by}): version {version}{}, {rules} rules, {runbooks} runbooks",
            path.display(),
            if changed { "" } else { ", unchanged" }
        );
        Ok((version, changed))
    }

    /// Appends to the audit log (after the change it records) and logs it.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        remote: Option<&str>,
    ) {
        let (a, b, c, d, r) = (
            actor.to_string(),
            action.to_string(),
            target.to_string(),
            detail.to_string(),
            remote.map(str::to_string),
        );
        let written = self.writer.write(move |conn| {
            store::record_audit(
                conn,
                &store::NewAudit {
                    actor: &a,
                    action: &b,
                    target: &c,
                    detail: &d,
                    remote: r.as_deref(),
                },
                now_ms(),
            )
        });
        if let Err(e) = written {
            log::error!("audit log: cannot record {action} by {actor}: {e}");
        }
    }

    /// Records a refused token: the first `REFUSALS_PER_MINUTE` of each
    /// minute in the audit log and the log, the rest counted into the next
    /// entry, so a flood cannot fill either.
    pub fn refused(&self, route: &str, remote: Option<&str>, why: &str) {
        let minute = now_ms() / 60_000;
        let folded = {
            let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
            if r.0 != minute {
                *r = (minute, 0, r.2);
            }
            r.1 += 1;
            if r.1 > REFUSALS_PER_MINUTE {
                r.2 += 1;
                return;
            }
            std::mem::take(&mut r.2)
        };
        let detail = if folded > 0 {
            format!("{why} (and {folded} more refusals not recorded one by one)")
        } else {
            why.to_string()
        };
        log::warn!(
            "refused a request to {route} from {}: {detail}",
            remote.unwrap_or("unknown")
        );
        self.audit("anonymous", "auth.refused", route, &detail, remote);
    }
}

/// Tokens that end within this long are named at start and reload.
const EXPIRY_WARNING_MS: i64 = 14 * 86_400_000;

/// Logs each token that has expired or ends within `EXPIRY_WARNING_MS`.
/// Logs what the file says that is valid but likely not meant, as
/// `check-config` prints it.
fn log_config_warnings(config: &Config) {
    for w in &config.warnings {
        log::warn!("config: {w}");
    }
}

fn warn_expiring_tokens(config: &Config) {
    let now = now_ms();
    for t in &config.tokens {
        let Some(at) = t.expires else { continue };
        let when = crate::time::format_rfc3339(at);
        if now >= at {
            log::warn!("token {:?} expired at {when}: heal refuses it; remove it from {} or replace it (heal token new)", t.name, config.path.display());
        } else if at - now < EXPIRY_WARNING_MS {
            log::warn!(
                "token {:?} expires at {when}: give its client a new one (heal token new)",
                t.name
            );
        }
    }
}

/// Refused tokens recorded one by one per minute; the rest are counted.
const REFUSALS_PER_MINUTE: u64 = 10;

/// Options of `heal serve`.
pub struct Options {
    /// The validated config.
    pub config: Config,
    /// Listen address (overrides `[server] listen`).
    pub listen: Option<String>,
    /// Database (overrides `[server] db`).
    pub db: Option<PathBuf>,
    /// Run an in-process agent.
    pub local_agent: Option<LocalAgent>,
    /// Serve plain HTTP on an address other than loopback.
    pub insecure_http: bool,
}

/// The in-process agent of `serve --local-agent`.
pub struct LocalAgent {
    /// Its id (default: the host name).
    pub id: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Ops at once.
    pub concurrency: usize,
}

/// Runs the server until SIGTERM/SIGINT (or `shutdown` is triggered).
pub fn serve(opts: Options, shutdown: Arc<Shutdown>) -> Result<()> {
    let mut systemd = systemd::Systemd::from_env()?;
    let config = opts.config;
    let listen = opts
        .listen
        .clone()
        .unwrap_or_else(|| config.server.listen.clone());
    let location =
        store::Location::parse(&opts.db.clone().unwrap_or_else(|| config.server.db.clone()));
    // A socket from systemd wins over --listen: the checks below apply to it.
    let addr: SocketAddr = match &systemd.listener {
        Some(socket) => socket
            .local_addr()
            .map_err(|e| Error::Io("reading the address of the socket from systemd".into(), e))?,
        None => listen.parse().map_err(|_| {
            Error::Usage(format!(
                "--listen {listen:?} is not an address like 127.0.0.1:7878"
            ))
        })?,
    };
    if config.tokens.is_empty() {
        if !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "{}: no [[token]] configured, so heal refuses to listen on {addr}: add a token, or listen on 127.0.0.1",
                config.path.display()
            )));
        }
        log::warn!(
            "no [[token]] in {}: serving without authentication on loopback only",
            config.path.display()
        );
    }
    let tls_set = config.server.tls_cert.is_some();
    if !addr.ip().is_loopback() && !opts.insecure_http && !tls_set {
        return Err(Error::Config(format!(
            "heal refuses to serve plain HTTP on {addr}: tokens and alert data would cross the network in clear. Listen on 127.0.0.1 behind a TLS-terminating proxy, or pass --insecure-http on a network you trust"
        )));
    }
    // Many HTTP threads each get a glibc malloc arena that keeps what a large
    // answer once used; a few shared arenas keep the server's memory flat.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    raise_open_files();
    // Before any connection opens: SQLite's error log feeds `/-/ready`.
    store::health::install();
    // A SQLite file is one server's: the lock is held until `serve`
    // returns, and the kernel frees it however heal ends. Several servers
    // share a PostgreSQL database (`leader`, `peers`).
    let (mut lock, write_conn) = match &location {
        store::Location::File(path) => (
            Some(store::lock::acquire(path, &addr.to_string())?),
            store::Conn::Sqlite(store::open_and_migrate(path)?),
        ),
        store::Location::Postgres(url) => (None, store::postgres::open_and_migrate(url)?),
    };
    let (version, _) = write_conn.db().transaction("recording the config", |db| {
        let now = now_ms();
        let applied = store::apply_config(
            db,
            &config.hash,
            "startup",
            &config.path.display().to_string(),
            now,
        )?;
        watch::sync_heartbeats(db, &config, now)?;
        Ok(applied)
    })?;
    log::info!(
        "config {} is version {version} (sha256 {})",
        config.path.display(),
        &config.hash[..12.min(config.hash.len())]
    );
    warn_expiring_tokens(&config);
    log_config_warnings(&config);
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(front::tls_config(cert, key)?),
        _ => None,
    };
    let from_systemd = systemd.listener.is_some();
    let listener = match systemd.listener.take() {
        Some(socket) => socket,
        None => std::net::TcpListener::bind(addr)
            .map_err(|e| Error::Failed(format!("cannot listen on {addr}: {e}")))?,
    };
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Io("reading the bound address".into(), e))?;
    // The HTTP server listens on loopback only; the front door is the way in.
    let server = tiny_http::Server::from_listener(nodelay_loopback_listener()?, None)
        .map_err(|e| Error::Failed(format!("cannot serve on 127.0.0.1: {e}")))?;
    let inner = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::Failed("listener has no IP address".into()))?;
    let server = Arc::new(server);
    let front = Arc::new(front::Front::new(
        tls,
        inner,
        front::Limits {
            max_header: config.server.max_header,
            max_body: config.server.max_body,
            request_timeout: config.server.request_timeout,
            idle_timeout: config.server.idle_timeout,
            max_connections: config.server.max_connections,
        },
    ));
    let scheme = if front.is_tls() { "https" } else { "http" };
    let address = format!("{scheme}://{bound}");
    let host = crate::host::hostname();
    if let Some(lock) = &mut lock {
        lock.describe(&address)?;
    }
    let mut internal_tokens = Vec::new();
    let local = opts.local_agent.map(|l| {
        let secret = crate::agent::random_hex(32);
        internal_tokens.push(Token {
            name: "local-agent".into(),
            scopes: vec![Scope::Agent],
            hash: config::token_hash(&secret),
            agent: Some(l.id.clone()),
            tags: l.tags.clone(),
            expires: None,
        });
        (l, secret)
    });
    let (writer, jobs) = Writer::new();
    let threads = config.server.http_threads;
    let shared = matches!(location, store::Location::Postgres(_));
    let peers = peers::Peers::new(match &location {
        store::Location::Postgres(url) => Some(url.clone()),
        store::Location::File(_) => None,
    });
    let state = Arc::new(State {
        open_without_tokens: config.tokens.is_empty(),
        config: RwLock::new(Arc::new(config)),
        writer,
        waiters: longpoll::Waiters::default(),
        readers: store::Readers::new(&location),
        location,
        internal_tokens,
        watch: watch::Shared::default(),
        outbox: outbox::Shared::default(),
        refusals: Mutex::new((0, 0, 0)),
        front: front.clone(),
        alive: watchdog::Alive::default(),
        metrics: metrics::Metrics::default(),
        dashboard: dashboard::Shared::default(),
        auth_failures: api::limit::Failures::default(),
        leadership: Arc::new(leader::Leadership::new(
            format!("{host} {address} pid {}", std::process::id()),
            shared,
        )),
        peers,
        me: replicas::Me {
            host,
            address,
            started_at: now_ms(),
        },
    });
    state.outbox.set_bound(&state.me.address);
    let weak = Arc::downgrade(&state);
    front.on_client_gone(move |port| {
        if let Some(state) = weak.upgrade() {
            state.waiters.forget_port(port);
        }
    });
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| Error::Io("cannot install signal handlers".into(), e))?;
    let signal_handle = signals.handle();
    let passed = if from_systemd {
        " (socket from systemd)"
    } else {
        ""
    };
    log::info!("listening on {scheme}://{bound}{passed}");
    // The writer outlives the drain, so every request answered is committed.
    let store_stop = Shutdown::default();
    std::thread::scope(|s| {
        s.spawn(|| front::run(listener, &front, &shutdown));
        s.spawn(|| {
            store::run_writer(
                write_conn,
                || state.location.open(),
                jobs,
                &store_stop,
                |took| state.metrics.observe_commit(took),
            )
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (server, state) = (server.clone(), state.clone());
                s.spawn(move || http_worker(&server, &state))
            })
            .collect();
        s.spawn(|| loop {
            state.leadership.renew(&state.writer);
            replicas::beat(&state);
            if shutdown.wait(Duration::from_secs(1)) {
                return;
            }
        });
        s.spawn(|| peers::listen(&state, &shutdown));
        s.spawn(|| sweeper(&state, &shutdown));
        s.spawn(|| watch::scheduler(&state, &shutdown));
        s.spawn(|| outbox::run(s, &state, &shutdown));
        s.spawn(|| {
            for signal in signals.forever() {
                if signal == signal_hook::consts::SIGHUP {
                    let _ = state.reload("sighup", false);
                } else {
                    log::info!("signal {signal}: shutting down");
                    shutdown.trigger();
                }
            }
        });
        if let Some((local, secret)) = local {
            let opts = crate::agent::Options {
                // In process: straight to the HTTP server, past the front door.
                servers: Arc::new(crate::client::Servers::of(vec![format!("http://{inner}")])),
                server_shown: Some(format!("{scheme}://{bound} (in process)")),
                id: local.id,
                token: Some(secret),
                tags: local.tags,
                allow: vec!["*".into()],
                concurrency: local.concurrency,
                drain_grace: Duration::from_secs(30),
                ca_file: None,
                state_dir: None,
                allow_users: Vec::new(),
            };
            let shutdown = shutdown.clone();
            s.spawn(move || {
                if let Err(e) = crate::agent::run(opts, &shutdown) {
                    log::error!("the local agent did not start: {e}");
                }
            });
        }
        s.spawn(|| watchdog::systemd(&systemd, &state.alive, &shutdown));
        s.spawn(|| watchdog::url(&state, &shutdown));
        systemd.notify(&format!("READY=1\nSTATUS=serving on {scheme}://{bound}"));
        shutdown.wait(Duration::MAX);
        log::info!(
            "stopping: taking no new connection, answering waiting polls, finishing requests"
        );
        systemd.notify("STOPPING=1");
        drain(&state);
        for _ in 0..threads {
            server.unblock();
        }
        for worker in workers {
            let _ = worker.join();
        }
        signal_handle.close();
        state.leadership.resign(&state.writer);
        store_stop.trigger();
    });
    drop(lock);
    log::info!("stopped");
    Ok(())
}

/// Raises the soft limit of open files to the hard one: each client
/// connection takes three descriptors (the client's, the front's toward
/// the HTTP server, and the HTTP server's), and a soft limit of 1,024
/// would cap heal near 300 agents.
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit that lives on this frame.
    let (got, set) = unsafe {
        let got = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        let set = if got == 0 && old < lim.rlim_max {
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim)
        } else {
            0
        };
        (got, set)
    };
    if got != 0 || set != 0 {
        log::warn!(
            "cannot raise the open-file limit: {}; heal serves fewer connections (raise LimitNOFILE)",
            std::io::Error::last_os_error()
        );
    } else if lim.rlim_cur < 8192 {
        log::warn!(
            "open-file limit is {}: about {} connections at once (raise LimitNOFILE)",
            lim.rlim_cur,
            lim.rlim_cur / 3
        );
    }
}

/// A listener on a free loopback port with `TCP_NODELAY`, which the
/// connections it accepts inherit: the HTTP server's, behind the front door
/// (and the benches' receivers). tiny_http writes an answer's head and body
/// apart, and without it the body of any answer over a segment waits for
/// the client's delayed ACK (40 ms) on a kept-alive connection.
pub fn nodelay_loopback_listener() -> Result<std::net::TcpListener> {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Io("cannot listen on 127.0.0.1".into(), e))?;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from `on`, which lives through the call, on a socket this function owns.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(Error::Io(
            "cannot set TCP_NODELAY on the loopback listener".into(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(listener)
}

/// After a start, how long ops may be late before they are declared lost:
/// agents back off up to 10 s before re-sending a result, so each has had
/// its chance to reach the new server.
const RECONNECT_GRACE: Duration = Duration::from_secs(15);

/// The longest heal waits at shutdown for clients to get their answers.
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// Lets every connection the front door took get its answers: waiting
/// polls are answered (and new ones refused, see `Front::is_draining`),
/// idle connections closed, at most for `DRAIN_MAX`.
fn drain(state: &State) {
    let started = Instant::now();
    state.front.start_draining();
    loop {
        state.waiters.expire(Instant::now(), true);
        let open = state.front.drain_step(started.elapsed() >= DRAIN_MAX);
        if open == 0 {
            return;
        }
        if started.elapsed() >= DRAIN_MAX + Duration::from_secs(1) {
            log::warn!("stopping with {open} connections still open after {DRAIN_MAX:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether any event is deferred (a cheap read, so idle ticks write nothing).
fn any_deferred(state: &State, reader: &mut Option<crate::store::Conn>) -> bool {
    if reader.is_none() {
        *reader = state.location.open().ok();
    }
    let deferred = reader.as_ref().map(|c| store::any_deferred(c.db()));
    if let Some(Err(_)) = deferred {
        // Opened again at the next tick (a PostgreSQL session may have gone).
        *reader = None;
    }
    deferred.is_none_or(|d| d.unwrap_or(true))
}

fn http_worker(server: &tiny_http::Server, state: &Arc<State>) {
    let mut reader = None;
    while let Ok(request) = server.recv() {
        let url = request.url().to_string();
        let method = request.method().clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            api::handle(request, state, &mut reader)
        }));
        let status = outcome.unwrap_or_else(|_| {
            // The request was dropped while unwinding, which answers it with a 500.
            log::error!("panic while handling {url}; answered 500");
            reader = None;
            500
        });
        if let Some(conn) = reader.take() {
            state.readers.give(conn);
        }
        let route = api::route_label(&method, &url);
        state.metrics.observe_http(&method, route, status);
    }
}

/// Ends long-poll waits; every 250 ms re-checks deferred events (if any);
/// every second expires approvals and verification windows, counts failures
/// for the breaker and declares expired ops lost.
fn sweeper(state: &State, shutdown: &Shutdown) {
    let started = Instant::now();
    let mut last_expiry = Instant::now() - Duration::from_secs(10);
    let mut reader: Option<crate::store::Conn> = None;
    loop {
        if shutdown.wait(Duration::from_millis(250)) {
            return;
        }
        state.waiters.expire(Instant::now(), false);
        if !state.leadership.leads() {
            // A follower's sweeper only answers its own waiting polls.
            state.alive.beat();
            continue;
        }
        let full = last_expiry.elapsed() >= Duration::from_secs(1);
        if full || any_deferred(state, &mut reader) {
            let config = state.config();
            let reconnected = started.elapsed() >= RECONNECT_GRACE;
            let leadership = state.leadership.clone();
            if let Err(e) = state.lifecycle(move |conn| {
                leadership.fence(conn)?;
                lifecycle::tick(conn, &config, !full, reconnected, now_ms())
            }) {
                log::error!("sweeper: {e}");
            }
        }
        if full {
            last_expiry = Instant::now();
        }
        state.alive.beat();
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[test]
    fn connections_to_the_http_server_send_at_once() {
        let listener = super::nodelay_loopback_listener().unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`, on a socket the test holds.
        let rc = unsafe {
            libc::getsockopt(
                accepted.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(value, 1, "accepted connections inherit TCP_NODELAY");
    }
}
