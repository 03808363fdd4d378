//! What the fuzz targets share: the fixed configuration they decide with, and
//! the steps `heal serve` takes on a request body before its store job.
//!
//! Every step calls the function the server calls; the harness only strings
//! them together, since the server's own sequence (`server::api`,
//! `server::intake::apply`) is bound to HTTP and SQLite.

use std::path::Path;
use std::sync::{LazyLock, Once};

use heal::alert::{Alert, Status};
use heal::config::{Action, Config};
use heal::rules;
use heal::server::intake;
use serde_json::Value;

/// A config with every kind of rule and three `[[source]]`s (`fixed.toml`).
pub static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    heal::config::parse(Path::new("fuzz/fixed.toml"), include_str!("../fixed.toml"))
        .expect("fuzz/fixed.toml is a valid config")
});

/// "Now" for a decision whose context does not say: a fixed time, so a crash
/// replays exactly.
const NOW: i64 = 1_800_000_000_000;

/// The stack of the server's threads (Rust's default for a spawned thread).
const SERVER_STACK: usize = 2 << 20;

/// Where libFuzzer's crash handler runs when the input's thread overflowed.
const SIGNAL_STACK: usize = 256 << 10;

/// Runs `f` on a thread with the stack of the server's threads, so that a
/// recursion too deep for an HTTP worker crashes the fuzz target too.
pub fn on_server_stack(f: impl FnOnce() + Send) {
    static HANDLER_ON_ITS_OWN_STACK: Once = Once::new();
    HANDLER_ON_ITS_OWN_STACK.call_once(crash_handler_on_signal_stack);
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .stack_size(SERVER_STACK)
            .spawn_scoped(scope, || with_signal_stack(f))
            .expect("a thread for the input");
        if worker.join().is_err() {
            std::process::abort();
        }
    });
}

/// A stack overflow ends in SIGSEGV on the guard page. libFuzzer's handler
/// for it would run on the exhausted stack and die before it reports and
/// saves the input (AddressSanitizer, which the targets go without, would
/// give it a stack of its own). With `no_main`, Rust's own overflow handler
/// is not installed either. So the handler is told to run on the signal
/// stack that `with_signal_stack` gives each input's thread.
fn crash_handler_on_signal_stack() {
    for signal in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: reads libFuzzer's handler and sets it again with one more flag.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut action) == 0 {
                action.sa_flags |= libc::SA_ONSTACK;
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    }
}

/// Runs `f` with a signal stack for this thread, removed before it is freed.
fn with_signal_stack(f: impl FnOnce()) {
    let mut memory = vec![0u8; SIGNAL_STACK];
    let stack = |sp: *mut libc::c_void, flags, size| libc::stack_t {
        ss_sp: sp,
        ss_flags: flags,
        ss_size: size,
    };
    // SAFETY: `memory` outlives its use as this thread's signal stack.
    unsafe {
        libc::sigaltstack(
            &stack(memory.as_mut_ptr().cast(), 0, SIGNAL_STACK),
            std::ptr::null_mut(),
        );
    }
    f();
    // SAFETY: disables the signal stack before `memory` is dropped.
    unsafe {
        libc::sigaltstack(
            &stack(std::ptr::null_mut(), libc::SS_DISABLE, 0),
            std::ptr::null_mut(),
        );
    }
}

/// Alerts of every kind the fixed config has a rule for, with the context of
/// a real server (`seeds/rules/all-alerts.json`): what the config target
/// decides with each config it parses.
pub static SAMPLE: LazyLock<(Vec<Alert>, Value)> = LazyLock::new(|| {
    let body: Value = serde_json::from_str(include_str!("../seeds/rules/all-alerts.json"))
        .expect("seeds/rules/all-alerts.json is JSON");
    let alerts = heal::alert::from_own(&body).expect("seeds/rules/all-alerts.json holds alerts");
    (alerts, body["context"].clone())
});

/// A request body as the server reads it (`server::api::read_json`): JSON or nothing.
pub fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

