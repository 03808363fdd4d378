//! The decision lifecycle in SQL: an event's plan and its ops, how it moves
//! on as ops end (`advance`), how it ends, and what decisions read — the
//! context document, pauses and the breaker.
//!
//! An event is open while `ended_at` is NULL, and an open event holds its
//! rule and key. Its `plan` (targets, op spec, verification, `max_parallel`)
//! is fixed when it is decided, so a reload never changes an event in flight.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::events::event_of;
use super::sql::{args, Db, Value as Arg};
use super::{add_timeline, agent_known, queue_op, EventRow, EVENT_COLUMNS};
use crate::error::{Error, Result, StoreContext};
use crate::event::{
    is_failure, progress, OpState, Progress, VerifyKind, FINAL_STATES, HELD_STATES,
};

/// How long an hour is, for `max_runs_per_hour` (ms).
const HOUR_MS: i64 = 3_600_000;

/// An op just queued: who should be told.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Op id.
    pub id: i64,
    /// Event id.
    pub event_id: i64,
    /// Its agent.
    pub agent: String,
    /// Its spec.
    pub spec: Value,
}

/// Stores the plan of an event: `{targets, spec, verify, max_parallel}`.
pub fn set_plan<'a>(db: impl Into<Db<'a>>, event_id: i64, plan: &Value) -> Result<()> {
    let plan = plan.to_string();
    db.into()
        .execute(
            "UPDATE event SET plan = ?2 WHERE id = ?1",
            args![event_id, &plan],
        )
        .context("storing plan")?;
    Ok(())
}

fn plan_of(db: Db, event_id: i64) -> Result<Value> {
    let plan: Option<String> = db
        .query_row(
            "SELECT plan FROM event WHERE id = ?1",
            args![event_id],
            |r| r.get(0),
        )
        .context("reading plan")?
        .ok_or_else(|| no_event(event_id))?;
    Ok(plan
        .and_then(|p| serde_json::from_str(&p).ok())
        .unwrap_or(Value::Null))
}

/// The error of an event that is not there (it was asked for by id).
fn no_event(event_id: i64) -> Error {
    Error::Failed(format!("store: event {event_id} not found"))
}

/// Runs an event: queues one op per target of its plan (the first
/// `max_parallel` queued, the rest waiting) and marks it started. Returns the
/// ops queued now.
pub fn start_event<'a>(db: impl Into<Db<'a>>, event_id: i64, now: i64) -> Result<Vec<Queued>> {
    let db = db.into();
    let plan = plan_of(db, event_id)?;
    let targets: Vec<String> = plan["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let max_parallel = plan["max_parallel"].as_u64().unwrap_or(1).max(1) as usize;
    let runbook = plan["spec"]["runbook"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let old: String = db
        .query_row(
            "SELECT state FROM event WHERE id = ?1",
            args![event_id],
            |r| r.get(0),
        )
        .context("reading event")?
        .ok_or_else(|| no_event(event_id))?;
    db.execute(
        "UPDATE event SET state = 'queued', started_at = ?2, deadline = NULL, updated_at = ?2 WHERE id = ?1",
        args![event_id, now],
    )
    .context("starting event")?;
    // A new event is created queued: it was never announced.
    let was = (old != "queued").then_some(old.as_str());
    super::note_event(db, event_id, was, "queued", false, now)?;
    let mut queued = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let state = if i < max_parallel {
            OpState::Queued
        } else {
            OpState::Waiting
        };
        let op_id = queue_op(db, event_id, target, "run", state, &plan["spec"], now)?;
        let msg = if state == OpState::Queued {
            format!("op {op_id}: runbook {runbook} queued for agent {target}")
        } else {
            format!("op {op_id}: runbook {runbook} for agent {target} waits its turn (max_parallel = {max_parallel})")
        };
        add_timeline(db, event_id, "queued", &msg, now)?;
        if !agent_known(db, target)? {
            let msg = format!("agent {target} has never polled heal; the op waits for it up to [server] dispatch_timeout");
            add_timeline(db, event_id, "warning", &msg, now)?;
        }
        if state == OpState::Queued {
            queued.push(Queued {
                id: op_id,
                event_id,
                agent: target.clone(),
                spec: plan["spec"].clone(),
            });
        }
    }
    Ok(queued)
}

/// Whether any alert joined to the event still fires.
pub fn alerts_firing<'a>(db: impl Into<Db<'a>>, event_id: i64) -> Result<bool> {
    db.into()
        .query_row(ALERTS_FIRING, args![event_id], |r| r.get(0))
        .map(|firing| firing.unwrap_or(false))
        .context("reading alerts of event")
}

