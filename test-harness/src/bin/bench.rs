//! `make bench`: the performance contract of SPEC §5, measured.
//!
//! One Envoy (`--concurrency 1`, pinned to one core with `taskset`) serves a direct-response
//! route on one listener per variant: no filter, a no-op wasm filter (the floor of any wasm
//! filter), native `jwt_authn` without and with `jwt_cache_config`, native `api_key_auth`,
//! native `jwt_authn` + `local_ratelimit`, and Portcullis in each matching configuration.
//! `wrk` runs pinned on the other core. Rounds are interleaved (every variant once per round,
//! at least 3 rounds) so machine drift cancels, and every comparison is the median of the
//! per-round ratios. Unique-token variants read pre-generated tokens from a file
//! (`bench/tokens.lua`), so no token repeats within a run.
//!
//! Then memory: Envoy's RSS with no filter against Portcullis with 10,000 API keys after
//! 100,000 distinct rate-limited clients, and the size of the module.
//!
//! A Portcullis configuration that the module refuses (a feature not in this build yet) does
//! not stop the bench: its row says `n/a (config refused: <message>)`.
//!
//! Output: tables on stdout (Markdown), `target/bench/results.json` and `target/bench/results.md`.
//!
//! Environment: `BENCH_ROUNDS` (default 3, at least 3), `BENCH_SECONDS` (per run, default 3),
//! `BENCH_CONNECTIONS` (default 8), `BENCH_ENVOY_CPU` / `BENCH_WRK_CPU` (default 0 / 1),
//! `BENCH_SKIP_MEMORY=1`, `BENCH_ONLY=memory`, `ENVOY_BIN`, `PORTCULLIS_WASM`, `NOOP_WASM`.
//!
//! Generated tokens are kept in `target/bench/tokens-*` (valid for a week) and reused by the
//! next run. RS256 tokens are signed through `bench/sign_rs256.py` (OpenSSL via Python's
//! `cryptography`, ~10× faster than pure Rust) when it works, else with jwt-simple.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jwt_simple::algorithms::{ECDSAP256KeyPairLike, ES256KeyPair, RS256KeyPair, RSAKeyPairLike};
use jwt_simple::claims::Claims;
use portcullis_harness::envoy::{bootstrap, cluster, envoy_bin, listener, portcullis_filter_from, repo_root};
use portcullis_harness::envoy::{Envoy, Options};
use portcullis_harness::http;
use portcullis_harness::idp::{self, TestIdp};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

const ISSUER: &str = "https://bench.portcullis.test";
const AUDIENCE: &str = "bench-api";
/// Tokens on disk are reused while they stay valid this long.
const TOKEN_LIFETIME_S: u64 = 7 * 24 * 3600;
const TOKEN_MIN_REMAINING_S: u64 = 24 * 3600;
/// The most requests/s a unique-token variant is expected to reach on one core; the token
/// files hold 1.5× that for one run.
const UNIQUE_RATE_CEILING: u64 = 20_000;
const API_KEYS: usize = 10_000;
const MEMORY_CLIENTS: usize = 100_000;
const MEMORY_TARGET_MIB: f64 = 64.0;

