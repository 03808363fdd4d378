//! Agents: what each says of itself when it polls (its row, written only
//! when something changed or it is stale by `AGENT_SEEN_RESOLUTION_MS`),
//! which process holds each agent id (`claim_agent`), the list, and forgetting them: a retired host's agent, removed by hand or once
//! it has been silent for `[server] forget_agents_after`. An agent that polls
//! again later registers again, as a new one does.

use serde::Serialize;

use super::lose_op;
use super::sql::{args, Db, DB_NOW_MS};
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

/// How long a newcomer waits for the holder of its agent id to show it is
/// alive (ms): a live holder polls again at once when asked (its waiting
/// poll is answered), so a restarted agent takes its id over within a
/// second or two.
pub const CHALLENGE_MS: i64 = 1_000;

/// A challenge the newcomer has not repeated for this long is dropped (ms).
const CHALLENGE_DROPPED_MS: i64 = 60_000;

/// What a poll from an agent process may do with its agent id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// It holds the id: poll on.
    Held,
    /// Another process holds it; it is being asked whether it is alive.
    Checking {
        /// The holder's instance.
        instance: String,
        /// The holder's host.
        hostname: String,
    },
    /// Another process holds it and answered.
    InUse {
        /// The holder's instance.
        instance: String,
        /// The holder's host.
        hostname: String,
    },
}

/// The agent row as a poll reads it.
struct Polled {
    instance: String,
    tags: String,
    allow: String,
    version: String,
    hostname: String,
    last_seen: i64,
    challenger: Option<String>,
    challenged_at: i64,
    holder_heard: bool,
    /// The database's clock (ms).
    db_now: i64,
}

/// A poll from an agent process: whether it may hold the agent id, and its
/// record. Two processes started with the same `--id` would otherwise take
/// the id from each other at every poll, each time losing the other's ops
/// in flight. The first keeps the id while it is alive; a newcomer is
/// refused until the holder has not been heard from (a poll, or a call
/// about one of its ops: `heard_from`) for `challenge_ms` after the newcomer
/// first asked. The store decides, so this holds whichever server each
/// process polls; the times are the database's clock. The caller answers
/// the holder's waiting poll when the claim is refused, so a live holder
/// polls again at once.
pub fn claim_agent<'a>(
    db: impl Into<Db<'a>>,
    id: &str,
    hello: &AgentHello,
    now: i64,
    challenge_ms: i64,
) -> Result<Claim> {
    let db = db.into();
    let sql = format!(
        "SELECT instance, tags, allow, version, hostname, last_seen, challenger, challenged_at, holder_heard, {DB_NOW_MS}
         FROM agent WHERE id = ?1"
    );
    let row = db
        .query_row(&sql, args![id], |r| {
            Ok(Polled {
                instance: r.get(0)?,
                tags: r.get(1)?,
                allow: r.get(2)?,
                version: r.get(3)?,
                hostname: r.get(4)?,
                last_seen: r.get(5)?,
                challenger: r.get(6)?,
                challenged_at: r.get::<Option<i64>>(7)?.unwrap_or(0),
                holder_heard: r.get::<i64>(8)? != 0,
                db_now: r.get(9)?,
            })
        })
        .context("reading agent")?;
    let Some(row) = row else {
        record_poll(db, id, hello, now, None)?;
        return Ok(Claim::Held);
    };
    let challenge = |sql: &str| -> Result<()> {
        db.execute(sql, args![id, &hello.instance])
            .map(|_| ())
            .context("recording who asks for an agent id")
    };
    if row.instance == hello.instance {
        if row.challenger.is_some() {
            if row.challenged_at < row.db_now - CHALLENGE_DROPPED_MS {
                challenge("UPDATE agent SET challenger = NULL, challenged_at = NULL, holder_heard = 0 WHERE id = ?1 AND instance = ?2")?;
            } else if !row.holder_heard {
                challenge("UPDATE agent SET holder_heard = 1 WHERE id = ?1 AND instance = ?2")?;
            }
        }
        record_poll(db, id, hello, now, Some(&row))?;
        return Ok(Claim::Held);
    }
    let holder = (row.instance.clone(), row.hostname.clone());
    let asked_before = row.challenger.as_deref() == Some(hello.instance.as_str());
    if !asked_before {
        challenge(&format!(
            "UPDATE agent SET challenger = ?2, challenged_at = {DB_NOW_MS}, holder_heard = 0 WHERE id = ?1"
        ))?;
        return Ok(Claim::Checking {
            instance: holder.0,
            hostname: holder.1,
        });
    }
    if row.db_now < row.challenged_at + challenge_ms {
        return Ok(Claim::Checking {
            instance: holder.0,
            hostname: holder.1,
        });
    }
    if row.holder_heard {
        // Alive: refused, and asked again from now on.
        challenge(&format!(
            "UPDATE agent SET challenged_at = {DB_NOW_MS}, holder_heard = 0 WHERE id = ?1 AND challenger = ?2"
        ))?;
        return Ok(Claim::InUse {
            instance: holder.0,
            hostname: holder.1,
        });
    }
    // Silent since it was asked: the newcomer takes the id.
    record_poll(db, id, hello, now, Some(&row))?;
    Ok(Claim::Held)
}

