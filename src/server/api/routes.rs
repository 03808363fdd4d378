//! Every route of the API in one table (`ROUTES`): method, path template,
//! the scope a token needs, and what it does. The router, the scope check,
//! the OpenAPI description and the tests all read it, so a route cannot
//! exist without its scope and its description.

use serde_json::{json, Map, Value};
use tiny_http::Method;

use super::decode;
use super::schemas;
use super::watch::PingPath;
use crate::config::Scope;
use crate::error::{Error, Result};

/// One route of the table.
pub struct Spec {
    /// The methods it takes.
    pub methods: &'static [&'static str],
    /// The path, with `{name}` for what varies.
    pub path: &'static str,
    /// The scope a token needs (admin covers every scope but agent); `None`: no token needed.
    pub scope: Option<Scope>,
    /// What it does, for people and the OpenAPI description.
    pub summary: &'static str,
}

const fn spec(
    methods: &'static [&'static str],
    path: &'static str,
    scope: Option<Scope>,
    summary: &'static str,
) -> Spec {
    Spec {
        methods,
        path,
        scope,
        summary,
    }
}

const READ: Option<Scope> = Some(Scope::Read);
const ADMIN: Option<Scope> = Some(Scope::Admin);
const WEBHOOK: Option<Scope> = Some(Scope::Webhook);
const PING: Option<Scope> = Some(Scope::Ping);
const AGENT: Option<Scope> = Some(Scope::Agent);
const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];

