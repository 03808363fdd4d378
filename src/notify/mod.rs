//! Notifications: the kinds (`crate::kinds`), the document a route's `when` sees, and
//! how each channel renders and sends one. Pure except `send`.
//!
//! A notification is recorded in the store in the transaction of the state
//! change that caused it (`store::notify`); the server's outbox threads route
//! it through `[[notify]]` and deliver it (`server::outbox`).

pub mod render;
pub mod send;

use serde_json::Value;

pub use crate::kinds::{event_kind, internal_kind, kind_named, Kind, KINDS};

/// The stable key that ties a trigger to its resolve (PagerDuty `dedup_key`,
/// Opsgenie `alias`): `heal/<subject kind>/<id>`.
pub fn dedup_key(kind: &Kind, id: &str) -> String {
    format!("heal/{}/{id}", kind.subject)
}

/// Normalizes a severity label to one of PagerDuty's four levels.
pub fn severity_level(text: &str) -> &'static str {
    match text.to_ascii_lowercase().as_str() {
        "critical" | "crit" | "page" | "fatal" | "emergency" | "p1" => "critical",
        "error" | "err" | "high" | "major" | "p2" => "error",
        "warning" | "warn" | "medium" | "minor" | "p3" => "warning",
        _ => "info",
    }
}

/// The document routes filter and channels render: the parts the store
/// gathered (`event`, `alert`, `ops`, `heartbeat`, …) plus what every
/// notification has (`kind`, `severity`, `priority`, `team`, `rule`,
/// `runbook`, `labels`).
pub fn document(id: i64, kind: &Kind, subject: &str, at: i64, parts: Value) -> Value {
    let part = |k: &str| parts.get(k).cloned().unwrap_or(Value::Null);
    let alert = part("alert");
    let event = part("event");
    let labels = match &alert["labels"] {
        Value::Object(m) => Value::Object(m.clone()),
        _ => Value::Object(Default::default()),
    };
    let severity = labels["severity"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(kind.severity)
        .to_string();
    // A priority pagers know (p1…p5), from the alert's labels; a rule's own
    // is set over it where the notification is routed.
    let priority = labels["priority"]
        .as_str()
        .and_then(crate::config::priority_level);
    let ops = match part("ops") {
        Value::Array(a) => Value::Array(a),
        _ => Value::Array(Vec::new()),
    };
    serde_json::json!({
        "id": id,
        "kind": kind.name,
        "at": crate::time::format_rfc3339(at),
        "subject": subject,
        "dedup_key": dedup_key(kind, subject),
        "resolves": kind.resolves,
        "severity": severity,
        "priority": priority,
        "team": labels.get("team").cloned().unwrap_or(Value::Null),
        "rule": event.get("rule").cloned().unwrap_or(Value::Null),
        "runbook": event.get("runbook").cloned().unwrap_or(Value::Null),
        "labels": labels,
        "event": event,
        "alert": alert,
        "ops_total": parts.get("ops_total").cloned().unwrap_or_else(|| ops.as_array().map_or(0, Vec::len).into()),
        "ops": ops,
        "heartbeat": part("heartbeat"),
        "probe": part("probe"),
        "agent": part("agent"),
        "breaker": part("breaker"),
        "channel": part("channel"),
    })
}

/// The parts of an internal alert's notification: the alert and what it is
/// about (`heartbeat`, `probe`, `agent` or `breaker`).
pub fn internal_parts(source: &str, alert: &crate::alert::Alert) -> Value {
    let label = |k: &str| alert.labels.get(k).cloned().unwrap_or_default();
    let note = |k: &str| alert.annotations.get(k).cloned();
    let (key, about) = match source {
        "heartbeat" | "runtime" => (
            "heartbeat",
            serde_json::json!({ "name": label("heartbeat"), "reason": note("reason"), "description": note("description") }),
        ),
        "probe" => (
            "probe",
            serde_json::json!({
                "name": label("probe"),
                "description": note("description"),
                // The probe's own `notify` channels (`server::outbox::route_batch`).
                "notify": note("notify").map(|n| n.split(',').map(str::to_string).collect::<Vec<_>>()).unwrap_or_default(),
            }),
        ),
        "agent" => (
            "agent",
            serde_json::json!({ "id": label("agent"), "description": note("description") }),
        ),
        _ => (
            "breaker",
            serde_json::json!({ "reason": note("description") }),
        ),
    };
    let mut parts = serde_json::json!({ "alert": alert.doc() });
    parts[key] = about;
    parts
}

/// Most ops a notification carries (failures first); `ops_total` counts all.
const MAX_OPS: usize = 5;
/// Output kept per op in a notification, in bytes (the tail).
const OUTPUT_TAIL: usize = 2000;

/// The parts of an event's notification: the event (in the state it was in
/// when the notification was recorded, with the reason of the decision that
/// made it: an escalated or held event has no other), its alert and its ops.
pub fn event_parts(
    d: &crate::store::EventDetail,
    state_then: Option<&str>,
    decision: Option<&str>,
) -> Value {
    let e = &d.event;
    let targets: Vec<&str> = {
        let mut t: Vec<&str> = d.ops.iter().map(|o| o.agent.as_str()).collect();
        t.dedup();
        t
    };
    let event = serde_json::json!({
        "id": e.id,
        "state": state_then.unwrap_or(&e.state),
        "reason": e.reason,
        "decision": decision,
        "mode": e.mode,
        "key": e.key,
        "rule": e.rule,
        "runbook": e.runbook,
        "hits": e.hits,
        "created_at": crate::time::format_rfc3339(e.created_at),
        "ended_at": e.ended_at.map(crate::time::format_rfc3339),
        "targets": targets,
        "decided_by": e.decided_by,
    });
    let alert = d
        .alert
        .as_ref()
        .and_then(crate::alert::Alert::from_stored)
        .map_or(Value::Null, |a| a.doc());
    let mut ops: Vec<&crate::store::OpRow> = d.ops.iter().collect();
    // Failures first, then in order.
    ops.sort_by_key(|o| (!crate::event::is_failure(&o.state), o.id));
    let ops: Vec<Value> = ops
        .into_iter()
        .take(MAX_OPS)
        .map(|o| {
            let last = o.steps.last();
            let output = last.map_or(o.live_output.as_str(), |s| s.output.as_str());
            let duration = match (o.started_at, o.finished_at) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            serde_json::json!({
                "id": o.id,
                "agent": o.agent,
                "kind": o.kind,
                "state": o.state,
                "step": last.map(|s| s.name.clone()),
                "exit_code": last.and_then(|s| s.exit_code),
                "duration_ms": duration,
                "error": o.error,
                "output": tail(output, OUTPUT_TAIL),
            })
        })
        .collect();
    serde_json::json!({ "event": event, "alert": alert, "ops": ops, "ops_total": d.ops.len() })
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Text of a JSON field, or "".
pub fn text<'a>(doc: &'a Value, path: &[&str]) -> &'a str {
    let mut v = doc;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds() {
        let check = |old, new, closed, live, want| {
            assert_eq!(
                event_kind(old, new, closed, live),
                want,
                "{old:?} -> {new} closed={closed} live={live}"
            )
        };
        check(None, "queued", false, true, Some("event.started"));
        check(
            Some("pending_approval"),
            "queued",
            false,
            true,
            Some("event.started"),
        );
        check(
            Some("deferred"),
            "queued",
            false,
            true,
            Some("event.started"),
        );
        check(Some("queued"), "queued", false, true, None);
        check(Some("queued"), "running", false, true, None);
        check(Some("running"), "verifying", false, true, None);
        check(
            Some("verifying"),
            "succeeded",
            true,
            true,
            Some("event.succeeded"),
        );
        check(Some("running"), "failed", true, true, Some("event.failed"));
        check(
            Some("running"),
            "timed_out",
            true,
            true,
            Some("event.failed"),
        );
        check(Some("queued"), "lost", true, true, Some("event.failed"));
        check(
            None,
            "pending_approval",
            false,
            true,
            Some("event.pending_approval"),
        );
        check(
            Some("pending_approval"),
            "cancelled",
            true,
            true,
            Some("event.cancelled"),
        );
        check(None, "escalated", false, true, Some("event.escalated"));
        check(
            Some("escalated"),
            "escalated",
            true,
            true,
            Some("event.resolved"),
        );
        check(None, "deferred", false, true, None);
        check(None, "dry_run", false, false, Some("event.dry_run"));
        check(Some("dry_run"), "dry_run", true, false, None);
    }

    #[test]
    fn every_internal_source_has_both_kinds_and_each_kind_exists() {
        for source in ["heartbeat", "runtime", "probe", "agent", "breaker"] {
            for firing in [true, false] {
                let k = internal_kind(source, firing).expect(source);
                let kind = kind_named(k).expect(k);
                assert_eq!(kind.resolves, !firing, "{k}");
            }
        }
        for new in [
            "queued",
            "pending_approval",
            "escalated",
            "succeeded",
            "failed",
            "cancelled",
        ] {
            let k = event_kind(None, new, false, true).unwrap();
            assert!(kind_named(k).is_some(), "{k}");
        }
        assert_eq!(internal_kind("schedule", true), None);
    }

    #[test]
    fn severities() {
        assert_eq!(severity_level("CRITICAL"), "critical");
        assert_eq!(severity_level("high"), "error");
        assert_eq!(severity_level("warning"), "warning");
        assert_eq!(severity_level("whatever"), "info");
    }
}
