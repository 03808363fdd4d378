//! SQL of what heal watches by itself: heartbeats and pings, probes and their
//! results, scheduled runs, internal alerts, and retention.

use serde::Serialize;
use serde_json::Value;

use super::sql::{args, Db, DbError, Row};
use crate::error::{Error, Result, StoreContext};
use crate::heartbeat::{End, Seen};
use crate::probe;

/// A heartbeat's row.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatRow {
    /// Its name.
    pub name: String,
    /// "config" or "api".
    pub origin: String,
    /// Its raw form as JSON text.
    #[serde(skip)]
    pub def: String,
    /// When heal started watching it.
    pub registered_at: i64,
    /// Muted.
    pub paused: bool,
    /// Why it was muted.
    pub paused_reason: Option<String>,
    /// When the mute ends by itself; `None`: when unmuted.
    pub muted_until: Option<i64>,
    /// Last unmute.
    pub resumed_at: Option<i64>,
    /// Last start ping.
    pub last_start: Option<i64>,
    /// Last success or failure ping.
    pub last_end_at: Option<i64>,
    /// Whether that was a success.
    pub last_end_ok: Option<bool>,
    /// Its exit code.
    pub last_end_code: Option<i32>,
    /// Pings received.
    pub pings: i64,
    /// State as of the checker's last sweep.
    pub state: String,
    /// Since when.
    pub state_since: i64,
}

impl HeartbeatRow {
    /// What the pure status function needs.
    pub fn seen(&self) -> Seen {
        Seen {
            registered_at: self.registered_at,
            resumed_at: self.resumed_at,
            paused: self.paused,
            last_start: self.last_start,
            last_end: self.last_end_at.map(|at| End {
                at,
                ok: self.last_end_ok.unwrap_or(true),
                exit_code: self.last_end_code,
            }),
        }
    }
}

const HEARTBEAT_COLUMNS: &str = "name, origin, def, registered_at, paused, paused_reason, resumed_at, last_start, last_end_at, last_end_ok, last_end_code, pings, state, state_since, muted_until";

fn heartbeat_row(r: &Row) -> std::result::Result<HeartbeatRow, DbError> {
    Ok(HeartbeatRow {
        name: r.get(0)?,
        origin: r.get(1)?,
        def: r.get(2)?,
        registered_at: r.get(3)?,
        paused: r.get(4)?,
        paused_reason: r.get(5)?,
        resumed_at: r.get(6)?,
        last_start: r.get(7)?,
        last_end_at: r.get(8)?,
        last_end_ok: r.get(9)?,
        last_end_code: r.get(10)?,
        pings: r.get(11)?,
        state: r.get(12)?,
        state_since: r.get(13)?,
        muted_until: r.get(14)?,
    })
}

/// Every heartbeat, by name.
pub fn heartbeats<'a>(db: impl Into<Db<'a>>) -> Result<Vec<HeartbeatRow>> {
    db.into()
        .query(
            &format!("SELECT {HEARTBEAT_COLUMNS} FROM heartbeat ORDER BY name"),
            args![],
            heartbeat_row,
        )
        .context("listing heartbeats")
}

/// One heartbeat.
pub fn heartbeat<'a>(db: impl Into<Db<'a>>, name: &str) -> Result<Option<HeartbeatRow>> {
    db.into()
        .query_row(
            &format!("SELECT {HEARTBEAT_COLUMNS} FROM heartbeat WHERE name = ?1"),
            args![name],
            heartbeat_row,
        )
        .context("reading a heartbeat")
}

fn no_heartbeat(name: &str) -> Error {
    Error::request(
        404,
        format!("no heartbeat {name:?} (add a [[heartbeat]] to runbooks.toml, or PUT /api/v1/heartbeats/{name})"),
    )
}

/// Makes the config's heartbeats the `config` rows: adds new ones, updates
/// changed ones, deletes those no longer in the file. Returns log lines.
pub fn sync_heartbeats<'a>(
    db: impl Into<Db<'a>>,
    defs: &[(String, String)],
    now: i64,
) -> Result<Vec<String>> {
    let db = db.into();
    let mut log = Vec::new();
    for (name, def) in defs {
        let origin: Option<String> = db
            .query_row(
                "SELECT origin FROM heartbeat WHERE name = ?1",
                args![name],
                |r| r.get(0),
            )
            .context("syncing heartbeats")?;
        if origin.as_deref() == Some("api") {
            log.push(format!(
                "heartbeat {name:?} registered through the API is now defined by the config file"
            ));
        }
        db.execute(
            "INSERT INTO heartbeat (name, origin, def, registered_at, state_since) VALUES (?1, 'config', ?2, ?3, ?3)
             ON CONFLICT(name) DO UPDATE SET origin = 'config', def = excluded.def",
            args![name, def, now],
        )
        .context("syncing heartbeats")?;
    }
    let stored: Vec<String> = db
        .query(
            "SELECT name FROM heartbeat WHERE origin = 'config'",
            args![],
            |r| r.get(0),
        )
        .context("syncing heartbeats")?;
    for name in stored {
        if !defs.iter().any(|(n, _)| *n == name) {
            remove_heartbeat(db, &name)?;
            log.push(format!(
                "heartbeat {name:?} is no longer in the config file: removed"
            ));
        }
    }
    Ok(log)
}

