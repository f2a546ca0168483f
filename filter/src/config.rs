//! Plugin configuration (SPEC §2), in two phases:
//!
//! 1. **Shape**: serde types (`Raw…`, `deny_unknown_fields`) read the JSON. Type errors and
//!    unknown fields are reported with their field path by `serde_path_to_error`.
//! 2. **Meaning**: [`validate`] turns the raw types into the validated [`Config`] the rest of
//!    the filter uses, checking every cross-reference (plans, providers named by routes),
//!    parsing durations, hashes and inline key sets, and resolving secrets from VM environment
//!    variables. Every [`ConfigError`] names the field path and the problem, e.g.
//!    `providers.corp.audiences[0]: must not be empty`.
//!
//! Nothing here touches the host: environment variables come in through a lookup function.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::duration;
use crate::jwks::{self, KeySet};

/// A configuration error: the field path (`providers.corp.audiences[0]`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field; empty for the document itself.
    pub path: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError { path: path.into(), message: message.into() })
}

// ---------------------------------------------------------------------------------------------
// Phase 1: the JSON shape.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<String>,
    realm: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    api_keys: Option<RawApiKeys>,
    introspection: Option<RawIntrospection>,
    password_grant: Option<RawPasswordGrant>,
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    requires: Option<RawRequires>,
    events: Option<RawEvents>,
    on_dependency_down: Option<String>,
    crypto: Option<String>,
    verified_token_cache_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    issuer: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    remote_jwks: Option<RawRemoteJwks>,
    local_jwks: Option<RawLocalJwks>,
    discovery: Option<RawDiscovery>,
    from_headers: Option<Vec<RawHeaderSource>>,
    #[serde(default)]
    from_params: Vec<String>,
    #[serde(default)]
    from_cookies: Vec<String>,
    #[serde(default)]
    forward: bool,
    forward_payload_header: Option<String>,
    #[serde(default)]
    claim_to_headers: Vec<RawClaimToHeader>,
    claim_separator: Option<String>,
    clock_skew_seconds: Option<u64>,
    max_lifetime: Option<String>,
    require_expiration: Option<bool>,
    max_token_bytes: Option<u64>,
    client_id_claim: Option<String>,
    payload_in_metadata: Option<String>,
    hmac_secret: Option<String>,
    hmac_secret_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpUri {
    uri: String,
    cluster: String,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteJwks {
    http_uri: RawHttpUri,
    cache_duration: Option<String>,
    max_stale: Option<String>,
    unknown_kid_refresh_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalJwks {
    inline_string: Option<String>,
    inline_string_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    cluster: String,
    timeout: Option<String>,
    cache_duration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderSource {
    name: String,
    value_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimToHeader {
    header_name: String,
    claim_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKeys {
    #[serde(default)]
    from_headers: Vec<String>,
    #[serde(default)]
    from_params: Vec<String>,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default)]
    clients: Vec<RawApiClient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiClient {
    client_id: String,
    keys_sha256: Vec<String>,
    plan: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    cluster: String,
    authority: String,
    path: String,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntrospection {
    endpoint: RawEndpoint,
    client_id: String,
    client_secret: Option<String>,
    client_secret_env: Option<String>,
    #[serde(default)]
    accept_jwt: bool,
    from_headers: Option<Vec<RawHeaderSource>>,
    upstream_header: Option<RawHeaderSource>,
    #[serde(default)]
    claim_to_headers: Vec<RawClaimToHeader>,
    cache_duration: Option<String>,
    negative_cache_duration: Option<String>,
    claims_header: Option<String>,
    verify_with: Option<String>,
    opaque_prefix: Option<String>,
    cache_slots: Option<u64>,
    max_token_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPasswordGrant {
    token_path: String,
    identities: Vec<RawIdentity>,
    mode: String,
    issue: Option<RawIssue>,
    forward: Option<RawForwardHeaders>,
    lockout: Option<RawLockout>,
    max_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    name: String,
    cluster: String,
    authority: String,
    path: String,
    timeout: Option<String>,
    registered_at: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssue {
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    lifetime: Option<String>,
    algorithm: String,
    signing_key_pem: Option<String>,
    signing_key_pem_env: Option<String>,
    kid: String,
    jwks_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwardHeaders {
    identity_header: Option<String>,
    extra_info_header: Option<String>,
    token_endpoint: Option<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLockout {
    max_failures: u64,
    window: String,
    block: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    plans: BTreeMap<String, RawPlan>,
    default_plan: Option<String>,
    max_clients: Option<u64>,
    #[serde(default)]
    headers: bool,
    plan_claim: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    requests: u64,
    per: String,
    burst: Option<u64>,
    global: Option<RawGlobal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    cluster: String,
    domain: String,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match")]
    matcher: RawMatch,
    requires: Option<RawRequires>,
    #[serde(default)]
    scopes: Vec<String>,
    plan: Option<String>,
    cost: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    prefix: Option<String>,
    path: Option<String>,
    methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRequires {
    Word(String),
    List(RawRequiresList),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequiresList {
    any: Option<Vec<String>>,
    all: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    #[serde(default)]
    webhooks: Vec<RawEndpoint>,
    batch_size: Option<u64>,
    batch_interval: Option<String>,
    #[serde(default)]
    rules: Vec<serde_json::Value>,
}

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
    pub payload_in_metadata: Option<String>,
    pub hmac_secret: Option<Vec<u8>>,
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
}

/// Validated introspection (phantom-token) settings.
#[derive(Debug, Clone)]
pub struct Introspection {
    pub settings: crate::introspection::Settings,
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
    /// Pass the token request on to the token server (`endpoint`: cluster, authority, path,
    /// timeout) with identity headers, and relay its answer.
    Forward { identity_header: String, extra_info_header: String, endpoint: crate::identity::Backend },
    /// Answer it: Portcullis issues and signs the token.
    Issue { issuer: std::rc::Rc<crate::identity::Issuer>, jwks_path: String },
}

/// Validated password-grant settings.
#[derive(Debug, Clone)]
pub struct PasswordGrant {
    pub token_path: String,
    /// Identity backends, newest `registered_at` first.
    pub backends: Vec<crate::identity::Backend>,
    pub mode: GrantMode,
    pub lockout: Option<crate::lockout::Policy>,
    pub max_body_bytes: usize,
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
    pub path: PathMatch,
    pub methods: Option<Vec<String>>,
    pub requires: Requires,
    pub scopes: Vec<String>,
    pub plan: Option<String>,
    pub cost: u64,
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
    /// Send `RateLimit-Policy` / `RateLimit` headers.
    pub headers: bool,
    /// A JWT claim naming the caller's plan.
    pub plan_claim: Option<ClaimPath>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub realm: String,
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

const RESERVED_METHOD_NAMES: [&str; 4] = ["api_key", "introspection", "mtls", "none"];

/// Parses and validates a configuration document. `env` resolves VM environment variables
/// (Envoy `vm_config.environment_variables`, Istio `vmConfig.env`).
pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = std::str::from_utf8(json)
        .map_err(|_| ConfigError { path: String::new(), message: "configuration is not UTF-8".into() })?;
    if text.trim().is_empty() {
        return err("", "configuration is empty: give a JSON object (see README)");
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            // The line and column locate a syntax error; the path would only say "?".
            return ConfigError { path: String::new(), message: format!("configuration is not valid JSON: {inner}") };
        }
        let path = if path == "." { String::new() } else { path };
        let message = operator_message(&strip_position(&inner.to_string()));
        if path.is_empty() && message == "must be a JSON object" {
            return ConfigError { path, message: "configuration must be a JSON object".into() };
        }
        ConfigError { path, message }
    })?;
    de.end()
        .map_err(|e| ConfigError { path: String::new(), message: format!("configuration is not valid JSON: {e}") })?;
    validate(raw, env)
}

/// Rewrites serde messages that would expose internal type names.
fn operator_message(m: &str) -> String {
    if m.contains("untagged enum RawRequires") {
        return "must be \"none\" or an object {\"any\": [...]} or {\"all\": [...]} listing credential method names"
            .into();
    }
    if m.contains("expected struct Raw") {
        return "must be a JSON object".into();
    }
    m.to_string()
}

/// serde_json appends " at line L column C"; the path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn validate(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let mode = match raw.mode.as_deref() {
        None | Some("enforce") => Mode::Enforce,
        Some("shadow") => Mode::Shadow,
        Some(other) => return err("mode", format!("must be \"enforce\" or \"shadow\", got {other:?}")),
    };
    let realm = raw.realm.unwrap_or_else(|| "portcullis".into());
    if realm.is_empty()
        || realm.len() > 128
        || !realm.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return err("realm", "must be 1-128 printable ASCII characters without quotes or backslashes");
    }
    let on_dependency_down = match raw.on_dependency_down.as_deref() {
        None | Some("fail_closed") => DependencyDown::FailClosed,
        Some("anonymous") => DependencyDown::Anonymous,
        Some(other) => {
            return err("on_dependency_down", format!("must be \"fail_closed\" or \"anonymous\", got {other:?}"))
        }
    };
    let crypto = match raw.crypto.as_deref() {
        None | Some("auto") => CryptoMode::Auto,
        Some("pure") => CryptoMode::Pure,
        Some(other) => return err("crypto", format!("must be \"auto\" or \"pure\", got {other:?}")),
    };
    let verified_token_cache_size = match raw.verified_token_cache_size {
        None => 1024,
        Some(n) if n <= 100_000 => n as usize,
        Some(_) => return err("verified_token_cache_size", "must be at most 100000"),
    };

    // Rate-limit plans come first: API-key clients and routes refer to them.
    let mut plans = BTreeMap::new();
    let mut default_plan = None;
    let mut rate_limit = None;
    if let Some(rl) = raw.rate_limit {
        for (name, p) in rl.plans {
            let path = format!("rate_limit.plans.{name}");
            check_name(&path, &name)?;
            if p.requests == 0 {
                return err(format!("{path}.requests"), "must be at least 1");
            }
            let per_ms = dur(&format!("{path}.per"), &p.per)?;
            if !(1000..=86_400_000).contains(&per_ms) {
                return err(format!("{path}.per"), "must be between 1s and 86400s");
            }
            let burst = p.burst.unwrap_or(p.requests);
            if burst == 0 {
                return err(format!("{path}.burst"), "must be at least 1");
            }
            if burst > 1_000_000_000 || p.requests > 1_000_000_000 {
                return err(path, "requests and burst must be at most 1000000000");
            }
            let global = match p.global {
                None => None,
                Some(g) => {
                    if g.cluster.is_empty() {
                        return err(
                            format!("{path}.global.cluster"),
                            "must name the Envoy cluster (HTTP/2) of the rate limit service",
                        );
                    }
                    if g.domain.is_empty() {
                        return err(format!("{path}.global.domain"), "must not be empty");
                    }
                    let timeout_ms = positive_dur(&format!("{path}.global.timeout"), g.timeout.as_deref(), 500)?;
                    Some(GlobalLimit { cluster: g.cluster, domain: g.domain, timeout_ms })
                }
            };
            plans.insert(name, Plan { requests: p.requests, per_ms, burst, global });
        }
        if let Some(dp) = rl.default_plan {
            if !plans.contains_key(&dp) {
                return err("rate_limit.default_plan", unknown_plan(&dp, &plans));
            }
            default_plan = Some(dp);
        }
        if plans.is_empty() {
            return err("rate_limit.plans", "must define at least one plan");
        }
        let max_clients = rl.max_clients.unwrap_or(65_536);
        if !(16..=4_194_304).contains(&max_clients) {
            return err("rate_limit.max_clients", "must be between 16 and 4194304");
        }
        let plan_claim = match rl.plan_claim {
            None => None,
            Some(c) => Some(claim_path("rate_limit.plan_claim", &c)?),
        };
        rate_limit = Some(RateLimitSettings { max_clients, headers: rl.headers, plan_claim });
    }

    let mut providers = Vec::new();
    for (name, p) in raw.providers {
        let path = if name.is_empty() { "providers[\"\"]".to_string() } else { format!("providers.{name}") };
        check_name(&path, &name)?;
        if RESERVED_METHOD_NAMES.contains(&name.as_str()) {
            return err(
                path,
                format!("{name:?} is reserved for a built-in credential method; choose another provider name"),
            );
        }
        providers.push(validate_provider(&path, name, p, env, &mut warnings)?);
    }

    let api_keys = match raw.api_keys {
        None => None,
        Some(a) => Some(validate_api_keys(a, &plans)?),
    };

    let introspection = match &raw.introspection {
        None => None,
        Some(i) => Some(validate_introspection(i, &providers, env)?),
    };
    let password_grant = match &raw.password_grant {
        None => None,
        Some(pg) => Some(validate_password_grant(pg, env)?),
    };
    if let Some(ev) = &raw.events {
        for (i, w) in ev.webhooks.iter().enumerate() {
            validate_endpoint(&format!("events.webhooks[{i}]"), w)?;
        }
        if let Some(b) = ev.batch_size {
            if b == 0 || b > 10_000 {
                return err("events.batch_size", "must be between 1 and 10000");
            }
        }
        if let Some(i) = &ev.batch_interval {
            dur("events.batch_interval", i)?;
        }
        let _ = &ev.rules;
        return err("events", "event sinks are not available in this build yet (see README \"Status\")");
    }

    let ctx = MethodCtx { providers: &providers, api_keys: api_keys.is_some(), introspection: introspection.is_some() };
    let default_requires = match raw.requires {
        Some(r) => validate_requires("requires", r, &ctx)?,
        None => {
            let mut all: Vec<Method> = (0..providers.len()).map(Method::Provider).collect();
            if api_keys.is_some() {
                all.push(Method::ApiKey);
            }
            if introspection.is_some() {
                all.push(Method::Introspection);
            }
            if all.is_empty() {
                Requires::None
            } else {
                Requires::Any(all)
            }
        }
    };

    let mut routes = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let m = r.matcher;
        let path_match = match (m.prefix, m.path) {
            (Some(p), None) => {
                check_path(&format!("{path}.match.prefix"), &p)?;
                PathMatch::Prefix(p)
            }
            (None, Some(p)) => {
                check_path(&format!("{path}.match.path"), &p)?;
                PathMatch::Exact(p)
            }
            (Some(_), Some(_)) => return err(format!("{path}.match"), "give one of prefix or path, not both"),
            (None, None) => return err(format!("{path}.match"), "give one of prefix or path"),
        };
        let methods = match m.methods {
            None => None,
            Some(ms) => {
                if ms.is_empty() {
                    return err(format!("{path}.match.methods"), "must not be empty (omit it to match every method)");
                }
                let mut out = Vec::new();
                for (j, method) in ms.into_iter().enumerate() {
                    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                        return err(
                            format!("{path}.match.methods[{j}]"),
                            format!("{method:?} is not an HTTP method (use upper case, like \"GET\")"),
                        );
                    }
                    out.push(method);
                }
                Some(out)
            }
        };
        let explicit = r.requires.is_some();
        let requires = match r.requires {
            Some(req) => validate_requires(&format!("{path}.requires"), req, &ctx)?,
            None => default_requires.clone(),
        };
        for (j, s) in r.scopes.iter().enumerate() {
            check_scope(&format!("{path}.scopes[{j}]"), s)?;
        }
        if !r.scopes.is_empty() && requires == Requires::None {
            return err(
                format!("{path}.scopes"),
                if explicit {
                    "a route that requires \"none\" cannot require scopes"
                } else {
                    "this route requires no credential (no provider or api_keys is configured), so it cannot require scopes"
                },
            );
        }
        if let Some(p) = &r.plan {
            if !plans.contains_key(p) {
                return err(format!("{path}.plan"), unknown_plan(p, &plans));
            }
        }
        let cost = r.cost.unwrap_or(1);
        if cost == 0 || cost > 1_000_000 {
            return err(format!("{path}.cost"), "must be between 1 and 1000000");
        }
        routes.push(Route { path: path_match, methods, requires, scopes: r.scopes, plan: r.plan, cost });
    }

    let mut owned_headers: Vec<String> = vec![];
    let credential: Vec<&str> = credential_headers(&providers, api_keys.as_ref()).collect();
    for p in &providers {
        let mut set_here: Vec<(String, &String)> = Vec::new();
        if let Some(h) = &p.forward_payload_header {
            set_here.push((format!("providers.{}.forward_payload_header", p.name), h));
        }
        for (i, (h, _)) in p.claim_to_headers.iter().enumerate() {
            set_here.push((format!("providers.{}.claim_to_headers[{i}].header_name", p.name), h));
        }
        for (path, h) in set_here {
            if credential.contains(&h.as_str()) {
                return err(path, format!("header {h:?} is also a credential source; Portcullis would overwrite it"));
            }
            if h.starts_with(OWNED_PREFIX) {
                return err(path, format!("header names starting with {OWNED_PREFIX:?} are reserved for Portcullis"));
            }
            owned_headers.push(h.clone());
        }
    }
    if let Some(i) = &introspection {
        owned_headers.push(i.claims_header.clone());
        for (h, _) in &i.claim_to_headers {
            owned_headers.push(h.clone());
        }
    }
    if let Some(PasswordGrant { mode: GrantMode::Forward { identity_header, extra_info_header, .. }, .. }) =
        &password_grant
    {
        owned_headers.push(identity_header.clone());
        owned_headers.push(extra_info_header.clone());
    }
    owned_headers.sort();
    owned_headers.dedup();

    Ok(Config {
        mode,
        realm,
        providers,
        api_keys,
        plans,
        default_plan,
        rate_limit,
        introspection,
        password_grant,
        routes,
        default_requires,
        on_dependency_down,
        crypto,
        verified_token_cache_size,
        owned_headers,
        warnings,
    })
}

fn credential_headers<'a>(providers: &'a [Provider], api: Option<&'a ApiKeys>) -> impl Iterator<Item = &'a str> {
    providers.iter().flat_map(|p| p.sources.iter()).chain(api.into_iter().flat_map(|a| a.sources.iter())).filter_map(
        |s| match s {
            Source::Header { name, .. } => Some(name.as_str()),
            _ => None,
        },
    )
}

struct MethodCtx<'a> {
    providers: &'a [Provider],
    api_keys: bool,
    introspection: bool,
}

fn validate_requires(path: &str, raw: RawRequires, ctx: &MethodCtx) -> Result<Requires, ConfigError> {
    let (list, any, key) = match raw {
        RawRequires::Word(w) if w == "none" => return Ok(Requires::None),
        RawRequires::Word(w) => {
            return err(path, format!("must be \"none\" or an object with \"any\" or \"all\", got {w:?}"));
        }
        RawRequires::List(RawRequiresList { any: Some(a), all: None }) => (a, true, "any"),
        RawRequires::List(RawRequiresList { any: None, all: Some(a) }) => (a, false, "all"),
        RawRequires::List(_) => return err(path, "give exactly one of \"any\" or \"all\""),
    };
    if list.is_empty() {
        return err(format!("{path}.{key}"), "must not be empty (use \"none\" for anonymous access)");
    }
    let mut methods = Vec::new();
    for (i, name) in list.iter().enumerate() {
        let p = format!("{path}.{key}[{i}]");
        let m = if name == "api_key" {
            if !ctx.api_keys {
                return err(p, "\"api_key\" is named but api_keys is not configured");
            }
            Method::ApiKey
        } else if name == "introspection" {
            if !ctx.introspection {
                return err(p, "\"introspection\" is named but introspection is not configured");
            }
            Method::Introspection
        } else if name == "mtls" {
            return err(p, format!("{name:?} is not available in this build yet (see README \"Status\")"));
        } else if name == "none" {
            return err(p, "\"none\" cannot be combined with other methods; use requires: \"none\"");
        } else if let Some(i) = ctx.providers.iter().position(|pr| &pr.name == name) {
            Method::Provider(i)
        } else {
            let mut known: Vec<&str> = ctx.providers.iter().map(|p| p.name.as_str()).collect();
            if ctx.api_keys {
                known.push("api_key");
            }
            if ctx.introspection {
                known.push("introspection");
            }
            if known.is_empty() {
                return err(p, format!("unknown credential method {name:?} (no providers or api_keys are configured)"));
            }
            return err(p, format!("unknown credential method {name:?} (known: {})", known.join(", ")));
        };
        if methods.contains(&m) {
            return err(p, format!("{name:?} is listed twice"));
        }
        methods.push(m);
    }
    Ok(if any { Requires::Any(methods) } else { Requires::All(methods) })
}

fn validate_provider(
    path: &str,
    name: String,
    p: RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Provider, ConfigError> {
    if let Some(iss) = &p.issuer {
        if iss.is_empty() {
            return err(format!("{path}.issuer"), "must not be empty (omit it to accept any issuer)");
        }
    }
    for (i, a) in p.audiences.iter().enumerate() {
        if a.is_empty() {
            return err(format!("{path}.audiences[{i}]"), "must not be empty");
        }
    }
    let keys = match (p.local_jwks, p.remote_jwks, p.discovery) {
        (Some(_), Some(_), _) => {
            return err(path, "give exactly one of local_jwks or remote_jwks, not both");
        }
        (Some(l), None, None) => {
            let lp = format!("{path}.local_jwks");
            let text = secret(&lp, "inline_string", l.inline_string, l.inline_string_env, env)?;
            let (set, warns) = jwks::parse(text.as_bytes()).map_err(|e| ConfigError {
                path: format!("{lp}.inline_string"),
                message: format!("not a usable JWKS: {e}"),
            })?;
            if set.is_empty() {
                // The load fails, so `warnings` is never logged: the reasons go into the error.
                let why = if warns.is_empty() { "the \"keys\" array is empty".to_string() } else { warns.join(" | ") };
                return err(format!("{lp}.inline_string"), format!("no usable key in the set: {why}"));
            }
            for w in warns {
                warnings.push(format!("{lp}: {w}"));
            }
            KeySource::Local(set)
        }
        (None, Some(r), None) => {
            let rp = format!("{path}.remote_jwks");
            KeySource::Remote(validate_remote(
                &rp,
                &r.http_uri,
                r.cache_duration.as_deref(),
                r.max_stale.as_deref(),
                r.unknown_kid_refresh_interval.as_deref(),
            )?)
        }
        (None, None, discovery) => {
            let Some(iss) = &p.issuer else {
                return err(path, "needs a key source: local_jwks, remote_jwks, or issuer (for OIDC discovery)");
            };
            let dp = format!("{path}.discovery");
            let Some(d) = discovery else {
                return err(
                    dp,
                    "OIDC discovery needs the Envoy cluster that reaches the issuer: set discovery.cluster",
                );
            };
            let uri = format!("{}/.well-known/openid-configuration", iss.trim_end_matches('/'));
            let http = RawHttpUri { uri, cluster: d.cluster, timeout: d.timeout };
            KeySource::Discovery(validate_remote(&dp, &http, d.cache_duration.as_deref(), None, None).map_err(|e| {
                if e.path.ends_with(".uri") {
                    ConfigError {
                        path: format!("{path}.issuer"),
                        message: "must be an http(s) URL for OIDC discovery".into(),
                    }
                } else {
                    e
                }
            })?)
        }
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
            return err(format!("{path}.discovery"), "only used when neither local_jwks nor remote_jwks is given");
        }
    };

    let mut sources = Vec::new();
    match p.from_headers {
        None => {
            if p.from_params.is_empty() && p.from_cookies.is_empty() {
                sources.push(Source::Header { name: "authorization".into(), prefix: "Bearer ".into() });
            }
        }
        Some(hs) => {
            for (i, h) in hs.into_iter().enumerate() {
                let hp = format!("{path}.from_headers[{i}]");
                let name = header_name(&format!("{hp}.name"), &h.name)?;
                sources.push(Source::Header { name, prefix: h.value_prefix.unwrap_or_default() });
            }
        }
    }
    for (i, q) in p.from_params.into_iter().enumerate() {
        if q.is_empty() || q.contains(['&', '=', '#', ' ']) {
            return err(format!("{path}.from_params[{i}]"), "must be a non-empty query parameter name");
        }
        sources.push(Source::Param(q));
    }
    for (i, c) in p.from_cookies.into_iter().enumerate() {
        if c.is_empty() || c.contains([';', '=', ' ', ',']) {
            return err(format!("{path}.from_cookies[{i}]"), "must be a non-empty cookie name");
        }
        sources.push(Source::Cookie(c));
    }
    if sources.is_empty() {
        return err(path, "no token source: give from_headers, from_params or from_cookies");
    }

    let forward_payload_header = match p.forward_payload_header {
        None => None,
        Some(h) => Some(header_name(&format!("{path}.forward_payload_header"), &h)?),
    };
    let mut claim_to_headers = Vec::new();
    for (i, c) in p.claim_to_headers.into_iter().enumerate() {
        let cp = format!("{path}.claim_to_headers[{i}]");
        let h = header_name(&format!("{cp}.header_name"), &c.header_name)?;
        let claim = claim_path(&format!("{cp}.claim_name"), &c.claim_name)?;
        claim_to_headers.push((h, claim));
    }
    let claim_separator = p.claim_separator.unwrap_or_else(|| ",".into());
    if claim_separator.is_empty() || claim_separator.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return err(format!("{path}.claim_separator"), "must be printable and not empty");
    }
    let clock_skew_s = p.clock_skew_seconds.unwrap_or(60);
    if clock_skew_s > 3600 {
        return err(format!("{path}.clock_skew_seconds"), "must be at most 3600");
    }
    let max_lifetime_s = match p.max_lifetime {
        None => None,
        Some(t) => {
            let ms = dur(&format!("{path}.max_lifetime"), &t)?;
            if ms < 1000 {
                return err(format!("{path}.max_lifetime"), "must be at least 1s");
            }
            Some(ms / 1000)
        }
    };
    let max_token_bytes = match p.max_token_bytes {
        None => 32 * 1024,
        Some(n) if (256..=1024 * 1024).contains(&n) => n as usize,
        Some(_) => return err(format!("{path}.max_token_bytes"), "must be between 256 and 1048576"),
    };
    let client_id_claims = match p.client_id_claim {
        Some(c) => vec![claim_path(&format!("{path}.client_id_claim"), &c)?],
        None => vec![vec!["client_id".into()], vec!["azp".into()]],
    };
    let payload_in_metadata = match p.payload_in_metadata {
        Some(m) if m.is_empty() => return err(format!("{path}.payload_in_metadata"), "must not be empty"),
        other => other,
    };
    let hmac_secret = match (p.hmac_secret, p.hmac_secret_env) {
        (None, None) => None,
        (a, b) => {
            let from_env = b.clone();
            let s = secret(path, "hmac_secret", a, b, env)?;
            if s.len() < 32 {
                return match from_env {
                    Some(var) => err(
                        format!("{path}.hmac_secret_env"),
                        format!(
                            "the value of VM environment variable {var:?} must be at least 32 bytes (RFC 7518 §3.2)"
                        ),
                    ),
                    None => err(format!("{path}.hmac_secret"), "must be at least 32 bytes (RFC 7518 §3.2)"),
                };
            }
            Some(s.into_bytes())
        }
    };
    Ok(Provider {
        name,
        issuer: p.issuer,
        audiences: p.audiences,
        keys,
        sources,
        forward: p.forward,
        forward_payload_header,
        claim_to_headers,
        claim_separator,
        clock_skew_s,
        max_lifetime_s,
        require_expiration: p.require_expiration.unwrap_or(true),
        max_token_bytes,
        client_id_claims,
        payload_in_metadata,
        hmac_secret,
    })
}

fn validate_remote(
    path: &str,
    http: &RawHttpUri,
    cache: Option<&str>,
    max_stale: Option<&str>,
    kid_interval: Option<&str>,
) -> Result<RemoteJwks, ConfigError> {
    let hp = format!("{path}.http_uri");
    let (authority, upath) = split_url(&http.uri).ok_or_else(|| ConfigError {
        path: format!("{hp}.uri"),
        message: format!("must be an absolute http(s) URL, got {:?}", http.uri),
    })?;
    if http.cluster.is_empty() {
        return err(
            format!("{hp}.cluster"),
            "must name the Envoy cluster that reaches the URL's host (Istio: outbound|443||<host>)",
        );
    }
    let timeout_ms = positive_dur(&format!("{hp}.timeout"), http.timeout.as_deref(), 1000)?;
    let cache_duration_ms = positive_dur(&format!("{path}.cache_duration"), cache, 300_000)?;
    if cache_duration_ms < 1000 {
        return err(format!("{path}.cache_duration"), "must be at least 1s");
    }
    let max_stale_ms = match max_stale {
        None => 24 * 3600 * 1000,
        Some(t) => dur(&format!("{path}.max_stale"), t)?,
    };
    let unknown_kid_refresh_interval_ms = match kid_interval {
        None => 30_000,
        Some(t) => dur(&format!("{path}.unknown_kid_refresh_interval"), t)?,
    };
    Ok(RemoteJwks {
        uri: http.uri.clone(),
        cluster: http.cluster.clone(),
        authority,
        path: upath,
        timeout_ms,
        cache_duration_ms,
        max_stale_ms,
        unknown_kid_refresh_interval_ms,
    })
}

fn validate_api_keys(a: RawApiKeys, plans: &BTreeMap<String, Plan>) -> Result<ApiKeys, ConfigError> {
    let mut sources = Vec::new();
    for (i, h) in a.from_headers.iter().enumerate() {
        let name = header_name(&format!("api_keys.from_headers[{i}]"), h)?;
        sources.push(Source::Header { name, prefix: String::new() });
    }
    for (i, q) in a.from_params.iter().enumerate() {
        if q.is_empty() || q.contains(['&', '=', '#', ' ']) {
            return err(format!("api_keys.from_params[{i}]"), "must be a non-empty query parameter name");
        }
        sources.push(Source::Param(q.clone()));
    }
    if sources.is_empty() {
        return err("api_keys", "give from_headers or from_params (where clients send their key)");
    }
    let mut clients = Vec::new();
    let mut keys = hashbrown::HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (i, c) in a.clients.into_iter().enumerate() {
        let cp = format!("api_keys.clients[{i}]");
        if c.client_id.is_empty() || c.client_id.len() > 128 || c.client_id.bytes().any(|b| !(0x21..0x7f).contains(&b))
        {
            return err(format!("{cp}.client_id"), "must be 1-128 printable ASCII characters without spaces");
        }
        if !ids.insert(c.client_id.clone()) {
            return err(format!("{cp}.client_id"), format!("duplicate client id {:?}", c.client_id));
        }
        if c.keys_sha256.is_empty() {
            return err(format!("{cp}.keys_sha256"), "must hold at least one key hash");
        }
        for (j, h) in c.keys_sha256.iter().enumerate() {
            let kp = format!("{cp}.keys_sha256[{j}]");
            let digest = parse_sha256_hex(h).ok_or_else(|| ConfigError {
                path: kp.clone(),
                message: "must be 64 hex characters (the SHA-256 of the key; see `make hash-key`)".into(),
            })?;
            if keys.insert(digest, clients.len()).is_some() {
                return err(kp, "this key hash is already configured (each key belongs to one client)");
            }
        }
        if let Some(p) = &c.plan {
            if !plans.contains_key(p) {
                return err(format!("{cp}.plan"), unknown_plan(p, plans));
            }
        }
        for (j, s) in c.scopes.iter().enumerate() {
            check_scope(&format!("{cp}.scopes[{j}]"), s)?;
        }
        clients.push(ApiClient { client_id: c.client_id, plan: c.plan, scopes: c.scopes, disabled: c.disabled });
    }
    Ok(ApiKeys { sources, hide_credentials: a.hide_credentials, clients, keys })
}

fn validate_endpoint(path: &str, e: &RawEndpoint) -> Result<u64, ConfigError> {
    if e.cluster.is_empty() {
        return err(format!("{path}.cluster"), "must name an Envoy cluster (Istio: outbound|<port>||<host>)");
    }
    if e.authority.is_empty() {
        return err(format!("{path}.authority"), "must not be empty");
    }
    check_path(&format!("{path}.path"), &e.path)?;
    positive_dur(&format!("{path}.timeout"), e.timeout.as_deref(), 1000)
}

fn validate_introspection(
    i: &RawIntrospection,
    providers: &[Provider],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Introspection, ConfigError> {
    use crate::introspection as intro;
    let timeout_ms = validate_endpoint("introspection.endpoint", &i.endpoint)?;
    if i.client_id.is_empty() {
        return err("introspection.client_id", "must not be empty");
    }
    let secret = secret("introspection", "client_secret", i.client_secret.clone(), i.client_secret_env.clone(), env)?;
    let mut sources = Vec::new();
    match &i.from_headers {
        None => sources.push(Source::Header { name: "authorization".into(), prefix: "Bearer ".into() }),
        Some(hs) => {
            if hs.is_empty() {
                return err("introspection.from_headers", "must not be empty (omit it for Authorization: Bearer)");
            }
            for (j, h) in hs.iter().enumerate() {
                let name = header_name(&format!("introspection.from_headers[{j}].name"), &h.name)?;
                sources.push(Source::Header { name, prefix: h.value_prefix.clone().unwrap_or_default() });
            }
        }
    }
    let upstream_header = match &i.upstream_header {
        None => None,
        Some(h) => Some((
            header_name("introspection.upstream_header.name", &h.name)?,
            h.value_prefix.clone().unwrap_or_default(),
        )),
    };
    let mut claim_to_headers = Vec::new();
    for (j, c) in i.claim_to_headers.iter().enumerate() {
        let cp = format!("introspection.claim_to_headers[{j}]");
        let h = header_name(&format!("{cp}.header_name"), &c.header_name)?;
        if h.starts_with(OWNED_PREFIX) {
            return err(
                format!("{cp}.header_name"),
                format!("header names starting with {OWNED_PREFIX:?} are reserved for Portcullis"),
            );
        }
        claim_to_headers.push((h, claim_path(&format!("{cp}.claim_name"), &c.claim_name)?));
    }
    let claims_header = match &i.claims_header {
        None => "x-portcullis-token-claims".to_string(),
        Some(h) => header_name("introspection.claims_header", h)?,
    };
    let verify_with = match &i.verify_with {
        None => None,
        Some(name) => match providers.iter().position(|p| &p.name == name) {
            Some(ix) => Some(ix),
            None => return err("introspection.verify_with", format!("unknown provider {name:?}")),
        },
    };
    let endpoint = intro::Endpoint {
        cluster: i.endpoint.cluster.clone(),
        authority: i.endpoint.authority.clone(),
        path: i.endpoint.path.clone(),
        timeout_ms,
    };
    let mut settings = intro::Settings::new(endpoint, i.client_id.clone(), secret);
    settings.accept_jwt = i.accept_jwt;
    if let Some(d) = &i.cache_duration {
        settings.cache_duration_ms = dur("introspection.cache_duration", d)?;
    }
    if let Some(d) = &i.negative_cache_duration {
        settings.negative_cache_duration_ms = dur("introspection.negative_cache_duration", d)?;
    }
    if let Some(p) = &i.opaque_prefix {
        if p.is_empty() {
            return err("introspection.opaque_prefix", "must not be empty");
        }
        settings.opaque_prefix = Some(p.clone());
    }
    if let Some(n) = i.cache_slots {
        if n > 1_048_576 {
            return err("introspection.cache_slots", "must be at most 1048576 (0 disables the cache)");
        }
        settings.cache_slots = n;
    }
    if let Some(n) = i.max_token_bytes {
        if !(16..=65_536).contains(&n) {
            return err("introspection.max_token_bytes", "must be between 16 and 65536");
        }
        settings.max_token_bytes = n as usize;
    }
    Ok(Introspection { settings, sources, upstream_header, claims_header, claim_to_headers, verify_with })
}

fn validate_password_grant(
    pg: &RawPasswordGrant,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PasswordGrant, ConfigError> {
    use crate::identity;
    check_path("password_grant.token_path", &pg.token_path)?;
    if pg.identities.is_empty() {
        return err("password_grant.identities", "must list at least one identity backend");
    }
    let mut backends = Vec::new();
    for (i, id) in pg.identities.iter().enumerate() {
        let p = format!("password_grant.identities[{i}]");
        check_name(&format!("{p}.name"), &id.name)?;
        if pg.identities[..i].iter().any(|o| o.name == id.name) {
            return err(format!("{p}.name"), format!("duplicate identity backend name {:?}", id.name));
        }
        let timeout_ms = validate_endpoint(
            &p,
            &RawEndpoint {
                cluster: id.cluster.clone(),
                authority: id.authority.clone(),
                path: id.path.clone(),
                timeout: id.timeout.clone(),
            },
        )?;
        let Some(registered_at) = parse_rfc3339(&id.registered_at) else {
            return err(
                format!("{p}.registered_at"),
                format!("must be an RFC 3339 UTC time like \"2026-03-01T00:00:00Z\", got {:?}", id.registered_at),
            );
        };
        backends.push(identity::Backend {
            name: id.name.clone(),
            cluster: id.cluster.clone(),
            authority: id.authority.clone(),
            path: id.path.clone(),
            timeout_ms,
            registered_at,
        });
    }
    let mode = match pg.mode.as_str() {
        "forward" => {
            let (mut ih, mut xh) = ("x-portcullis-identity".to_string(), "x-portcullis-extra-info".to_string());
            let Some(f) = &pg.forward else {
                return err(
                    "password_grant.forward",
                    "is required when mode is \"forward\": give forward.token_endpoint (the token server)",
                );
            };
            if let Some(h) = &f.identity_header {
                ih = header_name("password_grant.forward.identity_header", h)?;
            }
            if let Some(h) = &f.extra_info_header {
                xh = header_name("password_grant.forward.extra_info_header", h)?;
            }
            let Some(te) = &f.token_endpoint else {
                return err(
                    "password_grant.forward.token_endpoint",
                    "is required: Portcullis relays accepted token requests to it (cluster, authority, path)",
                );
            };
            let timeout_ms = validate_endpoint("password_grant.forward.token_endpoint", te)?;
            let endpoint = identity::Backend {
                name: "token-server".into(),
                cluster: te.cluster.clone(),
                authority: te.authority.clone(),
                path: te.path.clone(),
                timeout_ms,
                registered_at: 0,
            };
            GrantMode::Forward { identity_header: ih, extra_info_header: xh, endpoint }
        }
        "issue" => {
            let Some(is) = &pg.issue else {
                return err("password_grant.issue", "is required when mode is \"issue\"");
            };
            if is.issuer.is_empty() {
                return err("password_grant.issue.issuer", "must not be empty");
            }
            let Some(alg) = identity::SigningAlg::parse(&is.algorithm) else {
                return err(
                    "password_grant.issue.algorithm",
                    format!("must be \"ES256\", \"RS256\" or \"EdDSA\", got {:?}", is.algorithm),
                );
            };
            let pem = secret(
                "password_grant.issue",
                "signing_key_pem",
                is.signing_key_pem.clone(),
                is.signing_key_pem_env.clone(),
                env,
            )?;
            if is.kid.is_empty() {
                return err("password_grant.issue.kid", "must not be empty");
            }
            for (j, a) in is.audiences.iter().enumerate() {
                if a.is_empty() {
                    return err(format!("password_grant.issue.audiences[{j}]"), "must not be empty");
                }
            }
            let lifetime_s = match &is.lifetime {
                None => 900,
                Some(l) => {
                    let ms = dur("password_grant.issue.lifetime", l)?;
                    if !(1000..=86_400_000).contains(&ms) {
                        return err("password_grant.issue.lifetime", "must be between 1s and 86400s");
                    }
                    ms / 1000
                }
            };
            let jwks_path = match &is.jwks_path {
                None => "/.well-known/portcullis/jwks.json".to_string(),
                Some(j) => {
                    check_path("password_grant.issue.jwks_path", j)?;
                    j.clone()
                }
            };
            let key_field = if is.signing_key_pem_env.is_some() { "signing_key_pem_env" } else { "signing_key_pem" };
            let issuer = identity::Issuer::from_pem(&is.issuer, &is.audiences, lifetime_s, alg, &is.kid, &pem)
                .map_err(|e| ConfigError { path: format!("password_grant.issue.{key_field}"), message: e })?;
            GrantMode::Issue { issuer: std::rc::Rc::new(issuer), jwks_path }
        }
        other => return err("password_grant.mode", format!("must be \"forward\" or \"issue\", got {other:?}")),
    };
    let lockout = match &pg.lockout {
        None => None,
        Some(l) => {
            if l.max_failures == 0 || l.max_failures > 1000 {
                return err("password_grant.lockout.max_failures", "must be between 1 and 1000");
            }
            let window_ms = positive_dur("password_grant.lockout.window", Some(&l.window), 0)?;
            let block_ms = positive_dur("password_grant.lockout.block", Some(&l.block), 0)?;
            Some(crate::lockout::Policy { max_failures: l.max_failures, window_ms, block_ms })
        }
    };
    let max_body_bytes = match pg.max_body_bytes {
        None => identity::DEFAULT_MAX_BODY,
        Some(n) if (256..=1_048_576).contains(&n) => n as usize,
        Some(_) => return err("password_grant.max_body_bytes", "must be between 256 and 1048576"),
    };
    Ok(PasswordGrant {
        token_path: pg.token_path.clone(),
        backends: identity::order(&backends),
        mode,
        lockout,
        max_body_bytes,
    })
}

/// A secret given inline (`x`) or through a VM environment variable (`x_env`): exactly one.
fn secret(
    path: &str,
    field: &str,
    inline: Option<String>,
    env_name: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    match (inline, env_name) {
        (Some(_), Some(_)) => err(path, format!("give one of {field} or {field}_env, not both")),
        (None, None) => err(path, format!("give one of {field} or {field}_env")),
        (Some(v), None) => {
            if v.is_empty() {
                err(format!("{path}.{field}"), "must not be empty")
            } else {
                Ok(v)
            }
        }
        (None, Some(name)) => match env(&name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => err(
                format!("{path}.{field}_env"),
                format!("VM environment variable {name:?} is not set or empty (Envoy: vm_config.environment_variables; Istio: vmConfig.env)"),
            ),
        },
    }
}

fn dur(path: &str, text: &str) -> Result<u64, ConfigError> {
    duration::parse_ms(text).map_err(|e| ConfigError {
        path: path.into(),
        message: match e {
            duration::DurationError::Syntax => {
                format!("invalid duration {text:?}: use seconds with an \"s\" suffix, like \"300s\" or \"0.5s\"")
            }
            duration::DurationError::TooPrecise => format!("invalid duration {text:?}: at most millisecond precision"),
            duration::DurationError::TooLarge => format!("invalid duration {text:?}: too large"),
        },
    })
}

fn positive_dur(path: &str, text: Option<&str>, default_ms: u64) -> Result<u64, ConfigError> {
    match text {
        None => Ok(default_ms),
        Some(t) => {
            let ms = dur(path, t)?;
            if ms == 0 {
                err(path, "must be greater than 0s")
            } else {
                Ok(ms)
            }
        }
    }
}

fn unknown_plan(name: &str, plans: &BTreeMap<String, Plan>) -> String {
    if plans.is_empty() {
        format!("unknown plan {name:?} (rate_limit.plans is empty)")
    } else {
        let known: Vec<&str> = plans.keys().map(String::as_str).collect();
        format!("unknown plan {name:?} (rate_limit.plans has: {})", known.join(", "))
    }
}

fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return err(path, format!("name {name:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'"));
    }
    Ok(())
}

fn check_path(path: &str, p: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') || p.bytes().any(|b| b <= 0x20 || b == 0x7f || b == b'?' || b == b'#') {
        return err(path, format!("must start with '/' and hold no spaces, '?' or '#', got {p:?}"));
    }
    Ok(())
}

