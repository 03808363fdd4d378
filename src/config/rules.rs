//! `[[source]]`, `[[rule]]` and `[runbook.NAME]`: how webhooks become
//! alerts, which alerts run what, and the steps a runbook runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{check_name, Expr, Safety, Validator};
use crate::error::Result;
use crate::exec::Run;

/// A `[[source]]`: maps any JSON webhook to alerts.
#[derive(Debug)]
pub struct Source {
    /// The `<source>` of `/hooks/<source>`.
    pub name: String,
    /// Evaluated over the body: the list of alerts (default: the body, or `[body]`).
    pub alerts: Option<Expr>,
    /// Evaluated over each alert: its name.
    pub name_expr: Expr,
    /// Evaluated over each alert: "firing" or "resolved" (default: firing).
    pub status: Option<Expr>,
    /// Evaluated over each alert: an object of labels.
    pub labels: Option<Expr>,
    /// Evaluated over each alert: an object of annotations.
    pub annotations: Option<Expr>,
    /// Evaluated over each alert: its fingerprint (default: hash of the labels).
    pub fingerprint: Option<Expr>,
    /// Evaluated over each alert: RFC 3339 start time.
    pub starts_at: Option<Expr>,
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the named runbook.
    Run(String),
    /// Record and drop the alert.
    Discard,
}

/// Where a rule's runbook runs.
#[derive(Debug)]
pub enum Target {
    /// An expression giving an agent id or a list of them.
    Expr(Expr),
    /// Every agent carrying all these tags.
    Tags(Vec<String>),
}

/// Whether a rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Runs the runbook.
    Live,
    /// Records what would run and runs nothing.
    DryRun,
}

/// A `[[rule]]`.
#[derive(Debug)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Line of the `[[rule]]` in the file.
    pub line: usize,
    /// Match condition (default: always).
    pub when: Option<Expr>,
    /// Run a runbook or discard.
    pub action: Action,
    /// Where to run (required for `Action::Run`).
    pub target: Option<Target>,
    /// HEAL_PARAM_<NAME> = expression.
    pub params: Vec<(String, Expr)>,
    /// Identity of "the same problem" (default: the alert's fingerprint).
    pub key: Option<Expr>,
    /// Guard over the context document.
    pub unless: Option<Expr>,
    /// Settle time after an event ends.
    pub cooldown: Duration,
    /// Attempts allowed within `within`.
    pub max_attempts: Option<u32>,
    /// Window for `max_attempts`.
    pub within: Duration,
    /// Wait for a person before running.
    pub approve: bool,
    /// How long an approval may wait.
    pub approve_timeout: Duration,
    /// Most agents a `{ tags = [...] }` target may reach (default: `[safety] max_targets`).
    pub max_targets: u32,
    /// Live or dry-run.
    pub mode: Mode,
    /// Go on to later rules after this one matched.
    pub cont: bool,
    /// Built for a `[[schedule]]`: never matched against alerts, decided when the schedule fires.
    pub schedule: bool,
    /// `p1`…`p5`: the priority of its events' notifications (PagerDuty's
    /// severity, Opsgenie's priority, routes' `priority`).
    pub priority: Option<String>,
}

/// One runbook step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name shown in logs and the timeline.
    pub name: String,
    /// What to execute.
    pub run: Run,
    /// Per-step timeout (default: the runbook's).
    pub timeout: Duration,
    /// Go on to the next step when this one fails.
    pub continue_on_error: bool,
    /// Environment of the step (the runbook's, then the step's own), each
    /// value's `${VAR}` expanded on the agent from its own environment.
    pub env: Vec<(String, String)>,
    /// Directory the step starts in (the step's, else the runbook's; else
    /// the agent's own); it must exist on the agent.
    pub cwd: Option<String>,
    /// Runs again after a failure or a timeout, at most this many times.
    pub retries: u32,
    /// Pause before each run again.
    pub retry_delay: Duration,
    /// JMESPath over `alert`, `params` and `steps` (the steps so far, by
    /// name: `exit_code`, `status`), read on the agent: false skips the step.
    pub when: Option<String>,
    /// Files of `NAME=value` secrets the agent reads when the step starts
    /// (the runbook's, then the step's); their values never leave the agent.
    pub env_files: Vec<String>,
    /// The user the agent starts the step as (the step's, else the
    /// runbook's; else the agent's own); the agent must allow it.
    pub user: Option<String>,
    /// Its group, one of the user's (default: the user's primary group).
    pub group: Option<String>,
}

