//! Starts a real Envoy that loads `dist/portcullis.wasm`.
//!
//! Every Envoy runs with `--disable-hot-restart`, binds admin and listeners to 127.0.0.1
//! port 0 (the real ports are read back from the admin API), `--concurrency 2` unless told
//! otherwise, and is killed by PID when the [`Envoy`] is dropped. Its log is kept in a
//! temporary directory and printed when a test panics.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http;

/// The repository root (the harness crate's parent directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The Envoy binary: `$ENVOY_BIN`, else the project virtualenv's `envoy`.
pub fn envoy_bin() -> PathBuf {
    match std::env::var_os("ENVOY_BIN") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".venv/bin/envoy"),
    }
}

/// The compiled filter: `$PORTCULLIS_WASM`, else `dist/portcullis.wasm`.
pub fn wasm_path() -> PathBuf {
    match std::env::var_os("PORTCULLIS_WASM") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("dist/portcullis.wasm"),
    }
}

/// The native-crypto-only module: `$PORTCULLIS_NATIVE_WASM`, else `dist/portcullis-native.wasm`.
pub fn native_wasm_path() -> PathBuf {
    match std::env::var_os("PORTCULLIS_NATIVE_WASM") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("dist/portcullis-native.wasm"),
    }
}

/// A static cluster pointing at 127.0.0.1:port.
pub fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]
        }
    })
}

/// The Portcullis HTTP filter with a plugin configuration and VM environment variables.
pub fn portcullis_filter(plugin_config: &Value, env: &[(&str, &str)]) -> Value {
    portcullis_filter_from(&wasm_path(), plugin_config, env)
}

/// Like [`portcullis_filter`] with an explicit module path.
pub fn portcullis_filter_from(wasm: &Path, plugin_config: &Value, env: &[(&str, &str)]) -> Value {
    let kv: serde_json::Map<String, Value> = env.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "portcullis",
                "root_id": "portcullis",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config.to_string()
                },
                "vm_config": {
                    "vm_id": "portcullis",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.to_string_lossy()}},
                    "environment_variables": {"key_values": kv}
                }
            }
        }
    })
}

/// A listener with the given HTTP filters (the router is appended) routing everything to
/// `route_cluster`, or answering 200 directly when `route_cluster` is `None`.
pub fn listener(name: &str, filters: Vec<Value>, route_cluster: Option<&str>) -> Value {
    let mut http_filters = filters;
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let route = match route_cluster {
        Some(c) => json!({"match": {"prefix": "/"}, "route": {"cluster": c}}),
        None => json!({"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}),
    };
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
                "http_filters": http_filters
            }
        }]}]
    })
}

/// Sets `use_remote_address: true` on a [`listener`]'s HTTP connection manager: the client
/// address (`source.address`) is then the TCP peer's, and `X-Forwarded-For` is only appended
/// to, never trusted. Envoy's default (`false`) takes the client address from the last
/// `X-Forwarded-For` entry, which any client can write.
pub fn with_use_remote_address(mut listener: Value) -> Value {
    listener["filter_chains"][0]["filters"][0]["typed_config"]["use_remote_address"] = json!(true);
    listener
}

/// A whole bootstrap.
pub fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}
    })
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    pub admin_port: u16,
    /// Listener name → port.
    pub listeners: Vec<(String, u16)>,
}

/// How to start Envoy.
pub struct Options {
    pub concurrency: u32,
    /// Extra arguments placed before the command (e.g. `taskset -c 0`).
    pub wrapper: Vec<String>,
    pub log_level: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { concurrency: 2, wrapper: Vec::new(), log_level: "info".into() }
    }
}

fn temp_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let base = repo_root().join("target/envoy-runs");
    let d = base.join(format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::create_dir_all(&d);
    d
}

impl Envoy {
    /// Starts Envoy with a bootstrap and waits until it is ready (admin `/ready` says LIVE).
    pub fn start(bootstrap: &Value) -> Result<Envoy, String> {
        Self::start_with(bootstrap, &Options::default())
    }

