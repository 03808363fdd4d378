//! Alerts as received (one row per fingerprint) and the decisions taken on them.

use serde_json::Value;

use super::sql::{args, Db, DbError, Row};

use crate::alert::{Alert, Status};
use crate::error::{Result, StoreContext};

/// What storing one alert notification changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// Never seen, or a new occurrence.
    New,
    /// A repeat of the firing occurrence already stored.
    Repeat,
    /// This notification resolved a firing alert.
    Resolved,
    /// A resolved alert that was already resolved, or a firing notification of an occurrence already resolved.
    Stale,
}

/// Upserts an alert by fingerprint and says what changed.
pub fn record_alert<'a>(db: impl Into<Db<'a>>, alert: &Alert, now: i64) -> Result<Receipt> {
    let db = db.into();
    let stored: Option<(String, Option<i64>)> = db
        .query_row(
            "SELECT status, starts_at FROM alert WHERE fingerprint = ?1",
            args![&alert.fingerprint],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("reading alert")?;
    let same_occurrence = |starts: Option<i64>| {
        starts.is_none() || alert.starts_at.is_none() || starts == alert.starts_at
    };
    let receipt = match (&stored, alert.status) {
        (None, _) => Receipt::New,
        (Some((s, starts)), Status::Firing)
            if s == "resolved" && same_occurrence(*starts) && alert.starts_at.is_some() =>
        {
            Receipt::Stale
        }
        (Some((s, _)), Status::Firing) if s == "firing" => Receipt::Repeat,
        (Some(_), Status::Firing) => Receipt::New,
        (Some((s, _)), Status::Resolved) if s == "resolved" => Receipt::Stale,
        (Some(_), Status::Resolved) => Receipt::Resolved,
    };
    if receipt == Receipt::Stale {
        db.execute(
            "UPDATE alert SET receipts = receipts + 1, last_seen = ?2 WHERE fingerprint = ?1",
            args![&alert.fingerprint, now],
        )
        .context("updating alert")?;
        return Ok(receipt);
    }
    let labels = serde_json::to_string(&alert.labels).expect("a map of strings always serializes");
    let annotations =
        serde_json::to_string(&alert.annotations).expect("a map of strings always serializes");
    db.execute(
        "INSERT INTO alert (fingerprint, source, name, status, labels, annotations, starts_at, ends_at, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT (fingerprint) DO UPDATE SET source = ?2, name = ?3, status = ?4, labels = ?5, annotations = ?6,
           starts_at = coalesce(?7, alert.starts_at), ends_at = ?8, last_seen = ?9, receipts = alert.receipts + 1",
        args![
            &alert.fingerprint,
            &alert.source,
            &alert.name,
            alert.status.as_str(),
            &labels,
            &annotations,
            alert.starts_at,
            alert.ends_at,
            now
        ],
    )
    .context("storing alert")?;
    Ok(receipt)
}

/// Records one decision on a firing alert.
pub fn record_decision<'a>(
    db: impl Into<Db<'a>>,
    fingerprint: &str,
    rule: Option<&str>,
    outcome: &str,
    reason: &str,
    event_id: Option<i64>,
    now: i64,
) -> Result<()> {
    db.into()
        .execute(
            "INSERT INTO decision (at, fingerprint, rule, outcome, reason, event_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![now, fingerprint, rule, outcome, reason, event_id],
        )
        .context("recording decision")?;
    Ok(())
}

/// An alert as stored, as JSON.
pub fn get_alert<'a>(db: impl Into<Db<'a>>, fingerprint: &str) -> Result<Option<Value>> {
    db.into()
        .query_row(
            &format!("SELECT {ALERT_COLUMNS} FROM alert WHERE fingerprint = ?1"),
            args![fingerprint],
            alert_json,
        )
        .context("reading alert")
}

