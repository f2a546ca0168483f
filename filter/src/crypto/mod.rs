//! Signature verification: the host's native path where it exists, pure Rust otherwise.
//!
//! Envoy offers a `verify_signature` foreign function backed by BoringSSL
//! (`EVP_DigestVerify`): RSA PKCS#1 v1.5 and ECDSA reach native speed through it (FACTS.md:
//! pure-Rust RSA in wasm is ~15× slower). It cannot do RSA-PSS or Ed25519, so PS* and EdDSA
//! always take the pure path (jwt-simple, [`pure`]), as does every algorithm on a host without
//! the function or when `crypto: "pure"` is configured. HS* always runs in Rust ([`hmac`]).
//!
//! Built without the `pure-crypto` feature (`dist/portcullis-native.wasm`) there is no pure
//! path: RS*/ES* go through the host only, PS* and EdDSA signatures never verify, and
//! `crypto: "pure"` is refused by the configuration.
//!
//! The host side is a port: [`NativeVerifier`]. The core never calls the host directly.

pub mod hmac;
pub mod issue;
pub mod jwks;
#[cfg(feature = "pure-crypto")]
mod pure;
#[cfg(test)]
mod tests_native;

use crate::crypto::jwks::{Alg, Jwk, KeyMaterial};
use crate::wire::der::{self, Curve};

/// True when this build has the pure-Rust paths (feature `pure-crypto`).
pub const PURE: bool = cfg!(feature = "pure-crypto");

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

/// True when `point` (SEC1 uncompressed) is a valid point on `curve`. Without the pure
/// path only its form is checked here; the host's BoringSSL refuses a point off the curve
/// when it parses the key, so such a key never verifies anything.
pub fn ec_point_valid(curve: Curve, point: &[u8]) -> bool {
    #[cfg(feature = "pure-crypto")]
    {
        pure::ec_point_valid(curve, point)
    }
    #[cfg(not(feature = "pure-crypto"))]
    {
        point.len() == 1 + 2 * curve.coordinate_len() && point.first() == Some(&4)
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
    (verify_pure(token, alg, key), if PURE { Path::Pure } else { Path::Native })
}

/// The pure-Rust path (jwt-simple); always false in a build without it. Any error is a
/// failed verification.
pub fn verify_pure(token: &str, alg: Alg, key: &Jwk) -> bool {
    #[cfg(feature = "pure-crypto")]
    {
        pure::verify(token, alg, key)
    }
    #[cfg(not(feature = "pure-crypto"))]
    {
        let _ = (token, alg, key);
        false
    }
}
