//! `heal check-config` and `heal run-rule`: what the config makes of a file
//! and of one alert, without a server.

use std::path::PathBuf;

use argh::FromArgs;
use serde_json::{json, Value};

use super::{client, print_json, read_json_file, shell_quote, str_of};
use crate::alert::{self, Alert};
use crate::config::{self, Action, Config};
use crate::error::{Error, Result};
use crate::rules;

/// Validate a config file.
#[derive(FromArgs)]
#[argh(subcommand, name = "check-config")]
pub struct CheckConfig {
    /// config file (default: ./runbooks.toml)
    #[argh(option, default = "PathBuf::from(\"runbooks.toml\")")]
    config: PathBuf,
}

/// Show what heal would decide for a sample alert; runs nothing.
#[derive(FromArgs)]
#[argh(subcommand, name = "run-rule")]
pub struct RunRule {
    /// alert file: an Alertmanager payload or heal's own format; - or nothing reads stdin
    #[argh(positional)]
    alert: Option<PathBuf>,
    /// config file (default: ./runbooks.toml)
    #[argh(option, default = "PathBuf::from(\"runbooks.toml\")")]
    config: PathBuf,
    /// context as guards see it (JSON, the shape of GET /api/v1/context): events, alerts, agents, pauses, breaker
    #[argh(option)]
    context: Option<PathBuf>,
    /// take the live context of this running server instead
    #[argh(option)]
    server: Option<String>,
    /// bearer token for --server (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token for --server
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print the trace as JSON
    #[argh(switch)]
    json: bool,
}

pub fn check_config(c: CheckConfig) -> Result<()> {
    let config = config::load(&c.config)?;
    println!("{}", config::summary(&config));
    Ok(())
}

pub fn run_rule(c: RunRule) -> Result<()> {
    let config = config::load(&c.config)?;
    let ctx = match (&c.context, &c.server) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "give --context FILE or --server URL, not both\nTry: heal run-rule alert.json --server http://127.0.0.1:7878".into(),
            ))
        }
        (Some(file), None) => read_json_file(Some(file))?,
        (None, Some(_)) => client(c.server.clone().into_iter().collect(), c.token.clone(), c.token_file.clone())?.get("/api/v1/context")?,
        (None, None) => json!({}),
    };
    if !ctx.is_object() {
        return Err(Error::Usage(
            "the context must be a JSON object like GET /api/v1/context answers".into(),
        ));
    }
    // A saved context is judged at the time it was taken.
    let now = ctx["now"].as_i64().unwrap_or_else(crate::time::now_ms);
    let body = read_json_file(c.alert.as_ref())?;
    let alerts = alert::from_any(&body).map_err(|e| Error::Usage(format!("not an alert: {e}")))?;
    let traces: Vec<Value> = alerts
        .iter()
        .map(|a| trace(&config, a, &ctx, now))
        .collect();
    if c.json {
        print_json(&json!({ "alerts": traces }));
    } else {
        if c.context.is_none() && c.server.is_none() {
            println!("no context given (--context FILE or --server URL): decided as if no event, pause or breaker existed\n");
        }
        for t in &traces {
            print!("{}", render_trace(t));
        }
    }
    Ok(())
}

