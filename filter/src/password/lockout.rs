//! Lockout after repeated failed logins (SPEC C5 `password_grant.lockout`, C7's "5 failed
//! logins for one user or IP in 60 s").
//!
//! Failures are counted per **subject** — a username ([`user_subject`]) or a source address
//! ([`addr_subject`]) — in a sliding window, and a subject that reaches `max_failures` within
//! `window_ms` is blocked for `block_ms`. State lives in Proxy-Wasm shared data so every
//! worker sees the same counts.
//!
//! Bounded memory: like the rate-limit table ([`crate::ratelimit::table`]), subjects live in a
//! fixed table of `slots` shared-data keys (`portcullis.lockout.<slot>`); a subject hashes
//! (SHA-256, so no raw username is ever part of a key or stored) to a 64-bit fingerprint and
//! two candidate slots. A failure is recorded in the subject's own slot, else in an empty or
//! **idle** slot — idle meaning its window holds no failure and it is not blocked. A blocked
//! slot, or one still counting failures, is never evicted: an attacker cycling usernames can
//! neither grow memory nor wipe a victim's count. When both candidates hold other active
//! subjects the table is full there ([`Status::TableFull`]): the subject's failures cannot be
//! counted until one becomes idle. The caller lets such a subject through (it has no failure
//! on record: blocking it would let a flood of random usernames lock out users who never
//! failed), and keeps usernames and addresses in separate tables so a username flood cannot
//! disable the address lockout, and the reverse.
//!
//! The sliding window, in integers: the window is cut into `BUCKETS - 1` sub-windows of
//! `sub = ceil(window_ms / (BUCKETS - 1))` ms and a ring of `BUCKETS` counters holds the
//! failures of the last `BUCKETS` sub-windows (the current one included). A failure therefore
//! counts for **at least `window_ms` and less than `window_ms + sub`** (for 60 s: between 60
//! and 64 s): the window errs on the strict side by at most one sub-window, and counts are
//! exact (no interpolation).
//!
//! A block does not clear the count: once it lifts, a further failure while the window still
//! holds `max_failures` of them blocks again at once, so an attacker never gets more than
//! `max_failures` guesses per window plus one per block. A success clears the **username**'s
//! count ([`record_success`]); the address count is never cleared by a success, or an attacker
//! with one valid account could interleave its own logins to reset the counter of the address
//! it sprays other usernames from.
//!
//! Every update goes through the one slot table of [`crate::store::slots`]: read → pure
//! decision → compare-and-swap, at most [`MAX_CAS_RETRIES`] tries, read-back after the ABI's
//! unconditional first write of a key.

use crate::store::slots::{self, Candidate, Decision, Updated};
use crate::store::window;
use crate::store::SharedStore;

pub use crate::store::slots::MAX_CAS_RETRIES;

/// Counters in a slot's ring (the window is `BUCKETS - 1` sub-windows).
pub const BUCKETS: usize = 16;

pub use crate::config::{LockoutPolicy as Policy, DEFAULT_LOCKOUT_SLOTS as DEFAULT_SLOTS};

impl Policy {
    /// Length of one sub-window.
    fn sub_ms(&self) -> u64 {
        self.window_ms.div_ceil(BUCKETS as u64 - 1).max(1)
    }
}

/// May this subject try now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    /// Blocked after too many failures, for this much longer.
    Blocked {
        retry_after_ms: u64,
    },
    /// The subject has no slot and both of its candidates are held by other active subjects:
    /// its failures could not be counted, so it is refused until a slot frees up.
    TableFull {
        retry_after_ms: u64,
    },
}

impl Status {
    pub fn is_open(self) -> bool {
        self == Status::Open
    }

    /// Milliseconds until a retry may succeed (`None` when open).
    pub fn retry_after_ms(self) -> Option<u64> {
        match self {
            Status::Open => None,
            Status::Blocked { retry_after_ms } | Status::TableFull { retry_after_ms } => Some(retry_after_ms),
        }
    }
}

