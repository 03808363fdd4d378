//! One way to run the store's SQL on either database. A `Db` is a SQLite
//! connection or a PostgreSQL session; store code hands it SQL written once,
//! in SQLite's dialect with `?N` parameters (`dialect::query` turns it into
//! PostgreSQL's, once per statement), parameters as `Value`s (`args!`), and
//! reads rows through `Row::get`, which converts a column the same way
//! whichever database it came from.
//!
//! SQL both databases take: PostgreSQL gives a parameter the type of its
//! first use, so a parameter that may be NULL is compared before it is
//! tested (`action = ?2 OR ?2 IS NULL`); a boolean is summed as `CASE WHEN …
//! THEN 1 ELSE 0 END`; a grouped query names every column it groups by.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use postgres::types::{FromSql, IsNull, ToSql, Type};
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::dialect;
use crate::error::{postgres_message, Error, StoreContext};

/// The database's clock in milliseconds, as SQL (the same on both): what
/// several servers compare must not depend on any one server's clock.
pub const DB_NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS BIGINT)";

/// The store's database, either of them.
#[derive(Clone, Copy)]
pub enum Db<'a> {
    /// A SQLite connection.
    Sqlite(&'a rusqlite::Connection),
    /// A PostgreSQL session.
    Postgres(&'a Pg),
}

impl<'a> From<&'a rusqlite::Connection> for Db<'a> {
    fn from(conn: &'a rusqlite::Connection) -> Db<'a> {
        Db::Sqlite(conn)
    }
}

impl<'a> From<&'a rusqlite::Transaction<'_>> for Db<'a> {
    fn from(tx: &'a rusqlite::Transaction<'_>) -> Db<'a> {
        Db::Sqlite(tx)
    }
}

impl<'a> From<&'a Pg> for Db<'a> {
    fn from(pg: &'a Pg) -> Db<'a> {
        Db::Postgres(pg)
    }
}

/// A PostgreSQL session and the statements it has prepared, by their SQL
/// as the store wrote it. One thread uses it at a time (`Client` is not
/// `Sync`).
pub struct Pg {
    client: RefCell<postgres::Client>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

impl Pg {
    /// Wraps a connected session.
    pub fn new(client: postgres::Client) -> Pg {
        Pg {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
        }
    }

    /// Whether the session has ended (the server restarted or the network
    /// dropped): a new one must be opened.
    pub fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    /// The statement for this SQL (SQLite's dialect), prepared once.
    fn statement(&self, sql: &str) -> Result<postgres::Statement, DbError> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .client
            .borrow_mut()
            .prepare(&dialect::query(sql))
            .map_err(DbError::Postgres)?;
        self.statements
            .borrow_mut()
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn rows(&self, sql: &str, args: &[Value]) -> Result<Vec<postgres::Row>, DbError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
        self.client
            .borrow_mut()
            .query(&statement, &params)
            .map_err(DbError::Postgres)
    }
}

/// A failure of either database, or a column that did not convert.
#[derive(Debug)]
pub enum DbError {
    /// SQLite's error.
    Sqlite(rusqlite::Error),
    /// PostgreSQL's error.
    Postgres(postgres::Error),
    /// A column (by index) whose value is not what the store reads there.
    Column(usize, String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sqlite(e) => write!(f, "{e}"),
            DbError::Postgres(e) => f.write_str(&postgres_message(e)),
            DbError::Column(i, what) => write!(f, "column {i}: {what}"),
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError::Sqlite(e)
    }
}

impl<T> StoreContext<T> for Result<T, DbError> {
    fn context(self, what: &str) -> crate::error::Result<T> {
        self.map_err(|e| match e {
            DbError::Sqlite(e) => Error::Store(what.to_string(), e),
            DbError::Postgres(e) => Error::Postgres(what.to_string(), e),
            DbError::Column(i, m) => Error::Failed(format!("store: {what}: column {i}: {m}")),
        })
    }
}