/// The event's few alerts first, each then found by its key. `CROSS JOIN`
/// fixes that order: left to itself SQLite walks every firing alert through
/// `alert_status` and looks each up in `event_alert`, a cost that grows with
/// the alerts firing (18 ms a call with 95,600 firing; resolves made two).
const ALERTS_FIRING: &str = "SELECT EXISTS (SELECT 1 FROM event_alert ea CROSS JOIN alert a ON a.fingerprint = ea.fingerprint
     WHERE ea.event_id = ?1 AND a.status = 'firing')";

/// Moves an event on after one of its ops changed: derives its state
/// (`event::progress`), releases waiting targets, cancels the rest after a
/// failure, starts verification, ends it. Returns the agents that got new ops.
pub fn advance<'a>(db: impl Into<Db<'a>>, event_id: i64, now: i64) -> Result<Vec<String>> {
    let db = db.into();
    let (state, mode, ended): (String, String, Option<i64>) = db
        .query_row(
            "SELECT state, mode, ended_at FROM event WHERE id = ?1",
            args![event_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .context("reading event")?
        .ok_or_else(|| no_event(event_id))?;
    if ended.is_some() || mode != "live" || HELD_STATES.contains(&state.as_str()) {
        return Ok(Vec::new());
    }
    let ops: Vec<(i64, String, String, OpState)> = db
        .query(
            "SELECT id, agent, kind, state FROM op WHERE event_id = ?1 ORDER BY id",
            args![event_id],
            |r| {
                let s: String = r.get(3)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    OpState::parse(&s).unwrap_or(OpState::Lost),
                ))
            },
        )
        .context("reading ops")?;
    let plan = plan_of(db, event_id)?;
    let verify_kind = match plan["verify"]["kind"].as_str() {
        Some("resolved_within") => VerifyKind::ResolvedWithin,
        Some("run") => VerifyKind::Run,
        _ => VerifyKind::None,
    };
    let run: Vec<OpState> = ops.iter().filter(|o| o.2 == "run").map(|o| o.3).collect();
    let verify: Vec<OpState> = ops
        .iter()
        .filter(|o| o.2 == "verify")
        .map(|o| o.3)
        .collect();
    let max_parallel = plan["max_parallel"]
        .as_u64()
        .map_or(run.len(), |n| n as usize);
    let next = progress(&Progress {
        run: &run,
        verify: &verify,
        verify_kind,
        max_parallel,
        alerts_firing: alerts_firing(db, event_id)?,
    });
    let mut woke = Vec::new();
    if next.cancel_waiting {
        let n = db
            .execute(
                "UPDATE op SET state = 'cancelled', finished_at = ?2, error = 'an earlier target failed, so this one was not started' WHERE event_id = ?1 AND state = 'waiting'",
                args![event_id, now],
            )
            .context("cancelling waiting ops")?;
        add_timeline(
            db,
            event_id,
            "cancelled",
            &format!("{n} waiting targets not started: an earlier target failed"),
            now,
        )?;
    }
    let waiting: Vec<&(i64, String, String, OpState)> = ops
        .iter()
        .filter(|o| o.3 == OpState::Waiting)
        .take(next.release)
        .collect();
    for (op_id, agent, _, _) in waiting {
        db.execute(
            "UPDATE op SET state = 'queued', created_at = ?2 WHERE id = ?1 AND state = 'waiting'",
            args![*op_id, now],
        )
        .context("releasing op")?;
        add_timeline(
            db,
            event_id,
            "queued",
            &format!("op {op_id}: its turn came; queued for agent {agent}"),
            now,
        )?;
        woke.push(agent.clone());
    }
    if next.start_verify {
        let mut agents: Vec<&String> = ops.iter().filter(|o| o.2 == "run").map(|o| &o.1).collect();
        agents.dedup();
        let spec = &plan["verify"]["spec"];
        for agent in agents {
            let op_id = queue_op(db, event_id, agent, "verify", OpState::Queued, spec, now)?;
            add_timeline(
                db,
                event_id,
                "verify",
                &format!("op {op_id}: verification check queued for agent {agent}"),
                now,
            )?;
            woke.push(agent.clone());
        }
    }
    if next.state != state {
        let is_final = FINAL_STATES.contains(&next.state);
        let deadline = next
            .await_resolution
            .then(|| now + plan["verify"]["within_ms"].as_i64().unwrap_or(0));
        db.execute(
            "UPDATE event SET state = ?2, updated_at = ?3, ended_at = ?4, reason = ?5, deadline = coalesce(?6, deadline) WHERE id = ?1",
            args![event_id, next.state, now, is_final.then_some(now), next.reason.as_deref(), deadline],
        )
        .context("updating event state")?;
        super::note_event(db, event_id, Some(&state), next.state, is_final, now)?;
        let mut line = format!("event is {} (was {state})", next.state);
        if let Some(r) = &next.reason {
            line.push_str(&format!(": {r}"));
        }
        if let Some(d) = deadline {
            line.push_str(&format!(
                ": the alert must resolve within {}",
                crate::time::format_duration(std::time::Duration::from_millis(
                    (d - now).max(0) as u64
                ))
            ));
        }
        add_timeline(db, event_id, "state", &line, now)?;
    }
    Ok(woke)
}

