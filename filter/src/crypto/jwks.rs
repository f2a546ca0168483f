//! JSON Web Key Sets (RFC 7517 §5) and the algorithm each key allows (RFC 7518).
//!
//! Invariants:
//! * A key decides its algorithm(s). A key with `alg` allows exactly that algorithm; a key
//!   without `alg` allows what its type and curve imply: RSA → RS256/384/512 and
//!   PS256/384/512, P-256 → ES256 only, P-384 → ES384 only, Ed25519 → EdDSA only.
//! * RSA keys under 2048 bits, keys with `use` other than `sig`, `oct` keys (shared secrets do
//!   not belong in a published set; HS* uses a configured secret), unknown `kty`/`crv` and
//!   malformed members are skipped with a warning; they never fail the whole set.
//! * The DER SubjectPublicKeyInfo for the host's `verify_signature` is built once here, not
//!   per request.

use serde::Deserialize;

use crate::wire::b64;
use crate::wire::der::{self, Curve};

/// Signature algorithms Portcullis accepts (RFC 7518 §3.1, RFC 8037 §3.1).
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
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// Parses a JOSE `alg` value; `None` for anything unsupported (including `none`).
    pub fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

    /// The JOSE name.
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
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// True for the HMAC family (verified with a configured secret, never a JWK).
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

/// Public key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// RSA modulus and exponent (big-endian), and the SPKI DER for the host.
    Rsa { n: Vec<u8>, e: Vec<u8>, spki: Vec<u8> },
    /// EC point (SEC1 uncompressed) and SPKI DER.
    Ec { curve: Curve, point: Vec<u8>, spki: Vec<u8> },
    /// Ed25519 public key.
    Ed25519 { x: Vec<u8> },
}

