//! The per-request pipeline, sans-IO:
//!
//! ```text
//! start(ctx, request)            -> Step
//! resume(ctx, pending, reply)    -> Step
//! Step = Done(Decision) | Callout(Fetch, Pending)
//! ```
//!
//! A [`Decision`] says what the host must do (continue with these header mutations, or send
//! this local reply) plus the counters to bump. The core never performs I/O: a request that
//! needs a fetch (an unknown `kid` on a remote key set) returns the fetch as data; the host
//! dispatches it and calls [`resume`] with the reply, and the request is evaluated again
//! with the new keys (no second refresh).
//!
//! Policy (SPEC §2, C6):
//! * The route decides what is required: `none`, `any` of methods, or `all` of them.
//! * Under `any`, every credential the request presents for the listed methods must be
//!   valid, and at least one must be present: an invalid token is never outweighed by a
//!   valid API key in the same request.
//! * When several failures compete, the most severe is reported (dependency down >
//!   malformed request > invalid credential > missing).
//! * Inbound copies of every header Portcullis sets are removed on every allowed request.
//! * `mode: shadow` evaluates everything, counts and reports the would-be rejection in
//!   `x-portcullis-decision`, and lets the request through.

use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::apikey;
use crate::cache::Lru;
use crate::callout::Callout;
use crate::callout::Reply;
use crate::config::{self, Config, DependencyDown, KeySource, Method, Mode, Requires, Source};
use crate::crypto::{NativeVerifier, Path};
use crate::introspection::{self, Introspected, IntrospectionError};
use crate::jwt::{self, Verified};
use crate::keys::{Availability, Fetch, Fetched, Keys};
use crate::policy;
use crate::ratelimit;
use crate::reason::Reason;
use crate::request::{self, ExtractError, Found, RequestView};
use crate::response::{self, Challenges, HttpResponse, Rejection};
use crate::stats::Counter;
use crate::store::SharedStore;

/// A verified-token cache entry: which provider and key-set version verified it.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    provider: usize,
    key_version: u64,
    verified: Rc<Verified>,
}

/// Mutable per-worker state.
pub struct WorkerState {
    pub keys: Keys,
    pub cache: Lru<[u8; 32], CacheEntry>,
    /// Introspection results this worker used recently (SHA-256 of the token → result and
    /// its expiry in Unix ms), in front of the shared cache: a hit costs no host call.
    pub introspected: Lru<[u8; 32], (Rc<Introspected>, u64)>,
    /// Host-provided per-worker uniqueness (for token ids this worker issues).
    pub seed: u64,
    /// Tokens issued by this worker so far.
    pub issued: u64,
}

impl WorkerState {
    pub fn new(cfg: &Config) -> Self {
        WorkerState {
            keys: Keys::new(cfg),
            cache: Lru::new(cfg.verified_token_cache_size),
            introspected: Lru::new(if cfg.introspection.is_some() { cfg.verified_token_cache_size } else { 0 }),
            seed: 0,
            issued: 0,
        }
    }
}

/// Everything a decision may use. Time is injected (`now_ms`, Unix milliseconds).
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub state: &'a mut WorkerState,
    pub store: &'a dyn SharedStore,
    pub native: &'a dyn NativeVerifier,
    pub signer: &'a dyn crate::identity::NativeSigner,
    pub now_ms: u64,
}

/// Header changes for an allowed request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Headers to remove (lower-case names).
    pub remove: Vec<String>,
    /// Headers to set (replacing any value).
    pub set: Vec<(String, String)>,
    /// A new `:path` (a credential query parameter removed).
    pub path: Option<String>,
    /// Filter-state entries for other filters (name, JSON).
    pub filter_state: Vec<(String, String)>,
    /// Headers to add to the upstream's response (rate-limit headers).
    pub response_headers: Vec<(String, String)>,
}

/// What the host must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Continue(Mutations),
    Reply(HttpResponse),
}

/// The outcome of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The rejection reason (also set when shadow mode let the request through).
    pub reason: Option<Reason>,
    /// The authenticated client, for logs.
    pub client: Option<String>,
    /// Counters to increment.
    pub counters: Vec<Counter>,
    /// Structured events (JSON lines) for the host to log.
    pub events: Vec<String>,
    /// Operational problems for the host to log at error level (never request contents).
    pub errors: Vec<String>,
}

