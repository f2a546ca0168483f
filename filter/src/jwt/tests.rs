//! Unit and property tests for JWS parsing and claim checks. The RFC and minted vectors live in
//! `tests/vectors/` (run by `tests/jwt_vectors.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

use jwt_simple::algorithms::{Ed25519KeyPair, EdDSAKeyPairLike};
use proptest::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::crypto::NoNative;

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://issuer.test";
const AUD: &str = "api://unit";
const SECRET: &str = "unit-test-hmac-secret-0123456789abcdef";
/// RFC 8037 A.1 private and public key (any fixed Ed25519 key will do).
const ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

fn provider_and_keys() -> (Provider, KeySet) {
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": ED_X}]}).to_string();
    let cfg = json!({"providers": {"unit": {
        "issuer": ISS,
        "audiences": [AUD],
        "max_lifetime": "3600s",
        "hmac_secret": SECRET,
        "local_jwks": {"inline_string": jwks},
    }}});
    let config = crate::config::parse(cfg.to_string().as_bytes(), &|_| None).unwrap();
    let provider = config.providers.into_iter().next().unwrap();
    let crate::config::KeySource::Local(keys) = provider.keys.clone() else { panic!("local keys") };
    (provider, keys)
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "u", "iat": NOW - 10, "exp": NOW + 600, "scope": "a b"})
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.resize(64, 0);
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

/// HS256 over exactly these header and payload texts.
fn hs256(header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64::encode(header.as_bytes()), b64::encode(payload.as_bytes()));
    let tag = hmac_sha256(SECRET.as_bytes(), input.as_bytes());
    format!("{input}.{}", b64::encode(&tag))
}

/// EdDSA (deterministic) over exactly these header and payload texts.
fn eddsa(header: &str, payload: &str) -> String {
    let mut raw = b64::decode(ED_D).unwrap();
    raw.extend(b64::decode(ED_X).unwrap());
    let pair = Ed25519KeyPair::from_bytes(&raw).unwrap();
    let input = format!("{}.{}", b64::encode(header.as_bytes()), b64::encode(payload.as_bytes()));
    let sig = pair.key_pair().as_ref().sk.sign(input.as_bytes(), None);
    format!("{input}.{}", b64::encode(&sig[..]))
}

