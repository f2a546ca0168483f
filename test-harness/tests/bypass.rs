//! Regression tests for the bypasses of issue 11, through a real Envoy (2 workers) loading the
//! compiled module. Envoy's own path normalisation stays off (its defaults: no
//! `normalize_path`, no `merge_slashes`, escaped slashes kept), and the client sends methods and
//! paths byte for byte (`curl --path-as-is`), so what is proven here is the filter's own
//! canonical request view:
//!
//! * a dot segment, an empty segment, a path parameter, or an encoded `/`, `\` or NUL → 400
//!   `request_not_canonical`, and nothing reaches the upstream; a lower-case method → 400 (from
//!   Envoy's HTTP/1 codec itself, before the filter) and nothing reaches the upstream;
//! * a path that differs only by encoded unreserved characters is matched canonically and the
//!   upstream receives the canonical `:path`; `HEAD` matches a `GET` route; `match.ignore_case`;
//! * the token endpoint: every path variant is checked, OAuth parameters in the query and
//!   non-`POST` methods are refused, and body-less requests lose forged identity headers;
//!   a password-grant request whose body ends in trailers is refused (400 `invalid_request`)
//!   before any identity backend or the token server sees it;
//! * over HTTP/2 (h2c, sent with `curl`), where Envoy's codec lets a lower-case `:method`
//!   through, the filter itself refuses it: 400 `request_not_canonical`;
//! * owned headers are recognised with `_` folded to `-`;
//! * a request parked behind another worker's introspection is answered when that
//!   introspection fails;
//! * anonymous rate limiting and the password-grant lockout key on the TCP peer under
//!   `use_remote_address: true`: a spoofed `X-Forwarded-For` neither escapes a limit nor locks
//!   another address out;
//! * shared state (the introspection cache) is namespaced per configuration.
//!
//! Each test's comment describes what the filter did before the fix.

use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use portcullis::apikey::hash_hex;
use portcullis_harness::curl;
use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::{Gateway, Listener};
use portcullis_harness::http;
use portcullis_harness::idp::{now, two_backend_identities, Behavior, Endpoint, TestIdp};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

