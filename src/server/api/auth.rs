//! Who is asking: bearer tokens (only their SHA-256 is kept, compared in
//! constant time), their scopes, and the client's address.

use tiny_http::Request;

use crate::config::Scope;
use crate::error::{Error, Result};
use crate::time::now_ms;

use super::request::header;
use super::routes::Route;
use super::{guard, limit};
use crate::server::State;

/// The client's address, for the audit log and the limits of failed
/// authentications: behind `[server] trusted_proxies`, from `X-Forwarded-For`.
pub(crate) fn remote(state: &State, request: &Request) -> Option<String> {
    let peer = state.front.peer(request.remote_addr().copied())?.ip();
    let trusted = &state.config().server.trusted_proxies;
    Some(limit::client(peer, request, trusted).to_string())
}

pub(super) fn bearer(request: &Request) -> Option<String> {
    let (scheme, token) = header(request, "Authorization")?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Compares two secrets without an early exit on the first differing byte.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= (*x ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

/// Who a request comes from, once its token is checked.
pub(super) struct Caller {
    /// The token's name, "local" when heal serves loopback without tokens,
    /// "anonymous" on an open route, or "ping-key".
    pub(super) name: String,
    /// The token, if one was presented.
    pub(super) token: Option<crate::config::Token>,
}

impl Caller {
    pub(super) fn named(name: &str) -> Caller {
        Caller {
            name: name.into(),
            token: None,
        }
    }

    /// Refuses (403) an agent's declared tags that its token does not allow.
    pub(super) fn may_declare(&self, tags: &[String]) -> Result<()> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        match token.tag_not_allowed(tags) {
            None => Ok(()),
            Some(tag) => Err(Error::request(
                403,
                format!(
                    "token {:?} does not allow tag {tag:?} (it allows {:?}): add it to the token's tags = [...] in [[token]], or drop it from the agent's --tags",
                    token.name, token.tags
                ),
            )),
        }
    }
}

/// Checks the bearer token against the route's scope; returns who is asking.
/// A wrong or expired token counts against the client's address
/// (`limit`): past the limit it is answered 429, a right one never is.
pub(super) fn authorize(request: &Request, route: &Route, state: &State) -> Result<Caller> {
    let Some(scope) = route.scope(request.method()) else {
        return Ok(Caller::named("anonymous"));
    };
    let config = state.config();
    if guard::is_open(state, &config) {
        return Ok(Caller::named("local"));
    }
    let from = remote(state, request);
    let Some(presented) = bearer(request) else {
        state.refused(route.template(), from.as_deref(), "no token");
        return Err(Error::request(
            401,
            "missing bearer token (send Authorization: Bearer <token>)",
        ));
    };
    let mut found = None;
    for t in config.tokens.iter().chain(state.internal_tokens.iter()) {
        if t.matches(&presented) {
            found = Some(t.clone());
        }
    }
    let now = now_ms();
    let refused = match &found {
        None => Some("unknown token".to_string()),
        Some(t) if t.expired(now) => {
            let when = crate::time::format_rfc3339(t.expires.unwrap_or_default());
            Some(format!("token {:?} expired at {when}", t.name))
        }
        Some(_) => None,
    };
    if let Some(why) = refused {
        let address = from.as_deref().unwrap_or("unknown");
        let limited = state.auth_failures.limited(address, now);
        state.metrics.observe_auth_failure(limited.is_some());
        if let Some(after) = limited {
            let why = format!("{why}, after too many failed authentications");
            state.refused(route.template(), from.as_deref(), &why);
            return Err(limit::too_many(address, "wrong tokens", after));
        }
        state.auth_failures.add(address, now);
        state.refused(route.template(), from.as_deref(), &why);
        // An expired token: the client learns no more than for a wrong one.
        return Err(Error::request(401, "invalid token"));
    }
    let token = found.expect("refused above when no token matched");
    if !token.may(scope) {
        let hint = if scope == Scope::Agent {
            " (admin does not act as an agent: give the token the agent scope)"
        } else {
            ""
        };
        return Err(Error::request(
            403,
            format!(
                "token {:?} lacks the {scope:?} scope for this route{hint}",
                token.name
            )
            .to_lowercase(),
        ));
    }
    if let (Some(bound), Some(agent)) = (&token.agent, route.agent()) {
        if bound != agent {
            return Err(Error::request(
                403,
                format!(
                    "token {:?} is bound to agent {bound:?}, not {agent:?}",
                    token.name
                ),
            ));
        }
    }
    Ok(Caller {
        name: token.name.clone(),
        token: Some(token),
    })
}
