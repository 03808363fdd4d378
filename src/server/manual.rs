//! A runbook run by hand: a person asks for a runbook on one agent, with a
//! reason. It becomes an event like any other — an alert that stands for the
//! request (`ManualRun`), a recorded decision, the plan, ops queued — through
//! the same store functions as a rule's run, so it shows in events and
//! notifications as one. Its rule is `manual` and `decided_by` names who
//! asked.
//!
//! A pause that covers the runbook or the agent, an open breaker, or a run
//! of the same runbook on the same agent still going refuse the request
//! (409): a person resumes or resets first, on the record, rather than
//! running past them.

use std::collections::BTreeMap;

use crate::store::sql::Db;
use serde_json::json;

use super::lifecycle::Done;
use crate::alert::{self, Alert, Status};
use crate::config::{Action, Config, Mode};
use crate::error::{Error, Result};
use crate::rules::{self, Match};
use crate::store::{self, EventRow, NewEvent};

/// The rule name of runs by hand.
pub const RULE: &str = "manual";

/// The alert name that stands for a run by hand.
pub const ALERT: &str = "ManualRun";

/// What a person asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The runbook.
    pub runbook: String,
    /// The agent to run it on.
    pub target: String,
    /// Why (shown on the timeline and in notifications).
    pub reason: String,
    /// HEAL_PARAM_<NAME> values.
    pub params: BTreeMap<String, String>,
    /// Who asked (a token name, or "local").
    pub by: String,
    /// A random id that makes each request an alert of its own.
    pub nonce: String,
}

/// Decides and starts a run by hand inside one store job; the agents to wake
/// are in `Done::woke`.
pub fn run(conn: Db<'_>, config: &Config, req: &Request, now: i64) -> Result<(Done, EventRow)> {
    let runbook = config.runbooks.get(&req.runbook).ok_or_else(|| {
        Error::request(
            422,
            format!("no runbook {:?} in {}", req.runbook, config.path.display()),
        )
    })?;
    let alert = request_alert(req, now);
    let key = format!("{}@{}", req.runbook, req.target);
    refuse_if_held(conn, req, &key, &alert, now)?;
    store::record_alert(conn, &alert, now)?;
    let event_id = store::create_event(
        conn,
        &NewEvent {
            rule: RULE,
            runbook: &runbook.name,
            key: &key,
            fingerprint: &alert.fingerprint,
            state: "queued",
            mode: "live",
            started_at: Some(now),
            deadline: None,
        },
        now,
    )?;
    store::set_decided_by(conn, event_id, &req.by)?;
    let why = format!("run by hand by {}: {}", req.by, req.reason);
    store::add_timeline(conn, event_id, "decision", &format!("run: {why}"), now)?;
    store::record_decision(
        conn,
        &alert.fingerprint,
        Some(RULE),
        rules::Outcome::Run.as_str(),
        &why,
        Some(event_id),
        now,
    )?;
    let m = Match {
        // Not a rule of the config: `plan` reads only the name, targets and params.
        rule_idx: usize::MAX,
        rule: RULE.into(),
        action: Action::Run(runbook.name.clone()),
        key,
        targets: vec![req.target.clone()],
        target_tags: Vec::new(),
        params: req.params.clone(),
        mode: Mode::Live,
        error: None,
    };
    let mut plan = super::intake::plan(config, event_id, &m, runbook, &alert);
    if plan["verify"]["kind"] == "resolved_within" {
        // No alert will resolve: the steps' exit codes decide, as with no verify.
        plan["verify"] = json!({ "kind": "none" });
        store::add_timeline(
            conn,
            event_id,
            "note",
            "verify.resolved_within does not apply to a run by hand (no alert resolves it): the steps' exit codes decide",
            now,
        )?;
    }
    store::set_plan(conn, event_id, &plan)?;
    let queued = store::start_event(conn, event_id, now)?;
    // The alert stands for the request only: it ends at once, as a schedule's does.
    let resolved = Alert {
        status: Status::Resolved,
        ends_at: Some(now),
        ..alert
    };
    store::record_alert(conn, &resolved, now)?;
    let done = Done {
        woke: queued.into_iter().map(|q| q.agent).collect(),
        log: vec![(
            log::Level::Info,
            format!(
                "event {event_id}: runbook {} run by hand on {} by {}",
                runbook.name, req.target, req.by
            ),
        )],
    };
    let event = store::event_by_id(conn, event_id)?.expect("the event was created above");
    Ok((done, event))
}

/// The alert that stands for a request: its labels say what and who, its
/// `summary` why; the steps see them as HEAL_LABEL_* and HEAL_ANNOTATION_*.
fn request_alert(req: &Request, now: i64) -> Alert {
    let labels = BTreeMap::from([
        ("alertname".to_string(), ALERT.to_string()),
        ("runbook".to_string(), req.runbook.clone()),
        ("target".to_string(), req.target.clone()),
        ("requested_by".to_string(), req.by.clone()),
        ("request".to_string(), req.nonce.clone()),
    ]);
    let annotations = BTreeMap::from([(
        "summary".to_string(),
        format!(
            "{} asked to run {} on {}: {}",
            req.by, req.runbook, req.target, req.reason
        ),
    )]);
    Alert {
        fingerprint: alert::fingerprint(&labels),
        name: ALERT.into(),
        status: Status::Firing,
        labels,
        annotations,
        starts_at: Some(now),
        ends_at: None,
        source: "heal".into(),
    }
}

/// Refuses (409) a run that a pause covers, that the open breaker stops, or
/// whose runbook still runs on the agent.
fn refuse_if_held(conn: Db<'_>, req: &Request, key: &str, alert: &Alert, now: i64) -> Result<()> {
    let ctx = store::key_context(conn, RULE, key, "live", now, now)?;
    if let Some(open) = ctx["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["open"] == true)
    {
        return Err(Error::request(
            409,
            format!(
                "event {} still runs {} on {} ({}): wait for it, or cancel it first",
                open["id"],
                req.runbook,
                req.target,
                open["state"].as_str().unwrap_or("open")
            ),
        ));
    }
    let alert_doc = crate::config::doc(alert.doc());
    let targets = std::slice::from_ref(&req.target);
    for p in ctx["pauses"].as_array().into_iter().flatten() {
        if let Some(what) = rules::pause_covers(p, &req.runbook, targets, &alert_doc) {
            return Err(Error::request(
                409,
                format!(
                    "pause {} ({what}) covers this run: resume it first (heal resume {})",
                    p["id"], p["id"]
                ),
            ));
        }
    }
    if ctx["breaker"]["state"] == "open" {
        return Err(Error::request(
            409,
            format!(
                "the safety breaker is open ({}): reset it first (heal breaker reset)",
                ctx["breaker"]["reason"].as_str().unwrap_or("")
            ),
        ));
    }
    Ok(())
}
