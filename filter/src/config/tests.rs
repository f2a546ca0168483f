#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

/// RFC 7517 appendix A.1's RSA public key modulus.
const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

const HASH_A: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
const HASH_B: &str = "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9";
const SECRET_40: &str = "0123456789abcdef0123456789abcdef01234567";

fn jwks_doc() -> String {
    format!(r#"{{"keys":[{{"kty":"RSA","n":"{RSA_N}","e":"AQAB","alg":"RS256","kid":"2011-04-29"}}]}}"#)
}

/// Expands placeholders: `@JWKS@` → the JWKS document as a JSON string literal,
/// `@CORP@` → a valid provider object using it, `@HASH_A@`/`@HASH_B@` → key hashes.
fn expand(template: &str) -> String {
    let jwks_literal = serde_json::to_string(&jwks_doc()).unwrap();
    template
        .replace("@CORP@", r#"{"issuer":"https://idp.example.com","local_jwks":{"inline_string":@JWKS@}}"#)
        .replace("@JWKS@", &jwks_literal)
        .replace("@HASH_A@", HASH_A)
        .replace("@HASH_B@", HASH_B)
}

fn test_env(name: &str) -> Option<String> {
    match name {
        "HMAC_SECRET" => Some(SECRET_40.into()),
        "SHORT_SECRET" => Some("too-short".into()),
        "EMPTY" => Some(String::new()),
        "JWKS" => Some(jwks_doc()),
        _ => None,
    }
}

fn load(template: &str) -> Result<Config, ConfigError> {
    parse(expand(template).as_bytes(), &test_env)
}

fn load_ok(template: &str) -> Config {
    match load(template) {
        Ok(c) => c,
        Err(e) => panic!("config {template} should load, got: {e}"),
    }
}

/// Invalid configurations and the exact error an operator sees (`path: message`).
const INVALID: &[(&str, &str)] = &[
    // The document itself.
    ("", "configuration is empty: give a JSON object (see README)"),
    ("  \n\t ", "configuration is empty: give a JSON object (see README)"),
    ("not json", "configuration is not valid JSON: expected ident at line 1 column 2"),
    ("{} x", "configuration is not valid JSON: trailing characters at line 1 column 4"),
    ("{}{}", "configuration is not valid JSON: trailing characters at line 1 column 3"),
    (r#"{"mode":"enforce","mode":"shadow"}"#, "mode: duplicate field `mode`"),
    // Unknown fields, top level and nested.
    (
        r#"{"modes":"shadow"}"#,
        "modes: unknown field `modes`, expected one of `mode`, `realm`, `stats_instance`, `providers`, `api_keys`, `introspection`, \
         `password_grant`, `rate_limit`, `routes`, `requires`, `events`, `on_dependency_down`, `crypto`, \
         `verified_token_cache_size`, `bypass_cors_preflight`, `rules`, `revocation`",
    ),
    (
        r#"{"providers":{"corp":{"issuer":"https://idp.example.com","audience":["x"]}}}"#,
        "providers.corp.audience: unknown field `audience`, expected one of `issuer`, `audiences`, `remote_jwks`, \
         `local_jwks`, `discovery`, `from_headers`, `from_params`, `from_cookies`, `forward`, \
         `forward_payload_header`, `claim_to_headers`, `claim_separator`, `clock_skew_seconds`, `max_lifetime`, \
         `require_expiration`, `max_token_bytes`, `client_id_claim`, `payload_in_metadata`, \
         `payload_in_filter_state`, `subjects`, `jwt_cache_config`, `normalize_payload_in_metadata`, \
         `pad_forward_payload_header`, `header_in_metadata`, `failed_status_in_metadata`, `hmac_secret`, \
         `hmac_secret_env`, `allowed_typ`",
    ),
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://a/j","cluster":"c","timout":"1s"}}}}}"#,
        "providers.corp.remote_jwks.http_uri.timout: unknown field `timout`, expected one of `uri`, `cluster`, `timeout`",
    ),
    // Wrong types and missing required fields.
    (r#"{"mode":1}"#, "mode: invalid type: integer `1`, expected a string"),
    (
        r#"{"providers":{"corp":{"clock_skew_seconds":"60"}}}"#,
        "providers.corp.clock_skew_seconds: invalid type: string \"60\", expected a non-negative integer",
    ),
    (r#"{"verified_token_cache_size":-1}"#, "verified_token_cache_size: invalid value: integer `-1`, expected a non-negative integer"),
    (r#"{"routes":{}}"#, "routes: invalid type: map, expected a sequence"),
    (r#"{"providers":[]}"#, "providers: invalid type: sequence, expected a map"),
    (
        r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a"}]}}"#,
        "api_keys.clients[0]: missing field `keys_sha256`",
    ),
    // Top-level enumerations and limits.
    (r#"{"mode":"Enforce"}"#, "mode: must be \"enforce\" or \"shadow\", got \"Enforce\""),
    (r#"{"stats_instance":"Edge"}"#, "stats_instance: must be 1-32 characters of a-z, 0-9 and _"),
    (r#"{"stats_instance":""}"#, "stats_instance: must be 1-32 characters of a-z, 0-9 and _"),
    (r#"{"stats_instance":"a.b"}"#, "stats_instance: must be 1-32 characters of a-z, 0-9 and _"),
    (r#"{"realm":""}"#, "realm: must be 1-128 printable ASCII characters without quotes or backslashes"),
    (r#"{"realm":"my \"realm\""}"#, "realm: must be 1-128 printable ASCII characters without quotes or backslashes"),
    (
        r#"{"on_dependency_down":"fail_open"}"#,
        "on_dependency_down: must be \"fail_closed\" or \"anonymous\", got \"fail_open\"",
    ),
    (r#"{"crypto":"fast"}"#, "crypto: must be \"auto\" or \"pure\", got \"fast\""),
    (r#"{"verified_token_cache_size":100001}"#, "verified_token_cache_size: must be at most 100000"),
    // Provider names.
    (
        r#"{"providers":{"corp.eu":@CORP@}}"#,
        "providers.corp.eu: name \"corp.eu\" must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
    ),
    (
        r#"{"providers":{"api_key":@CORP@}}"#,
        "providers.api_key: \"api_key\" is reserved for a built-in credential method; choose another provider name",
    ),
    (
        r#"{"providers":{"none":@CORP@}}"#,
        "providers.none: \"none\" is reserved for a built-in credential method; choose another provider name",
    ),
    // Key sources.
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"remote_jwks":{"http_uri":{"uri":"https://idp/jwks","cluster":"idp"}}}}}"#,
        "providers.corp: give exactly one of local_jwks or remote_jwks, not both",
    ),
    (
        r#"{"providers":{"corp":{}}}"#,
        "providers.corp: needs a key source: local_jwks, remote_jwks, or issuer (for OIDC discovery)",
    ),
    (
        r#"{"providers":{"corp":{"audiences":["orders-api"]}}}"#,
        "providers.corp: needs a key source: local_jwks, remote_jwks, or issuer (for OIDC discovery)",
    ),
    (
        r#"{"providers":{"corp":{"issuer":"","local_jwks":{"inline_string":@JWKS@}}}}"#,
        "providers.corp.issuer: must not be empty (omit it to accept any issuer)",
    ),
    (
        r#"{"providers":{"corp":{"issuer":"https://idp.example.com","audiences":[""],"local_jwks":{"inline_string":@JWKS@}}}}"#,
        "providers.corp.audiences[0]: must not be empty",
    ),
    (
        r#"{"providers":{"corp":{"issuer":"https://idp.example.com"}}}"#,
        "providers.corp.discovery: OIDC discovery needs the Envoy cluster that reaches the issuer: set discovery.cluster",
    ),
    (
        r#"{"providers":{"corp":{"issuer":"idp.example.com","discovery":{"cluster":"idp"}}}}"#,
        "providers.corp.issuer: must be an http(s) URL for OIDC discovery",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"discovery":{"cluster":"idp"}}}}"#,
        "providers.corp.discovery: only used when neither local_jwks nor remote_jwks is given",
    ),
    // remote_jwks.
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"ftp://idp.example.com/jwks","cluster":"idp"}}}}}"#,
        "providers.corp.remote_jwks.http_uri.uri: must be an absolute http(s) URL, got \"ftp://idp.example.com/jwks\"",
    ),
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"idp.example.com/jwks","cluster":"idp"}}}}}"#,
        "providers.corp.remote_jwks.http_uri.uri: must be an absolute http(s) URL, got \"idp.example.com/jwks\"",
    ),
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":""}}}}}"#,
        "providers.corp.remote_jwks.http_uri.cluster: must name the Envoy cluster that reaches the URL's host \
         (Istio: outbound|443||<host>)",
    ),
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp","timeout":"1"}}}}}"#,
        "providers.corp.remote_jwks.http_uri.timeout: invalid duration \"1\": use seconds with an \"s\" suffix, \
         like \"300s\" or \"0.5s\"",
    ),
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp","timeout":"5m"}}}}}"#,
        "providers.corp.remote_jwks.http_uri.timeout: invalid duration \"5m\": use seconds with an \"s\" suffix, \
         like \"300s\" or \"0.5s\"",
    ),
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp","timeout":"0s"}}}}}"#,
        "providers.corp.remote_jwks.http_uri.timeout: must be greater than 0s",
    ),
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp","timeout":"0.0001s"}}}}}"#,
        "providers.corp.remote_jwks.http_uri.timeout: invalid duration \"0.0001s\": at most millisecond precision",
    ),
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp"},"cache_duration":"0.5s"}}}}"#,
        "providers.corp.remote_jwks.cache_duration: must be at least 1s",
    ),
    (
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp"},"max_stale":"forever"}}}}"#,
        "providers.corp.remote_jwks.max_stale: invalid duration \"forever\": use seconds with an \"s\" suffix, \
         like \"300s\" or \"0.5s\"",
    ),
    // local_jwks.
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":"not a key set"}}}}"#,
        "providers.corp.local_jwks.inline_string: not a usable JWKS: expected a JSON object with a \"keys\" array",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"h1\"},{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\",\"kid\":\"tiny\"}]}"}}}}"#,
        "providers.corp.local_jwks.inline_string: no usable key in the set: keys[0] (kid \"h1\") skipped: oct (shared \
         secret) keys are never taken from a key set; configure hmac_secret | keys[1] (kid \"tiny\") skipped: RSA \
         modulus of 17 bits; at least 2048 required",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":"{\"keys\":[]}"}}}}"#,
        "providers.corp.local_jwks.inline_string: no usable key in the set: the \"keys\" array is empty",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@,"inline_string_env":"JWKS"}}}}"#,
        "providers.corp.local_jwks: give one of inline_string or inline_string_env, not both",
    ),
    (r#"{"providers":{"corp":{"local_jwks":{}}}}"#, "providers.corp.local_jwks: give one of inline_string or inline_string_env"),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string_env":"PORTCULLIS_UNSET"}}}}"#,
        "providers.corp.local_jwks.inline_string_env: VM environment variable \"PORTCULLIS_UNSET\" is not set or empty \
         (Envoy: vm_config.environment_variables; Istio: vmConfig.env)",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string_env":"EMPTY"}}}}"#,
        "providers.corp.local_jwks.inline_string_env: VM environment variable \"EMPTY\" is not set or empty \
         (Envoy: vm_config.environment_variables; Istio: vmConfig.env)",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":""}}}}"#,
        "providers.corp.local_jwks.inline_string: must not be empty",
    ),
    // Token sources and claim mapping.
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_headers":[{"name":"x token"}]}}}"#,
        "providers.corp.from_headers[0].name: \"x token\" is not a valid HTTP header name",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_headers":[{"name":"Host"}]}}}"#,
        "providers.corp.from_headers[0].name: \"Host\" cannot be used here",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_headers":[]}}}"#,
        "providers.corp: no token source: give from_headers, from_params or from_cookies",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_params":[""]}}}"#,
        "providers.corp.from_params[0]: must be a non-empty query parameter name",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_cookies":["a=b"]}}}"#,
        "providers.corp.from_cookies[0]: must be a non-empty cookie name",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"claim_to_headers":[{"header_name":"x-user","claim_name":"a..b"}]}}}"#,
        "providers.corp.claim_to_headers[0].claim_name: \"a..b\" is not a claim name (use dots for nested claims, \
         like \"realm_access.roles\")",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"claim_to_headers":[{"header_name":"x user","claim_name":"sub"}]}}}"#,
        "providers.corp.claim_to_headers[0].header_name: \"x user\" is not a valid HTTP header name",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"claim_separator":""}}}"#,
        "providers.corp.claim_separator: must be printable and not empty",
    ),
    // Token checks.
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"clock_skew_seconds":4000}}}"#,
        "providers.corp.clock_skew_seconds: must be at most 3600",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"max_lifetime":"0.5s"}}}"#,
        "providers.corp.max_lifetime: must be at least 1s",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"max_token_bytes":10}}}"#,
        "providers.corp.max_token_bytes: must be between 256 and 1048576",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"client_id_claim":""}}}"#,
        "providers.corp.client_id_claim: \"\" is not a claim name (use dots for nested claims, like \"realm_access.roles\")",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"payload_in_filter_state":""}}}"#,
        "providers.corp.payload_in_filter_state: must not be empty",
    ),
    // HMAC secrets.
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"hmac_secret":"short"}}}"#,
        "providers.corp.hmac_secret: must be at least 32 bytes (RFC 7518 §3.2)",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"hmac_secret":"x","hmac_secret_env":"HMAC_SECRET"}}}"#,
        "providers.corp: give one of hmac_secret or hmac_secret_env, not both",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"hmac_secret_env":"PORTCULLIS_UNSET"}}}"#,
        "providers.corp.hmac_secret_env: VM environment variable \"PORTCULLIS_UNSET\" is not set or empty \
         (Envoy: vm_config.environment_variables; Istio: vmConfig.env)",
    ),
    // API keys.
    (r#"{"api_keys":{}}"#, "api_keys: give from_headers or from_params (where clients send their key)"),
    (
        r#"{"api_keys":{"from_params":["api key"]}}"#,
        "api_keys.from_params[0]: must be a non-empty query parameter name",
    ),
    (
        r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["not-hex"]}]}}"#,
        "api_keys.clients[0].keys_sha256[0]: must be 64 hex characters (the SHA-256 of the key; see `make hash-key`)",
    ),
    (
        r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":[]}]}}"#,
        "api_keys.clients[0].keys_sha256: must hold at least one key hash",
    ),
    (
        r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a b","keys_sha256":["@HASH_A@"]}]}}"#,
        "api_keys.clients[0].client_id: must be 1-128 printable ASCII characters without spaces",
    ),
    (
        r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["@HASH_A@"]},{"client_id":"a","keys_sha256":["@HASH_B@"]}]}}"#,
        "api_keys.clients[1].client_id: duplicate client id \"a\"",
    ),
    (
        r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["@HASH_A@"]},{"client_id":"b","keys_sha256":["@HASH_B@","@HASH_A@"]}]}}"#,
        "api_keys.clients[1].keys_sha256[1]: this key hash is already configured (each key belongs to one client)",
    ),
    (
        r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["@HASH_A@"],"plan":"gold"}]}}"#,
        "api_keys.clients[0].plan: unknown plan \"gold\" (rate_limit.plans is empty)",
    ),
    (
        r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["@HASH_A@"],"scopes":["a b"]}]}}"#,
        "api_keys.clients[0].scopes[0]: \"a b\" is not a valid scope token (RFC 6749 §3.3)",
    ),
    // Routes: matching.
    (r#"{"routes":[{"match":{"prefix":"/a","path":"/a"}}]}"#, "routes[0].match: give one of prefix or path, not both"),
    (r#"{"routes":[{"match":{}}]}"#, "routes[0].match: give one of prefix or path"),
    (
        r#"{"routes":[{"match":{"prefix":"/a/../b"}}]}"#,
        "routes[0].match.prefix: \"/a/../b\" has a dot or empty segment; requests with those are refused, so the route would never match",
    ),
    (
        r#"{"routes":[{"match":{"prefix":"//admin"}}]}"#,
        "routes[0].match.prefix: \"//admin\" has a dot or empty segment; requests with those are refused, so the route would never match",
    ),
    (
        r#"{"routes":[{"match":{"path":"/a;b"}}]}"#,
        "routes[0].match.path: \"/a;b\" holds a character requests are refused for (';', '\\' or non-ASCII)",
    ),
    (
        r#"{"routes":[{"match":{"prefix":"/%61dmin"}}]}"#,
        "routes[0].match.prefix: escape \"%61\" is not canonical: write unreserved characters as themselves and other escapes as %XX with upper-case hex (encoded '/', '\\' and NUL never match)",
    ),
    (
        r#"{"providers":{"p":{"local_jwks":{"inline_string":@JWKS@},"allowed_typ":[]}}}"#,
        "providers.p.allowed_typ: must not be empty (omit it for the default)",
    ),
    (
        r#"{"routes":[{"match":{"prefix":"admin"}}]}"#,
        "routes[0].match.prefix: must start with '/' and hold no spaces, '?' or '#', got \"admin\"",
    ),
    (
        r#"{"routes":[{"match":{"path":"/a?b=1"}}]}"#,
        "routes[0].match.path: must start with '/' and hold no spaces, '?' or '#', got \"/a?b=1\"",
    ),
    (
        r#"{"routes":[{"match":{"prefix":"/","methods":["get"]}}]}"#,
        "routes[0].match.methods[0]: \"get\" is not an HTTP method (use upper case, like \"GET\")",
    ),
    (
        r#"{"routes":[{"match":{"prefix":"/","methods":[]}}]}"#,
        "routes[0].match.methods: must not be empty (omit it to match every method)",
    ),
    // Routes: requirements.
    (
        r#"{"providers":{"corp":@CORP@},"api_keys":{"from_headers":["x-api-key"]},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp","oidc"]}}]}"#,
        "routes[0].requires.any[1]: unknown credential method \"oidc\" (known: corp, api_key)",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":[]}}]}"#,
        "routes[0].requires.any: must not be empty (use \"none\" for anonymous access)",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"all":["corp","api_key"]}}]}"#,
        "routes[0].requires.all[1]: \"api_key\" is named but api_keys is not configured",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"requires":{"any":["api_key"]}}"#,
        "requires.any[0]: \"api_key\" is named but api_keys is not configured",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp","introspection"]}}]}"#,
        "routes[0].requires.any[1]: \"introspection\" is named but introspection is not configured",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":["mtls","mtls"]}}]}"#,
        "routes[0].requires.any[1]: \"mtls\" is listed twice",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/","hosts":["a.example.com:8443"]}}]}"#,
        "routes[0].match.hosts[0]: \"a.example.com:8443\" is not a host or *.domain (a port is not part of it)",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"when":[{"key":"request.time","values":["x"]}]}]}"#,
        "routes[0].when[0].key: unknown key \"request.time\" (known: request.auth.claims[..], request.auth.principal, request.auth.audiences, request.auth.presenter, request.headers[..], source.ip, source.principal, connection.sni, client.id, client.plan)",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"when":[{"key":"source.ip","notValues":["10.0.0.0/99"]}]}]}"#,
        "routes[0].when[0].notValues[0]: \"10.0.0.0/99\": the prefix length must be 0..32",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"when":[{"key":"client.id"}]}]}"#,
        "routes[0].when[0]: give values or notValues (not empty)",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"when":[{"key":"request.headers[x-portcullis-client]","values":["admin"]}]}]}"#,
        "routes[0].when[0]: \"x-portcullis-client\" is a header Portcullis sets (a client can forge an inbound copy): use client.id, claims or request.auth.* instead",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/","headers":[{"name":"X_Portcullis_Auth","values":["api_key"]}]}}]}"#,
        "routes[0].match.headers[0]: \"x_portcullis_auth\" is a header Portcullis sets (a client can forge an inbound copy): use client.id, claims or request.auth.* instead",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"allowed_clients":[]}]}"#,
        "routes[0].allowed_clients: must not be empty (omit it to allow every client)",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/","headers":[{"name":"x tenant","values":["a"]}]}}]}"#,
        "routes[0].match.headers[0].name: \"x tenant\" is not a header name",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp","none"]}}]}"#,
        "routes[0].requires.any[1]: \"none\" cannot be combined with other methods; use requires: \"none\"",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp","corp"]}}]}"#,
        "routes[0].requires.any[1]: \"corp\" is listed twice",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp"],"all":["corp"]}}]}"#,
        "routes[0].requires: give exactly one of \"any\", \"all\" or \"optional\"",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{}}]}"#,
        "routes[0].requires: give exactly one of \"any\", \"all\" or \"optional\"",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":"nobody"}]}"#,
        "routes[0].requires: must be \"none\" or an object with \"any\" or \"all\", got \"nobody\"",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/public"},"requires":"none","scopes":["read"]}]}"#,
        "routes[0].scopes: a route that requires \"none\" cannot require scopes",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"scopes":["a\"b"]}]}"#,
        "routes[0].scopes[0]: \"a\\\"b\" is not a valid scope token (RFC 6749 §3.3)",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"cost":0}]}"#,
        "routes[0].cost: must be between 1 and 1000000",
    ),
    (
        r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"plan":"premium"}]}"#,
        "routes[0].plan: unknown plan \"premium\" (rate_limit.plans is empty)",
    ),
    // Introspection.
    (
        r#"{"introspection":{"endpoint":{"cluster":"idp","authority":"idp","path":"/introspect"},"client_id":"gw","client_secret":"s","client_secret_env":"S"}}"#,
        "introspection: give one of client_secret or client_secret_env, not both",
    ),
    (
        r#"{"introspection":{"endpoint":{"cluster":"","authority":"idp","path":"/introspect"},"client_id":"gw","client_secret":"s"}}"#,
        "introspection.endpoint.cluster: must name an Envoy cluster (Istio: outbound|<port>||<host>)",
    ),
    (
        r#"{"introspection":{"endpoint":{"cluster":"idp","authority":"idp","path":"/introspect"},"client_id":"gw","client_secret":"s","verify_with":"nope"}}"#,
        "introspection.verify_with: unknown provider \"nope\"",
    ),
    (
        r#"{"introspection":{"endpoint":{"cluster":"idp","authority":"idp","path":"/introspect"},"client_id":"gw","client_secret":"s","from_headers":[]}}"#,
        "introspection.from_headers: must not be empty (omit it for Authorization: Bearer)",
    ),
    (
        r#"{"introspection":{"endpoint":{"cluster":"idp","authority":"idp","path":"/introspect"},"client_id":"gw","client_secret":"s","claim_to_headers":[{"header_name":"x-portcullis-x","claim_name":"sub"}]}}"#,
        "introspection.claim_to_headers[0].header_name: header names starting with \"x-portcullis-\" are reserved for Portcullis",
    ),
    // Password grant.
    (
        r#"{"password_grant":{"token_path":"/oauth/token","mode":"forward","identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/auth","registered_at":"2026-03-01"}]}}"#,
        "password_grant.identities[0].registered_at: must be an RFC 3339 UTC time like \"2026-03-01T00:00:00Z\", \
         got \"2026-03-01\"",
    ),
    (
        r#"{"password_grant":{"token_path":"/oauth/token","mode":"bogus","identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/auth","registered_at":"2026-03-01T00:00:00Z"}]}}"#,
        "password_grant.mode: must be \"forward\" or \"issue\", got \"bogus\"",
    ),
    (
        r#"{"password_grant":{"token_path":"/oauth/token","mode":"issue","identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/auth","registered_at":"2026-03-01T00:00:00Z"}]}}"#,
        "password_grant.issue: is required when mode is \"issue\"",
    ),
    (
        r#"{"password_grant":{"token_path":"/oauth/token","mode":"forward","identities":[]}}"#,
        "password_grant.identities: must list at least one identity backend",
    ),
    (
        r#"{"password_grant":{"token_path":"/oauth/token","mode":"forward","identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/a","registered_at":"2026-03-01T00:00:00Z"}]}}"#,
        "password_grant.forward: is required when mode is \"forward\": give forward.token_endpoint (the token server)",
    ),
    (
        r#"{"password_grant":{"token_path":"/oauth/token","mode":"forward","identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/a","registered_at":"2026-03-01T00:00:00Z"},{"name":"ldap","cluster":"id","authority":"id","path":"/b","registered_at":"2025-03-01T00:00:00Z"}]}}"#,
        "password_grant.identities[1].name: duplicate identity backend name \"ldap\"",
    ),
    (
        r#"{"password_grant":{"token_path":"/oauth/token","mode":"issue","issue":{"issuer":"https://gw","algorithm":"ES256","kid":"k","signing_key_pem":"not a pem"},"identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/a","registered_at":"2026-03-01T00:00:00Z"}]}}"#,
        "password_grant.issue.signing_key_pem: must be a PKCS#8 PEM private key (\"-----BEGIN PRIVATE KEY-----\"); \
         convert with `openssl pkcs8 -topk8 -nocrypt`",
    ),
    (
        r#"{"password_grant":{"token_path":"/oauth/token","mode":"forward","forward":{"token_endpoint":{"cluster":"t","authority":"t","path":"/token"}},"lockout":{"max_failures":0,"window":"60s","block":"300s"},"identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/a","registered_at":"2026-03-01T00:00:00Z"}]}}"#,
        "password_grant.lockout.max_failures: must be between 1 and 1000",
    ),
    // Rate limits.
    (
        r#"{"rate_limit":{"plans":{"free":{"requests":0,"per":"60s"}}}}"#,
        "rate_limit.plans.free.requests: must be at least 1",
    ),
    (r#"{"rate_limit":{"plans":{"free":{"requests":100,"per":"0.5s"}}}}"#, "rate_limit.plans.free.per: must be between 1s and 86400s"),
    (r#"{"rate_limit":{"plans":{"free":{"requests":100,"per":"90000s"}}}}"#, "rate_limit.plans.free.per: must be between 1s and 86400s"),
    (r#"{"rate_limit":{"plans":{}}}"#, "rate_limit.plans: must define at least one plan"),
    (r#"{"rate_limit":{"plans":{"free":{"requests":1,"per":"1s","burst":0}}}}"#, "rate_limit.plans.free.burst: must be at least 1"),
    (r#"{"rate_limit":{"plans":{"free":{"requests":1,"per":"1s"}},"max_clients":8}}"#, "rate_limit.max_clients: must be between 16 and 4194304"),
    (
        r#"{"rate_limit":{"plans":{"free":{"requests":1,"per":"1s"}},"plan_claim":"a..b"}}"#,
        "rate_limit.plan_claim: \"a..b\" is not a claim name (use dots for nested claims, like \"realm_access.roles\")",
    ),
    (
        r#"{"rate_limit":{"plans":{"free":{"requests":100,"per":"60s"}},"default_plan":"gold"}}"#,
        "rate_limit.default_plan: unknown plan \"gold\" (rate_limit.plans has: free)",
    ),
    // Events: sinks, sampling, kinds; rules not in this build yet.
    (r#"{"events":{"sample_allowed":1.5}}"#, "events.sample_allowed: must be between 0 and 1"),
    (
        r#"{"events":{"sinks":{"siem":{"cluster":"hooks","path":"/in","batch_max":0}}}}"#,
        "events.sinks.siem.batch_max: must be between 1 and 10000",
    ),
    (
        r#"{"events":{"sinks":{"siem":{"cluster":"hooks","path":"/in","kinds":["denied","nope"]}}}}"#,
        "events.sinks.siem.kinds[1]: unknown kind \"nope\" (known: allowed, denied, rate_limited, login_succeeded, login_failed, locked_out, revoked_used, rule_triggered, dependency_down)",
    ),
    (
        r#"{"events":{"sinks":{"siem":{"cluster":"hooks","path":"/in","headers":[{"name":"authorization","value_env":"NOPE"}]}}}}"#,
        "events.sinks.siem.headers[0].value_env: VM environment variable \"NOPE\" is not set or empty (Envoy: vm_config.environment_variables; Istio: vmConfig.env)",
    ),
    (
        r#"{"events":{"webhooks":[]}}"#,
        "events.webhooks: unknown field `webhooks`, expected one of `log`, `sample_allowed`, `sinks`",
    ),
    (r#"{"rules":[{"name":"r"}]}"#, "rules[0]: missing field `on`"),
    (
        r#"{"rules":[{"name":"r","on":{"kind":"denied"},"key":"ip","threshold":3,"window":"60s","actions":[{"block":"60s"}]}]}"#,
        "rules[0].key: unknown key \"ip\" (known: source, username, client, subject, route, api_key)",
    ),
    (
        r#"{"rules":[{"name":"r","on":{"kind":"denied","reasons":["nope"]},"key":"source","threshold":3,"window":"60s","actions":[{"block":"60s"}]}]}"#,
        "rules[0].on.reasons[0]: unknown reason code \"nope\" (README: Responses)",
    ),
    (
        r#"{"rules":[{"name":"r","on":{"kind":"denied"},"key":"source","threshold":3,"window":"60s","actions":[{"alert":"siem"}]}]}"#,
        "rules[0].actions[0].alert: no sink \"siem\" in events.sinks",
    ),
    (
        r#"{"rules":[{"name":"r","on":{"kind":"denied"},"key":"source","threshold":3,"window":"60s","actions":[{"revoke":"60s"}]}]}"#,
        "rules[0].actions[0].revoke: revoke takes key client, subject or api_key",
    ),
    (
        r#"{"rules":[{"name":"r","on":{"kind":"denied"},"key":"source","window":"60s","actions":[{"block":"60s"}]}]}"#,
        "rules[0]: give threshold, threshold with distinct, or anomaly",
    ),
    (
        r#"{"rules":[{"name":"r","on":{"kind":"login_succeeded"},"key":"username","distinct":"source","threshold":50,"window":"60s","actions":[{"block":"60s"}]}]}"#,
        "rules[0].threshold: with distinct, must be between 2 and 16",
    ),
];

#[test]
fn invalid_configurations_name_the_field() {
    assert!(INVALID.len() >= 35);
    let mut failures = Vec::new();
    for (template, want) in INVALID {
        let got = match load(template) {
            Ok(_) => "<accepted>".to_string(),
            Err(e) => e.to_string(),
        };
        if got != *want {
            failures.push(format!("{template}\n    want: {want}\n    got:  {got}"));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Refusals whose wording was reworked after review (internal type names, "?" paths, empty
/// "known" lists, paths naming fields that do not exist): pinned exactly.
const REWORDED: &[(&str, &str)] = &[
    ("{", "configuration is not valid JSON: EOF while parsing an object at line 1 column 1"),
    (r#"{"mode":"enforce",}"#, "configuration is not valid JSON: trailing comma at line 1 column 19"),
    ("[]", "configuration must be a JSON object"),
    ("null", "configuration must be a JSON object"),
    (r#"{"providers":{"corp":null}}"#, "providers.corp: must be a JSON object"),
    (
        r#"{"requires":5}"#,
        r#"requires: must be "none" or an object {"any": [...]} or {"all": [...]} listing credential method names"#,
    ),
    (
        r#"{"routes":[{"match":{"prefix":"/"},"requires":{"any":"corp"}}]}"#,
        r#"routes[0].requires: must be "none" or an object {"any": [...]} or {"all": [...]} listing credential method names"#,
    ),
    (
        r#"{"providers":{"":@CORP@}}"#,
        r#"providers[""]: name "" must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'"#,
    ),
    (
        r#"{"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp"]}}]}"#,
        r#"routes[0].requires.any[0]: unknown credential method "corp" (no providers or api_keys are configured)"#,
    ),
    (
        r#"{"routes":[{"match":{"prefix":"/public"},"scopes":["read"]}]}"#,
        "routes[0].scopes: this route requires no credential (no provider or api_keys is configured), so it cannot require scopes",
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"claim_to_headers":[{"header_name":"authorization","claim_name":"sub"}]}}}"#,
        r#"providers.corp.claim_to_headers[0].header_name: header "authorization" is also a credential source; Portcullis would overwrite it"#,
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"forward_payload_header":"x-api-key"}},"api_keys":{"from_headers":["x-api-key"]}}"#,
        r#"providers.corp.forward_payload_header: header "x-api-key" is also a credential source; Portcullis would overwrite it"#,
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"claim_to_headers":[{"header_name":"X-Portcullis-Client","claim_name":"sub"}]}}}"#,
        r#"providers.corp.claim_to_headers[0].header_name: header names starting with "x-portcullis-" are reserved for Portcullis"#,
    ),
    (
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"hmac_secret_env":"SHORT_SECRET"}}}"#,
        r#"providers.corp.hmac_secret_env: the value of VM environment variable "SHORT_SECRET" must be at least 32 bytes (RFC 7518 §3.2)"#,
    ),
];

