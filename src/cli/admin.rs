//! `heal token new`, `heal reload`, `heal audit` and `heal status`: who may talk to heal,
//! the config it runs, what they did, and which servers run.

use std::path::PathBuf;

use argh::FromArgs;
use serde_json::json;

use super::{client, encode, filter_query, print_json, str_of};
use crate::config::{self, Scope};
use crate::error::{Error, Result};
use crate::time::format_rfc3339;

/// Make a new token: prints the secret (once) and the [[token]] lines to add to runbooks.toml, which hold only its hash.
#[derive(FromArgs)]
#[argh(subcommand, name = "token")]
pub struct Token {
    /// new
    #[argh(positional)]
    action: String,
    /// the token's name, shown in logs and the audit log
    #[argh(option)]
    name: String,
    /// a scope: admin, read, webhook, ping or agent (repeat for more)
    #[argh(option)]
    scope: Vec<String>,
    /// for agent tokens: the only agent id it may act as
    #[argh(option)]
    agent: Option<String>,
    /// when the token stops working: a time from now (90d) or a date (2027-01-31)
    #[argh(option)]
    expires: Option<String>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// `heal token new`.
pub fn token(t: Token) -> Result<()> {
    if t.action != "new" {
        return Err(Error::Usage(format!(
            "heal token takes new, not {:?}\nTry: heal token new --name alertmanager --scope webhook",
            t.action
        )));
    }
    config::check_name(&t.name).map_err(|e| Error::Usage(format!("--name: {e}")))?;
    if t.scope.is_empty() {
        return Err(Error::Usage(
            "give at least one --scope (admin, read, webhook, ping, agent)".into(),
        ));
    }
    for s in &t.scope {
        if Scope::parse(s).is_none() {
            return Err(Error::Usage(format!(
                "--scope {s:?}: not admin, read, webhook, ping or agent"
            )));
        }
    }
    if t.agent.is_some() && !t.scope.iter().any(|s| s == "agent") {
        return Err(Error::Usage(
            "--agent binds an agent token: add --scope agent".into(),
        ));
    }
    let expires = t.expires.as_deref().map(expiry).transpose()?;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::Failed("the system's random source failed".into()))?;
    let secret = config::hex(&bytes);
    let hash = config::hex(&config::token_hash(&secret));
    let scopes: Vec<String> = t.scope.iter().map(|s| format!("{s:?}")).collect();
    let mut toml = format!(
        "[[token]]\nname = {:?}\nscopes = [{}]\nsecret_sha256 = \"{hash}\"\n",
        t.name,
        scopes.join(", ")
    );
    if let Some(a) = &t.agent {
        toml.push_str(&format!("agent = {a:?}\n"));
    }
    if let Some(e) = expires {
        toml.push_str(&format!("expires = {:?}\n", crate::time::format_rfc3339(e)));
    }
    if t.json {
        print_json(
            &json!({ "name": t.name, "token": secret, "secret_sha256": hash, "toml": toml }),
        );
        return Ok(());
    }
    println!("{secret}");
    println!();
    println!("# Add to runbooks.toml, then reload (SIGHUP). heal keeps only the hash;");
    println!(
        "# the token above is shown once: give it to the client (--token-file or HEAL_TOKEN)."
    );
    print!("{toml}");
    Ok(())
}

/// `--expires`: a duration from now, or what `[[token]] expires` takes.
fn expiry(text: &str) -> Result<i64> {
    if let Ok(d) = crate::time::parse_duration(text) {
        return Ok(crate::time::now_ms() + d.as_millis() as i64);
    }
    config::parse_expiry(text)
        .map_err(|e| Error::Usage(format!("--expires: {e}, or a time from now like \"90d\"")))
}

/// Reload the running server's config file (as SIGHUP does); prints the version applied.
#[derive(FromArgs)]
#[argh(subcommand, name = "reload")]
pub struct Reload {
    /// apply even a file that leaves no token or no rule where some run now
    #[argh(switch)]
    force: bool,
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
    /// bearer token (admin scope; default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// `heal reload`: `POST /api/v1/config`, with `?force=true` for `--force`.
pub fn reload(r: Reload) -> Result<()> {
    let client = client(r.server, r.token, r.token_file)?;
    let path = if r.force {
        "/api/v1/config?force=true"
    } else {
        "/api/v1/config"
    };
    let v = client.post_empty(path)?;
    if r.json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "config version {}{} (sha256 {})",
        v["version"],
        if v["changed"] == true {
            ""
        } else {
            ", unchanged"
        },
        str_of(&v["sha256"])
    );
    Ok(())
}

