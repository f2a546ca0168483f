//! The request as the core sees it — the ONE canonical view that route matching, the token
//! endpoint, rate limits and events all use — and credential extraction from headers, query
//! parameters and cookies.
//!
//! ## Canonical request (RFC 3986 §6.2.2)
//!
//! [`canonicalize`] computes the path the policy matches, once:
//! * percent-encoded unreserved characters are decoded (`%61` → `a`) and the hex digits of
//!   every other escape are upper-cased (`%2a` → `%2A`);
//! * refused outright (HTTP 400): a path that is not origin-form (`/…`; `*` only for `OPTIONS`),
//!   an invalid escape (`%zz`, `%+A`), an encoded `/`, `\` or NUL, raw control characters,
//!   spaces, backslashes or non-ASCII bytes, a fragment, a dot segment (`.` or `..`, raw or
//!   encoded: §5.2.4 removal would make the policy and a non-normalising upstream see two
//!   different paths), an empty segment (`//`, which some servers merge), and a path parameter
//!   (`;x`, which Java servers strip before routing);
//! * a method that is not an upper-case token (`post`) is refused.
//!
//! The invariant: **the path the policy matched is the path the upstream receives**. When the
//! canonical path differs from the request's (only by decoded unreserved characters or hex
//! case), the filter rewrites `:path` ([`RequestView::rewritten`]); anything whose meaning could
//! differ between the policy and the upstream is refused instead.
//!
//! Header names are lower-case (HTTP/2 and Envoy's header map already are). Values that are
//! not valid UTF-8 reach the core replaced by `None` in [`RequestView::header`] lookups of
//! credentials, so they are refused as malformed rather than misread.

use crate::config::Source;

/// A read-only view of the request headers Portcullis needs.
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    pub method: String,
    /// `:path` including the query string; after [`RequestView::canonicalize`], the canonical
    /// path followed by the request's query string.
    pub path: String,
    /// The canonical path without the query (set by [`RequestView::canonicalize`]).
    pub route_path: String,
    /// True when `path` differs from the request's `:path`: the upstream must get `path`.
    pub rewritten: bool,
    /// `:authority` lower-cased, without port (empty when absent).
    pub authority: String,
    /// All headers, names lower-case, in arrival order; `None` for non-UTF-8 values.
    pub headers: Headers,
    /// Downstream peer address (`source.address`), read from the host only when a decision
    /// needs it.
    pub source: PeerAddress,
}

/// The downstream peer address, read at most once and only when a decision asks for it: an
/// authenticated client's rate limit, a JWT or an API key never need it, and reading it is a
/// host property lookup that costs more than the rest of a cached JWT check.
#[derive(Clone, Default)]
pub struct PeerAddress {
    value: std::cell::OnceCell<Option<String>>,
    load: Option<fn() -> Option<String>>,
}

impl PeerAddress {
    /// An address known now (tests, or a host that hands it over up front).
    pub fn known(address: Option<String>) -> PeerAddress {
        PeerAddress { value: std::cell::OnceCell::from(address), load: None }
    }

    /// An address `load` reads on first use (on the request's own context: every flow step
    /// runs with the request as the host's current context).
    pub fn lazy(load: fn() -> Option<String>) -> PeerAddress {
        PeerAddress { value: std::cell::OnceCell::new(), load: Some(load) }
    }

    /// The address, when known (loads it on first use).
    pub fn get(&self) -> Option<&str> {
        self.value.get_or_init(|| self.load.and_then(|f| f())).as_deref()
    }
}

impl std::fmt::Debug for PeerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.value.get() {
            Some(v) => v.fmt(f),
            None if self.load.is_some() => f.write_str("<not read>"),
            None => f.write_str("None"),
        }
    }
}

/// The request's headers in one buffer: names and values are spans of a single string, so
/// reading a request's headers costs one allocation, not two per header.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    text: String,
    /// (name start, name end, value start, value end); a value end of `u32::MAX` marks a
    /// value that is not UTF-8.
    spans: Vec<(u32, u32, u32, u32)>,
}

