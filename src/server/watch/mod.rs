//! What heal watches by itself. One scheduler thread keeps time: every second
//! it sweeps heartbeats, agents and the breaker and ends mutes whose time has come; it starts probes when they
//! are due (run by a small pool, so a hung check holds no one up, or
//! offered to agents for probes with `on`: `checks`), fires
//! `[[schedule]]`s and runs retention once a day. A missed tick (the server
//! was stopped or stalled) is not replayed: the next time is computed from now.
//!
//! Whatever it notices becomes an internal alert (`HeartbeatMissing`,
//! `HeartbeatRuntimeExceeded`, `AgentDown`, `ProbeFailing`,
//! `SafetyBreakerOpen`) applied through `intake::apply`, so it meets the same
//! rules and decisions as any alert. `internal_alert` rows remember what is
//! raised, so each is raised once, re-raised every `renotify`, and resolved
//! when the cause goes away, across restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::sql::Db;

use super::intake::{self, Applied};
use super::{Shutdown, State};
use crate::alert::{Alert, Status};
use crate::config::{Config, Probe};
use crate::error::Result;
use crate::store::{self, Purge};
use crate::time::{format_duration, now_ms};

mod alerts;
mod checks;
mod probes;
mod sweeps;

pub use checks::{parse_result, record_result, Checks};
pub use probes::{defined_probes, resolve_probe, Defined};
pub use sweeps::{agents_forgotten, Known};

use alerts::{internal, submit};
use probes::{forget_removed_probes, probe_worker};
use sweeps::{
    agent_raises, breaker_raises, end_mutes, expire_agents, sweep_heartbeats, sweep_source, Defs,
};

/// Rows deleted per retention job.
const PURGE_BATCH: i64 = 2000;

/// Probe runs at once.
pub const PROBE_THREADS: usize = 4;

/// What the scheduler shares with the API.
#[derive(Default)]
pub struct Shared {
    /// The last heartbeat sweep: when, how many, how long (µs).
    pub last_sweep: Mutex<Option<(i64, usize, u64)>>,
    /// Probes running now.
    running: Mutex<HashSet<String>>,
    /// Parsed heartbeat definitions, shared by the sweep and the API.
    defs: Mutex<Defs>,
    /// Bumped when the API registers, replaces or deletes a probe: the
    /// scheduler then reads the probes again.
    api_probes: AtomicU64,
    /// The probes that run on agents.
    pub checks: Checks,
}

impl Shared {
    /// The parsed definition of a heartbeat row (an error if it does not validate).
    pub fn heartbeat(&self, row: &store::HeartbeatRow) -> std::result::Result<Arc<Known>, String> {
        self.lock_defs().get(&row.name, &row.def)
    }

    fn lock_defs(&self) -> std::sync::MutexGuard<'_, Defs> {
        self.defs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the scheduler a probe was registered, replaced or deleted (after its commit).
    pub fn probes_changed(&self) {
        self.api_probes.fetch_add(1, Ordering::SeqCst);
    }

    /// Marks a probe running; false if it already was.
    fn start_probe(&self, name: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string())
    }

    fn end_probe(&self, name: &str) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

// ---- schedules -----------------------------------------------------------------

fn fire_schedule(state: &Arc<State>, config: &Arc<Config>, idx: usize, due: i64) {
    let (config, st2) = (config.clone(), state.clone());
    let name = config.schedules[idx].name.clone();
    submit(state, &format!("schedule {name}"), move |conn| {
        let s = &config.schedules[idx];
        if !store::claim_schedule_fire(conn, &s.name, due)? {
            return Ok(Applied::default());
        }
        let now = now_ms();
        let labels = BTreeMap::from([("schedule".to_string(), s.name.clone())]);
        let notes = BTreeMap::from([(
            "summary".to_string(),
            format!("scheduled run of {} ({})", s.name, s.schedule),
        )]);
        let alert = internal("ScheduledRun", labels, notes, due);
        let eval = crate::rules::evaluate_schedule(&config, s.rule_idx, &alert);
        let applied = intake::apply(
            conn,
            &config,
            &st2.waiters,
            std::slice::from_ref(&alert),
            &[Some(eval)],
            now,
        )?;
        // The run is an event of its own; the alert that stands for it ends at once.
        let resolved = Alert {
            status: Status::Resolved,
            ends_at: Some(now),
            ..alert
        };
        store::record_alert(conn, &resolved, now)?;
        Ok(applied)
    });
}

