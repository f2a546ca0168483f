//! Remote key sets through a real Envoy with 2 workers: rotation picked up through an
//! unknown-`kid` refresh, the identity provider down at start (503, then recovery), down
//! after warm-up (cached keys keep working until `max_stale`, then 503), and a stalled JWKS
//! endpoint that does not stall other requests.

use std::time::{Duration, Instant};

use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::Gateway;
use portcullis_harness::http;
use portcullis_harness::idp::{Alg, Behavior, Endpoint, TestIdp};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

fn start(idp: &TestIdp, up: &EchoUpstream, remote_extra: Value) -> Envoy {
    let mut remote = json!({
        "http_uri": {"uri": idp.jwks_uri(), "cluster": "idp", "timeout": "1s"},
        "cache_duration": "300s"
    });
    for (k, v) in remote_extra.as_object().cloned().unwrap_or_default() {
        remote[k] = v;
    }
    let cfg = json!({
        "providers": {"corp": {"issuer": idp.issuer(), "audiences": ["orders-api"], "remote_jwks": remote}}
    });
    Gateway::new(&cfg).cluster("upstream", up.port).cluster("idp", idp.port).start()
}

fn call(envoy: &Envoy, token: &str) -> http::Response {
    http::get(&envoy.url("/orders"), &[("authorization", &format!("Bearer {token}"))]).unwrap()
}

/// Polls until `want` status or the deadline; returns the last response.
fn poll_status(envoy: &Envoy, token: &str, want: u16, within: Duration) -> http::Response {
    let deadline = Instant::now() + within;
    loop {
        let r = call(envoy, token);
        if r.status == want || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rotation_is_picked_up_through_an_unknown_kid_refresh() {
    let idp = TestIdp::start();
    idp.publish(&["rsa-a"]);
    let up = EchoUpstream::start();
    let envoy = start(&idp, &up, json!({"unknown_kid_refresh_interval": "1s"}));
    let a = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    assert_eq!(poll_status(&envoy, &a, 200, Duration::from_secs(5)).status, 200);
    let fetches_after_warmup = idp.hits(Endpoint::Jwks);
    assert!(fetches_after_warmup >= 1);

    // The identity provider rotates: rsa-b appears. The first request with it waits for one
    // early refresh and is accepted.
    idp.publish(&["rsa-a", "rsa-b"]);
    let b = idp.mint(Alg::RS256, "rsa-b", idp.default_claims("orders-api"));
    let r = call(&envoy, &b);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log());
    assert_eq!(idp.hits(Endpoint::Jwks), fetches_after_warmup + 1, "exactly one early refresh");
    assert!(envoy.stat("wasmcustom.portcullis.jwks.unknown_kid_refresh") >= 1);
    // Both workers now use the new set without fetching again.
    for _ in 0..10 {
        assert_eq!(call(&envoy, &b).status, 200);
    }
    assert_eq!(idp.hits(Endpoint::Jwks), fetches_after_warmup + 1);

    // A kid that does not exist: one refresh at most per interval, then 401.
    let c = idp.mint_with(Alg::RS256, "rsa-a", Some("no-such-kid"), None, idp.default_claims("orders-api"));
    let before = idp.hits(Endpoint::Jwks);
    for _ in 0..5 {
        let r = call(&envoy, &c);
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["type"], "urn:portcullis:problem:token_unknown_key");
    }
    assert!(idp.hits(Endpoint::Jwks) <= before + 1, "unknown kids cannot make Portcullis hammer the IdP");
}

#[test]
fn idp_down_at_start_gives_503_then_recovers() {
    let idp = TestIdp::start();
    idp.set_behavior(Endpoint::Jwks, Behavior::Status(500));
    let up = EchoUpstream::start();
    let envoy = start(&idp, &up, json!({}));
    let tok = idp.mint(Alg::ES256, "p256-a", idp.default_claims("orders-api"));
    std::thread::sleep(Duration::from_millis(500));
    let r = call(&envoy, &tok);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.json()["type"], "urn:portcullis:problem:keys_unavailable");
    assert!(r.header("www-authenticate").is_none(), "the caller's credential is not at fault");
    assert!(envoy.stat("wasmcustom.portcullis.jwks.fetch_failed") >= 1);
    idp.set_behavior(Endpoint::Jwks, Behavior::Normal);
    // Back-off is 1 s doubling; recovery must come within a few seconds.
    let r = poll_status(&envoy, &tok, 200, Duration::from_secs(10));
    assert_eq!(r.status, 200, "{}", envoy.log());
}

#[test]
fn idp_down_after_warmup_serves_cached_keys_until_max_stale() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let envoy = start(&idp, &up, json!({"cache_duration": "2s", "max_stale": "3s"}));
    let tok = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    assert_eq!(poll_status(&envoy, &tok, 200, Duration::from_secs(5)).status, 200);
    let warm = Instant::now();
    idp.set_behavior(Endpoint::Jwks, Behavior::Status(503));
    // Past cache_duration (2 s) but within max_stale: still served from the last good set.
    std::thread::sleep(Duration::from_millis(2500));
    let r = call(&envoy, &tok);
    assert_eq!(r.status, 200, "stale-if-error within max_stale");
    assert!(envoy.stat("wasmcustom.portcullis.jwks.fetch_failed") >= 1, "refresh attempts failed meanwhile");
    // Past cache_duration + max_stale (5 s after the last good fetch): 503.
    let r = poll_status(&envoy, &tok, 503, Duration::from_secs(6));
    assert_eq!(r.status, 503);
    assert!(warm.elapsed() >= Duration::from_secs(3), "not before the stale bound");
    // The IdP comes back: recovery.
    idp.set_behavior(Endpoint::Jwks, Behavior::Normal);
    assert_eq!(poll_status(&envoy, &tok, 200, Duration::from_secs(10)).status, 200);
}

#[test]
fn a_stalled_jwks_endpoint_does_not_stall_other_requests() {
    let idp = TestIdp::start();
    idp.publish(&["rsa-a"]);
    let up = EchoUpstream::start();
    let envoy = start(&idp, &up, json!({"unknown_kid_refresh_interval": "0s"}));
    let known = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    assert_eq!(poll_status(&envoy, &known, 200, Duration::from_secs(5)).status, 200);
    idp.set_behavior(Endpoint::Jwks, Behavior::Stall);
    // rsa-b is not published: its request triggers a refresh that stalls until the 1 s
    // callout timeout, then is refused as unknown key.
    let unknown = idp.mint(Alg::RS256, "rsa-b", idp.default_claims("orders-api"));
    let url = envoy.url("/orders");
    let waiter = std::thread::spawn(move || {
        let r = http::get(&url, &[("authorization", &format!("Bearer {unknown}"))]).unwrap();
        (r.status, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut done_at = Vec::new();
    for _ in 0..5 {
        assert_eq!(call(&envoy, &known).status, 200);
        done_at.push(Instant::now());
    }
    let (status, waited_until) = waiter.join().unwrap();
    assert_eq!(status, 401, "a refresh that never answers ends at the fetch timeout");
    assert!(done_at.iter().all(|t| *t < waited_until), "other requests completed while the refresh was stalled");
    idp.set_behavior(Endpoint::Jwks, Behavior::Normal);
}
