//! The password-grant flow (SPEC C5) as steps of the sans-IO pipeline:
//!
//! ```text
//! POST <token_path>  ──▶ ReadBody ──▶ with_body: parse form (strict)
//!                                       ├─ grant_type ≠ password → pass through untouched
//!                                       ├─ lockout (user, address) → 429 Retry-After
//!                                       └─ Callout(backend 0)  (newest registered_at first)
//!                                  on_reply: classify → next backend | accepted | rejected | unavailable
//!   accepted  → forward: identity + extraInfo headers to the token server
//!             → issue:   Portcullis signs a JWT → RFC 6749 §5.1 JSON
//!   rejected  → 400 {"error":"invalid_grant"}, failure counted (lockout)
//!   unavailable (no accept, ≥1 backend failed) → 503 temporarily_unavailable
//! GET <jwks_path> (issue mode) → Portcullis's public JWKS
//! ```
//!
//! The token path and the JWKS path never require a credential. The password lives only in
//! the buffered body and the pending state of this one request; it is never logged, counted,
//! put in an event, or echoed. Shadow mode does not apply here: these are the token
//! endpoint's own answers.

use sha2::{Digest, Sha256};

use crate::callout::Reply;
use crate::config::GrantMode;
use crate::crypto::Path;
use crate::events::{Event, Kind};
use crate::flow::{self, Action, Ctx, Decision, Input, Outbound, Pending, Step};
use crate::password::lockout::{self, Recorded, Status};
use crate::password::{self, Chain, ChainStep, GrantError, PasswordRequest};
use crate::request::RequestView;
use crate::response::{self, HttpResponse};
use crate::stats::Counter;
use crate::store::Scoped;

/// A token request in flight.
#[derive(Debug, Clone)]
pub struct TokenPending {
    request: RequestView,
    counters: Vec<Counter>,
    stage: Stage,
    /// Events decided before the last callout (a login accepted before the relay).
    events: Vec<Event>,
}

/// Where a token request stands.
#[derive(Debug, Clone)]
enum Stage {
    /// Its body is being read.
    Body { content_type: String },
    /// The identity backends are being asked, newest first.
    Backends { body: Vec<u8>, content_type: String, login: PasswordRequest, chain: Chain },
    /// Accepted; the token server's answer is awaited (forward mode).
    Relay,
}

fn done(action: Action, counters: Vec<Counter>, events: Vec<Event>, errors: Vec<String>) -> Step {
    Step::Done(Decision { action, reason: None, client: None, auth: None, counters, events, errors })
}

fn reply(resp: HttpResponse, counter: Counter) -> Step {
    done(Action::Reply(resp), vec![Counter::Requests, counter], vec![], vec![])
}

fn header<'a>(req: &'a RequestView, name: &'a str) -> Option<&'a str> {
    req.header_values(name).next().flatten()
}

/// OAuth parameters that must never travel in a token request's query string (RFC 6749 §3.2:
/// the token endpoint takes them in the body, where the identity check reads them).
const QUERY_FORBIDDEN: [&str; 6] = ["grant_type", "username", "password", "client_secret", "refresh_token", "code"];

/// True when the canonical `path` is the token endpoint: compared case-insensitively and with
/// or without one trailing `/`, because token servers commonly route those variants to the
/// same handler — every variant goes through the check.
fn is_token_path(path: &str, token_path: &str) -> bool {
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let token_path = token_path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(token_path);
    path.eq_ignore_ascii_case(token_path)
}

/// True when the query string carries an OAuth parameter that belongs in the body (names
/// compared after strict percent-decoding; an undecodable name counts as forbidden).
fn query_has_oauth_params(query: Option<&str>) -> bool {
    let Some(q) = query else { return false };
    q.split('&').filter(|kv| !kv.is_empty()).any(|kv| {
        let name = kv.split_once('=').map_or(kv, |(k, _)| k);
        match crate::request::percent_decode(name) {
            Some(n) => QUERY_FORBIDDEN.iter().any(|f| n.eq_ignore_ascii_case(f)),
            None => true,
        }
    })
}

