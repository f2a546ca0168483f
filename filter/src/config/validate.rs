//! Phase 2: the document as a whole — modes, routes and their cross-references to providers,
//! plans and credential methods, and the owned-header registry.

use std::collections::BTreeMap;

use super::*;

pub(crate) fn validate(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let mode = match raw.mode.as_deref() {
        None | Some("enforce") => Mode::Enforce,
        Some("shadow") => Mode::Shadow,
        Some(other) => return err("mode", format!("must be \"enforce\" or \"shadow\", got {other:?}")),
    };
    let realm = raw.realm.unwrap_or_else(|| "portcullis".into());
    if realm.is_empty()
        || realm.len() > 128
        || !realm.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return err("realm", "must be 1-128 printable ASCII characters without quotes or backslashes");
    }
    let stats_instance = raw.stats_instance;
    if let Some(i) = &stats_instance {
        if i.is_empty() || i.len() > 32 || !i.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return err("stats_instance", "must be 1-32 characters of a-z, 0-9 and _");
        }
    }
    let on_dependency_down = match raw.on_dependency_down.as_deref() {
        None | Some("fail_closed") => DependencyDown::FailClosed,
        Some("anonymous") => DependencyDown::Anonymous,
        Some(other) => {
            return err("on_dependency_down", format!("must be \"fail_closed\" or \"anonymous\", got {other:?}"))
        }
    };
    let crypto = match raw.crypto.as_deref() {
        None | Some("auto") => CryptoMode::Auto,
        Some("pure") if !crate::crypto::PURE => return err(
            "crypto",
            "\"pure\" needs the pure-Rust build (portcullis.wasm): this module (portcullis-native.wasm) verifies and \
                 signs through the host only",
        ),
        Some("pure") => CryptoMode::Pure,
        Some(other) => return err("crypto", format!("must be \"auto\" or \"pure\", got {other:?}")),
    };
    let verified_token_cache_size = match raw.verified_token_cache_size {
        None => 1024,
        Some(n) if n <= 100_000 => n as usize,
        Some(_) => return err("verified_token_cache_size", "must be at most 100000"),
    };
    // jwt_authn's per-provider `jwt_cache_config.jwt_cache_size` raises the (shared) cache.
    let from_providers = raw
        .providers
        .values()
        .filter_map(|p| p.jwt_cache_config.as_ref()?.jwt_cache_size)
        .max()
        .map_or(0, |n| n.min(100_000) as usize);
    let verified_token_cache_size = verified_token_cache_size.max(from_providers);

    // Rate-limit plans come first: API-key clients and routes refer to them.
    let mut plans = BTreeMap::new();
    let mut default_plan = None;
    let mut rate_limit = None;
    if let Some(rl) = raw.rate_limit {
        for (name, p) in rl.plans {
            let path = format!("rate_limit.plans.{name}");
            check_name(&path, &name)?;
            if p.requests == 0 {
                return err(format!("{path}.requests"), "must be at least 1");
            }
            let per_ms = dur(&format!("{path}.per"), &p.per)?;
            if !(1000..=86_400_000).contains(&per_ms) {
                return err(format!("{path}.per"), "must be between 1s and 86400s");
            }
            let burst = p.burst.unwrap_or(p.requests);
            if burst == 0 {
                return err(format!("{path}.burst"), "must be at least 1");
            }
            if burst > 1_000_000_000 || p.requests > 1_000_000_000 {
                return err(path, "requests and burst must be at most 1000000000");
            }
            let global = match p.global {
                None => None,
                Some(g) => {
                    if g.cluster.is_empty() {
                        return err(
                            format!("{path}.global.cluster"),
                            "must name the Envoy cluster (HTTP/2) of the rate limit service",
                        );
                    }
                    if g.domain.is_empty() {
                        return err(format!("{path}.global.domain"), "must not be empty");
                    }
                    let timeout_ms = positive_dur(&format!("{path}.global.timeout"), g.timeout.as_deref(), 500)?;
                    Some(GlobalLimit { cluster: g.cluster, domain: g.domain, timeout_ms })
                }
            };
            plans.insert(name, Plan { requests: p.requests, per_ms, burst, global });
        }
        if let Some(dp) = rl.default_plan {
            if !plans.contains_key(&dp) {
                return err("rate_limit.default_plan", unknown_plan(&dp, &plans));
            }
            default_plan = Some(dp);
        }
        if plans.is_empty() {
            return err("rate_limit.plans", "must define at least one plan");
        }
        let max_clients = rl.max_clients.unwrap_or(65_536);
        if !(16..=4_194_304).contains(&max_clients) {
            return err("rate_limit.max_clients", "must be between 16 and 4194304");
        }
        let plan_claim = match rl.plan_claim {
            None => None,
            Some(c) => Some(claim_path("rate_limit.plan_claim", &c)?),
        };
        let fingerprint = [format!("{plans:?}"), max_clients.to_string()];
        let parts: Vec<&str> = fingerprint.iter().map(String::as_str).collect();
        let store_ns = crate::store::Namespace::of("rl", &parts);
        let anonymous_ns = crate::store::Namespace::of("rl-anon", &parts);
        rate_limit = Some(RateLimitSettings { max_clients, store_ns, anonymous_ns, headers: rl.headers, plan_claim });
    }

    let mut providers = Vec::new();
    for (name, p) in raw.providers {
        let path = if name.is_empty() { "providers[\"\"]".to_string() } else { format!("providers.{name}") };
        check_name(&path, &name)?;
        if RESERVED_METHOD_NAMES.contains(&name.as_str()) {
            return err(
                path,
                format!("{name:?} is reserved for a built-in credential method; choose another provider name"),
            );
        }
        providers.push(validate_provider(&path, name, p, env, &mut warnings)?);
    }

    let api_keys = match raw.api_keys {
        None => None,
        Some(a) => Some(validate_api_keys(a, &plans)?),
    };

    let introspection = match &raw.introspection {
        None => None,
        Some(i) => Some(validate_introspection(i, &providers, env)?),
    };
    let password_grant = match &raw.password_grant {
        None => None,
        Some(pg) => Some(validate_password_grant(pg, env)?),
    };
    let events = match &raw.events {
        None => Events::default(),
        Some(ev) => super::events::validate_events(ev, env)?,
    };
    let revocation = match &raw.revocation {
        None => None,
        Some(r) => Some(super::events::validate_revocation(r)?),
    };
    let rules = super::events::validate_rules(&raw.rules, &events)?;

    let ctx = MethodCtx { providers: &providers, api_keys: api_keys.is_some(), introspection: introspection.is_some() };
    let default_requires = match raw.requires {
        Some(r) => validate_requires("requires", r, &ctx)?,
        None => {
            let mut all: Vec<Method> = (0..providers.len()).map(Method::Provider).collect();
            if api_keys.is_some() {
                all.push(Method::ApiKey);
            }
            if introspection.is_some() {
                all.push(Method::Introspection);
            }
            if all.is_empty() {
                Requires::None
            } else {
                Requires::Any(all)
            }
        }
    };

    let routes = validate_routes(raw.routes, &ctx, &default_requires, &plans)?;

    let mut owned_headers: Vec<String> = vec![];
    let credential: Vec<&str> = credential_headers(&providers, api_keys.as_ref()).collect();
    for p in &providers {
        let mut set_here: Vec<(String, &String)> = Vec::new();
        if let Some(h) = &p.forward_payload_header {
            set_here.push((format!("providers.{}.forward_payload_header", p.name), h));
        }
        for (i, (h, _)) in p.claim_to_headers.iter().enumerate() {
            set_here.push((format!("providers.{}.claim_to_headers[{i}].header_name", p.name), h));
        }
        for (path, h) in set_here {
            if credential.contains(&h.as_str()) {
                return err(path, format!("header {h:?} is also a credential source; Portcullis would overwrite it"));
            }
            if h.starts_with(OWNED_PREFIX) {
                return err(path, format!("header names starting with {OWNED_PREFIX:?} are reserved for Portcullis"));
            }
            owned_headers.push(h.clone());
        }
    }
    if let Some(i) = &introspection {
        owned_headers.push(i.claims_header.clone());
        // Where the by-value JWT goes upstream: an inbound copy must never survive, unless it
        // is the credential header itself (then it is the caller's token, stripped whenever
        // introspection takes it).
        if let Some((h, _)) = &i.upstream_header {
            let is_source = i.sources.iter().any(|s| matches!(s, Source::Header { name, .. } if name == h));
            if !is_source {
                owned_headers.push(h.clone());
            }
        }
        for (h, _) in &i.claim_to_headers {
            owned_headers.push(h.clone());
        }
    }
    if let Some(PasswordGrant { mode: GrantMode::Forward { identity_header, extra_info_header, .. }, .. }) =
        &password_grant
    {
        owned_headers.push(identity_header.clone());
        owned_headers.push(extra_info_header.clone());
    }
    // Compared after folding `_` to `-` (see `flow::mutations::is_owned`).
    for h in &mut owned_headers {
        *h = h.replace('_', "-");
    }
    owned_headers.sort();
    owned_headers.dedup();
    // A condition on a header Portcullis owns would read the client's forged copy: the route
    // match and `when` run before owned headers are stripped.
    for (i, r) in routes.iter().enumerate() {
        let lists = [("match.headers", &r.headers), ("when", &r.when)];
        for (field, list) in lists {
            for (j, c) in list.iter().enumerate() {
                let super::route::AttrKey::Header(name) = &c.key else { continue };
                let folded = name.replace('_', "-");
                if folded.starts_with(OWNED_PREFIX) || owned_headers.contains(&folded) {
                    return err(
                        format!("routes[{i}].{field}[{j}]"),
                        format!(
                            "{name:?} is a header Portcullis sets (a client can forge an inbound copy): use client.id, claims or request.auth.* instead"
                        ),
                    );
                }
            }
        }
    }

    let route_modes = routes.iter().any(|r| r.mode.is_some());
    Ok(Config {
        route_modes,
        mode,
        bypass_cors_preflight: raw.bypass_cors_preflight,
        events,
        revocation,
        rules,
        realm,
        stats_instance,
        providers,
        api_keys,
        plans,
        default_plan,
        rate_limit,
        introspection,
        password_grant,
        routes,
        default_requires,
        on_dependency_down,
        crypto,
        verified_token_cache_size,
        owned_headers,
        warnings,
    })
}

