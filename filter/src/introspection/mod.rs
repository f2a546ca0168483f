//! Token introspection for the phantom-token pattern (SPEC C4): an opaque access token from
//! the internet is exchanged at the gateway, through an RFC 7662 introspection callout, for
//! its claims and — when the server offers one — a by-value JWT for the upstream.
//!
//! Everything here is pure: the callout is returned as data ([`request`]), its answer is
//! handed back as data ([`parse_reply`]), time is passed in, and the shared cache and
//! single-flight lease work through the [`SharedStore`] port.
//!
//! ## Request (RFC 7662 §2.1)
//!
//! `POST <path>` with `application/x-www-form-urlencoded` body
//! `token=<token>&token_type_hint=access_token`. The gateway authenticates as an OAuth client
//! (RFC 7662 §2.1 requires it): HTTP Basic by default, with client id and secret each
//! form-urlencoded before base64 (RFC 6749 §2.3.1), or `client_secret_post` in the body.
//!
//! ## Answers
//!
//! * `application/json` (RFC 7662 §2.2): an object whose `active` member must be a boolean.
//! * `application/jwt` (the phantom-token convention, e.g. Curity): the body **is** the
//!   by-value access token for the upstream; being issued at all means active. Its signature
//!   is **not** verified here: [`Introspected::jwt`] is returned for the caller to verify with
//!   a configured provider. `204 No Content` to an `application/jwt` request means inactive
//!   (the same convention), and is honoured only when we asked for a JWT.
//! * `application/token-introspection+jwt` (RFC 9701): a signed JWT whose
//!   `token_introspection` claim holds the RFC 7662 members. Early drafts of RFC 9701 used
//!   `application/jwt` for the same thing, so a JWT is recognised as an introspection
//!   response by its media type, its `typ` header (`token-introspection+jwt`) or the presence
//!   of the `token_introspection` claim.
//!
//! **Forwarding decision (RFC 9701).** An RFC 9701 response JWT is never offered as the
//! upstream's by-value token ([`Introspected::jwt`] is `None`): it is addressed to the gateway
//! (its `aud` is our client id, not the upstream), it carries the introspection members inside
//! `token_introspection` rather than as access-token claims, and its `typ` exists precisely so
//! that resource servers refuse it as an access token (RFC 9701 §8 on cross-JWT confusion; a
//! conforming RFC 9068 upstream would refuse it anyway, since its `typ` is not `at+jwt`). It is
//! returned in [`Introspected::response_jwt`] for callers that want to check its signature.
//! The `Accept` header names exactly one media type ([`AnswerFormat`]): `application/jwt` for
//! the by-value JWT (`response_format: "jwt"`), `application/token-introspection+jwt` for RFC
//! 9701 (`response_format: "token-introspection+jwt"`, or `accept_jwt: true`), JSON otherwise;
//! servers that match the media type exactly never answer a list. Whatever was asked, a JSON
//! answer is taken; an RFC 9701 or JSON answer yields claims (for headers and policy) and no JWT.
//!
//! ## Failures versus invalid tokens
//!
//! Only a well-formed answer saying `active: false` (or a token whose `exp` has passed, or the
//! `204` convention above) makes a token invalid. Everything else — no answer, 5xx, 429, other
//! 4xx, garbage, oversized or unexpected media type — is an [`IntrospectionError`]: the
//! endpoint is unavailable, never "the token is bad". `401`/`403` from the endpoint mean *our*
//! client credentials are wrong ([`IntrospectionError::BadClientCredentials`]): a 503 and an
//! error log, never a 401 to the caller.
//!
//! ## Cache lifetime
//!
//! Active: `min(cache_duration, exp − now, Cache-Control max-age)` (`s-maxage` takes precedence
//! over `max-age`, RFC 9111 §5.2.2.10; `no-store`/`no-cache` give 0, i.e. not cached).
//! Inactive: `negative_cache_duration`, whatever `Cache-Control` says — an inactive token
//! (expired, revoked or never issued, RFC 7662 §2.2) never becomes active again.
//!
//! ## Shared cache and single flight
//!
//! Results are shared by all workers through shared data, in a fixed table of `slots` keys
//! (`portcullis.introspect.<slot>`), so memory is bounded however many tokens appear. A token
//! is known only by its SHA-256 (never the raw token); the full digest is stored in the entry
//! and compared on lookup, so a slot collision can never return another token's entry. Each
//! token has two candidate slots; a new entry replaces, in order: the token's own entry, an
//! empty slot, an expired entry, or the live entry expiring sooner — but only if that one
//! would expire no later than the new entry, so a flood of short-lived negative entries cannot
//! push out long-lived positive ones. Entries over [`MAX_ENTRY_BYTES`] are not cached.
//!
//! One introspection per token across workers: a lease per slot
//! (`portcullis.introspect.lease.<slot>`, the token's digest and an expiry). At most
//! `2 × slots` distinct shared-data keys exist.

