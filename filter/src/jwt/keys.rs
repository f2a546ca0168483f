//! Key-set lifecycle for every provider (SPEC C1): one fetch per Envoy, shared by all workers.
//!
//! * **Local** sets are ready at configure time and never change.
//! * **Remote / discovery** sets are fetched by whichever worker wins a lease in shared data
//!   (`portcullis.jwkslease.<provider>`). The winner publishes the raw document with a
//!   version and fetch time under `portcullis.jwks.<provider>`; every worker re-parses only
//!   when the version it sees changes ([`Keys::sync`]).
//! * A set is refreshed in the background before `cache_duration` ends. A failed fetch keeps
//!   the last good set; a set older than `cache_duration + max_stale` is no longer used and
//!   requests get 503 (the caller's credential is not at fault). Failures back off
//!   exponentially (1 s doubling to 60 s) so a down identity provider is not hammered.
//! * An unknown `kid` may trigger one early refresh per `unknown_kid_refresh_interval` across
//!   all workers (a CAS on `portcullis.kidrefresh.<provider>`); the request that met it waits
//!   for that refresh (bounded by the fetch timeout).
//!
//! Everything here is pure: time is passed in, shared data comes through [`SharedStore`],
//! fetches leave as [`Callout`]s and come back as [`Reply`]s.

use std::rc::Rc;

use crate::callout::{Callout, Reply, MAX_REPLY_BYTES};
use crate::config::{Config, KeySource, RemoteJwks};
use crate::crypto::jwks::{self, KeySet};
use crate::store::{self, SharedStore};

/// One provider's keys as this worker knows them.
#[derive(Debug, Clone, Default)]
pub struct KeyState {
    pub set: Option<Rc<KeySet>>,
    /// Version of the shared record this set came from (local sets: 1).
    pub version: u64,
    pub fetched_at_ms: u64,
    /// Earliest time this worker tries a background fetch again.
    next_attempt_ms: u64,
    backoff_ms: u64,
    /// For discovery providers: the `jwks_uri` found, as (authority, path).
    jwks_location: Option<(String, String)>,
}

/// Whether a provider's keys can be used now.
#[derive(Debug)]
pub enum Availability<'a> {
    Ready(&'a Rc<KeySet>, u64),
    /// Never fetched, or stale beyond `max_stale`.
    Unavailable,
}

/// Which step of a fetch a callout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Discovery,
    Jwks,
}

/// A fetch in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub provider: usize,
    pub stage: Stage,
    pub callout: Callout,
    /// True when this fetch holds the background lease (released when it ends).
    pub leased: bool,
}

/// What a completed fetch step led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// A new set is published (with warnings about skipped keys).
    Published { warnings: Vec<String> },
    /// Discovery answered; fetch the key set next.
    Next(Fetch),
    /// The fetch failed; the last good set (if any) stays in use.
    Failed(String),
}

const MIN_BACKOFF_MS: u64 = 1000;
const MAX_BACKOFF_MS: u64 = 60_000;

fn remote(cfg: &Config, i: usize) -> Option<&RemoteJwks> {
    match &cfg.providers.get(i)?.keys {
        KeySource::Remote(r) | KeySource::Discovery(r) => Some(r),
        KeySource::Local(_) => None,
    }
}

fn record_key(cfg: &Config, i: usize) -> String {
    cfg.providers.get(i).map_or_else(String::new, |p| p.store_ns.key("jwks"))
}

/// Per-worker key state for all providers.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub providers: Vec<KeyState>,
}

impl Keys {
    /// Local sets ready; remote ones empty until fetched or synced.
    pub fn new(cfg: &Config) -> Keys {
        let providers = cfg
            .providers
            .iter()
            .map(|p| match &p.keys {
                KeySource::Local(set) => {
                    KeyState { set: Some(Rc::new(set.clone())), version: 1, ..KeyState::default() }
                }
                _ => KeyState::default(),
            })
            .collect();
        Keys { providers }
    }

