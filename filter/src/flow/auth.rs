//! Authenticate → authorize → admit (rate limit) → mutate: one request's evaluation on a route,
//! as plain functions over the canonical request view.

use std::rc::Rc;

use super::mutations::{base_mutations, strip_credential};
use super::*;

pub(super) type Evaluated = Result<Allowed, Rejection>;

pub(super) struct Allowed {
    pub(super) mutations: Mutations,
    pub(super) client: Option<String>,
    /// The token's `sub`, for events.
    pub(super) subject: Option<String>,
    /// The methods that authenticated, as in `x-portcullis-auth`.
    pub(super) auth: Option<String>,
}

/// Evaluates the request. `Err(provider)` asks for an early key refresh (only when
/// `may_refresh`).
pub(super) fn evaluate(
    ctx: &mut Ctx,
    req: &RequestView,
    progress: &Progress,
    counters: &mut Vec<Counter>,
) -> Result<Evaluated, Need> {
    let cfg = ctx.cfg;
    let matched = policy::route(cfg, req);
    let requires = matched.requires();
    let (methods, all, optional): (&[Method], bool, bool) = match requires {
        Requires::None => (&[], false, false),
        Requires::Any(m) => (m, false, false),
        Requires::All(m) => (m, true, false),
        Requires::Optional(m) => (m, false, true),
    };
    let challenges = Challenges {
        bearer: methods.iter().any(|m| matches!(m, Method::Provider(_) | Method::Introspection)),
        api_key: methods.contains(&Method::ApiKey),
    };
    let identities = match authenticate(ctx, req, progress, counters, methods, (all, optional), challenges)? {
        Ok(ids) => ids,
        Err(rej) => return Ok(Err(rej)),
    };
    if let Err(rej) = authorize(ctx, req, progress, &matched, &identities, challenges)? {
        return Ok(Err(who(cfg, &identities, rej)));
    }
    let client = identities.iter().find_map(|i| i.client_id.clone());
    let response_headers = match admit(ctx, req, progress, counters, &matched, &identities, challenges)? {
        Ok(h) => h,
        Err(rej) => return Ok(Err(who(cfg, &identities, rej))),
    };
    mutate(cfg, req, &identities, client, response_headers)
}

/// A refusal after authentication names who was refused (logs and events only).
fn who(cfg: &Config, identities: &[Identity], mut rej: Rejection) -> Rejection {
    rej.client = identities.iter().find_map(|i| i.client_id.clone());
    let names = method_names(cfg, identities);
    rej.auth = (!names.is_empty()).then(|| names.join(","));
    rej
}

/// The methods that authenticated, as `x-portcullis-auth` lists them.
fn method_names(cfg: &Config, identities: &[Identity]) -> Vec<String> {
    identities
        .iter()
        .map(|id| match id.method {
            Method::ApiKey => "api_key".to_string(),
            Method::Mtls => "mtls".to_string(),
            Method::Provider(i) => format!("jwt:{}", cfg.providers[i].name),
            Method::Introspection => "introspection".to_string(),
        })
        .collect()
}

/// The outcome of one evaluation stage: go on with `T`, refuse, or pause for a callout.
type Stage<T> = Result<Result<T, Rejection>, Need>;

