//! Pings, heartbeats, probes and schedules on the wire.

use std::sync::Arc;

use crate::store::sql::Db;
use serde_json::{json, Value};
use tiny_http::Request;

use super::{new_mute, read_body, reader, Answer};
use crate::config::{self, Config, RawHeartbeat};
use crate::error::{Error, Result};
use crate::heartbeat;
use crate::server::intake::{self, Applied};
use crate::server::watch::{self, Defined};
use crate::server::{metrics, State};
use crate::store::{self, Muted, NewPing, PingKind};
use crate::time::{format_duration, format_rfc3339, now_ms};

/// Bytes of a ping's body kept as its log (the tail).
pub const PING_BODY_MAX: usize = 10_000;

/// What `/ping/<name>[/...]` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingPath {
    /// `/ping/<name>`.
    Success,
    /// `/ping/<name>/start`.
    Start,
    /// `/ping/<name>/fail`.
    Fail,
    /// `/ping/<name>/<exit-code>`.
    Code(i32),
}

impl PingPath {
    /// The last path segment after the name, if any.
    pub fn parse(segment: Option<&str>) -> Option<PingPath> {
        Some(match segment {
            None => PingPath::Success,
            Some("start") => PingPath::Start,
            Some("fail") => PingPath::Fail,
            Some(code) => {
                PingPath::Code(code.parse::<i32>().ok().filter(|c| (0..=255).contains(c))?)
            }
        })
    }
}

/// Whether `key` is the ping key of heartbeat `name` (only its hash is stored).
fn ping_key_matches(state: &State, conn: Db<'_>, name: &str, key: &str) -> Result<bool> {
    let Some(row) = store::heartbeat(conn, name)? else {
        return Ok(false);
    };
    Ok(state
        .watch
        .heartbeat(&row)
        .is_ok_and(|k| k.hb.matches_ping_key(key)))
}

/// Records a ping. `key` is the `?key=` of a request that brought no token.
pub fn ping(
    request: &mut Request,
    name: String,
    path: PingPath,
    key: Option<&str>,
    state: &Arc<State>,
    conn: &mut Option<crate::store::Conn>,
) -> Answer {
    if let Some(key) = key {
        if !ping_key_matches(state, reader(state, conn)?, &name, key)? {
            return Err(Error::request(
                401,
                "wrong ping key (send the heartbeat's ping_key as ?key=, or a token with the ping scope)",
            ));
        }
    }
    let mut body = read_body(request, state.config().server.max_body)?;
    if body.len() > PING_BODY_MAX {
        body.drain(..body.len() - PING_BODY_MAX);
    }
    let remote = request
        .remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let (kind, exit_code) = match path {
        PingPath::Success => (PingKind::Success, None),
        PingPath::Start => (PingKind::Start, None),
        PingPath::Fail => (PingKind::Fail, None),
        PingPath::Code(0) => (PingKind::Success, Some(0)),
        PingPath::Code(c) => (PingKind::Fail, Some(c)),
    };
    let name2 = name.clone();
    state.writer.write(move |conn| {
        let ping = NewPing {
            heartbeat: &name2,
            kind,
            exit_code,
            body: &body,
            remote: &remote,
        };
        store::record_ping(conn, &ping, now_ms())
    })?;
    Ok((
        200,
        json!({ "ok": true, "heartbeat": name, "ping": kind.as_str(), "exit_code": exit_code }),
    ))
}

