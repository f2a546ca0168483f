//! Issue 12 — real identity providers and rollouts, through a real Envoy with 2 workers:
//!
//! * **Startup:** requests that arrive before a provider's first key set (remote JWKS or OIDC
//!   discovery) wait for it instead of getting 503; only a fetch that fails or outlives its
//!   timeout gives 503 + `Retry-After`, bounded in time.
//! * **JWT access tokens introspected** (`introspect_jwts`), with revocation taking effect
//!   after the cache TTL; without the switch such a token is `token_not_accepted` (401
//!   `invalid_token`, never "missing credentials").
//! * **The exact `Accept`** of introspection requests for each `response_format`.
//! * **Forward mode** of the password grant, both ways (`hold_headers` with Envoy's
//!   `allow_on_headers_stop_iteration`, and relay with the token path routed to a sink): the token
//!   server receives exactly one complete request per accepted login and none per rejected one.
//! * **A provider block copied from Envoy's `jwt_authn` docs** loads and works.
//!
//! Every loop is bounded in count and time; every request has a client timeout.

use std::time::{Duration, Instant};

use portcullis_harness::envoy::{self, Envoy};
use portcullis_harness::gateway::{Gateway, Listener};
use portcullis_harness::http;
use portcullis_harness::idp::{now, two_backend_identities, Alg, Behavior, Endpoint, TestIdp};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

const FORM: &str = "application/x-www-form-urlencoded";
/// No request here may take longer: a hang fails the test instead of blocking it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

fn get(envoy: &Envoy, listener: &str, path: &str, headers: &[(&str, &str)]) -> http::Response {
    let url = format!("http://127.0.0.1:{}{path}", envoy.port(listener));
    http::request_with_timeout("GET", &url, headers, None, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("GET {url}: no answer within {CLIENT_TIMEOUT:?}: {e}"))
}

fn bearer(envoy: &Envoy, listener: &str, token: &str) -> http::Response {
    get(envoy, listener, "/orders", &[("authorization", &format!("Bearer {token}"))])
}

fn post(envoy: &Envoy, path: &str, headers: &[(&str, &str)], body: &[u8]) -> http::Response {
    http::request_with_timeout("POST", &envoy.url(path), headers, Some(body), CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("POST {path}: no answer within {CLIENT_TIMEOUT:?}: {e}"))
}

// ---------------------------------------------------------------------------------------
// 1. No 503 right after start
// ---------------------------------------------------------------------------------------

/// Two providers for the same issuer: `remote` (a JWKS URL) and `discovery` (only the issuer
/// and the cluster for OIDC discovery), each fetch bounded by `timeout`.
fn startup_listeners(idp: &TestIdp, timeout: &str) -> Gateway {
    let remote = json!({"providers": {"corp": {
        "issuer": idp.issuer(), "audiences": ["orders-api"],
        "remote_jwks": {"http_uri": {"uri": idp.jwks_uri(), "cluster": "idp", "timeout": timeout}}
    }}});
    let discovery = json!({"providers": {"corp": {
        "issuer": idp.issuer(), "audiences": ["orders-api"],
        "discovery": {"cluster": "idp", "timeout": timeout}
    }}});
    Gateway::empty().listener(Listener::new("remote", &remote)).listener(Listener::new("discovery", &discovery))
}

