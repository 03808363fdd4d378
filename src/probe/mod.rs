//! Probes: what a `[[probe]]` checks (an HTTP endpoint, a TCP port, a
//! command, a Prometheus query, a SQL query, a Graphite render, how full a
//! disk is) and one run of such a check,
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
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::exec;
use crate::time::format_duration;

mod command;
mod disk;
mod graphite;
mod http;
mod prometheus;
mod sql;
mod step;
mod tcp;
mod tls;

pub use disk::{parse_percent, space, Space};
pub(crate) use http::describe_error;
pub use step::*;

use command::run_command;
use disk::run_disk;
use graphite::run_graphite;
use http::run_http;
use prometheus::run_prometheus;
use sql::run_sql;
use tcp::run_tcp;

/// What a probe checks. Built by the config module from `[[probe]]`. It
/// serializes so the server can hand a check to an agent (`[[probe]] on`);
/// the agent reads it back with the same derive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// A SQL query whose first value must satisfy an expectation.
    Sql(Sql),
    /// A Graphite render whose every series, aggregated, must satisfy an expectation.
    Graphite(Graphite),
    /// How full the filesystem holding a path is.
    Disk(Disk),
}

/// A disk check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disk {
    /// A path on the filesystem to measure.
    pub path: PathBuf,
    /// Percent used above which it fails.
    pub max_used: f64,
    /// Percent used above which it is a warning (below `max_used`).
    pub warn_used: Option<f64>,
}

/// An HTTP check.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Slower answers (within `max_latency`) are warnings.
    pub warn_latency: Option<Duration>,
    /// https only (ignored for http): fail when the server certificate expires in fewer days.
    pub tls_min_days: Option<u32>,
    /// https only: a warning when the certificate expires in fewer days (more than `tls_min_days`).
    pub tls_warn_days: Option<u32>,
    /// PEM of a private CA, trusted in addition to the webpki roots (see the module doc).
    pub ca_file: Option<PathBuf>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

/// A Prometheus check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prometheus {
    /// Base URL of a Prometheus server, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// PromQL, run as an instant query via `GET /api/v1/query?query=...`.
    pub query: String,
    /// Every returned sample must satisfy it.
    pub expect: Expect,
    /// A sample that meets `expect` but not this is a warning.
    pub warn: Option<Expect>,
    /// Whether an empty result is ok (by default it fails with "query returned no data").
    pub empty_ok: bool,
}

/// A SQL check, read only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sql {
    /// `postgres://USER@HOST/DB?…` or `sqlite:///path/to.db`, `${ENV}` expanded.
    pub url: String,
    /// One statement; the first column of its first row is compared.
    pub query: String,
    /// The value must satisfy it.
    pub expect: Expect,
    /// A value that meets `expect` but not this is a warning.
    pub warn: Option<Expect>,
    /// Whether no row is ok (by default it fails with "the query returned no row").
    pub empty_ok: bool,
}

/// A Graphite check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Graphite {
    /// Base URL of graphite-web, e.g. `http://127.0.0.1:8080`, `${ENV}` expanded.
    pub url: String,
    /// The target, as graphite-web's render API takes it (a path, a glob or functions).
    pub target: String,
    /// How far back, as the render API's `from` takes it ("-5min" by default).
    pub from: String,
    /// How each series' points become one number.
    pub aggregate: Aggregate,
    /// Every series' number must satisfy it.
    pub expect: Expect,
    /// A number that meets `expect` but not this is a warning.
    pub warn: Option<Expect>,
    /// Whether no data is ok (by default it fails).
    pub empty_ok: bool,
}

/// How the points of a Graphite series (nulls skipped) become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The newest point.
    Last,
    /// The mean.
    Avg,
    /// The largest.
    Max,
    /// The smallest.
    Min,
}

