//! Heartbeat status as a pure function of its spec, what was seen and the
//! time: no I/O, no clock, so the sweep, the API and tests all agree.
//!
//! `status` follows these rules, in this order:
//! - Paused (muted): `Paused`, and nothing else is reported (`next_check` is
//!   `None`).
//! - The last activity is the latest of `registered_at`, `resumed_at`,
//!   `last_start` and `last_end.at`. The next check-in is due at
//!   `schedule.next_after(last activity)`, and the heartbeat is down at
//!   `due_at + grace`. So a heartbeat that never pinged still goes late and
//!   down counting from when heal started watching it (it catches a job that
//!   never ran), and an unmute restarts the clock.
//! - Running: there is a start ping and no end ping at or after it.
//!   `running_since` is the start; with `max_runtime`, `overrun_at` is the
//!   start plus the max runtime and `overrun` is `now > overrun_at`, an alert
//!   of its own that does not change the state. `reason` says how long it
//!   has run.
//! - A failure ping not followed by a start: `Down`, with `failed` set and
//!   the exit code, when known, in `reason`. A later start clears it.
//! - Otherwise, by time: `now <= due_at` is `New` if never pinged (no start
//!   and no end) and `Up` if pinged; `due_at < now <= down_at` is `Late`;
//!   `now > down_at` is `Down`. Both boundaries belong to the earlier state.
//!   A schedule that never fires again leaves it `New` or `Up`.
//! - `next_check` is the earliest of `due_at`, `down_at` and `overrun_at`
//!   that is after `now`: the sweep need not look again before then unless
//!   a ping arrives. It follows that rule even when the state cannot change
//!   then (a failed heartbeat stays `Down`), which only costs a re-check.

use std::time::Duration;

use crate::schedule::Schedule;
use crate::time::{format_duration, format_rfc3339};

/// What heal expects of one heartbeat.
#[derive(Debug, Clone)]
pub struct Spec {
    /// When check-ins are expected.
    pub schedule: Schedule,
    /// How long after a missed check-in it goes from late to down.
    pub grace: Duration,
    /// How long a started run may take before it is reported as overrun.
    pub max_runtime: Option<Duration>,
}

/// The end of a run: a success or failure ping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct End {
    /// When the ping arrived, UTC milliseconds.
    pub at: i64,
    /// Whether the run succeeded.
    pub ok: bool,
    /// The run's exit code, when the ping carried one.
    pub exit_code: Option<i32>,
}

/// What heal has seen of one heartbeat; all times UTC milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// When heal started watching it.
    pub registered_at: i64,
    /// The last unmute.
    pub resumed_at: Option<i64>,
    /// Whether it is muted.
    pub paused: bool,
    /// The last start ping.
    pub last_start: Option<i64>,
    /// The last success, failure or exit-code ping.
    pub last_end: Option<End>,
}

/// A heartbeat's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Never pinged, and not yet due.
    New,
    /// Pinged and not yet due again.
    Up,
    /// Past due, within the grace.
    Late,
    /// Past due and grace, or the last run failed.
    Down,
    /// Muted.
    Paused,
}

/// A heartbeat's status at one instant; all times UTC milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The state.
    pub state: State,
    /// When the next check-in is expected (late after it).
    pub due_at: Option<i64>,
    /// `due_at` + grace (down after it).
    pub down_at: Option<i64>,
    /// A start ping not yet followed by an end.
    pub running_since: Option<i64>,
    /// Running past `max_runtime` (its own alert).
    pub overrun: bool,
    /// `running_since` + `max_runtime`.
    pub overrun_at: Option<i64>,
    /// The last run reported failure (the state is `Down`).
    pub failed: Option<End>,
    /// The earliest future time the status changes with no new ping.
    pub next_check: Option<i64>,
    /// One line for people.
    pub reason: String,
}

/// Every state with its name as stored and shown.
pub const STATES: [(State, &str); 5] = [
    (State::New, "new"),
    (State::Up, "up"),
    (State::Late, "late"),
    (State::Down, "down"),
    (State::Paused, "paused"),
];

