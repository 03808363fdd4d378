//! Agent-side probes (`[[probe]] on`): the server decides when each runs
//! and on which agents, the agents run them.
//!
//! - At each due time the scheduler queues the run for the offer thread
//!   (`Offers`, `offer_worker`), which offers it to every matching agent
//!   that is up, and each second a first run to an agent that newly
//!   matches (`offer_due`), in one store job per batch: an `agent_check` row per
//!   (probe, agent) pair, refused while the pair's last run is still out
//!   (its lease, the probe's timeout plus `LEASE_GRACE`), so a due time is
//!   offered once and a pair never runs twice at once. Agents with a parked
//!   poll are woken and get the run at once; the others with their next poll.
//! - The agent runs the check and posts its outcome (`record_result`),
//!   which is counted and raised or resolved like a server probe's, as the
//!   probe `PROBE@AGENT` with the `agent` label on its `ProbeFailing`.
//! - An agent that is down gets nothing: its pairs turn `unknown` and their
//!   `ProbeFailing` resolves (its `AgentDown` says what is wrong). A pair
//!   whose agent no longer matches, or was forgotten, is forgotten too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::sql::Db;
use serde_json::{json, Value};

use super::alerts::reconcile;
use super::probes::record_outcome;
use crate::config::{Config, On, Probe};
use crate::error::{Error, Result};
use crate::probe::Outcome;
use crate::server::intake::{self, Applied};
use crate::server::State;
use crate::store::{self, Finished};
use crate::time::now_ms;

/// How long past its timeout a run handed out may take to report back
/// (the poll, the agent's queue, the way back) before the pair may run again.
pub const LEASE_GRACE: Duration = Duration::from_secs(30);

/// How long after an agent is declared down the each-second pass still
/// turns its checks unknown (due times do it whenever they come).
const JUST_DOWN: i64 = 3_000;

/// A probe's run due at a time (`Some`), or the each-second pass (`None`).
type Due = (Probe, Option<i64>);

/// Runs the scheduler found due, waiting for the offer thread
/// (`offer_worker`), so a round never waits for the store.
#[derive(Default)]
pub(super) struct Offers {
    /// The queue, and whether the scheduler has stopped.
    due: Mutex<(Vec<Due>, bool)>,
    ready: std::sync::Condvar,
}

impl Offers {
    /// Queues runs found due (`Some(due)`) or the each-second pass (`None`).
    pub(super) fn push(&self, due: Vec<Due>) {
        let mut queue = self.due.lock().unwrap_or_else(|e| e.into_inner());
        queue.0.extend(due);
        self.ready.notify_one();
    }

    /// Ends the offer thread once the queue is empty.
    pub(super) fn close(&self) {
        self.due.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.ready.notify_one();
    }

