//! The introspection results shared by all workers (keyed by SHA-256 of the token, never the
//! token) and the single-flight lease: one introspection per token across workers.

use super::*;
use crate::store::lease::{self, Lease};
use crate::store::slots::{self, Decision};

// ---------------------------------------------------------------------------------------------
// Shared cache

pub(super) const ENTRY_VERSION: u8 = 1;
pub(super) const KIND_NONE: u8 = 0;
pub(super) const KIND_CLAIMS: u8 = 1;
pub(super) const KIND_JWT: u8 = 2;
/// version, active, kind, digest (32), expiry (8).
pub(super) const ENTRY_HEADER: usize = 3 + 32 + 8;

/// The cache table's name in shared data (slot keys are `introspect.<slot>`).
pub const TABLE: &str = "introspect";
/// The lease table's name (keys `introspect.lease.<slot>`).
pub const LEASES: &str = "introspect.lease";

/// The shared-data key of a cache slot.
pub fn cache_key(slot: u64) -> String {
    slots::slot_key(TABLE, slot)
}

/// The shared-data key of a lease slot.
pub fn lease_key(slot: u64) -> String {
    slots::slot_key(LEASES, slot)
}

pub(super) fn u64_at(v: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(v.get(at..at + 8)?.try_into().ok()?))
}

/// A decoded cache entry.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    active: bool,
    kind: u8,
    digest: [u8; 32],
    expires_ms: u64,
    payload: Vec<u8>,
}

pub(super) fn decode_entry(v: &[u8]) -> Option<Entry> {
    if v.len() < ENTRY_HEADER || v.first() != Some(&ENTRY_VERSION) {
        return None;
    }
    Some(Entry {
        active: *v.get(1)? == 1,
        kind: *v.get(2)?,
        digest: v.get(3..35)?.try_into().ok()?,
        expires_ms: u64_at(v, 35)?,
        payload: v.get(ENTRY_HEADER..)?.to_vec(),
    })
}

pub(super) fn encode_entry(r: &Introspected, digest: &[u8; 32], expires_ms: u64) -> Option<Vec<u8>> {
    let (kind, payload): (u8, Vec<u8>) = match (r.active, &r.jwt) {
        (false, _) => (KIND_NONE, Vec::new()),
        (true, Some(jwt)) => (KIND_JWT, jwt.as_bytes().to_vec()),
        (true, None) => (KIND_CLAIMS, serde_json::to_vec(&r.claims).ok()?),
    };
    let mut out = Vec::with_capacity(ENTRY_HEADER + payload.len());
    out.push(ENTRY_VERSION);
    out.push(u8::from(r.active));
    out.push(kind);
    out.extend_from_slice(digest);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.extend_from_slice(&payload);
    Some(out)
}

pub(super) fn materialize(e: &Entry, now_ms: u64) -> Option<Introspected> {
    let ttl_ms = e.expires_ms.saturating_sub(now_ms);
    if !e.active {
        return Some(Introspected::inactive(ttl_ms));
    }
    let (claims, jwt) = match e.kind {
        KIND_JWT => {
            let token = std::str::from_utf8(&e.payload).ok()?;
            let claims = jwt::parse(token, usize::MAX).ok()?.claims;
            (claims, Some(token.to_string()))
        }
        KIND_CLAIMS => (serde_json::from_slice::<Map<String, Value>>(&e.payload).ok()?, None),
        _ => return None,
    };
    Some(Introspected { active: true, claims, jwt, response_jwt: None, ttl_ms })
}

/// A live cached result for `token` at `now_ms`, from any worker. `slots` must be the same
/// everywhere (0 disables the cache).
pub fn cache_get(store: &dyn SharedStore, slots: u64, token: &str, now_ms: u64) -> Option<Introspected> {
    if slots == 0 {
        return None;
    }
    let at = slots::locate(token.as_bytes(), slots);
    let read = slots::read(store, TABLE, &at, &decode_entry, &|e: &Entry| e.digest == at.digest);
    read.iter()
        .filter_map(|c| c.record.as_ref())
        .find(|e| e.digest == at.digest && e.expires_ms > now_ms)
        .and_then(|e| materialize(e, now_ms))
}