/// `routes`: each route's match, requirements, scopes, plan, cost, policy and mode.
fn validate_routes(
    raw: Vec<RawRoute>,
    ctx: &MethodCtx,
    default_requires: &Requires,
    plans: &BTreeMap<String, Plan>,
) -> Result<Vec<Route>, ConfigError> {
    let raw_plans_empty = plans.is_empty();
    let mut routes = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let m = r.matcher;
        let path_match = match (m.prefix, m.path) {
            (Some(p), None) => {
                check_route_path(&format!("{path}.match.prefix"), &p)?;
                PathMatch::Prefix(if m.ignore_case { p.to_ascii_lowercase() } else { p })
            }
            (None, Some(p)) => {
                check_route_path(&format!("{path}.match.path"), &p)?;
                PathMatch::Exact(if m.ignore_case { p.to_ascii_lowercase() } else { p })
            }
            (Some(_), Some(_)) => return err(format!("{path}.match"), "give one of prefix or path, not both"),
            (None, None) => return err(format!("{path}.match"), "give one of prefix or path"),
        };
        let methods = match m.methods {
            None => None,
            Some(ms) => {
                if ms.is_empty() {
                    return err(format!("{path}.match.methods"), "must not be empty (omit it to match every method)");
                }
                let mut out = Vec::new();
                for (j, method) in ms.into_iter().enumerate() {
                    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                        return err(
                            format!("{path}.match.methods[{j}]"),
                            format!("{method:?} is not an HTTP method (use upper case, like \"GET\")"),
                        );
                    }
                    out.push(method);
                }
                Some(out)
            }
        };
        let explicit = r.requires.is_some();
        let requires = match r.requires {
            Some(req) => validate_requires(&format!("{path}.requires"), req, ctx)?,
            None => default_requires.clone(),
        };
        for (j, s) in r.scopes.iter().enumerate() {
            check_scope(&format!("{path}.scopes[{j}]"), s)?;
        }
        if !r.scopes.is_empty() && requires == Requires::None {
            return err(
                format!("{path}.scopes"),
                if explicit {
                    "a route that requires \"none\" cannot require scopes"
                } else {
                    "this route requires no credential (no provider or api_keys is configured), so it cannot require scopes"
                },
            );
        }
        if let Some(p) = &r.plan {
            if !plans.contains_key(p) {
                return err(format!("{path}.plan"), unknown_plan(p, plans));
            }
        }
        let cost = r.cost.unwrap_or(1);
        if cost == 0 || cost > 1_000_000 {
            return err(format!("{path}.cost"), "must be between 1 and 1000000");
        }
        let mut hosts = Vec::new();
        if let Some(hs) = &m.hosts {
            if hs.is_empty() {
                return err(format!("{path}.match.hosts"), "must not be empty (omit it to match every host)");
            }
            for (j, h) in hs.iter().enumerate() {
                hosts.push(super::route::host_match(&format!("{path}.match.hosts[{j}]"), h)?);
            }
        }
        let mut headers = Vec::new();
        for (j, h) in m.headers.iter().enumerate() {
            headers.push(super::route::condition(
                &format!("{path}.match.headers[{j}]"),
                &h.name,
                &h.values,
                &h.not_values,
                true,
            )?);
        }
        let mut when = Vec::new();
        for (j, c) in r.when.iter().enumerate() {
            let cond = super::route::condition(&format!("{path}.when[{j}]"), &c.key, &c.values, &c.not_values, false)?;
            if cond.key == super::route::AttrKey::ClientPlan && raw_plans_empty {
                return err(format!("{path}.when[{j}].key"), "client.plan needs rate_limit plans");
            }
            when.push(cond);
        }
        let allowed_clients = match r.allowed_clients {
            None => Vec::new(),
            Some(list) if list.is_empty() => {
                return err(format!("{path}.allowed_clients"), "must not be empty (omit it to allow every client)")
            }
            Some(list) => list,
        };
        if let Some(n) = &r.name {
            check_name(&format!("{path}.name"), n)?;
            if routes.iter().any(|o: &Route| o.name.as_deref() == Some(n.as_str())) {
                return err(format!("{path}.name"), format!("{n:?} names another route too"));
            }
        }
        let route_mode = match r.mode.as_deref() {
            None => None,
            Some("enforce") => Some(Mode::Enforce),
            Some("shadow") => Some(Mode::Shadow),
            Some(other) => {
                return err(format!("{path}.mode"), format!("must be \"enforce\" or \"shadow\", got {other:?}"))
            }
        };
        routes.push(Route {
            mode: route_mode,
            name: r.name.clone(),
            path: path_match,
            ignore_case: m.ignore_case,
            methods,
            requires,
            scopes: r.scopes,
            plan: r.plan,
            cost,
            hosts,
            headers,
            allowed_clients,
            when,
            require_bound_token: r.require_bound_token,
        });
    }

    Ok(routes)
}

