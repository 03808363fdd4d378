//! `Alert` + `Config` (+ facts about the key) → `Decision`, with a trace of
//! every rule tried. Pure: no I/O. The server and `heal run-rule` call the
//! same functions, so the offline trace is the decision the server makes.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::alert::{Alert, Status};
use crate::config::{Action, Config, Mode, Rule, Safety, Target};
use crate::exec::{env_name, same_env_name, truncate};
use crate::time::format_duration;

/// Longest value of one HEAL_* variable; the full alert is in HEAL_ALERT_JSON.
/// Linux refuses a single environment string over 128 KiB.
pub const MAX_ENV_VALUE: usize = 32 * 1024;

/// One rule tried against an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// Rule name.
    pub rule: String,
    /// Whether `when` held.
    pub matched: bool,
    /// Why: the expression and its outcome, or the evaluation error.
    pub note: String,
}

/// A rule that matched, with everything the alert made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Index into `Config::rules`.
    pub rule_idx: usize,
    /// Rule name.
    pub rule: String,
    /// Run or discard.
    pub action: Action,
    /// What counts as the same problem.
    pub key: String,
    /// Agent ids (empty with a tag target until the server resolves tags).
    pub targets: Vec<String>,
    /// Tags of a `{ tags = [...] }` target.
    pub target_tags: Vec<String>,
    /// Parameter values by name.
    pub params: BTreeMap<String, String>,
    /// Live or dry-run.
    pub mode: Mode,
    /// A problem that prevents running (e.g. the target gave nothing).
    pub error: Option<String>,
}

/// All rules tried, and the ones that decided.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Every rule tried, in order.
    pub tried: Vec<Tried>,
    /// The matching rules that decide (one, or more with `continue = true`).
    pub matches: Vec<Match>,
}

/// Tries every rule in file order; the first match decides unless it says `continue = true`.
pub fn evaluate(config: &Config, alert: &Alert) -> Evaluation {
    let doc = crate::config::doc(alert.doc());
    let mut eval = Evaluation::default();
    for (idx, rule) in config.rules.iter().enumerate() {
        if rule.schedule {
            continue;
        }
        let (matched, note) = match &rule.when {
            None => (true, "no `when`: matches every alert".to_string()),
            Some(when) => match when.truthy(&doc) {
                Ok(m) => (m, format!("when `{}` is {m}", when.source)),
                Err(e) => (false, format!("when failed: {e}; rule skipped")),
            },
        };
        eval.tried.push(Tried {
            rule: rule.name.clone(),
            matched,
            note,
        });
        if !matched {
            continue;
        }
        eval.matches.push(apply_rule(idx, rule, alert, &doc));
        if !rule.cont {
            break;
        }
    }
    eval
}

/// The decision input for a `[[schedule]]` that fired: its own rule, matched
/// against the alert that stands for this run.
pub fn evaluate_schedule(config: &Config, rule_idx: usize, alert: &Alert) -> Evaluation {
    let rule = &config.rules[rule_idx];
    let doc = crate::config::doc(alert.doc());
    Evaluation {
        tried: vec![Tried {
            rule: rule.name.clone(),
            matched: true,
            note: "the schedule fired".into(),
        }],
        matches: vec![apply_rule(rule_idx, rule, alert, &doc)],
    }
}

fn apply_rule(rule_idx: usize, rule: &Rule, alert: &Alert, doc: &jmespath::Rcvar) -> Match {
    let mut m = Match {
        rule_idx,
        rule: rule.name.clone(),
        action: rule.action.clone(),
        key: alert.fingerprint.clone(),
        targets: Vec::new(),
        target_tags: Vec::new(),
        params: BTreeMap::new(),
        mode: rule.mode,
        error: None,
    };
    if let Some(key) = &rule.key {
        match key.eval(doc) {
            Ok(Value::String(s)) => m.key = s,
            Ok(Value::Null) => m.error = Some(format!("key `{}` gave null", key.source)),
            Ok(v) => m.key = v.to_string(),
            Err(e) => m.error = Some(format!("key failed: {e}")),
        }
    }
    match &rule.target {
        None => {}
        Some(Target::Tags(tags)) => m.target_tags = tags.clone(),
        Some(Target::Expr(e)) => match e.eval(doc).map(|v| target_ids(&v)) {
            Ok(Ok(ids)) => m.targets = ids,
            Ok(Err(why)) => m.error = Some(format!("target `{}` {why}", e.source)),
            Err(e) => m.error = Some(format!("target failed: {e}")),
        },
    }
    for (name, e) in &rule.params {
        let value = match e.eval(doc) {
            Ok(Value::String(s)) => s,
            Ok(Value::Null) => String::new(),
            Ok(v) => v.to_string(),
            Err(err) => {
                m.error
                    .get_or_insert(format!("params.{name} failed: {err}"));
                continue;
            }
        };
        m.params.insert(name.clone(), value);
    }
    if matches!(rule.action, Action::Run(_)) {
        if let Some(why) = env_collision(alert) {
            m.error.get_or_insert(why);
        }
    }
    m
}

