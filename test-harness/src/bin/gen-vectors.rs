//! `gen-vectors`: writes the JWT verification test vectors in `filter/tests/vectors/*.json`
//! (read by `filter/tests/jwt_vectors.rs`; see `filter/tests/vectors/README.md`).
//!
//! ```sh
//! cargo run -p portcullis-harness --bin gen-vectors            # writes filter/tests/vectors/
//! cargo run -p portcullis-harness --bin gen-vectors -- <dir>   # writes somewhere else
//! ```
//!
//! Every token has fixed `iat`/`exp` around [`NOW`], so the vectors never expire. RSA
//! PKCS #1 v1.5, HMAC and the hand-built EdDSA tokens are deterministic; PS*, ES* and the
//! EdDSA tokens minted through jwt-simple use fresh randomness, so regenerating changes
//! their bytes but never their expected outcome.

use std::path::PathBuf;

use jwt_simple::algorithms::{Ed25519KeyPair, EdDSAKeyPairLike};
use portcullis_harness::idp::{b64url, mint_hs256, Alg, TestIdp};
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The verification time of the minted vectors (2023-11-14T22:13:20Z).
const NOW: u64 = 1_700_000_000;
const IAT: u64 = NOW - 60;
const EXP: u64 = NOW + 600;
const ISS: &str = "https://idp.vectors.example";
const AUD: &str = "api://vectors";
/// The HS* secret of `hmac.json` (at least 32 bytes, as the configuration requires).
const HMAC_SECRET: &str = "portcullis-vectors-hmac-secret-0123456789";

// --- RFC 7515 Appendix A (JWS examples) ------------------------------------------------------

const RFC7515_PAYLOAD_B64: &str =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
/// A.1.1: the HMAC key (`k` of the JWK); its bytes are not UTF-8.
const RFC7515_A1_K: &str = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const RFC7515_A1_HEADER_B64: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
const RFC7515_A1_SIG: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// A.2.1: the RSA public key.
const RFC7515_A2_N: &str = concat!(
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddx",
    "HmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs",
    "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH",
    "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV",
    "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8",
    "NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
);
const RFC7515_A2_HEADER_B64: &str = "eyJhbGciOiJSUzI1NiJ9";
const RFC7515_A2_SIG: &str = concat!(
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7",
    "AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4",
    "BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K",
    "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv",
    "hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB",
    "p0igcN_IoypGlUPQGe77Rw",
);
/// A.3.1: the P-256 public key.
const RFC7515_A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const RFC7515_A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const RFC7515_A3_HEADER_B64: &str = "eyJhbGciOiJFUzI1NiJ9";
const RFC7515_A3_SIG: &str = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
/// A.4.1: the P-521 public key (ES512 is not supported).
const RFC7515_A4_X: &str = "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk";
const RFC7515_A4_Y: &str = "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2";
const RFC7515_A4_TOKEN: &str = concat!(
    "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.",
    "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZq",
    "wqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8Kp",
    "EHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn",
);
/// A.5: the unsecured JWS header `{"alg":"none"}`.
const RFC7515_A5_HEADER_B64: &str = "eyJhbGciOiJub25lIn0";

// --- RFC 8037 Appendix A (Ed25519) ------------------------------------------------------------

/// A.1: the private key `d`; A.2: the public key `x`.
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
/// A.4: JWS Signing Input and signature. The payload is the text "Example of Ed25519 signing".
const RFC8037_SIGNING_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
const RFC8037_SIG: &str = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

fn main() {
    let dir = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("filter").join("tests").join("vectors")
    });
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
    let idp = TestIdp::start();
    let g = Gen::new(&idp);
    let files = [
        ("rfc7515.json", rfc7515()),
        ("rfc8037.json", rfc8037()),
        ("positive.json", g.positive()),
        ("hmac.json", g.hmac()),
        ("negative.json", g.negative()),
    ];
    for (name, doc) in files {
        let path = dir.canonicalize().unwrap_or_else(|_| dir.clone()).join(name);
        let text = render(&doc);
        std::fs::write(&path, text).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
        let cases = doc["cases"].as_array().map_or(0, Vec::len);
        println!("wrote {} ({cases} cases)", path.display());
    }
}

/// Pretty JSON with the top-level members in a reading order and one case per line.
fn render(doc: &Value) -> String {
    let order = ["description", "source", "now", "provider", "hmac_secret_b64url", "hmac_secret_note", "jwks"];
    let pretty =
        |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|e| fail(&e.to_string())).replace('\n', "\n  ");
    let mut members: Vec<String> = Vec::new();
    for key in order {
        if let Some(v) = doc.get(key) {
            members.push(format!("  {}: {}", json!(key), pretty(v)));
        }
    }
    for key in ["cases", "signatures"] {
        let Some(items) = doc.get(key).and_then(Value::as_array) else { continue };
        let lines: Vec<String> = items.iter().map(|c| format!("    {}", one_line(c))).collect();
        members.push(format!("  {}: [\n{}\n  ]", json!(key), lines.join(",\n")));
    }
    format!("{{\n{}\n}}\n", members.join(",\n"))
}

