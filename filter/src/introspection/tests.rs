//! Unit and property tests for introspection: request shape, answer parsing, cache lifetimes,
//! the shared cache and the single-flight lease.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

use proptest::prelude::*;
use serde_json::json;

use crate::store::MemStore;

const NOW: u64 = 1_700_000_000;
const NOW_MS: u64 = NOW * 1000;

fn settings() -> Settings {
    Settings::new(
        Endpoint {
            cluster: "idp".into(),
            authority: "idp.example.com".into(),
            path: "/oauth/introspect".into(),
            timeout_ms: 1000,
        },
        "gateway",
        "s3cret",
    )
}

fn jwt_settings() -> Settings {
    Settings { accept: AnswerFormat::AccessTokenJwt, ..settings() }
}

/// A JWS with the given header and payload and a dummy signature (never verified here).
fn jws(header: &Value, payload: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(payload.to_string().as_bytes()),
        b64::encode(b"not-a-real-signature")
    )
}

fn at_jwt(exp: u64) -> String {
    jws(&json!({"alg": "RS256", "typ": "at+jwt", "kid": "k1"}), &json!({"sub": "alice", "exp": exp, "scope": "a b"}))
}

fn reply(status: Option<u16>, content_type: Option<&str>, body: &[u8]) -> Reply {
    let mut headers = Vec::new();
    if let Some(ct) = content_type {
        headers.push(("content-type".to_string(), ct.to_string()));
    }
    Reply { status, headers, body: body.to_vec() }
}

fn json_reply(body: &Value) -> Reply {
    reply(Some(200), Some("application/json"), body.to_string().as_bytes())
}

