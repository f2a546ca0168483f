//! Trigger rules (SPEC C7): counters over the event stream, per rule and key, in shared data
//! (every worker of the proxy sees one count), in a bounded slot table that floods cannot turn
//! against innocent keys (a key's active counter is never evicted; see `store::slots`).
//!
//! A rule fires, at most once per key per `window` (then re-arms), when for one key:
//! * `threshold` matching events fall within the sliding `window`; or
//! * `distinct` (another key) takes `threshold` different values within `window`; or
//! * `anomaly`: the events in the current `window` exceed `factor` × the key's own baseline —
//!   an exponentially weighted moving average of its per-window counts with time constant
//!   `baseline` — and number at least `min_events`.
//!
//! The sliding window is a ring of [`BUCKETS`] sub-window counters (like the lockout's): an
//! event counts for at least `window` and less than `window + window / (BUCKETS - 1)`.
//! Everything here is pure over [`SharedStore`]; time is passed in.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{Event, Kind};
use crate::store::slots::{self, Decision, Updated};
use crate::store::window;
use crate::store::SharedStore;

/// Sub-window counters per key.
pub const BUCKETS: usize = 16;
/// Distinct values remembered per key (the largest `threshold` a `distinct` rule may use).
pub const MAX_DISTINCT: usize = 16;

/// What a rule counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Source,
    Username,
    Client,
    Subject,
    Route,
    /// The API key's id (the first 16 hex digits of its SHA-256, never the key).
    ApiKey,
}

impl KeyType {
    pub fn parse(s: &str) -> Option<KeyType> {
        Some(match s {
            "source" => KeyType::Source,
            "username" => KeyType::Username,
            "client" => KeyType::Client,
            "subject" => KeyType::Subject,
            "route" => KeyType::Route,
            "api_key" => KeyType::ApiKey,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyType::Source => "source",
            KeyType::Username => "username",
            KeyType::Client => "client",
            KeyType::Subject => "subject",
            KeyType::Route => "route",
            KeyType::ApiKey => "api_key",
        }
    }

    /// The key of an event (normalised: addresses by `ratelimit::client_key` — IPv6 per /64 —,
    /// usernames lower-cased), if the event has one.
    pub fn of(self, e: &Event) -> Option<String> {
        match self {
            KeyType::Source => e.source.as_deref().map(|s| {
                let k = crate::net::client_key(s);
                k.strip_prefix("addr:").map_or(k.clone(), str::to_string)
            }),
            KeyType::Username => e.username.as_deref().map(str::to_lowercase),
            KeyType::Client => e.client.clone(),
            KeyType::Subject => e.subject.clone(),
            KeyType::Route => e.route.clone(),
            KeyType::ApiKey => e.api_key_id.clone(),
        }
    }
}

/// How a rule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Threshold(u32),
    Distinct(KeyType, u32),
    Anomaly { factor: f64, baseline_ms: u64, min_events: u32 },
}

/// An action of a fired rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A `rule_triggered` event to this sink (index into `events.sinks`).
    Alert(usize),
    /// Refuse requests carrying the key for this long (429 `blocked`).
    Block(u64),
    /// Put the key's credentials on the local revocation set for this long (401 `revoked`).
    Revoke(u64),
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub kind: Kind,
    /// Reason codes the event must have (empty: any).
    pub reasons: Vec<&'static str>,
    /// Route names (or indices) the event must be on (empty: any).
    pub routes: Vec<String>,
    pub key: KeyType,
    pub trigger: Trigger,
    pub window_ms: u64,
    pub actions: Vec<Action>,
}

impl Rule {
    /// Whether `e` is one of the events this rule counts.
    pub fn matches(&self, e: &Event) -> bool {
        e.kind() == self.kind
            && (self.reasons.is_empty() || e.reason.is_some_and(|r| self.reasons.contains(&r)))
            && (self.routes.is_empty() || e.route.as_ref().is_some_and(|r| self.routes.contains(r)))
    }
}

/// One key's counter record.
#[derive(Debug, Clone, PartialEq)]
struct Counter {
    fp: u64,
    /// Index (`now / sub`) of the newest sub-window written.
    head: u64,
    counts: [u32; BUCKETS],
    last_fired_ms: u64,
    /// When the events now counted began (the first after the key was last quiet or fired).
    first_ms: u64,
    /// `distinct`: value hashes and when each was last seen.
    seen: Vec<(u32, u64)>,
    /// `anomaly`: the baseline (events per window, ×1000) and the current window's start/count.
    baseline_milli: u64,
    window_start_ms: u64,
    window_count: u32,
}

