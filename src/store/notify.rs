//! The outbox's SQL: notifications recorded with the state change that
//! caused them, their deliveries to channels, and the incidents that
//! PagerDuty and Opsgenie channels hold open.

use serde::Serialize;
use serde_json::Value;

use super::sql::{self, args, Db};
use crate::error::{Result, StoreContext};

/// A notification to record.
pub struct NewNotice<'a> {
    /// `kinds::KINDS` name.
    pub kind: &'a str,
    /// What it is about: event id, heartbeat or probe name, agent id, "breaker".
    pub subject: &'a str,
    /// For event kinds.
    pub event_id: Option<i64>,
    /// The event's state when it changed.
    pub state: Option<&'a str>,
    /// The document's parts, when known now (internal alerts); event kinds
    /// get theirs when routed.
    pub parts: Option<&'a Value>,
}

/// Records a notification, in the caller's transaction.
pub fn record_notice<'a>(db: impl Into<Db<'a>>, n: &NewNotice, now: i64) -> Result<i64> {
    let doc = n.parts.map(Value::to_string);
    db.into()
        .insert(
            "INSERT INTO notification (kind, subject, event_id, at, state, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![n.kind, n.subject, n.event_id, now, n.state, doc.as_deref()],
        )
        .context("recording notification")
}

/// Records the notification an event's state change calls for, if any
/// (`kinds::event_kind`). Called by every function that changes an event's state.
pub fn note_event<'a>(
    db: impl Into<Db<'a>>,
    event_id: i64,
    old: Option<&str>,
    new: &str,
    closed: bool,
    now: i64,
) -> Result<()> {
    let db = db.into();
    let mode: String = db
        .query_row(
            "SELECT mode FROM event WHERE id = ?1",
            args![event_id],
            |r| r.get(0),
        )
        .context("reading event mode")?
        .ok_or_else(|| crate::error::Error::Failed(format!("store: event {event_id} not found")))?;
    let Some(kind) = crate::kinds::event_kind(old, new, closed, mode == "live") else {
        return Ok(());
    };
    record_notice(
        db,
        &NewNotice {
            kind,
            subject: &event_id.to_string(),
            event_id: Some(event_id),
            state: Some(new),
            parts: None,
        },
        now,
    )?;
    Ok(())
}

/// The reason of the decision that created an event (escalate, await
/// approval, dry run, run), if a rule decided it. Found through the alert's
/// decisions (`decision_fingerprint`), not by walking every decision.
pub fn decision_reason<'a>(
    db: impl Into<Db<'a>>,
    fingerprint: &str,
    event_id: i64,
) -> Result<Option<String>> {
    db.into()
        .query_row(DECISION_REASON, args![fingerprint, event_id], |r| r.get(0))
        .context("reading the decision of event")
}

const DECISION_REASON: &str =
    "SELECT reason FROM decision WHERE fingerprint = ?1 AND event_id = ?2 ORDER BY id LIMIT 1";

/// Whether an event already had a notification of this kind.
pub fn event_noticed<'a>(db: impl Into<Db<'a>>, event_id: i64, kind: &str) -> Result<bool> {
    db.into()
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM notification WHERE event_id = ?1 AND kind = ?2)",
            args![event_id, kind],
            |r| r.get(0),
        )
        .map(|found| found.unwrap_or(false))
        .context("reading notifications of event")
}

/// A notification not yet routed.
pub struct Unrouted {
    /// Id.
    pub id: i64,
    /// Kind name.
    pub kind: String,
    /// Subject.
    pub subject: String,
    /// For event kinds.
    pub event_id: Option<i64>,
    /// When (ms).
    pub at: i64,
    /// The event's state then.
    pub state: Option<String>,
    /// Parts recorded with it.
    pub parts: Option<Value>,
}

/// The oldest notifications not yet routed.
pub fn unrouted<'a>(db: impl Into<Db<'a>>, limit: i64) -> Result<Vec<Unrouted>> {
    db.into()
        .query(
            "SELECT id, kind, subject, event_id, at, state, doc FROM notification
             WHERE routed_at IS NULL ORDER BY id LIMIT ?1",
            args![limit],
            |r| {
                Ok(Unrouted {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    subject: r.get(2)?,
                    event_id: r.get(3)?,
                    at: r.get(4)?,
                    state: r.get(5)?,
                    parts: r
                        .get::<Option<String>>(6)?
                        .and_then(|d| serde_json::from_str(&d).ok()),
                })
            },
        )
        .context("reading notifications")
}