/// Two label (or annotation) names that become one variable of the step's
/// environment (`mount_point` and `mount~point` are both
/// `HEAL_LABEL_MOUNT_POINT`): the step would get one value while the rule
/// may have checked the other, so the run is refused with both names.
/// Refused here, at the decision, rather than at intake: a 4xx would make
/// Alertmanager drop the whole batch, the other alerts with it.
pub fn env_collision(alert: &Alert) -> Option<String> {
    let maps = [
        ("labels", "HEAL_LABEL_", &alert.labels),
        ("annotations", "HEAL_ANNOTATION_", &alert.annotations),
    ];
    maps.into_iter().find_map(|(what, prefix, map)| {
        let (a, b, var) = same_env_name(map.keys())?;
        Some(format!(
            "{what} {:?} and {:?} both become {prefix}{var} in the step's environment, so the step could get the wrong value (rename one of them where the alert comes from)",
            truncate(a, 64),
            truncate(b, 64)
        ))
    })
}

/// Agent ids from a target expression's value: a string or a list of strings.
pub fn target_ids(v: &Value) -> Result<Vec<String>, String> {
    let ids: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("gave a list with a non-string ({i})"))
            })
            .collect::<Result<_, _>>()?,
        Value::Null => {
            return Err(
                "gave null: the alert has no such label, so there is no agent to run on".into(),
            )
        }
        other => return Err(format!("gave {other}, not an agent id")),
    };
    if ids.is_empty() {
        return Err("gave an empty list: no agent to run on".into());
    }
    for id in &ids {
        check_agent_id(id).map_err(|e| format!("gave {e}"))?;
    }
    let mut ids = ids;
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Agent ids follow `config::NAME_RULE`, with ':' also allowed (`host:9100`).
pub fn check_agent_id(id: &str) -> Result<(), String> {
    if !crate::config::follows_name_rule(id, ":") {
        return Err(format!(
            "agent id {:?}: {} (':' allowed too)",
            truncate(id, 64),
            crate::config::NAME_RULE
        ));
    }
    Ok(())
}

/// What heal does with one firing alert for one matching rule: the rows of
/// the decision table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new event, ops queued.
    Run,
    /// Joins the open event of the key.
    Collapse,
    /// The key's last run ended less than `cooldown` ago.
    Cooldown,
    /// The `unless` guard holds: the event waits for it to clear.
    Defer,
    /// The attempt budget is spent: people are told, nothing runs.
    Escalate,
    /// The event waits for a person.
    AwaitApproval,
    /// A pause covers it.
    Paused,
    /// Recorded what would happen; nothing runs.
    DryRun,
    /// The safety breaker is open.
    Breaker,
    /// Dropped: a discard rule, no rule, or nothing to run on.
    Discard,
}

impl Outcome {
    /// Every outcome, in the order of the decision table.
    pub const ALL: [Outcome; 10] = [
        Outcome::Run,
        Outcome::Collapse,
        Outcome::Cooldown,
        Outcome::Defer,
        Outcome::Escalate,
        Outcome::AwaitApproval,
        Outcome::Paused,
        Outcome::DryRun,
        Outcome::Breaker,
        Outcome::Discard,
    ];

    /// The name used in the API, the store and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Run => "run",
            Outcome::Collapse => "collapse",
            Outcome::Cooldown => "cooldown",
            Outcome::Defer => "defer",
            Outcome::Escalate => "escalate",
            Outcome::AwaitApproval => "await-approval",
            Outcome::Paused => "paused",
            Outcome::DryRun => "dry-run",
            Outcome::Breaker => "breaker",
            Outcome::Discard => "discard",
        }
    }
}

/// An event as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFact {
    /// Event id.
    pub id: i64,
    /// Its state.
    pub state: String,
    /// When it ran (attempts) or ended (the last run).
    pub at: i64,
    /// Why it ended as it did, if it has.
    pub reason: Option<String>,
}

/// A pause covering the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseFact {
    /// Pause id.
    pub id: i64,
    /// What it covers, in words.
    pub what: String,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub by: String,
    /// When it ends (ms).
    pub until: i64,
}

/// The global safety breaker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakerFact {
    /// Whether it is open.
    pub open: bool,
    /// Why it opened (or closed).
    pub reason: String,
    /// Runs in the last hour (since the breaker last closed).
    pub runs_last_hour: u32,
    /// Failed events in a row (since the breaker last closed).
    pub failed_in_row: u32,
}

/// What is known about a rule's key when it decides. Built from a context
/// document by `facts`, by the server and by `heal run-rule` alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFacts {
    /// The open event of the rule and key (it holds the key).
    pub open_event: Option<EventFact>,
    /// The key's last ended event that ran, with `at` = when it ended.
    pub last_run: Option<EventFact>,
    /// The key's runs within the rule's `within`, oldest first, `at` = when each ran.
    pub attempts: Vec<EventFact>,
    /// A pause covering this decision.
    pub pause: Option<PauseFact>,
    /// The breaker.
    pub breaker: BreakerFact,
    /// Now (ms).
    pub now: i64,
}

/// A decision with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The outcome.
    pub outcome: Outcome,
    /// Why, in words for the timeline.
    pub reason: String,
    /// The existing event it concerns (collapse: the open one; cooldown: the last run).
    pub event: Option<i64>,
    /// The breaker must open now, for this reason.
    pub trip: Option<String>,
    /// In dry-run mode: what live mode would have done.
    pub live: Option<Outcome>,
}