fn remove_heartbeat(db: Db, name: &str) -> Result<()> {
    db.execute("DELETE FROM ping WHERE heartbeat = ?1", args![name])
        .context("deleting a heartbeat's pings")?;
    db.execute("DELETE FROM heartbeat WHERE name = ?1", args![name])
        .context("deleting a heartbeat")?;
    Ok(())
}

/// Registers or updates a heartbeat through the API; true when it is new.
pub fn put_heartbeat<'a>(db: impl Into<Db<'a>>, name: &str, def: &str, now: i64) -> Result<bool> {
    let db = db.into();
    match heartbeat(db, name)? {
        Some(row) if row.origin == "config" => Err(Error::request(
            409,
            format!("heartbeat {name:?} is defined in the config file; change it there"),
        )),
        Some(_) => {
            db.execute(
                "UPDATE heartbeat SET def = ?2 WHERE name = ?1",
                args![name, def],
            )
            .context("updating a heartbeat")?;
            Ok(false)
        }
        None => {
            db.execute(
                "INSERT INTO heartbeat (name, origin, def, registered_at, state_since) VALUES (?1, 'api', ?2, ?3, ?3)",
                args![name, def, now],
            )
            .context("registering a heartbeat")?;
            Ok(true)
        }
    }
}

/// Replaces each plain ping key still stored (by a heal before keys were
/// hashed) with its SHA-256; returns how many heartbeats changed. The old
/// text is overwritten on disk (`secure_delete`), not left in free pages.
/// A definition that no longer parses (a `${VAR}` now unset) is left as it
/// is: the key is hashed when it is next read, and the config's own
/// heartbeats are rewritten at every start anyway.
///
/// SQLite only: it upgrades a file a heal before hashing wrote, when the
/// file is opened; a PostgreSQL store is copied from a file opened so, and
/// holds hashed keys only.
pub fn hash_stored_ping_keys(conn: &rusqlite::Connection) -> Result<usize> {
    let db = Db::from(conn);
    let rows: Vec<(String, String)> = db
        .query(
            r#"SELECT name, def FROM heartbeat WHERE def LIKE '%"ping_key":%'"#,
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("finding plain ping keys")?;
    if rows.is_empty() {
        return Ok(0);
    }
    conn.pragma_update(None, "secure_delete", true)
        .context("turning on secure_delete")?;
    let mut n = 0;
    for (name, def) in rows {
        let Ok(hb) = crate::config::heartbeat_from_def(&def) else {
            continue;
        };
        n += db
            .execute(
                "UPDATE heartbeat SET def = ?2 WHERE name = ?1",
                args![&name, &hb.def],
            )
            .context("hashing a stored ping key")?;
    }
    conn.pragma_update(None, "secure_delete", false)
        .context("turning off secure_delete")?;
    Ok(n)
}

/// Deletes a heartbeat registered through the API, with its pings.
pub fn delete_heartbeat<'a>(db: impl Into<Db<'a>>, name: &str) -> Result<()> {
    let db = db.into();
    match heartbeat(db, name)? {
        None => Err(no_heartbeat(name)),
        Some(row) if row.origin == "config" => Err(Error::request(
            409,
            format!("heartbeat {name:?} is defined in the config file; remove it there and reload"),
        )),
        Some(_) => remove_heartbeat(db, name),
    }
}

/// A mute to apply: why, and when it ends by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mute {
    /// Why, and who muted it.
    pub reason: String,
    /// When it ends by itself (ms); `None`: when unmuted.
    pub until: Option<i64>,
}

/// Mutes (no alerts; `Some`, which replaces an earlier mute) or unmutes
/// (`None`) a heartbeat; unmuting restarts its clock (unmuting one that is
/// not muted changes nothing).
pub fn mute_heartbeat<'a>(
    db: impl Into<Db<'a>>,
    name: &str,
    mute: Option<&Mute>,
    now: i64,
) -> Result<()> {
    let db = db.into();
    if heartbeat(db, name)?.is_none() {
        return Err(no_heartbeat(name));
    }
    match mute {
        Some(m) => db.execute(
            "UPDATE heartbeat SET paused = 1, paused_reason = ?2, muted_until = ?3 WHERE name = ?1",
            args![name, &m.reason, m.until],
        ),
        None => db.execute(
            "UPDATE heartbeat SET paused = 0, paused_reason = NULL, muted_until = NULL, resumed_at = ?2 WHERE name = ?1 AND paused = 1",
            args![name, now],
        ),
    }
    .context("muting a heartbeat")?;
    Ok(())
}

/// A probe's mute.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeMuteRow {
    /// Why, and who muted it.
    pub reason: String,
    /// When it ends by itself (ms); `None`: when unmuted.
    pub until: Option<i64>,
    /// When it was muted (ms).
    pub at: i64,
}

/// Mutes (`Some`, which replaces an earlier mute) or unmutes (`None`) a
/// probe by name; the caller checks that it exists.
pub fn mute_probe<'a>(
    db: impl Into<Db<'a>>,
    name: &str,
    mute: Option<&Mute>,
    now: i64,
) -> Result<()> {
    let db = db.into();
    match mute {
        Some(m) => db.execute(
            "INSERT INTO probe_mute (name, reason, until, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET reason = excluded.reason, until = excluded.until, at = excluded.at",
            args![name, &m.reason, m.until, now],
        ),
        None => db.execute("DELETE FROM probe_mute WHERE name = ?1", args![name]),
    }
    .context("muting a probe")?;
    Ok(())
}

