//! proxy-wasm shared data behind the core's [`SharedStore`] port.

use proxy_wasm::hostcalls;

use super::abi;
use crate::store::{CasMismatch, SharedStore};

pub(crate) struct HostStore;

/// The CAS of a create-if-absent write: cpp-host hands out CAS values from one counter per
/// proxy, starting at 1, so an existing key carries this value only after 4,294,967,295
/// shared-data writes, and then only if it was that write — and even then the write just
/// overwrites, as CAS 0 always did.
const CREATE: u32 = u32::MAX;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        match hostcalls::get_shared_data(key) {
            Ok((v, cas)) => (v, cas.unwrap_or(0)),
            Err(_) => (None, 0),
        }
    }

    /// A first write (`cas` 0: the key was absent when read) is made create-if-absent. The ABI
    /// makes CAS 0 unconditional, so two workers that both read "absent" would both write and
    /// both read back their own record when the writes do not interleave with the reads (two
    /// lease holders, two introspections of one token). proxy-wasm-cpp-host (Envoy, Istio)
    /// checks a non-zero CAS only against an existing key and creates a missing one, so
    /// [`CREATE`] creates the key if it is still absent and refuses if another worker created
    /// it meanwhile. A host that refuses a non-zero CAS for a missing key gets the
    /// unconditional write instead (and the core's read-back, as before).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        let written = match cas {
            0 => {
                abi::set_shared_data(key, value, CREATE)
                    || (self.get(key).0.is_none() && abi::set_shared_data(key, value, 0))
            }
            cas => abi::set_shared_data(key, value, cas),
        };
        if written {
            Ok(())
        } else {
            Err(CasMismatch)
        }
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
