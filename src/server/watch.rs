//! What heal watches by itself. One scheduler thread keeps time: every second
//! it sweeps heartbeats, agents and the breaker; it starts probes when they
//! are due (run by a small pool, so a hung check holds no one up), fires
//! `[[schedule]]`s and runs retention once a day. A missed tick (the server
//! was stopped or stalled) is not replayed: the next time is computed from now.
//!
//! Whatever it notices becomes an internal alert (`HeartbeatMissing`,
//! `HeartbeatRuntimeExceeded`, `AgentDown`, `ProbeFailing`,
//! `SafetyBreakerOpen`) applied through `intake::apply`, so it meets the same
//! rules and decisions as any alert. `internal_alert` rows remember what is
//! raised, so each is raised once, re-raised every `renotify`, and resolved
//! when the cause goes away, across restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{json, Value};

use super::intake::{self, Applied};
use super::{Shutdown, State};
use crate::alert::{self, Alert, Status};
use crate::config::{self, Config, Heartbeat, Probe};
use crate::error::Result;
use crate::heartbeat;
use crate::probe;
use crate::store::{self, Held, InternalRow, Purge};
use crate::time::{format_duration, now_ms};

/// Rows deleted per retention job.
const PURGE_BATCH: i64 = 2000;

/// Probe runs at once.
pub const PROBE_THREADS: usize = 4;

/// What the scheduler shares with the API.
#[derive(Default)]
pub struct Shared {
    /// The last heartbeat sweep: when, how many, how long (µs).
    pub last_sweep: Mutex<Option<(i64, usize, u64)>>,
    /// Probes running now.
    running: Mutex<HashSet<String>>,
    /// Parsed heartbeat definitions, shared by the sweep and the API.
    defs: Mutex<Defs>,
}

impl Shared {
    /// The parsed definition of a heartbeat row (an error if it does not validate).
    pub fn heartbeat(&self, row: &store::HeartbeatRow) -> std::result::Result<Arc<Known>, String> {
        self.lock_defs().get(&row.name, &row.def)
    }

    fn lock_defs(&self) -> std::sync::MutexGuard<'_, Defs> {
        self.defs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a probe running; false if it already was.
    fn start_probe(&self, name: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string())
    }

    fn end_probe(&self, name: &str) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// An internal alert that should be firing.
struct Raise {
    kind: &'static str,
    subject: String,
    alert: Alert,
    renotify: Option<Duration>,
}

/// An internal alert's labels: its own plus `alertname`.
fn with_name(name: &str, mut labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.insert("alertname".into(), name.into());
    labels
}

fn internal(
    name: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    now: i64,
) -> Alert {
    let labels = with_name(name, labels);
    Alert {
        fingerprint: alert::fingerprint(&labels),
        name: name.into(),
        status: Status::Firing,
        labels,
        annotations,
        starts_at: Some(now),
        ends_at: None,
        source: "heal".into(),
    }
}

/// An internal alert as `internal_alert.alert` keeps it: the shape `Alert::from_stored` reads.
fn stored_alert(a: &Alert) -> Value {
    json!({
        "fingerprint": a.fingerprint,
        "name": a.name,
        "status": a.status.as_str(),
        "source": a.source,
        "labels": a.labels,
        "annotations": a.annotations,
        "starts_at": a.starts_at,
    })
}

/// The resolution of a raised internal alert; None if its stored form is unreadable.
fn resolution(row: &InternalRow, now: i64) -> Option<Alert> {
    let alert = Alert::from_stored(&row.alert)?;
    Some(Alert {
        status: Status::Resolved,
        ends_at: Some(now),
        ..alert
    })
}

