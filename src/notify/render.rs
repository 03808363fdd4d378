//! Rendering a notification document into what a person reads (`Message`)
//! and into each channel's body: plain text, Slack, PagerDuty, Opsgenie and a
//! generic webhook, plus the webhook signature. Pure: no I/O and no clock;
//! `send` delivers what this builds.
//!
//! Every field of the document may be missing, and alert labels, annotations
//! and command output may be hostile (markup, backticks, newlines, 100 KB).
//! So each datum is cleaned to one line and capped when it enters a
//! `Message`, a `Message` is small whatever the input, and each channel
//! escapes and truncates again to its own documented limits, marking a cut
//! with "…". Lengths are counted in UTF-16 code units: that is what Slack
//! counts, and it is never less than the number of characters.

use std::fmt::Write as _;
use std::time::Duration;

use ring::hmac;
use serde_json::{json, Map, Value};

use super::{dedup_key, kind_named, severity_level, text as get};
use crate::time::{format_duration, format_rfc3339, parse_rfc3339};

/// What a person reads, before a channel shapes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// One line, at most 150 characters.
    pub title: String,
    /// "What fired: …", "What heal did: …", "Result: …", "Next: …", as fits
    /// the kind; each one line.
    pub lines: Vec<String>,
    /// Short facts: Severity, Team, Event, Rule, Runbook, Targets, Key, …
    pub fields: Vec<(&'static str, String)>,
    /// A heading ("web-1 · step restart · exit 1") and the last lines of the
    /// failing op's output, at most 1,500 characters.
    pub output: Option<(String, String)>,
    /// Where to look next in heal's API, see `link`.
    pub link: Option<String>,
}

/// The most lines a digest lists before "… and N more".
pub const DIGEST_LINES: usize = 20;

const TITLE_MAX: usize = 150;
const LINE_MAX: usize = 700;
const PIECE_MAX: usize = 300;
const NAME_MAX: usize = 80;
const FIELD_MAX: usize = 200;
const OUTPUT_MAX: usize = 1500;
const SLACK_HEADER_MAX: usize = 150;
const SLACK_TEXT_MAX: usize = 3000;
const SLACK_FIELD_MAX: usize = 2000;
const SLACK_FIELDS: usize = 10;
const SLACK_BLOCKS: usize = 50;
const PAGERDUTY_SUMMARY_MAX: usize = 1024;
const PAGERDUTY_KEY_MAX: usize = 255;
const OPSGENIE_MESSAGE_MAX: usize = 130;
const OPSGENIE_ALIAS_MAX: usize = 512;
const OPSGENIE_DESCRIPTION_MAX: usize = 15_000;
const OPSGENIE_TAG_MAX: usize = 50;
const OPSGENIE_NOTE_MAX: usize = 25_000;
/// Line labels that Slack shows in bold.
const LABELS: &[&str] = &[
    "What fired",
    "Details",
    "What heal did",
    "Why",
    "Decision",
    "Impact",
    "Result",
    "Ops",
    "Next",
    "Runbook",
];

/// Where to look next: `{base}/api/v1/events/{id}` for event kinds,
/// `heartbeats/{name}` and `probes/{name}` for those, `agents` and `breaker`
/// for agent and safety kinds. `None` without a base URL or an id to name.
pub fn link(doc: &Value, base_url: Option<&str>) -> Option<String> {
    let base = base_url?.trim().trim_end_matches('/');
    if base.is_empty() {
        return None;
    }
    let path = match group(get(doc, &["kind"])) {
        "event" => format!("events/{}", segment(&event_id(doc))?),
        "heartbeat" => format!("heartbeats/{}", segment(&subject_name(doc))?),
        "probe" => format!("probes/{}", segment(&subject_name(doc))?),
        "agent" => "agents".to_string(),
        "safety" => "breaker".to_string(),
        _ => return None,
    };
    Some(format!("{base}/api/v1/{path}"))
}

/// What one notification says: what fired, what heal did, the result, the
/// output's tail and where to look next.
pub fn message(doc: &Value, base_url: Option<&str>) -> Message {
    let f = facts(doc);
    let (title, lines) = words(&f);
    Message {
        title: cut(&title, TITLE_MAX),
        lines: lines.iter().map(|l| cut(l, LINE_MAX)).collect(),
        fields: fields(&f),
        output: output(doc, &f),
        link: link(doc, base_url),
    }
}

/// Many notifications in one message, when a route's rate limit holds them
/// back: counts by kind in the title, then one line per notification (its
/// title), at most `DIGEST_LINES` of them.
pub fn digest(docs: &[Value], base_url: Option<&str>) -> Message {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for doc in docs {
        let kind = or(&clean(get(doc, &["kind"]), NAME_MAX), "unknown").to_string();
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let by_kind: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let noun = if docs.len() == 1 {
        "notification"
    } else {
        "notifications"
    };
    let mut lines: Vec<String> = docs
        .iter()
        .take(DIGEST_LINES)
        .map(|d| format!("- {}", message(d, base_url).title))
        .collect();
    if docs.len() > DIGEST_LINES {
        lines.push(format!("… and {} more", docs.len() - DIGEST_LINES));
    }
    let worst = docs.iter().map(severity).max_by_key(|s| rank(s));
    Message {
        title: cut(
            &format!("{} {noun}: {}", docs.len(), by_kind.join(", ")),
            TITLE_MAX,
        ),
        lines,
        fields: vec![
            ("Severity", worst.unwrap_or("info").to_string()),
            ("Count", docs.len().to_string()),
        ],
        output: None,
        link: None,
    }
}

/// Plain text: email, a command's stdin, snapshots.
pub fn text(m: &Message) -> String {
    let mut out = format!("{}\n", m.title);
    if !m.lines.is_empty() {
        out.push('\n');
        for line in &m.lines {
            let _ = writeln!(out, "{line}");
        }
    }
    if !m.fields.is_empty() {
        out.push('\n');
        let width = m.fields.iter().map(|(n, _)| n.len() + 1).max().unwrap_or(0);
        for (name, value) in &m.fields {
            let _ = writeln!(out, "{:<width$} {value}", format!("{name}:"));
        }
    }
    if let Some((heading, tail)) = &m.output {
        let _ = writeln!(out, "\nOutput of {heading}, last lines:");
        for line in tail.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    if let Some(url) = &m.link {
        let _ = writeln!(out, "\nMore: {url}");
    }
    out
}

/// A Slack incoming-webhook body: fallback `text` and blocks (header, the
/// lines, the fields, the output in a code block, the link). For a digest,
/// pass `&json!({"kind": "digest"})` as `doc`.
pub fn slack(m: &Message, doc: &Value) -> Value {
    let kind = get(doc, &["kind"]);
    let header = format!("{} {}", emoji(kind), m.title);
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": escape_within(&header, SLACK_HEADER_MAX, plain), "emoji": true},
    })];
    for text in slack_sections(&m.lines) {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
    }
    if !m.fields.is_empty() {
        blocks.push(slack_fields(&m.fields));
    }
    if let Some(block) = m.output.as_ref().and_then(slack_output) {
        blocks.push(block);
    }
    blocks.truncate(SLACK_BLOCKS - 1);
    blocks.push(slack_context(kind, m.link.as_deref(), doc));
    json!({"text": escape_within(&m.title, SLACK_TEXT_MAX, plain), "blocks": blocks})
}

/// A PagerDuty Events API v2 body: `resolve` for kinds that close what an
/// earlier one opened, else `trigger` with the message as payload.
pub fn pagerduty(doc: &Value, m: &Message, routing_key: &str) -> Value {
    let key = dedup(doc, PAGERDUTY_KEY_MAX);
    if resolves(doc) {
        return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": key});
    }
    let mut payload = Map::new();
    payload.insert(
        "summary".into(),
        cut(&m.title, PAGERDUTY_SUMMARY_MAX).into(),
    );
    payload.insert("source".into(), or(&source(doc), "heal").into());
    payload.insert("severity".into(), severity(doc).into());
    if let Ok(Some(ms)) = parse_rfc3339(get(doc, &["at"])) {
        payload.insert("timestamp".into(), format_rfc3339(ms).into());
    }
    for (name, value) in [("component", component(doc)), ("group", team(doc))] {
        if !value.is_empty() {
            payload.insert(name.into(), value.into());
        }
    }
    payload.insert("class".into(), clean(get(doc, &["kind"]), NAME_MAX).into());
    payload.insert("custom_details".into(), details(m));
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": payload,
        "client": "heal",
    });
    if let Some(url) = &m.link {
        body["links"] = json!([{"href": url, "text": link_text(doc)}]);
        body["client_url"] = url.as_str().into();
    }
    body
}

