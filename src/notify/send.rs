//! Delivering one rendered notification: an HTTP POST, a mail or a command. Each
//! channel kind is one arm of `prepare`; `deliver` does the I/O with the
//! channel's timeout and says whether a failure is worth another try.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::Value;

use super::render;
use crate::config::{redact, ChannelKind, Email, SmtpTls, Stdin};
use crate::exec;

/// What to send.
pub enum Request {
    /// A POST with a JSON body.
    Http {
        /// Where.
        url: String,
        /// Headers besides `Content-Type: application/json`.
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// A mail through the channel's SMTP server.
    Email {
        /// The server, the sender and the recipients.
        email: Box<Email>,
        /// One line: the message's title.
        subject: String,
        /// The plain-text part.
        text: String,
        /// The HTML part.
        html: String,
        /// Its `Message-ID` and the thread it answers (`In-Reply-To`, `References`).
        thread: Thread,
        /// Its `Date` (ms).
        date: i64,
    },
    /// A command with the message on stdin.
    Command {
        /// The command.
        run: exec::Run,
        /// Its stdin.
        stdin: Vec<u8>,
        /// `HEAL_NOTIFICATION_*` variables.
        env: Vec<(String, String)>,
    },
}

/// Where a mail stands in its thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// This mail's `Message-ID`.
    pub message_id: String,
    /// The thread's first mail, which this one answers.
    pub reply_to: Option<String>,
}

