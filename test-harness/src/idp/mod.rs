//! A stand-in identity provider on 127.0.0.1 for end-to-end tests.
//!
//! One [`TestIdp`] serves:
//!
//! | Path | What | Module |
//! |---|---|---|
//! | `GET /jwks` | the *published* public keys (`{"keys":[...]}`), or an override body | `keys` |
//! | `GET /.well-known/openid-configuration` | discovery document | `routing` |
//! | `POST /token` | OAuth2 `client_credentials` grant, answering an RS256 JWT | `token` |
//! | `POST /introspect` | RFC 7662 introspection of registered opaque tokens (JSON or JWT answer) | `introspection` |
//! | `POST /backends/<name>/authenticate` | identity backends checking `username`/`password` forms | `backends` |
//! | `POST /webhooks/<name>` | webhook sink recording headers and bodies, `204` | `webhooks` |
//! | `GET /revocations` | a revocation list with `ETag` / `304 Not Modified`, polls logged | `revocations` |
//!
//! Every endpoint counts its hits and can be made faulty ([`TestIdp::set_behavior`], module
//! `faults`); `routing` is the order every request goes through. Tokens are minted (module
//! `mint`) with the PEM keys in `test-harness/keys/` (module `keys`): through `jwt-simple`,
//! except RS* with the RSA key under 2048 bits that `jwt-simple` refuses (`rsa-weak-1024`,
//! signed by the `rsa` crate) and HS256 with any secret (computed with `sha2`).
//!
//! The state lives in one mutex, one part per module; the server runs each connection on
//! its own thread ([`TestServer`]), and dropping the [`TestIdp`] stops it, stalled requests
//! included.

mod backends;
mod faults;
mod introspection;
mod keys;
mod mint;
mod revocations;
mod routing;
mod token;
mod webhooks;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use self::backends::two_backend_identities;
pub use self::faults::Behavior;
pub use self::keys::{Alg, DEFAULT_PUBLISHED, KEY_IDS};
pub use self::mint::{b64url, forge, mint_hs256};
pub use self::revocations::RevocationPoll;
pub use self::routing::Endpoint;
pub use self::webhooks::WebhookRequest;
pub use crate::http::form_decode;
use crate::http::{Handler, ServerRequest, StopSignal, TestServer};

/// The current unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970").as_secs()
}

/// Everything the IdP knows, one part per endpoint module.
struct State {
    /// `http://127.0.0.1:<port>`, once the port is known.
    issuer: String,
    keys: keys::KeyState,
    token: token::TokenState,
    introspection: introspection::IntrospectionState,
    backends: backends::Backends,
    webhooks: webhooks::Webhooks,
    revocations: revocations::Revocations,
    faults: faults::Faults,
}

struct Shared {
    state: Mutex<State>,
    /// Notified when a behavior changes (wakes stalled requests).
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The stand-in identity provider; stops when dropped.
pub struct TestIdp {
    /// The bound port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Shared>,
    _server: TestServer,
}

impl TestIdp {
    /// Starts on a free port.
    pub fn start() -> TestIdp {
        Self::start_on(0)
    }

    /// Starts on `port` (0 for a free one). Panics if the port cannot be bound.
    pub fn start_on(port: u16) -> TestIdp {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                issuer: String::new(),
                keys: keys::KeyState::new(),
                token: token::TokenState::new(),
                introspection: introspection::IntrospectionState::new(),
                backends: backends::Backends::default(),
                webhooks: webhooks::Webhooks::default(),
                revocations: revocations::Revocations::default(),
                faults: faults::Faults::default(),
            }),
            changed: Condvar::new(),
        });
        let handler: Handler = {
            let shared = shared.clone();
            Arc::new(move |request: &ServerRequest, stop: &StopSignal| routing::handle(&shared, request, stop))
        };
        let server =
            TestServer::start(port, handler).unwrap_or_else(|e| panic!("test IdP: cannot bind 127.0.0.1:{port}: {e}"));
        let port = server.port();
        shared.lock().issuer = format!("http://127.0.0.1:{port}");
        TestIdp { port, shared, _server: server }
    }

    /// `http://127.0.0.1:<port>`; also the `iss` of minted tokens.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `issuer() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }
}

/// Helpers shared by the modules' unit tests.
#[cfg(test)]
mod test_support {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::Value;

    use super::TestIdp;

    /// A compact JWS's decoded header and payload.
    pub(super) fn parts(token: &str) -> (Value, Value) {
        let mut it = token.split('.');
        let mut next =
            || -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap() };
        (next(), next())
    }

    /// The public JWK of `kid`, as JSON text.
    pub(super) fn jwk_of(idp: &TestIdp, kid: &str) -> String {
        let jwks: Value = serde_json::from_str(&idp.public_jwks_for(&[kid])).unwrap();
        jwks["keys"][0].to_string()
    }
}
