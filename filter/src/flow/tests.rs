//! Decision-flow tests with a scripted store, a fake clock and scripted callout replies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::apikey;
use crate::crypto::NoNative;
use crate::request::PeerAddress;
use crate::store::MemStore;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

pub(super) const NOW: u64 = 1_800_000_000;

pub(super) struct Signer {
    key: ES256KeyPair,
}

impl Signer {
    pub(super) fn new(kid: &str) -> Self {
        Signer { key: ES256KeyPair::generate().with_key_id(kid) }
    }

    pub(super) fn jwks(&self) -> String {
        let pt = self.key.public_key().public_key().to_bytes_uncompressed();
        let b = |s: &[u8]| crate::wire::b64::encode(s);
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": self.key.key_id().clone().unwrap(),
            "x": b(&pt[1..33]), "y": b(&pt[33..65])}]})
        .to_string()
    }

    pub(super) fn mint(&self, claims: Value) -> String {
        let mut c: JWTClaims<serde_json::Map<String, Value>> =
            Claims::with_custom_claims(claims.as_object().unwrap().clone(), Duration::from_secs(1));
        c.issued_at = None;
        c.expires_at = None;
        c.invalid_before = None;
        self.key.sign(c).unwrap()
    }
}

pub(super) fn claims() -> Value {
    json!({"iss": "https://idp", "aud": "api", "sub": "u1", "client_id": "c1", "scope": "read write",
           "iat": NOW - 10, "exp": NOW + 300, "roles": ["a", "b"]})
}

