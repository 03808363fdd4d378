//! The decision: alerts in heal's own format, `{"alerts": [...]}`, with a
//! `"context"` beside them in the shape of `GET /api/v1/context` (what the
//! store knows: events, pauses, agents, the breaker, other alerts). The
//! rules of the fixed config are evaluated (`rules::evaluate`), their facts
//! read (`rules::facts`), the `unless` guards evaluated over the context and
//! each match decided (`rules::decide`), and a run's plan built.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| heal_fuzz::on_server_stack(|| {
    let Some(body) = heal_fuzz::json(data) else {
        return;
    };
    let ctx = body.get("context").cloned().unwrap_or(Value::Null);
    if let Ok(alerts) = heal::alert::from_own(&body) {
        heal_fuzz::intake(&heal_fuzz::CONFIG, &alerts, &ctx);
    }
}));
