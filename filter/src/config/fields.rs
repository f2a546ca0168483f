//! Field-level checks shared by every section: secrets, durations, names, paths, scopes, header
//! names, claim paths, hashes, URLs and timestamps.

use std::collections::BTreeMap;

use super::*;

/// A secret given inline (`x`) or through a VM environment variable (`x_env`): exactly one.
pub(crate) fn secret(
    path: &str,
    field: &str,
    inline: Option<String>,
    env_name: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    match (inline, env_name) {
        (Some(_), Some(_)) => err(path, format!("give one of {field} or {field}_env, not both")),
        (None, None) => err(path, format!("give one of {field} or {field}_env")),
        (Some(v), None) => {
            if v.is_empty() {
                err(format!("{path}.{field}"), "must not be empty")
            } else {
                Ok(v)
            }
        }
        (None, Some(name)) => match env(&name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => err(
                format!("{path}.{field}_env"),
                format!("VM environment variable {name:?} is not set or empty (Envoy: vm_config.environment_variables; Istio: vmConfig.env)"),
            ),
        },
    }
}

pub(crate) fn dur(path: &str, text: &str) -> Result<u64, ConfigError> {
    duration::parse_ms(text).map_err(|e| ConfigError {
        path: path.into(),
        message: match e {
            duration::DurationError::Syntax => {
                format!("invalid duration {text:?}: use seconds with an \"s\" suffix, like \"300s\" or \"0.5s\"")
            }
            duration::DurationError::TooPrecise => format!("invalid duration {text:?}: at most millisecond precision"),
            duration::DurationError::TooLarge => format!("invalid duration {text:?}: too large"),
        },
    })
}

pub(crate) fn positive_dur(path: &str, text: Option<&str>, default_ms: u64) -> Result<u64, ConfigError> {
    match text {
        None => Ok(default_ms),
        Some(t) => {
            let ms = dur(path, t)?;
            if ms == 0 {
                err(path, "must be greater than 0s")
            } else {
                Ok(ms)
            }
        }
    }
}

pub(crate) fn unknown_plan(name: &str, plans: &BTreeMap<String, Plan>) -> String {
    if plans.is_empty() {
        format!("unknown plan {name:?} (rate_limit.plans is empty)")
    } else {
        let known: Vec<&str> = plans.keys().map(String::as_str).collect();
        format!("unknown plan {name:?} (rate_limit.plans has: {})", known.join(", "))
    }
}

pub(crate) fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return err(path, format!("name {name:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'"));
    }
    Ok(())
}

pub(crate) fn check_path(path: &str, p: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') || p.bytes().any(|b| b <= 0x20 || b == 0x7f || b == b'?' || b == b'#') {
        return err(path, format!("must start with '/' and hold no spaces, '?' or '#', got {p:?}"));
    }
    Ok(())
}

/// A route path must already be in the canonical form requests are matched in (see
/// `request::canonicalize`): no dot or empty segments, no path parameters, and escapes only
/// for characters that are not unreserved, written with upper-case hex.
pub(crate) fn check_route_path(path: &str, p: &str) -> Result<(), ConfigError> {
    check_path(path, p)?;
    let b = p.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let esc = p.get(i + 1..i + 3).unwrap_or("");
            let v = u8::from_str_radix(esc, 16)
                .ok()
                .filter(|_| esc.bytes().all(|h| h.is_ascii_digit() || h.is_ascii_uppercase()));
            match v {
                Some(v) if !(v.is_ascii_alphanumeric() || b"-._~/\\\0".contains(&v)) => {}
                _ => return err(path, format!("escape {:?} is not canonical: write unreserved characters as themselves and other escapes as %XX with upper-case hex (encoded '/', '\\' and NUL never match)", p.get(i..i + 3).unwrap_or("%"))),
            }
            i += 3;
        } else {
            if c == b';' || c == b'\\' || !c.is_ascii() {
                return err(path, format!("{p:?} holds a character requests are refused for (';', '\\' or non-ASCII)"));
            }
            i += 1;
        }
    }
    let segments: Vec<&str> = p.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (j, s) in segments.iter().enumerate() {
        if *s == "." || *s == ".." || (s.is_empty() && j != last) {
            return err(
                path,
                format!(
                    "{p:?} has a dot or empty segment; requests with those are refused, so the route would never match"
                ),
            );
        }
    }
    Ok(())
}

pub(crate) fn check_scope(path: &str, s: &str) -> Result<(), ConfigError> {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    if s.is_empty() || !s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)) {
        return err(path, format!("{s:?} is not a valid scope token (RFC 6749 §3.3)"));
    }
    Ok(())
}

/// Validates an HTTP header name and returns it lower-cased.
pub(crate) fn header_name(path: &str, h: &str) -> Result<String, ConfigError> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b)) {
        return err(path, format!("{h:?} is not a valid HTTP header name"));
    }
    let lower = h.to_ascii_lowercase();
    if matches!(lower.as_str(), "host" | "content-length" | "transfer-encoding" | "connection") {
        return err(path, format!("{h:?} cannot be used here"));
    }
    Ok(lower)
}

pub(crate) fn claim_path(path: &str, c: &str) -> Result<ClaimPath, ConfigError> {
    if c.is_empty() || c.split('.').any(str::is_empty) {
        return err(
            path,
            format!("{c:?} is not a claim name (use dots for nested claims, like \"realm_access.roles\")"),
        );
    }
    Ok(c.split('.').map(str::to_string).collect())
}

pub(crate) fn parse_sha256_hex(h: &str) -> Option<[u8; 32]> {
    let b = h.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in b.chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Splits `http(s)://host[:port]/path?query` into (authority, path-and-query).
pub fn split_url(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("https://").or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) || path.contains([' ', '#']) {
        return None;
    }
    Some((authority.to_string(), path.to_string()))
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC, optional fraction) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let tail = &s[19..];
    let tail = match tail.strip_prefix('.') {
        Some(t) => {
            let digits = t.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            &t[digits..]
        }
        None => tail,
    };
    if tail != "Z" && tail != "z" {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}
