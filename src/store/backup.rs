//! The database as a file: opening one that must already exist, a consistent
//! copy of it taken while `heal serve` writes (`heal backup`), and what a
//! database holds.
//!
//! The copy is made with `VACUUM INTO`, not SQLite's online backup API. Both
//! read under WAL without blocking the server's writer, but the backup API,
//! copying step by step, starts over whenever another connection writes, so
//! under steady intake it may never finish; copying in a single step holds one
//! read transaction, which is what `VACUUM INTO` does anyway. `VACUUM INTO`
//! also writes a compact, standalone file in rollback-journal mode: no -wal
//! sidecar, no free pages, and the schema version (`user_version`) kept. It
//! does not fsync what it wrote: the caller does, before renaming the file
//! into place.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result, StoreContext};
use crate::store::migrations;

/// What a database holds, as `heal backup` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    /// Schema version: how many migrations it has had.
    pub version: usize,
    /// Events stored.
    pub events: i64,
    /// Alerts stored (one row per fingerprint).
    pub alerts: i64,
}

/// Opens an existing database as it is: never creates one and changes no
/// setting (not even the journal mode). Read-only if the file is.
pub fn open_existing(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::Store(format!("cannot open database {}", path.display()), e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .context("setting busy timeout")?;
    Ok(conn)
}

/// Writes a consistent copy of `conn`'s database to `dest`, which must not
/// exist or must be empty. The copy is the database as of the statement's start.
pub fn copy_into(conn: &Connection, dest: &Path) -> Result<()> {
    let name = dest.to_str().ok_or_else(|| {
        Error::Usage(format!(
            "{}: heal can only write a backup to a UTF-8 path",
            dest.display()
        ))
    })?;
    conn.execute("VACUUM INTO ?1", [name])
        .map_err(|e| Error::Store(format!("copying the database into {name}"), e))?;
    Ok(())
}

/// The schema version and the number of events and alerts of a heal database.
pub fn contents(conn: &Connection) -> Result<Contents> {
    let version = migrations::version(conn).map_err(Error::Failed)?;
    if version == 0 {
        return Err(Error::Failed(
            "it has no heal schema (version 0): is it a heal database?".into(),
        ));
    }
    let count = |table: &str| -> Result<i64> {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .context(&format!("counting {table} rows"))
    };
    Ok(Contents {
        version,
        events: count("event")?,
        alerts: count("alert")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_dir;

    #[test]
    fn copy_is_standalone_and_holds_what_was_committed() {
        let dir = temp_dir("copy");
        let mut conn = crate::store::open(&dir.join("heal.db")).unwrap();
        migrations::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at)
             VALUES ('r', 'b', 'k', 'fp', 'queued', 'live', 1, 1)",
        )
        .unwrap();
        let copy = dir.join("copy.db");
        copy_into(&conn, &copy).unwrap();
        let backup = open_existing(&copy).unwrap();
        assert_eq!(
            contents(&backup).unwrap(),
            Contents {
                version: migrations::MIGRATIONS.len(),
                events: 1,
                alerts: 0
            }
        );
        let mode: String = backup
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "no -wal sidecar belongs to the copy");
        assert!(!dir.join("copy.db-wal").exists());
        // VACUUM INTO refuses to write over a database.
        assert!(copy_into(&conn, &copy).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn opening_never_creates_a_database() {
        let dir = temp_dir("missing");
        assert!(open_existing(&dir.join("nope.db")).is_err());
        assert!(!dir.join("nope.db").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_database_is_not_heal_s() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(contents(&conn)
            .unwrap_err()
            .to_string()
            .contains("version 0"));
    }
}
