//! What happens to events after their decision, outside intake: approval
//! and rejection by a person, and the sweeper's tick — expired approvals,
//! verification deadlines, deferred events re-checked, the breaker's count of
//! failures in a row. Each runs inside one store job.

use crate::store::sql::Db;
use serde_json::Value;

use crate::alert::Alert;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rules;
use crate::store::{self, EventRow};
use crate::time::format_duration;

/// What a lifecycle job did: agents with new ops, and lines to log after the commit.
#[derive(Default)]
pub struct Done {
    /// Agents to wake: they have new queued ops.
    pub woke: Vec<String>,
    /// Log lines.
    pub log: Vec<(log::Level, String)>,
}

/// Approves (runs once) or rejects (cancels) an event waiting for approval.
pub fn approve(
    conn: Db<'_>,
    id: i64,
    approve: bool,
    by: &str,
    note: &str,
    now: i64,
) -> Result<(Done, EventRow)> {
    let event = store::event_by_id(conn, id)?
        .ok_or_else(|| Error::request(404, format!("no event {id}")))?;
    let verb = if approve { "approve" } else { "reject" };
    if event.state != "pending_approval" || event.ended_at.is_some() {
        let why = event
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Err(Error::request(
            409,
            format!("cannot {verb} event {id}: it is {}{why}; only events in pending_approval can be approved or rejected", event.state),
        ));
    }
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(": {note}")
    };
    store::set_decided_by(conn, id, by)?;
    let mut done = Done::default();
    if approve {
        store::add_timeline(
            conn,
            id,
            "approved",
            &format!("approved by {by}{note}; runs now"),
            now,
        )?;
        let queued = store::start_event(conn, id, now)?;
        done.woke = queued.into_iter().map(|q| q.agent).collect();
        done.log.push((
            log::Level::Info,
            format!(
                "event {id} approved by {by}; runbook {} runs",
                event.runbook
            ),
        ));
    } else {
        store::end_event(
            conn,
            id,
            "cancelled",
            &format!("rejected by {by}{note}; nothing ran"),
            now,
        )?;
        done.log
            .push((log::Level::Info, format!("event {id} rejected by {by}")));
    }
    let event = store::event_by_id(conn, id)?.expect("the event was read above");
    Ok((done, event))
}

/// Cancels an open event, whatever it waits for: ops not yet handed to an
/// agent are cancelled with it. A step already running on an agent runs to
/// its end (the agent protocol has no way to stop it); its result is still
/// recorded on the timeline, and changes nothing.
pub fn cancel(conn: Db<'_>, id: i64, by: &str, note: &str, now: i64) -> Result<(Done, EventRow)> {
    let event = store::event_by_id(conn, id)?
        .ok_or_else(|| Error::request(404, format!("no event {id}")))?;
    if event.ended_at.is_some() {
        let why = event
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Err(Error::request(
            409,
            format!(
                "cannot cancel event {id}: it already ended {}{why}",
                event.state
            ),
        ));
    }
    let mut reason = format!("cancelled by {by}");
    if !note.is_empty() {
        reason.push_str(&format!(": {note}"));
    }
    let running = store::browse::ops_in_flight(conn, Some(id))?;
    if !running.is_empty() {
        let ops: Vec<String> = running
            .iter()
            .map(|o| format!("op {} on {}", o.id, o.agent))
            .collect();
        reason.push_str(&format!(
            "; already handed out, {} runs to its end",
            ops.join(", ")
        ));
    }
    store::end_event(conn, id, "cancelled", &reason, now)?;
    let mut done = Done::default();
    done.log.push((
        log::Level::Info,
        format!("event {id} ({}) cancelled by {by}", event.runbook),
    ));
    let event = store::event_by_id(conn, id)?.expect("the event was read above");
    Ok((done, event))
}