/// An Opsgenie Alert API request: the path under the API base and the body.
/// Create (`/v2/alerts`), or close by alias for kinds that close what an
/// earlier one opened.
pub fn opsgenie(doc: &Value, m: &Message) -> (String, Value) {
    let alias = dedup(doc, OPSGENIE_ALIAS_MAX);
    if resolves(doc) {
        let path = format!("/v2/alerts/{}/close?identifierType=alias", encode(&alias));
        let note = cut(&m.title, OPSGENIE_NOTE_MAX);
        return (path, json!({"source": "heal", "note": note}));
    }
    let level = severity(doc);
    let mut tags: Vec<String> = Vec::new();
    for tag in ["heal", get(doc, &["kind"]), &team(doc), level] {
        let tag = cut(&clean(tag, PIECE_MAX).replace(' ', "-"), OPSGENIE_TAG_MAX);
        if !tag.is_empty() && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    let details: Map<String, Value> = m
        .fields
        .iter()
        .map(|(name, value)| (name.to_string(), Value::from(value.as_str())))
        .collect();
    let body = json!({
        "message": cut(&m.title, OPSGENIE_MESSAGE_MAX),
        "alias": alias,
        "description": cut(&text(m), OPSGENIE_DESCRIPTION_MAX),
        "tags": tags,
        "details": details,
        "entity": cut(or(&source(doc), "heal"), OPSGENIE_ALIAS_MAX),
        "source": "heal",
        "priority": priority(level),
    });
    ("/v2/alerts".to_string(), body)
}

/// A generic webhook body: the document itself plus `title`, `text` (the
/// plain text) and `url` (the link, or null).
pub fn webhook(doc: &Value, m: &Message) -> Value {
    let mut out = match doc {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    out.insert("title".into(), m.title.as_str().into());
    out.insert("text".into(), text(m).into());
    out.insert(
        "url".into(),
        m.link.as_deref().map_or(Value::Null, Value::from),
    );
    Value::Object(out)
}

/// A generic webhook body for a digest: its title and text, the count, and
/// each notification as `webhook` renders it with the same `base_url`.
pub fn webhook_digest(docs: &[Value], m: &Message, base_url: Option<&str>) -> Value {
    let notifications: Vec<Value> = docs
        .iter()
        .map(|doc| webhook(doc, &message(doc, base_url)))
        .collect();
    json!({
        "kind": "digest",
        "title": m.title,
        "text": text(m),
        "count": docs.len(),
        "notifications": notifications,
    })
}

/// The webhook signature header value: `sha256=` and the lowercase hex
/// HMAC-SHA256, keyed by `secret`, of `{timestamp}.` followed by the body.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{timestamp}.").as_bytes());
    ctx.update(body);
    format!("sha256={}", hex(ctx.sign().as_ref()))
}

// ---- the facts of a document ------------------------------------------------

/// The facts a message is made of, each cleaned to one line and capped; ""
/// when missing.
#[derive(Default)]
struct Facts {
    kind: String,
    group: &'static str,
    severity: &'static str,
    team: String,
    event: String,
    state: String,
    reason: String,
    rule: String,
    runbook: String,
    key: String,
    mode: String,
    targets: String,
    decided_by: String,
    took: String,
    hits: u64,
    failure: String,
    ops: String,
    alert: String,
    status: String,
    instance: String,
    summary: String,
    description: String,
    since: String,
    lasted: String,
    name: String,
    cause: String,
    detail: String,
    runbook_url: String,
    channel: String,
}

fn facts(doc: &Value) -> Facts {
    let event = &doc["event"];
    let alert = &doc["alert"];
    let kind = get(doc, &["kind"]);
    let summary = first(&[&alert["annotations"]["summary"]], PIECE_MAX);
    let description = first(&[&alert["annotations"]["description"]], PIECE_MAX);
    let subject = &doc[subject_object(kind)];
    let detail = first(
        &[
            &subject["description"],
            &alert["annotations"]["description"],
        ],
        PIECE_MAX,
    );
    Facts {
        kind: clean(kind, NAME_MAX),
        group: group(kind),
        severity: severity(doc),
        team: team(doc),
        event: clean(&event_id(doc), NAME_MAX),
        state: first(&[&event["state"]], NAME_MAX),
        reason: first(&[&event["reason"]], PIECE_MAX),
        rule: first(&[&event["rule"], &doc["rule"]], NAME_MAX),
        runbook: first(&[&event["runbook"], &doc["runbook"]], NAME_MAX),
        key: first(&[&event["key"]], NAME_MAX),
        mode: first(&[&event["mode"]], NAME_MAX),
        targets: list(&event["targets"], 3),
        decided_by: first(&[&event["decided_by"]], NAME_MAX),
        took: elapsed(get(event, &["created_at"]), get(event, &["ended_at"])),
        hits: event["hits"].as_u64().unwrap_or(0),
        failure: failing_op(doc).map(op_failure).unwrap_or_default(),
        ops: ops_line(doc),
        alert: first(&[&alert["name"], &label(doc, "alertname")], NAME_MAX),
        status: first(&[&alert["status"]], NAME_MAX),
        instance: first(&[&label(doc, "instance"), &event["key"]], NAME_MAX),
        since: when(get(alert, &["starts_at"])),
        lasted: elapsed(get(alert, &["starts_at"]), get(doc, &["at"])),
        name: clean(&subject_name(doc), NAME_MAX),
        cause: first(
            &[&subject["reason"], &alert["annotations"]["reason"]],
            PIECE_MAX,
        ),
        detail: if detail == summary {
            String::new()
        } else {
            detail
        },
        runbook_url: first(&[&alert["annotations"]["runbook_url"]], PIECE_MAX),
        channel: first(&[&doc["channel"]], NAME_MAX),
        summary,
        description,
    }
}

/// The subject kind a notification kind belongs to, as links and wording
/// group them: event, heartbeat, probe, agent, safety, test.
fn group(kind: &str) -> &'static str {
    let subject =
        kind_named(kind).map_or_else(|| kind.split('.').next().unwrap_or(""), |k| k.subject);
    match subject {
        "event" => "event",
        "heartbeat" | "heartbeat-runtime" => "heartbeat",
        "probe" => "probe",
        "agent" => "agent",
        "safety" | "breaker" => "safety",
        "test" => "test",
        _ => "",
    }
}

/// The document's object that describes a non-event subject.
fn subject_object(kind: &str) -> &'static str {
    match group(kind) {
        "safety" => "breaker",
        other => other,
    }
}

/// The event's id: `event.id`, else the notification's subject.
fn event_id(doc: &Value) -> String {
    let id = scalar(&doc["event"]["id"]);
    if id.is_empty() {
        scalar(&doc["subject"])
    } else {
        id
    }
}

/// The name of a heartbeat, probe or agent, uncleaned (links encode it).
fn subject_name(doc: &Value) -> String {
    let kind = get(doc, &["kind"]);
    let (object, field, label_name) = match group(kind) {
        "heartbeat" => ("heartbeat", "name", "heartbeat"),
        "probe" => ("probe", "name", "probe"),
        "agent" => ("agent", "id", "agent"),
        _ => return String::new(),
    };
    [
        scalar(&doc[object][field]),
        scalar(&label(doc, label_name)),
        scalar(&doc["subject"]),
    ]
    .into_iter()
    .find(|s| !s.trim().is_empty())
    .unwrap_or_default()
}

/// A label of the notification or, failing that, of its alert.
fn label(doc: &Value, name: &str) -> Value {
    let own = &doc["labels"][name];
    if own.is_null() {
        doc["alert"]["labels"][name].clone()
    } else {
        own.clone()
    }
}

/// One of PagerDuty's four levels: the document's severity, else its
/// `severity` label, else the kind's default.
fn severity(doc: &Value) -> &'static str {
    let own = get(doc, &["severity"]);
    let labelled = label(doc, "severity");
    let text = [own, labelled.as_str().unwrap_or_default()]
        .into_iter()
        .find(|s| !s.is_empty())
        .or_else(|| kind_named(get(doc, &["kind"])).map(|k| k.severity))
        .unwrap_or("info");
    severity_level(text)
}

fn rank(level: &str) -> u8 {
    match level {
        "critical" => 3,
        "error" => 2,
        "warning" => 1,
        _ => 0,
    }
}

fn priority(level: &str) -> &'static str {
    match level {
        "critical" => "P1",
        "error" => "P2",
        "warning" => "P3",
        _ => "P5",
    }
}

fn team(doc: &Value) -> String {
    first(&[&doc["team"], &label(doc, "team")], NAME_MAX)
}

fn resolves(doc: &Value) -> bool {
    kind_named(get(doc, &["kind"])).is_some_and(|k| k.resolves)
}

/// The document's dedup key, or one made the way `dedup_key` makes it.
fn dedup(doc: &Value, max: usize) -> String {
    let own = get(doc, &["dedup_key"]);
    let key = match kind_named(get(doc, &["kind"])) {
        _ if !own.is_empty() => own.to_string(),
        Some(kind) => dedup_key(kind, &scalar(&doc["subject"])),
        None => format!("heal/{}", get(doc, &["kind"])),
    };
    key.chars().take(max).collect()
}

/// What failed or recovered: the targets or key of an event, the name of a
/// heartbeat, probe or agent.
fn source(doc: &Value) -> String {
    match group(get(doc, &["kind"])) {
        "event" => {
            let targets = list(&doc["event"]["targets"], 3);
            or(&targets, &first(&[&doc["event"]["key"]], NAME_MAX)).to_string()
        }
        "safety" => "heal".to_string(),
        _ => clean(&subject_name(doc), NAME_MAX),
    }
}

/// The runbook of an event, the heartbeat or probe name otherwise.
fn component(doc: &Value) -> String {
    match group(get(doc, &["kind"])) {
        "event" => first(&[&doc["event"]["runbook"], &doc["runbook"]], NAME_MAX),
        "safety" => "breaker".to_string(),
        _ => clean(&subject_name(doc), NAME_MAX),
    }
}

// ---- wording ----------------------------------------------------------------

fn words(f: &Facts) -> (String, Vec<String>) {
    match f.group {
        "event" => event_words(f),
        "heartbeat" => heartbeat_words(f),
        "probe" => probe_words(f),
        "agent" => agent_words(f),
        "safety" => safety_words(f),
        "test" => test_words(f),
        _ => other_words(f),
    }
}

