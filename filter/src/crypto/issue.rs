//! JWS issuing (the password grant's issue mode): Portcullis signs an access token itself
//! (Envoy's `sign` foreign function, or pure Rust) and publishes its own JWKS.

use std::fmt;

#[cfg(feature = "pure-crypto")]
use jwt_simple::algorithms::{ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, EdDSAKeyPairLike, RSAKeyPairLike};
#[cfg(any(feature = "pure-crypto", test))]
use jwt_simple::claims::JWTClaims;
#[cfg(feature = "pure-crypto")]
use jwt_simple::prelude::{ES256KeyPair, Ed25519KeyPair, RS256KeyPair};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Path;
use crate::wire::b64;
use crate::wire::der::{self, Curve, PbValue};

// ---------------------------------------------------------------------------------------------
// Issuing (mode "issue")
// ---------------------------------------------------------------------------------------------

/// Algorithms Portcullis signs its own tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    ES256,
    RS256,
    EdDSA,
}

impl SigningAlg {
    /// Parses the configured `algorithm`.
    pub fn parse(s: &str) -> Option<SigningAlg> {
        match s {
            "ES256" => Some(SigningAlg::ES256),
            "RS256" => Some(SigningAlg::RS256),
            "EdDSA" => Some(SigningAlg::EdDSA),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::ES256 => "ES256",
            SigningAlg::RS256 => "RS256",
            SigningAlg::EdDSA => "EdDSA",
        }
    }
}

/// The host's signing capability (Envoy: the `sign` foreign function, see [`sign_args`] and
/// [`parse_sign_result`]). `hash` is `"sha256"`; the answer is the raw signature as the host
/// makes it (DER `ECDSA-Sig-Value` for ECDSA, PKCS#1 v1.5 bytes for RSA), or `None` when the
/// host has no such function or it failed — then the pure path signs.
pub trait NativeSigner {
    fn sign(&self, hash: &str, private_key_pem: &str, message: &[u8]) -> Option<Vec<u8>>;
}

/// A host without a native signer (tests, other Proxy-Wasm hosts).
pub struct NoSigner;

impl NativeSigner for NoSigner {
    fn sign(&self, _: &str, _: &str, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// The serialized `SignArguments` protobuf for Envoy's `sign` foreign function: 1
/// `hash_function`, 3 `text`, 4 `private_key_pem`.
pub fn sign_args(hash: &str, private_key_pem: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + private_key_pem.len() + 16);
    der::pb_bytes(&mut out, 1, hash.as_bytes());
    der::pb_bytes(&mut out, 3, message);
    der::pb_bytes(&mut out, 4, private_key_pem.as_bytes());
    out
}

/// Reads Envoy's `SignResult` (1 `result` bool, 2 `signature`, 3 `error`): the signature
/// when `result` is true and a signature is present.
pub fn parse_sign_result(bytes: &[u8]) -> Option<Vec<u8>> {
    let fields = der::pb_fields(bytes)?;
    let ok = fields.iter().any(|(f, v)| *f == 1 && *v == PbValue::Varint(1));
    let sig = fields.iter().find_map(|(f, v)| match (f, v) {
        (2, PbValue::Bytes(b)) if !b.is_empty() => Some(b.to_vec()),
        _ => None,
    });
    if ok {
        sig
    } else {
        None
    }
}

/// The parsed private key the pure path signs with.
#[cfg(feature = "pure-crypto")]
pub(super) enum PrivateKey {
    Es256(Box<ES256KeyPair>),
    Rs256(Box<RS256KeyPair>),
    EdDSA(Box<Ed25519KeyPair>),
}

/// Why a token could not be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignError {
    /// The claims could not be serialized (cannot happen for a `Map`; kept for totality).
    Encoding,
    /// The pure-Rust signer failed.
    Pure,
    /// The pure-Rust signer's signing input differed from Portcullis's (a jwt-simple change
    /// in header serialization); the token is refused rather than mis-signed.
    InputMismatch,
}

/// Portcullis as a token issuer: the configured `issue` block with its parsed private key.
pub struct Issuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub lifetime_s: u64,
    pub alg: SigningAlg,
    pub kid: String,
    #[cfg(feature = "pure-crypto")]
    key: PrivateKey,
    /// The PKCS#8 PEM, handed to the host's native signer.
    pem: String,
    /// RSA modulus length in bytes (the length of every RS256 signature).
    rsa_len: usize,
    jwks: String,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("lifetime_s", &self.lifetime_s)
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("key", &"<redacted>")
            .finish()
    }
}

pub(super) const PKCS8_LABEL: &str = "-----BEGIN PRIVATE KEY-----";

/// The public JWK members of a P-256 key from its SEC1 point `04‖x‖y`.
fn ec_jwk(point: &[u8]) -> Option<Value> {
    match (point.len(), point.get(1..33), point.get(33..65)) {
        (65, Some(x), Some(y)) => {
            Some(serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64::encode(x), "y": b64::encode(y)}))
        }
        _ => None,
    }
}

