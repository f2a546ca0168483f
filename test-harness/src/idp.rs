//! A stand-in identity provider on 127.0.0.1 for end-to-end tests.
//!
//! One [`TestIdp`] serves:
//!
//! | Path | What |
//! |---|---|
//! | `GET /jwks` | the *published* public keys (`{"keys":[...]}`), or an override body |
//! | `GET /.well-known/openid-configuration` | discovery document |
//! | `POST /token` | OAuth2 `client_credentials` grant, answering an RS256 JWT |
//! | `POST /introspect` | RFC 7662 introspection of registered opaque tokens (JSON or JWT answer) |
//! | `POST /backends/<name>/authenticate` | identity backends checking `username`/`password` forms |
//! | `POST /webhooks/<name>` | webhook sink, `204` |
//!
//! Every endpoint counts its hits and can be made faulty ([`TestIdp::set_behavior`]).
//! Tokens are minted with the PEM keys in `test-harness/keys/` through `jwt-simple`, except
//! for what `jwt-simple` refuses to do: RSA keys under 2048 bits (`rsa-weak-1024`, signed
//! here with a small built-in PKCS #1 v1.5 implementation, RS* only) and HMAC secrets under
//! 12 bytes (HS256 is computed here with `sha2`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP384KeyPairLike, ES256KeyPair, ES384KeyPair, Ed25519KeyPair, EdDSAKeyPairLike,
    PS256KeyPair, PS384KeyPair, PS512KeyPair, RS256KeyPair, RS384KeyPair, RS512KeyPair, RSAKeyPairLike,
};
use jwt_simple::claims::JWTClaims;
use jwt_simple::common::HeaderOptions;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::http::{Handler, Reply, ServerRequest, ServerResponse, StopSignal, TestServer};

pub use crate::http::form_decode;

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
    /// classic algorithm-confusion forgery). See also [`mint_hs256`].
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

/// An endpoint of the IdP, for fault injection and hit counting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Jwks,
    Discovery,
    Token,
    Introspect,
    /// `POST /backends/<name>/authenticate`.
    Backend(String),
    /// `POST /webhooks/<name>`.
    Webhook(String),
}

/// How an endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Behavior {
    /// Answer normally.
    #[default]
    Normal,
    /// Answer this status with a small JSON body.
    Status(u16),
    /// Never answer until the server is dropped (then the connection is closed) or the
    /// behavior changes (then the new behavior applies).
    Stall,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Wait, then answer this status with a small JSON body (a slow failure).
    DelayThenStatus(Duration, u16),
    /// `200`, `content-type: application/json`, body `<<not json>>`.
    Garbage,
    /// Close the connection without answering.
    Close,
}

/// The current unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970").as_secs()
}

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

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

#[derive(Debug, Clone)]
enum Material {
    /// Big-endian, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        d: Vec<u8>,
    },
    /// Fixed-size big-endian coordinates.
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

/// A private key loaded from PEM, with its public parts.
#[derive(Debug, Clone)]
struct Key {
    pem: String,
    /// DER of the PKCS #8 AlgorithmIdentifier, reused for the SPKI.
    algorithm_id: Vec<u8>,
    material: Material,
}

impl Key {
    fn from_pem(pem: &str) -> Key {
        let der = pem_to_der(pem);
        let pkcs8 = parse_pkcs8(&der).expect("not a PKCS #8 private key");
        let material = match (pkcs8.oid.as_slice(), pkcs8.param.as_slice()) {
            (OID_RSA, _) => {
                let ints = der_sequence_ints(&pkcs8.private_key).expect("bad RSAPrivateKey");
                let [_, n, e, d, ..] = ints.as_slice() else { panic!("bad RSAPrivateKey") };
                Material::Rsa { n: n.clone(), e: e.clone(), d: d.clone() }
            }
            (OID_EC, OID_P256) => {
                let spki = ES256KeyPair::from_pem(pem)
                    .expect("jwt-simple rejected a P-256 key")
                    .public_key()
                    .to_der()
                    .expect("P-256 public key to DER");
                ec_material(Curve::P256, &spki)
            }
            (OID_EC, OID_P384) => {
                let spki = ES384KeyPair::from_pem(pem)
                    .expect("jwt-simple rejected a P-384 key")
                    .public_key()
                    .to_der()
                    .expect("P-384 public key to DER");
                ec_material(Curve::P384, &spki)
            }
            (OID_ED25519, _) => Material::Ed25519 {
                x: Ed25519KeyPair::from_pem(pem).expect("jwt-simple rejected an Ed25519 key").public_key().to_bytes(),
            },
            _ => panic!("unsupported key algorithm"),
        };
        Key { pem: pem.to_string(), algorithm_id: pkcs8.algorithm_id, material }
    }