    /// The keys to verify with at `now_ms`.
    pub fn available(&self, cfg: &Config, i: usize, now_ms: u64) -> Availability<'_> {
        let Some(st) = self.providers.get(i) else { return Availability::Unavailable };
        let Some(set) = &st.set else { return Availability::Unavailable };
        if let Some(r) = remote(cfg, i) {
            let usable_until = st.fetched_at_ms.saturating_add(r.cache_duration_ms).saturating_add(r.max_stale_ms);
            if now_ms >= usable_until {
                return Availability::Unavailable;
            }
        }
        Availability::Ready(set, st.version)
    }

    /// Picks up a newer set another worker published. Returns warnings when it re-parsed.
    pub fn sync(&mut self, cfg: &Config, store: &dyn SharedStore, i: usize) -> Vec<String> {
        if remote(cfg, i).is_none() {
            return Vec::new();
        }
        let (value, _) = store.get(&record_key(cfg, i));
        let Some(v) = value else { return Vec::new() };
        let Some((version, fetched_at, body, location)) = decode_record(&v) else { return Vec::new() };
        let Some(st) = self.providers.get_mut(i) else { return Vec::new() };
        if version == st.version {
            return Vec::new();
        }
        match jwks::parse(body) {
            Ok((set, warnings)) => {
                st.set = Some(Rc::new(set));
                st.version = version;
                st.fetched_at_ms = fetched_at;
                if location.is_some() {
                    st.jwks_location = location;
                }
                warnings
            }
            Err(_) => Vec::new(),
        }
    }

    /// Background maintenance: syncs every remote provider and returns the fetches this
    /// worker should start now (each under a lease, so one per Envoy).
    pub fn due_fetches(&mut self, cfg: &Config, store: &dyn SharedStore, now_ms: u64) -> Vec<Fetch> {
        let mut out = Vec::new();
        for i in 0..self.providers.len() {
            let Some(r) = remote(cfg, i) else { continue };
            self.sync(cfg, store, i);
            let Some(st) = self.providers.get(i) else { continue };
            let due = match &st.set {
                None => true,
                Some(_) => {
                    let margin = (r.cache_duration_ms / 5).min(30_000);
                    now_ms >= st.fetched_at_ms.saturating_add(r.cache_duration_ms).saturating_sub(margin)
                }
            };
            if !due || now_ms < st.next_attempt_ms {
                continue;
            }
            let lease = cfg.providers[i].store_ns.key("jwkslease");
            if store::lease::try_take(store, &lease, b"", now_ms, 2 * r.timeout_ms + 1000) != store::lease::Lease::Taken
            {
                continue;
            }
            if let Some(mut f) = self.first_fetch(cfg, i) {
                f.leased = true;
                out.push(f);
            }
        }
        out
    }

    /// The first callout of a fetch cycle for provider `i` (discovery or key set).
    fn first_fetch(&self, cfg: &Config, i: usize) -> Option<Fetch> {
        let (stage, callout) = match &cfg.providers.get(i)?.keys {
            KeySource::Discovery(r) => match self.providers.get(i).and_then(|s| s.jwks_location.clone()) {
                // Known jwks_uri: refresh the set directly; discovery is re-run on failure.
                Some((authority, path)) if self.providers[i].set.is_some() => {
                    (Stage::Jwks, Callout::get(&r.cluster, &authority, &path, "application/json", r.timeout_ms))
                }
                _ => (
                    Stage::Discovery,
                    Callout::get(&r.cluster, &r.authority, &r.path, "application/json", r.timeout_ms),
                ),
            },
            KeySource::Remote(r) => {
                (Stage::Jwks, Callout::get(&r.cluster, &r.authority, &r.path, "application/json", r.timeout_ms))
            }
            KeySource::Local(_) => return None,
        };
        Some(Fetch { provider: i, stage, callout, leased: false })
    }

    /// For an unknown `kid`: takes the cross-worker early-refresh slot if the interval allows,
    /// returning the fetch the request should wait for.
    /// True when this worker has never had a set for remote provider `i` (startup).
    pub fn never_had(&self, cfg: &Config, i: usize) -> bool {
        remote(cfg, i).is_some() && self.providers.get(i).is_some_and(|s| s.set.is_none())
    }

    /// How long a request may wait for the first set of provider `i`: the fetch's own bound
    /// (discovery then key set: two round trips).
    pub fn first_wait_ms(&self, cfg: &Config, i: usize) -> u64 {
        let Some(r) = remote(cfg, i) else { return 0 };
        let trips = if matches!(cfg.providers.get(i).map(|p| &p.keys), Some(KeySource::Discovery(_))) { 2 } else { 1 };
        r.timeout_ms.saturating_mul(trips).saturating_add(250)
    }

    /// Starts the first fetch of provider `i` for a request that needs it (taking the lease),
    /// unless a fetch is already in flight somewhere or this worker is backing off after a
    /// failure.
    pub fn start_first(&mut self, cfg: &Config, store: &dyn SharedStore, i: usize, now_ms: u64) -> Option<Fetch> {
        let r = remote(cfg, i)?;
        if now_ms < self.providers.get(i)?.next_attempt_ms {
            return None;
        }
        let lease = cfg.providers.get(i)?.store_ns.key("jwkslease");
        if store::lease::try_take(store, &lease, b"", now_ms, 2 * r.timeout_ms + 1000) != store::lease::Lease::Taken {
            return None;
        }
        let mut f = self.first_fetch(cfg, i)?;
        f.leased = true;
        Some(f)
    }

    /// True when some worker holds the fetch lease of provider `i` (a fetch is in flight).
    pub fn fetch_in_flight(&self, cfg: &Config, store: &dyn SharedStore, i: usize, now_ms: u64) -> bool {
        cfg.providers.get(i).is_some_and(|p| store::lease::held(store, &p.store_ns.key("jwkslease"), now_ms))
    }

    pub fn early_refresh(&mut self, cfg: &Config, store: &dyn SharedStore, i: usize, now_ms: u64) -> Option<Fetch> {
        let r = remote(cfg, i)?;
        let f = self.first_fetch(cfg, i)?;
        if f.stage == Stage::Discovery && self.providers.get(i)?.set.is_some() {
            // The jwks_uri is not known yet: an early refresh would need two round trips.
            return None;
        }
        let key = cfg.providers[i].store_ns.key("kidrefresh");
        let (value, cas) = store.get(&key);
        if let Some(v) = value {
            let last = u64::from_le_bytes(<[u8; 8]>::try_from(v.as_slice()).ok()?);
            if now_ms < last.saturating_add(r.unknown_kid_refresh_interval_ms) {
                return None;
            }
        }
        store.set(&key, &now_ms.to_le_bytes(), cas).ok()?;
        Some(f)
    }

    /// Handles the reply to a fetch step.
    pub fn on_reply(
        &mut self,
        cfg: &Config,
        store: &dyn SharedStore,
        fetch: &Fetch,
        reply: &Reply,
        now_ms: u64,
    ) -> Fetched {
        let i = fetch.provider;
        let Some(r) = remote(cfg, i) else { return Fetched::Failed("not a remote provider".into()) };
        let body = match check_reply(reply) {
            Ok(b) => b,
            Err(e) => return self.fail(cfg, store, fetch, now_ms, e),
        };
        match fetch.stage {
            Stage::Discovery => match discovery_location(body) {
                Ok((authority, path)) => {
                    let callout = Callout::get(&r.cluster, &authority, &path, "application/json", r.timeout_ms);
                    if let Some(st) = self.providers.get_mut(i) {
                        st.jwks_location = Some((authority, path));
                    }
                    Fetched::Next(Fetch { provider: i, stage: Stage::Jwks, callout, leased: fetch.leased })
                }
                Err(e) => self.fail(cfg, store, fetch, now_ms, e.into()),
            },
            Stage::Jwks => {
                let (set, warnings) = match jwks::parse(body) {
                    Ok((set, _)) if set.is_empty() => {
                        return self.fail(cfg, store, fetch, now_ms, "key set has no usable key".into())
                    }
                    Ok(parsed) => parsed,
                    Err(e) => return self.fail(cfg, store, fetch, now_ms, format!("key set rejected: {e}")),
                };
                let location = self.providers.get(i).and_then(|s| s.jwks_location.clone());
                let version = self.publish(cfg, store, i, now_ms, body, location.as_ref());
                if let Some(st) = self.providers.get_mut(i) {
                    st.set = Some(Rc::new(set));
                    st.version = version;
                    st.fetched_at_ms = now_ms;
                    st.backoff_ms = 0;
                    st.next_attempt_ms = 0;
                }
                if fetch.leased {
                    store::lease::release(store, &cfg.providers[i].store_ns.key("jwkslease"), b"");
                }
                Fetched::Published { warnings }
            }
        }
    }

    /// Records a failed fetch: back off, forget a possibly moved `jwks_uri`, free the lease.
    fn fail(&mut self, cfg: &Config, store: &dyn SharedStore, fetch: &Fetch, now_ms: u64, why: String) -> Fetched {
        let i = fetch.provider;
        if let Some(st) = self.providers.get_mut(i) {
            st.backoff_ms = (st.backoff_ms * 2).clamp(MIN_BACKOFF_MS, MAX_BACKOFF_MS);
            st.next_attempt_ms = now_ms + st.backoff_ms;
            if fetch.stage == Stage::Jwks && matches!(cfg.providers[i].keys, KeySource::Discovery(_)) {
                st.jwks_location = None;
            }
        }
        if fetch.leased {
            store::lease::release(store, &cfg.providers[i].store_ns.key("jwkslease"), b"");
        }
        Fetched::Failed(why)
    }

    /// Writes a new record with the next version (CAS; a lost race means another worker
    /// published concurrently, which is as good).
    fn publish(
        &self,
        cfg: &Config,
        store: &dyn SharedStore,
        i: usize,
        now_ms: u64,
        body: &[u8],
        location: Option<&(String, String)>,
    ) -> u64 {
        let key = record_key(cfg, i);
        for _ in 0..4 {
            let (value, cas) = store.get(&key);
            let prev = value.as_deref().and_then(decode_record).map_or(0, |r| r.0);
            let version = prev + 1;
            if store.set(&key, &encode_record(version, now_ms, body, location), cas).is_ok() {
                return version;
            }
        }
        // Could not publish: keep a worker-local version that never matches a shared one.
        u64::MAX
    }
}

