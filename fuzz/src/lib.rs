//! Shared logic of the fuzz targets. Each target in `fuzz_targets/` is a thin call into
//! [`targets`]; `filter/tests/fuzz_replay.rs` includes the same file (`#[path]`) to replay the
//! committed corpora under plain `cargo test`, without nightly or cargo-fuzz.

pub mod targets;
