//! Probes registered through the API (`PUT /api/v1/probes/NAME`), with the
//! real server: validated like the file's, stored, listed beside them, run
//! across a restart, audited, deleted with their alert resolved; a probe's
//! own `notify` channels; and `heal probes put` / `delete`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::notify::{Mode, Receiver};
use crate::support::{check_config, heal_cli, http, test_dir, wait_until, Server};
use crate::watch::{alerts_named, wait_alert};

fn put(server: &Server, name: &str, body: &str) -> (u16, Value) {
    let (code, text) = http(
        "PUT",
        &format!("{}/api/v1/probes/{name}", server.url),
        Some(body.as_bytes()),
        &[("Content-Type", "application/json")],
    );
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn delete(server: &Server, name: &str) -> (u16, Value) {
    let (code, text) = http(
        "DELETE",
        &format!("{}/api/v1/probes/{name}", server.url),
        None,
        &[],
    );
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn probe(server: &Server, name: &str) -> Value {
    server.get_ok(&format!("/api/v1/probes/{name}?limit=100"))["probe"].clone()
}

fn listed(server: &Server) -> Vec<Value> {
    server.get_ok("/api/v1/probes")["probes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn audit(server: &Server, action: &str) -> Vec<Value> {
    server.get_ok(&format!("/api/v1/audit?action={action}"))["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A file probe and a channel; the site answers `/health`.
fn config(site: &Receiver, hook: &Receiver) -> String {
    format!(
        r#"
[[probe]]
name = "from-file"
every = "1h"
http = {{ url = "{site}" }}

[channel.ops]
webhook = {{ url = "{hook}" }}
max_backoff = "1s"
rate_limit = "off"
"#,
        site = site.url("/health"),
        hook = hook.url("/hook"),
    )
}

#[test]
fn probes_register_list_replace_and_are_refused_with_the_field_named() {
    if crate::support::sqlite_only(
        "probes_api::probes_register_list_replace_and_are_refused_with_the_field_named",
    ) {
        return;
    }
    let dir = test_dir("probe-api");
    let (site, hook) = (Receiver::start(), Receiver::start());
    let server = Server::start(&dir, &config(&site, &hook));
    let body = json!({
        "http": { "url": site.url("/health"), "status": [200] },
        "every": "1h",
        "fail_after": 3,
        "tags": ["shop"],
        "description": "the checkout page",
        "notify": ["ops"],
    });
    let (code, answer) = put(&server, "checkout", &body.to_string());
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer, json!({"probe": "checkout", "created": true}));
    let p = probe(&server, "checkout");
    assert_eq!(p["source"], "api", "{p}");
    assert_eq!(p["type"], "http", "{p}");
    assert_eq!(p["fail_after"], 3, "{p}");
    assert_eq!(p["notify"], json!(["ops"]), "{p}");
    assert_eq!(p["description"], "the checkout page", "{p}");
    let sources: Vec<(String, String)> = listed(&server)
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            ("checkout".to_string(), "api".to_string()),
            ("from-file".to_string(), "config".to_string())
        ]
    );
    // PUT again replaces it.
    let replaced = json!({"tcp": {"addr": format!("127.0.0.1:{}", site.url("").rsplit(':').next().unwrap())}, "every": "2h"});
    let (code, answer) = put(&server, "checkout", &replaced.to_string());
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["created"], false);
    let p = probe(&server, "checkout");
    assert_eq!(p["type"], "tcp", "{p}");
    assert_eq!(p["schedule"], "every 2h", "{p}");
    assert_eq!(p["notify"], json!([]), "{p}");

    // Refused, each naming what is wrong.
    let http_probe = |extra: Value| {
        let mut b = json!({"http": {"url": "http://127.0.0.1:9/"}, "every": "1m"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    for (body, status, says) in [
        (http_probe(json!({"evil": 1})), 422, "evil"),
        (http_probe(json!({"timeout": "soon"})), 422, "timeout"),
        (http_probe(json!({"fail_after": 0})), 422, "fail_after"),
        (
            http_probe(json!({"http": {"url": "ftp://x"}})),
            422,
            "http.url",
        ),
        (
            http_probe(json!({"http": {"url": "http://x/", "method": "FETCH"}})),
            422,
            "http.method",
        ),
        (
            http_probe(json!({"http": {"url": "http://x/", "colour": "red"}})),
            422,
            "colour",
        ),
        (http_probe(json!({"labels": {"probe": "x"}})), 422, "labels"),
        (
            http_probe(json!({"notify": ["nope"]})),
            422,
            "notify: no [channel.nope] (channels: ops)",
        ),
        (http_probe(json!({"name": "other"})), 422, "other"),
        (
            http_probe(json!({"tcp": {"addr": "127.0.0.1:1"}})),
            422,
            "exactly one of",
        ),
        (
            json!({"command": {"run": "id"}, "every": "1m"}).to_string(),
            422,
            "command: ",
        ),
        (
            http_probe(
                json!({"http": {"url": "http://127.0.0.1:9/", "headers": {"X-Leak": "${HOME}"}}}),
            ),
            422,
            "http.headers.X-Leak",
        ),
        (
            json!({"sql": {"url": "postgres://heal:${HOME}@127.0.0.1:9/x", "query": "SELECT 1", "expect": "> 0"}, "every": "1m"}).to_string(),
            422,
            "sql.url: ${...} reads heal's environment",
        ),
        (
            json!({"sql": {"url": "sqlite:///var/lib/heal/heal.db", "query": "SELECT 1", "expect": "> 0"}, "every": "1m"}).to_string(),
            422,
            "sql.url: a SQLite file is read on heal's own host",
        ),
        (
            json!({"graphite": {"url": "http://u:${HOME}@127.0.0.1:9/", "target": "a.b", "expect": "< 1"}, "every": "1m"}).to_string(),
            422,
            "graphite.url: ${...} reads heal's environment",
        ),
        (
            json!({"graphite": {"url": "http://127.0.0.1:9/", "target": "a.b", "expect": "< 1", "aggregate": "sum"}, "every": "1m"}).to_string(),
            422,
            "graphite.aggregate: \"sum\" is not an aggregate",
        ),
        (
            json!({"prometheus": {"url": "http://127.0.0.1:9/", "query": "up", "expect": "< 85", "warn": "> 70"}, "every": "1m"}).to_string(),
            422,
            "prometheus.warn: \"> 70\" must be on the same side as expect = \"< 85\"",
        ),
        (
            http_probe(json!({"http": {"url": "http://127.0.0.1:9/", "warn_latency": "1s"}})),
            422,
            "http.warn_latency: needs max_latency",
        ),
        ("[1, 2]".to_string(), 422, "JSON object"),
        ("{\"http\": ".to_string(), 400, "malformed JSON"),
    ] {
        let (code, answer) = put(&server, "bad", &body);
        assert_eq!(code, status, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body}: {error}");
    }
    let (code, answer) = put(&server, "bad%20name!", &http_probe(json!({})));
    assert_eq!(code, 400, "{answer}");
    // A body past max_body (1 MiB) is refused from its Content-Length.
    let huge = http_probe(json!({"description": "x".repeat(2 << 20)}));
    assert_eq!(put(&server, "bad", &huge).0, 413);
    let (code, text) = http(
        "PUT",
        &format!("{}/api/v1/probes/bad", server.url),
        Some(http_probe(json!({})).as_bytes()),
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(code, 415, "{text}");
    assert_eq!(
        server.get("/api/v1/probes/bad").0,
        404,
        "nothing refused was kept"
    );

    // The file's probe is the file's.
    let (code, answer) = put(&server, "from-file", &http_probe(json!({})));
    assert_eq!(code, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("config file"));
    assert_eq!(delete(&server, "from-file").0, 409);
    assert_eq!(probe(&server, "from-file")["source"], "config");

    // Audited: who registered, replaced and deleted what.
    assert_eq!(delete(&server, "checkout").0, 200);
    assert_eq!(delete(&server, "checkout").0, 404);
    assert_eq!(server.get("/api/v1/probes/checkout").0, 404);
    let registered = audit(&server, "probe.registered");
    assert_eq!(registered.len(), 2, "{registered:?}");
    assert!(registered
        .iter()
        .all(|e| e["target"] == "/api/v1/probes/checkout" && e["actor"] == "local"));
    let deleted = audit(&server, "probe.deleted");
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["target"], "/api/v1/probes/checkout");

    // A reload whose file comes to define an API probe's name: the file's wins.
    assert_eq!(put(&server, "later", &http_probe(json!({}))).0, 201);
    let file = format!(
        "{}\n[[probe]]\nname = \"later\"\nevery = \"1h\"\ntcp = {{ addr = \"127.0.0.1:9\" }}\n",
        config(&site, &hook)
    );
    std::fs::write(dir.join("runbooks.toml"), file).unwrap();
    let (code, answer) = crate::reload::reload(&server);
    assert_eq!(code, 200, "{answer}");
    let p = probe(&server, "later");
    assert_eq!(
        (p["source"].as_str(), p["type"].as_str()),
        (Some("config"), Some("tcp")),
        "{p}"
    );
    assert!(server
        .logs()
        .contains("probe \"later\" registered through the API is now defined by the config file"));
}

#[test]
fn an_api_probe_runs_across_a_restart_notifies_its_channels_and_its_delete_resolves_it() {
    let dir = test_dir("probe-api-run");
    let (site, hook) = (Receiver::start(), Receiver::start());
    site.set(Mode::Status(503));
    // No [[notify]] route: only the probes' own `notify` sends anything.
    let file = format!(
        "{}\n[[probe]]\nname = \"file-notify\"\nevery = \"1s\"\nfail_after = 1\nnotify = [\"ops\"]\nhttp = {{ url = \"{}\" }}\n",
        config(&site, &hook),
        site.url("/file")
    );
    let mut server = Server::start(&dir, &file);
    let body = json!({
        "http": { "url": site.url("/health") },
        "every": "1s",
        "fail_after": 1,
        "notify": ["ops"],
    });
    assert_eq!(put(&server, "checkout", &body.to_string()).0, 201);
    wait_alert(
        &server,
        "ProbeFailing",
        "probe",
        "checkout",
        "firing",
        Duration::from_secs(10),
    );
    let downs = |hook: &Receiver, name: &str| {
        hook.on("/hook")
            .iter()
            .filter(|g| g.body["kind"] == "probe.down" && g.body["subject"] == name)
            .count()
    };
    wait_until(
        "both probes' probe.down at ops",
        Duration::from_secs(15),
        || (downs(&hook, "checkout") == 1 && downs(&hook, "file-notify") == 1).then_some(()),
    );
    // /metrics counts it with the file's.
    let (code, metrics) = http("GET", &format!("{}/metrics", server.url), None, &[]);
    assert_eq!(code, 200, "{metrics}");
    let gauge: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("heal_probes"))
        .collect();
    assert!(
        gauge.contains(&"heal_probes{state=\"down\"} 2"),
        "{gauge:?}"
    );

    // A restart keeps it, and runs it.
    assert_eq!(server.terminate(), Some(0));
    let before = probe_runs(&server);
    let server2 = Server::start(&dir, &file);
    server = server2;
    assert_eq!(probe(&server, "checkout")["source"], "api");
    wait_until(
        "the probe to run after the restart",
        Duration::from_secs(10),
        || (probe_runs(&server) > before + 1).then_some(()),
    );
    assert_eq!(downs(&hook, "checkout"), 1, "still firing: not told again");

    // Delete: it stops, its alert resolves, and ops hears it.
    let (code, answer) = delete(&server, "checkout");
    assert_eq!(code, 200, "{answer}");
    wait_alert(
        &server,
        "ProbeFailing",
        "probe",
        "checkout",
        "resolved",
        Duration::from_secs(10),
    );
    let up = hook.wait("/hook", 3, Duration::from_secs(15));
    assert!(
        up.iter()
            .any(|g| g.body["kind"] == "probe.up" && g.body["subject"] == "checkout"),
        "{:?}",
        up.iter().map(|g| &g.body["kind"]).collect::<Vec<_>>()
    );
    let runs = probe_runs(&server);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(probe_runs(&server), runs, "a deleted probe does not run");
    assert_eq!(server.get("/api/v1/probes/checkout").0, 404);
    let firing: Vec<Value> = alerts_named(&server, "ProbeFailing")
        .into_iter()
        .filter(|a| a["labels"]["probe"] == "checkout" && a["status"] == "firing")
        .collect();
    assert!(firing.is_empty(), "{firing:?}");
}

/// Runs of the API probe `checkout` so far, from the server's store.
fn probe_runs(server: &Server) -> i64 {
    server.store_query("SELECT count(*) FROM probe_result WHERE probe = 'checkout'")[0]
        .parse()
        .unwrap()
}

#[test]
fn a_file_probe_naming_an_unknown_channel_is_refused() {
    let dir = test_dir("probe-notify-file");
    let path = dir.join("runbooks.toml");
    std::fs::write(
        &path,
        "[channel.ops]\nwebhook = { url = \"http://127.0.0.1:9/\" }\n\n[[probe]]\nname = \"web\"\nevery = \"1m\"\nnotify = [\"pager\"]\nhttp = { url = \"http://127.0.0.1:9/\" }\n",
    )
    .unwrap();
    let (code, out, err) = check_config(&path);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("probe \"web\": notify: no [channel.pager] (channels: ops)"),
        "{err}"
    );
}

#[test]
fn heal_probes_put_and_delete() {
    let dir = test_dir("probe-cli");
    let (site, hook) = (Receiver::start(), Receiver::start());
    let server = Server::start(&dir, &config(&site, &hook));
    let toml = dir.join("checkout.toml");
    std::fs::write(
        &toml,
        format!(
            "every = \"1h\"\nnotify = [\"ops\"]\nhttp = {{ url = \"{}\", status = [200] }}\n",
            site.url("/health")
        ),
    )
    .unwrap();
    let json_file = dir.join("checkout.json");
    std::fs::write(
        &json_file,
        json!({"every": "2h", "tcp": {"addr": "127.0.0.1:9"}}).to_string(),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["probes"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &server.url]);
        heal_cli(&all, &[], None)
    };
    let (code, out, err) = cli(&["put", "checkout", "--file", toml.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "probe checkout registered");
    let p = probe(&server, "checkout");
    assert_eq!(
        (p["source"].as_str(), p["type"].as_str()),
        (Some("api"), Some("http")),
        "{p}"
    );
    assert_eq!(p["notify"], json!(["ops"]));
    let (code, out, err) = cli(&["put", "checkout", "--file", json_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "probe checkout replaced");
    assert_eq!(probe(&server, "checkout")["type"], "tcp");
    let (code, out, _) = cli(&["show", "checkout"]);
    assert_eq!(code, 0);
    assert!(out.contains("from api"), "{out}");
    // What the server refuses is an error naming the field.
    std::fs::write(
        &toml,
        "every = \"1h\"\nhttp = { url = \"http://x/\", verb = \"GET\" }\n",
    )
    .unwrap();
    let (code, _, err) = cli(&["put", "checkout", "--file", toml.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("verb"), "{err}");
    // Usage errors: exit 2.
    for args in [
        vec!["put", "checkout"],
        vec!["delete", "checkout", "--file", toml.to_str().unwrap()],
        vec!["put"],
        vec!["remove", "checkout"],
    ] {
        let (code, _, err) = cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    std::fs::write(&toml, "every = ").unwrap();
    let (code, _, err) = cli(&["put", "checkout", "--file", toml.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not TOML"), "{err}");
    let (code, out, err) = cli(&["delete", "checkout"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "probe checkout deleted");
    assert_eq!(server.get("/api/v1/probes/checkout").0, 404);
    let (code, _, err) = cli(&["delete", "checkout"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no probe"), "{err}");
}

/// A probe with `warn` beside `expect` on a SQLite value the test sets:
/// warning, then critical, then warning again is one ProbeFailing (one
/// fingerprint, never resolved in between) whose `severity` label moves,
/// told each time as probe.down with the new severity and the one before;
/// a route for critical ones hears only the escalation.
#[test]
fn a_probe_moves_between_warning_and_critical_without_resolving() {
    let dir = test_dir("probe-severity");
    let db = dir.join("app.db");
    let app = rusqlite::Connection::open(&db).unwrap();
    app.execute_batch("CREATE TABLE load (v REAL); INSERT INTO load VALUES (75);")
        .unwrap();
    let set = |v: f64| {
        app.execute("UPDATE load SET v = ?1", [v]).unwrap();
    };
    let (hook, pager) = (Receiver::start(), Receiver::start());
    let config = format!(
        r#"
[[probe]]
name = "load"
every = "1s"
fail_after = 1
sql = {{ url = "sqlite://{db}", query = "SELECT v FROM load", expect = "< 85", warn = "< 70" }}

[[rule]]
name = "on-critical"
when = "labels.alertname == 'ProbeFailing' && labels.severity == 'critical'"
action = "discard"

[channel.ops]
webhook = {{ url = "{hook}" }}
max_backoff = "1s"
rate_limit = "off"

[channel.pager]
webhook = {{ url = "{pager}" }}
max_backoff = "1s"
rate_limit = "off"

[[notify]]
when = "kind == 'probe.down' && severity == 'critical'"
channels = ["pager"]
continue = true

[[notify]]
when = "contains(['probe.down', 'probe.up'], kind)"
channels = ["ops"]
"#,
        db = db.display(),
        hook = hook.url("/hook"),
        pager = pager.url("/pager"),
    );
    let server = Server::start(&dir, &config);
    let alert = |severity: &str| {
        wait_until(
            &format!("ProbeFailing to be firing with severity {severity}"),
            Duration::from_secs(15),
            || {
                let all: Vec<Value> = alerts_named(&server, "ProbeFailing");
                let a = all.iter().find(|a| a["labels"]["severity"] == severity)?;
                (all.len() == 1 && a["status"] == "firing").then(|| a.clone())
            },
        )
    };
    let told = |n: usize| {
        wait_until(
            &format!("{n} probe notifications at ops"),
            Duration::from_secs(15),
            || {
                let got: Vec<Value> = hook.on("/hook").into_iter().map(|g| g.body).collect();
                (got.len() >= n).then_some(got)
            },
        )
    };
    let warning = alert("warning");
    let p = probe(&server, "load");
    assert_eq!(p["severity"], "warning");
    assert_eq!(
        (
            &p["recent_results"][0]["ok"],
            &p["recent_results"][0]["warning"]
        ),
        (&json!(false), &json!(true)),
        "{p}"
    );
    assert_eq!(
        probe(&server, "load")["last_detail"],
        "75, warning: expected < 70"
    );
    // The dashboard shows the severity beside the state.
    let (code, page) = http("GET", &format!("{}/probes", server.url), None, &[]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains(
            r#"<span class="badge bad">down</span> <span class="badge wait">warning</span>"#
        ),
        "{page}"
    );
    let (code, out, err) = heal_cli(&["probes", "--server", &server.url], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("down (warning)"), "{out}");
    let got = told(1);
    assert_eq!(
        (got[0]["kind"].as_str(), got[0]["severity"].as_str()),
        (Some("probe.down"), Some("warning"))
    );
    set(90.0);
    let critical = alert("critical");
    assert_eq!(critical["fingerprint"], warning["fingerprint"]);
    // A rule on the critical severity meets the alert at its escalation.
    assert!(
        !warning["decisions"].to_string().contains("on-critical"),
        "{warning}"
    );
    wait_until(
        "the rule on critical to decide",
        Duration::from_secs(10),
        || {
            let a = alerts_named(&server, "ProbeFailing");
            a[0]["decisions"]
                .to_string()
                .contains("on-critical")
                .then_some(())
        },
    );
    let got = told(2);
    assert_eq!(got[1]["kind"], "probe.down");
    assert_eq!(got[1]["severity"], "critical");
    assert_eq!(got[1]["probe"]["previous_severity"], "warning");
    set(75.0);
    alert("warning");
    let got = told(3);
    assert_eq!(
        (
            got[2]["severity"].as_str(),
            got[2]["probe"]["previous_severity"].as_str()
        ),
        (Some("warning"), Some("critical"))
    );
    set(10.0);
    wait_alert(
        &server,
        "ProbeFailing",
        "probe",
        "load",
        "resolved",
        Duration::from_secs(15),
    );
    let got = told(4);
    let kinds: Vec<&str> = got.iter().filter_map(|g| g["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["probe.down", "probe.down", "probe.down", "probe.up"]
    );
    assert_eq!(probe(&server, "load")["severity"], Value::Null);
    // The pager's route takes critical ones only: the escalation.
    let paged = wait_until("the pager to hear once", Duration::from_secs(10), || {
        let paged = pager.on("/pager");
        (!paged.is_empty()).then_some(paged)
    });
    assert_eq!(
        paged.len(),
        1,
        "{:?}",
        paged.iter().map(|g| &g.body).collect::<Vec<_>>()
    );
    assert_eq!(paged[0].body["severity"], "critical");
}
