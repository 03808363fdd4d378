//! `[[token]]`: who may call heal, with which scopes, and how a presented
//! secret is checked against its hash.

use serde::Deserialize;
use toml::Spanned;

use super::{check_name, Validator};
use crate::error::Result;

/// A token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Everything.
    Admin,
    /// GET of alerts, events, agents.
    Read,
    /// Alert intake.
    Webhook,
    /// Heartbeat pings.
    Ping,
    /// Agent polling and reporting.
    Agent,
}

impl Scope {
    /// A scope by its name in the config.
    pub fn parse(text: &str) -> Option<Scope> {
        Some(match text {
            "admin" => Scope::Admin,
            "read" => Scope::Read,
            "webhook" => Scope::Webhook,
            "ping" => Scope::Ping,
            "agent" => Scope::Agent,
            _ => return None,
        })
    }
}

/// A `[[token]]`.
#[derive(Clone)]
pub struct Token {
    /// Name used in logs and the audit trail (never the secret).
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// SHA-256 of the secret: the secret itself is never kept.
    pub hash: [u8; 32],
    /// For agent tokens: the only agent id it may act as.
    pub agent: Option<String>,
    /// For tokens bound to an agent: the only tags that agent may declare
    /// (none when left out). An unbound agent token may declare any.
    pub tags: Vec<String>,
    /// From this time on (UTC ms) the token is refused.
    pub expires: Option<i64>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Token({}, {:?}, agent {:?}, tags {:?}, secret hashed)",
            self.name, self.scopes, self.agent, self.tags
        )
    }
}

/// `[[token]] expires`: an RFC 3339 time, or a date (the token ends as it begins, 00:00 UTC).
pub fn parse_expiry(text: &str) -> std::result::Result<i64, String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    match crate::time::parse_rfc3339(&full) {
        Ok(Some(ms)) => Ok(ms),
        _ => Err(format!(
            "{text:?} is not a date like \"2027-01-31\" or a time like \"2027-01-31T12:00:00Z\""
        )),
    }
}

impl Token {
    /// Whether the token may use routes that need `scope`: it has that
    /// scope, or admin, which covers every scope but agent. Acting as an
    /// agent (taking ops and their alert data, reporting results) needs
    /// the agent scope itself, so a leaked admin token cannot pose as a host.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
            || (scope != Scope::Agent && self.scopes.contains(&Scope::Admin))
    }

    /// The first of an agent's declared tags this token does not allow, if
    /// any: a token bound to an agent allows only its `tags`, an unbound
    /// one allows every tag.
    pub fn tag_not_allowed<'t>(&self, declared: &'t [String]) -> Option<&'t str> {
        self.agent.as_ref()?;
        declared
            .iter()
            .find(|t| !self.tags.contains(t))
            .map(String::as_str)
    }

    /// Whether the token has expired at `now` (UTC ms).
    pub fn expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// Whether `presented` is this token's secret: its hash compared in
    /// constant time.
    pub fn matches(&self, presented: &str) -> bool {
        hash_matches(presented, &self.hash)
    }
}

/// SHA-256 of a token's secret, as `[[token]] secret_sha256` holds it.
pub fn token_hash(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `presented` hashes to `hash` (a token's or a ping key's
/// SHA-256), compared in constant time.
pub fn hash_matches(presented: &str, hash: &[u8; 32]) -> bool {
    let h = token_hash(presented);
    let mut diff = 0u8;
    for (a, b) in h.iter().zip(hash.iter()) {
        diff |= a ^ b;
    }
    diff == 0
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    name: String,
    scopes: Vec<Spanned<String>>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    secret_sha256: Option<Spanned<String>>,
    agent: Option<String>,
    tags: Option<Spanned<Vec<String>>>,
    expires: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn token(&self, t: &Spanned<RawToken>) -> Result<Token> {
        let raw = t.get_ref();
        let item = format!("token {:?}", raw.name);
        check_name(&raw.name).or_else(|e| self.err(t.span(), &item, format!("name: {e}")))?;
        let mut scopes = Vec::new();
        for s in &raw.scopes {
            match Scope::parse(s.get_ref()) {
                Some(scope) => scopes.push(scope),
                None => {
                    return self.err(
                        s.span(),
                        &item,
                        format!(
                            "scopes: unknown scope {:?} (admin, read, webhook, ping or agent)",
                            s.get_ref()
                        ),
                    )
                }
            }
        }
        if scopes.is_empty() {
            return self.err(
                t.span(),
                &item,
                "scopes: empty (give at least one of admin, read, webhook, ping, agent)",
            );
        }
        let hash = match (
            &raw.secret_sha256,
            raw.secret.is_some() || raw.secret_file.is_some(),
        ) {
            (Some(h), false) => parse_sha256(h.get_ref()).map_or_else(
                || {
                    self.err(
                        h.span(),
                        &item,
                        "secret_sha256: not 64 hex digits (`heal token new` prints one)",
                    )
                },
                Ok,
            )?,
            (Some(h), true) => {
                return self.err(
                    h.span(),
                    &item,
                    "give exactly one of secret, secret_file or secret_sha256",
                )
            }
            (None, _) => {
                let secret =
                    self.secret(&raw.secret, &raw.secret_file, &t.span(), &item, "secret")?;
                if secret.len() < 16 {
                    return self.err(
                        t.span(),
                        &item,
                        "secret: shorter than 16 characters (`heal token new` makes one)",
                    );
                }
                token_hash(&secret)
            }
        };
        if raw.agent.is_some() && !scopes.contains(&Scope::Agent) {
            return self.err(
                t.span(),
                &item,
                "agent: only tokens with the agent scope are bound to an agent",
            );
        }
        if let (Some(tags), None) = (&raw.tags, &raw.agent) {
            return self.err(
                tags.span(),
                &item,
                "tags: only a token bound to an agent (agent = \"ID\") carries the tags that agent may declare",
            );
        }
        let expires = match &raw.expires {
            None => None,
            Some(e) => Some(
                parse_expiry(e.get_ref())
                    .or_else(|why| self.err(e.span(), &item, format!("expires: {why}")))?,
            ),
        };
        Ok(Token {
            name: raw.name.clone(),
            scopes,
            hash,
            agent: raw.agent.clone(),
            tags: raw
                .tags
                .as_ref()
                .map(|t| t.get_ref().clone())
                .unwrap_or_default(),
            expires,
        })
    }
}
