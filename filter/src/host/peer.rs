//! The downstream connection through Envoy's connection attributes, behind the core's
//! [`Peer`] port: each answer is one `get_property` host call, made only when a check asks.

use proxy_wasm::hostcalls;

use crate::request::Peer;

/// Envoy's view of the current request's downstream connection.
pub(crate) struct HostPeer;

fn property(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_property(vec!["connection", name]).ok().flatten().filter(|v| !v.is_empty())
}

fn text(name: &str) -> Option<String> {
    property(name).and_then(|v| String::from_utf8(v).ok())
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Peer for HostPeer {
    fn mtls(&self) -> bool {
        // A boolean attribute arrives as one byte (or, from some hosts, as text).
        match property("mtls") {
            Some(v) => v.first().is_some_and(|b| *b == 1) || v.as_slice() == b"true",
            None => false,
        }
    }

    fn uri_san(&self) -> Option<String> {
        text("uri_san_peer_certificate")
    }

    fn subject(&self) -> Option<String> {
        text("subject_peer_certificate")
    }

    fn cert_sha256(&self) -> Option<[u8; 32]> {
        text("sha256_peer_certificate_digest").and_then(|h| hex32(&h))
    }

    fn sni(&self) -> Option<String> {
        text("requested_server_name")
    }
}
