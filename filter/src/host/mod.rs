//! The host adapter: the ONLY code that uses `proxy-wasm` (compiled for wasm32 only).
//!
//! * [`root`]: configuration, stats definitions, the tick that keeps remote key sets fresh,
//!   and their fetch callouts.
//! * [`http`]: one context per request, a small loop that feeds the core's
//!   [`crate::flow::Step`]s to Envoy.
//! * [`store`]: proxy-wasm shared data behind the core's [`crate::store::SharedStore`].
//! * [`native`]: Envoy's `verify_signature` foreign function behind
//!   [`crate::crypto::NativeVerifier`].
//!
//! Nothing here makes a security decision.

mod abi;
mod http;
mod native;
mod peer;
mod root;
mod store;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // Replace the SDK's hook: one critical line, prefixed so operators can grep for it.
    // A panic aborts the VM (panic = "abort"): every later request fails, so the core
    // denies panics by lint; this hook only makes a bug visible.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("portcullis: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|id| -> Box<dyn proxy_wasm::traits::RootContext> { Box::new(root::Root::new(id)) });
}}

/// Logs one line.
pub(crate) fn log(level: LogLevel, msg: &str) {
    // Envoy already prefixes "wasm log <plugin> <root_id>:".
    let _ = proxy_wasm::hostcalls::log(level, msg);
}

/// Unix time in milliseconds from the host clock.
pub(crate) fn now_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Dispatches a callout; the token on success.
pub(crate) fn dispatch(c: &crate::callout::Callout) -> Result<u32, String> {
    let mut headers: Vec<(&str, &str)> = vec![(":method", &c.method), (":path", &c.path), (":authority", &c.authority)];
    for (k, v) in &c.headers {
        headers.push((k, v));
    }
    proxy_wasm::hostcalls::dispatch_http_call(&c.cluster, headers, c.body.as_deref(), vec![], Duration::from_millis(c.timeout_ms))
        .map_err(|s| {
            format!(
                "callout to cluster {:?} could not start ({s:?}): is the cluster defined? (Istio names it outbound|<port>||<host>)",
                c.cluster
            )
        })
}

/// Reads the reply of the callout being answered.
pub(crate) fn read_reply(body_size: usize) -> crate::callout::Reply {
    use proxy_wasm::types::{BufferType, MapType};
    let headers: Vec<(String, String)> = proxy_wasm::hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let status = headers.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse::<u16>().ok());
    let body = if body_size > crate::callout::MAX_REPLY_BYTES {
        // Too large to accept: hand back an over-limit marker instead of reading it all.
        vec![0; crate::callout::MAX_REPLY_BYTES + 1]
    } else {
        proxy_wasm::hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    crate::callout::Reply { status, headers, body }
}
