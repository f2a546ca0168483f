//! Per-client token buckets through a real Envoy with 2 workers: exact across workers,
//! per-client isolation, refill, plans, route overrides and cost, anonymous clients by
//! address, hidden API keys, RateLimit headers, and shadow mode.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::apikey::hash_hex;
use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::Gateway;
use portcullis_harness::http::{self, KeepAlive};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

fn config(mode: &str) -> Value {
    json!({
        "mode": mode,
        "api_keys": {
            "from_headers": ["x-api-key"],
            "hide_credentials": true,
            "clients": [
                {"client_id": "free-a", "keys_sha256": [hash_hex("key-free-a")], "plan": "free"},
                {"client_id": "free-b", "keys_sha256": [hash_hex("key-free-b")], "plan": "free"},
                {"client_id": "free-c", "keys_sha256": [hash_hex("key-free-c")], "plan": "free"},
                {"client_id": "gold", "keys_sha256": [hash_hex("key-gold")], "plan": "premium"}
            ]
        },
        "rate_limit": {
            "plans": {
                "free": {"requests": 100, "per": "60s", "burst": 100},
                "premium": {"requests": 1000, "per": "60s", "burst": 200},
                "special": {"requests": 3, "per": "60s"},
                "anon": {"requests": 5, "per": "60s"}
            },
            "default_plan": "free",
            "headers": true
        },
        "routes": [
            {"match": {"prefix": "/special"}, "plan": "special"},
            {"match": {"prefix": "/expensive"}, "cost": 50},
            {"match": {"prefix": "/public"}, "requires": "none", "plan": "anon"}
        ]
    })
}

fn start(up: &EchoUpstream, mode: &str) -> Envoy {
    Gateway::new(&config(mode)).cluster("upstream", up.port).start()
}

fn statuses(envoy: &Envoy, path: &str, key: &str, n: usize) -> Vec<u16> {
    let mut c = KeepAlive::connect(&envoy.url("/")).unwrap();
    (0..n).map(|_| c.get(path, &[("x-api-key", key)]).unwrap().status).collect()
}

fn admitted(s: &[u16]) -> usize {
    s.iter().filter(|&&x| x == 200).count()
}

#[test]
fn one_client_is_limited_exactly_across_workers() {
    let up = EchoUpstream::start();
    let envoy = start(&up, "enforce");
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = envoy.url("/");
            let (ok, limited) = (ok.clone(), limited.clone());
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(&url).unwrap();
                for _ in 0..125 {
                    let r = c.get("/orders", &[("x-api-key", "key-free-a")]).unwrap();
                    match r.status {
                        200 => ok.fetch_add(1, Ordering::SeqCst),
                        429 => {
                            assert!(r.header("retry-after").is_some());
                            assert_eq!(r.header("ratelimit-policy"), Some("\"free\";q=100;w=60"));
                            limited.fetch_add(1, Ordering::SeqCst)
                        }
                        s => panic!("unexpected status {s}: {}", r.text()),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed_ms = t0.elapsed().as_millis() as u64;
    let ok = ok.load(Ordering::SeqCst);
    // Burst 100, plus what the plan refilled while the test ran (1 token per 600 ms), plus
    // at most one request lost to the unconditional first write of a new slot (see README).
    let refilled = (elapsed_ms * 100 / 60_000) as usize;
    eprintln!("admitted {ok} of 1000 in {elapsed_ms} ms (refill allowance {refilled})");
    assert!(ok >= 100 && ok <= 101 + refilled, "admitted {ok} (elapsed {elapsed_ms} ms)");
    assert_eq!(ok + limited.load(Ordering::SeqCst), 1000);
    assert!(envoy.stat("wasmcustom.portcullis.denied.rate_limited") >= 899 - refilled as u64);

    // A second client is unaffected.
    let r = http::get(&envoy.url("/orders"), &[("x-api-key", "key-free-b")]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), Some("\"free\";r=99;t=1"));
    // After the refill interval (one token per 600 ms), client A is admitted again.
    std::thread::sleep(Duration::from_millis(1300));
    assert!(admitted(&statuses(&envoy, "/orders", "key-free-a", 3)) >= 1);
    // The hidden key never reached the upstream.
    assert!(up.requests().iter().all(|q| !q.to_string().contains("key-free-a")));
}

#[test]
fn plans_route_overrides_cost_and_anonymous_clients() {
    let up = EchoUpstream::start();
    let envoy = start(&up, "enforce");
    // Premium: its own, larger burst (200), refilling at 1000/min while the test runs.
    let t0 = Instant::now();
    let s = statuses(&envoy, "/orders", "key-gold", 260);
    let refilled = (t0.elapsed().as_millis() as u64 * 1000 / 60_000) as usize;
    let ok = admitted(&s);
    assert!(ok >= 200 && ok <= 201 + refilled, "premium admitted {ok} (refill allowance {refilled})");
    // A route with its own plan has its own bucket, even for a client whose plan is spent.
    statuses(&envoy, "/orders", "key-free-b", 120);
    let s = statuses(&envoy, "/special/x", "key-free-b", 6);
    assert_eq!(admitted(&s), 3, "{s:?}");
    // Cost: 50 tokens a request, burst 100 → two requests.
    let s = statuses(&envoy, "/expensive", "key-free-c", 4);
    assert_eq!(s, vec![200, 200, 429, 429]);
    // Anonymous route: limited by source address with the route's plan.
    let mut c = KeepAlive::connect(&envoy.url("/")).unwrap();
    let s: Vec<u16> = (0..8).map(|_| c.get("/public/p", &[]).unwrap().status).collect();
    assert_eq!(admitted(&s), 5, "{s:?}");
}

#[test]
fn shadow_mode_counts_but_never_rejects() {
    let up = EchoUpstream::start();
    let envoy = start(&up, "shadow");
    let mut c = KeepAlive::connect(&envoy.url("/")).unwrap();
    let mut decisions = Vec::new();
    for _ in 0..5 {
        let r = c.get("/special", &[("x-api-key", "key-free-a")]).unwrap();
        assert_eq!(r.status, 200);
        decisions.push(r.json()["headers"]["x-portcullis-decision"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(decisions, vec!["allow", "allow", "allow", "deny; reason=rate_limited", "deny; reason=rate_limited"]);
    assert_eq!(envoy.stat("wasmcustom.portcullis.shadow_denied.rate_limited"), 2);
}
