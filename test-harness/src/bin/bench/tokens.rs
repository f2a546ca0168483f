//! Bench tokens: RS256 and ES256 tokens signed on every core (jwt-simple, or OpenSSL through
//! `bench/sign_rs256.py` for RS256 when it works), kept in `target/bench/tokens-*` files and
//! reused while they stay valid.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use jwt_simple::algorithms::{ECDSAP256KeyPairLike, ES256KeyPair, RS256KeyPair, RSAKeyPairLike};
use jwt_simple::claims::Claims;
use portcullis_harness::envoy::repo_root;
use portcullis_harness::idp;
use serde_json::{json, Map, Value};

use crate::{AUDIENCE, ISSUER, TOKEN_LIFETIME_S, TOKEN_MIN_REMAINING_S};

#[derive(Clone, Copy)]
pub(crate) enum Alg {
    Rs256,
    Es256,
}

/// Signs `n` distinct tokens (distinct `sub`), on every core.
/// With `distinct_clients`, every token also has its own `client_id` (`<tag>-client-<i>`).
pub(crate) fn sign_tokens(
    pem: &str,
    alg: Alg,
    n: usize,
    tag: &str,
    distinct_clients: bool,
) -> Result<Vec<String>, String> {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n.max(1));
    let per = n.div_ceil(threads);
    let chunks: Vec<Result<Vec<String>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> Result<Vec<String>, String> {
                    let range = (t * per)..((t + 1) * per).min(n);
                    let claims = |i: usize| {
                        let mut custom = Map::new();
                        let client = if distinct_clients { format!("{tag}-client-{i}") } else { "bench-client".into() };
                        custom.insert("client_id".into(), json!(client));
                        custom.insert("scope".into(), json!("orders:read"));
                        Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_secs(TOKEN_LIFETIME_S))
                            .with_issuer(ISSUER)
                            .with_audience(AUDIENCE)
                            .with_subject(format!("{tag}-user-{i}"))
                    };
                    match alg {
                        Alg::Rs256 => {
                            let k = RS256KeyPair::from_pem(pem).map_err(|e| e.to_string())?.with_key_id("rsa-a");
                            range.map(|i| k.sign(claims(i)).map_err(|e| e.to_string())).collect()
                        }
                        Alg::Es256 => {
                            let k = ES256KeyPair::from_pem(pem).map_err(|e| e.to_string())?.with_key_id("p256-a");
                            range.map(|i| k.sign(claims(i)).map_err(|e| e.to_string())).collect()
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("signing thread panicked".into()))).collect()
    });
    let mut out = Vec::with_capacity(n);
    for c in chunks {
        out.extend(c?);
    }
    Ok(out)
}

/// RS256 tokens signed by OpenSSL through Python's `cryptography` (`bench/sign_rs256.py`),
/// one process per core; `None` when that is not available (the caller falls back to
/// jwt-simple, ~10× slower).
pub(crate) fn sign_rs256_openssl(pem: &Path, n: usize, tag: &str) -> Option<Vec<String>> {
    let script = repo_root().join("bench/sign_rs256.py");
    let procs = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n.max(1));
    let per = n.div_ceil(procs);
    let dir = std::env::temp_dir();
    for python in ["python3", "/usr/bin/python3"] {
        let mut children = Vec::new();
        let mut files = Vec::new();
        for i in 0..procs {
            let first = i * per;
            let count = per.min(n.saturating_sub(first));
            let out = dir.join(format!("portcullis-bench-{}-{tag}-{i}.txt", std::process::id()));
            let child = Command::new(python)
                .arg(&script)
                .arg(pem)
                .args(["rsa-a", ISSUER, AUDIENCE, &TOKEN_LIFETIME_S.to_string(), tag])
                .args([first.to_string(), count.to_string()])
                .arg(&out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            files.push(out);
            if let Ok(c) = child {
                children.push(c);
            }
        }
        let all_ok = children.len() == procs && children.into_iter().all(|mut c| c.wait().is_ok_and(|s| s.success()));
        let mut tokens = Vec::with_capacity(n);
        for f in &files {
            if all_ok {
                tokens.extend(std::fs::read_to_string(f).unwrap_or_default().lines().map(str::to_string));
            }
            let _ = std::fs::remove_file(f);
        }
        if all_ok && tokens.len() == n {
            return Some(tokens);
        }
    }
    None
}

/// A file of `n` tokens under `dir`, reused from an earlier run while it has enough tokens
/// for the same issuer and audience that stay valid for another day.
pub(crate) fn token_file(
    dir: &Path,
    name: &str,
    n: usize,
    make: impl FnOnce(usize) -> Result<Vec<String>, String>,
) -> Result<(PathBuf, usize), String> {
    let file = dir.join(format!("tokens-{name}.txt"));
    let meta_file = dir.join(format!("tokens-{name}.json"));
    let now = idp::now();
    if let Ok(meta) = std::fs::read_to_string(&meta_file) {
        let m: Value = serde_json::from_str(&meta).unwrap_or_default();
        let count = m["count"].as_u64().unwrap_or(0) as usize;
        let lines = std::fs::read_to_string(&file).map(|t| t.lines().count()).unwrap_or(0);
        if m["issuer"] == ISSUER
            && m["audience"] == AUDIENCE
            && count >= n
            && lines == count
            && m["exp"].as_u64().unwrap_or(0) > now + TOKEN_MIN_REMAINING_S
        {
            return Ok((file, count));
        }
    }
    let t = Instant::now();
    let tokens = make(n)?;
    let mut text = tokens.join("\n");
    text.push('\n');
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    let meta = json!({"issuer": ISSUER, "audience": AUDIENCE, "count": n, "exp": now + TOKEN_LIFETIME_S});
    std::fs::write(&meta_file, meta.to_string()).map_err(|e| e.to_string())?;
    println!("   signed {n} {name} tokens in {:.1} s", t.elapsed().as_secs_f64());
    Ok((file, n))
}
