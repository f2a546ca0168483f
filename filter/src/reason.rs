//! Stable reason codes. Every rejection, log line, Envoy stat and problem `type` is keyed by
//! one of these; they are part of the public API (dashboards and alerts depend on them), so a
//! code is never renamed, only added.

/// Why a request was rejected (or, in shadow mode, would have been).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No credential of any accepted kind was presented.
    MissingCredentials,
    /// The request is malformed: a credential header without the expected prefix, a
    /// non-UTF-8 credential, and similar.
    MalformedRequest,
    /// More than one credential of the same kind (for example a bearer token in both the
    /// header and a query parameter).
    MultipleCredentials,
    /// The token is not a well-formed JWS (segments, base64url, JSON, header members).
    TokenMalformed,
    /// The token exceeds the configured size cap.
    TokenTooLarge,
    /// The token's `alg` is not acceptable for the key that would verify it (including
    /// `none`), or the header asks for something never honoured (`crit`, embedded keys).
    TokenAlgorithm,
    /// No key in the provider's key set has the token's `kid` (after any allowed refresh).
    TokenUnknownKey,
    /// The signature does not verify.
    TokenSignature,
    /// `exp` is in the past (beyond the clock skew).
    TokenExpired,
    /// `exp` is missing and the provider requires it.
    TokenMissingExpiry,
    /// `nbf` is in the future (beyond the clock skew).
    TokenNotYetValid,
    /// `iat` is in the future (beyond the clock skew).
    TokenIssuedInFuture,
    /// `exp - iat` exceeds the provider's `max_lifetime`.
    TokenLifetime,
    /// `iss` does not match the provider's issuer.
    TokenIssuer,
    /// `aud` does not contain any of the provider's audiences.
    TokenAudience,
    /// A time claim has the wrong type (for example a string `exp`).
    TokenClaims,
    /// The introspection endpoint says the opaque token is not active (RFC 7662 §2.2).
    TokenInactive,
    /// The API key is not known.
    ApiKeyInvalid,
    /// The API key belongs to a disabled client.
    ApiKeyDisabled,
    /// Authenticated, but the route requires scopes the caller does not have.
    InsufficientScope,
    /// The client's rate limit is exhausted (or its bucket could not be updated).
    RateLimited,
    /// The key set is not available (never fetched, or stale beyond `max_stale`).
    KeysUnavailable,
    /// The global rate limit service did not answer (and dependencies fail closed).
    RateLimitUnavailable,
    /// The introspection endpoint failed (down, slow, garbage, or it refused our client
    /// credentials): never reported as an invalid token.
    IntrospectionUnavailable,
    /// The request's method or path is not in canonical form and could be read differently
    /// by the policy and the upstream (dot or empty segments, encoded `/`, path parameters, a
    /// lower-case method, invalid escapes): refused rather than guessed.
    NonCanonicalRequest,
    /// The token's `typ` header is not one the provider accepts (RFC 8725 §3.11: a logout or
    /// security-event token is not an access token).
    TokenType,
    /// The token's `sub` does not match the provider's `subjects`.
    TokenSubject,
    /// A token was presented, but no configured credential method takes tokens of its kind
    /// (a JWS with only introspection configured and `introspect_jwts` off, a JWT of an issuer
    /// no provider accepts, a token without the introspection `opaque_prefix`).
    TokenNotAccepted,
    /// Authenticated, but a route's `when` condition or `allowed_clients` refuses the caller.
    PolicyDenied,
    /// The route requires a client certificate and the connection presented none.
    MtlsRequired,
    /// A certificate-bound token (RFC 8705) without its certificate, or a route requiring
    /// bound tokens met one without `cnf`.
    TokenBinding,
    /// The credential is on the revocation list (or was revoked by a rule).
    Revoked,
    /// The revocation list was never loaded and dependencies fail closed.
    RevocationUnavailable,
    /// A trigger rule blocked the caller (its address, client, subject or username) for a while.
    Blocked,
    /// An internal invariant failed; the request is refused rather than let through.
    Internal,
}

