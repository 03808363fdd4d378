//! `GET /docs`: the API reference for people, rendered on the server from
//! heal's own OpenAPI description (`api::routes::openapi`), so it cannot
//! drift from what the router, the scope check and the schema test read.
//! Every operation gets its scope, parameters, body and answers with their
//! shapes and an example, and the shared schemas are listed once at the end.
//!
//! It reads the description as data and never trusts it as markup: every
//! word goes through `Html::text`, so a summary or enum value holding `<`
//! shows as text. The page loads nothing but the dashboard's own style sheet
//! and script, within the same Content-Security-Policy.

use serde_json::{json, Map, Value};

use super::html::Html;
use super::layout::frame;
use super::{api, Ctx, Reply};
use crate::error::Result;

/// How deep schemas are drawn and examples built (a `$ref` may refer back).
const DEPTH: usize = 5;

/// What an error status means, for every operation that may answer it.
const ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "a bad query parameter or body field, named in the error",
    ),
    ("401", "no token, or one heal does not know"),
    (
        "403",
        "the token lacks the scope, or a form came from another origin",
    ),
    ("404", "no such thing"),
    ("409", "not now: the error says what stands in the way"),
    ("413", "the body is larger than [server] max_body"),
    (
        "415",
        "the body is not JSON (Content-Type: application/json)",
    ),
    (
        "421",
        "a Host that is not heal's own, on a heal without tokens",
    ),
    ("422", "the body is JSON but not valid, named in the error"),
    ("429", "too many wrong tokens from this address: wait"),
    ("500", "heal failed: its log says why"),
    ("502", "the channel or service heal called refused"),
    (
        "503",
        "the store is busy, damaged or full, or heal is stopping",
    ),
];

/// `GET /docs`.
pub fn page(ctx: &Ctx) -> Result<Reply> {
    frame(
        ctx,
        "API reference",
        "/docs",
        None,
        render(&api::routes::openapi()),
    )
}

/// The reference for an OpenAPI description.
pub fn render(doc: &Value) -> Html {
    let mut h = Html::new();
    let info = &doc["info"];
    h.raw("<div class=\"docs\"><h1>API reference <small>")
        .text(text(&info["title"]))
        .raw(" ")
        .text(text(&info["version"]))
        .raw("</small></h1><p>")
        .text(text(&info["description"]))
        .raw("</p><p>Send a token as <code>Authorization: Bearer TOKEN</code>; each operation names the scope it needs (admin covers every scope but agent). JSON bodies need <code>Content-Type: application/json</code>. An error answers <code>{\"error\": \"what went wrong and the fix\"}</code>. The same description, for tools: ")
        .link("/api/v1/openapi.json", "/api/v1/openapi.json")
        .raw(".</p>");
    let ops = operations(doc);
    h.raw("<nav class=\"toc\" aria-label=\"Operations\"><h2>Operations</h2><ul>");
    for (method, path, op) in &ops {
        h.raw("<li><a")
            .attr("href", format!("#{}", anchor(op, method, path)))
            .raw("><code>")
            .text(method.to_ascii_uppercase())
            .raw(" ")
            .text(path)
            .raw("</code></a> ")
            .text(text(&op["summary"]))
            .raw("</li>");
    }
    h.raw("</ul></nav>");
    for (method, path, op) in &ops {
        operation(&mut h, doc, method, path, op);
    }
    h.raw("<h2 id=\"schemas\">Schemas</h2>");
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        h.raw("<section class=\"op\"")
            .attr("id", format!("schema-{name}"))
            .raw("><h3>")
            .text(name)
            .raw("</h3>");
        shape(&mut h, schema, DEPTH);
        example_block(&mut h, doc, schema);
        h.raw("</section>");
    }
    h.raw("</div>");
    h
}

/// Every operation: method, path, and its object, in the description's order.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

