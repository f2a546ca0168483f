//! Minimal HTTP/1.1 plumbing for tests, over plain `std::net` sockets.
//!
//! * A client: [`request`], [`get`], [`post`] and [`request_raw`] open one connection per
//!   request (`Connection: close`), and read the answer whether it is framed by
//!   `Content-Length`, `Transfer-Encoding: chunked` (Envoy uses it) or the end of the
//!   connection.
//! * A small server, [`TestServer`], shared by the stand-in identity provider and the echo
//!   upstream. It is hand-rolled rather than built on `tiny_http` because fault injection
//!   needs to *really* close a keep-alive connection without answering, which `tiny_http`
//!   cannot do (it keeps reading the next request on the socket). Each connection is served
//!   on its own thread, so a stalled answer never blocks other requests, and dropping the
//!   server shuts every socket down and joins every thread.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Read (and write) timeout of the client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on a request or response head (start line plus headers).
const MAX_HEAD: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// An HTTP response as received by the client.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields in received order; names are lowercased.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in received order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// Body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body parsed as JSON. Panics, quoting the status and body, if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("response body is not JSON ({e}); status {}, body: {:?}", self.status, self.text())
        })
    }
}

/// Sends one request to `url` (`http://host:port/path?query`) and reads the answer.
///
/// Adds `Host` and `Connection: close` unless given in `headers`, and `Content-Length`
/// when there is a body (unless `Content-Length` or `Transfer-Encoding` is given).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> io::Result<Response> {
    request_with_timeout(method, url, headers, body, CLIENT_TIMEOUT)
}

/// [`request`] with its own read and write timeout (a test that must fail rather than hang
/// on a request that is never answered). The method and the path are sent exactly as given:
/// nothing is normalised (`/a/../b`, `//b`, `%2F` and lower-case methods reach the peer as-is).
pub fn request_with_timeout(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Response> {
    let (authority, path) = split_url(url)?;
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));

    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: {authority}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    if let Some(body) = body {
        if !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
    }
    head.push_str("\r\n");

    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.unwrap_or_default());
    exchange(authority, &raw, method.eq_ignore_ascii_case("HEAD"), timeout)
}

/// `GET url`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    request("GET", url, headers, None)
}

/// `POST url` with `body`.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Response> {
    request("POST", url, headers, Some(body))
}

/// Writes `raw` bytes as-is to `addr` (`127.0.0.1:port`, an `http://` prefix is tolerated)
/// and reads one response: for malformed-request tests.
pub fn request_raw(addr: &str, raw: &[u8]) -> io::Result<Response> {
    let authority = addr.strip_prefix("http://").unwrap_or(addr);
    let authority = authority.split('/').next().unwrap_or(authority);
    exchange(authority, raw, false, CLIENT_TIMEOUT)
}

/// `Authorization` header value for HTTP Basic authentication.
pub fn basic_auth(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// Encodes pairs as an `application/x-www-form-urlencoded` body.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
}

/// Decodes an `application/x-www-form-urlencoded` body (`+` is a space, `%XX` a byte;
/// malformed escapes are kept literally).
pub fn form_decode(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `http://authority/path?query` into (`authority`, `/path?query`).
fn split_url(url: &str) -> io::Result<(&str, String)> {
    let rest =
        url.strip_prefix("http://").ok_or_else(|| invalid_input(format!("only http:// URLs are supported: {url}")))?;
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(invalid_input(format!("no host in URL: {url}")));
    }
    let target = if target.starts_with('/') { target.to_string() } else { format!("/{target}") };
    Ok((authority, target))
}

fn connect(authority: &str) -> io::Result<TcpStream> {
    let mut last = invalid_input(format!("no address for {authority}"));
    for addr in authority.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn exchange(authority: &str, raw: &[u8], head_request: bool, timeout: Duration) -> io::Result<Response> {
    let mut stream = connect(authority)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    stream.write_all(raw)?;
    stream.flush()?;
    read_response(&mut BufReader::new(stream), head_request)
}

fn read_response<R: BufRead>(reader: &mut R, head_request: bool) -> io::Result<Response> {
    loop {
        let lines = read_head(reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"))?;
        let status_line = &lines[0];
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| invalid_data(format!("bad status line: {status_line:?}")))?;
        let headers = parse_headers(&lines[1..])?;
        // Interim answers (100 Continue, ...) precede the real one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let body = if head_request || status == 204 || status == 304 || status < 200 {
            Vec::new()
        } else {
            read_body(reader, &headers, true)?
        };
        return Ok(Response { status, headers, body });
    }
}