/// Brings the raised internal alerts of `kind` in line with `desired`: raises
/// new ones, re-raises those due for renotify, resolves the rest. With
/// `scope`, only those subjects are considered. Runs inside a store job.
fn reconcile(
    conn: &Connection,
    config: &Config,
    state: &State,
    kind: &str,
    desired: Vec<Raise>,
    scope: Option<&BTreeSet<String>>,
    now: i64,
) -> Result<Applied> {
    let mut raised: HashMap<String, InternalRow> = store::internal_alerts(conn, kind)?
        .into_iter()
        .filter(|r| scope.is_none_or(|s| s.contains(&r.subject)))
        .map(|r| (r.subject.clone(), r))
        .collect();
    let mut send = Vec::new();
    let mut notices: Vec<(String, Alert)> = Vec::new();
    for d in desired {
        let mut alert = d.alert;
        match raised.remove(&d.subject) {
            Some(row) if row.fingerprint == alert.fingerprint => {
                let due = d
                    .renotify
                    .is_some_and(|r| now - row.sent_at >= r.as_millis() as i64);
                if !due {
                    continue;
                }
                alert.starts_at = row.alert["starts_at"].as_i64();
                store::put_internal_alert(
                    conn,
                    &InternalRow {
                        alert: stored_alert(&alert),
                        sent_at: now,
                        ..row
                    },
                )?;
            }
            old => {
                if let Some(old) = old {
                    // Its labels changed (a reload): resolve the old alert, raise the new one.
                    // People hear only of the new one: the cause did not go away.
                    send.extend(resolution(&old, now));
                    store::delete_internal_alert(conn, &old.fingerprint)?;
                }
                store::put_internal_alert(
                    conn,
                    &InternalRow {
                        fingerprint: alert.fingerprint.clone(),
                        kind: kind.to_string(),
                        subject: d.subject.clone(),
                        alert: stored_alert(&alert),
                        raised_at: now,
                        sent_at: now,
                    },
                )?;
            }
        }
        notices.push((d.subject, alert.clone()));
        send.push(alert);
    }
    for row in raised.into_values() {
        if let Some(alert) = resolution(&row, now) {
            notices.push((row.subject.clone(), alert.clone()));
            send.push(alert);
        }
        store::delete_internal_alert(conn, &row.fingerprint)?;
    }
    if send.is_empty() {
        return Ok(Applied::default());
    }
    for (subject, alert) in &notices {
        let firing = alert.status == Status::Firing;
        if let Some(notice) = crate::notify::internal_kind(kind, firing) {
            let mut parts = crate::notify::internal_parts(kind, alert);
            if kind == "probe" && !firing {
                // A recovered probe is told with the result that recovered it.
                if let Some(detail) = store::probe(conn, subject)?
                    .filter(|p| p.last_ok == Some(true))
                    .and_then(|p| p.last_detail)
                {
                    parts["probe"]["last_result"] = detail.into();
                }
            }
            if kind == "agent" && !firing && !store::agent_known(conn, subject)? {
                // Its agent was forgotten (by hand or forget_agents_after), not back.
                parts["agent"]["forgotten"] = true.into();
            }
            store::record_notice(
                conn,
                &store::NewNotice {
                    kind: notice,
                    subject,
                    event_id: None,
                    state: None,
                    parts: Some(&parts),
                },
                now,
            )?;
        }
    }
    intake::apply(conn, config, &state.waiters, &send, &[], now)
}

/// Whether `reconcile` would do anything (read on a reader connection, so an
/// idle sweep costs no write).
fn differs(raised: &[Held], desired: &[Want], now: i64) -> bool {
    raised.len() != desired.len()
        || desired.iter().any(|d| {
            raised
                .iter()
                .find(|r| r.kind == d.kind && r.subject == d.subject)
                .is_none_or(|r| {
                    r.fingerprint != d.fingerprint
                        || d.renotify
                            .is_some_and(|n| now - r.sent_at >= n.as_millis() as i64)
                })
        })
}

/// What `differs` compares of an alert that should be raised.
struct Want<'a> {
    kind: &'a str,
    subject: &'a str,
    fingerprint: &'a str,
    renotify: Option<Duration>,
}

impl Raise {
    fn want(&self) -> Want<'_> {
        Want {
            kind: self.kind,
            subject: &self.subject,
            fingerprint: &self.alert.fingerprint,
            renotify: self.renotify,
        }
    }
}

/// Runs a store job that applies internal alerts, then hands out ops and logs.
fn submit(
    state: &Arc<State>,
    what: &str,
    f: impl FnOnce(&Connection) -> Result<Applied> + Send + 'static,
) {
    match state.writer.write(f) {
        Ok(applied) => intake::finish(applied, &state.metrics, super::metrics::INTERNAL),
        Err(e) => log::error!("{what}: {e}"),
    }
}

// ---- heartbeats -------------------------------------------------------------

