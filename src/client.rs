//! A small blocking client for heal's HTTP API, used by the agent and the
//! thin CLI commands (`fire`, `events`, `agents`). Bearer token, JSON in and
//! out; errors name the URL and, for refused requests, the server's reason.
//!
//! A client may know several servers (replicas on one database): a request
//! goes to the one in use; when it does not answer (no connection, a reset,
//! a timeout) or answers 502/503/504, the next in the list gets the same
//! request, and the first that answers is used from then on. Any other
//! answer is final.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::redact::redact_url_secrets;

/// Default server URL when neither --server nor HEAL_SERVER is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// The servers a client may use, and which one it uses now. Shared by the
/// clients of one agent, so polls, acknowledgements and results all go to
/// the same server.
#[derive(Debug)]
pub struct Servers {
    urls: Vec<String>,
    current: AtomicUsize,
}

impl Servers {
    /// Reads `--server` values (each a comma-separated list) as given by
    /// `source` (`--server` or `HEAL_SERVER`, for the error): no empty
    /// entry, only http(s) URLs, none twice.
    pub fn parse(values: &[String], source: &str) -> Result<Servers> {
        let mut urls: Vec<String> = Vec::new();
        for entry in values.iter().flat_map(|v| v.split(',')) {
            let entry = entry.trim();
            let fix = match source {
                "HEAL_SERVER" => "Try: HEAL_SERVER=http://heal-1:7878,http://heal-2:7878",
                _ => "Try: --server http://heal-1:7878,http://heal-2:7878",
            };
            if entry.is_empty() {
                return Err(Error::Usage(format!(
                    "{source}: empty entry in {:?}\n{fix}",
                    values.join(",")
                )));
            }
            let rest = entry
                .strip_prefix("http://")
                .or_else(|| entry.strip_prefix("https://"));
            if rest.is_none_or(|r| r.trim_end_matches('/').is_empty()) {
                return Err(Error::Usage(format!(
                    "{source}: {entry:?} is not an http:// or https:// URL\n{fix}"
                )));
            }
            let url = entry.trim_end_matches('/').to_string();
            if urls.contains(&url) {
                return Err(Error::Usage(format!(
                    "{source}: {entry:?} is given twice\n{fix}"
                )));
            }
            urls.push(url);
        }
        Ok(Servers::of(urls))
    }

    /// Servers known to be well-formed (the local agent's own address).
    pub fn of(urls: Vec<String>) -> Servers {
        Servers {
            urls,
            current: AtomicUsize::new(0),
        }
    }

    /// The server in use now.
    pub fn current(&self) -> &str {
        &self.urls[self.current.load(Ordering::SeqCst) % self.urls.len()]
    }

