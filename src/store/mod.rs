//! `store`: the only code that knows SQL.
//!
//! One writer thread owns the write connection and commits jobs in groups
//! (`Writer::write`): every caller gets its answer only after the commit that
//! holds its write, so a 2xx means durable (WAL, synchronous=FULL), while one
//! fsync serves every request that arrived meanwhile. Each job runs in its own
//! savepoint, so one failing request does not undo the others. Readers open
//! their own connection per thread (`open`).

pub mod admin;
pub mod agents;
pub mod backup;
pub mod browse;
pub mod figures;
pub mod health;
pub mod lifecycle;
pub mod lock;
pub mod migrations;
pub mod notify;
pub mod session;
pub mod watch;

pub use admin::*;
pub use agents::*;
pub use figures::*;
pub use lifecycle::*;
pub use notify::*;
pub use watch::*;

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use crate::alert::{Alert, Status};
use crate::error::{Error, Result, StoreContext};
use crate::event::OpState;
use crate::shutdown::Shutdown;

/// How stale an agent's recorded `last_seen` may be (ms): polls within it write nothing.
pub const AGENT_SEEN_RESOLUTION_MS: i64 = 5_000;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;

/// Opens a connection with heal's settings (WAL, synchronous=FULL, foreign keys, busy timeout).
pub fn open(path: &Path) -> Result<Connection> {
    let what = || format!("cannot open database {}", path.display());
    let conn = Connection::open(path).map_err(|e| Error::Store(what(), e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .context("setting busy timeout")?;
    // heal has more statements than rusqlite's default cache of 16: keep them all prepared.
    conn.set_prepared_statement_cache_capacity(256);
    conn.pragma_update(None, "journal_mode", "WAL")
        .context("setting WAL mode")?;
    conn.pragma_update(None, "synchronous", "FULL")
        .context("setting synchronous=FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .context("enabling foreign keys")?;
    Ok(conn)
}

/// Opens the database (created 0600 if missing, whatever the umask),
/// refuses a corrupt one (`PRAGMA quick_check`) and brings its schema up to
/// date; run once, under the database's `lock`, before any thread starts.
pub fn open_and_migrate(path: &Path) -> Result<Connection> {
    create_private(path)?;
    let mut conn = open(path).map_err(|e| refuse_corrupt(path, e))?;
    quick_check(&conn, path)?;
    let found = migrations::migrate(&mut conn)
        .map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
    let hashed = hash_stored_ping_keys(&conn)?;
    if hashed > 0 {
        log::info!(
            "database {}: stored the ping keys of {hashed} heartbeats as SHA-256 hashes",
            path.display()
        );
    }
    if found < migrations::MIGRATIONS.len() {
        log::info!(
            "database {}: schema version {found} migrated to {}",
            path.display(),
            migrations::MIGRATIONS.len()
        );
    }
    Ok(conn)
}

/// Creates the database file 0600 when it does not exist: SQLite would
/// create it 0644 less the umask, and gives its -wal and -shm files the
/// database's mode. `create_new` never follows a planted symlink. An existing
/// database that others may read is named in a warning, not changed.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    log::warn!(
                        "database {} is mode {:o}: other users may read alert data and hashes; chmod 600 it",
                        path.display(),
                        m.permissions().mode() & 0o777
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(Error::Io(
            format!("cannot create database {}", path.display()),
            e,
        )),
    }
}

/// How to get a working database back, for every refusal of a damaged one.
pub fn restore_hint(path: &Path) -> String {
    let db = path.display();
    format!("stop heal, move {db} (and {db}-wal, {db}-shm) aside and copy the latest heal backup file in its place; without a backup, salvage what is readable with: sqlite3 {db} .recover | sqlite3 recovered.db")
}

/// Turns SQLite's "file is not a database" or "malformed" at open into a
/// configuration error (exit 2) that says how to restore.
fn refuse_corrupt(path: &Path, e: Error) -> Error {
    match &e {
        Error::Store(_, inner) if is_corrupt(inner) => Error::Config(format!(
            "database {} is damaged ({inner}): heal will not start on it. {}",
            path.display(),
            restore_hint(path)
        )),
        _ => e,
    }
}

/// Whether SQLite said the file is damaged or not a database.
pub fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// What an integrity check found: "ok", or up to `limit` problems.
pub fn integrity(conn: &Connection, pragma: &str, limit: usize) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA {pragma}({limit})"))
        .context(pragma)?;
    let rows = stmt.query_map([], |r| r.get(0)).context(pragma)?;
    rows.collect::<std::result::Result<_, _>>().context(pragma)
}

