//! `heal fire`, `heal events`, `heal approve` and `heal reject`: alerts in,
//! the events they became, and the decisions people take on them.

use std::path::PathBuf;

use argh::FromArgs;
use serde_json::{json, Value};

use super::{client, filter_query, print_json, read_json_file, shell_quote, str_of};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::time::format_rfc3339;

/// Send an alert to the server: heal fire NAME [LABEL=VALUE ...].
#[derive(FromArgs)]
#[argh(subcommand, name = "fire")]
pub struct Fire {
    /// alert name, then LABEL=VALUE pairs
    #[argh(positional)]
    args: Vec<String>,
    /// annotation KEY=VALUE (repeatable)
    #[argh(option)]
    annotation: Vec<String>,
    /// send the alert as resolved
    #[argh(switch)]
    resolved: bool,
    /// send this JSON file instead (Alertmanager payload or heal's own format)
    #[argh(option)]
    file: Option<PathBuf>,
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
    /// bearer token (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print the server's answer as JSON
    #[argh(switch)]
    json: bool,
}

/// List events, or show one: heal events [show ID].
#[derive(FromArgs)]
#[argh(subcommand, name = "events")]
pub struct Events {
    /// show ID, or nothing to list events
    #[argh(positional)]
    args: Vec<String>,
    /// only events in these states (comma-separated)
    #[argh(option)]
    state: Option<String>,
    /// only events of this rule
    #[argh(option)]
    rule: Option<String>,
    /// only events of this key
    #[argh(option)]
    key: Option<String>,
    /// most events listed (default: 50)
    #[argh(option, default = "50")]
    limit: u32,
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
    /// bearer token (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// Approve an event waiting for approval: it runs once.
#[derive(FromArgs)]
#[argh(subcommand, name = "approve")]
pub struct Approve {
    /// event id
    #[argh(positional)]
    id: i64,
    /// why (recorded on the timeline)
    #[argh(option, default = "String::new()")]
    reason: String,
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
    /// bearer token with the admin scope (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// Reject an event waiting for approval: it is cancelled and never runs.
#[derive(FromArgs)]
#[argh(subcommand, name = "reject")]
pub struct Reject {
    /// event id
    #[argh(positional)]
    id: i64,
    /// why (recorded on the timeline)
    #[argh(option, default = "String::new()")]
    reason: String,
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
    /// bearer token with the admin scope (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

pub fn fire(c: Fire) -> Result<()> {
    let client = client(c.server, c.token, c.token_file)?;
    let answer = if let Some(file) = &c.file {
        let body = read_json_file(Some(file))?;
        let is_am = body.get("alerts").is_some()
            && (body.get("version").is_some() || body.get("receiver").is_some());
        let path = if is_am {
            "/api/v1/alerts/alertmanager"
        } else {
            "/api/v1/alerts"
        };
        client.post(path, &body)?
    } else {
        let usage = || {
            Error::Usage(
                "give an alert name\nTry: heal fire DiskSpaceLow instance=web-1 severity=warning"
                    .into(),
            )
        };
        let (name, pairs) = c.args.split_first().ok_or_else(usage)?;
        let labels = parse_pairs(pairs, "label")?;
        let annotations = parse_pairs(&c.annotation, "--annotation")?;
        let status = if c.resolved { "resolved" } else { "firing" };
        client.post("/api/v1/alerts", &json!({ "name": name, "labels": labels, "annotations": annotations, "status": status }))?
    };
    if c.json {
        println!("{answer}");
        return Ok(());
    }
    for a in answer["alerts"].as_array().into_iter().flatten() {
        println!(
            "alert {} {} ({})",
            str_of(&a["name"]),
            str_of(&a["fingerprint"]),
            str_of(&a["status"])
        );
        for d in a["decisions"].as_array().into_iter().flatten() {
            let event = d["event_id"]
                .as_i64()
                .map(|id| format!(" → event {id} (heal events show {id})"))
                .unwrap_or_default();
            println!(
                "  {}: {}{event}",
                str_of(&d["outcome"]),
                str_of(&d["reason"])
            );
        }
        if let Some(r) = a["recorded"].as_str() {
            println!("  {r}");
        }
    }
    Ok(())
}

fn parse_pairs(pairs: &[String], what: &str) -> Result<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "{what} {p:?} is not KEY=VALUE\nTry: heal fire DiskSpaceLow instance=web-1"
            ))
        })?;
        map.insert(k.to_string(), json!(v));
    }
    Ok(map)
}

