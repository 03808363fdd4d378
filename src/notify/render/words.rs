//! What each kind says: the title and lines of a `Message`, its fields, and
//! the output of the failing op.

use super::*;

// ---- wording ----------------------------------------------------------------

pub(super) fn words(f: &Facts) -> (String, Vec<String>) {
    match f.group {
        "event" => event_words(f),
        "heartbeat" => heartbeat_words(f),
        "probe" => probe_words(f),
        "agent" => agent_words(f),
        "safety" => safety_words(f),
        "test" => test_words(f),
        _ => other_words(f),
    }
}

fn event_words(f: &Facts) -> (String, Vec<String>) {
    let (title, more) = match f.kind.as_str() {
        "event.started" => started(f),
        "event.succeeded" => succeeded(f),
        "event.failed" => failed(f),
        "event.escalated" => escalated(f),
        "event.pending_approval" => pending_approval(f),
        "event.cancelled" => cancelled(f),
        "event.resolved" => resolved(f),
        "event.dry_run" => dry_run(f),
        _ => return other_words(f),
    };
    let mut lines = fired(f);
    lines.extend(more);
    (title, lines)
}

/// "What fired" and "Details" from the alert, when there is one.
fn fired(f: &Facts) -> Vec<String> {
    if f.alert.is_empty() && f.summary.is_empty() {
        return Vec::new();
    }
    let mut line = format!("What fired: {}", or(&f.alert, "an alert"));
    if !f.instance.is_empty() {
        let _ = write!(line, " on {}", f.instance);
    }
    match (f.since.is_empty(), f.status.as_str()) {
        (true, _) => {}
        (false, "resolved") => {
            let _ = write!(line, ", fired at {}, since resolved", f.since);
        }
        (false, _) => {
            let _ = write!(line, ", firing since {}", f.since);
        }
    }
    if f.hits > 1 {
        let _ = write!(line, " (seen {} times)", f.hits);
    }
    if !f.summary.is_empty() {
        let _ = write!(line, ": {}", f.summary);
    }
    let mut lines = vec![line];
    if !f.description.is_empty() && f.description != f.summary {
        lines.push(format!("Details: {}", f.description));
    }
    lines
}

/// " on web-1": the targets, else the key.
fn on(f: &Facts) -> String {
    let place = or(&f.targets, &f.key);
    if place.is_empty() {
        String::new()
    } else {
        format!(" on {place}")
    }
}

/// " (event 42)".
fn event_ref(f: &Facts) -> String {
    if f.event.is_empty() {
        String::new()
    } else {
        format!(" (event {})", f.event)
    }
}

/// "Rule restart-nginx ran runbook nginx-restart on web-1".
fn rule_ran(f: &Facts, verb: &str) -> String {
    let rule = if f.rule.is_empty() {
        "heal".to_string()
    } else {
        format!("rule {}", f.rule)
    };
    format!(
        "{rule} {verb} runbook {}{}",
        or(&f.runbook, "(unnamed)"),
        on(f)
    )
}

fn started(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Running {}{} for {}{}",
        or(&f.runbook, "a runbook"),
        on(f),
        or(&f.alert, "an alert"),
        event_ref(f)
    );
    let lines = vec![
        format!("What heal did: {}.", rule_ran(f, "started")),
        "Next: nothing to do yet; heal reports when it succeeds or fails.".to_string(),
    ];
    (title, lines)
}

fn succeeded(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Fixed: {}{} by {}{}",
        or(&f.alert, "alert"),
        on(f),
        or(&f.runbook, "its runbook"),
        event_ref(f)
    );
    let mut result = "Result: succeeded".to_string();
    if !f.took.is_empty() {
        let _ = write!(result, " in {}", f.took);
    }
    if !f.reason.is_empty() {
        let _ = write!(result, ": {}", f.reason);
    }
    let mut lines = vec![format!("What heal did: {}.", rule_ran(f, "ran")), result];
    if !f.ops.is_empty() {
        lines.push(f.ops.clone());
    }
    lines.push("Next: nothing to do.".to_string());
    (title, lines)
}

