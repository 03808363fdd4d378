//! Which server leads, when several share a PostgreSQL database: the
//! sweeper, the scheduler (heartbeats, probes, schedules, retention,
//! internal alerts) and the outbox run on the leader only.
//!
//! The leader holds the store's `work` lease (`store::leader`), renewed
//! every second for `TTL`; a server that finds it free or expired takes
//! it, so another leads within `TTL` plus a second of the leader's death.
//! A server restarted on the same host and address takes the lease of its
//! earlier run at once as it starts (that run is gone: the address is this
//! one's now).
//! Each store job only the leader may commit (the sweeper's and the
//! scheduler's) calls `fence` first: writes on PostgreSQL are taken in
//! turn by every server (`store::writer`), so a leader that was paused past
//! its lease finds it taken inside that very transaction and commits
//! nothing. The outbox only checks `leads` before each delivery: a
//! notification sent just as the lease passes may go out again from the
//! next leader, within the outbox's at-least-once bound.
//!
//! On SQLite one server owns the file: it always leads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::leader::{self, Lease};
use crate::store::sql::Db;
use crate::store::Writer;

/// How long a lease lasts unless renewed.
pub const TTL: Duration = Duration::from_secs(10);

/// How early a leader stops acting before its lease would pass by its own
/// clock, against the time a renewal takes to commit.
const MARGIN: Duration = Duration::from_secs(3);

/// The lease's name in the store.
const WORK: &str = "work";

/// This server's part in leading.
pub struct Leadership {
    /// This server's id as the lease names it: host, address and pid.
    pub id: String,
    /// How an earlier run of this server (same host and address) named
    /// itself: as this one starts, its lease is taken at once, not when it
    /// passes.
    predecessor: String,
    /// Whether the first renewal has been answered.
    started: AtomicBool,
    /// Whether the store is shared (PostgreSQL): if not, this server leads.
    shared: bool,
    /// The lease held, and until when (by this server's monotonic clock)
    /// it may act on it.
    held: Mutex<Option<(Lease, Instant)>>,
}

impl Leadership {
    /// `id` is `host address pid N`; the part before the pid names the
    /// server across restarts.
    pub fn new(id: String, shared: bool) -> Leadership {
        let predecessor = match id.rfind(" pid ") {
            Some(at) => id[..at + " pid ".len()].to_string(),
            None => id.clone(),
        };
        Leadership {
            id,
            predecessor,
            started: AtomicBool::new(false),
            shared,
            held: Mutex::new(None),
        }
    }

    /// Whether the store is shared by several servers (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether this server leads now.
    pub fn leads(&self) -> bool {
        if !self.shared {
            return true;
        }
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(_, until)| Instant::now() < *until)
    }

    /// The lease held now, if any.
    fn lease(&self) -> Option<Lease> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.as_ref()
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(lease, _)| lease.clone())
    }

    /// Inside a store job only the leader may commit: an error (and the
    /// job's rollback) unless this server still holds its lease.
    pub fn fence(&self, db: Db<'_>) -> Result<()> {
        if !self.shared {
            return Ok(());
        }
        let lease = self.lease().ok_or_else(not_leading)?;
        if leader::fence(db, &lease)? {
            Ok(())
        } else {
            Err(not_leading())
        }
    }

    /// Takes or renews the lease (each second); logs a change of part.
    pub fn renew(&self, writer: &Writer) {
        if !self.shared {
            return;
        }
        let asked = Instant::now();
        let id = self.id.clone();
        // Only as it starts: a predecessor's lease is taken at once.
        let predecessor = (!self.started.load(Ordering::SeqCst)).then(|| self.predecessor.clone());
        let ttl = TTL.as_millis() as i64;
        let got = writer.write(move |db| match &predecessor {
            Some(p) => leader::lead_after(db, WORK, &id, p, ttl),
            None => leader::lead(db, WORK, &id, ttl),
        });
        if got.is_ok() {
            self.started.store(true, Ordering::SeqCst);
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let before = held.as_ref().map(|(lease, _)| lease.term);
        match got {
            Ok(Some(lease)) => {
                if before != Some(lease.term) {
                    log::info!(
                        "this server leads now (term {}): sweeps, probes, schedules and notifications run here",
                        lease.term
                    );
                }
                *held = Some((lease, asked + TTL - MARGIN));
            }
            Ok(None) => {
                if before.is_some() {
                    log::warn!("this server no longer leads: another took the lease");
                }
                *held = None;
            }
            Err(e) => {
                // Kept until its time passes: the store may be back by then.
                log::error!("leading: cannot renew the lease: {e}");
            }
        }
    }

    /// Lets the lease go as the server stops, so another leads at once.
    pub fn resign(&self, writer: &Writer) {
        let Some(lease) = self.lease() else { return };
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(e) = writer.write(move |db| leader::resign(db, &lease)) {
            log::warn!("leading: cannot give the lease up: {e}; another takes it when it passes");
        }
    }
}

fn not_leading() -> Error {
    Error::Failed("this server no longer leads; the leader does this".into())
}
