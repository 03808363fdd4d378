//! The outbox: routes recorded notifications to channels and delivers them.
//!
//! One outbox thread, every 200 ms: routes what the store recorded since
//! (one store job per batch: the document, the `[[notify]]` match, one
//! delivery row per channel, incident bookkeeping), then starts a worker
//! thread for each channel whose oldest pending delivery is due and that has
//! none running. A worker sends its channel's deliveries strictly in order
//! (so a receiver sees each event's notifications in order), records each
//! outcome in the store, and ends when the head is not due: a failure waits
//! its backoff, a rate limit its window. A channel that hangs holds only
//! its own worker; intake never waits on a channel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Scope;
use std::time::Duration;

use crate::store::sql::Db;
use serde_json::Value;

use super::{Shutdown, State};
use crate::config::{Channel, Config, RateLimit, Route};
use crate::error::Result;
use crate::notify::{self, send};
use crate::store::{self, Outcome, Pending};
use crate::time::{format_duration, now_ms};

/// How often the outbox looks for work.
const TICK: Duration = Duration::from_millis(200);
/// Notifications routed per store job.
const ROUTE_BATCH: i64 = 500;
/// Most notifications in one digest.
const DIGEST_MAX: usize = 100;

/// What the outbox thread, its workers and the API share.
#[derive(Default)]
pub struct Shared {
    /// Channels with a worker running.
    busy: Mutex<HashSet<String>>,
    /// Per rate-limited channel: when its recent messages went out (ms).
    sent: Mutex<HashMap<String, VecDeque<i64>>>,
    /// Per channel: held by its rate limit until (ms).
    held: Mutex<HashMap<String, i64>>,
    /// The URL the server listens on, for links when `public_url` is unset.
    bound: OnceLock<String>,
}

impl Shared {
    /// Records the URL the server listens on (once, at start).
    pub fn set_bound(&self, url: &str) {
        let _ = self.bound.set(url.to_string());
    }

    /// The base of links in messages: `[server] public_url`, else the bound address.
    pub fn base_url(&self, config: &Config) -> Option<String> {
        config
            .server
            .public_url
            .clone()
            .or_else(|| self.bound.get().cloned())
    }
}

/// The outbox thread.
pub fn run<'scope>(
    s: &'scope Scope<'scope, '_>,
    state: &'scope Arc<State>,
    shutdown: &'scope Shutdown,
) {
    let mut reader: Option<crate::store::Conn> = None;
    loop {
        if shutdown.wait(TICK) {
            return;
        }
        if !state.leadership.leads() {
            continue;
        }
        if reader.is_none() {
            reader = state
                .location
                .open()
                .map_err(|e| log::error!("outbox: {e}"))
                .ok();
        }
        let Some(conn) = reader.as_ref().map(store::Conn::db) else {
            continue;
        };
        if let Err(e) = tick(s, state, shutdown, conn) {
            log::error!("outbox: {e}");
            reader = None;
        }
    }
}

fn tick<'scope>(
    s: &'scope Scope<'scope, '_>,
    state: &'scope Arc<State>,
    shutdown: &'scope Shutdown,
    conn: Db<'_>,
) -> Result<()> {
    while store::any_unrouted(conn)? {
        let config = state.config();
        let (n, lines) = state
            .writer
            .write(move |conn| route_batch(conn, &config, now_ms()))?;
        for (level, line) in &lines {
            log::log!(*level, "{line}");
        }
        if n < ROUTE_BATCH as usize || shutdown.is_triggered() {
            break;
        }
    }
    let config = state.config();
    let now = now_ms();
    for (name, next_at) in store::pending_heads(conn)? {
        if next_at > now || held_until(&state.outbox, &name) > now {
            continue;
        }
        if !config.channels.contains_key(&name) {
            let n = state.writer.write({
                let name = name.clone();
                move |conn| store::abandon_channel(conn, &name, now_ms())
            })?;
            state.metrics.observe_gave_up(&name, n);
            log::warn!("outbox: gave up {n} deliveries to channel {name:?}: it is no longer in the configuration");
            continue;
        }
        let started = state
            .outbox
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        if started {
            s.spawn(move || {
                let _busy = Busy(&state.outbox, name.clone());
                if let Err(e) = worker(state, shutdown, &name) {
                    log::error!("outbox: channel {name}: {e}");
                }
            });
        }
    }
    Ok(())
}

/// Clears a channel's busy mark when its worker ends, however it ends.
struct Busy<'a>(&'a Shared, String);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