#[test]
fn reworded_refusals() {
    for (template, want) in REWORDED {
        match load(template) {
            Ok(_) => panic!("{template} should be refused"),
            Err(e) => assert_eq!(e.to_string(), *want, "{template}"),
        }
    }
}

#[test]
fn non_utf8_is_refused() {
    let e = parse(b"{\"realm\":\"\xff\"}", &test_env).unwrap_err();
    assert_eq!(e.to_string(), "configuration is not UTF-8");
}

// ---------------------------------------------------------------------------------------------
// Valid configurations.
// ---------------------------------------------------------------------------------------------

#[test]
fn minimal_config_requires_nothing() {
    let c = load_ok("{}");
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.realm, "portcullis");
    assert!(c.providers.is_empty());
    assert!(c.api_keys.is_none());
    assert!(c.plans.is_empty());
    assert_eq!(c.default_plan, None);
    assert!(c.routes.is_empty());
    assert_eq!(c.default_requires, Requires::None);
    assert_eq!(c.on_dependency_down, DependencyDown::FailClosed);
    assert_eq!(c.crypto, CryptoMode::Auto);
    assert_eq!(c.verified_token_cache_size, 1024);
    assert!(c.owned_headers.is_empty());
    assert!(c.warnings.is_empty());
}

#[test]
fn top_level_switches() {
    let c = load_ok(
        r#"{"mode":"shadow","realm":"orders","on_dependency_down":"anonymous","crypto":"pure","verified_token_cache_size":0}"#,
    );
    assert_eq!(c.mode, Mode::Shadow);
    assert_eq!(c.realm, "orders");
    assert_eq!(c.on_dependency_down, DependencyDown::Anonymous);
    assert_eq!(c.crypto, CryptoMode::Pure);
    assert_eq!(c.verified_token_cache_size, 0);
}

