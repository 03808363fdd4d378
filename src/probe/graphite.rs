//! The Graphite check: graphite-web's render API
//! (`/render?target=…&from=…&format=json`), each series reduced to one
//! number (`aggregate` of its points, nulls skipped), and every number must
//! meet the expectation.
//!
//! A series with only nulls has no number and is left out; no number at
//! all is "no data", a failure unless `empty_ok`. The answer is read up to
//! 1 MiB (`BODY_LIMIT`); a longer one fails and names the limit, rather
//! than being judged on part of its series.

use std::time::Duration;

use serde_json::Value;

use super::http::{agent, non_json, read_answer, status_text, Answer, BODY_LIMIT};
use super::{fail, judge_samples, Aggregate, Graphite, Outcome, Sample};

/// Renders the target; ok when every series' aggregate satisfies the expectation.
pub(super) fn run_graphite(graphite: &Graphite, timeout: Duration) -> Outcome {
    let url = format!("{}/render", graphite.url.trim_end_matches('/'));
    let result = agent(timeout, None)
        .get(&url)
        .query("target", &graphite.target)
        .query("from", &graphite.from)
        .query("format", "json")
        .call();
    let answer = match read_answer(result, &url, timeout) {
        Ok(answer) => answer,
        Err(e) => return fail(e, None),
    };
    match parse_series(&answer, &url, graphite.aggregate) {
        Ok(samples) => judge_samples(
            graphite.expect,
            graphite.warn,
            graphite.empty_ok,
            &samples,
            &format!(
                "target {:?} returned no data from {}",
                graphite.target, graphite.from
            ),
        ),
        Err(e) => fail(e, None),
    }
}

/// Each series' aggregate, named `aggregate(series)`, or what is wrong with the answer.
fn parse_series(answer: &Answer, url: &str, aggregate: Aggregate) -> Result<Vec<Sample>, String> {
    if answer.body.len() as u64 >= BODY_LIMIT {
        return Err(format!(
            "{url}: the answer is larger than {} KiB; narrow the target or shorten from",
            BODY_LIMIT / 1024
        ));
    }
    if !(200..300).contains(&answer.status) {
        let text = String::from_utf8_lossy(&answer.body);
        let start: String = text.trim().chars().take(200).collect();
        return Err(format!("{url}: {}: {start}", status_text(answer.status)));
    }
    let json: Value = serde_json::from_slice(&answer.body)
        .map_err(|_| non_json(answer, url, "is this graphite-web's render API?"))?;
    let series = json
        .as_array()
        .ok_or_else(|| format!("{url}: the answer is not a list of series"))?;
    let mut samples = Vec::new();
    for s in series {
        let name = s["target"].as_str().unwrap_or("?");
        let points = s["datapoints"]
            .as_array()
            .ok_or_else(|| format!("{url}: series {name:?} has no \"datapoints\" list"))?;
        let mut values = Vec::new();
        for point in points {
            match &point[0] {
                Value::Null => {}
                Value::Number(n) => values.extend(n.as_f64()),
                other => {
                    return Err(format!(
                        "{url}: series {name:?} has a bad point {other} (expected [value, time])"
                    ))
                }
            }
        }
        if let Some(value) = aggregate.of(&values) {
            samples.push(Sample {
                series: format!("{}({name})", aggregate.as_str()),
                value,
            });
        }
    }
    Ok(samples)
}

