//! Who may do what: every route of the served OpenAPI description × every
//! scope, wrong and missing tokens, and what a refusal says.

use serde_json::Value;

use crate::support::{http, test_dir, Server};

const TOKENS: &[(&str, &str)] = &[
    ("admin", "admin-secret-0123456789"),
    ("read", "read-secret-0123456789"),
    ("webhook", "webhook-secret-0123456789"),
    ("ping", "ping-secret-0123456789"),
    ("agent", "agent-secret-0123456789"),
];

fn config() -> String {
    let mut c = String::from("[server]\npoll_wait = \"1s\"\nagent_down_after = \"1m\"\n");
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
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
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
            let (bad, bad_body) = call(&server, &method, &path, Some("not-a-token-0123456789"));
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
                let allowed = need.is_none() || need == Some(scope) || *scope == "admin";
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
