//! One HTTP context per request: collect the request view, drive the core's steps, apply the
//! decision.
//!
//! The step driver works on the *current effective context* through host calls, so the
//! root context can also drive a request it wakes from its tick (a request parked while
//! another worker introspects the same token): it sets the effective context to the
//! request's id and calls [`drive`]. Per-request state that must outlive a callback (the
//! pending step, response headers to add) lives in [`Requests`], keyed by context id, and is
//! removed when the context is dropped. A context can die while its callout is in flight; the
//! reply is then never delivered, and nothing leaks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use super::abi;
use super::root::Shared;
use super::store::HostStore;
use super::{dispatch, log, now_ms, read_reply};
use crate::callout::Reply;
use crate::flow::{self, Ctx, Decision, Input, Outbound, Pending, Step};
use crate::ratelimit;
use crate::reason::Reason;
use crate::request::RequestView;
use crate::response::{self, Challenges, Rejection};
use crate::stats::Counter;

/// Where one request stands, while it must outlive a callback.
pub(crate) enum Wait {
    /// A callout is in flight: its token, and the pending step to resume with the reply.
    Callout(u32, Pending),
    /// Parked until another worker's introspection lands (polled on the tick).
    Parked(Pending),
    /// Buffering the request body, at most `max` bytes.
    Body(usize, Pending),
}

/// Per-request state, one entry per live request.
#[derive(Default)]
pub(crate) struct Slot {
    pub wait: Option<Wait>,
    /// Headers to add to the response (rate-limit headers).
    pub response_headers: Vec<(String, String)>,
}

/// The ONE map of per-request state (context id → slot), plus which request each callout
/// token belongs to: a callout dispatched while the root context drives a woken request is
/// answered on the root context, which hands the reply over through this index.
#[derive(Default)]
pub(crate) struct Requests {
    pub slots: RefCell<HashMap<u32, Slot>>,
    pub tokens: RefCell<HashMap<u32, u32>>,
}

impl Requests {
    fn forget(&self, id: u32) {
        if let Some(Slot { wait: Some(Wait::Callout(token, _)), .. }) = self.slots.borrow_mut().remove(&id) {
            self.tokens.borrow_mut().remove(&token);
        }
    }

    fn set_wait(&self, id: u32, wait: Wait) {
        if let Wait::Callout(token, _) = &wait {
            self.tokens.borrow_mut().insert(*token, id);
        }
        self.slots.borrow_mut().entry(id).or_default().wait = Some(wait);
    }

    /// Takes the pending step of request `id` if it is in state `pick`.
    fn take(&self, id: u32, pick: impl Fn(&Wait) -> bool) -> Option<Wait> {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(&id)?;
        if slot.wait.as_ref().is_some_and(pick) {
            slot.wait.take()
        } else {
            None
        }
    }

    /// Ids of parked requests.
    pub fn parked(&self) -> Vec<u32> {
        self.slots.borrow().iter().filter(|(_, s)| matches!(s.wait, Some(Wait::Parked(_)))).map(|(id, _)| *id).collect()
    }
}

/// Reads a gRPC call's answer as a [`Reply`] (status `Some(200)` when the call succeeded).
pub(crate) fn grpc_reply(status_code: u32, response_size: usize) -> Reply {
    let body = if status_code == 0 {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size).ok().flatten().unwrap_or_default()
    } else {
        Vec::new()
    };
    Reply { status: (status_code == 0).then_some(200), headers: Vec::new(), body }
}

/// Sends a local reply on the current effective context.
fn send(resp: &crate::response::HttpResponse) {
    if !abi::send_response(resp.status, &resp.headers, &resp.body) {
        log(LogLevel::Warn, "the host refused a local reply (the stream is probably gone)");
    }
}

pub(crate) fn clock() -> u64 {
    hostcalls::get_current_time().map(now_ms).unwrap_or(0)
}

/// Runs a core function with a fresh [`Ctx`].
pub(crate) fn with_ctx<T>(shared: &Shared, f: impl FnOnce(&mut Ctx) -> T) -> T {
    let mut st = shared.state.borrow_mut();
    let mut ctx = Ctx {
        cfg: &shared.cfg,
        state: &mut st,
        store: &HostStore,
        native: &shared.native,
        signer: &shared.signer,
        peer: &super::peer::HostPeer,
        now_ms: clock(),
    };
    f(&mut ctx)
}

/// Sends a callout; its token on success.
fn send_callout(out: &Outbound) -> Result<u32, String> {
    match out {
        Outbound::Http(c) => dispatch(c),
        Outbound::Grpc(g) => hostcalls::dispatch_grpc_call(
            &g.cluster,
            ratelimit::global::SERVICE,
            ratelimit::global::METHOD,
            vec![],
            Some(&g.message),
            Duration::from_millis(g.timeout_ms),
        )
        .map_err(|s| {
            format!(
                "gRPC call to rate limit cluster {:?} could not start ({s:?}): is it defined, with HTTP/2?",
                g.cluster
            )
        }),
    }
}