/// Ends an open event in `state` with its reason; ops not yet handed out are
/// cancelled. Returns false if it had already ended.
pub fn end_event<'a>(
    db: impl Into<Db<'a>>,
    event_id: i64,
    state: &str,
    reason: &str,
    now: i64,
) -> Result<bool> {
    let db = db.into();
    let old: Option<String> = db
        .query_row(
            "SELECT state FROM event WHERE id = ?1 AND ended_at IS NULL",
            args![event_id],
            |r| r.get(0),
        )
        .context("reading event")?;
    let Some(old) = old else {
        return Ok(false);
    };
    db.execute(
        "UPDATE event SET state = ?2, ended_at = ?3, updated_at = ?3, reason = ?4 WHERE id = ?1",
        args![event_id, state, now, reason],
    )
    .context("ending event")?;
    let why = format!("the event ended: {reason}");
    db.execute(
        "UPDATE op SET state = 'cancelled', finished_at = ?2, error = ?3 WHERE event_id = ?1 AND state IN ('waiting', 'queued')",
        args![event_id, now, &why],
    )
    .context("cancelling ops")?;
    super::note_event(db, event_id, Some(&old), state, true, now)?;
    let line = if old == state {
        format!("event {state} is closed: {reason}")
    } else {
        format!("event is {state} (was {old}): {reason}")
    };
    add_timeline(db, event_id, "state", &line, now)?;
    Ok(true)
}

/// Open events in one state, oldest first, optionally only those whose deadline has passed.
pub fn open_events<'a>(
    db: impl Into<Db<'a>>,
    state: &str,
    deadline_before: Option<i64>,
) -> Result<Vec<EventRow>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM event WHERE state = ?1 AND ended_at IS NULL AND (deadline < ?2 OR ?2 IS NULL) ORDER BY id LIMIT 1000"
    );
    db.into()
        .query(&sql, args![state, deadline_before], event_of)
        .context("reading open events")
}

