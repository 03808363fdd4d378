//! `heal backup`, `heal check-db` and `heal migrate`: the database file
//! itself, handled while `heal serve` runs (backup, check-db) or before it
//! starts (migrate, which takes the database's lock as `serve` does).
//!
//! The database is found as `serve` finds it: `--db`, else `[server] db` of
//! the config, else `./heal.db`. Neither command ever creates a database: a
//! missing one is an error naming the path. A backup is written to FILE.tmp,
//! fsynced, then renamed, so a crash never leaves half a file under FILE.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use argh::FromArgs;

use crate::config;
use crate::error::{Error, Result};
use crate::store::{self, backup, migrations};

/// Copy the database while heal serve runs: heal backup FILE [--db F] [--force].
#[derive(FromArgs)]
#[argh(subcommand, name = "backup")]
pub struct Backup {
    /// where to write the copy (a standalone SQLite file, readable by you only)
    #[argh(positional)]
    file: PathBuf,
    /// SQLite database (default: [server] db of --config, else ./heal.db)
    #[argh(option)]
    db: Option<PathBuf>,
    /// config file naming the database (default: ./runbooks.toml, if it exists)
    #[argh(option)]
    config: Option<PathBuf>,
    /// replace FILE if it exists, and a FILE.tmp left by an interrupted backup
    #[argh(switch)]
    force: bool,
}

/// Bring the database's schema up to date, or only say what would run (--check).
///
/// With --check: exit 0 up to date, 1 migrations pending, 2 the database is
/// newer than this heal. With --to postgres://USER@HOST:PORT/DB: the same for
/// a PostgreSQL database; with --from FILE too, copy a stopped SQLite store
/// into that empty PostgreSQL database and check every table's row count.
#[derive(FromArgs)]
#[argh(subcommand, name = "migrate")]
pub struct Migrate {
    /// only say which migrations would run; change nothing
    #[argh(switch)]
    check: bool,
    /// SQLite database (default: [server] db of --config, else ./heal.db)
    #[argh(option)]
    db: Option<PathBuf>,
    /// config file naming the database (default: ./runbooks.toml, if it exists)
    #[argh(option)]
    config: Option<PathBuf>,
    /// SQLite store to copy into --to (heal serve must be stopped)
    #[argh(option)]
    from: Option<PathBuf>,
    /// the PostgreSQL database (postgres://USER@HOST:PORT/DB?sslmode=...; password
    /// from PGPASSWORD or ~/.pgpass)
    #[argh(option)]
    to: Option<String>,
}

