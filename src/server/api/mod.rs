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
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response};

use crate::alert::{self, Alert};
use crate::config::{Config, Scope};
use crate::error::{Error, Result};
use crate::event::OpState;
use crate::store::{self, AgentHello, StepResult};
use crate::time::now_ms;

use super::longpoll::{respond_ops, Claim, Parked};
use super::State;

pub(crate) mod actions;
pub mod filters;
pub(crate) mod guard;
pub(crate) mod limit;
mod metrics;
mod notify;
pub mod routes;
pub(crate) mod schemas;
pub(crate) mod watch;

use routes::{route, Route};

pub use watch::PING_BODY_MAX;

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
pub fn handle(mut request: Request, state: &Arc<State>, reader: &mut Option<Connection>) -> u16 {
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
            Ok(poll) => match holder(state, &agent, &poll.hello) {
                Ok(()) => park_or_answer(request, agent, poll, state),
                Err(e) => answer(request, &method, path, Err(e)),
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
            if status >= 500 {
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

/// The client's address, for the audit log and the limits of failed
/// authentications: behind `[server] trusted_proxies`, from `X-Forwarded-For`.
pub(crate) fn remote(state: &State, request: &Request) -> Option<String> {
    let peer = state.front.peer(request.remote_addr().copied())?.ip();
    let trusted = &state.config().server.trusted_proxies;
    Some(limit::client(peer, request, trusted).to_string())
}

/// A request header's value.
pub(crate) fn header<'r>(request: &'r Request, name: &'static str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

fn bearer(request: &Request) -> Option<String> {
    let (scheme, token) = header(request, "Authorization")?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Compares two secrets without an early exit on the first differing byte.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= (*x ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

/// Who a request comes from, once its token is checked.
struct Caller {
    /// The token's name, "local" when heal serves loopback without tokens,
    /// "anonymous" on an open route, or "ping-key".
    name: String,
    /// The token, if one was presented.
    token: Option<crate::config::Token>,
}

impl Caller {
    fn named(name: &str) -> Caller {
        Caller {
            name: name.into(),
            token: None,
        }
    }

    /// Refuses (403) an agent's declared tags that its token does not allow.
    fn may_declare(&self, tags: &[String]) -> Result<()> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        match token.tag_not_allowed(tags) {
            None => Ok(()),
            Some(tag) => Err(Error::request(
                403,
                format!(
                    "token {:?} does not allow tag {tag:?} (it allows {:?}): add it to the token's tags = [...] in [[token]], or drop it from the agent's --tags",
                    token.name, token.tags
                ),
            )),
        }
    }
}

/// Checks the bearer token against the route's scope; returns who is asking.
/// A wrong or expired token counts against the client's address
/// (`limit`): past the limit it is answered 429, a right one never is.
fn authorize(request: &Request, route: &Route, state: &State) -> Result<Caller> {
    let Some(scope) = route.scope(request.method()) else {
        return Ok(Caller::named("anonymous"));
    };
    let config = state.config();
    if guard::is_open(state, &config) {
        return Ok(Caller::named("local"));
    }
    let from = remote(state, request);
    let Some(presented) = bearer(request) else {
        state.refused(route.template(), from.as_deref(), "no token");
        return Err(Error::request(
            401,
            "missing bearer token (send Authorization: Bearer <token>)",
        ));
    };
    let mut found = None;
    for t in config.tokens.iter().chain(state.internal_tokens.iter()) {
        if t.matches(&presented) {
            found = Some(t.clone());
        }
    }
    let now = now_ms();
    let refused = match &found {
        None => Some("unknown token".to_string()),
        Some(t) if t.expired(now) => {
            let when = crate::time::format_rfc3339(t.expires.unwrap_or_default());
            Some(format!("token {:?} expired at {when}", t.name))
        }
        Some(_) => None,
    };
    if let Some(why) = refused {
        let address = from.as_deref().unwrap_or("unknown");
        let limited = state.auth_failures.limited(address, now);
        state.metrics.observe_auth_failure(limited.is_some());
        if let Some(after) = limited {
            let why = format!("{why}, after too many failed authentications");
            state.refused(route.template(), from.as_deref(), &why);
            return Err(limit::too_many(address, "wrong tokens", after));
        }
        state.auth_failures.add(address, now);
        state.refused(route.template(), from.as_deref(), &why);
        // An expired token: the client learns no more than for a wrong one.
        return Err(Error::request(401, "invalid token"));
    }
    let token = found.expect("refused above when no token matched");
    if !token.may(scope) {
        let hint = if scope == Scope::Agent {
            " (admin does not act as an agent: give the token the agent scope)"
        } else {
            ""
        };
        return Err(Error::request(
            403,
            format!(
                "token {:?} lacks the {scope:?} scope for this route{hint}",
                token.name
            )
            .to_lowercase(),
        ));
    }
    if let (Some(bound), Some(agent)) = (&token.agent, route.agent()) {
        if bound != agent {
            return Err(Error::request(
                403,
                format!(
                    "token {:?} is bound to agent {bound:?}, not {agent:?}",
                    token.name
                ),
            ));
        }
    }
    Ok(Caller {
        name: token.name.clone(),
        token: Some(token),
    })
}

pub(crate) fn read_body(request: &mut Request, max: usize) -> Result<Vec<u8>> {
    if let Some(len) = request.body_length() {
        if len > max {
            return Err(Error::request(413, format!("body of {len} bytes is larger than the limit of {max} bytes ([server] max_body)")));
        }
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::request(400, format!("cannot read request body: {e}")))?;
    if body.len() > max {
        return Err(Error::request(
            413,
            format!("body is larger than the limit of {max} bytes ([server] max_body)"),
        ));
    }
    Ok(body)
}

fn read_json(request: &mut Request, max: usize) -> Result<Value> {
    guard::require_json(request)?;
    let body = read_body(request, max)?;
    serde_json::from_slice(&body).map_err(|e| Error::request(400, format!("malformed JSON: {e}")))
}

/// `?force=true` of `POST /api/v1/config` (no body, so a client needs none).
fn force(query: &str) -> Result<bool> {
    match query_param(query, "force") {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(Error::request(
            400,
            format!("force: must be true or false (got {:?})", decode(other)),
        )),
    }
}

pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(crate) fn reader<'a>(
    state: &State,
    conn: &'a mut Option<Connection>,
) -> Result<&'a Connection> {
    if conn.is_none() {
        *conn = Some(store::open(&state.db_path)?);
    }
    Ok(conn.as_ref().expect("opened just above"))
}

type Answer = Result<(u16, Value)>;

fn dispatch(
    request: &mut Request,
    route: Route,
    who: &str,
    query: &str,
    state: &Arc<State>,
    conn: &mut Option<Connection>,
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
        Route::PutHeartbeat(n) => watch::put(request, n, state, &config),
        Route::DeleteHeartbeat(n) => watch::delete(n, state),
        Route::MuteHeartbeat(n, on) => {
            let body = read_optional_json(request, max)?;
            let reason = reason(&body)?;
            watch::mute(n, on, reason, who, state)
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
                && store::health::room(&state.db_path).is_some_and(|free| free >= need)
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
            Ok((200, json!({ "status": "ready" })))
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
        Route::Approve(..) | Route::Cancel(_) | Route::SetBreaker(_) => {
            let body = read_optional_json(request, max)?;
            actions::perform(state, &route, who, &body)
        }
        Route::AddPause | Route::Run => {
            let body = read_json(request, max)?;
            actions::perform(state, &route, who, &body)
        }
        Route::ResumePause(_) => actions::perform(state, &route, who, &json!({})),
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
pub(crate) fn event_json(conn: &Connection, id: i64) -> Result<Option<Value>> {
    let Some(detail) = store::event_detail(conn, id)? else {
        return Ok(None);
    };
    let mut v = serde_json::to_value(detail).expect("event detail serializes");
    v["decisions"] = json!(store::browse::event_decisions(conn, id, 500)?);
    let sent = store::deliveries(conn, None, None, Some(id), 100)?;
    v["notifications"] = serde_json::to_value(sent).expect("deliveries serialize");
    Ok(Some(v))
}

/// A JSON body that may be absent (empty) or `{}`.
fn read_optional_json(request: &mut Request, max: usize) -> Result<Value> {
    guard::require_json(request)?;
    let body = read_body(request, max)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::request(400, format!("malformed JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::request(422, "the body must be a JSON object"));
    }
    Ok(v)
}

/// A note from a person, cut to 1000 characters for the timeline and logs.
fn short(note: &str) -> String {
    note.chars().take(1000).collect()
}

/// The optional `"reason"` of a body: a string, cut by `short`, or empty.
fn reason(body: &Value) -> Result<String> {
    match body.get("reason") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(short(s)),
        Some(_) => Err(Error::request(
            422,
            "reason: must be a string (send {\"reason\": \"why\"})",
        )),
    }
}

/// Decodes a query value: `+` and `%XX` escapes.
pub(crate) fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A pause from its JSON: `{runbook?, target?, match?, all?, for | until, reason}`.
fn new_pause(body: &Value, who: &str) -> Result<store::NewPause> {
    let bad = |m: String| Error::request(422, format!("pause: {m}"));
    let text = |k: &str| -> Result<Option<String>> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 1024 => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(bad(format!(
                "{k:?} must be a non-empty string of at most 1024 bytes"
            ))),
        }
    };
    // A field of another type is refused, never taken as left out.
    let typed = |k: &str, is: fn(&Value) -> bool, what: &str| -> Result<Option<&Value>> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) if is(v) => Ok(Some(v)),
            Some(_) => Err(bad(format!("{k:?} must be {what}"))),
        }
    };
    let (runbook, target, matches) = (text("runbook")?, text("target")?, text("match")?);
    let all = typed("all", Value::is_boolean, "true or false")? == Some(&Value::Bool(true));
    if runbook.is_none() && target.is_none() && matches.is_none() && !all {
        return Err(bad("say what it covers: \"runbook\", \"target\", \"match\", or \"all\": true for all automation".into()));
    }
    if let Some(m) = &matches {
        crate::config::Expr::compile(m).map_err(|e| bad(format!("match: {e}")))?;
    }
    let reason = text("reason")?
        .ok_or_else(|| bad("give a \"reason\" (shown on every decision it pauses)".into()))?;
    let duration = typed("for", Value::is_string, "a duration like \"30m\"")?;
    let end = typed("until", Value::is_i64, "ms since the epoch, a whole number")?;
    let now = now_ms();
    let until = match (duration.and_then(Value::as_str), end.and_then(Value::as_i64)) {
        (Some(d), None) => {
            let d = crate::time::parse_duration(d).map_err(|e| bad(format!("for: {e}")))?;
            // Past i64, the duration is refused below like any beyond 90 days.
            now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
        (None, Some(t)) => t,
        _ => return Err(bad("give exactly one of \"for\" (a duration like \"30m\") or \"until\" (ms since the epoch)".into())),
    };
    if until <= now || until > now + 90 * 86_400_000 {
        return Err(bad(
            "the pause must end in the future, within 90 days".into()
        ));
    }
    Ok(store::NewPause {
        runbook,
        target,
        matches,
        reason,
        by: who.to_string(),
        until,
    })
}

