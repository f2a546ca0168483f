//! panva's `oidc-provider` (a certified OpenID Provider, npm `oidc-provider@9.13.3`) as an
//! independent peer for end-to-end tests: `test-harness/oidc/server.mjs` run by Node on
//! 127.0.0.1, plain HTTP.
//!
//! It offers the `client_credentials` grant to client `portcullis-test`; with
//! `resource=urn:portcullis:api` the access token is a JWT (RFC 9068, `typ: at+jwt`,
//! `aud: urn:portcullis:api`) signed with the current algorithm (RS256 unless changed), and
//! without a resource it is opaque. Client `gateway` may introspect (RFC 7662, and RFC 9701
//! signed answers) and revoke. Admin endpoints rotate the signing keys and switch the algorithm.
//!
//! The Node dependencies are installed by `make node-deps` (`npm ci` in `test-harness/oidc`).
//! The process is killed by PID when the [`OidcProvider`] is dropped; its stderr is kept and
//! printed if a test panics.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::envoy::repo_root;
use crate::http;

/// The resource indicator that yields JWT access tokens.
pub const RESOURCE: &str = "urn:portcullis:api";
/// The confidential client that obtains tokens.
pub const CLIENT_ID: &str = "portcullis-test";
pub const CLIENT_SECRET: &str = "portcullis-test-secret";
/// The client a gateway uses for introspection and revocation.
pub const GATEWAY_CLIENT_ID: &str = "gateway";
pub const GATEWAY_CLIENT_SECRET: &str = "gateway-secret";

/// How long to wait for the `READY <port>` line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at starting (a port picked by bind-and-release can be taken meanwhile).
const START_ATTEMPTS: u32 = 3;

/// The directory holding `server.mjs` and `package.json`.
pub fn oidc_dir() -> PathBuf {
    repo_root().join("test-harness/oidc")
}

