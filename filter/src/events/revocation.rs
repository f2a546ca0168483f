//! The revocation list (SPEC C7): credentials the identity system withdrew before they expire.
//!
//! The list is polled by one worker of the proxy (a lease in shared data) with `If-None-Match`,
//! published in shared data, and parsed by every worker when its version changes; checks are
//! hash lookups (O(1)) made for every credential, cached ones included. Answer shape:
//! `{"revoked": [entry, …]}` with entries `{"jti": "…"}`, `{"sub": "…"}`,
//! `{"sub": "…", "iat_before": <unix s>}` (every token of that subject issued before then: "log
//! out everywhere"), `{"client_id": "…"}`, `{"api_key_sha256": "<hex>"}`, each optionally
//! `"until": <unix s>` (the entry lapses then). A list that does not parse is refused whole:
//! the last good list stays in force.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Why a list was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// Not the documented JSON shape.
    Malformed(String),
    /// More entries than `max_entries`.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Entry {
    /// Lapses at this time (unix s); `None`: until removed.
    until: Option<u64>,
    /// For `sub`: only tokens issued before this time (unix s).
    iat_before: Option<u64>,
}

impl Entry {
    fn live(&self, now_s: u64) -> bool {
        self.until.is_none_or(|u| now_s < u)
    }
}