    /// The public JWK (members sorted by name).
    fn jwk(&self, kid: &str, alg: Option<Alg>) -> Value {
        let mut jwk = match &self.material {
            Material::Rsa { n, e, .. } => json!({"kty": "RSA", "n": b64url(n), "e": b64url(e)}),
            Material::Ec { curve, x, y } => json!({
                "kty": "EC",
                "crv": if *curve == Curve::P256 { "P-256" } else { "P-384" },
                "x": b64url(x),
                "y": b64url(y),
            }),
            Material::Ed25519 { x } => json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(x)}),
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg.name());
        }
        jwk
    }

    /// The public key as `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo).
    fn spki_pem(&self) -> String {
        let key_bits = match &self.material {
            Material::Rsa { n, e, .. } => der_tlv(0x30, &[der_uint(n), der_uint(e)].concat()),
            Material::Ec { x, y, .. } => [&[4u8][..], x, y].concat(),
            Material::Ed25519 { x } => x.clone(),
        };
        let bit_string = der_tlv(0x03, &[&[0u8][..], &key_bits].concat());
        let spki = der_tlv(0x30, &[self.algorithm_id.clone(), bit_string].concat());
        let b64 = STANDARD.encode(spki);
        let lines: Vec<&str> =
            b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
    }

    /// Signs `claims`; `header_kid` goes in the header (omitted when `None`).
    fn sign(&self, alg: Alg, header_kid: Option<&str>, typ: Option<&str>, claims: &Value) -> String {
        let weak_rsa = matches!(&self.material, Material::Rsa { n, .. } if n.len() * 8 < 2048);
        match alg {
            Alg::HS256 => {
                let input = signing_input(alg, header_kid, typ, claims);
                let tag = hmac_sha256(self.spki_pem().as_bytes(), input.as_bytes());
                return format!("{input}.{}", b64url(tag));
            }
            Alg::RS256 | Alg::RS384 | Alg::RS512 if weak_rsa => {
                // jwt-simple refuses RSA keys under 2048 bits.
                let Material::Rsa { n, d, .. } = &self.material else { unreachable!() };
                let input = signing_input(alg, header_kid, typ, claims);
                let sig = rsa_pkcs1v15_sign(n, d, alg, input.as_bytes());
                return format!("{input}.{}", b64url(sig));
            }
            Alg::PS256 | Alg::PS384 | Alg::PS512 if weak_rsa => {
                panic!("PS* with an RSA key under 2048 bits is not supported (jwt-simple refuses it)")
            }
            _ => {}
        }
        let compatible = match &self.material {
            Material::Rsa { .. } => !matches!(alg, Alg::ES256 | Alg::ES384 | Alg::EdDSA),
            Material::Ec { curve, .. } => {
                (*curve, alg) == (Curve::P256, Alg::ES256) || (*curve, alg) == (Curve::P384, Alg::ES384)
            }
            Material::Ed25519 { .. } => alg == Alg::EdDSA,
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
            Alg::HS256 => unreachable!(),
        }
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

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = if key.len() > 64 { Sha256::digest(key).to_vec() } else { key.to_vec() };
    block.resize(64, 0);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
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

// ---------------------------------------------------------------------------------------
// DER / PEM
// ---------------------------------------------------------------------------------------

const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];

fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().map(str::trim).filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("bad base64 in PEM")
}

/// Splits one DER element off `input`: (tag, content, rest).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER from unsigned big-endian bytes.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed = strip_zeros(bytes);
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if !matches!(trimmed.first(), Some(&b) if b & 0x80 == 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der_tlv(0x02, &content)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

struct Pkcs8 {
    algorithm_id: Vec<u8>,
    oid: Vec<u8>,
    /// The algorithm parameter's OID content (the curve for EC), or empty.
    param: Vec<u8>,
    private_key: Vec<u8>,
}

fn parse_pkcs8(der: &[u8]) -> Option<Pkcs8> {
    let (0x30, info, _) = der_next(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_next(info)? else {
        return None;
    };
    let (0x30, algorithm, after) = der_next(rest)? else {
        return None;
    };
    let algorithm_id = rest[..rest.len() - after.len()].to_vec();
    let (0x06, oid, params) = der_next(algorithm)? else {
        return None;
    };
    let param = match der_next(params) {
        Some((0x06, curve, _)) => curve.to_vec(),
        _ => Vec::new(),
    };
    let (0x04, private_key, _) = der_next(after)? else {
        return None;
    };
    Some(Pkcs8 { algorithm_id, oid: oid.to_vec(), param, private_key: private_key.to_vec() })
}

/// The INTEGERs of a DER SEQUENCE, as unsigned big-endian bytes without leading zeros.
fn der_sequence_ints(der: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (0x30, mut rest, _) = der_next(der)? else {
        return None;
    };
    let mut ints = Vec::new();
    while !rest.is_empty() {
        let (tag, content, next) = der_next(rest)?;
        if tag != 0x02 {
            break;
        }
        ints.push(strip_zeros(content).to_vec());
        rest = next;
    }
    Some(ints)
}

/// EC coordinates from an SPKI whose BIT STRING holds an uncompressed point.
fn ec_material(curve: Curve, spki: &[u8]) -> Material {
    let size = if curve == Curve::P256 { 32 } else { 48 };
    let point = der_next(spki)
        .and_then(|(_, seq, _)| der_next(seq))
        .and_then(|(_, _, rest)| der_next(rest))
        .map(|(_, bits, _)| bits)
        .expect("bad EC SPKI");
    assert!(point.len() == 2 + 2 * size && point[..2] == [0, 4], "EC public key is not an uncompressed point");
    Material::Ec { curve, x: point[2..2 + size].to_vec(), y: point[2 + size..].to_vec() }
}

// ---------------------------------------------------------------------------------------
// RSA PKCS #1 v1.5 signing for keys jwt-simple refuses (under 2048 bits)
// ---------------------------------------------------------------------------------------

/// EMSA-PKCS1-v1_5 encoding then `EM^d mod n`.
fn rsa_pkcs1v15_sign(n: &[u8], d: &[u8], alg: Alg, message: &[u8]) -> Vec<u8> {
    let (prefix, digest): (&[u8], Vec<u8>) = match alg {
        Alg::RS256 => (
            &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
                0x04, 0x20,
            ],
            Sha256::digest(message).to_vec(),
        ),
        Alg::RS384 => (
            &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
                0x04, 0x30,
            ],
            Sha384::digest(message).to_vec(),
        ),
        Alg::RS512 => (
            &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00,
                0x04, 0x40,
            ],
            Sha512::digest(message).to_vec(),
        ),
        _ => unreachable!("not a PKCS #1 v1.5 algorithm"),
    };
    let k = n.len();
    let t_len = prefix.len() + digest.len();
    assert!(k >= t_len + 11, "RSA modulus too short for {}", alg.name());
    let mut em = vec![0xffu8; k];
    em[0] = 0;
    em[1] = 1;
    em[k - t_len - 1] = 0;
    em[k - t_len..k - digest.len()].copy_from_slice(prefix);
    em[k - digest.len()..].copy_from_slice(&digest);
    mod_pow(&em, d, n)
}

