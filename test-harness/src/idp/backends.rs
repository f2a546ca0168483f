//! `POST /backends/<name>/authenticate`: identity backends for the password grant.
//!
//! A backend checks a form `username` + `password` against its own users: `200
//! {"user", "extraInfo"?}` on a match, `401 {"error":"unknown_user"}` otherwise, `404` for a
//! backend never created. Every request that reaches a backend path is logged as
//! `(backend, username, arrival time)` before any fault applies (the password is never
//! logged), so tests can prove which backends were asked, in which order, and that none was.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::routing::{form_value, json_reply};
use super::{Shared, TestIdp};
use crate::http::Reply;

/// `password_grant.identities` for the two backends the e2e tests create on this IdP (reached
/// through the `idp` cluster): `legacy`, registered first, then `ldap`.
pub fn two_backend_identities() -> Value {
    json!([
        {"name": "legacy", "cluster": "idp", "authority": "idp.test", "path": "/backends/legacy/authenticate",
         "timeout": "0.5s", "registered_at": "2024-05-01T00:00:00Z"},
        {"name": "ldap", "cluster": "idp", "authority": "idp.test", "path": "/backends/ldap/authenticate",
         "timeout": "0.5s", "registered_at": "2026-03-01T00:00:00Z"}
    ])
}

struct User {
    password: String,
    extra_info: Option<Value>,
}

/// Every backend's users, and the log of requests that reached a backend.
#[derive(Default)]
pub(super) struct Backends {
    users: HashMap<String, HashMap<String, User>>,
    hits: Vec<(String, String, SystemTime)>,
}

impl Backends {
    /// Logs a request to backend `name` (which need not exist).
    pub(super) fn record(&mut self, name: &str, form: &[(String, String)]) {
        let username = form_value(form, "username").unwrap_or_default();
        self.hits.push((name.to_string(), username, SystemTime::now()));
    }

    pub(super) fn clear_hits(&mut self) {
        self.hits.clear();
    }
}

/// The answer of `POST /backends/<backend>/authenticate`.
pub(super) fn answer(shared: &Shared, backend: &str, form: &[(String, String)]) -> Reply {
    let state = shared.lock();
    let Some(users) = state.backends.users.get(backend) else {
        return json_reply(404, json!({"error": "unknown_backend"}));
    };
    let username = form_value(form, "username").unwrap_or_default();
    let password = form_value(form, "password");
    match users.get(&username) {
        Some(user) if password.as_deref() == Some(user.password.as_str()) => {
            let mut body = json!({ "user": username });
            if let Some(extra) = &user.extra_info {
                body["extraInfo"] = extra.clone();
            }
            json_reply(200, body)
        }
        _ => json_reply(401, json!({"error": "unknown_user"})),
    }
}

impl TestIdp {
    /// Creates a backend at `POST /backends/<name>/authenticate` (no users yet).
    pub fn add_backend(&self, name: &str) {
        self.shared.lock().backends.users.entry(name.to_string()).or_default();
    }

    /// Adds (or replaces) a user of `backend`; `extra_info` is answered as `extraInfo`.
    pub fn add_user(&self, backend: &str, username: &str, password: &str, extra_info: Option<Value>) {
        let mut state = self.shared.lock();
        let users = state
            .backends
            .users
            .get_mut(backend)
            .unwrap_or_else(|| panic!("unknown backend {backend:?}; call add_backend first"));
        users.insert(username.to_string(), User { password: password.to_string(), extra_info });
    }

    /// `(backend, username)` of every request that reached a backend, oldest first.
    pub fn backend_hits(&self) -> Vec<(String, String)> {
        self.backend_hits_timed().into_iter().map(|(b, u, _)| (b, u)).collect()
    }

    /// [`backend_hits`](Self::backend_hits) with arrival times.
    pub fn backend_hits_timed(&self) -> Vec<(String, String, SystemTime)> {
        self.shared.lock().backends.hits.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{self, form_encode};
    use crate::idp::Endpoint;

    #[test]
    fn identity_backends() {
        let idp = TestIdp::start();
        idp.add_backend("ldap");
        idp.add_user("ldap", "alice smith", "p@ss w&rd", Some(json!({"groups": ["a"]})));
        idp.add_user("ldap", "bob", "pw", None);
        let url = idp.url("/backends/ldap/authenticate");
        let login = |user: &str, pw: &str| {
            let body = form_encode(&[("username", user), ("password", pw)]);
            http::post(&url, &[], body.as_bytes()).unwrap()
        };
        let r = login("alice smith", "p@ss w&rd");
        assert_eq!((r.status, r.json()), (200, json!({"user": "alice smith", "extraInfo": {"groups": ["a"]}})));
        assert_eq!(login("bob", "pw").json(), json!({"user": "bob"}));
        let r = login("bob", "wrong");
        assert_eq!((r.status, r.json()), (401, json!({"error": "unknown_user"})));
        let r = http::post(&url, &[], b"username=bob&password=p%77").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(http::post(&idp.url("/backends/none/authenticate"), &[], b"username=x").unwrap().status, 404);
        assert_eq!(idp.hits(Endpoint::Backend("ldap".into())), 4);
        let hits = idp.backend_hits();
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0], ("ldap".to_string(), "alice smith".to_string()));
        assert_eq!(hits[4], ("none".to_string(), "x".to_string()));
    }
}
