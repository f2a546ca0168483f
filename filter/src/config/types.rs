//! Phase 2: the validated configuration the rest of the filter uses.

use std::collections::BTreeMap;

use crate::crypto::jwks::KeySet;

// ---------------------------------------------------------------------------------------------
// Phase 2: validated types.
// ---------------------------------------------------------------------------------------------

/// `enforce` rejects; `shadow` evaluates, counts and reports but always lets the request pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Shadow,
}

/// What to do when a dependency (key set, introspection endpoint) is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyDown {
    /// Refuse with 503 and `Retry-After` (default).
    FailClosed,
    /// Treat the credential that could not be checked as absent: the request continues only
    /// if the route is satisfied without it. Never applies to invalid credentials.
    Anonymous,
}

/// Which signature implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoMode {
    /// The host's `verify_signature` where it exists (RS*, ES*), pure Rust otherwise.
    Auto,
    /// Always pure Rust (for hosts without the foreign function, and for comparison).
    Pure,
}

/// Where a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header (lowercase name) with an optional value prefix such as `Bearer `.
    Header { name: String, prefix: String },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// A claim path: `realm_access.roles` → `["realm_access", "roles"]`.
pub type ClaimPath = Vec<String>;

/// How a provider obtains its keys.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Keys given in the configuration.
    Local(KeySet),
    /// Keys fetched from a JWKS endpoint through an Envoy cluster.
    Remote(RemoteJwks),
    /// `issuer` + `/.well-known/openid-configuration` gives the `jwks_uri`.
    Discovery(RemoteJwks),
}

/// A remote key set (directly, or found through discovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// The URL to fetch (`jwks_uri`, or the discovery document for [`KeySource::Discovery`]).
    pub uri: String,
    /// Envoy cluster that reaches the URL's host.
    pub cluster: String,
    /// `:authority` for the callout (the URL's host).
    pub authority: String,
    /// `:path` for the callout (path and query of the URL).
    pub path: String,
    pub timeout_ms: u64,
    pub cache_duration_ms: u64,
    pub max_stale_ms: u64,
    pub unknown_kid_refresh_interval_ms: u64,
}

/// A validated JWT provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub sources: Vec<Source>,
    pub forward: bool,
    pub forward_payload_header: Option<String>,
    pub claim_to_headers: Vec<(String, ClaimPath)>,
    pub claim_separator: String,
    pub clock_skew_s: u64,
    pub max_lifetime_s: Option<u64>,
    pub require_expiration: bool,
    pub max_token_bytes: usize,
    pub client_id_claims: Vec<ClaimPath>,
    /// `payload_in_filter_state`: the verified payload goes to Envoy filter state under this name.
    pub payload_in_filter_state: Option<String>,
    pub hmac_secret: Option<Vec<u8>>,
    /// `subjects`: the token's `sub` must match (jwt_authn's `StringMatcher`).
    pub subjects: Option<SubjectMatcher>,
    /// Claims whose space-delimited string values are split into arrays (jwt_authn's
    /// `normalize_payload_in_metadata.space_delimited_claims`), for headers, policy and state.
    pub space_delimited_claims: Vec<String>,
    /// Base64url-pad the `forward_payload_header` value (jwt_authn's `pad_forward_payload_header`).
    pub pad_forward_payload_header: bool,
    /// Accepted `typ` header values (compared case-insensitively); a token without `typ` is
    /// accepted. Default: `JWT`, `at+jwt`, `application/at+jwt`.
    pub allowed_typ: Vec<String>,
    /// Shared-data namespace of this provider's key-set records: its key source and issuer.
    pub store_ns: crate::store::Namespace,
}

/// A validated API-key client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub client_id: String,
    pub plan: Option<String>,
    pub scopes: Vec<String>,
    pub disabled: bool,
}

/// Validated API-key settings. `keys` maps SHA-256 digests to an index into `clients`.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    pub sources: Vec<Source>,
    pub hide_credentials: bool,
    pub clients: Vec<ApiClient>,
    pub keys: hashbrown::HashMap<[u8; 32], usize>,
}

/// A credential method a route can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The JWT provider at this index of [`Config::providers`].
    Provider(usize),
    ApiKey,
    /// Opaque tokens exchanged through RFC 7662 introspection.
    Introspection,
    /// A client certificate Envoy validated (`connection.mtls`).
    Mtls,
}

/// Validated introspection (phantom-token) settings.
#[derive(Debug, Clone)]
pub struct Introspection {
    pub settings: super::intro::Settings,
    /// Where opaque tokens are read.
    pub sources: Vec<Source>,
    /// Header (and value prefix) that carries the by-value JWT upstream.
    pub upstream_header: Option<(String, String)>,
    /// Header that carries the introspected claims (base64url JSON) when there is no JWT.
    pub claims_header: String,
    pub claim_to_headers: Vec<(String, ClaimPath)>,
    /// Provider (index) that must verify a returned JWT.
    pub verify_with: Option<usize>,
}