/// What recording a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted; the subject now has this many failures in its window, below the limit.
    Counted { failures: u64 },
    /// This failure reached the limit: the subject is blocked from now on. Emit the event.
    Blocked { retry_after_ms: u64 },
    /// The subject was already blocked (a concurrent request got there first); nothing
    /// changed.
    AlreadyBlocked { retry_after_ms: u64 },
    /// No slot for the subject (see [`Status::TableFull`]); not counted.
    TableFull { retry_after_ms: u64 },
    /// The CAS retries ran out; not counted (counted in stats by the caller).
    Contended,
}

/// The lockout subject of a username. Usernames are trimmed and lower-cased, so that case
/// variants (which case-insensitive directories such as LDAP accept as the same account)
/// share one counter: merging two genuinely different case-sensitive accounts only makes the
/// lockout stricter, never looser.
pub fn user_subject(username: &str) -> String {
    format!("user:{}", username.trim().to_lowercase())
}

/// The lockout subject of a source address (`1.2.3.4`, `1.2.3.4:5678`, `::1`,
/// `[2001:db8::1]:443`). IPv6 addresses count per /64 (one subscriber usually holds a whole
/// /64, so per-address counting would be trivial to evade); IPv4-mapped IPv6 counts as IPv4.
/// Text that is not an address is used as is.
pub fn addr_subject(address: &str) -> String {
    crate::net::client_key(address)
}

const SLOT_LEN: usize = 32 + 4 * BUCKETS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    fp: u64,
    /// The sub-window length the counters were written with (a policy change resets them).
    sub_ms: u64,
    /// Index (`now_ms / sub_ms`) of the newest sub-window written.
    head: u64,
    /// Blocked until this time (ms); 0 when never blocked.
    blocked_until: u64,
    counts: [u32; BUCKETS],
}

fn encode(s: &Slot) -> [u8; SLOT_LEN] {
    let mut out = [0u8; SLOT_LEN];
    for (i, v) in [s.fp, s.sub_ms, s.head, s.blocked_until].iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    for (i, c) in s.counts.iter().enumerate() {
        out[32 + i * 4..36 + i * 4].copy_from_slice(&c.to_le_bytes());
    }
    out
}

fn decode(v: &[u8]) -> Option<Slot> {
    if v.len() != SLOT_LEN {
        return None;
    }
    let u = |i: usize| -> Option<u64> { Some(u64::from_le_bytes(v.get(i * 8..i * 8 + 8)?.try_into().ok()?)) };
    let mut counts = [0u32; BUCKETS];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = u32::from_le_bytes(v.get(32 + i * 4..36 + i * 4)?.try_into().ok()?);
    }
    Some(Slot { fp: u(0)?, sub_ms: u(1)?, head: u(2)?, blocked_until: u(3)?, counts })
}

/// The shared-data key of a slot.
pub fn slot_key(slot: u64) -> String {
    slots::slot_key(TABLE, slot)
}

impl Slot {
    fn fresh(fp: u64, policy: &Policy, now_ms: u64) -> Slot {
        let sub_ms = policy.sub_ms();
        Slot { fp, sub_ms, head: now_ms / sub_ms, blocked_until: 0, counts: [0; BUCKETS] }
    }

    /// Moves the ring to `now_ms`, dropping sub-windows that left the window. A clock a
    /// little behind `head` (another worker's) writes into the newest sub-window.
    fn advance(&mut self, policy: &Policy, now_ms: u64) {
        let sub_ms = policy.sub_ms();
        if self.sub_ms != sub_ms {
            self.sub_ms = sub_ms;
            self.head = now_ms / sub_ms;
            self.counts = [0; BUCKETS];
            return;
        }
        window::advance(&mut self.counts, &mut self.head, now_ms / sub_ms);
    }

    fn total(&self) -> u64 {
        window::total(&self.counts)
    }

    fn blocked_for(&self, now_ms: u64) -> Option<u64> {
        (self.blocked_until > now_ms).then(|| self.blocked_until - now_ms)
    }