/// How an event is checked after its steps.
#[derive(Debug, Clone)]
pub enum Verify {
    /// Success is exit 0 of every step.
    None,
    /// The alert must resolve within this time.
    ResolvedWithin(Duration),
    /// A check command must exit 0 within its retries.
    Run {
        /// The check.
        run: Run,
        /// Tries after the first.
        retries: u32,
        /// Pause between tries.
        interval: Duration,
        /// Timeout of each try (the runbook's step timeout).
        timeout: Duration,
    },
}

/// A `[runbook.NAME]`.
#[derive(Debug)]
pub struct Runbook {
    /// Its name.
    pub name: String,
    /// What it does, for people.
    pub description: String,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Steps run after a step fails (with `HEAL_FAILED_STEP`): recorded,
    /// and the op stays failed whatever they do.
    pub on_failure: Vec<Step>,
    /// Check after the steps.
    pub verify: Verify,
    /// Targets at once when fanning out.
    pub max_parallel: u32,
}

impl std::fmt::Display for Run {
    /// Shows a command as it would be typed: `sh -c '...'`, or the argv list.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Run::Shell(c) => write!(f, "sh -c {c:?}"),
            Run::Argv(v) => write!(f, "{v:?}"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    name: String,
    alerts: Option<Spanned<String>>,
    #[serde(rename = "alert_name")]
    name_expr: Spanned<String>,
    status: Option<Spanned<String>>,
    labels: Option<Spanned<String>>,
    annotations: Option<Spanned<String>>,
    fingerprint: Option<Spanned<String>>,
    starts_at: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawTarget {
    Expr(String),
    Tags { tags: Vec<String> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: String,
    pub(super) when: Option<Spanned<String>>,
    pub(super) runbook: Option<Spanned<String>>,
    pub(super) action: Option<Spanned<String>>,
    pub(super) target: Option<Spanned<RawTarget>>,
    #[serde(default)]
    pub(super) params: BTreeMap<String, Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) unless: Option<Spanned<String>>,
    pub(super) cooldown: Option<Spanned<String>>,
    pub(super) max_attempts: Option<Spanned<i64>>,
    pub(super) within: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) approve: bool,
    pub(super) approve_timeout: Option<Spanned<String>>,
    pub(super) max_targets: Option<Spanned<i64>>,
    pub(super) mode: Option<Spanned<String>>,
    #[serde(default, rename = "continue")]
    pub(super) cont: bool,
    pub(super) priority: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawRun {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    name: String,
    run: Spanned<RawRun>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    continue_on_error: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    retries: Option<Spanned<i64>>,
    retry_delay: Option<Spanned<String>>,
    when: Option<Spanned<String>>,
    #[serde(default)]
    env_files: Vec<String>,
    user: Option<String>,
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    resolved_within: Option<Spanned<String>>,
    run: Option<Spanned<RawRun>>,
    retries: Option<i64>,
    interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRunbook {
    #[serde(default)]
    description: String,
    timeout: Option<Spanned<String>>,
    steps: Vec<Spanned<RawStep>>,
    verify: Option<Spanned<RawVerify>>,
    max_parallel: Option<Spanned<i64>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    #[serde(default)]
    env_files: Vec<String>,
    #[serde(default)]
    on_failure: Vec<Spanned<RawStep>>,
    user: Option<String>,
    group: Option<String>,
}

impl Validator<'_> {
    pub(super) fn source(&self, s: &Spanned<RawSource>) -> Result<Source> {
        let raw = s.get_ref();
        let item = format!("source {:?}", raw.name);
        check_name(&raw.name).or_else(|e| self.err(s.span(), &item, format!("name: {e}")))?;
        Ok(Source {
            name: raw.name.clone(),
            alerts: self.opt_expr(&raw.alerts, &item, "alerts")?,
            name_expr: self.expr(&raw.name_expr, &item, "alert_name")?,
            status: self.opt_expr(&raw.status, &item, "status")?,
            labels: self.opt_expr(&raw.labels, &item, "labels")?,
            annotations: self.opt_expr(&raw.annotations, &item, "annotations")?,
            fingerprint: self.opt_expr(&raw.fingerprint, &item, "fingerprint")?,
            starts_at: self.opt_expr(&raw.starts_at, &item, "starts_at")?,
        })
    }

    pub(super) fn run(&self, r: &Spanned<RawRun>, item: &str, field: &str) -> Result<Run> {
        match run_of(r.get_ref()) {
            Some(run) => Ok(run),
            None => self.err(r.span(), item, format!("{field}: empty command (a shell string or a list like [\"/usr/bin/x\", \"arg\"])")),
        }
    }

    /// A runbook's `steps` or `on_failure`, each with the runbook's env and
    /// cwd under its own.
    fn steps(
        &self,
        list: &[Spanned<RawStep>],
        raw: &RawRunbook,
        item: &str,
        which: &str,
        timeout: Duration,
    ) -> Result<Vec<Step>> {
        let mut steps: Vec<Step> = Vec::new();
        for s in list {
            let rs = s.get_ref();
            let step_item = format!("{item} {which}step {:?}", rs.name);
            if rs.name.trim().is_empty() || steps.iter().any(|o| o.name == rs.name) {
                return self.err(
                    s.span(),
                    &step_item,
                    "name: empty or used twice in this runbook",
                );
            }
            let mut env = raw.env.clone();
            env.extend(rs.env.clone());
            for name in env.keys() {
                check_env_name(name)
                    .or_else(|e| self.err(s.span(), &step_item, format!("env: {e}")))?;
            }
            let env_files: Vec<String> =
                raw.env_files.iter().chain(&rs.env_files).cloned().collect();
            if let Some(file) = env_files.iter().find(|f| !f.starts_with('/')) {
                return self.err(
                    s.span(),
                    &step_item,
                    format!("env_files: {file:?} is not an absolute path"),
                );
            }
            let cwd = rs.cwd.clone().or_else(|| raw.cwd.clone());
            if let Some(dir) = cwd.as_deref().filter(|d| !d.starts_with('/')) {
                return self.err(
                    s.span(),
                    &step_item,
                    format!("cwd: {dir:?} is not an absolute path (steps run wherever the agent was started)"),
                );
            }
            let user = rs.user.clone().or_else(|| raw.user.clone());
            let group = rs.group.clone().or_else(|| raw.group.clone());
            for (field, name) in [("user", &user), ("group", &group)] {
                if let Some(name) = name {
                    check_account_name(name)
                        .or_else(|e| self.err(s.span(), &step_item, format!("{field}: {e}")))?;
                }
            }
            if let (None, Some(group)) = (&user, &group) {
                return self.err(
                    s.span(),
                    &step_item,
                    format!("group: {group:?} without a user (give user = \"NAME\" too)"),
                );
            }
            steps.push(Step {
                name: rs.name.clone(),
                run: self.run(&rs.run, &step_item, "run")?,
                timeout: self.duration(&rs.timeout, timeout, &step_item, "timeout")?,
                continue_on_error: rs.continue_on_error,
                env: env.into_iter().collect(),
                cwd,
                retries: self.count(&rs.retries, 0, 0, 100, &step_item, "retries")? as u32,
                retry_delay: self.duration(
                    &rs.retry_delay,
                    Duration::from_secs(10),
                    &step_item,
                    "retry_delay",
                )?,
                when: self
                    .opt_expr(&rs.when, &step_item, "when")?
                    .map(|e| e.source),
                env_files,
                user,
                group,
            });
        }
        Ok(steps)
    }

    pub(super) fn runbook(&self, name: &str, r: &Spanned<RawRunbook>) -> Result<Runbook> {
        let raw = r.get_ref();
        let item = format!("runbook {name:?}");
        check_name(name).or_else(|e| self.err(r.span(), &item, format!("name: {e}")))?;
        let timeout = self.duration(&raw.timeout, Duration::from_secs(300), &item, "timeout")?;
        if raw.steps.is_empty() {
            return self.err(
                r.span(),
                &item,
                "steps: empty (give at least one { name = \"...\", run = \"...\" })",
            );
        }
        let steps = self.steps(&raw.steps, raw, &item, "", timeout)?;
        let on_failure = self.steps(&raw.on_failure, raw, &item, "on_failure ", timeout)?;
        let verify = match &raw.verify {
            None => Verify::None,
            Some(v) => {
                let rv = v.get_ref();
                match (&rv.resolved_within, &rv.run) {
                    (Some(d), None) => Verify::ResolvedWithin(self.duration(
                        &Some(d.clone()),
                        Duration::ZERO,
                        &item,
                        "verify.resolved_within",
                    )?),
                    (None, Some(run)) => Verify::Run {
                        run: self.run(run, &item, "verify.run")?,
                        retries: rv.retries.unwrap_or(3).clamp(0, 1000) as u32,
                        interval: self.duration(
                            &rv.interval,
                            Duration::from_secs(10),
                            &item,
                            "verify.interval",
                        )?,
                        timeout,
                    },
                    _ => {
                        return self.err(
                            v.span(),
                            &item,
                            "verify: give exactly one of resolved_within or run",
                        )
                    }
                }
            }
        };
        let max_parallel =
            self.count(&raw.max_parallel, 1, 1, 10_000, &item, "max_parallel")? as u32;
        Ok(Runbook {
            name: name.to_string(),
            description: raw.description.clone(),
            steps,
            on_failure,
            verify,
            max_parallel,
        })
    }

    pub(super) fn rule(
        &self,
        r: &Spanned<RawRule>,
        runbooks: &BTreeMap<String, Arc<Runbook>>,
        safety: &Safety,
    ) -> Result<Rule> {
        let raw = r.get_ref();
        let item = format!("rule {:?}", raw.name);
        check_name(&raw.name).or_else(|e| self.err(r.span(), &item, format!("name: {e}")))?;
        let action = match (
            raw.action
                .as_ref()
                .map(|a| (a.get_ref().as_str(), a.span())),
            &raw.runbook,
        ) {
            (Some(("discard", _)), None) => Action::Discard,
            (Some(("discard", span)), Some(_)) => {
                return self.err(span, &item, "action: \"discard\" takes no runbook")
            }
            (None | Some(("run", _)), Some(rb)) => {
                if !runbooks.contains_key(rb.get_ref()) {
                    let known: Vec<&str> = runbooks.keys().map(String::as_str).collect();
                    return self.err(
                        rb.span(),
                        &item,
                        format!(
                            "runbook: no [runbook.{}] in this file (known: {})",
                            rb.get_ref(),
                            known.join(", ")
                        ),
                    );
                }
                Action::Run(rb.get_ref().clone())
            }
            (None | Some(("run", _)), None) => {
                return self.err(
                    r.span(),
                    &item,
                    "runbook: missing (name a [runbook.NAME], or say action = \"discard\")",
                )
            }
            (Some((other, span)), _) => {
                return self.err(
                    span,
                    &item,
                    format!("action: unknown action {other:?} (\"run\" or \"discard\")"),
                )
            }
        };
        let target = match &raw.target {
            None => None,
            Some(t) => Some(match t.get_ref() {
                RawTarget::Expr(e) => {
                    Target::Expr(self.expr(&Spanned::new(t.span(), e.clone()), &item, "target")?)
                }
                RawTarget::Tags { tags } if !tags.is_empty() => Target::Tags(tags.clone()),
                RawTarget::Tags { .. } => {
                    return self.err(t.span(), &item, "target: tags is empty")
                }
            }),
        };
        if matches!(action, Action::Run(_)) && target.is_none() {
            return self.err(r.span(), &item, "target: missing (an agent id expression like \"labels.instance\", or { tags = [\"lb\"] })");
        }
        let mut params = Vec::new();
        for (name, e) in &raw.params {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return self.err(
                    e.span(),
                    &item,
                    format!("params: name {name:?} must be letters, digits and _"),
                );
            }
            params.push((
                name.clone(),
                self.expr(e, &item, &format!("params.{name}"))?,
            ));
        }
        if let Some((a, b, var)) = crate::exec::same_env_name(raw.params.keys()) {
            return self.err(
                raw.params[b].span(),
                &item,
                format!("params: {a:?} and {b:?} both become HEAL_PARAM_{var} (give them names that differ in more than case)"),
            );
        }
        let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("live", _)) => Mode::Live,
            Some(("dry-run", _)) => Mode::DryRun,
            Some((other, span)) => {
                return self.err(
                    span,
                    &item,
                    format!("mode: unknown mode {other:?} (\"live\" or \"dry-run\")"),
                )
            }
        };
        Ok(Rule {
            name: raw.name.clone(),
            line: self.line(r.span().start),
            when: self.opt_expr(&raw.when, &item, "when")?,
            action,
            target,
            params,
            key: self.opt_expr(&raw.key, &item, "key")?,
            unless: self.opt_expr(&raw.unless, &item, "unless")?,
            cooldown: self.duration(&raw.cooldown, Duration::ZERO, &item, "cooldown")?,
            max_attempts: raw
                .max_attempts
                .as_ref()
                .map(|_| {
                    self.count(&raw.max_attempts, 0, 1, 1_000_000, &item, "max_attempts")
                        .map(|n| n as u32)
                })
                .transpose()?,
            within: self.duration(&raw.within, Duration::from_secs(3600), &item, "within")?,
            approve: raw.approve,
            approve_timeout: self.duration(
                &raw.approve_timeout,
                Duration::from_secs(3600),
                &item,
                "approve_timeout",
            )?,
            max_targets: self.count(
                &raw.max_targets,
                safety.max_targets as i64,
                1,
                1_000_000,
                &item,
                "max_targets",
            )? as u32,
            mode,
            cont: raw.cont,
            schedule: false,
            priority: match &raw.priority {
                Some(p) => super::watch::priority(Some(p.get_ref()))
                    .or_else(|e| self.err(p.span(), &item, e))?,
                None => None,
            },
        })
    }
}

