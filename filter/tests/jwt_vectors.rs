//! JWT verification against the vectors in `tests/vectors/` (see its README.md; regenerate
//! with `cargo run -p portcullis-harness --bin gen-vectors`).
//!
//! Every case runs three ways and must give the same answer each time:
//! 1. pure Rust only (`allow_native = false`);
//! 2. native allowed but unavailable ([`NoNative`]): the fallback to the pure path;
//! 3. native allowed through [`PureBackedNative`], a stand-in for Envoy's `verify_signature`
//!    that re-parses the DER SubjectPublicKeyInfo and DER ECDSA signature it is handed and
//!    verifies them independently (jwt-simple from the SPKI, not from the JWK's `n`/`e`/`x`/`y`).
//!    RS* and ES* positives must be decided by it ([`Path::Native`]), which proves the native
//!    dispatch is fed the right hash, key, signature and message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::BTreeSet;

use jwt_simple::algorithms::{
    ECDSAP256PublicKeyLike, ECDSAP384PublicKeyLike, ES256PublicKey, ES384PublicKey, Ed25519PublicKey,
    EdDSAPublicKeyLike, RS256PublicKey, RS384PublicKey, RS512PublicKey, RSAPublicKeyLike,
};
use jwt_simple::prelude::{NoCustomClaims, UnixTimeStamp, VerificationOptions};
use portcullis::config::{self, KeySource, Provider};
use portcullis::crypto::jwks::{self, Alg, KeyMaterial, KeySet};
use portcullis::crypto::{self, NativeOutcome, NativeVerifier, NoNative, Path};
use portcullis::jwt;
use portcullis::reason::Reason;
use portcullis::wire::b64;
use portcullis::wire::der::{self, Curve};
use serde_json::{json, Value};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const FILES: [&str; 5] = ["rfc7515.json", "rfc8037.json", "positive.json", "hmac.json", "negative.json"];

/// The provider and key set a vector file describes, built through the public configuration
/// API (`local_jwks.inline_string`).
fn fixture(doc: &Value) -> (Provider, KeySet) {
    let mut p = doc["provider"].clone();
    p["local_jwks"] = json!({"inline_string": doc["jwks"].to_string()});
    let cfg = json!({"providers": {"vectors": p}}).to_string();
    let config = config::parse(cfg.as_bytes(), &|_| None).unwrap_or_else(|e| panic!("vector config: {e}"));
    let mut provider = config.providers.into_iter().next().expect("one provider");
    if let Some(k) = doc["hmac_secret_b64url"].as_str() {
        // Not expressible as the configuration's UTF-8 hmac_secret (RFC 7515 A.1).
        provider.hmac_secret = Some(b64::decode(k).expect("hmac_secret_b64url"));
    }
    let KeySource::Local(keys) = provider.keys.clone() else { panic!("local key set expected") };
    (provider, keys)
}

/// Envoy's `verify_signature`, played by jwt-simple from what the filter hands over.
struct PureBackedNative<'a> {
    keys: &'a KeySet,
    calls: RefCell<Vec<String>>,
}

impl<'a> PureBackedNative<'a> {
    fn new(keys: &'a KeySet) -> Self {
        PureBackedNative { keys, calls: RefCell::new(Vec::new()) }
    }
}

fn signature_only() -> VerificationOptions {
    VerificationOptions {
        accept_future: true,
        artificial_time: Some(UnixTimeStamp::from_secs(0)),
        time_tolerance: None,
        max_token_length: None,
        max_header_length: Some(64 * 1024),
        ..VerificationOptions::default()
    }
}

