//! heal's schema in PostgreSQL's dialect, migrations under an advisory
//! lock, and copying a stopped SQLite store into an empty PostgreSQL
//! database (`heal migrate --from … --to postgres://…`). Connecting is
//! `crate::pg`.
//!
//! The schema is written once, in `migrations::MIGRATIONS` (SQLite's
//! dialect); `dialect::ddl` turns each entry into PostgreSQL's. Where SQLite keeps the
//! schema version in `PRAGMA user_version`, PostgreSQL keeps it in the
//! one-row table `heal_schema`.

use std::collections::HashMap;

use postgres::types::{ToSql, Type};
use postgres::Client;

use super::dialect::ddl;
use super::migrations::{newer, MIGRATIONS};
use crate::error::{Error, Result};
use crate::pg::failed;

/// The advisory lock every heal takes to migrate a PostgreSQL database, so
/// that of several replicas starting at once, one migrates and the others
/// then find the schema up to date. ("heal" in ASCII.)
const MIGRATION_LOCK: i64 = 0x6865_616c;

/// Brings the schema up to date in one transaction, under the migration
/// lock, and returns the version it found. Refuses a database written by a
/// newer heal.
pub fn migrate(client: &mut Client) -> Result<usize> {
    let mut tx = client
        .transaction()
        .map_err(failed("cannot begin the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed("cannot take the migration lock"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS heal_schema (version BIGINT NOT NULL)")
        .map_err(failed("cannot create heal_schema"))?;
    let found: Option<i64> = tx
        .query_opt("SELECT version FROM heal_schema", &[])
        .map_err(failed("cannot read the schema version"))?
        .map(|row| row.get(0));
    let found = match found {
        Some(v) => usize::try_from(v).unwrap_or(usize::MAX),
        None => {
            tx.execute("INSERT INTO heal_schema (version) VALUES (0)", &[])
                .map_err(failed("cannot write the schema version"))?;
            0
        }
    };
    if found > MIGRATIONS.len() {
        return Err(Error::Config(newer(found)));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        tx.batch_execute(&ddl(sql))
            .map_err(failed(format!("migration {} failed", i + 1)))?;
    }
    tx.execute(
        "UPDATE heal_schema SET version = $1",
        &[&(MIGRATIONS.len() as i64)],
    )
    .map_err(failed("cannot write the schema version"))?;
    tx.commit().map_err(failed("cannot commit the migration"))?;
    Ok(found)
}

/// Connects to the store's PostgreSQL database and brings its schema up
/// to date (`migrate`), as `heal serve` starts.
pub fn open_and_migrate(url: &str) -> Result<super::Conn> {
    let shown = crate::redact::redact_url_secrets(url);
    let mut client = crate::pg::connect(url)?;
    let found = migrate(&mut client).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("{shown}: {m}")),
        e => e,
    })?;
    if found < MIGRATIONS.len() {
        log::info!(
            "database {shown}: schema version {found} migrated to {}",
            MIGRATIONS.len()
        );
    }
    Ok(super::Conn::Postgres(Box::new(super::sql::Pg::new(client))))
}

/// The schema version of a PostgreSQL database (0 before heal's first
/// migration).
pub fn schema_version(client: &mut Client) -> Result<usize> {
    let exists: bool = client
        .query_one("SELECT to_regclass('heal_schema') IS NOT NULL", &[])
        .map_err(failed("cannot read the schema version"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> = client
        .query_opt("SELECT version FROM heal_schema", &[])
        .map_err(failed("cannot read the schema version"))?
        .map(|row| row.get(0));
    Ok(version.map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX)))
}

/// What `copy_sqlite` copied: each table and its rows.
pub type Copied = Vec<(String, i64)>;

