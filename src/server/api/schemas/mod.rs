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

mod components;
mod operations;

use operations::shape;

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
/// this module does not know yet gets a generic description (a unit test makes
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
    for status in errors(spec, method, &shape) {
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
/// a `Host` that is not heal's own on an open heal (421) anywhere; an
/// `Origin` that is not heal's own where a method changes something (403);
/// a missing, unknown or too weak token, or too many wrong tokens from the
/// client's address (429), where a scope is needed; an unknown
/// id or name where the path has one; a bad or unknown query parameter; a body that is too large,
/// not JSON or not valid; and what the operation adds itself.
fn errors(spec: &Spec, method: &str, shape: &Shape) -> Vec<u16> {
    let mut codes = vec![421, 500, 503];
    if spec.scope.is_some() {
        codes.extend([401, 403, 429]);
    }
    if !matches!(method, "GET" | "HEAD") {
        codes.push(403);
    }
    if spec.path.contains('{') {
        codes.push(404);
    }
    // Any operation refuses a query parameter it does not take (`api::filters`).
    codes.push(400);
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
                "description": "a token of [[token]]; each operation's x-heal-scope names the scope it needs (admin covers every scope but agent)"
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
        "schemas": components::shared(),
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

/// A true-or-false query parameter, as `api::flag` reads it.
fn flag_query(name: &str, description: &str) -> Value {
    query(
        name,
        json!({ "type": "string", "enum": ["true", "false", "1", "0"] }),
        description,
    )
}

/// A parameter that takes one of `values` (`api::filters` checks it).
fn enum_query(name: &str, values: &[&str], description: &str) -> Value {
    query(
        name,
        json!({ "type": "string", "enum": values }),
        description,
    )
}

/// A parameter that takes some of `values`, comma-separated (`api::filters`
/// checks each).
fn list_query(name: &str, values: &[&str], description: &str) -> Value {
    let mut q = query(
        name,
        json!({ "type": "array", "items": { "type": "string", "enum": values } }),
        description,
    );
    q["style"] = json!("form");
    q["explode"] = json!(false);
    q
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
            json!({ "reason": { "type": "string", "nullable": true, "description": "shown in the timeline and the audit log" } }),
            &[],
        )),
    ))
}

/// A body nothing is read from.
fn no_body() -> Option<(bool, Value)> {
    Some((
        false,
        json_content(json!({ "description": "nothing is read from the body" })),
    ))
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
                    panic!("{what}: describe it in src/server/api/schemas/operations.rs (shape)")
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