/// Check the whole database for damage (PRAGMA integrity_check); safe while heal serve runs.
///
/// Exit 0 intact, 2 damaged (with how to restore), 1 the check could not run.
#[derive(FromArgs)]
#[argh(subcommand, name = "check-db")]
pub struct CheckDb {
    /// SQLite database (default: [server] db of --config, else ./heal.db)
    #[argh(option)]
    db: Option<PathBuf>,
    /// config file naming the database (default: ./runbooks.toml, if it exists)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Problems `heal check-db` lists at most.
const CHECK_DB_PROBLEMS: usize = 20;

/// `heal check-db`: the full `integrity_check` (every page, index entry and
/// constraint), which `serve`'s start-up `quick_check` leaves out.
pub fn check_db(c: CheckDb) -> Result<()> {
    let db = db_path(c.db, c.config)?;
    let conn = open_existing(&db)?;
    let started = std::time::Instant::now();
    let damaged = |what: String| {
        Error::Config(format!(
            "database {} is damaged: {what}. {}",
            db.display(),
            store::restore_hint(&db)
        ))
    };
    let found = match store::integrity(&conn, "integrity_check", CHECK_DB_PROBLEMS) {
        Ok(found) => found,
        Err(Error::Store(_, e)) if store::is_corrupt(&e) => return Err(damaged(e.to_string())),
        Err(e) => return Err(e),
    };
    if found != ["ok"] {
        for line in &found {
            println!("{line}");
        }
        return Err(damaged(format!(
            "integrity_check found {}{} problem(s), listed above",
            found.len(),
            if found.len() == CHECK_DB_PROBLEMS {
                " or more"
            } else {
                ""
            }
        )));
    }
    let pages = store::page_count(&conn);
    println!(
        "database {}: integrity_check ok ({pages} pages, {:.1}s)",
        db.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `heal backup`: a consistent copy of a live database, written whole or not at all.
pub fn backup(c: Backup) -> Result<()> {
    let db = db_path(c.db, c.config)?;
    check_target(&c.file, &db, c.force)?;
    let source = open_existing(&db)?;
    schema_version(&source, &db)?;
    let tmp = Tmp::create(tmp_path(&c.file)?, c.force)?;
    backup::copy_into(&source, &tmp.path)?;
    drop(source);
    // Read from the copy: what the backup holds, and proof that it opens.
    let copy = backup::open_existing(&tmp.path)?;
    let contents = backup::contents(&copy).map_err(|e| in_file(&db, e))?;
    drop(copy);
    let size = tmp.persist(&c.file)?;
    println!(
        "wrote {}: {size} bytes ({:.1} MiB), schema version {}, {} events, {} alerts (from {})",
        c.file.display(),
        size as f64 / (1024.0 * 1024.0),
        contents.version,
        contents.events,
        contents.alerts,
        db.display()
    );
    Ok(())
}

/// `heal migrate [--check]`: the database's schema version against this heal's.
pub fn migrate(c: Migrate) -> Result<()> {
    if let Some(url) = c.to {
        return migrate_postgres(&url, c.from, c.db.is_some() || c.config.is_some(), c.check);
    }
    if c.from.is_some() {
        return Err(Error::Usage(
            "--from names the SQLite store to copy into --to: heal migrate --from heal.db --to postgres://USER@HOST:PORT/DB".into(),
        ));
    }
    let db = db_path(c.db, c.config)?;
    let found = schema_version(&open_existing(&db)?, &db)?;
    let known = migrations::MIGRATIONS.len();
    println!(
        "database {}: schema version {found}, this heal's is {known}",
        db.display()
    );
    if found > known {
        return Err(Error::Config(format!(
            "{}: {}",
            db.display(),
            migrations::newer(found)
        )));
    }
    if found == known {
        println!("up to date: nothing to migrate");
        return Ok(());
    }
    let pending = || {
        for n in found + 1..=known {
            println!("  {n}: {}", migrations::summary(n));
        }
    };
    if c.check {
        println!("pending migrations:");
        pending();
        return Err(Error::Failed(format!(
            "{}: {} migration(s) pending: take a heal backup, then run heal migrate (or start heal serve)",
            db.display(),
            known - found
        )));
    }
    let _lock = store::lock::acquire(&db, "heal migrate")?;
    drop(store::open_and_migrate(&db)?);
    println!("applied:");
    pending();
    println!("schema version {known}: up to date");
    Ok(())
}

/// `heal migrate --to URL [--from FILE] [--check]`: a PostgreSQL database's
/// schema brought up to date (under the migration lock, so several heals
/// may run it at once), then a stopped SQLite store copied into it.
fn migrate_postgres(
    url: &str,
    from: Option<PathBuf>,
    sqlite_named: bool,
    check: bool,
) -> Result<()> {
    let usage = "heal migrate --from heal.db --to postgres://USER@HOST:PORT/DB";
    if !crate::pg::is_url(url) {
        return Err(Error::Usage(format!(
            "--to takes a PostgreSQL URL (postgres://USER@HOST:PORT/DB): {usage}"
        )));
    }
    if sqlite_named {
        return Err(Error::Usage(format!(
            "--db and --config name a SQLite store to migrate in place; with --to, name the store to copy with --from: {usage}"
        )));
    }
    if check && from.is_some() {
        return Err(Error::Usage(format!(
            "--check only reads the schema version of --to: drop --from, or --check to copy ({usage})"
        )));
    }
    let shown = crate::redact::redact_url_secrets(url);
    // The SQLite store first: a missing file or a running server is said
    // before PostgreSQL is touched.
    let source = match &from {
        Some(file) => {
            open_existing(file)?;
            let lock = store::lock::acquire(file, "heal migrate")?;
            let conn = store::open_and_migrate(file)?;
            Some((file, lock, conn))
        }
        None => None,
    };
    let mut pg = crate::pg::connect(url)?;
    let found = store::postgres::schema_version(&mut pg)?;
    let known = migrations::MIGRATIONS.len();
    println!("database {shown}: schema version {found}, this heal's is {known}");
    if found > known {
        return Err(Error::Config(format!(
            "{shown}: {}",
            migrations::newer(found)
        )));
    }
    if check {
        if found == known {
            println!("up to date: nothing to migrate");
            return Ok(());
        }
        println!("pending migrations:");
        for n in found + 1..=known {
            println!("  {n}: {}", migrations::summary(n));
        }
        return Err(Error::Failed(format!(
            "{shown}: {} migration(s) pending: run heal migrate --to",
            known - found
        )));
    }
    let before = store::postgres::migrate(&mut pg)?;
    if before < known {
        println!("applied migrations {} to {known}", before + 1);
    }
    let Some((file, _lock, conn)) = source else {
        println!("schema version {known}: up to date");
        return Ok(());
    };
    let started = std::time::Instant::now();
    let copied = store::postgres::copy_sqlite(&conn, &mut pg)?;
    let rows: i64 = copied.iter().map(|(_, n)| n).sum();
    println!(
        "copied {} into {shown}: {rows} rows in {} tables, {:.1} s; every table's row count checked",
        file.display(),
        copied.len(),
        started.elapsed().as_secs_f64()
    );
    for (table, n) in &copied {
        println!("  {table:<16} {n:>10}");
    }
    println!(
        "{} is left as it was. To serve from {shown}: in the server's unit (heal.service) set --db (or [server] db, or HEAL_DB) to the URL given to --to, with the password in PGPASSWORD from an EnvironmentFile= of mode 0600 or in the service user's ~/.pgpass, never in the unit itself; then restart heal. Several heal serve may share the database (README: High availability).",
        file.display()
    );
    Ok(())
}

/// The database path as `serve` resolves it; a missing default config means ./heal.db.
fn db_path(db: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(db) = db {
        return Ok(db);
    }
    let config = match config {
        Some(path) => path,
        None if Path::new("runbooks.toml").exists() => PathBuf::from("runbooks.toml"),
        None => return Ok(PathBuf::from("heal.db")),
    };
    Ok(config::load(&config)?.server.db)
}

/// Opens the database, which must exist; the error names the path and the fix.
fn open_existing(db: &Path) -> Result<rusqlite::Connection> {
    match std::fs::metadata(db) {
        Ok(m) if m.is_file() => backup::open_existing(db),
        Ok(_) => Err(Error::Failed(format!(
            "database {} is not a file: pass --db FILE",
            db.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Failed(format!(
            "database {} does not exist: pass --db FILE, or set [server] db in the config (heal serve creates it)",
            db.display()
        ))),
        Err(e) => Err(Error::Io(format!("cannot read database {}", db.display()), e)),
    }
}

/// The schema version of the database at `db`; reading it fails on a file that is not SQLite.
fn schema_version(conn: &rusqlite::Connection, db: &Path) -> Result<usize> {
    migrations::version(conn).map_err(|e| in_file(db, Error::Failed(e)))
}

/// Refuses to write over a file unless forced, and never over the database itself.
fn check_target(file: &Path, db: &Path, force: bool) -> Result<()> {
    let Ok(target) = std::fs::metadata(file) else {
        return Ok(());
    };
    if target.is_dir() {
        return Err(Error::Failed(format!(
            "{} is a directory: give the backup a file name, like {}",
            file.display(),
            file.join("heal-backup.db").display()
        )));
    }
    if !force {
        return Err(Error::Failed(format!(
            "{} exists: pass --force to replace it, or choose another name",
            file.display()
        )));
    }
    if let Ok(source) = std::fs::metadata(db) {
        if (source.dev(), source.ino()) == (target.dev(), target.ino()) {
            return Err(Error::Usage(format!(
                "{} is the database itself: write the backup to another file\nTry: heal backup heal-backup.db --db {}",
                file.display(),
                db.display()
            )));
        }
    }
    Ok(())
}

fn tmp_path(file: &Path) -> Result<PathBuf> {
    let mut name = file
        .file_name()
        .ok_or_else(|| {
            Error::Usage(format!(
                "{} is not a file name\nTry: heal backup heal-backup.db",
                file.display()
            ))
        })?
        .to_os_string();
    name.push(".tmp");
    Ok(file.with_file_name(name))
}

/// FILE.tmp while the copy is written: removed on drop unless persisted.
struct Tmp {
    path: PathBuf,
    persisted: bool,
}

impl Tmp {
    /// Creates the empty file (mode 0600) the copy goes into.
    fn create(path: PathBuf, force: bool) -> Result<Tmp> {
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
        };
        match create() {
            Ok(_) => Ok(Tmp::new(path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && force => {
                std::fs::remove_file(&path)
                    .map_err(|e| Error::Io(format!("cannot remove {}", path.display()), e))?;
                create().map_err(|e| cannot_create(&path, e))?;
                Ok(Tmp::new(path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Failed(format!(
                "{} exists: another heal backup may be writing it; if none is, remove it or pass --force",
                path.display()
            ))),
            Err(e) => Err(cannot_create(&path, e)),
        }
    }

    fn new(path: PathBuf) -> Tmp {
        Tmp {
            path,
            persisted: false,
        }
    }

    /// Syncs the copy to disk and renames it to `file`; returns its size.
    fn persist(mut self, file: &Path) -> Result<u64> {
        let io = |what: String| move |e| Error::Io(what, e);
        let f =
            File::open(&self.path).map_err(io(format!("cannot open {}", self.path.display())))?;
        f.sync_all()
            .map_err(io(format!("cannot sync {}", self.path.display())))?;
        let size = f
            .metadata()
            .map_err(io(format!("cannot read {}", self.path.display())))?
            .len();
        std::fs::rename(&self.path, file).map_err(io(format!(
            "cannot rename {} to {}",
            self.path.display(),
            file.display()
        )))?;
        self.persisted = true;
        // The rename is durable once the directory is synced.
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("cannot sync directory {}", dir.display())))?;
        Ok(size)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn cannot_create(path: &Path, e: std::io::Error) -> Error {
    Error::Failed(format!(
        "cannot create {}: {e} (does its directory exist, and may heal write there?)",
        path.display()
    ))
}

/// Names the database file an error is about.
fn in_file(path: &Path, e: Error) -> Error {
    Error::Failed(format!("{}: {e}", path.display()))
}
