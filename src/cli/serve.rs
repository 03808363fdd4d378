//! `heal serve` and `heal agent`, the two long-running processes, and
//! `heal agents`, which lists the agents a server knows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use serde_json::Value;

use super::{ca_file_env, client, encode, print_json, servers, str_of, token};
use crate::config;
use crate::error::{Error, Result};
use crate::server::{self, Shutdown};
use crate::time::format_rfc3339;

/// Run the server: webhooks, rules, dispatch to agents.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
pub struct Serve {
    /// config file (default: ./runbooks.toml)
    #[argh(option, default = "PathBuf::from(\"runbooks.toml\")")]
    config: PathBuf,
    /// the store: a SQLite file, or a postgres:// URL for servers sharing a PostgreSQL database (default: $HEAL_DB, else [server] db, else ./heal.db)
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
pub struct AgentCmd {
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
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
    /// users runbooks may ask steps to run as (`user = "..."`), comma-separated; the agent must run as root (default: none but the agent's own)
    #[argh(option, default = "String::new()")]
    allow_users: String,
}

/// List agents, or forget one that is gone: heal agents [forget ID].
#[derive(FromArgs)]
#[argh(subcommand, name = "agents")]
pub struct Agents {
    /// forget ID, or nothing to list agents
    #[argh(positional)]
    args: Vec<String>,
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
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

pub fn serve(c: Serve) -> Result<()> {
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
            db: c.db.or_else(|| {
                std::env::var_os("HEAL_DB")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            }),
            local_agent,
            insecure_http: c.insecure_http,
        },
        shutdown,
    )
}

pub fn agent(c: AgentCmd) -> Result<()> {
    if c.concurrency == 0 {
        return Err(Error::Usage("--concurrency must be at least 1\nTry: heal agent --server URL --id ID --concurrency 4".into()));
    }
    let allow_users = split_list(&c.allow_users);
    for user in &allow_users {
        config::check_account_name(user)
            .map_err(|e| Error::Usage(format!("--allow-users: {e}")))?;
    }
    let opts = crate::agent::Options {
        servers: servers(c.server)?,
        server_shown: None,
        id: c.id.unwrap_or_else(crate::agent::hostname),
        token: token(c.token, c.token_file)?,
        tags: split_list(&c.tags),
        allow: split_list(&c.allow),
        concurrency: c.concurrency,
        drain_grace: Duration::from_secs(c.drain_grace),
        ca_file: c.ca_file.or_else(ca_file_env),
        state_dir: c.state_dir,
        allow_users,
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

pub fn agents(c: Agents) -> Result<()> {
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