/// One event's row.
pub fn event_by_id<'a>(db: impl Into<Db<'a>>, id: i64) -> Result<Option<EventRow>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM event WHERE id = ?1");
    db.into()
        .query_row(&sql, args![id], event_of)
        .context("reading event")
}

/// Records who approved or rejected an event.
pub fn set_decided_by<'a>(db: impl Into<Db<'a>>, id: i64, by: &str) -> Result<()> {
    db.into()
        .execute(
            "UPDATE event SET decided_by = ?2 WHERE id = ?1",
            args![id, by],
        )
        .context("recording approver")?;
    Ok(())
}

/// Whether the last timeline line of an event is of this kind (to say a thing once).
pub fn last_timeline_kind<'a>(db: impl Into<Db<'a>>, event_id: i64) -> Result<Option<String>> {
    db.into()
        .query_row(
            "SELECT kind FROM timeline WHERE event_id = ?1 ORDER BY id DESC LIMIT 1",
            args![event_id],
            |r| r.get(0),
        )
        .context("reading timeline")
}

// ---- what decisions read ----------------------------------------------------

fn firing_alerts(db: Db) -> Result<Vec<Value>> {
    db.query(
        "SELECT fingerprint, source, name, status, labels, annotations, starts_at FROM alert WHERE status = 'firing' ORDER BY last_seen DESC LIMIT 10000",
        args![],
        |r| {
            let labels: String = r.get(4)?;
            let annotations: String = r.get(5)?;
            Ok(json!({
                "fingerprint": r.get::<String>(0)?, "source": r.get::<String>(1)?, "name": r.get::<String>(2)?,
                "status": r.get::<String>(3)?,
                "labels": serde_json::from_str::<Value>(&labels).unwrap_or(Value::Null),
                "annotations": serde_json::from_str::<Value>(&annotations).unwrap_or(Value::Null),
                "starts_at": r.get::<Option<i64>>(6)?,
            }))
        },
    )
    .context("reading firing alerts")
}

fn events_json(db: Db, sql_rest: &str, args: &[Arg]) -> Result<Vec<Value>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM event {sql_rest}");
    let rows = db.query(&sql, args, event_of).context("reading events")?;
    Ok(rows.iter().map(event_json).collect())
}

fn event_json(e: &EventRow) -> Value {
    let mut v = serde_json::to_value(e).expect("event rows serialize");
    v["open"] = json!(e.ended_at.is_none());
    v
}

/// The context document guards see and `GET /api/v1/context` serves:
/// firing `alerts`, open and recent `events` (ended within `recent_ms`),
/// `agents`, active `pauses`, the `breaker`, and `heartbeats` and `probes`.
pub fn context<'a>(db: impl Into<Db<'a>>, recent_ms: i64, now: i64) -> Result<Value> {
    let db = db.into();
    let events = events_json(
        db,
        "WHERE ended_at IS NULL OR ended_at >= ?1 OR started_at >= ?1 ORDER BY id DESC LIMIT 5000",
        args![now - recent_ms],
    )?;
    let agents: Vec<Value> = super::list_agents(db)?
        .into_iter()
        .map(|a| json!({"id": a.id, "tags": a.tags, "hostname": a.hostname, "version": a.version, "last_seen": a.last_seen, "running_ops": a.running_ops}))
        .collect();
    Ok(json!({
        "now": now,
        "alerts": firing_alerts(db)?,
        "events": events,
        "agents": agents,
        "heartbeats": super::heartbeats(db)?
            .into_iter()
            .map(|h| json!({"name": h.name, "state": h.state, "since": h.state_since, "paused": h.paused, "last_start": h.last_start, "last_end_at": h.last_end_at, "last_end_ok": h.last_end_ok}))
            .collect::<Vec<_>>(),
        "probes": super::probes(db)?
            .into_iter()
            .map(|p| json!({"name": p.name, "state": p.state, "since": p.state_since, "last_at": p.last_at, "last_ok": p.last_ok, "last_detail": p.last_detail}))
            .collect::<Vec<_>>(),
        "pauses": pauses(db, true, now)?,
        "breaker": breaker(db, now)?,
    }))
}

