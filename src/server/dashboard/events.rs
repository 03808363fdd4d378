//! `/events`: events by state, rule, runbook, target and time, page by page;
//! `/events/{id}`: one event in full — its alert, every decision with its
//! reason, the timeline, the ops per target with exit codes, durations and
//! output (growing while an op runs), and the notifications sent. Also the
//! tables of events, decisions and labels other pages show.

use serde_json::Value;

use super::html::{badge, clip, path, short_duration, url, when, Html};
use super::layout::{button, frame};
use super::{api, Ctx, Reply};
use crate::error::{Error, Result};
use crate::store::{self, EventFilter, EventRow};

/// Events on a page.
const PAGE: i64 = 50;

/// Event states, for the filter.
const STATES: &[&str] = &crate::event::STATES;

/// Time windows of the filter.
const SINCE: &[&str] = &["1h", "6h", "24h", "7d", "30d"];

/// `GET /events`.
pub fn list(ctx: &Ctx) -> Result<Reply> {
    let state = ctx.query("state");
    let since = ctx.query("since");
    let before = ctx
        .query("before")
        .map(|b| {
            b.parse::<i64>()
                .map_err(|_| Error::request(400, format!("before: {b:?} is not an event id")))
        })
        .transpose()?;
    let since_ms = since
        .as_deref()
        .map(|s| {
            crate::time::parse_duration(s)
                .map(|d| ctx.now - d.as_millis() as i64)
                .map_err(|e| Error::request(400, format!("since: {e}")))
        })
        .transpose()?;
    let filter = EventFilter {
        states: state.iter().filter(|s| *s != "open").cloned().collect(),
        open: state.as_deref() == Some("open"),
        rule: ctx.query("rule"),
        runbook: ctx.query("runbook"),
        agent: ctx.query("target"),
        since: since_ms,
        before,
        ..Default::default()
    };
    let mut events = store::list_events(ctx.conn, &filter, PAGE + 1)?;
    let more = events.len() as i64 > PAGE;
    events.truncate(PAGE as usize);
    let mut h = Html::new();
    h.raw("<h1>Events</h1>");
    filters(&mut h, ctx, state.as_deref(), since.as_deref());
    if events.is_empty() {
        h.raw("<p class=\"none\">No event matches.</p>");
    } else {
        events_table(&mut h, ctx, &events, true);
    }
    pager(&mut h, ctx, &events, more, before.is_some());
    frame(ctx, "Events", "/events", Some(15), h)
}

fn filters(h: &mut Html, ctx: &Ctx, state: Option<&str>, since: Option<&str>) {
    h.raw("<form method=\"get\" action=\"/events\" class=\"filters\">");
    h.raw("<label>State <select name=\"state\"><option value=\"\">any</option>");
    for s in std::iter::once("open").chain(STATES.iter().copied()) {
        option(h, s, &s.replace('_', " "), state == Some(s));
    }
    h.raw("</select></label>");
    let rules: Vec<String> = ctx
        .config
        .rules
        .iter()
        .map(|r| r.name.clone())
        .chain([crate::server::manual::RULE.to_string()])
        .collect();
    let runbooks: Vec<String> = ctx.config.runbooks.keys().cloned().collect();
    let agents: Vec<String> = store::list_agents(ctx.conn)
        .map(|a| a.into_iter().map(|a| a.id).collect())
        .unwrap_or_default();
    text_filter(h, "Rule", "rule", ctx.query("rule"), &rules);
    text_filter(h, "Runbook", "runbook", ctx.query("runbook"), &runbooks);
    text_filter(h, "Target", "target", ctx.query("target"), &agents);
    h.raw("<label>Since <select name=\"since\"><option value=\"\">any time</option>");
    for s in SINCE {
        option(h, s, s, since == Some(*s));
    }
    h.raw("</select></label><button type=\"submit\">Filter</button> <a href=\"/events\">Clear</a></form>");
}

fn option(h: &mut Html, value: &str, label: &str, selected: bool) {
    h.raw("<option").attr("value", value);
    if selected {
        h.raw(" selected");
    }
    h.raw(">").text(label).raw("</option>");
}

