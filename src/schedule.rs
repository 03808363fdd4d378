//! When something is due: a fixed period (`every = "1h"`) or a cron
//! expression evaluated on the wall clock of an IANA time zone (default UTC).
//!
//! Users write Unix cron: 5 fields (minute hour day-of-month month
//! day-of-week), 6 with a leading seconds field, or a macro (`@hourly`,
//! `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually`).
//! The `cron` crate does the calendar walk but speaks a different dialect, so
//! `parse` translates once:
//! - numeric day-of-week items use Unix numbering (0 or 7 = Sunday,
//!   1 = Monday), in the 6-field form too, and are rewritten to the crate's
//!   (1 = Sunday) as explicit lists, so `1-5`, `0,6`, `5-7` and `*/2` mean
//!   what they mean to crond; names (`MON-FRI`) pass through unchanged;
//! - when both day-of-month and day-of-week are restricted (neither starts
//!   with `*`), Unix cron fires when *either* matches while the crate needs
//!   both, so such an expression is kept as two crate schedules and the
//!   earlier firing wins;
//! - the crate's 7th (year) field is not accepted, and an expression that
//!   never fires (`0 0 30 2 *`) is an error.
//!
//! Daylight saving time, as the crate and chrono-tz give it:
//! - a wall-clock time that does not exist (02:30 in Europe/Berlin on the
//!   spring-forward day) is skipped: the job does not fire that day;
//! - a wall-clock time that occurs twice (02:30 on the fall-back day) fires
//!   once, at its first occurrence (summer time), as cron daemons run
//!   fixed-time jobs once. The crate walks the wall clock forward, so
//!   schedules with wildcard hours (`*/15 * * * *`) skip the repeated hour
//!   too: a heartbeat is checked more loosely for that one hour a year.
//!
//! Nothing is parsed per call: `next_after` walks pre-built crate schedules,
//! which is what the heartbeat sweep needs for thousands of checks a tick.
//! This module does no I/O and never reads the clock.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, LocalResult, TimeZone};
use chrono_tz::Tz;

use crate::time::{format_duration, parse_duration};

/// When something is due.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// A fixed period after the previous activity.
    Every(Duration),
    /// A cron expression on the wall clock of a time zone.
    Cron(Cron),
}

/// A cron expression compiled for its zone; built by `Schedule::parse`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    /// The expression as the user wrote it, for display.
    source: String,
    /// The zone whose wall clock the expression is read in.
    tz: Tz,
    /// The expression in the crate's dialect (seconds first, 1 = Sunday),
    /// boxed because a crate schedule is large (hundreds of bytes).
    main: Box<cron::Schedule>,
    /// The day-of-week half when Unix cron ORs day-of-month and day-of-week.
    by_weekday: Option<Box<cron::Schedule>>,
}

const FIELDS_HELP: &str =
    "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds";

const SYNTAX_HELP: &str = "a range (1-5), a list (1,3) or a step (*/15)";

/// Upper bound on the crate candidates one `next_after` looks at. Only the
/// repeated hour of a fall-back day skips any (an every-second schedule
/// skips 7,200 per hour of overlap), so this only guarantees termination.
const MAX_CANDIDATES: usize = 20_000;

impl Schedule {
    /// Exactly one of `every` / `cron`; `tz` only with `cron` (default UTC).
    /// Errors name the field and the bad value, e.g. "every: must be at
    /// least 1s (got \"500ms\")" or "tz \"Europe/Berln\": unknown time zone
    /// (an IANA name such as Europe/Berlin)".
    pub fn parse(
        every: Option<&str>,
        cron: Option<&str>,
        tz: Option<&str>,
    ) -> Result<Schedule, String> {
        match (every, cron) {
            (Some(_), Some(_)) => Err("give `every` or `cron`, not both".into()),
            (None, None) => Err("give `every` or `cron`".into()),
            (Some(_), None) if tz.is_some() => Err("`tz` needs `cron`".into()),
            (Some(every), None) => parse_every(every),
            (None, Some(cron)) => Cron::parse(cron, tz.unwrap_or("UTC")).map(Schedule::Cron),
        }
    }

    /// First firing strictly after `after_ms` (UTC milliseconds since the
    /// epoch), in UTC milliseconds. `Every` adds its period; `Cron` is read
    /// on the zone's wall clock (see the module doc for DST). `None` only if
    /// a cron expression never fires again (the crate stops at year 2100).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every(period) => after_ms.checked_add(period.as_millis() as i64),
            Schedule::Cron(cron) => cron.next_after(after_ms),
        }
    }
}

