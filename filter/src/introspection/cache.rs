//! The introspection results shared by all workers (keyed by SHA-256 of the token, never the
//! token) and the single-flight lease: one introspection per token across workers.

use sha2::{Digest, Sha256};

use super::*;

// ---------------------------------------------------------------------------------------------
// Shared cache

pub(super) const ENTRY_VERSION: u8 = 1;
pub(super) const KIND_NONE: u8 = 0;
pub(super) const KIND_CLAIMS: u8 = 1;
pub(super) const KIND_JWT: u8 = 2;
/// version, active, kind, digest (32), expiry (8).
pub(super) const ENTRY_HEADER: usize = 3 + 32 + 8;
/// digest (32), expiry (8).
pub(super) const LEASE_LEN: usize = 32 + 8;

/// The shared-data key of a cache slot.
pub fn cache_key(slot: u64) -> String {
    format!("introspect.{slot}")
}

/// The shared-data key of a lease slot.
pub fn lease_key(slot: u64) -> String {
    format!("introspect.lease.{slot}")
}

/// The token's SHA-256 and its two candidate slots (`slots` must be non-zero).
pub(super) fn locate(token: &str, slots: u64) -> ([u8; 32], u64, u64) {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&digest[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let a = word(0) % slots;
    let mut b = word(8) % slots;
    if b == a && slots > 1 {
        b = (a + 1) % slots;
    }
    (digest, a, b)
}

pub(super) fn u64_at(v: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(v.get(at..at + 8)?.try_into().ok()?))
}

/// A decoded cache entry, borrowing its payload.
pub(super) struct Entry<'a> {
    active: bool,
    kind: u8,
    digest: &'a [u8],
    expires_ms: u64,
    payload: &'a [u8],
}

pub(super) fn decode_entry(v: &[u8]) -> Option<Entry<'_>> {
    if v.len() < ENTRY_HEADER || v.first() != Some(&ENTRY_VERSION) {
        return None;
    }
    Some(Entry {
        active: *v.get(1)? == 1,
        kind: *v.get(2)?,
        digest: v.get(3..35)?,
        expires_ms: u64_at(v, 35)?,
        payload: v.get(ENTRY_HEADER..)?,
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

pub(super) fn materialize(e: &Entry<'_>, now_ms: u64) -> Option<Introspected> {
    let ttl_ms = e.expires_ms.saturating_sub(now_ms);
    if !e.active {
        return Some(Introspected::inactive(ttl_ms));
    }
    let (claims, jwt) = match e.kind {
        KIND_JWT => {
            let token = std::str::from_utf8(e.payload).ok()?;
            let claims = jwt::parse(token, usize::MAX).ok()?.claims;
            (claims, Some(token.to_string()))
        }
        KIND_CLAIMS => (serde_json::from_slice::<Map<String, Value>>(e.payload).ok()?, None),
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
    let (digest, a, b) = locate(token, slots);
    let candidates = if a == b { &[a][..] } else { &[a, b][..] };
    for &slot in candidates {
        let (value, _) = store.get(&cache_key(slot));
        if let Some(e) = value.as_deref().and_then(decode_entry) {
            if e.digest == digest.as_slice() && e.expires_ms > now_ms {
                return materialize(&e, now_ms);
            }
        }
    }
    None
}

/// Caches `result` for `token` for `result.ttl_ms` from `now_ms` (best effort: a lost race,
/// an entry over [`MAX_ENTRY_BYTES`], a TTL of 0 or a table full of longer-lived entries
/// leaves it uncached). Cache only results the caller has accepted (for example after
/// verifying [`Introspected::jwt`]): hits are not verified again.
pub fn cache_put(store: &dyn SharedStore, slots: u64, token: &str, result: &Introspected, now_ms: u64) {
    if slots == 0 || result.ttl_ms == 0 {
        return;
    }
    let (digest, a, b) = locate(token, slots);
    let expires_ms = now_ms.saturating_add(result.ttl_ms);
    let Some(value) = encode_entry(result, &digest, expires_ms) else { return };
    if value.len() > MAX_ENTRY_BYTES {
        return;
    }
    let candidates = if a == b { vec![a] } else { vec![a, b] };
    for _ in 0..MAX_CAS_RETRIES {
        let read: Vec<(u64, u32, Held)> = candidates
            .iter()
            .map(|&slot| {
                let (v, cas) = store.get(&cache_key(slot));
                let held = match v.as_deref().and_then(decode_entry) {
                    Some(e) if e.digest == digest.as_slice() => Held::Own,
                    Some(e) if e.expires_ms > now_ms => Held::Other(e.expires_ms),
                    _ => Held::Free,
                };
                (slot, cas, held)
            })
            .collect();
        // The token's own entry, else an empty or expired slot, else the live entry expiring
        // sooner — if it would not outlive the new one.
        let target =
            read.iter().find(|r| r.2 == Held::Own).or_else(|| read.iter().find(|r| r.2 == Held::Free)).or_else(|| {
                read.iter()
                    .filter_map(|r| match r.2 {
                        Held::Other(e) if e <= expires_ms => Some((e, r)),
                        _ => None,
                    })
                    .min_by_key(|(e, _)| *e)
                    .map(|(_, r)| r)
            });
        let Some(&(slot, cas, _)) = target else { return };
        if store.set(&cache_key(slot), &value, cas).is_ok() {
            return;
        }
    }
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

pub(super) fn decode_lease(v: &[u8]) -> Option<(&[u8], u64)> {
    if v.len() != LEASE_LEN {
        return None;
    }
    Some((v.get(..32)?, u64_at(v, 32)?))
}

pub(super) fn encode_lease(digest: &[u8; 32], expires_ms: u64) -> [u8; LEASE_LEN] {
    let mut out = [0u8; LEASE_LEN];
    out[..32].copy_from_slice(digest);
    out[32..].copy_from_slice(&expires_ms.to_le_bytes());
    out
}

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
    let (digest, slot, _) = locate(token, slots);
    let key = lease_key(slot);
    let live_holder = |v: Option<Vec<u8>>| -> Option<bool> {
        let v = v?;
        let (holder, expires_ms) = decode_lease(&v)?;
        (expires_ms > now_ms).then(|| holder == digest.as_slice())
    };
    let (value, cas) = store.get(&key);
    match live_holder(value) {
        Some(true) => return false,
        Some(false) => return true,
        None => {}
    }
    if store.set(&key, &encode_lease(&digest, now_ms.saturating_add(hold_ms)), cas).is_ok() {
        return true;
    }
    // Lost the race: someone else just took the lease, perhaps for this same token.
    let (value, _) = store.get(&key);
    live_holder(value) != Some(true)
}

/// Ends this token's lease (best effort) once its result is cached or the callout failed, so
/// waiting requests stop waiting. Does nothing if the lease is not held for this token.
pub fn end(store: &dyn SharedStore, slots: u64, token: &str) {
    if slots == 0 {
        return;
    }
    let (digest, slot, _) = locate(token, slots);
    let key = lease_key(slot);
    let (value, cas) = store.get(&key);
    if value.as_deref().and_then(decode_lease).is_some_and(|(holder, _)| holder == digest.as_slice()) {
        let _ = store.set(&key, &encode_lease(&digest, 0), cas);
    }
}
