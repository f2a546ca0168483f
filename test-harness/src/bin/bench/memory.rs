//! Memory: Envoy's RSS with no filter and with the no-op wasm filter, against Portcullis with
//! 10,000 API keys (and a rate limit) before and after 100,000 distinct rate-limited clients.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use portcullis_harness::envoy::{bootstrap, listener, repo_root};
use portcullis_harness::envoy::{Envoy, Options};
use portcullis_harness::http;
use serde_json::{json, Value};

use crate::configs::{
    bearer_source, find_refusals, noop_filter, pc_api_keys, pc_rate_limit, portcullis, tail, Listener,
};
use crate::scenarios::Load;
use crate::tokens::{sign_tokens, token_file, Alg};
use crate::wrk::wrk;
use crate::{read, Settings, API_KEYS, AUDIENCE, ISSUER, MEMORY_CLIENTS};

pub(crate) struct Memory {
    pub(crate) no_filter_bytes: u64,
    pub(crate) noop_bytes: u64,
    pub(crate) portcullis_idle_bytes: u64,
    pub(crate) portcullis_loaded_bytes: u64,
    pub(crate) clients_sent: u64,
    pub(crate) rate_limited: bool,
    pub(crate) note: Option<String>,
    pub(crate) error: Option<String>,
}

impl Memory {
    pub(crate) fn delta_mib(&self) -> f64 {
        (self.portcullis_loaded_bytes as f64 - self.no_filter_bytes as f64) / (1024.0 * 1024.0)
    }
}

pub(crate) fn measure_memory(s: &Settings, jwks: &str, api_keys: &[String]) -> Result<Memory, String> {
    println!("   memory: Envoy with no filter vs Portcullis with {API_KEYS} API keys and {MEMORY_CLIENTS} clients");
    let opts = Options {
        concurrency: 1,
        wrapper: vec!["taskset".into(), "-c".into(), s.envoy_cpu.clone()],
        log_level: "warning".into(),
    };
    let settle = || std::thread::sleep(Duration::from_millis(1500));
    let mut offsets = HashMap::new();

    // 100,000 distinct clients: ES256 tokens (verified through the host's native path), each
    // with its own `client_id`, the rate limiter's client key.
    let es_pem = read(&repo_root().join("test-harness/keys/p256-a.pem"))?;
    let (clients_file, count) =
        token_file(&s.out, "es256-clients", MEMORY_CLIENTS, |n| sign_tokens(&es_pem, Alg::Es256, n, "mem", true))?;
    let load = Load::Tokens { file: clients_file, count, header: "authorization", prefix: "Bearer " };

    // Baseline: the same traffic, no filter; and the no-op wasm filter (the VM's own share).
    let noop = Envoy::start_with(&bootstrap(vec![listener("noop", vec![noop_filter(&s.noop)], None)], vec![]), &opts)?;
    let url = format!("http://127.0.0.1:{}/", noop.port("noop"));
    wrk(s, &url, &load, 2, &mut offsets)?;
    settle();
    let noop_bytes = noop.rss_bytes();
    drop(noop);
    let base = Envoy::start_with(&bootstrap(vec![listener("none", vec![], None)], vec![]), &opts)?;
    let url = format!("http://127.0.0.1:{}/", base.port("none"));
    wrk(s, &url, &load, 2, &mut offsets)?;
    settle();
    let no_filter_bytes = base.rss_bytes();
    drop(base);

    let mut cfg = json!({
        "providers": {"bench": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "local_jwks": {"inline_string": jwks},
            "from_headers": bearer_source()
        }},
        "api_keys": pc_api_keys(api_keys),
        "rate_limit": pc_rate_limit()
    });
    let mk = |cfg: &Value| {
        let l = vec![Listener {
            name: "pc_memory",
            filters: vec![portcullis(&s.wasm, "pc_memory", cfg)],
            portcullis: true,
        }];
        (bootstrap(vec![listener("pc_memory", l[0].filters.clone(), None)], vec![]), l)
    };
    let (boot, ls) = mk(&cfg);
    let (envoy, rate_limited, note) = match Envoy::start_with(&boot, &opts) {
        Ok(e) if find_refusals(&e.log(), &ls).is_empty() => (e, true, None),
        other => {
            let log = match &other {
                Ok(e) => e.log(),
                Err(l) => l.clone(),
            };
            drop(other);
            let msg = find_refusals(&log, &ls).pop().map(|(_, m)| m).unwrap_or_else(|| tail(&log, 10));
            cfg.as_object_mut().map(|o| o.remove("rate_limit"));
            let (boot, _) = mk(&cfg);
            let e = Envoy::start_with(&boot, &opts)?;
            (e, false, Some(format!("rate_limit refused ({msg}): measured without it")))
        }
    };
    let url = format!("http://127.0.0.1:{}/", envoy.port("pc_memory"));
    let first = load.first()?;
    let check = http::get(&url, &[(first.0.as_str(), first.1.as_str())]).map_err(|e| e.to_string())?;
    let error = (check.status != 200).then(|| format!("pre-flight answered {}: {}", check.status, check.text()));
    settle();
    let portcullis_idle_bytes = envoy.rss_bytes();
    let mut offsets = HashMap::new();
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sent < MEMORY_CLIENTS as u64 && Instant::now() < deadline {
        let r = wrk(s, &url, &load, 4, &mut offsets)?;
        if r.non_2xx > 0 {
            println!("   memory: {} of {} requests were not 2xx", r.non_2xx, r.requests);
        }
        sent += r.requests;
    }
    settle();
    let portcullis_loaded_bytes = envoy.rss_bytes();
    Ok(Memory {
        no_filter_bytes,
        noop_bytes,
        portcullis_idle_bytes,
        portcullis_loaded_bytes,
        clients_sent: sent.min(MEMORY_CLIENTS as u64),
        rate_limited,
        note,
        error,
    })
}
