//! `heal agent`: long-polls the server, runs each op's steps (`exec`),
//! streams output, and reports results until the server acknowledges them.
//!
//! The agent never opens SQLite and never puts alert data on a command line:
//! alert data reaches steps only as HEAL_* environment variables and the
//! HEAL_ALERT_JSON file, kept in a private directory (`state_dir`). An op is
//! run only once: the server hands it out once, and the agent confirms it
//! (the start acknowledgement) before its first step starts, so an op the
//! server declared lost meanwhile (409) never starts. SIGTERM closes the
//! waiting poll at once: no op is taken after it. Poll answers also carry
//! runs of agent-side probes (`checks`).

mod checks;
mod secrets;
mod state_dir;
mod users;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{Client, Servers};
use crate::error::{Error, Result};
use crate::exec::{self, Output, Run};
use crate::shutdown::Shutdown;
use crate::store::StepResult;
use state_dir::StateDir;

pub use crate::host::hostname;

/// Longest the agent asks the server to hold a poll.
const POLL_WAIT_SECS: u64 = 25;
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often running output is sent to the server.
const STREAM_EVERY: Duration = Duration::from_millis(500);

/// Options of `heal agent`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The servers it may use (one in use at a time, the next when it does not answer).
    pub servers: Arc<Servers>,
    /// The server as the log names it, when not `servers`: the local agent
    /// reaches heal by an inner address, but people know the listen address.
    pub server_shown: Option<String>,
    /// Agent id.
    pub id: String,
    /// Bearer token.
    pub token: Option<String>,
    /// Tags for `{ tags = [...] }` targets.
    pub tags: Vec<String>,
    /// Runbook name patterns (`*`, `?`) this agent accepts.
    pub allow: Vec<String>,
    /// Ops at once.
    pub concurrency: usize,
    /// On SIGTERM, how long running steps may finish before they are stopped.
    pub drain_grace: Duration,
    /// PEM of the private CA that signed the server's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// Directory for alert files (default: see `state_dir`).
    pub state_dir: Option<std::path::PathBuf>,
    /// Users other than its own that runbooks may ask steps to run as.
    pub allow_users: Vec<String>,
}

struct Agent {
    opts: Options,
    instance: String,
    client: Client,
    /// Polls only, so SIGTERM can close a waiting poll without touching results.
    poll_client: Client,
    state: StateDir,
    running: Mutex<usize>,
    slot_freed: Condvar,
    /// Ops handed out by polls, waiting for a worker.
    queue: Mutex<VecDeque<Value>>,
    op_ready: Condvar,
    /// Running ops, watched by the companion thread (streaming), cancelled by the drain.
    ops: Mutex<HashMap<i64, Running>>,
    reports: Mutex<VecDeque<(String, Value)>>,
    report_ready: Condvar,
    log_seq: AtomicUsize,
    /// Runs of agent-side probes.
    checks: checks::Checks,
}

/// Runs the agent until `shutdown` is triggered, then drains.
pub fn run(opts: Options, shutdown: &Shutdown) -> Result<()> {
    crate::rules::check_agent_id(&opts.id).map_err(Error::Usage)?;
    let new_client = || {
        Client::new(
            opts.servers.clone(),
            opts.token.clone(),
            Duration::from_secs(POLL_WAIT_SECS + 15),
            opts.ca_file.as_deref(),
        )
    };
    let instance = random_hex(8);
    let agent = Agent {
        client: new_client()?,
        poll_client: new_client()?,
        state: StateDir::open(opts.state_dir.as_deref(), &opts.id, &instance)?,
        instance,
        opts,
        running: Mutex::new(0),
        slot_freed: Condvar::new(),
        queue: Mutex::new(VecDeque::new()),
        op_ready: Condvar::new(),
        ops: Mutex::new(HashMap::new()),
        reports: Mutex::new(VecDeque::new()),
        report_ready: Condvar::new(),
        log_seq: AtomicUsize::new(0),
        checks: checks::Checks::default(),
    };
    log::info!(
        "agent {} (instance {}) polling {} with {} slots; runbooks allowed: {}",
        agent.opts.id,
        agent.instance,
        agent
            .opts
            .server_shown
            .clone()
            .unwrap_or_else(|| agent.opts.servers.list()),
        agent.opts.concurrency,
        agent.opts.allow.join(", ")
    );
    let reporter_done = AtomicBool::new(false);
    let stopping = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| agent.reporter(&reporter_done));
        // A stop closes the waiting poll: the server forgets it, so no op is handed out after.
        s.spawn(|| {
            shutdown.wait(Duration::MAX);
            agent.poll_client.close();
        });
        s.spawn(|| agent.companion(&stopping));
        // Workers wait ready, so no thread is started between a poll's answer and the step.
        for _ in 0..agent.opts.concurrency {
            s.spawn(|| agent.op_worker(&stopping));
        }
        for _ in 0..checks::CHECK_THREADS {
            s.spawn(|| agent.check_worker(&stopping));
        }
        agent.poll_loop(shutdown);
        agent.drain();
        stopping.store(true, Ordering::SeqCst);
        agent.op_ready.notify_all();
        reporter_done.store(true, Ordering::SeqCst);
        agent.report_ready.notify_all();
    });
    log::info!("agent {} stopped", agent.opts.id);
    Ok(())
}

