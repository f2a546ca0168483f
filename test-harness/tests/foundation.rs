//! Foundation end-to-end tests: the filter loads in a real Envoy (2 workers), refuses a broken
//! configuration naming the field, strips forged identity headers, answers with RFC 6750 /
//! RFC 9457 shapes, honours shadow mode and exposes stats.

use portcullis_harness::envoy::{bootstrap, cluster, listener, portcullis_filter, Envoy};
use portcullis_harness::http;
use portcullis_harness::idp::{Alg, TestIdp};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

fn start(idp: &TestIdp, upstream: &EchoUpstream, plugin: Value) -> Envoy {
    let b = bootstrap(
        vec![listener("main", vec![portcullis_filter(&plugin, &[])], Some("upstream"))],
        vec![cluster("upstream", upstream.port), cluster("idp", idp.port)],
    );
    Envoy::start(&b).expect("envoy starts")
}

fn local_provider(idp: &TestIdp) -> Value {
    json!({
        "issuer": idp.issuer(),
        "audiences": ["orders-api"],
        "local_jwks": {"inline_string": idp.public_jwks_for(&["rsa-a", "p256-a"])},
        "claim_to_headers": [{"header_name": "x-user", "claim_name": "sub"}]
    })
}

#[test]
fn smoke_valid_missing_and_bad_tokens() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let envoy = start(&idp, &up, json!({"realm": "orders", "providers": {"corp": local_provider(&idp)}}));
    let tok = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    let r = http::get(&envoy.url("/orders"), &[("authorization", &format!("Bearer {tok}"))]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["headers"]["x-user"], "user-1");
    assert_eq!(seen["headers"]["x-portcullis-client"], "demo-client");
    assert!(seen["headers"].get("authorization").is_none(), "credential stripped by default");

    let r = http::get(&envoy.url("/orders"), &[]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"orders\""));
    assert_eq!(r.json()["type"], "urn:portcullis:problem:missing_credentials");
}
