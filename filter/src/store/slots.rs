//! The one two-candidate slot table over shared data, and its one bounded CAS loop.
//!
//! Invariant: a table of `slots` slots never holds more than `slots` keys, however many
//! identities appear, and a slot changes owner only when the caller's pure decision says so.
//!
//! Three capabilities keep bounded per-identity records in shared data — rate-limit buckets,
//! lockout counters and cached introspection answers. They share this mechanism (in the style
//! of governor's `measure_and_replace`): an identity hashes (SHA-256: no raw identity is ever
//! part of a key) to a 64-bit fingerprint and two candidate slots ([`locate`]); [`update`]
//! reads the candidates, hands them to the caller's **pure** decision, and writes what it
//! decided with compare-and-swap, retrying at most [`MAX_CAS_RETRIES`] times. What a record
//! holds, and which slot may be claimed (empty, idle, expired), is the caller's business;
//! reading, writing, retrying and the read-back are this module's.
//!
//! The Proxy-Wasm ABI has no atomic create: a CAS of 0 (first write of a key) is
//! unconditional. Envoy's adapter makes it create-if-absent (`HostStore::set`); for any other
//! host, [`update`] reads the slot back after a first write and retries when another worker's
//! write landed instead (the caller's `owns` says whose record it is), so a lost claim of a
//! never-used slot is detected rather than believed. The tests' store is the unconditional kind.

use sha2::{Digest, Sha256};

use super::SharedStore;

/// Bounded retries of the CAS loop: exhausting them answers [`Updated::Contended`].
pub const MAX_CAS_RETRIES: u32 = 8;

/// Where an identity lives: its digest, a non-zero 64-bit fingerprint, and one or two
/// candidate slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub digest: [u8; 32],
    pub fp: u64,
    slots: [u64; 2],
    count: usize,
}

impl Located {
    /// The candidate slots (one when the table has one slot).
    pub fn candidates(&self) -> &[u64] {
        self.slots.get(..self.count).unwrap_or(&[])
    }
}

/// Hashes `identity` onto a table of `slots` slots (at least 1).
pub fn locate(identity: &[u8], slots: u64) -> Located {
    let digest: [u8; 32] = Sha256::digest(identity).into();
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(digest.get(i..i + 8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(w)
    };
    let fp = word(0).max(1); // 0 never names an identity
    let slots = slots.max(1);
    let a = word(8) % slots;
    let mut b = word(16) % slots;
    if b == a && slots > 1 {
        b = (a + 1) % slots;
    }
    let count = if a == b { 1 } else { 2 };
    Located { digest, fp, slots: [a, b], count }
}

/// One candidate slot as read: its index, its decoded record (`None` when empty or
/// undecodable: both are free to claim), and the CAS token of the read.
#[derive(Debug, Clone)]
pub struct Candidate<R> {
    pub slot: u64,
    pub record: Option<R>,
    cas: u32,
}

/// What the caller's decision wants done.
#[derive(Debug)]
pub enum Decision<T> {
    /// Write `bytes` into `read[index]`'s slot and answer `T` once the write holds.
    Write { index: usize, bytes: Vec<u8>, answer: T },
    /// Write nothing; answer `T` now.
    Answer(T),
}

/// The outcome of [`update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated<T> {
    Done(T),
    /// Every try lost a race with another worker.
    Contended,
}

/// The shared-data key of slot `slot` of table `table` (a short name, e.g. `rl`; the
/// namespace prefix is added by [`super::Scoped`]).
pub fn slot_key(table: &str, slot: u64) -> String {
    format!("{table}.{slot}")
}

/// Reads the candidates of `at`. The second is read only when the first does not hold the
/// identity's own record (most identities find theirs in the first: one host call).
pub fn read<R>(
    store: &dyn SharedStore,
    table: &str,
    at: &Located,
    decode: &impl Fn(&[u8]) -> Option<R>,
    owns: &impl Fn(&R) -> bool,
) -> Vec<Candidate<R>> {
    let mut out = Vec::with_capacity(at.count);
    for &slot in at.candidates() {
        let (v, cas) = store.get(&slot_key(table, slot));
        let record = v.as_deref().and_then(decode);
        let own = record.as_ref().is_some_and(owns);
        out.push(Candidate { slot, record, cas });
        if own {
            break;
        }
    }
    out
}

/// The slot an identity writes to: its own record, else an empty slot, else one the caller's
/// `reusable` says may be taken over (idle, expired). `None`: both hold others' live records.
pub fn target<R>(read: &[Candidate<R>], own: impl Fn(&R) -> bool, reusable: impl Fn(&R) -> bool) -> Option<usize> {
    read.iter()
        .position(|c| c.record.as_ref().is_some_and(&own))
        .or_else(|| read.iter().position(|c| c.record.is_none()))
        .or_else(|| read.iter().position(|c| c.record.as_ref().is_some_and(&reusable)))
}