const FIXED: usize = 8 + 8 + 4 * BUCKETS + 8 + 8 + 8 + 4 + 1 + 8;

fn encode(c: &Counter) -> Vec<u8> {
    let mut v = Vec::with_capacity(FIXED + 12 * c.seen.len());
    v.extend_from_slice(&c.fp.to_le_bytes());
    v.extend_from_slice(&c.head.to_le_bytes());
    for n in c.counts {
        v.extend_from_slice(&n.to_le_bytes());
    }
    v.extend_from_slice(&c.last_fired_ms.to_le_bytes());
    v.extend_from_slice(&c.baseline_milli.to_le_bytes());
    v.extend_from_slice(&c.window_start_ms.to_le_bytes());
    v.extend_from_slice(&c.window_count.to_le_bytes());
    v.push(c.seen.len() as u8);
    v.extend_from_slice(&c.first_ms.to_le_bytes());
    for (h, t) in &c.seen {
        v.extend_from_slice(&h.to_le_bytes());
        v.extend_from_slice(&t.to_le_bytes());
    }
    v
}

fn decode(v: &[u8]) -> Option<Counter> {
    let u64_at = |i: usize| -> Option<u64> { Some(u64::from_le_bytes(v.get(i..i + 8)?.try_into().ok()?)) };
    let u32_at = |i: usize| -> Option<u32> { Some(u32::from_le_bytes(v.get(i..i + 4)?.try_into().ok()?)) };
    let mut counts = [0u32; BUCKETS];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = u32_at(16 + 4 * i)?;
    }
    let base = 16 + 4 * BUCKETS;
    let n = usize::from(*v.get(base + 28)?);
    if n > MAX_DISTINCT || v.len() != FIXED + 12 * n {
        return None;
    }
    let seen =
        (0..n).map(|i| Some((u32_at(FIXED + 12 * i)?, u64_at(FIXED + 12 * i + 4)?))).collect::<Option<Vec<_>>>()?;
    Some(Counter {
        fp: u64_at(0)?,
        head: u64_at(8)?,
        counts,
        last_fired_ms: u64_at(base)?,
        baseline_milli: u64_at(base + 8)?,
        window_start_ms: u64_at(base + 16)?,
        window_count: u32_at(base + 24)?,
        first_ms: u64_at(base + 29)?,
        seen,
    })
}

impl Counter {
    fn fresh(fp: u64, now_ms: u64, sub_ms: u64) -> Counter {
        Counter {
            fp,
            head: now_ms / sub_ms,
            counts: [0; BUCKETS],
            last_fired_ms: 0,
            first_ms: now_ms,
            seen: Vec::new(),
            baseline_milli: 0,
            window_start_ms: now_ms,
            window_count: 0,
        }
    }

    fn advance(&mut self, now_ms: u64, sub_ms: u64) {
        window::advance(&mut self.counts, &mut self.head, now_ms / sub_ms);
    }

    fn total(&self) -> u64 {
        window::total(&self.counts)
    }

    /// Idle: nothing in the window and not within a firing's quiet period.
    fn idle(&self, now_ms: u64, rule: &Rule) -> bool {
        let mut c = self.clone();
        let sub = sub_ms(rule.window_ms);
        c.advance(now_ms, sub);
        c.total() == 0 && now_ms >= self.last_fired_ms.saturating_add(rule.window_ms) && c.window_count == 0
    }
}

fn sub_ms(window_ms: u64) -> u64 {
    window_ms.div_ceil(BUCKETS as u64 - 1).max(1)
}

