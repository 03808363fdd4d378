//! The file as serde reads it (`RawFile`) and the `Validator` that turns it
//! into a `Config`: where every error gets its file, line and item, and
//! where warnings are collected. Each section's checks live beside its
//! types (`server`, `token`, `rules`, `watch`, `notify`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::expr::literal_lookalikes;
use super::rules::{RawRule, RawRunbook, RawSource};
use super::server::{RawSafety, RawServer};
use super::token::RawToken;
use super::{notify, watch};
use super::{Action, Config, Expr, RawHeartbeat, Rule, Scheduled, Token, Verify};
use crate::error::{Error, Result};
use crate::time::parse_duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
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
    probes: Vec<Spanned<super::probe::RawProbe>>,
    #[serde(default, rename = "schedule")]
    schedules: Vec<Spanned<watch::RawSchedule>>,
    #[serde(default)]
    retention: watch::RawRetention,
    #[serde(default, rename = "channel")]
    channels: BTreeMap<String, Spanned<notify::RawChannel>>,
    #[serde(default, rename = "notify")]
    routes: Vec<Spanned<notify::RawRoute>>,
}

pub(super) struct Validator<'a> {
    pub(super) file: String,
    pub(super) text: &'a str,
    /// See `Config::warnings`.
    pub(super) warnings: std::cell::RefCell<Vec<String>>,
}

impl Validator<'_> {
    pub(super) fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn err<T>(
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

    /// A warning at a place of the file (`Config::warnings`).
    pub(super) fn warn(&self, span: std::ops::Range<usize>, item: &str, message: &str) {
        self.warnings.borrow_mut().push(format!(
            "{}:{}: {item}: {message}",
            self.file,
            self.line(span.start)
        ));
    }

    pub(super) fn expr(&self, s: &Spanned<String>, item: &str, field: &str) -> Result<Expr> {
        let expr = Expr::compile(s.get_ref()).or_else(|e| {
            self.err(
                s.span(),
                item,
                format!("{field}: {e} (got {:?})", s.get_ref()),
            )
        })?;
        for name in literal_lookalikes(expr.compiled.as_ast()) {
            self.warn(
                s.span(),
                item,
                &format!(
                    "{field} {:?}: a bare {name} looks up a field named \"{name}\" (null in every alert) instead of meaning {name}; for the literal write `{name}`, with its backticks",
                    s.get_ref()
                ),
            );
        }
        Ok(expr)
    }

    pub(super) fn opt_expr(
        &self,
        s: &Option<Spanned<String>>,
        item: &str,
        field: &str,
    ) -> Result<Option<Expr>> {
        s.as_ref().map(|s| self.expr(s, item, field)).transpose()
    }

    pub(super) fn duration(
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

    pub(super) fn count(
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

    pub(super) fn validate(&self, path: &Path, raw: RawFile) -> Result<Config> {
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
            probes: self.probes(&raw.probes, &channels)?,
            schedules,
            retention: self.retention(&raw.retention)?,
            channels,
            routes,
            warnings: Vec::new(),
        })
    }
}