/// The SPEC §2 example, minus the parts this build refuses (introspection, password grant,
/// rate limits, events) and with a local key set.
const SPEC_LIKE: &str = r#"{
  "mode": "enforce",
  "providers": {
    "corp": {
      "issuer": "https://idp.example.com",
      "audiences": ["orders-api"],
      "local_jwks": { "inline_string": @JWKS@ }
    }
  },
  "api_keys": {
    "from_headers": ["X-Api-Key"],
    "from_params": ["api_key"],
    "hide_credentials": true,
    "clients": [
      { "client_id": "partner-a", "keys_sha256": ["@HASH_A@", "@HASH_B@"], "scopes": ["orders:read"] },
      { "client_id": "partner-b", "keys_sha256": ["2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AF"], "disabled": true }
    ]
  },
  "routes": [
    { "match": { "prefix": "/admin", "methods": ["POST"] }, "requires": { "any": ["corp", "api_key"] }, "scopes": ["admin"] },
    { "match": { "prefix": "/public" }, "requires": "none" },
    { "match": { "path": "/orders" } }
  ]
}"#;

#[test]
fn spec_like_provider_gets_defaults() {
    let c = load_ok(SPEC_LIKE);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.providers.len(), 1);
    let p = &c.providers[0];
    assert_eq!(p.name, "corp");
    assert_eq!(p.issuer.as_deref(), Some("https://idp.example.com"));
    assert_eq!(p.audiences, vec!["orders-api".to_string()]);
    match &p.keys {
        KeySource::Local(set) => {
            assert_eq!(set.keys.len(), 1);
            assert_eq!(set.keys[0].kid.as_deref(), Some("2011-04-29"));
        }
        other => panic!("expected local keys, got {other:?}"),
    }
    assert_eq!(p.sources, vec![Source::Header { name: "authorization".into(), prefix: "Bearer ".into() }]);
    assert!(!p.forward);
    assert_eq!(p.forward_payload_header, None);
    assert!(p.claim_to_headers.is_empty());
    assert_eq!(p.claim_separator, ",");
    assert_eq!(p.clock_skew_s, 60);
    assert_eq!(p.max_lifetime_s, None);
    assert!(p.require_expiration);
    assert_eq!(p.max_token_bytes, 32768);
    assert_eq!(p.client_id_claims, vec![vec!["client_id".to_string()], vec!["azp".to_string()]]);
    assert_eq!(p.payload_in_filter_state, None);
    assert_eq!(p.hmac_secret, None);

    // Both credential methods are configured: the default accepts either.
    assert_eq!(c.default_requires, Requires::Any(vec![Method::Provider(0), Method::ApiKey]));
}