/// Applies header mutations to the current request; false when the host refused one.
fn mutate(m: &flow::Mutations) -> bool {
    let mut ok = true;
    for name in &m.remove {
        ok &= abi::remove_header(MapType::HttpRequestHeaders, name);
    }
    for (name, value) in &m.set {
        ok &= abi::set_header(MapType::HttpRequestHeaders, name, value);
    }
    if let Some(p) = &m.path {
        ok &= abi::set_header(MapType::HttpRequestHeaders, ":path", p);
    }
    ok
}

/// Refuses the request with 500: its headers could not be changed as the decision requires.
fn refuse_internal(shared: &Shared) -> Action {
    log(LogLevel::Error, "request headers could not be changed; refusing the request");
    send(&response::render(&Rejection::new(Reason::Internal, Challenges::default()), &shared.cfg.realm));
    Action::Pause
}

/// Drives `step` for the request `id` (the current effective context). Returns the action
/// for the current callback: `Continue` when the request may go on, `Pause` otherwise.
/// `end_of_stream` is true when the request has no body to wait for.
pub(crate) fn drive(shared: &Rc<Shared>, id: u32, step: Step, end_of_stream: bool) -> Action {
    match step {
        Step::Done(d) => apply(shared, id, d),
        Step::Dispatch(out, p) => match send_callout(&out) {
            Ok(token) => {
                shared.requests.set_wait(id, Wait::Callout(token, p));
                Action::Pause
            }
            Err(e) => {
                log(LogLevel::Error, &e);
                let step = with_ctx(shared, |ctx| flow::advance(ctx, p, Input::Reply(&Reply::default())));
                drive(shared, id, step, end_of_stream)
            }
        },
        Step::Park(p) => {
            shared.requests.set_wait(id, Wait::Parked(p));
            Action::Pause
        }
        Step::ReadBody { max, early, hold, pending } => {
            // The headers go on before the body is read: owned headers and a non-canonical
            // `:path` are dealt with now, with or without a body to follow.
            if !mutate(&early) {
                return refuse_internal(shared);
            }
            if end_of_stream {
                let step = with_ctx(shared, |ctx| flow::advance(ctx, pending, Input::Body(&[])));
                return drive(shared, id, step, true);
            }
            shared.requests.set_wait(id, Wait::Body(max, pending));
            if hold {
                // Held until the decision (allow_on_headers_stop_iteration lets the body in).
                return Action::Pause;
            }
            // Without allow_on_headers_stop_iteration, proxy-wasm hosts turn a paused header
            // callback into "stop all iteration", which also withholds the body from this
            // filter: let the headers go on and hold the body instead (on_http_request_body
            // pauses until the end of stream).
            Action::Continue
        }
    }
}

/// Applies a decision with host calls on the current effective context.
fn apply(shared: &Rc<Shared>, id: u32, d: Decision) -> Action {
    shared.bump(&d.counters);
    if d.counters.contains(&Counter::IntrospectionBadClientCredentials) {
        log(
            LogLevel::Error,
            "the introspection endpoint refused our client credentials: check introspection.client_id and client_secret",
        );
    }
    for e in &d.errors {
        log(LogLevel::Error, e);
    }
    shared.record_events(&d.events);
    if let Some(record) = d.log_record() {
        let _ = abi::set_property(flow::DECISION_FILTER_STATE, record.as_bytes());
    }
    match d.action {
        flow::Action::Continue(m) => {
            if !mutate(&m) {
                // The headers already left (this must not happen): never forward a request
                // whose identity headers could not be set or stripped.
                return refuse_internal(shared);
            }
            for (name, json) in &m.filter_state {
                let _ = abi::set_property(name, json.as_bytes());
            }
            if !m.response_headers.is_empty() {
                shared.requests.slots.borrow_mut().entry(id).or_default().response_headers = m.response_headers;
            }
            if let Some(r) = d.reason {
                log(LogLevel::Debug, &format!("shadow: would deny, reason={}", r.code()));
            }
            Action::Continue
        }
        flow::Action::Reply(resp) => {
            if let Some(r) = d.reason {
                log(LogLevel::Debug, &format!("deny reason={}", r.code()));
            }
            send(&resp);
            Action::Pause
        }
    }
}

/// Wakes parked requests: each is polled on its own effective context and resumed or
/// answered if it can be decided now. Call it only from the root context (its tick, or a
/// callout the root received): a woken request may dispatch a callout, and the SDK sends the
/// reply to the context that was active when it was dispatched — a request context that may
/// be gone by then would lose it.
pub(crate) fn poll_parked(shared: &Rc<Shared>) {
    for id in shared.requests.parked() {
        let Some(Wait::Parked(p)) = shared.requests.take(id, |w| matches!(w, Wait::Parked(_))) else { continue };
        if hostcalls::set_effective_context(id).is_err() {
            continue; // the request is gone
        }
        let step = with_ctx(shared, |ctx| flow::advance(ctx, p, Input::Tick));
        if let Action::Continue = drive(shared, id, step, false) {
            let _ = hostcalls::resume_http_request();
        }
    }
}