    /// All of them, comma-separated, as logs show them (a user and
    /// password, or a query value, `<redacted>`).
    pub fn list(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact_url_secrets(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A client of one heal server, or of several (`Servers`).
pub struct Client {
    servers: Arc<Servers>,
    token: Option<String>,
    http: ureq::Agent,
}

/// What a request carries.
enum Body<'a> {
    Empty,
    Json(&'a Value),
    Text(&'a [u8]),
}

impl Client {
    /// A client with a global per-request timeout. `ca_file` (PEM) holds
    /// the private CA that signed an https server's certificate; without
    /// it, the public roots are trusted.
    pub fn new(
        servers: Arc<Servers>,
        token: Option<String>,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Client> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca_file {
            let certs: Vec<_> = crate::trust::load_ca_file(path)
                .map_err(|e| Error::Usage(e.replace("ca_file", "--ca-file")))?
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build();
        Ok(Client {
            servers,
            token,
            http: config.into(),
        })
    }

    /// The server in use now.
    pub fn server(&self) -> &str {
        self.servers.current()
    }

    /// Closes the client's connections, interrupting a request in flight
    /// (a waiting poll ends at once); later requests fail.
    pub fn close(&self) {
        self.http.clone().shutdown();
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    /// Only transport failures are errors here.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        self.send(method, path, body.map_or(Body::Empty, Body::Json))
    }

    /// POST of a plain-text body (a ping's log) that must succeed.
    pub fn post_text(&self, path: &str, body: Vec<u8>) -> Result<Value> {
        self.expect_ok(path, self.send("POST", path, Body::Text(&body))?)
    }

    /// Sends to the server in use, then to each next one in turn while the
    /// one asked does not answer or answers 502/503/504. The server that
    /// answers is used from then on; the switch is logged once.
    fn send(&self, method: &str, path: &str, body: Body) -> Result<(u16, Value)> {
        let start = self.servers.current.load(Ordering::SeqCst);
        let count = self.servers.urls.len();
        let mut failures = Vec::new();
        for n in 0..count {
            let at = (start + n) % count;
            match self.send_to(&self.servers.urls[at], method, path, &body) {
                Ok(Ok((status @ 502..=504, _))) if n + 1 < count => {
                    failures.push(format!(
                        "{}: status {status}",
                        redact_url_secrets(&format!("{}{path}", self.servers.urls[at]))
                    ));
                }
                Ok(answer) => {
                    let unavailable = matches!(answer, Ok((502..=504, _)));
                    if n > 0 && !unavailable {
                        self.switch(start, at, &failures);
                    }
                    return answer;
                }
                Err(why) => failures.push(why),
            }
        }
        Err(Error::Http(format!(
            "cannot reach heal at {} (is `heal serve` running? set --server or HEAL_SERVER)",
            failures.join(", nor at ")
        )))
    }

    /// Uses `to` from now on, unless another request already moved away from `from`.
    fn switch(&self, from: usize, to: usize, failures: &[String]) {
        let moved =
            self.servers
                .current
                .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst);
        if moved.is_ok() {
            log::warn!(
                "switching from heal server {} to {}: {}",
                redact_url_secrets(&self.servers.urls[from]),
                redact_url_secrets(&self.servers.urls[to]),
                failures.join("; ")
            );
        }
    }

    /// One request to one server; the outer `Err` when it did not answer.
    fn send_to(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: &Body,
    ) -> std::result::Result<Result<(u16, Value)>, String> {
        let url = format!("{base}{path}");
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET" | "DELETE", _) => {
                let mut req = if method == "GET" {
                    self.http.get(&url)
                } else {
                    self.http.delete(&url)
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            (_, body) => {
                let mut req = if method == "PUT" {
                    self.http.put(&url)
                } else {
                    self.http.post(&url)
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                match body {
                    Body::Json(body) => req
                        .header("Content-Type", "application/json")
                        .send(body.to_string()),
                    Body::Text(text) => req.header("Content-Type", "text/plain").send(*text),
                    Body::Empty => req.send_empty(),
                }
            }
        };
        // A URL may carry a user and password, a path a ping key: shown redacted.
        let mut response = result.map_err(|e| format!("{}: {e}", redact_url_secrets(&url)))?;
        let status = response.status().as_u16();
        let text = match response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
        {
            Ok(text) => text,
            Err(e) => {
                return Ok(Err(Error::Http(format!(
                    "{url}: cannot read the answer: {e}"
                ))))
            }
        };
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Ok((status, value)))
    }

    /// GET that must succeed.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.expect_ok(path, self.request("GET", path, None)?)
    }

    /// DELETE that must succeed.
    pub fn delete(&self, path: &str) -> Result<Value> {
        self.expect_ok(path, self.request("DELETE", path, None)?)
    }

    /// PUT that must succeed.
    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.expect_ok(path, self.request("PUT", path, Some(body))?)
    }

    /// POST without a body that must succeed.
    pub fn post_empty(&self, path: &str) -> Result<Value> {
        self.expect_ok(path, self.request("POST", path, None)?)
    }

    /// POST that must succeed.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.expect_ok(path, self.request("POST", path, Some(body))?)
    }

    fn expect_ok(&self, path: &str, (status, body): (u16, Value)) -> Result<Value> {
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let reason = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        let hint = match status {
            401 => " (pass --token, --token-file or HEAL_TOKEN)",
            403 => " (this token lacks the scope for it)",
            _ => "",
        };
        Err(Error::Http(format!(
            "{}{path}: {status}: {reason}{hint}",
            self.server()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::Servers;

    fn parse(values: &[&str]) -> Result<Vec<String>, String> {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        Servers::parse(&values, "--server")
            .map(|s| s.urls)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn server_lists() {
        assert_eq!(
            parse(&["http://a:1/, https://b:2", "http://c:3"]).unwrap(),
            ["http://a:1", "https://b:2", "http://c:3"]
        );
        let empty = parse(&["http://a:1,,http://b:2"]).unwrap_err();
        assert!(empty.contains("empty entry"), "{empty}");
        assert!(parse(&["http://a:1,"]).unwrap_err().contains("empty entry"));
        let scheme = parse(&["http://a:1,a:2"]).unwrap_err();
        assert!(scheme.contains("\"a:2\" is not an http"), "{scheme}");
        assert!(parse(&["http://"]).unwrap_err().contains("not an http"));
        let twice = parse(&["http://a:1", "http://a:1/"]).unwrap_err();
        assert!(twice.contains("\"http://a:1/\" is given twice"), "{twice}");
    }

    #[test]
    fn logs_show_servers_without_their_credentials() {
        let values = vec!["http://user:pass@heal-1:7878,https://heal-2".to_string()];
        let servers = Servers::parse(&values, "--server").unwrap();
        assert_eq!(
            servers.list(),
            "http://<redacted>@heal-1:7878,https://heal-2"
        );
    }
}
