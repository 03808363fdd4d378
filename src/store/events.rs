//! Events: creating one, the alerts that join it, its timeline, and the
//! reads of events for the API.

use serde::Serialize;
use serde_json::Value;

use super::sql::{args, Db, DbError, Row};
use super::{browse, get_alert, note_event, StepResult};
use crate::error::{Result, StoreContext};

/// A new event to create.
pub struct NewEvent<'a> {
    /// Rule that decided.
    pub rule: &'a str,
    /// Runbook to run.
    pub runbook: &'a str,
    /// Key.
    pub key: &'a str,
    /// Alert that started it.
    pub fingerprint: &'a str,
    /// Initial state.
    pub state: &'a str,
    /// "live" or "dry-run".
    pub mode: &'a str,
    /// When it ran, or would have (dry-run); `None` while it waits.
    pub started_at: Option<i64>,
    /// Approval expiry.
    pub deadline: Option<i64>,
}

/// Creates an open event (its alert joined to it) and returns its id.
pub fn create_event<'a>(db: impl Into<Db<'a>>, e: &NewEvent, now: i64) -> Result<i64> {
    let db = db.into();
    let id = db
        .insert(
            "INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at, started_at, deadline) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
            args![e.rule, e.runbook, e.key, e.fingerprint, e.state, e.mode, now, e.started_at, e.deadline],
        )
        .context("creating event")?;
    join_alert(db, id, e.fingerprint)?;
    // A queued event is announced by `start_event`, once its plan is set.
    if e.state != "queued" {
        note_event(db, id, None, e.state, false, now)?;
    }
    Ok(id)
}

/// Records that an alert joined an event.
pub fn join_alert<'a>(db: impl Into<Db<'a>>, event_id: i64, fingerprint: &str) -> Result<()> {
    db.into()
        .execute(
            "INSERT OR IGNORE INTO event_alert (event_id, fingerprint) VALUES (?1, ?2)",
            args![event_id, fingerprint],
        )
        .context("joining alert to event")?;
    Ok(())
}

/// Appends a line to an event's timeline.
pub fn add_timeline<'a>(
    db: impl Into<Db<'a>>,
    event_id: i64,
    kind: &str,
    message: &str,
    now: i64,
) -> Result<()> {
    db.into()
        .execute(
            "INSERT INTO timeline (event_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
            args![event_id, now, kind, message],
        )
        .context("appending to timeline")?;
    Ok(())
}

/// Counts one more firing notification on an open event; the alert joins it.
pub fn collapse_into<'a>(
    db: impl Into<Db<'a>>,
    event_id: i64,
    fingerprint: &str,
    now: i64,
) -> Result<()> {
    let db = db.into();
    db.execute(
        "UPDATE event SET hits = hits + 1, updated_at = ?2 WHERE id = ?1",
        args![event_id, now],
    )
    .context("counting hit")?;
    join_alert(db, event_id, fingerprint)
}

/// Events an alert joined that are open or ended since `since`, newest
/// first: id, state and whether it is open.
pub fn events_of_alert<'a>(
    db: impl Into<Db<'a>>,
    fingerprint: &str,
    since: i64,
) -> Result<Vec<(i64, String, bool)>> {
    db.into()
        .query(
            "SELECT e.id, e.state, e.ended_at IS NULL FROM event_alert ea JOIN event e ON e.id = ea.event_id
             WHERE ea.fingerprint = ?1 AND (e.ended_at IS NULL OR e.ended_at >= ?2) ORDER BY e.id DESC LIMIT 20",
            args![fingerprint, since],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .context("reading events of alert")
}

// ---- reads for the API ------------------------------------------------------

/// An event in a list.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// Id.
    pub id: i64,
    /// Rule.
    pub rule: String,
    /// Runbook.
    pub runbook: String,
    /// Key.
    pub key: String,
    /// Alert fingerprint.
    pub fingerprint: String,
    /// State.
    pub state: String,
    /// live or dry-run.
    pub mode: String,
    /// Firing notifications counted.
    pub hits: i64,
    /// Created (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// Ended (ms); `None` while open.
    pub ended_at: Option<i64>,
    /// When it ran (ms), or would have in dry-run.
    pub started_at: Option<i64>,
    /// Approval expiry, or verification deadline (ms).
    pub deadline: Option<i64>,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// Why it ended as it did.
    pub reason: Option<String>,
}

pub(crate) const EVENT_COLUMNS: &str =
    "id, rule, runbook, key, fingerprint, state, mode, hits, created_at, updated_at, ended_at, started_at, deadline, decided_by, reason";

/// An event's row (`EVENT_COLUMNS`) from either database.
pub(crate) fn event_of(r: &Row) -> std::result::Result<EventRow, DbError> {
    Ok(EventRow {
        id: r.get(0)?,
        rule: r.get(1)?,
        runbook: r.get(2)?,
        key: r.get(3)?,
        fingerprint: r.get(4)?,
        state: r.get(5)?,
        mode: r.get(6)?,
        hits: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        ended_at: r.get(10)?,
        started_at: r.get(11)?,
        deadline: r.get(12)?,
        decided_by: r.get(13)?,
        reason: r.get(14)?,
    })
}