impl fmt::Display for Schedule {
    /// "every 1h", "cron `0 3 * * *` (Europe/Berlin)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(period) => write!(f, "every {}", format_duration(*period)),
            Schedule::Cron(cron) => write!(f, "cron `{}` ({})", cron.source, cron.tz.name()),
        }
    }
}

fn parse_every(text: &str) -> Result<Schedule, String> {
    let period = parse_duration(text).map_err(|e| format!("every: {e}"))?;
    if period < Duration::from_secs(1) {
        return Err(format!("every: must be at least 1s (got {text:?})"));
    }
    Ok(Schedule::Every(period))
}

impl Cron {
    fn parse(text: &str, tz: &str) -> Result<Cron, String> {
        let zone: Tz = tz.parse().map_err(|_| {
            format!("tz {tz:?}: unknown time zone (an IANA name such as Europe/Berlin)")
        })?;
        let source = text.trim().to_string();
        let bad = |why: String| format!("cron `{source}`: {why}");
        let (main, by_weekday) = compile(&source).map_err(bad)?;
        let cron = Cron {
            source: source.clone(),
            tz: zone,
            main,
            by_weekday,
        };
        if cron.next_after(0).is_none() {
            return Err(bad("never fires".into()));
        }
        Ok(cron)
    }

    fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = DateTime::from_timestamp_millis(after_ms)?.with_timezone(&self.tz);
        let main = first_after(&self.main, &after, after_ms);
        let other = self
            .by_weekday
            .as_ref()
            .and_then(|s| first_after(s, &after, after_ms));
        main.into_iter().chain(other).min()
    }
}

/// The crate's first candidate after `after` that is strictly later in UTC
/// and is not the second occurrence of a repeated wall-clock time.
fn first_after(schedule: &cron::Schedule, after: &DateTime<Tz>, after_ms: i64) -> Option<i64> {
    schedule
        .after(after)
        .take(MAX_CANDIDATES)
        .find(|c| c.timestamp_millis() > after_ms && !second_occurrence(c))
        .map(|c| c.timestamp_millis())
}

/// Whether `at` is the later of two instants with the same wall-clock time.
fn second_occurrence(at: &DateTime<Tz>) -> bool {
    match at.timezone().from_local_datetime(&at.naive_local()) {
        LocalResult::Ambiguous(first, _) => first != *at,
        _ => false,
    }
}

/// The main crate schedule and the optional day-of-week half.
type Compiled = (Box<cron::Schedule>, Option<Box<cron::Schedule>>);

/// Unix cron text → crate schedules: the main one, plus the day-of-week
/// half when day-of-month and day-of-week are both restricted (Unix fires
/// when either matches; the crate needs both).
fn compile(text: &str) -> Result<Compiled, String> {
    if text.starts_with('@') {
        let expression = expand_macro(text)?;
        return Ok((
            Box::new(expression.parse().expect("macros are valid")),
            None,
        ));
    }
    let mut fields: Vec<&str> = text.split_whitespace().collect();
    match fields.len() {
        5 => fields.insert(0, "0"),
        6 => {}
        _ => return Err(FIELDS_HELP.into()),
    }
    let weekdays = translate_weekdays(fields[5])?;
    let one = |dom: &str, dow: &str| {
        let [sec, min, hour, _, month, _] = fields[..] else {
            unreachable!()
        };
        let expression = format!("{sec} {min} {hour} {dom} {month} {dow}");
        let schedule: cron::Schedule = expression
            .parse()
            .map_err(|_| field_error(&fields, &weekdays))?;
        Ok::<_, String>(Box::new(schedule))
    };
    if restricted(fields[3]) && restricted(fields[5]) {
        Ok((one(fields[3], "*")?, Some(one("*", &weekdays)?)))
    } else {
        Ok((one(fields[3], &weekdays)?, None))
    }
}

/// Names the first field the crate rejects, trying each alone in an
/// otherwise valid expression (the crate's own message shows its dialect).
fn field_error(fields: &[&str], weekdays: &str) -> String {
    const NAMES: [(&str, &str); 6] = [
        ("second", "0-59"),
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day-of-month", "1-31"),
        ("month", "1-12 or JAN-DEC"),
        ("day-of-week", "0-7 (0 or 7 = Sunday) or SUN-SAT"),
    ];
    for (i, (name, range)) in NAMES.iter().enumerate() {
        let mut probe = ["0", "0", "0", "*", "*", "*"];
        probe[i] = if i == 5 { weekdays } else { fields[i] };
        if probe.join(" ").parse::<cron::Schedule>().is_err() {
            let field = fields[i];
            return format!("{name} {field:?}: expected {range}, {SYNTAX_HELP}");
        }
    }
    "not a valid cron expression".into()
}

