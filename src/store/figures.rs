//! What `/metrics` reads from the store at scrape time: how many of each
//! thing there are now.
//!
//! Every count walks an index range that holds only what is open or pending
//! (open events, unfinished ops, firing alerts, pending and failed
//! deliveries, unrouted notifications) or a table with one row per
//! definition (agents, heartbeats, probes, the breaker), never the history
//! that retention keeps: a scrape costs the same with a million finished
//! events. All of it is read in one read transaction, one snapshot.

use super::sql::{args, Column, Db, Value};
use crate::error::{Result, StoreContext};

/// Counts for the gauges of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Open events (`ended_at` NULL) by state.
    pub events: Vec<(String, i64)>,
    /// Unfinished ops (waiting, queued, dispatched, running) by state.
    pub ops: Vec<(String, i64)>,
    /// Alerts firing now.
    pub alerts_firing: i64,
    /// Agents that polled within `agent_down_after`.
    pub agents_up: i64,
    /// Agents silent for longer than `agent_down_after`.
    pub agents_down: i64,
    /// Heartbeats by state, as of the checker's last sweep.
    pub heartbeats: Vec<(String, i64)>,
    /// Every probe that has run, with its state.
    pub probes: Vec<(String, String)>,
    /// The probes registered through the API, by name.
    pub api_probes: Vec<String>,
    /// Deliveries waiting to go out.
    pub deliveries_pending: i64,
    /// Deliveries given up (kept until retention deletes them).
    pub deliveries_failed: i64,
    /// Notifications recorded but not yet routed to their channels.
    pub notifications_unrouted: i64,
    /// Whether the safety breaker is open.
    pub breaker_open: bool,
}

// The event_open index (migration 5) holds only open events.
const EVENTS: &str =
    "SELECT state, count(*) FROM event WHERE ended_at IS NULL GROUP BY state ORDER BY state";
const OPS: &str = "SELECT state, count(*) FROM op WHERE state IN ('waiting', 'queued', 'dispatched', 'running') GROUP BY state ORDER BY state";
const FIRING: &str = "SELECT count(*) FROM alert WHERE status = 'firing'";
const AGENTS: &str =
    "SELECT count(*), coalesce(sum(CASE WHEN last_seen >= ?1 THEN 1 ELSE 0 END), 0) FROM agent";
const HEARTBEATS: &str = "SELECT state, count(*) FROM heartbeat GROUP BY state ORDER BY state";
const PROBES: &str = "SELECT name, state FROM probe ORDER BY name";
const API_PROBES: &str = "SELECT name FROM api_probe ORDER BY name";
const DELIVERIES: &str = "SELECT count(*) FROM delivery WHERE state = ?1";
const UNROUTED: &str = "SELECT count(*) FROM notification WHERE routed_at IS NULL";
const BREAKER: &str = "SELECT state = 'open' FROM breaker WHERE id = 1";

