//! Opening the database: heal's connection settings, creating the file
//! private, refusing a damaged one, migrating, and the integrity reads.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{hash_stored_ping_keys, migrations};
use crate::error::{Error, Result, StoreContext};

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

/// Read connections kept open between requests, the one used last lent
/// first. Each SQLite connection has its own page cache; a worker keeping
/// its own connection would read with a cache another query had filled (32
/// workers take requests in turn), while the one used last still holds what
/// the next request of a burst reads. On PostgreSQL each is a session.
pub struct Readers {
    location: super::Location,
    idle: std::sync::Mutex<Vec<super::Conn>>,
}

/// More idle readers than this are closed when given back.
const MAX_IDLE_READERS: usize = 64;

impl Readers {
    pub fn new(location: &super::Location) -> Readers {
        Readers {
            location: location.clone(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The reader used last, or a new one when all are lent.
    pub fn take(&self) -> Result<super::Conn> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.location.open(),
        }
    }

    /// Gives back a reader that ended its work normally (one a panic or a
    /// failed query left behind is dropped instead).
    pub fn give(&self, conn: super::Conn) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::{open_and_migrate, Readers};
    use crate::store::testing::temp_dir;

    /// Whether a connection carries the mark `mark` left on it.
    fn marked(conn: &crate::store::Conn, name: &str) -> bool {
        conn.sqlite()
            .unwrap()
            .query_row(
                "SELECT count(*) FROM temp.sqlite_master WHERE name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    }

    fn mark(conn: &crate::store::Conn, name: &str) {
        conn.sqlite()
            .unwrap()
            .execute_batch(&format!("CREATE TEMP TABLE {name} (x)"))
            .unwrap();
    }

    #[test]
    fn the_reader_given_back_last_is_lent_first_and_a_new_one_when_all_are_lent() {
        let dir = temp_dir("readers");
        let path = dir.join("heal.db");
        drop(open_and_migrate(&path).unwrap());
        let readers = Readers::new(&crate::store::Location::File(path.clone()));
        let (a, b) = (readers.take().unwrap(), readers.take().unwrap());
        mark(&a, "a");
        mark(&b, "b");
        readers.give(a);
        readers.give(b);
        let first = readers.take().unwrap();
        assert!(marked(&first, "b"), "the one given back last comes first");
        let second = readers.take().unwrap();
        assert!(marked(&second, "a"));
        let third = readers.take().unwrap();
        assert!(!marked(&third, "a") && !marked(&third, "b"), "a new one");
        let n: i64 = third
            .sqlite()
            .unwrap()
            .query_row("SELECT count(*) FROM alert", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
