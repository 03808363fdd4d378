//! What people ask heal to do: approve or reject an event, cancel one, pause
//! and resume, reset or trip the breaker, run a runbook by hand, register,
//! replace, delete, mute and unmute a heartbeat or a probe. Each has
//! one code path here (`perform`) and one audit entry (`audit`), whatever
//! asked for it: an API route, or a dashboard form (`act`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tiny_http::Method;

use super::routes::{route, Route};
use super::{new_pause, reason, short, Answer};
use crate::error::Error;
use crate::server::{intake, lifecycle, manual, metrics, watch, State};
use crate::store;
use crate::store::sql::Db;
use crate::time::now_ms;

/// Carries out the action of an API route (one that `Route::audit_action`
/// names) with its JSON body, and audits it as the route would: the
/// dashboard's way into the same code. `path` is the API route's path.
pub(crate) fn act(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    who: &str,
    body: &Value,
    remote: Option<&str>,
) -> Answer {
    let route = route(method, path)?;
    let Some(action) = route.audit_action() else {
        return Err(Error::request(
            404,
            format!("{method} {path} is not an action"),
        ));
    };
    let answer = perform(state, &route, who, body);
    audit(state, who, action, path, &answer, remote);
    answer
}

/// Records a change a request made in the audit log: its action, the path,
/// and the answer (cut to 600 bytes) as the detail. Refused requests change
/// nothing and are not recorded here.
pub(super) fn audit(
    state: &State,
    who: &str,
    action: &str,
    path: &str,
    answer: &Answer,
    remote: Option<&str>,
) {
    if let Ok((status, body)) = answer {
        if *status < 300 {
            let detail = body.to_string();
            let detail = crate::notify::tail(&detail, 600);
            state.audit(who, action, path, detail, remote);
        }
    }
}

/// `DELETE /api/v1/agents/{id}`: forgets an agent that is gone, and resolves
/// its `AgentDown` as its return would. Refused while it polls, or while it
/// has an op that has not ended: a queued op would wait for it forever and a
/// running one's result would come back to no agent; cancelling the op's
/// event, or its lease running out, ends it.
pub(super) fn forget_agent(state: &Arc<State>, id: String, who: &str) -> Answer {
    if state.waiters.connected().contains(&id) {
        return Err(Error::request(
            409,
            format!("agent {id} is polling now: stop it on its host first, then forget it"),
        ));
    }
    let (config, st) = (state.config(), state.clone());
    let answer_id = id.clone();
    let applied = state.writer.write(move |conn| {
        let ops = store::unfinished_ops(conn, &id)?;
        if !ops.is_empty() {
            let list: Vec<String> = ops
                .iter()
                .map(|o| format!("op {} ({}, event {})", o.id, o.state, o.event_id))
                .collect();
            return Err(Error::request(
                409,
                format!(
                    "agent {id} has ops that have not ended: {}; cancel their events (POST /api/v1/events/ID/cancel) or wait for them, then forget it",
                    list.join(", ")
                ),
            ));
        }
        if !store::forget_agent(conn, &id)? {
            return Err(Error::request(404, format!("no agent {id:?}")));
        }
        watch::agents_forgotten(conn, &config, &st, now_ms())
    })?;
    log::info!("agent {answer_id} forgotten by {who}");
    intake::finish(applied, state, metrics::INTERNAL);
    Ok((200, json!({ "forgotten": answer_id })))
}

/// Carries out an action route with its (already read) JSON body.
pub(super) fn perform(state: &Arc<State>, route: &Route, who: &str, body: &Value) -> Answer {
    let note = reason(body)?;
    match *route {
        Route::Approve(id, yes) => lifecycle_job(
            state,
            move |conn, by| lifecycle::approve(conn, id, yes, by, &note, now_ms()),
            who,
            200,
        ),
        Route::Cancel(id) => lifecycle_job(
            state,
            move |conn, by| lifecycle::cancel(conn, id, by, &note, now_ms()),
            who,
            200,
        ),
        Route::Run => {
            let req = manual_request(body, who)?;
            let config = state.config();
            lifecycle_job(
                state,
                move |conn, _| manual::run(conn, &config, &req, now_ms()),
                who,
                201,
            )
        }
        Route::AddPause => add_pause(state, who, body),
        Route::ResumePause(id) => resume_pause(state, id, who),
        Route::SetBreaker(open) => set_breaker(state, open, who, &note),
        Route::PutHeartbeat(ref name) => super::watch::put(name.clone(), body.clone(), state),
        Route::DeleteHeartbeat(ref name) => super::watch::delete(name.clone(), state),
        Route::PutProbe(ref name) => super::watch::put_probe(name.clone(), body.clone(), state),
        Route::DeleteProbe(ref name) => super::watch::delete_probe(name.clone(), state),
        Route::MuteHeartbeat(ref name, on) => {
            super::watch::mute(state, store::Muted::Heartbeat, name.clone(), on, body, who)
        }
        Route::MuteProbe(ref name, on) => {
            super::watch::mute(state, store::Muted::Probe, name.clone(), on, body, who)
        }
        _ => Err(Error::request(404, "not an action")),
    }
}