fn main() {
    let started = Instant::now();
    let s = Settings::from_env();
    if let Err(e) = run(&s, started) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

struct Settings {
    rounds: usize,
    seconds: u32,
    connections: u32,
    envoy_cpu: String,
    wrk_cpu: String,
    skip_memory: bool,
    wasm: PathBuf,
    noop: PathBuf,
    out: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let num = |name: &str, default: u64| -> u64 {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let root = repo_root();
        Settings {
            rounds: num("BENCH_ROUNDS", 3).max(3) as usize,
            seconds: num("BENCH_SECONDS", 3).max(1) as u32,
            connections: num("BENCH_CONNECTIONS", 8).max(1) as u32,
            envoy_cpu: std::env::var("BENCH_ENVOY_CPU").unwrap_or_else(|_| "0".into()),
            wrk_cpu: std::env::var("BENCH_WRK_CPU").unwrap_or_else(|_| "1".into()),
            skip_memory: std::env::var("BENCH_SKIP_MEMORY").is_ok_and(|v| v == "1"),
            wasm: portcullis_harness::envoy::wasm_path(),
            noop: std::env::var_os("NOOP_WASM")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/noop-filter/wasm32-wasip1/release/noop_filter.wasm")),
            out: root.join("target/bench"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// What is measured
// ---------------------------------------------------------------------------------------

/// What wrk sends.
#[derive(Clone)]
enum Load {
    /// The same header on every request.
    Header(&'static str, String),
    /// The next credential of a file on every request (`bench/tokens.lua`).
    Tokens { file: PathBuf, count: usize, header: &'static str, prefix: &'static str },
}

impl Load {
    /// The first request's header, for the pre-flight check.
    fn first(&self) -> Result<(String, String), String> {
        match self {
            Load::Header(h, v) => Ok((h.to_string(), v.clone())),
            Load::Tokens { file, header, prefix, .. } => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
                let first = text.lines().next().unwrap_or_default();
                Ok((header.to_string(), format!("{prefix}{first}")))
            }
        }
    }
}

/// One listener of the bench Envoy.
struct Listener {
    name: &'static str,
    filters: Vec<Value>,
    /// A Portcullis plugin on this listener (the plugin is named after the listener).
    portcullis: bool,
}

/// One measured thing: a listener and a load.
struct Variant {
    key: &'static str,
    label: &'static str,
    listener: &'static str,
    load: Load,
}

struct Scenario {
    name: &'static str,
    variant: &'static str,
    compared_with: &'static str,
    /// `None`: reported without a pass mark.
    target: Option<f64>,
}

const SCENARIOS: [Scenario; 8] = [
    Scenario {
        name: "JWT, repeated token (cache hit)",
        variant: "pc_jwt_repeat",
        compared_with: "native_jwt_cache",
        target: Some(1.0),
    },
    Scenario {
        name: "JWT RS256, unique tokens (no cache)",
        variant: "pc_rs256_unique",
        compared_with: "native_rs256_unique",
        target: Some(1.0),
    },
    Scenario {
        name: "JWT ES256, unique tokens",
        variant: "pc_es256_unique",
        compared_with: "native_es256_unique",
        target: Some(0.9),
    },
    Scenario {
        name: "API key (10,000 keys)",
        variant: "pc_api_key",
        compared_with: "native_api_key",
        target: Some(1.0),
    },
    Scenario {
        name: "JWT + rate limit (allowed)",
        variant: "pc_jwt_ratelimit",
        compared_with: "native_jwt_ratelimit",
        target: Some(1.0),
    },
    Scenario {
        name: "Phantom token, cache hit",
        variant: "pc_phantom",
        compared_with: "pc_jwt_repeat",
        target: Some(0.9),
    },
    Scenario {
        name: "RS256 unique, `crypto: pure` (no native path)",
        variant: "pc_rs256_pure",
        compared_with: "pc_rs256_unique",
        target: None,
    },
    Scenario {
        name: "ES256 unique, `crypto: pure` (no native path)",
        variant: "pc_es256_pure",
        compared_with: "pc_es256_unique",
        target: None,
    },
];

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

fn run(s: &Settings, started: Instant) -> Result<(), String> {
    std::fs::create_dir_all(&s.out).map_err(|e| format!("{}: {e}", s.out.display()))?;
    ensure_wrk()?;
    for (what, p, hint) in [
        ("Portcullis module", &s.wasm, "make build"),
        ("no-op module", &s.noop, "make noop-wasm"),
        ("Envoy", &envoy_bin(), "make envoy"),
    ] {
        if !p.exists() {
            return Err(format!("{what} not found at {} (run `{hint}`, or `make bench`)", p.display()));
        }
    }
    let machine = machine();
    println!("== Portcullis bench: {} ({} cores), Envoy {}", machine.cpu, machine.cores, machine.envoy);
    println!(
        "   Envoy --concurrency 1 on cpu {}, wrk -t1 -c{} on cpu {}, {} rounds x {} s per variant",
        s.envoy_cpu, s.connections, s.wrk_cpu, s.rounds, s.seconds
    );

    // Tokens and keys.
    let idp = TestIdp::start();
    let jwks = idp.public_jwks_for(&["rsa-a", "p256-a"]);
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "memory") {
        let keys: Vec<String> = (0..API_KEYS).map(api_key).collect();
        let mem = measure_memory(s, &jwks, &keys)?;
        println!(
            "   no filter {} B, no-op wasm {} B, Portcullis idle {} B, loaded {} B (+{:.1} MiB), {} clients, rate limited: {}, note: {:?}, error: {:?}",
            mem.no_filter_bytes,
            mem.noop_bytes,
            mem.portcullis_idle_bytes,
            mem.portcullis_loaded_bytes,
            mem.delta_mib(),
            mem.clients_sent,
            mem.rate_limited,
            mem.note,
            mem.error
        );
        return Ok(());
    }
    let t = Instant::now();
    let unique = (UNIQUE_RATE_CEILING * s.seconds as u64 * 3 / 2) as usize;
    let keys = repo_root().join("test-harness/keys");
    let rs_pem = read(&keys.join("rsa-a.pem"))?;
    let es_pem = read(&keys.join("p256-a.pem"))?;
    let repeat = sign_tokens(&rs_pem, Alg::Rs256, 1, "repeat", false)?.remove(0);
    let rs_file =
        token_file(&s.out, "rs256", unique, |n| match sign_rs256_openssl(&keys.join("rsa-a.pem"), n, "rs") {
            Some(t) => Ok(t),
            None => sign_tokens(&rs_pem, Alg::Rs256, n, "rs", false),
        })?;
    let es_file = token_file(&s.out, "es256", unique, |n| sign_tokens(&es_pem, Alg::Es256, n, "es", false))?;
    println!("   tokens ready in {:.1} s ({unique} unique RS256 and ES256)", t.elapsed().as_secs_f64());
    let api_keys: Vec<String> = (0..API_KEYS).map(api_key).collect();
    let opaque = "bench-opaque-token-0001";
    // The IdP adds its own `iss` (the by-value JWT is verified against the IdP's issuer).
    idp.register_opaque(
        opaque,
        json!({"sub": "user-1", "client_id": "bench-client", "scope": "orders:read", "exp": idp::now() + 3600}),
    );

    let (listeners, variants) = plan(
        s,
        &Inputs {
            jwks: &jwks,
            repeat: &repeat,
            rs: &rs_file,
            es: &es_file,
            api_keys: &api_keys,
            opaque,
            idp_issuer: &idp.issuer(),
        },
    );
    let mut refused: BTreeMap<&'static str, String> = BTreeMap::new();
    let envoy = start_bench_envoy(s, &listeners, &[cluster("idp", idp.port)], &mut refused)?;
    println!("   Envoy ready ({} listeners{})", envoy.listeners.len(), refused_note(&refused));

    // Pre-flight: every variant must answer 200 to its first request.
    let mut broken: BTreeMap<&'static str, String> = BTreeMap::new();
    for v in &variants {
        if let Some(msg) = refused.get(v.listener) {
            broken.insert(v.key, format!("n/a (config refused: {msg})"));
            continue;
        }
        let (h, val) = v.load.first()?;
        let url = format!("http://127.0.0.1:{}/", envoy.port(v.listener));
        match http::get(&url, &[(h.as_str(), val.as_str())]) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                let body: String = r.text().chars().take(200).collect();
                let seen = if v.key == "pc_phantom" {
                    format!(" (the IdP saw {} introspection requests)", idp.hits(idp::Endpoint::Introspect))
                } else {
                    String::new()
                };
                broken.insert(v.key, format!("error: pre-flight answered {} {body}{seen}", r.status));
            }
            Err(e) => {
                broken.insert(v.key, format!("error: pre-flight failed: {e}"));
            }
        }
    }
    for (k, why) in &broken {
        println!("   {k}: {why}");
    }
    let live: Vec<&Variant> = variants.iter().filter(|v| !broken.contains_key(v.key)).collect();

    // Warm-up, then interleaved rounds.
    let mut offsets: HashMap<PathBuf, u64> = HashMap::new();
    let mut runs: BTreeMap<&'static str, Vec<WrkResult>> = BTreeMap::new();
    let mut failures: BTreeMap<&'static str, String> = BTreeMap::new();
    print!("   warm-up");
    for v in &live {
        let _ = run_variant(s, &envoy, v, 1, &mut offsets);
        print!(".");
        let _ = std::io::stdout().flush();
    }
    println!();
    for round in 1..=s.rounds {
        print!("   round {round}/{}", s.rounds);
        for v in &live {
            match run_variant(s, &envoy, v, s.seconds, &mut offsets) {
                Ok(r) => {
                    if r.non_2xx > 0 {
                        failures.entry(v.key).or_insert_with(|| format!("error: {} non-2xx responses", r.non_2xx));
                    }
                    runs.entry(v.key).or_default().push(r);
                }
                Err(e) => {
                    failures.entry(v.key).or_insert(format!("error: {e}"));
                }
            }
            print!(".");
            let _ = std::io::stdout().flush();
        }
        println!();
    }
    let envoy_log = envoy.log();
    let envoy_log_bytes = envoy_log.len();
    let _ = std::fs::write(s.out.join("envoy.log"), &envoy_log);
    drop(envoy);
    broken.extend(failures);

    // Tokens that wrapped around within a run (the file was too short for the rate).
    let mut notes: Vec<String> = Vec::new();
    for v in &live {
        if let (Load::Tokens { count, .. }, Some(rs)) = (&v.load, runs.get(v.key)) {
            if let Some(max) = rs.iter().map(|r| r.requests).max() {
                if max > *count as u64 {
                    notes.push(format!(
                        "{}: {max} requests in one run but only {count} distinct tokens (some repeated)",
                        v.key
                    ));
                }
            }
        }
    }

    let memory = if s.skip_memory { None } else { Some(measure_memory(s, &jwks, &api_keys)?) };
    let module_bytes = std::fs::metadata(&s.wasm).map(|m| m.len()).unwrap_or(0);
    let noop_bytes = std::fs::metadata(&s.noop).map(|m| m.len()).unwrap_or(0);

    let report = Report {
        s,
        machine: &machine,
        variants: &variants,
        runs: &runs,
        broken: &broken,
        memory: memory.as_ref(),
        module_bytes,
        noop_bytes,
        notes: &notes,
        elapsed: started.elapsed(),
        envoy_log_bytes,
    };
    let md = report.markdown();
    println!("\n{md}");
    let json = report.json();
    let json_path = s.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&json).unwrap_or_default())
        .map_err(|e| format!("{}: {e}", json_path.display()))?;
    std::fs::write(s.out.join("results.md"), &md).map_err(|e| e.to_string())?;
    println!("Written: {} and results.md ({:.0} s in all)", json_path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn refused_note(refused: &BTreeMap<&'static str, String>) -> String {
    if refused.is_empty() {
        String::new()
    } else {
        format!("; refused configs: {}", refused.keys().copied().collect::<Vec<_>>().join(", "))
    }
}

fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The i-th bench API key (distinct, 32 characters).
fn api_key(i: usize) -> String {
    format!("bench-key-{i:05}-{}", &hex(&Sha256::digest(i.to_le_bytes()))[..16])
}

fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

// ---------------------------------------------------------------------------------------
// Listeners and variants
// ---------------------------------------------------------------------------------------

fn bearer_source() -> Value {
    json!([{"name": "authorization", "value_prefix": "Bearer "}])
}

fn native_jwt(jwks: &str, cache: bool) -> Value {
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

fn native_api_key(keys: &[String]) -> Value {
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
fn native_local_ratelimit() -> Value {
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

fn noop_filter(path: &Path) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "noop",
                "root_id": "noop",
                "vm_config": {
                    "vm_id": "noop",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": path.to_string_lossy()}}
                }
            }
        }
    })
}

