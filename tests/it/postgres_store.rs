//! The store's modules on PostgreSQL: each module's functions run with the
//! same inputs on SQLite and on a throwaway PostgreSQL (the schema from
//! `heal::store::postgres::migrate`), and must give the same results.

use heal::args;
use heal::store::sql::{Db, Pg};

use crate::support::postgres::{start_fast, Postgres};

/// A migrated SQLite database in memory and a migrated throwaway
/// PostgreSQL (kept running while the first is alive); None without
/// PostgreSQL installed.
fn both(test: &str) -> Option<(Postgres, Pg, rusqlite::Connection)> {
    let pg = start_fast(test)?;
    let mut client = heal::pg::connect(&pg.url).unwrap();
    heal::store::postgres::migrate(&mut client).unwrap();
    let mut sqlite = rusqlite::Connection::open_in_memory().unwrap();
    heal::store::migrations::migrate(&mut sqlite).unwrap();
    Some((pg, Pg::new(client), sqlite))
}

/// Adds an event in `state` to either database; its id.
fn an_event(db: Db, state: &str) -> i64 {
    db.insert(
        "INSERT INTO event (rule, runbook, key, fingerprint, state, mode, created_at, updated_at)
         VALUES ('r', 'b', 'k', 'f', ?1, 'live', 1, 1)",
        args![state],
    )
    .unwrap()
}

/// Adds an op of `agent` in `state` to either database; its id.
fn an_op(db: Db, event_id: i64, agent: &str, state: &str, instance: Option<&str>) -> i64 {
    db.insert(
        "INSERT INTO op (event_id, agent, state, spec, created_at, instance) VALUES (?1, ?2, ?3, '{}', 1, ?4)",
        args![event_id, agent, state, instance],
    )
    .unwrap()
}

