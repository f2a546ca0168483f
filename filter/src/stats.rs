//! Counters the core asks the host to bump. Names are stable public API; Envoy shows them
//! under `wasmcustom.` in `/stats` (e.g. `wasmcustom.portcullis.denied.token_expired`).

use crate::reason::Reason;

/// A counter the core wants incremented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Every request the filter decided.
    Requests,
    Allowed,
    /// Denied in enforce mode, by reason.
    Denied(Reason),
    /// Would have been denied, but shadow mode let it through, by reason.
    ShadowDenied(Reason),
    /// Verified-token cache.
    JwtCacheHit,
    JwtCacheMiss,
    /// Which implementation verified a signature.
    CryptoNative,
    CryptoPure,
    /// Key-set fetches (each fetch the filter performs).
    JwksFetchOk,
    JwksFetchFailed,
    /// A request met an unknown `kid` and triggered an early refresh.
    JwksUnknownKidRefresh,
    /// Rate limiting: refused because the bucket table had no free slot for the client.
    RateLimitTableFull,
    /// Rate limiting: refused because the CAS retries ran out.
    RateLimitContended,
    /// Rate limiting: the global rate limit service failed to answer.
    RateLimitGlobalFailed,
    /// Introspection: answers received (any outcome), shared-cache hits, failures, and
    /// answers refusing our client credentials (a configuration error).
    IntrospectionCalls,
    IntrospectionCacheHit,
    IntrospectionFailed,
    IntrospectionBadClientCredentials,
    /// Password grant outcomes.
    GrantAccepted,
    GrantRejected,
    GrantUnavailable,
    GrantLockedOut,
    GrantInvalidRequest,
    GrantPassThrough,
    /// A lockout engaged (a subject crossed the failure threshold).
    GrantLockoutEngaged,
    /// Tokens issued, by signing path.
    GrantIssuedNative,
    GrantIssuedPure,
    /// Events: batches delivered to sinks, events dropped because a sink's queue was full,
    /// events dropped after a batch failed twice.
    EventsBatchesSent,
    EventsDroppedOverflow,
    EventsDroppedFailed,
    /// Revocation list polls: a new list published, not modified, failed (the last good list
    /// stays in force).
    RevocationPublished,
    RevocationNotModified,
    RevocationPollFailed,
}

impl Counter {
    /// Every counter, for defining them all at configure time.
    pub fn all() -> Vec<Counter> {
        let mut v = vec![
            Counter::Requests,
            Counter::Allowed,
            Counter::JwtCacheHit,
            Counter::JwtCacheMiss,
            Counter::CryptoNative,
            Counter::CryptoPure,
            Counter::JwksFetchOk,
            Counter::JwksFetchFailed,
            Counter::JwksUnknownKidRefresh,
            Counter::RateLimitTableFull,
            Counter::RateLimitContended,
            Counter::RateLimitGlobalFailed,
            Counter::IntrospectionCalls,
            Counter::IntrospectionCacheHit,
            Counter::IntrospectionFailed,
            Counter::IntrospectionBadClientCredentials,
            Counter::GrantAccepted,
            Counter::GrantRejected,
            Counter::GrantUnavailable,
            Counter::GrantLockedOut,
            Counter::GrantInvalidRequest,
            Counter::GrantPassThrough,
            Counter::GrantLockoutEngaged,
            Counter::GrantIssuedNative,
            Counter::GrantIssuedPure,
            Counter::EventsBatchesSent,
            Counter::EventsDroppedOverflow,
            Counter::EventsDroppedFailed,
            Counter::RevocationPublished,
            Counter::RevocationNotModified,
            Counter::RevocationPollFailed,
        ];
        for r in Reason::ALL {
            v.push(Counter::Denied(r));
            v.push(Counter::ShadowDenied(r));
        }
        v
    }

    /// The metric name Envoy registers: [`Counter::name`], under `portcullis.instance.<name>.`
    /// when `stats_instance` is set.
    pub fn metric_name(self, instance: Option<&str>) -> String {
        let name = self.name();
        match (instance, name.strip_prefix("portcullis.")) {
            (Some(i), Some(rest)) => format!("portcullis.instance.{i}.{rest}"),
            _ => name,
        }
    }

    /// The metric name.
    pub fn name(self) -> String {
        match self {
            Counter::Requests => "portcullis.requests".into(),
            Counter::Allowed => "portcullis.allowed".into(),
            Counter::Denied(r) => format!("portcullis.denied.{}", r.code()),
            Counter::ShadowDenied(r) => format!("portcullis.shadow_denied.{}", r.code()),
            Counter::JwtCacheHit => "portcullis.jwt.cache_hit".into(),
            Counter::JwtCacheMiss => "portcullis.jwt.cache_miss".into(),
            Counter::CryptoNative => "portcullis.crypto.native".into(),
            Counter::CryptoPure => "portcullis.crypto.pure".into(),
            Counter::JwksFetchOk => "portcullis.jwks.fetch_ok".into(),
            Counter::JwksFetchFailed => "portcullis.jwks.fetch_failed".into(),
            Counter::JwksUnknownKidRefresh => "portcullis.jwks.unknown_kid_refresh".into(),
            Counter::RateLimitTableFull => "portcullis.ratelimit.table_full".into(),
            Counter::RateLimitContended => "portcullis.ratelimit.contended".into(),
            Counter::RateLimitGlobalFailed => "portcullis.ratelimit.global_failed".into(),
            Counter::IntrospectionCalls => "portcullis.introspection.calls".into(),
            Counter::IntrospectionCacheHit => "portcullis.introspection.cache_hit".into(),
            Counter::IntrospectionFailed => "portcullis.introspection.failed".into(),
            Counter::IntrospectionBadClientCredentials => "portcullis.introspection.bad_client_credentials".into(),
            Counter::GrantAccepted => "portcullis.grant.accepted".into(),
            Counter::GrantRejected => "portcullis.grant.rejected".into(),
            Counter::GrantUnavailable => "portcullis.grant.unavailable".into(),
            Counter::GrantLockedOut => "portcullis.grant.locked_out".into(),
            Counter::GrantInvalidRequest => "portcullis.grant.invalid_request".into(),
            Counter::GrantPassThrough => "portcullis.grant.pass_through".into(),
            Counter::GrantLockoutEngaged => "portcullis.grant.lockout_engaged".into(),
            Counter::GrantIssuedNative => "portcullis.grant.issued_native".into(),
            Counter::GrantIssuedPure => "portcullis.grant.issued_pure".into(),
            Counter::EventsBatchesSent => "portcullis.events.batches_sent".into(),
            Counter::EventsDroppedOverflow => "portcullis.events.dropped_overflow".into(),
            Counter::EventsDroppedFailed => "portcullis.events.dropped_failed".into(),
            Counter::RevocationPublished => "portcullis.revocation.published".into(),
            Counter::RevocationNotModified => "portcullis.revocation.not_modified".into(),
            Counter::RevocationPollFailed => "portcullis.revocation.poll_failed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_gets_its_own_names() {
        let c = Counter::Denied(Reason::TokenExpired);
        assert_eq!(c.metric_name(None), "portcullis.denied.token_expired");
        assert_eq!(c.metric_name(Some("edge")), "portcullis.instance.edge.denied.token_expired");
        for c in Counter::all() {
            assert!(c.metric_name(Some("x")).starts_with("portcullis.instance.x."), "{c:?}");
        }
    }
}