/// A request waiting for a callout, a peer or its body.
#[derive(Debug, Clone)]
pub struct Pending {
    pub(crate) request: RequestView,
    pub(crate) waiting: Waiting,
    pub(crate) counters: Vec<Counter>,
    pub(crate) progress: Progress,
    pub(crate) grant: Option<Box<crate::grant::GrantState>>,
}

/// What a paused request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// An early key-set refresh after an unknown `kid`.
    Keys(Fetch),
    /// A global rate-limit decision (gRPC `ShouldRateLimit`).
    Global(GlobalCall),
    /// An introspection callout.
    Introspection(Callout),
    /// Another worker is introspecting the same token: poll [`poll`] until its answer is
    /// cached (the host parks the request and polls on its tick).
    Peer { since_ms: u64 },
    /// The request body (password grant), at most `max` bytes. The headers go on before the
    /// body is read (Proxy-Wasm hosts withhold the body from a filter that holds the
    /// headers), so the host removes `strip` (inbound copies of headers Portcullis owns) first.
    Body { max: usize, strip: Vec<String> },
    /// An identity backend (password grant).
    Backend(Callout),
}

/// A gRPC call to the rate limit service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalCall {
    pub cluster: String,
    pub message: Vec<u8>,
    pub timeout_ms: u64,
}

impl Pending {
    /// What this request waits for (the host dispatches it).
    pub fn waiting(&self) -> &Waiting {
        &self.waiting
    }
}

/// What earlier callouts of this request established.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    may_refresh: bool,
    global: Option<ratelimit::global::Verdict>,
    introspected: Option<Result<Rc<Introspected>, IntrospectionError>>,
    peer_since_ms: Option<u64>,
}

/// Why evaluation must pause.
enum Need {
    Refresh(usize),
    Global(GlobalCall),
    Introspect(Box<Callout>),
    Peer,
}

/// One step of the pipeline.
#[derive(Debug)]
pub enum Step {
    Done(Decision),
    /// Dispatch [`Pending::waiting`] and call [`resume`] with the reply.
    Callout(Pending),
    /// Park the request and call [`poll`] on a timer (another worker is introspecting the
    /// same token).
    Park(Pending),
    /// Buffer the request body (up to `Waiting::Body::max`; beyond, answer
    /// [`crate::identity::payload_too_large`]) and call [`with_body`].
    ReadBody(Pending),
}

/// How long a request waits for another worker's introspection before giving up (503).
pub const MAX_PEER_WAIT_MS: u64 = 5000;

/// What a successful credential method established.
#[derive(Debug, Clone)]
struct Identity {
    method: Method,
    client_id: Option<String>,
    scopes: Vec<String>,
    found: Found,
    verified: Option<Rc<Verified>>,
    introspected: Option<Rc<Introspected>>,
}

enum MethodResult {
    Absent,
    Ok(Identity),
    Failed(Reason),
    /// Failed for a reason with a specific `Retry-After` (dependency answers).
    FailedRetry(Reason, Option<u64>),
    NeedRefresh(usize),
    Need(Need),
}

/// Starts evaluating a request.
pub fn start(ctx: &mut Ctx, req: RequestView) -> Step {
    if let Some(s) = crate::grant::on_headers(ctx, &req) {
        return s;
    }
    step(ctx, req, Progress { may_refresh: true, ..Progress::default() }, vec![Counter::Requests])
}

/// Continues a request parked on [`Step::Park`] (called by the host on a timer).
pub fn poll(ctx: &mut Ctx, pending: Pending) -> Step {
    let Pending { request, mut counters, progress, .. } = pending;
    if progress.peer_since_ms.is_some_and(|t| ctx.now_ms.saturating_sub(t) > MAX_PEER_WAIT_MS) {
        counters.push(Counter::IntrospectionFailed);
        let mut rej = Rejection::new(Reason::IntrospectionUnavailable, Challenges { bearer: true, api_key: false });
        rej.retry_after = Some(response::DEFAULT_RETRY_AFTER);
        return Step::Done(finish(ctx.cfg, &request, Err(rej), counters));
    }
    step(ctx, request, progress, counters)
}