/// Reads the figures; `agent_down_after` in ms, as `[server] agent_down_after`.
pub fn figures<'a>(db: impl Into<Db<'a>>, now: i64, agent_down_after: i64) -> Result<Figures> {
    db.into().snapshot(WHAT, |db| {
        let (agents, agents_up): (i64, i64) = db
            .query_row(AGENTS, args![now - agent_down_after], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .context(WHAT)?
            .unwrap_or_default();
        Ok(Figures {
            events: pairs(db, EVENTS)?,
            ops: pairs(db, OPS)?,
            alerts_firing: count(db, FIRING, args![])?,
            agents_up,
            agents_down: agents - agents_up,
            heartbeats: pairs(db, HEARTBEATS)?,
            probes: pairs(db, PROBES)?,
            api_probes: db.query(API_PROBES, args![], |r| r.get(0)).context(WHAT)?,
            deliveries_pending: count(db, DELIVERIES, args!["pending"])?,
            deliveries_failed: count(db, DELIVERIES, args!["failed"])?,
            notifications_unrouted: count(db, UNROUTED, args![])?,
            breaker_open: count(db, BREAKER, args![])? == 1,
        })
    })
}

const WHAT: &str = "reading figures for /metrics";

fn pairs<T: Column>(db: Db, sql: &str) -> Result<Vec<(String, T)>> {
    db.query(sql, args![], |r| Ok((r.get(0)?, r.get(1)?)))
        .context(WHAT)
}

fn count(db: Db, sql: &str, args: &[Value]) -> Result<i64> {
    Ok(db
        .query_row(sql, args, |r| r.get(0))
        .context(WHAT)?
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::testing::{db, plan};

    fn check_plan(conn: &rusqlite::Connection, sql: &str, expected: &str) {
        assert_eq!(plan(conn, sql, &[]).join("; "), expected, "{sql}");
    }

    #[test]
    fn history_is_read_through_indexes_of_what_is_open() {
        let conn = &db();
        check_plan(conn, EVENTS, "SCAN event USING INDEX event_open");
        check_plan(
            conn,
            OPS,
            "SEARCH op USING COVERING INDEX op_state (state=?)",
        );
        check_plan(
            conn,
            FIRING,
            "SEARCH alert USING COVERING INDEX alert_status (status=?)",
        );
        check_plan(
            conn,
            DELIVERIES,
            "SEARCH delivery USING COVERING INDEX delivery_state (state=?)",
        );
        check_plan(
            conn,
            UNROUTED,
            "SCAN notification USING INDEX notification_unrouted",
        );
        check_plan(
            conn,
            BREAKER,
            "SEARCH breaker USING INTEGER PRIMARY KEY (rowid=?)",
        );
        // One row per definition: small tables, read whole.
        check_plan(conn, AGENTS, "SCAN agent");
        check_plan(
            conn,
            HEARTBEATS,
            "SCAN heartbeat; USE TEMP B-TREE FOR GROUP BY",
        );
        check_plan(conn, PROBES, "SCAN probe");
        check_plan(
            conn,
            API_PROBES,
            "SCAN api_probe USING COVERING INDEX sqlite_autoindex_api_probe_1",
        );
    }

    #[test]
    fn counts_what_is_open_now() {
        let conn = db();
        conn.execute_batch(
            "INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at, ended_at) VALUES
                ('r', 'b', 'k1', 'f1', 'running', 'live', 1, 1, NULL),
                ('r', 'b', 'k2', 'f2', 'escalated', 'live', 1, 1, NULL),
                ('r', 'b', 'k3', 'f3', 'escalated', 'live', 1, 1, 5),
                ('r', 'b', 'k4', 'f4', 'succeeded', 'live', 1, 1, 5);
             INSERT INTO op (event_id, agent, state, spec, created_at) VALUES
                (1, 'a', 'running', '{}', 1), (1, 'a', 'succeeded', '{}', 1);
             INSERT INTO agent (id, instance, tags, allow, version, hostname, first_seen, last_seen) VALUES
                ('a', 'i', '[]', '[]', 'v', 'h', 0, 9000), ('b', 'i', '[]', '[]', 'v', 'h', 0, 100);
             INSERT INTO heartbeat (name, origin, def, registered_at, state, state_since) VALUES
                ('h1', 'config', '{}', 0, 'down', 0), ('h2', 'config', '{}', 0, 'up', 0), ('h3', 'config', '{}', 0, 'up', 0);
             INSERT INTO probe (name, state, fails_in_row, oks_in_row, state_since) VALUES ('web', 'down', 3, 0, 0);
             INSERT INTO notification (kind, subject, at) VALUES ('probe.down', 'web', 1);
             INSERT INTO delivery (notification_id, channel, state, created_at, next_at) VALUES
                (1, 'chat', 'pending', 1, 1), (1, 'pager', 'failed', 1, 1), (1, 'mail', 'sent', 1, 1);
             UPDATE breaker SET state = 'open';",
        )
        .unwrap();
        let pairs = |v: &[(&str, i64)]| -> Vec<(String, i64)> {
            v.iter().map(|(s, n)| (s.to_string(), *n)).collect()
        };
        let expected = Figures {
            events: pairs(&[("escalated", 1), ("running", 1)]),
            ops: pairs(&[("running", 1)]),
            alerts_firing: 0,
            agents_up: 1,
            agents_down: 1,
            heartbeats: pairs(&[("down", 1), ("up", 2)]),
            probes: vec![("web".into(), "down".into())],
            api_probes: Vec::new(),
            deliveries_pending: 1,
            deliveries_failed: 1,
            notifications_unrouted: 1,
            breaker_open: true,
        };
        assert_eq!(figures(&conn, 10_000, 5_000).unwrap(), expected);
    }
}