/// A key's open and recent events, for each decision. Pinned to
/// `event_key_started`: SQLite would otherwise walk `event_rule` for its
/// order, every event of the rule, to save sorting the key's few.
const KEY_EVENTS: &str = "INDEXED BY event_key_started WHERE rule = ?1 AND key = ?2 AND mode = ?3 AND (ended_at IS NULL OR started_at >= ?4) ORDER BY id DESC LIMIT 1000";

/// A key's last event that ran, for each decision (pinned like `KEY_EVENTS`).
const KEY_LAST_RAN: &str = "INDEXED BY event_key_started WHERE rule = ?1 AND key = ?2 AND mode = ?3 AND ended_at IS NOT NULL AND started_at IS NOT NULL ORDER BY ended_at DESC LIMIT 1";

/// The part of the context one decision needs: the events of a rule and key
/// in one mode (open ones, those that ran since `since`, and the last one that
/// ran), active pauses and the breaker. `rules::facts` reads it like the full one.
pub fn key_context<'a>(
    db: impl Into<Db<'a>>,
    rule: &str,
    key: &str,
    mode: &str,
    since: i64,
    now: i64,
) -> Result<Value> {
    let db = db.into();
    let mut events = events_json(db, KEY_EVENTS, args![rule, key, mode, since])?;
    let last = events_json(db, KEY_LAST_RAN, args![rule, key, mode])?;
    for e in last {
        if !events.iter().any(|x| x["id"] == e["id"]) {
            events.push(e);
        }
    }
    Ok(json!({
        "events": events,
        "pauses": pauses(db, true, now)?,
        "breaker": breaker(db, now)?,
    }))
}

// ---- the breaker ------------------------------------------------------------

/// Live runs since a time (through `event_live_started`: dry runs are not walked).
const RUNS_SINCE: &str = "SELECT count(*) FROM event WHERE mode = 'live' AND started_at >= ?1";

/// Live events ended since a time, newest first (through `event_live_ended`).
const LAST_ENDED: &str = "SELECT state FROM event WHERE ended_at > ?1 AND mode = 'live' AND started_at IS NOT NULL ORDER BY ended_at DESC LIMIT 10000";

/// The breaker: state, reason, who changed it when, and what it counts since
/// it last closed: runs in the last hour and failed events in a row.
pub fn breaker<'a>(db: impl Into<Db<'a>>, now: i64) -> Result<Value> {
    let db = db.into();
    let (state, reason, changed_at, changed_by): (String, String, i64, String) = db
        .query_row(
            "SELECT state, reason, changed_at, changed_by FROM breaker WHERE id = 1",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .context("reading breaker")?
        .ok_or_else(|| Error::Failed("store: the breaker's row is missing".into()))?;
    let since = changed_at;
    let runs: i64 = db
        .query_row(RUNS_SINCE, args![since.max(now - HOUR_MS)], |r| r.get(0))
        .context("counting runs")?
        .unwrap_or_default();
    // The events that ended since, newest first, up to the first that did not fail.
    let mut failed_in_row = 0;
    db.scan(LAST_ENDED, args![since], |r| {
        let failed = is_failure(&r.get::<String>(0)?);
        failed_in_row += usize::from(failed);
        Ok(failed)
    })
    .context("counting failures")?;
    Ok(json!({
        "state": state, "reason": reason, "changed_at": changed_at, "changed_by": changed_by,
        "runs_last_hour": runs, "failed_in_row": failed_in_row,
    }))
}

/// Opens or closes the breaker; returns false if it already was in that state.
pub fn set_breaker<'a>(
    db: impl Into<Db<'a>>,
    state: &str,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<bool> {
    let n = db
        .into()
        .execute(
            "UPDATE breaker SET state = ?1, reason = ?2, changed_at = ?3, changed_by = ?4 WHERE id = 1 AND state != ?1",
            args![state, reason, now, by],
        )
        .context("setting breaker")?;
    Ok(n == 1)
}

// ---- pauses -----------------------------------------------------------------

/// A pause to add.
#[derive(Debug, Clone)]
pub struct NewPause {
    /// Covers this runbook.
    pub runbook: Option<String>,
    /// Covers this agent.
    pub target: Option<String>,
    /// Covers alerts matching this JMESPath expression.
    pub matches: Option<String>,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// Until (ms).
    pub until: i64,
}

/// Adds a pause and returns it.
pub fn add_pause<'a>(db: impl Into<Db<'a>>, p: &NewPause, now: i64) -> Result<Value> {
    let db = db.into();
    let id = db
        .insert(
            "INSERT INTO pause (runbook, target, match, reason, created_by, created_at, until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            args![p.runbook.as_deref(), p.target.as_deref(), p.matches.as_deref(), &p.reason, &p.by, now, p.until],
        )
        .context("adding pause")?;
    pause_rows(db, "id = ?1", args![id], now)?
        .pop()
        .ok_or_else(|| Error::Failed(format!("store: pause {id} not found after adding it")))
}