#[test]
fn spec_like_api_keys() {
    let c = load_ok(SPEC_LIKE);
    let a = c.api_keys.as_ref().unwrap();
    assert_eq!(
        a.sources,
        vec![Source::Header { name: "x-api-key".into(), prefix: String::new() }, Source::Param("api_key".into())]
    );
    assert!(a.hide_credentials);
    assert_eq!(a.clients.len(), 2);
    assert_eq!(a.clients[0].client_id, "partner-a");
    assert_eq!(a.clients[0].scopes, vec!["orders:read".to_string()]);
    assert_eq!(a.clients[0].plan, None);
    assert!(!a.clients[0].disabled);
    assert!(a.clients[1].disabled);
    assert_eq!(a.keys.len(), 3);
    let digest = |h: &str| parse_sha256_hex(h).unwrap();
    assert_eq!(a.keys.get(&digest(HASH_A)), Some(&0));
    assert_eq!(a.keys.get(&digest(HASH_B)), Some(&0));
    // Upper-case hex is accepted and means the same bytes.
    let upper = "2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AF";
    assert_eq!(a.keys.get(&digest(&upper.to_ascii_lowercase())), Some(&1));
}

#[test]
fn spec_like_routes() {
    let c = load_ok(SPEC_LIKE);
    assert_eq!(c.routes.len(), 3);
    let admin = &c.routes[0];
    assert_eq!(admin.path, PathMatch::Prefix("/admin".into()));
    assert_eq!(admin.methods, Some(vec!["POST".to_string()]));
    assert_eq!(admin.requires, Requires::Any(vec![Method::Provider(0), Method::ApiKey]));
    assert_eq!(admin.scopes, vec!["admin".to_string()]);
    assert_eq!(admin.cost, 1);
    let public = &c.routes[1];
    assert_eq!(public.path, PathMatch::Prefix("/public".into()));
    assert_eq!(public.requires, Requires::None);
    assert_eq!(public.methods, None);
    // No requires, no cost: inherits the default and costs 1.
    let orders = &c.routes[2];
    assert_eq!(orders.path, PathMatch::Exact("/orders".into()));
    assert_eq!(orders.requires, c.default_requires);
    assert_eq!(orders.cost, 1);
    assert_eq!(orders.plan, None);
    assert!(orders.scopes.is_empty());
}