fn valid_tokens() -> Vec<String> {
    let c = claims().to_string();
    vec![hs256(r#"{"alg":"HS256","typ":"JWT"}"#, &c), eddsa(r#"{"alg":"EdDSA","kid":"ed"}"#, &c)]
}

fn check(token: &str) -> Result<(Verified, crypto::Path), Reason> {
    let (p, k) = provider_and_keys();
    verify(token, &p, &k, NOW, &NoNative, true)
}

// ---------------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_tokens_verify() {
    for t in valid_tokens() {
        let (v, path) = check(&t).unwrap();
        assert_eq!(path, crypto::Path::Pure);
        assert_eq!(v.exp, Some(NOW + 600));
        assert_eq!(v.iat, Some(NOW - 10));
        assert_eq!(v.nbf, None);
        assert_eq!(v.scopes, vec!["a", "b"]);
        assert_eq!(v.claims.get("sub"), Some(&json!("u")));
    }
}

#[test]
fn parse_reports_structure() {
    let t = eddsa(r#"{"alg":"EdDSA","kid":"ed","typ":"JWT"}"#, &claims().to_string());
    let p = parse(&t, t.len()).unwrap();
    assert_eq!(p.alg, Alg::EdDSA);
    assert_eq!(p.kid.as_deref(), Some("ed"));
    assert_eq!(p.signing_input_len, t.rfind('.').unwrap());
    assert_eq!(p.signature.len(), 64);
    assert_eq!(p.payload_b64, t.split('.').nth(1).unwrap());
    assert_eq!(p.claims.get("iss"), Some(&json!(ISS)));
    assert_eq!(parse(&t, t.len() - 1).unwrap_err(), Reason::TokenTooLarge, "cap is inclusive");
}

#[test]
fn parse_order_of_checks() {
    let c = b64::encode(claims().to_string().as_bytes());
    let h = |s: &str| b64::encode(s.as_bytes());
    // Size before anything else.
    assert_eq!(parse("x".repeat(10).as_str(), 9).unwrap_err(), Reason::TokenTooLarge);
    // An unsupported alg is reported even with a bad payload.
    assert_eq!(parse(&format!("{}.!!.AA", h(r#"{"alg":"none"}"#)), 1000).unwrap_err(), Reason::TokenAlgorithm);
    // Empty signature: an unsecured JWS claiming a real alg.
    assert_eq!(parse(&format!("{}.{c}.", h(r#"{"alg":"RS256"}"#)), 1000).unwrap_err(), Reason::TokenSignature);
    // A bad signature encoding is malformed, not a bad signature.
    assert_eq!(parse(&format!("{}.{c}.A", h(r#"{"alg":"RS256"}"#)), 1000).unwrap_err(), Reason::TokenMalformed);
    assert_eq!(
        parse(&format!("{}.{c}.AA", h(r#"{"alg":"RS256","crit":[]}"#)), 1000).unwrap_err(),
        Reason::TokenAlgorithm
    );
    assert_eq!(
        parse(&format!("{}.{c}.AA", h(r#"{"alg":"RS256","typ":null}"#)), 1000).unwrap_err(),
        Reason::TokenMalformed
    );
}

#[test]
fn time_boundaries() {
    let (p, _) = provider_and_keys();
    let skew = p.clock_skew_s;
    assert_eq!(skew, 60);
    let t = |exp, nbf, iat| check_times(exp, nbf, iat, &p, NOW);
    assert_eq!(t(Some(NOW - skew + 1), None, None), Ok(()));
    assert_eq!(t(Some(NOW - skew), None, None), Err(Reason::TokenExpired));
    assert_eq!(t(Some(NOW + 10), Some(NOW + skew), None), Ok(()));
    assert_eq!(t(Some(NOW + 10), Some(NOW + skew + 1), None), Err(Reason::TokenNotYetValid));
    assert_eq!(t(Some(NOW + 10), None, Some(NOW + skew + 1)), Err(Reason::TokenIssuedInFuture));
    assert_eq!(t(None, None, None), Err(Reason::TokenMissingExpiry));
    assert_eq!(t(Some(NOW + 3600), Some(0), Some(NOW)), Ok(()));
    assert_eq!(t(Some(NOW + 3601), None, Some(NOW)), Err(Reason::TokenLifetime));
    assert_eq!(t(Some(NOW + 3601), None, None), Err(Reason::TokenLifetime), "without iat, from now");
    assert_eq!(t(Some(u64::MAX), None, None), Err(Reason::TokenLifetime));
    let mut lax = p.clone();
    lax.require_expiration = false;
    assert_eq!(check_times(None, None, None, &lax, NOW), Err(Reason::TokenLifetime), "max_lifetime needs exp");
    lax.max_lifetime_s = None;
    assert_eq!(check_times(None, None, None, &lax, NOW), Ok(()));
    assert_eq!(check_times(Some(u64::MAX), None, None, &lax, u64::MAX - 61), Ok(()), "no overflow");
    assert_eq!(check_times(Some(u64::MAX), None, None, &lax, u64::MAX), Err(Reason::TokenExpired));
    assert_eq!(check_times(Some(u64::MAX), Some(u64::MAX), None, &lax, u64::MAX - 61), Err(Reason::TokenNotYetValid));
}

#[test]
fn typ_allow_list() {
    let c = claims().to_string();
    for ok in ["JWT", "jwt", "at+jwt", "application/at+jwt", "AT+JWT"] {
        let t = eddsa(&format!(r#"{{"alg":"EdDSA","kid":"ed","typ":"{ok}"}}"#), &c);
        assert!(check(&t).is_ok(), "{ok}");
    }
    for bad in
        ["logout+jwt", "secevent+jwt", "token-introspection+jwt", "application/token-introspection+jwt", "dpop+jwt"]
    {
        let t = eddsa(&format!(r#"{{"alg":"EdDSA","kid":"ed","typ":"{bad}"}}"#), &c);
        assert_eq!(check(&t).unwrap_err(), Reason::TokenType, "{bad}");
    }
    // No typ at all is accepted (many issuers omit it).
    assert!(check(&eddsa(r#"{"alg":"EdDSA","kid":"ed"}"#, &c)).is_ok());
    // A provider can change the list.
    let (mut p, k) = provider_and_keys();
    p.allowed_typ = vec!["secevent+jwt".into()];
    let t = eddsa(r#"{"alg":"EdDSA","kid":"ed","typ":"secevent+jwt"}"#, &c);
    assert!(verify(&t, &p, &k, NOW, &NoNative, true).is_ok());
    let t = eddsa(r#"{"alg":"EdDSA","kid":"ed","typ":"JWT"}"#, &c);
    assert_eq!(verify(&t, &p, &k, NOW, &NoNative, true).unwrap_err(), Reason::TokenType);
}

#[test]
fn numeric_dates() {
    let m = |v: Value| json!({"exp": v}).as_object().unwrap().clone();
    assert_eq!(numeric_date(&m(json!(5)), "exp"), Ok(Some(5)));
    assert_eq!(numeric_date(&m(json!(5.9)), "exp"), Ok(Some(5)));
    assert_eq!(numeric_date(&m(json!(0.0)), "exp"), Ok(Some(0)));
    assert_eq!(numeric_date(&m(json!(-1)), "exp"), Err(Reason::TokenClaims));
    assert_eq!(numeric_date(&m(json!(-0.5)), "exp"), Err(Reason::TokenClaims));
    // Outside ±2^53 is refused (Envoy's jwt_authn refuses it as out of range): exp = 2^64 - 1
    // must never read as "never expires".
    assert_eq!(numeric_date(&m(json!(1e300)), "exp"), Err(Reason::TokenClaims));
    assert_eq!(numeric_date(&m(json!(u64::MAX)), "exp"), Err(Reason::TokenClaims));
    assert_eq!(numeric_date(&m(json!(MAX_NUMERIC_DATE)), "exp"), Ok(Some(MAX_NUMERIC_DATE)));
    assert_eq!(numeric_date(&m(json!(MAX_NUMERIC_DATE + 1)), "exp"), Err(Reason::TokenClaims));
    assert_eq!(numeric_date(&m(json!("5")), "exp"), Err(Reason::TokenClaims));
    assert_eq!(numeric_date(&m(json!(null)), "exp"), Err(Reason::TokenClaims));
    assert_eq!(numeric_date(&m(json!(5)), "nbf"), Ok(None));
}

#[test]
fn issuer_and_audience() {
    let (p, _) = provider_and_keys();
    let c = |changes: Value| {
        let mut c = claims();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        check_claims(c.as_object().unwrap(), &p, NOW)
    };
    assert_eq!(c(json!({})), Ok(Some(NOW + 600)));
    assert_eq!(c(json!({"aud": ["x", AUD]})), Ok(Some(NOW + 600)));
    assert_eq!(c(json!({"aud": [1, AUD]})), Err(Reason::TokenClaims), "aud members must be strings (RFC 7519 §4.1.3)");
    assert_eq!(c(json!({"aud": ["x", 1]})), Err(Reason::TokenClaims));
    assert_eq!(c(json!({"sub": 7})), Err(Reason::TokenClaims));
    assert_eq!(c(json!({"jti": ["a"]})), Err(Reason::TokenClaims));
    assert_eq!(c(json!({"aud": "API://UNIT"})), Err(Reason::TokenAudience), "case-sensitive");
    assert_eq!(c(json!({"aud": {"a": AUD}})), Err(Reason::TokenClaims));
    assert_eq!(c(json!({"aud": null})), Err(Reason::TokenClaims));
    assert_eq!(c(json!({"iss": "https://issuer.test/"})), Err(Reason::TokenIssuer));
    assert_eq!(c(json!({"iss": [ISS]})), Err(Reason::TokenClaims));
    let mut any = p.clone();
    any.issuer = None;
    any.audiences.clear();
    let mut cl = claims();
    cl["iss"] = json!(7);
    cl["aud"] = json!({"x": 1});
    assert_eq!(
        check_claims(cl.as_object().unwrap(), &any, NOW),
        Err(Reason::TokenClaims),
        "types are checked even when values are not"
    );
    cl["iss"] = json!("anyone");
    cl["aud"] = json!("anything");
    assert_eq!(check_claims(cl.as_object().unwrap(), &any, NOW), Ok(Some(NOW + 600)), "values unchecked when unset");
}

#[test]
fn hmac_needs_a_configured_secret() {
    let t = &valid_tokens()[0];
    let (mut p, k) = provider_and_keys();
    assert!(verify(t, &p, &k, NOW, &NoNative, false).is_ok());
    p.hmac_secret = None;
    assert_eq!(verify(t, &p, &k, NOW, &NoNative, false).unwrap_err(), Reason::TokenAlgorithm);
}

#[test]
fn unknown_kid_and_algorithm_mismatch() {
    let c = claims().to_string();
    assert_eq!(check(&eddsa(r#"{"alg":"EdDSA","kid":"other"}"#, &c)).unwrap_err(), Reason::TokenUnknownKey);
    assert!(check(&eddsa(r#"{"alg":"EdDSA"}"#, &c)).is_ok(), "no kid: every fitting key");
    let es =
        format!("{}.{}", b64::encode(br#"{"alg":"ES256","kid":"ed"}"#), valid_tokens()[1].split_once('.').unwrap().1);
    assert_eq!(check(&es).unwrap_err(), Reason::TokenAlgorithm, "kid exists, alg does not fit it");
    let es = format!("{}.{}", b64::encode(br#"{"alg":"ES256"}"#), valid_tokens()[1].split_once('.').unwrap().1);
    assert_eq!(check(&es).unwrap_err(), Reason::TokenAlgorithm, "no key allows ES256");
}

#[test]
fn client_id_claims_in_order() {
    let mut c = claims();
    c["azp"] = json!("from-azp");
    let t = hs256(r#"{"alg":"HS256"}"#, &c.to_string());
    assert_eq!(check(&t).unwrap().0.client_id.as_deref(), Some("from-azp"));
    c["client_id"] = json!("from-client-id");
    let t = hs256(r#"{"alg":"HS256"}"#, &c.to_string());
    assert_eq!(check(&t).unwrap().0.client_id.as_deref(), Some("from-client-id"));
    c["client_id"] = json!(5);
    let t = hs256(r#"{"alg":"HS256"}"#, &c.to_string());
    assert_eq!(check(&t).unwrap().0.client_id.as_deref(), Some("from-azp"), "non-strings are skipped");
}

#[test]
fn claim_paths() {
    let c = json!({"a": {"b": {"c": 1}, "s": "x"}, "top": [1], "dotted.name": true});
    let c = c.as_object().unwrap();
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    assert_eq!(claim(c, &p(&["a", "b", "c"])), Some(&json!(1)));
    assert_eq!(claim(c, &p(&["a", "b"])), Some(&json!({"c": 1})));
    assert_eq!(claim(c, &p(&["top"])), Some(&json!([1])));
    assert_eq!(claim(c, &p(&["dotted.name"])), Some(&json!(true)));
    assert_eq!(claim(c, &p(&["a", "s", "x"])), None, "a string has no members");
    assert_eq!(claim(c, &p(&["top", "0"])), None, "arrays are not indexed");
    assert_eq!(claim(c, &p(&["missing"])), None);
    assert_eq!(claim(c, &p(&["a", "missing"])), None);
    assert_eq!(claim(c, &p(&[])), None);
}

#[test]
fn scopes() {
    let s = |v: Value| scopes_of(v.as_object().unwrap());
    assert_eq!(s(json!({"scope": "a b  c "})), vec!["a", "b", "c"]);
    assert_eq!(s(json!({"scp": ["x", 1, "y", null]})), vec!["x", "y"]);
    assert_eq!(s(json!({"scp": "x y"})), vec!["x", "y"]);
    assert_eq!(s(json!({"scope": "a b a", "scp": ["b", "c"]})), vec!["a", "b", "c"], "deduplicated, in order");
    assert_eq!(s(json!({"scope": ["a", "b"]})), vec!["a", "b"]);
    assert_eq!(s(json!({"scope": 5, "scp": {"a": 1}})), Vec::<String>::new());
    assert_eq!(s(json!({})), Vec::<String>::new());
    assert_eq!(s(json!({"scope": "a\tb"})), vec!["a\tb"], "only spaces separate");
}

#[test]
fn claim_header_values() {
    assert_eq!(claim_header_value(&json!("abc"), ","), Some("abc".into()));
    assert_eq!(claim_header_value(&json!(42), ","), Some("42".into()));
    assert_eq!(claim_header_value(&json!(1.5), ","), Some("1.5".into()));
    assert_eq!(claim_header_value(&json!(true), ","), Some("true".into()));
    assert_eq!(claim_header_value(&json!(["a", 1, false]), ","), Some("a,1,false".into()));
    assert_eq!(claim_header_value(&json!(["a", "b"]), " | "), Some("a | b".into()));
    assert_eq!(claim_header_value(&json!("tab\there"), ","), Some("tab\there".into()), "tab allowed");
    assert_eq!(claim_header_value(&json!("ünïcödé"), ","), Some("ünïcödé".into()));
    assert_eq!(claim_header_value(&json!({"a": 1}), ","), None);
    assert_eq!(claim_header_value(&json!(null), ","), None);
    assert_eq!(claim_header_value(&json!(["a", null]), ","), None);
    assert_eq!(claim_header_value(&json!(["a", {"b": 1}]), ","), None);
    assert_eq!(claim_header_value(&json!(["a", ["b"]]), ","), None, "no nested arrays");
    for bad in ["a\r\nx-admin: 1", "a\nb", "a\rb", "nul\0", "del\u{7f}", "esc\u{1b}[0m"] {
        assert_eq!(claim_header_value(&json!(bad), ","), None, "{bad:?}");
        assert_eq!(claim_header_value(&json!(["ok", bad]), ","), None, "{bad:?} in an array");
    }
}

// ---------------------------------------------------------------------------------------------
// Properties: no input panics, and nothing but the genuine token verifies.
// ---------------------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec!["RS256", "ES256", "EdDSA", "HS256", "none", "ed", ISS, AUD]).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(member_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "alg", "kid", "typ", "crit", "jwk", "jku", "x5u", "iss", "aud", "exp", "nbf", "iat", "sub", "scope", "scp",
        ])
        .prop_map(str::to_string),
        "[a-z]{1,6}",
    ]
}

/// A header object that usually has a plausible `alg` and `kid`.
fn header() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            prop::sample::select(vec!["HS256", "HS384", "HS512", "EdDSA", "RS256", "ES256", "ES384", "none", "PS512"])
                .prop_map(Value::from),
            json_value(),
        ]),
        prop::option::of(prop_oneof![Just(json!("ed")), json_value()]),
        prop::collection::btree_map(member_name(), json_value(), 0..3),
    )
        .prop_map(|(alg, kid, extra)| {
            let mut h: Map<String, Value> = extra.into_iter().collect();
            if let Some(a) = alg {
                h.insert("alg".into(), a);
            }
            if let Some(k) = kid {
                h.insert("kid".into(), k);
            }
            Value::Object(h)
        })
}

/// A payload that is often a plausible claims set with some members replaced.
fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        prop::collection::btree_map(member_name(), json_value(), 0..5).prop_map(|changes| {
            let mut c = claims();
            for (k, v) in changes {
                c[k] = v;
            }
            c
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, char),
    Delete(usize),
    Insert(usize, char),
    Truncate(usize),
    SwapSegments(usize, usize),
    Duplicate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ch = prop_oneof![
        prop::sample::select(vec!['A', 'Q', 'a', 'z', '0', '9', '-', '_', '.', '=', '+', '/', ' ', '\n', '\0', 'é']),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), ch).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Truncate),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
        (0usize..3).prop_map(Mutation::Duplicate),
    ]
}

fn mutate(token: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let n = chars.len();
    match *m {
        Mutation::Replace(i, c) => chars[i % n] = c,
        Mutation::Delete(i) => {
            chars.remove(i % n);
        }
        Mutation::Insert(i, c) => chars.insert(i % (n + 1), c),
        Mutation::Truncate(i) => chars.truncate(i % n),
        Mutation::SwapSegments(a, b) => {
            let mut segs: Vec<&str> = token.split('.').collect();
            if segs.len() < 3 {
                return token.to_string();
            }
            segs.swap(a, b);
            return segs.join(".");
        }
        Mutation::Duplicate(a) => {
            let mut segs: Vec<&str> = token.split('.').collect();
            if segs.len() < 3 {
                return token.to_string();
            }
            let s = segs[a];
            segs[(a + 1) % 3] = s;
            return segs.join(".");
        }
    }
    chars.into_iter().collect()
}

/// Verifies under all three native settings; they must agree.
fn verify_all(token: &str, p: &Provider, k: &KeySet, now: u64) -> Result<(), Reason> {
    let a = verify(token, p, k, now, &NoNative, false).map(|_| ());
    let b = verify(token, p, k, now, &NoNative, true).map(|_| ());
    assert_eq!(a, b);
    a
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic_nor_verify(s in ".{0,300}") {
        let (p, k) = provider_and_keys();
        let _ = parse(&s, 1 << 20);
        prop_assert!(verify_all(&s, &p, &k, NOW).is_err());
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let (p, k) = provider_and_keys();
        let s = String::from_utf8_lossy(&bytes);
        prop_assert!(verify_all(&s, &p, &k, NOW).is_err());
    }

    #[test]
    fn arbitrary_three_segment_base64url_never_verifies(
        h in "[A-Za-z0-9_-]{0,80}",
        pl in "[A-Za-z0-9_-]{0,120}",
        s in "[A-Za-z0-9_-]{0,120}",
    ) {
        let (p, k) = provider_and_keys();
        let t = format!("{h}.{pl}.{s}");
        let _ = parse(&t, 1 << 20);
        prop_assert!(verify_all(&t, &p, &k, NOW).is_err());
    }

    #[test]
    fn arbitrary_json_headers_and_payloads_never_panic(
        h in header(),
        pl in payload(),
        sig in prop::collection::vec(any::<u8>(), 0..100),
        now in prop_oneof![Just(NOW), any::<u64>()],
    ) {
        let (p, k) = provider_and_keys();
        let t = format!(
            "{}.{}.{}",
            b64::encode(h.to_string().as_bytes()),
            b64::encode(pl.to_string().as_bytes()),
            b64::encode(&sig),
        );
        let _ = parse(&t, 1 << 20);
        // A random signature never verifies.
        prop_assert!(verify_all(&t, &p, &k, now).is_err());
    }

    #[test]
    fn signed_arbitrary_json_is_accepted_only_when_the_claims_are(
        h in header(),
        pl in payload(),
        use_ed in any::<bool>(),
    ) {
        // Genuinely signed (HS256 with the configured secret, or EdDSA with the set's key),
        // whatever header and payload: anything accepted must satisfy every claim rule.
        let (p, k) = provider_and_keys();
        let mut h = h;
        if let Some(obj) = h.as_object_mut() {
            if use_ed {
                obj.insert("alg".into(), json!("EdDSA"));
            } else {
                obj.insert("alg".into(), json!("HS256"));
            }
        }
        let t = if use_ed { eddsa(&h.to_string(), &pl.to_string()) } else { hs256(&h.to_string(), &pl.to_string()) };
        if let Ok(()) = verify_all(&t, &p, &k, NOW) {
            let c = pl.as_object().expect("accepted payloads are objects");
            let exp = c.get("exp").and_then(Value::as_f64).expect("exp required");
            prop_assert!(exp >= 0.0 && (exp as u64).saturating_add(60) > NOW);
            prop_assert_eq!(c.get("iss"), Some(&json!(ISS)));
            let aud_ok = match c.get("aud") {
                Some(Value::String(a)) => a == AUD,
                Some(Value::Array(l)) => l.contains(&json!(AUD)),
                _ => false,
            };
            prop_assert!(aud_ok);
            prop_assert!(!h.as_object().unwrap().contains_key("crit"));
        }
    }

    #[test]
    fn mutated_tokens_never_verify(which in 0usize..2, muts in prop::collection::vec(mutation(), 1..4)) {
        let (p, k) = provider_and_keys();
        let original = valid_tokens().swap_remove(which);
        prop_assert!(verify_all(&original, &p, &k, NOW).is_ok());
        let mut t = original.clone();
        for m in &muts {
            if t.is_empty() {
                break;
            }
            t = mutate(&t, m);
        }
        let r = verify_all(&t, &p, &k, NOW);
        if t == original {
            prop_assert!(r.is_ok());
        } else {
            prop_assert!(r.is_err(), "mutated token verified: {:?} -> {}", muts, t);
        }
    }

    #[test]
    fn huge_and_deep_inputs_never_panic(depth in 1usize..2000, n in 0usize..40_000) {
        let (p, k) = provider_and_keys();
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let t = format!("{}.{}.AA", b64::encode(deep.as_bytes()), b64::encode(deep.as_bytes()));
        prop_assert!(verify_all(&t, &p, &k, NOW).is_err());
        let nested_header = format!(r#"{{"alg":"HS256","x":{}}}"#, deep);
        let t = hs256(&nested_header, &claims().to_string());
        let _ = verify_all(&t, &p, &k, NOW);
        let big = "a".repeat(n);
        let r = verify_all(&big, &p, &k, NOW);
        prop_assert_eq!(r, Err(if n > p.max_token_bytes { Reason::TokenTooLarge } else { Reason::TokenMalformed }));
    }
}

#[test]
fn subjects_and_space_delimited_claims() {
    let (mut p, k) = provider_and_keys();
    let mut c = claims();
    c["sub"] = json!("spiffe://cluster.local/ns/shop/sa/web");
    c["roles"] = json!("admin  ops");
    let t = eddsa(r#"{"alg":"EdDSA","kid":"ed"}"#, &c.to_string());
    p.subjects = Some(crate::config::SubjectMatcher::Prefix("spiffe://cluster.local/".into(), false));
    assert!(verify(&t, &p, &k, NOW, &NoNative, true).is_ok());
    p.subjects = Some(crate::config::SubjectMatcher::Prefix("spiffe://other/".into(), false));
    assert_eq!(verify(&t, &p, &k, NOW, &NoNative, true).unwrap_err(), Reason::TokenSubject);
    p.subjects = Some(crate::config::SubjectMatcher::Suffix("/SA/WEB".into(), true));
    assert!(verify(&t, &p, &k, NOW, &NoNative, true).is_ok(), "ignore_case");
    // A token without a string `sub` never matches.
    let mut no_sub = claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    let t2 = eddsa(r#"{"alg":"EdDSA","kid":"ed"}"#, &no_sub.to_string());
    assert_eq!(verify(&t2, &p, &k, NOW, &NoNative, true).unwrap_err(), Reason::TokenSubject);
    p.subjects = None;
    p.space_delimited_claims = vec!["roles".into()];
    let (v, _) = verify(&t, &p, &k, NOW, &NoNative, true).unwrap();
    assert_eq!(v.claims["roles"], json!(["admin", "ops"]));
    assert_eq!(claim_header_value(&v.claims["roles"], ","), Some("admin,ops".into()));
}