/// Every route.
pub const ROUTES: &[Spec] = &[
    spec(GET, "/-/healthy", None, "liveness: the process answers"),
    spec(GET, "/-/ready", READ, "readiness: the store answers and reports neither damage nor a full disk (else 503 with the reason)"),
    spec(
        GET,
        "/metrics",
        READ,
        "heal's own figures in Prometheus' text format",
    ),
    spec(
        GET,
        "/api/v1/openapi.json",
        None,
        "this API's OpenAPI 3 description",
    ),
    spec(
        POST,
        "/api/v1/alerts/alertmanager",
        WEBHOOK,
        "Alertmanager webhook, version 4",
    ),
    spec(
        POST,
        "/api/v1/alerts",
        WEBHOOK,
        "alerts in heal's own format",
    ),
    spec(GET, "/api/v1/alerts", READ, "alerts with their decisions"),
    spec(
        POST,
        "/hooks/{source}",
        WEBHOOK,
        "any JSON, mapped to alerts by a [[source]]",
    ),
    spec(GET, "/api/v1/events", READ, "events, newest first"),
    spec(
        GET,
        "/api/v1/events/{id}",
        READ,
        "one event: timeline, ops, output, notifications",
    ),
    spec(
        POST,
        "/api/v1/events/{id}/approve",
        ADMIN,
        "let an event waiting for approval run once",
    ),
    spec(
        POST,
        "/api/v1/events/{id}/reject",
        ADMIN,
        "cancel an event waiting for approval",
    ),
    spec(
        POST,
        "/api/v1/events/{id}/cancel",
        ADMIN,
        "cancel an open event, whatever it waits for",
    ),
    spec(
        POST,
        "/api/v1/runs",
        ADMIN,
        "run a runbook by hand on an agent, as an event",
    ),
    spec(
        GET,
        "/api/v1/decisions",
        READ,
        "decisions with counts by outcome",
    ),
    spec(
        GET,
        "/api/v1/context",
        READ,
        "the context document guards see",
    ),
    spec(GET, "/api/v1/pauses", READ, "pauses"),
    spec(POST, "/api/v1/pauses", ADMIN, "pause automation"),
    spec(
        POST,
        "/api/v1/pauses/{id}/resume",
        ADMIN,
        "end a pause early",
    ),
    spec(GET, "/api/v1/breaker", READ, "the safety breaker"),
    spec(
        POST,
        "/api/v1/breaker/reset",
        ADMIN,
        "close the safety breaker",
    ),
    spec(
        POST,
        "/api/v1/breaker/trip",
        ADMIN,
        "open the safety breaker by hand",
    ),
    spec(
        &["GET", "POST", "HEAD"],
        "/ping/{name}",
        PING,
        "a heartbeat's success ping",
    ),
    spec(
        &["GET", "POST", "HEAD"],
        "/ping/{name}/{what}",
        PING,
        "a heartbeat's start, fail or exit-code ping",
    ),
    spec(
        GET,
        "/api/v1/heartbeats",
        READ,
        "heartbeats with their status",
    ),
    spec(
        GET,
        "/api/v1/heartbeats/{name}",
        READ,
        "one heartbeat with its recent pings",
    ),
    spec(
        &["PUT", "DELETE"],
        "/api/v1/heartbeats/{name}",
        ADMIN,
        "register, update or delete a heartbeat",
    ),
    spec(
        POST,
        "/api/v1/heartbeats/{name}/mute",
        ADMIN,
        "mute a heartbeat: for a time, or until unmuted",
    ),
    spec(
        POST,
        "/api/v1/heartbeats/{name}/unmute",
        ADMIN,
        "unmute a heartbeat",
    ),
    spec(
        POST,
        "/api/v1/probes/{name}/mute",
        ADMIN,
        "mute a probe: it runs, but raises no alert",
    ),
    spec(
        POST,
        "/api/v1/probes/{name}/unmute",
        ADMIN,
        "unmute a probe",
    ),
    spec(GET, "/api/v1/probes", READ, "probes with their last result"),
    spec(
        GET,
        "/api/v1/probes/{name}",
        READ,
        "one probe with its recent results",
    ),
    spec(
        &["PUT", "DELETE"],
        "/api/v1/probes/{name}",
        ADMIN,
        "register, replace or delete a probe",
    ),
    spec(
        GET,
        "/api/v1/schedules",
        READ,
        "schedules with their last and next run",
    ),
    spec(
        GET,
        "/api/v1/outbox",
        READ,
        "notification deliveries and their counts",
    ),
    spec(
        GET,
        "/api/v1/channels",
        READ,
        "notification channels, secrets redacted",
    ),
    spec(
        POST,
        "/api/v1/channels/{name}/test",
        ADMIN,
        "send a test message to a channel now",
    ),
    spec(GET, "/api/v1/agents", READ, "agents"),
    spec(
        &["DELETE"],
        "/api/v1/agents/{agent}",
        ADMIN,
        "forget an agent that is gone (409 while it polls or has an op that has not ended)",
    ),
    spec(
        GET,
        "/api/v1/audit",
        ADMIN,
        "the audit log: who changed what",
    ),
    spec(
        GET,
        "/api/v1/status",
        READ,
        "this server and every other on the store: which leads, versions, configs, last seen",
    ),
    spec(
        GET,
        "/api/v1/config",
        READ,
        "the running config, secrets redacted, with its version",
    ),
    spec(
        POST,
        "/api/v1/config",
        ADMIN,
        "reload the config file: validated, then swapped",
    ),
    spec(
        POST,
        "/api/v1/agents/{agent}/poll",
        AGENT,
        "an agent's long poll for ops",
    ),
    spec(
        POST,
        "/api/v1/agents/{agent}/ops/{op}/start",
        AGENT,
        "an agent started an op",
    ),
    spec(
        POST,
        "/api/v1/agents/{agent}/ops/{op}/log",
        AGENT,
        "output of a running op",
    ),
    spec(
        POST,
        "/api/v1/agents/{agent}/ops/{op}/result",
        AGENT,
        "an op's result",
    ),
    spec(
        POST,
        "/api/v1/agents/{agent}/checks/{probe}/result",
        AGENT,
        "the result of an agent-side probe's run",
    ),
];

/// The table's entry for a template and method.
pub fn spec_of(path: &str, method: &str) -> Option<&'static Spec> {
    ROUTES
        .iter()
        .find(|s| s.path == path && s.methods.contains(&method))
}