/// What the password grant does with an accepted login.
#[derive(Debug, Clone)]
pub enum GrantMode {
    /// Pass the token request on to the token server with identity headers: either the
    /// original request itself, its headers held until the check is done (`relay: None`,
    /// `forward.hold_headers`), or a copy Portcullis sends to `relay` (cluster, authority, path,
    /// timeout) and whose answer it relays.
    Forward { identity_header: String, extra_info_header: String, relay: Option<Backend> },
    /// Answer it: Portcullis issues and signs the token.
    Issue { issuer: std::rc::Rc<crate::crypto::issue::Issuer>, jwks_path: String },
}

/// Validated password-grant settings.
#[derive(Debug, Clone)]
pub struct PasswordGrant {
    pub token_path: String,
    /// Identity backends, newest `registered_at` first.
    pub backends: Vec<Backend>,
    pub mode: GrantMode,
    pub lockout: Option<LockoutPolicy>,
    pub max_body_bytes: usize,
    /// Slots of each lockout table (`lockout.max_subjects`, default 16 384).
    pub lockout_slots: u64,
    /// Shared-data namespaces of the lockout tables (usernames, addresses): the lockout
    /// policy, table size and the token path.
    pub lockout_ns: LockoutTables,
}

/// The two lockout tables' namespaces.
#[derive(Debug, Clone, Default)]
pub struct LockoutTables {
    pub users: crate::store::Namespace,
    pub addresses: crate::store::Namespace,
}

/// What a route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requires {
    /// Nothing: anonymous access.
    None,
    /// Any one of these methods.
    Any(Vec<Method>),
    /// All of these methods.
    All(Vec<Method>),
    /// These are checked when present (a bad one is refused); none is needed.
    Optional(Vec<Method>),
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// `name`: how events name the route (else its index).
    pub name: Option<String>,
    /// `mode`: this route's own enforce/shadow mode (else the top-level one), for rollouts one
    /// route at a time.
    pub mode: Option<Mode>,
    pub path: PathMatch,
    /// Match the path case-insensitively (`match.ignore_case`, for upstreams whose paths are);
    /// the stored path is then lower case.
    pub ignore_case: bool,
    pub methods: Option<Vec<String>>,
    pub requires: Requires,
    pub scopes: Vec<String>,
    pub plan: Option<String>,
    pub cost: u64,
    /// `match.hosts` (empty: any host).
    pub hosts: Vec<super::route::HostMatch>,
    /// `match.headers` conditions.
    pub headers: Vec<super::route::Condition>,
    /// `allowed_clients` (empty: any).
    pub allowed_clients: Vec<String>,
    /// `when` conditions, all of which must hold.
    pub when: Vec<super::route::Condition>,
    /// Refuse tokens without `cnf` (RFC 8705).
    pub require_bound_token: bool,
}

/// A rate-limit plan: `requests` per `per_ms`, bursting to `burst`; enforced by the local
/// shared table, or by a rate limit service when `global` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub requests: u64,
    pub per_ms: u64,
    pub burst: u64,
    pub global: Option<GlobalLimit>,
}

/// A plan enforced by Envoy's rate limit service protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalLimit {
    /// Envoy cluster (HTTP/2) of the rate limit service.
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u64,
}

/// Rate-limit settings beyond the plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Slots in the shared bucket table (the memory bound).
    pub max_clients: u64,
    /// Shared-data namespace of the bucket table: every plan and the table size.
    pub store_ns: crate::store::Namespace,
    /// The anonymous callers' table (keyed by address): a table of its own, so that a flood
    /// of addresses can never fill the authenticated clients' table.
    pub anonymous_ns: crate::store::Namespace,
    /// Send `RateLimit-Policy` / `RateLimit` headers.
    pub headers: bool,
    /// A JWT claim naming the caller's plan.
    pub plan_claim: Option<ClaimPath>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// Some route sets its own `mode`.
    pub route_modes: bool,
    /// `bypass_cors_preflight`: CORS preflights go on without credentials.
    pub bypass_cors_preflight: bool,
    /// `events`: logging and sinks.
    pub events: Events,
    /// `revocation`: the polled revocation list.
    pub revocation: Option<Revocation>,
    /// `rules`: trigger rules and their shared state.
    pub rules: Rules,
    pub realm: String,
    /// `stats_instance`: counters are `portcullis.instance.<name>.…` (two filters in one Envoy
    /// count separately).
    pub stats_instance: Option<String>,
    pub providers: Vec<Provider>,
    pub api_keys: Option<ApiKeys>,
    pub plans: BTreeMap<String, Plan>,
    pub default_plan: Option<String>,
    /// Set when `rate_limit` is configured.
    pub rate_limit: Option<RateLimitSettings>,
    pub introspection: Option<Introspection>,
    pub password_grant: Option<PasswordGrant>,
    pub routes: Vec<Route>,
    pub default_requires: Requires,
    pub on_dependency_down: DependencyDown,
    pub crypto: CryptoMode,
    pub verified_token_cache_size: usize,
    /// Every request header Portcullis may set; inbound copies are always removed.
    pub owned_headers: Vec<String>,
    /// Warnings found while loading (skipped JWKs and similar); logged by the host.
    pub warnings: Vec<String>,
}

