//! Command-line types (argh) and one function per subcommand, grouped by
//! what they touch: `serve` (the processes and `agents`), `trace`
//! (`check-config`, `run-rule`), `events`, `safety`, `watch`, `notify`,
//! `admin`, `database`. This file holds the top-level command and the
//! helpers they share (the client, JSON output, list filters).
//!
//! Results go to stdout, logs and errors to stderr. Exit codes: 0 success,
//! 1 operation failed, 2 usage or configuration error.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use serde_json::Value;

use crate::client::{Client, Servers, DEFAULT_SERVER};
use crate::error::{Error, Result};
use crate::server;

mod admin;
mod database;
mod events;
mod notify;
mod safety;
mod serve;
mod trace;
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
    Serve(serve::Serve),
    Agent(serve::AgentCmd),
    CheckConfig(trace::CheckConfig),
    RunRule(trace::RunRule),
    Fire(events::Fire),
    Events(events::Events),
    Agents(serve::Agents),
    Approve(events::Approve),
    Reject(events::Reject),
    Pause(safety::Pause),
    Pauses(safety::Pauses),
    Resume(safety::Resume),
    Breaker(safety::BreakerCmd),
    Ping(watch::Ping),
    Heartbeats(watch::Heartbeats),
    Probes(watch::Probes),
    Notify(notify::Notify),
    Token(admin::Token),
    Reload(admin::Reload),
    Audit(admin::Audit),
    Status(admin::Status),
    Backup(database::Backup),
    Migrate(database::Migrate),
    CheckDb(database::CheckDb),
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
        Command::Serve(c) => serve::serve(c),
        Command::Agent(c) => serve::agent(c),
        Command::CheckConfig(c) => trace::check_config(c),
        Command::RunRule(c) => trace::run_rule(c),
        Command::Fire(c) => events::fire(c),
        Command::Events(c) => events::events(c),
        Command::Agents(c) => serve::agents(c),
        Command::Approve(c) => events::approve(c),
        Command::Reject(c) => events::reject(c),
        Command::Pause(c) => safety::pause(c),
        Command::Pauses(c) => safety::pauses(c),
        Command::Resume(c) => safety::resume(c),
        Command::Breaker(c) => safety::breaker(c),
        Command::Ping(c) => watch::ping(c),
        Command::Heartbeats(c) => watch::heartbeats(c),
        Command::Probes(c) => watch::probes(c),
        Command::Notify(c) => notify::notify(c),
        Command::Token(c) => admin::token(c),
        Command::Reload(c) => admin::reload(c),
        Command::Audit(c) => admin::audit(c),
        Command::Status(c) => admin::status(c),
        Command::Backup(c) => database::backup(c),
        Command::Migrate(c) => database::migrate(c),
        Command::CheckDb(c) => database::check_db(c),
    }
}

/// The servers of `--server` (repeated, or comma-separated), else of
/// HEAL_SERVER, else the default one.
fn servers(flag: Vec<String>) -> Result<Arc<Servers>> {
    let (values, source) = match std::env::var("HEAL_SERVER") {
        _ if !flag.is_empty() => (flag, "--server"),
        Ok(env) => (vec![env], "HEAL_SERVER"),
        Err(_) => (vec![DEFAULT_SERVER.to_string()], "--server"),
    };
    Ok(Arc::new(Servers::parse(&values, source)?))
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

fn client(server: Vec<String>, tok: Option<String>, file: Option<PathBuf>) -> Result<Client> {
    Client::new(
        servers(server)?,
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
    let (name, text) = read_text_file(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{name}: not JSON: {e}")))
}

/// A file's name and text; stdin for none or `-`.
fn read_text_file(path: Option<&PathBuf>) -> Result<(String, String)> {
    Ok(match path {
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
    })
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
