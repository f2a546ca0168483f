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

mod auth;
mod mutations;
pub mod token;

use auth::{evaluate, Evaluated};
pub(crate) use mutations::base_mutations;

use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::apikey;
use crate::cache::Lru;
use crate::callout::Callout;
use crate::callout::Reply;
use crate::config::{self, Config, DependencyDown, KeySource, Method, Mode, Requires, Source};
use crate::crypto::{NativeVerifier, Path};
use crate::introspection::{self, Introspected, IntrospectionError};
use crate::jwt::keys::{Availability, Fetch, Fetched, Keys};
use crate::jwt::{self, Verified};
use crate::policy;
use crate::ratelimit;
use crate::reason::Reason;
use crate::request::{self, ExtractError, Found, RequestView};
use crate::response::{self, Challenges, HttpResponse, Rejection};
use crate::stats::Counter;
use crate::store::{Scoped, SharedStore};

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
    pub signer: &'a dyn crate::password::NativeSigner,
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
    pub(crate) grant: Option<Box<crate::flow::token::GrantState>>,
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
    /// headers), so the host applies `early` (owned headers removed, canonical `:path`) to
    /// the headers first — also when the request has no body at all.
    Body { max: usize, early: Mutations },
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
    /// [`crate::password::payload_too_large`]) and call [`with_body`].
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
pub fn start(ctx: &mut Ctx, mut req: RequestView) -> Step {
    // The one canonical view: everything below looks at the request in this shape only.
    if req.canonicalize().is_err() {
        let rej = Rejection::new(Reason::NonCanonicalRequest, Challenges::default());
        return Step::Done(finish(ctx.cfg, &req, Err(rej), vec![Counter::Requests]));
    }
    if let Some(s) = crate::flow::token::on_headers(ctx, &req) {
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
    crate::flow::token::with_body(ctx, pending, body)
}

/// Resumes a request with the reply to its callout (for gRPC: status `Some(200)` when the
/// call succeeded, with the response message as the body).
pub fn resume(ctx: &mut Ctx, pending: Pending, reply: &Reply) -> Step {
    if pending.grant.is_some() {
        return crate::flow::token::on_reply(ctx, pending, reply);
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
            introspection::cache_put(&Scoped::new(ctx.store, &ic.settings.store_ns), slots, &token, r, ctx.now_ms);
        }
        Err(_) => counters.push(Counter::IntrospectionFailed),
    }
    introspection::end(&Scoped::new(ctx.store, &ic.settings.store_ns), slots, &token);
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
