//! Header mutations, local replies and properties through the raw Proxy-Wasm ABI.
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
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_get_header_map_pairs(map_type: MapType, return_map_data: *mut *mut u8, return_map_size: *mut usize)
        -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
}

/// Writes shared data under `cas` (0: unconditional); false for any refusal (the SDK's
/// wrapper panics on a status other than Ok and CasMismatch, e.g. a host that answers
/// NotFound to a CAS on a missing key).
pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> bool {
    // SAFETY: both pointers come from live slices with their exact lengths; the host copies
    // the bytes before returning.
    unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) == 0 }
}

/// A header map as the host serialises it (one buffer; parse with
/// [`crate::request::Headers::from_wire`]). `None` when the host refused; an empty map is
/// `Some` of an empty buffer.
pub(crate) fn header_pairs(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer it obtained from this module's
    // `proxy_on_memory_allocate` (the SDK's, which allocates a `Vec<u8>` of exactly `size`
    // bytes and forgets it) and its size; ownership passes to the returned `Vec`.
    unsafe {
        if proxy_get_header_map_pairs(map, &mut data, &mut size) != 0 {
            return None;
        }
        if data.is_null() {
            return Some(Vec::new());
        }
        Some(Vec::from_raw_parts(data, size, size))
    }
}

/// Serialises header pairs the way the ABI expects: a u32 count, then each pair's key and
/// value lengths (u32 LE), then each key and value followed by a NUL.
fn serialize_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let size: usize = 4 + pairs.iter().map(|(k, v)| 8 + k.len() + v.len() + 2).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(0).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&u32::try_from(k.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(0).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Sends a local reply on the current context; false when the host refused (the SDK's
/// wrapper panics on any status it does not expect).
pub(crate) fn send_response(status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
    let map = serialize_pairs(headers);
    let details = b"portcullis";
    // SAFETY: every pointer comes from a live slice with its exact length; the host copies
    // the bytes before returning.
    unsafe {
        proxy_send_local_response(
            u32::from(status),
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        ) == 0
    }
}

/// Sets a property (filter state) by its one-segment path; false when the host refused.
pub(crate) fn set_property(name: &str, value: &[u8]) -> bool {
    // A property path is its segments joined by NUL: one segment is the name itself.
    // SAFETY: as above.
    unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) == 0 }
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
