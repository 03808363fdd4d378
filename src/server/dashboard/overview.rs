//! `/`: what heal is doing and why, at a glance. The breaker, pauses and
//! what is down first; then what waits for a person, the open events, the
//! firing alerts, and the decisions of the last day by outcome.

use serde_json::Value;

use super::events::{decisions_table, events_table, labels};
use super::html::{badge, clip, path, probe_badge, url, when, Html};
use super::layout::{button, frame};
use super::{api, Ctx, Reply};
use crate::error::Result;
use crate::store::{self, EventFilter};

/// How far back "recent decisions" look.
const RECENT_MS: i64 = 24 * 3_600_000;

/// `GET /`.
pub fn page(ctx: &Ctx) -> Result<Reply> {
    let mut h = Html::new();
    h.raw("<h1>Overview</h1>");
    status(&mut h, ctx)?;
    let open = store::list_events(
        ctx.conn,
        &EventFilter {
            open: true,
            ..Default::default()
        },
        200,
    )?;
    let (waiting, open): (Vec<_>, Vec<_>) = open
        .into_iter()
        .partition(|e| e.state == "pending_approval");
    if !waiting.is_empty() {
        h.raw("<section aria-labelledby=\"waiting\"><h2 id=\"waiting\">Waiting for a person</h2>");
        events_table(&mut h, ctx, &waiting, true);
        h.raw("</section>");
    }
    h.raw("<section aria-labelledby=\"open\"><h2 id=\"open\">Open events</h2>");
    if open.is_empty() {
        h.raw("<p class=\"none\">No other event is open: heal is not running anything.</p>");
    } else {
        events_table(&mut h, ctx, &open, false);
    }
    h.raw("</section>");
    firing(&mut h, ctx)?;
    decisions(&mut h, ctx)?;
    frame(ctx, "Overview", "/", Some(10), h)
}

