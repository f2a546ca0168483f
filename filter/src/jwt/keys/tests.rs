#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::config;
use crate::store::MemStore;

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fn remote_cfg() -> Config {
    let doc = r#"{"providers":{"corp":{"remote_jwks":{
        "http_uri":{"uri":"https://idp.example.com/jwks?v=1","cluster":"idp","timeout":"2s"},
        "cache_duration":"100s","max_stale":"50s","unknown_kid_refresh_interval":"10s"}}}}"#;
    config::parse(doc.as_bytes(), &|_| None).unwrap()
}

fn discovery_cfg() -> Config {
    let doc = r#"{"providers":{"corp":{"issuer":"https://idp.example.com/realms/x","discovery":{"cluster":"idp"}}}}"#;
    config::parse(doc.as_bytes(), &|_| None).unwrap()
}

fn ok(body: &str) -> Reply {
    Reply { status: Some(200), headers: vec![], body: body.as_bytes().to_vec() }
}

#[test]
fn one_fetch_per_envoy_and_every_worker_picks_it_up() {
    let cfg = remote_cfg();
    let store = MemStore::default();
    let (mut w1, mut w2) = (Keys::new(&cfg), Keys::new(&cfg));
    assert!(matches!(w1.available(&cfg, 0, 0), Availability::Unavailable));

    let f = w1.due_fetches(&cfg, &store, 1_000);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].callout.cluster, "idp");
    assert_eq!(f[0].callout.authority, "idp.example.com");
    assert_eq!(f[0].callout.path, "/jwks?v=1");
    assert_eq!(f[0].callout.timeout_ms, 2000);
    assert!(w2.due_fetches(&cfg, &store, 1_001).is_empty(), "the lease is held by worker 1");

    assert_eq!(w1.on_reply(&cfg, &store, &f[0], &ok(JWKS), 1_500), Fetched::Published { warnings: vec![] });
    assert!(matches!(w1.available(&cfg, 0, 1_500), Availability::Ready(_, 1)));
    // Worker 2 syncs the published set, without fetching.
    assert!(w2.due_fetches(&cfg, &store, 2_000).is_empty());
    assert!(matches!(w2.available(&cfg, 0, 2_000), Availability::Ready(_, 1)));
}

#[test]
fn refresh_before_expiry_stale_if_error_and_backoff() {
    let cfg = remote_cfg();
    let store = MemStore::default();
    let mut w = Keys::new(&cfg);
    let f = w.due_fetches(&cfg, &store, 0).pop().unwrap();
    w.on_reply(&cfg, &store, &f, &ok(JWKS), 0);
    // cache 100 s, margin min(20 s, 30 s) = 20 s: due at 80 s.
    assert!(w.due_fetches(&cfg, &store, 79_999).is_empty());
    let f = w.due_fetches(&cfg, &store, 80_000).pop().expect("background refresh before expiry");
    // The identity provider fails: the old set stays usable until cache + max_stale.
    assert!(matches!(w.on_reply(&cfg, &store, &f, &Reply::default(), 80_000), Fetched::Failed(_)));
    assert!(matches!(w.available(&cfg, 0, 149_999), Availability::Ready(..)));
    assert!(matches!(w.available(&cfg, 0, 150_000), Availability::Unavailable));
    // Back-off: 1 s after the first failure, then 2 s.
    assert!(w.due_fetches(&cfg, &store, 80_500).is_empty());
    let f = w.due_fetches(&cfg, &store, 81_000).pop().unwrap();
    w.on_reply(&cfg, &store, &f, &Reply { status: Some(500), ..Reply::default() }, 81_000);
    assert!(w.due_fetches(&cfg, &store, 82_999).is_empty());
    let f = w.due_fetches(&cfg, &store, 83_000).pop().unwrap();
    assert!(matches!(w.on_reply(&cfg, &store, &f, &ok(JWKS), 83_000), Fetched::Published { .. }));
    assert!(matches!(w.available(&cfg, 0, 83_000), Availability::Ready(_, 2)));
}

