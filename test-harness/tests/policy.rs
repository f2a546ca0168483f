//! Issue 13 — per-route access policy through a real Envoy (2 workers), with client
//! certificates made at test time ([`Pki`]: a CA, a server certificate for 127.0.0.1, client
//! certificates with SPIFFE URI SANs) on a TLS listener that validates but does not require
//! them:
//!
//! * `requires: mtls` (client id = URI SAN, 403 `mtls_required` without a certificate) and
//!   `when` on `source.principal`;
//! * RFC 8705 certificate-bound tokens (`cnf["x5t#S256"]`) and `require_bound_token`;
//! * `when` on nested and array claims, on `source.ip` (with `use_remote_address`);
//!   `match.hosts`; `allowed_clients`; `requires: {"optional": [...]}`;
//! * `bypass_cors_preflight`.
//!
//! Requests over TLS are sent with `curl` (`--cacert`, `--cert`, `--key`); every request has a
//! client timeout.

use std::net::Ipv4Addr;
use std::time::Duration;

use portcullis::apikey::hash_hex;
use portcullis_harness::curl;
use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::{Gateway, Listener};
use portcullis_harness::http;
use portcullis_harness::idp::{Alg, TestIdp};
use portcullis_harness::pki::{Cert, Pki};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

const SHOP: &str = "spiffe://cluster.local/ns/shop/sa/web";
const OTHER: &str = "spiffe://cluster.local/ns/other/sa/x";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A CA, the server certificate, and the two client certificates.
struct Certs {
    pki: Pki,
    shop: Cert,
    other: Cert,
}

fn certs() -> Certs {
    let pki = Pki::new();
    let shop = pki.client("shop-web", Some(SHOP));
    let other = pki.client("other-x", Some(OTHER));
    Certs { pki, shop, other }
}

/// The JWT provider `corp`: the IdP's `rsa-a` key, audience `orders-api`.
fn corp(idp: &TestIdp) -> Value {
    json!({
        "issuer": idp.issuer(),
        "audiences": ["orders-api"],
        "local_jwks": {"inline_string": idp.public_jwks_for(&["rsa-a"])}
    })
}