/// A text field with suggestions.
fn text_filter(
    h: &mut Html,
    label: &'static str,
    name: &'static str,
    value: Option<String>,
    known: &[String],
) {
    h.raw("<label>")
        .raw(label)
        .raw(" <input type=\"text\"")
        .attr("name", name)
        .attr("list", format!("known-{name}"))
        .attr("value", value.unwrap_or_default())
        .raw("></label><datalist")
        .attr("id", format!("known-{name}"))
        .raw(">");
    for k in known.iter().take(500) {
        h.raw("<option").attr("value", k).raw(">");
    }
    h.raw("</datalist>");
}

fn pager(h: &mut Html, ctx: &Ctx, events: &[EventRow], more: bool, paged: bool) {
    let keep = |name: &str| ctx.query(name).unwrap_or_default();
    let (state, rule, runbook, target, since) = (
        keep("state"),
        keep("rule"),
        keep("runbook"),
        keep("target"),
        keep("since"),
    );
    let base = [
        ("state", state.as_str()),
        ("rule", rule.as_str()),
        ("runbook", runbook.as_str()),
        ("target", target.as_str()),
        ("since", since.as_str()),
    ];
    h.raw("<nav class=\"pager\" aria-label=\"Pages\">");
    if paged {
        h.link(&url("/events", &base), "← Newest");
    }
    if let (true, Some(last)) = (more, events.last()) {
        let before = last.id.to_string();
        let mut q = base.to_vec();
        q.push(("before", &before));
        h.raw(" ").link(&url("/events", &q), "Older →");
    }
    h.raw("</nav>");
}

/// A table of events; with `actions`, approve and reject buttons on those waiting.
pub fn events_table(h: &mut Html, ctx: &Ctx, events: &[EventRow], actions: bool) {
    h.raw("<table class=\"rows\">");
    h.thead(&[
        "Event", "State", "Rule", "Runbook", "Key", "Created", "Took", "Hits",
    ]);
    h.raw("<tbody>");
    for e in events {
        h.raw("<tr>").td_open("Event");
        h.link(&path("/events", e.id), format!("#{}", e.id));
        h.raw("</td>").td_open("State");
        badge(h, &e.state);
        if actions && e.state == "pending_approval" && e.ended_at.is_none() {
            button(
                h,
                ctx,
                &format!("/events/{}/approve", e.id),
                "Approve",
                "go",
                None,
            );
            button(
                h,
                ctx,
                &format!("/events/{}/reject", e.id),
                "Reject",
                "danger",
                None,
            );
        }
        h.raw("</td>")
            .td("Rule", &e.rule)
            .td("Runbook", &e.runbook)
            .raw("<td data-label=\"Key\" class=\"key\">")
            .text(clip(&e.key, 200))
            .raw("</td>")
            .td_open("Created");
        when(h, Some(e.created_at), ctx.now);
        h.raw("</td>")
            .td("Took", took(e, ctx.now))
            .td("Hits", e.hits)
            .raw("</tr>");
    }
    h.raw("</tbody></table>");
}

/// How long an event ran (or has been running).
fn took(e: &EventRow, now: i64) -> String {
    if e.mode != "live" {
        return "–".into();
    }
    match (e.started_at, e.ended_at) {
        (Some(s), Some(end)) => short_duration(end - s),
        (Some(s), None) => format!("{} so far", short_duration(now - s)),
        _ => "–".into(),
    }
}

/// Labels or annotations as `name=value` chips, each value at most `max` characters.
pub fn labels(h: &mut Html, map: &Value, max: usize) {
    h.raw("<ul class=\"labels\">");
    for (k, v) in map.as_object().into_iter().flatten() {
        h.raw("<li><span class=\"k\">")
            .text(clip(k, 200))
            .raw("</span>=<span class=\"v\">")
            .text(clip(v.as_str().unwrap_or(""), max))
            .raw("</span></li>");
    }
    h.raw("</ul>");
}

