//! What heal watches by itself: `[[heartbeat]]`, `[[probe]]`, `[[schedule]]`
//! and `[retention]`. A heartbeat registered through the API goes through
//! the same `heartbeat` function as one in the file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::probe::{probe, Probe, RawProbe};
use super::{check_name, expand_env, Validator};
use crate::error::Result;
use crate::heartbeat;
use crate::schedule::Schedule;
use crate::time::parse_duration;

/// A `[[heartbeat]]`, or one registered with `PUT /api/v1/heartbeats/NAME`.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The `<name>` of `/ping/<name>`.
    pub name: String,
    /// Schedule, grace and longest run.
    pub spec: heartbeat::Spec,
    /// Raise `HeartbeatMissing` again this often while down (None: once).
    pub renotify: Option<Duration>,
    /// Owner, for routing.
    pub team: Option<String>,
    /// `p1`…`p5` reach pagers (PagerDuty's severity, Opsgenie's priority);
    /// another word (an older file's, an API heartbeat's) is shown as
    /// written and warned about by the file's checks.
    pub priority: Option<String>,
    /// The service it belongs to.
    pub service: Option<String>,
    /// Where people read what to do.
    pub runbook_url: Option<String>,
    /// Free-form tags, shown and matched by rules (`labels.tags`, comma-separated).
    pub tags: Vec<String>,
    /// Extra labels on its alerts.
    pub labels: BTreeMap<String, String>,
    /// SHA-256 of the secret that lets `/ping/<name>?key=...` ping without
    /// a token; the key itself is never kept (see `matches_ping_key`).
    pub ping_key: Option<[u8; 32]>,
    /// What it watches, for people.
    pub description: String,
    /// Its raw form as stored (JSON), with the ping key replaced by its
    /// SHA-256 (`ping_key_sha256`): the database never holds the key.
    pub def: String,
}

/// The raw form of a heartbeat: the TOML table and the API's JSON body.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renotify: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_key: Option<String>,
    /// The ping key given as its SHA-256 (hex), as `[[token]] secret_sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_key_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A priority as pagers know it: `p1` (highest) to `p5`, in any case, as
/// heal writes it (`p1`…`p5`); None for anything else.
pub fn priority_level(text: &str) -> Option<&'static str> {
    match text.trim().to_ascii_lowercase().as_str() {
        "p1" => Some("p1"),
        "p2" => Some("p2"),
        "p3" => Some("p3"),
        "p4" => Some("p4"),
        "p5" => Some("p5"),
        _ => None,
    }
}

/// A probe's or rule's `priority`: one of `p1`…`p5`.
pub(super) fn priority(text: Option<&str>) -> std::result::Result<Option<String>, String> {
    text.map(|t| {
        priority_level(t).map(str::to_string).ok_or_else(|| {
            format!("priority: {t:?} is not one of p1, p2, p3, p4, p5 (p1 pages the most)")
        })
    })
    .transpose()
}

/// Labels heal sets itself on internal alerts; a heartbeat or probe may not override them.
const RESERVED_LABELS: &[&str] = &[
    "alertname",
    "heartbeat",
    "probe",
    "agent",
    "team",
    "priority",
    "service",
    "tags",
];

/// Validates a raw heartbeat; the message names the field ("grace: bad duration ...").
pub fn heartbeat(raw: &RawHeartbeat) -> std::result::Result<Heartbeat, String> {
    check_name(&raw.name).map_err(|e| format!("name: {e}"))?;
    let schedule = Schedule::parse(raw.every.as_deref(), raw.cron.as_deref(), raw.tz.as_deref())?;
    let dur = |v: &Option<String>, field: &str| -> std::result::Result<Option<Duration>, String> {
        v.as_deref()
            .map(|s| parse_duration(s).map_err(|e| format!("{field}: {e}")))
            .transpose()
    };
    let grace = dur(&raw.grace, "grace")?.unwrap_or(Duration::from_secs(3600));
    let max_runtime = dur(&raw.max_runtime, "max_runtime")?;
    let renotify = dur(&raw.renotify, "renotify")?;
    if renotify.is_some_and(|d| d < Duration::from_secs(60)) {
        return Err("renotify: must be at least 1m".into());
    }
    check_labels(&raw.labels)?;
    let ping_key = match (&raw.ping_key, &raw.ping_key_sha256) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err("ping_key and ping_key_sha256: give one of them, not both".into())
        }
        (Some(k), None) => {
            let k = expand_env(k).map_err(|e| format!("ping_key: {e}"))?;
            if k.len() < 16 {
                return Err(
                    "ping_key: shorter than 16 characters (use e.g. `openssl rand -hex 16`)".into(),
                );
            }
            Some(super::token_hash(&k))
        }
        (None, Some(h)) => Some(super::parse_sha256(h).ok_or_else(|| {
            format!(
                "ping_key_sha256: not 64 hex digits (got {} characters)",
                h.len()
            )
        })?),
    };
    // What the store keeps: the key's hash, never the key.
    let stored = RawHeartbeat {
        ping_key: None,
        ping_key_sha256: ping_key.map(|h| super::hex(&h)),
        ..raw.clone()
    };
    Ok(Heartbeat {
        name: raw.name.clone(),
        spec: heartbeat::Spec {
            schedule,
            grace,
            max_runtime,
        },
        renotify,
        team: raw.team.clone(),
        priority: raw.priority.clone(),
        service: raw.service.clone(),
        runbook_url: raw.runbook_url.clone(),
        tags: raw.tags.clone(),
        labels: raw.labels.clone(),
        ping_key,
        description: raw.description.clone(),
        def: serde_json::to_string(&stored).expect("a raw heartbeat always serializes"),
    })
}

