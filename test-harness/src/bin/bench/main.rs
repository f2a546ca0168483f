//! `make bench`: the performance contract of SPEC §5, measured.
//!
//! One Envoy (`--concurrency 1`, pinned to one core with `taskset`) serves a direct-response
//! route on one listener per variant: no filter, the raw no-op Wasm filter (no SDK: the true
//! floor of any Wasm filter), the SDK no-op filter, native `jwt_authn` without and with `jwt_cache_config`, native `api_key_auth`,
//! native `jwt_authn` + `local_ratelimit`, and Portcullis in each matching configuration.
//! `wrk` runs pinned on the other core. Rounds are interleaved (every variant once per round,
//! at least 3 rounds) so machine drift cancels, and every comparison is the median of the
//! per-round ratios. Unique-token variants read pre-generated tokens from a file
//! (`bench/tokens.lua`), so no token repeats within a run.
//!
//! Then memory at `--concurrency 2` (Istio's default): Envoy's RSS with no filter, the raw and
//! SDK no-op filters, Portcullis with one JWT provider, and Portcullis with 10,000 API keys
//! after 100,000 distinct rate-limited clients; and the size of the module.
//!
//! A Portcullis configuration that the module refuses (a feature not in this build yet) does
//! not stop the bench: its row says `n/a (config refused: <message>)`.
//!
//! Output: tables on stdout (Markdown), `target/bench/results.json` and `target/bench/results.md`.
//!
//! Environment: `BENCH_ROUNDS` (default 3, at least 3), `BENCH_SECONDS` (per run, default 3),
//! `BENCH_CONNECTIONS` (default 8), `BENCH_ENVOY_CPU` / `BENCH_WRK_CPU` (default 0 / 1),
//! `BENCH_SKIP_MEMORY=1`, `BENCH_ONLY=memory`, `ENVOY_BIN`, `PORTCULLIS_WASM`, `PORTCULLIS_NATIVE_WASM`, `NOOP_WASM`,
//! `RAW_NOOP_WASM`.
//!
//! Generated tokens are kept in `target/bench/tokens-*` (valid for a week) and reused by the
//! next run. RS256 tokens are signed through `bench/sign_rs256.py` (OpenSSL via Python's
//!
//! The binary's modules: [`scenarios`] (what is measured: variants, loads, the scenario
//! table), [`configs`] (the Envoy listeners: native filters, the no-op filter, Portcullis
//! configurations, starting the bench Envoy), [`tokens`] (signing and caching token files),
//! [`wrk`] (running and parsing wrk), [`memory`] (the RSS measurement) and [`report`] (the
//! Markdown and JSON results).

mod configs;
mod memory;
mod report;
mod scenarios;
mod tokens;
mod wrk;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use portcullis_harness::envoy::{cluster, envoy_bin, repo_root};
use portcullis_harness::http;
use portcullis_harness::idp::{self, TestIdp};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::configs::start_bench_envoy;
use crate::memory::measure_memory;
use crate::report::{machine, Report};
use crate::scenarios::{plan, Inputs, Load, Variant};
use crate::tokens::{sign_rs256_openssl, sign_tokens, token_file, Alg};
use crate::wrk::{ensure_wrk, run_variant, WrkResult};

pub(crate) const ISSUER: &str = "https://bench.portcullis.test";
pub(crate) const AUDIENCE: &str = "bench-api";
/// Tokens on disk are reused while they stay valid this long.
pub(crate) const TOKEN_LIFETIME_S: u64 = 7 * 24 * 3600;
pub(crate) const TOKEN_MIN_REMAINING_S: u64 = 24 * 3600;
/// The most requests/s a unique-token variant is expected to reach on one core; the token
/// files hold 1.5× that for one run.
const UNIQUE_RATE_CEILING: u64 = 20_000;
pub(crate) const API_KEYS: usize = 10_000;
pub(crate) const MEMORY_CLIENTS: usize = 100_000;

fn main() {
    let started = Instant::now();
    let s = Settings::from_env();
    if let Err(e) = run(&s, started) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

pub(crate) struct Settings {
    pub(crate) rounds: usize,
    pub(crate) seconds: u32,
    pub(crate) connections: u32,
    pub(crate) envoy_cpu: String,
    pub(crate) wrk_cpu: String,
    pub(crate) skip_memory: bool,
    pub(crate) wasm: PathBuf,
    /// The native-crypto-only build (`dist/portcullis-native.wasm`), measured for memory.
    pub(crate) native: PathBuf,
    pub(crate) noop: PathBuf,
    /// The raw no-op filter (no SDK): the true floor.
    pub(crate) raw: PathBuf,
    pub(crate) out: PathBuf,
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
            native: portcullis_harness::envoy::native_wasm_path(),
            noop: std::env::var_os("NOOP_WASM")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/noop-filter/wasm32-wasip1/release/noop_filter.wasm")),
            raw: std::env::var_os("RAW_NOOP_WASM")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/raw-noop/wasm32-wasip1/release/raw_noop.wasm")),
            out: root.join("target/bench"),
        }
    }
}

pub(crate) fn run(s: &Settings, started: Instant) -> Result<(), String> {
    std::fs::create_dir_all(&s.out).map_err(|e| format!("{}: {e}", s.out.display()))?;
    ensure_wrk()?;
    for (what, p, hint) in [
        ("Portcullis module", &s.wasm, "make build"),
        ("native-only Portcullis module", &s.native, "make build"),
        ("no-op module", &s.noop, "make noop-wasm"),
        ("raw no-op module", &s.raw, "make noop-wasm"),
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
        for r in &mem.rows {
            println!("   {}: {} B (+{:.1} MiB) {:?} {:?}", r.label, r.rss_bytes, mem.over_mib(r), r.note, r.error);
        }
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
    let native_bytes = crate::memory::file_len(&s.native);
    let noop_bytes = std::fs::metadata(&s.noop).map(|m| m.len()).unwrap_or(0);
    let raw_bytes = crate::memory::file_len(&s.raw);

    let report = Report {
        s,
        machine: &machine,
        variants: &variants,
        runs: &runs,
        broken: &broken,
        memory: memory.as_ref(),
        module_bytes,
        native_bytes,
        noop_bytes,
        raw_bytes,
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

pub(crate) fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The i-th bench API key (distinct, 32 characters).
fn api_key(i: usize) -> String {
    format!("bench-key-{i:05}-{}", &hex(&Sha256::digest(i.to_le_bytes()))[..16])
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}