/// Caches `result` for `token` for `result.ttl_ms` from `now_ms` (best effort: a lost race,
/// an entry over [`MAX_ENTRY_BYTES`], a TTL of 0 or a table full of longer-lived entries
/// leaves it uncached). Cache only results the caller has accepted (for example after
/// verifying [`Introspected::jwt`]): hits are not verified again.
pub fn cache_put(store: &dyn SharedStore, slots: u64, token: &str, result: &Introspected, now_ms: u64) {
    if slots == 0 || result.ttl_ms == 0 {
        return;
    }
    let at = slots::locate(token.as_bytes(), slots);
    let expires_ms = now_ms.saturating_add(result.ttl_ms);
    let Some(value) = encode_entry(result, &at.digest, expires_ms) else { return };
    if value.len() > MAX_ENTRY_BYTES {
        return;
    }
    let _ = slots::update(
        store,
        TABLE,
        &at,
        decode_entry,
        |e: &Entry| e.digest == at.digest,
        |read| {
            let held = |c: &slots::Candidate<Entry>| match &c.record {
                Some(e) if e.digest == at.digest => Held::Own,
                Some(e) if e.expires_ms > now_ms => Held::Other(e.expires_ms),
                _ => Held::Free,
            };
            // The token's own entry, else an empty or expired slot, else the live entry expiring
            // sooner — if it would not outlive the new one.
            let target = read
                .iter()
                .position(|c| held(c) == Held::Own)
                .or_else(|| read.iter().position(|c| held(c) == Held::Free))
                .or_else(|| {
                    read.iter()
                        .enumerate()
                        .filter_map(|(i, c)| match held(c) {
                            Held::Other(e) if e <= expires_ms => Some((e, i)),
                            _ => None,
                        })
                        .min_by_key(|(e, _)| *e)
                        .map(|(_, i)| i)
                });
            match target {
                Some(index) => Decision::Write { index, bytes: value.clone(), answer: () },
                None => Decision::Answer(()),
            }
        },
    );
}

/// What a cache slot holds, as seen by one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// This token's entry (live or not).
    Own,
    /// Nothing usable: empty, garbage, or expired.
    Free,
    /// Another token's live entry, expiring at this time (ms).
    Other(u64),
}

// ---------------------------------------------------------------------------------------------
// Single flight

/// Asks to introspect `token` now. `false` means another request (any worker) is introspecting
/// this very token and holds the lease until it ends or `hold_ms` passes: wait for its cached
/// result rather than calling the endpoint again. `true` means go ahead: the lease is ours, or
/// the lease slot is busy with a *different* token (a slot collision: no coordination then,
/// never a wait for an answer that will not come), or `slots` is 0.
///
/// Only a caller that got `true` may call [`end`].
pub fn try_begin(store: &dyn SharedStore, slots: u64, token: &str, now_ms: u64, hold_ms: u64) -> bool {
    if slots == 0 {
        return true;
    }
    let at = slots::locate(token.as_bytes(), slots);
    let Some(&slot) = at.candidates().first() else { return true };
    lease::try_take(store, &lease_key(slot), &at.digest, now_ms, hold_ms) != Lease::Held { same: true }
}

/// Ends this token's lease (best effort) once its result is cached or the callout failed, so
/// waiting requests stop waiting. Does nothing if the lease is not held for this token.
pub fn end(store: &dyn SharedStore, slots: u64, token: &str) {
    if slots == 0 {
        return;
    }
    let at = slots::locate(token.as_bytes(), slots);
    if let Some(&slot) = at.candidates().first() {
        lease::release(store, &lease_key(slot), &at.digest);
    }
}