fn event_words(f: &Facts) -> (String, Vec<String>) {
    let (title, more) = match f.kind.as_str() {
        "event.started" => started(f),
        "event.succeeded" => succeeded(f),
        "event.failed" => failed(f),
        "event.escalated" => escalated(f),
        "event.pending_approval" => pending_approval(f),
        "event.cancelled" => cancelled(f),
        "event.resolved" => resolved(f),
        "event.dry_run" => dry_run(f),
        _ => return other_words(f),
    };
    let mut lines = fired(f);
    lines.extend(more);
    (title, lines)
}

/// "What fired" and "Details" from the alert, when there is one.
fn fired(f: &Facts) -> Vec<String> {
    if f.alert.is_empty() && f.summary.is_empty() {
        return Vec::new();
    }
    let mut line = format!("What fired: {}", or(&f.alert, "an alert"));
    if !f.instance.is_empty() {
        let _ = write!(line, " on {}", f.instance);
    }
    match (f.since.is_empty(), f.status.as_str()) {
        (true, _) => {}
        (false, "resolved") => {
            let _ = write!(line, ", fired at {}, since resolved", f.since);
        }
        (false, _) => {
            let _ = write!(line, ", firing since {}", f.since);
        }
    }
    if f.hits > 1 {
        let _ = write!(line, " (seen {} times)", f.hits);
    }
    if !f.summary.is_empty() {
        let _ = write!(line, ": {}", f.summary);
    }
    let mut lines = vec![line];
    if !f.description.is_empty() && f.description != f.summary {
        lines.push(format!("Details: {}", f.description));
    }
    lines
}

/// " on web-1": the targets, else the key.
fn on(f: &Facts) -> String {
    let place = or(&f.targets, &f.key);
    if place.is_empty() {
        String::new()
    } else {
        format!(" on {place}")
    }
}

/// " (event 42)".
fn event_ref(f: &Facts) -> String {
    if f.event.is_empty() {
        String::new()
    } else {
        format!(" (event {})", f.event)
    }
}

/// "Rule restart-nginx ran runbook nginx-restart on web-1".
fn rule_ran(f: &Facts, verb: &str) -> String {
    let rule = if f.rule.is_empty() {
        "heal".to_string()
    } else {
        format!("rule {}", f.rule)
    };
    format!(
        "{rule} {verb} runbook {}{}",
        or(&f.runbook, "(unnamed)"),
        on(f)
    )
}

fn started(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Running {}{} for {}{}",
        or(&f.runbook, "a runbook"),
        on(f),
        or(&f.alert, "an alert"),
        event_ref(f)
    );
    let lines = vec![
        format!("What heal did: {}.", rule_ran(f, "started")),
        "Next: nothing to do yet; heal reports when it succeeds or fails.".to_string(),
    ];
    (title, lines)
}

fn succeeded(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Fixed: {}{} by {}{}",
        or(&f.alert, "alert"),
        on(f),
        or(&f.runbook, "its runbook"),
        event_ref(f)
    );
    let mut result = "Result: succeeded".to_string();
    if !f.took.is_empty() {
        let _ = write!(result, " in {}", f.took);
    }
    if !f.reason.is_empty() {
        let _ = write!(result, ": {}", f.reason);
    }
    let mut lines = vec![format!("What heal did: {}.", rule_ran(f, "ran")), result];
    if !f.ops.is_empty() {
        lines.push(f.ops.clone());
    }
    lines.push("Next: nothing to do.".to_string());
    (title, lines)
}

fn failed(f: &Facts) -> (String, Vec<String>) {
    let outcome = match f.state.as_str() {
        "timed_out" => "Timed out",
        "lost" => "Lost",
        _ => "Failed",
    };
    let failure = if f.failure.is_empty() {
        String::new()
    } else {
        format!(", {}", f.failure)
    };
    let title = format!(
        "{outcome}: {}{}{failure}{}",
        or(&f.runbook, "runbook"),
        on(f),
        event_ref(f)
    );
    let reason = or(&f.reason, "no reason recorded");
    let place = or(or(&f.targets, &f.key), "the target");
    let next = match f.state.as_str() {
        "lost" => format!(
            "Next: check on {place} whether the runbook ran and what it did; heal never re-runs a lost op."
        ),
        _ => format!(
            "Next: fix {place} by hand, starting from the output below. If the alert keeps firing, heal may try again after the rule's cooldown."
        ),
    };
    let mut lines = vec![
        format!("What heal did: {}.", rule_ran(f, "ran")),
        format!("Result: {}: {reason}", outcome.to_lowercase()),
    ];
    if !f.ops.is_empty() {
        lines.push(f.ops.clone());
    }
    lines.push(next);
    (title, lines)
}

fn escalated(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Escalated: {}{} needs a person{}",
        or(&f.alert, "alert"),
        on(f),
        event_ref(f)
    );
    let lines = vec![
        "What heal did: ran nothing and handed this to people.".to_string(),
        format!("Why: {}", or(&f.reason, "no reason recorded")),
        "Next: a person must take over. heal runs nothing more for this alert while it keeps firing, and closes the event when the alert resolves.".to_string(),
    ];
    (title, lines)
}

fn pending_approval(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Approval needed: {}{} for {}{}",
        or(&f.runbook, "runbook"),
        on(f),
        or(&f.alert, "alert"),
        event_ref(f)
    );
    let id = or(&f.event, "EVENT_ID");
    let mut lines = vec![format!(
        "What heal did: nothing yet; {} once a person approves.",
        rule_ran(f, "will run")
    )];
    if !f.reason.is_empty() {
        lines.push(format!("Why: {}", f.reason));
    }
    lines.push(format!(
        "Next: run heal approve {id} to let it run once, or heal reject {id} to cancel it."
    ));
    (title, lines)
}

fn cancelled(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Cancelled: {}{} for {}{}",
        or(&f.runbook, "runbook"),
        on(f),
        or(&f.alert, "alert"),
        event_ref(f)
    );
    let mut result = "Result: cancelled".to_string();
    if !f.decided_by.is_empty() {
        let _ = write!(result, " by {}", f.decided_by);
    }
    if !f.reason.is_empty() {
        let _ = write!(result, ": {}", f.reason);
    }
    let lines = vec![
        result,
        format!(
            "Next: nothing runs for this event. If {} is still firing, it needs a person.",
            or(&f.alert, "the alert")
        ),
    ];
    (title, lines)
}

fn resolved(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Resolved: {}{}{}",
        or(&f.alert, "alert"),
        on(f),
        event_ref(f)
    );
    let mut result = format!("Result: {} resolved", or(&f.alert, "the alert"));
    if !f.lasted.is_empty() {
        let _ = write!(result, " {} after it fired", f.lasted);
    }
    let lines = vec![
        result + "; heal closed the escalated event.",
        "Next: nothing to do.".to_string(),
    ];
    (title, lines)
}

fn dry_run(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Dry run: heal would run {}{} for {}{}",
        or(&f.runbook, "a runbook"),
        on(f),
        or(&f.alert, "an alert"),
        event_ref(f)
    );
    let rule = or(&f.rule, "(unnamed)");
    let mut lines = vec![format!(
        "What heal did: nothing ran; rule {rule} is in dry-run mode."
    )];
    if !f.reason.is_empty() {
        lines.push(format!("Decision: {}", f.reason));
    }
    lines.push(format!(
        "Next: handle {} by hand if it needs it. To let heal act, set mode = \"live\" on rule {rule}.",
        or(&f.alert, "the alert")
    ));
    (title, lines)
}

fn heartbeat_words(f: &Facts) -> (String, Vec<String>) {
    let name = or(&f.name, "(unnamed)");
    let (title, mut lines) = match f.kind.as_str() {
        "heartbeat.down" => heartbeat_down(f, name),
        "heartbeat.up" => (
            format!("Heartbeat {name} is up again"),
            vec![
                format!("Result: heartbeat {name} checked in again{}.", after(f, "being down")),
                "Next: nothing to do.".to_string(),
            ],
        ),
        "heartbeat.overrun" => (
            format!("Heartbeat {name}: a run is taking too long"),
            [
                internal_fired(f, &format!("a run of heartbeat {name} is taking longer than its max runtime")),
                vec![format!("Next: check whether the job behind {name} is hung (stuck on a lock, on I/O, on the network) or only slow.")],
            ]
            .concat(),
        ),
        "heartbeat.finished" => (
            format!("Heartbeat {name}: the overrunning run has ended"),
            vec![
                format!("Result: the run of {name} that overran has ended{}.", after(f, "running over its max runtime")),
                "Next: nothing to do; a failed run is reported as heartbeat.down.".to_string(),
            ],
        ),
        _ => return other_words(f),
    };
    if !f.runbook_url.is_empty()
        && matches!(f.kind.as_str(), "heartbeat.down" | "heartbeat.overrun")
    {
        lines.push(format!("Runbook: {}", f.runbook_url));
    }
    (title, lines)
}

fn heartbeat_down(f: &Facts, name: &str) -> (String, Vec<String>) {
    let failed = f.cause == "failed";
    let (what, next) = if failed {
        (
            "reported a failed run",
            format!("Next: find out why the last run of {name} failed; heal keeps the output of recent runs with the heartbeat's pings."),
        )
    } else {
        (
            "missed its check-in",
            format!("Next: check whether the job behind {name} ran at all (scheduler, host up, logs) and whether it can reach heal to ping."),
        )
    };
    let mut line = format!("What fired: heartbeat {name} {what}");
    if !f.since.is_empty() {
        let _ = write!(line, ", down since {}", f.since);
    }
    if !f.detail.is_empty() {
        let _ = write!(line, ": {}", f.detail);
    }
    let title = format!(
        "Heartbeat {name} is down: {}",
        if failed { "its last run failed" } else { what }
    );
    (title, vec![line, next])
}