impl NativeVerifier for PureBackedNative<'_> {
    fn verify(&self, hash: &str, spki: &[u8], signature: &[u8], message: &[u8]) -> NativeOutcome {
        self.calls.borrow_mut().push(hash.to_string());
        let key = self
            .keys
            .keys
            .iter()
            .find(|k| match &k.material {
                KeyMaterial::Rsa { spki: s, .. } | KeyMaterial::Ec { spki: s, .. } => s == spki,
                KeyMaterial::Ed25519 { .. } => false,
            })
            .expect("the SPKI handed to the host is the one built for a key of the set");
        let message = std::str::from_utf8(message).expect("the signing input is ASCII");
        assert_eq!(message.matches('.').count(), 1, "the signing input is header.payload: {message}");
        let o = || Some(signature_only());
        let valid = match &key.material {
            KeyMaterial::Ec { curve, .. } => {
                let raw = der::ecdsa_der_to_raw(*curve, signature).expect("a DER ECDSA-Sig-Value");
                assert_eq!(raw.len(), 2 * curve.coordinate_len());
                assert_eq!(der::ecdsa_raw_to_der(*curve, &raw).as_deref(), Some(signature), "minimal DER");
                let token = format!("{message}.{}", b64::encode(&raw));
                match (curve, hash) {
                    (Curve::P256, "sha256") => ES256PublicKey::from_der(spki)
                        .expect("P-256 SPKI")
                        .verify_token::<NoCustomClaims>(&token, o())
                        .is_ok(),
                    (Curve::P384, "sha384") => ES384PublicKey::from_der(spki)
                        .expect("P-384 SPKI")
                        .verify_token::<NoCustomClaims>(&token, o())
                        .is_ok(),
                    other => panic!("hash/curve mismatch handed to the host: {other:?}"),
                }
            }
            KeyMaterial::Rsa { .. } => {
                let token = format!("{message}.{}", b64::encode(signature));
                match hash {
                    "sha256" => RS256PublicKey::from_der(spki)
                        .expect("RSA SPKI")
                        .verify_token::<NoCustomClaims>(&token, o())
                        .is_ok(),
                    "sha384" => RS384PublicKey::from_der(spki)
                        .expect("RSA SPKI")
                        .verify_token::<NoCustomClaims>(&token, o())
                        .is_ok(),
                    "sha512" => RS512PublicKey::from_der(spki)
                        .expect("RSA SPKI")
                        .verify_token::<NoCustomClaims>(&token, o())
                        .is_ok(),
                    other => panic!("unexpected hash {other}"),
                }
            }
            KeyMaterial::Ed25519 { .. } => unreachable!(),
        };
        if valid {
            NativeOutcome::Valid
        } else {
            NativeOutcome::Invalid
        }
    }
}

fn outcome(r: &Result<(jwt::Verified, Path), Reason>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(reason) => reason.code().to_string(),
    }
}