impl Heartbeat {
    /// Whether `presented` is this heartbeat's ping key: its SHA-256
    /// compared with the stored one in constant time.
    pub fn matches_ping_key(&self, presented: &str) -> bool {
        self.ping_key
            .is_some_and(|hash| super::hash_matches(presented, &hash))
    }
}

/// A heartbeat from its stored form (`Heartbeat::def`).
pub fn heartbeat_from_def(def: &str) -> std::result::Result<Heartbeat, String> {
    let raw: RawHeartbeat = serde_json::from_str(def).map_err(|e| e.to_string())?;
    heartbeat(&raw)
}

/// The fields of one `[[heartbeat]]` or `[[probe]]` written as TOML without
/// its header, as the JSON the API takes (`heal probes put --file`, the
/// dashboard's forms).
pub fn toml_fields(text: &str) -> std::result::Result<serde_json::Value, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    serde_json::to_value(table).map_err(|e| e.to_string())
}

/// A definition's JSON fields written back as TOML, `name` left out (the
/// dashboard's edit form); `None` if it is not an object TOML can hold.
pub fn fields_toml(def: &serde_json::Value) -> Option<String> {
    let mut fields = def.as_object()?.clone();
    fields.remove("name");
    toml::to_string(&fields).ok()
}

pub(super) fn check_labels(labels: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    for name in labels.keys() {
        if RESERVED_LABELS.contains(&name.as_str()) {
            return Err(format!("labels: {name:?} is set by heal itself"));
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "labels: name {name:?} must be letters, digits and _"
            ));
        }
    }
    Ok(())
}

/// A `[[schedule]]`: a runbook run on a schedule, decided like an alert by
/// the rule heal builds for it (`Config::rules`, `Rule::schedule`).
#[derive(Debug)]
pub struct Scheduled {
    /// Its name; the rule is `schedule.<name>`.
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// Index of its rule in `Config::rules`.
    pub rule_idx: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) name: String,
    every: Option<String>,
    cron: Option<String>,
    tz: Option<String>,
    runbook: Spanned<String>,
    target: Spanned<RawScheduleTarget>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    mode: Option<Spanned<String>>,
    #[serde(default)]
    approve: bool,
    unless: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawScheduleTarget {
    One(String),
    List(Vec<String>),
    Tags { tags: Vec<String> },
}

/// `[retention]`: how long finished things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Heartbeat pings.
    pub pings: Duration,
    /// Probe results.
    pub probe_results: Duration,
    /// Finished events with their timeline, ops and output.
    pub events: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pings: Option<Spanned<String>>,
    probe_results: Option<Spanned<String>>,
    events: Option<Spanned<String>>,
}

