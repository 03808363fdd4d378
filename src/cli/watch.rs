//! `heal ping`, `heal heartbeats`, `heal probes`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use argh::FromArgs;
use serde_json::{json, Value};

use super::{client, encode, print_json, read_text_file, str_of};
use crate::error::{Error, Result};
use crate::exec::{self, Output, Run};
use crate::time::format_rfc3339;

/// Bytes of a wrapped command's output sent with its ping: the tail the server keeps.
const PING_OUTPUT_TAIL: usize = crate::server::api::PING_BODY_MAX;

/// Ping a heartbeat; with `-- CMD ARGS`, wrap a command: start ping, run it, then success or failure with its exit code and output.
#[derive(FromArgs)]
#[argh(subcommand, name = "ping")]
pub struct Ping {
    /// the heartbeat's name, then optionally -- and a command to run
    #[argh(positional)]
    args: Vec<String>,
    /// report a failure
    #[argh(switch)]
    fail: bool,
    /// report a start (a run that will report its end later)
    #[argh(switch)]
    start: bool,
    /// report this exit code (0 success, else failure)
    #[argh(option)]
    exit_code: Option<i32>,
    /// the heartbeat's ping key, instead of a token
    #[argh(option)]
    key: Option<String>,
    /// server URL, or several comma-separated for servers on one database (default: $HEAL_SERVER, else http://127.0.0.1:7878)
    #[argh(option)]
    server: Vec<String>,
    /// bearer token (default: $HEAL_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token
    #[argh(option)]
    token_file: Option<PathBuf>,
}