/// Continues a request that waited for its body ([`Step::ReadBody`]).
pub fn with_body(ctx: &mut Ctx, pending: Pending, body: &[u8]) -> Step {
    crate::grant::with_body(ctx, pending, body)
}

/// Resumes a request with the reply to its callout (for gRPC: status `Some(200)` when the
/// call succeeded, with the response message as the body).
pub fn resume(ctx: &mut Ctx, pending: Pending, reply: &Reply) -> Step {
    if pending.grant.is_some() {
        return crate::grant::on_reply(ctx, pending, reply);
    }
    let Pending { request, waiting, mut counters, mut progress, .. } = pending;
    match waiting {
        Waiting::Keys(fetch) => {
            match ctx.state.keys.on_reply(ctx.cfg, ctx.store, &fetch, reply, ctx.now_ms) {
                Fetched::Next(next) => {
                    return Step::Callout(Pending {
                        request,
                        waiting: Waiting::Keys(next),
                        counters,
                        progress,
                        grant: None,
                    });
                }
                Fetched::Published { .. } => {
                    ctx.state.cache.clear();
                    counters.push(Counter::JwksFetchOk);
                }
                Fetched::Failed(_) => counters.push(Counter::JwksFetchFailed),
            }
            progress.may_refresh = false;
        }
        Waiting::Global(_) => {
            let verdict = match reply.status {
                Some(200) => ratelimit::global::parse(&reply.body),
                _ => ratelimit::global::Verdict::Failed,
            };
            if verdict == ratelimit::global::Verdict::Failed {
                counters.push(Counter::RateLimitGlobalFailed);
            }
            progress.global = Some(verdict);
        }
        Waiting::Introspection(_) => {
            progress.introspected = Some(on_introspection_reply(ctx, &request, reply, &mut counters));
        }
        Waiting::Peer { .. } | Waiting::Body { .. } | Waiting::Backend(_) => {}
    }
    step(ctx, request, progress, counters)
}

/// Parses an introspection answer, caches it and frees the single-flight lease.
fn on_introspection_reply(
    ctx: &mut Ctx,
    req: &RequestView,
    reply: &Reply,
    counters: &mut Vec<Counter>,
) -> Result<Rc<Introspected>, IntrospectionError> {
    let Some(ic) = &ctx.cfg.introspection else { return Err(IntrospectionError::NoResponse) };
    let token = req.extract(&ic.sources).ok().flatten().map(|f| f.value).unwrap_or_default();
    let slots = ic.settings.cache_slots;
    let mut result = introspection::parse_reply(&ic.settings, reply, ctx.now_ms / 1000);
    if let (Ok(r), Some(pi)) = (&result, ic.verify_with) {
        if let Some(jwt) = &r.jwt {
            // The by-value JWT must come from the configured issuer: a bad one is the
            // server's fault (503), never the caller's, and is never cached.
            let cfg = ctx.cfg;
            let verified = match ctx.state.keys.available(cfg, pi, ctx.now_ms) {
                Availability::Ready(set, _) => {
                    let allow_native = cfg.crypto == config::CryptoMode::Auto;
                    jwt::verify(jwt, &cfg.providers[pi], set, ctx.now_ms / 1000, ctx.native, allow_native).is_ok()
                }
                Availability::Unavailable => false,
            };
            if !verified {
                result = Err(IntrospectionError::MalformedJwt);
            }
        }
    }
    match &result {
        Ok(r) => {
            counters.push(Counter::IntrospectionCalls);
            introspection::cache_put(ctx.store, slots, &token, r, ctx.now_ms);
        }
        Err(_) => counters.push(Counter::IntrospectionFailed),
    }
    introspection::end(ctx.store, slots, &token);
    let result = result.map(Rc::new);
    if let Ok(r) = &result {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        ctx.state.introspected.put(digest, (Rc::clone(r), ctx.now_ms.saturating_add(r.ttl_ms)));
    }
    result
}

