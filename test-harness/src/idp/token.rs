//! `POST /token`: the OAuth 2.0 `client_credentials` grant (RFC 6749 §4.4).
//!
//! The client authenticates with HTTP Basic or with `client_id`/`client_secret` in the form
//! (RFC 6749 §2.3.1); the answer is an RS256 JWT signed with `rsa-a` (kid `rsa-a`) carrying
//! `iss`, `sub` = `client_id` = the client, `aud` (default `demo-api`), the client's `scope`,
//! and `iat`/`exp` (10 minutes). One client is registered from the start:
//! `demo-client`/`demo-secret` with scope `orders:read`.

use std::collections::HashMap;

use serde_json::json;

use super::keys::Alg;
use super::routing::{basic_credentials, form_value, json_reply};
use super::{now, Shared, TestIdp};
use crate::http::{Reply, ServerRequest};

/// Lifetime of issued tokens, seconds.
const LIFETIME: u64 = 600;

struct Client {
    secret: String,
    scope: String,
}

/// Registered clients and the audience of issued tokens.
pub(super) struct TokenState {
    audience: String,
    clients: HashMap<String, Client>,
}

impl TokenState {
    pub(super) fn new() -> TokenState {
        let mut clients = HashMap::new();
        clients.insert("demo-client".to_string(), Client { secret: "demo-secret".into(), scope: "orders:read".into() });
        TokenState { audience: "demo-api".into(), clients }
    }
}

/// The answer of `POST /token`.
pub(super) fn answer(shared: &Shared, request: &ServerRequest, form: &[(String, String)]) -> Reply {
    if form_value(form, "grant_type").as_deref() != Some("client_credentials") {
        return json_reply(400, json!({"error": "unsupported_grant_type"}));
    }
    let credentials = basic_credentials(request)
        .or_else(|| Some((form_value(form, "client_id")?, form_value(form, "client_secret")?)));
    let (key, claims) = {
        let state = shared.lock();
        let clients = &state.token.clients;
        let client = credentials
            .as_ref()
            .and_then(|(id, secret)| clients.get(id).filter(|c| &c.secret == secret).map(|c| (id, c)));
        let Some((id, client)) = client else {
            return json_reply(401, json!({"error": "invalid_client"}));
        };
        let now = now();
        let claims = json!({
            "iss": state.issuer,
            "sub": id,
            "aud": state.token.audience,
            "client_id": id,
            "scope": client.scope,
            "iat": now,
            "exp": now + LIFETIME,
        });
        (state.keys.key("rsa-a").clone(), claims)
    };
    let access_token = key.sign(Alg::RS256, Some("rsa-a"), None, &claims);
    json_reply(200, json!({"access_token": access_token, "token_type": "Bearer", "expires_in": LIFETIME}))
}

impl TestIdp {
    /// The `aud` of tokens from `/token` (default `demo-api`).
    pub fn set_audience(&self, audience: &str) {
        self.shared.lock().token.audience = audience.to_string();
    }

    /// Registers a client for the `client_credentials` grant.
    pub fn add_client(&self, id: &str, secret: &str, scope: &str) {
        let client = Client { secret: secret.into(), scope: scope.into() };
        self.shared.lock().token.clients.insert(id.to_string(), client);
    }
}

#[cfg(test)]
mod tests {
    use jwt_simple::algorithms::{RS256PublicKey, RSAPublicKeyLike};
    use serde_json::{Map, Value};

    use super::*;
    use crate::http::{self, basic_auth, form_encode};
    use crate::idp::test_support::{jwk_of, parts};
    use crate::idp::Endpoint;

    #[test]
    fn token_endpoint() {
        let idp = TestIdp::start();
        idp.set_audience("api-2");
        let form = form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
        ]);
        let ct = [("content-type", "application/x-www-form-urlencoded")];
        let r = http::post(&idp.url("/token"), &ct, form.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(600)));
        let token = body["access_token"].as_str().unwrap();
        let claims = RS256PublicKey::from_jwk(&jwk_of(&idp, "rsa-a"))
            .unwrap()
            .verify_token::<Map<String, Value>>(token, None)
            .unwrap();
        assert_eq!(claims.subject.as_deref(), Some("demo-client"));
        assert_eq!(claims.custom["scope"], "orders:read");
        let (_, payload) = parts(token);
        assert_eq!(payload["aud"], "api-2");
        assert_eq!(payload["iss"], idp.issuer());

        idp.add_client("other", "s3", "a b");
        let auth = basic_auth("other", "s3");
        let r = http::post(&idp.url("/token"), &[("authorization", &auth)], b"grant_type=client_credentials").unwrap();
        assert_eq!(parts(r.json()["access_token"].as_str().unwrap()).1["scope"], "a b");

        let bad = form.replace("demo-secret", "nope");
        let r = http::post(&idp.url("/token"), &ct, bad.as_bytes()).unwrap();
        assert_eq!((r.status, r.json()), (401, json!({"error": "invalid_client"})));
        assert_eq!(idp.hits(Endpoint::Token), 3);
    }
}