impl State {
    /// The state's name as stored and shown: "new", "up", "late", "down", "paused".
    pub fn as_str(self) -> &'static str {
        STATES
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, name)| name)
    }

    /// The state named `text` (as written by `as_str`).
    pub fn parse(text: &str) -> Option<State> {
        STATES
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(s, _)| *s)
    }
}

/// The heartbeat's status at `now` (see the module doc for the rules).
pub fn status(spec: &Spec, seen: &Seen, now: i64) -> Status {
    if seen.paused {
        return paused();
    }
    let due_at = spec.schedule.next_after(last_activity(seen));
    let down_at = due_at.map(|due| due.saturating_add(millis(spec.grace)));
    let running_since = seen
        .last_start
        .filter(|&start| seen.last_end.is_none_or(|end| end.at < start));
    let overrun_at = running_since
        .zip(spec.max_runtime)
        .map(|(start, max)| start.saturating_add(millis(max)));
    let failed = seen
        .last_end
        .filter(|end| !end.ok && running_since.is_none());
    let mut status = Status {
        state: state(seen, failed.is_some(), due_at, down_at, now),
        due_at,
        down_at,
        running_since,
        overrun: overrun_at.is_some_and(|at| now > at),
        overrun_at,
        failed,
        next_check: [due_at, down_at, overrun_at]
            .into_iter()
            .flatten()
            .filter(|&at| at > now)
            .min(),
        reason: String::new(),
    };
    status.reason = reason(spec, seen, &status, now);
    status
}

fn paused() -> Status {
    Status {
        state: State::Paused,
        due_at: None,
        down_at: None,
        running_since: None,
        overrun: false,
        overrun_at: None,
        failed: None,
        next_check: None,
        reason: "paused".into(),
    }
}

/// The latest of registration, unmute and pings: the schedule counts from it.
fn last_activity(seen: &Seen) -> i64 {
    [seen.resumed_at, last_ping(seen)]
        .into_iter()
        .flatten()
        .fold(seen.registered_at, i64::max)
}

fn last_ping(seen: &Seen) -> Option<i64> {
    seen.last_start.max(seen.last_end.map(|end| end.at))
}

fn state(seen: &Seen, failed: bool, due_at: Option<i64>, down_at: Option<i64>, now: i64) -> State {
    match (due_at, down_at) {
        _ if failed => State::Down,
        (_, Some(down)) if now > down => State::Down,
        (Some(due), _) if now > due => State::Late,
        _ if last_ping(seen).is_none() => State::New,
        _ => State::Up,
    }
}

/// One line for people: what was seen, what is expected, and a run in progress.
fn reason(spec: &Spec, seen: &Seen, status: &Status, now: i64) -> String {
    let due = status
        .due_at
        .map_or("never (the schedule does not fire again)".into(), at);
    let mut out = match (status.state, status.failed) {
        (_, Some(end)) => failure(end),
        (State::New, _) => format!("never pinged; first due {due}"),
        (State::Up, _) => format!("{}; next due {due}", seen_text(seen, false)),
        _ => format!(
            "{}; due {due}, grace {}",
            seen_text(seen, true),
            format_duration(spec.grace)
        ),
    };
    if let Some(start) = status.running_since {
        let ago = Duration::from_secs(now.saturating_sub(start).max(0) as u64 / 1000);
        out.push_str(&format!(
            "; started {} ago and has not finished",
            format_duration(ago)
        ));
        if let (true, Some(max)) = (status.overrun, spec.max_runtime) {
            out.push_str(&format!(" (max runtime {})", format_duration(max)));
        }
    }
    out
}

