//! THE request path, sans-IO, and the only code that knows why a request waits:
//!
//! ```text
//! start(ctx, request)              -> Step
//! advance(ctx, pending, input)     -> Step
//! Step    = Done(Decision) | Dispatch(Outbound, Pending) | Park(Pending)
//!         | ReadBody { max, early, pending }
//! Pending = Auth(..) | Token(..)          (a route's check | the token endpoint)
//! Input   = Reply(&Reply) | Tick | Body(&[u8]) | BodyTooLarge
//! ```
//!
//! A [`Decision`] says what the host must do (continue with these header mutations, or send
//! this local reply) plus the counters to bump. The core never performs I/O: a request that
//! needs a callout (an unknown `kid`, an introspection, a global rate limit, an identity
//! backend) returns it as data in [`Step::Dispatch`]; the host sends it and calls [`advance`]
//! with the reply. Each [`Step`] variant's documentation is the host's complete instruction.
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
mod authorize;
mod mutations;
mod rules;
pub mod token;

use auth::{evaluate, Evaluated};
pub(crate) use mutations::base_mutations;

use std::rc::Rc;

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
    /// Verified tokens (the token text → who verified it), compared in full on a hit. Only
    /// tokens whose signature verified are inserted, so callers cannot choose the keys; an
    /// entry holds the token (at most the provider's `max_token_bytes`).
    pub cache: Lru<Rc<str>, CacheEntry>,
    /// Introspection results this worker used recently (SHA-256 of the token → result and
    /// its expiry in Unix ms), in front of the shared cache: a hit costs no host call. Keyed
    /// by the digest, not the token: inactive answers are cached too, so any caller can add
    /// entries, and a made-up opaque token can be up to `max_token_bytes` long.
    pub introspected: Lru<[u8; 32], (Rc<Introspected>, u64)>,
    /// Host-provided per-worker uniqueness (for token ids this worker issues).
    pub seed: u64,
    /// The proxy's random salt for hashes in events ([`crate::store::salt`]).
    pub salt: [u8; 16],
    /// Sampling of allowed requests: accumulated parts per million.
    pub sample_acc: u32,
    /// The revocation list in force on this worker, and its published version.
    pub revocation: Option<Rc<crate::events::revocation::List>>,
    pub revocation_version: u64,
    /// Blocks and revocations by trigger rules in force on this worker, and their version.
    pub actions: crate::events::rules::Actions,
    pub actions_version: u64,
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
            salt: [0; 16],
            sample_acc: 0,
            revocation: None,
            revocation_version: 0,
            actions: Default::default(),
            actions_version: 0,
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
    /// The downstream connection (client certificate, SNI), asked lazily.
    pub peer: &'a dyn crate::request::Peer,
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
    /// The methods that authenticated (as in `x-portcullis-auth`), for access logs; set on
    /// refusals that came after authentication.
    pub auth: Option<String>,
    /// Counters to increment.
    pub counters: Vec<Counter>,
    /// Events for the host to log and queue for sinks.
    pub events: Vec<crate::events::Event>,
    /// Operational problems for the host to log at error level (never request contents).
    pub errors: Vec<String>,
}

/// The filter-state key of [`Decision::log_record`]; Envoy exposes it as
/// `%FILTER_STATE(wasm.portcullis.decision:PLAIN)%`.
pub const DECISION_FILTER_STATE: &str = "portcullis.decision";

impl Decision {
    /// The decision for access logs, set in filter state only when the request was refused or
    /// would have been (shadow mode), so the allow path pays nothing: `deny; reason=<code>` or
    /// `shadow_deny; reason=<code>`, then `; client=<id>` when a client was identified and its
    /// id is plain (`[A-Za-z0-9._:@/-]`, at most 128 bytes: nothing a log line could be forged
    /// with), then `; auth=<methods>` when the refusal came after authentication (as in
    /// `x-portcullis-auth`: `jwt:corp,api_key`). Never a token, key or secret.
    pub fn log_record(&self) -> Option<String> {
        let reason = self.reason?;
        let verdict = match self.action {
            Action::Reply(_) => "deny",
            Action::Continue(_) => "shadow_deny",
        };
        let plain = |c: &&str| {
            !c.is_empty() && c.len() <= 128 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@/,-".contains(&b))
        };
        let mut out = format!("{verdict}; reason={}", reason.code());
        if let Some(c) = self.client.as_deref().filter(|c| plain(c) && !c.contains(',')) {
            out.push_str("; client=");
            out.push_str(c);
        }
        if let Some(a) = self.auth.as_deref().filter(plain) {
            out.push_str("; auth=");
            out.push_str(a);
        }
        Some(out)
    }
}