fn with_header(mut r: Reply, name: &str, value: &str) -> Reply {
    r.headers.push((name.to_string(), value.to_string()));
    r
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[test]
fn opaque_detection() {
    let jwt = at_jwt(NOW + 60);
    assert!(!is_opaque(&jwt));
    for opaque in [
        "2YotnFZFEjr1zCsicMWpAA",
        "ory_at_abc.def",
        "a.b.c",
        "a.b.c.d.e",
        "",
        "..",
        // A JSON header without alg, or with a non-string alg.
        &format!("{}.e30.c2ln", b64::encode(br#"{"typ":"JWT"}"#)),
        &format!("{}.e30.c2ln", b64::encode(br#"{"alg":1}"#)),
        // Not an object.
        &format!("{}.e30.c2ln", b64::encode(br#"["alg"]"#)),
        // Padded base64 is not base64url-without-padding.
        "eyJhbGciOiJSUzI1NiJ9=.e30.c2ln",
    ] {
        assert!(is_opaque(opaque), "{opaque:?} should be opaque");
    }
    // The payload is never parsed: a garbage payload still makes a JWS.
    assert!(!is_opaque(&format!("{}.!!!.x", b64::encode(br#"{"alg":"none"}"#))));
}

#[test]
fn candidates_and_shape() {
    let s = Settings { opaque_prefix: Some("ory_at_".into()), ..settings() };
    assert!(is_candidate(&s, "ory_at_abc"));
    assert!(!is_candidate(&s, "other"));
    assert!(is_candidate(&settings(), "anything"));
    assert!(!is_candidate(&settings(), &at_jwt(NOW)));

    assert!(is_well_formed(&s, "abc-._~+/=="));
    assert!(!is_well_formed(&s, ""));
    assert!(!is_well_formed(&s, "=="));
    assert!(!is_well_formed(&s, "a b"));
    assert!(!is_well_formed(&s, "a=b"));
    assert!(!is_well_formed(&s, "é"));
    assert!(!is_well_formed(&s, &"a".repeat(DEFAULT_MAX_TOKEN_BYTES + 1)));
    assert!(is_well_formed(&s, &"a".repeat(DEFAULT_MAX_TOKEN_BYTES)));
}

// ---------------------------------------------------------------------------------------------
// Request

#[test]
fn request_shape() {
    let c = request(&settings(), "2YotnFZFEjr1zCsicMWpAA");
    assert_eq!(c.cluster, "idp");
    assert_eq!(c.method, "POST");
    assert_eq!(c.authority, "idp.example.com");
    assert_eq!(c.path, "/oauth/introspect");
    assert_eq!(c.timeout_ms, 1000);
    assert_eq!(c.body.as_deref(), Some(&b"token=2YotnFZFEjr1zCsicMWpAA&token_type_hint=access_token"[..]));
    let h = |n: &str| c.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(h("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(h("accept"), Some("application/json"));
    // base64("gateway:s3cret")
    assert_eq!(h("authorization"), Some("Basic Z2F0ZXdheTpzM2NyZXQ="));
    assert!(c.headers.iter().all(|(k, _)| !k.starts_with(':')));

    let c = request(&jwt_settings(), "t");
    let accept = c.headers.iter().find(|(k, _)| k == "accept").map(|(_, v)| v.as_str());
    assert_eq!(accept, Some("application/jwt"), "exactly one media type");
    let c = request(&Settings { accept: AnswerFormat::IntrospectionJwt, ..settings() }, "t");
    let accept = c.headers.iter().find(|(k, _)| k == "accept").map(|(_, v)| v.as_str());
    assert_eq!(accept, Some("application/token-introspection+jwt"), "RFC 9701 §4");
}

#[test]
fn token_is_percent_encoded() {
    let c = request(&settings(), "a+b/c=d&e f~g.h_i-j\u{e9}%");
    assert_eq!(
        String::from_utf8(c.body.unwrap()).unwrap(),
        "token=a%2Bb%2Fc%3Dd%26e+f~g.h_i-j%C3%A9%25&token_type_hint=access_token"
    );
}

#[test]
fn basic_credentials_are_form_encoded_first() {
    // RFC 6749 §2.3.1: urlencode each, then base64("id:secret").
    let header = basic_authorization("my client:1", "p@ss:w+rd/é");
    let encoded = header.strip_prefix("Basic ").unwrap();
    let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
    assert_eq!(decoded, "my+client%3A1:p%40ss%3Aw%2Brd%2F%C3%A9");
    // Exactly one unencoded colon separates the two.
    assert_eq!(decoded.matches(':').count(), 1);
}

#[test]
fn client_secret_post() {
    let s = Settings { client_auth: ClientAuth::Post, client_secret: "a&b=c".into(), ..settings() };
    let c = request(&s, "tok");
    assert!(c.headers.iter().all(|(k, _)| k != "authorization"));
    assert_eq!(
        String::from_utf8(c.body.unwrap()).unwrap(),
        "token=tok&token_type_hint=access_token&client_id=gateway&client_secret=a%26b%3Dc"
    );
}

#[test]
fn debug_never_prints_the_secret() {
    let text = format!("{:?}", settings());
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("redacted"));
}

// ---------------------------------------------------------------------------------------------
// Answers

#[derive(Debug)]
enum Want {
    Active { jwt: bool, ttl_ms: u64 },
    Inactive,
    Err(IntrospectionError),
}

#[test]
fn answer_table() {
    use IntrospectionError as E;
    let jwt_ok = at_jwt(NOW + 120);
    let rfc9701 = |ti: Value| {
        jws(
            &json!({"alg": "ES256", "typ": "token-introspection+jwt"}),
            &json!({"iss": "https://idp", "aud": "gateway", "iat": NOW, "token_introspection": ti}),
        )
    };
    let rfc9701_active = rfc9701(json!({"active": true, "sub": "bob", "client_id": "app", "exp": NOW + 30}));
    let big = format!(r#"{{"active":true,"pad":"{}"}}"#, "x".repeat(DEFAULT_MAX_RESPONSE_BYTES));
    let cases: Vec<(&str, Settings, Reply, Want)> = vec![
        (
            "json active",
            settings(),
            json_reply(&json!({"active": true, "sub": "u", "client_id": "c", "exp": NOW + 60})),
            Want::Active { jwt: false, ttl_ms: 60_000 },
        ),
        (
            "json active, charset, no exp",
            settings(),
            reply(Some(200), Some("Application/JSON; charset=utf-8"), br#"{"active":true}"#),
            Want::Active { jwt: false, ttl_ms: DEFAULT_CACHE_DURATION_MS },
        ),
        ("json inactive", settings(), json_reply(&json!({"active": false})), Want::Inactive),
        ("json active but expired", settings(), json_reply(&json!({"active": true, "exp": NOW})), Want::Inactive),
        ("missing active", settings(), json_reply(&json!({"sub": "u"})), Want::Err(E::MalformedActive)),
        ("active as string", settings(), json_reply(&json!({"active": "true"})), Want::Err(E::MalformedActive)),
        ("active null", settings(), json_reply(&json!({"active": null})), Want::Err(E::MalformedActive)),
        (
            "exp as string",
            settings(),
            json_reply(&json!({"active": true, "exp": "soon"})),
            Want::Err(E::MalformedClaims),
        ),
        (
            "duplicate active",
            settings(),
            reply(Some(200), Some("application/json"), br#"{"active":false,"active":true}"#),
            Want::Err(E::MalformedBody),
        ),
        (
            "garbage",
            settings(),
            reply(Some(200), Some("application/json"), b"<html>oops</html>"),
            Want::Err(E::MalformedBody),
        ),
        ("empty body", settings(), reply(Some(200), Some("application/json"), b""), Want::Err(E::MalformedBody)),
        ("array", settings(), reply(Some(200), Some("application/json"), b"[true]"), Want::Err(E::MalformedBody)),
        (
            "oversized",
            settings(),
            reply(Some(200), Some("application/json"), big.as_bytes()),
            Want::Err(E::TooLarge { len: big.len() }),
        ),
        ("401", settings(), reply(Some(401), None, b""), Want::Err(E::BadClientCredentials { status: 401 })),
        (
            "403 with a json body",
            settings(),
            json_reply(&json!({"active": false})).clone_with_status(403),
            Want::Err(E::BadClientCredentials { status: 403 }),
        ),
        (
            "500",
            settings(),
            reply(Some(500), None, b""),
            Want::Err(E::ServerError { status: 500, retry_after_s: None }),
        ),
        (
            "503 retry-after",
            settings(),
            with_header(reply(Some(503), None, b""), "Retry-After", "7"),
            Want::Err(E::ServerError { status: 503, retry_after_s: Some(7) }),
        ),
        ("no status", settings(), reply(None, None, b""), Want::Err(E::NoResponse)),
        (
            "429",
            settings(),
            with_header(reply(Some(429), None, b""), "retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
            Want::Err(E::Throttled { retry_after_s: None }),
        ),
        ("400", settings(), reply(Some(400), None, b""), Want::Err(E::UnexpectedStatus { status: 400 })),
        ("404", settings(), reply(Some(404), None, b""), Want::Err(E::UnexpectedStatus { status: 404 })),
        ("302", settings(), reply(Some(302), None, b""), Want::Err(E::UnexpectedStatus { status: 302 })),
        (
            "204 without accept_jwt",
            settings(),
            reply(Some(204), None, b""),
            Want::Err(E::UnexpectedStatus { status: 204 }),
        ),
        ("204 phantom convention", jwt_settings(), reply(Some(204), None, b""), Want::Inactive),
        (
            "wrong content type",
            settings(),
            reply(Some(200), Some("text/html"), br#"{"active":true}"#),
            Want::Err(E::ContentType),
        ),
        ("missing content type", settings(), reply(Some(200), None, br#"{"active":true}"#), Want::Err(E::ContentType)),
        (
            "jwt not asked for",
            settings(),
            reply(Some(200), Some("application/jwt"), jwt_ok.as_bytes()),
            Want::Err(E::ContentType),
        ),
        (
            "bare jwt with exp",
            jwt_settings(),
            reply(Some(200), Some("application/jwt"), format!("{jwt_ok}\r\n").as_bytes()),
            Want::Active { jwt: true, ttl_ms: 120_000 },
        ),
        (
            "bare jwt expired",
            jwt_settings(),
            reply(Some(200), Some("application/jwt"), at_jwt(NOW - 1).as_bytes()),
            Want::Inactive,
        ),
        (
            "json answer to a jwt request",
            jwt_settings(),
            json_reply(&json!({"active": true})),
            Want::Active { jwt: false, ttl_ms: DEFAULT_CACHE_DURATION_MS },
        ),
        (
            "rfc 9701 active",
            jwt_settings(),
            reply(Some(200), Some("application/token-introspection+jwt"), rfc9701_active.as_bytes()),
            Want::Active { jwt: false, ttl_ms: 30_000 },
        ),
        (
            "rfc 9701 inactive",
            jwt_settings(),
            reply(Some(200), Some("application/token-introspection+jwt"), rfc9701(json!({"active": false})).as_bytes()),
            Want::Inactive,
        ),
        (
            "rfc 9701 (draft) under application/jwt",
            jwt_settings(),
            reply(Some(200), Some("application/jwt"), rfc9701_active.as_bytes()),
            Want::Active { jwt: false, ttl_ms: 30_000 },
        ),
        (
            "rfc 9701 without token_introspection",
            jwt_settings(),
            reply(Some(200), Some("application/token-introspection+jwt"), jwt_ok.as_bytes()),
            Want::Err(E::MalformedJwt),
        ),
        (
            "typ token-introspection+jwt without the claim is never forwarded",
            jwt_settings(),
            reply(
                Some(200),
                Some("application/jwt"),
                jws(&json!({"alg": "RS256", "typ": "token-introspection+jwt"}), &json!({"sub": "x"})).as_bytes(),
            ),
            Want::Err(E::MalformedJwt),
        ),
        (
            "rfc 9701 active missing",
            jwt_settings(),
            reply(Some(200), Some("application/token-introspection+jwt"), rfc9701(json!({"sub": "x"})).as_bytes()),
            Want::Err(E::MalformedActive),
        ),
        (
            "jwt with garbage payload",
            jwt_settings(),
            reply(
                Some(200),
                Some("application/jwt"),
                format!("{}.bm90IGpzb24.c2ln", b64::encode(br#"{"alg":"RS256"}"#)).as_bytes(),
            ),
            Want::Err(E::MalformedJwt),
        ),
        (
            "jwt not a jws",
            jwt_settings(),
            reply(Some(200), Some("application/jwt"), b"opaque-again"),
            Want::Err(E::MalformedJwt),
        ),
        (
            "jwt unsigned",
            jwt_settings(),
            reply(
                Some(200),
                Some("application/jwt"),
                format!("{}.{}.", b64::encode(br#"{"alg":"none"}"#), b64::encode(b"{}")).as_bytes(),
            ),
            Want::Err(E::MalformedJwt),
        ),
        (
            "jwt not utf-8",
            jwt_settings(),
            reply(Some(200), Some("application/jwt"), &[0xff, 0xfe, b'.']),
            Want::Err(E::MalformedJwt),
        ),
    ];
    for (name, s, r, want) in cases {
        let got = parse_reply(&s, &r, NOW);
        match (&want, &got) {
            (Want::Active { jwt, ttl_ms }, Ok(i)) => {
                assert!(i.active, "{name}: {got:?}");
                assert_eq!(i.jwt.is_some(), *jwt, "{name}: {got:?}");
                assert_eq!(i.ttl_ms, *ttl_ms, "{name}");
            }
            (Want::Inactive, Ok(i)) => {
                assert!(!i.active, "{name}: {got:?}");
                assert!(i.claims.is_empty() && i.jwt.is_none() && i.response_jwt.is_none(), "{name}");
                assert_eq!(i.ttl_ms, DEFAULT_NEGATIVE_CACHE_DURATION_MS, "{name}");
            }
            (Want::Err(e), Err(g)) => assert_eq!(e, g, "{name}"),
            _ => panic!("{name}: want {want:?}, got {got:?}"),
        }
    }
}

trait WithStatus {
    fn clone_with_status(&self, status: u16) -> Reply;
}

impl WithStatus for Reply {
    fn clone_with_status(&self, status: u16) -> Reply {
        Reply { status: Some(status), ..self.clone() }
    }
}

#[test]
fn a_jwt_answer_saying_inactive_at_top_level_is_inactive() {
    // Was read as active ("issued at all means active") and cached for cache_duration.
    let s = jwt_settings();
    let body = jws(&json!({"alg": "RS256", "typ": "JWT"}), &json!({"active": false, "sub": "alice", "exp": NOW + 600}));
    let got = parse_reply(&s, &reply(Some(200), Some("application/jwt"), body.as_bytes()), NOW).unwrap();
    assert!(!got.active);
    assert!(got.jwt.is_none() && got.claims.is_empty());
    let body = jws(&json!({"alg": "RS256", "typ": "JWT"}), &json!({"active": "no", "exp": NOW + 600}));
    assert_eq!(
        parse_reply(&s, &reply(Some(200), Some("application/jwt"), body.as_bytes()), NOW).unwrap_err(),
        IntrospectionError::MalformedActive
    );
    let body = jws(&json!({"alg": "RS256", "typ": "JWT"}), &json!({"active": true, "exp": NOW + 600}));
    assert!(parse_reply(&s, &reply(Some(200), Some("application/jwt"), body.as_bytes()), NOW).unwrap().active);
}

#[test]
fn answers_carry_what_the_pipeline_needs() {
    let s = jwt_settings();
    let token = at_jwt(NOW + 120);
    let got = parse_reply(&s, &reply(Some(200), Some("application/jwt"), token.as_bytes()), NOW).unwrap();
    assert_eq!(got.jwt.as_deref(), Some(token.as_str()));
    assert_eq!(got.subject(), Some("alice"));
    assert_eq!(got.scopes(), vec!["a", "b"]);
    assert!(got.response_jwt.is_none());

    let signed = jws(
        &json!({"alg": "ES256", "typ": "token-introspection+jwt"}),
        &json!({"iss": "https://idp", "aud": "gateway", "token_introspection": {"active": true, "client_id": "app", "scope": "x"}}),
    );
    let got = parse_reply(&s, &reply(Some(200), Some("application/token-introspection+jwt"), signed.as_bytes()), NOW)
        .unwrap();
    assert_eq!(got.jwt, None, "an RFC 9701 response is never the upstream's access token");
    assert_eq!(got.response_jwt.as_deref(), Some(signed.as_str()));
    assert_eq!(got.client_id(), Some("app"));
    assert_eq!(got.scopes(), vec!["x"]);
    assert!(!got.claims.contains_key("iss"), "claims are the token's, not the response's");

    let got = parse_reply(&settings(), &json_reply(&json!({"active": true, "client_id": "c"})), NOW).unwrap();
    assert_eq!(got.claims.get("client_id"), Some(&json!("c")));
}

#[test]
fn error_classes() {
    let e = IntrospectionError::BadClientCredentials { status: 401 };
    assert!(e.is_bad_client_credentials());
    assert_eq!(e.to_string(), "introspection_bad_client_credentials (status 401)");
    assert!(!IntrospectionError::NoResponse.is_bad_client_credentials());
    assert_eq!(IntrospectionError::Throttled { retry_after_s: Some(3) }.retry_after_s(), Some(3));
    assert_eq!(IntrospectionError::MalformedBody.retry_after_s(), None);
}

// ---------------------------------------------------------------------------------------------
// Lifetimes

#[test]
fn ttl_table() {
    let cc = |v: &str| freshness(&with_header(Reply::default(), "Cache-Control", v));
    // (name, cache_duration_ms, exp, freshness, want)
    type Case = (&'static str, u64, Option<u64>, Freshness, Option<u64>);
    let cases: Vec<Case> = vec![
        ("configured only", 300_000, None, Freshness::Unspecified, Some(300_000)),
        ("exp sooner", 300_000, Some(NOW + 30), Freshness::Unspecified, Some(30_000)),
        ("configured sooner", 10_000, Some(NOW + 30), Freshness::Unspecified, Some(10_000)),
        ("max-age sooner", 300_000, Some(NOW + 30), cc("max-age=5"), Some(5_000)),
        ("max-age later", 300_000, Some(NOW + 30), cc("public, max-age=600"), Some(30_000)),
        ("s-maxage wins over max-age", 300_000, None, cc("max-age=5, s-maxage=20"), Some(20_000)),
        ("no-store", 300_000, Some(NOW + 30), cc("max-age=60, no-store"), Some(0)),
        ("no-cache", 300_000, None, cc("No-Cache"), Some(0)),
        ("invalid max-age", 300_000, None, cc("max-age=soon"), Some(0)),
        ("quoted max-age", 300_000, None, cc("max-age=\"7\""), Some(7_000)),
        ("huge max-age saturates", 300_000, None, cc("max-age=99999999999999999999999"), Some(300_000)),
        ("huge exp saturates", u64::MAX, Some(u64::MAX), Freshness::Unspecified, Some(u64::MAX)),
        ("expired", 300_000, Some(NOW - 1), Freshness::Unspecified, None),
        ("expires now", 300_000, Some(NOW), Freshness::Unspecified, None),
        ("one second left", 300_000, Some(NOW + 1), Freshness::Unspecified, Some(1_000)),
    ];
    for (name, configured, exp, fresh, want) in cases {
        assert_eq!(positive_ttl_ms(configured, exp, fresh, NOW), want, "{name}");
    }
    assert_eq!(freshness(&Reply::default()), Freshness::Unspecified);
    assert_eq!(cc("private"), Freshness::Unspecified);
    // Several headers: the smallest max-age.
    let two = with_header(with_header(Reply::default(), "cache-control", "max-age=9"), "cache-control", "max-age=4");
    assert_eq!(freshness(&two), Freshness::MaxAge(4));
}

#[test]
fn cache_control_applies_to_answers() {
    let s = settings();
    let r = with_header(json_reply(&json!({"active": true, "exp": NOW + 60})), "cache-control", "max-age=5");
    assert_eq!(parse_reply(&s, &r, NOW).unwrap().ttl_ms, 5_000);
    let r = with_header(json_reply(&json!({"active": true})), "cache-control", "no-store");
    assert_eq!(parse_reply(&s, &r, NOW).unwrap().ttl_ms, 0);
    // Negative answers keep the negative duration: an inactive token never becomes active.
    let r = with_header(json_reply(&json!({"active": false})), "cache-control", "no-store");
    assert_eq!(parse_reply(&s, &r, NOW).unwrap().ttl_ms, DEFAULT_NEGATIVE_CACHE_DURATION_MS);
}

// ---------------------------------------------------------------------------------------------
// Shared cache

fn active_claims(ttl_ms: u64, sub: &str) -> Introspected {
    let mut claims = Map::new();
    claims.insert("active".into(), json!(true));
    claims.insert("sub".into(), json!(sub));
    Introspected { active: true, claims, jwt: None, response_jwt: None, ttl_ms }
}

#[test]
fn cache_round_trips_and_expires() {
    let s = MemStore::default();
    assert_eq!(cache_get(&s, 64, "tok-a", NOW_MS), None);
    let r = active_claims(60_000, "alice");
    cache_put(&s, 64, "tok-a", &r, NOW_MS);
    let hit = cache_get(&s, 64, "tok-a", NOW_MS + 1_000).unwrap();
    assert_eq!(hit, Introspected { ttl_ms: 59_000, ..r.clone() });
    assert_eq!(cache_get(&s, 64, "tok-b", NOW_MS), None);
    assert_eq!(cache_get(&s, 64, "tok-a", NOW_MS + 60_000), None, "expired");

    // A by-value JWT entry keeps the JWT and gives its claims back.
    let token = at_jwt(NOW + 120);
    let parsed =
        parse_reply(&jwt_settings(), &reply(Some(200), Some("application/jwt"), token.as_bytes()), NOW).unwrap();
    cache_put(&s, 64, "tok-c", &parsed, NOW_MS);
    let hit = cache_get(&s, 64, "tok-c", NOW_MS).unwrap();
    assert_eq!(hit.jwt.as_deref(), Some(token.as_str()));
    assert_eq!(hit.claims, parsed.claims);

    // Negative entries.
    cache_put(&s, 64, "tok-d", &Introspected::inactive(10_000), NOW_MS);
    let hit = cache_get(&s, 64, "tok-d", NOW_MS + 1).unwrap();
    assert!(!hit.active && hit.ttl_ms == 9_999);

    // RFC 9701 responses are not stored.
    let mut with_response = active_claims(60_000, "x");
    with_response.response_jwt = Some("a.b.c".into());
    cache_put(&s, 64, "tok-e", &with_response, NOW_MS);
    assert_eq!(cache_get(&s, 64, "tok-e", NOW_MS).unwrap().response_jwt, None);
}

#[test]
fn nothing_cached_without_ttl_or_slots() {
    let s = MemStore::default();
    cache_put(&s, 64, "t", &active_claims(0, "u"), NOW_MS);
    cache_put(&s, 0, "t", &active_claims(1_000, "u"), NOW_MS);
    assert!(s.is_empty());
    assert_eq!(cache_get(&s, 0, "t", NOW_MS), None);
}

#[test]
fn collisions_never_return_another_tokens_entry() {
    // One slot: every token competes for it.
    let s = MemStore::default();
    cache_put(&s, 1, "first", &active_claims(60_000, "first"), NOW_MS);
    assert_eq!(cache_get(&s, 1, "second", NOW_MS), None);
    cache_put(&s, 1, "second", &active_claims(120_000, "second"), NOW_MS);
    assert_eq!(cache_get(&s, 1, "second", NOW_MS).unwrap().subject(), Some("second"));
    assert_eq!(cache_get(&s, 1, "first", NOW_MS), None);
    // Two slots, many tokens: each hit is its own.
    let s = MemStore::default();
    for i in 0..50 {
        cache_put(&s, 2, &format!("tok-{i}"), &active_claims(60_000 + i, &format!("user-{i}")), NOW_MS);
    }
    for i in 0..50 {
        if let Some(hit) = cache_get(&s, 2, &format!("tok-{i}"), NOW_MS) {
            assert_eq!(hit.subject(), Some(format!("user-{i}").as_str()));
        }
    }
}

#[test]
fn eviction_prefers_expired_then_sooner_and_spares_longer_lived() {
    let s = MemStore::default();
    // One slot.
    cache_put(&s, 1, "long", &active_claims(300_000, "long"), NOW_MS);
    // A short-lived (negative) newcomer does not push out a longer-lived entry...
    cache_put(&s, 1, "bad", &Introspected::inactive(10_000), NOW_MS);
    assert!(cache_get(&s, 1, "long", NOW_MS).is_some());
    assert!(cache_get(&s, 1, "bad", NOW_MS).is_none());
    // ...a longer-lived one does.
    cache_put(&s, 1, "longer", &active_claims(400_000, "longer"), NOW_MS);
    assert!(cache_get(&s, 1, "longer", NOW_MS).is_some());
    // Once expired, anything may take the slot.
    cache_put(&s, 1, "bad", &Introspected::inactive(10_000), NOW_MS + 400_000);
    assert!(cache_get(&s, 1, "bad", NOW_MS + 400_001).is_some());
    // A token refreshes its own entry even with a shorter lifetime.
    cache_put(&s, 1, "bad", &Introspected::inactive(1_000), NOW_MS + 400_001);
    assert_eq!(cache_get(&s, 1, "bad", NOW_MS + 400_001).unwrap().ttl_ms, 1_000);
}

#[test]
fn key_count_stays_bounded() {
    let s = MemStore::default();
    let slots = 256u64;
    for i in 0..100_000u64 {
        let token = format!("opaque-{i}");
        let now = NOW_MS + i;
        if try_begin(&s, slots, &token, now, 1_000) {
            cache_put(&s, slots, &token, &active_claims(5_000, "u"), now);
            end(&s, slots, &token);
        }
    }
    assert!(s.len() as u64 <= 2 * slots, "{} keys > {}", s.len(), 2 * slots);
}

#[test]
fn oversized_entries_are_not_cached() {
    let s = MemStore::default();
    let mut r = active_claims(60_000, "u");
    r.claims.insert("pad".into(), json!("x".repeat(MAX_ENTRY_BYTES)));
    cache_put(&s, 8, "fat", &r, NOW_MS);
    assert!(s.is_empty());
    assert_eq!(cache_get(&s, 8, "fat", NOW_MS), None);
}

#[test]
fn the_raw_token_is_never_stored() {
    let s = MemStore::default();
    let token = "very-secret-opaque-token-value";
    assert!(try_begin(&s, 16, token, NOW_MS, 1_000));
    cache_put(&s, 16, token, &active_claims(60_000, "u"), NOW_MS);
    for i in 0..16 {
        for key in [cache_key(i), lease_key(i)] {
            assert!(!key.contains(token));
            if let (Some(v), _) = s.get(&key) {
                assert!(!v.windows(token.len()).any(|w| w == token.as_bytes()));
            }
        }
    }
}

#[test]
fn garbage_slots_are_misses() {
    let s = MemStore::default();
    for i in 0..4 {
        s.set(&cache_key(i), b"garbage", 0).unwrap();
        s.set(&lease_key(i), b"junk", 0).unwrap();
    }
    assert_eq!(cache_get(&s, 4, "t", NOW_MS), None);
    cache_put(&s, 4, "t", &active_claims(1_000, "u"), NOW_MS);
    assert!(cache_get(&s, 4, "t", NOW_MS).is_some());
    assert!(try_begin(&s, 4, "t", NOW_MS, 1_000));
}

// ---------------------------------------------------------------------------------------------
// Single flight

#[test]
fn lease_is_exclusive_per_token_and_expires() {
    let s = MemStore::default();
    assert!(try_begin(&s, 64, "tok", NOW_MS, 1_000));
    assert!(!try_begin(&s, 64, "tok", NOW_MS + 10, 1_000), "a second worker waits");
    assert!(!try_begin(&s, 64, "tok", NOW_MS + 999, 1_000));
    assert!(try_begin(&s, 64, "tok", NOW_MS + 1_000, 1_000), "an expired lease is taken over");
    end(&s, 64, "tok");
    assert!(try_begin(&s, 64, "tok", NOW_MS + 1_001, 1_000), "ended");
}

#[test]
fn a_colliding_token_is_never_told_to_wait() {
    // One slot: two tokens share the lease key.
    let s = MemStore::default();
    assert!(try_begin(&s, 1, "a", NOW_MS, 1_000));
    assert!(try_begin(&s, 1, "b", NOW_MS, 1_000), "b proceeds untracked");
    // b's end does not release a's lease.
    end(&s, 1, "b");
    assert!(!try_begin(&s, 1, "a", NOW_MS + 1, 1_000));
    end(&s, 1, "a");
    assert!(try_begin(&s, 1, "a", NOW_MS + 2, 1_000));
}

#[test]
fn lease_with_no_slots_always_proceeds() {
    let s = MemStore::default();
    assert!(try_begin(&s, 0, "t", NOW_MS, 1_000));
    assert!(try_begin(&s, 0, "t", NOW_MS, 1_000));
    end(&s, 0, "t");
    assert!(s.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Properties

fn header_strategy() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("content-type".to_string()),
            Just("Content-Type".to_string()),
            Just("cache-control".to_string()),
            Just("retry-after".to_string()),
            "[a-z-]{1,12}",
        ],
        prop_oneof![
            Just("application/json".to_string()),
            Just("application/jwt".to_string()),
            Just("application/token-introspection+jwt; charset=utf-8".to_string()),
            Just("max-age=18446744073709551616, s-maxage=\"".to_string()),
            ".{0,40}",
        ],
    )
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        "[ -~]{0,200}".prop_map(String::into_bytes),
        (any::<bool>(), any::<i64>(), ".{0,20}")
            .prop_map(|(a, e, s)| { json!({"active": a, "exp": e, "sub": s, "scope": s}).to_string().into_bytes() }),
        (".{0,40}", ".{0,60}", "[A-Za-z0-9_-]{0,20}").prop_map(|(h, p, sig)| {
            format!("{}.{}.{}", b64::encode(h.as_bytes()), b64::encode(p.as_bytes()), sig).into_bytes()
        }),
        (any::<bool>(), any::<u64>()).prop_map(|(a, exp)| {
            jws(&json!({"alg": "RS256"}), &json!({"token_introspection": {"active": a, "exp": exp}})).into_bytes()
        }),
    ]
}

proptest! {
    #[test]
    fn parse_reply_never_panics(
        status in proptest::option::of(prop_oneof![Just(200u16), Just(204), Just(401), Just(429), Just(503), any::<u16>()]),
        headers in proptest::collection::vec(header_strategy(), 0..4),
        body in body_strategy(),
        accept_jwt in any::<bool>(),
        now in any::<u64>(),
    ) {
        let accept = if accept_jwt { AnswerFormat::IntrospectionJwt } else { AnswerFormat::Json };
        let s = Settings { accept, max_response_bytes: 128, ..settings() };
        let r = Reply { status, headers, body };
        if let Ok(i) = parse_reply(&s, &r, now) {
            prop_assert!(i.active || (i.claims.is_empty() && i.jwt.is_none()));
            // Only a 200 or the 204 convention can say anything about the token.
            prop_assert!(matches!(r.status, Some(200) | Some(204)));
        }
    }

    #[test]
    fn opaque_detection_never_panics(token in ".{0,200}") {
        let _ = is_opaque(&token);
        let _ = is_well_formed(&settings(), &token);
    }

    #[test]
    fn cache_round_trips_any_claims(sub in ".{0,64}", ttl in 1u64..1_000_000, slots in 1u64..8) {
        let s = MemStore::default();
        let r = active_claims(ttl, &sub);
        cache_put(&s, slots, &sub, &r, NOW_MS);
        let hit = cache_get(&s, slots, &sub, NOW_MS).unwrap();
        prop_assert_eq!(hit, r);
    }
}