fn probe_mute_row(r: &Row) -> std::result::Result<ProbeMuteRow, DbError> {
    Ok(ProbeMuteRow {
        reason: r.get(0)?,
        until: r.get(1)?,
        at: r.get(2)?,
    })
}

/// Forgets the mutes of probes that are no longer defined: neither in the
/// file (`file_probes`) nor registered through the API. Returns a log line
/// for each, so a probe that comes back later is not muted unseen.
pub fn forget_probe_mutes<'a>(db: impl Into<Db<'a>>, file_probes: &[&str]) -> Result<Vec<String>> {
    let db = db.into();
    let names: Vec<String> = db
        .query(
            "SELECT name FROM probe_mute WHERE name NOT IN (SELECT name FROM api_probe)",
            args![],
            |r| r.get(0),
        )
        .context("finding the mutes of removed probes")?;
    let mut lines = Vec::new();
    for name in names.iter().filter(|n| !file_probes.contains(&n.as_str())) {
        db.execute("DELETE FROM probe_mute WHERE name = ?1", args![name])
            .context("forgetting a removed probe's mute")?;
        lines.push(format!(
            "probe {name:?} is no longer defined: its mute is forgotten"
        ));
    }
    Ok(lines)
}

/// A probe's mute, if it is muted.
pub fn probe_mute<'a>(db: impl Into<Db<'a>>, name: &str) -> Result<Option<ProbeMuteRow>> {
    db.into()
        .query_row(
            "SELECT reason, until, at FROM probe_mute WHERE name = ?1",
            args![name],
            probe_mute_row,
        )
        .context("reading a probe's mute")
}

/// Every probe's mute, by probe name.
pub fn probe_mutes<'a>(
    db: impl Into<Db<'a>>,
) -> Result<std::collections::HashMap<String, ProbeMuteRow>> {
    db.into()
        .query(
            "SELECT reason, until, at, name FROM probe_mute",
            args![],
            |r| Ok((r.get(3)?, probe_mute_row(r)?)),
        )
        .map(|rows| rows.into_iter().collect())
        .context("listing probe mutes")
}

/// What a mute is on: a heartbeat or a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Muted {
    /// A heartbeat.
    Heartbeat,
    /// A probe.
    Probe,
}

impl Muted {
    /// "heartbeat" or "probe".
    pub fn as_str(self) -> &'static str {
        match self {
            Muted::Heartbeat => "heartbeat",
            Muted::Probe => "probe",
        }
    }
}

/// The mutes whose end has come by `now`: what, its name, when it was to end.
pub fn ended_mutes<'a>(db: impl Into<Db<'a>>, now: i64) -> Result<Vec<(Muted, String, i64)>> {
    let db = db.into();
    let mut out = Vec::new();
    for (what, sql) in [
        (
            Muted::Heartbeat,
            "SELECT name, muted_until FROM heartbeat WHERE paused = 1 AND muted_until <= ?1",
        ),
        (
            Muted::Probe,
            "SELECT name, until FROM probe_mute WHERE until <= ?1",
        ),
    ] {
        out.extend(
            db.query(sql, args![now], |r| Ok((what, r.get(0)?, r.get(1)?)))
                .context("finding ended mutes")?,
        );
    }
    Ok(out)
}

/// Ends a mute whose time has come, unless it was unmuted or muted again
/// meanwhile; true when it ended here.
pub fn end_mute<'a>(db: impl Into<Db<'a>>, what: Muted, name: &str, now: i64) -> Result<bool> {
    let db = db.into();
    let n = match what {
        Muted::Heartbeat => db.execute(
            "UPDATE heartbeat SET paused = 0, paused_reason = NULL, muted_until = NULL, resumed_at = ?2
             WHERE name = ?1 AND paused = 1 AND muted_until <= ?2",
            args![name, now],
        ),
        Muted::Probe => db.execute(
            "DELETE FROM probe_mute WHERE name = ?1 AND until <= ?2",
            args![name, now],
        ),
    }
    .context("ending a mute")?;
    Ok(n > 0)
}

/// The checker's view of a heartbeat's state.
pub fn set_heartbeat_state<'a>(
    db: impl Into<Db<'a>>,
    name: &str,
    state: &str,
    now: i64,
) -> Result<()> {
    db.into()
        .execute(
            "UPDATE heartbeat SET state = ?2, state_since = ?3 WHERE name = ?1 AND state <> ?2",
            args![name, state, now],
        )
        .context("recording a heartbeat's state")?;
    Ok(())
}

/// What a ping says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingKind {
    /// A run started.
    Start,
    /// A run succeeded (or a plain check-in).
    Success,
    /// A run failed.
    Fail,
}

impl PingKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            PingKind::Start => "start",
            PingKind::Success => "success",
            PingKind::Fail => "fail",
        }
    }
}

/// A ping to record.
pub struct NewPing<'a> {
    /// The heartbeat's name.
    pub heartbeat: &'a str,
    /// What it says.
    pub kind: PingKind,
    /// The exit code, when given.
    pub exit_code: Option<i32>,
    /// Its body (already capped).
    pub body: &'a [u8],
    /// The client's address.
    pub remote: &'a str,
}

