//! wrk: installed when missing, run pinned to its core against one variant (a fixed header,
//! or the next token of a file through `bench/tokens.lua`, continuing where the last run
//! stopped), and its output parsed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use portcullis_harness::envoy::{repo_root, Envoy};

use crate::scenarios::{Load, Variant};
use crate::Settings;

/// Installs Debian's `wrk` when it is missing.
pub(crate) fn ensure_wrk() -> Result<(), String> {
    let have = || Command::new("wrk").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if have() {
        return Ok(());
    }
    println!("   wrk not found: installing Debian's wrk with apt-get");
    let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = |args: &[&str]| -> bool {
        let mut c = if root.as_ref().is_ok_and(|r| *r) {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "-q", "wrk"]) {
        apt(&["update", "-q"]);
        apt(&["install", "-y", "-q", "wrk"]);
    }
    if have() {
        Ok(())
    } else {
        Err("wrk is not installed and `apt-get install -y wrk` failed; install it and run again".into())
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct WrkResult {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) requests: u64,
    pub(crate) non_2xx: u64,
    pub(crate) socket_errors: u64,
}

pub(crate) fn run_variant(
    s: &Settings,
    envoy: &Envoy,
    v: &Variant,
    seconds: u32,
    offsets: &mut HashMap<PathBuf, u64>,
) -> Result<WrkResult, String> {
    let url = format!("http://127.0.0.1:{}/", envoy.port(v.listener));
    let r = wrk(s, &url, &v.load, seconds, offsets)?;
    if r.requests == 0 {
        return Err("wrk completed no request".into());
    }
    Ok(r)
}

pub(crate) fn wrk(
    s: &Settings,
    url: &str,
    load: &Load,
    seconds: u32,
    offsets: &mut HashMap<PathBuf, u64>,
) -> Result<WrkResult, String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &s.wrk_cpu, "wrk", "-t1", "--latency", "--timeout", "5s"])
        .arg(format!("-c{}", s.connections))
        .arg(format!("-d{seconds}s"));
    let offset_key = match load {
        Load::Header(h, v) => {
            cmd.arg("-H").arg(format!("{h}: {v}")).arg(url);
            None
        }
        Load::Tokens { file, header, prefix, .. } => {
            let offset = offsets.get(file).copied().unwrap_or(0);
            cmd.arg("-s").arg(repo_root().join("bench/tokens.lua")).arg(url).arg("--");
            cmd.arg(file).arg(header).arg(prefix).arg(offset.to_string());
            Some((file.clone(), offset))
        }
    };
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr)));
    }
    let r = parse_wrk(&text).ok_or_else(|| format!("cannot parse wrk output:\n{text}"))?;
    if let Some((file, offset)) = offset_key {
        // The next run starts after every token this one may have sent.
        offsets.insert(file, offset + r.requests + s.connections as u64 + 1);
    }
    Ok(r)
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut in_dist = false;
    let mut have_rps = false;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
            have_rps = true;
        } else if l.starts_with("Latency Distribution") {
            in_dist = true;
        } else if in_dist && l.starts_with("50%") {
            r.p50_us = duration_us(l.split_whitespace().nth(1)?)?;
        } else if in_dist && l.starts_with("99%") {
            r.p99_us = duration_us(l.split_whitespace().nth(1)?)?;
            in_dist = false;
        } else if l.contains(" requests in ") {
            r.requests = l.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().ok()?;
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            r.socket_errors =
                v.split(',').filter_map(|p| p.split_whitespace().last().and_then(|n| n.parse::<u64>().ok())).sum();
        }
    }
    have_rps.then_some(r)
}

/// wrk durations: `812.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn duration_us(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 3s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   412.33us  101.00us   3.10ms   90.00%\n    Req/Sec    19.50k     1.00k   21.00k    70.00%\n  Latency Distribution\n     50%  398.00us\n     75%  430.00us\n     90%  480.00us\n     99%    1.21ms\n  58500 requests in 3.00s, 5.00MB read\n  Non-2xx or 3xx responses: 3\n  Socket errors: connect 0, read 1, write 0, timeout 2\nRequests/sec:  19498.12\nTransfer/sec:      1.67MB\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.rps, 19498.12);
        assert_eq!(r.p50_us, 398.0);
        assert_eq!(r.p99_us, 1210.0);
        assert_eq!((r.requests, r.non_2xx, r.socket_errors), (58500, 3, 3));
        assert_eq!(duration_us("2.00s"), Some(2e6));
        assert!(parse_wrk("garbage").is_none());
    }
}
