//! The operations, one function per part of the API: each fills the
//! `Shape` of the routes it knows and says whether it knew the route.

use serde_json::{json, Value};

use super::components::breaker;
use super::{
    array, boolean, enum_query, flag_query, int, int_or_null, json_content, limit, list_query,
    no_body, object, ok, query, reason_body, schema_ref, since, string, string_or_null, text_query,
    wrapped, Shape, LIMIT_MAX,
};
use crate::server::api::filters;

/// The shape of a route's method, if it is described here.
pub(super) fn shape(method: &str, path: &str) -> Option<Shape> {
    let mut s = Shape::default();
    let known = [service, alerts, safety, watch, admin, agent]
        .iter()
        .any(|part| part(&mut s, method, path));
    known.then_some(s)
}

/// What heal says of itself: health, metrics and this description.
fn service(s: &mut Shape, method: &str, path: &str) -> bool {
    match (method, path) {
        ("GET", "/-/healthy") => s.answers = ok(status_answer("ok")),
        ("GET", "/-/ready") => {
            s.answers = ok(json!({ "allOf": [schema_ref("Status"), status_answer("ready")] }))
        }
        ("GET", "/api/v1/status") => s.answers = ok(schema_ref("Status")),
        ("GET", "/metrics") => {
            s.answers = vec![(
                200,
                "Prometheus' text format 0.0.4",
                json!({ "text/plain": { "schema": string() } }),
            )]
        }
        ("GET", "/api/v1/openapi.json") => {
            s.answers = ok(object(
                json!({ "openapi": string(), "info": { "type": "object" }, "paths": { "type": "object" } }),
                &["openapi", "info", "paths"],
            ))
        }
        _ => return false,
    }
    true
}

/// Alerts in, and what became of them.
fn alerts(s: &mut Shape, method: &str, path: &str) -> bool {
    match (method, path) {
        ("POST", "/api/v1/alerts/alertmanager") => {
            s.body = Some((true, json_content(schema_ref("AlertmanagerWebhook"))));
            s.answers = ok(schema_ref("Intake"));
        }
        ("POST", "/api/v1/alerts") => {
            let own = schema_ref("OwnAlert");
            let list = json!({ "type": "array", "items": own, "minItems": 1 });
            s.body = Some((
                true,
                json_content(json!({ "anyOf": [own, list, wrapped("alerts", list)] })),
            ));
            s.answers = ok(schema_ref("Intake"));
        }
        ("POST", "/hooks/{source}") => {
            s.body = Some((
                true,
                json_content(
                    json!({ "description": "any JSON; the [[source]]'s expressions find the alerts in it" }),
                ),
            ));
            s.answers = ok(schema_ref("Intake"));
        }
        ("GET", "/api/v1/alerts") => {
            s.query = vec![
                enum_query(
                    "status",
                    &filters::alert_statuses(),
                    "only alerts in this status",
                ),
                text_query("fingerprint", "only the alert with this fingerprint"),
                text_query("name", "only alerts of this name"),
                since(),
                limit(100, LIMIT_MAX),
            ];
            s.answers = ok(wrapped("alerts", array(schema_ref("Alert"))));
        }
        ("GET", "/api/v1/events") => {
            s.query = vec![
                list_query(
                    "state",
                    &filters::event_states(),
                    "only events in these states, comma-separated",
                ),
                text_query("rule", "only events of this rule"),
                text_query("key", "only events of this key"),
                text_query("runbook", "only events of this runbook"),
                flag_query("open", "only open events"),
                text_query("agent", "only events with an op on this agent"),
                since(),
                query(
                    "before",
                    json!({ "type": "integer" }),
                    "only events with a smaller id (the next page)",
                ),
                limit(100, LIMIT_MAX),
            ];
            s.answers = ok(wrapped("events", array(schema_ref("Event"))));
        }
        ("GET", "/api/v1/events/{id}") => s.answers = ok(schema_ref("EventDetail")),
        (
            "POST",
            "/api/v1/events/{id}/approve"
            | "/api/v1/events/{id}/reject"
            | "/api/v1/events/{id}/cancel",
        ) => {
            s.body = reason_body();
            s.answers = ok(wrapped("event", schema_ref("Event")));
            s.errors = &[409];
        }
        ("POST", "/api/v1/runs") => {
            let text = |description: &str| json!({ "type": "string", "minLength": 1, "maxLength": 1024, "pattern": "\\S", "description": description });
            s.body = Some((
                true,
                json_content(object(
                    json!({
                        "runbook": text("the runbook to run"),
                        "target": text("the agent id to run it on"),
                        "reason": text("why: shown on the event, in its notifications and the audit log"),
                        "params": {
                            "type": "object",
                            "maxProperties": 32,
                            "additionalProperties": { "type": "string", "maxLength": 4096 },
                            "description": "HEAL_PARAM_<NAME> for the steps",
                        },
                    }),
                    &["runbook", "target", "reason"],
                )),
            ));
            s.answers = vec![(
                201,
                "the run's event",
                json_content(wrapped("event", schema_ref("Event"))),
            )];
            s.errors = &[409];
        }
        ("GET", "/api/v1/decisions") => {
            s.query = vec![
                since(),
                text_query("rule", "only decisions of this rule"),
                enum_query(
                    "outcome",
                    &filters::outcomes(),
                    "only decisions with this outcome",
                ),
                limit(100, LIMIT_MAX),
            ];
            s.answers = ok(object(
                json!({
                    "since": int(),
                    "counts": { "type": "object", "additionalProperties": int() },
                    "decisions": array(schema_ref("Decision")),
                }),
                &["since", "counts", "decisions"],
            ));
        }
        ("GET", "/api/v1/context") => {
            let list = || array(json!({ "type": "object" }));
            s.answers = ok(object(
                json!({
                    "now": int(), "alerts": list(), "events": list(), "agents": list(),
                    "heartbeats": list(), "probes": list(), "pauses": list(),
                    "breaker": schema_ref("Breaker"),
                }),
                &[
                    "now",
                    "alerts",
                    "events",
                    "agents",
                    "heartbeats",
                    "probes",
                    "pauses",
                    "breaker",
                ],
            ));
        }
        _ => return false,
    }
    true
}

