//! Probes: the pool's worker that runs a due check, stores its result and
//! raises or resolves its alert, and forgetting removed probes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use crate::store::sql::Db;

use super::alerts::{internal, reconcile, submit, with_name, Raise};
use crate::config::{Config, Probe};
use crate::error::Result;
use crate::probe;
use crate::server::intake::Applied;
use crate::server::State;
use crate::store::{self};
use crate::time::now_ms;

/// A probe heal knows: where it is defined and its validated form.
pub struct Defined {
    /// "config" (runbooks.toml) or "api" (`PUT /api/v1/probes/NAME`).
    pub source: &'static str,
    /// The probe, or why its stored form no longer validates (an API probe).
    pub probe: std::result::Result<Probe, String>,
    /// An API probe's row.
    pub row: Option<store::ApiProbeRow>,
}

/// The probes heal runs, by name: the file's, and those registered through
/// the API that the file does not define.
pub fn defined_probes(conn: Db<'_>, config: &Config) -> Result<BTreeMap<String, Defined>> {
    let mut out: BTreeMap<String, Defined> = config
        .probes
        .iter()
        .map(|(name, p)| {
            let d = Defined {
                source: "config",
                probe: Ok(p.clone()),
                row: None,
            };
            (name.clone(), d)
        })
        .collect();
    for row in store::api_probes(conn)? {
        if out.contains_key(&row.name) {
            continue;
        }
        let probe = serde_json::from_str(&row.def)
            .map_err(|e| e.to_string())
            .and_then(|v| crate::config::api_probe(&v));
        let d = Defined {
            source: "api",
            probe,
            row: Some(row),
        };
        out.insert(
            d.row.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
            d,
        );
    }
    Ok(out)
}

/// Resolves the alert of a probe deleted or muted through the API (a store job).
pub fn resolve_probe(
    conn: Db<'_>,
    config: &Config,
    state: &State,
    name: &str,
    now: i64,
) -> Result<Applied> {
    // With the alerts it raised on agents, if it runs there.
    let scope: BTreeSet<String> = store::internal_alerts(conn, "probe")?
        .into_iter()
        .map(|r| r.subject)
        .filter(|s| store::subject_probe(s) == name)
        .collect();
    reconcile(conn, config, state, "probe", Vec::new(), Some(&scope), now)
}

/// The `ProbeFailing` of a down probe, on `agent` for an agent-side one.
/// Its `severity` label is left out of the fingerprint, so a change of
/// severity is the same alert, raised again with the new label
/// (`reconcile`), not a new one.
fn probe_raise(
    p: &Probe,
    agent: Option<&str>,
    outcome: &probe::Outcome,
    severity: probe::Level,
    now: i64,
) -> Raise {
    let mut labels = p.labels.clone();
    labels.insert("probe".into(), p.name.clone());
    if let Some(agent) = agent {
        labels.insert("agent".into(), agent.to_string());
    }
    let on = agent.map(|a| format!(" on agent {a}")).unwrap_or_default();
    labels.insert("probe_type".into(), p.kind().into());
    for (k, v) in [("team", &p.team), ("priority", &p.priority)] {
        if let Some(v) = v {
            labels.insert(k.into(), v.clone());
        }
    }
    if !p.tags.is_empty() {
        labels.insert("tags".into(), p.tags.join(","));
    }
    // A probe's own severity label (config refuses one beside a warn
    // threshold) stays, and is in the fingerprint as it always was.
    let fingerprint = crate::alert::fingerprint(&with_name("ProbeFailing", labels.clone()));
    labels
        .entry("severity".into())
        .or_insert_with(|| severity.as_str().into());
    let mut notes = BTreeMap::from([
        (
            "summary".to_string(),
            format!("probe {}{on} is failing: {}", p.name, outcome.detail),
        ),
        (
            "description".to_string(),
            match p.fail_after {
                1 => format!("{}{on} failed; last: {}", p.name, outcome.detail),
                n => format!(
                    "{}{on} failed {n} times in a row; last: {}",
                    p.name, outcome.detail
                ),
            },
        ),
    ]);
    if !p.description.is_empty() {
        notes.insert("probe_description".into(), p.description.clone());
    }
    if !p.notify.is_empty() {
        // Its resolve is built from the raised alert, so it goes where this went.
        notes.insert("notify".into(), p.notify.join(","));
    }
    let mut alert = internal("ProbeFailing", labels, notes, now);
    alert.fingerprint = fingerprint;
    Raise {
        kind: "probe",
        subject: match agent {
            Some(a) => store::check_subject(&p.name, a),
            None => p.name.clone(),
        },
        alert,
        renotify: None,
    }
}

