//! What each fuzz target does with one input. Every function here must return normally for
//! every input: a panic is a finding (Portcullis runs in a VM that a panic kills).
//!
//! This file is compiled twice: into the fuzz crate (`fuzz/src/lib.rs`, driven by libFuzzer)
//! and into `filter/tests/fuzz_replay.rs` (`#[path]`), which replays the committed corpora under
//! plain `cargo test`. It may therefore only use `portcullis`, std, and crates that are
//! dependencies of `portcullis` (`serde_json`, `sha2`).
//!
//! Setup (provider, key set, introspection settings) is built once per process and a failure
//! there is a bug in this file, so it may panic; the per-input paths only assert invariants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use portcullis::callout::Reply;
use portcullis::config::{self, KeySource, Provider};
use portcullis::crypto::jwks::{self, Alg, KeyMaterial, KeySet};
use portcullis::crypto::{self, NoNative};
use portcullis::introspection::{self, Settings};
use portcullis::jwt;
use portcullis::password;
use portcullis::ratelimit::global;
use portcullis::request;
use portcullis::wire::b64;
use portcullis::wire::der::pb_fields;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Verification time: the `now` of the JWT vectors, so their tokens are within their lifetime.
pub const NOW: u64 = 1_700_000_000;

/// The HMAC vectors: a provider (issuer, audience, `hmac_secret`) and a key set with RSA,
/// P-256, P-384 and Ed25519 keys (plus two that the filter skips).
const HMAC_VECTORS: &str = include_str!("../../filter/tests/vectors/hmac.json");

/// Header and payload used when the input supplies only the other segment. The payload passes
/// every claim check of the provider at [`NOW`].
const DEFAULT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
const DEFAULT_PAYLOAD: &str = r#"{"iss":"https://idp.vectors.example","aud":"api://vectors","sub":"fuzz","client_id":"c1","iat":1699999990,"exp":1700000600,"scope":"a b","realm_access":{"roles":["r1","r2"]}}"#;

const ALL_ALGS: [Alg; 12] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
    Alg::ES256,
    Alg::ES384,
    Alg::EdDSA,
    Alg::HS256,
    Alg::HS384,
    Alg::HS512,
];

// ---------------------------------------------------------------------------------------------
// token: JWS parse + verify
// ---------------------------------------------------------------------------------------------

struct TokenSetup {
    provider: Provider,
    keys: KeySet,
    secret: Vec<u8>,
}

fn token_setup() -> &'static TokenSetup {
    static SETUP: OnceLock<TokenSetup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let vectors: Value = serde_json::from_str(HMAC_VECTORS).expect("hmac.json is JSON");
        let mut provider = vectors["provider"].clone();
        provider["local_jwks"] = json!({ "inline_string": vectors["jwks"].to_string() });
        provider["client_id_claim"] = json!("client_id");
        provider["claim_to_headers"] = json!([
            { "header_name": "x-sub", "claim_name": "sub" },
            { "header_name": "x-roles", "claim_name": "realm_access.roles" },
        ]);
        let cfg = json!({ "providers": { "fuzz": provider } });
        let config = config::parse(cfg.to_string().as_bytes(), &|_| None).expect("token target: provider config");
        let provider = config.providers.into_iter().next().expect("one provider");
        let KeySource::Local(keys) = provider.keys.clone() else { panic!("token target: local key set") };
        let secret = provider.hmac_secret.clone().expect("token target: hmac_secret");
        TokenSetup { provider, keys, secret }
    })
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut k = if key.len() > 64 { Sha256::digest(key).to_vec() } else { key.to_vec() };
    k.resize(64, 0);
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

fn check_token(s: &TokenSetup, token: &str) {
    let Ok((verified, _path)) = jwt::verify(token, &s.provider, &s.keys, NOW, &NoNative, true) else {
        return;
    };
    // What the request path does next with a verified token: claims to headers.
    for (_, path) in &s.provider.claim_to_headers {
        if let Some(value) = jwt::claim(&verified.claims, path) {
            if let Some(h) = jwt::claim_header_value(value, &s.provider.claim_separator) {
                assert!(
                    !h.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f),
                    "claim header value with a control character: {h:?}"
                );
            }
        }
    }
    let _ = jwt::scopes_of(&verified.claims);
}