/// Pauses and the breaker.
fn safety(s: &mut Shape, method: &str, path: &str) -> bool {
    match (method, path) {
        ("GET", "/api/v1/pauses") => {
            s.query = vec![flag_query("all", "also pauses that ended in the last day")];
            s.answers = ok(wrapped("pauses", array(schema_ref("Pause"))));
        }
        ("POST", "/api/v1/pauses") => {
            s.body = Some((true, json_content(schema_ref("NewPause"))));
            s.answers = vec![(
                201,
                "added",
                json_content(wrapped("pause", schema_ref("Pause"))),
            )];
        }
        ("POST", "/api/v1/pauses/{id}/resume") => {
            s.body = no_body();
            s.answers = ok(wrapped("resumed", int()));
            s.errors = &[409];
        }
        ("GET", "/api/v1/breaker") => {
            let mut b = breaker();
            b["properties"]["max_runs_per_hour"] = json!({ "type": "integer" });
            b["properties"]["max_failed_in_row"] = json!({ "type": "integer" });
            s.answers = ok(b);
        }
        ("POST", "/api/v1/breaker/reset") => {
            s.body = reason_body();
            s.answers = ok(breaker_change());
        }
        ("POST", "/api/v1/breaker/trip") => {
            s.body = Some((
                true,
                json_content(object(
                    json!({ "reason": { "type": "string", "minLength": 1, "pattern": "\\S", "description": "why all automation must stop" } }),
                    &["reason"],
                )),
            ));
            s.answers = ok(breaker_change());
        }
        _ => return false,
    }
    true
}

