//! Config reload under load: `POST /api/v1/config` and SIGHUP swap the
//! config whole; an invalid file is refused and the running one stays, and
//! so is one that would drop every token or every rule, unless it says
//! `[server] allow_empty = true` or the operator forces it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{heal_cli, http, test_dir, wait_until, Server};

fn config(rule: &str) -> String {
    format!(
        r#"
[[rule]]
name = "{rule}"
action = "discard"

[channel.chat]
slack = {{ webhook_url = "http://127.0.0.1:9/services/T0/B0/SECRETSLACK" }}

[[notify]]
channels = ["chat"]
"#
    )
}

fn decision_rule(answer: &Value) -> String {
    answer["alerts"][0]["decisions"][0]["rule"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_reload_under_load_loses_no_alert_and_the_next_alert_meets_the_new_rules() {
    let dir = test_dir("reload-load");
    let server = Arc::new(Server::start(&dir, &config("old")));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for t in 0..3 {
        let (server, stop, sent) = (server.clone(), stop.clone(), sent.clone());
        clients.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 5000 {
                let body =
                    json!({ "name": "Load", "labels": { "t": t.to_string(), "i": i.to_string() } });
                let (status, answer) = server.post("/api/v1/alerts", &body);
                assert_eq!(status, 200, "{answer}");
                sent.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.join("runbooks.toml"), config("new")).unwrap();
    let (status, body) = reload(&server);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["version"].as_i64(), body["changed"].as_bool()),
        (Some(2), Some(true)),
        "{body}"
    );
    let (_, answer) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "After", "labels": { "x": "1" } }),
    );
    assert_eq!(
        decision_rule(&answer),
        "new",
        "the next alert meets the new rules: {answer}"
    );

    // An invalid file is refused with its error; the running config stays.
    std::fs::write(
        dir.join("runbooks.toml"),
        "[[rule]]\nname = \"broken\"\naction = \"discard\"\nwhen = \"labels.(\"\n",
    )
    .unwrap();
    let (status, body) = reload(&server);
    assert_eq!(status, 422, "{body}");
    let e = body["error"].as_str().unwrap();
    assert!(e.contains("runbooks.toml:4: rule \"broken\": when:"), "{e}");
    let (_, answer) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "Still", "labels": { "x": "2" } }),
    );
    assert_eq!(decision_rule(&answer), "new", "{answer}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let acked = sent.load(Ordering::SeqCst);
    let stored = server.get_ok("/api/v1/alerts?name=Load&limit=10000")["alerts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(stored, acked, "every acknowledged alert is stored");
    assert!(acked > 50, "{acked}");

    // SIGHUP does the same; an unchanged file makes no new version.
    std::fs::write(dir.join("runbooks.toml"), config("third")).unwrap();
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    wait_until("SIGHUP to reload", Duration::from_secs(10), || {
        server.logs().contains("(sighup): version 3").then_some(())
    });
    let (status, body) = reload(&server);
    assert_eq!(status, 200);
    assert_eq!(
        (body["version"].as_i64(), body["changed"].as_bool()),
        (Some(3), Some(false))
    );

    // The running config, secrets redacted, with its version.
    let shown = server.get_ok("/api/v1/config");
    assert_eq!(shown["version"], 3);
    assert_eq!(shown["config"]["rule"][0]["name"], "third");
    assert_eq!(
        shown["config"]["channel"]["chat"]["slack"]["webhook_url"],
        "<redacted>"
    );
    assert!(!shown.to_string().contains("SECRETSLACK"));
    let audit = server.get_ok("/api/v1/audit?limit=100")["entries"].clone();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "config.applied").count(),
        3,
        "{actions:?}"
    );
    assert!(actions.contains(&"config.refused"), "{actions:?}");
    let (status, _) = http("GET", &format!("{}/api/v1/config", server.url), None, &[]);
    assert_eq!(status, 200, "no tokens: loopback is open");
}

const ADMIN: &str = "admin-secret-0123456789";

/// Rules first and tokens last, as an editor or a full disk cuts a file:
/// from the end.
const FULL: &str = r#"
[[rule]]
name = "first"
when = "labels.alertname == 'First'"
action = "discard"

