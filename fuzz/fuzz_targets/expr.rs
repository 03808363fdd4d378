//! A JMESPath expression as heal compiles it (`config::Expr::compile`: a
//! rule's `when`, `key`, `target`, `params`, `unless`, a route's `when`, and
//! the `match` of a pause from `POST /api/v1/pauses`), then evaluated over
//! the sample alerts as `when` is, over their guard document as `unless`
//! is, and as a pause's `match` is (`rules::pause_covers`).
#![no_main]

use heal::config::{doc, Expr};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| heal_fuzz::on_server_stack(|| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = Expr::compile(source) else {
        return;
    };
    let (alerts, ctx) = &*heal_fuzz::SAMPLE;
    for alert in alerts {
        let alert_doc = doc(alert.doc());
        let _ = expr.eval(&alert_doc);
        let _ = expr.truthy(&heal::rules::guard_doc(alert, ctx));
        let pause = json!({ "match": source });
        let _ = heal::rules::pause_covers(&pause, "clean", &["web-1".to_string()], &alert_doc);
    }
}));