/// A table of decisions: with `alert`, the alert each was about and the
/// event it named; without, those of one event.
pub fn decisions_table(h: &mut Html, ctx: &Ctx, decisions: &[Value], alert: bool) -> Result<()> {
    h.raw("<table class=\"rows\">");
    if alert {
        h.thead(&["When", "Alert", "Rule", "Outcome", "Reason", "Event"]);
    } else {
        h.thead(&["When", "Rule", "Outcome", "Reason"]);
    }
    h.raw("<tbody>");
    for d in decisions {
        h.raw("<tr>").td_open("When");
        when(h, d["at"].as_i64(), ctx.now);
        h.raw("</td>");
        if alert {
            let fp = d["fingerprint"].as_str().unwrap_or("");
            let name = store::get_alert(ctx.conn, fp)?
                .and_then(|a| a["name"].as_str().map(str::to_string))
                .unwrap_or_else(|| fp.to_string());
            h.td("Alert", clip(&name, 200));
        }
        h.td("Rule", d["rule"].as_str().unwrap_or("(none)"))
            .td_open("Outcome");
        badge(h, d["outcome"].as_str().unwrap_or(""));
        h.raw("</td>")
            .td("Reason", d["reason"].as_str().unwrap_or(""));
        if alert {
            h.td_open("Event");
            if let Some(id) = d["event_id"].as_i64() {
                h.link(&path("/events", id), format!("#{id}"));
            }
            h.raw("</td>");
        }
        h.raw("</tr>");
    }
    h.raw("</tbody></table>");
    Ok(())
}

/// `GET /events/{id}`.
pub fn detail(ctx: &Ctx) -> Result<Reply> {
    let id = ctx.id()?;
    let Some(e) = api::event_json(ctx.conn, id)? else {
        return Err(Error::request(404, format!("no event {id}")));
    };
    let state = e["state"].as_str().unwrap_or("");
    let open = e["ended_at"].is_null();
    let mut h = Html::new();
    h.raw("<h1>Event ")
        .text(id)
        .raw(" <small>")
        .text(e["runbook"].as_str().unwrap_or(""))
        .raw("</small> ");
    badge(&mut h, state);
    h.raw("</h1>");
    summary(&mut h, ctx, &e);
    if open {
        h.raw("<div class=\"actions\">");
        if state == "pending_approval" {
            button(
                &mut h,
                ctx,
                &format!("/events/{id}/approve"),
                "Approve and run",
                "go",
                Some("note (optional)"),
            );
            button(
                &mut h,
                ctx,
                &format!("/events/{id}/reject"),
                "Reject",
                "danger",
                Some("why (optional)"),
            );
        }
        button(
            &mut h,
            ctx,
            &format!("/events/{id}/cancel"),
            "Cancel the event",
            "danger",
            Some("why (optional)"),
        );
        h.raw("</div>");
    }
    alert(&mut h, ctx, &e["alert"]);
    h.raw("<section aria-labelledby=\"decided\"><h2 id=\"decided\">Decisions</h2>");
    let decisions = e["decisions"].as_array().cloned().unwrap_or_default();
    decisions_table(&mut h, ctx, &decisions, false)?;
    h.raw("</section>");
    timeline(&mut h, ctx, &e["timeline"]);
    ops(&mut h, ctx, &e["ops"]);
    notifications(&mut h, ctx, &e["notifications"]);
    let refresh = open.then_some(2);
    frame(ctx, &format!("Event {id}"), "/events", refresh, h)
}

fn summary(h: &mut Html, ctx: &Ctx, e: &Value) {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    h.raw("<dl class=\"facts\">");
    if let Some(r) = e["reason"].as_str() {
        h.raw("<dt>Why</dt><dd>").text(clip(r, 4096)).raw("</dd>");
    }
    h.raw("<dt>Rule</dt><dd>").text(s("rule")).raw("</dd>");
    h.raw("<dt>Runbook</dt><dd>")
        .text(s("runbook"))
        .raw("</dd>");
    h.raw("<dt>Mode</dt><dd>").text(s("mode")).raw("</dd>");
    h.raw("<dt>Key</dt><dd class=\"key\">")
        .text(clip(&s("key"), 4096))
        .raw("</dd>");
    h.raw("<dt>Alerts joined</dt><dd>")
        .text(&e["hits"])
        .raw("</dd>");
    for (label, key) in [
        ("Created", "created_at"),
        ("Started", "started_at"),
        ("Ended", "ended_at"),
    ] {
        h.raw("<dt>").text(label).raw("</dt><dd>");
        when(h, e[key].as_i64(), ctx.now);
        h.raw("</dd>");
    }
    if let (Some(d), true) = (e["deadline"].as_i64(), e["ended_at"].is_null()) {
        let what = if e["state"] == "pending_approval" {
            "Approval expires"
        } else {
            "Deadline"
        };
        h.raw("<dt>").text(what).raw("</dt><dd>");
        when(h, Some(d), ctx.now);
        h.raw("</dd>");
    }
    if let Some(by) = e["decided_by"].as_str() {
        h.raw("<dt>Decided by</dt><dd>").text(by).raw("</dd>");
    }
    let n = e["notifications"].as_array().map_or(0, Vec::len);
    h.raw("<dt>Notifications</dt><dd><a href=\"#sent\">")
        .text(format!("{n} sent or queued"))
        .raw("</a></dd></dl>");
}

