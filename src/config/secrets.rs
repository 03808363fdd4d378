//! Secrets in and out: `${ENV}` expansion where the file asks for it, and
//! redaction wherever a secret or a URL could be shown (the config API,
//! pages, logs, audit, errors and notifications).

use super::Config;

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

/// `https://hooks.slack.com/services/T0/B0/XXX` → `https://hooks.slack.com/…`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}/…")
}

/// A URL as heal shows it wherever it appears (the config API, pages, logs,
/// audit, errors, probe results and the notifications that carry them): the
/// user and password and every query value become `<redacted>`; scheme,
/// host, port, path and the query's names stay, so people still see what is
/// checked. A URL that is a secret as a whole (a channel's, the watchdog's)
/// is shown by `redact_url` instead, which keeps only the host.
pub fn redact_url_secrets(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, _)) => (rest, "#<redacted>"),
        None => (rest, ""),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("<redacted>@{host}"),
        None => authority.to_string(),
    };
    let mut shown = format!("{scheme}{authority}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=<redacted>"),
                None if pair.is_empty() => String::new(),
                None => "<redacted>".to_string(),
            })
            .collect();
        shown = format!("{shown}?{}", pairs.join("&"));
    }
    shown + fragment
}

/// Replaces every secret in `text` by `<redacted>`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s, "<redacted>");
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_to_their_host() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact_url("http://u:p@h:1/x?y"), "http://h:1/…");
        for (url, shown) in [
            (
                "http://user:PASS@host:8080/health?apikey=KEY&x=1",
                "http://<redacted>@host:8080/health?apikey=<redacted>&x=<redacted>",
            ),
            ("https://a:b@c@host/", "https://<redacted>@host/"),
            (
                "http://host/p?SECRET#frag",
                "http://host/p?<redacted>#<redacted>",
            ),
            ("http://host:9090", "http://host:9090"),
            ("http://host/a@b", "http://host/a@b"),
        ] {
            assert_eq!(redact_url_secrets(url), shown, "{url}");
        }
        assert_eq!(
            redact("err at https://x/SECRET", &["SECRET"]),
            "err at https://x/<redacted>"
        );
    }
}
