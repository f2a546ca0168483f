//! The shared-data port: a process-wide key/value store with compare-and-swap, shared by all
//! Envoy workers of one VM (Proxy-Wasm shared data). The core only reads and CASes; the host
//! adapter implements it with `get_shared_data` / `set_shared_data`.
//!
//! Shared data has no TTL and no delete on every host, so keys are few and fixed (one per
//! provider and purpose, or one per table slot), and never contain secrets or timestamps.
//!
//! ## Namespaces (the only place key names are built)
//!
//! Every key is `portcullis.v<FORMAT_VERSION>.<fingerprint>.<name>`: the [`Namespace`] is a
//! fingerprint of the configuration the records depend on (a provider's key source and issuer,
//! the introspection endpoint and client, the rate-limit plans, the lockout policy), computed
//! when the configuration loads. Two filters whose configurations differ never read each
//! other's records, whatever their `vm_id` (Istio never sets one, so every WasmPlugin on a proxy
//! shares one shared-data space); two filters with the *same* settings for a capability share
//! its records (one key-set fetch, one bucket per client, across listeners). The format version
//! makes a module upgrade start from empty records instead of misreading old ones.

pub mod lease;
pub mod slots;
pub mod window;

use std::cell::RefCell;
use std::collections::HashMap;

/// A CAS write lost the race (someone else wrote in between).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;

/// Shared key/value store with compare-and-swap.
pub trait SharedStore {
    /// The value and its CAS token (0 when absent).
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32);
    /// Writes if the CAS token still matches. 0 (the key was absent when read) is a first
    /// write: create-if-absent where the host allows it (Envoy: `HostStore::set`), else
    /// unconditional — so callers confirm a first write by reading it back.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch>;
    /// An id of this writer (one per VM, random), so records that must tell writers apart —
    /// a lease confirmed by reading back an unconditional first write — never come out
    /// byte-identical from two workers that wrote in the same millisecond.
    fn writer_id(&self) -> u64 {
        0
    }
}

/// The layout version of every shared-data record; bump when any record format changes.
pub const FORMAT_VERSION: u32 = 3;

/// The key prefix of one configuration's records (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace(String);

impl Namespace {
    /// The namespace of records that depend on `parts` (each hashed with its length, so
    /// `["ab", "c"]` and `["a", "bc"]` differ).
    pub fn of(purpose: &str, parts: &[&str]) -> Namespace {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(purpose.as_bytes());
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        let d = h.finalize();
        let fp: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Namespace(format!("portcullis.v{FORMAT_VERSION}.{purpose}.{fp}."))
    }

    /// The full key of record `name` in this namespace.
    pub fn key(&self, name: &str) -> String {
        let mut k = String::with_capacity(self.0.len() + name.len());
        k.push_str(&self.0);
        k.push_str(name);
        k
    }
}

/// A store seen through one namespace: table code names its records (`rl.17`) and this
/// adapter prefixes them.
pub struct Scoped<'a> {
    store: &'a dyn SharedStore,
    ns: &'a Namespace,
}

impl<'a> Scoped<'a> {
    pub fn new(store: &'a dyn SharedStore, ns: &'a Namespace) -> Self {
        Scoped { store, ns }
    }
}

impl SharedStore for Scoped<'_> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        self.store.get(&self.ns.key(key))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        self.store.set(&self.ns.key(key), value, cas)
    }
}

/// The proxy's random salt: made by the first worker that asks (from `fresh`), shared by all
/// workers of the proxy through shared data, new at every proxy start (shared data does not
/// survive a restart). Salts the hashes that events carry instead of identities.
pub fn salt(store: &dyn SharedStore, fresh: impl FnOnce() -> [u8; 16]) -> [u8; 16] {
    let key = format!("portcullis.v{FORMAT_VERSION}.salt");
    let read = |v: Option<Vec<u8>>| v.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok());
    let (v, cas) = store.get(&key);
    if let Some(s) = read(v) {
        return s;
    }
    let mine = fresh();
    // Two first writers may race (CAS 0 is unconditional): whoever reads back after writing
    // uses what held, so every worker ends with the same salt.
    let _ = store.set(&key, &mine, cas);
    read(store.get(&key).0).unwrap_or(mine)
}

