//! The one way end-to-end tests start Envoy with Portcullis: a [`Gateway`] is a bootstrap
//! described by its listeners and clusters, started with [`Gateway::start`].
//!
//! ```no_run
//! # use portcullis_harness::gateway::{Gateway, Listener};
//! # let (cfg, upstream_port, idp_port) = (serde_json::json!({}), 1, 2);
//! // The common case: one listener "main" running the filter, routing to "upstream".
//! let envoy = Gateway::new(&cfg)
//!     .env("INTROSPECTION_SECRET", "gateway-secret")
//!     .cluster("upstream", upstream_port)
//!     .cluster("idp", idp_port)
//!     .start();
//! // Several listeners, each with its own configuration and HTTP connection manager options.
//! let envoy = Gateway::empty()
//!     .listener(Listener::new("edge", &cfg).use_remote_address())
//!     .listener(Listener::new("trusting", &cfg))
//!     .cluster("upstream", upstream_port)
//!     .start();
//! // Routes before the catch-all, a TLS listener, and the Wasm filter's own options.
//! # let pki = portcullis_harness::pki::Pki::new();
//! let envoy = Gateway::empty()
//!     .listener(
//!         Listener::new("main", &cfg)
//!             .route_prefix("/oauth/token", "tokens")
//!             .direct_response("/static", 404, "not here")
//!             .allow_on_headers_stop_iteration()
//!             .tls(&pki),
//!     )
//!     .cluster("upstream", upstream_port)
//!     .cluster("tokens", idp_port)
//!     .start();
//! ```
//!
//! Everything else is [`Envoy`]'s rule: port 0 everywhere, `--disable-hot-restart`,
//! `--concurrency 2`, killed by PID on drop. The JSON pieces come from [`crate::envoy`]
//! ([`listener`], [`cluster`], [`crate::envoy::portcullis_filter`]), so a test never writes Envoy JSON itself.

use serde_json::{json, Value};

use crate::envoy::{bootstrap, cluster, listener, portcullis_filter_from, wasm_path, with_use_remote_address, Envoy};
use crate::pki::Pki;
use crate::rls::grpc_cluster;

/// The cluster every [`Listener`] routes to unless told otherwise.
pub const UPSTREAM: &str = "upstream";

/// One listener on 127.0.0.1 port 0 running the Portcullis filter (then the router).
#[derive(Debug, Clone)]
pub struct Listener {
    name: String,
    plugin_config: Value,
    env: Vec<(String, String)>,
    route_cluster: String,
    use_remote_address: bool,
    http1_trailers: bool,
    request_headers_to_add: Vec<(String, String)>,
    /// Routes placed before the catch-all, in the order added.
    routes: Vec<Value>,
    allow_on_headers_stop_iteration: bool,
    /// `(certificate chain, private key, trusted CA)`, PEM text.
    tls: Option<(String, String, String)>,
    /// The module, when not [`wasm_path`]'s.
    wasm: Option<std::path::PathBuf>,
}

impl Listener {
    /// A listener named `name` running Portcullis with `plugin_config`, routing every request
    /// to the [`UPSTREAM`] cluster.
    pub fn new(name: &str, plugin_config: &Value) -> Listener {
        Listener {
            name: name.to_string(),
            plugin_config: plugin_config.clone(),
            env: Vec::new(),
            route_cluster: UPSTREAM.to_string(),
            use_remote_address: false,
            http1_trailers: false,
            request_headers_to_add: Vec::new(),
            routes: Vec::new(),
            allow_on_headers_stop_iteration: false,
            tls: None,
            wasm: None,
        }
    }

    /// Runs this module instead of [`wasm_path`]'s (e.g. `dist/portcullis-native.wasm`).
    pub fn wasm(mut self, path: &std::path::Path) -> Listener {
        self.wasm = Some(path.to_path_buf());
        self
    }