fn discovery_location(body: &[u8]) -> Result<(String, String), &'static str> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| "discovery document is not JSON")?;
    let uri = doc.get("jwks_uri").and_then(|u| u.as_str()).ok_or("discovery document has no jwks_uri")?;
    crate::config::split_url(uri).ok_or("discovery jwks_uri is not an http(s) URL")
}

fn check_reply(reply: &Reply) -> Result<&[u8], String> {
    match reply.status {
        None => Err("no response (connection failure or timeout)".into()),
        Some(s) if !(200..300).contains(&s) => Err(format!("HTTP status {s}")),
        Some(_) if reply.body.len() > MAX_REPLY_BYTES => Err("response too large".into()),
        Some(_) => Ok(&reply.body),
    }
}

/// Record layout: version u64 LE, fetched_at_ms u64 LE, location length u32 LE, location
/// (`authority\npath`, may be empty), then the key-set document.
fn encode_record(version: u64, fetched_at_ms: u64, body: &[u8], location: Option<&(String, String)>) -> Vec<u8> {
    let loc = location.map(|(a, p)| format!("{a}\n{p}")).unwrap_or_default();
    let mut out = Vec::with_capacity(20 + loc.len() + body.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&fetched_at_ms.to_le_bytes());
    out.extend_from_slice(&(loc.len() as u32).to_le_bytes());
    out.extend_from_slice(loc.as_bytes());
    out.extend_from_slice(body);
    out
}

type Record<'a> = (u64, u64, &'a [u8], Option<(String, String)>);

fn decode_record(v: &[u8]) -> Option<Record<'_>> {
    let version = u64::from_le_bytes(v.get(0..8)?.try_into().ok()?);
    let fetched = u64::from_le_bytes(v.get(8..16)?.try_into().ok()?);
    let loc_len = u32::from_le_bytes(v.get(16..20)?.try_into().ok()?) as usize;
    let loc = std::str::from_utf8(v.get(20..20 + loc_len)?).ok()?;
    let location = loc.split_once('\n').map(|(a, p)| (a.to_string(), p.to_string()));
    Some((version, fetched, v.get(20 + loc_len..)?, location))
}

#[cfg(test)]
mod tests;