/// A parsed heartbeat with the fingerprints of its two alerts, which depend
/// only on its definition.
pub struct Known {
    /// The heartbeat.
    pub hb: Heartbeat,
    missing: String,
    runtime: String,
}

/// Parsed heartbeat definitions by name, re-parsed only when their text changes.
#[derive(Default)]
struct Defs(HashMap<String, (String, std::result::Result<Arc<Known>, String>)>);

impl Defs {
    fn get(&mut self, name: &str, def: &str) -> std::result::Result<Arc<Known>, String> {
        if let Some((text, parsed)) = self.0.get(name) {
            if text == def {
                return parsed.clone();
            }
        }
        let parsed = config::heartbeat_from_def(def).map(|hb| {
            let labels = heartbeat_labels(&hb);
            Arc::new(Known {
                missing: alert::fingerprint(&with_name("HeartbeatMissing", labels.clone())),
                runtime: alert::fingerprint(&with_name("HeartbeatRuntimeExceeded", labels)),
                hb,
            })
        });
        if let Err(e) = &parsed {
            log::error!("heartbeat {name:?}: {e}; it is not checked until fixed");
        }
        self.0
            .insert(name.to_string(), (def.to_string(), parsed.clone()));
        parsed
    }
}

fn heartbeat_labels(hb: &Heartbeat) -> BTreeMap<String, String> {
    let mut labels = hb.labels.clone();
    labels.insert("heartbeat".into(), hb.name.clone());
    for (k, v) in [
        ("team", &hb.team),
        ("priority", &hb.priority),
        ("service", &hb.service),
    ] {
        if let Some(v) = v {
            labels.insert(k.into(), v.clone());
        }
    }
    if !hb.tags.is_empty() {
        labels.insert("tags".into(), hb.tags.join(","));
    }
    labels
}

/// The internal alerts a heartbeat's status calls for.
fn heartbeat_raises(hb: &Heartbeat, st: &heartbeat::Status, now: i64) -> Vec<Raise> {
    let mut out = Vec::new();
    let mut notes = BTreeMap::new();
    if let Some(url) = &hb.runbook_url {
        notes.insert("runbook_url".to_string(), url.clone());
    }
    if !hb.description.is_empty() {
        notes.insert("heartbeat_description".to_string(), hb.description.clone());
    }
    if st.state == heartbeat::State::Down {
        let mut a = notes.clone();
        a.insert("summary".into(), format!("heartbeat {} is down", hb.name));
        a.insert("description".into(), st.reason.clone());
        a.insert(
            "reason".into(),
            if st.failed.is_some() {
                "failed"
            } else {
                "missed"
            }
            .into(),
        );
        out.push(Raise {
            kind: "heartbeat",
            subject: hb.name.clone(),
            alert: internal("HeartbeatMissing", heartbeat_labels(hb), a, now),
            renotify: hb.renotify,
        });
    }
    if st.overrun {
        let mut a = notes;
        let max = hb.spec.max_runtime.map(format_duration).unwrap_or_default();
        a.insert(
            "summary".into(),
            format!("heartbeat {}: a run has taken longer than {max}", hb.name),
        );
        a.insert("description".into(), st.reason.clone());
        out.push(Raise {
            kind: "runtime",
            subject: hb.name.clone(),
            alert: internal("HeartbeatRuntimeExceeded", heartbeat_labels(hb), a, now),
            renotify: hb.renotify,
        });
    }
    out
}