fn decision(outcome: Outcome, reason: String) -> Decision {
    Decision {
        outcome,
        reason,
        event: None,
        trip: None,
        live: None,
    }
}

/// Decides what one match means for a firing alert, given what is known of
/// its key. The rows are tried in this order: discard, collapse, cooldown,
/// paused, breaker, escalate, defer, (dry-run), await-approval, run. `guard`
/// evaluates the rule's `unless` over the context document; it is called
/// only when the decision gets that far.
pub fn decide(
    m: &Match,
    rule: &Rule,
    safety: &Safety,
    facts: &KeyFacts,
    guard: &mut dyn FnMut() -> std::result::Result<bool, String>,
) -> Decision {
    let live = decide_live(m, rule, safety, facts, guard);
    if m.mode != Mode::DryRun {
        return live;
    }
    match live.outcome {
        Outcome::Run | Outcome::Defer | Outcome::AwaitApproval | Outcome::Escalate => Decision {
            outcome: Outcome::DryRun,
            reason: format!(
                "rule {:?} is in dry-run mode; live, heal would {}: {}; nothing ran",
                m.rule,
                live.outcome.as_str(),
                live.reason
            ),
            event: live.event,
            trip: None,
            live: Some(live.outcome),
        },
        _ => live,
    }
}

fn decide_live(
    m: &Match,
    rule: &Rule,
    safety: &Safety,
    facts: &KeyFacts,
    guard: &mut dyn FnMut() -> std::result::Result<bool, String>,
) -> Decision {
    let dry = m.mode == Mode::DryRun;
    if m.action == Action::Discard {
        return decision(Outcome::Discard, format!("rule {:?} says discard", m.rule));
    }
    if let Some(error) = &m.error {
        return decision(
            Outcome::Discard,
            format!("rule {:?} matched but cannot run: {error}", m.rule),
        );
    }
    if m.targets.is_empty() {
        return decision(
            Outcome::Discard,
            format!(
                "rule {:?} matched but no agent carries tags {:?}",
                m.rule, m.target_tags
            ),
        );
    }
    if m.targets.len() > rule.max_targets as usize {
        return decision(
            Outcome::Discard,
            format!(
                "rule {:?} would fan out to {} agents, more than max_targets = {}: nothing runs (raise max_targets on the rule or in [safety] if this is intended)",
                m.rule,
                m.targets.len(),
                rule.max_targets
            ),
        );
    }
    if let Some(open) = &facts.open_event {
        let mut d = decision(
            Outcome::Collapse,
            format!(
                "event {} for key {:?} is {}: the alert joins it, nothing new runs",
                open.id, m.key, open.state
            ),
        );
        d.event = Some(open.id);
        return d;
    }
    if let Some(last) = &facts.last_run {
        let settle_until = last.at.saturating_add(rule.cooldown.as_millis() as i64);
        if facts.now < settle_until {
            let mut d = decision(
                Outcome::Cooldown,
                format!(
                    "event {} for key {:?} ended {} {} ago; cooldown {}: nothing runs for {} more",
                    last.id,
                    m.key,
                    last.state,
                    ms(facts.now.saturating_sub(last.at)),
                    format_duration(rule.cooldown),
                    ms(settle_until.saturating_sub(facts.now))
                ),
            );
            d.event = Some(last.id);
            return d;
        }
    }
    if let Some(p) = &facts.pause {
        return decision(
            Outcome::Paused,
            format!(
                "pause {} ({}) by {} until {}: {:?}; nothing runs (heal resume {} ends it)",
                p.id,
                p.what,
                p.by,
                crate::time::format_rfc3339(p.until),
                p.reason,
                p.id
            ),
        );
    }
    if !dry {
        let b = &facts.breaker;
        if b.open {
            return decision(
                Outcome::Breaker,
                format!(
                    "the safety breaker is open ({}): all automation is stopped until `heal breaker reset`",
                    b.reason
                ),
            );
        }
        if b.failed_in_row >= safety.max_failed_in_row {
            let why = format!(
                "{} failed events in a row, [safety] max_failed_in_row = {}",
                b.failed_in_row, safety.max_failed_in_row
            );
            let mut d = decision(
                Outcome::Breaker,
                format!("the safety breaker opens: {why}; all automation stops until `heal breaker reset`"),
            );
            d.trip = Some(why);
            return d;
        }
    }
    if let Some(max) = rule.max_attempts {
        if facts.attempts.len() >= max as usize {
            let history: Vec<String> = facts
                .attempts
                .iter()
                .map(|a| {
                    let why = a
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    format!("event {} {}{why}", a.id, a.state)
                })
                .collect();
            return decision(
                Outcome::Escalate,
                format!(
                    "{} attempts for key {:?} within {} (max_attempts = {max}): {}; people must take over, nothing runs",
                    facts.attempts.len(),
                    m.key,
                    format_duration(rule.within),
                    history.join("; ")
                ),
            );
        }
    }
    if let Some(unless) = &rule.unless {
        match guard() {
            Ok(false) => {}
            Ok(true) => {
                return decision(
                    Outcome::Defer,
                    format!(
                    "guard `unless = {}` holds: the event waits, re-checked while the alert fires",
                    unless.source
                ),
                )
            }
            Err(e) => {
                return decision(
                    Outcome::Defer,
                    format!(
                        "guard `unless = {}` failed ({e}); treated as holding: the event waits",
                        unless.source
                    ),
                )
            }
        }
    }
    if !dry && facts.breaker.runs_last_hour >= safety.max_runs_per_hour {
        let why = format!(
            "this would be run {} within an hour, [safety] max_runs_per_hour = {}",
            facts.breaker.runs_last_hour + 1,
            safety.max_runs_per_hour
        );
        let mut d = decision(
            Outcome::Breaker,
            format!(
                "the safety breaker opens: {why}; all automation stops until `heal breaker reset`"
            ),
        );
        d.trip = Some(why);
        return d;
    }
    if rule.approve {
        return decision(
            Outcome::AwaitApproval,
            format!(
                "rule {:?} needs approval: runs on {} once a person approves (heal approve ID), never after {}",
                m.rule,
                m.targets.join(", "),
                format_duration(rule.approve_timeout)
            ),
        );
    }
    let attempt = match rule.max_attempts {
        Some(max) => format!(
            " (attempt {} of {max} within {})",
            facts.attempts.len() + 1,
            format_duration(rule.within)
        ),
        None => String::new(),
    };
    decision(
        Outcome::Run,
        format!(
            "rule {:?} matched; no open event for key {:?}: run {} on {}{attempt}",
            m.rule,
            m.key,
            match &m.action {
                Action::Run(rb) => rb.as_str(),
                Action::Discard => "",
            },
            m.targets.join(", ")
        ),
    )
}