fn pause_rows(db: Db, sql_where: &str, args: &[Arg], now: i64) -> Result<Vec<Value>> {
    let sql = format!(
        "SELECT id, runbook, target, match, reason, created_by, created_at, until, resumed_at, resumed_by FROM pause WHERE {sql_where}"
    );
    db.query(&sql, args, |r| {
        let until: i64 = r.get(7)?;
        let resumed: Option<i64> = r.get(8)?;
        Ok(json!({
            "id": r.get::<i64>(0)?, "runbook": r.get::<Option<String>>(1)?, "target": r.get::<Option<String>>(2)?,
            "match": r.get::<Option<String>>(3)?, "reason": r.get::<String>(4)?, "created_by": r.get::<String>(5)?,
            "created_at": r.get::<i64>(6)?, "until": until, "resumed_at": resumed, "resumed_by": r.get::<Option<String>>(9)?,
            "active": resumed.is_none() && until > now,
        }))
    })
    .context("reading pauses")
}

/// Pauses, newest first: only active ones, or also those ended in the last day.
pub fn pauses<'a>(db: impl Into<Db<'a>>, active_only: bool, now: i64) -> Result<Vec<Value>> {
    let db = db.into();
    if active_only {
        pause_rows(
            db,
            "resumed_at IS NULL AND until > ?1 ORDER BY id DESC LIMIT 1000",
            args![now],
            now,
        )
    } else {
        pause_rows(
            db,
            "coalesce(resumed_at, until) > ?1 ORDER BY id DESC LIMIT 1000",
            args![now - 24 * HOUR_MS],
            now,
        )
    }
}

/// Ends a pause early; `None` if there is no such pause, false if it had already ended.
pub fn resume_pause<'a>(
    db: impl Into<Db<'a>>,
    id: i64,
    by: &str,
    now: i64,
) -> Result<Option<bool>> {
    let db = db.into();
    let exists: Option<i64> = db
        .query_row("SELECT id FROM pause WHERE id = ?1", args![id], |r| {
            r.get(0)
        })
        .context("reading pause")?;
    if exists.is_none() {
        return Ok(None);
    }
    let n = db
        .execute(
            "UPDATE pause SET resumed_at = ?2, resumed_by = ?3 WHERE id = ?1 AND resumed_at IS NULL AND until > ?2",
            args![id, now, by],
        )
        .context("resuming pause")?;
    Ok(Some(n == 1))
}

// ---- decisions --------------------------------------------------------------

