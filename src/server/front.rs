//! The front door: accepts every connection on the public address, speaks
//! TLS when configured (rustls), and guards the HTTP server behind it
//! (tiny_http on a loopback port) from clients that send too much, too
//! slowly, or something else than HTTP/1.1. A request reaches the HTTP
//! server only once it is whole (`framing::Framer`), so a slow client never
//! holds an HTTP worker: a head larger than `max_header` gets 431, a body
//! larger than `max_body` 413 as soon as its `Content-Length` is read, a head
//! or body not sent within `request_timeout` 408, a chunked body 411, a
//! request to `Upgrade` (or `Connection: upgrade`) and a head that is not
//! ASCII 400, another HTTP version (the HTTP/2 preface) 505. The front
//! answers `Expect: 100-continue` itself. A refusal goes out after the
//! answers to the requests the client sent before it, then the connection
//! closes.
//!
//! A connection is idle when no request is partly sent and every request it
//! sent has had its whole answer (`framing::Answers` counts them, so a long
//! poll waiting for its answer is not idle). An idle connection is closed
//! after `idle_timeout`; blank lines between requests do not reset that
//! clock. A TLS handshake must end within `request_timeout`. At
//! `max_connections`, a new connection closes the connection idle longest;
//! when none is idle it gets 503.
//!
//! Each connection has two threads: one reads the client (and frames its
//! requests), one copies the answers back. The HTTP server sees the front's
//! loopback address; `Front::peer` maps it back to the client's.
//!
//! At shutdown the front stops accepting (with a socket from systemd, new
//! connections wait in its backlog for the next heal) and drains: a
//! connection between requests is closed once it has been quiet for
//! `DRAIN_QUIET`, toward the HTTP server only after the answers it awaits
//! have come back, so every request the front took gets its answer.

pub mod framing;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Both, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use self::framing::{Answers, Framed, Framer, Pending, Refusal};
use super::Shutdown;
use crate::error::{Error, Result};

/// Stack of a connection's threads: they only copy bytes through `COPY_BUF`
/// buffers (on the heap) and rustls. Keep large arrays out of their frames:
/// each call probes every page of its frame, and a page once touched stays
/// resident for the connection's life.
const FRONT_STACK: usize = 256 * 1024;

/// A connection's buffer each way: a waiting agent's connection holds two,
/// so their size is most of its memory after the stacks.
const COPY_BUF: usize = 8 * 1024;

/// While draining, a connection between requests is closed after this much quiet.
const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// What the front enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line and headers), in bytes.
    pub max_header: usize,
    /// Largest request body, in bytes, at start (`Front::set_max_body` after a reload).
    pub max_body: usize,
    /// Longest a client may take to send one request, head and body, and
    /// to finish a TLS handshake.
    pub request_timeout: Duration,
    /// An idle connection (no request in flight or awaiting its answer) is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once; past it, the connection idle longest is
    /// closed for a new one, or the new one gets 503 when none is idle.
    pub max_connections: usize,
}

/// The front door's shared state.
pub struct Front {
    tls: Option<Arc<rustls::ServerConfig>>,
    inner: SocketAddr,
    limits: Limits,
    /// `[server] max_body` of the running config, for connections opened from now on.
    max_body: AtomicUsize,
    active: AtomicUsize,
    /// The front's local port toward the HTTP server → the connection.
    conns: Mutex<HashMap<u16, Arc<Conn>>>,
    /// Set at shutdown: no new connection, polls refused, quiet connections closed.
    draining: AtomicBool,
    /// The clock of `Conn::last_read`.
    epoch: Instant,
    /// Told the port toward the HTTP server of each client that went away.
    gone: std::sync::OnceLock<Box<dyn Fn(u16) + Send + Sync>>,
}

