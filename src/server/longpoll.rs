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

/// How long a holder has to show it is alive when another process asks for its agent id.
pub const CHALLENGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Which agent process holds each agent id. Two processes started with the
/// same `--id` would otherwise take the id from each other at every poll,
/// and each time the other's ops in flight would be lost. The first keeps
/// the id while it is alive; a newcomer is refused until the holder has
/// not been heard from for `CHALLENGE` after the newcomer first asked (its
/// parked poll is answered at once, so a live holder polls again at once).
/// A restarted agent thus takes its id over within a second or two.
#[derive(Default)]
pub struct Holders {
    by_agent: Mutex<HashMap<String, Holder>>,
}

struct Holder {
    instance: String,
    hostname: String,
    /// When it was last heard from (a poll, or a call about one of its ops).
    contact: Instant,
    /// A newcomer's instance and when it first asked.
    challenge: Option<(String, Instant)>,
}

/// What a poll from an agent process may do with its agent id.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// It holds the id: poll on.
    Held,
    /// Another process holds it; it is being asked whether it is alive.
    Checking {
        /// The holder's instance.
        instance: String,
        /// The holder's host.
        hostname: String,
    },
    /// Another process holds it and answered.
    InUse {
        /// The holder's instance.
        instance: String,
        /// The holder's host.
        hostname: String,
    },
}

impl Holders {
    /// A poll from `instance` (on `hostname`) for `agent` at `now`.
    pub fn claim(&self, agent: &str, instance: &str, hostname: &str, now: Instant) -> Claim {
        let mut map = self.by_agent.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = || Holder {
            instance: instance.to_string(),
            hostname: hostname.to_string(),
            contact: now,
            challenge: None,
        };
        let Some(h) = map.get_mut(agent) else {
            map.insert(agent.to_string(), fresh());
            return Claim::Held;
        };
        if h.instance == instance {
            h.contact = now;
            return Claim::Held;
        }
        let (holder, host) = (h.instance.clone(), h.hostname.clone());
        match &h.challenge {
            Some((who, since)) if who == instance && now >= *since + CHALLENGE => {
                if h.contact > *since {
                    // The holder was heard from since: it is alive.
                    h.challenge = Some((instance.to_string(), now));
                    Claim::InUse {
                        instance: holder,
                        hostname: host,
                    }
                } else {
                    *h = fresh();
                    Claim::Held
                }
            }
            Some((who, _)) if who == instance => Claim::Checking {
                instance: holder,
                hostname: host,
            },
            _ => {
                h.challenge = Some((instance.to_string(), now));
                Claim::Checking {
                    instance: holder,
                    hostname: host,
                }
            }
        }
    }

    /// A call about one of the agent's ops: its holder is alive.
    pub fn touch(&self, agent: &str, now: Instant) {
        let mut map = self.by_agent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get_mut(agent) {
            h.contact = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn checking(instance: &str, hostname: &str) -> Claim {
        Claim::Checking {
            instance: instance.into(),
            hostname: hostname.into(),
        }
    }

    #[test]
    fn a_newcomer_takes_an_id_only_from_a_silent_holder() {
        let h = Holders::default();
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        assert_eq!(h.claim("web-1", "a", "host-a", t), Claim::Held);
        assert_eq!(h.claim("web-1", "a", "host-a", ms(10)), Claim::Held);
        // A second process asks: the holder is asked, the newcomer waits.
        assert_eq!(
            h.claim("web-1", "b", "host-b", ms(100)),
            checking("a", "host-a")
        );
        assert_eq!(
            h.claim("web-1", "b", "host-b", ms(600)),
            checking("a", "host-a")
        );
        // The holder polls again: it is alive, the newcomer is refused.
        assert_eq!(h.claim("web-1", "a", "host-a", ms(150)), Claim::Held);
        assert_eq!(
            h.claim("web-1", "b", "host-b", ms(1200)),
            Claim::InUse {
                instance: "a".into(),
                hostname: "host-a".into()
            }
        );
        // A call about one of its ops counts too.
        h.touch("web-1", ms(1300));
        assert!(matches!(
            h.claim("web-1", "b", "host-b", ms(2300)),
            Claim::InUse { .. }
        ));
        // The holder goes silent: the newcomer takes over.
        assert_eq!(h.claim("web-1", "b", "host-b", ms(3300)), Claim::Held);
        // Now the old process is the newcomer.
        assert_eq!(
            h.claim("web-1", "a", "host-a", ms(3400)),
            checking("b", "host-b")
        );
        // Other ids are unaffected.
        assert_eq!(h.claim("web-2", "c", "host-c", ms(3400)), Claim::Held);
    }
}
