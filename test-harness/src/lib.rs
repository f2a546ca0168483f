//! Test harness for Portcullis: a real Envoy loading the compiled `.wasm`, and stand-in
//! servers on 127.0.0.1 (identity provider with JWKS/minting/introspection/identity
//! backends/webhook sink, and an upstream that echoes what it received).
//!
//! End-to-end tests start Envoy through [`gateway::Gateway`], the one start helper, and talk
//! to it with [`http`] (plain sockets, bytes as given) or [`curl`] (h2c, a chosen source
//! address, TLS with a client certificate from [`pki`]).
//!
//! Every server binds 127.0.0.1 port 0 and is stopped when dropped; every Envoy is started
//! with `--disable-hot-restart`, port 0 everywhere, and killed by PID on drop.

pub mod curl;
pub mod envoy;
pub mod gateway;
pub mod http;
pub mod idp;
pub mod oidc;
pub mod pki;
pub mod rls;
pub mod upstream;