/// Runs every case of a vector file; returns (cases, ok cases). Collects every mismatch
/// before failing, so one run shows them all.
fn run_file(name: &str) -> (usize, usize) {
    let doc = load(name);
    let (provider, keys) = fixture(&doc);
    let cases = doc["cases"].as_array().unwrap_or_else(|| panic!("{name}: no cases"));
    let mut failures = Vec::new();
    let mut oks = 0;
    for case in cases {
        let cname = case["name"].as_str().unwrap();
        let token = case["token"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let now = case["now"].as_u64().or(doc["now"].as_u64()).unwrap();
        let pure = jwt::verify(token, &provider, &keys, now, &NoNative, false);
        let fallback = jwt::verify(token, &provider, &keys, now, &NoNative, true);
        let host = PureBackedNative::new(&keys);
        let native = jwt::verify(token, &provider, &keys, now, &host, true);
        let got = [outcome(&pure), outcome(&fallback), outcome(&native)];
        if got.iter().any(|g| g != expect) {
            failures.push(format!(
                "{name}/{cname}: expected {expect}, got pure={} fallback={} native={}",
                got[0], got[1], got[2]
            ));
            continue;
        }
        if let (Ok((verified, pure_path)), Ok((_, native_path))) = (&pure, &native) {
            oks += 1;
            assert_eq!(*pure_path, Path::Pure, "{name}/{cname}");
            assert_eq!(verified.payload_b64, token.split('.').nth(1).unwrap(), "{name}/{cname}");
            let alg = jwt::parse(token, usize::MAX).unwrap().alg;
            let native_capable = matches!(alg, Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::ES256 | Alg::ES384);
            let want = if native_capable { Path::Native } else { Path::Pure };
            if *native_path != want {
                failures.push(format!("{name}/{cname}: {} decided on {native_path:?}, expected {want:?}", alg.name()));
            }
            let calls = host.calls.borrow();
            if native_capable == calls.is_empty() {
                failures.push(format!("{name}/{cname}: host calls {calls:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    (cases.len(), oks)
}

#[test]
fn rfc7515_appendix_a() {
    let (n, ok) = run_file("rfc7515.json");
    assert!(n >= 5 && ok == 3, "A.1, A.2 and A.3 verify");
}

#[test]
fn rfc8037_ed25519() {
    let (_, ok) = run_file("rfc8037.json");
    assert_eq!(ok, 1);
    let doc = load("rfc8037.json");
    for sig in doc["signatures"].as_array().unwrap() {
        let name = sig["name"].as_str().unwrap();
        let (set, warnings) = jwks::parse(json!({"keys": [sig["jwk"]]}).to_string().as_bytes()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let KeyMaterial::Ed25519 { x } = &set.keys[0].material else { panic!("{name}: not an Ed25519 key") };
        let input = sig["signing_input"].as_str().unwrap();
        let signature = b64::decode(sig["signature"].as_str().unwrap()).unwrap();
        // The raw Ed25519 check (A.5): the payload is text, which the JWT path refuses.
        let pk = Ed25519PublicKey::from_bytes(x).unwrap();
        let valid = match signature.as_slice().try_into() {
            Ok(s) => pk.public_key().as_ref().verify(input, &s).is_ok(),
            Err(_) => false,
        };
        assert_eq!(valid, sig["valid"].as_bool().unwrap(), "{name}");
    }
    // The pure path with a key built by jwks::parse: the RFC key over a JSON payload.
    let (_, keys) = fixture(&doc);
    let jwt_case = doc["cases"].as_array().unwrap().iter().find(|c| c["expect"] == "ok").unwrap();
    let token = jwt_case["token"].as_str().unwrap();
    assert!(crypto::verify_pure(token, Alg::EdDSA, &keys.keys[0]));
    let mut tampered = token.to_string();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'Q' } else { 'A' });
    assert!(!crypto::verify_pure(&tampered, Alg::EdDSA, &keys.keys[0]));
    assert!(!crypto::verify_pure(token, Alg::ES256, &keys.keys[0]), "the key decides the algorithm");
}

#[test]
fn positive() {
    let (n, ok) = run_file("positive.json");
    assert_eq!(n, ok, "every positive vector verifies");
}

#[test]
fn hmac() {
    run_file("hmac.json");
}

#[test]
fn negative() {
    let (n, ok) = run_file("negative.json");
    assert_eq!(ok, 0, "no negative vector verifies");
    assert!(n >= 40, "the negative table has {n} cases");
}

#[test]
fn vector_files_are_well_formed() {
    let codes: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
    let mut algs = BTreeSet::new();
    for file in FILES {
        let doc = load(file);
        let mut names = BTreeSet::new();
        assert!(doc["now"].is_u64(), "{file}: now");
        assert!(doc["description"].is_string(), "{file}: description");
        for case in doc["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            assert!(names.insert(name), "{file}: duplicate case {name}");
            let expect = case["expect"].as_str().unwrap();
            assert!(expect == "ok" || codes.contains(expect), "{file}/{name}: unknown reason code {expect}");
            if expect == "ok" {
                algs.insert(jwt::parse(case["token"].as_str().unwrap(), usize::MAX).unwrap().alg.name());
            }
        }
    }
    let all =
        ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512"];
    assert_eq!(algs, all.into_iter().collect(), "a positive vector for every supported algorithm");
}

#[test]
fn vectors_do_not_expire() {
    // Verification takes `now` from the file, never the clock: the same answers far in the future.
    let doc = load("positive.json");
    let (provider, keys) = fixture(&doc);
    let case = &doc["cases"][0];
    let token = case["token"].as_str().unwrap();
    let now = doc["now"].as_u64().unwrap();
    assert!(jwt::verify(token, &provider, &keys, now, &NoNative, false).is_ok());
    assert_eq!(
        jwt::verify(token, &provider, &keys, now + 10 * 365 * 86_400, &NoNative, false).unwrap_err(),
        Reason::TokenExpired
    );
}
