//! runbooks.toml → validated `Config`.
//!
//! Two steps: serde structs that mirror the file (`Raw*`), then one
//! `validate` pass that compiles JMESPath, parses durations, expands
//! `${ENV}` secrets and cross-checks names. `serve`, `check-config` and
//! `run-rule` all go through `load`, so the runtime never meets an invalid
//! rule. Every error names file, line, item and field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::exec::Run;
use crate::time::parse_duration;

mod notify;
mod watch;

pub use notify::{
    redact, redact_url, redact_url_secrets, Channel, ChannelKind, RateLimit, Route, Stdin,
};
pub use watch::{
    heartbeat, heartbeat_from_def, Heartbeat, Probe, RawHeartbeat, Retention, Scheduled,
};

/// A compiled JMESPath expression with its source text.
pub struct Expr {
    /// The expression as written in the file.
    pub source: String,
    /// The compiled form.
    pub compiled: jmespath::Expression<'static>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.source)
    }
}

/// Converts JSON into the document form expressions search.
pub fn doc(value: serde_json::Value) -> jmespath::Rcvar {
    use jmespath::ToJmespath;
    value
        .to_jmespath()
        .unwrap_or_else(|_| jmespath::Rcvar::new(jmespath::Variable::Null))
}

/// Most operators and brackets in one expression. The JMESPath parser, and
/// dropping what it built, recurse about once for each; this keeps both
/// within the 2 MiB stack of any heal thread, whatever a pause's `match` or a
/// config file holds.
const MAX_EXPR_OPERATORS: usize = 256;

/// Deepest nesting of a parsed expression: the interpreter recurses once per
/// level each time the expression is evaluated.
const MAX_EXPR_DEPTH: usize = 32;

impl Expr {
    /// Compiles `source`; the error is JMESPath's own message, or says the
    /// expression is too big to evaluate safely.
    pub fn compile(source: &str) -> std::result::Result<Expr, String> {
        let operators = count_operators(source);
        if operators > MAX_EXPR_OPERATORS {
            return Err(format!("{operators} operators and brackets, more than the {MAX_EXPR_OPERATORS} heal evaluates safely (write a simpler expression)"));
        }
        let compiled = jmespath::compile(source).map_err(|e| e.to_string().replace('\n', " "))?;
        let depth = depth(compiled.as_ast());
        if depth > MAX_EXPR_DEPTH {
            return Err(format!("nested {depth} levels deep, more than the {MAX_EXPR_DEPTH} heal evaluates safely (write a flatter expression)"));
        }
        Ok(Expr {
            source: source.to_string(),
            compiled,
        })
    }

    /// Evaluates over a document and returns the result as JSON.
    pub fn eval(&self, doc: &jmespath::Rcvar) -> std::result::Result<serde_json::Value, String> {
        let var = self
            .compiled
            .search(doc.clone())
            .map_err(|e| format!("`{}`: {}", self.source, e.to_string().replace('\n', " ")))?;
        serde_json::to_value(&*var).map_err(|e| format!("`{}`: {e}", self.source))
    }

    /// Evaluates and applies JMESPath truthiness (false, null, "", [] and {} are false).
    pub fn truthy(&self, doc: &jmespath::Rcvar) -> std::result::Result<bool, String> {
        let var = self
            .compiled
            .search(doc.clone())
            .map_err(|e| format!("`{}`: {}", self.source, e.to_string().replace('\n', " ")))?;
        Ok(var.is_truthy())
    }
}

/// Operator and bracket characters outside quoted strings and literals.
fn count_operators(source: &str) -> usize {
    let mut count = 0;
    let mut quote = None;
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, c) if "()[]{}!&|.=<>*?".contains(c) => count += 1,
            (None, _) => {}
        }
    }
    count
}

/// The sub-expressions of a parsed expression's node.
fn children(node: &jmespath::ast::Ast) -> Vec<&jmespath::ast::Ast> {
    use jmespath::ast::Ast;
    match node {
        Ast::Comparison { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. }
        | Ast::Projection { lhs, rhs, .. }
        | Ast::Subexpr { lhs, rhs, .. } => vec![lhs, rhs],
        Ast::Condition {
            predicate, then, ..
        } => vec![predicate, then],
        Ast::Expref { ast, .. } => vec![ast],
        Ast::Flatten { node, .. } | Ast::Not { node, .. } | Ast::ObjectValues { node, .. } => {
            vec![node]
        }
        Ast::Function { args, .. } => args.iter().collect(),
        Ast::MultiList { elements, .. } => elements.iter().collect(),
        Ast::MultiHash { elements, .. } => elements.iter().map(|kv| &kv.value).collect(),
        Ast::Identity { .. }
        | Ast::Field { .. }
        | Ast::Index { .. }
        | Ast::Literal { .. }
        | Ast::Slice { .. } => Vec::new(),
    }
}

/// How deep a parsed expression nests, walked without recursion.
fn depth(ast: &jmespath::ast::Ast) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(ast, 1)];
    while let Some((node, level)) = stack.pop() {
        deepest = deepest.max(level);
        stack.extend(children(node).into_iter().map(|child| (child, level + 1)));
    }
    deepest
}

/// The bare `true`, `false` or `null` of an expression, walked without
/// recursion: JMESPath reads each as a lookup of a field of that name (null
/// in any alert), not as the literal (`` `true` ``). A field of an object
/// (`labels.true`) is a name, and is left alone.
fn literal_lookalikes(ast: &jmespath::ast::Ast) -> Vec<&str> {
    use jmespath::ast::Ast;
    let mut found = Vec::new();
    let mut stack = vec![(ast, false)];
    while let Some((node, of_object)) = stack.pop() {
        match node {
            Ast::Field { name, .. }
                if !of_object && matches!(name.as_str(), "true" | "false" | "null") =>
            {
                if !found.contains(&name.as_str()) {
                    found.push(name.as_str());
                }
            }
            Ast::Subexpr { lhs, rhs, .. } | Ast::Projection { lhs, rhs, .. } => {
                stack.push((rhs, true));
                stack.push((lhs, of_object));
            }
            // In reverse, so that they are found in the order written.
            _ => stack.extend(children(node).into_iter().rev().map(|child| (child, false))),
        }
    }
    found
}

/// The validated configuration. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file's text, hex: which version of the file is running.
    pub hash: String,
    /// The file's text (kept for `GET /api/v1/config`, which redacts it).
    pub text: String,
    /// `[server]`.
    pub server: Server,
    /// `[[token]]` in file order.
    pub tokens: Vec<Token>,
    /// `[[source]]` by name.
    pub sources: BTreeMap<String, Source>,
    /// `[[rule]]` in file order.
    pub rules: Vec<Rule>,
    /// `[runbook.NAME]` by name.
    pub runbooks: BTreeMap<String, Arc<Runbook>>,
    /// `[safety]`: the global breaker and fan-out cap.
    pub safety: Safety,
    /// `[[heartbeat]]` by name.
    pub heartbeats: BTreeMap<String, Heartbeat>,
    /// `[[probe]]` by name.
    pub probes: BTreeMap<String, Probe>,
    /// `[[schedule]]` in file order; each is decided by its rule in `rules`.
    pub schedules: Vec<Scheduled>,
    /// `[retention]`.
    pub retention: Retention,
    /// `[channel.NAME]` by name.
    pub channels: BTreeMap<String, Channel>,
    /// `[[notify]]` routes in file order.
    pub routes: Vec<Route>,
    /// What the file says that is valid but likely not meant ("FILE:LINE:
    /// ITEM: …"): `check-config` prints them, the server logs them.
    pub warnings: Vec<String>,
}

/// `[safety]` settings: limits over all rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Safety {
    /// Runs allowed in any hour; the next one opens the breaker.
    pub max_runs_per_hour: u32,
    /// Failed events in a row that open the breaker.
    pub max_failed_in_row: u32,
    /// Most agents one decision may fan out to (a rule may lower or raise it).
    pub max_targets: u32,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_runs_per_hour: 60,
            max_failed_in_row: 10,
            max_targets: 20,
        }
    }
}

