//! `POST /api/v1/alerts/alertmanager`: an Alertmanager webhook body through
//! `alert::from_alertmanager`, then the rules as intake runs them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| heal_fuzz::on_server_stack(|| {
    let Some(body) = heal_fuzz::json(data) else {
        return;
    };
    if let Ok(alerts) = heal::alert::from_alertmanager(&body) {
        heal_fuzz::intake(&heal_fuzz::CONFIG, &alerts, &Value::Null);
    }
}));
