//! Event and op states, the allowed transitions, and how an event moves on
//! from its ops and its verification. Pure: no I/O; `store` applies what this
//! decides.
//!
//! An event is *open* (`ended_at` unset) from its decision until it reaches a
//! final state; while open it holds its key, so later alerts of the key
//! collapse into it. `escalated` and `dry_run` events stay open until their
//! alert resolves: people are on it, or heal is only watching.

/// States of an op (one runbook run, or one verification, on one agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    /// Held back by the runbook's `max_parallel` until an earlier target ends.
    Waiting,
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
            OpState::Waiting => "waiting",
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
            "waiting" => OpState::Waiting,
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
            OpState::Waiting | OpState::Queued | OpState::Dispatched | OpState::Running
        )
    }

    /// Whether the op may move from `self` to `to`. Final states never change:
    /// that is what makes results idempotent and lost ops never re-run.
    pub fn can_become(self, to: OpState) -> bool {
        use OpState::*;
        matches!(
            (self, to),
            (Waiting, Queued | Cancelled)
                | (Queued, Dispatched | Lost | Cancelled)
                | (Dispatched, Running | Lost | Succeeded | Failed | TimedOut)
                | (Running, Succeeded | Failed | TimedOut | Lost)
        )
    }
}

/// Every event state, in the order an event may pass through them.
pub const STATES: [&str; 12] = [
    "pending_approval",
    "deferred",
    "queued",
    "running",
    "verifying",
    "succeeded",
    "failed",
    "timed_out",
    "lost",
    "cancelled",
    "escalated",
    "dry_run",
];

/// Event states that wait for something other than ops: a person, a guard,
/// or (escalated, dry-run) the alert's resolution.
pub const HELD_STATES: [&str; 4] = ["pending_approval", "deferred", "escalated", "dry_run"];

/// Final event states.
pub const FINAL_STATES: [&str; 7] = [
    "succeeded",
    "failed",
    "timed_out",
    "lost",
    "cancelled",
    "escalated",
    "dry_run",
];

/// Whether a final event state is a failure (for the breaker's failures in a row).
pub fn is_failure(state: &str) -> bool {
    matches!(state, "failed" | "timed_out" | "lost")
}

/// How an event checks that its fix worked (from the runbook's `verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyKind {
    /// Success is exit 0 of every step.
    None,
    /// The alert must resolve within the deadline.
    ResolvedWithin,
    /// A check runs on each target.
    Run,
}

/// What an event with ops has, for `progress`.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    /// States of its runbook ops, in target order.
    pub run: &'a [OpState],
    /// States of its verification ops.
    pub verify: &'a [OpState],
    /// How it is verified.
    pub verify_kind: VerifyKind,
    /// Targets that may run at once.
    pub max_parallel: usize,
    /// Whether any alert of the event is still firing.
    pub alerts_firing: bool,
}

/// What to do with an event after one of its ops moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// The state it is in now.
    pub state: &'static str,
    /// Waiting ops to release to the queue.
    pub release: usize,
    /// Cancel the waiting ops: a target failed, the rest are not started.
    pub cancel_waiting: bool,
    /// Queue the verification ops (one per target).
    pub start_verify: bool,
    /// Verifying by resolution: start the deadline.
    pub await_resolution: bool,
    /// Why it ended, once final.
    pub reason: Option<String>,
}

