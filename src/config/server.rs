//! `[server]` and `[safety]`: how heal listens, its limits, and the watchdog.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::notify::check_url;
use super::{redact_url, redact_url_secrets, Validator};
use crate::error::Result;

/// `[safety]` settings: limits over all rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Safety {
    /// Runs allowed in any hour; the next one opens the breaker.
    pub max_runs_per_hour: u32,
    /// Failed events in a row that open the breaker.
    pub max_failed_in_row: u32,
    /// Most agents one decision may fan out to (a rule may lower or raise it).
    pub max_targets: u32,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_runs_per_hour: 60,
            max_failed_in_row: 10,
            max_targets: 20,
        }
    }
}

/// `[server]` settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// Address to listen on (`--listen` overrides).
    pub listen: String,
    /// SQLite file (`--db` overrides).
    pub db: PathBuf,
    /// Longest a poll waits for work.
    pub poll_wait: Duration,
    /// Time a dispatched op has to be acknowledged by its agent.
    pub lease: Duration,
    /// Time between SIGTERM and SIGKILL for a step, and slack past an op's deadline.
    pub kill_grace: Duration,
    /// Longest an op waits in the queue for its agent before it is given up as lost.
    pub dispatch_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub max_body: usize,
    /// Output kept per step, in bytes (the tail).
    pub max_output: usize,
    /// HTTP worker threads.
    pub http_threads: usize,
    /// An agent that has not polled for this long raises `AgentDown`.
    pub agent_down_after: Duration,
    /// An agent silent for this long, with no op still to end, is forgotten
    /// (`None`: never).
    pub forget_agents_after: Option<Duration>,
    /// Where people reach this server (links in notifications).
    pub public_url: Option<String>,
    /// PEM certificate chain: with `tls_key`, heal speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub tls_key: Option<PathBuf>,
    /// Largest request head (request line and headers), in bytes.
    pub max_header: usize,
    /// Longest a client may take to send one request (and finish a TLS handshake).
    pub request_timeout: Duration,
    /// A connection with no request in flight or awaiting its answer is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// A URL heal GETs on a schedule while it is healthy (a dead man's switch elsewhere).
    pub watchdog: Option<Watchdog>,
    /// A reload may leave no token or no rule where the running config has
    /// some (see `emptied`); without it such a reload is refused.
    pub allow_empty: bool,
    /// Proxies whose `X-Forwarded-For` names the client (addresses or CIDR blocks).
    pub trusted_proxies: Vec<Cidr>,
}

