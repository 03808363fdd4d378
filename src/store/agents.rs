//! Agents: what each says of itself when it polls (its row, written only
//! when something changed or it is stale by `AGENT_SEEN_RESOLUTION_MS`), the
//! list, and forgetting them: a retired host's agent, removed by hand or once
//! it has been silent for `[server] forget_agents_after`. An agent that polls
//! again later registers again, as a new one does.

use serde::Serialize;

use super::lose_op;
use super::sql::{args, Db};
use crate::error::{Result, StoreContext};

/// How stale an agent's recorded `last_seen` may be (ms): polls within it write nothing.
pub const AGENT_SEEN_RESOLUTION_MS: i64 = 5_000;

/// What an agent says about itself when it polls.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AgentHello {
    /// Random id of the agent process; a new one means the agent restarted.
    pub instance: String,
    /// Tags for `{ tags = [...] }` targets.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Runbook patterns it accepts.
    #[serde(default)]
    pub allow: Vec<String>,
    /// heal version.
    #[serde(default)]
    pub version: String,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
}

/// Records a poll; when the agent process changed, its earlier in-flight ops are lost.
pub fn touch_agent<'a>(
    db: impl Into<Db<'a>>,
    id: &str,
    hello: &AgentHello,
    now: i64,
) -> Result<()> {
    let db = db.into();
    let tags = serde_json::to_string(&hello.tags).expect("strings serialize");
    let allow = serde_json::to_string(&hello.allow).expect("strings serialize");
    type Row = (String, String, String, String, String, i64);
    let previous: Option<Row> = db
        .query_row(
            "SELECT instance, tags, allow, version, hostname, last_seen FROM agent WHERE id = ?1",
            args![id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .context("reading agent")?;
    if let Some((instance, t, a, v, h, last_seen)) = &previous {
        // A poll that changes nothing and comes soon after the last recorded
        // one writes nothing, so an idle poll costs no fsync.
        let same = *instance == hello.instance
            && *t == tags
            && *a == allow
            && *v == hello.version
            && *h == hello.hostname;
        if same && now - last_seen < AGENT_SEEN_RESOLUTION_MS {
            return Ok(());
        }
    }
    let previous = previous.map(|p| p.0);
    db.execute(
        "INSERT INTO agent (id, instance, tags, allow, version, hostname, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (id) DO UPDATE SET instance = ?2, tags = ?3, allow = ?4, version = ?5, hostname = ?6, last_seen = ?7",
        args![id, &hello.instance, &tags, &allow, &hello.version, &hello.hostname, now],
    )
    .context("recording agent poll")?;
    if previous.is_some_and(|p| p != hello.instance) {
        let stale: Vec<i64> = db
            .query(
                "SELECT id FROM op WHERE agent = ?1 AND state IN ('dispatched', 'running') AND instance != ?2",
                args![id, &hello.instance],
                |r| r.get(0),
            )
            .context("finding ops of restarted agent")?;
        for op in stale {
            lose_op(
                db,
                op,
                "the agent restarted while the op was in flight",
                now,
            )?;
        }
    }
    Ok(())
}

/// Whether an agent id has ever polled.
pub fn agent_known<'a>(db: impl Into<Db<'a>>, id: &str) -> Result<bool> {
    db.into()
        .query_row("SELECT 1 FROM agent WHERE id = ?1", args![id], |_| Ok(()))
        .map(|r| r.is_some())
        .context("reading agent")
}

/// Agents carrying all of `tags`.
pub fn agents_with_tags<'a>(db: impl Into<Db<'a>>, tags: &[String]) -> Result<Vec<String>> {
    let rows: Vec<(String, String)> = db
        .into()
        .query("SELECT id, tags FROM agent ORDER BY id", args![], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .context("reading agents")?;
    Ok(rows
        .into_iter()
        .filter(|(_, t)| {
            let have: Vec<String> = serde_json::from_str(t).unwrap_or_default();
            tags.iter().all(|t| have.contains(t))
        })
        .map(|(id, _)| id)
        .collect())
}

/// An agent as listed.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    /// Id.
    pub id: String,
    /// Current process instance.
    pub instance: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Allowed runbook patterns.
    pub allow: Vec<String>,
    /// heal version.
    pub version: String,
    /// Host name.
    pub hostname: String,
    /// First poll (ms).
    pub first_seen: i64,
    /// Last poll (ms).
    pub last_seen: i64,
    /// Ops dispatched or running on it.
    pub running_ops: i64,
    /// Ops waiting for it.
    pub queued_ops: i64,
}

/// All agents.
pub fn list_agents<'a>(db: impl Into<Db<'a>>) -> Result<Vec<AgentRow>> {
    db.into()
        .query(
            "SELECT a.id, a.instance, a.tags, a.allow, a.version, a.hostname, a.first_seen, a.last_seen,
               (SELECT count(*) FROM op WHERE op.agent = a.id AND op.state IN ('dispatched', 'running')),
               (SELECT count(*) FROM op WHERE op.agent = a.id AND op.state = 'queued')
             FROM agent a ORDER BY a.id",
            args![],
            |r| {
                Ok(AgentRow {
                    id: r.get(0)?,
                    instance: r.get(1)?,
                    tags: serde_json::from_str(&r.get::<String>(2)?).unwrap_or_default(),
                    allow: serde_json::from_str(&r.get::<String>(3)?).unwrap_or_default(),
                    version: r.get(4)?,
                    hostname: r.get(5)?,
                    first_seen: r.get(6)?,
                    last_seen: r.get(7)?,
                    running_ops: r.get(8)?,
                    queued_ops: r.get(9)?,
                })
            },
        )
        .context("listing agents")
}

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
pub fn unfinished_ops<'a>(db: impl Into<Db<'a>>, id: &str) -> Result<Vec<UnfinishedOp>> {
    let sql = format!(
        "SELECT id, event_id, state FROM op WHERE agent = ?1 AND state IN {UNFINISHED} ORDER BY id LIMIT 20"
    );
    db.into()
        .query(&sql, args![id], |r| {
            Ok(UnfinishedOp {
                id: r.get(0)?,
                event_id: r.get(1)?,
                state: r.get(2)?,
            })
        })
        .context("reading an agent's ops")
}

/// Removes agent `id`; whether it was known. Its ops stay, as history.
pub fn forget_agent<'a>(db: impl Into<Db<'a>>, id: &str) -> Result<bool> {
    let n = db
        .into()
        .execute("DELETE FROM agent WHERE id = ?1", args![id])
        .context("forgetting an agent")?;
    Ok(n > 0)
}

/// Agents that last polled before `before` (ms) and have no op still to end.
pub fn silent_agents<'a>(db: impl Into<Db<'a>>, before: i64) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT a.id FROM agent a WHERE a.last_seen < ?1
         AND NOT EXISTS (SELECT 1 FROM op WHERE op.agent = a.id AND op.state IN {UNFINISHED})
         ORDER BY a.id LIMIT 1000"
    );
    db.into()
        .query(&sql, args![before], |r| r.get(0))
        .context("finding silent agents")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::db;
    use rusqlite::Connection;

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
