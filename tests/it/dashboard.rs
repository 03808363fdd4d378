//! The dashboard: every route of its table with every scope, logins and
//! their sessions (across a restart, at logout, when the token goes, under
//! TLS), failed logins, forms from elsewhere, alert data on the raw HTML,
//! and the whole thing driven in headless Chromium with a real agent
//! (`tests/browser/dashboard.mjs`, through playwright-core).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{http, repo, test_dir, wait_agent_polling, wait_until, Agent, Server};

#[allow(dead_code)]
#[path = "../../src/server/dashboard/table.rs"]
mod table;

const TOKENS: &[(&str, &str)] = &[
    ("admin", "admin-secret-0123456789"),
    ("read", "read-secret-0123456789"),
    ("webhook", "webhook-secret-0123456789"),
    ("ping", "ping-secret-0123456789"),
    ("agent", "agent-secret-0123456789"),
];

fn secret(scope: &str) -> &'static str {
    TOKENS.iter().find(|t| t.0 == scope).expect("a scope").1
}

/// A config with a token per scope (named `<scope>-token`), rules and runbooks.
fn config(extra: &str) -> String {
    let mut c = String::from(
        r#"
[server]
lease = "5s"
kill_grace = "1s"
poll_wait = "5s"

[[rule]]
name = "disk"
when = "labels.alertname == 'DiskFull'"
runbook = "clean"
target = "labels.instance"

[[rule]]
name = "careful"
when = "labels.alertname == 'NeedsApproval'"
runbook = "restart"
target = "labels.instance"
approve = true

[[rule]]
name = "service"
when = "labels.alertname == 'ServiceDown'"
runbook = "restart"
target = "labels.instance"

[[rule]]
name = "hostile"
when = "labels.alertname == 'Hostile'"
runbook = "clean"
target = "'web-1'"
mode = "dry-run"

[runbook.clean]
description = "Clean up the disk, a chunk a second"
timeout = "60s"
steps = [ { name = "clean", run = "for i in 1 2 3 4 5 6 7 8; do echo \"cleaned chunk $i\"; sleep 1; done" } ]

[runbook.restart]
steps = [ { name = "restart", run = "echo restarted on $HEAL_LABEL_INSTANCE" } ]

[runbook.slow]
timeout = "90s"
steps = [ { name = "wait", run = "sleep 60" } ]

[[heartbeat]]
name = "backup"
every = "1h"

[[probe]]
name = "self"
every = "2s"
fail_after = 1
tcp = { addr = "127.0.0.1:1" }
"#,
    );
    for (scope, secret) in TOKENS {
        c.push_str(&format!(
            "\n[[token]]\nname = \"{scope}-token\"\nscopes = [\"{scope}\"]\nsecret = \"{secret}\"\n"
        ));
        if *scope == "agent" {
            c.push_str("agent = \"web-1\"\n");
        }
    }
    c.push_str(extra);
    c
}

// ---- a small HTTP client that shows headers and never follows redirects ----

/// An answer: status, headers, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn describe(&self) -> String {
        format!("{} {:?}\n{}", self.status, self.headers, self.body)
    }
}

/// One request on its own connection (plain, or TLS trusting `ca`).
fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    ca: Option<&Path>,
) -> Answer {
    let host = base.split_once("://").map_or(base, |(_, h)| h);
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    let tcp = std::net::TcpStream::connect(host).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    match ca {
        None => {
            let mut s = tcp;
            s.write_all(text.as_bytes()).unwrap();
            let _ = s.read_to_end(&mut got);
        }
        Some(ca) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(text.as_bytes()).unwrap();
            let _ = s.read_to_end(&mut got);
        }
    }
    let got = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = got.split_once("\r\n\r\n").unwrap_or((&got, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A browser of sorts: a base URL, a session cookie and the CSRF token of its pages.
struct Browser {
    base: String,
    cookie: Option<String>,
    csrf: Option<String>,
    ca: Option<PathBuf>,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            base: base.to_string(),
            cookie: None,
            csrf: None,
            ca: None,
        }
    }

    fn send(&self, method: &str, path: &str, extra: &[(&str, &str)], body: &str) -> Answer {
        let cookie = self.cookie.as_ref().map(|c| format!("heal_session={c}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(c) = &cookie {
            headers.push(("Cookie", c));
        }
        request(&self.base, method, path, &headers, body, self.ca.as_deref())
    }

    fn get(&mut self, path: &str) -> Answer {
        let a = self.send("GET", path, &[], "");
        if let Some(token) = csrf_of(&a.body) {
            self.csrf = Some(token);
        }
        a
    }

    /// POSTs a form from one of this heal's pages: its Origin, and its CSRF token.
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut form: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        if let Some(t) = &self.csrf {
            form.push(format!("csrf={t}"));
        }
        self.post_raw(path, &form.join("&"), &[("Origin", &self.base)])
    }

    fn post_raw(&self, path: &str, body: &str, extra: &[(&str, &str)]) -> Answer {
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        headers.extend_from_slice(extra);
        self.send("POST", path, &headers, body)
    }

    /// Logs in; the answer of the login form.
    fn login(&mut self, token: &str) -> Answer {
        let a = self.post_raw(
            "/login",
            &format!("token={}&next=%2F", encode(token)),
            &[("Origin", &self.base.clone())],
        );
        if let Some(c) = a.header("Set-Cookie") {
            let value = c.split(';').next().unwrap_or("");
            self.cookie = value.strip_prefix("heal_session=").map(str::to_string);
            self.get("/");
        }
        a
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The CSRF token in a page's forms.
fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].split('"').next()?.to_string())
}

