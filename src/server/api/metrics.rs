//! `GET /metrics` on the wire: the counters of `server::metrics` and the
//! gauges read now from the store, in Prometheus' text format.

use tiny_http::{Header, Method, Request, Response};

use super::{answer, reader, send};
use crate::server::metrics::CONTENT_TYPE;
use crate::server::State;
use crate::store;
use crate::time::now_ms;

/// Answers a scrape; returns the status it was answered with.
pub(super) fn scrape(
    request: Request,
    method: &Method,
    path: &str,
    state: &State,
    conn: &mut Option<crate::store::Conn>,
) -> u16 {
    let config = state.config();
    let down_after = i64::try_from(config.server.agent_down_after.as_millis()).unwrap_or(i64::MAX);
    let figures = reader(state, conn).and_then(|c| {
        let figures = store::figures(c, now_ms(), down_after)?;
        Ok((figures, crate::server::replicas::list(state, c)?))
    });
    match figures {
        Ok((figures, replicas)) => {
            let connected = state.waiters.connected().len();
            let leads = state.leadership.leads();
            let text = state
                .metrics
                .render(&config, &figures, connected, &replicas, leads);
            let header =
                Header::from_bytes("Content-Type", CONTENT_TYPE).expect("a static header is valid");
            send(
                request,
                Response::from_string(text).with_header(header),
                method,
                path,
            );
            200
        }
        Err(e) => answer(request, method, path, Err(e)),
    }
}
