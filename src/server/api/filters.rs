//! The query parameters each route takes, checked before it runs: a name the
//! route does not take, or a value outside a parameter's list, is a 400
//! naming it and what is allowed, never an answer that silently ignores it
//! (`?stat=failed` or `?state=suceeded` returning everything, or nothing).
//!
//! The lists of allowed values are here, taken from the domain's own names;
//! the OpenAPI description puts them in its `enum`s, and the check reads
//! the description, so what is described is what is enforced. The CLI
//! checks its filters with `check_value` before sending, in the same words.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::{decode, routes};
use crate::config::Scope;
use crate::error::{Error, Result};
use crate::{alert, event, heartbeat, probe, rules};

/// An alert's status.
pub fn alert_statuses() -> Vec<&'static str> {
    [alert::Status::Firing, alert::Status::Resolved]
        .map(alert::Status::as_str)
        .to_vec()
}

/// An event's state.
pub fn event_states() -> Vec<&'static str> {
    event::STATES.to_vec()
}

/// A decision's outcome.
pub fn outcomes() -> Vec<&'static str> {
    rules::Outcome::ALL.map(rules::Outcome::as_str).to_vec()
}

/// A heartbeat's state as the API shows it (`invalid`: its stored
/// definition no longer parses).
pub fn heartbeat_states() -> Vec<&'static str> {
    let mut states: Vec<&str> = heartbeat::STATES.iter().map(|(_, name)| *name).collect();
    states.push("invalid");
    states
}

/// A probe's state.
pub fn probe_states() -> Vec<&'static str> {
    [probe::State::Unknown, probe::State::Up, probe::State::Down]
        .map(probe::State::as_str)
        .to_vec()
}

/// An audit entry's action.
pub fn audit_actions() -> Vec<&'static str> {
    crate::store::AUDIT_ACTIONS.to_vec()
}

/// A notification delivery's state.
pub fn delivery_states() -> Vec<&'static str> {
    crate::store::DELIVERY_STATES.to_vec()
}

/// One query parameter of a route.
struct Param {
    name: String,
    /// The values it takes, if it takes only some.
    allowed: Option<Vec<String>>,
    /// Whether it is a comma-separated list of them.
    list: bool,
}

/// The query parameters of each method and path template, as the OpenAPI
/// description gives them (read once).
fn table() -> &'static HashMap<(String, String), Vec<Param>> {
    static TABLE: OnceLock<HashMap<(String, String), Vec<Param>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let doc = routes::openapi();
        let mut table = HashMap::new();
        for spec in routes::ROUTES {
            for method in spec.methods {
                let op = &doc["paths"][spec.path][method.to_ascii_lowercase()];
                let mut params: Vec<Param> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .map(param)
                    .collect();
                if spec.scope == Some(Scope::Ping) {
                    // The pingKey scheme: the heartbeat's key instead of a token.
                    params.push(Param {
                        name: "key".into(),
                        allowed: None,
                        list: false,
                    });
                }
                table.insert((method.to_string(), spec.path.to_string()), params);
            }
        }
        table
    })
}

fn param(p: &Value) -> Param {
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
    };
    let schema = &p["schema"];
    let list = schema["type"] == "array";
    let allowed = if list {
        strings(&schema["items"]["enum"])
    } else {
        strings(&schema["enum"])
    };
    Param {
        name: p["name"].as_str().unwrap_or_default().to_string(),
        allowed,
        list,
    }
}

/// Checks every parameter of `query` (raw, as in the URL) against what
/// `method` on the route of `template` takes.
pub fn check_query(method: &str, template: &str, query: &str) -> Result<()> {
    let method = if method == "HEAD" { "GET" } else { method };
    let Some(params) = table().get(&(method.to_string(), template.to_string())) else {
        return Ok(());
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name);
        let Some(p) = params.iter().find(|p| p.name == name) else {
            let known: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
            let takes = if known.is_empty() {
                "it takes none".to_string()
            } else {
                format!("it takes {}", known.join(", "))
            };
            return Err(Error::request(
                400,
                format!("{method} {template} has no query parameter {name:?}: {takes}"),
            ));
        };
        check(p, &decode(value)).map_err(|e| Error::request(400, e))?;
    }
    Ok(())
}

