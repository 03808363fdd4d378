//! Agent-side probes (`[[probe]] on`): each (probe, agent) pair's current
//! run, handed out with the agent's polls like ops. A pair's counting
//! state and results live under the probe named `PROBE@AGENT` in `probe`
//! and `probe_result`, beside the server's probes.

use super::sql::{args, Db};
use crate::error::{Result, StoreContext};
use crate::probe;

/// The name of a pair's state and results: `PROBE@AGENT`. Names and agent
/// ids never hold an '@', so it reads back unambiguously (`split_subject`).
pub fn check_subject(probe: &str, agent: &str) -> String {
    format!("{probe}@{agent}")
}

/// The probe a subject is of: `PROBE` of `PROBE@AGENT`, or a server probe's own name.
pub fn subject_probe(subject: &str) -> &str {
    subject.split_once('@').map_or(subject, |(p, _)| p)
}

/// Offers the run due at `due` to `agent`, unless the pair's last run is
/// still offered or running (its lease unexpired): true when offered.
pub fn offer_check<'a>(
    db: impl Into<Db<'a>>,
    probe: &str,
    agent: &str,
    due: i64,
    lease_until: i64,
    now: i64,
) -> Result<bool> {
    let n = db
        .into()
        .execute(
            "INSERT INTO agent_check (probe, agent, due, handed, lease_until) VALUES (?1, ?2, ?3, 0, ?4)
             ON CONFLICT (probe, agent) DO UPDATE SET due = excluded.due, handed = 0,
                 lease_until = excluded.lease_until
             WHERE agent_check.lease_until IS NULL OR agent_check.lease_until <= ?5",
            args![probe, agent, due, lease_until, now],
        )
        .context("offering a check to an agent")?;
    Ok(n > 0)
}

/// Takes the runs offered to `agent` whose lease has not passed, as
/// (probe, due): they are handed to the poll that asked.
pub fn claim_checks<'a>(
    db: impl Into<Db<'a>>,
    agent: &str,
    now: i64,
) -> Result<Vec<(String, i64)>> {
    db.into()
        .query(
            "UPDATE agent_check SET handed = 1
             WHERE agent = ?1 AND handed = 0 AND lease_until > ?2
             RETURNING probe, due",
            args![agent, now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("handing checks to an agent")
}

/// Puts runs back as offered: the poll they were handed to could not be
/// answered.
pub fn unclaim_checks<'a>(
    db: impl Into<Db<'a>>,
    agent: &str,
    runs: &[(String, i64)],
) -> Result<()> {
    let db = db.into();
    for (probe, due) in runs {
        db.execute(
            "UPDATE agent_check SET handed = 0 WHERE probe = ?1 AND agent = ?2 AND due = ?3 AND lease_until IS NOT NULL",
            args![probe, agent, *due],
        )
        .context("offering a check again")?;
    }
    Ok(())
}

/// What became of a result an agent sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The result of the run handed out: record it.
    Fresh,
    /// Its result was already recorded (the agent sent it again).
    Duplicate,
    /// A later run was offered since; this result is too old to count.
    Stale,
    /// The pair has no run handed out for this agent.
    Unknown,
}

/// Ends the run of `probe` due at `due` on `agent` as its result arrives.
pub fn finish_check<'a>(
    db: impl Into<Db<'a>>,
    probe: &str,
    agent: &str,
    due: i64,
) -> Result<Finished> {
    let db = db.into();
    let row: Option<(i64, bool, Option<i64>)> = db
        .query_row(
            "SELECT due, handed, lease_until FROM agent_check WHERE probe = ?1 AND agent = ?2",
            args![probe, agent],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .context("reading a check's run")?;
    let Some((current, handed, lease)) = row else {
        return Ok(Finished::Unknown);
    };
    if due < current {
        return Ok(Finished::Stale);
    }
    if due > current || !handed {
        return Ok(Finished::Unknown);
    }
    if lease.is_none() {
        return Ok(Finished::Duplicate);
    }
    db.execute(
        "UPDATE agent_check SET lease_until = NULL WHERE probe = ?1 AND agent = ?2 AND due = ?3",
        args![probe, agent, due],
    )
    .context("ending a check's run")?;
    Ok(Finished::Fresh)
}

/// Every (probe, agent) pair with a run on record.
pub fn check_pairs<'a>(db: impl Into<Db<'a>>) -> Result<Vec<(String, String)>> {
    db.into()
        .query(
            "SELECT probe, agent FROM agent_check ORDER BY probe, agent",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("listing agent checks")
}

/// Forgets a pair: its run, state and results (its agent stopped matching,
/// was forgotten, or the probe is gone).
pub fn forget_check<'a>(db: impl Into<Db<'a>>, probe: &str, agent: &str) -> Result<()> {
    let db = db.into();
    let subject = check_subject(probe, agent);
    db.execute(
        "DELETE FROM agent_check WHERE probe = ?1 AND agent = ?2",
        args![probe, agent],
    )
    .context("forgetting an agent check")?;
    db.execute("DELETE FROM probe_result WHERE probe = ?1", args![&subject])
        .context("forgetting an agent check's results")?;
    db.execute("DELETE FROM probe WHERE name = ?1", args![&subject])
        .context("forgetting an agent check's state")?;
    Ok(())
}

/// Sets a pair's state to unknown, its counts to zero and its detail to
/// `why` (its agent is down), unless it is unknown already: true when it
/// changed. No result is recorded: nothing ran.
pub fn set_check_unknown<'a>(
    db: impl Into<Db<'a>>,
    subject: &str,
    why: &str,
    now: i64,
) -> Result<bool> {
    let unknown = probe::State::Unknown.as_str();
    let n = db
        .into()
        .execute(
            "INSERT INTO probe (name, state, fails_in_row, oks_in_row, state_since, last_detail, severity)
             VALUES (?1, ?2, 0, 0, ?3, ?4, NULL)
             ON CONFLICT (name) DO UPDATE SET state = excluded.state, fails_in_row = 0,
                 oks_in_row = 0, state_since = excluded.state_since,
                 last_detail = excluded.last_detail, severity = NULL
             WHERE probe.state <> excluded.state",
            args![subject, unknown, now, why],
        )
        .context("marking an agent check unknown")?;
    Ok(n > 0)
}

/// Forgets every pair of a probe (it was deleted).
pub fn forget_checks_of<'a>(db: impl Into<Db<'a>>, probe: &str) -> Result<()> {
    let db = db.into();
    let agents: Vec<String> = db
        .query(
            "SELECT agent FROM agent_check WHERE probe = ?1",
            args![probe],
            |r| r.get(0),
        )
        .context("listing a probe's agent checks")?;
    for agent in agents {
        forget_check(db, probe, &agent)?;
    }
    Ok(())
}
