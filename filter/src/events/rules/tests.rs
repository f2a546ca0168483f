#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::store::MemStore;

fn rule(kind: Kind, key: KeyType, trigger: Trigger, window_ms: u64) -> Rule {
    Rule { name: "r".into(), kind, reasons: vec![], routes: vec![], key, trigger, window_ms, actions: vec![] }
}

fn login_failed(user: &str, source: &str) -> Event {
    let mut e = Event::new(Kind::LoginFailed, 0);
    e.username = Some(user.into());
    e.source = Some(source.into());
    e
}

#[test]
fn threshold_in_a_sliding_window_fires_once_per_window() {
    let s = MemStore::default();
    let rules = vec![rule(Kind::LoginFailed, KeyType::Username, Trigger::Threshold(5), 60_000)];
    let mut fired_at = Vec::new();
    for i in 0..12u64 {
        let now = i * 1_000;
        if !observe(&s, &rules, 64, &login_failed("Alice", "10.0.0.1"), now).is_empty() {
            fired_at.push(now);
        }
    }
    assert_eq!(fired_at, vec![4_000], "the fifth failure fires; then quiet for the window");
    let s2 = MemStore::default();
    let mut last = Vec::new();
    for i in 0..5u64 {
        last = observe(&s2, &rules, 64, &login_failed("dave", "10.0.0.1"), 1_000 + i * 500);
    }
    assert_eq!((last[0].first_ms, last[0].at_ms), (1_000, 3_000), "first and last of the run that fired");
    // Other users are counted apart; events spread out never reach the threshold.
    for i in 0..10u64 {
        assert!(observe(&s, &rules, 64, &login_failed("bob", "10.0.0.1"), 100_000 + i * 20_000).is_empty());
    }
    // Re-armed after the window: five more fire again.
    let fired: usize =
        (0..5u64).map(|i| observe(&s, &rules, 64, &login_failed("alice", "10.0.0.1"), 70_000 + i).len()).sum();
    assert_eq!(fired, 1);
    let f = observe(&s, &rules, 64, &login_failed("carol", "10.0.0.1"), 0);
    assert!(f.is_empty());
}

#[test]
fn distinct_values_of_another_key() {
    let s = MemStore::default();
    let mut r = rule(Kind::LoginSucceeded, KeyType::Username, Trigger::Distinct(KeyType::Source, 5), 3_600_000);
    r.kind = Kind::LoginSucceeded;
    let rules = vec![r];
    let mut e = login_failed("alice", "10.0.0.1");
    e.kind = Some(Kind::LoginSucceeded);
    let mut fired = 0;
    for round in 0..3 {
        for addr in 1..=4 {
            e.source = Some(format!("10.0.0.{addr}"));
            fired += observe(&s, &rules, 64, &e, round * 1000 + addr).len();
        }
    }
    assert_eq!(fired, 0, "four addresses, many logins: below five distinct");
    e.source = Some("10.0.0.5".into());
    let f = observe(&s, &rules, 64, &e, 10_000);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].key.as_str(), f[0].count), ("alice", 5));
    // IPv6 addresses of one /64 are one source.
    let mut e6 = e.clone();
    e6.username = Some("bob".into());
    for i in 0..6 {
        e6.source = Some(format!("[2001:db8::{i}]:443"));
        assert!(observe(&s, &rules, 64, &e6, 20_000 + i).is_empty());
    }
}

#[test]
fn anomaly_against_the_keys_own_baseline() {
    let s = MemStore::default();
    let rules = vec![rule(
        Kind::Allowed,
        KeyType::Client,
        Trigger::Anomaly { factor: 10.0, baseline_ms: 600_000, min_events: 50 },
        60_000,
    )];
    let mut e = Event::new(Kind::Allowed, 0);
    e.client = Some("app".into());
    // Ten quiet minutes at 10 events a minute build the baseline.
    let mut fired = 0;
    for minute in 0..10u64 {
        for i in 0..10u64 {
            fired += observe(&s, &rules, 64, &e, minute * 60_000 + i * 100).len();
        }
    }
    assert_eq!(fired, 0);
    // A burst of 200 in one minute: far above 10 × the baseline, and ≥ min_events.
    let mut first = None;
    for i in 0..200u64 {
        if !observe(&s, &rules, 64, &e, 600_000 + i * 10).is_empty() && first.is_none() {
            first = Some(i);
        }
    }
    let n = first.expect("the burst fires");
    assert!(n >= 49, "not before min_events ({n})");
}

#[test]
fn floods_of_new_keys_cannot_evict_a_counting_key() {
    let s = MemStore::default();
    let rules = vec![rule(Kind::LoginFailed, KeyType::Username, Trigger::Threshold(3), 60_000)];
    observe(&s, &rules, 4, &login_failed("victim", "1.1.1.1"), 0);
    for i in 0..1000 {
        observe(&s, &rules, 4, &login_failed(&format!("spray-{i}"), "1.1.1.1"), 1);
    }
    assert!(s.len() <= 4, "bounded: {}", s.len());
    // The victim's count survived (if its slot was never free to evict): two more fire.
    let fired: usize = (0..2).map(|i| observe(&s, &rules, 4, &login_failed("victim", "1.1.1.1"), 2 + i).len()).sum();
    assert_eq!(fired, 1);
}

#[test]
fn actions_are_shared_and_lapse() {
    let s = MemStore::default();
    let ns = crate::store::Namespace::of("rules", &["x"]);
    publish(&s, &ns, Effect::Block, KeyType::Username, "alice", 300_000, 0).unwrap();
    let (v, a) = sync(&s, &ns, 0).unwrap();
    assert_eq!(v, 1);
    assert_eq!(a.until(Effect::Block, KeyType::Username, "alice", 1), Some(300_000));
    assert_eq!(a.until(Effect::Block, KeyType::Username, "bob", 1), None);
    assert_eq!(a.until(Effect::Revoke, KeyType::Username, "alice", 1), None);
    assert_eq!(a.until(Effect::Block, KeyType::Username, "alice", 300_000), None, "lapsed");
    assert!(sync(&s, &ns, 1).is_none());
    publish(&s, &ns, Effect::Revoke, KeyType::Client, "app", 3_600_000, 10).unwrap();
    let (v, a) = sync(&s, &ns, 1).unwrap();
    assert_eq!(v, 2);
    assert!(a.until(Effect::Revoke, KeyType::Client, "app", 11).is_some());
    assert!(a.until(Effect::Block, KeyType::Username, "alice", 11).is_some());
}