    /// Adds an environment variable of the filter's VM (e.g. a secret named by `*_env`).
    pub fn env(mut self, name: &str, value: &str) -> Listener {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Routes to `cluster` instead of [`UPSTREAM`].
    pub fn route_to(mut self, cluster: &str) -> Listener {
        self.route_cluster = cluster.to_string();
        self
    }

    /// `use_remote_address: true` on the HTTP connection manager: the client address is the
    /// TCP peer's, never the last `X-Forwarded-For` entry (see
    /// [`with_use_remote_address`]).
    pub fn use_remote_address(mut self) -> Listener {
        self.use_remote_address = true;
        self
    }

    /// `http_protocol_options: {enable_trailers: true}`: Envoy's HTTP/1 codec then decodes the
    /// trailers of a chunked request and hands them to the filters (by default it drops them).
    pub fn http1_trailers(mut self) -> Listener {
        self.http1_trailers = true;
        self
    }

    /// A header the route configuration adds to every request it forwards (`value` may use
    /// Envoy's formatter, e.g. `%FILTER_STATE(...)%`).
    pub fn request_header_to_add(mut self, name: &str, value: &str) -> Listener {
        self.request_headers_to_add.push((name.to_string(), value.to_string()));
        self
    }

    /// Requests whose path starts with `prefix` go to `cluster` (a route placed before the
    /// catch-all, after the routes added earlier).
    pub fn route_prefix(mut self, prefix: &str, cluster: &str) -> Listener {
        self.routes.push(json!({"match": {"prefix": prefix}, "route": {"cluster": cluster}}));
        self
    }

    /// Requests whose path starts with `prefix` are answered by Envoy itself: a
    /// `direct_response` route (placed like [`route_prefix`](Self::route_prefix)), so no
    /// upstream request is ever started for them.
    pub fn direct_response(mut self, prefix: &str, status: u16, body: &str) -> Listener {
        self.routes.push(json!({
            "match": {"prefix": prefix},
            "direct_response": {"status": status, "body": {"inline_string": body}}
        }));
        self
    }

    /// `allow_on_headers_stop_iteration: true` in the Wasm filter's `config` (Envoy's
    /// `PluginConfig`): a filter that holds the request headers still receives the body.
    pub fn allow_on_headers_stop_iteration(mut self) -> Listener {
        self.allow_on_headers_stop_iteration = true;
        self
    }

    /// Serves TLS with `pki`'s server certificate and validates client certificates against
    /// its CA, without requiring one (`require_client_certificate: false`): requests without a
    /// client certificate still reach the filter. Certificates are inlined in the bootstrap.
    pub fn tls(mut self, pki: &Pki) -> Listener {
        self.tls = Some((pki.server.cert_pem(), pki.server.key_pem(), pki.ca.cert_pem()));
        self
    }

    /// The listener's Envoy JSON.
    pub fn to_json(&self) -> Value {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let wasm = self.wasm.clone().unwrap_or_else(wasm_path);
        let mut filter = portcullis_filter_from(&wasm, &self.plugin_config, &env);
        if self.allow_on_headers_stop_iteration {
            filter["typed_config"]["config"]["allow_on_headers_stop_iteration"] = json!(true);
        }
        let mut l = listener(&self.name, vec![filter], Some(&self.route_cluster));
        if self.use_remote_address {
            l = with_use_remote_address(l);
        }
        if let Some((cert, key, ca)) = &self.tls {
            l["filter_chains"][0]["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": false,
                    "common_tls_context": {
                        "tls_certificates": [{
                            "certificate_chain": {"inline_string": cert},
                            "private_key": {"inline_string": key}
                        }],
                        "validation_context": {"trusted_ca": {"inline_string": ca}}
                    }
                }
            });
        }
        let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
        if !self.routes.is_empty() {
            let routes = &mut hcm["route_config"]["virtual_hosts"][0]["routes"];
            let catch_all = routes.as_array().cloned().unwrap_or_default();
            *routes = Value::Array(self.routes.iter().cloned().chain(catch_all).collect());
        }
        if self.http1_trailers {
            hcm["http_protocol_options"] = json!({"enable_trailers": true});
        }
        if !self.request_headers_to_add.is_empty() {
            let headers: Vec<Value> = self
                .request_headers_to_add
                .iter()
                .map(|(key, value)| json!({"header": {"key": key, "value": value}}))
                .collect();
            hcm["route_config"]["request_headers_to_add"] = Value::Array(headers);
        }
        l
    }
}

/// An Envoy bootstrap: Portcullis listeners and static clusters on 127.0.0.1.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    listeners: Vec<Listener>,
    clusters: Vec<Value>,
}

impl Gateway {
    /// One listener, `main`, running Portcullis with `plugin_config` and routing to
    /// [`UPSTREAM`] (which the test still declares with [`cluster`](Self::cluster)).
    pub fn new(plugin_config: &Value) -> Gateway {
        Gateway::empty().listener(Listener::new("main", plugin_config))
    }

    /// No listener yet: add them with [`listener`](Self::listener).
    pub fn empty() -> Gateway {
        Gateway::default()
    }

    /// Adds a listener (the first one added is the one [`Envoy::url`] talks to).
    pub fn listener(mut self, listener: Listener) -> Gateway {
        self.listeners.push(listener);
        self
    }

    /// [`Listener::env`] on every listener added so far.
    pub fn env(self, name: &str, value: &str) -> Gateway {
        self.each(|l| l.env(name, value))
    }

    /// [`Listener::use_remote_address`] on every listener added so far.
    pub fn use_remote_address(self) -> Gateway {
        self.each(Listener::use_remote_address)
    }

    /// [`Listener::http1_trailers`] on every listener added so far.
    pub fn http1_trailers(self) -> Gateway {
        self.each(Listener::http1_trailers)
    }

    /// A static HTTP/1.1 cluster `name` pointing at 127.0.0.1:`port`.
    pub fn cluster(mut self, name: &str, port: u16) -> Gateway {
        self.clusters.push(cluster(name, port));
        self
    }

    /// A static HTTP/2 (gRPC) cluster `name` pointing at 127.0.0.1:`port`.
    pub fn grpc_cluster(mut self, name: &str, port: u16) -> Gateway {
        self.clusters.push(grpc_cluster(name, port));
        self
    }

