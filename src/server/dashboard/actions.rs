//! The dashboard's forms. Each action turns its form into the JSON body of
//! its API route and goes through the route's own code
//! (`api::actions::act`), which also audits it; then the browser is sent
//! back to the page the change shows on. A refusal (409, 422, …) comes back
//! as a page with the route's own message. Also logging in and out.

use serde_json::{json, Value};
use tiny_http::Method;

use super::html::path;
use super::layout::login_form;
use super::session::{self, next_page, set_cookie};
use super::{api, Ctx, Reply};
use crate::error::{Error, Result};

/// Runs the action of API route `POST api_path` with `body`; on success,
/// sends the browser to `back` with a notice.
fn act(ctx: &Ctx, api_path: &str, body: Value, back: &str, done: &str) -> Result<Reply> {
    act_with(ctx, &Method::Post, api_path, &body, back, done)
}

/// `act` for an API route of any method.
pub(super) fn act_with(
    ctx: &Ctx,
    method: &Method,
    api_path: &str,
    body: &Value,
    back: &str,
    done: &str,
) -> Result<Reply> {
    let who = &ctx.viewer().name;
    api::actions::act(
        ctx.state,
        method,
        api_path,
        who,
        body,
        ctx.remote.as_deref(),
    )?;
    Ok(Reply::redirect(&super::html::url(back, &[("done", done)])))
}

/// The reason field, as the API takes it.
fn reason(ctx: &Ctx) -> Value {
    json!({ "reason": ctx.field("reason") })
}

/// `POST /events/{id}/approve`.
pub fn approve(ctx: &Ctx) -> Result<Reply> {
    let id = ctx.id()?;
    let back = path("/events", id);
    act(
        ctx,
        &format!("/api/v1/events/{id}/approve"),
        reason(ctx),
        &back,
        "approved",
    )
}

/// `POST /events/{id}/reject`.
pub fn reject(ctx: &Ctx) -> Result<Reply> {
    let id = ctx.id()?;
    let back = path("/events", id);
    act(
        ctx,
        &format!("/api/v1/events/{id}/reject"),
        reason(ctx),
        &back,
        "rejected",
    )
}

/// `POST /events/{id}/cancel`.
pub fn cancel(ctx: &Ctx) -> Result<Reply> {
    let id = ctx.id()?;
    let back = path("/events", id);
    act(
        ctx,
        &format!("/api/v1/events/{id}/cancel"),
        reason(ctx),
        &back,
        "cancelled",
    )
}

/// `POST /pauses`: `runbook`, `target`, `all`, `for`, `reason` as the API takes them.
pub fn pause(ctx: &Ctx) -> Result<Reply> {
    let mut body = json!({ "for": ctx.field("for"), "reason": ctx.field("reason") });
    for key in ["runbook", "target"] {
        let v = ctx.field(key);
        if !v.is_empty() {
            body[key] = json!(v);
        }
    }
    if ctx.field("all") == "true" {
        body["all"] = json!(true);
    }
    act(ctx, "/api/v1/pauses", body, "/pauses", "paused")
}

/// `POST /pauses/{id}/resume`.
pub fn resume(ctx: &Ctx) -> Result<Reply> {
    let id = ctx.id()?;
    act(
        ctx,
        &format!("/api/v1/pauses/{id}/resume"),
        json!({}),
        "/pauses",
        "resumed",
    )
}

/// `POST /breaker/reset`.
pub fn reset_breaker(ctx: &Ctx) -> Result<Reply> {
    act(ctx, "/api/v1/breaker/reset", reason(ctx), "/", "reset")
}

/// `POST /runbooks/{name}/run`: a run by hand; the browser goes to its event.
pub fn run(ctx: &Ctx) -> Result<Reply> {
    let body = json!({ "runbook": ctx.name(), "target": ctx.field("target"), "reason": ctx.field("reason") });
    let who = &ctx.viewer().name;
    let (_, answer) = api::actions::act(
        ctx.state,
        &Method::Post,
        "/api/v1/runs",
        who,
        &body,
        ctx.remote.as_deref(),
    )?;
    let id = answer["event"]["id"]
        .as_i64()
        .ok_or_else(|| Error::Failed("a run by hand answered without its event".into()))?;
    Ok(Reply::redirect(&super::html::url(
        &path("/events", id),
        &[("done", "started")],
    )))
}

/// `POST /login`: the token from the form; a session cookie, or the form
/// again with why it was refused.
pub fn login(ctx: &Ctx) -> Result<Reply> {
    let next = next_page(Some(ctx.field("next")));
    if session::is_open(ctx.state, &ctx.config) {
        return Ok(Reply::redirect(&next));
    }
    match session::login(
        ctx.state,
        &ctx.config,
        ctx.field("token"),
        ctx.remote.as_deref(),
        ctx.now,
    ) {
        Ok((_, id)) => {
            Ok(Reply::redirect(&next).with_cookie(set_cookie(Some(&id), ctx.state.front.is_tls())))
        }
        Err(Error::Request(status, message)) => Ok(login_form(&next, Some(&message), status)),
        Err(e) => Err(e),
    }
}

/// `POST /logout`.
pub fn logout(ctx: &Ctx) -> Result<Reply> {
    session::logout(ctx.state, ctx.viewer(), ctx.remote.as_deref())?;
    Ok(Reply::redirect("/login").with_cookie(set_cookie(None, ctx.state.front.is_tls())))
}
