//! A stand-in for Envoy's rate limit service (gRPC `ShouldRateLimit`), written in Python with
//! `grpcio` and the `xds-protos` generated Envoy protos (installed into the project
//! virtualenv by `make rls-deps`). Started on 127.0.0.1 with a free port, stopped on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::envoy::repo_root;

/// A running rate limit service.
pub struct RateLimitService {
    pub port: u16,
    child: Child,
}

impl RateLimitService {
    /// Starts the service with limits per plan: `{"plan": {"requests": N, "window": secs}}`.
    pub fn start(limits: &serde_json::Value) -> Result<RateLimitService, String> {
        let python = repo_root().join(".venv/bin/python");
        let script = repo_root().join("test-harness/rls/rls_server.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(limits.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {} (run `make rls-deps`): {e}", python.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).map_err(|_| {
            let _ = child.kill();
            "rate limit service did not start within 20 s (is grpcio installed? run `make rls-deps`)".to_string()
        })?;
        let port = line.trim().strip_prefix("READY ").and_then(|p| p.parse().ok()).ok_or_else(|| {
            let _ = child.kill();
            format!("unexpected first line from the rate limit service: {line:?}")
        })?;
        Ok(RateLimitService { port, child })
    }
}

impl Drop for RateLimitService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/2 static cluster, as gRPC services need.
pub fn grpc_cluster(name: &str, port: u16) -> serde_json::Value {
    let mut c = crate::envoy::cluster(name, port);
    c["typed_extension_protocol_options"] = serde_json::json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}
        }
    });
    c
}