/// The database's size in pages, 0 if SQLite cannot say.
pub fn page_count(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Runs `PRAGMA quick_check` (the b-trees' structure, not every index
/// entry: O(N), a fraction of `integrity_check`) and refuses a damaged
/// database with exit 2 and the way to restore it.
fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let started = Instant::now();
    let found = integrity(conn, "quick_check", 10).map_err(|e| refuse_corrupt(path, e))?;
    if found != ["ok"] {
        return Err(Error::Config(format!(
            "database {} is damaged (quick_check: {}): heal will not start on it. {}",
            path.display(),
            found.join("; "),
            restore_hint(path)
        )));
    }
    log::info!(
        "database {}: quick_check ok ({:.1}s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

type Done = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: SyncSender<Job>,
}

impl Writer {
    /// A writer handle and the queue its thread (`run_writer`) drains.
    pub fn new() -> (Writer, Receiver<Job>) {
        let (jobs, rx) = sync_channel(4096);
        (Writer { jobs }, rx)
    }

    /// Runs `f` inside the next group commit and returns its value once committed.
    pub fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = sync_channel(1);
        let job: Job = Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, f);
            if let Err(Error::Store(_, e)) = &result {
                health::observe(e);
            }
            Box::new(move |committed: std::result::Result<(), String>| {
                let result = match committed {
                    Ok(()) => result,
                    Err(e) => result.and(Err(Error::Failed(format!("store: commit failed: {e}")))),
                };
                let _ = tx.send(result);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Failed("store: the writer has stopped".into()))?;
        rx.recv()
            .map_err(|_| Error::Failed("store: the writer stopped before answering".into()))?
    }
}

fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT job")
        .context("opening savepoint")?;
    let result = f(conn);
    let end = if result.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    conn.execute_batch(end).context("closing savepoint")?;
    result
}

/// The writer thread: commits queued jobs in groups until shutdown and an
/// idle queue; `committed` hears how long each COMMIT took.
pub fn run_writer(
    conn: Connection,
    jobs: Receiver<Job>,
    shutdown: &Shutdown,
    committed: impl Fn(Duration),
) {
    loop {
        let first = match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) if shutdown.is_triggered() => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mark = health::mark();
        let changes = conn.total_changes();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            health::observe(&e);
            log::error!("store: cannot begin a transaction: {e}");
            let message = e.to_string();
            for job in batch {
                // The job still runs so its caller is answered, but nothing is committed.
                job(&conn)(Err(message.clone()));
            }
            continue;
        }
        let done: Vec<Done> = batch.into_iter().map(|job| job(&conn)).collect();
        let commit_started = Instant::now();
        let result = conn.execute_batch("COMMIT").map_err(|e| {
            health::observe(&e);
            log::error!("store: commit failed: {e}");
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        committed(commit_started.elapsed());
        if result.is_ok() && conn.total_changes() > changes {
            health::committed(mark);
        }
        for d in done {
            d(result.clone());
        }
    }
}

// ---- alerts and decisions ---------------------------------------------------

/// What storing one alert notification changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// Never seen, or a new occurrence.
    New,
    /// A repeat of the firing occurrence already stored.
    Repeat,
    /// This notification resolved a firing alert.
    Resolved,
    /// A resolved alert that was already resolved, or a firing notification of an occurrence already resolved.
    Stale,
}

