//! Events, trigger rules and the revocation list (README "Events, trigger rules and
//! revocation") through a real Envoy with 2 workers loading the compiled module; the test IdP
//! is the webhook sink (it records every batch, headers included, and can stall), the
//! identity backend and the revocation list (`ETag` / `304`, every poll logged).
//!
//! 1. A denied request's event reaches the sink within ~2 s as one element of a JSON array,
//!    with the documented fields, the sink's `value_env` header, and no secret in the batch.
//! 2. `brute-force-user`: 5 failed logins → exactly one `rule_triggered` alert (the sink takes
//!    only `denied`: the alert arrives anyway), then that user is blocked (429 + `Retry-After`)
//!    on both workers while another user logs in, and unblocked after the block.
//! 3. 20 invalid API keys from 127.0.0.2 block that address (429 `blocked`, a valid key
//!    included) while 127.0.0.1 still passes.
//! 4. `account-sharing`: one alert after successful logins from 5 distinct addresses, none
//!    before, none again within the window.
//! 5. The revocation list: `jti`, `sub` + `iat_before` and `api_key_sha256` entries take
//!    effect within ~2.5 s on credentials already verified and cached (401 `revoked`); polls
//!    carry `If-None-Match` and happen about once a second for the whole Envoy.
//! 6. A stalled or down sink changes nothing for requests (statuses, p50 latency), and a
//!    stalled sink's queue, fed by both workers, stays bounded by one `queue_max` for the whole
//!    Envoy (overflow counted).
//!
//! 7. A failed discovery document is reported as `discovery:<provider>`, a failed key set as
//!    `jwks:<provider>`.
//!
//! Every wait is bounded; figures (times to effect, latencies, poll counts) are printed.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use portcullis::apikey::hash_hex;
use portcullis_harness::curl;
use portcullis_harness::envoy::Envoy;
use portcullis_harness::gateway::{Gateway, Listener};
use portcullis_harness::http::{self, KeepAlive};
use portcullis_harness::idp::{now, Alg, Behavior, Endpoint, TestIdp, WebhookRequest};
use portcullis_harness::upstream::EchoUpstream;
use serde_json::{json, Value};

const FORM: &str = "application/x-www-form-urlencoded";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A batch waits at most `flush_interval` (1 s by default) plus a tick: allow some slack.
const DELIVERY: Duration = Duration::from_millis(2500);
const GOOD_KEY: &str = "partner-key-7f3a9c";
const BAD_KEY: &str = "stolen-key-b41d2e";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A sink posting to the IdP's `/webhooks/<name>`, with extra fields.
fn sink(name: &str, extra: Value) -> Value {
    let mut s = json!({"cluster": "idp", "authority": "idp.test", "path": format!("/webhooks/{name}")});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    s
}

fn api_keys() -> Value {
    json!({"from_headers": ["x-api-key"], "clients": [{"client_id": "partner", "keys_sha256": [hash_hex(GOOD_KEY)]}]})
}

/// Password grant, forward mode holding the headers: an accepted login goes on to the echo
/// upstream (200); users live in the IdP's backend `ldap`.
fn grant() -> Value {
    json!({
        "token_path": "/oauth/token",
        "identities": [{"name": "ldap", "cluster": "idp", "authority": "idp.test",
            "path": "/backends/ldap/authenticate", "timeout": "1s", "registered_at": "2026-03-01T00:00:00Z"}],
        "mode": "forward",
        "forward": {"hold_headers": true}
    })
}

fn idp_with_users() -> TestIdp {
    let idp = TestIdp::start();
    idp.add_backend("ldap");
    idp.add_user("ldap", "alice", "pw-alice", None);
    idp.add_user("ldap", "bob", "pw-bob", None);
    idp
}

/// The filter in front of the echo upstream, the IdP reachable as `idp`, the client address
/// taken from the TCP peer (`use_remote_address`).
fn start(cfg: &Value, idp: &TestIdp, up: &EchoUpstream) -> Envoy {
    let listener = Listener::new("main", cfg).use_remote_address().allow_on_headers_stop_iteration();
    Gateway::empty().listener(listener).cluster("upstream", up.port).cluster("idp", idp.port).start()
}

