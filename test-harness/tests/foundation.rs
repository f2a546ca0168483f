//! Foundation end-to-end tests: the filter loads in a real Envoy (2 workers), refuses a broken
//! configuration naming the field, strips forged identity headers, answers with RFC 6750 /
//! RFC 9457 shapes, honours shadow mode and exposes stats.

use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::{Gateway, Listener};
use portcullis_harness::http;
use portcullis_harness::idp::{Alg, TestIdp};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

fn start(idp: &TestIdp, upstream: &EchoUpstream, plugin: Value) -> Envoy {
    Gateway::new(&plugin).cluster("upstream", upstream.port).cluster("idp", idp.port).start()
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

#[test]
fn broken_config_is_refused_naming_the_field() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let mut p = local_provider(&idp);
    p["audiences"] = json!([""]);
    let gateway = Gateway::new(&json!({"providers": {"corp": p}})).cluster("upstream", up.port);
    // Envoy 1.40 refuses to start when a wasm plugin's on_configure fails at boot.
    let log = gateway.try_start().err().expect("Envoy must refuse a broken Portcullis configuration");
    assert!(log.contains("invalid configuration: providers.corp.audiences[0]: must not be empty"), "log:\n{log}");
}

#[test]
fn forged_identity_headers_never_reach_the_upstream() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let mut p = local_provider(&idp);
    p["forward_payload_header"] = json!("x-jwt-payload");
    let cfg = json!({
        "providers": {"corp": p},
        "routes": [{"match": {"prefix": "/public"}, "requires": "none"}]
    });
    let envoy = start(&idp, &up, cfg);
    let forged = [
        ("x-portcullis-client", "admin"),
        ("x-portcullis-auth", "jwt:corp"),
        ("x-portcullis-decision", "allow"),
        ("x-portcullis-anything", "x"),
        ("x-user", "root"),
        ("x-jwt-payload", "eyJzdWIiOiJyb290In0"),
    ];
    // On an anonymous route: every forged header is removed.
    let r = http::get(&envoy.url("/public/x"), &forged).unwrap();
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    for (name, _) in forged {
        assert!(h.get(name).is_none(), "{name} reached the upstream: {h}");
    }
    // On an authenticated route: the upstream sees Portcullis's values only.
    let tok = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    let auth = format!("Bearer {tok}");
    let mut with_token = forged.to_vec();
    with_token.push(("authorization", &auth));
    let r = http::get(&envoy.url("/orders"), &with_token).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-portcullis-client"], "demo-client");
    assert_eq!(h["x-user"], "user-1");
    assert_eq!(h["x-portcullis-auth"], "jwt:corp");
    assert!(h.get("x-portcullis-anything").is_none());
    assert!(h.get("x-portcullis-decision").is_none());
    let payload = h["x-jwt-payload"].as_str().unwrap();
    assert_eq!(payload, tok.split('.').nth(1).unwrap(), "payload header is the verified token's payload");
}

#[test]
fn responses_follow_rfc6750_and_rfc9457() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let mut p = local_provider(&idp);
    p["from_params"] = json!(["access_token"]);
    p["from_headers"] = json!([{"name": "authorization", "value_prefix": "Bearer "}]);
    let cfg = json!({
        "realm": "orders",
        "providers": {"corp": p},
        "routes": [{"match": {"prefix": "/admin"}, "scopes": ["admin"]}]
    });
    let envoy = start(&idp, &up, cfg);
    let good = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    let mut expired_claims = idp.default_claims("orders-api");
    expired_claims["exp"] = json!(portcullis_harness::idp::now() - 3600);
    let expired = idp.mint(Alg::RS256, "rsa-a", expired_claims);

    // Two tokens → 400 invalid_request.
    let r =
        http::get(&envoy.url(&format!("/orders?access_token={good}")), &[("authorization", &format!("Bearer {good}"))])
            .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.header("www-authenticate").unwrap().contains("error=\"invalid_request\""));
    assert_eq!(r.json()["type"], "urn:portcullis:problem:multiple_credentials");

    // Expired → 401 invalid_token, problem+json without token contents.
    let r = http::get(&envoy.url("/orders"), &[("authorization", &format!("Bearer {expired}"))]).unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer realm=\"orders\", error=\"invalid_token\""));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.text();
    assert!(body.contains("urn:portcullis:problem:token_expired"), "{body}");
    assert!(!body.contains(expired.split('.').nth(1).unwrap()), "no token material in the body");

    // Garbage → 401 token_malformed.
    let r = http::get(&envoy.url("/orders"), &[("authorization", "Bearer not.a.jwt")]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "urn:portcullis:problem:token_malformed");

    // Valid token without the route's scope → 403 insufficient_scope naming the scope.
    let r = http::get(&envoy.url("/admin/users"), &[("authorization", &format!("Bearer {good}"))]).unwrap();
    assert_eq!(r.status, 403);
    assert!(r.header("www-authenticate").unwrap().contains("error=\"insufficient_scope\""));
    assert!(r.header("www-authenticate").unwrap().contains("scope=\"admin\""));

    // Query-parameter token works and is removed from the path before forwarding.
    let r = http::get(&envoy.url(&format!("/orders?x=1&access_token={good}")), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/orders?x=1");
}

