//! Where the store is and owned connections to it: a SQLite file (the
//! default, one server) or a PostgreSQL database (several servers).

use std::path::{Path, PathBuf};

use super::sql::{Db, Pg};
use crate::error::Result;

/// An owned connection to the store, either database.
pub enum Conn {
    /// A SQLite connection with heal's settings (`connection::open`).
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL session (boxed: it is several times a SQLite connection's size).
    Postgres(Box<Pg>),
}

impl Conn {
    /// The connection as store functions take it.
    pub fn db(&self) -> Db<'_> {
        match self {
            Conn::Sqlite(c) => Db::Sqlite(c),
            Conn::Postgres(pg) => Db::Postgres(pg.as_ref()),
        }
    }

    /// Whether it can serve no more queries: a PostgreSQL session that
    /// ended. (A SQLite connection is never closed under heal.)
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::Sqlite(_) => false,
            Conn::Postgres(pg) => pg.is_closed(),
        }
    }

    /// The SQLite connection, when it is one (backups, integrity checks).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            Conn::Postgres(_) => None,
        }
    }
}

impl<'a> From<&'a Conn> for Db<'a> {
    fn from(conn: &'a Conn) -> Db<'a> {
        conn.db()
    }
}

/// Where the store is: `--db`, `[server] db` or `HEAL_DB`, a file path or
/// a `postgres://` (`postgresql://`) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    File(PathBuf),
    /// A PostgreSQL database, by its URL (which may hold a password).
    Postgres(String),
}

impl Location {
    /// A path or URL as given.
    pub fn parse(given: &Path) -> Location {
        let text = given.to_string_lossy();
        if crate::pg::is_url(&text) {
            Location::Postgres(text.into_owned())
        } else {
            Location::File(given.to_path_buf())
        }
    }

    /// As logs and errors name it: the path, or the URL without its secrets.
    pub fn shown(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Postgres(url) => crate::redact::redact_url_secrets(url),
        }
    }

    /// The SQLite file, when it is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Location::File(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// A new connection with heal's settings.
    pub fn open(&self) -> Result<Conn> {
        match self {
            Location::File(p) => super::open(p).map(Conn::Sqlite),
            Location::Postgres(url) => {
                Ok(Conn::Postgres(Box::new(Pg::new(crate::pg::connect(url)?))))
            }
        }
    }
}
