//! Managing heartbeats and probes from the dashboard: register, edit and
//! delete those of the API, mute (for a time, or until unmuted) and unmute
//! any. The forms are drawn for admin viewers only; each action turns its
//! form into the body of its API route (`PUT`, `DELETE` or `POST .../mute`)
//! and goes through `api::actions::act`, so it is validated, applied and
//! audited exactly as the API's, and a refusal comes back as a page with
//! the route's own message.
//!
//! A definition is written as the fields of one `[[heartbeat]]` or
//! `[[probe]]` in TOML, as in `runbooks.toml`. A probe's stored fields are
//! not shown back (they may hold a header's token or a password): editing
//! one means giving its fields again.

use serde_json::json;
use tiny_http::Method;

use super::actions::act_with;
use super::html::{encode, path, Html};
use super::layout::{button, csrf};
use super::{Ctx, Reply};
use crate::config;
use crate::error::{Error, Result};

/// How long a mute from the dashboard lasts; "" is until unmuted.
const MUTE_FOR: &[&str] = &["", "30m", "1h", "2h", "4h", "12h", "24h", "7d"];

/// Heartbeats or probes.
#[derive(Clone, Copy)]
enum What {
    Heartbeat,
    Probe,
}

impl What {
    fn name(self) -> &'static str {
        match self {
            What::Heartbeat => "heartbeat",
            What::Probe => "probe",
        }
    }

    /// The dashboard's list of them.
    fn page(self) -> &'static str {
        match self {
            What::Heartbeat => "/heartbeats",
            What::Probe => "/probes",
        }
    }

    /// The API's path of one.
    fn api(self, name: &str) -> String {
        format!("/api/v1{}/{}", self.page(), encode(name))
    }
}

/// The form that registers a heartbeat or replaces one of the API's.
pub fn heartbeat_form(h: &mut Html, ctx: &Ctx, name: &str, fields: &str) {
    definition_form(
        h,
        ctx,
        What::Heartbeat,
        name,
        fields,
        "every = \"1h\"\ngrace = \"15m\"",
    );
}

/// The form that registers a probe or replaces one of the API's.
pub fn probe_form(h: &mut Html, ctx: &Ctx, name: &str) {
    definition_form(
        h,
        ctx,
        What::Probe,
        name,
        "",
        "every = \"30s\"\nhttp = { url = \"https://shop.example/health\", status = [200] }",
    );
}

fn definition_form(
    h: &mut Html,
    ctx: &Ctx,
    what: What,
    name: &str,
    fields: &str,
    placeholder: &'static str,
) {
    if !ctx.admin() {
        return;
    }
    h.raw("<h2>")
        .text(if name.is_empty() {
            format!("Register a {}", what.name())
        } else {
            format!("Edit {} {name}", what.name())
        })
        .raw("</h2><form method=\"post\" class=\"card form\"")
        .attr("action", what.page())
        .raw(">");
    csrf(h, ctx);
    h.raw("<label>Name <input type=\"text\" name=\"name\" required maxlength=\"128\"")
        .attr("value", name);
    if !name.is_empty() {
        h.raw(" readonly");
    }
    h.raw("></label><label>Fields, as in runbooks.toml <textarea name=\"definition\" rows=\"6\" required spellcheck=\"false\"")
        .attr("placeholder", placeholder)
        .raw(">")
        .text(fields)
        .raw("</textarea></label><button type=\"submit\">Save</button></form>");
}