/// "What fired: <summary, or the default>, since <t>", then "Details".
fn internal_fired(f: &Facts, default: &str) -> Vec<String> {
    let mut line = format!("What fired: {}", or(&f.summary, default));
    if !f.since.is_empty() {
        let _ = write!(line, ", since {}", f.since);
    }
    let mut lines = vec![line];
    if !f.detail.is_empty() {
        lines.push(format!("Details: {}", f.detail));
    }
    lines
}

/// " after being down for 2h": how long the alert lasted, when known.
fn after(f: &Facts, state: &str) -> String {
    if f.lasted.is_empty() {
        String::new()
    } else {
        format!(" after {state} for {}", f.lasted)
    }
}

fn probe_words(f: &Facts) -> (String, Vec<String>) {
    let name = or(&f.name, "(unnamed)");
    let (title, mut lines) = match f.kind.as_str() {
        "probe.down" => (
            format!("Probe {name} is failing"),
            [
                internal_fired(f, &format!("probe {name} is failing")),
                vec![format!("Next: check the service that probe {name} checks.")],
            ]
            .concat(),
        ),
        "probe.up" => (
            format!("Probe {name} passes again"),
            vec![
                format!("Result: probe {name} passes again{}.", after(f, "failing")),
                "Next: nothing to do.".to_string(),
            ],
        ),
        _ => return other_words(f),
    };
    if !f.runbook_url.is_empty() && f.kind == "probe.down" {
        lines.push(format!("Runbook: {}", f.runbook_url));
    }
    (title, lines)
}

fn agent_words(f: &Facts) -> (String, Vec<String>) {
    let name = or(&f.name, "(unnamed)");
    match f.kind.as_str() {
        "agent.down" => (
            format!("Agent {name} is down: it stopped polling heal"),
            [
                internal_fired(f, &format!("agent {name} stopped polling")),
                vec![
                    format!("Impact: runbooks cannot run on {name} until its agent polls again."),
                    format!("Next: check that host {name} is up and that its heal agent is running and can reach the server."),
                ],
            ]
            .concat(),
        ),
        "agent.up" => (
            format!("Agent {name} is back"),
            vec![
                format!("Result: agent {name} polls again{}; runbooks can run on it.", after(f, "being down")),
                "Next: nothing to do.".to_string(),
            ],
        ),
        _ => other_words(f),
    }
}

fn safety_words(f: &Facts) -> (String, Vec<String>) {
    match f.kind.as_str() {
        "safety.tripped" => {
            let mut line = "What fired: heal's safety breaker opened".to_string();
            if !f.since.is_empty() {
                let _ = write!(line, " at {}", f.since);
            }
            let _ = write!(line, ": {}", or(&f.cause, "no reason recorded"));
            let lines = vec![
                line,
                "What heal did: stopped all automation; no rule runs a runbook on any host until the breaker is reset.".to_string(),
                "Next: find out why runs fail (the recent failed events), fix that, then run: heal breaker reset".to_string(),
            ];
            (
                "Safety breaker open: heal stopped all automation".to_string(),
                lines,
            )
        }
        "safety.reset" => {
            let lines = vec![
                format!(
                    "Result: the safety breaker is closed again{}; rules run runbooks again.",
                    after(f, "being open")
                ),
                "Next: nothing to do; watch the next events.".to_string(),
            ];
            (
                "Safety breaker reset: automation runs again".to_string(),
                lines,
            )
        }
        _ => other_words(f),
    }
}

fn test_words(f: &Facts) -> (String, Vec<String>) {
    let title = if f.channel.is_empty() {
        "Test notification from heal".to_string()
    } else {
        format!("Test notification from heal to channel {}", f.channel)
    };
    let lines = vec![
        "What fired: nothing; this is a test, and heal did nothing.".to_string(),
        "Next: nothing to do; if you can read this, the channel works.".to_string(),
    ];
    (title, lines)
}

/// A kind this version does not know: its name and whatever the alert says.
fn other_words(f: &Facts) -> (String, Vec<String>) {
    let title = if f.kind.is_empty() {
        "heal notification".to_string()
    } else {
        format!("heal notification: {}", f.kind)
    };
    (title, fired(f))
}

// ---- fields and output ------------------------------------------------------

fn fields(f: &Facts) -> Vec<(&'static str, String)> {
    let mut out = vec![("Severity", f.severity.to_string())];
    push(&mut out, "Team", &f.team);
    let resolving = kind_named(&f.kind).is_some_and(|k| k.resolves);
    let (time_name, time) = if resolving {
        ("Lasted", &f.lasted)
    } else {
        ("Since", &f.since)
    };
    match f.group {
        "event" => event_fields(&mut out, f),
        "heartbeat" | "probe" | "agent" => {
            let name = match f.group {
                "heartbeat" => "Heartbeat",
                "probe" => "Probe",
                _ => "Agent",
            };
            push(&mut out, name, &f.name);
            push(&mut out, "Alert", &f.alert);
            push(&mut out, time_name, time);
        }
        "safety" => push(&mut out, time_name, time),
        "test" => push(&mut out, "Channel", &f.channel),
        _ => {
            push(&mut out, "Alert", &f.alert);
            push(&mut out, "Since", &f.since);
        }
    }
    out
}

fn event_fields(out: &mut Vec<(&'static str, String)>, f: &Facts) {
    let event = match (f.event.is_empty(), f.state.is_empty()) {
        (true, _) => String::new(),
        (false, true) => f.event.clone(),
        (false, false) => format!("{} ({})", f.event, f.state.replace('_', " ")),
    };
    push(out, "Event", &event);
    push(out, "Rule", &f.rule);
    push(out, "Runbook", &f.runbook);
    push(out, "Targets", &f.targets);
    if f.key != f.targets {
        push(out, "Key", &f.key);
    }
    push(out, "Alert", &f.alert);
    if !f.mode.is_empty() && f.mode != "live" {
        push(out, "Mode", &f.mode);
    }
}

fn push(out: &mut Vec<(&'static str, String)>, name: &'static str, value: &str) {
    if !value.is_empty() {
        out.push((name, cut(value, FIELD_MAX)));
    }
}

/// The first op that failed, timed out or was lost.
fn failing_op(doc: &Value) -> Option<&Value> {
    doc["ops"]
        .as_array()?
        .iter()
        .find(|op| matches!(get(op, &["state"]), "failed" | "timed_out" | "lost"))
}

/// "step restart exited 1", "step restart timed out", "lost".
fn op_failure(op: &Value) -> String {
    let step = first(&[&op["step"]], NAME_MAX);
    let step = if step.is_empty() {
        step
    } else {
        format!("step {step} ")
    };
    match (get(op, &["state"]), op["exit_code"].as_i64()) {
        ("timed_out", _) => format!("{step}timed out"),
        ("lost", _) => "op lost".to_string(),
        (_, Some(code)) => format!("{step}exited {code}"),
        (_, None) => format!("{step}failed"),
    }
}

/// "Ops: web-1 failed (step restart exited 1); web-2 succeeded", when an
/// event has more than one op.
fn ops_line(doc: &Value) -> String {
    let ops = doc["ops"].as_array().map_or(&[][..], Vec::as_slice);
    let total = doc["ops_total"].as_u64().unwrap_or(0).max(ops.len() as u64);
    if total < 2 {
        return String::new();
    }
    let shown: Vec<String> = ops
        .iter()
        .take(5)
        .map(|op| {
            let agent = or(&first(&[&op["agent"]], NAME_MAX), "?").to_string();
            match get(op, &["state"]) {
                "failed" | "timed_out" | "lost" => format!("{agent} failed ({})", op_failure(op)),
                state => format!("{agent} {}", clean(&state.replace('_', " "), NAME_MAX)),
            }
        })
        .collect();
    let mut line = format!("Ops: {}", shown.join("; "));
    if total > shown.len() as u64 {
        let _ = write!(line, "; and {} more", total - shown.len() as u64);
    }
    line
}

/// The failing op's heading and output tail; none for other kinds.
fn output(doc: &Value, f: &Facts) -> Option<(String, String)> {
    if f.group != "event" || f.kind == "event.succeeded" {
        return None;
    }
    let op = failing_op(doc)?;
    let mut tail_text = tail(get(op, &["output"]), OUTPUT_MAX);
    if tail_text.is_empty() {
        tail_text = clean(get(op, &["error"]), OUTPUT_MAX);
    }
    if tail_text.is_empty() {
        return None;
    }
    Some((op_heading(op), tail_text))
}

/// "web-1 · step restart · exit 1".
fn op_heading(op: &Value) -> String {
    let step = first(&[&op["step"]], NAME_MAX);
    let end = match (op["exit_code"].as_i64(), get(op, &["state"])) {
        (Some(code), _) => format!("exit {code}"),
        (None, "timed_out") => "timed out".to_string(),
        (None, state) => clean(state, NAME_MAX),
    };
    let parts = [
        first(&[&op["agent"]], NAME_MAX),
        if step.is_empty() {
            step
        } else {
            format!("step {step}")
        },
        end,
    ];
    let parts: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        "the failing op".to_string()
    } else {
        parts.join(" · ")
    }
}

// ---- Slack ------------------------------------------------------------------

fn emoji(kind: &str) -> &'static str {
    match kind {
        "event.started" => ":arrow_forward:",
        "event.succeeded" => ":white_check_mark:",
        "event.failed" => ":x:",
        "event.escalated" => ":rotating_light:",
        "event.pending_approval" => ":raised_hand:",
        "event.cancelled" => ":no_entry_sign:",
        "event.resolved" => ":heavy_check_mark:",
        "event.dry_run" => ":eyes:",
        "heartbeat.down" => ":broken_heart:",
        "heartbeat.up" => ":green_heart:",
        "heartbeat.overrun" => ":hourglass:",
        "heartbeat.finished" => ":checkered_flag:",
        "probe.down" => ":red_circle:",
        "probe.up" => ":large_green_circle:",
        "agent.down" => ":electric_plug:",
        "agent.up" => ":large_green_circle:",
        "safety.tripped" => ":octagonal_sign:",
        "safety.reset" => ":arrows_counterclockwise:",
        "test" => ":wave:",
        "digest" => ":bell:",
        _ => ":information_source:",
    }
}

