//! heal's schema on a real PostgreSQL (Debian's `postgresql`, a throwaway
//! cluster per test) and `heal migrate --from heal.db --to postgres://…`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

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
    if crate::support::first_pass_only(
        "postgres::a_stopped_store_is_copied_into_postgres_row_for_row_and_goes_on_there",
    ) {
        return;
    }
    let test = "postgres::a_stopped_store_is_copied_into_postgres_row_for_row_and_goes_on_there";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let db = a_used_store("pg-copy");
    let (code, out) = migrate(&["--from", db.to_str().unwrap(), "--to", &pg.url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("every table's row count checked"), "{out}");
    assert!(
        out.contains("To serve from postgres://") && out.contains("to the URL given to --to"),
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
fn a_copied_store_serves_on_postgres_and_a_stopped_server_lets_the_next_lead() {
    if crate::support::first_pass_only(
        "postgres::a_copied_store_serves_on_postgres_and_a_stopped_server_lets_the_next_lead",
    ) {
        return;
    }
    let test =
        "postgres::a_copied_store_serves_on_postgres_and_a_stopped_server_lets_the_next_lead";
    let Some(pg) = start_fast(test) else {
        return;
    };
    let db = a_used_store("pg-serve");
    let (code, out) = migrate(&["--from", db.to_str().unwrap(), "--to", &pg.url]);
    assert_eq!(code, 0, "{out}");
    let dir = test_dir("pg-serve-on");
    let config = std::fs::read_to_string(repo().join("runbooks.toml")).unwrap();
    let agent = ["--local-agent", "--local-agent-id", "localhost"];
    let serve = |dir: &Path| {
        Server::start_on(
            dir,
            &config,
            std::process::Command::new(crate::support::heal_bin()),
            pg.url.as_ref(),
            "127.0.0.1:0",
            &agent,
        )
    };
    let mut server = serve(&dir);
    // What the SQLite store held is served from PostgreSQL.
    let copied = server.events();
    let before = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM event", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(copied.len() as i64, before, "{copied:?}");
    assert!(copied.iter().all(|e| !e["ended_at"].is_null()));
    // A new alert is decided, run on the agent and ended, all in PostgreSQL.
    crate::support::wait_agent_polling(&server, "localhost");
    let sample = std::fs::read_dir(repo().join("examples/alerts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let (code, out, err) = heal_cli(
        &[
            "fire",
            "--file",
            sample.to_str().unwrap(),
            "--server",
            &server.url,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let new = crate::support::wait_until("a new event", Duration::from_secs(20), || {
        let events = server.events();
        (events.len() as i64 > before).then_some(events)
    });
    let newest = new.iter().map(|e| e["id"].as_i64().unwrap()).max().unwrap();
    let ended = server.wait_event(newest, &["succeeded"], Duration::from_secs(60));
    assert_eq!(ended["state"], "succeeded", "{ended}\n{}", server.logs());
    let stored: i64 = pg
        .psql(&format!(
            "SELECT count(*) FROM op_step s JOIN op o ON o.id = s.op_id WHERE o.event_id = {newest}"
        ))
        .trim()
        .parse()
        .unwrap();
    assert!(stored >= 1, "the new event's steps are in PostgreSQL");
    // Stopped, the first lets its lease go: the next server leads at once.
    let other = test_dir("pg-serve-second");
    assert_eq!(server.terminate(), Some(0), "{}", server.logs());
    let mut again = serve(&other);
    assert_eq!(again.events().len(), new.len());
    crate::support::wait_until("the next server to lead", Duration::from_secs(5), || {
        again.logs().contains("this server leads now").then_some(())
    });
    assert_eq!(again.terminate(), Some(0), "{}", again.logs());
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn a_postgres_restart_under_load_answers_503_then_2xx_and_loses_nothing_acknowledged() {
    if crate::support::first_pass_only("postgres::a_postgres_restart_under_load_answers_503_then_2xx_and_loses_nothing_acknowledged") {
        return;
    }
    let test = "postgres::a_postgres_restart_under_load_answers_503_then_2xx_and_loses_nothing_acknowledged";
    let Some(mut pg) = crate::support::postgres::start(test) else {
        return;
    };
    let dir = test_dir("pg-restart");
    let ran = dir.join("ran.log");
    let config = format!(
        r#"
[server]
poll_wait = "2s"

[safety]
max_runs_per_hour = 1000000
max_failed_in_row = 1000000

[[rule]]
name = "fix"
when = "labels.alertname == 'RestartTest'"
runbook = "fix"
target = "labels.agent"

[runbook.fix]
timeout = "10s"
steps = [ {{ name = "mark", run = "echo \"$HEAL_EVENT_ID\" >> {}" }} ]
"#,
        ran.display()
    );
    let mut server = Server::start_on(
        &dir,
        &config,
        std::process::Command::new(crate::support::heal_bin()),
        pg.url.as_ref(),
        "127.0.0.1:0",
        &[],
    );
    let agent = crate::support::Agent::start(&server.url, "pg-agent", &["--allow", "fix"]);
    crate::support::wait_agent_polling(&server, "pg-agent");
    let stop = AtomicBool::new(false);
    let restarted = AtomicBool::new(false);
    // Each client: (acknowledged fingerprints, statuses seen, 2xx after the restart).
    let (results, outage) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..2)
            .map(|c| {
                let (url, stop, restarted) = (&server.url, &stop, &restarted);
                s.spawn(move || {
                    let (mut acked, mut statuses, mut after) = (Vec::new(), Vec::new(), 0);
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) && n < 5_000 {
                        n += 1;
                        let fingerprint = format!("r{c}{n:06}");
                        let body = json!({
                            "version": "4", "status": "firing", "receiver": "heal",
                            "groupKey": format!("{{}}:{{fp=\"{fingerprint}\"}}"),
                            "alerts": [{
                                "status": "firing", "fingerprint": fingerprint,
                                "labels": {"alertname": "RestartTest", "agent": "pg-agent", "n": fingerprint},
                                "annotations": {}, "startsAt": "2026-12-04T10:00:00Z"
                            }]
                        });
                        let (status, _) = crate::support::http(
                            "POST",
                            &format!("{url}/api/v1/alerts/alertmanager"),
                            Some(body.to_string().as_bytes()),
                            &[("Content-Type", "application/json")],
                        );
                        statuses.push(status);
                        if (200..300).contains(&status) {
                            acked.push(fingerprint);
                            if restarted.load(Ordering::SeqCst) {
                                after += 1;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    (acked, statuses, after)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let began = std::time::Instant::now();
        pg.restart_after(Duration::from_secs(3));
        let outage = began.elapsed();
        restarted.store(true, Ordering::SeqCst);
        // Work goes on after the restart, on new sessions.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::SeqCst);
        let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        (results, outage)
    });
    let acked: Vec<String> = results.iter().flat_map(|r| r.0.clone()).collect();
    let statuses: Vec<u16> = results.iter().flat_map(|r| r.1.clone()).collect();
    let after: usize = results.iter().map(|r| r.2).sum();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    let other: Vec<&u16> = statuses
        .iter()
        .filter(|s| !(200..300).contains(*s) && **s != 503)
        .collect();
    eprintln!(
        "postgres restart: down {} ms; {} requests, {} acknowledged ({after} after the restart), {refused} answered 503",
        outage.as_millis(),
        statuses.len(),
        acked.len()
    );
    assert!(
        other.is_empty(),
        "neither 2xx nor 503: {other:?}\n{}",
        server.logs()
    );
    assert!(refused >= 1, "no 503 during the outage\n{}", server.logs());
    // The outage is logged once as it begins and once as it ends.
    let logs = server.logs();
    let began = logs.matches("no new one opens").count();
    assert!(
        began == 1 && logs.contains("store: the database is back after"),
        "{began} lines for the outage\n{logs}"
    );
    // Not one line per webhook turned away.
    let per_request = logs
        .lines()
        .filter(|l| l.contains("[ERROR] POST /api/v1/alerts"))
        .count();
    assert_eq!(per_request, 0, "{logs}");
    assert!(
        after >= 10,
        "only {after} acknowledged after the restart\n{}",
        server.logs()
    );
    // Every acknowledged alert is stored.
    let stored: std::collections::HashSet<String> = pg
        .psql("SELECT fingerprint FROM alert")
        .lines()
        .map(str::to_string)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|f| !stored.contains(*f)).collect();
    assert!(lost.is_empty(), "acknowledged, not stored: {lost:?}");
    // Every event ends, and no step ran twice.
    crate::support::wait_until("every event to end", Duration::from_secs(90), || {
        (pg.psql("SELECT count(*) FROM event WHERE ended_at IS NULL")
            .trim()
            == "0")
            .then_some(())
    });
    let marks = std::fs::read_to_string(&ran).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<&str> = marks.lines().filter(|l| !seen.insert(*l)).collect();
    assert!(twice.is_empty(), "steps that ran twice: {twice:?}");
    assert_eq!(server.terminate(), Some(0), "{}", server.logs());
    drop(agent);
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_schema_on_postgres_has_every_table_column_and_index_of_sqlites() {
    if crate::support::first_pass_only(
        "postgres::the_schema_on_postgres_has_every_table_column_and_index_of_sqlites",
    ) {
        return;
    }
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
    if crate::support::first_pass_only(
        "postgres::heals_migrating_one_database_at_once_migrate_it_once",
    ) {
        return;
    }
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
    if crate::support::first_pass_only(
        "postgres::bad_targets_a_running_server_and_a_store_not_heals_are_refused",
    ) {
        return;
    }
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
    // heal serve names the database it cannot reach, without the password.
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
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!(
            "cannot connect to postgres://<redacted>@127.0.0.1:{port}/heal"
        )) && !err.contains("hunter2"),
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
    if crate::support::first_pass_only(
        "postgres::a_sql_probe_compares_a_postgres_value_and_never_shows_its_password",
    ) {
        return;
    }
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
    if crate::support::first_pass_only(
        "postgres::the_store_sql_layer_reads_and_writes_alike_on_sqlite_and_postgres",
    ) {
        return;
    }
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