/// `[server]` settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// Address to listen on (`--listen` overrides).
    pub listen: String,
    /// SQLite file (`--db` overrides).
    pub db: PathBuf,
    /// Longest a poll waits for work.
    pub poll_wait: Duration,
    /// Time a dispatched op has to be acknowledged by its agent.
    pub lease: Duration,
    /// Time between SIGTERM and SIGKILL for a step, and slack past an op's deadline.
    pub kill_grace: Duration,
    /// Longest an op waits in the queue for its agent before it is given up as lost.
    pub dispatch_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub max_body: usize,
    /// Output kept per step, in bytes (the tail).
    pub max_output: usize,
    /// HTTP worker threads.
    pub http_threads: usize,
    /// An agent that has not polled for this long raises `AgentDown`.
    pub agent_down_after: Duration,
    /// An agent silent for this long, with no op still to end, is forgotten
    /// (`None`: never).
    pub forget_agents_after: Option<Duration>,
    /// Where people reach this server (links in notifications).
    pub public_url: Option<String>,
    /// PEM certificate chain: with `tls_key`, heal speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub tls_key: Option<PathBuf>,
    /// Largest request head (request line and headers), in bytes.
    pub max_header: usize,
    /// Longest a client may take to send one request (and finish a TLS handshake).
    pub request_timeout: Duration,
    /// A connection with no request in flight or awaiting its answer is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// A URL heal GETs on a schedule while it is healthy (a dead man's switch elsewhere).
    pub watchdog: Option<Watchdog>,
    /// A reload may leave no token or no rule where the running config has
    /// some (see `emptied`); without it such a reload is refused.
    pub allow_empty: bool,
    /// Proxies whose `X-Forwarded-For` names the client (addresses or CIDR blocks).
    pub trusted_proxies: Vec<Cidr>,
}

/// An address block of `[server] trusted_proxies`: an address and how many
/// leading bits of it count (all of them for a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    bits: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8`, or a single address such as `127.0.0.1`.
    pub fn parse(text: &str) -> std::result::Result<Cidr, String> {
        let (addr, bits) = text.split_once('/').unwrap_or((text, ""));
        let addr: std::net::IpAddr = addr.trim().parse().map_err(|_| {
            format!("{text:?} is not an address like 10.0.0.1 or a block like 10.0.0.0/8")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits =
            match bits {
                "" => max,
                b => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| {
                    format!("{text:?}: the prefix length must be from 0 to {max}")
                })?,
            };
        Ok(Cidr { addr, bits })
    }

    /// Whether `ip` lies in the block (an IPv4 address in IPv6 form counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(ip, V4),
            v4 => v4,
        };
        let (net, ip, width) = match (self.addr, ip) {
            (V4(n), V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (V6(n), V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= width || (net >> shift) == (ip >> shift)
    }
}

/// `[server] watchdog_url` and `watchdog_every`.
#[derive(Clone)]
pub struct Watchdog {
    /// The URL, after `${ENV}` expansion (it may hold a secret: log `redact_url` of it).
    pub url: String,
    /// Time between pings (default 1m).
    pub every: Duration,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Watchdog({} every {:?})",
            redact_url(&self.url),
            self.every
        )
    }
}

/// A token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Everything.
    Admin,
    /// GET of alerts, events, agents.
    Read,
    /// Alert intake.
    Webhook,
    /// Heartbeat pings.
    Ping,
    /// Agent polling and reporting.
    Agent,
}

impl Scope {
    /// A scope by its name in the config.
    pub fn parse(text: &str) -> Option<Scope> {
        Some(match text {
            "admin" => Scope::Admin,
            "read" => Scope::Read,
            "webhook" => Scope::Webhook,
            "ping" => Scope::Ping,
            "agent" => Scope::Agent,
            _ => return None,
        })
    }
}

/// A `[[token]]`.
#[derive(Clone)]
pub struct Token {
    /// Name used in logs and the audit trail (never the secret).
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// SHA-256 of the secret: the secret itself is never kept.
    pub hash: [u8; 32],
    /// For agent tokens: the only agent id it may act as.
    pub agent: Option<String>,
    /// For tokens bound to an agent: the only tags that agent may declare
    /// (none when left out). An unbound agent token may declare any.
    pub tags: Vec<String>,
    /// From this time on (UTC ms) the token is refused.
    pub expires: Option<i64>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Token({}, {:?}, agent {:?}, tags {:?}, secret hashed)",
            self.name, self.scopes, self.agent, self.tags
        )
    }
}

/// `[[token]] expires`: an RFC 3339 time, or a date (the token ends as it begins, 00:00 UTC).
pub fn parse_expiry(text: &str) -> std::result::Result<i64, String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    match crate::time::parse_rfc3339(&full) {
        Ok(Some(ms)) => Ok(ms),
        _ => Err(format!(
            "{text:?} is not a date like \"2027-01-31\" or a time like \"2027-01-31T12:00:00Z\""
        )),
    }
}

impl Token {
    /// Whether the token may use routes that need `scope`: it has that
    /// scope, or admin, which covers every scope but agent. Acting as an
    /// agent (taking ops and their alert data, reporting results) needs
    /// the agent scope itself, so a leaked admin token cannot pose as a host.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
            || (scope != Scope::Agent && self.scopes.contains(&Scope::Admin))
    }

    /// The first of an agent's declared tags this token does not allow, if
    /// any: a token bound to an agent allows only its `tags`, an unbound
    /// one allows every tag.
    pub fn tag_not_allowed<'t>(&self, declared: &'t [String]) -> Option<&'t str> {
        self.agent.as_ref()?;
        declared
            .iter()
            .find(|t| !self.tags.contains(t))
            .map(String::as_str)
    }

    /// Whether the token has expired at `now` (UTC ms).
    pub fn expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// Whether `presented` is this token's secret: its hash compared in
    /// constant time.
    pub fn matches(&self, presented: &str) -> bool {
        hash_matches(presented, &self.hash)
    }
}

/// SHA-256 of a token's secret, as `[[token]] secret_sha256` holds it.
pub fn token_hash(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `presented` hashes to `hash` (a token's or a ping key's
/// SHA-256), compared in constant time.
pub fn hash_matches(presented: &str, hash: &[u8; 32]) -> bool {
    let h = token_hash(presented);
    let mut diff = 0u8;
    for (a, b) in h.iter().zip(hash.iter()) {
        diff |= a ^ b;
    }
    diff == 0
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A `[[source]]`: maps any JSON webhook to alerts.
#[derive(Debug)]
pub struct Source {
    /// The `<source>` of `/hooks/<source>`.
    pub name: String,
    /// Evaluated over the body: the list of alerts (default: the body, or `[body]`).
    pub alerts: Option<Expr>,
    /// Evaluated over each alert: its name.
    pub name_expr: Expr,
    /// Evaluated over each alert: "firing" or "resolved" (default: firing).
    pub status: Option<Expr>,
    /// Evaluated over each alert: an object of labels.
    pub labels: Option<Expr>,
    /// Evaluated over each alert: an object of annotations.
    pub annotations: Option<Expr>,
    /// Evaluated over each alert: its fingerprint (default: hash of the labels).
    pub fingerprint: Option<Expr>,
    /// Evaluated over each alert: RFC 3339 start time.
    pub starts_at: Option<Expr>,
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the named runbook.
    Run(String),
    /// Record and drop the alert.
    Discard,
}

/// Where a rule's runbook runs.
#[derive(Debug)]
pub enum Target {
    /// An expression giving an agent id or a list of them.
    Expr(Expr),
    /// Every agent carrying all these tags.
    Tags(Vec<String>),
}

/// Whether a rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Runs the runbook.
    Live,
    /// Records what would run and runs nothing.
    DryRun,
}

/// A `[[rule]]`.
#[derive(Debug)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Line of the `[[rule]]` in the file.
    pub line: usize,
    /// Match condition (default: always).
    pub when: Option<Expr>,
    /// Run a runbook or discard.
    pub action: Action,
    /// Where to run (required for `Action::Run`).
    pub target: Option<Target>,
    /// HEAL_PARAM_<NAME> = expression.
    pub params: Vec<(String, Expr)>,
    /// Identity of "the same problem" (default: the alert's fingerprint).
    pub key: Option<Expr>,
    /// Guard over the context document.
    pub unless: Option<Expr>,
    /// Settle time after an event ends.
    pub cooldown: Duration,
    /// Attempts allowed within `within`.
    pub max_attempts: Option<u32>,
    /// Window for `max_attempts`.
    pub within: Duration,
    /// Wait for a person before running.
    pub approve: bool,
    /// How long an approval may wait.
    pub approve_timeout: Duration,
    /// Most agents a `{ tags = [...] }` target may reach (default: `[safety] max_targets`).
    pub max_targets: u32,
    /// Live or dry-run.
    pub mode: Mode,
    /// Go on to later rules after this one matched.
    pub cont: bool,
    /// Built for a `[[schedule]]`: never matched against alerts, decided when the schedule fires.
    pub schedule: bool,
}

/// One runbook step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name shown in logs and the timeline.
    pub name: String,
    /// What to execute.
    pub run: Run,
    /// Per-step timeout (default: the runbook's).
    pub timeout: Duration,
    /// Go on to the next step when this one fails.
    pub continue_on_error: bool,
}

