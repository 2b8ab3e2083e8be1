//! Joins to rooms whose history lives in the cluster's store (Redis cluster mode): the member
//! is visible at once, its ack waits for the store's answer, and live publications that reach
//! it meanwhile wait in a bounded buffer of its own.
//!
//! # Why a recovering member neither misses nor repeats a publication
//!
//! Redis numbers every publication of such a room (one Lua script takes the next offset, keeps
//! the frame in the room's stream and publishes it), and every node, the publisher's included,
//! delivers it from the bus: each node's bus thread receives a room's publications in offset
//! order and posts them to the shards in that order.
//!
//! A joining member is added to the room first (so its node subscribes to the room's channel
//! before anything else the shard asks of the bus thread, which flushes subscriptions before
//! it reads its queue), then the shard asks the bus thread to read the stream. Redis runs the
//! read atomically: it sees the position `S`, and every publication after `S` runs later, when
//! the subscription is in place, so it reaches this node live. Live publications that reach
//! the member before the answer are kept in its [`Pending`] buffer. The answer finishes the
//! join ([`merge`]): the ack, the replay `N+1..=S`, then the buffered frames above the last
//! one delivered, in order, each once; the member's watermark (`LocalRoom::marks`) then drops
//! any live frame at or below it that is still on its way (one published between the
//! subscription and the read). A buffer that overflows ([`RECOVERY_BUFFER`]) closes the
//! session with a reconnect code: it cannot be given a gap-free stream, and reconnecting with
//! `recover` gets one.

use std::sync::Arc;

use simd_json::BorrowedValue as Value;

use super::conn::Stage;
use super::directory::{Joined, RoomShared};
use super::history::{HistoryPolicy, Since, StoredRead};
use super::ids::SessionId;
use super::Engine;
use crate::http::sse;
use crate::protocol::close::Close;
use crate::protocol::envelope::Recover;
use crate::protocol::frame::{self, Frame};
use crate::protocol::reply::Ack;

/// Live publications one recovering member may have waiting for the store's answer. A member
/// past it is closed with [`Close::SlowConsumer`] (reconnect and recover again): at the
/// default outbox limits a member that far behind would be closed as slow anyway.
pub const RECOVERY_BUFFER: usize = 4_096;

/// A member whose join waits for the history store.
#[derive(Debug)]
pub struct Pending {
    /// The join request's id, for the ack.
    req_id: Option<Value<'static>>,
    /// The client's `recover` position, if it sent one: (offset, epoch).
    since: Option<(u64, String)>,
    /// Members of the room at the join (for the ack).
    members: usize,
    /// Live publications that reached the member meanwhile: (offset, frame), offset 0 for
    /// a publication without one (binary).
    buffer: Vec<(u64, Frame)>,
    /// The buffer overflowed (and was emptied).
    overflowed: bool,
    /// An SSE stream that came back with `Last-Event-ID`: no ack; the replay, or a `reset`
    /// event, then the buffer, as events.
    sse: bool,
}

impl Pending {
    /// A pending join.
    pub fn new(
        req_id: Option<Value<'static>>,
        since: Option<(u64, String)>,
        members: usize,
    ) -> Self {
        Self {
            req_id,
            since,
            members,
            buffer: Vec::new(),
            overflowed: false,
            sse: false,
        }
    }

    /// A pending SSE stream (see [`Pending::sse`](Self)).
    pub fn stream(since: (u64, String)) -> Self {
        Self {
            sse: true,
            ..Self::new(None, Some(since), 0)
        }
    }

    /// Keeps a live publication for later (bounded, see [`RECOVERY_BUFFER`]).
    pub fn hold(&mut self, seq: u64, frame: &Frame) {
        if self.overflowed {
            return;
        }
        if self.buffer.len() >= RECOVERY_BUFFER {
            self.overflowed = true;
            self.buffer = Vec::new();
            return;
        }
        self.buffer.push((seq, frame.clone()));
    }
}

/// How a pending join ends.
#[derive(Debug, Default)]
pub struct Merged {
    /// The room's position for the ack (`None`: the store could not be read).
    pub position: Option<(u64, Arc<str>)>,
    /// Whether the client's `recover` position was recovered.
    pub recovered: bool,
    /// What to deliver after the ack, in order, with their offsets (0: none).
    pub frames: Vec<(u64, Frame)>,
    /// How many of them came from the store.
    pub replayed: usize,
    /// The highest offset delivered (or the position): the member's watermark.
    pub last: u64,
}