fn ms(d: i64) -> String {
    format_duration(std::time::Duration::from_millis(d.max(0) as u64))
}

/// The decision when no rule matched.
pub fn unmatched() -> Decision {
    decision(Outcome::Discard, "no rule matched".into())
}

/// What is known about a match's key, read from a context document (the
/// shape of `GET /api/v1/context`): events of the rule and key in the rule's
/// mode, pauses that cover the match, and the breaker.
pub fn facts(
    ctx: &Value,
    rule: &Rule,
    m: &Match,
    alert_doc: &jmespath::Rcvar,
    now: i64,
) -> KeyFacts {
    let mode = match m.mode {
        Mode::Live => "live",
        Mode::DryRun => "dry-run",
    };
    let i = |v: &Value, k: &str| v.get(k).and_then(Value::as_i64);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let fact = |e: &Value, at: i64| EventFact {
        id: i(e, "id").unwrap_or(0),
        state: s(e, "state").unwrap_or_default(),
        at,
        reason: s(e, "reason"),
    };
    let mut facts = KeyFacts {
        now,
        ..KeyFacts::default()
    };
    let since = now.saturating_sub(rule.within.as_millis() as i64);
    let mut events: Vec<&Value> = ctx
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| {
            e.get("rule").and_then(Value::as_str) == Some(&m.rule)
                && e.get("key").and_then(Value::as_str) == Some(&m.key)
                && e.get("mode").and_then(Value::as_str) == Some(mode)
        })
        .collect();
    events.sort_by_key(|e| i(e, "id"));
    for e in &events {
        let ended = i(e, "ended_at");
        let started = i(e, "started_at");
        if ended.is_none() {
            facts.open_event = Some(fact(e, i(e, "created_at").unwrap_or(now)));
        }
        if let (Some(end), Some(_)) = (ended, started) {
            if facts.last_run.as_ref().is_none_or(|l| end >= l.at) {
                facts.last_run = Some(fact(e, end));
            }
        }
        if let Some(start) = started.filter(|&t| t >= since) {
            facts.attempts.push(fact(e, start));
        }
    }
    facts.attempts.sort_by_key(|a| a.at);
    let runbook = match &m.action {
        Action::Run(rb) => rb.as_str(),
        Action::Discard => "",
    };
    for p in ctx
        .get("pauses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if i(p, "until").is_some_and(|u| u <= now) {
            continue;
        }
        if let Some(what) = pause_covers(p, runbook, &m.targets, alert_doc) {
            facts.pause = Some(PauseFact {
                id: i(p, "id").unwrap_or(0),
                what,
                reason: s(p, "reason").unwrap_or_default(),
                by: s(p, "created_by").unwrap_or_default(),
                until: i(p, "until").unwrap_or(now),
            });
            break;
        }
    }
    let b = ctx.get("breaker").cloned().unwrap_or(Value::Null);
    facts.breaker = BreakerFact {
        open: b.get("state").and_then(Value::as_str) == Some("open"),
        reason: s(&b, "reason").unwrap_or_default(),
        runs_last_hour: i(&b, "runs_last_hour").unwrap_or(0) as u32,
        failed_in_row: i(&b, "failed_in_row").unwrap_or(0) as u32,
    };
    facts
}

