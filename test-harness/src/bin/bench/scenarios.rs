//! What is measured: the loads wrk sends, the variants (a listener and a load), the scenario
//! table (each a variant compared with another, with its target ratio: issue 16's targets,
//! which supersede SPEC §5's), and the
//! plan that builds every listener and variant from the generated inputs.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::configs::{
    bearer_source, native_api_key, native_jwt, native_local_ratelimit, noop_filter, pc_api_keys, pc_jwt, pc_rate_limit,
    portcullis, Listener,
};
use crate::{Settings, API_KEYS, ISSUER};

/// What wrk sends.
#[derive(Clone)]
pub(crate) enum Load {
    /// The same header on every request.
    Header(&'static str, String),
    /// The next credential of a file on every request (`bench/tokens.lua`).
    Tokens { file: PathBuf, count: usize, header: &'static str, prefix: &'static str },
}

impl Load {
    /// The first request's header, for the pre-flight check.
    pub(crate) fn first(&self) -> Result<(String, String), String> {
        match self {
            Load::Header(h, v) => Ok((h.to_string(), v.clone())),
            Load::Tokens { file, header, prefix, .. } => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
                let first = text.lines().next().unwrap_or_default();
                Ok((header.to_string(), format!("{prefix}{first}")))
            }
        }
    }
}

/// One measured thing: a listener and a load.
pub(crate) struct Variant {
    pub(crate) key: &'static str,
    pub(crate) label: &'static str,
    pub(crate) listener: &'static str,
    pub(crate) load: Load,
}

pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) variant: &'static str,
    pub(crate) compared_with: &'static str,
    /// `None`: reported without a pass mark.
    pub(crate) target: Option<f64>,
}

pub(crate) const SCENARIOS: [Scenario; 10] = [
    Scenario {
        name: "JWT, repeated token (cache hit)",
        variant: "pc_jwt_repeat",
        compared_with: "native_jwt_cache",
        target: Some(0.9),
    },
    Scenario {
        name: "JWT RS256, unique tokens (no cache)",
        variant: "pc_rs256_unique",
        compared_with: "native_rs256_unique",
        target: Some(1.0),
    },
    Scenario {
        name: "JWT ES256, unique tokens",
        variant: "pc_es256_unique",
        compared_with: "native_es256_unique",
        target: Some(1.0),
    },
    Scenario {
        name: "API key (10,000 keys)",
        variant: "pc_api_key",
        compared_with: "native_api_key",
        target: Some(0.9),
    },
    Scenario {
        name: "JWT + rate limit (allowed)",
        variant: "pc_jwt_ratelimit",
        compared_with: "native_jwt_ratelimit",
        target: Some(0.8),
    },
    Scenario {
        name: "JWT cache hit, route with three `when` conditions",
        variant: "pc_jwt_when",
        compared_with: "pc_jwt_repeat",
        target: Some(0.95),
    },
    Scenario {
        name: "JWT cache hit with events and three rules",
        variant: "pc_jwt_events",
        compared_with: "pc_jwt_repeat",
        target: Some(0.95),
    },
    Scenario {
        name: "Phantom token, cache hit",
        variant: "pc_phantom",
        compared_with: "pc_jwt_repeat",
        target: Some(0.95),
    },
    Scenario {
        name: "RS256 unique, `crypto: pure` (no native path)",
        variant: "pc_rs256_pure",
        compared_with: "pc_rs256_unique",
        target: None,
    },
    Scenario {
        name: "ES256 unique, `crypto: pure` (no native path)",
        variant: "pc_es256_pure",
        compared_with: "pc_es256_unique",
        target: None,
    },
];

/// What the listeners and loads are made of.
pub(crate) struct Inputs<'a> {
    pub(crate) jwks: &'a str,
    /// The repeated RS256 token.
    pub(crate) repeat: &'a str,
    /// Token files (path, count).
    pub(crate) rs: &'a (PathBuf, usize),
    pub(crate) es: &'a (PathBuf, usize),
    pub(crate) api_keys: &'a [String],
    pub(crate) opaque: &'a str,
    pub(crate) idp_issuer: &'a str,
}