fn alert(h: &mut Html, ctx: &Ctx, a: &Value) {
    h.raw("<section aria-labelledby=\"alert\"><h2 id=\"alert\">The alert</h2>");
    if a.is_null() {
        h.raw("<p class=\"none\">Its alert is no longer stored.</p></section>");
        return;
    }
    h.raw("<dl class=\"facts\"><dt>Name</dt><dd>")
        .text(clip(a["name"].as_str().unwrap_or(""), 4096))
        .raw("</dd><dt>Status</dt><dd>");
    badge(h, a["status"].as_str().unwrap_or(""));
    h.raw("</dd><dt>Source</dt><dd>")
        .text(a["source"].as_str().unwrap_or(""))
        .raw("</dd><dt>Fingerprint</dt><dd><code>")
        .text(a["fingerprint"].as_str().unwrap_or(""))
        .raw("</code></dd><dt>Since</dt><dd>");
    when(
        h,
        a["starts_at"].as_i64().or(a["first_seen"].as_i64()),
        ctx.now,
    );
    let n = a["receipts"].as_i64().unwrap_or(1);
    h.raw("</dd><dt>Received</dt><dd>")
        .text(if n == 1 {
            "once".to_string()
        } else {
            format!("{n} times")
        })
        .raw("</dd></dl><h3>Labels</h3>");
    labels(h, &a["labels"], 4096);
    h.raw("<h3>Annotations</h3>");
    labels(h, &a["annotations"], 4096);
    h.raw("</section>");
}

fn timeline(h: &mut Html, ctx: &Ctx, lines: &Value) {
    h.raw("<section aria-labelledby=\"timeline\"><h2 id=\"timeline\">Timeline</h2><ol class=\"timeline\">");
    for t in lines.as_array().into_iter().flatten() {
        h.raw("<li>");
        when(h, t["at"].as_i64(), ctx.now);
        h.raw(" <span class=\"kind\">")
            .text(t["kind"].as_str().unwrap_or(""))
            .raw("</span> ")
            .text(clip(t["message"].as_str().unwrap_or(""), 4096))
            .raw("</li>");
    }
    h.raw("</ol></section>");
}

fn ops(h: &mut Html, ctx: &Ctx, ops: &Value) {
    h.raw("<section aria-labelledby=\"ops\"><h2 id=\"ops\">Ops</h2>");
    let ops = ops.as_array().cloned().unwrap_or_default();
    if ops.is_empty() {
        h.raw("<p class=\"none\">Nothing was handed to an agent.</p>");
    }
    for op in &ops {
        let id = op["id"].as_i64().unwrap_or(0);
        let state = op["state"].as_str().unwrap_or("");
        h.raw("<article class=\"op\"")
            .attr("id", format!("op-{id}"))
            .raw("><h3>");
        h.text(format!(
            "Op {id} on {} ({})",
            op["agent"].as_str().unwrap_or(""),
            op["kind"].as_str().unwrap_or("")
        ))
        .raw(" ");
        badge(h, state);
        h.raw("</h3><dl class=\"facts\">");
        for (label, key) in [
            ("Handed out", "dispatched_at"),
            ("Started", "started_at"),
            ("Finished", "finished_at"),
        ] {
            h.raw("<dt>").text(label).raw("</dt><dd>");
            when(h, op[key].as_i64(), ctx.now);
            h.raw("</dd>");
        }
        if let (Some(s), Some(f)) = (op["started_at"].as_i64(), op["finished_at"].as_i64()) {
            h.raw("<dt>Took</dt><dd>")
                .text(short_duration(f - s))
                .raw("</dd>");
        }
        if let Some(err) = op["error"].as_str() {
            h.raw("<dt>Error</dt><dd>").text(err).raw("</dd>");
        }
        h.raw("</dl>");
        steps(h, id, &op["steps"]);
        let live = op["live_output"].as_str().unwrap_or("");
        if matches!(state, "dispatched" | "running") {
            h.raw("<h4>Output so far <span class=\"badge busy\">live</span></h4><pre class=\"output\"")
                .attr("id", format!("live-{id}"))
                .raw(">")
                .text(if live.is_empty() { "(nothing yet)" } else { live })
                .raw("</pre>");
        }
        h.raw("</article>");
    }
    h.raw("</section>");
}