/// A request's route, with what its path carries.
pub(super) enum Route {
    Healthy,
    Ready,
    Metrics,
    OpenApi,
    AlertmanagerIntake,
    OwnIntake,
    HookIntake(String),
    ListAlerts,
    ListEvents,
    ShowEvent(i64),
    Approve(i64, bool),
    Cancel(i64),
    Run,
    ListDecisions,
    Context,
    ListPauses,
    AddPause,
    ResumePause(i64),
    Breaker,
    SetBreaker(bool),
    ListAgents,
    ForgetAgent(String),
    Poll(String),
    OpStart(String, i64),
    OpLog(String, i64),
    OpResult(String, i64),
    CheckResult(String, String),
    Ping(String, PingPath),
    ListHeartbeats,
    ShowHeartbeat(String),
    PutHeartbeat(String),
    DeleteHeartbeat(String),
    MuteHeartbeat(String, bool),
    ListProbes,
    ShowProbe(String),
    PutProbe(String),
    DeleteProbe(String),
    MuteProbe(String, bool),
    ListSchedules,
    Audit,
    Status,
    ShowConfig,
    ReloadConfig,
    Outbox,
    ListChannels,
    TestChannel(String),
}

impl Route {
    /// The agent id in the path of agent routes.
    pub(super) fn agent(&self) -> Option<&str> {
        match self {
            Route::Poll(a)
            | Route::OpStart(a, _)
            | Route::OpLog(a, _)
            | Route::OpResult(a, _)
            | Route::CheckResult(a, _) => Some(a),
            _ => None,
        }
    }
}

