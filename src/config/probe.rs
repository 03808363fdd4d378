//! `[[probe]]`: its fields as written (`RawProbe`), the validated `Probe`,
//! and where it runs: on the server, or with `on` on each matching agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::expr::Expr;
use super::watch::{check_labels, priority};
use super::{check_name, expand_env};
use crate::probe::{self, Check, Expect};
use crate::schedule::Schedule;
use crate::time::{format_duration, parse_duration};

/// A probe registered with `PUT /api/v1/probes/NAME`, from its JSON (the
/// fields of a `[[probe]]`), validated as the file's probes are. An API token
/// may not do what only the file may: run a command on the server, or read
/// heal's environment through `${VAR}` in a header it sends where it likes.
/// Its `notify` channels are checked when it is registered (`check_channel`);
/// one removed from the file later is skipped when routing.
pub fn api_probe(def: &serde_json::Value) -> std::result::Result<Probe, String> {
    let raw = RawProbe::deserialize(def).map_err(|e| e.to_string())?;
    if raw.command.is_some() {
        return Err("command: a command probe runs a program as root on the server or on agents; define it in runbooks.toml, or use http, tcp, disk or prometheus".into());
    }
    if let Some((k, _)) = raw
        .http
        .iter()
        .flat_map(|h| &h.headers)
        .find(|(_, v)| v.contains("${"))
    {
        return Err(format!("http.headers.{k}: ${{...}} reads heal's environment, which only runbooks.toml may do; give the value itself"));
    }
    if raw.graphite.as_ref().is_some_and(|g| g.url.contains("${")) {
        return Err("graphite.url: ${...} reads heal's environment, which only runbooks.toml may do; give the credentials in the URL, or put the probe in runbooks.toml".into());
    }
    if let Some(sql) = &raw.sql {
        // `${VAR}` would send heal's environment to a database the caller
        // names; a SQLite file is one on heal's own host, read as root.
        if sql.url.contains("${") {
            return Err("sql.url: ${...} reads heal's environment, which only runbooks.toml may do; give the password in the URL, or put the probe in runbooks.toml".into());
        }
        if !crate::pg::is_url(&sql.url) {
            return Err("sql.url: a SQLite file is read on heal's own host: define such a probe in runbooks.toml; over the API, give postgres://USER@HOST:PORT/DB".into());
        }
    }
    probe(&raw)
}

/// A `[[probe]]`: a check heal runs on a schedule.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Unique name; the `probe` label of its alert.
    pub name: String,
    /// What it checks.
    pub check: Check,
    /// When it runs.
    pub schedule: Schedule,
    /// Longest one run may take.
    pub timeout: Duration,
    /// Failures in a row before `ProbeFailing` fires.
    pub fail_after: u32,
    /// Successes in a row before it resolves.
    pub recover_after: u32,
    /// Free-form tags (`labels.tags` on its alert).
    pub tags: Vec<String>,
    /// Extra labels on its alert.
    pub labels: BTreeMap<String, String>,
    /// Owner, for routing.
    pub team: Option<String>,
    /// `p1`…`p5`, for pagers and routes.
    pub priority: Option<String>,
    /// What it watches, for people.
    pub description: String,
    /// Channels its probe.down and probe.up go to, besides the `[[notify]]` routes.
    pub notify: Vec<String>,
    /// The agents it runs on; None: on the server.
    pub on: Option<On>,
}

