//! Where notifications go: `[channel.NAME]` and `[[notify]]` routes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::rules::{run_of, RawRun};
use super::{check_name, expand_env, redact_url, Expr, Validator};
use crate::error::Result;
use crate::exec::Run;
use crate::kinds::{kind_named, KINDS};

/// A `[channel.NAME]`: one place notifications are delivered to.
#[derive(Debug)]
pub struct Channel {
    /// The name routes use.
    pub name: String,
    /// How it is reached.
    pub kind: ChannelKind,
    /// Longest one delivery may take.
    pub timeout: Duration,
    /// At most `count` messages per `per`; what waits beyond it goes out as one digest.
    pub rate_limit: Option<RateLimit>,
    /// A delivery still failing this long after it was queued is given up.
    pub give_up_after: Duration,
    /// Longest wait between two tries of a failing delivery.
    pub max_backoff: Duration,
}

/// A rate limit: `count` messages per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages allowed in a window.
    pub count: u32,
    /// The window.
    pub per: Duration,
}

/// What a command channel writes on the command's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// The webhook JSON document.
    Json,
    /// The plain-text message (for mail).
    Text,
}

/// How an email channel reaches its SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://` with STARTTLS required before anything else.
    StartTls,
    /// `smtp://` with `starttls = false`: clear text (loopback, or `insecure = true`).
    Plain,
}

/// An `email = { ... }` channel.
#[derive(Clone)]
pub struct Email {
    /// The SMTP server's host.
    pub host: String,
    /// Its port (587 for `smtp://`, 465 for `smtps://` when not given).
    pub port: u16,
    /// How the connection is protected.
    pub tls: SmtpTls,
    /// AUTH user and password (`${ENV}` expanded; the password is a secret).
    pub credentials: Option<(String, String)>,
    /// The `From:` mailbox.
    pub from: lettre::message::Mailbox,
    /// `To:` mailboxes, at least one.
    pub to: Vec<lettre::message::Mailbox>,
    /// `Cc:` mailboxes.
    pub cc: Vec<lettre::message::Mailbox>,
    /// A private CA's PEM file the server's certificate is checked against
    /// (besides the webpki roots); read at each delivery.
    pub ca_file: Option<std::path::PathBuf>,
}

/// How a channel is reached. Secrets are expanded; `Debug` never shows them.
pub enum ChannelKind {
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL (a secret).
        url: String,
    },
    /// PagerDuty Events API v2.
    PagerDuty {
        /// The enqueue endpoint.
        url: String,
        /// The integration's routing key (a secret).
        routing_key: String,
    },
    /// Opsgenie Alert API.
    Opsgenie {
        /// The API base (`https://api.opsgenie.com`, or the EU one).
        url: String,
        /// The API integration key (a secret).
        api_key: String,
    },
    /// Any HTTP endpoint taking heal's JSON.
    Webhook {
        /// Where to POST (may hold a secret).
        url: String,
        /// Signs each body with HMAC-SHA256 (`X-Heal-Signature`) when set.
        secret: Option<String>,
        /// Extra headers (values may hold secrets).
        headers: Vec<(String, String)>,
    },
    /// Mail through an SMTP server.
    Email(Email),
    /// A command run with the notification on stdin.
    Command {
        /// The command.
        run: Run,
        /// JSON or text on stdin.
        stdin: Stdin,
    },
}

impl std::fmt::Debug for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (secrets redacted)", self.describe())
    }
}

