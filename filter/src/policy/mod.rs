//! Per-route access policy (SPEC C6): which route applies, and whether the scopes a caller
//! holds satisfy it. First matching route wins; a request no route matches gets the
//! top-level default (`requires`, no scopes).
//!
//! Paths are compared in the canonical form of [`crate::request::canonicalize`] (requests that
//! have none are refused before routing), without the query string, case-sensitively unless
//! the route sets `match.ignore_case`. A route may also match on `match.hosts` (the canonical
//! `:authority`, lower case, no port; `*.example.com` matches subdomains only) and on
//! `match.headers` (the condition language of [`when`]). `HEAD` matches a route that allows `GET` (RFC 9110 §9.3.2:
//! a server answers HEAD as it would GET). A prefix matches on a segment
//! boundary (`/admin` matches `/admin` and `/admin/x`, not `/administrator`), so a prefix
//! meant to protect a subtree cannot be sidestepped by a lookalike sibling; a prefix ending
//! in `/` matches anything below it.

pub mod when;

use crate::config::{Config, PathMatch, Requires, Route};
use crate::request::RequestView;

/// The route a request falls under.
#[derive(Debug, Clone, Copy)]
pub enum Matched<'a> {
    Route(usize, &'a Route),
    Default(&'a Requires),
}

impl<'a> Matched<'a> {
    pub fn requires(&self) -> &'a Requires {
        match self {
            Matched::Route(_, r) => &r.requires,
            Matched::Default(req) => req,
        }
    }

    pub fn scopes(&self) -> &'a [String] {
        match self {
            Matched::Route(_, r) => &r.scopes,
            Matched::Default(_) => &[],
        }
    }
}

fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) => {
            path.starts_with(p.as_str())
                && (p.ends_with('/') || path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
        }
    }
}

/// Finds the route for a method and path (path without query).
pub fn route<'a>(cfg: &'a Config, req: &RequestView) -> Matched<'a> {
    let (method, path) = (req.method.as_str(), req.path_only());
    let mut lower: Option<String> = None;
    for (i, r) in cfg.routes.iter().enumerate() {
        let candidate =
            if r.ignore_case { lower.get_or_insert_with(|| path.to_ascii_lowercase()).as_str() } else { path };
        if !path_matches(&r.path, candidate) {
            continue;
        }
        if let Some(ms) = &r.methods {
            if !ms.iter().any(|m| m == method || (method == "HEAD" && m == "GET")) {
                continue;
            }
        }
        if !when::host_matches(&r.hosts, &req.authority) {
            continue;
        }
        if !r.headers.iter().all(|c| {
            let crate::config::route::AttrKey::Header(name) = &c.key else { return false };
            let values: Vec<String> = req.header_values(name).map(|v| v.unwrap_or_default().to_string()).collect();
            when::holds(c, (!values.is_empty()).then_some(values.as_slice()))
        }) {
            continue;
        }
        return Matched::Route(i, r);
    }
    Matched::Default(&cfg.default_requires)
}

/// The required scopes the caller lacks (empty when satisfied).
pub fn missing_scopes<'a>(required: &'a [String], held: &[String]) -> Vec<&'a str> {
    required.iter().filter(|s| !held.iter().any(|h| h == *s)).map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_on_segment_boundary() {
        let p = PathMatch::Prefix("/admin".into());
        assert!(path_matches(&p, "/admin"));
        assert!(path_matches(&p, "/admin/users"));
        assert!(!path_matches(&p, "/administrator"));
        assert!(!path_matches(&p, "/"));
        let root = PathMatch::Prefix("/".into());
        assert!(path_matches(&root, "/anything"));
        let slash = PathMatch::Prefix("/api/".into());
        assert!(path_matches(&slash, "/api/x") && !path_matches(&slash, "/api"));
        let exact = PathMatch::Exact("/health".into());
        assert!(path_matches(&exact, "/health") && !path_matches(&exact, "/health/x"));
    }

    #[test]
    fn scopes() {
        let req = vec!["a".to_string(), "b".to_string()];
        assert!(missing_scopes(&req, &["b".into(), "a".into(), "c".into()]).is_empty());
        assert_eq!(missing_scopes(&req, &["a".into()]), vec!["b"]);
    }
}