/// Filters of an event list; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Any of these states.
    pub states: Vec<String>,
    /// This rule.
    pub rule: Option<String>,
    /// This key.
    pub key: Option<String>,
    /// This runbook.
    pub runbook: Option<String>,
    /// Only open events (not ended).
    pub open: bool,
    /// With an op on this agent.
    pub agent: Option<String>,
    /// Created at or after (ms).
    pub since: Option<i64>,
    /// Older than this event id (the next page).
    pub before: Option<i64>,
}

/// Events newest first, filtered (`browse::find_events`).
pub fn list_events<'a>(
    db: impl Into<Db<'a>>,
    f: &EventFilter,
    limit: i64,
) -> Result<Vec<EventRow>> {
    browse::find_events(db, f, limit)
}

/// A timeline line.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineRow {
    /// When (ms).
    pub at: i64,
    /// What kind of thing.
    pub kind: String,
    /// What happened and why.
    pub message: String,
}

/// A step of an op, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct OpRow {
    /// Op id.
    pub id: i64,
    /// Agent.
    pub agent: String,
    /// run, or verify.
    pub kind: String,
    /// State.
    pub state: String,
    /// Dispatched (ms).
    pub dispatched_at: Option<i64>,
    /// Started (ms).
    pub started_at: Option<i64>,
    /// Finished (ms).
    pub finished_at: Option<i64>,
    /// Why it failed or was lost.
    pub error: Option<String>,
    /// Step results (after the result arrived).
    pub steps: Vec<StepResult>,
    /// Output streamed so far (while running).
    pub live_output: String,
}

/// An event with its alert, timeline, decisions and ops.
#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    /// The event.
    #[serde(flatten)]
    pub event: EventRow,
    /// The alert that started it (as stored now).
    pub alert: Option<Value>,
    /// Everything that happened, in order.
    pub timeline: Vec<TimelineRow>,
    /// Ops per target.
    pub ops: Vec<OpRow>,
}

/// One event in full.
pub fn event_detail<'a>(db: impl Into<Db<'a>>, id: i64) -> Result<Option<EventDetail>> {
    let db = db.into();
    let sql = format!("SELECT {EVENT_COLUMNS} FROM event WHERE id = ?1");
    let Some(event) = db
        .query_row(&sql, args![id], event_of)
        .context("reading event")?
    else {
        return Ok(None);
    };
    let alert = get_alert(db, &event.fingerprint)?;
    let timeline = db
        .query(
            "SELECT at, kind, message FROM timeline WHERE event_id = ?1 ORDER BY id",
            args![id],
            |r| {
                Ok(TimelineRow {
                    at: r.get(0)?,
                    kind: r.get(1)?,
                    message: r.get(2)?,
                })
            },
        )
        .context("reading timeline")?;
    let mut ops: Vec<OpRow> = db
        .query(
            "SELECT id, agent, state, dispatched_at, started_at, finished_at, error, kind FROM op WHERE event_id = ?1 ORDER BY id",
            args![id],
            |r| {
                Ok(OpRow {
                    id: r.get(0)?,
                    agent: r.get(1)?,
                    state: r.get(2)?,
                    dispatched_at: r.get(3)?,
                    started_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    error: r.get(6)?,
                    kind: r.get(7)?,
                    steps: Vec::new(),
                    live_output: String::new(),
                })
            },
        )
        .context("reading ops")?;
    for op in &mut ops {
        op.steps = db
            .query(
                "SELECT name, exit_code, signal, timed_out, duration_ms, output, output_bytes, truncated, skipped FROM op_step WHERE op_id = ?1 ORDER BY idx",
                args![op.id],
                |r| {
                    let output: Vec<u8> = r.get(5)?;
                    Ok(StepResult {
                        name: r.get(0)?,
                        exit_code: r.get(1)?,
                        signal: r.get(2)?,
                        timed_out: r.get(3)?,
                        duration_ms: r.get::<i64>(4)? as u64,
                        output: String::from_utf8_lossy(&output).into_owned(),
                        output_bytes: r.get::<i64>(6)? as u64,
                        truncated: r.get(7)?,
                        skipped: r.get(8)?,
                    })
                },
            )
            .context("reading steps")?;
        let chunks: Vec<Vec<u8>> = db
            .query(
                "SELECT data FROM op_log WHERE op_id = ?1 ORDER BY seq",
                args![op.id],
                |r| r.get(0),
            )
            .context("reading log")?;
        op.live_output = String::from_utf8_lossy(&chunks.concat()).into_owned();
    }
    Ok(Some(EventDetail {
        event,
        alert,
        timeline,
        ops,
    }))
}
