//! What a web page, a token guesser and a borrowed agent token cannot do:
//! drive heal from another site (cross-site posts, DNS rebinding), lock the
//! right user out or guess tokens unseen, or claim an agent's tags. Normal
//! clients (the CLI, agents, Alertmanager, the dashboard's own forms) still
//! work.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    check_config, early_in_a_minute, heal_cli, http, test_dir, wait_agent_polling, Server,
};

const ADMIN: &str = "admin-secret-0123456789";
const AGENT_B: &str = "agent-b-secret-0123456789";
const ANY_AGENT: &str = "any-agent-secret-0123456789";
const BOTH: &str = "both-secret-0123456789";

/// An open heal (no tokens, loopback) with a runbook to start by hand.
fn open_config(server: &str) -> String {
    format!(
        r#"
[server]
poll_wait = "1s"
{server}

[runbook.fix]
steps = [ {{ name = "say", run = "echo ran" }} ]
"#
    )
}

/// One request on its own connection, with exactly these headers (the
/// `Host` among them): status and body.
fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(text.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got).into_owned();
    let status = got
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = got
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (
        status,
        got.lines().take(12).collect::<Vec<_>>().join("\n") + "\n" + &body,
    )
}

#[test]
fn cross_site_posts_are_refused_and_store_nothing() {
    let dir = test_dir("guard-cross-site");
    let server = Server::start(&dir, &open_config(""));
    let url = |p: &str| format!("{}{p}", server.url);
    let sneaky = "text/plain; x=json";
    let attacks: [(&str, Value); 3] = [
        (
            "/api/v1/runs",
            json!({"runbook": "fix", "target": "web-1", "reason": "x"}),
        ),
        (
            "/api/v1/pauses",
            json!({"all": true, "for": "1h", "reason": "x"}),
        ),
        ("/api/v1/breaker/trip", json!({"reason": "x"})),
    ];
    for (path, body) in &attacks {
        let body = body.to_string();
        // What a page at evil.example sends with fetch(), no preflight asked.
        let (status, text) = http(
            "POST",
            &url(path),
            Some(body.as_bytes()),
            &[("Content-Type", sneaky), ("Origin", "https://evil.example")],
        );
        assert_eq!(status, 403, "{path}: {text}");
        assert!(
            text.contains("https://evil.example"),
            "names the origin: {text}"
        );
        assert!(text.contains("public_url"), "names the fix: {text}");
        // The same with a JSON type, and a sandboxed page's "null" origin.
        for origin in [
            "https://evil.example",
            "null",
            "http://127.0.0.1.evil.example",
        ] {
            let (status, text) = http(
                "POST",
                &url(path),
                Some(body.as_bytes()),
                &[("Content-Type", "application/json"), ("Origin", origin)],
            );
            assert_eq!(status, 403, "{path} from {origin}: {text}");
        }
        // Without an Origin (no browser), a body that is not typed JSON is not JSON.
        let (status, text) = http(
            "POST",
            &url(path),
            Some(body.as_bytes()),
            &[("Content-Type", sneaky)],
        );
        assert_eq!(status, 415, "{path}: {text}");
        assert!(text.contains("application/json"), "{text}");
    }
    assert_eq!(server.get_ok("/api/v1/events")["events"], json!([]));
    assert_eq!(server.get_ok("/api/v1/pauses")["pauses"], json!([]));
    assert_eq!(server.get_ok("/api/v1/breaker")["state"], "closed");
    // heal's own origin, a client without one, and JSON with parameters pass.
    let (status, text) = http(
        "POST",
        &url("/api/v1/pauses"),
        Some(attacks[1].1.to_string().as_bytes()),
        &[
            ("Content-Type", "Application/JSON; charset=utf-8"),
            ("Origin", &server.url),
        ],
    );
    assert_eq!(status, 201, "{text}");
    let (status, text) = http(
        "POST",
        &url("/api/v1/breaker/trip"),
        Some(br#"{"reason": "by hand"}"#),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(status, 200, "{text}");
    // The CLI, as a person uses it.
    let (code, out, err) = heal_cli(&["breaker", "reset", "--server", &server.url], &[], None);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_rebound_host_reaches_nothing_on_an_open_heal() {
    let dir = test_dir("guard-rebinding");
    let server = Server::start(
        &dir,
        &open_config("public_url = \"http://heal.internal:7878\""),
    );
    let port = server.addr.rsplit_once(':').unwrap().1.to_string();
    let evil = format!("evil.example:{port}");
    let evil_origin = format!("http://{evil}");
    // A page at evil.example whose name now resolves to 127.0.0.1.
    for (method, path, body, ct) in [
        ("GET", "/", "", ""),
        ("GET", "/pauses", "", ""),
        ("GET", "/api/v1/events", "", ""),
        ("GET", "/-/healthy", "", ""),
        (
            "POST",
            "/breaker/reset",
            "reason=x",
            "application/x-www-form-urlencoded",
        ),
        (
            "POST",
            "/api/v1/breaker/trip",
            r#"{"reason":"x"}"#,
            "application/json",
        ),
    ] {
        let mut headers = vec![("Host", evil.as_str()), ("Origin", evil_origin.as_str())];
        if !ct.is_empty() {
            headers.push(("Content-Type", ct));
        }
        let (status, text) = raw(&server.addr, method, path, &headers, body);
        assert_eq!(status, 421, "{method} {path}: {text}");
        assert!(text.contains("evil.example"), "{text}");
    }
    assert_eq!(server.get_ok("/api/v1/breaker")["state"], "closed");
    // Loopback names and addresses, and public_url's host, are heal's own.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "127.0.0.1".to_string(),
        format!("Heal.Internal:{port}"),
    ] {
        let (status, text) = raw(
            &server.addr,
            "GET",
            "/api/v1/events",
            &[("Host", &host)],
            "",
        );
        assert_eq!(status, 200, "{host}: {text}");
        let (status, text) = raw(&server.addr, "GET", "/", &[("Host", &host)], "");
        assert_eq!(status, 200, "{host}: {text}");
    }
    // The open dashboard's own forms still work.
    let own = format!("http://127.0.0.1:{port}");
    let (_, page) = raw(&server.addr, "GET", "/pauses", &[("Host", &own[7..])], "");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the page has a form with its CSRF token")
        .to_string();
    let (status, text) = raw(
        &server.addr,
        "POST",
        "/pauses",
        &[
            ("Host", &own[7..]),
            ("Origin", &own),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("csrf={csrf}&all=true&for=1h&reason=maintenance"),
    );
    assert_eq!(status, 303, "{text}");
    assert_eq!(
        server.get_ok("/api/v1/pauses")["pauses"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn token_config() -> String {
    format!(
        r#"
[server]
poll_wait = "1s"
trusted_proxies = ["127.0.0.1"]

[[token]]
name = "admin-token"
scopes = ["admin"]
secret = "{ADMIN}"

[[token]]
name = "agent-b"
scopes = ["agent"]
agent = "agent-b"
tags = ["web"]
secret = "{AGENT_B}"

[[token]]
name = "any-agent"
scopes = ["agent"]
secret = "{ANY_AGENT}"

[[token]]
name = "admin-and-agent"
scopes = ["admin", "agent"]
secret = "{BOTH}"

[[rule]]
name = "db-fix"
when = "labels.alertname == 'DbSlow'"
runbook = "fix"
target = {{ tags = ["db"] }}

[runbook.fix]
steps = [ {{ name = "say", run = "echo ran" }} ]
"#
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A poll as agent `id` declaring `tags`, without waiting: its status and body.
fn poll(server: &Server, id: &str, token: &str, tags: &[&str]) -> (u16, String) {
    let hello = json!({"instance": format!("{id}-test"), "tags": tags, "allow": ["*"]});
    http(
        "POST",
        &format!("{}/api/v1/agents/{id}/poll?wait=0", server.url),
        Some(hello.to_string().as_bytes()),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer(token)),
        ],
    )
}

#[test]
fn an_agent_token_claims_only_its_tags_and_admin_is_no_agent() {
    let dir = test_dir("guard-tags");
    let mut server = Server::start(&dir, &token_config());
    server.token = Some(ADMIN.into());
    // The token bound to agent-b may not claim "db", and so gets no db op.
    let (status, text) = poll(&server, "agent-b", AGENT_B, &["web", "db"]);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("tag \\\"db\\\""), "names the tag: {text}");
    let (status, text) = poll(&server, "agent-b", AGENT_B, &["web"]);
    assert_eq!(status, 200, "{text}");
    let (status, text) = poll(&server, "agent-b", AGENT_B, &[]);
    assert_eq!(status, 200, "{text}");
    let (status, _) = server.post(
        "/api/v1/alerts",
        &json!([{"name": "DbSlow", "labels": {"instance": "db-1"}}]),
    );
    assert_eq!(status, 200);
    let agents = server.get_ok("/api/v1/agents")["agents"].clone();
    let b = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "agent-b")
        .expect("agent-b polled");
    assert!(!b.to_string().contains("\"db\""), "{b}");
    // An unbound agent token keeps today's behaviour; an admin token is no agent
    // unless it has the agent scope too.
    let (status, text) = poll(&server, "db-1", ANY_AGENT, &["db"]);
    assert_eq!(status, 200, "{text}");
    let (status, text) = poll(&server, "db-2", ADMIN, &["db"]);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("lacks the agent scope"), "{text}");
    let (status, text) = poll(&server, "db-3", BOTH, &["db"]);
    assert_eq!(status, 200, "{text}");
    // check-config warns about the unbound agent token, as rules target tags.
    let (code, out, err) = check_config(&dir.join("runbooks.toml"));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: token \"any-agent\" acts as any agent")
            && out.contains("rule \"db-fix\" targets tags"),
        "{out}"
    );
    assert!(!out.contains("\"agent-b\" acts"), "{out}");
    // Tags belong to a token bound to an agent.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[token]]\nname = \"x\"\nscopes = [\"agent\"]\ntags = [\"db\"]\nsecret = \"x-secret-0123456789\"\n",
    )
    .unwrap();
    let (code, _, err) = check_config(&bad);
    assert_eq!(code, 2);
    assert!(
        err.contains("tags: only a token bound to an agent"),
        "{err}"
    );
}