/// A variable a runbook (its `env`, or an `env_files` file on the agent)
/// may set: a shell name, not one of heal's own (`HEAL_*` carry the alert,
/// and only heal sets them).
pub fn check_env_name(name: &str) -> std::result::Result<(), String> {
    let shell_name = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !shell_name {
        return Err(format!(
            "{name:?} is not a variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    if name.to_ascii_uppercase().starts_with("HEAL_") {
        return Err(format!(
            "{name:?}: names starting with HEAL_ are heal's own (the alert's data, set by heal)"
        ));
    }
    Ok(())
}

/// A user or group name a step may run as: a letter or '_', then letters,
/// digits, '.', '_' or '-' (and a final '$'), at most 32 characters, as
/// useradd accepts them; a number is not a name.
pub fn check_account_name(name: &str) -> std::result::Result<(), String> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok = name.len() <= 32
        && body
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        return Ok(());
    }
    Err(format!(
        "{:?} is not a user or group name (a letter or '_', then letters, digits, '.', '_' or '-', at most 32 characters)",
        crate::exec::truncate(name, 64)
    ))
}

/// A command as written: a shell string or an argv list; None when empty.
pub(super) fn run_of(raw: &RawRun) -> Option<Run> {
    match raw {
        RawRun::Shell(s) if !s.trim().is_empty() => Some(Run::Shell(s.clone())),
        RawRun::Argv(v) if !v.is_empty() && !v[0].is_empty() => Some(Run::Argv(v.clone())),
        _ => None,
    }
}