/// The Portcullis filter, its plugin and VM named after the listener (so a refusal in the
/// log names the listener, and one refused configuration cannot affect another).
fn portcullis(wasm: &Path, name: &str, config: &Value) -> Value {
    let mut f = portcullis_filter_from(wasm, config, &[]);
    f["typed_config"]["config"]["name"] = json!(name);
    f["typed_config"]["config"]["vm_config"]["vm_id"] = json!(name);
    f
}

fn pc_jwt(jwks: &str) -> Value {
    json!({
        "providers": {"bench": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "local_jwks": {"inline_string": jwks},
            "from_headers": bearer_source()
        }}
    })
}

fn pc_api_keys(keys: &[String]) -> Value {
    let clients: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"client_id": format!("client-{i}"), "keys_sha256": [sha256_hex(k)]}))
        .collect();
    json!({"from_headers": ["x-api-key"], "clients": clients})
}

/// A plan that never limits (the allowed path), the default for every client.
fn pc_rate_limit() -> Value {
    json!({
        "plans": {"bench": {"requests": 1_000_000_000u64, "per": "1s", "burst": 1_000_000_000u64}},
        "default_plan": "bench"
    })
}

/// What the listeners and loads are made of.
struct Inputs<'a> {
    jwks: &'a str,
    /// The repeated RS256 token.
    repeat: &'a str,
    /// Token files (path, count).
    rs: &'a (PathBuf, usize),
    es: &'a (PathBuf, usize),
    api_keys: &'a [String],
    opaque: &'a str,
    idp_issuer: &'a str,
}

