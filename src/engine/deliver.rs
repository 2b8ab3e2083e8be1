//! Routed messages applied on this shard: deliveries to local members, users and sessions, and
//! commands on a session's behalf. A client's publish reaches local members through here too
//! (the router hands the calling shard its part back), so local and remote recipients are
//! served by the same code.
//!
//! A frame that came from another shard is copied into this shard's own allocation when it
//! has many recipients here ([`LOCAL_COPY_THRESHOLD`]): one memcpy instead of a reference-count
//! cache line bouncing between cores for every recipient.

use std::sync::Arc;

use super::conn::Stage;
use super::directory::RoomShared;
use super::ids::SessionId;
use super::router::ShardMsg;
use super::{deliver_to, Engine};
use crate::http::sse;
use crate::protocol::frame::{self, Frame, OpCode};
use crate::protocol::reply;

/// Local recipients above which a frame from another shard is copied first (see the module
/// docs).
const LOCAL_COPY_THRESHOLD: usize = 8;

impl<S> Engine<S> {
    /// Applies one routed message.
    pub(crate) fn apply(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Room {
                room,
                frame,
                exclude,
                seq,
            } => {
                self.fanouts += 1;
                self.deliver_room(&room, frame, exclude, seq);
            }
            ShardMsg::Presence {
                room,
                frame,
                exclude,
            } => self.deliver_presence(&room, frame, exclude),
            ShardMsg::All { frame, exclude } => {
                self.fanouts += 1;
                self.deliver_all(frame, exclude);
            }
            ShardMsg::User { sessions, frame } => self.deliver_user(&sessions, frame),
            ShardMsg::Session { id, frame } => {
                if self.push(id, frame) {
                    self.stats.deliveries.add(1);
                }
            }
            ShardMsg::Receipt {
                id,
                seq,
                user,
                from,
            } => self.on_receipt(id, seq, &user, from),
            ShardMsg::Close { id, code, reason } => self.close_with(id, code, &reason),
            ShardMsg::Join { id, room } => self.join(id, &room, None, None),
            ShardMsg::Leave { id, room } => self.leave(id, &room, None),
            ShardMsg::History { id, room, read } => self.finish_stored_join(id, &room, read),
            ShardMsg::Shutdown => {
                let drain = self.cfg().drain_timeout;
                let ticks = drain.as_nanos() as u64 / self.cfg().tick.as_nanos().max(1) as u64;
                self.shutdown(ticks);
            }
        }
    }

    /// A frame from another shard, copied when many recipients here would share it.
    fn localize(frame: Frame, recipients: usize) -> Frame {
        if recipients >= LOCAL_COPY_THRESHOLD && Arc::strong_count(&frame) > 1 {
            Arc::from(&*frame)
        } else {
            frame
        }
    }

    /// Walks this shard's members of `room` once: WebSocket members get the frame, SSE streams
    /// (when the publication is numbered, `seq` > 0) the event derived from it once. A member
    /// whose join watermark is at or above `seq` is skipped (it has the publication already,
    /// from the ring, or joined after it; `history.rs`).
    fn deliver_room(&mut self, room: &str, frame: Frame, exclude: Option<SessionId>, seq: u64) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let frame = Self::localize(frame, r.members.len());
        let now = self.now;
        let (mut n, mut events) = (0, 0);
        let mut event: Option<Frame> = None;
        let marked = seq > 0 && !r.marks.is_empty();
        let pending = !r.recovering.is_empty();
        for &m in &r.members {
            if Some(m) == exclude {
                continue;
            }
            if pending {
                if let Some(p) = r.recovering.get_mut(&m) {
                    p.hold(seq, &frame); // delivered when the store answers (`recovery.rs`)
                    continue;
                }
            }
            if marked && r.marks.get(&m).is_some_and(|&h| seq <= h) {
                continue;
            }
            let Some(c) = self.conns.get_mut(m.key()).filter(|c| c.id == m) else {
                continue;
            };
            if matches!(c.stage, Stage::Sse(_)) {
                // Streams carry text: numbered text publications only.
                if seq == 0 || c.dead || !frame::is_text(&frame) {
                    continue;
                }
                let ev = event
                    .get_or_insert_with(|| {
                        let epoch = r.shared.log.event_epoch();
                        sse::event(seq, &epoch, sse::ws_payload(&frame)).into()
                    })
                    .clone();
                if super::enqueue(c, ev, now, &mut self.writes) {
                    events += 1;
                }
            } else if deliver_to(
                c,
                frame.clone(),
                now,
                &mut self.writes,
                &mut self.compression,
            ) {
                n += 1;
            }
        }
        if marked {
            // The room's publications reach this shard in offset order: none at or below a
            // watermark can come after this one, so watermarks below it are done.
            r.marks.retain(|_, h| *h > seq);
        }
        self.stats.deliveries.add(n);
        self.stats.sse_events.add(events);
    }

    /// Delivers a presence event to this shard's members of `room` that may see it (the check
    /// is per recipient, so it stays off the publish path). In a room over `presence_limit` the
    /// event is not delivered: the room's member count goes out later instead
    /// ([`Self::send_presence_counts`]), so a room filling up costs O(members), not O(members²).
    fn deliver_presence(&mut self, room: &str, frame: Frame, exclude: SessionId) {
        let Some(shared) = self.rooms.get(room).map(|r| r.shared.clone()) else {
            return;
        };
        if self.over_presence_limit(&shared).is_some() {
            self.presence_counts.insert(shared.name.clone());
            return;
        }
        self.deliver_to_watchers(room, frame, Some(exclude));
    }

    /// The room's member count on every node, if it is over `presence_limit`.
    fn over_presence_limit(&self, room: &RoomShared) -> Option<usize> {
        let limit = self.cfg().presence_limit;
        if limit == 0 || room.member_count() <= limit {
            // Cheap and usual: this node alone is not over the limit (in cluster mode, ask the
            // other nodes only then).
            if limit == 0 || self.hub.shared.router.remote().is_none() {
                return None;
            }
        }
        let total = room.member_count() + self.hub.shared.router.remote_members(&room.name);
        (total > limit).then_some(total)
    }

    /// Tells this shard's members of each room whose count changed while it was over the limit
    /// how many members it has now: `{"type":"presence","room":…,"members":N}`, one frame per
    /// room, at most once per `presence_interval` (`Engine::handle_timeout`). A room that fell
    /// back to the limit gets its count too; its `joined`/`left` events resume from then on.
    pub(crate) fn send_presence_counts(&mut self) {
        let rooms: Vec<Arc<str>> = self.presence_counts.drain().collect();
        for room in rooms {
            let Some(shared) = self.rooms.get(&room).map(|r| r.shared.clone()) else {
                continue;
            };
            let members =
                shared.member_count() + self.hub.shared.router.remote_members(&shared.name);
            // A join's event may reach this shard after a count that already included it.
            match self.rooms.get_mut(&room) {
                Some(r) if r.presence_sent != members => r.presence_sent = members,
                _ => continue,
            }
            let out = self.fb.start();
            reply::presence_count(out, &room, members);
            let frame = self.fb.finish(OpCode::Text);
            self.deliver_to_watchers(&room, frame, None);
        }
    }

    /// Delivers `frame` to this shard's members of `room` allowed to see its presence.
    fn deliver_to_watchers(&mut self, room: &str, frame: Frame, exclude: Option<SessionId>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let now = self.now;
        let mut n = 0;
        for &m in &r.members {
            let Some(c) = self.conns.get_mut(m.key()).filter(|c| c.id == m) else {
                continue;
            };
            let sees = Some(m) != exclude
                && matches!(&c.stage, Stage::Ws(w) if w.session.permissions.presence.allows(room));
            if sees
                && deliver_to(
                    c,
                    frame.clone(),
                    now,
                    &mut self.writes,
                    &mut self.compression,
                )
            {
                n += 1;
            }
        }
        self.stats.deliveries.add(n);
    }

    /// Delivers to every open WebSocket session on this shard but `exclude`.
    fn deliver_all(&mut self, frame: Frame, exclude: Option<SessionId>) {
        let frame = Self::localize(frame, self.conns.len());
        let now = self.now;
        let mut n = 0;
        for (_, c) in self.conns.iter_mut() {
            if Some(c.id) != exclude
                && deliver_to(
                    c,
                    frame.clone(),
                    now,
                    &mut self.writes,
                    &mut self.compression,
                )
            {
                n += 1;
            }
        }
        self.stats.deliveries.add(n);
    }

    /// Delivers to those of a user's `sessions` that are this shard's (and still open).
    fn deliver_user(&mut self, sessions: &[SessionId], frame: Frame) {
        let now = self.now;
        let mut n = 0;
        for &s in sessions.iter().filter(|s| s.shard() == self.shard) {
            if let Some(c) = self.conns.get_mut(s.key()).filter(|c| c.id == s) {
                n += u64::from(deliver_to(
                    c,
                    frame.clone(),
                    now,
                    &mut self.writes,
                    &mut self.compression,
                ));
            }
        }
        self.stats.deliveries.add(n);
    }
}