    pub fn start_with(bootstrap: &Value, opts: &Options) -> Result<Envoy, String> {
        let dir = temp_dir();
        let cfg = dir.join("envoy.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(bootstrap).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let admin_file = dir.join("admin-address");
        let log = dir.join("envoy.log");
        let bin = envoy_bin();
        if !bin.exists() {
            return Err(format!("Envoy not found at {} (run `make envoy` or set ENVOY_BIN)", bin.display()));
        }
        let mut args: Vec<String> = opts.wrapper.clone();
        args.push(bin.to_string_lossy().into_owned());
        args.extend(
            [
                "-c",
                &cfg.to_string_lossy(),
                "--disable-hot-restart",
                "--concurrency",
                &opts.concurrency.to_string(),
                "--admin-address-path",
                &admin_file.to_string_lossy(),
                "--log-path",
                &log.to_string_lossy(),
                "-l",
                &opts.log_level,
                "--component-log-level",
                "wasm:debug",
                // Tests read the log: flush it promptly (the default is every 10 s).
                "--file-flush-interval-msec",
                "100",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let child = Command::new(&args[0])
            .args(&args[1..])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("envoy.stderr")).map_err(|e| e.to_string())?))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args[0]))?;
        let mut envoy = Envoy { child, dir, admin_port: 0, listeners: Vec::new() };
        envoy.wait_ready()?;
        Ok(envoy)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin_file = self.dir.join("admin-address");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("Envoy exited with {status} before becoming ready; log:\n{}", self.log()));
            }
            if self.admin_port == 0 {
                if let Ok(text) = std::fs::read_to_string(&admin_file) {
                    if let Some(p) = text.trim().rsplit(':').next().and_then(|p| p.parse().ok()) {
                        self.admin_port = p;
                    }
                }
            }
            if self.admin_port != 0 {
                if let Ok(r) = http::get(&format!("http://127.0.0.1:{}/ready", self.admin_port), &[]) {
                    if r.status == 200 {
                        self.read_listeners()?;
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("Envoy not ready within 30 s; log:\n{}", self.log()))
    }

    fn read_listeners(&mut self) -> Result<(), String> {
        let r = http::get(&format!("http://127.0.0.1:{}/listeners?format=json", self.admin_port), &[])
            .map_err(|e| e.to_string())?;
        let v = r.json();
        for l in v["listener_statuses"].as_array().cloned().unwrap_or_default() {
            let name = l["name"].as_str().unwrap_or_default().to_string();
            let port = l["local_address"]["socket_address"]["port_value"].as_u64().unwrap_or(0) as u16;
            self.listeners.push((name, port));
        }
        if self.listeners.is_empty() {
            return Err(format!("no listeners reported: {}", r.text()));
        }
        Ok(())
    }

    /// The port of a listener by name.
    pub fn port(&self, listener: &str) -> u16 {
        self.listeners
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no listener {listener}"))
    }

    /// `http://127.0.0.1:<first listener>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.listeners[0].1, path)
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole Envoy log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        for f in ["envoy.log", "envoy.stderr"] {
            if let Ok(mut file) = std::fs::File::open(self.dir.join(f)) {
                let _ = file.read_to_string(&mut s);
            }
        }
        s
    }

    /// A counter or gauge from the admin `/stats` (0 when absent). Portcullis hands its counts
    /// to Envoy every 100 ms, so this waits 300 ms first.
    pub fn stat(&self, name: &str) -> u64 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let r = match http::get(
            &format!("http://127.0.0.1:{}/stats?filter=^{}$", self.admin_port, name.replace('.', "\\.")),
            &[],
        ) {
            Ok(r) => r,
            Err(_) => return 0,
        };
        r.text()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Envoy's resident memory in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()).and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("---- Envoy log ({}), last lines ----", self.dir.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `envoy --mode validate` on a config file (used by `make validate`).
pub fn validate(path: &Path) -> Result<(), String> {
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(path)
        .current_dir(repo_root())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}
