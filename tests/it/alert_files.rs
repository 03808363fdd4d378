//! The agent's alert files (`HEAL_ALERT_JSON`): kept in a private directory
//! per agent, created new for each op, never written through something
//! planted at their path, and removed after a SIGKILL by the next start.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::agent::{fire, gone, only_op, path_str};
use crate::support::{one_rule_config, test_dir, wait_agent_polling, wait_until, Agent, Server};

/// The instance id the server knows for agent `id`.
fn instance(server: &Server, id: &str) -> String {
    let agents = server.get_ok("/api/v1/agents");
    agents["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["id"] == id)
        .and_then(|a| a["instance"].as_str())
        .unwrap_or_else(|| panic!("no agent {id}: {agents:#}"))
        .to_string()
}

pub(crate) fn ended(server: &Server, id: i64) -> Value {
    server.wait_event(
        id,
        &["succeeded", "failed", "timed_out", "lost"],
        Duration::from_secs(20),
    )
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_planted_symlink_or_open_file_at_an_alert_files_path_fails_the_op_and_is_not_used() {
    let dir = test_dir("alert-files-planted");
    let state = dir.join("state");
    let config = one_rule_config(
        r#"{ name = "show", run = 'touch "$HEAL_LABEL_MARK"; stat -c %a "$(dirname "$HEAL_ALERT_JSON")" "$HEAL_ALERT_JSON"; echo "$HEAL_ALERT_JSON"' }"#,
        "",
    );
    let server = Server::start(&dir, &config);
    let _agent = Agent::start(
        &server.url,
        "web-1",
        &["--allow", "fix", "--state-dir", &path_str(&state)],
    );
    wait_agent_polling(&server, "web-1");
    let own = state.join(instance(&server, "web-1"));
    let mode = std::fs::symlink_metadata(&own).unwrap().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", own.display());

    // What another user would plant if they could enter the directory: a
    // symlink to a file the root agent would overwrite, and a file anyone may
    // read and change. The first ops of a fresh server are 1 and 2.
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, own.join("op-1.json")).unwrap();
    let open = own.join("op-2.json");
    std::fs::write(&open, "planted").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();

    for (n, planted) in [(1, &victim), (2, &open)] {
        let mark = dir.join(format!("mark-{n}"));
        let id = fire(
            &server,
            json!({ "instance": "web-1", "mark": path_str(&mark) }),
        );
        let event = ended(&server, id);
        let op = only_op(&event);
        assert_eq!(op["id"], n, "{event:#}");
        assert_eq!(event["state"], "failed", "{event:#}");
        assert!(
            op["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("op-{n}.json already exists"))),
            "{op:#}"
        );
        assert!(!mark.exists(), "the step ran with a planted alert file");
        let kept = std::fs::read_to_string(planted).unwrap();
        assert!(kept == "precious" || kept == "planted", "{kept:?}");
    }

    // A clean path: a new 0600 file in the 0700 directory, removed after.
    let mark = dir.join("mark-3");
    let id = fire(
        &server,
        json!({ "instance": "web-1", "mark": path_str(&mark) }),
    );
    let event = ended(&server, id);
    assert_eq!(event["state"], "succeeded", "{event:#}");
    let output = only_op(&event)["steps"][0]["output"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let file = own.join("op-3.json");
    assert_eq!(output, format!("700\n600\n{}\n", file.display()));
    assert!(!file.exists());
}

#[test]
fn an_agent_killed_mid_step_leaves_no_alert_file_once_it_restarts() {
    let dir = test_dir("alert-files-kill");
    let state = dir.join("state");
    let mark = dir.join("mark");
    let config = one_rule_config(
        r#"{ name = "slow", run = 'touch "$HEAL_LABEL_MARK"; sleep 3' }"#,
        "",
    );
    let server = Server::start(&dir, &config);
    let flags = ["--allow", "fix", "--state-dir", &path_str(&state)];
    let mut agent = Agent::start(&server.url, "web-1", &flags);
    wait_agent_polling(&server, "web-1");
    let old = state.join(instance(&server, "web-1"));
    let id = fire(
        &server,
        json!({ "instance": "web-1", "mark": path_str(&mark), "secret": "s3cr3t" }),
    );
    wait_until("the step to start", Duration::from_secs(20), || {
        mark.exists().then_some(())
    });
    let op = only_op(&server.event(id))["id"].as_i64().unwrap();
    let file = old.join(format!("op-{op}.json"));
    assert!(std::fs::read_to_string(&file).unwrap().contains("s3cr3t"));
    agent.kill();
    assert!(file.exists(), "SIGKILL leaves the alert file behind");

    let _next = Agent::start(&server.url, "web-1", &flags);
    wait_until(
        "the restarted agent to poll",
        Duration::from_secs(20),
        || (instance(&server, "web-1") != old.file_name().unwrap().to_str().unwrap()).then_some(()),
    );
    wait_agent_polling(&server, "web-1");
    assert!(!old.exists(), "{} is still there", old.display());
    assert_eq!(files_under(&state), Vec::<PathBuf>::new());
    // Nor in the temp dir, where alert files used to go.
    let instance = old.file_name().unwrap().to_str().unwrap();
    let stray = std::env::temp_dir().join(format!("heal-op-{op}-{instance}.json"));
    assert!(!stray.exists(), "{}", stray.display());
}

#[test]
fn a_state_directory_someone_else_owns_or_may_enter_is_refused() {
    let dir = test_dir("alert-files-refused");
    let server = Server::start(
        &dir,
        &one_rule_config(r#"{ name = "x", run = "true" }"#, ""),
    );
    let foreign = dir.join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
    // SAFETY: chown(2) of a directory this test made, with a NUL-terminated path.
    let path = std::ffi::CString::new(path_str(&foreign)).unwrap();
    assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    for (state, why) in [
        (&foreign, "is owned by uid 65534"),
        (&open, "has mode 755"),
        (&link, "is a symbolic link"),
    ] {
        let agent = Agent::start(&server.url, "web-1", &["--state-dir", &path_str(state)]);
        let pid = agent.pid() as i32;
        wait_until(
            "the agent to refuse its state dir",
            Duration::from_secs(10),
            || (gone(pid) && agent.logs().contains(why)).then_some(()),
        );
        let err = agent.logs();
        assert!(err.contains("--state-dir"), "{err}");
        assert!(!err.contains("polling"), "{err}");
    }
}