fn failed(f: &Facts) -> (String, Vec<String>) {
    let outcome = match f.state.as_str() {
        "timed_out" => "Timed out",
        "lost" => "Lost",
        _ => "Failed",
    };
    let failure = if f.failure.is_empty() {
        String::new()
    } else {
        format!(", {}", f.failure)
    };
    let title = format!(
        "{outcome}: {}{}{failure}{}",
        or(&f.runbook, "runbook"),
        on(f),
        event_ref(f)
    );
    let reason = or(&f.reason, "no reason recorded");
    let place = or(or(&f.targets, &f.key), "the target");
    let next = match f.state.as_str() {
        "lost" => format!(
            "Next: check on {place} whether the runbook ran and what it did; heal never re-runs a lost op."
        ),
        _ => format!(
            "Next: fix {place} by hand, starting from the output below. If the alert keeps firing, heal may try again after the rule's cooldown."
        ),
    };
    let mut lines = vec![
        format!("What heal did: {}.", rule_ran(f, "ran")),
        format!("Result: {}: {reason}", outcome.to_lowercase()),
    ];
    if !f.ops.is_empty() {
        lines.push(f.ops.clone());
    }
    lines.push(next);
    (title, lines)
}

fn escalated(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Escalated: {}{} needs a person{}",
        or(&f.alert, "alert"),
        on(f),
        event_ref(f)
    );
    let lines = vec![
        "What heal did: ran nothing and handed this to people.".to_string(),
        format!("Why: {}", or(&f.decision, "no reason recorded")),
        "Next: a person must take over. heal runs nothing more for this alert while it keeps firing, and closes the event when the alert resolves.".to_string(),
    ];
    (title, lines)
}

fn pending_approval(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Approval needed: {}{} for {}{}",
        or(&f.runbook, "runbook"),
        on(f),
        or(&f.alert, "alert"),
        event_ref(f)
    );
    let id = or(&f.event, "EVENT_ID");
    let mut lines = vec![format!(
        "What heal did: nothing yet; {} once a person approves.",
        rule_ran(f, "will run")
    )];
    if !f.decision.is_empty() {
        lines.push(format!("Why: {}", f.decision));
    }
    lines.push(format!(
        "Next: run heal approve {id} to let it run once, or heal reject {id} to cancel it."
    ));
    (title, lines)
}

fn cancelled(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Cancelled: {}{} for {}{}",
        or(&f.runbook, "runbook"),
        on(f),
        or(&f.alert, "alert"),
        event_ref(f)
    );
    let mut result = "Result: cancelled".to_string();
    if !f.decided_by.is_empty() {
        let _ = write!(result, " by {}", f.decided_by);
    }
    if !f.reason.is_empty() {
        let _ = write!(result, ": {}", f.reason);
    }
    let lines = vec![
        result,
        format!(
            "Next: nothing runs for this event. If {} is still firing, it needs a person.",
            or(&f.alert, "the alert")
        ),
    ];
    (title, lines)
}

fn resolved(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Resolved: {}{}{}",
        or(&f.alert, "alert"),
        on(f),
        event_ref(f)
    );
    let mut result = format!("Result: {} resolved", or(&f.alert, "the alert"));
    if !f.lasted.is_empty() {
        let _ = write!(result, " {} after it fired", f.lasted);
    }
    let lines = vec![
        result + "; heal closed the escalated event.",
        "Next: nothing to do.".to_string(),
    ];
    (title, lines)
}

fn dry_run(f: &Facts) -> (String, Vec<String>) {
    let title = format!(
        "Dry run: heal would run {}{} for {}{}",
        or(&f.runbook, "a runbook"),
        on(f),
        or(&f.alert, "an alert"),
        event_ref(f)
    );
    let rule = or(&f.rule, "(unnamed)");
    let mut lines = vec![format!(
        "What heal did: nothing ran; rule {rule} is in dry-run mode."
    )];
    if !f.decision.is_empty() {
        lines.push(format!("Decision: {}", f.decision));
    }
    lines.push(format!(
        "Next: handle {} by hand if it needs it. To let heal act, set mode = \"live\" on rule {rule}.",
        or(&f.alert, "the alert")
    ));
    (title, lines)
}