/// A true-or-false query parameter (`true`, `1`, `false`, `0`; absent is false).
fn flag(query: &str, name: &str) -> Result<bool> {
    match query_param(query, name) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(v) => Err(Error::request(
            400,
            format!("{name}: {v:?} is not true or false"),
        )),
    }
}

fn limit(query: &str) -> Result<i64> {
    match query_param(query, "limit") {
        None => Ok(100),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=schemas::LIMIT_MAX).contains(n))
            .ok_or_else(|| {
                let max = schemas::LIMIT_MAX;
                Error::request(400, format!("limit: {v:?} is not a number from 1 to {max}"))
            }),
    }
}

fn parse_since(v: &str) -> Result<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    let d = crate::time::parse_duration(v).map_err(|e| {
        Error::request(400, format!("since: {e} (or milliseconds since the epoch)"))
    })?;
    // A duration longer than the clock has run reaches back to its start.
    let back = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Ok(now_ms().saturating_sub(back))
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
    super::intake::finish(applied, &state.metrics, &source);
    Ok((200, json!({ "accepted": n, "alerts": alerts })))
}

struct PollRequest {
    hello: AgentHello,
    capacity: usize,
    wait: Duration,
    lease_ms: i64,
}

fn poll_request(
    request: &mut Request,
    agent: &str,
    query: &str,
    config: &Config,
) -> Result<PollRequest> {
    crate::rules::check_agent_id(agent).map_err(|e| Error::request(400, e))?;
    let body = read_json(request, config.server.max_body)?;
    let hello: AgentHello =
        serde_json::from_value(body).map_err(|e| Error::request(422, format!("poll: {e}")))?;
    if hello.instance.is_empty() || hello.instance.len() > 128 {
        return Err(Error::request(
            422,
            "poll: \"instance\" must be 1 to 128 characters",
        ));
    }
    let whole = |name: &str, unit: &str| -> Result<Option<u64>> {
        query_param(query, name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    let e = format!("poll: {name}: {v:?} is not a whole number of {unit}");
                    Error::request(400, e)
                })
            })
            .transpose()
    };
    // An agent may run more at once than one poll hands it.
    let capacity = whole("capacity", "ops")?.unwrap_or(1).clamp(1, 256) as usize;
    let wait = whole("wait", "seconds")?
        .map(Duration::from_secs)
        .unwrap_or(config.server.poll_wait)
        .min(config.server.poll_wait);
    Ok(PollRequest {
        hello,
        capacity,
        wait,
        lease_ms: config.server.lease.as_millis() as i64,
    })
}

