//! Reads for looking around: events by any filter, page by page, the
//! decisions of one event, and the ops running now. The dashboard's pages
//! and the API's lists use them.
//!
//! Each query is built from only the filters given, so SQLite picks the
//! index that fits (`event_state`, `event_open`, `event_key_started`,
//! `event_runbook`, `event_created`, `op_agent_state`) instead of walking
//! every event; pages are cut by id (`before`), never by offset.

use serde::Serialize;
use serde_json::{json, Value};

use super::events::event_of;
use super::sql::{self, args, Db};
use super::{EventFilter, EventRow, EVENT_COLUMNS};
use crate::error::{Result, StoreContext};

/// Events newest first, filtered, at most `limit`.
pub fn find_events<'a>(
    db: impl Into<Db<'a>>,
    f: &EventFilter,
    limit: i64,
) -> Result<Vec<EventRow>> {
    let (sql, mut args) = events_query(f);
    args.push(sql::Value::Int(limit));
    db.into()
        .query(&sql, &args, event_of)
        .context("listing events")
}

/// The SQL of an event list with only the filters given, and its arguments
/// (the limit comes last).
fn events_query(f: &EventFilter) -> (String, Vec<sql::Value<'_>>) {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<sql::Value> = Vec::new();
    let marks;
    if !f.states.is_empty() {
        marks = format!("state IN ({})", vec!["?"; f.states.len()].join(", "));
        clauses.push(&marks);
        args.extend(f.states.iter().map(sql::Value::from));
    }
    let equal = [
        ("rule = ?", &f.rule),
        ("key = ?", &f.key),
        ("runbook = ?", &f.runbook),
        ("id IN (SELECT event_id FROM op WHERE agent = ?)", &f.agent),
    ];
    for (clause, value) in equal {
        if let Some(v) = value {
            clauses.push(clause);
            args.push(v.into());
        }
    }
    if f.open {
        clauses.push("ended_at IS NULL");
    }
    if let Some(since) = &f.since {
        // Ids grow with time: the first id since then bounds a walk by id,
        // found through event_created.
        clauses.push("created_at >= ? AND id >= (SELECT id FROM event WHERE created_at >= ? ORDER BY created_at LIMIT 1)");
        args.push((*since).into());
        args.push((*since).into());
    }
    if let Some(before) = &f.before {
        clauses.push("id < ?");
        args.push((*before).into());
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    // Open events are few: found through event_open and sorted, rather than
    // a walk back through every event that ended ("+id" keeps SQLite from
    // choosing the walk).
    let order = if f.open { "+id" } else { "id" };
    let sql = format!("SELECT {EVENT_COLUMNS} FROM event {filter} ORDER BY {order} DESC LIMIT ?");
    (sql, args)
}

/// The decisions that named an event (the one that made it, the alerts that
/// collapsed into it, the cooldowns it caused), oldest first, at most `limit`.
/// Found through the event's alerts, so the busiest table needs no index of
/// its own for it.
pub fn event_decisions<'a>(db: impl Into<Db<'a>>, event_id: i64, limit: i64) -> Result<Vec<Value>> {
    db.into()
        .query(
            "SELECT d.id, d.at, d.fingerprint, d.rule, d.outcome, d.reason FROM event_alert ea
             JOIN decision d ON d.fingerprint = ea.fingerprint
             WHERE ea.event_id = ?1 AND d.event_id = ?1 ORDER BY d.id LIMIT ?2",
            args![event_id, limit],
            |r| {
                Ok(json!({
                    "id": r.get::<i64>(0)?, "at": r.get::<i64>(1)?, "fingerprint": r.get::<String>(2)?,
                    "rule": r.get::<Option<String>>(3)?, "outcome": r.get::<String>(4)?, "reason": r.get::<String>(5)?,
                }))
            },
        )
        .context("reading the decisions of an event")
}

/// An op handed to an agent and not finished.
#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    /// Op id.
    pub id: i64,
    /// Its event.
    pub event_id: i64,
    /// The agent running it.
    pub agent: String,
    /// dispatched or running.
    pub state: String,
    /// The event's runbook.
    pub runbook: String,
    /// When it was handed out (ms).
    pub dispatched_at: Option<i64>,
    /// When the agent started it (ms).
    pub started_at: Option<i64>,
}

