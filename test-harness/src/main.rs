//! `portcullis-harness`: the demo (`make run`) and small helpers.
//!
//! * `demo` starts the test identity provider, an echo upstream and Envoy with
//!   `envoy/demo.yaml`, prints ready-to-paste curl commands, and runs until Ctrl-C.
//!
//! `hash-key` is in the operator CLI (`cli/`, `make hash-key`).

use std::process::{Command, Stdio};
use std::time::Duration;

use portcullis_harness::envoy::{envoy_bin, repo_root};
use portcullis_harness::idp::TestIdp;
use portcullis_harness::upstream::EchoUpstream;

/// Fixed demo ports, so the printed curl commands can be pasted as they are.
const IDP_PORT: u16 = 18001;
const UPSTREAM_PORT: u16 = 18002;
const LISTENER_PORT: u16 = 10000;
const DEMO_API_KEY: &str = "demo-key-partner-a";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("demo") => demo(),
        _ => {
            eprintln!("usage: portcullis-harness demo");
            std::process::exit(2);
        }
    }
}

fn demo() {
    let idp = TestIdp::start_on(IDP_PORT);
    let upstream = EchoUpstream::start_on(UPSTREAM_PORT);
    let config = repo_root().join("envoy/demo.yaml");
    let mut child = match Command::new(envoy_bin())
        .args(["-c", &config.to_string_lossy(), "--disable-hot-restart", "--concurrency", "2", "-l", "warning"])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start Envoy at {}: {e} (run `make envoy`)", envoy_bin().display());
            std::process::exit(1);
        }
    };
    // Wait for the listener.
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("Envoy exited: {status}");
            std::process::exit(1);
        }
        if portcullis_harness::http::get(&format!("http://127.0.0.1:{LISTENER_PORT}/public/ping"), &[]).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !ready {
        eprintln!("Envoy did not open 127.0.0.1:{LISTENER_PORT} within 20 s");
        let _ = child.kill();
        std::process::exit(1);
    }
    let base = format!("http://127.0.0.1:{LISTENER_PORT}");
    println!(
        r#"
Portcullis demo is running (Ctrl-C stops everything):
  Envoy + Portcullis   {base}          (admin: http://127.0.0.1:19000)
  identity provider    {idp}     (JWKS at {idp}/jwks)
  echo upstream        http://127.0.0.1:{up}

1. Get a token from the identity provider (client credentials):
   TOKEN=$(curl -s -d grant_type=client_credentials -d client_id=demo-client -d client_secret=demo-secret {idp}/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')

2. Call the API with it -> 200; the upstream echoes x-portcullis-client: demo-client, x-user: demo-client
   curl -s -H "Authorization: Bearer $TOKEN" {base}/orders

3. Call without it -> 401 with WWW-Authenticate: Bearer realm="demo" and a problem+json body
   curl -si {base}/orders

4. Call with an API key -> 200; x-portcullis-client: partner-a, the key itself is not forwarded
   curl -s -H "x-api-key: {key}" {base}/orders

5. A public route needs nothing -> 200
   curl -s {base}/public/ping

6. A forged identity header never reaches the upstream (it is removed):
   curl -s -H "x-portcullis-client: admin" {base}/public/ping

Stats: curl -s http://127.0.0.1:19000/stats | grep portcullis
"#,
        idp = idp.issuer(),
        up = upstream.port,
        key = DEMO_API_KEY,
    );
    // Run until Envoy exits or we are interrupted (Ctrl-C reaches the whole process group:
    // Envoy stops and this process ends, dropping the servers).
    let status = child.wait();
    eprintln!("Envoy exited: {status:?}");
}
