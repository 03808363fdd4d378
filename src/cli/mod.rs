//! Command-line types (argh) and one function per subcommand.
//!
//! Results go to stdout, logs and errors to stderr. Exit codes: 0 success,
//! 1 operation failed, 2 usage or configuration error.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use serde_json::{json, Value};

use crate::alert::{self, Alert};
use crate::client::{Client, DEFAULT_SERVER};
use crate::config::{self, Action, Config};
use crate::error::{Error, Result};
use crate::rules;
use crate::server::{self, Shutdown};
use crate::time::format_rfc3339;

mod admin;
mod database;
mod notify;
mod watch;

/// heal: when an alert fires, run the right runbook on the right host, once.
///
/// Exit codes: 0 success, 1 operation failed, 2 usage or configuration error.
/// heal --version prints the version.
#[derive(FromArgs)]
pub struct Heal {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(Serve),
    Agent(AgentCmd),
    CheckConfig(CheckConfig),
    RunRule(RunRule),
    Fire(Fire),
    Events(Events),
    Agents(Agents),
    Approve(Approve),
    Reject(Reject),
    Pause(Pause),
    Pauses(Pauses),
    Resume(Resume),
    Breaker(BreakerCmd),
    Ping(watch::Ping),
    Heartbeats(watch::Heartbeats),
    Probes(watch::Probes),
    Notify(notify::Notify),
    Token(admin::Token),
    Reload(admin::Reload),
    Audit(admin::Audit),
    Backup(database::Backup),
    Migrate(database::Migrate),
    CheckDb(database::CheckDb),
}

/// Run the server: webhooks, rules, dispatch to agents.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct Serve {
    /// config file (default: ./runbooks.toml)
    #[argh(option, default = "PathBuf::from(\"runbooks.toml\")")]
    config: PathBuf,
    /// SQLite database (default: [server] db, else ./heal.db)
    #[argh(option)]
    db: Option<PathBuf>,
    /// address to listen on; port 0 picks a free port (default: [server] listen, else 127.0.0.1:7878)
    #[argh(option)]
    listen: Option<String>,
    /// also run an agent in this process, named after the host
    #[argh(switch)]
    local_agent: bool,
    /// serve plain HTTP on an address other than loopback (only on a network you trust)
    #[argh(switch)]
    insecure_http: bool,
    /// id of the local agent (default: the host name)
    #[argh(option)]
    local_agent_id: Option<String>,
    /// tags of the local agent, comma-separated
    #[argh(option, default = "String::new()")]
    local_agent_tags: String,
}

/// Run an agent: poll the server and run the ops it hands out.
#[derive(FromArgs)]
#[argh(subcommand, name = "agent")]
struct AgentCmd {
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// agent id (default: the host name)
    #[argh(option)]
    id: Option<String>,
    /// bearer token (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// PEM of the private CA that signed the server's certificate (default: $HEAL_CA_FILE)
    #[argh(option)]
    ca_file: Option<PathBuf>,
    /// tags, comma-separated (for { tags = [...] } targets)
    #[argh(option, default = "String::new()")]
    tags: String,
    /// runbook name patterns this agent runs, comma-separated, * and ? allowed (default: *)
    #[argh(option, default = "String::from(\"*\")")]
    allow: String,
    /// ops at once (default: 4)
    #[argh(option, default = "4")]
    concurrency: usize,
    /// seconds running steps may finish after SIGTERM (default: 60)
    #[argh(option, default = "60")]
    drain_grace: u64,
    /// private directory (0700) for alert files (default: $RUNTIME_DIRECTORY/ID, /run/heal-agent/ID as root, else $XDG_RUNTIME_DIR/heal-agent/ID, else TMPDIR/heal-agent-UID/ID)
    #[argh(option)]
    state_dir: Option<PathBuf>,
}

/// Validate a config file.
#[derive(FromArgs)]
#[argh(subcommand, name = "check-config")]
struct CheckConfig {
    /// config file (default: ./runbooks.toml)
    #[argh(option, default = "PathBuf::from(\"runbooks.toml\")")]
    config: PathBuf,
}

/// Show what heal would decide for a sample alert; runs nothing.
#[derive(FromArgs)]
#[argh(subcommand, name = "run-rule")]
struct RunRule {
    /// alert file: an Alertmanager payload or heal's own format; - or nothing reads stdin
    #[argh(positional)]
    alert: Option<PathBuf>,
    /// config file (default: ./runbooks.toml)
    #[argh(option, default = "PathBuf::from(\"runbooks.toml\")")]
    config: PathBuf,
    /// context as guards see it (JSON, the shape of GET /api/v1/context): events, alerts, agents, pauses, breaker
    #[argh(option)]
    context: Option<PathBuf>,
    /// take the live context of this running server instead
    #[argh(option)]
    server: Option<String>,
    /// bearer token for --server (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token for --server
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print the trace as JSON
    #[argh(switch)]
    json: bool,
}

