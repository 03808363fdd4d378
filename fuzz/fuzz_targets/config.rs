//! `heal check-config`, `heal serve` and a reload: any text through
//! `config::parse`; a valid config through what the API shows of it, and
//! through the decisions on sample alerts and what the scheduler computes
//! (heartbeat states, when probes and schedules are due, a schedule's run),
//! since the runtime must cope with anything validation lets through.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| heal_fuzz::on_server_stack(|| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = heal::config::parse(Path::new("runbooks.toml"), text) {
        let _ = heal::config::summary(&config);
        let _ = heal::config::redacted(&config);
        let (alerts, ctx) = &*heal_fuzz::SAMPLE;
        heal_fuzz::intake(&config, alerts, ctx);
        heal_fuzz::watch(&config, ctx, heal_fuzz::now(ctx));
    }
}));