/// One client connection, as the drain sees it.
struct Conn {
    /// The client's address.
    peer: SocketAddr,
    /// The client's socket.
    client: Arc<TcpStream>,
    /// The connection to the HTTP server.
    inner: TcpStream,
    /// A request is partly sent.
    busy: AtomicBool,
    /// Requests sent to the HTTP server and not yet wholly answered: whether each is a HEAD.
    pending: Mutex<Pending>,
    /// When the last request went on or the last answer ended (ms since `Front::epoch`).
    settled: AtomicU64,
    /// When the client last sent something (ms since `Front::epoch`).
    last_read: AtomicU64,
    /// The drain closed the client's side for reading.
    cut: AtomicBool,
    /// Closed for a new connection at `max_connections`.
    evicted: AtomicBool,
    /// The front refused a request: its answer goes out after the HTTP server's.
    refused: AtomicBool,
}

impl Conn {
    /// Since when the connection has been idle (ms since `Front::epoch`):
    /// no request partly sent, none awaiting its answer.
    fn idle_since(&self) -> Option<u64> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (!self.busy.load(Ordering::SeqCst) && pending.is_empty())
            .then(|| self.settled.load(Ordering::SeqCst))
    }

    /// Marks the connection evicted if it is still idle: checked under the
    /// lock the reader takes before it passes a request on, so a request
    /// either goes on (and the connection is not idle) or is never sent.
    fn evict_if_idle(&self) -> bool {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let idle = !self.busy.load(Ordering::SeqCst) && pending.is_empty();
        idle && !self.evicted.swap(true, Ordering::SeqCst)
    }

    /// Closes both sides: the client's and the one toward the HTTP server.
    fn close(&self) {
        let _ = self.client.shutdown(Both::Both);
        let _ = self.inner.shutdown(Both::Both);
    }
}

impl Front {
    /// A front forwarding to the HTTP server at `inner`.
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>, inner: SocketAddr, limits: Limits) -> Front {
        Front {
            tls,
            inner,
            limits,
            max_body: AtomicUsize::new(limits.max_body),
            active: AtomicUsize::new(0),
            conns: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            epoch: Instant::now(),
            gone: std::sync::OnceLock::new(),
        }
    }

    /// Sets what to do when a client goes away (its connection's port
    /// toward the HTTP server): a long poll parked for it is forgotten, so
    /// no op is handed to an agent that died while it waited.
    pub fn on_client_gone(&self, f: impl Fn(u16) + Send + Sync + 'static) {
        let _ = self.gone.set(Box::new(f));
    }

    /// Sets the body limit of connections opened from now on (after a reload).
    pub fn set_max_body(&self, max_body: usize) {
        self.max_body.store(max_body, Ordering::SeqCst);
    }

    /// Whether heal is stopping: a long poll is then answered at once.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts the drain (the accept loop has stopped or is stopping).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// One round of the drain: closes connections quiet between requests
    /// (all of them when `force`); returns how many connections are open.
    pub fn drain_step(&self, force: bool) -> usize {
        let now = self.ms();
        for conn in self.lock_conns().values() {
            if force {
                conn.close();
                continue;
            }
            let quiet = now.saturating_sub(conn.last_read.load(Ordering::SeqCst));
            if !conn.busy.load(Ordering::SeqCst)
                && quiet >= DRAIN_QUIET.as_millis() as u64
                && !conn.cut.swap(true, Ordering::SeqCst)
            {
                // The reader sees the end of the client's requests; the
                // answers still due go out before the connection closes.
                let _ = conn.client.shutdown(Both::Read);
            }
        }
        self.active.load(Ordering::SeqCst)
    }

    fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes the connection idle longest, to make room for a new one;
    /// returns its client, or None when no connection is idle.
    fn evict_idle(&self) -> Option<SocketAddr> {
        let conns = self.lock_conns();
        let mut idle: Vec<(u64, &Arc<Conn>)> = conns
            .values()
            .filter(|c| !c.evicted.load(Ordering::SeqCst))
            .filter_map(|c| Some((c.idle_since()?, c)))
            .collect();
        idle.sort_by_key(|(since, _)| *since);
        let (_, oldest) = idle.into_iter().find(|(_, c)| c.evict_if_idle())?;
        oldest.close();
        Some(oldest.peer)
    }

    fn lock_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Arc<Conn>>> {
        // Single inserts and removes: a panic cannot leave the map inconsistent.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether connections speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The client behind a connection the HTTP server got from the front.
    pub fn peer(&self, seen: Option<SocketAddr>) -> Option<SocketAddr> {
        let seen = seen?;
        if !seen.ip().is_loopback() {
            return Some(seen);
        }
        let conns = self.lock_conns();
        Some(conns.get(&seen.port()).map_or(seen, |c| c.peer))
    }
}

