//! The dashboard: server-rendered HTML for people, at `/`. What heal just
//! did and why — firing alerts, events with their decisions, ops and output,
//! agents, heartbeats, probes, pauses, the breaker, the audit log — and, for
//! admin tokens, the actions: approve, reject, cancel, pause, resume, reset
//! the breaker, run a runbook by hand, register, edit, delete, mute and
//! unmute heartbeats and probes. Also the API reference (`/docs`).
//!
//! Every route is a row of `table::ROWS`, with the scope it needs. Pages
//! read through the store's read functions and the API's own JSON; actions
//! go through the very code of their API routes (`api::actions::act`), which
//! audits them. Forms are checked for their origin and CSRF token
//! (`session`). Everything shown is escaped by `html::escape`. No page loads
//! anything from elsewhere: the style sheet and the small script that
//! refreshes pages are compiled in, and the Content-Security-Policy allows
//! only this origin.
//!
//! The dashboard answers only the paths of its table; everything else goes
//! on to the API (`serves`).

mod actions;
mod docs;
mod events;
mod html;
mod layout;
mod manage;
mod overview;
mod pages;
mod session;
pub mod table;

use std::sync::Arc;

use crate::store::sql::Db;
use tiny_http::{Header, Request, Response};

use super::api;
use super::api::header;
use super::State;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::time::now_ms;

pub use session::Shared;

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("live.js");
const ICON: &str = include_str!("favicon.svg");

/// Whether a path is the dashboard's (a row of its table, any method).
pub fn serves(path: &str) -> bool {
    table::find(path).is_some()
}

/// What a page or action answers.
pub struct Reply {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
    location: Option<String>,
    cookie: Option<String>,
    cache: &'static str,
}

impl Reply {
    /// A page.
    fn html(status: u16, body: String) -> Reply {
        Reply {
            status,
            body: body.into_bytes(),
            content_type: "text/html; charset=utf-8",
            location: None,
            cookie: None,
            cache: "no-store",
        }
    }

    /// A redirect after a form (303: the browser GETs `location`).
    fn redirect(location: &str) -> Reply {
        Reply {
            location: Some(location.to_string()),
            ..Reply::html(303, String::new())
        }
    }

    /// A compiled-in file, cached for a day (its URL changes with its content).
    fn asset(content_type: &'static str, text: &'static str) -> Reply {
        Reply {
            status: 200,
            body: text.as_bytes().to_vec(),
            content_type,
            location: None,
            cookie: None,
            cache: "public, max-age=86400",
        }
    }

    fn with_cookie(mut self, cookie: String) -> Reply {
        self.cookie = Some(cookie);
        self
    }
}

/// What a page or action works with.
pub struct Ctx<'a> {
    state: &'a Arc<State>,
    config: Arc<Config>,
    conn: Db<'a>,
    viewer: Option<session::Viewer>,
    query: &'a str,
    /// The `{…}` segments of the path, decoded.
    params: Vec<String>,
    /// A POST's form fields, decoded.
    form: Vec<(String, String)>,
    remote: Option<String>,
    now: i64,
}

impl Ctx<'_> {
    /// A query parameter, decoded; `None` when absent or empty.
    fn query(&self, name: &str) -> Option<String> {
        api::query_param(self.query, name)
            .map(api::decode)
            .filter(|v| !v.trim().is_empty())
    }

    /// A form field, trimmed ("" when absent).
    fn field(&self, name: &str) -> &str {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or_default()
    }

    /// A `{…}` segment of the path that must be an id.
    fn id(&self) -> Result<i64> {
        let raw = self.params.first().map(String::as_str).unwrap_or_default();
        raw.parse()
            .map_err(|_| Error::request(404, format!("{raw:?} is not an id")))
    }

    /// The name in a `{name}` path segment.
    fn name(&self) -> &str {
        self.params.first().map(String::as_str).unwrap_or_default()
    }

    /// Who is looking (every route with a scope has one).
    fn viewer(&self) -> &session::Viewer {
        self.viewer
            .as_ref()
            .expect("routes with a scope are served only to a viewer")
    }

    /// Whether the viewer may act.
    fn admin(&self) -> bool {
        self.viewer
            .as_ref()
            .is_some_and(|v| v.admin && v.csrf.is_some())
    }
}