/// Records one run of a probe, on `agent` for an agent-side one (as the
/// probe `PROBE@AGENT`): counts it, and raises or resolves its
/// `ProbeFailing` (a store job's part).
pub(super) fn record_outcome(
    conn: Db<'_>,
    config: &Config,
    state: &State,
    p: &Probe,
    agent: Option<&str>,
    outcome: &probe::Outcome,
    now: i64,
) -> Result<Applied> {
    let subject = match agent {
        Some(a) => store::check_subject(&p.name, a),
        None => p.name.clone(),
    };
    let row = store::probe(conn, &subject)?;
    let prev = row.as_ref().map(|r| r.counts()).unwrap_or_default();
    let (counts, change) = probe::step(prev, outcome.ok, p.fail_after, p.recover_after);
    let before = row
        .and_then(|r| r.severity)
        .and_then(|s| probe::Level::parse(&s));
    let severity = probe::severity(counts.state, outcome.level(), before);
    store::record_probe_result(conn, &subject, outcome, counts, severity, now)?;
    let muted = store::probe_mute(conn, &p.name)?.is_some();
    let desired = match severity {
        Some(severity) if !muted => vec![probe_raise(p, agent, outcome, severity, now)],
        _ => Vec::new(),
    };
    let scope = BTreeSet::from([subject.clone()]);
    let mut applied = reconcile(conn, config, state, "probe", desired, Some(&scope), now)?;
    if let Some(change) = change {
        applied.log.push((
            log::Level::Info,
            format!("probe {subject}: {change:?} ({})", outcome.detail),
        ));
    }
    Ok(applied)
}

/// Runs due probes handed over by the scheduler and records their results.
pub(super) fn probe_worker(state: &Arc<State>, jobs: &Mutex<Receiver<Probe>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(p) = job else { return };
        let outcome = probe::run(&p.check, p.timeout);
        let (config, st2, name) = (state.config(), state.clone(), p.name.clone());
        let recorded = submit(state, &format!("probe {name}"), move |conn| {
            if !config.probes.contains_key(&p.name) && store::api_probe(conn, &p.name)?.is_none() {
                // Deleted while it ran: its result would bring it back.
                return Ok(Applied::default());
            }
            record_outcome(conn, &config, &st2, &p, None, &outcome, now_ms())
        });
        if recorded {
            state.metrics.observe_probe_run(false);
        }
        state.watch.end_probe(&name);
    }
}

/// Resolves the alerts of probes no longer defined (`names` are those that
/// are, `on_agents` those of them that run on agents) and forgets the
/// agent-side runs of those no longer run on agents.
pub(super) fn forget_removed_probes(
    state: &Arc<State>,
    config: &Arc<Config>,
    names: BTreeSet<String>,
    on_agents: BTreeSet<String>,
) {
    let (config, st2) = (config.clone(), state.clone());
    submit(state, "removed probes", move |conn| {
        let now = now_ms();
        // A pair `PROBE@AGENT` goes with its probe; `checks` forgets the
        // pairs of agents that no longer match.
        let gone: BTreeSet<String> = store::internal_alerts(conn, "probe")?
            .into_iter()
            .map(|r| r.subject)
            .filter(|s| !names.contains(store::subject_probe(s)))
            .collect();
        let mut applied = super::checks::forget_undefined(conn, &config, &st2, &on_agents, now)?;
        if !gone.is_empty() {
            applied.merge(reconcile(
                conn,
                &config,
                &st2,
                "probe",
                Vec::new(),
                Some(&gone),
                now,
            )?);
        }
        Ok(applied)
    });
}