/// `GET path` over TLS to the listener `tls`, presenting `cert` when given.
fn tls_get(envoy: &Envoy, certs: &Certs, cert: Option<&Cert>, path: &str, headers: &[(&str, &str)]) -> http::Response {
    let url = format!("https://127.0.0.1:{}{path}", envoy.port("tls"));
    let mut request = curl::Request::new("GET", &url).ca(&certs.pki.ca.cert).timeout(CLIENT_TIMEOUT);
    if let Some(c) = cert {
        request = request.client_cert(&c.cert, &c.key);
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `GET path` over plain HTTP to `listener`.
fn plain_get(envoy: &Envoy, listener: &str, path: &str, headers: &[(&str, &str)]) -> http::Response {
    let url = format!("http://127.0.0.1:{}{path}", envoy.port(listener));
    http::request_with_timeout("GET", &url, headers, None, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("GET {url}: no answer within {CLIENT_TIMEOUT:?}: {e}"))
}

fn problem(r: &http::Response) -> Value {
    if r.header("content-type") == Some("application/problem+json") {
        r.json()["type"].clone()
    } else {
        Value::Null
    }
}

fn assert_problem(r: &http::Response, status: u16, reason: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(problem(r), json!(format!("urn:portcullis:problem:{reason}")), "{what}: {}", r.text());
}

/// A TLS listener and a plain one, both running `cfg`.
fn tls_and_plain(cfg: &Value, certs: &Certs, up: &EchoUpstream) -> Envoy {
    Gateway::empty()
        .listener(Listener::new("tls", cfg).tls(&certs.pki))
        .listener(Listener::new("plain", cfg))
        .cluster("upstream", up.port)
        .start()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------------------
// 1. requires: mtls
// ---------------------------------------------------------------------------------------

#[test]
fn a_validated_client_certificate_is_a_credential() {
    let certs = certs();
    let up = EchoUpstream::start();
    let envoy = tls_and_plain(&json!({"requires": {"any": ["mtls"]}}), &certs, &up);

    let forged = [("x-portcullis-client", "admin"), ("x-portcullis-auth", "api_key")];
    let r = tls_get(&envoy, &certs, Some(&certs.shop), "/orders", &forged);
    assert_eq!(
        r.status,
        200,
        "the shop certificate over TLS: {} (if 403 mtls_required, Envoy's connection.mtls was not recognised)",
        r.text()
    );
    let h = &r.json()["headers"];
    assert_eq!(h["x-portcullis-client"], SHOP, "the client id is the URI SAN");
    assert_eq!(h["x-portcullis-auth"], "mtls");

    let r = tls_get(&envoy, &certs, Some(&certs.other), "/orders", &[]);
    assert_eq!((r.status, r.json()["headers"]["x-portcullis-client"].as_str()), (200, Some(OTHER)));

    // TLS without a client certificate, and plain HTTP: the certificate is all that is missing.
    let r = tls_get(&envoy, &certs, None, "/orders", &[]);
    assert_problem(&r, 403, "mtls_required", "TLS without a client certificate");
    let r = plain_get(&envoy, "plain", "/orders", &[]);
    assert_problem(&r, 403, "mtls_required", "plain HTTP");
    assert_eq!(up.count(), 2, "refused requests never reach the upstream");
}

// ---------------------------------------------------------------------------------------
// 2. when: source.principal
// ---------------------------------------------------------------------------------------

#[test]
fn source_principal_conditions_select_workloads() {
    let certs = certs();
    let up = EchoUpstream::start();
    let cfg = json!({"routes": [{
        "match": {"prefix": "/"},
        "requires": {"any": ["mtls"]},
        "when": [{"key": "source.principal", "values": ["spiffe://cluster.local/ns/shop/*"]}]
    }]});
    let envoy = tls_and_plain(&cfg, &certs, &up);
    let r = tls_get(&envoy, &certs, Some(&certs.shop), "/orders", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = tls_get(&envoy, &certs, Some(&certs.other), "/orders", &[]);
    assert_problem(&r, 403, "policy_denied", "a workload of another namespace");
    assert!(!r.text().contains(OTHER), "the problem body does not echo the principal");
    assert_eq!(up.count(), 1);
}

// ---------------------------------------------------------------------------------------
// 3. Certificate-bound tokens (RFC 8705)
// ---------------------------------------------------------------------------------------

#[test]
fn certificate_bound_tokens_need_their_certificate() {
    let certs = certs();
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({
        "providers": {"corp": corp(&idp)},
        "routes": [{"match": {"prefix": "/strict"}, "requires": {"any": ["corp"]}, "require_bound_token": true}]
    });
    let envoy = tls_and_plain(&cfg, &certs, &up);
    let mut claims = idp.default_claims("orders-api");
    claims["cnf"] = json!({"x5t#S256": certs.shop.x5t_s256()});
    let bound = bearer(&idp.mint(Alg::RS256, "rsa-a", claims));
    let unbound = bearer(&idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api")));

    for path in ["/orders", "/strict"] {
        let r = tls_get(&envoy, &certs, Some(&certs.shop), path, &[("authorization", &bound)]);
        assert_eq!(r.status, 200, "{path}: the bound token with its certificate: {}", r.text());
    }
    let r = tls_get(&envoy, &certs, Some(&certs.other), "/orders", &[("authorization", &bound)]);
    assert_problem(&r, 401, "token_binding", "another client certificate");
    assert!(r.header("www-authenticate").unwrap_or_default().contains("error=\"invalid_token\""), "{:?}", r.headers);
    let r = tls_get(&envoy, &certs, None, "/orders", &[("authorization", &bound)]);
    assert_problem(&r, 401, "token_binding", "TLS without a client certificate");
    let r = plain_get(&envoy, "plain", "/orders", &[("authorization", &bound)]);
    assert_problem(&r, 401, "token_binding", "plain HTTP");

    // require_bound_token refuses a token without cnf; elsewhere it is fine.
    let r = tls_get(&envoy, &certs, Some(&certs.shop), "/strict", &[("authorization", &unbound)]);
    assert_problem(&r, 401, "token_binding", "an unbound token on a require_bound_token route");
    let r = tls_get(&envoy, &certs, Some(&certs.shop), "/orders", &[("authorization", &unbound)]);
    assert_eq!(r.status, 200, "an unbound token elsewhere: {}", r.text());
    assert_eq!(up.count(), 3);
}

// ---------------------------------------------------------------------------------------
// 4. when: nested and array claims
// ---------------------------------------------------------------------------------------

#[test]
fn when_conditions_read_nested_and_array_claims() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({
        "providers": {"corp": corp(&idp)},
        "routes": [{
            "match": {"prefix": "/"},
            "requires": {"any": ["corp"]},
            "when": [
                {"key": "request.auth.claims[realm_access][roles]", "values": ["writer"]},
                {"key": "request.auth.claims[groups]", "values": ["ops-*"]}
            ]
        }]
    });
    let envoy = Gateway::new(&cfg).cluster("upstream", up.port).start();
    let token = |roles: Value, groups: Value| {
        let mut claims = idp.default_claims("orders-api");
        claims["realm_access"] = json!({"roles": roles});
        claims["groups"] = groups;
        bearer(&idp.mint(Alg::RS256, "rsa-a", claims))
    };

    let ok = token(json!(["reader", "writer"]), json!(["dev", "ops-eu"]));
    let r = plain_get(&envoy, "main", "/orders", &[("authorization", &ok)]);
    assert_eq!(r.status, 200, "{}", r.text());

    let cases = [
        ("neither", token(json!(["reader-7f3a"]), json!(["dev-9c1e"])), ["reader-7f3a", "dev-9c1e"]),
        ("roles only", token(json!(["writer"]), json!(["dev-9c1e"])), ["writer", "dev-9c1e"]),
        ("groups only", token(json!(["reader-7f3a"]), json!(["ops-eu"])), ["reader-7f3a", "ops-eu"]),
    ];
    for (what, t, values) in cases {
        let r = plain_get(&envoy, "main", "/orders", &[("authorization", &t)]);
        assert_problem(&r, 403, "policy_denied", what);
        for v in values {
            assert!(!r.text().contains(v), "{what}: the problem body echoes the claim value {v:?}: {}", r.text());
        }
    }
    assert_eq!(up.count(), 1);
}

// ---------------------------------------------------------------------------------------
// 5. when: source.ip
// ---------------------------------------------------------------------------------------

#[test]
fn source_ip_conditions_use_the_tcp_peer() {
    let up = EchoUpstream::start();
    // No rate limit and no password grant: source.ip is asked for by the conditions alone.
    let cfg = json!({"routes": [
        {"match": {"prefix": "/allow"}, "requires": "none", "when": [{"key": "source.ip", "values": ["127.0.0.1"]}]},
        {"match": {"prefix": "/"}, "requires": "none", "when": [{"key": "source.ip", "notValues": ["127.0.0.2"]}]}
    ]});
    let envoy = Gateway::new(&cfg).use_remote_address().cluster("upstream", up.port).start();
    let send = |path: &str, ip: Ipv4Addr, xff: Option<&str>| {
        let url = envoy.url(path);
        let mut request = curl::Request::new("GET", &url).from(ip).timeout(CLIENT_TIMEOUT);
        if let Some(x) = xff {
            request = request.header("x-forwarded-for", x);
        }
        request.send().unwrap_or_else(|e| panic!("GET {url} from {ip}: {e}"))
    };
    let (one, two) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(send("/orders", one, None).status, 200, "notValues [127.0.0.2], from 127.0.0.1");
    assert_problem(&send("/orders", two, None), 403, "policy_denied", "notValues [127.0.0.2], from 127.0.0.2");
    // A spoofed X-Forwarded-For changes nothing under use_remote_address.
    assert_problem(&send("/orders", two, Some("127.0.0.1")), 403, "policy_denied", "from 127.0.0.2, spoofed XFF");
    assert_eq!(send("/orders", one, Some("127.0.0.2")).status, 200, "from 127.0.0.1, spoofed XFF");
    // The same address as an allow list.
    assert_eq!(send("/allow", one, None).status, 200, "values [127.0.0.1], from 127.0.0.1");
    assert_problem(&send("/allow", two, None), 403, "policy_denied", "values [127.0.0.1], from 127.0.0.2");
    assert_eq!(up.count(), 3);
}

// ---------------------------------------------------------------------------------------
// 6. match.hosts
// ---------------------------------------------------------------------------------------

#[test]
fn routes_match_on_hosts() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({
        "providers": {"corp": corp(&idp)},
        "routes": [
            {"match": {"prefix": "/", "hosts": ["api.example.com", "*.example.org"]}, "requires": {"any": ["corp"]}},
            {"match": {"prefix": "/"}, "requires": "none"}
        ]
    });
    let envoy = Gateway::new(&cfg).cluster("upstream", up.port).start();
    for host in ["api.example.com", "x.example.org", "API.Example.COM", "api.example.com:8443", "a.b.example.org"] {
        let r = plain_get(&envoy, "main", "/orders", &[("host", host)]);
        assert_problem(&r, 401, "missing_credentials", &format!("Host: {host}"));
    }
    for host in ["example.org", "other.example.com", "evil-example.org"] {
        let r = plain_get(&envoy, "main", "/orders", &[("host", host)]);
        assert_eq!(r.status, 200, "Host: {host} falls to the catch-all: {}", r.text());
    }
    let token = bearer(&idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api")));
    let r = plain_get(&envoy, "main", "/orders", &[("host", "api.example.com"), ("authorization", &token)]);
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// 7. allowed_clients
// ---------------------------------------------------------------------------------------

#[test]
fn allowed_clients_admit_only_the_listed_clients() {
    let up = EchoUpstream::start();
    let cfg = json!({
        "api_keys": {
            "from_headers": ["x-api-key"],
            "clients": [
                {"client_id": "partner-a", "keys_sha256": [hash_hex("key-a")]},
                {"client_id": "partner-b", "keys_sha256": [hash_hex("key-b")]}
            ]
        },
        "routes": [{"match": {"prefix": "/"}, "requires": {"any": ["api_key"]}, "allowed_clients": ["partner-a"]}]
    });
    let envoy = Gateway::new(&cfg).cluster("upstream", up.port).start();
    let r = plain_get(&envoy, "main", "/orders", &[("x-api-key", "key-a")]);
    assert_eq!((r.status, r.json()["headers"]["x-portcullis-client"].as_str()), (200, Some("partner-a")));
    let r = plain_get(&envoy, "main", "/orders", &[("x-api-key", "key-b")]);
    assert_problem(&r, 403, "policy_denied", "partner-b");
    assert!(!r.text().contains("partner-b"), "the problem body does not name the client");
    assert_eq!(up.count(), 1);
}

// ---------------------------------------------------------------------------------------
// 8. requires: optional
// ---------------------------------------------------------------------------------------

#[test]
fn optional_credentials_are_checked_when_present() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({"providers": {"corp": corp(&idp)}, "requires": {"optional": ["corp"]}});
    let envoy = Gateway::new(&cfg).cluster("upstream", up.port).start();

    let r = plain_get(&envoy, "main", "/orders", &[("x-portcullis-client", "forged")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["headers"].get("x-portcullis-client").is_none(), "anonymous: {}", r.json()["headers"]);

    let token = bearer(&idp.mint(Alg::RS256, "rsa-a", idp.default_claims("orders-api")));
    let r = plain_get(&envoy, "main", "/orders", &[("authorization", &token)]);
    assert_eq!((r.status, r.json()["headers"]["x-portcullis-client"].as_str()), (200, Some("demo-client")));

    let mut expired = idp.default_claims("orders-api");
    expired["exp"] = json!(portcullis_harness::idp::now() - 3600);
    for (what, bad) in [
        ("garbage", "Bearer not.a.jwt".to_string()),
        ("wrong key", bearer(&idp.mint(Alg::RS256, "rsa-b", idp.default_claims("orders-api")))),
        ("expired", bearer(&idp.mint(Alg::RS256, "rsa-a", expired))),
    ] {
        let r = plain_get(&envoy, "main", "/orders", &[("authorization", &bad)]);
        assert_eq!(r.status, 401, "{what}: a bad credential is refused even where none is needed: {}", r.text());
    }
    assert_eq!(up.count(), 2);
}

// ---------------------------------------------------------------------------------------
// 9. CORS preflight
// ---------------------------------------------------------------------------------------

#[test]
fn cors_preflights_bypass_authentication_only_when_asked() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let strict = json!({"providers": {"corp": corp(&idp)}});
    let mut bypass = strict.clone();
    bypass["bypass_cors_preflight"] = json!(true);
    let envoy = Gateway::empty()
        .listener(Listener::new("bypass", &bypass))
        .listener(Listener::new("strict", &strict))
        .cluster("upstream", up.port)
        .start();
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization"),
    ];
    let options = |listener: &str, headers: &[(&str, &str)]| {
        let url = format!("http://127.0.0.1:{}/orders", envoy.port(listener));
        http::request_with_timeout("OPTIONS", &url, headers, None, CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("OPTIONS {url}: {e}"))
    };

    let r = options("bypass", &preflight);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["method"], "OPTIONS", "answered by the upstream");
    assert_eq!(up.count(), 1);

    let r = options("strict", &preflight);
    assert_problem(&r, 401, "missing_credentials", "a preflight without bypass_cors_preflight");
    // Only a real preflight passes: OPTIONS without Access-Control-Request-Method, or a GET.
    let r = options("bypass", &preflight[..1]);
    assert_problem(&r, 401, "missing_credentials", "OPTIONS with Origin only");
    let r = plain_get(&envoy, "bypass", "/orders", &preflight);
    assert_problem(&r, 401, "missing_credentials", "GET with preflight headers");
    assert_eq!(up.count(), 1);
}
