//! The pages about what heal watches and holds: agents (and what they run
//! now), heartbeats and their pings, probes and their results, pauses,
//! runbooks (with the form to run one by hand) and the audit log. Heartbeats
//! and probes are shown from the very JSON their API routes answer.

use serde_json::Value;

use super::html::{badge, path, probe_badge, short_duration, url, when, Html};
use super::layout::{button, csrf, frame};
use super::{api, manage, Ctx, Reply};
use crate::error::{Error, Result};
use crate::store;

/// Entries on an audit page.
const AUDIT_PAGE: i64 = 100;

/// `GET /agents`.
pub fn agents(ctx: &Ctx) -> Result<Reply> {
    let agents = store::list_agents(ctx.conn)?;
    let running = store::browse::ops_in_flight(ctx.conn, None)?;
    let polling = ctx.state.waiters.connected();
    let down_after = ctx.config.server.agent_down_after.as_millis() as i64;
    let mut h = Html::new();
    h.raw("<h1>Agents</h1>");
    if agents.is_empty() {
        h.raw("<p class=\"none\">No agent has polled this heal yet.</p>");
    } else {
        h.raw("<table class=\"rows\">");
        h.thead(&[
            "Agent",
            "State",
            "Host",
            "Version",
            "Tags",
            "Last seen",
            "Running",
            "Queued",
        ]);
        h.raw("<tbody>");
        for a in &agents {
            let state = if ctx.now - a.last_seen > down_after {
                "down"
            } else if polling.contains(&a.id) {
                "polling"
            } else {
                "busy"
            };
            h.raw("<tr>").td("Agent", &a.id).td_open("State");
            badge(&mut h, state);
            h.raw("</td>")
                .td("Host", &a.hostname)
                .td("Version", &a.version)
                .td("Tags", a.tags.join(", "))
                .td_open("Last seen");
            when(&mut h, Some(a.last_seen), ctx.now);
            h.raw("</td>").td_open("Running");
            for op in running.iter().filter(|o| o.agent == a.id) {
                h.link(
                    &format!("/events/{}#op-{}", op.event_id, op.id),
                    format!("{} (event {})", op.runbook, op.event_id),
                )
                .raw(" ");
            }
            h.raw("</td>").td("Queued", a.queued_ops).raw("</tr>");
        }
        h.raw("</tbody></table>");
    }
    servers(&mut h, ctx)?;
    frame(ctx, "Agents", "/agents", Some(10), h)
}

