//! An upstream that answers every request `200` with a JSON description of what it
//! received, and logs it, so tests can see exactly what Envoy (and the filter) forwarded.
//!
//! The answer body is
//! `{"method": "...", "path": "/full/path?query", "headers": {"name": "value", ...},
//! "body": "..."}`: header names are lowercased, repeated headers are joined with `", "`,
//! and the body is decoded as UTF-8 (lossily).

use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use crate::http::{Handler, Reply, ServerRequest, ServerResponse, StopSignal, TestServer};

/// The echo upstream; stops when dropped.
pub struct EchoUpstream {
    /// The bound port on 127.0.0.1.
    pub port: u16,
    log: Arc<Mutex<Vec<Value>>>,
    _server: TestServer,
}

impl EchoUpstream {
    /// Starts on a free port.
    pub fn start() -> EchoUpstream {
        Self::start_on(0)
    }

    /// Starts on `port` (0 for a free one). Panics if the port cannot be bound.
    pub fn start_on(port: u16) -> EchoUpstream {
        let log: Arc<Mutex<Vec<Value>>> = Arc::default();
        let handler: Handler = {
            let log = log.clone();
            Arc::new(move |request: &ServerRequest, _stop: &StopSignal| {
                let echo = describe(request);
                lock(&log).push(echo.clone());
                Reply::Respond(ServerResponse::json(200, &echo))
            })
        };
        let server = TestServer::start(port, handler)
            .unwrap_or_else(|e| panic!("echo upstream: cannot bind 127.0.0.1:{port}: {e}"));
        EchoUpstream { port: server.port(), log, _server: server }
    }

    /// Base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received so far, oldest first (same JSON as the answers).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.log).clone()
    }

    /// Number of requests received so far.
    pub fn count(&self) -> usize {
        lock(&self.log).len()
    }

    /// Forgets the logged requests.
    pub fn clear(&self) {
        lock(&self.log).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The JSON description of a request.
fn describe(request: &ServerRequest) -> Value {
    let mut headers = Map::new();
    for (name, value) in &request.headers {
        match headers.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    json!({
        "method": request.method,
        "path": request.target,
        "headers": headers,
        "body": String::from_utf8_lossy(&request.body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;

    #[test]
    fn echoes_and_logs_requests() {
        let upstream = EchoUpstream::start();
        let url = format!("{}/orders/7?expand=items&x=%20", upstream.url());
        let r = http::post(&url, &[("X-Tag", "a"), ("x-tag", "b"), ("Content-Type", "text/plain")], "héllo".as_bytes())
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let echo = r.json();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/orders/7?expand=items&x=%20");
        assert_eq!(echo["headers"]["x-tag"], "a, b");
        assert_eq!(echo["headers"]["content-type"], "text/plain");
        assert_eq!(echo["headers"]["host"], format!("127.0.0.1:{}", upstream.port));
        assert_eq!(echo["body"], "héllo");

        http::get(&upstream.url(), &[]).unwrap();
        assert_eq!(upstream.count(), 2);
        let log = upstream.requests();
        assert_eq!(log[0], echo);
        assert_eq!(log[1]["method"], "GET");
        assert_eq!(log[1]["path"], "/");
        assert_eq!(log[1]["body"], "");
        upstream.clear();
        assert_eq!(upstream.count(), 0);
    }

    #[test]
    fn start_on_a_given_port() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let upstream = EchoUpstream::start_on(port);
        assert_eq!(upstream.port, port);
        let r = http::get(&format!("http://127.0.0.1:{port}/x"), &[]).unwrap();
        assert_eq!(r.json()["path"], "/x");
    }
}