/// The bounded CAS loop: read → `decide` (pure) → CAS write → read-back after a first write.
pub fn update<R, T>(
    store: &dyn SharedStore,
    table: &str,
    at: &Located,
    decode: impl Fn(&[u8]) -> Option<R>,
    owns: impl Fn(&R) -> bool,
    mut decide: impl FnMut(&[Candidate<R>]) -> Decision<T>,
) -> Updated<T> {
    for _ in 0..MAX_CAS_RETRIES {
        let read = read(store, table, at, &decode, &owns);
        let (index, bytes, answer) = match decide(&read) {
            Decision::Answer(t) => return Updated::Done(t),
            Decision::Write { index, bytes, answer } => (index, bytes, answer),
        };
        let Some(c) = read.get(index) else { return Updated::Contended };
        let key = slot_key(table, c.slot);
        if store.set(&key, &bytes, c.cas).is_err() {
            continue;
        }
        if c.cas == 0 {
            // The first write of a key is unconditional: make sure ours is the one that held.
            let (v, _) = store.get(&key);
            if v.as_deref().and_then(&decode).is_none_or(|r| !owns(&r)) {
                continue;
            }
        }
        return Updated::Done(answer);
    }
    Updated::Contended
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::store::{CasMismatch, MemStore};
    use proptest::prelude::*;
    use std::cell::Cell;

    /// A toy record: owner fingerprint and whether it is still "active" (not evictable).
    fn encode(fp: u64, active: bool) -> Vec<u8> {
        let mut v = fp.to_le_bytes().to_vec();
        v.push(u8::from(active));
        v
    }

    fn decode(v: &[u8]) -> Option<(u64, bool)> {
        Some((u64::from_le_bytes(v.get(..8)?.try_into().ok()?), *v.get(8)? == 1))
    }

    /// Claims own, else empty, else inactive; never an active record of someone else.
    fn claim(store: &dyn SharedStore, slots: u64, id: &[u8], active: bool) -> Updated<bool> {
        let at = locate(id, slots);
        update(
            store,
            "t",
            &at,
            decode,
            |r| r.0 == at.fp,
            |read| {
                let pick = read
                    .iter()
                    .position(|c| c.record.is_some_and(|r| r.0 == at.fp))
                    .or_else(|| read.iter().position(|c| c.record.is_none()))
                    .or_else(|| read.iter().position(|c| c.record.is_some_and(|r| !r.1)));
                match pick {
                    Some(index) => Decision::Write { index, bytes: encode(at.fp, active), answer: true },
                    None => Decision::Answer(false),
                }
            },
        )
    }

    /// A store where another worker's write lands between our read and our CAS, `n` times.
    struct Racy {
        inner: MemStore,
        races: Cell<u32>,
    }

    impl SharedStore for Racy {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
            if self.races.get() > 0 {
                self.races.set(self.races.get() - 1);
                let (v, c) = self.inner.get(key);
                self.inner.set(key, &v.unwrap_or_default(), c)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn retries_are_bounded() {
        let s = Racy { inner: MemStore::default(), races: Cell::new(MAX_CAS_RETRIES) };
        s.inner.set(&slot_key("t", locate(b"a", 1).candidates()[0]), &encode(7, false), 0).unwrap();
        assert_eq!(claim(&s, 1, b"a", true), Updated::Contended);
        let s = Racy { inner: MemStore::default(), races: Cell::new(MAX_CAS_RETRIES - 1) };
        s.inner.set(&slot_key("t", locate(b"a", 1).candidates()[0]), &encode(7, false), 0).unwrap();
        assert_eq!(claim(&s, 1, b"a", true), Updated::Done(true));
    }

    #[test]
    fn a_lost_first_write_is_detected_by_the_read_back() {
        // Another worker's first write of the same never-used key lands right after ours.
        struct Overwrite(MemStore);
        impl SharedStore for Overwrite {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
                self.0.get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
                self.0.set(key, value, cas)?;
                if cas == 0 {
                    self.0.set(key, &encode(99, true), 0)?;
                }
                Ok(())
            }
        }
        let s = Overwrite(MemStore::default());
        // Both slots end up held by the active stranger: the claim must not believe its write.
        assert_eq!(claim(&s, 1, b"a", true), Updated::Done(false));
    }

    proptest! {
        /// For every user of the table: memory stays bounded by the slot count, and an active
        /// record is never taken over by another identity, whatever the order of claims and
        /// however many races are injected.
        #[test]
        fn bounded_and_never_evicts_active_records(
            ops in proptest::collection::vec((0u8..40, any::<bool>(), 0u32..3), 1..200),
            slots in 1u64..16,
        ) {
            let s = Racy { inner: MemStore::default(), races: Cell::new(0) };
            for (id, make_active, races) in ops {
                s.races.set(races);
                let before: Vec<(u64, Option<(u64, bool)>)> = (0..slots)
                    .map(|i| (i, s.inner.get(&slot_key("t", i)).0.as_deref().and_then(decode)))
                    .collect();
                let _ = claim(&s, slots, &[id], make_active);
                prop_assert!(s.inner.len() as u64 <= slots);
                for (i, rec) in before {
                    if let Some((fp, true)) = rec {
                        let now = s.inner.get(&slot_key("t", i)).0.as_deref().and_then(decode);
                        prop_assert_eq!(now.map(|r| r.0), Some(fp), "active record of slot {} evicted", i);
                    }
                }
            }
        }
    }
}
