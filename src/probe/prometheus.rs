//! The Prometheus check: an instant query whose every sample must meet
//! the expectation.

use std::time::Duration;

use serde_json::Value;

use super::http::{agent, non_json, read_answer, status_text, Answer};
use super::{fail, judge_samples, Outcome, Prometheus, Sample};

/// An instant query; ok when every sample satisfies the expectation.
pub(super) fn run_prometheus(prometheus: &Prometheus, timeout: Duration) -> Outcome {
    let url = format!("{}/api/v1/query", prometheus.url.trim_end_matches('/'));
    let agent = agent(timeout, None);
    let result = agent.get(&url).query("query", &prometheus.query).call();
    let answer = match read_answer(result, &url, timeout) {
        Ok(answer) => answer,
        Err(e) => return fail(e, None),
    };
    match parse_samples(&answer, &url, &prometheus.query) {
        Ok(samples) => judge_samples(
            prometheus.expect,
            prometheus.warn,
            prometheus.empty_ok,
            &samples,
            "query returned no data",
        ),
        Err(e) => fail(e, None),
    }
}

/// Reads the samples out of a query answer, or says what is wrong with it.
fn parse_samples(answer: &Answer, url: &str, query: &str) -> Result<Vec<Sample>, String> {
    let json: Value = serde_json::from_slice(&answer.body)
        .map_err(|_| non_json(answer, url, "is this a Prometheus server?"))?;
    if json["status"] == "error" {
        let kind = json["errorType"].as_str().unwrap_or("error");
        let error = json["error"].as_str().unwrap_or("no reason given");
        return Err(format!("prometheus {kind} for query {query:?}: {error}"));
    }
    if json["status"] != "success" {
        return Err(format!(
            "{url}: {} with an answer that has no \"status\": \"success\"",
            status_text(answer.status)
        ));
    }
    let data = &json["data"];
    match data["resultType"].as_str().unwrap_or("") {
        "vector" => vector_samples(&data["result"]),
        "scalar" => Ok(vec![Sample {
            series: "scalar".into(),
            value: sample_value(&data["result"])?,
        }]),
        "matrix" => Err(format!(
            "query {query:?} returned a range vector; use an instant query (drop the [range])"
        )),
        other => Err(format!(
            "query {query:?} returned a {other:?} result; expected a vector or a scalar"
        )),
    }
}

/// The samples of an instant vector: `[{"metric": {...}, "value": [t, "v"]}, ...]`.
fn vector_samples(result: &Value) -> Result<Vec<Sample>, String> {
    let items = result.as_array().ok_or("vector result is not a list")?;
    items
        .iter()
        .map(|item| {
            Ok(Sample {
                series: series_name(&item["metric"]),
                value: sample_value(&item["value"])?,
            })
        })
        .collect()
}

/// The value of `[timestamp, "value"]`; Prometheus writes "NaN", "+Inf", "-Inf".
fn sample_value(pair: &Value) -> Result<f64, String> {
    let text = pair[1]
        .as_str()
        .ok_or_else(|| format!("bad sample {pair} (expected [time, \"value\"])"))?;
    text.parse()
        .map_err(|_| format!("bad sample value {text:?}"))
}

/// `up{instance="x",job="y"}` from a metric's labels.
fn series_name(metric: &Value) -> String {
    let Some(labels) = metric.as_object() else {
        return "{}".into();
    };
    let name = labels.get("__name__").and_then(Value::as_str).unwrap_or("");
    let mut pairs: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or("")))
        .collect();
    // Sorted, so the text does not depend on serde_json's map order.
    pairs.sort();
    if pairs.is_empty() && !name.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", pairs.join(","))
    }
}

#[cfg(test)]
mod tests {

    use crate::probe::testing::*;
    use crate::probe::*;