/// Handles the token and JWKS paths; `None` for every other request.
///
/// Nothing reaches the token server that the check did not see: on the token path every
/// method but `POST` (and a CORS `OPTIONS` preflight) is refused, OAuth parameters in the
/// query string are refused, a `POST` must be a form, and its body is always read — an empty
/// body, or one that ends in trailers, included (the host refuses trailers).
pub fn on_headers(ctx: &mut Ctx, req: &RequestView) -> Option<Step> {
    let pg = ctx.cfg.password_grant.as_ref()?;
    let path = req.path_only();
    if let GrantMode::Issue { issuer, jwks_path } = &pg.mode {
        if path == jwks_path && (req.method == "GET" || req.method == "HEAD") {
            return Some(reply(password::jwks_response(&issuer.public_jwks()), Counter::Allowed));
        }
    }
    if !is_token_path(path, &pg.token_path) {
        return None;
    }
    if query_has_oauth_params(req.query()) {
        return Some(reply(password::invalid_request(), Counter::GrantInvalidRequest));
    }
    match req.method.as_str() {
        "POST" => {}
        "OPTIONS" => {
            // A CORS preflight carries no credentials; it goes on with owned headers removed.
            let m = flow::base_mutations(ctx.cfg, req);
            return Some(done(Action::Continue(m), vec![Counter::Requests, Counter::GrantPassThrough], vec![], vec![]));
        }
        _ => return Some(reply(password::invalid_request(), Counter::GrantInvalidRequest)),
    }
    let content_type = header(req, "content-type").unwrap_or_default().to_string();
    if !password::is_form_content_type(&content_type) {
        // A token request must be a form (RFC 6749 §4.3.2); anything else could be read as a
        // password grant by a lenient token server without our check.
        return Some(reply(password::invalid_request(), Counter::GrantInvalidRequest));
    }
    let pending = TokenPending {
        request: req.clone(),
        counters: vec![Counter::Requests],
        stage: Stage::Body { content_type },
        events: Vec::new(),
    };
    let hold = matches!(pg.mode, GrantMode::Forward { relay: None, .. });
    Some(Step::ReadBody {
        max: pg.max_body_bytes,
        early: flow::base_mutations(ctx.cfg, req),
        hold,
        pending: Pending::Token(Box::new(pending)),
    })
}

/// Continues a token request with what it waited for.
pub(super) fn advance(ctx: &mut Ctx, p: TokenPending, input: Input) -> Step {
    let TokenPending { request, counters, stage, events } = p;
    match (stage, input) {
        (Stage::Body { content_type }, Input::Body(body)) => with_body(ctx, request, content_type, body),
        (Stage::Body { .. }, Input::BodyTooLarge) => reply(password::payload_too_large(), Counter::GrantInvalidRequest),
        (Stage::Backends { body, content_type, login, mut chain }, Input::Reply(r)) => {
            let next = chain.on_answer(password::classify(r));
            next_step(ctx, request, Backends { body, content_type, login, chain }, next)
        }
        (Stage::Relay, Input::Reply(r)) => relay(ctx, r, counters, events),
        // An input this stage never asks for: a host bug, refused rather than guessed.
        _ => reply(password::temporarily_unavailable(response::DEFAULT_RETRY_AFTER), Counter::GrantUnavailable),
    }
}

/// The backend stage's data, while the chain is being walked.
struct Backends {
    body: Vec<u8>,
    content_type: String,
    login: PasswordRequest,
    chain: Chain,
}

/// Continues with the buffered body.
fn with_body(ctx: &mut Ctx, request: RequestView, content_type: String, body: &[u8]) -> Step {
    let Some(pg) = ctx.cfg.password_grant.as_ref() else {
        return reply(password::temporarily_unavailable(response::DEFAULT_RETRY_AFTER), Counter::GrantUnavailable);
    };
    if body.len() > pg.max_body_bytes {
        return reply(password::payload_too_large(), Counter::GrantInvalidRequest);
    }
    let login = match password::password_request(body) {
        Ok(r) => r,
        Err(GrantError::NotPasswordGrant) => {
            if let GrantMode::Forward { relay: Some(endpoint), .. } = &pg.mode {
                // Relay mode answers every token request itself (so the token path can be a
                // direct_response route and the token server sees only what Portcullis sends).
                return relay_step(request, endpoint, body, &content_type, vec![], Counter::GrantPassThrough, vec![]);
            }
            // The early mutations (owned headers, canonical path) went on with the headers.
            let m = flow::Mutations::default();
            return done(Action::Continue(m), vec![Counter::Requests, Counter::GrantPassThrough], vec![], vec![]);
        }
        Err(GrantError::InvalidRequest(_)) => return reply(password::invalid_request(), Counter::GrantInvalidRequest),
    };
    // A username a trigger rule blocked.
    if let Some(secs) = flow::rules_blocked_username(ctx, &login.username) {
        return reply(password::locked_out(secs), Counter::GrantLockedOut);
    }
    if let Some(policy) = &pg.lockout {
        for subject in subjects(&login, &request) {
            let status =
                lockout::check(&lockout_table(ctx, pg, &subject), pg.lockout_slots, &subject, policy, ctx.now_ms);
            // A full table (a flood of other subjects) never blocks a subject that has no
            // failures on record: that would let random usernames lock out innocent users.
            if let Status::Blocked { retry_after_ms } = status {
                return reply(password::locked_out(retry_after_ms.div_ceil(1000).max(1)), Counter::GrantLockedOut);
            }
        }
    }
    let chain = Chain::new(pg.backends.clone());
    let first = chain.start();
    next_step(ctx, request, Backends { body: body.to_vec(), content_type, login, chain }, first)
}

