//! The PKCS#8 reader the native-only build publishes its JWKS with, checked against
//! jwt-simple (in both builds), and the native-only build itself (`cargo test --lib
//! --no-default-features native_only`; `make unit` runs it): no pure path anywhere, RS*/ES*
//! through the host, the pure-only features refused with a message that names the other build.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jwt_simple::prelude::*;

use crate::crypto::issue::pem_der;
use crate::wire::der::{self, Curve, Pkcs8Public};

const RS256_PEM: &str = include_str!("../password/testdata/rs256.pem");
const ES256_PEM: &str = include_str!("../password/testdata/es256.pem");
const ES384_PEM: &str = include_str!("../password/testdata/es384.pem");
const ED25519_PEM: &str = include_str!("../password/testdata/ed25519.pem");
const ES256_SEC1_PEM: &str = include_str!("../password/testdata/es256-sec1.pem");

fn public(pem: &str) -> Option<Pkcs8Public> {
    der::pkcs8_public(&pem_der(pem)?)
}

#[test]
fn pkcs8_public_halves_match_jwt_simple() {
    let rsa = RS256KeyPair::from_pem(RS256_PEM).unwrap().public_key().to_components();
    let n = rsa.n[rsa.n.iter().take_while(|b| **b == 0).count()..].to_vec();
    assert_eq!(public(RS256_PEM), Some(Pkcs8Public::Rsa { n, e: rsa.e }));
    let p256 = ES256KeyPair::from_pem(ES256_PEM).unwrap().public_key().public_key().to_bytes_uncompressed();
    assert_eq!(public(ES256_PEM), Some(Pkcs8Public::Ec { curve: Curve::P256, point: Some(p256.to_vec()) }));
    let p384 = ES384KeyPair::from_pem(ES384_PEM).unwrap().public_key().public_key().to_bytes_uncompressed();
    assert_eq!(public(ES384_PEM), Some(Pkcs8Public::Ec { curve: Curve::P384, point: Some(p384.to_vec()) }));
    assert_eq!(public(ED25519_PEM), Some(Pkcs8Public::Ed25519));
    assert_eq!(pem_der(ES256_SEC1_PEM), None, "SEC1 (BEGIN EC PRIVATE KEY) is not PKCS#8");
    assert_eq!(pem_der("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----"), None);
    // Truncated or bit-flipped DER is refused, never misread or a panic.
    let der = pem_der(ES256_PEM).unwrap();
    for cut in 0..der.len() {
        let _ = der::pkcs8_public(&der[..cut]);
    }
    for i in 0..der.len() {
        let mut d = der.clone();
        d[i] ^= 0x80;
        let _ = der::pkcs8_public(&d);
    }
    assert_eq!(der::pkcs8_public(&der[..der.len() - 1]), None);
}

