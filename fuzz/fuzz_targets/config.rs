//! `heal check-config`, `heal serve` and a reload: any text through
//! `config::parse`, and a valid result through what the API shows of it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = heal::config::parse(Path::new("runbooks.toml"), text) {
        let _ = heal::config::summary(&config);
        let _ = heal::config::redacted(&config);
    }
});
