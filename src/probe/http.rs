//! The HTTP check: one request, its status, body and latency, and for
//! https the certificate's days left (`tls`).

use std::io::{self, Read};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;

use super::tls::check_certificate;
use super::{fail, millis, pass, timed_out, warn, Http, Outcome};
use crate::trust::load_ca_file;

/// The most bytes of a response body that are read.
pub(super) const BODY_LIMIT: u64 = 1 << 20;

/// A response: status and the first `BODY_LIMIT` bytes of the body.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
}

/// Request, then status, body and latency, then (https) the certificate's days left.
pub(super) fn run_http(http: &Http, timeout: Duration) -> Outcome {
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
    let mut warnings = Vec::new();
    if let Some(w) = http.warn_latency.filter(|w| took > *w) {
        warnings.push(format!(
            "took {} ms, warning above {} ms",
            millis(took),
            millis(w)
        ));
    }
    if let Some(min_days) = http.tls_min_days {
        let left = timeout.saturating_sub(start.elapsed());
        match check_certificate(&http.url, ca.as_deref(), min_days, left, timeout) {
            Ok(Some((note, days))) => match http.tls_warn_days {
                Some(w) if days < i64::from(w) => {
                    warnings.push(format!("{note}, warning below {w}"))
                }
                _ => detail = format!("{detail}, {note}"),
            },
            Ok(None) => {}
            Err(e) => return fail(e, value),
        }
    }
    if !warnings.is_empty() {
        return warn(warnings.join("; "), value);
    }
    pass(detail, value)
}

/// An agent for one probe run: the timeout, statuses as answers, no redirects, and `ca` as the only roots when given.
pub(super) fn agent(timeout: Duration, ca: Option<&[CertificateDer<'static>]>) -> ureq::Agent {
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
pub(super) fn read_answer(
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

/// "URL: 200 OK with a non-JSON answer "<start>" (HINT)", for an answer a
/// JSON API should have given.
pub(super) fn non_json(answer: &Answer, url: &str, hint: &str) -> String {
    let text = String::from_utf8_lossy(&answer.body);
    let start: String = text.trim().chars().take(80).collect();
    format!(
        "{url}: {} with a non-JSON answer {start:?} ({hint})",
        status_text(answer.status)
    )
}

/// One line for a failed request, naming the address or URL (without its
/// user, password or query values).
pub(crate) fn describe_error(e: &ureq::Error, url: &str, timeout: Duration) -> String {
    let shown = crate::redact::redact_url_secrets(url);
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
pub(super) fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A hint for certificate errors, which mostly mean a private CA.
pub(super) fn ca_hint(e: &rustls::Error) -> &'static str {
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
pub(super) fn status_text(status: u16) -> String {
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
pub(super) fn host_port(url: &str) -> Result<(String, u16), String> {
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

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use super::*;
    use crate::probe::testing::*;
    use crate::probe::*;

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
    fn http_slower_than_warn_latency_is_a_warning() {
        let mut slow = reply("200 OK", "ok");
        slow.delay = Duration::from_millis(300);
        let (url, _) = responder(1, slow);
        let mut check = http(&url);
        check.max_latency = Some(Duration::from_secs(5));
        check.warn_latency = Some(Duration::from_millis(100));
        let out = run_http_check(check);
        assert_eq!(out.level(), Level::Warning, "{out:?}");
        assert!(out.detail.starts_with("took "), "{}", out.detail);
        assert!(
            out.detail.ends_with(" ms, warning above 100 ms"),
            "{}",
            out.detail
        );
        let (url, _) = responder(1, reply("200 OK", "ok"));
        let mut check = http(&url);
        check.max_latency = Some(Duration::from_secs(5));
        check.warn_latency = Some(Duration::from_secs(4));
        assert_eq!(run_http_check(check).level(), Level::Ok);
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

    #[test]
    fn status_lists_read_well() {
        assert_eq!(expected_statuses(&[]), "2xx or 3xx");
        assert_eq!(expected_statuses(&[200]), "200");
        assert_eq!(expected_statuses(&[200, 201, 204]), "200, 201 or 204");
        assert_eq!(status_text(599), "599");
    }
}