/// Mute (with how long) or unmute, and delete for one the API registered.
pub fn controls(h: &mut Html, ctx: &Ctx, probe: bool, name: &str, muted: bool, from_api: bool) {
    if !ctx.admin() {
        return;
    }
    let what = if probe { What::Probe } else { What::Heartbeat };
    let base = path(what.page(), name);
    h.raw("<div class=\"actions\">");
    if muted {
        button(h, ctx, &format!("{base}/unmute"), "Unmute", "go", None);
    } else {
        h.raw("<form method=\"post\" class=\"act\"")
            .attr("action", format!("{base}/mute"))
            .raw(">");
        csrf(h, ctx);
        h.raw("<select name=\"for\" aria-label=\"For how long\">");
        for d in MUTE_FOR {
            h.raw("<option").attr("value", d).raw(">");
            if d.is_empty() {
                h.raw("until unmuted");
            } else {
                h.text(format!("for {d}"));
            }
            h.raw("</option>");
        }
        h.raw("</select><input type=\"text\" name=\"reason\" maxlength=\"1000\" aria-label=\"Reason\" placeholder=\"why\"><button type=\"submit\">Mute</button></form>");
    }
    if from_api {
        // A box to tick: no script is needed to ask first.
        h.raw("<form method=\"post\" class=\"act\"")
            .attr("action", format!("{base}/delete"))
            .raw(">");
        csrf(h, ctx);
        h.raw("<label class=\"check\"><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> sure</label><button type=\"submit\" class=\"danger\">Delete</button></form>");
    }
    h.raw("</div>");
}

fn save(ctx: &Ctx, what: What) -> Result<Reply> {
    let name = ctx.field("name");
    let body = config::toml_fields(ctx.field("definition")).map_err(|e| {
        Error::request(
            422,
            format!(
                "{} {name:?}: the fields are not TOML (those of one [[{}]], without the header): {e}",
                what.name(),
                what.name()
            ),
        )
    })?;
    let back = path(what.page(), name);
    act_with(ctx, &Method::Put, &what.api(name), &body, &back, "saved")
}

fn delete(ctx: &Ctx, what: What) -> Result<Reply> {
    if ctx.field("confirm") != "yes" {
        return Err(Error::request(
            422,
            format!(
                "delete {} {:?}: tick \"sure\" first",
                what.name(),
                ctx.name()
            ),
        ));
    }
    act_with(
        ctx,
        &Method::Delete,
        &what.api(ctx.name()),
        &json!({}),
        what.page(),
        "deleted",
    )
}

fn mute(ctx: &Ctx, what: What, on: bool) -> Result<Reply> {
    let name = ctx.name();
    let (api_path, body, done) = if on {
        let duration = Some(ctx.field("for")).filter(|d| !d.is_empty());
        let body = json!({ "reason": ctx.field("reason"), "for": duration });
        (format!("{}/mute", what.api(name)), body, "muted")
    } else {
        (format!("{}/unmute", what.api(name)), json!({}), "unmuted")
    };
    act_with(
        ctx,
        &Method::Post,
        &api_path,
        &body,
        &path(what.page(), name),
        done,
    )
}

/// `POST /heartbeats`: `name` and `definition` → `PUT /api/v1/heartbeats/NAME`.
pub fn save_heartbeat(ctx: &Ctx) -> Result<Reply> {
    save(ctx, What::Heartbeat)
}

/// `POST /heartbeats/{name}/delete` → `DELETE /api/v1/heartbeats/NAME`.
pub fn delete_heartbeat(ctx: &Ctx) -> Result<Reply> {
    delete(ctx, What::Heartbeat)
}

/// `POST /heartbeats/{name}/mute`: `for` (empty: until unmuted) and `reason`.
pub fn mute_heartbeat(ctx: &Ctx) -> Result<Reply> {
    mute(ctx, What::Heartbeat, true)
}

/// `POST /heartbeats/{name}/unmute`.
pub fn unmute_heartbeat(ctx: &Ctx) -> Result<Reply> {
    mute(ctx, What::Heartbeat, false)
}

/// `POST /probes`: `name` and `definition` → `PUT /api/v1/probes/NAME`.
pub fn save_probe(ctx: &Ctx) -> Result<Reply> {
    save(ctx, What::Probe)
}

/// `POST /probes/{name}/delete` → `DELETE /api/v1/probes/NAME`.
pub fn delete_probe(ctx: &Ctx) -> Result<Reply> {
    delete(ctx, What::Probe)
}

/// `POST /probes/{name}/mute`: `for` (empty: until unmuted) and `reason`.
pub fn mute_probe(ctx: &Ctx) -> Result<Reply> {
    mute(ctx, What::Probe, true)
}

/// `POST /probes/{name}/unmute`.
pub fn unmute_probe(ctx: &Ctx) -> Result<Reply> {
    mute(ctx, What::Probe, false)
}