/// Send an alert to the server: heal fire NAME [LABEL=VALUE ...].
#[derive(FromArgs)]
#[argh(subcommand, name = "fire")]
struct Fire {
    /// alert name, then LABEL=VALUE pairs
    #[argh(positional)]
    args: Vec<String>,
    /// annotation KEY=VALUE (repeatable)
    #[argh(option)]
    annotation: Vec<String>,
    /// send the alert as resolved
    #[argh(switch)]
    resolved: bool,
    /// send this JSON file instead (Alertmanager payload or heal's own format)
    #[argh(option)]
    file: Option<PathBuf>,
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// bearer token (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print the server's answer as JSON
    #[argh(switch)]
    json: bool,
}

/// List events, or show one: heal events [show ID].
#[derive(FromArgs)]
#[argh(subcommand, name = "events")]
struct Events {
    /// show ID, or nothing to list events
    #[argh(positional)]
    args: Vec<String>,
    /// only events in these states (comma-separated)
    #[argh(option)]
    state: Option<String>,
    /// only events of this rule
    #[argh(option)]
    rule: Option<String>,
    /// only events of this key
    #[argh(option)]
    key: Option<String>,
    /// most events listed (default: 50)
    #[argh(option, default = "50")]
    limit: u32,
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// bearer token (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// List agents, or forget one that is gone: heal agents [forget ID].
#[derive(FromArgs)]
#[argh(subcommand, name = "agents")]
struct Agents {
    /// forget ID, or nothing to list agents
    #[argh(positional)]
    args: Vec<String>,
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// bearer token (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// Approve an event waiting for approval: it runs once.
#[derive(FromArgs)]
#[argh(subcommand, name = "approve")]
struct Approve {
    /// event id
    #[argh(positional)]
    id: i64,
    /// why (recorded on the timeline)
    #[argh(option, default = "String::new()")]
    reason: String,
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// bearer token with the admin scope (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// Reject an event waiting for approval: it is cancelled and never runs.
#[derive(FromArgs)]
#[argh(subcommand, name = "reject")]
struct Reject {
    /// event id
    #[argh(positional)]
    id: i64,
    /// why (recorded on the timeline)
    #[argh(option, default = "String::new()")]
    reason: String,
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// bearer token with the admin scope (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// Pause automation for a while: heal pause --runbook R | --target AGENT | --match EXPR | --all --for 30m --reason TEXT.
#[derive(FromArgs)]
#[argh(subcommand, name = "pause")]
struct Pause {
    /// pause this runbook
    #[argh(option)]
    runbook: Option<String>,
    /// pause runs on this agent
    #[argh(option)]
    target: Option<String>,
    /// pause alerts matching this JMESPath expression (over labels, annotations, name, ...)
    #[argh(option, long = "match")]
    matches: Option<String>,
    /// pause all automation
    #[argh(switch)]
    all: bool,
    /// how long, like 30m or 2h
    #[argh(option, long = "for")]
    duration: String,
    /// why (shown on every decision it pauses)
    #[argh(option)]
    reason: String,
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// bearer token with the admin scope (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// List active pauses (--all: also those ended in the last day).
#[derive(FromArgs)]
#[argh(subcommand, name = "pauses")]
struct Pauses {
    /// also pauses that ended in the last day
    #[argh(switch)]
    all: bool,
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// bearer token (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// End a pause now: heal resume ID.
#[derive(FromArgs)]
#[argh(subcommand, name = "resume")]
struct Resume {
    /// pause id
    #[argh(positional)]
    id: i64,
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// bearer token with the admin scope (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
}

/// Show the safety breaker, or: heal breaker reset | heal breaker trip --reason TEXT.
#[derive(FromArgs)]
#[argh(subcommand, name = "breaker")]
struct BreakerCmd {
    /// nothing to show it, reset to close it, trip to open it
    #[argh(positional)]
    action: Option<String>,
    /// why (required for trip)
    #[argh(option, default = "String::new()")]
    reason: String,
    /// server URL (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Option<String>,
    /// bearer token (admin scope to reset or trip; default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// A command whose reader goes away (`heal events | head -1`) ends as
/// other Unix tools do, by SIGPIPE, instead of panicking at its next print.
/// Rust ignores SIGPIPE so that a write to a closed socket is an error;
/// sockets are written with MSG_NOSIGNAL, so this changes only pipes. Not
/// for `serve` and `agent`, which write to the pipes of the commands they
/// run and must outlive a command that closed its stdin, nor for `ping`,
/// whose wrapped job must be reported however its output is read.
pub fn print_to_a_closed_pipe_ends_quietly() {
    // SAFETY: sets one signal's disposition back to its default, before
    // this command starts any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs the parsed command.
pub fn run(heal: Heal) -> Result<()> {
    if !matches!(
        heal.command,
        Command::Serve(_) | Command::Agent(_) | Command::Ping(_)
    ) {
        print_to_a_closed_pipe_ends_quietly();
    }
    match heal.command {
        Command::Serve(c) => serve(c),
        Command::Agent(c) => agent(c),
        Command::CheckConfig(c) => {
            let config = config::load(&c.config)?;
            println!("{}", config::summary(&config));
            Ok(())
        }
        Command::RunRule(c) => run_rule(c),
        Command::Fire(c) => fire(c),
        Command::Events(c) => events(c),
        Command::Agents(c) => agents(c),
        Command::Approve(c) => decide_approval(
            c.id,
            true,
            &c.reason,
            client(c.server, c.token, c.token_file)?,
            c.json,
        ),
        Command::Reject(c) => decide_approval(
            c.id,
            false,
            &c.reason,
            client(c.server, c.token, c.token_file)?,
            c.json,
        ),
        Command::Pause(c) => pause(c),
        Command::Pauses(c) => pauses(c),
        Command::Resume(c) => {
            let answer = client(c.server, c.token, c.token_file)?
                .post(&format!("/api/v1/pauses/{}/resume", c.id), &json!({}))?;
            println!("pause {} ended", answer["resumed"]);
            Ok(())
        }
        Command::Breaker(c) => breaker(c),
        Command::Ping(c) => watch::ping(c),
        Command::Heartbeats(c) => watch::heartbeats(c),
        Command::Probes(c) => watch::probes(c),
        Command::Notify(c) => notify::notify(c),
        Command::Token(c) => admin::token(c),
        Command::Reload(c) => admin::reload(c),
        Command::Audit(c) => admin::audit(c),
        Command::Backup(c) => database::backup(c),
        Command::Migrate(c) => database::migrate(c),
        Command::CheckDb(c) => database::check_db(c),
    }
}

fn serve(c: Serve) -> Result<()> {
    let config = config::load(&c.config)?;
    let local_agent = c.local_agent.then(|| server::LocalAgent {
        id: c.local_agent_id.unwrap_or_else(crate::agent::hostname),
        tags: split_list(&c.local_agent_tags),
        concurrency: 4,
    });
    let shutdown = Arc::new(Shutdown::default());
    server::serve(
        server::Options {
            config,
            listen: c.listen,
            db: c.db,
            local_agent,
            insecure_http: c.insecure_http,
        },
        shutdown,
    )
}

fn agent(c: AgentCmd) -> Result<()> {
    if c.concurrency == 0 {
        return Err(Error::Usage("--concurrency must be at least 1\nTry: heal agent --server URL --id ID --concurrency 4".into()));
    }
    let opts = crate::agent::Options {
        server: server_url(c.server),
        server_shown: None,
        id: c.id.unwrap_or_else(crate::agent::hostname),
        token: token(c.token, c.token_file)?,
        tags: split_list(&c.tags),
        allow: split_list(&c.allow),
        concurrency: c.concurrency,
        drain_grace: Duration::from_secs(c.drain_grace),
        ca_file: c.ca_file.or_else(ca_file_env),
        state_dir: c.state_dir,
    };
    let shutdown = Arc::new(Shutdown::default());
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]);
    let mut signals = signals.map_err(|e| Error::Io("cannot install signal handlers".into(), e))?;
    let handle = signals.handle();
    let result = std::thread::scope(|s| {
        let sd = shutdown.clone();
        s.spawn(move || {
            if let Some(signal) = signals.forever().next() {
                log::info!("signal {signal}: draining and stopping");
                sd.trigger();
            }
        });
        let result = crate::agent::run(opts, &shutdown);
        handle.close();
        result
    });
    result
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn server_url(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("HEAL_SERVER").ok())
        .unwrap_or_else(|| DEFAULT_SERVER.into())
}

fn token(flag: Option<String>, file: Option<PathBuf>) -> Result<Option<String>> {
    if let Some(t) = flag {
        eprintln!("heal: warning: --token on the command line is visible to every local user (ps, /proc/PID/cmdline): pass --token-file FILE or set HEAL_TOKEN instead");
        return Ok(Some(t));
    }
    if let Some(f) = file {
        let t = std::fs::read_to_string(&f)
            .map_err(|e| Error::Usage(format!("--token-file {}: {e}", f.display())))?;
        return Ok(Some(t.trim().to_string()));
    }
    Ok(std::env::var("HEAL_TOKEN").ok().filter(|t| !t.is_empty()))
}

fn client(server: Option<String>, tok: Option<String>, file: Option<PathBuf>) -> Result<Client> {
    Client::new(
        &server_url(server),
        token(tok, file)?,
        Duration::from_secs(30),
        ca_file_env().as_deref(),
    )
}

/// `HEAL_CA_FILE`: the private CA client commands trust for an https server.
fn ca_file_env() -> Option<PathBuf> {
    std::env::var_os("HEAL_CA_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn read_json_file(path: Option<&PathBuf>) -> Result<Value> {
    let (name, text) = match path {
        Some(p) if p.as_os_str() != "-" => (
            p.display().to_string(),
            std::fs::read_to_string(p)
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", p.display())))?,
        ),
        _ => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| Error::Io("reading stdin".into(), e))?;
            ("stdin".into(), text)
        }
    };
    serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{name}: not JSON: {e}")))
}

fn run_rule(c: RunRule) -> Result<()> {
    let config = config::load(&c.config)?;
    let ctx = match (&c.context, &c.server) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "give --context FILE or --server URL, not both\nTry: heal run-rule alert.json --server http://127.0.0.1:7878".into(),
            ))
        }
        (Some(file), None) => read_json_file(Some(file))?,
        (None, Some(_)) => client(c.server.clone(), c.token.clone(), c.token_file.clone())?.get("/api/v1/context")?,
        (None, None) => json!({}),
    };
    if !ctx.is_object() {
        return Err(Error::Usage(
            "the context must be a JSON object like GET /api/v1/context answers".into(),
        ));
    }
    // A saved context is judged at the time it was taken.
    let now = ctx["now"].as_i64().unwrap_or_else(crate::time::now_ms);
    let body = read_json_file(c.alert.as_ref())?;
    let alerts = alert::from_any(&body).map_err(|e| Error::Usage(format!("not an alert: {e}")))?;
    let traces: Vec<Value> = alerts
        .iter()
        .map(|a| trace(&config, a, &ctx, now))
        .collect();
    if c.json {
        print_json(&json!({ "alerts": traces }));
    } else {
        if c.context.is_none() && c.server.is_none() {
            println!("no context given (--context FILE or --server URL): decided as if no event, pause or breaker existed\n");
        }
        for t in &traces {
            print!("{}", render_trace(t));
        }
    }
    Ok(())
}

/// The decision trace for one alert, from the same functions the server uses.
fn trace(config: &Config, alert: &Alert, ctx: &Value, now: i64) -> Value {
    let mut out = json!({
        "alert": { "name": alert.name, "status": alert.status.as_str(), "fingerprint": alert.fingerprint, "labels": alert.labels },
    });
    if !rules::needs_decision(alert) {
        out["note"] = json!("resolved alerts get no decision: the server closes what waits on them and records the resolution on their events");
        return out;
    }
    let eval = rules::evaluate(config, alert);
    out["tried"] = eval
        .tried
        .iter()
        .zip(&config.rules)
        .map(|(t, r)| json!({ "rule": t.rule, "line": r.line, "matched": t.matched, "note": t.note }))
        .collect();
    if eval.matches.is_empty() {
        let d = rules::unmatched();
        out["decisions"] = json!([{ "outcome": d.outcome.as_str(), "reason": d.reason }]);
        return out;
    }
    let alert_doc = crate::config::doc(alert.doc());
    let guard_doc = rules::guard_doc(alert, ctx);
    let decisions: Vec<Value> = eval
        .matches
        .iter()
        .map(|m| {
            let rule = &config.rules[m.rule_idx];
            let mut m = m.clone();
            if !m.target_tags.is_empty() {
                m.targets = rules::agents_tagged(ctx, &m.target_tags);
            }
            let facts = rules::facts(ctx, rule, &m, &alert_doc, now);
            let mut guard_result = None;
            let mut guard = || {
                let r = rule.unless.as_ref().map_or(Ok(false), |u| u.truthy(&guard_doc));
                guard_result = Some(r.clone());
                r
            };
            let d = rules::decide(&m, rule, &config.safety, &facts, &mut guard);
            let mut v = json!({
                "rule": m.rule, "outcome": d.outcome.as_str(), "reason": d.reason, "event_id": d.event,
                "key": m.key, "targets": m.targets, "target_tags": m.target_tags, "params": m.params,
                "facts": {
                    "open_event": facts.open_event.as_ref().map(|e| json!({"id": e.id, "state": e.state})),
                    "last_run": facts.last_run.as_ref().map(|e| json!({"id": e.id, "state": e.state, "ended_at": e.at})),
                    "attempts": facts.attempts.iter().map(|e| json!({"id": e.id, "state": e.state, "started_at": e.at})).collect::<Vec<_>>(),
                    "pause": facts.pause.as_ref().map(|p| json!({"id": p.id, "covers": p.what, "reason": p.reason})),
                    "breaker": {"open": facts.breaker.open, "runs_last_hour": facts.breaker.runs_last_hour, "failed_in_row": facts.breaker.failed_in_row},
                    "guard": match &guard_result { None => Value::Null, Some(Ok(b)) => json!(b), Some(Err(e)) => json!(format!("error: {e}")) },
                },
            });
            if let Some(live) = d.live {
                v["live_outcome"] = json!(live.as_str());
            }
            if let Action::Run(rb) = &m.action {
                if let Some(runbook) = config.runbooks.get(rb) {
                    let env = rules::environment(0, &m.rule, rb, alert, &m.params);
                    v["runbook"] = json!(rb);
                    v["description"] = json!(runbook.description);
                    v["steps"] = runbook.steps.iter().map(|s| json!({ "name": s.name, "run": s.run.to_string(), "timeout": crate::time::format_duration(s.timeout) })).collect();
                    v["environment"] = env.iter().map(|(k, v)| json!([k, v])).collect();
                }
            }
            v
        })
        .collect();
    out["decisions"] = Value::Array(decisions);
    out
}

fn render_trace(t: &Value) -> String {
    let mut s = String::new();
    let a = &t["alert"];
    s.push_str(&format!(
        "alert {} ({}) fingerprint {}\n",
        str_of(&a["name"]),
        str_of(&a["status"]),
        str_of(&a["fingerprint"])
    ));
    let labels: Vec<String> = a["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", str_of(v)))
        .collect();
    s.push_str(&format!("  labels: {}\n", labels.join(" ")));
    if let Some(note) = t["note"].as_str() {
        s.push_str(&format!("  {note}\n\n"));
        return s;
    }
    for tr in t["tried"].as_array().into_iter().flatten() {
        let mark = if tr["matched"].as_bool() == Some(true) {
            "match"
        } else {
            "no"
        };
        s.push_str(&format!(
            "  rule {:<24} {:<6} {mark:<5} {}\n",
            format!("{:?}", str_of(&tr["rule"])),
            format!("line {}", tr["line"]),
            str_of(&tr["note"])
        ));
    }
    for d in t["decisions"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  decision: {}: {}\n",
            str_of(&d["outcome"]),
            str_of(&d["reason"])
        ));
        if d.get("key").is_some() {
            s.push_str(&format!("    key: {}\n", str_of(&d["key"])));
            let f = &d["facts"];
            let mut known = Vec::new();
            if let Some(e) = f["open_event"].as_object() {
                known.push(format!("open event {} ({})", e["id"], str_of(&e["state"])));
            }
            if let Some(e) = f["last_run"].as_object() {
                known.push(format!(
                    "last run event {} ({})",
                    e["id"],
                    str_of(&e["state"])
                ));
            }
            let attempts = f["attempts"].as_array().map_or(0, Vec::len);
            known.push(format!("{attempts} attempts in the window"));
            if f["breaker"]["open"].as_bool() == Some(true) {
                known.push("breaker open".into());
            }
            if let Some(p) = f["pause"].as_object() {
                known.push(format!("paused by pause {}", p["id"]));
            }
            if !f["guard"].is_null() {
                known.push(format!("guard holds: {}", f["guard"]));
            }
            s.push_str(&format!("    known: {}\n", known.join(", ")));
            let targets: Vec<&str> = d["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            s.push_str(&format!(
                "    target: {}\n",
                if targets.is_empty() {
                    format!("agents tagged {}", d["target_tags"])
                } else {
                    targets.join(", ")
                }
            ));
        }
        if let Some(rb) = d["runbook"].as_str() {
            s.push_str(&format!(
                "    runbook: {rb}: {}\n",
                str_of(&d["description"])
            ));
            for st in d["steps"].as_array().into_iter().flatten() {
                s.push_str(&format!(
                    "      step {:?}: {} (timeout {})\n",
                    str_of(&st["name"]),
                    str_of(&st["run"]),
                    str_of(&st["timeout"])
                ));
            }
            s.push_str("    environment (HEAL_EVENT_ID is the event's id; HEAL_ALERT_JSON names a file holding the alert):\n");
            for kv in d["environment"].as_array().into_iter().flatten() {
                s.push_str(&format!(
                    "      {}={}\n",
                    str_of(&kv[0]),
                    shell_quote(str_of(&kv[1]))
                ));
            }
        }
    }
    s.push('\n');
    s
}