/// Decisions since `since` counted by outcome (every outcome present, zeros included).
pub fn decision_counts<'a>(
    db: impl Into<Db<'a>>,
    since: i64,
    rule: Option<&str>,
) -> Result<BTreeMap<String, i64>> {
    let mut counts: BTreeMap<String, i64> = crate::rules::Outcome::ALL
        .iter()
        .map(|o| (o.as_str().to_string(), 0))
        .collect();
    let rows = db
        .into()
        .query(DECISION_COUNTS, args![since, rule], |r| {
            Ok((r.get::<String>(0)?, r.get::<i64>(1)?))
        })
        .context("counting decisions")?;
    counts.extend(rows);
    Ok(counts)
}

/// Decisions since a time by outcome, from `decision_at` alone (it covers them).
const DECISION_COUNTS: &str = "SELECT outcome, count(*) FROM decision WHERE at >= ?1 AND (rule = ?2 OR ?2 IS NULL) GROUP BY outcome";

/// Decisions newest first, filtered.
pub fn list_decisions<'a>(
    db: impl Into<Db<'a>>,
    since: i64,
    rule: Option<&str>,
    outcome: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>> {
    db.into()
        .query(
            "SELECT id, at, fingerprint, rule, outcome, reason, event_id FROM decision
             WHERE at >= ?1 AND (rule = ?2 OR ?2 IS NULL) AND (outcome = ?3 OR ?3 IS NULL) ORDER BY id DESC LIMIT ?4",
            args![since, rule, outcome, limit],
            |r| {
                Ok(json!({
                    "id": r.get::<i64>(0)?, "at": r.get::<i64>(1)?, "fingerprint": r.get::<String>(2)?,
                    "rule": r.get::<Option<String>>(3)?, "outcome": r.get::<String>(4)?, "reason": r.get::<String>(5)?,
                    "event_id": r.get::<Option<i64>>(6)?,
                }))
            },
        )
        .context("listing decisions")
}

/// The targets of an event's plan.
pub fn event_targets<'a>(db: impl Into<Db<'a>>, event_id: i64) -> Result<Vec<String>> {
    Ok(plan_of(db.into(), event_id)?["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect())
}

/// Whether any open event is deferred.
pub fn any_deferred<'a>(db: impl Into<Db<'a>>) -> Result<bool> {
    db.into()
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM event WHERE state = 'deferred' AND ended_at IS NULL)",
            args![],
            |r| r.get(0),
        )
        .map(|found| found.unwrap_or(false))
        .context("looking for deferred events")
}

#[cfg(test)]
mod tests {
    use super::{ALERTS_FIRING, DECISION_COUNTS, KEY_EVENTS, KEY_LAST_RAN, LAST_ENDED, RUNS_SINCE};
    use crate::store::testing::{db, plan};
    use crate::store::EVENT_COLUMNS;

    #[test]
    fn the_breaker_counts_live_events_without_walking_dry_runs() {
        let conn = db();
        assert_eq!(
            plan(&conn, RUNS_SINCE, &[]),
            ["SEARCH event USING COVERING INDEX event_live_started (started_at>?)"]
        );
        assert_eq!(
            plan(&conn, LAST_ENDED, &[]),
            ["SEARCH event USING INDEX event_live_ended (ended_at>?)"]
        );
    }

    #[test]
    fn a_decision_reads_its_keys_events_through_the_key_index() {
        let conn = db();
        for rest in [KEY_EVENTS, KEY_LAST_RAN] {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM event {rest}");
            let plan = plan(&conn, &sql, &[&"rule", &"key", &"live"]);
            assert!(
                plan[0].starts_with(
                    "SEARCH event USING INDEX event_key_started (rule=? AND key=? AND mode=?"
                ),
                "{plan:?}"
            );
        }
    }

    #[test]
    fn decisions_are_counted_from_the_index_alone() {
        assert_eq!(
            plan(&db(), DECISION_COUNTS, &[]),
            [
                "SEARCH decision USING COVERING INDEX decision_at (at>?)",
                "USE TEMP B-TREE FOR GROUP BY"
            ]
        );
    }