/// Upserts an alert by fingerprint and says what changed.
pub fn record_alert(conn: &Connection, alert: &Alert, now: i64) -> Result<Receipt> {
    let stored: Option<(String, Option<i64>)> = conn
        .prepare_cached("SELECT status, starts_at FROM alert WHERE fingerprint = ?1")
        .and_then(|mut s| {
            s.query_row([&alert.fingerprint], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .context("reading alert")?;
    let same_occurrence = |starts: Option<i64>| {
        starts.is_none() || alert.starts_at.is_none() || starts == alert.starts_at
    };
    let receipt = match (&stored, alert.status) {
        (None, _) => Receipt::New,
        (Some((s, starts)), Status::Firing)
            if s == "resolved" && same_occurrence(*starts) && alert.starts_at.is_some() =>
        {
            Receipt::Stale
        }
        (Some((s, _)), Status::Firing) if s == "firing" => Receipt::Repeat,
        (Some(_), Status::Firing) => Receipt::New,
        (Some((s, _)), Status::Resolved) if s == "resolved" => Receipt::Stale,
        (Some(_), Status::Resolved) => Receipt::Resolved,
    };
    if receipt == Receipt::Stale {
        conn.prepare_cached(
            "UPDATE alert SET receipts = receipts + 1, last_seen = ?2 WHERE fingerprint = ?1",
        )
        .and_then(|mut s| s.execute(params![alert.fingerprint, now]))
        .context("updating alert")?;
        return Ok(receipt);
    }
    let labels = serde_json::to_string(&alert.labels).expect("a map of strings always serializes");
    let annotations =
        serde_json::to_string(&alert.annotations).expect("a map of strings always serializes");
    conn.prepare_cached(
        "INSERT INTO alert (fingerprint, source, name, status, labels, annotations, starts_at, ends_at, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT (fingerprint) DO UPDATE SET source = ?2, name = ?3, status = ?4, labels = ?5, annotations = ?6,
           starts_at = coalesce(?7, starts_at), ends_at = ?8, last_seen = ?9, receipts = receipts + 1",
    )
    .and_then(|mut s| {
        s.execute(params![
            alert.fingerprint,
            alert.source,
            alert.name,
            alert.status.as_str(),
            labels,
            annotations,
            alert.starts_at,
            alert.ends_at,
            now
        ])
    })
    .context("storing alert")?;
    Ok(receipt)
}

/// Records one decision on a firing alert.
pub fn record_decision(
    conn: &Connection,
    fingerprint: &str,
    rule: Option<&str>,
    outcome: &str,
    reason: &str,
    event_id: Option<i64>,
    now: i64,
) -> Result<()> {
    conn.prepare_cached("INSERT INTO decision (at, fingerprint, rule, outcome, reason, event_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .and_then(|mut s| s.execute(params![now, fingerprint, rule, outcome, reason, event_id]))
        .context("recording decision")?;
    Ok(())
}

// ---- events -----------------------------------------------------------------

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
pub fn create_event(conn: &Connection, e: &NewEvent, now: i64) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at, started_at, deadline) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
    )
    .and_then(|mut s| s.execute(params![e.rule, e.runbook, e.key, e.fingerprint, e.state, e.mode, now, e.started_at, e.deadline]))
    .context("creating event")?;
    let id = conn.last_insert_rowid();
    join_alert(conn, id, e.fingerprint)?;
    // A queued event is announced by `start_event`, once its plan is set.
    if e.state != "queued" {
        note_event(conn, id, None, e.state, false, now)?;
    }
    Ok(id)
}

/// Records that an alert joined an event.
pub fn join_alert(conn: &Connection, event_id: i64, fingerprint: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO event_alert (event_id, fingerprint) VALUES (?1, ?2)",
    )
    .and_then(|mut s| s.execute(params![event_id, fingerprint]))
    .context("joining alert to event")?;
    Ok(())
}

/// Appends a line to an event's timeline.
pub fn add_timeline(
    conn: &Connection,
    event_id: i64,
    kind: &str,
    message: &str,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO timeline (event_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![event_id, now, kind, message]))
    .context("appending to timeline")?;
    Ok(())
}

/// Counts one more firing notification on an open event; the alert joins it.
pub fn collapse_into(conn: &Connection, event_id: i64, fingerprint: &str, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE event SET hits = hits + 1, updated_at = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![event_id, now]))
        .context("counting hit")?;
    join_alert(conn, event_id, fingerprint)
}

/// Events an alert joined that are open or ended since `since`, newest
/// first: id, state and whether it is open.
pub fn events_of_alert(
    conn: &Connection,
    fingerprint: &str,
    since: i64,
) -> Result<Vec<(i64, String, bool)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT e.id, e.state, e.ended_at IS NULL FROM event_alert ea JOIN event e ON e.id = ea.event_id
             WHERE ea.fingerprint = ?1 AND (e.ended_at IS NULL OR e.ended_at >= ?2) ORDER BY e.id DESC LIMIT 20",
        )
        .context("preparing events of alert")?;
    let rows = stmt
        .query_map(params![fingerprint, since], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .context("reading events of alert")?;
    rows.collect::<std::result::Result<_, _>>()
        .context("reading events of alert")
}

// ---- ops --------------------------------------------------------------------