/// Whether any notification waits to be routed (read every tick of the outbox).
pub fn any_unrouted<'a>(db: impl Into<Db<'a>>) -> Result<bool> {
    db.into()
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM notification WHERE routed_at IS NULL)",
            args![],
            |r| r.get(0),
        )
        .map(|found| found.unwrap_or(false))
        .context("reading notifications")
}

/// Stores a notification's document and queues one delivery per channel.
pub fn route_notice<'a>(
    db: impl Into<Db<'a>>,
    id: i64,
    doc: &Value,
    channels: &[String],
    now: i64,
) -> Result<()> {
    let db = db.into();
    let doc = doc.to_string();
    db.execute(
        "UPDATE notification SET doc = ?2, routed_at = ?3 WHERE id = ?1",
        args![id, &doc, now],
    )
    .context("routing notification")?;
    for channel in channels {
        db.execute(
            "INSERT INTO delivery (notification_id, channel, state, created_at, next_at) VALUES (?1, ?2, 'pending', ?3, ?3)",
            args![id, channel, now],
        )
        .context("queueing delivery")?;
    }
    Ok(())
}

/// Marks an incident open on a channel.
pub fn open_incident<'a>(db: impl Into<Db<'a>>, channel: &str, key: &str, now: i64) -> Result<()> {
    db.into()
        .execute(
            "INSERT OR IGNORE INTO incident (channel, dedup_key, opened_at) VALUES (?1, ?2, ?3)",
            args![channel, key, now],
        )
        .context("opening incident")?;
    Ok(())
}

/// Closes the incidents open under `key`; returns their channels.
pub fn close_incidents<'a>(db: impl Into<Db<'a>>, key: &str) -> Result<Vec<String>> {
    let db = db.into();
    let channels: Vec<String> = db
        .query(
            "SELECT channel FROM incident WHERE dedup_key = ?1 ORDER BY channel",
            args![key],
            |r| r.get(0),
        )
        .context("reading incidents")?;
    db.execute("DELETE FROM incident WHERE dedup_key = ?1", args![key])
        .context("closing incidents")?;
    Ok(channels)
}

/// The first pending delivery of each channel: (channel, when it may go).
///
/// One indexed step per channel (`delivery_pending`, in channel order), so
/// the outbox's tick costs the same with a backlog of 100,000 as with none.
pub fn pending_heads<'a>(db: impl Into<Db<'a>>) -> Result<Vec<(String, i64)>> {
    let db = db.into();
    let mut heads: Vec<(String, i64)> = Vec::new();
    loop {
        let after = heads.last().map_or("", |h| h.0.as_str());
        let next: Option<(String, i64)> = db
            .query_row(NEXT_HEAD, args![after], |r| Ok((r.get(0)?, r.get(1)?)))
            .context("reading outbox")?;
        match next {
            Some(head) => heads.push(head),
            None => return Ok(heads),
        }
    }
}

/// The oldest pending delivery of the first channel after `?1`.
const NEXT_HEAD: &str = "SELECT channel, next_at FROM delivery INDEXED BY delivery_pending WHERE state = 'pending' AND channel > ?1 ORDER BY channel, id LIMIT 1";

/// A delivery waiting to go.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Delivery id.
    pub id: i64,
    /// Its notification.
    pub notification_id: i64,
    /// Tries so far.
    pub attempts: i64,
    /// Queued (ms).
    pub created_at: i64,
    /// Not before (ms).
    pub next_at: i64,
    /// The last failure.
    pub error: Option<String>,
    /// The notification's document.
    pub doc: Value,
}

/// A channel's pending deliveries, oldest first, with their documents
/// (through `delivery_pending`: other channels' backlogs are not walked).
const PENDING: &str =
    "SELECT d.id, d.notification_id, d.attempts, d.created_at, d.next_at, n.doc, d.error
     FROM delivery d INDEXED BY delivery_pending JOIN notification n ON n.id = d.notification_id
     WHERE d.channel = ?1 AND d.state = 'pending' ORDER BY d.id LIMIT ?2";

