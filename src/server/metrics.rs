//! heal's own figures for Prometheus: `GET /metrics` in the text exposition
//! format 0.0.4.
//!
//! Counters (alerts received, decisions, op durations, deliveries given up,
//! HTTP requests, store commits) live here in memory as atomics, bumped by a
//! small `observe_*` call where the thing happens, after the commit that
//! records it. They start from zero when heal starts, which is what
//! Prometheus' `rate` and `increase` expect of a counter. Gauges (open events
//! and ops, agents, heartbeats, probes, the outbox, the breaker) are read
//! from the store at scrape time (`store::figures`): a few indexed counts on
//! the HTTP worker's reader connection, never a walk through history.
//!
//! Label values come from the config (sources, channels, probes) or from
//! fixed sets (outcomes, states, route templates, methods, status codes),
//! never from alert data or request paths, so the number of series stays
//! bounded. Families with fixed labels are written with every label value,
//! zeros included, so a series exists before its first event.
//!
//! Locking: fixed counters are plain atomics. A family whose labels are
//! only known at run time takes a read lock on its map and adds atomically;
//! it takes the write lock only the first time it sees a label set.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::event::OpState;
use crate::heartbeat;
use crate::probe;
use crate::rules::Outcome;
use crate::store::replicas::Replica;
use crate::store::Figures;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The source of the alerts heal raises itself (heartbeats, probes, agents,
/// the breaker, schedules), which carry `source = "heal"` like `heal fire`'s.
pub const INTERNAL: &str = "internal";

/// The in-memory counters of a running server.
pub struct Metrics {
    started: SystemTime,
    alerts: Family<String>,
    decisions: [AtomicU64; Outcome::ALL.len()],
    op_durations: [Histogram; OP_RESULTS.len()],
    gave_up: Family<String>,
    http: Family<(&'static str, &'static str, u16)>,
    commits: Histogram,
    reloads: [AtomicU64; RELOAD_RESULTS.len()],
    /// Failed authentications (wrong or expired tokens, at the API or the
    /// login form), and refusals for too many of them.
    auth: [AtomicU64; 2],
    /// Probe runs recorded, and due runs skipped, by `PROBES_ON`.
    probe_runs: [AtomicU64; 2],
    probe_skipped: [AtomicU64; 2],
    /// The scheduler's rounds, and the longest one, in microseconds.
    rounds: Histogram,
    round_max_us: AtomicU64,
}

/// Where a probe runs: on the server, or on agents (`on`).
pub const PROBES_ON: [&str; 2] = ["server", "agent"];

/// Scheduler round times, in seconds: a round is a few reads and a write.
const ROUND_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// How a reload ends: applied, refused as invalid, or refused because it
/// would leave no token or no rule (`config::emptied`).
pub const RELOAD_RESULTS: [&str; 3] = ["applied", "invalid", "refused"];

/// What one intake job received and decided; added to the counters once the
/// job commits (`Metrics::observe_intake`), so a rolled-back job counts nothing.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    alerts: u64,
    decisions: [u64; Outcome::ALL.len()],
}

impl Tally {
    /// Counts one alert notification.
    pub fn alert(&mut self) {
        self.alerts += 1;
    }

    /// Counts one recorded decision.
    pub fn decision(&mut self, outcome: Outcome) {
        self.decisions[outcome_idx(outcome)] += 1;
    }

    /// Adds what another part of the same job counted.
    pub fn merge(&mut self, other: &Tally) {
        self.alerts += other.alerts;
        for (a, b) in self.decisions.iter_mut().zip(other.decisions) {
            *a += b;
        }
    }
}

/// The final states a result reports, one histogram each.
const OP_RESULTS: [OpState; 3] = [OpState::Succeeded, OpState::Failed, OpState::TimedOut];

/// Op run times, in seconds: a restart takes seconds, a backup an hour.
const OP_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0];

/// Commit times, in seconds: an fsync takes a millisecond on an SSD, more on a busy disk.
const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Event states an open event can be in.
const OPEN_EVENT_STATES: [&str; 7] = [
    "pending_approval",
    "deferred",
    "queued",
    "running",
    "verifying",
    "escalated",
    "dry_run",
];

/// Op states before the end.
const OPEN_OP_STATES: [OpState; 4] = [
    OpState::Waiting,
    OpState::Queued,
    OpState::Dispatched,
    OpState::Running,
];

