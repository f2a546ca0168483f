//! Per-client rate limiting (SPEC C3): which plan applies, who the client is, and the
//! `RateLimit-Policy` / `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers-09).
//!
//! * Plan: the route's `plan`, else the API-key client's plan, else the plan named by the
//!   JWT claim `rate_limit.plan_claim` (only if it names a configured plan), else
//!   `default_plan`; no plan → no limit.
//! * Client: the authenticated client id (API key client, JWT `client_id_claim`/`azp`/
//!   `sub`); for anonymous requests the source IP address (port stripped).
//! * One bucket per (client, plan): a route with its own plan has its own bucket.

pub mod bucket;
pub mod global;
pub mod table;

use crate::config::{Config, Plan};
use crate::store::SharedStore;
use bucket::{retry_after_secs, Outcome, Rate};
use table::Taken;

/// Picks the plan for a request.
pub fn plan_for<'a>(
    cfg: &'a Config,
    route_plan: Option<&'a str>,
    client_plan: Option<&'a str>,
    claim_plan: Option<&'a str>,
) -> Option<(&'a str, &'a Plan)> {
    let claim_plan = claim_plan.filter(|p| cfg.plans.contains_key(*p));
    let name = route_plan.or(client_plan).or(claim_plan).or(cfg.default_plan.as_deref())?;
    cfg.plans.get_key_value(name).map(|(k, v)| (k.as_str(), v))
}

pub use crate::net::{client_ip, client_key};

/// The outcome of a rate-limit check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Admitted; headers for the response (empty unless `headers: true`).
    Allowed(Vec<(String, String)>),
    /// Refused: `Retry-After` seconds, headers, and why (for stats).
    Limited { retry_after: u64, headers: Vec<(String, String)>, why: Why },
}

/// Why a request was limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The client's bucket is empty.
    Exhausted,
    /// Both table slots for this client hold other clients' active buckets.
    TableFull,
    /// The CAS retries ran out.
    Contended,
}

fn rate(plan: &Plan) -> Rate {
    Rate { requests: plan.requests, per_ms: plan.per_ms, burst: plan.burst }
}

fn headers(name: &str, plan: &Plan, remaining: u64, full_in_ms: u64) -> Vec<(String, String)> {
    vec![
        ("ratelimit-policy".into(), format!("\"{name}\";q={};w={}", plan.requests, plan.per_ms / 1000)),
        ("ratelimit".into(), format!("\"{name}\";r={remaining};t={}", full_in_ms.div_ceil(1000))),
    ]
}

/// Charges `cost` to `client`'s bucket for `plan` at `now_ms`.
#[allow(clippy::too_many_arguments)]
pub fn check(
    store: &dyn SharedStore,
    slots: u64,
    with_headers: bool,
    client: &str,
    plan_name: &str,
    plan: &Plan,
    cost: u64,
    now_ms: u64,
) -> Checked {
    let identity = format!("{client}\u{0}{plan_name}");
    let hdrs = |remaining: u64, full_in_ms: u64| {
        if with_headers {
            headers(plan_name, plan, remaining, full_in_ms)
        } else {
            Vec::new()
        }
    };
    match table::take(store, slots, identity.as_bytes(), rate(plan), cost, now_ms) {
        Taken::Bucket(Outcome::Allow { remaining, full_in_ms }) => Checked::Allowed(hdrs(remaining, full_in_ms)),
        Taken::Bucket(Outcome::Deny { retry_after_ms, full_in_ms }) => Checked::Limited {
            // A cost above the burst can never pass: ask for a full window.
            retry_after: if retry_after_ms == u64::MAX { plan.per_ms / 1000 } else { retry_after_secs(retry_after_ms) },
            headers: hdrs(0, full_in_ms),
            why: Why::Exhausted,
        },
        Taken::TableFull { retry_after_ms } => {
            Checked::Limited { retry_after: retry_after_secs(retry_after_ms), headers: Vec::new(), why: Why::TableFull }
        }
        Taken::Contended => Checked::Limited { retry_after: 1, headers: Vec::new(), why: Why::Contended },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[test]
    fn client_ip_strips_ports() {
        assert_eq!(client_ip("10.1.2.3:4567"), "10.1.2.3");
        assert_eq!(client_ip("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(client_ip("10.1.2.3"), "10.1.2.3");
        assert_eq!(client_ip("2001:db8::1"), "2001:db8::1");
    }

    #[test]
    fn headers_follow_the_draft() {
        let plan = Plan { requests: 100, per_ms: 60_000, burst: 100, global: None };
        let s = MemStore::default();
        let Checked::Allowed(h) = check(&s, 64, true, "c", "free", &plan, 1, 0) else { panic!() };
        assert_eq!(h[0], ("ratelimit-policy".to_string(), "\"free\";q=100;w=60".to_string()));
        assert_eq!(h[1], ("ratelimit".to_string(), "\"free\";r=99;t=1".to_string()));
        let Checked::Allowed(h) = check(&s, 64, false, "c", "free", &plan, 1, 0) else { panic!() };
        assert!(h.is_empty());
        let big = check(&s, 64, true, "c", "free", &plan, 1000, 0);
        assert!(matches!(big, Checked::Limited { retry_after: 60, why: Why::Exhausted, .. }));
    }
}