/// Runs a lifecycle job that changes one event, then wakes agents and logs;
/// answers `{"event": ...}` with `status`.
fn lifecycle_job(
    state: &Arc<State>,
    f: impl FnOnce(Db<'_>, &str) -> crate::error::Result<(lifecycle::Done, store::EventRow)>
        + Send
        + 'static,
    who: &str,
    status: u16,
) -> Answer {
    let by = who.to_string();
    let (done, event) = state.writer.write(move |conn| f(conn, &by))?;
    for (level, line) in &done.log {
        log::log!(*level, "{line}");
    }
    state.wake(&done.woke);
    Ok((status, json!({ "event": event })))
}

/// A run by hand from its JSON: `{runbook, target, reason, params?}`.
fn manual_request(body: &Value, who: &str) -> crate::error::Result<manual::Request> {
    let bad = |m: String| Error::request(422, format!("run: {m}"));
    let text = |k: &str| -> crate::error::Result<String> {
        match body.get(k) {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 1024 => {
                Ok(s.trim().to_string())
            }
            _ => Err(bad(format!(
                "give {k:?}: a non-empty string of at most 1024 bytes"
            ))),
        }
    };
    let runbook = text("runbook")?;
    let target = text("target")?;
    crate::rules::check_agent_id(&target).map_err(|e| bad(format!("target: {e}")))?;
    let reason = text("reason").map_err(|_| {
        bad(
            "give a \"reason\": it is shown on the event, in its notifications and the audit log"
                .into(),
        )
    })?;
    let mut params = BTreeMap::new();
    match body.get("params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) if map.len() <= 32 => {
            for (k, v) in map {
                let ok_name = !k.is_empty()
                    && k.len() <= 64
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                match v {
                    Value::String(s) if ok_name && s.len() <= 4096 => {
                        params.insert(k.clone(), s.clone());
                    }
                    _ => return Err(bad(format!("params.{k}: names are letters, digits and '_' (at most 64), values strings of at most 4096 bytes"))),
                }
            }
        }
        Some(_) => {
            return Err(bad(
                "\"params\" must be an object of at most 32 strings".into()
            ))
        }
    }
    if let Some((a, b, var)) = crate::exec::same_env_name(params.keys()) {
        return Err(bad(format!(
            "params: {a:?} and {b:?} both become HEAL_PARAM_{var} (give them names that differ in more than case)"
        )));
    }
    Ok(manual::Request {
        runbook,
        target,
        reason: short(&reason),
        params,
        by: who.to_string(),
        nonce: crate::agent::random_hex(8),
    })
}

fn add_pause(state: &Arc<State>, who: &str, body: &Value) -> Answer {
    let pause = new_pause(body, who)?;
    let line = format!("pause added by {who}: {body}");
    let pause = state
        .writer
        .write(move |conn| store::add_pause(conn, &pause, now_ms()))?;
    log::info!("{line}");
    Ok((201, json!({ "pause": pause })))
}

fn resume_pause(state: &Arc<State>, id: i64, who: &str) -> Answer {
    let by = who.to_string();
    let resumed = state
        .writer
        .write(move |conn| store::resume_pause(conn, id, &by, now_ms()))?;
    match resumed {
        None => Err(Error::request(404, format!("no pause {id}"))),
        Some(false) => Err(Error::request(409, format!("pause {id} has already ended"))),
        Some(true) => {
            log::info!("pause {id} resumed by {who}");
            Ok((200, json!({ "resumed": id })))
        }
    }
}

fn set_breaker(state: &Arc<State>, open: bool, who: &str, note: &str) -> Answer {
    let (to, reason) = if open {
        if note.trim().is_empty() {
            return Err(Error::request(
                422,
                "breaker trip: give a \"reason\" (why all automation must stop)",
            ));
        }
        ("open", format!("opened by {who}: {note}"))
    } else if note.is_empty() {
        ("closed", format!("reset by {who}"))
    } else {
        ("closed", format!("reset by {who}: {note}"))
    };
    let (by, reason2) = (who.to_string(), reason.clone());
    let changed = state.writer.write(move |conn| {
        let now = now_ms();
        let changed = store::set_breaker(conn, to, &reason2, &by, now)?;
        Ok((changed, store::breaker(conn, now)?))
    })?;
    if changed.0 {
        log::warn!("safety breaker {reason}");
    }
    Ok((200, json!({ "changed": changed.0, "breaker": changed.1 })))
}