/// Copies every row of a SQLite store (stopped, its schema up to date) into
/// a PostgreSQL database that has heal's schema at the same version and no
/// rows but the ones the schema starts with, in one transaction: tables in
/// the order their foreign keys need, identity counters moved past the
/// copied ids, then every table's rows counted on both sides.
pub fn copy_sqlite(sqlite: &rusqlite::Connection, pg: &mut Client) -> Result<Copied> {
    let in_postgres: Vec<String> = pg
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name <> 'heal_schema' ORDER BY 1",
            &[],
        )
        .map_err(failed("cannot list the tables in PostgreSQL"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let in_sqlite = sqlite_tables(sqlite)?;
    if in_sqlite != in_postgres {
        let only = |a: &[String], b: &[String]| -> String {
            let names: Vec<&str> = a
                .iter()
                .filter(|t| !b.contains(t))
                .map(String::as_str)
                .collect();
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        };
        return Err(Error::Failed(format!(
            "the SQLite store's tables are not heal's: only in SQLite: {}; only in PostgreSQL: {}",
            only(&in_sqlite, &in_postgres),
            only(&in_postgres, &in_sqlite)
        )));
    }
    // Every name below is one of heal's own tables.
    let tables = tables_in_order(sqlite, in_sqlite)?;
    let mut tx = pg.transaction().map_err(failed("cannot begin the copy"))?;
    for table in &tables {
        let rows: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(failed(format!(
                "cannot count the rows of {table} in PostgreSQL"
            )))?
            .get(0);
        if rows > 0 && !SEEDED.contains(&table.as_str()) {
            return Err(Error::Failed(format!(
                "PostgreSQL's {table} already holds {rows} row(s): heal migrate --to copies into an empty database only (a new one, or drop heal's tables first)"
            )));
        }
        if rows > 0 {
            tx.execute(&format!("DELETE FROM {table}"), &[])
                .map_err(failed(format!("cannot empty {table}")))?;
        }
    }
    for table in &tables {
        copy_table(sqlite, &mut tx, table)?;
    }
    let identities: Vec<(String, String)> = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
            &[],
        )
        .map_err(failed("cannot list identity columns"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (table, column) in identities {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), max({column})) FROM {table} HAVING max({column}) IS NOT NULL"
            ),
            &[],
        )
        .map_err(failed(format!("cannot move the identity of {table}.{column}")))?;
    }
    tx.commit().map_err(failed("cannot commit the copy"))?;
    let mut copied = Vec::new();
    for table in &tables {
        let want: i64 = sqlite
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| Error::Store(format!("counting {table}"), e))?;
        let got: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(failed(format!("cannot count {table} in PostgreSQL")))?
            .get(0);
        if want != got {
            return Err(Error::Failed(format!(
                "{table}: {want} row(s) in SQLite but {got} in PostgreSQL after the copy"
            )));
        }
        copied.push((table.clone(), got));
    }
    Ok(copied)
}

/// Tables whose rows the schema itself writes (the breaker's one row):
/// replaced by the copied ones.
const SEEDED: &[&str] = &["breaker"];

/// SQLite's tables by name.
fn sqlite_tables(sqlite: &rusqlite::Connection) -> Result<Vec<String>> {
    sqlite
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| Error::Store("listing tables".into(), e))
}

/// `names` (SQLite's tables), each after the tables its foreign keys point to.
fn tables_in_order(sqlite: &rusqlite::Connection, names: Vec<String>) -> Result<Vec<String>> {
    let mut needs: HashMap<String, Vec<String>> = HashMap::new();
    for name in &names {
        let parents: Vec<String> = sqlite
            .prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")
            .and_then(|mut s| s.query_map([name], |r| r.get(0))?.collect())
            .map_err(|e| Error::Store("reading foreign keys".into(), e))?;
        needs.insert(name.clone(), parents);
    }
    let mut ordered: Vec<String> = Vec::new();
    while ordered.len() < names.len() {
        let before = ordered.len();
        for name in &names {
            if !ordered.contains(name)
                && needs[name].iter().all(|p| p == name || ordered.contains(p))
            {
                ordered.push(name.clone());
            }
        }
        if ordered.len() == before {
            return Err(Error::Failed(
                "the SQLite tables' foreign keys form a cycle".into(),
            ));
        }
    }
    Ok(ordered)
}

