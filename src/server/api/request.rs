//! Reading a request: headers, the size-limited body, JSON, and the
//! query's parameters and flags.

use std::io::Read;

use crate::store::sql::Db;
use serde_json::{json, Value};
use tiny_http::Request;

use crate::error::{Error, Result};
use crate::store::{self};
use crate::time::now_ms;

use super::{guard, schemas};
use crate::server::State;

/// A request header's value.
pub(crate) fn header<'r>(request: &'r Request, name: &'static str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

pub(crate) fn read_body(request: &mut Request, max: usize) -> Result<Vec<u8>> {
    if let Some(len) = request.body_length() {
        if len > max {
            return Err(Error::request(413, format!("body of {len} bytes is larger than the limit of {max} bytes ([server] max_body)")));
        }
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::request(400, format!("cannot read request body: {e}")))?;
    if body.len() > max {
        return Err(Error::request(
            413,
            format!("body is larger than the limit of {max} bytes ([server] max_body)"),
        ));
    }
    Ok(body)
}

pub(super) fn read_json(request: &mut Request, max: usize) -> Result<Value> {
    guard::require_json(request)?;
    let body = read_body(request, max)?;
    serde_json::from_slice(&body).map_err(|e| Error::request(400, format!("malformed JSON: {e}")))
}

/// `?force=true` of `POST /api/v1/config` (no body, so a client needs none).
pub(super) fn force(query: &str) -> Result<bool> {
    match query_param(query, "force") {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(Error::request(
            400,
            format!("force: must be true or false (got {:?})", decode(other)),
        )),
    }
}

pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The request's read connection, borrowed from `State::readers` on first
/// use; the HTTP worker gives it back when the request ends.
pub(crate) fn reader<'a>(
    state: &State,
    conn: &'a mut Option<crate::store::Conn>,
) -> Result<Db<'a>> {
    if conn.is_none() {
        *conn = Some(state.readers.take()?);
    }
    Ok(conn.as_ref().expect("opened just above").db())
}

/// A JSON body that may be absent (empty) or `{}`.
pub(super) fn read_optional_json(request: &mut Request, max: usize) -> Result<Value> {
    guard::require_json(request)?;
    let body = read_body(request, max)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::request(400, format!("malformed JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::request(422, "the body must be a JSON object"));
    }
    Ok(v)
}

/// A note from a person, cut to 1000 characters for the timeline and logs.
pub(super) fn short(note: &str) -> String {
    note.chars().take(1000).collect()
}

/// The optional `"reason"` of a body: a string, cut by `short`, or empty.
pub(super) fn reason(body: &Value) -> Result<String> {
    match body.get("reason") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(short(s)),
        Some(_) => Err(Error::request(
            422,
            "reason: must be a string (send {\"reason\": \"why\"})",
        )),
    }
}

/// Decodes a query value: `+` and `%XX` escapes.
pub(crate) fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A pause from its JSON: `{runbook?, target?, match?, all?, for | until, reason}`.
pub(super) fn new_pause(body: &Value, who: &str) -> Result<store::NewPause> {
    let bad = |m: String| Error::request(422, format!("pause: {m}"));
    let text = |k: &str| -> Result<Option<String>> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 1024 => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(bad(format!(
                "{k:?} must be a non-empty string of at most 1024 bytes"
            ))),
        }
    };
    // A field of another type is refused, never taken as left out.
    let typed = |k: &str, is: fn(&Value) -> bool, what: &str| -> Result<Option<&Value>> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) if is(v) => Ok(Some(v)),
            Some(_) => Err(bad(format!("{k:?} must be {what}"))),
        }
    };
    let (runbook, target, matches) = (text("runbook")?, text("target")?, text("match")?);
    let all = typed("all", Value::is_boolean, "true or false")? == Some(&Value::Bool(true));
    if runbook.is_none() && target.is_none() && matches.is_none() && !all {
        return Err(bad("say what it covers: \"runbook\", \"target\", \"match\", or \"all\": true for all automation".into()));
    }
    if let Some(m) = &matches {
        crate::config::Expr::compile(m).map_err(|e| bad(format!("match: {e}")))?;
    }
    let reason = text("reason")?
        .ok_or_else(|| bad("give a \"reason\" (shown on every decision it pauses)".into()))?;
    let duration = typed("for", Value::is_string, "a duration like \"30m\"")?;
    let end = typed("until", Value::is_i64, "ms since the epoch, a whole number")?;
    let now = now_ms();
    let until = match (duration.and_then(Value::as_str), end.and_then(Value::as_i64)) {
        (Some(d), None) => {
            let d = crate::time::parse_duration(d).map_err(|e| bad(format!("for: {e}")))?;
            // Past i64, the duration is refused below like any beyond 90 days.
            now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
        (None, Some(t)) => t,
        _ => return Err(bad("give exactly one of \"for\" (a duration like \"30m\") or \"until\" (ms since the epoch)".into())),
    };
    if until <= now || until > now + 90 * 86_400_000 {
        return Err(bad(
            "the pause must end in the future, within 90 days".into()
        ));
    }
    Ok(store::NewPause {
        runbook,
        target,
        matches,
        reason,
        by: who.to_string(),
        until,
    })
}