/// An address block of `[server] trusted_proxies`: an address and how many
/// leading bits of it count (all of them for a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    bits: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8`, or a single address such as `127.0.0.1`.
    pub fn parse(text: &str) -> std::result::Result<Cidr, String> {
        let (addr, bits) = text.split_once('/').unwrap_or((text, ""));
        let addr: std::net::IpAddr = addr.trim().parse().map_err(|_| {
            format!("{text:?} is not an address like 10.0.0.1 or a block like 10.0.0.0/8")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits =
            match bits {
                "" => max,
                b => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| {
                    format!("{text:?}: the prefix length must be from 0 to {max}")
                })?,
            };
        Ok(Cidr { addr, bits })
    }

    /// Whether `ip` lies in the block (an IPv4 address in IPv6 form counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(ip, V4),
            v4 => v4,
        };
        let (net, ip, width) = match (self.addr, ip) {
            (V4(n), V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (V6(n), V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= width || (net >> shift) == (ip >> shift)
    }
}

/// `[server] watchdog_url` and `watchdog_every`.
#[derive(Clone)]
pub struct Watchdog {
    /// The URL, after `${ENV}` expansion (it may hold a secret: log `redact_url` of it).
    pub url: String,
    /// Time between pings (default 1m).
    pub every: Duration,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Watchdog({} every {:?})",
            redact_url(&self.url),
            self.every
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSafety {
    max_runs_per_hour: Option<Spanned<i64>>,
    max_failed_in_row: Option<Spanned<i64>>,
    max_targets: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: Option<String>,
    db: Option<String>,
    poll_wait: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
    kill_grace: Option<Spanned<String>>,
    dispatch_timeout: Option<Spanned<String>>,
    max_body: Option<Spanned<i64>>,
    max_output: Option<Spanned<i64>>,
    http_threads: Option<Spanned<i64>>,
    agent_down_after: Option<Spanned<String>>,
    forget_agents_after: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    max_header: Option<Spanned<i64>>,
    request_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    watchdog_url: Option<Spanned<String>>,
    watchdog_every: Option<Spanned<String>>,
    allow_empty: Option<bool>,
    trusted_proxies: Option<Vec<Spanned<String>>>,
}

impl Validator<'_> {
    pub(super) fn safety(&self, raw: &RawSafety) -> Result<Safety> {
        let item = "[safety]";
        let d = Safety::default();
        let count = |v, default: u32, field| {
            self.count(v, default as i64, 1, 1_000_000, item, field)
                .map(|n| n as u32)
        };
        Ok(Safety {
            max_runs_per_hour: count(
                &raw.max_runs_per_hour,
                d.max_runs_per_hour,
                "max_runs_per_hour",
            )?,
            max_failed_in_row: count(
                &raw.max_failed_in_row,
                d.max_failed_in_row,
                "max_failed_in_row",
            )?,
            max_targets: count(&raw.max_targets, d.max_targets, "max_targets")?,
        })
    }

    pub(super) fn server(&self, raw: &RawServer) -> Result<Server> {
        let item = "[server]";
        let server = Server {
            listen: raw
                .listen
                .clone()
                .unwrap_or_else(|| "127.0.0.1:7878".into()),
            db: PathBuf::from(raw.db.clone().unwrap_or_else(|| "heal.db".into())),
            poll_wait: self.duration(&raw.poll_wait, Duration::from_secs(30), item, "poll_wait")?,
            lease: self.duration(&raw.lease, Duration::from_secs(30), item, "lease")?,
            kill_grace: self.duration(
                &raw.kill_grace,
                Duration::from_secs(10),
                item,
                "kill_grace",
            )?,
            dispatch_timeout: self.duration(
                &raw.dispatch_timeout,
                Duration::from_secs(600),
                item,
                "dispatch_timeout",
            )?,
            max_body: self.count(&raw.max_body, 1 << 20, 1024, 1 << 30, item, "max_body")? as usize,
            max_output: self.count(
                &raw.max_output,
                256 << 10,
                1024,
                64 << 20,
                item,
                "max_output",
            )? as usize,
            http_threads: self.count(&raw.http_threads, 32, 1, 1024, item, "http_threads")?
                as usize,
            agent_down_after: self.duration(
                &raw.agent_down_after,
                Duration::from_secs(120),
                item,
                "agent_down_after",
            )?,
            forget_agents_after: match &raw.forget_agents_after {
                None => None,
                some => Some(self.duration(some, Duration::ZERO, item, "forget_agents_after")?),
            },
            tls_cert: raw.tls_cert.as_ref().map(|p| PathBuf::from(p.get_ref())),
            tls_key: raw.tls_key.as_ref().map(|p| PathBuf::from(p.get_ref())),
            max_header: self.count(&raw.max_header, 16 << 10, 1024, 1 << 20, item, "max_header")?
                as usize,
            request_timeout: self.duration(
                &raw.request_timeout,
                Duration::from_secs(30),
                item,
                "request_timeout",
            )?,
            idle_timeout: self.duration(
                &raw.idle_timeout,
                Duration::from_secs(60),
                item,
                "idle_timeout",
            )?,
            max_connections: self.count(
                &raw.max_connections,
                4096,
                1,
                100_000,
                item,
                "max_connections",
            )? as usize,
            public_url: match &raw.public_url {
                None => None,
                Some(u) => Some(
                    check_url(u.get_ref())
                        .map(|()| u.get_ref().trim_end_matches('/').to_string())
                        .or_else(|e| {
                            self.err(
                                u.span(),
                                item,
                                format!(
                                    "public_url: {e} (got {:?})",
                                    redact_url_secrets(u.get_ref())
                                ),
                            )
                        })?,
                ),
            },
            watchdog: self.watchdog(raw, item)?,
            allow_empty: raw.allow_empty.unwrap_or(false),
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .flatten()
                .map(|p| {
                    Cidr::parse(p.get_ref())
                        .or_else(|e| self.err(p.span(), item, format!("trusted_proxies: {e}")))
                })
                .collect::<Result<_>>()?,
        };
        if server.tls_cert.is_some() != server.tls_key.is_some() {
            let span = raw
                .tls_cert
                .as_ref()
                .or(raw.tls_key.as_ref())
                .map_or(0..0, Spanned::span);
            return self.err(
                span,
                item,
                "give both tls_cert and tls_key (PEM files), or neither",
            );
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&server.request_timeout) {
            let span = raw.request_timeout.as_ref().map_or(0..0, Spanned::span);
            return self.err(span, item, "request_timeout: must be from 1s to 1h");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&server.idle_timeout) {
            let span = raw.idle_timeout.as_ref().map_or(0..0, Spanned::span);
            return self.err(span, item, "idle_timeout: must be from 1s to 1h");
        }
        if server.agent_down_after <= server.poll_wait {
            let span = raw
                .agent_down_after
                .as_ref()
                .or(raw.poll_wait.as_ref())
                .map_or(0..0, Spanned::span);
            return self.err(
                span,
                item,
                format!(
                    "agent_down_after: must be longer than poll_wait ({}), or idle agents look down",
                    crate::time::format_duration(server.poll_wait)
                ),
            );
        }
        if let Some(forget) = server
            .forget_agents_after
            .filter(|f| *f <= server.agent_down_after)
        {
            let span = raw.forget_agents_after.as_ref().map_or(0..0, Spanned::span);
            return self.err(
                span,
                item,
                format!(
                    "forget_agents_after: {} must be longer than agent_down_after ({}), or agents are forgotten before they are down",
                    crate::time::format_duration(forget),
                    crate::time::format_duration(server.agent_down_after)
                ),
            );
        }
        Ok(server)
    }

    pub(super) fn watchdog(&self, raw: &RawServer, item: &str) -> Result<Option<Watchdog>> {
        let every = self.duration(
            &raw.watchdog_every,
            Duration::from_secs(60),
            item,
            "watchdog_every",
        )?;
        match (&raw.watchdog_url, &raw.watchdog_every) {
            (None, None) => Ok(None),
            (None, Some(e)) => self.err(
                e.span(),
                item,
                "watchdog_every: set without watchdog_url (add the URL to ping, or remove it)",
            ),
            (Some(_), every_raw) if every < Duration::from_secs(1) => self.err(
                every_raw.as_ref().map_or(0..0, Spanned::span),
                item,
                "watchdog_every: must be at least 1s",
            ),
            (Some(_), _) => Ok(Some(Watchdog {
                url: self.url(&raw.watchdog_url, "", item, "watchdog_url")?,
                every,
            })),
        }
    }
}
