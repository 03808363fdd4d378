//! Internal alerts: what should be firing (`Raise`), and `reconcile`, which
//! raises, re-raises and resolves only the differences from what is raised.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::store::sql::Db;
use serde_json::{json, Value};

use crate::alert::{self, Alert, Status};
use crate::config::Config;
use crate::error::Result;
use crate::server::intake::{self, Applied};
use crate::server::State;
use crate::store::{self, Held, InternalRow};

/// An internal alert that should be firing.
pub(super) struct Raise {
    pub(super) kind: &'static str,
    pub(super) subject: String,
    pub(super) alert: Alert,
    pub(super) renotify: Option<Duration>,
}

/// An internal alert's labels: its own plus `alertname`.
pub(super) fn with_name(
    name: &str,
    mut labels: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    labels.insert("alertname".into(), name.into());
    labels
}

pub(super) fn internal(
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
pub(super) fn reconcile(
    conn: Db<'_>,
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
    // Each with the severity it had before, when that changed.
    let mut notices: Vec<(String, Alert, Option<String>)> = Vec::new();
    for d in desired {
        let mut alert = d.alert;
        let mut was = None;
        match raised.remove(&d.subject) {
            Some(row) if row.fingerprint == alert.fingerprint => {
                let due = d
                    .renotify
                    .is_some_and(|r| now - row.sent_at >= r.as_millis() as i64);
                was = severity_change(&row, &alert);
                if !due && was.is_none() {
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
        notices.push((d.subject, alert.clone(), was));
        send.push(alert);
    }
    for row in raised.into_values() {
        if let Some(alert) = resolution(&row, now) {
            notices.push((row.subject.clone(), alert.clone(), None));
            send.push(alert);
        }
        store::delete_internal_alert(conn, &row.fingerprint)?;
    }
    if send.is_empty() {
        return Ok(Applied::default());
    }
    for (subject, alert, was) in &notices {
        let firing = alert.status == Status::Firing;
        if let Some(notice) = crate::notify::internal_kind(kind, firing) {
            let mut parts = crate::notify::internal_parts(kind, alert);
            if let Some(was) = was {
                // Told again, as probe.down with the new severity: a route
                // for critical ones hears of an escalation, one for warnings
                // of a de-escalation.
                parts[kind]["previous_severity"] = was.as_str().into();
            }
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

/// The severity a raised alert had, when `alert` (the same one) has another.
/// A stored alert without one was raised before heal had severities: critical.
fn severity_change(row: &InternalRow, alert: &Alert) -> Option<String> {
    let now = alert.labels.get("severity")?;
    let was = row.alert["labels"]["severity"]
        .as_str()
        .unwrap_or("critical");
    (was != now).then(|| was.to_string())
}

/// Whether `reconcile` would do anything (read on a reader connection, so an
/// idle sweep costs no write).
pub(super) fn differs(raised: &[Held], desired: &[Want], now: i64) -> bool {
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
pub(super) struct Want<'a> {
    pub(super) kind: &'a str,
    pub(super) subject: &'a str,
    pub(super) fingerprint: &'a str,
    pub(super) renotify: Option<Duration>,
}

impl Raise {
    pub(super) fn want(&self) -> Want<'_> {
        Want {
            kind: self.kind,
            subject: &self.subject,
            fingerprint: &self.alert.fingerprint,
            renotify: self.renotify,
        }
    }
}

/// Runs a store job that applies internal alerts, then hands out ops and
/// logs; false (logged) when it failed. Only the leader's commit
/// (`Leadership::fence`).
pub(super) fn submit(
    state: &Arc<State>,
    what: &str,
    f: impl FnOnce(Db<'_>) -> Result<Applied> + Send + 'static,
) -> bool {
    let leadership = state.leadership.clone();
    let fenced = move |conn: Db<'_>| {
        leadership.fence(conn)?;
        f(conn)
    };
    match state.writer.write(fenced) {
        Ok(applied) => {
            intake::finish(applied, state, crate::server::metrics::INTERNAL);
            true
        }
        Err(e) => {
            log::error!("{what}: {e}");
            false
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