/// An object on one line, `name` and `expect` first.
fn one_line(item: &Value) -> String {
    let Some(map) = item.as_object() else { return item.to_string() };
    let first = ["name", "expect", "now", "note"];
    let mut keys: Vec<&String> = map.keys().filter(|k| first.contains(&k.as_str())).collect();
    keys.sort_by_key(|k| first.iter().position(|f| f == k));
    keys.extend(map.keys().filter(|k| !first.contains(&k.as_str())));
    let parts: Vec<String> = keys.iter().map(|k| format!("{}: {}", json!(k), map[k.as_str()])).collect();
    format!("{{{}}}", parts.join(", "))
}

fn fail(message: &str) -> ! {
    eprintln!("gen-vectors: {message}");
    std::process::exit(1);
}

fn case(name: &str, token: impl Into<String>, expect: &str, note: &str) -> Value {
    let mut c = json!({"name": name, "token": token.into(), "expect": expect});
    if !note.is_empty() {
        c["note"] = json!(note);
    }
    c
}

fn rfc7515() -> Value {
    let a1 = format!("{RFC7515_A1_HEADER_B64}.{RFC7515_PAYLOAD_B64}.{RFC7515_A1_SIG}");
    let a2 = format!("{RFC7515_A2_HEADER_B64}.{RFC7515_PAYLOAD_B64}.{RFC7515_A2_SIG}");
    let a3 = format!("{RFC7515_A3_HEADER_B64}.{RFC7515_PAYLOAD_B64}.{RFC7515_A3_SIG}");
    let a5 = format!("{RFC7515_A5_HEADER_B64}.{RFC7515_PAYLOAD_B64}.");
    let mut a2_bad = a2.clone();
    flip_last_char(&mut a2_bad);
    let mut a3_bad = a3.clone();
    flip_last_char(&mut a3_bad);
    json!({
        "description": "RFC 7515 Appendix A examples, verbatim: A.1 HS256, A.2 RS256, A.3 ES256, A.4 ES512 (unsupported), A.5 unsecured (alg none). Their payload is {\"iss\":\"joe\",\"exp\":1300819380,\"http://example.com/is_root\":true} (with CRLF whitespace), so `now` is shortly before that exp.",
        "source": "https://www.rfc-editor.org/rfc/rfc7515#appendix-A",
        "now": 1_300_819_000u64,
        "provider": {"issuer": "joe"},
        "hmac_secret_b64url": RFC7515_A1_K,
        "hmac_secret_note": "A.1's key bytes are not UTF-8, so the configuration's hmac_secret (a string) cannot express them: the test sets Provider::hmac_secret to these decoded bytes directly.",
        "jwks": {"keys": [
            {"kty": "RSA", "kid": "rfc7515-a2", "n": RFC7515_A2_N, "e": "AQAB"},
            {"kty": "EC", "kid": "rfc7515-a3", "crv": "P-256", "x": RFC7515_A3_X, "y": RFC7515_A3_Y},
            {"kty": "EC", "kid": "rfc7515-a4", "crv": "P-521", "x": RFC7515_A4_X, "y": RFC7515_A4_Y},
        ]},
        "cases": [
            case("a1_hs256", a1, "ok", "A.1; HMAC key from hmac_secret_b64url"),
            case("a2_rs256", a2.as_str(), "ok", "A.2"),
            case("a3_es256", a3.as_str(), "ok", "A.3; ECDSA R||S signature"),
            case("a4_es512", RFC7515_A4_TOKEN, "token_algorithm", "A.4; ES512 is not supported (and its P-521 key is skipped from the set); its payload is the text \"Payload\""),
            case("a5_unsecured_none", a5, "token_algorithm", "A.5; alg none is always refused"),
            case("a2_rs256_signature_last_char_changed", a2_bad, "token_signature", "A.2 with the signature's last base64url character changed"),
            case("a3_es256_signature_last_char_changed", a3_bad, "token_signature", "A.3 with the signature's last base64url character changed"),
            json!({"name": "a2_rs256_expired", "token": a2, "now": 1_300_819_440u64, "expect": "token_expired", "note": "A.2 at exp + 60 s clock skew"}),
            json!({"name": "a3_es256_expired", "token": a3, "now": 1_300_819_440u64, "expect": "token_expired", "note": "A.3 at exp + 60 s clock skew"}),
        ],
    })
}

/// Changes the last base64url character while keeping the encoding canonical: `A`↔`Q`
/// flips the high bit of the last 6-bit group, which always carries data.
fn flip_last_char(token: &mut String) {
    let last = token.pop().unwrap_or_else(|| fail("empty token"));
    token.push(if last == 'A' { 'Q' } else { 'A' });
}