/// A heartbeat as the API shows it: its definition, its status right now and what it last heard.
fn describe(state: &State, row: &store::HeartbeatRow, now: i64) -> Value {
    let parsed = state.watch.heartbeat(row);
    let mut v = json!({
        "name": row.name,
        "origin": row.origin,
        "registered_at": row.registered_at,
        "paused": row.paused,
        "paused_reason": row.paused_reason,
        "muted_until": row.muted_until,
        "last_start": row.last_start,
        "last_end_at": row.last_end_at,
        "last_end_ok": row.last_end_ok,
        "last_end_code": row.last_end_code,
        "pings": row.pings,
        "checked_state": row.state,
        "checked_since": row.state_since,
    });
    match parsed {
        Err(e) => {
            v["state"] = json!("invalid");
            v["error"] = json!(e);
        }
        Ok(k) => {
            let hb = &k.hb;
            let st = heartbeat::status(&hb.spec, &row.seen(), now);
            v["state"] = json!(st.state.as_str());
            v["reason"] = json!(st.reason);
            v["due_at"] = json!(st.due_at);
            v["down_at"] = json!(st.down_at);
            v["running_since"] = json!(st.running_since);
            v["overrun"] = json!(st.overrun);
            v["schedule"] = json!(hb.spec.schedule.to_string());
            v["grace"] = json!(format_duration(hb.spec.grace));
            v["max_runtime"] = json!(hb.spec.max_runtime.map(format_duration));
            v["renotify"] = json!(hb.renotify.map(format_duration));
            v["has_ping_key"] = json!(hb.ping_key.is_some());
            for (k, val) in [
                ("team", &hb.team),
                ("priority", &hb.priority),
                ("service", &hb.service),
                ("runbook_url", &hb.runbook_url),
            ] {
                v[k] = json!(val);
            }
            v["tags"] = json!(hb.tags);
            v["labels"] = json!(hb.labels);
            v["description"] = json!(hb.description);
        }
    }
    v
}

/// Which heartbeats a list shows: each filter given must match the field of
/// its name.
#[derive(Default)]
pub struct Only {
    /// `state` (checked by `filters`).
    pub state: Option<String>,
    /// `service`, as the heartbeat's definition sets it.
    pub service: Option<String>,
    /// `team`, as the heartbeat's definition sets it.
    pub team: Option<String>,
}

impl Only {
    fn matches(&self, v: &Value) -> bool {
        [
            ("state", &self.state),
            ("service", &self.service),
            ("team", &self.team),
        ]
        .iter()
        .all(|(field, want)| want.as_deref().is_none_or(|w| v[field] == w))
    }
}

/// `GET /api/v1/heartbeats?state=&service=&team=&limit=`: by name, at most
/// `limit` (1,000 by default).
pub fn list(state: &State, conn: Db<'_>, only: &Only, limit: usize) -> Answer {
    let now = now_ms();
    let rows = store::heartbeats(conn)?;
    let total = rows.len();
    let list: Vec<Value> = rows
        .iter()
        .map(|r| describe(state, r, now))
        .filter(|v| only.matches(v))
        .take(limit)
        .collect();
    let sweep = *state
        .watch
        .last_sweep
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Ok((
        200,
        json!({
            "heartbeats": list,
            "total": total,
            "last_sweep": sweep.map(|(at, n, us)| json!({"at": at, "heartbeats": n, "micros": us})),
        }),
    ))
}

/// `GET /api/v1/heartbeats/<name>`: with its recent pings.
pub fn show(state: &State, conn: Db<'_>, name: &str, limit: i64) -> Answer {
    let Some(row) = store::heartbeat(conn, name)? else {
        return Err(Error::request(404, format!("no heartbeat {name:?}")));
    };
    let mut v = describe(state, &row, now_ms());
    v["recent_pings"] = json!(store::recent_pings(conn, name, limit)?);
    Ok((200, json!({ "heartbeat": v })))
}

