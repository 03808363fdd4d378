//! Ops: queued for an agent, claimed, dispatched, started, their output,
//! their result, lost and expired.

use serde::Serialize;
use serde_json::Value;

use super::sql::{args, Db};
use super::{add_timeline, lifecycle};
use crate::error::{Result, StoreContext};
use crate::event::OpState;

/// Adds an op for an agent (`queued`, or `waiting` behind `max_parallel`) and returns its id.
pub fn queue_op<'a>(
    db: impl Into<Db<'a>>,
    event_id: i64,
    agent: &str,
    kind: &str,
    state: OpState,
    spec: &Value,
    now: i64,
) -> Result<i64> {
    db.into()
        .insert(
            "INSERT INTO op (event_id, agent, kind, state, spec, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![event_id, agent, kind, state.as_str(), &spec.to_string(), now],
        )
        .context("queuing op")
}

/// An op handed to an agent: its id and the spec JSON.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Op id.
    pub id: i64,
    /// Event id.
    pub event_id: i64,
    /// The spec as queued.
    pub spec: Value,
}

/// Hands up to `n` queued ops of an agent to one of its polls (at most once: conditional update).
pub fn claim_ops<'a>(
    db: impl Into<Db<'a>>,
    agent: &str,
    instance: &str,
    n: usize,
    lease_until: i64,
    now: i64,
) -> Result<Vec<Claimed>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let db = db.into();
    let queued: Vec<(i64, i64, String)> = db
        .query(
            "SELECT id, event_id, spec FROM op WHERE agent = ?1 AND state = 'queued' ORDER BY id LIMIT ?2",
            args![agent, n],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .context("claiming ops")?;
    let mut claimed = Vec::new();
    for (id, event_id, spec) in queued {
        if dispatch_op(db, id, event_id, agent, instance, lease_until, now)? {
            let spec = serde_json::from_str(&spec).unwrap_or(Value::Null);
            claimed.push(Claimed { id, event_id, spec });
        }
    }
    Ok(claimed)
}

/// Marks one queued op dispatched to an agent instance; false if it was no longer queued.
pub fn dispatch_op<'a>(
    db: impl Into<Db<'a>>,
    op_id: i64,
    event_id: i64,
    agent: &str,
    instance: &str,
    lease_until: i64,
    now: i64,
) -> Result<bool> {
    let db = db.into();
    let n = db
        .execute(
            "UPDATE op SET state = 'dispatched', dispatched_at = ?2, instance = ?3, lease_until = ?4 WHERE id = ?1 AND state = 'queued'",
            args![op_id, now, instance, lease_until],
        )
        .context("dispatching op")?;
    if n == 1 {
        add_timeline(
            db,
            event_id,
            "dispatched",
            &format!("op {op_id} handed to agent {agent}"),
            now,
        )?;
        lifecycle::advance(db, event_id, now)?;
    }
    Ok(n == 1)
}

/// Op fields the agent-facing routes check.
#[derive(Debug, Clone)]
pub struct OpRef {
    /// Event id.
    pub event_id: i64,
    /// Agent it belongs to.
    pub agent: String,
    /// Its state.
    pub state: OpState,
}

/// Reads an op's owner and state.
pub fn op_ref<'a>(db: impl Into<Db<'a>>, op_id: i64) -> Result<Option<OpRef>> {
    db.into()
        .query_row(
            "SELECT event_id, agent, state FROM op WHERE id = ?1",
            args![op_id],
            |r| {
                let state: String = r.get(2)?;
                Ok(OpRef {
                    event_id: r.get(0)?,
                    agent: r.get(1)?,
                    state: OpState::parse(&state).unwrap_or(OpState::Lost),
                })
            },
        )
        .context("reading op")
}

/// Moves an op to a new state if the transition is allowed; returns whether it moved.
pub fn set_op_state<'a>(
    db: impl Into<Db<'a>>,
    op_id: i64,
    from: OpState,
    to: OpState,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    if !from.can_become(to) {
        return Ok(false);
    }
    let finished = if to.is_final() { Some(now) } else { None };
    let n = db
        .into()
        .execute(
            "UPDATE op SET state = ?3, error = coalesce(?4, error), finished_at = coalesce(?5, finished_at) WHERE id = ?1 AND state = ?2",
            args![op_id, from.as_str(), to.as_str(), error, finished],
        )
        .context("updating op state")?;
    Ok(n == 1)
}