fn rfc8037() -> Value {
    let token = format!("{RFC8037_SIGNING_INPUT}.{RFC8037_SIG}");
    // A JSON JWT signed with the RFC's key (Ed25519 signing is deterministic).
    let pair = rfc8037_pair();
    let header = json!({"alg": "EdDSA", "kid": "rfc8037"}).to_string();
    let claims = json!({"sub": "rfc8037", "iat": IAT, "exp": EXP}).to_string();
    let jwt = ed_token(&pair, &header, &claims);
    let mut bad_sig = RFC8037_SIG.to_string();
    flip_last_char(&mut bad_sig);
    json!({
        "description": "RFC 8037 Appendix A Ed25519 example. The A.4 JWS has the text payload \"Example of Ed25519 signing\", not a JSON object, so jwt::verify refuses it as token_malformed; its signature is checked directly (`signatures`). `rfc8037_key_json_jwt` is a JWT the generator signed with the A.1 private key (deterministic).",
        "source": "https://www.rfc-editor.org/rfc/rfc8037#appendix-A.4",
        "now": NOW,
        "provider": {},
        "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "rfc8037", "x": RFC8037_X}]},
        "cases": [
            case("a4_ed25519_text_payload", token, "token_malformed", "A.4/A.5; signature valid, payload is not a JSON object"),
            case("rfc8037_key_json_jwt", jwt, "ok", "A.1 key, generated JSON claims"),
        ],
        "signatures": [
            {"name": "a5_validation", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}, "alg": "EdDSA", "signing_input": RFC8037_SIGNING_INPUT, "signature": RFC8037_SIG, "valid": true},
            {"name": "a5_validation_bad_signature", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}, "alg": "EdDSA", "signing_input": RFC8037_SIGNING_INPUT, "signature": bad_sig, "valid": false},
            {"name": "a5_validation_other_input", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}, "alg": "EdDSA", "signing_input": "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc_", "signature": RFC8037_SIG, "valid": false},
        ],
    })
}

fn b64d(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap_or_else(|e| fail(&format!("{s}: {e}")))
}

fn rfc8037_pair() -> Ed25519KeyPair {
    let mut raw = b64d(RFC8037_D);
    raw.extend(b64d(RFC8037_X));
    Ed25519KeyPair::from_bytes(&raw).unwrap_or_else(|e| fail(&format!("RFC 8037 key: {e}")))
}

/// `b64(header).b64(payload).b64(Ed25519 signature)`, deterministic (no signing noise).
fn ed_token(pair: &Ed25519KeyPair, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64url(header), b64url(payload));
    let sig = pair.key_pair().as_ref().sk.sign(input.as_bytes(), None);
    format!("{input}.{}", b64url(&sig[..]))
}

fn hmac<D: Digest>(block: usize, key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut k = if key.len() > block { D::digest(key).to_vec() } else { key.to_vec() };
    k.resize(block, 0);
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = D::new().chain_update(pad(0x36)).chain_update(message).finalize();
    D::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

/// A compact JWS over raw header and payload text, HMAC'd with `secret` (`alg` must name
/// HS256, HS384 or HS512 and is read from the header).
fn hs_token(secret: &[u8], header: &str, payload: &str) -> String {
    let alg = serde_json::from_str::<Value>(header).ok().and_then(|h| h["alg"].as_str().map(str::to_string));
    let input = format!("{}.{}", b64url(header), b64url(payload));
    let tag = match alg.as_deref() {
        Some("HS256") => hmac::<Sha256>(64, secret, input.as_bytes()),
        Some("HS384") => hmac::<Sha384>(128, secret, input.as_bytes()),
        Some("HS512") => hmac::<Sha512>(128, secret, input.as_bytes()),
        other => fail(&format!("hs_token: alg {other:?}")),
    };
    format!("{input}.{}", b64url(tag))
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_string).collect()
}

struct Gen<'a> {
    idp: &'a TestIdp,
    /// The trusted Ed25519 key (`ed25519-a`), for hand-built headers and payloads.
    ed: Ed25519KeyPair,
    /// A key outside every set: the attacker's.
    attacker: Ed25519KeyPair,
}

