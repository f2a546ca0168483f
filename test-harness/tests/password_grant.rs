//! Password-grant identity checks through a real Envoy with 2 workers and two identity
//! backends where each user exists in only one: newest-first order and stop at the first
//! success (proved by the backends' hit log), extraInfo in the forwarded header and in the
//! issued token, the issued token accepted by a provider using Portcullis's own JWKS,
//! lockout and its expiry, a hanging backend bounded by its timeout, and strict input.

use std::time::{Duration, Instant};

use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::Gateway;
use portcullis_harness::http;
use portcullis_harness::idp::{two_backend_identities, Behavior, Endpoint, TestIdp};
use portcullis_harness::oidc::jwt_claims;
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

const FORM: &str = "application/x-www-form-urlencoded";

fn idp_with_users() -> TestIdp {
    let idp = TestIdp::start();
    idp.add_backend("legacy");
    idp.add_backend("ldap");
    idp.add_user("legacy", "alice", "pw-alice", Some(json!({"dept": "ops", "level": 3})));
    idp.add_user("ldap", "bob", "pw-bob", None);
    idp
}

fn grant(mode: &str, extra: Value) -> Value {
    let mut g = json!({
        "token_path": "/oauth/token",
        "identities": two_backend_identities(),
        "mode": mode
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        g[k] = v;
    }
    g
}

/// Forward mode: Portcullis relays accepted token requests to the token server (the echo
/// upstream here, which answers with what it received).
fn forward() -> Value {
    json!({"forward": {"token_endpoint": {"cluster": "upstream", "authority": "token.test", "path": "/oauth/token"}}})
}

/// The filter in front of the echo upstream (also the token server in forward mode), with
/// the identity backends reachable as `idp`.
fn gateway(idp: &TestIdp, up: &EchoUpstream, cfg: Value) -> Gateway {
    Gateway::new(&cfg).cluster("upstream", up.port).cluster("idp", idp.port)
}

fn login(envoy: &Envoy, user: &str, password: &str, extra_headers: &[(&str, &str)]) -> http::Response {
    let body = http::form_encode(&[("grant_type", "password"), ("username", user), ("password", password)]);
    let mut headers = vec![("content-type", FORM)];
    headers.extend_from_slice(extra_headers);
    http::post(&envoy.url("/oauth/token"), &headers, body.as_bytes()).unwrap()
}

#[test]
fn newest_first_stop_at_first_success_and_extra_info_forwarded() {
    let idp = idp_with_users();
    let up = EchoUpstream::start();
    let envoy = gateway(&idp, &up, json!({"password_grant": grant("forward", forward())})).start();

    let r = login(&envoy, "bob", "pw-bob", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        idp.backend_hits(),
        vec![("ldap".to_string(), "bob".to_string())],
        "newest first, stop at first success"
    );
    let seen = r.json();
    assert_eq!(seen["headers"]["x-portcullis-identity"], "ldap");
    assert!(seen["headers"].get("x-portcullis-extra-info").is_none(), "no extraInfo from ldap");

    idp.reset_hits();
    let r = login(
        &envoy,
        "alice",
        "pw-alice",
        &[("x-portcullis-extra-info", "forged"), ("x-portcullis-identity", "forged")],
    );
    assert_eq!(r.status, 200);
    let hits: Vec<String> = idp.backend_hits().into_iter().map(|(b, _)| b).collect();
    assert_eq!(hits, vec!["ldap", "legacy"], "401 from the newest means ask the next");
    let seen = r.json();
    assert_eq!(seen["headers"]["x-portcullis-identity"], "legacy");
    let extra: Value = serde_json::from_slice(
        &portcullis::wire::b64::decode(seen["headers"]["x-portcullis-extra-info"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(extra, json!({"dept": "ops", "level": 3}));
    assert!(seen["body"].as_str().unwrap().contains("username=alice"), "the token server gets the original body");

    // Unknown user / wrong password: every backend asked, RFC 6749 §5.2 answer, nothing upstream.
    let before = up.count();
    let r = login(&envoy, "alice", "wrong", &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "invalid_grant"}));
    assert_eq!(up.count(), before);
    assert!(!r.text().contains("wrong"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!envoy.log().contains("pw-alice") && !envoy.log().contains("wrong"), "passwords never logged");

    // Other grants pass through untouched; malformed ones are refused.
    let body = "grant_type=client_credentials&client_id=x&client_secret=y";
    let r = http::post(&envoy.url("/oauth/token"), &[("content-type", FORM)], body.as_bytes()).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], body);
    let r =
        http::post(&envoy.url("/oauth/token"), &[("content-type", FORM)], b"grant_type=password&username=bob").unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
    let r = http::post(&envoy.url("/oauth/token"), &[("content-type", "application/json")], b"{}").unwrap();
    assert_eq!(r.status, 400);
    let huge = format!("grant_type=password&username=bob&password={}", "x".repeat(20_000));
    let r = http::post(&envoy.url("/oauth/token"), &[("content-type", FORM)], huge.as_bytes()).unwrap();
    assert_eq!(r.status, 413);
}

/// Issue mode signing ES256 with `p256-a`, and a provider `gateway` that trusts that key on
/// `/orders`; the PEM goes in the VM environment variable `SIGNING_KEY`.
fn issuing(idp: &TestIdp) -> (Value, String) {
    let pem =
        std::fs::read_to_string(portcullis_harness::envoy::repo_root().join("test-harness/keys/p256-a.pem")).unwrap();
    let issue = json!({"issuer": "https://gateway.test", "audiences": ["orders-api"], "lifetime": "900s",
        "algorithm": "ES256", "signing_key_pem_env": "SIGNING_KEY", "kid": "p256-a", "jwks_path": "/.well-known/portcullis/jwks.json"});
    let cfg = json!({
        "password_grant": grant("issue", json!({"issue": issue})),
        "providers": {"gateway": {"issuer": "https://gateway.test", "audiences": ["orders-api"],
            "local_jwks": {"inline_string": idp.public_jwks_for(&["p256-a"])}}},
        "routes": [{"match": {"prefix": "/orders"}, "requires": {"any": ["gateway"]}}]
    });
    (cfg, pem)
}

/// Logs in through issue mode on `wasm`, then checks the token, the published key and the token
/// on a protected route.
fn issued_token_round_trip(wasm: &std::path::Path) {
    let idp = idp_with_users();
    let up = EchoUpstream::start();
    let (cfg, pem) = issuing(&idp);
    let envoy = gateway(&idp, &up, cfg).wasm(wasm).env("SIGNING_KEY", &pem).start();

    let r = login(&envoy, "alice", "pw-alice", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(900)));
    let token = body["access_token"].as_str().unwrap().to_string();
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["extraInfo"], json!({"dept": "ops", "level": 3}));
    assert_eq!(claims["idp"], "legacy");
    assert!(envoy.stat("wasmcustom.portcullis.grant.issued_native") == 1, "signed by Envoy's sign function");

    // Portcullis serves its own public JWKS; it matches the key the provider was given.
    let jwks = http::get(&envoy.url("/.well-known/portcullis/jwks.json"), &[]).unwrap().json();
    let ours: Value = serde_json::from_str(&idp.public_jwks_for(&["p256-a"])).unwrap();
    assert_eq!((&jwks["keys"][0]["x"], &jwks["keys"][0]["y"]), (&ours["keys"][0]["x"], &ours["keys"][0]["y"]));

    // The issued token is accepted on a protected route.
    let r = http::get(&envoy.url("/orders"), &[("authorization", &format!("Bearer {token}"))]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-portcullis-client"], "alice");
    assert_eq!(up.count(), 1, "the token request itself never reached the upstream");
}