/// The lines as mrkdwn, labels in bold, packed into as few sections as fit.
fn slack_sections(lines: &[String]) -> Vec<String> {
    let mut sections: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in lines {
        let rendered = slack_line(line);
        if !current.is_empty() && units(&current) + 1 + units(&rendered) > SLACK_TEXT_MAX {
            sections.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&rendered);
    }
    if !current.is_empty() {
        sections.push(current);
    }
    sections
}

fn slack_line(line: &str) -> String {
    let label = LABELS.iter().find(|l| {
        line.strip_prefix(**l)
            .is_some_and(|rest| rest.starts_with(": "))
    });
    match label {
        Some(label) => {
            let head = format!("*{label}:* ");
            let rest = &line[label.len() + 2..];
            head.clone() + &escape_within(&neutralize(rest), SLACK_TEXT_MAX - units(&head), plain)
        }
        None => escape_within(&neutralize(line), SLACK_TEXT_MAX, plain),
    }
}

fn slack_fields(fields: &[(&'static str, String)]) -> Value {
    let fields: Vec<Value> = fields
        .iter()
        .take(SLACK_FIELDS)
        .map(|(name, value)| {
            let head = format!("*{name}:* ");
            let value = escape_within(&neutralize(value), SLACK_FIELD_MAX - units(&head), plain);
            json!({"type": "mrkdwn", "text": head + &value})
        })
        .collect();
    json!({"type": "section", "fields": fields})
}

/// The output in a code block: backticks inside are replaced so the block
/// cannot be closed early, and the tail is kept when it must be cut.
fn slack_output((heading, tail): &(String, String)) -> Option<Value> {
    if tail.is_empty() {
        return None;
    }
    let head = format!(
        "*Output of {}, last lines:*\n```\n",
        escape_within(&neutralize(heading), 200, plain)
    );
    let fence = "\n```";
    let budget = SLACK_TEXT_MAX - units(&head) - units(fence);
    let body = escape_tail_within(tail, budget);
    Some(json!({"type": "section", "text": {"type": "mrkdwn", "text": head + &body + fence}}))
}

fn slack_context(kind: &str, url: Option<&str>, doc: &Value) -> Value {
    let mut text = format!(
        "heal · {}",
        escape_within(&neutralize(kind), NAME_MAX, plain)
    );
    if let Some(url) = url {
        let url = escape_within(url, 1000, plain).replace('|', "%7C");
        let label = escape_within(&neutralize(&link_text(doc)), 200, plain).replace('|', "/");
        let _ = write!(text, " · <{url}|{label}>");
    }
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
}

/// "View event 42", "View heartbeat nightly-backup", …
fn link_text(doc: &Value) -> String {
    let name = clean(&subject_name(doc), NAME_MAX);
    match group(get(doc, &["kind"])) {
        "event" => format!("View event {}", clean(&event_id(doc), NAME_MAX)),
        "heartbeat" => format!("View heartbeat {name}"),
        "probe" => format!("View probe {name}"),
        "agent" => "View agents".to_string(),
        "safety" => "View the breaker".to_string(),
        _ => "View in heal".to_string(),
    }
}

/// Escapes Slack's control characters `&`, `<`, `>`.
fn plain(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        _ => out.push(c),
    }
}

/// Escapes like `plain`, and replaces backticks so a code block stays closed.
fn code(c: char, out: &mut String) {
    match c {
        '`' => out.push('ˋ'),
        _ => plain(c, out),
    }
}

/// Replaces mrkdwn formatting characters in data with look-alikes, so alert
/// data cannot turn bold, struck or code. An underscore inside a word
/// (`disk_full`) formats nothing and stays, so names can still be searched.
fn neutralize(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let word = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_some_and(|c| c.is_alphanumeric())
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            '*' => '∗',
            '~' => '∼',
            '`' => 'ˋ',
            '_' if !(word(i.checked_sub(1)) && word(Some(i + 1))) => '＿',
            c => *c,
        })
        .collect()
}

/// Escapes `s` with `esc` and keeps the start, at most `max` UTF-16 units,
/// never cutting an escape in half.
fn escape_within(s: &str, max: usize, esc: fn(char, &mut String)) -> String {
    let mut out = String::new();
    let mut n = 0;
    let mut fits = 0;
    let mut piece = String::new();
    for c in s.chars() {
        piece.clear();
        esc(c, &mut piece);
        let u = units(&piece);
        if n + u <= max.saturating_sub(1) {
            fits = out.len() + piece.len();
        }
        if n + u > max {
            out.truncate(fits);
            out.push('…');
            return out;
        }
        n += u;
        out.push_str(&piece);
    }
    out
}

/// Escapes `s` with `code` and keeps the end, at most `max` UTF-16 units.
fn escape_tail_within(s: &str, max: usize) -> String {
    let mut pieces: Vec<String> = Vec::new();
    let mut n = 0;
    for c in s.chars().rev() {
        let mut piece = String::new();
        code(c, &mut piece);
        n += units(&piece);
        if n > max.saturating_sub(1) {
            pieces.push("…".to_string());
            break;
        }
        pieces.push(piece);
    }
    pieces.reverse();
    pieces.concat()
}

// ---- PagerDuty ----------------------------------------------------------------

/// Custom details: the fields by name, the lines and the output.
fn details(m: &Message) -> Value {
    let mut out: Map<String, Value> = m
        .fields
        .iter()
        .map(|(name, value)| (name.to_string(), Value::from(value.as_str())))
        .collect();
    out.insert("lines".into(), json!(m.lines));
    if let Some((heading, tail)) = &m.output {
        out.insert("output".into(), format!("{heading}\n{tail}").into());
    }
    Value::Object(out)
}

// ---- text helpers -------------------------------------------------------------