/// Loads a PEM certificate chain and private key into a TLS server config.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<std::result::Result<_, _>>())
        .map_err(|e| Error::Config(format!("[server] tls_cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "[server] tls_cert {} holds no certificate (expected \"-----BEGIN CERTIFICATE-----\")",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Config(format!("[server] tls_key {}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| {
        Error::Config(format!(
            "[server] tls_cert {} and tls_key: {e} (the key must belong to the first certificate)",
            cert.display()
        ))
    })?;
    Ok(Arc::new(config))
}

/// Accepts connections until shutdown; each gets its own threads.
pub fn run(listener: TcpListener, front: &Arc<Front>, shutdown: &Shutdown) {
    let fd = listener.as_raw_fd();
    loop {
        if shutdown.is_triggered() {
            return;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the listener, which outlives the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 250) };
        if ready <= 0 {
            continue;
        }
        let (client, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("front: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if front.active.fetch_add(1, Ordering::SeqCst) >= front.limits.max_connections {
            if let Some(idle) = front.evict_idle() {
                log::info!(
                    "front: {} connections (max_connections): closed the one idle longest, from {idle}, for {peer}",
                    front.limits.max_connections
                );
            } else {
                front.active.fetch_sub(1, Ordering::SeqCst);
                log::warn!(
                    "front: refused a connection from {peer}: {} connections already, none idle (max_connections)",
                    front.limits.max_connections
                );
                refuse_plain(client, 503, "too many connections: try again later");
                continue;
            }
        }
        let f = front.clone();
        let spawned = std::thread::Builder::new()
            .name("heal-front".into())
            .stack_size(FRONT_STACK)
            .spawn(move || {
                if let Err(e) = connection(&f, client, peer) {
                    log::debug!("front: connection from {peer}: {e}");
                }
                f.active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            front.active.fetch_sub(1, Ordering::SeqCst);
            log::error!("front: cannot start a thread for {peer}: {e}");
        }
    }
}

/// Answers a plain-HTTP client with an error and closes.
fn refuse_plain(mut client: TcpStream, status: u16, why: &str) {
    let _ = client.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = client.write_all(&error_response(status, why));
    let _ = client.shutdown(Both::Both);
}

/// An HTTP error answer with heal's JSON body; the connection closes after it.
fn error_response(status: u16, why: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Service Unavailable",
    };
    let body = serde_json::json!({ "error": why }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The client's side of a connection: plain TCP, or TLS over it.
#[derive(Clone)]
enum Side {
    Plain(Arc<TcpStream>),
    Tls(Arc<TcpStream>, Arc<Mutex<rustls::ServerConnection>>),
}

impl Side {
    fn tcp(&self) -> &TcpStream {
        match self {
            Side::Plain(t) | Side::Tls(t, _) => t,
        }
    }

    /// Reads what the client sent (decrypted); 0 at its end. Over TLS,
    /// bytes that bring no request data (records without any) end in
    /// `WouldBlock`, so they do not keep the reader from its clocks.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Side::Plain(t) => (&**t).read(buf),
            Side::Tls(t, conn) => {
                let decrypted = |buf: &mut [u8]| {
                    let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                    c.reader().read(buf)
                };
                match decrypted(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    done => return done,
                }
                // The raw bytes pass through `buf` into rustls, which copies
                // them. A buffer of their own in this frame (16 KiB) made
                // every call probe 16 KiB of stack, plain connections' too:
                // 20 KiB resident per front thread.
                let n = (&**t).read(buf)?;
                if n == 0 {
                    return Ok(0);
                }
                {
                    let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                    let mut slice = &buf[..n];
                    while !slice.is_empty() {
                        c.read_tls(&mut slice)?;
                        c.process_new_packets()
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    }
                    while c.wants_write() {
                        c.write_tls(&mut &**t)?;
                    }
                }
                decrypted(buf)
            }
        }
    }

    /// Sends to the client (encrypted).
    fn write_all(&self, data: &[u8]) -> io::Result<()> {
        match self {
            Side::Plain(t) => (&**t).write_all(data),
            Side::Tls(t, conn) => {
                let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                c.writer().write_all(data)?;
                while c.wants_write() {
                    c.write_tls(&mut &**t)?;
                }
                Ok(())
            }
        }
    }

    fn close(&self) {
        self.end_writing();
        let _ = self.tcp().shutdown(Both::Both);
    }

    /// Tells the client heal sends nothing more (TLS close_notify, then
    /// the end of the TCP stream), keeping the reading side open.
    fn end_writing(&self) {
        if let Side::Tls(t, conn) = self {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            c.send_close_notify();
            let _ = c.write_tls(&mut &**t);
        }
        let _ = self.tcp().shutdown(Both::Write);
    }

    /// After a refusal the client may still be sending, such as a body
    /// refused by its `Content-Length`. Closing at once would have the
    /// kernel reset the connection, and the client could lose the answer
    /// before it reads it; so heal ends its side and drops what still
    /// comes, until the client closes, pauses for `LINGER_PAUSE`, or
    /// `LINGER` or `LINGER_BYTES` is reached.
    fn linger(&self) {
        self.end_writing();
        let tcp = self.tcp();
        let deadline = Instant::now() + LINGER;
        let mut buf = vec![0u8; COPY_BUF];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tcp.set_read_timeout(Some(left.min(LINGER_PAUSE))).is_err() {
                break;
            }
            match (&*tcp).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    }
}

/// How long a refused client's remaining bytes are read and dropped at most.
const LINGER: Duration = Duration::from_secs(5);
/// A refused client that sends nothing for this long is closed on.
const LINGER_PAUSE: Duration = Duration::from_secs(1);
/// How many of a refused client's remaining bytes are dropped at most.
const LINGER_BYTES: usize = 16 << 20;

/// The TLS handshake, within `limit` however the client dribbles it.
fn handshake(
    tcp: &TcpStream,
    cfg: &Arc<rustls::ServerConfig>,
    limit: Duration,
) -> io::Result<rustls::ServerConnection> {
    let mut conn = rustls::ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
    let deadline = Instant::now() + limit;
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut &*tcp)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake did not end within [server] request_timeout",
            ));
        }
        tcp.set_read_timeout(Some(left))?;
        if conn.read_tls(&mut &*tcp)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the client why (a TLS alert) before closing.
            let _ = conn.write_tls(&mut &*tcp);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    while conn.wants_write() {
        conn.write_tls(&mut &*tcp)?;
    }
    Ok(conn)
}

