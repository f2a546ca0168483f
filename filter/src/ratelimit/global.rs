//! Global limits through Envoy's rate limit service protocol
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), so one plan holds across
//! many proxies. Production users point it at the service they already run (Envoy's
//! `ratelimit` with Redis, or Limitador).
//!
//! Mode: **one call per request** (like Envoy's own `ratelimit` filter), with
//! `hits_addend` = the route's cost. This is exact (the service counts every hit) at the price
//! of one gRPC round trip per limited request; leasing quota in chunks would save calls but
//! let each proxy over-admit up to its unspent chunk. The descriptor sent is
//! `[("plan", <plan name>), ("client", <client id or address>)]` in the configured domain, so
//! the service's configuration can key limits on the plan and, per client, on the client.
//!
//! The messages are encoded by hand (a few fields of `rls.proto`); unknown fields in the
//! answer are ignored, as protobuf requires.

use crate::wire::der::{pb_bytes, pb_fields, pb_varint, PbValue};

/// gRPC service and method names.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// Encodes a `RateLimitRequest`.
pub fn request(domain: &str, plan: &str, client: &str, hits: u64) -> Vec<u8> {
    let entry = |k: &str, v: &str| {
        let mut e = Vec::new();
        pb_bytes(&mut e, 1, k.as_bytes());
        pb_bytes(&mut e, 2, v.as_bytes());
        e
    };
    let mut descriptor = Vec::new();
    pb_bytes(&mut descriptor, 1, &entry("plan", plan));
    pb_bytes(&mut descriptor, 1, &entry("client", client));
    let mut out = Vec::new();
    pb_bytes(&mut out, 1, domain.as_bytes());
    pb_bytes(&mut out, 2, &descriptor);
    pb_varint(&mut out, 3 << 3); // hits_addend, varint
    pb_varint(&mut out, hits.min(u64::from(u32::MAX)));
    out
}

/// What the service said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Over the limit; seconds until the limit resets, when the service said.
    OverLimit {
        reset_s: Option<u64>,
    },
    /// No usable answer (transport failure, gRPC error, `UNKNOWN`, garbage).
    Failed,
}

/// Decodes a `RateLimitResponse`.
pub fn parse(body: &[u8]) -> Verdict {
    let Some(fields) = pb_fields(body) else { return Verdict::Failed };
    let mut code = 0;
    let mut reset: Option<u64> = None;
    for (n, v) in &fields {
        match (n, v) {
            (1, PbValue::Varint(c)) => code = *c,
            (2, PbValue::Bytes(status)) => {
                // DescriptorStatus.duration_until_reset (4) → Duration.seconds (1).
                let d = pb_fields(status).and_then(|f| {
                    f.into_iter().find_map(|(n, v)| match (n, v) {
                        (4, PbValue::Bytes(d)) => Some(d),
                        _ => None,
                    })
                });
                if let Some(secs) = d.and_then(pb_fields).and_then(|f| {
                    f.into_iter().find_map(|(n, v)| match (n, v) {
                        (1, PbValue::Varint(s)) => Some(s),
                        _ => None,
                    })
                }) {
                    reset = Some(reset.map_or(secs, |r: u64| r.max(secs)));
                }
            }
            _ => {}
        }
    }
    match code {
        1 => Verdict::Ok,
        2 => Verdict::OverLimit { reset_s: reset },
        _ => Verdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r = request("edge", "free", "c1", 3);
        let f = pb_fields(&r).unwrap();
        assert_eq!(f[0], (1, PbValue::Bytes(b"edge")));
        let PbValue::Bytes(d) = f[1].1 else { panic!() };
        let entries = pb_fields(d).unwrap();
        assert_eq!(entries.len(), 2);
        let PbValue::Bytes(e0) = entries[0].1 else { panic!() };
        assert_eq!(pb_fields(e0).unwrap(), vec![(1, PbValue::Bytes(b"plan")), (2, PbValue::Bytes(b"free"))]);
        assert_eq!(f[2], (3, PbValue::Varint(3)));
    }

    #[test]
    fn responses() {
        assert_eq!(parse(&[0x08, 0x01]), Verdict::Ok);
        // overall_code OVER_LIMIT, one status with duration_until_reset { seconds: 42 }.
        let mut dur = Vec::new();
        pb_varint(&mut dur, 1 << 3);
        pb_varint(&mut dur, 42);
        let mut status = vec![0x08, 0x02];
        pb_bytes(&mut status, 4, &dur);
        let mut body = vec![0x08, 0x02];
        pb_bytes(&mut body, 2, &status);
        assert_eq!(parse(&body), Verdict::OverLimit { reset_s: Some(42) });
        assert_eq!(parse(&[0x08, 0x02]), Verdict::OverLimit { reset_s: None });
        assert_eq!(parse(&[]), Verdict::Failed, "UNKNOWN");
        assert_eq!(parse(&[0xff]), Verdict::Failed, "garbage");
    }
}