/// A JSON string or number as text; "" for anything else.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// The first non-empty of `values`, cleaned to one line of at most `max`.
fn first(values: &[&Value], max: usize) -> String {
    values
        .iter()
        .map(|v| clean(&scalar(v), max))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

/// A list of strings as "a, b, c and 2 more".
fn list(v: &Value, max: usize) -> String {
    let items: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| clean(&scalar(i), NAME_MAX))
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match items.len().saturating_sub(max) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

/// UTF-16 code units, as Slack counts.
fn units(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Cuts `s` to at most `max` UTF-16 units, ending in "…" when cut.
fn cut(s: &str, max: usize) -> String {
    escape_within(s, max, |c, out| out.push(c))
}

/// Characters that change how text is shown without being seen: zero-width
/// spaces and joiners, bidirectional overrides, the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// One line: control characters and runs of white space become one space,
/// invisible characters go, at most `max` units. Stops reading once over the
/// limit, so 100 KB costs no more than 1 KB.
fn clean(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if invisible(c) {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        // Four bytes per unit at most, so this is over `max` units.
        if out.len() > max * 4 {
            break;
        }
    }
    cut(&out, max)
}

/// The last lines of command output, at most `max` units: terminal escapes,
/// carriage returns and other control characters removed, a cut line
/// dropped and the cut marked with "…".
fn tail(s: &str, max: usize) -> String {
    let mut start = s.len().saturating_sub(max * 4);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let text = strip_controls(&s[start..]);
    let text = text.trim_end();
    let text = text.trim_start_matches(['\n', ' ', '\t']);
    if units(text) <= max && start == 0 {
        return text.to_string();
    }
    let mut kept: Vec<char> = Vec::new();
    let mut n = 0;
    for c in text.chars().rev() {
        n += c.len_utf16();
        if n > max - 2 {
            break;
        }
        kept.push(c);
    }
    kept.reverse();
    let kept: String = kept.into_iter().collect();
    match kept.split_once('\n') {
        Some((_, whole_lines)) if !whole_lines.trim().is_empty() => format!("…\n{whole_lines}"),
        _ => format!("…{kept}"),
    }
}

/// Removes ANSI escape sequences and control characters except newline;
/// a tab becomes four spaces.
fn strip_controls(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next_if_eq(&'[').is_some() {
                    // A CSI sequence ends with its first byte in '@'..='~'.
                    let _ = chars.by_ref().find(|d| ('@'..='~').contains(d));
                }
            }
            '\n' => out.push('\n'),
            '\t' => out.push_str("    "),
            c if c.is_control() || invisible(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// An RFC 3339 time as "2026-11-23 20:49:50 UTC"; other text cleaned.
fn when(text: &str) -> String {
    match parse_rfc3339(text) {
        Ok(Some(ms)) => {
            let t = format_rfc3339(ms);
            match (t.get(..10), t.get(11..19)) {
                (Some(day), Some(time)) => format!("{day} {time} UTC"),
                _ => t,
            }
        }
        Ok(None) => String::new(),
        Err(_) => clean(text, 40),
    }
}

/// How long from one RFC 3339 time to another: "3s", "2h15m", "450ms".
fn elapsed(from: &str, to: &str) -> String {
    match (parse_rfc3339(from), parse_rfc3339(to)) {
        (Ok(Some(a)), Ok(Some(b))) if b >= a => {
            let ms = (b - a) as u64;
            let d = if ms < 1000 {
                Duration::from_millis(ms)
            } else {
                Duration::from_secs((ms + 500) / 1000)
            };
            format_duration(d)
        }
        _ => String::new(),
    }
}

/// Percent-encodes one URL path segment; `None` when empty or absurdly long.
fn segment(s: &str) -> Option<String> {
    if s.trim().is_empty() || s.len() > 512 {
        return None;
    }
    Some(encode(s))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::KINDS;

    const BASE: Option<&str> = Some("https://heal.example.com");
    const SNAPSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/notify/snapshots/");

    /// Compares `actual` with the snapshot file `name`, or writes it when
    /// `HEAL_UPDATE_SNAPSHOTS=1`.
    fn snapshot(name: &str, actual: &str) {
        let path = format!("{SNAPSHOTS}{name}");
        if std::env::var("HEAL_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
            std::fs::create_dir_all(SNAPSHOTS).expect("create the snapshot directory");
            std::fs::write(&path, actual).expect("write a snapshot");
            return;
        }
        let Ok(expected) = std::fs::read_to_string(&path) else {
            panic!("snapshot {path} is missing: run with HEAL_UPDATE_SNAPSHOTS=1 to create it");
        };
        assert_eq!(
            actual, expected,
            "snapshot {path} differs (HEAL_UPDATE_SNAPSHOTS=1 rewrites it)"
        );
    }

    /// Sets `value` at `path`, creating objects on the way.
    fn set(doc: &mut Value, path: &[&str], value: Value) {
        let mut v = doc;
        for p in path {
            v = &mut v[*p];
        }
        *v = value;
    }

    fn event_doc(kind: &str) -> Value {
        let labels = json!({"alertname": "NginxDown", "instance": "web-1", "severity": "critical", "team": "web"});
        json!({
            "id": 17, "kind": kind, "at": "2026-11-23T20:50:01.123Z",
            "subject": "42", "dedup_key": "heal/event/42",
            "resolves": kind_named(kind).is_some_and(|k| k.resolves),
            "severity": "critical", "team": "web", "rule": "restart-nginx", "runbook": "nginx-restart",
            "labels": labels,
            "event": {"id": 42, "state": "failed", "reason": "op 7 on web-1: step restart exited 1", "mode": "live",
                      "key": "web-1", "rule": "restart-nginx", "runbook": "nginx-restart", "hits": 3,
                      "created_at": "2026-11-23T20:49:58.000Z", "ended_at": "2026-11-23T20:50:01.100Z",
                      "targets": ["web-1"], "decided_by": null},
            "alert": {"name": "NginxDown", "fingerprint": "a1b2c3d4e5f60718", "status": "firing", "source": "alertmanager",
                      "labels": labels,
                      "annotations": {"summary": "nginx on web-1 is down",
                                      "description": "nginx has not answered on :80 for 1 minute."},
                      "starts_at": "2026-11-23T20:49:50.000Z"},
            "ops": [{"id": 7, "agent": "web-1", "kind": "run", "state": "failed", "exit_code": 1, "duration_ms": 2100,
                     "error": "step restart exited 1", "step": "restart",
                     "output": "+ systemctl restart nginx.service\nJob for nginx.service failed because the control process exited with error code.\nSee \"systemctl status nginx.service\" and \"journalctl -xeu nginx.service\" for details.\n+ nginx -t\nnginx: [emerg] unknown directive \"proxy_pas\" in /etc/nginx/sites-enabled/app.conf:14\nnginx: configuration file /etc/nginx/nginx.conf test failed\n"}],
            "ops_total": 1,
            "heartbeat": null, "probe": null, "agent": null, "breaker": null
        })
    }

    fn event_sample(kind: &str) -> Value {
        let mut doc = event_doc(kind);
        let mut state = |s: &str, reason: &str| {
            set(&mut doc, &["event", "state"], s.into());
            set(&mut doc, &["event", "reason"], reason.into());
        };
        match kind {
            "event.started" => state("queued", ""),
            "event.succeeded" => state("succeeded", "op 7 on web-1 succeeded; NginxDown no longer firing"),
            "event.escalated" => state("escalated", "3 attempts for key \"web-1\" within 1h (max_attempts = 3): event 40 failed: op 5 on web-1: step restart exited 1; event 41 failed: op 6 on web-1: step restart exited 1; event 42 failed; people must take over, nothing runs"),
            "event.pending_approval" => state("pending_approval", "rule \"restart-nginx\" requires approval"),
            "event.cancelled" => state("cancelled", "rejected: nginx is being upgraded by hand"),
            "event.resolved" => state("escalated", "NginxDown resolved"),
            "event.dry_run" => state("dry_run", "rule \"restart-nginx\" is in dry-run mode; live, heal would run: runbook \"nginx-restart\" on web-1; nothing ran"),
            _ => {}
        }
        match kind {
            "event.started" => {
                set(&mut doc, &["event", "ended_at"], Value::Null);
                set(
                    &mut doc,
                    &["ops"],
                    json!([{"id": 7, "agent": "web-1", "kind": "run", "state": "queued"}]),
                );
            }
            "event.succeeded" => set(
                &mut doc,
                &["ops"],
                json!([{"id": 7, "agent": "web-1", "kind": "run", "state": "succeeded", "exit_code": 0,
                        "duration_ms": 1800, "output": "+ systemctl restart nginx.service\n"}]),
            ),
            "event.failed" => {}
            _ => set(&mut doc, &["ops"], json!([])),
        }
        match kind {
            "event.cancelled" => set(&mut doc, &["event", "decided_by"], "alice".into()),
            "event.resolved" => {
                set(&mut doc, &["alert", "status"], "resolved".into());
                set(&mut doc, &["at"], "2026-11-23T21:35:12.000Z".into());
            }
            "event.dry_run" => set(&mut doc, &["event", "mode"], "dry-run".into()),
            _ => {}
        }
        doc
    }

    fn internal(kind: &str, subject: &str, alert: &str, annotations: Value) -> Value {
        let k = kind_named(kind).expect("a known kind");
        let labels = match k.subject {
            "heartbeat" | "heartbeat-runtime" => json!({"heartbeat": subject, "team": "infra"}),
            "probe" => json!({"probe": subject, "probe_type": "http", "team": "web"}),
            "agent" => json!({"agent": subject}),
            _ => json!({}),
        };
        json!({
            "id": 18, "kind": kind, "at": "2026-11-23T04:00:01.200Z",
            "subject": subject, "dedup_key": dedup_key(k, subject), "resolves": k.resolves,
            "severity": k.severity, "team": labels["team"], "rule": null, "runbook": null,
            "labels": labels,
            "event": null,
            "alert": {"name": alert, "fingerprint": "0f1e2d3c4b5a6978", "status": if k.resolves { "resolved" } else { "firing" },
                      "source": "heal", "labels": labels, "annotations": annotations,
                      "starts_at": "2026-11-23T04:00:01.000Z"},
            "ops": [], "ops_total": 0,
            "heartbeat": null, "probe": null, "agent": null, "breaker": null
        })
    }

    fn internal_sample(kind: &str) -> Value {
        let backup = "nightly-backup";
        let mut doc = match kind.split('.').next().unwrap_or_default() {
            "heartbeat" if kind.ends_with("overrun") || kind.ends_with("finished") => {
                let why = "last ping 2026-11-23T01:00:02Z; next due 2026-11-24T01:00:00Z; started 3h ago and has not finished (max runtime 2h)";
                let mut d = internal(
                    kind,
                    backup,
                    "HeartbeatRuntimeExceeded",
                    json!({
                    "summary": "heartbeat nightly-backup: a run has taken longer than 2h",
                    "description": why, "runbook_url": "https://wiki.example/backup"}),
                );
                d["heartbeat"] = json!({"name": backup, "reason": "overrun", "description": why});
                d
            }
            "heartbeat" => {
                let why = if kind.ends_with("up") {
                    "last ping 2026-11-23T05:12:39Z; next due 2026-11-24T03:00:00Z"
                } else {
                    "no ping since 2026-11-22T03:00:05Z; due 2026-11-23T03:00:00Z, grace 1h"
                };
                let mut d = internal(
                    kind,
                    backup,
                    "HeartbeatMissing",
                    json!({
                    "summary": "heartbeat nightly-backup is down", "description": why,
                    "reason": "missed", "runbook_url": "https://wiki.example/backup"}),
                );
                d["heartbeat"] = json!({"name": backup, "reason": "missed", "description": why});
                d
            }
            "probe" => {
                let why = "api-health failed 3 times in a row; last: HTTP 503 from https://api.example.com/healthz (want 200)";
                let mut d = internal(
                    kind,
                    "api-health",
                    "ProbeFailing",
                    json!({
                    "summary": "probe api-health is failing: HTTP 503 from https://api.example.com/healthz (want 200)",
                    "description": why}),
                );
                d["probe"] = json!({"name": "api-health", "description": why});
                d
            }
            "agent" => {
                let why = "agent web-1 last polled 3m ago (agent_down_after 2m)";
                let mut d = internal(
                    kind,
                    "web-1",
                    "AgentDown",
                    json!({
                    "summary": "agent web-1 stopped polling", "description": why}),
                );
                d["agent"] = json!({"id": "web-1", "description": why});
                d
            }
            _ => {
                let why = "5 failed events in a row, [safety] max_failed_in_row = 5";
                let mut d = internal(
                    kind,
                    "breaker",
                    "SafetyBreakerOpen",
                    json!({
                    "summary": "heal's safety breaker is open: automation is stopped",
                    "description": format!("{why}; reset with `heal breaker reset`")}),
                );
                d["breaker"] = json!({"reason": why});
                d
            }
        };
        if kind_named(kind).is_some_and(|k| k.resolves) {
            doc["at"] = "2026-11-23T05:12:40.000Z".into();
        }
        doc
    }

    /// A realistic document of `kind`.
    fn sample(kind: &str) -> Value {
        match kind {
            "test" => json!({"id": 19, "kind": "test", "at": "2026-11-23T12:00:00.000Z",
                             "severity": "info", "channel": "ops-chat"}),
            k if k.starts_with("event.") => event_sample(k),
            k => internal_sample(k),
        }
    }

    /// 25 notifications, as a storm delivers them.
    fn storm() -> Vec<Value> {
        let mut docs = Vec::new();
        for i in 0..25u64 {
            let kind = match i % 5 {
                _ if i < 15 && i % 5 != 4 => "event.succeeded",
                _ if i >= 23 => "heartbeat.down",
                _ if i >= 21 => "event.failed",
                _ => "event.started",
            };
            let mut doc = sample(kind);
            if kind.starts_with("event.") {
                let host = format!("web-{}", i % 6 + 1);
                set(&mut doc, &["event", "id"], json!(100 + i));
                set(&mut doc, &["event", "targets"], json!([host]));
                set(&mut doc, &["event", "key"], json!(host));
            }
            docs.push(doc);
        }
        docs
    }

    #[test]
    fn every_kind_reads_well_in_plain_text() {
        for kind in KINDS {
            let doc = sample(kind.name);
            snapshot(&format!("{}.txt", kind.name), &text(&message(&doc, BASE)));
        }
    }

    #[test]
    fn slack_of_a_failed_event() {
        let doc = sample("event.failed");
        let body = slack(&message(&doc, BASE), &doc);
        let pretty = serde_json::to_string_pretty(&body).expect("json serializes");
        snapshot("slack-event.failed.json", &(pretty + "\n"));
    }

    #[test]
    fn digest_of_a_storm() {
        let m = digest(&storm(), BASE);
        assert_eq!(
            m.title,
            "25 notifications: 12 event.succeeded, 9 event.started, 2 event.failed, 2 heartbeat.down"
        );
        assert_eq!(m.lines.len(), DIGEST_LINES + 1);
        assert_eq!(m.lines[DIGEST_LINES], "… and 5 more");
        snapshot("digest.txt", &text(&m));
    }

    #[test]
    fn webhook_digest_renders_each_notification() {
        let docs = storm();
        let body = webhook_digest(&docs, &digest(&docs, BASE), BASE);
        assert_eq!(body["kind"], "digest");
        assert_eq!(body["count"], 25);
        let first = &body["notifications"][0];
        assert_eq!(first["kind"], "event.succeeded");
        assert_eq!(first["url"], "https://heal.example.com/api/v1/events/100");
        assert!(first["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Fixed: "));
    }

    #[test]
    fn webhook_is_the_document_with_title_text_and_url() {
        let doc = sample("heartbeat.down");
        let body = webhook(&doc, &message(&doc, None));
        assert_eq!(body["kind"], "heartbeat.down");
        assert_eq!(body["heartbeat"]["name"], "nightly-backup");
        assert_eq!(body["url"], Value::Null);
        assert!(body["title"]
            .as_str()
            .unwrap_or_default()
            .contains("nightly-backup"));
    }

    #[test]
    fn links_by_kind() {
        let check = |doc: &Value, base: Option<&str>, want: Option<&str>| {
            assert_eq!(link(doc, base).as_deref(), want, "{doc}");
        };
        let base = Some("https://heal.example.com/");
        check(
            &sample("event.failed"),
            base,
            Some("https://heal.example.com/api/v1/events/42"),
        );
        check(&sample("event.failed"), None, None);
        check(
            &sample("heartbeat.overrun"),
            base,
            Some("https://heal.example.com/api/v1/heartbeats/nightly-backup"),
        );
        check(
            &sample("probe.up"),
            base,
            Some("https://heal.example.com/api/v1/probes/api-health"),
        );
        check(
            &sample("agent.down"),
            base,
            Some("https://heal.example.com/api/v1/agents"),
        );
        check(
            &sample("safety.tripped"),
            base,
            Some("https://heal.example.com/api/v1/breaker"),
        );
        check(&sample("test"), base, None);
        let odd = json!({"kind": "heartbeat.down", "heartbeat": {"name": "backup db/1 ü"}});
        check(
            &odd,
            base,
            Some("https://heal.example.com/api/v1/heartbeats/backup%20db%2F1%20%C3%BC"),
        );
        check(&json!({"kind": "event.failed"}), base, None);
        check(
            &json!({"kind": "event.failed", "subject": "7"}),
            base,
            Some("https://heal.example.com/api/v1/events/7"),
        );
    }

    #[test]
    fn pagerduty_triggers_or_resolves_by_kind() {
        for kind in KINDS {
            let doc = sample(kind.name);
            let body = pagerduty(&doc, &message(&doc, BASE), "R0UT1NG");
            let action = if kind.resolves { "resolve" } else { "trigger" };
            assert_eq!(body["event_action"], action, "{}", kind.name);
            assert_eq!(body["routing_key"], "R0UT1NG");
            assert!(
                body["dedup_key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("heal/")),
                "{}",
                kind.name
            );
            if kind.resolves {
                assert_eq!(body.as_object().map(Map::len), Some(3), "{}", kind.name);
            }
        }
        let doc = sample("event.failed");
        let body = pagerduty(&doc, &message(&doc, BASE), "R0UT1NG");
        let p = &body["payload"];
        assert_eq!(body["dedup_key"], "heal/event/42");
        assert_eq!(p["severity"], "critical");
        assert_eq!(p["source"], "web-1");
        assert_eq!(p["component"], "nginx-restart");
        assert_eq!(p["group"], "web");
        assert_eq!(p["class"], "event.failed");
        assert_eq!(p["timestamp"], "2026-11-23T20:50:01.123Z");
        assert_eq!(p["custom_details"]["Rule"], "restart-nginx");
        assert!(p["custom_details"]["output"]
            .as_str()
            .unwrap_or_default()
            .contains("proxy_pas"));
        assert_eq!(
            body["links"][0]["href"],
            "https://heal.example.com/api/v1/events/42"
        );
        assert_eq!(body["links"][0]["text"], "View event 42");
        assert_eq!(
            body["client_url"],
            "https://heal.example.com/api/v1/events/42"
        );
    }

    #[test]
    fn opsgenie_creates_or_closes_by_alias() {
        let doc = sample("event.failed");
        let (path, body) = opsgenie(&doc, &message(&doc, BASE));
        assert_eq!(path, "/v2/alerts");
        assert_eq!(body["alias"], "heal/event/42");
        assert_eq!(body["priority"], "P1");
        assert_eq!(
            body["tags"],
            json!(["heal", "event.failed", "web", "critical"])
        );
        assert_eq!(body["details"]["Runbook"], "nginx-restart");
        assert_eq!(body["entity"], "web-1");
        let doc = sample("heartbeat.up");
        let (path, body) = opsgenie(&doc, &message(&doc, BASE));
        assert_eq!(
            path,
            "/v2/alerts/heal%2Fheartbeat%2Fnightly-backup/close?identifierType=alias"
        );
        assert_eq!(body["source"], "heal");
        assert_eq!(body["note"], "Heartbeat nightly-backup is up again");
        let priorities: Vec<Value> = ["warning", "error", "info", "page"]
            .iter()
            .map(|s| {
                let doc = json!({"kind": "probe.down", "severity": s});
                opsgenie(&doc, &message(&doc, None)).1["priority"].clone()
            })
            .collect();
        assert_eq!(
            priorities,
            [json!("P3"), json!("P2"), json!("P5"), json!("P1")]
        );
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // printf '1700000000.{"kind":"test"}' | openssl dgst -sha256 -hmac Jefe
        assert_eq!(
            signature("Jefe", 1_700_000_000, br#"{"kind":"test"}"#),
            "sha256=d85359376e3c56a8af469c1d558d97ea1b1a11a324cc665e9cd1613664d3422a"
        );
    }

    #[test]
    fn failed_events_name_the_step_and_how_it_ended() {
        let check = |state: &str, op: Value, want: &str| {
            let mut doc = sample("event.failed");
            set(&mut doc, &["event", "state"], state.into());
            set(&mut doc, &["ops"], json!([op]));
            assert_eq!(message(&doc, None).title, want);
        };
        let op = |state: &str, code: Value| json!({"agent": "web-1", "step": "restart", "state": state, "exit_code": code});
        check(
            "failed",
            op("failed", json!(1)),
            "Failed: nginx-restart on web-1, step restart exited 1 (event 42)",
        );
        check(
            "timed_out",
            op("timed_out", Value::Null),
            "Timed out: nginx-restart on web-1, step restart timed out (event 42)",
        );
        check(
            "lost",
            op("lost", Value::Null),
            "Lost: nginx-restart on web-1, op lost (event 42)",
        );
        check(
            "failed",
            json!({}),
            "Failed: nginx-restart on web-1 (event 42)",
        );
    }

    #[test]
    fn events_with_many_ops_list_them() {
        let mut doc = sample("event.failed");
        set(
            &mut doc,
            &["event", "targets"],
            json!(["web-1", "web-2", "web-3", "web-4"]),
        );
        set(&mut doc, &["ops_total"], json!(7));
        set(
            &mut doc,
            &["ops"],
            json!([
                {"agent": "web-1", "state": "failed", "step": "restart", "exit_code": 1},
                {"agent": "web-2", "state": "succeeded", "exit_code": 0},
                {"agent": "web-3", "state": "timed_out", "step": "drain"},
            ]),
        );
        let m = message(&doc, None);
        assert!(
            m.title.starts_with(
                "Failed: nginx-restart on web-1, web-2, web-3 and 1 more, step restart exited 1"
            ),
            "{}",
            m.title
        );
        assert!(m.lines.contains(&"Ops: web-1 failed (step restart exited 1); web-2 succeeded; web-3 failed (step drain timed out); and 4 more".to_string()), "{:?}", m.lines);
    }

    #[test]
    fn output_tail_keeps_the_last_whole_lines() {
        let long: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let t = tail(&long, 100);
        assert!(units(&t) <= 100, "{t}");
        assert!(t.starts_with("…\nline "), "{t}");
        assert!(t.ends_with("line 499"), "{t}");
        assert_eq!(
            tail("\x1b[31mred\x1b[0m\r\n\tdone\n\n", 100),
            "red\n    done"
        );
        assert_eq!(tail("short", 100), "short");
        let one_line = "x".repeat(5000);
        assert!(units(&tail(&one_line, 100)) <= 100);
    }

    #[test]
    fn cutting_counts_utf16_and_marks_the_cut() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("😀😀😀", 4), "😀…");
        assert_eq!(escape_within("a&b", 6, plain), "a…");
        assert_eq!(escape_within("a&b", 7, plain), "a&amp;b");
        assert_eq!(clean(" a\n\tb  <c>\u{202E} ", 100), "a b <c>");
        assert_eq!(
            neutralize("*x* _y_ disk_full ~z~ `c`"),
            "∗x∗ ＿y＿ disk_full ∼z∼ ˋcˋ"
        );
    }

    // ---- hostile input ------------------------------------------------------

    const HOSTILE: &str =
        "<script>alert(1)</script> & *bold* _it_ ~gone~ ```code``` | > quote\nnext line <!channel>";

    fn hostile(kind: &str) -> Value {
        let mut doc = sample(kind);
        let huge = format!("{HOSTILE}\n").repeat(100_000 / HOSTILE.len());
        let labels = json!({"alertname": HOSTILE, "instance": HOSTILE, "team": HOSTILE, "severity": HOSTILE});
        for path in [&["labels"][..], &["alert", "labels"]] {
            set(&mut doc, path, labels.clone());
        }
        set(&mut doc, &["alert", "name"], HOSTILE.into());
        set(
            &mut doc,
            &["alert", "annotations"],
            json!({"summary": HOSTILE, "description": huge, "runbook_url": HOSTILE}),
        );
        set(&mut doc, &["team"], HOSTILE.into());
        set(&mut doc, &["channel"], huge.as_str().into());
        if kind.starts_with("event.") {
            for field in ["reason", "rule", "runbook", "key", "decided_by"] {
                set(&mut doc, &["event", field], HOSTILE.into());
            }
            set(
                &mut doc,
                &["event", "targets"],
                json!([HOSTILE, HOSTILE, HOSTILE, HOSTILE]),
            );
            let output = format!("```\n{}", huge.replace('\n', "\n```\n"));
            set(
                &mut doc,
                &["ops"],
                json!([{"id": 7, "agent": HOSTILE, "state": "failed", "exit_code": 1,
                                             "step": HOSTILE, "error": huge, "output": output}]),
            );
        }
        for object in ["heartbeat", "probe", "agent", "breaker"] {
            if !doc[object].is_null() {
                doc[object] =
                    json!({"name": HOSTILE, "id": HOSTILE, "reason": HOSTILE, "description": huge});
            }
        }
        doc
    }

    /// Every `text` in the Slack body, with the limit that applies to it.
    fn slack_texts(body: &Value) -> Vec<(String, usize)> {
        let mut out = vec![(
            body["text"].as_str().unwrap_or_default().to_string(),
            SLACK_TEXT_MAX,
        )];
        for block in body["blocks"].as_array().expect("blocks") {
            let max = if block["type"] == "header" {
                SLACK_HEADER_MAX
            } else {
                SLACK_TEXT_MAX
            };
            if let Some(t) = block["text"]["text"].as_str() {
                out.push((t.to_string(), max));
            }
            for field in block["fields"].as_array().into_iter().flatten() {
                out.push((
                    field["text"].as_str().unwrap_or_default().to_string(),
                    SLACK_FIELD_MAX,
                ));
            }
            for element in block["elements"].as_array().into_iter().flatten() {
                out.push((
                    element["text"].as_str().unwrap_or_default().to_string(),
                    SLACK_TEXT_MAX,
                ));
            }
        }
        out
    }

    /// The text without heal's own link `<https://heal.example.com/…|…>`.
    fn without_link(text: &str) -> String {
        let mut rest = text.to_string();
        if let Some(start) = rest.find("<https://heal.example.com/") {
            let end = rest[start..]
                .find('>')
                .map_or(rest.len(), |e| start + e + 1);
            rest.replace_range(start..end, "");
        }
        rest
    }

    /// No `<`, `>` or bare `&` but heal's own link.
    fn assert_escaped(text: &str) {
        let rest = without_link(text);
        assert!(
            !rest.contains('<') && !rest.contains('>'),
            "unescaped < or >: {rest}"
        );
        for (i, _) in rest.match_indices('&') {
            let after = &rest[i..];
            assert!(
                after.starts_with("&amp;")
                    || after.starts_with("&lt;")
                    || after.starts_with("&gt;"),
                "bare &: {after:.40}"
            );
        }
    }

    fn assert_slack_safe(body: &Value, kind: &str) {
        let blocks = body["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= SLACK_BLOCKS, "{kind}");
        for (i, (text, max)) in slack_texts(body).into_iter().enumerate() {
            assert!(units(&text) <= max, "{kind}: {} > {max}", units(&text));
            assert_escaped(&text);
            // The fallback and the header are plain text and a code block
            // is not formatted: Slack formats nothing there.
            let formatted = without_link(text.split("```").next().unwrap_or_default());
            if i > 1 {
                assert!(
                    !formatted.contains("*bold*") && !formatted.contains("~gone~"),
                    "{kind}: {text:.200}"
                );
            }
        }
        let header = blocks[0]["text"]["text"].as_str().unwrap_or_default();
        assert!(!header.contains('\n'), "{kind}");
        for block in blocks {
            assert!(
                block["fields"].as_array().map_or(0, Vec::len) <= SLACK_FIELDS,
                "{kind}"
            );
            let text = block["text"]["text"].as_str().unwrap_or_default();
            if text.contains("```") {
                assert_eq!(
                    text.matches("```").count(),
                    2,
                    "{kind}: a code block closed early"
                );
            }
        }
    }

    #[test]
    fn hostile_input_stays_within_every_limit() {
        for kind in KINDS {
            let doc = hostile(kind.name);
            let m = message(&doc, BASE);
            assert!(
                units(&m.title) <= TITLE_MAX && !m.title.contains('\n'),
                "{}",
                kind.name
            );
            for line in &m.lines {
                assert!(
                    units(line) <= LINE_MAX && !line.contains('\n'),
                    "{}",
                    kind.name
                );
            }
            if let Some((heading, tail)) = &m.output {
                assert!(
                    !heading.contains('\n') && units(tail) <= OUTPUT_MAX,
                    "{}",
                    kind.name
                );
            }
            let body = slack(&m, &doc);
            assert!(!body.to_string().contains("<script>"), "{}", kind.name);
            assert_slack_safe(&body, kind.name);
            let pd = pagerduty(&doc, &m, "key");
            let summary = pd["payload"]["summary"].as_str().unwrap_or_default();
            assert!(
                summary.chars().count() <= PAGERDUTY_SUMMARY_MAX,
                "{}",
                kind.name
            );
            let (_, og) = opsgenie(&doc, &m);
            let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
            assert!(len(&og["message"]) <= OPSGENIE_MESSAGE_MAX, "{}", kind.name);
            assert!(
                len(&og["description"]) <= OPSGENIE_DESCRIPTION_MAX,
                "{}",
                kind.name
            );
            assert!(len(&og["entity"]) <= OPSGENIE_ALIAS_MAX, "{}", kind.name);
            for tag in og["tags"].as_array().into_iter().flatten() {
                assert!(len(tag) <= OPSGENIE_TAG_MAX, "{}", kind.name);
            }
        }
    }

    #[test]
    fn hostile_digest_stays_within_slack_limits() {
        let docs: Vec<Value> = KINDS
            .iter()
            .cycle()
            .take(60)
            .map(|k| hostile(k.name))
            .collect();
        let m = digest(&docs, BASE);
        assert_slack_safe(&slack(&m, &json!({"kind": "digest"})), "digest");
    }

    #[test]
    fn empty_documents_render_without_panic() {
        let mut docs: Vec<Value> = KINDS.iter().map(|k| json!({"kind": k.name})).collect();
        docs.extend([
            Value::Null,
            json!({}),
            json!({"kind": 5}),
            json!({"kind": "event.new_thing"}),
            json!([1, 2]),
        ]);
        for doc in &docs {
            let m = message(doc, BASE);
            assert!(!m.title.is_empty(), "{doc}");
            assert!(!text(&m).is_empty());
            assert_slack_safe(&slack(&m, doc), &doc.to_string());
            let _ = pagerduty(doc, &m, "key");
            let (path, _) = opsgenie(doc, &m);
            assert!(path.starts_with("/v2/alerts"));
            let _ = webhook(doc, &m);
        }
        let m = digest(&docs, None);
        let _ = webhook_digest(&docs, &m, None);
        assert!(text(&digest(&[], None)).starts_with("0 notifications"));
    }
}