/// Computes every heartbeat's status on a reader; only heartbeats whose state
/// or alerts must change go to the store, where they are computed again from
/// their current rows (a ping may have arrived meanwhile).
fn sweep_heartbeats(state: &Arc<State>, reader: &Connection) -> Result<()> {
    let started = Instant::now();
    let now = now_ms();
    let rows = store::heartbeats(reader)?;
    let mut raised: HashMap<String, Vec<Held>> = HashMap::new();
    for kind in ["heartbeat", "runtime"] {
        for r in store::held_alerts(reader, kind)? {
            raised.entry(r.subject.clone()).or_default().push(r);
        }
    }
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut parsed: HashMap<String, Arc<Known>> = HashMap::new();
    for row in &rows {
        let Ok(k) = state.watch.heartbeat(row) else {
            continue;
        };
        let hb = &k.hb;
        let st = heartbeat::status(&hb.spec, &row.seen(), now);
        let mut wants = Vec::new();
        if st.state == heartbeat::State::Down {
            wants.push(Want {
                kind: "heartbeat",
                subject: &row.name,
                fingerprint: &k.missing,
                renotify: hb.renotify,
            });
        }
        if st.overrun {
            wants.push(Want {
                kind: "runtime",
                subject: &row.name,
                fingerprint: &k.runtime,
                renotify: hb.renotify,
            });
        }
        let mine = raised.get(&row.name).map_or(&[][..], Vec::as_slice);
        if heartbeat::State::parse(&row.state) != Some(st.state) || differs(mine, &wants, now) {
            changed.insert(row.name.clone());
        }
        parsed.insert(row.name.clone(), k);
    }
    // Deleted heartbeats: forget their definitions, resolve their alerts.
    let names: HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    state
        .watch
        .lock_defs()
        .0
        .retain(|name, _| names.contains(name.as_str()));
    // Alerts of heartbeats that were deleted.
    for subject in raised.keys() {
        if !parsed.contains_key(subject) {
            changed.insert(subject.clone());
        }
    }
    *state
        .watch
        .last_sweep
        .lock()
        .unwrap_or_else(|e| e.into_inner()) =
        Some((now, rows.len(), started.elapsed().as_micros() as u64));
    if changed.is_empty() {
        return Ok(());
    }
    let (config, st2) = (state.config(), state.clone());
    submit(state, "heartbeat check", move |conn| {
        let now = now_ms();
        let mut desired = (Vec::new(), Vec::new());
        let mut log = Vec::new();
        for name in &changed {
            let (Some(row), Some(hb)) = (store::heartbeat(conn, name)?, parsed.get(name)) else {
                continue;
            };
            let st = heartbeat::status(&hb.hb.spec, &row.seen(), now);
            if heartbeat::State::parse(&row.state) != Some(st.state) {
                store::set_heartbeat_state(conn, name, st.state.as_str(), now)?;
                log.push((
                    log::Level::Info,
                    format!(
                        "heartbeat {name}: {} → {} ({})",
                        row.state,
                        st.state.as_str(),
                        st.reason
                    ),
                ));
            }
            for r in heartbeat_raises(&hb.hb, &st, now) {
                if r.kind == "heartbeat" {
                    desired.0.push(r)
                } else {
                    desired.1.push(r)
                }
            }
        }
        let mut applied = reconcile(
            conn,
            &config,
            &st2,
            "heartbeat",
            desired.0,
            Some(&changed),
            now,
        )?;
        let more = reconcile(
            conn,
            &config,
            &st2,
            "runtime",
            desired.1,
            Some(&changed),
            now,
        )?;
        applied.merge(more);
        applied.log.extend(log);
        Ok(applied)
    });
    Ok(())
}

// ---- agents and the breaker ---------------------------------------------------

fn agent_raises(conn: &Connection, config: &Config, now: i64) -> Result<Vec<Raise>> {
    let after = config.server.agent_down_after.as_millis() as i64;
    let mut out = Vec::new();
    for store::AgentRow {
        id,
        tags,
        last_seen,
        ..
    } in store::list_agents(conn)?
    {
        if now - last_seen <= after {
            continue;
        }
        let mut labels = BTreeMap::from([("agent".to_string(), id.clone())]);
        if !tags.is_empty() {
            labels.insert("tags".into(), tags.join(","));
        }
        let notes = BTreeMap::from([
            ("summary".to_string(), format!("agent {id} stopped polling")),
            (
                "description".to_string(),
                format!(
                    "agent {id} last polled {} ago (agent_down_after {})",
                    format_duration(Duration::from_millis((now - last_seen) as u64)),
                    format_duration(config.server.agent_down_after)
                ),
            ),
        ]);
        out.push(Raise {
            kind: "agent",
            subject: id,
            alert: internal("AgentDown", labels, notes, now),
            renotify: None,
        });
    }
    Ok(out)
}

/// Brings the `AgentDown` alerts in line in the store job that forgot
/// agents, as the agent sweep does when an agent polls again: a forgotten
/// agent's alert is resolved, with the notifications that follow.
pub fn agents_forgotten(
    conn: &Connection,
    config: &Config,
    state: &State,
    now: i64,
) -> Result<Applied> {
    let desired = agent_raises(conn, config, now)?;
    reconcile(conn, config, state, "agent", desired, None, now)
}

