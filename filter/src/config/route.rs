//! Validated access-policy vocabulary of routes (SPEC C6): host and header matching, and the
//! Istio-style `when` conditions. Plain data here; evaluation is in `policy`.

use std::net::IpAddr;

use super::{err, ConfigError};

/// `match.hosts`: an exact host, or `*.suffix` (which does not match the bare suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` → `.example.com`.
    Suffix(String),
}

/// A string pattern of `values` / `notValues`: exact, `abc*`, `*abc`, or `*` (presence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Presence,
    /// `source.ip` only: an address or CIDR block.
    Cidr(IpAddr, u8),
}

/// The attribute a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrKey {
    /// `request.auth.claims[a][b]…`: a claim path, nested; arrays count element by element.
    Claims(Vec<String>),
    /// `request.auth.principal`: `<iss>/<sub>`.
    Principal,
    /// `request.auth.audiences`: `aud`.
    Audiences,
    /// `request.auth.presenter`: `azp`.
    Presenter,
    /// `request.headers[name]`.
    Header(String),
    /// `source.ip`: the client address Portcullis keys on.
    SourceIp,
    /// `source.principal`: the peer certificate's URI SAN.
    SourcePrincipal,
    /// `connection.sni`.
    ConnectionSni,
    /// `client.id`: the authenticated client id.
    ClientId,
    /// `client.plan`: the client's rate-limit plan.
    ClientPlan,
}

/// One `when` condition (or `match.headers` entry): the attribute must exist and match one of
/// `values` (when given), and no element may match one of `not_values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: AttrKey,
    pub values: Vec<Pattern>,
    pub not_values: Vec<Pattern>,
}

/// Parses a `match.hosts` entry (lower-cased).
pub(crate) fn host_match(path: &str, h: &str) -> Result<HostMatch, ConfigError> {
    let h = h.to_ascii_lowercase();
    let valid = |s: &str| {
        let bracketed_v6 = s.starts_with('[') && s.ends_with(']') && s.len() > 2;
        !s.is_empty() && (bracketed_v6 || s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')))
    };
    if let Some(rest) = h.strip_prefix("*.") {
        if !valid(rest) {
            return err(path, format!("{h:?} is not a host or *.domain"));
        }
        return Ok(HostMatch::Suffix(format!(".{rest}")));
    }
    if !valid(&h) || h.contains('*') {
        return err(path, format!("{h:?} is not a host or *.domain (a port is not part of it)"));
    }
    Ok(HostMatch::Exact(h))
}

/// Parses a condition key.
pub(crate) fn attr_key(path: &str, key: &str) -> Result<AttrKey, ConfigError> {
    let simple = match key {
        "request.auth.principal" => Some(AttrKey::Principal),
        "request.auth.audiences" => Some(AttrKey::Audiences),
        "request.auth.presenter" => Some(AttrKey::Presenter),
        "source.ip" => Some(AttrKey::SourceIp),
        "source.principal" => Some(AttrKey::SourcePrincipal),
        "connection.sni" => Some(AttrKey::ConnectionSni),
        "client.id" => Some(AttrKey::ClientId),
        "client.plan" => Some(AttrKey::ClientPlan),
        _ => None,
    };
    if let Some(k) = simple {
        return Ok(k);
    }
    if let Some(rest) = key.strip_prefix("request.headers[") {
        if let Some(name) = rest.strip_suffix(']') {
            let name = name.to_ascii_lowercase();
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return Ok(AttrKey::Header(name));
            }
        }
        return err(path, format!("{key:?}: request.headers[name] needs a header name"));
    }
    if let Some(rest) = key.strip_prefix("request.auth.claims") {
        let mut parts = Vec::new();
        let mut r = rest;
        while let Some(inner) = r.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            let (name, after) = inner.split_at(end);
            if name.is_empty() {
                return err(path, format!("{key:?}: an empty claim name"));
            }
            parts.push(name.to_string());
            r = after.get(1..).unwrap_or("");
        }
        if parts.is_empty() || !r.is_empty() {
            return err(path, format!("{key:?}: write claims as request.auth.claims[name][nested]…"));
        }
        return Ok(AttrKey::Claims(parts));
    }
    err(
        path,
        format!(
            "unknown key {key:?} (known: request.auth.claims[..], request.auth.principal, request.auth.audiences, \
             request.auth.presenter, request.headers[..], source.ip, source.principal, connection.sni, client.id, client.plan)"
        ),
    )
}

/// Parses a value pattern for `key`.
pub(crate) fn pattern(path: &str, key: &AttrKey, v: &str) -> Result<Pattern, ConfigError> {
    if *key == AttrKey::SourceIp {
        let (addr, bits) = match v.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (v, None),
        };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            return err(path, format!("{v:?} is not an IP address or CIDR block"));
        };
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return err(path, format!("{v:?}: the prefix length must be 0..{max}")),
            },
        };
        return Ok(Pattern::Cidr(ip, bits));
    }
    if v.is_empty() {
        return err(path, "must not be empty (use \"*\" for presence)");
    }
    Ok(if v == "*" {
        Pattern::Presence
    } else if let Some(p) = v.strip_suffix('*') {
        Pattern::Prefix(p.to_string())
    } else if let Some(s) = v.strip_prefix('*') {
        Pattern::Suffix(s.to_string())
    } else {
        Pattern::Exact(v.to_string())
    })
}

/// Parses a condition: `key`, `values` and/or `notValues` (at least one non-empty).
pub(crate) fn condition(
    path: &str,
    key: &str,
    values: &Option<Vec<String>>,
    not_values: &Option<Vec<String>>,
    header_only: bool,
) -> Result<Condition, ConfigError> {
    let key = if header_only {
        let name = key.to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return err(format!("{path}.name"), format!("{key:?} is not a header name"));
        }
        AttrKey::Header(name)
    } else {
        attr_key(&format!("{path}.key"), key)?
    };
    let list = |field: &str, l: &Option<Vec<String>>| -> Result<Vec<Pattern>, ConfigError> {
        l.iter().flatten().enumerate().map(|(i, v)| pattern(&format!("{path}.{field}[{i}]"), &key, v)).collect()
    };
    let values_p = list("values", values)?;
    let not_p = list("notValues", not_values)?;
    if values_p.is_empty() && not_p.is_empty() {
        return err(path, "give values or notValues (not empty)");
    }
    Ok(Condition { key, values: values_p, not_values: not_p })
}
