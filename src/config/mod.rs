//! runbooks.toml → validated `Config`.
//!
//! Two steps: serde structs that mirror the file (`Raw*`), then one
//! `validate` pass that compiles JMESPath, parses durations, expands
//! `${ENV}` secrets and cross-checks names. `serve`, `check-config` and
//! `run-rule` all go through `load`, so the runtime never meets an invalid
//! rule. Every error names file, line, item and field.
//!
//! The sections live beside their checks: `server` (`[server]`, `[safety]`),
//! `token`, `rules` (sources, rules, runbooks), `watch`, `notify`; `validate`
//! holds the raw file and the validator, `expr` the expression limits,
//! `names` and `secrets` what every section shares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

mod expr;
mod names;
mod notify;
mod probe;
mod rules;
mod secrets;
mod server;
mod token;
mod validate;
mod watch;

pub use crate::redact::{redact, redact_url, redact_url_secrets};
pub use expr::{doc, Expr};
pub use names::{check_name, follows_name_rule, NAME_RULE};
pub use notify::{check_channel, Channel, ChannelKind, Email, RateLimit, Route, SmtpTls, Stdin};
pub use probe::{api_probe, On, Probe};
pub use rules::{
    check_account_name, check_env_name, Action, Mode, Rule, Runbook, Source, Step, Target, Verify,
};
pub use secrets::{expand_env, redacted};
pub use server::{Cidr, Safety, Server, Watchdog};
pub(crate) use token::parse_sha256;
pub use token::{hash_matches, hex, parse_expiry, token_hash, Scope, Token};
pub use watch::{
    fields_toml, heartbeat, heartbeat_from_def, priority_level, toml_fields, Heartbeat,
    RawHeartbeat, Retention, Scheduled,
};