fn heartbeat_words(f: &Facts) -> (String, Vec<String>) {
    let name = or(&f.name, "(unnamed)");
    let (title, mut lines) = match f.kind.as_str() {
        "heartbeat.down" => heartbeat_down(f, name),
        "heartbeat.up" => (
            format!("Heartbeat {name} is up again"),
            vec![
                format!("Result: heartbeat {name} checked in again{}.", after(f, "being down")),
                "Next: nothing to do.".to_string(),
            ],
        ),
        "heartbeat.overrun" => (
            format!("Heartbeat {name}: a run is taking too long"),
            [
                internal_fired(f, &format!("a run of heartbeat {name} is taking longer than its max runtime")),
                vec![format!("Next: check whether the job behind {name} is hung (stuck on a lock, on I/O, on the network) or only slow.")],
            ]
            .concat(),
        ),
        "heartbeat.finished" => (
            format!("Heartbeat {name}: the overrunning run has ended"),
            vec![
                format!("Result: the run of {name} that overran has ended{}.", after(f, "running over its max runtime")),
                "Next: nothing to do; a failed run is reported as heartbeat.down.".to_string(),
            ],
        ),
        _ => return other_words(f),
    };
    if !f.runbook_url.is_empty()
        && matches!(f.kind.as_str(), "heartbeat.down" | "heartbeat.overrun")
    {
        lines.push(format!("Runbook: {}", f.runbook_url));
    }
    about(f, &mut lines);
    (title, lines)
}

fn heartbeat_down(f: &Facts, name: &str) -> (String, Vec<String>) {
    let failed = f.cause == "failed";
    let (what, next) = if failed {
        (
            "reported a failed run",
            format!("Next: find out why the last run of {name} failed; heal keeps the output of recent runs with the heartbeat's pings."),
        )
    } else {
        (
            "missed its check-in",
            format!("Next: check whether the job behind {name} ran at all (scheduler, host up, logs) and whether it can reach heal to ping."),
        )
    };
    let mut line = format!("What fired: heartbeat {name} {what}");
    if !f.since.is_empty() {
        let _ = write!(line, ", down since {}", f.since);
    }
    if !f.detail.is_empty() {
        let _ = write!(line, ": {}", f.detail);
    }
    let title = format!(
        "Heartbeat {name} is down: {}",
        if failed { "its last run failed" } else { what }
    );
    (title, vec![line, next])
}

/// "What fired: <summary, or the default>, since <t>", then "Details".
fn internal_fired(f: &Facts, default: &str) -> Vec<String> {
    let mut line = format!("What fired: {}", or(&f.summary, default));
    if !f.since.is_empty() {
        let _ = write!(line, ", since {}", f.since);
    }
    let mut lines = vec![line];
    if !f.detail.is_empty() {
        lines.push(format!("Details: {}", f.detail));
    }
    lines
}

/// " after being down for 2h": how long the alert lasted, when known.
fn after(f: &Facts, state: &str) -> String {
    if f.lasted.is_empty() {
        String::new()
    } else {
        format!(" after {state} for {}", f.lasted)
    }
}

fn probe_words(f: &Facts) -> (String, Vec<String>) {
    let name = or(&f.name, "(unnamed)");
    let (title, mut lines) = match f.kind.as_str() {
        "probe.down" => (
            match (f.probe_severity.as_str(), f.was.as_str()) {
                (now, was) if !was.is_empty() && !now.is_empty() => {
                    format!("Probe {name} is {now} now (was {was})")
                }
                ("warning", _) => format!("Probe {name} is failing (warning)"),
                _ => format!("Probe {name} is failing"),
            },
            [
                internal_fired(f, &format!("probe {name} is failing")),
                vec![format!("Next: check the service that probe {name} checks.")],
            ]
            .concat(),
        ),
        "probe.up" => (format!("Probe {name} recovered"), probe_up(f, name)),
        _ => return other_words(f),
    };
    if !f.runbook_url.is_empty() && f.kind == "probe.down" {
        lines.push(format!("Runbook: {}", f.runbook_url));
    }
    about(f, &mut lines);
    (title, lines)
}

/// A recovered probe: that it passes, its last good result when known, and
/// the failure only as what it was.
fn probe_up(f: &Facts, name: &str) -> Vec<String> {
    let mut result = format!("Result: probe {name} recovered: it passes again");
    if !f.good.is_empty() {
        let _ = write!(result, " (last result: {})", f.good);
    }
    let _ = write!(result, "{}.", after(f, "failing"));
    let mut lines = vec![result];
    if !f.detail.is_empty() {
        let mut was = "Details: it was failing".to_string();
        if !f.since.is_empty() {
            let _ = write!(was, " since {}", f.since);
        }
        let _ = write!(was, ": {}", f.detail);
        lines.push(was);
    }
    lines.push("Next: nothing to do.".to_string());
    lines
}

/// "About: …", what a probe or heartbeat is for, before "Next".
fn about(f: &Facts, lines: &mut Vec<String>) {
    if f.about.is_empty() {
        return;
    }
    let at = lines
        .iter()
        .position(|l| l.starts_with("Next: "))
        .unwrap_or(lines.len());
    lines.insert(at, format!("About: {}", f.about));
}

