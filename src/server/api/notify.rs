//! Channels and the outbox on the wire.

use crate::store::sql::Db;
use serde_json::{json, Value};

use super::{decode, query_param, Answer};
use crate::config::Config;
use crate::error::Error;
use crate::notify::{self, send};
use crate::server::State;
use crate::store;
use crate::time::{format_duration, now_ms};

/// `GET /api/v1/outbox`: counts by state and the latest deliveries
/// (`?state=pending|sent|failed`, `?channel=`, `?event=`, `?limit=`).
pub fn outbox(conn: Db<'_>, query: &str, limit: i64) -> Answer {
    // `filters` has checked the state.
    let state = query_param(query, "state").map(decode);
    let channel = query_param(query, "channel").map(decode);
    let event = match query_param(query, "event") {
        None => None,
        Some(e) => Some(
            e.parse::<i64>()
                .map_err(|_| Error::request(400, format!("event: {e:?} is not an event id")))?,
        ),
    };
    let counts = store::outbox_counts(conn)?;
    let deliveries = store::deliveries(conn, state.as_deref(), channel.as_deref(), event, limit)?;
    Ok((200, json!({ "counts": counts, "deliveries": deliveries })))
}

/// `GET /api/v1/channels`: each channel with its destination, secrets redacted.
pub fn channels(config: &Config) -> Answer {
    let list: Vec<Value> = config
        .channels
        .values()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind.type_name(),
                "destination": c.kind.describe(),
                "timeout": format_duration(c.timeout),
                "rate_limit": c.rate_limit.map(|r| format!("{}/{}", r.count, format_duration(r.per))),
                "give_up_after": format_duration(c.give_up_after),
                "max_backoff": format_duration(c.max_backoff),
            })
        })
        .collect();
    Ok((200, json!({ "channels": list })))
}

/// `POST /api/v1/channels/<name>/test`: sends a test message now, outside
/// the outbox, and says how the channel answered.
pub fn test(state: &State, config: &Config, name: &str, who: &str) -> Answer {
    let Some(channel) = config.channels.get(name) else {
        let known: Vec<&str> = config.channels.keys().map(String::as_str).collect();
        return Err(Error::request(
            404,
            format!(
                "no [channel.{name}] in {} (channels: {})",
                config.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    let base = state.outbox.base_url(config);
    let sender = send::Sender::new(channel.timeout);
    let secrets = channel.kind.secrets();
    let try_kind = |name: &str| {
        let kind = notify::kind_named(name).expect("the test kinds are in KINDS");
        let now = now_ms();
        let mut doc = notify::document(
            0,
            kind,
            &channel.name,
            now,
            json!({ "channel": &channel.name }),
        );
        doc["requested_by"] = json!(who);
        let req = send::prepare(&channel.kind, &[doc], base.as_deref(), 0, now);
        sender.deliver(&req, &secrets)
    };
    let started = std::time::Instant::now();
    let mut result = try_kind("test");
    // An incident channel closes the test incident it just opened.
    if result.is_ok() && channel.kind.is_incident() {
        result = try_kind("test.resolved").map(|a| format!("{a}, then resolved"));
    }
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(answer) => {
            log::info!("test message to channel {name} sent by {who} ({answer}, {ms} ms)");
            Ok((
                200,
                json!({ "channel": name, "sent": true, "answer": answer, "ms": ms }),
            ))
        }
        Err(f) => {
            log::warn!("test message to channel {name} failed: {}", f.error);
            Ok((
                502,
                json!({ "channel": name, "sent": false, "error": f.error, "ms": ms }),
            ))
        }
    }
}
