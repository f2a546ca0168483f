//! A sliding-window count in integers: a ring of `N` sub-window counters, the newest at `head`
//! (`now / sub`). An event counts for at least `(N - 1) × sub` and less than `N × sub`
//! milliseconds. Used by the lockout and by trigger rules.

/// Moves the ring to sub-window index `idx`, zeroing the sub-windows that left it. A clock a
/// little behind `head` (another worker's) writes into the newest sub-window.
pub fn advance<const N: usize>(counts: &mut [u32; N], head: &mut u64, idx: u64) {
    if idx <= *head {
        return;
    }
    let n = N as u64;
    if idx - *head >= n {
        *counts = [0; N];
    } else {
        for b in *head + 1..=idx {
            if let Some(c) = counts.get_mut((b % n) as usize) {
                *c = 0;
            }
        }
    }
    *head = idx;
}

/// Counts one event in the newest sub-window.
pub fn add<const N: usize>(counts: &mut [u32; N], head: u64) {
    if let Some(c) = counts.get_mut((head % N as u64) as usize) {
        *c = c.saturating_add(1);
    }
}

/// The events in the window.
pub fn total<const N: usize>(counts: &[u32; N]) -> u64 {
    counts.iter().map(|c| u64::from(*c)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides() {
        let (mut c, mut h) = ([0u32; 4], 10u64);
        add(&mut c, h);
        advance(&mut c, &mut h, 11);
        add(&mut c, h);
        assert_eq!(total(&c), 2);
        advance(&mut c, &mut h, 13);
        assert_eq!(total(&c), 2, "still within 4 sub-windows");
        advance(&mut c, &mut h, 14);
        assert_eq!(total(&c), 1, "the first left");
        advance(&mut c, &mut h, 12);
        assert_eq!(h, 14, "a clock behind does not move the ring back");
        advance(&mut c, &mut h, 100);
        assert_eq!(total(&c), 0);
    }
}
