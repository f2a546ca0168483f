//! Memory at Istio's default of two workers (`--concurrency 2`), after traffic: Envoy's RSS
//! with no filter, with the raw no-op Wasm filter (the true floor), with the SDK no-op filter,
//! with Portcullis holding one JWT provider, and with Portcullis holding 10,000 API keys and a
//! rate limit after 100,000 distinct rate-limited clients — both for `dist/portcullis.wasm` and
//! for the native-crypto-only `dist/portcullis-native.wasm`. Each is a fresh Envoy sent the same
//! traffic (distinct ES256 tokens, each with its own `client_id`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use portcullis_harness::envoy::{bootstrap, listener, repo_root};
use portcullis_harness::envoy::{Envoy, Options};
use portcullis_harness::http;
use serde_json::{json, Value};

use crate::configs::{bearer_source, find_refusals, noop_filter, pc_api_keys, pc_rate_limit, portcullis, tail};
use crate::scenarios::Load;
use crate::tokens::{sign_tokens, token_file, Alg};
use crate::wrk::wrk;
use crate::{read, Settings, API_KEYS, AUDIENCE, ISSUER, MEMORY_CLIENTS};

/// Envoy workers in the memory measurement (Istio's sidecar default).
pub(crate) const MEMORY_CONCURRENCY: u32 = 2;

/// One measured Envoy.
pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) rss_bytes: u64,
    /// The most it may add over no filter, in MiB (issue 16's targets).
    pub(crate) target_mib: Option<f64>,
    pub(crate) note: Option<String>,
    pub(crate) error: Option<String>,
}

pub(crate) struct Memory {
    /// The first row is "no filter".
    pub(crate) rows: Vec<Row>,
    pub(crate) clients_sent: u64,
}

impl Memory {
    pub(crate) fn base(&self) -> u64 {
        self.rows.first().map_or(0, |r| r.rss_bytes)
    }

    pub(crate) fn over_mib(&self, r: &Row) -> f64 {
        (r.rss_bytes as f64 - self.base() as f64) / (1024.0 * 1024.0)
    }
}

pub(crate) fn measure_memory(s: &Settings, jwks: &str, api_keys: &[String]) -> Result<Memory, String> {
    println!(
        "   memory at --concurrency {MEMORY_CONCURRENCY}: no filter, raw and SDK no-op filters, Portcullis with one JWT \
         provider, Portcullis with {API_KEYS} API keys and {MEMORY_CLIENTS} clients"
    );
    let opts = Options {
        concurrency: MEMORY_CONCURRENCY,
        wrapper: vec!["taskset".into(), "-c".into(), s.envoy_cpu.clone()],
        log_level: "warning".into(),
    };
    let settle = || std::thread::sleep(Duration::from_millis(1500));
    let mut offsets = HashMap::new();

    // Distinct ES256 tokens (verified through the host's native path), each with its own
    // `client_id`, the rate limiter's client key.
    let es_pem = read(&repo_root().join("test-harness/keys/p256-a.pem"))?;
    let (clients_file, count) =
        token_file(&s.out, "es256-clients", MEMORY_CLIENTS, |n| sign_tokens(&es_pem, Alg::Es256, n, "mem", true))?;
    let load = Load::Tokens { file: clients_file, count, header: "authorization", prefix: "Bearer " };

    let mut rows = Vec::new();
    // The same short traffic through each baseline and the one-provider Portcullis.
    let mut simple = |label: &str, filters: Vec<Value>, target: Option<f64>| -> Result<Row, String> {
        let envoy = Envoy::start_with(&bootstrap(vec![listener("m", filters, None)], vec![]), &opts)?;
        let url = format!("http://127.0.0.1:{}/", envoy.port("m"));
        wrk(s, &url, &load, 2, &mut offsets)?;
        settle();
        Ok(Row { label: label.into(), rss_bytes: envoy.rss_bytes(), target_mib: target, note: None, error: None })
    };
    rows.push(simple("no filter", vec![], None)?);
    rows.push(simple("raw no-op Wasm filter (no SDK; the floor)", vec![noop_filter(&s.raw, "raw")], None)?);
    rows.push(simple("SDK no-op Wasm filter", vec![noop_filter(&s.noop, "noop")], None)?);
    let one = json!({"providers": {"bench": {
        "issuer": ISSUER, "audiences": [AUDIENCE], "local_jwks": {"inline_string": jwks}, "from_headers": bearer_source()
    }}});
    let modules = [("Portcullis", &s.wasm), ("Portcullis native-only (portcullis-native.wasm)", &s.native)];
    for (name, wasm) in modules {
        rows.push(simple(
            &format!("{name}, one JWT provider (local key set)"),
            vec![portcullis(wasm, "pc_memory", &one)],
            Some(30.0),
        )?);
    }
    let mut clients_sent = 0;
    for (name, wasm) in modules {
        let (before, after, sent) = with_clients(&opts, wasm, &one, api_keys, &load, s, name)?;
        rows.push(before);
        rows.push(after);
        clients_sent = sent;
    }
    Ok(Memory { rows, clients_sent })
}

