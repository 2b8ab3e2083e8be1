//! A room's log: the stream position of each publication (`offset`, `epoch`) and the most
//! recent publications, kept for clients that come back: a WebSocket `join` with `recover` and
//! an SSE stream with `Last-Event-ID` read the same positions from the same ring.
//!
//! Positions are per room, taken once per publication by the thread that routes it
//! ([`Router::route`](super::router::Router::route)), so they are comparable whichever shard a
//! reconnecting client lands on. A log is active when its room has history (`history_size`,
//! per room or by default) or once an SSE stream read it (`sse_history`); an inactive log
//! assigns nothing and keeps nothing: such rooms pay one relaxed load per publication.
//!
//! # Why a recovering member neither misses nor repeats a publication
//!
//! Three things happen under the log's one mutex ([`RoomLog::publish`], [`RoomLog::join`]):
//!
//! * a publisher takes the next offset, stamps the frame with it, keeps it in the ring, reads
//!   the room's shard mask and posts the frame to every shard in it: so every shard's inbox
//!   receives a room's publications in offset order. The publisher's own shard applies its part
//!   at once only if its inbox is empty (and it is not applying a batch taken from it), so no
//!   older publication is still waiting there; otherwise that part goes through the inbox too.
//!   Either way each shard applies a room's publications in offset order;
//! * a joiner makes itself visible (its shard's member list and shard bit), reads the ring,
//!   and notes the highest offset it has now, `H` (its *watermark*);
//! * nothing else: shards deliver from their inboxes, in order, without the lock.
//!
//! A publication with offset `o` took the lock either before the join or after it. Before:
//! `o <= H`, it is in the ring the joiner read (or the ring no longer reaches back to the
//! joiner's `N`, and the join answers `recovered: false` and replays nothing); if its live frame
//! reaches the new member as well (it was already in the shard's inbox, posted to the room's
//! older members there), the member's watermark drops it. After: it read a shard mask that has
//! the joiner's bit, so its frame reaches the joiner's shard, behind every older publication of
//! the room in that inbox (or, on the publisher's own quiet shard, at once, after the join that
//! thread handled earlier), and after the replay, which the join queued on the member's own
//! connection before the shard returned to its inbox. So the member gets `N+1..=H` from the
//! ring, then `H+1, H+2, …` live, each once. The watermark is forgotten at the first live
//! publication above it (nothing at or below it can still come: inboxes are in offset order),
//! so only sessions that joined a busy room a moment ago pay a comparison.
//!
//! Time is an argument (`now`, nanoseconds on the engine's clock): expired entries are dropped
//! on publish and on read, so the ring holds at most `size` frames no older than `ttl`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::protocol::frame::{self, Frame, OpCode};

/// How much of a room's stream to keep: the last `size` publications, none older than `ttl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Publications kept (0: no history).
    pub size: usize,
    /// How long one is kept (zero: until pushed out by newer ones).
    pub ttl: Duration,
}

impl HistoryPolicy {
    /// Whether this keeps anything.
    pub fn is_on(&self) -> bool {
        self.size > 0
    }
}

/// A client's claim to a stream position: the last offset it got, in the epoch it got it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since<'a> {
    /// The last offset the client received.
    pub offset: u64,
    /// The epoch it was received in (`None`: the client does not know it, as a bare SSE
    /// `Last-Event-ID`; then only the offset is compared).
    pub epoch: Option<&'a str>,
}

/// What a join read from the log.
#[derive(Debug, Default)]
pub struct JoinedAt {
    /// The room's position at the join: the member's watermark. 0 with no publication yet.
    pub offset: u64,
    /// The room's epoch.
    pub epoch: Arc<str>,
    /// Whether the log is active (a position means something).
    pub active: bool,
    /// Whether the publications after the client's position were all kept and are in `replay`.
    pub recovered: bool,
    /// The publications to replay, oldest first (empty unless `recovered`).
    pub replay: Vec<(u64, Frame)>,
}

/// What the cluster's history store (Redis) answered for a member joining a room whose history
/// lives there: the cluster-mode counterpart of [`JoinedAt`], handed to the member's shard
/// (`ShardMsg::History`), which finishes the join with it (`engine::recovery`).
#[derive(Debug, Clone, Default)]
pub struct StoredRead {
    /// The room's position when the store was read; `None`: it could not be read (Redis
    /// unreachable, a timeout, a full queue to the bus).
    pub position: Option<(u64, Arc<str>)>,
    /// Every publication after the member's `recover` position, oldest first, stamped with
    /// their offsets: `Some` only when all of them were still kept and the epoch matched.
    pub replay: Option<Vec<(u64, Frame)>>,
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    at: u64,
    frame: Frame,
}