/// Adds one to the u64 counter at `key` (absent counts as 0) by compare-and-swap, retrying a
/// lost race at most [`slots::MAX_CAS_RETRIES`] times: concurrent bumps each land. The new
/// value, or `None` when every try lost.
pub fn bump(store: &dyn SharedStore, key: &str) -> Option<u64> {
    for _ in 0..slots::MAX_CAS_RETRIES {
        let (old, cas) = store.get(key);
        let next = old.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map_or(0, u64::from_le_bytes) + 1;
        if store.set(key, &next.to_le_bytes(), cas).is_ok() {
            return Some(next);
        }
    }
    None
}

/// An in-memory store for tests and hosts without shared data. CAS tokens count writes.
#[derive(Default)]
pub struct MemStore {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
}

impl MemStore {
    /// Number of keys held (the memory bound tests count these).
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }
}

impl SharedStore for MemStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        match self.map.borrow().get(key) {
            Some((v, c)) => (Some(v.clone()), *c),
            None => (None, 0),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        let mut m = self.map.borrow_mut();
        let current = m.get(key).map_or(0, |(_, c)| *c);
        if cas != 0 && cas != current {
            return Err(CasMismatch);
        }
        m.insert(key.to_string(), (value.to_vec(), current.wrapping_add(1).max(1)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_count_from_zero_and_survive_a_lost_race() {
        let s = MemStore::default();
        assert_eq!(bump(&s, "v"), Some(1));
        assert_eq!(bump(&s, "v"), Some(2));
        /// Another writer's bump lands between our read and our write, once.
        struct Rival<'a>(&'a MemStore, std::cell::Cell<bool>);
        impl SharedStore for Rival<'_> {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
                self.0.get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
                if self.1.replace(false) {
                    bump(self.0, key);
                }
                self.0.set(key, value, cas)
            }
        }
        let r = Rival(&s, std::cell::Cell::new(true));
        assert_eq!(bump(&r, "v"), Some(4), "ours retried after the rival's 3");
        assert_eq!(s.get("v").0, Some(4u64.to_le_bytes().to_vec()));
    }

    #[test]
    fn one_salt_per_proxy() {
        let s = MemStore::default();
        let a = salt(&s, || [1; 16]);
        let b = salt(&s, || [2; 16]);
        assert_eq!((a, b), ([1; 16], [1; 16]), "the second worker takes the first one's salt");
        assert_ne!(salt(&MemStore::default(), || [3; 16]), a, "a new proxy has a new salt");
    }

    #[test]
    fn namespaces_separate_configurations() {
        let a = Namespace::of("introspect", &["idp", "/a", "gateway"]);
        let b = Namespace::of("introspect", &["idp", "/b", "gateway"]);
        assert_ne!(a, b);
        assert_eq!(a, Namespace::of("introspect", &["idp", "/a", "gateway"]));
        assert_ne!(Namespace::of("x", &["ab", "c"]), Namespace::of("x", &["a", "bc"]));
        assert!(a.key("rl.1").starts_with(&format!("portcullis.v{FORMAT_VERSION}.introspect.")));
        let s = MemStore::default();
        Scoped::new(&s, &a).set("k", b"1", 0).unwrap();
        assert_eq!(Scoped::new(&s, &b).get("k").0, None);
        assert_eq!(Scoped::new(&s, &a).get("k").0.as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn cas_detects_races() {
        let s = MemStore::default();
        s.set("k", b"a", 0).unwrap();
        let (_, c1) = s.get("k");
        s.set("k", b"b", c1).unwrap();
        assert_eq!(s.set("k", b"c", c1), Err(CasMismatch));
    }
}
