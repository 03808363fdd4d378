//! Agent-side probes (`[[probe]] on`): runs of checks the server hands out
//! with poll answers, run by a few threads of their own (so a hung check
//! holds no op slot) and reported through the same queue as op results.
//! One probe's check never runs twice at once here, whatever arrives.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{lock, Agent};
use crate::probe::{self, Check, Outcome};

/// Checks run at once.
pub(super) const CHECK_THREADS: usize = 4;

/// Longest a handed-out check may run, whatever it asks for.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Handed-out runs waiting for a thread, and the probes running now.
#[derive(Default)]
pub(super) struct Checks {
    queue: Mutex<VecDeque<Value>>,
    ready: Condvar,
    running: Mutex<HashSet<String>>,
}

impl Agent {
    /// Queues the runs a poll answer carries.
    pub(super) fn take_checks(&self, body: &Value) {
        let runs = body.get("checks").and_then(Value::as_array);
        for run in runs.into_iter().flatten() {
            lock(&self.checks.queue).push_back(run.clone());
            self.checks.ready.notify_one();
        }
    }

    /// Runs checks from the queue until the agent stops.
    pub(super) fn check_worker(&self, stopping: &AtomicBool) {
        loop {
            let run = {
                let mut queue = lock(&self.checks.queue);
                loop {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Some(run) = queue.pop_front() {
                        break run;
                    }
                    queue = self
                        .checks
                        .ready
                        .wait_timeout(queue, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            self.run_check(&run);
        }
    }

    fn run_check(&self, run: &Value) {
        let (Some(name), Some(due)) = (
            run.get("probe").and_then(Value::as_str),
            run.get("due").and_then(Value::as_i64),
        ) else {
            log::error!(
                "agent {}: a check without probe or due: {run}",
                self.opts.id
            );
            return;
        };
        if !lock(&self.checks.running).insert(name.to_string()) {
            log::warn!(
                "agent {}: probe {name} is still running here; this run is skipped",
                self.opts.id
            );
            return;
        }
        let timeout = run
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(10))
            .clamp(Duration::from_millis(1), MAX_TIMEOUT);
        let outcome = match serde_json::from_value::<Check>(run["check"].clone()) {
            Ok(check @ (Check::Command { .. } | Check::Tcp { .. } | Check::Http(_) | Check::Disk(_))) => {
                probe::run(&check, timeout)
            }
            Ok(_) => failed("this kind of check runs on the server, not on agents"),
            Err(e) => failed(&format!(
                "this agent (heal {}) cannot read the check: {e}; upgrade it to the server's version",
                env!("CARGO_PKG_VERSION")
            )),
        };
        lock(&self.checks.running).remove(name);
        log::debug!("agent {}: probe {name}: {}", self.opts.id, outcome.detail);
        let path = format!("/api/v1/agents/{}/checks/{name}/result", self.opts.id);
        let body = json!({
            "due": due,
            "ok": outcome.ok,
            "warning": outcome.warning,
            "detail": outcome.detail,
            "latency_ms": outcome.latency_ms,
            "value": outcome.value.filter(|v| v.is_finite()),
        });
        lock(&self.reports).push_back((path, body));
        self.report_ready.notify_all();
    }
}

/// A run that could not start.
fn failed(detail: &str) -> Outcome {
    Outcome {
        ok: false,
        warning: false,
        detail: detail.to_string(),
        latency_ms: 0,
        value: None,
    }
}
