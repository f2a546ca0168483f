//! The pure-Rust verification path (jwt-simple): PS*, EdDSA, and RS*/ES* when the host has no
//! native verifier or `crypto: "pure"` is configured. Only in builds with `pure-crypto`.

use jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ECDSAP384PublicKeyLike, EdDSAPublicKeyLike, RSAPublicKeyLike};
use jwt_simple::common::VerificationOptions;
use jwt_simple::prelude::{
    ES256PublicKey, ES384PublicKey, Ed25519PublicKey, NoCustomClaims, PS256PublicKey, PS384PublicKey, PS512PublicKey,
    RS256PublicKey, RS384PublicKey, RS512PublicKey, UnixTimeStamp,
};

use crate::crypto::jwks::{Alg, Jwk, KeyMaterial};
use crate::wire::der::Curve;

/// True when `point` (SEC1 uncompressed) is a valid point on `curve`.
pub(super) fn ec_point_valid(curve: Curve, point: &[u8]) -> bool {
    match curve {
        Curve::P256 => ES256PublicKey::from_bytes(point).is_ok(),
        Curve::P384 => ES384PublicKey::from_bytes(point).is_ok(),
    }
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
pub(super) fn verify(token: &str, alg: Alg, key: &Jwk) -> bool {
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
