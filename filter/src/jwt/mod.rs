//! JWS compact serialisation (RFC 7515 §7.1) and JWT claim checks (RFC 7519 §4.1).
//!
//! Invariants:
//! * The algorithm comes from the key: the token's `alg` only selects among what the key
//!   allows (see [`crate::crypto::jwks::Jwk::allows`]); `none` and unknown algorithms are refused.
//! * `crit` is refused (no extension is understood, RFC 7515 §4.1.11); `jwk`, `jku`, `x5u`
//!   and `x5c` are ignored: never trusted, never fetched.
//! * Header and payload must be JSON objects without duplicate members (RFC 7515 §5.2 allows
//!   refusing them; accepting them invites parser-differential attacks).
//! * Time claims are checked before the (expensive) signature, so floods of expired or
//!   far-future tokens cost no crypto; a token is never accepted before both pass.

pub mod keys;

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{ClaimPath, Provider};
use crate::crypto::jwks::{Alg, KeySet};
use crate::crypto::{self, NativeVerifier, Path};
use crate::reason::Reason;
use crate::wire::b64;

/// A token whose structure has been checked (signature not yet verified).
#[derive(Debug)]
pub struct Parsed<'a> {
    pub token: &'a str,
    pub alg: Alg,
    pub kid: Option<String>,
    /// The `typ` header, when present.
    pub typ: Option<String>,
    /// Length of `header.payload`, the JWS signing input.
    pub signing_input_len: usize,
    pub signature: Vec<u8>,
    pub payload_b64: &'a str,
    pub claims: Map<String, Value>,
}

/// A JSON object whose deserialisation refuses duplicate member names.
pub(crate) struct UniqueObject(pub(crate) Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueObject, A::Error> {
                let mut out = Map::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom("duplicate member"));
                    }
                    let v: Value = map.next_value()?;
                    out.insert(k, v);
                }
                Ok(UniqueObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = b64::decode(segment)?;
    serde_json::from_slice::<UniqueObject>(&bytes).ok().map(|u| u.0)
}

/// Checks the token's structure and header. `max_len` is the provider's size cap.
pub fn parse(token: &str, max_len: usize) -> Result<Parsed<'_>, Reason> {
    if token.len() > max_len {
        return Err(Reason::TokenTooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Reason::TokenMalformed);
    };
    if h.is_empty() || p.is_empty() {
        return Err(Reason::TokenMalformed);
    }
    let header = decode_object(h).ok_or(Reason::TokenMalformed)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => Alg::parse(a).ok_or(Reason::TokenAlgorithm)?,
        Some(_) => return Err(Reason::TokenMalformed),
        None => return Err(Reason::TokenMalformed),
    };
    if header.contains_key("crit") {
        return Err(Reason::TokenAlgorithm);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Reason::TokenMalformed),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(Reason::TokenMalformed),
    };
    if s.is_empty() {
        // "header.payload." is an unsecured JWS (alg none); any alg claiming otherwise is lying.
        return Err(Reason::TokenSignature);
    }
    let signature = b64::decode(s).ok_or(Reason::TokenMalformed)?;
    let claims = decode_object(p).ok_or(Reason::TokenMalformed)?;
    Ok(Parsed { token, alg, kid, typ, signing_input_len: h.len() + 1 + p.len(), signature, payload_b64: p, claims })
}

/// The largest NumericDate accepted: 2^53 (the largest integer every JSON implementation
/// holds exactly). Envoy's `jwt_authn` refuses larger values as out of range; `exp = 2^64 - 1`
/// must never read as "never expires".
pub const MAX_NUMERIC_DATE: u64 = 1 << 53;

/// A NumericDate (RFC 7519 §2): a non-negative JSON number up to [`MAX_NUMERIC_DATE`],
/// fractions truncated.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Reason> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let v = match n.as_u64() {
                Some(u) => u,
                None => match n.as_f64() {
                    Some(f) if (0.0..=MAX_NUMERIC_DATE as f64).contains(&f) => f as u64,
                    _ => return Err(Reason::TokenClaims),
                },
            };
            if v > MAX_NUMERIC_DATE {
                return Err(Reason::TokenClaims);
            }
            Ok(Some(v))
        }
        Some(_) => Err(Reason::TokenClaims),
    }
}

/// How many keys a token without `kid` may be tried against: each try of a PS* or EdDSA key
/// is pure-Rust CPU (~1.5 ms), so a forged kid-less token must not cost a key set's worth.
pub const MAX_KIDLESS_CANDIDATES: usize = 2;

/// Checks `exp`, `nbf`, `iat`, `max_lifetime`, `iss` and `aud` at `now` (Unix seconds).
/// Returns `exp`.
pub fn check_claims(claims: &Map<String, Value>, provider: &Provider, now: u64) -> Result<Option<u64>, Reason> {
    // Registered claims have fixed types (RFC 7519 §4.1): a token that gets them wrong is
    // refused whatever the provider checks, so every verification path agrees on it.
    for name in ["iss", "sub", "jti"] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(Reason::TokenClaims);
        }
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return Err(Reason::TokenClaims),
    }
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    check_times(exp, nbf, iat, provider, now)?;
    if let Some(want) = &provider.issuer {
        match claims.get("iss") {
            Some(Value::String(iss)) if iss == want => {}
            Some(Value::String(_)) | None => return Err(Reason::TokenIssuer),
            Some(_) => return Err(Reason::TokenClaims),
        }
    }
    if let Some(m) = &provider.subjects {
        match claims.get("sub") {
            Some(Value::String(s)) if m.matches(s) => {}
            _ => return Err(Reason::TokenSubject),
        }
    }
    if !provider.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => provider.audiences.iter().any(|w| w == a),
            Some(Value::Array(list)) => {
                list.iter().any(|a| a.as_str().is_some_and(|a| provider.audiences.iter().any(|w| w == a)))
            }
            None => false,
            Some(_) => return Err(Reason::TokenClaims),
        };
        if !ok {
            return Err(Reason::TokenAudience);
        }
    }
    Ok(exp)
}