impl Agent {
    fn poll_loop(&self, shutdown: &Shutdown) {
        let mut backoff = Duration::from_millis(100);
        let mut last_failure: Option<String> = None;
        let hello = json!({
            "instance": self.instance,
            "tags": self.opts.tags,
            "allow": self.opts.allow,
            "version": env!("CARGO_PKG_VERSION"),
            "hostname": hostname(),
        });
        while !shutdown.is_triggered() {
            // A slot is taken until its op's result is delivered: while the
            // server is slow to take results, no more work is taken than
            // can be reported, so none waits for its report past its deadline.
            let undelivered = self.reports.lock().map(|q| q.len()).unwrap_or(0);
            let free = self
                .opts
                .concurrency
                .saturating_sub(*self.lock_running() + undelivered);
            if free == 0 {
                let guard = self.lock_running();
                let _ = self
                    .slot_freed
                    .wait_timeout(guard, Duration::from_millis(500));
                continue;
            }
            let path = format!(
                "/api/v1/agents/{}/poll?capacity={free}&wait={POLL_WAIT_SECS}",
                self.opts.id
            );
            let answer = self.poll_client.request("POST", &path, Some(&hello));
            if shutdown.is_triggered() {
                if let Ok((200, body)) = &answer {
                    self.refuse_late_ops(body);
                }
                break;
            }
            match answer {
                Ok((200, body)) => {
                    if last_failure.take().is_some() {
                        log::info!(
                            "agent {}: connected to {} again",
                            self.opts.id,
                            self.poll_client.server()
                        );
                    }
                    backoff = Duration::from_millis(100);
                    self.take_checks(&body);
                    for op in body
                        .get("ops")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        *self.lock_running() += 1;
                        lock(&self.queue).push_back(op.clone());
                        self.op_ready.notify_one();
                    }
                }
                other => {
                    let why = match other {
                        Ok((status, body)) => format!(
                            "{status}: {}",
                            body.get("error").and_then(Value::as_str).unwrap_or("")
                        ),
                        Err(e) => e.to_string(),
                    };
                    // Logged when it starts failing and when the reason changes.
                    if last_failure.as_deref() != Some(why.as_str()) {
                        log::warn!(
                            "agent {}: poll failed: {why}; retrying with backoff",
                            self.opts.id
                        );
                        last_failure = Some(why);
                    }
                    if shutdown.wait(jitter(backoff)) {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Ops whose poll answer came after the stop was asked for are not run
    /// (heal declares them lost when their lease passes).
    fn refuse_late_ops(&self, body: &Value) {
        for op in body
            .get("ops")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            log::warn!(
                "op {}: handed out as the agent stops; not run (heal declares it lost after its lease)",
                op.get("id").and_then(Value::as_i64).unwrap_or(-1)
            );
        }
    }

    /// Lets running ops finish within the grace, then stops them.
    fn drain(&self) {
        let deadline = Instant::now() + self.opts.drain_grace;
        let mut guard = self.lock_running();
        if *guard > 0 {
            log::info!(
                "agent {}: waiting up to {:?} for {} running ops",
                self.opts.id,
                self.opts.drain_grace,
                *guard
            );
        }
        while *guard > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "agent {}: stopping {} ops still running after the grace",
                    self.opts.id,
                    *guard
                );
                for r in lock(&self.ops).values() {
                    r.cancel.store(true, Ordering::SeqCst);
                }
                let (g, _) = self
                    .slot_freed
                    .wait_timeout(guard, Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner());
                guard = g;
                continue;
            }
            let (g, _) = self
                .slot_freed
                .wait_timeout(guard, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|e| e.into_inner());
            guard = g;
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, usize> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs ops from the queue until the agent stops.
    fn op_worker(&self, stopping: &AtomicBool) {
        loop {
            let op = {
                let mut queue = lock(&self.queue);
                loop {
                    if let Some(op) = queue.pop_front() {
                        break op;
                    }
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    queue = self
                        .op_ready
                        .wait_timeout(queue, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            self.run_op(&op);
            *self.lock_running() -= 1;
            self.slot_freed.notify_all();
        }
    }

    fn op_path(&self, op_id: i64, what: &str) -> String {
        format!("/api/v1/agents/{}/ops/{op_id}/{what}", self.opts.id)
    }

    fn run_op(&self, op: &Value) {
        let op_id = op.get("id").and_then(Value::as_i64).unwrap_or(-1);
        let runbook = op
            .get("runbook")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !self.opts.allow.iter().any(|p| glob_match(p, &runbook)) {
            let error = format!(
                "agent {} refuses runbook {runbook:?}: not in its --allow list ({})",
                self.opts.id,
                self.opts.allow.join(", ")
            );
            log::warn!("op {op_id}: {error}");
            self.report(
                op_id,
                json!({ "state": "failed", "error": error, "steps": [] }),
            );
            return;
        }
        if let Err(error) = self.check_users(op) {
            log::warn!("op {op_id}: {error}");
            self.report(
                op_id,
                json!({ "state": "failed", "error": error, "steps": [] }),
            );
            return;
        }
        let alert = op.get("alert").unwrap_or(&Value::Null).to_string();
        let alert_file = match self.state.write_alert(op_id, alert.as_bytes()) {
            Ok(path) => path,
            Err(error) => {
                log::error!("op {op_id}: {error}");
                self.report(
                    op_id,
                    json!({ "state": "failed", "error": error, "steps": [] }),
                );
                return;
            }
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let running = Running {
            cancel: cancel.clone(),
            output: None,
            cursor: 0,
            last_stream: Instant::now(),
        };
        lock(&self.ops).insert(op_id, running);
        if self.confirm(op_id, op, &cancel) {
            log::info!("op {op_id}: running runbook {runbook}");
            let result = self.run_tries(op_id, op, &alert_file, &cancel);
            log::info!("op {op_id}: {}", result["state"].as_str().unwrap_or("?"));
            self.report(op_id, result);
        }
        let _ = std::fs::remove_file(&alert_file);
        lock(&self.ops).remove(&op_id);
    }

    /// Checks the `user` of every step before the first one starts, so an
    /// op asking for a user this agent refuses runs nothing.
    fn check_users(&self, op: &Value) -> std::result::Result<(), String> {
        let steps = ["steps", "on_failure"]
            .into_iter()
            .filter_map(|key| op.get(key).and_then(Value::as_array))
            .flatten();
        for step in steps {
            if let Some(user) = step.get("user").and_then(Value::as_str) {
                let group = step.get("group").and_then(Value::as_str);
                users::resolve(user, group, &self.opts.allow_users).map_err(|e| {
                    let name = step.get("name").and_then(Value::as_str).unwrap_or("step");
                    format!("agent {} refuses step {name:?}: {e}", self.opts.id)
                })?;
            }
        }
        Ok(())
    }

    /// Confirms the op with the server before its first step starts (the
    /// start acknowledgement). A 4xx (409: the server declared the op lost,
    /// or it was cancelled) means it must not run; transport failures are
    /// retried until an answer comes or the agent stops the op. Returns
    /// whether to run it.
    fn confirm(&self, op_id: i64, op: &Value, cancel: &AtomicBool) -> bool {
        let body = json!({ "budget_ms": op.get("budget_ms").cloned().unwrap_or(Value::Null) });
        let mut backoff = Duration::from_millis(100);
        loop {
            let why = match self
                .client
                .request("POST", &self.op_path(op_id, "start"), Some(&body))
            {
                Ok((200, _)) => return true,
                Ok((status @ 400..=499, answer)) if status != 408 && status != 429 => {
                    log::warn!(
                        "op {op_id}: not run: the server refused its start ({status}: {})",
                        answer.get("error").and_then(Value::as_str).unwrap_or("")
                    );
                    return false;
                }
                Ok((status, _)) => format!("status {status}"),
                Err(e) => e.to_string(),
            };
            log::warn!("op {op_id}: cannot confirm the start yet ({why}); retrying");
            if pause(jitter(backoff), cancel) {
                log::warn!("op {op_id}: not run: stopped before the server confirmed it");
                return false;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Streams the output of running ops.
    fn companion(&self, stopping: &AtomicBool) {
        while !stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            let now = Instant::now();
            let mut chunks = Vec::new();
            for (id, r) in lock(&self.ops).iter_mut() {
                if let Some((step, output)) = &r.output {
                    if now.duration_since(r.last_stream) >= STREAM_EVERY {
                        r.last_stream = now;
                        let (data, skipped) = output.take_new(&mut r.cursor);
                        if !data.is_empty() || skipped > 0 {
                            chunks.push((*id, *step, data, skipped));
                        }
                    }
                }
            }
            for (op_id, step, data, skipped) in chunks {
                let seq = self.log_seq.fetch_add(1, Ordering::SeqCst);
                let body = json!({ "seq": seq, "step": step, "skipped": skipped, "data": String::from_utf8_lossy(&data) });
                let _ = self
                    .client
                    .request("POST", &self.op_path(op_id, "log"), Some(&body));
            }
        }
    }

    /// Runs the steps; a verification op (`retries`, `interval_ms`) runs them
    /// again after a pause until they succeed or the tries are spent. The
    /// result carries every try's steps.
    fn run_tries(
        &self,
        op_id: i64,
        op: &Value,
        alert_file: &std::path::Path,
        cancel: &AtomicBool,
    ) -> Value {
        let retries = op
            .get("retries")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(1000);
        let interval = Duration::from_millis(
            op.get("interval_ms")
                .and_then(Value::as_u64)
                .unwrap_or(10_000),
        );
        let mut all_steps = Vec::new();
        let mut result = Value::Null;
        for try_no in 0..=retries {
            if try_no > 0 && pause(interval, cancel) {
                break;
            }
            result = self.run_steps(op_id, op, alert_file, cancel);
            let mut steps = result["steps"].take();
            if retries > 0 {
                for st in steps.as_array_mut().into_iter().flatten() {
                    let name = st["name"].as_str().unwrap_or("step").to_string();
                    st["name"] = json!(format!("{name} (try {} of {})", try_no + 1, retries + 1));
                }
            }
            all_steps.extend(steps.as_array().cloned().unwrap_or_default());
            if result["state"] == "succeeded" || cancel.load(Ordering::SeqCst) {
                break;
            }
        }
        result["steps"] = Value::Array(all_steps);
        result
    }

    fn run_steps(
        &self,
        op_id: i64,
        op: &Value,
        alert_file: &std::path::Path,
        cancel: &AtomicBool,
    ) -> Value {
        let fail = |error: String| json!({ "state": "failed", "error": error, "steps": [] });
        let mut env: Vec<(String, String)> = op
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|kv| {
                Some((
                    kv.get(0)?.as_str()?.to_string(),
                    kv.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect();
        env.push(("HEAL_ALERT_JSON".into(), alert_file.display().to_string()));
        env.push(("HEAL_AGENT_ID".into(), self.opts.id.clone()));
        env.push(("HEAL_AGENT_TAGS".into(), self.opts.tags.join(",")));
        let grace =
            Duration::from_millis(op.get("grace_ms").and_then(Value::as_u64).unwrap_or(10_000));
        let max_output = op
            .get("max_output")
            .and_then(Value::as_u64)
            .unwrap_or(256 << 10) as usize;
        let list = |key: &str| -> Vec<Value> {
            op.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let ctx = OpRun {
            op_id,
            state: &self.state,
            user_files: Default::default(),
            grace,
            max_output,
            cancel,
            facts: std::cell::RefCell::new(json!({
                "alert": op.get("alert").cloned().unwrap_or(Value::Null),
                "params": op.get("params").cloned().unwrap_or_else(|| json!({})),
                "steps": {},
            })),
        };
        let mut results = Vec::new();
        let (state, failed) = match self.run_list(&ctx, &list("steps"), &env, "", &mut results) {
            Ok(ended) => ended,
            Err(e) => return fail(e),
        };
        // What runs after a failure (roll back, collect diagnostics) is
        // recorded, and leaves the op failed whatever it does.
        if let (Some(step), false) = (&failed, cancel.load(Ordering::SeqCst)) {
            let mut env = env.clone();
            env.push(("HEAL_FAILED_STEP".into(), step.clone()));
            if let Err(e) = self.run_list(
                &ctx,
                &list("on_failure"),
                &env,
                "on_failure: ",
                &mut results,
            ) {
                return fail(e);
            }
        }
        let error = if cancel.load(Ordering::SeqCst) {
            Some("stopped by the agent (shutdown, or the server gave the op up)".to_string())
        } else {
            None
        };
        json!({ "state": state, "steps": results, "error": error })
    }

    /// Runs `steps` in order, appending each try's result to `results`,
    /// until one fails (unless it may); returns the state they leave and
    /// the step that failed. Err: a step the server sent without a command.
    fn run_list(
        &self,
        ctx: &OpRun,
        steps: &[Value],
        env: &[(String, String)],
        prefix: &str,
        results: &mut Vec<StepResult>,
    ) -> Result<(&'static str, Option<String>), String> {
        let mut state = "succeeded";
        let mut failed = None;
        for step in steps {
            let name = step
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("step")
                .to_string();
            let run = match step.get("run") {
                Some(Value::String(s)) => Run::Shell(s.clone()),
                Some(Value::Array(a)) => Run::Argv(
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                ),
                _ => return Err(format!("step {name:?} has no command")),
            };
            let timeout = Duration::from_millis(
                step.get("timeout_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(300_000),
            );
            if let Some(when) = step.get("when").and_then(Value::as_str) {
                let holds = ctx.when(when);
                if holds != Ok(true) {
                    let (output, skipped) = match &holds {
                        Ok(_) => (format!("[heal: skipped: when `{when}` is false]\n"), true),
                        Err(e) => (format!("[heal: the step did not start: when {e}]\n"), false),
                    };
                    results.push(StepResult {
                        name: format!("{prefix}{name}"),
                        exit_code: None,
                        signal: None,
                        timed_out: false,
                        duration_ms: 0,
                        output,
                        output_bytes: 0,
                        truncated: false,
                        skipped,
                    });
                    ctx.ended(&name, &exec::Outcome::default(), skipped);
                    if skipped {
                        continue;
                    }
                    state = "failed";
                    failed = Some(name);
                    break;
                }
            }
            let retries = step.get("retries").and_then(Value::as_u64).unwrap_or(0);
            let retry_delay = Duration::from_millis(
                step.get("retry_delay_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            );
            // The step's own environment and directory, read here: `${VAR}`
            // is the agent's, and the directory must exist on this host.
            let ready = step_env(step, env).and_then(|mut env| {
                // Secrets from the step's env_files: in its environment,
                // and scrubbed from its output.
                let secret = secrets::env_files(step)?;
                let values: Vec<String> = secret.iter().map(|(_, v)| v.clone()).collect();
                for (name, value) in secret {
                    set_var(&mut env, name, value);
                }
                let cwd = step
                    .get("cwd")
                    .and_then(Value::as_str)
                    .map(std::path::PathBuf::from);
                if let Some(dir) = cwd.as_deref().filter(|d| !d.is_dir()) {
                    return Err(format!(
                        "cwd {} does not exist on this agent (or is not a directory)",
                        dir.display()
                    ));
                }
                let run_as = match step.get("user").and_then(Value::as_str) {
                    None => None,
                    Some(user) => Some(ctx.run_as(
                        user,
                        step.get("group").and_then(Value::as_str),
                        &self.opts.allow_users,
                        &mut env,
                    )?),
                };
                Ok((env, cwd, values, run_as))
            });
            let mut outcome = exec::Outcome::default();
            for attempt in 0..=retries {
                if attempt > 0 && pause(retry_delay, ctx.cancel) {
                    break;
                }
                let secrets = ready.as_ref().map_or(&[][..], |(_, _, v, _)| v.as_slice());
                let output = Arc::new(Output::scrubbing(ctx.max_output, secrets));
                if let Some(r) = lock(&self.ops).get_mut(&ctx.op_id) {
                    r.output = Some((results.len(), output.clone()));
                    r.cursor = 0;
                }
                let mut text = String::new();
                outcome = match &ready {
                    Ok((step_env, cwd, _, run_as)) => {
                        let spec = exec::Step {
                            run: &run,
                            env: step_env,
                            timeout,
                            grace: ctx.grace,
                            stdin: &[],
                            cwd: cwd.as_deref(),
                        };
                        let ended = exec::run_step_as(&spec, run_as.as_ref(), &output, ctx.cancel);
                        output.finish();
                        ended
                    }
                    Err(why) => {
                        text = format!("[heal: the step did not start: {why}]\n");
                        exec::Outcome {
                            spawn_error: Some(why.clone()),
                            ..exec::Outcome::default()
                        }
                    }
                };
                if let Some(r) = lock(&self.ops).get_mut(&ctx.op_id) {
                    r.output = None;
                }
                let (tail, truncated) = output.tail();
                let mut text = String::from_utf8_lossy(&tail).into_owned() + &text;
                if let (Some(e), true) = (&outcome.spawn_error, ready.is_ok()) {
                    text.push_str(&format!("[heal: cannot start step: {e}]\n"));
                }
                results.push(StepResult {
                    name: match (retries, attempt) {
                        (0, _) => format!("{prefix}{name}"),
                        (n, a) => format!("{prefix}{name} (try {} of {})", a + 1, n + 1),
                    },
                    exit_code: outcome.exit_code,
                    signal: outcome.signal,
                    timed_out: outcome.timed_out,
                    duration_ms: outcome.duration_ms,
                    output: text,
                    output_bytes: output.total(),
                    truncated,
                    skipped: false,
                });
                // A step that cannot start fails the same way every time.
                if outcome.success() || outcome.cancelled || ready.is_err() {
                    break;
                }
            }
            ctx.ended(&name, &outcome, false);
            if outcome.success() {
                continue;
            }
            if outcome.timed_out {
                state = "timed_out";
            } else if state == "succeeded" {
                state = "failed";
            }
            let tolerated = step
                .get("continue_on_error")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                && !outcome.cancelled;
            if tolerated {
                state = "succeeded";
                continue;
            }
            failed = Some(name);
            break;
        }
        Ok((state, failed))
    }

    fn report(&self, op_id: i64, result: Value) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((self.op_path(op_id, "result"), result));
        self.report_ready.notify_all();
    }

    /// Delivers results in order, re-sending each until the server acknowledges it.
    fn reporter(&self, done: &AtomicBool) {
        let mut backoff = Duration::from_millis(100);
        let mut flush_deadline: Option<Instant> = None;
        loop {
            let next = {
                let mut queue = self.reports.lock().unwrap_or_else(|e| e.into_inner());
                while queue.is_empty() && !done.load(Ordering::SeqCst) {
                    queue = self
                        .report_ready
                        .wait_timeout(queue, Duration::from_millis(500))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                match queue.front() {
                    Some(r) => r.clone(),
                    None => return,
                }
            };
            if done.load(Ordering::SeqCst) {
                let deadline =
                    *flush_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
                if Instant::now() > deadline {
                    log::error!(
                        "agent {}: could not deliver {} results before exiting",
                        self.opts.id,
                        self.reports.lock().map(|q| q.len()).unwrap_or(0)
                    );
                    return;
                }
            }
            let (path, body) = next;
            match self.client.request("POST", &path, Some(&body)) {
                Ok((200, _)) => {
                    backoff = Duration::from_millis(100);
                    self.reports
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_front();
                    self.slot_freed.notify_all();
                }
                Ok((status @ 400..=499, answer)) if status != 408 && status != 429 => {
                    log::error!(
                        "{path}: the server refused the result ({status}: {}); dropping it",
                        answer.get("error").and_then(Value::as_str).unwrap_or("")
                    );
                    self.reports
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_front();
                    self.slot_freed.notify_all();
                }
                _ => {
                    std::thread::sleep(jitter(backoff));
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// A running op as the companion thread sees it.
struct Running {
    cancel: Arc<AtomicBool>,
    /// The running step's index and output.
    output: Option<(usize, Arc<Output>)>,
    cursor: u64,
    last_stream: Instant,
}

/// Locks a mutex; a panic elsewhere while it was held leaves data that is still usable here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sleeps `d` unless `cancel` is set first; returns whether it was.
fn pause(d: Duration, cancel: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until && !cancel.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(d));
    }
    cancel.load(Ordering::SeqCst)
}

/// Matches `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Random bytes from the kernel as hex; falls back to time and pid.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf).is_err() {
        // Only ids need this to be unique; secrets come from `heal token new`,
        // which fails instead.
        let seed = crate::time::now_ms() as u64 ^ ((std::process::id() as u64) << 32);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed.rotate_left(i as u32 * 7) & 0xff) as u8;
        }
    }
    crate::config::hex(&buf)
}

/// ±50% jitter so many agents do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let r = u64::from_str_radix(&random_hex(2), 16).unwrap_or(0) as f64 / 65535.0;
    d.mul_f64(0.5 + r)
}

/// What every step of one op shares.
struct OpRun<'a> {
    op_id: i64,
    state: &'a StateDir,
    /// The alert files of steps run as other users, by uid, removed with the run.
    user_files: std::cell::RefCell<Vec<(libc::uid_t, std::path::PathBuf, std::fs::File)>>,
    grace: Duration,
    max_output: usize,
    cancel: &'a AtomicBool,
    /// What a step's `when` reads: `alert`, `params`, and `steps`, each
    /// step so far by name with its `exit_code` and `status`.
    facts: std::cell::RefCell<Value>,
}

impl OpRun<'_> {
    /// The account a step runs as, with the op's alert file made readable
    /// to it (its own copy, through a descriptor the step keeps open).
    fn run_as(
        &self,
        user: &str,
        group: Option<&str>,
        allowed: &[String],
        env: &mut Vec<(String, String)>,
    ) -> Result<exec::RunAs, String> {
        use std::os::fd::AsRawFd;
        let mut account = users::resolve(user, group, allowed)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        if account.uid == unsafe { libc::geteuid() } {
            // The agent's own user reads the op's file as it is.
            return Ok(account);
        }
        let mut files = self.user_files.borrow_mut();
        let fd = match files.iter().find(|(uid, _, _)| *uid == account.uid) {
            Some((_, _, file)) => file.as_raw_fd(),
            None => {
                let alert = self.facts.borrow()["alert"].to_string();
                let (path, file) =
                    self.state
                        .write_alert_for(self.op_id, account.uid, alert.as_bytes())?;
                let fd = file.as_raw_fd();
                files.push((account.uid, path, file));
                fd
            }
        };
        account.keep_fd = Some(fd);
        set_var(env, "HEAL_ALERT_JSON".into(), format!("/dev/fd/{fd}"));
        Ok(account)
    }

    /// Whether a step's `when` holds now.
    fn when(&self, source: &str) -> Result<bool, String> {
        let expr = crate::config::Expr::compile(source)?;
        expr.truthy(&crate::config::doc(self.facts.borrow().clone()))
    }

    /// Records how a step ended, for the `when` of the steps after it.
    fn ended(&self, name: &str, outcome: &exec::Outcome, skipped: bool) {
        let status = if skipped {
            "skipped"
        } else if outcome.success() {
            "succeeded"
        } else if outcome.timed_out {
            "timed_out"
        } else {
            "failed"
        };
        self.facts.borrow_mut()["steps"][name] =
            json!({ "exit_code": outcome.exit_code, "status": status });
    }
}

impl Drop for OpRun<'_> {
    fn drop(&mut self) {
        for (_, path, _) in self.user_files.get_mut().drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A step's environment: the op's (`HEAL_*`), then the step's own with each
/// `${VAR}` taken from the agent's environment. A name heal keeps for itself
/// is skipped (the server refuses them too); a variable the agent does not
/// have is the step's failure, named.
fn step_env(step: &Value, base: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    let mut env = base.to_vec();
    for kv in step
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(value)) = (
            kv.get(0).and_then(Value::as_str),
            kv.get(1).and_then(Value::as_str),
        ) else {
            continue;
        };
        if name.to_ascii_uppercase().starts_with("HEAL_") {
            continue;
        }
        let value = crate::config::expand_env(value)
            .map_err(|e| format!("env {name}: {e} on this agent"))?;
        set_var(&mut env, name.to_string(), value);
    }
    Ok(env)
}

/// Sets a variable of a step's environment, over an earlier value.
fn set_var(env: &mut Vec<(String, String)>, name: String, value: String) {
    env.retain(|(k, _)| *k != name);
    env.push((name, value));
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("haproxy-*", "haproxy-reset-queue"));
        assert!(!glob_match("haproxy-*", "nginx-restart"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*-queue", "haproxy-reset-queue"));
    }
}