fn step(ctx: &mut Ctx, req: RequestView, mut progress: Progress, mut counters: Vec<Counter>) -> Step {
    // At most: one refresh, then one global call; each pass below ends or pauses.
    for _ in 0..3 {
        match evaluate(ctx, &req, &progress, &mut counters) {
            Ok(d) => return Step::Done(finish(ctx.cfg, &req, d, counters)),
            Err(Need::Refresh(provider)) => {
                if let Some(fetch) = ctx.state.keys.early_refresh(ctx.cfg, ctx.store, provider, ctx.now_ms) {
                    counters.push(Counter::JwksUnknownKidRefresh);
                    return Step::Callout(Pending {
                        request: req,
                        waiting: Waiting::Keys(fetch),
                        counters,
                        progress,
                        grant: None,
                    });
                }
                progress.may_refresh = false;
            }
            Err(Need::Global(call)) => {
                return Step::Callout(Pending {
                    request: req,
                    waiting: Waiting::Global(call),
                    counters,
                    progress,
                    grant: None,
                });
            }
            Err(Need::Introspect(call)) => {
                return Step::Callout(Pending {
                    request: req,
                    waiting: Waiting::Introspection(*call),
                    counters,
                    progress,
                    grant: None,
                });
            }
            Err(Need::Peer) => {
                let since_ms = *progress.peer_since_ms.get_or_insert(ctx.now_ms);
                return Step::Park(Pending {
                    request: req,
                    waiting: Waiting::Peer { since_ms },
                    counters,
                    progress,
                    grant: None,
                });
            }
        }
    }
    let rej = Rejection::new(Reason::Internal, Challenges::default());
    Step::Done(finish(ctx.cfg, &req, Err(rej), counters))
}

type Evaluated = Result<Allowed, Rejection>;

struct Allowed {
    mutations: Mutations,
    client: Option<String>,
}

