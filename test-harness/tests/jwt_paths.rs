//! Every supported algorithm verified end to end through Envoy (2 workers), on the native
//! path (Envoy's `verify_signature`, BoringSSL) where it applies and on the pure-Rust path,
//! with the stats showing which path decided; and the same forgeries refused on both.

use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::Gateway;
use portcullis_harness::http;
use portcullis_harness::idp::{forge, mint_hs256, Alg, TestIdp};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::json;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

fn start(idp: &TestIdp, up: &EchoUpstream, crypto: &str) -> Envoy {
    let cfg = json!({
        "crypto": crypto,
        "providers": {"corp": {
            "issuer": idp.issuer(), "audiences": ["orders-api"],
            "local_jwks": {"inline_string": idp.public_jwks_for(&["rsa-a", "p256-a", "p384-a", "ed25519-a"])},
            "hmac_secret_env": "HMAC"
        }}
    });
    Gateway::new(&cfg).env("HMAC", SECRET).cluster("upstream", up.port).start()
}

fn tokens(idp: &TestIdp) -> Vec<(&'static str, String, bool)> {
    let c = idp.default_claims("orders-api");
    let mut out = Vec::new();
    for (alg, kid, native) in [
        (Alg::RS256, "rsa-a", true),
        (Alg::RS384, "rsa-a", true),
        (Alg::RS512, "rsa-a", true),
        (Alg::PS256, "rsa-a", false),
        (Alg::PS384, "rsa-a", false),
        (Alg::PS512, "rsa-a", false),
        (Alg::ES256, "p256-a", true),
        (Alg::ES384, "p384-a", true),
        (Alg::EdDSA, "ed25519-a", false),
    ] {
        out.push((alg.name(), idp.mint(alg, kid, c.clone()), native));
    }
    out.push(("HS256", mint_hs256(SECRET.as_bytes(), None, c), false));
    out
}

fn status(envoy: &Envoy, token: &str) -> u16 {
    http::get(&envoy.url("/"), &[("authorization", &format!("Bearer {token}"))]).unwrap().status
}

#[test]
fn every_algorithm_on_both_paths() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    for crypto in ["auto", "pure"] {
        let envoy = start(&idp, &up, crypto);
        let toks = tokens(&idp);
        let mut expect_native = 0;
        for (name, token, native) in &toks {
            assert_eq!(status(&envoy, token), 200, "{name} with crypto={crypto}");
            if crypto == "auto" && *native {
                expect_native += 1;
            }
            // Tampered signature: refused on either path.
            let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
            let sig = portcullis::wire::b64::decode(&parts[2]).unwrap();
            let mut bad = sig.clone();
            bad[sig.len() / 2] ^= 0x01;
            parts[2] = portcullis::wire::b64::encode(&bad);
            assert_eq!(status(&envoy, &parts.join(".")), 401, "tampered {name} with crypto={crypto}");
        }
        let native = envoy.stat("wasmcustom.portcullis.crypto.native");
        let pure = envoy.stat("wasmcustom.portcullis.crypto.pure");
        assert_eq!(native, expect_native, "crypto={crypto}: RS*/ES* go native only in auto mode");
        assert_eq!(native + pure, toks.len() as u64);
    }
    // Algorithm confusion: HS256 signed with the RSA public key as the secret.
    let envoy = start(&idp, &up, "auto");
    let confused = idp.mint(Alg::HS256, "rsa-a", idp.default_claims("orders-api"));
    assert_eq!(status(&envoy, &confused), 401);
    let none = forge(r#"{"alg":"none"}"#, &idp.default_claims("orders-api").to_string(), b"");
    assert_eq!(status(&envoy, &none), 401);
}

/// `dist/portcullis-native.wasm` (built without pure-Rust crypto): RS*/ES* verified by
/// Envoy's BoringSSL, HS256 in Rust, and what only the pure path verifies refused — PS* and
/// EdDSA tokens get 401 and their keys are skipped, `crypto: "pure"` is a configuration error.
#[test]
fn the_native_only_module_verifies_through_envoy_and_refuses_the_rest() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let wasm = portcullis_harness::envoy::native_wasm_path();
    let cfg = |crypto: &str| {
        json!({
            "crypto": crypto,
            "providers": {"corp": {
                "issuer": idp.issuer(), "audiences": ["orders-api"],
                "local_jwks": {"inline_string": idp.public_jwks_for(&["rsa-a", "p256-a", "p384-a", "ed25519-a"])},
                "hmac_secret_env": "HMAC"
            }}
        })
    };
    let envoy = Gateway::new(&cfg("auto")).wasm(&wasm).env("HMAC", SECRET).cluster("upstream", up.port).start();
    let mut native = 0;
    for (name, token, on_host) in tokens(&idp) {
        let pure_only = matches!(name, "PS256" | "PS384" | "PS512" | "EdDSA");
        assert_eq!(status(&envoy, &token), if pure_only { 401 } else { 200 }, "{name}");
        native += u64::from(on_host);
    }
    assert_eq!(envoy.stat("wasmcustom.portcullis.crypto.native"), native, "RS*/ES* decided by Envoy");
    assert!(envoy.log().contains("Ed25519 keys need the pure-Rust build"), "the skipped key is logged");
    let refused = Gateway::new(&cfg("pure")).wasm(&wasm).env("HMAC", SECRET).cluster("upstream", up.port).try_start();
    let log = refused.err().expect("crypto: pure is refused by the native-only module");
    assert!(log.contains("crypto: \"pure\" needs the pure-Rust build"), "{log}");
}