fn plan(s: &Settings, i: &Inputs) -> (Vec<Listener>, Vec<Variant>) {
    let Inputs { jwks, repeat, rs, es, api_keys, opaque, idp_issuer } = *i;
    let w = &s.wasm;
    let mut jwt_pure = pc_jwt(jwks);
    jwt_pure["crypto"] = json!("pure");
    let mut jwt_rl = pc_jwt(jwks);
    jwt_rl["rate_limit"] = pc_rate_limit();
    // The phantom token: an opaque token introspected at the IdP, which answers the by-value
    // JWT (`accept_jwt`); the JWT is verified with the IdP's key on a miss, not on a hit.
    let phantom = json!({
        "providers": {"idp": {
            "issuer": idp_issuer,
            "local_jwks": {"inline_string": jwks},
            "from_headers": [{"name": "x-bench-unused-idp-token"}]
        }},
        "introspection": {
            "endpoint": {"cluster": "idp", "authority": "127.0.0.1", "path": "/introspect", "timeout": "1s"},
            "client_id": "gateway",
            "client_secret": "gateway-secret",
            "accept_jwt": true,
            "verify_with": "idp",
            "from_headers": bearer_source(),
            "upstream_header": {"name": "authorization", "value_prefix": "Bearer "},
            "cache_duration": "300s"
        },
        "requires": {"any": ["introspection"]}
    });
    let l = |name: &'static str, filters: Vec<Value>| Listener { name, filters, portcullis: false };
    let p =
        |name: &'static str, cfg: &Value| Listener { name, filters: vec![portcullis(w, name, cfg)], portcullis: true };
    let listeners = vec![
        l("none", vec![]),
        l("noop", vec![noop_filter(&s.noop)]),
        l("native_jwt", vec![native_jwt(jwks, false)]),
        l("native_jwt_cache", vec![native_jwt(jwks, true)]),
        l("native_api_key", vec![native_api_key(api_keys)]),
        l("native_jwt_rl", vec![native_jwt(jwks, true), native_local_ratelimit()]),
        p("pc_jwt", &pc_jwt(jwks)),
        p("pc_jwt_pure", &jwt_pure),
        p("pc_api_key", &json!({"api_keys": pc_api_keys(api_keys)})),
        p("pc_jwt_rl", &jwt_rl),
        p("pc_phantom", &phantom),
    ];
    let bearer = |t: &str| Load::Header("authorization", format!("Bearer {t}"));
    let tokens = |f: &(PathBuf, usize)| Load::Tokens {
        file: f.0.clone(),
        count: f.1,
        header: "authorization",
        prefix: "Bearer ",
    };
    let key = Load::Header("x-api-key", api_keys[API_KEYS / 2].clone());
    let v = |key: &'static str, label: &'static str, listener: &'static str, load: Load| Variant {
        key,
        label,
        listener,
        load,
    };
    let variants = vec![
        v("no_filter", "Envoy, no filter", "none", bearer(repeat)),
        v("noop_wasm", "no-op wasm filter (reads one header)", "noop", bearer(repeat)),
        v(
            "native_jwt_cache",
            "native jwt_authn + jwt_cache_config, repeated token",
            "native_jwt_cache",
            bearer(repeat),
        ),
        v("native_rs256_unique", "native jwt_authn, unique RS256", "native_jwt", tokens(rs)),
        v("native_es256_unique", "native jwt_authn, unique ES256", "native_jwt", tokens(es)),
        v("native_api_key", "native api_key_auth, 10,000 keys", "native_api_key", key.clone()),
        v("native_jwt_ratelimit", "native jwt_authn (cache) + local_ratelimit", "native_jwt_rl", bearer(repeat)),
        v("pc_jwt_repeat", "Portcullis JWT, repeated token", "pc_jwt", bearer(repeat)),
        v("pc_rs256_unique", "Portcullis JWT, unique RS256", "pc_jwt", tokens(rs)),
        v("pc_es256_unique", "Portcullis JWT, unique ES256", "pc_jwt", tokens(es)),
        v("pc_api_key", "Portcullis API key, 10,000 keys", "pc_api_key", key),
        v("pc_jwt_ratelimit", "Portcullis JWT + rate limit", "pc_jwt_rl", bearer(repeat)),
        v("pc_phantom", "Portcullis phantom token, cache hit", "pc_phantom", bearer(opaque)),
        v("pc_rs256_pure", "Portcullis JWT, unique RS256, crypto: pure", "pc_jwt_pure", tokens(rs)),
        v("pc_es256_pure", "Portcullis JWT, unique ES256, crypto: pure", "pc_jwt_pure", tokens(es)),
    ];
    (listeners, variants)
}

