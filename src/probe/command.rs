//! The command check: runs on the server through `exec`, ok on exit 0.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{fail, pass, timed_out, Outcome};
use crate::exec;

/// How much of a command's output ends up in the detail.
const OUTPUT_TAIL: usize = 500;
/// Time between SIGTERM and SIGKILL for a command probe that timed out.
const COMMAND_GRACE: Duration = Duration::from_millis(500);

/// Runs the command through `exec`; ok on exit 0.
pub(super) fn run_command(run: &exec::Run, timeout: Duration) -> Outcome {
    let output = exec::Output::new(OUTPUT_TAIL);
    let cancel = AtomicBool::new(false);
    let step = exec::Step {
        run,
        env: &[],
        timeout,
        grace: COMMAND_GRACE,
        stdin: &[],
        cwd: None,
    };
    let end = exec::run_step(&step, &output, &cancel);
    if let Some(e) = end.spawn_error {
        return fail(e, None);
    }
    let how = if end.timed_out {
        timed_out(timeout)
    } else if let Some(code) = end.exit_code {
        format!("exit {code}")
    } else if let Some(signal) = end.signal {
        format!("killed by signal {signal}")
    } else {
        "ended without an exit status".into()
    };
    let tail = output_line(&output);
    let detail = if tail.is_empty() {
        how
    } else {
        format!("{how}: {tail}")
    };
    Outcome {
        ok: end.success(),
        ..pass(detail, None)
    }
}

/// The output tail on one line: lines trimmed and joined with " | ", "…"
/// when cut. `exec`'s own marker lines ("[heal: step timed out ...]") are
/// left out, since the detail already says how the command ended.
fn output_line(output: &exec::Output) -> String {
    let (tail, dropped) = output.tail();
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("[heal: step "))
        .collect();
    let joined = lines.join(" | ");
    if dropped && !joined.is_empty() {
        format!("…{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use super::*;
    use crate::probe::testing::*;
    use crate::probe::*;

    fn command(script: &str, timeout: Duration) -> Outcome {
        let run_ = exec::Run::Shell(script.to_string());
        run(&Check::Command { run: run_ }, timeout)
    }

    #[test]
    fn command_true_is_ok() {
        let out = command("true", TIMEOUT);
        assert!(out.ok, "{out:?}");
        assert_eq!(out.detail, "exit 0");
    }

    #[test]
    fn command_false_fails_with_exit_code_and_output() {
        assert_eq!(command("false", TIMEOUT).detail, "exit 1");
        let out = command("echo disk full; echo >&2 on /var; exit 3", TIMEOUT);
        assert!(!out.ok);
        assert_eq!(out.detail, "exit 3: disk full | on /var");
    }

    #[test]
    fn command_output_is_cut_to_its_tail() {
        let out = command("seq 1 1000", TIMEOUT);
        assert!(out.ok);
        assert!(out.detail.starts_with("exit 0: …"), "{}", out.detail);
        assert!(out.detail.ends_with("999 | 1000"), "{}", out.detail);
        // Each newline of the tail becomes " | ".
        assert!(out.detail.len() < 2 * OUTPUT_TAIL, "{}", out.detail);
    }

    #[test]
    fn command_past_its_timeout_fails() {
        let start = Instant::now();
        let out = command("echo waiting; sleep 10", Duration::from_millis(300));
        assert!(!out.ok);
        assert_eq!(out.detail, "timed out after 300ms: waiting");
        assert!(start.elapsed() < Duration::from_secs(3), "{out:?}");
    }
}
