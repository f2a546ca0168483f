//! The IdP's request path: which path is which [`Endpoint`], and the order every request
//! goes through — count the hit and record what the endpoint logs (backend logins, webhook
//! requests, revocation-list polls), apply the endpoint's fault ([`super::faults`]), refuse a wrong method (405), then
//! answer. Also the discovery document and the small helpers the endpoints share.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{backends, faults, introspection, revocations, token, Shared};
use crate::http::{form_decode, Reply, ServerRequest, ServerResponse, StopSignal};

/// An endpoint of the IdP, for fault injection and hit counting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Jwks,
    Discovery,
    Token,
    Introspect,
    /// `POST /backends/<name>/authenticate`.
    Backend(String),
    /// `POST /webhooks/<name>`.
    Webhook(String),
    /// `GET /revocations`.
    Revocations,
}

/// The endpoint serving `path` (no query), if any.
pub(super) fn route(path: &str) -> Option<Endpoint> {
    match path {
        "/jwks" => return Some(Endpoint::Jwks),
        "/.well-known/openid-configuration" => return Some(Endpoint::Discovery),
        "/token" => return Some(Endpoint::Token),
        "/introspect" => return Some(Endpoint::Introspect),
        "/revocations" => return Some(Endpoint::Revocations),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/backends/") {
        let name = rest.strip_suffix("/authenticate")?;
        return (!name.is_empty() && !name.contains('/')).then(|| Endpoint::Backend(name.into()));
    }
    let name = path.strip_prefix("/webhooks/")?;
    (!name.is_empty() && !name.contains('/')).then(|| Endpoint::Webhook(name.into()))
}

/// A JSON answer.
pub(super) fn json_reply(status: u16, value: Value) -> Reply {
    Reply::Respond(ServerResponse::json(status, &value))
}

/// The first value of `name` in a decoded form.
pub(super) fn form_value(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// `(user, password)` from an `Authorization: Basic` header.
pub(super) fn basic_credentials(request: &ServerRequest) -> Option<(String, String)> {
    let value = request.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(token.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The server's handler: every request of the [`TestServer`](crate::http::TestServer).
pub(super) fn handle(shared: &Shared, request: &ServerRequest, stop: &StopSignal) -> Reply {
    let Some(endpoint) = route(request.path()) else {
        return json_reply(404, json!({"error": "not_found"}));
    };
    let form = form_decode(&String::from_utf8_lossy(&request.body));
    {
        let mut state = shared.lock();
        state.faults.hit(&endpoint);
        match &endpoint {
            Endpoint::Backend(name) => state.backends.record(name, &form),
            Endpoint::Webhook(name) => state.webhooks.record(name, &request.headers, &request.body),
            Endpoint::Revocations => state.revocations.record(request),
            _ => {}
        }
    }

    if let Some(fault) = faults::apply(shared, &endpoint, stop) {
        return fault;
    }

    let only = match endpoint {
        Endpoint::Jwks | Endpoint::Discovery => None,
        Endpoint::Revocations => Some("GET"),
        _ => Some("POST"),
    };
    if let Some(method) = only.filter(|m| request.method != *m) {
        return Reply::Respond(
            ServerResponse::json(405, &json!({"error": "method_not_allowed"})).with_header("allow", method),
        );
    }
    match endpoint {
        Endpoint::Jwks => Reply::Respond(shared.lock().keys.answer()),
        Endpoint::Discovery => discovery(&shared.lock().issuer),
        Endpoint::Token => token::answer(shared, request, &form),
        Endpoint::Introspect => introspection::answer(shared, request, &form),
        Endpoint::Backend(name) => backends::answer(shared, &name, &form),
        Endpoint::Webhook(_) => Reply::Respond(ServerResponse::empty(204)),
        Endpoint::Revocations => revocations::answer(shared, request),
    }
}

/// The OpenID Connect discovery document (the members Portcullis reads).
fn discovery(issuer: &str) -> Reply {
    json_reply(
        200,
        json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "token_endpoint": format!("{issuer}/token"),
            "introspection_endpoint": format!("{issuer}/introspect"),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_parsing() {
        assert_eq!(route("/backends/a/authenticate"), Some(Endpoint::Backend("a".into())));
        assert_eq!(route("/backends//authenticate"), None);
        assert_eq!(route("/backends/a/b/authenticate"), None);
        assert_eq!(route("/webhooks/x"), Some(Endpoint::Webhook("x".into())));
        assert_eq!(route("/webhooks/"), None);
        assert_eq!(route("/jwks/"), None);
        assert_eq!(route("/revocations"), Some(Endpoint::Revocations));
    }

    #[test]
    fn post_only_endpoints_refuse_other_methods() {
        let idp = super::super::TestIdp::start();
        let r = crate::http::get(&idp.url("/introspect"), &[]).unwrap();
        assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
        assert_eq!(idp.hits(Endpoint::Introspect), 1, "counted all the same");
    }
}
