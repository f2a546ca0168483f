//! # Portcullis
//!
//! API security inside the proxy: one Proxy-Wasm HTTP filter that Envoy loads as
//! `envoy.filters.http.wasm` and Istio loads as a `WasmPlugin`.
//!
//! ## Design
//!
//! The crate is split in two:
//!
//! * a **pure, host-agnostic core** (every module except `host`): the request path ([`flow`]:
//!   the only code that knows why a request waits), one folder per capability ([`jwt`],
//!   [`apikey`], [`ratelimit`], [`introspection`], [`password`], [`policy`], [`events`]), the canonical
//!   request view ([`request`]), shared-data access ([`store`]), crypto ([`crypto`]) and wire
//!   codecs ([`wire`]), configuration parsing and validation ([`config`]) and the only module
//!   that knows HTTP response shapes ([`response`]).
//!   The core never reads a clock, never performs I/O and never touches the proxy: time is
//!   passed in, callouts are returned as data ([`flow::Step::Callout`]) and resumed with
//!   the reply as data, and host capabilities (Envoy's `verify_signature` foreign function)
//!   come in through a trait ([`crypto::NativeVerifier`]).
//! * a **thin host adapter** (`host/`, compiled only for `wasm32`): the only code that uses
//!   the Proxy-Wasm SDK. It turns Envoy callbacks into calls to the core and the core's answers into
//!   host calls. It makes no security decision of its own.
//!
//! The Proxy-Wasm SDK is a wasm32-only dependency, so any use of it outside `host/` fails to compile
//! under native `cargo test`: the compiler keeps the boundary.
//!
//! ## Threat model
//!
//! The client is untrusted: every header, query parameter, cookie and token it sends may be
//! malformed, oversized or forged. Portcullis therefore
//! * removes inbound copies of every header it sets (identity, claims, decision) before
//!   forwarding, so identity headers seen upstream always come from Portcullis;
//! * takes the verification algorithm from the key, never from the token's `alg`, and never
//!   trusts keys embedded in or referenced by a token (`jwk`, `jku`, `x5u`, `x5c`);
//! * never logs, forwards (unless `forward: true`) or echoes tokens, API keys or secrets; error
//!   bodies carry a stable problem `type` and a generic `detail` only;
//! * fails closed when a dependency (key set, introspection endpoint) is unavailable, unless
//!   the operator configured otherwise, and never lets an invalid credential through;
//! * never panics on input: a panic would kill the VM for every later request, so `unwrap`,
//!   `expect` and `panic!` are denied by lints outside tests.

pub mod apikey;
pub mod cache;
pub mod callout;
pub mod config;
pub mod crypto;
pub mod events;
pub mod flow;
pub mod introspection;
pub mod jwt;
pub mod net;
pub mod password;
pub mod policy;
pub mod ratelimit;
pub mod reason;
pub mod request;
pub mod response;
pub mod stats;
pub mod store;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod host;
