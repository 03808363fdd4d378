//! `heal notify`: channels, the outbox, and test messages.

use std::path::PathBuf;

use argh::FromArgs;
use serde_json::json;

use super::{client, encode, filter_query, print_json, str_of};
use crate::error::{Error, Result};
use crate::time::format_rfc3339;

/// List channels and the outbox's counts; or: outbox (deliveries), test NAME (send a test message).
#[derive(FromArgs)]
#[argh(subcommand, name = "notify")]
pub struct Notify {
    /// nothing, outbox, or test NAME
    #[argh(positional)]
    args: Vec<String>,
    /// outbox: only pending, sent or failed deliveries
    #[argh(option)]
    state: Option<String>,
    /// outbox: only this channel
    #[argh(option)]
    channel: Option<String>,
    /// outbox: at most this many (default 50)
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

/// `heal notify`.
pub fn notify(c: Notify) -> Result<()> {
    let client = client(c.server.clone(), c.token.clone(), c.token_file.clone())?;
    match c.args.as_slice() {
        [] => {
            let channels = client.get("/api/v1/channels")?;
            let outbox = client.get("/api/v1/outbox?limit=1")?;
            if c.json {
                print_json(
                    &json!({ "channels": channels["channels"], "outbox": outbox["counts"] }),
                );
                return Ok(());
            }
            println!(
                "{:<20}  {:<10}  {:<12}  destination",
                "CHANNEL", "TYPE", "RATE LIMIT"
            );
            for ch in channels["channels"].as_array().into_iter().flatten() {
                println!(
                    "{:<20}  {:<10}  {:<12}  {}",
                    str_of(&ch["name"]),
                    str_of(&ch["type"]),
                    ch["rate_limit"].as_str().unwrap_or("-"),
                    str_of(&ch["destination"])
                );
            }
            let n = &outbox["counts"];
            println!(
                "outbox: {} pending, {} failed, {} sent, {} not yet routed",
                n["pending"], n["failed"], n["sent"], n["unrouted"]
            );
            Ok(())
        }
        [cmd] if cmd == "outbox" => outbox(&client, &c),
        [cmd, name] if cmd == "test" => {
            let (status, v) = client.request(
                "POST",
                &format!("/api/v1/channels/{}/test", encode(name)),
                Some(&json!({})),
            )?;
            if c.json {
                print_json(&v);
            }
            match status {
                200 => {
                    if !c.json {
                        println!(
                            "test message sent to {name}: {} in {} ms",
                            str_of(&v["answer"]),
                            v["ms"]
                        );
                    }
                    Ok(())
                }
                502 => Err(Error::Failed(format!(
                    "test message to {name} failed: {}",
                    str_of(&v["error"])
                ))),
                _ => Err(Error::Http(format!(
                    "test message to {name}: {status}: {}",
                    v["error"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                ))),
            }
        }
        _ => Err(Error::Usage(
            "heal notify takes nothing, outbox, or test NAME\nTry: heal notify test ops-chat"
                .into(),
        )),
    }
}

fn outbox(client: &crate::client::Client, c: &Notify) -> Result<()> {
    let filters = filter_query(
        "/api/v1/outbox",
        &[("state", &c.state), ("channel", &c.channel)],
    )?;
    let limit = c.limit.clamp(1, 10_000);
    let v = client.get(&format!("/api/v1/outbox?limit={limit}{filters}"))?;
    if c.json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "{:>6}  {:<24}  {:<16}  {:<7}  {:>5}  {:<20}  error",
        "ID", "KIND", "CHANNEL", "STATE", "TRIES", "QUEUED"
    );
    for d in v["deliveries"].as_array().into_iter().flatten() {
        let kind = match d["event_id"].as_i64() {
            Some(e) => format!("{} #{e}", str_of(&d["kind"])),
            None => format!("{} {}", str_of(&d["kind"]), str_of(&d["subject"])),
        };
        println!(
            "{:>6}  {:<24}  {:<16}  {:<7}  {:>5}  {:<20}  {}",
            d["id"],
            kind,
            str_of(&d["channel"]),
            str_of(&d["state"]),
            d["attempts"],
            d["created_at"]
                .as_i64()
                .map(format_rfc3339)
                .unwrap_or_default(),
            d["error"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
