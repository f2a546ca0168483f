//! API keys (SPEC C2): looked up by the SHA-256 of the presented key.
//!
//! The configuration holds only SHA-256 digests, so a leaked config leaks no key. Lookup is
//! one hash of the presented key and one hash-map probe, independent of how many keys are
//! configured. Timing can at most reveal something about the *digest* of the attacker's own
//! guess, never about a stored key, which makes a byte-wise constant-time compare
//! unnecessary; the digest equality is still done without early exit for good measure.

use sha2::{Digest, Sha256};

use crate::config::{ApiClient, ApiKeys};
use crate::reason::Reason;

/// SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Lower-case hex SHA-256, as `keys_sha256` expects (the `hash-key` helper prints this).
pub fn hash_hex(key: &str) -> String {
    digest(key).iter().map(|b| format!("{b:02x}")).collect()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Finds the client owning `key`.
pub fn lookup<'a>(cfg: &'a ApiKeys, key: &str) -> Result<&'a ApiClient, Reason> {
    lookup_indexed(cfg, key).map(|(_, c)| c)
}

/// [`lookup`], with the client's index in `cfg.clients` (so later stages reach the client,
/// its plan for instance, without searching).
pub fn lookup_indexed<'a>(cfg: &'a ApiKeys, key: &str) -> Result<(usize, &'a ApiClient), Reason> {
    let d = digest(key);
    let (stored, idx) = cfg.keys.get_key_value(&d).ok_or(Reason::ApiKeyInvalid)?;
    if !ct_eq(stored, &d) {
        return Err(Reason::ApiKeyInvalid);
    }
    let client = cfg.clients.get(*idx).ok_or(Reason::Internal)?;
    if client.disabled {
        return Err(Reason::ApiKeyDisabled);
    }
    Ok((*idx, client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    fn cfg() -> ApiKeys {
        let mut keys = hashbrown::HashMap::new();
        keys.insert(digest("k-one"), 0);
        keys.insert(digest("k-one-rotated"), 0);
        keys.insert(digest("k-two"), 1);
        ApiKeys {
            sources: vec![Source::Header { name: "x-api-key".into(), prefix: String::new() }],
            hide_credentials: true,
            clients: vec![
                ApiClient { client_id: "a".into(), plan: None, scopes: vec![], disabled: false },
                ApiClient { client_id: "b".into(), plan: None, scopes: vec![], disabled: true },
            ],
            keys,
        }
    }

    #[test]
    fn lookup_table() {
        let c = cfg();
        assert_eq!(lookup(&c, "k-one").unwrap().client_id, "a");
        assert_eq!(lookup(&c, "k-one-rotated").unwrap().client_id, "a");
        assert_eq!(lookup(&c, "k-two").unwrap_err(), Reason::ApiKeyDisabled);
        assert_eq!(lookup(&c, "nope").unwrap_err(), Reason::ApiKeyInvalid);
        assert_eq!(lookup(&c, "").unwrap_err(), Reason::ApiKeyInvalid);
    }

    #[test]
    fn hex_is_sha256() {
        assert_eq!(hash_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
