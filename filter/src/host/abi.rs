//! Header mutations through the raw proxy-wasm ABI.
//!
//! The SDK's wrappers (`hostcalls::set_map_value` and friends) panic on any status they do
//! not expect — for example when Envoy no longer holds the request headers (after they were
//! passed on) — and a panic aborts the VM for every later request. These wrappers return
//! whether the host accepted the change instead.
#![allow(unsafe_code)] // The ABI is C: raw pointers and lengths, nothing else.

use proxy_wasm::types::MapType;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: MapType, key_data: *const u8, key_size: usize) -> u32;
}

/// Sets (replacing) a header; false when the host refused.
pub(crate) fn set_header(map: MapType, name: &str, value: &str) -> bool {
    // SAFETY: both pointers come from live `&str`s with their exact lengths; the host copies
    // the bytes before returning and keeps no reference.
    unsafe { proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len()) == 0 }
}

/// Removes every value of a header; false when the host refused.
pub(crate) fn remove_header(map: MapType, name: &str) -> bool {
    // SAFETY: as above.
    unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) == 0 }
}
