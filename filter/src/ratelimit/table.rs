//! The shared bucket table: bounded memory, exact across workers (SPEC C3).
//!
//! Buckets live in Proxy-Wasm shared data, one key per **slot** of a fixed-size table
//! (`rl.<slot>` in the rate-limit namespace), so memory is bounded by `max_clients` slots however many
//! distinct clients appear. A client (identity + plan) hashes (SHA-256) to a 64-bit
//! fingerprint and two candidate slots:
//!
//! 1. a candidate holding the client's fingerprint is its bucket;
//! 2. otherwise the client claims a candidate that is **empty** or **idle** — idle meaning
//!    its bucket has refilled to full: forgetting a full bucket loses nothing, because its
//!    owner would find it full anyway. An active (partly drained) bucket is never evicted,
//!    so an attacker cycling identities can neither grow memory nor hand a client (itself
//!    included) a fresh bucket while its old one is still draining;
//! 3. if both candidates hold active buckets of other clients, the table is full there: the
//!    request is refused with 429 and a `Retry-After` until the sooner one is idle.
//!
//! Every update goes through the one slot table of [`crate::store::slots`] (read → pure
//! decision → compare-and-swap, bounded retries, read-back after a first write); exhausting
//! the retries refuses the request (counted). Refill is lazy, from timestamps.
//!
//! A first write of a never-used slot is create-if-absent on Envoy (see the host adapter's
//! `HostStore::set`); on a host whose CAS 0 is only unconditional, two workers creating the
//! *same never-used slot* at the same instant may lose one request's charge. Every later
//! update of a slot is an exact CAS.

use super::bucket::{Bucket, Outcome, Rate};
use crate::store::slots::{self, Decision, Updated};
use crate::store::SharedStore;

pub use crate::store::slots::MAX_CAS_RETRIES;

/// What a take on the table decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The bucket's outcome (allow or deny).
    Bucket(Outcome),
    /// Both candidate slots hold other clients' active buckets.
    TableFull { retry_after_ms: u64 },
    /// The CAS retries ran out (extreme contention on this client's bucket).
    Contended,
}

const SLOT_LEN: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    fp: u64,
    rate: Rate,
    bucket: Bucket,
}

