//! The password grant's identity check (SPEC C5, and §2 "Identity backend contract").
//!
//! On the token endpoint, a `POST` whose form body says `grant_type=password` (RFC 6749 §4.3)
//! is checked by Portcullis before it reaches the token server: the configured identity
//! backends are asked, **newest `registered_at` first**, whether they know the user; the first
//! that accepts stops the search. This module is the pure part of that flow:
//!
//! * [`parse_form`] / [`password_request`]: strict `application/x-www-form-urlencoded`
//!   parsing (WHATWG URL §5.1 with refusals instead of repairs) and the RFC 6749 §4.3.2
//!   parameters, refusing repeated parameters (RFC 6749 §3.2);
//! * [`Backend`], [`order`], [`backend_request`], [`classify`] and the [`Chain`] state
//!   machine: which backend to ask next and what the answers add up to;
//! * the token endpoint's responses (RFC 6749 §5.1 success, §5.2 errors), which are OAuth JSON
//!   rather than problem documents because OAuth clients parse them;
//! * `extraInfo` forwarding ([`forward_headers`]) and, in issuing mode, minting a JWT
//!   ([`Issuer`]) signed through the host's `sign` foreign function ([`NativeSigner`]) or in
//!   pure Rust (jwt-simple).
//!
//! Invariants:
//! * The password never leaves this module except inside the unchanged body sent to the
//!   identity backends: [`PasswordRequest`]'s `Debug` redacts it, and nothing here logs.
//! * A request whose grant is ambiguous (malformed body, repeated or oddly spelled
//!   `grant_type`) is refused with `invalid_request`, never passed through: a lenient token
//!   server behind us might read it as a password grant that Portcullis did not check.
//! * "Rejected" (400 `invalid_grant`, counted against the user in the lockout) is only
//!   reported when **every** backend answered "not known here". If any backend failed, the
//!   answer is 503: the failed backend might have known the user, and telling a real user
//!   `invalid_grant` would count a correct password against them.
//! * An `extraInfo` travels nested (under the `extraInfo` claim, or base64url-encoded in its
//!   own header): a backend can never set `sub`, `iss`, scopes or any other top-level claim.

pub use crate::config::{order, Backend, DEFAULT_MAX_BODY};
pub use crate::crypto::issue::*;
pub use crate::wire::form::{parse_form, FormError, MAX_FORM_FIELDS};

pub mod lockout;

use std::fmt;

use serde_json::{Map, Value};

use crate::callout::{Callout, Reply};
use crate::response::HttpResponse;
use crate::wire::b64;

// ---------------------------------------------------------------------------------------------
// Form parsing
// ---------------------------------------------------------------------------------------------

/// True when a `content-type` is `application/x-www-form-urlencoded` (parameters such as
/// `charset` ignored, case-insensitive).
pub fn is_form_content_type(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// The RFC 6749 §4.3.2 parameters Portcullis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    GrantType,
    Username,
    Password,
}

impl Param {
    /// The form name.
    pub fn name(self) -> &'static str {
        match self {
            Param::GrantType => "grant_type",
            Param::Username => "username",
            Param::Password => "password",
        }
    }
}

/// Why a token request is refused with `invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestProblem {
    /// The body is not a valid form.
    Form(FormError),
    /// A required parameter is absent.
    Missing(Param),
    /// A required parameter is present but empty.
    Empty(Param),
    /// A parameter appears more than once (RFC 6749 §3.2).
    Repeated(Param),
    /// `grant_type` is `password` in another spelling (case, surrounding spaces): a lenient
    /// token server could treat it as a password grant, so it is neither checked nor passed.
    AmbiguousGrantType,
}

impl RequestProblem {
    /// A stable code for logs and stats (never the parameter's value).
    pub fn code(self) -> &'static str {
        match self {
            RequestProblem::Form(f) => f.code(),
            RequestProblem::Missing(_) => "missing_parameter",
            RequestProblem::Empty(_) => "empty_parameter",
            RequestProblem::Repeated(_) => "repeated_parameter",
            RequestProblem::AmbiguousGrantType => "ambiguous_grant_type",
        }
    }
}

/// The outcome of reading a token request that is not a usable password grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// `grant_type` is absent or another grant (`client_credentials`, `refresh_token`, …):
    /// not Portcullis's business; the request passes through untouched.
    NotPasswordGrant,
    /// A password grant (or an ambiguous one) that is malformed: 400 `invalid_request`.
    InvalidRequest(RequestProblem),
}