    /// What is queued, or None once closed and empty.
    fn take(&self) -> Option<Vec<Due>> {
        let mut queue = self.due.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !queue.0.is_empty() {
                return Some(std::mem::take(&mut queue.0));
            }
            if queue.1 {
                return None;
            }
            queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The offer thread: offers what the scheduler queued, one store job per
/// batch. A probe queued more than once meanwhile is offered its latest due
/// time; an earlier one it never offered counts as skipped.
pub(super) fn offer_worker(state: &Arc<State>, offers: &Offers) {
    while let Some(queued) = offers.take() {
        let mut due: Vec<Due> = Vec::new();
        let mut dropped = 0;
        for (p, at) in queued {
            match due.iter_mut().find(|(d, _)| d.name == p.name) {
                Some(slot) => {
                    if at.is_some() {
                        if slot.1.is_some() {
                            dropped += 1;
                        }
                        *slot = (p, at);
                    }
                }
                None => due.push((p, at)),
            }
        }
        let skipped = offer_due(state, &state.config(), due) + dropped;
        state.metrics.observe_probe_skipped(true, skipped as u64);
    }
}

/// The agent-side probes the scheduler runs now, by name, so a poll can
/// hand out a run it claimed.
#[derive(Default)]
pub struct Checks {
    defs: Mutex<BTreeMap<String, Probe>>,
    /// Whether there are any: polls skip the store's look for runs when not.
    any: AtomicBool,
}

impl Checks {
    /// Replaces the set (the scheduler, after a start, reload or API change).
    pub(super) fn set(&self, defs: BTreeMap<String, Probe>) {
        self.any.store(!defs.is_empty(), Ordering::SeqCst);
        *self.defs.lock().unwrap_or_else(|e| e.into_inner()) = defs;
    }

    /// Whether any probe runs on agents.
    pub fn any(&self) -> bool {
        self.any.load(Ordering::SeqCst)
    }

    fn get(&self, name: &str) -> Option<Probe> {
        self.defs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// What a poll answer carries for runs it claimed: the probe, its due
    /// time, its timeout and the check itself. A run whose probe is gone
    /// is left out (its lease passes unreported, and the pair is forgotten).
    pub fn specs(&self, runs: &[(String, i64)]) -> Vec<Value> {
        runs.iter()
            .filter_map(|(name, due)| {
                let p = self.get(name)?;
                let check = serde_json::to_value(&p.check).ok()?;
                Some(json!({
                    "probe": name,
                    "due": due,
                    "timeout_ms": p.timeout.as_millis() as u64,
                    "check": check,
                }))
            })
            .collect()
    }
}

/// The agents a probe runs on, among those known: tagged ones, or those an
/// expression names (ids no agent has polled with are left out).
fn targets(
    p: &Probe,
    on: &On,
    agents: &[store::AgentRow],
) -> std::result::Result<Vec<String>, String> {
    match on {
        On::Tags(tags) => Ok(agents
            .iter()
            .filter(|a| tags.iter().all(|t| a.tags.contains(t)))
            .map(|a| a.id.clone())
            .collect()),
        On::Expr(e) => {
            let list: Vec<Value> = agents
                .iter()
                .map(|a| json!({ "id": a.id, "tags": a.tags, "hostname": a.hostname }))
                .collect();
            let doc = crate::config::doc(json!({ "probe": p.name, "agents": list }));
            let value = e.eval(&doc)?;
            if value.is_null() || value.as_array().is_some_and(Vec::is_empty) {
                return Ok(Vec::new());
            }
            let ids =
                crate::rules::target_ids(&value).map_err(|why| format!("`{}` {why}", e.source))?;
            Ok(ids
                .into_iter()
                .filter(|id| agents.iter().any(|a| &a.id == id))
                .collect())
        }
    }
}

/// Offers the runs of agent-side probes due now (`Some(due)`) to their
/// agents, and to an agent that newly matches any of them (`None` too) a
/// first run at once; forgets pairs whose agent no longer matches, turns
/// the pairs of down agents unknown, then wakes the agents that got a run.
/// Returns how many runs were skipped because the pair's last run was
/// still out.
fn offer_due(state: &Arc<State>, config: &Arc<Config>, due: Vec<(Probe, Option<i64>)>) -> usize {
    let (config2, st2) = (config.clone(), state.clone());
    let done = state.writer.write(move |conn| {
        st2.leadership.fence(conn)?;
        let now = now_ms();
        let agents = store::list_agents(conn)?;
        // The agents each probe has a run on record with.
        let mut pairs: HashMap<String, HashSet<String>> = HashMap::new();
        for (probe, agent) in store::check_pairs(conn)? {
            pairs.entry(probe).or_default().insert(agent);
        }
        let by_id: HashMap<&str, &store::AgentRow> = agents.iter().map(|a| (a.id.as_str(), a)).collect();
        let down_after = config2.server.agent_down_after.as_millis() as i64;
        let mut applied = Applied::default();
        let mut wake = Vec::new();
        let mut skipped = 0;
        for (p, at) in &due {
            let Some(on) = &p.on else { continue };
            let targets = match targets(p, on, &agents) {
                Ok(t) => t,
                Err(e) => {
                    applied.log.push((log::Level::Error, format!("probe {}: on: {e}; not run", p.name)));
                    continue;
                }
            };
            let known = pairs.get(&p.name);
            let wanted: HashSet<&str> = targets.iter().map(String::as_str).collect();
            for agent in known.into_iter().flatten() {
                if !wanted.contains(agent.as_str()) {
                    applied.merge(forget(conn, &config2, &st2, &p.name, agent, now)?);
                }
            }
            for id in &targets {
                let Some(agent) = by_id.get(id.as_str()) else { continue };
                let subject = store::check_subject(&p.name, id);
                let silent = now - agent.last_seen;
                if silent > down_after {
                    // Between due times, only agents that just went down:
                    // the others were marked already.
                    if at.is_none() && silent > down_after + JUST_DOWN {
                        continue;
                    }
                    let why = format!("agent {id} is down: this check waits until it polls again");
                    if store::set_check_unknown(conn, &subject, &why, now)? {
                        let scope = BTreeSet::from([subject]);
                        applied.merge(reconcile(conn, &config2, &st2, "probe", Vec::new(), Some(&scope), now)?);
                        applied.log.push((log::Level::Info, format!("probe {} on agent {id}: unknown while the agent is down", p.name)));
                    }
                    continue;
                }
                let at = match at {
                    Some(at) => *at,
                    None if !known.is_some_and(|k| k.contains(id)) => now,
                    None => continue,
                };
                let lease = now + (p.timeout + LEASE_GRACE).as_millis() as i64;
                if store::offer_check(conn, &p.name, id, at, lease, now)? {
                    wake.push(id.clone());
                } else {
                    skipped += 1;
                    applied.log.push((log::Level::Warn, format!("probe {} on agent {id}: still running from last time; this run is skipped", p.name)));
                }
            }
        }
        Ok((applied, wake, skipped))
    });
    match done {
        Ok((applied, wake, skipped)) => {
            intake::finish(applied, state, crate::server::metrics::INTERNAL);
            state.wake(&wake);
            skipped
        }
        Err(e) => {
            log::error!("agent checks: {e}");
            0
        }
    }
}

/// Forgets a pair and resolves its alert (a store job's part).
fn forget(
    conn: Db<'_>,
    config: &Config,
    state: &State,
    probe: &str,
    agent: &str,
    now: i64,
) -> Result<Applied> {
    store::forget_check(conn, probe, agent)?;
    let scope = BTreeSet::from([store::check_subject(probe, agent)]);
    let mut applied = reconcile(conn, config, state, "probe", Vec::new(), Some(&scope), now)?;
    applied.log.push((
        log::Level::Info,
        format!("probe {probe} no longer runs on agent {agent}"),
    ));
    Ok(applied)
}

/// Forgets the pairs of probes no longer run on agents (`names` are the
/// agent-side probes defined now); a store job's part.
pub(super) fn forget_undefined(
    conn: Db<'_>,
    config: &Config,
    state: &State,
    names: &BTreeSet<String>,
    now: i64,
) -> Result<Applied> {
    let mut applied = Applied::default();
    for (probe, agent) in store::check_pairs(conn)? {
        if !names.contains(&probe) {
            applied.merge(forget(conn, config, state, &probe, &agent, now)?);
        }
    }
    Ok(applied)
}

/// What an agent reports of one run: `POST /api/v1/agents/{agent}/checks/{probe}/result`
/// with `{"due", "ok", "warning", "detail", "latency_ms", "value"}`.
pub fn parse_result(body: &Value) -> Result<(i64, Outcome)> {
    let bad = |why: &str| Error::request(422, format!("check result: {why}"));
    let due = body
        .get("due")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("missing integer field \"due\""))?;
    let ok = body
        .get("ok")
        .and_then(Value::as_bool)
        .ok_or_else(|| bad("missing boolean field \"ok\""))?;
    let warning = body
        .get("warning")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if ok && warning {
        return Err(bad(
            "\"ok\" and \"warning\" are both true; a warning is not ok",
        ));
    }
    let detail = body
        .get("detail")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing string field \"detail\""))?;
    let latency_ms = body
        .get("latency_ms")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .max(0);
    let value = match body.get("value") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| bad("\"value\" must be a number or null"))?,
        ),
    };
    Ok((
        due,
        Outcome {
            ok,
            warning,
            detail: crate::exec::truncate(detail, 2000).to_string(),
            latency_ms,
            value,
        },
    ))
}