impl Aggregate {
    /// Parses "last", "avg", "max" or "min".
    pub fn parse(text: &str) -> Result<Aggregate, String> {
        match text {
            "last" => Ok(Aggregate::Last),
            "avg" => Ok(Aggregate::Avg),
            "max" => Ok(Aggregate::Max),
            "min" => Ok(Aggregate::Min),
            _ => Err(format!(
                "{text:?} is not an aggregate (write \"last\", \"avg\", \"max\" or \"min\")"
            )),
        }
    }

    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Last => "last",
            Aggregate::Avg => "avg",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
        }
    }
}

/// A comparison with a fixed number, such as "< 0.9".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Expect {
    /// The comparison.
    pub op: Cmp,
    /// The number compared with.
    pub threshold: f64,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// One sampled value: its series, as the source names it, and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    series: String,
    value: f64,
}

/// How a run went: passed, crossed only the `warn` threshold, or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Passed.
    Ok,
    /// Met `expect` (critical) but not `warn`.
    Warning,
    /// Failed.
    Critical,
}

impl Level {
    /// "ok", "warning" or "critical": the `severity` label of `ProbeFailing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    /// Parses what `as_str` gives; None for anything else.
    pub fn parse(text: &str) -> Option<Level> {
        [Level::Ok, Level::Warning, Level::Critical]
            .into_iter()
            .find(|l| l.as_str() == text)
    }
}

/// The result of one run of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the check passed (a warning did not: it counts toward `fail_after`).
    pub ok: bool,
    /// Whether it failed only the `warn` threshold (then `ok` is false).
    pub warning: bool,
    /// One line for people: what was seen, and what was expected when it failed.
    pub detail: String,
    /// Wall-clock time of the whole run.
    pub latency_ms: i64,
    /// Request latency in ms for http and tcp, the worst sample for prometheus
    /// and graphite, the value for sql, None otherwise.
    pub value: Option<f64>,
}

impl Outcome {
    /// Ok, warning or critical.
    pub fn level(&self) -> Level {
        match (self.ok, self.warning) {
            (true, _) => Level::Ok,
            (false, true) => Level::Warning,
            (false, false) => Level::Critical,
        }
    }
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