/// Starts the bench Envoy. A Portcullis listener whose configuration the module refuses is
/// recorded in `refused` and left out (Envoy is started again without it).
fn start_bench_envoy(
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
fn find_refusals(log: &str, listeners: &[Listener]) -> Vec<(&'static str, String)> {
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

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Alg {
    Rs256,
    Es256,
}

/// Signs `n` distinct tokens (distinct `sub`), on every core.
/// With `distinct_clients`, every token also has its own `client_id` (`<tag>-client-<i>`).
fn sign_tokens(pem: &str, alg: Alg, n: usize, tag: &str, distinct_clients: bool) -> Result<Vec<String>, String> {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n.max(1));
    let per = n.div_ceil(threads);
    let chunks: Vec<Result<Vec<String>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> Result<Vec<String>, String> {
                    let range = (t * per)..((t + 1) * per).min(n);
                    let claims = |i: usize| {
                        let mut custom = Map::new();
                        let client = if distinct_clients { format!("{tag}-client-{i}") } else { "bench-client".into() };
                        custom.insert("client_id".into(), json!(client));
                        custom.insert("scope".into(), json!("orders:read"));
                        Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_secs(TOKEN_LIFETIME_S))
                            .with_issuer(ISSUER)
                            .with_audience(AUDIENCE)
                            .with_subject(format!("{tag}-user-{i}"))
                    };
                    match alg {
                        Alg::Rs256 => {
                            let k = RS256KeyPair::from_pem(pem).map_err(|e| e.to_string())?.with_key_id("rsa-a");
                            range.map(|i| k.sign(claims(i)).map_err(|e| e.to_string())).collect()
                        }
                        Alg::Es256 => {
                            let k = ES256KeyPair::from_pem(pem).map_err(|e| e.to_string())?.with_key_id("p256-a");
                            range.map(|i| k.sign(claims(i)).map_err(|e| e.to_string())).collect()
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("signing thread panicked".into()))).collect()
    });
    let mut out = Vec::with_capacity(n);
    for c in chunks {
        out.extend(c?);
    }
    Ok(out)
}

/// RS256 tokens signed by OpenSSL through Python's `cryptography` (`bench/sign_rs256.py`),
/// one process per core; `None` when that is not available (the caller falls back to
/// jwt-simple, ~10× slower).
fn sign_rs256_openssl(pem: &Path, n: usize, tag: &str) -> Option<Vec<String>> {
    let script = repo_root().join("bench/sign_rs256.py");
    let procs = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n.max(1));
    let per = n.div_ceil(procs);
    let dir = std::env::temp_dir();
    for python in ["python3", "/usr/bin/python3"] {
        let mut children = Vec::new();
        let mut files = Vec::new();
        for i in 0..procs {
            let first = i * per;
            let count = per.min(n.saturating_sub(first));
            let out = dir.join(format!("portcullis-bench-{}-{tag}-{i}.txt", std::process::id()));
            let child = Command::new(python)
                .arg(&script)
                .arg(pem)
                .args(["rsa-a", ISSUER, AUDIENCE, &TOKEN_LIFETIME_S.to_string(), tag])
                .args([first.to_string(), count.to_string()])
                .arg(&out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            files.push(out);
            if let Ok(c) = child {
                children.push(c);
            }
        }
        let all_ok = children.len() == procs && children.into_iter().all(|mut c| c.wait().is_ok_and(|s| s.success()));
        let mut tokens = Vec::with_capacity(n);
        for f in &files {
            if all_ok {
                tokens.extend(std::fs::read_to_string(f).unwrap_or_default().lines().map(str::to_string));
            }
            let _ = std::fs::remove_file(f);
        }
        if all_ok && tokens.len() == n {
            return Some(tokens);
        }
    }
    None
}

/// A file of `n` tokens under `dir`, reused from an earlier run while it has enough tokens
/// for the same issuer and audience that stay valid for another day.
fn token_file(
    dir: &Path,
    name: &str,
    n: usize,
    make: impl FnOnce(usize) -> Result<Vec<String>, String>,
) -> Result<(PathBuf, usize), String> {
    let file = dir.join(format!("tokens-{name}.txt"));
    let meta_file = dir.join(format!("tokens-{name}.json"));
    let now = idp::now();
    if let Ok(meta) = std::fs::read_to_string(&meta_file) {
        let m: Value = serde_json::from_str(&meta).unwrap_or_default();
        let count = m["count"].as_u64().unwrap_or(0) as usize;
        let lines = std::fs::read_to_string(&file).map(|t| t.lines().count()).unwrap_or(0);
        if m["issuer"] == ISSUER
            && m["audience"] == AUDIENCE
            && count >= n
            && lines == count
            && m["exp"].as_u64().unwrap_or(0) > now + TOKEN_MIN_REMAINING_S
        {
            return Ok((file, count));
        }
    }
    let t = Instant::now();
    let tokens = make(n)?;
    let mut text = tokens.join("\n");
    text.push('\n');
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    let meta = json!({"issuer": ISSUER, "audience": AUDIENCE, "count": n, "exp": now + TOKEN_LIFETIME_S});
    std::fs::write(&meta_file, meta.to_string()).map_err(|e| e.to_string())?;
    println!("   signed {n} {name} tokens in {:.1} s", t.elapsed().as_secs_f64());
    Ok((file, n))
}

// ---------------------------------------------------------------------------------------
// wrk
// ---------------------------------------------------------------------------------------

/// Installs Debian's `wrk` when it is missing.
fn ensure_wrk() -> Result<(), String> {
    let have = || Command::new("wrk").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if have() {
        return Ok(());
    }
    println!("   wrk not found: installing Debian's wrk with apt-get");
    let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = |args: &[&str]| -> bool {
        let mut c = if root.as_ref().is_ok_and(|r| *r) {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "-q", "wrk"]) {
        apt(&["update", "-q"]);
        apt(&["install", "-y", "-q", "wrk"]);
    }
    if have() {
        Ok(())
    } else {
        Err("wrk is not installed and `apt-get install -y wrk` failed; install it and run again".into())
    }
}