/// A password grant request (RFC 6749 §4.3.2). `Debug` never prints the password, nor the
/// values of the other parameters (they may hold a `client_secret`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordRequest {
    pub username: String,
    pub password: String,
    /// `scope`, when given once.
    pub scope: Option<String>,
    /// `client_id`, when given once.
    pub client_id: Option<String>,
    /// Every other parameter, in order (`grant_type`, `username` and `password` excluded).
    pub others: Vec<(String, String)>,
}

impl fmt::Debug for PasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.others.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("PasswordRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("scope", &self.scope)
            .field("client_id", &self.client_id)
            .field("other_parameters", &names)
            .finish()
    }
}

fn single(pairs: &[(String, String)], p: Param) -> Result<Option<&str>, RequestProblem> {
    let mut found = pairs.iter().filter(|(k, _)| k == p.name());
    let first = found.next();
    if found.next().is_some() {
        return Err(RequestProblem::Repeated(p));
    }
    Ok(first.map(|(_, v)| v.as_str()))
}

fn required(pairs: &[(String, String)], p: Param) -> Result<String, RequestProblem> {
    match single(pairs, p)? {
        None => Err(RequestProblem::Missing(p)),
        Some("") => Err(RequestProblem::Empty(p)),
        Some(v) => Ok(v.to_string()),
    }
}

/// Reads a token request body. See [`GrantError`] for what each refusal means.
pub fn password_request(body: &[u8]) -> Result<PasswordRequest, GrantError> {
    let invalid = GrantError::InvalidRequest;
    let pairs = parse_form(body).map_err(|e| invalid(RequestProblem::Form(e)))?;
    match single(&pairs, Param::GrantType).map_err(invalid)? {
        Some("password") => {}
        Some(g) if g.trim().eq_ignore_ascii_case("password") => {
            return Err(invalid(RequestProblem::AmbiguousGrantType));
        }
        _ => return Err(GrantError::NotPasswordGrant),
    }
    let username = required(&pairs, Param::Username).map_err(invalid)?;
    let password = required(&pairs, Param::Password).map_err(invalid)?;
    let once = |name: &str| {
        let mut it = pairs.iter().filter(|(k, _)| k == name);
        match (it.next(), it.next()) {
            (Some((_, v)), None) => Some(v.clone()),
            _ => None,
        }
    };
    let reserved = [Param::GrantType.name(), Param::Username.name(), Param::Password.name()];
    Ok(PasswordRequest {
        scope: once("scope"),
        client_id: once("client_id"),
        others: pairs.iter().filter(|(k, _)| !reserved.contains(&k.as_str())).cloned().collect(),
        username,
        password,
    })
}

// ---------------------------------------------------------------------------------------------
// Identity backends
// ---------------------------------------------------------------------------------------------

/// The callout asking `b` about the request: `POST <path>` with the token request's original
/// body and content type, unchanged (SPEC §2).
pub fn backend_request(b: &Backend, body: &[u8], content_type: &str) -> Callout {
    Callout {
        cluster: b.cluster.clone(),
        method: "POST".into(),
        authority: b.authority.clone(),
        path: b.path.clone(),
        headers: vec![("content-type".into(), content_type.into()), ("accept".into(), "application/json".into())],
        body: Some(body.to_vec()),
        timeout_ms: b.timeout_ms,
    }
}

/// The largest accepted backend answer body. Its `extraInfo` ends up in a header or a token,
/// so it must stay small.
pub const MAX_BACKEND_REPLY: usize = 16 * 1024;

/// Why a backend's answer counts as a failure (neither "yes" nor "not known here").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No response: timeout, reset, connection failure, no healthy host.
    NoResponse,
    /// A status other than 2xx, 401 or 403 (5xx, 404 from a wrong path, 400, 3xx, …).
    Status(u16),
    /// A 2xx answer larger than [`MAX_BACKEND_REPLY`].
    Oversized,
    /// A 2xx answer with a non-empty body that is not a JSON object.
    BadBody,
    /// A 2xx answer whose `extraInfo` is neither an object nor `null`.
    BadExtraInfo,
}

impl Failure {
    /// A stable code for logs and stats.
    pub fn code(self) -> &'static str {
        match self {
            Failure::NoResponse => "no_response",
            Failure::Status(_) => "bad_status",
            Failure::Oversized => "oversized",
            Failure::BadBody => "bad_body",
            Failure::BadExtraInfo => "bad_extra_info",
        }
    }
}

