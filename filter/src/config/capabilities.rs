//! Phase 2 per capability: JWT providers, API keys, introspection and the password grant.

use std::collections::BTreeMap;

use super::*;
use crate::crypto::jwks;

pub(crate) fn validate_provider(
    path: &str,
    name: String,
    p: RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Provider, ConfigError> {
    if let Some(iss) = &p.issuer {
        if iss.is_empty() {
            return err(format!("{path}.issuer"), "must not be empty (omit it to accept any issuer)");
        }
    }
    for (i, a) in p.audiences.iter().enumerate() {
        if a.is_empty() {
            return err(format!("{path}.audiences[{i}]"), "must not be empty");
        }
    }
    let keys = match (p.local_jwks, p.remote_jwks, p.discovery) {
        (Some(_), Some(_), _) => {
            return err(path, "give exactly one of local_jwks or remote_jwks, not both");
        }
        (Some(l), None, None) => {
            let lp = format!("{path}.local_jwks");
            if l.filename.is_some() {
                return err(
                    format!("{lp}.filename"),
                    "a Wasm filter cannot read files: put the JWKS in inline_string, or in a VM environment variable named by inline_string_env (Envoy vm_config.environment_variables, Istio vmConfig.env)",
                );
            }
            let text = secret(&lp, "inline_string", l.inline_string, l.inline_string_env, env)?;
            let (set, warns) = jwks::parse(text.as_bytes()).map_err(|e| ConfigError {
                path: format!("{lp}.inline_string"),
                message: format!("not a usable JWKS: {e}"),
            })?;
            if set.is_empty() {
                // The load fails, so `warnings` is never logged: the reasons go into the error.
                let why = if warns.is_empty() { "the \"keys\" array is empty".to_string() } else { warns.join(" | ") };
                return err(format!("{lp}.inline_string"), format!("no usable key in the set: {why}"));
            }
            for w in warns {
                warnings.push(format!("{lp}: {w}"));
            }
            KeySource::Local(set)
        }
        (None, Some(r), None) => {
            let rp = format!("{path}.remote_jwks");
            // async_fetch is what Portcullis always does (the first fetch on the first tick,
            // refreshes in the background, requests waiting only for a set they need).
            if r.retry_policy.is_some() {
                warnings.push(format!(
                    "{rp}.retry_policy: accepted and not applied: failed key-set fetches are retried with Portcullis's own backoff on the tick"
                ));
            }
            KeySource::Remote(validate_remote(
                &rp,
                &r.http_uri,
                r.cache_duration.as_deref(),
                r.max_stale.as_deref(),
                r.unknown_kid_refresh_interval.as_deref(),
            )?)
        }
        (None, None, discovery) => {
            let Some(iss) = &p.issuer else {
                return err(path, "needs a key source: local_jwks, remote_jwks, or issuer (for OIDC discovery)");
            };
            let dp = format!("{path}.discovery");
            let Some(d) = discovery else {
                return err(
                    dp,
                    "OIDC discovery needs the Envoy cluster that reaches the issuer: set discovery.cluster",
                );
            };
            let uri = format!("{}/.well-known/openid-configuration", iss.trim_end_matches('/'));
            let http = RawHttpUri { uri, cluster: d.cluster, timeout: d.timeout };
            KeySource::Discovery(validate_remote(&dp, &http, d.cache_duration.as_deref(), None, None).map_err(|e| {
                if e.path.ends_with(".uri") {
                    ConfigError {
                        path: format!("{path}.issuer"),
                        message: "must be an http(s) URL for OIDC discovery".into(),
                    }
                } else {
                    e
                }
            })?)
        }
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
            return err(format!("{path}.discovery"), "only used when neither local_jwks nor remote_jwks is given");
        }
    };

    let mut sources = Vec::new();
    match p.from_headers {
        None => {
            if p.from_params.is_empty() && p.from_cookies.is_empty() {
                sources.push(Source::Header { name: "authorization".into(), prefix: "Bearer ".into() });
            }
        }
        Some(hs) => {
            for (i, h) in hs.into_iter().enumerate() {
                let hp = format!("{path}.from_headers[{i}]");
                let name = header_name(&format!("{hp}.name"), &h.name)?;
                sources.push(Source::Header { name, prefix: h.value_prefix.unwrap_or_default() });
            }
        }
    }
    for (i, q) in p.from_params.into_iter().enumerate() {
        if q.is_empty() || q.contains(['&', '=', '#', ' ']) {
            return err(format!("{path}.from_params[{i}]"), "must be a non-empty query parameter name");
        }
        sources.push(Source::Param(q));
    }
    for (i, c) in p.from_cookies.into_iter().enumerate() {
        if c.is_empty() || c.contains([';', '=', ' ', ',']) {
            return err(format!("{path}.from_cookies[{i}]"), "must be a non-empty cookie name");
        }
        sources.push(Source::Cookie(c));
    }
    if sources.is_empty() {
        return err(path, "no token source: give from_headers, from_params or from_cookies");
    }

    let forward_payload_header = match p.forward_payload_header {
        None => None,
        Some(h) => Some(header_name(&format!("{path}.forward_payload_header"), &h)?),
    };
    let mut claim_to_headers = Vec::new();
    for (i, c) in p.claim_to_headers.into_iter().enumerate() {
        let cp = format!("{path}.claim_to_headers[{i}]");
        let h = header_name(&format!("{cp}.header_name"), &c.header_name)?;
        let claim = claim_path(&format!("{cp}.claim_name"), &c.claim_name)?;
        claim_to_headers.push((h, claim));
    }
    let claim_separator = p.claim_separator.unwrap_or_else(|| ",".into());
    if claim_separator.is_empty() || claim_separator.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return err(format!("{path}.claim_separator"), "must be printable and not empty");
    }
    let clock_skew_s = p.clock_skew_seconds.unwrap_or(60);
    if clock_skew_s > 3600 {
        return err(format!("{path}.clock_skew_seconds"), "must be at most 3600");
    }
    let max_lifetime_s = match p.max_lifetime {
        None => None,
        Some(t) => {
            let ms = dur(&format!("{path}.max_lifetime"), &t)?;
            if ms < 1000 {
                return err(format!("{path}.max_lifetime"), "must be at least 1s");
            }
            Some(ms / 1000)
        }
    };
    let max_token_bytes = match p.max_token_bytes {
        None => 32 * 1024,
        Some(n) if (256..=1024 * 1024).contains(&n) => n as usize,
        Some(_) => return err(format!("{path}.max_token_bytes"), "must be between 256 and 1048576"),
    };
    let client_id_claims = match p.client_id_claim {
        Some(c) => vec![claim_path(&format!("{path}.client_id_claim"), &c)?],
        None => vec![vec!["client_id".into()], vec!["azp".into()]],
    };
    if p.payload_in_metadata.is_some() {
        return err(
            format!("{path}.payload_in_metadata"),
            "renamed payload_in_filter_state: Portcullis writes Envoy filter state (wasm.<name>), not the dynamic metadata jwt_authn writes, so RBAC and Istio's request.auth.* cannot read it; use claim_to_headers and x-portcullis-client for AuthorizationPolicy (see README, Migration)",
        );
    }
    for (field, what) in [
        (p.header_in_metadata.is_some(), "header_in_metadata"),
        (p.failed_status_in_metadata.is_some(), "failed_status_in_metadata"),
    ] {
        if field {
            return err(
                format!("{path}.{what}"),
                "a Wasm filter cannot write Envoy dynamic metadata; the verdict is in x-portcullis-decision (shadow mode) and the stats, the payload in payload_in_filter_state",
            );
        }
    }
    let payload_in_filter_state = match p.payload_in_filter_state {
        Some(m) if m.is_empty() => return err(format!("{path}.payload_in_filter_state"), "must not be empty"),
        other => other,
    };
    let subjects = match p.subjects {
        None => None,
        Some(m) => {
            let sp = format!("{path}.subjects");
            if m.safe_regex.is_some() {
                return err(format!("{sp}.safe_regex"), "regular expressions are not supported (no regex engine in the module): use exact, prefix, suffix or contains");
            }
            let ic = m.ignore_case;
            let given = [
                m.exact.map(|v| SubjectMatcher::Exact(v, ic)),
                m.prefix.map(|v| SubjectMatcher::Prefix(v, ic)),
                m.suffix.map(|v| SubjectMatcher::Suffix(v, ic)),
                m.contains.map(|v| SubjectMatcher::Contains(v, ic)),
            ];
            let mut given: Vec<SubjectMatcher> = given.into_iter().flatten().collect();
            if given.len() != 1 {
                return err(sp, "give exactly one of exact, prefix, suffix or contains");
            }
            given.pop()
        }
    };
    if let Some(c) = &p.jwt_cache_config {
        // Portcullis always caches verified tokens (top-level verified_token_cache_size); the
        // size given here raises that cache when larger.
        if c.jwt_cache_size.is_some_and(|n| n > 1_000_000) {
            return err(format!("{path}.jwt_cache_config.jwt_cache_size"), "must be at most 1000000");
        }
    }
    let space_delimited_claims = p.normalize_payload_in_metadata.map(|n| n.space_delimited_claims).unwrap_or_default();
    for (i, c) in space_delimited_claims.iter().enumerate() {
        if c.is_empty() {
            return err(
                format!("{path}.normalize_payload_in_metadata.space_delimited_claims[{i}]"),
                "must not be empty",
            );
        }
    }
    let hmac_secret = match (p.hmac_secret, p.hmac_secret_env) {
        (None, None) => None,
        (a, b) => {
            let from_env = b.clone();
            let s = secret(path, "hmac_secret", a, b, env)?;
            if s.len() < 32 {
                return match from_env {
                    Some(var) => err(
                        format!("{path}.hmac_secret_env"),
                        format!(
                            "the value of VM environment variable {var:?} must be at least 32 bytes (RFC 7518 §3.2)"
                        ),
                    ),
                    None => err(format!("{path}.hmac_secret"), "must be at least 32 bytes (RFC 7518 §3.2)"),
                };
            }
            Some(s.into_bytes())
        }
    };
    let store_ns = crate::store::Namespace::of("jwks", &[&format!("{keys:?}"), p.issuer.as_deref().unwrap_or("")]);
    let allowed_typ = match &p.allowed_typ {
        None => DEFAULT_ALLOWED_TYP.iter().map(|t| t.to_string()).collect(),
        Some(list) => {
            if list.is_empty() {
                return err(format!("{path}.allowed_typ"), "must not be empty (omit it for the default)");
            }
            for (j, t) in list.iter().enumerate() {
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return err(format!("{path}.allowed_typ[{j}]"), "must be a non-empty media type");
                }
            }
            list.clone()
        }
    };
    Ok(Provider {
        name,
        store_ns,
        allowed_typ,
        subjects,
        space_delimited_claims,
        pad_forward_payload_header: p.pad_forward_payload_header,
        issuer: p.issuer,
        audiences: p.audiences,
        keys,
        sources,
        forward: p.forward,
        forward_payload_header,
        claim_to_headers,
        claim_separator,
        clock_skew_s,
        max_lifetime_s,
        require_expiration: p.require_expiration.unwrap_or(true),
        max_token_bytes,
        client_id_claims,
        payload_in_filter_state,
        hmac_secret,
    })
}