/// `base^exp mod modulus` (big-endian bytes; odd modulus; `base < modulus`), by Montgomery
/// multiplication. Returns `modulus.len()` bytes.
fn mod_pow(base: &[u8], exp: &[u8], modulus: &[u8]) -> Vec<u8> {
    let n = to_limbs(modulus, None);
    let s = n.len();
    let n0_inv = {
        let mut inv = 1u32;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n[0].wrapping_mul(inv)));
        }
        inv.wrapping_neg()
    };
    // R^2 mod n, R = 2^(32 s), by doubling 1 modulo n.
    let mut r2 = vec![0u32; s];
    r2[0] = 1;
    for _ in 0..64 * s {
        let mut carry = 0u32;
        for limb in r2.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | carry;
            carry = next;
        }
        if carry != 0 || !less_than(&r2, &n) {
            sub_in_place(&mut r2, &n);
        }
    }
    let mut one = vec![0u32; s];
    one[0] = 1;
    let base = mont_mul(&to_limbs(base, Some(s)), &r2, &n, n0_inv);
    let mut acc = mont_mul(&one, &r2, &n, n0_inv);
    for byte in exp {
        for bit in (0..8).rev() {
            acc = mont_mul(&acc, &acc, &n, n0_inv);
            if byte >> bit & 1 == 1 {
                acc = mont_mul(&acc, &base, &n, n0_inv);
            }
        }
    }
    let result = mont_mul(&acc, &one, &n, n0_inv);
    let bytes: Vec<u8> = result.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
    bytes[bytes.len() - modulus.len()..].to_vec()
}

/// Little-endian u32 limbs of big-endian bytes, zero-padded to `limbs` when given.
fn to_limbs(bytes: &[u8], limbs: Option<usize>) -> Vec<u32> {
    let mut out: Vec<u32> = bytes.rchunks(4).map(|c| c.iter().fold(0u32, |a, &b| (a << 8) | b as u32)).collect();
    if let Some(limbs) = limbs {
        out.resize(limbs, 0);
    }
    out
}