/// The decision trace for one alert, from the same functions the server uses.
fn trace(config: &Config, alert: &Alert, ctx: &Value, now: i64) -> Value {
    let mut out = json!({
        "alert": { "name": alert.name, "status": alert.status.as_str(), "fingerprint": alert.fingerprint, "labels": alert.labels },
    });
    if !rules::needs_decision(alert) {
        out["note"] = json!("resolved alerts get no decision: the server closes what waits on them and records the resolution on their events");
        return out;
    }
    let eval = rules::evaluate(config, alert);
    out["tried"] = eval
        .tried
        .iter()
        .zip(&config.rules)
        .map(|(t, r)| json!({ "rule": t.rule, "line": r.line, "matched": t.matched, "note": t.note }))
        .collect();
    if eval.matches.is_empty() {
        let d = rules::unmatched();
        out["decisions"] = json!([{ "outcome": d.outcome.as_str(), "reason": d.reason }]);
        return out;
    }
    let alert_doc = crate::config::doc(alert.doc());
    let guard_doc = rules::guard_doc(alert, ctx);
    let decisions: Vec<Value> = eval
        .matches
        .iter()
        .map(|m| {
            let rule = &config.rules[m.rule_idx];
            let mut m = m.clone();
            if !m.target_tags.is_empty() {
                m.targets = rules::agents_tagged(ctx, &m.target_tags);
            }
            let facts = rules::facts(ctx, rule, &m, &alert_doc, now);
            let mut guard_result = None;
            let mut guard = || {
                let r = rule.unless.as_ref().map_or(Ok(false), |u| u.truthy(&guard_doc));
                guard_result = Some(r.clone());
                r
            };
            let d = rules::decide(&m, rule, &config.safety, &facts, &mut guard);
            let mut v = json!({
                "rule": m.rule, "outcome": d.outcome.as_str(), "reason": d.reason, "event_id": d.event,
                "key": m.key, "targets": m.targets, "target_tags": m.target_tags, "params": m.params,
                "facts": {
                    "open_event": facts.open_event.as_ref().map(|e| json!({"id": e.id, "state": e.state})),
                    "last_run": facts.last_run.as_ref().map(|e| json!({"id": e.id, "state": e.state, "ended_at": e.at})),
                    "attempts": facts.attempts.iter().map(|e| json!({"id": e.id, "state": e.state, "started_at": e.at})).collect::<Vec<_>>(),
                    "pause": facts.pause.as_ref().map(|p| json!({"id": p.id, "covers": p.what, "reason": p.reason})),
                    "breaker": {"open": facts.breaker.open, "runs_last_hour": facts.breaker.runs_last_hour, "failed_in_row": facts.breaker.failed_in_row},
                    "guard": match &guard_result { None => Value::Null, Some(Ok(b)) => json!(b), Some(Err(e)) => json!(format!("error: {e}")) },
                },
            });
            if let Some(live) = d.live {
                v["live_outcome"] = json!(live.as_str());
            }
            if let Action::Run(rb) = &m.action {
                if let Some(runbook) = config.runbooks.get(rb) {
                    let env = rules::environment(0, &m.rule, rb, alert, &m.params);
                    v["runbook"] = json!(rb);
                    v["description"] = json!(runbook.description);
                    let step = |s: &crate::config::Step, on_failure: bool| {
                        json!({
                            "name": s.name,
                            "run": s.run.to_string(),
                            "timeout": crate::time::format_duration(s.timeout),
                            "cwd": s.cwd,
                            "env": s.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                            "retries": s.retries,
                            "retry_delay": crate::time::format_duration(s.retry_delay),
                            "when": s.when,
                            "env_files": s.env_files,
                            "user": s.user,
                            "group": s.group,
                            "on_failure": on_failure,
                        })
                    };
                    v["steps"] = runbook
                        .steps
                        .iter()
                        .map(|s| step(s, false))
                        .chain(runbook.on_failure.iter().map(|s| step(s, true)))
                        .collect();
                    v["environment"] = env.iter().map(|(k, v)| json!([k, v])).collect();
                }
            }
            v
        })
        .collect();
    out["decisions"] = Value::Array(decisions);
    out
}

