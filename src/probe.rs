//! Probes: what a `[[probe]]` checks (an HTTP endpoint, a TCP port, a
//! command on the server, a Prometheus query) and one run of such a check,
//! plus the pure up/down bookkeeping behind `fail_after` and `recover_after`.
//!
//! Every run is bounded by its timeout, roughly: HTTP uses ureq's global
//! timeout (connect, request and body), TCP connects with the remaining
//! budget, commands go through `exec` (SIGTERM to the group at the timeout,
//! SIGKILL after a short grace), and the certificate check gets what is left
//! of the budget after the request. Name resolution for TCP probes is the
//! one step the timeout does not bound.
//!
//! Redirects are never followed: a 3xx is an answer like any other. Bodies
//! are read up to 1 MiB; `body_contains` only sees that much.
//!
//! `ca_file`: ureq 3's `RootCerts` is either a list of certificates or the
//! webpki roots, never both, so the HTTP request of a probe with `ca_file`
//! trusts only the certificates in that file. The certificate-expiry
//! handshake trusts the webpki roots and `ca_file` together.
//!
//! This module does not schedule probes, store their results or turn them
//! into alerts; it runs one check and says how it went.

use std::fmt;
use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::exec;
use crate::time::{format_duration, format_rfc3339, now_ms, parse_rfc3339};

/// The most bytes of a response body that are read.
const BODY_LIMIT: u64 = 1 << 20;
/// How much of a command's output ends up in the detail.
const OUTPUT_TAIL: usize = 500;
/// Time between SIGTERM and SIGKILL for a command probe that timed out.
const COMMAND_GRACE: Duration = Duration::from_millis(500);
/// Milliseconds in a day.
const MS_PER_DAY: i64 = 86_400_000;

/// What a probe checks. Built by the config module from `[[probe]]`.
#[derive(Debug, Clone)]
pub enum Check {
    /// An HTTP(S) request and what its answer must look like.
    Http(Http),
    /// A TCP connect to "host:port"; ok when it succeeds within the timeout.
    Tcp {
        /// The address to connect to, "host:port".
        addr: String,
    },
    /// A command run on the server; ok on exit 0. The detail has the exit code and the output tail.
    Command {
        /// What to execute.
        run: exec::Run,
    },
    /// A Prometheus instant query whose samples must all satisfy an expectation.
    Prometheus(Prometheus),
}

/// An HTTP check.
#[derive(Debug, Clone)]
pub struct Http {
    /// The URL to request (http or https).
    pub url: String,
    /// The request method ("GET" by default, set by the config module).
    pub method: String,
    /// Statuses that count as ok; empty means 200 to 399. Redirects are not followed.
    pub expect_status: Vec<u16>,
    /// Text the body (its first 1 MiB) must contain.
    pub body_contains: Option<String>,
    /// Slower answers are failures.
    pub max_latency: Option<Duration>,
    /// https only (ignored for http): fail when the server certificate expires in fewer days.
    pub tls_min_days: Option<u32>,
    /// PEM of a private CA, trusted in addition to the webpki roots (see the module doc).
    pub ca_file: Option<PathBuf>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

/// A Prometheus check.
#[derive(Debug, Clone)]
pub struct Prometheus {
    /// Base URL of a Prometheus server, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// PromQL, run as an instant query via `GET /api/v1/query?query=...`.
    pub query: String,
    /// Every returned sample must satisfy it.
    pub expect: Expect,
    /// Whether an empty result is ok (by default it fails with "query returned no data").
    pub empty_ok: bool,
}

/// A comparison with a fixed number, such as "< 0.9".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expect {
    /// The comparison.
    pub op: Cmp,
    /// The number compared with.
    pub threshold: f64,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// The result of one run of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the check passed.
    pub ok: bool,
    /// One line for people: what was seen, and what was expected when it failed.
    pub detail: String,
    /// Wall-clock time of the whole run.
    pub latency_ms: i64,
    /// Request latency in ms for http and tcp, the worst sample for prometheus, None otherwise.
    pub value: Option<f64>,
}

/// What is known of a probe's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Not checked yet, or not enough results to say.
    #[default]
    Unknown,
    /// Passing.
    Up,
    /// Failed `fail_after` times in a row and has not recovered.
    Down,
}

/// A probe's state and its current streaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// The current state.
    pub state: State,
    /// Failures since the last success.
    pub fails_in_row: u32,
    /// Successes since the last failure.
    pub oks_in_row: u32,
}

/// A change of state worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The probe went down.
    WentDown,
    /// The probe was down and is up again.
    Recovered,
}

impl Cmp {
    /// The operator as written: "<", "<=", ">", ">=", "==", "!=".
    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
}

impl Expect {
    /// Parses "< 0.9", ">=1", "== 0", "!= 0" (whitespace optional).
    pub fn parse(text: &str) -> Result<Expect, String> {
        let bad = |why: &str| {
            format!(
                "bad expectation {text:?}: {why} (write an operator and a number, \
                 e.g. \"< 0.9\", \">= 1\", \"== 0\", \"!= 0\"; operators <, <=, >, >=, ==, !=)"
            )
        };
        let trimmed = text.trim();
        // Two-character operators first, so "<=" is not read as "<" and "=1".
        let ops = [Cmp::Le, Cmp::Ge, Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Gt];
        let Some((op, rest)) = ops
            .iter()
            .find_map(|op| trimmed.strip_prefix(op.as_str()).map(|rest| (*op, rest)))
        else {
            return Err(bad("no operator at the start"));
        };
        let number = rest.trim();
        let threshold: f64 = number
            .parse()
            .map_err(|_| bad(&format!("{number:?} is not a number")))?;
        if threshold.is_nan() {
            return Err(bad("NaN compares false with everything"));
        }
        Ok(Expect { op, threshold })
    }

    /// Whether `v` satisfies the expectation; NaN satisfies only `!=`.
    pub fn holds(&self, v: f64) -> bool {
        let t = self.threshold;
        match self.op {
            Cmp::Lt => v < t,
            Cmp::Le => v <= t,
            Cmp::Gt => v > t,
            Cmp::Ge => v >= t,
            Cmp::Eq => v == t,
            Cmp::Ne => v != t,
        }
    }

