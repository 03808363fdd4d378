//! Alertmanager payloads, `[[source]]`-mapped webhooks and heal's own format
//! → `Alert`. Pure: no I/O. Validation happens here, before anything is
//! stored, so a request with one bad alert is refused whole.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::Source;
use crate::time::{format_rfc3339, parse_rfc3339};

/// Most labels or annotations one alert may carry.
const MAX_LABELS: usize = 256;
/// Longest label name.
const MAX_LABEL_NAME: usize = 1024;

/// Whether an alert is firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The problem is present.
    Firing,
    /// The problem is gone.
    Resolved,
}

impl Status {
    /// "firing" or "resolved".
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }

    fn parse(text: &str) -> Option<Status> {
        match text.to_ascii_lowercase().as_str() {
            "firing" => Some(Status::Firing),
            "resolved" => Some(Status::Resolved),
            _ => None,
        }
    }
}

/// One normalized alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The source's fingerprint, or a hash of the sorted labels.
    pub fingerprint: String,
    /// `labels.alertname`.
    pub name: String,
    /// Firing or resolved.
    pub status: Status,
    /// Labels, sorted.
    pub labels: BTreeMap<String, String>,
    /// Annotations, sorted.
    pub annotations: BTreeMap<String, String>,
    /// When the occurrence started (UTC ms), if the source said.
    pub starts_at: Option<i64>,
    /// When it ended (UTC ms), for resolved alerts.
    pub ends_at: Option<i64>,
    /// "alertmanager", "heal", or a `[[source]]` name.
    pub source: String,
}

impl Alert {
    /// An alert as the store returns it (`store::get_alert`).
    pub fn from_stored(v: &Value) -> Option<Alert> {
        let map = |k: &str| -> BTreeMap<String, String> {
            v.get(k)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        };
        Some(Alert {
            fingerprint: v.get("fingerprint")?.as_str()?.to_string(),
            name: v.get("name")?.as_str()?.to_string(),
            status: Status::parse(v.get("status")?.as_str()?)?,
            labels: map("labels"),
            annotations: map("annotations"),
            starts_at: v.get("starts_at").and_then(Value::as_i64),
            ends_at: v.get("ends_at").and_then(Value::as_i64),
            source: v.get("source")?.as_str()?.to_string(),
        })
    }

    /// The document rules see: labels, annotations, status, name, source, starts_at, fingerprint.
    pub fn doc(&self) -> Value {
        json!({
            "labels": self.labels,
            "annotations": self.annotations,
            "status": self.status.as_str(),
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "starts_at": self.starts_at.map(format_rfc3339),
            "ends_at": self.ends_at.map(format_rfc3339),
        })
    }
}

/// Prometheus' label-set fingerprint (FNV-1a 64 over sorted name/value pairs,
/// each followed by 0xff), as 16 hex digits: the same value Alertmanager sends.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{hash:016x}")
}

/// Parses an Alertmanager webhook payload (version 4).
pub fn from_alertmanager(body: &Value) -> Result<Vec<Alert>, String> {
    let obj = body
        .as_object()
        .ok_or("payload is not a JSON object (expected an Alertmanager webhook, version 4)")?;
    match obj.get("version") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == "4" => {}
        Some(Value::String(v)) => {
            return Err(format!(
                "unsupported Alertmanager payload version {v:?} (heal reads version 4)"
            ))
        }
        Some(other) => {
            return Err(format!(
                "version: must be the string \"4\" (got {})",
                kind(other)
            ))
        }
    }
    let alerts = obj
        .get("alerts")
        .and_then(Value::as_array)
        .ok_or("missing field \"alerts\" (an array)")?;
    alerts
        .iter()
        .enumerate()
        .map(|(i, a)| from_am_alert(a).map_err(|e| format!("alerts[{i}]: {e}")))
        .collect()
}

