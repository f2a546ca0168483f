//! Decision-flow tests of access policy (SPEC C6): client certificates, optional credentials,
//! allowed clients, `when` conditions, hosts and headers, certificate-bound tokens, CORS
//! preflights.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::tests::{cfg_with, claims, decided, mutations, req, set, status, Signer, NOW};
use super::*;
use crate::crypto::NoNative;
use crate::request::Peer;
use crate::request::PeerAddress;
use crate::store::MemStore;

/// A TLS connection with (or without) a client certificate.
#[derive(Default)]
struct FakePeer {
    cert: Option<&'static [u8]>,
    uri_san: Option<&'static str>,
    sni: Option<&'static str>,
}

impl Peer for FakePeer {
    fn mtls(&self) -> bool {
        self.cert.is_some()
    }
    fn uri_san(&self) -> Option<String> {
        self.uri_san.map(str::to_string)
    }
    fn subject(&self) -> Option<String> {
        self.cert.map(|_| "CN=client".to_string())
    }
    fn cert_sha256(&self) -> Option<[u8; 32]> {
        self.cert.map(|c| Sha256::digest(c).into())
    }
    fn sni(&self) -> Option<String> {
        self.sni.map(str::to_string)
    }
}

fn run_with(cfg: &Config, peer: &FakePeer, r: RequestView) -> Decision {
    let mut st = WorkerState::new(cfg);
    let store = MemStore::default();
    let mut ctx = Ctx {
        cfg,
        state: &mut st,
        store: &store,
        native: &NoNative,
        signer: &crate::password::NoSigner,
        peer,
        now_ms: NOW * 1000,
    };
    decided(start(&mut ctx, r))
}

fn bearer(s: &Signer, c: Value) -> String {
    format!("Bearer {}", s.mint(c))
}

const CERT: &[u8] = b"client certificate DER";
const OTHER: &[u8] = b"another certificate DER";

fn x5t(cert: &[u8]) -> String {
    crate::wire::b64::encode(&Sha256::digest(cert))
}

#[test]
fn mtls_as_a_credential_method() {
    let s = Signer::new("k1");
    let cfg = cfg_with(
        &s,
        json!({"routes": [
        {"match": {"prefix": "/internal"}, "requires": {"any": ["mtls"]}},
        {"match": {"prefix": "/both"}, "requires": {"all": ["corp", "mtls"]}},
        {"match": {"prefix": "/opt"}, "requires": {"optional": ["corp"]}}]}),
    );
    let peer = FakePeer { cert: Some(CERT), uri_san: Some("spiffe://cluster.local/ns/shop/sa/web"), sni: None };
    let d = run_with(&cfg, &peer, req("/internal/x", &[]));
    assert_eq!(status(&d), 200);
    assert_eq!(set(mutations(&d), "x-portcullis-client"), Some("spiffe://cluster.local/ns/shop/sa/web"));
    assert_eq!(set(mutations(&d), "x-portcullis-auth"), Some("mtls"));
    let d = run_with(&cfg, &FakePeer::default(), req("/internal/x", &[]));
    assert_eq!((status(&d), d.reason), (403, Some(Reason::MtlsRequired)), "only the certificate is missing");
    let tok = bearer(&s, claims());
    let d = run_with(&cfg, &FakePeer::default(), req("/both", &[("authorization", &tok)]));
    assert_eq!(d.reason, Some(Reason::MtlsRequired));
    let d = run_with(&cfg, &FakePeer::default(), req("/both", &[]));
    assert_eq!(d.reason, Some(Reason::MissingCredentials), "more than the certificate is missing");
    assert_eq!(status(&run_with(&cfg, &peer, req("/both", &[("authorization", &tok)]))), 200);
    // optional: nothing needed, but a bad credential is refused.
    assert_eq!(status(&run_with(&cfg, &FakePeer::default(), req("/opt", &[]))), 200);
    let d = run_with(&cfg, &FakePeer::default(), req("/opt", &[("authorization", "Bearer not.a.jwt")]));
    assert_eq!(status(&d), 401);
    let d = run_with(&cfg, &FakePeer::default(), req("/opt", &[("authorization", &tok)]));
    assert_eq!(set(mutations(&d), "x-portcullis-client"), Some("c1"));
}