/// A concrete path for a template.
fn sample(template: &str) -> String {
    template.replace("{id}", "7").replace("{name}", "backup")
}

/// A scoped route answered as refused: to the login form, 401 or 403.
fn refused(a: &Answer) -> bool {
    let to_login = a.status == 303
        && a.header("Location")
            .is_some_and(|l| l.starts_with("/login"));
    to_login || a.status == 401 || a.status == 403
}

#[test]
fn every_dashboard_route_is_allowed_or_refused_as_its_table_says() {
    let dir = test_dir("dashboard-matrix");
    let server = Server::start(&dir, &config(""));
    let mut sessions = Vec::new();
    for (scope, secret) in TOKENS {
        let mut b = Browser::new(&server.url);
        let a = b.login(secret);
        match *scope {
            "admin" | "read" => {
                assert_eq!(a.status, 303, "{scope} logs in: {}", a.describe());
                assert!(b.csrf.is_some(), "{scope}: pages carry a CSRF token");
            }
            _ => {
                assert_eq!(a.status, 403, "{scope} cannot log in: {}", a.describe());
                assert!(
                    a.body.contains("needs the read or admin scope"),
                    "{}",
                    a.body
                );
                assert!(a.header("Set-Cookie").is_none());
            }
        }
        sessions.push((*scope, b));
    }
    let anonymous = Browser::new(&server.url);
    let mut checked = 0;
    for row in table::ROWS {
        let path = sample(row.path);
        let what = format!(
            "{} {path} ({}; scope {:?})",
            row.method, row.summary, row.scope
        );
        let call = |b: &Browser| match row.method {
            "GET" => b.send("GET", &path, &[], ""),
            _ => b.post(
                &path,
                &[("reason", "matrix"), ("target", "web-1"), ("for", "1h")],
            ),
        };
        let a = call(&anonymous);
        match row.scope {
            None => assert!(
                !refused(&a) || path == "/login",
                "{what} is open: {}",
                a.describe()
            ),
            Some(_) if row.method == "GET" => {
                assert_eq!(a.status, 303, "{what} without a session: {}", a.describe());
                let to = a.header("Location").unwrap_or("");
                assert!(to.starts_with("/login?next="), "{what}: {to}");
            }
            Some(_) => assert_eq!(a.status, 401, "{what} without a session: {}", a.describe()),
        }
        for (scope, b) in &sessions {
            let a = call(b);
            let may = match row.scope {
                None => true,
                Some("read") => matches!(*scope, "read" | "admin"),
                Some(_) => *scope == "admin",
            };
            if may {
                assert!(
                    !refused(&a) || row.path == "/logout" || row.path == "/login",
                    "{what} as {scope}: {}",
                    a.describe()
                );
            } else {
                assert!(refused(&a), "{what} as {scope}: {}", a.describe());
            }
            checked += 1;
        }
    }
    assert!(checked >= table::ROWS.len() * TOKENS.len(), "{checked}");
    // A bearer token reads pages but posts nothing.
    let bearer = format!("Bearer {}", secret("read"));
    let a = anonymous.send("GET", "/", &[("Authorization", &bearer)], "");
    assert_eq!(a.status, 200, "{}", a.describe());
    let admin = format!("Bearer {}", secret("admin"));
    let a = anonymous.send(
        "POST",
        "/breaker/reset",
        &[
            ("Authorization", &admin),
            ("Origin", &server.url),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "",
    );
    assert_eq!(a.status, 401, "{}", a.describe());
    assert!(
        !server.logs().contains("0123456789"),
        "no secret in the log"
    );
}

#[test]
fn forms_from_elsewhere_or_without_their_token_are_refused() {
    let dir = test_dir("dashboard-csrf");
    let server = Server::start(&dir, &config(""));
    let mut b = Browser::new(&server.url);
    assert_eq!(b.login(secret("admin")).status, 303);
    let token = b.csrf.clone().unwrap();
    let form = format!("reason=x&csrf={token}");
    type Case<'a> = (Vec<(&'a str, &'a str)>, String, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("Origin", "https://evil.example")],
            form.clone(),
            "another site",
        ),
        (
            vec![("Origin", "null")],
            form.clone(),
            "without an Origin or Referer",
        ),
        (vec![], form.clone(), "without an Origin or Referer"),
        (
            vec![("Referer", "https://evil.example/page")],
            form.clone(),
            "another site",
        ),
        (
            vec![("Origin", &server.url)],
            "reason=x".into(),
            "security token",
        ),
        (
            vec![("Origin", &server.url)],
            "reason=x&csrf=0000".into(),
            "security token",
        ),
    ];
    for (headers, body, words) in cases {
        let a = b.post_raw("/breaker/reset", &body, &headers);
        assert_eq!(a.status, 403, "{headers:?} {body}: {}", a.describe());
        assert!(a.body.contains(words), "{headers:?}: {}", a.body);
    }
    let referer = format!("{}/events", server.url);
    let a = b.post_raw("/breaker/reset", &form, &[("Referer", &referer)]);
    assert_eq!(
        a.status,
        303,
        "a form of this heal's, by its Referer: {}",
        a.describe()
    );
    let a = b.send(
        "POST",
        "/breaker/reset",
        &[
            ("Origin", &server.url),
            ("Content-Type", "application/json"),
        ],
        "{}",
    );
    assert_eq!(a.status, 415, "{}", a.describe());
    // What the API refuses, the dashboard refuses with the same words.
    let a = b.post("/pauses", &[("for", "1h"), ("reason", "")]);
    assert_eq!(a.status, 422, "{}", a.describe());
    assert!(a.body.contains("say what it covers"), "{}", a.body);
    let a = b.post("/events/424242/approve", &[]);
    assert_eq!(a.status, 404, "{}", a.describe());
    assert!(a.body.contains("no event 424242"), "{}", a.body);
    let a = b.post(
        "/runbooks/nope/run",
        &[("target", "web-1"), ("reason", "r")],
    );
    assert_eq!(a.status, 422, "{}", a.describe());
    let a = b.get("/events?since=forever");
    assert_eq!(a.status, 400, "{}", a.describe());
    let a = b.get("/events/abc");
    assert_eq!(a.status, 404, "{}", a.describe());
    let a = b.get("/heartbeats/nope");
    assert_eq!(a.status, 404, "{}", a.describe());
    let a = b.send("PUT", "/events", &[], "");
    assert_eq!(a.status, 405, "{}", a.describe());
    let (status, body) = server.get("/api/v1/nope");
    assert_eq!(
        status, 404,
        "paths outside the dashboard stay the API's: {body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("no such route"),
        "{body}"
    );
}

