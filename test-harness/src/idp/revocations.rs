//! `GET /revocations`: a revocation list as Portcullis polls it, `{"revoked": [entry, …]}`.
//!
//! The answer carries `ETag: "v<n>"`, where `n` counts the list's changes (it starts at 1
//! with an empty list); a request whose `If-None-Match` names the current tag gets `304 Not
//! Modified` without a body. Every poll is logged (arrival time, the `If-None-Match` it sent,
//! the status answered) before any fault applies, so tests can count polls and see the tag.

use std::time::Instant;

use serde_json::{json, Value};

use super::{Shared, TestIdp};
use crate::http::{Reply, ServerRequest, ServerResponse};

/// One request to `/revocations`.
#[derive(Debug, Clone)]
pub struct RevocationPoll {
    /// When it arrived.
    pub at: Instant,
    /// The `If-None-Match` it carried.
    pub if_none_match: Option<String>,
}

/// The list, its version and the poll log.
pub(super) struct Revocations {
    entries: Vec<Value>,
    version: u64,
    polls: Vec<RevocationPoll>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations { entries: Vec::new(), version: 1, polls: Vec::new() }
    }
}

impl Revocations {
    /// Logs a poll.
    pub(super) fn record(&mut self, request: &ServerRequest) {
        let if_none_match = request.header("if-none-match").map(str::to_string);
        self.polls.push(RevocationPoll { at: Instant::now(), if_none_match });
    }

    fn etag(&self) -> String {
        format!("\"v{}\"", self.version)
    }
}

/// The answer of `GET /revocations`: the list with its `ETag`, or `304` when the client
/// already has it.
pub(super) fn answer(shared: &Shared, request: &ServerRequest) -> Reply {
    let state = shared.lock();
    let list = &state.revocations;
    let etag = list.etag();
    if request.header("if-none-match").is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return Reply::Respond(ServerResponse::empty(304).with_header("etag", &etag));
    }
    Reply::Respond(ServerResponse::json(200, &json!({"revoked": list.entries})).with_header("etag", &etag))
}

impl TestIdp {
    /// Adds an entry (e.g. `{"jti": "…"}`) to the revocation list; its `ETag` changes.
    pub fn revoke_entry(&self, entry: Value) {
        let mut state = self.shared.lock();
        state.revocations.entries.push(entry);
        state.revocations.version += 1;
    }

    /// The revocation list's current `ETag` (`"v<n>"`, quotes included).
    pub fn revocations_etag(&self) -> String {
        self.shared.lock().revocations.etag()
    }

    /// Every request to `/revocations` so far, oldest first.
    pub fn revocation_polls(&self) -> Vec<RevocationPoll> {
        self.shared.lock().revocations.polls.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;
    use crate::idp::Endpoint;

    #[test]
    fn etag_and_not_modified() {
        let idp = TestIdp::start();
        let url = idp.url("/revocations");
        let r = http::get(&url, &[]).unwrap();
        assert_eq!((r.status, r.json()), (200, json!({"revoked": []})));
        let tag = r.header("etag").unwrap().to_string();
        assert_eq!(tag, idp.revocations_etag());
        let r = http::get(&url, &[("if-none-match", &tag)]).unwrap();
        assert_eq!((r.status, r.body.len(), r.header("etag")), (304, 0, Some(tag.as_str())));
        idp.revoke_entry(json!({"jti": "t-1"}));
        let r = http::get(&url, &[("if-none-match", &tag)]).unwrap();
        assert_eq!((r.status, r.json()), (200, json!({"revoked": [{"jti": "t-1"}]})));
        assert_ne!(r.header("etag"), Some(tag.as_str()));
        let polls = idp.revocation_polls();
        assert_eq!(polls.len(), 3);
        assert_eq!((polls[0].if_none_match.as_deref(), polls[2].if_none_match.as_deref()), (None, Some(tag.as_str())));
        assert_eq!(idp.hits(Endpoint::Revocations), 3);
        assert_eq!(http::post(&url, &[], b"").unwrap().status, 405);
    }
}
