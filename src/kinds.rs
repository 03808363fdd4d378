//! The kinds of notification heal records, with the severity and subject of
//! each, and which event state change or internal alert calls for which
//! (`event_kind`, `internal_kind`). Pure data: `config` checks route
//! filters against it, `notify` renders by it, the store records its names.

/// One kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// As routes see it: `event.failed`.
    pub name: &'static str,
    /// Severity when the alert carries no `severity` label.
    pub severity: &'static str,
    /// The subject kind it opens or closes (`event`, `heartbeat`, …).
    pub subject: &'static str,
    /// Whether it closes what an earlier kind of the same subject opened
    /// (PagerDuty resolve, Opsgenie close).
    pub resolves: bool,
}

const fn kind(
    name: &'static str,
    severity: &'static str,
    subject: &'static str,
    resolves: bool,
) -> Kind {
    Kind {
        name,
        severity,
        subject,
        resolves,
    }
}

/// Every kind. Adding one is one line here plus the place that records it.
pub const KINDS: &[Kind] = &[
    kind("event.started", "info", "event", false),
    kind("event.succeeded", "info", "event", true),
    kind("event.failed", "error", "event", false),
    kind("event.escalated", "error", "event", false),
    kind("event.pending_approval", "warning", "event", false),
    kind("event.cancelled", "info", "event", true),
    kind("event.resolved", "info", "event", true),
    kind("event.dry_run", "info", "event", false),
    kind("heartbeat.down", "error", "heartbeat", false),
    kind("heartbeat.up", "info", "heartbeat", true),
    kind("heartbeat.overrun", "warning", "heartbeat-runtime", false),
    kind("heartbeat.finished", "info", "heartbeat-runtime", true),
    kind("probe.down", "error", "probe", false),
    kind("probe.up", "info", "probe", true),
    kind("agent.down", "error", "agent", false),
    kind("agent.up", "info", "agent", true),
    kind("safety.tripped", "critical", "safety", false),
    kind("safety.reset", "info", "safety", true),
    kind("test", "info", "test", false),
    kind("test.resolved", "info", "test", true),
];

/// Looks a kind up by name.
pub fn kind_named(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The kind an event's state change calls for, if any. `old` is `None` for
/// a new event; `closed` says the change ended the event.
pub fn event_kind(old: Option<&str>, new: &str, closed: bool, live: bool) -> Option<&'static str> {
    if old == Some(new) && !closed {
        return None;
    }
    Some(match new {
        "queued" if live && !matches!(old, Some("running" | "dispatched")) => "event.started",
        "pending_approval" => "event.pending_approval",
        "escalated" if old == Some("escalated") => "event.resolved",
        "escalated" => "event.escalated",
        "succeeded" => "event.succeeded",
        "failed" | "timed_out" | "lost" => "event.failed",
        "cancelled" => "event.cancelled",
        "dry_run" if old.is_none() => "event.dry_run",
        _ => return None,
    })
}

/// The kind an internal alert calls for when raised (`firing`) or resolved.
/// `source` is the internal alert's kind as `server::watch` records it.
pub fn internal_kind(source: &str, firing: bool) -> Option<&'static str> {
    Some(match (source, firing) {
        ("heartbeat", true) => "heartbeat.down",
        ("heartbeat", false) => "heartbeat.up",
        ("runtime", true) => "heartbeat.overrun",
        ("runtime", false) => "heartbeat.finished",
        ("probe", true) => "probe.down",
        ("probe", false) => "probe.up",
        ("agent", true) => "agent.down",
        ("agent", false) => "agent.up",
        ("breaker", true) => "safety.tripped",
        ("breaker", false) => "safety.reset",
        _ => return None,
    })
}