/// Authenticate: every credential method the route lists, under its `any` / `all` /
/// `optional` rule. The most severe failure wins; a token no method takes is invalid.
#[allow(clippy::too_many_arguments)]
fn authenticate(
    ctx: &mut Ctx,
    req: &RequestView,
    progress: &Progress,
    counters: &mut Vec<Counter>,
    methods: &[Method],
    (all, optional): (bool, bool),
    challenges: Challenges,
) -> Stage<Vec<Identity>> {
    let cfg = ctx.cfg;
    let reject = |reason: Reason| Rejection::new(reason, challenges);
    let mut identities: Vec<Identity> = Vec::new();
    let mut retry_after: Option<u64> = None;
    let mut failure: Option<Reason> = None;
    let mut missing = false;
    let mut declined = false;
    let mut mtls_missing = false;
    for m in methods {
        let result = match m {
            Method::ApiKey => check_api_key(cfg, req),
            Method::Provider(i) => check_provider(ctx, req, *i, progress, counters),
            Method::Introspection => check_introspection(ctx, req, progress, counters),
            Method::Mtls => super::authorize::check_mtls(ctx.peer),
        };
        match result {
            MethodResult::Ok(id) => identities.push(id),
            MethodResult::Absent if *m == Method::Mtls => {
                missing = true;
                mtls_missing = true;
            }
            MethodResult::Absent => missing = true,
            MethodResult::Declined => {
                missing = true;
                declined = true;
            }
            MethodResult::Failed(r) | MethodResult::FailedRetry(r, _) => {
                if r.status() == 503 && cfg.on_dependency_down == DependencyDown::Anonymous {
                    missing = true;
                } else if failure.is_none_or(|f| r.severity() > f.severity()) {
                    failure = Some(r);
                    if let MethodResult::FailedRetry(_, ra) = result {
                        retry_after = ra;
                    }
                }
            }
            MethodResult::Need(n) => return Err(n),
            MethodResult::NeedRefresh(p) => {
                if progress.may_refresh {
                    return Err(Need::Refresh(p));
                }
                if failure.is_none_or(|f| Reason::TokenUnknownKey.severity() > f.severity()) {
                    failure = Some(Reason::TokenUnknownKey);
                }
            }
        }
    }
    if failure.is_none() && declined && identities.is_empty() {
        // A token was sent, but no configured method can take it: invalid, never "missing".
        failure = Some(Reason::TokenNotAccepted);
    }
    if let Some(r) = failure {
        let mut rej = reject(r);
        if r.status() == 503 {
            rej.retry_after = Some(retry_after.unwrap_or(response::DEFAULT_RETRY_AFTER));
        }
        return Ok(Err(rej));
    }
    if !optional && !methods.is_empty() && (identities.is_empty() || (all && missing)) {
        // When the client certificate is all the route lacks, say so (403 mtls_required).
        let only_mtls = mtls_missing
            && if all { identities.len() + 1 == methods.len() } else { methods.iter().all(|m| *m == Method::Mtls) };
        return Ok(Err(reject(if only_mtls { Reason::MtlsRequired } else { Reason::MissingCredentials })));
    }
    Ok(Ok(identities))
}