/// A request that waits: everything it needs to go on, owned by the host until then.
#[derive(Debug, Clone)]
pub enum Pending {
    /// A route's check (authentication, authorization, admission).
    Auth(Box<AuthPending>),
    /// The token endpoint's password-grant check.
    Token(Box<token::TokenPending>),
}

/// A route's check, paused.
#[derive(Debug, Clone)]
pub struct AuthPending {
    pub(crate) request: RequestView,
    pub(crate) wait: AuthWait,
    pub(crate) counters: Vec<Counter>,
    pub(crate) progress: Progress,
}

/// What a paused route check waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthWait {
    /// An early key-set refresh after an unknown `kid` (the fetch, to resume it).
    Keys(Fetch),
    /// A global rate-limit decision (gRPC `ShouldRateLimit`).
    Global,
    /// An introspection callout.
    Introspection,
    /// Another worker is introspecting the same token (parked).
    Peer,
    /// Another request or the tick is fetching a provider's first key set (parked).
    FirstKeys,
}

/// What the host feeds a pending request.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// The answer to the dispatched callout; `Reply::default()` (no status) when it could not
    /// be dispatched or failed. For gRPC: status `Some(200)` when the call succeeded, the
    /// response message as the body.
    Reply(&'a Reply),
    /// The tick, for a parked request.
    Tick,
    /// The whole request body (possibly empty).
    Body(&'a [u8]),
    /// The body grew beyond the `max` of [`Step::ReadBody`].
    BodyTooLarge,
}

/// A callout for the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// An HTTP call (key set, introspection, identity backend, token server).
    Http(Callout),
    /// A gRPC call to the rate limit service.
    Grpc(GlobalCall),
}

/// A gRPC call to the rate limit service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalCall {
    pub cluster: String,
    pub message: Vec<u8>,
    pub timeout_ms: u64,
}

/// What earlier callouts of this request established.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    may_refresh: bool,
    global: Option<ratelimit::global::Verdict>,
    introspected: Option<Result<Rc<Introspected>, IntrospectionError>>,
    peer_since_ms: Option<u64>,
    /// Since when this request waits for a provider's first key set (startup).
    keys_since_ms: Option<u64>,
    /// The first key set did not come in time (or its fetch failed): answer 503.
    keys_gave_up: bool,
    /// Since when this request waits for the first revocation list.
    revocation_since_ms: Option<u64>,
    /// The first revocation list did not come in time: `on_dependency_down` decides.
    revocation_gave_up: bool,
}

/// Why evaluation must pause.
enum Need {
    Refresh(usize),
    /// The provider's first key set (nothing fetched yet on this worker).
    FirstKeys(usize),
    /// The first revocation list (nothing published yet).
    FirstRevocation,
    Global(GlobalCall),
    Introspect(Box<Callout>),
    Peer,
}

/// One step of the pipeline: the host's complete instructions.
#[derive(Debug)]
#[must_use = "a step is an instruction the host must carry out"]
pub enum Step {
    /// Decided. Bump the counters; on `Continue`, apply the mutations (if any cannot be
    /// applied, refuse the request with 500) and let the request go on; on `Reply`, send it.
    Done(Decision),
    /// Send the callout, keep `Pending`, and call [`advance`] with [`Input::Reply`] when it
    /// answers — with an empty reply at once if it cannot be sent. Nothing else happens to the
    /// request meanwhile (its headers wait).
    Dispatch(Outbound, Pending),
    /// Keep `Pending` and call [`advance`] with [`Input::Tick`] on every tick until it
    /// decides (another worker is introspecting the same token; bounded by
    /// [`MAX_PEER_WAIT_MS`]).
    Park(Pending),
    /// Apply `early` to the request headers now (if any cannot be applied, refuse with 500).
    /// Then, when `hold`, keep the headers (answer the header callback with StopIteration: Envoy
    /// needs `allow_on_headers_stop_iteration: true`, else it withholds the body too); when not,
    /// let them go on. Buffer the body; at its end call [`advance`] with [`Input::Body`] (an
    /// empty body when the headers ended the stream), or with [`Input::BodyTooLarge`] as soon
    /// as it exceeds `max` bytes. A body that ends in trailers is refused by the host.
    ReadBody { max: usize, early: Mutations, hold: bool, pending: Pending },
}