/// What one backend said.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendAnswer {
    /// 2xx: the user is known and the password is right.
    Accept { extra_info: Option<Map<String, Value>> },
    /// 401 or 403: not known here (or wrong password here); ask the next backend.
    NotHere,
    /// The backend could not answer.
    Failed(Failure),
}

/// Maps a backend's reply to an answer.
///
/// A 2xx is an acceptance only when its body is empty (`204`, or a 200 with no body) or a
/// JSON object whose `extraInfo`, if present and not `null`, is an object. Any other 2xx body
/// is a [`Failure`], not an acceptance: a misrouted path that answers 200 with an HTML page for
/// every request would otherwise let every password in. Failing it (503) is the conservative
/// reading; the operator sees the `bad_body` failure in stats.
pub fn classify(reply: &Reply) -> BackendAnswer {
    let Some(status) = reply.status else {
        return BackendAnswer::Failed(Failure::NoResponse);
    };
    match status {
        200..=299 => {
            if reply.body.len() > MAX_BACKEND_REPLY {
                return BackendAnswer::Failed(Failure::Oversized);
            }
            if reply.body.iter().all(u8::is_ascii_whitespace) {
                return BackendAnswer::Accept { extra_info: None };
            }
            let Ok(Value::Object(mut doc)) = serde_json::from_slice::<Value>(&reply.body) else {
                return BackendAnswer::Failed(Failure::BadBody);
            };
            match doc.remove("extraInfo") {
                None | Some(Value::Null) => BackendAnswer::Accept { extra_info: None },
                Some(Value::Object(m)) => BackendAnswer::Accept { extra_info: Some(m) },
                Some(_) => BackendAnswer::Failed(Failure::BadExtraInfo),
            }
        }
        401 | 403 => BackendAnswer::NotHere,
        other => BackendAnswer::Failed(Failure::Status(other)),
    }
}

/// What the chain wants next.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainStep {
    /// Ask the backend at this index of the ordered list ([`Chain::next_callout`]).
    Ask(usize),
    /// A backend accepted the user: stop.
    Accepted { backend: String, extra_info: Option<Map<String, Value>> },
    /// Every backend said "not known here": 400 `invalid_grant`, counted in the lockout.
    Rejected,
    /// No backend accepted and at least one failed: 503 `temporarily_unavailable`, not
    /// counted in the lockout — the failed backend might have known the user, and a real user
    /// must never be told (or charged for) a wrong password because a backend was down.
    Unavailable,
}

/// The search through the ordered backends, one callout at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    backends: Vec<Backend>,
    next: usize,
    failures: Vec<(String, Failure)>,
}

impl Chain {
    /// A search over backends already in asking order ([`order`]).
    pub fn new(ordered: Vec<Backend>) -> Chain {
        Chain { backends: ordered, next: 0, failures: Vec::new() }
    }

    /// The first step: `Ask(0)`, or `Unavailable` when there is no backend at all (config
    /// validation forbids that; fail closed anyway).
    pub fn start(&self) -> ChainStep {
        if self.backends.is_empty() {
            ChainStep::Unavailable
        } else {
            ChainStep::Ask(0)
        }
    }

    /// The backend being asked (`None` once every backend has answered).
    pub fn current(&self) -> Option<&Backend> {
        self.backends.get(self.next)
    }

    /// The callout for the backend being asked.
    pub fn next_callout(&self, body: &[u8], content_type: &str) -> Option<Callout> {
        self.current().map(|b| backend_request(b, body, content_type))
    }

    /// The failures seen so far (backend name, why), for logs and stats.
    pub fn failures(&self) -> &[(String, Failure)] {
        &self.failures
    }

    /// Records the current backend's answer and says what comes next.
    pub fn on_answer(&mut self, answer: BackendAnswer) -> ChainStep {
        let Some(current) = self.backends.get(self.next) else {
            // Answers after the end change nothing (never an acceptance).
            return self.exhausted();
        };
        match answer {
            BackendAnswer::Accept { extra_info } => {
                let backend = current.name.clone();
                self.next = self.backends.len();
                return ChainStep::Accepted { backend, extra_info };
            }
            BackendAnswer::NotHere => {}
            BackendAnswer::Failed(why) => self.failures.push((current.name.clone(), why)),
        }
        self.next += 1;
        if self.next < self.backends.len() {
            ChainStep::Ask(self.next)
        } else {
            self.exhausted()
        }
    }