/// The time checks alone (also re-run on every verified-cache hit).
pub fn check_times(
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    provider: &Provider,
    now: u64,
) -> Result<(), Reason> {
    let skew = provider.clock_skew_s;
    match exp {
        None if provider.require_expiration => return Err(Reason::TokenMissingExpiry),
        Some(e) if now >= e.saturating_add(skew) => return Err(Reason::TokenExpired),
        _ => {}
    }
    if let Some(n) = nbf {
        if n > now.saturating_add(skew) {
            return Err(Reason::TokenNotYetValid);
        }
    }
    if let Some(i) = iat {
        if i > now.saturating_add(skew) {
            return Err(Reason::TokenIssuedInFuture);
        }
    }
    if let Some(max) = provider.max_lifetime_s {
        match (exp, iat) {
            (Some(e), Some(i)) if e.saturating_sub(i) > max => return Err(Reason::TokenLifetime),
            (Some(e), None) if e.saturating_sub(now) > max => return Err(Reason::TokenLifetime),
            (None, _) => return Err(Reason::TokenLifetime),
            _ => {}
        }
    }
    Ok(())
}

/// A verified token, as the rest of the pipeline sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub payload_b64: String,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
}

/// Verifies `token` for `provider` with `keys` at `now`.
///
/// `Err(Reason::TokenUnknownKey)` means no key carries the token's `kid`: the caller may
/// refresh a remote key set and retry once.
pub fn verify(
    token: &str,
    provider: &Provider,
    keys: &KeySet,
    now: u64,
    native: &dyn NativeVerifier,
    allow_native: bool,
) -> Result<(Verified, Path), Reason> {
    let parsed = parse(token, provider.max_token_bytes)?;
    // RFC 8725 §3.11: a logout, security-event or introspection-answer JWT is not an access
    // token, even when signed by the same key.
    if let Some(t) = &parsed.typ {
        if !provider.allowed_typ.iter().any(|a| a.eq_ignore_ascii_case(t)) {
            return Err(Reason::TokenType);
        }
    }
    let exp = check_claims(&parsed.claims, provider, now)?;
    let path = if parsed.alg.is_hmac() {
        let Some(secret) = &provider.hmac_secret else {
            return Err(Reason::TokenAlgorithm);
        };
        let input = token.as_bytes().get(..parsed.signing_input_len).unwrap_or_default();
        if !crypto::hmac::verify(parsed.alg, secret, input, &parsed.signature) {
            return Err(Reason::TokenSignature);
        }
        Path::Pure
    } else {
        let kid = parsed.kid.as_deref();
        let mut tried = false;
        let mut decided = None;
        let limit = if kid.is_some() { 8 } else { MAX_KIDLESS_CANDIDATES };
        for key in keys.candidates(kid, parsed.alg).take(limit) {
            tried = true;
            let (ok, path) = crypto::verify_with_key(
                token,
                parsed.signing_input_len,
                &parsed.signature,
                parsed.alg,
                key,
                native,
                allow_native,
            );
            if ok {
                decided = Some(path);
                break;
            }
        }
        match decided {
            Some(p) => p,
            None if tried => return Err(Reason::TokenSignature),
            None => {
                return Err(match kid {
                    Some(k) if !keys.has_kid(k) => Reason::TokenUnknownKey,
                    // The key exists but does not allow this algorithm (e.g. HS256 or PS256
                    // against a key pinned to RS256): an algorithm confusion attempt.
                    _ => Reason::TokenAlgorithm,
                });
            }
        }
    };
    let mut claims = parsed.claims;
    for name in &provider.space_delimited_claims {
        if let Some(Value::String(s)) = claims.get(name) {
            let parts: Vec<Value> = s.split(' ').filter(|p| !p.is_empty()).map(|p| Value::String(p.into())).collect();
            claims.insert(name.clone(), Value::Array(parts));
        }
    }
    let parsed = Parsed { claims, ..parsed };
    let verified = Verified {
        client_id: provider
            .client_id_claims
            .iter()
            .find_map(|c| claim(&parsed.claims, c).and_then(|v| v.as_str().map(str::to_string))),
        scopes: scopes_of(&parsed.claims),
        nbf: numeric_date(&parsed.claims, "nbf").unwrap_or(None),
        iat: numeric_date(&parsed.claims, "iat").unwrap_or(None),
        exp,
        payload_b64: parsed.payload_b64.to_string(),
        claims: parsed.claims,
    };
    Ok((verified, path))
}

/// Looks up a (possibly nested) claim.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &ClaimPath) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for seg in rest {
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
}

/// Scopes from `scope` (space-separated, RFC 8693 §4.2 / RFC 9068) or `scp` (array or string).
pub fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split(' ').filter(|x| !x.is_empty()).map(str::to_string)),
            Some(Value::Array(a)) => out.extend(a.iter().filter_map(|x| x.as_str()).map(str::to_string)),
            _ => {}
        }
    }
    let mut seen = HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

/// Renders a claim as a header value: strings as-is, numbers and booleans as JSON, arrays of
/// those joined with `sep`. Objects, nulls, and values with control characters give `None`
/// (no header), so a claim can never inject header syntax.
pub fn claim_header_value(v: &Value, sep: &str) -> Option<String> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let s = match v {
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
            parts?.join(sep)
        }
        other => scalar(other)?,
    };
    if s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return None;
    }
    Some(s)
}

#[cfg(test)]
mod tests;