impl Probe {
    /// "http", "tcp", "command", "prometheus", "sql", "graphite" or "disk".
    pub fn kind(&self) -> &'static str {
        match self.check {
            Check::Http(_) => "http",
            Check::Tcp { .. } => "tcp",
            Check::Command { .. } => "command",
            Check::Prometheus(_) => "prometheus",
            Check::Sql(_) => "sql",
            Check::Graphite(_) => "graphite",
            Check::Disk(_) => "disk",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    pub(super) name: String,
    every: Option<String>,
    cron: Option<String>,
    tz: Option<String>,
    timeout: Option<String>,
    fail_after: Option<i64>,
    recover_after: Option<i64>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    team: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    notify: Vec<String>,
    http: Option<RawHttp>,
    tcp: Option<RawTcp>,
    command: Option<RawCommand>,
    prometheus: Option<RawPrometheus>,
    sql: Option<RawSql>,
    graphite: Option<RawGraphite>,
    disk: Option<RawDisk>,
    priority: Option<String>,
    on: Option<super::rules::RawTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: String,
    method: Option<String>,
    #[serde(default)]
    status: Vec<u16>,
    body_contains: Option<String>,
    max_latency: Option<String>,
    warn_latency: Option<String>,
    tls_min_days: Option<u32>,
    tls_warn_days: Option<u32>,
    ca_file: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    addr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    run: super::rules::RawRun,
    on: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: String,
    query: String,
    expect: String,
    warn: Option<String>,
    #[serde(default)]
    empty_ok: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSql {
    url: String,
    query: String,
    expect: String,
    warn: Option<String>,
    #[serde(default)]
    empty_ok: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraphite {
    url: String,
    target: String,
    from: Option<String>,
    aggregate: Option<String>,
    expect: String,
    warn: Option<String>,
    #[serde(default)]
    empty_ok: bool,
}

/// A Graphite check: its URL with `${ENV}` expanded, as the SQL check's.
fn graphite(raw: &RawGraphite) -> std::result::Result<probe::Graphite, String> {
    let url = expand_env(&raw.url).map_err(|e| format!("graphite.url: {e}"))?;
    if raw.target.trim().is_empty() {
        return Err("graphite.target: empty; give a metric path, a glob or a function, e.g. \"servers.web1.cpu\"".into());
    }
    let from = raw.from.clone().unwrap_or_else(|| "-5min".into());
    if from.trim().is_empty() {
        return Err("graphite.from: empty; give e.g. \"-5min\"".into());
    }
    let (expect, warn) = thresholds("graphite", &raw.expect, raw.warn.as_deref())?;
    Ok(probe::Graphite {
        url: base_url(&url, "graphite.url")?,
        target: raw.target.clone(),
        from,
        aggregate: probe::Aggregate::parse(raw.aggregate.as_deref().unwrap_or("last"))
            .map_err(|e| format!("graphite.aggregate: {e}"))?,
        expect,
        warn,
        empty_ok: raw.empty_ok,
    })
}

/// The `expect` (critical) and `warn` of a comparing check: the same
/// syntax, and `warn` on the same side and no looser (`Expect::check_warn`).
fn thresholds(
    kind: &str,
    expect: &str,
    warn: Option<&str>,
) -> std::result::Result<(Expect, Option<Expect>), String> {
    let expect = Expect::parse(expect).map_err(|e| format!("{kind}.expect: {e}"))?;
    let Some(warn) = warn else {
        return Ok((expect, None));
    };
    let warn = Expect::parse(warn).map_err(|e| format!("{kind}.warn: {e}"))?;
    expect
        .check_warn(&warn)
        .map_err(|e| format!("{kind}.warn: {e}"))?;
    Ok((expect, Some(warn)))
}

/// A SQL check: its URL with `${ENV}` expanded (credentials stay out of
/// the file) and checked for a scheme heal reads.
fn sql(raw: &RawSql) -> std::result::Result<probe::Sql, String> {
    let shown = crate::redact::redact_url_secrets(&raw.url);
    let url = super::secrets::expand_env(&raw.url).map_err(|e| format!("sql.url: {e}"))?;
    if !crate::pg::is_url(&url) && !url.starts_with("sqlite://") {
        return Err(format!(
            "sql.url: {shown:?} is neither postgres://USER@HOST:PORT/DB nor sqlite:///absolute/path/to.db (for MySQL, use a command probe: see the README)"
        ));
    }
    if url.starts_with("sqlite://") && !url.starts_with("sqlite:///") {
        return Err(format!(
            "sql.url: {shown:?} must name an absolute path: sqlite:///var/lib/app/app.db"
        ));
    }
    if raw.query.trim().is_empty() {
        return Err("sql.query: empty; give one SELECT whose first value is compared".into());
    }
    let (expect, warn) = thresholds("sql", &raw.expect, raw.warn.as_deref())?;
    Ok(probe::Sql {
        url,
        query: raw.query.clone(),
        expect,
        warn,
        empty_ok: raw.empty_ok,
    })
}

pub(super) fn probe(raw: &RawProbe) -> std::result::Result<Probe, String> {
    check_name(&raw.name).map_err(|e| format!("name: {e}"))?;
    let schedule = Schedule::parse(raw.every.as_deref(), raw.cron.as_deref(), raw.tz.as_deref())?;
    let timeout = match &raw.timeout {
        None => Duration::from_secs(10),
        Some(t) => parse_duration(t).map_err(|e| format!("timeout: {e}"))?,
    };
    if timeout.is_zero() {
        return Err("timeout: must be more than 0s".into());
    }
    let count = |v: Option<i64>, default: u32, field: &str| match v {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n as u32),
        Some(n) => Err(format!("{field}: must be from 1 to 1000 (got {n})")),
    };
    check_labels(&raw.labels)?;
    let kinds = [
        raw.http.is_some(),
        raw.tcp.is_some(),
        raw.command.is_some(),
        raw.prometheus.is_some(),
        raw.sql.is_some(),
        raw.graphite.is_some(),
        raw.disk.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(
            "give exactly one of http = {...}, tcp = {...}, command = {...}, prometheus = {...}, sql = {...}, graphite = {...} or disk = {...}"
                .into(),
        );
    }
    let check = if let Some(h) = &raw.http {
        Check::Http(http(h)?)
    } else if let Some(t) = &raw.tcp {
        if t.addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("tcp.addr: {:?} is not host:port", t.addr));
        }
        Check::Tcp {
            addr: t.addr.clone(),
        }
    } else if let Some(c) = &raw.command {
        if c.on.is_some() {
            return Err("command.on: write on beside the check, at the probe's level: on = { tags = [\"db\"] } or on = \"'web-1'\" runs it on those agents".into());
        }
        let run = super::rules::run_of(&c.run).ok_or("command.run: empty command")?;
        Check::Command { run }
    } else if let Some(p) = &raw.prometheus {
        let (expect, warn) = thresholds("prometheus", &p.expect, p.warn.as_deref())?;
        Check::Prometheus(probe::Prometheus {
            url: base_url(&p.url, "prometheus.url")?,
            query: p.query.clone(),
            expect,
            warn,
            empty_ok: p.empty_ok,
        })
    } else if let Some(q) = &raw.sql {
        Check::Sql(sql(q)?)
    } else if let Some(g) = &raw.graphite {
        Check::Graphite(graphite(g)?)
    } else if let Some(d) = &raw.disk {
        Check::Disk(disk(d)?)
    } else {
        unreachable!("exactly one kind was checked above")
    };
    let on = raw.on.as_ref().map(|t| on(t, &check)).transpose()?;
    if check.warns() && raw.labels.contains_key("severity") {
        return Err("labels: \"severity\" is set by heal from the warn and critical thresholds; leave it out".into());
    }
    Ok(Probe {
        name: raw.name.clone(),
        check,
        schedule,
        timeout,
        fail_after: count(raw.fail_after, 2, "fail_after")?,
        recover_after: count(raw.recover_after, 1, "recover_after")?,
        tags: raw.tags.clone(),
        labels: raw.labels.clone(),
        team: raw.team.clone(),
        priority: priority(raw.priority.as_deref())?,
        description: raw.description.clone(),
        notify: raw.notify.clone(),
        on,
    })
}