#[derive(Debug, Default)]
struct Ring {
    /// The last offset taken.
    offset: u64,
    /// The policy from the room's history settings.
    policy: HistoryPolicy,
    /// At least this many kept once an SSE stream read the room (`sse_history`).
    sse_min: usize,
    watched: bool,
    entries: VecDeque<Entry>,
}

impl Ring {
    fn size(&self) -> usize {
        if self.watched {
            self.policy.size.max(self.sse_min)
        } else {
            self.policy.size
        }
    }

    fn ttl_ns(&self) -> u64 {
        self.policy.ttl.as_nanos().min(u128::from(u64::MAX)) as u64
    }

    /// Drops what is too old at `now` and what is over the size.
    fn trim(&mut self, now: u64) {
        let ttl = self.ttl_ns();
        if ttl > 0 {
            while self
                .entries
                .front()
                .is_some_and(|e| e.at.saturating_add(ttl) <= now)
            {
                self.entries.pop_front();
            }
        }
        while self.entries.len() > self.size() {
            self.entries.pop_front();
        }
    }
}

/// A room's stream positions and recent publications, kept in the room's shared part. See the
/// module docs.
#[derive(Debug)]
pub struct RoomLog {
    active: AtomicBool,
    /// Whether WebSocket clients see positions (the `offset` field, the join ack, recovery).
    /// Off in cluster mode, where another node's publications would get this node's numbers:
    /// there positions stay SSE event ids on this node, and rooms with history keep it in
    /// Redis instead (`engine/recovery.rs`, docs/cluster.md).
    stamp: bool,
    epoch: Arc<str>,
    ring: Mutex<Ring>,
    /// The epoch of the room's stream in the cluster's store (Redis cluster mode), as last
    /// seen on a publication from the bus: SSE event ids carry it instead of `epoch`.
    stored_epoch: Mutex<Option<Arc<str>>>,
}

impl RoomLog {
    /// A log with `policy`, that keeps at least `sse_min` once an SSE stream reads it; `epoch`
    /// names this incarnation of the stream; `stamp`: see the field.
    pub fn new(policy: HistoryPolicy, sse_min: usize, stamp: bool, epoch: Arc<str>) -> Self {
        Self {
            active: AtomicBool::new(policy.is_on()),
            stamp,
            epoch,
            ring: Mutex::new(Ring {
                policy,
                sse_min,
                ..Ring::default()
            }),
            stored_epoch: Mutex::new(None),
        }
    }

    /// Notes the epoch of the room's stream in the cluster's store (a publication from the
    /// bus carried it); cheap when unchanged.
    pub fn note_stored_epoch(&self, epoch: &str) {
        let mut e = self.stored_epoch.lock().unwrap_or_else(|e| e.into_inner());
        if e.as_deref() != Some(epoch) {
            *e = Some(epoch.into());
        }
    }