/// A channel's pending deliveries, oldest first.
pub fn pending<'a>(db: impl Into<Db<'a>>, channel: &str, limit: i64) -> Result<Vec<Pending>> {
    db.into()
        .query(PENDING, args![channel, limit], |r| {
            Ok(Pending {
                id: r.get(0)?,
                notification_id: r.get(1)?,
                attempts: r.get(2)?,
                created_at: r.get(3)?,
                next_at: r.get(4)?,
                error: r.get(6)?,
                doc: r
                    .get::<Option<String>>(5)?
                    .and_then(|d| serde_json::from_str(&d).ok())
                    .unwrap_or(Value::Null),
            })
        })
        .context("reading outbox")
}

/// How a try of deliveries ended.
pub enum Outcome<'a> {
    /// Delivered; `digest` is the size of the digest they went in, if any.
    Sent {
        /// Digest size.
        digest: Option<usize>,
    },
    /// Failed; try again at `next_at`.
    Retry {
        /// Not before (ms).
        next_at: i64,
        /// What went wrong (secrets redacted).
        error: &'a str,
    },
    /// Failed for good.
    GaveUp {
        /// Why (secrets redacted).
        error: &'a str,
    },
}

/// Records a try of some pending deliveries. Only pending ones change, so a
/// result recorded twice counts once.
pub fn record_try<'a>(
    db: impl Into<Db<'a>>,
    ids: &[i64],
    outcome: &Outcome,
    now: i64,
) -> Result<()> {
    let db = db.into();
    for &id in ids {
        match *outcome {
            Outcome::Sent { digest } => db.execute(
                "UPDATE delivery SET state = 'sent', attempts = attempts + 1, done_at = ?2, digest = ?3 WHERE id = ?1 AND state = 'pending'",
                args![id, now, digest],
            ),
            Outcome::Retry { next_at, error } => db.execute(
                "UPDATE delivery SET attempts = attempts + 1, next_at = ?2, error = ?3 WHERE id = ?1 AND state = 'pending'",
                args![id, next_at, error],
            ),
            Outcome::GaveUp { error } => db.execute(
                "UPDATE delivery SET state = 'failed', attempts = attempts + 1, done_at = ?2, error = ?3 WHERE id = ?1 AND state = 'pending'",
                args![id, now, error],
            ),
        }
        .context("recording delivery")?;
    }
    Ok(())
}

/// Gives up every pending delivery of a channel that is no longer configured.
pub fn abandon_channel<'a>(db: impl Into<Db<'a>>, channel: &str, now: i64) -> Result<usize> {
    db.into()
        .execute(
            "UPDATE delivery SET state = 'failed', done_at = ?2, error = 'the channel is no longer in the configuration' WHERE channel = ?1 AND state = 'pending'",
            args![channel, now],
        )
        .context("abandoning deliveries")
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    /// Delivery id.
    pub id: i64,
    /// Notification id.
    pub notification_id: i64,
    /// Kind.
    pub kind: String,
    /// Subject.
    pub subject: String,
    /// Event, for event kinds.
    pub event_id: Option<i64>,
    /// Channel.
    pub channel: String,
    /// pending, sent or failed.
    pub state: String,
    /// Tries so far.
    pub attempts: i64,
    /// Queued (ms).
    pub created_at: i64,
    /// Next try (ms), while pending.
    pub next_at: Option<i64>,
    /// Sent or given up (ms).
    pub done_at: Option<i64>,
    /// Sent in a digest of this many.
    pub digest: Option<i64>,
    /// The last failure.
    pub error: Option<String>,
}

