//! The database under hostile and careless use: a second server on it, a
//! damaged file, a full disk, files others could read, secrets kept in it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::json;

use crate::ops::{s, CONFIG};
use crate::support::{
    self, heal_bin, heal_cli, http, serve_until_exit, test_dir, wait_until, Server,
};

/// `heal` with the umask most shells have, so nothing is private by accident.
fn heal_umask_022() -> Command {
    let mut cmd = Command::new(heal_bin());
    // SAFETY: umask is async-signal-safe and touches only the child's own mask.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A heal database of more than a megabyte (4,000 alerts), checkpointed
/// into the main file, at dir/heal.db.
fn large_database(dir: &Path) {
    let mut server = Server::start(dir, CONFIG);
    assert_eq!(server.terminate(), Some(0), "{}", server.logs());
    let conn = Connection::open(dir.join("heal.db")).expect("open heal.db");
    let pad = "x".repeat(300);
    conn.execute_batch("BEGIN").unwrap();
    for n in 0..4000 {
        conn.execute(
            "INSERT INTO alert (fingerprint, source, name, status, labels, annotations, first_seen, last_seen)
             VALUES (?1, 'test', 'Big', 'firing', ?2, '{}', 1, 1)",
            rusqlite::params![format!("fp-{n:05}"), format!("{{\"pad\":\"{pad}{n}\"}}")],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
    // The last connection to close checkpoints the WAL into the file.
    drop(conn);
    assert!(!dir.join("heal.db-wal").exists());
}

/// Writes `len` (seeded, so repeatable) random bytes centred on the middle
/// of the database file, page-aligned, as a failing disk or a stray `dd` would.
fn damage(db: &Path, len: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let size = std::fs::metadata(db).expect("database").len();
    let at = (size - len) / 2 / 4096 * 4096;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
}

// Regression: a second server on one database ran its outbox too.
#[test]
fn a_second_server_on_one_database_is_refused_and_names_the_first() {
    if crate::support::sqlite_only(
        "store::a_second_server_on_one_database_is_refused_and_names_the_first",
    ) {
        return;
    }
    let dir = test_dir("store-second-server");
    let mut first = Server::start(&dir, CONFIG);
    let started = Instant::now();
    let (code, err) = serve_until_exit(Command::new(heal_bin()), &dir);
    let took = started.elapsed();
    assert_eq!(code, Some(2), "{err}");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    for holder in [
        format!("pid={}", first.pid()),
        format!("listen={}", first.url),
    ] {
        assert!(err.contains(&holder), "{holder} not named in: {err}");
    }
    assert!(err.contains("host="), "{err}");
    // Nothing of the second one reached the store: one config version only.
    let versions: i64 = Connection::open(dir.join("heal.db"))
        .and_then(|c| c.query_row("SELECT count(*) FROM config_version", [], |r| r.get(0)))
        .expect("count config versions");
    assert_eq!(versions, 1);

    // Readers still work beside the running server.
    let db = dir.join("heal.db");
    let backup = dir.join("copy.db");
    let (code, out, err) = heal_cli(&["backup", s(&backup), "--db", s(&db)], &[], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = heal_cli(&["check-db", "--db", s(&db)], &[], None);
    assert_eq!(code, 0, "{out}{err}");

    // kill -9 leaves no lock behind: the next server starts at once.
    first.kill();
    let started = Instant::now();
    let second = Server::start(&dir, CONFIG);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(second.get_ok("/-/ready")["status"], "ready");
    let lock = std::fs::read_to_string(dir.join("heal.db.lock")).unwrap();
    assert!(lock.contains(&format!("pid={}", second.pid())), "{lock}");
}

// Regression: outside systemd's UMask=0077 the database was 0644.
#[test]
fn database_wal_lock_and_backups_are_private_whatever_the_umask() {
    if crate::support::sqlite_only(
        "store::database_wal_lock_and_backups_are_private_whatever_the_umask",
    ) {
        return;
    }
    let dir = test_dir("store-private-files");
    let server = Server::start_command(&dir, CONFIG, heal_umask_022(), "127.0.0.1:0", &[]);
    let (status, body) = server.post("/api/v1/alerts", &json!({"name": "Written"}));
    assert_eq!(status, 200, "{body}");
    for file in ["heal.db", "heal.db-wal", "heal.db-shm", "heal.db.lock"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    let backup = dir.join("copy.db");
    let out = heal_umask_022()
        .args(["backup", s(&backup), "--db", s(&dir.join("heal.db"))])
        .output()
        .expect("run heal backup");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&backup), 0o600);
}

// Regression: a damaged database started and said ready.
#[test]
fn a_damaged_database_is_refused_at_start_and_by_check_db() {
    if crate::support::sqlite_only("store::a_damaged_database_is_refused_at_start_and_by_check_db")
    {
        return;
    }
    let dir = test_dir("store-damaged-start");
    large_database(&dir);
    let db = dir.join("heal.db");
    let (code, out, err) = heal_cli(&["check-db", "--db", s(&db)], &[], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("integrity_check ok"), "{out}");

    damage(&db, 8192);
    let (code, out, err) = heal_cli(&["check-db", "--db", s(&db)], &[], None);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is damaged"), "{err}");
    let started = Instant::now();
    let (code, err) = serve_until_exit(Command::new(heal_bin()), &dir);
    assert_eq!(code, Some(2), "{err}");
    for hint in ["is damaged", "heal backup", ".recover"] {
        assert!(err.contains(hint), "{hint:?} missing from: {err}");
    }
    eprintln!("refused a damaged database in {:?}", started.elapsed());

    // A file that is not SQLite at all is refused the same way.
    std::fs::write(&db, vec![0x42; 16384]).unwrap();
    let (code, err) = serve_until_exit(Command::new(heal_bin()), &dir);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(".recover"), "{err}");
}

// Regression: /-/ready stayed ready while reads failed "malformed".
#[test]
fn ready_turns_503_once_the_store_reports_damage() {
    if crate::support::sqlite_only("store::ready_turns_503_once_the_store_reports_damage") {
        return;
    }
    let dir = test_dir("store-damaged-live");
    large_database(&dir);
    let server = Server::start(&dir, CONFIG);
    assert_eq!(server.get_ok("/-/ready")["status"], "ready");
    // Half the file: whichever pages a read needs, it meets damage.
    let size = std::fs::metadata(dir.join("heal.db")).unwrap().len();
    damage(&dir.join("heal.db"), size / 2 / 4096 * 4096);
    // Reads that walk the alerts meet the damaged pages.
    wait_until("a read to hit the damage", Duration::from_secs(10), || {
        let (a, _) = server.get("/api/v1/alerts?limit=1000");
        let (m, _) = server.get("/metrics");
        (a >= 500 || m >= 500).then_some(())
    });
    let (status, body) = server.get("/-/ready");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("corrupt"),
        "{body}"
    );
}

/// A tmpfs of `size` mounted on `dir` for one test; unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// None when this environment cannot mount (not root, no CAP_SYS_ADMIN).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .ok()?;
        out.status.success().then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

// Regression: /-/ready stayed ready on a full disk.
#[test]
#[ignore = "needs root, to mount a small tmpfs; cargo test -- --include-ignored runs it, as .ci/run does"]
fn ready_turns_503_on_a_full_disk_and_back_when_a_write_succeeds() {
    if crate::support::sqlite_only(
        "store::ready_turns_503_on_a_full_disk_and_back_when_a_write_succeeds",
    ) {
        return;
    }
    let dir = test_dir("store-disk-full");
    let Some(_fs) = Tmpfs::mount(&dir, "4m") else {
        support::skip(
            "store::ready_turns_503_on_a_full_disk_and_back_when_a_write_succeeds",
            "root, to mount a tmpfs",
        );
        return;
    };
    // Room heal can get back later: more than max_body (1 MiB).
    std::fs::write(dir.join("filler"), vec![0u8; 2 << 20]).unwrap();
    let mut server = Server::start(&dir, CONFIG);
    let big = "y".repeat(100_000);
    let mut refused = None;
    for n in 0..100 {
        let (status, body) = server.post(
            "/api/v1/alerts",
            &json!({"name": "Fill", "labels": {"n": n.to_string()}, "annotations": {"pad": big}}),
        );
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("a 4 MiB disk fills within 100 alerts of 100 kB");
    assert!(status >= 500, "{status} {body}");
    // Whatever room the refused alert left is taken too: ready's own probe write must find none.
    {
        use std::io::Write;
        let mut rest = std::fs::File::create(dir.join("rest")).unwrap();
        let chunk = [0u8; 4096];
        for _ in 0..10_000 {
            if rest.write_all(&chunk).and_then(|()| rest.flush()).is_err() {
                break;
            }
        }
    }
    let (status, body) = server.get("/-/ready");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("full"),
        "{body}"
    );

    // With room again, ready recovers without waiting for traffic it may be keeping away.
    std::fs::remove_file(dir.join("filler")).unwrap();
    assert_eq!(server.get_ok("/-/ready")["status"], "ready");
    let (status, body) = server.post("/api/v1/alerts", &json!({"name": "Room"}));
    assert_eq!(status, 200, "{body}");
    server.kill();
}

const HEARTBEAT_KEY: &str = "hb-key-0123456789abcdef";

// Regression: an API-registered heartbeat's ping_key was stored in plain text.
#[test]
fn ping_keys_are_stored_as_hashes_and_still_work() {
    if crate::support::sqlite_only("store::ping_keys_are_stored_as_hashes_and_still_work") {
        return;
    }
    let dir = test_dir("store-ping-key-hash");
    let mut server = Server::start(&dir, CONFIG);
    let (status, body) = http(
        "PUT",
        &format!("{}/api/v1/heartbeats/nightly", server.url),
        Some(
            json!({"every": "1d", "ping_key": HEARTBEAT_KEY})
                .to_string()
                .as_bytes(),
        ),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(status, 201, "{body}");
    let stored = |dir: &Path| -> String {
        Connection::open(dir.join("heal.db"))
            .and_then(|c| {
                c.query_row(
                    "SELECT def FROM heartbeat WHERE name = 'nightly'",
                    [],
                    |r| r.get(0),
                )
            })
            .expect("read the heartbeat's row")
    };
    let def = stored(&dir);
    assert!(
        !def.contains(HEARTBEAT_KEY),
        "the key is in the store: {def}"
    );
    assert!(def.contains("ping_key_sha256"), "{def}");
    let shown = server.get_ok("/api/v1/heartbeats/nightly").to_string();
    assert!(!shown.contains(HEARTBEAT_KEY), "{shown}");
    let ping = |server: &Server, key: &str| {
        http(
            "POST",
            &format!("{}/ping/nightly?key={key}", server.url),
            Some(b""),
            &[],
        )
        .0
    };
    assert_eq!(ping(&server, HEARTBEAT_KEY), 200);
    assert_eq!(ping(&server, "hb-key-0123456789abcdeX"), 401);
    assert_eq!(server.terminate(), Some(0));

    // A key stored in plain text by an older heal is hashed at the next start.
    let plain = json!({"name": "nightly", "every": "1d", "ping_key": HEARTBEAT_KEY}).to_string();
    Connection::open(dir.join("heal.db"))
        .and_then(|c| {
            c.execute(
                "UPDATE heartbeat SET def = ?1 WHERE name = 'nightly'",
                [&plain],
            )
        })
        .expect("store a plain key as an older heal did");
    let server = Server::start(&dir, CONFIG);
    let def = stored(&dir);
    assert!(!def.contains(HEARTBEAT_KEY), "still in plain text: {def}");
    assert_eq!(ping(&server, HEARTBEAT_KEY), 200);
    assert_eq!(ping(&server, "wrong-key-0123456789abc"), 401);
}

// Regression: --token on a command line is readable by every local user.
#[test]
fn a_token_on_the_command_line_warns_and_names_the_alternatives() {
    if crate::support::sqlite_only(
        "store::a_token_on_the_command_line_warns_and_names_the_alternatives",
    ) {
        return;
    }
    let dir = test_dir("store-token-warning");
    let server = Server::start(&dir, CONFIG);
    let (code, out, err) = heal_cli(
        &[
            "events",
            "--server",
            &server.url,
            "--token",
            "some-token-0123456789",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    for words in ["visible", "ps", "--token-file", "HEAL_TOKEN"] {
        assert!(err.contains(words), "{words:?} missing from: {err}");
    }
    let file = dir.join("token");
    std::fs::write(&file, "some-token-0123456789\n").unwrap();
    let (code, out, err) = heal_cli(
        &["events", "--server", &server.url, "--token-file", s(&file)],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
}
