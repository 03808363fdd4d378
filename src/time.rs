//! Time as heal stores it (UTC milliseconds since the Unix epoch), durations
//! as runbooks.toml writes them ("30s", "1h30m"), and RFC 3339 as alert
//! sources send it. No time zones here: cron zones belong to the scheduler.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Longest duration heal accepts: 100 years (36500d). Times are i64 and
/// budgets u64 milliseconds, so a deadline or a sum of step timeouts made
/// of such durations cannot overflow.
pub const MAX_DURATION_MS: u64 = 36_500 * 86_400_000;

/// Parses "500ms", "30s", "10m", "1h30m", "2d" (units ms, s, m, h, d; concatenated),
/// at most `MAX_DURATION_MS`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration (write e.g. \"30s\", \"10m\", \"1h30m\")".into());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("bad duration {text:?}: expected a number before {rest:?} (write e.g. \"30s\", \"10m\", \"1h30m\")"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        let factor = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "bad duration {text:?}: missing unit after {number} (ms, s, m, h or d)"
                ))
            }
            other => {
                return Err(format!(
                    "bad duration {text:?}: unknown unit {other:?} (ms, s, m, h or d)"
                ))
            }
        };
        total = number
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .filter(|&t| t <= MAX_DURATION_MS)
            .ok_or_else(|| format!("bad duration {text:?}: longer than 100 years (36500d)"))?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration the way runbooks.toml writes it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut s = ms / 1000;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= size {
            out.push_str(&format!("{}{unit}", s / size));
            s %= size;
        }
    }
    out
}

/// Parses an RFC 3339 timestamp ("2026-11-22T11:57:31.991Z", offsets allowed)
/// into UTC milliseconds. Go's zero time ("0001-01-01T00:00:00Z") gives `None`.
pub fn parse_rfc3339(text: &str) -> Result<Option<i64>, String> {
    let bad =
        || format!("bad timestamp {text:?}: expected RFC 3339 like \"2026-11-22T11:57:31.991Z\"");
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        text.get(r)
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if year == 1 && month == 1 && day == 1 {
        return Ok(None);
    }
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let frac = &text[start..i.min(start + 3)];
        millis = frac.parse::<i64>().map_err(|_| bad())? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Ok(Some(secs * 1000 + millis))
}

/// Formats UTC milliseconds as RFC 3339 with milliseconds.
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_duration(text: &str, ms: u64) {
        assert_eq!(
            parse_duration(text).unwrap(),
            Duration::from_millis(ms),
            "{text}"
        );
    }

    #[test]
    fn durations() {
        check_duration("500ms", 500);
        check_duration("30s", 30_000);
        check_duration("10m", 600_000);
        check_duration("1h30m", 5_400_000);
        check_duration("2d", 172_800_000);
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        check_duration("36500d", MAX_DURATION_MS);
        assert!(parse_duration("36500d1ms")
            .unwrap_err()
            .contains("100 years"));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), Some(0));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z").unwrap(), None);
        let t = parse_rfc3339("2026-11-22T11:57:31.991Z").unwrap().unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-22T11:57:31.991Z");
        let t2 = parse_rfc3339("2026-11-22T11:44:52.94Z").unwrap().unwrap();
        assert_eq!(t2 % 1000, 940);
        let t3 = parse_rfc3339("2026-11-22T12:57:31.991+01:00")
            .unwrap()
            .unwrap();
        assert_eq!(t3, t);
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_rfc3339("2026-13-22T11:57:31Z").is_err());
    }
}