/// Walks the backend chain one step: ask the next backend, or decide.
fn next_step(ctx: &mut Ctx, req: RequestView, b: Backends, next: ChainStep) -> Step {
    let Some(pg) = ctx.cfg.password_grant.as_ref() else {
        return reply(password::temporarily_unavailable(response::DEFAULT_RETRY_AFTER), Counter::GrantUnavailable);
    };
    let Backends { body, content_type, login, chain } = b;
    let request = &login;
    let failure_logs: Vec<String> = chain
        .failures()
        .iter()
        .map(|(name, why)| format!("identity backend {name:?} failed: {}", why.code()))
        .collect();
    match next {
        ChainStep::Ask(_) => match chain.next_callout(&body, &content_type) {
            Some(callout) => {
                let stage = Stage::Backends { body, content_type, login, chain };
                let p = TokenPending { request: req, counters: vec![Counter::Requests], stage, events: Vec::new() };
                Step::Dispatch(Outbound::Http(callout), Pending::Token(Box::new(p)))
            }
            None => reply(password::temporarily_unavailable(response::DEFAULT_RETRY_AFTER), Counter::GrantUnavailable),
        },
        ChainStep::Unavailable => {
            let events = if ctx.cfg.events.enabled() || !ctx.cfg.rules.rules.is_empty() {
                vec![flow::dependency_down("identity_backend", ctx.now_ms)]
            } else {
                vec![]
            };
            done(
                Action::Reply(password::temporarily_unavailable(response::DEFAULT_RETRY_AFTER)),
                vec![Counter::Requests, Counter::GrantUnavailable],
                events,
                failure_logs,
            )
        }
        ChainStep::Rejected => {
            let mut counters = vec![Counter::Requests, Counter::GrantRejected];
            let mut events = Vec::new();
            if let Some(policy) = &pg.lockout {
                for subject in subjects(request, &req) {
                    if let Recorded::Blocked { retry_after_ms } = lockout::record_failure(
                        &lockout_table(ctx, pg, &subject),
                        pg.lockout_slots,
                        &subject,
                        policy,
                        ctx.now_ms,
                    ) {
                        counters.push(Counter::GrantLockoutEngaged);
                        events.push(lockout_event(&ctx.state.salt, &subject, retry_after_ms, ctx.now_ms));
                    }
                }
            }
            events.extend(login_event(ctx, &req, Kind::LoginFailed, &request.username, None));
            done(Action::Reply(password::invalid_grant()), counters, events, failure_logs)
        }
        ChainStep::Accepted { backend, extra_info } => {
            let accepted: Vec<Event> =
                login_event(ctx, &req, Kind::LoginSucceeded, &request.username, Some(&backend)).into_iter().collect();
            if let Some(policy) = &pg.lockout {
                lockout::record_success(
                    &Scoped::new(ctx.store, &pg.lockout_ns.users),
                    pg.lockout_slots,
                    &lockout::user_subject(&request.username),
                    policy,
                    ctx.now_ms,
                );
            }
            match &pg.mode {
                GrantMode::Forward { identity_header, extra_info_header, relay } => {
                    let identity =
                        password::forward_headers(identity_header, extra_info_header, &backend, extra_info.as_ref());
                    match relay {
                        // hold_headers: the original request, held until now, goes on with the
                        // identity headers — the token server sees exactly one request.
                        None => done(
                            Action::Continue(flow::Mutations { set: identity, ..flow::Mutations::default() }),
                            vec![Counter::Requests, Counter::GrantAccepted],
                            accepted,
                            failure_logs,
                        ),
                        // The headers went on before the body was read, so identity headers
                        // cannot be added to that request: Portcullis sends the token request
                        // itself and relays the answer (pair with a direct_response route).
                        Some(endpoint) => {
                            relay_step(req, endpoint, &body, &content_type, identity, Counter::GrantAccepted, accepted)
                        }
                    }
                }
                GrantMode::Issue { issuer, .. } => {
                    let st = &mut ctx.state;
                    st.issued += 1;
                    let seed = format!("{}:{}:{}:{}", st.seed, st.issued, ctx.now_ms, request.username);
                    let jti = password::jti(Sha256::digest(seed.as_bytes()).as_slice());
                    let claims =
                        issuer.claims(&request.username, &backend, extra_info.as_ref(), ctx.now_ms / 1000, &jti);
                    match issuer.sign(&claims, ctx.signer) {
                        Ok((token, path)) => {
                            let via = if path == Path::Native {
                                Counter::GrantIssuedNative
                            } else {
                                Counter::GrantIssuedPure
                            };
                            done(
                                Action::Reply(password::token_response(&token, issuer.lifetime_s)),
                                vec![Counter::Requests, Counter::GrantAccepted, via],
                                accepted,
                                failure_logs,
                            )
                        }
                        Err(e) => done(
                            Action::Reply(password::temporarily_unavailable(response::DEFAULT_RETRY_AFTER)),
                            vec![Counter::Requests, Counter::GrantUnavailable],
                            vec![],
                            vec![format!("password grant: could not sign the token: {e:?}")],
                        ),
                    }
                }
            }
        }
    }
}

