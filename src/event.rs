//! Event and op states, the allowed transitions, and how an event's state
//! follows from its ops. Pure: no I/O; `store` applies what this allows.

/// States of an op (one runbook run on one agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    /// Waiting for its agent to poll.
    Queued,
    /// Handed to a poll; not yet acknowledged.
    Dispatched,
    /// Acknowledged by the agent; steps running.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed, or the agent refused the runbook.
    Failed,
    /// A step ran past its timeout.
    TimedOut,
    /// Its fate is unknown (lease or deadline passed, agent restarted): never re-run.
    Lost,
    /// Stopped before it ran.
    Cancelled,
}

impl OpState {
    /// Name in the store and API.
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Queued => "queued",
            OpState::Dispatched => "dispatched",
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
            OpState::TimedOut => "timed_out",
            OpState::Lost => "lost",
            OpState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<OpState> {
        Some(match text {
            "queued" => OpState::Queued,
            "dispatched" => OpState::Dispatched,
            "running" => OpState::Running,
            "succeeded" => OpState::Succeeded,
            "failed" => OpState::Failed,
            "timed_out" => OpState::TimedOut,
            "lost" => OpState::Lost,
            "cancelled" => OpState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the op has ended.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            OpState::Queued | OpState::Dispatched | OpState::Running
        )
    }

    /// Whether the op may move from `self` to `to`. Final states never change:
    /// that is what makes results idempotent and lost ops never re-run.
    pub fn can_become(self, to: OpState) -> bool {
        use OpState::*;
        matches!(
            (self, to),
            (Queued, Dispatched | Lost | Cancelled)
                | (Dispatched, Running | Lost | Succeeded | Failed | TimedOut)
                | (Running, Succeeded | Failed | TimedOut | Lost)
        )
    }
}

/// SQL list of the event states that count as active for a key (collapse).
pub const ACTIVE_EVENT_STATES: &str =
    "('pending_approval','deferred','queued','running','verifying')";

/// The event state implied by its ops: the worst final outcome once all
/// have ended, `running` while any has started, otherwise `queued`.
pub fn event_state(ops: &[OpState]) -> &'static str {
    if ops.is_empty() {
        return "queued";
    }
    if ops.iter().all(|s| s.is_final()) {
        for (op, event) in [
            (OpState::Lost, "lost"),
            (OpState::TimedOut, "timed_out"),
            (OpState::Failed, "failed"),
            (OpState::Cancelled, "cancelled"),
        ] {
            if ops.contains(&op) {
                return event;
            }
        }
        return "succeeded";
    }
    if ops.iter().any(|s| !matches!(s, OpState::Queued)) {
        "running"
    } else {
        "queued"
    }
}

#[cfg(test)]
mod tests {
    use super::OpState::*;
    use super::*;

    fn check(ops: &[OpState], expected: &str) {
        assert_eq!(event_state(ops), expected, "{ops:?}");
    }

    #[test]
    fn event_state_follows_ops() {
        check(&[Queued], "queued");
        check(&[Queued, Dispatched], "running");
        check(&[Succeeded, Running], "running");
        check(&[Succeeded], "succeeded");
        check(&[Succeeded, Failed], "failed");
        check(&[TimedOut, Failed], "timed_out");
        check(&[Lost, TimedOut], "lost");
    }

    #[test]
    fn final_states_never_change() {
        for s in [Succeeded, Failed, TimedOut, Lost, Cancelled] {
            for t in [
                Queued, Dispatched, Running, Succeeded, Failed, TimedOut, Lost, Cancelled,
            ] {
                assert!(!s.can_become(t), "{s:?} -> {t:?}");
            }
        }
        assert!(Queued.can_become(Dispatched));
        assert!(!Queued.can_become(Running));
        assert!(Running.can_become(Lost));
    }
}
