//! Phantom tokens through a real Envoy with 2 workers: opaque tokens are introspected
//! (RFC 7662) and the upstream receives a by-value JWT or the claims; results are cached
//! across workers (one introspection for N requests, one at a time per token); inactive
//! tokens are 401, and a failing endpoint is 503 — never confused with an invalid token.

use std::time::{Duration, Instant};

use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::Gateway;
use portcullis_harness::http::{self, KeepAlive};
use portcullis_harness::idp::{now, Behavior, Endpoint, TestIdp};
use portcullis_harness::oidc::{self, OidcProvider};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

fn introspection(idp_path: &str, extra: Value) -> Value {
    let mut i = json!({
        "endpoint": {"cluster": "idp", "authority": "idp.test", "path": idp_path, "timeout": "0.5s"},
        "client_id": "gateway",
        "client_secret_env": "INTROSPECTION_SECRET",
        "upstream_header": {"name": "authorization", "value_prefix": "Bearer "},
        "claim_to_headers": [{"header_name": "x-client-id", "claim_name": "client_id"}],
        "cache_duration": "300s",
        "negative_cache_duration": "10s"
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        i[k] = v;
    }
    i
}

/// The filter in front of the echo upstream, introspecting at `idp_port` (cluster `idp`) with
/// the client secret `secret`.
fn start(idp_port: u16, up: &EchoUpstream, cfg: Value, secret: &str) -> Envoy {
    Gateway::new(&cfg).env("INTROSPECTION_SECRET", secret).cluster("upstream", up.port).cluster("idp", idp_port).start()
}

fn call(envoy: &Envoy, token: &str) -> http::Response {
    http::get(&envoy.url("/orders"), &[("authorization", &format!("Bearer {token}"))]).unwrap()
}

fn opaque(idp: &TestIdp, name: &str, client: &str) -> String {
    let token = format!("opaque-{name}-0123456789abcdef");
    idp.register_opaque(
        &token,
        json!({"client_id": client, "sub": "user-7", "scope": "orders:read", "exp": now() + 600}),
    );
    token
}

#[test]
fn json_answers_become_claims_upstream_and_are_cached_across_workers() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let envoy =
        start(idp.port, &up, json!({"introspection": introspection("/introspect", json!({}))}), "gateway-secret");
    let token = opaque(&idp, "a", "svc-a");
    for _ in 0..20 {
        let r = call(&envoy, &token);
        assert_eq!(r.status, 200, "{}", r.text());
        let h = &r.json()["headers"];
        assert_eq!(h["x-client-id"], "svc-a");
        assert_eq!(h["x-portcullis-client"], "svc-a");
        assert!(h.get("authorization").is_none(), "the opaque token never reaches the upstream");
        let claims: Value = serde_json::from_slice(
            &portcullis::wire::b64::decode(h["x-portcullis-token-claims"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "user-7");
    }
    assert_eq!(idp.hits(Endpoint::Introspect), 1, "one introspection for 20 requests on 2 workers");
    assert!(envoy.stat("wasmcustom.portcullis.introspection.cache_hit") >= 19);
    // A JWT-shaped token is not introspected (a provider would handle it; none is configured).
    let r = call(&envoy, "unknown-opaque-token-zzzzzzzz");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "urn:portcullis:problem:token_inactive");
}

#[test]
fn jwt_answers_are_verified_and_forwarded_by_value() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({
        "providers": {"idp": {"issuer": idp.issuer(), "local_jwks": {"inline_string": idp.public_jwks_for(&["rsa-a"])}}},
        "introspection": introspection("/introspect", json!({"response_format": "jwt", "verify_with": "idp"})),
        "requires": {"any": ["introspection"]}
    });
    let envoy = start(idp.port, &up, cfg, "gateway-secret");
    let token = opaque(&idp, "b", "svc-b");
    let r = call(&envoy, &token);
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = r.json()["headers"]["authorization"].as_str().unwrap().to_string();
    let jwt = auth.strip_prefix("Bearer ").unwrap();
    assert_eq!(jwt.split('.').count(), 3, "the upstream receives a by-value JWT");
    let claims = oidc::jwt_claims(jwt);
    assert_eq!((claims["client_id"].as_str(), claims["iss"].as_str()), (Some("svc-b"), Some(idp.issuer().as_str())));
}