/// The id of an operation's section.
fn anchor(op: &Value, method: &str, path: &str) -> String {
    match op["operationId"].as_str() {
        Some(id) => format!("op-{id}"),
        None => format!("op-{method}{path}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

fn operation(h: &mut Html, doc: &Value, method: &str, path: &str, op: &Value) {
    h.raw("<section class=\"op\"")
        .attr("id", anchor(op, method, path))
        .raw("><h2><code>")
        .text(method.to_ascii_uppercase())
        .raw(" ")
        .text(path)
        .raw("</code></h2><p>")
        .text(text(&op["summary"]))
        .raw("</p><p class=\"hint\">Scope: ");
    match op["x-heal-scope"].as_str() {
        Some(scope) => h.raw("<code>").text(scope).raw("</code>"),
        None => h.raw("none (open)"),
    };
    h.raw("</p>");
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    if !params.is_empty() {
        h.raw("<h3>Parameters</h3><table class=\"rows\">");
        h.thead(&["Name", "In", "Required", "Type", "What"]);
        h.raw("<tbody>");
        for p in &params {
            h.raw("<tr>").td_open("Name");
            h.raw("<code>").text(text(&p["name"])).raw("</code></td>");
            h.td("In", text(&p["in"]))
                .td("Required", if p["required"] == true { "yes" } else { "no" })
                .td_open("Type");
            shape(h, &p["schema"], 1);
            h.raw("</td>")
                .td("What", text(&p["description"]))
                .raw("</tr>");
        }
        h.raw("</tbody></table>");
    }
    let example_url = example_path(path, &params);
    let body = &op["requestBody"];
    if let Some((content_type, media)) = body["content"].as_object().and_then(|c| c.iter().next()) {
        h.raw("<h3>Body</h3><p class=\"hint\">")
            .text(content_type)
            .raw(if body["required"] == true {
                ", required"
            } else {
                ", optional"
            })
            .raw("</p>");
        top_shape(h, doc, &media["schema"]);
        example_block(h, doc, &media["schema"]);
    }
    curl(h, doc, method, &example_url, op);
    h.raw("<h3>Answers</h3><dl class=\"facts\">");
    for (status, answer) in op["responses"].as_object().into_iter().flatten() {
        h.raw("<dt><code>").text(status).raw("</code></dt><dd>");
        if answer.get("$ref").is_some() {
            let meaning = ERRORS.iter().find(|(s, _)| s == status);
            h.text(meaning.map_or("an error", |(_, m)| m))
                .raw(" <small>")
                .link("#schema-Error", "Error")
                .raw("</small>");
        } else {
            h.text(text(&answer["description"]));
            let schema = first_schema(answer);
            if let Some(schema) = schema {
                h.raw(": ");
                top_shape(h, doc, schema);
                example_block(h, doc, schema);
            }
        }
        h.raw("</dd>");
    }
    h.raw("</dl></section>");
}

/// The schema of an answer's first content type.
fn first_schema(answer: &Value) -> Option<&Value> {
    let (_, media) = answer["content"].as_object()?.iter().next()?;
    media.get("schema")
}

/// The path with its parameters filled in by example.
fn example_path(path: &str, params: &[Value]) -> String {
    let mut out = path.to_string();
    for p in params.iter().filter(|p| p["in"] == "path") {
        let name = text(&p["name"]);
        let value = match p["schema"]["type"].as_str() {
            Some("integer") => "1",
            _ if name == "what" => "start",
            _ if name == "agent" => "web-1",
            _ => "nightly-backup",
        };
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// A `curl` line that calls the operation.
fn curl(h: &mut Html, doc: &Value, method: &str, path: &str, op: &Value) {
    let mut line = String::from("curl");
    if method != "get" {
        line.push_str(&format!(" -X {}", method.to_ascii_uppercase()));
    }
    if op["x-heal-scope"].is_string() {
        line.push_str(" -H \"Authorization: Bearer $HEAL_TOKEN\"");
    }
    let schema = op["requestBody"]["content"]["application/json"]
        .get("schema")
        .cloned();
    if let Some(schema) = schema {
        let body = example(doc, &schema, DEPTH).to_string();
        line.push_str(" -H 'Content-Type: application/json' -d '");
        line.push_str(&body.replace('\'', "'\\''"));
        line.push('\'');
    }
    line.push_str(&format!(" http://127.0.0.1:7878{path}"));
    h.raw("<h3>Example</h3><pre class=\"output\">")
        .text(line)
        .raw("</pre>");
}

fn example_block(h: &mut Html, doc: &Value, schema: &Value) {
    let v = example(doc, schema, DEPTH);
    let pretty = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
    h.raw("<pre class=\"output example\">")
        .text(pretty)
        .raw("</pre>");
}

/// The schema a `$ref` names, if it is one of the description's.
fn resolve<'d>(doc: &'d Value, schema: &Value) -> Option<&'d Value> {
    let name = schema["$ref"]
        .as_str()?
        .strip_prefix("#/components/schemas/")?;
    doc["components"]["schemas"].get(name)
}

/// A value the schema allows, for people to read: its example, default or
/// first enum value, else one built from its type.
fn example(doc: &Value, schema: &Value, depth: usize) -> Value {
    if depth == 0 {
        return json!({});
    }
    if let Some(target) = resolve(doc, schema) {
        return example(doc, target, depth - 1);
    }
    for key in ["example", "default"] {
        if let Some(v) = schema.get(key) {
            return v.clone();
        }
    }
    if let Some(v) = schema["enum"].as_array().and_then(|e| e.first()) {
        return v.clone();
    }
    if let Some(props) = schema["properties"].as_object() {
        let mut o = Map::new();
        for (k, v) in props {
            o.insert(k.clone(), example(doc, v, depth - 1));
        }
        // Fields that do not go together ("for" or "until"): the last is left out.
        let one_of = schema["allOf"].as_array().into_iter().flatten();
        let nots = one_of
            .filter_map(|part| part["oneOf"].as_array()?.first())
            .chain([schema])
            .filter_map(|s| s["not"]["required"].as_array());
        for names in nots {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            if names.iter().all(|n| o.contains_key(*n)) {
                if let Some(last) = names.last() {
                    o.remove(*last);
                }
            }
        }
        return Value::Object(o);
    }
    if let Some(parts) = schema["allOf"].as_array() {
        let mut merged = Map::new();
        for part in parts {
            if let Value::Object(o) = example(doc, part, depth - 1) {
                merged.extend(o);
            }
        }
        return Value::Object(merged);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(first) = schema[key].as_array().and_then(|a| a.first()) {
            return example(doc, first, depth - 1);
        }
    }
    match schema["type"].as_str() {
        Some("string") => json!(example_text(schema)),
        Some("integer") => json!(schema["minimum"].as_i64().unwrap_or(1)),
        Some("number") => json!(0.5),
        Some("boolean") => json!(true),
        Some("array") => json!([example(doc, &schema["items"], depth - 1)]),
        _ => json!({}),
    }
}

/// A string a schema allows: a time, a duration, a name, or a word.
fn example_text(schema: &Value) -> &'static str {
    let pattern = schema["pattern"].as_str().unwrap_or_default();
    if schema["format"] == "date-time" {
        "2026-12-24T08:00:00Z"
    } else if pattern.contains("ms|s|m|h|d") {
        "30m"
    } else if pattern.starts_with("^[A-Za-z0-9") {
        "nightly-backup"
    } else {
        "text"
    }
}

/// The schema of a body or an answer: a shared one is named, linked and
/// drawn in place too.
fn top_shape(h: &mut Html, doc: &Value, schema: &Value) {
    shape(h, schema, DEPTH);
    if let Some(target) = resolve(doc, schema) {
        h.raw(": ");
        shape(h, target, DEPTH - 1);
    }
}

/// A schema drawn for people: its type, and its fields as a nested list.
fn shape(h: &mut Html, schema: &Value, depth: usize) {
    if let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        h.link(&format!("#schema-{name}"), name);
        return;
    }
    let kind = schema["type"]
        .as_str()
        .unwrap_or(if schema.get("properties").is_some() {
            "object"
        } else {
            ""
        });
    h.raw("<span class=\"type\">").text(kind);
    if let Some(format) = schema["format"].as_str() {
        h.text(format!(" ({format})"));
    }
    if schema["nullable"] == true {
        h.raw(" or null");
    }
    h.raw("</span>");
    if let Some(values) = schema["enum"].as_array() {
        let list: Vec<String> = values.iter().map(text).collect();
        h.raw(" one of <code>").text(list.join(", ")).raw("</code>");
    }
    if let Some(p) = schema["pattern"].as_str() {
        h.raw(" matching <code>").text(p).raw("</code>");
    }
    if let Some(d) = schema["description"].as_str() {
        h.raw(": ").text(d);
    }
    if depth == 0 {
        return;
    }
    if kind == "array" {
        h.raw(" of ");
        shape(h, &schema["items"], depth - 1);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(parts) = schema[key].as_array() {
            h.raw(" ")
                .text(match key {
                    "allOf" => "all of",
                    "anyOf" => "any of",
                    _ => "one of",
                })
                .raw(":<ul class=\"fields\">");
            for part in parts {
                h.raw("<li>");
                shape(h, part, depth - 1);
                h.raw("</li>");
            }
            h.raw("</ul>");
        }
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(props) = schema["properties"].as_object().filter(|p| !p.is_empty()) {
        h.raw("<ul class=\"fields\">");
        for (name, field) in props {
            h.raw("<li><code>").text(name).raw("</code> ");
            if required.contains(&name.as_str()) {
                h.raw("<small>required</small> ");
            }
            shape(h, field, depth - 1);
            h.raw("</li>");
        }
        h.raw("</ul>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_and_schema_gets_its_section_and_example() {
        let doc = api::routes::openapi();
        let page = render(&doc).into_string();
        for (method, path, op) in operations(&doc) {
            let id = format!("id=\"{}\"", anchor(&op, &method, &path));
            assert!(page.contains(&id), "{method} {path}");
        }
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            assert!(page.contains(&format!("id=\"schema-{name}\"")), "{name}");
        }
        let mute = json!({ "$ref": "#/components/schemas/Mute" });
        assert_eq!(
            example(&doc, &mute, DEPTH),
            json!({ "reason": "text", "for": "30m" })
        );
    }

    #[test]
    fn hostile_text_in_the_description_is_shown_as_text() {
        let evil = "<script>alert(1)</script>\"'&";
        let doc = json!({
            "info": { "title": evil, "version": evil, "description": evil },
            "paths": { "/x/{name}": { "post": {
                "summary": evil, "operationId": evil, "x-heal-scope": evil,
                "parameters": [{ "name": evil, "in": "path", "required": true, "schema": { "type": "string", "enum": [evil], "pattern": evil } }],
                "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { evil: { "type": "string", "description": evil } } } } } },
                "responses": { "200": { "description": evil }, evil: { "$ref": "#/components/responses/Error" } },
            } } },
            "components": { "schemas": { evil: { "type": "string", "example": evil } } },
        });
        let page = render(&doc).into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("\"'&<"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