/// Pings, heartbeats, probes and schedules.
fn watch(s: &mut Shape, method: &str, path: &str) -> bool {
    match (method, path) {
        ("GET" | "HEAD" | "POST", "/ping/{name}" | "/ping/{name}/{what}") => {
            if method == "POST" {
                s.body = Some((
                    false,
                    json!({ "text/plain": { "schema": { "type": "string", "description": "the run's log; the last 10 KB are kept" } } }),
                ));
                s.errors = &[413];
            }
            s.answers = ok(object(
                json!({
                    "ok": boolean(), "heartbeat": string(),
                    "ping": { "type": "string", "enum": ["start", "success", "fail"] },
                    "exit_code": { "type": "integer", "nullable": true },
                }),
                &["ok", "heartbeat", "ping"],
            ));
        }
        ("GET", "/api/v1/heartbeats") => {
            s.query = vec![
                enum_query(
                    "state",
                    &filters::heartbeat_states(),
                    "only heartbeats in this state",
                ),
                text_query("service", "only heartbeats whose service is this"),
                text_query("team", "only heartbeats whose team is this"),
                limit(1000, LIMIT_MAX),
            ];
            s.answers = ok(object(
                json!({
                    "heartbeats": array(schema_ref("Heartbeat")),
                    "total": { "type": "integer" },
                    "last_sweep": { "type": "object", "nullable": true, "properties": { "at": int(), "heartbeats": { "type": "integer" }, "micros": { "type": "integer" } } },
                }),
                &["heartbeats", "total", "last_sweep"],
            ));
        }
        ("GET", "/api/v1/heartbeats/{name}") => {
            s.query = vec![limit(100, LIMIT_MAX)];
            let mut hb = json!({ "allOf": [schema_ref("Heartbeat"), object(json!({ "recent_pings": array(schema_ref("Ping")) }), &["recent_pings"])] });
            hb = wrapped("heartbeat", hb);
            s.answers = ok(hb);
        }
        ("PUT", path @ ("/api/v1/heartbeats/{name}" | "/api/v1/probes/{name}")) => {
            let (key, definition) = if path.starts_with("/api/v1/probes") {
                ("probe", "ProbeDefinition")
            } else {
                ("heartbeat", "HeartbeatDefinition")
            };
            s.body = Some((true, json_content(schema_ref(definition))));
            let answer = object(
                json!({ key: string(), "created": boolean() }),
                &[key, "created"],
            );
            s.answers = vec![
                (200, "updated", json_content(answer.clone())),
                (201, "registered", json_content(answer)),
            ];
            s.errors = &[409];
        }
        ("DELETE", "/api/v1/heartbeats/{name}" | "/api/v1/probes/{name}") => {
            s.answers = ok(wrapped("deleted", string()));
            s.errors = &[409];
        }
        (
            "POST",
            path @ ("/api/v1/heartbeats/{name}/mute"
            | "/api/v1/heartbeats/{name}/unmute"
            | "/api/v1/probes/{name}/mute"
            | "/api/v1/probes/{name}/unmute"),
        ) => {
            let (key, mut fields) = if path.starts_with("/api/v1/probes") {
                ("probe", json!({}))
            } else {
                ("heartbeat", json!({ "paused": boolean() }))
            };
            fields[key] = string();
            fields["muted"] = boolean();
            fields["until"] = json!({ "type": "integer", "nullable": true, "description": "when the mute ends by itself (ms since the epoch); null: when unmuted" });
            s.body = if path.ends_with("/mute") {
                Some((false, json_content(schema_ref("Mute"))))
            } else {
                reason_body()
            };
            s.answers = ok(object(fields, &[key, "muted", "until"]));
        }
        ("GET", "/api/v1/probes") => {
            s.query = vec![enum_query(
                "state",
                &filters::probe_states(),
                "only probes in this state",
            )];
            s.answers = ok(wrapped("probes", array(schema_ref("Probe"))));
        }
        ("GET", "/api/v1/probes/{name}") => {
            s.query = vec![limit(100, LIMIT_MAX)];
            let result = object(
                json!({ "at": int(), "ok": boolean(), "latency_ms": int(), "value": { "type": "number", "nullable": true }, "detail": string(), "warning": { "type": "boolean", "description": "it crossed only the warn threshold (ok is false)" } }),
                &["at", "ok", "latency_ms", "detail", "warning"],
            );
            let probe = json!({ "allOf": [schema_ref("Probe"), object(json!({ "recent_results": array(result) }), &["recent_results"])] });
            s.answers = ok(wrapped("probe", probe));
        }
        ("GET", "/api/v1/schedules") => {
            let schedule = object(
                json!({ "name": string(), "schedule": string(), "runbook": string(), "rule": string(), "last_run": int_or_null(), "next_run": int_or_null() }),
                &[
                    "name", "schedule", "runbook", "rule", "last_run", "next_run",
                ],
            );
            s.answers = ok(wrapped("schedules", array(schedule)));
        }
        _ => return false,
    }
    true
}