/// Sends `per_listener` concurrent requests with `token` to each listener at once; returns
/// `(listener, status, Retry-After present, problem type, time to answer)` for each.
fn burst(
    envoy: &Envoy,
    listeners: &[&str],
    token: &str,
    per_listener: usize,
) -> Vec<(String, u16, bool, Value, Duration)> {
    let threads: Vec<_> = listeners
        .iter()
        .flat_map(|l| std::iter::repeat_n(*l, per_listener))
        .map(|l| {
            let (url, token, name) =
                (format!("http://127.0.0.1:{}/orders", envoy.port(l)), token.to_string(), l.to_string());
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let auth = format!("Bearer {token}");
                let r = http::request_with_timeout("GET", &url, &[("authorization", &auth)], None, CLIENT_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{name}: no answer within {CLIENT_TIMEOUT:?}: {e}"));
                let problem = if r.header("content-type") == Some("application/problem+json") {
                    r.json()["type"].clone()
                } else {
                    Value::Null
                };
                (name, r.status, r.header("retry-after").is_some(), problem, t0.elapsed())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("request thread")).collect()
}

#[test]
fn requests_at_start_wait_for_a_slow_first_key_set_instead_of_503() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    // The JWKS and the discovery document each answer after 150 ms.
    idp.set_behavior(Endpoint::Jwks, Behavior::Delay(Duration::from_millis(150)));
    idp.set_behavior(Endpoint::Discovery, Behavior::Delay(Duration::from_millis(150)));
    let token = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    let started = Instant::now();
    let envoy = startup_listeners(&idp, "1s").cluster("upstream", up.port).cluster("idp", idp.port).start();
    let ready_after = started.elapsed();
    let fetches_at_ready = (idp.hits(Endpoint::Jwks), idp.hits(Endpoint::Discovery));
    // The moment start() returns: 4 concurrent requests per listener, then 3 more rounds.
    let mut answers = burst(&envoy, &["remote", "discovery"], &token, 4);
    for _ in 0..3 {
        answers.extend(burst(&envoy, &["remote", "discovery"], &token, 2));
    }
    let first: Vec<String> =
        answers.iter().take(8).map(|(l, s, _, _, t)| format!("{l}:{s}@{}ms", t.as_millis())).collect();
    eprintln!(
        "A.1 slow first fetch: Envoy ready after {} ms; JWKS/discovery hits at ready {fetches_at_ready:?}; first burst: {}",
        ready_after.as_millis(),
        first.join(" ")
    );
    for (listener, status, _, problem, took) in &answers {
        assert_eq!(*status, 200, "{listener}: {problem} after {took:?} (every request waits for the first fetch)");
    }
    // Bounded by the fetch timeout (1 s; two fetches for discovery).
    let slowest = answers.iter().map(|a| a.4).max().unwrap_or_default();
    assert!(slowest < Duration::from_millis(2500), "slowest answer took {slowest:?}");
    assert!(idp.hits(Endpoint::Jwks) >= 1 && idp.hits(Endpoint::Discovery) >= 1);
}

/// "Within ~1.5 s" (three 0.5 s fetch timeouts), with 150 ms for scheduling on a loaded
/// 2-core machine.
const STALLED_START_BOUND: Duration = Duration::from_millis(1650);

#[test]
fn a_first_key_set_that_outlives_its_timeout_is_503_with_retry_after_promptly() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    // The JWKS and the discovery document never answer (until the IdP is dropped).
    idp.set_behavior(Endpoint::Jwks, Behavior::Stall);
    idp.set_behavior(Endpoint::Discovery, Behavior::Stall);
    let token = idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api"));
    let envoy = startup_listeners(&idp, "0.5s").cluster("upstream", up.port).cluster("idp", idp.port).start();
    let answers = burst(&envoy, &["remote", "discovery"], &token, 2);
    let seen: Vec<String> = answers.iter().map(|(l, s, _, _, t)| format!("{l}:{s}@{}ms", t.as_millis())).collect();
    eprintln!("A.1 stalled first fetch (timeout 0.5 s): {}", seen.join(" "));
    for (listener, status, retry_after, problem, took) in &answers {
        assert_eq!(*status, 503, "{listener}: {problem}");
        assert!(*retry_after, "{listener}: 503 without Retry-After");
        assert_eq!(*problem, json!("urn:portcullis:problem:keys_unavailable"), "{listener}");
        assert!(*took <= STALLED_START_BOUND, "{listener}: answered after {took:?}, not within ~1.5 s");
    }
}

// ---------------------------------------------------------------------------------------
// 2. JWT access tokens introspected
// ---------------------------------------------------------------------------------------