/// Records a ping and moves the heartbeat's last start or end; 404 for an unknown name.
pub fn record_ping<'a>(db: impl Into<Db<'a>>, ping: &NewPing, now: i64) -> Result<()> {
    let db = db.into();
    let n = match ping.kind {
        PingKind::Start => db.execute(
            "UPDATE heartbeat SET last_start = ?2, pings = pings + 1 WHERE name = ?1",
            args![ping.heartbeat, now],
        ),
        PingKind::Success | PingKind::Fail => db.execute(
            "UPDATE heartbeat SET last_end_at = ?2, last_end_ok = ?3, last_end_code = ?4, pings = pings + 1 WHERE name = ?1",
            args![
                ping.heartbeat,
                now,
                ping.kind == PingKind::Success,
                ping.exit_code
            ],
        ),
    }
    .context("recording a ping")?;
    if n == 0 {
        return Err(no_heartbeat(ping.heartbeat));
    }
    db.execute(
        "INSERT INTO ping (heartbeat, at, kind, exit_code, body, remote) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        args![
            ping.heartbeat,
            now,
            ping.kind.as_str(),
            ping.exit_code,
            ping.body,
            ping.remote
        ],
    )
    .context("recording a ping")?;
    Ok(())
}

/// A stored ping.
#[derive(Debug, Clone, Serialize)]
pub struct PingRow {
    /// Id.
    pub id: i64,
    /// When.
    pub at: i64,
    /// start | success | fail.
    pub kind: String,
    /// Exit code, when given.
    pub exit_code: Option<i32>,
    /// Its body, as text (invalid UTF-8 replaced).
    pub body: String,
    /// Who sent it.
    pub remote: String,
}

/// The newest pings of a heartbeat, newest first.
pub fn recent_pings<'a>(db: impl Into<Db<'a>>, name: &str, limit: i64) -> Result<Vec<PingRow>> {
    db.into()
        .query(
            "SELECT id, at, kind, exit_code, body, remote FROM ping WHERE heartbeat = ?1 ORDER BY id DESC LIMIT ?2",
            args![name, limit],
            |r| {
                Ok(PingRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    kind: r.get(2)?,
                    exit_code: r.get(3)?,
                    body: String::from_utf8_lossy(&r.get::<Vec<u8>>(4)?).into_owned(),
                    remote: r.get(5)?,
                })
            },
        )
        .context("listing pings")
}

/// A probe's row.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    /// Its name.
    pub name: String,
    /// unknown | up | down.
    pub state: String,
    /// Failures in a row.
    pub fails_in_row: u32,
    /// Successes in a row.
    pub oks_in_row: u32,
    /// Since when the state holds.
    pub state_since: i64,
    /// Last run.
    pub last_at: Option<i64>,
    /// Whether it passed.
    pub last_ok: Option<bool>,
    /// How long it took.
    pub last_latency_ms: Option<i64>,
    /// What it said.
    pub last_detail: Option<String>,
    /// While down: "warning" or "critical", the `severity` of its ProbeFailing.
    pub severity: Option<String>,
}

impl ProbeRow {
    /// The counting state of `probe::step`.
    pub fn counts(&self) -> probe::Counts {
        probe::Counts {
            state: probe::State::parse(&self.state).unwrap_or(probe::State::Unknown),
            fails_in_row: self.fails_in_row,
            oks_in_row: self.oks_in_row,
        }
    }
}

const PROBE_COLUMNS: &str = "name, state, fails_in_row, oks_in_row, state_since, last_at, last_ok, last_latency_ms, last_detail, severity";

fn probe_row(r: &Row) -> std::result::Result<ProbeRow, DbError> {
    Ok(ProbeRow {
        name: r.get(0)?,
        state: r.get(1)?,
        fails_in_row: r.get(2)?,
        oks_in_row: r.get(3)?,
        state_since: r.get(4)?,
        last_at: r.get(5)?,
        last_ok: r.get(6)?,
        last_latency_ms: r.get(7)?,
        last_detail: r.get(8)?,
        severity: r.get(9)?,
    })
}

/// Every probe that has run, by name.
pub fn probes<'a>(db: impl Into<Db<'a>>) -> Result<Vec<ProbeRow>> {
    db.into()
        .query(
            &format!("SELECT {PROBE_COLUMNS} FROM probe ORDER BY name"),
            args![],
            probe_row,
        )
        .context("listing probes")
}

/// One probe's row, once it has run.
pub fn probe<'a>(db: impl Into<Db<'a>>, name: &str) -> Result<Option<ProbeRow>> {
    db.into()
        .query_row(
            &format!("SELECT {PROBE_COLUMNS} FROM probe WHERE name = ?1"),
            args![name],
            probe_row,
        )
        .context("reading a probe")
}

/// A probe registered through the API.
#[derive(Debug, Clone)]
pub struct ApiProbeRow {
    /// Its name.
    pub name: String,
    /// The fields of its `[[probe]]`, as JSON.
    pub def: String,
    /// When it was first registered (ms).
    pub registered_at: i64,
    /// When it was last replaced (ms).
    pub updated_at: i64,
}