/// Parses a request's method and path into its route.
pub(super) fn route(method: &Method, path: &str) -> Result<Route> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let not_found = || Error::request(404, format!("no such route: {method} {path}"));
    let id = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| Error::request(404, format!("{s:?} is not an id (in {path})")))
    };
    let want = |m: Method, r: Route| {
        if *method == m {
            Ok(r)
        } else {
            Err(Error::request(
                405,
                format!("{path} does not take {method} (use {m})"),
            ))
        }
    };
    match segments.as_slice() {
        ["-", "healthy"] => want(Method::Get, Route::Healthy),
        ["-", "ready"] => want(Method::Get, Route::Ready),
        ["metrics"] => want(Method::Get, Route::Metrics),
        ["api", "v1", "openapi.json"] => want(Method::Get, Route::OpenApi),
        ["api", "v1", "alerts", "alertmanager"] => want(Method::Post, Route::AlertmanagerIntake),
        ["api", "v1", "alerts"] if *method == Method::Get => Ok(Route::ListAlerts),
        ["api", "v1", "alerts"] => want(Method::Post, Route::OwnIntake),
        ["hooks", source] => want(Method::Post, Route::HookIntake(source.to_string())),
        ["api", "v1", "events"] => want(Method::Get, Route::ListEvents),
        ["api", "v1", "events", e] => want(Method::Get, Route::ShowEvent(id(e)?)),
        ["api", "v1", "events", e, "approve"] => want(Method::Post, Route::Approve(id(e)?, true)),
        ["api", "v1", "events", e, "reject"] => want(Method::Post, Route::Approve(id(e)?, false)),
        ["api", "v1", "events", e, "cancel"] => want(Method::Post, Route::Cancel(id(e)?)),
        ["api", "v1", "runs"] => want(Method::Post, Route::Run),
        ["api", "v1", "decisions"] => want(Method::Get, Route::ListDecisions),
        ["api", "v1", "context"] => want(Method::Get, Route::Context),
        ["api", "v1", "pauses"] if *method == Method::Get => Ok(Route::ListPauses),
        ["api", "v1", "pauses"] => want(Method::Post, Route::AddPause),
        ["api", "v1", "pauses", p, "resume"] => want(Method::Post, Route::ResumePause(id(p)?)),
        ["api", "v1", "breaker"] => want(Method::Get, Route::Breaker),
        ["api", "v1", "breaker", "reset"] => want(Method::Post, Route::SetBreaker(false)),
        ["api", "v1", "breaker", "trip"] => want(Method::Post, Route::SetBreaker(true)),
        ["ping", name, rest @ ..] if rest.len() <= 1 => {
            let Some(what) = PingPath::parse(rest.first().copied()) else {
                return Err(Error::request(
                    404,
                    format!(
                        "{path}: after the name comes start, fail or an exit code from 0 to 255"
                    ),
                ));
            };
            if ![Method::Get, Method::Post, Method::Head].contains(method) {
                return Err(Error::request(405, format!("{path} takes GET or POST")));
            }
            Ok(Route::Ping(decode(name), what))
        }
        ["api", "v1", "heartbeats"] => want(Method::Get, Route::ListHeartbeats),
        ["api", "v1", "heartbeats", n] => {
            let n = decode(n);
            match method {
                Method::Get => Ok(Route::ShowHeartbeat(n)),
                Method::Put => Ok(Route::PutHeartbeat(n)),
                Method::Delete => Ok(Route::DeleteHeartbeat(n)),
                _ => Err(Error::request(
                    405,
                    format!("{path} takes GET, PUT or DELETE"),
                )),
            }
        }
        ["api", "v1", "heartbeats", n, "mute"] => {
            want(Method::Post, Route::MuteHeartbeat(decode(n), true))
        }
        ["api", "v1", "heartbeats", n, "unmute"] => {
            want(Method::Post, Route::MuteHeartbeat(decode(n), false))
        }
        ["api", "v1", "probes"] => want(Method::Get, Route::ListProbes),
        ["api", "v1", "probes", n] => {
            let n = decode(n);
            match method {
                Method::Get => Ok(Route::ShowProbe(n)),
                Method::Put => Ok(Route::PutProbe(n)),
                Method::Delete => Ok(Route::DeleteProbe(n)),
                _ => Err(Error::request(
                    405,
                    format!("{path} takes GET, PUT or DELETE"),
                )),
            }
        }
        ["api", "v1", "probes", n, "mute"] => want(Method::Post, Route::MuteProbe(decode(n), true)),
        ["api", "v1", "probes", n, "unmute"] => {
            want(Method::Post, Route::MuteProbe(decode(n), false))
        }
        ["api", "v1", "schedules"] => want(Method::Get, Route::ListSchedules),
        ["api", "v1", "outbox"] => want(Method::Get, Route::Outbox),
        ["api", "v1", "audit"] => want(Method::Get, Route::Audit),
        ["api", "v1", "status"] => want(Method::Get, Route::Status),
        ["api", "v1", "config"] if *method == Method::Get => Ok(Route::ShowConfig),
        ["api", "v1", "config"] => want(Method::Post, Route::ReloadConfig),
        ["api", "v1", "channels"] => want(Method::Get, Route::ListChannels),
        ["api", "v1", "channels", n, "test"] => want(Method::Post, Route::TestChannel(decode(n))),
        ["api", "v1", "agents"] => want(Method::Get, Route::ListAgents),
        ["api", "v1", "agents", a] => want(Method::Delete, Route::ForgetAgent(a.to_string())),
        ["api", "v1", "agents", a, "poll"] => want(Method::Post, Route::Poll(a.to_string())),
        ["api", "v1", "agents", a, "ops", op, "start"] => {
            want(Method::Post, Route::OpStart(a.to_string(), id(op)?))
        }
        ["api", "v1", "agents", a, "ops", op, "log"] => {
            want(Method::Post, Route::OpLog(a.to_string(), id(op)?))
        }
        ["api", "v1", "agents", a, "ops", op, "result"] => {
            want(Method::Post, Route::OpResult(a.to_string(), id(op)?))
        }
        ["api", "v1", "agents", a, "checks", p, "result"] => {
            want(Method::Post, Route::CheckResult(a.to_string(), decode(p)))
        }
        _ => Err(not_found()),
    }
}

