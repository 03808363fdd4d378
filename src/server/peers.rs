//! What servers sharing a PostgreSQL database tell each other, through
//! PostgreSQL's LISTEN/NOTIFY on the channel `heal`:
//!
//! - `wake AGENT…`: ops or checks were queued for agents whose polls wait
//!   on another server (`State::wake` tells the others after its commit);
//!   the server where one is parked claims them and answers it at once.
//! - `ask AGENT`: a process asks for an agent id another holds
//!   (`store::claim_agent`); the server where the holder's poll waits
//!   answers it, so a live holder polls again at once and shows it is.
//! - `probes`: a probe was registered, replaced or deleted through the API
//!   of one server; the leader's scheduler reads the probes again.
//!
//! Each server sends on one session of its own and listens on another
//! (`listen`, a thread). A notification is a hint, never the only way: an
//! agent not woken gets its work with its next poll, and the scheduler
//! reads the probes again at any config change. On SQLite nothing is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use crate::shutdown::Shutdown;

use super::State;

/// The channel every server listens on.
const CHANNEL: &str = "heal";

/// Most bytes of one notification's payload (PostgreSQL allows 8,000).
const MAX_PAYLOAD: usize = 7_000;

/// The sending side: the database's URL, when it is shared, and a session
/// opened at the first notification (and again after it fails).
pub struct Peers {
    url: Option<String>,
    session: Mutex<Option<postgres::Client>>,
}

impl Peers {
    /// `url` is the PostgreSQL database servers share, or None (SQLite).
    pub fn new(url: Option<String>) -> Peers {
        Peers {
            url,
            session: Mutex::new(None),
        }
    }

    /// Tells the other servers that work was queued for these agents.
    pub fn wake(&self, agents: &[String]) {
        let mut payload = String::from("wake");
        for agent in agents {
            if payload.len() + agent.len() + 1 > MAX_PAYLOAD {
                self.send(&payload);
                payload = String::from("wake");
            }
            payload.push(' ');
            payload.push_str(agent);
        }
        if payload.len() > "wake".len() {
            self.send(&payload);
        }
    }

    /// Tells the other servers that a process asks for `agent`'s id.
    pub fn ask(&self, agent: &str) {
        self.send(&format!("ask {agent}"));
    }

    /// Tells the other servers that the API changed a probe.
    pub fn probes_changed(&self) {
        self.send("probes");
    }

    fn send(&self, payload: &str) {
        let Some(url) = &self.url else { return };
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        if session.as_ref().is_none_or(postgres::Client::is_closed) {
            match crate::pg::connect(url) {
                Ok(client) => *session = Some(client),
                Err(e) => {
                    log::warn!("telling the other servers ({payload:.40}): {e}");
                    return;
                }
            }
        }
        let Some(client) = session.as_mut() else {
            return;
        };
        if let Err(e) = client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]) {
            log::warn!(
                "telling the other servers ({payload:.40}): {}",
                crate::pg::message(&e)
            );
            *session = None;
        }
    }
}

/// The listening thread: hands what other servers say to this one until
/// shutdown; connects again a second after its session fails.
pub fn listen(state: &Arc<State>, shutdown: &Shutdown) {
    let Some(url) = state.peers.url.clone() else {
        return;
    };
    while !shutdown.is_triggered() {
        let mut client = match crate::pg::connect(&url) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("listening to the other servers: {e}");
                if shutdown.wait(Duration::from_secs(1)) {
                    return;
                }
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            log::warn!("listening to the other servers: {}", crate::pg::message(&e));
            if shutdown.wait(Duration::from_secs(1)) {
                return;
            }
            continue;
        }
        while !shutdown.is_triggered() && !client.is_closed() {
            let mut notifications = client.notifications();
            let mut heard = notifications.timeout_iter(Duration::from_millis(250));
            loop {
                match heard.next() {
                    Ok(Some(n)) => hear(state, n.payload()),
                    Ok(None) => break,
                    Err(e) => {
                        log::warn!("listening to the other servers: {}", crate::pg::message(&e));
                        break;
                    }
                }
            }
        }
    }
}

fn hear(state: &Arc<State>, payload: &str) {
    let mut words = payload.split(' ');
    match words.next() {
        Some("wake") => {
            let agents: Vec<String> = words.map(str::to_string).collect();
            state.wake_here(&agents);
        }
        Some("ask") => {
            if let Some(agent) = words.next() {
                state.waiters.release(agent);
            }
        }
        Some("probes") => state.watch.probes_changed(),
        _ => log::debug!("another server said something this one does not know: {payload:.40}"),
    }
}