/// A JMESPath raw string literal for a fixed value.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Validator<'_> {
    pub(super) fn heartbeats(
        &self,
        raw: &[Spanned<RawHeartbeat>],
    ) -> Result<BTreeMap<String, Heartbeat>> {
        let mut out = BTreeMap::new();
        for h in raw {
            let item = format!("heartbeat {:?}", h.get_ref().name);
            let hb = heartbeat(h.get_ref()).or_else(|e| self.err(h.span(), &item, e))?;
            if let Some(p) = hb
                .priority
                .as_deref()
                .filter(|p| priority_level(p).is_none())
            {
                self.warn(
                    h.span(),
                    &item,
                    &format!("priority {p:?} is not one of p1, p2, p3, p4, p5: it is shown, but reaches no pager's priority"),
                );
            }
            if out.insert(hb.name.clone(), hb).is_some() {
                return self.err(h.span(), &item, "duplicate heartbeat name");
            }
        }
        Ok(out)
    }

    pub(super) fn probes(
        &self,
        raw: &[Spanned<RawProbe>],
        channels: &BTreeMap<String, super::Channel>,
    ) -> Result<BTreeMap<String, Probe>> {
        let mut out = BTreeMap::new();
        for p in raw {
            let item = format!("probe {:?}", p.get_ref().name);
            let probe = probe(p.get_ref()).or_else(|e| self.err(p.span(), &item, e))?;
            for c in &probe.notify {
                super::check_channel(c, channels)
                    .or_else(|e| self.err(p.span(), &item, format!("notify: {e}")))?;
            }
            if out.insert(probe.name.clone(), probe).is_some() {
                return self.err(p.span(), &item, "duplicate probe name");
            }
        }
        Ok(out)
    }

    /// The rule a schedule is decided by, built from the same raw form as `[[rule]]`.
    pub(super) fn schedule_rule(&self, s: &Spanned<RawSchedule>) -> Result<super::rules::RawRule> {
        let raw = s.get_ref();
        let item = format!("schedule {:?}", raw.name);
        check_name(&raw.name).or_else(|e| self.err(s.span(), &item, format!("name: {e}")))?;
        let target = match raw.target.get_ref() {
            RawScheduleTarget::One(id) => super::rules::RawTarget::Expr(literal(id)),
            RawScheduleTarget::List(ids) if !ids.is_empty() => {
                super::rules::RawTarget::Expr(format!(
                    "[{}]",
                    ids.iter()
                        .map(|i| literal(i))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
            RawScheduleTarget::List(_) => {
                return self.err(raw.target.span(), &item, "target: empty list")
            }
            RawScheduleTarget::Tags { tags } => {
                super::rules::RawTarget::Tags { tags: tags.clone() }
            }
        };
        let params = raw
            .params
            .iter()
            .map(|(k, v)| (k.clone(), Spanned::new(s.span(), literal(v))))
            .collect();
        Ok(super::rules::RawRule {
            name: format!("schedule.{}", raw.name),
            when: None,
            runbook: Some(raw.runbook.clone()),
            action: None,
            target: Some(Spanned::new(raw.target.span(), target)),
            params,
            key: None,
            unless: raw.unless.clone(),
            cooldown: None,
            max_attempts: None,
            within: None,
            approve: raw.approve,
            approve_timeout: None,
            max_targets: None,
            mode: raw.mode.clone(),
            cont: false,
            priority: None,
        })
    }

    pub(super) fn schedule(&self, s: &Spanned<RawSchedule>, rule_idx: usize) -> Result<Scheduled> {
        let raw = s.get_ref();
        let item = format!("schedule {:?}", raw.name);
        let schedule =
            Schedule::parse(raw.every.as_deref(), raw.cron.as_deref(), raw.tz.as_deref())
                .or_else(|e| self.err(s.span(), &item, e))?;
        Ok(Scheduled {
            name: raw.name.clone(),
            schedule,
            rule_idx,
        })
    }

    pub(super) fn retention(&self, raw: &RawRetention) -> Result<Retention> {
        let keep = |v: &Option<Spanned<String>>, field: &str| -> Result<Duration> {
            let d = self.duration(v, Duration::from_secs(30 * 86_400), "[retention]", field)?;
            match v {
                Some(s) if d < Duration::from_secs(3600) => self.err(
                    s.span(),
                    "[retention]",
                    format!("{field}: must be at least 1h"),
                ),
                _ => Ok(d),
            }
        };
        Ok(Retention {
            pings: keep(&raw.pings, "pings")?,
            probe_results: keep(&raw.probe_results, "probe_results")?,
            events: keep(&raw.events, "events")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(key: Option<&str>, sha: Option<&str>) -> RawHeartbeat {
        RawHeartbeat {
            name: "nightly".into(),
            every: Some("1d".into()),
            ping_key: key.map(str::to_string),
            ping_key_sha256: sha.map(str::to_string),
            ..RawHeartbeat::default()
        }
    }

    #[test]
    fn fields_go_to_toml_and_back_unchanged() {
        let def = serde_json::json!({
            "name": "nightly", "every": "1h", "labels": { "env": "prod" },
            "tags": ["db"], "ping_key_sha256": "ab",
        });
        let text = fields_toml(&def).unwrap();
        assert!(!text.contains("nightly"), "{text}");
        let mut back = toml_fields(&text).unwrap();
        back["name"] = def["name"].clone();
        assert_eq!(back, def);
    }

    #[test]
    fn a_ping_key_is_kept_as_its_hash_and_matched_by_it() {
        let key = "key-0123456789abcdef";
        let hb = heartbeat(&raw(Some(key), None)).unwrap();
        assert!(!hb.def.contains(key), "{}", hb.def);
        assert!(hb.matches_ping_key(key));
        assert!(!hb.matches_ping_key("key-0123456789abcdeX"));
        // The stored form parses back to the same key.
        let again = heartbeat_from_def(&hb.def).unwrap();
        assert!(again.matches_ping_key(key));
        assert_eq!(again.def, hb.def);
        let by_hash = heartbeat(&raw(
            None,
            Some(&super::super::hex(&super::super::token_hash(key))),
        ))
        .unwrap();
        assert!(by_hash.matches_ping_key(key));
    }

    #[test]
    fn ping_key_forms_are_checked() {
        let both = heartbeat(&raw(Some("key-0123456789abcdef"), Some(&"a".repeat(64))));
        assert!(both.unwrap_err().contains("not both"));
        assert!(heartbeat(&raw(None, Some("abc")))
            .unwrap_err()
            .contains("64 hex digits"));
        assert!(!heartbeat(&raw(None, None)).unwrap().matches_ping_key(""));
    }
}
