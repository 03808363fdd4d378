//! The kinds of notification heal records, with the severity and subject of
//! each. Pure data: `config` checks route filters against it, `notify`
//! renders by it, the store records its names.

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