/// The `typ` values an access token may carry by default (RFC 7519 §5.1, RFC 9068 §2.1).
pub(crate) const DEFAULT_ALLOWED_TYP: [&str; 3] = ["JWT", "at+jwt", "application/at+jwt"];

pub(crate) fn validate_remote(
    path: &str,
    http: &RawHttpUri,
    cache: Option<&str>,
    max_stale: Option<&str>,
    kid_interval: Option<&str>,
) -> Result<RemoteJwks, ConfigError> {
    let hp = format!("{path}.http_uri");
    let (authority, upath) = split_url(&http.uri).ok_or_else(|| ConfigError {
        path: format!("{hp}.uri"),
        message: format!("must be an absolute http(s) URL, got {:?}", http.uri),
    })?;
    if http.cluster.is_empty() {
        return err(
            format!("{hp}.cluster"),
            "must name the Envoy cluster that reaches the URL's host (Istio: outbound|443||<host>)",
        );
    }
    let timeout_ms = positive_dur(&format!("{hp}.timeout"), http.timeout.as_deref(), 1000)?;
    let cache_duration_ms = positive_dur(&format!("{path}.cache_duration"), cache, 300_000)?;
    if cache_duration_ms < 1000 {
        return err(format!("{path}.cache_duration"), "must be at least 1s");
    }
    let max_stale_ms = match max_stale {
        None => 24 * 3600 * 1000,
        Some(t) => dur(&format!("{path}.max_stale"), t)?,
    };
    let unknown_kid_refresh_interval_ms = match kid_interval {
        None => 30_000,
        Some(t) => dur(&format!("{path}.unknown_kid_refresh_interval"), t)?,
    };
    Ok(RemoteJwks {
        uri: http.uri.clone(),
        cluster: http.cluster.clone(),
        authority,
        path: upath,
        timeout_ms,
        cache_duration_ms,
        max_stale_ms,
        unknown_kid_refresh_interval_ms,
    })
}