/// A heal of `config("")` (API calls with the admin token) and a browser
/// logged in with the token of `scope`.
fn logged_in(test: &str, scope: &str) -> (Server, Browser) {
    let dir = test_dir(test);
    let mut server = Server::start(&dir, &config(""));
    server.token = Some(secret("admin").into());
    let mut b = Browser::new(&server.url);
    assert_eq!(b.login(secret(scope)).status, 303);
    (server, b)
}

#[test]
fn admins_manage_heartbeats_and_probes_from_the_pages_as_through_the_api() {
    let (server, mut b) = logged_in("dashboard-manage", "admin");
    // Register, then edit, a heartbeat.
    let a = b.post(
        "/heartbeats",
        &[
            ("name", "nightly"),
            ("definition", "every = \"1h\"\ntags = [\"db\"]"),
        ],
    );
    assert_eq!(a.status, 303, "{}", a.describe());
    assert_eq!(a.header("Location"), Some("/heartbeats/nightly?done=saved"));
    let hb = server.get_ok("/api/v1/heartbeats/nightly")["heartbeat"].clone();
    assert_eq!(
        (hb["origin"].as_str(), hb["schedule"].as_str()),
        (Some("api"), Some("every 1h")),
        "{hb}"
    );
    let page = b.get("/heartbeats/nightly?done=saved").body;
    assert!(page.contains("Saved."), "{page}");
    assert!(
        page.contains("every = &quot;1h&quot;"),
        "the edit form holds its fields: {page}"
    );
    let a = b.post(
        "/heartbeats",
        &[("name", "nightly"), ("definition", "every = \"2h\"")],
    );
    assert_eq!(a.status, 303, "{}", a.describe());
    assert_eq!(
        server.get_ok("/api/v1/heartbeats/nightly")["heartbeat"]["schedule"],
        "every 2h"
    );
    // Mute for a while, unmute.
    let a = b.post(
        "/heartbeats/nightly/mute",
        &[("for", "2h"), ("reason", "db move")],
    );
    assert_eq!(a.status, 303, "{}", a.describe());
    let hb = server.get_ok("/api/v1/heartbeats/nightly")["heartbeat"].clone();
    assert!(hb["muted_until"].as_i64().is_some(), "{hb}");
    assert!(hb["paused_reason"]
        .as_str()
        .unwrap()
        .contains("db move (muted by admin-token)"));
    let page = b.get("/heartbeats/nightly").body;
    assert!(
        page.contains("Mute ends") && page.contains("in 1h59m"),
        "{page}"
    );
    assert!(
        page.contains("action=\"/heartbeats/nightly/unmute\""),
        "{page}"
    );
    assert_eq!(b.post("/heartbeats/nightly/unmute", &[]).status, 303);
    assert_eq!(
        server.get_ok("/api/v1/heartbeats/nightly")["heartbeat"]["paused"],
        false
    );
    // A probe: registered, muted until unmuted, deleted.
    let probe = "every = \"1m\"\ntcp = { addr = \"127.0.0.1:1\" }";
    let a = b.post("/probes", &[("name", "db-port"), ("definition", probe)]);
    assert_eq!(a.status, 303, "{}", a.describe());
    assert_eq!(
        server.get_ok("/api/v1/probes/db-port")["probe"]["source"],
        "api"
    );
    assert_eq!(
        b.post("/probes/db-port/mute", &[("for", ""), ("reason", "")])
            .status,
        303
    );
    let p = server.get_ok("/api/v1/probes/db-port")["probe"].clone();
    assert_eq!(
        (p["muted"].clone(), p["muted_until"].clone()),
        (json!(true), json!(null))
    );
    assert!(b.get("/probes").body.contains("until unmuted"));
    let a = b.post("/probes/db-port/delete", &[]);
    assert_eq!(a.status, 422, "not without ticking sure: {}", a.describe());
    let a = b.post("/probes/db-port/delete", &[("confirm", "yes")]);
    assert_eq!(
        a.header("Location"),
        Some("/probes?done=deleted"),
        "{}",
        a.describe()
    );
    assert_eq!(server.get("/api/v1/probes/db-port").0, 404);
    // The file's may be muted, not deleted or edited from here.
    assert_eq!(b.post("/probes/self/mute", &[("for", "30m")]).status, 303);
    let page = b.get("/probes/self").body;
    assert!(!page.contains("/probes/self/delete"), "{page}");
    let a = b.post("/probes/self/delete", &[("confirm", "yes")]);
    assert_eq!(a.status, 409, "{}", a.describe());
    assert!(a.body.contains("defined in the config file"), "{}", a.body);
    let a = b.post(
        "/heartbeats",
        &[("name", "backup"), ("definition", "every = \"2h\"")],
    );
    assert_eq!(a.status, 409, "{}", a.describe());
    // Each is audited as the API's, by who did it.
    for action in [
        "heartbeat.registered",
        "heartbeat.muted",
        "heartbeat.unmuted",
        "probe.registered",
        "probe.muted",
        "probe.deleted",
    ] {
        let entries = crate::support::audit_entries(&server, action);
        assert!(
            entries.iter().any(|e| e["actor"] == "admin-token"),
            "{action}: {entries:?}"
        );
    }
}

