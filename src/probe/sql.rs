//! The SQL check: one query against PostgreSQL (`postgres://…`) or a SQLite
//! file (`sqlite:///path/to.db`), read only; the first column of the first
//! row must meet the expectation.

use std::time::Duration;

use super::{fail, judge_value, pass, Outcome, Sql};

/// Runs the query; ok when its first value satisfies the expectation (no
/// row: ok only with `empty_ok`).
pub(super) fn run_sql(sql: &Sql, timeout: Duration) -> Outcome {
    let first = if crate::pg::is_url(&sql.url) {
        postgres_value(sql, timeout)
    } else {
        sqlite_value(sql, timeout)
    };
    match first {
        Err(e) => fail(e, None),
        Ok(None) if sql.empty_ok => pass("the query returned no row".into(), None),
        Ok(None) => fail("the query returned no row".into(), None),
        Ok(Some(value)) => judge_value(sql.expect, sql.warn, value),
    }
}

/// The first value of the first row from PostgreSQL, in a read-only
/// session (`default_transaction_read_only`), the statement bounded by the
/// server (`statement_timeout`) and the connection by the client.
fn postgres_value(sql: &Sql, timeout: Duration) -> Result<Option<f64>, String> {
    let millis = timeout.as_millis().max(1);
    let mut client = crate::pg::connect_with(&sql.url, |config| {
        config.connect_timeout(timeout);
        config.tcp_user_timeout(timeout);
        config.options(&format!(
            "-c statement_timeout={millis} -c default_transaction_read_only=on"
        ));
    })
    .map_err(|e| e.to_string())?;
    // One statement (the extended protocol runs no more), in a transaction
    // the session makes read only.
    let rows = client
        .query(sql.query.as_str(), &[])
        .map_err(|e| format!("the query failed: {}", crate::pg::message(&e)))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    if row.is_empty() {
        return Err("the query returned no column".into());
    }
    let ty = row.columns()[0].type_().clone();
    use postgres::types::Type;
    let value = match ty {
        Type::INT2 => row.try_get::<_, Option<i16>>(0).map(|v| v.map(f64::from)),
        Type::INT4 => row.try_get::<_, Option<i32>>(0).map(|v| v.map(f64::from)),
        Type::INT8 => row.try_get::<_, Option<i64>>(0).map(|v| v.map(|v| v as f64)),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(0).map(|v| v.map(f64::from)),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(0),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(0)
            .map(|v| v.map(|b| f64::from(u8::from(b)))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            return match row.try_get::<_, Option<String>>(0) {
                Ok(Some(text)) => parse_number(&text).map(Some),
                Ok(None) => Err(null()),
                Err(e) => Err(e.to_string()),
            };
        }
        other => {
            return Err(format!(
                "the first column is {other}, which heal does not compare: cast it in the query (SELECT count(*)::bigint, SELECT x::float8 or SELECT x::text)"
            ))
        }
    }
    .map_err(|e| e.to_string())?;
    value.map(Some).ok_or_else(null)
}

/// The first value of the first row from a SQLite file opened read only,
/// interrupted once the timeout has passed.
fn sqlite_value(sql: &Sql, timeout: Duration) -> Result<Option<f64>, String> {
    let path = sqlite_path(&sql.url)?;
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    conn.busy_timeout(timeout)
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    // Interrupted from a watcher thread once the timeout has passed.
    let interrupt = conn.get_interrupt_handle();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watcher = std::thread::Builder::new()
        .name("heal-sql-probe".into())
        .spawn(move || {
            if finished.recv_timeout(timeout).is_err() {
                interrupt.interrupt();
            }
        })
        .map_err(|e| format!("cannot start the query's timer: {e}"))?;
    let value = sqlite_first(&conn, sql, timeout);
    drop(done);
    let _ = watcher.join();
    value
}

fn sqlite_first(
    conn: &rusqlite::Connection,
    sql: &Sql,
    timeout: Duration,
) -> Result<Option<f64>, String> {
    use rusqlite::types::ValueRef;
    let interrupted = |e: &rusqlite::Error| matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted);
    let mut stmt = conn.prepare(&sql.query).map_err(|e| {
        if interrupted(&e) {
            super::timed_out(timeout)
        } else if matches!(e, rusqlite::Error::MultipleStatement) {
            "the query holds more than one statement: give one SELECT".to_string()
        } else {
            format!("the query failed: {e}")
        }
    })?;
    if !stmt.readonly() {
        return Err("the query would change the database: give a SELECT".into());
    }
    let mut rows = stmt
        .query([])
        .map_err(|e| format!("the query failed: {e}"))?;
    let row = match rows.next() {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(None),
        Err(e) if interrupted(&e) => return Err(super::timed_out(timeout)),
        Err(e) => return Err(format!("the query failed: {e}")),
    };
    match row
        .get_ref(0)
        .map_err(|e| format!("the query failed: {e}"))?
    {
        ValueRef::Integer(i) => Ok(Some(i as f64)),
        ValueRef::Real(f) => Ok(Some(f)),
        ValueRef::Text(t) => parse_number(&String::from_utf8_lossy(t)).map(Some),
        ValueRef::Null => Err(null()),
        ValueRef::Blob(_) => Err("the first value is a blob, not a number".into()),
    }
}

