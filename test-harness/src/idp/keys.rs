//! Key material and the published key set (`GET /jwks`).
//!
//! The private keys are the PEM files of `test-harness/keys/` (PKCS #8), parsed once: RSA keys
//! of any size by the `rsa` crate (`rsa-weak-1024` included, which `jwt-simple` refuses),
//! P-256, P-384 and Ed25519 keys by `jwt-simple`. Each key's public half is kept as a JWK
//! (members sorted by name) and as SubjectPublicKeyInfo PEM, both computed once from the
//! libraries' own encodings; nothing here parses or writes DER by hand.
//!
//! A kid names a key; [`TestIdp::add_key_alias`] gives one key several kids. `/jwks` serves
//! the *published* kids, or an override body, with an optional `Cache-Control`.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jwt_simple::algorithms::{ES256KeyPair, ES384KeyPair, Ed25519KeyPair};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Map, Value};

use super::mint::b64url;
use super::TestIdp;
use crate::http::ServerResponse;

/// Key ids published in `/jwks` by default.
pub const DEFAULT_PUBLISHED: [&str; 4] = ["rsa-a", "p256-a", "p384-a", "ed25519-a"];
/// Key files in `test-harness/keys/`; each key's default kid is the file stem.
pub const KEY_IDS: [&str; 7] = ["rsa-a", "rsa-b", "rsa-weak-1024", "p256-a", "p256-b", "p384-a", "ed25519-a"];

/// JWS algorithms the IdP can mint with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    /// With [`TestIdp::mint`]: HMAC keyed with the kid's public key as SPKI PEM text (the
    /// classic algorithm-confusion forgery). See also [`mint_hs256`](super::mint_hs256).
    HS256,
}

impl Alg {
    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
        }
    }
}

/// What kind of key, with what signing needs beyond the PEM.
#[derive(Debug, Clone)]
pub(super) enum Material {
    /// Any size: signed by `jwt-simple` from 2048 bits, by the `rsa` crate below.
    Rsa(Box<RsaPrivateKey>),
    P256,
    P384,
    Ed25519,
}

/// A private key loaded from PEM, with its public parts.
#[derive(Debug, Clone)]
pub(super) struct Key {
    /// The PKCS #8 PEM, for `jwt-simple`.
    pub(super) pem: String,
    pub(super) material: Material,
    /// The public JWK's key members (`kty`, `crv`, `n`, `e`, `x`, `y`).
    public: Map<String, Value>,
    /// The public key as `-----BEGIN PUBLIC KEY-----` PEM.
    spki_pem: String,
}

impl Key {
    fn from_pem(pem: &str) -> Key {
        let (material, public, spki_der) = if let Ok(rsa) = RsaPrivateKey::from_pkcs8_pem(pem) {
            let public = json!({"kty": "RSA", "n": b64url(rsa.n().to_bytes_be()), "e": b64url(rsa.e().to_bytes_be())});
            let spki = rsa.to_public_key().to_public_key_der().expect("RSA public key to DER");
            (Material::Rsa(Box::new(rsa)), public, spki.as_bytes().to_vec())
        } else if let Ok(pair) = ES256KeyPair::from_pem(pem) {
            let public = ec_public("P-256", &pair.public_key().to_jwk());
            (Material::P256, public, pair.public_key().to_der().expect("P-256 public key to DER"))
        } else if let Ok(pair) = ES384KeyPair::from_pem(pem) {
            let public = ec_public("P-384", &pair.public_key().to_jwk());
            (Material::P384, public, pair.public_key().to_der().expect("P-384 public key to DER"))
        } else if let Ok(pair) = Ed25519KeyPair::from_pem(pem) {
            let public = json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(pair.public_key().to_bytes())});
            (Material::Ed25519, public, pair.public_key().to_der())
        } else {
            panic!("unsupported key (not an RSA, P-256, P-384 or Ed25519 PKCS #8 private key)")
        };
        let Value::Object(public) = public else { unreachable!("built as an object") };
        Key { pem: pem.to_string(), material, public, spki_pem: pem_wrap("PUBLIC KEY", &spki_der) }
    }

    /// The public JWK (members sorted by name).
    pub(super) fn jwk(&self, kid: &str, alg: Option<Alg>) -> Value {
        let mut jwk = Value::Object(self.public.clone());
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg.name());
        }
        jwk
    }

    /// The public key as `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo).
    pub(super) fn spki_pem(&self) -> &str {
        &self.spki_pem
    }

    /// The RSA modulus size in bits (0 for other keys).
    pub(super) fn rsa_bits(&self) -> usize {
        match &self.material {
            Material::Rsa(rsa) => rsa.size() * 8,
            _ => 0,
        }
    }
}