fn introspection(extra: Value) -> Value {
    let mut i = json!({
        "endpoint": {"cluster": "idp", "authority": "idp.test", "path": "/introspect", "timeout": "0.5s"},
        "client_id": "gateway",
        "client_secret_env": "INTROSPECTION_SECRET",
        "cache_duration": "300s",
        "negative_cache_duration": "10s"
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        i[k] = v;
    }
    i
}

/// A JWT access token the IdP's introspection knows as active.
fn registered_jwt(idp: &TestIdp, client: &str) -> String {
    let mut claims = idp.default_claims("orders-api");
    claims["client_id"] = json!(client);
    let jwt = idp.mint(Alg::RS256, "rsa-a", claims.clone());
    idp.register_opaque(&jwt, claims);
    jwt
}

#[test]
fn jwt_access_tokens_are_introspected_when_asked_and_not_accepted_otherwise() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let with = json!({"introspection": introspection(json!({"introspect_jwts": true, "cache_duration": "1s"}))});
    let without = json!({"introspection": introspection(json!({}))});
    let envoy = Gateway::empty()
        .listener(Listener::new("jwts", &with))
        .listener(Listener::new("plain", &without))
        .env("INTROSPECTION_SECRET", "gateway-secret")
        .cluster("upstream", up.port)
        .cluster("idp", idp.port)
        .start();
    let jwt = registered_jwt(&idp, "svc-jwt");

    let r = bearer(&envoy, "jwts", &jwt);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-portcullis-client"], "svc-jwt");
    assert_eq!(idp.hits(Endpoint::Introspect), 1, "one introspection of the JWT");
    assert_eq!(bearer(&envoy, "jwts", &jwt).status, 200);
    assert_eq!(idp.hits(Endpoint::Introspect), 1, "the answer is cached");

    // Revoked at the IdP: refused once the cached answer (1 s) expires.
    idp.revoke(&jwt);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut r = bearer(&envoy, "jwts", &jwt);
    while r.status == 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        r = bearer(&envoy, "jwts", &jwt);
    }
    assert_eq!(r.status, 401, "still {} 5 s after revocation: {}", r.status, r.text());
    assert!(r.header("www-authenticate").unwrap_or_default().contains("error=\"invalid_token\""), "{:?}", r.headers);
    assert_eq!(r.json()["type"], "urn:portcullis:problem:token_inactive");

    // Without introspect_jwts, no configured method takes a JWS: invalid, never "missing".
    let before = idp.hits(Endpoint::Introspect);
    let other = registered_jwt(&idp, "svc-other");
    let r = bearer(&envoy, "plain", &other);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["type"], "urn:portcullis:problem:token_not_accepted");
    let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(!r.text().contains("missing_credentials") && !challenge.contains("missing"), "{challenge} {}", r.text());
    assert_eq!(idp.hits(Endpoint::Introspect), before, "not introspected");
}

// ---------------------------------------------------------------------------------------
// 3. Exact RFC 9701 Accept
// ---------------------------------------------------------------------------------------

#[test]
fn introspection_sends_exactly_one_media_type_in_accept() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let variants = [
        ("rfc9701", json!({"response_format": "token-introspection+jwt"}), "application/token-introspection+jwt"),
        ("accept_jwt", json!({"accept_jwt": true}), "application/token-introspection+jwt"),
        ("by_value", json!({"response_format": "jwt"}), "application/jwt"),
        ("default", json!({}), "application/json"),
    ];
    let mut gateway = Gateway::empty();
    for (name, extra, _) in &variants {
        gateway = gateway.listener(Listener::new(name, &json!({"introspection": introspection(extra.clone())})));
    }
    let envoy = gateway
        .env("INTROSPECTION_SECRET", "gateway-secret")
        .cluster("upstream", up.port)
        .cluster("idp", idp.port)
        .start();
    for (i, (name, _, want)) in variants.iter().enumerate() {
        let token = format!("opaque-accept-{name}-0123456789");
        idp.register_opaque(&token, json!({"client_id": "svc-accept", "sub": "u", "exp": now() + 600}));
        let r = bearer(&envoy, name, &token);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let accepts = idp.introspection_accepts();
        assert_eq!(accepts.len(), i + 1, "{name}: one introspection per listener");
        assert_eq!(accepts[i].as_deref(), Some(*want), "{name}: the Accept header, exactly");
    }
}

// ---------------------------------------------------------------------------------------
// 4. Forward mode: one complete request per accepted login, none per rejected one
// ---------------------------------------------------------------------------------------