/// The sweeper's lifecycle work: every second everything below; in between
/// (`deferred_only`), only the re-check of deferred events. Ops whose lease
/// or deadline passed are declared lost only once `agents_reconnected`: a
/// deadline that passed while heal itself was down is no agent's fault, and
/// an agent that kept running the op delivers its result once it is back.
pub fn tick(
    conn: Db<'_>,
    config: &Config,
    deferred_only: bool,
    agents_reconnected: bool,
    now: i64,
) -> Result<Done> {
    let mut done = Done::default();
    if !deferred_only {
        for e in store::open_events(conn, "pending_approval", Some(now))? {
            let reason = format!(
                "approval expired: nobody approved within {}; nothing ran",
                since(e.created_at, now)
            );
            store::end_event(conn, e.id, "cancelled", &reason, now)?;
            done.log.push((
                log::Level::Warn,
                format!("event {} cancelled: {reason}", e.id),
            ));
        }
        for e in store::open_events(conn, "verifying", Some(now))? {
            let reason = "verification failed: the alert was still firing when its window (verify.resolved_within) ended".to_string();
            store::end_event(conn, e.id, "failed", &reason, now)?;
            done.log
                .push((log::Level::Warn, format!("event {} failed: {reason}", e.id)));
        }
        let lost = if agents_reconnected {
            store::expire_ops(conn, config.server.dispatch_timeout.as_millis() as i64, now)?
        } else {
            0
        };
        if lost > 0 {
            done.log.push((
                log::Level::Warn,
                format!("{lost} ops declared lost (lease, deadline or queue time passed)"),
            ));
        }
        let b = store::breaker(conn, now)?;
        let failed = b["failed_in_row"].as_u64().unwrap_or(0);
        if b["state"] == "closed" && failed >= config.safety.max_failed_in_row as u64 {
            let why = format!(
                "{failed} failed events in a row, [safety] max_failed_in_row = {}",
                config.safety.max_failed_in_row
            );
            if store::set_breaker(conn, "open", &why, "heal", now)? {
                done.log.push((log::Level::Error, format!("safety breaker opened: {why}; all automation stops until `heal breaker reset`")));
            }
        }
    }
    let deferred = store::open_events(conn, "deferred", None)?;
    if !deferred.is_empty() {
        let ctx = store::context(conn, super::intake::recent_ms(config), now)?;
        for e in deferred {
            recheck(conn, config, &ctx, &e, now, &mut done)?;
        }
    }
    Ok(done)
}

/// Re-evaluates a deferred event's guard: drops it if its alert resolved or
/// its rule is gone, runs it once the guard clears (unless a pause or the
/// breaker holds it).
fn recheck(
    conn: Db<'_>,
    config: &Config,
    ctx: &Value,
    e: &EventRow,
    now: i64,
    done: &mut Done,
) -> Result<()> {
    let drop = |reason: String, done: &mut Done| -> Result<()> {
        store::end_event(conn, e.id, "cancelled", &reason, now)?;
        done.log.push((
            log::Level::Info,
            format!("event {} cancelled: {reason}", e.id),
        ));
        Ok(())
    };
    let Some(rule) = config.rules.iter().find(|r| r.name == e.rule) else {
        return drop(
            format!(
                "rule {:?} is no longer in {}; dropped, nothing ran",
                e.rule,
                config.path.display()
            ),
            done,
        );
    };
    let alert = store::get_alert(conn, &e.fingerprint)?.and_then(|a| Alert::from_stored(&a));
    let Some(alert) = alert.filter(|a| a.status == crate::alert::Status::Firing) else {
        return drop(
            "the alert is no longer firing; dropped, nothing ran".into(),
            done,
        );
    };
    let doc = rules::guard_doc(&alert, ctx);
    if let Some(unless) = &rule.unless {
        if unless.truthy(&doc).unwrap_or(true) {
            return Ok(());
        }
    }
    let targets: Vec<String> = store::event_targets(conn, e.id)?;
    let hold = |why: String| -> Result<()> {
        if store::last_timeline_kind(conn, e.id)?.as_deref() != Some("held") {
            store::add_timeline(
                conn,
                e.id,
                "held",
                &format!("the guard cleared, but {why}; the event stays deferred"),
                now,
            )?;
        }
        Ok(())
    };
    let alert_doc = crate::config::doc(alert.doc());
    for p in ctx["pauses"].as_array().into_iter().flatten() {
        if let Some(what) = rules::pause_covers(p, &e.runbook, &targets, &alert_doc) {
            return hold(format!("pause {} ({what}) covers it", p["id"]));
        }
    }
    let b = store::breaker(conn, now)?;
    if b["state"] == "open" {
        return hold(format!(
            "the safety breaker is open ({})",
            b["reason"].as_str().unwrap_or("")
        ));
    }
    if b["runs_last_hour"].as_u64().unwrap_or(0) >= config.safety.max_runs_per_hour as u64 {
        let why = format!(
            "this would be run {} within an hour, [safety] max_runs_per_hour = {}",
            b["runs_last_hour"].as_u64().unwrap_or(0) + 1,
            config.safety.max_runs_per_hour
        );
        if store::set_breaker(conn, "open", &why, "heal", now)? {
            done.log.push((
                log::Level::Error,
                format!(
                    "safety breaker opened: {why}; all automation stops until `heal breaker reset`"
                ),
            ));
        }
        return hold(format!("the safety breaker opened: {why}"));
    }
    let guard = rule
        .unless
        .as_ref()
        .map(|u| u.source.as_str())
        .unwrap_or("(none)");
    store::add_timeline(
        conn,
        e.id,
        "guard-cleared",
        &format!("guard `unless = {guard}` no longer holds: runs now"),
        now,
    )?;
    let queued = store::start_event(conn, e.id, now)?;
    done.woke.extend(queued.into_iter().map(|q| q.agent));
    done.log.push((
        log::Level::Info,
        format!(
            "event {} ({}): guard cleared, runbook {} runs",
            e.id, e.rule, e.runbook
        ),
    ));
    Ok(())
}

fn since(t: i64, now: i64) -> String {
    format_duration(std::time::Duration::from_millis((now - t).max(0) as u64))
}
