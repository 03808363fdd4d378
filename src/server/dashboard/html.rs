//! Writing HTML safely: `Html` takes markup only as `&'static str` (what
//! heal's own code writes) and everything else — alert labels, names,
//! output, numbers — through `escape`, the one escaping function, in text
//! and in attribute values alike. A value cannot reach a page unescaped
//! without a `'static` string literal holding it.
//!
//! Also here: URLs (percent-encoded), times, durations and state badges as
//! every page shows them.

use std::fmt::{Display, Write};

use crate::time::{format_duration, format_rfc3339};

/// Appends `text` to `out` with `&`, `<`, `>`, `"` and `'` as character
/// references: safe in element text and in quoted attribute values.
pub fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        crate::notify::render::html_char(c, out);
    }
}

/// HTML under construction.
#[derive(Default)]
pub struct Html(String);

impl Html {
    /// An empty fragment.
    pub fn new() -> Html {
        Html(String::with_capacity(8 * 1024))
    }

    /// Markup written in heal's source.
    pub fn raw(&mut self, markup: &'static str) -> &mut Html {
        self.0.push_str(markup);
        self
    }

    /// Text, escaped.
    pub fn text(&mut self, value: impl Display) -> &mut Html {
        let mut s = String::new();
        let _ = write!(s, "{value}");
        escape(&mut self.0, &s);
        self
    }

    /// ` name="value"`, the value escaped.
    pub fn attr(&mut self, name: &'static str, value: impl Display) -> &mut Html {
        self.0.push(' ');
        self.0.push_str(name);
        self.0.push_str("=\"");
        self.text(value);
        self.0.push('"');
        self
    }

    /// `<a href="url">text</a>`.
    pub fn link(&mut self, url: &str, value: impl Display) -> &mut Html {
        self.raw("<a")
            .attr("href", url)
            .raw(">")
            .text(value)
            .raw("</a>")
    }

    /// Another fragment built the same way.
    pub fn append(&mut self, other: Html) -> &mut Html {
        self.0.push_str(&other.0);
        self
    }

    /// A table cell with its column's name (shown before the value on narrow screens).
    pub fn td(&mut self, label: &'static str, value: impl Display) -> &mut Html {
        self.raw("<td")
            .attr("data-label", label)
            .raw(">")
            .text(value)
            .raw("</td>")
    }

    /// Opens a table cell with its column's name; close it with `</td>`.
    pub fn td_open(&mut self, label: &'static str) -> &mut Html {
        self.raw("<td").attr("data-label", label).raw(">")
    }

    /// A table's head row from column names.
    pub fn thead(&mut self, columns: &[&'static str]) -> &mut Html {
        self.raw("<thead><tr>");
        for c in columns {
            self.raw("<th scope=\"col\">").raw(c).raw("</th>");
        }
        self.raw("</tr></thead>")
    }

    /// The finished markup.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// At most `max` characters of `text`, and how many more there were:
/// alert data may be large (a label of a megabyte is valid), a page stays small.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => {
            let more = text[at..].chars().count();
            format!("{}… ({more} more characters)", &text[..at])
        }
    }
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A path of heal's with a query: `url("/events", &[("rule", "x")])`;
/// empty values are left out.
pub fn url(path: &str, query: &[(&str, &str)]) -> String {
    let mut out = path.to_string();
    let mut sep = '?';
    for (k, v) in query.iter().filter(|(_, v)| !v.is_empty()) {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
        sep = '&';
    }
    out
}

/// `/base/<segment>` with the segment encoded.
pub fn path(base: &str, segment: impl Display) -> String {
    format!("{base}/{}", encode(&segment.to_string()))
}

/// A time as `<time>`: UTC date and time, and how long ago.
pub fn when(h: &mut Html, ms: Option<i64>, now: i64) {
    let Some(ms) = ms else {
        h.raw("<span class=\"none\">–</span>");
        return;
    };
    let full = format_rfc3339(ms);
    let shown = full.replace('T', " ");
    let shown = shown
        .split('.')
        .next()
        .unwrap_or(&shown)
        .trim_end_matches('Z');
    h.raw("<time")
        .attr("datetime", &full)
        .attr("title", &full)
        .raw(">");
    h.text(shown)
        .raw(" UTC <small>")
        .text(ago(ms, now))
        .raw("</small></time>");
}