fn held_until(shared: &Shared, channel: &str) -> i64 {
    shared
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(channel)
        .copied()
        .unwrap_or(0)
}

// ---- routing -----------------------------------------------------------------

/// The channels a notification goes to by the routes: first match wins,
/// unless it says `continue`. Errors name the route and are logged.
pub fn route(routes: &[Route], doc: &Value) -> (Vec<String>, Vec<String>) {
    let var = crate::config::doc(doc.clone());
    let mut channels: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    for r in routes {
        let matched = match &r.when {
            None => true,
            Some(when) => when.truthy(&var).unwrap_or_else(|e| {
                errors.push(format!("notify route at line {}: when: {e}", r.line));
                false
            }),
        };
        if matched {
            for c in &r.channels {
                if !channels.contains(c) {
                    channels.push(c.clone());
                }
            }
            if !r.continue_ {
                break;
            }
        }
    }
    (channels, errors)
}

/// Log lines, written after the commit.
type Lines = Vec<(log::Level, String)>;

/// Routes up to a batch of recorded notifications (a store job). Returns
/// how many it routed, and log lines.
fn route_batch(conn: Db<'_>, config: &Config, now: i64) -> Result<(usize, Lines)> {
    let mut log = Vec::new();
    let batch = store::unrouted(conn, ROUTE_BATCH)?;
    let n = batch.len();
    for u in batch {
        let Some(kind) = notify::kind_named(&u.kind) else {
            log.push((
                log::Level::Warn,
                format!("notification {}: unknown kind {:?}, dropped", u.id, u.kind),
            ));
            store::route_notice(conn, u.id, &Value::Null, &[], now)?;
            continue;
        };
        let parts = match (u.event_id, u.parts) {
            (_, Some(p)) => p,
            (Some(id), None) => match store::event_detail(conn, id)? {
                Some(d) => {
                    let decision = store::decision_reason(conn, &d.event.fingerprint, id)?;
                    notify::event_parts(&d, u.state.as_deref(), decision.as_deref())
                }
                None => Value::Null,
            },
            (None, None) => Value::Null,
        };
        let mut doc = notify::document(u.id, kind, &u.subject, u.at, parts);
        // An event's rule may say how urgent its events are.
        let rule = notify::text(&doc, &["rule"]).to_string();
        if let Some(p) = config
            .rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.priority.clone())
        {
            doc["priority"] = Value::String(p);
        }
        let (mut routed, errors) = route(&config.routes, &doc);
        // A probe's `notify` channels hear it too; one since removed is skipped.
        for c in doc["probe"]["notify"].as_array().into_iter().flatten() {
            if let Some(c) = c.as_str().filter(|c| config.channels.contains_key(*c)) {
                if !routed.iter().any(|r| r == c) {
                    routed.push(c.to_string());
                }
            }
        }
        for e in errors {
            log.push((
                log::Level::Warn,
                format!("notification {} ({}): {e}", u.id, kind.name),
            ));
        }
        let key = notify::text(&doc, &["dedup_key"]).to_string();
        let incident = |c: &str| config.channels.get(c).is_some_and(|c| c.kind.is_incident());
        let mut channels: Vec<String> = Vec::new();
        if kind.resolves {
            // An incident channel hears a resolve only for what it opened,
            // and always hears it, whatever the routes say.
            let open = store::close_incidents(conn, &key)?;
            channels.extend(routed.into_iter().filter(|c| !incident(c)));
            for c in open {
                if config.channels.contains_key(&c) && !channels.contains(&c) {
                    channels.push(c);
                }
            }
        } else {
            for c in &routed {
                if incident(c) {
                    store::open_incident(conn, c, &key, now)?;
                }
            }
            channels = routed;
        }
        // Only a delivery reads the document: one that goes nowhere keeps none.
        let keep = if channels.is_empty() {
            &Value::Null
        } else {
            &doc
        };
        store::route_notice(conn, u.id, keep, &channels, now)?;
        if !channels.is_empty() {
            log.push((
                log::Level::Debug,
                format!(
                    "notification {} {} {}: to {}",
                    u.id,
                    kind.name,
                    u.subject,
                    channels.join(", ")
                ),
            ));
        }
    }
    Ok((n, log))
}

// ---- delivery ----------------------------------------------------------------

/// What a worker does next with its channel's queue.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Send the first `n` pending deliveries: one alone, or more as one digest.
    Send(usize),
    /// The rate limit is used up until then (ms).
    Hold(i64),
}