mod cache;

pub use cache::*;

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::callout::{Callout, Reply};
use crate::jwt;
use crate::store::SharedStore;
use crate::wire::b64;

pub use crate::config::intro::*;

/// The largest encoded cache entry; larger results are simply not cached. With the default
/// slot count this bounds the table at 32 MiB in the worst case (typical entries are ~1 KiB).
pub const MAX_ENTRY_BYTES: usize = 8 * 1024;
/// Bounded retries of the cache's CAS loop: the one slot table's (caching is best effort).
pub use crate::store::slots::MAX_CAS_RETRIES;

/// The largest JOSE header (base64url characters) [`is_opaque`] decodes.
const MAX_HEADER_B64: usize = 4096;

/// The outcome of an introspection (fresh or from the cache).
#[derive(Debug, Clone, PartialEq)]
pub struct Introspected {
    /// The token is active. Only a well-formed negative answer (or a passed `exp`) is `false`.
    pub active: bool,
    /// For active tokens: the RFC 7662 members of a JSON or RFC 9701 answer, or the decoded
    /// claims of a by-value JWT answer. Empty for inactive tokens.
    pub claims: Map<String, Value>,
    /// The by-value JWT to forward upstream in place of the opaque token (`application/jwt`
    /// answers only, active tokens only). Its signature has not been verified here.
    pub jwt: Option<String>,
    /// The signed RFC 9701 response, for callers that check its signature. Never to be
    /// forwarded as an access token; not kept in the cache (`None` on cache hits).
    pub response_jwt: Option<String>,
    /// How long this result may be cached (0: not at all). On a cache hit, what is left.
    pub ttl_ms: u64,
}

impl Introspected {
    fn inactive(ttl_ms: u64) -> Self {
        Introspected { active: false, claims: Map::new(), jwt: None, response_jwt: None, ttl_ms }
    }

    /// The `client_id` member (RFC 7662 §2.2), for rate limiting and policy.
    pub fn client_id(&self) -> Option<&str> {
        self.claims.get("client_id").and_then(Value::as_str)
    }

    /// The `sub` member.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// Scopes from `scope` (space-separated) or `scp`.
    pub fn scopes(&self) -> Vec<String> {
        jwt::scopes_of(&self.claims)
    }
}

/// Why an introspection did not produce an answer. Every variant except
/// [`BadClientCredentials`](IntrospectionError::BadClientCredentials) means "the endpoint is
/// unavailable" — never "the token is invalid"; both classes are 503 to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionError {
    /// The callout failed without a response: connection failure, reset, timeout, no healthy
    /// host in the cluster.
    NoResponse,
    /// The endpoint answered 5xx (overloaded, crashed, or a proxy in front of it failed).
    ServerError {
        /// The status received.
        status: u16,
        /// Its `Retry-After` in seconds, when given as delta-seconds.
        retry_after_s: Option<u64>,
    },
    /// The endpoint answered 429: it rate-limits the gateway.
    Throttled {
        /// Its `Retry-After` in seconds, when given as delta-seconds.
        retry_after_s: Option<u64>,
    },
    /// The endpoint answered 401 or 403: **our** client credentials (client id / secret) are
    /// wrong, expired or not allowed to introspect. A configuration error: log at error level.
    BadClientCredentials {
        /// The status received.
        status: u16,
    },
    /// Any other non-200 status (a 400 from a wrong path or request shape, 404, 3xx, ...).
    UnexpectedStatus {
        /// The status received.
        status: u16,
    },
    /// The body exceeds `max_response_bytes`.
    TooLarge {
        /// The body's length.
        len: usize,
    },
    /// The answer's media type is missing or not one we asked for.
    ContentType,
    /// A JSON answer that is not a JSON object (garbage, empty, truncated, duplicate members).
    MalformedBody,
    /// `active` is missing or not a boolean (RFC 7662 §2.2 requires a boolean).
    MalformedActive,
    /// A member with a registered meaning has the wrong type (for example a string `exp`).
    MalformedClaims,
    /// A JWT answer that is not a well-formed JWS with a JSON object payload, or an RFC 9701
    /// answer without a `token_introspection` object.
    MalformedJwt,
}