/// "3m ago", "in 2h", "now".
pub fn ago(ms: i64, now: i64) -> String {
    let d = (now - ms).abs();
    if d < 1_000 {
        return "now".into();
    }
    let text = short_duration(d);
    if ms <= now {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// A duration at a glance: "850ms", "42s", "3m12s", "2h5m", "3d4h".
pub fn short_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let d = std::time::Duration::from_millis(ms as u64);
    let full = format_duration(std::time::Duration::from_secs(d.as_secs()));
    // At most the two largest units.
    let mut units = 0;
    let mut out = String::new();
    for c in full.chars() {
        out.push(c);
        if c.is_ascii_alphabetic() {
            units += 1;
            if units == 2 {
                break;
            }
        }
    }
    out
}

/// The look of a state: good, bad, waiting or neutral.
pub fn tone(state: &str) -> &'static str {
    match state {
        "succeeded" | "up" | "closed" | "sent" | "run" | "polling" | "resolved" => "good",
        "failed" | "timed_out" | "lost" | "escalated" | "down" | "open" | "invalid" | "breaker"
        | "firing" | "critical" | "config_differs" => "bad",
        "pending_approval" | "await-approval" | "deferred" | "late" | "paused" | "pending"
        | "defer" | "overrun" | "warning" => "wait",
        "queued" | "running" | "verifying" | "dispatched" | "started" => "busy",
        _ => "plain",
    }
}

/// A probe's state as a badge, and while it is down its severity beside it.
pub fn probe_badge(h: &mut Html, p: &serde_json::Value) {
    badge(h, p["state"].as_str().unwrap_or(""));
    if let Some(severity) = p["severity"].as_str() {
        h.raw(" ");
        badge(h, severity);
    }
}

/// A state as a badge: its words, coloured by `tone`.
pub fn badge(h: &mut Html, state: &str) {
    h.raw("<span class=\"badge ")
        .raw(tone(state))
        .raw("\">")
        .text(state.replace('_', " "))
        .raw("</span>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_dynamic_is_escaped_in_text_and_attributes() {
        let hostile = r#"<script>alert("x")</script> & 'q' "dq" </td><img src=x onerror=alert(1)>"#;
        let mut h = Html::new();
        h.raw("<p")
            .attr("title", hostile)
            .raw(">")
            .text(hostile)
            .raw("</p>");
        h.link(hostile, hostile).td("Label", hostile);
        let out = h.into_string();
        assert!(!out.contains("<script"), "{out}");
        assert!(!out.contains("<img"), "{out}");
        assert!(!out.contains("\"dq\""), "{out}");
        assert!(!out.contains("'q'"), "{out}");
        assert!(out.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;"));
        // Only the markup written here opens tags.
        assert_eq!(out.matches('<').count(), 6, "{out}");
    }

    #[test]
    fn long_values_are_clipped() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcdé", 2), "ab… (3 more characters)");
    }

    #[test]
    fn urls_encode_what_they_carry() {
        assert_eq!(
            url(
                "/events",
                &[("rule", "a b&c=d"), ("state", ""), ("x", "é/?")]
            ),
            "/events?rule=a%20b%26c%3Dd&x=%C3%A9%2F%3F"
        );
        assert_eq!(path("/heartbeats", "../x y"), "/heartbeats/..%2Fx%20y");
    }

    #[test]
    fn times_read_at_a_glance() {
        assert_eq!(ago(1_000, 1_500), "now");
        assert_eq!(ago(0, 190_000), "3m10s ago");
        assert_eq!(ago(7_200_000 + 300_000 + 5_000, 0), "in 2h5m");
        assert_eq!(short_duration(850), "850ms");
        assert_eq!(
            short_duration(3 * 86_400_000 + 4 * 3_600_000 + 5_000),
            "3d4h"
        );
        let mut h = Html::new();
        when(&mut h, Some(0), 60_000);
        let out = h.into_string();
        assert!(out.contains("datetime=\"1970-01-01T00:00:00"), "{out}");
        assert!(
            out.contains("1970-01-01 00:00:00 UTC <small>1m ago</small>"),
            "{out}"
        );
    }
}