/// Hands a callout's reply to the request that waits for it, whichever context the host
/// delivered it on (the request's own, or the root's when the root dispatched it while
/// driving a woken request). Returns false when no request waits for `token`.
pub(crate) fn deliver(shared: &Rc<Shared>, token: u32, reply: &Reply) -> bool {
    let Some(id) = shared.requests.tokens.borrow_mut().remove(&token) else { return false };
    let pending = match shared.requests.take(id, |w| matches!(w, Wait::Callout(t, _) if *t == token)) {
        Some(Wait::Callout(_, p)) => p,
        _ => return true, // the request is gone or moved on
    };
    if hostcalls::set_effective_context(id).is_err() {
        return true;
    }
    let step = with_ctx(shared, |ctx| flow::advance(ctx, pending, Input::Reply(reply)));
    if let Action::Continue = drive(shared, id, step, false) {
        let _ = hostcalls::resume_http_request();
    }
    true
}

/// The current request's downstream address (`source.address`): a host property lookup.
fn peer_address() -> Option<String> {
    hostcalls::get_property(vec!["source", "address"]).ok().flatten().and_then(|b| String::from_utf8(b).ok())
}

pub(crate) struct Http {
    id: u32,
    shared: Option<Rc<Shared>>,
}

impl Http {
    pub fn new(id: u32, shared: Option<Rc<Shared>>) -> Self {
        Http { id, shared }
    }

    /// The request's view, or `None` when the host's header map could not be read (the
    /// request is then refused: owned headers could not even be seen to be stripped).
    fn collect(&self) -> Option<RequestView> {
        // The address is read on first use only (anonymous clients, lockouts, source rules,
        // `source.ip` conditions, events): no configuration flag has to predict who needs it.
        let mut view = RequestView { source: crate::request::PeerAddress::lazy(peer_address), ..Default::default() };
        // One host call and one buffer for every header (no allocation per header).
        let wire = abi::header_pairs(MapType::HttpRequestHeaders)?;
        view.headers = if wire.is_empty() { Default::default() } else { crate::request::Headers::from_wire(&wire)? };
        for (name, value) in view.headers.iter() {
            match name {
                ":method" => view.method = value.unwrap_or_default().to_string(),
                ":path" => view.path = value.unwrap_or_default().to_string(),
                _ => {}
            }
        }
        Some(view)
    }

    fn on_reply(&mut self, token_id: u32, reply: &Reply) {
        if let Some(shared) = self.shared.clone() {
            deliver(&shared, token_id, reply);
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.requests.forget(self.id);
        }
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let reply = grpc_reply(status_code, response_size);
        self.on_reply(token_id, &reply);
    }

    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let reply = read_reply(body_size);
        self.on_reply(token_id, &reply);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            send(&response::render(&Rejection::new(Reason::Internal, Challenges::default()), "portcullis"));
            return Action::Pause;
        };
        let Some(view) = self.collect() else {
            log(LogLevel::Error, "the request's header map could not be read; refusing the request");
            send(&response::render(&Rejection::new(Reason::Internal, Challenges::default()), &shared.cfg.realm));
            return Action::Pause;
        };
        let step = with_ctx(&shared, |ctx| flow::start(ctx, view));
        drive(&shared, self.id, step, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let max = match shared.requests.slots.borrow().get(&self.id).and_then(|s| s.wait.as_ref()) {
            Some(Wait::Body(max, _)) => *max,
            _ => return Action::Continue,
        };
        if body_size <= max && !end_of_stream {
            return Action::Pause; // keep buffering
        }
        let Some(Wait::Body(_, p)) = shared.requests.take(self.id, |w| matches!(w, Wait::Body(..))) else {
            return Action::Continue;
        };
        let step = if body_size > max {
            with_ctx(&shared, |ctx| flow::advance(ctx, p, Input::BodyTooLarge))
        } else {
            let body =
                hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size).ok().flatten().unwrap_or_default();
            with_ctx(&shared, |ctx| flow::advance(ctx, p, Input::Body(&body)))
        };
        drive(&shared, self.id, step, false)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A token request that ends in trailers never reaches the end of its body in the
        // body callback: refuse it rather than let the token server read what we did not.
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        if shared.requests.take(self.id, |w| matches!(w, Wait::Body(..))).is_some() {
            shared.bump(&[crate::stats::Counter::GrantInvalidRequest]);
            send(&crate::password::invalid_request());
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(shared) = &self.shared {
            let headers = shared
                .requests
                .slots
                .borrow_mut()
                .get_mut(&self.id)
                .map(|s| std::mem::take(&mut s.response_headers))
                .unwrap_or_default();
            for (name, value) in headers {
                abi::set_header(MapType::HttpResponseHeaders, &name, &value);
            }
        }
        Action::Continue
    }
}