/// Adds an op for an agent (`queued`, or `waiting` behind `max_parallel`) and returns its id.
pub fn queue_op(
    conn: &Connection,
    event_id: i64,
    agent: &str,
    kind: &str,
    state: OpState,
    spec: &Value,
    now: i64,
) -> Result<i64> {
    conn.prepare_cached("INSERT INTO op (event_id, agent, kind, state, spec, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .and_then(|mut s| s.execute(params![event_id, agent, kind, state.as_str(), spec.to_string(), now]))
        .context("queuing op")?;
    Ok(conn.last_insert_rowid())
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
pub fn claim_ops(
    conn: &Connection,
    agent: &str,
    instance: &str,
    n: usize,
    lease_until: i64,
    now: i64,
) -> Result<Vec<Claimed>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let queued: Vec<(i64, i64, String)> = {
        let mut stmt = conn
            .prepare_cached("SELECT id, event_id, spec FROM op WHERE agent = ?1 AND state = 'queued' ORDER BY id LIMIT ?2")
            .context("preparing claim")?;
        let rows = stmt
            .query_map(params![agent, n as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .context("claiming ops")?;
        rows.collect::<std::result::Result<_, _>>()
            .context("claiming ops")?
    };
    let mut claimed = Vec::new();
    for (id, event_id, spec) in queued {
        if dispatch_op(conn, id, event_id, agent, instance, lease_until, now)? {
            let spec = serde_json::from_str(&spec).unwrap_or(Value::Null);
            claimed.push(Claimed { id, event_id, spec });
        }
    }
    Ok(claimed)
}

/// Marks one queued op dispatched to an agent instance; false if it was no longer queued.
pub fn dispatch_op(
    conn: &Connection,
    op_id: i64,
    event_id: i64,
    agent: &str,
    instance: &str,
    lease_until: i64,
    now: i64,
) -> Result<bool> {
    let n = conn
        .prepare_cached("UPDATE op SET state = 'dispatched', dispatched_at = ?2, instance = ?3, lease_until = ?4 WHERE id = ?1 AND state = 'queued'")
        .and_then(|mut s| s.execute(params![op_id, now, instance, lease_until]))
        .context("dispatching op")?;
    if n == 1 {
        add_timeline(
            conn,
            event_id,
            "dispatched",
            &format!("op {op_id} handed to agent {agent}"),
            now,
        )?;
        lifecycle::advance(conn, event_id, now)?;
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
pub fn op_ref(conn: &Connection, op_id: i64) -> Result<Option<OpRef>> {
    conn.prepare_cached("SELECT event_id, agent, state FROM op WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([op_id], |r| {
                let state: String = r.get(2)?;
                Ok(OpRef {
                    event_id: r.get(0)?,
                    agent: r.get(1)?,
                    state: OpState::parse(&state).unwrap_or(OpState::Lost),
                })
            })
            .optional()
        })
        .context("reading op")
}

/// Moves an op to a new state if the transition is allowed; returns whether it moved.
pub fn set_op_state(
    conn: &Connection,
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
    let n = conn
        .prepare_cached("UPDATE op SET state = ?3, error = coalesce(?4, error), finished_at = coalesce(?5, finished_at) WHERE id = ?1 AND state = ?2")
        .and_then(|mut s| s.execute(params![op_id, from.as_str(), to.as_str(), error, finished]))
        .context("updating op state")?;
    Ok(n == 1)
}

/// Records that the agent started an op, with the deadline for its result.
pub fn start_op(conn: &Connection, op_id: i64, deadline: i64, now: i64) -> Result<bool> {
    let n = conn
        .prepare_cached("UPDATE op SET state = 'running', started_at = ?2, deadline = ?3 WHERE id = ?1 AND state = 'dispatched'")
        .and_then(|mut s| s.execute(params![op_id, now, deadline]))
        .context("starting op")?;
    Ok(n == 1)
}

/// Appends a streamed output chunk (idempotent by sequence number) and trims the op's log to `cap` bytes.
pub fn append_log(
    conn: &Connection,
    op_id: i64,
    seq: i64,
    step: i64,
    data: &[u8],
    skipped: i64,
    cap: usize,
) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO op_log (op_id, seq, step, data, skipped) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| s.execute(params![op_id, seq, step, data, skipped]))
        .context("appending log")?;
    let total: i64 = conn
        .prepare_cached("SELECT coalesce(sum(length(data)), 0) FROM op_log WHERE op_id = ?1")
        .and_then(|mut s| s.query_row([op_id], |r| r.get(0)))
        .context("measuring log")?;
    if total as usize > cap {
        // Drop the oldest chunks until the rest fits: the tail is what matters.
        let mut stmt = conn
            .prepare_cached("SELECT seq, length(data) FROM op_log WHERE op_id = ?1 ORDER BY seq")
            .context("trimming log")?;
        let rows: Vec<(i64, i64)> = stmt
            .query_map([op_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .context("trimming log")?
            .collect::<std::result::Result<_, _>>()
            .context("trimming log")?;
        let mut excess = total - cap as i64;
        for (seq, len) in rows {
            if excess <= 0 {
                break;
            }
            conn.prepare_cached("DELETE FROM op_log WHERE op_id = ?1 AND seq = ?2")
                .and_then(|mut s| s.execute(params![op_id, seq]))
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
}

/// Stores an op's final result unless one is stored already. Returns `None`
/// for a duplicate, else the agents that got new ops (the next targets, the
/// verification).
pub fn record_result(
    conn: &Connection,
    op_id: i64,
    event_id: i64,
    state: OpState,
    error: Option<&str>,
    steps: &[StepResult],
    now: i64,
) -> Result<Option<Vec<String>>> {
    let op = op_ref(conn, op_id)?;
    let current = op.as_ref().map_or(OpState::Lost, |o| o.state);
    let already: i64 = conn
        .prepare_cached("SELECT count(*) FROM op_step WHERE op_id = ?1")
        .and_then(|mut s| s.query_row([op_id], |r| r.get(0)))
        .context("checking result")?;
    if already > 0 || current.is_final() && current != OpState::Lost {
        return Ok(None);
    }
    for (idx, s) in steps.iter().enumerate() {
        conn.prepare_cached(
            "INSERT INTO op_step (op_id, idx, name, exit_code, signal, timed_out, duration_ms, output, output_bytes, truncated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .and_then(|mut st| {
            st.execute(params![op_id, idx as i64, s.name, s.exit_code, s.signal, s.timed_out, s.duration_ms as i64, s.output.as_bytes(), s.output_bytes as i64, s.truncated])
        })
        .context("storing step result")?;
    }
    conn.prepare_cached("DELETE FROM op_log WHERE op_id = ?1")
        .and_then(|mut s| s.execute([op_id]))
        .context("dropping streamed log")?;
    let summary = steps
        .iter()
        .map(|s| match (s.exit_code, s.signal, s.timed_out) {
            (_, _, true) => format!("{}: timed out", s.name),
            (Some(c), _, _) => format!("{}: exit {c}", s.name),
            (None, Some(sig), _) => format!("{}: signal {sig}", s.name),
            _ => format!("{}: did not run", s.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    if current == OpState::Lost {
        add_timeline(
            conn,
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
        conn.prepare_cached("UPDATE op SET started_at = coalesce(started_at, ?2) WHERE id = ?1")
            .and_then(|mut s| s.execute(params![op_id, started]))
            .context("recording op start")?;
        add_timeline(
            conn,
            event_id,
            "started",
            &format!(
                "op {op_id} started on agent {} (known from its result: the start was not confirmed)",
                op.agent
            ),
            started,
        )?;
    }
    set_op_state(conn, op_id, from, state, error, now)?;
    let mut line = format!("op {op_id} {}", state.as_str());
    match (summary.is_empty(), error) {
        (false, Some(e)) => line.push_str(&format!(": {summary} ({e})")),
        (false, None) => line.push_str(&format!(": {summary}")),
        (true, Some(e)) => line.push_str(&format!(": {e}")),
        (true, None) => {}
    }
    add_timeline(conn, event_id, "result", &line, now)?;
    Some(lifecycle::advance(conn, event_id, now)).transpose()
}

/// Declares an op lost (at most once), with the reason on the timeline.
pub fn lose_op(conn: &Connection, op_id: i64, reason: &str, now: i64) -> Result<bool> {
    let Some(op) = op_ref(conn, op_id)? else {
        return Ok(false);
    };
    if !set_op_state(conn, op_id, op.state, OpState::Lost, Some(reason), now)? {
        return Ok(false);
    }
    add_timeline(
        conn,
        op.event_id,
        "lost",
        &format!(
            "op {op_id} on agent {} is lost: {reason}; it will not be run again",
            op.agent
        ),
        now,
    )?;
    lifecycle::advance(conn, op.event_id, now)?;
    Ok(true)
}

/// Declares lost every op whose lease, deadline or queue time has passed. Returns how many.
pub fn expire_ops(conn: &Connection, dispatch_timeout_ms: i64, now: i64) -> Result<usize> {
    let rows: Vec<(i64, String)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, CASE state
                    WHEN 'dispatched' THEN 'not acknowledged by the agent within its lease'
                    WHEN 'running' THEN 'no result from the agent by its deadline (steps plus grace)'
                    ELSE 'no agent claimed it in time' END
                 FROM op
                 WHERE (state = 'dispatched' AND lease_until < ?1)
                    OR (state = 'running' AND deadline < ?1)
                    OR (state = 'queued' AND created_at < ?2)
                 LIMIT 1000",
            )
            .context("finding expired ops")?;
        let rows = stmt
            .query_map(params![now, now - dispatch_timeout_ms], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .context("finding expired ops")?;
        rows.collect::<std::result::Result<_, _>>()
            .context("finding expired ops")?
    };
    let mut n = 0;
    for (id, reason) in rows {
        if lose_op(conn, id, &reason, now)? {
            n += 1;
        }
    }
    Ok(n)
}

// ---- agents -----------------------------------------------------------------

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
pub fn touch_agent(conn: &Connection, id: &str, hello: &AgentHello, now: i64) -> Result<()> {
    let tags = serde_json::to_string(&hello.tags).expect("strings serialize");
    let allow = serde_json::to_string(&hello.allow).expect("strings serialize");
    type Row = (String, String, String, String, String, i64);
    let previous: Option<Row> = conn
        .prepare_cached(
            "SELECT instance, tags, allow, version, hostname, last_seen FROM agent WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .optional()
        })
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
    conn.prepare_cached(
        "INSERT INTO agent (id, instance, tags, allow, version, hostname, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (id) DO UPDATE SET instance = ?2, tags = ?3, allow = ?4, version = ?5, hostname = ?6, last_seen = ?7",
    )
    .and_then(|mut s| s.execute(params![id, hello.instance, tags, allow, hello.version, hello.hostname, now]))
    .context("recording agent poll")?;
    if previous.is_some_and(|p| p != hello.instance) {
        let stale: Vec<i64> = {
            let mut stmt = conn
                .prepare_cached("SELECT id FROM op WHERE agent = ?1 AND state IN ('dispatched', 'running') AND instance != ?2")
                .context("finding ops of restarted agent")?;
            let rows = stmt
                .query_map(params![id, hello.instance], |r| r.get(0))
                .context("finding ops of restarted agent")?;
            rows.collect::<std::result::Result<_, _>>()
                .context("finding ops of restarted agent")?
        };
        for op in stale {
            lose_op(
                conn,
                op,
                "the agent restarted while the op was in flight",
                now,
            )?;
        }
    }
    Ok(())
}

/// Whether an agent id has ever polled.
pub fn agent_known(conn: &Connection, id: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM agent WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |_| Ok(())).optional())
        .map(|r| r.is_some())
        .context("reading agent")
}

/// Agents carrying all of `tags`.
pub fn agents_with_tags(conn: &Connection, tags: &[String]) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, tags FROM agent ORDER BY id")
        .context("reading agents")?;
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .context("reading agents")?
        .collect::<std::result::Result<_, _>>()
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

pub(crate) fn event_row(r: &rusqlite::Row) -> rusqlite::Result<EventRow> {
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
pub fn list_events(conn: &Connection, f: &EventFilter, limit: i64) -> Result<Vec<EventRow>> {
    browse::find_events(conn, f, limit)
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
pub fn event_detail(conn: &Connection, id: i64) -> Result<Option<EventDetail>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM event WHERE id = ?1");
    let Some(event) = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_row([id], event_row).optional())
        .context("reading event")?
    else {
        return Ok(None);
    };
    let alert = get_alert(conn, &event.fingerprint)?;
    let timeline = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT at, kind, message FROM timeline WHERE event_id = ?1 ORDER BY id",
            )
            .context("reading timeline")?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(TimelineRow {
                    at: r.get(0)?,
                    kind: r.get(1)?,
                    message: r.get(2)?,
                })
            })
            .context("reading timeline")?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .context("reading timeline")?
    };
    let mut ops: Vec<OpRow> = {
        let mut stmt = conn
            .prepare_cached("SELECT id, agent, state, dispatched_at, started_at, finished_at, error, kind FROM op WHERE event_id = ?1 ORDER BY id")
            .context("reading ops")?;
        let rows = stmt
            .query_map([id], |r| {
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
            })
            .context("reading ops")?;
        rows.collect::<std::result::Result<_, _>>()
            .context("reading ops")?
    };
    for op in &mut ops {
        let mut stmt = conn
            .prepare_cached("SELECT name, exit_code, signal, timed_out, duration_ms, output, output_bytes, truncated FROM op_step WHERE op_id = ?1 ORDER BY idx")
            .context("reading steps")?;
        let rows = stmt
            .query_map([op.id], |r| {
                let output: Vec<u8> = r.get(5)?;
                Ok(StepResult {
                    name: r.get(0)?,
                    exit_code: r.get(1)?,
                    signal: r.get(2)?,
                    timed_out: r.get(3)?,
                    duration_ms: r.get::<_, i64>(4)? as u64,
                    output: String::from_utf8_lossy(&output).into_owned(),
                    output_bytes: r.get::<_, i64>(6)? as u64,
                    truncated: r.get(7)?,
                })
            })
            .context("reading steps")?;
        op.steps = rows
            .collect::<std::result::Result<_, _>>()
            .context("reading steps")?;
        let mut stmt = conn
            .prepare_cached("SELECT data FROM op_log WHERE op_id = ?1 ORDER BY seq")
            .context("reading log")?;
        let chunks = stmt
            .query_map([op.id], |r| r.get::<_, Vec<u8>>(0))
            .context("reading log")?;
        let mut live = Vec::new();
        for c in chunks {
            live.extend(c.context("reading log")?);
        }
        op.live_output = String::from_utf8_lossy(&live).into_owned();
    }
    Ok(Some(EventDetail {
        event,
        alert,
        timeline,
        ops,
    }))
}

