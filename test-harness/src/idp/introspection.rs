//! `POST /introspect`: OAuth 2.0 token introspection (RFC 7662) of registered opaque tokens.
//!
//! The caller authenticates with HTTP Basic (default `gateway`/`gateway-secret`; anything
//! else is 401 with `WWW-Authenticate`). A registered token is active and answered with its
//! claims; any other token is `{"active":false}`. The answer's shape follows `Accept`:
//!
//! | `Accept` | Answer |
//! |---|---|
//! | `application/jwt` (preferred when offered) | the phantom token: the by-value access token itself, an RS256 JWT of `iss` + the claims |
//! | `application/token-introspection+jwt` | RFC 9701: an RS256 JWT, `typ` `token-introspection+jwt`, claims under `token_introspection` |
//! | anything else | RFC 7662 JSON, `{"active":true, ...claims}` |
//!
//! An inactive token is always the JSON `{"active":false}`. JWTs are signed with `rsa-a`.
//!
//! The `Accept` header of every request that reaches the answer (after any fault) is logged,
//! oldest first, so tests can check exactly which media type the gateway asked for.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::keys::Alg;
use super::routing::{basic_credentials, form_value, json_reply};
use super::{now, Shared, TestIdp};
use crate::http::{Reply, ServerRequest, ServerResponse};

/// Who may introspect, what is active, and the answers' caching header.
pub(super) struct IntrospectionState {
    client: (String, String),
    cache_control: Option<String>,
    active: HashMap<String, Value>,
    /// The `Accept` header of each request answered (`None`: no header), oldest first.
    accepts: Vec<Option<String>>,
}

impl IntrospectionState {
    pub(super) fn new() -> IntrospectionState {
        IntrospectionState {
            client: ("gateway".into(), "gateway-secret".into()),
            cache_control: None,
            active: HashMap::new(),
            accepts: Vec::new(),
        }
    }
}

/// The answer of `POST /introspect`.
pub(super) fn answer(shared: &Shared, request: &ServerRequest, form: &[(String, String)]) -> Reply {
    let (expected, cache_control, issuer, active, key) = {
        let mut state = shared.lock();
        state.introspection.accepts.push(request.header("accept").map(str::to_string));
        let i = &state.introspection;
        let active = form_value(form, "token").and_then(|t| i.active.get(&t).cloned());
        (i.client.clone(), i.cache_control.clone(), state.issuer.clone(), active, state.keys.key("rsa-a").clone())
    };
    if basic_credentials(request).as_ref() != Some(&expected) {
        return Reply::Respond(
            ServerResponse::json(401, &json!({"error": "invalid_client"}))
                .with_header("www-authenticate", "Basic realm=\"introspection\""),
        );
    }
    if form_value(form, "token").is_none() {
        return json_reply(400, json!({"error": "invalid_request"}));
    }
    let accept = request.header("accept").unwrap_or_default().to_ascii_lowercase();
    // The phantom-token answer (`application/jwt`: the by-value access token itself) is
    // preferred when offered; RFC 9701 (`token-introspection+jwt`) otherwise.
    let jwt_type = if accept.split(',').any(|t| t.trim().starts_with("application/jwt")) {
        Some("application/jwt")
    } else if accept.contains("application/token-introspection+jwt") {
        Some("application/token-introspection+jwt")
    } else {
        None
    };
    let mut answer = match (active, jwt_type) {
        (Some(Value::Object(claims)), Some("application/jwt")) => {
            let mut payload = Map::new();
            payload.insert("iss".into(), json!(issuer));
            payload.extend(claims);
            let jwt = key.sign(Alg::RS256, Some("rsa-a"), None, &Value::Object(payload));
            ServerResponse::new(200, "application/jwt", jwt)
        }
        (Some(Value::Object(claims)), Some(content_type)) => {
            let mut inner = Map::new();
            inner.insert("active".into(), json!(true));
            inner.extend(claims);
            let payload = json!({"iss": issuer, "aud": "gateway", "iat": now(), "token_introspection": inner});
            let jwt = key.sign(Alg::RS256, Some("rsa-a"), Some("token-introspection+jwt"), &payload);
            ServerResponse::new(200, content_type, jwt)
        }
        (Some(Value::Object(claims)), None) => {
            let mut payload = Map::new();
            payload.insert("active".into(), json!(true));
            payload.extend(claims);
            ServerResponse::json(200, &Value::Object(payload))
        }
        _ => ServerResponse::json(200, &json!({"active": false})),
    };
    if let Some(cc) = cache_control {
        answer = answer.with_header("cache-control", &cc);
    }
    Reply::Respond(answer)
}