#[derive(Debug, Clone, Default)]
struct WrkResult {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

fn run_variant(
    s: &Settings,
    envoy: &Envoy,
    v: &Variant,
    seconds: u32,
    offsets: &mut HashMap<PathBuf, u64>,
) -> Result<WrkResult, String> {
    let url = format!("http://127.0.0.1:{}/", envoy.port(v.listener));
    let r = wrk(s, &url, &v.load, seconds, offsets)?;
    if r.requests == 0 {
        return Err("wrk completed no request".into());
    }
    Ok(r)
}

fn wrk(
    s: &Settings,
    url: &str,
    load: &Load,
    seconds: u32,
    offsets: &mut HashMap<PathBuf, u64>,
) -> Result<WrkResult, String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &s.wrk_cpu, "wrk", "-t1", "--latency", "--timeout", "5s"])
        .arg(format!("-c{}", s.connections))
        .arg(format!("-d{seconds}s"));
    let offset_key = match load {
        Load::Header(h, v) => {
            cmd.arg("-H").arg(format!("{h}: {v}")).arg(url);
            None
        }
        Load::Tokens { file, header, prefix, .. } => {
            let offset = offsets.get(file).copied().unwrap_or(0);
            cmd.arg("-s").arg(repo_root().join("bench/tokens.lua")).arg(url).arg("--");
            cmd.arg(file).arg(header).arg(prefix).arg(offset.to_string());
            Some((file.clone(), offset))
        }
    };
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr)));
    }
    let r = parse_wrk(&text).ok_or_else(|| format!("cannot parse wrk output:\n{text}"))?;
    if let Some((file, offset)) = offset_key {
        // The next run starts after every token this one may have sent.
        offsets.insert(file, offset + r.requests + s.connections as u64 + 1);
    }
    Ok(r)
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut in_dist = false;
    let mut have_rps = false;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
            have_rps = true;
        } else if l.starts_with("Latency Distribution") {
            in_dist = true;
        } else if in_dist && l.starts_with("50%") {
            r.p50_us = duration_us(l.split_whitespace().nth(1)?)?;
        } else if in_dist && l.starts_with("99%") {
            r.p99_us = duration_us(l.split_whitespace().nth(1)?)?;
            in_dist = false;
        } else if l.contains(" requests in ") {
            r.requests = l.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().ok()?;
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            r.socket_errors =
                v.split(',').filter_map(|p| p.split_whitespace().last().and_then(|n| n.parse::<u64>().ok())).sum();
        }
    }
    have_rps.then_some(r)
}

/// wrk durations: `812.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn duration_us(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

// ---------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------

struct Memory {
    no_filter_bytes: u64,
    noop_bytes: u64,
    portcullis_idle_bytes: u64,
    portcullis_loaded_bytes: u64,
    clients_sent: u64,
    rate_limited: bool,
    note: Option<String>,
    error: Option<String>,
}

impl Memory {
    fn delta_mib(&self) -> f64 {
        (self.portcullis_loaded_bytes as f64 - self.no_filter_bytes as f64) / (1024.0 * 1024.0)
    }
}

fn measure_memory(s: &Settings, jwks: &str, api_keys: &[String]) -> Result<Memory, String> {
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

// ---------------------------------------------------------------------------------------
// Machine and report
// ---------------------------------------------------------------------------------------

struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    envoy: String,
    date: String,
    wrk: String,
}

fn machine() -> Machine {
    let sh = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
            .unwrap_or_default()
    };
    let cpu = sh("lscpu", &[])
        .lines()
        .find_map(|l| l.strip_prefix("Model name:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let envoy = sh(&envoy_bin().to_string_lossy(), &["--version"])
        .split_whitespace()
        .find(|w| w.contains("/1.") || w.contains("/RELEASE"))
        .map(|w| w.split('/').nth(1).unwrap_or(w).to_string())
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |p| p.get()),
        kernel: sh("uname", &["-sr"]).trim().to_string(),
        envoy,
        date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).trim().to_string(),
        // "wrk debian/4.1.0-3+b2 [epoll] Copyright ..." -> "wrk debian/4.1.0-3+b2"
        wrk: sh("wrk", &["--version"]).split_whitespace().take(2).collect::<Vec<_>>().join(" "),
    }
}

struct Report<'a> {
    s: &'a Settings,
    machine: &'a Machine,
    variants: &'a [Variant],
    runs: &'a BTreeMap<&'static str, Vec<WrkResult>>,
    broken: &'a BTreeMap<&'static str, String>,
    memory: Option<&'a Memory>,
    module_bytes: u64,
    noop_bytes: u64,
    notes: &'a [String],
    elapsed: Duration,
    envoy_log_bytes: usize,
}

struct Summary {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

enum Outcome {
    Measured { ratio: f64, floor: Option<f64>, pass: Option<bool> },
    Unavailable(String),
}

impl Report<'_> {
    fn summary(&self, key: &str) -> Option<Summary> {
        if self.broken.contains_key(key) {
            return None;
        }
        let rs = self.runs.get(key)?;
        Some(Summary {
            rps: median(rs.iter().map(|r| r.rps).collect()),
            p50_us: median(rs.iter().map(|r| r.p50_us).collect()),
            p99_us: median(rs.iter().map(|r| r.p99_us).collect()),
        })
    }