/// Prints JSON for scripts (`--json`).
fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialize")
    );
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Quotes a value for display so hostile text is shown, not interpreted.
fn shell_quote(v: &str) -> String {
    let shown: String = v.chars().take(200).collect();
    let more = if v.chars().count() > 200 {
        format!(" …({} bytes)", v.len())
    } else {
        String::new()
    };
    format!(
        "'{}'{more}",
        shown.replace('\'', "'\\''").replace('\n', "\\n")
    )
}

fn fire(c: Fire) -> Result<()> {
    let client = client(c.server, c.token, c.token_file)?;
    let answer = if let Some(file) = &c.file {
        let body = read_json_file(Some(file))?;
        let is_am = body.get("alerts").is_some()
            && (body.get("version").is_some() || body.get("receiver").is_some());
        let path = if is_am {
            "/api/v1/alerts/alertmanager"
        } else {
            "/api/v1/alerts"
        };
        client.post(path, &body)?
    } else {
        let usage = || {
            Error::Usage(
                "give an alert name\nTry: heal fire DiskSpaceLow instance=web-1 severity=warning"
                    .into(),
            )
        };
        let (name, pairs) = c.args.split_first().ok_or_else(usage)?;
        let labels = parse_pairs(pairs, "label")?;
        let annotations = parse_pairs(&c.annotation, "--annotation")?;
        let status = if c.resolved { "resolved" } else { "firing" };
        client.post("/api/v1/alerts", &json!({ "name": name, "labels": labels, "annotations": annotations, "status": status }))?
    };
    if c.json {
        println!("{answer}");
        return Ok(());
    }
    for a in answer["alerts"].as_array().into_iter().flatten() {
        println!(
            "alert {} {} ({})",
            str_of(&a["name"]),
            str_of(&a["fingerprint"]),
            str_of(&a["status"])
        );
        for d in a["decisions"].as_array().into_iter().flatten() {
            let event = d["event_id"]
                .as_i64()
                .map(|id| format!(" → event {id} (heal events show {id})"))
                .unwrap_or_default();
            println!(
                "  {}: {}{event}",
                str_of(&d["outcome"]),
                str_of(&d["reason"])
            );
        }
        if let Some(r) = a["recorded"].as_str() {
            println!("  {r}");
        }
    }
    Ok(())
}

