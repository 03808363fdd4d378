//! `heal pause`, `heal pauses`, `heal resume` and `heal breaker`: the
//! operator's brakes.

use std::path::PathBuf;

use argh::FromArgs;
use serde_json::json;

use super::{client, print_json, str_of};
use crate::error::{Error, Result};
use crate::time::format_rfc3339;

/// Pause automation for a while: heal pause --runbook R | --target AGENT | --match EXPR | --all --for 30m --reason TEXT.
#[derive(FromArgs)]
#[argh(subcommand, name = "pause")]
pub struct Pause {
    /// pause this runbook
    #[argh(option)]
    runbook: Option<String>,
    /// pause runs on this agent
    #[argh(option)]
    target: Option<String>,
    /// pause alerts matching this JMESPath expression (over labels, annotations, name, ...)
    #[argh(option, long = "match")]
    matches: Option<String>,
    /// pause all automation
    #[argh(switch)]
    all: bool,
    /// how long, like 30m or 2h
    #[argh(option, long = "for")]
    duration: String,
    /// why (shown on every decision it pauses)
    #[argh(option)]
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

/// List active pauses (--all: also those ended in the last day).
#[derive(FromArgs)]
#[argh(subcommand, name = "pauses")]
pub struct Pauses {
    /// also pauses that ended in the last day
    #[argh(switch)]
    all: bool,
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

/// End a pause now: heal resume ID.
#[derive(FromArgs)]
#[argh(subcommand, name = "resume")]
pub struct Resume {
    /// pause id
    #[argh(positional)]
    id: i64,
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
    /// bearer token with the admin scope (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
}

/// Show the safety breaker, or: heal breaker reset | heal breaker trip --reason TEXT.
#[derive(FromArgs)]
#[argh(subcommand, name = "breaker")]
pub struct BreakerCmd {
    /// nothing to show it, reset to close it, trip to open it
    #[argh(positional)]
    action: Option<String>,
    /// why (required for trip)
    #[argh(option, default = "String::new()")]
    reason: String,
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
    /// bearer token (admin scope to reset or trip; default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

pub fn pause(c: Pause) -> Result<()> {
    if c.runbook.is_none() && c.target.is_none() && c.matches.is_none() && !c.all {
        return Err(Error::Usage(
            "say what to pause: --runbook NAME, --target AGENT, --match EXPR, or --all\nTry: heal pause --runbook restart-service --for 30m --reason 'deploy in progress'".into(),
        ));
    }
    let body = json!({
        "runbook": c.runbook, "target": c.target, "match": c.matches, "all": c.all,
        "for": c.duration, "reason": c.reason,
    });
    let answer = client(c.server, c.token, c.token_file)?.post("/api/v1/pauses", &body)?;
    if c.json {
        println!("{answer}");
        return Ok(());
    }
    let p = &answer["pause"];
    println!(
        "pause {} until {} (heal resume {} ends it early)",
        p["id"],
        p["until"].as_i64().map(format_rfc3339).unwrap_or_default(),
        p["id"]
    );
    Ok(())
}

pub fn pauses(c: Pauses) -> Result<()> {
    let path = if c.all {
        "/api/v1/pauses?all=true"
    } else {
        "/api/v1/pauses"
    };
    let list = client(c.server, c.token, c.token_file)?.get(path)?;
    if c.json {
        print_json(&list["pauses"]);
        return Ok(());
    }
    println!(
        "{:>4}  {:<7}  {:<20}  {:<30}  {:<10}  reason",
        "ID", "ACTIVE", "UNTIL", "COVERS", "BY"
    );
    for p in list["pauses"].as_array().into_iter().flatten() {
        let mut covers = Vec::new();
        for (k, label) in [
            ("runbook", "runbook"),
            ("target", "agent"),
            ("match", "match"),
        ] {
            if let Some(v) = p[k].as_str() {
                covers.push(format!("{label} {v}"));
            }
        }
        if covers.is_empty() {
            covers.push("all automation".into());
        }
        println!(
            "{:>4}  {:<7}  {:<20}  {:<30}  {:<10}  {}",
            p["id"].to_string(),
            if p["active"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            p["until"].as_i64().map(format_rfc3339).unwrap_or_default(),
            covers.join(", "),
            str_of(&p["created_by"]),
            str_of(&p["reason"])
        );
    }
    Ok(())
}

pub fn resume(c: Resume) -> Result<()> {
    let answer = client(c.server, c.token, c.token_file)?
        .post(&format!("/api/v1/pauses/{}/resume", c.id), &json!({}))?;
    println!("pause {} ended", answer["resumed"]);
    Ok(())
}

pub fn breaker(c: BreakerCmd) -> Result<()> {
    let client = client(c.server, c.token, c.token_file)?;
    let b = match c.action.as_deref() {
        None | Some("show") | Some("status") => client.get("/api/v1/breaker")?,
        Some("reset") => {
            client.post("/api/v1/breaker/reset", &json!({ "reason": c.reason }))?["breaker"].clone()
        }
        Some("trip") => {
            if c.reason.trim().is_empty() {
                return Err(Error::Usage(
                    "say why: heal breaker trip --reason TEXT\nTry: heal breaker trip --reason 'runbooks misbehave, stopping all automation'".into(),
                ));
            }
            client.post("/api/v1/breaker/trip", &json!({ "reason": c.reason }))?["breaker"].clone()
        }
        Some(other) => {
            return Err(Error::Usage(format!(
                "heal breaker takes nothing, reset or trip (got {other:?})\nTry: heal breaker reset"
            )))
        }
    };
    if c.json {
        println!("{b}");
        return Ok(());
    }
    println!(
        "breaker {}: {} ({} by {})",
        str_of(&b["state"]),
        str_of(&b["reason"]),
        b["changed_at"]
            .as_i64()
            .filter(|&t| t > 0)
            .map(format_rfc3339)
            .unwrap_or_else(|| "never".into()),
        str_of(&b["changed_by"])
    );
    println!(
        "  since it last changed: {} runs in the last hour, {} failed events in a row",
        b["runs_last_hour"], b["failed_in_row"]
    );
    Ok(())
}