pub(crate) fn plan(s: &Settings, i: &Inputs) -> (Vec<Listener>, Vec<Variant>) {
    let Inputs { jwks, repeat, rs, es, api_keys, opaque, idp_issuer } = *i;
    let w = &s.wasm;
    let mut jwt_pure = pc_jwt(jwks);
    jwt_pure["crypto"] = json!("pure");
    let mut jwt_rl = pc_jwt(jwks);
    jwt_rl["rate_limit"] = pc_rate_limit();
    // The phantom token: an opaque token introspected at the IdP, which answers the by-value
    // JWT (`response_format: "jwt"`); the JWT is verified with the IdP's key on a miss, not on a hit.
    let phantom = json!({
        "providers": {"idp": {
            "issuer": idp_issuer,
            "local_jwks": {"inline_string": jwks},
            "from_headers": [{"name": "x-bench-unused-idp-token"}]
        }},
        "introspection": {
            "endpoint": {"cluster": "idp", "authority": "127.0.0.1", "path": "/introspect", "timeout": "1s"},
            "client_id": "gateway",
            "client_secret": "gateway-secret",
            "response_format": "jwt",
            "verify_with": "idp",
            "from_headers": bearer_source(),
            "upstream_header": {"name": "authorization", "value_prefix": "Bearer "},
            "cache_duration": "300s"
        },
        "requires": {"any": ["introspection"]}
    });
    // The JWT listener with one route holding three conditions the repeated token satisfies:
    // a claim, a header the load sends, and an address range the client is outside of.
    let mut jwt_when = pc_jwt(jwks);
    jwt_when["routes"] = json!([{
        "match": {"prefix": "/"},
        "requires": {"any": ["bench"]},
        "when": [
            {"key": "request.auth.claims[iss]", "values": [ISSUER]},
            {"key": "request.headers[authorization]", "values": ["Bearer *"]},
            {"key": "source.ip", "notValues": ["203.0.113.0/24", "2001:db8::/32"]}
        ]
    }]);
    // The JWT listener with a sink and the three rules of the README (none counts allowed
    // requests, as in production: allowed requests are only counted by rules on `allowed`).
    let mut jwt_events = pc_jwt(jwks);
    jwt_events["events"] = json!({"sinks": {"siem": {"cluster": "bench_sink", "path": "/ingest"}}});
    jwt_events["rules"] = json!([
        {"name": "brute-force-user", "on": {"kind": "login_failed"}, "key": "username",
         "threshold": 5, "window": "60s", "actions": [{"alert": "siem"}, {"block": "300s"}]},
        {"name": "bad-credentials", "on": {"kind": "denied", "reasons": ["api_key_invalid", "token_signature"]},
         "key": "source", "threshold": 20, "window": "60s", "actions": [{"block": "600s"}, {"alert": "siem"}]},
        {"name": "account-sharing", "on": {"kind": "login_succeeded"}, "key": "username",
         "distinct": "source", "threshold": 5, "window": "3600s", "actions": [{"alert": "siem"}]}
    ]);
    let l = |name: &'static str, filters: Vec<Value>| Listener { name, filters, portcullis: false };
    let p =
        |name: &'static str, cfg: &Value| Listener { name, filters: vec![portcullis(w, name, cfg)], portcullis: true };
    let listeners = vec![
        l("none", vec![]),
        l("noop", vec![noop_filter(&s.noop, "noop")]),
        l("raw", vec![noop_filter(&s.raw, "raw")]),
        l("native_jwt", vec![native_jwt(jwks, false)]),
        l("native_jwt_cache", vec![native_jwt(jwks, true)]),
        l("native_api_key", vec![native_api_key(api_keys)]),
        l("native_jwt_rl", vec![native_jwt(jwks, true), native_local_ratelimit()]),
        p("pc_jwt", &pc_jwt(jwks)),
        p("pc_jwt_pure", &jwt_pure),
        p("pc_api_key", &json!({"api_keys": pc_api_keys(api_keys)})),
        p("pc_jwt_rl", &jwt_rl),
        p("pc_phantom", &phantom),
        p("pc_jwt_when", &jwt_when),
        p("pc_jwt_events", &jwt_events),
    ];
    let bearer = |t: &str| Load::Header("authorization", format!("Bearer {t}"));
    let tokens = |f: &(PathBuf, usize)| Load::Tokens {
        file: f.0.clone(),
        count: f.1,
        header: "authorization",
        prefix: "Bearer ",
    };
    let key = Load::Header("x-api-key", api_keys[API_KEYS / 2].clone());
    let v = |key: &'static str, label: &'static str, listener: &'static str, load: Load| Variant {
        key,
        label,
        listener,
        load,
    };
    let variants = vec![
        v("no_filter", "Envoy, no filter", "none", bearer(repeat)),
        v("raw_noop_wasm", "raw no-op Wasm filter, no SDK (reads one header)", "raw", bearer(repeat)),
        v("noop_wasm", "SDK no-op Wasm filter (reads one header)", "noop", bearer(repeat)),
        v(
            "native_jwt_cache",
            "native jwt_authn + jwt_cache_config, repeated token",
            "native_jwt_cache",
            bearer(repeat),
        ),
        v("native_rs256_unique", "native jwt_authn, unique RS256", "native_jwt", tokens(rs)),
        v("native_es256_unique", "native jwt_authn, unique ES256", "native_jwt", tokens(es)),
        v("native_api_key", "native api_key_auth, 10,000 keys", "native_api_key", key.clone()),
        v("native_jwt_ratelimit", "native jwt_authn (cache) + local_ratelimit", "native_jwt_rl", bearer(repeat)),
        v("pc_jwt_repeat", "Portcullis JWT, repeated token", "pc_jwt", bearer(repeat)),
        v("pc_rs256_unique", "Portcullis JWT, unique RS256", "pc_jwt", tokens(rs)),
        v("pc_es256_unique", "Portcullis JWT, unique ES256", "pc_jwt", tokens(es)),
        v("pc_api_key", "Portcullis API key, 10,000 keys", "pc_api_key", key),
        v("pc_jwt_ratelimit", "Portcullis JWT + rate limit", "pc_jwt_rl", bearer(repeat)),
        v("pc_phantom", "Portcullis phantom token, cache hit", "pc_phantom", bearer(opaque)),
        v("pc_jwt_when", "Portcullis JWT, repeated token, 3 when conditions", "pc_jwt_when", bearer(repeat)),
        v("pc_jwt_events", "Portcullis JWT, repeated token, events + 3 rules", "pc_jwt_events", bearer(repeat)),
        v("pc_rs256_pure", "Portcullis JWT, unique RS256, crypto: pure", "pc_jwt_pure", tokens(rs)),
        v("pc_es256_pure", "Portcullis JWT, unique ES256, crypto: pure", "pc_jwt_pure", tokens(es)),
    ];
    (listeners, variants)
}