#[test]
fn shadow_mode_reports_but_never_rejects_and_stats_count_it() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let envoy = start(&idp, &up, json!({"mode": "shadow", "providers": {"corp": local_provider(&idp)}}));
    let r = http::get(&envoy.url("/orders"), &[("x-portcullis-client", "forged")]).unwrap();
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["x-portcullis-decision"], "deny; reason=missing_credentials");
    assert!(h.get("x-portcullis-client").is_none());
    let r = http::get(&envoy.url("/orders"), &[("authorization", "Bearer a.b.c")]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-portcullis-decision"], "deny; reason=token_malformed");
    let tok = idp.mint(Alg::ES256, "p256-a", idp.default_claims("orders-api"));
    let r = http::get(&envoy.url("/orders"), &[("authorization", &format!("Bearer {tok}"))]).unwrap();
    assert_eq!(r.json()["headers"]["x-portcullis-decision"], "allow");
    assert_eq!(envoy.stat("wasmcustom.portcullis.shadow_denied.missing_credentials"), 1);
    assert_eq!(envoy.stat("wasmcustom.portcullis.shadow_denied.token_malformed"), 1);
    assert_eq!(envoy.stat("wasmcustom.portcullis.allowed"), 1);
    assert_eq!(envoy.stat("wasmcustom.portcullis.requests"), 3);
}

#[test]
fn api_keys_from_header_and_query_are_hidden() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let key_hash = portcullis::apikey::hash_hex("secret-key-1");
    let cfg = json!({
        "api_keys": {
            "from_headers": ["x-api-key"],
            "from_params": ["api_key"],
            "hide_credentials": true,
            "clients": [
                {"client_id": "partner-a", "keys_sha256": [key_hash], "scopes": ["orders:read"]},
                {"client_id": "gone", "keys_sha256": [portcullis::apikey::hash_hex("old-key")], "disabled": true}
            ]
        },
        "routes": [{"match": {"prefix": "/write"}, "scopes": ["orders:write"]}]
    });
    let envoy = start(&idp, &up, cfg);
    let r = http::get(&envoy.url("/orders"), &[("x-api-key", "secret-key-1")]).unwrap();
    assert_eq!(r.status, 200);
    let seen = r.json();
    assert!(seen["headers"].get("x-api-key").is_none());
    assert_eq!(seen["headers"]["x-portcullis-client"], "partner-a");
    let r = http::get(&envoy.url("/orders?a=1&api_key=secret-key-1"), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/orders?a=1");
    let r = http::get(&envoy.url("/orders"), &[("x-api-key", "wrong")]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("ApiKey realm=\"portcullis\", error=\"invalid_key\""));
    let r = http::get(&envoy.url("/orders"), &[("x-api-key", "old-key")]).unwrap();
    assert_eq!(r.status, 401);
    let r = http::get(&envoy.url("/write"), &[("x-api-key", "secret-key-1")]).unwrap();
    assert_eq!(r.status, 403);
    assert!(up.requests().iter().all(|q| !q.to_string().contains("secret-key-1")), "key never reached the upstream");
}

#[test]
fn ten_thousand_api_keys_load_and_answer() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let clients: Vec<Value> = (0..10_000)
        .map(|i| json!({"client_id": format!("client-{i}"), "keys_sha256": [portcullis::apikey::hash_hex(&format!("key-{i}"))]}))
        .collect();
    let cfg = json!({"api_keys": {"from_headers": ["x-api-key"], "clients": clients}});
    let envoy = start(&idp, &up, cfg);
    for i in [0, 4_999, 9_999] {
        let r = http::get(&envoy.url("/"), &[("x-api-key", &format!("key-{i}"))]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["headers"]["x-portcullis-client"], format!("client-{i}"));
    }
    assert_eq!(http::get(&envoy.url("/"), &[("x-api-key", "key-10000")]).unwrap().status, 401);
}

#[test]
fn verified_payload_reaches_filter_state_for_other_filters() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let mut p = local_provider(&idp);
    p["payload_in_filter_state"] = json!("jwt_payload");
    let cfg = json!({"providers": {"corp": p}});
    // Another part of Envoy (the router's header formatter) reads what Portcullis stored.
    let main = Listener::new("main", &cfg)
        .request_header_to_add("x-from-filter-state", "%FILTER_STATE(wasm.jwt_payload:PLAIN)%");
    let envoy = Gateway::empty().listener(main).cluster("upstream", up.port).start();
    let tok = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    let r = http::get(&envoy.url("/"), &[("authorization", &format!("Bearer {tok}"))]).unwrap();
    assert_eq!(r.status, 200);
    let seen = r.json()["headers"]["x-from-filter-state"].as_str().unwrap_or_default().to_string();
    let claims: Value = serde_json::from_str(&seen).unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    assert_eq!(claims["sub"], "user-1");
}