/// A parameter of a statement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// NULL.
    Null,
    /// An integer (heal's integers are 64-bit on both databases).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// Parameters for `Db`'s calls: `args![a, b]` is `&[Value::from(a), Value::from(b)]`.
#[macro_export]
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::store::sql::Value::from($arg)),*][..]
    };
}
pub use args;

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}

impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}

impl From<usize> for Value<'_> {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(v.into())
    }
}

impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(v)
    }
}

impl<'a> From<&'a Vec<u8>> for Value<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(v),
            Value::Real(v) => ValueRef::Real(v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

/// A parameter in the type PostgreSQL inferred for its place, as SQLite
/// would take it: an integer where a smaller integer, a boolean, a float or
/// text is wanted, text where text of any kind is.
impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let wrong = || format!("{self:?} where PostgreSQL wants {ty}");
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v).map_err(|_| wrong())?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v).map_err(|_| wrong())?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().as_str().to_sql(ty, out),
                _ => Err(wrong().into()),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (v as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().as_str().to_sql(ty, out),
                _ => Err(wrong().into()),
            },
            Value::Text(v) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    v.to_sql(ty, out)
                }
                _ => Err(wrong().into()),
            },
            Value::Blob(v) => match *ty {
                Type::BYTEA => v.to_sql(ty, out),
                _ => Err(wrong().into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A row of a result, from either database.
pub enum Row<'r, 's> {
    /// SQLite's row.
    Sqlite(&'r rusqlite::Row<'s>),
    /// PostgreSQL's row.
    Postgres(&'r postgres::Row),
}

impl Row<'_, '_> {
    /// Column `i` as `T`.
    pub fn get<T: Column>(&self, i: usize) -> Result<T, DbError> {
        let converted = match self {
            Row::Sqlite(row) => T::from_cell(Cell::of_sqlite(row.get_ref(i)?)),
            Row::Postgres(row) => {
                let raw: Raw = row.try_get(i).map_err(DbError::Postgres)?;
                T::from_cell(Cell::of_postgres(&raw).map_err(|m| DbError::Column(i, m))?)
            }
        };
        converted.map_err(|m| DbError::Column(i, m))
    }
}

/// A column's value as both databases give it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'r> {
    /// NULL.
    Null,
    /// An integer, or a boolean (1 or 0), or a whole NUMERIC.
    Int(i64),
    /// A float, or a NUMERIC with a fraction.
    Real(f64),
    /// Text.
    Text(&'r str),
    /// Bytes.
    Blob(&'r [u8]),
}

impl<'r> Cell<'r> {
    fn of_sqlite(value: ValueRef<'r>) -> Cell<'r> {
        match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(v) => Cell::Int(v),
            ValueRef::Real(v) => Cell::Real(v),
            // SQLite's text is UTF-8 unless written otherwise; heal writes only UTF-8.
            ValueRef::Text(v) => std::str::from_utf8(v).map_or(Cell::Blob(v), Cell::Text),
            ValueRef::Blob(v) => Cell::Blob(v),
        }
    }

    fn of_postgres(raw: &Raw<'r>) -> Result<Cell<'r>, String> {
        let Some(bytes) = raw.bytes else {
            return Ok(Cell::Null);
        };
        let int = |n: usize| -> Result<i64, String> {
            let b: [u8; 8] = {
                let mut all = [0u8; 8];
                let src = bytes.get(..n).ok_or("a short integer")?;
                // Sign-extend from n bytes, big-endian.
                let fill = if src.first().is_some_and(|b| b & 0x80 != 0) {
                    0xff
                } else {
                    0
                };
                all[..8 - n].fill(fill);
                all[8 - n..].copy_from_slice(src);
                all
            };
            Ok(i64::from_be_bytes(b))
        };
        Ok(match raw.ty {
            Type::INT8 => Cell::Int(int(8)?),
            Type::INT4 | Type::OID => Cell::Int(int(4)?),
            Type::INT2 => Cell::Int(int(2)?),
            Type::BOOL => Cell::Int(i64::from(bytes.first().is_some_and(|b| *b != 0))),
            Type::FLOAT8 => {
                Cell::Real(f64::from_sql(&Type::FLOAT8, bytes).map_err(|e| e.to_string())?)
            }
            Type::FLOAT4 => Cell::Real(
                f32::from_sql(&Type::FLOAT4, bytes)
                    .map_err(|e| e.to_string())?
                    .into(),
            ),
            Type::NUMERIC => numeric(bytes)?,
            Type::BYTEA => Cell::Blob(bytes),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Cell::Text(std::str::from_utf8(bytes).map_err(|e| e.to_string())?)
            }
            ref other => {
                return Err(format!(
                    "PostgreSQL's type {other}, which the store does not read"
                ))
            }
        })
    }
}

/// A NUMERIC in PostgreSQL's binary form (what `sum` of integers gives):
/// digit count, weight, sign, scale, then base-10000 digits.
fn numeric(bytes: &[u8]) -> Result<Cell<'static>, String> {
    let word = |i: usize| -> Result<i64, String> {
        bytes
            .get(i * 2..i * 2 + 2)
            .map(|b| i64::from(i16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(|| "a short NUMERIC".to_string())
    };
    let (digits, weight, sign, scale) = (word(0)?, word(1)?, word(2)? & 0xffff, word(3)?);
    if sign == 0xc000 {
        return Err("a NUMERIC that is not a number".into());
    }
    let mut whole: i128 = 0;
    let mut value = 0f64;
    let mut exact = true;
    for i in 0..digits {
        let digit = word(4 + i as usize)?;
        let power = weight - i;
        value += digit as f64 * 10000f64.powi(power as i32);
        if power >= 0 {
            whole = whole
                .checked_mul(10000)
                .and_then(|w| w.checked_add(digit.into()))
                .ok_or("a NUMERIC too large")?;
        } else if digit != 0 {
            exact = false;
        }
    }
    // Digits the loop did not reach, up to the weight, are zeros.
    for _ in digits..=weight {
        whole = whole.checked_mul(10000).ok_or("a NUMERIC too large")?;
    }
    let negative = sign == 0x4000;
    if exact && scale >= 0 {
        let whole = if negative { -whole } else { whole };
        if let Ok(v) = i64::try_from(whole) {
            return Ok(Cell::Int(v));
        }
    }
    Ok(Cell::Real(if negative { -value } else { value }))
}

/// Any column of a PostgreSQL row, undecoded: its type and bytes.
struct Raw<'r> {
    ty: Type,
    bytes: Option<&'r [u8]>,
}

impl<'r> FromSql<'r> for Raw<'r> {
    fn from_sql(
        ty: &Type,
        raw: &'r [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: Some(raw),
        })
    }

    fn from_sql_null(ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: None,
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// What a column may be read as.
pub trait Column: Sized {
    /// The value from a cell, or what was wrong with it.
    fn from_cell(cell: Cell) -> Result<Self, String>;
}

fn unexpected<T>(cell: Cell, want: &str) -> Result<T, String> {
    Err(match cell {
        Cell::Null => format!("NULL where {want} belongs"),
        other => format!("{other:?} where {want} belongs"),
    })
}

impl Column for i64 {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Int(v) => Ok(v),
            other => unexpected(other, "an integer"),
        }
    }
}

impl Column for i32 {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        let v = i64::from_cell(cell)?;
        i32::try_from(v).map_err(|_| format!("{v} where a 32-bit integer belongs"))
    }
}

