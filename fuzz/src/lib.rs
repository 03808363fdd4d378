//! What the fuzz targets share: the fixed configuration they decide with, and
//! the steps `heal serve` takes on a request body before its store job.
//!
//! Every step calls the function the server calls; the harness only strings
//! them together, since the server's own sequence (`server::api`,
//! `server::intake::apply`) is bound to HTTP and SQLite.

use std::path::Path;
use std::sync::LazyLock;

use heal::alert::Alert;
use heal::config::{Action, Config};
use heal::rules;
use heal::server::intake;
use serde_json::Value;

/// A config with every kind of rule and three `[[source]]`s (`fixed.toml`).
pub static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    heal::config::parse(Path::new("fuzz/fixed.toml"), include_str!("../fixed.toml"))
        .expect("fuzz/fixed.toml is a valid config")
});

/// "Now" for every decision: a fixed time, so a crash replays exactly.
pub const NOW: i64 = 1_800_000_000_000;

/// A request body as the server reads it (`server::api::read_json`): JSON or nothing.
pub fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

/// What the server does with parsed alerts before its store job: evaluate the
/// rules for the firing ones (`intake::evaluate`), then decide each match
/// against the context `ctx` and build the plan of the events it would start.
pub fn intake(alerts: &[Alert], ctx: &Value) {
    for alert in alerts {
        let _ = heal::alert::fingerprint(&alert.labels);
    }
    let evals = intake::evaluate(&CONFIG, alerts);
    for (alert, eval) in alerts.iter().zip(&evals) {
        let Some(eval) = eval else { continue };
        decide(alert, eval, ctx);
    }
}

/// `intake::apply_one` without the store: the facts of each match read from
/// `ctx` (which stands for `store::key_context` and `store::context`), the
/// decision with the `unless` guard, and the plan a run would get.
fn decide(alert: &Alert, eval: &rules::Evaluation, ctx: &Value) {
    let alert_doc = heal::config::doc(alert.doc());
    for m in &eval.matches {
        let rule = &CONFIG.rules[m.rule_idx];
        let mut m = m.clone();
        if !m.target_tags.is_empty() {
            m.targets = rules::agents_tagged(ctx, &m.target_tags);
        }
        let facts = if matches!(m.action, Action::Run(_)) && m.error.is_none() {
            rules::facts(ctx, rule, &m, &alert_doc, NOW)
        } else {
            rules::KeyFacts::default()
        };
        let mut guard = || match &rule.unless {
            None => Ok(false),
            Some(unless) => unless.truthy(&rules::guard_doc(alert, ctx)),
        };
        let d = rules::decide(&m, rule, &CONFIG.safety, &facts, &mut guard);
        if let Action::Run(name) = &m.action {
            let runbook = &CONFIG.runbooks[name];
            let plan = intake::plan(&CONFIG, 1, &m, runbook, alert);
            let _ = serde_json::to_vec(&plan);
        }
        let _ = d.reason.len();
    }
}