fn render_trace(t: &Value) -> String {
    let mut s = String::new();
    let a = &t["alert"];
    s.push_str(&format!(
        "alert {} ({}) fingerprint {}\n",
        str_of(&a["name"]),
        str_of(&a["status"]),
        str_of(&a["fingerprint"])
    ));
    let labels: Vec<String> = a["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", str_of(v)))
        .collect();
    s.push_str(&format!("  labels: {}\n", labels.join(" ")));
    if let Some(note) = t["note"].as_str() {
        s.push_str(&format!("  {note}\n\n"));
        return s;
    }
    for tr in t["tried"].as_array().into_iter().flatten() {
        let mark = if tr["matched"].as_bool() == Some(true) {
            "match"
        } else {
            "no"
        };
        s.push_str(&format!(
            "  rule {:<24} {:<6} {mark:<5} {}\n",
            format!("{:?}", str_of(&tr["rule"])),
            format!("line {}", tr["line"]),
            str_of(&tr["note"])
        ));
    }
    for d in t["decisions"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  decision: {}: {}\n",
            str_of(&d["outcome"]),
            str_of(&d["reason"])
        ));
        if d.get("key").is_some() {
            s.push_str(&format!("    key: {}\n", str_of(&d["key"])));
            let f = &d["facts"];
            let mut known = Vec::new();
            if let Some(e) = f["open_event"].as_object() {
                known.push(format!("open event {} ({})", e["id"], str_of(&e["state"])));
            }
            if let Some(e) = f["last_run"].as_object() {
                known.push(format!(
                    "last run event {} ({})",
                    e["id"],
                    str_of(&e["state"])
                ));
            }
            let attempts = f["attempts"].as_array().map_or(0, Vec::len);
            known.push(format!("{attempts} attempts in the window"));
            if f["breaker"]["open"].as_bool() == Some(true) {
                known.push("breaker open".into());
            }
            if let Some(p) = f["pause"].as_object() {
                known.push(format!("paused by pause {}", p["id"]));
            }
            if !f["guard"].is_null() {
                known.push(format!("guard holds: {}", f["guard"]));
            }
            s.push_str(&format!("    known: {}\n", known.join(", ")));
            let targets: Vec<&str> = d["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            s.push_str(&format!(
                "    target: {}\n",
                if targets.is_empty() {
                    format!("agents tagged {}", d["target_tags"])
                } else {
                    targets.join(", ")
                }
            ));
        }
        if let Some(rb) = d["runbook"].as_str() {
            s.push_str(&format!(
                "    runbook: {rb}: {}\n",
                str_of(&d["description"])
            ));
            for st in d["steps"].as_array().into_iter().flatten() {
                let mut more = format!("timeout {}", str_of(&st["timeout"]));
                if let Some(user) = st["user"].as_str() {
                    more.push_str(&format!(", as user {user}"));
                    if let Some(group) = st["group"].as_str() {
                        more.push_str(&format!(" (group {group})"));
                    }
                }
                if let Some(dir) = st["cwd"].as_str() {
                    more.push_str(&format!(", in {dir}"));
                }
                let names: Vec<&str> = st["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if !names.is_empty() {
                    more.push_str(&format!(
                        ", env {} (values read on the agent)",
                        names.join(" ")
                    ));
                }
                let files: Vec<&str> = st["env_files"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if !files.is_empty() {
                    more.push_str(&format!(
                        ", secrets from {} (read on the agent)",
                        files.join(" ")
                    ));
                }
                if let Some(when) = st["when"].as_str() {
                    more.push_str(&format!(
                        ", only when `{when}` (read on the agent when its turn comes)"
                    ));
                }
                match st["retries"].as_u64() {
                    Some(0) | None => {}
                    Some(n) => more.push_str(&format!(
                        ", {n} retries {} apart",
                        str_of(&st["retry_delay"])
                    )),
                }
                let which = if st["on_failure"] == true {
                    "on failure"
                } else {
                    "step"
                };
                s.push_str(&format!(
                    "      {which} {:?}: {} ({more})\n",
                    str_of(&st["name"]),
                    str_of(&st["run"]),
                ));
            }
            s.push_str("    environment (HEAL_EVENT_ID is the event's id; HEAL_ALERT_JSON names a file holding the alert):\n");
            for kv in d["environment"].as_array().into_iter().flatten() {
                s.push_str(&format!(
                    "      {}={}\n",
                    str_of(&kv[0]),
                    shell_quote(str_of(&kv[1]))
                ));
            }
        }
    }
    s.push('\n');
    s
}
