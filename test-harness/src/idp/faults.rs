//! Fault injection and hit counting.
//!
//! Every request that reaches a known [`Endpoint`] is counted first, whatever its fate; then
//! the endpoint's [`Behavior`] decides whether it is answered normally, late, wrongly or not
//! at all. A stalled request waits on a condition variable and re-reads the behavior whenever
//! it changes (or every 50 ms), and gives up as soon as the server is dropped, so no fault
//! outlives its test.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use super::routing::{json_reply, Endpoint};
use super::{Shared, TestIdp};
use crate::http::{Reply, ServerResponse, StopSignal};

/// How often a stalled request re-checks its behavior and the stop signal.
const STALL_POLL: Duration = Duration::from_millis(50);

/// How an endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Behavior {
    /// Answer normally.
    #[default]
    Normal,
    /// Answer this status with a small JSON body.
    Status(u16),
    /// Never answer until the server is dropped (then the connection is closed) or the
    /// behavior changes (then the new behavior applies).
    Stall,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Wait, then answer this status with a small JSON body (a slow failure).
    DelayThenStatus(Duration, u16),
    /// `200`, `content-type: application/json`, body `<<not json>>`.
    Garbage,
    /// Close the connection without answering.
    Close,
}

/// Behaviors and hit counters, per endpoint.
#[derive(Default)]
pub(super) struct Faults {
    behaviors: HashMap<Endpoint, Behavior>,
    hits: HashMap<Endpoint, usize>,
}

impl Faults {
    /// Counts one request to `endpoint`.
    pub(super) fn hit(&mut self, endpoint: &Endpoint) {
        *self.hits.entry(endpoint.clone()).or_default() += 1;
    }
}

fn injected(status: u16) -> Reply {
    json_reply(status, json!({"error": "injected_fault", "status": status}))
}

/// Applies `endpoint`'s behavior: `None` to answer normally (possibly after a delay), or the
/// faulty reply.
pub(super) fn apply(shared: &Shared, endpoint: &Endpoint, stop: &StopSignal) -> Option<Reply> {
    loop {
        let state = shared.lock();
        let behavior = state.faults.behaviors.get(endpoint).cloned().unwrap_or_default();
        match behavior {
            Behavior::Normal => return None,
            Behavior::Status(status) => return Some(injected(status)),
            Behavior::Garbage => {
                return Some(Reply::Respond(ServerResponse::new(200, "application/json", "<<not json>>")))
            }
            Behavior::Close => return Some(Reply::Close),
            Behavior::Delay(delay) => {
                drop(state);
                return (!stop.sleep(delay)).then_some(Reply::Close);
            }
            Behavior::DelayThenStatus(delay, status) => {
                drop(state);
                return Some(if stop.sleep(delay) { injected(status) } else { Reply::Close });
            }
            Behavior::Stall => {
                if stop.is_stopped() {
                    return Some(Reply::Close);
                }
                let _ = shared.changed.wait_timeout(state, STALL_POLL).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

impl TestIdp {
    /// Sets how `endpoint` answers from now on (stalled requests re-check immediately).
    pub fn set_behavior(&self, endpoint: Endpoint, behavior: Behavior) {
        self.shared.lock().faults.behaviors.insert(endpoint, behavior);
        self.shared.changed.notify_all();
    }

    /// Requests that reached `endpoint` so far, faulty answers included.
    pub fn hits(&self, endpoint: Endpoint) -> usize {
        self.shared.lock().faults.hits.get(&endpoint).copied().unwrap_or(0)
    }

    /// Resets every hit counter (and the backend hit log).
    pub fn reset_hits(&self) {
        let mut state = self.shared.lock();
        state.faults.hits.clear();
        state.backends.clear_hits();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::http;

    #[test]
    fn fault_injection() {
        let idp = TestIdp::start();
        idp.set_behavior(Endpoint::Jwks, Behavior::Status(503));
        let r = http::get(&idp.jwks_uri(), &[]).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"], "injected_fault");

        idp.set_behavior(Endpoint::Jwks, Behavior::Garbage);
        let r = http::get(&idp.jwks_uri(), &[]).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "<<not json>>"));
        assert_eq!(r.header("content-type"), Some("application/json"));

        idp.set_behavior(Endpoint::Jwks, Behavior::Close);
        assert!(http::get(&idp.jwks_uri(), &[]).is_err());

        idp.set_behavior(Endpoint::Jwks, Behavior::Delay(Duration::from_millis(300)));
        let started = Instant::now();
        assert_eq!(http::get(&idp.jwks_uri(), &[]).unwrap().status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));

        // A stalled endpoint does not block the others, and resumes on a behavior change.
        idp.set_behavior(Endpoint::Webhook("w".into()), Behavior::Stall);
        let url = idp.url("/webhooks/w");
        let stalled = std::thread::spawn(move || http::post(&url, &[], b"{}"));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(http::get(&idp.url("/.well-known/openid-configuration"), &[]).unwrap().status, 200);
        assert!(!stalled.is_finished());
        idp.set_behavior(Endpoint::Webhook("w".into()), Behavior::Status(500));
        assert_eq!(stalled.join().unwrap().unwrap().status, 500);

        assert_eq!(idp.hits(Endpoint::Jwks), 4);
        assert_eq!(idp.hits(Endpoint::Webhook("w".into())), 1);
        idp.reset_hits();
        assert_eq!(idp.hits(Endpoint::Jwks), 0);
    }

    #[test]
    fn a_slow_failure_answers_its_status_after_the_delay() {
        let idp = TestIdp::start();
        idp.set_behavior(Endpoint::Introspect, Behavior::DelayThenStatus(Duration::from_millis(200), 502));
        let started = Instant::now();
        let r = http::post(&idp.url("/introspect"), &[], b"token=x").unwrap();
        assert_eq!((r.status, r.json()["status"].as_u64()), (502, Some(502)));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn drop_ends_stalled_requests_quickly() {
        let idp = TestIdp::start();
        idp.set_behavior(Endpoint::Token, Behavior::Stall);
        idp.set_behavior(Endpoint::Jwks, Behavior::Delay(Duration::from_secs(60)));
        let token_url = idp.url("/token");
        let jwks_url = idp.jwks_uri();
        let a = std::thread::spawn(move || http::post(&token_url, &[], b""));
        let b = std::thread::spawn(move || http::get(&jwks_url, &[]));
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        drop(idp);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(a.join().unwrap().is_err());
        assert!(b.join().unwrap().is_err());
    }
}