fn agent_words(f: &Facts) -> (String, Vec<String>) {
    let name = or(&f.name, "(unnamed)");
    match f.kind.as_str() {
        "agent.down" => (
            format!("Agent {name} is down: it stopped polling heal"),
            [
                internal_fired(f, &format!("agent {name} stopped polling")),
                vec![
                    format!("Impact: runbooks cannot run on {name} until its agent polls again."),
                    format!("Next: check that host {name} is up and that its heal agent is running and can reach the server."),
                ],
            ]
            .concat(),
        ),
        "agent.up" if f.forgotten => (
            format!("Agent {name} is forgotten"),
            vec![
                format!("Result: agent {name} was forgotten{}: heal no longer expects it to poll, and lists it no more.", after(f, "being down")),
                format!("Next: nothing to do; if host {name} should still run heal, start its agent and it registers again."),
            ],
        ),
        "agent.up" => (
            format!("Agent {name} is back"),
            vec![
                format!("Result: agent {name} polls again{}; runbooks can run on it.", after(f, "being down")),
                "Next: nothing to do.".to_string(),
            ],
        ),
        _ => other_words(f),
    }
}

fn safety_words(f: &Facts) -> (String, Vec<String>) {
    match f.kind.as_str() {
        "safety.tripped" => {
            let mut line = "What fired: heal's safety breaker opened".to_string();
            if !f.since.is_empty() {
                let _ = write!(line, " at {}", f.since);
            }
            let _ = write!(line, ": {}", or(&f.cause, "no reason recorded"));
            let lines = vec![
                line,
                "What heal did: stopped all automation; no rule runs a runbook on any host until the breaker is reset.".to_string(),
                "Next: find out why runs fail (the recent failed events), fix that, then run: heal breaker reset".to_string(),
            ];
            (
                "Safety breaker open: heal stopped all automation".to_string(),
                lines,
            )
        }
        "safety.reset" => {
            let lines = vec![
                format!(
                    "Result: the safety breaker is closed again{}; rules run runbooks again.",
                    after(f, "being open")
                ),
                "Next: nothing to do; watch the next events.".to_string(),
            ];
            (
                "Safety breaker reset: automation runs again".to_string(),
                lines,
            )
        }
        _ => other_words(f),
    }
}

fn test_words(f: &Facts) -> (String, Vec<String>) {
    let what = if f.kind == "test.resolved" {
        "Test notification resolved"
    } else {
        "Test notification"
    };
    let title = if f.channel.is_empty() {
        format!("{what} from heal")
    } else {
        format!("{what} from heal to channel {}", f.channel)
    };
    let lines = vec![
        "What fired: nothing; this is a test, and heal did nothing.".to_string(),
        "Next: nothing to do; if you can read this, the channel works.".to_string(),
    ];
    (title, lines)
}

/// A kind this version does not know: its name and whatever the alert says.
fn other_words(f: &Facts) -> (String, Vec<String>) {
    let title = if f.kind.is_empty() {
        "heal notification".to_string()
    } else {
        format!("heal notification: {}", f.kind)
    };
    (title, fired(f))
}

// ---- fields and output ------------------------------------------------------

pub(super) fn fields(f: &Facts) -> Vec<(&'static str, String)> {
    let mut out = vec![("Severity", f.severity.to_string())];
    push(&mut out, "Priority", f.priority);
    push(&mut out, "Team", &f.team);
    let resolving = kind_named(&f.kind).is_some_and(|k| k.resolves);
    let (time_name, time) = if resolving {
        ("Lasted", &f.lasted)
    } else {
        ("Since", &f.since)
    };
    match f.group {
        "event" => event_fields(&mut out, f),
        "heartbeat" | "probe" | "agent" => {
            let name = match f.group {
                "heartbeat" => "Heartbeat",
                "probe" => "Probe",
                _ => "Agent",
            };
            push(&mut out, name, &f.name);
            push(&mut out, "Alert", &f.alert);
            push(&mut out, time_name, time);
        }
        "safety" => push(&mut out, time_name, time),
        "test" => push(&mut out, "Channel", &f.channel),
        _ => {
            push(&mut out, "Alert", &f.alert);
            push(&mut out, "Since", &f.since);
        }
    }
    out
}

