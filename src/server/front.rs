//! The front door: accepts every connection on the public address, speaks
//! TLS when configured (rustls), and guards the HTTP server behind it
//! (tiny_http on a loopback port) from clients that send too much or too
//! slowly: a request head larger than `max_header` gets 431, a head or body
//! not sent within `request_timeout` gets 408, a request with a chunked body
//! gets 411, more than `max_connections` at once get 503. An idle connection
//! is closed after `idle_timeout`; a long poll waiting for its answer is not
//! idle.
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

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Both, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    /// Longest a client may take to send one request, head and body.
    pub request_timeout: Duration,
    /// An idle connection (no request in flight or awaiting its answer) is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
}

/// The front door's shared state.
pub struct Front {
    tls: Option<Arc<rustls::ServerConfig>>,
    inner: SocketAddr,
    limits: Limits,
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
    /// When the client last sent something (ms since `Front::epoch`).
    last_read: AtomicU64,
    /// The drain closed the client's side for reading.
    cut: AtomicBool,
}

impl Front {
    /// A front forwarding to the HTTP server at `inner`.
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>, inner: SocketAddr, limits: Limits) -> Front {
        Front {
            tls,
            inner,
            limits,
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
                let _ = conn.client.shutdown(Both::Both);
                let _ = conn.inner.shutdown(Both::Both);
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
            front.active.fetch_sub(1, Ordering::SeqCst);
            log::warn!(
                "front: refused a connection from {peer}: {} connections already (max_connections)",
                front.limits.max_connections
            );
            refuse_plain(client, 503, "too many connections: try again later");
            continue;
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
        431 => "Request Header Fields Too Large",
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

    /// Reads what the client sent (decrypted); 0 at its end.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Side::Plain(t) => (&**t).read(buf),
            Side::Tls(t, conn) => loop {
                {
                    let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                    match c.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                // The raw bytes pass through `buf` into rustls, which copies
                // them. A buffer of their own in this frame (16 KiB) made
                // every call probe 16 KiB of stack, plain connections' too:
                // 20 KiB resident per front thread.
                let n = (&**t).read(buf)?;
                if n == 0 {
                    return Ok(0);
                }
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
            },
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
        if let Side::Tls(t, conn) = self {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            c.send_close_notify();
            let _ = c.write_tls(&mut &**t);
        }
        let _ = self.tcp().shutdown(Both::Both);
    }
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
            let mut conn = rustls::ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
            // The handshake, within the request timeout.
            while conn.is_handshaking() {
                conn.complete_io(&mut &*tcp)?;
            }
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
        last_read: AtomicU64::new(front.ms()),
        cut: AtomicBool::new(false),
    });
    front.lock_conns().insert(port, conn.clone());
    let answers = {
        let (side, mut from) = (side.clone(), inner.try_clone()?);
        std::thread::Builder::new()
            .name("heal-front-out".into())
            .stack_size(FRONT_STACK)
            .spawn(move || {
                let mut buf = vec![0u8; COPY_BUF];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if side.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                side.close();
            })?
    };
    let result = requests(&side, &inner, front, &conn);
    match &result {
        Err(Refusal(status, why)) => {
            let _ = side.write_all(&error_response(*status, why));
            log::debug!("front: {peer}: {status} {why}");
            let _ = inner.shutdown(Both::Both);
            side.close();
        }
        // No more requests: the HTTP server answers those it has, then
        // closes its side, which ends `answers`. A long poll left waiting
        // is forgotten: nobody is there to take an op.
        Ok(()) => {
            if let Some(gone) = front.gone.get() {
                gone(port);
            }
            let _ = inner.shutdown(Both::Write);
        }
    }
    let _ = answers.join();
    side.close();
    front.lock_conns().remove(&port);
    Ok(())
}

/// Why the front answered a request itself.
#[derive(Debug, PartialEq, Eq)]
struct Refusal(u16, String);

/// Copies the client's requests to the HTTP server, checking each one's
/// head size and timing. Ends when the client goes (Ok) or is refused.
fn requests(
    side: &Side,
    mut inner: &TcpStream,
    front: &Front,
    conn: &Conn,
) -> std::result::Result<(), Refusal> {
    let limits = &front.limits;
    let mut framer = Framer::new(limits.max_header);
    let mut buf = vec![0u8; COPY_BUF];
    let mut deadline: Option<Instant> = None;
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => limits.idle_timeout,
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
                if deadline.is_some() {
                    continue;
                }
                // Idle for the whole idle timeout: close quietly.
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        conn.last_read.store(front.ms(), Ordering::SeqCst);
        let mut out = Vec::with_capacity(n);
        framer.feed(&buf[..n], &mut out)?;
        conn.busy.store(framer.in_request(), Ordering::SeqCst);
        if !out.is_empty() && inner.write_all(&out).is_err() {
            return Ok(());
        }
        deadline = match (framer.in_request(), deadline) {
            (true, None) => Some(Instant::now() + limits.request_timeout),
            (true, d) => d,
            (false, _) => None,
        };
    }
}

