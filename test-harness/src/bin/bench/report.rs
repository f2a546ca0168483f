//! The results: the machine's description, per-variant medians over rounds, per-scenario
//! ratios (medians of per-round ratios) against their targets, memory and module size, as
//! Markdown (stdout, `results.md`) and JSON (`results.json`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use portcullis_harness::envoy::envoy_bin;
use serde_json::{json, Map, Value};

use crate::memory::Memory;
use crate::memory::MEMORY_CONCURRENCY;
use crate::scenarios::{Scenario, Variant, SCENARIOS};
use crate::wrk::WrkResult;
use crate::Settings;

pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) kernel: String,
    pub(crate) envoy: String,
    pub(crate) date: String,
    pub(crate) wrk: String,
}

pub(crate) fn machine() -> Machine {
    let sh = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
            .unwrap_or_default()
    };
    let cpu = sh("lscpu", &[])
        .lines()
        .find_map(|l| l.strip_prefix("Model name:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let envoy = sh(&envoy_bin().to_string_lossy(), &["--version"])
        .split_whitespace()
        .find(|w| w.contains("/1.") || w.contains("/RELEASE"))
        .map(|w| w.split('/').nth(1).unwrap_or(w).to_string())
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |p| p.get()),
        kernel: sh("uname", &["-sr"]).trim().to_string(),
        envoy,
        date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).trim().to_string(),
        // "wrk debian/4.1.0-3+b2 [epoll] Copyright ..." -> "wrk debian/4.1.0-3+b2"
        wrk: sh("wrk", &["--version"]).split_whitespace().take(2).collect::<Vec<_>>().join(" "),
    }
}

pub(crate) struct Report<'a> {
    pub(crate) s: &'a Settings,
    pub(crate) machine: &'a Machine,
    pub(crate) variants: &'a [Variant],
    pub(crate) runs: &'a BTreeMap<&'static str, Vec<WrkResult>>,
    pub(crate) broken: &'a BTreeMap<&'static str, String>,
    pub(crate) memory: Option<&'a Memory>,
    pub(crate) module_bytes: u64,
    pub(crate) native_bytes: u64,
    pub(crate) noop_bytes: u64,
    pub(crate) raw_bytes: u64,
    pub(crate) notes: &'a [String],
    pub(crate) elapsed: Duration,
    pub(crate) envoy_log_bytes: usize,
}

struct Summary {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

enum Outcome {
    /// `floor`: against the SDK no-op filter; `raw`: against the raw no-op filter.
    Measured {
        ratio: f64,
        floor: Option<f64>,
        raw: Option<f64>,
        pass: Option<bool>,
    },
    Unavailable(String),
}

impl Report<'_> {
    fn summary(&self, key: &str) -> Option<Summary> {
        if self.broken.contains_key(key) {
            return None;
        }
        let rs = self.runs.get(key)?;
        Some(Summary {
            rps: median(rs.iter().map(|r| r.rps).collect()),
            p50_us: median(rs.iter().map(|r| r.p50_us).collect()),
            p99_us: median(rs.iter().map(|r| r.p99_us).collect()),
        })
    }