fn less_than(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

fn sub_in_place(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0i64;
    for (x, &y) in a.iter_mut().zip(b) {
        let v = *x as i64 - y as i64 - borrow;
        borrow = (v < 0) as i64;
        *x = v as u32;
    }
}

/// Montgomery product `a b R^-1 mod n` (CIOS).
#[allow(clippy::needless_range_loop)]
fn mont_mul(a: &[u32], b: &[u32], n: &[u32], n0_inv: u32) -> Vec<u32> {
    let s = n.len();
    let mut t = vec![0u32; s + 2];
    for &bi in b {
        let mut carry = 0u64;
        for j in 0..s {
            let v = t[j] as u64 + a[j] as u64 * bi as u64 + carry;
            t[j] = v as u32;
            carry = v >> 32;
        }
        let v = t[s] as u64 + carry;
        t[s] = v as u32;
        t[s + 1] = (v >> 32) as u32;
        let m = t[0].wrapping_mul(n0_inv);
        let mut carry = (t[0] as u64 + m as u64 * n[0] as u64) >> 32;
        for j in 1..s {
            let v = t[j] as u64 + m as u64 * n[j] as u64 + carry;
            t[j - 1] = v as u32;
            carry = v >> 32;
        }
        let v = t[s] as u64 + carry;
        t[s - 1] = v as u32;
        t[s] = t[s + 1] + (v >> 32) as u32;
        t[s + 1] = 0;
    }
    if t[s] != 0 || !less_than(&t[..s], n) {
        sub_in_place(&mut t[..s], n);
    }
    t.truncate(s);
    t
}

// ---------------------------------------------------------------------------------------
// Server state
// ---------------------------------------------------------------------------------------

struct User {
    password: String,
    extra_info: Option<Value>,
}

struct Client {
    secret: String,
    scope: String,
}

struct State {
    issuer: String,
    keys: BTreeMap<String, Key>,
    published: Vec<String>,
    jwk_alg: HashMap<String, Alg>,
    jwks_override: Option<String>,
    jwks_cache_control: Option<String>,
    audience: String,
    clients: HashMap<String, Client>,
    introspection_client: (String, String),
    introspection_cache_control: Option<String>,
    opaque: HashMap<String, Value>,
    backends: HashMap<String, HashMap<String, User>>,
    backend_hits: Vec<(String, String, SystemTime)>,
    webhooks: Vec<(String, Value)>,
    behaviors: HashMap<Endpoint, Behavior>,
    hits: HashMap<Endpoint, usize>,
}

impl State {
    fn key(&self, kid: &str) -> &Key {
        self.keys.get(kid).unwrap_or_else(|| panic!("unknown kid {kid:?}; known: {:?}", self.keys.keys()))
    }

    fn jwks(&self, kids: &[String]) -> String {
        let keys: Vec<Value> = kids.iter().map(|kid| self.key(kid).jwk(kid, self.jwk_alg.get(kid).copied())).collect();
        json!({ "keys": keys }).to_string()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Notified when a behavior changes (wakes stalled requests).
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The stand-in identity provider; stops when dropped.
pub struct TestIdp {
    /// The bound port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Shared>,
    _server: TestServer,
}

impl TestIdp {
    /// Starts on a free port.
    pub fn start() -> TestIdp {
        Self::start_on(0)
    }

    /// Starts on `port` (0 for a free one). Panics if the port cannot be bound.
    pub fn start_on(port: u16) -> TestIdp {
        let mut clients = HashMap::new();
        clients.insert("demo-client".to_string(), Client { secret: "demo-secret".into(), scope: "orders:read".into() });
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                issuer: String::new(), // set once the port is known
                keys: key_files().clone(),
                published: DEFAULT_PUBLISHED.iter().map(|s| s.to_string()).collect(),
                jwk_alg: HashMap::new(),
                jwks_override: None,
                jwks_cache_control: None,
                audience: "demo-api".into(),
                clients,
                introspection_client: ("gateway".into(), "gateway-secret".into()),
                introspection_cache_control: None,
                opaque: HashMap::new(),
                backends: HashMap::new(),
                backend_hits: Vec::new(),
                webhooks: Vec::new(),
                behaviors: HashMap::new(),
                hits: HashMap::new(),
            }),
            changed: Condvar::new(),
        });
        let handler: Handler = {
            let shared = shared.clone();
            Arc::new(move |request: &ServerRequest, stop: &StopSignal| handle(&shared, request, stop))
        };
        let server =
            TestServer::start(port, handler).unwrap_or_else(|e| panic!("test IdP: cannot bind 127.0.0.1:{port}: {e}"));
        let port = server.port();
        shared.lock().issuer = format!("http://127.0.0.1:{port}");
        TestIdp { port, shared, _server: server }
    }

    /// `http://127.0.0.1:<port>`; also the `iss` of minted tokens.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `issuer() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    /// `issuer() + "/jwks"`.
    pub fn jwks_uri(&self) -> String {
        self.url("/jwks")
    }

    // --- keys and JWKS -------------------------------------------------------------------

    /// Every known key id (the key files' stems plus aliases).
    pub fn kids(&self) -> Vec<String> {
        self.shared.lock().keys.keys().cloned().collect()
    }

    /// Makes the key `existing_kid` also available under `new_kid` (e.g. a rotated kid for
    /// the same key material).
    pub fn add_key_alias(&self, existing_kid: &str, new_kid: &str) {
        let mut state = self.shared.lock();
        let key = state.key(existing_kid).clone();
        state.keys.insert(new_kid.to_string(), key);
    }

    /// Replaces the set of key ids served by `/jwks`. Panics on an unknown kid.
    pub fn publish(&self, kids: &[&str]) {
        let mut state = self.shared.lock();
        for kid in kids {
            state.key(kid);
        }
        state.published = kids.iter().map(|s| s.to_string()).collect();
    }

    /// Like [`publish`](Self::publish), binding each key to an `alg` in its JWK.
    pub fn publish_with_alg(&self, kids: &[(&str, Alg)]) {
        let plain: Vec<&str> = kids.iter().map(|(kid, _)| *kid).collect();
        self.publish(&plain);
        let mut state = self.shared.lock();
        for (kid, alg) in kids {
            state.jwk_alg.insert(kid.to_string(), *alg);
        }
    }

    /// Binds (or unbinds, with `None`) the `alg` member of a key's JWK. By default no JWK
    /// carries `alg`.
    pub fn set_jwk_alg(&self, kid: &str, alg: Option<Alg>) {
        let mut state = self.shared.lock();
        state.key(kid);
        match alg {
            Some(alg) => state.jwk_alg.insert(kid.to_string(), alg),
            None => state.jwk_alg.remove(kid),
        };
    }

    /// The JWKS of the published keys (what `/jwks` serves without an override).
    pub fn jwks_json(&self) -> String {
        let state = self.shared.lock();
        state.jwks(&state.published)
    }

    /// A JWKS of the given keys, e.g. for inline configuration.
    pub fn public_jwks_for(&self, kids: &[&str]) -> String {
        let kids: Vec<String> = kids.iter().map(|s| s.to_string()).collect();
        self.shared.lock().jwks(&kids)
    }

    /// Serves this raw body from `/jwks` instead of the published keys (`None` restores).
    pub fn set_jwks_override(&self, body: Option<String>) {
        self.shared.lock().jwks_override = body;
    }

    /// A `Cache-Control` header for `/jwks` answers (`None`: no header).
    pub fn set_jwks_cache_control(&self, value: Option<String>) {
        self.shared.lock().jwks_cache_control = value;
    }

    /// The public key of `kid` as SPKI PEM (the HS256 secret used by `mint(Alg::HS256, ..)`).
    pub fn public_key_pem(&self, kid: &str) -> String {
        self.shared.lock().key(kid).spki_pem()
    }

    // --- minting -------------------------------------------------------------------------

    /// Signs exactly `claims` (no `iat`/`exp` added) with the key `kid` and `alg`; the
    /// header is `{"alg", "typ":"JWT", "kid"}`. Panics if the key cannot do `alg`.
    pub fn mint(&self, alg: Alg, kid: &str, claims: Value) -> String {
        self.mint_with(alg, kid, Some(kid), None, claims)
    }

    /// Like [`mint`](Self::mint), choosing the header: `header_kid` (omitted when `None`)
    /// and `typ` (`"JWT"` when `None`).
    pub fn mint_with(&self, alg: Alg, kid: &str, header_kid: Option<&str>, typ: Option<&str>, claims: Value) -> String {
        let key = self.shared.lock().key(kid).clone();
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

    // --- token endpoint ------------------------------------------------------------------

    /// The `aud` of tokens from `/token` (default `demo-api`).
    pub fn set_audience(&self, audience: &str) {
        self.shared.lock().audience = audience.to_string();
    }

    /// Registers a client for the `client_credentials` grant.
    pub fn add_client(&self, id: &str, secret: &str, scope: &str) {
        self.shared.lock().clients.insert(id.to_string(), Client { secret: secret.into(), scope: scope.into() });
    }

    // --- introspection -------------------------------------------------------------------

    /// The Basic credentials `/introspect` requires (default `gateway`/`gateway-secret`).
    pub fn set_introspection_client(&self, id: &str, secret: &str) {
        self.shared.lock().introspection_client = (id.to_string(), secret.to_string());
    }

    /// Registers an active opaque token; introspection answers `{"active":true, ...claims}`.
    pub fn register_opaque(&self, token: &str, claims: Value) {
        assert!(claims.is_object(), "claims must be a JSON object");
        self.shared.lock().opaque.insert(token.to_string(), claims);
    }

    /// Makes a token inactive.
    pub fn revoke(&self, token: &str) {
        self.shared.lock().opaque.remove(token);
    }

    /// A `Cache-Control` header for introspection answers (`None`: no header).
    pub fn set_introspection_cache_control(&self, value: Option<String>) {
        self.shared.lock().introspection_cache_control = value;
    }

    // --- identity backends ---------------------------------------------------------------

    /// Creates a backend at `POST /backends/<name>/authenticate` (no users yet).
    pub fn add_backend(&self, name: &str) {
        self.shared.lock().backends.entry(name.to_string()).or_default();
    }

    /// Adds (or replaces) a user of `backend`; `extra_info` is answered as `extraInfo`.
    pub fn add_user(&self, backend: &str, username: &str, password: &str, extra_info: Option<Value>) {
        let mut state = self.shared.lock();
        let users = state
            .backends
            .get_mut(backend)
            .unwrap_or_else(|| panic!("unknown backend {backend:?}; call add_backend first"));
        users.insert(username.to_string(), User { password: password.to_string(), extra_info });
    }

    /// `(backend, username)` of every request that reached a backend, oldest first.
    pub fn backend_hits(&self) -> Vec<(String, String)> {
        self.backend_hits_timed().into_iter().map(|(b, u, _)| (b, u)).collect()
    }

    /// [`backend_hits`](Self::backend_hits) with arrival times.
    pub fn backend_hits_timed(&self) -> Vec<(String, String, SystemTime)> {
        self.shared.lock().backend_hits.clone()
    }

    // --- webhooks ------------------------------------------------------------------------

    /// Bodies received by `/webhooks/<name>`, oldest first: JSON, or a string when the body
    /// is not JSON. Every received body is kept, whatever the endpoint's behavior.
    pub fn webhook_bodies(&self, name: &str) -> Vec<Value> {
        self.shared.lock().webhooks.iter().filter(|(n, _)| n == name).map(|(_, body)| body.clone()).collect()
    }

    // --- faults and counters -------------------------------------------------------------

    /// Sets how `endpoint` answers from now on (stalled requests re-check immediately).
    pub fn set_behavior(&self, endpoint: Endpoint, behavior: Behavior) {
        self.shared.lock().behaviors.insert(endpoint, behavior);
        self.shared.changed.notify_all();
    }

    /// Requests that reached `endpoint` so far, faulty answers included.
    pub fn hits(&self, endpoint: Endpoint) -> usize {
        self.shared.lock().hits.get(&endpoint).copied().unwrap_or(0)
    }

    /// Resets every hit counter (and the backend hit log).
    pub fn reset_hits(&self) {
        let mut state = self.shared.lock();
        state.hits.clear();
        state.backend_hits.clear();
    }
}