fn event_fields(out: &mut Vec<(&'static str, String)>, f: &Facts) {
    // A started event is recorded as queued; what a person wants to know
    // is that it runs.
    let state = if f.kind == "event.started" {
        "started".to_string()
    } else {
        f.state.replace('_', " ")
    };
    let event = match (f.event.is_empty(), state.is_empty()) {
        (true, _) => String::new(),
        (false, true) => f.event.clone(),
        (false, false) => format!("{} ({state})", f.event),
    };
    push(out, "Event", &event);
    push(out, "Rule", &f.rule);
    push(out, "Runbook", &f.runbook);
    push(out, "Targets", &f.targets);
    if f.key != f.targets {
        push(out, "Key", &f.key);
    }
    push(out, "Alert", &f.alert);
    if !f.mode.is_empty() && f.mode != "live" {
        push(out, "Mode", &f.mode);
    }
}

fn push(out: &mut Vec<(&'static str, String)>, name: &'static str, value: &str) {
    if !value.is_empty() {
        out.push((name, cut(value, FIELD_MAX)));
    }
}

/// The first op that failed, timed out or was lost.
pub(super) fn failing_op(doc: &Value) -> Option<&Value> {
    doc["ops"]
        .as_array()?
        .iter()
        .find(|op| matches!(get(op, &["state"]), "failed" | "timed_out" | "lost"))
}

/// "step restart exited 1", "step restart timed out", "op lost", "no step
/// ran" (an agent that refused the op).
pub(super) fn op_failure(op: &Value) -> String {
    let step = first(&[&op["step"]], NAME_MAX);
    let step = if step.is_empty() {
        step
    } else {
        format!("step {step} ")
    };
    match (get(op, &["state"]), op["exit_code"].as_i64()) {
        ("timed_out", _) => format!("{step}timed out"),
        ("lost", _) => "op lost".to_string(),
        (_, Some(code)) => format!("{step}exited {code}"),
        (_, None) if step.is_empty() => "no step ran".to_string(),
        (_, None) => format!("{step}failed"),
    }
}

/// "Ops: web-1 failed (step restart exited 1); web-2 succeeded", when an
/// event has more than one op.
pub(super) fn ops_line(doc: &Value) -> String {
    let ops = doc["ops"].as_array().map_or(&[][..], Vec::as_slice);
    let total = doc["ops_total"].as_u64().unwrap_or(0).max(ops.len() as u64);
    if total < 2 {
        return String::new();
    }
    let shown: Vec<String> = ops
        .iter()
        .take(5)
        .map(|op| {
            let agent = or(&first(&[&op["agent"]], NAME_MAX), "?").to_string();
            match get(op, &["state"]) {
                "failed" | "timed_out" | "lost" => format!("{agent} failed ({})", op_failure(op)),
                state => format!("{agent} {}", clean(&state.replace('_', " "), NAME_MAX)),
            }
        })
        .collect();
    let mut line = format!("Ops: {}", shown.join("; "));
    if total > shown.len() as u64 {
        let _ = write!(line, "; and {} more", total - shown.len() as u64);
    }
    line
}

/// The failing op's heading and output tail, for the kinds that report an
/// end (a started event's ops may have ended by the time it is sent: their
/// output belongs to the message of that end); none for other kinds.
pub(super) fn output(doc: &Value, f: &Facts) -> Option<(String, String)> {
    if f.group != "event" || matches!(f.kind.as_str(), "event.succeeded" | "event.started") {
        return None;
    }
    let op = failing_op(doc)?;
    let mut tail_text = tail(get(op, &["output"]), OUTPUT_MAX);
    if tail_text.is_empty() {
        tail_text = clean(get(op, &["error"]), OUTPUT_MAX);
    }
    if tail_text.is_empty() {
        return None;
    }
    Some((op_heading(op), tail_text))
}

/// "web-1 · step restart · exit 1".
fn op_heading(op: &Value) -> String {
    let step = first(&[&op["step"]], NAME_MAX);
    let end = match (op["exit_code"].as_i64(), get(op, &["state"])) {
        (Some(code), _) => format!("exit {code}"),
        (None, "timed_out") => "timed out".to_string(),
        (None, state) => clean(state, NAME_MAX),
    };
    let parts = [
        first(&[&op["agent"]], NAME_MAX),
        if step.is_empty() {
            step
        } else {
            format!("step {step}")
        },
        end,
    ];
    let parts: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        "the failing op".to_string()
    } else {
        parts.join(" · ")
    }
}