impl Headers {
    /// Room for `pairs` headers of `bytes` bytes in all.
    pub fn with_capacity(pairs: usize, bytes: usize) -> Headers {
        Headers { text: String::with_capacity(bytes), spans: Vec::with_capacity(pairs) }
    }

    /// Appends a header (the name as given: callers lower-case it).
    pub fn push(&mut self, name: &str, value: Option<&str>) {
        let pos = |s: &String| u32::try_from(s.len()).unwrap_or(u32::MAX);
        let ns = pos(&self.text);
        self.text.push_str(name);
        let ne = pos(&self.text);
        let ve = match value {
            Some(v) => {
                self.text.push_str(v);
                pos(&self.text)
            }
            None => u32::MAX,
        };
        self.spans.push((ns, ne, ne, ve));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Every header as (name, value), in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        self.spans.iter().map(|&(ns, ne, vs, ve)| {
            let name = self.text.get(ns as usize..ne as usize).unwrap_or_default();
            let value = (ve != u32::MAX).then(|| self.text.get(vs as usize..ve as usize).unwrap_or_default());
            (name, value)
        })
    }
}

impl Headers {
    /// Reads a header map in the host ABI's serialisation (a u32 count, each pair's name and
    /// value lengths as u32, then each name and value followed by a NUL; little endian),
    /// lower-casing names and marking non-UTF-8 values. `None` when the bytes do not hold such
    /// a map.
    pub fn from_wire(buf: &[u8]) -> Option<Headers> {
        let word = |at: usize| -> Option<usize> {
            let b: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_le_bytes(b) as usize)
        };
        let count = word(0)?;
        let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
        if data > buf.len() {
            return None;
        }
        let mut h = Headers::with_capacity(count, buf.len().saturating_sub(data));
        for i in 0..count {
            let (nl, vl) = (word(4 + i * 8)?, word(8 + i * 8)?);
            let name = buf.get(data..data.checked_add(nl)?)?;
            let vs = data + nl + 1;
            let value = buf.get(vs..vs.checked_add(vl)?)?;
            data = vs + vl + 1;
            let name = std::str::from_utf8(name).ok()?;
            let value = std::str::from_utf8(value).ok();
            // Envoy's names are already lower case: copy only when one is not.
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                h.push(&name.to_ascii_lowercase(), value);
            } else {
                h.push(name, value);
            }
        }
        Some(h)
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, Option<V>)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, Option<V>)>>(iter: I) -> Headers {
        let mut h = Headers::default();
        for (n, v) in iter {
            h.push(n.as_ref(), v.as_ref().map(AsRef::as_ref));
        }
        h
    }
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

/// The downstream connection, as the host knows it: asked only when a check needs it (each
/// answer is a host call). Envoy's attributes: `connection.mtls`, `connection.uri_san_peer_certificate`,
/// `connection.subject_peer_certificate`, `connection.sha256_peer_certificate_digest`,
/// `connection.requested_server_name`.
pub trait Peer {
    /// A client certificate was presented (and, when the listener has a validation context,
    /// validated: operators must configure one for `mtls` to mean anything).
    fn mtls(&self) -> bool;
    /// The peer certificate's first URI SAN (a SPIFFE id in a mesh).
    fn uri_san(&self) -> Option<String>;
    /// The peer certificate's subject.
    fn subject(&self) -> Option<String>;
    /// SHA-256 of the peer certificate (DER).
    fn cert_sha256(&self) -> Option<[u8; 32]>;
    /// The TLS SNI the client sent.
    fn sni(&self) -> Option<String>;
}

/// A plain-text connection (no TLS, no certificate): hosts without connection attributes.
pub struct NoPeer;

impl Peer for NoPeer {
    fn mtls(&self) -> bool {
        false
    }
    fn uri_san(&self) -> Option<String> {
        None
    }
    fn subject(&self) -> Option<String> {
        None
    }
    fn cert_sha256(&self) -> Option<[u8; 32]> {
        None
    }
    fn sni(&self) -> Option<String> {
        None
    }
}