#[test]
fn revocation_takes_effect_after_the_ttl_and_inactive_is_401() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({"introspection": introspection("/introspect", json!({"cache_duration": "1s"}))});
    let envoy = start(idp.port, &up, cfg, "gateway-secret");
    let token = opaque(&idp, "c", "svc-c");
    assert_eq!(call(&envoy, &token).status, 200);
    idp.revoke(&token);
    assert_eq!(call(&envoy, &token).status, 200, "cached until the TTL ends");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = 200;
    while Instant::now() < deadline && last == 200 {
        std::thread::sleep(Duration::from_millis(200));
        last = call(&envoy, &token).status;
    }
    assert_eq!(last, 401);
    let r = call(&envoy, &token);
    assert!(r.header("www-authenticate").unwrap().contains("error=\"invalid_token\""));
    let before = idp.hits(Endpoint::Introspect);
    assert_eq!(call(&envoy, &token).status, 401);
    assert_eq!(idp.hits(Endpoint::Introspect), before, "inactive results are cached negatively");
}

#[test]
fn one_introspection_at_a_time_per_token_across_workers() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let envoy =
        start(idp.port, &up, json!({"introspection": introspection("/introspect", json!({}))}), "gateway-secret");
    idp.set_behavior(Endpoint::Introspect, Behavior::Delay(Duration::from_millis(300)));
    let token = opaque(&idp, "d", "svc-d");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (url, token) = (envoy.url("/"), token.clone());
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(&url).unwrap();
                c.get("/orders", &[("authorization", &format!("Bearer {token}"))]).unwrap().status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses, vec![200; 8]);
    assert_eq!(idp.hits(Endpoint::Introspect), 1, "concurrent requests waited for the first introspection");
}

#[test]
fn a_failing_endpoint_is_503_never_401() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({"introspection": introspection("/introspect", json!({"negative_cache_duration": "0s"}))});
    let envoy = start(idp.port, &up, cfg, "gateway-secret");
    let faults = [
        Behavior::Status(500),
        Behavior::Status(503),
        Behavior::Garbage,
        Behavior::Close,
        Behavior::Stall,
        Behavior::Delay(Duration::from_millis(900)),
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        idp.set_behavior(Endpoint::Introspect, fault.clone());
        let token = opaque(&idp, &format!("e{i}"), "svc-e");
        let r = call(&envoy, &token);
        assert_eq!(r.status, 503, "{fault:?}: {}", r.text());
        assert!(r.header("retry-after").is_some());
        assert_eq!(r.json()["type"], "urn:portcullis:problem:introspection_unavailable");
        assert!(r.header("www-authenticate").is_none(), "{fault:?}: the caller's token is not at fault");
    }
    idp.set_behavior(Endpoint::Introspect, Behavior::Normal);
    let token = opaque(&idp, "ok", "svc-e");
    assert_eq!(call(&envoy, &token).status, 200, "failures are not cached");
}

#[test]
fn wrong_gateway_credentials_are_503_and_logged() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let envoy = start(idp.port, &up, json!({"introspection": introspection("/introspect", json!({}))}), "wrong-secret");
    let token = opaque(&idp, "f", "svc-f");
    let r = call(&envoy, &token);
    assert_eq!(r.status, 503);
    std::thread::sleep(Duration::from_millis(300));
    assert!(envoy.log().contains("refused our client credentials"), "{}", envoy.log());
    assert!(!envoy.log().contains("wrong-secret"), "the secret is never logged");
    assert!(!envoy.log().contains(&token), "the token is never logged");
}

#[test]
fn opaque_tokens_from_an_independent_openid_provider() {
    let op = OidcProvider::start().expect("oidc-provider starts (make node-deps)");
    let up = EchoUpstream::start();
    let cfg = json!({"introspection": introspection("/token/introspection", json!({}))});
    let envoy = start(op.port, &up, cfg, oidc::GATEWAY_CLIENT_SECRET);
    let token = op.client_credentials(None, "orders:read");
    assert_eq!(token.split('.').count(), 1, "an opaque token");
    let r = call(&envoy, &token);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log());
    assert_eq!(r.json()["headers"]["x-client-id"], oidc::CLIENT_ID);
    op.revoke(&token);
    let fresh = op.client_credentials(None, "orders:read");
    op.revoke(&fresh);
    assert_eq!(call(&envoy, &fresh).status, 401, "a revoked token is inactive");
}