/// Evaluates the request. `Err(provider)` asks for an early key refresh (only when
/// `may_refresh`).
fn evaluate(
    ctx: &mut Ctx,
    req: &RequestView,
    progress: &Progress,
    counters: &mut Vec<Counter>,
) -> Result<Evaluated, Need> {
    let cfg = ctx.cfg;
    let matched = policy::route(cfg, &req.method, req.path_only());
    let requires = matched.requires();
    let (methods, all): (&[Method], bool) = match requires {
        Requires::None => (&[], false),
        Requires::Any(m) => (m, false),
        Requires::All(m) => (m, true),
    };
    let challenges = Challenges {
        bearer: methods.iter().any(|m| matches!(m, Method::Provider(_) | Method::Introspection)),
        api_key: methods.contains(&Method::ApiKey),
    };
    let reject = |reason: Reason| Rejection::new(reason, challenges);

    let mut identities: Vec<Identity> = Vec::new();
    let mut retry_after: Option<u64> = None;
    let mut failure: Option<Reason> = None;
    let mut missing = false;
    for m in methods {
        let result = match m {
            Method::ApiKey => check_api_key(cfg, req),
            Method::Provider(i) => check_provider(ctx, req, *i, counters),
            Method::Introspection => check_introspection(ctx, req, progress, counters),
        };
        match result {
            MethodResult::Ok(id) => identities.push(id),
            MethodResult::Absent => missing = true,
            MethodResult::Failed(r) | MethodResult::FailedRetry(r, _) => {
                if r.status() == 503 && cfg.on_dependency_down == DependencyDown::Anonymous {
                    missing = true;
                } else if failure.is_none_or(|f| r.severity() > f.severity()) {
                    failure = Some(r);
                    if let MethodResult::FailedRetry(_, ra) = result {
                        retry_after = ra;
                    }
                }
            }
            MethodResult::Need(n) => return Err(n),
            MethodResult::NeedRefresh(p) => {
                if progress.may_refresh {
                    return Err(Need::Refresh(p));
                }
                if failure.is_none_or(|f| Reason::TokenUnknownKey.severity() > f.severity()) {
                    failure = Some(Reason::TokenUnknownKey);
                }
            }
        }
    }
    if let Some(r) = failure {
        let mut rej = reject(r);
        if r.status() == 503 {
            rej.retry_after = Some(retry_after.unwrap_or(response::DEFAULT_RETRY_AFTER));
        }
        return Ok(Err(rej));
    }
    if !methods.is_empty() && (identities.is_empty() || (all && missing)) {
        return Ok(Err(reject(Reason::MissingCredentials)));
    }

    let held: Vec<String> = identities.iter().flat_map(|i| i.scopes.iter().cloned()).collect();
    let lacking = policy::missing_scopes(matched.scopes(), &held);
    if !lacking.is_empty() {
        let mut rej = reject(Reason::InsufficientScope);
        rej.scopes = matched.scopes().to_vec();
        return Ok(Err(rej));
    }

    let client = identities.iter().find_map(|i| i.client_id.clone());
    let mut response_headers = Vec::new();
    if let Some(rl) = &cfg.rate_limit {
        let route_plan = match matched {
            policy::Matched::Route(_, r) => r.plan.as_deref(),
            policy::Matched::Default(_) => None,
        };
        let client_plan = identities.iter().find_map(|i| match i.method {
            Method::ApiKey => cfg
                .api_keys
                .as_ref()
                .and_then(|a| a.clients.iter().find(|c| Some(&c.client_id) == i.client_id.as_ref()))
                .and_then(|c| c.plan.as_deref()),
            Method::Provider(_) | Method::Introspection => None,
        });
        let claim_plan = rl.plan_claim.as_ref().and_then(|path| {
            identities
                .iter()
                .find_map(|i| i.verified.as_ref().and_then(|v| jwt::claim(&v.claims, path)).and_then(|c| c.as_str()))
        });
        if let Some((plan_name, plan)) = ratelimit::plan_for(cfg, route_plan, client_plan, claim_plan) {
            let who = match &client {
                Some(c) => format!("client:{c}"),
                None => format!("addr:{}", req.source.as_deref().map(ratelimit::client_ip).unwrap_or("unknown")),
            };
            let cost = match matched {
                policy::Matched::Route(_, r) => r.cost,
                policy::Matched::Default(_) => 1,
            };
            if let Some(g) = &plan.global {
                use ratelimit::global::Verdict;
                match progress.global {
                    None => {
                        let message = ratelimit::global::request(&g.domain, plan_name, &who, cost);
                        return Err(Need::Global(GlobalCall {
                            cluster: g.cluster.clone(),
                            message,
                            timeout_ms: g.timeout_ms,
                        }));
                    }
                    Some(Verdict::Ok) => {}
                    Some(Verdict::OverLimit { reset_s }) => {
                        let mut rej = Rejection::new(Reason::RateLimited, challenges);
                        rej.retry_after = Some(reset_s.unwrap_or(1).max(1));
                        return Ok(Err(rej));
                    }
                    Some(Verdict::Failed) => {
                        if cfg.on_dependency_down == DependencyDown::FailClosed {
                            let mut rej = Rejection::new(Reason::RateLimitUnavailable, challenges);
                            rej.retry_after = Some(response::DEFAULT_RETRY_AFTER);
                            return Ok(Err(rej));
                        }
                    }
                }
            } else {
                match ratelimit::check(ctx.store, rl.max_clients, rl.headers, &who, plan_name, plan, cost, ctx.now_ms) {
                    ratelimit::Checked::Allowed(h) => response_headers = h,
                    ratelimit::Checked::Limited { retry_after, headers, why } => {
                        match why {
                            ratelimit::Why::TableFull => counters.push(Counter::RateLimitTableFull),
                            ratelimit::Why::Contended => counters.push(Counter::RateLimitContended),
                            ratelimit::Why::Exhausted => {}
                        }
                        let mut rej = Rejection::new(Reason::RateLimited, challenges);
                        rej.retry_after = Some(retry_after);
                        rej.extra_headers = headers;
                        return Ok(Err(rej));
                    }
                }
            }
        }
    }

    let mut mutations = base_mutations(cfg, req);
    mutations.response_headers = response_headers;
    let mut path = req.path.clone();
    let mut method_names = Vec::new();
    for id in &identities {
        match id.method {
            Method::ApiKey => {
                method_names.push("api_key".to_string());
                if cfg.api_keys.as_ref().is_some_and(|a| a.hide_credentials) {
                    strip_credential(&id.found.source, &mut mutations, &mut path, req);
                }
            }
            Method::Provider(i) => {
                let p = &cfg.providers[i];
                method_names.push(format!("jwt:{}", p.name));
                let Some(v) = &id.verified else { continue };
                if !p.forward {
                    strip_credential(&id.found.source, &mut mutations, &mut path, req);
                }
                if let Some(h) = &p.forward_payload_header {
                    mutations.set.push((h.clone(), v.payload_b64.clone()));
                }
                for (h, claim) in &p.claim_to_headers {
                    if let Some(value) =
                        jwt::claim(&v.claims, claim).and_then(|c| jwt::claim_header_value(c, &p.claim_separator))
                    {
                        mutations.set.push((h.clone(), value));
                    }
                }
                if let Some(name) = &p.payload_in_metadata {
                    mutations
                        .filter_state
                        .push((name.clone(), serde_json::Value::Object(v.claims.clone()).to_string()));
                }
            }
            Method::Introspection => {
                method_names.push("introspection".to_string());
                let (Some(ic), Some(r)) = (&cfg.introspection, &id.introspected) else { continue };
                // The opaque token never goes upstream: a by-value JWT or the claims do.
                strip_credential(&id.found.source, &mut mutations, &mut path, req);
                match (&r.jwt, &ic.upstream_header) {
                    (Some(jwt), Some((name, prefix))) => {
                        mutations.remove.retain(|h| h != name);
                        mutations.set.push((name.clone(), format!("{prefix}{jwt}")));
                    }
                    _ => mutations.set.push((
                        ic.claims_header.clone(),
                        crate::b64::encode(serde_json::Value::Object(r.claims.clone()).to_string().as_bytes()),
                    )),
                }
                for (h, claim) in &ic.claim_to_headers {
                    if let Some(value) = jwt::claim(&r.claims, claim).and_then(|c| jwt::claim_header_value(c, ",")) {
                        mutations.set.push((h.clone(), value));
                    }
                }
            }
        }
    }
    if path != req.path {
        mutations.path = Some(path);
    }
    if let Some(c) = &client {
        if c.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            mutations.set.push((config::CLIENT_HEADER.into(), c.clone()));
        }
    }
    if !method_names.is_empty() {
        mutations.set.push((config::METHOD_HEADER.into(), method_names.join(",")));
    }
    Ok(Ok(Allowed { mutations, client }))
}