    /// Neither blocked nor holding a failure in its window: reusable by another subject.
    fn is_idle(&self, policy: &Policy, now_ms: u64) -> bool {
        let mut s = *self;
        s.advance(policy, now_ms);
        s.blocked_for(now_ms).is_none() && s.total() == 0
    }

    /// Milliseconds until this slot becomes idle.
    fn ms_until_idle(&self, now_ms: u64) -> u64 {
        let newest = (0..BUCKETS as u64)
            .filter(|back| self.head.checked_sub(*back).is_some_and(|b| self.counts[(b % BUCKETS as u64) as usize] > 0))
            .map(|back| self.head - back)
            .max();
        let counts_gone = newest.map_or(0, |b| b.saturating_add(BUCKETS as u64).saturating_mul(self.sub_ms.max(1)));
        counts_gone.max(self.blocked_until).saturating_sub(now_ms).max(1)
    }
}

/// The table's name in shared data (slot keys are `lockout.<slot>`).
pub const TABLE: &str = "lockout";

fn ms_until_idle_of(read: &[Candidate<Slot>], now_ms: u64) -> u64 {
    read.iter().filter_map(|c| c.record.map(|s| s.ms_until_idle(now_ms))).min().unwrap_or(1000)
}

/// Whether `subject` may try now (read only).
pub fn check(store: &dyn SharedStore, slots: u64, subject: &str, policy: &Policy, now_ms: u64) -> Status {
    let at = slots::locate(subject.as_bytes(), slots);
    let fp = at.fp;
    let read = slots::read(store, TABLE, &at, &decode, &|s: &Slot| s.fp == fp);
    if let Some(own) = read.iter().find_map(|c| c.record.filter(|s| s.fp == fp)) {
        return match own.blocked_for(now_ms) {
            Some(ms) => Status::Blocked { retry_after_ms: ms },
            None => Status::Open,
        };
    }
    let claimable = read.iter().any(|c| c.record.is_none_or(|s| s.is_idle(policy, now_ms)));
    if claimable {
        Status::Open
    } else {
        Status::TableFull { retry_after_ms: ms_until_idle_of(&read, now_ms) }
    }
}

/// Records a failed login of `subject` (call it for both the username and the address
/// subjects when every backend rejected the password).
pub fn record_failure(store: &dyn SharedStore, slots: u64, subject: &str, policy: &Policy, now_ms: u64) -> Recorded {
    let at = slots::locate(subject.as_bytes(), slots);
    let fp = at.fp;
    let updated = slots::update(
        store,
        TABLE,
        &at,
        decode,
        |s: &Slot| s.fp == fp,
        |read| {
            let target = slots::target(read, |s: &Slot| s.fp == fp, |s: &Slot| s.is_idle(policy, now_ms));
            let Some(index) = target else {
                return Decision::Answer(Recorded::TableFull { retry_after_ms: ms_until_idle_of(read, now_ms) });
            };
            let mut slot = match read.get(index).and_then(|c| c.record) {
                Some(s) if s.fp == fp => {
                    if let Some(ms) = s.blocked_for(now_ms) {
                        return Decision::Answer(Recorded::AlreadyBlocked { retry_after_ms: ms });
                    }
                    s
                }
                _ => Slot::fresh(fp, policy, now_ms),
            };
            slot.advance(policy, now_ms);
            window::add(&mut slot.counts, slot.head);
            let failures = slot.total();
            let blocked = failures >= policy.max_failures;
            if blocked {
                slot.blocked_until = now_ms.saturating_add(policy.block_ms);
            }
            let answer = if blocked {
                Recorded::Blocked { retry_after_ms: policy.block_ms }
            } else {
                Recorded::Counted { failures }
            };
            Decision::Write { index, bytes: encode(&slot).to_vec(), answer }
        },
    );
    match updated {
        Updated::Done(r) => r,
        Updated::Contended => Recorded::Contended,
    }
}