/// Deliveries newest first: all, or one state, one channel, one event.
pub fn deliveries<'a>(
    db: impl Into<Db<'a>>,
    state: Option<&str>,
    channel: Option<&str>,
    event_id: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>> {
    // One event's are found through notification_event, not by walking
    // every delivery back from the newest.
    let event_filter = if event_id.is_some() {
        "n.event_id = ?3"
    } else {
        // Typed, for PostgreSQL: its only use says nothing of its type.
        "CAST(?3 AS BIGINT) IS NULL"
    };
    let sql = format!(
        "SELECT d.id, d.notification_id, n.kind, n.subject, n.event_id, d.channel, d.state, d.attempts,
                d.created_at, d.next_at, d.done_at, d.digest, d.error
         FROM delivery d JOIN notification n ON n.id = d.notification_id
         WHERE (d.state = ?1 OR ?1 IS NULL) AND (d.channel = ?2 OR ?2 IS NULL) AND {event_filter}
         ORDER BY d.id DESC LIMIT ?4"
    );
    db.into()
        .query(&sql, args![state, channel, event_id, limit], |r| {
            let state: String = r.get(6)?;
            Ok(DeliveryRow {
                id: r.get(0)?,
                notification_id: r.get(1)?,
                kind: r.get(2)?,
                subject: r.get(3)?,
                event_id: r.get(4)?,
                channel: r.get(5)?,
                next_at: if state == "pending" { r.get(9)? } else { None },
                state,
                attempts: r.get(7)?,
                created_at: r.get(8)?,
                done_at: r.get(10)?,
                digest: r.get(11)?,
                error: r.get(12)?,
            })
        })
        .context("reading outbox")
}

/// A delivery's states: waiting for its next try, delivered, given up.
pub const DELIVERY_STATES: [&str; 3] = ["pending", "sent", "failed"];