/// List heartbeats, or: show NAME (with recent pings), mute NAME [--for 2h], unmute NAME.
#[derive(FromArgs)]
#[argh(subcommand, name = "heartbeats")]
pub struct Heartbeats {
    /// show NAME, mute NAME, unmute NAME, or nothing to list
    #[argh(positional)]
    args: Vec<String>,
    /// why (with mute)
    #[argh(option, default = "String::new()")]
    reason: String,
    /// with mute: how long, like 2h or 30m (default: until unmuted)
    #[argh(option, long = "for")]
    duration: Option<String>,
    /// with mute: when it ends, RFC 3339 (default: until unmuted)
    #[argh(option)]
    until: Option<String>,
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

/// List probes with their last results, or: show NAME, put NAME --file F, delete NAME, mute NAME [--for 2h], unmute NAME.
#[derive(FromArgs)]
#[argh(subcommand, name = "probes")]
pub struct Probes {
    /// show NAME, put NAME --file F, delete NAME, mute NAME, unmute NAME, or nothing to list
    #[argh(positional)]
    args: Vec<String>,
    /// with put: the probe's [[probe]] fields, as TOML (without the header) or JSON (a .json file)
    #[argh(option)]
    file: Option<PathBuf>,
    /// why (with mute)
    #[argh(option, default = "String::new()")]
    reason: String,
    /// with mute: how long, like 2h or 30m (default: until unmuted)
    #[argh(option, long = "for")]
    duration: Option<String>,
    /// with mute: when it ends, RFC 3339 (default: until unmuted)
    #[argh(option)]
    until: Option<String>,
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

fn ping_path(name: &str, what: &str, key: &Option<String>) -> String {
    let mut p = format!("/ping/{}{what}", encode(name));
    if let Some(k) = key {
        p.push_str(&format!("?key={}", encode(k)));
    }
    p
}

/// `heal ping`.
pub fn ping(c: Ping) -> Result<()> {
    let usage = |m: &str| {
        Error::Usage(format!(
            "{m}\nTry: heal ping backup, heal ping backup --fail, or heal ping backup -- /usr/local/bin/backup"
        ))
    };
    let (name, command) = match c.args.split_first() {
        None => return Err(usage("heal ping needs a heartbeat name")),
        Some((name, rest)) => (name.clone(), rest.to_vec()),
    };
    let command: Vec<String> = match command.split_first() {
        Some((dashes, rest)) if dashes == "--" => rest.to_vec(),
        _ => command,
    };
    let client = client(c.server, c.token, c.token_file)?;
    if command.is_empty() {
        let what = match (c.start, c.fail, c.exit_code) {
            (false, false, None) => String::new(),
            (true, false, None) => "/start".into(),
            (false, true, None) => "/fail".into(),
            (false, false, Some(code)) if (0..=255).contains(&code) => format!("/{code}"),
            (false, false, Some(code)) => {
                return Err(usage(&format!("--exit-code {code}: must be from 0 to 255")))
            }
            _ => return Err(usage("give at most one of --start, --fail, --exit-code")),
        };
        client.post_text(&ping_path(&name, &what, &c.key), Vec::new())?;
        return Ok(());
    }
    if c.start || c.fail || c.exit_code.is_some() {
        return Err(usage(
            "--start, --fail and --exit-code do not go with a command: its exit code is reported",
        ));
    }
    // Monitoring must never stop the job: a ping that fails is a warning.
    if let Err(e) = client.post_text(&ping_path(&name, "/start", &c.key), Vec::new()) {
        eprintln!("heal ping: start ping failed: {e}");
    }
    let (code, tail) = run_wrapped(&command);
    if let Err(e) = client.post_text(
        &ping_path(&name, &format!("/{}", code.min(255)), &c.key),
        tail,
    ) {
        eprintln!("heal ping: end ping failed: {e}");
    }
    if code == 0 {
        Ok(())
    } else {
        Err(Error::Exit(code))
    }
}

/// Runs the wrapped command, passing its output through; returns its exit
/// code (128 + signal when killed) and the tail of its output.
fn run_wrapped(command: &[String]) -> (i32, Vec<u8>) {
    let run = Run::Argv(command.to_vec());
    let output = Output::new(PING_OUTPUT_TAIL);
    let done = AtomicBool::new(false);
    let never = AtomicBool::new(false);
    let step = exec::Step {
        run: &run,
        env: &[],
        timeout: Duration::from_secs(10 * 365 * 86_400),
        grace: Duration::from_secs(10),
        stdin: &[],
        cwd: None,
    };
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            let mut cursor = 0;
            loop {
                let finished = done.load(Ordering::Acquire);
                let (new, _) = output.take_new(&mut cursor);
                let _ = std::io::stdout().write_all(&new);
                let _ = std::io::stdout().flush();
                if finished {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let outcome = exec::run_step(&step, &output, &never);
        done.store(true, Ordering::Release);
        outcome
    });
    let (mut tail, _) = output.tail();
    if let Some(e) = &outcome.spawn_error {
        eprintln!("heal ping: {e}");
        tail.extend_from_slice(format!("\nheal ping: {e}\n").as_bytes());
    }
    let code = match (outcome.exit_code, outcome.signal) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 127,
    };
    (code, tail)
}

/// What `mute` and `unmute` send, the same for heartbeats and probes.
struct Mute {
    reason: String,
    duration: Option<String>,
    until: Option<String>,
}

impl Mute {
    /// Posts `/api/v1/<what>s/NAME/<cmd>` and says what the server did.
    fn send(
        self,
        client: &crate::client::Client,
        what: &str,
        cmd: &str,
        name: &str,
        json: bool,
    ) -> Result<()> {
        let mut body = json!({ "reason": self.reason });
        if cmd == "mute" {
            body["for"] = json!(self.duration);
            body["until"] = json!(self.until);
        } else if self.duration.is_some() || self.until.is_some() {
            return Err(Error::Usage(format!(
                "--for and --until go with mute\nTry: heal {what}s mute {name} --for 2h"
            )));
        }
        let v = client.post(&format!("/api/v1/{what}s/{}/{cmd}", encode(name)), &body)?;
        if json {
            print_json(&v);
        } else if let Some(until) = v["until"].as_i64() {
            println!("{what} {name} muted until {}", format_rfc3339(until));
        } else {
            println!("{what} {name} {cmd}d");
        }
        Ok(())
    }
}

fn when(v: &Value) -> String {
    v.as_i64().map(format_rfc3339).unwrap_or_else(|| "-".into())
}

/// `heal heartbeats`.
pub fn heartbeats(c: Heartbeats) -> Result<()> {
    let client = client(c.server, c.token, c.token_file)?;
    let usage = || {
        Error::Usage(
            "heal heartbeats takes nothing, show NAME, mute NAME or unmute NAME\nTry: heal heartbeats show nightly-backup, or heal heartbeats mute nightly-backup --for 2h --reason maintenance".into(),
        )
    };
    match c.args.as_slice() {
        [] => {}
        [cmd, name] if cmd == "show" => {
            let v = client.get(&format!("/api/v1/heartbeats/{}?limit=20", encode(name)))?;
            if c.json {
                print_json(&v);
            } else {
                print!("{}", render_heartbeat(&v["heartbeat"]));
            }
            return Ok(());
        }
        [cmd, name] if cmd == "mute" || cmd == "unmute" => {
            let mute = Mute {
                reason: c.reason,
                duration: c.duration,
                until: c.until,
            };
            return mute.send(&client, "heartbeat", cmd, name, c.json);
        }
        _ => return Err(usage()),
    }
    let v = client.get("/api/v1/heartbeats")?;
    if c.json {
        print_json(&v["heartbeats"]);
        return Ok(());
    }
    println!(
        "{:<24}  {:<7}  {:<28}  {:<20}  {:<20}  why",
        "NAME", "STATE", "SCHEDULE", "LAST PING", "DUE"
    );
    for h in v["heartbeats"].as_array().into_iter().flatten() {
        let last = h["last_end_at"].as_i64().max(h["last_start"].as_i64());
        println!(
            "{:<24}  {:<7}  {:<28}  {:<20}  {:<20}  {}",
            str_of(&h["name"]),
            str_of(&h["state"]),
            str_of(&h["schedule"]),
            last.map(format_rfc3339).unwrap_or_else(|| "never".into()),
            when(&h["due_at"]),
            str_of(&h["reason"])
        );
    }
    Ok(())
}

fn render_heartbeat(h: &Value) -> String {
    let mut s = format!(
        "heartbeat {} ({}): {}\n  {}\n  schedule: {}, grace {}",
        str_of(&h["name"]),
        str_of(&h["origin"]),
        str_of(&h["state"]),
        str_of(&h["reason"]),
        str_of(&h["schedule"]),
        str_of(&h["grace"]),
    );
    if let Some(m) = h["max_runtime"].as_str() {
        s.push_str(&format!(", max runtime {m}"));
    }
    s.push('\n');
    if h["paused"] == true {
        s.push_str(&format!("  muted: {}", str_of(&h["paused_reason"])));
        if let Some(until) = h["muted_until"].as_i64() {
            s.push_str(&format!(" (until {})", format_rfc3339(until)));
        }
        s.push('\n');
    }
    s.push_str(&format!(
        "  due: {}, down after: {}\n  recent pings:\n",
        when(&h["due_at"]),
        when(&h["down_at"])
    ));
    for p in h["recent_pings"].as_array().into_iter().flatten() {
        let code = p["exit_code"]
            .as_i64()
            .map(|c| format!(" exit {c}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "    {}  {:<7}{code}  from {}\n",
            when(&p["at"]),
            str_of(&p["kind"]),
            str_of(&p["remote"])
        ));
        let body = str_of(&p["body"]).trim_end();
        for line in body
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            s.push_str(&format!("      | {line}\n"));
        }
    }
    s
}