fn idp_with_users() -> TestIdp {
    let idp = TestIdp::start();
    idp.add_backend("legacy");
    idp.add_backend("ldap");
    idp.add_user("legacy", "alice", "pw-alice", Some(json!({"dept": "ops"})));
    idp.add_user("ldap", "bob", "pw-bob", None);
    idp
}

fn grant(forward: Value) -> Value {
    json!({"password_grant": {
        "token_path": "/oauth/token",
        "identities": two_backend_identities(),
        "mode": "forward",
        "forward": forward
    }})
}

fn login_body(user: &str, password: &str) -> String {
    http::form_encode(&[("grant_type", "password"), ("username", user), ("password", password)])
}

/// The token requests the token server saw (the echo's log, token path only).
fn token_requests(tokens: &EchoUpstream) -> Vec<Value> {
    tokens.requests().into_iter().filter(|q| q["path"] == "/oauth/token").collect()
}

/// The common checks of both forward modes: an accepted login reaches the token server
/// exactly once, complete and with the identity headers, and its answer comes back; a
/// rejected one never reaches it; another grant goes through once, untouched.
fn one_request_per_accepted_login(envoy: &Envoy, tokens: &EchoUpstream, what: &str) {
    let body = login_body("alice", "pw-alice");
    let r = post(envoy, "/oauth/token", &[("content-type", FORM), ("x-request-id", "login-1")], body.as_bytes());
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    let seen = token_requests(tokens);
    assert_eq!(seen.len(), 1, "{what}: exactly one request per accepted login: {seen:?}");
    let q = &seen[0];
    assert_eq!(
        (q["method"].as_str(), q["body"].as_str()),
        (Some("POST"), Some(body.as_str())),
        "{what}: the full body"
    );
    assert_eq!(q["headers"]["content-length"], body.len().to_string(), "{what}");
    assert_eq!(q["headers"]["content-type"], FORM, "{what}");
    assert_eq!(q["headers"]["x-portcullis-identity"], "legacy", "{what}");
    let extra = q["headers"]["x-portcullis-extra-info"].as_str().unwrap_or_default();
    let extra: Value = serde_json::from_slice(&portcullis::wire::b64::decode(extra).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{what}: extra info {extra:?}: {e}"));
    assert_eq!(extra, json!({"dept": "ops"}), "{what}");
    assert_eq!(r.json(), *q, "{what}: the client gets the token server's answer");

    // Rejected: 400 invalid_grant, nothing reaches the token server.
    let r = post(envoy, "/oauth/token", &[("content-type", FORM)], login_body("alice", "wrong").as_bytes());
    assert_eq!((r.status, r.json()), (400, json!({"error": "invalid_grant"})), "{what}");
    let r = post(envoy, "/oauth/token", &[("content-type", FORM)], login_body("mallory", "x").as_bytes());
    assert_eq!(r.status, 400, "{what}");
    assert_eq!(token_requests(tokens).len(), 1, "{what}: rejected logins never reach the token server");

    // Another grant passes through once, untouched.
    let cc = "grant_type=client_credentials&client_id=partner&client_secret=s3cret";
    let r = post(envoy, "/oauth/token", &[("content-type", FORM)], cc.as_bytes());
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    let seen = token_requests(tokens);
    assert_eq!(seen.len(), 2, "{what}: one request for the client_credentials grant: {seen:?}");
    assert_eq!(seen[1]["body"], cc, "{what}");
    assert!(seen[1]["headers"].get("x-portcullis-identity").is_none(), "{what}: no identity for another grant");
    assert_eq!(r.json()["body"], cc, "{what}");
}

#[test]
fn hold_headers_sends_the_original_request_once_per_accepted_login() {
    let idp = idp_with_users();
    let up = EchoUpstream::start();
    let tokens = EchoUpstream::start();
    let cfg = grant(json!({"hold_headers": true}));
    let gateway = Gateway::empty()
        .listener(Listener::new("main", &cfg).route_prefix("/oauth/token", "tokens").allow_on_headers_stop_iteration())
        .cluster("upstream", up.port)
        .cluster("tokens", tokens.port)
        .cluster("idp", idp.port);
    // Envoy's own validation accepts the PluginConfig switch.
    let file = envoy::repo_root().join(format!("target/interop-hold-headers-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec_pretty(&gateway.bootstrap()).expect("bootstrap JSON")).expect("write");
    let validated = envoy::validate(&file);
    let _ = std::fs::remove_file(&file);
    validated.unwrap_or_else(|e| panic!("envoy --mode validate refused allow_on_headers_stop_iteration: {e}"));

    let envoy = gateway.start();
    one_request_per_accepted_login(&envoy, &tokens, "hold_headers");
    assert_eq!(up.count(), 0, "nothing reached the API upstream");
}

#[test]
fn relay_mode_with_the_token_path_routed_to_a_sink_sends_one_request_per_accepted_login() {
    // A direct_response route does not work here: Envoy answers it as soon as the headers pass,
    // before the filter has read the body. The token path goes to a sink cluster instead (it
    // sees the started-and-abandoned requests; the token server sees only the relays).
    let idp = idp_with_users();
    let up = EchoUpstream::start();
    let tokens = EchoUpstream::start();
    let sink = EchoUpstream::start();
    let cfg =
        grant(json!({"token_endpoint": {"cluster": "tokens", "authority": "token.test", "path": "/oauth/token"}}));
    let envoy = Gateway::empty()
        .listener(Listener::new("main", &cfg).route_prefix("/oauth/token", "sink"))
        .cluster("upstream", up.port)
        .cluster("tokens", tokens.port)
        .cluster("sink", sink.port)
        .cluster("idp", idp.port)
        .start();
    one_request_per_accepted_login(&envoy, &tokens, "relay");
    assert_eq!(token_requests(&tokens)[0]["headers"]["x-request-id"], "login-1", "relayed headers");
    assert_eq!(up.count(), 0, "nothing reached the API upstream");
}

// ---------------------------------------------------------------------------------------
// 5. A provider block copied from Envoy's jwt_authn docs
// ---------------------------------------------------------------------------------------

#[test]
fn a_jwt_authn_provider_block_loads_and_works() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    // As in Envoy's jwt_authn documentation (JSON of its YAML), plus a claim header to see
    // the normalised scope.
    let provider = json!({
        "issuer": idp.issuer(),
        "audiences": ["orders-api"],
        "remote_jwks": {
            "http_uri": {"uri": idp.jwks_uri(), "cluster": "idp", "timeout": "1s"},
            "cache_duration": {"seconds": 300},
            "async_fetch": {},
            "retry_policy": {"num_retries": 3}
        },
        "forward": true,
        "forward_payload_header": "x-jwt-payload",
        "pad_forward_payload_header": true,
        "subjects": {"prefix": "user-"},
        "jwt_cache_config": {"jwt_cache_size": 100},
        "normalize_payload_in_metadata": {"space_delimited_claims": ["scope"]},
        "claim_to_headers": [{"header_name": "x-scope", "claim_name": "scope"}]
    });
    let cfg = json!({"providers": {"corp": provider}});
    let envoy = Gateway::new(&cfg).cluster("upstream", up.port).cluster("idp", idp.port).start();

    let mut claims = idp.default_claims("orders-api");
    claims["scope"] = json!("orders:read orders:write");
    let token = idp.mint(Alg::RS256, "rsa-a", claims.clone());
    let r = bearer(&envoy, "main", &token);
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["authorization"], format!("Bearer {token}"), "forward: true keeps the token");
    let padded = h["x-jwt-payload"].as_str().unwrap_or_default();
    assert_eq!(padded.len() % 4, 0, "padded payload header: {padded:?}");
    assert_eq!(padded.trim_end_matches('='), token.split('.').nth(1).unwrap_or_default());
    assert_eq!(h["x-scope"], "orders:read,orders:write", "scope split on spaces");

    claims["sub"] = json!("svc-9");
    let outside = idp.mint(Alg::RS256, "rsa-a", claims);
    let r = bearer(&envoy, "main", &outside);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["type"], "urn:portcullis:problem:token_subject");
}