/// Forgets agents silent for longer than `[server] forget_agents_after` (if
/// set) that have no op still to end; found on the reader, forgotten only
/// if there are any.
fn expire_agents(state: &Arc<State>, reader: &Connection) -> Result<()> {
    let config = state.config();
    let Some(after) = config.server.forget_agents_after else {
        return Ok(());
    };
    let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    if store::silent_agents(reader, now_ms().saturating_sub(after_ms))?.is_empty() {
        return Ok(());
    }
    let st2 = state.clone();
    submit(state, "forgetting silent agents", move |conn| {
        let now = now_ms();
        let ids = store::silent_agents(conn, now.saturating_sub(after_ms))?;
        let why = format!(
            "silent for longer than forget_agents_after ({})",
            format_duration(after)
        );
        let mut forgotten = Vec::new();
        for id in &ids {
            store::forget_agent(conn, id)?;
            forgotten.push((log::Level::Info, format!("agent {id} forgotten: {why}")));
            store::record_audit(
                conn,
                &store::NewAudit {
                    actor: "heal",
                    action: "agent.forgotten",
                    target: id,
                    detail: &why,
                    remote: None,
                },
                now,
            )?;
        }
        let mut applied = agents_forgotten(conn, &config, &st2, now)?;
        applied.log.extend(forgotten);
        Ok(applied)
    });
    Ok(())
}

fn breaker_raises(conn: &Connection, now: i64) -> Result<Vec<Raise>> {
    let b = store::breaker(conn, now)?;
    if b["state"] != "open" {
        return Ok(Vec::new());
    }
    let reason = b["reason"].as_str().unwrap_or_default().to_string();
    let notes = BTreeMap::from([
        (
            "summary".to_string(),
            "heal's safety breaker is open: automation is stopped".to_string(),
        ),
        (
            "description".to_string(),
            format!("{reason}; reset with `heal breaker reset`"),
        ),
    ]);
    Ok(vec![Raise {
        kind: "breaker",
        subject: "breaker".into(),
        alert: internal("SafetyBreakerOpen", BTreeMap::new(), notes, now),
        renotify: None,
    }])
}

type RaisesFn = fn(&Connection, &Config, i64) -> Result<Vec<Raise>>;

/// Sweeps one cheap source: compared on the reader, reconciled in the store only on a difference.
fn sweep_source(
    state: &Arc<State>,
    reader: &Connection,
    kind: &'static str,
    raises: RaisesFn,
) -> Result<()> {
    let config = state.config();
    let now = now_ms();
    let desired = raises(reader, &config, now)?;
    let wants: Vec<Want> = desired.iter().map(Raise::want).collect();
    if !differs(&store::held_alerts(reader, kind)?, &wants, now) {
        return Ok(());
    }
    let st2 = state.clone();
    submit(state, kind, move |conn| {
        let now = now_ms();
        let desired = raises(conn, &config, now)?;
        reconcile(conn, &config, &st2, kind, desired, None, now)
    });
    Ok(())
}

// ---- probes -------------------------------------------------------------------

fn probe_raise(p: &Probe, outcome: &probe::Outcome, now: i64) -> Raise {
    let mut labels = p.labels.clone();
    labels.insert("probe".into(), p.name.clone());
    labels.insert("probe_type".into(), p.kind().into());
    if let Some(team) = &p.team {
        labels.insert("team".into(), team.clone());
    }
    if !p.tags.is_empty() {
        labels.insert("tags".into(), p.tags.join(","));
    }
    let mut notes = BTreeMap::from([
        (
            "summary".to_string(),
            format!("probe {} is failing: {}", p.name, outcome.detail),
        ),
        (
            "description".to_string(),
            match p.fail_after {
                1 => format!("{} failed; last: {}", p.name, outcome.detail),
                n => format!(
                    "{} failed {n} times in a row; last: {}",
                    p.name, outcome.detail
                ),
            },
        ),
    ]);
    if !p.description.is_empty() {
        notes.insert("probe_description".into(), p.description.clone());
    }
    Raise {
        kind: "probe",
        subject: p.name.clone(),
        alert: internal("ProbeFailing", labels, notes, now),
        renotify: None,
    }
}