impl ChannelKind {
    /// `slack`, `pagerduty`, `opsgenie`, `webhook` or `command`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::PagerDuty { .. } => "pagerduty",
            ChannelKind::Opsgenie { .. } => "opsgenie",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Email(_) => "email",
            ChannelKind::Command { .. } => "command",
        }
    }

    /// Type and destination with no secret: the scheme and host of a URL, the command.
    pub fn describe(&self) -> String {
        match self {
            ChannelKind::Slack { url }
            | ChannelKind::PagerDuty { url, .. }
            | ChannelKind::Opsgenie { url, .. }
            | ChannelKind::Webhook { url, .. } => {
                format!("{} {}", self.type_name(), redact_url(url))
            }
            ChannelKind::Email(e) => {
                let scheme = match e.tls {
                    SmtpTls::Implicit => "smtps",
                    _ => "smtp",
                };
                format!("email {scheme}://{}:{}", e.host, e.port)
            }
            ChannelKind::Command { run, .. } => format!("command {run}"),
        }
    }

    /// Values that must never appear in a log line, a stored error or an answer.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out = match self {
            ChannelKind::Slack { url } => vec![url.as_str()],
            ChannelKind::PagerDuty { routing_key, .. } => vec![routing_key.as_str()],
            ChannelKind::Opsgenie { api_key, .. } => vec![api_key.as_str()],
            ChannelKind::Webhook {
                url,
                secret,
                headers,
            } => {
                let mut v = vec![url.as_str()];
                v.extend(secret.as_deref());
                v.extend(headers.iter().map(|(_, v)| v.as_str()));
                v
            }
            ChannelKind::Email(e) => e.credentials.iter().map(|(_, p)| p.as_str()).collect(),
            ChannelKind::Command { .. } => Vec::new(),
        };
        out.retain(|s| s.len() >= 4);
        out
    }

    /// Whether each notification opens or closes an incident of its own
    /// (PagerDuty, Opsgenie): never merged into a digest, and a resolve
    /// follows its trigger whatever the routes say.
    pub fn is_incident(&self) -> bool {
        matches!(
            self,
            ChannelKind::PagerDuty { .. } | ChannelKind::Opsgenie { .. }
        )
    }
}

