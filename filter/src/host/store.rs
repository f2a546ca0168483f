//! proxy-wasm shared data behind the core's [`SharedStore`] port.

use proxy_wasm::hostcalls;

use crate::store::{CasMismatch, SharedStore};

pub(crate) struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        match hostcalls::get_shared_data(key) {
            Ok((v, cas)) => (v, cas.unwrap_or(0)),
            Err(_) => (None, 0),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        let cas = if cas == 0 { None } else { Some(cas) };
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|_| CasMismatch)
    }

    /// Random per VM (std's `RandomState` is keyed from WASI `random_get`), drawn once.
    fn writer_id(&self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *ID.get_or_init(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            h.finish().max(1)
        })
    }
}