fn alert_json(r: &Row) -> std::result::Result<Value, DbError> {
    let labels: String = r.get(4)?;
    let annotations: String = r.get(5)?;
    Ok(serde_json::json!({
        "fingerprint": r.get::<String>(0)?,
        "source": r.get::<String>(1)?,
        "name": r.get::<String>(2)?,
        "status": r.get::<String>(3)?,
        "labels": serde_json::from_str::<Value>(&labels).unwrap_or(Value::Null),
        "annotations": serde_json::from_str::<Value>(&annotations).unwrap_or(Value::Null),
        "starts_at": r.get::<Option<i64>>(6)?,
        "ends_at": r.get::<Option<i64>>(7)?,
        "first_seen": r.get::<i64>(8)?,
        "last_seen": r.get::<i64>(9)?,
        "receipts": r.get::<i64>(10)?,
    }))
}

/// Every column of an alert, as `alert_json` reads them.
const ALERT_COLUMNS: &str =
    "fingerprint, source, name, status, labels, annotations, starts_at, ends_at, first_seen, last_seen, receipts";

/// One status's alerts, newest first, down `alert_status`. No filter is
/// ever left open (`?1 IS NULL OR status = ?1`): SQLite would then walk and
/// sort every alert, so each filter has its own query.
const ALERTS_OF_STATUS: &str =
    "WHERE status = ?1 AND last_seen >= ?2 ORDER BY last_seen DESC LIMIT ?3";

/// One name's alerts of one status, newest first, down `alert_name`.
const ALERTS_OF_NAME: &str =
    "WHERE name = ?4 AND status = ?1 AND last_seen >= ?2 ORDER BY last_seen DESC LIMIT ?3";

/// The alert of a fingerprint, of any status or one: one read of the
/// primary key, whatever else the filter says.
const ALERT_OF_FINGERPRINT: &str = "WHERE fingerprint = ?4 AND (CAST(?1 AS TEXT) IS NULL OR status = ?1) AND last_seen >= ?2 AND (CAST(?5 AS TEXT) IS NULL OR name = ?5) LIMIT ?3";

/// Alerts, newest first, with their last decisions.
pub fn list_alerts<'a>(
    db: impl Into<Db<'a>>,
    status: Option<&str>,
    fingerprint: Option<&str>,
    name: Option<&str>,
    since: i64,
    limit: i64,
) -> Result<Vec<Value>> {
    let db = db.into();
    let mut alerts: Vec<Value> = Vec::new();
    let statuses = match (status, fingerprint) {
        (Some(s), _) => vec![Some(s)],
        (None, Some(_)) => vec![None],
        (None, None) => vec![Some("firing"), Some("resolved")],
    };
    let filter = match (fingerprint, name) {
        (Some(_), _) => ALERT_OF_FINGERPRINT,
        (None, Some(_)) => ALERTS_OF_NAME,
        (None, None) => ALERTS_OF_STATUS,
    };
    let sql = format!("SELECT {ALERT_COLUMNS} FROM alert {filter}");
    for status in statuses {
        let rows = match (fingerprint, name) {
            (Some(fp), name) => db.query(&sql, args![status, since, limit, fp, name], alert_json),
            (None, Some(name)) => db.query(&sql, args![status, since, limit, name], alert_json),
            (None, None) => db.query(&sql, args![status, since, limit], alert_json),
        }
        .context("listing alerts")?;
        alerts.extend(rows);
    }
    // Newest first across both statuses, ties in the index's order.
    fn key(a: &Value) -> (Option<i64>, Option<&str>) {
        (a["last_seen"].as_i64(), a["fingerprint"].as_str())
    }
    alerts.sort_by(|a, b| key(b).cmp(&key(a)));
    alerts.truncate(usize::try_from(limit).unwrap_or(0));
    for a in &mut alerts {
        let fp = a["fingerprint"].as_str().unwrap_or_default().to_string();
        let decisions = db
            .query(
                "SELECT at, rule, outcome, reason, event_id FROM decision WHERE fingerprint = ?1 ORDER BY id DESC LIMIT 20",
                args![&fp],
                |r| {
                    Ok(serde_json::json!({
                        "at": r.get::<i64>(0)?, "rule": r.get::<Option<String>>(1)?, "outcome": r.get::<String>(2)?,
                        "reason": r.get::<String>(3)?, "event_id": r.get::<Option<i64>>(4)?,
                    }))
                },
            )
            .context("reading decisions")?;
        a["decisions"] = Value::Array(decisions);
    }
    Ok(alerts)
}

