//! The email channel end to end: the real server and agents, and a real
//! SMTP server (aiosmtpd, `tests/smtp_server.py`) on 127.0.0.1 with STARTTLS
//! (a CA made at test time) and AUTH with a known user. Checks the envelope,
//! STARTTLS before AUTH, the headers, both parts, the threading of an
//! event's mails, and that a server down or a wrong password is retried
//! until the mail goes. Bad configs name the field.
//!
//! `.ci/run` installs the pinned aiosmtpd and names its Python in
//! `HEAL_AIOSMTPD`; without it the tests are skipped with a loud message,
//! and under `CI=true` they fail.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    free_port, heal_bin, heal_cli, skip, test_dir, wait_agent_polling, wait_until, Agent, Server,
};

const USER: &str = "heal-mailer";
const PASSWORD: &str = "smtp-pa55word-0123456789";
/// An alert summary that would be markup if it were not escaped.
const MARKUP: &str = "<b>disk</b> full & <script>alert(1)</script>";

/// The Python of aiosmtpd's venv (`HEAL_AIOSMTPD`, else `python3`) if it
/// imports aiosmtpd; None (the test is skipped, see `skip`) otherwise.
fn aiosmtpd(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("HEAL_AIOSMTPD").map_or_else(|| "python3".into(), PathBuf::from);
    let ok = Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(
            test,
            "aiosmtpd (bash .ci/aiosmtpd prints its Python; export HEAL_AIOSMTPD=that)",
        );
        return None;
    }
    Some(python)
}

/// A running `tests/smtp_server.py`; killed and reaped on drop.
struct Smtp {
    child: Child,
    out: PathBuf,
}

impl Smtp {
    /// Starts it on `port` with the certificate of `dir` (see `tls::pki`),
    /// accepting `password` for `USER`; waits until it listens.
    fn start(python: &Path, dir: &Path, port: u16, password: &str) -> Smtp {
        let (_, cert, key) = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        let out = dir.join("smtp.jsonl");
        let mut child = Command::new(python)
            .arg(crate::support::repo().join("tests/smtp_server.py"))
            .arg(port.to_string())
            .args([&cert, &key])
            .args([USER, password])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn smtp_server.py");
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        // The script prints "ready" once it listens, or exits.
        let _ = stdout.read_line(&mut line);
        assert_eq!(line.trim(), "ready", "smtp_server.py did not start");
        Smtp { child, out }
    }

    /// Everything it recorded so far.
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn messages(&self) -> Vec<Value> {
        let mut m = self.records();
        m.retain(|r| r["event"] == "message");
        m
    }

    fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(&format!("{n} mails"), timeout, || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port: u16, ca: &Path) -> String {
    format!(
        r#"
[server]
lease = "5s"
{}
[[rule]]
name = "careful"
when = "labels.alertname == 'DbDown'"
runbook = "restart"
target = "labels.instance"
approve = true

[channel.mail]
email = {{ smtp = "smtp://127.0.0.1:{port}", username = "{USER}", password = "${{HEAL_TEST_SMTP_PASSWORD}}", from = "heal <heal@example.com>", to = ["ops@example.com", "Oncall <oncall@example.com>"], cc = ["lead@example.com"], ca_file = "{}" }}
rate_limit = "off"
max_backoff = "1s"

[[notify]]
channels = ["mail"]
"#,
        crate::notify::RULES,
        ca.display()
    )
}

/// heal serve with the email channel, its password in the environment.
fn start_heal(dir: &Path, port: u16) -> Server {
    let (ca, _, _) = crate::tls::pki(dir);
    let mut heal = Command::new(heal_bin());
    heal.env("HEAL_TEST_SMTP_PASSWORD", PASSWORD);
    Server::start_command(dir, &config(port, &ca), heal, "127.0.0.1:0", &[])
}

/// Fires alert `name` on `instance` with a summary; returns its event.
fn fire(server: &Server, name: &str, instance: &str, summary: &str) -> i64 {
    let body = json!({ "name": name, "labels": { "alertname": name, "instance": instance }, "annotations": { "summary": summary }, "status": "firing", "starts_at": "2026-11-23T10:00:00Z" });
    let (code, answer) = server.post("/api/v1/alerts", &body);
    assert_eq!(code, 200, "{answer}\nserver log:\n{}", server.logs());
    answer["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no event in {answer}"))
}

