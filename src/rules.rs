//! `Alert` + `Config` (+ facts about the key) → `Decision`, with a trace of
//! every rule tried. Pure: no I/O. The server and `heal run-rule` call the
//! same functions, so the offline trace is the decision the server makes.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::alert::{Alert, Status};
use crate::config::{Action, Config, Mode, Rule, Target};

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

/// What heal does with one firing alert for one matching rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new event, ops queued.
    Run,
    /// Joins the active event of the key.
    Collapse,
    /// Recorded what would run; nothing runs.
    DryRun,
    /// Dropped: a discard rule, no rule, or nothing to run on.
    Discard,
}

impl Outcome {
    /// The name used in the API, the store and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Run => "run",
            Outcome::Collapse => "collapse",
            Outcome::DryRun => "dry-run",
            Outcome::Discard => "discard",
        }
    }
}

/// What the store knows about a key, as far as the decision needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFacts {
    /// The active event for the rule and key: id and state.
    pub active_event: Option<(i64, String)>,
}

/// A decision with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The outcome.
    pub outcome: Outcome,
    /// Why, in words for the timeline.
    pub reason: String,
}

/// Tries every rule in file order; the first match decides unless it says `continue = true`.
pub fn evaluate(config: &Config, alert: &Alert) -> Evaluation {
    let doc = crate::config::doc(alert.doc());
    let mut eval = Evaluation::default();
    for (idx, rule) in config.rules.iter().enumerate() {
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
    m
}

/// Agent ids from a target expression's value: a string or a list of strings.
fn target_ids(v: &Value) -> Result<Vec<String>, String> {
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

/// Agent ids: 1 to 128 letters, digits, '.', '-', '_' or ':'.
pub fn check_agent_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
    {
        return Err(format!(
            "agent id {:?}: must be 1 to 128 letters, digits, '.', '-', '_' or ':'",
            truncate(id, 64)
        ));
    }
    Ok(())
}

/// Decides what one match means for a firing alert, given what the store knows.
pub fn decide(m: &Match, facts: &KeyFacts) -> Decision {
    let d = |outcome, reason: String| Decision { outcome, reason };
    if m.action == Action::Discard {
        return d(Outcome::Discard, format!("rule {:?} says discard", m.rule));
    }
    if let Some(error) = &m.error {
        return d(
            Outcome::Discard,
            format!("rule {:?} matched but cannot run: {error}", m.rule),
        );
    }
    if let Some((id, state)) = &facts.active_event {
        return d(
            Outcome::Collapse,
            format!(
                "event {id} for key {:?} is {state}: the alert joins it, nothing new runs",
                m.key
            ),
        );
    }
    if m.mode == Mode::DryRun {
        return d(
            Outcome::DryRun,
            format!(
                "rule {:?} is in dry-run mode: recorded what would run, ran nothing",
                m.rule
            ),
        );
    }
    let targets = if m.targets.is_empty() {
        format!("agents tagged {:?}", m.target_tags)
    } else {
        m.targets.join(", ")
    };
    d(
        Outcome::Run,
        format!(
            "rule {:?} matched; no active event for key {:?}: run on {targets}",
            m.rule, m.key
        ),
    )
}

/// The decision when no rule matched.
pub fn unmatched() -> Decision {
    Decision {
        outcome: Outcome::Discard,
        reason: "no rule matched".into(),
    }
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
    // Two names can map to one variable (`a-b`, `a_b`); the later one wins, as in sorted order.
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

/// Upper-cases a name and turns every other character into `_`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn env_value(v: &str) -> String {
    truncate(&v.replace('\0', ""), MAX_ENV_VALUE).to_string()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether the alert needs a decision at all (only firing alerts get one).
pub fn needs_decision(alert: &Alert) -> bool {
    alert.status == Status::Firing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::from_own;
    use std::path::Path;

    const CONFIG: &str = r#"
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
continue = true

[[rule]]
name = "disk-dry"
when = "labels.alertname == 'DiskFull'"
runbook = "clean"
target = "labels.instance"
mode = "dry-run"

[runbook.clean]
steps = [ { name = "a", run = "true" } ]
"#;

    fn check(alert: serde_json::Value, facts: KeyFacts, expected: &[(&str, Outcome)]) {
        let config = crate::config::parse(Path::new("t.toml"), CONFIG).unwrap();
        let alert = &from_own(&alert).unwrap()[0];
        let eval = evaluate(&config, alert);
        let got: Vec<(String, Outcome)> = if eval.matches.is_empty() {
            vec![("-".into(), unmatched().outcome)]
        } else {
            eval.matches
                .iter()
                .map(|m| (m.rule.clone(), decide(m, &facts).outcome))
                .collect()
        };
        let expected: Vec<(String, Outcome)> =
            expected.iter().map(|(r, o)| (r.to_string(), *o)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn first_match_with_continue() {
        let a = serde_json::json!({"name": "DiskFull", "labels": {"instance": "web-1"}});
        check(
            a,
            KeyFacts::default(),
            &[("disk", Outcome::Run), ("disk-dry", Outcome::DryRun)],
        );
    }

    #[test]
    fn discard_rule_and_unmatched() {
        check(
            serde_json::json!({"name": "DiskFull", "labels": {"severity": "info"}}),
            KeyFacts::default(),
            &[("info-is-noise", Outcome::Discard)],
        );
        check(
            serde_json::json!({"name": "Other"}),
            KeyFacts::default(),
            &[("-", Outcome::Discard)],
        );
    }

    #[test]
    fn active_event_collapses() {
        let facts = KeyFacts {
            active_event: Some((7, "running".into())),
        };
        let a = serde_json::json!({"name": "DiskFull", "labels": {"instance": "web-1"}});
        check(
            a,
            facts.clone(),
            &[("disk", Outcome::Collapse), ("disk-dry", Outcome::Collapse)],
        );
    }

    #[test]
    fn missing_target_label_is_discarded_with_reason() {
        let config = crate::config::parse(Path::new("t.toml"), CONFIG).unwrap();
        let alert = &from_own(&serde_json::json!({"name": "DiskFull"})).unwrap()[0];
        let m = &evaluate(&config, alert).matches[0];
        let d = decide(m, &KeyFacts::default());
        assert_eq!(d.outcome, Outcome::Discard);
        assert!(d.reason.contains("no agent to run on"), "{}", d.reason);
    }

    #[test]
    fn hostile_target_is_refused() {
        assert!(target_ids(&serde_json::json!("$(touch x)")).is_err());
        assert!(target_ids(&serde_json::json!(["a", "b", "a"])).unwrap() == vec!["a", "b"]);
    }

    #[test]
    fn key_and_env() {
        let config = crate::config::parse(Path::new("t.toml"), CONFIG).unwrap();
        let alert = &from_own(&serde_json::json!({"name": "DiskFull", "labels": {"instance": "web-1", "mountpoint": "/var", "we-ird": "a\u{0}b"}})).unwrap()[0];
        let m = &evaluate(&config, alert).matches[0];
        assert_eq!(m.key, r#"["DiskFull","web-1"]"#);
        let env = environment(3, &m.rule, "clean", alert, &m.params);
        assert!(env.contains(&("HEAL_PARAM_MOUNT".into(), "/var".into())));
        assert!(env.contains(&("HEAL_LABEL_WE_IRD".into(), "ab".into())));
        assert!(env.contains(&("HEAL_EVENT_ID".into(), "3".into())));
    }
}
