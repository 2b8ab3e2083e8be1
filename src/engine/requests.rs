//! The hub protocol (`docs/protocol.md`): a session's text and binary messages become joins,
//! leaves, publishes, direct sends, broadcasts, member lists and pings, each checked against
//! the session's rate limits and permissions and answered with an `ack` or an `error`.
//!
//! Deliveries go through the router, which numbers room publications and reports shards it
//! could not reach; a request whose delivery was cut short that way is answered `overloaded`
//! instead of `ack`.

use std::mem;
use std::sync::Arc;

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::conn::Stage;
use super::directory::{JoinError, RoomShared};
use super::history::Since;
use super::ids::SessionId;
use super::ratelimit::Verdict;
use super::router::{self, Route, Routed};
use super::Engine;
use crate::hooks::{Flow, Message, Request, SessionError};
use crate::protocol::close::Close;
use crate::protocol::envelope::{self, BinaryKind, BinaryOp, Envelope, Recover, Request as Req};
use crate::protocol::frame::{self, Frame, OpCode};
use crate::protocol::reply::{self, Ack};

/// A client request that needs a permission.
#[derive(Debug, Clone, Copy)]
enum Act<'a> {
    Join(&'a str),
    Publish(&'a str),
    /// `members` of a room.
    Members(&'a str),
    Broadcast,
    Send(&'a str),
}

/// The context field of errors answering binary requests.
const BINARY: Option<(&str, &str)> = Some(("op", "binary"));

impl<S> Engine<S> {
    // ----- text -----

    pub(super) fn on_text(&mut self, id: SessionId, text: &str) {
        self.stats.messages_in.add(1);
        self.stats.bytes_in.add(text.len() as u64);
        if !self.admit_message(id, text.len(), false) {
            return;
        }
        if self.cfg().echo {
            self.push(id, frame::encode(OpCode::Text, text.as_bytes()));
            return;
        }
        let hooks = self.hooks.clone();
        if let Some(on_message) = &hooks.on_message {
            if self.with_context(id, |ctx| on_message(ctx, Message::Text(text)))
                == Some(Flow::Handled)
            {
                return;
            }
        }
        let mut scratch = mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(text.as_bytes());
        let (max_depth, max_name) = (self.cfg().max_json_depth, self.cfg().max_name_bytes);
        // The DOM borrows `scratch`, not the buffers, so those are used in place.
        match envelope::parse_value(&mut scratch, &mut self.json, max_depth) {
            Err(e) => self.error(id, None, "bad_request", &e.0, None),
            Ok(v) => match envelope::parse_envelope(&v, max_name) {
                Err(e) => {
                    let req_id = v.get("id").filter(|i| i.is_str() || i.is_number());
                    self.error(id, req_id, "bad_request", &e.0, None);
                }
                Ok(env) => match hooks.handlers.get(env.kind) {
                    Some(h) => {
                        let req = Request {
                            kind: env.kind,
                            text,
                            value: &v,
                            id: env.id,
                        };
                        self.with_context(id, |ctx| h(ctx, &req));
                    }
                    None => self.dispatch(id, env),
                },
            },
        }
        self.scratch = scratch;
    }

    fn dispatch(&mut self, id: SessionId, env: Envelope<'_>) {
        let req_id = env.id;
        match env.request {
            Req::Join { room, recover } => {
                if self.permit(id, Act::Join(room), req_id, false) {
                    self.join(id, room, req_id, recover);
                }
            }
            Req::Leave { room } => self.leave(id, room, req_id),
            Req::Publish {
                room,
                data,
                exclude_self,
            } => {
                if !self.permit(id, Act::Publish(room), req_id, false) {
                    return;
                }
                let Some((user, shared)) = self.member_room(id, room) else {
                    return self.not_member(id, req_id, room, None);
                };
                let out = self.fb.start();
                reply::delivery(out, "message", Some(room), &user, id.0, data);
                let frame = self.fb.finish(OpCode::Text);
                let exclude = exclude_self.then_some(id);
                let routed = self.route(Route::Publish {
                    room: &shared,
                    frame,
                    exclude,
                    now: self.now_ns,
                });
                if !self.overloaded(id, req_id, &routed, None) && req_id.is_some() {
                    self.ack(id, req_id, Ack::Publish { room });
                }
            }
            Req::Send {
                to,
                data,
                ack,
                store,
                timeout_ms,
            } => {
                if self.permit(id, Act::Send(to), req_id, false) {
                    let o = super::direct::SendOpts {
                        ack,
                        store,
                        timeout_ms,
                    };
                    self.send_direct(id, req_id, to, data, o);
                }
            }
            Req::Received { mid } => self.send_receipt(id, req_id, mid),
            Req::Broadcast { data, exclude_self } => {
                if !self.permit(id, Act::Broadcast, req_id, false) {
                    return;
                }
                let Some(user) = self.user_of(id) else { return };
                let out = self.fb.start();
                reply::delivery(out, "broadcast", None, &user, id.0, data);
                let frame = self.fb.finish(OpCode::Text);
                let exclude = exclude_self.then_some(id);
                let routed = self.route(Route::Broadcast { frame, exclude });
                if !self.overloaded(id, req_id, &routed, None) && req_id.is_some() {
                    self.ack(id, req_id, Ack::Broadcast);
                }
            }
            Req::Members { room } => {
                if !self.permit(id, Act::Members(room), req_id, false) {
                    return;
                }
                let list = self.hub.shared.router.members(room).unwrap_or_default();
                let out = self.fb.start();
                reply::members(out, req_id, room, list.iter().map(|(s, u)| (s.0, &**u)));
                let f = self.fb.finish(OpCode::Text);
                self.push(id, f);
            }
            Req::Ping => {
                let out = self.fb.start();
                reply::pong(out, req_id);
                let f = self.fb.finish(OpCode::Text);
                self.push(id, f);
            }
            Req::Other => {
                let msg = format!("unknown request type {}", env.kind);
                self.error(id, req_id, "unknown_type", &msg, None);
            }
        }
    }

    // ----- binary -----

    pub(super) fn on_binary(&mut self, id: SessionId, bytes: &[u8]) {
        self.stats.messages_in.add(1);
        self.stats.bytes_in.add(bytes.len() as u64);
        if !self.admit_message(id, bytes.len(), true) {
            return;
        }
        if self.cfg().echo {
            self.push(id, frame::encode(OpCode::Binary, bytes));
            return;
        }
        let hooks = self.hooks.clone();
        if let Some(on_message) = &hooks.on_message {
            if self.with_context(id, |ctx| on_message(ctx, Message::Binary(bytes)))
                == Some(Flow::Handled)
            {
                return;
            }
        }
        let req = match envelope::parse_binary(bytes, self.cfg().max_name_bytes) {
            Ok(r) => r,
            Err(e) => return self.error(id, None, "bad_request", &e.0, BINARY),
        };
        let Some(user) = self.user_of(id) else { return };
        let (kind, act) = match req.op {
            BinaryOp::Publish { .. } => (BinaryKind::Room, Act::Publish(req.target)),
            BinaryOp::Send => (BinaryKind::Direct, Act::Send(req.target)),
            BinaryOp::Broadcast { .. } => (BinaryKind::Broadcast, Act::Broadcast),
        };
        if !self.permit(id, act, None, true) {
            return;
        }
        let room = if kind == BinaryKind::Room {
            req.target
        } else {
            ""
        };
        let out = self.fb.start();
        envelope::write_binary_delivery(out, kind, room, &user, req.payload);
        let frame = self.fb.finish(OpCode::Binary);
        let routed = match req.op {
            BinaryOp::Publish { exclude_self } => {
                let Some((_, shared)) = self.member_room(id, req.target) else {
                    return self.not_member(id, None, req.target, BINARY);
                };
                let exclude = exclude_self.then_some(id);
                self.route(Route::Publish {
                    room: &shared,
                    frame,
                    exclude,
                    now: self.now_ns,
                })
            }
            BinaryOp::Send => {
                let routed = self.route(Route::User {
                    user: req.target,
                    frame,
                });
                if routed.sessions == 0 {
                    return self.not_online(id, None, req.target, BINARY);
                }
                routed
            }
            BinaryOp::Broadcast { exclude_self } => self.route(Route::Broadcast {
                frame,
                exclude: exclude_self.then_some(id),
            }),
        };
        self.overloaded(id, None, &routed, BINARY);
    }

    // ----- rooms -----

    /// Joins `id` to `room` as if it had asked (the `ack` or `error` goes to it). With
    /// `recover` and a room whose history still holds every publication after that position,
    /// those follow the ack, before any live one; see `history.rs` for why none is lost or
    /// repeated while other shards publish.
    pub(crate) fn join(
        &mut self,
        id: SessionId,
        room: &str,
        req_id: Option<&Value<'_>>,
        recover: Option<Recover<'_>>,
    ) {
        let cfg = &self.hub.shared.config;
        if let Err(e) = envelope::check_name("room", room, cfg.max_name_bytes) {
            return self.error(id, req_id, "bad_request", &e.0, None);
        }
        let (max_rooms, presence) = (cfg.max_rooms_per_session, cfg.presence);
        let Some(c) = self.conn(id) else { return };
        let Stage::Ws(w) = &mut c.stage else { return };
        let in_room = w.session.in_room(room);
        if !in_room && w.session.rooms.len() >= max_rooms {
            let msg = format!("already in {max_rooms} rooms (max_rooms_per_session)");
            return self.error(id, req_id, "too_many_rooms", &msg, Some(("room", room)));
        }
        let user = w.session.user.clone();
        match self.hub.shared.router.directory().join(room, id, &user) {
            Err(JoinError::Full { capacity }) => {
                let msg = format!("room {room} is full (capacity {capacity})");
                self.error(id, req_id, "room_full", &msg, Some(("room", room)));
            }
            Ok(j) => {
                if let Some(policy) = self.hub.shared.router.stored_history(&j.room) {
                    let (room_shared, already) = (j.room.clone(), j.already);
                    self.join_stored(id, j, req_id, recover, policy);
                    if presence && !already {
                        self.announce(&room_shared, true, &user, id);
                    }
                    return;
                }
                let log = &j.room.log;
                // Positions are the client's business only where they mean the same on every
                // node: not in cluster mode over NATS (there recovery answers `recovered:
                // false`); over Redis, rooms with history took the `join_stored` path above.
                let since = recover.filter(|_| log.stamps()).map(|r| Since {
                    offset: r.offset,
                    epoch: Some(r.epoch),
                });
                let now = self.now_ns;
                let at = if j.already {
                    // Nothing was missed while a member: the position, and no replay.
                    let mut at = log.join(None, now, || ());
                    at.recovered = false;
                    at
                } else {
                    if let Some(Stage::Ws(w)) = self.conn(id).map(|c| &mut c.stage) {
                        w.session.push_room(j.room.name.clone());
                    }
                    let rooms = &mut self.rooms;
                    let at = log.join(since, now, || rooms.add(&j.room, id));
                    if at.active {
                        self.rooms.mark(&j.room.name, id, at.offset);
                    }
                    at
                };
                // Members on every node (this node's count is exact, the others' as last heard).
                let members = j.members + self.hub.shared.router.remote_members(room);
                let position = (at.active && log.stamps()).then_some((at.offset, &*at.epoch));
                let recovered = recover.map(|_| at.recovered && since.is_some());
                let ack = Ack::Join {
                    room,
                    members,
                    position,
                    recovered,
                };
                self.ack(id, req_id, ack);
                if recovered == Some(true) {
                    let n = at.replay.len() as u64;
                    for (_, f) in at.replay {
                        self.push(id, f);
                    }
                    self.stats.deliveries.add(n);
                    self.stats.recovered_messages.add(n);
                }
                if recover.is_some() {
                    let counter = if recovered == Some(true) {
                        &self.stats.recoveries
                    } else {
                        &self.stats.recoveries_failed
                    };
                    counter.add(1);
                }
                if presence && !j.already {
                    self.announce(&j.room, true, &user, id);
                }
            }
        }
    }

    /// Takes `id` out of `room` as if it had asked.
    pub(crate) fn leave(&mut self, id: SessionId, room: &str, req_id: Option<&Value<'_>>) {
        let Some((user, shared)) = self.member_room(id, room) else {
            return self.not_member(id, req_id, room, None);
        };
        if let Some(Stage::Ws(w)) = self.conn(id).map(|c| &mut c.stage) {
            w.session.rooms.remove(&shared.name);
        }
        self.rooms.remove(&shared.name, id);
        self.hub.shared.router.directory().leave(&shared.name, id);
        self.ack(id, req_id, Ack::Leave { room });
        if self.cfg().presence {
            self.announce(&shared, false, &user, id);
        }
    }

    /// The sender's user id and the room's shared part, if the session is a member.
    fn member_room(&mut self, id: SessionId, room: &str) -> Option<(Arc<str>, Arc<RoomShared>)> {
        let Stage::Ws(w) = &self.conn(id)?.stage else {
            return None;
        };
        if !w.session.in_room(room) {
            return None;
        }
        let user = w.session.user.clone();
        Some((user, self.rooms.get(room)?.shared.clone()))
    }

    pub(super) fn user_of(&mut self, id: SessionId) -> Option<Arc<str>> {
        match &self.conn(id)?.stage {
            Stage::Ws(w) => Some(w.session.user.clone()),
            _ => None,
        }
    }

    // ----- routing from a session -----

    /// Routes from this shard and applies this shard's part at once.
    pub(super) fn route(&mut self, route: Route<'_>) -> Routed {
        // Mid-batch (a hook publishing while an inbox message is applied), everything goes
        // through the inbox, behind the rest of the batch.
        let from = (!self.in_inbox).then_some(self.shard);
        let mut routed = self.hub.shared.router.route(from, route);
        if let Some(local) = routed.local.take() {
            self.apply(local);
        }
        routed
    }

    /// Answers `overloaded` when some shard's inbox refused the delivery; returns whether it
    /// did.
    pub(super) fn overloaded(
        &mut self,
        id: SessionId,
        req_id: Option<&Value<'_>>,
        routed: &Routed,
        context: Option<(&str, &str)>,
    ) -> bool {
        let msg = match (routed.missed, routed.bus_dropped) {
            (0, false) => return false,
            (0, true) => "delivery dropped on the cluster bus (its queue is full): recipients on \
                          other nodes did not get it"
                .to_string(),
            (shards, bus) => format!(
                "delivery dropped on shard(s) {}: inbox full; members there did not get it{}",
                router::shard_list(shards),
                if bus { "; nor did other nodes" } else { "" }
            ),
        };
        self.error(id, req_id, "overloaded", &msg, context);
        true
    }

    // ----- answers -----

    fn not_member(
        &mut self,
        id: SessionId,
        req_id: Option<&Value<'_>>,
        room: &str,
        binary: Option<(&str, &str)>,
    ) {
        let msg = format!("not a member of room {room}");
        let ctx = binary.or(Some(("room", room)));
        self.error(id, req_id, "not_member", &msg, ctx);
    }

    pub(super) fn not_online(
        &mut self,
        id: SessionId,
        req_id: Option<&Value<'_>>,
        to: &str,
        binary: Option<(&str, &str)>,
    ) {
        let msg = format!("user {to} is not online");
        let ctx = binary.or(Some(("to", to)));
        self.error(id, req_id, "not_online", &msg, ctx);
    }

    pub(crate) fn ack(&mut self, id: SessionId, req_id: Option<&Value<'_>>, what: Ack<'_>) {
        let out = self.fb.start();
        reply::ack(out, req_id, what);
        let f = self.fb.finish(OpCode::Text);
        self.push(id, f);
    }

    pub(crate) fn error(
        &mut self,
        id: SessionId,
        req_id: Option<&Value<'_>>,
        code: &str,
        message: &str,
        context: Option<(&str, &str)>,
    ) {
        if code == "bad_request" {
            self.stats.bad_requests.add(1);
        }
        let out = self.fb.start();
        reply::error(out, req_id, code, message, context);
        let f: Frame = self.fb.finish(OpCode::Text);
        self.push(id, f);
    }

    // ----- limits and permissions -----

    /// Charges one incoming data message of `len` bytes to its connection's rate; returns
    /// whether to handle it. Dropped messages are counted, the client is told at most once a
    /// second, and a client that keeps flooding is closed with [`Close::RateLimited`]: do not
    /// reconnect, since it would only flood again.
    fn admit_message(&mut self, id: SessionId, len: usize, binary: bool) -> bool {
        let limits = self.hub.shared.gate.rates;
        if !limits.is_on() || self.cfg().echo {
            return true;
        }
        let now = self.now_ns;
        let Some(Stage::Ws(w)) = self.conn(id).map(|c| &mut c.stage) else {
            return false;
        };
        match w.rate.check(&limits, now, len) {
            Verdict::Pass => true,
            Verdict::Drop { notify } => {
                self.stats.rate_limited_messages.add(1);
                if notify {
                    let msg = "message rate or size limit exceeded; messages are being dropped";
                    let ctx = if binary { BINARY } else { None };
                    self.error(id, None, "rate_limited", msg, ctx);
                }
                false
            }
            Verdict::Close => {
                self.stats.rate_limited_messages.add(1);
                self.stats.rate_limit_closes.add(1);
                self.report_error(id, &SessionError::RateLimited);
                self.close_as(id, Close::RateLimited);
                false
            }
        }
    }

    /// Whether the session may do `act`; if not, answers `forbidden` (with the request's `id`
    /// and the room or user, or `"op":"binary"`) and counts it.
    fn permit(
        &mut self,
        id: SessionId,
        act: Act<'_>,
        req_id: Option<&Value<'_>>,
        binary: bool,
    ) -> bool {
        let Some(Stage::Ws(w)) = self.conn(id).map(|c| &c.stage) else {
            return false;
        };
        let p = &w.session.permissions;
        let allowed = match act {
            Act::Join(room) => p.join.allows(room),
            Act::Publish(room) => p.publish.allows(room),
            Act::Members(room) => p.presence.allows(room),
            Act::Broadcast => p.broadcast,
            Act::Send(_) => p.send,
        };
        if allowed {
            return true;
        }
        self.stats.forbidden_requests.add(1);
        let (msg, ctx) = match act {
            Act::Join(r) => (format!("not allowed to join room {r}"), Some(("room", r))),
            Act::Publish(r) => (
                format!("not allowed to publish to room {r}"),
                Some(("room", r)),
            ),
            Act::Members(r) => (
                format!("not allowed to see the members of room {r}"),
                Some(("room", r)),
            ),
            Act::Broadcast => ("not allowed to broadcast".to_string(), None),
            Act::Send(to) => (
                "not allowed to send direct messages".to_string(),
                Some(("to", to)),
            ),
        };
        let ctx = if binary { BINARY } else { ctx };
        self.error(id, req_id, "forbidden", &msg, ctx);
        false
    }
}