/// The input as a compact JWS; then the input as the JSON of the header and/or payload,
/// base64url-encoded and (unless the selector's top bit is set) HS256-signed with the
/// provider's secret, so that inputs get past the signature into the claim handling.
///
/// The first byte selects: `% 3 == 0` the rest is the payload (header [`DEFAULT_HEADER`]);
/// `1` the rest is the header (payload [`DEFAULT_PAYLOAD`]); `2` header and payload are the
/// rest split at its first `\n`.
pub fn token(data: &[u8]) {
    let s = token_setup();
    check_token(s, &String::from_utf8_lossy(data));

    let Some((&selector, rest)) = data.split_first() else { return };
    let (header, payload) = match selector % 3 {
        0 => (DEFAULT_HEADER.as_bytes(), rest),
        1 => (rest, DEFAULT_PAYLOAD.as_bytes()),
        _ => match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        },
    };
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let signature = if selector & 0x80 == 0 { hmac_sha256(&s.secret, input.as_bytes()) } else { vec![0x5a; 64] };
    check_token(s, &format!("{input}.{}", b64::encode(&signature)));
}

// ---------------------------------------------------------------------------------------------
// jwks: key set parse, then each kept key used once
// ---------------------------------------------------------------------------------------------

/// A token shaped for `alg` and `key` (signature of the right length, never valid).
fn dummy_token(alg: Alg, key: &jwks::Jwk) -> (String, usize, Vec<u8>) {
    let sig_len = match &key.material {
        KeyMaterial::Rsa { n, .. } => n.len().clamp(1, 1024),
        KeyMaterial::Ec { .. } if alg == Alg::ES384 => 96,
        _ => 64,
    };
    let signature = vec![0x01; sig_len];
    let header = format!(r#"{{"alg":"{}"}}"#, alg.name());
    let input = format!("{}.{}", b64::encode(header.as_bytes()), b64::encode(b"{}"));
    let len = input.len();
    (format!("{input}.{}", b64::encode(&signature)), len, signature)
}

/// Parses the input as a JWKS document; every key kept must be usable by the verifier
/// without panicking (one algorithm per key, at most four keys, to keep RSA cheap).
pub fn jwks(data: &[u8]) {
    let Ok((set, _warnings)) = jwks::parse(data) else { return };
    assert!(set.keys.len() <= jwks::MAX_KEYS, "{} keys kept", set.keys.len());
    for (i, key) in set.keys.iter().enumerate().take(4) {
        let allowed: Vec<Alg> = ALL_ALGS.into_iter().filter(|a| key.allows(*a)).collect();
        assert!(!allowed.is_empty(), "a kept key allows no algorithm: {key:?}");
        assert!(allowed.iter().all(|a| !a.is_hmac()), "a JWK allows an HMAC algorithm: {key:?}");
        let alg = allowed[(data.len() + i) % allowed.len()];
        let (token, signing_input_len, signature) = dummy_token(alg, key);
        let _ = crypto::verify_with_key(&token, signing_input_len, &signature, alg, key, &NoNative, true);
        if let Some(kid) = &key.kid {
            assert!(set.has_kid(kid));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// config: parse + validate
// ---------------------------------------------------------------------------------------------

/// Parses the input as the filter configuration, without and with environment variables.
pub fn config(data: &[u8]) {
    if let Ok(c) = config::parse(data, &|_| None) {
        let _ = format!("{c:?}");
    }
    let _ = config::parse(data, &|name| Some(format!("fuzz-env-{name}-0123456789abcdef0123456789abcdef")));
}

// ---------------------------------------------------------------------------------------------
// form: application/x-www-form-urlencoded and the password grant request
// ---------------------------------------------------------------------------------------------

pub fn form(data: &[u8]) {
    if let Ok(pairs) = password::parse_form(data) {
        assert!(pairs.len() <= password::MAX_FORM_FIELDS, "{} pairs", pairs.len());
        assert!(pairs.iter().all(|(k, _)| !k.is_empty()), "a pair with an empty name");
    }
    if let Ok(req) = password::password_request(data) {
        assert!(!req.username.is_empty() && !req.password.is_empty(), "empty username or password accepted");
        let reserved = ["grant_type", "username", "password"];
        assert!(req.others.iter().all(|(k, _)| !reserved.contains(&k.as_str())));
    }
}

// ---------------------------------------------------------------------------------------------
// introspection: RFC 7662 JSON answers, RFC 9701 and by-value JWT answers
// ---------------------------------------------------------------------------------------------

fn introspection_settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let cfg = json!({ "introspection": {
            "endpoint": { "cluster": "idp", "authority": "idp.example.com", "path": "/oauth/introspect" },
            "client_id": "gateway",
            "client_secret": "s3cret",
            "accept_jwt": true,
        }});
        let config = config::parse(cfg.to_string().as_bytes(), &|_| None).expect("introspection target: config");
        config.introspection.expect("introspection section").settings
    })
}

/// The input as the body of a 200 answer, as JSON and as each JWT media type; then as a token
/// (the opaque/candidate checks run on every request).
pub fn introspection(data: &[u8]) {
    let s = introspection_settings();
    for content_type in ["application/json", "application/token-introspection+jwt", "application/jwt"] {
        let reply = Reply {
            status: Some(200),
            headers: vec![("content-type".to_string(), content_type.to_string())],
            body: data.to_vec(),
        };
        if let Ok(answer) = introspection::parse_reply(s, &reply, NOW) {
            let _ = (answer.client_id(), answer.subject(), answer.scopes());
            if !answer.active {
                assert!(answer.claims.is_empty() && answer.jwt.is_none(), "inactive answer with claims: {answer:?}");
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = introspection::is_opaque(&text);
    let _ = introspection::is_candidate(s, &text);
    let _ = introspection::is_well_formed(s, &text);
}

// ---------------------------------------------------------------------------------------------
// rls: the rate limit service's gRPC answer
// ---------------------------------------------------------------------------------------------

/// The input as a `RateLimitResponse`; and, split at `|`, as the strings of a request, whose
/// encoding must decode again.
pub fn rls(data: &[u8]) {
    let _ = global::parse(data);
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '|');
    let (domain, plan, client) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let request = global::request(domain, plan, client, data.len() as u64);
    assert!(pb_fields(&request).is_some(), "request encoding does not decode");
}

// ---------------------------------------------------------------------------------------------
// path: method + path canonicalisation
// ---------------------------------------------------------------------------------------------

/// The input as a request line without the version: `METHOD SP path` when a space comes within
/// the first 33 bytes, else the whole input is the path of a `GET`. An accepted path must be
/// canonical already: canonicalising it again gives the same path, unchanged.
pub fn path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (method, raw_path) = match text.find(' ') {
        Some(i) if i <= 32 => (&text[..i], &text[i + 1..]),
        _ => ("GET", &text[..]),
    };
    let Ok(c) = request::canonicalize(method, raw_path) else { return };
    assert_eq!(c.changed, c.path != raw_path, "`changed` is wrong for {raw_path:?} -> {:?}", c.path);
    assert!(c.path.is_ascii(), "non-ASCII canonical path {:?}", c.path);
    assert!(c.path.starts_with('/') || c.path == "*", "canonical path {:?} is not origin form", c.path);
    match request::canonicalize(method, &c.path) {
        Ok(again) => assert_eq!(
            again,
            request::Canonical { path: c.path.clone(), changed: false },
            "not idempotent: {raw_path:?} -> {:?} -> {:?}",
            c.path,
            again.path
        ),
        Err(e) => panic!("not idempotent: {raw_path:?} -> {:?} is refused ({e:?})", c.path),
    }
}
