//! heal's schema on a real PostgreSQL (Debian's `postgresql`, a throwaway
//! cluster per test) and `heal migrate --from heal.db --to postgres://…`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::postgres::{start_fast, Postgres};
use crate::support::{heal_cli, repo, test_dir, Server};

/// `heal migrate` with these arguments: exit code and stdout + stderr.
fn migrate(args: &[&str]) -> (i32, String) {
    let mut all = vec!["migrate"];
    all.extend_from_slice(args);
    let (code, out, err) = heal_cli(&all, &[], None);
    (code, format!("{out}{err}"))
}

/// A SQLite store with what a short life of heal leaves: the repository's
/// config with its local agent, every sample alert fired and its event
/// ended, then the server stopped.
fn a_used_store(name: &str) -> std::path::PathBuf {
    let dir = test_dir(name);
    let config = std::fs::read_to_string(repo().join("runbooks.toml")).unwrap();
    let mut server = Server::start_with(
        &dir,
        &config,
        "127.0.0.1:0",
        &["--local-agent", "--local-agent-id", "localhost"],
    );
    crate::support::wait_agent_polling(&server, "localhost");
    let mut fired = 0;
    for sample in std::fs::read_dir(repo().join("examples/alerts")).unwrap() {
        let path = sample.unwrap().path();
        let (code, out, err) = heal_cli(
            &[
                "fire",
                "--file",
                path.to_str().unwrap(),
                "--server",
                &server.url,
            ],
            &[],
            None,
        );
        assert_eq!(code, 0, "{}: {out}{err}", path.display());
        fired += 1;
    }
    assert!(fired >= 2, "the samples: {fired}");
    crate::support::wait_until("every event to end", Duration::from_secs(60), || {
        let events = server.events();
        (!events.is_empty() && events.iter().all(|e| !e["ended_at"].is_null())).then_some(())
    });
    assert_eq!(server.terminate(), Some(0), "{}", server.logs());
    dir.join("heal.db")
}

/// Each table's rows as one text: values joined by `|` (blob columns in
/// hex, NULL as `∅`), rows in primary-key order; read from the SQLite file,
/// or with `pg` from PostgreSQL.
fn rows(db: &Path, pg: Option<&Postgres>) -> BTreeMap<String, String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut all = BTreeMap::new();
    let tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name";
    for table in strings(&conn, tables) {
        let columns = strings(
            &conn,
            &format!(
                "SELECT name || ':' || upper(type) FROM pragma_table_info('{table}') ORDER BY cid"
            ),
        );
        let names: Vec<&str> = columns
            .iter()
            .map(|c| c.split(':').next().unwrap_or_default())
            .collect();
        let select: Vec<String> = columns
            .iter()
            .zip(&names)
            .map(|(c, name)| match (pg.is_some(), c.ends_with(":BLOB")) {
                (false, true) => format!("coalesce(lower(hex({name})), '∅')"),
                (false, false) => format!("coalesce(CAST({name} AS TEXT), '∅')"),
                (true, true) => format!("coalesce(encode({name}, 'hex'), '∅')"),
                (true, false) => format!("coalesce({name}::text, '∅')"),
            })
            .collect();
        let keys = strings(
            &conn,
            &format!("SELECT name FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk"),
        );
        let order = if keys.is_empty() {
            names.join(", ")
        } else {
            keys.join(", ")
        };
        let sql = format!(
            "SELECT {} FROM {table} ORDER BY {order}",
            select.join(" || '|' || ")
        );
        let text = match pg {
            Some(pg) => pg.psql(&sql).trim_end_matches('\n').to_string(),
            None => strings(&conn, &sql).join("\n"),
        };
        all.insert(table, text);
    }
    all
}

