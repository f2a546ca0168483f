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
        ];
        for r in Reason::ALL {
            v.push(Counter::Denied(r));
            v.push(Counter::ShadowDenied(r));
        }
        v
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
        }
    }
}
