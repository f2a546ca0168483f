//! Root context: configuration, stats, background key-set fetches.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel, MetricType};

use super::http::Requests;
use super::native::{HostSigner, HostVerifier};
use super::store::HostStore;
use super::{dispatch, log, read_reply};
use crate::config::{self, Config};
use crate::events::queue::{self, Outcome, Queue};
use crate::events::{Event, Kind};
use crate::flow::WorkerState;
use crate::jwt::keys::{Fetch, Fetched};
use crate::stats::Counter;

/// What every request context of this worker shares.
pub(crate) struct Shared {
    pub cfg: Config,
    pub state: RefCell<WorkerState>,
    pub metrics: HashMap<Counter, u32>,
    pub native: HostVerifier,
    pub signer: HostSigner,
    pub requests: Requests,
    /// Counts not yet handed to Envoy (metric id → count).
    pub pending_counts: RefCell<HashMap<u32, u64>>,
    /// One bounded queue per event sink. Workers enqueue their events on the host queue
    /// `events_queue`; only the root that drains it (the last to register) fills these, so the
    /// bound holds for the whole Envoy. Without a host queue, this worker's own events.
    pub sinks: RefCell<Vec<Queue>>,
    /// The host shared queue every worker hands events to.
    pub events_queue: Option<u32>,
    /// When this root last wrote the consumer heartbeat (Unix ms).
    pub events_heartbeat: std::cell::Cell<u64>,
}

impl Shared {
    /// Counts locally; [`Shared::flush`] hands the counts to Envoy on the tick, so the hot
    /// path makes no host call for stats (each costs about a microsecond).
    pub fn bump(&self, counters: &[Counter]) {
        let mut pending = self.pending_counts.borrow_mut();
        for c in counters {
            if let Some(id) = self.metrics.get(c) {
                *pending.entry(*id).or_insert(0) += 1;
            }
        }
    }

    /// Counts `n` of one counter.
    pub fn bump_n(&self, counter: Counter, n: u64) {
        if let Some(id) = self.metrics.get(&counter) {
            let mut pending = self.pending_counts.borrow_mut();
            let c = pending.entry(*id).or_insert(0);
            *c = c.saturating_add(n);
        }
    }

    /// Logs events (every one with `events.log`; lockouts always) and queues them for the
    /// sinks that take their kind. Never a request's critical path beyond a queue push.
    pub fn record_events(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let ev = &self.cfg.events;
        let mut sinks = self.sinks.borrow_mut();
        for e in events {
            if e.quiet {
                continue;
            }
            let kind = e.kind();
            let mask = ev
                .sinks
                .iter()
                .enumerate()
                .filter(|(i, s)| s.kinds.contains(&kind) || e.to_sink == Some(*i))
                .fold(0u64, |m, (i, _)| m | (1 << i));
            if !(ev.log || kind == Kind::LockedOut || mask != 0) {
                continue;
            }
            let json = e.to_json().to_string();
            if ev.log || kind == Kind::LockedOut {
                log(LogLevel::Info, &json);
            }
            if mask == 0 {
                continue;
            }
            let shared_ok = self
                .events_queue
                .is_some_and(|q| hostcalls::enqueue_shared_queue(q, Some(&queue::encode(mask, &json))).is_ok());
            if !shared_ok {
                let dropped = queue::deliver(&mut sinks, mask, &json);
                self.bump_n(Counter::EventsDroppedOverflow, dropped);
            }
        }
    }

