//! The one lease over shared data: at most one live holder of a key across workers, until it
//! releases the lease or its hold time passes (a crashed or slow holder never blocks forever).
//!
//! The record is the holder's id (up to 32 bytes: a token digest, or empty when any worker may
//! hold it), the writer's id ([`SharedStore::writer_id`], u64 LE) and the expiry (u64 LE, Unix
//! ms). A first write (CAS 0) is unconditional in the Proxy-Wasm ABI (Envoy's adapter makes it
//! create-if-absent, `HostStore::set`), so a take is confirmed by reading the record back; the writer's id makes two workers' records differ even when they
//! wrote the same holder in the same millisecond (without it both read back "their" record and
//! both held the lease).

use super::SharedStore;

/// The longest holder id.
pub const MAX_HOLDER: usize = 32;

/// What [`try_take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The lease is ours until the hold time passes or [`release`].
    Taken,
    /// A live lease is held: by the same holder id (`same`), or by another.
    Held { same: bool },
}

fn decode(v: &[u8]) -> Option<(&[u8], u64)> {
    let split = v.len().checked_sub(16)?;
    if split > MAX_HOLDER {
        return None;
    }
    let (holder, rest) = v.split_at(split);
    Some((holder, u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?)))
}

fn encode(holder: &[u8], writer: u64, expires_ms: u64) -> Vec<u8> {
    let holder = holder.get(..MAX_HOLDER).unwrap_or(holder);
    let mut v = Vec::with_capacity(holder.len() + 16);
    v.extend_from_slice(holder);
    v.extend_from_slice(&writer.to_le_bytes());
    v.extend_from_slice(&expires_ms.to_le_bytes());
    v
}

/// Tries to take the lease at `key` for `holder` until `now_ms + hold_ms`.
pub fn try_take(store: &dyn SharedStore, key: &str, holder: &[u8], now_ms: u64, hold_ms: u64) -> Lease {
    let holder = holder.get(..MAX_HOLDER).unwrap_or(holder);
    let live = |v: Option<Vec<u8>>| -> Option<bool> {
        let v = v?;
        let (h, expires_ms) = decode(&v)?;
        (expires_ms > now_ms).then_some(h == holder)
    };
    let (value, cas) = store.get(key);
    if let Some(same) = live(value) {
        return Lease::Held { same };
    }
    let mine = encode(holder, store.writer_id(), now_ms.saturating_add(hold_ms));
    if store.set(key, &mine, cas).is_ok() {
        if cas != 0 {
            return Lease::Taken;
        }
        // A first write is unconditional: confirm ours is the record that held.
        let (back, _) = store.get(key);
        if back.as_deref() == Some(mine.as_slice()) {
            return Lease::Taken;
        }
        return Lease::Held { same: live(back).unwrap_or(false) };
    }
    // Lost the race: someone else just took it, perhaps the same holder id.
    let (value, _) = store.get(key);
    Lease::Held { same: live(value).unwrap_or(false) }
}

/// True when a live lease is held at `key` (by anyone), without taking it.
pub fn held(store: &dyn SharedStore, key: &str, now_ms: u64) -> bool {
    store.get(key).0.as_deref().and_then(decode).is_some_and(|(_, expires_ms)| expires_ms > now_ms)
}

/// Releases `holder`'s lease at `key` early (best effort); does nothing when another holds it.
pub fn release(store: &dyn SharedStore, key: &str, holder: &[u8]) {
    let holder = holder.get(..MAX_HOLDER).unwrap_or(holder);
    let (value, cas) = store.get(key);
    if value.as_deref().and_then(decode).is_some_and(|(h, _)| h == holder) {
        let _ = store.set(key, &encode(holder, store.writer_id(), 0), cas);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::MemStore;

    #[test]
    fn exclusive_until_expiry_or_release() {
        let s = MemStore::default();
        assert_eq!(try_take(&s, "l", b"", 1000, 500), Lease::Taken);
        assert_eq!(try_take(&s, "l", b"", 1200, 500), Lease::Held { same: true });
        assert_eq!(try_take(&s, "l", b"x", 1200, 500), Lease::Held { same: false });
        assert_eq!(try_take(&s, "l", b"", 1500, 500), Lease::Taken, "expired lease can be taken");
        release(&s, "l", b"other");
        assert_eq!(try_take(&s, "l", b"", 1501, 500), Lease::Held { same: true }, "only the holder releases");
        release(&s, "l", b"");
        assert_eq!(try_take(&s, "l", b"", 1501, 500), Lease::Taken);
    }

    /// Another worker's unconditional first write lands right after ours (same holder, same
    /// millisecond): the read-back must show we lost.
    struct Racing<'a> {
        inner: &'a MemStore,
        id: u64,
        rival: u64,
    }

    impl SharedStore for Racing<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), crate::store::CasMismatch> {
            self.inner.set(key, value, cas)?;
            if cas == 0 {
                // The rival wrote the same record but for its writer id.
                let mut theirs = value.to_vec();
                let at = theirs.len() - 16;
                theirs[at..at + 8].copy_from_slice(&self.rival.to_le_bytes());
                self.inner.set(key, &theirs, 0)?;
            }
            Ok(())
        }
        fn writer_id(&self) -> u64 {
            self.id
        }
    }

    #[test]
    fn two_first_writes_in_the_same_millisecond_leave_one_holder() {
        let s = MemStore::default();
        let a = Racing { inner: &s, id: 1, rival: 2 };
        assert_eq!(try_take(&a, "l", b"digest", 1000, 500), Lease::Held { same: true }, "the rival's write held");
    }

    #[test]
    fn garbage_records_are_free() {
        let s = MemStore::default();
        s.set("l", &[1, 2, 3], 0).unwrap();
        assert_eq!(try_take(&s, "l", b"a", 10, 5), Lease::Taken);
        s.set("l", &[0; 50], 0).unwrap();
        assert_eq!(try_take(&s, "l", b"a", 10, 5), Lease::Taken);
    }
}
