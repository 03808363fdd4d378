//! The append-only list of schema migrations, tracked by `PRAGMA user_version`.
//!
//! Never edit, reorder or remove an entry, and never drop a column or change
//! its meaning: add a new entry instead. All times are INTEGER milliseconds
//! since the Unix epoch, UTC.

use rusqlite::Connection;

/// Migrations in order; entry N brings the schema to version N+1.
pub const MIGRATIONS: &[&str] = &[
    // 1: the remediation loop.
    r#"
    -- One row per alert fingerprint: its latest occurrence and status.
    CREATE TABLE alert (
        fingerprint TEXT PRIMARY KEY,
        source      TEXT NOT NULL,
        name        TEXT NOT NULL,
        status      TEXT NOT NULL,          -- firing | resolved
        labels      TEXT NOT NULL,          -- JSON object
        annotations TEXT NOT NULL,          -- JSON object
        starts_at   INTEGER,                -- the source's start of this occurrence
        ends_at     INTEGER,                -- set when resolved
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        receipts    INTEGER NOT NULL DEFAULT 1  -- notifications received for it
    ) WITHOUT ROWID;
    CREATE INDEX alert_status ON alert(status, last_seen);

    -- One remediation: a decision to run a runbook for a key.
    CREATE TABLE event (
        id          INTEGER PRIMARY KEY,
        rule        TEXT NOT NULL,
        runbook     TEXT NOT NULL,
        key         TEXT NOT NULL,           -- what counts as the same problem
        fingerprint TEXT NOT NULL,           -- the alert that started it
        state       TEXT NOT NULL,           -- see event::event_state
        mode        TEXT NOT NULL,           -- live | dry-run
        hits        INTEGER NOT NULL DEFAULT 1, -- firing notifications that joined it
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        ended_at    INTEGER                  -- set once the state is final
    );
    CREATE INDEX event_key ON event(rule, key, state);
    CREATE INDEX event_state ON event(state, id);
    CREATE INDEX event_fingerprint ON event(fingerprint, id);

    -- Every decision taken on a firing alert, with its reason.
    CREATE TABLE decision (
        id          INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        rule        TEXT,                    -- NULL when no rule matched
        outcome     TEXT NOT NULL,           -- rules::Outcome
        reason      TEXT NOT NULL,
        event_id    INTEGER REFERENCES event(id)
    );
    CREATE INDEX decision_fingerprint ON decision(fingerprint, id);

    -- Everything that happened to an event, in order.
    CREATE TABLE timeline (
        id       INTEGER PRIMARY KEY,
        event_id INTEGER NOT NULL REFERENCES event(id),
        at       INTEGER NOT NULL,
        kind     TEXT NOT NULL,
        message  TEXT NOT NULL
    );
    CREATE INDEX timeline_event ON timeline(event_id, id);

    -- One runbook run on one agent.
    CREATE TABLE op (
        id            INTEGER PRIMARY KEY,
        event_id      INTEGER NOT NULL REFERENCES event(id),
        agent         TEXT NOT NULL,
        state         TEXT NOT NULL,         -- event::OpState
        spec          TEXT NOT NULL,         -- JSON handed to the agent: steps, env, alert
        created_at    INTEGER NOT NULL,
        dispatched_at INTEGER,
        instance      TEXT,                  -- the agent process it was handed to
        lease_until   INTEGER,               -- dispatched: must be acknowledged by then
        started_at    INTEGER,
        deadline      INTEGER,               -- running: must report by then
        finished_at   INTEGER,
        error         TEXT                   -- why it failed or was lost
    );
    CREATE INDEX op_agent_state ON op(agent, state, id);
    CREATE INDEX op_state ON op(state, id);
    CREATE INDEX op_event ON op(event_id);

    -- The result of each step of an op, with the tail of its output.
    CREATE TABLE op_step (
        op_id        INTEGER NOT NULL REFERENCES op(id),
        idx          INTEGER NOT NULL,
        name         TEXT NOT NULL,
        exit_code    INTEGER,
        signal       INTEGER,
        timed_out    INTEGER NOT NULL,
        duration_ms  INTEGER NOT NULL,
        output       BLOB NOT NULL,
        output_bytes INTEGER NOT NULL,       -- bytes the step printed in total
        truncated    INTEGER NOT NULL,
        PRIMARY KEY (op_id, idx)
    ) WITHOUT ROWID;

    -- Output streamed while an op runs; trimmed to the tail, deleted with the result.
    CREATE TABLE op_log (
        op_id   INTEGER NOT NULL REFERENCES op(id),
        seq     INTEGER NOT NULL,
        step    INTEGER NOT NULL,
        data    BLOB NOT NULL,
        skipped INTEGER NOT NULL,            -- bytes dropped before this chunk
        PRIMARY KEY (op_id, seq)
    ) WITHOUT ROWID;

    -- Agents, as last seen polling.
    CREATE TABLE agent (
        id         TEXT PRIMARY KEY,
        instance   TEXT NOT NULL,            -- changes when the agent process restarts
        tags       TEXT NOT NULL,            -- JSON array
        allow      TEXT NOT NULL,            -- JSON array of runbook patterns
        version    TEXT NOT NULL,
        hostname   TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: the decision lifecycle: guards, attempts, approvals, verification, pauses, the breaker.
    r#"
    -- An event is open while ended_at is NULL: it holds its key.
    ALTER TABLE event ADD COLUMN started_at INTEGER;   -- when it ran (its ops were queued), or would have (dry-run)
    ALTER TABLE event ADD COLUMN plan TEXT;            -- JSON: targets, op spec, verification, max_parallel
    ALTER TABLE event ADD COLUMN deadline INTEGER;     -- pending_approval: expiry; verifying: the resolution deadline
    ALTER TABLE event ADD COLUMN decided_by TEXT;      -- who approved or rejected it
    ALTER TABLE event ADD COLUMN reason TEXT;          -- why it ended as it did
    -- Each index is a page written per new event: keep only those decisions read.
    DROP INDEX event_key;                    -- superseded by event_key_started
    DROP INDEX event_fingerprint;            -- alerts find their events through event_alert
    CREATE INDEX event_key_started ON event(rule, key, mode, started_at);
    CREATE INDEX event_started ON event(started_at) WHERE started_at IS NOT NULL;
    CREATE INDEX event_ended ON event(ended_at) WHERE ended_at IS NOT NULL;
    UPDATE event SET started_at = created_at WHERE mode = 'live';

    -- Ops that check the fix (verify.run) next to the ops that run it.
    ALTER TABLE op ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';   -- run | verify

    -- Every alert that joined an event (the one that started it and those that collapsed into it).
    CREATE TABLE event_alert (
        event_id    INTEGER NOT NULL REFERENCES event(id),
        fingerprint TEXT NOT NULL,
        PRIMARY KEY (event_id, fingerprint)
    ) WITHOUT ROWID;
    CREATE INDEX event_alert_fingerprint ON event_alert(fingerprint, event_id);
    INSERT INTO event_alert (event_id, fingerprint) SELECT id, fingerprint FROM event;

    -- Pauses: automation covered by one is not run until it ends or is resumed.
    CREATE TABLE pause (
        id         INTEGER PRIMARY KEY,
        runbook    TEXT,                     -- covers this runbook (NULL: any)
        target     TEXT,                     -- covers this agent (NULL: any)
        match      TEXT,                     -- JMESPath over the alert (NULL: any)
        reason     TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        until      INTEGER NOT NULL,
        resumed_at INTEGER,
        resumed_by TEXT
    );

    -- The global safety breaker: one row.
    CREATE TABLE breaker (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        state      TEXT NOT NULL,            -- closed | open
        reason     TEXT NOT NULL,
        changed_at INTEGER NOT NULL,
        changed_by TEXT NOT NULL
    );
    INSERT INTO breaker (id, state, reason, changed_at, changed_by) VALUES (1, 'closed', 'never opened', 0, 'heal');

    CREATE INDEX decision_at ON decision(at);
    "#,
    // 3: what heal watches by itself: heartbeats and their pings, probes and
    // their results, scheduled runs, and the internal alerts raised for them.
    r#"
    -- A heartbeat, from runbooks.toml (origin config) or the API (origin api).
    CREATE TABLE heartbeat (
        name          TEXT PRIMARY KEY,
        origin        TEXT NOT NULL,         -- config | api
        def           TEXT NOT NULL,         -- JSON: its raw form (config::RawHeartbeat)
        registered_at INTEGER NOT NULL,      -- lateness of a never-pinged heartbeat counts from here
        paused        INTEGER NOT NULL DEFAULT 0,  -- muted: no alerts
        paused_reason TEXT,
        resumed_at    INTEGER,               -- last unmute: lateness counts from here
        last_start    INTEGER,               -- last /start ping
        last_end_at   INTEGER,               -- last success or failure ping
        last_end_ok   INTEGER,
        last_end_code INTEGER,               -- its exit code, when given
        pings         INTEGER NOT NULL DEFAULT 0,  -- pings received in all
        state         TEXT NOT NULL DEFAULT 'new', -- heartbeat::State as of the checker's last sweep
        state_since   INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Every ping, with its body (capped) as the run's log.
    CREATE TABLE ping (
        id        INTEGER PRIMARY KEY,
        heartbeat TEXT NOT NULL,
        at        INTEGER NOT NULL,
        kind      TEXT NOT NULL,             -- start | success | fail
        exit_code INTEGER,
        body      BLOB NOT NULL,
        remote    TEXT NOT NULL              -- the client's address
    );
    CREATE INDEX ping_heartbeat ON ping(heartbeat, id);
    -- No index on at: ids grow with time, so retention walks the oldest rows
    -- first, and each ping writes one index page less.

    -- A probe's running state (fail_after / recover_after counting).
    CREATE TABLE probe (
        name            TEXT PRIMARY KEY,
        state           TEXT NOT NULL,       -- probe::State: unknown | up | down
        fails_in_row    INTEGER NOT NULL,
        oks_in_row      INTEGER NOT NULL,
        state_since     INTEGER NOT NULL,
        last_at         INTEGER,
        last_ok         INTEGER,
        last_latency_ms INTEGER,
        last_detail     TEXT
    ) WITHOUT ROWID;

    -- Every probe run.
    CREATE TABLE probe_result (
        id         INTEGER PRIMARY KEY,
        probe      TEXT NOT NULL,
        at         INTEGER NOT NULL,
        ok         INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        value      REAL,
        detail     TEXT NOT NULL
    );
    CREATE INDEX probe_result_probe ON probe_result(probe, id);
    CREATE INDEX probe_result_at ON probe_result(at);

    -- The last time each [[schedule]] fired, so a restart never fires a time twice.
    CREATE TABLE schedule_run (
        name      TEXT PRIMARY KEY,
        last_fire INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Internal alerts heal raised and has not resolved yet.
    CREATE TABLE internal_alert (
        fingerprint TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,           -- heartbeat | runtime | agent | probe | breaker
        subject     TEXT NOT NULL,           -- the heartbeat, agent or probe it is about
        alert       TEXT NOT NULL,           -- JSON: name, labels, annotations as last sent
        raised_at   INTEGER NOT NULL,
        sent_at     INTEGER NOT NULL         -- last sent (raised, or re-raised by renotify)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX internal_alert_subject ON internal_alert(kind, subject);
    "#,
    // 4: notifications and their delivery (the outbox).
    r#"
    -- One per state change people hear of, written in the transaction of the
    -- change. No foreign key to event: retention deletes events on its own.
    CREATE TABLE notification (
        id        INTEGER PRIMARY KEY,
        kind      TEXT NOT NULL,            -- notify::KINDS
        subject   TEXT NOT NULL,            -- event id, heartbeat or probe name, agent id, "breaker"
        event_id  INTEGER,                  -- for event kinds
        at        INTEGER NOT NULL,         -- when the state changed
        state     TEXT,                     -- the event's state then
        doc       TEXT,                     -- JSON that routes and channels see; event kinds get it when routed
        routed_at INTEGER                   -- NULL until routed to its channels
    );
    CREATE INDEX notification_unrouted ON notification(id) WHERE routed_at IS NULL;
    CREATE INDEX notification_event ON notification(event_id) WHERE event_id IS NOT NULL;

    -- One notification to one channel.
    CREATE TABLE delivery (
        id              INTEGER PRIMARY KEY,
        notification_id INTEGER NOT NULL REFERENCES notification(id),
        channel         TEXT NOT NULL,
        state           TEXT NOT NULL,      -- pending | sent | failed
        attempts        INTEGER NOT NULL DEFAULT 0,
        created_at      INTEGER NOT NULL,
        next_at         INTEGER NOT NULL,   -- pending: not before
        done_at         INTEGER,            -- sent or given up
        digest          INTEGER,            -- sent in a digest of this many
        error           TEXT                -- the last failure, secrets redacted
    );
    CREATE INDEX delivery_pending ON delivery(channel, id) WHERE state = 'pending';
    CREATE INDEX delivery_notification ON delivery(notification_id);
    CREATE INDEX delivery_state ON delivery(state, id);

    -- Incidents a PagerDuty or Opsgenie channel holds open, so the resolve
    -- follows its trigger whatever the routes say.
    CREATE TABLE incident (
        channel   TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        opened_at INTEGER NOT NULL,
        PRIMARY KEY (channel, dedup_key)
    ) WITHOUT ROWID;
    "#,
    // 5: the audit log and the versions of the config applied.
    r#"
    -- Who changed what. Append-only: triggers refuse updates and deletes.
    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY,
        at     INTEGER NOT NULL,
        actor  TEXT NOT NULL,           -- token name, "local", "startup", "sighup"
        action TEXT NOT NULL,           -- config.applied, event.approved, auth.refused, ...
        target TEXT NOT NULL,           -- what it acted on: event id, pause id, runbook, route
        detail TEXT NOT NULL,           -- reason, hash, how many refusals were folded in
        remote TEXT                     -- the client's address, for requests
    );
    CREATE INDEX audit_at ON audit(at);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

    -- Each distinct config applied, in order.
    CREATE TABLE config_version (
        version    INTEGER PRIMARY KEY,
        hash       TEXT NOT NULL,       -- SHA-256 of the file's text
        applied_at INTEGER NOT NULL,
        applied_by TEXT NOT NULL,
        path       TEXT NOT NULL
    );
    "#,
    // 6: an index of open events by state, for /metrics.
    r#"
    -- Only open events are in it, so counting them costs what is open, not
    -- the history retention keeps (event_state would also walk every
    -- finished dry run and escalation).
    CREATE INDEX event_open ON event(state) WHERE ended_at IS NULL;
    "#,
    // 7: the dashboard: login sessions, and indexes for its event filters.
    r#"
    -- A dashboard login. The cookie holds a random id; only its SHA-256 is
    -- kept, so a copy of the database logs nobody in. The token it was made
    -- with is named by its SHA-256 (as [[token]] secret_sha256 holds it): a
    -- token removed from the config or rotated ends its sessions.
    CREATE TABLE session (
        id_hash    TEXT PRIMARY KEY,    -- hex SHA-256 of the cookie's id
        token_hash TEXT NOT NULL,       -- hex SHA-256 of the token's secret
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        remote     TEXT                 -- where the login came from
    ) WITHOUT ROWID;

    -- The events page filters by runbook and by time; newest first within each.
    CREATE INDEX event_runbook ON event(runbook, id);
    CREATE INDEX event_created ON event(created_at);
    "#,
    // 8: the breaker counts live events only; dry runs have started_at too,
    // and without these a rollout in dry-run made every decision walk them.
    r#"
    CREATE INDEX event_live_started ON event(started_at) WHERE mode = 'live' AND started_at IS NOT NULL;
    CREATE INDEX event_live_ended ON event(ended_at) WHERE mode = 'live' AND started_at IS NOT NULL;
    "#,
    // 9: decisions are counted by outcome over a window (the overview, the
    // decisions API) from the index alone, not by reading each row; a rule's
    // events are listed newest first without sorting all of them.
    r#"
    DROP INDEX decision_at;
    CREATE INDEX decision_at ON decision(at, outcome, rule);
    CREATE INDEX event_rule ON event(rule, id);
    "#,
    // 10: alerts are listed by name (`GET /api/v1/alerts?name=`), newest
    // first in each status, without walking every alert.
    r#"
    CREATE INDEX alert_name ON alert(name, status, last_seen);
    "#,
    // 11: probes registered through the API (`PUT /api/v1/probes/NAME`): the
    // JSON of their `[[probe]]` fields; their results go to `probe` like the file's.
    r#"
    CREATE TABLE api_probe (
        name          TEXT PRIMARY KEY,
        def           TEXT NOT NULL,         -- the fields of a [[probe]], as JSON
        registered_at INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    "#,
    // 12: a step whose `when` was false on the agent is recorded as skipped.
    r#"
    ALTER TABLE op_step ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;
    "#,
    // 13: mutes that end by themselves. A heartbeat's mute may carry its
    // end; a muted probe still runs and records its results but raises no
    // `ProbeFailing`. The scheduler unmutes both when the time comes.
    r#"
    ALTER TABLE heartbeat ADD COLUMN muted_until INTEGER;  -- NULL: muted until unmuted
    CREATE TABLE probe_mute (
        name   TEXT PRIMARY KEY,      -- the probe's name (the file's or the API's)
        reason TEXT NOT NULL,         -- why, and who muted it
        until  INTEGER,               -- when it ends by itself; NULL: when unmuted
        at     INTEGER NOT NULL       -- when it was muted
    );
    "#,
    // 14: a down probe's severity, the `severity` label of its ProbeFailing:
    // 'warning' (only its `warn` threshold crossed) or 'critical'; NULL while
    // it is not down. A result that crossed only the `warn` threshold (ok is
    // 0 then) has warning = 1.
    r#"
    ALTER TABLE probe ADD COLUMN severity TEXT;
    ALTER TABLE probe_result ADD COLUMN warning INTEGER NOT NULL DEFAULT 0;
    "#,
    // 15: leases of what one server must do alone when several share the
    // database (`store::leader`): who holds each, until when by the
    // database's clock, and the term, which grows with each new holder.
    r#"
    CREATE TABLE leader (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        term       INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    "#,
    // 16: agent-side probes (`[[probe]] on`): the current run of each
    // (probe, agent) pair. A due run is offered (handed = 0) until the
    // agent's next poll takes it (handed = 1); lease_until bounds both and
    // is NULL once its result came, so a pair never runs twice at once and
    // each due time is offered once. The pair's state and results are those
    // of the probe named `PROBE@AGENT` (neither name may hold an '@').
    r#"
    CREATE TABLE agent_check (
        probe       TEXT NOT NULL,
        agent       TEXT NOT NULL,
        due         INTEGER NOT NULL,
        handed      INTEGER NOT NULL,
        lease_until INTEGER,
        PRIMARY KEY (probe, agent)
    );
    CREATE INDEX agent_check_agent ON agent_check(agent, handed);
    "#,
    // 17: several servers on one database. Which process holds an agent id
    // (`agent.instance`) is decided in the store, so a second process with
    // the same id is refused whichever server it polls: a newcomer's
    // instance and when it first asked (the database's clock, ms), and
    // whether the holder was heard from since. And the servers themselves:
    // each writes its row every few seconds (`store::replicas`).
    r#"
    ALTER TABLE agent ADD COLUMN challenger TEXT;
    ALTER TABLE agent ADD COLUMN challenged_at INTEGER;
    ALTER TABLE agent ADD COLUMN holder_heard INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE replica (
        id          TEXT PRIMARY KEY,     -- host, address and pid, as the `work` lease names it
        host        TEXT NOT NULL,
        address     TEXT NOT NULL,        -- the URL it serves on
        version     TEXT NOT NULL,        -- heal's version
        config_hash TEXT NOT NULL,        -- SHA-256 of its config file's text
        started_at  INTEGER NOT NULL,     -- ms, its own clock
        last_seen   INTEGER NOT NULL      -- ms, the database's clock
    );
    "#,
];

/// Brings the schema up to date in one exclusive transaction and returns the
/// version it found. Refuses a database written by a newer heal.
pub fn migrate(conn: &mut Connection) -> Result<usize, String> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .map_err(|e| format!("cannot lock the database for migration: {e}"))?;
    let found = version(&tx)?;
    if found > MIGRATIONS.len() {
        return Err(newer(found));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        tx.execute_batch(sql).map_err(|e| {
            // The error would otherwise quote the whole migration's SQL.
            let e = match e {
                rusqlite::Error::SqlInputError { msg, .. } => msg,
                e => e.to_string(),
            };
            format!("migration {} failed: {e}", i + 1)
        })?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
        .map_err(|e| format!("cannot set schema version: {e}"))?;
    tx.commit()
        .map_err(|e| format!("cannot commit migration: {e}"))?;
    Ok(found)
}

/// The schema version of a database: how many migrations it has had.
pub fn version(conn: &Connection) -> Result<usize, String> {
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("cannot read schema version: {e}"))?;
    usize::try_from(v).map_err(|_| format!("schema version {v} is not one heal writes"))
}

/// Why a database from a newer heal is refused, in the words `serve` and
/// `heal migrate` both use.
pub fn newer(version: usize) -> String {
    format!(
        "the database has schema version {version}, newer than this heal knows ({}): run the newer heal, or restore a backup",
        MIGRATIONS.len()
    )
}

/// What migration `n` (counted from 1) is for: the `// n: ...` comment above
/// its entry in this file, read from the source so it cannot drift from it.
pub fn summary(n: usize) -> String {
    const SOURCE: &str = include_str!("migrations.rs");
    let Some(at) = SOURCE.find(&format!("\n    // {n}: ")) else {
        return format!("migration {n}");
    };
    let lines = SOURCE[at..].lines().skip(1);
    let comment: Vec<&str> = lines
        .map_while(|l| l.trim_start().strip_prefix("//"))
        .map(str::trim)
        .collect();
    let text = comment.join(" ");
    text.strip_prefix(&format!("{n}: "))
        .unwrap_or(&text)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Servers sharing a PostgreSQL database are upgraded one at a time: the
    /// first new one migrates, the others run on with the old code. So every
    /// migration since several servers could share a database (15) only
    /// adds: tables, indexes, and columns that are nullable or have a default.
    #[test]
    fn migrations_since_several_servers_share_a_database_only_add() {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(14) {
            let statements = sql
                .split(';')
                .map(|s| {
                    s.lines()
                        .map(|l| l.split("--").next().unwrap_or("").trim())
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .filter(|s| !s.is_empty());
            for st in statements {
                let upper = st.to_uppercase();
                let adds = upper.starts_with("CREATE TABLE ")
                    || upper.starts_with("CREATE INDEX ")
                    || (upper.starts_with("ALTER TABLE ")
                        && upper.contains(" ADD COLUMN ")
                        && (!upper.contains("NOT NULL") || upper.contains(" DEFAULT ")));
                assert!(adds, "migration {}: {st:?} does not only add", i + 1);
            }
        }
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }

    #[test]
    fn version_1_database_is_upgraded_with_its_events() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at, ended_at)
             VALUES ('r', 'b', 'k', 'fp1', 'succeeded', 'live', 10, 20, 20)",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let (fp, started): (String, i64) = conn
            .query_row(
                "SELECT ea.fingerprint, e.started_at FROM event_alert ea JOIN event e ON e.id = ea.event_id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((fp.as_str(), started), ("fp1", 10));
        let breaker: String = conn
            .query_row("SELECT state FROM breaker", [], |r| r.get(0))
            .unwrap();
        assert_eq!(breaker, "closed");
    }

    #[test]
    fn every_migration_says_what_it_is_for() {
        for n in 1..=MIGRATIONS.len() {
            let summary = summary(n);
            assert!(
                summary.ends_with('.') && !summary.starts_with("migration"),
                "migration {n} needs a `// {n}: what it is for.` comment above its entry, got {summary:?}"
            );
        }
        assert_eq!(summary(1), "the remediation loop.");
        assert_eq!(
            summary(3),
            "what heal watches by itself: heartbeats and their pings, probes and their results, scheduled runs, and the internal alerts raised for them."
        );
    }

    #[test]
    fn migrate_says_the_version_it_found() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn), Ok(0));
        assert_eq!(migrate(&mut conn), Ok(MIGRATIONS.len()));
        conn.pragma_update(None, "user_version", -1).unwrap();
        assert!(migrate(&mut conn).unwrap_err().contains("-1"));
    }

    #[test]
    fn newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        assert!(migrate(&mut conn)
            .unwrap_err()
            .contains("newer than this heal"));
    }
}
