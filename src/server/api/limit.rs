//! Who the client is, and how many wrong credentials it sent this minute.
//!
//! The client's address is the connection's peer, or, when that peer is one
//! of `[server] trusted_proxies`, the rightmost `X-Forwarded-For` address
//! that is not itself a trusted proxy (each proxy appends the address it
//! got the request from, so addresses left of it may be forged).
//!
//! Failed authentications (a wrong or expired token at the API or the login
//! form) are counted per client address and minute; past
//! `FAILED_PER_MINUTE` a wrong credential gets 429 with `Retry-After`
//! instead of 401. A right credential is checked first and is never refused
//! by the limit, so a guesser cannot lock out the people behind its
//! address (a proxy, a NAT): the limit makes guessing visible and cheap to
//! answer, and a secret's length (at least 16 characters) makes it futile.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tiny_http::Request;

use crate::config::Cidr;
use crate::error::Error;

/// Failed authentications allowed per client address and minute.
pub const FAILED_PER_MINUTE: u32 = 10;

/// Failed authentications by client address, this minute.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, (i64, u32)>>);

impl Failures {
    /// Seconds until `remote` may try again, if it had `FAILED_PER_MINUTE`
    /// failures this minute.
    pub fn limited(&self, remote: &str, now: i64) -> Option<u64> {
        let minute = now / 60_000;
        let f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let over = f
            .get(remote)
            .is_some_and(|(m, n)| *m == minute && *n >= FAILED_PER_MINUTE);
        over.then(|| retry_after(now))
    }

    /// Counts a failure from `remote`.
    pub fn add(&self, remote: &str, now: i64) {
        let minute = now / 60_000;
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f.retain(|_, (m, _)| *m == minute);
        f.entry(remote.to_string()).or_insert((minute, 0)).1 += 1;
    }
}

/// Seconds to the end of the minute of `now` (at least 1).
pub fn retry_after(now: i64) -> u64 {
    let left = 60_000 - now.rem_euclid(60_000);
    (left as u64).div_ceil(1000).max(1)
}

/// The 429 of a limited address: what happened and when to try again.
pub fn too_many(remote: &str, what: &str, retry_after: u64) -> Error {
    Error::request(
        429,
        format!("too many {what} from {remote}: wait {retry_after} s (Retry-After), then try again with a valid token"),
    )
}

/// The client's address: `peer`, or, when `peer` is a trusted proxy, the
/// rightmost address of `X-Forwarded-For` that is not a trusted proxy (the
/// leftmost if all are). An entry that is not an address ends the walk at
/// the proxy that appended it.
pub fn client(peer: IpAddr, request: &Request, trusted: &[Cidr]) -> IpAddr {
    if trusted.is_empty() {
        return peer;
    }
    let forwarded: Vec<&str> = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("X-Forwarded-For"))
        .flat_map(|h| h.value.as_str().split(','))
        .collect();
    client_of(peer, &forwarded, trusted)
}

fn client_of(peer: IpAddr, forwarded: &[&str], trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = peer;
    for entry in forwarded.iter().rev() {
        if !is_trusted(client) {
            break;
        }
        let Some(ip) = parse_forwarded(entry) else {
            break;
        };
        client = ip;
    }
    client
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`,
/// or with a port (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse() {
        return Some(ip);
    }
    if let Ok(sock) = e.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    e.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_address_and_minute() {
        let f = Failures::default();
        for _ in 0..FAILED_PER_MINUTE {
            assert_eq!(f.limited("10.0.0.1", 60_000), None);
            f.add("10.0.0.1", 60_000);
        }
        assert_eq!(f.limited("10.0.0.1", 60_000), Some(60));
        assert_eq!(f.limited("10.0.0.1", 119_001), Some(1));
        assert_eq!(f.limited("10.0.0.1", 110_500), Some(10));
        assert_eq!(f.limited("10.0.0.2", 60_000), None);
        assert_eq!(f.limited("10.0.0.1", 120_000), None, "a new minute");
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_added() {
        let trusted = [
            Cidr::parse("127.0.0.1").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        let check = |peer: &str, forwarded: &[&str], want: &str| {
            let got = client_of(peer.parse().unwrap(), forwarded, &trusted);
            assert_eq!(got.to_string(), want, "{peer} {forwarded:?}");
        };
        check("127.0.0.1", &["192.0.2.7"], "192.0.2.7");
        check(
            "127.0.0.1",
            &["6.6.6.6", "192.0.2.7", "10.1.1.1"],
            "192.0.2.7",
        );
        check("127.0.0.1", &[], "127.0.0.1");
        check("127.0.0.1", &["10.0.0.9"], "10.0.0.9");
        check("127.0.0.1", &["192.0.2.7", "garbage"], "127.0.0.1");
        // A client that is not a trusted proxy names nobody else.
        check("192.0.2.7", &["6.6.6.6"], "192.0.2.7");
    }

    #[test]
    fn forwarded_entries_parse_with_or_without_ports() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(parse_forwarded(" 192.0.2.7"), ip("192.0.2.7"));
        assert_eq!(parse_forwarded("192.0.2.7:5678"), ip("192.0.2.7"));
        assert_eq!(parse_forwarded("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(parse_forwarded("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(parse_forwarded("[2001:db8::1]:80"), ip("2001:db8::1"));
        assert_eq!(parse_forwarded("unknown"), None);
    }

    #[test]
    fn trusted_blocks_hold_their_addresses_only() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(c("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(c("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(!c("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.example").is_err());
    }
}
