//! The floor of any Wasm filter: a proxy-wasm (ABI 0.2.1) HTTP filter written against the raw
//! ABI, without the Rust SDK. It exports exactly `proxy_abi_version_0_2_1`,
//! `proxy_on_memory_allocate`, `proxy_on_context_create`, `proxy_on_vm_start`,
//! `proxy_on_configure` and `proxy_on_request_headers` (the host skips every callback a module
//! does not export), reads the `authorization` request header, frees it, and continues.

#![allow(clippy::missing_safety_doc)]

use std::alloc::{alloc, dealloc, Layout};

const MAP_REQUEST_HEADERS: u32 = 0;
const ACTION_CONTINUE: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host's buffers come from here (and are freed with the same layout below).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(size.max(1), 1) else { return std::ptr::null_mut() };
    unsafe { alloc(layout) }
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent_context_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_context_id: u32, _plugin_configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _num_headers: usize, _end_of_stream: u32) -> u32 {
    let key = b"authorization";
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    unsafe {
        let _ = proxy_get_header_map_value(MAP_REQUEST_HEADERS, key.as_ptr(), key.len(), &mut data, &mut size);
        if !data.is_null() {
            if let Ok(layout) = Layout::from_size_align(size.max(1), 1) {
                dealloc(data, layout);
            }
        }
    }
    ACTION_CONTINUE
}
