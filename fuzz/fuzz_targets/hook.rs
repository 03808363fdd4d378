//! `POST /hooks/<source>`: any JSON body mapped by each `[[source]]` of the
//! fixed config through `alert::from_source`, then the rules as intake runs them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| heal_fuzz::on_server_stack(|| {
    let Some(body) = heal_fuzz::json(data) else {
        return;
    };
    for source in heal_fuzz::CONFIG.sources.values() {
        if let Ok(alerts) = heal::alert::from_source(source, &body) {
            heal_fuzz::intake(&heal_fuzz::CONFIG, &alerts, &Value::Null);
        }
    }
}));
