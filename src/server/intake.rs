//! Applying normalized alerts: store each one, decide with the rules, create
//! events and ops, and hand new ops straight to parked polls. Runs inside one
//! store job, so decisions are serialized and a 2xx means all of it is durable.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;
use serde_json::{json, Value};

use crate::alert::{Alert, Status};
use crate::config::{Action, Config, Runbook};
use crate::error::Result;
use crate::exec::Run;
use crate::rules::{self, KeyFacts, Match, Outcome};
use crate::store::{self, Claimed, NewEvent, Receipt};

use super::longpoll::{Parked, Waiters};

/// How far back a resolved alert looks for the events it resolves (ms).
const RESOLVE_LOOKBACK_MS: i64 = 24 * 3_600_000;

/// What one intake request did.
#[derive(Default)]
pub struct Applied {
    /// One line per alert: fingerprint, status and decisions.
    pub alerts: Vec<Value>,
    /// Polls answered with new ops once the job commits.
    pub handoffs: Vec<(Parked, Vec<Claimed>)>,
    /// Log lines, written after the commit so the writer thread does not wait on stderr.
    /// Runs are logged at info; collapses, discards and resolutions, which a
    /// storm repeats by the thousand, at debug.
    pub log: Vec<(log::Level, String)>,
}

/// Evaluates the rules for every firing alert; done before the store job,
/// since only the active-event lookup needs the store.
pub fn evaluate(config: &Config, alerts: &[Alert]) -> Vec<Option<rules::Evaluation>> {
    alerts
        .iter()
        .map(|a| rules::needs_decision(a).then(|| rules::evaluate(config, a)))
        .collect()
}

/// Stores and decides a batch of alerts.
pub fn apply(
    conn: &Connection,
    config: &Config,
    waiters: &Waiters,
    alerts: &[Alert],
    evals: &[Option<rules::Evaluation>],
    now: i64,
) -> Result<Applied> {
    let mut applied = Applied::default();
    let mut handoff_of: HashMap<String, usize> = HashMap::new();
    let result = (|| {
        for (i, alert) in alerts.iter().enumerate() {
            let line = apply_one(
                conn,
                config,
                waiters,
                alert,
                evals.get(i).and_then(Option::as_ref),
                now,
                &mut applied,
                &mut handoff_of,
            )?;
            applied.alerts.push(line);
        }
        Ok(())
    })();
    if let Err(e) = result {
        // Nothing of this job is committed: the polls go back to waiting.
        let mut agent_of: Vec<(usize, String)> =
            handoff_of.into_iter().map(|(a, i)| (i, a)).collect();
        agent_of.sort();
        for ((_, agent), (parked, _)) in agent_of.into_iter().zip(applied.handoffs.drain(..)) {
            waiters.put_back(&agent, parked);
        }
        return Err(e);
    }
    Ok(applied)
}

#[allow(clippy::too_many_arguments)]
fn apply_one(
    conn: &Connection,
    config: &Config,
    waiters: &Waiters,
    alert: &Alert,
    eval: Option<&rules::Evaluation>,
    now: i64,
    applied: &mut Applied,
    handoff_of: &mut HashMap<String, usize>,
) -> Result<Value> {
    let receipt = store::record_alert(conn, alert, now)?;
    let mut line = json!({ "fingerprint": alert.fingerprint, "name": alert.name, "status": alert.status.as_str() });
    if alert.status == Status::Resolved {
        if receipt != Receipt::Stale {
            for (event_id, state) in
                store::events_of_alert(conn, &alert.fingerprint, now - RESOLVE_LOOKBACK_MS)?
            {
                let msg = format!(
                    "alert {} ({}) resolved while the event was {state}",
                    alert.name, alert.fingerprint
                );
                store::add_timeline(conn, event_id, "alert-resolved", &msg, now)?;
            }
            applied.log.push((
                log::Level::Debug,
                format!("alert {} {} resolved", alert.name, alert.fingerprint),
            ));
        }
        line["recorded"] = json!(if receipt == Receipt::Stale {
            "already resolved"
        } else {
            "resolved"
        });
        return Ok(line);
    }
    if receipt == Receipt::Stale {
        let reason = "stale: this occurrence of the alert is already resolved";
        store::record_decision(conn, &alert.fingerprint, None, "discard", reason, None, now)?;
        line["decisions"] = json!([{ "outcome": "discard", "reason": reason }]);
        return Ok(line);
    }
    let owned;
    let eval = match eval {
        Some(e) => e,
        None => {
            owned = rules::evaluate(config, alert);
            &owned
        }
    };
    let mut decisions = Vec::new();
    if eval.matches.is_empty() {
        let d = rules::unmatched();
        store::record_decision(
            conn,
            &alert.fingerprint,
            None,
            d.outcome.as_str(),
            &d.reason,
            None,
            now,
        )?;
        decisions.push(json!({ "outcome": d.outcome.as_str(), "reason": d.reason }));
    }
    for m in &eval.matches {
        let facts = KeyFacts {
            active_event: store::active_event(conn, &m.rule, &m.key)?,
        };
        let mut d = rules::decide(m, &facts);
        let mut event_id = None;
        match d.outcome {
            Outcome::Collapse => {
                let (id, _) = facts
                    .active_event
                    .clone()
                    .expect("collapse is decided only with an active event");
                store::collapse_into(conn, id, now)?;
                store::add_timeline(conn, id, "collapse", &d.reason, now)?;
                event_id = Some(id);
            }
            Outcome::Discard => {}
            Outcome::DryRun | Outcome::Run => {
                let Action::Run(runbook_name) = &m.action else {
                    unreachable!("decide gives run only for run rules")
                };
                let runbook = config
                    .runbooks
                    .get(runbook_name)
                    .expect("config validation checked that the runbook exists");
                let targets = if m.target_tags.is_empty() {
                    m.targets.clone()
                } else {
                    store::agents_with_tags(conn, &m.target_tags)?
                };
                if targets.is_empty() {
                    d = rules::Decision {
                        outcome: Outcome::Discard,
                        reason: format!(
                            "rule {:?} matched but no agent carries tags {:?}",
                            m.rule, m.target_tags
                        ),
                    };
                } else {
                    let id = start_event(
                        conn, config, waiters, alert, m, runbook, &targets, d.outcome, &d.reason,
                        now, applied, handoff_of,
                    )?;
                    event_id = Some(id);
                }
            }
        }
        store::record_decision(
            conn,
            &alert.fingerprint,
            Some(&m.rule),
            d.outcome.as_str(),
            &d.reason,
            event_id,
            now,
        )?;
        let level = match d.outcome {
            Outcome::Run | Outcome::DryRun => log::Level::Info,
            Outcome::Collapse | Outcome::Discard => log::Level::Debug,
        };
        applied.log.push((
            level,
            format!(
                "alert {} {}: {} ({})",
                alert.name,
                alert.fingerprint,
                d.outcome.as_str(),
                d.reason
            ),
        ));
        decisions.push(json!({ "rule": m.rule, "outcome": d.outcome.as_str(), "reason": d.reason, "event_id": event_id }));
    }
    line["decisions"] = Value::Array(decisions);
    Ok(line)
}

