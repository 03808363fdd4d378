//! The API keeps its description: schemathesis (a property-based API tester
//! from PyPI) reads `GET /api/v1/openapi.json` of a real `heal serve` that
//! has a token of every scope, a heartbeat, a probe, a `[[source]]`, channels
//! and stored alerts, events, ops and pauses; it generates valid and invalid
//! requests for every operation and checks every answer: no 5xx, a
//! documented status, content type, headers and body schema.
//!
//! `.ci/run` installs the pinned schemathesis and names it in
//! `HEAL_SCHEMATHESIS`; without it the test is skipped with a loud message,
//! and under `CI=true` it fails. `HEAL_SCHEMATHESIS_EXAMPLES` (default 20
//! per operation) and `HEAL_SCHEMATHESIS_SEED` (default 7) make a longer or
//! another run.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{fixture, test_dir, Server};

const ADMIN: &str = "admin-secret-0123456789";
const PING: &str = "ping-secret-0123456789";

/// Examples per operation and the seed, so a failure can be replayed.
const EXAMPLES: u32 = 20;
const SEED: u64 = 7;

/// How long the whole run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(20 * 60);

fn config() -> String {
    let mut c = String::from(
        r#"
[server]
# Polls without work answer within a second (the poll's wait is capped here).
poll_wait = "1s"

[[source]]
name = "uptime"
alerts = "checks"
alert_name = "'SiteDown'"
status = "state == 'up' && 'resolved' || 'firing'"
labels = "{instance: host}"

[[heartbeat]]
name = "backup"
every = "1h"

[[probe]]
name = "db"
every = "1s"
tcp = { addr = "127.0.0.1:9" }

# A channel that takes everything, and one nobody listens on.
[channel.chat]
command = { run = ["sh", "-c", "cat > /dev/null"] }

[channel.pager]
webhook = { url = "http://127.0.0.1:9/hook" }
timeout = "1s"
give_up_after = "5s"

[[notify]]
channels = ["chat", "pager"]

[[rule]]
name = "disk"
when = "labels.alertname == 'DiskFull'"
runbook = "clean"
target = "labels.instance"

[[rule]]
name = "careful"
when = "labels.alertname == 'Careful'"
runbook = "clean"
target = "labels.instance"
approve = true

[runbook.clean]
steps = [ { name = "clean", run = "true" } ]
"#,
    );
    for scope in ["admin", "read", "webhook", "ping", "agent"] {
        // Admin covers every scope but agent: schemathesis, with the admin
        // token, reaches the agent routes through the agent scope too.
        let scopes = if scope == "admin" {
            r#""admin", "agent""#.to_string()
        } else {
            format!("\"{scope}\"")
        };
        c.push_str(&format!(
            "\n[[token]]\nname = \"{scope}-token\"\nscopes = [{scopes}]\nsecret = \"{scope}-secret-0123456789\"\n"
        ));
        if scope == "agent" {
            c.push_str("agent = \"web-1\"\n");
        }
    }
    c
}

/// Path values that exist, so schemathesis reaches past the 404s half the
/// time: the names, the source, the agent with ops, the events and the pause.
const SCHEMATHESIS_TOML: &str = r#"
[dictionaries.names]
values = ["backup", "db", "chat", "api-beat"]

[dictionaries.sources]
values = ["uptime"]

[dictionaries.agents]
values = ["web-1"]

[dictionaries.ids]
values = [1, 2, 3, 4]

[parameters]
"path.name" = { dictionary = "names", probability = 0.5 }
"path.source" = { dictionary = "sources", probability = 0.5 }
"path.agent" = { dictionary = "agents", probability = 0.5 }
"path.id" = { dictionary = "ids", probability = 0.5 }
"path.op" = { dictionary = "ids", probability = 0.5 }

# A test message to a channel that is down answers 502 with what the channel
# said: a documented answer, not heal failing (a 500 still fails).
[[operations]]
include-path = "/api/v1/channels/{name}/test"
checks.not_a_server_error.expected-statuses = ["2XX", "3XX", "4XX", "502"]
"#;

