//! Parked agent polls. A poll that finds no work does not hold an HTTP
//! worker: its `tiny_http::Request` is parked here and answered later by
//! whoever queues work for that agent (inside the same store job, so no op
//! slips between "nothing queued" and "parked") or by the sweeper when the
//! wait ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use crate::store::Claimed;

/// A poll waiting for work.
pub struct Parked {
    /// The request to answer.
    pub request: tiny_http::Request,
    /// The agent process that sent it.
    pub instance: String,
    /// Ops it can take.
    pub capacity: usize,
    /// When to answer with nothing.
    pub deadline: Instant,
}

/// Parked polls by agent id.
#[derive(Default)]
pub struct Waiters {
    by_agent: Mutex<HashMap<String, Parked>>,
}

impl Waiters {
    /// Parks a poll; an earlier poll of the same agent is answered empty (the agent moved on).
    pub fn park(&self, agent: &str, parked: Parked) {
        let old = self.lock().insert(agent.to_string(), parked);
        if let Some(old) = old {
            respond_ops(old.request, &[], &[]);
        }
    }

    /// Takes the parked poll of an agent, if any.
    pub fn take(&self, agent: &str) -> Option<Parked> {
        self.lock().remove(agent)
    }

    /// Answers the agent's parked poll, if any, with nothing, so its agent
    /// polls again at once; whether there was one.
    pub fn release(&self, agent: &str) -> bool {
        match self.take(agent) {
            Some(parked) => {
                respond_ops(parked.request, &[], &[]);
                true
            }
            None => false,
        }
    }

    /// Puts back a poll that was taken but not used.
    pub fn put_back(&self, agent: &str, parked: Parked) {
        self.park(agent, parked)
    }

    /// Answers every poll whose wait has ended (or all of them) with no work.
    pub fn expire(&self, now: Instant, all: bool) -> usize {
        let expired: Vec<Parked> = {
            let mut map = self.lock();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, p)| all || p.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        let n = expired.len();
        for p in expired {
            respond_ops(p.request, &[], &[]);
        }
        n
    }

    /// Forgets the poll that came over the HTTP server's connection from `port`
    /// (its client went away): no op will be handed to it.
    pub fn forget_port(&self, port: u16) {
        let forgotten: Vec<(String, Parked)> = {
            let mut map = self.lock();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, p)| p.request.remote_addr().map(|a| a.port()) == Some(port))
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| map.remove(&id).map(|p| (id, p)))
                .collect()
        };
        // Dropped outside the lock: tiny_http answers a dropped request itself.
        for (id, _) in forgotten {
            log::debug!("agent {id}: the connection of its waiting poll closed");
        }
    }

    /// Agents with a poll parked now.
    pub fn connected(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parked>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and removes).
        self.by_agent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The poll answer: `{"ops": [...], "checks": [...]}`, each op's id added
/// to its spec; `checks` are runs of agent-side probes (`watch::Checks::specs`).
pub fn ops_body(claimed: &[Claimed], checks: &[Value]) -> Value {
    let ops: Vec<Value> = claimed
        .iter()
        .map(|c| {
            let mut spec = c.spec.clone();
            spec["id"] = json!(c.id);
            spec["event_id"] = json!(c.event_id);
            spec
        })
        .collect();
    json!({ "ops": ops, "checks": checks })
}

/// Answers a poll with ops and checks (possibly none).
pub fn respond_ops(request: tiny_http::Request, claimed: &[Claimed], checks: &[Value]) {
    let response = super::api::json_response(200, &ops_body(claimed, checks));
    if let Err(e) = request.respond(response) {
        if !claimed.is_empty() {
            let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
            log::warn!("could not hand ops {ids:?} to their agent ({e}); they become lost when their lease ends");
        }
        if !checks.is_empty() {
            log::warn!("could not hand {} checks to their agent ({e}); they are offered again at their next due time", checks.len());
        }
    }
}
