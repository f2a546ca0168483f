//! A sink's bounded queue and its batching: at most `batch_max` events per batch, a batch at
//! least every `flush_interval` while events wait, one retry of a failed batch, then drop; when
//! full, the oldest event is dropped (and counted). Pure: the host sends what [`Queue::due`]
//! hands out and reports the outcome.
//!
//! Workers share the queues: each worker hands its events to one host shared queue as
//! [`encode`]d messages, and the one root context that registered it last (the consumer)
//! drains them into its [`Queue`]s with [`decode`] and sends the batches. So `queue_max` bounds
//! the events of the whole Envoy, not of each worker.

use std::collections::VecDeque;

/// What a sink's delivery counters say (for stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Events dropped because the queue was full.
    pub overflow: u64,
    /// Events dropped after a batch failed twice.
    pub failed: u64,
}

/// One sink's queue.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    events: VecDeque<String>,
    max: usize,
    batch_max: usize,
    flush_interval_ms: u64,
    last_flush_ms: u64,
    /// The batch being sent (and whether it is a retry).
    in_flight: Option<(Vec<String>, bool)>,
    pub drops: Drops,
}

impl Queue {
    pub fn new(max: usize, batch_max: usize, flush_interval_ms: u64) -> Queue {
        Queue { max: max.max(1), batch_max: batch_max.max(1), flush_interval_ms, ..Queue::default() }
    }

    /// Adds an event (JSON text), dropping the oldest when full; true when one was dropped.
    pub fn push(&mut self, event: String) -> bool {
        let dropped = self.events.len() >= self.max;
        if dropped {
            self.events.pop_front();
            self.drops.overflow = self.drops.overflow.saturating_add(1);
        }
        self.events.push_back(event);
        dropped
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The next batch to send now (a JSON array), if one is due: none while one is in flight;
    /// a full batch at once; a partial one when `flush_interval` has passed since the last.
    pub fn due(&mut self, now_ms: u64) -> Option<String> {
        if self.in_flight.is_some() || self.events.is_empty() {
            return None;
        }
        let full = self.events.len() >= self.batch_max;
        if !full && now_ms < self.last_flush_ms.saturating_add(self.flush_interval_ms) {
            return None;
        }
        let n = self.events.len().min(self.batch_max);
        let batch: Vec<String> = self.events.drain(..n).collect();
        self.last_flush_ms = now_ms;
        let body = format!("[{}]", batch.join(","));
        self.in_flight = Some((batch, false));
        Some(body)
    }

    /// The outcome of the batch in flight: on the first failure it is sent once more (returned
    /// as `Retry`), on the second it is dropped (`Dropped(n)`, counted).
    pub fn done(&mut self, ok: bool) -> Outcome {
        let Some((batch, retried)) = self.in_flight.take() else { return Outcome::Idle };
        if ok {
            return Outcome::Sent;
        }
        if retried {
            self.drops.failed = self.drops.failed.saturating_add(batch.len() as u64);
            return Outcome::Dropped(batch.len() as u64);
        }
        let body = format!("[{}]", batch.join(","));
        self.in_flight = Some((batch, true));
        Outcome::Retry(body)
    }
}

/// The most sinks one configuration may name (a message carries them as a 64-bit mask).
pub const MAX_SINKS: usize = 64;

/// One event on its way to the consumer: the sinks that take it (bit `i` = sink `i`) and its
/// JSON text, as `<mask in hex>|<json>`.
pub fn encode(mask: u64, json: &str) -> Vec<u8> {
    let mut out = format!("{mask:x}|").into_bytes();
    out.extend_from_slice(json.as_bytes());
    out
}

/// The mask and JSON text of an [`encode`]d message; `None` for anything else.
pub fn decode(msg: &[u8]) -> Option<(u64, &str)> {
    let bar = msg.iter().position(|b| *b == b'|')?;
    let mask = u64::from_str_radix(std::str::from_utf8(&msg[..bar]).ok()?, 16).ok()?;
    let json = std::str::from_utf8(&msg[bar + 1..]).ok()?;
    (mask != 0 && !json.is_empty()).then_some((mask, json))
}

/// Pushes one decoded message into the queues its mask names; how many events were dropped
/// for room (drop-oldest).
pub fn deliver(queues: &mut [Queue], mask: u64, json: &str) -> u64 {
    let mut dropped = 0;
    for (i, q) in queues.iter_mut().enumerate().take(MAX_SINKS) {
        if mask & (1 << i) != 0 && q.push(json.to_string()) {
            dropped += 1;
        }
    }
    dropped
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No batch was in flight.
    Idle,
    Sent,
    /// Send this body again (the one retry).
    Retry(String),
    /// Dropped after the retry failed: this many events.
    Dropped(u64),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn batches_bounds_and_retries() {
        let mut q = Queue::new(5, 2, 1000);
        assert_eq!(q.due(0), None, "empty");
        assert!(!q.push("1".into()));
        assert_eq!(q.due(500), None, "a partial batch waits for the interval");
        assert_eq!(q.due(1000).as_deref(), Some("[1]"));
        let _ = q.push("2".into());
        let _ = q.push("3".into());
        assert_eq!(q.due(1001), None, "one batch in flight at a time");
        assert_eq!(q.done(true), Outcome::Sent);
        assert_eq!(q.due(1002).as_deref(), Some("[2,3]"), "a full batch goes at once");
        assert_eq!(q.done(false), Outcome::Retry("[2,3]".into()), "one retry");
        assert_eq!(q.done(false), Outcome::Dropped(2));
        assert_eq!(q.drops.failed, 2, "then dropped and counted");
        for i in 0..8 {
            let _ = q.push(i.to_string());
        }
        assert_eq!(q.len(), 5);
        assert_eq!(q.drops.overflow, 3, "the oldest go when full");
        assert_eq!(q.due(5000).as_deref(), Some("[3,4]"));
    }

    #[test]
    fn messages_between_workers_round_trip_and_refuse_garbage() {
        let m = encode(0b101, r#"{"kind":"denied","path":"/a|b"}"#);
        assert_eq!(m, br#"5|{"kind":"denied","path":"/a|b"}"#.to_vec());
        assert_eq!(decode(&m), Some((5, r#"{"kind":"denied","path":"/a|b"}"#)));
        let top = encode(1 << 63, "{}");
        assert_eq!(decode(&top), Some((1 << 63, "{}")));
        for bad in [&b""[..], b"|{}", b"0|{}", b"5|", b"zz|{}", b"5{}", b"10000000000000000|{}", b"5|\xff"] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(decode(&[b'5', b'|', 0xff]), None, "not UTF-8");

        let mut qs = vec![Queue::new(2, 10, 0), Queue::new(2, 10, 0), Queue::new(2, 10, 0)];
        assert_eq!(deliver(&mut qs, 0b101, "a"), 0);
        assert_eq!(deliver(&mut qs, 0b001, "b"), 0);
        assert_eq!(deliver(&mut qs, 0b001, "c"), 1, "the first queue is full: its oldest goes");
        assert_eq!((qs[0].len(), qs[1].len(), qs[2].len()), (2, 0, 1));
        assert_eq!(deliver(&mut qs, 1 << 40, "x"), 0, "a sink this configuration lacks takes nothing");
    }
}
