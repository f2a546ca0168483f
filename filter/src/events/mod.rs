//! Events (SPEC C7): every decision becomes one structured event — who, what, outcome, reason —
//! and never a token, key, password or secret. Events go to Envoy's log (`events.log`) and, in
//! batches, to webhook sinks (callouts from the root context on the tick, off every request's
//! path; bounded queues).
//!
//! This module is pure: the event type, its JSON form, which sinks take which kind, and the
//! bounded batching queue. The host moves batches; rules read events in `events::rules`.

pub mod queue;
pub mod revocation;
pub mod rules;

use serde_json::{json, Map, Value};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A request was let through (emitted only when sampled: `events.sample_allowed`).
    Allowed,
    /// A request was refused (with `reason`).
    Denied,
    /// A request was refused by a rate limit (429).
    RateLimited,
    /// A password-grant login was accepted by an identity backend.
    LoginSucceeded,
    /// A password-grant login was rejected by every identity backend.
    LoginFailed,
    /// A lockout engaged for a username or an address.
    LockedOut,
    /// A revoked credential was presented.
    RevokedUsed,
    /// A trigger rule fired.
    RuleTriggered,
    /// A dependency (key set, discovery, introspection, rate limit service, identity backend,
    /// revocation list) failed.
    DependencyDown,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: [Kind; 9] = [
        Kind::Allowed,
        Kind::Denied,
        Kind::RateLimited,
        Kind::LoginSucceeded,
        Kind::LoginFailed,
        Kind::LockedOut,
        Kind::RevokedUsed,
        Kind::RuleTriggered,
        Kind::DependencyDown,
    ];

    /// The stable name (`kind` in JSON, in configuration).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Allowed => "allowed",
            Kind::Denied => "denied",
            Kind::RateLimited => "rate_limited",
            Kind::LoginSucceeded => "login_succeeded",
            Kind::LoginFailed => "login_failed",
            Kind::LockedOut => "locked_out",
            Kind::RevokedUsed => "revoked_used",
            Kind::RuleTriggered => "rule_triggered",
            Kind::DependencyDown => "dependency_down",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One event. Every field but `kind` and `time_ms` is optional; none ever holds a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: Option<Kind>,
    /// Unix milliseconds.
    pub time_ms: u64,
    /// The reason code (`denied`, `rate_limited`, `revoked_used`, `dependency_down`).
    pub reason: Option<&'static str>,
    pub status: Option<u16>,
    /// The route's `name`, else its index.
    pub route: Option<String>,
    pub method: Option<String>,
    /// The canonical path, never the query string.
    pub path: Option<String>,
    pub client: Option<String>,
    pub subject: Option<String>,
    /// Password grant: the username (lower-cased).
    pub username: Option<String>,
    /// The client address (as Portcullis keys it).
    pub source: Option<String>,
    /// The credential methods, as in `x-portcullis-auth`.
    pub auth: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// The presented API key's id: the first 16 hex digits of its SHA-256 (never the key).
    pub api_key_id: Option<String>,
    /// Extra members of some kinds (`rule_triggered`: rule, key_type, key, count, …;
    /// `dependency_down`: dependency; `locked_out`: subject kind and salted hash).
    pub extra: Vec<(&'static str, Value)>,
    /// Counted by rules but not emitted (an allowed request that was not sampled).
    pub quiet: bool,
    /// An alert: goes to this sink (index into `events.sinks`) whatever its `kinds`.
    pub to_sink: Option<usize>,
}

impl Event {
    pub fn new(kind: Kind, time_ms: u64) -> Event {
        Event { kind: Some(kind), time_ms, ..Event::default() }
    }

    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Denied)
    }

    /// The event as one JSON object (absent fields omitted).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("time".into(), json!(rfc3339(self.time_ms)));
        m.insert("kind".into(), json!(self.kind().name()));
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        };
        put("route", &self.route);
        put("method", &self.method);
        put("path", &self.path);
        put("client", &self.client);
        put("subject", &self.subject);
        put("username", &self.username);
        put("source", &self.source);
        put("auth", &self.auth);
        put("request_id", &self.request_id);
        put("api_key_id", &self.api_key_id);
        if let Some(r) = self.reason {
            m.insert("reason".into(), json!(r));
        }
        if let Some(s) = self.status {
            m.insert("status".into(), json!(s));
        }
        for (k, v) in &self.extra {
            m.insert((*k).into(), v.clone());
        }
        Value::Object(m)
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-11-30T17:00:00.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, mi, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil from days (H. Hinnant's algorithm), in i64 to stay exact.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z", ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(crate::config::parse_rfc3339(&rfc3339(1_700_000_000_000).replace(".000", "")), Some(1_700_000_000));
    }

    #[test]
    fn json_has_the_documented_fields_and_omits_absent_ones() {
        let mut e = Event::new(Kind::Denied, 1_767_225_600_000);
        e.reason = Some("token_signature");
        e.status = Some(401);
        e.route = Some("orders".into());
        e.method = Some("GET".into());
        e.path = Some("/orders".into());
        e.source = Some("127.0.0.2".into());
        let v = e.to_json();
        assert_eq!(v["kind"], "denied");
        assert_eq!(v["status"], 401);
        assert_eq!(v["time"], "2026-01-01T00:00:00.000Z");
        assert!(v.get("client").is_none());
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
    }
}