/// Runs due probes handed over by the scheduler and records their results.
fn probe_worker(state: &Arc<State>, jobs: &Mutex<Receiver<Probe>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(p) = job else { return };
        let outcome = probe::run(&p.check, p.timeout);
        let (config, st2, name) = (state.config(), state.clone(), p.name.clone());
        submit(state, &format!("probe {name}"), move |conn| {
            let now = now_ms();
            let prev = store::probe(conn, &p.name)?
                .map(|r| r.counts())
                .unwrap_or_default();
            let (counts, change) = probe::step(prev, outcome.ok, p.fail_after, p.recover_after);
            store::record_probe_result(conn, &p.name, &outcome, counts, now)?;
            let desired = if counts.state == probe::State::Down {
                vec![probe_raise(&p, &outcome, now)]
            } else {
                Vec::new()
            };
            let scope = BTreeSet::from([p.name.clone()]);
            let mut applied = reconcile(conn, &config, &st2, "probe", desired, Some(&scope), now)?;
            if let Some(change) = change {
                applied.log.push((
                    log::Level::Info,
                    format!("probe {}: {change:?} ({})", p.name, outcome.detail),
                ));
            }
            Ok(applied)
        });
        state.watch.end_probe(&name);
    }
}

/// Resolves the alerts of probes no longer in the config.
fn forget_removed_probes(state: &Arc<State>, config: &Arc<Config>) {
    let (config, st2) = (config.clone(), state.clone());
    submit(state, "removed probes", move |conn| {
        let gone: BTreeSet<String> = store::internal_alerts(conn, "probe")?
            .into_iter()
            .map(|r| r.subject)
            .filter(|s| !config.probes.contains_key(s))
            .collect();
        if gone.is_empty() {
            return Ok(Applied::default());
        }
        reconcile(
            conn,
            &config,
            &st2,
            "probe",
            Vec::new(),
            Some(&gone),
            now_ms(),
        )
    });
}

// ---- schedules -----------------------------------------------------------------

fn fire_schedule(state: &Arc<State>, config: &Arc<Config>, idx: usize, due: i64) {
    let (config, st2) = (config.clone(), state.clone());
    let name = config.schedules[idx].name.clone();
    submit(state, &format!("schedule {name}"), move |conn| {
        let s = &config.schedules[idx];
        if !store::claim_schedule_fire(conn, &s.name, due)? {
            return Ok(Applied::default());
        }
        let now = now_ms();
        let labels = BTreeMap::from([("schedule".to_string(), s.name.clone())]);
        let notes = BTreeMap::from([(
            "summary".to_string(),
            format!("scheduled run of {} ({})", s.name, s.schedule),
        )]);
        let alert = internal("ScheduledRun", labels, notes, due);
        let eval = crate::rules::evaluate_schedule(&config, s.rule_idx, &alert);
        let applied = intake::apply(
            conn,
            &config,
            &st2.waiters,
            std::slice::from_ref(&alert),
            &[Some(eval)],
            now,
        )?;
        // The run is an event of its own; the alert that stands for it ends at once.
        let resolved = Alert {
            status: Status::Resolved,
            ends_at: Some(now),
            ..alert
        };
        store::record_alert(conn, &resolved, now)?;
        Ok(applied)
    });
}

// ---- retention -----------------------------------------------------------------

fn retention(state: &Arc<State>, shutdown: &Shutdown) {
    let r = state.config().retention;
    let now = now_ms();
    let jobs = [
        (Purge::Pings, r.pings, "pings"),
        (Purge::ProbeResults, r.probe_results, "probe results"),
        (Purge::Decisions, r.events, "decisions"),
        (Purge::Events, r.events, "finished events"),
        (Purge::Notifications, r.events, "notifications"),
    ];
    for (what, keep, label) in jobs {
        let cutoff = now - keep.as_millis() as i64;
        let mut total = 0;
        // Small batches: each is one short store job, so intake is never held up for long.
        for _ in 0..100_000 {
            if shutdown.is_triggered() {
                return;
            }
            match state
                .writer
                .write(move |conn| store::purge(conn, what, cutoff, PURGE_BATCH))
            {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    log::error!("retention of {label}: {e}");
                    break;
                }
            }
        }
        if total > 0 {
            log::info!(
                "retention: deleted {total} {label} older than {}",
                format_duration(keep)
            );
        }
    }
}

