//! A room's log: the position of each publication in the room's stream, and the most recent
//! publications kept for clients that reconnect (SSE `Last-Event-ID` today; history and recovery
//! build on it).
//!
//! Positions are per room, taken once per publication by the thread that routes it
//! ([`Router::route`](super::router::Router::route)), so they are comparable whichever shard a
//! reconnecting client lands on. A room that never had a reader of positions assigns none and
//! keeps nothing: WebSocket-only rooms pay one relaxed load per publication.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::protocol::frame::Frame;

/// A room's event ids and recent events, kept in the room's shared part.
///
/// Dormant until a reader of positions subscribes ([`watch`](Self::watch)); from then on, for the
/// room's lifetime, each `message` publish takes the next id and, when `cap > 0`, goes into a
/// ring of the last `cap` events under a per-room mutex. That lock is taken once per publish by
/// the publishing thread (never per recipient, never by the delivering shards), and only in rooms
/// with SSE subscribers.
#[derive(Debug)]
pub struct RoomLog {
    watched: AtomicBool,
    seq: AtomicU64,
    cap: usize,
    history: Mutex<VecDeque<(u64, Frame)>>,
}

impl RoomLog {
    /// A dormant log that will keep up to `cap` events.
    pub fn new(cap: usize) -> Self {
        Self {
            watched: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            cap,
            history: Mutex::new(VecDeque::new()),
        }
    }

    /// An SSE client subscribed: assign ids and keep history from now on.
    pub fn watch(&self) {
        self.watched.store(true, Ordering::Release);
    }

    /// Records a publish and returns its id, or 0 while no SSE client ever subscribed (then
    /// shards skip SSE delivery altogether).
    pub fn record(&self, frame: &Frame) -> u64 {
        if !self.watched.load(Ordering::Acquire) {
            return 0;
        }
        if self.cap == 0 {
            return self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        }
        // Id and ring position under one lock, so the ring stays in id order.
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let id = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if h.len() == self.cap {
            h.pop_front();
        }
        h.push_back((id, frame.clone()));
        id
    }

    /// The kept events after `last` (a client's `Last-Event-ID`), oldest first.
    pub fn since(&self, last: u64) -> Vec<(u64, Frame)> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.iter().filter(|(id, _)| *id > last).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{encode, OpCode};

    #[test]
    fn a_log_is_dormant_until_watched_then_keeps_the_last_publications() {
        let log = RoomLog::new(3);
        let f: Frame = encode(OpCode::Text, b"x");
        assert_eq!(log.record(&f), 0, "nobody reads positions: none assigned");
        log.watch();
        let ids: Vec<u64> = (0..5).map(|_| log.record(&f)).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        let kept: Vec<u64> = log.since(0).iter().map(|e| e.0).collect();
        assert_eq!(kept, [3, 4, 5], "only the last three are kept");
        let after: Vec<u64> = log.since(4).iter().map(|e| e.0).collect();
        assert_eq!(after, [5]);
        let none = RoomLog::new(0);
        none.watch();
        assert_eq!(none.record(&f), 1);
        assert!(none.since(0).is_empty());
    }
}