/// Splits the client's bytes into requests: a head up to `max_header`
/// bytes, then a body of its Content-Length.
struct Framer {
    max_header: usize,
    head: Vec<u8>,
    body_left: u64,
}

impl Framer {
    fn new(max_header: usize) -> Framer {
        Framer {
            max_header,
            head: Vec::new(),
            body_left: 0,
        }
    }

    /// Whether a request is partly sent.
    fn in_request(&self) -> bool {
        !self.head.is_empty() || self.body_left > 0
    }

    /// Takes bytes from the client; appends what may go on to `out`.
    fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), Refusal> {
        while !data.is_empty() {
            if self.body_left > 0 {
                let take = (self.body_left as usize).min(data.len());
                out.extend_from_slice(&data[..take]);
                self.body_left -= take as u64;
                data = &data[take..];
                continue;
            }
            // Skip the blank lines some clients send between requests.
            if self.head.is_empty() {
                let skip = data
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                data = &data[skip..];
                if data.is_empty() {
                    break;
                }
            }
            let before = self.head.len();
            self.head.extend_from_slice(data);
            let search_from = before.saturating_sub(3);
            let end = self.head[search_from..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| search_from + p + 4);
            let Some(end) = end else {
                if self.head.len() > self.max_header {
                    return Err(Refusal(
                        431,
                        format!(
                            "the request head is larger than {} bytes ([server] max_header)",
                            self.max_header
                        ),
                    ));
                }
                break;
            };
            if end > self.max_header {
                return Err(Refusal(
                    431,
                    format!(
                        "the request head is larger than {} bytes ([server] max_header)",
                        self.max_header
                    ),
                ));
            }
            let rest = self.head.split_off(end);
            self.body_left = body_length(&self.head)?;
            out.extend_from_slice(&self.head);
            self.head.clear();
            // What came after the head is body or the next request: go round
            // with it (it was never in `data` past this point).
            data = &[];
            let mut more = Vec::new();
            self.feed(&rest, &mut more)?;
            out.extend_from_slice(&more);
        }
        Ok(())
    }
}

/// The body length a request head announces.
fn body_length(head: &[u8]) -> std::result::Result<u64, Refusal> {
    let text = String::from_utf8_lossy(head);
    let mut length: Option<u64> = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refusal(
                411,
                "chunked request bodies are not accepted: send Content-Length".into(),
            ));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|_| Refusal(400, format!("bad Content-Length {:?}", value.trim())))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal(400, "two different Content-Length headers".into()));
            }
            length = Some(n);
        }
    }
    Ok(length.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut Framer, parts: &[&[u8]]) -> std::result::Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        for p in parts {
            f.feed(p, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn requests_pass_through_whole_however_they_are_cut() {
        let req = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
        for cut in 0..req.len() {
            let mut f = Framer::new(1024);
            let out = feed(&mut f, &[&req[..cut], &req[cut..]]).unwrap();
            assert_eq!(out, req.to_vec(), "cut at {cut}");
            assert!(!f.in_request(), "cut at {cut}");
        }
        let mut f = Framer::new(1024);
        feed(
            &mut f,
            &[b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel"],
        )
        .unwrap();
        assert!(f.in_request(), "a body is still coming");
    }

    #[test]
    fn oversized_heads_chunked_bodies_and_bad_lengths_are_refused() {
        let mut f = Framer::new(64);
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(feed(&mut f, &[big.as_bytes()]).unwrap_err().0, 431);
        let mut f = Framer::new(64);
        let endless = "a".repeat(30);
        let e = feed(
            &mut f,
            &[
                b"GET / HTTP/1.1\r\nX: ",
                endless.as_bytes(),
                endless.as_bytes(),
            ],
        )
        .unwrap_err();
        assert_eq!(e.0, 431, "a head that never ends is cut at the limit");
        let mut f = Framer::new(1024);
        let e = feed(
            &mut f,
            &[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"],
        )
        .unwrap_err();
        assert_eq!(e.0, 411);
        let mut f = Framer::new(1024);
        let e = feed(
            &mut f,
            &[b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"],
        )
        .unwrap_err();
        assert_eq!(e.0, 400);
        let mut f = Framer::new(1024);
        assert_eq!(
            feed(&mut f, &[b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"])
                .unwrap_err()
                .0,
            400
        );
    }
}