impl TestIdp {
    /// The Basic credentials `/introspect` requires (default `gateway`/`gateway-secret`).
    pub fn set_introspection_client(&self, id: &str, secret: &str) {
        self.shared.lock().introspection.client = (id.to_string(), secret.to_string());
    }

    /// Registers an active opaque token; introspection answers `{"active":true, ...claims}`.
    pub fn register_opaque(&self, token: &str, claims: Value) {
        assert!(claims.is_object(), "claims must be a JSON object");
        self.shared.lock().introspection.active.insert(token.to_string(), claims);
    }

    /// Makes a token inactive.
    pub fn revoke(&self, token: &str) {
        self.shared.lock().introspection.active.remove(token);
    }

    /// The `Accept` header of every introspection request answered so far (`None` where it
    /// had none), oldest first; requests stopped by a fault are not in it.
    pub fn introspection_accepts(&self) -> Vec<Option<String>> {
        self.shared.lock().introspection.accepts.clone()
    }

    /// A `Cache-Control` header for introspection answers (`None`: no header).
    pub fn set_introspection_cache_control(&self, value: Option<String>) {
        self.shared.lock().introspection.cache_control = value;
    }
}

#[cfg(test)]
mod tests {
    use jwt_simple::algorithms::{RS256PublicKey, RSAPublicKeyLike};

    use super::*;
    use crate::http::{self, basic_auth, form_encode};
    use crate::idp::test_support::jwk_of;
    use crate::idp::Endpoint;

    #[test]
    fn introspection() {
        let idp = TestIdp::start();
        idp.register_opaque("opaque-1", json!({"sub": "u1", "scope": "orders:read"}));
        idp.set_introspection_cache_control(Some("max-age=30".into()));
        let auth = basic_auth("gateway", "gateway-secret");
        let ask = |token: &str, extra: &[(&str, &str)]| {
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend_from_slice(extra);
            let body = form_encode(&[("token", token), ("token_type_hint", "access_token")]);
            http::post(&idp.url("/introspect"), &headers, body.as_bytes()).unwrap()
        };
        let r = ask("opaque-1", &[]);
        assert_eq!(r.json(), json!({"active": true, "sub": "u1", "scope": "orders:read"}));
        assert_eq!(r.header("cache-control"), Some("max-age=30"));

        let r = ask("opaque-1", &[("accept", "application/jwt")]);
        assert_eq!(r.header("content-type"), Some("application/jwt"));
        let claims = RS256PublicKey::from_jwk(&jwk_of(&idp, "rsa-a"))
            .unwrap()
            .verify_token::<Map<String, Value>>(&r.text(), None)
            .unwrap();
        assert_eq!(claims.issuer.as_deref(), Some(idp.issuer().as_str()));
        assert_eq!(claims.subject.as_deref(), Some("u1"), "application/jwt: the by-value access token itself");

        let r = ask("opaque-1", &[("accept", "application/token-introspection+jwt")]);
        assert_eq!(r.header("content-type"), Some("application/token-introspection+jwt"));
        let claims = RS256PublicKey::from_jwk(&jwk_of(&idp, "rsa-a"))
            .unwrap()
            .verify_token::<Map<String, Value>>(
                &r.text(),
                Some(jwt_simple::prelude::VerificationOptions {
                    required_signature_type: Some("token-introspection+jwt".into()),
                    ..Default::default()
                }),
            )
            .unwrap();
        assert_eq!(claims.custom["token_introspection"]["active"], true, "RFC 9701 shape");
        assert_eq!(claims.custom["token_introspection"]["sub"], "u1");

        idp.revoke("opaque-1");
        assert_eq!(ask("opaque-1", &[]).json(), json!({"active": false}));
        let r = ask("opaque-1", &[("accept", "application/jwt")]);
        assert_eq!(r.json(), json!({"active": false}));

        let r = http::post(&idp.url("/introspect"), &[], b"token=x").unwrap();
        assert_eq!(r.status, 401);
        idp.set_introspection_client("gw2", "pw2");
        assert_eq!(ask("x", &[]).status, 401);
        assert_eq!(idp.hits(Endpoint::Introspect), 7);
        let accepts = idp.introspection_accepts();
        assert_eq!(accepts.len(), 7);
        assert_eq!(accepts[0], None);
        assert_eq!(accepts[1].as_deref(), Some("application/jwt"));
        assert_eq!(accepts[2].as_deref(), Some("application/token-introspection+jwt"));
    }
}