/// How long a request waits for another worker's introspection before giving up (503).
pub const MAX_PEER_WAIT_MS: u64 = 5000;

/// What a successful credential method established.
#[derive(Debug, Clone)]
struct Identity {
    method: Method,
    client_id: Option<String>,
    /// For an API key: its client's index in `api_keys.clients`.
    api_client: Option<usize>,
    scopes: Vec<String>,
    /// The credential (none for a client certificate).
    found: Option<Found>,
    verified: Option<Rc<Verified>>,
    introspected: Option<Rc<Introspected>>,
}

enum MethodResult {
    Absent,
    /// A credential is present in this method's sources but is not this method's kind (a JWS
    /// for introspection, a token of another issuer): if no method takes it, it is refused.
    Declined,
    Ok(Identity),
    Failed(Reason),
    /// Failed for a reason with a specific `Retry-After` (dependency answers).
    FailedRetry(Reason, Option<u64>),
    NeedRefresh(usize),
    Need(Need),
}

/// Starts evaluating a request.
pub fn start(ctx: &mut Ctx, req: RequestView) -> Step {
    let step = start_inner(ctx, req);
    rules::after(ctx, step)
}

fn start_inner(ctx: &mut Ctx, mut req: RequestView) -> Step {
    // The one canonical view: everything below looks at the request in this shape only.
    if req.canonicalize().is_err() {
        let rej = Rejection::new(Reason::NonCanonicalRequest, Challenges::default());
        return conclude(ctx, &req, Err(rej), vec![Counter::Requests]);
    }
    // A caller a trigger rule blocked (by address) is refused before anything else.
    let any_action = ctx.cfg.rules.acts && !ctx.state.actions.is_empty();
    if let Some(secs) = any_action.then(|| rules::source_key(&req)).flatten().and_then(|k| {
        rules::blocked(ctx, crate::events::rules::Effect::Block, crate::events::rules::KeyType::Source, &k)
    }) {
        let mut rej = Rejection::new(Reason::Blocked, Challenges::default());
        rej.retry_after = Some(secs);
        return conclude(ctx, &req, Err(rej), vec![Counter::Requests]);
    }
    if ctx.cfg.bypass_cors_preflight && is_cors_preflight(&req) {
        // Browsers send preflights without credentials; the upstream answers them.
        let m = base_mutations(ctx.cfg, &req);
        let d = Decision {
            action: Action::Continue(m),
            reason: None,
            client: None,
            auth: None,
            counters: vec![Counter::Requests, Counter::Allowed],
            events: vec![],
            errors: vec![],
        };
        return Step::Done(d);
    }
    if let Some(s) = crate::flow::token::on_headers(ctx, &req) {
        return s;
    }
    step(ctx, req, Progress { may_refresh: true, ..Progress::default() }, vec![Counter::Requests])
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
fn is_cors_preflight(req: &RequestView) -> bool {
    req.method == "OPTIONS"
        && req.header_values("origin").next().is_some()
        && req.header_values("access-control-request-method").next().is_some()
}

/// Continues a pending request with what it waited for.
pub fn advance(ctx: &mut Ctx, pending: Pending, input: Input) -> Step {
    let step = advance_inner(ctx, pending, input);
    rules::after(ctx, step)
}

fn advance_inner(ctx: &mut Ctx, pending: Pending, input: Input) -> Step {
    match (pending, input) {
        (Pending::Token(p), input) => token::advance(ctx, *p, input),
        (Pending::Auth(p), Input::Tick) => poll(ctx, *p),
        (Pending::Auth(p), Input::Reply(reply)) => resume(ctx, *p, reply),
        (Pending::Auth(p), Input::Body(_) | Input::BodyTooLarge) => {
            // A route check never asks for a body: a host bug, refused rather than guessed.
            let rej = Rejection::new(Reason::Internal, Challenges::default());
            conclude(ctx, &p.request, Err(rej), p.counters)
        }
    }
}

/// A parked route check, on the tick.
fn poll(ctx: &mut Ctx, pending: AuthPending) -> Step {
    let AuthPending { request, mut counters, progress, .. } = pending;
    if progress.peer_since_ms.is_some_and(|t| ctx.now_ms.saturating_sub(t) > MAX_PEER_WAIT_MS) {
        counters.push(Counter::IntrospectionFailed);
        let mut rej = Rejection::new(Reason::IntrospectionUnavailable, Challenges { bearer: true, api_key: false });
        rej.retry_after = Some(response::DEFAULT_RETRY_AFTER);
        return conclude(ctx, &request, Err(rej), counters);
    }
    step(ctx, request, progress, counters)
}

/// A route check, with the reply to its callout.
fn resume(ctx: &mut Ctx, pending: AuthPending, reply: &Reply) -> Step {
    let AuthPending { request, wait, mut counters, mut progress } = pending;
    match wait {
        AuthWait::Keys(fetch) => {
            match ctx.state.keys.on_reply(ctx.cfg, ctx.store, &fetch, reply, ctx.now_ms) {
                Fetched::Next(next) => {
                    let out = Outbound::Http(next.callout.clone());
                    return dispatch(out, request, AuthWait::Keys(next), counters, progress);
                }
                Fetched::Published { .. } => {
                    ctx.state.cache.clear();
                    counters.push(Counter::JwksFetchOk);
                }
                Fetched::Failed(_) => {
                    counters.push(Counter::JwksFetchFailed);
                    progress.keys_gave_up = true;
                }
            }
            progress.may_refresh = false;
        }
        AuthWait::Global => {
            let verdict = match reply.status {
                Some(200) => ratelimit::global::parse(&reply.body),
                _ => ratelimit::global::Verdict::Failed,
            };
            if verdict == ratelimit::global::Verdict::Failed {
                counters.push(Counter::RateLimitGlobalFailed);
            }
            progress.global = Some(verdict);
        }
        AuthWait::Introspection => {
            progress.introspected = Some(on_introspection_reply(ctx, &request, reply, &mut counters));
        }
        AuthWait::Peer | AuthWait::FirstKeys => {}
    }
    step(ctx, request, progress, counters)
}

fn dispatch(out: Outbound, request: RequestView, wait: AuthWait, counters: Vec<Counter>, progress: Progress) -> Step {
    Step::Dispatch(out, Pending::Auth(Box::new(AuthPending { request, wait, counters, progress })))
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
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        ctx.state.introspected.put(digest, (Rc::clone(r), ctx.now_ms.saturating_add(r.ttl_ms)));
    }
    result
}