/// The fields of a probe from a file: JSON if it ends in .json, else TOML
/// (the table of one `[[probe]]` without its header).
fn probe_file(path: &PathBuf) -> Result<Value> {
    let (name, text) = read_text_file(Some(path))?;
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("{name}: not JSON: {e}")));
    }
    crate::config::toml_fields(&text).map_err(|e| {
        Error::Usage(format!(
            "{name}: not TOML (the fields of one [[probe]], without the header): {e}"
        ))
    })
}

/// `heal probes`.
pub fn probes(c: Probes) -> Result<()> {
    let usage = |m: &str| {
        Error::Usage(format!(
            "{m}\nTry: heal probes show web, heal probes put web --file web.toml, heal probes delete web"
        ))
    };
    let put = matches!(c.args.first().map(String::as_str), Some("put"));
    if c.file.is_some() && !put {
        return Err(usage("--file goes with put"));
    }
    let client = client(c.server, c.token, c.token_file)?;
    match c.args.as_slice() {
        [] => {}
        [cmd, name] if cmd == "put" => {
            let Some(file) = &c.file else {
                return Err(usage("heal probes put NAME needs --file FILE"));
            };
            let v = client.put(
                &format!("/api/v1/probes/{}", encode(name)),
                &probe_file(file)?,
            )?;
            if c.json {
                print_json(&v);
            } else if v["created"] == true {
                println!("probe {name} registered");
            } else {
                println!("probe {name} replaced");
            }
            return Ok(());
        }
        [cmd, name] if cmd == "delete" => {
            let v = client.delete(&format!("/api/v1/probes/{}", encode(name)))?;
            if c.json {
                print_json(&v);
            } else {
                println!("probe {name} deleted");
            }
            return Ok(());
        }
        [cmd, name] if cmd == "mute" || cmd == "unmute" => {
            let mute = Mute {
                reason: c.reason,
                duration: c.duration,
                until: c.until,
            };
            return mute.send(&client, "probe", cmd, name, c.json);
        }
        [cmd, name] if cmd == "show" => {
            let v = client.get(&format!("/api/v1/probes/{}?limit=20", encode(name)))?;
            if c.json {
                print_json(&v);
                return Ok(());
            }
            let p = &v["probe"];
            println!(
                "probe {} ({}, {}, from {}): {}",
                str_of(&p["name"]),
                str_of(&p["type"]),
                str_of(&p["schedule"]),
                str_of(&p["source"]),
                probe_state(p)
            );
            if p["muted"] == true {
                let until = p["muted_until"].as_i64().map(format_rfc3339);
                println!(
                    "  muted: {} (until {})",
                    str_of(&p["muted_reason"]),
                    until.as_deref().unwrap_or("unmuted")
                );
            }
            for r in p["recent_results"].as_array().into_iter().flatten() {
                println!(
                    "  {}  {:<4}  {:>6} ms  {}",
                    when(&r["at"]),
                    match (r["ok"] == true, r["warning"] == true) {
                        (true, _) => "ok",
                        (false, true) => "WARN",
                        (false, false) => "FAIL",
                    },
                    r["latency_ms"],
                    str_of(&r["detail"])
                );
            }
            return Ok(());
        }
        _ => {
            return Err(usage(
                "heal probes takes nothing, show NAME, put NAME --file FILE, delete NAME, mute NAME or unmute NAME",
            ))
        }
    }
    let v = client.get("/api/v1/probes")?;
    if c.json {
        print_json(&v["probes"]);
        return Ok(());
    }
    println!(
        "{:<24}  {:<10}  {:<15}  {:<20}  {:<20}  last result",
        "NAME", "TYPE", "STATE", "SCHEDULE", "LAST RUN"
    );
    for p in v["probes"].as_array().into_iter().flatten() {
        println!(
            "{:<24}  {:<10}  {:<15}  {:<20}  {:<20}  {}",
            str_of(&p["name"]),
            str_of(&p["type"]),
            probe_state(p),
            str_of(&p["schedule"]),
            when(&p["last_at"]),
            str_of(&p["last_detail"])
        );
    }
    Ok(())
}

/// A probe's state, with its severity while down: "down (warning)".
fn probe_state(p: &Value) -> String {
    match p["severity"].as_str() {
        Some(severity) => format!("{} ({severity})", str_of(&p["state"])),
        None => str_of(&p["state"]).to_string(),
    }
}