fn parse_pairs(pairs: &[String], what: &str) -> Result<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "{what} {p:?} is not KEY=VALUE\nTry: heal fire DiskSpaceLow instance=web-1"
            ))
        })?;
        map.insert(k.to_string(), json!(v));
    }
    Ok(map)
}

fn events(c: Events) -> Result<()> {
    let filters = filter_query(
        "/api/v1/events",
        &[("state", &c.state), ("rule", &c.rule), ("key", &c.key)],
    )?;
    let client = client(c.server, c.token, c.token_file)?;
    let id = match c.args.as_slice() {
        [] => None,
        [cmd, id] if cmd == "show" => Some(id.clone()),
        [id] if id.parse::<i64>().is_ok() => Some(id.clone()),
        _ => {
            return Err(Error::Usage(
                "heal events takes nothing, or show ID\nTry: heal events show 12".into(),
            ))
        }
    };
    if let Some(id) = id {
        let id: i64 = id.parse().map_err(|_| {
            Error::Usage(format!(
                "{id:?} is not an event id\nTry: heal events show 12"
            ))
        })?;
        let event = client.get(&format!("/api/v1/events/{id}"))?;
        if c.json {
            print_json(&event);
        } else {
            print!("{}", render_event(&event));
        }
        return Ok(());
    }
    let list = client.get(&format!("/api/v1/events?limit={}{filters}", c.limit))?;
    if c.json {
        print_json(&list["events"]);
        return Ok(());
    }
    println!(
        "{:>6}  {:<16}  {:<24}  {:<20}  {:>4}  created",
        "ID", "STATE", "RULE", "RUNBOOK", "HITS"
    );
    for e in list["events"].as_array().into_iter().flatten() {
        println!(
            "{:>6}  {:<16}  {:<24}  {:<20}  {:>4}  {}",
            e["id"].to_string(),
            str_of(&e["state"]),
            str_of(&e["rule"]),
            str_of(&e["runbook"]),
            e["hits"].to_string(),
            e["created_at"]
                .as_i64()
                .map(format_rfc3339)
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn render_event(e: &Value) -> String {
    let mut s = format!(
        "event {}  {}  rule {}  runbook {}  hits {}  mode {}\n  key: {}\n",
        e["id"],
        str_of(&e["state"]),
        str_of(&e["rule"]),
        str_of(&e["runbook"]),
        e["hits"],
        str_of(&e["mode"]),
        str_of(&e["key"])
    );
    if let Some(r) = e["reason"].as_str() {
        s.push_str(&format!("  why: {r}\n"));
    }
    if let Some(by) = e["decided_by"].as_str() {
        s.push_str(&format!("  approved or rejected by: {by}\n"));
    }
    if let (Some(d), true) = (e["deadline"].as_i64(), e["ended_at"].is_null()) {
        let what = if e["state"] == "pending_approval" {
            "approval expires"
        } else {
            "verification window ends"
        };
        s.push_str(&format!("  {what}: {}\n", format_rfc3339(d)));
    }
    if let Some(a) = e.get("alert").filter(|a| !a.is_null()) {
        let labels: Vec<String> = a["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", shell_quote(str_of(v))))
            .collect();
        s.push_str(&format!(
            "  alert: {} ({}) {}\n    labels: {}\n",
            str_of(&a["name"]),
            str_of(&a["status"]),
            str_of(&a["fingerprint"]),
            labels.join(" ")
        ));
    }
    s.push_str("timeline:\n");
    for t in e["timeline"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  {}  {:<14} {}\n",
            t["at"].as_i64().map(format_rfc3339).unwrap_or_default(),
            str_of(&t["kind"]),
            str_of(&t["message"])
        ));
    }
    for op in e["ops"].as_array().into_iter().flatten() {
        let kind = if op["kind"] == "verify" {
            "verification "
        } else {
            ""
        };
        s.push_str(&format!(
            "{kind}op {} on agent {}: {}",
            op["id"],
            str_of(&op["agent"]),
            str_of(&op["state"])
        ));
        if let Some(err) = op["error"].as_str() {
            s.push_str(&format!(" ({err})"));
        }
        s.push('\n');
        for st in op["steps"].as_array().into_iter().flatten() {
            let how = match (st["exit_code"].as_i64(), st["signal"].as_i64()) {
                _ if st["timed_out"].as_bool() == Some(true) => "timed out".to_string(),
                (Some(c), _) => format!("exit {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "did not start".into(),
            };
            s.push_str(&format!(
                "  step {:?}: {how} in {}ms\n",
                str_of(&st["name"]),
                st["duration_ms"]
            ));
            if st["truncated"].as_bool() == Some(true) {
                s.push_str(&format!(
                    "    (output: last part of {} bytes)\n",
                    st["output_bytes"]
                ));
            }
            for line in str_of(&st["output"]).lines() {
                s.push_str(&format!("    | {line}\n"));
            }
        }
        let live = str_of(&op["live_output"]);
        if !live.is_empty() {
            s.push_str("  output so far:\n");
            for line in live.lines() {
                s.push_str(&format!("    | {line}\n"));
            }
        }
    }
    s
}

fn agents(c: Agents) -> Result<()> {
    let forget = match c.args.as_slice() {
        [] => None,
        [cmd, id] if cmd == "forget" => Some(id.clone()),
        _ => {
            return Err(Error::Usage(
                "heal agents takes nothing, or forget ID\nTry: heal agents forget web-1".into(),
            ))
        }
    };
    let client = client(c.server, c.token, c.token_file)?;
    if let Some(id) = forget {
        let answer = client.delete(&format!("/api/v1/agents/{}", encode(&id)))?;
        if c.json {
            print_json(&answer);
        } else {
            println!("agent {id} forgotten");
        }
        return Ok(());
    }
    let list = client.get("/api/v1/agents")?;
    if c.json {
        print_json(&list["agents"]);
        return Ok(());
    }
    println!(
        "{:<24}  {:<8}  {:>7}  {:>6}  {:<20}  last seen",
        "ID", "POLLING", "RUNNING", "QUEUED", "TAGS"
    );
    for a in list["agents"].as_array().into_iter().flatten() {
        let tags: Vec<&str> = a["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<24}  {:<8}  {:>7}  {:>6}  {:<20}  {}",
            str_of(&a["id"]),
            if a["polling"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            a["running_ops"].to_string(),
            a["queued_ops"].to_string(),
            tags.join(","),
            a["last_seen"]
                .as_i64()
                .map(format_rfc3339)
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `&name=value` for each filter given, each checked as the server checks
/// it (`api::filters`): a value the server would refuse ends here, with exit
/// 2 and the server's words.
fn filter_query(template: &str, filters: &[(&str, &Option<String>)]) -> Result<String> {
    let mut query = String::new();
    for (name, value) in filters {
        if let Some(v) = value {
            server::api::filters::check_value("GET", template, name, v).map_err(Error::Usage)?;
            query.push_str(&format!("&{name}={}", encode(v)));
        }
    }
    Ok(query)
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decide_approval(
    id: i64,
    approve: bool,
    reason: &str,
    client: Client,
    json_out: bool,
) -> Result<()> {
    let verb = if approve { "approve" } else { "reject" };
    let answer = client.post(
        &format!("/api/v1/events/{id}/{verb}"),
        &json!({ "reason": reason }),
    )?;
    if json_out {
        println!("{answer}");
        return Ok(());
    }
    let e = &answer["event"];
    println!(
        "event {id} {}: {} (heal events show {id})",
        if approve { "approved" } else { "rejected" },
        str_of(&e["state"])
    );
    Ok(())
}

fn pause(c: Pause) -> Result<()> {
    if c.runbook.is_none() && c.target.is_none() && c.matches.is_none() && !c.all {
        return Err(Error::Usage(
            "say what to pause: --runbook NAME, --target AGENT, --match EXPR, or --all\nTry: heal pause --runbook restart-service --for 30m --reason 'deploy in progress'".into(),
        ));
    }
    let body = json!({
        "runbook": c.runbook, "target": c.target, "match": c.matches, "all": c.all,
        "for": c.duration, "reason": c.reason,
    });
    let answer = client(c.server, c.token, c.token_file)?.post("/api/v1/pauses", &body)?;
    if c.json {
        println!("{answer}");
        return Ok(());
    }
    let p = &answer["pause"];
    println!(
        "pause {} until {} (heal resume {} ends it early)",
        p["id"],
        p["until"].as_i64().map(format_rfc3339).unwrap_or_default(),
        p["id"]
    );
    Ok(())
}

fn pauses(c: Pauses) -> Result<()> {
    let path = if c.all {
        "/api/v1/pauses?all=true"
    } else {
        "/api/v1/pauses"
    };
    let list = client(c.server, c.token, c.token_file)?.get(path)?;
    if c.json {
        print_json(&list["pauses"]);
        return Ok(());
    }
    println!(
        "{:>4}  {:<7}  {:<20}  {:<30}  {:<10}  reason",
        "ID", "ACTIVE", "UNTIL", "COVERS", "BY"
    );
    for p in list["pauses"].as_array().into_iter().flatten() {
        let mut covers = Vec::new();
        for (k, label) in [
            ("runbook", "runbook"),
            ("target", "agent"),
            ("match", "match"),
        ] {
            if let Some(v) = p[k].as_str() {
                covers.push(format!("{label} {v}"));
            }
        }
        if covers.is_empty() {
            covers.push("all automation".into());
        }
        println!(
            "{:>4}  {:<7}  {:<20}  {:<30}  {:<10}  {}",
            p["id"].to_string(),
            if p["active"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            p["until"].as_i64().map(format_rfc3339).unwrap_or_default(),
            covers.join(", "),
            str_of(&p["created_by"]),
            str_of(&p["reason"])
        );
    }
    Ok(())
}

fn breaker(c: BreakerCmd) -> Result<()> {
    let client = client(c.server, c.token, c.token_file)?;
    let b = match c.action.as_deref() {
        None | Some("show") | Some("status") => client.get("/api/v1/breaker")?,
        Some("reset") => {
            client.post("/api/v1/breaker/reset", &json!({ "reason": c.reason }))?["breaker"].clone()
        }
        Some("trip") => {
            if c.reason.trim().is_empty() {
                return Err(Error::Usage(
                    "say why: heal breaker trip --reason TEXT\nTry: heal breaker trip --reason 'runbooks misbehave, stopping all automation'".into(),
                ));
            }
            client.post("/api/v1/breaker/trip", &json!({ "reason": c.reason }))?["breaker"].clone()
        }
        Some(other) => {
            return Err(Error::Usage(format!(
                "heal breaker takes nothing, reset or trip (got {other:?})\nTry: heal breaker reset"
            )))
        }
    };
    if c.json {
        println!("{b}");
        return Ok(());
    }
    println!(
        "breaker {}: {} ({} by {})",
        str_of(&b["state"]),
        str_of(&b["reason"]),
        b["changed_at"]
            .as_i64()
            .filter(|&t| t > 0)
            .map(format_rfc3339)
            .unwrap_or_else(|| "never".into()),
        str_of(&b["changed_by"])
    );
    println!(
        "  since it last changed: {} runs in the last hour, {} failed events in a row",
        b["runs_last_hour"], b["failed_in_row"]
    );
    Ok(())
}