impl Reason {
    /// Every reason, for registering one stats counter each at configure time.
    pub const ALL: [Reason; 35] = [
        Reason::MissingCredentials,
        Reason::MalformedRequest,
        Reason::MultipleCredentials,
        Reason::TokenMalformed,
        Reason::TokenTooLarge,
        Reason::TokenAlgorithm,
        Reason::TokenUnknownKey,
        Reason::TokenSignature,
        Reason::TokenExpired,
        Reason::TokenMissingExpiry,
        Reason::TokenNotYetValid,
        Reason::TokenIssuedInFuture,
        Reason::TokenLifetime,
        Reason::TokenIssuer,
        Reason::TokenAudience,
        Reason::TokenClaims,
        Reason::TokenInactive,
        Reason::ApiKeyInvalid,
        Reason::ApiKeyDisabled,
        Reason::InsufficientScope,
        Reason::RateLimited,
        Reason::KeysUnavailable,
        Reason::RateLimitUnavailable,
        Reason::IntrospectionUnavailable,
        Reason::NonCanonicalRequest,
        Reason::TokenType,
        Reason::TokenSubject,
        Reason::TokenNotAccepted,
        Reason::PolicyDenied,
        Reason::MtlsRequired,
        Reason::TokenBinding,
        Reason::Revoked,
        Reason::RevocationUnavailable,
        Reason::Blocked,
        Reason::Internal,
    ];

