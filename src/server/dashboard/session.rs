//! Who is looking. A person logs in once by pasting a token into `/login`,
//! which sets a session cookie (HttpOnly, SameSite=Strict, Secure under TLS)
//! for `SESSION_TTL_MS`; the store keeps only the SHA-256 of the session's
//! id, so a restart logs nobody out and a copy of the database logs nobody
//! in. A token removed from the config ends its sessions. A bearer token
//! also works for reading pages (scripts, the benchmark). With no
//! `[[token]]` configured (loopback only) the dashboard is open, as the API
//! is.
//!
//! Every POST must come from a page of this heal: its `Origin` (or
//! `Referer`) is heal's own origin (`api::guard::is_own_origin`), and its
//! form carries the viewer's CSRF token, derived from the session's id (or,
//! when open, from a secret made at start). Failed logins are refused with
//! the reason, recorded like refused tokens (`State::refused`) and limited
//! per client address with the API's wrong tokens (`api::limit`); a right
//! token always logs in.

use crate::store::sql::Db;
use tiny_http::Request;

use super::{header, Reply};
use crate::config::{hex, token_hash, Config, Scope, Token};
use crate::error::{Error, Result};
use crate::server::api::limit;
use crate::server::State;
use crate::store;

/// The session cookie's name.
pub const COOKIE: &str = "heal_session";

/// How long a login lasts.
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;

/// What the dashboard keeps in memory: the secret behind the CSRF token of
/// an open dashboard.
pub struct Shared {
    open_secret: String,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            open_secret: crate::agent::random_hex(32),
        }
    }
}

/// Who is looking, and what they may do.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The token's name, or "local" on an open dashboard.
    pub name: String,
    /// May act (admin scope).
    pub admin: bool,
    /// The token every form must carry; `None` for a bearer token, which cannot post forms.
    pub csrf: Option<String>,
    /// The session's id hash, for logout.
    pub session: Option<String>,
    /// No tokens are configured: nobody logs in.
    pub open: bool,
}

/// Whether heal runs without tokens (loopback only): the dashboard is open.
pub fn is_open(state: &State, config: &Config) -> bool {
    crate::server::api::guard::is_open(state, config)
}

/// The viewer of a request: an open dashboard's, a session's, a bearer
/// token's (GET only), or nobody.
pub fn viewer(
    request: &Request,
    state: &State,
    config: &Config,
    conn: Db<'_>,
    now: i64,
) -> Result<Option<Viewer>> {
    if is_open(state, config) {
        return Ok(Some(Viewer {
            name: "local".into(),
            admin: true,
            csrf: Some(csrf_of(&state.dashboard.open_secret)),
            session: None,
            open: true,
        }));
    }
    if let Some(id) = cookie(request, COOKIE) {
        let id_hash = hex(&token_hash(&id));
        if let Some(row) = store::session::session(conn, &id_hash, now)? {
            let token = config
                .tokens
                .iter()
                .find(|t| hex(&t.hash) == row.token_hash);
            // An expired token ends its sessions too.
            if let Some(t) = token.filter(may_read).filter(|t| !t.expired(now)) {
                return Ok(Some(Viewer {
                    name: t.name.clone(),
                    admin: t.scopes.contains(&Scope::Admin),
                    csrf: Some(csrf_of(&id)),
                    session: Some(id_hash),
                    open: false,
                }));
            }
        }
    }
    if *request.method() == tiny_http::Method::Get {
        if let Some(t) = bearer_token(request, config)
            .filter(may_read)
            .filter(|t| !t.expired(now))
        {
            return Ok(Some(Viewer {
                name: t.name.clone(),
                admin: t.scopes.contains(&Scope::Admin),
                csrf: None,
                session: None,
                open: false,
            }));
        }
    }
    Ok(None)
}

fn may_read(t: &&Token) -> bool {
    t.may(Scope::Read)
}

fn bearer_token<'c>(request: &Request, config: &'c Config) -> Option<&'c Token> {
    let value = header(request, "Authorization")?;
    let (scheme, secret) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    config.tokens.iter().find(|t| t.matches(secret.trim()))
}