/// Header carrying the authenticated client id upstream.
pub const CLIENT_HEADER: &str = "x-portcullis-client";
/// Header carrying which credential method authenticated the request.
pub const METHOD_HEADER: &str = "x-portcullis-auth";
/// Header carrying the shadow-mode decision.
pub const DECISION_HEADER: &str = "x-portcullis-decision";
/// Prefix of every header Portcullis owns; inbound headers with it are always removed.
pub const OWNED_PREFIX: &str = "x-portcullis-";

/// The default cap on a token request body; a larger body gets 413 (the caller enforces it
/// while buffering, before anything here runs).
pub const DEFAULT_MAX_BODY: usize = 16 * 1024;

/// One configured identity backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its configured name: stats, logs, the `idp` claim and the identity header.
    pub name: String,
    /// The Envoy cluster the callout goes through.
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    /// `registered_at` in Unix seconds ([`super::parse_rfc3339`]).
    pub registered_at: i64,
}

/// The backends in the order they are asked: newest `registered_at` first; backends
/// registered at the same instant keep their configuration order.
pub fn order(backends: &[Backend]) -> Vec<Backend> {
    let mut v = backends.to_vec();
    // `sort_by_key` is stable.
    v.sort_by_key(|b| std::cmp::Reverse(b.registered_at));
    v
}

/// A reasonable lockout table size: 16 384 slots of 96 bytes (≈ 1.5 MiB of shared data).
pub const DEFAULT_LOCKOUT_SLOTS: u64 = 16_384;

/// The configured lockout policy (`password_grant.lockout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within the window that block (at least 1).
    pub max_failures: u64,
    pub window_ms: u64,
    pub block_ms: u64,
}

/// A `subjects` matcher: how the token's `sub` must compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectMatcher {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
}

impl SubjectMatcher {
    /// True when `sub` matches (the bool of each variant is `ignore_case`).
    pub fn matches(&self, sub: &str) -> bool {
        let fold = |s: &str, ic: bool| if ic { s.to_ascii_lowercase() } else { s.to_string() };
        match self {
            SubjectMatcher::Exact(v, ic) => fold(sub, *ic) == fold(v, *ic),
            SubjectMatcher::Prefix(v, ic) => fold(sub, *ic).starts_with(&fold(v, *ic)),
            SubjectMatcher::Suffix(v, ic) => fold(sub, *ic).ends_with(&fold(v, *ic)),
            SubjectMatcher::Contains(v, ic) => fold(sub, *ic).contains(&fold(v, *ic)),
        }
    }
}

/// Validated `events`.
#[derive(Debug, Clone, Default)]
pub struct Events {
    /// Write every event as one JSON line to Envoy's log.
    pub log: bool,
    /// Which fraction of allowed requests become events, in parts per million.
    pub sample_allowed_ppm: u32,
    pub sinks: Vec<Sink>,
    /// Names the host queue the workers hand events to (see [`crate::events::queue`]).
    pub queue_ns: crate::store::Namespace,
}

impl Events {
    /// The host shared queue every worker hands events to.
    pub fn queue_name(&self) -> String {
        self.queue_ns.key("queue")
    }

    /// The shared-data record where the queue's consumer writes its heartbeat.
    pub fn consumer_key(&self) -> String {
        self.queue_ns.key("consumer")
    }

    /// True when any event can go anywhere (otherwise nothing is built).
    pub fn enabled(&self) -> bool {
        self.log || !self.sinks.is_empty()
    }
}

/// A validated event sink.
#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    pub endpoint: Backend,
    /// Headers of every batch request (secrets resolved; never logged).
    pub headers: Vec<(String, String)>,
    pub batch_max: usize,
    pub flush_interval_ms: u64,
    pub queue_max: usize,
    pub kinds: Vec<crate::events::Kind>,
}

/// Validated `revocation`.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub endpoint: Backend,
    pub poll_interval_ms: u64,
    pub max_entries: usize,
    /// Shared-data namespace of the list's records (the endpoint).
    pub ns: crate::store::Namespace,
}

/// Validated `rules`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub rules: Vec<crate::events::rules::Rule>,
    /// Shared-data namespace of the counters and of the blocks and revocations.
    pub ns: crate::store::Namespace,
    /// Slots of the counter table.
    pub slots: u64,
    /// Some rule counts `allowed` events (then every allowed request is counted).
    pub on_allowed: bool,
    /// Some rule blocks or revokes (then requests are checked against the action set).
    pub acts: bool,
    /// Some rule keys on `api_key` (then events carry the presented key's id).
    pub on_api_key: bool,
}