/// Why a request's method or path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The method is not an upper-case token (`post`, `GE T`).
    Method,
    /// Not origin-form: empty, not starting with `/` (or `*` for `OPTIONS`).
    NotOriginForm,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F`, `%5C` or `%00`: an encoded separator or NUL.
    EncodedSeparator,
    /// A raw byte that has no place in a path: control, space, `\`, `"`, `<`, `>`, `^`, `` ` ``,
    /// `{`, `|`, `}`, `#`, DEL or non-ASCII.
    BadCharacter,
    /// A `.` or `..` segment, raw or encoded.
    DotSegment,
    /// An empty segment (`//`).
    EmptySegment,
    /// A path parameter (`;` in a segment).
    PathParameter,
    /// Longer than [`MAX_PATH_BYTES`].
    TooLong,
}

/// The longest `:path` accepted (Envoy's default `max_request_headers_kb` is 60).
pub const MAX_PATH_BYTES: usize = 16 * 1024;

/// A canonical path (no query) and whether it differs from the request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    pub path: String,
    pub changed: bool,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True for an HTTP method in canonical form: a token (RFC 9110 §5.6.2) without lower case.
pub fn is_canonical_method(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 32
        && m.bytes().all(|b| {
            b.is_ascii_uppercase()
                || b.is_ascii_digit()
                || matches!(
                    b,
                    b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'|' | b'~'
                )
        })
}

/// Canonicalises a method and the path part of `:path` (the query, if any, is left to the
/// caller: split it off first). See the module documentation for the rules.
pub fn canonicalize(method: &str, raw_path: &str) -> Result<Canonical, PathError> {
    if !is_canonical_method(method) {
        return Err(PathError::Method);
    }
    if raw_path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if raw_path == "*" && method == "OPTIONS" {
        return Ok(Canonical { path: "*".into(), changed: false });
    }
    let raw = raw_path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    // Start of the current segment in `out` (just after its '/').
    let mut seg_start = 0usize;
    let mut seg_had_escape_dot = false;
    let mut i = 0usize;
    let end_segment = |out: &[u8], seg_start: usize| -> Result<(), PathError> {
        match out.get(seg_start..) {
            Some(b".") | Some(b"..") => Err(PathError::DotSegment),
            _ => Ok(()),
        }
    };
    while let Some(&b) = raw.get(i) {
        match b {
            b'/' => {
                if i > 0 {
                    end_segment(&out, seg_start)?;
                    if out.len() == seg_start {
                        return Err(PathError::EmptySegment);
                    }
                }
                out.push(b'/');
                seg_start = out.len();
                seg_had_escape_dot = false;
                i += 1;
            }
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex).ok_or(PathError::BadEscape)?;
                let lo = raw.get(i + 2).copied().and_then(hex).ok_or(PathError::BadEscape)?;
                let v = (hi << 4) | lo;
                match v {
                    b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                    v if is_unreserved(v) => {
                        seg_had_escape_dot |= v == b'.';
                        out.push(v);
                    }
                    _ => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push(b'%');
                        out.push(HEX[usize::from(hi)]);
                        out.push(HEX[usize::from(lo)]);
                    }
                }
                i += 3;
            }
            b';' => return Err(PathError::PathParameter),
            b if is_unreserved(b)
                || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@') =>
            {
                out.push(b);
                i += 1;
            }
            _ => return Err(PathError::BadCharacter),
        }
    }
    let _ = seg_had_escape_dot;
    end_segment(&out, seg_start)?;
    // Only ASCII was pushed.
    let path = String::from_utf8(out).map_err(|_| PathError::BadCharacter)?;
    let changed = path != raw_path;
    Ok(Canonical { path, changed })
}