impl IntrospectionError {
    /// A stable code for logs and stats (never contains answer text).
    pub fn code(&self) -> &'static str {
        match self {
            IntrospectionError::NoResponse => "introspection_no_response",
            IntrospectionError::ServerError { .. } => "introspection_server_error",
            IntrospectionError::Throttled { .. } => "introspection_throttled",
            IntrospectionError::BadClientCredentials { .. } => "introspection_bad_client_credentials",
            IntrospectionError::UnexpectedStatus { .. } => "introspection_unexpected_status",
            IntrospectionError::TooLarge { .. } => "introspection_too_large",
            IntrospectionError::ContentType => "introspection_content_type",
            IntrospectionError::MalformedBody => "introspection_malformed_body",
            IntrospectionError::MalformedActive => "introspection_malformed_active",
            IntrospectionError::MalformedClaims => "introspection_malformed_claims",
            IntrospectionError::MalformedJwt => "introspection_malformed_jwt",
        }
    }

    /// True when our own client credentials were refused (a configuration error).
    pub fn is_bad_client_credentials(&self) -> bool {
        matches!(self, IntrospectionError::BadClientCredentials { .. })
    }

    /// The endpoint's `Retry-After`, when it gave one.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            IntrospectionError::ServerError { retry_after_s, .. } | IntrospectionError::Throttled { retry_after_s } => {
                *retry_after_s
            }
            _ => None,
        }
    }
}

impl fmt::Display for IntrospectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntrospectionError::ServerError { status, .. }
            | IntrospectionError::BadClientCredentials { status }
            | IntrospectionError::UnexpectedStatus { status } => write!(f, "{} (status {status})", self.code()),
            IntrospectionError::TooLarge { len } => write!(f, "{} ({len} bytes)", self.code()),
            _ => f.write_str(self.code()),
        }
    }
}

impl std::error::Error for IntrospectionError {}

// ---------------------------------------------------------------------------------------------
// Tokens

/// True when `token` is not a JWS: not three dot-separated segments whose first decodes
/// (base64url) to a JSON object with a string `alg`. Cheap: only the header is parsed, never
/// the payload. JWE (five segments) and random strings are opaque.
pub fn is_opaque(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return true;
    };
    if h.is_empty() || h.len() > MAX_HEADER_B64 {
        return true;
    }
    let Some(bytes) = b64::decode(h) else { return true };
    // Only an object qualifies (a derived struct would also accept a JSON array).
    !serde_json::from_slice::<Map<String, Value>>(&bytes).is_ok_and(|h| h.get("alg").is_some_and(Value::is_string))
}

/// True when this token is for introspection: opaque and carrying `opaque_prefix` if set, or
/// any JWS when `introspect_jwts` is on.
pub fn is_candidate(s: &Settings, token: &str) -> bool {
    if is_opaque(token) {
        s.opaque_prefix.as_deref().is_none_or(|p| token.starts_with(p))
    } else {
        s.introspect_jwts
    }
}

/// True when the token may be sent to the endpoint at all: non-empty, within
/// `max_token_bytes`, and of RFC 6750 §2.1 `b64token` syntax. A candidate failing this is
/// malformed (401 `invalid_token`) without a callout.
pub fn is_well_formed(s: &Settings, token: &str) -> bool {
    let body = token.trim_end_matches('=');
    token.len() <= s.max_token_bytes
        && !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

// ---------------------------------------------------------------------------------------------
// Request

/// `Basic <base64(urlenc(client_id) ":" urlenc(client_secret))>` (RFC 6749 §2.3.1).
pub fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    let pair = format!("{}:{}", crate::wire::form::encode(client_id), crate::wire::form::encode(client_secret));
    format!("Basic {}", STANDARD.encode(pair.as_bytes()))
}

