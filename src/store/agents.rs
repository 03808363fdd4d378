//! Forgetting agents: a retired host's agent, removed by hand or once it has
//! been silent for `[server] forget_agents_after`. An agent that polls again
//! later registers again, as a new one does.

use rusqlite::{params, Connection};

use crate::error::{Result, StoreContext};

/// Op states that have not ended: an agent with such an op is not forgotten
/// (the op would wait for it forever, or its result would find no agent).
const UNFINISHED: &str = "('waiting', 'queued', 'dispatched', 'running')";

/// An op of an agent that has not ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedOp {
    /// Op id.
    pub id: i64,
    /// Its event.
    pub event_id: i64,
    /// Its state.
    pub state: String,
}

/// The ops of agent `id` that have not ended, oldest first (at most 20).
pub fn unfinished_ops(conn: &Connection, id: &str) -> Result<Vec<UnfinishedOp>> {
    let sql = format!(
        "SELECT id, event_id, state FROM op WHERE agent = ?1 AND state IN {UNFINISHED} ORDER BY id LIMIT 20"
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .context("reading an agent's ops")?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(UnfinishedOp {
                id: r.get(0)?,
                event_id: r.get(1)?,
                state: r.get(2)?,
            })
        })
        .context("reading an agent's ops")?;
    rows.collect::<std::result::Result<_, _>>()
        .context("reading an agent's ops")
}

/// Removes agent `id`; whether it was known. Its ops stay, as history.
pub fn forget_agent(conn: &Connection, id: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM agent WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .context("forgetting an agent")?;
    Ok(n > 0)
}

/// Whether heal knows agent `id` (it has polled and was not forgotten since).
pub fn agent_known(conn: &Connection, id: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM agent WHERE id = ?1")
        .and_then(|mut s| s.exists([id]))
        .context("reading an agent")
}

/// Agents that last polled before `before` (ms) and have no op still to end.
pub fn silent_agents(conn: &Connection, before: i64) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT a.id FROM agent a WHERE a.last_seen < ?1
         AND NOT EXISTS (SELECT 1 FROM op WHERE op.agent = a.id AND op.state IN {UNFINISHED})
         ORDER BY a.id LIMIT 1000"
    );
    let mut stmt = conn.prepare_cached(&sql).context("finding silent agents")?;
    let rows = stmt
        .query_map(params![before], |r| r.get(0))
        .context("finding silent agents")?;
    rows.collect::<std::result::Result<_, _>>()
        .context("finding silent agents")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::db;

    fn setup() -> Connection {
        let conn = db();
        conn.execute_batch(
            "INSERT INTO agent (id, instance, tags, allow, version, hostname, first_seen, last_seen) VALUES
                ('old', 'i', '[]', '[]', 'v', 'h', 0, 100), ('busy', 'i', '[]', '[]', 'v', 'h', 0, 100),
                ('new', 'i', '[]', '[]', 'v', 'h', 0, 9000);
             INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at)
                VALUES ('r', 'b', 'k', 'f', 'running', 'live', 1, 1);
             INSERT INTO op (event_id, agent, state, spec, created_at) VALUES
                (1, 'busy', 'running', '{}', 1), (1, 'old', 'succeeded', '{}', 1), (1, 'busy', 'queued', '{}', 1);",
        )
        .unwrap();
        conn
    }

    #[test]
    fn only_silent_agents_without_unfinished_ops_expire() {
        let conn = setup();
        assert_eq!(silent_agents(&conn, 5000).unwrap(), ["old"]);
        assert_eq!(silent_agents(&conn, 10_000).unwrap(), ["new", "old"]);
        assert!(silent_agents(&conn, 100).unwrap().is_empty());
    }

    #[test]
    fn an_agents_unfinished_ops_are_named_and_forgetting_keeps_its_ops() {
        let conn = setup();
        let ops = unfinished_ops(&conn, "busy").unwrap();
        let states: Vec<&str> = ops.iter().map(|o| o.state.as_str()).collect();
        assert_eq!(states, ["running", "queued"]);
        assert!(unfinished_ops(&conn, "old").unwrap().is_empty());
        assert!(forget_agent(&conn, "old").unwrap());
        assert!(!forget_agent(&conn, "old").unwrap());
        let ops: i64 = conn
            .query_row("SELECT count(*) FROM op WHERE agent = 'old'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(ops, 1);
    }
}
