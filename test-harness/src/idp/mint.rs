//! Minting: compact JWS tokens of *exactly* the given claims (nothing added).
//!
//! Every asymmetric token is signed by `jwt-simple`, except what it refuses to do: RS* with
//! an RSA key under 2048 bits (`rsa-weak-1024`) is signed by the `rsa` crate's PKCS #1 v1.5
//! signer (RFC 8017 §8.2, deterministic), and PS* with such a key is not supported. HS256 is
//! computed here with `sha2` (RFC 2104), because `jwt-simple` refuses secrets under 12 bytes
//! and the algorithm-confusion forgery keys it with a public key's PEM text.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP384KeyPairLike, ES256KeyPair, ES384KeyPair, Ed25519KeyPair, EdDSAKeyPairLike,
    PS256KeyPair, PS384KeyPair, PS512KeyPair, RS256KeyPair, RS384KeyPair, RS512KeyPair, RSAKeyPairLike,
};
use jwt_simple::claims::JWTClaims;
use jwt_simple::common::HeaderOptions;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::keys::{Alg, Key, Material};
use super::{now, TestIdp};

/// The smallest RSA modulus `jwt-simple` signs with.
const JWT_SIMPLE_MIN_RSA_BITS: usize = 2048;

/// Base64url without padding.
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Builds a compact JWS from raw parts: `b64url(header).b64url(payload).b64url(sig)`.
pub fn forge(header_json: &str, payload_json: &str, sig: &[u8]) -> String {
    format!("{}.{}.{}", b64url(header_json), b64url(payload_json), b64url(sig))
}

/// Mints an HS256 JWT of exactly `claims` (any secret length, even empty), with header
/// `{"alg":"HS256","typ":"JWT"}` plus `kid` when given.
pub fn mint_hs256(secret: &[u8], kid: Option<&str>, claims: Value) -> String {
    let input = signing_input(Alg::HS256, kid, None, &claims);
    let tag = hmac_sha256(secret, input.as_bytes());
    format!("{input}.{}", b64url(tag))
}

impl Key {
    /// Signs `claims`; `header_kid` goes in the header (omitted when `None`), `typ` too
    /// (`"JWT"` when `None`). Panics if the key cannot do `alg`.
    pub(super) fn sign(&self, alg: Alg, header_kid: Option<&str>, typ: Option<&str>, claims: &Value) -> String {
        let weak_rsa = matches!(self.material, Material::Rsa(_)) && self.rsa_bits() < JWT_SIMPLE_MIN_RSA_BITS;
        match (&self.material, alg) {
            (_, Alg::HS256) => {
                let input = signing_input(alg, header_kid, typ, claims);
                let tag = hmac_sha256(self.spki_pem().as_bytes(), input.as_bytes());
                return format!("{input}.{}", b64url(tag));
            }
            (Material::Rsa(rsa), Alg::RS256 | Alg::RS384 | Alg::RS512) if weak_rsa => {
                let input = signing_input(alg, header_kid, typ, claims);
                let sig = rsa_pkcs1v15_sign(rsa, alg, input.as_bytes());
                return format!("{input}.{}", b64url(sig));
            }
            (_, Alg::PS256 | Alg::PS384 | Alg::PS512) if weak_rsa => {
                panic!("PS* with an RSA key under 2048 bits is not supported (jwt-simple refuses it)")
            }
            _ => {}
        }
        let compatible = match &self.material {
            Material::Rsa(_) => !matches!(alg, Alg::ES256 | Alg::ES384 | Alg::EdDSA),
            Material::P256 => alg == Alg::ES256,
            Material::P384 => alg == Alg::ES384,
            Material::Ed25519 => alg == Alg::EdDSA,
        };
        assert!(compatible, "cannot sign {} with this key type", alg.name());

        let options = HeaderOptions { signature_type: typ.map(str::to_string), ..Default::default() };
        let claims = exact_claims(claims);
        macro_rules! sign_with {
            ($pair:ty) => {{
                let mut pair = <$pair>::from_pem(&self.pem).expect("jwt-simple rejected the key");
                if let Some(kid) = header_kid {
                    pair = pair.with_key_id(kid);
                }
                pair.sign_with_options(claims, &options).expect("jwt-simple signing failed")
            }};
        }
        match alg {
            Alg::RS256 => sign_with!(RS256KeyPair),
            Alg::RS384 => sign_with!(RS384KeyPair),
            Alg::RS512 => sign_with!(RS512KeyPair),
            Alg::PS256 => sign_with!(PS256KeyPair),
            Alg::PS384 => sign_with!(PS384KeyPair),
            Alg::PS512 => sign_with!(PS512KeyPair),
            Alg::ES256 => sign_with!(ES256KeyPair),
            Alg::ES384 => sign_with!(ES384KeyPair),
            Alg::EdDSA => sign_with!(Ed25519KeyPair),
            Alg::HS256 => unreachable!("signed above"),
        }
    }
}

