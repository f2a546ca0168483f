//! Global limits through Envoy's rate limit service protocol: two Envoys (2 workers each)
//! share one rate limit service, and the plan's limit holds across both; a service that is
//! down follows the "dependency down" switch.

use portcullis::apikey::hash_hex;
use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::Gateway;
use portcullis_harness::http::KeepAlive;
use portcullis_harness::rls::RateLimitService;
use portcullis_harness::upstream::EchoUpstream;
use serde_json::json;

fn start(up: &EchoUpstream, rls_port: u16, on_down: &str) -> Envoy {
    let cfg = json!({
        "on_dependency_down": on_down,
        "api_keys": {"from_headers": ["x-api-key"], "clients": [{"client_id": "p", "keys_sha256": [hash_hex("k")], "plan": "shared"}]},
        "rate_limit": {"plans": {"shared": {"requests": 10, "per": "60s",
            "global": {"cluster": "rls", "domain": "portcullis-test", "timeout": "0.5s"}}}}
    });
    Gateway::new(&cfg).cluster("upstream", up.port).grpc_cluster("rls", rls_port).start()
}

fn run(envoy: &Envoy, n: usize) -> Vec<u16> {
    let mut c = KeepAlive::connect(&envoy.url("/")).unwrap();
    (0..n).map(|_| c.get("/orders", &[("x-api-key", "k")]).unwrap().status).collect()
}

#[test]
fn the_limit_holds_across_two_proxies() {
    let rls = RateLimitService::start(&json!({"shared": {"requests": 10, "window": 60}})).expect("rls starts");
    let up = EchoUpstream::start();
    let a = start(&up, rls.port, "fail_closed");
    let b = start(&up, rls.port, "fail_closed");
    let mut statuses = run(&a, 8);
    statuses.extend(run(&b, 8));
    statuses.extend(run(&a, 4));
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(admitted, 10, "{statuses:?}");
    assert!(statuses.iter().all(|&s| s == 200 || s == 429), "{statuses:?}");
    let mut c = KeepAlive::connect(&b.url("/")).unwrap();
    let r = c.get("/orders", &[("x-api-key", "k")]).unwrap();
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After from duration_until_reset: {retry}");
}

#[test]
fn a_service_that_is_down_follows_the_dependency_switch() {
    let up = EchoUpstream::start();
    // Nothing listens on this port: every call fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = start(&up, dead, "fail_closed");
    let r = run(&closed, 2);
    assert_eq!(r, vec![503, 503]);
    assert!(closed.stat("wasmcustom.portcullis.ratelimit.global_failed") >= 2);
    let open = start(&up, dead, "anonymous");
    assert_eq!(run(&open, 2), vec![200, 200], "limits are skipped, credentials still required");
}
