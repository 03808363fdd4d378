//! The agents' side: a poll parked until work comes or answered at once,
//! refused when another process holds its agent id, and the calls about
//! one op.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::sql::Db;
use serde_json::Value;
use tiny_http::Request;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::{self, AgentHello, Claim};
use crate::time::now_ms;

use super::request::{query_param, read_json};
use super::Answer;
use crate::server::longpoll::{respond_ops, Parked};
use crate::server::State;

pub(super) struct PollRequest {
    pub(super) hello: AgentHello,
    pub(super) capacity: usize,
    pub(super) wait: Duration,
    pub(super) lease_ms: i64,
}

pub(super) fn poll_request(
    request: &mut Request,
    agent: &str,
    query: &str,
    config: &Config,
) -> Result<PollRequest> {
    crate::rules::check_agent_id(agent).map_err(|e| Error::request(400, e))?;
    let body = read_json(request, config.server.max_body)?;
    let hello: AgentHello =
        serde_json::from_value(body).map_err(|e| Error::request(422, format!("poll: {e}")))?;
    if hello.instance.is_empty() || hello.instance.len() > 128 {
        return Err(Error::request(
            422,
            "poll: \"instance\" must be 1 to 128 characters",
        ));
    }
    let whole = |name: &str, unit: &str| -> Result<Option<u64>> {
        query_param(query, name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    let e = format!("poll: {name}: {v:?} is not a whole number of {unit}");
                    Error::request(400, e)
                })
            })
            .transpose()
    };
    // An agent may run more at once than one poll hands it.
    let capacity = whole("capacity", "ops")?.unwrap_or(1).clamp(1, 256) as usize;
    let wait = whole("wait", "seconds")?
        .map(Duration::from_secs)
        .unwrap_or(config.server.poll_wait)
        .min(config.server.poll_wait);
    Ok(PollRequest {
        hello,
        capacity,
        wait,
        lease_ms: config.server.lease.as_millis() as i64,
    })
}

/// What became of a poll.
pub(super) enum Polled {
    /// Answered or parked; the status for the request log.
    Done(u16),
    /// Another process holds the agent id: the request, to answer with the error.
    Refused(Box<(Request, Error)>),
}

/// Claims queued ops and offered checks for the agent, or parks the poll
/// until work arrives or the wait ends. Both happen inside one store job, so no op queued by
/// another request can fall between the two. The same job first decides
/// whether the polling process may hold its agent id (`store::claim_agent`).
pub(super) fn park_or_answer(
    request: Request,
    agent: String,
    poll: PollRequest,
    state: &Arc<State>,
) -> Polled {
    let state2 = state.clone();
    let checks = state.watch.checks.any();
    let id = agent.clone();
    let newcomer = (poll.hello.instance.clone(), poll.hello.hostname.clone());
    let handed = state.writer.write(move |conn| {
        let now = now_ms();
        let claim = store::claim_agent(conn, &agent, &poll.hello, now, store::CHALLENGE_MS)?;
        if claim != Claim::Held {
            return Ok(Handed::Refused(request, claim));
        }
        let claimed = store::claim_ops(
            conn,
            &agent,
            &poll.hello.instance,
            poll.capacity,
            now + poll.lease_ms,
            now,
        )?;
        let runs = match checks {
            true => store::claim_checks(conn, &agent, now)?,
            false => Vec::new(),
        };
        if claimed.is_empty() && runs.is_empty() && !poll.wait.is_zero() {
            let parked = Parked {
                request,
                instance: poll.hello.instance,
                capacity: poll.capacity,
                deadline: Instant::now() + poll.wait,
            };
            state2.waiters.park(&agent, parked);
            return Ok(Handed::Parked);
        }
        Ok(Handed::Now(request, claimed, runs))
    });
    match handed {
        Ok(Handed::Now(request, claimed, runs)) => {
            respond_ops(request, &claimed, &state.watch.checks.specs(&runs));
            Polled::Done(200)
        }
        Ok(Handed::Parked) => Polled::Done(200),
        Ok(Handed::Refused(request, claim)) => {
            Polled::Refused(Box::new((request, refused(state, &id, &newcomer, claim))))
        }
        // The request was dropped with the failed job: tiny_http answers it with a 500 and the agent polls again.
        Err(e) => {
            log::error!("poll: {e}");
            Polled::Done(500)
        }
    }
}

/// What the poll's store job did with it.
enum Handed {
    Now(Request, Vec<store::Claimed>, Vec<(String, i64)>),
    Parked,
    Refused(Request, Claim),
}

/// The answer to a process refused its agent id; the holder's waiting poll,
/// on this server or another, is answered, so a live holder polls again at
/// once and shows it is alive.
fn refused(state: &State, agent: &str, newcomer: &(String, String), claim: Claim) -> Error {
    let (instance, hostname, alive) = match claim {
        Claim::Checking { instance, hostname } => (instance, hostname, false),
        Claim::InUse { instance, hostname } => (instance, hostname, true),
        Claim::Held => unreachable!("a held id is not refused"),
    };
    state.ask_holder(agent);
    if !alive {
        return Error::request(
            409,
            format!("agent id {agent:?} is held by another process (instance {instance}, host {hostname:?}); checking that it is still there: poll again in a second"),
        );
    }
    log::warn!(
        "agent id {agent:?}: a second process (instance {}, host {:?}) polls while instance {instance} on host {hostname:?} holds the id; refused: give each agent its own --id",
        newcomer.0,
        newcomer.1
    );
    Error::request(
        409,
        format!("agent id {agent:?} is in use by a live agent (instance {instance}, host {hostname:?}): give each agent its own --id"),
    )
}

pub(super) fn op_call(
    state: &Arc<State>,
    agent: String,
    op: i64,
    f: impl FnOnce(Db<'_>, &store::OpRef, i64) -> Result<(u16, Value)> + Send + 'static,
) -> Answer {
    let answer = state.writer.write(move |conn| {
        if !store::heard_from(conn, &agent)? {
            return Err(Error::request(
                404,
                format!("unknown agent {agent:?}: it has never polled this server"),
            ));
        }
        let Some(op_ref) = store::op_ref(conn, op)? else {
            return Err(Error::request(404, format!("no op {op}")));
        };
        if op_ref.agent != agent {
            return Err(Error::request(
                403,
                format!("op {op} belongs to agent {:?}, not {agent:?}", op_ref.agent),
            ));
        }
        f(conn, &op_ref, now_ms())
    })?;
    Ok(answer)
}