/// The time of a decision: the context's `now`, as in `heal run-rule --context`.
pub fn now(ctx: &Value) -> i64 {
    ctx.get("now").and_then(Value::as_i64).unwrap_or(NOW)
}

/// What the server does with parsed alerts before its store job: evaluate the
/// rules for the firing ones (`intake::evaluate`), then decide each match
/// against the context `ctx` and build the plan of the events it would start.
pub fn intake(config: &Config, alerts: &[Alert], ctx: &Value) {
    let now = now(ctx);
    for alert in alerts {
        let _ = heal::alert::fingerprint(&alert.labels);
    }
    let evals = intake::evaluate(config, alerts);
    for (alert, eval) in alerts.iter().zip(&evals) {
        let Some(eval) = eval else { continue };
        decide(config, alert, eval, ctx, now);
    }
}

/// `intake::apply_one` without the store: the facts of each match read from
/// `ctx` (which stands for `store::key_context` and `store::context`), the
/// decision with the `unless` guard, and the plan a run would get.
fn decide(config: &Config, alert: &Alert, eval: &rules::Evaluation, ctx: &Value, now: i64) {
    let alert_doc = heal::config::doc(alert.doc());
    for m in &eval.matches {
        let rule = &config.rules[m.rule_idx];
        let mut m = m.clone();
        if !m.target_tags.is_empty() {
            m.targets = rules::agents_tagged(ctx, &m.target_tags);
        }
        let facts = if matches!(m.action, Action::Run(_)) && m.error.is_none() {
            rules::facts(ctx, rule, &m, &alert_doc, now)
        } else {
            rules::KeyFacts::default()
        };
        let mut guard = || match &rule.unless {
            None => Ok(false),
            Some(unless) => unless.truthy(&rules::guard_doc(alert, ctx)),
        };
        let d = rules::decide(&m, rule, &config.safety, &facts, &mut guard);
        if let Action::Run(name) = &m.action {
            let runbook = &config.runbooks[name];
            let plan = intake::plan(config, 1, &m, runbook, alert);
            let _ = serde_json::to_vec(&plan);
        }
        let _ = d.reason.len();
    }
}

/// What the scheduler thread computes from a config at `now`: each
/// heartbeat's status after a success, a failure and a run still going, and
/// when each probe and schedule is next due; then each `[[schedule]]` fired,
/// decided like the internal alert that stands for its run.
pub fn watch(config: &Config, ctx: &Value, now: i64) {
    use heal::heartbeat::{status, End, Seen};
    let hour = 3_600_000;
    let end = |ok| End {
        at: now - hour,
        ok,
        exit_code: (!ok).then_some(1),
    };
    for hb in config.heartbeats.values() {
        for seen in [
            Seen::default(),
            Seen {
                registered_at: now - 48 * hour,
                last_start: Some(now - 2 * hour),
                last_end: Some(end(true)),
                ..Seen::default()
            },
            Seen {
                registered_at: now - 48 * hour,
                last_start: Some(now - 2 * hour),
                last_end: Some(end(false)),
                ..Seen::default()
            },
            Seen {
                registered_at: now - 48 * hour,
                last_start: Some(now - 1),
                ..Seen::default()
            },
        ] {
            let _ = status(&hb.spec, &seen, now);
        }
    }
    for probe in config.probes.values() {
        let _ = probe.schedule.next_after(now);
    }
    for scheduled in &config.schedules {
        let _ = scheduled.schedule.next_after(now);
        let labels = [("schedule".to_string(), scheduled.name.clone())].into();
        let alert = Alert {
            fingerprint: heal::alert::fingerprint(&labels),
            name: "ScheduledRun".into(),
            status: Status::Firing,
            labels,
            annotations: Default::default(),
            starts_at: Some(now),
            ends_at: None,
            source: "heal".into(),
        };
        let eval = rules::evaluate_schedule(config, scheduled.rule_idx, &alert);
        decide(config, &alert, &eval, ctx, now);
    }
}