fn api_probe_row(r: &Row) -> std::result::Result<ApiProbeRow, DbError> {
    Ok(ApiProbeRow {
        name: r.get(0)?,
        def: r.get(1)?,
        registered_at: r.get(2)?,
        updated_at: r.get(3)?,
    })
}

/// Every probe registered through the API, by name.
pub fn api_probes<'a>(db: impl Into<Db<'a>>) -> Result<Vec<ApiProbeRow>> {
    db.into()
        .query(
            "SELECT name, def, registered_at, updated_at FROM api_probe ORDER BY name",
            args![],
            api_probe_row,
        )
        .context("listing API probes")
}

/// One probe registered through the API.
pub fn api_probe<'a>(db: impl Into<Db<'a>>, name: &str) -> Result<Option<ApiProbeRow>> {
    db.into()
        .query_row(
            "SELECT name, def, registered_at, updated_at FROM api_probe WHERE name = ?1",
            args![name],
            api_probe_row,
        )
        .context("reading an API probe")
}

/// Registers or replaces a probe through the API; true when it is new.
pub fn put_api_probe<'a>(db: impl Into<Db<'a>>, name: &str, def: &str, now: i64) -> Result<bool> {
    let db = db.into();
    let replaced = db
        .execute(
            "UPDATE api_probe SET def = ?2, updated_at = ?3 WHERE name = ?1",
            args![name, def, now],
        )
        .context("replacing an API probe")?;
    if replaced == 0 {
        db.execute(
            "INSERT INTO api_probe (name, def, registered_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
            args![name, def, now],
        )
        .context("registering an API probe")?;
    }
    Ok(replaced == 0)
}

/// Deletes a probe registered through the API with its state and results;
/// false if there is none.
pub fn delete_api_probe<'a>(db: impl Into<Db<'a>>, name: &str) -> Result<bool> {
    let db = db.into();
    let n = db
        .execute("DELETE FROM api_probe WHERE name = ?1", args![name])
        .context("deleting an API probe")?;
    if n > 0 {
        db.execute("DELETE FROM probe_mute WHERE name = ?1", args![name])
            .context("deleting a probe's mute")?;
        db.execute("DELETE FROM probe_result WHERE probe = ?1", args![name])
            .context("deleting a probe's results")?;
        db.execute("DELETE FROM probe WHERE name = ?1", args![name])
            .context("deleting a probe's state")?;
        super::checks::forget_checks_of(db, name)?;
    }
    Ok(n > 0)
}

/// Deletes the API probes a config file now defines, which replace them;
/// returns a log line for each.
pub fn drop_api_probes_in_file<'a>(db: impl Into<Db<'a>>, names: &[&str]) -> Result<Vec<String>> {
    let db = db.into();
    let mut lines = Vec::new();
    for name in names {
        let n = db
            .execute("DELETE FROM api_probe WHERE name = ?1", args![*name])
            .context("replacing an API probe by the config file's")?;
        if n > 0 {
            lines.push(format!(
                "probe {name:?} registered through the API is now defined by the config file"
            ));
        }
    }
    Ok(lines)
}

/// Records one run of a probe and its new counting state.
pub fn record_probe_result<'a>(
    db: impl Into<Db<'a>>,
    name: &str,
    outcome: &probe::Outcome,
    counts: probe::Counts,
    severity: Option<probe::Level>,
    now: i64,
) -> Result<()> {
    let db = db.into();
    db.execute(
        "INSERT INTO probe_result (probe, at, ok, latency_ms, value, detail, warning) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            name,
            now,
            outcome.ok,
            outcome.latency_ms,
            outcome.value,
            &outcome.detail,
            outcome.warning
        ],
    )
    .context("recording a probe result")?;
    // The stored row's columns are named `probe.…`: PostgreSQL finds a bare
    // name ambiguous beside `excluded`.
    db.execute(
        "INSERT INTO probe (name, state, fails_in_row, oks_in_row, state_since, last_at, last_ok, last_latency_ms, last_detail, severity)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(name) DO UPDATE SET state = excluded.state, fails_in_row = excluded.fails_in_row,
            oks_in_row = excluded.oks_in_row,
            state_since = CASE WHEN probe.state <> excluded.state THEN excluded.state_since ELSE probe.state_since END,
            last_at = excluded.last_at, last_ok = excluded.last_ok,
            last_latency_ms = excluded.last_latency_ms, last_detail = excluded.last_detail,
            severity = excluded.severity",
        args![
            name,
            counts.state.as_str(),
            counts.fails_in_row,
            counts.oks_in_row,
            now,
            outcome.ok,
            outcome.latency_ms,
            &outcome.detail,
            severity.map(probe::Level::as_str)
        ],
    )
    .context("recording a probe's state")?;
    Ok(())
}

/// A stored probe run.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResultRow {
    /// When.
    pub at: i64,
    /// Passed.
    pub ok: bool,
    /// How long it took.
    pub latency_ms: i64,
    /// The measured value, when there is one.
    pub value: Option<f64>,
    /// What it said.
    pub detail: String,
    /// Whether it crossed only the `warn` threshold (`ok` is false then).
    pub warning: bool,
}

