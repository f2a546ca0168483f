//! The condition language of routes (`match.headers` and `when`), Istio `AuthorizationPolicy`
//! style: with `values`, the attribute must exist and one of its elements must match one of
//! them; with `notValues`, no element may match any of them (an absent attribute satisfies a
//! `notValues`-only condition). Patterns: exact, `abc*`, `*abc`, `*` (presence); `source.ip`
//! takes addresses and CIDR blocks (v4 and v6; an IPv4-mapped IPv6 address counts as IPv4).

use std::net::IpAddr;

use crate::config::route::{Condition, HostMatch, Pattern};

/// Whether `value` matches `p`.
pub fn matches(p: &Pattern, value: &str) -> bool {
    match p {
        Pattern::Exact(s) => value == s,
        Pattern::Prefix(s) => value.starts_with(s.as_str()),
        Pattern::Suffix(s) => value.ends_with(s.as_str()),
        Pattern::Presence => true,
        Pattern::Cidr(net, bits) => value.parse::<IpAddr>().is_ok_and(|ip| in_cidr(ip, *net, *bits)),
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// True when `ip` is inside `net/bits`.
pub fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (canonical(ip), canonical(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32u32.saturating_sub(u32::from(bits))).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128u32.saturating_sub(u32::from(bits))).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether a condition holds for an attribute's values (`None`: the attribute is absent).
pub fn holds(c: &Condition, values: Option<&[String]>) -> bool {
    let vals = values.unwrap_or(&[]);
    if !c.values.is_empty() && !vals.iter().any(|v| c.values.iter().any(|p| matches(p, v))) {
        return false;
    }
    !vals.iter().any(|v| c.not_values.iter().any(|p| matches(p, v)))
}

/// Whether a canonical authority (lower case, no port) matches a route's hosts (empty: any).
pub fn host_matches(hosts: &[HostMatch], authority: &str) -> bool {
    hosts.is_empty()
        || hosts.iter().any(|h| match h {
            HostMatch::Exact(e) => authority == e,
            HostMatch::Suffix(s) => authority.len() > s.len() && authority.ends_with(s.as_str()),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::route::{condition, host_match, AttrKey};

    fn cond(key: &str, values: &[&str], not: &[&str]) -> Condition {
        let l = |x: &[&str]| (!x.is_empty()).then(|| x.iter().map(|s| s.to_string()).collect());
        condition("when[0]", key, &l(values), &l(not), false).unwrap()
    }

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_condition_language() {
        // (condition, attribute values, holds)
        let table: Vec<(Condition, Option<Vec<String>>, bool)> = vec![
            (cond("request.auth.claims[groups]", &["admins", "ops-*"], &[]), Some(v(&["dev", "ops-eu"])), true),
            (cond("request.auth.claims[groups]", &["admins", "ops-*"], &[]), Some(v(&["dev"])), false),
            (cond("request.auth.claims[groups]", &["admins"], &[]), None, false),
            (cond("request.auth.claims[iss]", &["*.example.com"], &[]), Some(v(&["idp.example.com"])), true),
            (cond("request.auth.claims[iss]", &["*.example.com"], &[]), Some(v(&["example.com"])), false),
            (cond("request.auth.claims[iss]", &["*example.com"], &[]), Some(v(&["idp.example.com"])), true),
            (cond("request.headers[x-tenant]", &["*"], &[]), Some(v(&[""])), true),
            (cond("request.headers[x-tenant]", &["*"], &[]), None, false),
            (cond("request.headers[x-tenant]", &[], &["blocked"]), None, true),
            (cond("request.headers[x-tenant]", &[], &["blocked"]), Some(v(&["a", "blocked"])), false),
            (cond("request.headers[x-tenant]", &["a"], &["b"]), Some(v(&["a", "b"])), false),
            (cond("source.ip", &[], &["203.0.113.0/24"]), Some(v(&["203.0.113.9"])), false),
            (cond("source.ip", &[], &["203.0.113.0/24"]), Some(v(&["198.51.100.1"])), true),
            (cond("source.ip", &["10.0.0.0/8", "2001:db8::/32"], &[]), Some(v(&["2001:db8:1::5"])), true),
            (cond("source.ip", &["10.0.0.0/8"], &[]), Some(v(&["::ffff:10.1.2.3"])), true),
            (cond("source.ip", &["127.0.0.1"], &[]), Some(v(&["127.0.0.2"])), false),
            (cond("source.ip", &["0.0.0.0/0"], &[]), Some(v(&["8.8.8.8"])), true),
            (
                cond("source.principal", &["spiffe://cluster.local/ns/shop/*"], &[]),
                Some(v(&["spiffe://cluster.local/ns/shop/sa/web"])),
                true,
            ),
            (cond("source.principal", &["spiffe://cluster.local/ns/shop/*"], &[]), None, false),
            (cond("client.id", &["partner-a"], &[]), Some(v(&["partner-a"])), true),
        ];
        for (i, (c, vals, want)) in table.iter().enumerate() {
            assert_eq!(holds(c, vals.as_deref()), *want, "row {i}: {c:?} on {vals:?}");
        }
    }

    #[test]
    fn keys_and_values_are_checked_at_load() {
        let k = |key: &str| condition("when[0]", key, &Some(vec!["x".into()]), &None, false).map(|c| c.key);
        assert_eq!(
            k("request.auth.claims[realm_access][roles]"),
            Ok(AttrKey::Claims(vec!["realm_access".into(), "roles".into()]))
        );
        assert_eq!(k("request.headers[X-Tenant]"), Ok(AttrKey::Header("x-tenant".into())));
        assert_eq!(k("client.plan"), Ok(AttrKey::ClientPlan));
        assert!(k("request.auth.claims").unwrap_err().message.contains("request.auth.claims[name]"));
        assert!(k("request.auth.claims[a]x").is_err());
        assert!(k("request.auth.claims[]").is_err());
        let e = k("request.time").unwrap_err();
        assert_eq!(e.path, "when[0].key");
        assert!(e.message.starts_with("unknown key \"request.time\""));
        let bad_ip = condition("when[0]", "source.ip", &Some(vec!["10.0.0.0/33".into()]), &None, false).unwrap_err();
        assert_eq!(bad_ip.path, "when[0].values[0]");
        let neither = condition("when[0]", "client.id", &None, &Some(vec![]), false).unwrap_err();
        assert_eq!(neither.message, "give values or notValues (not empty)");
    }

    #[test]
    fn hosts() {
        let hs: Vec<HostMatch> =
            ["api.example.com", "*.example.org"].iter().map(|h| host_match("h", h).unwrap()).collect();
        assert!(host_matches(&hs, "api.example.com"));
        assert!(host_matches(&hs, "a.example.org"));
        assert!(host_matches(&hs, "a.b.example.org"));
        assert!(!host_matches(&hs, "example.org"), "*.example.org does not match the bare domain");
        assert!(!host_matches(&hs, "evil-example.org"));
        assert!(!host_matches(&hs, "api.example.com.evil"));
        assert!(host_matches(&[], "anything"));
        assert!(host_match("h", "API.Example.com").unwrap() == HostMatch::Exact("api.example.com".into()));
        assert!(host_match("h", "a.example.com:443").is_err(), "ports are not part of hosts");
        assert_eq!(host_match("h", "[::1]").unwrap(), HostMatch::Exact("[::1]".into()));
        assert!(host_match("h", "*").is_err());
    }
}
