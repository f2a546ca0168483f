//! The bench Envoy's listeners: native filters (`jwt_authn`, `api_key_auth`,
//! `local_ratelimit`), the no-op wasm filter, Portcullis configurations (each plugin and VM
//! named after its listener), and starting Envoy so that a configuration the module refuses
//! is recorded and left out instead of stopping the bench.

use std::collections::BTreeMap;
use std::path::Path;

use portcullis_harness::envoy::{bootstrap, listener, portcullis_filter_from};
use portcullis_harness::envoy::{Envoy, Options};
use serde_json::{json, Value};

use crate::{sha256_hex, Settings, AUDIENCE, ISSUER};

/// One listener of the bench Envoy.
pub(crate) struct Listener {
    pub(crate) name: &'static str,
    pub(crate) filters: Vec<Value>,
    /// A Portcullis plugin on this listener (the plugin is named after the listener).
    pub(crate) portcullis: bool,
}

pub(crate) fn bearer_source() -> Value {
    json!([{"name": "authorization", "value_prefix": "Bearer "}])
}

pub(crate) fn native_jwt(jwks: &str, cache: bool) -> Value {
    let mut provider = json!({
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": jwks},
        "from_headers": bearer_source(),
        "forward": false
    });
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": 100});
    }
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]
        }
    })
}

pub(crate) fn native_api_key(keys: &[String]) -> Value {
    let credentials: Vec<Value> =
        keys.iter().enumerate().map(|(i, k)| json!({"key": k, "client": format!("client-{i}")})).collect();
    json!({
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": credentials,
            "key_sources": [{"header": "x-api-key"}]
        }
    })
}

/// A token bucket so large that nothing is limited: the allowed path.
pub(crate) fn native_local_ratelimit() -> Value {
    let all = json!({"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "bench_rl"});
    json!({
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench_rl",
            "token_bucket": {"max_tokens": 1_000_000_000u64, "tokens_per_fill": 1_000_000_000u64, "fill_interval": "1s"},
            "filter_enabled": all,
            "filter_enforced": all
        }
    })
}

/// A no-op Wasm filter (the SDK one or the raw one), its plugin and VM named `name`.
pub(crate) fn noop_filter(path: &Path, name: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": path.to_string_lossy()}}
                }
            }
        }
    })
}

/// The Portcullis filter, its plugin and VM named after the listener (so a refusal in the
/// log names the listener, and one refused configuration cannot affect another).
pub(crate) fn portcullis(wasm: &Path, name: &str, config: &Value) -> Value {
    let mut f = portcullis_filter_from(wasm, config, &[]);
    f["typed_config"]["config"]["name"] = json!(name);
    f["typed_config"]["config"]["vm_config"]["vm_id"] = json!(name);
    f
}

pub(crate) fn pc_jwt(jwks: &str) -> Value {
    json!({
        "providers": {"bench": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "local_jwks": {"inline_string": jwks},
            "from_headers": bearer_source()
        }}
    })
}

pub(crate) fn pc_api_keys(keys: &[String]) -> Value {
    let clients: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"client_id": format!("client-{i}"), "keys_sha256": [sha256_hex(k)]}))
        .collect();
    json!({"from_headers": ["x-api-key"], "clients": clients})
}

/// A plan that never limits (the allowed path), the default for every client.
pub(crate) fn pc_rate_limit() -> Value {
    json!({
        "plans": {"bench": {"requests": 1_000_000_000u64, "per": "1s", "burst": 1_000_000_000u64}},
        "default_plan": "bench"
    })
}

/// Starts the bench Envoy. A Portcullis listener whose configuration the module refuses is
/// recorded in `refused` and left out (Envoy is started again without it).
pub(crate) fn start_bench_envoy(
    s: &Settings,
    listeners: &[Listener],
    clusters: &[Value],
    refused: &mut BTreeMap<&'static str, String>,
) -> Result<Envoy, String> {
    let opts = Options {
        concurrency: 1,
        wrapper: vec!["taskset".into(), "-c".into(), s.envoy_cpu.clone()],
        log_level: "warning".into(),
    };
    for _ in 0..=listeners.len() {
        let active: Vec<Value> = listeners
            .iter()
            .filter(|l| !refused.contains_key(l.name))
            .map(|l| listener(l.name, l.filters.clone(), None))
            .collect();
        let boot = bootstrap(active, clusters.to_vec());
        let (log, envoy) = match Envoy::start_with(&boot, &opts) {
            Ok(e) => (e.log(), Some(e)),
            Err(log) => (log, None),
        };
        let found = find_refusals(&log, listeners);
        let new: Vec<_> = found.into_iter().filter(|(n, _)| !refused.contains_key(n)).collect();
        if new.is_empty() {
            return envoy.ok_or_else(|| format!("Envoy did not start:\n{}", tail(&log, 40)));
        }
        drop(envoy);
        for (n, msg) in new {
            println!("   {n}: configuration refused by the module: {msg}");
            refused.insert(n, msg);
        }
    }
    Err("Envoy did not start (every Portcullis configuration refused?)".into())
}

/// `wasm log <plugin> ...: invalid configuration: <message>` lines → (listener, message).
pub(crate) fn find_refusals(log: &str, listeners: &[Listener]) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for line in log.lines() {
        let Some(i) = line.find("invalid configuration: ") else { continue };
        let msg = line[i + "invalid configuration: ".len()..].trim().to_string();
        let Some(j) = line.find("wasm log ") else { continue };
        // `wasm log <root_id> <plugin name>: ...` (the order differs between Envoy versions).
        let prefix = line[j + "wasm log ".len()..].split(':').next().unwrap_or_default();
        let words: Vec<&str> = prefix.split_whitespace().collect();
        if let Some(l) = listeners.iter().find(|l| l.portcullis && words.contains(&l.name)) {
            if !out.iter().any(|(n, _)| *n == l.name) {
                out.push((l.name, msg));
            }
        }
    }
    out
}

pub(crate) fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_listener() {
        let ls = vec![Listener { name: "pc_jwt_rl", filters: vec![], portcullis: true }];
        let log = "[2025][warning][wasm] [source/extensions/common/wasm/context.cc:1195] wasm log pc_jwt_rl portcullis pc_jwt_rl: invalid configuration: rate_limit: not yet\n";
        assert_eq!(find_refusals(log, &ls), vec![("pc_jwt_rl", "rate_limit: not yet".to_string())]);
    }
}