fn from_am_alert(a: &Value) -> Result<Alert, String> {
    let labels = string_map(a.get("labels"), "labels")?;
    let name = labels
        .get("alertname")
        .cloned()
        .ok_or("labels: missing \"alertname\"")?;
    let status = match a.get("status").and_then(Value::as_str) {
        Some(s) => Status::parse(s)
            .ok_or_else(|| format!("status: {s:?} is neither \"firing\" nor \"resolved\""))?,
        None => return Err("missing field \"status\"".into()),
    };
    let fingerprint = match a.get("fingerprint") {
        Some(Value::String(f)) if !f.is_empty() && f.len() <= 128 => f.clone(),
        None | Some(Value::Null) => fingerprint(&labels),
        Some(_) => return Err("fingerprint: must be a string of 1 to 128 characters".into()),
    };
    Ok(Alert {
        fingerprint,
        name,
        status,
        annotations: string_map(a.get("annotations"), "annotations")?,
        labels,
        starts_at: time_field(a, "startsAt")?,
        ends_at: time_field(a, "endsAt")?,
        source: "alertmanager".into(),
    })
}

/// Parses heal's own format: one alert object, a list of them, or `{"alerts": [...]}`.
/// An alert is `{name, labels, annotations, status, starts_at, fingerprint}`; only
/// a name (or `labels.alertname`) is required.
pub fn from_own(body: &Value) -> Result<Vec<Alert>, String> {
    let list: Vec<&Value> = match body {
        Value::Array(items) => items.iter().collect(),
        Value::Object(o) if o.get("alerts").is_some() => o["alerts"]
            .as_array()
            .ok_or("\"alerts\" is not an array")?
            .iter()
            .collect(),
        Value::Object(_) => vec![body],
        _ => {
            return Err(
                "payload must be an alert object, a list of them, or {\"alerts\": [...]}".into(),
            )
        }
    };
    if list.is_empty() {
        return Err("no alerts in payload".into());
    }
    list.into_iter()
        .enumerate()
        .map(|(i, a)| from_own_alert(a, "heal").map_err(|e| format!("alerts[{i}]: {e}")))
        .collect()
}

fn from_own_alert(a: &Value, source: &str) -> Result<Alert, String> {
    if !a.is_object() {
        return Err("not a JSON object".into());
    }
    let mut labels = string_map(a.get("labels"), "labels")?;
    let name = match (a.get("name"), labels.get("alertname")) {
        (Some(Value::String(n)), _) if !n.is_empty() => n.clone(),
        (Some(Value::Null) | None, Some(n)) => n.clone(),
        (Some(other), _) if !other.is_null() => {
            return Err(format!("name: must be a non-empty string (got {other})"))
        }
        _ => return Err("missing \"name\" (or labels.alertname)".into()),
    };
    labels
        .entry("alertname".into())
        .or_insert_with(|| name.clone());
    let status = match a.get("status") {
        None | Some(Value::Null) => Status::Firing,
        Some(Value::String(s)) => Status::parse(s)
            .ok_or_else(|| format!("status: {s:?} is neither \"firing\" nor \"resolved\""))?,
        Some(other) => {
            return Err(format!(
                "status: must be \"firing\" or \"resolved\" (got {other})"
            ))
        }
    };
    let fingerprint = match a.get("fingerprint") {
        Some(Value::String(f)) if !f.is_empty() && f.len() <= 128 => f.clone(),
        None | Some(Value::Null) => fingerprint(&labels),
        Some(other) => {
            return Err(format!(
                "fingerprint: must be a string of 1 to 128 characters (got {other})"
            ))
        }
    };
    check_map_size(&labels, "labels")?;
    Ok(Alert {
        fingerprint,
        name,
        status,
        annotations: string_map(a.get("annotations"), "annotations")?,
        labels,
        starts_at: time_field(a, "starts_at")?,
        ends_at: time_field(a, "ends_at")?,
        source: source.into(),
    })
}