    /// Moves what the workers enqueued into this root's sink queues (bounded per call; the
    /// host announces every enqueue, so what is left comes with the next call).
    pub fn drain_events(&self, queue_id: u32) {
        // The consumer's heartbeat (at most every 250 ms): other roots take over the queue
        // when it goes stale (see `Root::events_consumer`).
        let now = super::http::clock();
        if now.saturating_sub(self.events_heartbeat.get()) >= 250 {
            self.events_heartbeat.set(now);
            let _ = crate::store::SharedStore::set(&HostStore, &self.cfg.events.consumer_key(), &now.to_le_bytes(), 0);
        }
        let mut sinks = self.sinks.borrow_mut();
        let mut dropped = 0;
        for _ in 0..4096 {
            match hostcalls::dequeue_shared_queue(queue_id) {
                Ok(Some(msg)) => {
                    if let Some((mask, json)) = queue::decode(&msg) {
                        dropped += queue::deliver(&mut sinks, mask, json);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        drop(sinks);
        self.bump_n(Counter::EventsDroppedOverflow, dropped);
    }

    /// Adds the pending counts to Envoy's counters.
    pub fn flush(&self) {
        let pending: Vec<(u32, i64)> = self
            .pending_counts
            .borrow_mut()
            .drain()
            .map(|(id, n)| (id, i64::try_from(n).unwrap_or(i64::MAX)))
            .collect();
        for (id, n) in pending {
            let _ = hostcalls::increment_metric(id, n);
        }
    }
}

/// 128 random bits from the host: std's `RandomState` is keyed from WASI `random_get`.
fn random_salt() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

#[derive(Default)]
pub(crate) struct Root {
    id: u32,
    shared: Option<Rc<Shared>>,
    fetches: HashMap<u32, Fetch>,
    /// Event batches in flight: callout token → sink index.
    sink_calls: HashMap<u32, usize>,
    /// The revocation poll in flight, if any.
    revocation_call: Option<u32>,
}

impl Root {
    pub fn new(id: u32) -> Self {
        Root { id, ..Root::default() }
    }
}

impl Root {
    fn revocation_source(rc: &crate::config::Revocation) -> crate::events::revocation::Source<'_> {
        crate::events::revocation::Source {
            cluster: &rc.endpoint.cluster,
            authority: &rc.endpoint.authority,
            path: &rc.endpoint.path,
            timeout_ms: rc.endpoint.timeout_ms,
            poll_interval_ms: rc.poll_interval_ms,
            ns: &rc.ns,
        }
    }

    /// The revocation list: poll it when this worker holds the proxy's poll slot, and pick up
    /// whatever list another worker published.
    fn revocation_tick(&mut self, shared: &Rc<Shared>) {
        let Some(rc) = &shared.cfg.revocation else { return };
        let now = super::http::clock();
        if self.revocation_call.is_none() {
            if let Some(c) = crate::events::revocation::poll_due(&HostStore, &Self::revocation_source(rc), now) {
                match dispatch(&c) {
                    Ok(token) => self.revocation_call = Some(token),
                    Err(e) => {
                        log(LogLevel::Warn, &format!("revocation list: {e}"));
                        shared.bump(&[Counter::RevocationPollFailed]);
                    }
                }
            }
        }
        let have = shared.state.borrow().revocation_version;
        if let Some((v, list)) = crate::events::revocation::sync(&HostStore, &rc.ns, have, rc.max_entries) {
            let mut st = shared.state.borrow_mut();
            st.revocation = Some(Rc::new(list));
            st.revocation_version = v;
        }
    }

    fn revocation_answer(&mut self, shared: &Rc<Shared>, reply: &crate::callout::Reply) {
        let Some(rc) = &shared.cfg.revocation else { return };
        use crate::events::revocation::Polled;
        match crate::events::revocation::on_answer(&HostStore, &Self::revocation_source(rc), reply, rc.max_entries) {
            Polled::Published(n) => {
                shared.bump(&[Counter::RevocationPublished]);
                log(LogLevel::Info, &format!("revocation list: {n} entries in force"));
                self.revocation_tick(shared);
                super::http::poll_parked(shared);
            }
            Polled::NotModified => shared.bump(&[Counter::RevocationNotModified]),
            Polled::Failed(why) => {
                shared.bump(&[Counter::RevocationPollFailed]);
                log(LogLevel::Warn, &format!("revocation list poll failed: {why}; the last good list stays in force"));
                shared.record_events(&[crate::flow::dependency_down("revocation", super::http::clock())]);
            }
        }
    }

    /// Keeps the event queue drained: the consumer is whichever root registered last, and it
    /// may be gone (its listener removed while another with the same sinks stays, its VM
    /// failed) while producers still enqueue. When no root has drained for a second, this one
    /// registers (becoming the consumer) and drains the backlog.
    fn events_consumer(&mut self, shared: &Rc<Shared>) {
        use crate::store::SharedStore;
        let Some(q) = shared.events_queue else { return };
        let key = shared.cfg.events.consumer_key();
        let now = super::http::clock();
        let last =
            HostStore.get(&key).0.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map_or(0, u64::from_le_bytes);
        if now.saturating_sub(last) <= 1000 {
            return;
        }
        if hostcalls::register_shared_queue(&shared.cfg.events.queue_name()) == Ok(q) {
            shared.events_heartbeat.set(0);
            shared.drain_events(q);
        }
    }

    /// Sends every sink's due batch (one in flight per sink).
    fn flush_sinks(&mut self, shared: &Rc<Shared>) {
        let now = super::http::clock();
        for (i, sink) in shared.cfg.events.sinks.iter().enumerate() {
            let body = shared.sinks.borrow_mut().get_mut(i).and_then(|q| q.due(now));
            if let Some(body) = body {
                self.send_batch(shared, i, sink, body);
            }
        }
    }

    fn send_batch(&mut self, shared: &Rc<Shared>, i: usize, sink: &crate::config::Sink, body: String) {
        let mut callout = crate::callout::Callout {
            cluster: sink.endpoint.cluster.clone(),
            method: "POST".into(),
            authority: sink.endpoint.authority.clone(),
            path: sink.endpoint.path.clone(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.into_bytes()),
            timeout_ms: sink.endpoint.timeout_ms,
        };
        callout.headers.extend(sink.headers.iter().cloned());
        match dispatch(&callout) {
            Ok(token) => {
                self.sink_calls.insert(token, i);
            }
            Err(e) => {
                log(LogLevel::Warn, &format!("event sink {:?}: {e}", sink.name));
                self.sink_outcome(shared, i, false);
            }
        }
    }

    fn sink_outcome(&mut self, shared: &Rc<Shared>, i: usize, ok: bool) {
        let outcome = shared.sinks.borrow_mut().get_mut(i).map(|q| q.done(ok));
        match outcome {
            Some(Outcome::Sent) => shared.bump(&[Counter::EventsBatchesSent]),
            Some(Outcome::Retry(body)) => {
                if let Some(sink) = shared.cfg.events.sinks.get(i) {
                    let sink = sink.clone();
                    self.send_batch(shared, i, &sink, body);
                }
            }
            Some(Outcome::Dropped(n)) => {
                shared.bump_n(Counter::EventsDroppedFailed, n);
                if let Some(sink) = shared.cfg.events.sinks.get(i) {
                    log(
                        LogLevel::Warn,
                        &format!("event sink {:?}: a batch of {n} events failed twice and was dropped", sink.name),
                    );
                }
            }
            Some(Outcome::Idle) | None => {}
        }
    }

    fn start_fetches(&mut self) {
        let Some(shared) = self.shared.clone() else { return };
        let due = {
            let mut st = shared.state.borrow_mut();
            st.keys.due_fetches(&shared.cfg, &HostStore, super::http::clock())
        };
        for f in due {
            self.start(&shared, f);
        }
    }

    fn start(&mut self, shared: &Rc<Shared>, f: Fetch) {
        match dispatch(&f.callout) {
            Ok(token) => {
                self.fetches.insert(token, f);
            }
            Err(e) => {
                log(LogLevel::Error, &format!("key set for provider {:?}: {e}", shared.cfg.providers[f.provider].name));
                self.finish(shared, &f, &crate::callout::Reply::default());
            }
        }
    }

    fn finish(&mut self, shared: &Rc<Shared>, f: &Fetch, reply: &crate::callout::Reply) {
        let name = &shared.cfg.providers[f.provider].name;
        let outcome = {
            let mut st = shared.state.borrow_mut();
            let r = st.keys.on_reply(&shared.cfg, &HostStore, f, reply, super::http::clock());
            if matches!(r, Fetched::Published { .. }) {
                st.cache.clear();
            }
            r
        };
        match outcome {
            Fetched::Published { warnings } => {
                shared.bump(&[Counter::JwksFetchOk]);
                for w in warnings {
                    log(LogLevel::Warn, &format!("provider {name:?}: {w}"));
                }
                log(LogLevel::Info, &format!("provider {name:?}: key set refreshed"));
                // Requests parked behind the first fetch go on now, not at the next tick.
                super::http::poll_parked(shared);
            }
            Fetched::Next(next) => self.start(shared, next),
            Fetched::Failed(why) => {
                shared.bump(&[Counter::JwksFetchFailed]);
                // The discovery document and the key set are separate dependencies.
                let what = if f.stage == crate::jwt::keys::Stage::Discovery { "discovery" } else { "jwks" };
                shared.record_events(&[crate::flow::dependency_down(&format!("{what}:{name}"), super::http::clock())]);
                log(
                    LogLevel::Warn,
                    &format!("provider {name:?}: key set fetch failed: {why}; keeping the last good set if any"),
                );
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(shared) = self.shared.clone() else { return };
        let reply = read_reply(body_size);
        if self.revocation_call == Some(token_id) {
            self.revocation_call = None;
            self.revocation_answer(&shared, &reply);
            return;
        }
        if let Some(i) = self.sink_calls.remove(&token_id) {
            let ok = reply.status.is_some_and(|s| (200..300).contains(&s));
            self.sink_outcome(&shared, i, ok);
            return;
        }
        match self.fetches.remove(&token_id) {
            Some(f) => self.finish(&shared, &f, &reply),
            // A request woken on the tick dispatched this callout from the root context.
            None => {
                super::http::deliver(&shared, token_id, &reply);
                // Requests parked behind it (the same token) need not wait for the next tick.
                super::http::poll_parked(&shared);
            }
        }
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(shared) = self.shared.clone() else { return };
        let reply = super::http::grpc_reply(status_code, response_size);
        super::http::deliver(&shared, token_id, &reply);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let env = |name: &str| std::env::var(name).ok();
        let cfg = match config::parse_owned(bytes, &env) {
            Ok(c) => c,
            Err(e) => {
                log(LogLevel::Error, &format!("invalid configuration: {e}"));
                return false;
            }
        };
        for w in &cfg.warnings {
            log(LogLevel::Warn, w);
        }
        let mut metrics = HashMap::new();
        for c in Counter::all() {
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, &c.metric_name(cfg.stats_instance.as_deref()))
            {
                metrics.insert(c, id);
            }
        }
        // Requests can park behind an introspection or a provider's first key-set fetch.
        let sinks: Vec<Queue> =
            cfg.events.sinks.iter().map(|s| Queue::new(s.queue_max, s.batch_max, s.flush_interval_ms)).collect();
        // One host queue per sink configuration; registering makes this root its consumer
        // (the last root to register drains it; every root may enqueue).
        let events_queue = if cfg.events.sinks.is_empty() {
            None
        } else {
            match hostcalls::register_shared_queue(&cfg.events.queue_name()) {
                Ok(id) => Some(id),
                Err(e) => {
                    log(LogLevel::Warn, &format!("event queue not shared ({e:?}): each worker queues its own events"));
                    None
                }
            }
        };
        let parking = cfg.introspection.is_some()
            || cfg.revocation.is_some()
            || cfg.providers.iter().any(|p| !matches!(p.keys, crate::config::KeySource::Local(_)));
        let mut worker = WorkerState::new(&cfg);
        // Uniqueness for token ids this worker issues: its start time and root context id.
        worker.seed = super::http::clock() ^ (u64::from(self.id) << 48);
        worker.salt = crate::store::salt(&HostStore, random_salt);
        let state = RefCell::new(worker);
        self.shared = Some(Rc::new(Shared {
            cfg,
            state,
            metrics,
            native: HostVerifier::default(),
            signer: HostSigner::default(),
            requests: Requests::default(),
            pending_counts: RefCell::new(HashMap::new()),
            sinks: RefCell::new(sinks),
            events_queue,
            events_heartbeat: std::cell::Cell::new(0),
        }));
        // The tick flushes stats (every 100 ms), keeps remote key sets fresh (callouts cannot
        // start inside on_configure: the cluster manager answers BadArgument, so the first
        // tick fetches) and polls parked requests (every 25 ms when requests can park: introspection or remote key sets).
        if hostcalls::set_tick_period(Duration::from_millis(if parking { 25 } else { 100 })).is_err() {
            log(LogLevel::Error, "the host refused the tick period: key sets will not refresh");
        }
        // This VM's linear memory (the module's heap high-water mark, never returned to the
        // host): the per-VM share of the footprint that depends on the configuration.
        let pages = core::arch::wasm32::memory_size::<0>();
        log(LogLevel::Info, &format!("configuration loaded (linear memory {} KiB)", pages * 64));
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = self.shared.clone() {
            super::http::poll_parked(&shared);
            shared.flush();
            self.events_consumer(&shared);
            self.flush_sinks(&shared);
            self.revocation_tick(&shared);
            if shared.cfg.rules.acts {
                // Blocks and revocations other workers' rules published (within a tick).
                let have = shared.state.borrow().actions_version;
                if let Some((v, set)) = crate::events::rules::sync(&HostStore, &shared.cfg.rules.ns, have) {
                    let mut st = shared.state.borrow_mut();
                    st.actions = set;
                    st.actions_version = v;
                }
            }
        }
        self.start_fetches();
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(shared) = self.shared.clone() {
            if shared.events_queue == Some(queue_id) {
                shared.drain_events(queue_id);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a configuration the request context fails closed (the SDK would abort the
        // VM on None).
        Some(Box::new(super::http::Http::new(context_id, self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