    /// The epoch SSE event ids carry: the store's in Redis cluster mode, else this log's.
    pub fn event_epoch(&self) -> Arc<str> {
        let e = self.stored_epoch.lock().unwrap_or_else(|e| e.into_inner());
        e.clone().unwrap_or_else(|| self.epoch.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic under the lock leaves at worst a ring one entry short; keep serving.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether publications get positions.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Whether WebSocket clients see positions.
    pub fn stamps(&self) -> bool {
        self.stamp
    }

    /// This incarnation's epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// An SSE stream reads the room: positions from now on, and at least `sse_history` kept.
    pub fn watch(&self) {
        let mut r = self.lock();
        r.watched = true;
        self.active.store(true, Ordering::Release);
    }

    /// New history settings for the room (from the `Hub` or the HTTP API). The position goes
    /// on; a smaller ring drops its oldest entries at the next publish or read.
    pub fn configure(&self, policy: HistoryPolicy) {
        let mut r = self.lock();
        r.policy = policy;
        if policy.is_on() || r.watched {
            self.active.store(true, Ordering::Release);
        }
    }

    /// Whether the log keeps publications for a member who left (the room outlives its last
    /// member until they expire; see `Directory::leave`).
    pub fn retains(&self) -> bool {
        let r = self.lock();
        r.policy.is_on() && !r.policy.ttl.is_zero() && !r.entries.is_empty()
    }

    /// Whether everything kept has expired at `now` (a retained room can go).
    pub fn expired(&self, now: u64) -> bool {
        let mut r = self.lock();
        r.trim(now);
        r.entries.is_empty()
    }

    /// Takes the next position for a text publication and, under the log's lock, hands the
    /// frame (stamped with its `offset` when it is a JSON object) to `post`. Returns `None`,
    /// without calling `post`, when the log is inactive or the frame is binary (binary
    /// publications are live only: they carry no field to put a position in). See the module
    /// docs for why `post` runs under the lock.
    pub fn publish<R>(
        &self,
        frame: &Frame,
        now: u64,
        post: impl FnOnce(u64, Frame) -> R,
    ) -> Option<(u64, R)> {
        if !self.is_active() || !frame::is_text(frame) {
            return None;
        }
        let mut r = self.lock();
        r.offset += 1;
        let offset = r.offset;
        let frame = if self.stamp {
            stamp(frame, offset)
        } else {
            frame.clone()
        };
        if r.size() > 0 {
            r.entries.push_back(Entry {
                offset,
                at: now,
                frame: frame.clone(),
            });
        }
        r.trim(now);
        Some((offset, post(offset, frame)))
    }

    /// A member joins: under the log's lock, `visible` makes it a recipient of the room's
    /// publications, and the log tells where the stream is and, for a client that names the
    /// last position it got (`since`), whether every publication after it is kept (then they
    /// are in `replay`). Nothing partial is replayed. See the module docs.
    pub fn join(&self, since: Option<Since<'_>>, now: u64, visible: impl FnOnce()) -> JoinedAt {
        let mut r = self.lock();
        visible();
        r.trim(now);
        let mut at = JoinedAt {
            offset: r.offset,
            epoch: self.epoch.clone(),
            active: self.is_active(),
            ..JoinedAt::default()
        };
        let Some(since) = since else { return at };
        let epoch_ok = since.epoch.is_none_or(|e| *e == *self.epoch);
        // Kept entries are consecutive offsets ending at `r.offset`: all after `since` are
        // there when the oldest kept is at most one past it (or none came after it).
        let oldest = r.entries.front().map_or(r.offset + 1, |e| e.offset);
        if at.active && epoch_ok && since.offset <= r.offset && oldest <= since.offset + 1 {
            at.recovered = true;
            at.replay = r
                .entries
                .iter()
                .filter(|e| e.offset > since.offset)
                .map(|e| (e.offset, e.frame.clone()))
                .collect();
        }
        at
    }

    /// The room's history settings (in Redis cluster mode they say what Redis keeps for the
    /// room: the stream's `MAXLEN` and TTL).
    pub fn policy(&self) -> HistoryPolicy {
        self.lock().policy
    }

    /// The room's position now: (offset, epoch).
    pub fn position(&self) -> (u64, Arc<str>) {
        (self.lock().offset, self.epoch.clone())
    }
}

/// The frame with `"offset":N` added as the last field of its JSON object payload (a text
/// payload that is not an object, from `Hub::publish`, goes as it is). One copy per
/// publication, made once under the log's lock; every recipient shares it.
pub fn stamp(frame: &Frame, offset: u64) -> Frame {
    let payload = crate::http::sse::ws_payload(frame);
    let Some(body) = payload
        .strip_prefix(b"{")
        .and_then(|p| p.strip_suffix(b"}"))
    else {
        return frame.clone();
    };
    let mut out = Vec::with_capacity(payload.len() + 32);
    out.push(b'{');
    out.extend_from_slice(body);
    if !body.iter().all(u8::is_ascii_whitespace) {
        out.push(b',');
    }
    out.extend_from_slice(b"\"offset\":");
    out.extend_from_slice(offset.to_string().as_bytes());
    out.push(b'}');
    frame::encode(OpCode::Text, &out)
}

/// A fresh epoch: 16 hex digits from a per-process random `seed` and a per-log `n`
/// (splitmix64), so a log dropped and created again, or a restarted process, never reuses one.
pub fn epoch(seed: u64, n: u64) -> Arc<str> {
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{z:016x}").into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::sse::ws_payload;
    use crate::protocol::frame::encode;

    const SEC: u64 = 1_000_000_000;

    fn text(s: &str) -> Frame {
        encode(OpCode::Text, s.as_bytes())
    }

    fn log(size: usize, ttl: u64) -> RoomLog {
        let policy = HistoryPolicy {
            size,
            ttl: Duration::from_secs(ttl),
        };
        RoomLog::new(policy, 0, true, epoch(1, 1))
    }

    fn offsets(at: &JoinedAt) -> Vec<u64> {
        at.replay.iter().map(|e| e.0).collect()
    }

    #[test]
    fn publications_are_stamped_once_with_consecutive_offsets() {
        let l = log(3, 0);
        let f = text(r#"{"type":"message","data":1}"#);
        let got: Vec<(u64, Frame)> = (0..2)
            .map(|_| l.publish(&f, 0, |_, f| f).unwrap())
            .collect();
        assert_eq!(got[0].0, 1);
        assert_eq!(
            ws_payload(&got[1].1),
            br#"{"type":"message","data":1,"offset":2}"#
        );
        assert_eq!(ws_payload(&stamp(&text("{}"), 7)), br#"{"offset":7}"#);
        assert_eq!(ws_payload(&stamp(&text("raw"), 7)), b"raw", "not an object");
        let bin = encode(OpCode::Binary, b"\x01\x01ab");
        assert!(l.publish(&bin, 0, |_, _| ()).is_none(), "binary: live only");
        assert_eq!(l.position().0, 2);
    }

    #[test]
    fn a_dormant_log_assigns_nothing_until_an_sse_stream_watches() {
        let l = RoomLog::new(HistoryPolicy::default(), 2, true, epoch(1, 2));
        let f = text("{}");
        assert!(l.publish(&f, 0, |_, _| ()).is_none());
        l.watch();
        for _ in 0..3 {
            l.publish(&f, 0, |_, _| ());
        }
        let at = l.join(
            Some(Since {
                offset: 0,
                epoch: None,
            }),
            0,
            || (),
        );
        assert!(
            !at.recovered,
            "sse_history 2 kept 2 and 3 only: 1 is missing"
        );
        let at = l.join(
            Some(Since {
                offset: 1,
                epoch: None,
            }),
            0,
            || (),
        );
        assert_eq!(offsets(&at), [2, 3]);
    }

    #[test]
    fn recovery_is_all_or_nothing() {
        let l = log(3, 10);
        let e = l.epoch().clone();
        let f = text("{}");
        let at = |offset, epoch: &str, now| {
            l.join(
                Some(Since {
                    offset,
                    epoch: Some(epoch),
                }),
                now,
                || (),
            )
        };
        assert!(at(0, &e, 0).recovered, "nothing published, nothing missed");
        for i in 0..5 {
            l.publish(&f, i * SEC, |_, _| ());
        }
        let ok = at(2, &e, 5 * SEC);
        assert!(ok.recovered);
        assert_eq!((offsets(&ok), ok.offset), (vec![3, 4, 5], 5));
        assert!(at(5, &e, 5 * SEC).recovered && at(5, &e, 5 * SEC).replay.is_empty());
        let over = at(1, &e, 5 * SEC);
        assert!(
            !over.recovered && over.replay.is_empty(),
            "2 was pushed out"
        );
        assert!(!at(3, "other", 5 * SEC).recovered, "another epoch");
        assert!(
            !at(9, &e, 5 * SEC).recovered,
            "a position the stream never had"
        );
        // 3 was published at 2 s: expired at 12 s.
        let old = at(2, &e, 12 * SEC);
        assert!(!old.recovered, "3 expired");
        assert_eq!(offsets(&at(3, &e, 12 * SEC)), [4, 5]);
        assert!(
            !l.expired(13 * SEC) && l.expired(14 * SEC),
            "5 (at 4 s) lasts until 14 s"
        );
    }

    #[test]
    fn the_joiner_becomes_visible_under_the_lock() {
        let l = log(4, 0);
        let mut seen = false;
        let at = l.join(None, 0, || seen = l.ring.try_lock().is_err());
        assert!(seen, "visible() ran while the ring was locked");
        assert!(at.active && !at.recovered);
    }

    #[test]
    fn epochs_differ_per_log_and_per_seed() {
        assert_ne!(epoch(1, 1), epoch(1, 2));
        assert_ne!(epoch(1, 1), epoch(2, 1));
        assert_eq!(epoch(3, 4).len(), 16);
    }
}