// ---- the scheduler thread -------------------------------------------------------

/// The times things are next due.
struct Due {
    config: Option<Arc<Config>>,
    probes: HashMap<String, i64>,
    schedules: HashMap<String, i64>,
}

impl Due {
    /// After a start or reload: keeps the times of unchanged names, computes the rest.
    fn refresh(&mut self, state: &Arc<State>, config: &Arc<Config>, reader: &Connection, now: i64) {
        let mut probes = HashMap::new();
        for (name, p) in &config.probes {
            // A new probe runs at once, then on its schedule.
            let at = self.probes.get(name).copied().unwrap_or(now);
            probes.insert(
                name.clone(),
                at.min(p.schedule.next_after(now).unwrap_or(i64::MAX)),
            );
        }
        self.probes = probes;
        let mut schedules = HashMap::new();
        for s in &config.schedules {
            let last = store::schedule_last_fire(reader, &s.name)
                .ok()
                .flatten()
                .unwrap_or(now);
            let from = last.max(now);
            // A schedule unchanged by a reload keeps its next time.
            let unchanged = self.config.as_ref().is_some_and(|old| {
                old.schedules
                    .iter()
                    .any(|o| o.name == s.name && o.schedule == s.schedule)
            });
            let kept = self.schedules.get(&s.name).copied().filter(|_| unchanged);
            if let Some(at) = kept.or_else(|| s.schedule.next_after(from)) {
                schedules.insert(s.name.clone(), at);
            }
        }
        self.schedules = schedules;
        forget_removed_probes(state, config);
        self.config = Some(config.clone());
    }
}

/// Writes the heartbeats of a config being applied to the store (adding,
/// updating, and removing those the file no longer has) and logs what
/// changed. Runs in the store job that records the config, at start and on
/// each reload, so a heartbeat of the file can be pinged as soon as heal
/// answers for that config.
pub fn sync_heartbeats(conn: &Connection, config: &Config, now: i64) -> Result<()> {
    let defs: Vec<(String, String)> = config
        .heartbeats
        .values()
        .map(|h| (h.name.clone(), h.def.clone()))
        .collect();
    for line in store::sync_heartbeats(conn, &defs, now)? {
        log::info!("{line}");
    }
    Ok(())
}

/// The scheduler thread, with its probe pool.
pub fn scheduler(state: &Arc<State>, shutdown: &Shutdown) {
    let (tx, rx): (SyncSender<Probe>, Receiver<Probe>) = std::sync::mpsc::sync_channel(64);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        for _ in 0..PROBE_THREADS {
            s.spawn(|| probe_worker(state, &rx));
        }
        keep_time(state, shutdown, &tx);
        drop(tx);
    });
}

