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
use crate::flow::{self, Ctx, Decision, Pending, Step, Waiting};
use crate::ratelimit;
use crate::reason::Reason;
use crate::request::RequestView;
use crate::response::{self, Challenges, Rejection};
use crate::stats::Counter;

/// What a request is waiting for, by context id.
#[derive(Default)]
pub(crate) struct Requests {
    /// Requests whose callout is in flight: (callout token, pending step).
    pub in_flight: RefCell<HashMap<u32, (u32, Pending)>>,
    /// Requests parked until another worker's introspection lands (polled on the tick).
    pub parked: RefCell<HashMap<u32, Pending>>,
    /// Requests buffering their body.
    pub reading: RefCell<HashMap<u32, Pending>>,
    /// Headers to add to the response (rate-limit headers).
    pub response_headers: RefCell<HashMap<u32, Vec<(String, String)>>>,
}

impl Requests {
    fn forget(&self, id: u32) {
        self.in_flight.borrow_mut().remove(&id);
        self.parked.borrow_mut().remove(&id);
        self.reading.borrow_mut().remove(&id);
        self.response_headers.borrow_mut().remove(&id);
    }
}

fn clock() -> u64 {
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
        now_ms: clock(),
    };
    f(&mut ctx)
}

/// Starts the callout a paused request waits for.
fn dispatch_waiting(w: &Waiting) -> Result<u32, String> {
    match w {
        Waiting::Keys(f) => dispatch(&f.callout),
        Waiting::Introspection(c) | Waiting::Backend(c) => dispatch(c),
        Waiting::Global(g) => hostcalls::dispatch_grpc_call(
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
        Waiting::Peer { .. } | Waiting::Body { .. } => Err("nothing to dispatch".into()),
    }
}

/// Drives `step` for the request `id` (the current effective context). Returns the action
/// for the current callback: `Continue` when the request may go on, `Pause` otherwise.
pub(crate) fn drive(shared: &Rc<Shared>, id: u32, step: Step) -> Action {
    match step {
        Step::Done(d) => apply(shared, id, d),
        Step::Callout(p) => match dispatch_waiting(p.waiting()) {
            Ok(token) => {
                shared.requests.in_flight.borrow_mut().insert(id, (token, p));
                Action::Pause
            }
            Err(e) => {
                log(LogLevel::Error, &e);
                let step = with_ctx(shared, |ctx| flow::resume(ctx, p, &Reply::default()));
                drive(shared, id, step)
            }
        },
        Step::Park(p) => {
            shared.requests.parked.borrow_mut().insert(id, p);
            Action::Pause
        }
        Step::ReadBody(p) => {
            if let Waiting::Body { strip, .. } = p.waiting() {
                for name in strip {
                    abi::remove_header(MapType::HttpRequestHeaders, name);
                }
            }
            shared.requests.reading.borrow_mut().insert(id, p);
            // proxy-wasm hosts turn a paused header callback into "stop all iteration",
            // which also withholds the body from this filter: let the headers go on and
            // hold the body instead (on_http_request_body pauses until the end of stream).
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
    for e in &d.events {
        log(LogLevel::Info, e);
    }
    match d.action {
        flow::Action::Continue(m) => {
            let mut refused = false;
            for name in &m.remove {
                refused |= !abi::remove_header(MapType::HttpRequestHeaders, name);
            }
            for (name, value) in &m.set {
                refused |= !abi::set_header(MapType::HttpRequestHeaders, name, value);
            }
            if let Some(p) = &m.path {
                refused |= !abi::set_header(MapType::HttpRequestHeaders, ":path", p);
            }
            if refused {
                // The headers already left (this must not happen): never forward a request
                // whose identity headers could not be set or stripped.
                log(LogLevel::Error, "request headers could not be changed; refusing the request");
                let resp =
                    response::render(&Rejection::new(Reason::Internal, Challenges::default()), &shared.cfg.realm);
                let headers: Vec<(&str, &str)> = resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let _ = hostcalls::send_http_response(u32::from(resp.status), headers, Some(&resp.body));
                return Action::Pause;
            }
            for (name, json) in &m.filter_state {
                let _ = hostcalls::set_property(vec![name.as_str()], Some(json.as_bytes()));
            }
            if !m.response_headers.is_empty() {
                shared.requests.response_headers.borrow_mut().insert(id, m.response_headers);
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
            let headers: Vec<(&str, &str)> = resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let _ = hostcalls::send_http_response(u32::from(resp.status), headers, Some(&resp.body));
            Action::Pause
        }
    }
}

/// Wakes parked requests (called from the root's tick): each is polled on its own
/// effective context and resumed or answered if it can be decided now.
pub(crate) fn poll_parked(shared: &Rc<Shared>) {
    let ids: Vec<u32> = shared.requests.parked.borrow().keys().copied().collect();
    for id in ids {
        let Some(p) = shared.requests.parked.borrow_mut().remove(&id) else { continue };
        if hostcalls::set_effective_context(id).is_err() {
            continue; // the request is gone
        }
        let step = with_ctx(shared, |ctx| flow::poll(ctx, p));
        if let Action::Continue = drive(shared, id, step) {
            let _ = hostcalls::resume_http_request();
        }
    }
}

pub(crate) struct Http {
    id: u32,
    shared: Option<Rc<Shared>>,
}

impl Http {
    pub fn new(id: u32, shared: Option<Rc<Shared>>) -> Self {
        Http { id, shared }
    }

    fn collect(&self, cfg: &crate::config::Config) -> RequestView {
        let mut view = RequestView::default();
        if cfg.rate_limit.is_some() || cfg.password_grant.is_some() {
            // Needed to key anonymous clients and lockouts: one host call, only then.
            view.source = self.get_property(vec!["source", "address"]).and_then(|b| String::from_utf8(b).ok());
        }
        let pairs = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
        view.headers.reserve(pairs.len());
        for (name, value) in pairs {
            let value = String::from_utf8(value).ok();
            match name.as_str() {
                ":method" => view.method = value.clone().unwrap_or_default(),
                ":path" => view.path = value.clone().unwrap_or_default(),
                _ => {}
            }
            // Envoy's header names are already lower case: copy only when one is not.
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) { name.to_ascii_lowercase() } else { name };
            view.headers.push((name, value));
        }
        view
    }

    fn on_reply(&mut self, token_id: u32, reply: &Reply) {
        let Some(shared) = self.shared.clone() else { return };
        let pending = {
            let mut in_flight = shared.requests.in_flight.borrow_mut();
            match in_flight.get(&self.id) {
                Some((token, _)) if *token == token_id => in_flight.remove(&self.id).map(|(_, p)| p),
                _ => None,
            }
        };
        let Some(pending) = pending else { return };
        let step = with_ctx(&shared, |ctx| flow::resume(ctx, pending, reply));
        if let Action::Continue = drive(&shared, self.id, step) {
            self.resume_http_request();
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
        let body = if status_code == 0 {
            hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size).ok().flatten().unwrap_or_default()
        } else {
            Vec::new()
        };
        let reply = Reply { status: (status_code == 0).then_some(200), headers: Vec::new(), body };
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
            let resp = response::render(&Rejection::new(Reason::Internal, Challenges::default()), "portcullis");
            let headers: Vec<(&str, &str)> = resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.send_http_response(500, headers, Some(&resp.body));
            return Action::Pause;
        };
        let view = self.collect(&shared.cfg);
        let step = with_ctx(&shared, |ctx| flow::start(ctx, view));
        match step {
            // A request without a body: decide now with an empty one.
            Step::ReadBody(p) if end_of_stream => {
                let step = with_ctx(&shared, |ctx| flow::with_body(ctx, p, &[]));
                drive(&shared, self.id, step)
            }
            step => drive(&shared, self.id, step),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let max = match shared.requests.reading.borrow().get(&self.id).map(|p| p.waiting().clone()) {
            Some(Waiting::Body { max, .. }) => max,
            _ => return Action::Continue,
        };
        if body_size > max {
            shared.requests.reading.borrow_mut().remove(&self.id);
            let resp = crate::password::payload_too_large();
            let headers: Vec<(&str, &str)> = resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.send_http_response(u32::from(resp.status), headers, Some(&resp.body));
            return Action::Pause;
        }
        if !end_of_stream {
            return Action::Pause; // keep buffering
        }
        let Some(p) = shared.requests.reading.borrow_mut().remove(&self.id) else { return Action::Continue };
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let step = with_ctx(&shared, |ctx| flow::with_body(ctx, p, &body));
        drive(&shared, self.id, step)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(shared) = &self.shared {
            if let Some(headers) = shared.requests.response_headers.borrow_mut().remove(&self.id) {
                for (name, value) in headers {
                    abi::set_header(MapType::HttpResponseHeaders, &name, &value);
                }
            }
        }
        Action::Continue
    }
}