/// The `stats_tags` the README prescribes turn the reason (and the `stats_instance`) into
/// Prometheus labels; two instances in one Envoy count separately.
#[test]
fn stats_tags_turn_the_reason_and_instance_into_prometheus_labels() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let plain = json!({"providers": {"corp": local_provider(&idp)}});
    let mut edge = plain.clone();
    edge["stats_instance"] = json!("edge");
    let gw = Gateway::empty()
        .listener(Listener::new("plain", &plain))
        .listener(Listener::new("edge", &edge))
        .cluster("upstream", up.port);
    let mut b = gw.bootstrap();
    // Same regexes as README "Stats and logs" and examples/envoy/envoy.yaml.
    b["stats_config"] = json!({"stats_tags": [
        {"tag_name": "instance", "regex": r"^wasmcustom\.portcullis\.(instance\.([a-z0-9_]+)\.)"},
        {"tag_name": "reason", "regex": r"^wasmcustom\.portcullis\.(?:instance\.[a-z0-9_]+\.)?(?:shadow_)?denied(\.(.+))$"}
    ]});
    let envoy = Envoy::start(&b).unwrap();
    let get = |listener: &str, auth: &str| {
        let url = format!("http://127.0.0.1:{}/orders", envoy.port(listener));
        let h: Vec<(&str, &str)> = if auth.is_empty() { vec![] } else { vec![("authorization", auth)] };
        http::get(&url, &h).unwrap().status
    };
    assert_eq!(get("plain", ""), 401);
    assert_eq!(get("plain", "Bearer a.b.c"), 401);
    assert_eq!(get("plain", "Bearer x.y.z"), 401);
    assert_eq!(get("edge", "Bearer a.b.c"), 401);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let prom = http::get(&format!("http://127.0.0.1:{}/stats/prometheus", envoy.admin_port), &[]).unwrap().text();
    let lines: Vec<&str> = prom.lines().filter(|l| l.starts_with("portcullis_denied{")).collect();
    for want in [
        r#"portcullis_denied{reason="missing_credentials"} 1"#,
        r#"portcullis_denied{reason="token_malformed"} 2"#,
        r#"portcullis_denied{instance="edge",reason="token_malformed"} 1"#,
        r#"portcullis_denied{instance="edge",reason="missing_credentials"} 0"#,
    ] {
        assert!(lines.contains(&want), "{want} not in {lines:?}");
    }
    assert!(prom.lines().any(|l| l == "# TYPE portcullis_denied counter"));
    assert!(prom.lines().any(|l| l == r#"portcullis_requests{instance="edge"} 1"#), "edge counts only its own");
    assert!(
        prom.lines().any(|l| l == "portcullis_requests{} 3"),
        "plain counts only its own: {:?}",
        prom.lines().filter(|l| l.contains("portcullis_requests")).collect::<Vec<_>>()
    );
}

/// The decision reaches access logs through filter state on denials only.
#[test]
fn denials_reach_the_access_log_through_filter_state() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({"providers": {"corp": local_provider(&idp)},
        "routes": [{"match": {"prefix": "/admin"}, "requires": {"any": ["corp"]}, "scopes": ["orders:admin"]}]});
    let gw = Gateway::new(&cfg).cluster("upstream", up.port);
    let mut b = gw.bootstrap();
    let log = std::env::temp_dir().join(format!("portcullis-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": log.to_str().unwrap(),
            "log_format": {"text_format_source": {
                "inline_string": "%RESPONSE_CODE% %FILTER_STATE(wasm.portcullis.decision:PLAIN)%\n"
            }}
        }
    }]);
    let envoy = Envoy::start(&b).unwrap();
    let tok = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    assert_eq!(http::get(&envoy.url("/a"), &[("authorization", &format!("Bearer {tok}"))]).unwrap().status, 200);
    assert_eq!(http::get(&envoy.url("/b"), &[("authorization", "Bearer a.b.c")]).unwrap().status, 401);
    assert_eq!(http::get(&envoy.url("/c"), &[]).unwrap().status, 401);
    // Authenticated, then refused: the record names the client and the method.
    assert_eq!(http::get(&envoy.url("/admin"), &[("authorization", &format!("Bearer {tok}"))]).unwrap().status, 403);
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>();
        if lines.len() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&log);
    assert_eq!(
        lines,
        vec![
            "200 -",
            "401 deny; reason=token_malformed",
            "401 deny; reason=missing_credentials",
            "403 deny; reason=insufficient_scope; client=demo-client; auth=jwt:corp"
        ],
        "the allow path sets nothing"
    );
}