/// RSASSA-PKCS1-v1_5 (RFC 8017 §8.2.1) over `message` with the digest of `alg`.
fn rsa_pkcs1v15_sign(key: &RsaPrivateKey, alg: Alg, message: &[u8]) -> Vec<u8> {
    let key = key.clone();
    match alg {
        Alg::RS256 => SigningKey::<Sha256>::new(key).sign(message).to_vec(),
        Alg::RS384 => SigningKey::<Sha384>::new(key).sign(message).to_vec(),
        Alg::RS512 => SigningKey::<Sha512>::new(key).sign(message).to_vec(),
        _ => unreachable!("not a PKCS #1 v1.5 algorithm"),
    }
}

/// `JWTClaims` that serialize to exactly `claims`: every standard field is `None` (so
/// skipped) and the whole object is the flattened custom part.
fn exact_claims(claims: &Value) -> JWTClaims<Map<String, Value>> {
    let Value::Object(custom) = claims.clone() else { panic!("claims must be a JSON object, got {claims}") };
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom,
    }
}

/// `b64url(header).b64url(claims)` with header `{"alg","kid"?,"typ"}`.
fn signing_input(alg: Alg, kid: Option<&str>, typ: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg.name(), "typ": typ.unwrap_or("JWT")});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    format!("{}.{}", b64url(header.to_string()), b64url(claims.to_string()))
}

/// HMAC-SHA-256 (RFC 2104), any key length.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = if key.len() > 64 { Sha256::digest(key).to_vec() } else { key.to_vec() };
    block.resize(64, 0);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

impl TestIdp {
    /// Signs exactly `claims` (no `iat`/`exp` added) with the key `kid` and `alg`; the
    /// header is `{"alg", "typ":"JWT", "kid"}`. Panics if the key cannot do `alg`.
    pub fn mint(&self, alg: Alg, kid: &str, claims: Value) -> String {
        self.mint_with(alg, kid, Some(kid), None, claims)
    }

    /// Like [`mint`](Self::mint), choosing the header: `header_kid` (omitted when `None`)
    /// and `typ` (`"JWT"` when `None`).
    pub fn mint_with(&self, alg: Alg, kid: &str, header_kid: Option<&str>, typ: Option<&str>, claims: Value) -> String {
        let key = self.shared.lock().keys.key(kid).clone();
        key.sign(alg, header_kid, typ, &claims)
    }

    /// Same as the free function [`mint_hs256`].
    pub fn mint_hs256(&self, secret: &[u8], kid: Option<&str>, claims: Value) -> String {
        mint_hs256(secret, kid, claims)
    }

    /// `{"iss", "sub":"user-1", "aud", "iat":now, "exp":now+600, "client_id":"demo-client",
    /// "scope":"orders:read"}`.
    pub fn default_claims(&self, aud: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer(),
            "sub": "user-1",
            "aud": aud,
            "iat": now,
            "exp": now + 600,
            "client_id": "demo-client",
            "scope": "orders:read",
        })
    }
}

#[cfg(test)]
mod tests {
    use jwt_simple::algorithms::{
        ECDSAP256PublicKeyLike, ECDSAP384PublicKeyLike, ES256PublicKey, ES384PublicKey, Ed25519PublicKey,
        EdDSAPublicKeyLike, PS256PublicKey, RS256PublicKey, RS512PublicKey, RSAPublicKeyLike,
    };
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    use rsa::traits::PublicKeyParts;
    use rsa::RsaPublicKey;

    use super::*;
    use crate::idp::test_support::{jwk_of, parts};