/// The `Message-ID`s that keep one event's (or one heartbeat's, probe's,
/// agent's) mails in one thread. The thread's root is
/// `<heal.event.ID@DOMAIN>` (DOMAIN: the `from` address's). An event's first
/// notification (recorded with the event, so `at` is its `created_at`; or
/// the start of a deferred event, which had none) takes that id; every later
/// one gets an id of its own and answers the root. A
/// heartbeat, probe or agent goes down and up again under the same name, so
/// each of its mails gets its own id and answers the root of its name: no
/// Message-ID is ever sent twice. A digest starts no thread.
pub fn thread(doc: &Value, domain: &str, single: bool) -> Thread {
    let id = doc["id"].as_i64().unwrap_or_default();
    let clean = |s: &str| -> String {
        s.chars()
            .take(100)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let own = |key: &str| format!("<heal.n{id}.{key}@{domain}>");
    if !single {
        return Thread {
            message_id: own("digest"),
            reply_to: None,
        };
    }
    let subject = super::kind_named(super::text(doc, &["kind"])).map_or("test", |k| k.subject);
    let key = format!(
        "{}.{}",
        clean(subject),
        clean(super::text(doc, &["subject"]))
    );
    let root = format!("<heal.{key}@{domain}>");
    let kind = super::text(doc, &["kind"]);
    let event = &doc["event"];
    // Recorded with the event, or the start of one that waited (deferred)
    // without a notification; a start after an approval has `decided_by`.
    let first = subject == "event"
        && ((!doc["at"].is_null() && doc["at"] == event["created_at"])
            || (kind == "event.started" && event["decided_by"].is_null()));
    if first {
        Thread {
            message_id: root,
            reply_to: None,
        }
    } else {
        Thread {
            message_id: own(&key),
            reply_to: Some(root),
        }
    }
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, with no secret in it.
    pub error: String,
    /// Trying again cannot help (a 4xx other than 408 and 429).
    pub permanent: bool,
    /// The receiver asked to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
}

/// Builds the request for `docs` (one notification, or several as one
/// digest) on a channel. `id` names the delivery (the webhook's
/// `X-Heal-Delivery`); `now` is the signing time (ms).
pub fn prepare(
    kind: &ChannelKind,
    docs: &[Value],
    base_url: Option<&str>,
    id: i64,
    now: i64,
) -> Request {
    let single = docs.len() == 1;
    let doc = docs.first().cloned().unwrap_or(Value::Null);
    let message = if single {
        render::message(&doc, base_url)
    } else {
        render::digest(docs, base_url)
    };
    let json = |v: Value| v.to_string().into_bytes();
    match kind {
        ChannelKind::Slack { url } => {
            let subject = if single {
                doc
            } else {
                serde_json::json!({ "kind": "digest" })
            };
            Request::Http {
                url: url.clone(),
                headers: Vec::new(),
                body: json(render::slack(&message, &subject)),
            }
        }
        ChannelKind::PagerDuty { url, routing_key } => Request::Http {
            url: url.clone(),
            headers: Vec::new(),
            body: json(render::pagerduty(&doc, &message, routing_key)),
        },
        ChannelKind::Opsgenie { url, api_key } => {
            let (path, body) = render::opsgenie(&doc, &message);
            Request::Http {
                url: format!("{url}{path}"),
                headers: vec![("Authorization".into(), format!("GenieKey {api_key}"))],
                body: json(body),
            }
        }
        ChannelKind::Webhook {
            url,
            secret,
            headers,
        } => {
            let body = json(if single {
                render::webhook(&doc, &message)
            } else {
                render::webhook_digest(docs, &message, base_url)
            });
            let ts = now.div_euclid(1000);
            let mut h = headers.clone();
            h.push(("X-Heal-Delivery".into(), id.to_string()));
            h.push(("X-Heal-Timestamp".into(), ts.to_string()));
            if let Some(secret) = secret {
                h.push((
                    "X-Heal-Signature".into(),
                    render::signature(secret, ts, &body),
                ));
            }
            Request::Http {
                url: url.clone(),
                headers: h,
                body,
            }
        }
        ChannelKind::Email(email) => Request::Email {
            email: Box::new(email.clone()),
            subject: message.title.clone(),
            text: render::text(&message),
            html: render::html(&message),
            thread: thread(&doc, email.from.email.domain(), single),
            date: now,
        },
        ChannelKind::Command { run, stdin } => {
            let stdin = match stdin {
                Stdin::Json => json(if single {
                    render::webhook(&doc, &message)
                } else {
                    render::webhook_digest(docs, &message, base_url)
                }),
                Stdin::Text => render::text(&message).into_bytes(),
            };
            let kind = if single {
                super::text(&doc, &["kind"]).to_string()
            } else {
                "digest".into()
            };
            let severity = if single {
                super::text(&doc, &["severity"])
            } else {
                ""
            };
            let env = vec![
                ("HEAL_NOTIFICATION_ID".to_string(), id.to_string()),
                ("HEAL_NOTIFICATION_KIND".to_string(), kind),
                (
                    "HEAL_NOTIFICATION_SEVERITY".to_string(),
                    severity.to_string(),
                ),
                ("HEAL_NOTIFICATION_TITLE".to_string(), message.title.clone()),
                (
                    "HEAL_NOTIFICATION_URL".to_string(),
                    message.link.clone().unwrap_or_default(),
                ),
            ];
            Request::Command {
                run: run.clone(),
                stdin,
                env,
            }
        }
    }
}

/// Most of an answer's body kept for the error message.
const ANSWER_LIMIT: u64 = 2048;

/// Delivers requests with one channel's timeout, reusing connections.
pub struct Sender {
    http: ureq::Agent,
    timeout: Duration,
}

impl Sender {
    /// A sender whose every delivery takes at most `timeout`.
    pub fn new(timeout: Duration) -> Sender {
        Sender {
            http: ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .max_redirects(0)
                .user_agent(concat!("heal/", env!("CARGO_PKG_VERSION")))
                .build()
                .into(),
            timeout,
        }
    }

    /// Sends a request. `secrets` are scrubbed from any error. Ok carries a
    /// short description of the answer ("HTTP 202").
    pub fn deliver(&self, req: &Request, secrets: &[&str]) -> Result<String, Failure> {
        let result = match req {
            Request::Http { url, headers, body } => {
                post(&self.http, url, headers, body, self.timeout)
            }
            Request::Command { run, stdin, env } => command(run, stdin, env, self.timeout),
            Request::Email {
                email,
                subject,
                text,
                html,
                thread,
                date,
            } => mail(email, subject, text, html, thread, *date, self.timeout),
        };
        result.map_err(|f| Failure {
            error: redact(&f.error, secrets),
            ..f
        })
    }
}

fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<String, Failure> {
    use std::io::Read;
    let transient = |error: String| Failure {
        error,
        permanent: false,
        retry_after: None,
    };
    let mut builder = ureq::http::Request::builder()
        .method("POST")
        .uri(url)
        .header("Content-Type", "application/json");
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder.body(body.to_vec()).map_err(|e| Failure {
        error: format!("bad request to {url}: {e} (check the channel's URL and headers)"),
        permanent: true,
        retry_after: None,
    })?;
    let mut response = agent
        .run(request)
        .map_err(|e| transient(crate::probe::describe_error(&e, url, timeout)))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, crate::time::now_ms()));
    let mut answer = Vec::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(ANSWER_LIMIT)
        .read_to_end(&mut answer);
    if (200..300).contains(&status) {
        return Ok(format!("HTTP {status}"));
    }
    let answer = String::from_utf8_lossy(&answer);
    let answer: String = answer.split_whitespace().collect::<Vec<_>>().join(" ");
    let hint = match status {
        401 | 403 => " (check the channel's key or token)",
        404 | 410 => " (check the channel's URL: the receiver does not know it)",
        400 | 422 => " (the receiver refused the message)",
        _ => "",
    };
    Err(Failure {
        error: format!(
            "HTTP {status}{}{hint}",
            if answer.is_empty() {
                String::new()
            } else {
                format!(": {}", super::tail(&answer, 300))
            }
        ),
        permanent: (400..500).contains(&status) && !matches!(status, 408 | 425 | 429),
        retry_after,
    })
}