/// A `[[notify]]` route.
#[derive(Debug)]
pub struct Route {
    /// Line of the `[[notify]]` in the file.
    pub line: usize,
    /// Filter over the notification (default: every notification).
    pub when: Option<Expr>,
    /// Channels that get what matches.
    pub channels: Vec<String>,
    /// Whether later routes are tried after this one matched.
    pub continue_: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    slack: Option<RawSlack>,
    pagerduty: Option<RawPagerDuty>,
    opsgenie: Option<RawOpsgenie>,
    webhook: Option<RawWebhook>,
    email: Option<RawEmail>,
    command: Option<RawCommand>,
    timeout: Option<Spanned<String>>,
    rate_limit: Option<Spanned<String>>,
    give_up_after: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    webhook_url: Option<Spanned<String>>,
    webhook_url_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPagerDuty {
    routing_key: Option<Spanned<String>>,
    routing_key_file: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpsgenie {
    api_key: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<Spanned<String>>,
    url_file: Option<Spanned<String>>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    smtp: Option<Spanned<String>>,
    starttls: Option<Spanned<bool>>,
    #[serde(default)]
    insecure: bool,
    username: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    cc: Vec<String>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    run: Spanned<RawRun>,
    stdin: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    when: Option<Spanned<String>>,
    channels: Vec<Spanned<String>>,
    #[serde(default, rename = "continue")]
    continue_: bool,
}

const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
const OPSGENIE_URL: &str = "https://api.opsgenie.com";

impl Validator<'_> {
    pub(super) fn channels(
        &self,
        raw: &BTreeMap<String, Spanned<RawChannel>>,
    ) -> Result<BTreeMap<String, Channel>> {
        let mut out = BTreeMap::new();
        for (name, c) in raw {
            out.insert(name.clone(), self.channel(name, c)?);
        }
        Ok(out)
    }

    fn channel(&self, name: &str, c: &Spanned<RawChannel>) -> Result<Channel> {
        let item = format!("channel {name:?}");
        let item = item.as_str();
        check_name(name).or_else(|e| self.err(c.span(), item, format!("name: {e}")))?;
        let raw = c.get_ref();
        let given = [
            raw.slack.is_some(),
            raw.pagerduty.is_some(),
            raw.opsgenie.is_some(),
            raw.webhook.is_some(),
            raw.email.is_some(),
            raw.command.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            return self.err(
                c.span(),
                item,
                "give exactly one of slack, pagerduty, opsgenie, webhook, email or command",
            );
        }
        let span = c.span();
        let kind = if let Some(s) = &raw.slack {
            ChannelKind::Slack {
                url: self.url_secret(
                    &s.webhook_url,
                    &s.webhook_url_file,
                    &span,
                    item,
                    "slack.webhook_url",
                )?,
            }
        } else if let Some(p) = &raw.pagerduty {
            ChannelKind::PagerDuty {
                url: self.url(&p.url, PAGERDUTY_URL, item, "pagerduty.url")?,
                routing_key: self.secret(
                    &p.routing_key,
                    &p.routing_key_file,
                    &span,
                    item,
                    "pagerduty.routing_key",
                )?,
            }
        } else if let Some(o) = &raw.opsgenie {
            ChannelKind::Opsgenie {
                url: self.url(&o.url, OPSGENIE_URL, item, "opsgenie.url")?,
                api_key: self.secret(
                    &o.api_key,
                    &o.api_key_file,
                    &span,
                    item,
                    "opsgenie.api_key",
                )?,
            }
        } else if let Some(w) = &raw.webhook {
            let secret = match (&w.secret, &w.secret_file) {
                (None, None) => None,
                _ => Some(self.secret(&w.secret, &w.secret_file, &span, item, "webhook.secret")?),
            };
            let mut headers = Vec::new();
            for (k, v) in &w.headers {
                if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return self.err(
                        span.clone(),
                        item,
                        format!("webhook.headers: {k:?} is not a header name"),
                    );
                }
                let v = expand_env(v).or_else(|e| {
                    self.err(span.clone(), item, format!("webhook.headers.{k}: {e}"))
                })?;
                headers.push((k.clone(), v));
            }
            ChannelKind::Webhook {
                url: self.url_secret(&w.url, &w.url_file, &span, item, "webhook.url")?,
                secret,
                headers,
            }
        } else if let Some(e) = &raw.email {
            ChannelKind::Email(self.email(e, &span, item)?)
        } else if let Some(cmd) = &raw.command {
            let run = run_of(cmd.run.get_ref()).map_or_else(
                || self.err(cmd.run.span(), item, "command.run: empty command"),
                Ok,
            )?;
            let stdin = match cmd.stdin.as_ref().map(|s| s.get_ref().as_str()) {
                None | Some("json") => Stdin::Json,
                Some("text") => Stdin::Text,
                Some(other) => {
                    let s = cmd.stdin.as_ref().map_or(span.clone(), Spanned::span);
                    return self.err(
                        s,
                        item,
                        format!("command.stdin: \"json\" or \"text\" (got {other:?})"),
                    );
                }
            };
            ChannelKind::Command { run, stdin }
        } else {
            unreachable!("exactly one kind was checked above")
        };
        let rate_limit = match &raw.rate_limit {
            None if kind.is_incident() => None,
            None => Some(RateLimit {
                count: 20,
                per: Duration::from_secs(60),
            }),
            Some(s) if kind.is_incident() => {
                return self.err(s.span(), item, format!("rate_limit: a {} channel opens one incident per notification and is never digested; remove rate_limit", kind.type_name()));
            }
            Some(s) => parse_rate(s.get_ref())
                .or_else(|e| self.err(s.span(), item, format!("rate_limit: {e}")))?,
        };
        let timeout = self.duration(&raw.timeout, Duration::from_secs(10), item, "timeout")?;
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            let s = raw.timeout.as_ref().map_or(span.clone(), Spanned::span);
            return self.err(s, item, "timeout: must be from 1ms to 5m");
        }
        let max_backoff = self.duration(
            &raw.max_backoff,
            Duration::from_secs(300),
            item,
            "max_backoff",
        )?;
        if max_backoff < Duration::from_secs(1) {
            let s = raw.max_backoff.as_ref().map_or(span.clone(), Spanned::span);
            return self.err(s, item, "max_backoff: must be at least 1s");
        }
        Ok(Channel {
            name: name.to_string(),
            kind,
            timeout,
            rate_limit,
            give_up_after: self.duration(
                &raw.give_up_after,
                Duration::from_secs(24 * 3600),
                item,
                "give_up_after",
            )?,
            max_backoff,
        })
    }

    fn email(&self, e: &RawEmail, span: &std::ops::Range<usize>, item: &str) -> Result<Email> {
        let at = |v: Option<std::ops::Range<usize>>| v.unwrap_or_else(|| span.clone());
        let smtp = e.smtp.as_ref().map_or_else(
            || {
                self.err(
                    span.clone(),
                    item,
                    "email.smtp: missing (\"smtp://host:587\" or \"smtps://host:465\")",
                )
            },
            Ok,
        )?;
        let (implicit, host, port) = parse_smtp_url(smtp.get_ref()).or_else(|m| {
            self.err(
                smtp.span(),
                item,
                format!("email.smtp: {m} (got {:?})", smtp.get_ref()),
            )
        })?;
        let starttls = e.starttls.as_ref().map(|s| *s.get_ref());
        let tls = match (implicit, starttls) {
            (true, Some(_)) => {
                let s = at(e.starttls.as_ref().map(Spanned::span));
                return self.err(s, item, "email.starttls: smtps:// is TLS from the start; remove starttls (or use smtp:// with starttls)");
            }
            (true, None) => SmtpTls::Implicit,
            (false, None | Some(true)) => SmtpTls::StartTls,
            (false, Some(false)) => SmtpTls::Plain,
        };
        let username = match &e.username {
            None => None,
            Some(u) => {
                let name = expand_env(u.get_ref())
                    .or_else(|m| self.err(u.span(), item, format!("email.username: {m}")))?;
                if name.is_empty() {
                    return self.err(u.span(), item, "email.username: empty");
                }
                Some(name)
            }
        };
        let has_password = e.password.is_some() || e.password_file.is_some();
        let credentials = match (username, has_password) {
            (None, false) => None,
            (None, true) => {
                let s = at(e
                    .password
                    .as_ref()
                    .or(e.password_file.as_ref())
                    .map(Spanned::span));
                return self.err(s, item, "email.password: given without email.username; give both, or neither for a server that needs no AUTH");
            }
            (Some(_), false) => {
                let s = at(e.username.as_ref().map(Spanned::span));
                return self.err(
                    s,
                    item,
                    "email.username: given without email.password (or email.password_file)",
                );
            }
            (Some(user), true) => Some((
                user,
                self.secret(&e.password, &e.password_file, span, item, "email.password")?,
            )),
        };
        if tls == SmtpTls::Plain
            && credentials.is_some()
            && !crate::host::is_loopback(&host)
            && !e.insecure
        {
            let s = at(e.starttls.as_ref().map(Spanned::span));
            return self.err(s, item, format!("email.starttls: false would send the password in clear to {host}; keep starttls = true, use smtps://, or set insecure = true if the network path is trusted"));
        }
        let mailbox = |text: &str, field: &str, s: std::ops::Range<usize>| {
            text.parse::<lettre::message::Mailbox>().or_else(|m| {
                self.err(s, item, format!("{field}: {text:?} is not a mail address like \"heal <heal@example.com>\" ({m})"))
            })
        };
        let from = e.from.as_ref().map_or_else(
            || {
                self.err(
                    span.clone(),
                    item,
                    "email.from: missing (like \"heal <heal@example.com>\")",
                )
            },
            |f| mailbox(f.get_ref(), "email.from", f.span()),
        )?;
        let to_raw = e.to.as_ref().filter(|t| !t.get_ref().is_empty());
        let Some(to_raw) = to_raw else {
            let s = at(e.to.as_ref().map(Spanned::span));
            return self.err(
                s,
                item,
                "email.to: missing or empty (a list like [\"ops@example.com\"])",
            );
        };
        let to = to_raw
            .get_ref()
            .iter()
            .map(|t| mailbox(t, "email.to", to_raw.span()))
            .collect::<Result<Vec<_>>>()?;
        let cc =
            e.cc.iter()
                .map(|t| mailbox(t, "email.cc", span.clone()))
                .collect::<Result<Vec<_>>>()?;
        let ca_file = match &e.ca_file {
            None => None,
            Some(f) => {
                let path = std::path::PathBuf::from(f.get_ref());
                crate::trust::load_ca_file(&path)
                    .or_else(|m| self.err(f.span(), item, format!("email.ca_file: {m}")))?;
                Some(path)
            }
        };
        Ok(Email {
            host,
            port,
            tls,
            credentials,
            from,
            to,
            cc,
            ca_file,
        })
    }

    /// A secret given inline (`${ENV}` expanded) or as a file (trimmed).
    pub(super) fn secret(
        &self,
        value: &Option<Spanned<String>>,
        file: &Option<Spanned<String>>,
        span: &std::ops::Range<usize>,
        item: &str,
        field: &str,
    ) -> Result<String> {
        let secret = match (value, file) {
            (Some(s), None) => expand_env(s.get_ref())
                .or_else(|e| self.err(s.span(), item, format!("{field}: {e}")))?,
            (None, Some(f)) => std::fs::read_to_string(f.get_ref())
                .map(|s| s.trim().to_string())
                .or_else(|e| {
                    self.err(
                        f.span(),
                        item,
                        format!("{field}_file: cannot read {:?}: {e}", f.get_ref()),
                    )
                })?,
            _ => {
                return self.err(
                    span.clone(),
                    item,
                    format!("give exactly one of {field} or {field}_file"),
                )
            }
        };
        if secret.is_empty() {
            let s = value
                .as_ref()
                .or(file.as_ref())
                .map_or(span.clone(), Spanned::span);
            return self.err(s, item, format!("{field}: empty"));
        }
        Ok(secret)
    }

    fn url_secret(
        &self,
        value: &Option<Spanned<String>>,
        file: &Option<Spanned<String>>,
        span: &std::ops::Range<usize>,
        item: &str,
        field: &str,
    ) -> Result<String> {
        let url = self.secret(value, file, span, item, field)?;
        check_url(&url).or_else(|e| {
            let s = value
                .as_ref()
                .or(file.as_ref())
                .map_or(span.clone(), Spanned::span);
            // The URL may be a secret: name the problem, not the value.
            self.err(s, item, format!("{field}: {e}"))
        })?;
        Ok(url)
    }

    /// An `http(s)://` URL field with `${ENV}` expanded (`default` when absent).
    pub(super) fn url(
        &self,
        value: &Option<Spanned<String>>,
        default: &str,
        item: &str,
        field: &str,
    ) -> Result<String> {
        match value {
            None => Ok(default.to_string()),
            Some(v) => {
                let url = expand_env(v.get_ref())
                    .or_else(|e| self.err(v.span(), item, format!("{field}: {e}")))?;
                check_url(&url)
                    .or_else(|e| self.err(v.span(), item, format!("{field}: {e} (got {url:?})")))?;
                Ok(url.trim_end_matches('/').to_string())
            }
        }
    }

    pub(super) fn routes(
        &self,
        raw: &[Spanned<RawRoute>],
        channels: &BTreeMap<String, Channel>,
    ) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for r in raw {
            let line = self.line(r.span().start);
            let item = format!("notify route at line {line}");
            let raw = r.get_ref();
            let when = self.opt_expr(&raw.when, &item, "when")?;
            if let Some(w) = &raw.when {
                check_kinds(w.get_ref())
                    .or_else(|e| self.err(w.span(), &item, format!("when: {e}")))?;
            }
            if raw.channels.is_empty() {
                return self.err(
                    r.span(),
                    &item,
                    "channels: empty (name at least one [channel.NAME])",
                );
            }
            let mut names = Vec::new();
            for c in &raw.channels {
                if let Err(e) = check_channel(c.get_ref(), channels) {
                    return self.err(c.span(), &item, format!("channels: {e}"));
                }
                if !names.contains(c.get_ref()) {
                    names.push(c.get_ref().clone());
                }
            }
            out.push(Route {
                line,
                when,
                channels: names,
                continue_: raw.continue_,
            });
        }
        Ok(out)
    }
}

