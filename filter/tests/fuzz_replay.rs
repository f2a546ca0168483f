//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same per-target
//! logic the cargo-fuzz targets run (`fuzz/src/targets.rs`, included below), so `make test`
//! catches a regression on any input the fuzzer once found interesting, without nightly or
//! cargo-fuzz. A campaign that grows the corpora is `make fuzz` (see `fuzz/README.md`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/src/targets.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The corpora are small (a few hundred files each); this bounds a replay that went slow.
const BUDGET: Duration = Duration::from_secs(30);

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    files
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(256).map(|b| format!("{b:02x}")).collect()
}

/// Runs `run` on every file of the target's corpus; fails naming every input that panicked.
fn replay(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    let start = Instant::now();
    let mut failures = Vec::new();
    for (name, bytes) in &files {
        if catch_unwind(AssertUnwindSafe(|| run(bytes))).is_err() {
            failures.push(format!("{target}/{name} (hex, first 256 bytes: {})", hex(bytes)));
        }
    }
    let elapsed = start.elapsed();
    assert!(failures.is_empty(), "{} of {} inputs panicked:\n{}", failures.len(), files.len(), failures.join("\n"));
    assert!(elapsed < BUDGET, "{target}: {} inputs took {elapsed:?}", files.len());
    eprintln!("{target}: {} inputs in {elapsed:?}", files.len());
}

#[test]
fn token() {
    replay("token", targets::token);
}

#[test]
fn jwks() {
    replay("jwks", targets::jwks);
}

#[test]
fn config() {
    replay("config", targets::config);
}

#[test]
fn form() {
    replay("form", targets::form);
}

#[test]
fn introspection() {
    replay("introspection", targets::introspection);
}

#[test]
fn rls() {
    replay("rls", targets::rls);
}

#[test]
fn path() {
    replay("path", targets::path);
}
