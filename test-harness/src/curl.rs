//! A client over the `curl` command line, for the two things the plain-socket client of
//! [`crate::http`] cannot do:
//!
//! * **HTTP/2 over cleartext with prior knowledge** (h2c, RFC 9113 §3.3; Envoy's HTTP
//!   connection manager accepts it with its default `codec_type: AUTO`). Over HTTP/2 the
//!   method is a `:method` pseudo-header sent as given, so a lower-case `post` reaches the
//!   filters — Envoy's HTTP/1 codec refuses it before any filter runs.
//! * **A chosen source address** (`--interface`): on Linux every 127.0.0.0/8 address is local,
//!   so a test can be "another client" by connecting from 127.0.0.9.
//! * **TLS with a client certificate** (`https://` URLs, `--cacert`, `--cert`, `--key`): the
//!   server is verified against the given CA only, and the client presents a certificate when
//!   told to (see [`crate::pki`]).
//!
//! The request is sent exactly as given (`--path-as-is`, no redirects followed), bounded by
//! a timeout (`--max-time`, and the process is waited for no longer), and the answer is
//! parsed into the same [`Response`] as the socket client's. A missing `curl` is an error
//! naming it, never a skipped test.

use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::Response;

/// One request to send with `curl`.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    http2: bool,
    source: Option<Ipv4Addr>,
    timeout: Duration,
    ca: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl Request {
    /// `method url` over HTTP/1.1, from the default source address, with a 5 s timeout.
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: None,
            http2: false,
            source: None,
            timeout: Duration::from_secs(5),
            ca: None,
            client_cert: None,
        }
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends `body` (with its `Content-Length`).
    pub fn body(mut self, body: &[u8]) -> Request {
        self.body = Some(body.to_vec());
        self
    }

    /// HTTP/2 over cleartext, with prior knowledge (no `Upgrade` dance).
    pub fn h2c(mut self) -> Request {
        self.http2 = true;
        self
    }

    /// Connects from `source` (e.g. 127.0.0.9) instead of the system's choice.
    pub fn from(mut self, source: Ipv4Addr) -> Request {
        self.source = Some(source);
        self
    }

    /// Verifies an `https://` server against this CA certificate (PEM file) only.
    pub fn ca(mut self, ca_pem: &Path) -> Request {
        self.ca = Some(ca_pem.to_path_buf());
        self
    }

    /// Presents this client certificate (PEM file) with its private key (PEM file).
    pub fn client_cert(mut self, cert_pem: &Path, key_pem: &Path) -> Request {
        self.client_cert = Some((cert_pem.to_path_buf(), key_pem.to_path_buf()));
        self
    }

    /// The whole exchange's bound (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// Runs `curl` and parses its answer. `Err` if curl is missing, fails (connection
    /// refused, reset, timeout: its message is in the error) or prints no HTTP answer.
    pub fn send(&self) -> io::Result<Response> {
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--include", "--path-as-is", "--request", &self.method]);
        cmd.args(["--max-time", &format!("{:.3}", self.timeout.as_secs_f64())]);
        if self.http2 {
            cmd.arg("--http2-prior-knowledge");
        } else {
            cmd.arg("--http1.1");
        }
        if let Some(source) = self.source {
            cmd.args(["--interface", &source.to_string()]);
        }
        if let Some(ca) = &self.ca {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some((cert, key)) = &self.client_cert {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        for (name, value) in &self.headers {
            cmd.args(["--header", &format!("{name}: {value}")]);
        }
        if self.body.is_some() {
            cmd.args(["--data-binary", "@-"]);
        }
        cmd.arg(&self.url);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("cannot run curl: {e}")))?;
        let mut stdin = child.stdin.take().ok_or_else(|| io::Error::other("curl: no stdin"))?;
        stdin.write_all(self.body.as_deref().unwrap_or_default())?;
        drop(stdin);
        // curl honours --max-time; this bound only guards against curl itself hanging.
        let deadline = Instant::now() + self.timeout + Duration::from_secs(2);
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("curl did not finish: {self:?}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (mut out, mut err) = (Vec::new(), String::new());
        child.stdout.take().ok_or_else(|| io::Error::other("curl: no stdout"))?.read_to_end(&mut out)?;
        child.stderr.take().ok_or_else(|| io::Error::other("curl: no stderr"))?.read_to_string(&mut err)?;
        let status = child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!("curl {status}: {}", err.trim())));
        }
        parse(&out)
    }
}

/// Parses `curl --include` output: status line and headers (interim `1xx` blocks skipped),
/// an empty line, then the body (curl has already removed any chunked framing).
fn parse(out: &[u8]) -> io::Result<Response> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let mut rest = out;
    loop {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| invalid(format!("no header block in curl output: {:?}", String::from_utf8_lossy(out))))?;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .filter(|_| status_line.starts_with("HTTP/"))
            .ok_or_else(|| invalid(format!("bad status line from curl: {status_line:?}")))?;
        if (100..200).contains(&status) {
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Ok(Response { status, headers, body: rest.to_vec() });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::http::{Handler, Reply, ServerRequest, ServerResponse, StopSignal, TestServer};

    #[test]
    fn parses_http1_and_http2_answers() {
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\n\r\nbody\r\n\r\nmore")
            .unwrap();
        assert_eq!((r.status, r.headers_all("x-a"), r.text().as_str()), (201, vec!["1", "2"], "body\r\n\r\nmore"));
        let r = parse(b"HTTP/2 400 \r\ncontent-type: application/problem+json\r\n\r\n{}").unwrap();
        assert_eq!(
            (r.status, r.header("Content-Type"), r.text().as_str()),
            (400, Some("application/problem+json"), "{}")
        );
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn sends_method_body_headers_and_source_as_given() {
        let handler: Handler = Arc::new(|req: &ServerRequest, _: &StopSignal| {
            Reply::Respond(
                ServerResponse::new(200, "text/plain", req.body.clone())
                    .with_header("x-method", &req.method)
                    .with_header("x-target", &req.target)
                    .with_header("x-seen", req.header("x-test").unwrap_or_default()),
            )
        });
        let server = TestServer::start(0, handler).unwrap();
        let url = format!("http://127.0.0.1:{}/a/../b", server.port());
        let r = Request::new("post", &url).header("x-test", "1").body(b"a=1").from(Ipv4Addr::new(127, 0, 0, 9)).send();
        let r = r.expect("curl is installed and 127.0.0.9 is local");
        assert_eq!((r.status, r.text().as_str()), (200, "a=1"));
        assert_eq!(
            (r.header("x-method"), r.header("x-target"), r.header("x-seen")),
            (Some("post"), Some("/a/../b"), Some("1"))
        );
        drop(server);
        let e = Request::new("GET", &url).send().unwrap_err();
        assert!(e.to_string().contains("curl"), "{e}");
    }
}