[[rule]]
name = "second"
action = "discard"

[[token]]
name = "admin"
scopes = ["admin"]
secret = "admin-secret-0123456789"

[[token]]
name = "hook"
scopes = ["webhook"]
secret = "hook-secret-0123456789"
"#;

/// `heal_config_reloads_total{result="..."}` as served.
fn reloads(server: &Server, result: &str) -> u64 {
    let auth = server.token.as_ref().map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let (status, text) = http("GET", &format!("{}/metrics", server.url), None, &headers);
    assert_eq!(status, 200, "{text}");
    let series = format!("heal_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// The running config still takes the admin token and matches alerts.
fn still_running(server: &Server, why: &str) {
    let (status, answer) = server.post(
        "/api/v1/alerts",
        &json!({ "name": "First", "labels": { "x": why } }),
    );
    assert_eq!(status, 200, "{why}: {answer}");
    assert_eq!(decision_rule(&answer), "first", "{why}: {answer}");
}

#[test]
fn a_reload_that_would_drop_every_token_or_rule_is_refused() {
    let dir = test_dir("reload-empty");
    let mut server = Server::start(&dir, FULL);
    server.token = Some(ADMIN.into());
    let file = dir.join("runbooks.toml");

    // An emptied file and SIGHUP (`: > runbooks.toml; kill -HUP`).
    std::fs::write(&file, "").unwrap();
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    wait_until("SIGHUP to be refused", Duration::from_secs(10), || {
        server
            .logs()
            .contains("reload by sighup refused")
            .then_some(())
    });
    still_running(&server, "after an empty file and SIGHUP");

    let truncated_after_rules = &FULL[..FULL.find("[[token]]").unwrap()];
    let without_tokens = truncated_after_rules.to_string() + "\n[server]\nhttp_threads = 8\n";
    let without_rules = &FULL[FULL.find("[[token]]").unwrap()..];
    let cases = [
        ("an empty file", "", "no [[token]] where 2 run now"),
        (
            "a file cut before its tokens",
            truncated_after_rules,
            "no [[token]]",
        ),
        (
            "a file that lost its [[token]] blocks",
            &without_tokens,
            "no [[token]]",
        ),
        (
            "a file that lost its [[rule]] blocks",
            without_rules,
            "no [[rule]] where 2 run now",
        ),
    ];
    for (what, text, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let (status, body) = server.post_raw("/api/v1/config", b"", &[]);
        assert_eq!(status, 422, "{what}: {body}");
        assert!(
            body.contains(expected)
                && body.contains("allow_empty = true")
                && body.contains("--force"),
            "{what}: the refusal says why and how to apply it anyway: {body}"
        );
        still_running(&server, what);
    }
    // Cut mid-line: it no longer parses.
    std::fs::write(&file, &FULL[..FULL.find("secret = \"hook").unwrap() + 12]).unwrap();
    let (status, body) = server.post_raw("/api/v1/config", b"", &[]);
    assert_eq!(status, 422, "{body}");
    still_running(&server, "a file cut mid-line");
    assert_eq!(reloads(&server, "refused"), 5);
    assert_eq!(reloads(&server, "invalid"), 1);
    assert_eq!(reloads(&server, "applied"), 0);
    let audit = server.get_ok("/api/v1/audit?action=config.refused&limit=100");
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(6),
        "each refusal is audited: {audit}"
    );

    // `heal reload` is refused the same way; `--force` applies it.
    std::fs::write(&file, "").unwrap();
    let cli = |extra: &[&str]| {
        let mut args = vec!["reload", "--server", &server.url, "--token", ADMIN];
        args.extend_from_slice(extra);
        heal_cli(&args, &[], None)
    };
    let (code, _, err) = cli(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no [[token]]") && err.contains("--force"),
        "{err}"
    );
    still_running(&server, "after heal reload");
    let (code, out, err) = cli(&["--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("config version 2"), "{out}");
    assert!(
        server.logs().contains("applied though the new config"),
        "a forced reload is logged"
    );
    // Forced, it is what it says: the admin token is gone too.
    let (status, _) = server.get("/api/v1/config");
    assert_eq!(status, 401);
    // Put the file back (SIGHUP: no token works now).
    std::fs::write(&file, FULL).unwrap();
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    wait_until("SIGHUP to reload", Duration::from_secs(10), || {
        server.logs().contains("(sighup): version 3").then_some(())
    });
    still_running(&server, "after putting the file back");
    let audit = server.get_ok("/api/v1/audit?action=config.emptied&limit=10");
    assert!(
        audit["entries"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("forced: ")),
        "{audit}"
    );
    assert_eq!(reloads(&server, "applied"), 2);
    assert_eq!(reloads(&server, "refused"), 6);

    // A file that says so is applied.
    std::fs::write(&file, "[server]\nallow_empty = true\n").unwrap();
    let (status, body) = server.post_raw("/api/v1/config", b"", &[]);
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.get("/api/v1/config");
    assert_eq!(status, 401);
}

#[test]
fn a_config_with_tokens_and_rules_reloads_without_allow_empty() {
    let dir = test_dir("reload-keeps");
    let mut server = Server::start(&dir, FULL);
    server.token = Some(ADMIN.into());
    // One token and one rule fewer is an ordinary change.
    let fewer = FULL.replace("name = \"second\"", "name = \"other\"");
    let fewer = &fewer[..fewer.find("[[token]]\nname = \"hook\"").unwrap()];
    std::fs::write(dir.join("runbooks.toml"), fewer).unwrap();
    let (status, body) = server.post_raw("/api/v1/config?force=false", b"", &[]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post_raw("/api/v1/config?force=yes", b"", &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("force: must be true or false"), "{body}");
}

/// A heartbeat of the file can be pinged as soon as heal answers for the
/// config that holds it: at start, and right after a reload that adds it.
#[test]
fn a_files_heartbeat_takes_pings_as_soon_as_heal_answers_for_its_config() {
    let dir = test_dir("reload-heartbeat");
    let heartbeat = |name: &str| format!("\n[[heartbeat]]\nname = \"{name}\"\nevery = \"1h\"\n");
    let first = format!("{}{}", config("r"), heartbeat("at-start"));
    let server = Server::start(&dir, &first);
    // `Server::start` returns as soon as heal answers.
    let (status, body) = server.post_raw("/ping/at-start", b"", &[]);
    assert_eq!(status, 200, "{body}\n{}", server.logs());
    for round in 0..5 {
        let name = format!("added-{round}");
        let next = format!("{first}{}", heartbeat(&name));
        std::fs::write(dir.join("runbooks.toml"), next).unwrap();
        let (status, body) = reload(&server);
        assert_eq!(status, 200, "{body}");
        let (status, body) = server.post_raw(&format!("/ping/{name}"), b"", &[]);
        assert_eq!(status, 200, "round {round}: {body}\n{}", server.logs());
    }
    // And one the file no longer has is gone when the reload answers.
    std::fs::write(dir.join("runbooks.toml"), &first).unwrap();
    let (status, body) = reload(&server);
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.post_raw("/ping/added-4", b"", &[]);
    assert_eq!(status, 404);
}

/// `POST /api/v1/config` as `heal reload` sends it, with no body.
pub fn reload(server: &Server) -> (u16, Value) {
    let (status, body) = server.post_raw("/api/v1/config", b"", &[]);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn a_reload_with_a_body_is_refused_and_names_the_routes_that_take_objects() {
    let dir = test_dir("reload-body");
    let server = Server::start(&dir, &config("r"));
    std::fs::write(dir.join("runbooks.toml"), config("changed")).unwrap();
    for (body, kind) in [
        (&b"{}"[..], "application/json"),
        (b"[[rule]]\nname = \"x\"\n", "application/toml"),
        (b"x", "text/plain"),
    ] {
        let (status, answer) = server.post_raw("/api/v1/config", body, &[("Content-Type", kind)]);
        assert_eq!(status, 415, "{kind}: {answer}");
        assert!(answer.contains("takes no body"), "{answer}");
        assert!(answer.contains("PUT /api/v1/heartbeats/{name}"), "{answer}");
    }
    // Nothing was applied: the running config is still the first.
    assert_eq!(server.get_ok("/api/v1/config")["version"], 1);
    let (status, answer) = reload(&server);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 2);
}
