//! `application/x-www-form-urlencoded` (WHATWG URL §5) and percent-encoding (RFC 3986 §2.1):
//! the ONE strict decoder of the core. A `%` must be followed by exactly two hexadecimal digits
//! (`%+A` and `%zz` are errors, never bytes), and decoded text must be UTF-8. Form bodies, query
//! parameters and the token endpoint's query check all decode through [`decode_component`].

/// The most `name=value` pairs accepted in one form (a token request has a handful).
pub const MAX_FORM_FIELDS: usize = 256;

/// Why a form body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// A `%` not followed by two hexadecimal digits (`%zz`, or a body truncated after `%`).
    InvalidEscape,
    /// A name or value does not decode to UTF-8.
    InvalidUtf8,
    /// A pair with an empty name (`=value`).
    EmptyKey,
    /// More than [`MAX_FORM_FIELDS`] pairs.
    TooManyFields,
}

impl FormError {
    /// A stable code for logs and stats.
    pub fn code(self) -> &'static str {
        match self {
            FormError::InvalidEscape => "form_invalid_escape",
            FormError::InvalidUtf8 => "form_invalid_utf8",
            FormError::EmptyKey => "form_empty_key",
            FormError::TooManyFields => "form_too_many_fields",
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one name or value (`+` is a space).
pub fn decode_component(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex_value).ok_or(FormError::InvalidEscape)?;
                let lo = raw.get(i + 2).copied().and_then(hex_value).ok_or(FormError::InvalidEscape)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| FormError::InvalidUtf8)
}

/// Parses an `application/x-www-form-urlencoded` body into its pairs, in order.
///
/// Strict: an invalid `%` escape, a name or value that is not UTF-8 after decoding, an empty
/// name, or more than [`MAX_FORM_FIELDS`] pairs refuse the whole body. Empty pairs (`a=1&&b=2`,
/// a trailing `&`) are skipped and a pair without `=` has an empty value, as in the WHATWG URL
/// standard. Repeated names are kept (the caller decides).
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut out = Vec::new();
    for pair in body.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        if out.len() == MAX_FORM_FIELDS {
            return Err(FormError::TooManyFields);
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let name = decode_component(name)?;
        if name.is_empty() {
            return Err(FormError::EmptyKey);
        }
        out.push((name, decode_component(value)?));
    }
    Ok(out)
}

/// Form-urlencodes `text` onto `out` (unreserved characters kept, space as `+`).
pub fn encode_into(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
}

/// Form-urlencodes one value.
/// Form-urlencodes one value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    encode_into(text, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_escapes() {
        assert_eq!(decode_component(b"a%2Eb+c"), Ok("a.b c".to_string()));
        assert_eq!(decode_component(b"%+A"), Err(FormError::InvalidEscape));
        assert_eq!(decode_component(b"%-1"), Err(FormError::InvalidEscape));
        assert_eq!(decode_component(b"%a"), Err(FormError::InvalidEscape));
        assert_eq!(decode_component(b"%ff"), Err(FormError::InvalidUtf8));
        assert_eq!(encode("a b/~"), "a+b%2F~");
    }
}
