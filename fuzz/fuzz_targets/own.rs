//! `POST /api/v1/alerts`: heal's own alert format through `alert::from_own`,
//! then the rules as intake runs them; and `alert::from_any`, which reads
//! the sample files of `heal run-rule` and `heal fire`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| heal_fuzz::on_server_stack(|| {
    let Some(body) = heal_fuzz::json(data) else {
        return;
    };
    if let Ok(alerts) = heal::alert::from_own(&body) {
        heal_fuzz::intake(&heal_fuzz::CONFIG, &alerts, &Value::Null);
    }
    let _ = heal::alert::from_any(&body);
}));
