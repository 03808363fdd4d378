//! The CLI: check-config, run-rule, exit codes, and the thin clients.

use serde_json::Value;

use crate::support::{heal_cli, test_dir, Server};

#[test]
fn check_config_accepts_the_example_and_names_errors() {
    let (code, out, err) = heal_cli(&["check-config", "--config", "runbooks.toml"], &[], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 3 rules"), "{out}");

    let dir = test_dir("check-config");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"broken\"\nwhen = \"labels.[\"\naction = \"discard\"\n",
    )
    .unwrap();
    let (code, _, err) = heal_cli(
        &["check-config", "--config", bad.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.toml:3: rule \"broken\": when:"), "{err}");

    let (code, _, err) = heal_cli(
        &[
            "check-config",
            "--config",
            dir.join("missing.toml").to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot read config"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let (code, _, err) = heal_cli(&["frobnicate"], &[], None);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = heal_cli(&["--help"], &[], None);
    assert_eq!(code, 0);
    assert!(out.contains("run-rule"), "{out}");
    let (code, _, err) = heal_cli(&["events", "show", "abc"], &[], None);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn run_rule_traces_decision_and_environment_without_running() {
    let (code, out, err) = heal_cli(
        &[
            "run-rule",
            "--config",
            "runbooks.toml",
            "tests/fixtures/alertmanager/group_firing.json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("rule \"service-down\"") && l.contains(" match when")),
        "{out}"
    );
    assert!(out.contains("decision: run"), "{out}");
    assert!(out.contains("target: web-1"), "{out}");
    assert!(out.contains("HEAL_PARAM_SERVICE='nginx'"), "{out}");
    assert!(
        out.contains("decision: discard: no rule matched"),
        "web-2 is only a warning: {out}"
    );

    // Heal's own format from stdin, as JSON, with a hostile label shown, not run.
    let dir = test_dir("run-rule");
    let marker = dir.join("pwned");
    let alert = format!(
        r#"{{"name": "DiskSpaceLow", "labels": {{"instance": "web-1", "evil": "$(touch {})"}}}}"#,
        marker.display()
    );
    let (code, out, err) = heal_cli(
        &["run-rule", "--config", "runbooks.toml", "--json", "-"],
        &[],
        Some(&alert),
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let d = &v["alerts"][0]["decisions"][0];
    assert_eq!(d["outcome"], "run");
    assert_eq!(d["key"], r#"["DiskSpaceLow","web-1"]"#);
    assert!(d["environment"]
        .as_array()
        .unwrap()
        .iter()
        .any(|kv| kv[0] == "HEAL_LABEL_EVIL"));
    assert!(!marker.exists(), "run-rule executes nothing");

    let (code, _, err) = heal_cli(
        &["run-rule", "--config", "runbooks.toml", "-"],
        &[],
        Some("{not json"),
    );
    assert_eq!(code, 2);
    assert!(err.contains("not JSON"), "{err}");
}

#[test]
fn events_and_agents_commands_show_server_state() {
    let dir = test_dir("cli-events");
    let server = Server::start_with(
        &dir,
        &std::fs::read_to_string(crate::support::repo().join("runbooks.toml")).unwrap(),
        "127.0.0.1:0",
        &["--local-agent", "--local-agent-id", "demo"],
    );
    crate::support::wait_agent_polling(&server, "demo");
    let (code, out, err) = heal_cli(
        &[
            "fire",
            "DiskSpaceLow",
            "instance=demo",
            "mountpoint=/tmp",
            "--server",
            &server.url,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    server.wait_event(1, &["succeeded"], std::time::Duration::from_secs(20));
    let (code, out, err) = heal_cli(&["events", "show", "1", "--server", &server.url], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("event 1  succeeded  rule disk-space-low"),
        "{out}"
    );
    assert!(out.contains("step \"clean\": exit 0"), "{out}");
    assert!(
        out.contains("| removed 0 files older than a day") || out.contains("| removed"),
        "{out}"
    );
    let (code, out, _) = heal_cli(&["events", "--server", &server.url], &[], None);
    assert_eq!(code, 0);
    assert!(out.contains("succeeded"), "{out}");
    let (code, out, _) = heal_cli(&["agents", "--json", "--server", &server.url], &[], None);
    assert_eq!(code, 0);
    let agents: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(agents[0]["id"], "demo");
    let (code, _, err) = heal_cli(&["events", "--server", "http://127.0.0.1:9"], &[], None);
    assert_eq!(code, 1, "an unreachable server is an operation failure");
    assert!(err.contains("cannot reach heal"), "{err}");
}

/// `heal status` and `/api/v1/status`: one server, which leads (on a
/// SQLite file always; on PostgreSQL once it holds the lease), its store,
/// version and config version.
#[test]
fn status_shows_the_server_and_that_it_leads() {
    let dir = test_dir("cli-status");
    let server = Server::start(
        &dir,
        &crate::support::one_rule_config(r#"{ name = "ok", run = "true" }"#, ""),
    );
    let store = if crate::support::on_postgres() {
        "postgresql"
    } else {
        "sqlite"
    };
    let status = crate::support::wait_until(
        "the server to lead and list itself",
        std::time::Duration::from_secs(15),
        || {
            let s = server.get_ok("/api/v1/status");
            (s["server"]["leads"] == true && s["replicas"].as_array()?.len() == 1).then_some(s)
        },
    );
    assert_eq!(status["server"]["store"], store);
    assert_eq!(status["server"]["address"], server.url.as_str());
    assert_eq!(status["server"]["config_version"], 1);
    let me = &status["replicas"][0];
    assert_eq!(me["id"], status["server"]["id"]);
    assert_eq!(
        (
            me["leader"].clone(),
            me["up"].clone(),
            me["config_differs"].clone()
        ),
        (Value::Bool(true), Value::Bool(true), Value::Bool(false))
    );
    let (code, out, err) = heal_cli(&["status", "--server", &server.url], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{store} store, leads, config version 1")),
        "{out}"
    );
    assert!(out.contains(&server.url) && out.contains(" up "), "{out}");
    let (code, out, _) = heal_cli(&["status", "--json", "--server", &server.url], &[], None);
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["server"]["id"], status["server"]["id"]);
}

/// Without `--db`, `HEAL_DB` names the store (as a unit's `EnvironmentFile=`
/// may set it), before `[server] db`.
#[test]
fn heal_db_names_the_store_when_db_is_not_given() {
    let test = "cli::heal_db_names_the_store_when_db_is_not_given";
    if crate::support::sqlite_only(test) {
        return;
    }
    let dir = test_dir("cli-heal-db");
    let db = dir.join("from-env.db");
    let config = dir.join("runbooks.toml");
    std::fs::write(&config, "[server]\ndb = \"from-config.db\"\n").unwrap();
    let mut child = std::process::Command::new(crate::support::heal_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("HEAL_DB", &db)
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn heal serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !db.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        db.exists(),
        "heal serve made no store at HEAL_DB within 15 s"
    );
    assert!(!dir.join("from-config.db").exists());
}

/// A command whose reader has gone (`heal check-config | head -1`, with the
/// pipe already closed) ends by SIGPIPE, as other Unix tools do, and never
/// panics.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::ExitStatusExt;
    for args in [
        &["check-config", "--config", "runbooks.toml"][..],
        &["--help"][..],
        &["--version"][..],
    ] {
        let mut fds = [0; 2];
        // SAFETY: pipe fills two descriptors, each owned by one File below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read, write) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        drop(read);
        let out = std::process::Command::new(crate::support::heal_bin())
            .args(args)
            .current_dir(crate::support::repo())
            .stdin(std::process::Stdio::null())
            .stdout(write)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run heal");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

/// A bare `true`, `false` or `null` in an expression is a field lookup
/// (null), not the literal: `check-config` warns with file, line, item and
/// the fix, in rules, routes and sources, and the server logs the same at
/// start and on reload. Backticked literals, and fields of an object that
/// happen to be named so, are not warned about.
#[test]
fn check_config_warns_about_a_bare_true_false_or_null() {
    let dir = test_dir("check-config-literals");
    let file = dir.join("runbooks.toml");
    let config = r#"[[rule]]
name = "always"
when = "true"
action = "discard"

[[rule]]
name = "flagged"
when = "labels.page == false && labels.x != `null`"
action = "discard"

[[rule]]
name = "fine"
when = "`true` && labels.true == 'yes'"
action = "discard"

[[source]]
name = "hook"
alert_name = "name"
labels = "{sev: null}"

[channel.chat]
webhook = { url = "http://127.0.0.1:9/hook" }

[[notify]]
when = "true"
channels = ["chat"]
"#;
    std::fs::write(&file, config).unwrap();
    let (code, out, err) = crate::support::check_config(&file);
    assert_eq!(code, 0, "a warning does not fail the check: {out}{err}");
    let shown = file.display().to_string();
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning: ")).collect();
    for (line, item, field, name) in [
        (3, "rule \"always\"", "when", "true"),
        (8, "rule \"flagged\"", "when", "false"),
        (19, "source \"hook\"", "labels", "null"),
        (25, "notify route at line 24", "when", "true"),
    ] {
        let head = format!("warning: {shown}:{line}: {item}");
        assert!(
            warnings.iter().any(|w| w.starts_with(&head)
                && w.contains(&format!(": {field} \""))
                && w.contains(&format!("for the literal write `{name}`"))),
            "no warning for {item} {field} on line {line}:\n{out}"
        );
    }
    assert_eq!(warnings.len(), 4, "nothing else is warned about:\n{out}");

    let server = Server::start(&dir, config);
    let started = server.logs();
    assert!(
        started.contains(&format!(
            "config: {shown}:3: rule \"always\": when \"true\": a bare true"
        )),
        "{started}"
    );
    std::fs::write(
        &file,
        config.replace("when = \"true\"\naction", "when = \"null\"\naction"),
    )
    .unwrap();
    let (status, body) = crate::reload::reload(&server);
    assert_eq!(status, 200, "{body}");
    let reloaded = server.logs();
    assert!(
        reloaded.contains(&format!(
            "config: {shown}:3: rule \"always\": when \"null\": a bare null"
        )),
        "{reloaded}"
    );
}

#[test]
fn run_rule_shows_each_steps_directory_env_names_retries_and_cleanup() {
    let dir = test_dir("run-rule-steps");
    let config = dir.join("runbooks.toml");
    std::fs::write(
        &config,
        r#"
[[rule]]
name = "fix"
when = "labels.alertname == 'Down'"
runbook = "restart"
target = "labels.instance"

[runbook.restart]
env = { SERVICE = "shop" }
cwd = "/srv/shop"
steps = [
  { name = "restart", run = "systemctl restart shop", env = { TOKEN = "${SHOP_TOKEN}" }, retries = 2, retry_delay = "5s" },
  { name = "check", run = "curl -fsS localhost:8080/health", cwd = "/tmp", when = "steps.restart.status == 'succeeded'", env_files = ["/etc/heal/shop.env"] },
]
on_failure = [ { name = "diagnose", run = "journalctl -u shop -n 50" } ]
"#,
    )
    .unwrap();
    let out = run_rule_shows(
        &config,
        &[
            "step \"restart\": sh -c \"systemctl restart shop\" (timeout 5m, in /srv/shop, env SERVICE TOKEN (values read on the agent), 2 retries 5s apart)",
            "step \"check\": sh -c \"curl -fsS localhost:8080/health\" (timeout 5m, in /tmp, env SERVICE (values read on the agent), secrets from /etc/heal/shop.env (read on the agent), only when `steps.restart.status == 'succeeded'` (read on the agent when its turn comes))",
            "on failure \"diagnose\": sh -c \"journalctl -u shop -n 50\" (timeout 5m, in /srv/shop, env SERVICE (values read on the agent))",
        ],
    );
    assert!(!out.contains("${SHOP_TOKEN}"), "values stay out: {out}");
}

#[test]
fn run_rule_shows_each_steps_user_and_check_config_names_a_bad_one() {
    let dir = test_dir("run-rule-user");
    let config = dir.join("runbooks.toml");
    let write = |check_user: &str| {
        std::fs::write(
            &config,
            format!(
                r#"[[rule]]
name = "fix"
when = "labels.alertname == 'Down'"
runbook = "restart"
target = "labels.instance"

[runbook.restart]
user = "deploy"
steps = [
  {{ name = "restart", run = "systemctl restart shop" }},
  {{ name = "check", run = "curl -fsS localhost:8080/health", user = "{check_user}", group = "adm" }},
]
on_failure = [ {{ name = "diagnose", run = "journalctl -u shop -n 50" }} ]
"#
            ),
        )
        .unwrap();
    };
    write("www-data");
    run_rule_shows(
        &config,
        &[
            "step \"restart\": sh -c \"systemctl restart shop\" (timeout 5m, as user deploy)",
            "step \"check\": sh -c \"curl -fsS localhost:8080/health\" (timeout 5m, as user www-data (group adm))",
            "on failure \"diagnose\": sh -c \"journalctl -u shop -n 50\" (timeout 5m, as user deploy)",
        ],
    );
    write("www data");
    let (code, _, err) = crate::support::check_config(&config);
    assert_eq!(code, 2, "{err}");
    let expected = format!(
        "{}:11: runbook \"restart\" step \"check\": user: \"www data\" is not a user or group name",
        config.display()
    );
    assert!(err.contains(&expected), "{expected}\nnot in:\n{err}");
}

/// `heal run-rule` of a `Down` alert on `config`: its output, which holds each of `lines`.
fn run_rule_shows(config: &std::path::Path, lines: &[&str]) -> String {
    let alert = r#"{"name": "Down", "labels": {"instance": "web-1"}}"#;
    let (code, out, err) = heal_cli(
        &["run-rule", "--config", config.to_str().unwrap(), "-"],
        &[],
        Some(alert),
    );
    assert_eq!(code, 0, "{err}");
    for line in lines {
        assert!(out.contains(line), "{line}\nnot in:\n{out}");
    }
    out
}