/// Authorize: blocks and revocations (rules, the revocation list), certificate binding,
/// scopes, allowed clients and `when` conditions.
fn authorize(
    ctx: &mut Ctx,
    req: &RequestView,
    progress: &Progress,
    matched: &policy::Matched,
    identities: &[Identity],
    challenges: Challenges,
) -> Stage<()> {
    let cfg = ctx.cfg;
    let reject = |reason: Reason| Rejection::new(reason, challenges);
    // Blocks and revocations by trigger rules, on the authenticated client and subject (only
    // when any is in force: the keys are hashed to look them up).
    if ctx.cfg.rules.acts && !ctx.state.actions.is_empty() {
        use crate::events::rules::{Effect, KeyType};
        let subject = identities.iter().find_map(|id| {
            let c = id.verified.as_ref().map(|v| &v.claims).or(id.introspected.as_ref().map(|r| &r.claims))?;
            c.get("sub")?.as_str().map(str::to_string)
        });
        let client = identities.iter().find_map(|i| i.client_id.clone());
        let api_key = if cfg.rules.on_api_key { super::api_key_id(cfg, req) } else { None };
        for (kt, key) in [(KeyType::Client, client), (KeyType::Subject, subject), (KeyType::ApiKey, api_key)] {
            let Some(key) = key else { continue };
            if super::rules::blocked(ctx, Effect::Revoke, kt, &key).is_some() {
                return Ok(Err(super::authorize::revoked_rejection(kt == KeyType::ApiKey, challenges)));
            }
            if let Some(secs) = super::rules::blocked(ctx, Effect::Block, kt, &key) {
                let mut rej = reject(Reason::Blocked);
                rej.retry_after = Some(secs);
                return Ok(Err(rej));
            }
        }
    }
    // The revocation list: every credential, cached ones included (O(1) lookups).
    if let (Some(rc), false) = (&cfg.revocation, identities.is_empty()) {
        if ctx.state.revocation.is_none() {
            if let Some((v, list)) = crate::events::revocation::sync(ctx.store, &rc.ns, 0, rc.max_entries) {
                ctx.state.revocation = Some(Rc::new(list));
                ctx.state.revocation_version = v;
            }
        }
        match &ctx.state.revocation {
            Some(list) => {
                if let Some(method) = super::authorize::revoked(list, identities, ctx.now_ms / 1000) {
                    return Ok(Err(super::authorize::revoked_rejection(method == Method::ApiKey, challenges)));
                }
            }
            None if !progress.revocation_gave_up => return Err(Need::FirstRevocation),
            None if cfg.on_dependency_down == DependencyDown::FailClosed => {
                let mut rej = reject(Reason::RevocationUnavailable);
                rej.retry_after = Some(response::DEFAULT_RETRY_AFTER);
                return Ok(Err(rej));
            }
            None => {}
        }
    }
    // Certificate-bound tokens (RFC 8705 §3): always checked; a route may require them.
    let route = match matched {
        policy::Matched::Route(_, r) => Some(r),
        policy::Matched::Default(_) => None,
    };
    if let Some(r) = super::authorize::check_binding(ctx.peer, identities, route.is_some_and(|r| r.require_bound_token))
    {
        return Ok(Err(reject(r)));
    }

    let held: Vec<String> = identities.iter().flat_map(|i| i.scopes.iter().cloned()).collect();
    let lacking = policy::missing_scopes(matched.scopes(), &held);
    if !lacking.is_empty() {
        let mut rej = reject(Reason::InsufficientScope);
        rej.scopes = matched.scopes().to_vec();
        return Ok(Err(rej));
    }

    let client = identities.iter().find_map(|i| i.client_id.clone());
    if let Some(r) = route {
        if !r.allowed_clients.is_empty() && !client.as_ref().is_some_and(|c| r.allowed_clients.contains(c)) {
            return Ok(Err(reject(Reason::PolicyDenied)));
        }
        if !r.when.is_empty() {
            let facts =
                super::authorize::Facts { cfg, req, peer: ctx.peer, identities, client: client.as_deref(), route: r };
            if !r.when.iter().all(|c| policy::when::holds(c, facts.values(&c.key).as_deref())) {
                return Ok(Err(reject(Reason::PolicyDenied)));
            }
        }
    }
    Ok(Ok(()))
}

