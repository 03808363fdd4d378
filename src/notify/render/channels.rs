//! Each channel's body, within its documented limits: Slack Block Kit,
//! PagerDuty Events API v2, Opsgenie Alert API, the webhook JSON and its
//! HMAC signature, and the HTML part of an email.

use super::*;

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
        "priority": priority(doc, level),
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
    format!("sha256={}", crate::config::hex(ctx.sign().as_ref()))
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
pub(super) fn plain(c: char, out: &mut String) {
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
pub(super) fn neutralize(s: &str) -> String {
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
pub(super) fn escape_within(s: &str, max: usize, esc: fn(char, &mut String)) -> String {
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

// ---- email ----------------------------------------------------------------------

/// The HTML part of an email (the plain part is `text`): the title, the
/// lines, the fields as a table, the output's tail in `<pre>`, the link.
/// Every text is escaped: labels, annotations and output come from alerts
/// and commands.
pub fn html(m: &Message) -> String {
    let e = |s: &str| escape_within(s, usize::MAX, html_char);
    let mut out = String::from("<!DOCTYPE html>\n<html><body>\n");
    let _ = writeln!(out, "<h2>{}</h2>", e(&m.title));
    for line in &m.lines {
        let _ = writeln!(out, "<p>{}</p>", e(line));
    }
    if !m.fields.is_empty() {
        out.push_str("<table>\n");
        for (name, value) in &m.fields {
            let _ = writeln!(
                out,
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                e(name),
                e(value)
            );
        }
        out.push_str("</table>\n");
    }
    if let Some((heading, tail)) = &m.output {
        let _ = writeln!(
            out,
            "<p>Output of {}, last lines:</p>\n<pre>{}</pre>",
            e(heading),
            e(tail)
        );
    }
    if let Some(url) = &m.link {
        let _ = writeln!(out, "<p>More: <a href=\"{0}\">{0}</a></p>", e(url));
    }
    out.push_str("</body></html>\n");
    out
}

/// Appends `c` with `&`, `<`, `>`, `"` and `'` as character references:
/// safe in element text and in quoted attribute values.
pub fn html_char(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
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