#[test]
fn the_local_agent_still_takes_its_tagged_ops_beside_tokens() {
    let dir = test_dir("guard-local-agent");
    let mut server = Server::start_with(
        &dir,
        &token_config(),
        "127.0.0.1:0",
        &[
            "--local-agent",
            "--local-agent-id",
            "db-1",
            "--local-agent-tags",
            "db",
        ],
    );
    server.token = Some(ADMIN.into());
    wait_agent_polling(&server, "db-1");
    let (status, _) = server.post(
        "/api/v1/alerts",
        &json!([{"name": "DbSlow", "labels": {"instance": "db-1"}}]),
    );
    assert_eq!(status, 200);
    server.wait_event(1, &["succeeded"], Duration::from_secs(20));
}

#[test]
fn wrong_tokens_are_limited_per_address_and_a_right_one_always_passes() {
    let dir = test_dir("guard-limit");
    let mut server = Server::start(&dir, &token_config());
    server.token = Some(ADMIN.into());
    early_in_a_minute();
    let events = format!("{}/api/v1/events", server.url);
    let get = |token: &str, from: Option<&str>| {
        let auth = bearer(token);
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(f) = from {
            headers.push(("X-Forwarded-For", f));
        }
        http("GET", &events, None, &headers)
    };
    // Behind a trusted proxy, each client has its own count; a forged
    // address left of the proxy's own entry changes nothing.
    assert_eq!(get("wrong-token-0123456789", Some("192.0.2.7")).0, 401);
    assert_eq!(
        get("wrong-token-0123456789", Some("192.0.2.7, 127.0.0.1")).0,
        401
    );
    for i in 0..10 {
        let (status, text) = get("wrong-token-0123456789", None);
        assert_eq!(status, 401, "try {i}: {text}");
    }
    let (status, text) = raw(
        &server.addr,
        "GET",
        "/api/v1/events",
        &[
            ("Host", &server.addr),
            ("Authorization", &bearer("wrong-token-0123456789")),
        ],
        "",
    );
    assert_eq!(status, 429, "{text}");
    let after: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("Retry-After: {text}"));
    assert!((1..=60).contains(&after), "{after}");
    assert!(
        text.contains("too many wrong tokens from 127.0.0.1"),
        "{text}"
    );
    // The right token is never refused by the limit: an agent, a person.
    assert_eq!(get(ADMIN, None).0, 200);
    let (status, text) = poll(&server, "agent-b", AGENT_B, &["web"]);
    assert_eq!(status, 200, "{text}");
    let (status, _) = http(
        "POST",
        &format!("{}/api/v1/breaker/trip", server.url),
        Some(br#"{"reason": "through the proxy"}"#),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer(ADMIN)),
            ("X-Forwarded-For", "6.6.6.6, 192.0.2.8"),
        ],
    );
    assert_eq!(status, 200);
    // Logins: wrong ones from this address are limited, the right one logs in.
    let login = |token: &str| {
        raw(
            &server.addr,
            "POST",
            "/login",
            &[
                ("Host", &server.addr),
                ("Origin", &server.url),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &format!("token={token}&next=/"),
        )
    };
    let (status, text) = login("wrong-token-0123456789");
    assert_eq!(status, 429, "{text}");
    assert!(
        text.contains("too many failed logins from 127.0.0.1"),
        "{text}"
    );
    let (status, text) = login(ADMIN);
    assert_eq!(status, 303, "the right token logs in: {text}");
    let metrics = http(
        "GET",
        &format!("{}/metrics", server.url),
        None,
        &[("Authorization", &bearer(ADMIN))],
    )
    .1;
    assert!(
        metrics.contains("heal_auth_failures_total{outcome=\"refused\"} 12"),
        "{metrics}"
    );
    assert!(
        metrics.contains("heal_auth_failures_total{outcome=\"limited\"} 2"),
        "{metrics}"
    );
    let audit = server.get_ok("/api/v1/audit?limit=1000")["entries"].clone();
    let entries = audit.as_array().unwrap();
    let tripped = entries
        .iter()
        .find(|e| e["action"] == "breaker.tripped")
        .expect("audited");
    assert_eq!(tripped["remote"], "192.0.2.8", "{tripped}");
    assert!(
        entries.iter().any(|e| e["action"] == "auth.refused"
            && e["remote"] == "192.0.2.7"
            && e["target"] == "/api/v1/events"),
        "{audit}"
    );
}