#[test]
fn bad_heartbeat_and_probe_forms_are_refused_and_change_nothing() {
    let (server, b) = logged_in("dashboard-manage-bad", "admin");
    let hostile = "<script>alert(1)</script>";
    /// A form's path and fields, the status it gets and words of its answer.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/heartbeats",
            vec![("name", hostile), ("definition", "every = \"1h\"")],
            400,
            "name",
        ),
        (
            "/heartbeats",
            vec![("name", "x"), ("definition", "every = ")],
            422,
            "not TOML",
        ),
        (
            "/heartbeats",
            vec![("name", "x"), ("definition", "every = \"1h\"\nevil = 1")],
            422,
            "evil",
        ),
        (
            "/heartbeats",
            vec![("name", "x"), ("definition", "every = \"soon\"")],
            422,
            "every: bad duration",
        ),
        (
            "/probes",
            vec![
                ("name", "x"),
                ("definition", "every = \"1m\"\ncommand = { run = \"id\" }"),
            ],
            422,
            "command",
        ),
        (
            "/probes",
            vec![("name", "x"), ("definition", "")],
            422,
            "probe &quot;x&quot;",
        ),
        (
            "/heartbeats/backup/mute",
            vec![("for", "forever")],
            400,
            "for: ",
        ),
        ("/probes/self/mute", vec![("for", "-1h")], 400, "for: "),
        (
            "/heartbeats/nope/mute",
            vec![("for", "1h")],
            404,
            "no heartbeat",
        ),
        (
            "/probes/nope/delete",
            vec![("confirm", "yes")],
            404,
            "no probe",
        ),
        (
            "/heartbeats/backup/delete",
            vec![("confirm", "yes")],
            409,
            "config file",
        ),
    ];
    for (path, fields, status, words) in cases {
        let a = b.post(path, &fields);
        assert_eq!(a.status, status, "{path} {fields:?}: {}", a.describe());
        assert!(a.body.contains(words), "{path} {fields:?}: {}", a.body);
        assert!(!a.body.contains(hostile), "{path}: the name is escaped");
    }
    // Without the form's token, from another site, too large, or read-only.
    let form = "name=x&definition=every+%3D+%221h%22";
    let a = b.post_raw("/heartbeats", form, &[("Origin", &server.url)]);
    assert_eq!(a.status, 403, "{}", a.describe());
    let with_csrf = format!("{form}&csrf={}", b.csrf.clone().unwrap());
    let a = b.post_raw(
        "/heartbeats",
        &with_csrf,
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(a.status, 403, "{}", a.describe());
    let huge = format!("{with_csrf}&pad={}", "x".repeat(2 << 20));
    let a = b.post_raw("/probes", &huge, &[("Origin", &server.url)]);
    assert_eq!(a.status, 413, "{}", a.describe());
    let mut reader = Browser::new(&server.url);
    reader.login(secret("read"));
    let page = reader.get("/heartbeats/backup").body;
    assert!(
        !page.contains("/heartbeats/backup/mute"),
        "no form for a reader"
    );
    assert!(!reader
        .get("/heartbeats")
        .body
        .contains("action=\"/heartbeats\""));
    for path in [
        "/heartbeats",
        "/heartbeats/backup/mute",
        "/probes/self/delete",
    ] {
        let a = reader.post(path, &[("name", "x"), ("definition", "every = \"1h\"")]);
        assert_eq!(a.status, 403, "{path}: {}", a.describe());
    }
    let hbs = server.get_ok("/api/v1/heartbeats")["heartbeats"].clone();
    assert_eq!(hbs.as_array().unwrap().len(), 1, "only the file's: {hbs}");
    assert_eq!(
        server.get_ok("/api/v1/heartbeats/backup")["heartbeat"]["paused"],
        false
    );
    assert_eq!(
        server.get_ok("/api/v1/probes/self")["probe"]["muted"],
        false
    );
    assert_eq!(
        server.get_ok("/api/v1/probes")["probes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_login_lasts_across_a_restart_and_ends_at_logout_or_when_its_token_goes() {
    if crate::support::sqlite_only(
        "dashboard::a_login_lasts_across_a_restart_and_ends_at_logout_or_when_its_token_goes",
    ) {
        return;
    }
    let dir = test_dir("dashboard-session");
    let mut server = Server::start(&dir, &config(""));
    let mut b = Browser::new(&server.url);
    let a = b.login(secret("admin"));
    assert_eq!(a.status, 303, "{}", a.describe());
    assert_eq!(a.header("Location"), Some("/"));
    let cookie = a.header("Set-Cookie").unwrap().to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let id = b.cookie.clone().unwrap();
    assert!(b.get("/").body.contains("admin-token"));
    // Only the id's hash is stored.
    let db = rusqlite::Connection::open(dir.join("heal.db")).unwrap();
    let stored: String = db
        .query_row("SELECT id_hash FROM session", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, id);
    assert_eq!(stored.len(), 64);
    drop(db);
    // A restart logs nobody out.
    let addr = server.addr.clone();
    server.kill();
    let mut server = Server::start_with(&dir, &config(""), &addr, &[]);
    let a = b.get("/events");
    assert_eq!(
        a.status,
        200,
        "still logged in after a restart: {}",
        a.describe()
    );
    // Logout ends it.
    let a = b.post("/logout", &[]);
    assert_eq!(a.status, 303, "{}", a.describe());
    assert!(a.header("Set-Cookie").unwrap().contains("Max-Age=0"));
    let a = b.get("/");
    assert_eq!(a.status, 303, "the old cookie is dead: {}", a.describe());
    // A token removed from the config ends its sessions.
    assert_eq!(b.login(secret("read")).status, 303);
    assert_eq!(b.get("/").status, 200);
    let without_read = config("").replace(
        &format!(
            "name = \"read-token\"\nscopes = [\"read\"]\nsecret = \"{}\"",
            secret("read")
        ),
        "name = \"read-token\"\nscopes = [\"read\"]\nsecret = \"a-new-read-secret-0123456789\"",
    );
    std::fs::write(dir.join("runbooks.toml"), without_read).unwrap();
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGHUP);
    }
    wait_until("the reload", Duration::from_secs(10), || {
        server.logs().contains("reloaded").then_some(())
    });
    let a = b.get("/");
    assert_eq!(
        a.status,
        303,
        "a rotated token's session ends: {}",
        a.describe()
    );
    // Failed logins: refused with the reason, limited, audited like refused tokens.
    let mut other = Browser::new(&server.url);
    let a = other.login("wrong-token-0123456789");
    assert_eq!(a.status, 401, "{}", a.describe());
    assert!(
        a.body.contains("that token is not valid here"),
        "{}",
        a.body
    );
    let a = other.login("");
    assert_eq!(a.status, 401, "{}", a.describe());
    let mut limited = None;
    for _ in 0..10 {
        let a = other.login("wrong-token-0123456789");
        if a.status == 429 {
            limited = Some(a);
            break;
        }
    }
    let limited = limited.expect("failed logins are limited");
    assert!(
        limited
            .body
            .contains("too many failed logins from 127.0.0.1"),
        "{}",
        limited.body
    );
    let a = other.login(secret("admin"));
    assert_eq!(a.status, 303, "a right token is never refused by the limit");
    server.token = Some(secret("admin").into());
    let audit = server.get_ok("/api/v1/audit?limit=1000")["entries"].clone();
    let entries = audit.as_array().unwrap();
    let of = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
    assert!(of("auth.refused") >= 5, "{audit}");
    assert!(entries
        .iter()
        .any(|e| e["action"] == "auth.refused" && e["target"] == "/login"));
    assert_eq!(of("dashboard.login"), 3, "{audit}");
    assert_eq!(of("dashboard.logout"), 1, "{audit}");
    let logs = server.logs();
    assert!(
        logs.contains("dashboard: read-token logged in from 127.0.0.1"),
        "{logs}"
    );
    assert!(!logs.contains(&id), "the session id is never logged");
    assert!(
        !logs.contains("wrong-token-0123456789"),
        "a presented token is never logged"
    );
}