/// A PKCS#8 P-256 key without the optional public key (RFC 5915 `[1]`): the reader says so.
fn p256_without_public_key() -> String {
    use base64::Engine;
    let mut ec = vec![0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20];
    ec.extend_from_slice(&[7u8; 32]);
    let mut der = vec![0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13];
    der.extend_from_slice(&[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]);
    der.extend_from_slice(&[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]);
    der.extend_from_slice(&[0x04, 0x27]);
    der.extend_from_slice(&ec);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

#[test]
fn a_p256_key_without_its_public_half_is_read_as_such() {
    assert_eq!(public(&p256_without_public_key()), Some(Pkcs8Public::Ec { curve: Curve::P256, point: None }));
}

#[cfg(not(feature = "pure-crypto"))]
mod native_only {
    use serde_json::{json, Value};

    use super::*;
    use crate::crypto::jwks::{self, Alg};
    use crate::crypto::{verify_with_key, NativeOutcome, NativeVerifier, Path};
    use crate::password::{Issuer, NativeSigner, NoSigner, SignError, SigningAlg};

    /// A host whose verifier always gives `outcome`.
    struct Host(NativeOutcome);

    impl NativeVerifier for Host {
        fn verify(&self, _: &str, _: &[u8], _: &[u8], _: &[u8]) -> NativeOutcome {
            self.0
        }
    }

    fn rsa_jwks() -> Vec<u8> {
        let k = RS256KeyPair::generate(2048).unwrap().with_key_id("r");
        let c = k.public_key().to_components();
        json!({"keys": [{"kty": "RSA", "kid": "r", "n": crate::wire::b64::encode(&c.n), "e": crate::wire::b64::encode(&c.e)}]})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn signatures_are_the_hosts_to_decide_and_nothing_falls_back() {
        let (set, _) = jwks::parse(&rsa_jwks()).unwrap();
        let key = &set.keys[0];
        let token = "e30.e30.AAAA";
        let sig = [0u8; 256];
        for (outcome, want) in
            [(NativeOutcome::Valid, true), (NativeOutcome::Invalid, false), (NativeOutcome::Unavailable, false)]
        {
            assert_eq!(verify_with_key(token, 7, &sig, Alg::RS256, key, &Host(outcome), true), (want, Path::Native));
        }
        // PS256 (no native path) and `allow_native: false` never verify here.
        assert!(!verify_with_key(token, 7, &sig, Alg::PS256, key, &Host(NativeOutcome::Valid), true).0);
        assert!(!verify_with_key(token, 7, &sig, Alg::RS256, key, &Host(NativeOutcome::Valid), false).0);
    }

    #[test]
    fn key_sets_skip_what_only_the_pure_build_verifies() {
        let doc = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": serde_json::from_slice::<Value>(&rsa_jwks()).unwrap()["keys"][0]["n"], "e": "AQAB"},
        ]});
        let (set, warnings) = jwks::parse(doc.to_string().as_bytes()).unwrap();
        assert!(set.keys.is_empty());
        assert_eq!(warnings.len(), 2);
        assert!(warnings.iter().all(|w| w.contains("portcullis.wasm")), "{warnings:?}");
    }

    #[test]
    fn pure_only_features_are_refused_by_name() {
        let e = crate::config::parse(br#"{"crypto":"pure"}"#, &|_| None).unwrap_err();
        assert_eq!(e.path, "crypto");
        assert!(e.message.contains("portcullis.wasm"), "{e}");
        assert!(crate::config::parse(br#"{"crypto":"auto"}"#, &|_| None).is_ok());
        let e = Issuer::from_pem("https://gw", &[], 60, SigningAlg::EdDSA, "k", ED25519_PEM).unwrap_err();
        assert!(e.contains("EdDSA needs the pure-Rust build"), "{e}");
        let e =
            Issuer::from_pem("https://gw", &[], 60, SigningAlg::ES256, "k", &p256_without_public_key()).unwrap_err();
        assert!(e.contains("without its public key"), "{e}");
    }

    /// A host `sign` that answers with the raw signature jwt-simple makes over the same input.
    struct HostSign;

    impl NativeSigner for HostSign {
        fn sign(&self, _hash: &str, pem: &str, message: &[u8]) -> Option<Vec<u8>> {
            let text = std::str::from_utf8(message).ok()?;
            let claims: serde_json::Map<String, Value> =
                serde_json::from_slice(&crate::wire::b64::decode(text.split_once('.')?.1)?).ok()?;
            let k = ES256KeyPair::from_pem(pem).ok()?.with_key_id("k");
            let token = k.sign(crate::crypto::issue::custom_only(&claims)).ok()?;
            let raw = crate::wire::b64::decode(token.strip_prefix(text)?.strip_prefix('.')?)?;
            der::ecdsa_raw_to_der(Curve::P256, &raw)
        }
    }

    #[test]
    fn issuers_sign_through_the_host_only_and_publish_the_same_keys() {
        for (alg, pem) in [(SigningAlg::ES256, ES256_PEM), (SigningAlg::RS256, RS256_PEM)] {
            let is = Issuer::from_pem("https://gw", &[], 60, alg, "k", pem).unwrap();
            let doc: Value = serde_json::from_str(&is.public_jwks()).unwrap();
            let (set, warnings) = jwks::parse(is.public_jwks().as_bytes()).unwrap();
            assert_eq!((set.keys.len(), warnings.len()), (1, 0), "{doc}");
            let claims = is.claims("alice", "ldap", None, 1_700_000_000, "j");
            assert_eq!(is.sign(&claims, &NoSigner).unwrap_err(), SignError::Pure, "no pure signer to fall back to");
        }
        let is = Issuer::from_pem("https://gw", &[], 60, SigningAlg::ES256, "k", ES256_PEM).unwrap();
        let doc: Value = serde_json::from_str(&is.public_jwks()).unwrap();
        let point = ES256KeyPair::from_pem(ES256_PEM).unwrap().public_key().public_key().to_bytes_uncompressed();
        assert_eq!(doc["keys"][0]["x"], json!(crate::wire::b64::encode(&point[1..33])));
        let (token, path) = is.sign(&is.claims("alice", "ldap", None, 1_700_000_000, "j"), &HostSign).unwrap();
        assert_eq!(path, Path::Native);
        let pk = ES256KeyPair::from_pem(ES256_PEM).unwrap().public_key();
        let o = VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(1_700_000_010)),
            ..VerificationOptions::default()
        };
        assert!(pk.verify_token::<serde_json::Map<String, Value>>(&token, Some(o)).is_ok());
    }
}