pub fn events(c: Events) -> Result<()> {
    let filters = filter_query(
        "/api/v1/events",
        &[("state", &c.state), ("rule", &c.rule), ("key", &c.key)],
    )?;
    let client = client(c.server, c.token, c.token_file)?;
    let id = match c.args.as_slice() {
        [] => None,
        [cmd, id] if cmd == "show" => Some(id.clone()),
        [id] if id.parse::<i64>().is_ok() => Some(id.clone()),
        _ => {
            return Err(Error::Usage(
                "heal events takes nothing, or show ID\nTry: heal events show 12".into(),
            ))
        }
    };
    if let Some(id) = id {
        let id: i64 = id.parse().map_err(|_| {
            Error::Usage(format!(
                "{id:?} is not an event id\nTry: heal events show 12"
            ))
        })?;
        let event = client.get(&format!("/api/v1/events/{id}"))?;
        if c.json {
            print_json(&event);
        } else {
            print!("{}", render_event(&event));
        }
        return Ok(());
    }
    let list = client.get(&format!("/api/v1/events?limit={}{filters}", c.limit))?;
    if c.json {
        print_json(&list["events"]);
        return Ok(());
    }
    println!(
        "{:>6}  {:<16}  {:<24}  {:<20}  {:>4}  created",
        "ID", "STATE", "RULE", "RUNBOOK", "HITS"
    );
    for e in list["events"].as_array().into_iter().flatten() {
        println!(
            "{:>6}  {:<16}  {:<24}  {:<20}  {:>4}  {}",
            e["id"].to_string(),
            str_of(&e["state"]),
            str_of(&e["rule"]),
            str_of(&e["runbook"]),
            e["hits"].to_string(),
            e["created_at"]
                .as_i64()
                .map(format_rfc3339)
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn render_event(e: &Value) -> String {
    let mut s = format!(
        "event {}  {}  rule {}  runbook {}  hits {}  mode {}\n  key: {}\n",
        e["id"],
        str_of(&e["state"]),
        str_of(&e["rule"]),
        str_of(&e["runbook"]),
        e["hits"],
        str_of(&e["mode"]),
        str_of(&e["key"])
    );
    if let Some(r) = e["reason"].as_str() {
        s.push_str(&format!("  why: {r}\n"));
    }
    if let Some(by) = e["decided_by"].as_str() {
        s.push_str(&format!("  approved or rejected by: {by}\n"));
    }
    if let (Some(d), true) = (e["deadline"].as_i64(), e["ended_at"].is_null()) {
        let what = if e["state"] == "pending_approval" {
            "approval expires"
        } else {
            "verification window ends"
        };
        s.push_str(&format!("  {what}: {}\n", format_rfc3339(d)));
    }
    if let Some(a) = e.get("alert").filter(|a| !a.is_null()) {
        let labels: Vec<String> = a["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", shell_quote(str_of(v))))
            .collect();
        s.push_str(&format!(
            "  alert: {} ({}) {}\n    labels: {}\n",
            str_of(&a["name"]),
            str_of(&a["status"]),
            str_of(&a["fingerprint"]),
            labels.join(" ")
        ));
    }
    s.push_str("timeline:\n");
    for t in e["timeline"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  {}  {:<14} {}\n",
            t["at"].as_i64().map(format_rfc3339).unwrap_or_default(),
            str_of(&t["kind"]),
            str_of(&t["message"])
        ));
    }
    for op in e["ops"].as_array().into_iter().flatten() {
        let kind = if op["kind"] == "verify" {
            "verification "
        } else {
            ""
        };
        s.push_str(&format!(
            "{kind}op {} on agent {}: {}",
            op["id"],
            str_of(&op["agent"]),
            str_of(&op["state"])
        ));
        if let Some(err) = op["error"].as_str() {
            s.push_str(&format!(" ({err})"));
        }
        s.push('\n');
        for st in op["steps"].as_array().into_iter().flatten() {
            let how = match (st["exit_code"].as_i64(), st["signal"].as_i64()) {
                _ if st["timed_out"].as_bool() == Some(true) => "timed out".to_string(),
                (Some(c), _) => format!("exit {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "did not start".into(),
            };
            s.push_str(&format!(
                "  step {:?}: {how} in {}ms\n",
                str_of(&st["name"]),
                st["duration_ms"]
            ));
            if st["truncated"].as_bool() == Some(true) {
                s.push_str(&format!(
                    "    (output: last part of {} bytes)\n",
                    st["output_bytes"]
                ));
            }
            for line in str_of(&st["output"]).lines() {
                s.push_str(&format!("    | {line}\n"));
            }
        }
        let live = str_of(&op["live_output"]);
        if !live.is_empty() {
            s.push_str("  output so far:\n");
            for line in live.lines() {
                s.push_str(&format!("    | {line}\n"));
            }
        }
    }
    s
}

pub fn approve(c: Approve) -> Result<()> {
    decide_approval(
        c.id,
        true,
        &c.reason,
        client(c.server, c.token, c.token_file)?,
        c.json,
    )
}

pub fn reject(c: Reject) -> Result<()> {
    decide_approval(
        c.id,
        false,
        &c.reason,
        client(c.server, c.token, c.token_file)?,
        c.json,
    )
}

fn decide_approval(
    id: i64,
    approve: bool,
    reason: &str,
    client: Client,
    json_out: bool,
) -> Result<()> {
    let verb = if approve { "approve" } else { "reject" };
    let answer = client.post(
        &format!("/api/v1/events/{id}/{verb}"),
        &json!({ "reason": reason }),
    )?;
    if json_out {
        println!("{answer}");
        return Ok(());
    }
    let e = &answer["event"];
    println!(
        "event {id} {}: {} (heal events show {id})",
        if approve { "approved" } else { "rejected" },
        str_of(&e["state"])
    );
    Ok(())
}