/// The heal servers on this store: which leads, what each runs, and whose
/// config differs from the leader's.
fn servers(h: &mut Html, ctx: &Ctx) -> Result<()> {
    let replicas = crate::server::replicas::list(ctx.state, ctx.conn)?;
    h.raw("<section aria-labelledby=\"servers\"><h2 id=\"servers\">heal servers</h2><table class=\"rows\">");
    h.thead(&["Server", "State", "Host", "Version", "Config", "Last seen"]);
    h.raw("<tbody>");
    for r in &replicas {
        h.raw("<tr>").td("Server", &r.address).td_open("State");
        badge(h, if r.up { "up" } else { "down" });
        if r.leader {
            h.raw(" ");
            badge(h, "leader");
        }
        if r.id == ctx.state.leadership.id {
            h.raw(" <span class=\"none\">(this one)</span>");
        }
        h.raw("</td>")
            .td("Host", &r.host)
            .td("Version", &r.version)
            .td_open("Config");
        h.text(match r.config_version {
            Some(v) => format!("version {v}"),
            None => format!(
                "sha256 {}",
                &r.config_sha256[..r.config_sha256.len().min(12)]
            ),
        });
        if r.config_differs {
            h.raw(" ");
            badge(h, "config_differs");
        }
        h.raw("</td>").td_open("Last seen");
        when(h, Some(r.last_seen), ctx.now);
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table></section>");
    Ok(())
}

/// `GET /heartbeats`.
pub fn heartbeats(ctx: &Ctx) -> Result<Reply> {
    let list = api::watch::list(ctx.state, ctx.conn, &Default::default(), 10_000)?.1;
    let mut h = Html::new();
    h.raw("<h1>Heartbeats</h1>");
    let all = list["heartbeats"].as_array().cloned().unwrap_or_default();
    if all.is_empty() {
        h.raw("<p class=\"none\">No heartbeat is defined ([[heartbeat]] in the config, or PUT /api/v1/heartbeats/NAME).</p>");
    } else {
        h.raw("<table class=\"rows\">");
        h.thead(&["Heartbeat", "State", "Why", "Schedule", "Last ping", "Due"]);
        h.raw("<tbody>");
        for hb in &all {
            let name = hb["name"].as_str().unwrap_or("");
            h.raw("<tr>").td_open("Heartbeat");
            h.link(&path("/heartbeats", name), name);
            h.raw("</td>").td_open("State");
            badge(&mut h, hb["state"].as_str().unwrap_or(""));
            if hb["paused"] == true {
                mute_left(&mut h, &hb["muted_until"], ctx.now);
            }
            h.raw("</td>")
                .td(
                    "Why",
                    hb["reason"].as_str().or(hb["error"].as_str()).unwrap_or(""),
                )
                .td("Schedule", hb["schedule"].as_str().unwrap_or(""))
                .td_open("Last ping");
            when(
                &mut h,
                hb["last_end_at"].as_i64().or(hb["last_start"].as_i64()),
                ctx.now,
            );
            h.raw("</td>").td_open("Due");
            when(&mut h, hb["due_at"].as_i64(), ctx.now);
            h.raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    manage::heartbeat_form(&mut h, ctx, "", "");
    frame(ctx, "Heartbeats", "/heartbeats", Some(10), h)
}

/// `GET /heartbeats/{name}`.
pub fn heartbeat(ctx: &Ctx) -> Result<Reply> {
    let shown = api::watch::show(ctx.state, ctx.conn, ctx.name(), 50)?.1;
    let hb = &shown["heartbeat"];
    let name = hb["name"].as_str().unwrap_or("");
    let mut h = Html::new();
    h.raw("<h1>Heartbeat ").text(name).raw(" ");
    badge(&mut h, hb["state"].as_str().unwrap_or(""));
    h.raw("</h1><dl class=\"facts\">");
    for (label, key) in [
        ("Why", "reason"),
        ("Schedule", "schedule"),
        ("Grace", "grace"),
        ("Max runtime", "max_runtime"),
        ("Team", "team"),
        ("Description", "description"),
        ("Defined in", "origin"),
    ] {
        if let Some(v) = hb[key].as_str().filter(|v| !v.is_empty()) {
            h.raw("<dt>")
                .text(label)
                .raw("</dt><dd>")
                .text(v)
                .raw("</dd>");
        }
    }
    if hb["paused"] == true {
        mute_facts(&mut h, &hb["paused_reason"], &hb["muted_until"], ctx.now);
    }
    for (label, key) in [
        ("Last start", "last_start"),
        ("Last end", "last_end_at"),
        ("Due", "due_at"),
        ("Down at", "down_at"),
    ] {
        h.raw("<dt>").text(label).raw("</dt><dd>");
        when(&mut h, hb[key].as_i64(), ctx.now);
        h.raw("</dd>");
    }
    if let Some(url) = hb["runbook_url"].as_str() {
        h.raw("<dt>Runbook</dt><dd>").text(url).raw("</dd>");
    }
    h.raw("</dl>");
    let from_api = hb["origin"] == "api";
    manage::controls(&mut h, ctx, false, name, hb["paused"] == true, from_api);
    h.raw("<h2>Last pings</h2>");
    let pings = hb["recent_pings"].as_array().cloned().unwrap_or_default();
    if pings.is_empty() {
        h.raw("<p class=\"none\">No ping yet.</p>");
    }
    for p in &pings {
        h.raw("<article class=\"ping\"><h3>");
        when(&mut h, p["at"].as_i64(), ctx.now);
        h.raw(" ");
        badge(&mut h, p["kind"].as_str().unwrap_or(""));
        if let Some(code) = p["exit_code"].as_i64() {
            h.text(format!(" exit {code}"));
        }
        h.raw(" <small>from ")
            .text(p["remote"].as_str().unwrap_or(""))
            .raw("</small></h3>");
        let body = p["body"].as_str().unwrap_or("");
        if !body.is_empty() {
            h.raw("<pre class=\"output\">").text(body).raw("</pre>");
        }
        h.raw("</article>");
    }
    if from_api {
        let fields = store::heartbeat(ctx.conn, name)?
            .and_then(|row| serde_json::from_str(&row.def).ok())
            .and_then(|def| crate::config::fields_toml(&def))
            .unwrap_or_default();
        manage::heartbeat_form(&mut h, ctx, name, &fields);
    }
    frame(
        ctx,
        &format!("Heartbeat {name}"),
        "/heartbeats",
        Some(10),
        h,
    )
}

/// `GET /probes`.
pub fn probes(ctx: &Ctx) -> Result<Reply> {
    let list = api::watch::probes(ctx.conn, &ctx.config, None)?.1;
    let mut h = Html::new();
    h.raw("<h1>Probes</h1>");
    let all = list["probes"].as_array().cloned().unwrap_or_default();
    if all.is_empty() {
        h.raw("<p class=\"none\">No probe is configured ([[probe]] in the config).</p>");
    } else {
        h.raw("<table class=\"rows\">");
        h.thead(&[
            "Probe", "Type", "State", "Since", "Last run", "Took", "Result",
        ]);
        h.raw("<tbody>");
        for p in &all {
            let name = p["name"].as_str().unwrap_or("");
            h.raw("<tr>").td_open("Probe");
            h.link(&path("/probes", name), name);
            let kind = p["type"].as_str().unwrap_or("");
            let kind = match p["agents"].as_array() {
                Some(a) if p["on"].is_string() => format!("{kind} on {} agents", a.len()),
                _ => kind.to_string(),
            };
            h.raw("</td>").td("Type", &kind).td_open("State");
            probe_badge(&mut h, p);
            if p["muted"] == true {
                mute_left(&mut h, &p["muted_until"], ctx.now);
            }
            h.raw("</td>").td_open("Since");
            when(&mut h, p["state_since"].as_i64(), ctx.now);
            h.raw("</td>").td_open("Last run");
            when(&mut h, p["last_at"].as_i64(), ctx.now);
            h.raw("</td>")
                .td("Took", latency(&p["last_latency_ms"]))
                .td("Result", p["last_detail"].as_str().unwrap_or(""))
                .raw("</tr>");
        }
        h.raw("</tbody></table>");
    }
    manage::probe_form(&mut h, ctx, "");
    frame(ctx, "Probes", "/probes", Some(10), h)
}

/// An agent-side probe's runs, one row per agent.
fn on_agents(h: &mut Html, agents: &[Value], now: i64) {
    h.raw("<h2>On agents</h2>");
    if agents.is_empty() {
        h.raw("<p class=\"none\">No agent matches it yet, or none has run it.</p>");
        return;
    }
    h.raw("<table class=\"rows\">");
    h.thead(&["Agent", "State", "Since", "Last run", "Took", "Result"]);
    h.raw("<tbody>");
    for a in agents {
        h.raw("<tr>")
            .td("Agent", a["agent"].as_str().unwrap_or(""))
            .td_open("State");
        probe_badge(h, a);
        h.raw("</td>").td_open("Since");
        when(h, a["state_since"].as_i64(), now);
        h.raw("</td>").td_open("Last run");
        when(h, a["last_at"].as_i64(), now);
        h.raw("</td>")
            .td("Took", latency(&a["last_latency_ms"]))
            .td("Result", a["last_detail"].as_str().unwrap_or(""))
            .raw("</tr>");
    }
    h.raw("</tbody></table>");
}

/// After a state badge: " muted, 1h59m left" (or "until unmuted").
fn mute_left(h: &mut Html, until: &Value, now: i64) {
    h.raw(" <small class=\"mute\">muted, ");
    match until.as_i64() {
        Some(t) => h.text(short_duration(t - now)).raw(" left"),
        None => h.raw("until unmuted"),
    };
    h.raw("</small>");
}

/// A muted heartbeat's or probe's facts: why, and when the mute ends.
fn mute_facts(h: &mut Html, reason: &Value, until: &Value, now: i64) {
    h.raw("<dt>Muted because</dt><dd>")
        .text(reason.as_str().unwrap_or(""))
        .raw("</dd><dt>Mute ends</dt><dd>");
    match until.as_i64() {
        Some(t) => when(h, Some(t), now),
        None => {
            h.raw("when unmuted");
        }
    }
    h.raw("</dd>");
}

fn latency(ms: &Value) -> String {
    ms.as_i64().map(short_duration).unwrap_or_default()
}

/// `GET /probes/{name}`.
pub fn probe(ctx: &Ctx) -> Result<Reply> {
    let shown = api::watch::probe(ctx.conn, &ctx.config, ctx.name(), 50)?.1;
    let p = &shown["probe"];
    let name = p["name"].as_str().unwrap_or("");
    let mut h = Html::new();
    h.raw("<h1>Probe ").text(name).raw(" ");
    probe_badge(&mut h, p);
    h.raw("</h1><dl class=\"facts\">");
    for (label, key) in [
        ("Type", "type"),
        ("Schedule", "schedule"),
        ("Description", "description"),
    ] {
        if let Some(v) = p[key].as_str().filter(|v| !v.is_empty()) {
            h.raw("<dt>")
                .text(label)
                .raw("</dt><dd>")
                .text(v)
                .raw("</dd>");
        }
    }
    h.raw("<dt>Counting</dt><dd>")
        .text(format!(
            "down after {} failures in a row, up after {} successes",
            p["fail_after"], p["recover_after"]
        ))
        .raw("</dd>");
    if let Some(on) = p["on"].as_str() {
        h.raw("<dt>Runs on</dt><dd>")
            .text(format!("agents: on = {on}"))
            .raw("</dd>");
    }
    if p["muted"] == true {
        mute_facts(&mut h, &p["muted_reason"], &p["muted_until"], ctx.now);
    }
    h.raw("</dl>");
    if let Some(agents) = p["agents"].as_array() {
        on_agents(&mut h, agents, ctx.now);
    }
    let from_api = p["source"] == "api";
    manage::controls(&mut h, ctx, true, name, p["muted"] == true, from_api);
    h.raw("<h2>Last results</h2><table class=\"rows\">");
    h.thead(&["When", "Result", "Took", "Value", "Detail"]);
    h.raw("<tbody>");
    for r in p["recent_results"].as_array().into_iter().flatten() {
        h.raw("<tr>").td_open("When");
        when(&mut h, r["at"].as_i64(), ctx.now);
        h.raw("</td>").td_open("Result");
        let result = match (r["ok"] == true, r["warning"] == true) {
            (true, _) => "up",
            (false, true) => "warning",
            (false, false) => "down",
        };
        badge(&mut h, result);
        h.raw("</td>")
            .td("Took", latency(&r["latency_ms"]))
            .td(
                "Value",
                r["value"]
                    .as_f64()
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            )
            .td("Detail", r["detail"].as_str().unwrap_or(""))
            .raw("</tr>");
    }
    h.raw("</tbody></table>");
    if from_api {
        manage::probe_form(&mut h, ctx, name);
    }
    frame(ctx, &format!("Probe {name}"), "/probes", Some(10), h)
}

/// What a pause covers, in words.
pub fn covers(p: &Value) -> String {
    let mut what = Vec::new();
    if let Some(r) = p["runbook"].as_str() {
        what.push(format!("runbook {r}"));
    }
    if let Some(t) = p["target"].as_str() {
        what.push(format!("agent {t}"));
    }
    if let Some(m) = p["match"].as_str() {
        what.push(format!("alerts matching {m}"));
    }
    if what.is_empty() {
        "all automation".into()
    } else {
        what.join(", ")
    }
}

/// `GET /pauses`: active ones and those ended in the last day; the form to add one.
pub fn pauses(ctx: &Ctx) -> Result<Reply> {
    let pauses = store::pauses(ctx.conn, false, ctx.now)?;
    let mut h = Html::new();
    h.raw("<h1>Pauses</h1>");
    if pauses.is_empty() {
        h.raw("<p class=\"none\">No pause in the last day: automation runs as the rules say.</p>");
    } else {
        h.raw("<table class=\"rows\">");
        h.thead(&["Pause", "Covers", "Why", "By", "From", "Until", "State"]);
        h.raw("<tbody>");
        for p in &pauses {
            let id = p["id"].as_i64().unwrap_or(0);
            h.raw("<tr>")
                .td("Pause", id)
                .td("Covers", covers(p))
                .td("Why", p["reason"].as_str().unwrap_or(""))
                .td("By", p["created_by"].as_str().unwrap_or(""))
                .td_open("From");
            when(&mut h, p["created_at"].as_i64(), ctx.now);
            h.raw("</td>").td_open("Until");
            when(
                &mut h,
                p["resumed_at"].as_i64().or(p["until"].as_i64()),
                ctx.now,
            );
            h.raw("</td>").td_open("State");
            if p["active"] == true {
                badge(&mut h, "paused");
                button(
                    &mut h,
                    ctx,
                    &format!("/pauses/{id}/resume"),
                    "Resume",
                    "go",
                    None,
                );
            } else {
                badge(&mut h, "ended");
            }
            h.raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    if ctx.admin() {
        pause_form(&mut h, ctx);
    }
    frame(ctx, "Pauses", "/pauses", None, h)
}

fn pause_form(h: &mut Html, ctx: &Ctx) {
    h.raw("<h2>Pause automation</h2><form method=\"post\" action=\"/pauses\" class=\"card form\">");
    csrf(h, ctx);
    h.raw("<fieldset><legend>What</legend><label>Runbook <select name=\"runbook\"><option value=\"\">any runbook</option>");
    for name in ctx.config.runbooks.keys() {
        h.raw("<option")
            .attr("value", name)
            .raw(">")
            .text(name)
            .raw("</option>");
    }
    h.raw("</select></label><label>Agent <input type=\"text\" name=\"target\" placeholder=\"any agent\" maxlength=\"128\"></label>")
        .raw("<label class=\"check\"><input type=\"checkbox\" name=\"all\" value=\"true\"> all automation</label></fieldset>")
        .raw("<label>For <select name=\"for\">");
    for d in ["15m", "30m", "1h", "2h", "4h", "12h", "24h", "7d"] {
        h.raw("<option").attr("value", d);
        if d == "1h" {
            h.raw(" selected");
        }
        h.raw(">").text(d).raw("</option>");
    }
    h.raw("</select></label><label>Why <input type=\"text\" name=\"reason\" required maxlength=\"1000\" placeholder=\"shown on every decision it pauses\"></label>")
        .raw("<button type=\"submit\">Pause</button></form>");
}

/// `GET /runbooks`: each runbook's steps, and the form to run it by hand.
pub fn runbooks(ctx: &Ctx) -> Result<Reply> {
    let agents = store::list_agents(ctx.conn)?;
    let mut h = Html::new();
    h.raw("<h1>Runbooks</h1>");
    if ctx.admin() {
        h.raw("<datalist id=\"agents\">");
        for a in &agents {
            h.raw("<option").attr("value", &a.id).raw(">");
        }
        h.raw("</datalist>");
    }
    for rb in ctx.config.runbooks.values() {
        h.raw("<article class=\"card runbook\"")
            .attr("id", format!("runbook-{}", rb.name))
            .raw("><h2>")
            .text(&rb.name)
            .raw("</h2>");
        if !rb.description.is_empty() {
            h.raw("<p>").text(&rb.description).raw("</p>");
        }
        h.raw("<ol class=\"steps\">");
        for s in &rb.steps {
            h.raw("<li><strong>")
                .text(&s.name)
                .raw("</strong> <code>")
                .text(&s.run)
                .raw("</code> <small>")
                .text(format!(
                    "timeout {}",
                    crate::time::format_duration(s.timeout)
                ))
                .raw("</small></li>");
        }
        h.raw("</ol>");
        if ctx.admin() {
            h.raw("<form method=\"post\" class=\"act\"")
                .attr("action", path("/runbooks", &rb.name) + "/run")
                .raw(">");
            csrf(&mut h, ctx);
            h.raw("<label>On <input type=\"text\" name=\"target\" list=\"agents\" required maxlength=\"128\" placeholder=\"agent id\"></label>")
                .raw("<label>Why <input type=\"text\" name=\"reason\" required maxlength=\"1000\" placeholder=\"shown on the event\"></label>")
                .raw("<button type=\"submit\" class=\"go\">Run by hand</button></form>");
        }
        h.raw("</article>");
    }
    frame(ctx, "Runbooks", "/runbooks", None, h)
}

/// `GET /audit`: who changed what, newest first, page by page.
pub fn audit(ctx: &Ctx) -> Result<Reply> {
    let action = ctx.query("action");
    let before = ctx
        .query("before")
        .map(|b| {
            b.parse::<i64>()
                .map_err(|_| Error::request(400, format!("before: {b:?} is not an entry id")))
        })
        .transpose()?;
    let mut entries = store::audit_entries(ctx.conn, 0, action.as_deref(), before, AUDIT_PAGE + 1)?;
    let more = entries.len() as i64 > AUDIT_PAGE;
    entries.truncate(AUDIT_PAGE as usize);
    let mut h = Html::new();
    h.raw("<h1>Audit log</h1><form method=\"get\" action=\"/audit\" class=\"filters\"><label>Action <input type=\"text\" name=\"action\"")
        .attr("value", action.as_deref().unwrap_or(""))
        .raw(" placeholder=\"event.approved, auth.refused, …\"></label><button type=\"submit\">Filter</button> <a href=\"/audit\">Clear</a></form>");
    h.raw("<table class=\"rows\">");
    h.thead(&["When", "Who", "Action", "Target", "Detail", "From"]);
    h.raw("<tbody>");
    for e in &entries {
        h.raw("<tr>").td_open("When");
        when(&mut h, Some(e.at), ctx.now);
        h.raw("</td>")
            .td("Who", &e.actor)
            .td("Action", &e.action)
            .td("Target", &e.target)
            .td("Detail", &e.detail)
            .td("From", e.remote.as_deref().unwrap_or(""))
            .raw("</tr>");
    }
    h.raw("</tbody></table><nav class=\"pager\" aria-label=\"Pages\">");
    let a = action.unwrap_or_default();
    if before.is_some() {
        h.link(&url("/audit", &[("action", &a)]), "← Newest");
    }
    if let (true, Some(last)) = (more, entries.last()) {
        let b = last.id.to_string();
        h.raw(" ")
            .link(&url("/audit", &[("action", &a), ("before", &b)]), "Older →");
    }
    h.raw("</nav>");
    frame(ctx, "Audit log", "/audit", None, h)
}
