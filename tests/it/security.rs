//! Who may do what: every route of the served OpenAPI description × every
//! scope, wrong and missing tokens, and what a refusal says.

use serde_json::Value;

use crate::support::{early_in_a_minute, heal_cli, http, test_dir, Server};

const TOKENS: &[(&str, &str)] = &[
    ("admin", "admin-secret-0123456789"),
    ("read", "read-secret-0123456789"),
    ("webhook", "webhook-secret-0123456789"),
    ("ping", "ping-secret-0123456789"),
    ("agent", "agent-secret-0123456789"),
];

fn config() -> String {
    // Behind a proxy on loopback, so each wrong token below can come from its own client.
    let mut c = String::from("[server]\npoll_wait = \"1s\"\nagent_down_after = \"1m\"\ntrusted_proxies = [\"127.0.0.1\"]\n");
    for (scope, secret) in TOKENS {
        c.push_str(&format!(
            "\n[[token]]\nname = \"{scope}-token\"\nscopes = [\"{scope}\"]\nsecret = \"{secret}\"\n"
        ));
        if *scope == "agent" {
            c.push_str("agent = \"web-1\"\n");
        }
    }
    c
}

/// A concrete path for a template.
fn sample(template: &str) -> String {
    template
        .replace("{id}", "7")
        .replace("{op}", "9")
        .replace("{what}", "start")
        .replace("{agent}", "web-1")
        .replace("{name}", "backup")
        .replace("{source}", "uptime")
}

fn call(server: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    call_from(server, method, path, token, None)
}

/// `call`, from `client` behind the trusted proxy (`X-Forwarded-For`).
fn call_from(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    client: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if let Some(c) = client {
        headers.push(("X-Forwarded-For", c));
    }
    http(
        method,
        &format!("{}{path}", server.url),
        Some(b"{}"),
        &headers,
    )
}

