//! Strict base64url (RFC 4648 §5) without padding, as JWS compact serialisation requires
//! (RFC 7515 §2). Padded or non-canonical input is refused rather than repaired.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Decodes unpadded base64url; `None` for padding, foreign characters or non-canonical tails.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()
}

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict() {
        assert_eq!(decode("aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode("aGk="), None, "padding refused");
        assert_eq!(decode("aG+k"), None, "standard alphabet refused");
        assert_eq!(decode("aGl"), None, "non-canonical trailing bits refused");
        assert_eq!(decode("a"), None);
        assert_eq!(encode(b"hi"), "aGk");
    }
}