/// Admit: the rate limit (local buckets or the rate limit service). Returns the response
/// headers to add.
#[allow(clippy::too_many_arguments)]
fn admit(
    ctx: &mut Ctx,
    req: &RequestView,
    progress: &Progress,
    counters: &mut Vec<Counter>,
    matched: &policy::Matched,
    identities: &[Identity],
    challenges: Challenges,
) -> Stage<Vec<(String, String)>> {
    let cfg = ctx.cfg;
    let mut response_headers = Vec::new();
    if let Some(rl) = &cfg.rate_limit {
        let route_plan = match matched {
            policy::Matched::Route(_, r) => r.plan.as_deref(),
            policy::Matched::Default(_) => None,
        };
        let client_plan = identities.iter().find_map(|i| match i.method {
            // The client's own entry, by index: no search through the key table.
            Method::ApiKey => {
                cfg.api_keys.as_ref().and_then(|a| a.clients.get(i.api_client?)).and_then(|c| c.plan.as_deref())
            }
            Method::Provider(_) | Method::Introspection | Method::Mtls => None,
        });
        let claim_plan = rl.plan_claim.as_ref().and_then(|path| {
            identities
                .iter()
                .find_map(|i| i.verified.as_ref().and_then(|v| jwt::claim(&v.claims, path)).and_then(|c| c.as_str()))
        });
        if let Some((plan_name, plan)) = ratelimit::plan_for(cfg, route_plan, client_plan, claim_plan) {
            // One namespace per credential method (a JWT `client_id` never drains the API-key
            // client of the same name), and anonymous callers in their own table (a flood of
            // spoofed or rotating addresses cannot push authenticated clients out).
            let (who, table_ns) = match identities.iter().find(|i| i.client_id.is_some()) {
                Some(id) => {
                    let c = id.client_id.as_deref().unwrap_or_default();
                    let who = match id.method {
                        Method::ApiKey => format!("api_key:{c}"),
                        Method::Provider(p) => format!("jwt:{}:{c}", cfg.providers[p].name),
                        Method::Introspection => format!("introspection:{c}"),
                        Method::Mtls => format!("mtls:{c}"),
                    };
                    (who, &rl.store_ns)
                }
                None => (ratelimit::client_key(req.source.get().unwrap_or("unknown")), &rl.anonymous_ns),
            };
            let cost = match matched {
                policy::Matched::Route(_, r) => r.cost,
                policy::Matched::Default(_) => 1,
            };
            if let Some(g) = &plan.global {
                use ratelimit::global::Verdict;
                match progress.global {
                    None => {
                        let message = ratelimit::global::request(&g.domain, plan_name, &who, cost);
                        return Err(Need::Global(GlobalCall {
                            cluster: g.cluster.clone(),
                            message,
                            timeout_ms: g.timeout_ms,
                        }));
                    }
                    Some(Verdict::Ok) => {}
                    Some(Verdict::OverLimit { reset_s }) => {
                        let mut rej = Rejection::new(Reason::RateLimited, challenges);
                        rej.retry_after = Some(reset_s.unwrap_or(1).max(1));
                        return Ok(Err(rej));
                    }
                    Some(Verdict::Failed) => {
                        if cfg.on_dependency_down == DependencyDown::FailClosed {
                            let mut rej = Rejection::new(Reason::RateLimitUnavailable, challenges);
                            rej.retry_after = Some(response::DEFAULT_RETRY_AFTER);
                            return Ok(Err(rej));
                        }
                    }
                }
            } else {
                match ratelimit::check(
                    &Scoped::new(ctx.store, table_ns),
                    rl.max_clients,
                    rl.headers,
                    &who,
                    plan_name,
                    plan,
                    cost,
                    ctx.now_ms,
                ) {
                    ratelimit::Checked::Allowed(h) => response_headers = h,
                    ratelimit::Checked::Limited { retry_after, headers, why } => {
                        match why {
                            ratelimit::Why::TableFull => counters.push(Counter::RateLimitTableFull),
                            ratelimit::Why::Contended => counters.push(Counter::RateLimitContended),
                            ratelimit::Why::Exhausted => {}
                        }
                        let mut rej = Rejection::new(Reason::RateLimited, challenges);
                        rej.retry_after = Some(retry_after);
                        rej.extra_headers = headers;
                        return Ok(Err(rej));
                    }
                }
            }
        }
    }

    Ok(Ok(response_headers))
}