    /// Checks that `warn` can sit beside this expectation: on the same side
    /// (both `<`/`<=` or both `>`/`>=`) and no looser, so a value that meets
    /// `warn` meets the expectation too.
    pub fn check_warn(&self, warn: &Expect) -> Result<(), String> {
        let below = |c: Cmp| matches!(c, Cmp::Lt | Cmp::Le);
        let above = |c: Cmp| matches!(c, Cmp::Gt | Cmp::Ge);
        let fits = if below(self.op) {
            below(warn.op) && warn.threshold <= self.threshold
        } else if above(self.op) {
            above(warn.op) && warn.threshold >= self.threshold
        } else {
            return Err(format!(
                "a warning needs expect with <, <=, > or >= (got expect = \"{self}\")"
            ));
        };
        if !fits {
            return Err(format!(
                "\"{warn}\" must be on the same side as expect = \"{self}\" and no looser \
                 (e.g. expect = \"< 85\", warn = \"< 70\")"
            ));
        }
        Ok(())
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

impl Check {
    /// Whether it has a warn threshold (`warn`, `warn_latency`, `tls_warn_days`).
    pub fn warns(&self) -> bool {
        match self {
            Check::Http(h) => h.warn_latency.is_some() || h.tls_warn_days.is_some(),
            Check::Prometheus(p) => p.warn.is_some(),
            Check::Sql(s) => s.warn.is_some(),
            Check::Graphite(g) => g.warn.is_some(),
            Check::Disk(d) => d.warn_used.is_some(),
            Check::Tcp { .. } | Check::Command { .. } => false,
        }
    }
}

/// Runs a check once, bounded by `timeout` (connect + whole request; roughly).
pub fn run(check: &Check, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let mut outcome = match check {
        Check::Http(http) => run_http(http, timeout),
        Check::Tcp { addr } => run_tcp(addr, timeout),
        Check::Command { run } => run_command(run, timeout),
        Check::Prometheus(prometheus) => run_prometheus(prometheus, timeout),
        Check::Sql(sql) => run_sql(sql, timeout),
        Check::Graphite(graphite) => run_graphite(graphite, timeout),
        Check::Disk(disk) => run_disk(disk, timeout),
    };
    outcome.latency_ms = millis(start.elapsed());
    // Its detail is stored, shown, logged and sent in notifications: never
    // with the URL's user, password or query values.
    if let Check::Http(Http { url, .. })
    | Check::Prometheus(Prometheus { url, .. })
    | Check::Sql(Sql { url, .. })
    | Check::Graphite(Graphite { url, .. }) = check
    {
        outcome.detail = outcome
            .detail
            .replace(url.as_str(), &crate::redact::redact_url_secrets(url));
    }
    outcome
}

/// Ok when every sample satisfies the expectation; names the worst failing
/// one. With `warn`, samples that all meet `expect` but some not `warn` are a
/// warning, naming the worst of those. No samples fail with `no_data`,
/// unless `empty_ok`.
fn judge_samples(
    expect: Expect,
    warn: Option<Expect>,
    empty_ok: bool,
    samples: &[Sample],
    no_data: &str,
) -> Outcome {
    if samples.is_empty() {
        let detail = no_data.to_string();
        return if empty_ok {
            pass(detail, None)
        } else {
            fail(detail, None)
        };
    }
    let failing =
        |e: Expect| -> Vec<&Sample> { samples.iter().filter(|s| !e.holds(s.value)).collect() };
    let worst = |e: Expect, pool: &[&Sample]| -> (Option<f64>, String) {
        let worst = pool
            .iter()
            .max_by(|a, b| e.badness(a.value).total_cmp(&e.badness(b.value)))
            .expect("pool is not empty: samples is not empty");
        (
            Some(worst.value),
            format!("{} = {}", worst.series, number(worst.value)),
        )
    };
    let more = |n: usize| match n {
        1 => String::new(),
        n => format!(" ({} more failing)", n - 1),
    };
    let critical = failing(expect);
    if !critical.is_empty() {
        let (value, seen) = worst(expect, &critical);
        return fail(
            format!("{seen}, expected {expect}{}", more(critical.len())),
            value,
        );
    }
    if let Some(w) = warn {
        let warning = failing(w);
        if !warning.is_empty() {
            let (value, seen) = worst(w, &warning);
            let detail = format!("{seen}, warning: expected {w}{}", more(warning.len()));
            return self::warn(detail, value);
        }
    }
    let shown = warn.unwrap_or(expect);
    let (value, seen) = worst(shown, &samples.iter().collect::<Vec<_>>());
    let n = samples.len();
    let noun = if n == 1 { "sample" } else { "samples" };
    pass(format!("{n} {noun} {shown}, worst {seen}"), value)
}

/// One value against `expect` and `warn`: "7 < 10", "12, expected < 10",
/// "8, warning: expected < 5".
fn judge_value(expect: Expect, warn: Option<Expect>, value: f64) -> Outcome {
    let seen = number(value);
    if !expect.holds(value) {
        return fail(format!("{seen}, expected {expect}"), Some(value));
    }
    match warn {
        Some(w) if !w.holds(value) => {
            self::warn(format!("{seen}, warning: expected {w}"), Some(value))
        }
        _ => pass(format!("{seen} {}", warn.unwrap_or(expect)), Some(value)),
    }
}

/// A passing outcome; `run` fills in the latency.
fn pass(detail: String, value: Option<f64>) -> Outcome {
    Outcome {
        ok: true,
        warning: false,
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

/// An outcome that crossed only the warn threshold; `run` fills in the latency.
fn warn(detail: String, value: Option<f64>) -> Outcome {
    Outcome {
        ok: false,
        warning: true,
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

/// What the tests of the checks share: loopback servers that answer, stay
/// silent or are closed, and the checks they run.
#[cfg(test)]
mod testing {
    use std::io::{self, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::*;

    /// The timeout of most test probes; only the slow tests wait for it.
    pub(super) const TIMEOUT: Duration = Duration::from_secs(2);
    /// How long a test server waits for a request before giving up.
    pub(super) const SERVER_WAIT: Duration = Duration::from_secs(3);

    /// A canned HTTP answer.
    #[derive(Clone)]
    pub(super) struct Reply {
        pub(super) status: &'static str,
        pub(super) headers: &'static str,
        pub(super) body: String,
        pub(super) delay: Duration,
    }

    pub(super) fn reply(status: &'static str, body: &str) -> Reply {
        Reply {
            status,
            headers: "",
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// Answers `n` connections on 127.0.0.1 with `reply` and sends each
    /// request head on the channel. Returns the base URL.
    pub(super) fn responder(n: usize, reply: Reply) -> (String, mpsc::Receiver<String>) {
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
    pub(super) fn silent_server(hold: Duration) -> String {
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
    pub(super) fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Reads a request head, at most 16 KiB, until the blank line, end of file or an error.
    pub(super) fn read_head(stream: &mut impl Read) -> String {
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

    pub(super) fn write_reply(stream: &mut impl Write, reply: &Reply) -> io::Result<()> {
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

    pub(super) fn http(url: &str) -> Http {
        Http {
            url: url.to_string(),
            method: "GET".into(),
            expect_status: Vec::new(),
            body_contains: None,
            max_latency: None,
            warn_latency: None,
            tls_min_days: None,
            tls_warn_days: None,
            ca_file: None,
            headers: Vec::new(),
        }
    }

    pub(super) fn run_http_check(check: Http) -> Outcome {
        run(&Check::Http(check), TIMEOUT)
    }

    pub(super) fn prometheus(url: &str, query: &str, expect: &str) -> Prometheus {
        Prometheus {
            url: url.to_string(),
            query: query.to_string(),
            expect: Expect::parse(expect).unwrap(),
            warn: None,
            empty_ok: false,
        }
    }

    pub(super) fn graphite(url: &str, target: &str, expect: &str) -> Graphite {
        Graphite {
            url: url.to_string(),
            target: target.to_string(),
            from: "-5min".into(),
            aggregate: Aggregate::Last,
            expect: Expect::parse(expect).unwrap(),
            warn: None,
            empty_ok: false,
        }
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use super::*;
    use crate::probe::testing::*;

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
    fn warn_must_sit_on_expect_s_side_and_be_no_looser() {
        let e = |t: &str| Expect::parse(t).unwrap();
        assert_eq!(e("< 85").check_warn(&e("< 70")), Ok(()));
        assert_eq!(e("<= 85").check_warn(&e("< 85")), Ok(()));
        assert_eq!(e("> 10").check_warn(&e(">= 20")), Ok(()));
        for (expect, warn) in [
            ("< 85", "< 90"),
            ("< 85", "> 70"),
            ("> 10", "> 5"),
            ("> 10", "< 20"),
        ] {
            let err = e(expect).check_warn(&e(warn)).unwrap_err();
            assert!(
                err.contains("same side as expect"),
                "{expect} {warn}: {err}"
            );
        }
        let err = e("== 1").check_warn(&e("== 1")).unwrap_err();
        assert!(err.contains("needs expect with <, <=, > or >="), "{err}");
    }

    #[test]
    fn judge_value_tells_ok_warning_and_critical() {
        let (expect, warn) = (Expect::parse("< 10").unwrap(), Expect::parse("< 5").ok());
        let check = |v: f64, level: Level, detail: &str| {
            let out = judge_value(expect, warn, v);
            assert_eq!((out.level(), out.detail.as_str()), (level, detail));
        };
        check(3.0, Level::Ok, "3 < 5");
        check(7.0, Level::Warning, "7, warning: expected < 5");
        check(12.0, Level::Critical, "12, expected < 10");
        let out = judge_value(expect, None, 7.0);
        assert_eq!((out.level(), out.detail.as_str()), (Level::Ok, "7 < 10"));
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
}