#[allow(clippy::too_many_arguments)]
fn start_event(
    conn: &Connection,
    config: &Config,
    waiters: &Waiters,
    alert: &Alert,
    m: &Match,
    runbook: &Arc<Runbook>,
    targets: &[String],
    outcome: Outcome,
    reason: &str,
    now: i64,
    applied: &mut Applied,
    handoff_of: &mut HashMap<String, usize>,
) -> Result<i64> {
    let dry = outcome == Outcome::DryRun;
    let event = NewEvent {
        rule: &m.rule,
        runbook: &runbook.name,
        key: &m.key,
        fingerprint: &alert.fingerprint,
        state: if dry { "dry_run" } else { "queued" },
        mode: if dry { "dry-run" } else { "live" },
    };
    let event_id = store::create_event(conn, &event, now)?;
    store::add_timeline(
        conn,
        event_id,
        "decision",
        &format!("{}: {reason}", outcome.as_str()),
        now,
    )?;
    let spec = op_spec(config, event_id, m, runbook, alert);
    if dry {
        let env: Vec<String> = spec["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some(format!("{}={}", kv[0].as_str()?, kv[1].as_str()?)))
            .collect();
        let msg = format!(
            "would run runbook {} on {}; environment: {}",
            runbook.name,
            targets.join(", "),
            env.join(" ")
        );
        store::add_timeline(conn, event_id, "dry-run", &msg, now)?;
        return Ok(event_id);
    }
    let lease_until = now + config.server.lease.as_millis() as i64;
    for target in targets {
        let op_id = store::queue_op(conn, event_id, target, &spec, now)?;
        store::add_timeline(
            conn,
            event_id,
            "queued",
            &format!(
                "op {op_id}: runbook {} queued for agent {target}",
                runbook.name
            ),
            now,
        )?;
        if !store::agent_known(conn, target)? {
            let msg = format!(
                "agent {target} has never polled heal; the op waits up to {} for it",
                crate::time::format_duration(config.server.dispatch_timeout)
            );
            store::add_timeline(conn, event_id, "warning", &msg, now)?;
        }
        let slot = match handoff_of.get(target) {
            Some(&idx) if applied.handoffs[idx].1.len() < applied.handoffs[idx].0.capacity => {
                Some(idx)
            }
            Some(_) => None,
            None => waiters.take(target).map(|p| {
                applied.handoffs.push((p, Vec::new()));
                handoff_of.insert(target.clone(), applied.handoffs.len() - 1);
                applied.handoffs.len() - 1
            }),
        };
        if let Some(idx) = slot {
            let instance = applied.handoffs[idx].0.instance.clone();
            if store::dispatch_op(conn, op_id, event_id, target, &instance, lease_until, now)? {
                applied.handoffs[idx].1.push(Claimed {
                    id: op_id,
                    event_id,
                    spec: spec.clone(),
                });
            }
        }
    }
    Ok(event_id)
}

/// The op as handed to the agent: steps, environment, the alert, limits.
pub fn op_spec(
    config: &Config,
    event_id: i64,
    m: &Match,
    runbook: &Runbook,
    alert: &Alert,
) -> Value {
    let env = rules::environment(event_id, &m.rule, &runbook.name, alert, &m.params);
    let steps: Vec<Value> = runbook
        .steps
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "run": match &s.run { Run::Shell(c) => json!(c), Run::Argv(v) => json!(v) },
                "timeout_ms": s.timeout.as_millis() as u64,
                "continue_on_error": s.continue_on_error,
            })
        })
        .collect();
    let grace = config.server.kill_grace.as_millis() as u64;
    let budget: u64 = runbook
        .steps
        .iter()
        .map(|s| s.timeout.as_millis() as u64 + grace + 2_000)
        .sum();
    json!({
        "event_id": event_id,
        "rule": m.rule,
        "runbook": runbook.name,
        "steps": steps,
        "env": env.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "alert": alert.doc(),
        "grace_ms": grace,
        "budget_ms": budget,
        "max_output": config.server.max_output,
    })
}
