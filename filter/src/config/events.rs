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
    if ev.sinks.len() > crate::events::queue::MAX_SINKS {
        return err("events.sinks", format!("at most {} sinks", crate::events::queue::MAX_SINKS));
    }
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
    // The workers' shared queue: every setting that shapes delivery (header values only
    // through this one-way fingerprint).
    let queue_ns = crate::store::Namespace::of("events", &[&format!("{sinks:?}")]);
    Ok(Events { log: ev.log, sample_allowed_ppm, sinks, queue_ns })
}

pub(crate) fn validate_rules(raw: &[RawRule], events: &Events) -> Result<Rules, ConfigError> {
    use crate::events::rules::{Action, KeyType, Rule, Trigger, MAX_DISTINCT};
    let mut rules: Vec<Rule> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let path = format!("rules[{i}]");
        check_name(&format!("{path}.name"), &r.name)?;
        if rules.iter().any(|o| o.name == r.name) {
            return err(format!("{path}.name"), format!("{:?} names another rule too", r.name));
        }
        let Some(kind) = Kind::parse(&r.on.kind) else {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            return err(
                format!("{path}.on.kind"),
                format!("unknown kind {:?} (known: {})", r.on.kind, known.join(", ")),
            );
        };
        let mut reasons = Vec::new();
        for (j, code) in r.on.reasons.iter().enumerate() {
            let Some(reason) = crate::reason::Reason::ALL.iter().find(|x| x.code() == code) else {
                return err(
                    format!("{path}.on.reasons[{j}]"),
                    format!("unknown reason code {code:?} (README: Responses)"),
                );
            };
            reasons.push(reason.code());
        }
        let key_of = |field: &str, k: &str| -> Result<KeyType, ConfigError> {
            KeyType::parse(k).ok_or_else(|| ConfigError {
                path: format!("{path}.{field}"),
                message: format!("unknown key {k:?} (known: source, username, client, subject, route, api_key)"),
            })
        };
        let key = key_of("key", &r.key)?;
        let window_ms = dur(&format!("{path}.window"), &r.window)?;
        if window_ms < 1000 {
            return err(format!("{path}.window"), "must be at least 1s");
        }
        let trigger = match (&r.threshold, &r.distinct, &r.anomaly) {
            (Some(t), None, None) if *t >= 1 => Trigger::Threshold(*t),
            (Some(t), Some(d), None) => {
                if !(2..=MAX_DISTINCT as u32).contains(t) {
                    return err(
                        format!("{path}.threshold"),
                        format!("with distinct, must be between 2 and {MAX_DISTINCT}"),
                    );
                }
                Trigger::Distinct(key_of("distinct", d)?, *t)
            }
            (None, None, Some(a)) => {
                if !(a.factor > 1.0 && a.factor <= 1000.0) {
                    return err(format!("{path}.anomaly.factor"), "must be above 1 and at most 1000");
                }
                let baseline_ms = dur(&format!("{path}.anomaly.baseline"), &a.baseline)?;
                if baseline_ms < window_ms {
                    return err(format!("{path}.anomaly.baseline"), "must be at least the window");
                }
                if a.min_events == 0 {
                    return err(format!("{path}.anomaly.min_events"), "must be at least 1");
                }
                Trigger::Anomaly { factor: a.factor, baseline_ms, min_events: a.min_events }
            }
            (Some(0), None, None) => return err(format!("{path}.threshold"), "must be at least 1"),
            _ => return err(path, "give threshold, threshold with distinct, or anomaly"),
        };
        if r.actions.is_empty() {
            return err(format!("{path}.actions"), "must not be empty");
        }
        let mut actions = Vec::new();
        for (j, a) in r.actions.iter().enumerate() {
            let ap = format!("{path}.actions[{j}]");
            actions.push(match (&a.alert, &a.block, &a.revoke) {
                (Some(sink), None, None) => match events.sinks.iter().position(|s| &s.name == sink) {
                    Some(i) => Action::Alert(i),
                    None => return err(format!("{ap}.alert"), format!("no sink {sink:?} in events.sinks")),
                },
                (None, Some(d), None) => {
                    if key == KeyType::Route {
                        return err(format!("{ap}.block"), "a route cannot be blocked (key: route)");
                    }
                    Action::Block(dur(&format!("{ap}.block"), d)?)
                }
                (None, None, Some(d)) => {
                    if !matches!(key, KeyType::Client | KeyType::Subject | KeyType::ApiKey) {
                        return err(format!("{ap}.revoke"), "revoke takes key client, subject or api_key");
                    }
                    Action::Revoke(dur(&format!("{ap}.revoke"), d)?)
                }
                _ => return err(ap, "give exactly one of alert, block or revoke"),
            });
        }
        rules.push(Rule {
            name: r.name.clone(),
            kind,
            reasons,
            routes: r.on.routes.clone(),
            key,
            trigger,
            window_ms,
            actions,
        });
    }
    let fingerprint = format!("{rules:?}");
    let on_allowed = rules.iter().any(|r| r.kind == Kind::Allowed);
    let acts = rules.iter().any(|r| r.actions.iter().any(|a| !matches!(a, crate::events::rules::Action::Alert(_))));
    let on_api_key = rules.iter().any(|r| r.key == crate::events::rules::KeyType::ApiKey);
    Ok(Rules {
        ns: crate::store::Namespace::of("rules", &[&fingerprint]),
        slots: 16_384,
        on_allowed,
        acts,
        on_api_key,
        rules,
    })
}