/// Records a successful login of `subject` (call it for the **username** subject only):
/// clears its failures so earlier typos do not linger. A blocked subject stays blocked, and a
/// subject without a slot claims none. Returns true when a count was cleared.
pub fn record_success(store: &dyn SharedStore, slots: u64, subject: &str, policy: &Policy, now_ms: u64) -> bool {
    let at = slots::locate(subject.as_bytes(), slots);
    let fp = at.fp;
    let updated = slots::update(
        store,
        TABLE,
        &at,
        decode,
        |s: &Slot| s.fp == fp,
        |read| {
            let Some((index, mut slot)) =
                read.iter().enumerate().find_map(|(i, c)| c.record.filter(|s| s.fp == fp).map(|s| (i, s)))
            else {
                return Decision::Answer(false);
            };
            if slot.blocked_for(now_ms).is_some() || slot.total() == 0 {
                return Decision::Answer(false);
            }
            slot.advance(policy, now_ms);
            slot.counts = [0; BUCKETS];
            Decision::Write { index, bytes: encode(&slot).to_vec(), answer: true }
        },
    );
    updated == Updated::Done(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::store::{CasMismatch, MemStore};
    use std::cell::Cell;

    const P: Policy = Policy { max_failures: 5, window_ms: 60_000, block_ms: 300_000 };
    const SLOTS: u64 = 1024;

    fn fail_n(s: &MemStore, subject: &str, n: u64, now: u64) -> Recorded {
        let mut last = Recorded::Contended;
        for _ in 0..n {
            last = record_failure(s, SLOTS, subject, &P, now);
        }
        last
    }

    #[test]
    fn n_failures_block_and_the_block_lifts() {
        let s = MemStore::default();
        let u = user_subject("alice");
        for i in 1..5 {
            assert_eq!(record_failure(&s, SLOTS, &u, &P, 1_000 * i), Recorded::Counted { failures: i });
            assert_eq!(check(&s, SLOTS, &u, &P, 1_000 * i), Status::Open);
        }
        assert_eq!(record_failure(&s, SLOTS, &u, &P, 5_000), Recorded::Blocked { retry_after_ms: 300_000 });
        assert_eq!(check(&s, SLOTS, &u, &P, 5_000), Status::Blocked { retry_after_ms: 300_000 });
        assert_eq!(check(&s, SLOTS, &u, &P, 105_000), Status::Blocked { retry_after_ms: 200_000 });
        assert_eq!(record_failure(&s, SLOTS, &u, &P, 6_000), Recorded::AlreadyBlocked { retry_after_ms: 299_000 });
        assert_eq!(check(&s, SLOTS, &u, &P, 305_000), Status::Open, "lifted after the block time");
        // The window emptied long ago: a fresh allowance.
        assert_eq!(record_failure(&s, SLOTS, &u, &P, 305_000), Recorded::Counted { failures: 1 });
    }

    #[test]
    fn the_window_slides() {
        let s = MemStore::default();
        let u = user_subject("bob");
        // 4 failures at t=0, then one every 20 s: the early ones leave the window.
        fail_n(&s, &u, 4, 0);
        // Still within the window (≥ 60 s counted): the fifth blocks.
        assert!(matches!(record_failure(&s, SLOTS, &u, &P, 59_999), Recorded::Blocked { .. }));
        let s = MemStore::default();
        fail_n(&s, &u, 4, 0);
        // Past window + one sub-window (4 s): the four have expired.
        assert_eq!(record_failure(&s, SLOTS, &u, &P, 64_000), Recorded::Counted { failures: 1 });
        // Precision: every failure counts for at least the window.
        let s = MemStore::default();
        for t in [0u64, 3_999, 17_000, 40_000] {
            record_failure(&s, SLOTS, &u, &P, t);
        }
        assert!(matches!(record_failure(&s, SLOTS, &u, &P, 59_999), Recorded::Blocked { .. }));
    }

    #[test]
    fn a_failure_never_counts_for_less_than_the_window_or_much_more() {
        // Property over many start times: a failure at t is counted at t + window - 1 and
        // forgotten by t + window + sub.
        let sub = P.sub_ms();
        for t in (0..200_000u64).step_by(777) {
            let mut slot = Slot::fresh(1, &P, t);
            slot.advance(&P, t);
            let at = (slot.head % BUCKETS as u64) as usize;
            slot.counts[at] = 1;
            let mut later = slot;
            later.advance(&P, t + P.window_ms - 1);
            assert_eq!(later.total(), 1, "t={t}");
            let mut gone = slot;
            gone.advance(&P, t + P.window_ms + sub);
            assert_eq!(gone.total(), 0, "t={t}");
        }
    }

    #[test]
    fn a_block_does_not_clear_the_window() {
        let s = MemStore::default();
        let short = Policy { max_failures: 3, window_ms: 60_000, block_ms: 10_000 };
        let u = user_subject("carol");
        for _ in 0..3 {
            record_failure(&s, SLOTS, &u, &short, 0);
        }
        assert_eq!(check(&s, SLOTS, &u, &short, 10_000), Status::Open);
        assert_eq!(
            record_failure(&s, SLOTS, &u, &short, 10_000),
            Recorded::Blocked { retry_after_ms: 10_000 },
            "the window still holds 3 failures"
        );
    }

    #[test]
    fn users_and_addresses_are_independent() {
        let s = MemStore::default();
        let (alice, bob) = (user_subject("alice"), user_subject("bob"));
        let ip = addr_subject("192.0.2.7:55012");
        fail_n(&s, &alice, 5, 0);
        assert!(!check(&s, SLOTS, &alice, &P, 1).is_open());
        assert!(check(&s, SLOTS, &bob, &P, 1).is_open());
        assert!(check(&s, SLOTS, &ip, &P, 1).is_open());
        fail_n(&s, &ip, 5, 0);
        assert!(!check(&s, SLOTS, &ip, &P, 1).is_open());
        assert!(check(&s, SLOTS, &addr_subject("192.0.2.8"), &P, 1).is_open());
        assert!(check(&s, SLOTS, &bob, &P, 1).is_open());
    }

    #[test]
    fn success_clears_the_user_count_only_when_not_blocked() {
        let s = MemStore::default();
        let u = user_subject("dave");
        fail_n(&s, &u, 4, 0);
        assert!(record_success(&s, SLOTS, &u, &P, 1_000));
        assert_eq!(record_failure(&s, SLOTS, &u, &P, 2_000), Recorded::Counted { failures: 1 });
        fail_n(&s, &u, 4, 3_000);
        assert!(!record_success(&s, SLOTS, &u, &P, 4_000), "a block is never lifted early");
        assert!(!check(&s, SLOTS, &u, &P, 4_000).is_open());
        let before = s.len();
        assert!(!record_success(&s, SLOTS, &user_subject("never-failed"), &P, 0));
        assert_eq!(s.len(), before, "a success claims no slot");
    }

    #[test]
    fn subjects_are_normalised() {
        assert_eq!(user_subject(" Alice "), user_subject("alice"));
        assert_eq!(user_subject("ALICE"), "user:alice");
        assert_eq!(addr_subject("192.0.2.1:443"), "addr:192.0.2.1");
        assert_eq!(addr_subject("192.0.2.1"), "addr:192.0.2.1");
        assert_eq!(addr_subject("[2001:db8:1:2:3:4:5:6]:443"), "addr:2001:db8:1:2::/64");
        assert_eq!(addr_subject("2001:db8:1:2:ffff::1"), "addr:2001:db8:1:2::/64");
        assert_eq!(addr_subject("::ffff:192.0.2.1"), "addr:192.0.2.1");
        assert_eq!(addr_subject("unix:/tmp/sock"), "addr:unix:/tmp/sock");
        assert_eq!(addr_subject("[::1]:80"), "addr:0:0:0:0::/64");
    }

    #[test]
    fn keys_stay_bounded_after_100k_subjects_and_active_slots_are_never_evicted() {
        let s = MemStore::default();
        let slots = 256u64;
        let victim = user_subject("victim");
        fail_n_slots(&s, slots, &victim, 3, 0);
        let mut full = 0;
        for i in 0..100_000u64 {
            let now = i / 10; // 10 subjects per millisecond: everything stays in the window
            match record_failure(&s, slots, &user_subject(&format!("spray-{i}")), &P, now) {
                Recorded::TableFull { retry_after_ms } => {
                    assert!(retry_after_ms > 0);
                    full += 1;
                }
                Recorded::Counted { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(s.len() as u64 <= slots, "{} keys > {slots} slots", s.len());
        assert!(full > 0, "the table filled and refused rather than evicting");
        // The victim's three failures survived the flood: two more block.
        assert_eq!(record_failure(&s, slots, &victim, &P, 10_000), Recorded::Counted { failures: 4 });
        assert!(matches!(record_failure(&s, slots, &victim, &P, 10_000), Recorded::Blocked { .. }));
        // No raw username in any key.
        for i in 0..slots {
            assert!(slot_key(i).starts_with("lockout."));
        }
    }

    #[test]
    fn a_full_table_refuses_unknown_subjects_until_a_slot_is_idle() {
        let s = MemStore::default();
        // One slot: every subject competes for it.
        record_failure(&s, 1, "user:x", &P, 0);
        let st = check(&s, 1, "user:y", &P, 0);
        assert!(matches!(st, Status::TableFull { retry_after_ms } if retry_after_ms > 60_000), "{st:?}");
        assert!(matches!(record_failure(&s, 1, "user:y", &P, 0), Recorded::TableFull { .. }));
        // x's failure left the window: the slot is idle and reusable.
        assert_eq!(check(&s, 1, "user:y", &P, 64_000), Status::Open);
        assert_eq!(record_failure(&s, 1, "user:y", &P, 64_000), Recorded::Counted { failures: 1 });
        // A blocked slot is never reused before its block ends.
        let s = MemStore::default();
        fail_n_slots(&s, 1, "user:x", 5, 0);
        assert!(matches!(check(&s, 1, "user:y", &P, 100_000), Status::TableFull { retry_after_ms: 200_000 }));
        assert_eq!(check(&s, 1, "user:y", &P, 300_000), Status::Open);
    }

    fn fail_n_slots(s: &MemStore, slots: u64, subject: &str, n: u64, now: u64) {
        for _ in 0..n {
            record_failure(s, slots, subject, &P, now);
        }
    }

    #[test]
    fn policy_change_resets_counts_but_not_blocks() {
        let s = MemStore::default();
        fail_n(&s, "user:e", 4, 0);
        let other = Policy { max_failures: 5, window_ms: 120_000, block_ms: 300_000 };
        assert_eq!(record_failure(&s, SLOTS, "user:e", &other, 1_000), Recorded::Counted { failures: 1 });
    }

    /// A store whose CAS always fails: the loop must stop and report contention.
    struct Hostile(Cell<u32>);
    impl SharedStore for Hostile {
        fn get(&self, _: &str) -> (Option<Vec<u8>>, u32) {
            (None, 9)
        }
        fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), CasMismatch> {
            self.0.set(self.0.get() + 1);
            Err(CasMismatch)
        }
    }

    #[test]
    fn cas_retries_are_bounded() {
        let h = Hostile(Cell::new(0));
        assert_eq!(record_failure(&h, 4, "user:a", &P, 0), Recorded::Contended);
        assert_eq!(h.0.get(), MAX_CAS_RETRIES);
    }

    #[test]
    fn slots_round_trip_and_garbage_is_empty() {
        let mut counts = [0u32; BUCKETS];
        counts[3] = 7;
        let slot = Slot { fp: 3, sub_ms: 4_000, head: 99, blocked_until: 5, counts };
        assert_eq!(decode(&encode(&slot)), Some(slot));
        assert_eq!(decode(b"garbage"), None);
        // A garbage value is an empty slot, claimable.
        let s = MemStore::default();
        let at = slots::locate(b"user:g", 1);
        s.set(&slot_key(at.candidates()[0]), b"garbage", 0).unwrap();
        assert_eq!(record_failure(&s, 1, "user:g", &P, 0), Recorded::Counted { failures: 1 });
    }
}