impl RequestView {
    /// Computes the canonical view in place: `route_path`, `path` (canonical path + query),
    /// `rewritten`, and `authority`. Call once, before anything looks at the request.
    pub fn canonicalize(&mut self) -> Result<(), PathError> {
        let (raw_path, query) = match self.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.path.as_str(), None),
        };
        if query.is_some_and(|q| q.bytes().any(|b| b <= 0x20 || b >= 0x7f || b == b'#')) {
            return Err(PathError::BadCharacter);
        }
        let c = canonicalize(&self.method, raw_path)?;
        if c.changed {
            self.path = match query {
                Some(q) => format!("{}?{q}", c.path),
                None => c.path.clone(),
            };
            self.rewritten = true;
        }
        self.route_path = c.path;
        let authority = self.header_values(":authority").next().flatten().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            // `[v6]:port` or `host:port`; a bare IPv6 literal keeps its brackets.
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
            _ => authority,
        };
        self.authority = host.to_ascii_lowercase();
        Ok(())
    }

    /// The canonical path without its query string.
    pub fn path_only(&self) -> &str {
        &self.route_path
    }

    /// The query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.path.find('?').map(|i| &self.path[i + 1..])
    }

    /// Values of every header with this (lower-case) name.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        self.headers.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
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
                        if token.is_empty() || has_space_or_comma(token.as_bytes()) {
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

/// True when `b` holds a space or a comma: eight bytes at a time (a credential is scanned on
/// every request, and tokens run to kilobytes).
fn has_space_or_comma(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_le_bytes(w);
        if has_zero(v ^ (ONES * u64::from(b' '))) || has_zero(v ^ (ONES * u64::from(b','))) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&x| x == b' ' || x == b',')
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

/// Decodes `%XX` and `+` in a query component (the core's one strict decoder); `None` for bad
/// escapes or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    crate::wire::form::decode_component(s.as_bytes()).ok()
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

    fn wire(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend((n.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend(*n);
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn header_maps_are_read_from_the_wire_into_one_buffer() {
        let buf = wire(&[(b":method", b"GET"), (b"X-Api-Key", b"k1"), (b"x-bin", b"\xff\xfe"), (b"empty", b"")]);
        let h = Headers::from_wire(&buf).unwrap();
        let got: Vec<(&str, Option<&str>)> = h.iter().collect();
        assert_eq!(
            got,
            vec![(":method", Some("GET")), ("x-api-key", Some("k1")), ("x-bin", None), ("empty", Some(""))]
        );
        assert_eq!(Headers::from_wire(&wire(&[])).unwrap().len(), 0);
        // Truncated or lying maps are refused, never read past the end.
        for cut in 1..buf.len() {
            let _ = Headers::from_wire(&buf[..cut]);
        }
        assert!(Headers::from_wire(&buf[..buf.len() - 3]).is_none());
        assert!(Headers::from_wire(&[0xff, 0xff, 0xff, 0xff]).is_none(), "a huge count");
        assert!(Headers::from_wire(&[]).is_none());
    }

    #[test]
    fn the_word_scan_finds_a_space_or_comma_anywhere() {
        for len in 0..40 {
            let clean = "a".repeat(len);
            assert!(!has_space_or_comma(clean.as_bytes()), "{len}");
            for at in 0..len {
                for bad in [b' ', b','] {
                    let mut v = clean.clone().into_bytes();
                    v[at] = bad;
                    assert!(has_space_or_comma(&v), "{len} {at} {bad}");
                }
            }
        }
        // Bytes next to ' ' (0x20) and ',' (0x2c), and high bytes, are not matches.
        let near: Vec<u8> = [0x1f, 0x21, 0x2b, 0x2d, 0xa0, 0xac, 0x80, 0xff, 0x00].repeat(3);
        assert!(!has_space_or_comma(&near));
    }

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestView {
        RequestView {
            method: "GET".into(),
            path: path.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect(),
            ..RequestView::default()
        }
    }

    #[test]
    fn canonical_paths() {
        let ok = |p: &str| canonicalize("GET", p).map(|c| (c.path, c.changed));
        assert_eq!(ok("/"), Ok(("/".into(), false)));
        assert_eq!(ok("/admin/users"), Ok(("/admin/users".into(), false)));
        assert_eq!(ok("/admin/"), Ok(("/admin/".into(), false)));
        assert_eq!(ok("/%61dmin"), Ok(("/admin".into(), true)));
        assert_eq!(ok("/a%7eb"), Ok(("/a~b".into(), true)));
        assert_eq!(ok("/a%2ab"), Ok(("/a%2Ab".into(), true)));
        assert_eq!(ok("/a%2Ab"), Ok(("/a%2Ab".into(), false)));
        assert_eq!(ok("/a%20b"), Ok(("/a%20b".into(), false)));
        assert_eq!(ok("/..a/b.."), Ok(("/..a/b..".into(), false)));
        assert_eq!(ok("/a:b@c!$&'()*+,="), Ok(("/a:b@c!$&'()*+,=".into(), false)));
        let e = |m: &str, p: &str| canonicalize(m, p).unwrap_err();
        assert_eq!(e("GET", "/public/../orders"), PathError::DotSegment);
        assert_eq!(e("GET", "/public/%2e%2e/admin"), PathError::DotSegment);
        assert_eq!(e("GET", "/./admin"), PathError::DotSegment);
        assert_eq!(e("GET", "/admin/."), PathError::DotSegment);
        assert_eq!(e("GET", "/admin/%2E"), PathError::DotSegment);
        assert_eq!(e("GET", "//admin"), PathError::EmptySegment);
        assert_eq!(e("GET", "/admin//x"), PathError::EmptySegment);
        assert_eq!(e("GET", "/admin;x"), PathError::PathParameter);
        assert_eq!(e("GET", "/admin%2Fusers"), PathError::EncodedSeparator);
        assert_eq!(e("GET", "/admin%2fusers"), PathError::EncodedSeparator);
        assert_eq!(e("GET", "/admin%5Cusers"), PathError::EncodedSeparator);
        assert_eq!(e("GET", "/admin%00"), PathError::EncodedSeparator);
        assert_eq!(e("GET", "/admin\\users"), PathError::BadCharacter);
        assert_eq!(e("GET", "/a b"), PathError::BadCharacter);
        assert_eq!(e("GET", "/a#b"), PathError::BadCharacter);
        assert_eq!(e("GET", "/caf\u{e9}"), PathError::BadCharacter);
        assert_eq!(e("GET", "/%zz"), PathError::BadEscape);
        assert_eq!(e("GET", "/%+A"), PathError::BadEscape);
        assert_eq!(e("GET", "/%4"), PathError::BadEscape);
        assert_eq!(e("GET", "admin"), PathError::NotOriginForm);
        assert_eq!(e("GET", ""), PathError::NotOriginForm);
        assert_eq!(e("GET", "*"), PathError::NotOriginForm);
        assert_eq!(canonicalize("OPTIONS", "*").map(|c| c.path), Ok("*".into()));
        assert_eq!(e("post", "/"), PathError::Method);
        assert_eq!(e("Get", "/"), PathError::Method);
        assert_eq!(e("", "/"), PathError::Method);
        assert_eq!(e("GE T", "/"), PathError::Method);
        assert!(canonicalize("M-SEARCH", "/").is_ok());
    }

    #[test]
    fn view_keeps_the_query_and_lowercases_the_authority() {
        let mut r = req("/%61pi/x?a=%41&b", &[(":authority", "API.Example.com:8443")]);
        r.canonicalize().unwrap();
        assert_eq!((r.route_path.as_str(), r.path.as_str(), r.rewritten), ("/api/x", "/api/x?a=%41&b", true));
        assert_eq!(r.authority, "api.example.com");
        let mut r = req("/api?x", &[(":authority", "[::1]")]);
        r.canonicalize().unwrap();
        assert_eq!((r.path.as_str(), r.rewritten, r.authority.as_str()), ("/api?x", false, "[::1]"));
        assert_eq!(req("/a?x y", &[]).canonicalize(), Err(PathError::BadCharacter));
    }

    proptest::proptest! {
        /// Canonicalisation is idempotent, and its output holds no dot or empty segment.
        #[test]
        fn canonical_is_a_fixed_point(p in "/[a-zA-Z0-9%./;~_-]{0,40}") {
            if let Ok(c) = canonicalize("GET", &p) {
                let again = canonicalize("GET", &c.path).unwrap();
                proptest::prop_assert_eq!(&again.path, &c.path);
                proptest::prop_assert!(!again.changed);
                proptest::prop_assert!(!c.path.contains("//") && !c.path.split('/').any(|s| s == "." || s == ".."));
            }
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
        bad.headers.push("authorization", None);
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