/// Merges the store's answer with what was buffered: the replay (only when everything after
/// the client's position was kept and the epoch matched), then each buffered frame above the
/// last offset delivered (frames without an offset always), so nothing is delivered twice and
/// nothing after the position is left out. Pure.
pub fn merge(since: Option<&(u64, String)>, read: StoredRead, buffer: Vec<(u64, Frame)>) -> Merged {
    let mut m = Merged::default();
    if let (Some(_), Some(_), Some(replay)) = (since, &read.position, read.replay) {
        m.recovered = true;
        for (o, f) in replay {
            if o > m.last {
                m.frames.push((o, f));
                m.last = o;
            }
        }
        m.replayed = m.frames.len();
    }
    if let Some((s, _)) = &read.position {
        m.last = m.last.max(*s);
    }
    for (o, f) in buffer {
        if o == 0 {
            m.frames.push((o, f));
        } else if o > m.last {
            m.frames.push((o, f));
            m.last = o;
        }
    }
    m.position = read.position;
    m
}

impl<S> Engine<S> {
    /// Joins `id` to a room whose history lives in the store (`policy`): visible now, the ack
    /// when the store answers ([`finish_stored_join`](Self::finish_stored_join)). See the
    /// module docs.
    pub(crate) fn join_stored(
        &mut self,
        id: SessionId,
        j: Joined,
        req_id: Option<&Value<'_>>,
        recover: Option<Recover<'_>>,
        policy: HistoryPolicy,
    ) {
        let room = j.room.name.clone();
        let members = j.members + self.hub.shared.router.remote_members(&room);
        if j.already {
            // A member already: it had every publication since it joined; the position it
            // has is its own last offset, so none is given here.
            let ack = Ack::Join {
                room: &room,
                members,
                position: None,
                recovered: recover.map(|_| false),
            };
            return self.ack(id, req_id, ack);
        }
        if let Some(Stage::Ws(w)) = self.conn(id).map(|c| &mut c.stage) {
            w.session.push_room(room.clone());
        }
        self.rooms.add(&j.room, id);
        let since = recover.map(|r| (r.offset, r.epoch.to_string()));
        let pending = Pending::new(req_id.map(|v| v.clone().into_static()), since, members);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.recovering.insert(id, pending);
        }
        let asked = self.hub.shared.router.remote().is_some_and(|remote| {
            let since = recover.map(|r| Since {
                offset: r.offset,
                epoch: Some(r.epoch),
            });
            remote.read_history(&room, id, since, policy)
        });
        if !asked {
            self.finish_stored_join(id, &room, StoredRead::default());
        }
    }

    /// The store answered for `id`'s join of `room`: the ack, then what the member missed and
    /// what was buffered ([`merge`]).
    pub(crate) fn finish_stored_join(&mut self, id: SessionId, room: &str, read: StoredRead) {
        let Some(p) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.recovering.remove(&id))
        else {
            return; // it left, or closed, meanwhile
        };
        let counter = |e: &Self, ok: bool| {
            if p.since.is_some() {
                let c = if ok {
                    &e.stats.recoveries
                } else {
                    &e.stats.recoveries_failed
                };
                c.add(1);
            }
        };
        if p.overflowed {
            counter(self, false);
            let why = Close::SlowConsumer;
            return self.close_with(id, why.code(), "too far behind while recovering history");
        }
        let m = merge(p.since.as_ref(), read, p.buffer);
        if p.sse {
            return self.finish_stored_stream(id, room, m);
        }
        let ack = Ack::Join {
            room,
            members: p.members,
            position: m.position.as_ref().map(|(o, e)| (*o, &**e)),
            recovered: p.since.as_ref().map(|_| m.recovered),
        };
        self.ack(id, p.req_id.as_ref(), ack);
        let n = m.frames.len() as u64;
        for (_, f) in m.frames {
            self.push(id, f);
        }
        self.stats.deliveries.add(n);
        self.stats.recovered_messages.add(m.replayed as u64);
        counter(self, m.recovered);
        self.rooms.mark(room, id, m.last);
    }
}