fn step(ctx: &mut Ctx, req: RequestView, mut progress: Progress, mut counters: Vec<Counter>) -> Step {
    // At most: one refresh, then one global call; each pass below ends or pauses.
    for _ in 0..3 {
        match evaluate(ctx, &req, &progress, &mut counters) {
            Ok(d) => return conclude(ctx, &req, d, counters),
            Err(Need::Refresh(provider)) => {
                if let Some(fetch) = ctx.state.keys.early_refresh(ctx.cfg, ctx.store, provider, ctx.now_ms) {
                    counters.push(Counter::JwksUnknownKidRefresh);
                    let out = Outbound::Http(fetch.callout.clone());
                    return dispatch(out, req, AuthWait::Keys(fetch), counters, progress);
                }
                progress.may_refresh = false;
            }
            Err(Need::Global(call)) => {
                return dispatch(Outbound::Grpc(call), req, AuthWait::Global, counters, progress)
            }
            Err(Need::Introspect(call)) => {
                return dispatch(Outbound::Http(*call), req, AuthWait::Introspection, counters, progress);
            }
            Err(Need::Peer) => {
                progress.peer_since_ms.get_or_insert(ctx.now_ms);
                let p = AuthPending { request: req, wait: AuthWait::Peer, counters, progress };
                return Step::Park(Pending::Auth(Box::new(p)));
            }
            Err(Need::FirstKeys(i)) => {
                // Startup: wait for the first key set (bounded by its fetch timeout) instead of
                // answering 503 to requests that beat the first fetch by a few milliseconds.
                let since = *progress.keys_since_ms.get_or_insert(ctx.now_ms);
                let waited = ctx.now_ms.saturating_sub(since);
                if waited <= ctx.state.keys.first_wait_ms(ctx.cfg, i) {
                    // Start a fetch only on first meeting the provider: one that ended without a
                    // set is not retried for this request (that would double its wait).
                    if waited == 0 {
                        if let Some(fetch) = ctx.state.keys.start_first(ctx.cfg, ctx.store, i, ctx.now_ms) {
                            let out = Outbound::Http(fetch.callout.clone());
                            return dispatch(out, req, AuthWait::Keys(fetch), counters, progress);
                        }
                    }
                    if ctx.state.keys.fetch_in_flight(ctx.cfg, ctx.store, i, ctx.now_ms) {
                        let p = AuthPending { request: req, wait: AuthWait::FirstKeys, counters, progress };
                        return Step::Park(Pending::Auth(Box::new(p)));
                    }
                }
                // Timed out, or the fetch ended without a set: 503 with Retry-After.
                progress.keys_gave_up = true;
            }
            Err(Need::FirstRevocation) => {
                // The root polls the list on its first tick; wait for it, bounded by the
                // endpoint's timeout (and a tick).
                let since = *progress.revocation_since_ms.get_or_insert(ctx.now_ms);
                let bound = ctx.cfg.revocation.as_ref().map_or(0, |r| r.endpoint.timeout_ms.saturating_add(500));
                if ctx.now_ms.saturating_sub(since) <= bound {
                    let p = AuthPending { request: req, wait: AuthWait::FirstKeys, counters, progress };
                    return Step::Park(Pending::Auth(Box::new(p)));
                }
                progress.revocation_gave_up = true;
            }
        }
    }
    let rej = Rejection::new(Reason::Internal, Challenges::default());
    conclude(ctx, &req, Err(rej), counters)
}

