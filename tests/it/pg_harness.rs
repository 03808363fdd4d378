//! The PostgreSQL harness itself: a cluster of the test's own on 127.0.0.1
//! keeps committed rows across a restart and a crash, and leaves no process
//! or directory behind.

use std::path::Path;

use crate::support::postgres;

/// Whether a process `pid` exists (a zombie counts).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pids whose parent is `pid`: the postmaster's backends and workers.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // Field 4 of /proc/PID/stat, after the parenthesised name.
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    == Some(pid.to_string().as_str())
            })
        })
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL's server (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn pg_harness_cluster_answers_on_loopback_only() {
    if crate::support::first_pass_only("pg_harness::pg_harness_cluster_answers_on_loopback_only") {
        return;
    }
    let Some(pg) = postgres::start_fast("pg_harness_loopback") else {
        return;
    };
    assert_eq!(pg.psql("select 1"), "1");
    assert_eq!(
        pg.url,
        format!("postgres://postgres@127.0.0.1:{}/heal", pg.port)
    );
    assert_eq!(
        pg.psql("show listen_addresses; select current_database(); show fsync"),
        "127.0.0.1\nheal\noff"
    );
    assert!(pg
        .psql("show unix_socket_directories")
        .starts_with(pg.dir.to_str().unwrap()));
}

#[test]
#[ignore = "needs PostgreSQL's server (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn pg_harness_table_survives_a_restart() {
    if crate::support::first_pass_only("pg_harness::pg_harness_table_survives_a_restart") {
        return;
    }
    let Some(mut pg) = postgres::start("pg_harness_restart") else {
        return;
    };
    assert_eq!(
        pg.psql("show fsync; show synchronous_commit; show full_page_writes"),
        "on\non\non"
    );
    pg.psql("create table t (id integer primary key, note text); insert into t values (1, 'kept')");
    let port = pg.port;
    let before = pg.pid();
    pg.restart();
    assert_ne!(pg.pid(), before, "restart started a new postmaster");
    assert_eq!(pg.port, port);
    assert_eq!(pg.psql("select id, note from t"), "1|kept");
}

#[test]
#[ignore = "needs PostgreSQL's server (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn pg_harness_committed_row_survives_a_crash() {
    if crate::support::first_pass_only("pg_harness::pg_harness_committed_row_survives_a_crash") {
        return;
    }
    let Some(mut pg) = postgres::start("pg_harness_crash") else {
        return;
    };
    pg.psql("create table t (id integer primary key); insert into t values (1)");
    let pid = pg.pid().expect("the server runs");
    pg.kill();
    assert!(
        !alive(pid),
        "postmaster {pid} still runs after an immediate shutdown"
    );
    pg.restart();
    assert_eq!(pg.psql("select id from t"), "1");
    // The crash left no checkpoint: the row came back by replaying the WAL.
    assert!(
        pg.logs().contains("database system was interrupted"),
        "{}",
        pg.logs()
    );
}

#[test]
#[ignore = "needs PostgreSQL's server (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn pg_harness_drop_leaves_no_process_and_no_dir() {
    if crate::support::first_pass_only("pg_harness::pg_harness_drop_leaves_no_process_and_no_dir") {
        return;
    }
    let Some(pg) = postgres::start_fast("pg_harness_drop") else {
        return;
    };
    pg.psql("select 1");
    let postmaster = pg.pid().expect("the server runs");
    let workers = children(postmaster);
    assert!(
        !workers.is_empty(),
        "the postmaster {postmaster} has no children"
    );
    let dir = pg.dir.clone();
    drop(pg);
    assert!(
        !alive(postmaster),
        "postmaster {postmaster} outlived the drop"
    );
    for worker in workers {
        assert!(
            !alive(worker),
            "postgres process {worker} outlived the drop"
        );
    }
    assert!(!dir.exists(), "{} outlived the drop", dir.display());
}
