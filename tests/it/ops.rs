//! Operating the database: `heal backup` while alerts stream in, and
//! `heal migrate [--check]` on current, older and newer schemas.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::json;

use crate::support::{
    fixture, heal_bin, heal_cli, http, serve_until_exit, test_dir, wait_until, Server,
};

/// A config that records every alert and runs nothing.
pub const CONFIG: &str = r#"
[[rule]]
name = "record-only"
when = "`true`"
action = "discard"
"#;

/// A test path as the `&str` an argument list takes.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A database at schema version 2 (the checked-in dump), written to `path`.
fn version_2_database(path: &Path) {
    let conn = Connection::open(path).expect("create database");
    conn.execute_batch(&fixture("db/v2.sql"))
        .expect("load tests/fixtures/db/v2.sql");
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .expect("read user_version")
}

/// Posts alerts with unique labels until `until` and at least 40 of them (30 s at most),
/// pushing each acknowledged fingerprint to `acked`.
fn stream_alerts(url: String, until: Instant, acked: Arc<Mutex<Vec<String>>>) {
    let headers = [("Content-Type", "application/json")];
    let hard_stop = until + Duration::from_secs(30);
    for n in 0..100_000 {
        let now = Instant::now();
        if (now > until && n >= 40) || now > hard_stop {
            return;
        }
        let body = json!({"name": "Streamed", "labels": {"instance": format!("host-{n}")}});
        let (status, text) = http(
            "POST",
            &format!("{url}/api/v1/alerts"),
            Some(body.to_string().as_bytes()),
            &headers,
        );
        assert_eq!(status, 200, "alert {n}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).expect("JSON answer");
        let fp = answer["alerts"][0]["fingerprint"]
            .as_str()
            .expect("a fingerprint")
            .to_string();
        acked.lock().unwrap().push(fp);
    }
}

#[test]
fn backup_while_alerts_stream_is_whole_and_serves() {
    if crate::support::sqlite_only("ops::backup_while_alerts_stream_is_whole_and_serves") {
        return;
    }
    let dir = test_dir("ops-backup-live");
    let server = Server::start(&dir, CONFIG);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let streamer = {
        let (url, acked) = (server.url.clone(), acked.clone());
        let until = started + Duration::from_secs(2);
        std::thread::spawn(move || stream_alerts(url, until, acked))
    };
    // Half a second in, so the copy has something to hold and the stream goes on.
    std::thread::sleep(Duration::from_millis(500));
    wait_until("20 alerts acknowledged", Duration::from_secs(20), || {
        (acked.lock().unwrap().len() >= 20).then_some(())
    });
    let before: Vec<String> = acked.lock().unwrap().clone();
    let restored = test_dir("ops-backup-restored");
    let copy = restored.join("heal.db");
    let (code, out, err) = heal_cli(
        &["backup", s(&copy), "--db", s(&dir.join("heal.db"))],
        &[],
        None,
    );
    streamer.join().expect("the alert stream");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("wrote {}", copy.display())), "{out}");
    assert!(
        out.contains("schema version") && out.contains("alerts"),
        "{out}"
    );
    assert!(
        acked.lock().unwrap().len() > before.len(),
        "the server kept taking alerts"
    );

    let conn = Connection::open(&copy).expect("the backup opens");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "delete", "a standalone file, no -wal sidecar");
    for fp in &before {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM alert WHERE fingerprint = ?1",
                [fp],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            n, 1,
            "alert {fp} was acknowledged before the backup started"
        );
    }
    drop(conn);
    assert!(!restored.join("heal.db.tmp").exists());
    assert!(!restored.join("heal.db-wal").exists());

    let on_backup = Server::start(&restored, CONFIG);
    let (_, found) = on_backup.get(&format!("/api/v1/alerts?fingerprint={}", before[0]));
    assert_eq!(found["alerts"].as_array().map(Vec::len), Some(1), "{found}");
    assert!(!on_backup.logs().contains("migrated"), "already current");
}

