//! The writer thread: jobs committed in groups, each in its own savepoint,
//! each caller answered after the commit that holds its write. The
//! statements that open and close savepoints travel with the one before
//! them (`BEGIN …; SAVEPOINT job`, `RELEASE job; SAVEPOINT job`, `RELEASE
//! job; COMMIT`): on PostgreSQL each is a round trip, so a job costs one
//! round trip beside its own statements, not two.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::health;
use super::sql::Db;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;

type Done = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
/// A job run inside its savepoint (or not run, given no database: its
/// transaction failed): whether it succeeded (else its savepoint is rolled
/// back), and how to answer its caller after the commit.
type Job = Box<dyn for<'c> FnOnce(Option<Db<'c>>) -> (bool, Done) + Send>;

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
        f: impl for<'c> FnOnce(Db<'c>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = sync_channel(1);
        let job: Job = Box::new(move |conn: Option<Db<'_>>| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(Error::request(
                    503,
                    "store: the transaction failed, nothing was stored",
                )),
            };
            if let Err(Error::Store(_, e)) = &result {
                health::observe(e);
            }
            let ok = result.is_ok();
            let done: Done = Box::new(move |committed: std::result::Result<(), String>| {
                let result = match committed {
                    Ok(()) => result,
                    // Nothing was stored: the client should retry (503).
                    Err(e) => result.and(Err(Error::request(
                        503,
                        format!("store: commit failed, nothing was stored: {e}"),
                    ))),
                };
                let _ = tx.send(result);
            });
            (ok, done)
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Failed("store: the writer has stopped".into()))?;
        rx.recv()
            .map_err(|_| Error::Failed("store: the writer stopped before answering".into()))?
    }
}

/// The writer thread: commits queued jobs in groups until shutdown and an
/// idle queue; `committed` hears how long each COMMIT took.
pub fn run_writer(
    mut conn: Conn,
    reopen: impl Fn() -> Result<Conn>,
    jobs: Receiver<Job>,
    shutdown: &Shutdown,
    committed: impl Fn(Duration),
) {
    // Since when the database has been unreachable, and when that was last logged.
    let mut outage: Option<(Instant, Instant)> = None;
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
        // A PostgreSQL session that ended (a restart, a failover) is
        // replaced when work comes; while no new one opens, each batch is
        // refused and its callers hear why (503). Logged when it begins,
        // every OUTAGE_LOG_EVERY while it lasts, and when it ends.
        if conn.is_closed() {
            match reopen() {
                Ok(new) => {
                    let after = outage.take().map(|(since, _)| since.elapsed());
                    log::info!(
                        "store: the database is back{}; a new session is open",
                        after.map_or(String::new(), |d| format!(
                            " after {:.1} s",
                            d.as_secs_f64()
                        ))
                    );
                    conn = new;
                }
                Err(e) => {
                    let now = Instant::now();
                    let (since, logged) = outage.get_or_insert((now, now - OUTAGE_LOG_EVERY));
                    if now.duration_since(*logged) >= OUTAGE_LOG_EVERY {
                        log::error!(
                            "store: the database session ended {:.0} s ago and no new one opens: {e}; writes answer 503 until it does",
                            since.elapsed().as_secs_f64()
                        );
                        *logged = now;
                    }
                    let message = format!("the database is unavailable: {e}");
                    for job in batch {
                        job(None).1(Err(message.clone()));
                    }
                    continue;
                }
            }
        }
        commit_batch(conn.db(), batch, &committed);
    }
}

/// How often a database outage is logged again while it lasts.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(30);

/// Runs a batch of jobs in one transaction, each in its savepoint, and
/// answers each after COMMIT. Should a savepoint not open or close, the
/// whole batch is rolled back and every caller hears so: a transaction
/// that failed underneath would otherwise end its COMMIT as a silent
/// rollback.
fn commit_batch(db: Db<'_>, batch: Vec<Job>, committed: &impl Fn(Duration)) {
    // One writer at a time, on either database (`Db::begin_write`).
    let begin = format!("{}; SAVEPOINT job", db.begin_write());
    let sqlite = match db {
        Db::Sqlite(c) => Some(c),
        Db::Postgres(_) => None,
    };
    let changes = || sqlite.map_or(0, |c| c.total_changes());
    let mark = health::mark();
    let before = changes();
    if let Err(e) = db.batch(&begin) {
        health::observe_db(&e);
        log::error!("store: cannot begin a transaction: {e}");
        let _ = db.batch("ROLLBACK");
        let message = e.to_string();
        for job in batch {
            job(None).1(Err(message.clone()));
        }
        return;
    }
    let last = batch.len() - 1;
    let mut done: Vec<Done> = Vec::with_capacity(batch.len());
    let mut failed: Option<String> = None;
    let mut commit_took = Duration::ZERO;
    for (i, job) in batch.into_iter().enumerate() {
        if failed.is_some() {
            done.push(job(None).1);
            continue;
        }
        let (ok, d) = job(Some(db));
        done.push(d);
        let close = if ok {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        let next = if i == last { "COMMIT" } else { "SAVEPOINT job" };
        let started = Instant::now();
        if let Err(e) = db.batch(&format!("{close}; {next}")) {
            health::observe_db(&e);
            log::error!(
                "store: {} failed: {e}",
                if i == last { "commit" } else { "a savepoint" }
            );
            let _ = db.batch("ROLLBACK");
            failed = Some(e.to_string());
        }
        if i == last {
            commit_took = started.elapsed();
        }
    }
    committed(commit_took);
    let result = failed.map_or(Ok(()), Err);
    if result.is_ok() && changes() > before {
        health::committed(mark);
    }
    for d in done {
        d(result.clone());
    }
}