/// Mutate: the header changes an allowed request goes on with.
fn mutate(
    cfg: &Config,
    req: &RequestView,
    identities: &[Identity],
    client: Option<String>,
    response_headers: Vec<(String, String)>,
) -> Result<Evaluated, Need> {
    let mut mutations = base_mutations(cfg, req);
    mutations.response_headers = response_headers;
    let mut path = req.path.clone();
    let method_names = method_names(cfg, identities);
    for id in identities {
        match id.method {
            Method::ApiKey => {
                if cfg.api_keys.as_ref().is_some_and(|a| a.hide_credentials) {
                    if let Some(f) = &id.found {
                        strip_credential(&f.source, &mut mutations, &mut path, req);
                    }
                }
            }
            Method::Mtls => {}
            Method::Provider(i) => {
                let p = &cfg.providers[i];
                let Some(v) = &id.verified else { continue };
                if let (false, Some(f)) = (p.forward, &id.found) {
                    strip_credential(&f.source, &mut mutations, &mut path, req);
                }
                if let Some(h) = &p.forward_payload_header {
                    let mut value = v.payload_b64.clone();
                    if p.pad_forward_payload_header {
                        // base64url with `=` padding, as jwt_authn's pad_forward_payload_header.
                        value.extend(std::iter::repeat_n('=', (4 - value.len() % 4) % 4));
                    }
                    mutations.set.push((h.clone(), value));
                }
                for (h, claim) in &p.claim_to_headers {
                    if let Some(value) =
                        jwt::claim(&v.claims, claim).and_then(|c| jwt::claim_header_value(c, &p.claim_separator))
                    {
                        mutations.set.push((h.clone(), value));
                    }
                }
                if let Some(name) = &p.payload_in_filter_state {
                    mutations
                        .filter_state
                        .push((name.clone(), serde_json::Value::Object(v.claims.clone()).to_string()));
                }
            }
            Method::Introspection => {
                let (Some(ic), Some(r)) = (&cfg.introspection, &id.introspected) else { continue };
                // The opaque token never goes upstream: a by-value JWT or the claims do.
                if let Some(f) = &id.found {
                    strip_credential(&f.source, &mut mutations, &mut path, req);
                }
                match (&r.jwt, &ic.upstream_header) {
                    (Some(jwt), Some((name, prefix))) => {
                        mutations.remove.retain(|h| h != name);
                        mutations.set.push((name.clone(), format!("{prefix}{jwt}")));
                    }
                    _ => mutations.set.push((
                        ic.claims_header.clone(),
                        crate::wire::b64::encode(serde_json::Value::Object(r.claims.clone()).to_string().as_bytes()),
                    )),
                }
                for (h, claim) in &ic.claim_to_headers {
                    if let Some(value) = jwt::claim(&r.claims, claim).and_then(|c| jwt::claim_header_value(c, ",")) {
                        mutations.set.push((h.clone(), value));
                    }
                }
            }
        }
    }
    if path != req.path {
        mutations.path = Some(path);
    }
    if let Some(c) = &client {
        if c.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            mutations.set.push((config::CLIENT_HEADER.into(), c.clone()));
        }
    }
    let joined = (!method_names.is_empty()).then(|| method_names.join(","));
    if let Some(j) = &joined {
        mutations.set.push((config::METHOD_HEADER.into(), j.clone()));
    }
    // For events only: nothing is built when no event can be emitted or counted.
    let (subject, auth) = if cfg.events.enabled() || !cfg.rules.rules.is_empty() {
        let subject = identities.iter().find_map(|id| {
            let claims = id.verified.as_ref().map(|v| &v.claims).or(id.introspected.as_ref().map(|r| &r.claims))?;
            claims.get("sub")?.as_str().map(str::to_string)
        });
        (subject, joined)
    } else {
        (None, None)
    };
    Ok(Ok(Allowed { mutations, client, subject, auth }))
}

pub(super) fn extract_failure(e: ExtractError) -> MethodResult {
    MethodResult::Failed(match e {
        ExtractError::Multiple => Reason::MultipleCredentials,
        ExtractError::Malformed => Reason::MalformedRequest,
    })
}

pub(super) fn check_api_key(cfg: &Config, req: &RequestView) -> MethodResult {
    let Some(ak) = &cfg.api_keys else { return MethodResult::Failed(Reason::Internal) };
    let found = match req.extract(&ak.sources) {
        Ok(Some(f)) => f,
        Ok(None) => return MethodResult::Absent,
        Err(e) => return extract_failure(e),
    };
    match apikey::lookup_indexed(ak, &found.value) {
        Ok((index, client)) => MethodResult::Ok(Identity {
            method: Method::ApiKey,
            client_id: Some(client.client_id.clone()),
            api_client: Some(index),
            scopes: client.scopes.clone(),
            found: Some(found),
            verified: None,
            introspected: None,
        }),
        Err(r) => MethodResult::Failed(r),
    }
}

