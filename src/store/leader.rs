//! Leases: what one server must do alone when several share the database
//! (the scheduler's rounds, the sweeper, the outbox's deliveries) is done
//! by the holder of its lease. A lease is a row per name with its holder,
//! a term and an expiry by the database's clock, so the servers' own clocks
//! never decide who leads.
//!
//! - `lead` takes a lease that is free or expired, or renews one's own; a
//!   new holder gets the next term.
//! - `fence` is the check a holder makes inside the transaction of each
//!   write only the leader may make: it touches its own lease row, term and
//!   all, which fails once another holder has taken it, and on PostgreSQL
//!   locks the row until the transaction ends, so no one takes the lease
//!   between the check and the commit. A holder that was paused past its
//!   expiry therefore cannot act on what it decided before.
//! - `resign` lets the lease go at once (a server stopping).

use super::sql::{args, Db, DB_NOW_MS as NOW};
use crate::error::{Result, StoreContext};

/// A lease held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What it is the lease of.
    pub name: String,
    /// Who holds it: a server's id.
    pub holder: String,
    /// Grows by one with each new holder (and each new hold after an expiry).
    pub term: i64,
    /// Until when (ms, the database's clock), unless renewed.
    pub expires_at: i64,
}

/// Takes or renews the lease `name` for `holder` for `ttl_ms`: the lease
/// when `holder` has it now, None when another holds it unexpired.
pub fn lead<'a>(
    db: impl Into<Db<'a>>,
    name: &str,
    holder: &str,
    ttl_ms: i64,
) -> Result<Option<Lease>> {
    take(db.into(), name, holder, None, ttl_ms)
}

/// `lead`, also taking the lease at once from a holder whose id begins
/// with `predecessor`: an earlier run of the same server (same host and
/// address) that died without letting it go.
pub fn lead_after<'a>(
    db: impl Into<Db<'a>>,
    name: &str,
    holder: &str,
    predecessor: &str,
    ttl_ms: i64,
) -> Result<Option<Lease>> {
    take(db.into(), name, holder, Some(predecessor), ttl_ms)
}

fn take(
    db: Db<'_>,
    name: &str,
    holder: &str,
    predecessor: Option<&str>,
    ttl_ms: i64,
) -> Result<Option<Lease>> {
    let sql = format!(
        "INSERT INTO leader (name, holder, term, expires_at) VALUES (?1, ?2, 1, {NOW} + ?3)
         ON CONFLICT (name) DO UPDATE SET
             term = CASE WHEN leader.holder = excluded.holder AND leader.expires_at >= {NOW}
                         THEN leader.term ELSE leader.term + 1 END,
             holder = excluded.holder,
             expires_at = excluded.expires_at
         WHERE leader.holder = excluded.holder OR leader.expires_at < {NOW}
             OR substr(leader.holder, 1, length(CAST(?4 AS TEXT))) = CAST(?4 AS TEXT)
         RETURNING term, expires_at"
    );
    db.query_row(&sql, args![name, holder, ttl_ms, predecessor], |r| {
        Ok(Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            term: r.get(0)?,
            expires_at: r.get(1)?,
        })
    })
    .context("taking a lease")
}

/// Whether `lease` is still held, checked inside the caller's transaction
/// before a write only its holder may make (see the module's notes).
pub fn fence<'a>(db: impl Into<Db<'a>>, lease: &Lease) -> Result<bool> {
    let sql = format!(
        "UPDATE leader SET term = term
         WHERE name = ?1 AND holder = ?2 AND term = ?3 AND expires_at >= {NOW}"
    );
    let n = db
        .into()
        .execute(&sql, args![&lease.name, &lease.holder, lease.term])
        .context("checking a lease")?;
    Ok(n == 1)
}

/// Lets a lease go, so another server may take it at once.
pub fn resign<'a>(db: impl Into<Db<'a>>, lease: &Lease) -> Result<()> {
    db.into()
        .execute(
            "UPDATE leader SET expires_at = 0 WHERE name = ?1 AND holder = ?2 AND term = ?3",
            args![&lease.name, &lease.holder, lease.term],
        )
        .context("giving a lease up")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::db;

    #[test]
    fn one_holder_at_a_time_and_an_old_term_is_fenced_off() {
        let conn = db();
        let a = lead(&conn, "scheduler", "a", 60_000).unwrap().unwrap();
        assert_eq!(a.term, 1);
        assert_eq!(lead(&conn, "scheduler", "b", 60_000).unwrap(), None);
        // Another lease is another row.
        assert_eq!(lead(&conn, "outbox", "b", 60_000).unwrap().unwrap().term, 1);
        let renewed = lead(&conn, "scheduler", "a", 60_000).unwrap().unwrap();
        assert_eq!(renewed.term, 1);
        assert!(renewed.expires_at >= a.expires_at);
        assert!(fence(&conn, &a).unwrap());
        resign(&conn, &a).unwrap();
        assert!(!fence(&conn, &a).unwrap(), "resigned");
        let b = lead(&conn, "scheduler", "b", 60_000).unwrap().unwrap();
        assert_eq!(b.term, 2);
        assert!(fence(&conn, &b).unwrap());
        assert!(!fence(&conn, &a).unwrap(), "a's term is over");
        assert_eq!(lead(&conn, "scheduler", "a", 60_000).unwrap(), None);
        // Expired: taken by the next who asks, with a new term, even by the
        // holder itself.
        let short = lead(&conn, "scheduler", "b", -1).unwrap().unwrap();
        assert!(!fence(&conn, &short).unwrap(), "expired");
        let a = lead(&conn, "scheduler", "a", 60_000).unwrap().unwrap();
        assert_eq!(a.term, 3);
        assert!(!fence(&conn, &b).unwrap());
    }

    #[test]
    fn a_restarted_server_takes_its_earlier_runs_lease_and_no_one_elses() {
        let conn = db();
        let old = lead(&conn, "work", "h1 http://a:1 pid 10", 60_000)
            .unwrap()
            .unwrap();
        let other = "h2 http://b:1 pid 20";
        assert_eq!(
            lead_after(&conn, "work", other, "h2 http://b:1 pid ", 60_000).unwrap(),
            None
        );
        // A prefix with LIKE's wildcards is taken as it is written.
        assert_eq!(
            lead_after(&conn, "work", other, "h_ %", 60_000).unwrap(),
            None
        );
        let new = lead_after(
            &conn,
            "work",
            "h1 http://a:1 pid 11",
            "h1 http://a:1 pid ",
            60_000,
        )
        .unwrap()
        .unwrap();
        assert_eq!(new.term, old.term + 1);
        assert!(!fence(&conn, &old).unwrap());
        assert!(fence(&conn, &new).unwrap());
    }
}