/// Counts one event for a rule and key; `Some(count)` when the rule fires now.
fn count(c: &mut Counter, rule: &Rule, distinct_value: Option<&str>, now_ms: u64) -> Option<u64> {
    let sub = sub_ms(rule.window_ms);
    c.advance(now_ms, sub);
    if c.total() == 0 || (c.last_fired_ms != 0 && c.first_ms <= c.last_fired_ms) {
        c.first_ms = now_ms; // a new run of events
    }
    window::add(&mut c.counts, c.head);
    let armed = c.last_fired_ms == 0 || now_ms >= c.last_fired_ms.saturating_add(rule.window_ms);
    let observed = match &rule.trigger {
        Trigger::Threshold(t) => (c.total() >= u64::from(*t)).then_some(c.total()),
        Trigger::Distinct(_, t) => {
            let v = distinct_value?;
            let h = u32::from_le_bytes(Sha256::digest(v.as_bytes()).get(..4)?.try_into().ok()?);
            c.seen.retain(|(_, t)| now_ms < t.saturating_add(rule.window_ms));
            match c.seen.iter_mut().find(|(x, _)| *x == h) {
                Some(e) => e.1 = now_ms,
                None => {
                    if c.seen.len() >= MAX_DISTINCT {
                        c.seen.remove(0);
                    }
                    c.seen.push((h, now_ms));
                }
            }
            (c.seen.len() as u64 >= u64::from(*t)).then_some(c.seen.len() as u64)
        }
        Trigger::Anomaly { factor, baseline_ms, min_events } => {
            // Close finished windows into the moving average (one step per window).
            while now_ms >= c.window_start_ms.saturating_add(rule.window_ms) {
                let alpha_milli = (rule.window_ms.saturating_mul(1000) / (*baseline_ms).max(1)).min(1000);
                let x = u64::from(c.window_count).saturating_mul(1000);
                c.baseline_milli =
                    (c.baseline_milli.saturating_mul(1000 - alpha_milli) + x.saturating_mul(alpha_milli)) / 1000;
                c.window_count = 0;
                c.window_start_ms = c.window_start_ms.saturating_add(rule.window_ms);
                if now_ms.saturating_sub(c.window_start_ms) > baseline_ms.saturating_mul(8) {
                    c.window_start_ms = now_ms; // long idle: the baseline has decayed away
                    c.baseline_milli = 0;
                }
            }
            c.window_count = c.window_count.saturating_add(1);
            let n = u64::from(c.window_count);
            let limit = (c.baseline_milli as f64 / 1000.0) * factor;
            (n >= u64::from(*min_events) && c.baseline_milli > 0 && n as f64 > limit).then_some(n)
        }
    };
    let fired = observed.filter(|_| armed);
    if fired.is_some() {
        c.last_fired_ms = now_ms;
    }
    fired
}

/// A rule that fired for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub rule: usize,
    pub key: String,
    pub count: u64,
    /// When the counted run began, and when it fired.
    pub first_ms: u64,
    pub at_ms: u64,
}

/// Counts `e` for every rule it matches; returns the rules that fire.
pub fn observe(store: &dyn SharedStore, rules: &[Rule], slots: u64, e: &Event, now_ms: u64) -> Vec<Fired> {
    let mut fired = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if !rule.matches(e) {
            continue;
        }
        let Some(key) = rule.key.of(e) else { continue };
        let distinct = match &rule.trigger {
            Trigger::Distinct(k, _) => match k.of(e) {
                Some(v) => Some(v),
                None => continue,
            },
            _ => None,
        };
        let at = slots::locate(format!("{i}\u{0}{key}").as_bytes(), slots);
        let fp = at.fp;
        let sub = sub_ms(rule.window_ms);
        let updated = slots::update(
            store,
            "rule",
            &at,
            decode,
            |c: &Counter| c.fp == fp,
            |read| {
                let target = slots::target(read, |r: &Counter| r.fp == fp, |r: &Counter| r.idle(now_ms, rule));
                // A full table never evicts a key that is counting: the event is not counted.
                let Some(index) = target else { return Decision::Answer(None) };
                let mut c = match read.get(index).and_then(|c| c.record.clone()) {
                    Some(r) if r.fp == fp => r,
                    _ => Counter::fresh(fp, now_ms, sub),
                };
                let f = count(&mut c, rule, distinct.as_deref(), now_ms).map(|n| (n, c.first_ms));
                Decision::Write { index, bytes: encode(&c), answer: f }
            },
        );
        if let Updated::Done(Some((count, first_ms))) = updated {
            fired.push(Fired { rule: i, key, count, first_ms, at_ms: now_ms });
        }
    }
    fired
}

// ---------------------------------------------------------------------------------------------
// Blocks and rule revocations, shared by all workers

/// What a rule did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Block,
    Revoke,
}

/// The key of an action entry: effect, key type, hash of the key.
type EntryKey = (Effect, KeyType, u64);

