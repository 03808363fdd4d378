//! Probes: the pool's worker that runs a due check, stores its result and
//! raises or resolves its alert, and forgetting removed probes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use super::alerts::{internal, reconcile, submit, Raise};
use crate::config::{Config, Probe};
use crate::probe;
use crate::server::intake::Applied;
use crate::server::State;
use crate::store::{self};
use crate::time::now_ms;

fn probe_raise(p: &Probe, outcome: &probe::Outcome, now: i64) -> Raise {
    let mut labels = p.labels.clone();
    labels.insert("probe".into(), p.name.clone());
    labels.insert("probe_type".into(), p.kind().into());
    for (k, v) in [("team", &p.team), ("priority", &p.priority)] {
        if let Some(v) = v {
            labels.insert(k.into(), v.clone());
        }
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
pub(super) fn probe_worker(state: &Arc<State>, jobs: &Mutex<Receiver<Probe>>) {
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
pub(super) fn forget_removed_probes(state: &Arc<State>, config: &Arc<Config>) {
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