pub(crate) fn validate_api_keys(a: RawApiKeys, plans: &BTreeMap<String, Plan>) -> Result<ApiKeys, ConfigError> {
    let mut sources = Vec::new();
    for (i, h) in a.from_headers.iter().enumerate() {
        let name = header_name(&format!("api_keys.from_headers[{i}]"), h)?;
        sources.push(Source::Header { name, prefix: String::new() });
    }
    for (i, q) in a.from_params.iter().enumerate() {
        if q.is_empty() || q.contains(['&', '=', '#', ' ']) {
            return err(format!("api_keys.from_params[{i}]"), "must be a non-empty query parameter name");
        }
        sources.push(Source::Param(q.clone()));
    }
    if sources.is_empty() {
        return err("api_keys", "give from_headers or from_params (where clients send their key)");
    }
    // Sized once: growing would hold the old and the new table at once.
    let mut clients = Vec::with_capacity(a.clients.len());
    let mut keys = hashbrown::HashMap::with_capacity(a.clients.iter().map(|c| c.keys_sha256.0.len()).sum());
    for (i, c) in a.clients.into_iter().enumerate() {
        let cp = format!("api_keys.clients[{i}]");
        if c.client_id.is_empty() || c.client_id.len() > 128 || c.client_id.bytes().any(|b| !(0x21..0x7f).contains(&b))
        {
            return err(format!("{cp}.client_id"), "must be 1-128 printable ASCII characters without spaces");
        }
        if c.keys_sha256.0.is_empty() {
            return err(format!("{cp}.keys_sha256"), "must hold at least one key hash");
        }
        for (j, digest) in c.keys_sha256.0.iter().enumerate() {
            let kp = format!("{cp}.keys_sha256[{j}]");
            let digest = digest.ok_or_else(|| ConfigError {
                path: kp.clone(),
                message: "must be 64 hex characters (the SHA-256 of the key; see `make hash-key`)".into(),
            })?;
            if keys.insert(digest, clients.len()).is_some() {
                return err(kp, "this key hash is already configured (each key belongs to one client)");
            }
        }
        if let Some(p) = &c.plan {
            if !plans.contains_key(p) {
                return err(format!("{cp}.plan"), unknown_plan(p, plans));
            }
        }
        for (j, s) in c.scopes.iter().enumerate() {
            check_scope(&format!("{cp}.scopes[{j}]"), s)?;
        }
        clients.push(ApiClient { client_id: c.client_id, plan: c.plan, scopes: c.scopes, disabled: c.disabled });
    }
    // Duplicate ids, checked on the validated clients (no copy of every id: large key tables
    // set every VM's memory high-water mark at configure time).
    let mut ids = hashbrown::HashSet::with_capacity(clients.len());
    for (i, c) in clients.iter().enumerate() {
        if !ids.insert(c.client_id.as_str()) {
            return err(format!("api_keys.clients[{i}].client_id"), format!("duplicate client id {:?}", c.client_id));
        }
    }
    drop(ids);
    Ok(ApiKeys { sources, hide_credentials: a.hide_credentials, clients, keys })
}