/// Claims queued ops for the agent, or parks the poll until work arrives or
/// the wait ends. Both happen inside one store job, so no op queued by
/// another request can fall between the two.
fn park_or_answer(request: Request, agent: String, poll: PollRequest, state: &Arc<State>) -> u16 {
    let state2 = state.clone();
    let handed = state.writer.write(move |conn| {
        let now = now_ms();
        store::touch_agent(conn, &agent, &poll.hello, now)?;
        let claimed = store::claim_ops(
            conn,
            &agent,
            &poll.hello.instance,
            poll.capacity,
            now + poll.lease_ms,
            now,
        )?;
        if claimed.is_empty() && !poll.wait.is_zero() {
            let parked = Parked {
                request,
                instance: poll.hello.instance,
                capacity: poll.capacity,
                deadline: Instant::now() + poll.wait,
            };
            state2.waiters.park(&agent, parked);
            return Ok(None);
        }
        Ok(Some((request, claimed)))
    });
    match handed {
        Ok(Some((request, claimed))) => respond_ops(request, &claimed),
        Ok(None) => {}
        // The request was dropped with the failed job: tiny_http answers it with a 500 and the agent polls again.
        Err(e) => {
            log::error!("poll: {e}");
            return 500;
        }
    }
    200
}

/// Whether the polling process may hold its agent id (see `longpoll::Holders`);
/// a refused one learns who holds it.
fn holder(state: &State, agent: &str, hello: &AgentHello) -> Result<()> {
    let claim = state
        .holders
        .claim(agent, &hello.instance, &hello.hostname, Instant::now());
    let (instance, hostname, alive) = match claim {
        Claim::Held => return Ok(()),
        Claim::Checking { instance, hostname } => (instance, hostname, false),
        Claim::InUse { instance, hostname } => (instance, hostname, true),
    };
    // A live holder with a parked poll polls again at once when it is answered.
    if let Some(parked) = state.waiters.take(agent) {
        if parked.instance == instance {
            respond_ops(parked.request, &[]);
        } else {
            state.waiters.put_back(agent, parked);
        }
    }
    if !alive {
        return Err(Error::request(
            409,
            format!("agent id {agent:?} is held by another process (instance {instance}, host {hostname:?}); checking that it is still there: poll again in a second"),
        ));
    }
    log::warn!(
        "agent id {agent:?}: a second process (instance {}, host {:?}) polls while instance {instance} on host {hostname:?} holds the id; refused: give each agent its own --id",
        hello.instance,
        hello.hostname
    );
    Err(Error::request(
        409,
        format!("agent id {agent:?} is in use by a live agent (instance {instance}, host {hostname:?}): give each agent its own --id"),
    ))
}

fn op_call(
    state: &Arc<State>,
    agent: String,
    op: i64,
    f: impl FnOnce(&Connection, &store::OpRef, i64) -> Result<(u16, Value)> + Send + 'static,
) -> Answer {
    state.holders.touch(&agent, Instant::now());
    let answer = state.writer.write(move |conn| {
        if !store::agent_known(conn, &agent)? {
            return Err(Error::request(
                404,
                format!("unknown agent {agent:?}: it has never polled this server"),
            ));
        }
        let Some(op_ref) = store::op_ref(conn, op)? else {
            return Err(Error::request(404, format!("no op {op}")));
        };
        if op_ref.agent != agent {
            return Err(Error::request(
                403,
                format!("op {op} belongs to agent {:?}, not {agent:?}", op_ref.agent),
            ));
        }
        f(conn, &op_ref, now_ms())
    })?;
    Ok(answer)
}