fn steps(h: &mut Html, op: i64, steps: &Value) {
    let steps = steps.as_array().cloned().unwrap_or_default();
    if steps.is_empty() {
        return;
    }
    h.raw("<table class=\"rows steps\">");
    h.thead(&["Step", "Exit", "Took"]);
    h.raw("<tbody>");
    for s in &steps {
        let exit = match (
            s["timed_out"].as_bool(),
            s["exit_code"].as_i64(),
            s["signal"].as_i64(),
        ) {
            _ if s["skipped"] == true => "skipped".to_string(),
            (Some(true), _, _) => "timed out".to_string(),
            (_, Some(c), _) => format!("exit {c}"),
            (_, None, Some(sig)) => format!("signal {sig}"),
            _ => "did not run".to_string(),
        };
        let tone = if s["exit_code"] == 0 || s["skipped"] == true {
            "succeeded"
        } else {
            "failed"
        };
        h.raw("<tr>")
            .td("Step", s["name"].as_str().unwrap_or(""))
            .td_open("Exit");
        h.raw("<span class=\"badge ")
            .raw(super::html::tone(tone))
            .raw("\">")
            .text(&exit)
            .raw("</span></td>")
            .td(
                "Took",
                short_duration(s["duration_ms"].as_i64().unwrap_or(0)),
            )
            .raw("</tr>");
    }
    h.raw("</tbody></table>");
    for (i, s) in steps.iter().enumerate() {
        let output = s["output"].as_str().unwrap_or("");
        h.raw("<h4>Output of ")
            .text(s["name"].as_str().unwrap_or(""))
            .raw("</h4>");
        if s["truncated"] == true {
            h.raw("<p class=\"small\">")
                .text(format!(
                    "The last {} bytes of {} printed.",
                    output.len(),
                    s["output_bytes"]
                ))
                .raw("</p>");
        }
        h.raw("<pre class=\"output\"")
            .attr("id", format!("out-{op}-{i}"))
            .raw(">")
            .text(if output.is_empty() {
                "(no output)"
            } else {
                output
            })
            .raw("</pre>");
    }
}

fn notifications(h: &mut Html, ctx: &Ctx, sent: &Value) {
    h.raw("<section aria-labelledby=\"sent\"><h2 id=\"sent\">Notifications</h2>");
    let sent = sent.as_array().cloned().unwrap_or_default();
    if sent.is_empty() {
        h.raw("<p class=\"none\">None sent: no [[notify]] route took this event's notifications.</p></section>");
        return;
    }
    h.raw("<table class=\"rows\">");
    h.thead(&[
        "Kind", "Channel", "State", "Tries", "Queued", "Done", "Error",
    ]);
    h.raw("<tbody>");
    for d in &sent {
        h.raw("<tr")
            .attr("id", format!("delivery-{}", d["id"]))
            .raw(">")
            .td("Kind", d["kind"].as_str().unwrap_or(""))
            .td("Channel", d["channel"].as_str().unwrap_or(""))
            .td_open("State");
        badge(h, d["state"].as_str().unwrap_or(""));
        h.raw("</td>").td("Tries", &d["attempts"]).td_open("Queued");
        when(h, d["created_at"].as_i64(), ctx.now);
        h.raw("</td>").td_open("Done");
        when(h, d["done_at"].as_i64(), ctx.now);
        h.raw("</td>")
            .td("Error", d["error"].as_str().unwrap_or(""))
            .raw("</tr>");
    }
    h.raw("</tbody></table></section>");
}
