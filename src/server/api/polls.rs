//! The agents' side: a poll parked until work comes or answered at once,
//! which process holds an agent id, and the calls about one op.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::sql::Db;
use serde_json::Value;
use tiny_http::Request;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::{self, AgentHello};
use crate::time::now_ms;

use super::request::{query_param, read_json};
use super::Answer;
use crate::server::longpoll::{respond_ops, Claim, Parked};
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

/// Claims queued ops and offered checks for the agent, or parks the poll
/// until work arrives or the wait ends. Both happen inside one store job, so no op queued by
/// another request can fall between the two.
pub(super) fn park_or_answer(
    request: Request,
    agent: String,
    poll: PollRequest,
    state: &Arc<State>,
) -> u16 {
    let state2 = state.clone();
    let checks = state.watch.checks.any();
    let handed = state.writer.write(move |conn| {
        let now = now_ms();
        store::touch_agent(conn, &agent, &poll.hello, now)?;
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
            return Ok(None);
        }
        Ok(Some((request, claimed, runs)))
    });
    match handed {
        Ok(Some((request, claimed, runs))) => {
            respond_ops(request, &claimed, &state.watch.checks.specs(&runs))
        }
        Ok(None) => {}
        // The request was dropped with the failed job: tiny_http answers it with a 500 and the agent polls again.
        Err(e) => {
            log::error!("poll: {e}");
            return 500;
        }
    }
    200
}

/// Whether the polling process may hold its agent id (see `longpoll::Holders`);
/// a refused one learns who holds it.
pub(super) fn holder(state: &State, agent: &str, hello: &AgentHello) -> Result<()> {
    let claim = state
        .holders
        .claim(agent, &hello.instance, &hello.hostname, Instant::now());
    let (instance, hostname, alive) = match claim {
        Claim::Held => return Ok(()),
        Claim::Checking { instance, hostname } => (instance, hostname, false),
        Claim::InUse { instance, hostname } => (instance, hostname, true),
    };
    // A live holder with a parked poll polls again at once when it is answered.
    if let Some(parked) = state.waiters.take(agent) {
        if parked.instance == instance {
            respond_ops(parked.request, &[], &[]);
        } else {
            state.waiters.put_back(agent, parked);
        }
    }
    if !alive {
        return Err(Error::request(
            409,
            format!("agent id {agent:?} is held by another process (instance {instance}, host {hostname:?}); checking that it is still there: poll again in a second"),
        ));
    }
    log::warn!(
        "agent id {agent:?}: a second process (instance {}, host {:?}) polls while instance {instance} on host {hostname:?} holds the id; refused: give each agent its own --id",
        hello.instance,
        hello.hostname
    );
    Err(Error::request(
        409,
        format!("agent id {agent:?} is in use by a live agent (instance {instance}, host {hostname:?}): give each agent its own --id"),
    ))
}

pub(super) fn op_call(
    state: &Arc<State>,
    agent: String,
    op: i64,
    f: impl FnOnce(Db<'_>, &store::OpRef, i64) -> Result<(u16, Value)> + Send + 'static,
) -> Answer {
    state.holders.touch(&agent, Instant::now());
    let answer = state.writer.write(move |conn| {
        if !store::agent_known(conn, &agent)? {
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
