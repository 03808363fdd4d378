//! What the OpenAPI description says of each operation beyond its row of
//! `ROUTES`: typed path and query parameters, the request body, the answers
//! and the errors, keyed by method and path template. `routes::openapi`
//! reads it; `components` holds the shapes several operations share.
//!
//! The shapes follow what the handlers accept and answer. They say what a
//! client may rely on (top-level structure, types, required fields) and leave
//! objects open, so a field added later breaks no client. The schema test
//! (`tests/it/schema.rs`) runs schemathesis against the served description to
//! keep both honest.

use serde_json::{json, Map, Value};

use super::routes::Spec;

/// Largest `limit` any list takes.
pub const LIMIT_MAX: i64 = 10_000;

/// A duration as the config writes it ("30s", "1h30m").
const DURATION: &str = "^([0-9]+(ms|s|m|h|d))+$";

/// A heartbeat's or probe's name (`config::check_name`).
const NAME: &str = "^[A-Za-z0-9._-]{1,128}$";

/// An agent id (`rules::check_agent_id`).
const AGENT_ID: &str = "^[A-Za-z0-9.:_-]{1,128}$";

/// What one operation takes and answers, beyond its table row.
#[derive(Default)]
struct Shape {
    /// Query parameters.
    query: Vec<Value>,
    /// The request body: whether it is required, and its content.
    body: Option<(bool, Value)>,
    /// The answers that are not errors: status, description, content.
    answers: Vec<(u16, &'static str, Value)>,
    /// Errors this operation answers besides those every one of its kind does.
    errors: &'static [u16],
}

/// The OpenAPI operation fields a route's method gets from here: its
/// `parameters`, its `requestBody` (POST and PUT) and its `responses`. A route
/// this file does not know yet gets a generic description (a unit test makes
/// sure every route of `ROUTES` is known).
pub fn operation(spec: &Spec, method: &str) -> Map<String, Value> {
    let shape = shape(method, spec.path).unwrap_or_else(|| generic(method));
    let mut op = Map::new();
    let mut parameters = path_parameters(spec.path);
    parameters.extend(shape.query.iter().cloned());
    op.insert("parameters".into(), Value::Array(parameters));
    if let Some((required, content)) = &shape.body {
        op.insert(
            "requestBody".into(),
            json!({ "required": required, "content": content }),
        );
    }
    let mut responses = Map::new();
    for (status, description, content) in &shape.answers {
        responses.insert(
            status.to_string(),
            json!({ "description": description, "content": content }),
        );
    }
    for status in errors(spec, &shape) {
        responses.insert(
            status.to_string(),
            json!({ "$ref": "#/components/responses/Error" }),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    op
}

/// The errors an operation may answer, each with the `{"error"}` body: a
/// store failure (500) or a busy store or a stopping server (503) anywhere;
/// a missing, unknown or too weak token where a scope is needed; an unknown
/// id or name where the path has one; a bad query; a body that is too large,
/// not JSON or not valid; and what the operation adds itself.
fn errors(spec: &Spec, shape: &Shape) -> Vec<u16> {
    let mut codes = vec![500, 503];
    if spec.scope.is_some() {
        codes.extend([401, 403]);
    }
    if spec.path.contains('{') {
        codes.push(404);
    }
    if !shape.query.is_empty() {
        codes.push(400);
    }
    if shape.body.is_some() {
        codes.extend([400, 413, 415, 422]);
    }
    codes.extend(shape.errors);
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// The description of a route nothing here describes yet.
fn generic(method: &str) -> Shape {
    Shape {
        body: matches!(method, "POST" | "PUT").then(|| (false, json_content(json!({})))),
        answers: vec![(200, "done", json_content(json!({ "type": "object" })))],
        ..Shape::default()
    }
}

/// The shared schemas and the error answer, for `components`.
pub fn components() -> Value {
    json!({
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a token of [[token]]; each operation's x-heal-scope names the scope it needs (admin may do everything)"
            },
            "pingKey": {
                "type": "apiKey",
                "in": "query",
                "name": "key",
                "description": "a heartbeat's ping_key, for pings from cron lines that cannot send headers"
            }
        },
        "responses": {
            "Error": {
                "description": "what went wrong and the fix",
                "content": json_content(schema_ref("Error"))
            }
        },
        "schemas": shared_schemas(),
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn ok(schema: Value) -> Vec<(u16, &'static str, Value)> {
    vec![(200, "done", json_content(schema))]
}

fn int() -> Value {
    json!({ "type": "integer", "format": "int64" })
}

fn int_or_null() -> Value {
    json!({ "type": "integer", "format": "int64", "nullable": true })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn string_or_null() -> Value {
    json!({ "type": "string", "nullable": true })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// An object with these properties, of which `required` must be there.
fn object(properties: Value, required: &[&str]) -> Value {
    let mut o = json!({ "type": "object", "properties": properties });
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

/// `{key: <schema>}`, the key required: the shape of most answers.
fn wrapped(key: &str, schema: Value) -> Value {
    object(json!({ key: schema }), &[key])
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": description })
}

fn limit(default: i64, max: i64) -> Value {
    query(
        "limit",
        json!({ "type": "integer", "minimum": 1, "maximum": max, "default": default }),
        "how many at most",
    )
}

fn since() -> Value {
    query(
        "since",
        json!({ "type": "string", "pattern": "^(-?[0-9]+|([0-9]+(ms|s|m|h|d))+)$" }),
        "milliseconds since the epoch, or a duration back from now (\"1h\")",
    )
}

fn text_query(name: &str, description: &str) -> Value {
    query(name, string(), description)
}

/// The path's parameters, typed: ids are integers, names are as the config
/// allows them, `{what}` is what a ping says.
fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let schema = match (name, path) {
                ("id" | "op", _) => int(),
                ("agent", _) => json!({ "type": "string", "pattern": AGENT_ID }),
                ("what", _) => json!({ "type": "string", "pattern": "^(start|fail|[0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])$" }),
                ("name", p) if p.starts_with("/api/v1/heartbeats") || p.starts_with("/ping") || p.starts_with("/api/v1/probes") => {
                    json!({ "type": "string", "pattern": NAME })
                }
                _ => json!({ "type": "string", "minLength": 1 }),
            };
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect()
}

/// A body with one optional `reason` (approve, reject, mute, breaker reset).
fn reason_body() -> Option<(bool, Value)> {
    Some((
        false,
        json_content(object(
            json!({ "reason": { "type": "string", "description": "shown in the timeline and the audit log" } }),
            &[],
        )),
    ))
}

/// A body nothing is read from.
fn no_body() -> Option<(bool, Value)> {
    Some((
        false,
        json_content(json!({ "type": "object", "description": "nothing is read from the body" })),
    ))
}

fn shape(method: &str, path: &str) -> Option<Shape> {
    let mut s = Shape::default();
    match (method, path) {
        ("GET", "/-/healthy") => s.answers = ok(status_answer("ok")),
        ("GET", "/-/ready") => s.answers = ok(status_answer("ready")),
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
        ("POST", "/api/v1/alerts/alertmanager") => {
            s.body = Some((true, json_content(schema_ref("AlertmanagerWebhook"))));
            s.answers = ok(schema_ref("Intake"));
        }
        ("POST", "/api/v1/alerts") => {
            let own = schema_ref("OwnAlert");
            let list = json!({ "type": "array", "items": own, "minItems": 1, "maxItems": 1000 });
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
                query(
                    "status",
                    json!({ "type": "string", "enum": ["firing", "resolved"] }),
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
                text_query("state", "only events in these states, comma-separated"),
                text_query("rule", "only events of this rule"),
                text_query("key", "only events of this key"),
                text_query("runbook", "only events of this runbook"),
                limit(100, LIMIT_MAX),
            ];
            s.answers = ok(wrapped("events", array(schema_ref("Event"))));
        }
        ("GET", "/api/v1/events/{id}") => s.answers = ok(schema_ref("EventDetail")),
        ("POST", "/api/v1/events/{id}/approve" | "/api/v1/events/{id}/reject") => {
            s.body = reason_body();
            s.answers = ok(wrapped("event", schema_ref("Event")));
            s.errors = &[409];
        }
        ("GET", "/api/v1/decisions") => {
            s.query = vec![
                since(),
                text_query("rule", "only decisions of this rule"),
                text_query("outcome", "only decisions with this outcome"),
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
        ("GET", "/api/v1/pauses") => {
            s.query = vec![query(
                "all",
                json!({ "type": "string", "enum": ["true", "false", "1", "0"] }),
                "also pauses that ended in the last day",
            )];
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
                text_query(
                    "state",
                    "only heartbeats in this state (new, up, late, down, paused, invalid)",
                ),
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
        ("PUT", "/api/v1/heartbeats/{name}") => {
            s.body = Some((true, json_content(schema_ref("HeartbeatDefinition"))));
            let answer = object(
                json!({ "heartbeat": string(), "created": boolean() }),
                &["heartbeat", "created"],
            );
            s.answers = vec![
                (200, "updated", json_content(answer.clone())),
                (201, "registered", json_content(answer)),
            ];
            s.errors = &[409];
        }
        ("DELETE", "/api/v1/heartbeats/{name}") => {
            s.answers = ok(wrapped("deleted", string()));
            s.errors = &[409];
        }
        ("POST", "/api/v1/heartbeats/{name}/mute" | "/api/v1/heartbeats/{name}/unmute") => {
            s.body = reason_body();
            s.answers = ok(object(
                json!({ "heartbeat": string(), "paused": boolean() }),
                &["heartbeat", "paused"],
            ));
        }
        ("GET", "/api/v1/probes") => s.answers = ok(wrapped("probes", array(schema_ref("Probe")))),
        ("GET", "/api/v1/probes/{name}") => {
            s.query = vec![limit(100, LIMIT_MAX)];
            let result = object(
                json!({ "at": int(), "ok": boolean(), "latency_ms": int(), "value": { "type": "number", "nullable": true }, "detail": string() }),
                &["at", "ok", "latency_ms", "detail"],
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
        ("GET", "/api/v1/outbox") => {
            s.query = vec![
                query(
                    "state",
                    json!({ "type": "string", "enum": ["pending", "sent", "failed"] }),
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
        ("GET", "/api/v1/audit") => {
            s.query = vec![
                since(),
                text_query("action", "only entries of this action"),
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
            s.body = no_body();
            s.answers = ok(object(
                json!({ "version": int(), "changed": boolean(), "sha256": string() }),
                &["version", "changed", "sha256"],
            ));
            s.errors = &[422];
        }
        ("POST", "/api/v1/agents/{agent}/poll") => {
            s.query = vec![
                query(
                    "capacity",
                    json!({ "type": "integer", "minimum": 1, "maximum": 256, "default": 1 }),
                    "ops it can take now",
                ),
                query(
                    "wait",
                    json!({ "type": "integer", "minimum": 0, "maximum": 3600 }),
                    "seconds to wait for an op, at most [server] poll_wait",
                ),
            ];
            s.body = Some((true, json_content(schema_ref("AgentHello"))));
            s.answers = ok(wrapped("ops", array(schema_ref("Op"))));
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
        _ => return None,
    }
    Some(s)
}

fn status_answer(status: &str) -> Value {
    wrapped("status", json!({ "type": "string", "enum": [status] }))
}

fn breaker() -> Value {
    object(
        json!({
            "state": { "type": "string", "enum": ["open", "closed"] },
            "reason": string(), "changed_at": int(), "changed_by": string(),
            "runs_last_hour": int(), "failed_in_row": int(),
        }),
        &[
            "state",
            "reason",
            "changed_at",
            "changed_by",
            "runs_last_hour",
            "failed_in_row",
        ],
    )
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

/// Alert labels or annotations: names to strings.
fn labels(required: &[&str]) -> Value {
    let mut l = json!({
        "type": "object",
        "maxProperties": 256,
        "additionalProperties": { "type": "string" },
    });
    if !required.is_empty() {
        l["required"] = json!(required);
        l["properties"] = required.iter().map(|k| (k.to_string(), string())).collect();
    }
    l
}

fn shared_schemas() -> Value {
    let time = || json!({ "type": "string", "format": "date-time" });
    json!({
        "Error": object(json!({ "error": string() }), &["error"]),
        "OwnAlert": object(
            json!({
                "name": { "type": "string", "minLength": 1, "description": "or labels.alertname" },
                "labels": labels(&[]),
                "annotations": labels(&[]),
                "status": { "type": "string", "enum": ["firing", "resolved"], "default": "firing" },
                "starts_at": time(),
                "ends_at": time(),
                "fingerprint": { "type": "string", "minLength": 1, "maxLength": 128, "description": "Prometheus' label-set hash when left out" },
            }),
            &["name"],
        ),
        "AlertmanagerWebhook": object(
            json!({
                "version": { "type": "string", "enum": ["4"] },
                "groupKey": string(),
                "truncatedAlerts": { "type": "integer" },
                "status": { "type": "string", "enum": ["firing", "resolved"] },
                "receiver": string(),
                "groupLabels": labels(&[]),
                "commonLabels": labels(&[]),
                "commonAnnotations": labels(&[]),
                "externalURL": string(),
                "alerts": array(object(
                    json!({
                        "status": { "type": "string", "enum": ["firing", "resolved"] },
                        "labels": labels(&["alertname"]),
                        "annotations": labels(&[]),
                        "startsAt": time(),
                        "endsAt": time(),
                        "generatorURL": string(),
                        "fingerprint": { "type": "string", "minLength": 1, "maxLength": 128 },
                    }),
                    &["status", "labels"],
                )),
            }),
            &["alerts"],
        ),
        "Intake": object(
            json!({
                "accepted": { "type": "integer" },
                "alerts": array(object(
                    json!({
                        "fingerprint": string(), "name": string(),
                        "status": { "type": "string", "enum": ["firing", "resolved"] },
                        "recorded": string(),
                        "decisions": array(object(
                            json!({ "rule": string(), "outcome": string(), "reason": string(), "event_id": int_or_null() }),
                            &["outcome", "reason"],
                        )),
                    }),
                    &["fingerprint", "name", "status"],
                )),
            }),
            &["accepted", "alerts"],
        ),
        "Alert": object(
            json!({
                "fingerprint": string(), "source": string(), "name": string(),
                "status": { "type": "string", "enum": ["firing", "resolved"] },
                "labels": { "type": "object", "nullable": true, "additionalProperties": string() },
                "annotations": { "type": "object", "nullable": true, "additionalProperties": string() },
                "starts_at": int_or_null(), "ends_at": int_or_null(),
                "first_seen": int(), "last_seen": int(), "receipts": int(),
                "decisions": array(object(
                    json!({ "at": int(), "rule": string_or_null(), "outcome": string(), "reason": string(), "event_id": int_or_null() }),
                    &["at", "outcome", "reason"],
                )),
            }),
            &["fingerprint", "source", "name", "status", "first_seen", "last_seen", "receipts"],
        ),
        "Event": event(),
        "EventDetail": {
            "allOf": [
                event(),
                object(
                    json!({
                        "alert": { "type": "object", "nullable": true },
                        "timeline": array(object(json!({ "at": int(), "kind": string(), "message": string() }), &["at", "kind", "message"])),
                        "ops": array(object(
                            json!({
                                "id": int(), "agent": string(), "kind": string(), "state": string(),
                                "dispatched_at": int_or_null(), "started_at": int_or_null(), "finished_at": int_or_null(),
                                "error": string_or_null(), "steps": array(schema_ref("StepResult")), "live_output": string(),
                            }),
                            &["id", "agent", "kind", "state", "steps"],
                        )),
                        "notifications": array(schema_ref("Delivery")),
                    }),
                    &["alert", "timeline", "ops", "notifications"],
                ),
            ]
        },
        "Decision": object(
            json!({
                "id": int(), "at": int(), "fingerprint": string(), "rule": string_or_null(),
                "outcome": string(), "reason": string(), "event_id": int_or_null(),
            }),
            &["id", "at", "fingerprint", "outcome", "reason"],
        ),
        "NewPause": json!({
            "type": "object",
            "properties": {
                "runbook": pause_text("covers this runbook"),
                "target": pause_text("covers this agent"),
                "match": pause_text("covers alerts this JMESPath expression matches"),
                "all": { "type": "boolean", "description": "covers all automation" },
                "for": { "type": "string", "pattern": DURATION, "description": "how long, as a duration; or give until" },
                "until": { "type": "integer", "format": "int64", "description": "when it ends, in ms since the epoch, within 90 days" },
                "reason": pause_text("shown on every decision it pauses"),
            },
            "required": ["reason"],
            "allOf": [
                { "description": "what it covers", "anyOf": [
                    { "required": ["runbook"] }, { "required": ["target"] }, { "required": ["match"] },
                    { "required": ["all"], "properties": { "all": { "enum": [true] } } },
                ] },
                { "description": "how long", "oneOf": [
                    { "required": ["for"], "not": { "required": ["until"] } },
                    { "required": ["until"], "not": { "required": ["for"] } },
                ] },
            ],
        }),
        "Pause": object(
            json!({
                "id": int(), "runbook": string_or_null(), "target": string_or_null(), "match": string_or_null(),
                "reason": string(), "created_by": string(), "created_at": int(), "until": int(),
                "resumed_at": int_or_null(), "resumed_by": string_or_null(), "active": boolean(),
            }),
            &["id", "reason", "created_by", "created_at", "until", "active"],
        ),
        "Breaker": breaker(),
        "Heartbeat": object(
            json!({
                "name": string(), "origin": string(), "state": string(),
                "registered_at": int(), "paused": boolean(), "pings": int(),
                "last_start": int_or_null(), "last_end_at": int_or_null(),
                "last_end_ok": { "type": "boolean", "nullable": true },
                "due_at": int_or_null(), "down_at": int_or_null(),
                "schedule": string(), "grace": string(),
                "error": { "type": "string", "description": "why its definition is invalid (state invalid)" },
            }),
            &["name", "origin", "state", "registered_at", "paused", "pings"],
        ),
        "HeartbeatDefinition": {
            "type": "object",
            "description": "the fields of [[heartbeat]]: every or cron (with tz), grace, max_runtime, renotify, ...",
            "additionalProperties": false,
            "oneOf": [
                { "required": ["every"], "not": { "anyOf": [{ "required": ["cron"] }, { "required": ["tz"] }] } },
                { "required": ["cron"], "not": { "required": ["every"] } },
            ],
            "properties": {
                "name": { "type": "string", "description": "the URL's name, if given" },
                "every": { "type": "string", "pattern": DURATION },
                "cron": string(),
                "tz": string(),
                "grace": { "type": "string", "pattern": DURATION },
                "max_runtime": { "type": "string", "pattern": DURATION },
                "renotify": { "type": "string", "pattern": DURATION },
                "team": string(), "priority": string(), "service": string(), "runbook_url": string(),
                "tags": array(string()),
                "labels": labels(&[]),
                "ping_key": string(),
                "description": string(),
            }
        },
        "Ping": object(
            json!({ "id": int(), "at": int(), "kind": string(), "exit_code": { "type": "integer", "nullable": true }, "body": string(), "remote": string() }),
            &["id", "at", "kind", "body", "remote"],
        ),
        "Probe": object(
            json!({
                "name": string(), "state": string(), "type": string(), "schedule": string(),
                "fail_after": { "type": "integer" }, "recover_after": { "type": "integer" },
                "tags": array(string()), "removed": boolean(),
                "last_at": int_or_null(), "last_ok": { "type": "boolean", "nullable": true },
                "last_latency_ms": int_or_null(), "last_detail": string_or_null(),
            }),
            &["name", "state"],
        ),
        "Delivery": object(
            json!({
                "id": int(), "notification_id": int(), "kind": string(), "subject": string(),
                "event_id": int_or_null(), "channel": string(),
                "state": { "type": "string", "enum": ["pending", "sent", "failed"] },
                "attempts": int(), "created_at": int(), "next_at": int_or_null(), "done_at": int_or_null(),
                "digest": int_or_null(), "error": string_or_null(),
            }),
            &["id", "notification_id", "kind", "subject", "channel", "state", "attempts", "created_at"],
        ),
        "Agent": object(
            json!({
                "id": string(), "instance": string(), "tags": array(string()), "allow": array(string()),
                "version": string(), "hostname": string(), "first_seen": int(), "last_seen": int(),
                "running_ops": int(), "queued_ops": int(), "polling": boolean(),
            }),
            &["id", "instance", "tags", "allow", "first_seen", "last_seen", "running_ops", "queued_ops", "polling"],
        ),
        "AgentHello": object(
            json!({
                "instance": { "type": "string", "minLength": 1, "maxLength": 128, "description": "random per agent process" },
                "tags": array(string()),
                "allow": array(string()),
                "version": string(),
                "hostname": string(),
            }),
            &["instance"],
        ),
        "Op": object(
            json!({ "id": int(), "event_id": int() }),
            &["id", "event_id"],
        ),
        "StepResult": object(
            json!({
                "name": string(),
                "exit_code": { "type": "integer", "format": "int32", "nullable": true },
                "signal": { "type": "integer", "format": "int32", "nullable": true },
                "timed_out": boolean(),
                "duration_ms": { "type": "integer", "minimum": 0, "maximum": u64::MAX },
                "output": string(),
                "output_bytes": { "type": "integer", "minimum": 0, "maximum": u64::MAX },
                "truncated": boolean(),
            }),
            &["name"],
        ),
        "AuditEntry": object(
            json!({
                "id": int(), "at": int(), "actor": string(), "action": string(),
                "target": string(), "detail": string(), "remote": string_or_null(),
            }),
            &["id", "at", "actor", "action", "target", "detail"],
        ),
    })
}

fn event() -> Value {
    object(
        json!({
            "id": int(), "rule": string(), "runbook": string(), "key": string(), "fingerprint": string(),
            "state": string(), "mode": string(), "hits": int(),
            "created_at": int(), "updated_at": int(), "ended_at": int_or_null(),
            "started_at": int_or_null(), "deadline": int_or_null(),
            "decided_by": string_or_null(), "reason": string_or_null(),
            "open": { "type": "boolean", "description": "in lists: not ended yet" },
        }),
        &[
            "id",
            "rule",
            "runbook",
            "key",
            "fingerprint",
            "state",
            "mode",
            "created_at",
            "updated_at",
        ],
    )
}

fn pause_text(description: &str) -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 1024, "pattern": "\\S", "description": description })
}

#[cfg(test)]
mod tests {
    use super::super::routes::{openapi, ROUTES};
    use super::*;

    #[test]
    fn routes_have_what_their_methods_need() {
        for s in ROUTES {
            for m in s.methods {
                let what = format!("{m} {}", s.path);
                let shape = shape(m, s.path).unwrap_or_else(|| {
                    panic!("{what}: describe it in src/server/api/schemas.rs (shape)")
                });
                if matches!(*m, "POST" | "PUT") {
                    assert!(shape.body.is_some(), "{what}: no request body schema");
                } else {
                    assert!(shape.body.is_none(), "{what}: a body on a {m}");
                }
                assert!(
                    shape
                        .answers
                        .iter()
                        .any(|(status, ..)| (200..300).contains(status)),
                    "{what}: no successful answer"
                );
                let op = operation(s, m);
                for (status, answer) in op["responses"].as_object().unwrap() {
                    let status: u16 = status.parse().unwrap();
                    let error = answer["$ref"] == "#/components/responses/Error";
                    let failed_test = s.path.ends_with("/test") && status == 502;
                    assert_eq!(status >= 400 && !failed_test, error, "{what}: {status}");
                }
                for code in [500, 503] {
                    assert!(op["responses"].get(code.to_string()).is_some(), "{what}");
                }
                if s.scope.is_some() {
                    assert!(op["responses"].get("401").is_some(), "{what}");
                    assert!(op["responses"].get("403").is_some(), "{what}");
                }
            }
        }
    }

    #[test]
    fn every_path_parameter_is_typed_and_every_reference_resolves() {
        let doc = openapi();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = piece.split('"').next().unwrap();
            let mut at = &doc["components"];
            for key in target.split('/') {
                at = &at[key];
            }
            assert!(at.is_object(), "{target} is not defined");
        }
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let in_path: Vec<&Value> = op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .collect();
                assert_eq!(in_path.len(), path.matches('{').count(), "{method} {path}");
                for p in in_path {
                    assert!(p["schema"]["type"].is_string(), "{method} {path}: {p}");
                    if matches!(p["name"].as_str(), Some("id" | "op")) {
                        assert_eq!(p["schema"]["type"], "integer", "{method} {path}");
                    }
                }
            }
        }
    }

    #[test]
    fn limits_say_what_the_handlers_take() {
        let doc = openapi();
        let events = &doc["paths"]["/api/v1/events"]["get"]["parameters"];
        let limit = events
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], LIMIT_MAX);
    }
}