#[test]
fn routes_inherit_an_explicit_default_requires() {
    let c = load_ok(
        r#"{"providers":{"corp":@CORP@},"api_keys":{"from_headers":["x-api-key"]},
            "requires":{"all":["api_key","corp"]},
            "routes":[{"match":{"prefix":"/"},"cost":7},{"match":{"prefix":"/x"},"requires":{"any":["corp"]}}]}"#,
    );
    assert_eq!(c.default_requires, Requires::All(vec![Method::ApiKey, Method::Provider(0)]));
    assert_eq!(c.routes[0].requires, c.default_requires);
    assert_eq!(c.routes[0].cost, 7);
    assert_eq!(c.routes[1].requires, Requires::Any(vec![Method::Provider(0)]));
}

#[test]
fn providers_are_indexed_by_name_order() {
    let c = load_ok(
        r#"{"providers":{"zeta":@CORP@,"alpha":@CORP@},
            "routes":[{"match":{"prefix":"/"},"requires":{"any":["zeta"]}}]}"#,
    );
    let names: Vec<&str> = c.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "zeta"]);
    assert_eq!(c.routes[0].requires, Requires::Any(vec![Method::Provider(1)]));
    assert_eq!(c.default_requires, Requires::Any(vec![Method::Provider(0), Method::Provider(1)]));
}