impl Route {
    /// The path template of the table entry this route is.
    pub(super) fn template(&self) -> &'static str {
        match self {
            Route::Healthy => "/-/healthy",
            Route::Ready => "/-/ready",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/api/v1/openapi.json",
            Route::AlertmanagerIntake => "/api/v1/alerts/alertmanager",
            Route::OwnIntake | Route::ListAlerts => "/api/v1/alerts",
            Route::HookIntake(_) => "/hooks/{source}",
            Route::ListEvents => "/api/v1/events",
            Route::ShowEvent(_) => "/api/v1/events/{id}",
            Route::Approve(_, true) => "/api/v1/events/{id}/approve",
            Route::Approve(_, false) => "/api/v1/events/{id}/reject",
            Route::Cancel(_) => "/api/v1/events/{id}/cancel",
            Route::Run => "/api/v1/runs",
            Route::ListDecisions => "/api/v1/decisions",
            Route::Context => "/api/v1/context",
            Route::ListPauses | Route::AddPause => "/api/v1/pauses",
            Route::ResumePause(_) => "/api/v1/pauses/{id}/resume",
            Route::Breaker => "/api/v1/breaker",
            Route::SetBreaker(false) => "/api/v1/breaker/reset",
            Route::SetBreaker(true) => "/api/v1/breaker/trip",
            Route::Ping(_, PingPath::Success) => "/ping/{name}",
            Route::Ping(..) => "/ping/{name}/{what}",
            Route::ListHeartbeats => "/api/v1/heartbeats",
            Route::ShowHeartbeat(_) | Route::PutHeartbeat(_) | Route::DeleteHeartbeat(_) => {
                "/api/v1/heartbeats/{name}"
            }
            Route::MuteHeartbeat(_, true) => "/api/v1/heartbeats/{name}/mute",
            Route::MuteHeartbeat(_, false) => "/api/v1/heartbeats/{name}/unmute",
            Route::ListProbes => "/api/v1/probes",
            Route::ShowProbe(_) | Route::PutProbe(_) | Route::DeleteProbe(_) => {
                "/api/v1/probes/{name}"
            }
            Route::MuteProbe(_, true) => "/api/v1/probes/{name}/mute",
            Route::MuteProbe(_, false) => "/api/v1/probes/{name}/unmute",
            Route::ListSchedules => "/api/v1/schedules",
            Route::Outbox => "/api/v1/outbox",
            Route::Audit => "/api/v1/audit",
            Route::Status => "/api/v1/status",
            Route::ShowConfig | Route::ReloadConfig => "/api/v1/config",
            Route::ListChannels => "/api/v1/channels",
            Route::TestChannel(_) => "/api/v1/channels/{name}/test",
            Route::ListAgents => "/api/v1/agents",
            Route::ForgetAgent(_) => "/api/v1/agents/{agent}",
            Route::Poll(_) => "/api/v1/agents/{agent}/poll",
            Route::OpStart(..) => "/api/v1/agents/{agent}/ops/{op}/start",
            Route::OpLog(..) => "/api/v1/agents/{agent}/ops/{op}/log",
            Route::OpResult(..) => "/api/v1/agents/{agent}/ops/{op}/result",
            Route::CheckResult(..) => "/api/v1/agents/{agent}/checks/{probe}/result",
        }
    }

    /// The audit log's name for what this route changes, if it changes
    /// what heal does (a config reload audits itself).
    pub(super) fn audit_action(&self) -> Option<&'static str> {
        Some(match self {
            Route::Approve(_, true) => "event.approved",
            Route::Approve(_, false) => "event.rejected",
            Route::Cancel(_) => "event.cancelled",
            Route::Run => "runbook.run",
            Route::AddPause => "pause.added",
            Route::ResumePause(_) => "pause.resumed",
            Route::SetBreaker(false) => "breaker.reset",
            Route::SetBreaker(true) => "breaker.tripped",
            Route::PutHeartbeat(_) => "heartbeat.registered",
            Route::DeleteHeartbeat(_) => "heartbeat.deleted",
            Route::MuteHeartbeat(_, true) => "heartbeat.muted",
            Route::MuteHeartbeat(_, false) => "heartbeat.unmuted",
            Route::PutProbe(_) => "probe.registered",
            Route::DeleteProbe(_) => "probe.deleted",
            Route::MuteProbe(_, true) => "probe.muted",
            Route::MuteProbe(_, false) => "probe.unmuted",
            Route::TestChannel(_) => "channel.tested",
            Route::ForgetAgent(_) => "agent.forgotten",
            _ => return None,
        })
    }

    /// The scope a token needs, from the table; `None`: open.
    pub(super) fn scope(&self, method: &Method) -> Option<Scope> {
        let method = method.as_str();
        // HEAD is answered like GET.
        let method = if method == "HEAD" { "GET" } else { method };
        spec_of(self.template(), method)
            .or_else(|| ROUTES.iter().find(|s| s.path == self.template()))
            .expect("every route's template is in ROUTES (tested)")
            .scope
    }
}