/// When several providers read the same source, a token belongs to the provider whose
/// issuer matches its (unverified) `iss`; providers without an issuer take any token.
pub(super) fn belongs_to(cfg: &Config, i: usize, token: &str) -> bool {
    let p = &cfg.providers[i];
    let Some(want) = &p.issuer else { return true };
    let shares_source =
        cfg.providers.iter().enumerate().any(|(j, q)| j != i && q.sources.iter().any(|s| p.sources.contains(s)));
    if !shares_source {
        return true;
    }
    let iss = token
        .split('.')
        .nth(1)
        .and_then(crate::wire::b64::decode)
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("iss").and_then(|i| i.as_str()).map(str::to_string));
    match iss {
        Some(iss) => &iss == want,
        // Unparseable: let the first provider sharing the source report it as malformed.
        None => cfg.providers.iter().position(|q| q.sources.iter().any(|s| p.sources.contains(s))) == Some(i),
    }
}

pub(super) fn check_provider(
    ctx: &mut Ctx,
    req: &RequestView,
    i: usize,
    progress: &Progress,
    counters: &mut Vec<Counter>,
) -> MethodResult {
    let cfg = ctx.cfg;
    let p = &cfg.providers[i];
    let found = match req.extract(&p.sources) {
        Ok(Some(f)) => f,
        Ok(None) => return MethodResult::Absent,
        Err(e) => return extract_failure(e),
    };
    if cfg.providers.len() > 1 && !belongs_to(cfg, i, &found.value) {
        return MethodResult::Declined;
    }
    if let Some(ic) = &cfg.introspection {
        if ic.sources.contains(&found.source) && introspection::is_candidate(&ic.settings, &found.value) {
            return MethodResult::Absent;
        }
    }
    if found.value.len() > p.max_token_bytes {
        return MethodResult::Failed(Reason::TokenTooLarge);
    }
    let now_s = ctx.now_ms / 1000;
    let remote = matches!(p.keys, KeySource::Remote(_) | KeySource::Discovery(_));
    // The tick picks up sets other workers publish; a request reads shared data itself only
    // when it has no usable set or meets an unknown `kid` (both rare).
    if remote && matches!(ctx.state.keys.available(cfg, i, ctx.now_ms), Availability::Unavailable) {
        ctx.state.keys.sync(cfg, ctx.store, i);
        if ctx.state.keys.never_had(cfg, i) && !progress.keys_gave_up && p.hmac_secret.is_none() {
            return MethodResult::Need(Need::FirstKeys(i));
        }
    }
    let mut synced = false;
    loop {
        let (set, version) = match ctx.state.keys.available(cfg, i, ctx.now_ms) {
            Availability::Ready(set, v) => (Rc::clone(set), v),
            Availability::Unavailable if p.hmac_secret.is_some() => (Rc::new(Default::default()), 0),
            Availability::Unavailable => return MethodResult::Failed(Reason::KeysUnavailable),
        };
        if let Some(hit) = ctx.state.cache.get(found.value.as_str()) {
            if hit.provider == i && hit.key_version == version {
                let v = Rc::clone(&hit.verified);
                counters.push(Counter::JwtCacheHit);
                return match jwt::check_times(v.exp, v.nbf, v.iat, p, now_s) {
                    Ok(()) => ok_identity(i, found, v),
                    Err(r) => MethodResult::Failed(r),
                };
            }
        }
        counters.push(Counter::JwtCacheMiss);
        let allow_native = cfg.crypto == config::CryptoMode::Auto;
        return match jwt::verify(&found.value, p, &set, now_s, ctx.native, allow_native) {
            Ok((v, path)) => {
                counters.push(if path == Path::Native { Counter::CryptoNative } else { Counter::CryptoPure });
                let v = Rc::new(v);
                let key: Rc<str> = Rc::from(found.value.as_str());
                ctx.state.cache.put(key, CacheEntry { provider: i, key_version: version, verified: Rc::clone(&v) });
                ok_identity(i, found, v)
            }
            Err(Reason::TokenUnknownKey) if remote => {
                // Another worker may have published a newer set since this worker's last
                // tick: use it before asking for a refresh.
                if !synced {
                    synced = true;
                    ctx.state.keys.sync(cfg, ctx.store, i);
                    if ctx.state.keys.providers.get(i).is_some_and(|st| st.version != version) {
                        continue;
                    }
                }
                MethodResult::NeedRefresh(i)
            }
            Err(r) => MethodResult::Failed(r),
        };
    }
}