/// Applies the mode and renders the outcome.
/// Decides a route check: the decision, and its event when events are on.
fn conclude(ctx: &mut Ctx, req: &RequestView, evaluated: Evaluated, counters: Vec<Counter>) -> Step {
    let cfg = ctx.cfg;
    if !cfg.events.enabled() && cfg.rules.rules.is_empty() {
        return Step::Done(finish(cfg, req, evaluated, counters));
    }
    // A dependency that failed on this request's own callout (no allocation when none did).
    let down: Vec<crate::events::Event> = [
        (Counter::JwksFetchFailed, "jwks"),
        (Counter::IntrospectionFailed, "introspection"),
        (Counter::RateLimitGlobalFailed, "rate_limit_service"),
    ]
    .iter()
    .filter(|(c, _)| counters.contains(c))
    .map(|(_, dep)| dependency_down(dep, ctx.now_ms))
    .collect();
    // Allowed requests become events only when sampled (error diffusion: exactly the configured
    // fraction, no randomness); rules on `allowed` count them all. Decided before anything is
    // built, so an allowed request that becomes no event costs nothing more.
    let mut quiet = false;
    if evaluated.is_ok() {
        let st = &mut ctx.state;
        st.sample_acc = st.sample_acc.saturating_add(cfg.events.sample_allowed_ppm);
        if st.sample_acc < 1_000_000 {
            if !cfg.rules.on_allowed {
                let mut d = finish(cfg, req, evaluated, counters);
                d.events.extend(down);
                return Step::Done(d);
            }
            quiet = true;
        } else {
            st.sample_acc -= 1_000_000;
        }
    }
    let allowed = evaluated.as_ref().ok().map(|a| (a.client.clone(), a.subject.clone(), a.auth.clone()));
    let mut d = finish(cfg, req, evaluated, counters);
    d.events.extend(down);
    let kind = match (&allowed, d.reason) {
        (Some(_), _) => crate::events::Kind::Allowed,
        (None, Some(Reason::RateLimited)) => crate::events::Kind::RateLimited,
        (None, Some(Reason::Revoked)) => crate::events::Kind::RevokedUsed,
        (None, _) => crate::events::Kind::Denied,
    };
    let mut e = request_event(cfg, req, kind, ctx.now_ms);
    if let Some((client, subject, auth)) = allowed {
        e.client = client;
        e.subject = subject;
        e.auth = auth;
    } else {
        // Refused after authentication (scope, policy, rate limit): who it was.
        e.client = d.client.clone();
        e.auth = d.auth.clone();
    }
    if let Some(r) = d.reason {
        e.reason = Some(r.code());
    }
    e.status = Some(match &d.action {
        Action::Reply(r) => r.status,
        Action::Continue(_) => 200,
    });
    e.quiet = quiet;
    d.events.insert(0, e);
    Step::Done(d)
}