type Handler = fn(&Ctx) -> Result<Reply>;

/// The code of a table row.
fn handler(method: &str, path: &str) -> Option<Handler> {
    Some(match (method, path) {
        ("GET", "/") => overview::page,
        ("GET", "/events") => events::list,
        ("GET", "/events/{id}") => events::detail,
        ("POST", "/events/{id}/approve") => actions::approve,
        ("POST", "/events/{id}/reject") => actions::reject,
        ("POST", "/events/{id}/cancel") => actions::cancel,
        ("GET", "/agents") => pages::agents,
        ("GET", "/heartbeats") => pages::heartbeats,
        ("POST", "/heartbeats") => manage::save_heartbeat,
        ("GET", "/heartbeats/{name}") => pages::heartbeat,
        ("POST", "/heartbeats/{name}/delete") => manage::delete_heartbeat,
        ("POST", "/heartbeats/{name}/mute") => manage::mute_heartbeat,
        ("POST", "/heartbeats/{name}/unmute") => manage::unmute_heartbeat,
        ("GET", "/probes") => pages::probes,
        ("POST", "/probes") => manage::save_probe,
        ("GET", "/probes/{name}") => pages::probe,
        ("POST", "/probes/{name}/delete") => manage::delete_probe,
        ("POST", "/probes/{name}/mute") => manage::mute_probe,
        ("POST", "/probes/{name}/unmute") => manage::unmute_probe,
        ("GET", "/pauses") => pages::pauses,
        ("POST", "/pauses") => actions::pause,
        ("POST", "/pauses/{id}/resume") => actions::resume,
        ("POST", "/breaker/reset") => actions::reset_breaker,
        ("GET", "/runbooks") => pages::runbooks,
        ("POST", "/runbooks/{name}/run") => actions::run,
        ("GET", "/audit") => pages::audit,
        ("GET", "/docs") => docs::page,
        ("GET", "/login") => layout::login_page,
        ("POST", "/login") => actions::login,
        ("POST", "/logout") => actions::logout,
        ("GET", "/static/style.css") => |_| Ok(Reply::asset("text/css; charset=utf-8", STYLE)),
        ("GET", "/static/live.js") => {
            |_| Ok(Reply::asset("text/javascript; charset=utf-8", SCRIPT))
        }
        ("GET", "/static/favicon.svg") => |_| Ok(Reply::asset("image/svg+xml", ICON)),
        _ => return None,
    })
}

/// Answers one request to a dashboard path; returns the status it was answered with.
pub fn handle(
    mut request: Request,
    state: &Arc<State>,
    reader: &mut Option<crate::store::Conn>,
) -> u16 {
    let uri = request.url().to_string();
    let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
    let method = request.method().as_str().to_string();
    let reply = serve(&mut request, state, reader, &uri, path, query).unwrap_or_else(|e| {
        let status = e.http_status();
        if status >= 500 {
            log::error!("{method} {path}: {e}");
        } else {
            log::debug!("{method} {path}: {status} {e}");
        }
        layout::error_page(status, &e.to_string())
    });
    let status = reply.status;
    respond(request, reply, state.front.is_tls(), &method, path);
    status
}

fn serve(
    request: &mut Request,
    state: &Arc<State>,
    reader: &mut Option<crate::store::Conn>,
    uri: &str,
    path: &str,
    query: &str,
) -> Result<Reply> {
    let method = request.method().as_str().to_string();
    let Some((row, params)) = table::route(&method, path) else {
        return Err(Error::request(
            405,
            format!("{path} does not take {method}"),
        ));
    };
    let code = handler(row.method, row.path).expect("every row has a handler (tested)");
    if row.path.starts_with("/static/") {
        return code(&Ctx::empty(state, reader)?);
    }
    let config = state.config();
    let conn = api::reader(state, reader)?;
    let now = now_ms();
    let viewer = session::viewer(request, state, &config, conn, now)?;
    if let Some(scope) = row.scope {
        let Some(v) = &viewer else {
            if method == "GET" {
                return Ok(session::to_login(uri));
            }
            return Err(Error::request(401, "log in first: your session has ended"));
        };
        if scope == "admin" && !v.admin {
            return Err(Error::request(
                403,
                format!(
                    "token {:?} may only read: this needs an admin token",
                    v.name
                ),
            ));
        }
    }
    let mut form = Vec::new();
    if method == "POST" {
        session::same_origin(request, &config, state.front.is_tls())?;
        form = read_form(request, config.server.max_body)?;
        if row.path != "/login" {
            let v = viewer.as_ref().expect("every POST but /login has a scope");
            session::check_csrf(v, &form)?;
        }
    }
    let ctx = Ctx {
        state,
        config,
        conn,
        viewer,
        query,
        params: params.into_iter().map(api::decode).collect(),
        form,
        remote: api::remote(state, request),
        now,
    };
    code(&ctx)
}