/// One table's rows, by binary COPY, each value as its PostgreSQL column's
/// type wants it.
fn copy_table(
    sqlite: &rusqlite::Connection,
    tx: &mut postgres::Transaction,
    table: &str,
) -> Result<()> {
    let columns: Vec<String> = sqlite
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .and_then(|mut s| s.query_map([table], |r| r.get(0))?.collect())
        .map_err(|e| Error::Store(format!("reading the columns of {table}"), e))?;
    let pg_types: HashMap<String, String> = tx
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )
        .map_err(failed(format!(
            "cannot read {table}'s columns in PostgreSQL"
        )))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut types = Vec::new();
    for column in &columns {
        let ty = match pg_types.get(column).map(String::as_str) {
            Some("bigint") => Type::INT8,
            Some("text") => Type::TEXT,
            Some("double precision") => Type::FLOAT8,
            Some("bytea") => Type::BYTEA,
            Some(other) => {
                return Err(Error::Failed(format!(
                    "{table}.{column} is {other} in PostgreSQL, which heal's schema never makes"
                )))
            }
            None => {
                return Err(Error::Failed(format!(
                    "{table}.{column} is missing in PostgreSQL: both databases must have this heal's schema"
                )))
            }
        };
        types.push(ty);
    }
    let list = columns.join(", ");
    let sink = tx
        .copy_in(&format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"))
        .map_err(failed(format!("cannot copy into {table}")))?;
    let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
    let mut stmt = sqlite
        .prepare(&format!("SELECT rowid, {list} FROM {table}"))
        .or_else(|_| sqlite.prepare(&format!("SELECT NULL, {list} FROM {table}")))
        .map_err(|e| Error::Store(format!("reading {table}"), e))?;
    let mut rows = stmt
        .query([])
        .map_err(|e| Error::Store(format!("reading {table}"), e))?;
    while let Some(row) = rows
        .next()
        .map_err(|e| Error::Store(format!("reading {table}"), e))?
    {
        let rowid: Option<i64> = row.get(0).unwrap_or(None);
        let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(columns.len());
        for (n, (column, ty)) in columns.iter().zip(&types).enumerate() {
            let value: rusqlite::types::Value = row
                .get(n + 1)
                .map_err(|e| Error::Store(format!("reading {table}.{column}"), e))?;
            let at = || match rowid {
                Some(id) => format!("{table}.{column} of row {id}"),
                None => format!("{table}.{column}"),
            };
            values
                .push(convert(value, ty).map_err(|why| Error::Failed(format!("{}: {why}", at())))?);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        writer
            .write(&refs)
            .map_err(failed(format!("cannot copy a row of {table}")))?;
    }
    writer
        .finish()
        .map_err(failed(format!("cannot finish copying {table}")))?;
    Ok(())
}

/// A SQLite value as the PostgreSQL column's type wants it. SQLite keeps
/// any value in any column; heal writes each column's own type, and the
/// conversions here are the lossless ones.
fn convert(
    value: rusqlite::types::Value,
    ty: &Type,
) -> std::result::Result<Box<dyn ToSql + Sync>, String> {
    use rusqlite::types::Value as V;
    Ok(match (value, ty) {
        (V::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (V::Null, t) if *t == Type::FLOAT8 => Box::new(None::<f64>),
        (V::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (V::Null, _) => Box::new(None::<String>),
        (V::Integer(i), t) if *t == Type::INT8 => Box::new(i),
        (V::Integer(i), t) if *t == Type::FLOAT8 => Box::new(i as f64),
        (V::Integer(i), t) if *t == Type::TEXT => Box::new(i.to_string()),
        (V::Real(f), t) if *t == Type::FLOAT8 => Box::new(f),
        (V::Real(f), t) if *t == Type::INT8 && f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Box::new(f as i64)
        }
        (V::Real(f), t) if *t == Type::TEXT => Box::new(f.to_string()),
        (V::Text(s), t) if *t == Type::TEXT => Box::new(s),
        (V::Text(s), t) if *t == Type::BYTEA => Box::new(s.into_bytes()),
        (V::Text(s), t) if *t == Type::INT8 => Box::new(
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("the text {s:?} where an integer belongs"))?,
        ),
        (V::Blob(b), t) if *t == Type::BYTEA => Box::new(b),
        (V::Blob(b), t) if *t == Type::TEXT => Box::new(
            String::from_utf8(b)
                .map_err(|_| "bytes that are not UTF-8 where text belongs".to_string())?,
        ),
        (value, t) => return Err(format!("a {:?} value where {t} belongs", value.data_type())),
    })
}
