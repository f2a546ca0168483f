//! Authorization past authentication (SPEC C6): client certificates as a credential method,
//! certificate-bound tokens (RFC 8705 §3), and the attributes `when` conditions read.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{Identity, MethodResult};
use crate::config::route::AttrKey;
use crate::config::{Config, Method, Route};
use crate::jwt;
use crate::request::{Peer, RequestView};
use crate::wire::b64;

/// `requires: mtls`: a client certificate Envoy validated. The client id is its URI SAN (a
/// SPIFFE id in a mesh), else its subject.
pub(super) fn check_mtls(peer: &dyn Peer) -> MethodResult {
    if !peer.mtls() {
        return MethodResult::Absent;
    }
    MethodResult::Ok(Identity {
        method: Method::Mtls,
        client_id: peer.uri_san().or_else(|| peer.subject()),
        api_client: None,
        scopes: Vec::new(),
        found: None,
        verified: None,
        introspected: None,
    })
}

/// The claims a token identity carries (a verified JWT's, or an introspection answer's).
fn claims_of(id: &Identity) -> Option<&Map<String, Value>> {
    if let Some(v) = &id.verified {
        return Some(&v.claims);
    }
    id.introspected.as_ref().map(|r| &r.claims)
}

/// RFC 8705 §3: a token with `cnf["x5t#S256"]` is accepted only over a connection whose peer
/// certificate hashes (SHA-256, base64url without padding) to it; `required` also refuses
/// tokens without `cnf`. Returns the rejection reason, if any.
pub(super) fn check_binding(peer: &dyn Peer, identities: &[Identity], required: bool) -> Option<crate::reason::Reason> {
    use crate::reason::Reason;
    let mut thumbprint: Option<Option<String>> = None; // asked at most once
    for id in identities {
        let Some(claims) = claims_of(id) else { continue };
        match claims.get("cnf").and_then(|c| c.get("x5t#S256")) {
            Some(Value::String(want)) => {
                let have = thumbprint.get_or_insert_with(|| peer.cert_sha256().map(|d| b64::encode(&d)));
                if have.as_deref() != Some(want.as_str()) {
                    return Some(Reason::TokenBinding);
                }
            }
            Some(_) => return Some(Reason::TokenBinding),
            None if required => return Some(Reason::TokenBinding),
            None => {}
        }
    }
    None
}

/// True when any identity's credential is on the revocation list.
/// Which credential was revoked: the identity's method (an API key gets its own challenge).
pub(super) fn revoked(list: &crate::events::revocation::List, identities: &[Identity], now_s: u64) -> Option<Method> {
    use sha2::{Digest, Sha256};
    identities
        .iter()
        .find(|id| {
            if let Some(c) = claims_of(id) {
                if list.token_revoked(c, now_s) {
                    return true;
                }
            }
            if id.client_id.as_deref().is_some_and(|c| list.client_revoked(c, now_s)) {
                return true;
            }
            id.method == Method::ApiKey
                && list.has_api_keys()
                && id
                    .found
                    .as_ref()
                    .is_some_and(|f| list.api_key_revoked(&Sha256::digest(f.value.as_bytes()).into(), now_s))
        })
        .map(|id| id.method)
}

/// The rejection for a revoked credential: a token's gets the bearer challenge, an API key's
/// only its own (`ApiKey …, error="invalid_key"`).
pub(super) fn revoked_rejection(api_key: bool, challenges: crate::response::Challenges) -> crate::response::Rejection {
    let challenges = if api_key { crate::response::Challenges { bearer: false, api_key: true } } else { challenges };
    crate::response::Rejection::new(crate::reason::Reason::Revoked, challenges)
}

/// What `when` conditions read, computed only for the keys a route asks about.
pub(super) struct Facts<'a> {
    pub cfg: &'a Config,
    pub req: &'a RequestView,
    pub peer: &'a dyn Peer,
    pub identities: &'a [Identity],
    pub client: Option<&'a str>,
    pub route: &'a Route,
}

fn scalars(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(items) => items.iter().flat_map(scalars).collect(),
        _ => Vec::new(),
    }
}

impl Facts<'_> {
    fn claims(&self) -> Option<&Map<String, Value>> {
        self.identities.iter().find_map(claims_of)
    }

    fn claim(&self, name: &str) -> Option<Vec<String>> {
        self.claims().and_then(|c| c.get(name)).map(scalars).filter(|v| !v.is_empty())
    }

    /// The attribute's values (`None`: absent).
    pub fn values(&self, key: &AttrKey) -> Option<Vec<String>> {
        match key {
            AttrKey::Claims(path) => {
                let c = self.claims()?;
                let v = scalars(jwt::claim(c, path)?);
                (!v.is_empty()).then_some(v)
            }
            AttrKey::Principal => {
                let c = self.claims()?;
                let (iss, sub) = (c.get("iss")?.as_str()?, c.get("sub")?.as_str()?);
                Some(vec![format!("{iss}/{sub}")])
            }
            AttrKey::Audiences => self.claim("aud"),
            AttrKey::Presenter => self.claim("azp"),
            AttrKey::Header(name) => {
                let v: Vec<String> = self.req.header_values(name).map(|v| v.unwrap_or_default().to_string()).collect();
                (!v.is_empty()).then_some(v)
            }
            AttrKey::SourceIp => {
                let src = self.req.source.get()?;
                Some(vec![crate::net::client_ip(src).to_string()])
            }
            AttrKey::SourcePrincipal => self.peer.uri_san().map(|s| vec![s]),
            AttrKey::ConnectionSni => self.peer.sni().map(|s| vec![s]),
            AttrKey::ClientId => self.client.map(|c| vec![c.to_string()]),
            AttrKey::ClientPlan => self.plan().map(|p| vec![p.into_owned()]),
        }
    }

    /// The plan that applies to the caller (route override, API-key client, plan claim,
    /// default).
    fn plan(&self) -> Option<Cow<'_, str>> {
        let rl = self.cfg.rate_limit.as_ref()?;
        let client_plan = self.identities.iter().find_map(|i| match i.method {
            Method::ApiKey => self
                .cfg
                .api_keys
                .as_ref()
                .and_then(|a| a.clients.iter().find(|c| Some(&c.client_id) == i.client_id.as_ref()))
                .and_then(|c| c.plan.as_deref()),
            _ => None,
        });
        let claim_plan = rl
            .plan_claim
            .as_ref()
            .and_then(|path| self.claims().and_then(|c| jwt::claim(c, path)).and_then(|v| v.as_str()));
        crate::ratelimit::plan_for(self.cfg, self.route.plan.as_deref(), client_plan, claim_plan)
            .map(|(name, _)| Cow::Borrowed(name))
    }
}
