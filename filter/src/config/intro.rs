//! The validated introspection settings (SPEC C4): plain data, defined here so configuration
//! validation needs nothing from the capability that uses them (the `introspection` module
//! re-exports them).

use std::fmt;

/// Default `cache_duration`: 5 minutes.
pub const DEFAULT_CACHE_DURATION_MS: u64 = 300_000;
/// Default `negative_cache_duration`: 10 seconds.
pub const DEFAULT_NEGATIVE_CACHE_DURATION_MS: u64 = 10_000;
/// Default cap on an introspection answer's body: 64 KiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Default cap on an opaque token's length: 4 KiB.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 4096;
/// Default number of slots of the shared cache table (and of lease keys).
pub const DEFAULT_CACHE_SLOTS: u64 = 4096;
/// Where introspection requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Envoy cluster name (Istio: `outbound|<port>||<host>`).
    pub cluster: String,
    /// `:authority` of the request.
    pub authority: String,
    /// `:path` of the request (the introspection endpoint).
    pub path: String,
    /// Callout timeout.
    pub timeout_ms: u64,
}

/// How the gateway authenticates to the introspection endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `client_secret_basic`: `Authorization: Basic base64(urlenc(id):urlenc(secret))`.
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
}

/// Validated introspection settings. `Debug` never prints the client secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The introspection endpoint.
    pub endpoint: Endpoint,
    /// Our OAuth client id at the authorization server.
    pub client_id: String,
    /// Our client secret (from `client_secret` or `client_secret_env`).
    pub client_secret: String,
    /// How the client credentials are sent (default [`ClientAuth::Basic`]).
    pub client_auth: ClientAuth,
    /// Introspect JWS-shaped tokens too (`introspect_jwts`): for providers that issue JWT
    /// access tokens and honour revocation only through introspection.
    pub introspect_jwts: bool,
    /// The answer asked for (`response_format`); JSON is taken whatever was asked.
    pub accept: AnswerFormat,
    /// Upper bound on how long an active result is cached (default 300 s).
    pub cache_duration_ms: u64,
    /// How long an inactive result is cached (default 10 s; 0 disables negative caching).
    pub negative_cache_duration_ms: u64,
    /// Answers with a larger body are refused as unavailable (default 64 KiB).
    pub max_response_bytes: usize,
    /// Longer tokens are refused without a callout (default 4 KiB).
    pub max_token_bytes: usize,
    /// When set, only opaque tokens starting with this prefix are introspected (for servers
    /// whose tokens carry one, e.g. `ory_at_`); other tokens are left to other methods.
    pub opaque_prefix: Option<String>,
    /// Slots of the shared cache table (default 4096; 0 disables the shared cache and leases).
    pub cache_slots: u64,
    /// Shared-data namespace of the cache and leases (set when the configuration loads).
    pub store_ns: crate::store::Namespace,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("client_auth", &self.client_auth)
            .field("accept", &self.accept)
            .field("introspect_jwts", &self.introspect_jwts)
            .field("cache_duration_ms", &self.cache_duration_ms)
            .field("negative_cache_duration_ms", &self.negative_cache_duration_ms)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("opaque_prefix", &self.opaque_prefix)
            .field("cache_slots", &self.cache_slots)
            .finish()
    }
}

impl Settings {
    /// Settings with every optional field at its default.
    pub fn new(endpoint: Endpoint, client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Settings {
            endpoint,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            client_auth: ClientAuth::Basic,
            accept: AnswerFormat::Json,
            introspect_jwts: false,
            cache_duration_ms: DEFAULT_CACHE_DURATION_MS,
            negative_cache_duration_ms: DEFAULT_NEGATIVE_CACHE_DURATION_MS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            opaque_prefix: None,
            cache_slots: DEFAULT_CACHE_SLOTS,
            store_ns: crate::store::Namespace::default(),
        }
    }
}

/// Which introspection answer to ask for. Servers that match the `Accept` media type exactly
/// (glewlwyd, for one) answer a JWT only to a single exact type, so exactly one is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// `Accept: application/json` (RFC 7662).
    Json,
    /// `Accept: application/token-introspection+jwt` (RFC 9701 §4): a signed answer; the
    /// upstream gets its claims, never the answer itself as a token.
    IntrospectionJwt,
    /// `Accept: application/jwt`: the by-value access token of the phantom-token pattern
    /// (Curity and similar), verified with `verify_with` and forwarded upstream.
    AccessTokenJwt,
}

impl AnswerFormat {
    /// The `Accept` header value.
    pub fn accept(self) -> &'static str {
        match self {
            AnswerFormat::Json => "application/json",
            AnswerFormat::IntrospectionJwt => "application/token-introspection+jwt",
            AnswerFormat::AccessTokenJwt => "application/jwt",
        }
    }

    /// True when a JWT answer was asked for.
    pub fn wants_jwt(self) -> bool {
        self != AnswerFormat::Json
    }
}
