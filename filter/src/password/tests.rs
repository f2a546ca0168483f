//! Unit tests for the password grant's pure parts. Test keys: `testdata/` (README there says
//! how to regenerate them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::crypto::issue::custom_only;
use crate::crypto::Path;
use crate::wire::der::{self, Curve, PbValue};
use jwt_simple::algorithms::{ECDSAP256KeyPairLike, RSAKeyPairLike};
use jwt_simple::prelude::{ES256KeyPair, RS256KeyPair};

use proptest::prelude::*;
use serde_json::json;

use crate::crypto::NoNative;

const RS256_PEM: &str = include_str!("testdata/rs256.pem");
const ES256_PEM: &str = include_str!("testdata/es256.pem");
const ED25519_PEM: &str = include_str!("testdata/ed25519.pem");
const ES256_SEC1_PEM: &str = include_str!("testdata/es256-sec1.pem");
const ES384_PEM: &str = include_str!("testdata/es384.pem");

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// ---------------------------------------------------------------------------------------------
// Form parsing
// ---------------------------------------------------------------------------------------------

#[test]
fn form_table() {
    let ok: &[(&str, &[(&str, &str)])] = &[
        ("", &[]),
        ("a=1", &[("a", "1")]),
        ("a=1&b=2", &[("a", "1"), ("b", "2")]),
        ("a=", &[("a", "")]),
        ("a", &[("a", "")]),
        ("a=1&&b=2&", &[("a", "1"), ("b", "2")]),
        ("a=x+y", &[("a", "x y")]),
        ("a=x%2By", &[("a", "x+y")]),
        ("a=%26%3D%25", &[("a", "&=%")]),
        ("p%61ss=%C3%A9t%c3%a9", &[("pass", "été")]),
        ("a=1=2", &[("a", "1=2")]),
        ("a=1&a=2", &[("a", "1"), ("a", "2")]),
        ("k=%00", &[("k", "\0")]),
        ("k=%F0%9F%94%91", &[("k", "🔑")]),
    ];
    for (body, want) in ok {
        assert_eq!(parse_form(body.as_bytes()), Ok(pairs(want)), "{body:?}");
    }
    let bad: &[(&[u8], FormError)] = &[
        (b"a=%zz", FormError::InvalidEscape),
        (b"a=%2", FormError::InvalidEscape),
        (b"a=%", FormError::InvalidEscape),
        (b"a=%%41", FormError::InvalidEscape),
        (b"%g1=x", FormError::InvalidEscape),
        (b"a=%C3", FormError::InvalidUtf8),
        (b"a=%FF", FormError::InvalidUtf8),
        (b"a=\xff", FormError::InvalidUtf8),
        (b"=x", FormError::EmptyKey),
        (b"=", FormError::EmptyKey),
        (b"a=1&=2", FormError::EmptyKey),
    ];
    for (body, want) in bad {
        assert_eq!(parse_form(body), Err(*want), "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn form_field_cap() {
    let at_cap = vec!["a=1"; MAX_FORM_FIELDS].join("&");
    assert_eq!(parse_form(at_cap.as_bytes()).unwrap().len(), MAX_FORM_FIELDS);
    let over = vec!["a=1"; MAX_FORM_FIELDS + 1].join("&");
    assert_eq!(parse_form(over.as_bytes()), Err(FormError::TooManyFields));
}

#[test]
fn huge_values_parse() {
    let big = "x".repeat(DEFAULT_MAX_BODY);
    let body = format!("grant_type=password&username=u&password={big}");
    assert_eq!(password_request(body.as_bytes()).unwrap().password.len(), DEFAULT_MAX_BODY);
}

#[test]
fn content_type() {
    assert!(is_form_content_type("application/x-www-form-urlencoded"));
    assert!(is_form_content_type("Application/X-WWW-Form-Urlencoded; charset=UTF-8"));
    assert!(!is_form_content_type("application/json"));
    assert!(!is_form_content_type("multipart/form-data; boundary=x"));
    assert!(!is_form_content_type(""));
}

proptest! {
    #[test]
    fn form_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_form(&body);
        let _ = password_request(&body);
    }

    #[test]
    fn form_round_trips(fields in proptest::collection::vec(("[a-z_]{1,8}", "\\PC{0,12}"), 0..8)) {
        let enc = |s: &str| -> String {
            s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
        };
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
        let parsed = parse_form(body.join("&").as_bytes()).unwrap();
        prop_assert_eq!(parsed, fields);
    }
}

// ---------------------------------------------------------------------------------------------
// Password requests
// ---------------------------------------------------------------------------------------------

#[test]
fn password_request_table() {
    use GrantError::{InvalidRequest as Bad, NotPasswordGrant as Pass};
    use Param::{GrantType as G, Password as P, Username as U};
    use RequestProblem as R;
    type Case<'a> = (&'a [u8], Result<(&'a str, &'a str), GrantError>);
    let cases: &[Case] = &[
        (b"grant_type=password&username=alice&password=s3cret", Ok(("alice", "s3cret"))),
        (b"username=al%20ice&password=p+w%26&grant_type=password", Ok(("al ice", "p w&"))),
        // Not ours: other grants, no grant at all.
        (b"grant_type=client_credentials&client_id=x", Err(Pass)),
        (b"grant_type=refresh_token&refresh_token=r", Err(Pass)),
        (b"username=alice&password=x", Err(Pass)),
        (b"", Err(Pass)),
        (b"grant_type=", Err(Pass)),
        // Ambiguous grants are refused, never passed through.
        (b"grant_type=Password&username=a&password=b", Err(Bad(R::AmbiguousGrantType))),
        (b"grant_type=+password&username=a&password=b", Err(Bad(R::AmbiguousGrantType))),
        (b"grant_type=password&grant_type=password&username=a&password=b", Err(Bad(R::Repeated(G)))),
        (b"grant_type=client_credentials&grant_type=password", Err(Bad(R::Repeated(G)))),
        (b"grant_type=password&username=a&password=%zz", Err(Bad(R::Form(FormError::InvalidEscape)))),
        (b"grant_type=password&username=a&password=%", Err(Bad(R::Form(FormError::InvalidEscape)))),
        (b"grant_type=password&username=\xff&password=b", Err(Bad(R::Form(FormError::InvalidUtf8)))),
        // Missing, empty, repeated credentials.
        (b"grant_type=password&password=b", Err(Bad(R::Missing(U)))),
        (b"grant_type=password&username=a", Err(Bad(R::Missing(P)))),
        (b"grant_type=password&username=&password=b", Err(Bad(R::Empty(U)))),
        (b"grant_type=password&username=a&password=", Err(Bad(R::Empty(P)))),
        (b"grant_type=password&username=a&password", Err(Bad(R::Empty(P)))),
        (b"grant_type=password&username=a&username=b&password=c", Err(Bad(R::Repeated(U)))),
        (b"grant_type=password&username=a&password=b&password=c", Err(Bad(R::Repeated(P)))),
        // Truncated in the middle of the password parameter's name.
        (b"grant_type=password&username=a&pass", Err(Bad(R::Missing(P)))),
    ];
    for (body, want) in cases {
        let got = password_request(body).map(|r| (r.username.clone(), r.password.clone()));
        let want = want.map(|(u, p)| (u.to_string(), p.to_string()));
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn password_request_keeps_other_parameters() {
    let r = password_request(b"grant_type=password&username=a&password=b&scope=read+write&client_id=app&x=1").unwrap();
    assert_eq!(r.scope.as_deref(), Some("read write"));
    assert_eq!(r.client_id.as_deref(), Some("app"));
    assert_eq!(r.others, pairs(&[("scope", "read write"), ("client_id", "app"), ("x", "1")]));
    let r = password_request(b"grant_type=password&username=a&password=b&scope=1&scope=2").unwrap();
    assert_eq!(r.scope, None, "a repeated optional parameter is not trusted");
}

#[test]
fn debug_redacts_the_password_and_other_values() {
    let r =
        password_request(b"grant_type=password&username=alice&password=hunter2-secret&client_secret=cs-9876").unwrap();
    for text in [format!("{r:?}"), format!("{r:#?}")] {
        assert!(text.contains("alice"));
        assert!(text.contains("<redacted>"));
        assert!(!text.contains("hunter2-secret"), "{text}");
        assert!(!text.contains("cs-9876"), "{text}");
        assert!(text.contains("client_secret"), "names only: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Backends and the chain
// ---------------------------------------------------------------------------------------------

fn backend(name: &str, registered_at: i64) -> Backend {
    Backend {
        name: name.into(),
        cluster: format!("c-{name}"),
        authority: format!("{name}.internal"),
        path: "/authenticate".into(),
        timeout_ms: 2000,
        registered_at,
    }
}

fn names(v: &[Backend]) -> Vec<&str> {
    v.iter().map(|b| b.name.as_str()).collect()
}

#[test]
fn order_is_newest_first_and_stable() {
    let cfg = vec![backend("old", 100), backend("new", 300), backend("tie-a", 200), backend("tie-b", 200)];
    assert_eq!(names(&order(&cfg)), vec!["new", "tie-a", "tie-b", "old"]);
    let cfg = vec![backend("tie-b", 200), backend("tie-a", 200)];
    assert_eq!(names(&order(&cfg)), vec!["tie-b", "tie-a"]);
    assert!(order(&[]).is_empty());
    // The SPEC's example.
    let ldap = crate::config::parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
    let legacy = crate::config::parse_rfc3339("2024-05-01T00:00:00Z").unwrap();
    assert_eq!(
        names(&order(&[backend("legacy-db", legacy), backend("ldap-bridge", ldap)])),
        ["ldap-bridge", "legacy-db"]
    );
}

#[test]
fn backend_request_forwards_body_and_content_type_unchanged() {
    let body = b"grant_type=password&username=a&password=b%20c";
    let c = backend_request(&backend("ldap", 1), body, "application/x-www-form-urlencoded; charset=utf-8");
    assert_eq!(c.method, "POST");
    assert_eq!(
        (c.cluster.as_str(), c.authority.as_str(), c.path.as_str()),
        ("c-ldap", "ldap.internal", "/authenticate")
    );
    assert_eq!(c.body.as_deref(), Some(&body[..]));
    assert!(c.headers.contains(&("content-type".into(), "application/x-www-form-urlencoded; charset=utf-8".into())));
    assert_eq!(c.timeout_ms, 2000);
    assert!(c.headers.iter().all(|(k, _)| !k.starts_with(':')));
}

fn reply(status: Option<u16>, body: &str) -> Reply {
    Reply { status, headers: vec![], body: body.as_bytes().to_vec() }
}

#[test]
fn classify_table() {
    let obj = |v: Value| v.as_object().cloned();
    let cases: Vec<(Reply, BackendAnswer)> = vec![
        (
            reply(Some(200), r#"{"extraInfo":{"dept":"ops","level":3}}"#),
            BackendAnswer::Accept { extra_info: obj(json!({"dept":"ops","level":3})) },
        ),
        (reply(Some(200), r#"{"ok":true}"#), BackendAnswer::Accept { extra_info: None }),
        (reply(Some(200), r#"{"extraInfo":null}"#), BackendAnswer::Accept { extra_info: None }),
        (reply(Some(201), r#"{"extraInfo":{}}"#), BackendAnswer::Accept { extra_info: obj(json!({})) }),
        (reply(Some(204), ""), BackendAnswer::Accept { extra_info: None }),
        (reply(Some(200), " \n"), BackendAnswer::Accept { extra_info: None }),
        (reply(Some(200), r#"{"extraInfo":"admin"}"#), BackendAnswer::Failed(Failure::BadExtraInfo)),
        (reply(Some(200), r#"{"extraInfo":[1]}"#), BackendAnswer::Failed(Failure::BadExtraInfo)),
        (reply(Some(200), "<html>welcome</html>"), BackendAnswer::Failed(Failure::BadBody)),
        (reply(Some(200), "[]"), BackendAnswer::Failed(Failure::BadBody)),
        (reply(Some(200), "true"), BackendAnswer::Failed(Failure::BadBody)),
        (reply(Some(200), "{\"extraInfo\":{"), BackendAnswer::Failed(Failure::BadBody)),
        (reply(Some(401), ""), BackendAnswer::NotHere),
        (reply(Some(403), "{\"error\":\"nope\"}"), BackendAnswer::NotHere),
        (reply(None, ""), BackendAnswer::Failed(Failure::NoResponse)),
        (reply(Some(500), ""), BackendAnswer::Failed(Failure::Status(500))),
        (reply(Some(503), ""), BackendAnswer::Failed(Failure::Status(503))),
        (reply(Some(404), ""), BackendAnswer::Failed(Failure::Status(404))),
        (reply(Some(400), ""), BackendAnswer::Failed(Failure::Status(400))),
        (reply(Some(302), ""), BackendAnswer::Failed(Failure::Status(302))),
        (reply(Some(429), ""), BackendAnswer::Failed(Failure::Status(429))),
    ];
    for (r, want) in cases {
        assert_eq!(classify(&r), want, "{:?} {:?}", r.status, String::from_utf8_lossy(&r.body));
    }
    let huge = format!(r#"{{"extraInfo":{{"x":"{}"}}}}"#, "a".repeat(MAX_BACKEND_REPLY));
    assert_eq!(classify(&reply(Some(200), &huge)), BackendAnswer::Failed(Failure::Oversized));
}

fn three() -> Chain {
    Chain::new(order(&[backend("c", 100), backend("a", 300), backend("b", 200)]))
}

const ACCEPT: fn() -> BackendAnswer = || BackendAnswer::Accept { extra_info: None };
const FAIL: BackendAnswer = BackendAnswer::Failed(Failure::NoResponse);

#[test]
fn chain_asks_newest_first_and_stops_at_the_first_accept() {
    let mut ch = three();
    assert_eq!(ch.start(), ChainStep::Ask(0));
    assert_eq!(ch.next_callout(b"body", "ct").unwrap().cluster, "c-a");
    assert_eq!(ch.on_answer(BackendAnswer::NotHere), ChainStep::Ask(1));
    assert_eq!(ch.next_callout(b"body", "ct").unwrap().cluster, "c-b");
    let extra = json!({"k": "v"}).as_object().cloned();
    assert_eq!(
        ch.on_answer(BackendAnswer::Accept { extra_info: extra.clone() }),
        ChainStep::Accepted { backend: "b".into(), extra_info: extra }
    );
    assert_eq!(ch.next_callout(b"body", "ct"), None, "c is never asked");
    assert_eq!(ch.on_answer(ACCEPT()), ChainStep::Rejected, "answers after the end never accept");
}

#[test]
fn chain_outcomes() {
    use BackendAnswer::NotHere as N;
    let cases: Vec<(Vec<BackendAnswer>, ChainStep)> = vec![
        (vec![ACCEPT()], ChainStep::Accepted { backend: "a".into(), extra_info: None }),
        (vec![N, N, ACCEPT()], ChainStep::Accepted { backend: "c".into(), extra_info: None }),
        // A failure is remembered, but a later acceptance still wins.
        (vec![FAIL, ACCEPT()], ChainStep::Accepted { backend: "b".into(), extra_info: None }),
        (vec![N, N, N], ChainStep::Rejected),
        // Mixed: the failed backend might have known the user.
        (vec![FAIL, N, N], ChainStep::Unavailable),
        (vec![N, N, FAIL], ChainStep::Unavailable),
        (vec![FAIL, FAIL, FAIL], ChainStep::Unavailable),
        (vec![N, BackendAnswer::Failed(Failure::BadBody), N], ChainStep::Unavailable),
    ];
    for (answers, want) in cases {
        let mut ch = three();
        let mut last = ch.start();
        let n = answers.len();
        for (i, a) in answers.into_iter().enumerate() {
            last = ch.on_answer(a);
            if i + 1 < n {
                assert_eq!(last, ChainStep::Ask(i + 1));
            }
        }
        assert_eq!(last, want);
    }
    let mut ch = three();
    ch.on_answer(FAIL);
    ch.on_answer(BackendAnswer::Failed(Failure::Status(502)));
    assert_eq!(ch.failures(), &[("a".to_string(), Failure::NoResponse), ("b".to_string(), Failure::Status(502))]);
}

#[test]
fn empty_chain_fails_closed() {
    let mut ch = Chain::new(vec![]);
    assert_eq!(ch.start(), ChainStep::Unavailable);
    assert_eq!(ch.next_callout(b"", ""), None);
    assert_eq!(ch.on_answer(ACCEPT()), ChainStep::Unavailable);
}

// ---------------------------------------------------------------------------------------------
// Responses and forwarding
// ---------------------------------------------------------------------------------------------

fn hdr<'a>(r: &'a HttpResponse, n: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
}

fn body(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn responses() {
    let r = invalid_grant();
    assert_eq!((r.status, body(&r)), (400, json!({"error": "invalid_grant"})));
    let r = invalid_request();
    assert_eq!((r.status, &body(&r)["error"]), (400, &json!("invalid_request")));
    let r = temporarily_unavailable(7);
    assert_eq!(
        (r.status, hdr(&r, "retry-after"), &body(&r)["error"]),
        (503, Some("7"), &json!("temporarily_unavailable"))
    );
    let r = payload_too_large();
    assert_eq!(r.status, 413);
    let r = locked_out(120);
    assert_eq!((r.status, hdr(&r, "retry-after")), (429, Some("120")));
    assert_eq!(body(&r), json!({"error": "invalid_grant", "error_description": "too many failed attempts"}));
    for r in [invalid_grant(), invalid_request(), temporarily_unavailable(1), payload_too_large(), locked_out(1)] {
        assert_eq!(hdr(&r, "cache-control"), Some("no-store"));
        assert_eq!(hdr(&r, "content-type"), Some("application/json;charset=UTF-8"));
    }
    let r = token_response("eyJ.x.y", 900);
    assert_eq!(r.status, 200);
    assert_eq!(body(&r), json!({"access_token": "eyJ.x.y", "token_type": "Bearer", "expires_in": 900}));
    assert_eq!(hdr(&r, "cache-control"), Some("no-store"));
    assert_eq!(hdr(&r, "pragma"), Some("no-cache"));
    let r = jwks_response("{\"keys\":[]}");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"{\"keys\":[]}"[..]));
}

#[test]
fn forward_headers_encode_extra_info() {
    let extra = json!({"dept": "ops", "groups": ["a", "b"], "ünï": "✓"}).as_object().cloned().unwrap();
    let h = forward_headers("x-portcullis-identity", "x-portcullis-extra-info", "ldap-bridge", Some(&extra));
    assert_eq!(h[0], ("x-portcullis-identity".to_string(), "ldap-bridge".to_string()));
    assert_eq!(h[1].0, "x-portcullis-extra-info");
    let decoded: Value = serde_json::from_slice(&b64::decode(&h[1].1).unwrap()).unwrap();
    assert_eq!(decoded, Value::Object(extra));
    assert!(h[1].1.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "header-safe");
    let h = forward_headers("x-id", "x-extra", "legacy", None);
    assert_eq!(h, vec![("x-id".to_string(), "legacy".to_string())]);
}

// ---------------------------------------------------------------------------------------------
// Issuing
// ---------------------------------------------------------------------------------------------

const ISS: &str = "https://gateway.test";
const NOW: u64 = 1_700_000_000;

fn issuer(alg: SigningAlg, pem: &str) -> Issuer {
    Issuer::from_pem(ISS, &["orders-api".to_string()], 900, alg, "gw-1", pem).unwrap()
}

/// Verifies `token` as a relying party would: `crate::jwt::verify` with a provider whose
/// local key set is the issuer's published JWKS.
fn verify(issuer: &Issuer, token: &str) -> Map<String, Value> {
    let cfg = json!({"providers": {"gw": {
        "issuer": ISS,
        "audiences": ["orders-api"],
        "local_jwks": {"inline_string": issuer.public_jwks()},
    }}});
    let config = crate::config::parse(cfg.to_string().as_bytes(), &|_| None).unwrap();
    let provider = config.providers.into_iter().next().unwrap();
    let crate::config::KeySource::Local(keys) = provider.keys.clone() else { panic!("local keys") };
    let (v, _) = crate::jwt::verify(token, &provider, &keys, NOW + 1, &NoNative, false).unwrap();
    v.claims
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(&b64::decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

#[test]
fn issued_tokens_verify_pure_path_every_algorithm() {
    let extra = json!({"dept": "ops"}).as_object().cloned();
    for (alg, pem) in [(SigningAlg::ES256, ES256_PEM), (SigningAlg::RS256, RS256_PEM), (SigningAlg::EdDSA, ED25519_PEM)]
    {
        let is = issuer(alg, pem);
        let claims = is.claims("alice", "ldap-bridge", extra.as_ref(), NOW, "jti-1");
        let (token, path) = is.sign(&claims, &NoSigner).unwrap();
        assert_eq!(path, Path::Pure, "{alg:?}");
        assert_eq!(header_of(&token), json!({"alg": alg.name(), "kid": "gw-1", "typ": "JWT"}));
        let got = verify(&is, &token);
        assert_eq!(got, claims, "{alg:?}");
        assert_eq!(got["sub"], "alice");
        assert_eq!(got["idp"], "ldap-bridge");
        assert_eq!(got["extraInfo"], json!({"dept": "ops"}));
        // A tampered payload does not verify.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut evil = claims.clone();
        evil.insert("sub".into(), json!("admin"));
        parts[1] = b64::encode(Value::Object(evil).to_string().as_bytes());
        let cfg_token = parts.join(".");
        let cfg = json!({"providers": {"gw": {"issuer": ISS, "local_jwks": {"inline_string": is.public_jwks()}}}});
        let config = crate::config::parse(cfg.to_string().as_bytes(), &|_| None).unwrap();
        let provider = config.providers.into_iter().next().unwrap();
        let crate::config::KeySource::Local(keys) = provider.keys.clone() else { panic!() };
        assert!(crate::jwt::verify(&cfg_token, &provider, &keys, NOW + 1, &NoNative, false).is_err());
    }
}

#[test]
fn claims_shape() {
    let is = issuer(SigningAlg::EdDSA, ED25519_PEM);
    let c = is.claims("bob", "legacy-db", None, NOW, "j");
    assert_eq!(
        Value::Object(c),
        json!({"iss": ISS, "sub": "bob", "aud": "orders-api", "iat": NOW, "nbf": NOW, "exp": NOW + 900,
               "jti": "j", "idp": "legacy-db"})
    );
    // extraInfo is nested: it cannot override a top-level claim.
    let extra = json!({"sub": "admin", "iss": "evil"}).as_object().cloned();
    let c = is.claims("bob", "b", extra.as_ref(), NOW, "j");
    assert_eq!(c["sub"], "bob");
    assert_eq!(c["extraInfo"]["sub"], "admin");
    let many = Issuer::from_pem(ISS, &["a".into(), "b".into()], 60, SigningAlg::EdDSA, "k", ED25519_PEM).unwrap();
    assert_eq!(many.claims("u", "b", None, NOW, "j")["aud"], json!(["a", "b"]));
    let none = Issuer::from_pem(ISS, &[], 60, SigningAlg::EdDSA, "k", ED25519_PEM).unwrap();
    assert!(!none.claims("u", "b", None, NOW, "j").contains_key("aud"));
}

/// A stand-in for Envoy's `sign`: signs like BoringSSL would (DER ECDSA, PKCS#1 v1.5 RSA),
/// here through jwt-simple, and records what it was asked.
struct FakeNative {
    calls: std::cell::RefCell<Vec<(String, bool)>>,
    mangle: bool,
}

impl NativeSigner for FakeNative {
    fn sign(&self, hash: &str, pem: &str, message: &[u8]) -> Option<Vec<u8>> {
        self.calls.borrow_mut().push((hash.to_string(), pem.contains("BEGIN PRIVATE KEY")));
        if self.mangle {
            return Some(vec![0x30, 0x03, 0x02, 0x01]);
        }
        let text = std::str::from_utf8(message).ok()?;
        let (_, payload) = text.split_once('.')?;
        let claims: Map<String, Value> = serde_json::from_slice(&b64::decode(payload)?).ok()?;
        if let Ok(k) = ES256KeyPair::from_pem(pem) {
            let token = k.with_key_id("gw-1").sign(custom_only(&claims)).ok()?;
            let raw = b64::decode(token.strip_prefix(text)?.strip_prefix('.')?)?;
            return der::ecdsa_raw_to_der(Curve::P256, &raw);
        }
        let k = RS256KeyPair::from_pem(pem).ok()?;
        let token = k.with_key_id("gw-1").sign(custom_only(&claims)).ok()?;
        b64::decode(token.strip_prefix(text)?.strip_prefix('.')?)
    }
}

#[test]
fn native_path_signs_es256_and_rs256_and_converts_der() {
    for (alg, pem) in [(SigningAlg::ES256, ES256_PEM), (SigningAlg::RS256, RS256_PEM)] {
        let is = issuer(alg, pem);
        let native = FakeNative { calls: Default::default(), mangle: false };
        let claims = is.claims("alice", "ldap", None, NOW, "j");
        let (token, path) = is.sign(&claims, &native).unwrap();
        assert_eq!(path, Path::Native, "{alg:?}");
        assert_eq!(native.calls.borrow().as_slice(), &[("sha256".to_string(), true)]);
        assert_eq!(verify(&is, &token), claims);
    }
}

#[test]
fn unusable_native_answers_fall_back_to_pure() {
    for (alg, pem) in [(SigningAlg::ES256, ES256_PEM), (SigningAlg::RS256, RS256_PEM)] {
        let is = issuer(alg, pem);
        let native = FakeNative { calls: Default::default(), mangle: true };
        let claims = is.claims("alice", "ldap", None, NOW, "j");
        let (token, path) = is.sign(&claims, &native).unwrap();
        assert_eq!(path, Path::Pure, "{alg:?}");
        assert_eq!(verify(&is, &token), claims);
    }
    // EdDSA never asks the host (Envoy's `sign` cannot do Ed25519).
    let is = issuer(SigningAlg::EdDSA, ED25519_PEM);
    let native = FakeNative { calls: Default::default(), mangle: false };
    let (_, path) = is.sign(&is.claims("a", "b", None, NOW, "j"), &native).unwrap();
    assert_eq!((path, native.calls.borrow().len()), (Path::Pure, 0));
}

#[test]
fn public_jwks_shape() {
    for (alg, pem, kty) in [
        (SigningAlg::ES256, ES256_PEM, "EC"),
        (SigningAlg::RS256, RS256_PEM, "RSA"),
        (SigningAlg::EdDSA, ED25519_PEM, "OKP"),
    ] {
        let doc: Value = serde_json::from_str(&issuer(alg, pem).public_jwks()).unwrap();
        let k = &doc["keys"][0];
        assert_eq!((k["kty"].as_str(), k["kid"].as_str()), (Some(kty), Some("gw-1")));
        assert_eq!((k["alg"].as_str(), k["use"].as_str()), (Some(alg.name()), Some("sig")));
        assert!(k.get("d").is_none() && k.get("p").is_none(), "no private member");
        let (set, warnings) = crate::crypto::jwks::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!((set.keys.len(), warnings.len()), (1, 0), "{warnings:?}");
    }
}

#[test]
fn from_pem_refusals() {
    let e = |alg, pem| Issuer::from_pem(ISS, &[], 60, alg, "k", pem).unwrap_err();
    assert!(e(SigningAlg::ES256, ES256_SEC1_PEM).contains("PKCS#8"));
    assert!(e(SigningAlg::ES256, ES384_PEM).contains("not a valid PKCS#8 ES256"));
    assert!(e(SigningAlg::ES256, RS256_PEM).contains("not a valid"));
    assert!(e(SigningAlg::RS256, ES256_PEM).contains("not a valid"));
    assert!(e(SigningAlg::EdDSA, ES256_PEM).contains("not a valid"));
    assert!(e(SigningAlg::ES256, "").contains("PKCS#8"));
    assert!(
        e(SigningAlg::ES256, "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----").contains("not a valid")
    );
    // Never echoes key material.
    let msg = e(SigningAlg::RS256, ES256_PEM);
    assert!(!msg.contains("MIG"), "{msg}");
    let is = issuer(SigningAlg::ES256, ES256_PEM);
    assert!(!format!("{is:?}").contains("MIG"), "Debug redacts the key");
    assert_eq!(SigningAlg::parse("EdDSA"), Some(SigningAlg::EdDSA));
    assert_eq!(SigningAlg::parse("HS256"), None);
}

#[test]
fn sign_protobuf_round_trip() {
    let is = issuer(SigningAlg::ES256, ES256_PEM);
    let args = is.native_sign_args(b"h.p");
    let f = der::pb_fields(&args).unwrap();
    assert_eq!(f[0], (1, PbValue::Bytes(b"sha256")));
    assert_eq!(f[1], (3, PbValue::Bytes(b"h.p")));
    assert!(matches!(f[2], (4, PbValue::Bytes(p)) if p.starts_with(b"-----BEGIN PRIVATE KEY-----")));
    let mut ok = vec![0x08, 0x01];
    der::pb_bytes(&mut ok, 2, &[1, 2, 3]);
    assert_eq!(parse_sign_result(&ok), Some(vec![1, 2, 3]));
    let mut failed = vec![0x08, 0x00];
    der::pb_bytes(&mut failed, 3, b"bad key");
    assert_eq!(parse_sign_result(&failed), None);
    assert_eq!(parse_sign_result(&[0x08, 0x01]), None, "no signature");
    assert_eq!(parse_sign_result(&[0xff]), None, "garbage");
    assert_eq!(parse_sign_result(&[]), None);
}

#[test]
fn jti_is_unique_per_seed_and_opaque() {
    assert_ne!(jti(b"1"), jti(b"2"));
    assert_eq!(jti(b"1").len(), 22);
    assert!(!jti(b"worker-7").contains("worker"));
}