fn agents_results(db: Db) -> Vec<String> {
    use heal::store::{
        agent_known, agents_with_tags, claim_agent, forget_agent, heard_from, list_agents,
        silent_agents, unfinished_ops, AgentHello,
    };
    let mut seen = Vec::new();
    let hello = |instance: &str, tags: &[&str]| AgentHello {
        instance: instance.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        allow: vec!["*".into()],
        version: "1.0".into(),
        hostname: "h".into(),
    };
    seen.push(format!("known before {}", agent_known(db, "web").unwrap()));
    let claim = |id: &str, hello: AgentHello, now: i64| {
        let claim = claim_agent(db, id, &hello, now, 0).unwrap();
        format!("claim {id} {} {claim:?}", hello.instance)
    };
    seen.push(claim("web", hello("i1", &["web", "eu"]), 1_000));
    seen.push(claim("db", hello("i1", &["db"]), 1_000));
    seen.push(claim("old", hello("i1", &[]), 100));
    // Within the resolution and unchanged: nothing written, last_seen stays.
    seen.push(claim("web", hello("i1", &["web", "eu"]), 2_000));
    // A new instance asks; the holder is heard from; the newcomer is
    // refused; the holder goes silent, and the newcomer takes the id.
    seen.push(claim("db", hello("i2", &["db", "eu"]), 2_000));
    seen.push(claim("db", hello("i1", &["db"]), 2_000));
    seen.push(claim("db", hello("i2", &["db", "eu"]), 2_000));
    seen.push(claim("db", hello("i2", &["db", "eu"]), 2_000));
    seen.push(claim("db", hello("i3", &["db"]), 2_000));
    seen.push(format!("heard db {}", heard_from(db, "db").unwrap()));
    seen.push(format!(
        "heard nobody {}",
        heard_from(db, "nobody").unwrap()
    ));
    claim_agent(db, "db", &hello("i3", &[]), 2_000, 0).unwrap();
    seen.push(claim("db", hello("i3", &["db"]), 2_000));
    seen.push(claim("db", hello("i2", &["db", "eu"]), 2_000));
    seen.push(format!("known after {}", agent_known(db, "web").unwrap()));
    seen.push(format!(
        "eu {:?}",
        agents_with_tags(db, &["eu".into()]).unwrap()
    ));
    seen.push(format!(
        "web+eu {:?}",
        agents_with_tags(db, &["web".into(), "eu".into()]).unwrap()
    ));
    let event = an_event(db, "running");
    seen.push(format!("event {event}"));
    for (agent, state) in [
        ("web", "running"),
        ("web", "queued"),
        ("web", "queued"),
        ("old", "succeeded"),
    ] {
        seen.push(format!("op {}", an_op(db, event, agent, state, Some("i1"))));
    }
    for a in list_agents(db).unwrap() {
        seen.push(format!(
            "{} {} {:?} {:?} {} {} {} {} {} {}",
            a.id,
            a.instance,
            a.tags,
            a.allow,
            a.version,
            a.hostname,
            a.first_seen,
            a.last_seen,
            a.running_ops,
            a.queued_ops
        ));
    }
    seen.push(format!(
        "unfinished web {:?}",
        unfinished_ops(db, "web").unwrap()
    ));
    seen.push(format!(
        "unfinished old {:?}",
        unfinished_ops(db, "old").unwrap()
    ));
    seen.push(format!(
        "silent 5000 {:?}",
        silent_agents(db, 5_000).unwrap()
    ));
    seen.push(format!(
        "silent 1500 {:?}",
        silent_agents(db, 1_500).unwrap()
    ));
    seen.push(format!("silent 100 {:?}", silent_agents(db, 100).unwrap()));
    seen.push(format!("forget {}", forget_agent(db, "old").unwrap()));
    seen.push(format!("forget again {}", forget_agent(db, "old").unwrap()));
    seen.push(format!("known old {}", agent_known(db, "old").unwrap()));
    seen.push(format!(
        "ops of old kept {:?}",
        unfinished_ops(db, "old").unwrap()
    ));
    seen
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn agents_are_stored_alike_on_sqlite_and_postgres() {
    if crate::support::first_pass_only(
        "postgres_store::agents_are_stored_alike_on_sqlite_and_postgres",
    ) {
        return;
    }
    let Some((_pg, pg, sqlite)) =
        both("postgres_store::agents_are_stored_alike_on_sqlite_and_postgres")
    else {
        return;
    };
    let on_sqlite = agents_results(Db::from(&sqlite));
    let on_postgres = agents_results(Db::from(&pg));
    assert_eq!(on_sqlite, on_postgres);
    let expect = [
        "known before false",
        "claim db i2 Checking { instance: \"i1\", hostname: \"h\" }",
        "claim db i2 InUse { instance: \"i1\", hostname: \"h\" }",
        "claim db i2 Held",
        "claim db i3 Held",
        "claim db i2 Checking { instance: \"i3\", hostname: \"h\" }",
        "heard nobody false",
        "known after true",
        "eu [\"web\"]",
        "web+eu [\"web\"]",
        "event 1",
        "db i3 [\"db\"] [\"*\"] 1.0 h 1000 2000 0 0",
        "old i1 [] [\"*\"] 1.0 h 100 100 0 0",
        "web i1 [\"web\", \"eu\"] [\"*\"] 1.0 h 1000 1000 1 2",
        "silent 5000 [\"db\", \"old\"]",
        "silent 1500 [\"old\"]",
        "silent 100 []",
        "forget true",
        "forget again false",
        "known old false",
    ];
    for line in expect {
        assert!(
            on_sqlite.iter().any(|s| s == line),
            "{line}: {on_sqlite:#?}"
        );
    }
}

fn alerts_results(db: Db) -> Vec<String> {
    use heal::alert::{Alert, Status};
    use heal::store::{get_alert, list_alerts, record_alert, record_decision};
    let mut seen = Vec::new();
    let alert = |fp: &str, status: Status, starts_at: Option<i64>| Alert {
        fingerprint: fp.into(),
        name: if fp == "cpu" { "Cpu" } else { "Disk" }.into(),
        status,
        labels: [("alertname".to_string(), "Disk".to_string())].into(),
        annotations: Default::default(),
        starts_at,
        ends_at: (status == Status::Resolved).then_some(900),
        source: "alertmanager".into(),
    };
    // Every receipt: new, repeat, resolved, stale (twice), a new occurrence,
    // and an alert whose source gave no start.
    for (fp, status, starts, now) in [
        ("disk", Status::Firing, Some(100), 1_000),
        ("disk", Status::Firing, Some(100), 1_100),
        ("disk", Status::Resolved, Some(100), 1_200),
        ("disk", Status::Resolved, Some(100), 1_300),
        ("disk", Status::Firing, Some(100), 1_400),
        ("cpu", Status::Firing, None, 1_500),
        ("disk", Status::Firing, Some(2_000), 2_100),
        ("cpu", Status::Firing, None, 2_200),
        ("mem", Status::Resolved, None, 1_800),
    ] {
        let receipt = record_alert(db, &alert(fp, status, starts), now).unwrap();
        seen.push(format!("{fp} {status:?} {now}: {receipt:?}"));
    }
    let event = an_event(db, "running");
    record_decision(db, "disk", Some("r1"), "ran", "matched", Some(event), 1_000).unwrap();
    record_decision(db, "disk", None, "ignored", "no rule", None, 2_100).unwrap();
    seen.push(format!("disk {}", get_alert(db, "disk").unwrap().unwrap()));
    seen.push(format!("cpu {}", get_alert(db, "cpu").unwrap().unwrap()));
    seen.push(format!("none {:?}", get_alert(db, "none").unwrap()));
    for (status, fp, name, since, limit) in [
        (None, None, None, 0, 10),
        (None, None, None, 0, 2),
        (None, None, None, 2_000, 10),
        (Some("firing"), None, None, 0, 10),
        (Some("resolved"), None, None, 0, 10),
        (None, Some("disk"), None, 0, 10),
        (Some("resolved"), Some("disk"), None, 0, 10),
        (None, Some("cpu"), Some("Cpu"), 0, 10),
        (None, Some("cpu"), Some("Disk"), 0, 10),
        (None, None, Some("Disk"), 0, 10),
        (Some("firing"), None, Some("Cpu"), 0, 10),
        (None, None, None, 0, 0),
    ] {
        let listed = list_alerts(db, status, fp, name, since, limit).unwrap();
        seen.push(format!(
            "{status:?} {fp:?} {name:?} {since} {limit}: {listed:?}"
        ));
    }
    seen
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn alerts_and_decisions_are_stored_alike_on_sqlite_and_postgres() {
    if crate::support::first_pass_only(
        "postgres_store::alerts_and_decisions_are_stored_alike_on_sqlite_and_postgres",
    ) {
        return;
    }
    let test = "postgres_store::alerts_and_decisions_are_stored_alike_on_sqlite_and_postgres";
    let Some((_pg, pg, sqlite)) = both(test) else {
        return;
    };
    let on_sqlite = alerts_results(Db::from(&sqlite));
    let on_postgres = alerts_results(Db::from(&pg));
    assert_eq!(on_sqlite, on_postgres);
    let receipts: Vec<&str> = on_sqlite[..9]
        .iter()
        .map(|s| s.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        receipts,
        ["New", "Repeat", "Resolved", "Stale", "Stale", "New", "New", "Repeat", "New"]
    );
    let disk: serde_json::Value =
        serde_json::from_str(on_sqlite[9].strip_prefix("disk ").unwrap()).unwrap();
    assert_eq!(disk["starts_at"], 2_000);
    assert_eq!(disk["receipts"], 6);
    assert!(disk["ends_at"].is_null(), "{disk}");
    let cpu: serde_json::Value =
        serde_json::from_str(on_sqlite[10].strip_prefix("cpu ").unwrap()).unwrap();
    assert!(cpu["starts_at"].is_null(), "{cpu}");
    assert_eq!(on_sqlite[11], "none None");
    let decisions = &on_sqlite[12];
    assert!(
        decisions.contains(r#""decisions": Array [Object {"at": Number(2100), "event_id": Null, "outcome": String("ignored"), "reason": String("no rule"), "rule": Null}"#),
        "{decisions}"
    );
}

fn events_results(db: Db) -> Vec<String> {
    use heal::alert::{Alert, Status};
    use heal::store::{
        add_timeline, collapse_into, create_event, event_detail, events_of_alert, join_alert,
        record_alert, NewEvent,
    };
    let mut seen = Vec::new();
    let alert = Alert {
        fingerprint: "disk".into(),
        name: "Disk".into(),
        status: Status::Firing,
        labels: Default::default(),
        annotations: Default::default(),
        starts_at: Some(100),
        ends_at: None,
        source: "alertmanager".into(),
    };
    record_alert(db, &alert, 1_000).unwrap();
    let new = |deadline| NewEvent {
        rule: "r",
        runbook: "b",
        key: "k",
        fingerprint: "disk",
        state: "queued",
        mode: "live",
        started_at: None,
        deadline,
    };
    let first = create_event(db, &new(Some(5_000)), 1_000).unwrap();
    let second = create_event(db, &new(None), 1_100).unwrap();
    seen.push(format!("events {first} {second}"));
    // Joining twice is one row; collapsing counts hits.
    join_alert(db, first, "cpu").unwrap();
    join_alert(db, first, "cpu").unwrap();
    collapse_into(db, first, "disk", 1_200).unwrap();
    collapse_into(db, first, "mem", 1_300).unwrap();
    add_timeline(db, first, "decision", "ran: matched", 1_000).unwrap();
    add_timeline(db, first, "state", "queued → running", 1_300).unwrap();
    // The second ended at 1 500: seen since 1 500, not since 1 501.
    db.execute(
        "UPDATE event SET ended_at = ?2, state = 'resolved' WHERE id = ?1",
        args![second, 1_500],
    )
    .unwrap();
    for (fp, since) in [
        ("disk", 0),
        ("disk", 1_500),
        ("disk", 1_501),
        ("cpu", 0),
        ("mem", 0),
        ("none", 0),
    ] {
        seen.push(format!(
            "of {fp} since {since}: {:?}",
            events_of_alert(db, fp, since).unwrap()
        ));
    }
    // Ops with steps (a NULL exit code, a signal, bytes not UTF-8) and a live log.
    let done = an_op(db, first, "web", "failed", None);
    let live = an_op(db, first, "db", "running", Some("i1"));
    for (idx, name, exit_code, signal, output) in [
        (0, "check", Some(0), None, &b"ok\n"[..]),
        (1, "fix", None, Some(9), &b"\xff\xfe killed"[..]),
    ] {
        db.execute(
            "INSERT INTO op_step (op_id, idx, name, exit_code, signal, timed_out, duration_ms, output, output_bytes, truncated, skipped)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 250, ?7, 4096, ?8, ?9)",
            args![done, idx, name, exit_code, signal, idx == 1, output, idx == 1, false],
        )
        .unwrap();
    }
    for (seq, data) in [(2, "world\n"), (1, "hello ")] {
        db.execute(
            "INSERT INTO op_log (op_id, seq, step, data, skipped) VALUES (?1, ?2, 0, ?3, 0)",
            args![live, seq, data.as_bytes()],
        )
        .unwrap();
    }
    let detail = event_detail(db, first).unwrap().unwrap();
    seen.push(serde_json::to_string(&detail).unwrap());
    seen.push(serde_json::to_string(&event_detail(db, second).unwrap()).unwrap());
    seen.push(format!(
        "missing {:?}",
        event_detail(db, 99).unwrap().is_none()
    ));
    seen
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn events_their_alerts_and_timelines_are_stored_alike_on_sqlite_and_postgres() {
    if crate::support::first_pass_only(
        "postgres_store::events_their_alerts_and_timelines_are_stored_alike_on_sqlite_and_postgres",
    ) {
        return;
    }
    let test =
        "postgres_store::events_their_alerts_and_timelines_are_stored_alike_on_sqlite_and_postgres";
    let Some((_pg, pg, sqlite)) = both(test) else {
        return;
    };
    let on_sqlite = events_results(Db::from(&sqlite));
    let on_postgres = events_results(Db::from(&pg));
    assert_eq!(on_sqlite, on_postgres);
    assert_eq!(on_sqlite[0], "events 1 2");
    assert_eq!(
        on_sqlite[1..7],
        [
            r#"of disk since 0: [(2, "resolved", false), (1, "queued", true)]"#,
            r#"of disk since 1500: [(2, "resolved", false), (1, "queued", true)]"#,
            r#"of disk since 1501: [(1, "queued", true)]"#,
            r#"of cpu since 0: [(1, "queued", true)]"#,
            r#"of mem since 0: [(1, "queued", true)]"#,
            "of none since 0: []",
        ]
    );
    let detail: serde_json::Value = serde_json::from_str(&on_sqlite[7]).unwrap();
    assert_eq!(detail["hits"], 3, "{detail}");
    assert_eq!(detail["deadline"], 5_000);
    assert_eq!(detail["alert"]["fingerprint"], "disk");
    assert_eq!(detail["timeline"].as_array().unwrap().len(), 2);
    let steps = &detail["ops"][0]["steps"];
    assert_eq!(steps[0]["exit_code"], 0);
    assert!(
        steps[1]["exit_code"].is_null() && steps[1]["signal"] == 9,
        "{steps}"
    );
    assert_eq!(steps[1]["timed_out"], true);
    assert_eq!(steps[1]["output"], "\u{fffd}\u{fffd} killed");
    assert_eq!(detail["ops"][1]["live_output"], "hello world\n");
    let ended: serde_json::Value = serde_json::from_str(&on_sqlite[8]).unwrap();
    assert!(
        ended["deadline"].is_null() && ended["ended_at"] == 1_500,
        "{ended}"
    );
    assert_eq!(on_sqlite[9], "missing true");
}

fn ops_results(db: Db) -> Vec<String> {
    use heal::event::OpState;
    use heal::store::{
        append_log, claim_ops, expire_ops, op_ref, queue_op, set_op_state, start_op,
    };
    let mut seen = Vec::new();
    let event = an_event(db, "running");
    let spec = serde_json::json!({"runbook": "b", "steps": ["x"]});
    let a = queue_op(db, event, "web", "run", OpState::Waiting, &spec, 1_000).unwrap();
    let b = queue_op(db, event, "web", "verify", OpState::Queued, &spec, 1_100).unwrap();
    seen.push(format!("queued {a} {b}"));
    let state = |id| {
        op_ref(db, id)
            .unwrap()
            .map(|o| (o.event_id, o.agent, o.state))
    };
    seen.push(format!(
        "refs {:?} {:?} {:?}",
        state(a),
        state(b),
        state(99)
    ));
    // A transition the states do not allow moves nothing; an allowed one
    // moves once, the second time it finds the op moved already.
    let moves = [
        (a, OpState::Waiting, OpState::Running, None),
        (a, OpState::Waiting, OpState::Queued, None),
        (a, OpState::Waiting, OpState::Queued, None),
        (a, OpState::Queued, OpState::Dispatched, None),
        (b, OpState::Queued, OpState::Dispatched, Some("first")),
        (99, OpState::Queued, OpState::Dispatched, None),
    ];
    for (id, from, to, error) in moves {
        let moved = set_op_state(db, id, from, to, error, 1_200).unwrap();
        seen.push(format!("{id} {from:?} → {to:?}: {moved}"));
    }
    seen.push(format!(
        "start a {}",
        start_op(db, a, 9_000, 1_300).unwrap()
    ));
    seen.push(format!(
        "start a again {}",
        start_op(db, a, 9_500, 1_400).unwrap()
    ));
    // A final state keeps the first error when none is given, and the end time.
    let failed = set_op_state(db, b, OpState::Dispatched, OpState::Failed, None, 1_500).unwrap();
    seen.push(format!("b failed {failed}"));
    let row = |id| {
        db.query_row(
            "SELECT state, error, dispatched_at, started_at, deadline, finished_at, instance FROM op WHERE id = ?1",
            args![id],
            |r| {
                Ok(format!(
                    "{} {:?} {:?} {:?} {:?} {:?} {:?}",
                    r.get::<String>(0)?,
                    r.get::<Option<String>>(1)?,
                    r.get::<Option<i64>>(2)?,
                    r.get::<Option<i64>>(3)?,
                    r.get::<Option<i64>>(4)?,
                    r.get::<Option<i64>>(5)?,
                    r.get::<Option<String>>(6)?,
                ))
            },
        )
        .unwrap()
        .unwrap()
    };
    seen.push(format!("a {}", row(a)));
    seen.push(format!("b {}", row(b)));
    // The streamed log: a repeated chunk is stored once, the oldest go past the cap.
    for (seq, data) in [
        (1, "aaaa"),
        (2, "bbbb"),
        (2, "BBBB"),
        (3, "cc"),
        (4, "dddd"),
    ] {
        append_log(db, a, seq, 0, data.as_bytes(), 0, 10).unwrap();
    }
    let log = db
        .query(
            "SELECT seq, data FROM op_log WHERE op_id = ?1 ORDER BY seq",
            args![a],
            |r| {
                Ok(format!(
                    "{}={}",
                    r.get::<i64>(0)?,
                    String::from_utf8(r.get(1)?).unwrap()
                ))
            },
        )
        .unwrap();
    seen.push(format!("log {log:?}"));
    // Nothing to claim or expire yet.
    seen.push(format!(
        "claim none {:?}",
        claim_ops(db, "web", "i1", 5, 9_000, 1_600).unwrap().len()
    ));
    seen.push(format!(
        "claim zero {:?}",
        claim_ops(db, "db", "i1", 0, 9_000, 1_600).unwrap().len()
    ));
    seen.push(format!(
        "expired {}",
        expire_ops(db, 60_000, 2_000).unwrap()
    ));
    seen
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn ops_are_queued_moved_and_logged_alike_on_sqlite_and_postgres() {
    if crate::support::first_pass_only(
        "postgres_store::ops_are_queued_moved_and_logged_alike_on_sqlite_and_postgres",
    ) {
        return;
    }
    use heal::event::OpState;
    let test = "postgres_store::ops_are_queued_moved_and_logged_alike_on_sqlite_and_postgres";
    let Some((_pg, pg, sqlite)) = both(test) else {
        return;
    };
    let on_sqlite = ops_results(Db::from(&sqlite));
    let on_postgres = ops_results(Db::from(&pg));
    assert_eq!(on_sqlite, on_postgres);
    assert_eq!(
        on_sqlite,
        [
            "queued 1 2",
            r#"refs Some((1, "web", Waiting)) Some((1, "web", Queued)) None"#,
            "1 Waiting → Running: false",
            "1 Waiting → Queued: true",
            "1 Waiting → Queued: false",
            "1 Queued → Dispatched: true",
            "2 Queued → Dispatched: true",
            "99 Queued → Dispatched: false",
            "start a true",
            "start a again false",
            "b failed true",
            "a running None None Some(1300) Some(9000) None None",
            r#"b failed Some("first") None None None Some(1500) None"#,
            r#"log ["2=bbbb", "3=cc", "4=dddd"]"#,
            "claim none 0",
            "claim zero 0",
            "expired 0",
        ]
    );
    // What advances an event: claiming and dispatching, a result, losing
    // an op, expiring those no agent took; the event moves alike.
    let advancing = |db: Db| -> Vec<String> {
        let ev = an_event(db, "queued");
        let plan = serde_json::json!({"targets": ["db"], "spec": {}, "max_parallel": 1});
        heal::store::set_plan(db, ev, &plan).unwrap();
        let one = |state: OpState| {
            heal::store::queue_op(db, ev, "db", "run", state, &serde_json::json!({}), 1).unwrap()
        };
        let event = |db: Db| {
            let e = heal::store::event_by_id(db, ev).unwrap().unwrap();
            format!("event {} {:?} {:?}", e.state, e.ended_at, e.reason)
        };
        let mut seen = Vec::new();
        let claimed = one(OpState::Queued);
        let ids: Vec<i64> = heal::store::claim_ops(db, "db", "i1", 5, 9_000, 2)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        seen.push(format!("claimed {:?} {}", ids, ids.contains(&claimed)));
        seen.push(format!(
            "claimed again {}",
            heal::store::claim_ops(db, "db", "i1", 5, 9_000, 3)
                .unwrap()
                .len()
        ));
        let result =
            heal::store::record_result(db, claimed, ev, OpState::Succeeded, None, &[], 4).unwrap();
        seen.push(format!("result {result:?}"));
        seen.push(format!(
            "result again {:?}",
            heal::store::record_result(db, claimed, ev, OpState::Succeeded, None, &[], 5).unwrap()
        ));
        seen.push(event(db));
        let lost = one(OpState::Queued);
        seen.push(format!(
            "lost {}",
            heal::store::lose_op(db, lost, "gone", 6).unwrap()
        ));
        seen.push(format!(
            "lost again {}",
            heal::store::lose_op(db, lost, "gone", 7).unwrap()
        ));
        seen.push(event(db));
        let _stale = one(OpState::Queued);
        seen.push(format!(
            "expired {}",
            heal::store::expire_ops(db, 0, 10_000).unwrap()
        ));
        seen.push(event(db));
        seen
    };
    let on_sqlite = advancing(Db::from(&sqlite));
    let on_postgres = advancing(Db::from(&pg));
    assert_eq!(on_sqlite, on_postgres);
    assert!(on_sqlite[0].ends_with("true"), "{on_sqlite:?}");
    assert_eq!(
        on_sqlite[4],
        r#"event succeeded Some(4) Some("every step exited 0")"#
    );
    assert_eq!(on_sqlite[1], "claimed again 0");
    assert_eq!(on_sqlite[5], "lost true");
    assert_eq!(on_sqlite[6], "lost again false");
}

/// The event lifecycle and the reads around it, run on one database.
fn lifecycle_results(db: Db) -> Vec<String> {
    use heal::event::OpState;
    use heal::store::browse::{event_decisions, ops_in_flight};
    use heal::store::*;
    let mut seen = Vec::new();
    let json = |v: serde_json::Value| {
        // Times the database chose are not compared.
        v.to_string()
    };
    let event = an_event(db, "queued");
    db.execute(
        "INSERT INTO decision (at, fingerprint, rule, outcome, reason, event_id) VALUES
            (1, 'f', 'r', 'run', 'first', ?1), (2, 'f', 'r', 'collapsed', 'again', ?1), (3, 'g', 'q', 'discard', 'no', NULL)",
        args![event],
    )
    .unwrap();
    join_alert(db, event, "f").unwrap();
    let plan = serde_json::json!({"targets": ["web-1", "web-2"], "spec": {"runbook": "b"}, "max_parallel": 1,
        "verify": {"kind": "run", "spec": {"runbook": "b", "verify": true}}});
    set_plan(db, event, &plan).unwrap();
    let queued = start_event(db, event, 10).unwrap();
    seen.push(format!(
        "queued {:?}",
        queued.iter().map(|q| (q.id, &q.agent)).collect::<Vec<_>>()
    ));
    seen.push(format!("targets {:?}", event_targets(db, event).unwrap()));
    seen.push(format!("last {:?}", last_timeline_kind(db, event).unwrap()));
    let row = event_by_id(db, event).unwrap().unwrap();
    seen.push(format!(
        "{} {:?} {:?}",
        row.state, row.started_at, row.deadline
    ));
    let open = open_events(db, "queued", None).unwrap();
    seen.push(format!(
        "open {:?}",
        open.iter().map(|e| e.id).collect::<Vec<_>>()
    ));
    seen.push(format!(
        "open past deadline {}",
        open_events(db, "queued", Some(5)).unwrap().len()
    ));
    // The first target runs and succeeds: the second is released.
    let first = queued[0].id;
    claim_ops(db, "web-1", "i1", 5, 9_000, 11).unwrap();
    seen.push(format!(
        "in flight {:?}",
        ops_in_flight(db, Some(event))
            .unwrap()
            .iter()
            .map(|o| (o.id, &o.state))
            .collect::<Vec<_>>()
    ));
    seen.push(format!(
        "woke {:?}",
        record_result(db, first, event, OpState::Succeeded, None, &[], 12).unwrap()
    ));
    let second = op_ref(db, first + 1).unwrap().map(|o| o.state);
    seen.push(format!("second {second:?}"));
    claim_ops(db, "web-2", "i1", 5, 9_000, 13).unwrap();
    seen.push(format!(
        "woke {:?}",
        record_result(db, first + 1, event, OpState::Succeeded, None, &[], 14).unwrap()
    ));
    seen.push(format!(
        "state {}",
        event_by_id(db, event).unwrap().unwrap().state
    ));
    seen.push(format!(
        "alerts firing {}",
        alerts_firing(db, event).unwrap()
    ));
    set_decided_by(db, event, "alice").unwrap();
    seen.push(format!(
        "ended {}",
        end_event(db, event, "cancelled", "by hand", 20).unwrap()
    ));
    seen.push(format!(
        "ended again {}",
        end_event(db, event, "cancelled", "by hand", 21).unwrap()
    ));
    let row = event_by_id(db, event).unwrap().unwrap();
    seen.push(format!(
        "{} {:?} {:?} {:?}",
        row.state, row.ended_at, row.decided_by, row.reason
    ));
    // Reads for deciding and browsing.
    seen.push(json(key_context(db, "r", "k", "live", 0, 30).unwrap()));
    seen.push(format!("{:?}", decision_counts(db, 0, None).unwrap()));
    seen.push(format!("{:?}", decision_counts(db, 2, Some("r")).unwrap()));
    seen.push(json(serde_json::json!(list_decisions(
        db,
        0,
        Some("r"),
        None,
        10
    )
    .unwrap())));
    seen.push(json(serde_json::json!(list_decisions(
        db,
        0,
        None,
        Some("discard"),
        10
    )
    .unwrap())));
    seen.push(json(serde_json::json!(
        event_decisions(db, event, 10).unwrap()
    )));
    for f in [
        EventFilter::default(),
        EventFilter {
            states: vec!["cancelled".into(), "queued".into()],
            ..Default::default()
        },
        EventFilter {
            rule: Some("r".into()),
            key: Some("k".into()),
            ..Default::default()
        },
        EventFilter {
            open: true,
            ..Default::default()
        },
        EventFilter {
            agent: Some("web-2".into()),
            since: Some(1),
            before: Some(event + 1),
            ..Default::default()
        },
    ] {
        let ids: Vec<i64> = list_events(db, &f, 10)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        seen.push(format!("{f:?}: {ids:?}"));
    }
    // The breaker and pauses.
    seen.push(json(breaker(db, 30).unwrap()));
    seen.push(format!(
        "tripped {}",
        set_breaker(db, "open", "too many", "heal", 31).unwrap()
    ));
    seen.push(format!(
        "tripped again {}",
        set_breaker(db, "open", "too many", "heal", 32).unwrap()
    ));
    seen.push(json(breaker(db, 33).unwrap()));
    let pause = add_pause(
        db,
        &NewPause {
            runbook: Some("b".into()),
            target: None,
            matches: None,
            reason: "deploy".into(),
            by: "bob".into(),
            until: 1_000,
        },
        40,
    )
    .unwrap();
    seen.push(json(pause.clone()));
    seen.push(format!("deferred {}", any_deferred(db).unwrap()));
    seen.push(json(serde_json::json!(pauses(db, true, 50).unwrap())));
    seen.push(format!(
        "{:?}",
        resume_pause(db, pause["id"].as_i64().unwrap(), "bob", 60).unwrap()
    ));
    seen.push(format!(
        "{:?}",
        resume_pause(db, pause["id"].as_i64().unwrap(), "bob", 61).unwrap()
    ));
    seen.push(format!("{:?}", resume_pause(db, 999, "bob", 61).unwrap()));
    seen.push(format!("{}", pauses(db, true, 70).unwrap().len()));
    seen.push(format!("{}", pauses(db, false, 70).unwrap().len()));
    seen
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_event_lifecycle_runs_alike_on_sqlite_and_postgres() {
    if crate::support::first_pass_only(
        "postgres_store::the_event_lifecycle_runs_alike_on_sqlite_and_postgres",
    ) {
        return;
    }
    let test = "postgres_store::the_event_lifecycle_runs_alike_on_sqlite_and_postgres";
    let Some((_pg, pg, sqlite)) = both(test) else {
        return;
    };
    let on_sqlite = lifecycle_results(Db::from(&sqlite));
    let on_postgres = lifecycle_results(Db::from(&pg));
    for (i, (a, b)) in on_sqlite.iter().zip(&on_postgres).enumerate() {
        assert_eq!(a, b, "line {i}");
    }
    assert_eq!(on_sqlite.len(), on_postgres.len());
    assert_eq!(
        on_sqlite[7], r#"woke Some(["web-2"])"#,
        "the second target's turn"
    );
    assert_eq!(on_sqlite[10], "state verifying");
    assert_eq!(
        on_sqlite[14],
        r#"cancelled Some(20) Some("alice") Some("by hand")"#
    );
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn dashboard_sessions_are_stored_alike_on_postgres() {
    if crate::support::first_pass_only(
        "postgres_store::dashboard_sessions_are_stored_alike_on_postgres",
    ) {
        return;
    }
    use heal::store::session::{create_session, end_session, session, SessionRow};
    let test = "postgres_store::dashboard_sessions_are_stored_alike_on_postgres";
    let Some((pg, session_db, sqlite)) = both(test) else {
        return;
    };
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
    if crate::support::first_pass_only(
        "postgres_store::config_versions_and_the_audit_log_are_stored_alike_on_postgres",
    ) {
        return;
    }
    use heal::store::{apply_config, audit_entries, current_config};
    let test = "postgres_store::config_versions_and_the_audit_log_are_stored_alike_on_postgres";
    let Some((_pg, session, sqlite)) = both(test) else {
        return;
    };
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
    if crate::support::first_pass_only(
        "postgres_store::the_figures_of_metrics_are_counted_alike_on_postgres",
    ) {
        return;
    }
    use heal::store::figures;
    let test = "postgres_store::the_figures_of_metrics_are_counted_alike_on_postgres";
    let Some((_pg, session, sqlite)) = both(test) else {
        return;
    };
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
    if crate::support::first_pass_only("postgres_store::the_outbox_is_stored_alike_on_postgres") {
        return;
    }
    use heal::store::*;
    let test = "postgres_store::the_outbox_is_stored_alike_on_postgres";
    let Some((_pg, session, sqlite)) = both(test) else {
        return;
    };
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
    if crate::support::first_pass_only(
        "postgres_store::a_lease_has_one_holder_and_a_fenced_transaction_holds_off_the_next",
    ) {
        return;
    }
    use heal::store::leader::{fence, lead, resign};
    use std::time::Instant;
    let test = "postgres_store::a_lease_has_one_holder_and_a_fenced_transaction_holds_off_the_next";
    let Some((pg, b_session, sqlite)) = both(test) else {
        return;
    };
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
        std::thread::sleep(std::time::Duration::from_millis(800));
        let asked = Instant::now();
        let taken = lead(Db::from(&a_session), "scheduler", "a", 60_000).unwrap();
        (taken, asked, Instant::now())
    });
    std::thread::sleep(std::time::Duration::from_millis(2_000));
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

fn watch_results(db: Db) -> Vec<String> {
    use heal::probe::{Counts, Level, Outcome, State};
    use heal::store::*;
    let mut seen = Vec::new();
    let status = |e: heal::error::Error| format!("HTTP {}", e.http_status());
    // Heartbeats from the config file and from the API.
    let defs = |names: &[&str]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), format!(r#"{{"name":"{n}"}}"#)))
            .collect()
    };
    seen.push(format!(
        "{:?}",
        sync_heartbeats(db, &defs(&["a", "b"]), 10).unwrap()
    ));
    seen.push(status(put_heartbeat(db, "a", "{}", 20).unwrap_err()));
    seen.push(format!(
        "new c {}",
        put_heartbeat(db, "c", "{}", 20).unwrap()
    ));
    seen.push(format!(
        "new d {}",
        put_heartbeat(db, "d", "{}", 21).unwrap()
    ));
    seen.push(format!(
        "new c again {}",
        put_heartbeat(db, "c", r#"{"v":2}"#, 22).unwrap()
    ));
    seen.push(status(delete_heartbeat(db, "a").unwrap_err()));
    seen.push(status(delete_heartbeat(db, "zz").unwrap_err()));
    // Pings move the row; an unknown name is a 404.
    for (name, kind, code, at) in [
        ("a", PingKind::Start, None, 30),
        ("a", PingKind::Fail, Some(3), 31),
        ("a", PingKind::Success, Some(0), 32),
        ("c", PingKind::Success, None, 33),
        ("d", PingKind::Start, None, 34),
    ] {
        let ping = NewPing {
            heartbeat: name,
            kind,
            exit_code: code,
            body: b"log \xff",
            remote: "127.0.0.1",
        };
        record_ping(db, &ping, at).unwrap();
    }
    let unknown = NewPing {
        heartbeat: "zz",
        kind: PingKind::Start,
        exit_code: None,
        body: b"",
        remote: "",
    };
    seen.push(status(record_ping(db, &unknown, 35).unwrap_err()));
    seen.push(format!("{:?}", recent_pings(db, "a", 2).unwrap()));
    seen.push(format!("{:?}", recent_pings(db, "zz", 2).unwrap()));
    set_heartbeat_state(db, "a", "up", 40).unwrap();
    set_heartbeat_state(db, "a", "up", 41).unwrap();
    set_heartbeat_state(db, "b", "late", 42).unwrap();
    // An API heartbeat the file now defines is the file's; "b" left it; "d" is deleted.
    seen.push(format!(
        "{:?}",
        sync_heartbeats(db, &defs(&["a", "c"]), 50).unwrap()
    ));
    delete_heartbeat(db, "d").unwrap();
    seen.push(format!("{:?}", recent_pings(db, "d", 10).unwrap()));
    // Mutes: one with an end, which the sweep ends; one muted again meanwhile.
    let mute = |until| Mute {
        reason: "deploy by alice".into(),
        until,
    };
    seen.push(status(
        mute_heartbeat(db, "zz", Some(&mute(None)), 60).unwrap_err(),
    ));
    mute_heartbeat(db, "a", Some(&mute(Some(100))), 60).unwrap();
    mute_heartbeat(db, "c", Some(&mute(Some(100))), 60).unwrap();
    mute_probe(db, "web", Some(&mute(Some(200))), 60).unwrap();
    mute_probe(db, "gone", Some(&mute(None)), 60).unwrap();
    mute_probe(db, "kept", Some(&mute(None)), 60).unwrap();
    seen.push(format!("{:?}", ended_mutes(db, 99).unwrap()));
    seen.push(format!("{:?}", ended_mutes(db, 200).unwrap()));
    mute_heartbeat(db, "c", Some(&mute(Some(300))), 150).unwrap();
    for (what, name, _) in ended_mutes(db, 200).unwrap() {
        seen.push(format!(
            "end {name} {}",
            end_mute(db, what, &name, 200).unwrap()
        ));
    }
    seen.push(format!(
        "end c early {}",
        end_mute(db, Muted::Heartbeat, "c", 200).unwrap()
    ));
    mute_heartbeat(db, "c", None, 210).unwrap();
    mute_heartbeat(db, "c", None, 220).unwrap();
    seen.push(format!("{:?}", ended_mutes(db, i64::MAX).unwrap()));
    seen.push(format!("{:?}", probe_mute(db, "web").unwrap()));
    seen.push(format!("{:?}", probe_mute(db, "gone").unwrap()));
    for h in heartbeats(db).unwrap() {
        seen.push(format!("{h:?}"));
    }
    seen.push(format!("{:?}", heartbeat(db, "b").unwrap()));
    // API probes: put, replace, delete; the file's own take their place.
    seen.push(format!(
        "put {}",
        put_api_probe(db, "api", r#"{"v":1}"#, 300).unwrap()
    ));
    seen.push(format!(
        "put {}",
        put_api_probe(db, "api", r#"{"v":2}"#, 310).unwrap()
    ));
    seen.push(format!(
        "put {}",
        put_api_probe(db, "kept", "{}", 320).unwrap()
    ));
    seen.push(format!(
        "put {}",
        put_api_probe(db, "moved", "{}", 330).unwrap()
    ));
    seen.push(format!(
        "{:?}",
        api_probes(db)
            .unwrap()
            .iter()
            .map(|p| (&p.name, &p.def, p.registered_at, p.updated_at))
            .collect::<Vec<_>>()
    ));
    seen.push(format!(
        "{:?}",
        api_probe(db, "api").unwrap().map(|p| p.def)
    ));
    seen.push(format!(
        "{:?}",
        drop_api_probes_in_file(db, &["moved", "web"]).unwrap()
    ));
    seen.push(format!(
        "{:?}",
        forget_probe_mutes(db, &["web", "moved"]).unwrap()
    ));
    let mut mutes: Vec<_> = probe_mutes(db)
        .unwrap()
        .into_iter()
        .map(|(name, m)| format!("{name} {m:?}"))
        .collect();
    mutes.sort();
    seen.push(format!("{mutes:?}"));
    // Probe results and state, with a severity while down.
    let outcome = |ok: bool, warning: bool, value: Option<f64>| Outcome {
        ok,
        warning,
        detail: format!("ok {ok} warning {warning}"),
        latency_ms: 7,
        value,
    };
    let counts = |state, fails_in_row, oks_in_row| Counts {
        state,
        fails_in_row,
        oks_in_row,
    };
    for (name, out, count, severity, at) in [
        (
            "web",
            outcome(true, false, Some(1.5)),
            counts(State::Up, 0, 1),
            None,
            400,
        ),
        (
            "web",
            outcome(false, true, Some(9.25)),
            counts(State::Up, 1, 0),
            None,
            410,
        ),
        (
            "web",
            outcome(false, true, None),
            counts(State::Down, 2, 0),
            Some(Level::Warning),
            420,
        ),
        (
            "web",
            outcome(false, false, None),
            counts(State::Down, 3, 0),
            Some(Level::Critical),
            430,
        ),
        (
            "api",
            outcome(true, false, None),
            counts(State::Unknown, 0, 1),
            None,
            440,
        ),
    ] {
        record_probe_result(db, name, &out, count, severity, at).unwrap();
    }
    for p in probes(db).unwrap() {
        seen.push(format!("{p:?} {:?}", p.counts()));
    }
    seen.push(format!("{:?}", probe(db, "none").unwrap()));
    seen.push(format!("{:?}", recent_probe_results(db, "web", 3).unwrap()));
    mute_probe(db, "api", Some(&mute(None)), 450).unwrap();
    seen.push(format!("delete {}", delete_api_probe(db, "api").unwrap()));
    seen.push(format!("delete {}", delete_api_probe(db, "api").unwrap()));
    seen.push(format!(
        "{:?} {:?} {:?}",
        probe(db, "api").unwrap(),
        recent_probe_results(db, "api", 10).unwrap(),
        probe_mute(db, "api").unwrap()
    ));
    // The context document holds heartbeats and probes.
    let context = context(db, 1_000, 500).unwrap();
    seen.push(context["heartbeats"].to_string());
    seen.push(context["probes"].to_string());
    // Schedules fire each time once.
    seen.push(format!("{:?}", schedule_last_fire(db, "nightly").unwrap()));
    for at in [1_000, 1_000, 900, 2_000] {
        seen.push(format!(
            "claim {at} {}",
            claim_schedule_fire(db, "nightly", at).unwrap()
        ));
    }
    seen.push(format!("{:?}", schedule_last_fire(db, "nightly").unwrap()));
    // Internal alerts: raised once, re-sent, resolved once.
    let raised = |sent_at| InternalRow {
        fingerprint: "hb-a".into(),
        kind: "heartbeat".into(),
        subject: "a".into(),
        alert: serde_json::json!({"name": "HeartbeatDown", "labels": {"heartbeat": "a"}}),
        raised_at: 600,
        sent_at,
    };
    put_internal_alert(db, &raised(600)).unwrap();
    put_internal_alert(db, &raised(700)).unwrap();
    seen.push(format!("{:?}", internal_alerts(db, "heartbeat").unwrap()));
    seen.push(format!("{:?}", held_alerts(db, "heartbeat").unwrap()));
    seen.push(format!("{:?}", held_alerts(db, "probe").unwrap()));
    delete_internal_alert(db, "hb-a").unwrap();
    delete_internal_alert(db, "hb-a").unwrap();
    seen.push(format!("{:?}", internal_alerts(db, "heartbeat").unwrap()));
    seen.push(retention(db).join("; "));
    seen
}

/// Retention on old and new rows of every kind it deletes: what it
/// deleted each time, then what is left.
fn retention(db: Db) -> Vec<String> {
    use heal::store::*;
    let mut seen = Vec::new();
    for at in 0..25 {
        let ping = NewPing {
            heartbeat: "a",
            kind: PingKind::Success,
            exit_code: None,
            body: b"",
            remote: "",
        };
        record_ping(db, &ping, 1_000 + at * 10).unwrap();
    }
    // An old finished event with everything it holds, and an open one.
    let old = an_event(db, "succeeded");
    let open = an_event(db, "running");
    db.execute("UPDATE event SET ended_at = 5 WHERE id = ?1", args![old])
        .unwrap();
    let op = an_op(db, old, "web", "succeeded", None);
    an_op(db, open, "web", "running", None);
    for sql in [
        "INSERT INTO op_step (op_id, idx, name, timed_out, duration_ms, output, output_bytes, truncated) VALUES (?1, 0, 's', 0, 1, ?2, 1, 0)",
        "INSERT INTO op_log (op_id, seq, step, data, skipped) VALUES (?1, 0, 0, ?2, 0)",
    ] {
        db.execute(sql, args![op, &b"\x00"[..]]).unwrap();
    }
    for event in [old, open] {
        db.execute(
            "INSERT INTO timeline (event_id, at, kind, message) VALUES (?1, 1, 'k', 'm')",
            args![event],
        )
        .unwrap();
        db.execute(
            "INSERT INTO event_alert (event_id, fingerprint) VALUES (?1, 'f')",
            args![event],
        )
        .unwrap();
        db.execute(
            "INSERT INTO decision (at, fingerprint, rule, outcome, reason, event_id) VALUES (1, 'f', 'r', 'run', 'x', ?1)",
            args![event],
        )
        .unwrap();
    }
    db.execute(
        "INSERT INTO decision (at, fingerprint, rule, outcome, reason, event_id) VALUES (1, 'g', NULL, 'discard', 'x', NULL), (2000, 'g', NULL, 'discard', 'x', NULL)",
        args![],
    )
    .unwrap();
    // Old notifications: delivered, still pending, not routed; and a new one.
    for (routed_at, at, delivery) in [
        (Some(1), 1, Some("sent")),
        (Some(1), 2, None),
        (Some(1), 3, Some("pending")),
        (None, 4, None),
        (Some(2_000), 2_000, Some("sent")),
    ] {
        let id = db
            .insert(
                "INSERT INTO notification (kind, subject, at, routed_at) VALUES ('probe.down', 'web', ?1, ?2)",
                args![at, routed_at],
            )
            .unwrap();
        if let Some(state) = delivery {
            db.execute(
                "INSERT INTO delivery (notification_id, channel, state, created_at, next_at) VALUES (?1, 'chat', ?2, 1, 1)",
                args![id, state],
            )
            .unwrap();
        }
    }
    // Ids past 32 bits go like the others.
    db.batch(
        "INSERT INTO event (id, rule, runbook, key, fingerprint, state, mode, created_at, updated_at, ended_at)
           VALUES (3000000000, 'r', 'b', 'k3', 'f', 'failed', 'live', 1, 1, 6);
         INSERT INTO notification (id, kind, subject, at, routed_at) VALUES (3000000001, 'probe.down', 'web', 5, 5);",
    )
    .unwrap();
    // A purge undone with its transaction (its temporary tables with it)
    // leaves the next one whole.
    db.batch("BEGIN").unwrap();
    seen.push(format!(
        "undone {} {}",
        purge(db, Purge::Events, 100, 100).unwrap(),
        purge(db, Purge::Notifications, 100, 100).unwrap()
    ));
    db.batch("ROLLBACK").unwrap();
    let mut rounds = Vec::new();
    loop {
        let n = purge(db, Purge::Pings, 1_100, 4).unwrap();
        rounds.push(n);
        if n == 0 || rounds.len() > 10 {
            break;
        }
    }
    seen.push(format!("pings {rounds:?}"));
    seen.push(format!(
        "probe results {}",
        purge(db, Purge::ProbeResults, 415, 100).unwrap()
    ));
    seen.push(format!(
        "decisions {}",
        purge(db, Purge::Decisions, 100, 100).unwrap()
    ));
    for _ in 0..2 {
        seen.push(format!(
            "events {}",
            purge(db, Purge::Events, 100, 100).unwrap()
        ));
    }
    for batch in [1, 100, 100] {
        seen.push(format!(
            "notifications {}",
            purge(db, Purge::Notifications, 100, batch).unwrap()
        ));
    }
    for table in [
        "ping",
        "probe_result",
        "decision",
        "event",
        "op",
        "op_step",
        "op_log",
        "timeline",
        "event_alert",
        "notification",
        "delivery",
    ] {
        let left = db
            .query_row(&format!("SELECT count(*) FROM {table}"), args![], |r| {
                r.get::<i64>(0)
            })
            .unwrap();
        seen.push(format!("{table} {}", left.unwrap_or(0)));
    }
    seen
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn heartbeats_probes_mutes_schedules_and_retention_are_stored_alike_on_postgres() {
    if crate::support::first_pass_only("postgres_store::heartbeats_probes_mutes_schedules_and_retention_are_stored_alike_on_postgres") {
        return;
    }
    let test =
        "postgres_store::heartbeats_probes_mutes_schedules_and_retention_are_stored_alike_on_postgres";
    let Some((_pg, session, sqlite)) = both(test) else {
        return;
    };
    let on_sqlite = watch_results(Db::from(&sqlite));
    let on_postgres = watch_results(Db::from(&session));
    for (i, (a, b)) in on_sqlite.iter().zip(&on_postgres).enumerate() {
        assert_eq!(a, b, "line {i}");
    }
    assert_eq!(on_sqlite.len(), on_postgres.len());
    let expect = [
        "HTTP 409",
        "new c again false",
        r#"["heartbeat \"c\" registered through the API is now defined by the config file", "heartbeat \"b\" is no longer in the config file: removed"]"#,
        r#"[(Heartbeat, "a", 100), (Heartbeat, "c", 100), (Probe, "web", 200)]"#,
        "end a true",
        "end web true",
        "end c early false",
        r#"["probe \"gone\" is no longer defined: its mute is forgotten"]"#,
        "delete true",
        "delete false",
        "None [] None",
        "claim 1000 true",
        "claim 1000 false",
        "claim 900 false",
        "claim 2000 true",
        "Some(2000)",
        "undone 2 3; pings [4, 4, 4, 2, 0]; probe results 2; decisions 2; events 2; events 0; \
         notifications 1; notifications 2; notifications 0; ping 15; probe_result 2; \
         decision 2; event 1; op 1; op_step 0; op_log 0; timeline 1; event_alert 1; \
         notification 3; delivery 2",
    ];
    for line in expect {
        assert!(
            on_sqlite.iter().any(|s| s == line),
            "{line}: {on_sqlite:#?}"
        );
    }
    let web = on_sqlite
        .iter()
        .find(|l| l.starts_with(r#"ProbeRow { name: "web""#))
        .unwrap();
    assert!(
        web.contains(
            r#"state: "down", fails_in_row: 3, oks_in_row: 0, state_since: 420, last_at: Some(430)"#
        ) && web.contains(r#"severity: Some("critical")"#),
        "the state holds since it went down, with the last severity: {web}"
    );
    let a = on_sqlite
        .iter()
        .find(|l| l.starts_with(r#"HeartbeatRow { name: "a""#))
        .unwrap();
    assert!(
        a.contains("paused: false, paused_reason: None, muted_until: None, resumed_at: Some(200)")
            && a.contains(r#"pings: 3, state: "up", state_since: 40"#),
        "{a}"
    );
    let internal = on_sqlite
        .iter()
        .position(|l| l.starts_with("[InternalRow"))
        .unwrap();
    assert!(on_sqlite[internal].contains("raised_at: 600, sent_at: 700"));
    assert_eq!(on_sqlite[internal + 3], "[]", "resolved");
}

fn checks_results(db: Db) -> Vec<String> {
    use heal::store::{
        check_pairs, check_subject, claim_checks, finish_check, forget_check, forget_checks_of,
        offer_check, probes, set_check_unknown,
    };
    let mut seen = Vec::new();
    seen.push(format!(
        "offer {}",
        offer_check(db, "disk", "db-1", 1_000, 5_000, 1_000).unwrap()
    ));
    seen.push(format!(
        "offer {}",
        offer_check(db, "disk", "db-2", 1_000, 5_000, 1_000).unwrap()
    ));
    // Still out: the next due time is refused until the lease passes.
    seen.push(format!(
        "again {}",
        offer_check(db, "disk", "db-1", 2_000, 6_000, 2_000).unwrap()
    ));
    seen.push(format!(
        "claim {:?}",
        claim_checks(db, "db-1", 2_000).unwrap()
    ));
    seen.push(format!(
        "claim again {:?}",
        claim_checks(db, "db-1", 2_000).unwrap()
    ));
    // db-2's offer expired before its poll came.
    seen.push(format!(
        "late claim {:?}",
        claim_checks(db, "db-2", 5_000).unwrap()
    ));
    seen.push(format!(
        "stale {:?}",
        finish_check(db, "disk", "db-1", 999).unwrap()
    ));
    seen.push(format!(
        "unknown {:?}",
        finish_check(db, "disk", "db-1", 1_001).unwrap()
    ));
    seen.push(format!(
        "fresh {:?}",
        finish_check(db, "disk", "db-1", 1_000).unwrap()
    ));
    seen.push(format!(
        "dup {:?}",
        finish_check(db, "disk", "db-1", 1_000).unwrap()
    ));
    seen.push(format!(
        "not handed {:?}",
        finish_check(db, "disk", "db-2", 1_000).unwrap()
    ));
    // Finished: the next due time is offered at once.
    seen.push(format!(
        "next {}",
        offer_check(db, "disk", "db-1", 2_000, 6_000, 2_500).unwrap()
    ));
    let subject = check_subject("disk", "db-1");
    seen.push(format!(
        "unknown set {}",
        set_check_unknown(db, &subject, "agent db-1 is down", 3_000).unwrap()
    ));
    seen.push(format!(
        "unknown again {}",
        set_check_unknown(db, &subject, "agent db-1 is down", 3_500).unwrap()
    ));
    for p in probes(db).unwrap() {
        seen.push(format!(
            "probe {} {} {} {:?}",
            p.name, p.state, p.state_since, p.last_detail
        ));
    }
    seen.push(format!("pairs {:?}", check_pairs(db).unwrap()));
    forget_check(db, "disk", "db-1").unwrap();
    seen.push(format!(
        "after forget {:?} {}",
        check_pairs(db).unwrap(),
        probes(db).unwrap().len()
    ));
    forget_checks_of(db, "disk").unwrap();
    seen.push(format!("after forget all {:?}", check_pairs(db).unwrap()));
    seen
}

#[test]
#[ignore = "needs postgresql (apt-get install postgresql); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_runs_of_agent_side_probes_are_handed_out_alike_on_postgres() {
    if crate::support::first_pass_only(
        "postgres_store::the_runs_of_agent_side_probes_are_handed_out_alike_on_postgres",
    ) {
        return;
    }
    let Some((_pg, pg, sqlite)) =
        both("postgres_store::the_runs_of_agent_side_probes_are_handed_out_alike_on_postgres")
    else {
        return;
    };
    let on_sqlite = checks_results(Db::from(&sqlite));
    let on_postgres = checks_results(Db::from(&pg));
    assert_eq!(on_sqlite, on_postgres);
    let expect = [
        "offer true",
        "again false",
        "claim [(\"disk\", 1000)]",
        "claim again []",
        "late claim []",
        "stale Stale",
        "unknown Unknown",
        "fresh Fresh",
        "dup Duplicate",
        "not handed Unknown",
        "next true",
        "unknown set true",
        "unknown again false",
        "probe disk@db-1 unknown 3000 Some(\"agent db-1 is down\")",
        "pairs [(\"disk\", \"db-1\"), (\"disk\", \"db-2\")]",
        "after forget [(\"disk\", \"db-2\")] 0",
        "after forget all []",
    ];
    for line in expect {
        assert!(
            on_sqlite.iter().any(|s| s == line),
            "{line}: {on_sqlite:#?}"
        );
    }
}