/// Notifications, agents, the audit log and the config.
fn admin(s: &mut Shape, method: &str, path: &str) -> bool {
    match (method, path) {
        ("GET", "/api/v1/outbox") => {
            s.query = vec![
                enum_query(
                    "state",
                    &filters::delivery_states(),
                    "only deliveries in this state",
                ),
                text_query("channel", "only deliveries to this channel"),
                query("event", int(), "only notifications of this event"),
                limit(100, LIMIT_MAX),
            ];
            let counts = object(
                json!({ "pending": int(), "sent": int(), "failed": int(), "unrouted": int() }),
                &["pending", "sent", "failed", "unrouted"],
            );
            s.answers = ok(object(
                json!({ "counts": counts, "deliveries": array(schema_ref("Delivery")) }),
                &["counts", "deliveries"],
            ));
        }
        ("GET", "/api/v1/channels") => {
            let channel = object(
                json!({
                    "name": string(), "type": string(), "destination": string(), "timeout": string(),
                    "rate_limit": string_or_null(), "give_up_after": string(), "max_backoff": string(),
                }),
                &[
                    "name",
                    "type",
                    "destination",
                    "timeout",
                    "give_up_after",
                    "max_backoff",
                ],
            );
            s.answers = ok(wrapped("channels", array(channel)));
        }
        ("POST", "/api/v1/channels/{name}/test") => {
            s.body = no_body();
            let sent = object(
                json!({ "channel": string(), "sent": boolean(), "answer": string(), "ms": int() }),
                &["channel", "sent", "answer", "ms"],
            );
            let failed = object(
                json!({ "channel": string(), "sent": boolean(), "error": string(), "ms": int() }),
                &["channel", "sent", "error", "ms"],
            );
            s.answers = vec![
                (200, "sent; how the channel answered", json_content(sent)),
                (
                    502,
                    "the channel refused or did not answer",
                    json_content(failed),
                ),
            ];
        }
        ("GET", "/api/v1/agents") => s.answers = ok(wrapped("agents", array(schema_ref("Agent")))),
        ("DELETE", "/api/v1/agents/{agent}") => {
            s.answers = ok(wrapped("forgotten", string()));
            // It polls, or has an op that has not ended.
            s.errors = &[409];
        }
        ("GET", "/api/v1/audit") => {
            s.query = vec![
                since(),
                enum_query(
                    "action",
                    &filters::audit_actions(),
                    "only entries of this action",
                ),
                limit(100, LIMIT_MAX),
            ];
            s.answers = ok(wrapped("entries", array(schema_ref("AuditEntry"))));
        }
        ("GET", "/api/v1/config") => {
            s.answers = ok(object(
                json!({
                    "path": string(), "sha256": string(), "version": int_or_null(),
                    "applied_at": int_or_null(), "config": { "type": "object" },
                }),
                &["path", "sha256", "version", "applied_at", "config"],
            ));
        }
        ("POST", "/api/v1/config") => {
            s.body = Some((
                false,
                json_content(json!({
                    "description": "none: the config is read from its file, and a request with a body is refused (415)"
                })),
            ));
            s.query = vec![query(
                "force",
                json!({ "type": "boolean", "default": false }),
                "apply a file that leaves no token or no rule where some run now",
            )];
            s.answers = ok(object(
                json!({ "version": int(), "changed": boolean(), "sha256": string() }),
                &["version", "changed", "sha256"],
            ));
            s.errors = &[422];
        }
        _ => return false,
    }
    true
}

