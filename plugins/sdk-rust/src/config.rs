//! The plugin's own configuration: the `[config]` table of its `NAME.toml` manifest.
//!
//! Values arrive as text. The `get_*` helpers parse them and turn a malformed value into an
//! error message suitable for returning from a `Guest` function (`?` works with
//! `Result<_, String>`), so a typo in a manifest shows up as a recorded plugin error instead
//! of a silent default. The `parse*` functions do the same from any lookup, which keeps
//! configuration logic testable without a host.

use core::str::FromStr;

/// The value for `key`, or `None` when the manifest does not set it (a host call).
pub fn get(key: &str) -> Option<String> {
    crate::bindings::host::hephaestus::plugins::config::get(key)
}

/// Every key/value pair of the plugin's config, in the manifest's order (a host call).
pub fn all() -> Vec<(String, String)> {
    crate::bindings::host::hephaestus::plugins::config::all()
}

/// The value for `key`, or `default` when unset.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}

/// `key` parsed as a whole non-negative number; `Ok(None)` when unset.
pub fn get_u64(key: &str) -> Result<Option<u64>, String> {
    parse(key, get(key).as_deref())
}

/// `key` parsed as a whole non-negative number, or `default` when unset.
pub fn get_u64_or(key: &str, default: u64) -> Result<u64, String> {
    parse_or(key, get(key).as_deref(), default)
}

/// `key` parsed as a `u32`, or `default` when unset.
pub fn get_u32_or(key: &str, default: u32) -> Result<u32, String> {
    parse_or(key, get(key).as_deref(), default)
}

/// `key` parsed as a whole number that may be negative, or `default` when unset.
pub fn get_i64_or(key: &str, default: i64) -> Result<i64, String> {
    parse_or(key, get(key).as_deref(), default)
}

/// `key` parsed as a flag (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`), or `default`
/// when unset.
pub fn get_bool_or(key: &str, default: bool) -> Result<bool, String> {
    Ok(parse_bool(key, get(key).as_deref())?.unwrap_or(default))
}

/// Parses an optional config value (surrounding whitespace ignored); `Ok(None)` when
/// `value` is `None`. The error names the key and the value.
pub fn parse<T: FromStr>(key: &str, value: Option<&str>) -> Result<Option<T>, String> {
    match value {
        None => Ok(None),
        Some(text) => text.trim().parse::<T>().map(Some).map_err(|_| {
            format!(
                "config `{key}` = {text:?} is not a valid {}",
                short_type_name::<T>()
            )
        }),
    }
}

/// Like [`parse`], with a default for an unset value.
pub fn parse_or<T: FromStr>(key: &str, value: Option<&str>, default: T) -> Result<T, String> {
    Ok(parse(key, value)?.unwrap_or(default))
}

/// Parses an optional flag: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` (any case).
pub fn parse_bool(key: &str, value: Option<&str>) -> Result<Option<bool>, String> {
    let Some(text) = value else { return Ok(None) };
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(Some(true)),
        "false" | "no" | "off" | "0" => Ok(Some(false)),
        _ => Err(format!("config `{key}` = {text:?} is not true or false")),
    }
}

fn short_type_name<T>() -> &'static str {
    let name = core::any::type_name::<T>();
    match name {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "whole number",
        _ => name.rsplit("::").next().unwrap_or(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports() {
        assert_eq!(parse::<u64>("k", None), Ok(None));
        assert_eq!(parse::<u64>("k", Some(" 10 ")), Ok(Some(10)));
        assert_eq!(parse_or::<u32>("k", None, 7), Ok(7));
        let err = parse::<u64>("tier", Some("ten")).unwrap_err();
        assert!(err.contains("`tier`") && err.contains("\"ten\""), "{err}");
        assert!(parse::<u64>("k", Some("-1")).is_err());
        assert_eq!(parse_bool("k", Some("Yes")), Ok(Some(true)));
        assert_eq!(parse_bool("k", Some("0")), Ok(Some(false)));
        assert!(parse_bool("k", Some("maybe")).is_err());
    }
}