/// The Node binary: `$NODE_BIN`, else `node` from `PATH`.
fn node_bin() -> PathBuf {
    std::env::var_os("NODE_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("node"))
}

/// A running oidc-provider.
pub struct OidcProvider {
    /// The port on 127.0.0.1.
    pub port: u16,
    child: Child,
    /// Held open so that the server exits on its own if this process dies without killing it.
    _stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
}

impl OidcProvider {
    /// Starts the provider signing JWT access tokens with RS256.
    pub fn start() -> Result<OidcProvider, String> {
        Self::start_with_alg("RS256")
    }

    /// Starts the provider signing JWT access tokens with `alg` (RS256, PS256, ES256, EdDSA).
    pub fn start_with_alg(alg: &str) -> Result<OidcProvider, String> {
        let dir = oidc_dir();
        if !dir.join("node_modules/oidc-provider/package.json").exists() {
            return Err(format!(
                "oidc-provider is not installed in {}: run `make node-deps` (npm ci) first",
                dir.display()
            ));
        }
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(alg) {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(alg: &str) -> Result<OidcProvider, String> {
        let port = free_port()?;
        let mut child = Command::new(node_bin())
            .arg("server.mjs")
            .arg(port.to_string())
            .current_dir(oidc_dir())
            .env("OIDC_ALG", alg)
            .env("OIDC_EXIT_ON_STDIN_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{} server.mjs` (is Node 20+ installed?): {e}", node_bin().display()))?;
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    lock(&sink).push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut announced = false;
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if !announced {
                        if let Some(p) = line.strip_prefix("READY ").and_then(|p| p.trim().parse::<u16>().ok()) {
                            announced = true;
                            let _ = tx.send(p);
                        }
                    }
                }
            });
        }
        let mut provider = OidcProvider { port: 0, child, _stdin: stdin, stderr };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(p) => {
                    provider.port = p;
                    return Ok(provider);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without READY: the process is exiting.
                    let _ = provider.child.wait();
                    return Err(format!("oidc-provider exited before READY; stderr:\n{}", provider.log()));
                }
            }
            if let Ok(Some(status)) = provider.child.try_wait() {
                return Err(format!("oidc-provider exited with {status} before READY; stderr:\n{}", provider.log()));
            }
            if Instant::now() >= deadline {
                return Err(format!("oidc-provider not READY within {READY_TIMEOUT:?}; stderr:\n{}", provider.log()));
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `issuer()` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// The OpenID Provider metadata (`/.well-known/openid-configuration`).
    pub fn discovery(&self) -> Value {
        let r = http::get(&self.url("/.well-known/openid-configuration"), &[])
            .unwrap_or_else(|e| panic!("oidc-provider discovery: {e}"));
        assert_eq!(r.status, 200, "oidc-provider discovery: {}", r.text());
        r.json()
    }

    /// One endpoint from the discovery document (`jwks_uri`, `token_endpoint`, ...).
    pub fn endpoint(&self, name: &str) -> String {
        let d = self.discovery();
        d[name].as_str().unwrap_or_else(|| panic!("discovery has no {name}: {d}")).to_string()
    }

    /// The `jwks_uri` from discovery.
    pub fn jwks_uri(&self) -> String {
        self.endpoint("jwks_uri")
    }

    /// The published key set.
    pub fn jwks(&self) -> Value {
        let r = http::get(&self.jwks_uri(), &[]).unwrap_or_else(|e| panic!("oidc-provider jwks: {e}"));
        assert_eq!(r.status, 200, "oidc-provider jwks: {}", r.text());
        r.json()
    }

    /// The token endpoint's whole answer to a `client_credentials` grant (status, JSON body).
    pub fn token_response(&self, resource: Option<&str>, scope: &str) -> Result<(u16, Value), String> {
        let mut form = vec![("grant_type", "client_credentials")];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        let body = http::form_encode(&form);
        let auth = http::basic_auth(CLIENT_ID, CLIENT_SECRET);
        let r = http::post(
            &self.endpoint("token_endpoint"),
            &[("authorization", &auth), ("content-type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .map_err(|e| format!("token endpoint: {e}"))?;
        let v = serde_json::from_slice(&r.body).map_err(|e| format!("token endpoint: {e}: {}", r.text()))?;
        Ok((r.status, v))
    }

    /// An access token from the `client_credentials` grant: a JWT for `Some(RESOURCE)`, opaque
    /// for `None`. Panics (quoting the answer and the server's stderr) on failure.
    pub fn client_credentials(&self, resource: Option<&str>, scope: &str) -> String {
        let (status, v) = self.token_response(resource, scope).unwrap_or_else(|e| panic!("{e}"));
        match v["access_token"].as_str() {
            Some(t) if status == 200 => t.to_string(),
            _ => panic!("client_credentials failed: {status} {v}; oidc-provider stderr:\n{}", self.log()),
        }
    }

    fn gateway_post(&self, endpoint: &str, token: &str, accept: Option<&str>) -> http::Response {
        let body = http::form_encode(&[("token", token)]);
        let auth = http::basic_auth(GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET);
        let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/x-www-form-urlencoded")];
        if let Some(a) = accept {
            headers.push(("accept", a));
        }
        http::post(&self.endpoint(endpoint), &headers, body.as_bytes())
            .unwrap_or_else(|e| panic!("oidc-provider {endpoint}: {e}"))
    }

    /// RFC 7662 introspection as the gateway client; the JSON answer (`{"active": false}` for
    /// unknown, expired or revoked tokens). JWT access tokens cannot be introspected there:
    /// the answer is then an `unsupported_token_type` error object.
    pub fn introspect(&self, token: &str) -> Value {
        self.gateway_post("introspection_endpoint", token, None).json()
    }

    /// RFC 9701 introspection: the signed `application/token-introspection+jwt` answer.
    pub fn introspect_jwt(&self, token: &str) -> String {
        let r = self.gateway_post("introspection_endpoint", token, Some("application/token-introspection+jwt"));
        assert_eq!(r.status, 200, "introspection: {}", r.text());
        assert!(
            r.header("content-type").unwrap_or_default().starts_with("application/token-introspection+jwt"),
            "introspection answer is not a JWT: {:?}",
            r.headers
        );
        r.text()
    }

    /// RFC 7009 revocation as the gateway client. Panics unless the server answers 200.
    pub fn revoke(&self, token: &str) {
        let r = self.gateway_post("revocation_endpoint", token, None);
        assert_eq!(r.status, 200, "revocation: {}", r.text());
    }

    fn admin(&self, method: &str, path: &str) -> Value {
        let r = http::request(method, &self.url(path), &[], if method == "POST" { Some(b"") } else { None })
            .unwrap_or_else(|e| panic!("oidc-provider {path}: {e}"));
        assert_eq!(r.status, 200, "oidc-provider {path}: {}", r.text());
        r.json()
    }

    /// `{"ok", "issuer", "alg", "generation", "kids": {alg: kid}, "published": [kid...]}`.
    pub fn health(&self) -> Value {
        self.admin("GET", "/__admin/health")
    }

    /// Switches the signing algorithm of new JWT access tokens (RS256, PS256, ES256, EdDSA).
    pub fn set_alg(&self, alg: &str) -> Value {
        self.admin("POST", &format!("/__admin/alg?alg={alg}"))
    }

    /// New signing keys (new kids) for every algorithm; the previous keys stay published.
    /// Returns the new [`health`](Self::health) description.
    pub fn rotate(&self) -> Value {
        self.admin("POST", "/__admin/rotate")
    }

    /// Like [`rotate`](Self::rotate), but the previous keys are no longer published.
    pub fn rotate_dropping_old(&self) -> Value {
        self.admin("POST", "/__admin/rotate?keep_old=false")
    }

    /// The kid new tokens of `alg` are signed with.
    pub fn current_kid(&self, alg: &str) -> String {
        let h = self.health();
        h["kids"][alg].as_str().unwrap_or_else(|| panic!("no kid for {alg}: {h}")).to_string()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- oidc-provider (port {}) stderr ----\n{}", self.port, self.log());
        }
    }
}

/// The decoded JOSE header of a compact JWS.
pub fn jwt_header(token: &str) -> Value {
    decode_part(token, 0)
}

/// The decoded payload of a compact JWS.
pub fn jwt_claims(token: &str) -> Value {
    decode_part(token, 1)
}

fn decode_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap_or_else(|| panic!("not a compact JWS: {token:?}"));
    let bytes = URL_SAFE_NO_PAD.decode(part).unwrap_or_else(|e| panic!("bad base64url in JWS part {i}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWS part {i} is not JSON: {e}"))
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_parts_decode() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        let t = format!("{h}.{p}.sig");
        assert_eq!(jwt_header(&t)["kid"], "k");
        assert_eq!(jwt_claims(&t)["sub"], "x");
    }
}