/// Removes every inbound header Portcullis owns.
pub(crate) fn base_mutations(cfg: &Config, req: &RequestView) -> Mutations {
    // Only headers the request actually carries: every removal is a host call.
    let mut remove: Vec<String> = Vec::new();
    for (name, _) in &req.headers {
        let owned = name.starts_with(config::OWNED_PREFIX) || cfg.owned_headers.iter().any(|h| h == name);
        if owned && !remove.contains(name) {
            remove.push(name.clone());
        }
    }
    Mutations { remove, ..Mutations::default() }
}

fn strip_credential(source: &Source, m: &mut Mutations, path: &mut String, req: &RequestView) {
    match source {
        Source::Header { name, .. } => {
            if !m.remove.contains(name) {
                m.remove.push(name.clone());
            }
        }
        Source::Param(name) => *path = request::remove_query_param(path, name),
        Source::Cookie(name) => {
            let joined: Vec<&str> = req.header_values("cookie").flatten().collect();
            m.remove.push("cookie".into());
            if let Some(rest) = request::remove_cookie(&joined.join("; "), name) {
                m.set.push(("cookie".into(), rest));
            }
        }
    }
}

fn extract_failure(e: ExtractError) -> MethodResult {
    MethodResult::Failed(match e {
        ExtractError::Multiple => Reason::MultipleCredentials,
        ExtractError::Malformed => Reason::MalformedRequest,
    })
}

fn check_api_key(cfg: &Config, req: &RequestView) -> MethodResult {
    let Some(ak) = &cfg.api_keys else { return MethodResult::Failed(Reason::Internal) };
    let found = match req.extract(&ak.sources) {
        Ok(Some(f)) => f,
        Ok(None) => return MethodResult::Absent,
        Err(e) => return extract_failure(e),
    };
    match apikey::lookup(ak, &found.value) {
        Ok(client) => MethodResult::Ok(Identity {
            method: Method::ApiKey,
            client_id: Some(client.client_id.clone()),
            scopes: client.scopes.clone(),
            found,
            verified: None,
            introspected: None,
        }),
        Err(r) => MethodResult::Failed(r),
    }
}