/// Probe states.
const PROBE_STATES: [probe::State; 3] =
    [probe::State::Unknown, probe::State::Up, probe::State::Down];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: SystemTime::now(),
            alerts: Family::default(),
            decisions: Default::default(),
            op_durations: OP_RESULTS.map(|_| Histogram::new(OP_BUCKETS)),
            gave_up: Family::default(),
            http: Family::default(),
            commits: Histogram::new(COMMIT_BUCKETS),
            reloads: Default::default(),
            auth: Default::default(),
            probe_runs: Default::default(),
            probe_skipped: Default::default(),
            rounds: Histogram::new(ROUND_BUCKETS),
            round_max_us: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts a committed intake job: its alerts (by where they came from:
    /// "alertmanager", "heal", a `[[source]]` name, or `INTERNAL`) and decisions.
    pub fn observe_intake(&self, source: &str, tally: &Tally) {
        if tally.alerts > 0 {
            self.alerts.add(source, tally.alerts);
        }
        for (counter, n) in self.decisions.iter().zip(tally.decisions) {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Counts a recorded op result and how long its steps ran.
    pub fn observe_op(&self, state: OpState, ran: Duration) {
        if let Some(i) = OP_RESULTS.iter().position(|s| *s == state) {
            self.op_durations[i].observe(ran);
        }
    }

    /// Counts deliveries given up for a channel.
    pub fn observe_gave_up(&self, channel: &str, n: usize) {
        self.gave_up.add(channel, n as u64);
    }

    /// Counts an answered request by method, route template and status code.
    pub fn observe_http(&self, method: &tiny_http::Method, route: &'static str, code: u16) {
        let method = match method {
            tiny_http::Method::Get => "GET",
            tiny_http::Method::Head => "HEAD",
            tiny_http::Method::Post => "POST",
            tiny_http::Method::Put => "PUT",
            tiny_http::Method::Delete => "DELETE",
            _ => "other",
        };
        self.http.add(&(method, route, code), 1);
    }

    /// Counts a reload (SIGHUP or `POST /api/v1/config`) by its result, one
    /// of `RELOAD_RESULTS`.
    pub fn observe_reload(&self, result: &str) {
        if let Some(i) = RELOAD_RESULTS.iter().position(|r| *r == result) {
            self.reloads[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a failed authentication; `limited` when it was refused for
    /// too many failures from its address (`api::limit`).
    pub fn observe_auth_failure(&self, limited: bool) {
        self.auth[usize::from(limited)].fetch_add(1, Relaxed);
    }

    /// Records how long the store writer's COMMIT of one batch took.
    pub fn observe_commit(&self, took: Duration) {
        self.commits.observe(took);
    }

    /// Counts a probe run whose result was recorded (`on_agent`: reported
    /// by an agent).
    pub fn observe_probe_run(&self, on_agent: bool) {
        self.probe_runs[usize::from(on_agent)].fetch_add(1, Relaxed);
    }

    /// Counts due probe runs skipped because the last run was still out.
    pub fn observe_probe_skipped(&self, on_agent: bool, n: u64) {
        self.probe_skipped[usize::from(on_agent)].fetch_add(n, Relaxed);
    }

    /// Records how long one round of the scheduler took.
    pub fn observe_scheduler_round(&self, took: Duration) {
        self.rounds.observe(took);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.round_max_us.fetch_max(us, Relaxed);
    }

    /// The exposition: the counters, and the gauges from `figures` (read by
    /// the caller), `connected` (agents with a poll parked now), and the
    /// servers on the store (`replicas`; whether this one `leads`).
    pub fn render(
        &self,
        config: &Config,
        figures: &Figures,
        connected: usize,
        replicas: &[Replica],
        leads: bool,
    ) -> String {
        let mut t = Text::default();
        self.render_process(&mut t);
        render_replicas(&mut t, replicas, leads);
        self.render_intake(&mut t, config);
        self.render_work(&mut t, figures);
        render_watch(&mut t, config, figures, connected);
        self.render_scheduler(&mut t);
        self.render_outbox(&mut t, config, figures);
        self.render_server(&mut t);
        t.0
    }

    fn render_process(&self, t: &mut Text) {
        t.family(
            "heal_build_info",
            "gauge",
            "heal's version, as a label; always 1.",
        );
        t.sample(
            "heal_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        let started = self.started.duration_since(UNIX_EPOCH).unwrap_or_default();
        t.single(
            "heal_process_start_time_seconds",
            "When this heal serve started, in seconds since the Unix epoch.",
            Float(started.as_secs_f64()),
        );
    }

    fn render_intake(&self, t: &mut Text, config: &Config) {
        let mut sources = self.alerts.snapshot();
        let known = ["alertmanager", "heal", INTERNAL].map(String::from);
        for s in known.into_iter().chain(config.sources.keys().cloned()) {
            sources.entry(s).or_default();
        }
        t.labeled(
            "heal_alerts_received_total",
            "counter",
            "Alert notifications received and stored, firing or resolved, by source: alertmanager, heal (heal fire and POST /api/v1/alerts), a [[source]] name, or internal (heartbeats, probes, agents, the breaker, schedules).",
            "source",
            sources,
        );
        let decisions = Outcome::ALL
            .iter()
            .zip(&self.decisions)
            .map(|(o, n)| (o.as_str(), n.load(Relaxed)));
        t.labeled(
            "heal_decisions_total",
            "counter",
            "Decisions recorded on firing alerts, by outcome (a row of the decision table).",
            "outcome",
            decisions,
        );
    }

    fn render_work(&self, t: &mut Text, figures: &Figures) {
        t.labeled(
            "heal_events",
            "gauge",
            "Open events (not yet ended) by state.",
            "state",
            with_zeros(&OPEN_EVENT_STATES, &figures.events),
        );
        t.labeled(
            "heal_ops",
            "gauge",
            "Ops not yet ended by state: waiting for a slot, queued for their agent, dispatched, running.",
            "state",
            with_zeros(&OPEN_OP_STATES.map(OpState::as_str), &figures.ops),
        );
        t.family(
            "heal_op_duration_seconds",
            "histogram",
            "How long the steps of an op ran on its agent, observed when its result is recorded, by the state it reported.",
        );
        for (state, h) in OP_RESULTS.iter().zip(&self.op_durations) {
            h.render(
                t,
                "heal_op_duration_seconds",
                Some(("state", state.as_str())),
            );
        }
        t.single(
            "heal_alerts_firing",
            "Alerts firing now.",
            figures.alerts_firing,
        );
    }

    fn render_scheduler(&self, t: &mut Text) {
        fn on(counters: &[AtomicU64; 2]) -> [(&'static str, u64); 2] {
            [0, 1].map(|i| (PROBES_ON[i], counters[i].load(Relaxed)))
        }
        t.labeled(
            "heal_probe_runs_total",
            "counter",
            "Probe runs whose result was recorded, by where they ran: server, or agent (probes with on).",
            "on",
            on(&self.probe_runs),
        );
        t.labeled(
            "heal_probe_runs_skipped_total",
            "counter",
            "Due probe runs skipped because the probe's last run (on that agent) was still running, by where they run.",
            "on",
            on(&self.probe_skipped),
        );
        t.family(
            "heal_scheduler_round_seconds",
            "histogram",
            "How long one round of the scheduler took: sweeping heartbeats and agents, handing out due probes and schedules.",
        );
        self.rounds.render(t, "heal_scheduler_round_seconds", None);
        t.single(
            "heal_scheduler_round_max_seconds",
            "The longest round of the scheduler since heal started.",
            Float(self.round_max_us.load(Relaxed) as f64 / 1e6),
        );
    }

    fn render_outbox(&self, t: &mut Text, config: &Config, figures: &Figures) {
        t.labeled(
            "heal_outbox_deliveries",
            "gauge",
            "Notification deliveries to channels: pending (waiting to go out or for a retry) and failed (given up, kept for the retention period).",
            "state",
            [
                ("pending", figures.deliveries_pending),
                ("failed", figures.deliveries_failed),
            ],
        );
        t.single(
            "heal_outbox_unrouted",
            "Notifications recorded but not yet routed to their channels.",
            figures.notifications_unrouted,
        );
        let mut channels = self.gave_up.snapshot();
        for c in config.channels.keys() {
            channels.entry(c.clone()).or_default();
        }
        t.labeled(
            "heal_outbox_failures_total",
            "counter",
            "Deliveries given up by channel (after give_up_after, on a permanent error, or because the channel left the config).",
            "channel",
            channels,
        );
    }

    fn render_server(&self, t: &mut Text) {
        t.family(
            "heal_http_requests_total",
            "counter",
            "HTTP requests answered, by method, route template (\"other\" when no route matched) and status code.",
        );
        for ((method, route, code), n) in self.http.snapshot() {
            let code = code.to_string();
            let labels = [("method", method), ("route", route), ("code", &code)];
            t.sample("heal_http_requests_total", &labels, n);
        }
        t.family(
            "heal_store_commit_seconds",
            "histogram",
            "How long the store writer's COMMIT of one batch of jobs took (the fsync every waiting request shares).",
        );
        self.commits.render(t, "heal_store_commit_seconds", None);
        let reloads = RELOAD_RESULTS
            .iter()
            .zip(&self.reloads)
            .map(|(r, n)| (*r, n.load(Relaxed)));
        t.labeled(
            "heal_config_reloads_total",
            "counter",
            "Config reloads (SIGHUP, POST /api/v1/config) by result: applied, invalid (the file does not validate), refused (it would leave no token or no rule; see [server] allow_empty).",
            "result",
            reloads,
        );
        t.labeled(
            "heal_auth_failures_total",
            "counter",
            "Failed authentications (a wrong or expired token at the API or the login form): refused with 401, or with 429 once an address had too many this minute.",
            "outcome",
            [
                ("refused", self.auth[0].load(Relaxed)),
                ("limited", self.auth[1].load(Relaxed)),
            ],
        );
    }
}

/// The servers on the store: each one's identity, which leads, whose
/// config differs from the leader's, and when each was last heard from.
fn render_replicas(t: &mut Text, replicas: &[Replica], leads: bool) {
    t.single(
        "heal_leader",
        "1 while this server leads: runs the sweeper, the scheduler and the outbox (always, on a SQLite file).",
        u64::from(leads),
    );
    t.family(
        "heal_replica_info",
        "gauge",
        "Each server on this store heard from lately (1) or not (0), with its host, address, heal version, config version and whether it leads.",
    );
    for r in replicas {
        let version = r.config_version.map(|v| v.to_string()).unwrap_or_default();
        let leader = if r.leader { "true" } else { "false" };
        let labels = [
            ("id", r.id.as_str()),
            ("host", &r.host),
            ("address", &r.address),
            ("version", &r.version),
            ("config_version", &version),
            ("leader", leader),
        ];
        t.sample("heal_replica_info", &labels, u64::from(r.up));
    }
    t.family(
        "heal_replica_last_seen_seconds",
        "gauge",
        "How long ago each server on this store was last heard from (it writes every few seconds).",
    );
    for r in replicas {
        let ago = Float(r.seen_ago_ms.max(0) as f64 / 1000.0);
        t.sample("heal_replica_last_seen_seconds", &[("id", &r.id)], ago);
    }
    t.family(
        "heal_replica_config_differs",
        "gauge",
        "1 for a server whose config file differs from the leader's (reload or fix it), else 0.",
    );
    for r in replicas {
        let differs = u64::from(r.config_differs);
        t.sample("heal_replica_config_differs", &[("id", &r.id)], differs);
    }
}

/// What heal watches: agents, heartbeats, probes and the breaker.
fn render_watch(t: &mut Text, config: &Config, figures: &Figures, connected: usize) {
    t.single(
        "heal_agents_connected",
        "Agents with a long-poll waiting on this server now.",
        connected,
    );
    t.labeled(
        "heal_agents",
        "gauge",
        "Known agents: up if they polled within [server] agent_down_after, else down.",
        "state",
        [("up", figures.agents_up), ("down", figures.agents_down)],
    );
    t.labeled(
        "heal_heartbeats",
        "gauge",
        "Heartbeats by state, as of the checker's last sweep (every second).",
        "state",
        with_zeros(
            &heartbeat::STATES.map(|(_, name)| name),
            &figures.heartbeats,
        ),
    );
    let stored: HashMap<&str, &str> = figures
        .probes
        .iter()
        .map(|(name, state)| (name.as_str(), state.as_str()))
        .collect();
    let mut probes: BTreeMap<&str, i64> = PROBE_STATES.map(|s| (s.as_str(), 0)).into();
    let api = figures
        .api_probes
        .iter()
        .filter(|n| !config.probes.contains_key(*n));
    for name in config.probes.keys().chain(api) {
        let state = stored.get(name.as_str()).copied().unwrap_or("unknown");
        *probes.entry(state).or_default() += 1;
    }
    t.labeled(
        "heal_probes",
        "gauge",
        "Probes of the file and the API by state (unknown until fail_after or recover_after is reached).",
        "state",
        probes,
    );
    t.single(
        "heal_breaker_open",
        "1 while the safety breaker is open and all automation is stopped, else 0.",
        u8::from(figures.breaker_open),
    );
}

/// A counter family whose label sets are only known at run time.
struct Family<K>(RwLock<BTreeMap<K, AtomicU64>>);

impl<K> Default for Family<K> {
    fn default() -> Self {
        Family(RwLock::new(BTreeMap::new()))
    }
}

impl<K: Ord + Clone> Family<K> {
    fn add<Q>(&self, key: &Q, n: u64)
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        // A panic elsewhere cannot leave the map half-changed: recover it.
        if let Some(c) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            c.fetch_add(n, Relaxed);
            return;
        }
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .fetch_add(n, Relaxed);
    }

    fn snapshot(&self) -> BTreeMap<K, u64> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(k, v)| (k.clone(), v.load(Relaxed)))
            .collect()
    }
}

/// A histogram with fixed bucket bounds (seconds).
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is above every bound.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[idx].fetch_add(1, Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Writes the buckets (cumulative), the sum and the count, with `label`
    /// on every sample. The count is the `+Inf` bucket of the same snapshot,
    /// so the two always agree.
    fn render(&self, t: &mut Text, name: &str, label: Option<(&str, &str)>) {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let labels = |le: Option<&str>| {
            let mut v: Vec<(&str, String)> = Vec::new();
            v.extend(label.map(|(k, val)| (k, val.to_string())));
            v.extend(le.map(|le| ("le", le.to_string())));
            v
        };
        let mut total = 0;
        for (i, n) in counts.iter().enumerate() {
            total += n;
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| Float(*b).to_string());
            t.sample_owned(&format!("{name}_bucket"), &labels(Some(&le)), total);
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        t.sample_owned(&format!("{name}_sum"), &labels(None), Float(sum));
        t.sample_owned(&format!("{name}_count"), &labels(None), total);
    }
}

/// A float as Prometheus writes it (`+Inf`, `-Inf`, `NaN`, else plain decimal).
struct Float(f64);

impl Display for Float {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

/// The exposition being written.
#[derive(Default)]
struct Text(String);

impl Text {
    /// `# HELP` and `# TYPE` lines of a family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A gauge family of one unlabeled sample.
    fn single(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// A family with one label, one sample per value.
    fn labeled<K: AsRef<str>, V: Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (K, V)>,
    ) {
        self.family(name, kind, help);
        for (value, n) in samples {
            self.sample(name, &[(label, value.as_ref())], n);
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn sample_owned(&mut self, name: &str, labels: &[(&str, String)], value: impl Display) {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.sample(name, &labels, value);
    }
}

/// A label value with backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Counts by state, with every state of `known` present (zero if absent).
fn with_zeros(known: &[&str], counts: &[(String, i64)]) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = known.iter().map(|s| (s.to_string(), 0)).collect();
    for (state, n) in counts {
        *out.entry(state.clone()).or_default() += n;
    }
    out
}

fn outcome_idx(outcome: Outcome) -> usize {
    Outcome::ALL
        .iter()
        .position(|o| *o == outcome)
        .expect("Outcome::ALL lists every outcome")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: &str, expected: &str) {
        assert_eq!(escape_label(v), expected);
    }

    #[test]
    fn label_values_are_escaped() {
        check("plain", "plain");
        check("a\\b", "a\\\\b");
        check("say \"hi\"", "say \\\"hi\\\"");
        check("two\nlines", "two\\nlines");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_the_count() {
        let h = Histogram::new(&[0.1, 1.0]);
        for ms in [50, 100, 700, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut t = Text::default();
        h.render(&mut t, "x_seconds", Some(("state", "ok")));
        assert_eq!(
            t.0,
            "x_seconds_bucket{state=\"ok\",le=\"0.1\"} 2\n\
             x_seconds_bucket{state=\"ok\",le=\"1\"} 3\n\
             x_seconds_bucket{state=\"ok\",le=\"+Inf\"} 4\n\
             x_seconds_sum{state=\"ok\"} 5.85\n\
             x_seconds_count{state=\"ok\"} 4\n"
        );
    }

    #[test]
    fn a_tally_counts_once_it_is_observed() {
        let m = Metrics::default();
        let mut tally = Tally::default();
        tally.alert();
        tally.decision(Outcome::Run);
        let mut more = Tally::default();
        more.alert();
        more.decision(Outcome::Discard);
        tally.merge(&more);
        m.observe_intake("alertmanager", &tally);
        m.observe_intake("alertmanager", &Tally::default());
        assert_eq!(m.alerts.snapshot()["alertmanager"], 2);
        assert_eq!(m.decisions[outcome_idx(Outcome::Run)].load(Relaxed), 1);
        assert_eq!(m.decisions[outcome_idx(Outcome::Discard)].load(Relaxed), 1);
    }
}