/// Whether the head goes now, alone or with the rest of what is due as one
/// digest: below the limit each goes alone, the last message of a window
/// carries everything that is due.
fn plan(
    limit: Option<RateLimit>,
    sent: &VecDeque<i64>,
    due: usize,
    incident: bool,
    now: i64,
) -> Next {
    let Some(limit) = limit.filter(|_| !incident) else {
        return Next::Send(1);
    };
    let per = limit.per.as_millis() as i64;
    let recent: Vec<i64> = sent.iter().copied().filter(|&t| t > now - per).collect();
    if recent.len() >= limit.count as usize {
        return Next::Hold(recent[recent.len() - limit.count as usize] + per);
    }
    if recent.len() + 1 == limit.count as usize && due > 1 {
        return Next::Send(due.min(DIGEST_MAX));
    }
    Next::Send(1)
}

/// The longest `Retry-After` heal honours: a receiver that asks for more is
/// tried again after an hour (a typo of a day must not silence a channel).
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The wait before try `attempts + 1` of a failing delivery: doubling from
/// 1 s up to `max`, with jitter (between half and all of it), and at least
/// what the receiver asked for (`Retry-After`, which `max` does not cut, up
/// to `RETRY_AFTER_CAP`).
pub fn backoff(attempts: i64, max: Duration, retry_after: Option<Duration>, seed: u64) -> Duration {
    let exp = attempts.clamp(1, 30) as u32 - 1;
    let full = Duration::from_secs(1)
        .saturating_mul(1u32 << exp.min(20))
        .min(max);
    // xorshift: enough to spread retries of many deliveries apart.
    let mut x = seed | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let half = full / 2;
    let jitter = Duration::from_millis(x % (half.as_millis() as u64 + 1));
    let wait = half + jitter;
    match retry_after {
        Some(r) => wait.max(r.min(RETRY_AFTER_CAP)),
        None => wait,
    }
}

/// Sends recorded as sent at least this often, so a crash re-sends little.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// ... or after this many messages.
const FLUSH_AFTER: usize = 50;

/// Messages sent whose outcome is not yet in the store: (deliveries, digest size).
type Sent = Vec<(Vec<i64>, Option<usize>)>;

/// Sends one channel's due deliveries in order: the oldest first, each
/// after the one before it went out; the first failure stops the run.
fn worker(state: &State, shutdown: &Shutdown, name: &str) -> Result<()> {
    let conn = state.location.open()?;
    let conn = conn.db();
    let mut sender: Option<(Duration, send::Sender)> = None;
    loop {
        let config = state.config();
        let Some(channel) = config.channels.get(name) else {
            return Ok(());
        };
        if sender.as_ref().is_none_or(|(t, _)| *t != channel.timeout) {
            sender = Some((channel.timeout, send::Sender::new(channel.timeout)));
        }
        let sender = &sender.as_ref().expect("set just above").1;
        let now = now_ms();
        let pending = store::pending(conn, name, DIGEST_MAX as i64)?;
        let due = pending.iter().take_while(|p| p.next_at <= now).count();
        if due == 0 {
            return Ok(());
        }
        let mut sent: Sent = Vec::new();
        let mut flushed = std::time::Instant::now();
        let mut i = 0;
        let stop = loop {
            if i >= due || shutdown.is_triggered() || !state.leadership.leads() {
                break false;
            }
            let p = &pending[i];
            let now = now_ms();
            if now - p.created_at >= channel.give_up_after.as_millis() as i64 {
                flush(state, &mut sent)?;
                give_up(
                    state,
                    channel,
                    std::slice::from_ref(p),
                    p.error.as_deref(),
                    now,
                )?;
                i += 1;
                continue;
            }
            let next = {
                let recent = state.outbox.sent.lock().unwrap_or_else(|e| e.into_inner());
                let empty = VecDeque::new();
                plan(
                    channel.rate_limit,
                    recent.get(name).unwrap_or(&empty),
                    due - i,
                    channel.kind.is_incident(),
                    now,
                )
            };
            let n = match next {
                Next::Hold(until) => {
                    state
                        .outbox
                        .held
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.to_string(), until);
                    break true;
                }
                Next::Send(n) => n,
            };
            let batch = &pending[i..i + n];
            if !deliver(state, &config, channel, sender, batch, &mut sent)? {
                break true;
            }
            i += n;
            if sent.len() >= FLUSH_AFTER || flushed.elapsed() >= FLUSH_EVERY {
                flush(state, &mut sent)?;
                flushed = std::time::Instant::now();
            }
        };
        flush(state, &mut sent)?;
        if stop || shutdown.is_triggered() || !state.leadership.leads() {
            return Ok(());
        }
    }
}