pub(super) fn cfg_with(signer: &Signer, extra: Value) -> Config {
    let mut doc = json!({
        "providers": {"corp": {"issuer": "https://idp", "audiences": ["api"],
            "local_jwks": {"inline_string": signer.jwks()},
            "claim_to_headers": [{"header_name": "x-roles", "claim_name": "roles"}]}},
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    config::parse(doc.to_string().as_bytes(), &|_| None).unwrap()
}

pub(super) fn req(path: &str, headers: &[(&str, &str)]) -> RequestView {
    RequestView {
        method: "GET".into(),
        path: path.into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect(),
        ..RequestView::default()
    }
}

fn run(cfg: &Config, state: &mut WorkerState, store: &MemStore, now_s: u64, r: RequestView) -> Step {
    let mut ctx = Ctx {
        cfg,
        state,
        store,
        native: &NoNative,
        signer: &crate::password::NoSigner,
        peer: &crate::request::NoPeer,
        now_ms: now_s * 1000,
    };
    start(&mut ctx, r)
}

pub(super) fn decided(step: Step) -> Decision {
    match step {
        Step::Done(d) => d,
        Step::Dispatch(out, _) => panic!("unexpected callout {out:?}"),
        Step::Park(p) | Step::ReadBody { pending: p, .. } => panic!("unexpected pause {p:?}"),
    }
}

pub(super) fn status(d: &Decision) -> u16 {
    match &d.action {
        Action::Reply(r) => r.status,
        Action::Continue(_) => 200,
    }
}

pub(super) fn mutations(d: &Decision) -> &Mutations {
    match &d.action {
        Action::Continue(m) => m,
        Action::Reply(r) => panic!("rejected: {}", String::from_utf8_lossy(&r.body)),
    }
}

pub(super) fn set<'a>(m: &'a Mutations, name: &str) -> Option<&'a str> {
    m.set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn valid_token_allows_and_sets_identity_headers() {
    let s = Signer::new("k1");
    let cfg = cfg_with(&s, json!({}));
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let tok = s.mint(claims());
    let d = decided(run(
        &cfg,
        &mut st,
        &store,
        NOW,
        req(
            "/x",
            &[("authorization", &format!("Bearer {tok}")), ("x-portcullis-client", "evil"), ("x-roles", "forged")],
        ),
    ));
    let m = mutations(&d);
    assert_eq!(set(m, "x-portcullis-client"), Some("c1"));
    assert_eq!(set(m, "x-roles"), Some("a,b"));
    assert!(m.remove.contains(&"authorization".to_string()), "credential not forwarded by default");
    assert!(m.remove.contains(&"x-portcullis-client".to_string()));
    assert!(m.remove.contains(&"x-roles".to_string()), "owned headers are removed before being set");
    assert!(d.counters.contains(&Counter::JwtCacheMiss) && d.counters.contains(&Counter::CryptoPure));
    assert_eq!(d.client.as_deref(), Some("c1"));
}

#[test]
fn cache_hits_still_check_time() {
    let s = Signer::new("k1");
    let cfg = cfg_with(&s, json!({}));
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let h = format!("Bearer {}", s.mint(claims()));
    decided(run(&cfg, &mut st, &store, NOW, req("/", &[("authorization", &h)])));
    let d = decided(run(&cfg, &mut st, &store, NOW + 1, req("/", &[("authorization", &h)])));
    assert!(d.counters.contains(&Counter::JwtCacheHit));
    assert_eq!(status(&d), 200);
    // Past exp + skew (60 s): the cached entry no longer admits the token.
    let d = decided(run(&cfg, &mut st, &store, NOW + 360, req("/", &[("authorization", &h)])));
    assert!(d.counters.contains(&Counter::JwtCacheHit));
    assert_eq!(d.reason, Some(Reason::TokenExpired));
}

#[test]
fn any_requires_every_presented_credential_to_be_valid() {
    let s = Signer::new("k1");
    let key = json!({"from_headers": ["x-api-key"], "clients": [{"client_id": "p", "keys_sha256": [apikey::hash_hex("k")], "scopes": ["read"]}]});
    let cfg = cfg_with(&s, json!({"api_keys": key}));
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let good = format!("Bearer {}", s.mint(claims()));
    let mut bad_claims = claims();
    bad_claims["aud"] = json!("other");
    let bad = format!("Bearer {}", s.mint(bad_claims));
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/", &[("x-api-key", "k")])));
    assert_eq!(set(mutations(&d), "x-portcullis-client"), Some("p"));
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/", &[("x-api-key", "k"), ("authorization", &bad)])));
    assert_eq!(d.reason, Some(Reason::TokenAudience), "a bad token is not outweighed by a good key");
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/", &[("x-api-key", "k"), ("authorization", &good)])));
    assert_eq!(set(mutations(&d), "x-portcullis-auth"), Some("jwt:corp,api_key"));
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/", &[])));
    assert_eq!(d.reason, Some(Reason::MissingCredentials));
    let Action::Reply(r) = &d.action else { panic!() };
    assert_eq!(r.headers.iter().filter(|(k, _)| k == "www-authenticate").count(), 2, "Bearer and ApiKey challenges");
}

#[test]
fn all_requires_every_method_and_scopes_are_unioned() {
    let s = Signer::new("k1");
    let key = json!({"from_headers": ["x-api-key"], "clients": [{"client_id": "p", "keys_sha256": [apikey::hash_hex("k")], "scopes": ["admin"]}]});
    let routes = json!([{"match": {"prefix": "/admin"}, "requires": {"all": ["corp", "api_key"]}, "scopes": ["admin", "write"]},
                        {"match": {"prefix": "/open"}, "requires": "none"}]);
    let cfg = cfg_with(&s, json!({"api_keys": key, "routes": routes}));
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let tok = format!("Bearer {}", s.mint(claims()));
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/admin", &[("authorization", &tok)])));
    assert_eq!(d.reason, Some(Reason::MissingCredentials));
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/admin/x", &[("authorization", &tok), ("x-api-key", "k")])));
    assert_eq!(status(&d), 200, "admin from the key + write from the token");
    let mut ro = claims();
    ro["scope"] = json!("read");
    let ro = format!("Bearer {}", s.mint(ro));
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/admin", &[("authorization", &ro), ("x-api-key", "k")])));
    assert_eq!(d.reason, Some(Reason::InsufficientScope));
    assert_eq!(
        d.log_record().as_deref(),
        Some("deny; reason=insufficient_scope; client=c1; auth=jwt:corp,api_key"),
        "a refusal after authentication names who was refused, for access logs"
    );
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/open?x", &[("x-portcullis-auth", "forged")])));
    assert_eq!(mutations(&d).remove, vec!["x-portcullis-auth".to_string()], "only headers present are removed");
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/open", &[("x-roles", "forged"), ("x-other", "kept")])));
    assert_eq!(mutations(&d).remove, vec!["x-roles".to_string()], "configured claim headers are owned too");
}

#[test]
fn shadow_mode_lets_everything_through_with_the_verdict() {
    let s = Signer::new("k1");
    let cfg = cfg_with(&s, json!({"mode": "shadow"}));
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/", &[("authorization", "Bearer x.y.z")])));
    let m = mutations(&d);
    assert_eq!(set(m, "x-portcullis-decision"), Some("deny; reason=token_malformed"));
    assert!(set(m, "x-portcullis-client").is_none());
    assert!(d.counters.contains(&Counter::ShadowDenied(Reason::TokenMalformed)));
    assert!(!m.remove.contains(&"authorization".to_string()), "unverified credentials are left alone");
}

#[test]
fn the_access_log_record_is_set_on_denials_and_shadow_only() {
    let s = Signer::new("k1");
    let cfg = cfg_with(&s, json!({}));
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let tok = s.mint(claims());
    let allowed = decided(run(&cfg, &mut st, &store, NOW, req("/x", &[("authorization", &format!("Bearer {tok}"))])));
    assert_eq!(allowed.log_record(), None, "the allow path sets nothing");
    let denied = decided(run(&cfg, &mut st, &store, NOW, req("/x", &[("authorization", "Bearer x.y.z")])));
    assert_eq!(denied.log_record().as_deref(), Some("deny; reason=token_malformed"));
    let shadow = cfg_with(&s, json!({"mode": "shadow"}));
    let mut st2 = WorkerState::new(&shadow);
    let d = decided(run(&shadow, &mut st2, &store, NOW, req("/x", &[])));
    assert_eq!(d.log_record().as_deref(), Some("shadow_deny; reason=missing_credentials"));
    // A client id is included only when it is plain: nothing a log line could be forged with.
    let mut d = denied.clone();
    d.client = Some("orders-app@corp".into());
    assert_eq!(d.log_record().as_deref(), Some("deny; reason=token_malformed; client=orders-app@corp"));
    for bad in ["a b", "a;reason=ok", "x\ny", "é", ""] {
        d.client = Some(bad.into());
        assert_eq!(d.log_record().as_deref(), Some("deny; reason=token_malformed"), "{bad:?}");
    }
    d.client = Some("a".repeat(129));
    assert_eq!(d.log_record().as_deref(), Some("deny; reason=token_malformed"));
    d.client = Some("a,b".into());
    assert_eq!(d.log_record().as_deref(), Some("deny; reason=token_malformed"), "no comma in a client id");
    d.auth = Some("jwt:corp,api_key".into());
    assert_eq!(d.log_record().as_deref(), Some("deny; reason=token_malformed; auth=jwt:corp,api_key"));
    d.auth = Some("jwt:a b".into());
    assert_eq!(d.log_record().as_deref(), Some("deny; reason=token_malformed"), "a plain auth list only");
}

fn remote_cfg(extra: Value) -> Config {
    let mut doc = json!({"providers": {"corp": {"issuer": "https://idp", "audiences": ["api"],
        "remote_jwks": {"http_uri": {"uri": "http://idp/jwks", "cluster": "idp"}, "unknown_kid_refresh_interval": "5s"}}}});
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    config::parse(doc.to_string().as_bytes(), &|_| None).unwrap()
}

#[test]
fn unknown_kid_waits_for_one_refresh_then_decides() {
    let old = Signer::new("old");
    let new = Signer::new("new");
    let cfg = remote_cfg(json!({}));
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    // Warm up with the old set.
    let f = st.keys.due_fetches(&cfg, &store, NOW * 1000).pop().unwrap();
    let reply = Reply { status: Some(200), headers: vec![], body: old.jwks().into_bytes() };
    st.keys.on_reply(&cfg, &store, &f, &reply, NOW * 1000);

    let tok = format!("Bearer {}", new.mint(claims()));
    let Step::Dispatch(Outbound::Http(callout), p) =
        run(&cfg, &mut st, &store, NOW, req("/", &[("authorization", &tok)]))
    else {
        panic!("expected a refresh")
    };
    assert_eq!(callout.path, "/jwks");
    let reply = Reply { status: Some(200), headers: vec![], body: new.jwks().into_bytes() };
    let mut ctx = Ctx {
        cfg: &cfg,
        state: &mut st,
        store: &store,
        native: &NoNative,
        signer: &crate::password::NoSigner,
        peer: &crate::request::NoPeer,
        now_ms: NOW * 1000 + 50,
    };
    let d = decided(advance(&mut ctx, p, Input::Reply(&reply)));
    assert_eq!(status(&d), 200);
    assert!(d.counters.contains(&Counter::JwksUnknownKidRefresh) && d.counters.contains(&Counter::JwksFetchOk));

    // Within the interval another unknown kid is decided at once, without a callout.
    let other = Signer::new("other");
    let d = decided(run(
        &cfg,
        &mut st,
        &store,
        NOW + 1,
        req("/", &[("authorization", &format!("Bearer {}", other.mint(claims())))]),
    ));
    assert_eq!(d.reason, Some(Reason::TokenUnknownKey));
    // After it, a failed refresh ends in 401 unknown key (not 503: the set is still good).
    let Step::Dispatch(_, p) = run(
        &cfg,
        &mut st,
        &store,
        NOW + 10,
        req("/", &[("authorization", &format!("Bearer {}", other.mint(claims())))]),
    ) else {
        panic!()
    };
    let mut ctx = Ctx {
        cfg: &cfg,
        state: &mut st,
        store: &store,
        native: &NoNative,
        signer: &crate::password::NoSigner,
        peer: &crate::request::NoPeer,
        now_ms: (NOW + 11) * 1000,
    };
    let d = decided(advance(&mut ctx, p, Input::Reply(&Reply::default())));
    assert_eq!(d.reason, Some(Reason::TokenUnknownKey));
    assert!(d.counters.contains(&Counter::JwksFetchFailed));
}

#[test]
fn no_keys_yet_waits_for_the_first_fetch_and_is_503_only_when_it_fails() {
    let s = Signer::new("k1");
    let tok = format!("Bearer {}", s.mint(claims()));
    let cfg = remote_cfg(json!({}));
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let ctx_at = |st: &mut WorkerState, ms: u64, f: &mut dyn FnMut(&mut Ctx) -> Step| {
        let mut ctx = Ctx {
            cfg: &cfg,
            state: st,
            store: &store,
            native: &NoNative,
            signer: &crate::password::NoSigner,
            peer: &crate::request::NoPeer,
            now_ms: ms,
        };
        f(&mut ctx)
    };
    // The first request starts the first fetch itself; a second one parks behind it.
    let Step::Dispatch(Outbound::Http(c), first) =
        run(&cfg, &mut st, &store, NOW, req("/", &[("authorization", &tok)]))
    else {
        panic!("the first request fetches the key set")
    };
    assert_eq!(c.path, "/jwks");
    let Step::Park(second) = run(&cfg, &mut st, &store, NOW, req("/", &[("authorization", &tok)])) else {
        panic!("a second request waits for the fetch in flight")
    };
    let jwks = Reply { status: Some(200), headers: vec![], body: s.jwks().into_bytes() };
    let d = decided(ctx_at(&mut st, NOW * 1000 + 120, &mut |ctx| advance(ctx, first.clone(), Input::Reply(&jwks))));
    assert_eq!(status(&d), 200, "no 503 for a request that beat the first fetch");
    let d = decided(ctx_at(&mut st, NOW * 1000 + 125, &mut |ctx| advance(ctx, second.clone(), Input::Tick)));
    assert_eq!(status(&d), 200);

    // A failed first fetch: 503 with Retry-After.
    let (mut st, store2) = (WorkerState::new(&cfg), MemStore::default());
    let Step::Dispatch(_, p) = run(&cfg, &mut st, &store2, NOW, req("/", &[("authorization", &tok)])) else { panic!() };
    let mut ctx = Ctx {
        cfg: &cfg,
        state: &mut st,
        store: &store2,
        native: &NoNative,
        signer: &crate::password::NoSigner,
        peer: &crate::request::NoPeer,
        now_ms: NOW * 1000,
    };
    let d = decided(advance(&mut ctx, p, Input::Reply(&Reply::default())));
    let Action::Reply(r) = &d.action else { panic!() };
    assert_eq!(r.status, 503);
    assert!(r.headers.iter().any(|(k, v)| k == "retry-after" && v == "5"));
    // While this worker backs off, requests are answered at once.
    let d = decided(run(&cfg, &mut st, &store2, NOW, req("/", &[("authorization", &tok)])));
    assert_eq!(status(&d), 503);

    // A fetch in flight that does not land within its timeout: the parked request gives up.
    let (mut st, store3) = (WorkerState::new(&cfg), MemStore::default());
    let Step::Dispatch(..) = run(&cfg, &mut st, &store3, NOW, req("/", &[("authorization", &tok)])) else { panic!() };
    let Step::Park(p) = run(&cfg, &mut st, &store3, NOW, req("/", &[("authorization", &tok)])) else { panic!() };
    let mut ctx = Ctx {
        cfg: &cfg,
        state: &mut st,
        store: &store3,
        native: &NoNative,
        signer: &crate::password::NoSigner,
        peer: &crate::request::NoPeer,
        now_ms: NOW * 1000 + 2_000,
    };
    let d = decided(advance(&mut ctx, p, Input::Tick));
    assert_eq!((status(&d), d.reason), (503, Some(Reason::KeysUnavailable)));

    // Dependencies failing "anonymous": a protected route is still refused, an open one passes.
    let routes = json!([{"match": {"prefix": "/open"}, "requires": "none"}]);
    let cfg = remote_cfg(json!({"on_dependency_down": "anonymous", "routes": routes}));
    let mut st = WorkerState::new(&cfg);
    let store4 = MemStore::default();
    let Step::Dispatch(_, p) = run(&cfg, &mut st, &store4, NOW, req("/", &[("authorization", &tok)])) else { panic!() };
    let mut ctx = Ctx {
        cfg: &cfg,
        state: &mut st,
        store: &store4,
        native: &NoNative,
        signer: &crate::password::NoSigner,
        peer: &crate::request::NoPeer,
        now_ms: NOW * 1000,
    };
    let d = decided(advance(&mut ctx, p, Input::Reply(&Reply::default())));
    assert_eq!(d.reason, Some(Reason::MissingCredentials), "anonymous is not enough for a protected route");
    let d = decided(run(&cfg, &mut st, &store4, NOW, req("/open", &[("authorization", &tok)])));
    assert_eq!(status(&d), 200);
}

#[test]
fn issuer_selects_the_provider_when_sources_are_shared() {
    let a = Signer::new("a");
    let b = Signer::new("b");
    let doc = json!({"providers": {
        "one": {"issuer": "https://one", "local_jwks": {"inline_string": a.jwks()}},
        "two": {"issuer": "https://two", "local_jwks": {"inline_string": b.jwks()}}}});
    let cfg = config::parse(doc.to_string().as_bytes(), &|_| None).unwrap();
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let mut c = claims();
    c["iss"] = json!("https://two");
    let d = decided(run(
        &cfg,
        &mut st,
        &store,
        NOW,
        req("/", &[("authorization", &format!("Bearer {}", b.mint(c.clone())))]),
    ));
    assert_eq!(set(mutations(&d), "x-portcullis-auth"), Some("jwt:two"));
    // Signed by one's key but claiming two's issuer: two's key set has no such key.
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/", &[("authorization", &format!("Bearer {}", a.mint(c)))])));
    assert_eq!(d.reason, Some(Reason::TokenUnknownKey));
}

// ---------------------------------------------------------------------------------------------
// The canonical request and owned headers (issue 11)

#[test]
fn non_canonical_requests_are_refused_before_any_route() {
    let s = Signer::new("k1");
    let cfg = cfg_with(
        &s,
        json!({"routes": [{"match": {"prefix": "/public"}, "requires": "none"},
                          {"match": {"prefix": "/admin"}, "requires": {"any": ["corp"]}}]}),
    );
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    for p in ["/public/../admin", "//admin", "/admin;x", "/admin%2Fusers", "/./admin", "/public/%2e%2e/admin"] {
        let d = decided(run(&cfg, &mut st, &store, NOW, req(p, &[])));
        assert_eq!((status(&d), d.reason), (400, Some(Reason::NonCanonicalRequest)), "{p}");
    }
    let mut lower = req("/admin", &[]);
    lower.method = "post".into();
    assert_eq!(decided(run(&cfg, &mut st, &store, NOW, lower)).reason, Some(Reason::NonCanonicalRequest));
    // `/%61dmin` is `/admin`: the route applies, and with a credential the upstream gets `/admin`.
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/%61dmin", &[])));
    assert_eq!(d.reason, Some(Reason::MissingCredentials));
    let tok = s.mint(claims());
    let d =
        decided(run(&cfg, &mut st, &store, NOW, req("/%61dmin?q=1", &[("authorization", &format!("Bearer {tok}"))])));
    assert_eq!(mutations(&d).path.as_deref(), Some("/admin?q=1"));
    // A `none` route gets the rewrite too: the path the policy matched is the path sent.
    let d = decided(run(&cfg, &mut st, &store, NOW, req("/publi%63/x", &[])));
    assert_eq!(mutations(&d).path.as_deref(), Some("/public/x"));
    // HEAD falls under a GET-only route.
    let cfg = cfg_with(
        &s,
        json!({"routes": [{"match": {"prefix": "/admin", "methods": ["GET"]}, "requires": {"any": ["corp"]}},
                                             {"match": {"prefix": "/"}, "requires": "none"}]}),
    );
    let mut head = req("/admin", &[]);
    head.method = "HEAD".into();
    assert_eq!(decided(run(&cfg, &mut st, &store, NOW, head)).reason, Some(Reason::MissingCredentials));
    // ignore_case for case-insensitive upstreams.
    let cfg = cfg_with(
        &s,
        json!({"routes": [{"match": {"prefix": "/Admin", "ignore_case": true}, "requires": {"any": ["corp"]}},
                                             {"match": {"prefix": "/"}, "requires": "none"}]}),
    );
    assert_eq!(decided(run(&cfg, &mut st, &store, NOW, req("/ADMIN/x", &[]))).reason, Some(Reason::MissingCredentials));
}

#[test]
fn owned_headers_are_stripped_after_folding_underscores() {
    let s = Signer::new("k1");
    let cfg = cfg_with(&s, json!({"routes": [{"match": {"prefix": "/"}, "requires": "none"}]}));
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let d = decided(run(
        &cfg,
        &mut st,
        &store,
        NOW,
        req("/x", &[("x_portcullis_client", "admin"), ("x-portcullis-auth", "forged"), ("x_roles", "forged")]),
    ));
    let m = mutations(&d);
    for h in ["x_portcullis_client", "x-portcullis-auth", "x_roles"] {
        assert!(m.remove.contains(&h.to_string()), "{h} must be removed: {m:?}");
    }
}

#[test]
fn rate_limit_buckets_are_per_credential_method_and_anonymous_callers_have_their_own_table() {
    let s = Signer::new("k1");
    let key = "partner-key";
    let hash: String =
        <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let cfg = cfg_with(
        &s,
        json!({"api_keys": {"from_headers": ["x-api-key"], "clients": [{"client_id": "c1", "keys_sha256": [hash]}]},
               "rate_limit": {"plans": {"one": {"requests": 1, "per": "3600s", "burst": 1}}, "default_plan": "one"},
               "routes": [{"match": {"prefix": "/"}, "requires": {"any": ["corp", "api_key"]}}]}),
    );
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    // The JWT's client_id is "c1", like the API-key client: two clients, two buckets.
    let tok = s.mint(claims());
    let jwt = || req("/x", &[("authorization", &format!("Bearer {tok}"))]);
    assert_eq!(status(&decided(run(&cfg, &mut st, &store, NOW, jwt()))), 200);
    assert_eq!(status(&decided(run(&cfg, &mut st, &store, NOW, jwt()))), 429);
    let api = || req("/x", &[("x-api-key", key)]);
    assert_eq!(
        status(&decided(run(&cfg, &mut st, &store, NOW, api()))),
        200,
        "a JWT client_id never drains the API-key client"
    );
    // Every record lives under a versioned, fingerprinted namespace.
    let rl = cfg.rate_limit.as_ref().unwrap();
    assert!(rl.store_ns.key("x").starts_with("portcullis.v3.rl."));
    assert_ne!(rl.store_ns, rl.anonymous_ns);
}

#[test]
fn different_configurations_never_share_records() {
    let s = Signer::new("k1");
    let a = cfg_with(&s, json!({"rate_limit": {"plans": {"p": {"requests": 1, "per": "60s"}}, "default_plan": "p"}}));
    let b = cfg_with(&s, json!({"rate_limit": {"plans": {"p": {"requests": 2, "per": "60s"}}, "default_plan": "p"}}));
    let same =
        cfg_with(&s, json!({"rate_limit": {"plans": {"p": {"requests": 1, "per": "60s"}}, "default_plan": "p"}}));
    let (ra, rb, rs) = (a.rate_limit.unwrap(), b.rate_limit.unwrap(), same.rate_limit.unwrap());
    assert_ne!(ra.store_ns, rb.store_ns);
    assert_eq!(ra.store_ns, rs.store_ns, "the same settings on two listeners share one bucket table");
}

#[test]
fn an_api_key_clients_own_plan_applies() {
    let s = Signer::new("k1");
    let key = |id: &str, k: &str, plan: Option<&str>| {
        let mut c = json!({"client_id": id, "keys_sha256": [apikey::hash_hex(k)]});
        if let Some(p) = plan {
            c["plan"] = json!(p);
        }
        c
    };
    let clients: Vec<Value> = (0..50)
        .map(|i| key(&format!("c{i}"), &format!("k{i}"), None))
        .chain([key("tight", "kt", Some("tight"))])
        .collect();
    let cfg = cfg_with(
        &s,
        json!({"api_keys": {"from_headers": ["x-api-key"], "clients": clients},
               "rate_limit": {"plans": {"wide": {"requests": 1000, "per": "60s"}, "tight": {"requests": 1, "per": "60s"}},
                              "default_plan": "wide"},
               "requires": {"any": ["api_key"]}}),
    );
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let mut call = |k: &str| status(&decided(run(&cfg, &mut st, &store, NOW, req("/x", &[("x-api-key", k)]))));
    assert_eq!(call("kt"), 200);
    assert_eq!(call("kt"), 429, "the last client's own plan (one a minute), found by its index");
    assert_eq!(call("k7"), 200);
    assert_eq!(call("k7"), 200, "the default plan for the others");
}

/// Flood figures (issue 11 item 7): 10× the table size of anonymous addresses, then every
/// authenticated client still gets through — before the anonymous table of its own, 77% of
/// authenticated clients got 429 `table_full` in the e2e reproduction.
#[test]
fn an_anonymous_flood_never_pushes_authenticated_clients_into_table_full() {
    let s = Signer::new("k1");
    let cfg = cfg_with(
        &s,
        json!({"rate_limit": {"plans": {"p": {"requests": 1000, "per": "60s"}}, "default_plan": "p", "max_clients": 256},
               "routes": [{"match": {"prefix": "/public"}, "requires": "none"},
                          {"match": {"prefix": "/"}, "requires": {"any": ["corp"]}}]}),
    );
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let mut anon_limited = 0;
    for i in 0..2560u32 {
        let mut r = req("/public/x", &[]);
        r.source = PeerAddress::known(Some(format!("198.51.{}.{}:1234", i / 256, i % 256)));
        if status(&decided(run(&cfg, &mut st, &store, NOW, r))) == 429 {
            anon_limited += 1;
        }
    }
    assert!(anon_limited > 0, "the anonymous table (256 slots) is full");
    let mut denied = 0;
    for i in 0..12u32 {
        let mut c = claims();
        c["client_id"] = json!(format!("client-{i}"));
        let tok = s.mint(c);
        let d = decided(run(&cfg, &mut st, &store, NOW, req("/x", &[("authorization", &format!("Bearer {tok}"))])));
        if status(&d) != 200 {
            denied += 1;
        }
    }
    assert_eq!(denied, 0, "authenticated clients are never limited by an anonymous flood");
}

thread_local! {
    static ADDRESS_READS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn counted_address() -> Option<String> {
    ADDRESS_READS.with(|n| n.set(n.get() + 1));
    Some("198.51.100.9:4000".into())
}

/// The peer address is a host lookup that costs more than a cached JWT check: an
/// authenticated client's rate limit never reads it, an anonymous caller's reads it once.
#[test]
fn the_peer_address_is_read_only_when_a_decision_needs_it() {
    let s = Signer::new("k1");
    let cfg = cfg_with(
        &s,
        json!({"rate_limit": {"plans": {"p": {"requests": 1000, "per": "60s"}}, "default_plan": "p"},
               "routes": [{"match": {"prefix": "/public"}, "requires": "none"},
                          {"match": {"prefix": "/"}, "requires": {"any": ["corp"]}}]}),
    );
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let tok = s.mint(claims());
    let mut r = req("/x", &[("authorization", &format!("Bearer {tok}"))]);
    r.source = PeerAddress::lazy(counted_address);
    assert_eq!(status(&decided(run(&cfg, &mut st, &store, NOW, r))), 200);
    assert_eq!(ADDRESS_READS.with(|n| n.get()), 0, "an authenticated client is keyed by its id");
    let mut r = req("/public/x", &[]);
    r.source = PeerAddress::lazy(counted_address);
    assert_eq!(status(&decided(run(&cfg, &mut st, &store, NOW, r.clone()))), 200);
    assert_eq!(ADDRESS_READS.with(|n| n.get()), 1, "an anonymous caller is keyed by its address");
    assert_eq!(r.source.get(), Some("198.51.100.9:4000"));
    assert_eq!(r.source.get(), Some("198.51.100.9:4000"));
    assert_eq!(ADDRESS_READS.with(|n| n.get()), 2, "read once per request, then remembered");
}

#[test]
fn payload_header_padding_and_filter_state_name() {
    let s = Signer::new("k1");
    let mut cfg = cfg_with(&s, json!({}));
    cfg.providers[0].forward_payload_header = Some("x-jwt-payload".into());
    cfg.providers[0].payload_in_filter_state = Some("jwt_payload".into());
    let (mut st, store) = (WorkerState::new(&cfg), MemStore::default());
    let tok = s.mint(claims());
    let run1 = |cfg: &Config, st: &mut WorkerState| {
        decided(run(cfg, st, &store, NOW, req("/x", &[("authorization", &format!("Bearer {tok}"))])))
    };
    let d = run1(&cfg, &mut st);
    let plain = set(mutations(&d), "x-jwt-payload").unwrap().to_string();
    assert!(!plain.ends_with('='));
    assert_eq!(mutations(&d).filter_state[0].0, "jwt_payload");
    cfg.providers[0].pad_forward_payload_header = true;
    let d = run1(&cfg, &mut st);
    let padded = set(mutations(&d), "x-jwt-payload").unwrap();
    assert_eq!(padded.len() % 4, 0);
    assert_eq!(padded.trim_end_matches('='), plain);
}