/// When several providers read the same source, a token belongs to the provider whose
/// issuer matches its (unverified) `iss`; providers without an issuer take any token.
fn belongs_to(cfg: &Config, i: usize, token: &str) -> bool {
    let p = &cfg.providers[i];
    let Some(want) = &p.issuer else { return true };
    let shares_source =
        cfg.providers.iter().enumerate().any(|(j, q)| j != i && q.sources.iter().any(|s| p.sources.contains(s)));
    if !shares_source {
        return true;
    }
    let iss = token
        .split('.')
        .nth(1)
        .and_then(crate::b64::decode)
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("iss").and_then(|i| i.as_str()).map(str::to_string));
    match iss {
        Some(iss) => &iss == want,
        // Unparseable: let the first provider sharing the source report it as malformed.
        None => cfg.providers.iter().position(|q| q.sources.iter().any(|s| p.sources.contains(s))) == Some(i),
    }
}

fn check_provider(ctx: &mut Ctx, req: &RequestView, i: usize, counters: &mut Vec<Counter>) -> MethodResult {
    let cfg = ctx.cfg;
    let p = &cfg.providers[i];
    let found = match req.extract(&p.sources) {
        Ok(Some(f)) => f,
        Ok(None) => return MethodResult::Absent,
        Err(e) => return extract_failure(e),
    };
    if cfg.providers.len() > 1 && !belongs_to(cfg, i, &found.value) {
        return MethodResult::Absent;
    }
    if let Some(ic) = &cfg.introspection {
        if ic.sources.contains(&found.source) && introspection::is_candidate(&ic.settings, &found.value) {
            return MethodResult::Absent;
        }
    }
    if found.value.len() > p.max_token_bytes {
        return MethodResult::Failed(Reason::TokenTooLarge);
    }
    let now_s = ctx.now_ms / 1000;
    let remote = matches!(p.keys, KeySource::Remote(_) | KeySource::Discovery(_));
    // The tick picks up sets other workers publish; a request reads shared data itself only
    // when it has no usable set or meets an unknown `kid` (both rare).
    if remote && matches!(ctx.state.keys.available(cfg, i, ctx.now_ms), Availability::Unavailable) {
        ctx.state.keys.sync(cfg, ctx.store, i);
    }
    let digest: [u8; 32] = Sha256::digest(found.value.as_bytes()).into();
    let mut synced = false;
    loop {
        let (set, version) = match ctx.state.keys.available(cfg, i, ctx.now_ms) {
            Availability::Ready(set, v) => (Rc::clone(set), v),
            Availability::Unavailable if p.hmac_secret.is_some() => (Rc::new(Default::default()), 0),
            Availability::Unavailable => return MethodResult::Failed(Reason::KeysUnavailable),
        };
        if let Some(hit) = ctx.state.cache.get(&digest) {
            if hit.provider == i && hit.key_version == version {
                let v = Rc::clone(&hit.verified);
                counters.push(Counter::JwtCacheHit);
                return match jwt::check_times(v.exp, v.nbf, v.iat, p, now_s) {
                    Ok(()) => ok_identity(i, found, v),
                    Err(r) => MethodResult::Failed(r),
                };
            }
        }
        counters.push(Counter::JwtCacheMiss);
        let allow_native = cfg.crypto == config::CryptoMode::Auto;
        return match jwt::verify(&found.value, p, &set, now_s, ctx.native, allow_native) {
            Ok((v, path)) => {
                counters.push(if path == Path::Native { Counter::CryptoNative } else { Counter::CryptoPure });
                let v = Rc::new(v);
                ctx.state.cache.put(digest, CacheEntry { provider: i, key_version: version, verified: Rc::clone(&v) });
                ok_identity(i, found, v)
            }
            Err(Reason::TokenUnknownKey) if remote => {
                // Another worker may have published a newer set since this worker's last
                // tick: use it before asking for a refresh.
                if !synced {
                    synced = true;
                    ctx.state.keys.sync(cfg, ctx.store, i);
                    if ctx.state.keys.providers.get(i).is_some_and(|st| st.version != version) {
                        continue;
                    }
                }
                MethodResult::NeedRefresh(i)
            }
            Err(r) => MethodResult::Failed(r),
        };
    }
}