impl<'a> Ctx<'a> {
    /// A context for the compiled-in files, which read nothing.
    fn empty(state: &'a Arc<State>, reader: &'a mut Option<crate::store::Conn>) -> Result<Ctx<'a>> {
        Ok(Ctx {
            state,
            config: state.config(),
            conn: api::reader(state, reader)?,
            viewer: None,
            query: "",
            params: Vec::new(),
            form: Vec::new(),
            remote: None,
            now: now_ms(),
        })
    }
}

/// A form's fields (`application/x-www-form-urlencoded`), size-limited.
fn read_form(request: &mut Request, max: usize) -> Result<Vec<(String, String)>> {
    let ct = header(request, "Content-Type").unwrap_or_default();
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(Error::request(
            415,
            format!("content type {ct:?}: the dashboard takes its own forms only"),
        ));
    }
    let body = api::read_body(request, max)?;
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (api::decode(k), api::decode(v))
        })
        .collect())
}

/// The Content-Security-Policy of every answer: this origin only, no inline
/// script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn respond(request: Request, reply: Reply, tls: bool, method: &str, path: &str) {
    let mut headers = vec![
        ("Content-Type", reply.content_type.to_string()),
        ("Content-Security-Policy", CSP.to_string()),
        ("X-Content-Type-Options", "nosniff".to_string()),
        ("X-Frame-Options", "DENY".to_string()),
        ("Referrer-Policy", "same-origin".to_string()),
        ("Cache-Control", reply.cache.to_string()),
    ];
    if let Some(l) = reply.location {
        headers.push(("Location", l));
    }
    if let Some(c) = reply.cookie {
        headers.push(("Set-Cookie", c));
    }
    if tls {
        headers.push(("Strict-Transport-Security", "max-age=31536000".to_string()));
    }
    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    for (k, v) in headers {
        if let Ok(h) = Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            response.add_header(h);
        }
    }
    if let Err(e) = request.respond(response) {
        log::debug!("{method} {path}: client went away before the answer ({e})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_its_code_and_every_path_finds_its_row() {
        for row in table::ROWS {
            assert!(
                handler(row.method, row.path).is_some(),
                "{} {}",
                row.method,
                row.path
            );
            assert!(
                matches!(row.scope, None | Some("read") | Some("admin")),
                "{}",
                row.path
            );
            let sample = row.path.replace("{id}", "7").replace("{name}", "a%20b");
            let (found, params) = table::route(row.method, &sample).expect("routes");
            assert_eq!(found.path, row.path);
            assert_eq!(params.len(), row.path.matches('{').count());
        }
        assert!(serves("/"));
        assert!(serves("/events/"));
        assert!(!serves("/api/v1/events"));
        assert!(!serves("/metrics"));
        assert!(!serves("/events/7/nope"));
        assert!(table::route("PUT", "/events").is_none());
    }

    #[test]
    fn actions_need_admin_and_pages_read() {
        for row in table::ROWS {
            let want = match (row.method, row.path) {
                (_, "/login") => None,
                (_, p) if p.starts_with("/static/") => None,
                ("GET", "/audit") | ("POST", _) if row.path != "/logout" => Some("admin"),
                _ => Some("read"),
            };
            assert_eq!(row.scope, want, "{} {}", row.method, row.path);
        }
    }
}
