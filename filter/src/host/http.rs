//! One HTTP context per request: collect the request view, drive the core's steps, apply the
//! decision. A context can die while its callout is in flight; the reply is then simply
//! never delivered to it, and the key-set fetch it started still completes for others.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};

use super::root::Shared;
use super::store::HostStore;
use super::{dispatch, log, now_ms, read_reply};
use crate::callout::Reply;
use crate::decision::{self, Ctx, Decision, Pending, Step, Waiting};
use crate::ratelimit;
use crate::reason::Reason;
use crate::request::RequestView;
use crate::response::{self, Challenges, Rejection};
use std::time::Duration;

pub(crate) struct Http {
    shared: Option<Rc<Shared>>,
    pending: Option<(u32, Pending)>,
    /// Headers to add to the response (rate-limit headers), set when the request was allowed.
    response_headers: Vec<(String, String)>,
}

impl Http {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        Http { shared, pending: None, response_headers: Vec::new() }
    }

    fn collect(&self, cfg: &crate::config::Config) -> RequestView {
        let mut view = RequestView::default();
        if cfg.rate_limit.is_some() {
            // Only needed to key anonymous clients: one host call, only when limits exist.
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
            view.headers.push((name.to_ascii_lowercase(), value));
        }
        view
    }

    /// Runs one step; returns the action for the current callback.
    fn drive(&mut self, shared: &Rc<Shared>, step: Step) -> Action {
        match step {
            Step::Done(d) => self.apply(shared, d),
            Step::Callout(p) => match dispatch_waiting(p.waiting()) {
                Ok(token) => {
                    self.pending = Some((token, p));
                    Action::Pause
                }
                Err(e) => {
                    log(LogLevel::Error, &e);
                    let step = {
                        let mut st = shared.state.borrow_mut();
                        let mut ctx = Ctx {
                            cfg: &shared.cfg,
                            state: &mut st,
                            store: &HostStore,
                            native: &shared.native,
                            now_ms: now_ms(self.get_current_time()),
                        };
                        decision::resume(&mut ctx, p, &Reply::default())
                    };
                    self.drive(shared, step)
                }
            },
        }
    }

    fn apply(&mut self, shared: &Rc<Shared>, d: Decision) -> Action {
        shared.bump(&d.counters);
        match d.action {
            decision::Action::Continue(m) => {
                for name in &m.remove {
                    self.set_http_request_header(name, None);
                }
                for (name, value) in &m.set {
                    self.set_http_request_header(name, Some(value));
                }
                if let Some(p) = &m.path {
                    self.set_http_request_header(":path", Some(p));
                }
                for (name, json) in &m.filter_state {
                    self.set_property(vec![name.as_str()], Some(json.as_bytes()));
                }
                self.response_headers = m.response_headers;
                if let Some(r) = d.reason {
                    log(LogLevel::Debug, &format!("shadow: would deny, reason={}", r.code()));
                }
                Action::Continue
            }
            decision::Action::Reply(resp) => {
                if let Some(r) = d.reason {
                    log(LogLevel::Debug, &format!("deny reason={}", r.code()));
                }
                let headers: Vec<(&str, &str)> = resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.send_http_response(u32::from(resp.status), headers, Some(&resp.body));
                Action::Pause
            }
        }
    }
}

/// Starts the callout a paused request waits for.
fn dispatch_waiting(w: &Waiting) -> Result<u32, String> {
    match w {
        Waiting::Keys(f) => dispatch(&f.callout),
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
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let body = if status_code == 0 {
            hostcalls::get_buffer(proxy_wasm::types::BufferType::GrpcReceiveBuffer, 0, response_size)
                .ok()
                .flatten()
                .unwrap_or_default()
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

impl Http {
    fn on_reply(&mut self, token_id: u32, reply: &Reply) {
        let Some(shared) = self.shared.clone() else { return };
        let Some((token, pending)) = self.pending.take() else { return };
        if token != token_id {
            self.pending = Some((token, pending));
            return;
        }
        let step = {
            let mut st = shared.state.borrow_mut();
            let mut ctx = Ctx {
                cfg: &shared.cfg,
                state: &mut st,
                store: &HostStore,
                native: &shared.native,
                now_ms: now_ms(self.get_current_time()),
            };
            decision::resume(&mut ctx, pending, reply)
        };
        if let Action::Continue = self.drive(&shared, step) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            let resp = response::render(&Rejection::new(Reason::Internal, Challenges::default()), "portcullis");
            let headers: Vec<(&str, &str)> = resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.send_http_response(500, headers, Some(&resp.body));
            return Action::Pause;
        };
        let view = self.collect(&shared.cfg);
        let step = {
            let mut st = shared.state.borrow_mut();
            let mut ctx = Ctx {
                cfg: &shared.cfg,
                state: &mut st,
                store: &HostStore,
                native: &shared.native,
                now_ms: now_ms(self.get_current_time()),
            };
            decision::start(&mut ctx, view)
        };
        self.drive(&shared, step)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            self.set_http_response_header(&name, Some(&value));
        }
        Action::Continue
    }
}
