//! The servers that use the store: each writes its row (`beat`) as it
//! renews its part in leading, every second, though an unchanged row is
//! written again only every `RESOLUTION_MS`. `list` gives every server
//! heard from lately, which one holds the `work` lease (it leads), and
//! whose config differs from the leader's. A server restarted on the same
//! host and address replaces its earlier run's row; a row unheard of for
//! `FORGET_MS` goes.

use serde::Serialize;

use super::sql::{args, Db, DB_NOW_MS as NOW};
use crate::error::{Result, StoreContext};

/// How stale a server's unchanged row may be before it is written again (ms).
pub const RESOLUTION_MS: i64 = 5_000;

/// A server unheard of for this long is shown as gone (ms).
pub const GONE_AFTER_MS: i64 = 3 * RESOLUTION_MS;

/// A server unheard of for this long is forgotten (ms).
const FORGET_MS: i64 = 24 * 3600 * 1000;

/// What a server says of itself.
#[derive(Debug, Clone)]
pub struct Beat {
    /// Its id: host, address and pid, as its lease names it.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// The URL it serves on.
    pub address: String,
    /// heal's version.
    pub version: String,
    /// SHA-256 of its config file's text.
    pub config_hash: String,
    /// When it started (ms).
    pub started_at: i64,
}

/// A server as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replica {
    /// Host, address and pid.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// The URL it serves on.
    pub address: String,
    /// heal's version.
    pub version: String,
    /// SHA-256 of its config file's text.
    pub config_sha256: String,
    /// The config version of that text, when it was applied.
    pub config_version: Option<i64>,
    /// When it started (ms).
    pub started_at: i64,
    /// When it was last heard from (ms, the database's clock).
    pub last_seen: i64,
    /// How long ago that was (ms).
    pub seen_ago_ms: i64,
    /// Whether it was heard from within `GONE_AFTER_MS`.
    pub up: bool,
    /// Whether it leads: holds the `work` lease.
    pub leader: bool,
    /// Whether its config differs from the leader's.
    pub config_differs: bool,
}

/// Records that a server is alive, with what it runs; forgets its earlier
/// runs (same host and address) and servers long gone.
pub fn beat<'a>(db: impl Into<Db<'a>>, beat: &Beat) -> Result<()> {
    let db = db.into();
    let sql = format!(
        "INSERT INTO replica (id, host, address, version, config_hash, started_at, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW})
         ON CONFLICT (id) DO UPDATE SET version = excluded.version,
             config_hash = excluded.config_hash, last_seen = excluded.last_seen
         WHERE replica.config_hash != excluded.config_hash OR replica.version != excluded.version
             OR replica.last_seen < excluded.last_seen - ?7"
    );
    db.execute(
        &sql,
        args![
            &beat.id,
            &beat.host,
            &beat.address,
            &beat.version,
            &beat.config_hash,
            beat.started_at,
            RESOLUTION_MS
        ],
    )
    .context("recording this server in the replica list")?;
    db.execute(
        &format!(
            "DELETE FROM replica WHERE id != ?1 AND ((host = ?2 AND address = ?3) OR last_seen < {NOW} - ?4)"
        ),
        args![&beat.id, &beat.host, &beat.address, FORGET_MS],
    )
    .context("forgetting servers gone")?;
    Ok(())
}

/// Every server the store knows, by host and address; `sole` names the
/// server that leads without a lease (one server on a SQLite file).
pub fn list<'a>(db: impl Into<Db<'a>>, sole: Option<&str>) -> Result<Vec<Replica>> {
    let sql = format!(
        "SELECT r.id, r.host, r.address, r.version, r.config_hash,
                (SELECT max(c.version) FROM config_version c WHERE c.hash = r.config_hash),
                r.started_at, r.last_seen, {NOW} - r.last_seen,
                CASE WHEN l.holder = r.id THEN 1 ELSE 0 END
         FROM replica r LEFT JOIN leader l ON l.name = 'work' AND l.expires_at >= {NOW}
         ORDER BY r.host, r.address, r.id"
    );
    let mut replicas = db
        .into()
        .query(&sql, args![], |r| {
            let seen_ago_ms: i64 = r.get(8)?;
            Ok(Replica {
                id: r.get(0)?,
                host: r.get(1)?,
                address: r.get(2)?,
                version: r.get(3)?,
                config_sha256: r.get(4)?,
                config_version: r.get(5)?,
                started_at: r.get(6)?,
                last_seen: r.get(7)?,
                seen_ago_ms,
                up: seen_ago_ms <= GONE_AFTER_MS,
                leader: r.get::<i64>(9)? != 0,
                config_differs: false,
            })
        })
        .context("reading the replica list")?;
    if let Some(sole) = sole {
        for r in &mut replicas {
            r.leader = r.id == sole;
        }
    }
    let leading = replicas
        .iter()
        .find(|r| r.leader)
        .map(|r| r.config_sha256.clone());
    for r in &mut replicas {
        r.config_differs = leading.as_ref().is_some_and(|h| *h != r.config_sha256);
    }
    Ok(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::db;

    fn beat_of(id: &str, host: &str, address: &str, hash: &str) -> Beat {
        Beat {
            id: id.into(),
            host: host.into(),
            address: address.into(),
            version: "1.0".into(),
            config_hash: hash.into(),
            started_at: 1,
        }
    }

    #[test]
    fn servers_are_listed_with_the_leader_and_a_differing_config_flagged() {
        let conn = db();
        crate::store::apply_config(&conn, "aa", "startup", "r.toml", 1).unwrap();
        beat(&conn, &beat_of("a 1", "a", "http://a", "aa")).unwrap();
        beat(&conn, &beat_of("b 1", "b", "http://b", "bb")).unwrap();
        let ids = |l: &[Replica]| -> Vec<(String, bool, bool, Option<i64>)> {
            l.iter()
                .map(|r| (r.id.clone(), r.leader, r.config_differs, r.config_version))
                .collect()
        };
        // No lease held: nobody leads, nothing to differ from.
        assert_eq!(
            ids(&list(&conn, None).unwrap()),
            [
                ("a 1".into(), false, false, Some(1)),
                ("b 1".into(), false, false, None)
            ]
        );
        crate::store::leader::lead(&conn, "work", "b 1", 10_000).unwrap();
        let listed = list(&conn, None).unwrap();
        assert_eq!(
            ids(&listed),
            [
                ("a 1".into(), false, true, Some(1)),
                ("b 1".into(), true, false, None)
            ]
        );
        assert!(listed.iter().all(|r| r.up && r.seen_ago_ms < 5_000));
        // One server on a file leads without a lease.
        assert_eq!(
            ids(&list(&conn, Some("a 1")).unwrap()),
            [
                ("a 1".into(), true, false, Some(1)),
                ("b 1".into(), false, true, None)
            ]
        );
        // A's next run replaces its row; a changed config is written at once.
        beat(&conn, &beat_of("a 2", "a", "http://a", "aa")).unwrap();
        beat(&conn, &beat_of("b 1", "b", "http://b", "aa")).unwrap();
        assert_eq!(
            ids(&list(&conn, None).unwrap()),
            [
                ("a 2".into(), false, false, Some(1)),
                ("b 1".into(), true, false, Some(1))
            ]
        );
        // Long silent servers show as gone.
        conn.execute(
            "UPDATE replica SET last_seen = last_seen - 20000 WHERE id = 'a 2'",
            [],
        )
        .unwrap();
        let listed = list(&conn, None).unwrap();
        assert!(!listed[0].up && listed[1].up, "{listed:?}");
    }
}
