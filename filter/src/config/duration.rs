//! Durations in protobuf-JSON form, as Envoy's own configuration writes them: a decimal number
//! of seconds with an `s` suffix (`"300s"`, `"0.5s"`, `"1.25s"`). Parsed to whole milliseconds
//! (sub-millisecond digits are refused rather than silently rounded).

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Not of the form `<digits>[.<digits>]s`.
    Syntax,
    /// More than three fractional digits (finer than a millisecond).
    TooPrecise,
    /// Larger than ten years; almost certainly a typo.
    TooLarge,
}

/// Ten years in milliseconds: the largest duration accepted anywhere.
const MAX_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Parses `"300s"` / `"0.5s"` into milliseconds.
pub fn parse_ms(text: &str) -> Result<u64, DurationError> {
    let body = text.strip_suffix('s').ok_or(DurationError::Syntax)?;
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, f),
        None => (body, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DurationError::Syntax);
    }
    if body.contains('.') && (frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit())) {
        return Err(DurationError::Syntax);
    }
    if frac.len() > 3 {
        return Err(DurationError::TooPrecise);
    }
    if whole.len() > 12 {
        return Err(DurationError::TooLarge);
    }
    let secs: u64 = whole.parse().map_err(|_| DurationError::Syntax)?;
    let mut frac_ms: u64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        let digit = u64::from(b - b'0');
        frac_ms += digit * [100, 10, 1][i];
    }
    let ms = secs.checked_mul(1000).and_then(|v| v.checked_add(frac_ms)).ok_or(DurationError::TooLarge)?;
    if ms > MAX_MS {
        return Err(DurationError::TooLarge);
    }
    Ok(ms)
}

/// Formats milliseconds back into the protobuf-JSON form (used in docs and messages).
pub fn format_ms(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        let s = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", s.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok = [("300s", 300_000), ("0.5s", 500), ("1.25s", 1250), ("0s", 0), ("0.001s", 1), ("86400s", 86_400_000)];
        for (text, want) in ok {
            assert_eq!(parse_ms(text), Ok(want), "{text}");
            assert_eq!(parse_ms(&format_ms(want)), Ok(want));
        }
        let bad = [
            ("300", DurationError::Syntax),
            ("5m", DurationError::Syntax),
            ("s", DurationError::Syntax),
            (".5s", DurationError::Syntax),
            ("1.s", DurationError::Syntax),
            ("-1s", DurationError::Syntax),
            ("1e3s", DurationError::Syntax),
            (" 1s", DurationError::Syntax),
            ("0.0001s", DurationError::TooPrecise),
            ("999999999999999s", DurationError::TooLarge),
            ("400000000s", DurationError::TooLarge),
        ];
        for (text, want) in bad {
            assert_eq!(parse_ms(text), Err(want), "{text}");
        }
    }
}