#[test]
fn every_route_and_scope_is_allowed_or_refused_as_the_table_says() {
    let dir = test_dir("security-matrix");
    let server = Server::start(&dir, &config());
    let (status, text) = http(
        "GET",
        &format!("{}/api/v1/openapi.json", server.url),
        None,
        &[],
    );
    assert_eq!(status, 200, "the description needs no token: {text}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 30, "{}", paths.len());
    let mut checked = 0;
    for (template, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            if method == "HEAD" {
                continue;
            }
            let path = sample(template);
            let need = op["x-heal-scope"].as_str();
            let what = format!("{method} {path} (scope {need:?})");
            let (none, body) = call(&server, &method, &path, None);
            // Each wrong token from its own client, below the limit of wrong tokens per address.
            let client = format!("192.0.2.{}", checked / 5 % 250 + 1);
            let wrong = Some("not-a-token-0123456789");
            let (bad, bad_body) = call_from(&server, &method, &path, wrong, Some(&client));
            match need {
                None => {
                    assert!(
                        none != 401 && none != 403,
                        "{what} without a token: {none} {body}"
                    );
                }
                Some(_) => {
                    assert_eq!(none, 401, "{what} without a token: {body}");
                    assert_eq!(bad, 401, "{what} with a wrong token: {bad_body}");
                    // No detail leaked: the same words whatever the route.
                    assert!(body.contains("missing bearer token"), "{what}: {body}");
                    assert_eq!(bad_body, r#"{"error":"invalid token"}"#, "{what}");
                }
            }
            for (scope, secret) in TOKENS {
                let (status, body) = call(&server, &method, &path, Some(secret));
                // Admin covers every scope but agent: acting as an agent needs its own scope.
                let admin = *scope == "admin" && need != Some("agent");
                let allowed = need.is_none() || need == Some(scope) || admin;
                if allowed {
                    assert!(
                        status != 401 && status != 403,
                        "{what} as {scope}: {status} {body}"
                    );
                } else {
                    assert_eq!(status, 403, "{what} as {scope}: {body}");
                    assert!(body.contains("lacks the"), "{what} as {scope}: {body}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 150, "{checked}");
    assert!(
        !server.logs().contains("0123456789"),
        "no secret in the log"
    );
}

#[test]
fn an_agent_token_acts_only_as_its_agent() {
    let dir = test_dir("security-agent");
    let server = Server::start(&dir, &config());
    let agent = TOKENS.iter().find(|t| t.0 == "agent").unwrap().1;
    for path in [
        "/api/v1/agents/web-2/poll",
        "/api/v1/agents/web-2/ops/1/start",
        "/api/v1/agents/web-2/ops/1/log",
        "/api/v1/agents/web-2/ops/1/result",
    ] {
        let (status, body) = call(&server, "POST", path, Some(agent));
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body.contains("web-1"),
            "names the agent it is bound to: {body}"
        );
    }
    for path in ["/api/v1/events", "/api/v1/agents"] {
        let (status, _) = call(&server, "GET", path, Some(agent));
        assert_eq!(status, 403, "{path}: an agent token reads nothing");
    }
}

#[test]
fn heal_token_new_prints_a_secret_that_only_its_hash_in_the_config_accepts() {
    let dir = test_dir("security-token-new");
    let (code, out, err) = heal_cli(
        &[
            "token", "new", "--name", "grafana", "--scope", "read", "--json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let secret = made["token"].as_str().unwrap().to_string();
    let toml = made["toml"].as_str().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(
        !toml.contains(&secret),
        "the config holds only the hash: {toml}"
    );
    assert!(toml.contains("secret_sha256 = "), "{toml}");
    let server = Server::start(&dir, &format!("{}\n{toml}", config()));
    let (status, _) = call(&server, "GET", "/api/v1/events", Some(&secret));
    assert_eq!(status, 200);
    let (status, _) = call(&server, "POST", "/api/v1/breaker/reset", Some(&secret));
    assert_eq!(status, 403, "read only");
    let (code, _, err) = heal_cli(
        &["token", "new", "--name", "x", "--scope", "root"],
        &[],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("--scope \"root\""), "{err}");
    let (code, _, err) = heal_cli(
        &[
            "token", "new", "--name", "x", "--scope", "read", "--agent", "web-1",
        ],
        &[],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("add --scope agent"), "{err}");
    let (code, err) = check_config_with(
        &dir,
        "\n[[token]]\nname = \"h\"\nscopes = [\"read\"]\nsecret_sha256 = \"abc\"\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("secret_sha256: not 64 hex digits"), "{err}");
}

#[test]
fn changes_and_refused_tokens_are_audited_and_a_flood_is_folded() {
    let dir = test_dir("security-audit");
    let server = Server::start(&dir, &config());
    let admin = TOKENS[0].1;
    let (status, body) = http(
        "POST",
        &format!("{}/api/v1/pauses", server.url),
        Some(br#"{"all": true, "for": "10m", "reason": "maintenance window"}"#),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {admin}")),
        ],
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(
        "POST",
        &format!("{}/api/v1/breaker/trip", server.url),
        Some(br#"{"reason": "bad deploy"}"#),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {admin}")),
        ],
    );
    assert_eq!(status, 200, "{body}");
    early_in_a_minute();
    for i in 0..25 {
        let (status, _) = call(
            &server,
            "GET",
            "/api/v1/events",
            Some("wrong-token-0123456789"),
        );
        // Ten wrong tokens a minute from one address, then 429.
        assert_eq!(status, if i < 10 { 401 } else { 429 }, "try {i}");
    }
    let (code, out, err) = heal_cli(
        &[
            "audit",
            "--json",
            "--limit",
            "100",
            "--server",
            &server.url,
            "--token",
            admin,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let entries: Vec<Value> = serde_json::from_str(&out).unwrap();
    let of = |action: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect::<Vec<_>>()
    };
    let config = of("config.applied");
    assert_eq!(config.len(), 1, "{entries:?}");
    assert_eq!(config[0]["actor"], "startup");
    let pause = &of("pause.added")[0];
    assert_eq!(pause["actor"], "admin-token");
    assert!(
        pause["detail"]
            .as_str()
            .unwrap()
            .contains("maintenance window"),
        "{pause}"
    );
    assert_eq!(pause["remote"], "127.0.0.1");
    assert!(of("breaker.tripped")[0]["detail"]
        .as_str()
        .unwrap()
        .contains("bad deploy"));
    let refused = of("auth.refused");
    assert_eq!(
        refused.len(),
        10,
        "at most 10 a minute one by one: {refused:?}"
    );
    assert_eq!(refused[0]["target"], "/api/v1/events");
    assert!(
        !out.contains("wrong-token"),
        "the audit log holds no presented secret"
    );
    let warned = server.logs().matches("refused a request").count();
    assert!(warned <= 11, "log lines are limited too: {warned}");
    // Reading the audit log is for admins.
    let (status, _) = call(&server, "GET", "/api/v1/audit", Some(TOKENS[1].1));
    assert_eq!(status, 403);
}

#[test]
fn plain_http_beyond_loopback_needs_insecure_http() {
    if crate::support::sqlite_only("security::plain_http_beyond_loopback_needs_insecure_http") {
        return;
    }
    let dir = test_dir("security-plain");
    std::fs::write(dir.join("runbooks.toml"), config()).unwrap();
    let cfg = dir.join("runbooks.toml");
    let db = dir.join("heal.db");
    let args = [
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
    ];
    let (code, _, err) = heal_cli(&args, &[], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("refuses to serve plain HTTP on 0.0.0.0:0") && err.contains("--insecure-http"),
        "{err}"
    );
    let server = Server::start_with(&dir, &config(), "0.0.0.0:0", &["--insecure-http"]);
    assert!(server.url.starts_with("http://0.0.0.0:"), "{}", server.url);
}

#[test]
fn an_expired_token_is_refused_like_a_wrong_one_and_audited() {
    let dir = test_dir("security-expired");
    // One token that ended, one that ends within the warning window, one made with --expires.
    let (code, out, err) = heal_cli(
        &[
            "token",
            "new",
            "--name",
            "soon",
            "--scope",
            "read",
            "--expires",
            "3d",
            "--json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let soon = made["token"].as_str().unwrap().to_string();
    let toml = made["toml"].as_str().unwrap();
    assert!(toml.contains("expires = \""), "{toml}");
    let text = format!(
        "{}\n[[token]]\nname = \"old\"\nscopes = [\"read\"]\nsecret = \"old-secret-0123456789\"\nexpires = \"2020-01-31\"\n\n{toml}",
        config()
    );
    let server = Server::start(&dir, &text);
    let logs = server.logs();
    assert!(
        logs.contains("token \"old\" expired at 2020-01-31T00:00:00"),
        "{logs}"
    );
    assert!(logs.contains("token \"soon\" expires at"), "{logs}");
    // Still valid for three days.
    let (status, _) = call(&server, "GET", "/api/v1/events", Some(&soon));
    assert_eq!(status, 200);
    let (status, expired) = call(
        &server,
        "GET",
        "/api/v1/events",
        Some("old-secret-0123456789"),
    );
    let (_, wrong) = call(&server, "GET", "/api/v1/events", Some("not-a-token"));
    assert_eq!(status, 401);
    assert_eq!(
        expired, wrong,
        "an expired token tells no more than a wrong one"
    );
    assert!(
        !expired.contains("old") && !expired.contains("expire"),
        "{expired}"
    );
    let (code, out, err) = heal_cli(
        &[
            "audit",
            "--json",
            "--action",
            "auth.refused",
            "--server",
            &server.url,
            "--token",
            TOKENS[0].1,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let entries: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(
        entries.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("token \"old\" expired at 2020-01-31"))),
        "{entries:#?}"
    );
    // A bad expiry is a config error naming the line.
    let (code, err) = check_config_with(&dir, "\n[[token]]\nname = \"b\"\nscopes = [\"read\"]\nsecret = \"b-secret-0123456789\"\nexpires = \"next week\"\n");
    assert_eq!(code, 2);
    assert!(
        err.contains("token \"b\": expires: \"next week\" is not a date"),
        "{err}"
    );
}

/// `heal check-config` on the usual config plus `extra`, written to
/// dir/bad.toml: its exit code and stderr.
fn check_config_with(dir: &std::path::Path, extra: &str) -> (i32, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, format!("{}{extra}", config())).unwrap();
    let (code, _, err) = heal_cli(
        &["check-config", "--config", path.to_str().unwrap()],
        &[],
        None,
    );
    (code, err)
}