fn connection(front: &Front, client: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let limits = front.limits;
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(limits.request_timeout))?;
    client.set_write_timeout(Some(limits.request_timeout))?;
    let tcp = Arc::new(client);
    let side = match &front.tls {
        None => Side::Plain(tcp),
        Some(cfg) => {
            let conn = handshake(&tcp, cfg, limits.request_timeout)?;
            Side::Tls(tcp, Arc::new(Mutex::new(conn)))
        }
    };
    let inner = TcpStream::connect(front.inner)?;
    inner.set_nodelay(true)?;
    let port = inner.local_addr()?.port();
    let conn = Arc::new(Conn {
        peer,
        client: Arc::new(side.tcp().try_clone()?),
        inner: inner.try_clone()?,
        busy: AtomicBool::new(false),
        pending: Mutex::new(Pending::new()),
        settled: AtomicU64::new(front.ms()),
        last_read: AtomicU64::new(front.ms()),
        cut: AtomicBool::new(false),
        evicted: AtomicBool::new(false),
        refused: AtomicBool::new(false),
    });
    front.lock_conns().insert(port, conn.clone());
    let answers = {
        let (side, from, conn) = (side.clone(), inner.try_clone()?, conn.clone());
        let (epoch, inner_addr) = (front.epoch, front.inner);
        std::thread::Builder::new()
            .name("heal-front-out".into())
            .stack_size(FRONT_STACK)
            .spawn(move || copy_answers(&side, from, &conn, epoch, inner_addr))?
    };
    match requests(&side, &inner, front, &conn) {
        // The answers to the requests passed on go out first, then the
        // refusal, so none is cut.
        Err(Refusal(status, why)) => {
            conn.refused.store(true, Ordering::SeqCst);
            let _ = inner.shutdown(Both::Write);
            let _ = answers.join();
            let _ = side.write_all(&error_response(status, &why));
            log::debug!("front: {peer}: {status} {why}");
            side.linger();
        }
        // No more requests: the HTTP server answers those it has, then
        // closes its side, which ends `answers`. A long poll left waiting
        // is forgotten: nobody is there to take an op.
        Ok(()) => {
            if let Some(gone) = front.gone.get() {
                gone(port);
            }
            let _ = inner.shutdown(Both::Write);
            let _ = answers.join();
        }
    }
    side.close();
    front.lock_conns().remove(&port);
    Ok(())
}