/// The newest results of a probe, newest first.
pub fn recent_probe_results<'a>(
    db: impl Into<Db<'a>>,
    name: &str,
    limit: i64,
) -> Result<Vec<ProbeResultRow>> {
    db.into()
        .query(
            "SELECT at, ok, latency_ms, value, detail, warning FROM probe_result WHERE probe = ?1 ORDER BY id DESC LIMIT ?2",
            args![name, limit],
            |r| {
                Ok(ProbeResultRow {
                    at: r.get(0)?,
                    ok: r.get(1)?,
                    latency_ms: r.get(2)?,
                    value: r.get(3)?,
                    detail: r.get(4)?,
                    warning: r.get(5)?,
                })
            },
        )
        .context("listing probe results")
}

/// When a schedule last fired.
pub fn schedule_last_fire<'a>(db: impl Into<Db<'a>>, name: &str) -> Result<Option<i64>> {
    db.into()
        .query_row(
            "SELECT last_fire FROM schedule_run WHERE name = ?1",
            args![name],
            |r| r.get(0),
        )
        .context("reading a schedule's last run")
}

/// Records that a schedule fired for `at`; false if that time (or a later one) was already recorded.
pub fn claim_schedule_fire<'a>(db: impl Into<Db<'a>>, name: &str, at: i64) -> Result<bool> {
    let n = db
        .into()
        .execute(
            "INSERT INTO schedule_run (name, last_fire) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET last_fire = excluded.last_fire WHERE schedule_run.last_fire < excluded.last_fire",
            args![name, at],
        )
        .context("recording a schedule's run")?;
    Ok(n > 0)
}

/// An internal alert heal raised and has not resolved.
#[derive(Debug, Clone, Serialize)]
pub struct InternalRow {
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// heartbeat | runtime | agent | probe | breaker.
    pub kind: String,
    /// What it is about.
    pub subject: String,
    /// name, labels and annotations as last sent.
    pub alert: Value,
    /// When it was raised.
    pub raised_at: i64,
    /// When it was last sent.
    pub sent_at: i64,
}

fn internal_row(r: &Row) -> std::result::Result<InternalRow, DbError> {
    Ok(InternalRow {
        fingerprint: r.get(0)?,
        kind: r.get(1)?,
        subject: r.get(2)?,
        alert: serde_json::from_str(&r.get::<String>(3)?).unwrap_or(Value::Null),
        raised_at: r.get(4)?,
        sent_at: r.get(5)?,
    })
}

/// Raised internal alerts of one kind.
pub fn internal_alerts<'a>(db: impl Into<Db<'a>>, kind: &str) -> Result<Vec<InternalRow>> {
    db.into()
        .query(
            "SELECT fingerprint, kind, subject, alert, raised_at, sent_at FROM internal_alert WHERE kind = ?1",
            args![kind],
            internal_row,
        )
        .context("listing internal alerts")
}

/// What is known of a raised internal alert without its stored body: enough
/// to tell whether it still matches what should be raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// heartbeat | runtime | agent | probe | breaker.
    pub kind: String,
    /// What it is about.
    pub subject: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// When it was last sent.
    pub sent_at: i64,
}

/// Raised internal alerts of one kind, without their bodies (cheap for a sweep).
pub fn held_alerts<'a>(db: impl Into<Db<'a>>, kind: &str) -> Result<Vec<Held>> {
    db.into()
        .query(
            "SELECT kind, subject, fingerprint, sent_at FROM internal_alert WHERE kind = ?1",
            args![kind],
            |r| {
                Ok(Held {
                    kind: r.get(0)?,
                    subject: r.get(1)?,
                    fingerprint: r.get(2)?,
                    sent_at: r.get(3)?,
                })
            },
        )
        .context("listing internal alerts")
}

/// Records an internal alert as raised (or re-sent) now.
pub fn put_internal_alert<'a>(db: impl Into<Db<'a>>, row: &InternalRow) -> Result<()> {
    let alert = row.alert.to_string();
    db.into()
        .execute(
            "INSERT INTO internal_alert (fingerprint, kind, subject, alert, raised_at, sent_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(fingerprint) DO UPDATE SET alert = excluded.alert, sent_at = excluded.sent_at",
            args![
                &row.fingerprint,
                &row.kind,
                &row.subject,
                &alert,
                row.raised_at,
                row.sent_at
            ],
        )
        .context("recording an internal alert")?;
    Ok(())
}

/// Forgets a resolved internal alert.
pub fn delete_internal_alert<'a>(db: impl Into<Db<'a>>, fingerprint: &str) -> Result<()> {
    db.into()
        .execute(
            "DELETE FROM internal_alert WHERE fingerprint = ?1",
            args![fingerprint],
        )
        .context("forgetting an internal alert")?;
    Ok(())
}

/// What retention deletes.
#[derive(Debug, Clone, Copy)]
pub enum Purge {
    /// Heartbeat pings.
    Pings,
    /// Probe results.
    ProbeResults,
    /// Finished events with their timeline, decisions, ops and output.
    Events,
    /// Decisions (a discarded alert's have no event).
    Decisions,
    /// Notifications with nothing left to deliver, and their deliveries.
    Notifications,
}