fn header<'a>(m: &'a Value, name: &str) -> &'a str {
    m["headers"][name].as_str().unwrap_or_default()
}

/// The mails of event `id`: their subject ends "(event ID)".
fn of_event(mails: &[Value], id: i64) -> Vec<Value> {
    let tag = format!("(event {id})");
    mails
        .iter()
        .filter(|m| {
            header(m, "Subject").contains(&tag)
                || m["text"].as_str().unwrap_or_default().contains(&tag)
        })
        .cloned()
        .collect()
}

#[test]
#[ignore = "needs aiosmtpd (.ci/aiosmtpd); cargo test -- --include-ignored runs it, as .ci/run does"]
fn mail_goes_over_starttls_with_auth_in_two_parts_threaded_by_event() {
    let test = "email::mail_goes_over_starttls_with_auth_in_two_parts_threaded_by_event";
    let Some(python) = aiosmtpd(test) else {
        return;
    };
    let dir = test_dir("email-flow");
    let port = free_port();
    let server = start_heal(&dir, port);
    let smtp = Smtp::start(&python, &dir, port, PASSWORD);
    let _agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    let good = fire(&server, "NginxDown", "web-1", "nginx is down");
    server.wait_event(good, &["succeeded"], Duration::from_secs(20));
    let bad = fire(&server, "DiskFull", "web-1", MARKUP);
    server.wait_event(bad, &["failed"], Duration::from_secs(20));
    // An approval's mail opens its event's thread; the start after it answers.
    let careful = fire(&server, "DbDown", "web-1", "db is down");
    server.wait_event(careful, &["pending_approval"], Duration::from_secs(20));
    smtp.wait_messages(5, Duration::from_secs(20));
    let (code, body) = server.post(
        &format!("/api/v1/events/{careful}/approve"),
        &json!({ "reason": "go" }),
    );
    assert_eq!(code, 200, "{body}");
    server.wait_event(careful, &["succeeded"], Duration::from_secs(20));
    let mails = smtp.wait_messages(7, Duration::from_secs(20));

    // STARTTLS came before AUTH, and AUTH was with the channel's user and password.
    let auths: Vec<Value> = smtp
        .records()
        .into_iter()
        .filter(|r| r["event"] == "auth")
        .collect();
    assert!(!auths.is_empty(), "heal authenticated");
    for a in &auths {
        assert_eq!(
            (&a["tls"], &a["user"], &a["ok"]),
            (&json!(true), &json!(USER), &json!(true)),
            "{a}"
        );
    }
    for m in &mails {
        assert_eq!(m["tls"], true, "sent inside TLS");
        assert_eq!(m["user"], USER, "sent after AUTH");
        assert_eq!(m["mail_from"], "heal@example.com");
        assert_eq!(
            m["rcpt_tos"],
            json!(["ops@example.com", "oncall@example.com", "lead@example.com"])
        );
        assert_eq!(header(m, "From"), "heal <heal@example.com>");
        assert_eq!(
            header(m, "To"),
            "ops@example.com, Oncall <oncall@example.com>"
        );
        assert_eq!(header(m, "Cc"), "lead@example.com");
        assert_eq!(m["content_type"], "multipart/alternative", "{}", m["data"]);
        let subject = header(m, "Subject");
        assert!(
            !subject.is_empty() && !subject.contains('\n'),
            "{subject:?}"
        );
        let text = m["text"].as_str().expect("a text/plain part");
        let html = m["html"].as_str().expect("a text/html part");
        assert_eq!(
            text.lines().next(),
            Some(subject),
            "the title heads the text"
        );
        assert!(html.contains("<h2>"), "{html}");
    }

    // The failed event's mail names the failing step; the alert's markup
    // reads as text in both parts.
    let failed: Vec<Value> = of_event(&mails, bad);
    assert_eq!(failed.len(), 2, "{mails:#?}");
    for m in &failed {
        assert!(m["text"].as_str().unwrap().contains(MARKUP), "{m}");
        let html = m["html"].as_str().unwrap();
        assert!(
            html.contains("&lt;b&gt;disk&lt;/b&gt; full &amp; &lt;script&gt;"),
            "{html}"
        );
        assert!(
            !html.contains("<b>") && !html.contains("<script>"),
            "{html}"
        );
    }
    let subject = header(&failed[1], "Subject");
    assert!(subject.contains("step clean exited 3"), "{subject}");
    assert!(failed[1]["text"]
        .as_str()
        .unwrap()
        .contains("rm: cannot remove /var/tmp/x"));

    // Each event is one thread: its first mail is the root, the others answer it.
    for (id, count) in [(good, 2), (bad, 2), (careful, 3)] {
        let mails = of_event(&mails, id);
        assert_eq!(mails.len(), count, "event {id}: {mails:#?}");
        let root = format!("<heal.event.{id}@example.com>");
        assert_eq!(header(&mails[0], "Message-ID"), root);
        assert_eq!(header(&mails[0], "In-Reply-To"), "");
        let mut ids = BTreeSet::new();
        for m in &mails[1..] {
            let own = header(m, "Message-ID");
            assert!(own != root && own.ends_with("@example.com>"), "{own}");
            assert!(ids.insert(own.to_string()), "{own} twice");
            assert_eq!(header(m, "In-Reply-To"), root);
            assert_eq!(header(m, "References"), root);
        }
    }

    // The password shows nowhere: not in the log, not in the config API.
    let config = server.get_ok("/api/v1/config");
    let email = &config["config"]["channel"]["mail"]["email"];
    assert_eq!(email["password"], "<redacted>", "{config}");
    assert_eq!(email["username"], USER, "{config}");
    assert!(!config.to_string().contains(PASSWORD), "{config}");
    assert!(!server.logs().contains(PASSWORD));
}