/// Sends one mail with lettre's synchronous SMTP client: TLS (implicit, or
/// STARTTLS before AUTH) with the webpki roots and the channel's `ca_file`,
/// AUTH PLAIN or LOGIN. Every failure is worth another try: a server down,
/// a refused login or recipient may be fixed while the delivery waits.
fn mail(
    email: &Email,
    subject: &str,
    text: &str,
    html: &str,
    thread: &Thread,
    date: i64,
    timeout: Duration,
) -> Result<String, Failure> {
    use lettre::message::{header, MultiPart};
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let server = format!("SMTP server {}:{}", email.host, email.port);
    let fail = |error: String| Failure {
        error,
        permanent: false,
        retry_after: None,
    };
    let mut b = lettre::Message::builder()
        .from(email.from.clone())
        .subject(subject)
        .message_id(Some(thread.message_id.clone()))
        .date(std::time::UNIX_EPOCH + Duration::from_millis(date.max(0) as u64))
        .user_agent(concat!("heal/", env!("CARGO_PKG_VERSION")).to_string());
    for to in &email.to {
        b = b.to(to.clone());
    }
    for cc in &email.cc {
        b = b.cc(cc.clone());
    }
    if let Some(root) = &thread.reply_to {
        b = b.in_reply_to(root.clone()).references(root.clone());
    }
    let message = b
        .header(header::MIME_VERSION_1_0)
        .multipart(MultiPart::alternative_plain_html(
            text.to_string(),
            html.to_string(),
        ))
        .map_err(|e| fail(format!("cannot build the mail: {e}")))?;
    let mut builder = lettre::SmtpTransport::builder_dangerous(&email.host)
        .port(email.port)
        .timeout(Some(timeout));
    if email.tls != SmtpTls::Plain {
        let mut params = TlsParameters::builder(email.host.clone());
        if let Some(path) = &email.ca_file {
            for cert in crate::trust::load_ca_file(path).map_err(fail)? {
                let cert = Certificate::from_der(cert.to_vec())
                    .map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
                params = params.add_root_certificate(cert);
            }
        }
        let params = params
            .build_rustls()
            .map_err(|e| fail(format!("{server}: TLS setup: {e}")))?;
        builder = builder.tls(match email.tls {
            SmtpTls::Implicit => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    if let Some((user, password)) = &email.credentials {
        builder = builder
            .credentials(Credentials::new(user.clone(), password.clone()))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    use lettre::Transport as _;
    let answer = builder.build().send(&message).map_err(|e| {
        let ca = email.ca_file.is_some();
        fail(format!("{server}: {}", describe_smtp_error(&e, ca)))
    })?;
    let code = answer.code();
    Ok(format!("SMTP {code}"))
}

/// A lettre error with its causes (TLS, I/O), and a hint for the usual ones
/// (`ca`: the channel has a `ca_file`).
fn describe_smtp_error(e: &lettre::transport::smtp::Error, ca: bool) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let s = cause.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        source = cause.source();
    }
    let hint = if text.contains("535") || text.contains("authentication") {
        " (check the channel's username and password)"
    } else if text.contains("certificate") && ca {
        " (check that ca_file holds the CA that signed the server's certificate, not the certificate itself)"
    } else if text.contains("certificate") {
        " (set ca_file if a private CA signed the server's certificate)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// A `Retry-After` value: delta-seconds (`7`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, counted from `now_ms`; one already past
/// is no wait). Anything else is ignored.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait_ms = at.timestamp_millis().saturating_sub(now_ms).max(0);
    Some(Duration::from_millis(wait_ms as u64))
}

fn command(
    run: &exec::Run,
    stdin: &[u8],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<String, Failure> {
    let output = exec::Output::new(1024);
    let cancel = AtomicBool::new(false);
    let step = exec::Step {
        run,
        env,
        timeout,
        grace: Duration::from_secs(2),
        stdin,
        cwd: None,
    };
    let end = exec::run_step(&step, &output, &cancel);
    let (tail, _) = output.tail();
    let tail = String::from_utf8_lossy(&tail);
    let tail = tail.trim();
    let tail = if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.lines().last().unwrap_or_default())
    };
    if let Some(e) = end.spawn_error {
        return Err(Failure {
            error: format!("command {run}: {e}"),
            permanent: false,
            retry_after: None,
        });
    }
    if end.success() {
        return Ok("exit 0".into());
    }
    let how = if end.timed_out {
        format!("timed out after {}", crate::time::format_duration(timeout))
    } else if let Some(code) = end.exit_code {
        format!("exit {code}")
    } else {
        format!("killed by signal {}", end.signal.unwrap_or_default())
    };
    Err(Failure {
        error: format!("command {run}: {how}{tail}"),
        permanent: false,
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::json!({ "id": 1, "kind": "event.failed", "severity": "error", "dedup_key": "heal/event/1" })
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        // 2015-10-21T07:28:00Z.
        let now = 1_445_412_480_000;
        let check = |v: &str, expected: Option<u64>| {
            assert_eq!(
                parse_retry_after(v, now),
                expected.map(Duration::from_secs),
                "{v:?}"
            );
        };
        check("7", Some(7));
        check(" 120 ", Some(120));
        check("Wed, 21 Oct 2015 07:28:09 GMT", Some(9));
        check("Wed, 21 Oct 2015 07:27:00 GMT", Some(0));
        check("soon", None);
        check("-3", None);
    }

    #[test]
    fn command_gets_the_message_on_stdin_and_its_variables() {
        let dir = std::env::temp_dir().join(format!("heal-send-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("stdin");
        let kind = ChannelKind::Command {
            run: exec::Run::Shell(format!(
                "cat > {} && test \"$HEAL_NOTIFICATION_KIND\" = event.failed",
                out.display()
            )),
            stdin: Stdin::Json,
        };
        let req = prepare(&kind, &[doc()], None, 7, 0);
        assert_eq!(
            Sender::new(Duration::from_secs(5)).deliver(&req, &[]),
            Ok("exit 0".into())
        );
        let got: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got["kind"], "event.failed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failing_command_is_retried_and_names_how_it_ended() {
        let kind = ChannelKind::Command {
            run: exec::Run::Shell("echo mail server down >&2; exit 75".into()),
            stdin: Stdin::Text,
        };
        let f = Sender::new(Duration::from_secs(5))
            .deliver(&prepare(&kind, &[doc()], None, 1, 0), &[])
            .unwrap_err();
        assert!(!f.permanent);
        assert!(f.error.contains("exit 75: mail server down"), "{}", f.error);
    }

    #[test]
    fn an_event_s_first_mail_is_its_thread_s_root_and_later_ones_answer_it() {
        let at = "2026-11-23T10:00:00.000Z";
        let first = serde_json::json!({ "id": 5, "kind": "event.started", "subject": "42", "at": at, "event": { "id": 42, "created_at": at } });
        let later = serde_json::json!({ "id": 9, "kind": "event.failed", "subject": "42", "at": "2026-11-23T10:00:03.000Z", "event": { "id": 42, "created_at": at } });
        let root = "<heal.event.42@example.com>".to_string();
        assert_eq!(
            thread(&first, "example.com", true),
            Thread {
                message_id: root.clone(),
                reply_to: None
            }
        );
        assert_eq!(
            thread(&later, "example.com", true),
            Thread {
                message_id: "<heal.n9.event.42@example.com>".into(),
                reply_to: Some(root)
            }
        );
        // A deferred event's start is its first notification; a start after
        // an approval answers the approval's mail.
        let deferred = serde_json::json!({ "id": 6, "kind": "event.started", "subject": "43", "at": "2026-11-23T10:05:00.000Z", "event": { "id": 43, "created_at": at, "decided_by": null } });
        assert_eq!(thread(&deferred, "example.com", true).reply_to, None);
        let mut approved = deferred.clone();
        approved["event"]["decided_by"] = "alice".into();
        assert_eq!(
            thread(&approved, "example.com", true).reply_to.as_deref(),
            Some("<heal.event.43@example.com>")
        );
        // A heartbeat goes down again under its name: never the same id twice.
        let down = |id: i64| serde_json::json!({ "id": id, "kind": "heartbeat.down", "subject": "nightly backup<x>", "at": at });
        let (a, b) = (thread(&down(1), "h", true), thread(&down(2), "h", true));
        assert_ne!(a.message_id, b.message_id);
        assert_eq!(
            a.reply_to.as_deref(),
            Some("<heal.heartbeat.nightly_backup_x_@h>")
        );
        assert_eq!(a.reply_to, b.reply_to);
        let digest = thread(&first, "h", false);
        assert_eq!(
            (digest.message_id.as_str(), digest.reply_to),
            ("<heal.n5.digest@h>", None)
        );
    }

    fn email(port: u16, password: &str) -> ChannelKind {
        ChannelKind::Email(Email {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::StartTls,
            credentials: Some(("heal".into(), password.into())),
            from: "heal <heal@example.com>".parse().unwrap(),
            to: vec!["ops@example.com".parse().unwrap()],
            cc: Vec::new(),
            ca_file: None,
        })
    }

    #[test]
    fn an_unreachable_smtp_server_is_retried_and_named_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let kind = email(port, "SMTPSECRET1234");
        assert_eq!(kind.describe(), format!("email smtp://127.0.0.1:{port}"));
        assert_eq!(kind.secrets(), ["SMTPSECRET1234"]);
        assert!(!format!("{kind:?}").contains("SMTPSECRET1234"));
        let req = prepare(&kind, &[doc()], None, 1, 0);
        let Request::Email {
            text,
            html,
            subject,
            ..
        } = &req
        else {
            panic!("an email request");
        };
        assert_eq!(text.lines().next(), Some(subject.as_str()));
        assert!(html.contains("<h2>"));
        let f = Sender::new(Duration::from_secs(2))
            .deliver(&req, &kind.secrets())
            .unwrap_err();
        assert!(!f.permanent);
        assert!(
            f.error.contains(&format!("SMTP server 127.0.0.1:{port}")),
            "{}",
            f.error
        );
        assert!(!f.error.contains("SMTPSECRET1234"), "{}", f.error);
    }

    #[test]
    fn transport_errors_never_show_the_secret_url() {
        let url = "http://127.0.0.1:1/services/T0/B0/SECRETSECRET";
        let kind = ChannelKind::Slack { url: url.into() };
        let f = Sender::new(Duration::from_secs(2))
            .deliver(&prepare(&kind, &[doc()], None, 1, 0), &kind.secrets())
            .unwrap_err();
        assert!(!f.error.contains("SECRETSECRET"), "{}", f.error);
        assert!(!f.permanent);
    }
}
