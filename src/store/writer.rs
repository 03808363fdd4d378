//! The writer thread: jobs committed in groups, each in its own savepoint,
//! each caller answered after the commit that holds its write.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::health;
use crate::error::{Error, Result, StoreContext};
use crate::shutdown::Shutdown;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;

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