#[test]
fn provider_only_default_requires() {
    let c = load_ok(r#"{"providers":{"corp":@CORP@}}"#);
    assert_eq!(c.default_requires, Requires::Any(vec![Method::Provider(0)]));
    let c = load_ok(r#"{"api_keys":{"from_headers":["x-api-key"]}}"#);
    assert_eq!(c.default_requires, Requires::Any(vec![Method::ApiKey]));
}

#[test]
fn explicit_provider_settings() {
    let c = load_ok(
        r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},
            "from_headers":[{"name":"X-Token"},{"name":"Authorization","value_prefix":"JWT "}],
            "from_params":["access_token"],"from_cookies":["session"],
            "forward":true,"claim_separator":" ","clock_skew_seconds":0,"max_lifetime":"86400.5s",
            "require_expiration":false,"max_token_bytes":256,"client_id_claim":"app.id",
            "payload_in_filter_state":"jwt_payload"}}}"#,
    );
    let p = &c.providers[0];
    assert_eq!(p.issuer, None);
    assert_eq!(
        p.sources,
        vec![
            Source::Header { name: "x-token".into(), prefix: String::new() },
            Source::Header { name: "authorization".into(), prefix: "JWT ".into() },
            Source::Param("access_token".into()),
            Source::Cookie("session".into()),
        ]
    );
    assert!(p.forward);
    assert_eq!(p.claim_separator, " ");
    assert_eq!(p.clock_skew_s, 0);
    assert_eq!(p.max_lifetime_s, Some(86400));
    assert!(!p.require_expiration);
    assert_eq!(p.max_token_bytes, 256);
    assert_eq!(p.client_id_claims, vec![vec!["app".to_string(), "id".to_string()]]);
    assert_eq!(p.payload_in_filter_state.as_deref(), Some("jwt_payload"));
}