#[test]
fn issued_tokens_carry_extra_info_and_pass_a_provider_using_our_jwks() {
    issued_token_round_trip(&portcullis_harness::envoy::wasm_path());
}

#[test]
fn lockout_engages_after_n_failures_and_lifts_after_the_block() {
    let idp = idp_with_users();
    let up = EchoUpstream::start();
    let mut lockout = forward();
    lockout["lockout"] = json!({"max_failures": 3, "window": "60s", "block": "2s"});
    let envoy = gateway(&idp, &up, json!({"password_grant": grant("forward", lockout)})).start();
    for _ in 0..3 {
        assert_eq!(login(&envoy, "bob", "nope", &[]).status, 400);
    }
    let hits = idp.backend_hits().len();
    let r = login(&envoy, "bob", "pw-bob", &[]);
    assert_eq!(r.status, 429, "locked: even the right password waits");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
    assert_eq!(idp.backend_hits().len(), hits, "no backend is called while blocked");
    assert_eq!(envoy.stat("wasmcustom.portcullis.grant.lockout_engaged"), 2, "per username and per address");
    std::thread::sleep(Duration::from_millis(300));
    let log = envoy.log();
    // The event shape of issue 14 (one JSON object per event, `kind`).
    assert!(log.contains("\"kind\":\"locked_out\""), "an event is emitted");
    assert!(!log.contains("\"bob\""), "the event carries a hash, not the username");
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(login(&envoy, "bob", "pw-bob", &[]).status, 200, "lifted after the block time");
}

#[test]
fn a_hanging_backend_is_bounded_by_its_timeout_and_failures_are_503() {
    let idp = idp_with_users();
    let up = EchoUpstream::start();
    let envoy = gateway(&idp, &up, json!({"password_grant": grant("forward", forward())})).start();
    idp.set_behavior(Endpoint::Backend("ldap".into()), Behavior::Stall);
    let t0 = Instant::now();
    let r = login(&envoy, "alice", "pw-alice", &[]);
    assert_eq!(r.status, 200, "the older backend still answers");
    assert!(t0.elapsed() < Duration::from_secs(5), "bounded by the 0.5 s backend timeout: {:?}", t0.elapsed());
    // Bob lives only in the hanging backend: not an invalid grant, a 503.
    let r = login(&envoy, "bob", "pw-bob", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert!(r.header("retry-after").is_some());
    idp.set_behavior(Endpoint::Backend("ldap".into()), Behavior::Normal);
    idp.set_behavior(Endpoint::Backend("legacy".into()), Behavior::Status(500));
    assert_eq!(login(&envoy, "alice", "pw-alice", &[]).status, 503);
    assert_eq!(login(&envoy, "bob", "pw-bob", &[]).status, 200);
}

/// `dist/portcullis-native.wasm` issues through Envoy's `sign` (it has no other signer) and
/// publishes the same public key, read from the PKCS#8 key without pure-Rust crypto.
#[test]
fn the_native_only_module_issues_through_envoy_sign() {
    issued_token_round_trip(&portcullis_harness::envoy::native_wasm_path());
}