    /// The stable code: used in stats names, logs and the problem `type` URI.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingCredentials => "missing_credentials",
            Reason::MalformedRequest => "malformed_request",
            Reason::MultipleCredentials => "multiple_credentials",
            Reason::TokenMalformed => "token_malformed",
            Reason::TokenTooLarge => "token_too_large",
            Reason::TokenAlgorithm => "token_algorithm",
            Reason::TokenUnknownKey => "token_unknown_key",
            Reason::TokenSignature => "token_signature",
            Reason::TokenExpired => "token_expired",
            Reason::TokenMissingExpiry => "token_missing_expiry",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenIssuedInFuture => "token_issued_in_future",
            Reason::TokenLifetime => "token_lifetime",
            Reason::TokenIssuer => "token_issuer",
            Reason::TokenAudience => "token_audience",
            Reason::TokenClaims => "token_claims",
            Reason::TokenInactive => "token_inactive",
            Reason::ApiKeyInvalid => "api_key_invalid",
            Reason::ApiKeyDisabled => "api_key_disabled",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::RateLimited => "rate_limited",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::RateLimitUnavailable => "rate_limit_unavailable",
            Reason::IntrospectionUnavailable => "introspection_unavailable",
            Reason::NonCanonicalRequest => "request_not_canonical",
            Reason::TokenType => "token_type",
            Reason::TokenSubject => "token_subject",
            Reason::TokenNotAccepted => "token_not_accepted",
            Reason::PolicyDenied => "policy_denied",
            Reason::MtlsRequired => "mtls_required",
            Reason::TokenBinding => "token_binding",
            Reason::Revoked => "revoked",
            Reason::RevocationUnavailable => "revocation_unavailable",
            Reason::Blocked => "blocked",
            Reason::Internal => "internal",
        }
    }

    /// The HTTP status this reason maps to (SPEC §3).
    pub fn status(self) -> u16 {
        match self {
            Reason::MissingCredentials => 401,
            Reason::MalformedRequest | Reason::MultipleCredentials | Reason::NonCanonicalRequest => 400,
            Reason::InsufficientScope | Reason::PolicyDenied | Reason::MtlsRequired => 403,
            Reason::RateLimited | Reason::Blocked => 429,
            Reason::KeysUnavailable
            | Reason::RateLimitUnavailable
            | Reason::IntrospectionUnavailable
            | Reason::RevocationUnavailable => 503,
            Reason::Internal => 500,
            _ => 401,
        }
    }

    /// True for rejections caused by the credential itself (as opposed to the request's
    /// shape, the caller's rights or a dependency).
    pub fn is_invalid_token(self) -> bool {
        self.status() == 401 && self != Reason::MissingCredentials
    }

    /// Ordering used when several credential methods fail and one reason must be reported:
    /// a dependency outage beats a malformed request beats an invalid credential, so a
    /// caller is never told "your token is bad" when the real cause is on our side.
    pub fn severity(self) -> u8 {
        match self.status() {
            503 | 500 => 4,
            429 => 2,
            400 => 3,
            403 => 2,
            401 if self == Reason::MissingCredentials => 0,
            _ => 1,
        }
    }

    /// A short human title for the problem document.
    pub fn title(self) -> &'static str {
        match self {
            Reason::MissingCredentials => "Authentication required",
            Reason::MalformedRequest => "Malformed request",
            Reason::MultipleCredentials => "More than one credential",
            Reason::NonCanonicalRequest => "Request path not accepted",
            Reason::TokenTooLarge => "Token too large",
            Reason::TokenExpired => "Token expired",
            Reason::ApiKeyInvalid | Reason::ApiKeyDisabled => "Invalid API key",
            Reason::InsufficientScope => "Insufficient scope",
            Reason::PolicyDenied => "Access denied by policy",
            Reason::MtlsRequired => "Client certificate required",
            Reason::RateLimited => "Too many requests",
            Reason::Blocked => "Temporarily blocked",
            Reason::KeysUnavailable => "Authentication temporarily unavailable",
            Reason::RateLimitUnavailable => "Rate limiting temporarily unavailable",
            Reason::IntrospectionUnavailable | Reason::RevocationUnavailable => {
                "Authentication temporarily unavailable"
            }
            Reason::Internal => "Internal error",
            _ => "Invalid token",
        }
    }

    /// A generic explanation: never token contents, key ids or upstream error text.
    pub fn detail(self) -> &'static str {
        match self {
            Reason::MissingCredentials => "This resource requires a credential.",
            Reason::MalformedRequest => "The credential in the request is not well formed.",
            Reason::MultipleCredentials => "The request carries more than one credential of the same kind.",
            Reason::TokenMalformed => "The access token is not a well-formed JWT.",
            Reason::TokenTooLarge => "The access token exceeds the maximum accepted size.",
            Reason::TokenAlgorithm => "The access token's algorithm is not accepted.",
            Reason::TokenUnknownKey => "The access token was signed with an unknown key.",
            Reason::TokenSignature => "The access token's signature is not valid.",
            Reason::TokenExpired => "The access token has expired.",
            Reason::TokenMissingExpiry => "The access token has no expiry.",
            Reason::TokenNotYetValid => "The access token is not valid yet.",
            Reason::TokenIssuedInFuture => "The access token was issued in the future.",
            Reason::TokenLifetime => "The access token's lifetime exceeds the accepted maximum.",
            Reason::TokenIssuer => "The access token was issued by an issuer that is not accepted.",
            Reason::TokenAudience => "The access token is not intended for this audience.",
            Reason::TokenClaims => "The access token's claims are not valid.",
            Reason::TokenInactive => "The access token is not active.",
            Reason::ApiKeyInvalid => "The API key is not valid.",
            Reason::ApiKeyDisabled => "The API key is not valid.",
            Reason::InsufficientScope => "The credential lacks a scope this resource requires.",
            Reason::RateLimited => "The request rate limit for this client is exhausted; retry later.",
            Reason::KeysUnavailable => "Credentials cannot be verified right now; retry later.",
            Reason::RateLimitUnavailable => "The request rate cannot be checked right now; retry later.",
            Reason::IntrospectionUnavailable => "Credentials cannot be verified right now; retry later.",
            Reason::NonCanonicalRequest => {
                "The request method or path is not in canonical form (dot or empty segments, encoded separators, path parameters or invalid escapes)."
            }
            Reason::TokenType => "The token's type is not accepted as an access token.",
            Reason::TokenSubject => "The access token's subject is not accepted.",
            Reason::TokenNotAccepted => "No accepted credential method takes this kind of token.",
            Reason::PolicyDenied => "The credential is valid, but this request is not allowed for it.",
            Reason::MtlsRequired => "This resource requires a client certificate.",
            Reason::TokenBinding => "The access token is bound to a client certificate this connection did not present.",
            Reason::Revoked => "The credential has been revoked.",
            Reason::Blocked => "Requests from this caller are blocked for a while; retry later.",
            Reason::RevocationUnavailable => "Credentials cannot be checked right now; retry later.",
            Reason::Internal => "The request could not be evaluated.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.code()), "duplicate {}", r.code());
            assert!(r.code().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(!r.detail().is_empty());
        }
    }

    #[test]
    fn statuses_follow_spec_section_3() {
        assert_eq!(Reason::MissingCredentials.status(), 401);
        assert_eq!(Reason::MultipleCredentials.status(), 400);
        assert_eq!(Reason::TokenExpired.status(), 401);
        assert_eq!(Reason::InsufficientScope.status(), 403);
        assert_eq!(Reason::KeysUnavailable.status(), 503);
        assert!(Reason::KeysUnavailable.severity() > Reason::TokenSignature.severity());
        assert!(Reason::TokenSignature.severity() > Reason::MissingCredentials.severity());
    }
}
