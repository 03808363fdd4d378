//! List filters: a value a filter does not take, or a parameter a route does
//! not take, is refused with 400 naming it and what is allowed (never an
//! empty or unfiltered list); the CLI refuses the same values before it
//! sends, in the same words; every documented filter filters.

use serde_json::Value;

use crate::support::{heal_cli, test_dir, Server};

const CONFIG: &str = r#"
[[heartbeat]]
name = "checkout-backup"
every = "1h"
service = "checkout"
team = "shop"

[[heartbeat]]
name = "billing-export"
every = "1h"
service = "billing"
team = "finance"
"#;

fn error_of(server: &Server, path: &str) -> String {
    let (status, body) = server.get(path);
    assert_eq!(status, 400, "GET {path}: {body}");
    body["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn every_enumerated_filter_refuses_a_value_it_does_not_take_naming_those_it_does() {
    let dir = test_dir("filters-values");
    let server = Server::start(&dir, CONFIG);
    for (path, bad, allowed) in [
        ("/api/v1/events?state=suceeded", "suceeded", "succeeded"),
        ("/api/v1/events?state=failed,bogus", "bogus", "timed_out"),
        ("/api/v1/decisions?outcome=rn", "rn", "await-approval"),
        ("/api/v1/alerts?status=fired", "fired", "resolved"),
        ("/api/v1/outbox?state=done", "done", "pending"),
        ("/api/v1/heartbeats?state=dead", "dead", "late"),
        ("/api/v1/probes?state=sideways", "sideways", "unknown"),
        (
            "/api/v1/audit?action=config.apply",
            "config.apply",
            "config.applied",
        ),
    ] {
        let e = error_of(&server, path);
        assert!(
            e.contains(&format!("{bad:?}")) && e.contains(allowed),
            "GET {path}: {e}"
        );
    }
    for path in [
        "/api/v1/events?state=succeeded,failed",
        "/api/v1/decisions?outcome=dry-run",
        "/api/v1/alerts?status=firing",
        "/api/v1/outbox?state=failed",
        "/api/v1/heartbeats?state=new",
        "/api/v1/probes?state=up",
        "/api/v1/audit?action=agent.forgotten",
    ] {
        server.get_ok(path);
    }
}

#[test]
fn an_unknown_query_parameter_is_refused_naming_the_known_ones() {
    let dir = test_dir("filters-names");
    let server = Server::start(&dir, CONFIG);
    let e = error_of(&server, "/api/v1/events?stat=failed");
    assert!(e.contains("\"stat\"") && e.contains("state, rule"), "{e}");
    let e = error_of(&server, "/api/v1/agents?id=web-1");
    assert!(e.contains("\"id\"") && e.contains("takes none"), "{e}");
}

#[test]
fn heartbeats_are_filtered_by_service_and_team() {
    let dir = test_dir("filters-heartbeats");
    let server = Server::start(&dir, CONFIG);
    let names = |path: &str| -> Vec<String> {
        server.get_ok(path)["heartbeats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["name"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(
        names("/api/v1/heartbeats?service=checkout"),
        ["checkout-backup"]
    );
    assert_eq!(names("/api/v1/heartbeats?team=finance"), ["billing-export"]);
    assert!(names("/api/v1/heartbeats?service=checkout&team=finance").is_empty());
    assert_eq!(names("/api/v1/heartbeats").len(), 2);
}

#[test]
fn the_cli_refuses_a_bad_filter_before_sending_in_the_servers_words() {
    let dir = test_dir("filters-cli");
    let server = Server::start(&dir, CONFIG);
    let said = error_of(&server, "/api/v1/events?state=bogus");
    // A server that is not there: the refusal comes before any request.
    for args in [
        &["events", "--state", "bogus"][..],
        &["notify", "outbox", "--state", "bogus"][..],
        &["audit", "--action", "bogus"][..],
    ] {
        let mut all = args.to_vec();
        all.extend(["--server", "http://127.0.0.1:9"]);
        let (code, _, err) = heal_cli(&all, &[], None);
        assert_eq!(code, 2, "heal {args:?}: {err}");
        assert!(err.contains(": \"bogus\" is not one of"), "{err}");
        if args[0] == "events" {
            assert!(
                said.contains(err.trim().trim_start_matches("heal: error: ")),
                "{said} / {err}"
            );
        }
    }
    let (code, out, err) = heal_cli(
        &[
            "events",
            "--state",
            "failed,succeeded",
            "--server",
            &server.url,
            "--json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        Value::Array(vec![])
    );
}
