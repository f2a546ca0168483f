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

const INVALID: &[(&str, &str)] = &[
    ("", "?"),
    ("  \n\t ", "?"),
    ("not json", "?"),
    ("{", "?"),
    ("{} x", "?"),
    ("{}{}", "?"),
    (r#"{"mode":"enforce",}"#, "?"),
    ("[]", "?"),
    ("null", "?"),
    (r#"{"mode":"enforce","mode":"shadow"}"#, "?"),
    (r#"{"modes":"shadow"}"#, "?"),
    (r#"{"providers":{"corp":{"issuer":"https://idp.example.com","audience":["x"]}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://a/j","cluster":"c","timout":"1s"}}}}}"#, "?"),
    (r#"{"mode":1}"#, "?"),
    (r#"{"providers":{"corp":{"clock_skew_seconds":"60"}}}"#, "?"),
    (r#"{"verified_token_cache_size":-1}"#, "?"),
    (r#"{"routes":{}}"#, "?"),
    (r#"{"providers":{"corp":null}}"#, "?"),
    (r#"{"providers":[]}"#, "?"),
    (r#"{"requires":5}"#, "?"),
    (r#"{"routes":[{"match":{"prefix":"/"},"requires":{"any":"corp"}}]}"#, "?"),
    (r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a"}]}}"#, "?"),
    (r#"{"mode":"Enforce"}"#, "?"),
    (r#"{"realm":""}"#, "?"),
    (r#"{"realm":"my \"realm\""}"#, "?"),
    (r#"{"on_dependency_down":"fail_open"}"#, "?"),
    (r#"{"crypto":"fast"}"#, "?"),
    (r#"{"verified_token_cache_size":100001}"#, "?"),
    (r#"{"providers":{"corp.eu":@CORP@}}"#, "?"),
    (r#"{"providers":{"":@CORP@}}"#, "?"),
    (r#"{"providers":{"api_key":@CORP@}}"#, "?"),
    (r#"{"providers":{"none":@CORP@}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"remote_jwks":{"http_uri":{"uri":"https://idp/jwks","cluster":"idp"}}}}}"#, "?"),
    (r#"{"providers":{"corp":{}}}"#, "?"),
    (r#"{"providers":{"corp":{"audiences":["orders-api"]}}}"#, "?"),
    (r#"{"providers":{"corp":{"issuer":"","local_jwks":{"inline_string":@JWKS@}}}}"#, "?"),
    (r#"{"providers":{"corp":{"issuer":"https://idp.example.com","audiences":[""],"local_jwks":{"inline_string":@JWKS@}}}}"#, "?"),
    (r#"{"providers":{"corp":{"issuer":"https://idp.example.com"}}}"#, "?"),
    (r#"{"providers":{"corp":{"issuer":"idp.example.com","discovery":{"cluster":"idp"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"discovery":{"cluster":"idp"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"ftp://idp.example.com/jwks","cluster":"idp"}}}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"idp.example.com/jwks","cluster":"idp"}}}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":""}}}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp","timeout":"1"}}}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp","timeout":"5m"}}}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp","timeout":"0s"}}}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp","timeout":"0.0001s"}}}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp"},"cache_duration":"0.5s"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"remote_jwks":{"http_uri":{"uri":"https://idp.example.com/jwks","cluster":"idp"},"max_stale":"forever"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":"not a key set"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"h1\"},{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\",\"kid\":\"tiny\"}]}"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":"{\"keys\":[]}"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@,"inline_string_env":"JWKS"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string_env":"PORTCULLIS_UNSET"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string_env":"EMPTY"}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":""}}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_headers":[{"name":"x token"}]}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_headers":[{"name":"Host"}]}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_headers":[]}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_params":[""]}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"from_cookies":["a=b"]}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"claim_to_headers":[{"header_name":"x-user","claim_name":"a..b"}]}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"claim_to_headers":[{"header_name":"x user","claim_name":"sub"}]}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"claim_to_headers":[{"header_name":"authorization","claim_name":"sub"}]}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"forward_payload_header":"x-api-key"}},"api_keys":{"from_headers":["x-api-key"]}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"claim_separator":""}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"clock_skew_seconds":4000}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"max_lifetime":"0.5s"}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"max_token_bytes":10}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"client_id_claim":""}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"payload_in_metadata":""}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"hmac_secret":"short"}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"hmac_secret_env":"SHORT_SECRET"}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"hmac_secret":"x","hmac_secret_env":"HMAC_SECRET"}}}"#, "?"),
    (r#"{"providers":{"corp":{"local_jwks":{"inline_string":@JWKS@},"hmac_secret_env":"PORTCULLIS_UNSET"}}}"#, "?"),
    (r#"{"api_keys":{}}"#, "?"),
    (r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["not-hex"]}]}}"#, "?"),
    (r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":[]}]}}"#, "?"),
    (r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a b","keys_sha256":["@HASH_A@"]}]}}"#, "?"),
    (r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["@HASH_A@"]},{"client_id":"a","keys_sha256":["@HASH_B@"]}]}}"#, "?"),
    (r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["@HASH_A@"]},{"client_id":"b","keys_sha256":["@HASH_B@","@HASH_A@"]}]}}"#, "?"),
    (r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["@HASH_A@"],"plan":"gold"}]}}"#, "?"),
    (r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"a","keys_sha256":["@HASH_A@"],"scopes":["a b"]}]}}"#, "?"),
    (r#"{"api_keys":{"from_params":["api key"]}}"#, "?"),
    (r#"{"routes":[{"match":{"prefix":"/a","path":"/a"}}]}"#, "?"),
    (r#"{"routes":[{"match":{}}]}"#, "?"),
    (r#"{"routes":[{"match":{"prefix":"admin"}}]}"#, "?"),
    (r#"{"routes":[{"match":{"path":"/a?b=1"}}]}"#, "?"),
    (r#"{"routes":[{"match":{"prefix":"/","methods":["get"]}}]}"#, "?"),
    (r#"{"routes":[{"match":{"prefix":"/","methods":[]}}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"api_keys":{"from_headers":["x-api-key"]},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp","oidc"]}}]}"#, "?"),
    (r#"{"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp"]}}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":[]}}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"all":["corp","api_key"]}}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp","introspection"]}}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp","none"]}}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp","corp"]}}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{"any":["corp"],"all":["corp"]}}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":{}}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"requires":"nobody"}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"requires":{"any":["api_key"]}}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/public"},"requires":"none","scopes":["read"]}]}"#, "?"),
    (r#"{"routes":[{"match":{"prefix":"/public"},"scopes":["read"]}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"cost":0}]}"#, "?"),
    (r#"{"providers":{"corp":@CORP@},"routes":[{"match":{"prefix":"/"},"plan":"premium"}]}"#, "?"),
    (r#"{"introspection":{"endpoint":{"cluster":"idp","authority":"idp","path":"/introspect"},"client_id":"gw","client_secret":"s","client_secret_env":"S"}}"#, "?"),
    (r#"{"introspection":{"endpoint":{"cluster":"","authority":"idp","path":"/introspect"},"client_id":"gw","client_secret":"s"}}"#, "?"),
    (r#"{"introspection":{"endpoint":{"cluster":"idp","authority":"idp","path":"/introspect"},"client_id":"gw","client_secret_env":"HMAC_SECRET"}}"#, "?"),
    (r#"{"password_grant":{"token_path":"/oauth/token","mode":"forward","identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/auth","registered_at":"2026-03-01"}]}}"#, "?"),
    (r#"{"password_grant":{"token_path":"/oauth/token","mode":"bogus","identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/auth","registered_at":"2026-03-01T00:00:00Z"}]}}"#, "?"),
    (r#"{"password_grant":{"token_path":"/oauth/token","mode":"issue","identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/auth","registered_at":"2026-03-01T00:00:00Z"}]}}"#, "?"),
    (r#"{"password_grant":{"token_path":"/oauth/token","mode":"forward","identities":[]}}"#, "?"),
    (r#"{"password_grant":{"token_path":"/oauth/token","mode":"forward","identities":[{"name":"ldap","cluster":"id","authority":"id","path":"/auth","registered_at":"2026-03-01T00:00:00Z"}]}}"#, "?"),
    (r#"{"rate_limit":{"plans":{"free":{"requests":0,"per":"60s"}}}}"#, "?"),
    (r#"{"rate_limit":{"plans":{"free":{"requests":100,"per":"0.5s"}}}}"#, "?"),
    (r#"{"rate_limit":{"plans":{"free":{"requests":100,"per":"60s"}},"default_plan":"gold"}}"#, "?"),
    (r#"{"rate_limit":{"plans":{"free":{"requests":100,"per":"60s"}},"default_plan":"free"}}"#, "?"),
    (r#"{"events":{"batch_size":0}}"#, "?"),
    (r#"{"events":{"webhooks":[{"cluster":"hooks","authority":"hooks","path":"/in"}]}}"#, "?"),
    (r#"{"events":{"...":"webhook sinks"}}"#, "?"),
];

#[test]
fn invalid_configurations_name_the_field() {
    let mut failures = Vec::new();
    for (template, want) in INVALID {
        let got = match load(template) {
            Ok(_) => "<accepted>".to_string(),
            Err(e) => e.to_string(),
        };
        if got != *want {
            failures.push(format!("{template}\n    => {got}"));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