/// `{"kty":"EC","crv","x","y"}` from a JWK written by `jwt-simple`.
fn ec_public(crv: &str, jwk: &str) -> Value {
    let jwk: Value = serde_json::from_str(jwk).expect("jwt-simple writes JSON JWKs");
    assert_eq!(jwk["crv"], crv, "jwt-simple JWK of the wrong curve");
    json!({"kty": "EC", "crv": crv, "x": jwk["x"], "y": jwk["y"]})
}

/// PEM text: base64 in 64-column lines, each ending in `\n`.
fn pem_wrap(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// The keys of `test-harness/keys/`, parsed once.
fn key_files() -> &'static BTreeMap<String, Key> {
    static KEYS: OnceLock<BTreeMap<String, Key>> = OnceLock::new();
    KEYS.get_or_init(|| {
        macro_rules! pem {
            ($stem:literal) => {
                ($stem, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/keys/", $stem, ".pem")))
            };
        }
        [
            pem!("rsa-a"),
            pem!("rsa-b"),
            pem!("rsa-weak-1024"),
            pem!("p256-a"),
            pem!("p256-b"),
            pem!("p384-a"),
            pem!("ed25519-a"),
        ]
        .into_iter()
        .map(|(kid, pem)| (kid.to_string(), Key::from_pem(pem)))
        .collect()
    })
}

/// The IdP's keys and what `/jwks` serves.
pub(super) struct KeyState {
    keys: BTreeMap<String, Key>,
    published: Vec<String>,
    jwk_alg: HashMap<String, Alg>,
    jwks_override: Option<String>,
    jwks_cache_control: Option<String>,
}

impl KeyState {
    pub(super) fn new() -> KeyState {
        KeyState {
            keys: key_files().clone(),
            published: DEFAULT_PUBLISHED.iter().map(|s| s.to_string()).collect(),
            jwk_alg: HashMap::new(),
            jwks_override: None,
            jwks_cache_control: None,
        }
    }

    /// The key named `kid`. Panics, listing the known kids, on an unknown one.
    pub(super) fn key(&self, kid: &str) -> &Key {
        self.keys.get(kid).unwrap_or_else(|| panic!("unknown kid {kid:?}; known: {:?}", self.keys.keys()))
    }

    fn jwks(&self, kids: &[String]) -> String {
        let keys: Vec<Value> = kids.iter().map(|kid| self.key(kid).jwk(kid, self.jwk_alg.get(kid).copied())).collect();
        json!({ "keys": keys }).to_string()
    }

    /// The answer of `GET /jwks`.
    pub(super) fn answer(&self) -> ServerResponse {
        let body = match &self.jwks_override {
            Some(body) => body.clone(),
            None => self.jwks(&self.published),
        };
        let mut answer = ServerResponse::new(200, "application/json", body);
        if let Some(cc) = &self.jwks_cache_control {
            answer = answer.with_header("cache-control", cc);
        }
        answer
    }
}

impl TestIdp {
    /// `issuer() + "/jwks"`.
    pub fn jwks_uri(&self) -> String {
        self.url("/jwks")
    }

    /// Every known key id (the key files' stems plus aliases).
    pub fn kids(&self) -> Vec<String> {
        self.shared.lock().keys.keys.keys().cloned().collect()
    }

    /// Makes the key `existing_kid` also available under `new_kid` (e.g. a rotated kid for
    /// the same key material).
    pub fn add_key_alias(&self, existing_kid: &str, new_kid: &str) {
        let mut state = self.shared.lock();
        let key = state.keys.key(existing_kid).clone();
        state.keys.keys.insert(new_kid.to_string(), key);
    }

    /// Replaces the set of key ids served by `/jwks`. Panics on an unknown kid.
    pub fn publish(&self, kids: &[&str]) {
        let keys = &mut self.shared.lock().keys;
        for kid in kids {
            keys.key(kid);
        }
        keys.published = kids.iter().map(|s| s.to_string()).collect();
    }

    /// Like [`publish`](Self::publish), binding each key to an `alg` in its JWK.
    pub fn publish_with_alg(&self, kids: &[(&str, Alg)]) {
        let plain: Vec<&str> = kids.iter().map(|(kid, _)| *kid).collect();
        self.publish(&plain);
        let keys = &mut self.shared.lock().keys;
        for (kid, alg) in kids {
            keys.jwk_alg.insert(kid.to_string(), *alg);
        }
    }

    /// Binds (or unbinds, with `None`) the `alg` member of a key's JWK. By default no JWK
    /// carries `alg`.
    pub fn set_jwk_alg(&self, kid: &str, alg: Option<Alg>) {
        let keys = &mut self.shared.lock().keys;
        keys.key(kid);
        match alg {
            Some(alg) => keys.jwk_alg.insert(kid.to_string(), alg),
            None => keys.jwk_alg.remove(kid),
        };
    }

    /// The JWKS of the published keys (what `/jwks` serves without an override).
    pub fn jwks_json(&self) -> String {
        let keys = &self.shared.lock().keys;
        keys.jwks(&keys.published)
    }

    /// A JWKS of the given keys, e.g. for inline configuration.
    pub fn public_jwks_for(&self, kids: &[&str]) -> String {
        let kids: Vec<String> = kids.iter().map(|s| s.to_string()).collect();
        self.shared.lock().keys.jwks(&kids)
    }

    /// Serves this raw body from `/jwks` instead of the published keys (`None` restores).
    pub fn set_jwks_override(&self, body: Option<String>) {
        self.shared.lock().keys.jwks_override = body;
    }

    /// A `Cache-Control` header for `/jwks` answers (`None`: no header).
    pub fn set_jwks_cache_control(&self, value: Option<String>) {
        self.shared.lock().keys.jwks_cache_control = value;
    }

    /// The public key of `kid` as SPKI PEM (the HS256 secret used by `mint(Alg::HS256, ..)`).
    pub fn public_key_pem(&self, kid: &str) -> String {
        self.shared.lock().keys.key(kid).spki_pem().to_string()
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::http;
    use crate::idp::Endpoint;

    #[test]
    fn jwks_and_discovery() {
        let idp = TestIdp::start();
        let jwks = http::get(&idp.jwks_uri(), &[]).unwrap().json();
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, DEFAULT_PUBLISHED);
        let rsa = &jwks["keys"][0];
        assert_eq!(rsa["kty"], "RSA");
        assert_eq!(rsa["e"], "AQAB");
        assert_eq!(rsa["use"], "sig");
        assert!(rsa.get("alg").is_none());
        assert_eq!(URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap().len(), 256);
        let p256 = &jwks["keys"][1];
        assert_eq!((p256["kty"].as_str(), p256["crv"].as_str()), (Some("EC"), Some("P-256")));
        assert_eq!(URL_SAFE_NO_PAD.decode(p256["y"].as_str().unwrap()).unwrap().len(), 32);
        assert_eq!(jwks["keys"][2]["crv"], "P-384");
        assert_eq!(jwks["keys"][3]["kty"], "OKP");
        assert_eq!(jwks["keys"][3]["crv"], "Ed25519");

        idp.publish_with_alg(&[("rsa-b", Alg::PS256), ("rsa-weak-1024", Alg::RS256)]);
        let jwks = http::get(&idp.jwks_uri(), &[]).unwrap().json();
        assert_eq!(jwks["keys"][0]["alg"], "PS256");
        assert_eq!(jwks["keys"][1]["kid"], "rsa-weak-1024");
        assert_eq!(jwks, serde_json::from_str::<Value>(&idp.jwks_json()).unwrap());

        idp.set_jwks_override(Some("garbage".into()));
        idp.set_jwks_cache_control(Some("max-age=60".into()));
        let r = http::get(&idp.jwks_uri(), &[]).unwrap();
        assert_eq!((r.text().as_str(), r.header("cache-control")), ("garbage", Some("max-age=60")));

        let d = http::get(&idp.url("/.well-known/openid-configuration"), &[]).unwrap().json();
        assert_eq!(d["issuer"], idp.issuer());
        assert_eq!(d["jwks_uri"], idp.jwks_uri());
        assert_eq!(d["introspection_endpoint"], idp.url("/introspect"));
        assert_eq!(idp.hits(Endpoint::Jwks), 3);
        assert_eq!(http::get(&idp.url("/nope"), &[]).unwrap().status, 404);
    }

    #[test]
    fn every_key_file_loads_with_its_public_parts() {
        let sizes: Vec<(&str, usize)> = KEY_IDS.iter().map(|kid| (*kid, key_files()[*kid].rsa_bits())).collect();
        assert_eq!(sizes[..3], [("rsa-a", 2048), ("rsa-b", 2048), ("rsa-weak-1024", 1024)]);
        let p384 = key_files()["p384-a"].jwk("k", None);
        assert_eq!(URL_SAFE_NO_PAD.decode(p384["x"].as_str().unwrap()).unwrap().len(), 48);
        let ed = key_files()["ed25519-a"].jwk("k", Some(Alg::EdDSA));
        assert_eq!(ed["alg"], "EdDSA");
        assert_eq!(URL_SAFE_NO_PAD.decode(ed["x"].as_str().unwrap()).unwrap().len(), 32);
        // The SPKI PEM is the same public key the JWK describes.
        let pem = key_files()["p256-a"].spki_pem();
        let from_pem = jwt_simple::algorithms::ES256PublicKey::from_pem(pem).unwrap().to_jwk();
        let from_pem: Value = serde_json::from_str(&from_pem).unwrap();
        let jwk = key_files()["p256-a"].jwk("k", None);
        assert_eq!((&from_pem["x"], &from_pem["y"]), (&jwk["x"], &jwk["y"]));
        assert!(pem.lines().all(|l| l.len() <= 64) && pem.ends_with("-----END PUBLIC KEY-----\n"));
    }
}
