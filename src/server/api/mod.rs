//! HTTP routing, bearer tokens and scopes, request and response JSON, status
//! codes. The only code that knows the wire format of the API.
//!
//! Every request body is size-limited (413) and parsed before anything is
//! stored; malformed input gets a 4xx naming the problem. Before any route
//! runs, `guard` refuses what a web page in a browser may not do (a
//! foreign `Host` on an open heal, a foreign `Origin` on a change), and
//! `limit` answers 429 to an address that sent too many wrong tokens.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use crate::store::sql::Db;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response};

use crate::alert::{self, Alert};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::OpState;
use crate::store::{self, StepResult};
use crate::time::now_ms;

use super::State;

pub(crate) mod actions;
mod auth;
pub mod filters;
pub(crate) mod guard;
pub(crate) mod limit;
mod metrics;
mod notify;
mod polls;
mod request;
pub mod routes;
pub(crate) mod schemas;
pub(crate) mod watch;

use routes::{route, Route};

pub use watch::PING_BODY_MAX;

use auth::{authorize, Caller};
pub(crate) use auth::{remote, same_secret};
use polls::{op_call, park_or_answer, poll_request, Polled};
pub(crate) use request::{decode, header, query_param, read_body, reader};
use request::{
    flag, force, limit, new_mute, new_pause, parse_since, read_json, read_optional_json, reason,
    short,
};

/// A JSON response with the right content type.
pub fn json_response(status: u16, body: &Value) -> Response<std::io::Cursor<Vec<u8>>> {
    let header =
        Header::from_bytes("Content-Type", "application/json").expect("a static header is valid");
    Response::from_data(body.to_string().into_bytes())
        .with_status_code(status)
        .with_header(header)
}

fn error_body(e: &Error) -> Value {
    json!({ "error": e.to_string() })
}

/// Handles one request to its end (answered here, or parked for a poll);
/// returns the status it was (or, parked, will be) answered with.
pub fn handle(
    mut request: Request,
    state: &Arc<State>,
    reader: &mut Option<crate::store::Conn>,
) -> u16 {
    let method = request.method().clone();
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    if let Err(e) = guard::host(&request, state, &state.config()) {
        return answer(request, &method, path, Err(e));
    }
    if super::dashboard::serves(path) {
        return super::dashboard::handle(request, state, reader);
    }
    if let Err(e) = guard::origin(&request, state, &state.config()) {
        return answer(request, &method, path, Err(e));
    }
    // A ping may carry its heartbeat's key instead of a token (cron lines that cannot send headers).
    let ping_key = query_param(query, "key").filter(|_| path.starts_with("/ping/"));
    let (route, caller) = match route(&method, path).and_then(|r| match (&r, ping_key) {
        (Route::Ping(..), Some(_)) => Ok((r, Caller::named("ping-key"))),
        _ => authorize(&request, &r, state).map(|caller| (r, caller)),
    }) {
        Ok(r) => r,
        Err(e) => return answer(request, &method, path, Err(e)),
    };
    if let Err(e) = filters::check_query(method.as_str(), route.template(), query) {
        return answer(request, &method, path, Err(e));
    }
    if let Route::Ping(name, what) = route {
        let key = ping_key.map(decode);
        let result = watch::ping(&mut request, name, what, key.as_deref(), state, reader);
        return answer(request, &method, path, result);
    }
    if let Route::Metrics = route {
        return metrics::scrape(request, &method, path, state, reader);
    }
    if let Route::Poll(agent) = route {
        if state.front.is_draining() {
            // Parked now, the poll would hold its connection open through the drain.
            let e = Error::request(503, "heal is stopping: poll again in a moment");
            return answer(request, &method, path, Err(e));
        }
        let polled = poll_request(&mut request, &agent, query, &state.config())
            .and_then(|poll| caller.may_declare(&poll.hello.tags).map(|()| poll));
        return match polled {
            Ok(poll) => match park_or_answer(request, agent, poll, state) {
                Polled::Done(status) => status,
                Polled::Refused(refused) => answer(refused.0, &method, path, Err(refused.1)),
            },
            Err(e) => answer(request, &method, path, Err(e)),
        };
    }
    let who = caller.name;
    let audited = route.audit_action();
    let result = dispatch(&mut request, route, &who, query, state, reader);
    if let Some(action) = audited {
        let from = remote(state, &request);
        actions::audit(state, &who, action, path, &result, from.as_deref());
    }
    answer(request, &method, path, result)
}