#[test]
fn an_expired_token_opens_no_dashboard_and_ends_its_sessions() {
    let dir = test_dir("dashboard-expired");
    let text = |expires: &str| {
        config(&format!(
            "\n[[token]]\nname = \"temp\"\nscopes = [\"read\"]\nsecret = \"temp-secret-0123456789\"\nexpires = \"{expires}\"\n"
        ))
    };
    let server = Server::start(&dir, &text("2099-01-01"));
    let mut b = Browser::new(&server.url);
    assert_eq!(b.login("temp-secret-0123456789").status, 303);
    assert_eq!(b.get("/").status, 200);
    // The token expires (a reload with a past date): its session ends, and a new login is refused.
    std::fs::write(dir.join("runbooks.toml"), text("2020-01-01")).unwrap();
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGHUP);
    }
    wait_until("the reload", Duration::from_secs(10), || {
        server.logs().contains("reloaded").then_some(())
    });
    assert_eq!(
        b.get("/").status,
        303,
        "the session of an expired token ends"
    );
    let mut other = Browser::new(&server.url);
    let expired = other.login("temp-secret-0123456789");
    let wrong = Browser::new(&server.url).login("wrong-secret-0123456789");
    assert_eq!(expired.status, 401, "{}", expired.describe());
    assert_eq!(
        expired.body, wrong.body,
        "an expired token is told no more than a wrong one"
    );
    let (status, bearer) = http(
        "GET",
        &format!("{}/events", server.url),
        None,
        &[("Authorization", "Bearer temp-secret-0123456789")],
    );
    // Sent to the login page (the client follows the redirect).
    assert!(
        status == 200 && bearer.contains("<title>Log in"),
        "{status} {bearer}"
    );
    assert!(server
        .logs()
        .contains("token \"temp\" expired at 2020-01-01"));
}

