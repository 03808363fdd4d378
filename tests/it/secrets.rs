//! URLs of the config are shown without their user, password or query
//! values: in the config API, probe results, the alerts and pages that
//! carry them, logs and config errors.

use std::net::TcpListener;
use std::time::Duration;

use crate::support::{check_config, http, test_dir, wait_until, Server};

/// A listener that takes connections and closes them unanswered, so a
/// probe's request fails with an error that names its URL.
fn closing_listener() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let thread = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => drop(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, thread)
}

#[test]
fn probe_url_passwords_and_query_values_are_never_shown() {
    let dir = test_dir("secrets-probe-url");
    let (port, _listener) = closing_listener();
    let config = format!(
        r#"
[[probe]]
name = "api"
every = "1s"
fail_after = 1
http = {{ url = "http://user:PASSWORD123@127.0.0.1:{port}/health?apikey=KEY456&region=eu" }}

[[probe]]
name = "metrics"
every = "1h"
prometheus = {{ url = "http://prom:PROMPASS789@127.0.0.1:{port}", query = "up", expect = "> 0" }}
"#
    );
    let server = Server::start(&dir, &config);
    let secrets = ["PASSWORD123", "KEY456", "PROMPASS789", "user:", "prom:"];
    let clean = |what: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows {s:?}: {text}");
        }
    };

    let shown = server.get_ok("/api/v1/config");
    clean("GET /api/v1/config", &shown.to_string());
    assert_eq!(
        shown["config"]["probe"][0]["http"]["url"],
        format!("http://<redacted>@127.0.0.1:{port}/health?apikey=<redacted>&region=<redacted>"),
        "what is checked stays visible: {shown}"
    );

    let probe = wait_until("the probe to fail", Duration::from_secs(15), || {
        let p = server.get_ok("/api/v1/probes/api")["probe"].clone();
        (p["state"] == "down").then_some(p)
    });
    let text = probe.to_string();
    clean("GET /api/v1/probes/api", &text);
    assert!(
        text.contains(&format!(
            "http://<redacted>@127.0.0.1:{port}/health?apikey=<redacted>"
        )),
        "the failure names the URL, redacted: {text}"
    );
    let alerts = server.get_ok("/api/v1/alerts?name=ProbeFailing");
    clean("the ProbeFailing alert", &alerts.to_string());
    let (status, page) = http("GET", &format!("{}/probes/api", server.url), None, &[]);
    assert_eq!(status, 200, "{page}");
    clean("the probe's page", &page);
    clean("the server's log", &server.logs());

    // A config error quotes the URL redacted.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[probe]]\nname = \"p\"\nevery = \"1m\"\nhttp = { url = \"ftp://user:PASSWORD123@h/?apikey=KEY456\" }\n",
    )
    .unwrap();
    let (code, _, err) = check_config(&bad);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ftp://<redacted>@h/?apikey=<redacted>"),
        "{err}"
    );
    clean("check-config", &err);
}