fn answer(request: Request, method: &Method, path: &str, result: Result<(u16, Value)>) -> u16 {
    let (status, body) = match result {
        Ok(answer) => answer,
        Err(e) => {
            let status = e.http_status();
            if status == 503 {
                // The store's outage (or heal stopping) is logged where it
                // is found, once, not for every request it turns away.
                log::debug!("{method} {path}: {status} {e}");
            } else if status >= 500 {
                log::error!("{method} {path}: {e}");
            } else {
                log::debug!("{method} {path}: {status} {e}");
            }
            (status, error_body(&e))
        }
    };
    let mut response = json_response(status, &body);
    if status == 429 {
        // The only 429 here is `limit`'s, which lasts to the end of the minute.
        let after = limit::retry_after(now_ms()).to_string();
        let header = Header::from_bytes("Retry-After", after).expect("digits are a valid header");
        response.add_header(header);
    }
    send(request, response, method, path);
    status
}

fn send<R: Read>(request: Request, response: Response<R>, method: &Method, path: &str) {
    if let Err(e) = request.respond(response) {
        log::debug!("{method} {path}: client went away before the answer ({e})");
    }
}

/// The `route` label of `heal_http_requests_total`: the template of the
/// route a request went to, or "other" when none matched (a 404 or 405).
pub fn route_label(method: &Method, url: &str) -> &'static str {
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    if let Ok(r) = route(method, path) {
        return r.template();
    }
    // A dashboard page is labelled by its row's template, like an API route.
    super::dashboard::table::route(method.as_str(), path).map_or("other", |(row, _)| row.path)
}

type Answer = Result<(u16, Value)>;