/// Show the audit log: configs applied, approvals, pauses, breaker resets, manual runs, refused tokens.
#[derive(FromArgs)]
#[argh(subcommand, name = "audit")]
pub struct Audit {
    /// only entries of this action (e.g. config.applied, event.approved, auth.refused)
    #[argh(option)]
    action: Option<String>,
    /// only entries since (e.g. 1h, 7d, or ms since the epoch)
    #[argh(option)]
    since: Option<String>,
    /// most entries listed (default 50)
    #[argh(option, default = "50")]
    limit: u32,
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

/// `heal audit`.
pub fn audit(a: Audit) -> Result<()> {
    let client = client(a.server, a.token, a.token_file)?;
    let mut path = format!("/api/v1/audit?limit={}", a.limit.clamp(1, 10_000));
    path.push_str(&filter_query("/api/v1/audit", &[("action", &a.action)])?);
    if let Some(x) = &a.since {
        path.push_str(&format!("&since={}", encode(x)));
    }
    let v = client.get(&path)?;
    if a.json {
        print_json(&v["entries"]);
        return Ok(());
    }
    println!(
        "{:<24}  {:<20}  {:<18}  {:<24}  detail",
        "AT", "ACTION", "WHO", "WHAT"
    );
    for e in v["entries"].as_array().into_iter().flatten() {
        println!(
            "{:<24}  {:<20}  {:<18}  {:<24}  {}",
            e["at"].as_i64().map(format_rfc3339).unwrap_or_default(),
            str_of(&e["action"]),
            str_of(&e["actor"]),
            str_of(&e["target"]),
            str_of(&e["detail"])
        );
    }
    Ok(())
}

/// Show the server asked and every server on its store: which leads, their versions, configs, and when each was last heard from.
#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
pub struct Status {
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

/// `heal status`: `GET /api/v1/status`.
pub fn status(s: Status) -> Result<()> {
    let client = client(s.server, s.token, s.token_file)?;
    let v = client.get("/api/v1/status")?;
    if s.json {
        print_json(&v);
        return Ok(());
    }
    let me = &v["server"];
    let hash = str_of(&me["config_sha256"]);
    println!(
        "{} ({}): heal {}, {} store, {}, config {} (sha256 {})",
        str_of(&me["address"]),
        str_of(&me["host"]),
        str_of(&me["version"]),
        str_of(&me["store"]),
        if me["leads"].as_bool() == Some(true) {
            "leads"
        } else {
            "does not lead"
        },
        me["config_version"]
            .as_i64()
            .map_or("unrecorded".to_string(), |n| format!("version {n}")),
        &hash[..hash.len().min(12)],
    );
    println!(
        "\n{:<32}  {:<20}  {:<8}  {:<7}  {:<14}  {:<6}  ROLE",
        "ADDRESS", "HOST", "VERSION", "CONFIG", "LAST SEEN", "STATE"
    );
    for r in v["replicas"].as_array().into_iter().flatten() {
        let mut role = String::new();
        if r["leader"].as_bool() == Some(true) {
            role.push_str("leader");
        }
        if r["config_differs"].as_bool() == Some(true) {
            role.push_str(if role.is_empty() { "" } else { ", " });
            role.push_str("CONFIG DIFFERS FROM THE LEADER'S");
        }
        let seen = r["seen_ago_ms"].as_i64().unwrap_or(0).max(0);
        println!(
            "{:<32}  {:<20}  {:<8}  {:<7}  {:<14}  {:<6}  {role}",
            str_of(&r["address"]),
            str_of(&r["host"]),
            str_of(&r["version"]),
            r["config_version"]
                .as_i64()
                .map_or("-".to_string(), |n| format!("v{n}")),
            format!("{:.1} s ago", seen as f64 / 1000.0),
            if r["up"].as_bool() == Some(true) {
                "up"
            } else {
                "gone"
            },
        );
    }
    Ok(())
}
