//! The pure core alone, without Envoy's noise: `make bench-core` (criterion), and the
//! instruction count of each case under callgrind (`bench/callgrind.sh`), which is repeatable
//! on a noisy machine.
//!
//! Cases (each is one request through `flow::start`, the whole per-request decision):
//! * `decide/jwt_cached`: RS256 token from a local JWKS, verified-token cache hit;
//! * `decide/jwt_uncached_native_stub`: the same token, cache cleared every time, with a
//!   native verifier that answers "valid" at once: everything but the signature math;
//! * `decide/rs256_pure_uncached`, `decide/es256_pure_uncached`: cache cleared, no native
//!   verifier (`NoNative`): the pure-Rust signature check a host without
//!   `verify_signature` pays;
//! * `decide/api_key_10k`: API key looked up among 10,000 configured keys.
//!
//! With `PORTCULLIS_CORE_CASE=<case>` (and `PORTCULLIS_CORE_ITERS=<n>`) the binary runs that
//! case n times and exits, for callgrind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::Criterion;
use jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair, RS256KeyPair, RSAKeyPairLike,
};
use jwt_simple::claims::Claims;
use portcullis::config::{self, Config};
use portcullis::crypto::{NativeOutcome, NativeVerifier, NoNative};
use portcullis::flow::{self, Action, Ctx, Step, WorkerState};
use portcullis::request::RequestView;
use portcullis::store::MemStore;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

const RSA_PEM: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../test-harness/keys/rsa-a.pem"));
const P256_PEM: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../test-harness/keys/p256-a.pem"));
const ISSUER: &str = "https://bench.portcullis.test";
const AUDIENCE: &str = "bench-api";
const CASES: [&str; 5] =
    ["jwt_cached", "jwt_uncached_native_stub", "rs256_pure_uncached", "es256_pure_uncached", "api_key_10k"];

/// A host whose native verifier accepts every signature at once.
struct AlwaysValid;

impl NativeVerifier for AlwaysValid {
    fn verify(&self, _: &str, _: &[u8], _: &[u8], _: &[u8]) -> NativeOutcome {
        NativeOutcome::Valid
    }
}

struct Fixture {
    jwt_cfg: Config,
    api_cfg: Config,
    rs_token: String,
    es_token: String,
    api_key: String,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn claims() -> jwt_simple::claims::JWTClaims<Map<String, Value>> {
    let mut custom = Map::new();
    custom.insert("client_id".into(), json!("bench-client"));
    custom.insert("scope".into(), json!("orders:read"));
    Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_hours(1))
        .with_issuer(ISSUER)
        .with_audience(AUDIENCE)
        .with_subject("user-1")
}

fn fixture() -> Fixture {
    let b = |s: &[u8]| portcullis::wire::b64::encode(s);
    let rsa = RS256KeyPair::from_pem(RSA_PEM).unwrap().with_key_id("rsa-a");
    let parts = rsa.public_key().to_components();
    let ec = ES256KeyPair::from_pem(P256_PEM).unwrap().with_key_id("p256-a");
    let pt = ec.public_key().public_key().to_bytes_uncompressed();
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-a", "use": "sig", "n": b(&parts.n), "e": b(&parts.e)},
        {"kty": "EC", "crv": "P-256", "kid": "p256-a", "use": "sig", "x": b(&pt[1..33]), "y": b(&pt[33..65])}
    ]});
    let jwt_doc = json!({"providers": {"bench": {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": jwks.to_string()},
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}]
    }}});
    let keys: Vec<String> = (0..10_000).map(|i| format!("bench-key-{i:05}")).collect();
    let clients: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let h: String = Sha256::digest(k.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
            json!({"client_id": format!("client-{i}"), "keys_sha256": [h]})
        })
        .collect();
    let api_doc = json!({"api_keys": {"from_headers": ["x-api-key"], "clients": clients}});
    let parse = |doc: &Value| config::parse(doc.to_string().as_bytes(), &|_| None).unwrap();
    Fixture {
        jwt_cfg: parse(&jwt_doc),
        api_cfg: parse(&api_doc),
        rs_token: rsa.sign(claims()).unwrap(),
        es_token: ec.sign(claims()).unwrap(),
        api_key: keys[5_000].clone(),
    }
}

fn request(header: &str, value: &str) -> RequestView {
    RequestView {
        method: "GET".into(),
        path: "/orders/42".into(),
        headers: [(":authority", Some("api.example.com")), ("user-agent", Some("bench")), (header, Some(value))]
            .into_iter()
            .collect(),
        source: portcullis::request::PeerAddress::known(Some("127.0.0.1:40000".into())),
        ..RequestView::default()
    }
}

/// One prepared case: a closure that decides one request and says whether it was allowed.
struct Case<'a> {
    cfg: &'a Config,
    state: WorkerState,
    store: MemStore,
    native: &'a dyn NativeVerifier,
    request: RequestView,
    clear_cache: bool,
}

impl Case<'_> {
    fn once(&mut self) -> bool {
        if self.clear_cache {
            self.state.cache.clear();
        }
        let mut ctx = Ctx {
            cfg: self.cfg,
            state: &mut self.state,
            store: &self.store,
            native: self.native,
            signer: &portcullis::password::NoSigner,
            peer: &portcullis::request::NoPeer,
            now_ms: now_ms(),
        };
        match flow::start(&mut ctx, black_box(self.request.clone())) {
            Step::Done(d) => matches!(d.action, Action::Continue(_)),
            _ => false,
        }
    }
}

fn case<'a>(f: &'a Fixture, name: &str) -> Case<'a> {
    let bearer = |t: &str| request("authorization", &format!("Bearer {t}"));
    let (cfg, native, request, clear_cache): (&Config, &dyn NativeVerifier, RequestView, bool) = match name {
        "jwt_cached" => (&f.jwt_cfg, &NoNative, bearer(&f.rs_token), false),
        "jwt_uncached_native_stub" => (&f.jwt_cfg, &AlwaysValid, bearer(&f.rs_token), true),
        "rs256_pure_uncached" => (&f.jwt_cfg, &NoNative, bearer(&f.rs_token), true),
        "es256_pure_uncached" => (&f.jwt_cfg, &NoNative, bearer(&f.es_token), true),
        "api_key_10k" => (&f.api_cfg, &NoNative, request("x-api-key", &f.api_key), false),
        other => panic!("unknown case {other:?}; cases: {CASES:?}"),
    };
    let mut c = Case { cfg, state: WorkerState::new(cfg), store: MemStore::default(), native, request, clear_cache };
    // Warm: keys parsed, the cache filled for the cached case; and the request must be allowed,
    // or the case would measure a rejection.
    if !c.once() {
        eprintln!("warning: case {name} is not allowed by the core: it measures a rejection");
    }
    c
}

fn benches(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("decide");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for name in CASES {
        let mut k = case(f, name);
        g.bench_function(name, |b| b.iter(|| k.once()));
    }
    g.finish();
}

fn main() {
    let f = fixture();
    if let Ok(name) = std::env::var("PORTCULLIS_CORE_CASE") {
        let iters: u64 = std::env::var("PORTCULLIS_CORE_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
        let mut k = case(&f, &name);
        let mut allowed = 0u64;
        for _ in 0..iters {
            allowed += u64::from(k.once());
        }
        println!("{name}: {allowed}/{iters} allowed");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &f);
    c.final_summary();
}
