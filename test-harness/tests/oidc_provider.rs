//! Interoperability with an independent OpenID Provider: panva's `oidc-provider` (npm, run by
//! Node on 127.0.0.1, see `test-harness/oidc/server.mjs`) issues RFC 9068 JWT access tokens
//! through the `client_credentials` grant, and a real Envoy (2 workers) with the compiled filter
//! verifies them with keys fetched from the provider: through `remote_jwks` (the `jwks_uri` read
//! from the provider's discovery document), through OIDC discovery, with several signing
//! algorithms, and across a key rotation at the provider.
//!
//! Needs `make node-deps` (the Node peer), `make envoy` and `make build`.

use std::time::{Duration, Instant};

use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::Gateway;
use portcullis_harness::http;
use portcullis_harness::oidc::{jwt_claims, jwt_header, OidcProvider, CLIENT_ID, RESOURCE};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

/// How long the first verified request may wait for the filter's first key fetch.
const KEYS_READY: Duration = Duration::from_secs(5);

fn start_oidc(alg: &str) -> OidcProvider {
    OidcProvider::start_with_alg(alg).unwrap_or_else(|e| panic!("{e}"))
}

fn start_envoy(oidc: &OidcProvider, upstream: &EchoUpstream, provider: Value) -> Envoy {
    let plugin = json!({"realm": "orders", "providers": {"oidc": provider}});
    Gateway::new(&plugin).cluster("upstream", upstream.port).cluster("oidc", oidc.port).start()
}

fn claim_headers() -> Value {
    json!([
        {"header_name": "x-client-id", "claim_name": "client_id"},
        {"header_name": "x-scope", "claim_name": "scope"},
        {"header_name": "x-sub", "claim_name": "sub"}
    ])
}

/// A Portcullis provider with `remote_jwks` at the provider's `jwks_uri` (from discovery).
fn remote_jwks_provider(oidc: &OidcProvider) -> Value {
    json!({
        "issuer": oidc.issuer(),
        "audiences": [RESOURCE],
        "remote_jwks": {
            "http_uri": {"uri": oidc.jwks_uri(), "cluster": "oidc", "timeout": "2s"},
            "cache_duration": "300s",
            "unknown_kid_refresh_interval": "1s"
        },
        "claim_to_headers": claim_headers()
    })
}

fn get(envoy: &Envoy, token: &str) -> http::Response {
    http::get(&envoy.url("/orders"), &[("authorization", &format!("Bearer {token}"))]).expect("request through Envoy")
}

