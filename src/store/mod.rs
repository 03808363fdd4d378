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
pub mod alerts;
pub mod backup;
pub mod browse;
pub mod checks;
pub mod conn;
pub mod connection;
pub mod dialect;
pub mod events;
pub mod figures;
pub mod health;
pub mod leader;
pub mod lifecycle;
pub mod lock;
pub mod migrations;
pub mod notify;
pub mod ops;
pub mod postgres;
pub mod replicas;
pub mod session;
pub mod sql;
pub mod watch;
pub mod writer;

pub use admin::*;
pub use agents::*;
pub use alerts::*;
pub use checks::*;
pub use conn::{Conn, Location};
pub use connection::*;
pub use events::*;
pub use figures::*;
pub use lifecycle::*;
pub use notify::*;
pub use ops::*;
pub use watch::*;
pub use writer::*;

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
