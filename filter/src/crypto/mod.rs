//! Signature verification: the host's native path where it exists, pure Rust otherwise.
//!
//! Envoy offers a `verify_signature` foreign function backed by BoringSSL
//! (`EVP_DigestVerify`): RSA PKCS#1 v1.5 and ECDSA reach native speed through it (FACTS.md:
//! pure-Rust RSA in wasm is ~15× slower). It cannot do RSA-PSS or Ed25519, so PS* and EdDSA
//! always take the pure path (jwt-simple), as does every algorithm on a host without the
//! function or when `crypto: "pure"` is configured. HS* always runs in Rust (HMAC is cheap).
//!
//! The host side is a port: [`NativeVerifier`]. The core never calls the host directly.

pub mod issue;
pub mod jwks;

use jwt_simple::algorithms::{
    ECDSAP256PublicKeyLike, ECDSAP384PublicKeyLike, EdDSAPublicKeyLike, MACLike, RSAPublicKeyLike,
};
use jwt_simple::common::VerificationOptions;
use jwt_simple::prelude::{
    ES256PublicKey, ES384PublicKey, Ed25519PublicKey, HS256Key, HS384Key, HS512Key, NoCustomClaims, PS256PublicKey,
    PS384PublicKey, PS512PublicKey, RS256PublicKey, RS384PublicKey, RS512PublicKey, UnixTimeStamp,
};

use crate::crypto::jwks::{Alg, Jwk, KeyMaterial};
use crate::wire::der::{self, Curve};

/// What the host's native verifier said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeOutcome {
    Valid,
    Invalid,
    /// The host has no native verifier (or it failed to run): use the pure path.
    Unavailable,
}

/// The host's signature verification capability (Envoy: the `verify_signature` foreign
/// function). `hash` is `"sha256"`, `"sha384"` or `"sha512"`; `spki` is a DER
/// SubjectPublicKeyInfo; `signature` is PKCS#1 v1.5 or DER ECDSA.
pub trait NativeVerifier {
    fn verify(&self, hash: &str, spki: &[u8], signature: &[u8], message: &[u8]) -> NativeOutcome;
}

/// A host without native crypto.
pub struct NoNative;

impl NativeVerifier for NoNative {
    fn verify(&self, _: &str, _: &[u8], _: &[u8], _: &[u8]) -> NativeOutcome {
        NativeOutcome::Unavailable
    }
}

/// Which implementation decided a signature (reported in stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Native,
    Pure,
}

/// True when `point` (SEC1 uncompressed) is a valid point on `curve`.
pub fn ec_point_valid(curve: Curve, point: &[u8]) -> bool {
    match curve {
        Curve::P256 => ES256PublicKey::from_bytes(point).is_ok(),
        Curve::P384 => ES384PublicKey::from_bytes(point).is_ok(),
    }
}

fn hash_name(alg: Alg) -> &'static str {
    match alg {
        Alg::RS256 | Alg::PS256 | Alg::ES256 | Alg::HS256 => "sha256",
        Alg::RS384 | Alg::PS384 | Alg::ES384 | Alg::HS384 => "sha384",
        Alg::RS512 | Alg::PS512 | Alg::HS512 | Alg::EdDSA => "sha512",
    }
}

/// Verifies the signature of a compact JWS `token` (whose signing input is
/// `token[..signing_input_len]` and decoded signature `signature`) with `key` under `alg`.
/// The caller has already checked that the key allows `alg`.
pub fn verify_with_key(
    token: &str,
    signing_input_len: usize,
    signature: &[u8],
    alg: Alg,
    key: &Jwk,
    native: &dyn NativeVerifier,
    allow_native: bool,
) -> (bool, Path) {
    let message = token.as_bytes().get(..signing_input_len).unwrap_or_default();
    if allow_native {
        let native_input = match (&key.material, alg) {
            (KeyMaterial::Rsa { spki, .. }, Alg::RS256 | Alg::RS384 | Alg::RS512) => {
                Some((spki.as_slice(), signature.to_vec()))
            }
            (KeyMaterial::Ec { curve, spki, .. }, Alg::ES256 | Alg::ES384) => {
                match der::ecdsa_raw_to_der(*curve, signature) {
                    Some(d) => Some((spki.as_slice(), d)),
                    // A raw signature of the wrong size can never verify.
                    None => return (false, Path::Native),
                }
            }
            _ => None,
        };
        if let Some((spki, sig)) = native_input {
            match native.verify(hash_name(alg), spki, &sig, message) {
                NativeOutcome::Valid => return (true, Path::Native),
                NativeOutcome::Invalid => return (false, Path::Native),
                NativeOutcome::Unavailable => {}
            }
        }
    }
    (verify_pure(token, alg, key), Path::Pure)
}

