//! Names follow one rule everywhere (`config::NAME_RULE`): a letter or
//! digit, then letters, digits, '.', '-' or '_'. So `.`, `..` and `-x` are
//! refused whether they come from the file or through the API.

use serde_json::json;

use crate::support::{check_config, http, test_dir, Server};

const RULE: &str = "a letter or digit, then letters, digits";

#[test]
fn dot_names_and_dash_names_are_refused_by_the_api() {
    let dir = test_dir("names-api");
    let server = Server::start(&dir, "[[heartbeat]]\nname = \"nightly\"\nevery = \"1h\"\n");
    let put = |segment: &str| {
        http(
            "PUT",
            &format!("{}/api/v1/heartbeats/{segment}", server.url),
            Some(json!({ "every": "1h" }).to_string().as_bytes()),
            &[("Content-Type", "application/json")],
        )
    };
    // `%2E` keeps the client from folding the dots away; heal decodes it.
    for (segment, name) in [("%2E", "."), ("%2E%2E", ".."), ("-x", "-x"), ("_x", "_x")] {
        let (code, answer) = put(segment);
        assert_eq!(code, 400, "heartbeat {name:?}: {answer}");
        assert!(
            answer.contains("heartbeat name") && answer.contains(RULE),
            "names the field and the rule: {answer}"
        );
        let (code, answer) = http(
            "POST",
            &format!("{}/api/v1/agents/{segment}/poll", server.url),
            Some(br#"{"instance":"i-1"}"#),
            &[("Content-Type", "application/json")],
        );
        assert_eq!(code, 400, "agent {name:?}: {answer}");
        assert!(
            answer.contains("agent id") && answer.contains(RULE),
            "{answer}"
        );
    }
    let list = server.get_ok("/api/v1/heartbeats");
    assert_eq!(
        list["heartbeats"].as_array().map(Vec::len),
        Some(1),
        "nothing was registered: {list}"
    );
    let (code, answer) = put("db.backup-2_x");
    assert_eq!(code, 201, "a good name is still taken: {answer}");
}

#[test]
fn check_config_refuses_dot_names_naming_the_item_and_field() {
    let dir = test_dir("names-check-config");
    let cases = [
        ("[[heartbeat]]\nname = \"..\"\nevery = \"1h\"\n", "name: \"..\""),
        (
            "[[probe]]\nname = \".\"\nevery = \"1m\"\ntcp = { addr = \"127.0.0.1:1\" }\n",
            "name: \".\"",
        ),
        (
            "[runbook.\"-x\"]\nsteps = [ { name = \"s\", run = \"true\" } ]\n",
            "name: \"-x\"",
        ),
        (
            "[runbook.r]\nsteps = [ { name = \"s\", run = \"true\" } ]\n[[rule]]\nname = \"..\"\nwhen = \"true\"\nrunbook = \"r\"\ntarget = \"labels.instance\"\n",
            "rule \"..\": name: \"..\"",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = check_config(&path);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(
            err.contains(expected) && err.contains(RULE),
            "{text}: the error names the item, the field and the rule: {err}"
        );
    }
}