/// A usable verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// Set when the JWK pins one algorithm.
    pub alg: Option<Alg>,
    pub material: KeyMaterial,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`.
    pub fn allows(&self, alg: Alg) -> bool {
        if let Some(pinned) = self.alg {
            if pinned != alg {
                return false;
            }
        }
        match &self.material {
            KeyMaterial::Rsa { .. } => {
                matches!(alg, Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512)
            }
            KeyMaterial::Ec { curve: Curve::P256, .. } => alg == Alg::ES256,
            KeyMaterial::Ec { curve: Curve::P384, .. } => alg == Alg::ES384,
            KeyMaterial::Ed25519 { .. } => alg == Alg::EdDSA,
        }
    }
}

/// A parsed key set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

/// The most keys kept from one set; more is a misconfiguration or an attack.
pub const MAX_KEYS: usize = 64;

impl KeySet {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that may verify a token with this `kid` (or any key, when the token has none)
    /// and algorithm.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>, alg: Alg) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| (kid.is_none() || k.kid.as_deref() == kid) && k.allows(alg))
    }

    /// True when some key carries this `kid`, whatever its algorithm.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Why a document is not a key set at all (individual bad keys only produce warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// Not JSON, or not an object with a `keys` array.
    NotAKeySet,
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksError::NotAKeySet => write!(f, "expected a JSON object with a \"keys\" array"),
        }
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(rename = "use")]
    use_: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    key_ops: Option<Vec<String>>,
}

/// Parses a JWKS document. Returns the usable keys and one warning per skipped key (warnings
/// name the key's position and `kid`, never key material).
pub fn parse(doc: &[u8]) -> Result<(KeySet, Vec<String>), JwksError> {
    let raw: RawSet = serde_json::from_slice(doc).map_err(|_| JwksError::NotAKeySet)?;
    let mut keys = Vec::new();
    let mut warnings = Vec::new();
    for (i, value) in raw.keys.into_iter().enumerate() {
        if keys.len() >= MAX_KEYS {
            warnings.push(format!("keys[{i}..]: more than {MAX_KEYS} keys; the rest are ignored"));
            break;
        }
        match parse_key(value) {
            Ok(k) => keys.push(k),
            Err((kid, why)) => {
                let label = kid.map(|k| format!(" (kid {:?})", truncate(&k))).unwrap_or_default();
                warnings.push(format!("keys[{i}]{label} skipped: {why}"));
            }
        }
    }
    Ok((KeySet { keys }, warnings))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn parse_key(value: serde_json::Value) -> Result<Jwk, (Option<String>, String)> {
    let kid_hint = value.get("kid").and_then(|k| k.as_str()).map(str::to_string);
    let raw: RawJwk = serde_json::from_value(value).map_err(|_| (kid_hint.clone(), "malformed members".to_string()))?;
    let kid = raw.kid.clone();
    let fail = |why: &str| (kid.clone(), why.to_string());
    if let Some(u) = &raw.use_ {
        if u != "sig" {
            return Err(fail(&format!("use is {u:?}, not \"sig\"")));
        }
    }
    if let Some(ops) = &raw.key_ops {
        if !ops.iter().any(|o| o == "verify") {
            return Err(fail("key_ops does not include \"verify\""));
        }
    }
    let alg = match &raw.alg {
        None => None,
        Some(a) => match Alg::parse(a) {
            Some(a) if !a.is_hmac() => Some(a),
            _ => return Err(fail(&format!("unsupported alg {:?}", truncate(a)))),
        },
    };
    let b64field = |v: &Option<String>, name: &str| -> Result<Vec<u8>, (Option<String>, String)> {
        let s = v.as_deref().ok_or_else(|| fail(&format!("missing {name}")))?;
        b64::decode(s).ok_or_else(|| fail(&format!("{name} is not base64url")))
    };
    let material = match raw.kty.as_str() {
        "RSA" => {
            let n = b64field(&raw.n, "n")?;
            let e = b64field(&raw.e, "e")?;
            let n_trim: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
            let Some(first) = n_trim.first() else {
                return Err(fail("RSA modulus is zero"));
            };
            let bits = (n_trim.len() * 8).saturating_sub(first.leading_zeros() as usize);
            if bits < 2048 {
                return Err(fail(&format!("RSA modulus of {bits} bits; at least 2048 required")));
            }
            if bits > 8192 {
                return Err(fail("RSA modulus larger than 8192 bits"));
            }
            let e_trim: Vec<u8> = e.iter().copied().skip_while(|b| *b == 0).collect();
            if e_trim.is_empty() || e_trim.len() > 8 || e_trim.last().is_some_and(|b| b & 1 == 0) {
                return Err(fail("RSA exponent is not a small odd number"));
            }
            let spki = der::rsa_spki(&n_trim, &e_trim);
            KeyMaterial::Rsa { n: n_trim, e: e_trim, spki }
        }
        "EC" => {
            let curve = match raw.crv.as_deref() {
                Some("P-256") => Curve::P256,
                Some("P-384") => Curve::P384,
                other => return Err(fail(&format!("unsupported EC curve {:?}", other.map(truncate)))),
            };
            let x = b64field(&raw.x, "x")?;
            let y = b64field(&raw.y, "y")?;
            let n = curve.coordinate_len();
            if x.len() != n || y.len() != n {
                return Err(fail("EC coordinates have the wrong length for the curve"));
            }
            let mut point = Vec::with_capacity(1 + 2 * n);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if !crate::crypto::ec_point_valid(curve, &point) {
                return Err(fail("EC point is not on the curve"));
            }
            let spki = der::ec_spki(curve, &point);
            KeyMaterial::Ec { curve, point, spki }
        }
        "OKP" if !crate::crypto::PURE => {
            return Err(fail(
                "Ed25519 keys need the pure-Rust build (portcullis.wasm); this one verifies through the host",
            ))
        }
        "OKP" => {
            if raw.crv.as_deref() != Some("Ed25519") {
                return Err(fail(&format!("unsupported OKP curve {:?}", raw.crv.as_deref().map(truncate))));
            }
            let x = b64field(&raw.x, "x")?;
            if x.len() != 32 {
                return Err(fail("Ed25519 key is not 32 bytes"));
            }
            KeyMaterial::Ed25519 { x }
        }
        "oct" => return Err(fail("oct (shared secret) keys are never taken from a key set; configure hmac_secret")),
        other => return Err(fail(&format!("unsupported kty {:?}", truncate(other)))),
    };
    if !crate::crypto::PURE && alg.is_some_and(|a| matches!(a, Alg::PS256 | Alg::PS384 | Alg::PS512)) {
        return Err(fail(
            "RSA-PSS keys need the pure-Rust build (portcullis.wasm); this one verifies through the host",
        ));
    }
    let jwk = Jwk { kid: kid.clone(), alg, material };
    if let Some(a) = alg {
        if !jwk.allows(a) {
            return Err(fail(&format!("alg {} does not fit the key type", a.name())));
        }
    }
    Ok(jwk)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    #[test]
    fn an_all_zero_rsa_modulus_is_skipped_without_underflow() {
        let doc = r#"{"keys":[{"kty":"RSA","n":"AAAA","e":"AQAB","kid":"zero"},{"kty":"RSA","n":"","e":"AQAB","kid":"empty"}]}"#;
        let (set, warnings) = parse(doc.as_bytes()).unwrap();
        assert!(set.keys.is_empty());
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(warnings.iter().any(|w| w.contains("modulus is zero")), "{warnings:#?}");
    }

    #[test]
    fn parses_rfc7517_rsa_and_skips_bad_keys() {
        let doc = format!(
            r#"{{"keys":[
              {{"kty":"RSA","n":"{RSA_N}","e":"AQAB","alg":"RS256","kid":"2011-04-29"}},
              {{"kty":"RSA","n":"{RSA_N}","e":"AQAB","use":"enc","kid":"enc"}},
              {{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow","kid":"hmac"}},
              {{"kty":"EC","crv":"P-521","x":"AA","y":"AA","kid":"p521"}},
              {{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"tiny"}},
              {{"kty":"RSA","e":"AQAB","kid":"no-n"}},
              {{"kty":"RSA","n":"{RSA_N}","e":"AQAB","alg":"ES256","kid":"mismatch"}},
              {{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"ec"}},
              {{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a1","kid":"off-curve"}},
              {{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}},
              "not an object",
              {{"kty":"RSA","n":"{RSA_N}","e":"AQAB","key_ops":["encrypt"],"kid":"ops"}}
            ]}}"#
        );
        let (set, warnings) = parse(doc.as_bytes()).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, vec!["2011-04-29", "ec", "ed"]);
        assert_eq!(warnings.len(), 9, "{warnings:#?}");
        assert!(warnings.iter().all(|w| !w.contains(RSA_N)), "no key material in warnings");
        let rsa = &set.keys[0];
        assert!(rsa.allows(Alg::RS256));
        assert!(!rsa.allows(Alg::PS256), "pinned alg");
        assert!(!rsa.allows(Alg::HS256));
        let ec = &set.keys[1];
        assert!(ec.allows(Alg::ES256) && !ec.allows(Alg::ES384) && !ec.allows(Alg::RS256));
        assert!(set.keys[2].allows(Alg::EdDSA));
    }

    #[test]
    fn rejects_non_sets() {
        for doc in ["", "[]", "{}", r#"{"keys":{}}"#, "null", r#"{"keys":[1"#] {
            assert_eq!(parse(doc.as_bytes()).unwrap_err(), JwksError::NotAKeySet, "{doc}");
        }
    }

    #[test]
    fn unpinned_rsa_allows_rs_and_ps() {
        let doc = format!(r#"{{"keys":[{{"kty":"RSA","n":"{RSA_N}","e":"AQAB"}}]}}"#);
        let (set, _) = parse(doc.as_bytes()).unwrap();
        for a in [Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512] {
            assert!(set.keys[0].allows(a));
        }
        assert_eq!(set.candidates(None, Alg::RS256).count(), 1);
        assert_eq!(set.candidates(Some("x"), Alg::RS256).count(), 0);
    }
}