/// Where an event with ops stands. Targets run `max_parallel` at a time; the
/// first failure stops the rest; once every target succeeded, the event is
/// verified, and a failed verification fails the event.
pub fn progress(p: &Progress) -> Next {
    let mut next = Next {
        state: "queued",
        release: 0,
        cancel_waiting: false,
        start_verify: false,
        await_resolution: false,
        reason: None,
    };
    let count = |s: OpState| p.run.iter().filter(|&&x| x == s).count();
    let failed = p
        .run
        .iter()
        .any(|s| s.is_final() && *s != OpState::Succeeded && *s != OpState::Cancelled);
    let waiting = count(OpState::Waiting);
    if failed && waiting > 0 {
        next.cancel_waiting = true;
    }
    let in_flight = p
        .run
        .iter()
        .filter(|s| !s.is_final() && **s != OpState::Waiting)
        .count();
    if !failed && waiting > 0 && in_flight < p.max_parallel.max(1) {
        next.release = waiting.min(p.max_parallel.max(1) - in_flight);
    }
    let open = p
        .run
        .iter()
        .filter(|s| !(s.is_final() || next.cancel_waiting && **s == OpState::Waiting))
        .count();
    if open > 0 {
        let started = p
            .run
            .iter()
            .any(|s| !matches!(s, OpState::Queued | OpState::Waiting));
        next.state = if started || p.run.iter().any(|s| s.is_final()) {
            "running"
        } else {
            "queued"
        };
        return next;
    }
    for (op, state) in [
        (OpState::Lost, "lost"),
        (OpState::TimedOut, "timed_out"),
        (OpState::Failed, "failed"),
        (OpState::Cancelled, "cancelled"),
    ] {
        let n = count(op)
            + if next.cancel_waiting && op == OpState::Cancelled {
                waiting
            } else {
                0
            };
        if n > 0 && (op != OpState::Cancelled || !failed) {
            next.state = state;
            next.reason = Some(format!("{n} of {} targets {}", p.run.len(), op.as_str()));
            return next;
        }
    }
    match p.verify_kind {
        VerifyKind::None => {
            next.state = "succeeded";
            next.reason = Some("every step exited 0".into());
        }
        VerifyKind::ResolvedWithin if !p.alerts_firing => {
            next.state = "succeeded";
            next.reason = Some("the steps succeeded and the alert has resolved".into());
        }
        VerifyKind::ResolvedWithin => {
            next.state = "verifying";
            next.await_resolution = true;
        }
        VerifyKind::Run if p.verify.is_empty() => {
            next.state = "verifying";
            next.start_verify = true;
        }
        VerifyKind::Run if p.verify.iter().any(|s| !s.is_final()) => next.state = "verifying",
        VerifyKind::Run => {
            let bad = p
                .verify
                .iter()
                .filter(|s| **s != OpState::Succeeded)
                .count();
            if bad == 0 {
                next.state = "succeeded";
                next.reason = Some("the steps succeeded and the verification check passed".into());
            } else {
                next.state = "failed";
                next.reason = Some(format!(
                    "verification failed on {bad} of {} targets: a failed verification is a failed attempt",
                    p.verify.len()
                ));
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::OpState::*;
    use super::*;

    fn run(ops: &[OpState], max_parallel: usize) -> Next {
        progress(&Progress {
            run: ops,
            verify: &[],
            verify_kind: VerifyKind::None,
            max_parallel,
            alerts_firing: true,
        })
    }

    #[test]
    fn state_follows_ops() {
        assert_eq!(run(&[Queued], 1).state, "queued");
        assert_eq!(run(&[Queued, Dispatched], 2).state, "running");
        assert_eq!(run(&[Succeeded, Running], 2).state, "running");
        assert_eq!(run(&[Succeeded], 1).state, "succeeded");
        assert_eq!(run(&[Succeeded, Failed], 2).state, "failed");
        assert_eq!(run(&[TimedOut, Failed], 2).state, "timed_out");
        assert_eq!(run(&[Lost, TimedOut], 2).state, "lost");
    }

    #[test]
    fn fan_out_releases_up_to_max_parallel_and_stops_at_a_failure() {
        let n = run(&[Succeeded, Waiting, Waiting, Waiting], 2);
        assert_eq!((n.release, n.state), (2, "running"));
        let n = run(&[Succeeded, Running, Waiting], 2);
        assert_eq!(n.release, 1);
        let n = run(&[Running, Running, Waiting], 2);
        assert_eq!(n.release, 0);
        let n = run(&[Failed, Running, Waiting], 2);
        assert!(n.cancel_waiting);
        assert_eq!((n.release, n.state), (0, "running"));
        let n = run(&[Failed, Succeeded, Waiting], 2);
        assert!(n.cancel_waiting);
        assert_eq!(n.state, "failed");
    }

    #[test]
    fn verification_decides_success() {
        let p = |verify: &[OpState], kind, firing| {
            progress(&Progress {
                run: &[Succeeded, Succeeded],
                verify,
                verify_kind: kind,
                max_parallel: 2,
                alerts_firing: firing,
            })
        };
        let n = p(&[], VerifyKind::ResolvedWithin, true);
        assert_eq!((n.state, n.await_resolution), ("verifying", true));
        assert_eq!(p(&[], VerifyKind::ResolvedWithin, false).state, "succeeded");
        let n = p(&[], VerifyKind::Run, true);
        assert_eq!((n.state, n.start_verify), ("verifying", true));
        assert_eq!(
            p(&[Running, Succeeded], VerifyKind::Run, true).state,
            "verifying"
        );
        assert_eq!(
            p(&[Succeeded, Succeeded], VerifyKind::Run, true).state,
            "succeeded"
        );
        let n = p(&[Succeeded, Failed], VerifyKind::Run, true);
        assert_eq!(n.state, "failed");
        assert!(n.reason.unwrap().contains("verification failed"));
        // A failed run is not verified at all.
        let n = progress(&Progress {
            run: &[Failed],
            verify: &[],
            verify_kind: VerifyKind::Run,
            max_parallel: 1,
            alerts_firing: true,
        });
        assert_eq!((n.state, n.start_verify), ("failed", false));
    }

    #[test]
    fn final_states_never_change() {
        for s in [Succeeded, Failed, TimedOut, Lost, Cancelled] {
            for t in [
                Waiting, Queued, Dispatched, Running, Succeeded, Failed, TimedOut, Lost, Cancelled,
            ] {
                assert!(!s.can_become(t), "{s:?} -> {t:?}");
            }
        }
        assert!(Waiting.can_become(Queued));
        assert!(Queued.can_become(Dispatched));
        assert!(!Queued.can_become(Running));
        assert!(Running.can_become(Lost));
    }
}