fn key_hash(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    u64::from_le_bytes(d.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
}

/// The blocks and revocations in force (until when, unix ms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    entries: HashMap<EntryKey, u64>,
}

/// At most this many blocks and revocations at once (expired ones are pruned first, then the
/// soonest to lapse is replaced).
pub const MAX_ACTIONS: usize = 4096;

fn effect_code(e: Effect) -> u8 {
    match e {
        Effect::Block => 1,
        Effect::Revoke => 2,
    }
}

fn key_code(k: KeyType) -> u8 {
    match k {
        KeyType::Source => 1,
        KeyType::Username => 2,
        KeyType::Client => 3,
        KeyType::Subject => 4,
        KeyType::Route => 5,
        KeyType::ApiKey => 6,
    }
}

fn key_from(c: u8) -> Option<KeyType> {
    Some(match c {
        1 => KeyType::Source,
        2 => KeyType::Username,
        3 => KeyType::Client,
        4 => KeyType::Subject,
        5 => KeyType::Route,
        6 => KeyType::ApiKey,
        _ => return None,
    })
}

impl Actions {
    /// Until when (unix ms) `key` of `kt` is under `effect` at `now_ms`.
    pub fn until(&self, effect: Effect, kt: KeyType, key: &str, now_ms: u64) -> Option<u64> {
        self.entries.get(&(effect, kt, key_hash(key))).copied().filter(|u| *u > now_ms)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn add(&mut self, effect: Effect, kt: KeyType, key: &str, until_ms: u64, now_ms: u64) {
        self.entries.retain(|_, u| *u > now_ms);
        if self.entries.len() >= MAX_ACTIONS {
            if let Some(k) = self.entries.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                self.entries.remove(&k);
            }
        }
        let e = self.entries.entry((effect, kt, key_hash(key))).or_insert(0);
        *e = (*e).max(until_ms);
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.entries.len() * 18);
        for ((e, k, h), u) in &self.entries {
            v.push(effect_code(*e));
            v.push(key_code(*k));
            v.extend_from_slice(&h.to_le_bytes());
            v.extend_from_slice(&u.to_le_bytes());
        }
        v
    }

    fn decode(v: &[u8]) -> Actions {
        let mut entries = HashMap::new();
        for ch in v.chunks_exact(18) {
            let effect = match ch.first() {
                Some(1) => Effect::Block,
                Some(2) => Effect::Revoke,
                _ => continue,
            };
            let Some(kt) = ch.get(1).copied().and_then(key_from) else { continue };
            let (Some(h), Some(u)) = (ch.get(2..10), ch.get(10..18)) else { continue };
            let (Ok(h), Ok(u)) = (<[u8; 8]>::try_from(h), <[u8; 8]>::try_from(u)) else { continue };
            entries.insert((effect, kt, u64::from_le_bytes(h)), u64::from_le_bytes(u));
        }
        Actions { entries }
    }
}

/// Records a block or revocation for every worker (a CAS on one shared record; its version key
/// lets workers notice within a tick). Returns the set as now published.
pub fn publish(
    store: &dyn SharedStore,
    ns: &crate::store::Namespace,
    effect: Effect,
    kt: KeyType,
    key: &str,
    until_ms: u64,
    now_ms: u64,
) -> Option<Actions> {
    let rkey = ns.key("actions");
    for _ in 0..slots::MAX_CAS_RETRIES {
        let (v, cas) = store.get(&rkey);
        let mut a = v.as_deref().map(Actions::decode).unwrap_or_default();
        a.add(effect, kt, key, until_ms, now_ms);
        if store.set(&rkey, &a.encode(), cas).is_ok() {
            // Every publication moves the version (a lost race retries), so every worker
            // that compares versions reloads the actions.
            crate::store::bump(store, &ns.key("actions.version"));
            return Some(a);
        }
    }
    None
}

/// A newer published action set than `have_version`: `(version, actions)`.
pub fn sync(store: &dyn SharedStore, ns: &crate::store::Namespace, have_version: u64) -> Option<(u64, Actions)> {
    let (v, _) = store.get(&ns.key("actions.version"));
    let version = v.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_le_bytes)?;
    if version == have_version {
        return None;
    }
    let (record, _) = store.get(&ns.key("actions"));
    Some((version, record.as_deref().map(Actions::decode).unwrap_or_default()))
}

#[cfg(test)]
mod tests;