/// Portcullis (`wasm`) with 10,000 keys and a rate limit: RSS before traffic, and after
/// 100,000 distinct clients.
fn with_clients(
    opts: &Options,
    wasm: &Path,
    one: &Value,
    api_keys: &[String],
    load: &Load,
    s: &Settings,
    name: &str,
) -> Result<(Row, Row, u64), String> {
    let settle = || std::thread::sleep(Duration::from_millis(1500));
    let mut cfg = one.clone();
    cfg["api_keys"] = pc_api_keys(api_keys);
    cfg["rate_limit"] = pc_rate_limit();
    let mk =
        |cfg: &Value| bootstrap(vec![listener("pc_memory", vec![portcullis(wasm, "pc_memory", cfg)], None)], vec![]);
    let listeners = [crate::configs::Listener { name: "pc_memory", filters: vec![], portcullis: true }];
    let (envoy, note) = match Envoy::start_with(&mk(&cfg), opts) {
        Ok(e) if find_refusals(&e.log(), &listeners).is_empty() => (e, None),
        other => {
            let log = match &other {
                Ok(e) => e.log(),
                Err(l) => l.clone(),
            };
            drop(other);
            let msg = find_refusals(&log, &listeners).pop().map(|(_, m)| m).unwrap_or_else(|| tail(&log, 10));
            cfg.as_object_mut().map(|o| o.remove("rate_limit"));
            (Envoy::start_with(&mk(&cfg), opts)?, Some(format!("rate_limit refused ({msg}): measured without it")))
        }
    };
    let url = format!("http://127.0.0.1:{}/", envoy.port("pc_memory"));
    let first = load.first()?;
    let check = http::get(&url, &[(first.0.as_str(), first.1.as_str())]).map_err(|e| e.to_string())?;
    let error = (check.status != 200).then(|| format!("pre-flight answered {}: {}", check.status, check.text()));
    settle();
    let before = Row {
        label: format!("{name}, {API_KEYS} API keys + a rate limit, before traffic"),
        rss_bytes: envoy.rss_bytes(),
        target_mib: None,
        note: None,
        error: None,
    };
    let mut offsets = HashMap::new();
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sent < MEMORY_CLIENTS as u64 && Instant::now() < deadline {
        let r = wrk(s, &url, load, 4, &mut offsets)?;
        if r.non_2xx > 0 {
            println!("   memory: {} of {} requests were not 2xx", r.non_2xx, r.requests);
        }
        sent += r.requests;
    }
    settle();
    let clients_sent = sent.min(MEMORY_CLIENTS as u64);
    let after = Row {
        label: format!("… after {clients_sent} distinct rate-limited clients"),
        rss_bytes: envoy.rss_bytes(),
        target_mib: Some(40.0),
        note,
        error,
    };
    Ok((before, after, clients_sent))
}

/// The size of a file, 0 when absent.
pub(crate) fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
