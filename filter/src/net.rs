//! Client addresses as Portcullis keys them: from Envoy's `source.address` (which the operator
//! must make the TCP peer: see README, Threat model), IPv6 per /64. One place for rate limits,
//! the lockout, rules and `source.ip` conditions.

/// The key of an anonymous caller: its address from `source.address` (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`), IPv6 per /64 (one subscriber usually holds a whole /64, so
/// per-address keys would be trivial to evade), IPv4-mapped IPv6 as IPv4. The same key is
/// used by rate limits and by the password-grant lockout. Text that is not an address is used
/// as is.
pub fn client_key(source: &str) -> String {
    use std::net::IpAddr;
    let a = source.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if a.matches(':').count() == 1 {
        a.split(':').next().unwrap_or(a)
    } else {
        a
    };
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("addr:{v4}"),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("addr:{v4}"),
            None => {
                let s = v6.segments();
                format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => format!("addr:{a}"),
    }
}

/// The IP address of a `source.address` value (`1.2.3.4:5678`, `[::1]:5678`).
pub fn client_ip(source: &str) -> &str {
    if let Some(rest) = source.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match source.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => source,
    }
}