fn dispatch(
    request: &mut Request,
    route: Route,
    who: &str,
    query: &str,
    state: &Arc<State>,
    conn: &mut Option<crate::store::Conn>,
) -> Answer {
    let config = state.config();
    let max = config.server.max_body;
    match route {
        Route::Healthy => Ok((200, json!({ "status": "ok" }))),
        Route::OpenApi => Ok((200, routes::openapi())),
        Route::Audit => {
            let since = query_param(query, "since")
                .map(parse_since)
                .transpose()?
                .unwrap_or(0);
            let action = query_param(query, "action").map(decode);
            let entries = store::audit_entries(
                reader(state, conn)?,
                since,
                action.as_deref(),
                None,
                limit(query)?,
            )?;
            Ok((200, json!({ "entries": entries })))
        }
        Route::Status => Ok((200, crate::server::replicas::status(state, reader(state, conn)?)?)),
        Route::ShowConfig => {
            let current = store::current_config(reader(state, conn)?)?;
            Ok((
                200,
                json!({
                    "path": config.path.display().to_string(),
                    "sha256": config.hash,
                    "version": current.as_ref().filter(|c| c.hash == config.hash).map(|c| c.version),
                    "applied_at": current.as_ref().filter(|c| c.hash == config.hash).map(|c| c.applied_at),
                    "config": crate::config::redacted(&config),
                }),
            ))
        }
        // A body would be a config someone means to apply: say so rather
        // than reload the file and answer as if it had been taken. (No
        // length is no body: the front refuses chunked ones.)
        Route::ReloadConfig if request.body_length().unwrap_or(0) > 0 => Err(Error::request(
            415,
            format!(
                "POST /api/v1/config takes no body: it reloads {} from disk (edit the file first). Objects change one by one through their routes: PUT /api/v1/heartbeats/{{name}}, PUT /api/v1/probes/{{name}}, POST /api/v1/pauses, POST /api/v1/breaker/reset",
                config.path.display()
            ),
        )),
        Route::ReloadConfig => match state.reload(who, force(query)?) {
            Ok((version, changed)) => Ok((
                200,
                json!({ "version": version, "changed": changed, "sha256": state.config().hash }),
            )),
            Err(e @ Error::Config(_)) => Err(Error::request(
                422,
                format!("the config stays at its running version: {e}"),
            )),
            Err(e) => Err(e),
        },
        Route::Ping(..) => unreachable!("pings are answered in handle"),
        Route::Metrics => unreachable!("/metrics is answered in handle"),
        Route::ListHeartbeats => {
            let text = |name| query_param(query, name).map(decode);
            let only = watch::Only {
                state: text("state"),
                service: text("service"),
                team: text("team"),
            };
            let n = match query_param(query, "limit") {
                None => 1000,
                Some(_) => limit(query)? as usize,
            };
            watch::list(state, reader(state, conn)?, &only, n)
        }
        Route::ShowHeartbeat(n) => {
            watch::show(state, reader(state, conn)?, &n, limit(query)?.min(200))
        }
        Route::ListProbes => {
            let only = query_param(query, "state").map(decode);
            watch::probes(reader(state, conn)?, &config, only.as_deref())
        }
        Route::ShowProbe(n) => {
            watch::probe(reader(state, conn)?, &config, &n, limit(query)?.min(200))
        }
        Route::ListSchedules => watch::schedules(reader(state, conn)?, &config),
        Route::Outbox => notify::outbox(reader(state, conn)?, query, limit(query)?),
        Route::ListChannels => notify::channels(&config),
        Route::TestChannel(n) => notify::test(state, &config, &n, who),
        Route::Ready => {
            // A full disk is retried once a request's worth of room is free:
            // a page may fit in what a failed write left, a request not.
            let need = config.server.max_body as u64;
            if store::health::is_full()
                && state
                    .location
                    .file()
                    .and_then(store::health::room)
                    .is_some_and(|free| free >= need)
            {
                let mark = store::health::mark();
                if state.writer.write(store::health::probe_write).is_ok() {
                    store::health::committed(mark);
                }
            }
            if let Some(problem) = store::health::problem() {
                return Err(Error::request(503, problem));
            }
            store::health::probe_read(reader(state, conn)?)?;
            let mut status = crate::server::replicas::status(state, reader(state, conn)?)?;
            status["status"] = json!("ready");
            Ok((200, status))
        }
        Route::AlertmanagerIntake => {
            let body = read_json(request, max)?;
            let alerts = alert::from_alertmanager(&body).map_err(|e| {
                Error::request(422, format!("not a valid Alertmanager payload: {e}"))
            })?;
            intake(state, &config, alerts)
        }
        Route::OwnIntake => {
            let body = read_json(request, max)?;
            let alerts = alert::from_own(&body)
                .map_err(|e| Error::request(422, format!("not a valid alert: {e}")))?;
            intake(state, &config, alerts)
        }
        Route::HookIntake(source) => {
            let Some(src) = config.sources.get(&source) else {
                return Err(Error::request(
                    404,
                    format!(
                        "no [[source]] named {source:?} in {}",
                        config.path.display()
                    ),
                ));
            };
            let body = read_json(request, max)?;
            let alerts = alert::from_source(src, &body).map_err(|e| Error::request(422, e))?;
            intake(state, &config, alerts)
        }
        Route::ListAlerts => {
            let limit = limit(query)?;
            let since = query_param(query, "since")
                .map(parse_since)
                .transpose()?
                .unwrap_or(0);
            let text = |name| query_param(query, name).map(decode);
            // `filters` has checked the status.
            let (status, fingerprint, name) = (text("status"), text("fingerprint"), text("name"));
            let alerts = store::list_alerts(
                reader(state, conn)?,
                status.as_deref(),
                fingerprint.as_deref(),
                name.as_deref(),
                since,
                limit,
            )?;
            Ok((200, json!({ "alerts": alerts })))
        }
        Route::ListEvents => {
            let text = |name| {
                query_param(query, name)
                    .map(decode)
                    .filter(|v| !v.is_empty())
            };
            let filter = store::EventFilter {
                states: text("state")
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                rule: text("rule"),
                key: text("key"),
                runbook: text("runbook"),
                open: flag(query, "open")?,
                agent: text("agent"),
                since: text("since").map(|v| parse_since(&v)).transpose()?,
                before: text("before")
                    .map(|v| {
                        v.parse::<i64>().map_err(|_| {
                            Error::request(400, format!("before: {v:?} is not an event id"))
                        })
                    })
                    .transpose()?,
            };
            let events = store::list_events(reader(state, conn)?, &filter, limit(query)?)?;
            Ok((200, json!({ "events": events })))
        }
        Route::Approve(..)
        | Route::Cancel(_)
        | Route::SetBreaker(_)
        | Route::MuteHeartbeat(..)
        | Route::MuteProbe(..) => {
            let body = read_optional_json(request, max)?;
            actions::perform(state, &route, who, &body)
        }
        Route::AddPause | Route::Run | Route::PutHeartbeat(_) | Route::PutProbe(_) => {
            let body = read_json(request, max)?;
            actions::perform(state, &route, who, &body)
        }
        Route::ResumePause(_) | Route::DeleteHeartbeat(_) | Route::DeleteProbe(_) => {
            actions::perform(state, &route, who, &json!({}))
        }
        Route::ListDecisions => {
            let since = query_param(query, "since")
                .map(parse_since)
                .transpose()?
                .unwrap_or(0);
            let rule = query_param(query, "rule").map(decode);
            let outcome = query_param(query, "outcome").map(decode);
            let c = reader(state, conn)?;
            let counts = store::decision_counts(c, since, rule.as_deref())?;
            let decisions = store::list_decisions(
                c,
                since,
                rule.as_deref(),
                outcome.as_deref(),
                limit(query)?,
            )?;
            Ok((
                200,
                json!({ "since": since, "counts": counts, "decisions": decisions }),
            ))
        }
        Route::Context => {
            let ctx = store::context(
                reader(state, conn)?,
                super::intake::recent_ms(&config),
                now_ms(),
            )?;
            Ok((200, ctx))
        }
        Route::ListPauses => {
            let all = flag(query, "all")?;
            let pauses = store::pauses(reader(state, conn)?, !all, now_ms())?;
            Ok((200, json!({ "pauses": pauses })))
        }
        Route::Breaker => {
            let mut b = store::breaker(reader(state, conn)?, now_ms())?;
            b["max_runs_per_hour"] = json!(config.safety.max_runs_per_hour);
            b["max_failed_in_row"] = json!(config.safety.max_failed_in_row);
            Ok((200, b))
        }
        Route::ShowEvent(id) => match event_json(reader(state, conn)?, id)? {
            Some(v) => Ok((200, v)),
            None => Err(Error::request(404, format!("no event {id}"))),
        },
        Route::ListAgents => {
            let mut agents = serde_json::to_value(store::list_agents(reader(state, conn)?)?)
                .expect("agents serialize");
            let connected = state.waiters.connected();
            for a in agents.as_array_mut().into_iter().flatten() {
                let polling = a["id"]
                    .as_str()
                    .is_some_and(|id| connected.iter().any(|c| c == id));
                a["polling"] = json!(polling);
            }
            Ok((200, json!({ "agents": agents })))
        }
        Route::ForgetAgent(id) => actions::forget_agent(state, id, who),
        Route::Poll(_) => unreachable!("polls are handled before dispatch"),
        Route::OpStart(agent, op) => {
            let body = read_json(request, max)?;
            let budget = body
                .get("budget_ms")
                .and_then(Value::as_i64)
                .unwrap_or(3_600_000)
                .clamp(1_000, 30 * 86_400_000);
            op_call(state, agent, op, move |conn, op_ref, now| {
                if op_ref.state == OpState::Dispatched
                    && store::start_op(conn, op, now + budget, now)?
                {
                    store::add_timeline(
                        conn,
                        op_ref.event_id,
                        "started",
                        &format!("op {op} started on agent {}", op_ref.agent),
                        now,
                    )?;
                    store::advance(conn, op_ref.event_id, now)?;
                    return Ok((200, json!({ "ok": true })));
                }
                if op_ref.state == OpState::Running {
                    return Ok((200, json!({ "ok": true, "note": "already started" })));
                }
                if matches!(
                    op_ref.state,
                    OpState::Succeeded | OpState::Failed | OpState::TimedOut
                ) {
                    // The result overtook the acknowledgement.
                    return Ok((200, json!({ "ok": true, "note": "already finished" })));
                }
                Err(Error::request(
                    409,
                    format!("op {op} is {}: do not run it", op_ref.state.as_str()),
                ))
            })
        }
        Route::OpLog(agent, op) => {
            let body = read_json(request, max)?;
            let seq = body
                .get("seq")
                .and_then(Value::as_i64)
                .ok_or_else(|| Error::request(422, "log: missing integer field \"seq\""))?;
            let step = body.get("step").and_then(Value::as_i64).unwrap_or(0);
            let skipped = body.get("skipped").and_then(Value::as_i64).unwrap_or(0);
            let data = body
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::request(422, "log: missing string field \"data\""))?
                .to_string();
            let cap = config.server.max_output;
            op_call(state, agent, op, move |conn, op_ref, _now| {
                if op_ref.state.is_final() {
                    return Ok((200, json!({ "ok": true, "note": "op already ended" })));
                }
                store::append_log(conn, op, seq, step, data.as_bytes(), skipped, cap)?;
                Ok((200, json!({ "ok": true })))
            })
        }
        Route::CheckResult(agent, probe) => {
            let body = read_json(request, max)?;
            let (due, outcome) = crate::server::watch::parse_result(&body)?;
            Ok((200, crate::server::watch::record_result(state, agent, probe, due, outcome)?))
        }
        Route::OpResult(agent, op) => {
            let body = read_json(request, max)?;
            let state_name = body
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let op_state = match OpState::parse(state_name) {
                Some(s @ (OpState::Succeeded | OpState::Failed | OpState::TimedOut)) => s,
                _ => {
                    return Err(Error::request(
                        422,
                        format!(
                        "result: state must be succeeded, failed or timed_out (got {state_name:?})"
                    ),
                    ))
                }
            };
            let steps: Vec<StepResult> =
                serde_json::from_value(body.get("steps").cloned().unwrap_or(json!([])))
                    .map_err(|e| Error::request(422, format!("result: bad steps: {e}")))?;
            let error = body
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string);
            let ran = Duration::from_millis(
                steps
                    .iter()
                    .fold(0, |total, s| s.duration_ms.saturating_add(total)),
            );
            op_call(state, agent, op, move |conn, op_ref, now| {
                let woke = store::record_result(
                    conn,
                    op,
                    op_ref.event_id,
                    op_state,
                    error.as_deref(),
                    &steps,
                    now,
                )?;
                let recorded = woke.is_some();
                Ok((200, json!({ "recorded": recorded, "duplicate": !recorded, "woke": woke.unwrap_or_default() })))
            })
            .map(|(status, mut body)| {
                let woke: Vec<String> = serde_json::from_value(body["woke"].take()).unwrap_or_default();
                if let Some(o) = body.as_object_mut() {
                    o.remove("woke");
                }
                if body["recorded"] == true {
                    state.metrics.observe_op(op_state, ran);
                }
                state.wake(&woke);
                (status, body)
            })
        }
    }
}