/// Maps any JSON body to alerts with a `[[source]]`'s expressions.
pub fn from_source(source: &Source, body: &Value) -> Result<Vec<Alert>, String> {
    let root = crate::config::doc(body.clone());
    let items = match &source.alerts {
        Some(e) => e.eval(&root)?,
        None => body.clone(),
    };
    let items = match items {
        Value::Array(items) => items,
        Value::Null => {
            let found = match &source.alerts {
                Some(e) => format!("alerts = `{}` found nothing (null) in it", e.source),
                None => "it is null".to_string(),
            };
            return Err(format!(
                "source {:?}: no alerts in the payload: {found}; {}",
                source.name,
                outline(body)
            ));
        }
        other => vec![other],
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let doc = crate::config::doc(item.clone());
        let field = |e: &Option<crate::config::Expr>| -> Result<Value, String> {
            e.as_ref()
                .map(|e| e.eval(&doc))
                .transpose()
                .map(|v| v.unwrap_or(Value::Null))
        };
        let mapped = json!({
            "name": source.name_expr.eval(&doc)?,
            "status": field(&source.status)?,
            "labels": field(&source.labels)?,
            "annotations": field(&source.annotations)?,
            "fingerprint": field(&source.fingerprint)?,
            "starts_at": field(&source.starts_at)?,
        });
        out.push(from_own_alert(&mapped, &source.name).map_err(|e| {
            // Name the expression that gave the field the error is about.
            let expr = [
                ("name", Some(&source.name_expr)),
                ("status", source.status.as_ref()),
                ("labels", source.labels.as_ref()),
                ("annotations", source.annotations.as_ref()),
                ("fingerprint", source.fingerprint.as_ref()),
                ("starts_at", source.starts_at.as_ref()),
            ]
            .into_iter()
            .find(|(field, _)| e.starts_with(field))
            .map(|(field, expr)| match expr {
                Some(x) => format!(" ({field} = `{}` gave {})", x.source, kind(&mapped[field])),
                None => format!(" (the source sets no {field})"),
            })
            .unwrap_or_default();
            format!("alert {i} of source {:?}: {e}{expr}", source.name)
        })?);
    }
    if out.is_empty() {
        return Err(format!(
            "source {:?}: the payload holds no alerts",
            source.name
        ));
    }
    Ok(out)
}

/// What a payload holds at its top, in words, for an error about it: its
/// first field names (each cut to 40 characters), or its kind.
fn outline(body: &Value) -> String {
    match body {
        Value::Object(m) if m.is_empty() => "the payload is an empty object".into(),
        Value::Object(m) => {
            let names: Vec<String> = m
                .keys()
                .take(10)
                .map(|k| format!("{:?}", k.chars().take(40).collect::<String>()))
                .collect();
            let more = if m.len() > 10 { ", …" } else { "" };
            format!("its top-level fields are {}{more}", names.join(", "))
        }
        other => format!("the payload is {}", kind(other)),
    }
}

fn string_map(v: Option<&Value>, field: &str) -> Result<BTreeMap<String, String>, String> {
    let map = match v {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "{field}: must be an object of strings (got {})",
                kind(other)
            ))
        }
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if k.is_empty() || k.len() > MAX_LABEL_NAME {
            return Err(format!(
                "{field}: names must be 1 to {MAX_LABEL_NAME} characters"
            ));
        }
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(format!(
                    "{field}.{k}: must be a string (got {})",
                    kind(other)
                ))
            }
        };
        out.insert(k.clone(), value);
    }
    check_map_size(&out, field)?;
    Ok(out)
}

fn check_map_size(map: &BTreeMap<String, String>, field: &str) -> Result<(), String> {
    if map.len() > MAX_LABELS {
        return Err(format!(
            "{field}: more than {MAX_LABELS} entries ({})",
            map.len()
        ));
    }
    Ok(())
}

