//! The writer thread: jobs committed in groups, each in its own savepoint,
//! each caller answered after the commit that holds its write.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::health;
use super::sql::Db;
use crate::error::{Error, Result, StoreContext};
use crate::shutdown::Shutdown;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;

type Done = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
type Job = Box<dyn for<'c> FnOnce(Db<'c>) -> Done + Send>;

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
        let job: Job = Box::new(move |conn: Db<'_>| {
            let result = in_savepoint(conn, f);
            if let Err(Error::Store(_, e)) = &result {
                health::observe(e);
            }
            Box::new(move |committed: std::result::Result<(), String>| {
                let result = match committed {
                    Ok(()) => result,
                    // Nothing was stored: the client should retry (503).
                    Err(e) => result.and(Err(Error::request(
                        503,
                        format!("store: commit failed, nothing was stored: {e}"),
                    ))),
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

fn in_savepoint<T>(conn: Db<'_>, f: impl FnOnce(Db<'_>) -> Result<T>) -> Result<T> {
    conn.batch("SAVEPOINT job").context("opening savepoint")?;
    let result = f(conn);
    let end = if result.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    conn.batch(end).context("closing savepoint")?;
    result
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
                        // Runs on the closed session, where every statement
                        // fails at once, so its caller is answered.
                        job(conn.db())(Err(message.clone()));
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

/// Runs a batch of jobs in one transaction and answers each after COMMIT.
fn commit_batch(db: Db<'_>, batch: Vec<Job>, committed: &impl Fn(Duration)) {
    // One writer at a time, on either database (`Db::begin_write`).
    let begin = db.begin_write();
    let sqlite = match db {
        Db::Sqlite(c) => Some(c),
        Db::Postgres(_) => None,
    };
    let changes = || sqlite.map_or(0, |c| c.total_changes());
    {
        let mark = health::mark();
        let before = changes();
        if let Err(e) = db.batch(begin) {
            health::observe_db(&e);
            log::error!("store: cannot begin a transaction: {e}");
            let message = e.to_string();
            for job in batch {
                // The job still runs so its caller is answered, but nothing is committed.
                job(db)(Err(message.clone()));
            }
            return;
        }
        let done: Vec<Done> = batch.into_iter().map(|job| job(db)).collect();
        let commit_started = Instant::now();
        let result = db.batch("COMMIT").map_err(|e| {
            health::observe_db(&e);
            log::error!("store: commit failed: {e}");
            let _ = db.batch("ROLLBACK");
            e.to_string()
        });
        committed(commit_started.elapsed());
        if result.is_ok() && changes() > before {
            health::committed(mark);
        }
        for d in done {
            d(result.clone());
        }
    }
}
