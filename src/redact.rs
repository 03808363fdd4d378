//! Redaction wherever a secret or a URL could be shown (the config API,
//! pages, logs, audit, errors, probe results and notifications). Pure text
//! functions: `config` and `probe` both use them, so they sit below both.

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