/// Whether `name` is a `[channel.NAME]`; the error lists the channels there are.
pub fn check_channel(
    name: &str,
    channels: &BTreeMap<String, Channel>,
) -> std::result::Result<(), String> {
    if channels.contains_key(name) {
        return Ok(());
    }
    let known: Vec<&str> = channels.keys().map(String::as_str).collect();
    Err(format!(
        "no [channel.{name}] (channels: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// `http://` or `https://` with a host.
pub(super) fn check_url(url: &str) -> std::result::Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .is_empty()
    {
        return Err("has no host".into());
    }
    if url.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    Ok(())
}

/// `smtp://host[:port]` or `smtps://host[:port]` → (implicit TLS, host, port).
fn parse_smtp_url(url: &str) -> std::result::Result<(bool, String, u16), String> {
    let (implicit, rest) = if let Some(r) = url.strip_prefix("smtps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("smtp://") {
        (false, r)
    } else {
        return Err(
            "must start with smtp:// (STARTTLS, port 587) or smtps:// (TLS, port 465)".into(),
        );
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err("holds a user; give email.username and email.password instead".into());
    }
    if rest.is_empty() || rest.contains(['/', '?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err("must be just a scheme, a host and an optional port".into());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (rest, None),
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let port = match port {
        None => {
            if implicit {
                465
            } else {
                587
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{p:?} is not a port"))?,
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((implicit, host.to_string(), port))
}

/// `20/1m` → 20 per minute; `off` → none.
fn parse_rate(text: &str) -> std::result::Result<Option<RateLimit>, String> {
    if text == "off" {
        return Ok(None);
    }
    let (count, per) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not COUNT/DURATION like \"20/1m\", or \"off\""))?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|&c| c >= 1)
        .ok_or_else(|| format!("{count:?} is not a count of at least 1"))?;
    let per = crate::time::parse_duration(per.trim())?;
    if per < Duration::from_secs(1) {
        return Err("the window must be at least 1s".into());
    }
    Ok(Some(RateLimit { count, per }))
}

/// A quoted `'event.fail'` in a route's filter that looks like a kind but is
/// none: a typo that would silently never match.
fn check_kinds(expr: &str) -> std::result::Result<(), String> {
    let subjects: Vec<&str> = KINDS
        .iter()
        .filter_map(|k| k.name.split_once('.').map(|(s, _)| s))
        .collect();
    for literal in expr.split('\'').skip(1).step_by(2) {
        let Some((subject, _)) = literal.split_once('.') else {
            continue;
        };
        if subjects.contains(&subject) && kind_named(literal).is_none() {
            let known: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
            return Err(format!(
                "unknown kind '{literal}' (kinds: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("20/1m").unwrap(),
            Some(RateLimit {
                count: 20,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(parse_rate("off").unwrap(), None);
        assert!(parse_rate("0/1m").is_err());
        assert!(parse_rate("20").is_err());
        assert!(parse_rate("5/10ms").is_err());
    }

    #[test]
    fn smtp_urls() {
        assert_eq!(
            parse_smtp_url("smtp://mail.example.com").unwrap(),
            (false, "mail.example.com".into(), 587)
        );
        assert_eq!(
            parse_smtp_url("smtps://mail.example.com").unwrap(),
            (true, "mail.example.com".into(), 465)
        );
        assert_eq!(
            parse_smtp_url("smtp://127.0.0.1:2525/").unwrap(),
            (false, "127.0.0.1".into(), 2525)
        );
        assert_eq!(
            parse_smtp_url("smtp://[::1]:25").unwrap(),
            (false, "::1".into(), 25)
        );
        for bad in [
            "http://h",
            "smtp://",
            "smtp://u:p@h",
            "smtp://h:x",
            "smtp://h:0",
            "smtp://h/path",
            "smtp://h :25",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kind_typos_are_caught() {
        assert!(check_kinds("kind == 'event.failed'").is_ok());
        assert!(check_kinds("contains(['event.failed', 'safety.tripped'], kind)").is_ok());
        assert!(check_kinds("labels.team == 'web.ops'").is_ok());
        let e = check_kinds("kind == 'event.fail'").unwrap_err();
        assert!(e.contains("unknown kind 'event.fail'"), "{e}");
    }
}