/// An alert as stored, as JSON.
pub fn get_alert(conn: &Connection, fingerprint: &str) -> Result<Option<Value>> {
    conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alert WHERE fingerprint = ?1"
    ))
    .and_then(|mut s| s.query_row([fingerprint], alert_json).optional())
    .context("reading alert")
}

fn alert_json(r: &rusqlite::Row) -> rusqlite::Result<Value> {
    let labels: String = r.get(4)?;
    let annotations: String = r.get(5)?;
    Ok(serde_json::json!({
        "fingerprint": r.get::<_, String>(0)?,
        "source": r.get::<_, String>(1)?,
        "name": r.get::<_, String>(2)?,
        "status": r.get::<_, String>(3)?,
        "labels": serde_json::from_str::<Value>(&labels).unwrap_or(Value::Null),
        "annotations": serde_json::from_str::<Value>(&annotations).unwrap_or(Value::Null),
        "starts_at": r.get::<_, Option<i64>>(6)?,
        "ends_at": r.get::<_, Option<i64>>(7)?,
        "first_seen": r.get::<_, i64>(8)?,
        "last_seen": r.get::<_, i64>(9)?,
        "receipts": r.get::<_, i64>(10)?,
    }))
}

/// Every column of an alert, as `alert_json` reads them.
const ALERT_COLUMNS: &str =
    "fingerprint, source, name, status, labels, annotations, starts_at, ends_at, first_seen, last_seen, receipts";