    /// How far `v` is from failing, as a number where bigger is worse.
    fn badness(&self, v: f64) -> f64 {
        if v.is_nan() {
            return if self.holds(v) {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
        }
        let t = self.threshold;
        match self.op {
            Cmp::Lt | Cmp::Le => v,
            Cmp::Gt | Cmp::Ge => -v,
            Cmp::Eq => (v - t).abs(),
            Cmp::Ne => -(v - t).abs(),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), number(self.threshold))
    }
}

impl State {
    /// The state as stored and shown: "unknown", "up", "down".
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
        }
    }

    /// Parses what `as_str` gives.
    pub fn parse(text: &str) -> Result<State, String> {
        match text {
            "unknown" => Ok(State::Unknown),
            "up" => Ok(State::Up),
            "down" => Ok(State::Down),
            _ => Err(format!(
                "bad probe state {text:?} (expected \"unknown\", \"up\" or \"down\")"
            )),
        }
    }
}

/// Applies one result: Down after `fail_after` failures in a row (from
/// Unknown or Up, with `WentDown`); Up after `recover_after` successes in a
/// row from Down (with `Recovered`); Unknown→Up on the first success with no
/// change. Thresholds of 0 count as 1.
pub fn step(
    prev: Counts,
    ok: bool,
    fail_after: u32,
    recover_after: u32,
) -> (Counts, Option<Change>) {
    let mut next = prev;
    if ok {
        next.oks_in_row = prev.oks_in_row.saturating_add(1);
        next.fails_in_row = 0;
    } else {
        next.fails_in_row = prev.fails_in_row.saturating_add(1);
        next.oks_in_row = 0;
    }
    let change = match (prev.state, ok) {
        (State::Unknown, true) => {
            next.state = State::Up;
            None
        }
        (State::Down, true) if next.oks_in_row >= recover_after.max(1) => {
            next.state = State::Up;
            Some(Change::Recovered)
        }
        (State::Unknown | State::Up, false) if next.fails_in_row >= fail_after.max(1) => {
            next.state = State::Down;
            Some(Change::WentDown)
        }
        _ => None,
    };
    (next, change)
}

/// Runs a check once, bounded by `timeout` (connect + whole request; roughly).
pub fn run(check: &Check, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let mut outcome = match check {
        Check::Http(http) => run_http(http, timeout),
        Check::Tcp { addr } => run_tcp(addr, timeout),
        Check::Command { run } => run_command(run, timeout),
        Check::Prometheus(prometheus) => run_prometheus(prometheus, timeout),
    };
    outcome.latency_ms = millis(start.elapsed());
    // Its detail is stored, shown, logged and sent in notifications: never
    // with the URL's user, password or query values.
    if let Check::Http(Http { url, .. }) | Check::Prometheus(Prometheus { url, .. }) = check {
        outcome.detail = outcome
            .detail
            .replace(url.as_str(), &crate::config::redact_url_secrets(url));
    }
    outcome
}

/// A passing outcome; `run` fills in the latency.
fn pass(detail: String, value: Option<f64>) -> Outcome {
    Outcome {
        ok: true,
        detail,
        latency_ms: 0,
        value,
    }
}

/// A failing outcome; `run` fills in the latency.
fn fail(detail: String, value: Option<f64>) -> Outcome {
    Outcome {
        ok: false,
        ..pass(detail, value)
    }
}

/// Whole milliseconds of a duration.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// "timed out after 5s".
fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", format_duration(timeout))
}

/// A sample value as Prometheus writes it ("NaN", "+Inf", "0.5").
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

// ---- HTTP ----

/// A response: status and the first `BODY_LIMIT` bytes of the body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Request, then status, body and latency, then (https) the certificate's days left.
fn run_http(http: &Http, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let ca = match http.ca_file.as_deref().map(load_ca_file).transpose() {
        Ok(ca) => ca,
        Err(e) => return fail(e, None),
    };
    let agent = agent(timeout, ca.as_deref());
    let answer = match send(&agent, http, timeout) {
        Ok(answer) => answer,
        Err(e) => return fail(e, None),
    };
    let took = start.elapsed();
    let value = Some(millis(took) as f64);
    if let Some(problem) = judge_answer(http, &answer, took) {
        return fail(problem, value);
    }
    let mut detail = format!("{} in {} ms", answer.status, millis(took));
    if let Some(min_days) = http.tls_min_days {
        let left = timeout.saturating_sub(start.elapsed());
        match check_certificate(&http.url, ca.as_deref(), min_days, left, timeout) {
            Ok(Some(note)) => detail = format!("{detail}, {note}"),
            Ok(None) => {}
            Err(e) => return fail(e, value),
        }
    }
    pass(detail, value)
}

/// An agent for one probe run: the timeout, statuses as answers, no redirects, and `ca` as the only roots when given.
fn agent(timeout: Duration, ca: Option<&[CertificateDer<'static>]>) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = ca {
        let certs: Vec<_> = ca
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("heal-probe/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .build()
        .into()
}

/// Sends the probe's request and reads the answer.
fn send(agent: &ureq::Agent, http: &Http, timeout: Duration) -> Result<Answer, String> {
    let mut builder = ureq::http::Request::builder()
        .method(http.method.as_str())
        .uri(http.url.as_str());
    for (name, value) in &http.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder.body(()).map_err(|e| {
        format!(
            "bad request {} {}: {e} (check the method, URL and headers)",
            http.method, http.url
        )
    })?;
    read_answer(agent.run(request), &http.url, timeout)
}

/// Reads the status and the capped body, or describes why there is no answer.
fn read_answer(
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut response = result.map_err(|e| describe_error(&e, url, timeout))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(BODY_LIMIT)
        .read_to_end(&mut body)
        .map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(timeout),
            _ => format!("reading the body of {url}: {e}"),
        })?;
    Ok(Answer { status, body })
}

/// One line for a failed request, naming the address or URL (without its
/// user, password or query values).
pub(crate) fn describe_error(e: &ureq::Error, url: &str, timeout: Duration) -> String {
    let shown = crate::config::redact_url_secrets(url);
    let authority = host_port(url)
        .map(|(host, port)| format!("{host}:{port}"))
        .unwrap_or_else(|_| shown.clone());
    let url = shown.as_str();
    match e {
        ureq::Error::Timeout(_) => timed_out(timeout),
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(timeout),
            io::ErrorKind::ConnectionRefused => {
                format!("connect to {authority}: connection refused")
            }
            _ => match tls_error(io) {
                Some(tls) => format!("tls with {authority}: {tls}{}", ca_hint(tls)),
                None => format!("request to {url}: {io}"),
            },
        },
        ureq::Error::HostNotFound => {
            format!("cannot resolve the host of {url} (check the name and DNS)")
        }
        ureq::Error::BadUri(why) => {
            format!("bad URL {url:?}: {why} (write e.g. \"http://host:port/path\")")
        }
        ureq::Error::Rustls(tls) => format!("tls with {authority}: {tls}{}", ca_hint(tls)),
        _ => format!("request to {url}: {e}"),
    }
}