/// "last ping <t>" / "no ping since <t>", naming the unmute or the
/// registration when the clock counts from that instead of a ping.
fn seen_text(seen: &Seen, late: bool) -> String {
    let last = last_activity(seen);
    let pinged_last = last_ping(seen) == Some(last);
    let anchor = if pinged_last {
        at(last)
    } else if seen.resumed_at == Some(last) {
        format!("resumed at {}", at(last))
    } else if last_ping(seen).is_none() {
        return format!("never pinged (registered {})", at(last));
    } else {
        format!("registered at {}", at(last))
    };
    match (late, pinged_last) {
        (true, _) => format!("no ping since {anchor}"),
        (false, true) => format!("last ping {anchor}"),
        (false, false) => anchor,
    }
}

fn failure(end: End) -> String {
    match end.exit_code {
        Some(code) => format!("last run failed with exit code {code} at {}", at(end.at)),
        None => format!("last run failed at {}", at(end.at)),
    }
}

/// RFC 3339, without the milliseconds when they are zero.
fn at(ms: i64) -> String {
    format_rfc3339(ms).replace(".000Z", "Z")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;

    fn t(text: &str) -> i64 {
        parse_rfc3339(text).unwrap().unwrap()
    }

    fn spec(every: Option<&str>, cron: Option<&str>, tz: Option<&str>, grace: &str) -> Spec {
        Spec {
            schedule: Schedule::parse(every, cron, tz).unwrap(),
            grace: crate::time::parse_duration(grace).unwrap(),
            max_runtime: None,
        }
    }

    /// Every hour, 30 minutes grace.
    fn hourly() -> Spec {
        spec(Some("1h"), None, None, "30m")
    }

    /// Daily at 03:00 UTC, one hour grace.
    fn nightly_utc() -> Spec {
        spec(None, Some("0 3 * * *"), None, "1h")
    }

    /// Daily at 03:00 Berlin time, one hour grace, runs may take 2h.
    fn nightly_berlin() -> Spec {
        let mut spec = spec(None, Some("0 3 * * *"), Some("Europe/Berlin"), "1h");
        spec.max_runtime = Some(Duration::from_secs(7_200));
        spec
    }

    fn end(at: i64, ok: bool, exit_code: Option<i32>) -> Option<End> {
        Some(End { at, ok, exit_code })
    }

    /// Registered a day before `at`, last pinged with a success at `at`.
    fn pinged(at: i64) -> Seen {
        Seen {
            registered_at: at - 24 * HOUR,
            last_end: end(at, true, None),
            ..Seen::default()
        }
    }

    /// 2026-11-23T03:00:00Z.
    const T0: i64 = 1_795_402_800_000;

    fn check(spec: &Spec, seen: &Seen, now: i64, expected: State) -> Status {
        let status = status(spec, seen, now);
        assert_eq!(status.state, expected, "at {}: {status:?}", at(now));
        status
    }

    #[test]
    fn t0_is_what_it_says() {
        assert_eq!(T0, t("2026-11-23T03:00:00Z"));
    }

    #[test]
    fn boundaries_of_due_and_down() {
        let seen = pinged(T0);
        let (due, down) = (T0 + HOUR, T0 + HOUR + 30 * MIN);
        for (now, expected) in [
            (T0, State::Up),
            (due, State::Up),
            (due + 1, State::Late),
            (down, State::Late),
            (down + 1, State::Down),
        ] {
            let status = check(&hourly(), &seen, now, expected);
            assert_eq!((status.due_at, status.down_at), (Some(due), Some(down)));
        }
    }

    #[test]
    fn never_pinged_is_new_then_late_then_down_from_registration() {
        let seen = Seen {
            registered_at: T0,
            ..Seen::default()
        };
        check(&hourly(), &seen, T0 + HOUR, State::New);
        let late = check(&hourly(), &seen, T0 + HOUR + 1, State::Late);
        assert_eq!(
            late.reason,
            "never pinged (registered 2026-11-23T03:00:00Z); due 2026-11-23T04:00:00Z, grace 30m"
        );
        check(&hourly(), &seen, T0 + HOUR + 30 * MIN + 1, State::Down);
        let new = check(&hourly(), &seen, T0, State::New);
        assert_eq!(new.reason, "never pinged; first due 2026-11-23T04:00:00Z");
    }

    #[test]
    fn success_then_failure_is_down_with_the_exit_code() {
        let seen = Seen {
            last_start: Some(T0),
            last_end: end(T0 + MIN, false, Some(1)),
            ..pinged(T0)
        };
        let status = check(&hourly(), &seen, T0 + 2 * MIN, State::Down);
        assert_eq!(status.failed, end(T0 + MIN, false, Some(1)));
        assert_eq!(
            status.reason,
            "last run failed with exit code 1 at 2026-11-23T03:01:00Z"
        );
        let unknown = Seen {
            last_end: end(T0, false, None),
            ..pinged(T0)
        };
        let status = check(&hourly(), &unknown, T0, State::Down);
        assert_eq!(status.reason, "last run failed at 2026-11-23T03:00:00Z");
    }

    #[test]
    fn failure_then_success_is_up() {
        let seen = Seen {
            last_start: Some(T0 - HOUR),
            ..pinged(T0)
        };
        let status = check(&hourly(), &seen, T0 + MIN, State::Up);
        assert_eq!(status.failed, None);
        assert_eq!(
            status.reason,
            "last ping 2026-11-23T03:00:00Z; next due 2026-11-23T04:00:00Z"
        );
    }

    #[test]
    fn late_reason_names_last_ping_due_and_grace() {
        let seen = pinged(T0 + 5_000);
        let status = check(
            &nightly_utc(),
            &seen,
            T0 + 24 * HOUR + 30 * MIN,
            State::Late,
        );
        assert_eq!(
            status.reason,
            "no ping since 2026-11-23T03:00:05Z; due 2026-11-24T03:00:00Z, grace 1h"
        );
    }

    #[test]
    fn start_without_end_is_running_then_overrun() {
        // 2026-11-23T03:00:00Z is 04:00 in Berlin; the run started at 03:00 local.
        let start = T0 - HOUR;
        let seen = Seen {
            last_start: Some(start),
            last_end: end(start - 24 * HOUR, true, None),
            ..pinged(0)
        };
        let running = check(&nightly_berlin(), &seen, start + HOUR, State::Up);
        assert_eq!(running.running_since, Some(start));
        assert_eq!(
            (running.overrun, running.overrun_at),
            (false, Some(start + 2 * HOUR))
        );
        assert!(
            running
                .reason
                .ends_with("; started 1h ago and has not finished"),
            "{}",
            running.reason
        );
        let at_limit = check(&nightly_berlin(), &seen, start + 2 * HOUR, State::Up);
        assert!(!at_limit.overrun);
        let overrun = check(&nightly_berlin(), &seen, start + 2 * HOUR + 1, State::Up);
        assert!(overrun.overrun);
        assert_eq!(
            overrun.reason,
            "last ping 2026-11-23T02:00:00Z; next due 2026-11-24T02:00:00Z; \
             started 2h ago and has not finished (max runtime 2h)"
        );
    }

    #[test]
    fn start_after_failure_is_running_not_failed() {
        let seen = Seen {
            last_start: Some(T0 + HOUR),
            last_end: end(T0, false, Some(2)),
            ..pinged(0)
        };
        let status = check(&hourly(), &seen, T0 + HOUR + MIN, State::Up);
        assert_eq!(
            (status.failed, status.running_since),
            (None, Some(T0 + HOUR))
        );
        assert_eq!(status.overrun_at, None);
    }

    #[test]
    fn end_at_the_same_instant_as_start_is_not_running() {
        let seen = Seen {
            last_start: Some(T0),
            last_end: end(T0, false, None),
            ..pinged(0)
        };
        let status = check(&hourly(), &seen, T0, State::Down);
        assert_eq!(status.running_since, None);
    }

    #[test]
    fn paused_reports_nothing_else() {
        let failing = Seen {
            paused: true,
            last_start: Some(T0 - HOUR),
            last_end: end(T0, false, Some(1)),
            ..pinged(0)
        };
        let running = Seen {
            paused: true,
            last_start: Some(T0),
            ..pinged(T0 - HOUR)
        };
        for seen in [failing, running] {
            let status = check(&nightly_berlin(), &seen, T0 + 100 * HOUR, State::Paused);
            assert_eq!(
                status,
                Status {
                    state: State::Paused,
                    due_at: None,
                    down_at: None,
                    running_since: None,
                    overrun: false,
                    overrun_at: None,
                    failed: None,
                    next_check: None,
                    reason: "paused".into()
                }
            );
        }
    }

    #[test]
    fn resumed_at_restarts_the_clock() {
        let mut seen = pinged(T0);
        check(&hourly(), &seen, T0 + 5 * HOUR + 30 * MIN, State::Down);
        seen.resumed_at = Some(T0 + 5 * HOUR);
        let up = check(&hourly(), &seen, T0 + 5 * HOUR + 30 * MIN, State::Up);
        assert_eq!(up.due_at, Some(T0 + 6 * HOUR));
        assert_eq!(
            up.reason,
            "resumed at 2026-11-23T08:00:00Z; next due 2026-11-23T09:00:00Z"
        );
        let late = check(&hourly(), &seen, T0 + 6 * HOUR + 1, State::Late);
        assert!(
            late.reason
                .starts_with("no ping since resumed at 2026-11-23T08:00:00Z;"),
            "{}",
            late.reason
        );
    }

    #[test]
    fn berlin_spring_forward_due_at_three_local() {
        // Pinged at 03:00:05 CET (UTC+1) the day before clocks go forward.
        let seen = pinged(t("2026-03-28T02:00:05Z"));
        let due = t("2026-03-29T01:00:00Z"); // 03:00 CEST (UTC+2).
        let status = check(&nightly_berlin(), &seen, due, State::Up);
        assert_eq!(status.due_at, Some(due));
        check(&nightly_berlin(), &seen, due + 1, State::Late);
        check(&nightly_berlin(), &seen, due + HOUR + 1, State::Down);
    }

    #[test]
    fn berlin_fall_back_due_at_three_local() {
        // Pinged at 03:00:05 CEST (UTC+2) the day before clocks go back.
        let seen = pinged(t("2026-10-24T01:00:05Z"));
        let due = t("2026-10-25T02:00:00Z"); // 03:00 CET (UTC+1).
        let status = check(&nightly_berlin(), &seen, due, State::Up);
        assert_eq!(status.due_at, Some(due));
        check(&nightly_berlin(), &seen, due + 1, State::Late);
    }

    #[test]
    fn next_check_is_the_next_pending_boundary() {
        let (due, down) = (T0 + HOUR, T0 + HOUR + 30 * MIN);
        let seen = pinged(T0);
        let running = Seen {
            last_start: Some(T0),
            ..pinged(T0 - MIN)
        };
        let mut quick = hourly();
        quick.max_runtime = Some(Duration::from_secs(600));
        let failed = Seen {
            last_end: end(T0, false, Some(1)),
            ..pinged(0)
        };
        for (spec, seen, now, expected) in [
            (&hourly(), &seen, T0, Some(due)),
            (&hourly(), &seen, due, Some(down)),
            (&hourly(), &seen, down, None),
            (&quick, &running, T0, Some(T0 + 10 * MIN)),
            (&quick, &running, T0 + 10 * MIN, Some(due)),
            (&hourly(), &failed, T0, Some(due)),
        ] {
            assert_eq!(
                status(spec, seen, now).next_check,
                expected,
                "at {}",
                at(now)
            );
        }
    }

    #[test]
    fn state_names_round_trip() {
        for state in [
            State::New,
            State::Up,
            State::Late,
            State::Down,
            State::Paused,
        ] {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        assert_eq!(State::Late.as_str(), "late");
        assert_eq!(State::parse("LATE"), None);
    }
}