const NOT_CANONICAL: &str = "urn:portcullis:problem:request_not_canonical";
const FORM: &str = "application/x-www-form-urlencoded";
const API_KEY: &str = "ops-key-1";
/// No request in these tests may take longer than this: a hang fails instead of blocking.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `method path` exactly as given (no normalisation) with a bounded timeout.
fn send(envoy: &Envoy, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> http::Response {
    send_to(envoy.listeners[0].1, method, path, headers, body)
}

fn send_to(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> http::Response {
    let url = format!("http://127.0.0.1:{port}{path}");
    http::request_with_timeout(method, &url, headers, body, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: no answer within {CLIENT_TIMEOUT:?}: {e}"))
}

fn assert_not_canonical(r: &http::Response, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}: {}", r.text());
    assert_eq!(r.json()["type"], NOT_CANONICAL, "{what}");
}

/// A lower-case method is refused with 400 and reaches nothing: by the filter
/// (`request_not_canonical`) or, as Envoy 1.40 does over HTTP/1.1, by Envoy's codec.
fn assert_lower_case_method_refused(r: &http::Response, up: &EchoUpstream, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.text());
    if r.header("content-type") == Some("application/problem+json") {
        assert_eq!(r.json()["type"], NOT_CANONICAL, "{what}");
    } else {
        assert_eq!(r.text(), "Bad Request", "{what}: Envoy's codec answer");
    }
    assert_eq!(up.count(), 0, "{what} reached the upstream: {:?}", up.requests());
}

/// Header names (lower-cased by the echo upstream) that a client may not forge: every
/// `x-portcullis-*` name and the given configured names, compared after folding `_` to `-`.
fn owned_names(headers: &Value, configured: &[&str]) -> Vec<String> {
    headers
        .as_object()
        .map(|h| {
            h.keys()
                .filter(|k| {
                    let folded = k.replace('_', "-");
                    folded.starts_with("x-portcullis-") || configured.contains(&folded.as_str())
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// 1. Path and method bypasses
// ---------------------------------------------------------------------------------------

fn bypass_config() -> Value {
    json!({
        "api_keys": {
            "from_headers": ["x-api-key"],
            "hide_credentials": true,
            "clients": [{"client_id": "ops", "keys_sha256": [hash_hex(API_KEY)]}]
        },
        "requires": "none",
        "routes": [
            {"match": {"prefix": "/admin", "ignore_case": true}, "requires": {"any": ["api_key"]}},
            {"match": {"prefix": "/public"}, "requires": "none"},
            {"match": {"prefix": "/reports", "methods": ["GET"]}, "requires": {"any": ["api_key"]}},
            {"match": {"prefix": "/orders", "methods": ["POST"]}, "requires": {"any": ["api_key"]}}
        ]
    })
}

/// Old behaviour: routes were matched on the raw `:path`, and the default (`requires: "none"`)
/// applied to whatever did not match. `/public/../admin` and `/public/%2e%2e/admin` matched the
/// anonymous `/public` route; `//admin`, `/./admin`, `/admin;x`, `/admin%2Fusers`,
/// `/admin%5Cx`, `/admin%00` and `/%61dmin` matched no route. All were forwarded without a
/// credential, and an upstream that normalises (resolves dot segments, merges slashes, strips
/// `;params` like Java servers, decodes `%2F`/`%5C`, stops at NUL, decodes `%61`) served
/// `/admin` to an anonymous caller. `/ADMIN` (case-insensitive upstream), `HEAD /reports` on a
/// GET-only route and `post /orders` on a POST-only route also fell to the default: 200.
#[test]
fn path_and_method_bypasses_are_refused_or_matched_canonically() {
    let up = EchoUpstream::start();
    let envoy = Gateway::new(&bypass_config()).cluster("upstream", up.port).start();

    // Sanity: the protected route is protected, the public one is not.
    assert_eq!(send(&envoy, "GET", "/admin", &[], None).status, 401);
    assert_eq!(send(&envoy, "GET", "/public/x", &[], None).status, 200);
    up.clear();

    for path in [
        "/public/../admin",
        "//admin",
        "/admin;x",
        "/admin%2Fusers",
        "/./admin",
        "/public/%2e%2e/admin",
        "/admin%5Cx",
        "/admin%00",
    ] {
        let r = send(&envoy, "GET", path, &[], None);
        assert_not_canonical(&r, &format!("GET {path}"));
        // With a valid credential too: the path itself is refused.
        let r = send(&envoy, "GET", path, &[("x-api-key", API_KEY)], None);
        assert_not_canonical(&r, &format!("GET {path} with a key"));
    }
    assert_eq!(up.count(), 0, "a refused request reached the upstream: {:?}", up.requests());

    // Differs only by an encoded unreserved character: matched as /admin ...
    let r = send(&envoy, "GET", "/%61dmin", &[], None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["type"], "urn:portcullis:problem:missing_credentials");
    assert_eq!(up.count(), 0);
    // ... and with a credential the upstream receives the canonical path (query untouched).
    let r = send(&envoy, "GET", "/%61dmin", &[("x-api-key", API_KEY)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/admin");
    let r = send(&envoy, "GET", "/%61dmin/%75sers?q=%41", &[("x-api-key", API_KEY)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/admin/users?q=%41");
    let seen: Vec<Value> = up.requests().iter().map(|q| q["path"].clone()).collect();
    assert_eq!(seen, vec![json!("/admin"), json!("/admin/users?q=%41")], "the path matched is the path forwarded");
    up.clear();

    // match.ignore_case on the /admin route.
    for path in ["/ADMIN", "/Admin/users"] {
        let r = send(&envoy, "GET", path, &[], None);
        assert_eq!(r.status, 401, "GET {path}: {}", r.text());
    }
    // HEAD matches a GET-only route.
    let r = send(&envoy, "HEAD", "/reports", &[], None);
    assert_eq!(r.status, 401, "HEAD /reports");
    assert_eq!(send(&envoy, "HEAD", "/reports", &[("x-api-key", API_KEY)], None).status, 200);
    assert_eq!(up.requests().iter().filter(|q| q["method"] == "HEAD").count(), 1);
    up.clear();

    // A lower-case method on a POST-only route, over raw HTTP/1.1. Envoy 1.40's HTTP/1 codec
    // refuses it itself (400 `text/plain` "Bad Request", before any filter runs), so the
    // filter's own method check is not what answers here; either way it must be a 400 that
    // never reaches the upstream.
    let r = send(&envoy, "post", "/orders", &[], Some(b"{}"));
    assert_lower_case_method_refused(&r, &up, "post /orders");
    // Upper-case POST without a key is challenged; with one it goes on.
    assert_eq!(send(&envoy, "POST", "/orders", &[], Some(b"{}")).status, 401);
    assert_eq!(send(&envoy, "POST", "/orders", &[("x-api-key", API_KEY)], Some(b"{}")).status, 200);
}

// ---------------------------------------------------------------------------------------
// 2. Token endpoint (password grant, forward mode)
// ---------------------------------------------------------------------------------------

const IDENTITY_HEADER: &str = "x-login-identity";
const EXTRA_INFO_HEADER: &str = "x-login-extra";

fn grant_config() -> Value {
    json!({"password_grant": {
        "token_path": "/oauth/token",
        "identities": two_backend_identities(),
        "mode": "forward",
        "forward": {
            "token_endpoint": {"cluster": "upstream", "authority": "token.test", "path": "/oauth/token"},
            "identity_header": IDENTITY_HEADER,
            "extra_info_header": EXTRA_INFO_HEADER
        }
    }})
}

/// Forged identity headers: the default names (owned through the `x-portcullis-` prefix), the
/// configured names, and `_` spellings of both.
fn forged() -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-portcullis-identity", "ldap"),
        ("x-portcullis-extra-info", "eyJyb2xlcyI6WyJhZG1pbiJdfQ"),
        ("x-portcullis-client", "admin"),
        ("x_portcullis_identity", "ldap"),
        (IDENTITY_HEADER, "ldap"),
        (EXTRA_INFO_HEADER, "eyJyb2xlcyI6WyJhZG1pbiJdfQ"),
        ("x_login_identity", "ldap"),
    ]
}

fn login_body(user: &str, password: &str) -> String {
    http::form_encode(&[("grant_type", "password"), ("username", user), ("password", password)])
}

/// Old behaviour: the identity check ran only for `POST` to the exact token path with a body.
/// (a) A body-less `POST /oauth/token?grant_type=password&username=alice&password=x` was passed
/// on untouched, forged `x-portcullis-identity` / `-extra-info` headers included: a token server
/// that reads OAuth parameters from the query (many do) and trusts those headers issued a token
/// for alice, with admin roles, without any backend being asked. (b) Body-less requests did not
/// get the owned-header removal at all. (c) `/oauth/token/`, `/oauth/%74oken` and
/// `/OAUTH/TOKEN` were not "the token path" and went to the token server unchecked; a
/// `GET /oauth/token?username=a&password=b` likewise.
#[test]
fn token_endpoint_variants_are_all_checked() {
    let idp = TestIdp::start();
    idp.add_backend("legacy");
    idp.add_backend("ldap");
    idp.add_user("legacy", "alice", "pw-alice", Some(json!({"dept": "ops"})));
    let up = EchoUpstream::start();
    let envoy = Gateway::new(&grant_config()).cluster("upstream", up.port).cluster("idp", idp.port).start();
    let forged = forged();
    let configured = [IDENTITY_HEADER, EXTRA_INFO_HEADER];

    // (a) OAuth parameters in the query string, empty body, forged headers.
    for framing in [Some(&b""[..]), None] {
        let mut headers = vec![("content-type", FORM)];
        headers.extend_from_slice(&forged);
        let r = send(&envoy, "POST", "/oauth/token?grant_type=password&username=alice&password=x", &headers, framing);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"], "invalid_request", "{}", r.text());
    }
    assert!(idp.backend_hits().is_empty(), "a backend was asked: {:?}", idp.backend_hits());
    assert_eq!(up.count(), 0, "{:?}", up.requests());

    // (b) No query, empty body (no framing, Content-Length: 0, empty chunked), forged headers:
    // whatever the answer, no forged header may reach the token server.
    let port = envoy.listeners[0].1;
    let mut outcomes = Vec::new();
    for content_type in [Some(FORM), None] {
        for framing in [Some(&b""[..]), None] {
            let mut headers = forged.clone();
            if let Some(ct) = content_type {
                headers.push(("content-type", ct));
            }
            let r = send(&envoy, "POST", "/oauth/token", &headers, framing);
            outcomes.push((content_type.is_some(), framing.is_some(), r.status));
        }
        let mut raw = String::from("POST /oauth/token HTTP/1.1\r\nHost: token.test\r\nTransfer-Encoding: chunked\r\n");
        if let Some(ct) = content_type {
            raw.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        for (k, v) in &forged {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("Connection: close\r\n\r\n0\r\n\r\n");
        let r = http::request_raw(&format!("127.0.0.1:{port}"), raw.as_bytes()).expect("chunked request answered");
        outcomes.push((content_type.is_some(), true, r.status));
    }
    eprintln!("body-less token requests (form?, framed?, status): {outcomes:?}");
    for q in up.requests() {
        let leaked = owned_names(&q["headers"], &configured);
        assert!(leaked.is_empty(), "forged identity headers reached the token server: {leaked:?} in {q}");
    }
    assert!(idp.backend_hits().is_empty(), "a backend was asked for an empty body: {:?}", idp.backend_hits());
    up.clear();

    // (c) Path variants of the token endpoint go through the identity check.
    for path in ["/oauth/token/", "/oauth/%74oken", "/OAUTH/TOKEN"] {
        idp.reset_hits();
        let body = login_body("alice", "wrong");
        let r = send(&envoy, "POST", path, &[("content-type", FORM)], Some(body.as_bytes()));
        assert_eq!(r.status, 400, "POST {path}: {}", r.text());
        assert_eq!(r.json(), json!({"error": "invalid_grant"}), "POST {path}");
        let hits: Vec<String> = idp.backend_hits().into_iter().map(|(b, _)| b).collect();
        assert_eq!(hits, vec!["ldap", "legacy"], "POST {path}: every backend asked");
    }
    assert!(
        up.requests().iter().all(|q| !q["body"].as_str().unwrap_or_default().contains("password=")),
        "a rejected login reached the token server: {:?}",
        up.requests()
    );
    // The right password on a variant path: accepted, relayed with OUR identity headers only.
    idp.reset_hits();
    let mut headers = vec![("content-type", FORM)];
    headers.extend_from_slice(&forged);
    let body = login_body("alice", "pw-alice");
    let r = send(&envoy, "POST", "/oauth/%74oken", &headers, Some(body.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["headers"][IDENTITY_HEADER], "legacy");
    let extra = portcullis::wire::b64::decode(seen["headers"][EXTRA_INFO_HEADER].as_str().unwrap()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&extra).unwrap(), json!({"dept": "ops"}));
    for q in up.requests() {
        for leaked in owned_names(&q["headers"], &configured) {
            let v = q["headers"][&leaked].as_str().unwrap_or_default();
            assert!(
                (leaked == IDENTITY_HEADER && v == "legacy") || (leaked == EXTRA_INFO_HEADER && v != forged[1].1),
                "forged {leaked}: {v:?} reached the token server: {q}"
            );
        }
    }
    up.clear();
    idp.reset_hits();

    // Refused outright, no backend asked, nothing forwarded.
    let body = login_body("alice", "pw-alice");
    let r = send(&envoy, "POST", "//oauth/token", &[("content-type", FORM)], Some(body.as_bytes()));
    assert_not_canonical(&r, "POST //oauth/token");
    // (Refused by Envoy's HTTP/1 codec itself, see the first test.)
    let r = send(&envoy, "post", "/oauth/token", &[("content-type", FORM)], Some(body.as_bytes()));
    assert_lower_case_method_refused(&r, &up, "post /oauth/token");
    let r = send(&envoy, "GET", "/oauth/token?username=a&password=b", &[], None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_request", "{}", r.text());
    let r = send(&envoy, "GET", "/oauth/token", &[], None);
    assert_eq!((r.status, &r.json()["error"]), (400, &json!("invalid_request")), "non-POST on the token path");
    assert!(idp.backend_hits().is_empty(), "{:?}", idp.backend_hits());
    assert_eq!(up.count(), 0, "{:?}", up.requests());
}

// ---------------------------------------------------------------------------------------
// 3. Owned headers, `_` folded to `-`
// ---------------------------------------------------------------------------------------

fn introspection(cluster: &str, extra: Value) -> Value {
    let mut i = json!({
        "endpoint": {"cluster": cluster, "authority": "idp.test", "path": "/introspect", "timeout": "1s"},
        "client_id": "gateway",
        "client_secret_env": "INTROSPECTION_SECRET",
        "upstream_header": {"name": "x-access-jwt", "value_prefix": "Bearer "},
        "claim_to_headers": [{"header_name": "x-client-id", "claim_name": "client_id"}],
        "cache_duration": "300s",
        "negative_cache_duration": "10s"
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        i[k] = v;
    }
    i
}

/// Old behaviour: only names spelled `x-portcullis-*` (and configured names, with `-`) were
/// removed. Envoy accepts `_` in header names by default, and CGI/WSGI/Rack upstreams map
/// `x_portcullis_client` and `x-portcullis-client` to the same variable
/// (`HTTP_X_PORTCULLIS_CLIENT`), so `x_portcullis_client: admin` reached the upstream beside
/// (or, for the framework, instead of) Portcullis's own value. The introspection
/// `upstream_header` was not owned at all: a forged `x-access-jwt` passed on anonymous routes.
#[test]
fn owned_headers_are_recognised_with_underscores() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let mut cfg = bypass_config();
    cfg["introspection"] = introspection("idp", json!({}));
    let envoy = Gateway::new(&cfg)
        .env("INTROSPECTION_SECRET", "gateway-secret")
        .cluster("upstream", up.port)
        .cluster("idp", idp.port)
        .start();
    let forged = [
        ("x_portcullis_client", "admin"),
        ("X-Portcullis-Client", "admin"),
        ("X_Portcullis_Auth", "jwt:corp"),
        ("x-portcullis_decision", "allow"),
        ("x_access_jwt", "Bearer forged"),
        ("X-Access-JWT", "Bearer forged"),
        ("x_client_id", "admin"),
    ];
    let configured = ["x-access-jwt", "x-client-id"];

    // Anonymous route: every forged spelling is removed.
    let r = send(&envoy, "GET", "/public/x", &forged, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let leaked = owned_names(&r.json()["headers"], &configured);
    assert!(leaked.is_empty(), "reached the upstream: {leaked:?} in {}", r.json()["headers"]);

    // Authenticated route: only Portcullis's own values remain.
    let mut with_key = forged.to_vec();
    with_key.push(("x-api-key", API_KEY));
    let r = send(&envoy, "GET", "/admin/x", &with_key, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    let mut leaked = owned_names(h, &configured);
    leaked.sort();
    assert_eq!(leaked, vec!["x-portcullis-auth", "x-portcullis-client"], "{h}");
    assert_eq!(h["x-portcullis-client"], "ops");
    assert_eq!(h["x-portcullis-auth"], "api_key");
}

// ---------------------------------------------------------------------------------------
// 4. A parked request is answered when the introspection it waits for fails
// ---------------------------------------------------------------------------------------

/// Old behaviour: the second of two concurrent requests with the same uncached opaque token
/// was parked while the first one's introspection ran. When that introspection failed (500),
/// the parked request was woken on the root context's tick, took the lease and dispatched its
/// own introspection callout from the root context; the reply was delivered to the root
/// context, which did not hand it to the request, so the request hung until Envoy's stream
/// idle timeout (5 minutes by default) instead of getting its 503.
#[test]
fn a_parked_request_is_answered_when_the_introspection_fails() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({"introspection": introspection("idp", json!({}))});
    let envoy = Gateway::new(&cfg)
        .env("INTROSPECTION_SECRET", "gateway-secret")
        .cluster("upstream", up.port)
        .cluster("idp", idp.port)
        .start();
    let delay = Duration::from_millis(300);
    idp.set_behavior(Endpoint::Introspect, Behavior::DelayThenStatus(delay, 500));
    let port = envoy.listeners[0].1;
    let mut report = Vec::new();
    for round in 0..3 {
        let token = format!("opaque-parked-{round}-0123456789abcdef");
        idp.register_opaque(&token, json!({"client_id": "svc", "sub": "u", "exp": now() + 600}));
        let hits_before = idp.hits(Endpoint::Introspect);
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (token, barrier) = (token.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Stagger the second request so the first has taken the lease.
                    if i == 1 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    let t0 = Instant::now();
                    let auth = format!("Bearer {token}");
                    let r = http::request_with_timeout(
                        "GET",
                        &format!("http://127.0.0.1:{port}/orders"),
                        &[("authorization", &auth)],
                        None,
                        CLIENT_TIMEOUT,
                    );
                    (r, t0.elapsed())
                })
            })
            .collect();
        for t in threads {
            let (r, elapsed) = t.join().unwrap();
            let r = r.unwrap_or_else(|e| {
                panic!("round {round}: no answer within {CLIENT_TIMEOUT:?} ({e}): parked request hung")
            });
            assert_eq!(r.status, 503, "round {round}: {}", r.text());
            assert_eq!(r.json()["type"], "urn:portcullis:problem:introspection_unavailable");
            assert!(r.header("retry-after").is_some());
            assert!(elapsed < Duration::from_secs(3), "round {round}: answered after {elapsed:?}");
            report.push(elapsed.as_millis());
        }
        let calls = idp.hits(Endpoint::Introspect) - hits_before;
        eprintln!("round {round}: introspection calls {calls}");
        assert!((1..=2).contains(&calls), "round {round}: {calls} introspection calls");
    }
    eprintln!("response times (ms), two concurrent requests per round: {report:?}");
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------------------------------
// 5. Anonymous rate limiting under use_remote_address: true
// ---------------------------------------------------------------------------------------

/// Old behaviour (the harness's and Envoy's default HCM, `use_remote_address: false`): Envoy
/// takes the client address from the last `X-Forwarded-For` entry, so `source.address` — the
/// key of anonymous buckets — was whatever the client wrote, and a client rotating
/// `X-Forwarded-For` got a fresh bucket per request: [200, 200, 200]. With
/// `use_remote_address: true` (what the README prescribes for an edge Envoy) the key is the
/// TCP peer's address.
#[test]
fn anonymous_limits_key_on_the_peer_under_use_remote_address() {
    let up = EchoUpstream::start();
    let cfg = json!({
        "rate_limit": {"plans": {"anon": {"requests": 2, "per": "3600s"}}},
        "requires": "none",
        "routes": [{"match": {"prefix": "/"}, "requires": "none", "plan": "anon"}]
    });
    let envoy = Gateway::empty()
        .listener(Listener::new("edge", &cfg).use_remote_address())
        .listener(Listener::new("trusting", &cfg))
        .cluster("upstream", up.port)
        .start();

    let statuses = |listener: &str, prefix: &str| -> Vec<u16> {
        (1..=3)
            .map(|i| {
                let xff = format!("{prefix}.{i}");
                send_to(envoy.port(listener), "GET", "/anything", &[("x-forwarded-for", &xff)], None).status
            })
            .collect()
    };
    let s = statuses("edge", "203.0.113");
    assert_eq!(s, vec![200, 200, 429], "use_remote_address: true");
    let r = send_to(envoy.port("edge"), "GET", "/anything", &[("x-forwarded-for", "203.0.113.99")], None);
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["type"], "urn:portcullis:problem:rate_limited");
    // Contrast, documenting why the option matters: Envoy's default trusts the header.
    let s = statuses("trusting", "198.51.100");
    eprintln!("use_remote_address: false → {s:?}");
    assert_eq!(s, vec![200, 200, 200], "use_remote_address: false keys on X-Forwarded-For");
}

// ---------------------------------------------------------------------------------------
// 6. Shared state is namespaced per configuration
// ---------------------------------------------------------------------------------------

/// Old behaviour: every Portcullis filter sharing a VM id shared one introspection cache keyed
/// by SHA-256(token) only. Listener A's server said T is active; listener B, configured with a
/// different introspection server that does not know T, found A's cached answer and admitted T
/// (200) without asking its own server.
#[test]
fn introspection_cache_is_namespaced_per_configuration() {
    let idp_a = TestIdp::start();
    let idp_b = TestIdp::start();
    let up = EchoUpstream::start();
    let token = "opaque-namespaced-0123456789abcdef";
    idp_a.register_opaque(token, json!({"client_id": "svc-a", "sub": "u", "exp": now() + 600}));
    let cfg_a = json!({"introspection": introspection("idp_a", json!({}))});
    let cfg_b = json!({"introspection": introspection("idp_b", json!({}))});
    let envoy = Gateway::empty()
        .listener(Listener::new("a", &cfg_a))
        .listener(Listener::new("b", &cfg_b))
        .env("INTROSPECTION_SECRET", "gateway-secret")
        .cluster("upstream", up.port)
        .cluster("idp_a", idp_a.port)
        .cluster("idp_b", idp_b.port)
        .start();
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str())];

    let r = send_to(envoy.port("a"), "GET", "/orders", &headers, None);
    assert_eq!(r.status, 200, "A: {}", r.text());
    assert_eq!(r.json()["headers"]["x-client-id"], "svc-a");
    assert_eq!(idp_a.hits(Endpoint::Introspect), 1);

    let r = send_to(envoy.port("b"), "GET", "/orders", &headers, None);
    assert_eq!(idp_b.hits(Endpoint::Introspect), 1, "B must ask its own server (B answered {})", r.status);
    assert_eq!(r.status, 401, "B accepted T with A's answer: {}", r.text());
    assert_eq!(r.json()["type"], "urn:portcullis:problem:token_inactive");

    // B's negative answer does not leak back into A either.
    let r = send_to(envoy.port("a"), "GET", "/orders", &headers, None);
    assert_eq!(r.status, 200, "A after B: {}", r.text());
    assert_eq!(idp_a.hits(Endpoint::Introspect), 1, "A answered from its own cache");
}

// ---------------------------------------------------------------------------------------
// 7. A token request whose body ends in trailers
// ---------------------------------------------------------------------------------------

/// `POST /oauth/token` with a chunked form `body` in `pieces` chunks, then `trailers` (none:
/// an ordinary chunked request), written byte for byte.
fn chunked_token_request(body: &str, pieces: usize, trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut raw = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: token.test\r\nContent-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n"
    );
    if !trailers.is_empty() {
        let names: Vec<&str> = trailers.iter().map(|(k, _)| *k).collect();
        raw.push_str(&format!("Trailer: {}\r\n", names.join(", ")));
    }
    raw.push_str("Connection: close\r\n\r\n");
    let size = body.len().div_ceil(pieces);
    for chunk in body.as_bytes().chunks(size) {
        raw.push_str(&format!("{:x}\r\n{}\r\n", chunk.len(), String::from_utf8_lossy(chunk)));
    }
    raw.push_str("0\r\n");
    for (k, v) in trailers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

/// Old behaviour: the password-grant check ran when the body callback saw the end of the
/// stream. A request whose body ends in trailers never has such a body callback (the stream
/// ends with the trailers), so the check never ran: no identity backend was asked, and the
/// form, password included, was relayed to the token server, which issued a token for a
/// password nobody checked. Now the filter refuses it: 400 `invalid_request`. Envoy's HTTP/1
/// codec hands request trailers to the filters only with `http_protocol_options:
/// {enable_trailers: true}` (otherwise it drops them), hence [`Gateway::http1_trailers`].
#[test]
fn a_token_request_ending_in_trailers_is_refused() {
    let idp = TestIdp::start();
    idp.add_backend("legacy");
    idp.add_backend("ldap");
    idp.add_user("legacy", "alice", "pw-alice", None);
    let up = EchoUpstream::start();
    let envoy =
        Gateway::new(&grant_config()).http1_trailers().cluster("upstream", up.port).cluster("idp", idp.port).start();
    let addr = format!("127.0.0.1:{}", envoy.listeners[0].1);
    let body = login_body("alice", "pw-alice");

    // Control: the same login, chunked without trailers, is checked and relayed.
    let r = http::request_raw(&addr, &chunked_token_request(&body, 2, &[])).expect("chunked login answered");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"][IDENTITY_HEADER], "legacy", "{}", r.text());
    assert_eq!(idp.backend_hits().len(), 2, "{:?}", idp.backend_hits());
    up.clear();
    idp.reset_hits();

    for pieces in [1, 2] {
        let raw = chunked_token_request(&body, pieces, &[("x-checksum", "sha256-abc")]);
        let r = http::request_raw(&addr, &raw).expect("login with trailers answered");
        assert_eq!(r.status, 400, "{pieces} chunk(s) + trailers: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_request", "{pieces} chunk(s) + trailers: {}", r.text());
    }
    assert!(idp.backend_hits().is_empty(), "a backend was asked: {:?}", idp.backend_hits());
    assert_eq!(up.count(), 0, "the login reached the token server: {:?}", up.requests());
}

// ---------------------------------------------------------------------------------------
// 8. A lower-case method over HTTP/2
// ---------------------------------------------------------------------------------------

/// Old behaviour: Envoy's HTTP/1 codec refuses `post` (see the first test), but over HTTP/2
/// the `:method` pseudo-header reaches the filters as sent. Routes matched methods exactly,
/// so `post /orders` did not match the POST-only route and fell to the default (`requires:
/// "none"`): forwarded without a credential to an upstream that may well treat `post` as
/// `POST`. Now a method that is not upper case is refused by the filter itself: 400
/// `request_not_canonical`, with or without a credential, on any route.
#[test]
fn a_lower_case_method_over_http2_is_refused_by_the_filter() {
    let up = EchoUpstream::start();
    let envoy = Gateway::new(&bypass_config()).cluster("upstream", up.port).start();
    // No request body: the filter answers at the headers, and an HTTP/2 stream that is still
    // sending DATA when that early answer lands is reset by Envoy, which curl may report as
    // a framing error instead of the answer (a race of the client, not of the filter).
    let h2c = |method: &str, path: &str, key: Option<&str>| {
        let mut request = curl::Request::new(method, &envoy.url(path)).h2c().timeout(CLIENT_TIMEOUT);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send().unwrap_or_else(|e| panic!("{method} {path} over h2c: {e}"))
    };

    // Sanity: h2c reaches the filter, which checks the route, and then the upstream.
    assert_eq!(h2c("POST", "/orders", None).status, 401);
    let r = h2c("POST", "/orders", Some(API_KEY));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["method"], "POST");
    up.clear();

    for path in ["/orders", "/admin"] {
        for key in [None, Some(API_KEY)] {
            let r = h2c("post", path, key);
            assert_not_canonical(&r, &format!("post {path} over HTTP/2, key: {}", key.is_some()));
        }
    }
    assert_eq!(up.count(), 0, "a lower-case method reached the upstream: {:?}", up.requests());
}

// ---------------------------------------------------------------------------------------
// 9. A spoofed X-Forwarded-For cannot lock another address out
// ---------------------------------------------------------------------------------------

/// Old behaviour (Envoy's default HCM, `use_remote_address: false`): the lockout's address
/// subject is `source.address`, which Envoy then takes from the last `X-Forwarded-For` entry.
/// Three failed logins sent from anywhere with `X-Forwarded-For: 127.0.0.9` locked 127.0.0.9
/// out, and the real client at 127.0.0.9 got 429 for its valid password for the whole block.
/// With `use_remote_address: true` the failures count against the sender's real address
/// (127.0.0.1 here) and the chosen victim is untouched. The clients really connect from
/// 127.0.0.1 and 127.0.0.9 (both local on Linux); the contrast runs on a second Envoy so the
/// two runs share no lockout state.
#[test]
fn a_spoofed_forwarded_for_cannot_lock_out_another_address() {
    const VICTIM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
    let idp = TestIdp::start();
    idp.add_backend("legacy");
    idp.add_backend("ldap");
    idp.add_user("ldap", "bob", "pw-bob", None);
    let up = EchoUpstream::start();
    let mut cfg = grant_config();
    cfg["password_grant"]["lockout"] = json!({"max_failures": 3, "window": "60s", "block": "300s"});
    let victim = VICTIM.to_string();

    // Three failed logins from 127.0.0.1, each for a different username, each claiming to
    // come from the victim; then the victim's own valid login, from the victim's address.
    let attack_then_victim_logs_in = |envoy: &Envoy| -> (Vec<u16>, http::Response) {
        let failed = (1..=3)
            .map(|i| {
                let body = login_body(&format!("nobody-{i}"), "wrong");
                let headers = [("content-type", FORM), ("x-forwarded-for", victim.as_str())];
                send(envoy, "POST", "/oauth/token", &headers, Some(body.as_bytes())).status
            })
            .collect();
        let r = curl::Request::new("POST", &envoy.url("/oauth/token"))
            .from(VICTIM)
            .header("content-type", FORM)
            .body(login_body("bob", "pw-bob").as_bytes())
            .timeout(CLIENT_TIMEOUT)
            .send()
            .unwrap_or_else(|e| panic!("login from {VICTIM}: {e}"));
        (failed, r)
    };

    let edge = Gateway::new(&cfg).use_remote_address().cluster("upstream", up.port).cluster("idp", idp.port).start();
    let (failed, r) = attack_then_victim_logs_in(&edge);
    assert_eq!(failed, vec![400, 400, 400], "the spoofed failures are ordinary failures");
    assert_eq!(r.status, 200, "the victim was locked out by someone else's failures: {}", r.text());
    // The failures were counted against their real sender, which is now locked out (so the
    // 200 above also proves the victim's login did not come from 127.0.0.1).
    let body = login_body("bob", "pw-bob");
    let r = send(&edge, "POST", "/oauth/token", &[("content-type", FORM)], Some(body.as_bytes()));
    assert_eq!(r.status, 429, "the sender (127.0.0.1) is locked: {}", r.text());
    assert_eq!(edge.stat("wasmcustom.portcullis.grant.lockout_engaged"), 1, "one address, no username");
    drop(edge);

    // Contrast, documenting why the option matters: Envoy's default trusts the header.
    let trusting = Gateway::new(&cfg).cluster("upstream", up.port).cluster("idp", idp.port).start();
    let (failed, r) = attack_then_victim_logs_in(&trusting);
    eprintln!("use_remote_address: false → failures {failed:?}, then the victim's login: {}", r.status);
    assert_eq!(failed, vec![400, 400, 400]);
    assert_eq!(r.status, 429, "use_remote_address: false counts failures against X-Forwarded-For");
}