fn encode(s: &Slot) -> [u8; SLOT_LEN] {
    let mut out = [0u8; SLOT_LEN];
    for (i, v) in
        [s.fp, s.bucket.level, s.bucket.at_ms, s.rate.requests, s.rate.per_ms, s.rate.burst].iter().enumerate()
    {
        out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    out
}

fn decode(v: &[u8]) -> Option<Slot> {
    if v.len() != SLOT_LEN {
        return None;
    }
    let u = |i: usize| -> Option<u64> { Some(u64::from_le_bytes(v.get(i * 8..i * 8 + 8)?.try_into().ok()?)) };
    Some(Slot {
        fp: u(0)?,
        bucket: Bucket { level: u(1)?, at_ms: u(2)? },
        rate: Rate { requests: u(3)?, per_ms: u(4)?, burst: u(5)? },
    })
}

/// The table's name in shared data (slot keys are `rl.<slot>`, in the plan's namespace).
pub const TABLE: &str = "rl";

/// The shared-data key of a slot.
pub fn slot_key(slot: u64) -> String {
    slots::slot_key(TABLE, slot)
}

/// Charges `cost` to the bucket of `identity` under `rate`, at `now_ms`.
pub fn take(store: &dyn SharedStore, slots: u64, identity: &[u8], rate: Rate, cost: u64, now_ms: u64) -> Taken {
    let at = slots::locate(identity, slots);
    let fp = at.fp;
    let decided = slots::update(
        store,
        TABLE,
        &at,
        decode,
        |s: &Slot| s.fp == fp,
        |read| {
            // 1. The client's own bucket; 2. an empty slot, else an idle (full) one.
            let target = slots::target(read, |s: &Slot| s.fp == fp, |s: &Slot| s.rate.is_full(s.bucket, now_ms));
            let Some(index) = target else {
                let retry =
                    read.iter().filter_map(|c| c.record.map(|s| ms_until_full(s, now_ms))).min().unwrap_or(1000);
                return Decision::Answer(Taken::TableFull { retry_after_ms: retry });
            };
            let bucket = match read.get(index).and_then(|c| c.record) {
                // Our own bucket; if the plan changed, keep the level within the new capacity.
                Some(s) if s.fp == fp => Bucket {
                    level: s.rate.level_at(s.bucket, now_ms).min(rate.capacity()),
                    at_ms: now_ms.max(s.bucket.at_ms),
                },
                // A claimed (empty or idle) slot starts full: the client has no bucket anywhere
                // else (its fingerprint is in neither candidate).
                _ => rate.full(now_ms),
            };
            let (next, outcome) = rate.take(bucket, cost, now_ms);
            Decision::Write {
                index,
                bytes: encode(&Slot { fp, rate, bucket: next }).to_vec(),
                answer: Taken::Bucket(outcome),
            }
        },
    );
    match decided {
        Updated::Done(t) => t,
        Updated::Contended => Taken::Contended,
    }
}

fn ms_until_full(s: Slot, now_ms: u64) -> u64 {
    let missing = s.rate.capacity().saturating_sub(s.rate.level_at(s.bucket, now_ms));
    if s.rate.requests == 0 {
        return u64::MAX;
    }
    missing.div_ceil(s.rate.requests).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CasMismatch, MemStore};
    use std::cell::Cell;

    const FREE: Rate = Rate { requests: 100, per_ms: 60_000, burst: 100 };

    fn allowed(t: Taken) -> bool {
        matches!(t, Taken::Bucket(Outcome::Allow { .. }))
    }

    #[test]
    fn one_client_is_exact() {
        let s = MemStore::default();
        let admitted = (0..1000).filter(|_| allowed(take(&s, 1024, b"client-a", FREE, 1, 5_000))).count();
        assert_eq!(admitted, 100);
        assert!(allowed(take(&s, 1024, b"client-b", FREE, 1, 5_000)), "another client is unaffected");
        assert!(allowed(take(&s, 1024, b"client-a", FREE, 1, 5_600)), "refilled after 600 ms");
    }

    #[test]
    fn a_million_identities_stay_within_the_bound_and_never_reset_an_active_bucket() {
        let s = MemStore::default();
        let slots = 512u64;
        // A legitimate client drains half its bucket.
        for _ in 0..50 {
            assert!(allowed(take(&s, slots, b"victim", FREE, 1, 0)));
        }
        // An attacker cycles through a million identities, a few per millisecond.
        let mut full = 0u64;
        for i in 0..1_000_000u64 {
            let now = i / 4;
            if matches!(take(&s, slots, format!("attacker-{i}").as_bytes(), FREE, 1, now), Taken::TableFull { .. }) {
                full += 1;
            }
            if i % 100_000 == 0 {
                // The victim's remaining tokens only ever follow its own bucket.
                if let Taken::Bucket(Outcome::Allow { remaining, .. }) = take(&s, slots, b"victim", FREE, 1, now) {
                    let max_possible = 100u64.min(49 + now * 100 / 60_000);
                    assert!(remaining <= max_possible, "victim got a fresh bucket: {remaining} > {max_possible}");
                }
            }
        }
        assert!(s.len() as u64 <= slots, "{} keys > {slots} slots", s.len());
        assert!(full > 0, "the table filled under the flood and refused rather than evicting");
    }

    #[test]
    fn idle_slots_are_reused_but_active_ones_are_not() {
        let s = MemStore::default();
        // One slot: every identity competes for it.
        assert!(allowed(take(&s, 1, b"x", FREE, 1, 0)));
        assert_eq!(take(&s, 1, b"y", FREE, 1, 0), Taken::TableFull { retry_after_ms: 600 });
        // After x's bucket refilled (600 ms for one token), y may take the slot.
        assert!(allowed(take(&s, 1, b"y", FREE, 1, 600)));
        // x comes back: y is active now, so x waits — it never gets a fresh bucket early.
        assert!(matches!(take(&s, 1, b"x", FREE, 1, 700), Taken::TableFull { .. }));
    }

    #[test]
    fn plan_change_keeps_the_level_within_the_new_capacity() {
        let s = MemStore::default();
        let premium = Rate { requests: 1000, per_ms: 60_000, burst: 200 };
        for _ in 0..150 {
            take(&s, 64, b"c", premium, 1, 0);
        }
        // Now on the free plan: 50 tokens left, within free's burst of 100.
        let admitted = (0..200).filter(|_| allowed(take(&s, 64, b"c", FREE, 1, 0))).count();
        assert_eq!(admitted, 50);
    }

    /// A store whose CAS always fails: the loop must stop and report contention.
    struct Hostile(Cell<u32>);
    impl SharedStore for Hostile {
        fn get(&self, _: &str) -> (Option<Vec<u8>>, u32) {
            (Some(encode(&Slot { fp: 7, rate: FREE, bucket: FREE.full(0) }).to_vec()), 9)
        }
        fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), CasMismatch> {
            self.0.set(self.0.get() + 1);
            Err(CasMismatch)
        }
    }

    #[test]
    fn cas_retries_are_bounded() {
        let h = Hostile(Cell::new(0));
        assert_eq!(take(&h, 4, b"c", FREE, 1, 0), Taken::Contended);
        assert_eq!(h.0.get(), MAX_CAS_RETRIES);
    }

    #[test]
    fn slots_round_trip_and_garbage_is_empty() {
        let slot = Slot { fp: 3, rate: FREE, bucket: Bucket { level: 5, at_ms: 6 } };
        assert_eq!(decode(&encode(&slot)), Some(slot));
        assert_eq!(decode(b"garbage"), None);
        let at = slots::locate(b"id", 2);
        assert!(at.fp != 0 && at.candidates().len() == 2 && at.candidates().iter().all(|c| *c < 2));
    }
}