/// How an event is checked after its steps.
#[derive(Debug, Clone)]
pub enum Verify {
    /// Success is exit 0 of every step.
    None,
    /// The alert must resolve within this time.
    ResolvedWithin(Duration),
    /// A check command must exit 0 within its retries.
    Run {
        /// The check.
        run: Run,
        /// Tries after the first.
        retries: u32,
        /// Pause between tries.
        interval: Duration,
        /// Timeout of each try (the runbook's step timeout).
        timeout: Duration,
    },
}

/// A `[runbook.NAME]`.
#[derive(Debug)]
pub struct Runbook {
    /// Its name.
    pub name: String,
    /// What it does, for people.
    pub description: String,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Check after the steps.
    pub verify: Verify,
    /// Targets at once when fanning out.
    pub max_parallel: u32,
}

impl std::fmt::Display for Run {
    /// Shows a command as it would be typed: `sh -c '...'`, or the argv list.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Run::Shell(c) => write!(f, "sh -c {c:?}"),
            Run::Argv(v) => write!(f, "{v:?}"),
        }
    }
}

// ---- raw form -------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawServer,
    #[serde(default, rename = "token")]
    tokens: Vec<Spanned<RawToken>>,
    #[serde(default, rename = "source")]
    sources: Vec<Spanned<RawSource>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default, rename = "runbook")]
    runbooks: BTreeMap<String, Spanned<RawRunbook>>,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default, rename = "heartbeat")]
    heartbeats: Vec<Spanned<RawHeartbeat>>,
    #[serde(default, rename = "probe")]
    probes: Vec<Spanned<watch::RawProbe>>,
    #[serde(default, rename = "schedule")]
    schedules: Vec<Spanned<watch::RawSchedule>>,
    #[serde(default)]
    retention: watch::RawRetention,
    #[serde(default, rename = "channel")]
    channels: BTreeMap<String, Spanned<notify::RawChannel>>,
    #[serde(default, rename = "notify")]
    routes: Vec<Spanned<notify::RawRoute>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    max_runs_per_hour: Option<Spanned<i64>>,
    max_failed_in_row: Option<Spanned<i64>>,
    max_targets: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    db: Option<String>,
    poll_wait: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
    kill_grace: Option<Spanned<String>>,
    dispatch_timeout: Option<Spanned<String>>,
    max_body: Option<Spanned<i64>>,
    max_output: Option<Spanned<i64>>,
    http_threads: Option<Spanned<i64>>,
    agent_down_after: Option<Spanned<String>>,
    forget_agents_after: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    max_header: Option<Spanned<i64>>,
    request_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    watchdog_url: Option<Spanned<String>>,
    watchdog_every: Option<Spanned<String>>,
    allow_empty: Option<bool>,
    trusted_proxies: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    scopes: Vec<Spanned<String>>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    secret_sha256: Option<Spanned<String>>,
    agent: Option<String>,
    tags: Option<Spanned<Vec<String>>>,
    expires: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    alerts: Option<Spanned<String>>,
    #[serde(rename = "alert_name")]
    name_expr: Spanned<String>,
    status: Option<Spanned<String>>,
    labels: Option<Spanned<String>>,
    annotations: Option<Spanned<String>>,
    fingerprint: Option<Spanned<String>>,
    starts_at: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTarget {
    Expr(String),
    Tags { tags: Vec<String> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    when: Option<Spanned<String>>,
    runbook: Option<Spanned<String>>,
    action: Option<Spanned<String>>,
    target: Option<Spanned<RawTarget>>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<String>>,
    key: Option<Spanned<String>>,
    unless: Option<Spanned<String>>,
    cooldown: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    within: Option<Spanned<String>>,
    #[serde(default)]
    approve: bool,
    approve_timeout: Option<Spanned<String>>,
    max_targets: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    #[serde(default, rename = "continue")]
    cont: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRun {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    run: Spanned<RawRun>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    continue_on_error: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    resolved_within: Option<Spanned<String>>,
    run: Option<Spanned<RawRun>>,
    retries: Option<i64>,
    interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    #[serde(default)]
    description: String,
    timeout: Option<Spanned<String>>,
    steps: Vec<Spanned<RawStep>>,
    verify: Option<Spanned<RawVerify>>,
    max_parallel: Option<Spanned<i64>>,
}

// ---- validation -------------------------------------------------------------

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "{}: cannot read config: {e} (pass --config FILE)",
            path.display()
        ))
    })?;
    parse(path, &text)
}

/// Validates config text; `path` is used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<Config> {
    let v = Validator {
        file: path.display().to_string(),
        text,
        warnings: Default::default(),
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| v.line(s.start)).unwrap_or(1);
        Error::Config(format!("{}:{line}: {}", v.file, e.message()))
    })?;
    let mut config = v.validate(path, raw)?;
    config.warnings = v.warnings.take();
    config.hash = hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref());
    config.text = text.to_string();
    Ok(config)
}

/// What a reload from `running` to `new` would empty: every token or every
/// alert rule gone while the running config has some. An empty or truncated
/// file still parses, and applying it would answer every client 401 and
/// match no alert, so a reload refuses it unless `new` says
/// `[server] allow_empty = true` or the operator forces it.
pub fn emptied(running: &Config, new: &Config) -> Option<String> {
    let alert_rules = |c: &Config| c.rules.iter().filter(|r| !r.schedule).count();
    let mut lost = Vec::new();
    if new.tokens.is_empty() && !running.tokens.is_empty() {
        lost.push(format!(
            "no [[token]] where {} run now (every client would get 401)",
            running.tokens.len()
        ));
    }
    if alert_rules(new) == 0 && alert_rules(running) > 0 {
        lost.push(format!(
            "no [[rule]] where {} run now (no alert would match)",
            alert_rules(running)
        ));
    }
    if lost.is_empty() {
        return None;
    }
    Some(format!(
        "{}: has {}; if that is meant, set [server] allow_empty = true in it or reload with `heal reload --force`",
        new.path.display(),
        lost.join(" and ")
    ))
}

/// Keys whose values are secrets, wherever they stand in the file.
const SECRET_KEYS: &[&str] = &[
    "secret",
    "secret_sha256",
    "webhook_url",
    "routing_key",
    "api_key",
    "ping_key",
    "ping_key_sha256",
    "headers",
    "watchdog_url",
];

/// The running file as JSON with every secret value replaced by
/// `"<redacted>"` (and a webhook's `url`, which often holds a token), and
/// the user, password and query values of every other URL too
/// (`redact_url_secrets`: a probe's `http.url`, `prometheus.url`,
/// `public_url`, `runbook_url`).
pub fn redacted(config: &Config) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value, in_webhook: bool) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if SECRET_KEYS.contains(&k.as_str()) || (in_webhook && k == "url") {
                        *val = serde_json::Value::String("<redacted>".into());
                    } else if let (true, Some(url)) =
                        (k == "url" || k.ends_with("_url"), val.as_str())
                    {
                        *val = serde_json::Value::String(redact_url_secrets(url));
                    } else {
                        walk(val, k == "webhook");
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, in_webhook)),
            _ => {}
        }
    }
    let mut v = toml::from_str::<toml::Value>(&config.text)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(serde_json::Value::Null);
    walk(&mut v, false);
    v
}