#[test]
fn under_tls_the_session_cookie_is_secure() {
    let dir = test_dir("dashboard-tls");
    let (ca, cert, key) = crate::tls::pki(&dir);
    let text = config("").replacen(
        "[server]\n",
        &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        1,
    );
    let server = Server::start(&dir, &text);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let base = server.url.replace("127.0.0.1", "localhost");
    let mut b = Browser::new(&base);
    b.ca = Some(ca);
    // The Host header says localhost; the Origin must match it.
    let a = b.login(secret("admin"));
    assert_eq!(a.status, 303, "{}", a.describe());
    let cookie = a.header("Set-Cookie").unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let a = b.get("/");
    assert_eq!(a.status, 200, "{}", a.describe());
    assert!(a.header("Strict-Transport-Security").is_some());
}

#[test]
fn pages_show_alert_data_as_text_under_a_strict_policy() {
    let dir = test_dir("dashboard-escape");
    // No token: heal serves loopback only, and the dashboard is open.
    let text: String = config("").split("\n[[token]]").next().unwrap().to_string();
    let mut server = Server::start(&dir, &text);
    let hostile = r#"<script>alert("x")</script> & 'q' "dq" <img src=x onerror=alert(1)>"#;
    let (status, body) = server.post(
        "/api/v1/alerts",
        &json!({
            "name": "Hostile",
            "labels": { "instance": hostile, "x<y": "a&b" },
            "annotations": { "summary": hostile },
        }),
    );
    assert_eq!(status, 200, "{body}");
    let event = body["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap();
    server.token = None;
    let mut b = Browser::new(&server.url);
    let pages = [
        "/".to_string(),
        "/events".into(),
        format!("/events/{event}"),
        "/agents".into(),
        "/heartbeats".into(),
        "/heartbeats/backup".into(),
        "/probes".into(),
        "/probes/self".into(),
        "/pauses".into(),
        "/runbooks".into(),
        "/audit".into(),
        "/docs?x=<script>alert(1)</script>".into(),
    ];
    for path in &pages {
        let a = b.get(path);
        assert_eq!(a.status, 200, "{path}: {}", a.describe());
        for raw in ["<script>alert", "<img src=x", "'q'", "\"dq\"", "x<y"] {
            assert!(!a.body.contains(raw), "{path} holds {raw:?} unescaped");
        }
        // heal's own script, by URL: no inline script, no inline handler.
        assert_eq!(a.body.matches("<script").count(), 1, "{path}");
        assert!(
            a.body.contains("<script defer src=\"/static/live.js?v="),
            "{path}"
        );
        let csp = a.header("Content-Security-Policy").unwrap_or("");
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert_eq!(a.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(a.header("Cache-Control"), Some("no-store"));
        assert!(a
            .header("Content-Type")
            .unwrap_or("")
            .starts_with("text/html"));
    }
    let page = b.get(&format!("/events/{event}")).body;
    let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39; &quot;dq&quot; &lt;img src=x onerror=alert(1)&gt;";
    assert!(
        page.contains(escaped),
        "the label is shown, escaped:\n{page}"
    );
    assert!(page.contains("x&lt;y"), "names are escaped too");
    let overview = b.get("/").body;
    assert!(overview.contains(escaped), "{overview}");
    assert!(
        overview.contains("class=\"badge wait\""),
        "open: the header says so"
    );
    // Open on loopback, forms still need their token and this origin.
    let a = b.post_raw("/breaker/reset", "reason=x", &[("Origin", &server.url)]);
    assert_eq!(a.status, 403, "{}", a.describe());
    let a = b.post(
        "/pauses",
        &[("all", "true"), ("for", "1h"), ("reason", "maintenance")],
    );
    assert_eq!(a.status, 303, "{}", a.describe());
    assert_eq!(a.header("Location"), Some("/pauses?done=paused"));
    assert!(b.get("/pauses?done=paused").body.contains("Paused."));
    // The compiled-in files.
    for (path, kind) in [
        ("/static/style.css", "text/css"),
        ("/static/live.js", "text/javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
    ] {
        let a = b.get(path);
        assert_eq!(a.status, 200, "{path}");
        assert!(
            a.header("Content-Type").unwrap_or("").starts_with(kind),
            "{path}"
        );
    }
}

#[test]
fn the_api_reference_shows_every_operation_of_the_description() {
    let dir = test_dir("dashboard-docs");
    let mut server = Server::start(&dir, &config(""));
    server.token = Some(secret("read").into());
    let doc = server.get_ok("/api/v1/openapi.json");
    let mut b = Browser::new(&server.url);
    let a = b.get("/docs");
    assert!(refused(&a), "no session, no reference: {}", a.describe());
    b.login(secret("read"));
    assert!(b.get("/").body.contains("<a href=\"/docs\">API</a>"));
    // Through a client that reads a chunked answer.
    let cookie = format!("heal_session={}", b.cookie.as_deref().unwrap());
    let (status, page) = http(
        "GET",
        &format!("{}/docs", server.url),
        None,
        &[("Cookie", &cookie)],
    );
    assert_eq!(status, 200, "{page}");
    let page = &page;
    println!("/docs: {} bytes", page.len());
    let mut n = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            n += 1;
            let id = op["operationId"].as_str().unwrap();
            let at = page
                .find(&format!("id=\"op-{id}\""))
                .unwrap_or_else(|| panic!("{method} {path} has no section"));
            let end = page[at + 1..]
                .find("<section")
                .map_or(page.len(), |e| at + 1 + e);
            let section = &page[at..end];
            let title = format!("<code>{} {path}</code>", method.to_uppercase());
            assert!(section.contains(&title), "{title} in {section}");
            for p in op["parameters"].as_array().unwrap() {
                let name = format!("<code>{}</code>", p["name"].as_str().unwrap());
                assert!(section.contains(&name), "{method} {path}: {name}");
            }
            for status in op["responses"].as_object().unwrap().keys() {
                let dt = format!("<dt><code>{status}</code></dt>");
                assert!(
                    section.contains(&dt),
                    "{method} {path}: {status} in {section}"
                );
            }
            if op.get("requestBody").is_some() {
                assert!(section.contains("<h3>Body</h3>"), "{method} {path}");
            }
            assert!(section.contains("<h3>Example</h3><pre"), "{method} {path}");
        }
    }
    assert!(n > 50, "{n} operations");
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(page.contains(&format!("id=\"schema-{name}\"")), "{name}");
    }
    // Everything it links or loads is this heal's own.
    for attr in ["href=\"", "src=\""] {
        for part in page.split(attr).skip(1) {
            assert!(
                part.starts_with('/') || part.starts_with('#'),
                "{attr}{}",
                &part[..part.len().min(60)]
            );
        }
    }
    assert!(
        !page.contains(" style="),
        "no inline style under the policy"
    );
}