/// The rustls error inside an I/O error, if that is what it carries.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A hint for certificate errors, which mostly mean a private CA.
fn ca_hint(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(_) => " (set ca_file if a private CA signed it)",
        _ => "",
    }
}

/// The first failed expectation of an answer, if any.
fn judge_answer(http: &Http, answer: &Answer, took: Duration) -> Option<String> {
    if !status_ok(&http.expect_status, answer.status) {
        return Some(format!(
            "{} (expected {})",
            status_text(answer.status),
            expected_statuses(&http.expect_status)
        ));
    }
    if let Some(needle) = &http.body_contains {
        if !contains(&answer.body, needle.as_bytes()) {
            return Some(format!("body does not contain {needle:?}"));
        }
    }
    match http.max_latency {
        Some(max) if took > max => {
            Some(format!("took {} ms, max {} ms", millis(took), millis(max)))
        }
        _ => None,
    }
}

/// Whether a status is expected: listed, or 200 to 399 when the list is empty.
fn status_ok(expected: &[u16], status: u16) -> bool {
    if expected.is_empty() {
        (200..=399).contains(&status)
    } else {
        expected.contains(&status)
    }
}

/// "500 Internal Server Error".
fn status_text(status: u16) -> String {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    match reason {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// "200", "200 or 204", "200, 201 or 204", "2xx or 3xx".
fn expected_statuses(expected: &[u16]) -> String {
    match expected {
        [] => "2xx or 3xx".into(),
        [one] => one.to_string(),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(u16::to_string).collect();
            format!("{} or {last}", init.join(", "))
        }
    }
}

/// Whether `needle` occurs in `haystack` (an empty needle always does).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Host (without IPv6 brackets) and port of a URL, with the scheme's default port.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let bad = |why: &str| format!("bad URL {url:?}: {why} (write e.g. \"https://host:port/path\")");
    let uri: ureq::http::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    Ok((host.to_string(), uri.port_u16().unwrap_or(default)))
}

// ---- TLS certificate expiry ----

/// Reads the PEM certificates of a private CA.
pub(crate) fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_file {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {} holds no certificate (expected \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(certs)
}

/// For an https URL, checks that the server certificate is valid for at
/// least `min_days` more days; gives a note for the detail. Plain http
/// gives no note.
fn check_certificate(
    url: &str,
    ca: Option<&[CertificateDer<'static>]>,
    min_days: u32,
    budget: Duration,
    timeout: Duration,
) -> Result<Option<String>, String> {
    if !url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    {
        return Ok(None);
    }
    let (host, port) = host_port(url)?;
    let leaf = peer_certificate(&host, port, ca, budget, timeout)?;
    let not_after = cert_not_after(&leaf)
        .map_err(|e| format!("certificate of {host}:{port}: cannot read its expiry: {e}"))?;
    let days = (not_after - now_ms()).div_euclid(MS_PER_DAY);
    let date = &format_rfc3339(not_after)[..10];
    if days < i64::from(min_days) {
        return Err(format!(
            "certificate expires in {days} days ({date}), minimum {min_days}"
        ));
    }
    Ok(Some(format!("certificate expires in {days} days ({date})")))
}

/// Handshakes with host:port (SNI = host), verifying with the webpki roots
/// and `ca`, and returns the end-entity certificate.
fn peer_certificate(
    host: &str,
    port: u16,
    ca: Option<&[CertificateDer<'static>]>,
    budget: Duration,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("bad TLS server name {host:?}: {e}"))?;
    let config = client_config(ca)?;
    let mut conn = rustls::ClientConnection::new(config, name)
        .map_err(|e| format!("tls with {host}:{port}: {e}"))?;
    let deadline = Instant::now() + budget;
    let mut tcp = connect_any(&format!("{host}:{port}"), deadline)
        .map_err(|e| format!("connect to {host}:{port}: {}", describe_io(&e, timeout)))?;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(timeout));
        }
        let _ = tcp.set_read_timeout(Some(left));
        let _ = tcp.set_write_timeout(Some(left));
        conn.complete_io(&mut tcp).map_err(|e| {
            let hint = tls_error(&e).map(ca_hint).unwrap_or_default();
            format!("tls with {host}:{port}: {}{hint}", describe_io(&e, timeout))
        })?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| format!("tls with {host}:{port}: the server sent no certificate"))?;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    Ok(leaf)
}