/// Sends `token` until the answer is not 503 (keys not fetched yet) or `KEYS_READY` passes.
fn get_once_keys_ready(envoy: &Envoy, token: &str) -> http::Response {
    let deadline = Instant::now() + KEYS_READY;
    loop {
        let r = get(envoy, token);
        if r.status != 503 || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `token` until it is answered 200 or `within` passes; returns the last answer.
fn get_until_ok(envoy: &Envoy, token: &str, within: Duration) -> http::Response {
    let deadline = Instant::now() + within;
    loop {
        let r = get(envoy, token);
        if r.status == 200 || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The token with one character of its signature changed.
fn tamper_signature(token: &str) -> String {
    let (head, sig) = token.rsplit_once('.').expect("compact JWS");
    let mut sig: Vec<u8> = sig.bytes().collect();
    let i = sig.len() / 2;
    sig[i] = if sig[i] == b'A' { b'B' } else { b'A' };
    format!("{head}.{}", String::from_utf8(sig).expect("ascii"))
}

/// The token with its payload's `scope` changed (signature kept).
fn tamper_payload(token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = jwt_claims(token);
    claims["scope"] = json!("orders:read orders:admin");
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

fn assert_verified(r: &http::Response, token: &str) {
    assert_eq!(r.status, 200, "token {:?} refused: {}", jwt_header(token), r.text());
    let seen = r.json();
    assert_eq!(seen["headers"]["x-client-id"], CLIENT_ID, "{seen}");
    assert_eq!(seen["headers"]["x-sub"], CLIENT_ID, "{seen}");
    assert_eq!(seen["headers"]["x-scope"], "orders:read", "{seen}");
    assert!(seen["headers"].get("authorization").is_none(), "credential stripped by default: {seen}");
}

#[test]
fn peer_issues_jwt_and_opaque_tokens_and_introspects() {
    let oidc = start_oidc("RS256");
    let d = oidc.discovery();
    assert_eq!(d["issuer"], oidc.issuer());
    assert!(d["grant_types_supported"].as_array().unwrap().contains(&json!("client_credentials")), "{d}");
    assert!(d["introspection_endpoint"].is_string() && d["revocation_endpoint"].is_string(), "{d}");

    // With the resource indicator: an RFC 9068 JWT access token.
    let jwt = oidc.client_credentials(Some(RESOURCE), "orders:read");
    let h = jwt_header(&jwt);
    assert_eq!((h["alg"].as_str(), h["typ"].as_str()), (Some("RS256"), Some("at+jwt")), "{h}");
    assert_eq!(h["kid"], oidc.current_kid("RS256"));
    let c = jwt_claims(&jwt);
    assert_eq!((c["iss"].as_str(), c["aud"].as_str()), (Some(oidc.issuer().as_str()), Some(RESOURCE)), "{c}");
    assert_eq!((c["client_id"].as_str(), c["scope"].as_str()), (Some(CLIENT_ID), Some("orders:read")), "{c}");
    // JWT access tokens are not introspectable at oidc-provider.
    assert_eq!(oidc.introspect(&jwt)["error"], "unsupported_token_type");
    // An unknown resource is refused.
    let (status, v) = oidc.token_response(Some("urn:other"), "orders:read").unwrap();
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_target")), "{v}");

    // Without a resource: an opaque token, introspectable (JSON and RFC 9701 JWT) and revocable.
    let opaque = oidc.client_credentials(None, "orders:read");
    assert_eq!(opaque.split('.').count(), 1, "opaque: {opaque}");
    let i = oidc.introspect(&opaque);
    assert_eq!((i["active"].as_bool(), i["client_id"].as_str()), (Some(true), Some(CLIENT_ID)), "{i}");
    assert_eq!(i["scope"], "orders:read");
    let signed = oidc.introspect_jwt(&opaque);
    assert_eq!(jwt_header(&signed)["typ"], "token-introspection+jwt");
    let ic = jwt_claims(&signed);
    assert_eq!(ic["aud"], "gateway", "{ic}");
    assert_eq!(ic["token_introspection"]["active"], true, "{ic}");
    assert_eq!(ic["token_introspection"]["client_id"], CLIENT_ID, "{ic}");
    oidc.revoke(&opaque);
    assert_eq!(oidc.introspect(&opaque), json!({"active": false}));
}

#[test]
fn remote_jwks_from_discovered_jwks_uri_accepts_oidc_provider_tokens() {
    let oidc = start_oidc("RS256");
    let up = EchoUpstream::start();
    let envoy = start_envoy(&oidc, &up, remote_jwks_provider(&oidc));

    let token = oidc.client_credentials(Some(RESOURCE), "orders:read");
    assert_eq!(jwt_header(&token)["alg"], "RS256");
    let r = get_once_keys_ready(&envoy, &token);
    assert_verified(&r, &token);

    // Tampering with the signature or the payload is refused.
    for bad in [tamper_signature(&token), tamper_payload(&token)] {
        let r = get(&envoy, &bad);
        assert_eq!(r.status, 401, "tampered token accepted: {}", r.text());
        assert!(r.header("www-authenticate").unwrap_or_default().starts_with("Bearer realm=\"orders\""), "{r:?}");
    }
    // An opaque token from the same provider is not a JWT.
    let opaque = oidc.client_credentials(None, "orders:read");
    assert_eq!(get(&envoy, &opaque).status, 401);
    // The genuine token still passes, on both workers (several connections).
    for _ in 0..4 {
        assert_verified(&get(&envoy, &token), &token);
    }
}

#[test]
fn oidc_discovery_finds_the_keys() {
    let oidc = start_oidc("RS256");
    let up = EchoUpstream::start();
    let provider = json!({
        "issuer": oidc.issuer(),
        "audiences": [RESOURCE],
        "discovery": {"cluster": "oidc", "timeout": "2s"},
        "claim_to_headers": claim_headers()
    });
    let envoy = start_envoy(&oidc, &up, provider);

    let token = oidc.client_credentials(Some(RESOURCE), "orders:read");
    let r = get_once_keys_ready(&envoy, &token);
    assert_verified(&r, &token);
    assert_eq!(get(&envoy, &tamper_signature(&token)).status, 401);
}

#[test]
fn every_signing_algorithm_of_the_provider_verifies() {
    let oidc = start_oidc("ES256");
    let up = EchoUpstream::start();
    let envoy = start_envoy(&oidc, &up, remote_jwks_provider(&oidc));

    let token = oidc.client_credentials(Some(RESOURCE), "orders:read");
    assert_eq!(jwt_header(&token)["alg"], "ES256");
    assert_eq!(jwt_header(&token)["kid"], oidc.current_kid("ES256"));
    assert_verified(&get_once_keys_ready(&envoy, &token), &token);
    assert_eq!(get(&envoy, &tamper_signature(&token)).status, 401);

    for alg in ["PS256", "EdDSA", "RS256"] {
        oidc.set_alg(alg);
        let token = oidc.client_credentials(Some(RESOURCE), "orders:read");
        assert_eq!(jwt_header(&token)["alg"], alg);
        assert_verified(&get(&envoy, &token), &token);
        let r = get(&envoy, &tamper_signature(&token));
        assert_eq!(r.status, 401, "{alg}: tampered token accepted: {}", r.text());
    }
}

#[test]
fn key_rotation_at_the_provider_is_picked_up_on_unknown_kid() {
    let oidc = start_oidc("RS256");
    let up = EchoUpstream::start();
    let envoy = start_envoy(&oidc, &up, remote_jwks_provider(&oidc));

    let old = oidc.client_credentials(Some(RESOURCE), "orders:read");
    assert_verified(&get_once_keys_ready(&envoy, &old), &old);

    // Rotate, keeping the old key published: the new kid is unknown to the filter's cache.
    let before = oidc.current_kid("RS256");
    let after = oidc.rotate();
    let new_kid = after["kids"]["RS256"].as_str().unwrap().to_string();
    assert_ne!(new_kid, before);
    let published: Vec<&str> = after["published"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(published.contains(&before.as_str()) && published.contains(&new_kid.as_str()), "{after}");

    let fresh = oidc.client_credentials(Some(RESOURCE), "orders:read");
    assert_eq!(jwt_header(&fresh)["kid"], new_kid.as_str());
    // `unknown_kid_refresh_interval` is 1 s; the refetch is asynchronous to the request.
    let r = get_until_ok(&envoy, &fresh, Duration::from_secs(5));
    assert_verified(&r, &fresh);
    // Both workers have the new key, and the old key (still published) still verifies.
    for _ in 0..4 {
        assert_verified(&get(&envoy, &fresh), &fresh);
        assert_verified(&get(&envoy, &old), &old);
    }

    // A second rotation that drops the old keys: the newest token is accepted again.
    let third = oidc.rotate_dropping_old();
    let third_kid = third["kids"]["RS256"].as_str().unwrap().to_string();
    assert_eq!(third["published"].as_array().unwrap().len(), 4, "{third}");
    let newest = oidc.client_credentials(Some(RESOURCE), "orders:read");
    assert_eq!(jwt_header(&newest)["kid"], third_kid.as_str());
    let r = get_until_ok(&envoy, &newest, Duration::from_secs(5));
    assert_verified(&r, &newest);
}