fn time_field(a: &Value, field: &str) -> Result<Option<i64>, String> {
    match a.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_rfc3339(s).map_err(|e| format!("{field}: {e}")),
        Some(other) => Err(format!(
            "{field}: must be an RFC 3339 string (got {})",
            kind(other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Detects the shape of a sample alert file for `run-rule` and `fire`:
/// an Alertmanager payload, or heal's own format.
pub fn from_any(body: &Value) -> Result<Vec<Alert>, String> {
    let am = body.get("alerts").and_then(Value::as_array).is_some()
        && (body.get("version").is_some() || body.get("receiver").is_some());
    if am {
        return from_alertmanager(body);
    }
    if body.get("labels").is_some() && body.get("startsAt").is_some() {
        return from_am_alert(body).map(|a| vec![a]);
    }
    from_own(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/alertmanager/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn fingerprint_matches_alertmanager() {
        let alerts = from_alertmanager(&fixture("single_firing.json")).unwrap();
        assert_eq!(alerts[0].fingerprint, "5a7cb4c60d175e51");
        assert_eq!(fingerprint(&alerts[0].labels), "5a7cb4c60d175e51");
        for name in [
            "group_firing.json",
            "firing_with_stale_resolved.json",
            "target_down_firing.json",
        ] {
            for a in from_alertmanager(&fixture(name)).unwrap() {
                assert_eq!(fingerprint(&a.labels), a.fingerprint, "{name}");
            }
        }
    }

    #[test]
    fn alertmanager_statuses_and_times() {
        let alerts = from_alertmanager(&fixture("firing_with_stale_resolved.json")).unwrap();
        assert_eq!(alerts[0].status, Status::Resolved);
        assert!(alerts[0].ends_at.is_some());
        assert_eq!(alerts[1].status, Status::Firing);
        assert_eq!(alerts[1].ends_at, None);
    }

    #[test]
    fn own_format() {
        let a = &from_own(&json!({"name": "X", "labels": {"instance": "h"}})).unwrap()[0];
        assert_eq!(a.labels["alertname"], "X");
        assert_eq!(a.status, Status::Firing);
        assert!(from_own(&json!({"labels": {"a": 1.5}}))
            .unwrap_err()
            .contains("missing \"name\""));
        assert!(from_own(&json!({"name": "X", "labels": {"a": [1]}}))
            .unwrap_err()
            .contains("labels.a: must be a string"));
        assert!(from_own(&json!({"name": "X", "status": "maybe"})).is_err());
        assert!(from_own(&json!([])).is_err());
    }

    #[test]
    fn bad_alertmanager_payloads() {
        assert!(from_alertmanager(&json!([])).is_err());
        assert!(from_alertmanager(&json!({"version": "4"}))
            .unwrap_err()
            .contains("alerts"));
        assert!(
            from_alertmanager(&json!({"alerts": [{"status": "firing", "labels": {}}]}))
                .unwrap_err()
                .contains("alertname")
        );
        assert!(from_alertmanager(&json!({"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": "nope"}]})).is_err());
        // A version of another type is refused, not skipped (found by schemathesis).
        for version in [json!({}), json!(4), json!(["4"])] {
            assert!(
                from_alertmanager(&json!({"version": version, "alerts": []}))
                    .unwrap_err()
                    .contains("version: must be the string \"4\""),
                "{version}"
            );
        }
        assert!(from_alertmanager(&json!({"version": "3", "alerts": []})).is_err());
        assert!(from_alertmanager(&json!({"version": null, "alerts": []})).is_ok());
        // A fingerprint of another type is refused, not replaced (found by schemathesis).
        for fingerprint in [json!({}), json!(5), json!("")] {
            let alert = json!({"status": "firing", "labels": {"alertname": "A"}, "fingerprint": fingerprint});
            assert!(
                from_alertmanager(&json!({"alerts": [alert]}))
                    .unwrap_err()
                    .contains("fingerprint: must be a string"),
                "{fingerprint}"
            );
        }
    }
}