/// The OpenAPI 3 description of the table: every path and method, its
/// parameters, body and answers (`schemas`), the bearer scheme and the scope
/// it needs (`x-heal-scope`).
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for s in ROUTES {
        let entry = paths.entry(s.path.to_string()).or_insert_with(|| json!({}));
        for m in s.methods {
            let mut op = json!({
                "summary": s.summary,
                "operationId": operation_id(m, s.path),
                "x-heal-scope": s.scope.map(scope_name),
            });
            op["security"] = match s.scope {
                None => json!([]),
                // A ping may carry its heartbeat's key instead of a token.
                Some(Scope::Ping) => json!([{ "bearer": [] }, { "pingKey": [] }]),
                Some(_) => json!([{ "bearer": [] }]),
            };
            if let Some(o) = op.as_object_mut() {
                o.extend(schemas::operation(s, m));
            }
            entry[m.to_ascii_lowercase()] = op;
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "heal",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-healing for small sites: alerts in, runbooks run on the right host, once."
        },
        "paths": paths,
        "components": schemas::components(),
        "security": [{ "bearer": [] }]
    })
}

/// A scope's name as the config writes it.
pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Admin => "admin",
        Scope::Read => "read",
        Scope::Webhook => "webhook",
        Scope::Ping => "ping",
        Scope::Agent => "agent",
    }
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for seg in path.split(['/', '.', '-']).filter(|s| !s.is_empty()) {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        let mut chars = seg.chars();
        if let Some(c) = chars.next() {
            id.push(c.to_ascii_uppercase());
            id.push_str(chars.as_str());
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A concrete path for a template.
    fn sample(template: &str) -> String {
        template
            .replace("{id}", "7")
            .replace("{op}", "9")
            .replace("{what}", "start")
            .replace("{agent}", "web-1")
            .replace("{name}", "backup")
            .replace("{source}", "uptime")
    }

    #[test]
    fn every_table_entry_routes_to_itself_and_every_route_is_in_the_table() {
        for s in ROUTES {
            for m in s.methods {
                let method: Method = m.parse().unwrap();
                let r = route(&method, &sample(s.path))
                    .unwrap_or_else(|e| panic!("{m} {}: {e}", s.path));
                assert_eq!(r.template(), s.path, "{m} {}", s.path);
                assert_eq!(r.scope(&method), s.scope, "{m} {}", s.path);
            }
        }
    }

    #[test]
    fn methods_a_route_does_not_take_are_refused() {
        for s in ROUTES {
            for m in ["GET", "POST", "PUT", "DELETE"] {
                let taken = ROUTES
                    .iter()
                    .any(|o| o.path == s.path && o.methods.contains(&m));
                let method: Method = m.parse().unwrap();
                let got = route(&method, &sample(s.path));
                if taken {
                    assert!(got.is_ok(), "{m} {}", s.path);
                } else {
                    let status = got.err().map(|e| e.http_status());
                    assert_eq!(status, Some(405), "{m} {}", s.path);
                }
            }
        }
    }

    #[test]
    fn openapi_describes_every_route_with_its_scope() {
        let doc = openapi();
        for s in ROUTES {
            for m in s.methods {
                let op = &doc["paths"][s.path][m.to_ascii_lowercase()];
                assert_eq!(op["summary"], s.summary, "{m} {}", s.path);
                assert_eq!(op["x-heal-scope"], json!(s.scope.map(scope_name)));
            }
        }
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "operation ids are unique");
    }
}
