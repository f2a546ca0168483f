#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

#[test]
fn probe_tolerance() {
    use jwt_simple::prelude::*;
    let key = HS256Key::from_bytes(b"0123456789abcdef0123456789abcdef");
    let mut claims = Claims::create(Duration::from_secs(600));
    claims.issued_at = Some(UnixTimeStamp::from_secs(1_700_000_000));
    claims.expires_at = Some(UnixTimeStamp::from_secs(1_700_000_600));
    let t = key.authenticate(claims).unwrap();
    assert!(crypto::verify_hmac(&t, Alg::HS256, b"0123456789abcdef0123456789abcdef"));
}