/// Where a probe runs: `on` names agents, and only the checks that make
/// sense on a host run there.
fn on(raw: &super::rules::RawTarget, check: &Check) -> std::result::Result<On, String> {
    use super::rules::RawTarget;
    if let Check::Prometheus(_) | Check::Sql(_) | Check::Graphite(_) = check {
        return Err("on: prometheus, sql and graphite probes run on the server; leave on out (agents run command, tcp, http and disk checks)".into());
    }
    match raw {
        RawTarget::Tags { tags } if tags.is_empty() => {
            Err("on: tags is empty; give e.g. on = { tags = [\"db\"] }".into())
        }
        RawTarget::Tags { tags } => Ok(On::Tags(tags.clone())),
        RawTarget::Expr(source) => Expr::compile(source)
            .map(|e| On::Expr(Arc::new(e)))
            .map_err(|e| format!("on: {e}")),
    }
}

/// Where an agent-side probe runs.
#[derive(Debug, Clone)]
pub enum On {
    /// Every agent carrying all these tags.
    Tags(Vec<String>),
    /// An expression over `{"probe": NAME, "agents": [{"id", "tags",
    /// "hostname"}, ...]}` giving an agent id or a list of them, such as
    /// `'web-1'`.
    Expr(Arc<Expr>),
}