#[cfg(test)]
mod tests {
    use super::{
        list_alerts, ALERTS_OF_NAME, ALERTS_OF_STATUS, ALERT_COLUMNS, ALERT_OF_FINGERPRINT,
    };
    use crate::store::testing::{db, plan};

    /// The plan of a filter of `list_alerts`.
    fn alert_plan(filter: &str, args: &[&dyn rusqlite::ToSql]) -> Vec<String> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alert {filter}");
        plan(&db(), &sql, args)
    }

    #[test]
    fn alerts_are_listed_down_the_status_index_without_a_sort() {
        assert_eq!(
            alert_plan(ALERTS_OF_STATUS, &[&"firing"]),
            ["SEARCH alert USING INDEX alert_status (status=? AND last_seen>?)"]
        );
    }

    #[test]
    fn an_alert_is_found_by_its_fingerprint_in_one_primary_key_read() {
        for (status, name) in [(None, None), (Some("firing"), Some("Disk"))] {
            assert_eq!(
                alert_plan(ALERT_OF_FINGERPRINT, &[&status, &0, &10, &"fp", &name]),
                ["SEARCH alert USING PRIMARY KEY (fingerprint=?)"]
            );
        }
    }

    #[test]
    fn alerts_of_a_name_are_listed_down_their_index_without_a_sort() {
        assert_eq!(
            alert_plan(ALERTS_OF_NAME, &[&"firing", &0, &10, &"Disk"]),
            ["SEARCH alert USING INDEX alert_name (name=? AND status=? AND last_seen>?)"]
        );
    }

    #[test]
    fn alerts_of_both_statuses_come_newest_first_up_to_the_limit() {
        let conn = db();
        for (fp, status, seen) in [
            ("a", "firing", 10),
            ("b", "resolved", 40),
            ("c", "firing", 30),
            ("d", "resolved", 20),
            ("e", "firing", 5),
        ] {
            conn.execute(
                "INSERT INTO alert (fingerprint, source, name, status, labels, annotations, first_seen, last_seen) VALUES (?1, 'own', 'Disk', ?2, '{}', '{}', ?3, ?3)",
                rusqlite::params![fp, status, seen],
            )
            .unwrap();
        }
        let fps = |status, since, limit| -> Vec<String> {
            list_alerts(&conn, status, None, None, since, limit)
                .unwrap()
                .iter()
                .map(|a| a["fingerprint"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(fps(None, 0, 10), ["b", "c", "d", "a", "e"]);
        assert_eq!(fps(None, 0, 3), ["b", "c", "d"]);
        assert_eq!(fps(None, 10, 10), ["b", "c", "d", "a"]);
        assert_eq!(fps(Some("firing"), 0, 2), ["c", "a"]);
        assert_eq!(fps(Some("resolved"), 0, 10), ["b", "d"]);
        assert_eq!(
            list_alerts(&conn, None, Some("d"), None, 0, 10).unwrap()[0]["status"],
            "resolved"
        );
        let by = |fp, name, status| -> Vec<String> {
            list_alerts(&conn, status, fp, name, 0, 10)
                .unwrap()
                .iter()
                .map(|a| a["fingerprint"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(by(Some("c"), Some("Disk"), None), ["c"]);
        assert!(by(Some("c"), Some("Cpu"), None).is_empty());
        assert!(by(Some("c"), None, Some("resolved")).is_empty());
        assert_eq!(by(None, Some("Disk"), None), ["b", "c", "d", "a", "e"]);
        assert_eq!(by(None, Some("Disk"), Some("firing")), ["c", "a", "e"]);
        assert!(by(None, Some("Cpu"), None).is_empty());
        assert!(fps(None, 0, 0).is_empty());
    }
}