impl<'a> Gen<'a> {
    fn new(idp: &'a TestIdp) -> Gen<'a> {
        // Same key material under other kids: `rsa-pinned` is rsa-a with alg RS256 in its
        // JWK; `rsa-enc` is rsa-b with use "enc" (skipped by the filter).
        idp.add_key_alias("rsa-a", "rsa-pinned");
        idp.set_jwk_alg("rsa-pinned", Some(Alg::RS256));
        idp.add_key_alias("rsa-b", "rsa-enc");
        let pem = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/keys/ed25519-a.pem"));
        let ed = Ed25519KeyPair::from_pem(pem).unwrap_or_else(|e| fail(&format!("ed25519-a: {e}")));
        Gen { idp, ed, attacker: rfc8037_pair() }
    }

    /// The published set: rsa-a, rsa-pinned, p256-a, p384-a, ed25519-a, plus two keys the
    /// filter skips: rsa-weak-1024 (under 2048 bits) and rsa-enc (use "enc").
    fn jwks(&self) -> Value {
        let text = self.idp.public_jwks_for(&[
            "rsa-a",
            "rsa-pinned",
            "p256-a",
            "p384-a",
            "ed25519-a",
            "rsa-weak-1024",
            "rsa-enc",
        ]);
        let mut set: Value = serde_json::from_str(&text).unwrap_or_else(|e| fail(&e.to_string()));
        for key in set["keys"].as_array_mut().into_iter().flatten() {
            if key["kid"] == "rsa-enc" {
                key["use"] = json!("enc");
            }
        }
        set
    }

    fn provider(hmac: bool) -> Value {
        let mut p = json!({"issuer": ISS, "audiences": [AUD], "max_lifetime": "3600s", "clock_skew_seconds": 60});
        if hmac {
            p["hmac_secret"] = json!(HMAC_SECRET);
        }
        p
    }

    fn claims(&self) -> Value {
        json!({"iss": ISS, "sub": "user-1", "aud": AUD, "iat": IAT, "exp": EXP, "client_id": "client-1", "scope": "orders:read orders:write"})
    }

    fn with(&self, changes: Value) -> Value {
        let mut c = self.claims();
        for (k, v) in changes.as_object().into_iter().flatten() {
            if v.is_null() {
                if let Some(m) = c.as_object_mut() {
                    m.remove(k);
                }
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn mint(&self, alg: Alg, kid: &str, claims: Value) -> String {
        self.idp.mint(alg, kid, claims)
    }

    /// An EdDSA token from `ed25519-a` over exactly this header and payload text.
    fn ed(&self, header: &str, payload: &str) -> String {
        ed_token(&self.ed, header, payload)
    }

    /// An EdDSA token from `ed25519-a` with the usual header and this payload text.
    fn ed_claims(&self, payload: &str) -> String {
        self.ed(r#"{"alg":"EdDSA","typ":"JWT","kid":"ed25519-a"}"#, payload)
    }

    fn positive(&self) -> Value {
        let c = self.claims();
        let mut cases = Vec::new();
        for (alg, kid) in [
            (Alg::RS256, "rsa-a"),
            (Alg::RS384, "rsa-a"),
            (Alg::RS512, "rsa-a"),
            (Alg::PS256, "rsa-a"),
            (Alg::PS384, "rsa-a"),
            (Alg::PS512, "rsa-a"),
            (Alg::ES256, "p256-a"),
            (Alg::ES384, "p384-a"),
            (Alg::EdDSA, "ed25519-a"),
        ] {
            let name = format!("{}_{kid}", alg.name().to_lowercase());
            cases.push(case(&name, self.mint(alg, kid, c.clone()), "ok", ""));
        }
        cases.push(case(
            "rs256_key_pinned_to_rs256",
            self.mint(Alg::RS256, "rsa-pinned", c.clone()),
            "ok",
            "JWK alg RS256",
        ));
        cases.push(case(
            "rs256_no_kid",
            self.idp.mint_with(Alg::RS256, "rsa-a", None, None, c.clone()),
            "ok",
            "no kid: every RSA key allowing RS256 is tried",
        ));
        cases.push(case("es256_no_kid", self.idp.mint_with(Alg::ES256, "p256-a", None, None, c.clone()), "ok", ""));
        cases.push(case("eddsa_no_kid", self.idp.mint_with(Alg::EdDSA, "ed25519-a", None, None, c.clone()), "ok", ""));
        cases.push(case(
            "eddsa_deterministic",
            self.ed_claims(&c.to_string()),
            "ok",
            "hand-built, byte-stable across regenerations",
        ));
        cases.push(case(
            "typ_at_jwt",
            self.idp.mint_with(Alg::RS256, "rsa-a", Some("rsa-a"), Some("at+jwt"), c.clone()),
            "ok",
            "RFC 9068 access token type",
        ));
        cases.push(case(
            "aud_array_containing_match",
            self.mint(Alg::RS256, "rsa-a", self.with(json!({"aud": ["other", AUD]}))),
            "ok",
            "",
        ));
        cases.push(case(
            "exp_float_truncated",
            self.ed_claims(&format!(r#"{{"iss":"{ISS}","aud":"{AUD}","iat":{IAT},"exp":{EXP}.75,"sub":"user-1"}}"#)),
            "ok",
            "a fractional NumericDate is accepted and truncated",
        ));
        cases.push(case(
            "exp_within_clock_skew",
            self.mint(Alg::RS256, "rsa-a", self.with(json!({"exp": NOW - 59}))),
            "ok",
            "expired 59 s ago, skew 60 s",
        ));
        cases.push(case(
            "nbf_within_clock_skew",
            self.mint(Alg::RS256, "rsa-a", self.with(json!({"nbf": NOW + 60}))),
            "ok",
            "",
        ));
        cases.push(case(
            "lifetime_exactly_max",
            self.mint(Alg::ES256, "p256-a", self.with(json!({"iat": NOW - 100, "exp": NOW - 100 + 3600}))),
            "ok",
            "exp - iat = max_lifetime",
        ));
        cases.push(case(
            "unknown_header_members_ignored",
            self.ed(r#"{"alg":"EdDSA","kid":"ed25519-a","typ":"JWT","x-custom":{"a":[1,2]}}"#, &c.to_string()),
            "ok",
            "",
        ));
        cases.push(case(
            "scp_array_and_nested_claims",
            self.mint(
                Alg::PS256,
                "rsa-a",
                self.with(json!({"scp": ["a", "b"], "realm_access": {"roles": ["admin"]}, "scope": null})),
            ),
            "ok",
            "",
        ));
        json!({
            "description": "Positive vectors minted by the generator: every supported asymmetric algorithm (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA) and accepted edge cases. The set also holds two keys the filter skips (rsa-weak-1024, rsa-enc).",
            "source": "cargo run -p portcullis-harness --bin gen-vectors (keys: test-harness/keys/)",
            "now": NOW,
            "provider": Self::provider(false),
            "jwks": self.jwks(),
            "cases": cases,
        })
    }

    fn hmac(&self) -> Value {
        let c = self.claims().to_string();
        let secret = HMAC_SECRET.as_bytes();
        let cases = vec![
            case("hs256", mint_hs256(secret, None, self.claims()), "ok", ""),
            case(
                "hs256_with_kid",
                mint_hs256(secret, Some("any"), self.claims()),
                "ok",
                "HS* ignores kid: the secret is configured",
            ),
            case("hs384", hs_token(secret, r#"{"alg":"HS384","typ":"JWT"}"#, &c), "ok", ""),
            case("hs512", hs_token(secret, r#"{"alg":"HS512","typ":"JWT"}"#, &c), "ok", ""),
            case(
                "rs256_alongside_hmac",
                self.mint(Alg::RS256, "rsa-a", self.claims()),
                "ok",
                "keys still work when a secret is configured",
            ),
            case(
                "hs256_wrong_secret",
                mint_hs256(b"another-secret-of-at-least-32-bytes!", None, self.claims()),
                "token_signature",
                "",
            ),
            case(
                "hs256_keyed_with_rsa_public_key_pem",
                self.mint(Alg::HS256, "rsa-a", self.claims()),
                "token_signature",
                "algorithm confusion: HMAC keyed with rsa-a's SPKI PEM; only the configured secret is used",
            ),
            case(
                "hs256_header_hs384_tag",
                {
                    let t = hs_token(secret, r#"{"alg":"HS384","typ":"JWT"}"#, &c);
                    let s = segments(&t);
                    format!("{}.{}.{}", b64url(r#"{"alg":"HS256","typ":"JWT"}"#), s[1], s[2])
                },
                "token_signature",
                "",
            ),
            case(
                "hs256_expired",
                mint_hs256(secret, None, self.with(json!({"exp": NOW - 61}))),
                "token_expired",
                "claims are checked before the MAC",
            ),
        ];
        json!({
            "description": "HS256/384/512 with a configured hmac_secret, and HMAC forgeries.",
            "source": "cargo run -p portcullis-harness --bin gen-vectors",
            "now": NOW,
            "provider": Self::provider(true),
            "jwks": self.jwks(),
            "cases": cases,
        })
    }

    fn negative(&self) -> Value {
        let c = self.claims();
        let cs = c.to_string();
        let rs = self.mint(Alg::RS256, "rsa-a", c.clone());
        let rs_parts = segments(&rs);
        let (rh, rp, rsig) = (&rs_parts[0], &rs_parts[1], &rs_parts[2]);
        let es = self.mint(Alg::ES256, "p256-a", c.clone());
        let es_parts = segments(&es);
        let ed = self.ed_claims(&cs);
        let ed_parts = segments(&ed);
        let es384 = self.mint(Alg::ES384, "p384-a", c.clone());
        let es384_sig = segments(&es384)[2].clone();
        let ed_header = r#"{"alg":"EdDSA","typ":"JWT","kid":"ed25519-a"}"#;
        let b = |s: &str| b64url(s);
        let mut cases = Vec::new();
        let mut add = |name: &str, token: String, expect: &str, note: &str| cases.push(case(name, token, expect, note));

        // alg none and algorithm confusion
        let none_h = b(r#"{"alg":"none","typ":"JWT"}"#);
        add("alg_none_trailing_dot", format!("{none_h}.{rp}."), "token_algorithm", "unsecured JWS");
        add("alg_none_without_trailing_dot", format!("{none_h}.{rp}"), "token_malformed", "two segments");
        add("alg_none_with_signature", format!("{none_h}.{rp}.{rsig}"), "token_algorithm", "");
        add("alg_none_capitalised", format!("{}.{rp}.", b(r#"{"alg":"None"}"#)), "token_algorithm", "");
        add("alg_none_with_kid", format!("{}.{rp}.", b(r#"{"alg":"none","kid":"rsa-a"}"#)), "token_algorithm", "");
        add(
            "hs256_signed_with_rsa_public_key_pem",
            self.mint(Alg::HS256, "rsa-a", c.clone()),
            "token_algorithm",
            "algorithm confusion: no hmac_secret configured, and no JWK ever allows HS*",
        );
        add(
            "hs256_signed_with_rsa_public_key_pem_no_kid",
            self.idp.mint_with(Alg::HS256, "rsa-a", None, None, c.clone()),
            "token_algorithm",
            "",
        );
        add(
            "alg_unsupported_es512",
            format!("{}.{rp}.{rsig}", b(r#"{"alg":"ES512","kid":"rsa-a"}"#)),
            "token_algorithm",
            "",
        );
        add("alg_unknown", format!("{}.{rp}.{rsig}", b(r#"{"alg":"RS1","kid":"rsa-a"}"#)), "token_algorithm", "");
        add(
            "alg_lowercase",
            format!("{}.{rp}.{rsig}", b(r#"{"alg":"rs256","kid":"rsa-a"}"#)),
            "token_algorithm",
            "alg is case-sensitive",
        );
        add(
            "rs256_kid_points_to_ec_key",
            self.idp.mint_with(Alg::RS256, "rsa-a", Some("p256-a"), None, c.clone()),
            "token_algorithm",
            "kid/alg mismatch",
        );
        add(
            "ps256_kid_points_to_key_pinned_rs256",
            self.idp.mint_with(Alg::PS256, "rsa-a", Some("rsa-pinned"), None, c.clone()),
            "token_algorithm",
            "JWK alg RS256",
        );
        add("eddsa_kid_points_to_rsa_key", self.ed(r#"{"alg":"EdDSA","kid":"rsa-a"}"#, &cs), "token_algorithm", "");
        add(
            "es256_kid_points_to_p384_key",
            format!("{}.{rp}.{es384_sig}", b(r#"{"alg":"ES256","typ":"JWT","kid":"p384-a"}"#)),
            "token_algorithm",
            "P-384 keys allow ES384 only",
        );
        add(
            "es256_header_with_p384_signature",
            format!("{}.{}.{es384_sig}", b(r#"{"alg":"ES256","typ":"JWT","kid":"p256-a"}"#), segments(&es384)[1]),
            "token_signature",
            "ES384 token relabelled ES256 for the P-256 key: 96-byte signature",
        );

        // keys
        add(
            "unknown_kid",
            self.idp.mint_with(Alg::RS256, "rsa-a", Some("no-such-key"), None, c.clone()),
            "token_unknown_key",
            "",
        );
        add(
            "no_kid_no_matching_key",
            self.idp.mint_with(Alg::RS256, "rsa-b", None, None, c.clone()),
            "token_signature",
            "signed by rsa-b, which is not in the set: every RS256-capable key is tried and fails",
        );
        add(
            "es256_no_kid_unknown_key",
            self.idp.mint_with(Alg::ES256, "p256-b", None, None, c.clone()),
            "token_signature",
            "",
        );
        add(
            "rsa_1024_bit_key_skipped",
            self.mint(Alg::RS256, "rsa-weak-1024", c.clone()),
            "token_unknown_key",
            "the JWKS lists rsa-weak-1024, but keys under 2048 bits are skipped",
        );
        add(
            "jwk_with_use_enc_skipped",
            self.mint(Alg::RS256, "rsa-enc", c.clone()),
            "token_unknown_key",
            "the JWKS lists rsa-enc with use \"enc\"; skipped",
        );
        let attacker_jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X});
        add(
            "embedded_jwk_attacker_key_trusted_kid",
            ed_token(
                &self.attacker,
                &json!({"alg": "EdDSA", "kid": "ed25519-a", "jwk": attacker_jwk}).to_string(),
                &cs,
            ),
            "token_signature",
            "signed by the key in the jwk header, which is never used",
        );
        add(
            "embedded_jwk_attacker_key_no_kid",
            ed_token(&self.attacker, &json!({"alg": "EdDSA", "jwk": attacker_jwk}).to_string(), &cs),
            "token_signature",
            "",
        );
        add(
            "jku_attacker_set",
            ed_token(
                &self.attacker,
                &json!({"alg": "EdDSA", "kid": "attacker-1", "jku": "https://attacker.example/jwks.json"}).to_string(),
                &cs,
            ),
            "token_unknown_key",
            "jku is never fetched",
        );
        add(
            "x5u_attacker_certificate",
            ed_token(
                &self.attacker,
                &json!({"alg": "EdDSA", "x5u": "https://attacker.example/cert.pem"}).to_string(),
                &cs,
            ),
            "token_signature",
            "x5u is never fetched",
        );

        // tampering
        add(
            "tampered_header_alg_rs256_to_rs384",
            format!("{}.{rp}.{rsig}", b(r#"{"alg":"RS384","typ":"JWT","kid":"rsa-a"}"#)),
            "token_signature",
            "",
        );
        add(
            "tampered_header_alg_rs256_to_ps256",
            format!("{}.{rp}.{rsig}", b(r#"{"alg":"PS256","typ":"JWT","kid":"rsa-a"}"#)),
            "token_signature",
            "",
        );
        add(
            "tampered_payload",
            format!("{rh}.{}.{rsig}", b(&self.with(json!({"sub": "admin"})).to_string())),
            "token_signature",
            "",
        );
        let mut flipped = rs.clone();
        flip_last_char(&mut flipped);
        add("tampered_signature_bit_flip_rs256", flipped, "token_signature", "");
        let mut flipped = es.clone();
        flip_last_char(&mut flipped);
        add("tampered_signature_bit_flip_es256", flipped, "token_signature", "");
        let mut flipped = ed.clone();
        flip_last_char(&mut flipped);
        add("tampered_signature_bit_flip_eddsa", flipped, "token_signature", "");
        add(
            "signature_truncated",
            format!("{rh}.{rp}.{}", b64url(&b64d(rsig)[..253])),
            "token_signature",
            "253 of 256 bytes",
        );
        add("signature_empty", format!("{rh}.{rp}."), "token_signature", "");
        add(
            "es256_signature_wrong_length",
            format!("{}.{}.{}", es_parts[0], es_parts[1], b64url(&b64d(&es_parts[2])[..63])),
            "token_signature",
            "63-byte R||S",
        );
        add(
            "es256_signature_der_encoded",
            {
                let raw = b64d(&es_parts[2]);
                let der = ecdsa_der(&raw);
                format!("{}.{}.{}", es_parts[0], es_parts[1], b64url(der))
            },
            "token_signature",
            "JWS requires R||S, not DER",
        );
        add(
            "signature_from_other_token",
            format!("{}.{}.{}", ed_parts[0], b(&self.with(json!({"sub": "other"})).to_string()), ed_parts[2]),
            "token_signature",
            "",
        );

        // structure
        add("one_segment", rh.clone(), "token_malformed", "");
        add("two_segments", format!("{rh}.{rp}"), "token_malformed", "");
        add("four_segments", format!("{rs}.{rsig}"), "token_malformed", "");
        add("five_segments_jwe_shape", format!("{rh}.{rp}.{rsig}.{rsig}.{rsig}"), "token_malformed", "");
        add("empty_token", String::new(), "token_malformed", "");
        add("only_dots", "..".to_string(), "token_malformed", "");
        add("empty_header_segment", format!(".{rp}.{rsig}"), "token_malformed", "");
        add("empty_payload_segment", format!("{rh}..{rsig}"), "token_malformed", "");
        add("padded_base64_header", format!("{}.{rp}.{rsig}", padded(rh)), "token_malformed", "");
        add("padded_base64_payload", format!("{rh}.{}.{rsig}", padded(rp)), "token_malformed", "");
        add("padded_base64_signature", format!("{rh}.{rp}.{}", padded(rsig)), "token_malformed", "");
        add(
            "standard_alphabet_signature",
            format!("{rh}.{rp}.{}", standard_alphabet(rsig)),
            "token_malformed",
            "+ and / instead of - and _",
        );
        add(
            "non_canonical_base64_signature",
            format!("{rh}.{rp}.{}", non_canonical(rsig)),
            "token_malformed",
            "non-zero unused trailing bits",
        );
        add("invalid_base64_character", format!("{rh}.{rp}.{}!", &rsig[..rsig.len() - 1]), "token_malformed", "");
        add("whitespace_inside_payload", format!("{rh}.{} {}.{rsig}", &rp[..10], &rp[10..]), "token_malformed", "");
        add("newline_inside_signature", format!("{rh}.{rp}.{}\n{}", &rsig[..64], &rsig[64..]), "token_malformed", "");
        add("leading_space", format!(" {rs}"), "token_malformed", "");
        add("trailing_newline", format!("{rs}\n"), "token_malformed", "");
        add("non_ascii_in_payload", format!("{rh}.{}é.{rsig}", rp), "token_malformed", "");

        // header content
        add("header_not_json", self.ed("not json", &cs), "token_malformed", "");
        add("header_json_array", self.ed(r#"["alg","EdDSA"]"#, &cs), "token_malformed", "");
        add("header_json_string", self.ed(r#""EdDSA""#, &cs), "token_malformed", "");
        add(
            "header_json_trailing_garbage",
            self.ed(r#"{"alg":"EdDSA","kid":"ed25519-a"}x"#, &cs),
            "token_malformed",
            "",
        );
        add("header_without_alg", self.ed(r#"{"typ":"JWT","kid":"ed25519-a"}"#, &cs), "token_malformed", "");
        add("alg_number", self.ed(r#"{"alg":256,"kid":"ed25519-a"}"#, &cs), "token_malformed", "");
        add("alg_null", self.ed(r#"{"alg":null,"kid":"ed25519-a"}"#, &cs), "token_malformed", "");
        add("alg_array", self.ed(r#"{"alg":["EdDSA"],"kid":"ed25519-a"}"#, &cs), "token_malformed", "");
        add("kid_number", self.ed(r#"{"alg":"EdDSA","kid":1}"#, &cs), "token_malformed", "");
        add("typ_number", self.ed(r#"{"alg":"EdDSA","kid":"ed25519-a","typ":1}"#, &cs), "token_malformed", "");
        add(
            "crit_present",
            self.ed(r#"{"alg":"EdDSA","kid":"ed25519-a","crit":["exp"],"exp":1}"#, &cs),
            "token_algorithm",
            "no extension is understood (RFC 7515 §4.1.11)",
        );
        add("crit_empty_array", self.ed(r#"{"alg":"EdDSA","kid":"ed25519-a","crit":[]}"#, &cs), "token_algorithm", "");
        add(
            "duplicate_alg_in_header",
            self.ed(r#"{"alg":"EdDSA","kid":"ed25519-a","alg":"none"}"#, &cs),
            "token_malformed",
            "duplicate members are refused",
        );
        add(
            "duplicate_kid_in_header",
            self.ed(r#"{"alg":"EdDSA","kid":"ed25519-a","kid":"ed25519-a"}"#, &cs),
            "token_malformed",
            "even with equal values",
        );

        // payload content
        add("payload_json_array", self.ed(ed_header, "[1,2]"), "token_malformed", "");
        add("payload_json_string", self.ed(ed_header, r#""claims""#), "token_malformed", "");
        add("payload_json_number", self.ed(ed_header, "1700000000"), "token_malformed", "");
        add("payload_json_null", self.ed(ed_header, "null"), "token_malformed", "");
        add("payload_not_json", self.ed(ed_header, "hello"), "token_malformed", "");
        add("payload_truncated_json", self.ed(ed_header, &cs[..cs.len() - 1]), "token_malformed", "");
        add(
            "duplicate_exp_in_payload",
            self.ed_claims(&format!(r#"{{"iss":"{ISS}","aud":"{AUD}","iat":{IAT},"exp":{EXP},"exp":99999999999}}"#)),
            "token_malformed",
            "duplicate members are refused",
        );
        add(
            "duplicate_iss_in_payload",
            self.ed_claims(&format!(
                r#"{{"iss":"https://evil.example","aud":"{AUD}","iat":{IAT},"exp":{EXP},"iss":"{ISS}"}}"#
            )),
            "token_malformed",
            "",
        );

        // claims
        let ec = |changes: Value| self.ed_claims(&self.with(changes).to_string());
        add("exp_string", ec(json!({"exp": EXP.to_string()})), "token_claims", "");
        add("exp_negative", ec(json!({"exp": -1})), "token_claims", "");
        add("exp_boolean", ec(json!({"exp": true})), "token_claims", "");
        add("exp_object", ec(json!({"exp": {"t": EXP}})), "token_claims", "");
        add("nbf_string", ec(json!({"nbf": "0"})), "token_claims", "");
        add("iat_string", ec(json!({"iat": IAT.to_string()})), "token_claims", "");
        add("exp_past", ec(json!({"exp": NOW - 60})), "token_expired", "exp + 60 s skew = now");
        add("exp_long_ago", ec(json!({"iat": 1_000_000_000u64, "exp": 1_000_000_600u64})), "token_expired", "");
        add("exp_missing", ec(json!({"exp": null})), "token_missing_expiry", "");
        add("nbf_future", ec(json!({"nbf": NOW + 61})), "token_not_yet_valid", "");
        add("iat_future", ec(json!({"iat": NOW + 61})), "token_issued_in_future", "");
        add("lifetime_over_max", ec(json!({"exp": IAT + 3601})), "token_lifetime", "max_lifetime 3600s");
        add(
            "lifetime_over_max_without_iat",
            ec(json!({"iat": null, "exp": NOW + 3601})),
            "token_lifetime",
            "without iat, exp - now is measured",
        );
        add("iss_wrong", ec(json!({"iss": "https://evil.example"})), "token_issuer", "");
        add("iss_missing", ec(json!({"iss": null})), "token_issuer", "");
        add("iss_number", ec(json!({"iss": 1})), "token_claims", "");
        add("iss_trailing_slash", ec(json!({"iss": format!("{ISS}/")})), "token_issuer", "exact match only");
        add("aud_mismatch", ec(json!({"aud": "api://other"})), "token_audience", "");
        add("aud_missing", ec(json!({"aud": null})), "token_audience", "");
        add("aud_array_without_match", ec(json!({"aud": ["a", "b"]})), "token_audience", "");
        add("aud_empty_array", ec(json!({"aud": []})), "token_audience", "");
        add("aud_object", ec(json!({"aud": {"aud": AUD}})), "token_claims", "");
        add("aud_number", ec(json!({"aud": 1})), "token_claims", "");

        // size
        let pad = "x".repeat(33 * 1024);
        add(
            "huge_token_over_32_kib",
            self.ed_claims(&self.with(json!({"pad": pad})).to_string()),
            "token_too_large",
            "default max_token_bytes 32768",
        );

        json!({
            "description": "Negative vectors: every case must be refused with exactly this reason code. Same key set and provider as positive.json (no hmac_secret). Tokens with hand-built headers or payloads are signed by ed25519-a (trusted) or by the RFC 8037 key (the attacker's, not in the set), so the listed fault is the only one.",
            "source": "cargo run -p portcullis-harness --bin gen-vectors",
            "now": NOW,
            "provider": Self::provider(false),
            "jwks": self.jwks(),
            "cases": cases,
        })
    }
}

/// Adds the `=` padding base64url without padding leaves out (the segment must need some).
fn padded(segment: &str) -> String {
    match segment.len() % 4 {
        2 => format!("{segment}=="),
        3 => format!("{segment}="),
        _ => format!("{segment}=="), // not valid either way: padding where none belongs
    }
}

fn standard_alphabet(segment: &str) -> String {
    let out = segment.replace('-', "+").replace('_', "/");
    if out == segment {
        fail("segment has no - or _ to translate");
    }
    out
}

/// Sets unused low bits of the last character (when there are any).
fn non_canonical(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let unused_bits = match segment.len() % 4 {
        2 => 4,
        3 => 2,
        _ => fail("segment has no unused trailing bits"),
    };
    let last = segment.as_bytes()[segment.len() - 1];
    let idx = ALPHABET.iter().position(|&c| c == last).unwrap_or_else(|| fail("not base64url"));
    let changed = idx | ((1 << unused_bits) - 1);
    let changed = if changed == idx { idx ^ 1 } else { changed };
    format!("{}{}", &segment[..segment.len() - 1], ALPHABET[changed] as char)
}

/// DER `ECDSA-Sig-Value` of a raw `R‖S`.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let int = |v: &[u8]| {
        let v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        let mut c = Vec::new();
        if v.first().is_none_or(|b| b & 0x80 != 0) {
            c.push(0);
        }
        c.extend(v);
        let mut out = vec![0x02, c.len() as u8];
        out.extend(c);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = int(r);
    body.extend(int(s));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}
