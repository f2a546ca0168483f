//! The request as the core sees it, and credential extraction from headers, query parameters
//! and cookies.
//!
//! Header names are lower-case (HTTP/2 and Envoy's header map already are). Values that are
//! not valid UTF-8 reach the core replaced by `None` in [`RequestView::header`] lookups of
//! credentials, so they are refused as malformed rather than misread.

use crate::config::Source;

/// A read-only view of the request headers Portcullis needs.
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    pub method: String,
    /// `:path` including the query string.
    pub path: String,
    /// All headers, names lower-case, in arrival order; `None` for non-UTF-8 values.
    pub headers: Vec<(String, Option<String>)>,
    /// Downstream peer address (`source.address`), when known.
    pub source: Option<String>,
}

/// A credential found in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: String,
    pub source: Source,
}

/// Why extraction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractError {
    /// More than one credential (several sources, or a repeated header/parameter).
    Multiple,
    /// The header is present but malformed (wrong prefix, empty, not UTF-8).
    Malformed,
}

impl RequestView {
    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        match self.path.find('?') {
            Some(i) => &self.path[..i],
            None => &self.path,
        }
    }

    /// The query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.path.find('?').map(|i| &self.path[i + 1..])
    }

    /// Values of every header with this (lower-case) name.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        self.headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_deref())
    }

    /// Extracts exactly one credential from `sources`: `Ok(None)` when there is none.
    pub fn extract(&self, sources: &[Source]) -> Result<Option<Found>, ExtractError> {
        let mut found: Option<Found> = None;
        let mut put = |value: String, source: &Source| -> Result<(), ExtractError> {
            match &found {
                // The same value offered twice through differently named sources is still
                // two credentials: refuse, as RFC 6750 §2 requires for multiple methods.
                Some(_) => Err(ExtractError::Multiple),
                None => {
                    found = Some(Found { value, source: source.clone() });
                    Ok(())
                }
            }
        };
        for source in sources {
            match source {
                Source::Header { name, prefix } => {
                    for v in self.header_values(name) {
                        let v = v.ok_or(ExtractError::Malformed)?;
                        let token = if prefix.is_empty() {
                            v.trim()
                        } else {
                            match strip_prefix_ci(v, prefix) {
                                Some(rest) => rest.trim(),
                                // A header of another scheme (e.g. `Basic`) is not ours.
                                None => continue,
                            }
                        };
                        if token.is_empty() || token.contains([' ', ',']) {
                            return Err(ExtractError::Malformed);
                        }
                        put(token.to_string(), source)?;
                    }
                }
                Source::Param(name) => {
                    if let Some(q) = self.query() {
                        for (k, v) in q.split('&').filter_map(|kv| kv.split_once('=').or(Some((kv, "")))) {
                            if k == name {
                                let v = percent_decode(v).ok_or(ExtractError::Malformed)?;
                                if v.is_empty() {
                                    return Err(ExtractError::Malformed);
                                }
                                put(v, source)?;
                            }
                        }
                    }
                }
                Source::Cookie(name) => {
                    for v in self.header_values("cookie") {
                        let Some(v) = v else { continue };
                        for pair in v.split(';') {
                            if let Some((k, val)) = pair.trim().split_once('=') {
                                if k == name {
                                    let val = val.trim_matches('"');
                                    if val.is_empty() {
                                        return Err(ExtractError::Malformed);
                                    }
                                    put(val.to_string(), source)?;
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(found)
    }
}

/// Case-insensitive prefix strip (auth schemes are case-insensitive, RFC 9110 §11.1).
fn strip_prefix_ci<'a>(v: &'a str, prefix: &str) -> Option<&'a str> {
    let head = v.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        Some(&v[prefix.len()..])
    } else {
        None
    }
}

/// Decodes `%XX` and `+` in a query component; `None` for bad escapes or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Returns `path` with every occurrence of query parameter `name` removed.
pub fn remove_query_param(path: &str, name: &str) -> String {
    let Some(qi) = path.find('?') else { return path.to_string() };
    let (base, query) = (&path[..qi], &path[qi + 1..]);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let k = kv.split_once('=').map_or(*kv, |(k, _)| k);
            k != name && !kv.is_empty()
        })
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// Returns the `cookie` header value with cookie `name` removed (`None` if nothing is left).
pub fn remove_cookie(header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.split_once('=').is_none_or(|(k, _)| k != name))
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestView {
        RequestView {
            method: "GET".into(),
            path: path.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect(),
            source: None,
        }
    }

    fn bearer() -> Vec<Source> {
        vec![
            Source::Header { name: "authorization".into(), prefix: "Bearer ".into() },
            Source::Param("access_token".into()),
            Source::Cookie("session".into()),
        ]
    }

    #[test]
    fn extraction_table() {
        let s = bearer();
        let ok = |r: RequestView| r.extract(&s).unwrap().map(|f| f.value);
        assert_eq!(ok(req("/", &[("authorization", "Bearer abc")])), Some("abc".into()));
        assert_eq!(ok(req("/", &[("authorization", "bearer abc")])), Some("abc".into()));
        assert_eq!(ok(req("/", &[("authorization", "Basic Zm9vOmJhcg==")])), None);
        assert_eq!(ok(req("/?access_token=a%2Eb", &[])), Some("a.b".into()));
        assert_eq!(ok(req("/", &[("cookie", "x=1; session=tok; y=2")])), Some("tok".into()));
        assert_eq!(ok(req("/", &[])), None);
        let e = |r: RequestView| r.extract(&s).unwrap_err();
        assert_eq!(e(req("/?access_token=a", &[("authorization", "Bearer b")])), ExtractError::Multiple);
        assert_eq!(
            e(req("/", &[("authorization", "Bearer a"), ("authorization", "Bearer b")])),
            ExtractError::Multiple
        );
        assert_eq!(e(req("/?access_token=a&access_token=a", &[])), ExtractError::Multiple);
        assert_eq!(e(req("/", &[("authorization", "Bearer ")])), ExtractError::Malformed);
        assert_eq!(e(req("/", &[("authorization", "Bearer a b")])), ExtractError::Malformed);
        assert_eq!(e(req("/?access_token=%zz", &[])), ExtractError::Malformed);
        let mut bad = req("/", &[]);
        bad.headers.push(("authorization".into(), None));
        assert_eq!(e(bad), ExtractError::Malformed);
    }

    #[test]
    fn removing_params_and_cookies() {
        assert_eq!(remove_query_param("/a?api_key=1&x=2", "api_key"), "/a?x=2");
        assert_eq!(remove_query_param("/a?api_key=1", "api_key"), "/a");
        assert_eq!(remove_query_param("/a?x=1&api_key=2&api_key=3&y", "api_key"), "/a?x=1&y");
        assert_eq!(remove_query_param("/a", "api_key"), "/a");
        assert_eq!(remove_cookie("a=1; session=x; b=2", "session").as_deref(), Some("a=1; b=2"));
        assert_eq!(remove_cookie("session=x", "session"), None);
    }
}
