//! Secrets in and out: `${ENV}` expansion where the file asks for it, and
//! the running config with its secrets redacted (the text and URL
//! redaction itself is `crate::redact`, which `probe` uses too).

use super::Config;
use crate::redact::redact_url_secrets;

/// Expands `${NAME}` from the environment; an unset variable is an error.
pub fn expand_env(text: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?
            + start;
        let name = &rest[start + 2..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Keys whose values are secrets, wherever they stand in the file.
const SECRET_KEYS: &[&str] = &[
    "secret",
    "secret_sha256",
    "webhook_url",
    "routing_key",
    "api_key",
    "ping_key",
    "ping_key_sha256",
    "headers",
    "watchdog_url",
    "password",
];

/// The running file as JSON with every secret value replaced by
/// `"<redacted>"` (and a webhook's `url`, which often holds a token), and
/// the user, password and query values of every other URL too
/// (`redact_url_secrets`: a probe's `http.url`, `prometheus.url`,
/// `public_url`, `runbook_url`).
pub fn redacted(config: &Config) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value, in_webhook: bool) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if SECRET_KEYS.contains(&k.as_str()) || (in_webhook && k == "url") {
                        *val = serde_json::Value::String("<redacted>".into());
                    } else if let (true, Some(url)) =
                        (k == "url" || k.ends_with("_url"), val.as_str())
                    {
                        *val = serde_json::Value::String(redact_url_secrets(url));
                    } else {
                        walk(val, k == "webhook");
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, in_webhook)),
            _ => {}
        }
    }
    let mut v = toml::from_str::<toml::Value>(&config.text)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(serde_json::Value::Null);
    walk(&mut v, false);
    v
}
