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
            raw.command.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            return self.err(
                c.span(),
                item,
                "give exactly one of slack, pagerduty, opsgenie, webhook or command",
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
    fn kind_typos_are_caught() {
        assert!(check_kinds("kind == 'event.failed'").is_ok());
        assert!(check_kinds("contains(['event.failed', 'safety.tripped'], kind)").is_ok());
        assert!(check_kinds("labels.team == 'web.ops'").is_ok());
        let e = check_kinds("kind == 'event.fail'").unwrap_err();
        assert!(e.contains("unknown kind 'event.fail'"), "{e}");
    }
}