/// One status's alerts, newest first, down `alert_status`. No filter is
/// ever left open (`?1 IS NULL OR status = ?1`): SQLite would then walk and
/// sort every alert, so each filter has its own query.
const ALERTS_OF_STATUS: &str =
    "WHERE status = ?1 AND last_seen >= ?2 ORDER BY last_seen DESC LIMIT ?3";

/// One name's alerts of one status, newest first, down `alert_name`.
const ALERTS_OF_NAME: &str =
    "WHERE name = ?4 AND status = ?1 AND last_seen >= ?2 ORDER BY last_seen DESC LIMIT ?3";

/// The alert of a fingerprint, of any status or one: one read of the
/// primary key, whatever else the filter says.
const ALERT_OF_FINGERPRINT: &str = "WHERE fingerprint = ?4 AND (?1 IS NULL OR status = ?1) AND last_seen >= ?2 AND (?5 IS NULL OR name = ?5) LIMIT ?3";

/// Alerts, newest first, with their last decisions.
pub fn list_alerts(
    conn: &Connection,
    status: Option<&str>,
    fingerprint: Option<&str>,
    name: Option<&str>,
    since: i64,
    limit: i64,
) -> Result<Vec<Value>> {
    let mut alerts: Vec<Value> = Vec::new();
    let statuses = match (status, fingerprint) {
        (Some(s), _) => vec![Some(s)],
        (None, Some(_)) => vec![None],
        (None, None) => vec![Some("firing"), Some("resolved")],
    };
    let filter = match (fingerprint, name) {
        (Some(_), _) => ALERT_OF_FINGERPRINT,
        (None, Some(_)) => ALERTS_OF_NAME,
        (None, None) => ALERTS_OF_STATUS,
    };
    let sql = format!("SELECT {ALERT_COLUMNS} FROM alert {filter}");
    for status in statuses {
        let mut stmt = conn.prepare_cached(&sql).context("listing alerts")?;
        let rows = match (fingerprint, name) {
            (Some(fp), name) => stmt.query_map(params![status, since, limit, fp, name], alert_json),
            (None, Some(name)) => stmt.query_map(params![status, since, limit, name], alert_json),
            (None, None) => stmt.query_map(params![status, since, limit], alert_json),
        }
        .context("listing alerts")?;
        for row in rows {
            alerts.push(row.context("listing alerts")?);
        }
    }
    // Newest first across both statuses, ties in the index's order.
    fn key(a: &Value) -> (Option<i64>, Option<&str>) {
        (a["last_seen"].as_i64(), a["fingerprint"].as_str())
    }
    alerts.sort_by(|a, b| key(b).cmp(&key(a)));
    alerts.truncate(usize::try_from(limit).unwrap_or(0));
    for a in &mut alerts {
        let fp = a["fingerprint"].as_str().unwrap_or_default().to_string();
        let mut stmt = conn
            .prepare_cached("SELECT at, rule, outcome, reason, event_id FROM decision WHERE fingerprint = ?1 ORDER BY id DESC LIMIT 20")
            .context("reading decisions")?;
        let rows = stmt
            .query_map([fp], |r| {
                Ok(serde_json::json!({
                    "at": r.get::<_, i64>(0)?, "rule": r.get::<_, Option<String>>(1)?, "outcome": r.get::<_, String>(2)?,
                    "reason": r.get::<_, String>(3)?, "event_id": r.get::<_, Option<i64>>(4)?,
                }))
            })
            .context("reading decisions")?;
        a["decisions"] = Value::Array(
            rows.collect::<std::result::Result<_, _>>()
                .context("reading decisions")?,
        );
    }
    Ok(alerts)
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
pub fn list_agents(conn: &Connection) -> Result<Vec<AgentRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT a.id, a.instance, a.tags, a.allow, a.version, a.hostname, a.first_seen, a.last_seen,
               (SELECT count(*) FROM op WHERE op.agent = a.id AND op.state IN ('dispatched', 'running')),
               (SELECT count(*) FROM op WHERE op.agent = a.id AND op.state = 'queued')
             FROM agent a ORDER BY a.id",
        )
        .context("listing agents")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(AgentRow {
                id: r.get(0)?,
                instance: r.get(1)?,
                tags: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                allow: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                version: r.get(4)?,
                hostname: r.get(5)?,
                first_seen: r.get(6)?,
                last_seen: r.get(7)?,
                running_ops: r.get(8)?,
                queued_ops: r.get(9)?,
            })
        })
        .context("listing agents")?;
    rows.collect::<std::result::Result<_, _>>()
        .context("listing agents")
}