/// A call from the agent about one of its ops or checks: whether the agent
/// id is known, and, when another process asks for the id, that its holder
/// is alive.
pub fn heard_from<'a>(db: impl Into<Db<'a>>, id: &str) -> Result<bool> {
    let db = db.into();
    db.execute(
        "UPDATE agent SET holder_heard = 1 WHERE id = ?1 AND challenger IS NOT NULL AND holder_heard = 0",
        args![id],
    )
    .context("recording that an agent was heard from")?;
    agent_known(db, id)
}

/// Records a poll of the process that holds the id (`previous`: the row
/// before it); when the agent process changed, its earlier in-flight ops
/// are lost, and whoever asked for the id has it now.
fn record_poll(
    db: Db<'_>,
    id: &str,
    hello: &AgentHello,
    now: i64,
    previous: Option<&Polled>,
) -> Result<()> {
    let tags = serde_json::to_string(&hello.tags).expect("strings serialize");
    let allow = serde_json::to_string(&hello.allow).expect("strings serialize");
    if let Some(p) = previous {
        // A poll that changes nothing and comes soon after the last recorded
        // one writes nothing, so an idle poll costs no fsync.
        let same = p.instance == hello.instance
            && p.tags == tags
            && p.allow == allow
            && p.version == hello.version
            && p.hostname == hello.hostname;
        if same && now - p.last_seen < AGENT_SEEN_RESOLUTION_MS {
            return Ok(());
        }
    }
    let restarted = previous.is_some_and(|p| p.instance != hello.instance);
    db.execute(
        "INSERT INTO agent (id, instance, tags, allow, version, hostname, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (id) DO UPDATE SET instance = ?2, tags = ?3, allow = ?4, version = ?5, hostname = ?6, last_seen = ?7",
        args![id, &hello.instance, &tags, &allow, &hello.version, &hello.hostname, now],
    )
    .context("recording agent poll")?;
    if restarted {
        db.execute(
            "UPDATE agent SET challenger = NULL, challenged_at = NULL, holder_heard = 0 WHERE id = ?1",
            args![id],
        )
        .context("recording agent poll")?;
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

    fn hello(instance: &str) -> AgentHello {
        AgentHello {
            instance: instance.into(),
            hostname: format!("host-{instance}"),
            ..AgentHello::default()
        }
    }

    fn holder(instance: &str) -> (String, String) {
        (instance.into(), format!("host-{instance}"))
    }

    fn checking(instance: &str) -> Claim {
        let (instance, hostname) = holder(instance);
        Claim::Checking { instance, hostname }
    }

    fn in_use(instance: &str) -> Claim {
        let (instance, hostname) = holder(instance);
        Claim::InUse { instance, hostname }
    }

    #[test]
    fn a_newcomer_takes_an_id_only_from_a_silent_holder() {
        let conn = db();
        let claim =
            |instance: &str| claim_agent(&conn, "web-1", &hello(instance), 1_000, 0).unwrap();
        assert_eq!(claim("a"), Claim::Held);
        assert_eq!(claim("a"), Claim::Held);
        // A second process asks: the holder is asked, the newcomer waits.
        assert_eq!(claim("b"), checking("a"));
        // The holder polls again: it is alive, the newcomer is refused, and asked again.
        assert_eq!(claim("a"), Claim::Held);
        assert_eq!(claim("b"), in_use("a"));
        // A call about one of its ops counts too.
        assert!(heard_from(&conn, "web-1").unwrap());
        assert_eq!(claim("b"), in_use("a"));
        // A third process asks: the challenge is its now.
        assert_eq!(claim("c"), checking("a"));
        // The holder goes silent: the newcomer takes over, and its
        // earlier in-flight ops are lost.
        let event = conn
            .query_row(
                "INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at)
                 VALUES ('r', 'b', 'k', 'f', 'running', 'live', 1, 1) RETURNING id",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
        conn.execute(
            "INSERT INTO op (event_id, agent, state, spec, created_at, instance) VALUES (?1, 'web-1', 'running', '{}', 1, 'a')",
            [event],
        )
        .unwrap();
        assert_eq!(claim("c"), Claim::Held);
        let (instance, state): (String, String) = conn
            .query_row(
                "SELECT agent.instance, op.state FROM agent, op WHERE agent.id = 'web-1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((instance.as_str(), state.as_str()), ("c", "lost"));
        // Now the old process is the newcomer.
        assert_eq!(claim("a"), checking("c"));
        // Other ids are unaffected; an unknown id is not known.
        assert_eq!(
            claim_agent(&conn, "web-2", &hello("d"), 1_000, 0).unwrap(),
            Claim::Held
        );
        assert!(!heard_from(&conn, "web-3").unwrap());
    }

    #[test]
    fn a_newcomer_waits_the_challenge_out() {
        let conn = db();
        let claim = |instance: &str| {
            claim_agent(&conn, "web-1", &hello(instance), 1_000, CHALLENGE_MS).unwrap()
        };
        assert_eq!(claim("a"), Claim::Held);
        assert_eq!(claim("b"), checking("a"));
        // Within the second, whether or not the holder was heard: still checking.
        assert_eq!(claim("b"), checking("a"));
        assert_eq!(claim("a"), Claim::Held);
        assert_eq!(claim("b"), checking("a"));
    }

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