/// `PUT /api/v1/heartbeats/<name>` with its JSON body: registers or
/// updates one, validated like the config file.
pub fn put(name: String, body: Value, state: &Arc<State>) -> Answer {
    // The name is the URL's: one that breaks the name rule is a bad request
    // whatever the body says.
    config::check_name(&name).map_err(|e| Error::request(400, format!("heartbeat name: {e}")))?;
    let mut raw: RawHeartbeat = serde_json::from_value(body)
        .map_err(|e| Error::request(422, format!("heartbeat {name:?}: {e}")))?;
    if !raw.name.is_empty() && raw.name != name {
        return Err(Error::request(
            422,
            format!(
                "heartbeat {name:?}: the body names {:?}; leave name out or make it match the URL",
                raw.name
            ),
        ));
    }
    raw.name = name.clone();
    let def = config::heartbeat(&raw)
        .map_err(|e| Error::request(422, format!("heartbeat {name:?}: {e}")))?
        .def;
    let name2 = name.clone();
    let created = state
        .writer
        .write(move |conn| store::put_heartbeat(conn, &name2, &def, now_ms()))?;
    registered("heartbeat", name, created)
}

/// The answer to a PUT that registered (201) or updated (200) a heartbeat or a probe, logged.
fn registered(what: &str, name: String, created: bool) -> Answer {
    log::info!(
        "{what} {name} {} through the API",
        if created { "registered" } else { "updated" }
    );
    Ok((
        if created { 201 } else { 200 },
        json!({ what: name, "created": created }),
    ))
}

/// `DELETE /api/v1/heartbeats/<name>`.
pub fn delete(name: String, state: &Arc<State>) -> Answer {
    let name2 = name.clone();
    state
        .writer
        .write(move |conn| store::delete_heartbeat(conn, &name2))?;
    log::info!("heartbeat {name} deleted through the API");
    Ok((200, json!({ "deleted": name })))
}

/// `POST /api/v1/heartbeats|probes/<name>/mute|unmute`, with the body
/// `request::new_mute` reads. Muting a probe resolves its `ProbeFailing`; a
/// muted heartbeat's alerts go at the next sweep.
pub fn mute(
    state: &Arc<State>,
    what: Muted,
    name: String,
    on: bool,
    body: &Value,
    who: &str,
) -> Answer {
    let now = now_ms();
    let mute = if on {
        Some(new_mute(body, who, now)?)
    } else {
        if let Some(field) = ["for", "until"]
            .into_iter()
            .find(|f| body.get(*f).is_some_and(|v| !v.is_null()))
        {
            return Err(Error::request(
                400,
                format!("{field}: unmute ends the mute now and takes no end (mute again with {field} instead)"),
            ));
        }
        None
    };
    let until = mute.as_ref().and_then(|m| m.until);
    let (name2, st) = (name.clone(), state.clone());
    let applied = state.writer.write(move |conn| match what {
        Muted::Heartbeat => {
            store::mute_heartbeat(conn, &name2, mute.as_ref(), now)?;
            Ok(Applied::default())
        }
        Muted::Probe => {
            let config = st.config();
            if !config.probes.contains_key(&name2) && store::api_probe(conn, &name2)?.is_none() {
                return Err(Error::request(404, format!("no probe {name2:?}")));
            }
            store::mute_probe(conn, &name2, mute.as_ref(), now)?;
            if on {
                watch::resolve_probe(conn, &config, &st, &name2, now)
            } else {
                Ok(Applied::default())
            }
        }
    })?;
    intake::finish(applied, state, metrics::INTERNAL);
    let what = what.as_str();
    let how = match (on, until) {
        (false, _) => "unmuted".to_string(),
        (true, None) => "muted".to_string(),
        (true, Some(t)) => format!("muted until {}", format_rfc3339(t)),
    };
    log::info!("{what} {name} {how} by {who}");
    let mut answer = json!({ what: name, "muted": on, "until": until });
    if what == "heartbeat" {
        // The name heartbeats have always answered with.
        answer["paused"] = json!(on);
    }
    Ok((200, answer))
}