/// The introspection callout for `token` (RFC 7662 §2.1).
pub fn request(s: &Settings, token: &str) -> Callout {
    let mut body = String::with_capacity(token.len() + 64);
    body.push_str("token=");
    crate::wire::form::encode_into(token, &mut body);
    body.push_str("&token_type_hint=access_token");
    let mut headers = vec![
        ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
        ("accept".to_string(), s.accept.accept().to_string()),
    ];
    match s.client_auth {
        ClientAuth::Basic => {
            headers.push(("authorization".to_string(), basic_authorization(&s.client_id, &s.client_secret)));
        }
        ClientAuth::Post => {
            body.push_str("&client_id=");
            crate::wire::form::encode_into(&s.client_id, &mut body);
            body.push_str("&client_secret=");
            crate::wire::form::encode_into(&s.client_secret, &mut body);
        }
    }
    Callout {
        cluster: s.endpoint.cluster.clone(),
        method: "POST".to_string(),
        authority: s.endpoint.authority.clone(),
        path: s.endpoint.path.clone(),
        headers,
        body: Some(body.into_bytes()),
        timeout_ms: s.endpoint.timeout_ms,
    }
}

// ---------------------------------------------------------------------------------------------
// Answer

/// What `Cache-Control` allows for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// No caching directive: the configured duration applies.
    Unspecified,
    /// `no-store` or `no-cache`: do not cache.
    NoStore,
    /// `s-maxage` (preferred) or `max-age`, in seconds; an invalid value counts as 0.
    MaxAge(u64),
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// delta-seconds (RFC 9110 §10.2.3 / RFC 9111 §1.2.2), optionally quoted; saturating.
fn delta_seconds(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(t);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(t.bytes().fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

/// Reads every `Cache-Control` header of the answer (RFC 9111 §5.2.2).
pub fn freshness(reply: &Reply) -> Freshness {
    let (mut max_age, mut s_maxage): (Option<u64>, Option<u64>) = (None, None);
    for (_, value) in reply.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("cache-control")) {
        for directive in value.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a)),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Freshness::NoStore;
            }
            let seconds = || arg.and_then(delta_seconds).unwrap_or(0);
            if name.eq_ignore_ascii_case("max-age") {
                max_age = Some(max_age.map_or(seconds(), |m| m.min(seconds())));
            } else if name.eq_ignore_ascii_case("s-maxage") {
                s_maxage = Some(s_maxage.map_or(seconds(), |m| m.min(seconds())));
            }
        }
    }
    match s_maxage.or(max_age) {
        Some(s) => Freshness::MaxAge(s),
        None => Freshness::Unspecified,
    }
}

/// How long an active result may be cached: `min(cache_duration, exp − now, max-age)`, 0 for
/// `no-store`. `None` when `exp` has passed (`exp <= now`): the token is not active.
pub fn positive_ttl_ms(cache_duration_ms: u64, exp_s: Option<u64>, freshness: Freshness, now_s: u64) -> Option<u64> {
    let mut ttl = cache_duration_ms;
    if let Some(exp) = exp_s {
        if exp <= now_s {
            return None;
        }
        ttl = ttl.min((exp - now_s).saturating_mul(1000));
    }
    match freshness {
        Freshness::Unspecified => {}
        Freshness::NoStore => ttl = 0,
        Freshness::MaxAge(s) => ttl = ttl.min(s.saturating_mul(1000)),
    }
    Some(ttl)
}

use crate::jwt::UniqueObject;

/// A NumericDate member (RFC 7519 §2): absent, or a non-negative number (fractions dropped).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, IntrospectionError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(f)) if f >= 0.0 && f.is_finite() => Ok(Some(f as u64)),
            _ => Err(IntrospectionError::MalformedClaims),
        },
        Some(_) => Err(IntrospectionError::MalformedClaims),
    }
}

/// The members of an answer, before lifetimes are applied.
struct Draft {
    active: bool,
    /// `exp` of an active token.
    exp: Option<u64>,
    claims: Map<String, Value>,
    jwt: Option<String>,
    response_jwt: Option<String>,
}

/// Takes `active` (a boolean, required) and, for active tokens, checks `exp`'s type.
fn members(claims: Map<String, Value>) -> Result<Draft, IntrospectionError> {
    let active = match claims.get("active") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(IntrospectionError::MalformedActive),
    };
    if !active {
        return Ok(Draft { active: false, exp: None, claims: Map::new(), jwt: None, response_jwt: None });
    }
    let exp = numeric_date(&claims, "exp")?;
    Ok(Draft { active: true, exp, claims, jwt: None, response_jwt: None })
}

