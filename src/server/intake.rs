//! Applying normalized alerts: store each one, decide with the rules, create
//! events and ops, and hand new ops straight to parked polls. Runs inside one
//! store job, so decisions are serialized and a 2xx means all of it is durable.

use std::collections::HashMap;

use crate::store::sql::Db;
use serde_json::{json, Value};

use crate::alert::{Alert, Status};
use crate::config::{Action, Config, Mode, Runbook, Verify};
use crate::error::Result;
use crate::exec::Run;
use crate::rules::{self, Match, Outcome};
use crate::store::{self, Claimed, NewEvent, Receipt};

use super::longpoll::{Parked, Waiters};
use super::metrics::Tally;

/// How far back a resolved alert looks for the events it resolves (ms).
const RESOLVE_LOOKBACK_MS: i64 = 24 * 3_600_000;

/// What one intake request did.
#[derive(Default)]
pub struct Applied {
    /// One line per alert: fingerprint, status and decisions.
    pub alerts: Vec<Value>,
    /// Polls answered with new ops once the job commits.
    pub handoffs: Vec<(Parked, Vec<Claimed>)>,
    /// Agents that got ops with no poll of theirs parked here: after the
    /// commit, one that parked meanwhile, or on another server sharing the
    /// database, is woken (`State::wake`).
    pub elsewhere: Vec<String>,
    /// Log lines, written after the commit so the writer thread does not wait on stderr.
    /// Runs are logged at info; collapses, discards and resolutions, which a
    /// storm repeats by the thousand, at debug.
    pub log: Vec<(log::Level, String)>,
    /// Alerts received and decisions taken, for `/metrics`.
    pub tally: Tally,
}

impl Applied {
    /// Adds what another job part did.
    pub fn merge(&mut self, other: Applied) {
        self.alerts.extend(other.alerts);
        self.handoffs.extend(other.handoffs);
        self.elsewhere.extend(other.elsewhere);
        self.log.extend(other.log);
        self.tally.merge(&other.tally);
    }
}