impl Column for u32 {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        let v = i64::from_cell(cell)?;
        u32::try_from(v).map_err(|_| format!("{v} where a 32-bit count belongs"))
    }
}

impl Column for u64 {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        let v = i64::from_cell(cell)?;
        u64::try_from(v).map_err(|_| format!("{v} where a count belongs"))
    }
}

impl Column for usize {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        let v = i64::from_cell(cell)?;
        usize::try_from(v).map_err(|_| format!("{v} where a count belongs"))
    }
}

impl Column for bool {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        Ok(i64::from_cell(cell)? != 0)
    }
}

impl Column for f64 {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Real(v) => Ok(v),
            Cell::Int(v) => Ok(v as f64),
            other => unexpected(other, "a number"),
        }
    }
}

impl Column for String {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Text(v) => Ok(v.to_string()),
            other => unexpected(other, "text"),
        }
    }
}

impl Column for Vec<u8> {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Blob(v) => Ok(v.to_vec()),
            Cell::Text(v) => Ok(v.as_bytes().to_vec()),
            other => unexpected(other, "bytes"),
        }
    }
}

impl<T: Column> Column for Option<T> {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

impl<'a> Db<'a> {
    /// Runs a statement; the number of rows it changed.
    pub fn execute(self, sql: &str, args: &[Value]) -> Result<usize, DbError> {
        match self {
            Db::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args))?),
            Db::Postgres(pg) => {
                let statement = pg.statement(sql)?;
                let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
                let n = pg
                    .client
                    .borrow_mut()
                    .execute(&statement, &params)
                    .map_err(DbError::Postgres)?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs an INSERT into a table whose key is `id`; the new row's id.
    pub fn insert(self, sql: &str, args: &[Value]) -> Result<i64, DbError> {
        match self {
            Db::Sqlite(conn) => {
                conn.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(args))?;
                Ok(conn.last_insert_rowid())
            }
            Db::Postgres(pg) => {
                let rows = pg.rows(&format!("{sql} RETURNING id"), args)?;
                let row = rows
                    .first()
                    .ok_or(DbError::Column(0, "no id returned".into()))?;
                Row::Postgres(row).get(0)
            }
        }
    }

