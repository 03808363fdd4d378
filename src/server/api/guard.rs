//! Keeps web pages from driving heal through a browser (issue: cross-site
//! requests and DNS rebinding). Three checks, before any route runs:
//!
//! - `host`: an open heal (no `[[token]]`, no TLS) answers only requests
//!   addressed to a loopback name or address, or to `public_url`'s host
//!   (421 otherwise). A page at `evil.example` that makes its name resolve
//!   to 127.0.0.1 still sends `Host: evil.example`, so it reads and posts
//!   nothing. With tokens, a rebound page has no token and no cookie (the
//!   browser keeps cookies by host name), so the check is not needed there.
//! - `origin`: every request that may change something (any method but GET
//!   and HEAD) whose `Origin` header is present must come from heal's own
//!   origin (403 otherwise), token or not. Browsers send `Origin` on every
//!   such request, including those they send without asking first;
//!   Alertmanager, agents, the CLI and curl send none.
//! - `require_json`: a JSON body's `Content-Type`, when given, is exactly
//!   `application/json` (parameters allowed), so a `text/plain` form or
//!   script, which a browser sends cross-site without a preflight, is not
//!   taken as JSON.
//!
//! Heal's own origin is `[server] public_url`'s scheme and host, or the
//! request's own `Host` with the scheme heal serves (the two are the same
//! site unless the name was rebound, which `host` refuses where it matters).

use tiny_http::{Method, Request};

use super::{header, State};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::host::is_loopback;

/// Whether heal runs without tokens (loopback only): requests need no token.
pub(crate) fn is_open(state: &State, config: &Config) -> bool {
    config.tokens.is_empty() && state.open_without_tokens
}

/// Refuses (421) a request to an open heal served in plain HTTP whose
/// `Host` is neither a loopback name or address nor `public_url`'s host.
pub(crate) fn host(request: &Request, state: &State, config: &Config) -> Result<()> {
    if state.front.is_tls() || !is_open(state, config) {
        return Ok(());
    }
    // A client without a Host header is no browser: nothing to rebind.
    let Some(host) = header(request, "Host") else {
        return Ok(());
    };
    let name = host_name(host);
    let public = config
        .server
        .public_url
        .as_deref()
        .and_then(origin_of)
        .and_then(|o| o.split_once("://").map(|(_, a)| host_name(a).to_string()));
    if is_loopback(name) || public.is_some_and(|p| p.eq_ignore_ascii_case(name)) {
        return Ok(());
    }
    Err(Error::request(
        421,
        format!("refused: heal without tokens answers only requests to a loopback address (127.0.0.1, [::1], localhost), and this one was addressed to {host:?}; open heal as http://127.0.0.1:PORT, or set [server] public_url to the name you use"),
    ))
}

/// Refuses (403) a request that may change something (not GET or HEAD)
/// whose `Origin` is present and is not heal's own origin.
pub(crate) fn origin(request: &Request, state: &State, config: &Config) -> Result<()> {
    if matches!(request.method(), Method::Get | Method::Head) {
        return Ok(());
    }
    let Some(origin) = header(request, "Origin") else {
        return Ok(());
    };
    if is_own_origin(origin, request, config, state.front.is_tls()) {
        return Ok(());
    }
    Err(Error::request(
        403,
        format!("refused: a request from the web page at {origin:?}, which is not this heal's origin; browsers may not drive heal from other sites (if that is heal's own address, set [server] public_url to it)"),
    ))
}

/// Whether `from` (an `Origin`, or a `Referer` URL) is heal's own origin:
/// `public_url`'s, or the request's `Host` with the scheme heal serves.
pub(crate) fn is_own_origin(from: &str, request: &Request, config: &Config, tls: bool) -> bool {
    let Some(from) = origin_of(from) else {
        return false;
    };
    let scheme = if tls { "https" } else { "http" };
    let own = header(request, "Host").and_then(|h| origin_of(&format!("{scheme}://{h}")));
    let public = config.server.public_url.as_deref().and_then(origin_of);
    own.as_deref() == Some(from.as_str()) || public.as_deref() == Some(from.as_str())
}

/// Refuses (415) a body whose `Content-Type` is given and is not JSON.
pub(crate) fn require_json(request: &Request) -> Result<()> {
    let Some(ct) = header(request, "Content-Type") else {
        return Ok(());
    };
    let media = ct.split(';').next().unwrap_or_default().trim();
    if media.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(Error::request(
        415,
        format!("content type {ct:?} is not JSON (send Content-Type: application/json)"),
    ))
}

/// The `scheme://host[:port]` of a URL, lower case, without a default port
/// (80 for http, 443 for https); `None` if it has no scheme or host.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => "",
    };
    let authority = match authority.strip_suffix(default) {
        Some(a) if !default.is_empty() => a.to_string(),
        _ => authority,
    };
    Some(format!("{scheme}://{authority}"))
}

/// The host of a `Host` header or URL authority, without its port,
/// lower case in effect (callers compare it case-insensitively).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_lose_paths_case_and_default_ports() {
        let check =
            |url: &str, want: Option<&str>| assert_eq!(origin_of(url).as_deref(), want, "{url}");
        check("http://127.0.0.1:7878", Some("http://127.0.0.1:7878"));
        check(
            "HTTPS://Heal.Example:443/events?x=1",
            Some("https://heal.example"),
        );
        check("http://heal.example:80", Some("http://heal.example"));
        check("https://heal.example:80", Some("https://heal.example:80"));
        check("http://[::1]:7878/", Some("http://[::1]:7878"));
        check("null", None);
        check("http://user@evil.example", None);
        check("http://", None);
    }

    #[test]
    fn only_loopback_hosts_are_loopback() {
        let check =
            |host: &str, want: bool| assert_eq!(is_loopback(host_name(host)), want, "{host}");
        check("127.0.0.1:7878", true);
        check("127.8.9.1", true);
        check("localhost:7878", true);
        check("LOCALHOST.", true);
        check("[::1]:7878", true);
        check("[::1]", true);
        check("evil.example:7878", false);
        check("localhost.evil.example", false);
        check("127.0.0.1.evil.example", false);
        check("10.0.0.1:7878", false);
        check("[::2]:7878", false);
        check("", false);
    }
}