    /// The whole bootstrap.
    /// Every listener runs this module (see [`Listener::wasm`]).
    pub fn wasm(self, path: &std::path::Path) -> Gateway {
        self.each(|l| l.wasm(path))
    }

    pub fn bootstrap(&self) -> Value {
        bootstrap(self.listeners.iter().map(Listener::to_json).collect(), self.clusters.clone())
    }

    /// Starts Envoy and waits until it is ready; `Err` carries Envoy's log (e.g. when it
    /// refuses the configuration).
    pub fn try_start(&self) -> Result<Envoy, String> {
        assert!(!self.listeners.is_empty(), "a gateway needs at least one listener");
        Envoy::start(&self.bootstrap())
    }

    /// [`try_start`](Self::try_start), panicking with Envoy's log if it does not start.
    pub fn start(&self) -> Envoy {
        self.try_start().unwrap_or_else(|log| panic!("Envoy did not start: {log}"))
    }

    fn each(mut self, f: impl Fn(Listener) -> Listener) -> Gateway {
        self.listeners = self.listeners.into_iter().map(f).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::portcullis_filter;

    fn hcm(bootstrap: &Value, i: usize) -> &Value {
        &bootstrap["static_resources"]["listeners"][i]["filter_chains"][0]["filters"][0]["typed_config"]
    }

    #[test]
    fn the_common_case_is_the_raw_pieces_put_together() {
        let cfg = json!({"requires": "none"});
        let built = Gateway::new(&cfg).env("A", "1").cluster("upstream", 1).cluster("idp", 2).bootstrap();
        let by_hand = bootstrap(
            vec![listener("main", vec![portcullis_filter(&cfg, &[("A", "1")])], Some("upstream"))],
            vec![cluster("upstream", 1), cluster("idp", 2)],
        );
        assert_eq!(built, by_hand);
    }

    #[test]
    fn listener_options() {
        let cfg = json!({});
        let b = Gateway::empty()
            .listener(Listener::new("edge", &cfg).use_remote_address().http1_trailers())
            .listener(Listener::new("b", &cfg).route_to("other").request_header_to_add("x-a", "%PROTOCOL%"))
            .grpc_cluster("rls", 3)
            .bootstrap();
        assert_eq!(hcm(&b, 0)["use_remote_address"], true);
        assert_eq!(hcm(&b, 0)["http_protocol_options"], json!({"enable_trailers": true}));
        assert!(hcm(&b, 1).get("use_remote_address").is_none());
        assert!(hcm(&b, 1).get("http_protocol_options").is_none());
        let route_config = &hcm(&b, 1)["route_config"];
        assert_eq!(route_config["virtual_hosts"][0]["routes"][0]["route"]["cluster"], "other");
        assert_eq!(route_config["request_headers_to_add"], json!([{"header": {"key": "x-a", "value": "%PROTOCOL%"}}]));
        assert_eq!(b["static_resources"]["clusters"][0], grpc_cluster("rls", 3));
        // Gateway-wide options reach every listener added so far.
        let b = Gateway::empty()
            .listener(Listener::new("a", &cfg))
            .listener(Listener::new("b", &cfg))
            .use_remote_address()
            .bootstrap();
        assert_eq!(
            (&hcm(&b, 0)["use_remote_address"], &hcm(&b, 1)["use_remote_address"]),
            (&json!(true), &json!(true))
        );
    }

    #[test]
    fn routes_before_the_catch_all_wasm_options_and_tls() {
        let cfg = json!({});
        let pki = Pki::new();
        let b = Gateway::empty()
            .listener(
                Listener::new("a", &cfg)
                    .route_prefix("/oauth/token", "tokens")
                    .direct_response("/static", 404, "no")
                    .allow_on_headers_stop_iteration()
                    .tls(&pki),
            )
            .listener(Listener::new("b", &cfg))
            .bootstrap();
        let routes = &hcm(&b, 0)["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[0], json!({"match": {"prefix": "/oauth/token"}, "route": {"cluster": "tokens"}}));
        assert_eq!(routes[1]["direct_response"], json!({"status": 404, "body": {"inline_string": "no"}}));
        assert_eq!(routes[2], json!({"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}));
        assert_eq!(routes.as_array().map(Vec::len), Some(3));
        let wasm = &hcm(&b, 0)["http_filters"][0]["typed_config"]["config"];
        assert_eq!(wasm["allow_on_headers_stop_iteration"], true);
        let chain = &b["static_resources"]["listeners"][0]["filter_chains"][0];
        let tls = &chain["transport_socket"]["typed_config"];
        assert_eq!(tls["require_client_certificate"], false);
        assert_eq!(tls["common_tls_context"]["validation_context"]["trusted_ca"]["inline_string"], pki.ca.cert_pem());
        // The other listener is untouched.
        assert!(b["static_resources"]["listeners"][1]["filter_chains"][0].get("transport_socket").is_none());
        assert!(hcm(&b, 1)["http_filters"][0]["typed_config"]["config"]
            .get("allow_on_headers_stop_iteration")
            .is_none());
        assert_eq!(hcm(&b, 1)["route_config"]["virtual_hosts"][0]["routes"].as_array().map(Vec::len), Some(1));
    }
}