impl On {
    /// As written: `{ tags = ["db"] }` or the expression.
    pub fn describe(&self) -> String {
        match self {
            On::Tags(tags) => format!("{{ tags = {tags:?} }}"),
            On::Expr(e) => e.source.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    path: String,
    max_used: String,
    warn_used: Option<String>,
}

fn disk(raw: &RawDisk) -> std::result::Result<probe::Disk, String> {
    if !raw.path.starts_with('/') {
        return Err(format!(
            "disk.path: {:?} must be absolute, e.g. \"/var\"",
            raw.path
        ));
    }
    let max_used =
        probe::parse_percent(&raw.max_used).map_err(|e| format!("disk.max_used: {e}"))?;
    let warn_used = raw
        .warn_used
        .as_deref()
        .map(|w| probe::parse_percent(w).map_err(|e| format!("disk.warn_used: {e}")))
        .transpose()?;
    if warn_used.is_some_and(|w| w >= max_used) {
        return Err(format!(
            "disk.warn_used: must be below max_used ({max_used}%)"
        ));
    }
    Ok(probe::Disk {
        path: PathBuf::from(&raw.path),
        max_used,
        warn_used,
    })
}

fn base_url(url: &str, field: &str) -> std::result::Result<String, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{field}: {:?} must start with http:// or https://",
            super::redact_url_secrets(url)
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn http(h: &RawHttp) -> std::result::Result<probe::Http, String> {
    let url = base_url(&h.url, "http.url")?;
    let method = h
        .method
        .clone()
        .unwrap_or_else(|| "GET".into())
        .to_uppercase();
    if !["GET", "HEAD", "POST", "PUT", "OPTIONS"].contains(&method.as_str()) {
        return Err(format!(
            "http.method: {method:?} (GET, HEAD, POST, PUT or OPTIONS)"
        ));
    }
    if let Some(s) = h.status.iter().find(|s| !(100..=599).contains(*s)) {
        return Err(format!("http.status: {s} is not an HTTP status"));
    }
    if h.tls_min_days.is_some() && !url.starts_with("https://") {
        return Err("http.tls_min_days: needs an https:// url".into());
    }
    let latency = |d: &Option<String>, field: &str| {
        d.as_deref()
            .map(|d| parse_duration(d).map_err(|e| format!("http.{field}: {e}")))
            .transpose()
    };
    let max_latency = latency(&h.max_latency, "max_latency")?;
    let warn_latency = latency(&h.warn_latency, "warn_latency")?;
    match (warn_latency, max_latency) {
        (Some(_), None) => {
            return Err("http.warn_latency: needs max_latency (the critical one) beside it".into())
        }
        (Some(w), Some(m)) if w >= m => {
            return Err(format!(
                "http.warn_latency: {} must be shorter than max_latency ({})",
                format_duration(w),
                format_duration(m)
            ))
        }
        _ => {}
    }
    match (h.tls_warn_days, h.tls_min_days) {
        (Some(_), None) => {
            return Err(
                "http.tls_warn_days: needs tls_min_days (the critical one) beside it".into(),
            )
        }
        (Some(w), Some(m)) if w <= m => {
            return Err(format!(
                "http.tls_warn_days: {w} must be more than tls_min_days ({m})"
            ))
        }
        _ => {}
    }
    let mut headers = Vec::new();
    for (k, v) in &h.headers {
        headers.push((
            k.clone(),
            expand_env(v).map_err(|e| format!("http.headers.{k}: {e}"))?,
        ));
    }
    Ok(probe::Http {
        url,
        method,
        expect_status: h.status.clone(),
        body_contains: h.body_contains.clone(),
        max_latency,
        warn_latency,
        tls_min_days: h.tls_min_days,
        tls_warn_days: h.tls_warn_days,
        ca_file: h.ca_file.as_ref().map(PathBuf::from),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fields: serde_json::Value) -> std::result::Result<Probe, String> {
        let mut def = serde_json::json!({ "name": "p", "every": "1m" });
        def.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        probe(&RawProbe::deserialize(&def).map_err(|e| e.to_string())?)
    }

    #[test]
    fn on_names_agents_by_tags_or_expression() {
        let p = parse(
            serde_json::json!({ "on": { "tags": ["db"] }, "tcp": { "addr": "127.0.0.1:5432" } }),
        )
        .unwrap();
        assert!(matches!(&p.on, Some(On::Tags(t)) if t == &["db".to_string()]));
        assert_eq!(p.on.unwrap().describe(), r#"{ tags = ["db"] }"#);
        let p = parse(
            serde_json::json!({ "on": "'web-1'", "disk": { "path": "/var", "max_used": "90%" } }),
        )
        .unwrap();
        assert_eq!(p.on.unwrap().describe(), "'web-1'");
        assert!(
            parse(serde_json::json!({ "tcp": { "addr": "127.0.0.1:1" } }))
                .unwrap()
                .on
                .is_none()
        );
    }

    #[test]
    fn on_refuses_what_cannot_run_on_agents() {
        for (fields, says) in [
            (
                serde_json::json!({ "on": { "tags": [] }, "tcp": { "addr": "h:1" } }),
                "tags is empty",
            ),
            (
                serde_json::json!({ "on": "[", "tcp": { "addr": "h:1" } }),
                "on: ",
            ),
            (
                serde_json::json!({ "on": "'a'", "prometheus": { "url": "http://p", "query": "up", "expect": "== 1" } }),
                "run on the server",
            ),
            (
                serde_json::json!({ "on": "'a'", "sql": { "url": "postgres://u@h/d", "query": "SELECT 1", "expect": "== 1" } }),
                "run on the server",
            ),
            (
                serde_json::json!({ "command": { "run": "true", "on": "'a'" } }),
                "at the probe's level",
            ),
        ] {
            let e = parse(fields.clone()).unwrap_err();
            assert!(e.contains(says), "{fields}: {e}");
        }
    }

    #[test]
    fn disk_takes_an_absolute_path_and_percentages() {
        let p = parse(
            serde_json::json!({ "disk": { "path": "/var", "max_used": "90%", "warn_used": "80" } }),
        )
        .unwrap();
        let Check::Disk(d) = &p.check else {
            panic!("{:?}", p.check)
        };
        assert_eq!((d.max_used, d.warn_used), (90.0, Some(80.0)));
        assert_eq!(p.kind(), "disk");
        assert!(p.check.warns());
        for (disk, says) in [
            (
                serde_json::json!({ "path": "var", "max_used": "90%" }),
                "must be absolute",
            ),
            (
                serde_json::json!({ "path": "/", "max_used": "190%" }),
                "disk.max_used",
            ),
            (
                serde_json::json!({ "path": "/", "max_used": "80%", "warn_used": "90%" }),
                "below max_used",
            ),
            (
                serde_json::json!({ "path": "/", "max_used": "80%", "inodes": true }),
                "unknown field",
            ),
        ] {
            let e = parse(serde_json::json!({ "disk": disk })).unwrap_err();
            assert!(e.contains(says), "{disk}: {e}");
        }
    }

    #[test]
    fn a_check_handed_to_an_agent_reads_back_as_it_was() {
        let p = parse(serde_json::json!({
            "http": { "url": "https://x.example/h", "max_latency": "2s", "warn_latency": "1s", "headers": { "A": "b" } }
        }))
        .unwrap();
        let v = serde_json::to_value(&p.check).unwrap();
        let back: Check = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
        let p = parse(serde_json::json!({ "command": { "run": ["echo", "hi"] } })).unwrap();
        let v = serde_json::to_value(&p.check).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "command": { "run": ["echo", "hi"] } })
        );
    }
}