use validate::{RawFile, Validator};

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
    use super::expr::literal_lookalikes;
    use super::*;
    use std::time::Duration;

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
    fn priorities_are_p1_to_p5_on_rules_and_probes_and_warned_about_on_heartbeats() {
        let rule =
            |p: &str| format!("[[rule]]\nname = \"r\"\naction = \"discard\"\npriority = \"{p}\"\n");
        let c = parse(Path::new("runbooks.toml"), &rule("P1")).unwrap();
        assert_eq!(c.rules[0].priority.as_deref(), Some("p1"));
        check_err(
            &rule("urgent"),
            "runbooks.toml:4: rule \"r\": priority: \"urgent\" is not one of p1, p2, p3, p4, p5",
        );
        let probe = |p: &str| {
            format!("[[probe]]\nname = \"db\"\nevery = \"1m\"\ntcp = {{ addr = \"127.0.0.1:5432\" }}\npriority = \"{p}\"\n")
        };
        let c = parse(Path::new("runbooks.toml"), &probe("p3")).unwrap();
        assert_eq!(c.probes["db"].priority.as_deref(), Some("p3"));
        check_err(&probe("p6"), "probe \"db\": priority: \"p6\" is not one of");
        // A heartbeat's older free word still loads, with a warning.
        let hb = |p: &str| {
            format!("[[heartbeat]]\nname = \"backup\"\nevery = \"1d\"\npriority = \"{p}\"\n")
        };
        let c = parse(Path::new("runbooks.toml"), &hb("high")).unwrap();
        assert_eq!(c.heartbeats["backup"].priority.as_deref(), Some("high"));
        assert!(
            c.warnings.iter().any(|w| w.contains(
                "runbooks.toml:1: heartbeat \"backup\": priority \"high\" is not one of p1"
            )),
            "{:?}",
            c.warnings
        );
        assert!(parse(Path::new("runbooks.toml"), &hb("p2"))
            .unwrap()
            .warnings
            .is_empty());
    }

    #[test]
    fn step_env_names_cwd_and_retries_are_checked_with_their_line() {
        let runbook = |runbook: &str, step: &str| {
            format!("[runbook.x]\n{runbook}\nsteps = [\n  {{ name = \"s\", run = \"true\"{step} }},\n]\n")
        };
        let c = parse(
            Path::new("runbooks.toml"),
            &runbook(
                "env = { A = \"1\", B = \"2\" }\ncwd = \"/srv\"",
                ", env = { B = \"${HOME}\" }, retries = 2, retry_delay = \"5s\"",
            ),
        )
        .unwrap();
        let step = &c.runbooks["x"].steps[0];
        assert_eq!(
            step.env,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "${HOME}".to_string())
            ]
        );
        assert_eq!((step.cwd.as_deref(), step.retries), (Some("/srv"), 2));
        assert_eq!(step.retry_delay, std::time::Duration::from_secs(5));
        for (rb, st, says) in [
            (
                "",
                ", env = { HEAL_EVENT_ID = \"1\" }",
                "names starting with HEAL_ are heal's own",
            ),
            (
                "env = { heal_x = \"1\" }",
                "",
                "names starting with HEAL_ are heal's own",
            ),
            (
                "",
                ", env = { \"A-B\" = \"1\" }",
                "\"A-B\" is not a variable name",
            ),
            (
                "",
                ", env = { \"1A\" = \"1\" }",
                "\"1A\" is not a variable name",
            ),
            ("cwd = \"srv\"", "", "cwd: \"srv\" is not an absolute path"),
            ("", ", retries = 101", "retries"),
            ("", ", retry_delay = \"soon\"", "retry_delay"),
            ("", ", when = \"steps.[\"", "when: "),
        ] {
            check_err(&runbook(rb, st), says);
        }
        check_err(
            &runbook("", ", cwd = \"tmp\""),
            "runbooks.toml:4: runbook \"x\" step \"s\": cwd",
        );
    }

    #[test]
    fn step_user_and_group_are_checked_with_their_line() {
        let runbook = |runbook: &str, step: &str| {
            format!("[runbook.x]\n{runbook}\nsteps = [\n  {{ name = \"s\", run = \"true\"{step} }},\n  {{ name = \"t\", run = \"true\", user = \"deploy\" }},\n]\n")
        };
        let c = parse(
            Path::new("runbooks.toml"),
            &runbook("user = \"www-data\"\ngroup = \"adm\"", ""),
        )
        .unwrap();
        let [s, t] = &c.runbooks["x"].steps[..] else {
            panic!("two steps")
        };
        assert_eq!(
            (s.user.as_deref(), s.group.as_deref()),
            (Some("www-data"), Some("adm"))
        );
        assert_eq!(
            (t.user.as_deref(), t.group.as_deref()),
            (Some("deploy"), Some("adm"))
        );
        for (rb, st, says) in [
            ("", ", user = \"0\"", "runbooks.toml:4: runbook \"x\" step \"s\": user: \"0\" is not a user or group name"),
            ("", ", user = \"a b\"", "user: \"a b\" is not a user"),
            ("", ", user = \"-x\"", "user: \"-x\" is not a user"),
            ("", ", user = \"../root\"", "user: \"../root\" is not a user"),
            ("", ", user = \"a\", group = \"g:h\"", "group: \"g:h\" is not a user"),
            ("group = \"adm\"", "", "runbooks.toml:4: runbook \"x\" step \"s\": group: \"adm\" without a user"),
            ("", &format!(", user = \"{}\"", "a".repeat(33)), "is not a user"),
        ] {
            check_err(&runbook(rb, st), says);
        }
        for ok in ["_apt", "a.b-c_d", "machine$", "Deploy2"] {
            assert!(super::check_account_name(ok).is_ok(), "{ok}");
        }
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
    fn graphite_probes_default_from_and_aggregate_and_expand_the_url() {
        std::env::set_var("HEAL_TEST_GRAPHITE_PASSWORD", "s3cret");
        let text = "[[probe]]\nname = \"g\"\nevery = \"1m\"\ngraphite = { url = \"http://u:${HEAL_TEST_GRAPHITE_PASSWORD}@127.0.0.1:8080/\", target = \"servers.*.cpu\", expect = \"< 85\" }\n";
        let c = parse(Path::new("runbooks.toml"), text).unwrap();
        let crate::probe::Check::Graphite(g) = &c.probes["g"].check else {
            panic!("not a graphite check: {:?}", c.probes["g"].check);
        };
        assert_eq!(g.url, "http://u:s3cret@127.0.0.1:8080");
        assert_eq!(
            (g.from.as_str(), g.aggregate),
            ("-5min", crate::probe::Aggregate::Last)
        );
        assert_eq!(c.probes["g"].kind(), "graphite");
        let probe = |fields: &str| {
            format!("\n[[probe]]\nname = \"g\"\nevery = \"1m\"\ngraphite = {{ {fields} }}\n")
        };
        check_err(
            &probe("url = \"http://x\", target = \"a\", expect = \"< 1\", aggregate = \"median\""),
            "runbooks.toml:2: probe \"g\": graphite.aggregate: \"median\" is not an aggregate",
        );
        check_err(
            &probe("url = \"http://x\", target = \"a\", expect = \"85\""),
            "runbooks.toml:2: probe \"g\": graphite.expect: bad expectation \"85\"",
        );
        check_err(
            &probe("url = \"http://x\", target = \" \", expect = \"< 1\""),
            "probe \"g\": graphite.target: empty",
        );
        check_err(
            &probe(
                "url = \"http://${HEAL_TEST_GRAPHITE_UNSET}@x\", target = \"a\", expect = \"< 1\"",
            ),
            "probe \"g\": graphite.url: environment variable HEAL_TEST_GRAPHITE_UNSET is not set",
        );
        check_err(
            &probe("url = \"ftp://u:pw@x\", target = \"a\", expect = \"< 1\""),
            "probe \"g\": graphite.url: \"ftp://<redacted>@x\" must start with http:// or https://",
        );
    }

    #[test]
    fn warn_thresholds_are_checked_beside_their_critical_ones() {
        let probe = |kind: &str| format!("\n\n[[probe]]\nname = \"p\"\nevery = \"1m\"\n{kind}\n");
        let c = parse(
            Path::new("runbooks.toml"),
            &probe("sql = { url = \"sqlite:///x.db\", query = \"SELECT 1\", expect = \"< 85\", warn = \"< 70\" }"),
        )
        .unwrap();
        assert!(c.probes["p"].check.warns());
        for (kind, says) in [
            ("prometheus = { url = \"http://x\", query = \"up\", expect = \"< 85\", warn = \"70\" }", "runbooks.toml:3: probe \"p\": prometheus.warn: bad expectation \"70\""),
            ("graphite = { url = \"http://x\", target = \"a\", expect = \"< 85\", warn = \"< 90\" }", "runbooks.toml:3: probe \"p\": graphite.warn: \"< 90\" must be on the same side as expect = \"< 85\" and no looser"),
            ("sql = { url = \"sqlite:///x.db\", query = \"SELECT 1\", expect = \"== 1\", warn = \"< 1\" }", "runbooks.toml:3: probe \"p\": sql.warn: a warning needs expect with <, <=, > or >="),
            ("sql = { url = \"sqlite:///x.db\", query = \"SELECT 1\", warn = \"< 1\" }", "missing field `expect`"),
            ("http = { url = \"http://x\", warn_latency = \"1s\" }", "runbooks.toml:3: probe \"p\": http.warn_latency: needs max_latency"),
            ("http = { url = \"http://x\", warn_latency = \"2s\", max_latency = \"2s\" }", "http.warn_latency: 2s must be shorter than max_latency (2s)"),
            ("http = { url = \"https://x\", tls_warn_days = 30 }", "http.tls_warn_days: needs tls_min_days"),
            ("http = { url = \"https://x\", tls_warn_days = 7, tls_min_days = 14 }", "http.tls_warn_days: 7 must be more than tls_min_days (14)"),
            ("labels = { severity = \"page\" }\nhttp = { url = \"http://x\", warn_latency = \"1s\", max_latency = \"2s\" }", "probe \"p\": labels: \"severity\" is set by heal"),
        ] {
            check_err(&probe(kind), says);
        }
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