// ---------------------------------------------------------------------------------------
// Shared message parsing
// ---------------------------------------------------------------------------------------

fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn invalid_input(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Reads one CRLF- (or LF-) terminated line, without the terminator. `None` at a clean EOF.
fn read_line<R: BufRead>(reader: &mut R, budget: &mut usize) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader.by_ref().take(*budget as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(invalid_data("message head too large"));
    }
    *budget -= n;
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map(Some).map_err(|_| invalid_data("non-UTF-8 bytes in message head"))
}

/// Reads a start line and header lines up to the empty line. Leading empty lines are
/// skipped. `None` if the peer closed before sending anything.
fn read_head<R: BufRead>(reader: &mut R) -> io::Result<Option<Vec<String>>> {
    let mut budget = MAX_HEAD;
    let mut lines = Vec::new();
    loop {
        let line = match read_line(reader, &mut budget)? {
            Some(line) => line,
            None if lines.is_empty() => return Ok(None),
            None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-head")),
        };
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn parse_headers(lines: &[String]) -> io::Result<Vec<(String, String)>> {
    lines
        .iter()
        .map(|line| {
            let (name, value) =
                line.split_once(':').ok_or_else(|| invalid_data(format!("bad header line: {line:?}")))?;
            if name.is_empty() || name.contains([' ', '\t']) {
                return Err(invalid_data(format!("bad header name: {line:?}")));
            }
            Ok((name.to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

/// Reads a body framed by `Transfer-Encoding: chunked` or `Content-Length`; otherwise, for
/// responses (`until_close`), up to the end of the connection, and for requests, nothing.
fn read_body<R: BufRead>(reader: &mut R, headers: &[(String, String)], until_close: bool) -> io::Result<Vec<u8>> {
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked"));
    if chunked {
        return read_chunked(reader);
    }
    if let Some(len) = find_header(headers, "content-length") {
        let len: usize = len.parse().map_err(|_| invalid_data(format!("bad Content-Length: {len:?}")))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if until_close {
        reader.read_to_end(&mut body)?;
    }
    Ok(body)
}

/// Decodes a chunked body (chunk extensions and trailers are ignored).
fn read_chunked<R: BufRead>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut budget = MAX_HEAD;
        let line =
            read_line(reader, &mut budget)?.ok_or_else(|| invalid_data("connection closed inside chunked body"))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| invalid_data(format!("bad chunk size line: {line:?}")))?;
        if size == 0 {
            // Trailer section, up to an empty line.
            loop {
                match read_line(reader, &mut budget)? {
                    Some(l) if !l.is_empty() => continue,
                    _ => return Ok(body),
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(invalid_data("chunk not followed by CRLF"));
        }
    }
}

/// Standard reason phrase for the status codes the test servers use.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// A request as received by a [`TestServer`].
#[derive(Debug, Clone)]
pub struct ServerRequest {
    /// Method, as sent.
    pub method: String,
    /// Request target: path plus query string, as sent.
    pub target: String,
    /// Header fields in received order; names are lowercased.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl ServerRequest {
    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// An answer from a [`TestServer`] handler.
#[derive(Debug, Clone)]
pub struct ServerResponse {
    /// Status code.
    pub status: u16,
    /// Header fields to send (`Content-Length` and `Connection` are added by the server).
    pub headers: Vec<(String, String)>,
    /// Body (not sent for `HEAD`, 204 and 304).
    pub body: Vec<u8>,
}

impl ServerResponse {
    /// An answer with a body of the given content type.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        ServerResponse { status, headers: vec![("content-type".into(), content_type.into())], body: body.into() }
    }

    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    /// An answer without a body.
    pub fn empty(status: u16) -> Self {
        ServerResponse { status, headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What a handler wants done with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Send this answer.
    Respond(ServerResponse),
    /// Close the connection without answering.
    Close,
}

/// Set when the server is being dropped; handlers that wait must poll it.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// Whether the server is shutting down.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration` in short slices; returns `false` early if the server stops.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.is_stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }

    fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Request handler of a [`TestServer`]; called on the connection's thread.
pub type Handler = Arc<dyn Fn(&ServerRequest, &StopSignal) -> Reply + Send + Sync>;

type Connections = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// A tiny HTTP/1.1 server on 127.0.0.1, one thread per connection (keep-alive supported).
/// Dropping it stops accepting, shuts every connection down and joins every thread.
pub struct TestServer {
    port: u16,
    stop: StopSignal,
    accept: Option<JoinHandle<()>>,
    connections: Connections,
}

impl TestServer {
    /// Binds `127.0.0.1:port` (0 for any free port) and serves `handler` in the background.
    pub fn start(port: u16, handler: Handler) -> io::Result<TestServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let stop = StopSignal::default();
        let connections: Connections = Arc::default();
        let accept = {
            let stop = stop.clone();
            let connections = connections.clone();
            thread::Builder::new()
                .name(format!("test-server-{port}"))
                .spawn(move || accept_loop(listener, handler, stop, connections))?
        };
        Ok(TestServer { port, stop, accept: Some(accept), connections })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The stop signal handed to handlers.
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.stop();
        // Wake the blocking accept() up; the loop then sees the stop flag.
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let connections = std::mem::take(&mut *lock(&self.connections));
        for (stream, _) in &connections {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, thread) in connections {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: TcpListener, handler: Handler, stop: StopSignal, conns: Connections) {
    for stream in listener.incoming() {
        if stop.is_stopped() {
            break;
        }
        let Ok(stream) = stream else {
            // E.g. out of file descriptors: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        let handler = handler.clone();
        let stop = stop.clone();
        let spawned = thread::Builder::new()
            .name("test-server-conn".into())
            .spawn(move || serve_connection(stream, &handler, &stop));
        let mut conns = lock(&conns);
        // Reap finished connections so the list stays short.
        let (done, alive): (Vec<_>, Vec<_>) = conns.drain(..).partition(|(_, t)| t.is_finished());
        *conns = alive;
        for (_, thread) in done {
            let _ = thread.join();
        }
        if let Ok(thread) = spawned {
            conns.push((registered, thread));
        }
    }
}

fn serve_connection(stream: TcpStream, handler: &Handler, stop: &StopSignal) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !stop.is_stopped() {
        let request = match read_request(&mut reader, &mut writer) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let answer = ServerResponse::new(400, "text/plain", format!("{e}\n"));
                    let _ = write_response(&mut writer, "GET", &answer, false);
                }
                break;
            }
        };
        let keep_alive = wants_keep_alive(&request);
        match handler(&request, stop) {
            Reply::Close => break,
            Reply::Respond(answer) => {
                if write_response(&mut writer, &request.method, &answer, keep_alive).is_err() || !keep_alive {
                    break;
                }
            }
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

fn wants_keep_alive(request: &ServerRequest) -> bool {
    let connection = request.header("connection").unwrap_or_default().to_ascii_lowercase();
    !connection.split(',').any(|t| t.trim() == "close")
}

fn read_request<R: BufRead>(reader: &mut R, writer: &mut TcpStream) -> io::Result<Option<ServerRequest>> {
    let Some(lines) = read_head(reader)? else {
        return Ok(None);
    };
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid_data(format!("bad request line: {:?}", lines[0])));
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(invalid_data(format!("bad request line: {:?}", lines[0])));
    }
    let headers = parse_headers(&lines[1..])?;
    if find_header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = read_body(reader, &headers, false)?;
    Ok(Some(ServerRequest { method: method.to_string(), target: target.to_string(), headers, body }))
}

fn write_response<W: Write>(writer: &mut W, method: &str, answer: &ServerResponse, keep_alive: bool) -> io::Result<()> {
    let status = answer.status;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let bodiless_status = status == 204 || status == 304 || status < 200;
    if !bodiless_status {
        head.push_str(&format!("content-length: {}\r\n", answer.body.len()));
    }
    if !keep_alive {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    if !bodiless_status && !method.eq_ignore_ascii_case("HEAD") {
        raw.extend_from_slice(&answer.body);
    }
    writer.write_all(&raw)?;
    writer.flush()
}

/// A persistent HTTP/1.1 connection for load-style tests (many requests, one connection).
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    authority: String,
}

impl KeepAlive {
    /// Connects to `http://host:port` (any path in the URL is ignored).
    pub fn connect(url: &str) -> io::Result<KeepAlive> {
        let (authority, _) = split_url(url)?;
        let stream = connect(authority)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(KeepAlive { reader: BufReader::new(stream), authority: authority.to_string() })
    }

    /// Sends a GET on the open connection and reads the answer.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.authority);
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(raw.as_bytes())?;
        stream.flush()?;
        read_response(&mut self.reader, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> TestServer {
        let handler: Handler = Arc::new(|req: &ServerRequest, stop: &StopSignal| match req.path() {
            "/close" => Reply::Close,
            "/slow" => {
                stop.sleep(Duration::from_secs(30));
                Reply::Close
            }
            _ => Reply::Respond(
                ServerResponse::new(200, "text/plain", req.body.clone())
                    .with_header("x-method", &req.method)
                    .with_header("x-target", &req.target)
                    .with_header("x-dup", "a")
                    .with_header("x-dup", "b"),
            ),
        });
        TestServer::start(0, handler).unwrap()
    }

    /// A raw server answering every connection with `answer` and closing.
    fn canned(answer: &'static [u8]) -> (u16, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(answer).unwrap();
        });
        (port, t)
    }

    #[test]
    fn round_trip_with_body_query_and_repeated_headers() {
        let server = echo_server();
        let url = format!("http://127.0.0.1:{}/a/b?x=1&y=2", server.port());
        let r = post(&url, &[("X-Test", "1")], b"hello").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello");
        assert_eq!(r.header("X-METHOD"), Some("POST"));
        assert_eq!(r.header("x-target"), Some("/a/b?x=1&y=2"));
        assert_eq!(r.headers_all("x-dup"), vec!["a", "b"]);
        let r = get(&format!("http://127.0.0.1:{}", server.port()), &[]).unwrap();
        assert_eq!(r.header("x-target"), Some("/"));
        let r = request("HEAD", &url, &[], None).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
    }

    #[test]
    fn chunked_responses_are_decoded() {
        let (port, t) = canned(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n\
              5;ext=1\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\nx-trailer: y\r\n\r\n",
        );
        let r = get(&format!("http://127.0.0.1:{port}/"), &[]).unwrap();
        t.join().unwrap();
        assert_eq!(r.json(), serde_json::json!({"a": 1}));
    }

    #[test]
    fn body_until_close_and_interim_responses() {
        let (port, t) = canned(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Nope\r\nx: 1\r\n\r\nbye");
        let r = get(&format!("http://127.0.0.1:{port}/"), &[]).unwrap();
        t.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (503, "bye"));
    }

    #[test]
    fn server_decodes_chunked_requests_and_keeps_alive() {
        let server = echo_server();
        let mut s = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /one HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let r = read_response(&mut reader, false).unwrap();
        assert_eq!(r.text(), "abc");
        s.write_all(b"GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let r = read_response(&mut reader, false).unwrap();
        assert_eq!(r.header("x-target"), Some("/two"));
        assert_eq!(r.header("connection"), Some("close"));
    }

    #[test]
    fn malformed_requests_get_400_and_close_gets_no_answer() {
        let server = echo_server();
        let addr = format!("127.0.0.1:{}", server.port());
        let r = request_raw(&addr, b"NONSENSE\r\n\r\n").unwrap();
        assert_eq!(r.status, 400);
        let r = request_raw(&addr, b"GET / HTTP/1.1\r\nbad header\r\n\r\n").unwrap();
        assert_eq!(r.status, 400);
        let err = get(&format!("http://{addr}/close"), &[]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn drop_interrupts_stalled_handlers_quickly() {
        let server = echo_server();
        let url = format!("http://127.0.0.1:{}/slow", server.port());
        let client = thread::spawn(move || get(&url, &[]));
        thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        drop(server);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(client.join().unwrap().is_err());
    }

    #[test]
    fn form_helpers() {
        let pairs = form_decode("a=1&b=x+y%21&&c&d=%zz&e=%4");
        let expect = [("a", "1"), ("b", "x y!"), ("c", ""), ("d", "%zz"), ("e", "%4")];
        let expect: Vec<(String, String)> = expect.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(pairs, expect);
        let encoded = form_encode(&[("user name", "p&ss=é")]);
        assert_eq!(encoded, "user+name=p%26ss%3D%C3%A9");
        assert_eq!(form_decode(&encoded)[0].1, "p&ss=é");
        assert_eq!(basic_auth("gateway", "gateway-secret"), "Basic Z2F0ZXdheTpnYXRld2F5LXNlY3JldA==");
    }
}