/// The first column of every row of a SQLite query, as text.
fn strings(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn a_stopped_store_is_copied_into_postgres_row_for_row_and_goes_on_there() {
    let test = "postgres::a_stopped_store_is_copied_into_postgres_row_for_row_and_goes_on_there";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let db = a_used_store("pg-copy");
    let (code, out) = migrate(&["--from", db.to_str().unwrap(), "--to", &pg.url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("every table's row count checked"), "{out}");
    assert!(
        out.contains("heal serve does not run on PostgreSQL yet"),
        "{out}"
    );
    let (want, got) = (rows(&db, None), rows(&db, Some(&pg)));
    assert!(
        want["event"].lines().count() >= 2 && !want["op_step"].is_empty(),
        "{want:?}"
    );
    for (table, rows) in &want {
        assert_eq!(&got[table], rows, "table {table}");
    }
    // New rows get ids after the copied ones.
    let max: i64 = pg.psql("SELECT max(id) FROM event").trim().parse().unwrap();
    let next: i64 = pg
        .psql("INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at) VALUES ('r', 'b', 'k', 'f', 'queued', 'live', 1, 1) RETURNING id")
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(next, max + 1);
    // The audit log stays append-only.
    let refused = std::process::Command::new("psql")
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &pg.url,
            "-c",
            "DELETE FROM audit",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("the audit log is append-only"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // A second copy is refused: the database is not empty any more.
    let before = rows(&db, Some(&pg));
    let (code, out) = migrate(&["--from", db.to_str().unwrap(), "--to", &pg.url]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("copies into an empty database only"), "{out}");
    assert_eq!(rows(&db, Some(&pg)), before);
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_schema_on_postgres_has_every_table_column_and_index_of_sqlites() {
    let test = "postgres::the_schema_on_postgres_has_every_table_column_and_index_of_sqlites";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let (code, out) = migrate(&["--to", &pg.url, "--check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("schema version 0") && out.contains("pending"),
        "{out}"
    );
    let (code, out) = migrate(&["--to", &pg.url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied migrations 1 to"), "{out}");
    let (code, out) = migrate(&["--to", &pg.url, "--check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("up to date"), "{out}");
    // SQLite's schema, from a store heal made.
    let dir = test_dir("pg-schema");
    let db = dir.join("heal.db");
    let (code, out, err) = heal_cli(&["migrate", "--db", db.to_str().unwrap()], &[], None);
    assert_ne!(code, 0, "no store yet: {out}{err}");
    drop(Server::start(&dir, ""));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let sqlite = strings(
        &conn,
        "SELECT m.name || '.' || c.name FROM sqlite_master m, pragma_table_info(m.name) c
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY 1",
    );
    let postgres: Vec<String> = pg
        .psql(
            "SELECT table_name || '.' || column_name FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name <> 'heal_schema' ORDER BY 1",
        )
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(postgres, sqlite);
    let indexes = strings(
        &conn,
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY 1",
    );
    let pg_indexes = pg.psql("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'");
    for index in &indexes {
        assert!(
            pg_indexes.lines().any(|l| l == index),
            "index {index} missing in PostgreSQL:\n{pg_indexes}"
        );
    }
    // A schema newer than this heal is refused, and left alone.
    pg.psql("UPDATE heal_schema SET version = 999");
    let (code, out) = migrate(&["--to", &pg.url]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("newer than this heal knows"), "{out}");
    assert_eq!(pg.psql("SELECT version FROM heal_schema").trim(), "999");
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn heals_migrating_one_database_at_once_migrate_it_once() {
    let test = "postgres::heals_migrating_one_database_at_once_migrate_it_once";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let url = pg.url.clone();
            std::thread::spawn(move || migrate(&["--to", &url]))
        })
        .collect();
    let outs: Vec<(i32, String)> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    for (code, out) in &outs {
        assert_eq!(*code, 0, "{out}");
    }
    let applied = outs
        .iter()
        .filter(|(_, out)| out.contains("applied migrations"))
        .count();
    assert_eq!(applied, 1, "{outs:?}");
    assert_eq!(pg.psql("SELECT count(*) FROM heal_schema").trim(), "1");
    assert_eq!(
        pg.psql("SELECT count(*) FROM breaker").trim(),
        "1",
        "the breaker's row is written once"
    );
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn bad_targets_a_running_server_and_a_store_not_heals_are_refused() {
    let test = "postgres::bad_targets_a_running_server_and_a_store_not_heals_are_refused";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let dir = test_dir("pg-refusals");
    let server = Server::start(&dir, "");
    let db = dir.join("heal.db");
    let db = db.to_str().unwrap();
    // The store is in use.
    let (code, out) = migrate(&["--from", db, "--to", &pg.url]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("pid={}", server.pid())),
        "names the holder: {out}"
    );
    // Wrong or missing arguments.
    for (args, code_wanted, says) in [
        (
            vec!["--from", db, "--to", "mysql://root@db/heal"],
            2,
            "takes a PostgreSQL URL",
        ),
        (
            vec!["--from", db],
            2,
            "--from names the SQLite store to copy into --to",
        ),
        (
            vec!["--db", db, "--to", pg.url.as_str()],
            2,
            "name the store to copy with --from",
        ),
        (
            vec!["--from", "/nonexistent/heal.db", "--to", pg.url.as_str()],
            1,
            "does not exist",
        ),
        (
            vec!["--to", "postgres://db.example/heal"],
            2,
            "names no user",
        ),
    ] {
        let (code, out) = migrate(&args);
        assert_eq!(code, code_wanted, "{args:?}: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
    }
    assert_eq!(
        pg.psql("SELECT to_regclass('heal_schema') IS NULL").trim(),
        "t",
        "PostgreSQL untouched"
    );
    // Nobody listening: the error names the database, never the password.
    let port = crate::support::free_port();
    let url = format!("postgres://heal:hunter2@127.0.0.1:{port}/heal?sslmode=disable");
    let (code, out) = migrate(&["--to", &url]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "cannot connect to postgres://<redacted>@127.0.0.1:{port}/heal"
        )),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    // heal serve says it does not run on PostgreSQL yet, without the password.
    let (code, out, err) = heal_cli(
        &[
            "serve",
            "--db",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--config",
            dir.join("runbooks.toml").to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("does not run on PostgreSQL yet") && !err.contains("hunter2"),
        "{err}"
    );
    // A store with a table heal never made is not copied.
    let mut server = server;
    assert_eq!(server.terminate(), Some(0));
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch("CREATE TABLE \"x; DROP TABLE alert\" (y)")
        .unwrap();
    let (code, out) = migrate(&["--from", db, "--to", &pg.url]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("only in SQLite: x; DROP TABLE alert; only in PostgreSQL: none"),
        "{out}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM alert").trim(), "0");
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn a_sql_probe_compares_a_postgres_value_and_never_shows_its_password() {
    let test = "postgres::a_sql_probe_compares_a_postgres_value_and_never_shows_its_password";
    let Some(pg) = start_fast(test) else {
        return;
    };
    pg.psql("CREATE TABLE jobs (state text); INSERT INTO jobs VALUES ('queued'), ('queued')");
    let dir = test_dir("pg-sql-probe");
    let url = pg
        .url
        .replacen("postgres@", "postgres:${HEAL_TEST_PG_SECRET}@", 1);
    let config = format!(
        r#"
[[probe]]
name = "queue"
every = "1s"
fail_after = 1
sql = {{ url = "{url}?sslmode=disable", query = "SELECT count(*) FROM jobs WHERE state = 'queued'", expect = "< 3" }}
"#
    );
    let mut program = std::process::Command::new(crate::support::heal_bin());
    program.env("HEAL_TEST_PG_SECRET", "pg-hunter2");
    let server = Server::start_command(&dir, &config, program, "127.0.0.1:0", &[]);
    let probe = |s: &Server| s.get_ok("/api/v1/probes/queue?limit=5")["probe"].clone();
    crate::support::wait_until("the probe to be up", Duration::from_secs(10), || {
        (probe(&server)["state"] == "up").then_some(())
    });
    let p = probe(&server);
    assert_eq!(p["recent_results"][0]["detail"], "2 < 3", "{p}");
    pg.psql("INSERT INTO jobs VALUES ('queued')");
    crate::watch::wait_alert(
        &server,
        "ProbeFailing",
        "probe",
        "queue",
        "firing",
        Duration::from_secs(10),
    );
    let p = probe(&server);
    assert_eq!(p["recent_results"][0]["detail"], "3, expected < 3", "{p}");
    let alert = &crate::watch::alerts_named(&server, "ProbeFailing")[0];
    assert_eq!(alert["labels"]["probe_type"], "sql");
    pg.psql("DELETE FROM jobs");
    crate::support::wait_until("the probe to recover", Duration::from_secs(10), || {
        (probe(&server)["state"] == "up").then_some(())
    });
    // A query PostgreSQL refuses, and one that would write (the session is
    // read only), fail with the server's words.
    for (query, says) in [
        (
            "SELECT nope FROM jobs",
            "column \\\"nope\\\" does not exist",
        ),
        ("DELETE FROM jobs RETURNING 1", "read-only transaction"),
    ] {
        let bad = config.replace("SELECT count(*) FROM jobs WHERE state = 'queued'", query);
        std::fs::write(dir.join("runbooks.toml"), bad).unwrap();
        let (status, body) = server.post_raw("/api/v1/config", b"", &[]);
        assert_eq!(status, 200, "{body}");
        crate::support::wait_until(query, Duration::from_secs(10), || {
            let p = probe(&server);
            p["recent_results"][0]["detail"]
                .as_str()
                .filter(|d| d.contains(says.replace("\\\"", "\"").as_str()))
                .map(|_| ())
        });
    }
    // The password is nowhere people or files see.
    let shown = [
        server.get_ok("/api/v1/config").to_string(),
        server.get_ok("/api/v1/probes").to_string(),
        server.get_ok("/api/v1/probes/queue?limit=50").to_string(),
        server.get_ok("/api/v1/alerts").to_string(),
        server.logs(),
    ];
    for text in shown {
        assert!(!text.contains("pg-hunter2"), "{text}");
    }
}

/// What `store::sql` must do alike on both databases, run on one of them:
/// each result as text, to compare the two runs.
fn dialect_results(db: heal::store::sql::Db) -> Vec<String> {
    use heal::args;
    use heal::store::dialect::ddl;
    let mut seen = Vec::new();
    let schema =
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, s TEXT, b BLOB, r REAL);
         CREATE UNIQUE INDEX t_s ON t (s);
         CREATE TRIGGER t_no_delete BEFORE DELETE ON t
         BEGIN SELECT RAISE(ABORT, 't is append-only'); END;";
    match db {
        heal::store::sql::Db::Sqlite(_) => db.batch(schema),
        heal::store::sql::Db::Postgres(_) => db.batch(&ddl(schema)),
    }
    .unwrap();
    let name = String::from("first");
    for (n, s, b, r) in [
        (7i64, Some(name.as_str()), Some(&b"\x00\xff"[..]), Some(0.5)),
        (-3, None, None, None),
        (
            i64::MAX,
            Some("'; DROP TABLE t; --"),
            Some(&b""[..]),
            Some(-1e300),
        ),
    ] {
        let id = db
            .insert(
                "INSERT INTO t (n, s, b, r) VALUES (?1, ?2, ?3, ?4)",
                args![n, s, b, r],
            )
            .unwrap();
        seen.push(format!("inserted {id}"));
    }
    // A conflict ignored, and an upsert.
    let changed = db
        .execute(
            "INSERT OR IGNORE INTO t (n, s) VALUES (?1, ?2)",
            args![1, "first"],
        )
        .unwrap();
    seen.push(format!("ignored: {changed} changed"));
    db.execute(
        "INSERT INTO t (n, s) VALUES (?1, ?2) ON CONFLICT (s) DO UPDATE SET n = t.n + excluded.n",
        args![1, "first"],
    )
    .unwrap();
    // Rows back, every type, NULLs, and a parameter used twice.
    let rows = db
        .query(
            "SELECT id, n, s, b, r, n > ?1 FROM t INDEXED BY t_s WHERE s IS NULL OR s <> ?2 OR n >= ?1 ORDER BY id",
            args![0, "none"],
            |r| {
                Ok(format!(
                    "{} {} {:?} {:?} {:?} {}",
                    r.get::<i64>(0)?,
                    r.get::<i64>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<Option<Vec<u8>>>(3)?,
                    r.get::<Option<f64>>(4)?,
                    r.get::<bool>(5)?,
                ))
            },
        )
        .unwrap();
    seen.extend(rows);
    // Aggregates: count is an integer on both, sum a NUMERIC on PostgreSQL.
    let sums = db
        .query_row(
            "SELECT count(*), coalesce(sum(CASE WHEN n > ?1 THEN 1 ELSE 0 END), 0), sum(n) FROM t WHERE n < ?2",
            args![0, i64::MAX],
            |r| Ok(format!("{} {} {}", r.get::<u64>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
        )
        .unwrap();
    seen.push(format!("sums {sums:?}"));
    let none = db
        .query_row("SELECT n FROM t WHERE id = ?1", args![99], |r| {
            r.get::<i64>(0)
        })
        .unwrap();
    seen.push(format!("missing {none:?}"));
    // Savepoints in a transaction, as the writer uses them.
    db.batch("BEGIN; SAVEPOINT job").unwrap();
    db.execute("UPDATE t SET n = 0 WHERE id = ?1", args![1])
        .unwrap();
    db.batch("ROLLBACK TO job; RELEASE job; COMMIT").unwrap();
    let n = db
        .query_row("SELECT n FROM t WHERE id = ?1", args![1], |r| {
            r.get::<i64>(0)
        })
        .unwrap();
    seen.push(format!("after rollback {n:?}"));
    // Errors: the trigger's refusal, and a column read as what it is not.
    let refused = db
        .execute("DELETE FROM t WHERE id = ?1", args![1])
        .unwrap_err();
    seen.push(format!(
        "refused: {}",
        refused.to_string().contains("t is append-only")
    ));
    let wrong = db
        .query_row("SELECT s FROM t WHERE id = ?1", args![1], |r| {
            r.get::<i64>(0)
        })
        .unwrap_err();
    seen.push(wrong.to_string());
    seen
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_store_sql_layer_reads_and_writes_alike_on_sqlite_and_postgres() {
    let test = "postgres::the_store_sql_layer_reads_and_writes_alike_on_sqlite_and_postgres";
    let Some(mut pg) = start_fast(test) else {
        return;
    };
    let sqlite = rusqlite::Connection::open_in_memory().unwrap();
    let on_sqlite = dialect_results(heal::store::sql::Db::from(&sqlite));
    let session = heal::store::sql::Pg::new(heal::pg::connect(&pg.url).unwrap());
    let on_postgres = dialect_results(heal::store::sql::Db::from(&session));
    assert_eq!(on_sqlite, on_postgres);
    assert!(
        on_sqlite.contains(&r#"sums Some("2 1 5")"#.to_string()),
        "{on_sqlite:?}"
    );
    assert_eq!(
        on_sqlite[4],
        "1 8 Some(\"first\") Some([0, 255]) Some(0.5) true"
    );
    assert_eq!(
        on_sqlite.last().unwrap(),
        "column 0: Text(\"first\") where an integer belongs"
    );

    // PostgreSQL gone: a store error that asks the client to retry (503).
    pg.kill();
    use heal::error::StoreContext;
    let gone = heal::store::sql::Db::from(&session)
        .query_row("SELECT n FROM t WHERE id = ?1", heal::args![1], |r| {
            r.get::<i64>(0)
        })
        .context("reading t")
        .unwrap_err();
    assert_eq!(gone.http_status(), 503, "{gone}");
    assert!(gone.to_string().starts_with("store: reading t: "), "{gone}");
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn dashboard_sessions_are_stored_alike_on_postgres() {
    use heal::store::session::{create_session, end_session, session, SessionRow};
    use heal::store::sql::{Db, Pg};
    let test = "postgres::dashboard_sessions_are_stored_alike_on_postgres";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let mut client = heal::pg::connect(&pg.url).unwrap();
    heal::store::postgres::migrate(&mut client).unwrap();
    let session_db = Pg::new(client);
    let mut sqlite = rusqlite::Connection::open_in_memory().unwrap();
    heal::store::migrations::migrate(&mut sqlite).unwrap();
    for db in [Db::from(&sqlite), Db::from(&session_db)] {
        create_session(db, "a", "tok", 1_000, Some("127.0.0.1"), 0).unwrap();
        create_session(db, "b", "tok", 5_000, None, 0).unwrap();
        let want = SessionRow {
            token_hash: "tok".into(),
            expires_at: 1_000,
        };
        assert_eq!(session(db, "a", 999).unwrap(), Some(want));
        assert_eq!(session(db, "a", 1_000).unwrap(), None, "expired");
        // A new login forgets expired sessions.
        create_session(db, "c", "tok", 9_000, None, 2_000).unwrap();
        assert_eq!(session(db, "a", 0).unwrap(), None, "forgotten");
        assert!(end_session(db, "b").unwrap());
        assert!(!end_session(db, "b").unwrap());
        assert_eq!(
            session(db, "c", 2_000).unwrap().map(|s| s.expires_at),
            Some(9_000)
        );
    }
    assert_eq!(pg.psql("SELECT id_hash FROM session").trim(), "c");
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn config_versions_and_the_audit_log_are_stored_alike_on_postgres() {
    use heal::store::sql::{args, Db, Pg};
    use heal::store::{apply_config, audit_entries, current_config};
    let test = "postgres::config_versions_and_the_audit_log_are_stored_alike_on_postgres";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let mut client = heal::pg::connect(&pg.url).unwrap();
    heal::store::postgres::migrate(&mut client).unwrap();
    let session = Pg::new(client);
    let mut sqlite = rusqlite::Connection::open_in_memory().unwrap();
    heal::store::migrations::migrate(&mut sqlite).unwrap();
    let mut seen = Vec::new();
    for db in [Db::from(&sqlite), Db::from(&session)] {
        let mut run = Vec::new();
        run.push(format!(
            "{:?}",
            current_config(db).unwrap().map(|c| c.version)
        ));
        run.push(format!(
            "{:?}",
            apply_config(db, "aa", "startup", "r.toml", 1).unwrap()
        ));
        run.push(format!(
            "{:?}",
            apply_config(db, "aa", "sighup", "r.toml", 2).unwrap()
        ));
        run.push(format!(
            "{:?}",
            apply_config(db, "bb", "admin", "r.toml", 3).unwrap()
        ));
        let current = current_config(db).unwrap().unwrap();
        run.push(format!(
            "{} {} {} {}",
            current.version, current.hash, current.applied_at, current.applied_by
        ));
        let log = audit_entries(db, 0, Some("config.applied"), None, 10).unwrap();
        run.push(format!(
            "{:?}",
            log.iter()
                .map(|a| (&a.actor, &a.detail, &a.remote))
                .collect::<Vec<_>>()
        ));
        let older = audit_entries(db, 0, None, Some(log[0].id), 10).unwrap();
        run.push(format!(
            "{:?}",
            older.iter().map(|a| &a.actor).collect::<Vec<_>>()
        ));
        run.push(format!(
            "{}",
            audit_entries(db, 4, None, None, 10).unwrap().len()
        ));
        for edit in ["DELETE FROM audit", "UPDATE audit SET actor = 'x'"] {
            let refused = db.execute(edit, args![]).unwrap_err().to_string();
            run.push(format!(
                "{edit}: {}",
                refused.contains("the audit log is append-only")
            ));
        }
        seen.push(run);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0][1], "(1, true)");
    assert_eq!(seen[0][3], "(2, true)");
    assert!(seen[0][8].ends_with("true"), "{:?}", seen[0]);
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_figures_of_metrics_are_counted_alike_on_postgres() {
    use heal::store::figures;
    use heal::store::sql::{Db, Pg};
    let test = "postgres::the_figures_of_metrics_are_counted_alike_on_postgres";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let mut client = heal::pg::connect(&pg.url).unwrap();
    heal::store::postgres::migrate(&mut client).unwrap();
    let session = Pg::new(client);
    let mut sqlite = rusqlite::Connection::open_in_memory().unwrap();
    heal::store::migrations::migrate(&mut sqlite).unwrap();
    let mut seen = Vec::new();
    for db in [Db::from(&sqlite), Db::from(&session)] {
        let empty = figures(db, 10_000, 5_000).unwrap();
        db.batch(
            "INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at, ended_at) VALUES
                ('r', 'b', 'k1', 'f1', 'running', 'live', 1, 1, NULL),
                ('r', 'b', 'k2', 'f2', 'escalated', 'live', 1, 1, NULL),
                ('r', 'b', 'k3', 'f3', 'escalated', 'live', 1, 1, 5),
                ('r', 'b', 'k4', 'f4', 'succeeded', 'live', 1, 1, 5);
             INSERT INTO op (event_id, agent, state, spec, created_at) VALUES
                (1, 'a', 'running', '{}', 1), (1, 'a', 'succeeded', '{}', 1);
             INSERT INTO agent (id, instance, tags, allow, version, hostname, first_seen, last_seen) VALUES
                ('a', 'i', '[]', '[]', 'v', 'h', 0, 9000), ('b', 'i', '[]', '[]', 'v', 'h', 0, 100);
             INSERT INTO heartbeat (name, origin, def, registered_at, state, state_since) VALUES
                ('h1', 'config', '{}', 0, 'down', 0), ('h2', 'config', '{}', 0, 'up', 0), ('h3', 'config', '{}', 0, 'up', 0);
             INSERT INTO probe (name, state, fails_in_row, oks_in_row, state_since) VALUES ('web', 'down', 3, 0, 0);
             INSERT INTO notification (kind, subject, at) VALUES ('probe.down', 'web', 1);
             INSERT INTO delivery (notification_id, channel, state, created_at, next_at) VALUES
                (1, 'chat', 'pending', 1, 1), (1, 'pager', 'failed', 1, 1), (1, 'mail', 'sent', 1, 1);
             UPDATE breaker SET state = 'open';",
        )
        .unwrap();
        seen.push((empty, figures(db, 10_000, 5_000).unwrap()));
    }
    assert_eq!(seen[0], seen[1]);
    let (empty, full) = &seen[1];
    assert!(!empty.breaker_open && empty.agents_up == 0, "{empty:?}");
    assert_eq!(
        (full.agents_up, full.agents_down, full.deliveries_pending),
        (1, 1, 1)
    );
    assert_eq!(
        full.events,
        [("escalated".to_string(), 1), ("running".to_string(), 1)]
    );
    assert!(full.breaker_open);
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_outbox_is_stored_alike_on_postgres() {
    use heal::store::sql::{Db, Pg};
    use heal::store::*;
    let test = "postgres::the_outbox_is_stored_alike_on_postgres";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let mut client = heal::pg::connect(&pg.url).unwrap();
    heal::store::postgres::migrate(&mut client).unwrap();
    let session = Pg::new(client);
    let mut sqlite = rusqlite::Connection::open_in_memory().unwrap();
    heal::store::migrations::migrate(&mut sqlite).unwrap();
    let mut seen = Vec::new();
    for db in [Db::from(&sqlite), Db::from(&session)] {
        let mut run = Vec::new();
        db.batch(
            "INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at) VALUES
                ('r', 'b', 'k1', 'f1', 'queued', 'live', 1, 1);
             INSERT INTO decision (at, fingerprint, rule, outcome, reason, event_id) VALUES
                (1, 'f1', 'r', 'run', 'disk full on web-1', 1), (2, 'f1', 'r', 'collapsed', 'later', 1);",
        )
        .unwrap();
        run.push(format!("{:?}", decision_reason(db, "f1", 1).unwrap()));
        run.push(format!("{:?}", decision_reason(db, "f2", 1).unwrap()));
        run.push(format!("{}", any_unrouted(db).unwrap()));
        note_event(db, 1, None, "queued", false, 10).unwrap();
        note_event(db, 1, Some("queued"), "queued", false, 11).unwrap();
        run.push(format!(
            "{}",
            event_noticed(db, 1, "event.started").unwrap()
        ));
        run.push(format!("{}", event_noticed(db, 1, "event.failed").unwrap()));
        let parts = serde_json::json!({"summary": "web-1 down"});
        let id = record_notice(
            db,
            &NewNotice {
                kind: "probe.down",
                subject: "web",
                event_id: None,
                state: None,
                parts: Some(&parts),
            },
            12,
        )
        .unwrap();
        run.push(format!("notice {id}"));
        let unrouted_now = unrouted(db, 10).unwrap();
        run.push(format!(
            "{:?}",
            unrouted_now
                .iter()
                .map(|u| (u.id, &u.kind, &u.subject, u.event_id, u.at, &u.state, &u.parts))
                .collect::<Vec<_>>()
        ));
        for u in &unrouted_now {
            let channels = ["chat".to_string(), "pager".to_string()];
            route_notice(
                db,
                u.id,
                &serde_json::json!({"n": u.id}),
                &channels,
                20 + u.id,
            )
            .unwrap();
        }
        run.push(format!(
            "{} {}",
            any_unrouted(db).unwrap(),
            outbox_counts(db).unwrap()
        ));
        run.push(format!("{:?}", pending_heads(db).unwrap()));
        let chat = pending(db, "chat", 10).unwrap();
        run.push(format!(
            "{:?}",
            chat.iter()
                .map(|p| (p.id, p.notification_id, p.attempts, &p.doc))
                .collect::<Vec<_>>()
        ));
        let ids: Vec<i64> = chat.iter().map(|p| p.id).collect();
        record_try(db, &ids[..1], &Outcome::Sent { digest: Some(2) }, 30).unwrap();
        record_try(db, &ids[..1], &Outcome::GaveUp { error: "late" }, 31).unwrap();
        record_try(
            db,
            &ids[1..],
            &Outcome::Retry {
                next_at: 99,
                error: "HTTP 503",
            },
            31,
        )
        .unwrap();
        run.push(format!(
            "abandoned {}",
            abandon_channel(db, "pager", 40).unwrap()
        ));
        for (state, channel, event) in [
            (None, None, None),
            (Some("failed"), None, None),
            (None, Some("chat"), None),
            (None, None, Some(1)),
        ] {
            let rows = deliveries(db, state, channel, event, 10).unwrap();
            run.push(format!(
                "{:?}",
                rows.iter()
                    .map(|d| (
                        d.id, &d.kind, &d.channel, &d.state, d.attempts, d.next_at, d.done_at,
                        d.digest, &d.error, d.event_id
                    ))
                    .collect::<Vec<_>>()
            ));
        }
        run.push(format!("{}", outbox_counts(db).unwrap()));
        open_incident(db, "pager", "web", 50).unwrap();
        open_incident(db, "pager", "web", 51).unwrap();
        open_incident(db, "ops", "web", 52).unwrap();
        run.push(format!("{:?}", close_incidents(db, "web").unwrap()));
        run.push(format!("{:?}", close_incidents(db, "web").unwrap()));
        seen.push(run);
    }
    assert_eq!(seen[0], seen[1]);
    let run = &seen[0];
    assert_eq!(run[0], r#"Some("disk full on web-1")"#);
    assert_eq!((run[3].as_str(), run[4].as_str()), ("true", "false"));
    assert_eq!(run[run.len() - 2], r#"["ops", "pager"]"#);
    assert!(run.iter().any(|l| l.contains("HTTP 503")), "{run:?}");
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn a_lease_has_one_holder_and_a_fenced_transaction_holds_off_the_next() {
    use heal::store::leader::{fence, lead, resign};
    use heal::store::sql::{Db, Pg};
    use std::time::Instant;
    let test = "postgres::a_lease_has_one_holder_and_a_fenced_transaction_holds_off_the_next";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let mut client = heal::pg::connect(&pg.url).unwrap();
    heal::store::postgres::migrate(&mut client).unwrap();
    let b_session = Pg::new(client);
    let mut sqlite = rusqlite::Connection::open_in_memory().unwrap();
    heal::store::migrations::migrate(&mut sqlite).unwrap();
    // The same moves on both databases give the same terms.
    let mut seen = Vec::new();
    for db in [Db::from(&sqlite), Db::from(&b_session)] {
        let term = |l: Option<heal::store::leader::Lease>| l.map(|l| l.term);
        let a = lead(db, "scheduler", "a", 60_000).unwrap().unwrap();
        let mut run = vec![
            term(Some(a.clone())),
            term(lead(db, "scheduler", "b", 60_000).unwrap()),
            term(lead(db, "scheduler", "a", 60_000).unwrap()),
        ];
        resign(db, &a).unwrap();
        let b = lead(db, "scheduler", "b", 60_000).unwrap().unwrap();
        run.push(Some(b.term));
        run.push(Some(i64::from(fence(db, &a).unwrap())));
        run.push(Some(i64::from(fence(db, &b).unwrap())));
        let expired = lead(db, "scheduler", "b", -1).unwrap().unwrap();
        run.push(Some(i64::from(fence(db, &expired).unwrap())));
        run.push(term(lead(db, "scheduler", "a", 60_000).unwrap()));
        db.execute("DELETE FROM leader", heal::args![]).unwrap();
        seen.push(run);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(
        seen[0],
        [
            Some(1),
            None,
            Some(1),
            Some(2),
            Some(0),
            Some(1),
            Some(0),
            Some(3)
        ]
    );

    // On PostgreSQL a holder's fence locks its lease until its transaction
    // ends: another server asking once the lease has expired waits for that
    // commit, and only then takes it, with the next term.
    let db = Db::from(&b_session);
    let b = lead(db, "scheduler", "b", 500).unwrap().unwrap();
    db.batch("BEGIN").unwrap();
    assert!(fence(db, &b).unwrap());
    let url = pg.url.clone();
    let other = std::thread::spawn(move || {
        let a_session = Pg::new(heal::pg::connect(&url).unwrap());
        std::thread::sleep(Duration::from_millis(800));
        let asked = Instant::now();
        let taken = lead(Db::from(&a_session), "scheduler", "a", 60_000).unwrap();
        (taken, asked, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(2_000));
    let committed = Instant::now();
    db.batch("COMMIT").unwrap();
    let (taken, asked, answered) = other.join().unwrap();
    assert!(
        asked < committed,
        "the other server asked while b's transaction was open"
    );
    assert!(
        answered >= committed,
        "the lease was taken before b's fenced transaction ended"
    );
    assert_eq!(taken.map(|l| l.term), Some(b.term + 1));
    assert!(!fence(db, &b).unwrap(), "b's term is over");
}