/// Whether `value` is one that parameter `name` of `method` on `template`
/// takes: the CLI's check before it sends, in the server's words.
pub fn check_value(
    method: &str,
    template: &str,
    name: &str,
    value: &str,
) -> std::result::Result<(), String> {
    let params = table().get(&(method.to_string(), template.to_string()));
    match params.and_then(|ps| ps.iter().find(|p| p.name == name)) {
        Some(p) => check(p, value),
        None => Ok(()),
    }
}

fn check(p: &Param, value: &str) -> std::result::Result<(), String> {
    let Some(allowed) = &p.allowed else {
        return Ok(());
    };
    let values: Vec<&str> = if p.list {
        value.split(',').filter(|v| !v.is_empty()).collect()
    } else {
        vec![value]
    };
    match values.iter().find(|v| !allowed.iter().any(|a| a == *v)) {
        None => Ok(()),
        Some(bad) => Err(format!(
            "{}: {bad:?} is not one of {}",
            p.name,
            allowed.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(method: &str, template: &str, query: &str) -> String {
        check_query(method, template, query)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn enumerated_values_are_checked_and_the_allowed_ones_named() {
        let e = refused("GET", "/api/v1/events", "state=suceeded");
        assert!(
            e.contains("state: \"suceeded\" is not one of pending_approval, deferred"),
            "{e}"
        );
        let e = refused("GET", "/api/v1/events", "state=failed,bogus");
        assert!(e.contains("\"bogus\""), "{e}");
        let e = refused("GET", "/api/v1/decisions", "outcome=rn");
        assert!(
            e.contains("outcome: \"rn\" is not one of run, collapse,"),
            "{e}"
        );
        for (template, query) in [
            ("/api/v1/alerts", "status=null"),
            ("/api/v1/outbox", "state=done"),
            ("/api/v1/heartbeats", "state=bogus"),
            ("/api/v1/probes", "state=bogus"),
        ] {
            assert!(
                check_query("GET", template, query).is_err(),
                "{template}?{query}"
            );
        }
        for (template, query) in [
            ("/api/v1/events", "state=failed,succeeded&limit=5"),
            ("/api/v1/events", "state="),
            ("/api/v1/decisions", "outcome=await-approval"),
            ("/api/v1/alerts", "status=resolved&name=Disk"),
            (
                "/api/v1/heartbeats",
                "state=invalid&service=checkout&team=ops",
            ),
            ("/api/v1/probes", "state=down"),
            ("/api/v1/outbox", "state=failed"),
        ] {
            check_query("GET", template, query).unwrap();
        }
    }

    #[test]
    fn unknown_parameter_names_are_refused_naming_the_known_ones() {
        let e = refused("GET", "/api/v1/events", "stat=failed");
        assert!(
            e.contains("no query parameter \"stat\": it takes state, rule,"),
            "{e}"
        );
        let e = refused("GET", "/api/v1/agents", "x=1");
        assert!(e.contains("it takes none"), "{e}");
        check_query("GET", "/ping/{name}", "key=abc").unwrap();
        check_query("POST", "/api/v1/agents/{agent}/poll", "capacity=2&wait=0").unwrap();
    }

    #[test]
    fn the_cli_check_says_what_the_server_says() {
        let cli = check_value("GET", "/api/v1/events", "state", "bogus").unwrap_err();
        let server = refused("GET", "/api/v1/events", "state=bogus");
        assert!(server.contains(&cli), "{server} / {cli}");
        check_value("GET", "/api/v1/events", "state", "failed,lost").unwrap();
    }
}
