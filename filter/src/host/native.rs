//! Envoy's `verify_signature` foreign function (BoringSSL `EVP_DigestVerify`) behind the
//! core's [`NativeVerifier`] port. Argument: protobuf `VerifySignatureArguments`
//! (1 hash_function, 2 public_key DER, 3 signature, 4 text); result:
//! `VerifySignatureResult` (1 result bool, 2 error). Detected on first use: a host without
//! the function answers NotFound, after which this worker stops asking.

use std::cell::Cell;

use proxy_wasm::hostcalls;

use crate::crypto::{NativeOutcome, NativeVerifier};
use crate::wire::der::{pb_bytes, pb_fields, PbValue};

#[derive(Default)]
pub(crate) struct HostVerifier {
    missing: Cell<bool>,
}

impl NativeVerifier for HostVerifier {
    fn verify(&self, hash: &str, spki: &[u8], signature: &[u8], message: &[u8]) -> NativeOutcome {
        if self.missing.get() {
            return NativeOutcome::Unavailable;
        }
        let mut args = Vec::with_capacity(spki.len() + signature.len() + message.len() + 32);
        pb_bytes(&mut args, 1, hash.as_bytes());
        pb_bytes(&mut args, 2, spki);
        pb_bytes(&mut args, 3, signature);
        pb_bytes(&mut args, 4, message);
        match hostcalls::call_foreign_function("verify_signature", Some(&args)) {
            Ok(Some(result)) => {
                let valid = pb_fields(&result)
                    .is_some_and(|fields| fields.iter().any(|(n, v)| *n == 1 && *v == PbValue::Varint(1)));
                if valid {
                    NativeOutcome::Valid
                } else {
                    NativeOutcome::Invalid
                }
            }
            // An empty result message is `result = false`.
            Ok(None) => NativeOutcome::Invalid,
            Err(proxy_wasm::types::Status::NotFound) => {
                self.missing.set(true);
                if crate::crypto::PURE {
                    super::log(
                        proxy_wasm::types::LogLevel::Info,
                        "host has no verify_signature; using pure-Rust crypto",
                    );
                } else {
                    super::log(
                        proxy_wasm::types::LogLevel::Error,
                        "host has no verify_signature and this module (portcullis-native.wasm) has no pure-Rust \
                         crypto: every RS*/ES* token is refused; use portcullis.wasm on this proxy",
                    );
                }
                NativeOutcome::Unavailable
            }
            Err(_) => NativeOutcome::Unavailable,
        }
    }
}

/// Envoy's `sign` foreign function behind the core's [`NativeSigner`] port. `None` (pure
/// Rust signs instead) when the host lacks it or it fails.
#[derive(Default)]
pub(crate) struct HostSigner {
    missing: Cell<bool>,
}

impl crate::password::NativeSigner for HostSigner {
    fn sign(&self, hash: &str, private_key_pem: &str, message: &[u8]) -> Option<Vec<u8>> {
        if self.missing.get() {
            return None;
        }
        let args = crate::password::sign_args(hash, private_key_pem, message);
        match hostcalls::call_foreign_function("sign", Some(&args)) {
            Ok(Some(result)) => crate::password::parse_sign_result(&result),
            Ok(None) => None,
            Err(proxy_wasm::types::Status::NotFound) => {
                self.missing.set(true);
                None
            }
            Err(_) => None,
        }
    }
}