    /// Runs a query against a responder that answers `body` once.
    fn query(check: &mut Prometheus, status: &'static str, body: &str) -> (Outcome, String) {
        let (url, heads) = responder(1, reply(status, body));
        check.url = format!("{url}/");
        let out = run(&Check::Prometheus(check.clone()), TIMEOUT);
        let head = heads.recv_timeout(SERVER_WAIT).unwrap_or_default();
        (out, head)
    }

    const UP_VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"__name__":"up","job":"y","instance":"a"},"value":[1700000000.1,"1"]},
        {"metric":{"__name__":"up","job":"y","instance":"x"},"value":[1700000000.1,"0"]}]}}"#;

    #[test]
    fn prometheus_vector_all_satisfied_is_ok() {
        let mut check = prometheus("", r#"up{job="y"}"#, ">= 0");
        let (out, head) = query(&mut check, "200 OK", UP_VECTOR);
        assert!(out.ok, "{out:?}");
        assert_eq!(
            out.detail,
            r#"2 samples >= 0, worst up{instance="x",job="y"} = 0"#
        );
        assert_eq!(out.value, Some(0.0));
        assert!(
            head.starts_with("GET /api/v1/query?query=up%7Bjob%3D%22y%22%7D HTTP/1.1"),
            "{head}"
        );
    }

    #[test]
    fn prometheus_violation_names_series_and_value() {
        let mut check = prometheus("", "up", "== 1");
        let (out, _) = query(&mut check, "200 OK", UP_VECTOR);
        assert!(!out.ok);
        assert_eq!(out.detail, r#"up{instance="x",job="y"} = 0, expected == 1"#);
        assert_eq!(out.value, Some(0.0));
    }

    #[test]
    fn prometheus_worst_of_several_failing_samples() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"mount":"/"},"value":[1,"0.95"]},
            {"metric":{"mount":"/var"},"value":[1,"NaN"]},
            {"metric":{"mount":"/home"},"value":[1,"0.97"]},
            {"metric":{"mount":"/tmp"},"value":[1,"0.1"]}]}}"#;
        let mut check = prometheus("", "disk_used_ratio", "< 0.9");
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(!out.ok);
        assert_eq!(
            out.detail,
            r#"{mount="/var"} = NaN, expected < 0.9 (2 more failing)"#
        );
        assert!(out.value.unwrap().is_nan());
    }

    #[test]
    fn prometheus_scalar_result() {
        let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        let mut check = prometheus("", "1/0", "> 5");
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(out.ok, "{out:?}");
        assert_eq!(out.detail, "1 sample > 5, worst scalar = +Inf");
    }

    #[test]
    fn prometheus_empty_result_fails_unless_empty_ok() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let mut check = prometheus("", "up == 0", "== 1");
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(!out.ok);
        assert_eq!(out.detail, "query returned no data");
        check.empty_ok = true;
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(out.ok);
        assert_eq!(out.value, None);
    }

    #[test]
    fn prometheus_error_payload_is_reported() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let mut check = prometheus("", "up{", "== 1");
        let (out, _) = query(&mut check, "400 Bad Request", body);
        assert!(!out.ok);
        assert_eq!(
            out.detail,
            r#"prometheus bad_data for query "up{": parse error at char 4"#
        );
    }

    #[test]
    fn prometheus_non_json_answer_is_reported() {
        let mut check = prometheus("", "up", "== 1");
        let (out, _) = query(&mut check, "502 Bad Gateway", "<html>bad gateway</html>");
        assert!(!out.ok);
        assert!(
            out.detail.ends_with(
                "/api/v1/query: 502 Bad Gateway with a non-JSON answer \
                 \"<html>bad gateway</html>\" (is this a Prometheus server?)"
            ),
            "{}",
            out.detail
        );
    }

    #[test]
    fn prometheus_matrix_is_refused() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let mut check = prometheus("", "up[5m]", "== 1");
        let (out, _) = query(&mut check, "200 OK", body);
        assert!(!out.ok);
        assert!(out.detail.contains("range vector"), "{}", out.detail);
    }
}