/// Whether a pause (as in the context document) covers a runbook on some
/// targets for an alert; says what it covers if so. Every selector it has
/// must match; a pause with none covers everything.
pub fn pause_covers(
    pause: &Value,
    runbook: &str,
    targets: &[String],
    alert_doc: &jmespath::Rcvar,
) -> Option<String> {
    let mut what = Vec::new();
    if let Some(rb) = pause.get("runbook").and_then(Value::as_str) {
        if rb != runbook {
            return None;
        }
        what.push(format!("runbook {rb}"));
    }
    if let Some(t) = pause.get("target").and_then(Value::as_str) {
        if !targets.iter().any(|x| x == t) {
            return None;
        }
        what.push(format!("agent {t}"));
    }
    if let Some(expr) = pause.get("match").and_then(Value::as_str) {
        // An expression that no longer compiles covers everything: a pause errs on the safe side.
        let holds = crate::config::Expr::compile(expr)
            .and_then(|e| e.truthy(alert_doc))
            .unwrap_or(true);
        if !holds {
            return None;
        }
        what.push(format!("alerts matching `{expr}`"));
    }
    if what.is_empty() {
        what.push("all automation".into());
    }
    Some(what.join(", "))
}

/// The document an `unless` guard sees: the alert's fields next to the
/// context (`alerts`, `events`, `heartbeats`, `probes`, `agents`).
pub fn guard_doc(alert: &Alert, ctx: &Value) -> jmespath::Rcvar {
    let mut doc = alert.doc();
    if let (Some(d), Some(c)) = (doc.as_object_mut(), ctx.as_object()) {
        for k in [
            "alerts",
            "events",
            "heartbeats",
            "probes",
            "agents",
            "pauses",
            "breaker",
        ] {
            d.insert(
                k.to_string(),
                c.get(k).cloned().unwrap_or(Value::Array(Vec::new())),
            );
        }
    }
    crate::config::doc(doc)
}