pub(super) fn check_introspection(
    ctx: &mut Ctx,
    req: &RequestView,
    progress: &Progress,
    counters: &mut Vec<Counter>,
) -> MethodResult {
    let cfg = ctx.cfg;
    let Some(ic) = &cfg.introspection else { return MethodResult::Failed(Reason::Internal) };
    let found = match req.extract(&ic.sources) {
        Ok(Some(f)) => f,
        Ok(None) => return MethodResult::Absent,
        Err(e) => return extract_failure(e),
    };
    if !introspection::is_candidate(&ic.settings, &found.value) {
        // A JWS (or a token without the configured prefix) is another method's business.
        return MethodResult::Declined;
    }
    if !introspection::is_well_formed(&ic.settings, &found.value) {
        return MethodResult::Failed(Reason::TokenMalformed);
    }
    let slots = ic.settings.cache_slots;
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(found.value.as_bytes()).into();
    let local = match ctx.state.introspected.get(&digest) {
        Some((r, expires)) if *expires > ctx.now_ms => Some(Rc::clone(r)),
        _ => None,
    };
    let result = match (&progress.introspected, local) {
        (Some(r), _) => r.clone(),
        (None, Some(r)) => {
            counters.push(Counter::IntrospectionCacheHit);
            Ok(r)
        }
        (None, None) => match introspection::cache_get(
            &Scoped::new(ctx.store, &ic.settings.store_ns),
            slots,
            &found.value,
            ctx.now_ms,
        ) {
            Some(hit) => {
                counters.push(Counter::IntrospectionCacheHit);
                let hit = Rc::new(hit);
                ctx.state.introspected.put(digest, (Rc::clone(&hit), ctx.now_ms.saturating_add(hit.ttl_ms)));
                Ok(hit)
            }
            None => {
                let hold_ms = ic.settings.endpoint.timeout_ms + 500;
                if introspection::try_begin(
                    &Scoped::new(ctx.store, &ic.settings.store_ns),
                    slots,
                    &found.value,
                    ctx.now_ms,
                    hold_ms,
                ) {
                    return MethodResult::Need(Need::Introspect(Box::new(introspection::request(
                        &ic.settings,
                        &found.value,
                    ))));
                }
                return MethodResult::Need(Need::Peer);
            }
        },
    };
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            if e.is_bad_client_credentials() {
                counters.push(Counter::IntrospectionBadClientCredentials);
            }
            return MethodResult::FailedRetry(Reason::IntrospectionUnavailable, e.retry_after_s());
        }
    };
    if !r.active {
        return MethodResult::Failed(Reason::TokenInactive);
    }
    MethodResult::Ok(Identity {
        method: Method::Introspection,
        client_id: r.client_id().or(r.subject()).map(str::to_string),
        api_client: None,
        scopes: r.scopes(),
        found: Some(found),
        verified: None,
        introspected: Some(r),
    })
}

pub(super) fn ok_identity(i: usize, found: Found, v: Rc<Verified>) -> MethodResult {
    let client_id = v.client_id.clone().or_else(|| v.claims.get("sub").and_then(|s| s.as_str()).map(str::to_string));
    MethodResult::Ok(Identity {
        method: Method::Provider(i),
        client_id,
        api_client: None,
        scopes: v.scopes.clone(),
        found: Some(found),
        verified: Some(v),
        introspected: None,
    })
}