    #[test]
    fn minted_tokens_verify_against_published_jwks() {
        let idp = TestIdp::start();
        let claims = idp.default_claims("orders");

        let token = idp.mint(Alg::RS256, "rsa-a", claims.clone());
        let (header, payload) = parts(&token);
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-a"}));
        assert_eq!(payload, claims, "exactly the given claims");
        let key = RS256PublicKey::from_jwk(&jwk_of(&idp, "rsa-a")).unwrap();
        key.verify_token::<Map<String, Value>>(&token, None).unwrap();

        let token = idp.mint(Alg::RS512, "rsa-b", claims.clone());
        RS512PublicKey::from_jwk(&jwk_of(&idp, "rsa-b"))
            .unwrap()
            .verify_token::<Map<String, Value>>(&token, None)
            .unwrap();
        let token = idp.mint(Alg::PS256, "rsa-a", claims.clone());
        PS256PublicKey::from_jwk(&jwk_of(&idp, "rsa-a"))
            .unwrap()
            .verify_token::<Map<String, Value>>(&token, None)
            .unwrap();
        let token = idp.mint(Alg::ES256, "p256-b", claims.clone());
        ES256PublicKey::from_jwk(&jwk_of(&idp, "p256-b"))
            .unwrap()
            .verify_token::<Map<String, Value>>(&token, None)
            .unwrap();
        let token = idp.mint(Alg::ES384, "p384-a", claims.clone());
        ES384PublicKey::from_jwk(&jwk_of(&idp, "p384-a"))
            .unwrap()
            .verify_token::<Map<String, Value>>(&token, None)
            .unwrap();
        let token = idp.mint(Alg::EdDSA, "ed25519-a", claims.clone());
        Ed25519PublicKey::from_jwk(&jwk_of(&idp, "ed25519-a"))
            .unwrap()
            .verify_token::<Map<String, Value>>(&token, None)
            .unwrap();

        // Header control and aliases.
        idp.add_key_alias("rsa-a", "rsa-a-2");
        let token = idp.mint_with(Alg::RS256, "rsa-a-2", None, Some("at+jwt"), json!({"a": 1}));
        let (header, payload) = parts(&token);
        assert_eq!(header, json!({"alg": "RS256", "typ": "at+jwt"}));
        assert_eq!(payload, json!({"a": 1}));
        assert_eq!(jwk_of(&idp, "rsa-a-2").replace("rsa-a-2", "rsa-a"), jwk_of(&idp, "rsa-a"));
    }

    #[test]
    fn weak_rsa_signatures_are_valid_pkcs1v15() {
        let idp = TestIdp::start();
        let pem = idp.public_key_pem("rsa-weak-1024");
        let public = RsaPublicKey::from_public_key_pem(&pem).unwrap();
        assert_eq!(public.size(), 128);
        for alg in [Alg::RS256, Alg::RS384, Alg::RS512] {
            let token = idp.mint(alg, "rsa-weak-1024", json!({"sub": "x"}));
            let (header, _) = parts(&token);
            assert_eq!((header["alg"].as_str(), header["kid"].as_str()), (Some(alg.name()), Some("rsa-weak-1024")));
            let (input, sig) = token.rsplit_once('.').unwrap();
            let sig = Signature::try_from(URL_SAFE_NO_PAD.decode(sig).unwrap().as_slice()).unwrap();
            let verified = match alg {
                Alg::RS256 => VerifyingKey::<Sha256>::new(public.clone()).verify(input.as_bytes(), &sig),
                Alg::RS384 => VerifyingKey::<Sha384>::new(public.clone()).verify(input.as_bytes(), &sig),
                _ => VerifyingKey::<Sha512>::new(public.clone()).verify(input.as_bytes(), &sig),
            };
            verified.unwrap_or_else(|e| panic!("{}: {e}", alg.name()));
        }
        // PKCS #1 v1.5 is deterministic: the same input signs the same.
        let a = idp.mint(Alg::RS256, "rsa-weak-1024", json!({"sub": "x"}));
        assert_eq!(a, idp.mint(Alg::RS256, "rsa-weak-1024", json!({"sub": "x"})));
    }

    #[test]
    #[should_panic(expected = "PS* with an RSA key under 2048 bits")]
    fn weak_rsa_cannot_do_pss() {
        TestIdp::start().mint(Alg::PS256, "rsa-weak-1024", json!({}));
    }

    #[test]
    fn hs256_and_forge() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let token = mint_hs256(b"k", Some("h1"), json!({"sub": "a"}));
        let (input, tag) = token.rsplit_once('.').unwrap();
        assert_eq!(b64url(hmac_sha256(b"k", input.as_bytes())), tag);
        assert_eq!(parts(&token).0, json!({"alg": "HS256", "typ": "JWT", "kid": "h1"}));

        let idp = TestIdp::start();
        let confused = idp.mint(Alg::HS256, "rsa-a", json!({"sub": "a"}));
        let (input, tag) = confused.rsplit_once('.').unwrap();
        let pem = idp.public_key_pem("rsa-a");
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"));
        assert_eq!(b64url(hmac_sha256(pem.as_bytes(), input.as_bytes())), tag);

        assert_eq!(forge("{\"alg\":\"none\"}", "{}", b""), "eyJhbGciOiJub25lIn0.e30.");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    #[should_panic(expected = "cannot sign ES256")]
    fn minting_with_the_wrong_key_type_panics() {
        TestIdp::start().mint(Alg::ES256, "rsa-a", json!({}));
    }
}