// ---- retention -----------------------------------------------------------------

fn retention(state: &Arc<State>, shutdown: &Shutdown) {
    let r = state.config().retention;
    let now = now_ms();
    let jobs = [
        (Purge::Pings, r.pings, "pings"),
        (Purge::ProbeResults, r.probe_results, "probe results"),
        (Purge::Decisions, r.events, "decisions"),
        (Purge::Events, r.events, "finished events"),
        (Purge::Notifications, r.events, "notifications"),
    ];
    for (what, keep, label) in jobs {
        let cutoff = now - keep.as_millis() as i64;
        let mut total = 0;
        // Small batches: each is one short store job, so intake is never held up for long.
        for _ in 0..100_000 {
            if shutdown.is_triggered() {
                return;
            }
            match state
                .writer
                .write(move |conn| store::purge(conn, what, cutoff, PURGE_BATCH))
            {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    log::error!("retention of {label}: {e}");
                    break;
                }
            }
        }
        if total > 0 {
            log::info!(
                "retention: deleted {total} {label} older than {}",
                format_duration(keep)
            );
        }
    }
}

// ---- the scheduler thread -------------------------------------------------------

/// The times things are next due.
struct Due {
    config: Option<Arc<Config>>,
    /// `Shared::api_probes` when the probes were last read.
    api_probes: u64,
    /// The probes run: the file's and the API's.
    defs: BTreeMap<String, Probe>,
    probes: HashMap<String, i64>,
    schedules: HashMap<String, i64>,
}

impl Due {
    /// After a start or reload: keeps the times of unchanged names, computes the rest.
    fn refresh(
        &mut self,
        state: &Arc<State>,
        config: &Arc<Config>,
        reader: Db<'_>,
        now: i64,
        leads: bool,
    ) {
        self.api_probes = state.watch.api_probes.load(Ordering::SeqCst);
        let defined = match defined_probes(reader, config) {
            Ok(d) => d,
            Err(e) => {
                // Read again at the next tick.
                log::error!("scheduler: reading the probes: {e}");
                self.api_probes = self.api_probes.wrapping_sub(1);
                return;
            }
        };
        let mut defs = BTreeMap::new();
        for (name, d) in defined {
            match d.probe {
                Ok(p) => {
                    defs.insert(name, p);
                }
                Err(e) => log::error!("probe {name} (registered through the API) is not run: {e}"),
            }
        }
        self.defs = defs;
        let mut probes = HashMap::new();
        for (name, p) in &self.defs {
            // A new probe runs at once, then on its schedule.
            let at = self.probes.get(name).copied().unwrap_or(now);
            probes.insert(
                name.clone(),
                at.min(p.schedule.next_after(now).unwrap_or(i64::MAX)),
            );
        }
        self.probes = probes;
        let mut schedules = HashMap::new();
        for s in &config.schedules {
            let last = store::schedule_last_fire(reader, &s.name)
                .ok()
                .flatten()
                .unwrap_or(now);
            let from = last.max(now);
            // A schedule unchanged by a reload keeps its next time.
            let unchanged = self.config.as_ref().is_some_and(|old| {
                old.schedules
                    .iter()
                    .any(|o| o.name == s.name && o.schedule == s.schedule)
            });
            let kept = self.schedules.get(&s.name).copied().filter(|_| unchanged);
            if let Some(at) = kept.or_else(|| s.schedule.next_after(from)) {
                schedules.insert(s.name.clone(), at);
            }
        }
        self.schedules = schedules;
        let on_agents: BTreeMap<String, Probe> = self
            .defs
            .iter()
            .filter(|(_, p)| p.on.is_some())
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        let names = on_agents.keys().cloned().collect();
        state.watch.checks.set(on_agents);
        if leads {
            forget_removed_probes(state, config, self.defs.keys().cloned().collect(), names);
        }
        self.config = Some(config.clone());
    }
}

