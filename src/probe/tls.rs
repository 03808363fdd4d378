//! TLS certificate expiry: a handshake of its own that reads the server
//! certificate's notAfter, and the private CA a probe trusts.

use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};

use super::http::{ca_hint, host_port, tls_error};
use super::tcp::{connect_any, describe_io};
use super::timed_out;
use crate::time::{format_rfc3339, now_ms, parse_rfc3339};
use crate::trust::client_config;

/// Milliseconds in a day.
const MS_PER_DAY: i64 = 86_400_000;

/// For an https URL, checks that the server certificate is valid for at
/// least `min_days` more days; gives a note for the detail and the days
/// left. Plain http gives no note.
pub(super) fn check_certificate(
    url: &str,
    ca: Option<&[CertificateDer<'static>]>,
    min_days: u32,
    budget: Duration,
    timeout: Duration,
) -> Result<Option<(String, i64)>, String> {
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
    Ok(Some((
        format!("certificate expires in {days} days ({date})"),
        days,
    )))
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::sync::Arc;

    use std::thread;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;
    use crate::probe::testing::*;
    use crate::probe::*;
    use crate::time::{format_rfc3339, now_ms};

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
    fn tls_certificate_between_warn_and_min_days_is_a_warning() {
        let (ca_pem, chain, key) = pki();
        let port = tls_responder(2, chain, key);
        let path = ca_file("warn-days", &ca_pem);
        let mut check = http(&format!("https://localhost:{port}/"));
        check.ca_file = Some(path.clone());
        check.tls_min_days = Some(5);
        check.tls_warn_days = Some(30);
        let out = run_http_check(check);
        let _ = std::fs::remove_file(path);
        assert_eq!(out.level(), Level::Warning, "{out:?}");
        let (y, m, d) = date_in(11);
        assert_eq!(
            out.detail,
            format!("certificate expires in 10 days ({y:04}-{m:02}-{d:02}), warning below 30")
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
}