// ---------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------

fn route(path: &str) -> Option<Endpoint> {
    match path {
        "/jwks" => return Some(Endpoint::Jwks),
        "/.well-known/openid-configuration" => return Some(Endpoint::Discovery),
        "/token" => return Some(Endpoint::Token),
        "/introspect" => return Some(Endpoint::Introspect),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/backends/") {
        let name = rest.strip_suffix("/authenticate")?;
        return (!name.is_empty() && !name.contains('/')).then(|| Endpoint::Backend(name.into()));
    }
    let name = path.strip_prefix("/webhooks/")?;
    (!name.is_empty() && !name.contains('/')).then(|| Endpoint::Webhook(name.into()))
}

fn json_reply(status: u16, value: Value) -> Reply {
    Reply::Respond(ServerResponse::json(status, &value))
}

fn form_value(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn handle(shared: &Shared, request: &ServerRequest, stop: &StopSignal) -> Reply {
    let Some(endpoint) = route(request.path()) else {
        return json_reply(404, json!({"error": "not_found"}));
    };
    let form = form_decode(&String::from_utf8_lossy(&request.body));
    {
        let mut state = shared.lock();
        *state.hits.entry(endpoint.clone()).or_default() += 1;
        match &endpoint {
            Endpoint::Backend(name) => {
                let username = form_value(&form, "username").unwrap_or_default();
                state.backend_hits.push((name.clone(), username, SystemTime::now()));
            }
            Endpoint::Webhook(name) => {
                let body = serde_json::from_slice(&request.body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&request.body).into_owned()));
                state.webhooks.push((name.clone(), body));
            }
            _ => {}
        }
    }

    // Fault injection.
    loop {
        let state = shared.lock();
        let behavior = state.behaviors.get(&endpoint).cloned().unwrap_or_default();
        match behavior {
            Behavior::Normal => break,
            Behavior::Status(status) => {
                return json_reply(status, json!({"error": "injected_fault", "status": status}))
            }
            Behavior::Garbage => return Reply::Respond(ServerResponse::new(200, "application/json", "<<not json>>")),
            Behavior::Close => return Reply::Close,
            Behavior::Delay(delay) => {
                drop(state);
                if !stop.sleep(delay) {
                    return Reply::Close;
                }
                break;
            }
            Behavior::DelayThenStatus(delay, status) => {
                drop(state);
                if !stop.sleep(delay) {
                    return Reply::Close;
                }
                return json_reply(status, json!({"error": "injected_fault", "status": status}));
            }
            Behavior::Stall => {
                if stop.is_stopped() {
                    return Reply::Close;
                }
                let _ =
                    shared.changed.wait_timeout(state, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    let post_only = !matches!(endpoint, Endpoint::Jwks | Endpoint::Discovery);
    if post_only && request.method != "POST" {
        return Reply::Respond(
            ServerResponse::json(405, &json!({"error": "method_not_allowed"})).with_header("allow", "POST"),
        );
    }
    match endpoint {
        Endpoint::Jwks => {
            let state = shared.lock();
            let body = match &state.jwks_override {
                Some(body) => body.clone(),
                None => state.jwks(&state.published),
            };
            let mut answer = ServerResponse::new(200, "application/json", body);
            if let Some(cc) = &state.jwks_cache_control {
                answer = answer.with_header("cache-control", cc);
            }
            Reply::Respond(answer)
        }
        Endpoint::Discovery => {
            let issuer = shared.lock().issuer.clone();
            json_reply(
                200,
                json!({
                    "issuer": issuer,
                    "jwks_uri": format!("{issuer}/jwks"),
                    "token_endpoint": format!("{issuer}/token"),
                    "introspection_endpoint": format!("{issuer}/introspect"),
                }),
            )
        }
        Endpoint::Token => token(shared, request, &form),
        Endpoint::Introspect => introspect(shared, request, &form),
        Endpoint::Backend(name) => authenticate(shared, &name, &form),
        Endpoint::Webhook(_) => Reply::Respond(ServerResponse::empty(204)),
    }
}

/// `(user, password)` from an `Authorization: Basic` header.
fn basic_credentials(request: &ServerRequest) -> Option<(String, String)> {
    let value = request.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(token.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn token(shared: &Shared, request: &ServerRequest, form: &[(String, String)]) -> Reply {
    if form_value(form, "grant_type").as_deref() != Some("client_credentials") {
        return json_reply(400, json!({"error": "unsupported_grant_type"}));
    }
    let credentials = basic_credentials(request)
        .or_else(|| Some((form_value(form, "client_id")?, form_value(form, "client_secret")?)));
    let (key, claims) = {
        let state = shared.lock();
        let client = credentials
            .as_ref()
            .and_then(|(id, secret)| state.clients.get(id).filter(|c| &c.secret == secret).map(|c| (id, c)));
        let Some((id, client)) = client else {
            return json_reply(401, json!({"error": "invalid_client"}));
        };
        let now = now();
        let claims = json!({
            "iss": state.issuer,
            "sub": id,
            "aud": state.audience,
            "client_id": id,
            "scope": client.scope,
            "iat": now,
            "exp": now + 600,
        });
        (state.key("rsa-a").clone(), claims)
    };
    let access_token = key.sign(Alg::RS256, Some("rsa-a"), None, &claims);
    json_reply(200, json!({"access_token": access_token, "token_type": "Bearer", "expires_in": 600}))
}

fn introspect(shared: &Shared, request: &ServerRequest, form: &[(String, String)]) -> Reply {
    let (expected, cache_control, issuer, active, key) = {
        let state = shared.lock();
        let active = form_value(form, "token").and_then(|t| state.opaque.get(&t).cloned());
        (
            state.introspection_client.clone(),
            state.introspection_cache_control.clone(),
            state.issuer.clone(),
            active,
            state.key("rsa-a").clone(),
        )
    };
    if basic_credentials(request).as_ref() != Some(&expected) {
        return Reply::Respond(
            ServerResponse::json(401, &json!({"error": "invalid_client"}))
                .with_header("www-authenticate", "Basic realm=\"introspection\""),
        );
    }
    if form_value(form, "token").is_none() {
        return json_reply(400, json!({"error": "invalid_request"}));
    }
    let accept = request.header("accept").unwrap_or_default().to_ascii_lowercase();
    // The phantom-token answer (`application/jwt`: the by-value access token itself) is
    // preferred when offered; RFC 9701 (`token-introspection+jwt`) otherwise.
    let jwt_type = if accept.split(',').any(|t| t.trim().starts_with("application/jwt")) {
        Some("application/jwt")
    } else if accept.contains("application/token-introspection+jwt") {
        Some("application/token-introspection+jwt")
    } else {
        None
    };
    let mut answer = match (active, jwt_type) {
        (Some(Value::Object(claims)), Some("application/jwt")) => {
            let mut payload = Map::new();
            payload.insert("iss".into(), json!(issuer));
            payload.extend(claims);
            let jwt = key.sign(Alg::RS256, Some("rsa-a"), None, &Value::Object(payload));
            ServerResponse::new(200, "application/jwt", jwt)
        }
        (Some(Value::Object(claims)), Some(content_type)) => {
            let mut inner = Map::new();
            inner.insert("active".into(), json!(true));
            inner.extend(claims);
            let payload = json!({"iss": issuer, "aud": "gateway", "iat": now(), "token_introspection": inner});
            let jwt = key.sign(Alg::RS256, Some("rsa-a"), Some("token-introspection+jwt"), &payload);
            ServerResponse::new(200, content_type, jwt)
        }
        (Some(Value::Object(claims)), None) => {
            let mut payload = Map::new();
            payload.insert("active".into(), json!(true));
            payload.extend(claims);
            ServerResponse::json(200, &Value::Object(payload))
        }
        _ => ServerResponse::json(200, &json!({"active": false})),
    };
    if let Some(cc) = cache_control {
        answer = answer.with_header("cache-control", &cc);
    }
    Reply::Respond(answer)
}

fn authenticate(shared: &Shared, backend: &str, form: &[(String, String)]) -> Reply {
    let state = shared.lock();
    let Some(users) = state.backends.get(backend) else {
        return json_reply(404, json!({"error": "unknown_backend"}));
    };
    let username = form_value(form, "username").unwrap_or_default();
    let password = form_value(form, "password");
    match users.get(&username) {
        Some(user) if password.as_deref() == Some(user.password.as_str()) => {
            let mut body = json!({ "user": username });
            if let Some(extra) = &user.extra_info {
                body["extraInfo"] = extra.clone();
            }
            json_reply(200, body)
        }
        _ => json_reply(401, json!({"error": "unknown_user"})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{self, basic_auth, form_encode};
    use jwt_simple::algorithms::{
        ECDSAP256PublicKeyLike, ECDSAP384PublicKeyLike, ES256PublicKey, ES384PublicKey, Ed25519PublicKey,
        EdDSAPublicKeyLike, PS256PublicKey, RS256PublicKey, RS512PublicKey, RSAPublicKeyLike,
    };
    use std::time::Instant;

    fn parts(token: &str) -> (Value, Value) {
        let mut it = token.split('.');
        let mut next =
            || -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap() };
        (next(), next())
    }

    fn jwk_of(idp: &TestIdp, kid: &str) -> String {
        let jwks: Value = serde_json::from_str(&idp.public_jwks_for(&[kid])).unwrap();
        jwks["keys"][0].to_string()
    }

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
        let token = idp.mint(Alg::RS256, "rsa-weak-1024", json!({"sub": "x"}));
        let (header, _) = parts(&token);
        assert_eq!(header["kid"], "rsa-weak-1024");
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let Material::Rsa { n, e, .. } = &key_files()["rsa-weak-1024"].material else { unreachable!() };
        assert_eq!(n.len(), 128);
        let em = mod_pow(&sig, e, n);
        assert_eq!(&em[..3], &[0, 1, 0xff]);
        assert_eq!(&em[em.len() - 32..], Sha256::digest(input.as_bytes()).as_slice());
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
    fn token_endpoint() {
        let idp = TestIdp::start();
        idp.set_audience("api-2");
        let form = form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
        ]);
        let ct = [("content-type", "application/x-www-form-urlencoded")];
        let r = http::post(&idp.url("/token"), &ct, form.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(600)));
        let token = body["access_token"].as_str().unwrap();
        let claims = RS256PublicKey::from_jwk(&jwk_of(&idp, "rsa-a"))
            .unwrap()
            .verify_token::<Map<String, Value>>(token, None)
            .unwrap();
        assert_eq!(claims.subject.as_deref(), Some("demo-client"));
        assert_eq!(claims.custom["scope"], "orders:read");
        let (_, payload) = parts(token);
        assert_eq!(payload["aud"], "api-2");
        assert_eq!(payload["iss"], idp.issuer());

        idp.add_client("other", "s3", "a b");
        let auth = basic_auth("other", "s3");
        let r = http::post(&idp.url("/token"), &[("authorization", &auth)], b"grant_type=client_credentials").unwrap();
        assert_eq!(parts(r.json()["access_token"].as_str().unwrap()).1["scope"], "a b");

        let bad = form.replace("demo-secret", "nope");
        let r = http::post(&idp.url("/token"), &ct, bad.as_bytes()).unwrap();
        assert_eq!((r.status, r.json()), (401, json!({"error": "invalid_client"})));
        assert_eq!(idp.hits(Endpoint::Token), 3);
    }

    #[test]
    fn introspection() {
        let idp = TestIdp::start();
        idp.register_opaque("opaque-1", json!({"sub": "u1", "scope": "orders:read"}));
        idp.set_introspection_cache_control(Some("max-age=30".into()));
        let auth = basic_auth("gateway", "gateway-secret");
        let ask = |token: &str, extra: &[(&str, &str)]| {
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend_from_slice(extra);
            let body = form_encode(&[("token", token), ("token_type_hint", "access_token")]);
            http::post(&idp.url("/introspect"), &headers, body.as_bytes()).unwrap()
        };
        let r = ask("opaque-1", &[]);
        assert_eq!(r.json(), json!({"active": true, "sub": "u1", "scope": "orders:read"}));
        assert_eq!(r.header("cache-control"), Some("max-age=30"));

        let r = ask("opaque-1", &[("accept", "application/jwt")]);
        assert_eq!(r.header("content-type"), Some("application/jwt"));
        let claims = RS256PublicKey::from_jwk(&jwk_of(&idp, "rsa-a"))
            .unwrap()
            .verify_token::<Map<String, Value>>(&r.text(), None)
            .unwrap();
        assert_eq!(claims.issuer.as_deref(), Some(idp.issuer().as_str()));
        assert_eq!(claims.subject.as_deref(), Some("u1"), "application/jwt: the by-value access token itself");

        let r = ask("opaque-1", &[("accept", "application/token-introspection+jwt")]);
        assert_eq!(r.header("content-type"), Some("application/token-introspection+jwt"));
        let claims = RS256PublicKey::from_jwk(&jwk_of(&idp, "rsa-a"))
            .unwrap()
            .verify_token::<Map<String, Value>>(
                &r.text(),
                Some(jwt_simple::prelude::VerificationOptions {
                    required_signature_type: Some("token-introspection+jwt".into()),
                    ..Default::default()
                }),
            )
            .unwrap();
        assert_eq!(claims.custom["token_introspection"]["active"], true, "RFC 9701 shape");
        assert_eq!(claims.custom["token_introspection"]["sub"], "u1");

        idp.revoke("opaque-1");
        assert_eq!(ask("opaque-1", &[]).json(), json!({"active": false}));
        let r = ask("opaque-1", &[("accept", "application/jwt")]);
        assert_eq!(r.json(), json!({"active": false}));

        let r = http::post(&idp.url("/introspect"), &[], b"token=x").unwrap();
        assert_eq!(r.status, 401);
        idp.set_introspection_client("gw2", "pw2");
        assert_eq!(ask("x", &[]).status, 401);
        assert_eq!(idp.hits(Endpoint::Introspect), 7);
    }

    #[test]
    fn identity_backends() {
        let idp = TestIdp::start();
        idp.add_backend("ldap");
        idp.add_user("ldap", "alice smith", "p@ss w&rd", Some(json!({"groups": ["a"]})));
        idp.add_user("ldap", "bob", "pw", None);
        let url = idp.url("/backends/ldap/authenticate");
        let login = |user: &str, pw: &str| {
            let body = form_encode(&[("username", user), ("password", pw)]);
            http::post(&url, &[], body.as_bytes()).unwrap()
        };
        let r = login("alice smith", "p@ss w&rd");
        assert_eq!((r.status, r.json()), (200, json!({"user": "alice smith", "extraInfo": {"groups": ["a"]}})));
        assert_eq!(login("bob", "pw").json(), json!({"user": "bob"}));
        let r = login("bob", "wrong");
        assert_eq!((r.status, r.json()), (401, json!({"error": "unknown_user"})));
        let r = http::post(&url, &[], b"username=bob&password=p%77").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(http::post(&idp.url("/backends/none/authenticate"), &[], b"username=x").unwrap().status, 404);
        assert_eq!(idp.hits(Endpoint::Backend("ldap".into())), 4);
        let hits = idp.backend_hits();
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0], ("ldap".to_string(), "alice smith".to_string()));
        assert_eq!(hits[4], ("none".to_string(), "x".to_string()));
    }

    #[test]
    fn webhook_sink() {
        let idp = TestIdp::start();
        let url = idp.url("/webhooks/audit");
        let r = http::post(&url, &[("content-type", "application/json")], br#"{"e":1}"#).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        http::post(&url, &[], b"plain").unwrap();
        http::post(&idp.url("/webhooks/other"), &[], b"{}").unwrap();
        assert_eq!(idp.webhook_bodies("audit"), vec![json!({"e": 1}), json!("plain")]);
        assert_eq!(idp.hits(Endpoint::Webhook("audit".into())), 2);
    }

    #[test]
    fn fault_injection() {
        let idp = TestIdp::start();
        idp.set_behavior(Endpoint::Jwks, Behavior::Status(503));
        let r = http::get(&idp.jwks_uri(), &[]).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"], "injected_fault");

        idp.set_behavior(Endpoint::Jwks, Behavior::Garbage);
        let r = http::get(&idp.jwks_uri(), &[]).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "<<not json>>"));
        assert_eq!(r.header("content-type"), Some("application/json"));

        idp.set_behavior(Endpoint::Jwks, Behavior::Close);
        assert!(http::get(&idp.jwks_uri(), &[]).is_err());

        idp.set_behavior(Endpoint::Jwks, Behavior::Delay(Duration::from_millis(300)));
        let started = Instant::now();
        assert_eq!(http::get(&idp.jwks_uri(), &[]).unwrap().status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));

        // A stalled endpoint does not block the others, and resumes on a behavior change.
        idp.set_behavior(Endpoint::Webhook("w".into()), Behavior::Stall);
        let url = idp.url("/webhooks/w");
        let stalled = std::thread::spawn(move || http::post(&url, &[], b"{}"));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(http::get(&idp.url("/.well-known/openid-configuration"), &[]).unwrap().status, 200);
        assert!(!stalled.is_finished());
        idp.set_behavior(Endpoint::Webhook("w".into()), Behavior::Status(500));
        assert_eq!(stalled.join().unwrap().unwrap().status, 500);

        assert_eq!(idp.hits(Endpoint::Jwks), 4);
        assert_eq!(idp.hits(Endpoint::Webhook("w".into())), 1);
        idp.reset_hits();
        assert_eq!(idp.hits(Endpoint::Jwks), 0);
    }

    #[test]
    fn drop_ends_stalled_requests_quickly() {
        let idp = TestIdp::start();
        idp.set_behavior(Endpoint::Token, Behavior::Stall);
        idp.set_behavior(Endpoint::Jwks, Behavior::Delay(Duration::from_secs(60)));
        let token_url = idp.url("/token");
        let jwks_url = idp.jwks_uri();
        let a = std::thread::spawn(move || http::post(&token_url, &[], b""));
        let b = std::thread::spawn(move || http::get(&jwks_url, &[]));
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        drop(idp);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(a.join().unwrap().is_err());
        assert!(b.join().unwrap().is_err());
    }

    #[test]
    #[should_panic(expected = "cannot sign ES256")]
    fn minting_with_the_wrong_key_type_panics() {
        TestIdp::start().mint(Alg::ES256, "rsa-a", json!({}));
    }

    #[test]
    fn route_parsing() {
        assert_eq!(route("/backends/a/authenticate"), Some(Endpoint::Backend("a".into())));
        assert_eq!(route("/backends//authenticate"), None);
        assert_eq!(route("/backends/a/b/authenticate"), None);
        assert_eq!(route("/webhooks/x"), Some(Endpoint::Webhook("x".into())));
        assert_eq!(route("/webhooks/"), None);
        assert_eq!(route("/jwks/"), None);
    }
}