/// A cookie's value.
fn cookie(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Cookie"))
        .flat_map(|h| h.value.as_str().split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The CSRF token of a session (or of an open dashboard): derived from its
/// secret id, so it needs no storage and tells nothing about the id.
fn csrf_of(secret: &str) -> String {
    hex(&token_hash(&format!("heal dashboard csrf\n{secret}")))[..32].to_string()
}

/// Refuses a POST that does not come from a page of this heal (403): its
/// `Origin`, or else its `Referer`, must be heal's own origin (the host it
/// was sent to with the scheme heal serves, or `[server] public_url`).
pub fn same_origin(request: &Request, config: &Config, tls: bool) -> Result<()> {
    let from = header(request, "Origin")
        .filter(|o| *o != "null")
        .or_else(|| header(request, "Referer"));
    let Some(from) = from else {
        return Err(Error::request(
            403,
            "refused: the form came without an Origin or Referer header, so heal cannot tell it came from its own page",
        ));
    };
    if crate::server::api::guard::is_own_origin(from, request, config, tls) {
        return Ok(());
    }
    Err(Error::request(
        403,
        "refused: the form came from another site (its Origin is not this heal; if it is heal's own address, set [server] public_url to it)",
    ))
}

/// Refuses a form without the viewer's CSRF token (403).
pub fn check_csrf(viewer: &Viewer, form: &[(String, String)]) -> Result<()> {
    let sent = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    match &viewer.csrf {
        Some(want) if crate::server::api::same_secret(sent.as_bytes(), want.as_bytes()) => Ok(()),
        Some(_) => Err(Error::request(
            403,
            "refused: the form's security token is missing or stale; reload the page and try again",
        )),
        None => Err(Error::request(
            403,
            "refused: forms need a login session (a bearer token reads pages only)",
        )),
    }
}

/// The `Set-Cookie` value of a new session, or of a logout (`None`).
pub fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let (value, age) = match id {
        Some(id) => (id, SESSION_TTL_MS / 1000),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{secure}")
}

/// Logs in with a pasted token: a new session and its cookie, or the reason
/// the token is refused.
pub fn login(
    state: &State,
    config: &Config,
    secret: &str,
    remote: Option<&str>,
    now: i64,
) -> Result<(String, String)> {
    let from = remote.unwrap_or("unknown");
    // The token is checked first: a right one is never refused by the limit.
    let refuse = |status: u16, why: &str, message: String| {
        let limited = state.auth_failures.limited(from, now);
        state.metrics.observe_auth_failure(limited.is_some());
        if let Some(after) = limited {
            let why = format!("{why}, after too many failed logins");
            state.refused("/login", remote, &why);
            return Err(limit::too_many(from, "failed logins", after));
        }
        state.auth_failures.add(from, now);
        state.refused("/login", remote, why);
        Err(Error::request(status, message))
    };
    let secret = secret.trim();
    if secret.is_empty() {
        return refuse(
            401,
            "no token",
            "paste a token with the read or admin scope".into(),
        );
    }
    let Some(token) = config.tokens.iter().find(|t| t.matches(secret)) else {
        return refuse(
            401,
            "unknown token",
            "that token is not valid here: check it against [[token]] in the config".into(),
        );
    };
    if token.expired(now) {
        let when = crate::time::format_rfc3339(token.expires.unwrap_or_default());
        // Told no more than for a wrong token; the audit log says which.
        return refuse(
            401,
            &format!("token {:?} expired at {when}", token.name),
            "that token is not valid here: check it against [[token]] in the config".into(),
        );
    }
    if !may_read(&token) {
        return refuse(
            403,
            "token without the read scope",
            format!(
                "token {:?} cannot open the dashboard: it needs the read or admin scope",
                token.name
            ),
        );
    }
    let id = session_id()?;
    let (id_hash, token_hash_hex) = (hex(&token_hash(&id)), hex(&token.hash));
    let until = now + SESSION_TTL_MS;
    let remote2 = remote.map(str::to_string);
    state.writer.write(move |conn| {
        store::session::create_session(
            conn,
            &id_hash,
            &token_hash_hex,
            until,
            remote2.as_deref(),
            now,
        )
    })?;
    let until_text = crate::time::format_rfc3339(until);
    log::info!("dashboard: {} logged in from {from}", token.name);
    state.audit(
        &token.name,
        "dashboard.login",
        "/login",
        &format!("session until {until_text}"),
        remote,
    );
    Ok((token.name.clone(), id))
}

/// Ends the viewer's session.
pub fn logout(state: &State, viewer: &Viewer, remote: Option<&str>) -> Result<()> {
    if let Some(id_hash) = viewer.session.clone() {
        state
            .writer
            .write(move |conn| store::session::end_session(conn, &id_hash))?;
        log::info!("dashboard: {} logged out", viewer.name);
        state.audit(&viewer.name, "dashboard.logout", "/logout", "", remote);
    }
    Ok(())
}

/// A new session's id: 32 random bytes, hex.
fn session_id() -> Result<String> {
    let mut buf = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .map_err(|_| Error::Failed("no random numbers for a session id".into()))?;
    Ok(hex(&buf))
}

/// Where to go after logging in: a path of this heal, never another site.
pub fn next_page(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".into(),
    }
}

/// A redirect to the login form that comes back to `path`.
pub fn to_login(path_and_query: &str) -> Reply {
    Reply::redirect(&super::html::url("/login", &[("next", path_and_query)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_heal() {
        assert_eq!(next_page(Some("/events?state=open")), "/events?state=open");
        assert_eq!(next_page(Some("//evil.example/x")), "/");
        assert_eq!(next_page(Some("https://evil.example")), "/");
        assert_eq!(next_page(Some("/\\evil.example")), "/");
        assert_eq!(next_page(None), "/");
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let c = set_cookie(Some("abc"), true);
        assert_eq!(
            c,
            "heal_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
        );
        assert!(set_cookie(None, false)
            .contains("heal_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"));
    }

    #[test]
    fn the_csrf_token_depends_on_the_session() {
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert_eq!(csrf_of("a"), csrf_of("a"));
        assert_eq!(csrf_of("a").len(), 32);
    }
}
