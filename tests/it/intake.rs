//! Alert intake: every captured Alertmanager case, own format, mapped hooks.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{fixture, heal_cli, test_dir, wait_until, Server};

const CONFIG: &str = r#"
[[source]]
name = "uptime"
alerts = "checks"
alert_name = "'SiteDown'"
status = "state == 'up' && 'resolved' || 'firing'"
labels = "{instance: host, url: url}"

[[rule]]
name = "ignore-target-down"
when = "labels.alertname == 'TargetDown'"
action = "discard"

[[rule]]
name = "disk"
when = "labels.alertname == 'DiskSpaceLow'"
runbook = "fix"
target = "labels.instance"

[[rule]]
name = "service-critical"
when = "labels.alertname == 'ServiceDown' && labels.severity == 'critical'"
runbook = "fix"
target = "labels.instance"

[[rule]]
name = "load"
when = "labels.alertname == 'HighLoad' || labels.alertname == 'SiteDown'"
runbook = "fix"
target = "labels.instance"

[runbook.fix]
steps = [ { name = "a", run = "true" } ]
"#;

/// Posts a raw fixture body exactly as Alertmanager sent it.
fn post_fixture(server: &Server, case: &str) -> Value {
    let body = fixture(&format!("alertmanager/raw/{case}"));
    let (status, text) = server.post_raw(
        "/api/v1/alerts/alertmanager",
        body.as_bytes(),
        &[("User-Agent", "Alertmanager/0.25.0")],
    );
    assert_eq!(status, 200, "{case}: {text}");
    serde_json::from_str(&text).expect("JSON answer")
}