/// Writes the heartbeats of a config being applied to the store (adding,
/// updating, and removing those the file no longer has), drops the API
/// probes the file now defines, forgets the mutes of probes no longer
/// defined, and logs what changed. Runs in the store job that records the config, at start and on
/// each reload, so a heartbeat of the file can be pinged as soon as heal
/// answers for that config.
pub fn sync_heartbeats(conn: Db<'_>, config: &Config, now: i64) -> Result<()> {
    let defs: Vec<(String, String)> = config
        .heartbeats
        .values()
        .map(|h| (h.name.clone(), h.def.clone()))
        .collect();
    let probes: Vec<&str> = config.probes.keys().map(String::as_str).collect();
    for line in store::sync_heartbeats(conn, &defs, now)?
        .into_iter()
        .chain(store::drop_api_probes_in_file(conn, &probes)?)
        .chain(store::forget_probe_mutes(conn, &probes)?)
    {
        log::info!("{line}");
    }
    Ok(())
}

/// A round slower than this is logged with where its time went.
const SLOW_ROUND: Duration = Duration::from_millis(50);

/// The parts of one scheduler round and how long each took.
struct Phases {
    last: Instant,
    started: Instant,
    took: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn new(started: Instant) -> Phases {
        Phases {
            last: started,
            started,
            took: Vec::new(),
        }
    }

    /// Ends the part `what` now.
    fn mark(&mut self, what: &'static str) {
        let now = Instant::now();
        self.took.push((what, now - self.last));
        self.last = now;
    }

    fn log_if_slow(&self) {
        let total = self.started.elapsed();
        if total < SLOW_ROUND {
            return;
        }
        let parts: Vec<String> = self
            .took
            .iter()
            .map(|(what, d)| format!("{what} {:.1} ms", d.as_secs_f64() * 1e3))
            .collect();
        log::warn!(
            "scheduler: a round took {:.1} ms ({}); probes, schedules and sweeps wait meanwhile",
            total.as_secs_f64() * 1e3,
            parts.join(", ")
        );
    }
}

/// The scheduler thread, with its probe pool.
pub fn scheduler(state: &Arc<State>, shutdown: &Shutdown) {
    // Unbounded: a probe is queued at most once at a time (`start_probe`),
    // so the queue holds at most one run per probe, and a thousand probes
    // due together wait their turn instead of being skipped.
    let (tx, rx): (Sender<Probe>, Receiver<Probe>) = std::sync::mpsc::channel();
    let rx = Mutex::new(rx);
    let offers = checks::Offers::default();
    std::thread::scope(|s| {
        for _ in 0..PROBE_THREADS {
            s.spawn(|| probe_worker(state, &rx));
        }
        s.spawn(|| checks::offer_worker(state, &offers));
        keep_time(state, shutdown, &tx, &offers);
        drop(tx);
        offers.close();
    });
}