#[test]
fn bad_documents_never_replace_a_good_set() {
    let cfg = remote_cfg();
    let store = MemStore::default();
    let mut w = Keys::new(&cfg);
    let f = w.due_fetches(&cfg, &store, 0).pop().unwrap();
    w.on_reply(&cfg, &store, &f, &ok(JWKS), 0);
    for bad in ["<<not json>>", "{}", r#"{"keys":[]}"#, r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#] {
        let f = w.due_fetches(&cfg, &store, 1_000_000).pop().unwrap_or_else(|| w.first_fetch(&cfg, 0).unwrap());
        assert!(matches!(w.on_reply(&cfg, &store, &f, &ok(bad), 90_000), Fetched::Failed(_)), "{bad}");
        assert!(matches!(w.available(&cfg, 0, 90_000), Availability::Ready(_, 1)), "{bad}");
    }
    let huge = Reply { status: Some(200), headers: vec![], body: vec![b' '; MAX_REPLY_BYTES + 1] };
    assert!(matches!(w.on_reply(&cfg, &store, &w.first_fetch(&cfg, 0).unwrap(), &huge, 90_000), Fetched::Failed(_)));
}

#[test]
fn unknown_kid_refresh_is_rate_limited_across_workers() {
    let cfg = remote_cfg();
    let store = MemStore::default();
    let (mut w1, mut w2) = (Keys::new(&cfg), Keys::new(&cfg));
    assert!(w1.early_refresh(&cfg, &store, 0, 1_000).is_some());
    assert!(w2.early_refresh(&cfg, &store, 0, 5_000).is_none(), "within the 10 s interval, on any worker");
    assert!(w2.early_refresh(&cfg, &store, 0, 11_000).is_some());
    let f = w1.early_refresh(&cfg, &store, 0, 30_000).unwrap();
    assert!(!f.leased, "an early refresh never holds (or frees) the background lease");
}

#[test]
fn discovery_then_jwks() {
    let cfg = discovery_cfg();
    let store = MemStore::default();
    let mut w = Keys::new(&cfg);
    let f = w.due_fetches(&cfg, &store, 0).pop().unwrap();
    assert_eq!(f.stage, Stage::Discovery);
    assert_eq!(f.callout.path, "/realms/x/.well-known/openid-configuration");
    let doc = r#"{"issuer":"https://idp.example.com/realms/x","jwks_uri":"https://keys.example.com/certs"}"#;
    let Fetched::Next(next) = w.on_reply(&cfg, &store, &f, &ok(doc), 10) else { panic!("expected the jwks step") };
    assert_eq!(
        (next.stage, next.callout.authority.as_str(), next.callout.path.as_str()),
        (Stage::Jwks, "keys.example.com", "/certs")
    );
    assert!(next.leased);
    assert!(matches!(w.on_reply(&cfg, &store, &next, &ok(JWKS), 20), Fetched::Published { .. }));
    // Another worker learns the jwks_uri from the shared record and refreshes directly.
    let mut w2 = Keys::new(&cfg);
    w2.sync(&cfg, &store, 0);
    let again = w2.due_fetches(&cfg, &store, 1_000_000).pop().unwrap();
    assert_eq!((again.stage, again.callout.path.as_str()), (Stage::Jwks, "/certs"));
    // Garbage discovery documents fail cleanly.
    for bad in ["nope", "{}", r#"{"jwks_uri":"ftp://x/y"}"#] {
        let mut w3 = Keys::new(&cfg);
        let f = w3.first_fetch(&cfg, 0).unwrap();
        assert!(matches!(w3.on_reply(&cfg, &store, &f, &ok(bad), 0), Fetched::Failed(_)), "{bad}");
    }
}

#[test]
fn records_round_trip() {
    let loc = ("a.example".to_string(), "/k".to_string());
    let r = encode_record(7, 99, b"{}", Some(&loc));
    let (v, t, body, l) = decode_record(&r).unwrap();
    assert_eq!((v, t, body, l), (7, 99, &b"{}"[..], Some(loc)));
    assert!(decode_record(&r[..10]).is_none());
    assert!(decode_record(&[0u8; 19]).is_none());
}