/// Copies the HTTP server's answers to the client and counts them (a
/// connection is idle only once its answers have gone out). When the HTTP
/// server closes, so does the client's side, unless the front refused a
/// request: its refusal goes out after these answers.
fn copy_answers(side: &Side, mut from: TcpStream, conn: &Conn, epoch: Instant, inner: SocketAddr) {
    let mut buf = vec![0u8; COPY_BUF];
    let mut answers = Answers::default();
    // Answers whose head went by and whose end has not.
    let mut started = 0;
    // Until the HTTP server's first byte, look after `NUDGE_AFTER`, then
    // half as long again each time.
    let mut look = NUDGE_AFTER;
    let mut heard = from.set_read_timeout(Some(look)).is_err();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if !heard
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
            {
                let waiting = !conn
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty();
                if waiting {
                    // Once may not be enough: the thread a nudge frees can
                    // take another connection left behind.
                    nudge(inner);
                    look = (look * 3 / 2).min(NUDGE_MAX);
                    heard = from.set_read_timeout(Some(look)).is_err();
                }
                continue;
            }
            Err(_) => break,
        };
        if !heard {
            heard = from.set_read_timeout(None).is_ok();
        }
        if side.write_all(&buf[..n]).is_err() {
            break;
        }
        let done = answers.feed(&buf[..n], &mut || {
            let pending = conn.pending.lock().unwrap_or_else(|e| e.into_inner());
            started += 1;
            pending.get(started - 1).copied().unwrap_or(false)
        });
        if done > 0 {
            conn.settled
                .store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
            let mut pending = conn.pending.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..done {
                pending.pop_front();
            }
            started = started.saturating_sub(done);
        }
    }
    if !conn.refused.load(Ordering::SeqCst) {
        side.close();
    }
}

/// How long a connection's first request may go unanswered before the
/// front nudges the HTTP server (`nudge`); it nudges again after half as
/// long again each time, up to every `NUDGE_MAX`, until the first answer
/// starts.
const NUDGE_AFTER: Duration = Duration::from_millis(500);
const NUDGE_MAX: Duration = Duration::from_secs(4);