#[test]
fn params_only_provider_has_no_default_header() {
    let c = load_ok(r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_params":["token"]}}}"#);
    assert_eq!(c.providers[0].sources, vec![Source::Param("token".into())]);
}

#[test]
fn secrets_from_vm_environment() {
    let c = load_ok(
        r#"{"providers":{"corp":{"local_jwks":{"inline_string_env":"JWKS"},"hmac_secret_env":"HMAC_SECRET"}}}"#,
    );
    let p = &c.providers[0];
    assert_eq!(p.hmac_secret.as_deref(), Some(SECRET_40.as_bytes()));
    assert!(matches!(&p.keys, KeySource::Local(set) if set.keys.len() == 1));

    let c = load_ok(r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"hmac_secret":"@SECRET@"}}}"#
        .replace("@SECRET@", SECRET_40)
        .as_str());
    assert_eq!(c.providers[0].hmac_secret.as_deref(), Some(SECRET_40.as_bytes()));
}

#[test]
fn owned_headers_collect_claim_and_payload_headers() {
    let c = load_ok(
        r#"{"providers":{
            "a":{"local_jwks":{"inline_string":@JWKS@},"forward_payload_header":"X-JWT-Payload",
                 "claim_to_headers":[{"header_name":"x-user","claim_name":"sub"},
                                     {"header_name":"X-Roles","claim_name":"realm_access.roles"}]},
            "b":{"local_jwks":{"inline_string":@JWKS@},
                 "claim_to_headers":[{"header_name":"x-user","claim_name":"preferred_username"}]}}}"#,
    );
    assert_eq!(c.owned_headers, vec!["x-jwt-payload".to_string(), "x-roles".into(), "x-user".into()]);
    let a = &c.providers[0];
    assert_eq!(a.forward_payload_header.as_deref(), Some("x-jwt-payload"));
    assert_eq!(
        a.claim_to_headers,
        vec![
            ("x-user".to_string(), vec!["sub".to_string()]),
            ("x-roles".to_string(), vec!["realm_access".to_string(), "roles".to_string()]),
        ]
    );
}

#[test]
fn skipped_keys_become_warnings() {
    let doc = format!(
        r#"{{"keys":[{{"kty":"oct","k":"c2VjcmV0","kid":"h1"}},{{"kty":"RSA","n":"{RSA_N}","e":"AQAB","kid":"good"}}]}}"#
    );
    let json = format!(
        r#"{{"providers":{{"corp":{{"local_jwks":{{"inline_string":{}}}}}}}}}"#,
        serde_json::to_string(&doc).unwrap()
    );
    let c = parse(json.as_bytes(), &test_env).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("providers.corp.local_jwks: keys[0] (kid \"h1\") skipped"), "{:?}", c.warnings);
}

#[test]
fn remote_jwks_defaults() {
    let c = load_ok(
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com:8443/keys?v=2","cluster":"idp"}}}}}"#,
    );
    match &c.providers[0].keys {
        KeySource::Remote(r) => assert_eq!(
            r,
            &RemoteJwks {
                uri: "https://idp.example.com:8443/keys?v=2".into(),
                cluster: "idp".into(),
                authority: "idp.example.com:8443".into(),
                path: "/keys?v=2".into(),
                timeout_ms: 1000,
                cache_duration_ms: 300_000,
                max_stale_ms: 24 * 3600 * 1000,
                unknown_kid_refresh_interval_ms: 30_000,
            }
        ),
        other => panic!("expected remote keys, got {other:?}"),
    }
    let c = load_ok(
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"http://idp","cluster":"idp","timeout":"0.25s"},
            "cache_duration":"1s","max_stale":"0s","unknown_kid_refresh_interval":"5s"}}}}"#,
    );
    match &c.providers[0].keys {
        KeySource::Remote(r) => {
            assert_eq!((r.authority.as_str(), r.path.as_str()), ("idp", "/"));
            assert_eq!(
                (r.timeout_ms, r.cache_duration_ms, r.max_stale_ms, r.unknown_kid_refresh_interval_ms),
                (250, 1000, 0, 5000)
            );
        }
        other => panic!("expected remote keys, got {other:?}"),
    }
}

#[test]
fn durations_in_the_object_form_envoy_examples_use() {
    // `google.protobuf.Duration` as an object, as in Envoy's jwt_authn documentation.
    let c = load_ok(
        r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"http://idp","cluster":"idp","timeout":{"seconds":1,"nanos":500000000}},
            "cache_duration":{"seconds":300},"max_stale":{"nanos":0},"unknown_kid_refresh_interval":"5s"}}}}"#,
    );
    match &c.providers[0].keys {
        KeySource::Remote(r) => assert_eq!(
            (r.timeout_ms, r.cache_duration_ms, r.max_stale_ms, r.unknown_kid_refresh_interval_ms),
            (1500, 300_000, 0, 5000)
        ),
        other => panic!("expected remote keys, got {other:?}"),
    }
    for (doc, want) in [
        (
            r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"http://idp","cluster":"idp","timeout":{"seconds":1,"nanos":1}}}}}}"#,
            "providers.corp.remote_jwks.http_uri.timeout",
        ),
        (
            r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"http://idp","cluster":"idp","timeout":{"secs":1}}}}}}"#,
            "providers.corp.remote_jwks.http_uri.timeout: must be a duration: \"300s\", \"0.5s\" or {\"seconds\": 300, \"nanos\": 0}",
        ),
        (
            r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"http://idp","cluster":"idp","timeout":{"seconds":-1}}}}}}"#,
            "providers.corp.remote_jwks.http_uri.timeout",
        ),
    ] {
        let e = load(doc).unwrap_err().to_string();
        assert!(e.starts_with(want), "{doc}\n got: {e}");
    }
}