/// After the commit: counts the alerts (as coming from `source`) and
/// decisions, answers the polls that get new ops, then logs.
pub fn finish(applied: Applied, state: &super::State, source: &str) {
    state.metrics.observe_intake(source, &applied.tally);
    for (parked, claimed) in applied.handoffs {
        super::longpoll::respond_ops(parked.request, &claimed, &[]);
    }
    if !applied.elsewhere.is_empty() {
        state.wake(&applied.elsewhere);
    }
    for (level, line) in &applied.log {
        log::log!(*level, "{line}");
    }
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
    conn: Db<'_>,
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
    conn: Db<'_>,
    config: &Config,
    waiters: &Waiters,
    alert: &Alert,
    eval: Option<&rules::Evaluation>,
    now: i64,
    applied: &mut Applied,
    handoff_of: &mut HashMap<String, usize>,
) -> Result<Value> {
    let receipt = store::record_alert(conn, alert, now)?;
    applied.tally.alert();
    let mut line = json!({ "fingerprint": alert.fingerprint, "name": alert.name, "status": alert.status.as_str() });
    if alert.status == Status::Resolved {
        if receipt != Receipt::Stale {
            resolve(conn, alert, now, applied)?;
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
        applied.tally.decision(Outcome::Discard);
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
        applied.tally.decision(d.outcome);
        decisions.push(json!({ "outcome": d.outcome.as_str(), "reason": d.reason }));
    }
    let alert_doc = crate::config::doc(alert.doc());
    for m in &eval.matches {
        let rule = &config.rules[m.rule_idx];
        let mut m = m.clone();
        if !m.target_tags.is_empty() {
            m.targets = store::agents_with_tags(conn, &m.target_tags)?;
        }
        // Discard rules and matches that cannot run are decided without the store.
        let facts = if matches!(m.action, Action::Run(_)) && m.error.is_none() {
            let since = now - rule.within.as_millis() as i64;
            let key_ctx = store::key_context(conn, &m.rule, &m.key, mode_name(m.mode), since, now)?;
            rules::facts(&key_ctx, rule, &m, &alert_doc, now)
        } else {
            rules::KeyFacts::default()
        };
        let mut guard = || match &rule.unless {
            None => Ok(false),
            Some(unless) => {
                let ctx =
                    store::context(conn, recent_ms(config), now).map_err(|e| e.to_string())?;
                unless.truthy(&rules::guard_doc(alert, &ctx))
            }
        };
        let d = rules::decide(&m, rule, &config.safety, &facts, &mut guard);
        let event_id = act(
            conn, config, waiters, alert, &m, &d, now, applied, handoff_of,
        )?;
        store::record_decision(
            conn,
            &alert.fingerprint,
            Some(&m.rule),
            d.outcome.as_str(),
            &d.reason,
            event_id,
            now,
        )?;
        applied.tally.decision(d.outcome);
        let level = match d.outcome {
            Outcome::Run | Outcome::DryRun | Outcome::Defer | Outcome::AwaitApproval => {
                log::Level::Info
            }
            Outcome::Escalate | Outcome::Breaker => log::Level::Warn,
            Outcome::Collapse | Outcome::Cooldown | Outcome::Paused | Outcome::Discard => {
                log::Level::Debug
            }
        };
        let event = event_id
            .map(|id| format!(" event {id}"))
            .unwrap_or_default();
        applied.log.push((
            level,
            format!(
                "alert {} {}: {}{event} ({})",
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

/// "live" or "dry-run", as stored on events.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Live => "live",
        Mode::DryRun => "dry-run",
    }
}

/// How far back the context's `events` reach: the longest `within` or
/// `cooldown` of any rule, and at least a day.
pub fn recent_ms(config: &Config) -> i64 {
    config
        .rules
        .iter()
        .map(|r| r.within.max(r.cooldown).as_millis() as i64)
        .max()
        .unwrap_or(0)
        .max(24 * 3_600_000)
}

/// A resolved alert: closes what waits on it (deferred, pending approval,
/// escalated, dry-run), verifies what waits for it (verifying by
/// resolution), and notes it on events that are running or recently ended.
fn resolve(conn: Db<'_>, alert: &Alert, now: i64, applied: &mut Applied) -> Result<()> {
    for (event_id, state, open) in
        store::events_of_alert(conn, &alert.fingerprint, now - RESOLVE_LOOKBACK_MS)?
    {
        let what = format!("alert {} ({}) resolved", alert.name, alert.fingerprint);
        if !open {
            store::add_timeline(
                conn,
                event_id,
                "alert-resolved",
                &format!("{what} after the event ended {state}"),
                now,
            )?;
            // People paged for a failure hear that the problem went away.
            if crate::event::is_failure(&state)
                && !store::alerts_firing(conn, event_id)?
                && !store::event_noticed(conn, event_id, "event.resolved")?
            {
                store::record_notice(
                    conn,
                    &store::NewNotice {
                        kind: "event.resolved",
                        subject: &event_id.to_string(),
                        event_id: Some(event_id),
                        state: Some(&state),
                        parts: None,
                    },
                    now,
                )?;
            }
            continue;
        }
        if store::alerts_firing(conn, event_id)? {
            store::add_timeline(
                conn,
                event_id,
                "alert-resolved",
                &format!("{what}; other alerts of the event still fire"),
                now,
            )?;
            continue;
        }
        let (end_state, reason) = match state.as_str() {
            "deferred" | "pending_approval" => (
                "cancelled",
                format!("{what} while the event was {state}: dropped, nothing ran"),
            ),
            "escalated" => ("escalated", format!("{what}: the escalation is closed")),
            "dry_run" => ("dry_run", what.to_string()),
            "verifying"
                if store::event_by_id(conn, event_id)?.is_some_and(|e| e.deadline.is_some()) =>
            {
                (
                    "succeeded",
                    format!("{what} within the verification window: the fix worked"),
                )
            }
            _ => {
                store::add_timeline(
                    conn,
                    event_id,
                    "alert-resolved",
                    &format!("{what} while the event was {state}"),
                    now,
                )?;
                continue;
            }
        };
        store::end_event(conn, event_id, end_state, &reason, now)?;
        applied.log.push((
            log::Level::Info,
            format!("event {event_id} {end_state}: {reason}"),
        ));
    }
    applied.log.push((
        log::Level::Debug,
        format!("alert {} {} resolved", alert.name, alert.fingerprint),
    ));
    Ok(())
}

/// Carries out a decision: the event it creates or joins. Returns the event's id.
#[allow(clippy::too_many_arguments)]
fn act(
    conn: Db<'_>,
    config: &Config,
    waiters: &Waiters,
    alert: &Alert,
    m: &Match,
    d: &rules::Decision,
    now: i64,
    applied: &mut Applied,
    handoff_of: &mut HashMap<String, usize>,
) -> Result<Option<i64>> {
    if let Some(why) = &d.trip {
        if store::set_breaker(conn, "open", why, "heal", now)? {
            applied.log.push((
                log::Level::Error,
                format!(
                    "safety breaker opened: {why}; all automation stops until `heal breaker reset`"
                ),
            ));
        }
    }
    let timeline = |id: i64, kind: &str| {
        store::add_timeline(
            conn,
            id,
            kind,
            &format!("{}: {}", d.outcome.as_str(), d.reason),
            now,
        )
    };
    match d.outcome {
        Outcome::Collapse => {
            let id = d.event.expect("collapse names the open event");
            store::collapse_into(conn, id, &alert.fingerprint, now)?;
            timeline(id, "collapse")?;
            Ok(Some(id))
        }
        Outcome::Cooldown => {
            let id = d.event.expect("cooldown names the last run");
            timeline(id, "cooldown")?;
            Ok(Some(id))
        }
        Outcome::Paused | Outcome::Breaker | Outcome::Discard => Ok(None),
        Outcome::Escalate
        | Outcome::Defer
        | Outcome::AwaitApproval
        | Outcome::DryRun
        | Outcome::Run => {
            let Action::Run(runbook_name) = &m.action else {
                unreachable!("decide gives these outcomes only for run rules")
            };
            let runbook = config
                .runbooks
                .get(runbook_name)
                .expect("config validation checked that the runbook exists");
            let rule = &config.rules[m.rule_idx];
            let (state, started, deadline) = match d.outcome {
                Outcome::Escalate => ("escalated", None, None),
                Outcome::Defer => ("deferred", None, None),
                Outcome::AwaitApproval => (
                    "pending_approval",
                    None,
                    Some(now + rule.approve_timeout.as_millis() as i64),
                ),
                Outcome::DryRun => (
                    "dry_run",
                    (d.live == Some(Outcome::Run)).then_some(now),
                    None,
                ),
                _ => ("queued", Some(now), None),
            };
            let event_id = store::create_event(
                conn,
                &NewEvent {
                    rule: &m.rule,
                    runbook: &runbook.name,
                    key: &m.key,
                    fingerprint: &alert.fingerprint,
                    state,
                    mode: mode_name(m.mode),
                    started_at: started,
                    deadline,
                },
                now,
            )?;
            timeline(event_id, "decision")?;
            let plan = plan(config, event_id, m, runbook, alert);
            store::set_plan(conn, event_id, &plan)?;
            match d.outcome {
                Outcome::DryRun => {
                    let env: Vec<String> = plan["spec"]["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|kv| Some(format!("{}={}", kv[0].as_str()?, kv[1].as_str()?)))
                        .collect();
                    let msg = format!(
                        "would run runbook {} on {}; environment: {}",
                        runbook.name,
                        m.targets.join(", "),
                        env.join(" ")
                    );
                    store::add_timeline(conn, event_id, "dry-run", &msg, now)?;
                }
                Outcome::Run => {
                    let queued = store::start_event(conn, event_id, now)?;
                    offer(conn, config, waiters, queued, now, applied, handoff_of)?;
                }
                _ => {}
            }
            Ok(Some(event_id))
        }
    }
}

/// Hands just-queued ops to their agents' parked polls, inside this job.
fn offer(
    conn: Db<'_>,
    config: &Config,
    waiters: &Waiters,
    queued: Vec<store::Queued>,
    now: i64,
    applied: &mut Applied,
    handoff_of: &mut HashMap<String, usize>,
) -> Result<()> {
    let lease_until = now + config.server.lease.as_millis() as i64;
    for q in queued {
        let slot = match handoff_of.get(&q.agent) {
            Some(&idx) if applied.handoffs[idx].1.len() < applied.handoffs[idx].0.capacity => {
                Some(idx)
            }
            Some(_) => None,
            None => waiters.take(&q.agent).map(|p| {
                applied.handoffs.push((p, Vec::new()));
                handoff_of.insert(q.agent.clone(), applied.handoffs.len() - 1);
                applied.handoffs.len() - 1
            }),
        };
        if slot.is_none()
            && !handoff_of.contains_key(&q.agent)
            && !applied.elsewhere.contains(&q.agent)
        {
            applied.elsewhere.push(q.agent.clone());
        }
        if let Some(idx) = slot {
            let instance = applied.handoffs[idx].0.instance.clone();
            if store::dispatch_op(
                conn,
                q.id,
                q.event_id,
                &q.agent,
                &instance,
                lease_until,
                now,
            )? {
                applied.handoffs[idx].1.push(Claimed {
                    id: q.id,
                    event_id: q.event_id,
                    spec: q.spec,
                });
            }
        }
    }
    Ok(())
}

/// What an event will do, fixed at its decision: the targets, the op spec,
/// the verification (with its own op spec for a check), `max_parallel`.
pub fn plan(config: &Config, event_id: i64, m: &Match, runbook: &Runbook, alert: &Alert) -> Value {
    let spec = op_spec(config, event_id, m, runbook, alert);
    let verify = match &runbook.verify {
        Verify::None => json!({ "kind": "none" }),
        Verify::ResolvedWithin(d) => {
            json!({ "kind": "resolved_within", "within_ms": d.as_millis() as u64 })
        }
        Verify::Run {
            run,
            retries,
            interval,
            timeout,
        } => {
            let mut check = spec.clone();
            let grace = config.server.kill_grace.as_millis() as u64;
            let (timeout, interval) = (timeout.as_millis() as u64, interval.as_millis() as u64);
            let tries = *retries as u64 + 1;
            check["kind"] = json!("verify");
            check["steps"] = json!([{
                "name": "verify",
                "run": match run { Run::Shell(c) => json!(c), Run::Argv(v) => json!(v) },
                "timeout_ms": timeout,
                "continue_on_error": false,
            }]);
            check["retries"] = json!(retries);
            check["interval_ms"] = json!(interval);
            check["budget_ms"] = json!(tries * (timeout + grace + 2_000) + (tries - 1) * interval);
            json!({ "kind": "run", "spec": check, "retries": retries, "interval_ms": interval })
        }
    };
    json!({
        "targets": m.targets,
        "spec": spec,
        "verify": verify,
        "max_parallel": runbook.max_parallel,
    })
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
    let step_json = |s: &crate::config::Step| {
        json!({
            "name": s.name,
            "run": match &s.run { Run::Shell(c) => json!(c), Run::Argv(v) => json!(v) },
            "timeout_ms": s.timeout.as_millis() as u64,
            "continue_on_error": s.continue_on_error,
            "env": s.env.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "cwd": s.cwd,
            "retries": s.retries,
            "retry_delay_ms": s.retry_delay.as_millis() as u64,
            "when": s.when,
            "env_files": s.env_files,
            "user": s.user,
            "group": s.group,
        })
    };
    let steps: Vec<Value> = runbook.steps.iter().map(step_json).collect();
    let on_failure: Vec<Value> = runbook.on_failure.iter().map(step_json).collect();
    let grace = config.server.kill_grace.as_millis() as u64;
    let budget: u64 = runbook
        .steps
        .iter()
        .chain(&runbook.on_failure)
        .map(|s| {
            let tries = u64::from(s.retries) + 1;
            tries * (s.timeout.as_millis() as u64 + grace + 2_000)
                + (tries - 1) * s.retry_delay.as_millis() as u64
        })
        .sum();
    json!({
        "event_id": event_id,
        "kind": "run",
        "rule": m.rule,
        "runbook": runbook.name,
        "steps": steps,
        "on_failure": on_failure,
        "params": m.params,
        "env": env.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "alert": alert.doc(),
        "grace_ms": grace,
        "budget_ms": budget,
        "max_output": config.server.max_output,
    })
}
