//! Token-bucket maths, pure and in integers (SPEC C3).
//!
//! A plan allows `requests` per `per_ms`, bursting to `burst`. Tokens are kept scaled by
//! `per_ms` so that refill is exact integer arithmetic: every elapsed millisecond adds
//! `requests` scaled units; one token is `per_ms` units; the bucket holds at most
//! `burst × per_ms` units. Refill is lazy (computed from the timestamp of the last update):
//! there are no timers. All intermediate products are computed in `u128` and saturate, so
//! no input can overflow or panic.
//!
//! Invariants (property-tested):
//! * the level never exceeds the burst;
//! * over any interval of length `d` starting full, at most `burst + ⌊d·requests/per⌋`
//!   units of cost are admitted;
//! * `Retry-After` is never early: after waiting the advertised time, the same request is
//!   admitted (if nothing else consumed tokens meanwhile).

/// A plan's rate, as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u64,
    pub per_ms: u64,
    pub burst: u64,
}

/// A bucket's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Scaled level (tokens × per_ms).
    pub level: u64,
    /// When `level` was computed (Unix ms).
    pub at_ms: u64,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted; `remaining` whole tokens are left, and the bucket is full again in
    /// `full_in_ms`.
    Allow { remaining: u64, full_in_ms: u64 },
    /// Refused; enough tokens will be there in `retry_after_ms`.
    Deny { retry_after_ms: u64, full_in_ms: u64 },
}