fn probe_json(
    def: Option<&Defined>,
    row: Option<&store::ProbeRow>,
    mute: Option<&store::ProbeMuteRow>,
    name: &str,
) -> Value {
    let mut v = json!({
        "name": name,
        "state": "unknown",
        "muted": mute.is_some(),
        "muted_reason": mute.map(|m| &m.reason),
        "muted_until": mute.and_then(|m| m.until),
    });
    match def {
        None => v["removed"] = json!(true),
        Some(d) => {
            v["source"] = json!(d.source);
            if let Some(r) = &d.row {
                v["registered_at"] = json!(r.registered_at);
                v["updated_at"] = json!(r.updated_at);
            }
            match &d.probe {
                Ok(p) => {
                    v["type"] = json!(p.kind());
                    if let Some(on) = &p.on {
                        v["on"] = json!(on.describe());
                    }
                    v["schedule"] = json!(p.schedule.to_string());
                    v["fail_after"] = json!(p.fail_after);
                    v["recover_after"] = json!(p.recover_after);
                    v["tags"] = json!(p.tags);
                    v["description"] = json!(p.description);
                    v["notify"] = json!(p.notify);
                }
                Err(e) => v["error"] = json!(e),
            }
        }
    }
    if let Some(r) = row {
        let mut stored = serde_json::to_value(r).expect("a probe row always serializes");
        if let (Some(obj), Some(into)) = (stored.as_object_mut(), v.as_object_mut()) {
            into.append(obj);
        }
    }
    v
}

/// An agent-side probe's entry gets its agents' rows (`PROBE@AGENT`), and
/// the state of the worst of them: down if any is, up if all are.
fn with_agents(v: &mut Value, name: &str, rows: &[store::ProbeRow]) {
    let agents: Vec<Value> = rows
        .iter()
        .filter_map(|r| {
            let (probe, agent) = r.name.split_once('@')?;
            (probe == name).then(|| {
                let mut a = serde_json::to_value(r).expect("a probe row always serializes");
                a["agent"] = json!(agent);
                if let Some(o) = a.as_object_mut() {
                    o.remove("name");
                }
                a
            })
        })
        .collect();
    if v.get("on").is_none() && agents.is_empty() {
        return;
    }
    let states: Vec<&str> = agents.iter().filter_map(|a| a["state"].as_str()).collect();
    v["state"] = json!(if states.contains(&"down") {
        "down"
    } else if !states.is_empty() && states.iter().all(|s| *s == "up") {
        "up"
    } else {
        "unknown"
    });
    let worst = agents
        .iter()
        .filter_map(|a| a["severity"].as_str())
        .max_by_key(|s| crate::probe::Level::parse(s));
    v["severity"] = json!(worst);
    v["agents"] = json!(agents);
}

/// `GET /api/v1/probes?state=`: the file's probes and the API's, with their last results.
pub fn probes(conn: Db<'_>, config: &Config, only: Option<&str>) -> Answer {
    let rows = store::probes(conn)?;
    let mutes = store::probe_mutes(conn)?;
    let defined = watch::defined_probes(conn, config)?;
    let mut names: Vec<&str> = defined.keys().map(String::as_str).collect();
    for r in &rows {
        // A pair `PROBE@AGENT` shows under its probe.
        if !defined.contains_key(&r.name) && !r.name.contains('@') {
            names.push(&r.name);
        }
    }
    let list: Vec<Value> = names
        .iter()
        .map(|n| {
            let row = rows.iter().find(|r| r.name == *n);
            let mute = mutes.get(*n);
            let mut v = probe_json(defined.get(*n), row, mute, n);
            with_agents(&mut v, n, &rows);
            v
        })
        .filter(|v| only.is_none_or(|s| v["state"] == s))
        .collect();
    Ok((200, json!({ "probes": list })))
}

/// `GET /api/v1/probes/<name>`: with its recent results.
pub fn probe(conn: Db<'_>, config: &Config, name: &str, limit: i64) -> Answer {
    let row = store::probe(conn, name)?;
    let mut defined = watch::defined_probes(conn, config)?;
    let def = defined.remove(name);
    if row.is_none() && def.is_none() {
        return Err(Error::request(404, format!("no probe {name:?}")));
    }
    let mute = store::probe_mute(conn, name)?;
    let mut v = probe_json(def.as_ref(), row.as_ref(), mute.as_ref(), name);
    with_agents(&mut v, name, &store::probes(conn)?);
    v["recent_results"] = json!(store::recent_probe_results(conn, name, limit)?);
    if let Some(agents) = v.get_mut("agents").and_then(Value::as_array_mut) {
        for a in agents {
            let subject = store::check_subject(name, a["agent"].as_str().unwrap_or_default());
            a["recent_results"] = json!(store::recent_probe_results(conn, &subject, limit)?);
        }
    }
    Ok((200, json!({ "probe": v })))
}