// ---- the browser ----------------------------------------------------------

/// node, Chromium and playwright-core, or None (the test is skipped, see `skip`).
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from("/usr/bin/chromium");
    let node = PathBuf::from("node");
    let node_runs = Command::new(&node)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let playwright = repo().join("tests/browser/node_modules/playwright-core/package.json");
    let missing: Vec<&str> = [
        (node_runs, "node (apt-get install nodejs npm)"),
        (chromium.exists(), "chromium (apt-get install chromium)"),
        (
            playwright.exists(),
            "playwright-core (npm ci in tests/browser)",
        ),
    ]
    .iter()
    .filter(|(found, _)| !found)
    .map(|(_, what)| *what)
    .collect();
    if missing.is_empty() {
        return Some((node, chromium));
    }
    crate::support::skip("the_dashboard_works_in_chromium", &missing.join(", "));
    None
}

/// Where the screenshots go: `target/dashboard-screenshots/`.
fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join("dashboard-screenshots")
}

#[test]
#[ignore = "needs chromium, node and playwright-core (apt-get install chromium nodejs npm; npm ci in tests/browser); cargo test -- --include-ignored runs it, as .ci/run does"]
fn the_dashboard_works_in_chromium() {
    let Some((node, chromium)) = browser_tools() else {
        return;
    };
    let dir = test_dir("dashboard-chromium");
    let mut server = Server::start(&dir, &config(""));
    server.token = Some(secret("admin").into());
    let token_file = dir.join("agent.token");
    std::fs::write(&token_file, secret("agent")).unwrap();
    let _agent = Agent::start(
        &server.url,
        "web-1",
        &[
            "--token-file",
            token_file.to_str().unwrap(),
            "--concurrency",
            "4",
        ],
    );
    wait_agent_polling(&server, "web-1");
    let shots = screenshots();
    let _ = std::fs::remove_dir_all(&shots);
    let mut child = Command::new(node)
        .arg(repo().join("tests/browser/dashboard.mjs"))
        .current_dir(repo().join("tests/browser"))
        .env("HEAL_URL", &server.url)
        .env("HEAL_ADMIN_TOKEN", secret("admin"))
        .env("HEAL_READ_TOKEN", secret("read"))
        .env("HEAL_SHOTS", &shots)
        .env("HEAL_USER_DATA", dir.join("chromium-profile"))
        .env("HEAL_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let pid = child.id();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait node") {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the pid of the child this test started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    println!("{stdout}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser test failed ({status:?}):\n{stdout}\n{stderr}"
    );
    for name in [
        "login",
        "overview",
        "event",
        "events",
        "agents",
        "heartbeat",
        "probes",
        "pauses",
        "runbooks",
        "audit",
        "docs",
        "heartbeat-muted",
        "overview-read-only",
    ] {
        for size in ["desktop", "phone"] {
            let shot = shots.join(format!("{name}-{size}.png"));
            assert!(shot.exists(), "{} was not written", shot.display());
        }
    }
}