    /// The first row of a query, read by `f`; None when there is none.
    pub fn query_row<T>(
        self,
        sql: &str,
        args: &[Value],
        f: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        match self {
            Db::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(args))?;
                match rows.next()? {
                    Some(row) => f(&Row::Sqlite(row)).map(Some),
                    None => Ok(None),
                }
            }
            Db::Postgres(pg) => match pg.rows(sql, args)?.first() {
                Some(row) => f(&Row::Postgres(row)).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Every row of a query, each read by `f`.
    pub fn query<T>(
        self,
        sql: &str,
        args: &[Value],
        mut f: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        match self {
            Db::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(args))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(f(&Row::Sqlite(row))?);
                }
                Ok(out)
            }
            Db::Postgres(pg) => pg
                .rows(sql, args)?
                .iter()
                .map(|row| f(&Row::Postgres(row)))
                .collect(),
        }
    }

    /// Runs `f`'s reads on one snapshot of the database: a read transaction
    /// (on PostgreSQL, repeatable read and read only), ended when `f` is.
    pub fn snapshot<T>(
        self,
        what: &str,
        f: impl FnOnce(Db<'a>) -> crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        let begin = match self {
            Db::Sqlite(_) => "BEGIN DEFERRED",
            Db::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        self.batch(begin).context(what)?;
        let result = f(self);
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.batch(end).context(what);
        result.and_then(|value| ended.map(|()| value))
    }

    /// Reads a query's rows in order while `f` says to go on (true), so a
    /// reader that needs only the first few stops SQLite there; on
    /// PostgreSQL the rows come whole, so the query itself must be bounded.
    pub fn scan(
        self,
        sql: &str,
        args: &[Value],
        mut f: impl FnMut(&Row) -> Result<bool, DbError>,
    ) -> Result<(), DbError> {
        match self {
            Db::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(args))?;
                while let Some(row) = rows.next()? {
                    if !f(&Row::Sqlite(row))? {
                        break;
                    }
                }
                Ok(())
            }
            Db::Postgres(pg) => {
                for row in &pg.rows(sql, args)? {
                    if !f(&Row::Postgres(row))? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Runs `f` in one write transaction (SQLite's takes the write lock at
    /// once), committed when `f` succeeds and rolled back when it fails.
    pub fn transaction<T>(
        self,
        what: &str,
        f: impl FnOnce(Db<'a>) -> crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        self.batch(self.begin_write()).context(what)?;
        let result = f(self);
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.batch(end).context(what);
        result.and_then(|value| ended.map(|()| value))
    }

    /// How a write transaction begins. SQLite takes its write lock at
    /// BEGIN IMMEDIATE, so no write waits for it halfway. On PostgreSQL the
    /// writers of every server sharing the database take turns (a
    /// transaction-scoped advisory lock, its key "HEALW" in ASCII), so each
    /// sees what the others committed before it, as with SQLite's one
    /// writer: an alert posted to two servers at once is decided once.
    pub fn begin_write(self) -> &'static str {
        match self {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN; SELECT pg_advisory_xact_lock(310399552599)",
        }
    }

    /// Runs statements without parameters or results (savepoints and the like).
    pub fn batch(self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(pg) => pg
                .client
                .borrow_mut()
                .batch_execute(sql)
                .map_err(DbError::Postgres),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_in_postgres_binary_form_becomes_an_integer_or_a_float() {
        // 0: no digits.
        assert_eq!(numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), Cell::Int(0));
        // 123456789 = 1 2345 6789: three digits, weight 2.
        let big = [0, 3, 0, 2, 0, 0, 0, 0, 0, 1, 0x09, 0x29, 0x1a, 0x85];
        assert_eq!(numeric(&big).unwrap(), Cell::Int(123_456_789));
        // -20000 = 2 (weight 1, trailing zero digit left out), negative.
        let neg = [0, 1, 0, 1, 0x40, 0, 0, 0, 0, 2];
        assert_eq!(numeric(&neg).unwrap(), Cell::Int(-20_000));
        // 1.5 = 1 . 5000, scale 1.
        let frac = [0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert_eq!(numeric(&frac).unwrap(), Cell::Real(1.5));
        assert!(numeric(&[0, 0, 0, 0, 0xc0, 0, 0, 0]).is_err(), "NaN");
        assert!(numeric(&[0, 2, 0, 0]).is_err(), "short");
    }

    #[test]
    fn sqlite_runs_the_store_sql_through_db() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::from(&conn);
        db.batch("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT, b BLOB, r REAL)")
            .unwrap();
        let name = String::from("first");
        let id = db
            .insert(
                "INSERT INTO t (n, s, b, r) VALUES (?1, ?2, ?3, ?4)",
                args![7i64, &name, &b"\x00\xff"[..], 0.5],
            )
            .unwrap();
        assert_eq!(id, 1);
        let none: Option<&str> = None;
        db.insert("INSERT INTO t (n, s) VALUES (?1, ?2)", args![true, none])
            .unwrap();
        let rows = db
            .query("SELECT id, n, s, b, r FROM t ORDER BY id", args![], |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<bool>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<Option<Vec<u8>>>(3)?,
                    r.get::<Option<f64>>(4)?,
                ))
            })
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, true, Some("first".into()), Some(vec![0, 255]), Some(0.5)),
                (2, true, None, None, None)
            ]
        );
        let n = db
            .query_row("SELECT count(*) FROM t WHERE n > ?1", args![1], |r| {
                r.get::<u64>(0)
            })
            .unwrap();
        assert_eq!(n, Some(1));
        let missing = db
            .query_row("SELECT s FROM t WHERE id = ?1", args![99], |r| {
                r.get::<String>(0)
            })
            .unwrap();
        assert_eq!(missing, None);
        assert_eq!(
            db.execute("DELETE FROM t WHERE n = ?1", args![1]).unwrap(),
            1
        );
        // A column that is not what is read names itself.
        let wrong = db
            .query_row("SELECT s FROM t", args![], |r| r.get::<i64>(0))
            .unwrap_err();
        assert_eq!(
            wrong.to_string(),
            "column 0: Text(\"first\") where an integer belongs"
        );
    }
}