struct Validator<'a> {
    file: String,
    text: &'a str,
    /// See `Config::warnings`.
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Validator<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        item: &str,
        message: impl std::fmt::Display,
    ) -> Result<T> {
        Err(Error::Config(format!(
            "{}:{}: {item}: {message}",
            self.file,
            self.line(span.start)
        )))
    }

    fn expr(&self, s: &Spanned<String>, item: &str, field: &str) -> Result<Expr> {
        let expr = Expr::compile(s.get_ref()).or_else(|e| {
            self.err(
                s.span(),
                item,
                format!("{field}: {e} (got {:?})", s.get_ref()),
            )
        })?;
        for name in literal_lookalikes(expr.compiled.as_ast()) {
            self.warnings.borrow_mut().push(format!(
                "{}:{}: {item}: {field} {:?}: a bare {name} looks up a field named \"{name}\" (null in every alert) instead of meaning {name}; for the literal write `{name}`, with its backticks",
                self.file,
                self.line(s.span().start),
                s.get_ref(),
            ));
        }
        Ok(expr)
    }

    fn opt_expr(
        &self,
        s: &Option<Spanned<String>>,
        item: &str,
        field: &str,
    ) -> Result<Option<Expr>> {
        s.as_ref().map(|s| self.expr(s, item, field)).transpose()
    }

    fn duration(
        &self,
        s: &Option<Spanned<String>>,
        default: Duration,
        item: &str,
        field: &str,
    ) -> Result<Duration> {
        match s {
            None => Ok(default),
            Some(s) => parse_duration(s.get_ref())
                .or_else(|e| self.err(s.span(), item, format!("{field}: {e}"))),
        }
    }

    fn count(
        &self,
        s: &Option<Spanned<i64>>,
        default: i64,
        min: i64,
        max: i64,
        item: &str,
        field: &str,
    ) -> Result<i64> {
        match s {
            None => Ok(default),
            Some(s) if (min..=max).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => self.err(
                s.span(),
                item,
                format!("{field}: must be from {min} to {max} (got {})", s.get_ref()),
            ),
        }
    }

    fn validate(&self, path: &Path, raw: RawFile) -> Result<Config> {
        let server = self.server(&raw.server)?;
        let safety = self.safety(&raw.safety)?;
        let mut tokens = Vec::new();
        for t in &raw.tokens {
            let token = self.token(t)?;
            if tokens.iter().any(|o: &Token| o.name == token.name) {
                return self.err(
                    t.span(),
                    &format!("token {:?}", token.name),
                    "duplicate token name",
                );
            }
            tokens.push(token);
        }
        let mut sources = BTreeMap::new();
        for s in &raw.sources {
            let source = self.source(s)?;
            if sources.contains_key(&source.name) {
                return self.err(
                    s.span(),
                    &format!("source {:?}", source.name),
                    "duplicate source name",
                );
            }
            sources.insert(source.name.clone(), source);
        }
        let mut runbooks = BTreeMap::new();
        for (name, r) in &raw.runbooks {
            runbooks.insert(name.clone(), Arc::new(self.runbook(name, r)?));
        }
        let mut rules: Vec<Rule> = Vec::new();
        for r in &raw.rules {
            let rule = self.rule(r, &runbooks, &safety)?;
            if rules.iter().any(|o| o.name == rule.name) {
                return self.err(
                    r.span(),
                    &format!("rule {:?}", rule.name),
                    "duplicate rule name",
                );
            }
            rules.push(rule);
        }
        let mut schedules: Vec<Scheduled> = Vec::new();
        for s in &raw.schedules {
            let item = format!("schedule {:?}", s.get_ref().name);
            let raw_rule = self.schedule_rule(s)?;
            let mut rule = self.rule(&Spanned::new(s.span(), raw_rule), &runbooks, &safety)?;
            rule.schedule = true;
            if let Action::Run(rb) = &rule.action {
                if matches!(runbooks[rb].verify, Verify::ResolvedWithin(_)) {
                    return self.err(s.span(), &item, format!("runbook {rb:?} verifies with resolved_within, but a scheduled run has no alert to resolve (use verify.run)"));
                }
            }
            if rules.iter().any(|o| o.name == rule.name) {
                return self.err(s.span(), &item, "duplicate schedule name");
            }
            schedules.push(self.schedule(s, rules.len())?);
            rules.push(rule);
        }
        let channels = self.channels(&raw.channels)?;
        let routes = self.routes(&raw.routes, &channels)?;
        Ok(Config {
            path: path.to_path_buf(),
            hash: String::new(),
            text: String::new(),
            server,
            tokens,
            sources,
            rules,
            runbooks,
            safety,
            heartbeats: self.heartbeats(&raw.heartbeats)?,
            probes: self.probes(&raw.probes)?,
            schedules,
            retention: self.retention(&raw.retention)?,
            channels,
            routes,
            warnings: Vec::new(),
        })
    }

    fn safety(&self, raw: &RawSafety) -> Result<Safety> {
        let item = "[safety]";
        let d = Safety::default();
        let count = |v, default: u32, field| {
            self.count(v, default as i64, 1, 1_000_000, item, field)
                .map(|n| n as u32)
        };
        Ok(Safety {
            max_runs_per_hour: count(
                &raw.max_runs_per_hour,
                d.max_runs_per_hour,
                "max_runs_per_hour",
            )?,
            max_failed_in_row: count(
                &raw.max_failed_in_row,
                d.max_failed_in_row,
                "max_failed_in_row",
            )?,
            max_targets: count(&raw.max_targets, d.max_targets, "max_targets")?,
        })
    }

    fn server(&self, raw: &RawServer) -> Result<Server> {
        let item = "[server]";
        let server = Server {
            listen: raw
                .listen
                .clone()
                .unwrap_or_else(|| "127.0.0.1:7878".into()),
            db: PathBuf::from(raw.db.clone().unwrap_or_else(|| "heal.db".into())),
            poll_wait: self.duration(&raw.poll_wait, Duration::from_secs(30), item, "poll_wait")?,
            lease: self.duration(&raw.lease, Duration::from_secs(30), item, "lease")?,
            kill_grace: self.duration(
                &raw.kill_grace,
                Duration::from_secs(10),
                item,
                "kill_grace",
            )?,
            dispatch_timeout: self.duration(
                &raw.dispatch_timeout,
                Duration::from_secs(600),
                item,
                "dispatch_timeout",
            )?,
            max_body: self.count(&raw.max_body, 1 << 20, 1024, 1 << 30, item, "max_body")? as usize,
            max_output: self.count(
                &raw.max_output,
                256 << 10,
                1024,
                64 << 20,
                item,
                "max_output",
            )? as usize,
            http_threads: self.count(&raw.http_threads, 32, 1, 1024, item, "http_threads")?
                as usize,
            agent_down_after: self.duration(
                &raw.agent_down_after,
                Duration::from_secs(120),
                item,
                "agent_down_after",
            )?,
            forget_agents_after: match &raw.forget_agents_after {
                None => None,
                some => Some(self.duration(some, Duration::ZERO, item, "forget_agents_after")?),
            },
            tls_cert: raw.tls_cert.as_ref().map(|p| PathBuf::from(p.get_ref())),
            tls_key: raw.tls_key.as_ref().map(|p| PathBuf::from(p.get_ref())),
            max_header: self.count(&raw.max_header, 16 << 10, 1024, 1 << 20, item, "max_header")?
                as usize,
            request_timeout: self.duration(
                &raw.request_timeout,
                Duration::from_secs(30),
                item,
                "request_timeout",
            )?,
            idle_timeout: self.duration(
                &raw.idle_timeout,
                Duration::from_secs(60),
                item,
                "idle_timeout",
            )?,
            max_connections: self.count(
                &raw.max_connections,
                4096,
                1,
                100_000,
                item,
                "max_connections",
            )? as usize,
            public_url: match &raw.public_url {
                None => None,
                Some(u) => Some(
                    notify::check_url(u.get_ref())
                        .map(|()| u.get_ref().trim_end_matches('/').to_string())
                        .or_else(|e| {
                            self.err(
                                u.span(),
                                item,
                                format!(
                                    "public_url: {e} (got {:?})",
                                    redact_url_secrets(u.get_ref())
                                ),
                            )
                        })?,
                ),
            },
            watchdog: self.watchdog(raw, item)?,
            allow_empty: raw.allow_empty.unwrap_or(false),
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .flatten()
                .map(|p| {
                    Cidr::parse(p.get_ref())
                        .or_else(|e| self.err(p.span(), item, format!("trusted_proxies: {e}")))
                })
                .collect::<Result<_>>()?,
        };
        if server.tls_cert.is_some() != server.tls_key.is_some() {
            let span = raw
                .tls_cert
                .as_ref()
                .or(raw.tls_key.as_ref())
                .map_or(0..0, Spanned::span);
            return self.err(
                span,
                item,
                "give both tls_cert and tls_key (PEM files), or neither",
            );
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&server.request_timeout) {
            let span = raw.request_timeout.as_ref().map_or(0..0, Spanned::span);
            return self.err(span, item, "request_timeout: must be from 1s to 1h");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&server.idle_timeout) {
            let span = raw.idle_timeout.as_ref().map_or(0..0, Spanned::span);
            return self.err(span, item, "idle_timeout: must be from 1s to 1h");
        }
        if server.agent_down_after <= server.poll_wait {
            let span = raw
                .agent_down_after
                .as_ref()
                .or(raw.poll_wait.as_ref())
                .map_or(0..0, Spanned::span);
            return self.err(
                span,
                item,
                format!(
                    "agent_down_after: must be longer than poll_wait ({}), or idle agents look down",
                    crate::time::format_duration(server.poll_wait)
                ),
            );
        }
        if let Some(forget) = server
            .forget_agents_after
            .filter(|f| *f <= server.agent_down_after)
        {
            let span = raw.forget_agents_after.as_ref().map_or(0..0, Spanned::span);
            return self.err(
                span,
                item,
                format!(
                    "forget_agents_after: {} must be longer than agent_down_after ({}), or agents are forgotten before they are down",
                    crate::time::format_duration(forget),
                    crate::time::format_duration(server.agent_down_after)
                ),
            );
        }
        Ok(server)
    }

    fn watchdog(&self, raw: &RawServer, item: &str) -> Result<Option<Watchdog>> {
        let every = self.duration(
            &raw.watchdog_every,
            Duration::from_secs(60),
            item,
            "watchdog_every",
        )?;
        match (&raw.watchdog_url, &raw.watchdog_every) {
            (None, None) => Ok(None),
            (None, Some(e)) => self.err(
                e.span(),
                item,
                "watchdog_every: set without watchdog_url (add the URL to ping, or remove it)",
            ),
            (Some(_), every_raw) if every < Duration::from_secs(1) => self.err(
                every_raw.as_ref().map_or(0..0, Spanned::span),
                item,
                "watchdog_every: must be at least 1s",
            ),
            (Some(_), _) => Ok(Some(Watchdog {
                url: self.url(&raw.watchdog_url, "", item, "watchdog_url")?,
                every,
            })),
        }
    }

    fn token(&self, t: &Spanned<RawToken>) -> Result<Token> {
        let raw = t.get_ref();
        let item = format!("token {:?}", raw.name);
        check_name(&raw.name).or_else(|e| self.err(t.span(), &item, format!("name: {e}")))?;
        let mut scopes = Vec::new();
        for s in &raw.scopes {
            match Scope::parse(s.get_ref()) {
                Some(scope) => scopes.push(scope),
                None => {
                    return self.err(
                        s.span(),
                        &item,
                        format!(
                            "scopes: unknown scope {:?} (admin, read, webhook, ping or agent)",
                            s.get_ref()
                        ),
                    )
                }
            }
        }
        if scopes.is_empty() {
            return self.err(
                t.span(),
                &item,
                "scopes: empty (give at least one of admin, read, webhook, ping, agent)",
            );
        }
        let hash = match (
            &raw.secret_sha256,
            raw.secret.is_some() || raw.secret_file.is_some(),
        ) {
            (Some(h), false) => parse_sha256(h.get_ref()).map_or_else(
                || {
                    self.err(
                        h.span(),
                        &item,
                        "secret_sha256: not 64 hex digits (`heal token new` prints one)",
                    )
                },
                Ok,
            )?,
            (Some(h), true) => {
                return self.err(
                    h.span(),
                    &item,
                    "give exactly one of secret, secret_file or secret_sha256",
                )
            }
            (None, _) => {
                let secret =
                    self.secret(&raw.secret, &raw.secret_file, &t.span(), &item, "secret")?;
                if secret.len() < 16 {
                    return self.err(
                        t.span(),
                        &item,
                        "secret: shorter than 16 characters (`heal token new` makes one)",
                    );
                }
                token_hash(&secret)
            }
        };
        if raw.agent.is_some() && !scopes.contains(&Scope::Agent) {
            return self.err(
                t.span(),
                &item,
                "agent: only tokens with the agent scope are bound to an agent",
            );
        }
        if let (Some(tags), None) = (&raw.tags, &raw.agent) {
            return self.err(
                tags.span(),
                &item,
                "tags: only a token bound to an agent (agent = \"ID\") carries the tags that agent may declare",
            );
        }
        let expires = match &raw.expires {
            None => None,
            Some(e) => Some(
                parse_expiry(e.get_ref())
                    .or_else(|why| self.err(e.span(), &item, format!("expires: {why}")))?,
            ),
        };
        Ok(Token {
            name: raw.name.clone(),
            scopes,
            hash,
            agent: raw.agent.clone(),
            tags: raw
                .tags
                .as_ref()
                .map(|t| t.get_ref().clone())
                .unwrap_or_default(),
            expires,
        })
    }

    fn source(&self, s: &Spanned<RawSource>) -> Result<Source> {
        let raw = s.get_ref();
        let item = format!("source {:?}", raw.name);
        check_name(&raw.name).or_else(|e| self.err(s.span(), &item, format!("name: {e}")))?;
        Ok(Source {
            name: raw.name.clone(),
            alerts: self.opt_expr(&raw.alerts, &item, "alerts")?,
            name_expr: self.expr(&raw.name_expr, &item, "alert_name")?,
            status: self.opt_expr(&raw.status, &item, "status")?,
            labels: self.opt_expr(&raw.labels, &item, "labels")?,
            annotations: self.opt_expr(&raw.annotations, &item, "annotations")?,
            fingerprint: self.opt_expr(&raw.fingerprint, &item, "fingerprint")?,
            starts_at: self.opt_expr(&raw.starts_at, &item, "starts_at")?,
        })
    }

    fn run(&self, r: &Spanned<RawRun>, item: &str, field: &str) -> Result<Run> {
        match run_of(r.get_ref()) {
            Some(run) => Ok(run),
            None => self.err(r.span(), item, format!("{field}: empty command (a shell string or a list like [\"/usr/bin/x\", \"arg\"])")),
        }
    }

    fn runbook(&self, name: &str, r: &Spanned<RawRunbook>) -> Result<Runbook> {
        let raw = r.get_ref();
        let item = format!("runbook {name:?}");
        check_name(name).or_else(|e| self.err(r.span(), &item, format!("name: {e}")))?;
        let timeout = self.duration(&raw.timeout, Duration::from_secs(300), &item, "timeout")?;
        if raw.steps.is_empty() {
            return self.err(
                r.span(),
                &item,
                "steps: empty (give at least one { name = \"...\", run = \"...\" })",
            );
        }
        let mut steps: Vec<Step> = Vec::new();
        for s in &raw.steps {
            let rs = s.get_ref();
            let step_item = format!("{item} step {:?}", rs.name);
            if rs.name.trim().is_empty() || steps.iter().any(|o| o.name == rs.name) {
                return self.err(
                    s.span(),
                    &step_item,
                    "name: empty or used twice in this runbook",
                );
            }
            steps.push(Step {
                name: rs.name.clone(),
                run: self.run(&rs.run, &step_item, "run")?,
                timeout: self.duration(&rs.timeout, timeout, &step_item, "timeout")?,
                continue_on_error: rs.continue_on_error,
            });
        }
        let verify = match &raw.verify {
            None => Verify::None,
            Some(v) => {
                let rv = v.get_ref();
                match (&rv.resolved_within, &rv.run) {
                    (Some(d), None) => Verify::ResolvedWithin(self.duration(
                        &Some(d.clone()),
                        Duration::ZERO,
                        &item,
                        "verify.resolved_within",
                    )?),
                    (None, Some(run)) => Verify::Run {
                        run: self.run(run, &item, "verify.run")?,
                        retries: rv.retries.unwrap_or(3).clamp(0, 1000) as u32,
                        interval: self.duration(
                            &rv.interval,
                            Duration::from_secs(10),
                            &item,
                            "verify.interval",
                        )?,
                        timeout,
                    },
                    _ => {
                        return self.err(
                            v.span(),
                            &item,
                            "verify: give exactly one of resolved_within or run",
                        )
                    }
                }
            }
        };
        let max_parallel =
            self.count(&raw.max_parallel, 1, 1, 10_000, &item, "max_parallel")? as u32;
        Ok(Runbook {
            name: name.to_string(),
            description: raw.description.clone(),
            steps,
            verify,
            max_parallel,
        })
    }

    fn rule(
        &self,
        r: &Spanned<RawRule>,
        runbooks: &BTreeMap<String, Arc<Runbook>>,
        safety: &Safety,
    ) -> Result<Rule> {
        let raw = r.get_ref();
        let item = format!("rule {:?}", raw.name);
        check_name(&raw.name).or_else(|e| self.err(r.span(), &item, format!("name: {e}")))?;
        let action = match (
            raw.action
                .as_ref()
                .map(|a| (a.get_ref().as_str(), a.span())),
            &raw.runbook,
        ) {
            (Some(("discard", _)), None) => Action::Discard,
            (Some(("discard", span)), Some(_)) => {
                return self.err(span, &item, "action: \"discard\" takes no runbook")
            }
            (None | Some(("run", _)), Some(rb)) => {
                if !runbooks.contains_key(rb.get_ref()) {
                    let known: Vec<&str> = runbooks.keys().map(String::as_str).collect();
                    return self.err(
                        rb.span(),
                        &item,
                        format!(
                            "runbook: no [runbook.{}] in this file (known: {})",
                            rb.get_ref(),
                            known.join(", ")
                        ),
                    );
                }
                Action::Run(rb.get_ref().clone())
            }
            (None | Some(("run", _)), None) => {
                return self.err(
                    r.span(),
                    &item,
                    "runbook: missing (name a [runbook.NAME], or say action = \"discard\")",
                )
            }
            (Some((other, span)), _) => {
                return self.err(
                    span,
                    &item,
                    format!("action: unknown action {other:?} (\"run\" or \"discard\")"),
                )
            }
        };
        let target = match &raw.target {
            None => None,
            Some(t) => Some(match t.get_ref() {
                RawTarget::Expr(e) => {
                    Target::Expr(self.expr(&Spanned::new(t.span(), e.clone()), &item, "target")?)
                }
                RawTarget::Tags { tags } if !tags.is_empty() => Target::Tags(tags.clone()),
                RawTarget::Tags { .. } => {
                    return self.err(t.span(), &item, "target: tags is empty")
                }
            }),
        };
        if matches!(action, Action::Run(_)) && target.is_none() {
            return self.err(r.span(), &item, "target: missing (an agent id expression like \"labels.instance\", or { tags = [\"lb\"] })");
        }
        let mut params = Vec::new();
        for (name, e) in &raw.params {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return self.err(
                    e.span(),
                    &item,
                    format!("params: name {name:?} must be letters, digits and _"),
                );
            }
            params.push((
                name.clone(),
                self.expr(e, &item, &format!("params.{name}"))?,
            ));
        }
        if let Some((a, b, var)) = crate::rules::same_env_name(raw.params.keys()) {
            return self.err(
                raw.params[b].span(),
                &item,
                format!("params: {a:?} and {b:?} both become HEAL_PARAM_{var} (give them names that differ in more than case)"),
            );
        }
        let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("live", _)) => Mode::Live,
            Some(("dry-run", _)) => Mode::DryRun,
            Some((other, span)) => {
                return self.err(
                    span,
                    &item,
                    format!("mode: unknown mode {other:?} (\"live\" or \"dry-run\")"),
                )
            }
        };
        Ok(Rule {
            name: raw.name.clone(),
            line: self.line(r.span().start),
            when: self.opt_expr(&raw.when, &item, "when")?,
            action,
            target,
            params,
            key: self.opt_expr(&raw.key, &item, "key")?,
            unless: self.opt_expr(&raw.unless, &item, "unless")?,
            cooldown: self.duration(&raw.cooldown, Duration::ZERO, &item, "cooldown")?,
            max_attempts: raw
                .max_attempts
                .as_ref()
                .map(|_| {
                    self.count(&raw.max_attempts, 0, 1, 1_000_000, &item, "max_attempts")
                        .map(|n| n as u32)
                })
                .transpose()?,
            within: self.duration(&raw.within, Duration::from_secs(3600), &item, "within")?,
            approve: raw.approve,
            approve_timeout: self.duration(
                &raw.approve_timeout,
                Duration::from_secs(3600),
                &item,
                "approve_timeout",
            )?,
            max_targets: self.count(
                &raw.max_targets,
                safety.max_targets as i64,
                1,
                1_000_000,
                &item,
                "max_targets",
            )? as u32,
            mode,
            cont: raw.cont,
            schedule: false,
        })
    }
}