fn check_scope(path: &str, s: &str) -> Result<(), ConfigError> {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    if s.is_empty() || !s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)) {
        return err(path, format!("{s:?} is not a valid scope token (RFC 6749 §3.3)"));
    }
    Ok(())
}

/// Validates an HTTP header name and returns it lower-cased.
fn header_name(path: &str, h: &str) -> Result<String, ConfigError> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b)) {
        return err(path, format!("{h:?} is not a valid HTTP header name"));
    }
    let lower = h.to_ascii_lowercase();
    if matches!(lower.as_str(), "host" | "content-length" | "transfer-encoding" | "connection") {
        return err(path, format!("{h:?} cannot be used here"));
    }
    Ok(lower)
}

fn claim_path(path: &str, c: &str) -> Result<ClaimPath, ConfigError> {
    if c.is_empty() || c.split('.').any(str::is_empty) {
        return err(
            path,
            format!("{c:?} is not a claim name (use dots for nested claims, like \"realm_access.roles\")"),
        );
    }
    Ok(c.split('.').map(str::to_string).collect())
}

fn parse_sha256_hex(h: &str) -> Option<[u8; 32]> {
    let b = h.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in b.chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Splits `http(s)://host[:port]/path?query` into (authority, path-and-query).
pub fn split_url(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("https://").or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) || path.contains([' ', '#']) {
        return None;
    }
    Some((authority.to_string(), path.to_string()))
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC, optional fraction) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let tail = &s[19..];
    let tail = match tail.strip_prefix('.') {
        Some(t) => {
            let digits = t.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            &t[digits..]
        }
        None => tail,
    };
    if tail != "Z" && tail != "z" {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

#[cfg(test)]
mod tests;