/// `PUT /api/v1/probes/<name>` with its JSON body: registers or replaces
/// one, validated like the file's probes (`config::api_probe`).
pub fn put_probe(name: String, mut body: Value, state: &Arc<State>) -> Answer {
    config::check_name(&name).map_err(|e| Error::request(400, format!("probe name: {e}")))?;
    let config = state.config();
    let Some(fields) = body.as_object_mut() else {
        return Err(Error::request(
            422,
            format!("probe {name:?}: the body must be a JSON object of [[probe]] fields"),
        ));
    };
    match fields.get("name") {
        None => {
            fields.insert("name".into(), json!(name));
        }
        Some(n) if *n == json!(name) => {}
        Some(n) => {
            return Err(Error::request(
                422,
                format!(
                    "probe {name:?}: the body names {n}; leave name out or make it match the URL"
                ),
            ))
        }
    }
    let probe = config::api_probe(&body)
        .map_err(|e| Error::request(422, format!("probe {name:?}: {e}")))?;
    for c in &probe.notify {
        config::check_channel(c, &config.channels)
            .map_err(|e| Error::request(422, format!("probe {name:?}: notify: {e}")))?;
    }
    let def = body.to_string();
    let (name2, st) = (name.clone(), state.clone());
    let created = state.writer.write(move |conn| {
        // Checked in the store job, after any reload that added it to the file.
        if st.config().probes.contains_key(&name2) {
            return Err(Error::request(
                409,
                format!("probe {name2:?} is defined in the config file; change it there"),
            ));
        }
        store::put_api_probe(conn, &name2, &def, now_ms())
    })?;
    state.watch.probes_changed();
    state.peers.probes_changed();
    registered("probe", name, created)
}

/// `DELETE /api/v1/probes/<name>`: stops a probe registered through the API
/// and resolves its `ProbeFailing`.
pub fn delete_probe(name: String, state: &Arc<State>) -> Answer {
    let (name2, st) = (name.clone(), state.clone());
    let applied = state.writer.write(move |conn| {
        let config = st.config();
        if config.probes.contains_key(&name2) {
            return Err(Error::request(
                409,
                format!(
                    "probe {name2:?} is defined in the config file; remove it there and reload"
                ),
            ));
        }
        if !store::delete_api_probe(conn, &name2)? {
            return Err(Error::request(
                404,
                format!("no probe {name2:?} registered through the API"),
            ));
        }
        watch::resolve_probe(conn, &config, &st, &name2, now_ms())
    })?;
    state.watch.probes_changed();
    state.peers.probes_changed();
    log::info!("probe {name} deleted through the API");
    intake::finish(applied, state, metrics::INTERNAL);
    Ok((200, json!({ "deleted": name })))
}

/// `GET /api/v1/schedules`.
pub fn schedules(conn: Db<'_>, config: &Config) -> Answer {
    let now = now_ms();
    let mut list = Vec::new();
    for s in &config.schedules {
        let rule = &config.rules[s.rule_idx];
        let runbook = match &rule.action {
            config::Action::Run(rb) => rb.clone(),
            config::Action::Discard => String::new(),
        };
        list.push(json!({
            "name": s.name,
            "schedule": s.schedule.to_string(),
            "runbook": runbook,
            "rule": rule.name,
            "last_run": store::schedule_last_fire(conn, &s.name)?,
            "next_run": s.schedule.next_after(now),
        }));
    }
    Ok((200, json!({ "schedules": list })))
}