/// Records what `agent` reports of the run of `probe` due at `due`: counted
/// and raised or resolved as `PROBE@AGENT`. A result sent again is
/// acknowledged and not counted twice; one overtaken by a later run is
/// refused with 409.
pub fn record_result(
    state: &Arc<State>,
    agent: String,
    probe: String,
    due: i64,
    outcome: Outcome,
) -> Result<Value> {
    let st2 = state.clone();
    let (answer, applied) = state.writer.write(move |conn| {
        if !store::heard_from(conn, &agent)? {
            return Err(Error::request(404, format!("unknown agent {agent:?}: it has never polled this server")));
        }
        let now = now_ms();
        match store::finish_check(conn, &probe, &agent, due)? {
            Finished::Unknown => Err(Error::request(
                404,
                format!("no run of probe {probe:?} due at {due} was handed to agent {agent:?}"),
            )),
            Finished::Stale => Err(Error::request(
                409,
                format!("probe {probe:?} on agent {agent:?}: a later run was handed out since the one due at {due}; this result is dropped"),
            )),
            Finished::Duplicate => Ok((json!({ "recorded": false, "duplicate": true }), Applied::default())),
            Finished::Fresh => {
                let config = st2.config();
                let Some(p) = st2.watch.checks.get(&probe) else {
                    // Deleted while it ran: its result would bring it back.
                    return Ok((json!({ "recorded": false, "removed": true }), Applied::default()));
                };
                let applied = record_outcome(conn, &config, &st2, &p, Some(&agent), &outcome, now)?;
                Ok((json!({ "recorded": true }), applied))
            }
        }
    })?;
    intake::finish(applied, state, crate::server::metrics::INTERNAL);
    if answer["recorded"] == true {
        state.metrics.observe_probe_run(true);
    }
    Ok(answer)
}