/// A command as written: a shell string or an argv list; None when empty.
fn run_of(raw: &RawRun) -> Option<Run> {
    match raw {
        RawRun::Shell(s) if !s.trim().is_empty() => Some(Run::Shell(s.clone())),
        RawRun::Argv(v) if !v.is_empty() && !v[0].is_empty() => Some(Run::Argv(v.clone())),
        _ => None,
    }
}

/// The one rule for names heal uses as identifiers and path segments
/// (tokens, sources, rules, runbooks, schedules, heartbeats, probes,
/// channels): a letter or digit, then letters, digits, '.', '-' or '_', at
/// most 128 in all. Starting with a letter or digit keeps `.`, `..` and
/// option-like `-x` out.
pub const NAME_RULE: &str =
    "must be 1 to 128 characters: a letter or digit, then letters, digits, '.', '-' or '_'";

/// Checks a name against `NAME_RULE`.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if follows_name_rule(name, "") {
        return Ok(());
    }
    Err(format!(
        "{:?} {NAME_RULE}",
        crate::rules::truncate(name, 64)
    ))
}

/// Whether `text` follows `NAME_RULE`, with `extra` characters also allowed
/// after the first (agent ids take ':' for `host:port`).
pub fn follows_name_rule(text: &str, extra: &str) -> bool {
    let mut chars = text.chars();
    text.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
}