/// The error of a pending delivery already tried, once one holds `contains`.
fn pending_error(server: &Server, contains: &str) -> String {
    wait_until(
        &format!("a retried delivery failing with {contains:?}"),
        Duration::from_secs(20),
        || {
            let o = server.get_ok("/api/v1/outbox?state=pending&limit=100");
            o["deliveries"]
                .as_array()?
                .iter()
                .filter(|d| d["attempts"].as_i64() > Some(0))
                .filter_map(|d| d["error"].as_str())
                .find(|e| e.contains(contains))
                .map(str::to_string)
        },
    )
}

#[test]
#[ignore = "needs aiosmtpd (.ci/aiosmtpd); cargo test -- --include-ignored runs it, as .ci/run does"]
fn a_down_server_and_a_wrong_password_are_retried_until_the_mail_goes() {
    let test = "email::a_down_server_and_a_wrong_password_are_retried_until_the_mail_goes";
    let Some(python) = aiosmtpd(test) else {
        return;
    };
    let dir = test_dir("email-retry");
    let port = free_port();
    let server = start_heal(&dir, port);
    let _agent = Agent::start(&server.url, "web-1", &[]);
    wait_agent_polling(&server, "web-1");
    let id = fire(&server, "NginxDown", "web-1", "nginx is down");
    server.wait_event(id, &["succeeded"], Duration::from_secs(20));

    // Down: the delivery waits and says why.
    let err = pending_error(&server, &format!("127.0.0.1:{port}"));
    assert!(err.to_lowercase().contains("refused"), "{err}");

    // Up, but the server knows another password: refused login, retried, no password shown.
    let wrong = Smtp::start(&python, &dir, port, "another-password-42");
    let err = pending_error(&server, "check the channel's username and password");
    assert!(err.contains("535"), "the server's answer: {err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(wrong.messages().is_empty());
    let tries = wrong.records().len();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        wrong.records().len() > tries,
        "still retried: {:?}",
        wrong.records()
    );
    drop(wrong);
    assert!(
        !server.logs().contains(PASSWORD),
        "the log never shows the password"
    );

    // With the right password every notification goes, once each.
    let _ = std::fs::remove_file(dir.join("smtp.jsonl"));
    let smtp = Smtp::start(&python, &dir, port, PASSWORD);
    let started = Instant::now();
    let mails = smtp.wait_messages(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        smtp.messages().len(),
        2,
        "after {:?}: {mails:#?}",
        started.elapsed()
    );
    let o = wait_until("the outbox to drain", Duration::from_secs(10), || {
        let o = server.get_ok("/api/v1/outbox?limit=100");
        (o["counts"]["pending"] == 0).then_some(o)
    });
    assert_eq!(o["counts"]["sent"], 2, "{o}");
}