/// Sends the token request to the token server (with `extra` headers) and waits to relay its
/// answer.
fn relay_step(
    req: RequestView,
    endpoint: &password::Backend,
    body: &[u8],
    content_type: &str,
    extra: Vec<(String, String)>,
    counter: Counter,
    events: Vec<Event>,
) -> Step {
    let mut callout = password::backend_request(endpoint, body, content_type);
    callout.headers.retain(|(k, _)| k != "accept");
    for name in RELAYED_REQUEST_HEADERS {
        if let Some(v) = req.header_values(name).next().flatten() {
            callout.headers.push((name.to_string(), v.to_string()));
        }
    }
    callout.headers.extend(extra);
    let p = TokenPending { request: req, counters: vec![Counter::Requests, counter], stage: Stage::Relay, events };
    Step::Dispatch(Outbound::Http(callout), Pending::Token(Box::new(p)))
}

/// Request headers the token server gets from the original request (client authentication,
/// content negotiation, tracing); everything else stays behind.
const RELAYED_REQUEST_HEADERS: [&str; 4] = ["authorization", "accept", "user-agent", "x-request-id"];

/// Response headers relayed from the token server.
const RELAYED_RESPONSE_HEADERS: [&str; 4] = ["content-type", "cache-control", "pragma", "www-authenticate"];

/// The token server's answer, relayed to the client; 503 when it did not answer.
fn relay(ctx: &Ctx, r: &Reply, mut counters: Vec<Counter>, mut events: Vec<Event>) -> Step {
    let Some(status) = r.status else {
        counters.retain(|c| *c != Counter::GrantAccepted);
        counters.push(Counter::GrantUnavailable);
        if ctx.cfg.events.enabled() || !ctx.cfg.rules.rules.is_empty() {
            events.push(flow::dependency_down("token_server", ctx.now_ms));
        }
        return done(
            Action::Reply(password::temporarily_unavailable(response::DEFAULT_RETRY_AFTER)),
            counters,
            events,
            vec!["password grant: the token server did not answer".into()],
        );
    };
    let headers = r
        .headers
        .iter()
        .filter(|(k, _)| RELAYED_RESPONSE_HEADERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    done(Action::Reply(HttpResponse { status, headers, body: r.body.clone() }), counters, events, vec![])
}

/// The lockout table of a subject: usernames and addresses each have their own, so a flood of
/// one kind cannot fill the other's.
fn lockout_table<'a>(ctx: &Ctx<'a>, pg: &'a crate::config::PasswordGrant, subject: &str) -> Scoped<'a> {
    let ns = if subject.starts_with("addr:") { &pg.lockout_ns.addresses } else { &pg.lockout_ns.users };
    Scoped::new(ctx.store, ns)
}

/// Lockout subjects: the username, and the source address when known.
fn subjects(request: &PasswordRequest, req: &RequestView) -> Vec<String> {
    let mut out = vec![lockout::user_subject(&request.username)];
    if let Some(src) = req.source.get() {
        out.push(lockout::addr_subject(src));
    }
    out
}

/// The lockout event: which kind of subject, a short salted hash (never the username or
/// address; the per-proxy random salt keeps a dictionary of usernames from reversing it), and
/// the block length.
fn lockout_event(salt: &[u8; 16], subject: &str, retry_after_ms: u64, now_ms: u64) -> Event {
    let kind = subject.split(':').next().unwrap_or("subject");
    let digest = Sha256::new().chain_update(salt).chain_update(subject.as_bytes()).finalize();
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut e = Event::new(Kind::LockedOut, now_ms);
    e.extra = vec![
        ("subject_kind", serde_json::json!(kind)),
        ("subject_hash", serde_json::json!(hash)),
        ("blocked_for_s", serde_json::json!(retry_after_ms.div_ceil(1000))),
    ];
    e
}

/// A login event (when events are on): the username lower-cased, the accepting backend.
fn login_event(ctx: &Ctx, req: &RequestView, kind: Kind, username: &str, backend: Option<&str>) -> Option<Event> {
    if !ctx.cfg.events.enabled() && ctx.cfg.rules.rules.is_empty() {
        return None;
    }
    let mut e = flow::request_event(ctx.cfg, req, kind, ctx.now_ms);
    e.username = Some(username.to_lowercase());
    if let Some(b) = backend {
        e.extra.push(("backend", serde_json::json!(b)));
    }
    Some(e)
}