/// The schemathesis CLI: `HEAL_SCHEMATHESIS`, else `st` on the PATH; None
/// (the test is skipped, see `skip`) when there is none.
fn schemathesis() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("HEAL_SCHEMATHESIS") {
        Some(p) => vec![PathBuf::from(p)],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join("st")).collect())
            .unwrap_or_default(),
    };
    let found = candidates.into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("st, version"))
    });
    if found.is_none() {
        crate::support::skip(
            "schemathesis_finds_no_server_error_and_no_answer_outside_the_description",
            "schemathesis (bash .ci/schemathesis prints its path; export HEAL_SCHEMATHESIS=that)",
        );
    }
    found
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Stores what schemathesis should find: alerts of every source, an event
/// with an op queued for agent web-1, one waiting for approval, a pause, a
/// ping and a heartbeat registered through the API.
fn seed(server: &Server) {
    let check = |what: &str, (status, body): (u16, serde_json::Value)| {
        assert!(
            (200..300).contains(&status),
            "{what}: {status} {body}\nserver log:\n{}",
            server.logs()
        );
    };
    let am: serde_json::Value =
        serde_json::from_str(&fixture("alertmanager/raw/single_firing.json")).unwrap();
    check(
        "alertmanager",
        server.post("/api/v1/alerts/alertmanager", &am),
    );
    for name in ["DiskFull", "Careful"] {
        let alert = json!({ "name": name, "labels": { "instance": "web-1" } });
        check(name, server.post("/api/v1/alerts", &alert));
    }
    let hook = json!({ "checks": [{ "host": "web-2", "state": "down" }] });
    check("hook", server.post("/hooks/uptime", &hook));
    let pause = json!({ "runbook": "nothing", "for": "1h", "reason": "seeded" });
    check("pause", server.post("/api/v1/pauses", &pause));
    let beat = json!({ "every": "10m", "grace": "5m" });
    let (status, text) = crate::support::http(
        "PUT",
        &format!("{}/api/v1/heartbeats/api-beat", server.url),
        Some(beat.to_string().as_bytes()),
        &[
            ("Authorization", &format!("Bearer {ADMIN}")),
            ("Content-Type", "application/json"),
        ],
    );
    assert_eq!(status, 201, "{text}");
    let (status, text) = crate::support::http(
        "POST",
        &format!("{}/ping/backup", server.url),
        Some(b"done"),
        &[("Authorization", &format!("Bearer {PING}"))],
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
#[ignore = "needs schemathesis (export HEAL_SCHEMATHESIS=\"$(.ci/schemathesis)\"); cargo test -- --include-ignored runs it, as .ci/run does"]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_description() {
    let Some(st) = schemathesis() else {
        return;
    };
    let dir = test_dir("schema");
    let mut server = Server::start(&dir, &config());
    server.token = Some(ADMIN.into());
    seed(&server);
    std::fs::write(dir.join("schemathesis.toml"), SCHEMATHESIS_TOML).unwrap();
    let examples = env_number("HEAL_SCHEMATHESIS_EXAMPLES").unwrap_or(EXAMPLES.into());
    let seed = env_number("HEAL_SCHEMATHESIS_SEED").unwrap_or(SEED);
    let report = dir.join("report.txt");
    let started = Instant::now();
    let mut child = Command::new(&st)
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .arg("--no-color")
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", server.url))
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "1", "--request-timeout", "30"])
        // Everything it writes (its example database, reports) stays in the test's directory.
        .current_dir(&dir)
        .env("HOME", &dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&report).unwrap())
        .stderr(Stdio::from(
            std::fs::File::options()
                .append(true)
                .open(&report)
                .unwrap(),
        ))
        .spawn()
        .expect("start schemathesis");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for schemathesis") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran longer than {RUN_LIMIT:?}:\n{}",
                std::fs::read_to_string(&report).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    eprintln!(
        "schemathesis: {} examples per operation, seed {seed}, {:.0?}: {}",
        examples,
        started.elapsed(),
        text.lines()
            .rev()
            .find(|l| l.contains(" in "))
            .unwrap_or("")
            .trim_matches(|c: char| c == '=' || c == ' ')
    );
    assert!(status.success(), "schemathesis failed ({status}):\n{text}");
    assert!(
        !server.logs().contains("panicked"),
        "a request panicked:\n{}",
        server.logs()
    );
    assert_eq!(
        server.get("/-/healthy").0,
        200,
        "heal still answers after the run"
    );
}