fn keep_time(state: &Arc<State>, shutdown: &Shutdown, probes: &SyncSender<Probe>) {
    let mut reader: Option<Connection> = None;
    let mut due = Due {
        config: None,
        probes: HashMap::new(),
        schedules: HashMap::new(),
    };
    let mut next_sweep = 0;
    // The first retention run comes a few minutes after start, then daily.
    let mut next_retention = now_ms() + 5 * 60_000;
    loop {
        if shutdown.is_triggered() {
            return;
        }
        let conn = match &reader {
            Some(c) => c,
            None => match store::open(&state.db_path) {
                Ok(c) => reader.insert(c),
                Err(e) => {
                    log::error!("scheduler: {e}");
                    if shutdown.wait(Duration::from_secs(1)) {
                        return;
                    }
                    continue;
                }
            },
        };
        let config = state.config();
        let now = now_ms();
        if due.config.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &config)) {
            due.refresh(state, &config, conn, now);
        }
        if now >= next_sweep {
            next_sweep = now + 1000;
            for (what, r) in [
                ("heartbeats", sweep_heartbeats(state, conn)),
                ("silent agents", expire_agents(state, conn)),
                ("agents", sweep_source(state, conn, "agent", agent_raises)),
                (
                    "breaker",
                    sweep_source(state, conn, "breaker", |c, _, n| breaker_raises(c, n)),
                ),
            ] {
                if let Err(e) = r {
                    log::error!("checking {what}: {e}");
                }
            }
        }
        for (name, at) in due.probes.iter_mut() {
            if *at > now {
                continue;
            }
            let p = &config.probes[name];
            *at = p.schedule.next_after(now).unwrap_or(i64::MAX);
            if !state.watch.start_probe(name) {
                log::warn!("probe {name}: still running from last time; this run is skipped");
                continue;
            }
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                probes.try_send(p.clone())
            {
                state.watch.end_probe(name);
                log::warn!("probe {name}: every probe thread is busy; this run is skipped");
            }
        }
        for (idx, s) in config.schedules.iter().enumerate() {
            let Some(at) = due.schedules.get_mut(&s.name) else {
                continue;
            };
            if *at > now {
                continue;
            }
            if now - *at > 60_000 {
                log::warn!(
                    "schedule {}: the run due at {} was missed and is skipped",
                    s.name,
                    crate::time::format_rfc3339(*at)
                );
            } else {
                fire_schedule(state, &config, idx, *at);
            }
            *at = s.schedule.next_after(now).unwrap_or(i64::MAX);
        }
        if now >= next_retention {
            next_retention = now + 86_400_000;
            retention(state, shutdown);
        }
        let next = due
            .probes
            .values()
            .chain(due.schedules.values())
            .copied()
            .chain([next_sweep])
            .min()
            .unwrap_or(next_sweep);
        let wait = (next - now_ms()).clamp(10, 1000);
        if shutdown.wait(Duration::from_millis(wait as u64)) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raise(subject: &str, renotify: Option<Duration>) -> Raise {
        let labels = BTreeMap::from([("heartbeat".to_string(), subject.to_string())]);
        Raise {
            kind: "heartbeat",
            subject: subject.into(),
            alert: internal("HeartbeatMissing", labels, BTreeMap::new(), 0),
            renotify,
        }
    }

    fn held(r: &Raise, sent_at: i64) -> Held {
        let row = row(r, sent_at);
        Held {
            kind: row.kind,
            subject: row.subject,
            fingerprint: row.fingerprint,
            sent_at,
        }
    }

    fn row(r: &Raise, sent_at: i64) -> InternalRow {
        InternalRow {
            fingerprint: r.alert.fingerprint.clone(),
            kind: r.kind.into(),
            subject: r.subject.clone(),
            alert: stored_alert(&r.alert),
            raised_at: 0,
            sent_at,
        }
    }

    #[test]
    fn differs_only_on_new_gone_changed_or_renotify_due() {
        let hour = Some(Duration::from_secs(3600));
        let a = raise("a", hour);
        let raised = vec![held(&a, 1_000)];
        let differs = |raised: &[Held], desired: &[Raise], now| {
            super::differs(
                raised,
                &desired.iter().map(Raise::want).collect::<Vec<_>>(),
                now,
            )
        };
        assert!(
            !differs(&raised, &[raise("a", hour)], 1_000 + 3_599_999),
            "raised, renotify not due"
        );
        assert!(
            differs(&raised, &[raise("a", hour)], 1_000 + 3_600_000),
            "renotify due"
        );
        assert!(
            !differs(&raised, &[raise("a", None)], i64::MAX / 2),
            "no renotify: raised once"
        );
        assert!(differs(&raised, &[], 0), "gone: resolve");
        assert!(differs(&[], &[raise("a", None)], 0), "new: raise");
        let mut changed = raise("a", None);
        changed.alert.fingerprint = "other".into();
        assert!(
            differs(&raised, &[changed], 0),
            "labels changed: resolve and raise"
        );
        let mut other_kind = raise("a", None);
        other_kind.kind = "runtime";
        assert!(
            differs(&raised, &[other_kind], 0),
            "same subject, other kind"
        );
    }

    #[test]
    fn stored_alert_round_trips_for_resolution() {
        let a = raise("a", None);
        let back = resolution(&row(&a, 5), 9).unwrap();
        assert_eq!(
            (back.fingerprint, back.labels, back.starts_at, back.ends_at),
            (a.alert.fingerprint, a.alert.labels, Some(0), Some(9))
        );
        assert_eq!(back.name, "HeartbeatMissing");
    }
}