fn keep_time(
    state: &Arc<State>,
    shutdown: &Shutdown,
    probes: &Sender<Probe>,
    offers: &checks::Offers,
) {
    let mut reader: Option<crate::store::Conn> = None;
    let mut due = Due {
        config: None,
        api_probes: 0,
        defs: BTreeMap::new(),
        probes: HashMap::new(),
        schedules: HashMap::new(),
    };
    let mut next_sweep = 0;
    // The first retention run comes a few minutes after start, then daily.
    let mut next_retention = now_ms() + 5 * 60_000;
    loop {
        if shutdown.is_triggered() {
            return;
        }
        if reader.as_ref().is_some_and(crate::store::Conn::is_closed) {
            reader = None;
        }
        let conn = match &reader {
            Some(c) => c.db(),
            None => match state.location.open() {
                Ok(c) => reader.insert(c).db(),
                Err(e) => {
                    log::error!("scheduler: {e}");
                    if shutdown.wait(Duration::from_secs(1)) {
                        return;
                    }
                    continue;
                }
            },
        };
        let round = Instant::now();
        let config = state.config();
        let now = now_ms();
        let leads = state.leadership.leads();
        if due.config.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &config))
            || due.api_probes != state.watch.api_probes.load(Ordering::SeqCst)
        {
            due.refresh(state, &config, conn, now, leads);
        }
        if !leads {
            // The leader keeps time. This server knows the probes all the
            // same: the agent-side ones are handed out by whichever server
            // an agent polls.
            if shutdown.wait(Duration::from_secs(1)) {
                return;
            }
            continue;
        }
        let mut phases = Phases::new(round);
        phases.mark("config");
        let swept = now >= next_sweep;
        if swept {
            next_sweep = now + 1000;
            for (what, r) in [
                ("heartbeats", sweep_heartbeats(state, conn)),
                ("silent agents", expire_agents(state, conn)),
                ("mutes", end_mutes(state, conn)),
                ("agents", sweep_source(state, conn, "agent", agent_raises)),
                (
                    "breaker",
                    sweep_source(state, conn, "breaker", |c, _, n| breaker_raises(c, n)),
                ),
            ] {
                if let Err(e) = r {
                    log::error!("checking {what}: {e}");
                }
            }
        }
        phases.mark("sweeps");
        let mut on_agents = Vec::new();
        for (name, at) in due.probes.iter_mut() {
            if *at > now {
                continue;
            }
            let p = &due.defs[name];
            if p.on.is_some() {
                on_agents.push((p.clone(), Some(*at)));
                *at = p.schedule.next_after(now).unwrap_or(i64::MAX);
                continue;
            }
            *at = p.schedule.next_after(now).unwrap_or(i64::MAX);
            if !state.watch.start_probe(name) {
                state.metrics.observe_probe_skipped(false, 1);
                log::warn!("probe {name}: still running from last time; this run is skipped");
                continue;
            }
            if probes.send(p.clone()).is_err() {
                // The probe threads have stopped: heal is shutting down.
                state.watch.end_probe(name);
            }
        }
        if swept {
            // Agents new to a probe get a first run; down ones turn unknown.
            for p in due.defs.values().filter(|p| p.on.is_some()) {
                if !on_agents.iter().any(|(d, _)| d.name == p.name) {
                    on_agents.push((p.clone(), None));
                }
            }
        }
        phases.mark("server probes");
        if !on_agents.is_empty() {
            offers.push(on_agents);
        }
        phases.mark("agent checks");
        for (idx, s) in config.schedules.iter().enumerate() {
            let Some(at) = due.schedules.get_mut(&s.name) else {
                continue;
            };
            if *at > now {
                continue;
            }
            if now - *at > 60_000 {
                log::warn!(
                    "schedule {}: the run due at {} was missed and is skipped",
                    s.name,
                    crate::time::format_rfc3339(*at)
                );
            } else {
                fire_schedule(state, &config, idx, *at);
            }
            *at = s.schedule.next_after(now).unwrap_or(i64::MAX);
        }
        phases.mark("schedules");
        state.metrics.observe_scheduler_round(round.elapsed());
        phases.log_if_slow();
        if now >= next_retention {
            next_retention = now + 86_400_000;
            retention(state, shutdown);
        }
        let next = due
            .probes
            .values()
            .chain(due.schedules.values())
            .copied()
            .chain([next_sweep])
            .min()
            .unwrap_or(next_sweep);
        let wait = (next - now_ms()).clamp(10, 1000);
        if shutdown.wait(Duration::from_millis(wait as u64)) {
            return;
        }
    }
}