fn check_introspection(
    ctx: &mut Ctx,
    req: &RequestView,
    progress: &Progress,
    counters: &mut Vec<Counter>,
) -> MethodResult {
    let cfg = ctx.cfg;
    let Some(ic) = &cfg.introspection else { return MethodResult::Failed(Reason::Internal) };
    let found = match req.extract(&ic.sources) {
        Ok(Some(f)) => f,
        Ok(None) => return MethodResult::Absent,
        Err(e) => return extract_failure(e),
    };
    if !introspection::is_candidate(&ic.settings, &found.value) {
        // A JWS (or a token without the configured prefix) is another method's business.
        return MethodResult::Absent;
    }
    if !introspection::is_well_formed(&ic.settings, &found.value) {
        return MethodResult::Failed(Reason::TokenMalformed);
    }
    let slots = ic.settings.cache_slots;
    let digest: [u8; 32] = Sha256::digest(found.value.as_bytes()).into();
    let local = match ctx.state.introspected.get(&digest) {
        Some((r, expires)) if *expires > ctx.now_ms => Some(Rc::clone(r)),
        _ => None,
    };
    let result = match (&progress.introspected, local) {
        (Some(r), _) => r.clone(),
        (None, Some(r)) => {
            counters.push(Counter::IntrospectionCacheHit);
            Ok(r)
        }
        (None, None) => match introspection::cache_get(ctx.store, slots, &found.value, ctx.now_ms) {
            Some(hit) => {
                counters.push(Counter::IntrospectionCacheHit);
                let hit = Rc::new(hit);
                ctx.state.introspected.put(digest, (Rc::clone(&hit), ctx.now_ms.saturating_add(hit.ttl_ms)));
                Ok(hit)
            }
            None => {
                let hold_ms = ic.settings.endpoint.timeout_ms + 500;
                if introspection::try_begin(ctx.store, slots, &found.value, ctx.now_ms, hold_ms) {
                    return MethodResult::Need(Need::Introspect(Box::new(introspection::request(
                        &ic.settings,
                        &found.value,
                    ))));
                }
                return MethodResult::Need(Need::Peer);
            }
        },
    };
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            if e.is_bad_client_credentials() {
                counters.push(Counter::IntrospectionBadClientCredentials);
            }
            return MethodResult::FailedRetry(Reason::IntrospectionUnavailable, e.retry_after_s());
        }
    };
    if !r.active {
        return MethodResult::Failed(Reason::TokenInactive);
    }
    MethodResult::Ok(Identity {
        method: Method::Introspection,
        client_id: r.client_id().or(r.subject()).map(str::to_string),
        scopes: r.scopes(),
        found,
        verified: None,
        introspected: Some(r),
    })
}

fn ok_identity(i: usize, found: Found, v: Rc<Verified>) -> MethodResult {
    let client_id = v.client_id.clone().or_else(|| v.claims.get("sub").and_then(|s| s.as_str()).map(str::to_string));
    MethodResult::Ok(Identity {
        method: Method::Provider(i),
        client_id,
        scopes: v.scopes.clone(),
        found,
        verified: Some(v),
        introspected: None,
    })
}

/// Applies the mode and renders the outcome.
fn finish(cfg: &Config, req: &RequestView, evaluated: Evaluated, mut counters: Vec<Counter>) -> Decision {
    match evaluated {
        Ok(a) => {
            counters.push(Counter::Allowed);
            let mut mutations = a.mutations;
            if cfg.mode == Mode::Shadow {
                mutations.set.push((config::DECISION_HEADER.into(), "allow".into()));
            }
            Decision {
                action: Action::Continue(mutations),
                reason: None,
                client: a.client,
                counters,
                events: vec![],
                errors: vec![],
            }
        }
        Err(rej) => match cfg.mode {
            Mode::Enforce => {
                counters.push(Counter::Denied(rej.reason));
                Decision {
                    action: Action::Reply(response::render(&rej, &cfg.realm)),
                    reason: Some(rej.reason),
                    client: None,
                    counters,
                    events: vec![],
                    errors: vec![],
                }
            }
            Mode::Shadow => {
                counters.push(Counter::ShadowDenied(rej.reason));
                // The request goes on untouched but for the owned headers: nothing was
                // verified, so no identity is asserted upstream.
                let mut m = base_mutations(cfg, req);
                m.set.push((config::DECISION_HEADER.into(), format!("deny; reason={}", rej.reason.code())));
                Decision {
                    action: Action::Continue(m),
                    reason: Some(rej.reason),
                    client: None,
                    counters,
                    events: vec![],
                    errors: vec![],
                }
            }
        },
    }
}

#[cfg(test)]
mod tests;
