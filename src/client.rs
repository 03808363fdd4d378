//! A small blocking client for heal's HTTP API, used by the agent and the
//! thin CLI commands (`fire`, `events`, `agents`). Bearer token, JSON in and
//! out; errors name the URL and, for refused requests, the server's reason.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// Default server URL when neither --server nor HEAL_SERVER is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// A client of one heal server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: ureq::Agent,
}

impl Client {
    /// A client with a global per-request timeout. `ca_file` (PEM) holds
    /// the private CA that signed an https server's certificate; without
    /// it, the public roots are trusted.
    pub fn new(
        base: &str,
        token: Option<String>,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Client> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca_file {
            let certs: Vec<_> = crate::probe::load_ca_file(path)
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
            base: base.trim_end_matches('/').to_string(),
            token,
            http: config.into(),
        })
    }

    /// Closes the client's connections, interrupting a request in flight
    /// (a waiting poll ends at once); later requests fail.
    pub fn close(&self) {
        self.http.clone().shutdown();
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    /// Only transport failures are errors here.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
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
                let mut req = self.http.post(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                match body {
                    Some(body) => req
                        .header("Content-Type", "application/json")
                        .send(body.to_string()),
                    None => req.send_empty(),
                }
            }
        };
        let mut response = result.map_err(|e| Error::Http(format!("cannot reach heal at {url}: {e} (is `heal serve` running? set --server or HEAL_SERVER)")))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| Error::Http(format!("{url}: cannot read the answer: {e}")))?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// POST of a plain-text body (a ping's log) that must succeed.
    pub fn post_text(&self, path: &str, body: Vec<u8>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.post(&url).header("Content-Type", "text/plain");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut response = req.send(&body[..]).map_err(|e| {
            Error::Http(format!("cannot reach heal at {url}: {e} (is `heal serve` running? set --server or HEAL_SERVER)"))
        })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        self.expect_ok(path, (status, value))
    }

    /// GET that must succeed.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.expect_ok(path, self.request("GET", path, None)?)
    }

    /// DELETE that must succeed.
    pub fn delete(&self, path: &str) -> Result<Value> {
        self.expect_ok(path, self.request("DELETE", path, None)?)
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
            self.base
        )))
    }
}