/// The remaining block (seconds) of a username a trigger rule blocked.
pub(crate) fn rules_blocked_username(ctx: &Ctx, username: &str) -> Option<u64> {
    use crate::events::rules::{Effect, KeyType};
    rules::blocked(ctx, Effect::Block, KeyType::Username, &username.to_lowercase())
}

/// A `dependency_down` event.
pub fn dependency_down(dependency: &str, now_ms: u64) -> crate::events::Event {
    let mut e = crate::events::Event::new(crate::events::Kind::DependencyDown, now_ms);
    e.extra.push(("dependency", serde_json::json!(dependency)));
    e
}

/// An event about this request: time, route, method, canonical path (no query), source,
/// request id.
pub(crate) fn request_event(
    cfg: &Config,
    req: &RequestView,
    kind: crate::events::Kind,
    now_ms: u64,
) -> crate::events::Event {
    let mut e = crate::events::Event::new(kind, now_ms);
    e.route = match policy::route(cfg, req) {
        policy::Matched::Route(i, r) => Some(r.name.clone().unwrap_or_else(|| i.to_string())),
        policy::Matched::Default(_) => None,
    };
    e.method = Some(req.method.clone());
    e.path = Some(req.path_only().to_string());
    e.source = req.source.get().map(|s| ratelimit::client_ip(s).to_string());
    e.request_id = req.header_values("x-request-id").next().flatten().map(str::to_string);
    if cfg.rules.on_api_key {
        e.api_key_id = api_key_id(cfg, req);
    }
    e
}

/// The presented API key's id (first 16 hex digits of its SHA-256), if one is presented.
pub(crate) fn api_key_id(cfg: &Config, req: &RequestView) -> Option<String> {
    use sha2::{Digest, Sha256};
    let ak = cfg.api_keys.as_ref()?;
    let found = req.extract(&ak.sources).ok().flatten()?;
    Some(Sha256::digest(found.value.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn finish(cfg: &Config, req: &RequestView, evaluated: Evaluated, mut counters: Vec<Counter>) -> Decision {
    // The matched route's own mode, when any route sets one (rollouts one route at a time).
    let mode = if cfg.route_modes {
        match policy::route(cfg, req) {
            policy::Matched::Route(_, r) => r.mode.unwrap_or(cfg.mode),
            policy::Matched::Default(_) => cfg.mode,
        }
    } else {
        cfg.mode
    };
    match evaluated {
        Ok(a) => {
            counters.push(Counter::Allowed);
            let mut mutations = a.mutations;
            if mode == Mode::Shadow {
                mutations.set.push((config::DECISION_HEADER.into(), "allow".into()));
            }
            Decision {
                action: Action::Continue(mutations),
                reason: None,
                client: a.client,
                auth: None,
                counters,
                events: vec![],
                errors: vec![],
            }
        }
        Err(rej) => match mode {
            Mode::Enforce => {
                counters.push(Counter::Denied(rej.reason));
                Decision {
                    action: Action::Reply(response::render(&rej, &cfg.realm)),
                    reason: Some(rej.reason),
                    client: rej.client,
                    auth: rej.auth,
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
                    client: rej.client,
                    auth: rej.auth,
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
#[cfg(test)]
mod tests_flows;
#[cfg(test)]
mod tests_policy;