/// Agents of a context document (`agents`) carrying all of `tags`, sorted.
pub fn agents_tagged(ctx: &Value, tags: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = ctx
        .get("agents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| {
            let have: Vec<&str> = a
                .get("tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            tags.iter().all(|t| have.contains(&t.as_str()))
        })
        .filter_map(|a| a.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The environment a step gets (all but HEAL_ALERT_JSON, which the agent adds).
pub fn environment(
    event_id: i64,
    rule: &str,
    runbook: &str,
    alert: &Alert,
    params: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("HEAL_EVENT_ID".to_string(), event_id.to_string()),
        ("HEAL_RULE".to_string(), rule.to_string()),
        ("HEAL_RUNBOOK".to_string(), runbook.to_string()),
        ("HEAL_ALERT_NAME".to_string(), env_value(&alert.name)),
        (
            "HEAL_ALERT_STATUS".to_string(),
            alert.status.as_str().to_string(),
        ),
        (
            "HEAL_ALERT_FINGERPRINT".to_string(),
            alert.fingerprint.clone(),
        ),
    ];
    let mut push_map = |prefix: &str, map: &BTreeMap<String, String>| {
        for (k, v) in map {
            env.push((format!("{prefix}{}", env_name(k)), env_value(v)));
        }
    };
    push_map("HEAL_LABEL_", &alert.labels);
    push_map("HEAL_ANNOTATION_", &alert.annotations);
    push_map("HEAL_PARAM_", params);
    // Two names can map to one variable (`a-b`, `a_b`). A run never gets
    // here with such labels or annotations (`env_collision` refuses it), nor
    // with such params (the config and the API refuse them); for what
    // `heal run-rule` shows, the later one wins, as in sorted order.
    let mut seen = std::collections::HashMap::new();
    for (i, (k, _)) in env.iter().enumerate() {
        seen.insert(k.clone(), i);
    }
    env.into_iter()
        .enumerate()
        .filter(|(i, (k, _))| seen[k] == *i)
        .map(|(_, kv)| kv)
        .collect()
}

fn env_value(v: &str) -> String {
    truncate(&v.replace('\0', ""), MAX_ENV_VALUE).to_string()
}

/// Whether the alert needs a decision at all (only firing alerts get one).
pub fn needs_decision(alert: &Alert) -> bool {
    alert.status == Status::Firing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::from_own;
    use serde_json::json;
    use std::path::Path;

    const NOW: i64 = 1_800_000_000_000;
    const MIN: i64 = 60_000;

    const CONFIG: &str = r#"
[safety]
max_runs_per_hour = 5
max_failed_in_row = 3

[[rule]]
name = "info-is-noise"
when = "labels.severity == 'info'"
action = "discard"

[[rule]]
name = "disk"
when = "labels.alertname == 'DiskFull'"
runbook = "clean"
target = "labels.instance"
key = "[labels.alertname, labels.instance]"
params = { mount = "labels.mountpoint" }
unless = "length(events[?runbook=='deploy' && state=='running']) > `0`"
cooldown = "10m"
max_attempts = 2
within = "1h"

[[rule]]
name = "approved"
when = "labels.alertname == 'NeedsPerson'"
runbook = "clean"
target = "labels.instance"
approve = true

[[rule]]
name = "dry"
when = "labels.alertname == 'Trial'"
runbook = "clean"
target = "labels.instance"
mode = "dry-run"

[[rule]]
name = "fleet"
when = "labels.alertname == 'Fleet'"
runbook = "clean"
target = { tags = ["web"] }
max_targets = 2

[runbook.clean]
steps = [ { name = "a", run = "true" } ]
"#;

    fn config() -> Config {
        crate::config::parse(Path::new("t.toml"), CONFIG).unwrap()
    }

    /// The decisions for an alert given a context document, through the
    /// same functions the server uses.
    fn decide_all(alert: serde_json::Value, ctx: &Value) -> Vec<(String, Decision)> {
        let config = config();
        let alert = &from_own(&alert).unwrap()[0];
        let eval = evaluate(&config, alert);
        if eval.matches.is_empty() {
            return vec![("-".into(), unmatched())];
        }
        let doc = guard_doc(alert, ctx);
        eval.matches
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if !m.target_tags.is_empty() {
                    m.targets = agents_tagged(ctx, &m.target_tags);
                }
                let rule = &config.rules[m.rule_idx];
                let facts = facts(ctx, rule, &m, &doc, NOW);
                let mut guard = || rule.unless.as_ref().map_or(Ok(false), |u| u.truthy(&doc));
                (
                    m.rule.clone(),
                    decide(&m, rule, &config.safety, &facts, &mut guard),
                )
            })
            .collect()
    }

    fn disk() -> serde_json::Value {
        json!({"name": "DiskFull", "labels": {"instance": "web-1", "mountpoint": "/var"}})
    }

    fn event(id: i64, rule: &str, state: &str, started: Option<i64>, ended: Option<i64>) -> Value {
        let key = if rule == "disk" {
            r#"["DiskFull","web-1"]"#
        } else {
            "k"
        };
        json!({"id": id, "rule": rule, "runbook": if rule == "deploy" { "deploy" } else { "clean" }, "key": key,
               "state": state, "mode": "live", "created_at": started.unwrap_or(NOW - MIN),
               "started_at": started, "ended_at": ended, "reason": format!("event {id} reason")})
    }

    fn breaker(state: &str, runs: u32, failed: u32) -> Value {
        json!({"state": state, "reason": "tripped by hand", "runs_last_hour": runs, "failed_in_row": failed})
    }

    /// Every row of the decision table (SPEC §4), with the reason it records.
    #[test]
    fn decision_table() {
        struct Row {
            row: &'static str,
            alert: Value,
            ctx: Value,
            outcome: Outcome,
            reason: &'static str,
        }
        let rows = vec![
            Row {
                row: "run: nothing known about the key",
                alert: disk(),
                ctx: json!({}),
                outcome: Outcome::Run,
                reason: "no open event for key",
            },
            Row {
                row: "run: the attempt number is given",
                alert: disk(),
                ctx: json!({"events": [event(1, "disk", "failed", Some(NOW - 30 * MIN), Some(NOW - 20 * MIN))]}),
                outcome: Outcome::Run,
                reason: "(attempt 2 of 2 within 1h)",
            },
            Row {
                row: "collapse: an event of the key is running",
                alert: disk(),
                ctx: json!({"events": [event(4, "disk", "running", Some(NOW - MIN), None)]}),
                outcome: Outcome::Collapse,
                reason: "event 4 for key \"[\\\"DiskFull\\\",\\\"web-1\\\"]\" is running: the alert joins it",
            },
            Row {
                row: "collapse: verifying, awaiting approval and deferred events hold the key too",
                alert: disk(),
                ctx: json!({"events": [event(5, "disk", "verifying", Some(NOW - MIN), None)]}),
                outcome: Outcome::Collapse,
                reason: "is verifying",
            },
            Row {
                row: "cooldown: the last run ended 2m ago, cooldown 10m",
                alert: disk(),
                ctx: json!({"events": [event(6, "disk", "succeeded", Some(NOW - 5 * MIN), Some(NOW - 2 * MIN))]}),
                outcome: Outcome::Cooldown,
                reason: "event 6 for key \"[\\\"DiskFull\\\",\\\"web-1\\\"]\" ended succeeded 2m ago; cooldown 10m: nothing runs for 8m more",
            },
            Row {
                row: "defer: the unless guard holds (a deploy runs)",
                alert: disk(),
                ctx: json!({"events": [event(7, "deploy", "running", Some(NOW - MIN), None)]}),
                outcome: Outcome::Defer,
                reason: "guard `unless = length(events[?runbook=='deploy' && state=='running']) > `0`` holds",
            },
            Row {
                row: "escalate: two attempts within the hour",
                alert: disk(),
                ctx: json!({"events": [
                    event(8, "disk", "failed", Some(NOW - 50 * MIN), Some(NOW - 45 * MIN)),
                    event(9, "disk", "timed_out", Some(NOW - 30 * MIN), Some(NOW - 25 * MIN)),
                ]}),
                outcome: Outcome::Escalate,
                reason: "2 attempts for key \"[\\\"DiskFull\\\",\\\"web-1\\\"]\" within 1h (max_attempts = 2): event 8 failed: event 8 reason; event 9 timed_out: event 9 reason; people must take over",
            },
            Row {
                row: "await-approval: approve = true",
                alert: json!({"name": "NeedsPerson", "labels": {"instance": "db-1"}}),
                ctx: json!({}),
                outcome: Outcome::AwaitApproval,
                reason: "needs approval: runs on db-1 once a person approves (heal approve ID), never after 1h",
            },
            Row {
                row: "paused: a pause of the runbook",
                alert: disk(),
                ctx: json!({"pauses": [{"id": 3, "runbook": "clean", "reason": "maintenance", "created_by": "ops", "until": NOW + 30 * MIN}]}),
                outcome: Outcome::Paused,
                reason: "pause 3 (runbook clean) by ops until",
            },
            Row {
                row: "paused: a pause by label selector",
                alert: disk(),
                ctx: json!({"pauses": [{"id": 4, "match": "labels.instance == 'web-1'", "reason": "r", "created_by": "ops", "until": NOW + MIN}]}),
                outcome: Outcome::Paused,
                reason: "alerts matching `labels.instance == 'web-1'`",
            },
            Row {
                row: "dry-run: the rule is in dry-run mode",
                alert: json!({"name": "Trial", "labels": {"instance": "web-2"}}),
                ctx: json!({}),
                outcome: Outcome::DryRun,
                reason: "is in dry-run mode; live, heal would run",
            },
            Row {
                row: "breaker: open",
                alert: disk(),
                ctx: json!({"breaker": breaker("open", 0, 0)}),
                outcome: Outcome::Breaker,
                reason: "the safety breaker is open (tripped by hand)",
            },
            Row {
                row: "breaker: opens at max_runs_per_hour",
                alert: disk(),
                ctx: json!({"breaker": breaker("closed", 5, 0)}),
                outcome: Outcome::Breaker,
                reason: "this would be run 6 within an hour, [safety] max_runs_per_hour = 5",
            },
            Row {
                row: "breaker: opens at max_failed_in_row",
                alert: disk(),
                ctx: json!({"breaker": breaker("closed", 0, 3)}),
                outcome: Outcome::Breaker,
                reason: "3 failed events in a row, [safety] max_failed_in_row = 3",
            },
            Row {
                row: "discard: a discard rule",
                alert: json!({"name": "DiskFull", "labels": {"severity": "info"}}),
                ctx: json!({}),
                outcome: Outcome::Discard,
                reason: "rule \"info-is-noise\" says discard",
            },
            Row {
                row: "discard: no rule matched",
                alert: json!({"name": "Other"}),
                ctx: json!({}),
                outcome: Outcome::Discard,
                reason: "no rule matched",
            },
            Row {
                row: "discard: the target label is missing",
                alert: json!({"name": "DiskFull"}),
                ctx: json!({}),
                outcome: Outcome::Discard,
                reason: "no agent to run on",
            },
            Row {
                row: "discard: fan-out beyond max_targets",
                alert: json!({"name": "Fleet"}),
                ctx: json!({"agents": [{"id": "a", "tags": ["web"]}, {"id": "b", "tags": ["web"]}, {"id": "c", "tags": ["web", "x"]}]}),
                outcome: Outcome::Discard,
                reason: "would fan out to 3 agents, more than max_targets = 2",
            },
            Row {
                row: "discard: no agent carries the tags",
                alert: json!({"name": "Fleet"}),
                ctx: json!({"agents": [{"id": "a", "tags": ["db"]}]}),
                outcome: Outcome::Discard,
                reason: "no agent carries tags [\"web\"]",
            },
        ];
        let mut covered = std::collections::BTreeSet::new();
        for r in rows {
            let got = decide_all(r.alert, &r.ctx);
            let d = &got[0].1;
            assert_eq!(d.outcome, r.outcome, "{}: {}", r.row, d.reason);
            assert!(
                d.reason.contains(r.reason),
                "{}: reason {:?} lacks {:?}",
                r.row,
                d.reason,
                r.reason
            );
            covered.insert(r.outcome.as_str());
        }
        for o in Outcome::ALL {
            assert!(covered.contains(o.as_str()), "no row for {}", o.as_str());
        }
    }

    #[test]
    fn order_of_rows() {
        // Collapse wins over everything that would stop a run: the alert joins what is already there.
        let ctx = json!({"events": [event(4, "disk", "running", Some(NOW - MIN), None)], "breaker": breaker("open", 0, 0),
                         "pauses": [{"id": 1, "reason": "r", "created_by": "o", "until": NOW + MIN}]});
        assert_eq!(decide_all(disk(), &ctx)[0].1.outcome, Outcome::Collapse);
        // A pause is reported before the breaker, the breaker before the attempt budget.
        let ctx = json!({"breaker": breaker("open", 0, 0), "pauses": [{"id": 1, "reason": "r", "created_by": "o", "until": NOW + MIN}]});
        assert_eq!(decide_all(disk(), &ctx)[0].1.outcome, Outcome::Paused);
        // An expired pause covers nothing.
        let ctx =
            json!({"pauses": [{"id": 1, "reason": "r", "created_by": "o", "until": NOW - 1}]});
        assert_eq!(decide_all(disk(), &ctx)[0].1.outcome, Outcome::Run);
        // Cooldown over: runs again.
        let ctx = json!({"events": [event(6, "disk", "failed", Some(NOW - 20 * MIN), Some(NOW - 11 * MIN))]});
        assert_eq!(decide_all(disk(), &ctx)[0].1.outcome, Outcome::Run);
        // Attempts older than `within` do not count.
        let ctx = json!({"events": [
            event(8, "disk", "failed", Some(NOW - 120 * MIN), Some(NOW - 115 * MIN)),
            event(9, "disk", "failed", Some(NOW - 90 * MIN), Some(NOW - 85 * MIN)),
        ]});
        assert_eq!(decide_all(disk(), &ctx)[0].1.outcome, Outcome::Run);
        // Dry-run: the breaker does not apply; what live would do is said.
        let ctx = json!({"breaker": breaker("open", 0, 0)});
        let d = &decide_all(json!({"name": "Trial", "labels": {"instance": "w"}}), &ctx)[0].1;
        assert_eq!((d.outcome, d.live), (Outcome::DryRun, Some(Outcome::Run)));
    }

    #[test]
    fn failing_guard_defers() {
        let config = crate::config::parse(
            Path::new("t.toml"),
            "[[rule]]\nname = \"g\"\nrunbook = \"r\"\ntarget = \"'a'\"\nunless = \"length(labels)\"\n[runbook.r]\nsteps = [{name = \"a\", run = \"true\"}]\n",
        )
        .unwrap();
        let alert = &from_own(&json!({"name": "X"})).unwrap()[0];
        let m = &evaluate(&config, alert).matches[0];
        let rule = &config.rules[0];
        let facts = KeyFacts {
            now: NOW,
            ..KeyFacts::default()
        };
        let d = decide(m, rule, &config.safety, &facts, &mut || Err("boom".into()));
        assert_eq!(d.outcome, Outcome::Defer);
        assert!(
            d.reason.contains("failed (boom); treated as holding"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn first_match_with_continue() {
        let config = crate::config::parse(
            Path::new("t.toml"),
            "[[rule]]\nname = \"a\"\nrunbook = \"r\"\ntarget = \"'x'\"\ncontinue = true\n[[rule]]\nname = \"b\"\nrunbook = \"r\"\ntarget = \"'x'\"\n[[rule]]\nname = \"c\"\naction = \"discard\"\n[runbook.r]\nsteps = [{name = \"a\", run = \"true\"}]\n",
        )
        .unwrap();
        let alert = &from_own(&json!({"name": "X"})).unwrap()[0];
        let eval = evaluate(&config, alert);
        let names: Vec<&str> = eval.matches.iter().map(|m| m.rule.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    // A saved context (`heal run-rule --context`) with times at the ends of
    // i64 overflowed the cooldown and the attempt window (fuzz target `rules`).
    #[test]
    fn extreme_times_in_a_context_do_not_overflow() {
        let ctx = json!({"events": [event(4, "disk", "failed", Some(NOW - MIN), Some(i64::MAX))]});
        assert_eq!(decide_all(disk(), &ctx)[0].1.outcome, Outcome::Cooldown);
        let config = config();
        let alert = &from_own(&disk()).unwrap()[0];
        let m = &evaluate(&config, alert).matches[0];
        let rule = &config.rules[m.rule_idx];
        let ctx = json!({"events": [event(4, "disk", "failed", Some(1), Some(2))]});
        let facts = facts(&ctx, rule, m, &guard_doc(alert, &ctx), i64::MIN);
        let d = decide(m, rule, &config.safety, &facts, &mut || Ok(false));
        assert_eq!(d.outcome, Outcome::Cooldown);
    }

    #[test]
    fn hostile_target_is_refused() {
        assert!(target_ids(&json!("$(touch x)")).is_err());
        assert!(target_ids(&json!(["a", "b", "a"])).unwrap() == vec!["a", "b"]);
    }

    #[test]
    fn labels_that_become_one_variable_refuse_the_run_naming_both() {
        let config = config();
        let alert = &from_own(&json!({"name": "DiskFull", "labels": {"instance": "web-1", "mount_point": "/tmp", "mount~point": "/"}})).unwrap()[0];
        let m = &evaluate(&config, alert).matches[0];
        let error = m.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with(
                r#"labels "mount_point" and "mount~point" both become HEAL_LABEL_MOUNT_POINT"#
            ),
            "{error}"
        );
        let rule = &config.rules[m.rule_idx];
        let d = decide(m, rule, &config.safety, &KeyFacts::default(), &mut || {
            Ok(false)
        });
        assert_eq!(d.outcome, Outcome::Discard, "{}", d.reason);
        let alert = &from_own(&json!({"name": "DiskFull", "labels": {"instance": "web-1", "mountpoint": "/"}, "annotations": {"Summary": "a", "summary": "b"}})).unwrap()[0];
        let error = evaluate(&config, alert).matches[0]
            .error
            .clone()
            .unwrap_or_default();
        assert!(
            error.contains(
                r#"annotations "Summary" and "summary" both become HEAL_ANNOTATION_SUMMARY"#
            ),
            "{error}"
        );
    }

    #[test]
    fn key_and_env() {
        let config = config();
        let alert = &from_own(&json!({"name": "DiskFull", "labels": {"instance": "web-1", "mountpoint": "/var", "we-ird": "a\u{0}b"}})).unwrap()[0];
        let m = &evaluate(&config, alert).matches[0];
        assert_eq!(m.key, r#"["DiskFull","web-1"]"#);
        let env = environment(3, &m.rule, "clean", alert, &m.params);
        assert!(env.contains(&("HEAL_PARAM_MOUNT".into(), "/var".into())));
        assert!(env.contains(&("HEAL_LABEL_WE_IRD".into(), "ab".into())));
        assert!(env.contains(&("HEAL_EVENT_ID".into(), "3".into())));
    }
}
