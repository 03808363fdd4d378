//! Rendering a notification document into what a person reads (`Message`)
//! and into each channel's body: plain text, HTML (email), Slack, PagerDuty,
//! Opsgenie and a generic webhook, plus the webhook signature. Pure: no I/O and no clock;
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

mod channels;
mod words;

use crate::time::{format_duration, format_rfc3339, parse_rfc3339};
use channels::escape_within;
pub use channels::{
    html, html_char, opsgenie, pagerduty, signature, slack, webhook, webhook_digest,
};
use words::{failing_op, fields, op_failure, ops_line, output, words};

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
    "About",
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

// ---- the facts of a document ------------------------------------------------

/// The facts a message is made of, each cleaned to one line and capped; ""
/// when missing.
#[derive(Default)]
struct Facts {
    kind: String,
    group: &'static str,
    severity: &'static str,
    /// `P1`…`P5`, or "".
    priority: &'static str,
    team: String,
    event: String,
    state: String,
    reason: String,
    /// Why the rule decided as it did (escalate, await approval, dry run).
    decision: String,
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
    /// What a probe or heartbeat is for, from its `description`.
    about: String,
    /// A recovered probe's last (good) result.
    good: String,
    /// A probe's `severity` label (warning or critical), and the one it had
    /// when this notification tells of a change.
    probe_severity: String,
    was: String,
    /// A resolved agent alert whose agent was forgotten, not back.
    forgotten: bool,
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
    let key = clean(
        &key_words(&scalar(&event["key"]), get(alert, &["name"])),
        NAME_MAX,
    );
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
        priority: pager_priority(doc),
        team: team(doc),
        event: clean(&event_id(doc), NAME_MAX),
        state: first(&[&event["state"]], NAME_MAX),
        reason: first(&[&event["reason"]], PIECE_MAX),
        decision: first(&[&event["decision"], &event["reason"]], PIECE_MAX),
        rule: first(&[&event["rule"], &doc["rule"]], NAME_MAX),
        runbook: first(&[&event["runbook"], &doc["runbook"]], NAME_MAX),
        key: key.clone(),
        mode: first(&[&event["mode"]], NAME_MAX),
        targets: list(&event["targets"], 3),
        decided_by: first(&[&event["decided_by"]], NAME_MAX),
        took: elapsed(get(event, &["created_at"]), get(event, &["ended_at"])),
        hits: event["hits"].as_u64().unwrap_or(0),
        failure: failing_op(doc).map(op_failure).unwrap_or_default(),
        ops: ops_line(doc),
        alert: first(&[&alert["name"], &label(doc, "alertname")], NAME_MAX),
        status: first(&[&alert["status"]], NAME_MAX),
        instance: or(&first(&[&label(doc, "instance")], NAME_MAX), &key).to_string(),
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
        good: first(&[&subject["last_result"]], PIECE_MAX),
        probe_severity: first(&[&label(doc, "severity")], NAME_MAX),
        was: first(&[&subject["previous_severity"]], NAME_MAX),
        forgotten: subject["forgotten"] == true,
        about: first(
            &[
                &alert["annotations"]["probe_description"],
                &alert["annotations"]["heartbeat_description"],
            ],
            PIECE_MAX,
        ),
        channel: first(&[&doc["channel"]], NAME_MAX),
        summary,
        description,
    }
}

/// An event's key in words: a rule's list key (`["HAProxyQueueHigh","lb-1"]`)
/// as its parts without the alert's name (`lb-1`); any other key as it is.
fn key_words(key: &str, alert: &str) -> String {
    let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(key) else {
        return key.to_string();
    };
    let parts: Vec<String> = parts.iter().map(scalar).filter(|p| !p.is_empty()).collect();
    let named: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| *p != alert)
        .collect();
    if named.is_empty() {
        parts.join(", ")
    } else {
        named.join(", ")
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
/// The level pagers get: from the priority when there is one (p1
/// critical, p2 error, p3 warning, p4 and p5 info), else the severity.
fn severity(doc: &Value) -> &'static str {
    let priority = pager_priority(doc);
    if !priority.is_empty() {
        return severity_level(priority);
    }
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

/// The document's priority as pagers write it (`P1`…`P5`), or "".
fn pager_priority(doc: &Value) -> &'static str {
    match crate::config::priority_level(get(doc, &["priority"])) {
        Some("p1") => "P1",
        Some("p2") => "P2",
        Some("p3") => "P3",
        Some("p4") => "P4",
        Some("p5") => "P5",
        _ => "",
    }
}

/// Opsgenie's priority: the document's own, else from its level.
fn priority(doc: &Value, level: &str) -> &'static str {
    let own = pager_priority(doc);
    if !own.is_empty() {
        return own;
    }
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

#[cfg(test)]
mod tests;