/// Records what went out since the last flush, in one store job.
fn flush(state: &State, sent: &mut Sent) -> Result<()> {
    if sent.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(sent);
    let now = now_ms();
    state.writer.write(move |conn| {
        for (ids, digest) in &batch {
            store::record_try(conn, ids, &Outcome::Sent { digest: *digest }, now)?;
        }
        Ok(())
    })
}

/// One try of a batch (one message); true when it is done with (sent, or
/// given up), false when it waits for its next try. A failure is recorded
/// after what went out before it.
fn deliver(
    state: &State,
    config: &Config,
    channel: &Channel,
    sender: &send::Sender,
    batch: &[Pending],
    sent: &mut Sent,
) -> Result<bool> {
    let docs: Vec<Value> = batch.iter().map(|p| p.doc.clone()).collect();
    let base = state.outbox.base_url(config);
    let head = &batch[0];
    let req = send::prepare(&channel.kind, &docs, base.as_deref(), head.id, now_ms());
    let result = sender.deliver(&req, &channel.kind.secrets());
    let now = now_ms();
    let ids: Vec<i64> = batch.iter().map(|p| p.id).collect();
    let what = describe(batch, &channel.name);
    match result {
        Ok(answer) => {
            let digest = (batch.len() > 1).then_some(batch.len());
            sent.push((ids, digest));
            if channel.rate_limit.is_some() {
                let mut recent = state.outbox.sent.lock().unwrap_or_else(|e| e.into_inner());
                let q = recent.entry(channel.name.clone()).or_default();
                q.push_back(now);
                while q.len() > 10_000 {
                    q.pop_front();
                }
            }
            if digest.is_some() {
                log::info!(
                    "{what}: sent as one digest (rate limit of channel {})",
                    channel.name
                );
            } else {
                log::debug!("{what}: sent ({answer})");
            }
            Ok(true)
        }
        Err(f) => {
            flush(state, sent)?;
            let wait = backoff(
                head.attempts + 1,
                channel.max_backoff,
                f.retry_after,
                (head.id as u64) ^ (now as u64),
            );
            let next_at = now + wait.as_millis() as i64;
            if f.permanent || next_at - head.created_at >= channel.give_up_after.as_millis() as i64
            {
                give_up(state, channel, batch, Some(&f.error), now)?;
                // Done with it: the next may go.
                return Ok(true);
            }
            let error = f.error.clone();
            state.writer.write(move |conn| {
                store::record_try(
                    conn,
                    &ids,
                    &Outcome::Retry {
                        next_at,
                        error: &error,
                    },
                    now,
                )
            })?;
            log::warn!(
                "{what} failed (try {}): {}; next try in {}",
                head.attempts + 1,
                f.error,
                format_duration(wait)
            );
            Ok(false)
        }
    }
}

fn give_up(
    state: &State,
    channel: &Channel,
    batch: &[Pending],
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    let age = Duration::from_millis((now - batch[0].created_at).max(0) as u64);
    let error = format!(
        "gave up after {} and {} tries: {}",
        format_duration(age),
        batch[0].attempts + 1,
        error.unwrap_or("no answer")
    );
    let ids: Vec<i64> = batch.iter().map(|p| p.id).collect();
    let e2 = error.clone();
    state
        .writer
        .write(move |conn| store::record_try(conn, &ids, &Outcome::GaveUp { error: &e2 }, now))?;
    state.metrics.observe_gave_up(&channel.name, batch.len());
    log::error!("{}: {error}", describe(batch, &channel.name));
    Ok(())
}

