//! Server-Sent Events: the wire format, a room's event ids and history, and a shard's SSE
//! members. Pure: bytes and tick counts in, bytes and decisions out; the shard
//! (`shard/web.rs`) does the IO.
//!
//! An SSE stream is a room member that cannot speak: it gets the room's `message` events as
//!
//! ```text
//! id: 17
//! event: message
//! data: {"type":"message","room":"lobby","from":"alice","session":"5","data":"hi"}
//!
//! ```
//!
//! where `data` is byte for byte the JSON text a WebSocket member receives. A shard derives the
//! event from the WebSocket frame once per message ([`event`] over [`ws_payload`]) and queues
//! the same `Arc<[u8]>` to each of its SSE members, so a publish still costs one encode per
//! shard, not one per recipient.
//!
//! Ids are per room ([`EventLog`]): a counter in the room's shared part, taken once per publish
//! by the publishing thread, so they are comparable whichever shard a reconnecting client lands
//! on. Rooms that never had an SSE subscriber assign no ids and keep no history: WebSocket-only
//! rooms pay one relaxed load per publish.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::engine::ids::SessionId;
use crate::protocol::frame::Frame;

/// The comment line sent every `sse_heartbeat` so proxies and clients see the stream alive.
pub const HEARTBEAT: &[u8] = b": ping\n\n";

/// The response head that turns an HTTP connection into an event stream.
pub fn response_head() -> &'static [u8] {
    // No Content-Length: the body ends when the connection does. `X-Accel-Buffering: no` keeps
    // nginx from holding events back in its buffer.
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
      Connection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\n"
}

/// The payload of a complete, unmasked server frame (as `protocol::frame` encodes them).
pub fn ws_payload(frame: &[u8]) -> &[u8] {
    let start = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(start..).unwrap_or_default()
}

/// One `message` event with id `id`. Every line of `data` becomes a `data:` line, so a payload
/// with newlines (not one of ours: compact JSON has none) still arrives whole.
pub fn event(id: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 40);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(b"\nevent: message\n");
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// A room's event ids and recent events, kept in the room's shared part.
///
/// Dormant until an SSE client subscribes ([`watch`](Self::watch)); from then on, for the
/// room's lifetime, each `message` publish takes the next id and, when `cap > 0`, goes into a
/// ring of the last `cap` events under a per-room mutex. That lock is taken once per publish by
/// the publishing thread (never per recipient, never by the delivering shards), and only in rooms
/// with SSE subscribers.
#[derive(Debug)]
pub struct EventLog {
    watched: AtomicBool,
    seq: AtomicU64,
    cap: usize,
    history: Mutex<VecDeque<(u64, Frame)>>,
}

impl EventLog {
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

/// A shard's SSE members per room (they are also in the room's ordinary member list, which
/// WebSocket deliveries skip for them).
#[derive(Debug, Default)]
pub struct SseMembers {
    rooms: HashMap<Arc<str>, Vec<SessionId>>,
}

impl SseMembers {
    /// Adds a stream to a room.
    pub fn add(&mut self, room: &Arc<str>, id: SessionId) {
        let v = self.rooms.entry(room.clone()).or_default();
        if !v.contains(&id) {
            v.push(id);
        }
    }

    /// Removes a stream from a room.
    pub fn remove(&mut self, room: &str, id: SessionId) {
        if let Some(v) = self.rooms.get_mut(room) {
            v.retain(|s| *s != id);
            if v.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// The room's streams on this shard, if any.
    pub fn get(&self, room: &str) -> Option<&[SessionId]> {
        self.rooms.get(room).map(Vec::as_slice)
    }
}

/// What an SSE stream's timer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send a heartbeat comment, then look again at this tick.
    Beat(u64),
    /// Nothing to do until this tick.
    Wait(u64),
    /// Bytes have been queued with no write progress for the stall timeout: a slow reader.
    Stalled,
}

/// Decides an SSE stream's timer at `now` (ticks): heartbeats every `beat` after `last_beat`,
/// and the same write-stall rule as WebSockets (`queued` bytes and no progress since
/// `last_tx + stall`).
pub fn check(
    last_beat: u64,
    last_tx: u64,
    queued: bool,
    now: u64,
    beat: u64,
    stall: u64,
) -> Verdict {
    if queued && now >= last_tx + stall {
        return Verdict::Stalled;
    }
    let stall_at = if queued { last_tx + stall } else { u64::MAX };
    let beat_at = last_beat + beat;
    if now >= beat_at {
        Verdict::Beat((now + beat).min(stall_at))
    } else {
        Verdict::Wait(beat_at.min(stall_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{encode, OpCode};

    #[test]
    fn events_carry_the_websocket_payload_unchanged() {
        for len in [5, 200, 70_000] {
            let json = format!("{{\"x\":\"{}\"}}", "a".repeat(len));
            let f = encode(OpCode::Text, json.as_bytes());
            assert_eq!(ws_payload(&f), json.as_bytes());
            let ev = event(7, ws_payload(&f));
            let want = format!("id: 7\nevent: message\ndata: {json}\n\n");
            assert_eq!(ev, want.as_bytes());
        }
        assert_eq!(
            event(1, b"a\nb"),
            b"id: 1\nevent: message\ndata: a\ndata: b\n\n"
        );
    }

    #[test]
    fn a_log_is_dormant_until_watched_then_keeps_the_last_events() {
        let log = EventLog::new(3);
        let f: Frame = encode(OpCode::Text, b"x");
        assert_eq!(log.record(&f), 0, "no SSE subscriber: no id");
        log.watch();
        let ids: Vec<u64> = (0..5).map(|_| log.record(&f)).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        let kept: Vec<u64> = log.since(0).iter().map(|e| e.0).collect();
        assert_eq!(kept, [3, 4, 5], "only the last three are kept");
        let after: Vec<u64> = log.since(4).iter().map(|e| e.0).collect();
        assert_eq!(after, [5]);
        let none = EventLog::new(0);
        none.watch();
        assert_eq!(none.record(&f), 1);
        assert!(none.since(0).is_empty());
    }

    #[test]
    fn heartbeats_and_stalls_follow_their_deadlines() {
        // beat every 10 ticks, stall after 5
        assert_eq!(check(0, 0, false, 3, 10, 5), Verdict::Wait(10));
        assert_eq!(check(0, 0, false, 10, 10, 5), Verdict::Beat(20));
        assert_eq!(check(10, 8, true, 12, 10, 5), Verdict::Wait(13));
        assert_eq!(check(10, 8, true, 13, 10, 5), Verdict::Stalled);
    }

    #[test]
    fn members_are_tracked_per_room() {
        let mut m = SseMembers::default();
        let r: Arc<str> = "r".into();
        let (a, b) = (SessionId::new(1, 0, 1), SessionId::new(2, 0, 2));
        m.add(&r, a);
        m.add(&r, a);
        m.add(&r, b);
        assert_eq!(m.get("r"), Some(&[a, b][..]));
        m.remove("r", a);
        m.remove("r", b);
        assert_eq!(m.get("r"), None);
    }
}