/// What tests of the store share: a migrated database in memory, a temp
/// directory, and what SQLite plans for a query.
#[cfg(test)]
pub(crate) mod testing {
    use rusqlite::{Connection, ToSql};

    /// A fresh database at the current schema.
    pub fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::migrations::migrate(&mut conn).unwrap();
        conn
    }

    /// A fresh directory under the system temp dir, named after the test.
    pub fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("heal-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The lines of `EXPLAIN QUERY PLAN sql` with `args` (zeros for any left out).
    pub fn plan(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let zeros = vec![0i64; stmt.parameter_count().saturating_sub(args.len())];
        let mut all: Vec<&dyn ToSql> = args.to_vec();
        all.extend(zeros.iter().map(|z| z as &dyn ToSql));
        stmt.query_map(all.as_slice(), |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{db, plan};
    use super::{
        list_alerts, ALERTS_OF_NAME, ALERTS_OF_STATUS, ALERT_COLUMNS, ALERT_OF_FINGERPRINT,
    };

    /// The plan of a filter of `list_alerts`.
    fn alert_plan(filter: &str, args: &[&dyn rusqlite::ToSql]) -> Vec<String> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alert {filter}");
        plan(&db(), &sql, args)
    }

    #[test]
    fn alerts_are_listed_down_the_status_index_without_a_sort() {
        assert_eq!(
            alert_plan(ALERTS_OF_STATUS, &[&"firing"]),
            ["SEARCH alert USING INDEX alert_status (status=? AND last_seen>?)"]
        );
    }

    #[test]
    fn an_alert_is_found_by_its_fingerprint_in_one_primary_key_read() {
        for (status, name) in [(None, None), (Some("firing"), Some("Disk"))] {
            assert_eq!(
                alert_plan(ALERT_OF_FINGERPRINT, &[&status, &0, &10, &"fp", &name]),
                ["SEARCH alert USING PRIMARY KEY (fingerprint=?)"]
            );
        }
    }

    #[test]
    fn alerts_of_a_name_are_listed_down_their_index_without_a_sort() {
        assert_eq!(
            alert_plan(ALERTS_OF_NAME, &[&"firing", &0, &10, &"Disk"]),
            ["SEARCH alert USING INDEX alert_name (name=? AND status=? AND last_seen>?)"]
        );
    }

    #[test]
    fn alerts_of_both_statuses_come_newest_first_up_to_the_limit() {
        let conn = db();
        for (fp, status, seen) in [
            ("a", "firing", 10),
            ("b", "resolved", 40),
            ("c", "firing", 30),
            ("d", "resolved", 20),
            ("e", "firing", 5),
        ] {
            conn.execute(
                "INSERT INTO alert (fingerprint, source, name, status, labels, annotations, first_seen, last_seen) VALUES (?1, 'own', 'Disk', ?2, '{}', '{}', ?3, ?3)",
                rusqlite::params![fp, status, seen],
            )
            .unwrap();
        }
        let fps = |status, since, limit| -> Vec<String> {
            list_alerts(&conn, status, None, None, since, limit)
                .unwrap()
                .iter()
                .map(|a| a["fingerprint"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(fps(None, 0, 10), ["b", "c", "d", "a", "e"]);
        assert_eq!(fps(None, 0, 3), ["b", "c", "d"]);
        assert_eq!(fps(None, 10, 10), ["b", "c", "d", "a"]);
        assert_eq!(fps(Some("firing"), 0, 2), ["c", "a"]);
        assert_eq!(fps(Some("resolved"), 0, 10), ["b", "d"]);
        assert_eq!(
            list_alerts(&conn, None, Some("d"), None, 0, 10).unwrap()[0]["status"],
            "resolved"
        );
        let by = |fp, name, status| -> Vec<String> {
            list_alerts(&conn, status, fp, name, 0, 10)
                .unwrap()
                .iter()
                .map(|a| a["fingerprint"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(by(Some("c"), Some("Disk"), None), ["c"]);
        assert!(by(Some("c"), Some("Cpu"), None).is_empty());
        assert!(by(Some("c"), None, Some("resolved")).is_empty());
        assert_eq!(by(None, Some("Disk"), None), ["b", "c", "d", "a", "e"]);
        assert_eq!(by(None, Some("Disk"), Some("firing")), ["c", "a", "e"]);
        assert!(by(None, Some("Cpu"), None).is_empty());
        assert!(fps(None, 0, 0).is_empty());
    }
}
