//! The audit log (append-only) and the versions of the config applied.

use serde::Serialize;

use super::sql::{args, Db};
use crate::error::{Result, StoreContext};

/// Every action the audit log records, the filter `heal audit --action`
/// and `GET /api/v1/audit?action=` take. One more written anywhere must be
/// added here: `record_audit` refuses, in debug builds (every test), an
/// action missing from it.
pub const AUDIT_ACTIONS: &[&str] = &[
    "config.applied",
    "config.refused",
    "config.emptied",
    "auth.refused",
    "dashboard.login",
    "dashboard.logout",
    "event.approved",
    "event.rejected",
    "event.cancelled",
    "runbook.run",
    "pause.added",
    "pause.resumed",
    "breaker.reset",
    "breaker.tripped",
    "heartbeat.registered",
    "heartbeat.deleted",
    "heartbeat.muted",
    "heartbeat.unmuted",
    "probe.registered",
    "probe.deleted",
    "probe.muted",
    "probe.unmuted",
    "channel.tested",
    "agent.forgotten",
];

/// An audit entry to record.
pub struct NewAudit<'a> {
    /// Who: a token name, "local", "startup", "sighup".
    pub actor: &'a str,
    /// What kind of change: `config.applied`, `event.approved`, `auth.refused`, …
    pub action: &'a str,
    /// What it acted on.
    pub target: &'a str,
    /// Reason, hash, counts.
    pub detail: &'a str,
    /// The client's address, for requests.
    pub remote: Option<&'a str>,
}

/// Appends an entry to the audit log.
pub fn record_audit<'a>(db: impl Into<Db<'a>>, a: &NewAudit, now: i64) -> Result<()> {
    debug_assert!(
        AUDIT_ACTIONS.contains(&a.action),
        "audit action {:?} is not in store::AUDIT_ACTIONS",
        a.action
    );
    db.into()
        .execute(
            "INSERT INTO audit (at, actor, action, target, detail, remote) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![now, a.actor, a.action, a.target, a.detail, a.remote],
        )
        .context("appending to the audit log")?;
    Ok(())
}

/// An audit entry as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    /// Id.
    pub id: i64,
    /// When (ms).
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What kind of change.
    pub action: String,
    /// On what.
    pub target: String,
    /// Details.
    pub detail: String,
    /// From where.
    pub remote: Option<String>,
}

/// Audit entries newest first, since `since` (ms), optionally of one action
/// and older than entry `before` (the next page).
pub fn audit_entries<'a>(
    db: impl Into<Db<'a>>,
    since: i64,
    action: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>> {
    db.into()
        .query(
            "SELECT id, at, actor, action, target, detail, remote FROM audit
             WHERE at >= ?1 AND (action = ?2 OR ?2 IS NULL) AND id < coalesce(?3, 9223372036854775807)
             ORDER BY id DESC LIMIT ?4",
            args![since, action, before, limit],
            |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                detail: r.get(5)?,
                remote: r.get(6)?,
            })
        })
        .context("reading the audit log")
}

/// A config version.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigVersion {
    /// 1, 2, …
    pub version: i64,
    /// SHA-256 of the file's text.
    pub hash: String,
    /// When it was first applied (ms).
    pub applied_at: i64,
    /// Who applied it.
    pub applied_by: String,
    /// The file.
    pub path: String,
}

/// The latest config version, if any.
pub fn current_config<'a>(db: impl Into<Db<'a>>) -> Result<Option<ConfigVersion>> {
    db.into()
        .query_row(
        "SELECT version, hash, applied_at, applied_by, path FROM config_version ORDER BY version DESC LIMIT 1",
        args![],
        |r| {
            Ok(ConfigVersion {
                version: r.get(0)?,
                hash: r.get(1)?,
                applied_at: r.get(2)?,
                applied_by: r.get(3)?,
                path: r.get(4)?,
            })
        })
    .context("reading config versions")
}

/// Records a config as applied: a new version when its hash differs from
/// the latest (audited as `config.applied`). Returns the version and
/// whether it is new.
pub fn apply_config<'a>(
    db: impl Into<Db<'a>>,
    hash: &str,
    by: &str,
    path: &str,
    now: i64,
) -> Result<(i64, bool)> {
    let db = db.into();
    if let Some(c) = current_config(db)? {
        if c.hash == hash {
            return Ok((c.version, false));
        }
    }
    let version = db
        .query_row(
            "INSERT INTO config_version (hash, applied_at, applied_by, path) VALUES (?1, ?2, ?3, ?4) RETURNING version",
            args![hash, now, by, path],
            |r| r.get::<i64>(0),
        )
        .context("recording config version")?
        .unwrap_or_default();
    record_audit(
        db,
        &NewAudit {
            actor: by,
            action: "config.applied",
            target: path,
            detail: &format!("version {version}, sha256 {hash}"),
            remote: None,
        },
        now,
    )?;
    Ok((version, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_change_with_the_hash_and_the_log_refuses_edits() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        assert_eq!(
            apply_config(&conn, "aa", "startup", "r.toml", 1).unwrap(),
            (1, true)
        );
        assert_eq!(
            apply_config(&conn, "aa", "sighup", "r.toml", 2).unwrap(),
            (1, false)
        );
        assert_eq!(
            apply_config(&conn, "bb", "admin", "r.toml", 3).unwrap(),
            (2, true)
        );
        let log = audit_entries(&conn, 0, Some("config.applied"), None, 10).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].actor, "admin");
        let older = audit_entries(&conn, 0, None, Some(log[0].id), 10).unwrap();
        assert_eq!(older.len(), 1, "the next page starts after the newest");
        assert_eq!(older[0].id, log[1].id);
        let e = conn
            .execute("DELETE FROM audit", [])
            .unwrap_err()
            .to_string();
        assert!(e.contains("append-only"), "{e}");
        let e = conn
            .execute("UPDATE audit SET actor = 'x'", [])
            .unwrap_err()
            .to_string();
        assert!(e.contains("append-only"), "{e}");
    }
}