/// "notification 12 (event.failed) to channel oncall", or a digest's range.
fn describe(batch: &[Pending], channel: &str) -> String {
    let kind = |p: &Pending| notify::text(&p.doc, &["kind"]).to_string();
    match batch {
        [one] => format!(
            "notification {} ({}) to channel {channel}",
            one.notification_id,
            kind(one)
        ),
        [first, .., last] => format!(
            "{} notifications ({}..{}) to channel {channel}",
            batch.len(),
            first.notification_id,
            last.notification_id
        ),
        [] => format!("nothing to channel {channel}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let max = Duration::from_secs(300);
        for seed in [1u64, 42, 1 << 40, u64::MAX] {
            for (attempts, full) in [(1, 1), (2, 2), (3, 4), (6, 32), (20, 300)] {
                let w = backoff(attempts, max, None, seed);
                let full = Duration::from_secs(full);
                assert!(
                    w >= full / 2 && w <= full,
                    "try {attempts}: {w:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
        assert_eq!(
            backoff(1, max, Some(Duration::from_secs(30)), 7),
            Duration::from_secs(30),
            "Retry-After is honoured"
        );
    }

    #[test]
    fn retry_after_wins_over_max_backoff_up_to_an_hour() {
        let max = Duration::from_secs(5);
        for attempts in [1, 3, 10] {
            assert_eq!(
                backoff(attempts, max, Some(Duration::from_secs(7)), 7),
                Duration::from_secs(7),
                "try {attempts}: Retry-After 7 s with max_backoff 5 s"
            );
        }
        assert_eq!(
            backoff(1, max, Some(Duration::from_secs(86_400)), 7),
            RETRY_AFTER_CAP,
            "a day is cut to the cap"
        );
        assert!(backoff(1, max, Some(Duration::ZERO), 7) <= max);
    }

    #[test]
    fn rate_limit_sends_alone_then_one_digest_then_holds() {
        let limit = Some(RateLimit {
            count: 3,
            per: Duration::from_secs(60),
        });
        let now = 1_000_000;
        let sent = |ts: &[i64]| ts.iter().copied().collect::<VecDeque<i64>>();
        assert_eq!(plan(limit, &sent(&[]), 50, false, now), Next::Send(1));
        assert_eq!(
            plan(limit, &sent(&[now - 10]), 50, false, now),
            Next::Send(1)
        );
        assert_eq!(
            plan(limit, &sent(&[now - 10, now - 5]), 50, false, now),
            Next::Send(50),
            "the last slot carries the rest"
        );
        assert_eq!(
            plan(limit, &sent(&[now - 10, now - 5]), 1, false, now),
            Next::Send(1)
        );
        assert_eq!(
            plan(limit, &sent(&[now - 10, now - 5, now - 1]), 50, false, now),
            Next::Hold(now - 10 + 60_000)
        );
        assert_eq!(
            plan(
                limit,
                &sent(&[now - 70_000, now - 5, now - 1]),
                50,
                false,
                now
            ),
            Next::Send(50),
            "old sends leave the window"
        );
        assert_eq!(
            plan(limit, &sent(&[now - 10, now - 5, now - 1]), 50, true, now),
            Next::Send(1),
            "incidents are never held or digested"
        );
        assert_eq!(plan(None, &sent(&[]), 50, false, now), Next::Send(1));
        assert_eq!(
            plan(limit, &sent(&[now - 3, now - 2]), 500, false, now),
            Next::Send(DIGEST_MAX)
        );
    }

    #[test]
    fn routes_first_match_unless_continue() {
        let config = crate::config::parse(
            std::path::Path::new("t.toml"),
            r#"
[channel.chat]
webhook = { url = "http://127.0.0.1:1/chat" }
[channel.page]
pagerduty = { routing_key = "0123456789abcdef0123456789abcdef", url = "http://127.0.0.1:1/pd" }
[channel.audit]
command = { run = "cat" }

[[notify]]
when = "kind == 'event.succeeded'"
channels = ["chat"]

[[notify]]
when = "severity == 'critical'"
channels = ["audit"]
continue = true

[[notify]]
when = "contains(['event.failed', 'safety.tripped'], kind)"
channels = ["chat", "page"]

[[notify]]
when = "labels.team == 'db'"
channels = ["audit"]
"#,
        )
        .unwrap();
        let check = |doc: Value, want: &[&str]| {
            let (got, errors) = route(&config.routes, &doc);
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(got, want, "{doc}");
        };
        check(
            serde_json::json!({"kind": "event.succeeded", "severity": "critical"}),
            &["chat"],
        );
        check(
            serde_json::json!({"kind": "event.failed", "severity": "critical"}),
            &["audit", "chat", "page"],
        );
        check(
            serde_json::json!({"kind": "event.failed", "severity": "error"}),
            &["chat", "page"],
        );
        check(
            serde_json::json!({"kind": "event.started", "labels": {"team": "db"}}),
            &["audit"],
        );
        check(serde_json::json!({"kind": "event.started"}), &[]);
    }
}