/// tiny_http serves each connection on a thread of its pool, and starts a
/// thread only when none waits. Two connections that arrive while one
/// thread is waking can both be queued for it: the second then waits until
/// some other connection closes (up to `idle_timeout`), its requests
/// unread. A connection opened and closed at once is queued too, and
/// whichever thread takes it is free again at once to serve the one left
/// behind; if every thread is busy, the pool starts one for it. That
/// thread takes the connection queued first, which may be another's, so a
/// connection still unanswered nudges again. Costs one loopback connection
/// each time, and only for a connection whose first request has had no
/// answer for `NUDGE_AFTER`: mostly an agent's first long poll on a new
/// connection waiting for work, nine times over its 25 s.
fn nudge(inner: SocketAddr) {
    match TcpStream::connect_timeout(&inner, Duration::from_secs(1)) {
        Ok(s) => {
            let _ = s.shutdown(Both::Both);
        }
        Err(e) => log::debug!("front: nudging the HTTP server at {inner}: {e}"),
    }
}

/// `100 Continue`, for a client that waits for it before sending a body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Passes the client's whole requests to the HTTP server, checking each
/// one's head, size and timing. Ends when the client goes or has been idle
/// for `idle_timeout` (Ok), or is refused.
fn requests(
    side: &Side,
    mut inner: &TcpStream,
    front: &Front,
    conn: &Conn,
) -> std::result::Result<(), Refusal> {
    let limits = &front.limits;
    let max_body = front.max_body.load(Ordering::SeqCst) as u64;
    let mut framer = Framer::new(limits.max_header, max_body);
    let mut buf = vec![0u8; COPY_BUF];
    let mut deadline: Option<Instant> = None;
    let idle_ms = limits.idle_timeout.as_millis() as u64;
    loop {
        let wait = match (deadline, conn.idle_since()) {
            (Some(d), _) => d.saturating_duration_since(Instant::now()),
            (None, Some(since)) => {
                let idle = front.ms().saturating_sub(since);
                if idle >= idle_ms {
                    // Idle for the whole idle timeout: close quietly.
                    return Ok(());
                }
                Duration::from_millis(idle_ms - idle)
            }
            // Awaiting an answer: look again after a while.
            (None, None) => limits.idle_timeout,
        };
        if wait.is_zero() {
            return Err(Refusal(
                408,
                "the request was not sent in time ([server] request_timeout)".into(),
            ));
        }
        let _ = side.tcp().set_read_timeout(Some(wait));
        let n = match side.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return Ok(()),
        };
        // Not idle while these bytes are looked at.
        conn.busy.store(true, Ordering::SeqCst);
        conn.last_read.store(front.ms(), Ordering::SeqCst);
        let mut framed = Framed::default();
        // Whole requests before a refused one still go on (and are answered first).
        let fed = framer.feed(&buf[..n], &mut framed);
        if !framed.forward.is_empty() {
            let mut pending = conn.pending.lock().unwrap_or_else(|e| e.into_inner());
            if conn.evicted.load(Ordering::SeqCst) {
                // Closed for a new connection: these requests are not sent,
                // so the client may send them again elsewhere.
                return Ok(());
            }
            pending.extend(&framed.heads);
            conn.settled.store(front.ms(), Ordering::SeqCst);
        }
        conn.busy.store(framer.in_request(), Ordering::SeqCst);
        if !framed.forward.is_empty() && inner.write_all(&framed.forward).is_err() {
            return Ok(());
        }
        fed?;
        // Only between answers: a 100 must not cut into an answer going out.
        if framed.send_continue
            && conn
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            let _ = side.write_all(CONTINUE);
        }
        // Each request has its own request_timeout, from its first byte.
        deadline = match (framer.in_request(), deadline) {
            (false, _) => None,
            (true, Some(d)) if framed.heads.is_empty() => Some(d),
            (true, _) => Some(Instant::now() + limits.request_timeout),
        };
    }
}
