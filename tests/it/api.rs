//! The HTTP API under bad input: tokens, scopes, sizes, content, routes.
//! Nothing refused is stored; nothing accepted is lost.

use serde_json::{json, Value};

use crate::support::{fixture, heal_cli, http, test_dir, Server};

const TOKENS: &str = r#"
[[token]]
name = "am"
scopes = ["webhook"]
secret = "webhook-secret-0123456789"

[[token]]
name = "reader"
scopes = ["read"]
secret = "read-secret-0123456789ab"

[[token]]
name = "web-1"
scopes = ["agent"]
agent = "web-1"
secret = "agent-secret-0123456789a"

[[rule]]
name = "disk"
when = "labels.alertname == 'DiskSpaceLow'"
runbook = "fix"
target = "labels.instance"

[runbook.fix]
steps = [ { name = "a", run = "true" } ]
"#;

fn post(server: &Server, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, text) = http(
        "POST",
        &format!("{}{path}", server.url),
        Some(body),
        headers,
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn stored_alerts(server: &Server) -> usize {
    let (status, text) = http(
        "GET",
        &format!("{}/api/v1/alerts", server.url),
        None,
        &[("Authorization", "Bearer read-secret-0123456789ab")],
    );
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["alerts"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn bad_requests_get_clear_4xx_and_store_nothing() {
    let dir = test_dir("bad-input");
    let server = Server::start(&dir, TOKENS);
    let good = fixture("alertmanager/raw/single_firing.json");
    let am = "/api/v1/alerts/alertmanager";
    let json_ct = ("Content-Type", "application/json");
    let auth = ("Authorization", "Bearer webhook-secret-0123456789");

    // (case, body, headers, expected status, expected words in the error)
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no token",
            good.clone().into_bytes(),
            vec![json_ct],
            401,
            "missing bearer token",
        ),
        (
            "wrong token",
            good.clone().into_bytes(),
            vec![json_ct, ("Authorization", "Bearer nope-nope-nope-nope")],
            401,
            "invalid token",
        ),
        (
            "wrong scheme",
            good.clone().into_bytes(),
            vec![json_ct, ("Authorization", "Basic d2ViaG9vaw==")],
            401,
            "missing bearer token",
        ),
        (
            "wrong scope",
            good.clone().into_bytes(),
            vec![
                json_ct,
                ("Authorization", "Bearer read-secret-0123456789ab"),
            ],
            403,
            "lacks the webhook scope",
        ),
        (
            "malformed JSON",
            b"{\"alerts\": [".to_vec(),
            vec![json_ct, auth],
            400,
            "malformed JSON",
        ),
        (
            "wrong content type",
            good.clone().into_bytes(),
            vec![("Content-Type", "text/plain"), auth],
            415,
            "not JSON",
        ),
        (
            "2 MB body",
            vec![b' '; 2_000_000],
            vec![json_ct, auth],
            413,
            "larger than the limit",
        ),
        (
            "not a payload",
            b"[1, 2]".to_vec(),
            vec![json_ct, auth],
            422,
            "not a valid Alertmanager payload",
        ),
        (
            "missing alertname",
            br#"{"version":"4","alerts":[{"status":"firing","labels":{"a":"b"}}]}"#.to_vec(),
            vec![json_ct, auth],
            422,
            "alertname",
        ),
        (
            "bad time",
            br#"{"alerts":[{"status":"firing","labels":{"alertname":"A"},"startsAt":"soon"}]}"#
                .to_vec(),
            vec![json_ct, auth],
            422,
            "startsAt",
        ),
        (
            "label not a string",
            br#"{"alerts":[{"status":"firing","labels":{"alertname":"A","x":{"y":1}}}]}"#.to_vec(),
            vec![json_ct, auth],
            422,
            "must be a string",
        ),
    ];
    for (name, body, headers, status, message) in &cases {
        let (got, answer) = post(&server, am, body, headers);
        assert_eq!(got, *status, "{name}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{name}: expected {message:?} in {error:?}"
        );
    }
    let (status, _) = post(&server, "/api/v1/nothing", b"{}", &[json_ct, auth]);
    assert_eq!(status, 404);
    let (status, _) = http("GET", &format!("{}{am}", server.url), None, &[auth]);
    assert_eq!(status, 405);
    assert_eq!(stored_alerts(&server), 0, "refused requests stored nothing");

    // The good payload is accepted, and a bad one after it loses nothing.
    let (status, answer) = post(&server, am, good.as_bytes(), &[json_ct, auth]);
    assert_eq!(status, 200, "{answer}");
    let (status, _) = post(&server, am, b"{", &[json_ct, auth]);
    assert_eq!(status, 400);
    assert_eq!(stored_alerts(&server), 1);

    // Health needs no token; reads need one.
    assert_eq!(
        http("GET", &format!("{}/-/healthy", server.url), None, &[]).0,
        200
    );
    assert_eq!(
        http("GET", &format!("{}/api/v1/events", server.url), None, &[]).0,
        401
    );
}

#[test]
fn agent_token_is_bound_to_its_agent() {
    let dir = test_dir("agent-token");
    let server = Server::start(&dir, TOKENS);
    let json_ct = ("Content-Type", "application/json");
    let hello = br#"{"instance":"i-1"}"#;
    let (status, answer) = post(
        &server,
        "/api/v1/agents/web-2/poll?wait=0",
        hello,
        &[
            json_ct,
            ("Authorization", "Bearer agent-secret-0123456789a"),
        ],
    );
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("bound to agent \"web-1\""));
    let (status, answer) = post(
        &server,
        "/api/v1/agents/web-1/poll?wait=0",
        hello,
        &[
            json_ct,
            ("Authorization", "Bearer agent-secret-0123456789a"),
        ],
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ops"], json!([]));
    let (status, _) = post(
        &server,
        "/api/v1/agents/web-1/poll?wait=0",
        hello,
        &[
            json_ct,
            ("Authorization", "Bearer webhook-secret-0123456789"),
        ],
    );
    assert_eq!(status, 403, "a webhook token cannot poll");
    let (status, answer) = post(
        &server,
        "/api/v1/agents/web-1/poll?wait=0",
        b"{}",
        &[
            json_ct,
            ("Authorization", "Bearer agent-secret-0123456789a"),
        ],
    );
    assert_eq!(status, 422, "{answer}");
}

#[test]
fn server_without_tokens_refuses_non_loopback_address() {
    if crate::support::sqlite_only("api::server_without_tokens_refuses_non_loopback_address") {
        return;
    }
    let dir = test_dir("no-token-public");
    std::fs::write(dir.join("runbooks.toml"), "").unwrap();
    let config = dir.join("runbooks.toml");
    let db = dir.join("heal.db");
    let (code, _, err) = heal_cli(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no [[token]] configured"), "{err}");
}

#[test]
fn long_poll_waits_then_answers_empty() {
    let dir = test_dir("long-poll");
    let server = Server::start(&dir, "[server]\npoll_wait = \"1s\"\n");
    let started = std::time::Instant::now();
    let (status, answer) = server.post(
        "/api/v1/agents/idle/poll?wait=30",
        &json!({"instance": "i"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ops"], json!([]));
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(5),
        "poll_wait caps the wait: {waited:?}"
    );
}

#[test]
fn sigterm_answers_waiting_polls_and_exits_cleanly() {
    let dir = test_dir("sigterm");
    let mut server = Server::start(&dir, "");
    let url = format!("{}/api/v1/agents/waiter/poll?wait=30", server.url);
    let poll = std::thread::spawn(move || {
        http(
            "POST",
            &url,
            Some(br#"{"instance":"i"}"#),
            &[("Content-Type", "application/json")],
        )
    });
    crate::support::wait_agent_polling(&server, "waiter");
    let started = std::time::Instant::now();
    assert_eq!(server.terminate(), Some(0));
    let (status, body) = poll.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ops\":[]"), "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// Numbers past what heal counts in get a clear answer, not a panic (debug
/// builds check overflow; a panic answers 500). Found while describing the
/// API for schemathesis (tests/it/schema.rs).
#[test]
fn numbers_past_what_heal_counts_in_get_a_clear_answer() {
    let dir = test_dir("api-overflow");
    let config = format!(
        "{TOKENS}\n[[token]]\nname = \"ops\"\nscopes = [\"admin\", \"agent\"]\nsecret = \"admin-secret-0123456789ab\"\n"
    );
    let server = Server::start(&dir, &config);
    let admin = ("Authorization", "Bearer admin-secret-0123456789ab");
    // A duration past what any clock has run is refused by name; one longer
    // than the clock has run (in ms since the epoch) reaches back to its start.
    for path in ["/api/v1/alerts", "/api/v1/decisions", "/api/v1/audit"] {
        let url = format!("{}{path}?since=9223372036854775808ms", server.url);
        let (status, text) = http("GET", &url, None, &[admin]);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("longer than 100 years"), "{path}: {text}");
        let url = format!("{}{path}?since=36000d", server.url);
        let (status, text) = http("GET", &url, None, &[admin]);
        assert_eq!(status, 200, "{path}: {text}");
    }
    // A pause for longer than i64 milliseconds is refused, never wrapped.
    for long in ["106751991167d", "213503982334d"] {
        let body = format!(r#"{{"all": true, "for": "{long}", "reason": "r"}}"#);
        let (status, answer) = post(
            &server,
            "/api/v1/pauses",
            body.as_bytes(),
            &[admin, ("Content-Type", "application/json")],
        );
        assert_eq!(status, 422, "{long}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(
                |e| e.contains("longer than 100 years") || e.contains("within 90 days")
            ),
            "{answer}"
        );
    }
    // Steps whose durations add up past u64 (an agent's word) are answered.
    let max = u64::MAX;
    let result = format!(
        r#"{{"state": "failed", "steps": [{{"name": "a", "duration_ms": {max}}}, {{"name": "b", "duration_ms": {max}}}]}}"#
    );
    let (status, answer) = post(
        &server,
        "/api/v1/agents/web-1/ops/1/result",
        result.as_bytes(),
        &[admin, ("Content-Type", "application/json")],
    );
    assert_eq!(status, 404, "an agent that never polled: {answer}");
    assert!(!server.logs().contains("panicked"), "{}", server.logs());
}

/// Filters are URL-encoded like any query value: an alert whose name has a
/// space is found by `?name=Disk%20Space` (and by `Disk+Space`).
#[test]
fn alert_filters_are_url_decoded() {
    let dir = test_dir("api-alert-filters");
    let server = Server::start(&dir, TOKENS);
    let alert = br#"{"name": "Disk Space", "labels": {"instance": "web-1"}}"#;
    let (status, answer) = post(
        &server,
        "/api/v1/alerts",
        alert,
        &[
            ("Authorization", "Bearer webhook-secret-0123456789"),
            ("Content-Type", "application/json"),
        ],
    );
    assert_eq!(status, 200, "{answer}");
    let fingerprint = answer["alerts"][0]["fingerprint"].as_str().unwrap();
    let read = ("Authorization", "Bearer read-secret-0123456789ab");
    for query in [
        "name=Disk%20Space".to_string(),
        "name=Disk+Space&status=firing".to_string(),
        format!(
            "fingerprint=%{:02X}{}",
            fingerprint.as_bytes()[0],
            &fingerprint[1..]
        ),
    ] {
        let url = format!("{}/api/v1/alerts?{query}", server.url);
        let (status, text) = http("GET", &url, None, &[read]);
        assert_eq!(status, 200, "{query}: {text}");
        let found: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            found["alerts"].as_array().unwrap().len(),
            1,
            "{query}: {text}"
        );
    }
}

/// Malformed input gets a 4xx naming the field, not a silent default. Found
/// by schemathesis' negative_data_rejection check (docs/RELIABILITY.md).
#[test]
fn malformed_fields_get_a_4xx_naming_them() {
    let dir = test_dir("api-malformed");
    let config = format!(
        "{TOKENS}\n[[token]]\nname = \"ops\"\nscopes = [\"admin\", \"agent\"]\nsecret = \"admin-secret-0123456789ab\"\n\n[[heartbeat]]\nname = \"backup\"\nevery = \"1h\"\n"
    );
    let server = Server::start(&dir, &config);
    let admin = ("Authorization", "Bearer admin-secret-0123456789ab");
    let json_ct = ("Content-Type", "application/json");
    // (method, path, body, status, words of the error)
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "POST",
            "/api/v1/breaker/reset",
            r#"{"reason": {}}"#,
            422,
            "reason: must be a string",
        ),
        (
            "POST",
            "/api/v1/breaker/trip",
            r#"{"reason": 5}"#,
            422,
            "reason: must be a string",
        ),
        (
            "POST",
            "/api/v1/events/1/approve",
            r#"{"reason": []}"#,
            422,
            "reason: must be a string",
        ),
        (
            "POST",
            "/api/v1/heartbeats/backup/mute",
            r#"{"reason": 100758}"#,
            422,
            "reason: must be a string",
        ),
        (
            "POST",
            "/api/v1/heartbeats/backup/unmute",
            r#"{"reason": true}"#,
            422,
            "reason: must be a string",
        ),
        (
            "GET",
            "/api/v1/alerts?status=null",
            "",
            400,
            "is not one of firing, resolved",
        ),
        (
            "GET",
            "/api/v1/pauses?all=null",
            "",
            400,
            "is not one of true, false",
        ),
        (
            "POST",
            "/api/v1/agents/web-1/poll?capacity=9.686501233416557e-290",
            r#"{"instance": "i-1"}"#,
            400,
            "is not a whole number of ops",
        ),
        (
            "POST",
            "/api/v1/agents/web-1/poll?wait=-1",
            r#"{"instance": "i-1"}"#,
            400,
            "is not a whole number of seconds",
        ),
        (
            "POST",
            "/api/v1/pauses",
            r#"{"for": "1h", "until": 29593409577950963957768371428130816, "all": true, "reason": "r"}"#,
            422,
            "must be ms since the epoch, a whole number",
        ),
        (
            "POST",
            "/api/v1/pauses",
            r#"{"for": "1h", "all": "yes", "runbook": "fix", "reason": "r"}"#,
            422,
            "must be true or false",
        ),
    ];
    for (method, path, body, status, words) in cases {
        let url = format!("{}{path}", server.url);
        let (got, text) = http(method, &url, Some(body.as_bytes()), &[admin, json_ct]);
        assert_eq!(got, *status, "{method} {path} {body}: {text}");
        assert!(text.contains(words), "{method} {path} {body}: {text}");
    }
    let heartbeat = server_get(&server, "/api/v1/heartbeats/backup", admin);
    assert_eq!(
        heartbeat["heartbeat"]["paused"], false,
        "nothing refused was done"
    );
    let pauses = server_get(&server, "/api/v1/pauses", admin);
    assert_eq!(pauses["pauses"], json!([]), "nothing refused was done");
}

fn server_get(server: &Server, path: &str, auth: (&str, &str)) -> Value {
    let (status, text) = http("GET", &format!("{}{path}", server.url), None, &[auth]);
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}