fn outcomes(answer: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in answer["alerts"].as_array().unwrap() {
        let fp = a["name"].as_str().unwrap().to_string()
            + "/"
            + &a["fingerprint"].as_str().unwrap()[..4];
        match a["decisions"].as_array() {
            Some(ds) => out.extend(
                ds.iter()
                    .map(|d| (fp.clone(), d["outcome"].as_str().unwrap().to_string())),
            ),
            None => out.push((fp, a["recorded"].as_str().unwrap().to_string())),
        }
    }
    out
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn alert(server: &Server, fingerprint: &str) -> Value {
    let list = server.get_ok(&format!("/api/v1/alerts?fingerprint={fingerprint}"));
    list["alerts"][0].clone()
}

#[test]
fn every_alertmanager_fixture_case_is_decided_once() {
    let dir = test_dir("fixtures");
    let server = Server::start(&dir, CONFIG);

    // single_firing → run; the repeat → collapse into the same event; resolved → recorded on it.
    let a = post_fixture(&server, "single_firing.json");
    assert_eq!(outcomes(&a), pairs(&[("DiskSpaceLow/5a7c", "run")]));
    let event_id = a["alerts"][0]["decisions"][0]["event_id"].as_i64().unwrap();
    let a = post_fixture(&server, "single_firing_repeat.json");
    assert_eq!(outcomes(&a), pairs(&[("DiskSpaceLow/5a7c", "collapse")]));
    assert_eq!(
        a["alerts"][0]["decisions"][0]["event_id"].as_i64(),
        Some(event_id)
    );
    let a = post_fixture(&server, "single_resolved.json");
    assert_eq!(outcomes(&a), pairs(&[("DiskSpaceLow/5a7c", "resolved")]));
    let event = server.event(event_id);
    assert_eq!(event["hits"], 2);
    assert!(
        event["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["kind"] == "alert-resolved"),
        "{event}"
    );
    let stored = alert(&server, "5a7cb4c60d175e51");
    assert_eq!(stored["status"], "resolved");
    assert_eq!(
        stored["decisions"].as_array().unwrap().len(),
        2,
        "one decision per firing notification"
    );

    // A late firing notification of the occurrence that already resolved is stale.
    let a = post_fixture(&server, "single_firing.json");
    assert_eq!(outcomes(&a)[0].1, "discard");
    assert!(a["alerts"][0]["decisions"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("stale"));

    // A group: two critical run, the warning matches no rule.
    let a = post_fixture(&server, "group_firing.json");
    assert_eq!(
        outcomes(&a),
        pairs(&[
            ("ServiceDown/3be9", "run"),
            ("ServiceDown/89d2", "run"),
            ("ServiceDown/b20a", "discard")
        ])
    );
    let a = post_fixture(&server, "group_partially_resolved.json");
    assert_eq!(
        outcomes(&a),
        pairs(&[
            ("ServiceDown/3be9", "collapse"),
            ("ServiceDown/89d2", "collapse"),
            ("ServiceDown/b20a", "resolved")
        ])
    );
    let a = post_fixture(&server, "group_resolved.json");
    assert_eq!(
        outcomes(&a),
        pairs(&[
            ("ServiceDown/3be9", "resolved"),
            ("ServiceDown/89d2", "resolved"),
            ("ServiceDown/b20a", "already resolved")
        ])
    );

    // A discard rule; its resolution is recorded too.
    let a = post_fixture(&server, "target_down_firing.json");
    assert_eq!(outcomes(&a)[0].1, "discard");
    assert!(a["alerts"][0]["decisions"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("ignore-target-down"));
    let a = post_fixture(&server, "target_down_resolved.json");
    assert_eq!(outcomes(&a)[0].1, "resolved");

    // A firing payload that carries an already-notified resolved alert; sent twice.
    let a = post_fixture(&server, "firing_with_stale_resolved.json");
    assert_eq!(
        outcomes(&a),
        pairs(&[("HighLoad/f0db", "resolved"), ("HighLoad/07c1", "run")])
    );
    let a = post_fixture(&server, "firing_with_stale_resolved.json");
    assert_eq!(
        outcomes(&a),
        pairs(&[
            ("HighLoad/f0db", "already resolved"),
            ("HighLoad/07c1", "collapse")
        ])
    );

    // Exactly the runs above became events: DiskSpaceLow, two ServiceDown, HighLoad app-1.
    let events = server.events();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events.iter().all(|e| e["state"] == "queued"),
        "no agent polls, so ops wait: {events:?}"
    );
}

#[test]
fn refiring_alert_collapses_into_active_event() {
    let dir = test_dir("collapse");
    let server = Server::start(&dir, CONFIG);
    let alert = json!({"name": "HighLoad", "labels": {"instance": "app-9"}});
    let (status, first) = server.post("/api/v1/alerts", &alert);
    assert_eq!(status, 200, "{first}");
    let event_id = first["alerts"][0]["decisions"][0]["event_id"]
        .as_i64()
        .unwrap();
    for _ in 0..5 {
        let (_, again) = server.post("/api/v1/alerts", &alert);
        assert_eq!(again["alerts"][0]["decisions"][0]["outcome"], "collapse");
        assert_eq!(
            again["alerts"][0]["decisions"][0]["event_id"].as_i64(),
            Some(event_id)
        );
    }
    let event = server.event(event_id);
    assert_eq!(event["hits"], 6);
    assert_eq!(
        event["ops"].as_array().unwrap().len(),
        1,
        "collapse queues nothing new"
    );
    let collapses = event["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "collapse")
        .count();
    assert_eq!(collapses, 5);
}

#[test]
fn mapped_hook_source_becomes_alerts() {
    let dir = test_dir("hooks");
    let server = Server::start(&dir, CONFIG);
    let body = json!({"checks": [{"host": "web-3", "url": "https://x/", "state": "down"}, {"host": "web-4", "url": "https://y/", "state": "up"}]});
    let (status, answer) = server.post("/hooks/uptime", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["alerts"][0]["name"], "SiteDown");
    assert_eq!(answer["alerts"][0]["decisions"][0]["outcome"], "run");
    assert_eq!(answer["alerts"][1]["status"], "resolved");
    let (status, answer) = server.post("/hooks/nope", &body);
    assert_eq!(status, 404);
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("no [[source]] named \"nope\""));
    let (status, answer) = server.post("/hooks/uptime", &json!({"checks": [{"host": 5}]}));
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("labels = `{instance: host, url: url}` gave an object"),
        "{error}"
    );
    // A payload of another shape: the error says, in words, which
    // expression found nothing and what the payload holds.
    let (status, answer) = server.post("/hooks/uptime", &json!({"nope": 1}));
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert_eq!(
        error,
        "source \"uptime\": no alerts in the payload: alerts = `checks` found nothing (null) in it; its top-level fields are \"nope\""
    );
}

#[test]
fn heal_fire_sends_own_format_and_shows_decision() {
    let dir = test_dir("fire");
    let server = Server::start(&dir, CONFIG);
    let (code, out, err) = heal_cli(
        &[
            "fire",
            "DiskSpaceLow",
            "instance=web-7",
            "--server",
            &server.url,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("run: rule \"disk\""), "{out}");
    assert!(out.contains("heal events show 1"), "{out}");
    let (code, out, err) = heal_cli(
        &[
            "fire",
            "--file",
            "tests/fixtures/alertmanager/group_firing.json",
            "--server",
            &server.url,
            "--json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], 3);
    let (code, _, err) = heal_cli(&["fire", "DiskSpaceLow", "bad-pair"], &[], None);
    assert_eq!(code, 2);
    assert!(err.contains("KEY=VALUE"), "{err}");
    wait_until("events listed", Duration::from_secs(5), || {
        (server.events().len() == 3).then_some(())
    });
}

/// Labels `mount_point` and `mount~point` both become
/// HEAL_LABEL_MOUNT_POINT. The alert is taken (a 4xx would make
/// Alertmanager drop the whole batch), and its run is refused with both
/// names; the other alert of the batch runs.
#[test]
fn labels_that_become_one_variable_refuse_the_run_not_the_batch() {
    let dir = test_dir("intake-env-collision");
    let server = Server::start(&dir, CONFIG);
    let firing = |instance: &str, fingerprint: &str, extra: Value| {
        let mut labels = json!({ "alertname": "DiskSpaceLow", "instance": instance });
        labels
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({
            "status": "firing", "labels": labels, "annotations": {},
            "startsAt": "2026-11-22T11:58:09.223Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": fingerprint,
        })
    };
    let batch = json!({
        "receiver": "heal", "status": "firing", "version": "4", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [
            firing("db-1", "00000000000000d1", json!({ "mount_point": "/tmp", "mount~point": "/" })),
            firing("db-2", "00000000000000d2", json!({ "mount_point": "/tmp" })),
        ],
    });
    let (status, text) = server.post_raw(
        "/api/v1/alerts/alertmanager",
        batch.to_string().as_bytes(),
        &[],
    );
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let decisions: Vec<(String, String)> = answer["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let d = &a["decisions"][0];
            (
                d["outcome"].as_str().unwrap_or_default().to_string(),
                d["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(decisions.len(), 2, "{answer}");
    assert_eq!(decisions[0].0, "discard", "{answer}");
    assert!(
        decisions[0].1.contains(
            r#"labels "mount_point" and "mount~point" both become HEAL_LABEL_MOUNT_POINT"#
        ),
        "the refusal names both labels: {}",
        decisions[0].1
    );
    assert_eq!(
        decisions[1].0, "run",
        "the rest of the batch runs: {answer}"
    );
    let events = server.events();
    assert_eq!(events.len(), 1, "only db-2 has an event: {events:?}");
}