#[test]
fn allowed_clients_and_when_conditions() {
    let s = Signer::new("k1");
    let cfg = cfg_with(
        &s,
        json!({"routes": [
        {"match": {"prefix": "/partners"}, "requires": {"any": ["corp"]}, "allowed_clients": ["partner-a", "c1"]},
        {"match": {"prefix": "/other"}, "requires": {"any": ["corp"]}, "allowed_clients": ["partner-a"]},
        {"match": {"prefix": "/admin"}, "requires": {"any": ["corp"]}, "when": [
            {"key": "request.auth.claims[realm_access][roles]", "values": ["writer"]},
            {"key": "request.auth.claims[groups]", "values": ["admins", "ops-*"]},
            {"key": "source.ip", "notValues": ["203.0.113.0/24"]},
            {"key": "request.auth.principal", "values": ["https://idp/*"]},
            {"key": "request.headers[x-device-managed]", "values": ["true"]}]}]}),
    );
    let tok = bearer(&s, claims());
    assert_eq!(status(&run_with(&cfg, &FakePeer::default(), req("/partners", &[("authorization", &tok)]))), 200);
    let d = run_with(&cfg, &FakePeer::default(), req("/other", &[("authorization", &tok)]));
    assert_eq!((status(&d), d.reason), (403, Some(Reason::PolicyDenied)));
    let mut c = claims();
    c["realm_access"] = json!({"roles": ["reader", "writer"]});
    c["groups"] = json!(["dev", "ops-eu"]);
    let good = bearer(&s, c.clone());
    let managed = |src: &str| {
        let mut r = req("/admin", &[("authorization", &good), ("x-device-managed", "true")]);
        r.source = PeerAddress::known(Some(src.into()));
        r
    };
    assert_eq!(status(&run_with(&cfg, &FakePeer::default(), managed("198.51.100.7:5000"))), 200);
    let d = run_with(&cfg, &FakePeer::default(), managed("203.0.113.9:5000"));
    assert_eq!(d.reason, Some(Reason::PolicyDenied), "source.ip notValues");
    let mut r = req("/admin", &[("authorization", &good)]);
    r.source = PeerAddress::known(Some("198.51.100.7:5000".into()));
    assert_eq!(run_with(&cfg, &FakePeer::default(), r).reason, Some(Reason::PolicyDenied), "header missing");
    c["groups"] = json!(["dev"]);
    let mut r = req("/admin", &[("authorization", &bearer(&s, c)), ("x-device-managed", "true")]);
    r.source = PeerAddress::known(Some("198.51.100.7:5000".into()));
    let d = run_with(&cfg, &FakePeer::default(), r);
    assert_eq!(d.reason, Some(Reason::PolicyDenied), "array claim without a match");
    let Action::Reply(resp) = &d.action else { panic!() };
    assert!(!String::from_utf8_lossy(&resp.body).contains("dev"), "claim values never echoed");
}

#[test]
fn hosts_and_headers_select_routes() {
    let s = Signer::new("k1");
    let cfg = cfg_with(
        &s,
        json!({"routes": [
        {"match": {"prefix": "/", "hosts": ["api.example.com", "*.example.org"]}, "requires": {"any": ["corp"]}},
        {"match": {"prefix": "/", "headers": [{"name": "x-tenant", "values": ["a", "b"]}]}, "requires": {"any": ["corp"]}},
        {"match": {"prefix": "/"}, "requires": "none"}]}),
    );
    let on = |host: &str, extra: &[(&str, &str)]| {
        let mut h = vec![(":authority", host)];
        h.extend_from_slice(extra);
        run_with(&cfg, &FakePeer::default(), req("/x", &h)).reason
    };
    assert_eq!(on("API.example.com:8443", &[]), Some(Reason::MissingCredentials));
    assert_eq!(on("eu.example.org", &[]), Some(Reason::MissingCredentials));
    assert_eq!(on("example.org", &[]), None, "*.example.org does not match the bare domain");
    assert_eq!(on("other.test", &[("x-tenant", "b")]), Some(Reason::MissingCredentials));
    assert_eq!(on("other.test", &[("x-tenant", "c")]), None);
}