/// Whether a day field limits the days (vixie cron: it does not start with `*`).
fn restricted(field: &str) -> bool {
    !field.starts_with('*') && field != "?"
}

fn expand_macro(text: &str) -> Result<&'static str, String> {
    match text {
        "@yearly" | "@annually" => Ok("0 0 0 1 1 *"),
        "@monthly" => Ok("0 0 0 1 * *"),
        "@weekly" => Ok("0 0 0 * * SUN"),
        "@daily" | "@midnight" => Ok("0 0 0 * * *"),
        "@hourly" => Ok("0 0 * * * *"),
        _ => Err("unknown macro (@hourly, @daily, @weekly, @monthly or @yearly)".into()),
    }
}

/// Rewrites a Unix day-of-week field (0 or 7 = Sunday) into the crate's
/// numbering (1 = Sunday): numeric items become explicit lists, names pass.
fn translate_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.into());
    }
    let items = field.split(',').map(translate_weekday_item);
    Ok(items.collect::<Result<Vec<_>, _>>()?.join(","))
}

fn translate_weekday_item(item: &str) -> Result<String, String> {
    if item.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Ok(item.into());
    }
    let bad = || {
        format!("day-of-week {item:?}: expected 0-7 (0 or 7 = Sunday) or SUN-SAT, {SYNTAX_HELP}")
    };
    let number = |s: &str| s.parse::<u32>().ok().filter(|&n| n <= 7).ok_or_else(bad);
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (
            range,
            step.parse::<usize>()
                .ok()
                .filter(|&s| s > 0)
                .ok_or_else(bad)?,
        ),
        None => (item, 1),
    };
    let (first, last) = match range.split_once('-') {
        _ if range == "*" => (0, 7),
        Some((first, last)) => (number(first)?, number(last)?),
        None if step > 1 => (number(range)?, 7),
        None => (number(range)?, number(range)?),
    };
    if first > last {
        return Err(bad());
    }
    let days: BTreeSet<u32> = (first..=last).step_by(step).map(|d| d % 7 + 1).collect();
    Ok(days
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use chrono::Datelike;

    use super::*;
    use crate::time::{format_rfc3339, parse_rfc3339};

    fn t(text: &str) -> i64 {
        parse_rfc3339(text).unwrap().unwrap()
    }

    fn cron(expression: &str, tz: &str) -> Schedule {
        Schedule::parse(None, Some(expression), Some(tz)).unwrap()
    }

    /// The next `n` firings after `from`, as RFC 3339.
    fn firings(schedule: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut at = t(from);
        let mut out = Vec::new();
        for _ in 0..n {
            at = schedule.next_after(at).unwrap();
            out.push(format_rfc3339(at));
        }
        out
    }

    fn check(expression: &str, tz: &str, from: &str, expected: &[&str]) {
        let got = firings(&cron(expression, tz), from, expected.len());
        assert_eq!(got, expected, "{expression} ({tz}) after {from}");
    }

    /// The distinct weekdays (UTC) of the next two weeks of firings.
    fn weekdays(expression: &str) -> String {
        let schedule = cron(expression, "UTC");
        let mut at = t("2026-01-01T00:00:00Z");
        let mut days = BTreeSet::new();
        while at < t("2026-01-15T00:00:00Z") {
            at = schedule.next_after(at).unwrap();
            let weekday = DateTime::from_timestamp_millis(at).unwrap().weekday();
            days.insert((weekday.num_days_from_monday(), weekday.to_string()));
        }
        let names: Vec<String> = days.into_iter().map(|(_, name)| name).collect();
        names.join(" ")
    }

    fn check_error(every: Option<&str>, cron: Option<&str>, tz: Option<&str>, expected: &str) {
        let err = Schedule::parse(every, cron, tz).unwrap_err();
        assert_eq!(err, expected);
    }

    #[test]
    fn parse_errors_name_the_field_and_value() {
        let help = SYNTAX_HELP;
        let dow = format!("0-7 (0 or 7 = Sunday) or SUN-SAT, {help}");
        check_error(None, Some("0 3 * *"), None, "cron `0 3 * *`: expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds");
        check_error(
            None,
            Some("0 3 * * *"),
            Some("Europe/Berln"),
            "tz \"Europe/Berln\": unknown time zone (an IANA name such as Europe/Berlin)",
        );
        check_error(
            Some("1h"),
            Some("0 3 * * *"),
            None,
            "give `every` or `cron`, not both",
        );
        check_error(None, None, None, "give `every` or `cron`");
        check_error(Some("1h"), None, Some("UTC"), "`tz` needs `cron`");
        check_error(
            Some("500ms"),
            None,
            None,
            "every: must be at least 1s (got \"500ms\")",
        );
        check_error(
            Some("1x"),
            None,
            None,
            "every: bad duration \"1x\": unknown unit \"x\" (ms, s, m, h or d)",
        );
        check_error(
            None,
            Some("0 3 * * 8"),
            None,
            &format!("cron `0 3 * * 8`: day-of-week \"8\": expected {dow}"),
        );
        check_error(
            None,
            Some("0 3 * * 5-1"),
            None,
            &format!("cron `0 3 * * 5-1`: day-of-week \"5-1\": expected {dow}"),
        );
        check_error(
            None,
            Some("@often"),
            None,
            "cron `@often`: unknown macro (@hourly, @daily, @weekly, @monthly or @yearly)",
        );
        check_error(
            None,
            Some("0 0 30 2 *"),
            None,
            "cron `0 0 30 2 *`: never fires",
        );
        check_error(
            None,
            Some("61 3 * * *"),
            None,
            &format!("cron `61 3 * * *`: minute \"61\": expected 0-59, {help}"),
        );
        check_error(
            None,
            Some("0 3 * 13 *"),
            None,
            &format!("cron `0 3 * 13 *`: month \"13\": expected 1-12 or JAN-DEC, {help}"),
        );
        check_error(
            None,
            Some("0 3 * * FOO"),
            None,
            &format!("cron `0 3 * * FOO`: day-of-week \"FOO\": expected {dow}"),
        );
        check_error(
            None,
            Some("x 0 3 * * *"),
            None,
            &format!("cron `x 0 3 * * *`: second \"x\": expected 0-59, {help}"),
        );
    }

    #[test]
    fn every_adds_its_period() {
        let every = Schedule::parse(Some("1h30m"), None, None).unwrap();
        assert_eq!(every.next_after(1_000), Some(1_000 + 5_400_000));
        assert_eq!(every.to_string(), "every 1h30m");
    }

    #[test]
    fn display_shows_source_and_zone() {
        assert_eq!(
            cron(" 0 3 * * * ", "Europe/Berlin").to_string(),
            "cron `0 3 * * *` (Europe/Berlin)"
        );
        let utc = Schedule::parse(None, Some("@daily"), None).unwrap();
        assert_eq!(utc.to_string(), "cron `@daily` (UTC)");
    }

    #[test]
    fn next_after_is_strictly_after() {
        let daily = cron("0 3 * * *", "UTC");
        assert_eq!(
            daily.next_after(t("2026-01-01T02:59:59.999Z")),
            Some(t("2026-01-01T03:00:00Z"))
        );
        assert_eq!(
            daily.next_after(t("2026-01-01T03:00:00Z")),
            Some(t("2026-01-02T03:00:00Z"))
        );
        assert_eq!(
            daily.next_after(t("2026-01-01T03:00:00.500Z")),
            Some(t("2026-01-02T03:00:00Z"))
        );
    }

    #[test]
    fn five_and_six_fields_and_macros() {
        let from = "2026-01-01T00:00:00Z"; // A Thursday.
        check("0 3 * * *", "UTC", from, &["2026-01-01T03:00:00.000Z"]);
        check("30 0 3 * * *", "UTC", from, &["2026-01-01T03:00:30.000Z"]);
        check("@hourly", "UTC", from, &["2026-01-01T01:00:00.000Z"]);
        check("@daily", "UTC", from, &["2026-01-02T00:00:00.000Z"]);
        check("@midnight", "UTC", from, &["2026-01-02T00:00:00.000Z"]);
        check("@weekly", "UTC", from, &["2026-01-04T00:00:00.000Z"]);
        check("@monthly", "UTC", from, &["2026-02-01T00:00:00.000Z"]);
        check("@yearly", "UTC", from, &["2027-01-01T00:00:00.000Z"]);
        check("@annually", "UTC", from, &["2027-01-01T00:00:00.000Z"]);
    }

    #[test]
    fn day_of_week_uses_unix_numbering() {
        assert_eq!(weekdays("0 3 * * 1-5"), "Mon Tue Wed Thu Fri");
        assert_eq!(weekdays("0 3 * * MON-FRI"), "Mon Tue Wed Thu Fri");
        assert_eq!(weekdays("0 3 * * 0"), "Sun");
        assert_eq!(weekdays("0 3 * * 7"), "Sun");
        assert_eq!(weekdays("0 3 * * 0,6"), "Sat Sun");
        assert_eq!(weekdays("0 3 * * 5-7"), "Fri Sat Sun");
        assert_eq!(weekdays("0 3 * * */2"), "Tue Thu Sat Sun");
        assert_eq!(weekdays("0 3 * * 1-5/2"), "Mon Wed Fri");
        assert_eq!(weekdays("0 3 * * 1,SAT"), "Mon Sat");
        assert_eq!(weekdays("0 0 3 * * 1"), "Mon");
    }

    #[test]
    fn weekdays_fire_monday_to_friday_only() {
        let got = firings(&cron("0 3 * * 1-5", "UTC"), "2026-01-01T00:00:00Z", 6);
        let expected =
            ["01", "02", "05", "06", "07", "08"].map(|d| format!("2026-01-{d}T03:00:00.000Z"));
        assert_eq!(got, expected);
    }

    #[test]
    fn day_of_month_or_day_of_week_like_unix() {
        // The 1st of the month or any Monday; 2026-02-01 is a Sunday.
        let expected = [
            "02-01", "02-02", "02-09", "02-16", "02-23", "03-01", "03-02",
        ]
        .map(|d| format!("2026-{d}T00:00:00.000Z"));
        let got = firings(
            &cron("0 0 1 * 1", "UTC"),
            "2026-01-31T12:00:00Z",
            expected.len(),
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn berlin_spring_forward_skips_the_missing_time() {
        // 2026-03-29 02:00 CET → 03:00 CEST: 02:30 does not exist that day.
        check(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-27T12:00:00Z",
            &["2026-03-28T01:30:00.000Z", "2026-03-30T00:30:00.000Z"],
        );
        check(
            "0 3 * * *",
            "Europe/Berlin",
            "2026-03-27T12:00:00Z",
            &["2026-03-28T02:00:00.000Z", "2026-03-29T01:00:00.000Z"],
        );
    }

    #[test]
    fn berlin_fall_back_fires_once() {
        // 2026-10-25 03:00 CEST → 02:00 CET: 02:30 happens twice, fires at the first.
        check(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            &["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"],
        );
        check(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-25T01:10:00Z",
            &["2026-10-26T01:30:00.000Z"],
        );
        check(
            "0 3 * * *",
            "Europe/Berlin",
            "2026-10-23T12:00:00Z",
            &["2026-10-24T01:00:00.000Z", "2026-10-25T02:00:00.000Z"],
        );
    }

    #[test]
    fn berlin_fall_back_wildcard_hours_skip_the_repeated_hour() {
        let expected = ["2026-10-25T02:00:00.000Z", "2026-10-25T02:15:00.000Z"];
        check(
            "*/15 * * * *",
            "Europe/Berlin",
            "2026-10-25T00:45:00Z",
            &expected,
        );
        check(
            "*/15 * * * *",
            "Europe/Berlin",
            "2026-10-25T01:10:00Z",
            &expected,
        );
    }

    #[test]
    fn new_york_spring_forward() {
        // 2026-03-08 02:00 EST → 03:00 EDT.
        check(
            "0 3 * * *",
            "America/New_York",
            "2026-03-06T12:00:00Z",
            &["2026-03-07T08:00:00.000Z", "2026-03-08T07:00:00.000Z"],
        );
        check(
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00Z",
            &["2026-03-09T06:30:00.000Z"],
        );
    }

    #[test]
    fn next_after_ends_with_the_cron_calendar() {
        assert_eq!(
            cron("0 3 * * *", "UTC").next_after(t("2101-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn next_after_is_fast() {
        let schedule = cron("0 3 * * 1-5", "Europe/Berlin");
        let start = std::time::Instant::now();
        let mut at = t("2026-01-01T00:00:00Z");
        for i in 0..10_000 {
            at = schedule.next_after(at + i % 7 * 3_600_000).unwrap();
        }
        let elapsed = start.elapsed();
        eprintln!("10,000 next_after calls: {elapsed:?}");
        assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
    }
}