#[test]
fn backup_refuses_to_overwrite_unless_forced() {
    if crate::support::sqlite_only("ops::backup_refuses_to_overwrite_unless_forced") {
        return;
    }
    let dir = test_dir("ops-backup-force");
    let db = dir.join("heal.db");
    version_2_database(&db);
    let target = dir.join("copy.db");
    std::fs::write(&target, "precious").unwrap();

    let (code, out, err) = heal_cli(&["backup", s(&target), "--db", s(&db)], &[], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("{} exists", target.display())) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");

    let (code, out, err) = heal_cli(
        &["backup", s(&target), "--db", s(&db), "--force"],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("schema version 2, 2 events, 2 alerts"),
        "{out}"
    );
    assert_eq!(user_version(&target), 2);

    // Never over the database itself, even forced.
    let (code, _, err) = heal_cli(&["backup", s(&db), "--db", s(&db), "--force"], &[], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is the database itself"), "{err}");
    assert_eq!(user_version(&db), 2);

    // A FILE.tmp is another backup's, or a crashed one's: say so; --force replaces it.
    let other = dir.join("other.db");
    std::fs::write(dir.join("other.db.tmp"), "half").unwrap();
    let (code, _, err) = heal_cli(&["backup", s(&other), "--db", s(&db)], &[], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("other.db.tmp exists"), "{err}");
    assert!(!other.exists());
    let (code, out, err) = heal_cli(&["backup", s(&other), "--db", s(&db), "--force"], &[], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!dir.join("other.db.tmp").exists());
    assert_eq!(user_version(&other), 2);
}

#[test]
fn backup_of_a_missing_or_foreign_database_fails_naming_it() {
    if crate::support::sqlite_only("ops::backup_of_a_missing_or_foreign_database_fails_naming_it") {
        return;
    }
    let dir = test_dir("ops-backup-bad");
    let missing = dir.join("nope.db");
    let out_file = dir.join("out.db");
    let (code, _, err) = heal_cli(&["backup", s(&out_file), "--db", s(&missing)], &[], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("database {} does not exist", missing.display())),
        "{err}"
    );
    assert!(!missing.exists(), "a backup never creates the database");
    assert!(!out_file.exists() && !dir.join("out.db.tmp").exists());

    // The database named by --config's [server] db.
    let config = dir.join("runbooks.toml");
    std::fs::write(&config, format!("[server]\ndb = {:?}\n", s(&missing))).unwrap();
    let (code, _, err) = heal_cli(&["backup", s(&out_file), "--config", s(&config)], &[], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(s(&missing)), "{err}");

    let junk = dir.join("junk.db");
    std::fs::write(&junk, "not a database at all").unwrap();
    let (code, _, err) = heal_cli(&["backup", s(&out_file), "--db", s(&junk)], &[], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("junk.db") && err.contains("not a database"),
        "{err}"
    );
    assert!(!out_file.exists());

    let db = dir.join("heal.db");
    version_2_database(&db);
    let nowhere = dir.join("no-such-dir").join("out.db");
    let (code, _, err) = heal_cli(&["backup", s(&nowhere), "--db", s(&db)], &[], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("out.db.tmp") && err.contains("directory"),
        "{err}"
    );

    let (code, _, err) = heal_cli(&["backup", s(&dir), "--db", s(&db)], &[], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is a directory"), "{err}");

    let (code, _, err) = heal_cli(&["backup"], &[], None);
    assert_eq!(code, 2, "{err}");
}

/// This heal's schema version, as `heal migrate --check` says it.
fn known_version(out: &str) -> usize {
    let at = out.find("this heal's is ").expect("the version line") + "this heal's is ".len();
    out[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a version number")
}

#[test]
fn migrate_check_lists_pending_migrations_and_migrate_applies_them() {
    if crate::support::sqlite_only(
        "ops::migrate_check_lists_pending_migrations_and_migrate_applies_them",
    ) {
        return;
    }
    let dir = test_dir("ops-migrate-old");
    let db = dir.join("heal.db");
    version_2_database(&db);

    let (code, out, err) = heal_cli(&["migrate", "--check", "--db", s(&db)], &[], None);
    assert_eq!(code, 1, "{out}{err}");
    let known = known_version(&out);
    assert!(out.contains("schema version 2,"), "{out}");
    assert!(out.contains("  3: what heal watches by itself"), "{out}");
    assert!(out.contains("  4: notifications"), "{out}");
    let pending = out.lines().filter(|l| l.starts_with("  ")).count();
    assert_eq!(pending, known - 2, "{out}");
    assert!(err.contains("migration(s) pending"), "{err}");
    assert_eq!(user_version(&db), 2, "--check changes nothing");

    let (code, out, err) = heal_cli(&["migrate", "--db", s(&db)], &[], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("  3: what heal watches by itself"), "{out}");
    assert_eq!(user_version(&db), known as i64);

    let (code, out, err) = heal_cli(&["migrate", "--check", "--db", s(&db)], &[], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("up to date"), "{out}");

    // What the older heal stored is still there for the new one.
    let server = Server::start(&dir, CONFIG);
    let events = server.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(server.event(2)["state"], "failed");
}

#[test]
fn migrate_check_on_a_current_database_is_up_to_date() {
    if crate::support::sqlite_only("ops::migrate_check_on_a_current_database_is_up_to_date") {
        return;
    }
    let dir = test_dir("ops-migrate-current");
    let mut server = Server::start(&dir, CONFIG);
    server.terminate();
    // The database found as serve finds it: [server] db of --config.
    let config = dir.join("with-db.toml");
    std::fs::write(
        &config,
        format!("[server]\ndb = {:?}\n", s(&dir.join("heal.db"))),
    )
    .unwrap();
    let (code, out, err) = heal_cli(&["migrate", "--check", "--config", s(&config)], &[], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("up to date"), "{out}");
    assert!(out.contains(s(&dir.join("heal.db"))), "{out}");
}

#[test]
fn a_database_from_a_newer_heal_is_refused_by_check_and_serve() {
    if crate::support::sqlite_only(
        "ops::a_database_from_a_newer_heal_is_refused_by_check_and_serve",
    ) {
        return;
    }
    let dir = test_dir("ops-migrate-newer");
    let db = dir.join("heal.db");
    version_2_database(&db);
    Connection::open(&db)
        .and_then(|c| c.pragma_update(None, "user_version", 999))
        .unwrap();
    let refusal = "newer than this heal knows";
    let fix = "run the newer heal, or restore a backup";

    for args in [
        &["migrate", "--check", "--db", s(&db)][..],
        &["migrate", "--db", s(&db)][..],
    ] {
        let (code, out, err) = heal_cli(args, &[], None);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("schema version 999") && err.contains(refusal) && err.contains(fix),
            "{err}"
        );
    }
    assert_eq!(user_version(&db), 999);

    std::fs::write(dir.join("runbooks.toml"), CONFIG).unwrap();
    let (code, err) = serve_until_exit(Command::new(heal_bin()), &dir);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains(refusal) && err.contains(fix), "{err}");
    assert_eq!(user_version(&db), 999);
}

