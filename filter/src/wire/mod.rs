//! Wire codecs shared by every capability: base64url (JWS, RFC 7515 §2), DER (keys, signatures)
//! and protobuf (foreign-function arguments, the rate limit service).

pub mod b64;
pub mod der;
pub mod form;