/// A parsed list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List {
    jti: HashMap<String, Entry>,
    sub: HashMap<String, Vec<Entry>>,
    client: HashMap<String, Entry>,
    api_key: HashMap<[u8; 32], Entry>,
    entries: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    revoked: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    jti: Option<String>,
    sub: Option<String>,
    iat_before: Option<u64>,
    client_id: Option<String>,
    api_key_sha256: Option<String>,
    until: Option<u64>,
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl List {
    /// Parses an answer, refusing it whole when any entry is malformed.
    pub fn parse(body: &[u8], max_entries: usize) -> Result<List, ListError> {
        let raw: RawList = serde_json::from_slice(body).map_err(|e| ListError::Malformed(e.to_string()))?;
        if raw.revoked.len() > max_entries {
            return Err(ListError::TooLarge);
        }
        let mut list = List { entries: raw.revoked.len(), ..List::default() };
        for (i, r) in raw.revoked.into_iter().enumerate() {
            let e = Entry { until: r.until, iat_before: r.iat_before };
            let bad = |why: &str| ListError::Malformed(format!("revoked[{i}]: {why}"));
            match (r.jti, r.sub, r.client_id, r.api_key_sha256) {
                (Some(j), None, None, None) if r.iat_before.is_none() => {
                    list.jti.insert(j, e);
                }
                (None, Some(s), None, None) => list.sub.entry(s).or_default().push(e),
                (None, None, Some(c), None) if r.iat_before.is_none() => {
                    list.client.insert(c, e);
                }
                (None, None, None, Some(h)) if r.iat_before.is_none() => {
                    let h = hex32(&h.to_ascii_lowercase()).ok_or_else(|| bad("api_key_sha256 is not 64 hex digits"))?;
                    list.api_key.insert(h, e);
                }
                _ => {
                    return Err(bad(
                        "give exactly one of jti, sub (with optional iat_before), client_id, api_key_sha256",
                    ))
                }
            }
        }
        Ok(list)
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// True when a token with these claims is revoked at `now_s` (by `jti`, by `sub` — all of
    /// its tokens, or those issued before `iat_before` — or by its client).
    pub fn token_revoked(&self, claims: &Map<String, Value>, now_s: u64) -> bool {
        let s = |k: &str| claims.get(k).and_then(Value::as_str);
        if s("jti").and_then(|j| self.jti.get(j)).is_some_and(|e| e.live(now_s)) {
            return true;
        }
        if let Some(entries) = s("sub").and_then(|sub| self.sub.get(sub)) {
            let iat = claims.get("iat").and_then(Value::as_u64);
            let hit = entries.iter().any(|e| {
                e.live(now_s)
                    && match e.iat_before {
                        None => true,
                        // A token without `iat` cannot prove it is newer: revoked.
                        Some(before) => iat.is_none_or(|iat| iat < before),
                    }
            });
            if hit {
                return true;
            }
        }
        ["client_id", "azp"].iter().any(|k| s(k).is_some_and(|c| self.client_revoked(c, now_s)))
    }

    pub fn client_revoked(&self, client: &str, now_s: u64) -> bool {
        self.client.get(client).is_some_and(|e| e.live(now_s))
    }

    pub fn api_key_revoked(&self, sha256: &[u8; 32], now_s: u64) -> bool {
        self.api_key.get(sha256).is_some_and(|e| e.live(now_s))
    }

    /// True when the list names API keys (so a key's hash is worth computing).
    pub fn has_api_keys(&self) -> bool {
        !self.api_key.is_empty()
    }
}

/// The shared record: the list's answer body and `ETag`, and a version every publication bumps.
pub fn encode_record(version: u64, etag: &str, body: &[u8]) -> Vec<u8> {
    let etag = etag.as_bytes().get(..255).unwrap_or(etag.as_bytes());
    let mut v = Vec::with_capacity(9 + etag.len() + body.len());
    v.extend_from_slice(&version.to_le_bytes());
    v.push(etag.len() as u8);
    v.extend_from_slice(etag);
    v.extend_from_slice(body);
    v
}

/// Decodes the shared record: (version, etag, body).
pub fn decode_record(v: &[u8]) -> Option<(u64, String, &[u8])> {
    let version = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
    let n = usize::from(*v.get(8)?);
    let etag = String::from_utf8(v.get(9..9 + n)?.to_vec()).ok()?;
    Some((version, etag, v.get(9 + n..)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn entries_and_matching() {
        let key = [7u8; 32];
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let body = json!({"revoked": [
            {"jti": "t-1"},
            {"sub": "alice", "iat_before": 1000},
            {"sub": "mallory"},
            {"client_id": "old-app", "until": 2000},
            {"api_key_sha256": hex}
        ]})
        .to_string();
        let l = List::parse(body.as_bytes(), 10).unwrap();
        assert_eq!(l.len(), 5);
        let now = 1500;
        assert!(l.token_revoked(&claims(json!({"jti": "t-1", "sub": "bob"})), now));
        assert!(l.token_revoked(&claims(json!({"sub": "alice", "iat": 999})), now), "issued before");
        assert!(!l.token_revoked(&claims(json!({"sub": "alice", "iat": 1000})), now), "issued at/after");
        assert!(l.token_revoked(&claims(json!({"sub": "alice"})), now), "no iat: cannot prove it is newer");
        assert!(l.token_revoked(&claims(json!({"sub": "mallory", "iat": 5000})), now));
        assert!(l.token_revoked(&claims(json!({"sub": "x", "client_id": "old-app"})), now));
        assert!(!l.token_revoked(&claims(json!({"sub": "x", "client_id": "old-app"})), 2000), "until lapsed");
        assert!(l.token_revoked(&claims(json!({"sub": "x", "azp": "old-app"})), now));
        assert!(!l.token_revoked(&claims(json!({"sub": "bob", "jti": "t-2"})), now));
        assert!(l.api_key_revoked(&key, now) && !l.api_key_revoked(&[8; 32], now));
    }

    #[test]
    fn a_malformed_list_is_refused_whole() {
        for bad in [
            r#"{"revoked": [{"jti": "a", "sub": "b"}]}"#,
            r#"{"revoked": [{"jti": "a", "iat_before": 5}]}"#,
            r#"{"revoked": [{"api_key_sha256": "zz"}]}"#,
            r#"{"revoked": [{"what": 1}]}"#,
            r#"{"revoked": {}}"#,
            r#"[]"#,
            "not json",
        ] {
            assert!(matches!(List::parse(bad.as_bytes(), 10), Err(ListError::Malformed(_))), "{bad}");
        }
        let many = json!({"revoked": (0..11).map(|i| json!({"jti": i.to_string()})).collect::<Vec<_>>()}).to_string();
        assert_eq!(List::parse(many.as_bytes(), 10), Err(ListError::TooLarge));
    }

    #[test]
    fn records_round_trip() {
        let r = encode_record(3, "\"v1\"", b"{\"revoked\":[]}");
        assert_eq!(decode_record(&r), Some((3, "\"v1\"".to_string(), &b"{\"revoked\":[]}"[..])));
        assert_eq!(decode_record(b"short"), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Polling and publication (shared data; one poll per proxy)

use crate::callout::{Callout, Reply};
use crate::store::{lease, Namespace, SharedStore};

/// Where the list is polled from, and the shared-data namespace of its records.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub cluster: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub timeout_ms: u64,
    pub poll_interval_ms: u64,
    pub ns: &'a Namespace,
}

/// The poll to send now, if this worker won the proxy's poll slot (a lease held for one
/// `poll_interval`, so the proxy polls once per interval whichever worker sends it).
pub fn poll_due(store: &dyn SharedStore, src: &Source, now_ms: u64) -> Option<Callout> {
    let key = src.ns.key("revocation.lease");
    if lease::try_take(store, &key, b"", now_ms, src.poll_interval_ms) != lease::Lease::Taken {
        return None;
    }
    let etag = store.get(&src.ns.key("revocation")).0.as_deref().and_then(decode_record).map(|(_, e, _)| e);
    let mut c = Callout::get(src.cluster, src.authority, src.path, "application/json", src.timeout_ms);
    if let Some(e) = etag.filter(|e| !e.is_empty()) {
        c.headers.push(("if-none-match".into(), e));
    }
    Some(c)
}

/// What a poll led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// A new list is published (this many entries).
    Published(usize),
    /// `304 Not Modified`: the list in force stays.
    NotModified,
    /// The endpoint failed or answered garbage: the last good list stays in force.
    Failed(String),
}

/// Handles a poll's answer: a valid list is published for every worker.
pub fn on_answer(store: &dyn SharedStore, src: &Source, reply: &Reply, max_entries: usize) -> Polled {
    match reply.status {
        Some(304) => {
            // The list has not changed; mark it as confirmed so workers that never had one
            // (a record published before a restart is not in shared data) keep going.
            Polled::NotModified
        }
        Some(200) => {
            if reply.body.len() > crate::callout::MAX_REPLY_BYTES {
                return Polled::Failed("answer too large".into());
            }
            let list = match List::parse(&reply.body, max_entries) {
                Ok(l) => l,
                Err(e) => return Polled::Failed(format!("{e:?}")),
            };
            let etag = reply.headers.iter().find(|(k, _)| k == "etag").map(|(_, v)| v.as_str()).unwrap_or("");
            let key = src.ns.key("revocation");
            let vkey = src.ns.key("revocation.version");
            let (old, _) = store.get(&vkey);
            let version = old.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map_or(0, u64::from_le_bytes) + 1;
            let (_, cas) = store.get(&key);
            if store.set(&key, &encode_record(version, etag, &reply.body), cas).is_err() {
                return Polled::Failed("lost a race publishing the list".into());
            }
            let (_, vcas) = store.get(&vkey);
            let _ = store.set(&vkey, &version.to_le_bytes(), vcas);
            Polled::Published(list.len())
        }
        Some(s) => Polled::Failed(format!("status {s}")),
        None => Polled::Failed("no answer (timeout or connection failure)".into()),
    }
}

/// A newer published list than `have_version`, parsed: `(version, list)`.
pub fn sync(store: &dyn SharedStore, ns: &Namespace, have_version: u64, max_entries: usize) -> Option<(u64, List)> {
    let (v, _) = store.get(&ns.key("revocation.version"));
    let version = v.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_le_bytes)?;
    if version == have_version {
        return None;
    }
    let (record, _) = store.get(&ns.key("revocation"));
    let record = record?;
    let (rv, _, body) = decode_record(&record)?;
    let list = List::parse(body, max_entries).ok()?;
    Some((rv, list))
}

#[cfg(test)]
mod poll_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::MemStore;

    #[test]
    fn one_poll_per_interval_etag_and_publication() {
        let s = MemStore::default();
        let ns = Namespace::of("revocation", &["idp", "/revocations"]);
        let src = Source {
            cluster: "idp",
            authority: "idp",
            path: "/revocations",
            timeout_ms: 1000,
            poll_interval_ms: 10_000,
            ns: &ns,
        };
        let c = poll_due(&s, &src, 0).unwrap();
        assert!(c.headers.iter().all(|(k, _)| k != "if-none-match"), "no ETag yet");
        assert!(poll_due(&s, &src, 5_000).is_none(), "one poll per interval across workers");
        let body = br#"{"revoked":[{"jti":"t"}]}"#.to_vec();
        let ok = Reply { status: Some(200), headers: vec![("etag".into(), "\"v1\"".into())], body };
        assert_eq!(on_answer(&s, &src, &ok, 100), Polled::Published(1));
        let (v, list) = sync(&s, &ns, 0, 100).unwrap();
        assert_eq!((v, list.len()), (1, 1));
        assert!(sync(&s, &ns, 1, 100).is_none(), "nothing new");
        let c = poll_due(&s, &src, 10_000).unwrap();
        assert!(c.headers.iter().any(|(k, v)| k == "if-none-match" && v == "\"v1\""));
        let not_modified = Reply { status: Some(304), headers: vec![], body: vec![] };
        assert_eq!(on_answer(&s, &src, &not_modified, 100), Polled::NotModified);
        let garbage = Reply { status: Some(200), headers: vec![], body: b"<html>".to_vec() };
        assert!(matches!(on_answer(&s, &src, &garbage, 100), Polled::Failed(_)));
        assert_eq!(sync(&s, &ns, 0, 100).unwrap().0, 1, "the last good list stays");
        assert!(matches!(on_answer(&s, &src, &Reply::default(), 100), Polled::Failed(_)));
    }
}
