//! The shapes several operations share, served under `components/schemas`.

use serde_json::{json, Value};

use super::{
    array, boolean, int, int_or_null, object, schema_ref, string, string_or_null, DURATION,
};

/// Every shared schema by name.
pub(super) fn shared() -> Value {
    json!({
        "Error": object(json!({ "error": string() }), &["error"]),
        "OwnAlert": {
            "type": "object",
            "description": "null is the same as leaving a field out",
            "properties": {
                "name": { "type": "string", "minLength": 1, "nullable": true, "description": "or labels.alertname" },
                "labels": { "allOf": [labels(&[]), { "maxProperties": 256 }] },
                "annotations": labels(&[]),
                "status": { "type": "string", "nullable": true, "enum": ["firing", "resolved", null], "default": "firing" },
                "starts_at": time(),
                "ends_at": time(),
                "fingerprint": { "type": "string", "nullable": true, "minLength": 1, "maxLength": 128, "description": "Prometheus' label-set hash when left out" },
            },
            "anyOf": [
                { "required": ["name"], "properties": { "name": string() } },
                { "required": ["labels"], "properties": { "labels": { "type": "object", "required": ["alertname"] } } },
            ],
        },
        "AlertmanagerWebhook": object(
            json!({
                "version": { "type": "string", "nullable": true, "enum": ["4", null] },
                "groupKey": unread(), "truncatedAlerts": unread(), "status": unread(),
                "receiver": unread(), "groupLabels": unread(), "commonLabels": unread(),
                "commonAnnotations": unread(), "externalURL": unread(),
                "alerts": array(object(
                    json!({
                        "status": { "type": "string", "enum": ["firing", "resolved"] },
                        "labels": labels(&["alertname"]),
                        "annotations": labels(&[]),
                        "startsAt": time(),
                        "endsAt": time(),
                        "generatorURL": unread(),
                        "fingerprint": { "type": "string", "nullable": true, "minLength": 1, "maxLength": 128 },
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
                "runbook": nullable(pause_text("covers this runbook")),
                "target": nullable(pause_text("covers this agent")),
                "match": nullable(pause_text("covers alerts this JMESPath expression matches")),
                "all": { "type": "boolean", "nullable": true, "description": "covers all automation" },
                "for": { "type": "string", "nullable": true, "pattern": DURATION, "description": "how long, as a duration; or give until" },
                "until": { "type": "integer", "format": "int64", "nullable": true, "description": "when it ends, in ms since the epoch, within 90 days" },
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
        "Mute": json!({
            "type": "object",
            "description": "give for or until for a mute that ends by itself (the scheduler unmutes it then, and the audit log records it); neither: muted until unmuted",
            "properties": {
                "reason": { "type": "string", "nullable": true, "description": "why: shown with it and in the audit log" },
                "for": { "type": "string", "nullable": true, "pattern": DURATION, "description": "how long, as a duration (\"2h\", \"30m\"), at most 366 days; not with until" },
                "until": { "type": "string", "format": "date-time", "nullable": true, "description": "when it ends, RFC 3339, in the future and within 366 days; not with for" },
            },
            "not": { "required": ["for", "until"] },
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
                "paused_reason": string_or_null(),
                "muted_until": muted_until(),
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
                "ping_key": { "type": "string", "minLength": 16, "description": "kept only as its SHA-256; never shown again" },
                "ping_key_sha256": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$", "description": "the ping key given as its SHA-256 instead (not with ping_key)" },
                "description": string(),
            }
        },
        "ProbeDefinition": probe_definition(),
        "Ping": object(
            json!({ "id": int(), "at": int(), "kind": string(), "exit_code": { "type": "integer", "nullable": true }, "body": string(), "remote": string() }),
            &["id", "at", "kind", "body", "remote"],
        ),
        "Probe": probe(),
        "Delivery": object(
            json!({
                "id": int(), "notification_id": int(), "kind": string(), "subject": string(),
                "event_id": int_or_null(), "channel": string(),
                "state": { "type": "string", "enum": crate::server::api::filters::delivery_states() },
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
        "Replica": object(
            json!({
                "id": { "type": "string", "description": "host, address and pid" },
                "host": string(), "address": string(), "version": string(),
                "config_sha256": string(), "config_version": int_or_null(),
                "started_at": int(), "last_seen": int(), "seen_ago_ms": int(),
                "up": boolean(), "leader": boolean(),
                "config_differs": { "type": "boolean", "description": "its config's SHA-256 is not the leader's" },
            }),
            &["id", "host", "address", "version", "config_sha256", "config_version", "started_at", "last_seen", "seen_ago_ms", "up", "leader", "config_differs"],
        ),
        "Status": object(
            json!({
                "server": object(
                    json!({
                        "id": string(), "host": string(), "address": string(), "version": string(),
                        "store": { "type": "string", "enum": ["sqlite", "postgresql"] },
                        "leads": boolean(), "config_sha256": string(), "config_version": int_or_null(),
                        "started_at": int(),
                    }),
                    &["id", "host", "address", "version", "store", "leads", "config_sha256", "config_version", "started_at"],
                ),
                "replicas": array(schema_ref("Replica")),
            }),
            &["server", "replicas"],
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
                "skipped": boolean(),
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

/// The safety breaker as stored.
pub(super) fn breaker() -> Value {
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

/// The body of `PUT /api/v1/probes/{name}`: the fields of a `[[probe]]`.
fn probe_definition() -> Value {
    let mut d = json!({
        "type": "object",
        "description": "the fields of [[probe]]: one of http, tcp, prometheus, sql, graphite or disk (command probes only in runbooks.toml), on (agents to run it on), every or cron (with tz), timeout, fail_after, recover_after, notify, ...",
        "additionalProperties": false,
        "oneOf": exactly_one_of(&["http", "tcp", "prometheus", "sql", "graphite"]),
        "properties": {
            "name": { "type": "string", "description": "the URL's name, if given" },
            "every": { "type": "string", "pattern": DURATION },
            "cron": string(),
            "tz": string(),
            "timeout": { "type": "string", "pattern": DURATION },
            "fail_after": { "type": "integer", "minimum": 1, "maximum": 1000 },
            "recover_after": { "type": "integer", "minimum": 1, "maximum": 1000 },
            "tags": array(string()),
            "labels": labels(&[]),
            "team": string(),
            "description": string(),
            "notify": { "type": "array", "items": string(), "description": "[channel.NAME]s its probe.down and probe.up go to, besides the [[notify]] routes" },
            "http": {
                "type": "object", "additionalProperties": false, "required": ["url"],
                "properties": {
                    "url": { "type": "string", "pattern": "^https?://" },
                    "method": { "type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "OPTIONS"] },
                    "status": array(json!({ "type": "integer", "minimum": 100, "maximum": 599 })),
                    "body_contains": string(),
                    "max_latency": { "type": "string", "pattern": DURATION },
                    "warn_latency": { "type": "string", "pattern": DURATION, "description": "slower is a warning; needs max_latency, and shorter" },
                    "tls_min_days": { "type": "integer", "minimum": 0 },
                    "tls_warn_days": { "type": "integer", "minimum": 0, "description": "fewer days left is a warning; needs tls_min_days, and more" },
                    "ca_file": string(),
                    "headers": { "type": "object", "additionalProperties": string() },
                },
            },
            "tcp": closed(object(json!({ "addr": { "type": "string", "description": "host:port" } }), &["addr"])),
            "prometheus": closed(object(
                json!({ "url": { "type": "string", "pattern": "^https?://" }, "query": string(), "expect": { "type": "string", "description": "e.g. \"< 0.9\"" }, "warn": { "type": "string", "description": "the warning threshold beside expect (critical), e.g. \"< 70\"" }, "empty_ok": boolean() }),
                &["url", "query", "expect"],
            )),
            "sql": closed(object(
                json!({ "url": { "type": "string", "description": "postgres://USER:PASSWORD@HOST:PORT/DB" }, "query": string(), "expect": { "type": "string", "description": "e.g. \"< 0.9\"" }, "warn": { "type": "string", "description": "the warning threshold beside expect (critical), e.g. \"< 70\"" }, "empty_ok": boolean() }),
                &["url", "query", "expect"],
            )),
            "graphite": closed(object(
                json!({
                    "url": { "type": "string", "pattern": "^https?://", "description": "graphite-web's base URL" },
                    "target": string(),
                    "from": { "type": "string", "description": "the render API's from, default \"-5min\"" },
                    "aggregate": { "type": "string", "enum": ["last", "avg", "max", "min"] },
                    "expect": { "type": "string", "description": "e.g. \"< 85\"" },
                    "warn": { "type": "string", "description": "the warning threshold beside expect (critical), e.g. \"< 70\"" },
                    "empty_ok": boolean(),
                }),
                &["url", "target", "expect"],
            )),
        }
    });
    d["oneOf"] = exactly_one_of(&["http", "tcp", "prometheus", "sql", "graphite", "disk"]);
    d["properties"]["disk"] = closed(object(
        json!({
            "path": { "type": "string", "pattern": "^/", "description": "a path on the filesystem to measure" },
            "max_used": { "type": "string", "description": "fails above this, e.g. \"90%\"" },
            "warn_used": { "type": "string", "description": "a warning above this, below max_used, e.g. \"80%\"" },
        }),
        &["path", "max_used"],
    ));
    d["properties"]["on"] = json!({
        "description": "run it on agents: { \"tags\": [...] } or an expression giving agent ids, such as \"'web-1'\" (http, tcp and disk only)",
        "oneOf": [
            { "type": "string" },
            closed(object(json!({ "tags": array(string()) }), &["tags"])),
        ],
    });
    d
}

/// `oneOf` branches: each requires one of `kinds` and none of the others.
fn exactly_one_of(kinds: &[&str]) -> Value {
    kinds
        .iter()
        .map(|k| {
            let others: Vec<Value> = kinds
                .iter()
                .filter(|o| *o != k)
                .map(|o| json!({ "required": [o] }))
                .collect();
            json!({ "required": [k], "not": { "anyOf": others } })
        })
        .collect()
}

/// A down probe's severity: the `severity` label of its `ProbeFailing`.
fn severity() -> Value {
    json!({ "type": "string", "nullable": true, "enum": ["warning", "critical", null], "description": "while down: the severity label of its ProbeFailing" })
}

/// An object that takes no other properties.
fn closed(mut o: Value) -> Value {
    o["additionalProperties"] = json!(false);
    o
}

/// Alert labels or annotations: names to text (null is none, unless some are required).
fn labels(required: &[&str]) -> Value {
    let value = json!({ "anyOf": [string(), { "type": "number" }, boolean()] });
    let mut l = json!({
        "type": "object",
        "nullable": required.is_empty(),
        "description": "names to values; numbers and booleans are taken as their text",
        "additionalProperties": value,
    });
    if !required.is_empty() {
        l["required"] = json!(required);
        l["properties"] = required
            .iter()
            .map(|k| (k.to_string(), value.clone()))
            .collect();
    }
    l
}

/// An alert's time: RFC 3339; empty or null when unknown.
fn time() -> Value {
    json!({
        "type": "string",
        "nullable": true,
        "anyOf": [{ "format": "date-time" }, { "maxLength": 0 }],
    })
}

/// A field Alertmanager sends that heal does not read: anything goes.
fn unread() -> Value {
    json!({ "description": "Alertmanager's; heal does not read it" })
}

/// The same schema, null allowed (and taken as left out).
fn nullable(mut schema: Value) -> Value {
    schema["nullable"] = json!(true);
    schema
}

/// When a mute ends by itself.
fn muted_until() -> Value {
    json!({ "type": "integer", "nullable": true, "description": "when its mute ends by itself (ms since the epoch); null: muted until unmuted, or not muted" })
}

fn pause_text(description: &str) -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 1024, "pattern": "\\S", "description": description })
}

/// One agent's run of an agent-side probe, in a `Probe`'s `agents`.
fn probe_on_agent() -> Value {
    object(
        json!({
            "agent": string(), "state": string(), "fails_in_row": int(), "oks_in_row": int(),
            "state_since": int(), "last_at": int_or_null(), "last_ok": { "type": "boolean", "nullable": true },
            "last_latency_ms": int_or_null(), "last_detail": string_or_null(), "severity": severity(),
            "recent_results": array(object(json!({}), &[])),
        }),
        &["agent", "state"],
    )
}

/// A `Probe`'s `on`.
fn probe_on() -> Value {
    json!({ "type": "string", "description": "the agents it runs on, as written ({ tags = [...] } or an expression); absent: on the server" })
}

/// A probe as the API lists it.
fn probe() -> Value {
    let mut p = object(
        json!({
            "name": string(), "state": string(), "type": string(), "schedule": string(),
            "source": { "type": "string", "enum": ["config", "api"], "description": "where it is defined: runbooks.toml, or PUT /api/v1/probes/{name}" },
            "registered_at": int(), "updated_at": int(),
            "fail_after": { "type": "integer" }, "recover_after": { "type": "integer" },
            "tags": array(string()), "removed": boolean(),
            "description": string(), "notify": array(string()),
            "error": { "type": "string", "description": "why its stored definition no longer validates (it does not run)" },
            "last_at": int_or_null(), "last_ok": { "type": "boolean", "nullable": true },
            "last_latency_ms": int_or_null(), "last_detail": string_or_null(),
            "severity": severity(),
            "muted": boolean(), "muted_reason": string_or_null(),
            "muted_until": muted_until(),
        }),
        &["name", "state", "muted"],
    );
    p["properties"]["on"] = probe_on();
    p["properties"]["agents"] = array(probe_on_agent());
    p
}