/// The status strip: breaker, pauses, agents, heartbeats, probes, with
/// what is wrong listed under each.
fn status(h: &mut Html, ctx: &Ctx) -> Result<()> {
    let breaker = store::breaker(ctx.conn, ctx.now)?;
    let pauses = store::pauses(ctx.conn, true, ctx.now)?;
    let agents = store::list_agents(ctx.conn)?;
    let down_after = ctx.config.server.agent_down_after.as_millis() as i64;
    let agents_down: Vec<_> = agents
        .iter()
        .filter(|a| ctx.now - a.last_seen > down_after)
        .collect();
    let heartbeats = api::watch::list(ctx.state, ctx.conn, &Default::default(), 10_000)?.1;
    let hb_bad: Vec<&Value> = heartbeats["heartbeats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|hb| matches!(hb["state"].as_str(), Some("down" | "late" | "invalid")))
        .collect();
    let probes = api::watch::probes(ctx.conn, &ctx.config, None)?.1;
    let probes_down: Vec<&Value> = probes["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] == "down")
        .collect();
    h.raw("<section class=\"cards\" aria-label=\"Status\">");
    // The breaker.
    let open = breaker["state"] == "open";
    h.raw("<div class=\"card\"><h2>Safety breaker</h2><p>");
    badge(h, breaker["state"].as_str().unwrap_or("closed"));
    h.raw("</p><p class=\"small\">")
        .text(format!(
            "{} of {} runs this hour; {} of {} failures in a row",
            breaker["runs_last_hour"],
            ctx.config.safety.max_runs_per_hour,
            breaker["failed_in_row"],
            ctx.config.safety.max_failed_in_row
        ))
        .raw("</p>");
    if open {
        h.raw("<p>")
            .text(breaker["reason"].as_str().unwrap_or(""))
            .raw("</p>");
        button(
            h,
            ctx,
            "/breaker/reset",
            "Reset the breaker",
            "danger",
            Some("why it is safe now"),
        );
    }
    h.raw("</div>");
    // Pauses.
    h.raw("<div class=\"card\"><h2><a href=\"/pauses\">Pauses</a></h2><p>");
    if pauses.is_empty() {
        h.raw("none");
    } else {
        h.text(format!("{} active", pauses.len()));
    }
    h.raw("</p><ul class=\"small\">");
    for p in pauses.iter().take(5) {
        h.raw("<li>")
            .text(super::pages::covers(p))
            .raw(": ")
            .text(p["reason"].as_str().unwrap_or(""))
            .raw("</li>");
    }
    h.raw("</ul></div>");
    // Agents.
    h.raw("<div class=\"card\"><h2><a href=\"/agents\">Agents</a></h2><p>")
        .text(format!(
            "{} known, {} down",
            agents.len(),
            agents_down.len()
        ))
        .raw("</p><ul class=\"small\">");
    for a in agents_down.iter().take(10) {
        h.raw("<li>");
        badge(h, "down");
        h.raw(" ").text(&a.id).raw(", last seen ");
        when(h, Some(a.last_seen), ctx.now);
        h.raw("</li>");
    }
    h.raw("</ul></div>");
    // Heartbeats.
    h.raw("<div class=\"card\"><h2><a href=\"/heartbeats\">Heartbeats</a></h2><p>")
        .text(format!(
            "{} watched, {} down or late",
            heartbeats["total"].as_u64().unwrap_or(0),
            hb_bad.len()
        ))
        .raw("</p><ul class=\"small\">");
    for hb in hb_bad.iter().take(10) {
        let name = hb["name"].as_str().unwrap_or("");
        h.raw("<li>");
        badge(h, hb["state"].as_str().unwrap_or(""));
        h.raw(" ")
            .link(&path("/heartbeats", name), name)
            .raw("</li>");
    }
    h.raw("</ul></div>");
    // Probes.
    h.raw("<div class=\"card\"><h2><a href=\"/probes\">Probes</a></h2><p>")
        .text(format!(
            "{} configured, {} failing",
            probes["probes"].as_array().map_or(0, Vec::len),
            probes_down.len()
        ))
        .raw("</p><ul class=\"small\">");
    for p in probes_down.iter().take(10) {
        let name = p["name"].as_str().unwrap_or("");
        h.raw("<li>");
        probe_badge(h, p);
        h.raw(" ")
            .link(&path("/probes", name), name)
            .raw(": ")
            .text(p["last_detail"].as_str().unwrap_or(""))
            .raw("</li>");
    }
    h.raw("</ul></div></section>");
    Ok(())
}

/// Firing alerts, newest first, with the last decision each got.
fn firing(h: &mut Html, ctx: &Ctx) -> Result<()> {
    let alerts = store::list_alerts(ctx.conn, Some("firing"), None, None, 0, 50)?;
    h.raw("<section aria-labelledby=\"firing\"><h2 id=\"firing\">Firing alerts</h2>");
    if alerts.is_empty() {
        h.raw("<p class=\"none\">No alert is firing.</p></section>");
        return Ok(());
    }
    h.raw("<table class=\"rows\">");
    h.thead(&["Alert", "Labels", "Since", "Last decision"]);
    h.raw("<tbody>");
    for a in &alerts {
        h.raw("<tr>")
            .td("Alert", clip(a["name"].as_str().unwrap_or(""), 200));
        h.td_open("Labels");
        labels(h, &a["labels"], 200);
        h.raw("</td>").td_open("Since");
        when(
            h,
            a["starts_at"].as_i64().or(a["first_seen"].as_i64()),
            ctx.now,
        );
        h.raw("</td>").td_open("Last decision");
        if let Some(d) = a["decisions"].get(0) {
            badge(h, d["outcome"].as_str().unwrap_or(""));
            h.raw(" ")
                .text(clip(d["reason"].as_str().unwrap_or(""), 500));
            if let Some(id) = d["event_id"].as_i64() {
                h.raw(" ").link(&path("/events", id), format!("event {id}"));
            }
        }
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table></section>");
    Ok(())
}

/// Decisions of the last day: counted by outcome, and the latest ones.
fn decisions(h: &mut Html, ctx: &Ctx) -> Result<()> {
    let since = ctx.now - RECENT_MS;
    let counts = store::decision_counts(ctx.conn, since, None)?;
    let latest = store::list_decisions(ctx.conn, since, None, None, 25)?;
    h.raw("<section aria-labelledby=\"decisions\"><h2 id=\"decisions\">Decisions in the last 24 hours</h2><ul class=\"counts\">");
    for (outcome, n) in &counts {
        h.raw("<li>");
        badge(h, outcome);
        h.raw(" <strong>").text(n).raw("</strong></li>");
    }
    h.raw("</ul>");
    if latest.is_empty() {
        h.raw("<p class=\"none\">No decision yet.</p>");
    } else {
        decisions_table(h, ctx, &latest, true)?;
        h.raw("<p>")
            .link(&url("/events", &[]), "All events")
            .raw("</p>");
    }
    h.raw("</section>");
    Ok(())
}