    #[test]
    fn an_events_alerts_are_read_by_key_not_by_walking_the_firing_ones() {
        assert_eq!(
            plan(&db(), ALERTS_FIRING, &[]),
            [
                "SCAN CONSTANT ROW",
                "SCALAR SUBQUERY 1",
                "SEARCH ea USING PRIMARY KEY (event_id=?)",
                "SEARCH a USING PRIMARY KEY (fingerprint=?)"
            ]
        );
    }
}

#[cfg(test)]
mod results {
    use crate::event::OpState;
    use crate::store::testing::db;
    use crate::store::{
        claim_ops, create_event, event_detail, record_result, set_plan, start_event, NewEvent,
        StepResult,
    };
    use rusqlite::Connection;

    /// An event with one op handed to agent web-1 at 1,000 ms, not yet
    /// confirmed started: (event id, op id).
    fn dispatched(conn: &Connection) -> (i64, i64) {
        let event = create_event(
            conn,
            &NewEvent {
                rule: "r",
                runbook: "fix",
                key: "web-1",
                fingerprint: "f",
                state: "queued",
                mode: "live",
                started_at: Some(1_000),
                deadline: None,
            },
            1_000,
        )
        .unwrap();
        let plan = serde_json::json!({"targets": ["web-1"], "spec": {"runbook": "fix"}, "max_parallel": 1});
        set_plan(conn, event, &plan).unwrap();
        start_event(conn, event, 1_000).unwrap();
        let claimed = claim_ops(conn, "web-1", "i-1", 1, 60_000, 1_000).unwrap();
        (event, claimed[0].id)
    }

    fn step(name: &str, exit_code: i32, duration_ms: u64) -> StepResult {
        StepResult {
            name: name.into(),
            exit_code: Some(exit_code),
            signal: None,
            timed_out: false,
            duration_ms,
            output: String::new(),
            output_bytes: 0,
            truncated: false,
            skipped: false,
        }
    }

    #[test]
    fn a_result_without_its_start_puts_the_start_on_the_timeline() {
        let conn = db();
        let (event, op) = dispatched(&conn);
        let steps = [step("check", 0, 200), step("fix", 0, 300)];
        record_result(&conn, op, event, OpState::Succeeded, None, &steps, 3_000).unwrap();
        let d = event_detail(&conn, event).unwrap().unwrap();
        let kinds: Vec<&str> = d.timeline.iter().map(|t| t.kind.as_str()).collect();
        let started = kinds.iter().position(|k| *k == "started");
        let result = kinds.iter().position(|k| *k == "result");
        assert!(
            started.is_some() && started < result,
            "start before result: {kinds:?}"
        );
        let entry = &d.timeline[started.unwrap()];
        assert_eq!(
            entry.at, 2_500,
            "the result's time less what the steps took"
        );
        assert!(
            entry
                .message
                .contains(&format!("op {op} started on agent web-1")),
            "{}",
            entry.message
        );
        assert_eq!(d.ops[0].started_at, Some(2_500));
        // A duplicate result adds nothing.
        record_result(&conn, op, event, OpState::Succeeded, None, &steps, 4_000).unwrap();
        let again = event_detail(&conn, event).unwrap().unwrap().timeline;
        assert_eq!(again.iter().filter(|t| t.kind == "started").count(), 1);
    }

    #[test]
    fn an_op_that_never_ran_has_no_start_and_its_error_reads_plainly() {
        let conn = db();
        let (event, op) = dispatched(&conn);
        let why = "agent web-1 refuses runbook \"fix\": not in its --allow list (deploy-*)";
        record_result(&conn, op, event, OpState::Failed, Some(why), &[], 3_000).unwrap();
        let d = event_detail(&conn, event).unwrap().unwrap();
        assert!(!d.timeline.iter().any(|t| t.kind == "started"));
        let result = d.timeline.iter().find(|t| t.kind == "result").unwrap();
        assert_eq!(result.message, format!("op {op} failed: {why}"));
        assert_eq!(d.ops[0].started_at, None);
    }
}