    /// The median over rounds of a/b.
    fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        let (ra, rb) = (self.runs.get(a)?, self.runs.get(b)?);
        if self.broken.contains_key(a) || self.broken.contains_key(b) {
            return None;
        }
        let rs: Vec<f64> =
            ra.iter().zip(rb).filter(|(x, y)| y.rps > 0.0 && x.rps >= 0.0).map(|(x, y)| x.rps / y.rps).collect();
        (!rs.is_empty()).then(|| median(rs))
    }

    fn outcome(&self, sc: &Scenario) -> Outcome {
        for k in [sc.variant, sc.compared_with] {
            if let Some(why) = self.broken.get(k) {
                let who = if k == sc.variant { String::new() } else { format!("{k}: ") };
                return Outcome::Unavailable(format!("{who}{why}"));
            }
        }
        match self.ratio(sc.variant, sc.compared_with) {
            Some(ratio) => Outcome::Measured {
                ratio,
                floor: self.ratio(sc.variant, "noop_wasm"),
                pass: sc.target.map(|t| ratio >= t),
            },
            None => Outcome::Unavailable("error: not measured".into()),
        }
    }

    fn label(&self, key: &str) -> &'static str {
        self.variants.iter().find(|v| v.key == key).map_or("?", |v| v.label)
    }

    fn markdown(&self) -> String {
        let mut o = String::new();
        let m = self.machine;
        o += &format!(
            "Portcullis bench, {} — {} ({} cores), {}, Envoy {}, {}.\n",
            m.date, m.cpu, m.cores, m.kernel, m.envoy, m.wrk
        );
        o += &format!(
            "Envoy `--concurrency 1` pinned to cpu {}, `wrk -t1 -c{}` pinned to cpu {}; {} interleaved rounds of {} s per variant; \
             requests/s and latencies are medians over rounds, ratios are medians of per-round ratios.\n\n",
            self.s.envoy_cpu, self.s.connections, self.s.wrk_cpu, self.s.rounds, self.s.seconds
        );
        o += "| Scenario | Portcullis req/s | p50 | p99 | Compared with | its req/s | Ratio | Target | vs wasm floor | Result |\n";
        o += "|---|---:|---:|---:|---|---:|---:|---:|---:|---|\n";
        for sc in &SCENARIOS {
            let target = sc.target.map_or("report".to_string(), |t| format!("≥ {t:.1}×"));
            let cmp_label = self.label(sc.compared_with);
            let cmp_rps = self.summary(sc.compared_with).map_or("—".into(), |x| fmt_rps(x.rps));
            match (self.outcome(sc), self.summary(sc.variant)) {
                (Outcome::Measured { ratio, floor, pass }, Some(x)) => {
                    o += &format!(
                        "| {} | {} | {} | {} | {} | {} | {:.2}× | {} | {} | {} |\n",
                        sc.name,
                        fmt_rps(x.rps),
                        fmt_us(x.p50_us),
                        fmt_us(x.p99_us),
                        cmp_label,
                        cmp_rps,
                        ratio,
                        target,
                        floor.map_or("—".into(), |f| format!("{f:.2}×")),
                        match pass {
                            Some(true) => "PASS",
                            Some(false) => "MISS",
                            None => "(info)",
                        }
                    );
                }
                (outcome, _) => {
                    let why = match outcome {
                        Outcome::Unavailable(w) => w,
                        Outcome::Measured { .. } => "error: not measured".into(),
                    };
                    o += &format!(
                        "| {} | — | — | — | {} | {} | — | {} | — | {} |\n",
                        sc.name,
                        cmp_label,
                        cmp_rps,
                        target,
                        md_escape(&why)
                    );
                }
            }
        }
        o += "\nEvery variant (requests/s, latency):\n\n";
        o += "| Variant | req/s | p50 | p99 | vs no filter | vs wasm floor | rounds (req/s) |\n";
        o += "|---|---:|---:|---:|---:|---:|---|\n";
        for v in self.variants {
            match self.summary(v.key) {
                Some(x) => {
                    let rounds: Vec<String> =
                        self.runs.get(v.key).map(|rs| rs.iter().map(|r| fmt_rps(r.rps)).collect()).unwrap_or_default();
                    o += &format!(
                        "| {} | {} | {} | {} | {} | {} | {} |\n",
                        v.label,
                        fmt_rps(x.rps),
                        fmt_us(x.p50_us),
                        fmt_us(x.p99_us),
                        self.ratio(v.key, "no_filter").map_or("—".into(), |r| format!("{r:.2}×")),
                        self.ratio(v.key, "noop_wasm").map_or("—".into(), |r| format!("{r:.2}×")),
                        rounds.join(", ")
                    );
                }
                None => {
                    let why = self.broken.get(v.key).cloned().unwrap_or_else(|| "not measured".into());
                    o += &format!("| {} | — | — | — | — | — | {} |\n", v.label, md_escape(&why));
                }
            }
        }
        o += "\nMemory and size:\n\n";
        o += "| What | Value | Target | Result |\n|---|---:|---:|---|\n";
        match self.memory {
            Some(mem) => {
                let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
                o += &format!("| Envoy RSS, no filter (after traffic) | {} | | |\n", mib(mem.no_filter_bytes));
                o += &format!("| Envoy RSS, no-op wasm filter (the VM's own share) | {} | | |\n", mib(mem.noop_bytes));
                o += &format!(
                    "| Envoy RSS, Portcullis with {API_KEYS} API keys{}, before traffic | {} | | |\n",
                    if mem.rate_limited { " + rate limit" } else { "" },
                    mib(mem.portcullis_idle_bytes)
                );
                let result = match (&mem.error, mem.delta_mib() <= MEMORY_TARGET_MIB) {
                    (Some(e), _) => format!("error: {}", md_escape(e)),
                    (None, true) => "PASS".into(),
                    (None, false) => "MISS".into(),
                };
                o += &format!(
                    "| … after {} distinct {}clients | {} (+{:.1} MiB) | ≤ +{MEMORY_TARGET_MIB:.0} MiB | {}{} |\n",
                    mem.clients_sent,
                    if mem.rate_limited { "rate-limited " } else { "" },
                    mib(mem.portcullis_loaded_bytes),
                    mem.delta_mib(),
                    result,
                    mem.note.as_ref().map_or(String::new(), |n| format!(" ({})", md_escape(n)))
                );
            }
            None => o += "| Memory | skipped (BENCH_SKIP_MEMORY=1) | | |\n",
        }
        o += &format!(
            "| Module size, dist/portcullis.wasm | {} bytes ({:.0} KiB) | | |\n",
            self.module_bytes,
            self.module_bytes as f64 / 1024.0
        );
        o += &format!("| No-op filter module | {} bytes | | |\n", self.noop_bytes);
        for n in self.notes {
            o += &format!("\nNote: {n}\n");
        }
        o += &format!(
            "\nBench took {:.0} s. Reproduce: `make bench` (results in target/bench/results.json).\n",
            self.elapsed.as_secs_f64()
        );
        o
    }

    fn json(&self) -> Value {
        let m = self.machine;
        let variants: Map<String, Value> = self
            .variants
            .iter()
            .map(|v| {
                let rounds: Vec<Value> = self
                    .runs
                    .get(v.key)
                    .map(|rs| {
                        rs.iter()
                            .map(|r| {
                                json!({"rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us, "requests": r.requests,
                                            "non_2xx": r.non_2xx, "socket_errors": r.socket_errors})
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let s = self.summary(v.key);
                (
                    v.key.to_string(),
                    json!({
                        "label": v.label,
                        "listener": v.listener,
                        "status": self.broken.get(v.key).cloned().unwrap_or_else(|| "ok".into()),
                        "rps": s.as_ref().map(|x| x.rps),
                        "p50_us": s.as_ref().map(|x| x.p50_us),
                        "p99_us": s.as_ref().map(|x| x.p99_us),
                        "vs_no_filter": self.ratio(v.key, "no_filter"),
                        "vs_wasm_floor": self.ratio(v.key, "noop_wasm"),
                        "rounds": rounds,
                    }),
                )
            })
            .collect();
        let scenarios: Vec<Value> = SCENARIOS
            .iter()
            .map(|sc| {
                let (ratio, floor, result) = match self.outcome(sc) {
                    Outcome::Measured { ratio, floor, pass } => (
                        Some(ratio),
                        floor,
                        match pass {
                            Some(true) => "PASS".to_string(),
                            Some(false) => "MISS".to_string(),
                            None => "info".to_string(),
                        },
                    ),
                    Outcome::Unavailable(why) => (None, None, why),
                };
                let s = self.summary(sc.variant);
                json!({
                    "scenario": sc.name,
                    "variant": sc.variant,
                    "compared_with": sc.compared_with,
                    "rps": s.as_ref().map(|x| x.rps),
                    "p50_us": s.as_ref().map(|x| x.p50_us),
                    "p99_us": s.as_ref().map(|x| x.p99_us),
                    "compared_rps": self.summary(sc.compared_with).map(|x| x.rps),
                    "ratio": ratio,
                    "target": sc.target,
                    "vs_wasm_floor": floor,
                    "result": result,
                })
            })
            .collect();
        let memory = self.memory.map(|mem| {
            json!({
                "no_filter_rss_bytes": mem.no_filter_bytes,
                "noop_wasm_rss_bytes": mem.noop_bytes,
                "portcullis_idle_rss_bytes": mem.portcullis_idle_bytes,
                "portcullis_loaded_rss_bytes": mem.portcullis_loaded_bytes,
                "delta_mib": mem.delta_mib(),
                "target_mib": MEMORY_TARGET_MIB,
                "api_keys": API_KEYS,
                "distinct_clients": mem.clients_sent,
                "rate_limited": mem.rate_limited,
                "note": mem.note,
                "error": mem.error,
                "result": if mem.error.is_some() { "error" } else if mem.delta_mib() <= MEMORY_TARGET_MIB { "PASS" } else { "MISS" },
            })
        });
        json!({
            "date": m.date,
            "machine": {"cpu": m.cpu, "cores": m.cores, "kernel": m.kernel, "envoy": m.envoy, "wrk": m.wrk},
            "settings": {
                "rounds": self.s.rounds, "seconds": self.s.seconds, "connections": self.s.connections,
                "envoy_cpu": self.s.envoy_cpu, "wrk_cpu": self.s.wrk_cpu, "concurrency": 1
            },
            "scenarios": scenarios,
            "variants": variants,
            "memory": memory,
            "module_bytes": self.module_bytes,
            "noop_module_bytes": self.noop_bytes,
            "notes": self.notes,
            "envoy_log_bytes": self.envoy_log_bytes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "command": "make bench",
        })
    }
}

fn fmt_rps(r: f64) -> String {
    if r >= 1000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 3s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   412.33us  101.00us   3.10ms   90.00%\n    Req/Sec    19.50k     1.00k   21.00k    70.00%\n  Latency Distribution\n     50%  398.00us\n     75%  430.00us\n     90%  480.00us\n     99%    1.21ms\n  58500 requests in 3.00s, 5.00MB read\n  Non-2xx or 3xx responses: 3\n  Socket errors: connect 0, read 1, write 0, timeout 2\nRequests/sec:  19498.12\nTransfer/sec:      1.67MB\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.rps, 19498.12);
        assert_eq!(r.p50_us, 398.0);
        assert_eq!(r.p99_us, 1210.0);
        assert_eq!((r.requests, r.non_2xx, r.socket_errors), (58500, 3, 3));
        assert_eq!(duration_us("2.00s"), Some(2e6));
        assert!(parse_wrk("garbage").is_none());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn refusals_name_the_listener() {
        let ls = vec![Listener { name: "pc_jwt_rl", filters: vec![], portcullis: true }];
        let log = "[2025][warning][wasm] [source/extensions/common/wasm/context.cc:1195] wasm log pc_jwt_rl portcullis pc_jwt_rl: invalid configuration: rate_limit: not yet\n";
        assert_eq!(find_refusals(log, &ls), vec![("pc_jwt_rl", "rate_limit: not yet".to_string())]);
    }
}