/// One event as `GET /api/v1/events/{id}` shows it: the event, its alert,
/// timeline, ops with their steps and output, the decisions that named it and
/// the notifications sent for it; `None` if there is no such event.
pub(crate) fn event_json(conn: Db<'_>, id: i64) -> Result<Option<Value>> {
    let Some(detail) = store::event_detail(conn, id)? else {
        return Ok(None);
    };
    let mut v = serde_json::to_value(detail).expect("event detail serializes");
    v["decisions"] = json!(store::browse::event_decisions(conn, id, 500)?);
    let sent = store::deliveries(conn, None, None, Some(id), 100)?;
    v["notifications"] = serde_json::to_value(sent).expect("deliveries serialize");
    Ok(Some(v))
}

fn intake(state: &Arc<State>, config: &Arc<Config>, alerts: Vec<Alert>) -> Answer {
    let n = alerts.len();
    // One payload, one source: "alertmanager", "heal" or the [[source]] name.
    let source = alerts.first().map(|a| a.source.clone()).unwrap_or_default();
    // Rules are pure: evaluate them here, outside the single writer thread.
    let evals = super::intake::evaluate(config, &alerts);
    let (config2, state2) = (config.clone(), state.clone());
    let mut applied = state.writer.write(move |conn| {
        super::intake::apply(conn, &config2, &state2.waiters, &alerts, &evals, now_ms())
    })?;
    let alerts = std::mem::take(&mut applied.alerts);
    super::intake::finish(applied, state, &source);
    Ok((200, json!({ "accepted": n, "alerts": alerts })))
}
