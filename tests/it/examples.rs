//! The example configuration and sample alerts, as a new user runs them:
//! `heal serve --local-agent` on the repository's runbooks.toml, and the
//! agent the README starts for the samples, from a directory other than the
//! repository.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::{heal_cli, repo, test_dir, wait_agent_polling, wait_until, Agent, Server};

/// The `--allow` patterns of the README's `heal agent` command.
fn readme_agent_allow() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("read README.md");
    let at = readme
        .find("\n    heal agent --server ")
        .expect("the README shows a `heal agent --server ...` command");
    let command = &readme[at..];
    let command = &command[..command.find("\n\n").unwrap_or(command.len())];
    let allow = command
        .split_once("--allow '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .unwrap_or_else(|| panic!("no --allow '...' in the README's agent command:{command}"))
        .0;
    allow.to_string()
}

#[test]
fn every_sample_alert_succeeds_on_the_agent_the_readme_starts_outside_the_repo() {
    let dir = test_dir("examples-samples");
    let config = std::fs::read_to_string(repo().join("runbooks.toml")).expect("runbooks.toml");
    let server = Server::start_with(&dir, &config, "127.0.0.1:0", &["--local-agent"]);
    // The local agent's line names the address people know, not an inner port.
    let shown = format!("polling {} (in process)", server.url);
    wait_until(
        "the local agent to log the listen address",
        Duration::from_secs(20),
        || server.logs().contains(&shown).then_some(()),
    );

    // The README: `heal agent --id localhost` beside the quick-start server,
    // here from a directory that is not the repository.
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let state = dir.join("agent-state");
    let allow = readme_agent_allow();
    let agent = Agent::start_in(
        &elsewhere,
        &server.url,
        "localhost",
        &["--allow", &allow, "--state-dir", state.to_str().unwrap()],
    );
    wait_agent_polling(&server, &agent.id);

    // Every file in examples/alerts/, so a new sample is covered too.
    let mut samples: Vec<_> = std::fs::read_dir(repo().join("examples/alerts"))
        .expect("examples/alerts")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    samples.sort();
    assert!(!samples.is_empty(), "no sample in examples/alerts/");
    let mut runbooks_run = BTreeSet::new();
    for sample in &samples {
        let (code, out, err) = heal_cli(
            &[
                "fire",
                "--file",
                sample.to_str().unwrap(),
                "--server",
                &server.url,
                "--json",
            ],
            &[],
            None,
        );
        assert_eq!(code, 0, "heal fire --file {}: {out}{err}", sample.display());
        let answer: Value = serde_json::from_str(&out).expect("fire --json answers JSON");
        let events: Vec<i64> = answer["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["decisions"].as_array().cloned().unwrap_or_default())
            .filter_map(|d| d["event_id"].as_i64())
            .collect();
        assert!(
            !events.is_empty(),
            "{} started no event: {answer}",
            sample.display()
        );
        for id in events {
            let event = server.wait_event(
                id,
                &["succeeded", "failed", "escalated", "cancelled"],
                Duration::from_secs(30),
            );
            assert_eq!(
                event["state"],
                "succeeded",
                "{}: event {id}: {event:#}\nagent log:\n{}",
                sample.display(),
                agent.logs()
            );
            runbooks_run.insert(event["runbook"].as_str().unwrap_or("?").to_string());
        }
    }

    // Between them, the samples run every shipped runbook.
    let running = server.get_ok("/api/v1/config");
    let shipped: BTreeSet<String> = running["config"]["runbook"]
        .as_object()
        .unwrap_or_else(|| panic!("no runbooks in GET /api/v1/config: {running}"))
        .keys()
        .cloned()
        .collect();
    assert_eq!(runbooks_run, shipped, "runbooks the samples ran");
}

// The production runbook in examples/ is valid, and a matching alert would
// run its steps as the example says: the state check, the restart only when
// the unit is not active, the health check as the shop's user with its
// secrets file and its retries, diagnostics on failure.
#[test]
fn the_production_runbook_example_checks_and_would_run_as_it_says() {
    let config = repo().join("examples/runbooks.toml");
    let config = config.to_str().unwrap();
    let (code, out, err) = heal_cli(&["check-config", "--config", config], &[], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 1 rules, 1 runbooks"), "{out}");
    let alert = r#"{"labels":{"alertname":"ShopDown","severity":"critical","instance":"web-1"}}"#;
    let (code, out, err) = heal_cli(
        &["run-rule", "--config", config, "--json", "-"],
        &[],
        Some(alert),
    );
    assert_eq!(code, 0, "{out}{err}");
    let trace: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let text = trace.to_string();
    assert!(text.contains("\"outcome\":\"run\""), "{text}");
    let (code, out, err) = heal_cli(&["run-rule", "--config", config, "-"], &[], Some(alert));
    assert_eq!(code, 0, "{out}{err}");
    for shown in [
        "target: web-1",
        "step \"state\"",
        "only when `steps.state.exit_code != `0``",
        "as user shop",
        "secrets from /etc/heal/secrets/shop-health.env",
        "5 retries 6s apart",
        "on failure \"diagnose\"",
        "HEAL_PARAM_UNIT='shop.service'",
    ] {
        assert!(out.contains(shown), "{shown:?} not in:\n{out}");
    }
    // A warning alert is not this runbook's business.
    let warning = alert.replace("critical", "warning");
    let (code, out, _) = heal_cli(&["run-rule", "--config", config, "-"], &[], Some(&warning));
    assert_eq!(code, 0);
    assert!(!out.contains("runbook: restart-shop"), "{out}");
}
