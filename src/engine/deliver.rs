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
use super::ids::SessionId;
use super::router::ShardMsg;
use super::{push_to, Engine};
use crate::http::sse;
use crate::protocol::frame::{self, Frame};

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
            ShardMsg::User { user, frame } => self.deliver_user(&user, frame),
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
        for &m in &r.members {
            if Some(m) == exclude {
                continue;
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
                let epoch = r.shared.log.epoch();
                let ev = event
                    .get_or_insert_with(|| sse::event(seq, epoch, sse::ws_payload(&frame)).into())
                    .clone();
                if super::enqueue(c, ev, now, &mut self.dirty) {
                    events += 1;
                }
            } else if push_to(c, frame.clone(), now, &mut self.dirty) {
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
    /// is per recipient, so it stays off the publish path).
    fn deliver_presence(&mut self, room: &str, frame: Frame, exclude: SessionId) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let now = self.now;
        let mut n = 0;
        for &m in &r.members {
            let Some(c) = self.conns.get_mut(m.key()).filter(|c| c.id == m) else {
                continue;
            };
            let sees = m != exclude
                && matches!(&c.stage, Stage::Ws(w) if w.session.permissions.presence.allows(room));
            if sees && push_to(c, frame.clone(), now, &mut self.dirty) {
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
            if Some(c.id) != exclude && push_to(c, frame.clone(), now, &mut self.dirty) {
                n += 1;
            }
        }
        self.stats.deliveries.add(n);
    }

    /// Delivers to this shard's sessions of `user`.
    fn deliver_user(&mut self, user: &str, frame: Frame) {
        let Some(list) = self.users.get(user) else {
            return;
        };
        let now = self.now;
        let mut n = 0;
        for &s in list {
            if let Some(c) = self.conns.get_mut(s.key()).filter(|c| c.id == s) {
                n += u64::from(push_to(c, frame.clone(), now, &mut self.dirty));
            }
        }
        self.stats.deliveries.add(n);
    }
}
