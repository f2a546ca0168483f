//! The command-line tool: `check` prints exactly the filter's validation outcome.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn check(json: &str, env: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{}-{}", std::process::id(), json.len()));
    std::fs::write(&dir, json).unwrap();
    let mut c = bin();
    c.arg("check").arg(&dir);
    for e in env {
        c.args(["--env", e]);
    }
    let out = c.output().unwrap();
    let _ = std::fs::remove_file(&dir);
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn check_gives_the_filters_own_messages() {
    for (json, env) in [
        (r#"{"mode":"shadoww"}"#, vec![]),
        (r#"{"routes":[{"match":{"prefix":"/a/../b"}}]}"#, vec![]),
        (
            r#"{"introspection":{"endpoint":{"cluster":"idp","authority":"idp","path":"/i"},"client_id":"gw","client_secret_env":"S"}}"#,
            vec![],
        ),
        (r#"{"rules":[{"name":"r"}]}"#, vec![]),
        ("not json", vec![]),
        ("[]", vec![]),
        ("", vec![]),
        (r#"{"modee":"shadow"}"#, vec![]),
        (r#"{"verified_token_cache_size":"big"}"#, vec![]),
        (r#"{"routes":[{"requires":"none"}]}"#, vec![]),
        (r#"{"requires":{"one_of":["p"]}}"#, vec![]),
        (r#"{"providers":{"p":{"issuer":"i","local_jwks":{"inline_string":"{"keys":[]}"}}}}"#, vec![]),
        (r#"{"api_keys":{"from_headers":["x-api-key"],"clients":[{"client_id":"c","keys_sha256":["abc"]}]}}"#, vec![]),
        (r#"{"events":{"sinks":{"s":{"cluster":"","path":"/i"}}}}"#, vec![]),
        (
            r#"{"rules":[{"name":"r","on":{"kind":"denied"},"key":"source","threshold":1,"window":"60","actions":[{"alert":"s"}]}]}"#,
            vec![],
        ),
    ] {
        let want = portcullis::config::parse(json.as_bytes(), &|_| None).unwrap_err().to_string();
        let (code, out) = check(json, &env);
        assert_eq!((code, out), (1, format!("invalid configuration: {want}")), "{json}");
    }
    // A secret supplied with --env is never printed, even when it is the thing refused.
    let short = r#"{"providers":{"p":{"issuer":"i","hmac_secret_env":"S","remote_jwks":{"http_uri":{"uri":"https://idp/jwks","cluster":"idp","timeout":"1s"}}}}}"#;
    let (code, out) = check(short, &["S=short-secret-value-xyz"]);
    assert_eq!(code, 1);
    assert!(out.contains("hmac_secret_env") && !out.contains("short-secret-value-xyz"), "{out}");
    let ok = r#"{"introspection":{"endpoint":{"cluster":"idp","authority":"idp","path":"/i"},"client_id":"gw","client_secret_env":"S"}}"#;
    assert_eq!(check(ok, &["S=secret"]), (0, "configuration is valid".to_string()), "--env resolves VM variables");
}

#[test]
fn hash_key_and_istio_cluster() {
    let mut child = bin().arg("hash-key").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    );
    let mut child = bin().arg("hash-key").stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(2), "an empty key is refused");
    let cluster = |u: &str| {
        String::from_utf8_lossy(&bin().args(["istio-cluster", u]).output().unwrap().stdout).trim().to_string()
    };
    assert_eq!(cluster("https://IdP.example.com/jwks"), "outbound|443||idp.example.com");
    assert_eq!(cluster("http://idp.ns.svc.cluster.local:8080/x"), "outbound|8080||idp.ns.svc.cluster.local");
    assert_eq!(bin().args(["istio-cluster", "ftp://x"]).output().unwrap().status.code(), Some(2));
}

#[test]
fn the_committed_schema_is_what_portcullis_schema_prints() {
    let out = bin().arg("schema").output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/portcullis.schema.json");
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        printed == committed,
        "schema/portcullis.schema.json is stale: run `cargo run -p portcullis-cli -- schema > schema/portcullis.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(v["additionalProperties"], false, "unknown top-level fields are refused, as by the filter");
    assert!(v["$defs"].as_object().unwrap().keys().all(|k| !k.starts_with("Raw")), "no internal type names");
}