#[test]
fn discovery_from_issuer() {
    let c = load_ok(
        r#"{"providers":{"corp":{"issuer":"https://idp.example.com/realms/x/","discovery":{"cluster":"idp"}}}}"#,
    );
    match &c.providers[0].keys {
        KeySource::Discovery(r) => {
            assert_eq!(r.uri, "https://idp.example.com/realms/x/.well-known/openid-configuration");
            assert_eq!(r.authority, "idp.example.com");
            assert_eq!(r.path, "/realms/x/.well-known/openid-configuration");
            assert_eq!(r.cluster, "idp");
        }
        other => panic!("expected discovery, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

#[test]
fn rfc3339_accepts() {
    let ok = [
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59Z", -1),
        ("2000-01-01T00:00:00Z", 946_684_800),
        ("2024-02-29T23:59:59Z", 1_709_251_199),
        ("2024-05-01T00:00:00Z", 1_714_521_600),
        ("2026-03-01T00:00:00Z", 1_772_323_200),
        // Lower-case separators, fractions (dropped), and a leap second are accepted.
        ("2026-03-01t00:00:00z", 1_772_323_200),
        ("2026-03-01T00:00:00.5Z", 1_772_323_200),
        ("2026-03-01T00:00:00.123456789Z", 1_772_323_200),
        ("2016-12-31T23:59:60Z", 1_483_228_800),
    ];
    for (s, want) in ok {
        assert_eq!(parse_rfc3339(s), Some(want), "{s}");
    }
}

#[test]
fn rfc3339_refuses() {
    let bad = [
        "",
        "2026-03-01",
        "2026-03-01T00:00:00",
        "2026-03-01 00:00:00Z",
        "2026-03-01T00:00:00+00:00",
        "2026-03-01T00:00:00.Z",
        "2026-03-01T00:00:00ZZ",
        "2026-3-01T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-03-00T00:00:00Z",
        "2026-03-32T00:00:00Z",
        "2026-03-01T24:00:00Z",
        "2026-03-01T00:60:00Z",
        "2026-03-01T00:00:61Z",
        "+026-03-01T00:00:00Z",
        "2026-03-01T0a:00:00Z",
        "2026-03-01T00:00:00é",
        "２０２６-03-01T00:00:00Z",
    ];
    for s in bad {
        assert_eq!(parse_rfc3339(s), None, "{s}");
    }
}

#[test]
fn split_url_accepts() {
    let ok = [
        ("https://idp.example.com/jwks", "idp.example.com", "/jwks"),
        ("http://idp:8080/a/b?x=1&y=2", "idp:8080", "/a/b?x=1&y=2"),
        ("https://idp.example.com", "idp.example.com", "/"),
        ("https://idp.example.com/", "idp.example.com", "/"),
        ("https://[::1]:8443/keys", "[::1]:8443", "/keys"),
    ];
    for (uri, authority, path) in ok {
        assert_eq!(split_url(uri), Some((authority.to_string(), path.to_string())), "{uri}");
    }
}

#[test]
fn split_url_refuses() {
    let bad = [
        "",
        "idp.example.com/jwks",
        "ftp://idp.example.com/jwks",
        "HTTPS://idp.example.com/jwks",
        "https://",
        "https:///jwks",
        "https://user:pass@idp.example.com/jwks",
        "https://idp.example.com?x=1",
        "https://idp.example.com#frag",
        "https://idp.example.com/jwks#frag",
        "https://idp example.com/jwks",
        "https://idp.example.com/a b",
        "//idp.example.com/jwks",
    ];
    for uri in bad {
        assert_eq!(split_url(uri), None, "{uri}");
    }
}

/// A provider block copied from Envoy's `jwt_authn` documentation (with the fields Portcullis
/// honours or accepts for migration) loads as is.
#[test]
fn a_jwt_authn_provider_block_loads() {
    let c = load_ok(
        r#"{"providers":{"provider_name1":{
            "issuer":"https://example.com",
            "audiences":["bookstore_android.apps.googleusercontent.com","bookstore_web.apps.googleusercontent.com"],
            "remote_jwks":{"http_uri":{"uri":"https://example.com/.well-known/jwks.json","cluster":"example_jwks_cluster","timeout":"1s"},
                           "cache_duration":{"seconds":300},
                           "async_fetch":{"fast_listener":false},
                           "retry_policy":{"retry_back_off":{"base_interval":"0.01s","max_interval":"20s"},"num_retries":10}},
            "forward":true,
            "forward_payload_header":"x-jwt-payload",
            "pad_forward_payload_header":true,
            "from_headers":[{"name":"x-goog-iap-jwt-assertion","value_prefix":""}],
            "subjects":{"prefix":"spiffe://cluster.local/"},
            "jwt_cache_config":{"jwt_cache_size":2000},
            "normalize_payload_in_metadata":{"space_delimited_claims":["scope","roles"]},
            "claim_to_headers":[{"header_name":"x-sub","claim_name":"sub"}],
            "clock_skew_seconds":60
        }}}"#,
    );
    let p = &c.providers[0];
    assert_eq!(p.subjects, Some(SubjectMatcher::Prefix("spiffe://cluster.local/".into(), false)));
    assert!(p.pad_forward_payload_header);
    assert_eq!(p.space_delimited_claims, vec!["scope".to_string(), "roles".to_string()]);
    assert_eq!(c.verified_token_cache_size, 2000, "jwt_cache_size raises the verified-token cache");
    assert!(c.warnings.iter().any(|w| w.contains("retry_policy")), "{:?}", c.warnings);
    // What cannot be honoured is refused with what to use instead.
    for (doc, want) in [
        (
            r#"{"providers":{"p":{"local_jwks":{"filename":"/etc/jwks.json"}}}}"#,
            "providers.p.local_jwks.filename: a Wasm filter cannot read files",
        ),
        (
            r#"{"providers":{"p":{"local_jwks":{"inline_string":@JWKS@},"payload_in_metadata":"x"}}}"#,
            "providers.p.payload_in_metadata: renamed payload_in_filter_state",
        ),
        (
            r#"{"providers":{"p":{"local_jwks":{"inline_string":@JWKS@},"subjects":{"safe_regex":{"regex":".*"}}}}}"#,
            "providers.p.subjects.safe_regex: regular expressions are not supported",
        ),
        (
            r#"{"providers":{"p":{"local_jwks":{"inline_string":@JWKS@},"subjects":{"prefix":"a","suffix":"b"}}}}"#,
            "providers.p.subjects: give exactly one of exact, prefix, suffix or contains",
        ),
        (
            r#"{"providers":{"p":{"local_jwks":{"inline_string":@JWKS@},"header_in_metadata":"h"}}}"#,
            "providers.p.header_in_metadata: a Wasm filter cannot write Envoy dynamic metadata",
        ),
    ] {
        let e = load(doc).unwrap_err().to_string();
        assert!(e.starts_with(want), "{doc}\n got: {e}");
    }
}

#[test]
fn introspection_response_format() {
    use crate::config::intro::AnswerFormat;
    let base =
        r#"{"endpoint":{"cluster":"idp","authority":"idp","path":"/introspect"},"client_id":"gw","client_secret":"s""#;
    let load_fmt = |extra: &str| load(&format!(r#"{{"introspection":{base}{extra}}}}}"#));
    let fmt = |extra: &str| load_fmt(extra).unwrap().introspection.unwrap().settings.accept;
    assert_eq!(fmt(""), AnswerFormat::Json);
    assert_eq!(fmt(r#","accept_jwt":true"#), AnswerFormat::IntrospectionJwt, "RFC 9701 §4");
    assert_eq!(fmt(r#","response_format":"jwt""#), AnswerFormat::AccessTokenJwt);
    assert_eq!(fmt(r#","response_format":"token-introspection+jwt""#), AnswerFormat::IntrospectionJwt);
    assert!(load_fmt(r#","response_format":"xml""#)
        .unwrap_err()
        .to_string()
        .starts_with("introspection.response_format: must be"));
    assert!(load_fmt(r#","response_format":"jwt","accept_jwt":true"#)
        .unwrap_err()
        .to_string()
        .starts_with("introspection.accept_jwt: give response_format or accept_jwt, not both"));
}