/// Options that make jwt-simple check the signature only: claim checks are Portcullis's own
/// (with its own clock, skew and reason codes), done before this is called.
fn signature_only() -> VerificationOptions {
    VerificationOptions {
        accept_future: true,
        // With "now" at the epoch and no tolerance, jwt-simple's own expiry test always passes.
        // The tolerance must really be zero: jwt-simple's default (900 s) makes its test
        // `now >= tolerance && now - tolerance <= exp` fail for every token carrying `exp`.
        artificial_time: Some(UnixTimeStamp::from_secs(0)),
        time_tolerance: None,
        max_token_length: None,
        max_header_length: Some(64 * 1024),
        ..VerificationOptions::default()
    }
}

/// The pure-Rust path (jwt-simple). Any error is a failed verification.
pub fn verify_pure(token: &str, alg: Alg, key: &Jwk) -> bool {
    let o = || Some(signature_only());
    match &key.material {
        KeyMaterial::Rsa { n, e, .. } => match alg {
            Alg::RS256 => RS256PublicKey::from_components(n, e)
                .is_ok_and(|k| k.verify_token::<NoCustomClaims>(token, o()).is_ok()),
            Alg::RS384 => RS384PublicKey::from_components(n, e)
                .is_ok_and(|k| k.verify_token::<NoCustomClaims>(token, o()).is_ok()),
            Alg::RS512 => RS512PublicKey::from_components(n, e)
                .is_ok_and(|k| k.verify_token::<NoCustomClaims>(token, o()).is_ok()),
            Alg::PS256 => PS256PublicKey::from_components(n, e)
                .is_ok_and(|k| k.verify_token::<NoCustomClaims>(token, o()).is_ok()),
            Alg::PS384 => PS384PublicKey::from_components(n, e)
                .is_ok_and(|k| k.verify_token::<NoCustomClaims>(token, o()).is_ok()),
            Alg::PS512 => PS512PublicKey::from_components(n, e)
                .is_ok_and(|k| k.verify_token::<NoCustomClaims>(token, o()).is_ok()),
            _ => false,
        },
        KeyMaterial::Ec { curve: Curve::P256, point, .. } if alg == Alg::ES256 => {
            ES256PublicKey::from_bytes(point).is_ok_and(|k| k.verify_token::<NoCustomClaims>(token, o()).is_ok())
        }
        KeyMaterial::Ec { curve: Curve::P384, point, .. } if alg == Alg::ES384 => {
            ES384PublicKey::from_bytes(point).is_ok_and(|k| k.verify_token::<NoCustomClaims>(token, o()).is_ok())
        }
        KeyMaterial::Ed25519 { x } if alg == Alg::EdDSA => {
            Ed25519PublicKey::from_bytes(x).is_ok_and(|k| k.verify_token::<NoCustomClaims>(token, o()).is_ok())
        }
        _ => false,
    }
}

/// Verifies an HS256/384/512 token with a configured secret.
pub fn verify_hmac(token: &str, alg: Alg, secret: &[u8]) -> bool {
    let o = Some(signature_only());
    match alg {
        Alg::HS256 => HS256Key::from_bytes(secret).verify_token::<NoCustomClaims>(token, o).is_ok(),
        Alg::HS384 => HS384Key::from_bytes(secret).verify_token::<NoCustomClaims>(token, o).is_ok(),
        Alg::HS512 => HS512Key::from_bytes(secret).verify_token::<NoCustomClaims>(token, o).is_ok(),
        _ => false,
    }
}