/// Deletes up to `batch` items older than `cutoff`; returns how many went.
/// A batch that spans several tables first notes its ids in a temporary
/// table of the session (unnamed schema: SQLite's `temp` and PostgreSQL's
/// `pg_temp` come first), so every table loses the same items.
pub fn purge<'a>(db: impl Into<Db<'a>>, what: Purge, cutoff: i64, batch: i64) -> Result<usize> {
    let db = db.into();
    let n = match what {
        Purge::Pings => db.execute(
            "DELETE FROM ping WHERE id IN (SELECT id FROM ping WHERE at < ?1 ORDER BY id LIMIT ?2)",
            args![cutoff, batch],
        ),
        Purge::ProbeResults => db.execute(
            "DELETE FROM probe_result WHERE id IN (SELECT id FROM probe_result WHERE at < ?1 LIMIT ?2)",
            args![cutoff, batch],
        ),
        Purge::Decisions => db.execute(
            "DELETE FROM decision WHERE id IN (SELECT id FROM decision WHERE at < ?1 AND (event_id IS NULL OR event_id IN (SELECT id FROM event WHERE ended_at IS NOT NULL)) LIMIT ?2)",
            args![cutoff, batch],
        ),
        Purge::Notifications => db
            .execute(
                "CREATE TEMP TABLE IF NOT EXISTS purge_notice (id INTEGER PRIMARY KEY)",
                args![],
            )
            .and_then(|_| db.execute("DELETE FROM purge_notice", args![]))
            .and_then(|_| {
                db.execute(
                    "INSERT INTO purge_notice (id) SELECT id FROM notification n
                     WHERE routed_at IS NOT NULL AND at < ?1
                       AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.notification_id = n.id AND d.state = 'pending')
                     ORDER BY id LIMIT ?2",
                    args![cutoff, batch],
                )
            })
            .and_then(|n| {
                db.execute("DELETE FROM delivery WHERE notification_id IN (SELECT id FROM purge_notice)", args![])?;
                db.execute("DELETE FROM notification WHERE id IN (SELECT id FROM purge_notice)", args![])?;
                Ok(n)
            }),
        Purge::Events => {
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS purge_event (id INTEGER PRIMARY KEY)",
                args![],
            )
            .and_then(|_| db.execute("DELETE FROM purge_event", args![]))
            .and_then(|_| {
                db.execute(
                    "INSERT INTO purge_event (id) SELECT id FROM event WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT ?2",
                    args![cutoff, batch],
                )
            })
            .and_then(|n| {
                for sql in [
                    "DELETE FROM op_log WHERE op_id IN (SELECT o.id FROM op o JOIN purge_event p ON p.id = o.event_id)",
                    "DELETE FROM op_step WHERE op_id IN (SELECT o.id FROM op o JOIN purge_event p ON p.id = o.event_id)",
                    "DELETE FROM op WHERE event_id IN (SELECT id FROM purge_event)",
                    "DELETE FROM timeline WHERE event_id IN (SELECT id FROM purge_event)",
                    "DELETE FROM decision WHERE event_id IN (SELECT id FROM purge_event)",
                    "DELETE FROM event_alert WHERE event_id IN (SELECT id FROM purge_event)",
                    "DELETE FROM event WHERE id IN (SELECT id FROM purge_event)",
                ] {
                    db.execute(sql, args![])?;
                }
                Ok(n)
            })
        }
    }
    .context("deleting old rows")?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::db;
    use rusqlite::Connection;

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn api_probes_are_replaced_deleted_with_their_results_and_give_way_to_the_file() {
        let conn = db();
        assert!(put_api_probe(&conn, "a", r#"{"v":1}"#, 10).unwrap());
        assert!(!put_api_probe(&conn, "a", r#"{"v":2}"#, 20).unwrap());
        assert!(put_api_probe(&conn, "b", "{}", 30).unwrap());
        let a = api_probe(&conn, "a").unwrap().unwrap();
        assert_eq!(
            (a.def.as_str(), a.registered_at, a.updated_at),
            (r#"{"v":2}"#, 10, 20)
        );
        let outcome = probe::Outcome {
            ok: false,
            warning: false,
            latency_ms: 1,
            value: None,
            detail: "refused".into(),
        };
        record_probe_result(&conn, "a", &outcome, probe::Counts::default(), None, 40).unwrap();
        assert!(delete_api_probe(&conn, "a").unwrap());
        assert!(!delete_api_probe(&conn, "a").unwrap());
        assert_eq!(
            (count(&conn, "probe"), count(&conn, "probe_result")),
            (0, 0)
        );
        let lines = drop_api_probes_in_file(&conn, &["b", "c"]).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(api_probes(&conn).unwrap().is_empty());
    }

    #[test]
    fn mutes_end_at_their_time_unless_changed_meanwhile() {
        let conn = db();
        sync_heartbeats(&conn, &[("a".into(), "{}".into())], 0).unwrap();
        let mute = |until| Mute {
            reason: "deploy".into(),
            until,
        };
        mute_heartbeat(&conn, "a", Some(&mute(Some(100))), 10).unwrap();
        mute_probe(&conn, "p", Some(&mute(Some(200))), 10).unwrap();
        mute_probe(&conn, "q", Some(&mute(None)), 10).unwrap();
        assert!(ended_mutes(&conn, 99).unwrap().is_empty());
        assert_eq!(
            ended_mutes(&conn, 200).unwrap(),
            [
                (Muted::Heartbeat, "a".to_string(), 100),
                (Muted::Probe, "p".to_string(), 200)
            ]
        );
        // Muted again, for longer, before the sweep got to it: it stays.
        mute_heartbeat(&conn, "a", Some(&mute(Some(300))), 150).unwrap();
        assert!(!end_mute(&conn, Muted::Heartbeat, "a", 200).unwrap());
        assert!(end_mute(&conn, Muted::Probe, "p", 200).unwrap());
        assert!(end_mute(&conn, Muted::Heartbeat, "a", 300).unwrap());
        let row = heartbeat(&conn, "a").unwrap().unwrap();
        assert_eq!(
            (row.paused, row.muted_until, row.resumed_at),
            (false, None, Some(300))
        );
        assert!(probe_mute(&conn, "p").unwrap().is_none());
        assert_eq!(probe_mute(&conn, "q").unwrap().unwrap().until, None);
        assert!(
            ended_mutes(&conn, i64::MAX).unwrap().is_empty(),
            "q has no end"
        );
        // q leaves the file: its mute goes; an API probe's stays.
        put_api_probe(&conn, "r", "{}", 10).unwrap();
        mute_probe(&conn, "r", Some(&mute(None)), 10).unwrap();
        assert!(forget_probe_mutes(&conn, &["q"]).unwrap().is_empty());
        assert_eq!(forget_probe_mutes(&conn, &[]).unwrap().len(), 1);
        assert!(probe_mute(&conn, "q").unwrap().is_none());
        assert!(probe_mute(&conn, "r").unwrap().is_some());
    }

    #[test]
    fn config_heartbeats_sync_and_pings_move_the_row() {
        let conn = db();
        let defs = vec![
            ("a".to_string(), "{}".to_string()),
            ("b".to_string(), "{}".to_string()),
        ];
        sync_heartbeats(&conn, &defs, 10).unwrap();
        assert!(
            put_heartbeat(&conn, "a", "{}", 20).is_err(),
            "config heartbeats are not the API's"
        );
        assert!(put_heartbeat(&conn, "c", "{}", 20).unwrap());
        let ping = NewPing {
            heartbeat: "a",
            kind: PingKind::Fail,
            exit_code: Some(3),
            body: b"log",
            remote: "127.0.0.1",
        };
        record_ping(&conn, &ping, 30).unwrap();
        let row = heartbeat(&conn, "a").unwrap().unwrap();
        assert_eq!(
            (
                row.last_end_at,
                row.last_end_ok,
                row.last_end_code,
                row.pings
            ),
            (Some(30), Some(false), Some(3), 1)
        );
        let missing = NewPing {
            heartbeat: "zz",
            ..ping
        };
        assert_eq!(
            record_ping(&conn, &missing, 31).unwrap_err().http_status(),
            404
        );
        // "b" left the file: removed; the API's "c" stays.
        sync_heartbeats(&conn, &defs[..1], 40).unwrap();
        let names: Vec<String> = heartbeats(&conn)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn retention_deletes_old_rows_in_batches_and_keeps_the_rest() {
        let conn = db();
        sync_heartbeats(&conn, &[("a".into(), "{}".into())], 0).unwrap();
        for at in 0..25 {
            let ping = NewPing {
                heartbeat: "a",
                kind: PingKind::Success,
                exit_code: None,
                body: b"",
                remote: "",
            };
            record_ping(&conn, &ping, at * 10).unwrap();
        }
        // Old finished event with an op, timeline and decision; and an open one.
        conn.execute_batch(
            "INSERT INTO event (id, rule, runbook, key, fingerprint, state, mode, created_at, updated_at, ended_at)
               VALUES (1, 'r', 'b', 'k', 'f', 'succeeded', 'live', 1, 1, 5),
                      (2, 'r', 'b', 'k2', 'f', 'running', 'live', 1, 1, NULL);
             INSERT INTO op (id, event_id, agent, state, spec, created_at) VALUES (1, 1, 'x', 'succeeded', '{}', 1);
             INSERT INTO op_step (op_id, idx, name, timed_out, duration_ms, output, output_bytes, truncated) VALUES (1, 0, 's', 0, 1, x'', 0, 0);
             INSERT INTO timeline (event_id, at, kind, message) VALUES (1, 1, 'k', 'm'), (2, 1, 'k', 'm');
             INSERT INTO decision (at, fingerprint, rule, outcome, reason, event_id) VALUES (1, 'f', 'r', 'run', 'x', 1), (1, 'f', 'r', 'run', 'x', 2), (1, 'g', NULL, 'discard', 'x', NULL);",
        )
        .unwrap();
        let mut rounds = 0;
        while purge(&conn, Purge::Pings, 100, 4).unwrap() > 0 {
            rounds += 1;
        }
        assert_eq!(
            (rounds, count(&conn, "ping")),
            (3, 15),
            "10 pings before t=100, 4 at a time"
        );
        assert_eq!(
            purge(&conn, Purge::Decisions, 100, 100).unwrap(),
            2,
            "not the open event's"
        );
        assert_eq!(purge(&conn, Purge::Events, 100, 100).unwrap(), 1);
        assert_eq!(
            (
                count(&conn, "event"),
                count(&conn, "op"),
                count(&conn, "op_step"),
                count(&conn, "timeline")
            ),
            (1, 0, 0, 1)
        );
        assert_eq!(purge(&conn, Purge::Events, 100, 100).unwrap(), 0);
    }
}