fn sat(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Rate {
    /// Capacity in scaled units.
    pub fn capacity(self) -> u64 {
        sat(u128::from(self.burst) * u128::from(self.per_ms))
    }

    /// A full bucket at `now_ms`.
    pub fn full(self, now_ms: u64) -> Bucket {
        Bucket { level: self.capacity(), at_ms: now_ms }
    }

    /// The level at `now_ms` (lazy refill). A clock that went backwards refills nothing.
    pub fn level_at(self, b: Bucket, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(b.at_ms);
        let refilled = u128::from(b.level) + u128::from(elapsed) * u128::from(self.requests);
        sat(refilled.min(u128::from(self.capacity())))
    }

    /// True when the bucket is full at `now_ms` (its owner is idle: forgetting it loses
    /// nothing, since it would be full anyway).
    pub fn is_full(self, b: Bucket, now_ms: u64) -> bool {
        self.level_at(b, now_ms) >= self.capacity()
    }

    fn ms_to_refill(self, missing_units: u64) -> u64 {
        if missing_units == 0 || self.requests == 0 {
            return 0;
        }
        sat(u128::from(missing_units).div_ceil(u128::from(self.requests)))
    }

    /// Takes `cost` tokens at `now_ms`. Returns the new state (unchanged level on deny,
    /// but re-stamped) and the outcome.
    pub fn take(self, b: Bucket, cost: u64, now_ms: u64) -> (Bucket, Outcome) {
        // A bucket stamped in the future (another worker's clock ahead of ours) is read as
        // of its own stamp: time never runs backwards for a bucket.
        let now = now_ms.max(b.at_ms);
        let level = self.level_at(b, now);
        let need = sat(u128::from(cost) * u128::from(self.per_ms));
        let cap = self.capacity();
        if need <= level {
            let left = level - need;
            let state = Bucket { level: left, at_ms: now };
            (state, Outcome::Allow { remaining: left / self.per_ms.max(1), full_in_ms: self.ms_to_refill(cap - left) })
        } else {
            let retry = if need > cap { u64::MAX } else { self.ms_to_refill(need - level) };
            (
                Bucket { level, at_ms: now },
                Outcome::Deny { retry_after_ms: retry, full_in_ms: self.ms_to_refill(cap - level) },
            )
        }
    }
}

/// Milliseconds → whole seconds for `Retry-After`, rounded up (never early), at least 1.
pub fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FREE: Rate = Rate { requests: 100, per_ms: 60_000, burst: 100 };

    #[test]
    fn burst_then_refill() {
        let mut b = FREE.full(0);
        for i in 0..100 {
            let (nb, o) = FREE.take(b, 1, 0);
            assert!(matches!(o, Outcome::Allow { remaining, .. } if remaining == 99 - i));
            b = nb;
        }
        let (b, o) = FREE.take(b, 1, 0);
        assert_eq!(o, Outcome::Deny { retry_after_ms: 600, full_in_ms: 60_000 });
        assert!(matches!(FREE.take(b, 1, 599).1, Outcome::Deny { .. }));
        assert!(matches!(FREE.take(b, 1, 600).1, Outcome::Allow { remaining: 0, .. }));
        assert_eq!(retry_after_secs(600), 1);
        assert_eq!(retry_after_secs(1001), 2);
    }

    #[test]
    fn cost_larger_than_burst_never_passes() {
        let (_, o) = FREE.take(FREE.full(0), 101, 0);
        assert!(matches!(o, Outcome::Deny { retry_after_ms: u64::MAX, .. }));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let r = Rate { requests: 1_000_000_000, per_ms: 86_400_000, burst: 1_000_000_000 };
        let (b, _) = r.take(r.full(u64::MAX - 5), u64::MAX, u64::MAX);
        let _ = r.take(b, 1, 0);
        let z = Rate { requests: 1, per_ms: 1000, burst: 1 };
        let _ = z.take(Bucket { level: u64::MAX, at_ms: 0 }, 0, u64::MAX);
    }

    proptest! {
        #[test]
        fn never_above_burst_and_bounded_admission(
            requests in 1u64..2000, per_s in 1u64..120, burst in 1u64..500,
            steps in proptest::collection::vec((0u64..3000, 1u64..4), 1..200)
        ) {
            let r = Rate { requests, per_ms: per_s * 1000, burst };
            let mut b = r.full(0);
            let mut now = 0u64;
            let mut admitted: u128 = 0;
            for (dt, cost) in steps {
                now += dt;
                let (nb, o) = r.take(b, cost, now);
                prop_assert!(nb.level <= r.capacity());
                if let Outcome::Allow { .. } = o {
                    admitted += u128::from(cost) * u128::from(r.per_ms);
                }
                b = nb;
            }
            let bound = u128::from(r.capacity()) + u128::from(now) * u128::from(requests);
            prop_assert!(admitted <= bound, "admitted {} > bound {}", admitted, bound);
        }

        #[test]
        fn retry_after_is_never_early(
            requests in 1u64..2000, per_s in 1u64..120, burst in 1u64..500,
            drain in 0u64..600, cost in 1u64..5, start in 0u64..1_000_000
        ) {
            let r = Rate { requests, per_ms: per_s * 1000, burst };
            let mut b = r.full(start);
            for _ in 0..drain { b = r.take(b, 1, start).0; }
            let (b, o) = r.take(b, cost, start);
            if let Outcome::Deny { retry_after_ms, .. } = o {
                if retry_after_ms != u64::MAX {
                    let at = matches!(r.take(b, cost, start + retry_after_ms).1, Outcome::Allow { .. });
                    prop_assert!(at, "admitted once the advertised time has passed");
                    if retry_after_ms > 0 {
                        let before = matches!(r.take(b, cost, start + retry_after_ms - 1).1, Outcome::Deny { .. });
                        prop_assert!(before, "not later than needed either");
                    }
                    let secs = retry_after_secs(retry_after_ms);
                    let whole = matches!(r.take(b, cost, start + secs * 1000).1, Outcome::Allow { .. });
                    prop_assert!(whole, "whole-second Retry-After is never early");
                }
            }
        }

        #[test]
        fn refills_at_the_rate(requests in 1u64..1000, per_s in 1u64..60, burst in 1u64..100, wait in 0u64..200_000) {
            let r = Rate { requests, per_ms: per_s * 1000, burst };
            let mut b = r.full(0);
            while let (nb, Outcome::Allow { .. }) = r.take(b, 1, 0) { b = nb; }
            let expect = (u128::from(wait) * u128::from(requests)).min(u128::from(r.capacity()));
            prop_assert_eq!(u128::from(r.level_at(b, wait)), expect);
        }
    }
}
