//! The pure up/down bookkeeping behind `fail_after` and `recover_after`.

/// What is known of a probe's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Not checked yet, or not enough results to say.
    #[default]
    Unknown,
    /// Passing.
    Up,
    /// Failed `fail_after` times in a row and has not recovered.
    Down,
}

/// A probe's state and its current streaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// The current state.
    pub state: State,
    /// Failures since the last success.
    pub fails_in_row: u32,
    /// Successes since the last failure.
    pub oks_in_row: u32,
}

/// A change of state worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The probe went down.
    WentDown,
    /// The probe was down and is up again.
    Recovered,
}

impl State {
    /// The state as stored and shown: "unknown", "up", "down".
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
        }
    }

    /// Parses what `as_str` gives.
    pub fn parse(text: &str) -> Result<State, String> {
        match text {
            "unknown" => Ok(State::Unknown),
            "up" => Ok(State::Up),
            "down" => Ok(State::Down),
            _ => Err(format!(
                "bad probe state {text:?} (expected \"unknown\", \"up\" or \"down\")"
            )),
        }
    }
}

/// The severity of a probe in `state` after a run at `level`: while down,
/// the level of its last failing run (a passing run while it recovers keeps
/// `previous`, critical if none); None when it is not down.
pub fn severity(
    state: State,
    level: super::Level,
    previous: Option<super::Level>,
) -> Option<super::Level> {
    use super::Level;
    match (state, level) {
        (State::Down, Level::Ok) => Some(previous.unwrap_or(Level::Critical)),
        (State::Down, level) => Some(level),
        _ => None,
    }
}

/// Applies one result: Down after `fail_after` failures in a row (from
/// Unknown or Up, with `WentDown`); Up after `recover_after` successes in a
/// row from Down (with `Recovered`); Unknown→Up on the first success with no
/// change. Thresholds of 0 count as 1.
pub fn step(
    prev: Counts,
    ok: bool,
    fail_after: u32,
    recover_after: u32,
) -> (Counts, Option<Change>) {
    let mut next = prev;
    if ok {
        next.oks_in_row = prev.oks_in_row.saturating_add(1);
        next.fails_in_row = 0;
    } else {
        next.fails_in_row = prev.fails_in_row.saturating_add(1);
        next.oks_in_row = 0;
    }
    let change = match (prev.state, ok) {
        (State::Unknown, true) => {
            next.state = State::Up;
            None
        }
        (State::Down, true) if next.oks_in_row >= recover_after.max(1) => {
            next.state = State::Up;
            Some(Change::Recovered)
        }
        (State::Unknown | State::Up, false) if next.fails_in_row >= fail_after.max(1) => {
            next.state = State::Down;
            Some(Change::WentDown)
        }
        _ => None,
    };
    (next, change)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn states_round_trip() {
        for state in [State::Unknown, State::Up, State::Down] {
            assert_eq!(State::parse(state.as_str()), Ok(state));
        }
        assert!(State::parse("Up").unwrap_err().contains("\"up\""));
        assert_eq!(Counts::default().state, State::Unknown);
    }

    /// Applies `results` (fail_after 3, recover_after 2) from `start`;
    /// checks the final state and the changes, one per result.
    fn check_steps(start: State, results: &[bool], end: State, changes: &[Option<Change>]) {
        let mut counts = Counts {
            state: start,
            ..Counts::default()
        };
        let mut seen = Vec::new();
        for &ok in results {
            let (next, change) = step(counts, ok, 3, 2);
            counts = next;
            seen.push(change);
        }
        assert_eq!(counts.state, end, "{results:?}");
        assert_eq!(seen, changes, "{results:?}");
    }

    #[test]
    fn step_transitions() {
        use Change::*;
        // Unknown: the first success is Up without a change; failures count.
        check_steps(State::Unknown, &[true], State::Up, &[None]);
        check_steps(
            State::Unknown,
            &[false, false],
            State::Unknown,
            &[None, None],
        );
        check_steps(
            State::Unknown,
            &[false, false, false],
            State::Down,
            &[None, None, Some(WentDown)],
        );
        // Up: a success resets the failure streak.
        check_steps(
            State::Up,
            &[false, false, true, false, false],
            State::Up,
            &[None; 5],
        );
        check_steps(
            State::Up,
            &[false, false, false, false],
            State::Down,
            &[None, None, Some(WentDown), None],
        );
        // Down: recovery needs two successes in a row.
        check_steps(State::Down, &[true, false, true], State::Down, &[None; 3]);
        check_steps(
            State::Down,
            &[true, true, true],
            State::Up,
            &[None, Some(Recovered), None],
        );
    }

    #[test]
    fn severity_follows_the_last_failing_run_while_down() {
        use crate::probe::Level::*;
        assert_eq!(severity(State::Down, Warning, None), Some(Warning));
        assert_eq!(
            severity(State::Down, Critical, Some(Warning)),
            Some(Critical)
        );
        assert_eq!(
            severity(State::Down, Warning, Some(Critical)),
            Some(Warning)
        );
        assert_eq!(severity(State::Down, Ok, Some(Warning)), Some(Warning));
        assert_eq!(severity(State::Down, Ok, None), Some(Critical));
        assert_eq!(severity(State::Up, Warning, Some(Warning)), None);
        assert_eq!(severity(State::Unknown, Critical, None), None);
    }

    #[test]
    fn step_counts_streaks() {
        let start = Counts::default();
        let (c, _) = step(start, false, 3, 2);
        assert_eq!((c.fails_in_row, c.oks_in_row), (1, 0));
        let (c, _) = step(c, true, 3, 2);
        assert_eq!((c.fails_in_row, c.oks_in_row), (0, 1));
        // Thresholds of 0 act as 1.
        let (c, change) = step(Counts::default(), false, 0, 0);
        assert_eq!((c.state, change), (State::Down, Some(Change::WentDown)));
        let (c, change) = step(c, true, 0, 0);
        assert_eq!((c.state, change), (State::Up, Some(Change::Recovered)));
    }
}
