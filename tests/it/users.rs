//! Steps run as another user (`user`, `group`, `heal agent --allow-users`):
//! the step gets that user's ids, groups and HOME, reads its alert file
//! while another user cannot, and an agent that may not use the user
//! refuses the whole op with the reason on the event.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent::{only_op, path_str};
use crate::support::{self, test_dir, wait_agent_polling, wait_until, Agent, Server};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `getent passwd NAME`: uid, gid and home.
fn passwd(name: &str) -> Option<(u32, u32, String)> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let f: Vec<&str> = line.split(':').collect();
    Some((
        f.get(2)?.parse().ok()?,
        f.get(3)?.parse().ok()?,
        f.get(5)?.to_string(),
    ))
}

/// `getent group NAME`: its gid.
fn group_gid(name: &str) -> Option<u32> {
    let out = Command::new("getent").args(["group", name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)?
        .trim()
        .parse()
        .ok()
}

/// A system user (or group) for a test: made with useradd/groupadd when
/// missing and then removed on drop; one that exists already is reused
/// and left alone.
struct Account {
    name: String,
    group: bool,
    made: bool,
}

impl Account {
    fn group(name: &str) -> Account {
        let made = group_gid(name).is_none();
        if made {
            let ok = Command::new("groupadd").args(["--system", name]).status();
            assert!(ok.is_ok_and(|s| s.success()), "groupadd --system {name}");
        }
        Account {
            name: name.into(),
            group: true,
            made,
        }
    }

    /// The user `name`, member of `groups` (comma-separated) when made here.
    fn user(name: &str, groups: &str) -> Account {
        let made = passwd(name).is_none();
        if made {
            let mut cmd = Command::new("useradd");
            cmd.args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .args(["--home-dir", &format!("/nonexistent/{name}")]);
            if !groups.is_empty() {
                cmd.args(["--groups", groups]);
            }
            let ok = cmd.arg(name).status();
            assert!(ok.is_ok_and(|s| s.success()), "useradd --system {name}");
        }
        Account {
            name: name.into(),
            group: false,
            made,
        }
    }

    fn ids(&self) -> (u32, u32, String) {
        passwd(&self.name).unwrap_or_else(|| panic!("user {} exists", self.name))
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        if self.made {
            let tool = if self.group { "groupdel" } else { "userdel" };
            let _ = Command::new(tool).arg(&self.name).status();
        }
    }
}

/// `id -G NAME` as a sorted list.
fn groups_of(name: &str) -> Vec<u32> {
    let out = Command::new("id")
        .args(["-G", name])
        .output()
        .expect("id -G");
    sorted_ids(&String::from_utf8_lossy(&out.stdout))
}

fn sorted_ids(text: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = text
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// One rule per case (`labels.case`), each running the runbook of that name.
fn cases_config(runbooks: &[(&str, &str)]) -> String {
    let mut config = "[server]\nkill_grace = \"1s\"\nlease = \"5s\"\n".to_string();
    for (name, body) in runbooks {
        config.push_str(&format!(
            "\n[[rule]]\nname = \"{name}\"\nwhen = \"labels.case == '{name}'\"\nrunbook = \"{name}\"\ntarget = \"labels.instance\"\n\n[runbook.{name}]\ntimeout = \"20s\"\n{body}\n"
        ));
    }
    config
}

/// Fires the alert of one case and waits for its event to end.
fn run_case(server: &Server, case: &str) -> Value {
    let labels = json!({ "instance": "agent-u", "case": case });
    let (status, body) = server.post("/api/v1/alerts", &json!({ "name": "X", "labels": labels }));
    assert_eq!(status, 200, "{body}");
    let id = body["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no event for case {case}: {body}"));
    let ended = ["succeeded", "failed", "timed_out", "lost"];
    server.wait_event(id, &ended, Duration::from_secs(30))
}

/// The op's error, after checking that none of its steps ran.
fn refused(event: &Value, marker: &Path) -> String {
    assert_eq!(event["state"], "failed", "{event:#}");
    let op = only_op(event);
    assert!(op["steps"].as_array().is_some_and(Vec::is_empty), "{op:#}");
    assert!(!marker.exists(), "a step of a refused op ran");
    op["error"].as_str().unwrap_or_default().to_string()
}

#[test]
#[ignore = "needs root, to create test users and start steps as them; cargo test -- --include-ignored runs it, as .ci/run does"]
fn a_step_runs_as_its_user_with_its_groups_and_home_and_only_it_reads_the_alert() {
    const TEST: &str =
        "users::a_step_runs_as_its_user_with_its_groups_and_home_and_only_it_reads_the_alert";
    if !is_root() {
        return support::skip(TEST, "root, to create test users");
    }
    let _grp = Account::group("heal-it-grp");
    let alice = Account::user("heal-it-alice", "heal-it-grp");
    let bob = Account::user("heal-it-bob", "");
    let (uid, gid, home) = alice.ids();
    let (bob_uid, bob_gid, _) = bob.ids();
    let grp_gid = group_gid("heal-it-grp").expect("the group exists");
    let dir = test_dir("users-run-as");
    // A directory alice may write, and one she may not enter.
    let drop_box = dir.join("drop");
    let closed = dir.join("closed");
    std::fs::create_dir(&drop_box).unwrap();
    std::os::unix::fs::chown(&drop_box, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&drop_box, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let d = path_str(&drop_box);
    let steps = format!(
        r#"steps = [
  {{ name = "agent", run = "id -u" }},
  {{ name = "who", user = "heal-it-alice", run = "id -u; id -g; id -G; printf '%s %s %s\n' \"$HOME\" \"$USER\" \"$LOGNAME\"; echo \"$HEAL_ALERT_JSON\"; cat \"$HEAL_ALERT_JSON\"" }},
  {{ name = "grp", user = "heal-it-alice", group = "heal-it-grp", run = "id -g" }},
  {{ name = "hold", user = "heal-it-alice", run = "readlink \"$HEAL_ALERT_JSON\" > {d}/path; i=0; while [ ! -e {d}/done ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done; echo held" }},
  {{ name = "closed", user = "heal-it-alice", cwd = "{}", run = "echo never", continue_on_error = true }},
  {{ name = "slow", user = "heal-it-alice", run = "sleep 30 & sleep 30", timeout = "1s" }},
]"#,
        path_str(&closed)
    );
    let server = Server::start(&dir, &cases_config(&[("as", &steps)]));
    let _agent = Agent::start(
        &server.url,
        "agent-u",
        &["--allow", "*", "--allow-users", "heal-it-alice"],
    );
    wait_agent_polling(&server, "agent-u");
    let event = std::thread::scope(|s| {
        let run = s.spawn(|| run_case(&server, "as"));
        // While `hold` runs: its alert file is alice's, 0400, and nobody
        // reaches it by its path (bob, or alice herself: only the descriptor).
        let path = wait_until(
            "the step to name its alert file",
            Duration::from_secs(20),
            || {
                std::fs::read_to_string(drop_box.join("path"))
                    .ok()
                    .filter(|p| p.ends_with('\n'))
            },
        );
        let path = path.trim();
        let meta = std::fs::symlink_metadata(path).expect("the alert file exists");
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (uid, 0o400), "{path}");
        for (who, u, g) in [("bob", bob_uid, bob_gid), ("alice", uid, gid)] {
            let read = Command::new("cat")
                .arg(path)
                .uid(u)
                .gid(g)
                .output()
                .unwrap();
            assert!(!read.status.success(), "{who} read {path} by its path");
            assert!(read.stdout.is_empty());
        }
        std::fs::write(drop_box.join("done"), "").unwrap();
        run.join().expect("the alert's event ends")
    });
    let steps = &only_op(&event)["steps"];
    let output = |i: usize| steps[i]["output"].as_str().unwrap_or_default().to_string();
    assert_eq!(output(0), "0\n", "{event:#}");
    let who = output(1);
    let lines: Vec<&str> = who.lines().collect();
    assert_eq!(lines[0], uid.to_string(), "{who}");
    assert_eq!(lines[1], gid.to_string(), "{who}");
    assert_eq!(sorted_ids(lines[2]), groups_of("heal-it-alice"), "{who}");
    assert!(sorted_ids(lines[2]).contains(&grp_gid), "{who}");
    assert!(
        !sorted_ids(lines[2]).contains(&0),
        "root's group kept: {who}"
    );
    assert_eq!(
        lines[3],
        format!("{home} heal-it-alice heal-it-alice"),
        "{who}"
    );
    assert!(lines[4].starts_with("/dev/fd/"), "{who}");
    assert!(
        who.contains(r#""instance":"agent-u""#),
        "alert not read: {who}"
    );
    assert_eq!(output(2), format!("{grp_gid}\n"), "{event:#}");
    assert_eq!(output(3), "held\n", "{event:#}");
    let closed_out = output(4);
    assert!(
        closed_out.contains(&format!(
            "user heal-it-alice cannot enter cwd {}",
            closed.display()
        )) && closed_out.contains("ermission denied"),
        "{closed_out}"
    );
    assert!(!closed_out.contains("never"));
    assert_eq!(steps[5]["timed_out"], true, "{event:#}");
    assert!(
        steps[5]["duration_ms"].as_u64().unwrap() < 10_000,
        "{event:#}"
    );
    assert_eq!(event["state"], "timed_out", "{event:#}");
    // The copies made for alice are gone with the op.
    let lingering = std::fs::read_to_string(drop_box.join("path")).unwrap();
    assert!(!Path::new(lingering.trim()).exists(), "{lingering}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root, to look up users an agent as root may start steps as; cargo test -- --include-ignored runs it, as .ci/run does"]
fn a_user_the_agent_may_not_use_fails_the_op_before_any_step_with_the_reason() {
    const TEST: &str =
        "users::a_user_the_agent_may_not_use_fails_the_op_before_any_step_with_the_reason";
    if !is_root() {
        return support::skip(TEST, "root, for an agent that may change users");
    }
    let dir = test_dir("users-refused");
    let marker = dir.join("ran");
    let first = format!(
        "{{ name = \"first\", run = \"touch {}\" }}",
        path_str(&marker)
    );
    let case = |user: &str| {
        format!("steps = [ {first}, {{ name = \"as\", {user}, run = \"echo never\" }} ]")
    };
    let config = cases_config(&[
        ("unlisted", &case("user = \"daemon\"")),
        ("unknown", &case("user = \"heal-no-such-user\"")),
        (
            "nogroup",
            &case("user = \"nobody\", group = \"heal-no-such-group\""),
        ),
        ("notmine", &case("user = \"nobody\", group = \"root\"")),
    ]);
    let server = Server::start(&dir, &config);
    let agent = Agent::start(
        &server.url,
        "agent-u",
        &["--allow", "*", "--allow-users", "nobody,heal-no-such-user"],
    );
    wait_agent_polling(&server, "agent-u");
    for (case, says) in [
        (
            "unlisted",
            "user \"daemon\" is not in this agent's --allow-users (nobody,heal-no-such-user)",
        ),
        (
            "unknown",
            "user \"heal-no-such-user\" does not exist on this agent",
        ),
        (
            "nogroup",
            "group \"heal-no-such-group\" does not exist on this agent",
        ),
        (
            "notmine",
            "group \"root\" is not one of user \"nobody\"'s groups",
        ),
    ] {
        let error = refused(&run_case(&server, case), &marker);
        assert!(
            error.contains("agent agent-u refuses step \"as\": ") && error.contains(says),
            "{case}: {says:?} not in {error:?}"
        );
    }
    assert!(agent.logs().contains("refuses step"), "{}", agent.logs());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An agent that does not run as root (as root, the test starts it as
/// nobody) refuses a runbook asking for another user, even one it allows.
#[test]
fn an_agent_not_running_as_root_refuses_another_user() {
    let dir = test_dir("users-not-root");
    let marker = dir.join("ran");
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let nobody = passwd("nobody").filter(|_| is_root());
    if let Some((uid, gid, _)) = nobody {
        std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    }
    let steps = format!(
        "steps = [ {{ name = \"first\", run = \"touch {}\" }}, {{ name = \"as\", user = \"root\", run = \"echo never\" }} ]",
        path_str(&marker)
    );
    let server = Server::start(&dir, &cases_config(&[("root", &steps)]));
    let state_arg = path_str(&state);
    let _agent = Agent::start_with(
        &support::repo(),
        &server.url,
        "agent-u",
        &[
            "--allow",
            "*",
            "--allow-users",
            "root",
            "--state-dir",
            &state_arg,
        ],
        |cmd| {
            if let Some((uid, gid, _)) = nobody {
                cmd.uid(uid).gid(gid);
            }
        },
    );
    wait_agent_polling(&server, "agent-u");
    let started = Instant::now();
    let error = refused(&run_case(&server, "root"), &marker);
    assert!(
        error.contains("refuses step \"as\": this agent runs as uid ")
            && error.contains("not root: it cannot start a step as user \"root\" (uid 0)"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn allow_users_takes_only_user_names() {
    let (code, _, err) = support::heal_cli(
        &[
            "agent",
            "--server",
            "http://127.0.0.1:1",
            "--allow-users",
            "deploy,a b",
        ],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--allow-users: \"a b\" is not a user or group name"),
        "{err}"
    );
}