pub(crate) fn validate_endpoint(path: &str, e: &RawEndpoint) -> Result<u64, ConfigError> {
    if e.cluster.is_empty() {
        return err(format!("{path}.cluster"), "must name an Envoy cluster (Istio: outbound|<port>||<host>)");
    }
    if e.authority.is_empty() {
        return err(format!("{path}.authority"), "must not be empty");
    }
    check_path(&format!("{path}.path"), &e.path)?;
    positive_dur(&format!("{path}.timeout"), e.timeout.as_deref(), 1000)
}

pub(crate) fn validate_introspection(
    i: &RawIntrospection,
    providers: &[Provider],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Introspection, ConfigError> {
    let timeout_ms = validate_endpoint("introspection.endpoint", &i.endpoint)?;
    if i.client_id.is_empty() {
        return err("introspection.client_id", "must not be empty");
    }
    let secret = secret("introspection", "client_secret", i.client_secret.clone(), i.client_secret_env.clone(), env)?;
    let mut sources = Vec::new();
    match &i.from_headers {
        None => sources.push(Source::Header { name: "authorization".into(), prefix: "Bearer ".into() }),
        Some(hs) => {
            if hs.is_empty() {
                return err("introspection.from_headers", "must not be empty (omit it for Authorization: Bearer)");
            }
            for (j, h) in hs.iter().enumerate() {
                let name = header_name(&format!("introspection.from_headers[{j}].name"), &h.name)?;
                sources.push(Source::Header { name, prefix: h.value_prefix.clone().unwrap_or_default() });
            }
        }
    }
    let upstream_header = match &i.upstream_header {
        None => None,
        Some(h) => Some((
            header_name("introspection.upstream_header.name", &h.name)?,
            h.value_prefix.clone().unwrap_or_default(),
        )),
    };
    let mut claim_to_headers = Vec::new();
    for (j, c) in i.claim_to_headers.iter().enumerate() {
        let cp = format!("introspection.claim_to_headers[{j}]");
        let h = header_name(&format!("{cp}.header_name"), &c.header_name)?;
        if h.starts_with(OWNED_PREFIX) {
            return err(
                format!("{cp}.header_name"),
                format!("header names starting with {OWNED_PREFIX:?} are reserved for Portcullis"),
            );
        }
        claim_to_headers.push((h, claim_path(&format!("{cp}.claim_name"), &c.claim_name)?));
    }
    let claims_header = match &i.claims_header {
        None => "x-portcullis-token-claims".to_string(),
        Some(h) => header_name("introspection.claims_header", h)?,
    };
    let verify_with = match &i.verify_with {
        None => None,
        Some(name) => match providers.iter().position(|p| &p.name == name) {
            Some(ix) => Some(ix),
            None => return err("introspection.verify_with", format!("unknown provider {name:?}")),
        },
    };
    let endpoint = intro::Endpoint {
        cluster: i.endpoint.cluster.clone(),
        authority: i.endpoint.authority.clone(),
        path: i.endpoint.path.clone(),
        timeout_ms,
    };
    let mut settings = intro::Settings::new(endpoint, i.client_id.clone(), secret);
    use super::intro::AnswerFormat;
    let format = match i.response_format.as_deref() {
        None => None,
        Some("json") => Some(AnswerFormat::Json),
        Some("token-introspection+jwt") => Some(AnswerFormat::IntrospectionJwt),
        Some("jwt") => Some(AnswerFormat::AccessTokenJwt),
        Some(other) => {
            return err(
                "introspection.response_format",
                format!("must be \"json\", \"token-introspection+jwt\" (RFC 9701) or \"jwt\" (by-value access token), got {other:?}"),
            )
        }
    };
    settings.introspect_jwts = i.introspect_jwts;
    settings.accept = match (format, i.accept_jwt) {
        (Some(f), None) => f,
        (None, Some(true)) => AnswerFormat::IntrospectionJwt,
        (None, Some(false) | None) => AnswerFormat::Json,
        (Some(_), Some(_)) => {
            return err("introspection.accept_jwt", "give response_format or accept_jwt, not both (accept_jwt: true is response_format \"token-introspection+jwt\")")
        }
    };
    if let Some(d) = &i.cache_duration {
        settings.cache_duration_ms = dur("introspection.cache_duration", d)?;
    }
    if let Some(d) = &i.negative_cache_duration {
        settings.negative_cache_duration_ms = dur("introspection.negative_cache_duration", d)?;
    }
    if let Some(p) = &i.opaque_prefix {
        if p.is_empty() {
            return err("introspection.opaque_prefix", "must not be empty");
        }
        settings.opaque_prefix = Some(p.clone());
    }
    if let Some(n) = i.cache_slots {
        if n > 1_048_576 {
            return err("introspection.cache_slots", "must be at most 1048576 (0 disables the cache)");
        }
        settings.cache_slots = n;
    }
    if let Some(n) = i.max_token_bytes {
        if !(16..=65_536).contains(&n) {
            return err("introspection.max_token_bytes", "must be between 16 and 65536");
        }
        settings.max_token_bytes = n as usize;
    }
    // Everything the cached answers depend on (the secret is not printed by Debug); the key
    // set that verifies by-value JWTs is part of it through its provider's namespace.
    let verifier =
        verify_with.and_then(|pi| providers.get(pi)).map(|p| format!("{:?}", p.store_ns)).unwrap_or_default();
    settings.store_ns = crate::store::Namespace::of("introspect", &[&format!("{settings:?}"), &verifier]);
    Ok(Introspection { settings, sources, upstream_header, claims_header, claim_to_headers, verify_with })
}

pub(crate) fn validate_password_grant(
    pg: &RawPasswordGrant,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PasswordGrant, ConfigError> {
    check_path("password_grant.token_path", &pg.token_path)?;
    if pg.identities.is_empty() {
        return err("password_grant.identities", "must list at least one identity backend");
    }
    let mut backends = Vec::new();
    for (i, id) in pg.identities.iter().enumerate() {
        let p = format!("password_grant.identities[{i}]");
        check_name(&format!("{p}.name"), &id.name)?;
        if pg.identities[..i].iter().any(|o| o.name == id.name) {
            return err(format!("{p}.name"), format!("duplicate identity backend name {:?}", id.name));
        }
        let timeout_ms = validate_endpoint(
            &p,
            &RawEndpoint {
                cluster: id.cluster.clone(),
                authority: id.authority.clone(),
                path: id.path.clone(),
                timeout: id.timeout.clone(),
            },
        )?;
        let Some(registered_at) = parse_rfc3339(&id.registered_at) else {
            return err(
                format!("{p}.registered_at"),
                format!("must be an RFC 3339 UTC time like \"2026-03-01T00:00:00Z\", got {:?}", id.registered_at),
            );
        };
        backends.push(Backend {
            name: id.name.clone(),
            cluster: id.cluster.clone(),
            authority: id.authority.clone(),
            path: id.path.clone(),
            timeout_ms,
            registered_at,
        });
    }
    let mode = match pg.mode.as_str() {
        "forward" => {
            let (mut ih, mut xh) = ("x-portcullis-identity".to_string(), "x-portcullis-extra-info".to_string());
            let Some(f) = &pg.forward else {
                return err(
                    "password_grant.forward",
                    "is required when mode is \"forward\": give forward.token_endpoint (the token server)",
                );
            };
            if let Some(h) = &f.identity_header {
                ih = header_name("password_grant.forward.identity_header", h)?;
            }
            if let Some(h) = &f.extra_info_header {
                xh = header_name("password_grant.forward.extra_info_header", h)?;
            }
            let relay = match (&f.token_endpoint, f.hold_headers) {
                (Some(_), true) => {
                    return err(
                        "password_grant.forward.token_endpoint",
                        "not used with hold_headers: the original request goes to the route's upstream",
                    )
                }
                (None, true) => None,
                (None, false) => {
                    return err(
                        "password_grant.forward.token_endpoint",
                        "is required unless hold_headers is true: Portcullis relays token requests to it (cluster, authority, path)",
                    )
                }
                (Some(te), false) => {
                    let timeout_ms = validate_endpoint("password_grant.forward.token_endpoint", te)?;
                    Some(Backend {
                        name: "token-server".into(),
                        cluster: te.cluster.clone(),
                        authority: te.authority.clone(),
                        path: te.path.clone(),
                        timeout_ms,
                        registered_at: 0,
                    })
                }
            };
            GrantMode::Forward { identity_header: ih, extra_info_header: xh, relay }
        }
        "issue" => {
            let Some(is) = &pg.issue else {
                return err("password_grant.issue", "is required when mode is \"issue\"");
            };
            if is.issuer.is_empty() {
                return err("password_grant.issue.issuer", "must not be empty");
            }
            let Some(alg) = crate::crypto::issue::SigningAlg::parse(&is.algorithm) else {
                return err(
                    "password_grant.issue.algorithm",
                    format!("must be \"ES256\", \"RS256\" or \"EdDSA\", got {:?}", is.algorithm),
                );
            };
            let pem = secret(
                "password_grant.issue",
                "signing_key_pem",
                is.signing_key_pem.clone(),
                is.signing_key_pem_env.clone(),
                env,
            )?;
            if is.kid.is_empty() {
                return err("password_grant.issue.kid", "must not be empty");
            }
            for (j, a) in is.audiences.iter().enumerate() {
                if a.is_empty() {
                    return err(format!("password_grant.issue.audiences[{j}]"), "must not be empty");
                }
            }
            let lifetime_s = match &is.lifetime {
                None => 900,
                Some(l) => {
                    let ms = dur("password_grant.issue.lifetime", l)?;
                    if !(1000..=86_400_000).contains(&ms) {
                        return err("password_grant.issue.lifetime", "must be between 1s and 86400s");
                    }
                    ms / 1000
                }
            };
            let jwks_path = match &is.jwks_path {
                None => "/.well-known/portcullis/jwks.json".to_string(),
                Some(j) => {
                    check_path("password_grant.issue.jwks_path", j)?;
                    j.clone()
                }
            };
            let key_field = if is.signing_key_pem_env.is_some() { "signing_key_pem_env" } else { "signing_key_pem" };
            let issuer =
                crate::crypto::issue::Issuer::from_pem(&is.issuer, &is.audiences, lifetime_s, alg, &is.kid, &pem)
                    .map_err(|e| ConfigError { path: format!("password_grant.issue.{key_field}"), message: e })?;
            GrantMode::Issue { issuer: std::rc::Rc::new(issuer), jwks_path }
        }
        other => return err("password_grant.mode", format!("must be \"forward\" or \"issue\", got {other:?}")),
    };
    let lockout = match &pg.lockout {
        None => None,
        Some(l) => {
            if l.max_failures == 0 || l.max_failures > 1000 {
                return err("password_grant.lockout.max_failures", "must be between 1 and 1000");
            }
            let window_ms = positive_dur("password_grant.lockout.window", Some(&l.window), 0)?;
            let block_ms = positive_dur("password_grant.lockout.block", Some(&l.block), 0)?;
            Some(LockoutPolicy { max_failures: l.max_failures, window_ms, block_ms })
        }
    };
    let lockout_slots = match pg.lockout.as_ref().and_then(|l| l.max_subjects) {
        None => DEFAULT_LOCKOUT_SLOTS,
        Some(n) if (16..=1_048_576).contains(&n) => n,
        Some(_) => return err("password_grant.lockout.max_subjects", "must be between 16 and 1048576"),
    };
    let max_body_bytes = match pg.max_body_bytes {
        None => DEFAULT_MAX_BODY,
        Some(n) if (256..=1_048_576).contains(&n) => n as usize,
        Some(_) => return err("password_grant.max_body_bytes", "must be between 256 and 1048576"),
    };
    let fingerprint = format!("{lockout:?}/{lockout_slots}");
    let lockout_ns = LockoutTables {
        users: crate::store::Namespace::of("lockout-user", &[&fingerprint, &pg.token_path]),
        addresses: crate::store::Namespace::of("lockout-addr", &[&fingerprint, &pg.token_path]),
    };
    Ok(PasswordGrant {
        lockout_slots,
        lockout_ns,
        token_path: pg.token_path.clone(),
        backends: order(&backends),
        mode,
        lockout,
        max_body_bytes,
    })
}