/// Ops dispatched or running, oldest first: all of them, or one event's.
pub fn ops_in_flight<'a>(db: impl Into<Db<'a>>, event_id: Option<i64>) -> Result<Vec<InFlight>> {
    db.into()
        .query(
            "SELECT op.id, op.event_id, op.agent, op.state, e.runbook, op.dispatched_at, op.started_at
             FROM op JOIN event e ON e.id = op.event_id
             WHERE op.state IN ('dispatched', 'running') AND (op.event_id = ?1 OR ?1 IS NULL)
             ORDER BY op.id LIMIT 1000",
            args![event_id],
            |r| {
            Ok(InFlight {
                id: r.get(0)?,
                event_id: r.get(1)?,
                agent: r.get(2)?,
                state: r.get(3)?,
                runbook: r.get(4)?,
                dispatched_at: r.get(5)?,
                started_at: r.get(6)?,
            })
        },
        )
        .context("reading ops in flight")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{create_event, NewEvent};

    use crate::store::testing::{db, plan};

    fn as_params<'a>(args: &'a [sql::Value]) -> Vec<&'a dyn rusqlite::ToSql> {
        args.iter().map(|a| a as &dyn rusqlite::ToSql).collect()
    }

    fn event(conn: &rusqlite::Connection, rule: &str, runbook: &str, state: &str, now: i64) -> i64 {
        let fp = format!("fp-{now}");
        let e = NewEvent {
            rule,
            runbook,
            key: &fp,
            fingerprint: &fp,
            state,
            mode: "live",
            started_at: Some(now),
            deadline: None,
        };
        create_event(conn, &e, now).unwrap()
    }

    fn ids(conn: &rusqlite::Connection, f: &EventFilter, limit: i64) -> Vec<i64> {
        find_events(conn, f, limit)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect()
    }

    #[test]
    fn filters_combine_and_pages_are_cut_by_id() {
        let conn = db();
        let a = event(&conn, "r1", "restart", "running", 1_000);
        let b = event(&conn, "r2", "clean", "pending_approval", 2_000);
        let c = event(&conn, "r1", "restart", "running", 3_000);
        conn.execute(
            "INSERT INTO op (event_id, agent, state, spec, created_at) VALUES (?1, 'web-1', 'running', '{}', 0)",
            [a],
        )
        .unwrap();
        let all = EventFilter::default();
        assert_eq!(ids(&conn, &all, 10), vec![c, b, a]);
        assert_eq!(ids(&conn, &all, 2), vec![c, b]);
        let next = EventFilter {
            before: Some(b),
            ..Default::default()
        };
        assert_eq!(ids(&conn, &next, 2), vec![a]);
        let f = EventFilter {
            states: vec!["running".into()],
            rule: Some("r1".into()),
            ..Default::default()
        };
        assert_eq!(ids(&conn, &f, 10), vec![c, a]);
        let f = EventFilter {
            runbook: Some("clean".into()),
            ..Default::default()
        };
        assert_eq!(ids(&conn, &f, 10), vec![b]);
        let f = EventFilter {
            agent: Some("web-1".into()),
            ..Default::default()
        };
        assert_eq!(ids(&conn, &f, 10), vec![a]);
        let f = EventFilter {
            since: Some(2_000),
            ..Default::default()
        };
        assert_eq!(ids(&conn, &f, 10), vec![c, b]);
        crate::store::end_event(&conn, c, "succeeded", "done", 4_000).unwrap();
        let f = EventFilter {
            open: true,
            ..Default::default()
        };
        assert_eq!(ids(&conn, &f, 10), vec![b, a]);
        assert_eq!(ops_in_flight(&conn, None).unwrap()[0].event_id, a);
        assert!(ops_in_flight(&conn, Some(b)).unwrap().is_empty());
    }

    #[test]
    fn no_filter_walks_every_event() {
        let conn = db();
        let one = |f: &dyn Fn(&mut EventFilter)| {
            let mut filter = EventFilter::default();
            f(&mut filter);
            filter
        };
        let filters = [
            one(&|f| f.states = vec!["running".into(), "queued".into()]),
            one(&|f| f.open = true),
            one(&|f| f.rule = Some("r".into())),
            one(&|f| f.runbook = Some("b".into())),
            one(&|f| f.agent = Some("web-1".into())),
            one(&|f| f.since = Some(5)),
            one(&|f| {
                f.rule = Some("r".into());
                f.key = Some("k".into());
            }),
            one(&|f| {
                f.open = true;
                f.runbook = Some("b".into());
                f.before = Some(10);
            }),
        ];
        for f in &filters {
            let (sql, mut args) = events_query(f);
            args.push(sql::Value::Int(50));
            let plan = plan(&conn, &sql, &as_params(&args));
            assert!(!plan.iter().any(|l| l == "SCAN event"), "{f:?}: {plan:?}");
        }
    }

    #[test]
    fn one_rule_or_runbook_is_listed_down_its_index_without_a_sort() {
        let conn = db();
        for (f, index) in [
            (
                EventFilter {
                    rule: Some("r".into()),
                    ..Default::default()
                },
                "SEARCH event USING INDEX event_rule (rule=?)",
            ),
            (
                EventFilter {
                    runbook: Some("b".into()),
                    ..Default::default()
                },
                "SEARCH event USING INDEX event_runbook (runbook=?)",
            ),
        ] {
            let (sql, mut args) = events_query(&f);
            args.push(sql::Value::Int(50));
            assert_eq!(plan(&conn, &sql, &as_params(&args)), [index], "{f:?}");
        }
    }
}