/// The public JWK members of an RSA key (≥ 2048 bits); sets `rsa_len` to the modulus length.
fn rsa_jwk(n: &[u8], e: &[u8], rsa_len: &mut usize) -> Result<Value, String> {
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    *rsa_len = n.len();
    if n.len() < 256 {
        return Err("RSA keys must have at least 2048 bits".into());
    }
    Ok(serde_json::json!({"kty": "RSA", "n": b64::encode(n), "e": b64::encode(e)}))
}

/// The DER inside a PKCS#8 PEM (`None` when it is not one).
pub fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body = pem.trim().strip_prefix(PKCS8_LABEL)?.trim_end().strip_suffix("-----END PRIVATE KEY-----")?;
    let text: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

impl Issuer {
    /// Builds an issuer from a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`) of the
    /// configured algorithm: P-256 for ES256, RSA ≥ 2048 bits for RS256, Ed25519 for EdDSA.
    /// The error message never contains key material.
    pub fn from_pem(
        issuer: &str,
        audiences: &[String],
        lifetime_s: u64,
        alg: SigningAlg,
        kid: &str,
        pem: &str,
    ) -> Result<Issuer, String> {
        let pem = pem.trim();
        if !pem.starts_with(PKCS8_LABEL) {
            return Err(format!(
                "must be a PKCS#8 PEM private key (\"{PKCS8_LABEL}\"); convert with `openssl pkcs8 -topk8 -nocrypt`"
            ));
        }
        let wrong = || format!("is not a valid PKCS#8 {} private key", alg.name());
        let mut rsa_len = 0;
        #[cfg(feature = "pure-crypto")]
        let (key, jwk) = match alg {
            SigningAlg::ES256 => {
                let k = ES256KeyPair::from_pem(pem).map_err(|_| wrong())?.with_key_id(kid);
                let point = k.public_key().public_key().to_bytes_uncompressed();
                (PrivateKey::Es256(Box::new(k)), ec_jwk(&point).ok_or_else(wrong)?)
            }
            SigningAlg::RS256 => {
                let k = RS256KeyPair::from_pem(pem).map_err(|_| wrong())?.with_key_id(kid);
                let c = k.public_key().to_components();
                let jwk = rsa_jwk(&c.n, &c.e, &mut rsa_len)?;
                (PrivateKey::Rs256(Box::new(k)), jwk)
            }
            SigningAlg::EdDSA => {
                let k = Ed25519KeyPair::from_pem(pem).map_err(|_| wrong())?.with_key_id(kid);
                let jwk =
                    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(&k.public_key().to_bytes())});
                (PrivateKey::EdDSA(Box::new(k)), jwk)
            }
        };
        // Without the pure path only the host signs: the key is read for its public half.
        #[cfg(not(feature = "pure-crypto"))]
        let jwk = match (alg, pem_der(pem).as_deref().and_then(der::pkcs8_public)) {
            (SigningAlg::EdDSA, _) => {
                return Err("EdDSA needs the pure-Rust build (portcullis.wasm): Envoy's `sign` cannot sign Ed25519".into())
            }
            (SigningAlg::ES256, Some(der::Pkcs8Public::Ec { curve: Curve::P256, point: Some(p) })) => {
                ec_jwk(&p).ok_or_else(wrong)?
            }
            (SigningAlg::ES256, Some(der::Pkcs8Public::Ec { curve: Curve::P256, point: None })) => {
                return Err("is a PKCS#8 P-256 key without its public key, which this build (native crypto only) cannot \
                            derive: write it with `openssl pkcs8 -topk8 -nocrypt` from an `openssl ecparam -genkey` key"
                    .into())
            }
            (SigningAlg::RS256, Some(der::Pkcs8Public::Rsa { n, e })) => rsa_jwk(&n, &e, &mut rsa_len)?,
            _ => return Err(wrong()),
        };
        let mut jwk = jwk;
        jwk["kid"] = Value::String(kid.to_string());
        jwk["alg"] = Value::String(alg.name().to_string());
        jwk["use"] = Value::String("sig".to_string());
        let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
        Ok(Issuer {
            issuer: issuer.to_string(),
            audiences: audiences.to_vec(),
            lifetime_s,
            alg,
            kid: kid.to_string(),
            #[cfg(feature = "pure-crypto")]
            key,
            pem: pem.to_string(),
            rsa_len,
            jwks,
        })
    }

    /// The claims of a token for `username`, accepted by `backend` at `now_s`: `iss`, `sub`,
    /// `aud` (a string for one audience, an array for several, absent for none), `iat`,
    /// `nbf`, `exp = now + lifetime`, `jti`, `idp` (the backend's name) and, when the backend
    /// sent one, `extraInfo` (its object, nested: it cannot override any other claim).
    pub fn claims(
        &self,
        username: &str,
        backend: &str,
        extra: Option<&Map<String, Value>>,
        now_s: u64,
        jti: &str,
    ) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("iss".into(), Value::String(self.issuer.clone()));
        c.insert("sub".into(), Value::String(username.to_string()));
        match self.audiences.as_slice() {
            [] => {}
            [one] => {
                c.insert("aud".into(), Value::String(one.clone()));
            }
            many => {
                c.insert("aud".into(), Value::from(many.to_vec()));
            }
        }
        c.insert("iat".into(), Value::from(now_s));
        c.insert("nbf".into(), Value::from(now_s));
        c.insert("exp".into(), Value::from(now_s.saturating_add(self.lifetime_s)));
        c.insert("jti".into(), Value::String(jti.to_string()));
        c.insert("idp".into(), Value::String(backend.to_string()));
        if let Some(m) = extra {
            c.insert("extraInfo".into(), Value::Object(m.clone()));
        }
        c
    }

    /// The JWS signing input `base64url(header).base64url(claims)` with the header
    /// `{"alg":…,"kid":…,"typ":"JWT"}` (members in this order: the order jwt-simple also
    /// writes, which lets the pure path reuse its signer).
    pub fn signing_input(&self, claims: &Map<String, Value>) -> Result<String, SignError> {
        let header = serde_json::json!({"alg": self.alg.name(), "kid": self.kid, "typ": "JWT"});
        let header = serde_json::to_string(&header).map_err(|_| SignError::Encoding)?;
        let payload = serde_json::to_string(claims).map_err(|_| SignError::Encoding)?;
        Ok(format!("{}.{}", b64::encode(header.as_bytes()), b64::encode(payload.as_bytes())))
    }

    /// Signs `claims` into a compact JWS: through the host's native signer for ES256 and
    /// RS256 when it answers (Envoy's `sign` cannot do Ed25519), in pure Rust otherwise or
    /// when the native answer is unusable. Returns the token and which path signed it.
    pub fn sign(&self, claims: &Map<String, Value>, signer: &dyn NativeSigner) -> Result<(String, Path), SignError> {
        let input = self.signing_input(claims)?;
        if let Some(sig) = self.native_signature(&input, signer) {
            return Ok((format!("{input}.{}", b64::encode(&sig)), Path::Native));
        }
        let sig_b64 = self.pure_signature(&input, claims)?;
        Ok((format!("{input}.{sig_b64}"), Path::Pure))
    }

    fn native_signature(&self, input: &str, signer: &dyn NativeSigner) -> Option<Vec<u8>> {
        match self.alg {
            SigningAlg::ES256 => {
                let der_sig = signer.sign("sha256", &self.pem, input.as_bytes())?;
                der::ecdsa_der_to_raw(Curve::P256, &der_sig)
            }
            SigningAlg::RS256 => {
                let sig = signer.sign("sha256", &self.pem, input.as_bytes())?;
                (sig.len() == self.rsa_len).then_some(sig)
            }
            SigningAlg::EdDSA => None,
        }
    }

    /// The base64url signature over `input` in pure Rust. jwt-simple does not expose a raw
    /// "sign these bytes" for ECDSA and RSA, so it signs a token built from the same claims
    /// (all standard fields unset, the whole map as custom claims: serialized identically)
    /// and its signing input is checked to be byte-identical to ours before its signature is
    /// taken. Ed25519 signs the input directly (deterministic, RFC 8032).
    #[cfg(feature = "pure-crypto")]
    fn pure_signature(&self, input: &str, claims: &Map<String, Value>) -> Result<String, SignError> {
        let token = match &self.key {
            PrivateKey::EdDSA(k) => {
                let sig = k.key_pair().as_ref().sk.sign(input.as_bytes(), None);
                return Ok(b64::encode(&sig[..]));
            }
            PrivateKey::Es256(k) => k.sign(custom_only(claims)),
            PrivateKey::Rs256(k) => k.sign(custom_only(claims)),
        }
        .map_err(|_| SignError::Pure)?;
        let sig = token
            .strip_prefix(input)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|s| !s.is_empty() && !s.contains('.'))
            .ok_or(SignError::InputMismatch)?;
        Ok(sig.to_string())
    }

    /// Without the pure path nothing signs when the host does not.
    #[cfg(not(feature = "pure-crypto"))]
    fn pure_signature(&self, _input: &str, _claims: &Map<String, Value>) -> Result<String, SignError> {
        Err(SignError::Pure)
    }

    /// The public key set (`{"keys":[{…,"kid","alg","use":"sig"}]}`) to publish on
    /// `jwks_path`.
    pub fn public_jwks(&self) -> String {
        self.jwks.clone()
    }

    /// The `sign` foreign function's arguments for `message` (for a host adapter that prefers
    /// to build them from the issuer).
    pub fn native_sign_args(&self, message: &[u8]) -> Vec<u8> {
        sign_args("sha256", &self.pem, message)
    }
}

#[cfg(any(feature = "pure-crypto", test))]
pub(crate) fn custom_only(claims: &Map<String, Value>) -> JWTClaims<Map<String, Value>> {
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: claims.clone(),
    }
}

/// A token id (`jti`) from host-supplied unique input (e.g. time, worker id and a counter):
/// 128 bits of its SHA-256, base64url. Uniqueness comes from the seed; hashing keeps the
/// seed's parts out of the token.
pub fn jti(seed: &[u8]) -> String {
    let h = Sha256::digest(seed);
    b64::encode(&h[..16])
}