fn parse_json(body: &[u8]) -> Result<Draft, IntrospectionError> {
    let object = serde_json::from_slice::<UniqueObject>(body).map_err(|_| IntrospectionError::MalformedBody)?.0;
    members(object)
}

/// The `typ` of a JWS header that [`jwt::parse`] already accepted.
fn jose_typ(token: &str) -> Option<String> {
    let header = token.split('.').next().and_then(b64::decode)?;
    match serde_json::from_slice::<Value>(&header).ok()?.get("typ")? {
        Value::String(t) => Some(t.clone()),
        _ => None,
    }
}

fn parse_jwt(body: &[u8], rfc9701_media: bool, max_len: usize) -> Result<Draft, IntrospectionError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| IntrospectionError::MalformedJwt)?
        .trim_matches(|c: char| c.is_ascii_whitespace());
    let parsed = jwt::parse(text, max_len).map_err(|_| IntrospectionError::MalformedJwt)?;
    let typ_9701 = jose_typ(text).is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == "token-introspection+jwt" || t == "application/token-introspection+jwt"
    });
    let mut claims = parsed.claims;
    if rfc9701_media || typ_9701 || claims.contains_key("token_introspection") {
        let Some(Value::Object(inner)) = claims.remove("token_introspection") else {
            return Err(IntrospectionError::MalformedJwt);
        };
        let mut draft = members(inner)?;
        draft.response_jwt = draft.active.then(|| text.to_string());
        return Ok(draft);
    }
    // A by-value access token: issued at all means active — unless it says otherwise at the
    // top level (`"active": false` must never be read as active).
    match claims.get("active") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Ok(Draft { active: false, exp: None, claims: Map::new(), jwt: None, response_jwt: None })
        }
        Some(_) => return Err(IntrospectionError::MalformedActive),
    }
    let exp = numeric_date(&claims, "exp")?;
    Ok(Draft { active: true, exp, claims, jwt: Some(text.to_string()), response_jwt: None })
}

/// The media type of the answer (parameters dropped), lower-cased.
fn media_type(reply: &Reply) -> Option<String> {
    let ct = header(reply, "content-type")?;
    let media = ct.split(';').next().unwrap_or(ct).trim();
    Some(media.to_ascii_lowercase())
}

/// Interprets the introspection answer at `now_s` (Unix seconds). See the module docs for
/// which answers mean "inactive" and which are errors.
pub fn parse_reply(s: &Settings, reply: &Reply, now_s: u64) -> Result<Introspected, IntrospectionError> {
    let status = reply.status.ok_or(IntrospectionError::NoResponse)?;
    let retry_after_s = || header(reply, "retry-after").and_then(delta_seconds);
    match status {
        200 => {}
        // Phantom-token convention: no JWT for an inactive token.
        204 if s.accept.wants_jwt() && reply.body.is_empty() => {
            return Ok(Introspected::inactive(s.negative_cache_duration_ms));
        }
        401 | 403 => return Err(IntrospectionError::BadClientCredentials { status }),
        429 => return Err(IntrospectionError::Throttled { retry_after_s: retry_after_s() }),
        500..=599 => return Err(IntrospectionError::ServerError { status, retry_after_s: retry_after_s() }),
        _ => return Err(IntrospectionError::UnexpectedStatus { status }),
    }
    if reply.body.len() > s.max_response_bytes {
        return Err(IntrospectionError::TooLarge { len: reply.body.len() });
    }
    let media = media_type(reply).ok_or(IntrospectionError::ContentType)?;
    let draft = match media.as_str() {
        "application/json" => parse_json(&reply.body)?,
        "application/jwt" if s.accept.wants_jwt() => parse_jwt(&reply.body, false, s.max_response_bytes)?,
        "application/token-introspection+jwt" if s.accept.wants_jwt() => {
            parse_jwt(&reply.body, true, s.max_response_bytes)?
        }
        _ => return Err(IntrospectionError::ContentType),
    };
    if !draft.active {
        return Ok(Introspected::inactive(s.negative_cache_duration_ms));
    }
    match positive_ttl_ms(s.cache_duration_ms, draft.exp, freshness(reply), now_s) {
        None => Ok(Introspected::inactive(s.negative_cache_duration_ms)),
        Some(ttl_ms) => Ok(Introspected {
            active: true,
            claims: draft.claims,
            jwt: draft.jwt,
            response_jwt: draft.response_jwt,
            ttl_ms,
        }),
    }
}

#[cfg(test)]
mod tests;