/// The longest a mute with an end may last; without `for` or `until` a mute
/// lasts until unmuted.
pub const MUTE_MAX_MS: i64 = 366 * 86_400_000;

/// A mute from its JSON: `{reason?, for?, until?}`, where `for` is a
/// duration ("2h", "30m") and `until` an RFC 3339 time; neither means until
/// unmuted. The reason names who muted it.
pub(crate) fn new_mute(body: &Value, who: &str, now: i64) -> Result<store::Mute> {
    let bad = |field: &str, m: String| Error::request(400, format!("{field}: {m}"));
    let text = |field: &str| match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(v) => Err(bad(field, format!("must be a string (got {v})"))),
    };
    let until = match (text("for")?, text("until")?) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(bad(
                "for",
                "give either \"for\" (a duration like \"2h\") or \"until\" (an RFC 3339 time), not both".into(),
            ))
        }
        (Some(text), None) => {
            let d = crate::time::parse_duration(text).map_err(|e| bad("for", e))?;
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if ms <= 0 || ms > MUTE_MAX_MS {
                return Err(bad(
                    "for",
                    format!("{text:?} is not from 1s to 366 days (leave for out to mute until unmuted)"),
                ));
            }
            Some(now + ms)
        }
        (None, Some(t)) => {
            let at = crate::time::parse_rfc3339(t)
                .map_err(|e| bad("until", e))?
                .ok_or_else(|| bad("until", format!("{t:?} is the zero time")))?;
            if at <= now {
                return Err(bad("until", format!("{t} is in the past")));
            }
            if at - now > MUTE_MAX_MS {
                return Err(bad("until", format!("{t} is more than 366 days away (leave until out to mute until unmuted)")));
            }
            Some(at)
        }
    };
    let why = reason(body)?;
    let reason = if why.is_empty() {
        format!("muted by {who}")
    } else {
        format!("{why} (muted by {who})")
    };
    Ok(store::Mute { reason, until })
}

/// A true-or-false query parameter (`true`, `1`, `false`, `0`; absent is false).
pub(super) fn flag(query: &str, name: &str) -> Result<bool> {
    match query_param(query, name) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(v) => Err(Error::request(
            400,
            format!("{name}: {v:?} is not true or false"),
        )),
    }
}

pub(super) fn limit(query: &str) -> Result<i64> {
    match query_param(query, "limit") {
        None => Ok(100),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=schemas::LIMIT_MAX).contains(n))
            .ok_or_else(|| {
                let max = schemas::LIMIT_MAX;
                Error::request(400, format!("limit: {v:?} is not a number from 1 to {max}"))
            }),
    }
}

pub(super) fn parse_since(v: &str) -> Result<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    let d = crate::time::parse_duration(v).map_err(|e| {
        Error::request(400, format!("since: {e} (or milliseconds since the epoch)"))
    })?;
    // A duration longer than the clock has run reaches back to its start.
    let back = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Ok(now_ms().saturating_sub(back))
}