/// A rustls client config trusting the webpki roots and `ca`.
fn client_config(
    ca: Option<&[CertificateDer<'static>]>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in ca.unwrap_or_default() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("ca_file: a certificate cannot be used as a root: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads notAfter out of a DER certificate (Certificate → tbsCertificate →
/// validity → notAfter) as UTC milliseconds. UTCTime and GeneralizedTime.
fn cert_not_after(der: &[u8]) -> Result<i64, String> {
    let (cert, _) = der_expect(der, 0x30, "certificate")?;
    let (tbs, _) = der_expect(cert, 0x30, "tbsCertificate")?;
    let mut rest = tbs;
    // The version is an optional explicit [0] tag.
    if rest.first() == Some(&0xA0) {
        rest = der_next(rest)?.2;
    }
    rest = der_expect(rest, 0x02, "serial number")?.1;
    rest = der_expect(rest, 0x30, "signature algorithm")?.1;
    rest = der_expect(rest, 0x30, "issuer")?.1;
    let (validity, _) = der_expect(rest, 0x30, "validity")?;
    let (_, _, after_not_before) = der_next(validity)?;
    let (tag, time, _) = der_next(after_not_before)?;
    der_time(tag, time)
}

/// Splits off one DER element: tag, contents, and what follows.
fn der_next(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let truncated = || "truncated DER".to_string();
    let (&tag, rest) = input.split_first().ok_or_else(truncated)?;
    let (&first, rest) = rest.split_first().ok_or_else(truncated)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(format!("bad DER length of tag {tag:#04x}"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(truncated());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Splits off one DER element that must have `tag`: contents and what follows.
fn der_expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (found, contents, rest) = der_next(input)?;
    if found != tag {
        return Err(format!(
            "expected {what} (tag {tag:#04x}), found tag {found:#04x}"
        ));
    }
    Ok((contents, rest))
}

/// A DER UTCTime (0x17, "YYMMDDHHMMSSZ", years 1950–2049) or
/// GeneralizedTime (0x18, "YYYYMMDDHHMMSSZ") as UTC milliseconds.
fn der_time(tag: u8, bytes: &[u8]) -> Result<i64, String> {
    let text = String::from_utf8_lossy(bytes);
    let bad = || format!("unsupported certificate time {text:?} (tag {tag:#04x})");
    let digits = text.strip_suffix('Z').ok_or_else(bad)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let full = match (tag, digits.len()) {
        (0x17, 12) => {
            let century = if digits < "50" { "20" } else { "19" };
            format!("{century}{digits}")
        }
        (0x18, 14) => digits.to_string(),
        _ => return Err(bad()),
    };
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[0..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    parse_rfc3339(&rfc3339).ok().flatten().ok_or_else(bad)
}

// ---- TCP ----

/// Ok when a connection to `addr` opens in time.
fn run_tcp(addr: &str, timeout: Duration) -> Outcome {
    let start = Instant::now();
    match connect_any(addr, start + timeout) {
        Ok(_) => {
            let took = millis(start.elapsed());
            pass(format!("connected in {took} ms"), Some(took as f64))
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => fail(
            format!("cannot resolve {addr}: {e} (write \"host:port\")"),
            None,
        ),
        Err(e) => fail(
            format!("connect to {addr}: {}", describe_io(&e, timeout)),
            None,
        ),
    }
}

/// Connects to the first address of "host:port" that answers before the deadline.
/// Resolution failures come back as `InvalidInput`.
fn connect_any(addr: &str, deadline: Instant) -> io::Result<TcpStream> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address found");
    for a in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match TcpStream::connect_timeout(a, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A short lowercase reason for an I/O failure.
fn describe_io(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(timeout),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::UnexpectedEof => "connection closed".into(),
        _ => e.to_string(),
    }
}

// ---- Command ----

/// Runs the command through `exec`; ok on exit 0.
fn run_command(run: &exec::Run, timeout: Duration) -> Outcome {
    let output = exec::Output::new(OUTPUT_TAIL);
    let cancel = AtomicBool::new(false);
    let step = exec::Step {
        run,
        env: &[],
        timeout,
        grace: COMMAND_GRACE,
        stdin: &[],
    };
    let end = exec::run_step(&step, &output, &cancel);
    if let Some(e) = end.spawn_error {
        return fail(e, None);
    }
    let how = if end.timed_out {
        timed_out(timeout)
    } else if let Some(code) = end.exit_code {
        format!("exit {code}")
    } else if let Some(signal) = end.signal {
        format!("killed by signal {signal}")
    } else {
        "ended without an exit status".into()
    };
    let tail = output_line(&output);
    let detail = if tail.is_empty() {
        how
    } else {
        format!("{how}: {tail}")
    };
    Outcome {
        ok: end.success(),
        ..pass(detail, None)
    }
}

/// The output tail on one line: lines trimmed and joined with " | ", "…"
/// when cut. `exec`'s own marker lines ("[heal: step timed out ...]") are
/// left out, since the detail already says how the command ended.
fn output_line(output: &exec::Output) -> String {
    let (tail, dropped) = output.tail();
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("[heal: step "))
        .collect();
    let joined = lines.join(" | ");
    if dropped && !joined.is_empty() {
        format!("…{joined}")
    } else {
        joined
    }
}

// ---- Prometheus ----

/// One sample of a query result: its series, as PromQL writes it, and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    series: String,
    value: f64,
}

/// An instant query; ok when every sample satisfies the expectation.
fn run_prometheus(prometheus: &Prometheus, timeout: Duration) -> Outcome {
    let url = format!("{}/api/v1/query", prometheus.url.trim_end_matches('/'));
    let agent = agent(timeout, None);
    let result = agent.get(&url).query("query", &prometheus.query).call();
    let answer = match read_answer(result, &url, timeout) {
        Ok(answer) => answer,
        Err(e) => return fail(e, None),
    };
    match parse_samples(&answer, &url, &prometheus.query) {
        Ok(samples) => judge_samples(prometheus, &samples),
        Err(e) => fail(e, None),
    }
}

/// Reads the samples out of a query answer, or says what is wrong with it.
fn parse_samples(answer: &Answer, url: &str, query: &str) -> Result<Vec<Sample>, String> {
    let json: Value = serde_json::from_slice(&answer.body).map_err(|_| {
        let text = String::from_utf8_lossy(&answer.body);
        let start: String = text.trim().chars().take(80).collect();
        format!(
            "{url}: {} with a non-JSON answer {start:?} (is this a Prometheus server?)",
            status_text(answer.status)
        )
    })?;
    if json["status"] == "error" {
        let kind = json["errorType"].as_str().unwrap_or("error");
        let error = json["error"].as_str().unwrap_or("no reason given");
        return Err(format!("prometheus {kind} for query {query:?}: {error}"));
    }
    if json["status"] != "success" {
        return Err(format!(
            "{url}: {} with an answer that has no \"status\": \"success\"",
            status_text(answer.status)
        ));
    }
    let data = &json["data"];
    match data["resultType"].as_str().unwrap_or("") {
        "vector" => vector_samples(&data["result"]),
        "scalar" => Ok(vec![Sample {
            series: "scalar".into(),
            value: sample_value(&data["result"])?,
        }]),
        "matrix" => Err(format!(
            "query {query:?} returned a range vector; use an instant query (drop the [range])"
        )),
        other => Err(format!(
            "query {query:?} returned a {other:?} result; expected a vector or a scalar"
        )),
    }
}

/// The samples of an instant vector: `[{"metric": {...}, "value": [t, "v"]}, ...]`.
fn vector_samples(result: &Value) -> Result<Vec<Sample>, String> {
    let items = result.as_array().ok_or("vector result is not a list")?;
    items
        .iter()
        .map(|item| {
            Ok(Sample {
                series: series_name(&item["metric"]),
                value: sample_value(&item["value"])?,
            })
        })
        .collect()
}

/// The value of `[timestamp, "value"]`; Prometheus writes "NaN", "+Inf", "-Inf".
fn sample_value(pair: &Value) -> Result<f64, String> {
    let text = pair[1]
        .as_str()
        .ok_or_else(|| format!("bad sample {pair} (expected [time, \"value\"])"))?;
    text.parse()
        .map_err(|_| format!("bad sample value {text:?}"))
}

/// `up{instance="x",job="y"}` from a metric's labels.
fn series_name(metric: &Value) -> String {
    let Some(labels) = metric.as_object() else {
        return "{}".into();
    };
    let name = labels.get("__name__").and_then(Value::as_str).unwrap_or("");
    let mut pairs: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or("")))
        .collect();
    // Sorted, so the text does not depend on serde_json's map order.
    pairs.sort();
    if pairs.is_empty() && !name.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", pairs.join(","))
    }
}

/// Ok when every sample satisfies the expectation; names the worst failing one.
fn judge_samples(prometheus: &Prometheus, samples: &[Sample]) -> Outcome {
    let expect = prometheus.expect;
    if samples.is_empty() {
        let detail = "query returned no data".to_string();
        return if prometheus.empty_ok {
            pass(detail, None)
        } else {
            fail(detail, None)
        };
    }
    let failing: Vec<&Sample> = samples.iter().filter(|s| !expect.holds(s.value)).collect();
    let pool: Vec<&Sample> = if failing.is_empty() {
        samples.iter().collect()
    } else {
        failing.clone()
    };
    let worst = pool
        .iter()
        .max_by(|a, b| expect.badness(a.value).total_cmp(&expect.badness(b.value)))
        .expect("pool is not empty: samples is not empty");
    let value = Some(worst.value);
    let seen = format!("{} = {}", worst.series, number(worst.value));
    if failing.is_empty() {
        let n = samples.len();
        let noun = if n == 1 { "sample" } else { "samples" };
        return pass(format!("{n} {noun} {expect}, worst {seen}"), value);
    }
    let more = match failing.len() {
        1 => String::new(),
        n => format!(" ({} more failing)", n - 1),
    };
    fail(format!("{seen}, expected {expect}{more}"), value)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;

    /// The timeout of most test probes; only the slow tests wait for it.
    const TIMEOUT: Duration = Duration::from_secs(2);
    /// How long a test server waits for a request before giving up.
    const SERVER_WAIT: Duration = Duration::from_secs(3);

    /// A canned HTTP answer.
    #[derive(Clone)]
    struct Reply {
        status: &'static str,
        headers: &'static str,
        body: String,
        delay: Duration,
    }

    fn reply(status: &'static str, body: &str) -> Reply {
        Reply {
            status,
            headers: "",
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// Answers `n` connections on 127.0.0.1 with `reply` and sends each
    /// request head on the channel. Returns the base URL.
    fn responder(n: usize, reply: Reply) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for _ in 0..n {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let _ = stream.set_read_timeout(Some(SERVER_WAIT));
                let head = read_head(&mut stream);
                let _ = tx.send(head);
                thread::sleep(reply.delay);
                let _ = write_reply(&mut stream, &reply);
            }
        });
        (format!("http://{addr}"), rx)
    }

    /// Accepts one connection and holds it for `hold` without answering.
    fn silent_server(hold: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                thread::sleep(hold);
                drop(stream);
            }
        });
        format!("http://{addr}")
    }

    /// A loopback port with nothing listening (bound, then released).
    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Reads a request head, at most 16 KiB, until the blank line, end of file or an error.
    fn read_head(stream: &mut impl Read) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while head.len() < 16 * 1024 && !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    fn write_reply(stream: &mut impl Write, reply: &Reply) -> io::Result<()> {
        let text = format!(
            "HTTP/1.1 {}\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            reply.status,
            reply.headers,
            reply.body.len(),
            reply.body
        );
        stream.write_all(text.as_bytes())?;
        stream.flush()
    }

    fn http(url: &str) -> Http {
        Http {
            url: url.to_string(),
            method: "GET".into(),
            expect_status: Vec::new(),
            body_contains: None,
            max_latency: None,
            tls_min_days: None,
            ca_file: None,
            headers: Vec::new(),
        }
    }

    fn run_http_check(check: Http) -> Outcome {
        run(&Check::Http(check), TIMEOUT)
    }

    #[test]
    fn http_200_is_ok() {
        let (url, heads) = responder(1, reply("200 OK", "ok"));
        let mut check = http(&format!("{url}/health"));
        check.headers = vec![("X-Probe".into(), "yes".into())];
        let out = run_http_check(check);
        assert!(out.ok, "{out:?}");
        assert!(out.detail.starts_with("200 in "), "{}", out.detail);
        assert!(out.detail.ends_with(" ms"), "{}", out.detail);
        assert!(out.value.is_some());
        let head = heads.recv_timeout(SERVER_WAIT).unwrap();
        assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("x-probe: yes"), "{head}");
    }

    #[test]
    fn http_500_fails_naming_status_and_expectation() {
        let (url, _) = responder(2, reply("500 Internal Server Error", "boom"));
        let mut check = http(&url);
        let out = run_http_check(check.clone());
        assert!(!out.ok);
        assert_eq!(
            out.detail,
            "500 Internal Server Error (expected 2xx or 3xx)"
        );
        check.expect_status = vec![200];
        let out = run_http_check(check);
        assert_eq!(out.detail, "500 Internal Server Error (expected 200)");
    }

    #[test]
    fn http_redirect_is_not_followed() {
        let mut redirect = reply("302 Found", "");
        redirect.headers = "Location: http://127.0.0.1:9/elsewhere\r\n";
        let (url, _) = responder(2, redirect);
        let mut check = http(&url);
        assert!(run_http_check(check.clone()).ok);
        check.expect_status = vec![200, 204];
        let out = run_http_check(check);
        assert_eq!(out.detail, "302 Found (expected 200 or 204)");
    }

    #[test]
    fn http_body_contains_hit_and_miss() {
        let (url, _) = responder(2, reply("200 OK", "status: ok"));
        let mut check = http(&url);
        check.body_contains = Some("ok".into());
        assert!(run_http_check(check.clone()).ok);
        check.body_contains = Some("ready".into());
        let out = run_http_check(check);
        assert!(!out.ok);
        assert_eq!(out.detail, "body does not contain \"ready\"");
    }

    #[test]
    fn http_slower_than_max_latency_fails() {
        let mut slow = reply("200 OK", "ok");
        slow.delay = Duration::from_millis(300);
        let (url, _) = responder(1, slow);
        let mut check = http(&url);
        check.max_latency = Some(Duration::from_millis(100));
        let out = run_http_check(check);
        assert!(!out.ok);
        assert!(out.detail.starts_with("took "), "{}", out.detail);
        assert!(out.detail.ends_with(" ms, max 100 ms"), "{}", out.detail);
        assert!(out.value.unwrap() >= 300.0);
    }

    #[test]
    fn http_silent_server_fails_by_timeout() {
        let url = silent_server(Duration::from_secs(4));
        let start = Instant::now();
        let out = run(&Check::Http(http(&url)), Duration::from_secs(1));
        assert!(!out.ok);
        assert_eq!(out.detail, "timed out after 1s");
        assert!(start.elapsed() < Duration::from_secs(2), "{out:?}");
    }

    #[test]
    fn http_connection_refused_names_the_address() {
        let port = closed_port();
        let out = run_http_check(http(&format!("http://127.0.0.1:{port}/")));
        assert!(!out.ok);
        assert_eq!(
            out.detail,
            format!("connect to 127.0.0.1:{port}: connection refused")
        );
        assert_eq!(out.value, None);
    }

    #[test]
    fn http_bad_ca_file_is_named() {
        let mut check = http("https://localhost:1/");
        check.ca_file = Some("/nonexistent/heal-ca.pem".into());
        let out = run_http_check(check);
        assert!(!out.ok);
        assert!(
            out.detail
                .starts_with("cannot read ca_file /nonexistent/heal-ca.pem: "),
            "{}",
            out.detail
        );
    }

    // ---- TLS ----

    /// A date `days` from now as rcgen wants it (midnight UTC).
    fn date_in(days: i64) -> (i32, u8, u8) {
        let date = format_rfc3339(now_ms() + days * MS_PER_DAY);
        (
            date[0..4].parse().unwrap(),
            date[5..7].parse().unwrap(),
            date[8..10].parse().unwrap(),
        )
    }

    /// A test CA (PEM) and a "localhost" server certificate signed by it,
    /// valid until midnight 11 days from now, so 10 whole days are left.
    fn pki() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "heal test ca");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let (y, m, d) = date_in(-1);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = date_in(11);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (ca.pem(), vec![cert.der().clone()], key_der)
    }

    /// Writes `pem` to a file named after the test in the temp dir.
    fn ca_file(test: &str, pem: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("heal-probe-{test}-{}.pem", std::process::id()));
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// Serves `n` TLS connections on 127.0.0.1 with the certificate; answers
    /// "200 OK" to each request. Returns the port.
    fn tls_responder(
        n: usize,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> u16 {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for _ in 0..n {
                let Ok((tcp, _)) = listener.accept() else {
                    return;
                };
                let _ = tcp.set_read_timeout(Some(SERVER_WAIT));
                let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&config)) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                // The probe's own handshake sends no request.
                if !read_head(&mut tls).is_empty() {
                    let _ = write_reply(&mut tls, &reply("200 OK", "ok"));
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            }
        });
        port
    }

    fn tls_check(test: &str, min_days: u32) -> Outcome {
        let (ca_pem, chain, key) = pki();
        let port = tls_responder(2, chain, key);
        let path = ca_file(test, &ca_pem);
        let mut check = http(&format!("https://localhost:{port}/"));
        check.ca_file = Some(path.clone());
        check.tls_min_days = Some(min_days);
        let out = run_http_check(check);
        let _ = std::fs::remove_file(path);
        out
    }

    #[test]
    fn tls_certificate_expiring_too_soon_fails_naming_the_days() {
        let out = tls_check("too-soon", 30);
        assert!(!out.ok, "{out:?}");
        let (y, m, d) = date_in(11);
        assert_eq!(
            out.detail,
            format!("certificate expires in 10 days ({y:04}-{m:02}-{d:02}), minimum 30")
        );
    }

    #[test]
    fn tls_certificate_with_enough_days_passes() {
        let out = tls_check("enough", 5);
        assert!(out.ok, "{out:?}");
        assert!(out.detail.starts_with("200 in "), "{}", out.detail);
        assert!(
            out.detail.contains(", certificate expires in 10 days ("),
            "{}",
            out.detail
        );
    }

    #[test]
    fn tls_private_ca_without_ca_file_fails_with_a_hint() {
        let (_, chain, key) = pki();
        let port = tls_responder(1, chain, key);
        let out = run_http_check(http(&format!("https://localhost:{port}/")));
        assert!(!out.ok);
        assert!(
            out.detail
                .starts_with(&format!("tls with localhost:{port}: ")),
            "{}",
            out.detail
        );
        assert!(out
            .detail
            .ends_with("(set ca_file if a private CA signed it)"));
    }

    #[test]
    fn cert_not_after_reads_utc_and_generalized_time() {
        let key = rcgen::KeyPair::generate().unwrap();
        for (y, m, d) in [(2031, 2, 3), (2055, 6, 1)] {
            let mut params = rcgen::CertificateParams::new(vec!["x.test".to_string()]).unwrap();
            params.not_after = rcgen::date_time_ymd(y, m, d);
            let cert = params.self_signed(&key).unwrap();
            let expected = parse_rfc3339(&format!("{y:04}-{m:02}-{d:02}T00:00:00Z"))
                .unwrap()
                .unwrap();
            assert_eq!(cert_not_after(cert.der()), Ok(expected), "{y}");
        }
    }

    #[test]
    fn der_time_forms() {
        let t = |s: &str| parse_rfc3339(s).unwrap().unwrap();
        assert_eq!(
            der_time(0x17, b"491231235959Z"),
            Ok(t("2049-12-31T23:59:59Z"))
        );
        assert_eq!(
            der_time(0x17, b"500101000000Z"),
            Ok(t("1950-01-01T00:00:00Z"))
        );
        assert_eq!(
            der_time(0x18, b"99991231235959Z"),
            Ok(t("9999-12-31T23:59:59Z"))
        );
        assert!(der_time(0x17, b"4912312359Z").is_err());
        assert!(der_time(0x18, b"20260101000000+0100").is_err());
        assert!(der_time(0x04, b"491231235959Z").is_err());
    }

    #[test]
    fn der_walker_rejects_garbage() {
        assert!(cert_not_after(b"").is_err());
        assert!(cert_not_after(&[0x30, 0x05, 0x30]).is_err());
        assert!(cert_not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(cert_not_after(&[0x30, 0x02, 0x02, 0x00])
            .unwrap_err()
            .contains("tbsCertificate"));
    }

    // ---- TCP ----

    #[test]
    fn tcp_open_port_is_ok() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let out = run(&Check::Tcp { addr }, TIMEOUT);
        assert!(out.ok, "{out:?}");
        assert!(out.detail.starts_with("connected in "), "{}", out.detail);
        assert!(out.value.is_some());
    }

    #[test]
    fn tcp_closed_port_fails() {
        let addr = format!("127.0.0.1:{}", closed_port());
        let out = run(&Check::Tcp { addr: addr.clone() }, TIMEOUT);
        assert!(!out.ok);
        assert_eq!(out.detail, format!("connect to {addr}: connection refused"));
    }

    #[test]
    fn tcp_bad_address_is_named() {
        let out = run(
            &Check::Tcp {
                addr: "no-port".into(),
            },
            TIMEOUT,
        );
        assert!(!out.ok);
        assert!(
            out.detail.starts_with("cannot resolve no-port: "),
            "{}",
            out.detail
        );
        assert!(out.detail.ends_with("(write \"host:port\")"));
    }

    // ---- Command ----

    fn command(script: &str, timeout: Duration) -> Outcome {
        let run_ = exec::Run::Shell(script.to_string());
        run(&Check::Command { run: run_ }, timeout)
    }

    #[test]
    fn command_true_is_ok() {
        let out = command("true", TIMEOUT);
        assert!(out.ok, "{out:?}");
        assert_eq!(out.detail, "exit 0");
    }

    #[test]
    fn command_false_fails_with_exit_code_and_output() {
        assert_eq!(command("false", TIMEOUT).detail, "exit 1");
        let out = command("echo disk full; echo >&2 on /var; exit 3", TIMEOUT);
        assert!(!out.ok);
        assert_eq!(out.detail, "exit 3: disk full | on /var");
    }

    #[test]
    fn command_output_is_cut_to_its_tail() {
        let out = command("seq 1 1000", TIMEOUT);
        assert!(out.ok);
        assert!(out.detail.starts_with("exit 0: …"), "{}", out.detail);
        assert!(out.detail.ends_with("999 | 1000"), "{}", out.detail);
        // Each newline of the tail becomes " | ".
        assert!(out.detail.len() < 2 * OUTPUT_TAIL, "{}", out.detail);
    }

    #[test]
    fn command_past_its_timeout_fails() {
        let start = Instant::now();
        let out = command("echo waiting; sleep 10", Duration::from_millis(300));
        assert!(!out.ok);
        assert_eq!(out.detail, "timed out after 300ms: waiting");
        assert!(start.elapsed() < Duration::from_secs(3), "{out:?}");
    }

    // ---- Prometheus ----

    fn prometheus(url: &str, query: &str, expect: &str) -> Prometheus {
        Prometheus {
            url: url.to_string(),
            query: query.to_string(),
            expect: Expect::parse(expect).unwrap(),
            empty_ok: false,
        }
    }

    /// Runs a query against a responder that answers `body` once.
    fn query(check: &mut Prometheus, status: &'static str, body: &str) -> (Outcome, String) {
        let (url, heads) = responder(1, reply(status, body));
        check.url = format!("{url}/");
        let out = run(&Check::Prometheus(check.clone()), TIMEOUT);
        let head = heads.recv_timeout(SERVER_WAIT).unwrap_or_default();
        (out, head)
    }

    #[test]
    fn details_never_show_the_url_s_password_or_query_values() {
        let (url, _) = responder(1, reply("200 OK", "not json"));
        let with_user = url.replace("http://", "http://user:PASS@");
        let check = prometheus(&with_user, "up", ">= 0");
        let out = run(&Check::Prometheus(check), TIMEOUT);
        let shown = url.replace("http://", "http://<redacted>@");
        assert!(
            out.detail.starts_with(&format!(
                "{shown}/api/v1/query: 200 OK with a non-JSON answer"
            )),
            "{}",
            out.detail
        );
        let url = silent_server(Duration::ZERO);
        let with_secrets = format!(
            "{}/health?apikey=KEY",
            url.replace("http://", "http://user:PASS@")
        );
        let out = run_http_check(http(&with_secrets));
        assert!(!out.ok);
        assert!(
            out.detail.contains("<redacted>@")
                && !out.detail.contains("PASS")
                && !out.detail.contains("KEY"),
            "{}",
            out.detail
        );
    }

    const UP_VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"__name__":"up","job":"y","instance":"a"},"value":[1700000000.1,"1"]},
        {"metric":{"__name__":"up","job":"y","instance":"x"},"value":[1700000000.1,"0"]}]}}"#;

    #[test]
    fn prometheus_vector_all_satisfied_is_ok() {
        let mut check = prometheus("", r#"up{job="y"}"#, ">= 0");
        let (out, head) = query(&mut check, "200 OK", UP_VECTOR);
        assert!(out.ok, "{out:?}");
        assert_eq!(
            out.detail,
            r#"2 samples >= 0, worst up{instance="x",job="y"} = 0"#
        );
        assert_eq!(out.value, Some(0.0));
        assert!(
            head.starts_with("GET /api/v1/query?query=up%7Bjob%3D%22y%22%7D HTTP/1.1"),
            "{head}"
        );
    }

    #[test]
    fn prometheus_violation_names_series_and_value() {
        let mut check = prometheus("", "up", "== 1");
        let (out, _) = query(&mut check, "200 OK", UP_VECTOR);
        assert!(!out.ok);
        assert_eq!(out.detail, r#"up{instance="x",job="y"} = 0, expected == 1"#);
        assert_eq!(out.value, Some(0.0));
    }

    #[test]
    fn prometheus_worst_of_several_failing_samples() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"mount":"/"},"value":[1,"0.95"]},
            {"metric":{"mount":"/var"},"value":[1,"NaN"]},
            {"metric":{"mount":"/home"},"value":[1,"0.97"]},
            {"metric":{"mount":"/tmp"},"value":[1,"0.1"]}]}}"#;
        let mut check = prometheus("", "disk_used_ratio", "< 0.9");
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(!out.ok);
        assert_eq!(
            out.detail,
            r#"{mount="/var"} = NaN, expected < 0.9 (2 more failing)"#
        );
        assert!(out.value.unwrap().is_nan());
    }

    #[test]
    fn prometheus_scalar_result() {
        let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        let mut check = prometheus("", "1/0", "> 5");
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(out.ok, "{out:?}");
        assert_eq!(out.detail, "1 sample > 5, worst scalar = +Inf");
    }

    #[test]
    fn prometheus_empty_result_fails_unless_empty_ok() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let mut check = prometheus("", "up == 0", "== 1");
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(!out.ok);
        assert_eq!(out.detail, "query returned no data");
        check.empty_ok = true;
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(out.ok);
        assert_eq!(out.value, None);
    }

    #[test]
    fn prometheus_error_payload_is_reported() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let mut check = prometheus("", "up{", "== 1");
        let (out, _) = query(&mut check, "400 Bad Request", body);
        assert!(!out.ok);
        assert_eq!(
            out.detail,
            r#"prometheus bad_data for query "up{": parse error at char 4"#
        );
    }

    #[test]
    fn prometheus_non_json_answer_is_reported() {
        let mut check = prometheus("", "up", "== 1");
        let (out, _) = query(&mut check, "502 Bad Gateway", "<html>bad gateway</html>");
        assert!(!out.ok);
        assert!(
            out.detail.ends_with(
                "/api/v1/query: 502 Bad Gateway with a non-JSON answer \
                 \"<html>bad gateway</html>\" (is this a Prometheus server?)"
            ),
            "{}",
            out.detail
        );
    }

    #[test]
    fn prometheus_matrix_is_refused() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let mut check = prometheus("", "up[5m]", "== 1");
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(!out.ok);
        assert!(out.detail.contains("range vector"), "{}", out.detail);
    }

    // ---- Expect, State, step ----

    #[test]
    fn expect_parses_every_operator() {
        let check = |text: &str, op: Cmp, threshold: f64| {
            assert_eq!(Expect::parse(text), Ok(Expect { op, threshold }), "{text}");
        };
        check("< 0.9", Cmp::Lt, 0.9);
        check("<=1", Cmp::Le, 1.0);
        check(">2", Cmp::Gt, 2.0);
        check(" >= 1 ", Cmp::Ge, 1.0);
        check("== 0", Cmp::Eq, 0.0);
        check("!=0", Cmp::Ne, 0.0);
        check("< -1e3", Cmp::Lt, -1000.0);
        check("< +Inf", Cmp::Lt, f64::INFINITY);
        assert_eq!(Expect::parse(">=1").unwrap().to_string(), ">= 1");
        assert_eq!(Expect::parse("<0.9").unwrap().to_string(), "< 0.9");
    }

    #[test]
    fn expect_rejects_bad_text() {
        for text in ["", "0.9", "= 1", "=> 1", "< ", "< abc", "== NaN", "<< 1"] {
            let err = Expect::parse(text).unwrap_err();
            assert!(
                err.starts_with(&format!("bad expectation {text:?}: ")),
                "{err}"
            );
            assert!(err.contains("\"< 0.9\""), "{err}");
        }
    }

    #[test]
    fn expect_holds() {
        let e = |t: &str| Expect::parse(t).unwrap();
        assert!(e("< 1").holds(0.5) && !e("< 1").holds(1.0));
        assert!(e("<= 1").holds(1.0) && !e("<= 1").holds(1.5));
        assert!(e("> 1").holds(2.0) && !e("> 1").holds(1.0));
        assert!(e(">= 1").holds(1.0) && !e(">= 1").holds(0.0));
        assert!(e("== 1").holds(1.0) && !e("== 1").holds(0.0));
        assert!(e("!= 0").holds(1.0) && !e("!= 0").holds(0.0));
        assert!(!e("< 1").holds(f64::NAN) && e("!= 0").holds(f64::NAN));
    }

    #[test]
    fn states_round_trip() {
        for state in [State::Unknown, State::Up, State::Down] {
            assert_eq!(State::parse(state.as_str()), Ok(state));
        }
        assert!(State::parse("Up").unwrap_err().contains("\"up\""));
        assert_eq!(Counts::default().state, State::Unknown);
    }

    /// Applies `results` (fail_after 3, recover_after 2) from `start`;
    /// checks the final state and the changes, one per result.
    fn check_steps(start: State, results: &[bool], end: State, changes: &[Option<Change>]) {
        let mut counts = Counts {
            state: start,
            ..Counts::default()
        };
        let mut seen = Vec::new();
        for &ok in results {
            let (next, change) = step(counts, ok, 3, 2);
            counts = next;
            seen.push(change);
        }
        assert_eq!(counts.state, end, "{results:?}");
        assert_eq!(seen, changes, "{results:?}");
    }

    #[test]
    fn step_transitions() {
        use Change::*;
        // Unknown: the first success is Up without a change; failures count.
        check_steps(State::Unknown, &[true], State::Up, &[None]);
        check_steps(
            State::Unknown,
            &[false, false],
            State::Unknown,
            &[None, None],
        );
        check_steps(
            State::Unknown,
            &[false, false, false],
            State::Down,
            &[None, None, Some(WentDown)],
        );
        // Up: a success resets the failure streak.
        check_steps(
            State::Up,
            &[false, false, true, false, false],
            State::Up,
            &[None; 5],
        );
        check_steps(
            State::Up,
            &[false, false, false, false],
            State::Down,
            &[None, None, Some(WentDown), None],
        );
        // Down: recovery needs two successes in a row.
        check_steps(State::Down, &[true, false, true], State::Down, &[None; 3]);
        check_steps(
            State::Down,
            &[true, true, true],
            State::Up,
            &[None, Some(Recovered), None],
        );
    }

    #[test]
    fn step_counts_streaks() {
        let start = Counts::default();
        let (c, _) = step(start, false, 3, 2);
        assert_eq!((c.fails_in_row, c.oks_in_row), (1, 0));
        let (c, _) = step(c, true, 3, 2);
        assert_eq!((c.fails_in_row, c.oks_in_row), (0, 1));
        // Thresholds of 0 act as 1.
        let (c, change) = step(Counts::default(), false, 0, 0);
        assert_eq!((c.state, change), (State::Down, Some(Change::WentDown)));
        let (c, change) = step(c, true, 0, 0);
        assert_eq!((c.state, change), (State::Up, Some(Change::Recovered)));
    }

    #[test]
    fn status_lists_read_well() {
        assert_eq!(expected_statuses(&[]), "2xx or 3xx");
        assert_eq!(expected_statuses(&[200]), "200");
        assert_eq!(expected_statuses(&[200, 201, 204]), "200, 201 or 204");
        assert_eq!(status_text(599), "599");
    }
}