/// A password-grant login over a new connection from `from`.
fn login(envoy: &Envoy, user: &str, password: &str, from: Ipv4Addr) -> http::Response {
    let body = http::form_encode(&[("grant_type", "password"), ("username", user), ("password", password)]);
    curl::Request::new("POST", &envoy.url("/oauth/token"))
        .header("content-type", FORM)
        .body(body.as_bytes())
        .from(from)
        .timeout(CLIENT_TIMEOUT)
        .send()
        .unwrap_or_else(|e| panic!("login {user} from {from}: {e}"))
}

/// `GET path` over a new connection from `from`.
fn get_from(envoy: &Envoy, path: &str, headers: &[(&str, &str)], from: Ipv4Addr) -> http::Response {
    let mut request = curl::Request::new("GET", &envoy.url(path)).from(from).timeout(CLIENT_TIMEOUT);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    request.send().unwrap_or_else(|e| panic!("GET {path} from {from}: {e}"))
}

/// `GET path` over a new connection (plain sockets, from 127.0.0.1).
fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> http::Response {
    http::request_with_timeout("GET", &envoy.url(path), headers, None, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Every event sink `name` received, in arrival order (batches flattened).
fn events(idp: &TestIdp, name: &str) -> Vec<Value> {
    idp.webhook_bodies(name)
        .into_iter()
        .flat_map(|b| match b {
            Value::Array(a) => a,
            other => vec![other],
        })
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// Polls `f` every 25 ms until it gives a value or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The problem `type` of a response, without the `urn:portcullis:problem:` prefix.
fn problem(r: &http::Response) -> String {
    let t = r.json()["type"].as_str().unwrap_or_default().to_string();
    t.strip_prefix("urn:portcullis:problem:").unwrap_or(&t).to_string()
}

/// Connections each worker has accepted so far on the (only) listener: Envoy's own
/// per-worker listener counters, read without waiting. Envoy names them after the configured
/// address, `127.0.0.1_0`.
fn worker_connections(envoy: &Envoy) -> Vec<u64> {
    let url = format!("http://127.0.0.1:{}/stats?filter=worker_", envoy.admin_port);
    let text = http::get(&url, &[]).map(|r| r.text()).unwrap_or_default();
    let prefix = "listener.127.0.0.1_0.worker_";
    let mut per_worker: Vec<(u32, u64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (worker, value) = rest.split_once(".downstream_cx_total: ")?;
            Some((worker.parse().ok()?, value.trim().parse().ok()?))
        })
        .collect();
    per_worker.sort();
    per_worker.into_iter().map(|(_, n)| n).collect()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------------------
// 1. A denied request's event
// ---------------------------------------------------------------------------------------

#[test]
fn a_denied_requests_event_reaches_the_sink_with_the_documented_fields_and_no_secret() {
    const SIEM_TOKEN: &str = "siem-bearer-5e1f";
    const PASSWORD: &str = "hunter2-never-logged";
    let idp = idp_with_users();
    let up = EchoUpstream::start();
    let cfg = json!({
        "providers": {"corp": {"issuer": idp.issuer(), "local_jwks": {"inline_string": idp.public_jwks_for(&["rsa-a"])},
            "from_params": ["token"]}},
        "api_keys": api_keys(),
        "password_grant": grant(),
        "routes": [{"name": "orders", "match": {"prefix": "/orders"}, "requires": {"any": ["corp", "api_key"]}}],
        "events": {"sinks": {"siem": sink("siem", json!({"headers": [
            {"name": "authorization", "value_env": "SIEM_TOKEN"}, {"name": "x-sink", "value": "portcullis"}]}))}}
    });
    // Envoy's default HCM here: under `use_remote_address: true` Envoy treats a loopback client
    // as external and replaces its `x-request-id` (`preserve_external_request_id` is off), so
    // the id sent would never reach the filter. Without XFF the source is still the TCP peer.
    let envoy = Gateway::empty()
        .listener(
            Listener::new("main", &cfg)
                .allow_on_headers_stop_iteration()
                .env("SIEM_TOKEN", &format!("Bearer {SIEM_TOKEN}")),
        )
        .cluster("upstream", up.port)
        .cluster("idp", idp.port)
        .start();

    // A token signed by a key the provider does not know, in the query string.
    let token = idp.mint(Alg::RS256, "rsa-b", idp.default_claims("orders-api"));
    let sent = Instant::now();
    let r = get(&envoy, &format!("/orders?token={token}&x=1"), &[("x-request-id", "evt-token-1")]);
    assert_eq!(r.status, 401, "{}", r.text());
    let reason = problem(&r);
    // A bad API key and a failed login (another route, the token endpoint).
    let r = get(&envoy, "/orders/7?x=2", &[("x-api-key", BAD_KEY), ("x-request-id", "evt-key-1")]);
    assert_eq!((r.status, problem(&r).as_str()), (401, "api_key_invalid"));
    assert_eq!(login(&envoy, "alice", PASSWORD, ip(1)).status, 400);

    let by_id = |id: &str| events(&idp, "siem").into_iter().find(|e| e["request_id"] == id);
    let event = wait_for(DELIVERY, || by_id("evt-token-1")).unwrap_or_else(|| {
        panic!("no event for evt-token-1 within {DELIVERY:?}; the sink got {:?}", idp.webhook_bodies("siem"))
    });
    let batch: WebhookRequest = idp
        .webhook_requests("siem")
        .into_iter()
        .find(|b| b.text.contains("evt-token-1"))
        .expect("the batch holding the event");
    eprintln!("denied event delivered {:?} after the request: {event}", batch.at.duration_since(sent));
    assert!(batch.at.duration_since(sent) <= DELIVERY);
    assert!(batch.body.is_array(), "a batch is a JSON array: {}", batch.text);

    assert_eq!(event["kind"], "denied");
    assert_eq!(event["reason"].as_str(), Some(reason.as_str()), "the reason code of the answer");
    assert_eq!(event["status"], json!(401), "a number");
    assert_eq!(event["route"], "orders", "the route's name");
    assert_eq!(event["method"], "GET");
    assert_eq!(event["path"], "/orders", "canonical, no query string");
    assert_eq!(event["source"], "127.0.0.1");
    let time = event["time"].as_str().expect("time");
    let at = portcullis::config::parse_rfc3339(time).unwrap_or_else(|| panic!("time is not RFC 3339: {time}"));
    assert!(time.ends_with('Z') && (at - now() as i64).abs() <= 60, "time {time} is now, UTC");

    let key_event = wait_for(DELIVERY, || by_id("evt-key-1")).expect("the API-key event");
    assert_eq!(
        (&key_event["reason"], &key_event["path"], &key_event["route"]),
        (&json!("api_key_invalid"), &json!("/orders/7"), &json!("orders"))
    );
    let failed = wait_for(DELIVERY, || {
        events(&idp, "siem").into_iter().find(|e| e["kind"] == "login_failed" && e["username"] == "alice")
    })
    .expect("the failed login's event");
    assert_eq!(failed["path"], "/oauth/token");

    // Every batch carries the sink's headers; no batch carries a secret.
    let signature = token.rsplit('.').next().unwrap_or_default().to_string();
    for b in idp.webhook_requests("siem") {
        assert_eq!(b.header("authorization"), Some(format!("Bearer {SIEM_TOKEN}").as_str()), "value_env header");
        assert_eq!(b.header("x-sink"), Some("portcullis"));
        for secret in [token.as_str(), signature.as_str(), BAD_KEY, PASSWORD, SIEM_TOKEN] {
            assert!(!b.text.contains(secret), "a secret ({secret}) in the batch: {}", b.text);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. brute-force-user
// ---------------------------------------------------------------------------------------

#[test]
fn five_failed_logins_alert_once_and_block_that_user_on_both_workers_until_the_block_ends() {
    let idp = idp_with_users();
    let up = EchoUpstream::start();
    let cfg = json!({
        "password_grant": grant(),
        "rules": [{"name": "brute-force-user", "on": {"kind": "login_failed"}, "key": "username",
            "threshold": 5, "window": "60s", "actions": [{"alert": "siem"}, {"block": "3s"}]}],
        "events": {"sinks": {"siem": sink("siem", json!({"kinds": ["denied"]}))}}
    });
    let envoy = start(&cfg, &idp, &up);

    // Four failures: no alert, no block.
    for i in 0..4 {
        assert_eq!(login(&envoy, "Alice", "wrong", ip(1)).status, 400, "failure {i}");
    }
    std::thread::sleep(Duration::from_millis(1300));
    assert!(of_kind(&events(&idp, "siem"), "rule_triggered").is_empty(), "no alert after 4 failures");
    let r = login(&envoy, "Alice", "wrong", ip(1));
    let fifth = Instant::now();
    assert_eq!(r.status, 400, "the 5th failure itself is answered as usual");

    let alert = wait_for(DELIVERY, || of_kind(&events(&idp, "siem"), "rule_triggered").first().copied().cloned())
        .expect("a rule_triggered alert reaches the sink (kinds [denied] notwithstanding)");
    eprintln!("alert {:?} after the 5th failure: {alert}", fifth.elapsed());
    assert_eq!((&alert["rule"], &alert["key"]), (&json!("brute-force-user"), &json!("alice")), "lower-cased");
    assert_eq!(alert["key_type"], "username");
    std::thread::sleep(Duration::from_millis(200));

    // The right password, over new connections until both workers refused it (bounded).
    let (before, mut blocked) = (worker_connections(&envoy), 0);
    while blocked < 30 && fifth.elapsed() < Duration::from_millis(2500) {
        let r = login(&envoy, "alice", "pw-alice", ip(1));
        assert_eq!(r.status, 429, "blocked login {blocked}: {}", r.text());
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
        assert!((1..=3).contains(&retry), "Retry-After {retry}");
        blocked += 1;
        let per_worker: Vec<u64> = worker_connections(&envoy).iter().zip(&before).map(|(a, b)| a - b).collect();
        if blocked >= 4 && per_worker.len() == 2 && per_worker.iter().all(|&n| n >= 2) {
            break;
        }
    }
    let per_worker: Vec<u64> = worker_connections(&envoy).iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!("{blocked} blocked logins, connections per worker {per_worker:?}");
    assert!(per_worker.len() == 2 && per_worker.iter().all(|&n| n >= 1), "both workers refused: {per_worker:?}");
    assert_eq!(login(&envoy, "bob", "pw-bob", ip(1)).status, 200, "another user logs in");

    let lift = (fifth + Duration::from_millis(3300)).saturating_duration_since(Instant::now());
    std::thread::sleep(lift);
    let r = login(&envoy, "alice", "pw-alice", ip(1));
    assert_eq!(r.status, 200, "unblocked after 3 s: {}", r.text());
    std::thread::sleep(Duration::from_millis(1300));
    let all = events(&idp, "siem");
    assert_eq!(of_kind(&all, "rule_triggered").len(), 1, "exactly one alert: {all:?}");
    assert!(of_kind(&all, "login_failed").is_empty(), "the sink takes only denied: {all:?}");
}

// ---------------------------------------------------------------------------------------
// 3. bad credentials per address
// ---------------------------------------------------------------------------------------

#[test]
fn twenty_invalid_keys_from_one_address_block_it_while_another_passes() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({
        "api_keys": api_keys(),
        "rules": [{"name": "bad-keys-per-address", "on": {"kind": "denied", "reasons": ["api_key_invalid"]},
            "key": "source", "threshold": 20, "window": "60s", "actions": [{"block": "600s"}, {"alert": "siem"}]}],
        "events": {"sinks": {"siem": sink("siem", json!({}))}}
    });
    let envoy = start(&cfg, &idp, &up);
    let (attacker, other) = (ip(2), ip(1));

    for i in 1..=20 {
        let r = get_from(&envoy, "/data", &[("x-api-key", BAD_KEY)], attacker);
        assert_eq!((r.status, problem(&r).as_str()), (401, "api_key_invalid"), "bad key {i}");
    }
    let twentieth = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..6 {
        let r = get_from(&envoy, "/data", &[("x-api-key", GOOD_KEY)], attacker);
        assert_eq!(r.status, 429, "valid key from the blocked address ({i}): {}", r.text());
        assert_eq!(r.json()["type"], "urn:portcullis:problem:blocked");
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
        assert!((590..=600).contains(&retry), "Retry-After {retry}");
        let r = get_from(&envoy, "/data", &[("x-api-key", GOOD_KEY)], other);
        assert_eq!(r.status, 200, "valid key from 127.0.0.1 ({i}): {}", r.text());
    }
    let alert = wait_for(DELIVERY, || of_kind(&events(&idp, "siem"), "rule_triggered").first().copied().cloned())
        .expect("the rule's alert");
    eprintln!("address blocked; alert {:?} after the 20th bad key: {alert}", twentieth.elapsed());
    assert_eq!((&alert["rule"], &alert["key"]), (&json!("bad-keys-per-address"), &json!("127.0.0.2")));
}

// ---------------------------------------------------------------------------------------
// 4. account-sharing
// ---------------------------------------------------------------------------------------

#[test]
fn logins_from_five_addresses_raise_one_account_sharing_alert() {
    let idp = idp_with_users();
    let up = EchoUpstream::start();
    let cfg = json!({
        "password_grant": grant(),
        "rules": [{"name": "account-sharing", "on": {"kind": "login_succeeded"}, "key": "username",
            "distinct": "source", "threshold": 5, "window": "3600s", "actions": [{"alert": "siem"}]}],
        "events": {"sinks": {"siem": sink("siem", json!({}))}}
    });
    let envoy = start(&cfg, &idp, &up);
    let alerts = || events(&idp, "siem").into_iter().filter(|e| e["kind"] == "rule_triggered").collect::<Vec<Value>>();

    // Four addresses, one of them twice, and another user from a fifth: no alert.
    for last in [1, 2, 3, 1, 4] {
        assert_eq!(login(&envoy, "alice", "pw-alice", ip(last)).status, 200, "from 127.0.0.{last}");
    }
    assert_eq!(login(&envoy, "bob", "pw-bob", ip(5)).status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alerts().is_empty(), "no alert before the 5th address: {:?}", alerts());
    // The sink's default kinds are every kind but `allowed`: the logins themselves arrive.
    assert_eq!(of_kind(&events(&idp, "siem"), "login_succeeded").len(), 6, "{:?}", events(&idp, "siem"));

    assert_eq!(login(&envoy, "alice", "pw-alice", ip(5)).status, 200, "the 5th address still logs in");
    let fifth = Instant::now();
    let alert = wait_for(DELIVERY, || alerts().first().cloned()).expect("an alert after the 5th address");
    eprintln!("account-sharing alert {:?} after the 5th address: {alert}", fifth.elapsed());
    assert_eq!((&alert["rule"], &alert["key"]), (&json!("account-sharing"), &json!("alice")));
    // A sixth address within the window: the rule has fired for this key already.
    assert_eq!(login(&envoy, "alice", "pw-alice", ip(6)).status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(alerts().len(), 1, "one alert: {:?}", alerts());
}

// ---------------------------------------------------------------------------------------
// 5. The revocation list
// ---------------------------------------------------------------------------------------

/// Sends `request` every 100 ms until it is refused (bounded by `timeout`); the time taken
/// and the refusal.
fn until_refused(timeout: Duration, mut request: impl FnMut() -> http::Response) -> (Duration, http::Response) {
    let started = Instant::now();
    let r = wait_for(timeout, || {
        let r = request();
        if r.status == 200 {
            std::thread::sleep(Duration::from_millis(75));
            None
        } else {
            Some(r)
        }
    });
    (started.elapsed(), r.unwrap_or_else(|| panic!("still accepted after {timeout:?}")))
}

#[test]
fn revocation_list_entries_take_effect_on_cached_credentials_within_a_poll() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({
        "providers": {"corp": {"issuer": idp.issuer(), "local_jwks": {"inline_string": idp.public_jwks_for(&["rsa-a"])}}},
        "api_keys": api_keys(),
        "revocation": {"endpoint": {"cluster": "idp", "authority": "idp.test", "path": "/revocations", "timeout": "1s"},
            "poll_interval": "1s"}
    });
    let envoy = start(&cfg, &idp, &up);
    let t = now();
    let mint = |sub: &str, jti: &str, iat: u64| {
        let mut claims = idp.default_claims("orders-api");
        claims["sub"] = json!(sub);
        claims["jti"] = json!(jti);
        claims["iat"] = json!(iat);
        format!("Bearer {}", idp.mint(Alg::RS256, "rsa-a", claims))
    };
    let (first, second, newer) =
        (mint("user-1", "jti-1", t), mint("user-2", "jti-2", t - 30), mint("user-2", "jti-3", t));
    let with_token = |token: &str| get(&envoy, "/orders", &[("authorization", token)]);
    let with_key = || get(&envoy, "/orders", &[("x-api-key", GOOD_KEY)]);
    for _ in 0..3 {
        assert_eq!(with_token(&first).status, 200, "verified, then cached");
        assert_eq!(with_token(&second).status, 200);
        assert_eq!(with_key().status, 200);
    }
    let bearer_revoked = |r: &http::Response, what: &str| {
        assert_eq!((r.status, problem(r).as_str()), (401, "revoked"), "{what}: {}", r.text());
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer") && challenge.contains("invalid_token"), "{what}: {challenge}");
    };
    let limit = Duration::from_millis(2500);

    idp.revoke_entry(json!({"jti": "jti-1"}));
    let (took_jti, r) = until_refused(Duration::from_secs(5), || with_token(&first));
    bearer_revoked(&r, "jti");
    assert_eq!(with_token(&second).status, 200, "other tokens unaffected");

    idp.revoke_entry(json!({"sub": "user-2", "iat_before": t - 10}));
    let (took_sub, r) = until_refused(Duration::from_secs(5), || with_token(&second));
    bearer_revoked(&r, "sub + iat_before");
    assert_eq!(with_token(&newer).status, 200, "the subject's token issued after iat_before passes");

    idp.revoke_entry(json!({"api_key_sha256": hash_hex(GOOD_KEY)}));
    let (took_key, r) = until_refused(Duration::from_secs(5), with_key);
    assert_eq!((r.status, problem(&r).as_str()), (401, "revoked"), "{}", r.text());
    // Checked last (below): the API-key challenge, as for any bad key — `ApiKey …,
    // error="invalid_key"`, and no challenge blaming a bearer token that was never sent.
    let key_challenges: Vec<String> = r.headers_all("www-authenticate").into_iter().map(str::to_string).collect();
    eprintln!("revocation took effect after: jti {took_jti:?}, sub+iat_before {took_sub:?}, api key {took_key:?}");
    assert!(took_jti <= limit && took_sub <= limit && took_key <= limit, "within ~2.5 s");
    // Every worker enforces them (each picks a newly published list up on its next tick):
    // new connections, all refused.
    std::thread::sleep(Duration::from_millis(250));
    for i in 0..6 {
        bearer_revoked(&with_token(&first), &format!("jti, connection {i}"));
        bearer_revoked(&with_token(&second), &format!("sub, connection {i}"));
        assert_eq!(with_key().status, 401, "key, connection {i}");
    }

    // About one poll a second for the whole Envoy, with If-None-Match once a list is known.
    let before = idp.revocation_polls().len();
    std::thread::sleep(Duration::from_secs(4));
    let polls = idp.revocation_polls();
    let in_window = polls.len() - before;
    let tagged = polls.iter().skip(1).filter(|p| p.if_none_match.is_some()).count();
    eprintln!(
        "revocation polls: {} in total, {in_window} in 4 s, {tagged} of the later ones with If-None-Match; last {:?}",
        polls.len(),
        polls.last().and_then(|p| p.if_none_match.clone())
    );
    assert!((2..=6).contains(&in_window), "one poll per second per Envoy, not per worker: {in_window} in 4 s");
    assert!(polls[0].if_none_match.is_none(), "nothing known at the first poll");
    let current = idp.revocations_etag();
    assert!(
        polls.iter().rev().take(in_window).all(|p| p.if_none_match.as_deref() == Some(current.as_str())),
        "later polls name the current ETag {current}: {:?}",
        polls.iter().map(|p| p.if_none_match.clone()).collect::<Vec<_>>()
    );
    let not_modified = envoy.stat("wasmcustom.portcullis.revocation.not_modified");
    let published = envoy.stat("wasmcustom.portcullis.revocation.published");
    eprintln!("revocation stats: published {published}, not_modified {not_modified}");
    assert!(not_modified >= 2 && published >= 4, "published {published}, not_modified {not_modified}");

    eprintln!("a revoked API key's challenges: {key_challenges:?}");
    assert!(
        key_challenges.iter().any(|c| c.starts_with("ApiKey") && c.contains("error=\"invalid_key\""))
            && !key_challenges.iter().any(|c| c.contains("invalid_token")),
        "a revoked API key gets the API-key challenge (README: \"an API key gets its own challenge\"): {key_challenges:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. A stalled or down sink
// ---------------------------------------------------------------------------------------

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("address").port()
}

#[test]
fn a_stalled_or_down_sink_changes_nothing_for_requests() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let base = json!({"api_keys": api_keys()});
    let mut with_events = base.clone();
    with_events["events"] = json!({"sinks": {
        "stalled": sink("stalled", json!({"timeout": "30s", "queue_max": 1000})),
        "down": {"cluster": "nowhere", "path": "/ingest", "timeout": "1s"}
    }});
    idp.set_behavior(Endpoint::Webhook("stalled".into()), Behavior::Stall);
    let plain = Gateway::new(&base).cluster("upstream", up.port).start();
    let evented = Gateway::new(&with_events)
        .cluster("upstream", up.port)
        .cluster("idp", idp.port)
        .cluster("nowhere", closed_port())
        .start();
    let send = |envoy: &Envoy, good: bool| {
        let key = if good { GOOD_KEY } else { BAD_KEY };
        let started = Instant::now();
        let r = get(envoy, "/data", &[("x-api-key", key)]);
        (r.status, started.elapsed())
    };
    // Warm up both, then a denied-event flood while the sink stalls.
    for i in 0..20 {
        send(&plain, i % 2 == 0);
        send(&evented, i % 2 == 0);
    }
    for _ in 0..300 {
        assert_eq!(send(&evented, false).0, 401);
    }
    assert!(
        wait_for(DELIVERY, || (idp.hits(Endpoint::Webhook("stalled".into())) > 0).then_some(())).is_some(),
        "the stalled sink was called"
    );
    // 200 requests each, interleaved (half denied: the flood goes on).
    let (mut plain_runs, mut evented_runs) = (Vec::new(), Vec::new());
    for i in 0..200 {
        plain_runs.push(send(&plain, i % 2 == 0));
        evented_runs.push(send(&evented, i % 2 == 0));
    }
    let statuses = |runs: &[(u16, Duration)]| runs.iter().map(|(s, _)| *s).collect::<Vec<u16>>();
    assert_eq!(statuses(&plain_runs), statuses(&evented_runs), "the same answers with and without events");
    assert!(statuses(&plain_runs).iter().enumerate().all(|(i, &s)| s == if i % 2 == 0 { 200 } else { 401 }));
    let sorted = |runs: &[(u16, Duration)]| {
        let mut d: Vec<Duration> = runs.iter().map(|(_, d)| *d).collect();
        d.sort();
        d
    };
    let (a, b) = (sorted(&plain_runs), sorted(&evented_runs));
    let (p50_plain, p50_evented) = (percentile(&a, 50), percentile(&b, 50));
    eprintln!(
        "latency without events p50 {p50_plain:?} p90 {:?}; with a stalled and a down sink p50 {p50_evented:?} p90 {:?}",
        percentile(&a, 90),
        percentile(&b, 90)
    );
    assert!(p50_evented < p50_plain + Duration::from_millis(20), "{p50_evented:?} vs {p50_plain:?}");
    let failed = evented.stat("wasmcustom.portcullis.events.dropped_failed");
    eprintln!("the down sink's events dropped after a retry: {failed}");
    assert!(failed > 0, "batches to the down sink failed twice and were dropped");
    assert!(!evented.log().contains("panic"), "no panic");
}

#[test]
fn a_failed_discovery_and_a_failed_key_set_are_reported_as_different_dependencies() {
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({
        "providers": {"corp": {"issuer": idp.issuer(), "audiences": ["orders-api"],
            "discovery": {"cluster": "idp", "timeout": "1s"}}},
        "events": {"sinks": {"siem": sink("siem", json!({"flush_interval": "0.2s", "kinds": ["dependency_down"]}))}}
    });
    // The discovery document fails first: the background fetch reports `discovery:corp`.
    idp.set_behavior(Endpoint::Discovery, Behavior::Status(500));
    let envoy = start(&cfg, &idp, &up);
    let dependency = |name: &'static str| {
        let idp = &idp;
        move || events(idp, "siem").into_iter().find(|e| e["kind"] == "dependency_down" && e["dependency"] == name)
    };
    let e = wait_for(Duration::from_secs(5), dependency("discovery:corp")).expect("a discovery:corp event");
    assert!(e["time"].is_string(), "{e}");
    assert!(
        !events(&idp, "siem").iter().any(|e| e["dependency"] == "jwks:corp"),
        "the key set was never fetched: no jwks:corp event"
    );
    // Discovery answers; the key set it names fails: `jwks:corp` (the backoff after the first
    // failures is a few seconds at most).
    idp.set_behavior(Endpoint::Jwks, Behavior::Status(503));
    idp.set_behavior(Endpoint::Discovery, Behavior::Normal);
    let _ = wait_for(Duration::from_secs(20), dependency("jwks:corp")).expect("a jwks:corp event");
    assert!(!envoy.log().contains("panic"));
}

#[test]
fn a_stalled_sinks_queue_stays_bounded() {
    const QUEUE_MAX: usize = 50;
    const BATCH_MAX: usize = 10;
    let idp = TestIdp::start();
    let up = EchoUpstream::start();
    let cfg = json!({"api_keys": api_keys(), "events": {"sinks": {"siem": sink("siem", json!({
        "timeout": "30s", "queue_max": QUEUE_MAX, "batch_max": BATCH_MAX, "flush_interval": "0.2s", "kinds": ["denied"]}))}}});
    let envoy = Gateway::new(&cfg).cluster("upstream", up.port).cluster("idp", idp.port).start();
    idp.set_behavior(Endpoint::Webhook("siem".into()), Behavior::Stall);

    // One keep-alive connection on each worker (the kernel spreads new connections: open
    // them until both workers hold one, bounded), then 500 denied requests alternating
    // between them: a per-worker queue would let up to twice the bound through.
    let mut conns: Vec<Option<KeepAlive>> = vec![None, None];
    for _ in 0..40 {
        if conns.iter().all(Option::is_some) {
            break;
        }
        let before = worker_connections(&envoy);
        let mut c = KeepAlive::connect(&envoy.url("/")).expect("connect");
        let r = c.get("/data", &[("x-api-key", BAD_KEY), ("x-request-id", "warm")]).expect("answered");
        assert_eq!(r.status, 401);
        let after = worker_connections(&envoy);
        let w = after.iter().zip(before.iter().chain(std::iter::repeat(&0))).position(|(a, b)| a > b);
        if let Some(w) = w.filter(|w| *w < 2) {
            if conns[w].is_none() {
                conns[w] = Some(c);
            }
        }
    }
    let mut conns: Vec<KeepAlive> = conns.into_iter().map(|c| c.expect("a connection on each worker")).collect();
    for i in 0..500 {
        let id = format!("flood-{i}");
        let r = conns[i % 2].get("/data", &[("x-api-key", BAD_KEY), ("x-request-id", &id)]).expect("answered");
        assert_eq!(r.status, 401, "request {i}");
    }
    drop(conns);
    let overflow = envoy.stat("wasmcustom.portcullis.events.dropped_overflow");
    idp.set_behavior(Endpoint::Webhook("siem".into()), Behavior::Normal);

    // Until the sink has had nothing new for a second (bounded).
    let mut last = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && last.1.elapsed() < Duration::from_secs(1) {
        let n = idp.webhook_requests("siem").len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut ids: Vec<String> = events(&idp, "siem")
        .iter()
        .filter_map(|e| e["request_id"].as_str().filter(|id| id.starts_with("flood-")).map(str::to_string))
        .collect();
    let received = ids.len();
    ids.sort();
    ids.dedup();
    eprintln!(
        "flood of 500 over both workers with the sink stalled: {} distinct events received ({received} with retries) in {} batches, \
         dropped_overflow {overflow}",
        ids.len(),
        idp.webhook_requests("siem").len()
    );
    assert!(
        !ids.is_empty() && ids.len() <= QUEUE_MAX + BATCH_MAX,
        "at most queue_max + batch_max for the whole Envoy: {}",
        ids.len()
    );
    assert!(ids.contains(&"flood-499".to_string()), "the newest events are kept, the oldest dropped");
    assert!(overflow > 0, "overflow counted: {overflow}");
}
