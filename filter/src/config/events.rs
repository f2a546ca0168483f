//! Validation of `events` (sinks, logging, sampling).

use super::*;
use crate::events::Kind;

pub(crate) fn validate_revocation(r: &RawRevocation) -> Result<Revocation, ConfigError> {
    let timeout_ms = validate_endpoint("revocation.endpoint", &r.endpoint)?;
    let poll_interval_ms = positive_dur("revocation.poll_interval", r.poll_interval.as_deref(), 10_000)?;
    if poll_interval_ms < 1000 {
        return err("revocation.poll_interval", "must be at least 1s");
    }
    let max_entries = match r.max_entries {
        None => 100_000,
        Some(n) if (1..=1_000_000).contains(&n) => n as usize,
        Some(_) => return err("revocation.max_entries", "must be between 1 and 1000000"),
    };
    let e = &r.endpoint;
    let ns = crate::store::Namespace::of("revocation", &[&e.cluster, &e.authority, &e.path]);
    let endpoint = Backend {
        name: "revocation".into(),
        cluster: e.cluster.clone(),
        authority: e.authority.clone(),
        path: e.path.clone(),
        timeout_ms,
        registered_at: 0,
    };
    Ok(Revocation { endpoint, poll_interval_ms, max_entries, ns })
}

pub(crate) fn validate_events(ev: &RawEvents, env: &dyn Fn(&str) -> Option<String>) -> Result<Events, ConfigError> {
    let sample_allowed_ppm = match ev.sample_allowed {
        None => 0,
        Some(f) if (0.0..=1.0).contains(&f) => (f * 1_000_000.0).round() as u32,
        Some(_) => return err("events.sample_allowed", "must be between 0 and 1"),
    };
    let mut sinks = Vec::new();
    for (name, s) in &ev.sinks {
        let path = format!("events.sinks.{name}");
        check_name(&path, name)?;
        if s.cluster.is_empty() {
            return err(format!("{path}.cluster"), "must not be empty (Istio: outbound|<port>||<host>)");
        }
        check_path(&format!("{path}.path"), &s.path)?;
        let timeout_ms = positive_dur(&format!("{path}.timeout"), s.timeout.as_deref(), 2000)?;
        let mut headers = Vec::new();
        for (i, h) in s.headers.iter().enumerate() {
            let hp = format!("{path}.headers[{i}]");
            let hname = header_name(&format!("{hp}.name"), &h.name)?;
            let value = secret(&hp, "value", h.value.clone(), h.value_env.clone(), env)?;
            if value.bytes().any(|b| b < 0x20 && b != b'\t') {
                return err(format!("{hp}.value"), "must not contain control characters");
            }
            headers.push((hname, value));
        }
        let batch_max = match s.batch_max {
            None => 100,
            Some(n) if (1..=10_000).contains(&n) => n as usize,
            Some(_) => return err(format!("{path}.batch_max"), "must be between 1 and 10000"),
        };
        let queue_max = match s.queue_max {
            None => 10_000,
            Some(n) if (1..=1_000_000).contains(&n) => n as usize,
            Some(_) => return err(format!("{path}.queue_max"), "must be between 1 and 1000000"),
        };
        let flush_interval_ms = positive_dur(&format!("{path}.flush_interval"), s.flush_interval.as_deref(), 1000)?;
        let kinds = match &s.kinds {
            None => Kind::ALL.into_iter().filter(|k| *k != Kind::Allowed).collect(),
            Some(list) => {
                if list.is_empty() {
                    return err(format!("{path}.kinds"), "must not be empty (omit it for every kind but allowed)");
                }
                let mut out = Vec::new();
                for (i, k) in list.iter().enumerate() {
                    let Some(kind) = Kind::parse(k) else {
                        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                        return err(
                            format!("{path}.kinds[{i}]"),
                            format!("unknown kind {k:?} (known: {})", known.join(", ")),
                        );
                    };
                    out.push(kind);
                }
                out
            }
        };
        let endpoint = Backend {
            name: name.clone(),
            cluster: s.cluster.clone(),
            authority: s.authority.clone().unwrap_or_else(|| s.cluster.clone()),
            path: s.path.clone(),
            timeout_ms,
            registered_at: 0,
        };
        sinks.push(Sink { name: name.clone(), endpoint, headers, batch_max, flush_interval_ms, queue_max, kinds });
    }
    Ok(Events { log: ev.log, sample_allowed_ppm, sinks })
}
