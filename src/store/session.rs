//! Dashboard login sessions. Only the SHA-256 of a session's id is stored
//! (the id itself lives in the browser's cookie), with the SHA-256 of the
//! token that logged in, so sessions survive a restart and a copy of the
//! database logs nobody in.

use super::sql::{args, Db};
use crate::error::{Result, StoreContext};

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Hex SHA-256 of the token it was made with.
    pub token_hash: String,
    /// When it ends (ms).
    pub expires_at: i64,
}

/// Records a new session, and forgets those that have expired.
pub fn create_session<'a>(
    db: impl Into<Db<'a>>,
    id_hash: &str,
    token_hash: &str,
    expires_at: i64,
    remote: Option<&str>,
    now: i64,
) -> Result<()> {
    let db = db.into();
    db.execute("DELETE FROM session WHERE expires_at <= ?1", args![now])
        .context("forgetting expired sessions")?;
    db.execute(
        "INSERT INTO session (id_hash, token_hash, created_at, expires_at, remote) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![id_hash, token_hash, now, expires_at, remote],
    )
    .context("recording a session")?;
    Ok(())
}

/// The session with this id hash, if it has not expired.
pub fn session<'a>(db: impl Into<Db<'a>>, id_hash: &str, now: i64) -> Result<Option<SessionRow>> {
    db.into()
        .query_row(
            "SELECT token_hash, expires_at FROM session WHERE id_hash = ?1 AND expires_at > ?2",
            args![id_hash, now],
            |r| {
                Ok(SessionRow {
                    token_hash: r.get(0)?,
                    expires_at: r.get(1)?,
                })
            },
        )
        .context("reading a session")
}

/// Ends a session (logout); false if there was none.
pub fn end_session<'a>(db: impl Into<Db<'a>>, id_hash: &str) -> Result<bool> {
    let n = db
        .into()
        .execute("DELETE FROM session WHERE id_hash = ?1", args![id_hash])
        .context("ending a session")?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_it_expires_or_ends() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        create_session(&conn, "a", "tok", 1_000, Some("127.0.0.1"), 0).unwrap();
        create_session(&conn, "b", "tok", 5_000, None, 0).unwrap();
        let want = SessionRow {
            token_hash: "tok".into(),
            expires_at: 1_000,
        };
        assert_eq!(session(&conn, "a", 999).unwrap(), Some(want));
        assert_eq!(session(&conn, "a", 1_000).unwrap(), None, "expired");
        assert_eq!(session(&conn, "zz", 0).unwrap(), None);
        // A new login forgets expired sessions.
        create_session(&conn, "c", "tok", 9_000, None, 2_000).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM session", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        assert!(end_session(&conn, "b").unwrap());
        assert!(!end_session(&conn, "b").unwrap());
        assert_eq!(session(&conn, "b", 2_000).unwrap(), None);
    }
}