#[test]
fn migrate_never_creates_a_database() {
    if crate::support::sqlite_only("ops::migrate_never_creates_a_database") {
        return;
    }
    let dir = test_dir("ops-migrate-missing");
    let missing = dir.join("nope.db");
    for args in [
        &["migrate", "--check", "--db", s(&missing)][..],
        &["migrate", "--db", s(&missing)][..],
    ] {
        let (code, out, err) = heal_cli(args, &[], None);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!("database {} does not exist", missing.display())),
            "{err}"
        );
        assert!(!missing.exists());
    }
    let junk = dir.join("junk.db");
    std::fs::write(&junk, "not a database at all").unwrap();
    let (code, _, err) = heal_cli(&["migrate", "--check", "--db", s(&junk)], &[], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("junk.db"), "{err}");
    let (code, _, err) = heal_cli(&["migrate", "--check", "--bogus"], &[], None);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn version_is_printed_and_nothing_else_goes_with_it() {
    if crate::support::sqlite_only("ops::version_is_printed_and_nothing_else_goes_with_it") {
        return;
    }
    let (code, out, err) = heal_cli(&["--version"], &[], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("heal {}\n", env!("CARGO_PKG_VERSION")));
    let (code, _, err) = heal_cli(&["--version", "serve"], &[], None);
    assert_eq!(code, 2, "{err}");
}