#[test]
fn certificate_bound_tokens() {
    let s = Signer::new("k1");
    let cfg = cfg_with(
        &s,
        json!({"routes": [
        {"match": {"prefix": "/strict"}, "requires": {"any": ["corp"]}, "require_bound_token": true},
        {"match": {"prefix": "/"}, "requires": {"any": ["corp"]}}]}),
    );
    let mut c = claims();
    c["cnf"] = json!({"x5t#S256": x5t(CERT)});
    let bound = bearer(&s, c);
    let with_cert = FakePeer { cert: Some(CERT), ..FakePeer::default() };
    let other_cert = FakePeer { cert: Some(OTHER), ..FakePeer::default() };
    assert_eq!(status(&run_with(&cfg, &with_cert, req("/x", &[("authorization", &bound)]))), 200);
    let d = run_with(&cfg, &other_cert, req("/x", &[("authorization", &bound)]));
    assert_eq!((status(&d), d.reason), (401, Some(Reason::TokenBinding)));
    let d = run_with(&cfg, &FakePeer::default(), req("/x", &[("authorization", &bound)]));
    assert_eq!(d.reason, Some(Reason::TokenBinding), "plain connection");
    let unbound = bearer(&s, claims());
    assert_eq!(status(&run_with(&cfg, &FakePeer::default(), req("/x", &[("authorization", &unbound)]))), 200);
    let d = run_with(&cfg, &with_cert, req("/strict", &[("authorization", &unbound)]));
    assert_eq!(d.reason, Some(Reason::TokenBinding), "require_bound_token");
    let Action::Reply(r) = &d.action else { panic!() };
    let challenge = r.headers.iter().find(|(k, _)| k == "www-authenticate").unwrap();
    assert!(challenge.1.contains("error=\"invalid_token\""));
}

#[test]
fn cors_preflights_pass_when_asked() {
    let s = Signer::new("k1");
    let preflight = || {
        let mut r = req("/x", &[("origin", "https://app.example"), ("access-control-request-method", "POST")]);
        r.method = "OPTIONS".into();
        r
    };
    let cfg = cfg_with(&s, json!({}));
    assert_eq!(run_with(&cfg, &FakePeer::default(), preflight()).reason, Some(Reason::MissingCredentials));
    let cfg = cfg_with(&s, json!({"bypass_cors_preflight": true}));
    assert_eq!(status(&run_with(&cfg, &FakePeer::default(), preflight())), 200);
    let mut plain_options = req("/x", &[]);
    plain_options.method = "OPTIONS".into();
    assert_eq!(run_with(&cfg, &FakePeer::default(), plain_options).reason, Some(Reason::MissingCredentials));
}

#[test]
fn a_route_can_run_in_shadow_while_the_rest_enforces() {
    let s = Signer::new("k1");
    let cfg = cfg_with(
        &s,
        json!({"routes": [
        {"name": "new", "mode": "shadow", "match": {"prefix": "/new"}, "requires": {"any": ["corp"]}},
        {"match": {"prefix": "/"}, "requires": {"any": ["corp"]}}]}),
    );
    let d = run_with(&cfg, &FakePeer::default(), req("/new/x", &[]));
    assert_eq!(status(&d), 200, "shadow: let through");
    assert_eq!(set(mutations(&d), "x-portcullis-decision"), Some("deny; reason=missing_credentials"));
    assert!(d.counters.contains(&Counter::ShadowDenied(Reason::MissingCredentials)));
    assert_eq!(status(&run_with(&cfg, &FakePeer::default(), req("/old", &[]))), 401, "the rest enforces");
    let cfg = cfg_with(
        &s,
        json!({"mode": "shadow", "routes": [
        {"mode": "enforce", "match": {"prefix": "/strict"}, "requires": {"any": ["corp"]}}]}),
    );
    assert_eq!(status(&run_with(&cfg, &FakePeer::default(), req("/strict", &[]))), 401);
    assert_eq!(status(&run_with(&cfg, &FakePeer::default(), req("/other", &[]))), 200);
}
