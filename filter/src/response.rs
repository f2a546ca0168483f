//! The only module that knows HTTP response shapes (SPEC §3).
//!
//! * Challenges follow RFC 6750 §3: no `error` attribute when no credential was sent,
//!   `invalid_request` (400), `invalid_token` (401), `insufficient_scope` (403, with the
//!   `scope` attribute listing what the route requires). API keys get their own `ApiKey`
//!   challenge scheme; a bad key is reported there (`error="invalid_key"`), never as an
//!   invalid bearer token.
//! * Bodies are RFC 9457 `application/problem+json` with a stable `type` per reason
//!   (`urn:portcullis:problem:<code>`), a title, the status and a generic `detail`: never
//!   token contents, key ids from the request or upstream error text.
//! * 429 and 503 carry `Retry-After` (RFC 9110 §10.2.3).

use crate::reason::Reason;

/// Which challenge schemes apply to a rejection (the credential methods the route accepts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Challenges {
    pub bearer: bool,
    pub api_key: bool,
}

/// A refused request, before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub challenges: Challenges,
    /// For `insufficient_scope`: the scopes the route requires.
    pub scopes: Vec<String>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
    /// Further headers (rate-limit headers on a 429).
    pub extra_headers: Vec<(String, String)>,
    /// Who had authenticated when a later stage refused (authorization, revocation, rate
    /// limit), for access logs and events: the client id and the methods (as in
    /// `x-portcullis-auth`). Never rendered into the response.
    pub client: Option<String>,
    pub auth: Option<String>,
}

impl Rejection {
    pub fn new(reason: Reason, challenges: Challenges) -> Self {
        Rejection {
            reason,
            challenges,
            scopes: Vec::new(),
            retry_after: None,
            extra_headers: Vec::new(),
            client: None,
            auth: None,
        }
    }
}

/// A rendered local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Seconds a client is asked to wait after a 503 when nothing better is known.
pub const DEFAULT_RETRY_AFTER: u64 = 5;

/// The API-key challenge carries `error="invalid_key"` for these (a revoked key: when the
/// rejection names only the API-key challenge).
fn is_api_key_reason(rej: &Rejection) -> bool {
    matches!(rej.reason, Reason::ApiKeyInvalid | Reason::ApiKeyDisabled)
        || (rej.reason == Reason::Revoked && !rej.challenges.bearer)
}

fn bearer_challenge(realm: &str, rej: &Rejection) -> String {
    let r = rej.reason;
    let mut c = format!("Bearer realm=\"{realm}\"");
    if is_api_key_reason(rej) {
        // The bearer side was not at fault: a plain challenge (RFC 6750 §3.1).
        return c;
    }
    let error = match r.status() {
        400 => Some("invalid_request"),
        403 if r == Reason::InsufficientScope => Some("insufficient_scope"),
        401 if r != Reason::MissingCredentials => Some("invalid_token"),
        _ => None,
    };
    if let Some(e) = error {
        c.push_str(&format!(", error=\"{e}\", error_description=\"{}\"", r.detail()));
    }
    if r == Reason::InsufficientScope && !rej.scopes.is_empty() {
        c.push_str(&format!(", scope=\"{}\"", rej.scopes.join(" ")));
    }
    c
}

/// Renders a rejection. `realm` has been validated to need no escaping.
pub fn render(rej: &Rejection, realm: &str) -> HttpResponse {
    let r = rej.reason;
    let status = r.status();
    let mut headers = vec![
        ("content-type".to_string(), "application/problem+json".to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    if matches!(status, 400 | 401 | 403) {
        if rej.challenges.bearer {
            headers.push(("www-authenticate".into(), bearer_challenge(realm, rej)));
        }
        if rej.challenges.api_key && status == 401 {
            let c = if is_api_key_reason(rej) {
                format!("ApiKey realm=\"{realm}\", error=\"invalid_key\"")
            } else {
                format!("ApiKey realm=\"{realm}\"")
            };
            headers.push(("www-authenticate".into(), c));
        }
    }
    if matches!(status, 429 | 503) {
        headers.push(("retry-after".into(), rej.retry_after.unwrap_or(DEFAULT_RETRY_AFTER).to_string()));
    }
    headers.extend(rej.extra_headers.iter().cloned());
    let mut body = serde_json::json!({
        "type": format!("urn:portcullis:problem:{}", r.code()),
        "title": r.title(),
        "status": status,
        "detail": r.detail(),
    });
    if r == Reason::InsufficientScope && !rej.scopes.is_empty() {
        body["required_scopes"] = serde_json::json!(rej.scopes);
    }
    HttpResponse { status, headers, body: body.to_string().into_bytes() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr<'a>(r: &'a HttpResponse, n: &str) -> Vec<&'a str> {
        r.headers.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect()
    }

    const BOTH: Challenges = Challenges { bearer: true, api_key: true };

    #[test]
    fn missing_credentials_has_no_error_attribute() {
        let r = render(&Rejection::new(Reason::MissingCredentials, BOTH), "api");
        assert_eq!(r.status, 401);
        assert_eq!(hdr(&r, "www-authenticate"), vec!["Bearer realm=\"api\"", "ApiKey realm=\"api\""]);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], "urn:portcullis:problem:missing_credentials");
        assert_eq!(body["status"], 401);
        assert_eq!(hdr(&r, "content-type"), vec!["application/problem+json"]);
    }

    #[test]
    fn status_and_challenge_table() {
        let bearer = Challenges { bearer: true, api_key: false };
        let cases = [
            (Reason::MultipleCredentials, 400, Some("error=\"invalid_request\"")),
            (Reason::TokenExpired, 401, Some("error=\"invalid_token\"")),
            (Reason::TokenSignature, 401, Some("error=\"invalid_token\"")),
            (Reason::KeysUnavailable, 503, None),
        ];
        for (reason, status, challenge) in cases {
            let r = render(&Rejection::new(reason, bearer), "p");
            assert_eq!(r.status, status, "{reason:?}");
            match challenge {
                Some(c) => assert!(hdr(&r, "www-authenticate")[0].contains(c), "{reason:?}"),
                None => assert!(hdr(&r, "www-authenticate").is_empty()),
            }
        }
        let r = render(&Rejection::new(Reason::KeysUnavailable, bearer), "p");
        assert_eq!(hdr(&r, "retry-after"), vec!["5"]);
    }

    #[test]
    fn bad_api_key_is_reported_on_its_own_scheme() {
        let r = render(&Rejection::new(Reason::ApiKeyInvalid, BOTH), "p");
        assert_eq!(r.status, 401);
        assert_eq!(
            hdr(&r, "www-authenticate"),
            vec!["Bearer realm=\"p\"", "ApiKey realm=\"p\", error=\"invalid_key\""]
        );
    }

    #[test]
    fn insufficient_scope_names_the_scopes() {
        let mut rej = Rejection::new(Reason::InsufficientScope, Challenges { bearer: true, api_key: false });
        rej.scopes = vec!["admin".into(), "orders:write".into()];
        let r = render(&rej, "p");
        assert_eq!(r.status, 403);
        assert!(hdr(&r, "www-authenticate")[0].ends_with("error=\"insufficient_scope\", error_description=\"The credential lacks a scope this resource requires.\", scope=\"admin orders:write\""));
    }
}
