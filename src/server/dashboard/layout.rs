//! The frame around every page (head, navigation, who is logged in, the
//! notice after an action), the forms of actions, the login form and the
//! error page.

use std::sync::OnceLock;

use super::html::{url, Html};
use super::{Ctx, Reply};
use crate::error::Result;

/// The sections of the navigation: path, label, and whether it needs admin.
const SECTIONS: &[(&str, &str, bool)] = &[
    ("/", "Overview", false),
    ("/events", "Events", false),
    ("/agents", "Agents", false),
    ("/heartbeats", "Heartbeats", false),
    ("/probes", "Probes", false),
    ("/pauses", "Pauses", false),
    ("/runbooks", "Runbooks", false),
    ("/audit", "Audit", true),
    ("/docs", "API", false),
];

/// What a `?done=` after an action says (fixed words: the URL cannot put text on a page).
const NOTICES: &[(&str, &str)] = &[
    ("approved", "Approved: the event runs now."),
    ("rejected", "Rejected: nothing runs."),
    ("cancelled", "Cancelled."),
    ("paused", "Paused."),
    ("resumed", "Pause ended: automation it covered runs again."),
    ("reset", "Safety breaker reset: automation runs again."),
    ("started", "Started: the run is an event, below."),
    ("saved", "Saved."),
    ("deleted", "Deleted."),
    ("muted", "Muted: it raises no alert until the mute ends."),
    ("unmuted", "Unmuted."),
];

/// A version of the compiled-in files for their URLs, so a new heal's are fetched anew.
fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let text = format!("{}{}{}", super::STYLE, super::SCRIPT, super::ICON);
        crate::config::hex(&crate::config::token_hash(&text))[..12].to_string()
    })
}

/// A whole page: `body` in the frame, refreshed every `refresh` seconds
/// while it is open (in place by the script, or by the browser without it).
pub fn frame(
    ctx: &Ctx,
    title: &str,
    section: &str,
    refresh: Option<u32>,
    body: Html,
) -> Result<Reply> {
    let mut h = Html::new();
    head(&mut h, title, refresh);
    h.raw("<body><a class=\"skip\" href=\"#main\">Skip to content</a>");
    nav(&mut h, ctx, section);
    h.raw("<main id=\"main\"");
    if let Some(s) = refresh {
        h.attr("data-refresh", s);
    }
    h.raw(">");
    if let Some(done) = ctx.query("done") {
        if let Some((_, words)) = NOTICES.iter().find(|(k, _)| *k == done) {
            h.raw("<p class=\"notice\" role=\"status\">")
                .text(words)
                .raw("</p>");
        }
    }
    h.append(body);
    h.raw("</main><footer>heal ")
        .text(env!("CARGO_PKG_VERSION"))
        .raw(" · ");
    super::html::when(&mut h, Some(ctx.now), ctx.now);
    h.raw("</footer></body></html>");
    Ok(Reply::html(200, h.into_string()))
}

fn head(h: &mut Html, title: &str, refresh: Option<u32>) {
    let v = asset_version();
    h.raw("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<meta name=\"color-scheme\" content=\"light dark\"><title>")
        .text(title)
        .raw(" · heal</title><link rel=\"icon\" type=\"image/svg+xml\"")
        .attr("href", url("/static/favicon.svg", &[("v", v)]))
        .raw("><link rel=\"stylesheet\"")
        .attr("href", url("/static/style.css", &[("v", v)]))
        .raw("><script defer")
        .attr("src", url("/static/live.js", &[("v", v)]))
        .raw("></script>");
    if let Some(s) = refresh {
        h.raw("<noscript><meta http-equiv=\"refresh\"")
            .attr("content", s)
            .raw("></noscript>");
    }
    h.raw("</head>");
}

