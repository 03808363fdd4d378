//! Every route of the dashboard in one table: method, path template, the
//! scope its viewer needs, and what it is. The router and the scope check
//! read it, and the integration tests compile this very file and walk every
//! row with every scope, so a page cannot exist without its scope.
//!
//! Plain data with no imports, for that reason. Pages need `read`, actions
//! `admin` (as their API routes do); the audit log needs `admin`, as
//! `GET /api/v1/audit` does. `None`: open (login, the style sheet, the
//! script, the icon).

/// One route of the dashboard.
pub struct Row {
    /// GET or POST.
    pub method: &'static str,
    /// The path, with `{name}` for what varies.
    pub path: &'static str,
    /// "read" or "admin"; `None`: no login needed.
    pub scope: Option<&'static str>,
    /// What it is (for people: the tests name the route they check by it).
    #[allow(dead_code)]
    pub summary: &'static str,
}

const fn row(
    method: &'static str,
    path: &'static str,
    scope: Option<&'static str>,
    summary: &'static str,
) -> Row {
    Row {
        method,
        path,
        scope,
        summary,
    }
}

const READ: Option<&str> = Some("read");
const ADMIN: Option<&str> = Some("admin");

/// Every route of the dashboard.
pub const ROWS: &[Row] = &[
    row("GET", "/", READ, "overview: what heal is doing and why"),
    row("GET", "/events", READ, "events, filtered, page by page"),
    row("GET", "/events/{id}", READ, "one event in full"),
    row("POST", "/events/{id}/approve", ADMIN, "approve an event"),
    row("POST", "/events/{id}/reject", ADMIN, "reject an event"),
    row("POST", "/events/{id}/cancel", ADMIN, "cancel an open event"),
    row("GET", "/agents", READ, "agents and what they run"),
    row("GET", "/heartbeats", READ, "heartbeats"),
    row("POST", "/heartbeats", ADMIN, "register or edit a heartbeat"),
    row(
        "GET",
        "/heartbeats/{name}",
        READ,
        "one heartbeat and its pings",
    ),
    row(
        "POST",
        "/heartbeats/{name}/delete",
        ADMIN,
        "delete a heartbeat",
    ),
    row("POST", "/heartbeats/{name}/mute", ADMIN, "mute a heartbeat"),
    row(
        "POST",
        "/heartbeats/{name}/unmute",
        ADMIN,
        "unmute a heartbeat",
    ),
    row("GET", "/probes", READ, "probes"),
    row("POST", "/probes", ADMIN, "register or replace a probe"),
    row("GET", "/probes/{name}", READ, "one probe and its results"),
    row("POST", "/probes/{name}/delete", ADMIN, "delete a probe"),
    row("POST", "/probes/{name}/mute", ADMIN, "mute a probe"),
    row("POST", "/probes/{name}/unmute", ADMIN, "unmute a probe"),
    row("GET", "/pauses", READ, "pauses"),
    row("POST", "/pauses", ADMIN, "pause automation"),
    row("POST", "/pauses/{id}/resume", ADMIN, "end a pause"),
    row("POST", "/breaker/reset", ADMIN, "close the safety breaker"),
    row("GET", "/runbooks", READ, "runbooks"),
    row(
        "POST",
        "/runbooks/{name}/run",
        ADMIN,
        "run a runbook by hand",
    ),
    row("GET", "/audit", ADMIN, "the audit log"),
    row("GET", "/docs", READ, "the API reference"),
    row("GET", "/login", None, "the login form"),
    row("POST", "/login", None, "log in with a token"),
    row("POST", "/logout", READ, "log out"),
    row("GET", "/static/style.css", None, "the style sheet"),
    row(
        "GET",
        "/static/live.js",
        None,
        "the script that refreshes pages",
    ),
    row("GET", "/static/favicon.svg", None, "the icon"),
];

/// The row whose template matches `path`, and what its `{…}` segments hold;
/// the method is not looked at. Segments come back still percent-encoded.
pub fn find(path: &str) -> Option<(&'static Row, Vec<&str>)> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    ROWS.iter().find_map(|row| {
        let mut params = Vec::new();
        let mut want = row.path.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return Some((row, params)),
                (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => params.push(g),
                (Some(w), Some(g)) if w == g => {}
                _ => return None,
            }
        }
    })
}

/// The row for a method and path, if any.
pub fn route<'p>(method: &str, path: &'p str) -> Option<(&'static Row, Vec<&'p str>)> {
    let (first, params) = find(path)?;
    let row = ROWS
        .iter()
        .find(|r| r.path == first.path && r.method == method)?;
    Some((row, params))
}