/// The file of a `sqlite:///path/to.db` URL.
pub(crate) fn sqlite_path(url: &str) -> Result<&str, String> {
    match url.strip_prefix("sqlite://") {
        Some(path) if path.starts_with('/') => Ok(path),
        _ => Err(format!(
            "{url:?} is neither postgres://USER@HOST/DB nor sqlite:///absolute/path/to.db"
        )),
    }
}

fn null() -> String {
    "the first value is NULL: use coalesce(…, 0) in the query if none means 0".into()
}

/// A number written as text ("42", "0.5", "t"/"f" and "true"/"false" as 1/0).
fn parse_number(text: &str) -> Result<f64, String> {
    let text = text.trim();
    match text {
        "t" | "true" => return Ok(1.0),
        "f" | "false" => return Ok(0.0),
        _ => {}
    }
    text.parse::<f64>().map_err(|_| {
        let start: String = text.chars().take(40).collect();
        format!("the first value {start:?} is not a number")
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{run_sql, sqlite_path};
    use crate::probe::{Expect, Sql};

    fn check(url: &str, query: &str, expect: &str, empty_ok: bool) -> crate::probe::Outcome {
        let sql = Sql {
            url: url.into(),
            query: query.into(),
            expect: Expect::parse(expect).unwrap(),
            warn: None,
            empty_ok,
        };
        run_sql(&sql, Duration::from_secs(2))
    }

    #[test]
    fn a_sqlite_files_first_value_is_compared_and_nothing_is_written() {
        let dir = std::env::temp_dir().join(format!("heal-sql-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("app.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE jobs (state TEXT, n REAL);
             INSERT INTO jobs VALUES ('queued', 1.5), ('queued', 2), ('done', NULL);",
        )
        .unwrap();
        let url = format!("sqlite://{}", db.display());
        let out = check(
            &url,
            "SELECT count(*) FROM jobs WHERE state = 'queued'",
            "< 3",
            false,
        );
        assert!(out.ok, "{out:?}");
        assert_eq!((out.value, out.detail.as_str()), (Some(2.0), "2 < 3"));
        let out = check(&url, "SELECT sum(n) FROM jobs", "< 3", false);
        assert!(!out.ok);
        assert_eq!(out.detail, "3.5, expected < 3");
        let out = check(
            &url,
            "SELECT n FROM jobs WHERE state = 'none'",
            "< 3",
            false,
        );
        assert_eq!(
            (out.ok, out.detail.as_str()),
            (false, "the query returned no row")
        );
        assert!(check(&url, "SELECT n FROM jobs WHERE state = 'none'", "< 3", true).ok);
        let out = check(
            &url,
            "SELECT n FROM jobs WHERE state = 'done'",
            "< 3",
            false,
        );
        assert!(!out.ok && out.detail.contains("NULL"), "{out:?}");
        let out = check(&url, "SELECT state FROM jobs", "< 3", false);
        assert!(
            !out.ok && out.detail.contains("\"queued\" is not a number"),
            "{out:?}"
        );
        for (query, says) in [
            ("DELETE FROM jobs", "would change the database"),
            ("SELECT 1; DELETE FROM jobs", "more than one statement"),
            ("SELECT nope FROM jobs", "no such column: nope"),
        ] {
            let out = check(&url, query, "< 3", false);
            assert!(!out.ok && out.detail.contains(says), "{query}: {out:?}");
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3);
        // A query that runs past the timeout is cut off.
        let sql = Sql {
            url: url.clone(),
            query: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c".into(),
            expect: Expect::parse("> 0").unwrap(),
            warn: None,
            empty_ok: false,
        };
        let started = std::time::Instant::now();
        let out = run_sql(&sql, Duration::from_millis(300));
        assert!(!out.ok && out.detail.contains("timed out"), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let out = check("sqlite:///nonexistent/app.db", "SELECT 1", "> 0", false);
        assert!(
            !out.ok && out.detail.contains("cannot open /nonexistent/app.db"),
            "{out:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sqlite_urls_name_an_absolute_path() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/app.db"),
            Ok("/var/lib/app.db")
        );
        assert!(sqlite_path("sqlite://app.db").is_err());
        assert!(sqlite_path("mysql://root@db/app").is_err());
    }
}