impl Aggregate {
    /// The aggregate of `values` (in time order); None when there are none.
    fn of(self, values: &[f64]) -> Option<f64> {
        let last = *values.last()?;
        Some(match self {
            Aggregate::Last => last,
            Aggregate::Avg => values.iter().sum::<f64>() / values.len() as f64,
            Aggregate::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Aggregate::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        })
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use crate::probe::testing::*;
    use crate::probe::*;

    /// Answers captured from graphite-web 1.1.8 (Debian bookworm) for
    /// `servers.web1.cpu` with points 10, 20, 30 between two nulls, an
    /// unknown target, and an unknown function.
    const SERIES: &str = include_str!("../../tests/fixtures/graphite/series.json");
    const EMPTY: &str = include_str!("../../tests/fixtures/graphite/empty.json");
    const BAD_FUNCTION: &str = include_str!("../../tests/fixtures/graphite/unknown_function.txt");

    /// Renders against a responder that answers `body` once.
    fn render(check: &mut Graphite, status: &'static str, body: &str) -> (Outcome, String) {
        let (url, heads) = responder(1, reply(status, body));
        check.url = format!("{url}/");
        let out = run(&Check::Graphite(check.clone()), TIMEOUT);
        let head = heads.recv_timeout(SERVER_WAIT).unwrap_or_default();
        (out, head)
    }

    fn check_aggregate(aggregate: Aggregate, expect: &str, ok: bool, detail: &str) {
        let mut check = graphite("", "servers.web1.cpu", expect);
        check.aggregate = aggregate;
        let (out, _) = render(&mut check, "200 OK", SERIES);
        assert_eq!((out.ok, out.detail.as_str()), (ok, detail), "{aggregate:?}");
    }

    #[test]
    fn graphite_aggregates_skip_nulls() {
        use Aggregate::*;
        check_aggregate(
            Last,
            "< 85",
            true,
            "1 sample < 85, worst last(servers.web1.cpu) = 30",
        );
        check_aggregate(
            Last,
            "< 25",
            false,
            "last(servers.web1.cpu) = 30, expected < 25",
        );
        check_aggregate(
            Avg,
            "== 20",
            true,
            "1 sample == 20, worst avg(servers.web1.cpu) = 20",
        );
        check_aggregate(
            Max,
            "<= 29",
            false,
            "max(servers.web1.cpu) = 30, expected <= 29",
        );
        check_aggregate(
            Min,
            "> 10",
            false,
            "min(servers.web1.cpu) = 10, expected > 10",
        );
    }

    #[test]
    fn graphite_warn_threshold_gives_a_warning_below_critical() {
        let body = r#"[{"target":"a","datapoints":[[50,1]]},
            {"target":"b","datapoints":[[75,1]]},
            {"target":"c","datapoints":[[72,1]]}]"#;
        let mut check = graphite("", "*", "< 85");
        check.warn = Some(Expect::parse("< 70").unwrap());
        let (out, _) = render(&mut check, "200 OK", body);
        assert_eq!(out.level(), Level::Warning, "{out:?}");
        assert_eq!(
            out.detail,
            "last(b) = 75, warning: expected < 70 (1 more failing)"
        );
        for (value, level, detail) in [
            (90, Level::Critical, "last(a) = 90, expected < 85"),
            (10, Level::Ok, "1 sample < 70, worst last(a) = 10"),
        ] {
            let body = format!(r#"[{{"target":"a","datapoints":[[{value},1]]}}]"#);
            let (out, _) = render(&mut check, "200 OK", &body);
            assert_eq!((out.level(), out.detail.as_str()), (level, detail));
        }
    }

    #[test]
    fn graphite_asks_the_render_api_for_json() {
        let mut check = graphite("", "sumSeries(servers.*.cpu)", "< 85");
        check.from = "-10min".into();
        let (out, head) = render(&mut check, "200 OK", SERIES);
        assert!(out.ok, "{out:?}");
        assert_eq!(out.value, Some(30.0));
        assert!(
            head.starts_with(
                "GET /render?target=sumSeries(servers.*.cpu)&from=-10min&format=json HTTP/1.1"
            ),
            "{head}"
        );
    }

    #[test]
    fn graphite_worst_series_is_named() {
        let body = r#"[{"target":"a","datapoints":[[1,1],[null,2]]},
            {"target":"b","datapoints":[[null,1],[null,2]]},
            {"target":"c","datapoints":[[90,1],[95.5,2]]},
            {"target":"d","datapoints":[[99,1],[88,2]]}]"#;
        let mut check = graphite("", "*", "< 85");
        let (out, _) = render(&mut check, "200 OK", body);
        assert!(!out.ok);
        assert_eq!(out.detail, "last(c) = 95.5, expected < 85 (1 more failing)");
        assert_eq!(out.value, Some(95.5));
    }

    #[test]
    fn graphite_no_data_fails_unless_empty_ok() {
        let mut check = graphite("", "servers.nothing", "< 85");
        let only_nulls = r#"[{"target":"x","datapoints":[[null,1],[null,2]]}]"#;
        for body in [EMPTY, only_nulls] {
            check.empty_ok = false;
            let (out, _) = render(&mut check, "200 OK", body);
            assert!(!out.ok);
            assert_eq!(
                out.detail,
                "target \"servers.nothing\" returned no data from -5min"
            );
            check.empty_ok = true;
            let (out, _) = render(&mut check, "200 OK", body);
            assert!(out.ok, "{out:?}");
            assert_eq!(out.value, None);
        }
    }

    #[test]
    fn graphite_http_error_shows_graphite_s_reason() {
        let mut check = graphite("", "nosuchfn(servers.web1.cpu)", "< 85");
        let (out, _) = render(&mut check, "400 Bad Request", BAD_FUNCTION);
        assert!(!out.ok);
        assert!(
            out.detail.ends_with(
                "/render: 400 Bad Request: Invalid parameters (Received request for unknown \
                 function: nosuchfn); targets: \"nosuchfn(servers.web1.cpu)\""
            ),
            "{}",
            out.detail
        );
    }

    #[test]
    fn graphite_bad_json_is_reported() {
        let mut check = graphite("", "x", "< 85");
        for (body, want) in [
            ("<html>", "/render: 200 OK with a non-JSON answer \"<html>\" (is this graphite-web's render API?)"),
            (r#"{"a":1}"#, "/render: the answer is not a list of series"),
            (r#"[{"target":"x"}]"#, "/render: series \"x\" has no \"datapoints\" list"),
            (r#"[{"target":"x","datapoints":[["7",1]]}]"#, "/render: series \"x\" has a bad point \"7\" (expected [value, time])"),
        ] {
            let (out, _) = render(&mut check, "200 OK", body);
            assert!(!out.ok);
            assert!(out.detail.ends_with(want), "{}", out.detail);
        }
    }

    #[test]
    fn graphite_huge_answer_fails_after_the_limit() {
        let point = "[1.0,1700000000],";
        let mut body = String::from(r#"[{"target":"x","datapoints":["#);
        while body.len() < (2 << 20) {
            body.push_str(point);
        }
        body.push_str("[1.0,1700000000]]}]");
        let mut check = graphite("", "x", "< 85");
        let (out, _) = render(&mut check, "200 OK", &body);
        assert!(!out.ok);
        assert!(
            out.detail.ends_with(
                "/render: the answer is larger than 1024 KiB; narrow the target or shorten from"
            ),
            "{}",
            out.detail
        );
    }

    #[test]
    fn graphite_timeout_is_reported() {
        let url = silent_server(Duration::from_secs(3));
        let mut check = graphite(&url, "x", "< 85");
        check.url = url;
        let out = run(&Check::Graphite(check), Duration::from_millis(300));
        assert!(!out.ok);
        assert_eq!(out.detail, "timed out after 300ms");
    }
}