/// Expands `${NAME}` from the environment; an unset variable is an error.
pub fn expand_env(text: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?
            + start;
        let name = &rest[start + 2..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Names of runbooks that every rule refers to, for `check-config`'s summary.
pub fn summary(config: &Config) -> String {
    let used: BTreeSet<&str> = config
        .rules
        .iter()
        .filter_map(|r| match &r.action {
            Action::Run(rb) => Some(rb.as_str()),
            Action::Discard => None,
        })
        .collect();
    let unused: Vec<&str> = config
        .runbooks
        .keys()
        .map(String::as_str)
        .filter(|n| !used.contains(n))
        .collect();
    let mut s = format!(
        "{}: ok: {} rules, {} runbooks, {} sources, {} tokens, {} heartbeats, {} probes, {} schedules, {} channels, {} notify routes",
        config.path.display(),
        config.rules.iter().filter(|r| !r.schedule).count(),
        config.runbooks.len(),
        config.sources.len(),
        config.tokens.len(),
        config.heartbeats.len(),
        config.probes.len(),
        config.schedules.len(),
        config.channels.len(),
        config.routes.len()
    );
    if !unused.is_empty() {
        s.push_str(&format!(
            "\nnote: runbooks no rule uses: {}",
            unused.join(", ")
        ));
    }
    for c in config.channels.values() {
        s.push_str(&format!("\nchannel {}: {}", c.name, c.kind.describe()));
    }
    let routed: BTreeSet<&str> = config
        .routes
        .iter()
        .flat_map(|r| r.channels.iter().map(String::as_str))
        .collect();
    let idle: Vec<&str> = config
        .channels
        .keys()
        .map(String::as_str)
        .filter(|c| !routed.contains(c))
        .collect();
    if !idle.is_empty() {
        s.push_str(&format!(
            "\nnote: channels no [[notify]] route uses: {}",
            idle.join(", ")
        ));
    }
    for w in config.warnings.iter().chain(&unbound_agent_tokens(config)) {
        s.push_str(&format!("\nwarning: {w}"));
    }
    s
}

/// A warning for each agent-scope token bound to no agent while a rule
/// targets tags: whoever holds it may poll as any agent with any tags and
/// receive those ops with their alert data.
pub fn unbound_agent_tokens(config: &Config) -> Vec<String> {
    let Some(rule) = config
        .rules
        .iter()
        .find(|r| matches!(r.target, Some(Target::Tags(_))))
    else {
        return Vec::new();
    };
    config
        .tokens
        .iter()
        .filter(|t| t.scopes.contains(&Scope::Agent) && t.agent.is_none())
        .map(|t| format!("token {:?} acts as any agent and may claim any tags, and rule {:?} targets tags: bind it to one agent with agent = \"ID\" and tags = [...]", t.name, rule.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[rule]]
name = "disk"
when = "labels.alertname == 'DiskSpaceLow'"
runbook = "clean"
target = "labels.instance"
params = { mount = "labels.mountpoint" }

[[rule]]
name = "rest"
action = "discard"

[runbook.clean]
timeout = "5s"
steps = [ { name = "a", run = "true" }, { name = "b", run = ["/bin/echo", "x"], timeout = "1s" } ]
"#;

    #[test]
    fn bare_true_false_and_null_are_found_wherever_they_are_read_as_fields() {
        let found = |source: &str| {
            literal_lookalikes(Expr::compile(source).unwrap().compiled.as_ast())
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(found("true"), ["true"]);
        assert_eq!(found("labels.x == false || !null"), ["false", "null"]);
        assert_eq!(found("[labels.a, true]"), ["true"]);
        assert_eq!(found("length(events[?open == true]) > `0`"), ["true"]);
        assert!(found("`true`").is_empty());
        assert!(found("labels.true == 'yes' && `null` == labels.x").is_empty());
        assert!(found("events[*].null").is_empty());
    }

    fn check_err(text: &str, expected: &str) {
        let err = parse(Path::new("runbooks.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }

    #[test]
    fn params_that_become_one_variable_are_refused() {
        check_err(
            "[[rule]]\nname = \"r\"\nrunbook = \"x\"\ntarget = \"'a'\"\nparams = { mount = \"'a'\", MOUNT = \"'b'\" }\n[runbook.x]\nsteps = [{name = \"s\", run = \"true\"}]\n",
            r#"rule "r": params: "MOUNT" and "mount" both become HEAL_PARAM_MOUNT"#,
        );
    }

    #[test]
    fn emptied_names_what_a_reload_would_drop() {
        let token =
            "[[token]]\nname = \"a\"\nscopes = [\"admin\"]\nsecret = \"a-secret-0123456789\"\n";
        let p = |text: &str| parse(Path::new("runbooks.toml"), text).unwrap();
        let running = p(&format!("{GOOD}{token}"));
        let check = |text: &str, expected: Option<&str>| {
            let why = emptied(&running, &p(text));
            match expected {
                None => assert_eq!(why, None, "{text}"),
                Some(e) => assert!(why.as_deref().is_some_and(|w| w.contains(e)), "{why:?}"),
            }
        };
        check("", Some("no [[token]] where 1 run now (every client would get 401) and no [[rule]] where 2 run now"));
        check(GOOD, Some("no [[token]] where 1"));
        check(token, Some("no [[rule]] where 2"));
        check(&format!("{GOOD}{token}"), None);
        // Only what runs now can be lost: from empty to empty is no loss.
        assert_eq!(emptied(&p(""), &p("")), None);
    }

    #[test]
    fn good_config_validates() {
        let c = parse(Path::new("runbooks.toml"), GOOD).unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].line, 2);
        assert_eq!(c.runbooks["clean"].steps[1].timeout, Duration::from_secs(1));
        assert_eq!(c.runbooks["clean"].steps[0].timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_jmespath_names_file_line_rule_and_value() {
        check_err(
            "[[rule]]\nname = \"x\"\nwhen = \"labels.[\"\naction = \"discard\"\n",
            "runbooks.toml:3: rule \"x\": when:",
        );
    }

    // A runbook timeout of u64::MAX milliseconds validated, then overflowed
    // the op's time budget when an alert ran it (fuzz target `config`), and
    // a cooldown past i64::MAX overflowed the decision's arithmetic.
    #[test]
    fn durations_longer_than_a_century_are_refused() {
        check_err(
            &GOOD.replace("timeout = \"5s\"", "timeout = \"18446744073709551615ms\""),
            "runbooks.toml:14: runbook \"clean\": timeout: bad duration \"18446744073709551615ms\": longer than 100 years",
        );
        check_err(
            &GOOD.replace("params =", "cooldown = \"106751991167d\"\nparams ="),
            "longer than 100 years",
        );
    }

    /// Expressions nested `n` deep in each way JMESPath nests.
    fn nested(n: usize) -> Vec<String> {
        let chain = |op: &str| vec!["a"; n].join(op);
        vec![
            format!("{}a{}", "(".repeat(n), ")".repeat(n)),
            format!("{}a{}", "[".repeat(n), "]".repeat(n)),
            format!("{}a{}", "{a:".repeat(n), "}".repeat(n)),
            format!("{}a{}", "abs(".repeat(n), ")".repeat(n)),
            format!("{}a", "!".repeat(n)),
            format!("{}a", "& ".repeat(n)),
            format!("a{}", "[?b]".repeat(n)),
            format!("a{}", "[*]".repeat(n)),
            format!("a{}", "[]".repeat(n)),
            chain("."),
            chain("|"),
            chain("||"),
            chain("&&"),
            chain("=="),
        ]
    }

    // A deeply nested expression overflowed the stack while it was parsed,
    // evaluated or dropped (fuzz target `config`, with a rule's `when`), which
    // aborts the whole server: on a reload, or on a pause's `match` from the API.
    #[test]
    fn deeply_nested_expressions_are_refused() {
        for source in nested(20_000).into_iter().chain(nested(129)) {
            let err = Expr::compile(&source).unwrap_err();
            assert!(err.contains("heal evaluates safely"), "{err}");
        }
        let quoted = format!(
            "a == '{}' && b == `\"{}\"`",
            "(".repeat(5000),
            "[".repeat(5000)
        );
        assert!(Expr::compile(&quoted).is_ok());
    }

    /// The largest expression of each shape that compiles also evaluates on
    /// this test thread's 2 MiB stack, in a debug build.
    #[test]
    fn nested_expressions_within_the_limits_evaluate() {
        let doc = doc(serde_json::json!({"a": {"a": [1]}, "b": true}));
        for shape in 0..nested(1).len() {
            let accepted = (1..300)
                .map(|n| nested(n).swap_remove(shape))
                .take_while(|source| Expr::compile(source).is_ok())
                .last()
                .expect("one level compiles");
            let _ = Expr::compile(&accepted).unwrap().eval(&doc);
        }
    }

    #[test]
    fn unknown_runbook() {
        check_err(
            "[[rule]]\nname = \"x\"\nrunbook = \"nope\"\ntarget = \"labels.instance\"\n",
            "runbooks.toml:3: rule \"x\": runbook: no [runbook.nope]",
        );
    }

    #[test]
    fn missing_target() {
        check_err("[[rule]]\nname = \"x\"\nrunbook = \"r\"\n[runbook.r]\nsteps = [{name=\"a\", run=\"true\"}]\n", "target: missing");
    }

    #[test]
    fn bad_duration_and_unknown_field() {
        check_err(
            "[runbook.r]\ntimeout = \"5x\"\nsteps = [{name=\"a\", run=\"true\"}]\n",
            "runbooks.toml:2: runbook \"r\": timeout: bad duration",
        );
        check_err(
            "[[rule]]\nname = \"x\"\nwhem = \"true\"\n",
            "unknown field `whem`",
        );
    }

    #[test]
    fn duplicate_rule_and_bad_scope() {
        check_err("[[rule]]\nname = \"x\"\naction = \"discard\"\n[[rule]]\nname = \"x\"\naction = \"discard\"\n", "duplicate rule name");
        check_err(
            "[[token]]\nname = \"t\"\nscopes = [\"root\"]\nsecret = \"0123456789abcdef\"\n",
            "unknown scope \"root\"",
        );
    }

    #[test]
    fn trusted_proxies_and_token_tags() {
        let c = parse(
            Path::new("runbooks.toml"),
            "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n[[token]]\nname = \"a\"\nscopes = [\"agent\"]\nagent = \"web-1\"\ntags = [\"lb\"]\nsecret = \"0123456789abcdef\"\n",
        )
        .unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 2);
        let t = &c.tokens[0];
        assert_eq!(t.tag_not_allowed(&["lb".into()]), None);
        assert_eq!(t.tag_not_allowed(&["lb".into(), "db".into()]), Some("db"));
        assert!(t.may(Scope::Agent) && !t.may(Scope::Read));
        check_err(
            "[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
            "trusted_proxies: \"10.0.0.0/40\": the prefix length must be from 0 to 32",
        );
        check_err(
            "[server]\ntrusted_proxies = [\"proxy.internal\"]\n",
            "trusted_proxies: \"proxy.internal\" is not an address",
        );
        check_err(
            "[[token]]\nname = \"t\"\nscopes = [\"agent\"]\ntags = [\"db\"]\nsecret = \"0123456789abcdef\"\n",
            "tags: only a token bound to an agent",
        );
        let admin = parse(
            Path::new("runbooks.toml"),
            "[[token]]\nname = \"t\"\nscopes = [\"admin\"]\nsecret = \"0123456789abcdef\"\n",
        )
        .unwrap();
        let t = &admin.tokens[0];
        assert!(t.may(Scope::Read) && t.may(Scope::Webhook) && !t.may(Scope::Agent));
        assert_eq!(t.tag_not_allowed(&["db".into()]), None, "unbound");
    }

    #[test]
    fn env_secret_must_be_set() {
        check_err("[[token]]\nname = \"t\"\nscopes = [\"admin\"]\nsecret = \"${HEAL_TEST_SURELY_UNSET}\"\n", "environment variable HEAL_TEST_SURELY_UNSET is not set");
    }

    #[test]
    fn watchdog_url_and_every() {
        let server = |text: &str| parse(Path::new("runbooks.toml"), text).unwrap().server;
        assert!(server("").watchdog.is_none());
        let w = server("[server]\nwatchdog_url = \"https://hc-ping.com/0123-secret\"\n")
            .watchdog
            .unwrap();
        assert_eq!(w.url, "https://hc-ping.com/0123-secret");
        assert_eq!(w.every, Duration::from_secs(60));
        assert!(!format!("{w:?}").contains("secret"));
        let w =
            server("[server]\nwatchdog_url = \"http://127.0.0.1:9/x\"\nwatchdog_every = \"5s\"\n")
                .watchdog
                .unwrap();
        assert_eq!(w.every, Duration::from_secs(5));
        check_err(
            "[server]\nwatchdog_url = \"hc-ping.com/x\"\n",
            "runbooks.toml:2: [server]: watchdog_url: must start with http:// or https://",
        );
        check_err(
            "[server]\nwatchdog_url = \"${HEAL_TEST_SURELY_UNSET}\"\n",
            "watchdog_url: environment variable HEAL_TEST_SURELY_UNSET is not set",
        );
        check_err(
            "[server]\nwatchdog_every = \"1m\"\n",
            "runbooks.toml:2: [server]: watchdog_every: set without watchdog_url",
        );
        check_err(
            "[server]\nwatchdog_url = \"https://x/y\"\nwatchdog_every = \"soon\"\n",
            "runbooks.toml:3: [server]: watchdog_every: bad duration",
        );
        check_err(
            "[server]\nwatchdog_url = \"https://x/y\"\nwatchdog_every = \"0s\"\n",
            "watchdog_every: must be at least 1s",
        );
    }

    #[test]
    fn heartbeats_probes_and_schedules_validate() {
        let text = r#"
[server]
agent_down_after = "5m"

[[heartbeat]]
name = "backup"
cron = "0 3 * * *"
tz = "Europe/Berlin"
grace = "1h"
max_runtime = "2h"
renotify = "6h"
tags = ["db"]

[[probe]]
name = "web"
every = "30s"
fail_after = 3
http = { url = "https://example.org/health", status = [200], tls_min_days = 14 }

[[probe]]
name = "cpu"
cron = "*/5 * * * *"
prometheus = { url = "http://127.0.0.1:9090/", query = "up", expect = "== 1" }

[[schedule]]
name = "cleanup"
cron = "0 4 * * *"
runbook = "clean"
target = ["web-1", "web-2"]

[runbook.clean]
steps = [ { name = "a", run = "true" } ]
"#;
        let c = parse(Path::new("runbooks.toml"), text).unwrap();
        assert_eq!(
            c.heartbeats["backup"].spec.max_runtime,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(c.probes["web"].fail_after, 3);
        assert_eq!(c.probes["cpu"].kind(), "prometheus");
        assert_eq!(c.server.agent_down_after, Duration::from_secs(300));
        let rule = &c.rules[c.schedules[0].rule_idx];
        assert!(rule.schedule && rule.name == "schedule.cleanup");
        assert_eq!(c.retention.pings, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn watch_errors_name_the_item_and_field() {
        check_err(
            "[[heartbeat]]\nname = \"b\"\n",
            "runbooks.toml:1: heartbeat \"b\": give `every` or `cron`",
        );
        check_err(
            "[[heartbeat]]\nname = \"b\"\nevery = \"1h\"\ngrace = \"soon\"\n",
            "heartbeat \"b\": grace: bad duration",
        );
        check_err(
            "[[heartbeat]]\nname = \"b\"\ncron = \"0 3 * *\"\n",
            "heartbeat \"b\": cron `0 3 * *`",
        );
        check_err(
            "[[heartbeat]]\nname = \"b\"\nevery = \"1h\"\nlabels = { alertname = \"x\" }\n",
            "\"alertname\" is set by heal itself",
        );
        check_err(
            "[[probe]]\nname = \"p\"\nevery = \"1m\"\n",
            "probe \"p\": give exactly one of http",
        );
        check_err(
            "[[probe]]\nname = \"p\"\nevery = \"1m\"\ntcp = { addr = \"nohost\" }\n",
            "tcp.addr: \"nohost\" is not host:port",
        );
        check_err("[[probe]]\nname = \"p\"\nevery = \"1m\"\nprometheus = { url = \"http://x\", query = \"up\", expect = \"about 1\" }\n", "prometheus.expect");
        check_err("[[schedule]]\nname = \"s\"\ncron = \"0 4 * * *\"\nrunbook = \"nope\"\ntarget = \"a\"\n", "runbook: no [runbook.nope]");
        check_err(
            "[server]\npoll_wait = \"30s\"\nagent_down_after = \"10s\"\n",
            "runbooks.toml:3: [server]: agent_down_after: must be longer than poll_wait",
        );
        check_err(
            "[retention]\npings = \"1m\"\n",
            "runbooks.toml:2: [retention]: pings: must be at least 1h",
        );
    }

    #[test]
    fn forget_agents_after_is_off_by_default_and_checked_where_it_is_written() {
        let c = parse(Path::new("runbooks.toml"), GOOD).unwrap();
        assert_eq!(c.server.forget_agents_after, None);
        let text = format!("[server]\nforget_agents_after = \"30d\"\n{GOOD}");
        let c = parse(Path::new("runbooks.toml"), &text).unwrap();
        assert_eq!(
            c.server.forget_agents_after,
            Some(Duration::from_secs(30 * 86_400))
        );
        check_err(
            &format!("[server]\nforget_agents_after = \"1m\"\n{GOOD}"),
            "runbooks.toml:2: [server]: forget_agents_after: 1m must be longer than agent_down_after (2m)",
        );
        check_err(
            &format!("[server]\nforget_agents_after = \"soon\"\n{GOOD}"),
            "runbooks.toml:2: [server]: forget_agents_after: bad duration",
        );
    }
}