#[test]
fn bad_email_configs_name_the_field() {
    let dir = test_dir("email-config");
    let check = |email: &str, want: &str| {
        let path = dir.join("runbooks.toml");
        std::fs::write(&path, format!("[channel.m]\nemail = {{ {email} }}\n")).unwrap();
        let (code, _, err) = heal_cli(
            &["check-config", "--config", path.to_str().unwrap()],
            &[("HEAL_TEST_SMTP_PW", "pw-in-env-0123")],
            None,
        );
        assert_eq!(code, 2, "{email}");
        assert!(err.contains(want), "want {want:?} in {err}");
        assert!(!err.contains("pw-in-env-0123"), "{err}");
    };
    let to = r#"to = ["ops@example.com"]"#;
    let from = r#"from = "heal <heal@example.com>""#;
    check(
        &format!(r#"smtp = "http://mail.example.com", {from}, {to}"#),
        "runbooks.toml:2: channel \"m\": email.smtp: must start with smtp:// (STARTTLS, port 587) or smtps://",
    );
    check(&format!("{from}, {to}"), "email.smtp: missing");
    check(
        &format!(r#"smtp = "smtp://u:p@mail.example.com", {from}, {to}"#),
        "email.smtp: holds a user",
    );
    check(
        &format!(r#"smtp = "smtp://mail.example.com", {to}"#),
        "email.from: missing",
    );
    check(
        r#"smtp = "smtp://mail.example.com", from = "heal <heal@example.com>""#,
        "email.to: missing or empty",
    );
    check(
        &format!(r#"smtp = "smtp://mail.example.com", {from}, to = []"#),
        "email.to: missing or empty",
    );
    check(
        &format!(r#"smtp = "smtp://mail.example.com", from = "not an address", {to}"#),
        "email.from: \"not an address\" is not a mail address",
    );
    check(
        &format!(
            r#"smtp = "smtp://mail.example.com", {from}, to = ["ops@example.com", "ops at example"]"#
        ),
        "email.to: \"ops at example\" is not a mail address",
    );
    check(
        &format!(r#"smtp = "smtp://mail.example.com", {from}, {to}, cc = ["@"]"#),
        "email.cc: \"@\" is not a mail address",
    );
    check(
        &format!(
            r#"smtp = "smtp://mail.example.com", {from}, {to}, password = "${{HEAL_TEST_SMTP_PW}}""#
        ),
        "email.password: given without email.username",
    );
    check(
        &format!(r#"smtp = "smtp://mail.example.com", {from}, {to}, username = "u""#),
        "email.username: given without email.password",
    );
    check(
        &format!(
            r#"smtp = "smtp://mail.example.com", {from}, {to}, username = "u", password = "${{HEAL_SURELY_UNSET_VAR}}""#
        ),
        "email.password: environment variable HEAL_SURELY_UNSET_VAR is not set",
    );
    check(
        &format!(
            r#"smtp = "smtp://mail.example.com", starttls = false, {from}, {to}, username = "u", password = "${{HEAL_TEST_SMTP_PW}}""#
        ),
        "email.starttls: false would send the password in clear to mail.example.com",
    );
    check(
        &format!(r#"smtp = "smtps://mail.example.com", starttls = true, {from}, {to}"#),
        "email.starttls: smtps:// is TLS from the start",
    );
    check(
        &format!(
            r#"smtp = "smtp://mail.example.com", {from}, {to}, ca_file = "/nonexistent/heal-ca.pem""#
        ),
        "email.ca_file",
    );
    check(
        &format!(r#"smtp = "smtp://mail.example.com", {from}, {to}, tls = true"#),
        "unknown field `tls`",
    );

    // Clear text is fine on loopback, or when insecure = true says so.
    for ok in [
        format!(
            r#"smtp = "smtp://127.0.0.1:25", starttls = false, {from}, {to}, username = "u", password = "${{HEAL_TEST_SMTP_PW}}""#
        ),
        format!(
            r#"smtp = "smtp://relay.lan", starttls = false, insecure = true, {from}, {to}, username = "u", password = "${{HEAL_TEST_SMTP_PW}}""#
        ),
        format!(r#"smtp = "smtp://relay.lan:25", starttls = false, {from}, {to}"#),
    ] {
        let path = dir.join("runbooks.toml");
        std::fs::write(&path, format!("[channel.m]\nemail = {{ {ok} }}\n")).unwrap();
        let (code, out, err) = heal_cli(
            &["check-config", "--config", path.to_str().unwrap()],
            &[("HEAL_TEST_SMTP_PW", "pw-in-env-0123")],
            None,
        );
        assert_eq!(code, 0, "{ok}: {out}{err}");
        assert!(!out.contains("pw-in-env-0123") && !err.contains("pw-in-env-0123"));
    }
}