/// The agent protocol.
fn agent(s: &mut Shape, method: &str, path: &str) -> bool {
    match (method, path) {
        ("POST", "/api/v1/agents/{agent}/poll") => {
            s.query = vec![
                query(
                    "capacity",
                    json!({ "type": "integer", "minimum": 0, "default": 1 }),
                    "ops it can take now; one poll hands 1 to 256",
                ),
                query(
                    "wait",
                    json!({ "type": "integer", "minimum": 0 }),
                    "seconds to wait for an op, at most [server] poll_wait (its default)",
                ),
            ];
            s.body = Some((true, json_content(schema_ref("AgentHello"))));
            let run = object(
                json!({
                    "probe": string(),
                    "due": { "type": "integer", "format": "int64", "description": "the run's due time (ms); the result names it" },
                    "timeout_ms": int(),
                    "check": { "type": "object", "description": "what to run: one of command, tcp, http or disk, as heal serializes it" },
                }),
                &["probe", "due", "timeout_ms", "check"],
            );
            s.answers = ok(object(
                json!({ "ops": array(schema_ref("Op")), "checks": array(run) }),
                &["ops"],
            ));
            // Another process holds the agent id (503 while heal stops is documented everywhere).
            s.errors = &[409];
        }
        ("POST", "/api/v1/agents/{agent}/ops/{op}/start") => {
            let body = object(
                json!({ "budget_ms": { "type": "integer", "format": "int64", "description": "how long it may run; clamped to 1 s .. 30 days" } }),
                &[],
            );
            s.body = Some((true, json_content(body)));
            s.answers = ok(op_answer());
            s.errors = &[409];
        }
        ("POST", "/api/v1/agents/{agent}/ops/{op}/log") => {
            let body = object(
                json!({
                    "seq": int(), "step": int(), "skipped": { "type": "integer", "format": "int64", "minimum": 0 },
                    "data": string(),
                }),
                &["seq", "data"],
            );
            s.body = Some((true, json_content(body)));
            s.answers = ok(op_answer());
        }
        ("POST", "/api/v1/agents/{agent}/ops/{op}/result") => {
            let body = object(
                json!({
                    "state": { "type": "string", "enum": ["succeeded", "failed", "timed_out"] },
                    "steps": array(schema_ref("StepResult")),
                    "error": string_or_null(),
                }),
                &["state"],
            );
            s.body = Some((true, json_content(body)));
            s.answers = ok(object(
                json!({ "recorded": boolean(), "duplicate": boolean() }),
                &["recorded", "duplicate"],
            ));
        }
        ("POST", "/api/v1/agents/{agent}/checks/{probe}/result") => {
            let body = object(
                json!({
                    "due": { "type": "integer", "format": "int64", "description": "the due time of the run, as the poll handed it" },
                    "ok": boolean(),
                    "warning": { "type": "boolean", "description": "crossed only the warn threshold (ok is false then)" },
                    "detail": string(),
                    "latency_ms": int(),
                    "value": { "type": "number", "nullable": true },
                }),
                &["due", "ok", "detail"],
            );
            s.body = Some((true, json_content(body)));
            s.answers = ok(object(
                json!({ "recorded": boolean(), "duplicate": boolean(), "removed": boolean() }),
                &["recorded"],
            ));
            // A later run was handed out since (the result is dropped).
            s.errors = &[409];
        }
        _ => return false,
    }
    true
}

fn status_answer(status: &str) -> Value {
    wrapped("status", json!({ "type": "string", "enum": [status] }))
}

fn breaker_change() -> Value {
    object(
        json!({ "changed": boolean(), "breaker": schema_ref("Breaker") }),
        &["changed", "breaker"],
    )
}

fn op_answer() -> Value {
    object(json!({ "ok": boolean(), "note": string() }), &["ok"])
}