    /// The median over rounds of a/b.
    fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        let (ra, rb) = (self.runs.get(a)?, self.runs.get(b)?);
        if self.broken.contains_key(a) || self.broken.contains_key(b) {
            return None;
        }
        let rs: Vec<f64> =
            ra.iter().zip(rb).filter(|(x, y)| y.rps > 0.0 && x.rps >= 0.0).map(|(x, y)| x.rps / y.rps).collect();
        (!rs.is_empty()).then(|| median(rs))
    }

    fn outcome(&self, sc: &Scenario) -> Outcome {
        for k in [sc.variant, sc.compared_with] {
            if let Some(why) = self.broken.get(k) {
                let who = if k == sc.variant { String::new() } else { format!("{k}: ") };
                return Outcome::Unavailable(format!("{who}{why}"));
            }
        }
        match self.ratio(sc.variant, sc.compared_with) {
            Some(ratio) => Outcome::Measured {
                ratio,
                floor: self.ratio(sc.variant, "noop_wasm"),
                raw: self.ratio(sc.variant, "raw_noop_wasm"),
                pass: sc.target.map(|t| ratio >= t),
            },
            None => Outcome::Unavailable("error: not measured".into()),
        }
    }

    fn label(&self, key: &str) -> &'static str {
        self.variants.iter().find(|v| v.key == key).map_or("?", |v| v.label)
    }

    pub(crate) fn markdown(&self) -> String {
        let mut o = String::new();
        let m = self.machine;
        o += &format!(
            "Portcullis bench, {} — {} ({} cores), {}, Envoy {}, {}.\n",
            m.date, m.cpu, m.cores, m.kernel, m.envoy, m.wrk
        );
        o += &format!(
            "Envoy `--concurrency 1` pinned to cpu {}, `wrk -t1 -c{}` pinned to cpu {}; {} interleaved rounds of {} s per variant; \
             requests/s and latencies are medians over rounds, ratios are medians of per-round ratios.\n\n",
            self.s.envoy_cpu, self.s.connections, self.s.wrk_cpu, self.s.rounds, self.s.seconds
        );
        o += "| Scenario | Portcullis req/s | p50 | p99 | Compared with | its req/s | Ratio | Target | vs raw floor | vs SDK floor | Result |\n";
        o += "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|\n";
        for sc in &SCENARIOS {
            let target = sc.target.map_or("report".to_string(), |t| format!("≥ {t:.2}×"));
            let cmp_label = self.label(sc.compared_with);
            let cmp_rps = self.summary(sc.compared_with).map_or("—".into(), |x| fmt_rps(x.rps));
            match (self.outcome(sc), self.summary(sc.variant)) {
                (Outcome::Measured { ratio, floor, raw, pass }, Some(x)) => {
                    o += &format!(
                        "| {} | {} | {} | {} | {} | {} | {:.2}× | {} | {} | {} | {} |\n",
                        sc.name,
                        fmt_rps(x.rps),
                        fmt_us(x.p50_us),
                        fmt_us(x.p99_us),
                        cmp_label,
                        cmp_rps,
                        ratio,
                        target,
                        raw.map_or("—".into(), |f| format!("{f:.2}×")),
                        floor.map_or("—".into(), |f| format!("{f:.2}×")),
                        match pass {
                            Some(true) => "PASS",
                            Some(false) => "MISS",
                            None => "(info)",
                        }
                    );
                }
                (outcome, _) => {
                    let why = match outcome {
                        Outcome::Unavailable(w) => w,
                        Outcome::Measured { .. } => "error: not measured".into(),
                    };
                    o += &format!(
                        "| {} | — | — | — | {} | {} | — | {} | — | — | {} |\n",
                        sc.name,
                        cmp_label,
                        cmp_rps,
                        target,
                        md_escape(&why)
                    );
                }
            }
        }
        o += "\nEvery variant (requests/s, latency):\n\n";
        o += "| Variant | req/s | p50 | p99 | vs no filter | vs raw floor | vs SDK floor | rounds (req/s) |\n";
        o += "|---|---:|---:|---:|---:|---:|---:|---|\n";
        for v in self.variants {
            match self.summary(v.key) {
                Some(x) => {
                    let rounds: Vec<String> =
                        self.runs.get(v.key).map(|rs| rs.iter().map(|r| fmt_rps(r.rps)).collect()).unwrap_or_default();
                    o += &format!(
                        "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                        v.label,
                        fmt_rps(x.rps),
                        fmt_us(x.p50_us),
                        fmt_us(x.p99_us),
                        self.ratio(v.key, "no_filter").map_or("—".into(), |r| format!("{r:.2}×")),
                        self.ratio(v.key, "raw_noop_wasm").map_or("—".into(), |r| format!("{r:.2}×")),
                        self.ratio(v.key, "noop_wasm").map_or("—".into(), |r| format!("{r:.2}×")),
                        rounds.join(", ")
                    );
                }
                None => {
                    let why = self.broken.get(v.key).cloned().unwrap_or_else(|| "not measured".into());
                    o += &format!("| {} | — | — | — | — | — | — | {} |\n", v.label, md_escape(&why));
                }
            }
        }
        o += &format!("\nMemory (Envoy RSS at `--concurrency {MEMORY_CONCURRENCY}`, after traffic) and size:\n\n");
        o += "| What | RSS | Over no filter | Target | Result |\n|---|---:|---:|---:|---|\n";
        match self.memory {
            Some(mem) => {
                for (i, r) in mem.rows.iter().enumerate() {
                    let over = if i == 0 { "—".to_string() } else { format!("+{:.1} MiB", mem.over_mib(r)) };
                    let target = r.target_mib.map_or(String::new(), |t| format!("≤ +{t:.0} MiB"));
                    let result = match (&r.error, r.target_mib) {
                        (Some(e), _) => format!("error: {}", md_escape(e)),
                        (None, Some(t)) if mem.over_mib(r) <= t => "PASS".into(),
                        (None, Some(_)) => "MISS".into(),
                        (None, None) => String::new(),
                    };
                    let note = r.note.as_ref().map_or(String::new(), |n| format!(" ({})", md_escape(n)));
                    o += &format!(
                        "| {} | {:.1} MiB | {over} | {target} | {result}{note} |\n",
                        r.label,
                        r.rss_bytes as f64 / (1024.0 * 1024.0)
                    );
                }
            }
            None => o += "| Memory | skipped (BENCH_SKIP_MEMORY=1) | | | |\n",
        }
        o += &format!(
            "| Module size, dist/portcullis.wasm | {} bytes ({:.0} KiB) | | | |\n",
            self.module_bytes,
            self.module_bytes as f64 / 1024.0
        );
        o += &format!(
            "| Module size, dist/portcullis-native.wasm | {} bytes ({:.0} KiB) | | | |\n",
            self.native_bytes,
            self.native_bytes as f64 / 1024.0
        );
        o += &format!("| SDK no-op filter module | {} bytes | | | |\n", self.noop_bytes);
        o += &format!("| Raw no-op filter module | {} bytes | | | |\n", self.raw_bytes);
        for n in self.notes {
            o += &format!("\nNote: {n}\n");
        }
        o += &format!(
            "\nBench took {:.0} s. Reproduce: `make bench` (results in target/bench/results.json).\n",
            self.elapsed.as_secs_f64()
        );
        o
    }

    pub(crate) fn json(&self) -> Value {
        let m = self.machine;
        let variants: Map<String, Value> = self
            .variants
            .iter()
            .map(|v| {
                let rounds: Vec<Value> = self
                    .runs
                    .get(v.key)
                    .map(|rs| {
                        rs.iter()
                            .map(|r| {
                                json!({"rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us, "requests": r.requests,
                                            "non_2xx": r.non_2xx, "socket_errors": r.socket_errors})
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let s = self.summary(v.key);
                (
                    v.key.to_string(),
                    json!({
                        "label": v.label,
                        "listener": v.listener,
                        "status": self.broken.get(v.key).cloned().unwrap_or_else(|| "ok".into()),
                        "rps": s.as_ref().map(|x| x.rps),
                        "p50_us": s.as_ref().map(|x| x.p50_us),
                        "p99_us": s.as_ref().map(|x| x.p99_us),
                        "vs_no_filter": self.ratio(v.key, "no_filter"),
                        "vs_wasm_floor": self.ratio(v.key, "noop_wasm"),
                        "vs_raw_floor": self.ratio(v.key, "raw_noop_wasm"),
                        "rounds": rounds,
                    }),
                )
            })
            .collect();
        let scenarios: Vec<Value> = SCENARIOS
            .iter()
            .map(|sc| {
                let (ratio, floor, raw, result) = match self.outcome(sc) {
                    Outcome::Measured { ratio, floor, raw, pass } => (
                        Some(ratio),
                        floor,
                        raw,
                        match pass {
                            Some(true) => "PASS".to_string(),
                            Some(false) => "MISS".to_string(),
                            None => "info".to_string(),
                        },
                    ),
                    Outcome::Unavailable(why) => (None, None, None, why),
                };
                let s = self.summary(sc.variant);
                json!({
                    "scenario": sc.name,
                    "variant": sc.variant,
                    "compared_with": sc.compared_with,
                    "rps": s.as_ref().map(|x| x.rps),
                    "p50_us": s.as_ref().map(|x| x.p50_us),
                    "p99_us": s.as_ref().map(|x| x.p99_us),
                    "compared_rps": self.summary(sc.compared_with).map(|x| x.rps),
                    "ratio": ratio,
                    "target": sc.target,
                    "vs_wasm_floor": floor,
                    "vs_raw_floor": raw,
                    "result": result,
                })
            })
            .collect();
        let memory = self.memory.map(|mem| {
            let rows: Vec<Value> = mem
                .rows
                .iter()
                .map(|r| {
                    json!({"label": r.label, "rss_bytes": r.rss_bytes, "over_no_filter_mib": mem.over_mib(r),
                    "target_mib": r.target_mib, "note": r.note, "error": r.error,
                    "result": match (&r.error, r.target_mib) {
                        (Some(_), _) => "error",
                        (None, Some(t)) if mem.over_mib(r) <= t => "PASS",
                        (None, Some(_)) => "MISS",
                        (None, None) => "info",
                    }})
                })
                .collect();
            json!({"concurrency": MEMORY_CONCURRENCY, "distinct_clients": mem.clients_sent, "rows": rows})
        });
        json!({
            "date": m.date,
            "machine": {"cpu": m.cpu, "cores": m.cores, "kernel": m.kernel, "envoy": m.envoy, "wrk": m.wrk},
            "settings": {
                "rounds": self.s.rounds, "seconds": self.s.seconds, "connections": self.s.connections,
                "envoy_cpu": self.s.envoy_cpu, "wrk_cpu": self.s.wrk_cpu, "concurrency": 1
            },
            "scenarios": scenarios,
            "variants": variants,
            "memory": memory,
            "module_bytes": self.module_bytes,
            "native_module_bytes": self.native_bytes,
            "noop_module_bytes": self.noop_bytes,
            "raw_noop_module_bytes": self.raw_bytes,
            "notes": self.notes,
            "envoy_log_bytes": self.envoy_log_bytes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "command": "make bench",
        })
    }
}

fn fmt_rps(r: f64) -> String {
    if r >= 1000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
