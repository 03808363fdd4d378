//! The one rule for the names heal uses as identifiers.

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
    Err(format!("{:?} {NAME_RULE}", crate::exec::truncate(name, 64)))
}

/// Whether `text` follows `NAME_RULE`, with `extra` characters also allowed
/// after the first (agent ids take ':' for `host:port`).
pub fn follows_name_rule(text: &str, extra: &str) -> bool {
    let mut chars = text.chars();
    text.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
}