pub(crate) fn credential_headers<'a>(
    providers: &'a [Provider],
    api: Option<&'a ApiKeys>,
) -> impl Iterator<Item = &'a str> {
    providers.iter().flat_map(|p| p.sources.iter()).chain(api.into_iter().flat_map(|a| a.sources.iter())).filter_map(
        |s| match s {
            Source::Header { name, .. } => Some(name.as_str()),
            _ => None,
        },
    )
}

pub(crate) struct MethodCtx<'a> {
    providers: &'a [Provider],
    api_keys: bool,
    introspection: bool,
}

pub(crate) fn validate_requires(path: &str, raw: RawRequires, ctx: &MethodCtx) -> Result<Requires, ConfigError> {
    enum Kind {
        Any,
        All,
        Optional,
    }
    let (list, kind, key) = match raw {
        RawRequires::Word(w) if w == "none" => return Ok(Requires::None),
        RawRequires::Word(w) => {
            return err(path, format!("must be \"none\" or an object with \"any\" or \"all\", got {w:?}"));
        }
        RawRequires::List(RawRequiresList { any: Some(a), all: None, optional: None }) => (a, Kind::Any, "any"),
        RawRequires::List(RawRequiresList { any: None, all: Some(a), optional: None }) => (a, Kind::All, "all"),
        RawRequires::List(RawRequiresList { any: None, all: None, optional: Some(a) }) => {
            (a, Kind::Optional, "optional")
        }
        RawRequires::List(_) => return err(path, "give exactly one of \"any\", \"all\" or \"optional\""),
    };
    if list.is_empty() {
        return err(format!("{path}.{key}"), "must not be empty (use \"none\" for anonymous access)");
    }
    let mut methods = Vec::new();
    for (i, name) in list.iter().enumerate() {
        let p = format!("{path}.{key}[{i}]");
        let m = if name == "api_key" {
            if !ctx.api_keys {
                return err(p, "\"api_key\" is named but api_keys is not configured");
            }
            Method::ApiKey
        } else if name == "introspection" {
            if !ctx.introspection {
                return err(p, "\"introspection\" is named but introspection is not configured");
            }
            Method::Introspection
        } else if name == "mtls" {
            Method::Mtls
        } else if name == "none" {
            return err(p, "\"none\" cannot be combined with other methods; use requires: \"none\"");
        } else if let Some(i) = ctx.providers.iter().position(|pr| &pr.name == name) {
            Method::Provider(i)
        } else {
            let mut known: Vec<&str> = ctx.providers.iter().map(|p| p.name.as_str()).collect();
            if ctx.api_keys {
                known.push("api_key");
            }
            if ctx.introspection {
                known.push("introspection");
            }
            if known.is_empty() {
                return err(p, format!("unknown credential method {name:?} (no providers or api_keys are configured)"));
            }
            return err(p, format!("unknown credential method {name:?} (known: {})", known.join(", ")));
        };
        if methods.contains(&m) {
            return err(p, format!("{name:?} is listed twice"));
        }
        methods.push(m);
    }
    Ok(match kind {
        Kind::Any => Requires::Any(methods),
        Kind::All => Requires::All(methods),
        Kind::Optional => Requires::Optional(methods),
    })
}