/// Deliveries by state, and notifications not yet routed.
pub fn outbox_counts<'a>(db: impl Into<Db<'a>>) -> Result<Value> {
    let db = db.into();
    let count = |sql: &str, args: &[sql::Value]| -> Result<i64> {
        let n = db
            .query_row(sql, args, |r| r.get(0))
            .context("counting outbox")?;
        Ok(n.unwrap_or_default())
    };
    let mut counts = serde_json::Map::new();
    for state in DELIVERY_STATES {
        let n = count(
            "SELECT count(*) FROM delivery WHERE state = ?1",
            args![state],
        )?;
        counts.insert(state.into(), n.into());
    }
    let unrouted = count(
        "SELECT count(*) FROM notification WHERE routed_at IS NULL",
        args![],
    )?;
    counts.insert("unrouted".into(), unrouted.into());
    Ok(Value::Object(counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{db, plan};
    use crate::store::{purge, Purge};

    #[test]
    fn the_outbox_finds_each_channels_head_through_its_index() {
        assert_eq!(
            plan(&db(), NEXT_HEAD, &[&""]),
            ["SEARCH delivery USING INDEX delivery_pending (channel>?)"]
        );
        assert_eq!(
            plan(&db(), PENDING, &[&"chat", &50]),
            [
                "SEARCH d USING INDEX delivery_pending (channel=?)",
                "SEARCH n USING INTEGER PRIMARY KEY (rowid=?)"
            ]
        );
    }

    #[test]
    fn an_events_decision_is_found_through_its_alerts_decisions() {
        let conn = db();
        assert_eq!(
            plan(&conn, DECISION_REASON, &[&"f"]),
            ["SEARCH decision USING INDEX decision_fingerprint (fingerprint=?)"]
        );
        let event = |state: &str| {
            let e = crate::store::NewEvent {
                rule: "r",
                runbook: "fix",
                key: "web-1",
                fingerprint: "f",
                state,
                mode: "live",
                started_at: None,
                deadline: None,
            };
            crate::store::create_event(&conn, &e, 1).unwrap()
        };
        let (ran, escalated, other) = (event("failed"), event("escalated"), event("dry_run"));
        for (outcome, reason, event) in [
            ("run", "an earlier run", ran),
            ("escalate", "2 attempts within 1h", escalated),
            ("collapse", "joined the open event", escalated),
        ] {
            crate::store::record_decision(&conn, "f", Some("r"), outcome, reason, Some(event), 1)
                .unwrap();
        }
        assert_eq!(
            decision_reason(&conn, "f", escalated).unwrap().as_deref(),
            Some("2 attempts within 1h")
        );
        assert_eq!(decision_reason(&conn, "f", other).unwrap(), None);
    }

    fn notice(conn: &rusqlite::Connection, subject: &str, at: i64) -> i64 {
        let parts = serde_json::json!({ "probe": { "name": subject } });
        record_notice(
            conn,
            &NewNotice {
                kind: "probe.down",
                subject,
                event_id: None,
                state: None,
                parts: Some(&parts),
            },
            at,
        )
        .unwrap()
    }

    #[test]
    fn a_channel_queue_is_oldest_first_and_outcomes_count_once() {
        let conn = db();
        let a = notice(&conn, "a", 1);
        let b = notice(&conn, "b", 2);
        assert!(any_unrouted(&conn).unwrap());
        let un = unrouted(&conn, 10).unwrap();
        assert_eq!(un.iter().map(|u| u.id).collect::<Vec<_>>(), [a, b]);
        assert_eq!(un[0].parts.as_ref().unwrap()["probe"]["name"], "a");
        for u in &un {
            route_notice(
                &conn,
                u.id,
                &serde_json::json!({ "id": u.id }),
                &["chat".into(), "page".into()],
                10,
            )
            .unwrap();
        }
        assert!(!any_unrouted(&conn).unwrap());
        let mut heads = pending_heads(&conn).unwrap();
        heads.sort();
        assert_eq!(heads, [("chat".to_string(), 10), ("page".to_string(), 10)]);
        let chat = pending(&conn, "chat", 10).unwrap();
        assert_eq!(
            chat.iter().map(|p| p.notification_id).collect::<Vec<_>>(),
            [a, b]
        );
        record_try(
            &conn,
            &[chat[0].id],
            &Outcome::Retry {
                next_at: 50,
                error: "down",
            },
            11,
        )
        .unwrap();
        assert_eq!(
            pending_heads(&conn)
                .unwrap()
                .iter()
                .find(|h| h.0 == "chat")
                .unwrap()
                .1,
            50
        );
        record_try(&conn, &[chat[0].id], &Outcome::Sent { digest: None }, 51).unwrap();
        // A second record of the same try changes nothing.
        record_try(&conn, &[chat[0].id], &Outcome::GaveUp { error: "late" }, 52).unwrap();
        let rows = deliveries(&conn, None, Some("chat"), None, 10).unwrap();
        let first = rows.iter().find(|d| d.id == chat[0].id).unwrap();
        assert_eq!(
            (first.state.as_str(), first.attempts, first.error.as_deref()),
            ("sent", 2, Some("down"))
        );
        assert_eq!(outbox_counts(&conn).unwrap()["pending"], 3);
        assert_eq!(abandon_channel(&conn, "page", 60).unwrap(), 2);
        assert_eq!(outbox_counts(&conn).unwrap()["failed"], 2);
    }

    #[test]
    fn incidents_close_once_per_key() {
        let conn = db();
        open_incident(&conn, "page", "heal/probe/a", 1).unwrap();
        open_incident(&conn, "genie", "heal/probe/a", 1).unwrap();
        open_incident(&conn, "page", "heal/probe/a", 2).unwrap();
        assert_eq!(
            close_incidents(&conn, "heal/probe/a").unwrap(),
            ["genie", "page"]
        );
        assert!(close_incidents(&conn, "heal/probe/a").unwrap().is_empty());
    }

    #[test]
    fn retention_keeps_what_is_still_to_be_delivered() {
        let conn = db();
        let old_done = notice(&conn, "a", 1);
        let old_pending = notice(&conn, "b", 2);
        let new = notice(&conn, "c", 500);
        for id in [old_done, old_pending, new] {
            route_notice(&conn, id, &Value::Null, &["chat".into()], 600).unwrap();
        }
        let done: Vec<i64> = pending(&conn, "chat", 10)
            .unwrap()
            .iter()
            .filter(|p| p.notification_id != old_pending)
            .map(|p| p.id)
            .collect();
        record_try(&conn, &done, &Outcome::Sent { digest: None }, 700).unwrap();
        assert_eq!(purge(&conn, Purge::Notifications, 100, 10).unwrap(), 1);
        let left: Vec<i64> = deliveries(&conn, None, None, None, 10)
            .unwrap()
            .iter()
            .map(|d| d.notification_id)
            .collect();
        assert_eq!(left, [new, old_pending]);
    }
}
