//! Whether the store can be trusted right now, for `/-/ready`.
//!
//! SQLite reports every failed statement, and every corruption it detects,
//! to its error log (`SQLITE_CONFIG_LOG`), whichever connection hit it: the
//! writer's or any reader's. `serve` installs `record` there before the
//! first connection opens, so this module sees each `SQLITE_CORRUPT` and
//! `SQLITE_NOTADB` (the file is damaged) and each `SQLITE_FULL` (a write
//! found no space: SQLite maps `ENOSPC` to it) without every caller
//! reporting it. The state is process-wide, like the log it comes from.
//!
//! Corruption stays until heal restarts (the start-up `quick_check` then
//! decides); a full disk clears once a later write commits (`committed`),
//! or `/-/ready`'s own `probe_write` does.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use rusqlite::ffi;

const HEALTHY: u8 = 0;
const FULL: u8 = 1;
const CORRUPT: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(HEALTHY);
/// Problems seen so far: a write batch that saw none clears a full disk.
static SEEN: AtomicU64 = AtomicU64::new(0);

/// Routes SQLite's error log to `record`; call it before any connection opens.
pub fn install() {
    // SAFETY: called before SQLite is initialized (no connection is open yet),
    // and `record` calls no SQLite function and is thread-safe (atomics only).
    if let Err(e) = unsafe { rusqlite::trace::config_log(Some(record)) } {
        log::warn!("cannot follow SQLite's error log ({e}): /-/ready will not see a corrupt or full database");
    }
}

/// SQLite's error log callback: notes corruption and full disks.
fn record(code: std::ffi::c_int, _message: &str) {
    match code & 0xff {
        ffi::SQLITE_CORRUPT | ffi::SQLITE_NOTADB => note(CORRUPT),
        ffi::SQLITE_FULL => note(FULL),
        _ => {}
    }
}

/// Notes an error the store returned (for paths that do not go through the log).
pub fn observe(e: &rusqlite::Error) {
    if let Some(code) = e.sqlite_error() {
        record(code.extended_code, "");
    }
}

/// `observe` for an error of either database; PostgreSQL's say nothing of
/// the SQLite file.
pub fn observe_db(e: &super::sql::DbError) {
    if let super::sql::DbError::Sqlite(e) = e {
        observe(e);
    }
}

fn note(problem: u8) {
    SEEN.fetch_add(1, Ordering::SeqCst);
    STATE.fetch_max(problem, Ordering::SeqCst);
}

/// A mark to pass to `committed` after a write batch.
pub fn mark() -> u64 {
    SEEN.load(Ordering::SeqCst)
}

/// A write batch that changed rows committed: a full disk has room again,
/// unless a problem was seen since `mark`.
pub fn committed(mark: u64) {
    if SEEN.load(Ordering::SeqCst) == mark {
        let _ = STATE.compare_exchange(FULL, HEALTHY, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Whether the last problem seen was a full disk (and no corruption).
pub fn is_full() -> bool {
    STATE.load(Ordering::SeqCst) == FULL
}

/// Bytes free for heal on the filesystem holding `path`, if it can be read.
pub fn room(path: &std::path::Path) -> Option<u64> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    crate::probe::space(dir).ok().map(|s| s.available)
}

/// A write that needs disk space and changes nothing: the schema version
/// written back as it is (SQLite rewrites the database's first page). Run
/// through the writer while the disk is full, its commit says there is room
/// again even when nothing else writes (a `/-/ready` that kept traffic away
/// would otherwise never see a write succeed).
pub fn probe_write(db: super::sql::Db<'_>) -> crate::error::Result<()> {
    use crate::error::StoreContext;
    // Only a SQLite file fills its disk under heal; PostgreSQL says so itself.
    let super::sql::Db::Sqlite(conn) = db else {
        return Ok(());
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .context("reading the schema version")?;
    conn.pragma_update(None, "user_version", version)
        .context("writing the schema version back")
}

/// A read that must succeed for the store to be ready.
pub fn probe_read(db: super::sql::Db<'_>) -> crate::error::Result<()> {
    use crate::error::StoreContext;
    db.query_row("SELECT 1", super::sql::args![], |_| Ok(()))
        .context("readiness check")?;
    Ok(())
}

/// Why the store is not ready, if it is not.
pub fn problem() -> Option<&'static str> {
    match STATE.load(Ordering::SeqCst) {
        CORRUPT => Some("the database is corrupt (SQLite reported SQLITE_CORRUPT or SQLITE_NOTADB): stop heal, run heal check-db, and restore the latest heal backup"),
        FULL => Some("the disk holding the database is full (SQLITE_FULL): writes fail until space is freed"),
        _ => None,
    }
}