impl<S> Engine<S> {
    /// An SSE stream that came back with `Last-Event-ID` to a room whose history lives in the
    /// store: visible now, its events once the store answers.
    pub(crate) fn stream_stored(
        &mut self,
        id: SessionId,
        room: &Arc<RoomShared>,
        since: (u64, String),
        policy: HistoryPolicy,
    ) {
        self.rooms.add(room, id);
        if let Some(r) = self.rooms.get_mut(&room.name) {
            r.recovering.insert(id, Pending::stream(since.clone()));
        }
        let asked = self.hub.shared.router.remote().is_some_and(|remote| {
            let since = Since {
                offset: since.0,
                epoch: Some(&since.1),
            };
            remote.read_history(&room.name, id, Some(since), policy)
        });
        if !asked {
            self.finish_stored_join(id, &room.name, StoredRead::default());
        }
    }

    /// The end of [`stream_stored`](Self::stream_stored): the replay as events, or a `reset`
    /// event with the position, then what was buffered (text publications with an offset).
    fn finish_stored_stream(&mut self, id: SessionId, room: &str, m: Merged) {
        let epoch = match &m.position {
            Some((_, e)) => e.clone(),
            None => self
                .rooms
                .get(room)
                .map_or_else(|| Arc::from(""), |r| r.shared.log.event_epoch()),
        };
        if m.recovered {
            self.stats.recoveries.add(1);
            self.stats.recovered_messages.add(m.replayed as u64);
        } else {
            self.stats.recoveries_failed.add(1);
            let at = m.position.as_ref().map_or(0, |p| p.0);
            self.queue(id, sse::reset(at, &epoch).into());
        }
        let mut n = 0;
        for (o, f) in m.frames {
            if o > 0 && frame::is_text(&f) {
                self.queue(id, sse::event(o, &epoch, sse::ws_payload(&f)).into());
                n += 1;
            }
        }
        self.stats.sse_events.add(n);
        self.rooms.mark(room, id, m.last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{encode, OpCode};

    fn f(o: u64) -> (u64, Frame) {
        (o, encode(OpCode::Text, o.to_string().as_bytes()))
    }

    fn offsets(m: &Merged) -> Vec<String> {
        m.frames
            .iter()
            .map(|(_, f)| String::from_utf8_lossy(crate::http::sse::ws_payload(f)).into_owned())
            .collect()
    }

    fn read(top: u64, replay: Option<Vec<u64>>) -> StoredRead {
        StoredRead {
            position: Some((top, "e".into())),
            replay: replay.map(|r| r.into_iter().map(f).collect()),
        }
    }

    #[test]
    fn replay_then_buffered_above_it_each_once() {
        let since = (2, "e".to_string());
        // 4 and 5 were published between the subscription and the read: buffered and read.
        let m = merge(
            Some(&since),
            read(5, Some(vec![3, 4, 5])),
            vec![f(4), f(5), f(6)],
        );
        assert!(m.recovered);
        assert_eq!(offsets(&m), ["3", "4", "5", "6"]);
        assert_eq!((m.replayed, m.last), (3, 6));
    }

    #[test]
    fn not_recovered_replays_nothing_and_delivers_what_came_after_the_position() {
        let since = (2, "old".to_string());
        let m = merge(Some(&since), read(5, None), vec![f(5), f(6), (0, f(0).1)]);
        assert!(!m.recovered);
        assert_eq!(
            offsets(&m),
            ["6", "0"],
            "5 is at the position; binary always"
        );
        assert_eq!(m.last, 6);
    }

    #[test]
    fn an_unreadable_store_gives_no_position_and_every_buffered_frame() {
        let since = (2, "e".to_string());
        let m = merge(Some(&since), StoredRead::default(), vec![f(7), f(8)]);
        assert!(!m.recovered && m.position.is_none());
        assert_eq!(offsets(&m), ["7", "8"]);
    }

    #[test]
    fn a_join_without_recover_gets_the_position_and_live_ones_after_it() {
        let m = merge(None, read(9, None), vec![f(9), f(10)]);
        assert!(!m.recovered);
        assert_eq!(
            (offsets(&m), m.position.map(|p| p.0)),
            (vec!["10".to_string()], Some(9))
        );
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut p = Pending::new(None, None, 1);
        let frame = f(1).1;
        for i in 0..RECOVERY_BUFFER as u64 + 1 {
            p.hold(i + 1, &frame);
        }
        assert!(p.overflowed && p.buffer.is_empty(), "overflowed and freed");
    }
}
