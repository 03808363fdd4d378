//! The sweeps of every tick: heartbeats (late, down, running too long),
//! agents gone silent or to forget, and the breaker.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::sql::Db;

use super::alerts::{differs, internal, reconcile, submit, with_name, Raise, Want};
use crate::alert::{self};
use crate::config::{self, Config, Heartbeat};
use crate::error::Result;
use crate::heartbeat;
use crate::server::intake::Applied;
use crate::server::State;
use crate::store::{self, Held};
use crate::time::{format_duration, format_rfc3339, now_ms};

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
pub(super) struct Defs(HashMap<String, (String, std::result::Result<Arc<Known>, String>)>);

impl Defs {
    pub(super) fn get(&mut self, name: &str, def: &str) -> std::result::Result<Arc<Known>, String> {
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
pub(super) fn sweep_heartbeats(state: &Arc<State>, reader: Db<'_>) -> Result<()> {
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

pub(super) fn agent_raises(conn: Db<'_>, config: &Config, now: i64) -> Result<Vec<Raise>> {
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
pub fn agents_forgotten(conn: Db<'_>, config: &Config, state: &State, now: i64) -> Result<Applied> {
    let desired = agent_raises(conn, config, now)?;
    reconcile(conn, config, state, "agent", desired, None, now)
}

/// Forgets agents silent for longer than `[server] forget_agents_after` (if
/// set) that have no op still to end; found on the reader, forgotten only
/// if there are any.
pub(super) fn expire_agents(state: &Arc<State>, reader: Db<'_>) -> Result<()> {
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

/// Ends the mutes whose time has come (found on the reader, ended in the
/// store only if there are any), each audited as heal's own unmute. A mute
/// that ended while heal was stopped ends at the first sweep after start.
pub(super) fn end_mutes(state: &Arc<State>, reader: Db<'_>) -> Result<()> {
    if store::ended_mutes(reader, now_ms())?.is_empty() {
        return Ok(());
    }
    submit(state, "ending mutes", move |conn| {
        let now = now_ms();
        let mut applied = Applied::default();
        for (what, name, until) in store::ended_mutes(conn, now)? {
            if !store::end_mute(conn, what, &name, now)? {
                continue;
            }
            let what = what.as_str();
            let why = format!("the mute ended at {}", format_rfc3339(until));
            store::record_audit(
                conn,
                &store::NewAudit {
                    actor: "heal",
                    action: if what == "heartbeat" {
                        "heartbeat.unmuted"
                    } else {
                        "probe.unmuted"
                    },
                    target: &format!("/api/v1/{what}s/{name}/unmute"),
                    detail: &why,
                    remote: None,
                },
                now,
            )?;
            applied
                .log
                .push((log::Level::Info, format!("{what} {name} unmuted: {why}")));
        }
        Ok(applied)
    });
    Ok(())
}

pub(super) fn breaker_raises(conn: Db<'_>, now: i64) -> Result<Vec<Raise>> {
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

type RaisesFn = fn(Db<'_>, &Config, i64) -> Result<Vec<Raise>>;

/// Sweeps one cheap source: compared on the reader, reconciled in the store only on a difference.
pub(super) fn sweep_source(
    state: &Arc<State>,
    reader: Db<'_>,
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