/// Records that the agent started an op, with the deadline for its result.
pub fn start_op<'a>(db: impl Into<Db<'a>>, op_id: i64, deadline: i64, now: i64) -> Result<bool> {
    let n = db
        .into()
        .execute(
            "UPDATE op SET state = 'running', started_at = ?2, deadline = ?3 WHERE id = ?1 AND state = 'dispatched'",
            args![op_id, now, deadline],
        )
        .context("starting op")?;
    Ok(n == 1)
}

/// Appends a streamed output chunk (idempotent by sequence number) and trims the op's log to `cap` bytes.
pub fn append_log<'a>(
    db: impl Into<Db<'a>>,
    op_id: i64,
    seq: i64,
    step: i64,
    data: &[u8],
    skipped: i64,
    cap: usize,
) -> Result<()> {
    let db = db.into();
    db.execute(
        "INSERT OR IGNORE INTO op_log (op_id, seq, step, data, skipped) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![op_id, seq, step, data, skipped],
    )
    .context("appending log")?;
    let total: i64 = db
        .query_row(
            "SELECT coalesce(sum(length(data)), 0) FROM op_log WHERE op_id = ?1",
            args![op_id],
            |r| r.get(0),
        )
        .context("measuring log")?
        .unwrap_or(0);
    if total as usize > cap {
        // Drop the oldest chunks until the rest fits: the tail is what matters.
        let rows: Vec<(i64, i64)> = db
            .query(
                "SELECT seq, length(data) FROM op_log WHERE op_id = ?1 ORDER BY seq",
                args![op_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .context("trimming log")?;
        let mut excess = total - cap as i64;
        for (seq, len) in rows {
            if excess <= 0 {
                break;
            }
            db.execute(
                "DELETE FROM op_log WHERE op_id = ?1 AND seq = ?2",
                args![op_id, seq],
            )
            .context("trimming log")?;
            excess -= len;
        }
    }
    Ok(())
}

/// One step's result as the agent reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StepResult {
    /// Step name.
    pub name: String,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// Whether it ran past its timeout.
    #[serde(default)]
    pub timed_out: bool,
    /// How long it ran.
    #[serde(default)]
    pub duration_ms: u64,
    /// The tail of its output (lossy UTF-8).
    #[serde(default)]
    pub output: String,
    /// Bytes printed in total.
    #[serde(default)]
    pub output_bytes: u64,
    /// Whether the output was cut to its tail.
    #[serde(default)]
    pub truncated: bool,
    /// Whether its `when` was false, so it did not run.
    #[serde(default)]
    pub skipped: bool,
}

/// Stores an op's final result unless one is stored already. Returns `None`
/// for a duplicate, else the agents that got new ops (the next targets, the
/// verification).
pub fn record_result<'a>(
    db: impl Into<Db<'a>>,
    op_id: i64,
    event_id: i64,
    state: OpState,
    error: Option<&str>,
    steps: &[StepResult],
    now: i64,
) -> Result<Option<Vec<String>>> {
    let db = db.into();
    let op = op_ref(db, op_id)?;
    let current = op.as_ref().map_or(OpState::Lost, |o| o.state);
    let already: i64 = db
        .query_row(
            "SELECT count(*) FROM op_step WHERE op_id = ?1",
            args![op_id],
            |r| r.get(0),
        )
        .context("checking result")?
        .unwrap_or(0);
    if already > 0 || current.is_final() && current != OpState::Lost {
        return Ok(None);
    }
    for (idx, s) in steps.iter().enumerate() {
        db.execute(
            "INSERT INTO op_step (op_id, idx, name, exit_code, signal, timed_out, duration_ms, output, output_bytes, truncated, skipped)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            args![op_id, idx, &s.name, s.exit_code, s.signal, s.timed_out, s.duration_ms as i64, s.output.as_bytes(), s.output_bytes as i64, s.truncated, s.skipped],
        )
        .context("storing step result")?;
    }
    db.execute("DELETE FROM op_log WHERE op_id = ?1", args![op_id])
        .context("dropping streamed log")?;
    let summary = steps
        .iter()
        .map(|s| match (s.exit_code, s.signal, s.timed_out) {
            _ if s.skipped => format!("{}: skipped", s.name),
            (_, _, true) => format!("{}: timed out", s.name),
            (Some(c), _, _) => format!("{}: exit {c}", s.name),
            (None, Some(sig), _) => format!("{}: signal {sig}", s.name),
            _ => format!("{}: did not run", s.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    if current == OpState::Lost {
        add_timeline(
            db,
            event_id,
            "late-result",
            &format!(
                "op {op_id} reported {} after it was declared lost ({summary}); it stays lost",
                state.as_str()
            ),
            now,
        )?;
        return Ok(Some(Vec::new()));
    }
    let from = if current == OpState::Dispatched {
        OpState::Dispatched
    } else {
        OpState::Running
    };
    if let (OpState::Dispatched, Some(op), false) = (current, &op, steps.is_empty()) {
        // Its steps ran, but the start acknowledgement never came: the start
        // is the result's time less what the steps took.
        let ran: u64 = steps
            .iter()
            .fold(0, |total, s| total.saturating_add(s.duration_ms));
        let started = now.saturating_sub(i64::try_from(ran).unwrap_or(i64::MAX));
        db.execute(
            "UPDATE op SET started_at = coalesce(started_at, ?2) WHERE id = ?1",
            args![op_id, started],
        )
        .context("recording op start")?;
        add_timeline(
            db,
            event_id,
            "started",
            &format!(
                "op {op_id} started on agent {} (known from its result: the start was not confirmed)",
                op.agent
            ),
            started,
        )?;
    }
    set_op_state(db, op_id, from, state, error, now)?;
    let mut line = format!("op {op_id} {}", state.as_str());
    match (summary.is_empty(), error) {
        (false, Some(e)) => line.push_str(&format!(": {summary} ({e})")),
        (false, None) => line.push_str(&format!(": {summary}")),
        (true, Some(e)) => line.push_str(&format!(": {e}")),
        (true, None) => {}
    }
    add_timeline(db, event_id, "result", &line, now)?;
    Some(lifecycle::advance(db, event_id, now)).transpose()
}

/// Declares an op lost (at most once), with the reason on the timeline.
pub fn lose_op<'a>(db: impl Into<Db<'a>>, op_id: i64, reason: &str, now: i64) -> Result<bool> {
    let db = db.into();
    let Some(op) = op_ref(db, op_id)? else {
        return Ok(false);
    };
    if !set_op_state(db, op_id, op.state, OpState::Lost, Some(reason), now)? {
        return Ok(false);
    }
    add_timeline(
        db,
        op.event_id,
        "lost",
        &format!(
            "op {op_id} on agent {} is lost: {reason}; it will not be run again",
            op.agent
        ),
        now,
    )?;
    lifecycle::advance(db, op.event_id, now)?;
    Ok(true)
}

/// Declares lost every op whose lease, deadline or queue time has passed. Returns how many.
pub fn expire_ops<'a>(db: impl Into<Db<'a>>, dispatch_timeout_ms: i64, now: i64) -> Result<usize> {
    let db = db.into();
    let rows: Vec<(i64, String)> = db
        .query(
            "SELECT id, CASE state
                    WHEN 'dispatched' THEN 'not acknowledged by the agent within its lease'
                    WHEN 'running' THEN 'no result from the agent by its deadline (steps plus grace)'
                    ELSE 'no agent claimed it in time' END
                 FROM op
                 WHERE (state = 'dispatched' AND lease_until < ?1)
                    OR (state = 'running' AND deadline < ?1)
                    OR (state = 'queued' AND created_at < ?2)
                 LIMIT 1000",
            args![now, now - dispatch_timeout_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("finding expired ops")?;
    let mut n = 0;
    for (id, reason) in rows {
        if lose_op(db, id, &reason, now)? {
            n += 1;
        }
    }
    Ok(n)
}
