//! `portcullis`: the filter's own configuration check, natively, for CI pipelines and operators
//! without an Envoy at hand.
//!
//! ```text
//! portcullis check CONFIG.json [--env NAME=VALUE]...   exit 0 (warnings on stderr) or 1 + the error
//! portcullis schema                                    the configuration's JSON Schema (2020-12)
//! portcullis hash-key                                  SHA-256 hex of the key on stdin (for keys_sha256)
//! portcullis istio-cluster URL                         outbound|<port>||<host> (Istio's cluster name)
//! ```
//!
//! `check` runs exactly the parse and validation the filter runs at configure time, and prints
//! the same text the filter logs after `invalid configuration: `.

use std::io::Read;
use std::process::ExitCode;

const USAGE: &str = "usage:
  portcullis check CONFIG.json [--env NAME=VALUE]...
  portcullis schema              (JSON Schema 2020-12 of the configuration, on stdout)
  portcullis hash-key            (the key on stdin)
  portcullis istio-cluster URL";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") => check(&args[1..]),
        Some("schema") => {
            let schema = portcullis::config::json_schema();
            match serde_json::to_string_pretty(&schema) {
                Ok(text) if schema.is_object() => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                _ => {
                    eprintln!("could not generate the schema");
                    ExitCode::from(1)
                }
            }
        }
        Some("hash-key") => hash_key(),
        Some("istio-cluster") => istio_cluster(args.get(1).map(String::as_str)),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check(args: &[String]) -> ExitCode {
    let Some(file) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut env: Vec<(String, String)> = Vec::new();
    let mut rest = args.get(1..).unwrap_or(&[]).iter();
    while let Some(a) = rest.next() {
        let pair = if a == "--env" { rest.next().cloned() } else { a.strip_prefix("--env=").map(str::to_string) };
        match pair.as_deref().and_then(|p| p.split_once('=')) {
            Some((k, v)) => env.push((k.to_string(), v.to_string())),
            None => {
                eprintln!("--env takes NAME=VALUE\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match portcullis::config::parse(&bytes, &lookup) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("invalid configuration: {e}");
            ExitCode::from(1)
        }
    }
}

fn hash_key() -> ExitCode {
    let mut key = String::new();
    if std::io::stdin().read_to_string(&mut key).is_err() {
        eprintln!("cannot read the key from stdin");
        return ExitCode::from(2);
    }
    let key = key.trim_end_matches(['\r', '\n']);
    if key.is_empty() {
        eprintln!("empty key on stdin");
        return ExitCode::from(2);
    }
    // The filter's own hashing: what `keys_sha256` is compared with.
    println!("{}", portcullis::apikey::hash_hex(key));
    ExitCode::SUCCESS
}

/// Istio names the cluster of a `ServiceEntry` host `outbound|<port>||<host>`.
fn istio_cluster(url: Option<&str>) -> ExitCode {
    let Some(url) = url else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let (default_port, rest) = match url.split_once("://") {
        Some(("https", r)) => (443, r),
        Some(("http", r)) => (80, r),
        _ => {
            eprintln!("not an http(s) URL: {url}");
            return ExitCode::from(2);
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => (h, p.parse::<u16>().unwrap_or(default_port)),
        _ => (authority, default_port),
    };
    if host.is_empty() {
        eprintln!("no host in {url}");
        return ExitCode::from(2);
    }
    println!("outbound|{port}||{}", host.to_ascii_lowercase());
    ExitCode::SUCCESS
}