    fn exhausted(&self) -> ChainStep {
        if self.failures.is_empty() && !self.backends.is_empty() {
            ChainStep::Rejected
        } else {
            ChainStep::Unavailable
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses (RFC 6749 §5)
// ---------------------------------------------------------------------------------------------

fn oauth_json(status: u16, body: Value, retry_after: Option<u64>) -> HttpResponse {
    let mut headers = vec![
        ("content-type".to_string(), "application/json;charset=UTF-8".to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
        ("pragma".to_string(), "no-cache".to_string()),
    ];
    if let Some(s) = retry_after {
        headers.push(("retry-after".into(), s.to_string()));
    }
    HttpResponse { status, headers, body: body.to_string().into_bytes() }
}

/// 400 `{"error":"invalid_grant"}` (RFC 6749 §5.2): every backend said "not known here".
/// Deliberately says nothing about whether the user exists.
pub fn invalid_grant() -> HttpResponse {
    oauth_json(400, serde_json::json!({"error": "invalid_grant"}), None)
}

/// 400 `invalid_request` (RFC 6749 §5.2): malformed body, missing, empty or repeated
/// parameter, ambiguous `grant_type`, or a body that is not a form.
pub fn invalid_request() -> HttpResponse {
    oauth_json(
        400,
        serde_json::json!({"error": "invalid_request", "error_description": "The token request is malformed."}),
        None,
    )
}

/// 503 `temporarily_unavailable` (the RFC 6749 §4.1.2.1 code) with `Retry-After` seconds:
/// no backend accepted and at least one could not answer.
pub fn temporarily_unavailable(retry_after: u64) -> HttpResponse {
    oauth_json(
        503,
        serde_json::json!({"error": "temporarily_unavailable",
                           "error_description": "The identity service is unavailable; retry later."}),
        Some(retry_after),
    )
}

/// 413: the token request body exceeds the cap ([`DEFAULT_MAX_BODY`]).
pub fn payload_too_large() -> HttpResponse {
    oauth_json(
        413,
        serde_json::json!({"error": "invalid_request", "error_description": "The request body is too large."}),
        None,
    )
}

/// 429 with `Retry-After` seconds and `{"error":"invalid_grant","error_description":"too many
/// failed attempts"}`: the user or the source address is locked out.
///
/// 429 (RFC 6585 §4) rather than a plain 400 so that clients back off and operators can tell
/// lockouts from wrong passwords; the `error` stays `invalid_grant` so OAuth clients that only
/// understand RFC 6749 codes still treat it as a failed login. It reveals nothing about the
/// account: unknown usernames are locked out exactly like known ones.
pub fn locked_out(retry_after: u64) -> HttpResponse {
    oauth_json(
        429,
        serde_json::json!({"error": "invalid_grant", "error_description": "too many failed attempts"}),
        Some(retry_after),
    )
}

/// 200 access token response (RFC 6749 §5.1) with `cache-control: no-store` and
/// `pragma: no-cache`.
pub fn token_response(access_token: &str, expires_in: u64) -> HttpResponse {
    oauth_json(
        200,
        serde_json::json!({"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in}),
        None,
    )
}

/// 200 with Portcullis's own key set (served on `issue.jwks_path`).
pub fn jwks_response(jwks: &str) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/jwk-set+json".into()),
            ("cache-control".into(), "public, max-age=300".into()),
        ],
        body: jwks.as_bytes().to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// Forwarding (mode "forward")
// ---------------------------------------------------------------------------------------------

/// The headers added to the token request forwarded upstream: the accepting backend's name in
/// `identity_header`, and, when the backend sent one, base64url (unpadded) of the JSON
/// `extraInfo` object in `extra_info_header`. The caller must first remove any inbound copy of
/// both headers, so the upstream never sees a client-forged identity.
pub fn forward_headers(
    identity_header: &str,
    extra_info_header: &str,
    backend: &str,
    extra: Option<&Map<String, Value>>,
) -> Vec<(String, String)> {
    let mut out = vec![(identity_header.to_string(), backend.to_string())];
    if let Some(m) = extra {
        let json = Value::Object(m.clone()).to_string();
        out.push((extra_info_header.to_string(), b64::encode(json.as_bytes())));
    }
    out
}

#[cfg(test)]
mod tests;