fn nav(h: &mut Html, ctx: &Ctx, section: &str) {
    h.raw("<header><nav aria-label=\"Sections\"><a class=\"brand\" href=\"/\">heal</a><ul>");
    let admin = ctx.viewer.as_ref().is_some_and(|v| v.admin);
    for (path, label, needs_admin) in SECTIONS {
        if *needs_admin && !admin {
            continue;
        }
        h.raw("<li><a").attr("href", path);
        if *path == section {
            h.raw(" aria-current=\"page\"");
        }
        h.raw(">").text(label).raw("</a></li>");
    }
    h.raw("</ul>");
    if let Some(v) = &ctx.viewer {
        h.raw("<div class=\"who\">").text(&v.name);
        if v.open {
            h.raw(" <span class=\"badge wait\" title=\"no [[token]] is configured: heal serves loopback only, without logins\">open</span>");
        } else if !v.admin {
            h.raw(" <span class=\"badge plain\">read only</span>");
        }
        if v.session.is_some() {
            h.raw("<form method=\"post\" action=\"/logout\">");
            csrf(h, ctx);
            h.raw("<button type=\"submit\" class=\"link\">Log out</button></form>");
        }
        h.raw("</div>");
    }
    h.raw("</nav></header>");
}

/// The hidden CSRF field every form carries.
pub fn csrf(h: &mut Html, ctx: &Ctx) {
    if let Some(token) = ctx.viewer.as_ref().and_then(|v| v.csrf.as_deref()) {
        h.raw("<input type=\"hidden\" name=\"csrf\"")
            .attr("value", token)
            .raw(">");
    }
}

/// A one-button form posting to `action`, with an optional reason field;
/// shown only to viewers who may act.
pub fn button(
    h: &mut Html,
    ctx: &Ctx,
    action: &str,
    label: &'static str,
    class: &'static str,
    reason: Option<&'static str>,
) {
    if !ctx.admin() {
        return;
    }
    h.raw("<form method=\"post\" class=\"act\"")
        .attr("action", action)
        .raw(">");
    csrf(h, ctx);
    if let Some(placeholder) = reason {
        h.raw("<input type=\"text\" name=\"reason\" maxlength=\"1000\" aria-label=\"Reason\"")
            .attr("placeholder", placeholder)
            .raw(">");
    }
    h.raw("<button type=\"submit\" class=\"")
        .raw(class)
        .raw("\">")
        .text(label)
        .raw("</button></form>");
}

/// `GET /login`: the form, or straight on when already in.
pub fn login_page(ctx: &Ctx) -> Result<Reply> {
    let next = super::session::next_page(ctx.query("next").as_deref());
    if ctx.viewer.as_ref().is_some_and(|v| v.csrf.is_some()) {
        return Ok(Reply::redirect(&next));
    }
    Ok(login_form(&next, None, 200))
}

/// The login form, with why the last try was refused.
pub fn login_form(next: &str, error: Option<&str>, status: u16) -> Reply {
    let mut h = Html::new();
    head(&mut h, "Log in", None);
    h.raw("<body class=\"login\"><main id=\"main\"><h1>heal</h1>");
    h.raw("<form method=\"post\" action=\"/login\" class=\"card\">");
    h.raw("<input type=\"hidden\" name=\"next\"")
        .attr("value", next)
        .raw(">");
    if let Some(e) = error {
        h.raw("<p class=\"error\" role=\"alert\">")
            .text(e)
            .raw("</p>");
    }
    h.raw("<label for=\"token\">Token</label>")
        .raw("<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>")
        .raw("<p class=\"hint\">A token with the read or admin scope, as made by <code>heal token new</code>. You stay logged in for 12 hours.</p>")
        .raw("<button type=\"submit\">Log in</button></form></main></body></html>");
    Reply::html(status, h.into_string())
}

/// A page that says what went wrong, with a way back.
pub fn error_page(status: u16, message: &str) -> Reply {
    let mut h = Html::new();
    let title = match status {
        401 => "Log in",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Not now",
        429 => "Too many tries",
        s if s >= 500 => "heal could not do that",
        _ => "Cannot do that",
    };
    head(&mut h, title, None);
    h.raw("<body><main id=\"main\"><h1>")
        .text(title)
        .raw("</h1><p class=\"error\" role=\"alert\">")
        .text(message)
        .raw("</p><p><a href=\"/\">Overview</a>");
    if status == 401 {
        h.raw(" · <a href=\"/login\">Log in</a>");
    }
    h.raw("</p></main></body></html>");
    Reply::html(status, h.into_string())
}
