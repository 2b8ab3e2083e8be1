//! How connections end, and time: admission at accept, closing, ending a session, timers,
//! slow consumers, what a flush means, removal and shutdown.
//!
//! Every way out of a session goes through [`end_session`](super::Engine::end_session): the
//! session leaves its rooms (presence says so) and the directory, and
//! `on_disconnect` runs, once, with the first cause. Every way out of a connection goes through
//! `mark_dead`, and the socket leaves the engine in `remove_dead` at the end of the turn, so no
//! handler ever sees a slab slot reused under it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

use super::conn::{Closing, Feed, Stage};
use super::ids::SessionId;
use super::iplimit::IpRefusal;
use super::liveness::{self, Verdict};
use super::outbox::Flushed;
use super::router::Route;
use super::{Effect, Engine};
use crate::hooks::{Disconnect, SessionError};
use crate::http::response::Response;
use crate::metrics::Histograms;
use crate::protocol::close::{self, Close};
use crate::protocol::frame::{self, Frame, OpCode};
use crate::protocol::reply;
use crate::session::Session;

/// When a closing connection's socket goes (besides `close_timeout`, which bounds them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Linger {
    /// When the peer answers our close frame (or ends the stream).
    UntilAnswered,
    /// As soon as the outbox is written.
    UntilFlushed,
    /// After one more write attempt, written or not: the peer is gone or wedged.
    OneFlush,
}

impl<S> Engine<S> {
    /// The limits a new connection must pass: the server's and this shard's connection counts
    /// (counted at accept, so handshakes cannot overshoot), then its address's limits.
    pub(super) fn admit_connection(&mut self, addr: std::net::SocketAddr) -> Result<(), Response> {
        let shared = &self.hub.shared;
        let cfg = &shared.config;
        let over_total = shared.open.fetch_add(1, Ordering::Relaxed) >= cfg.max_connections;
        if over_total || self.conns.len() >= cfg.max_connections_per_shard {
            shared.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Response::refusal(503, "connection limit reached"));
        }
        match shared.gate.ip.admit(addr.ip(), self.now_ns) {
            Ok(()) => Ok(()),
            Err(refusal) => {
                shared.open.fetch_sub(1, Ordering::Relaxed);
                self.stats.ip_limit_refusals.add(1);
                Err(match refusal {
                    IpRefusal::Rate => {
                        Response::refusal(429, "too many connection attempts from your address")
                            .with_header("Retry-After", "1")
                    }
                    IpRefusal::Concurrency => {
                        Response::refusal(429, "too many connections from your address")
                    }
                })
            }
        }
    }

    /// Arms the connection's timer for `due` unless it is already armed earlier.
    pub(crate) fn arm(&mut self, id: SessionId, due: u64) {
        if let Some(c) = self.conns.get_mut(id.key()).filter(|c| c.id == id) {
            if due < c.timer_due {
                c.timer_due = self.wheel.schedule(id.key() as u32, due);
            }
        }
    }

    // ----- closing -----

    /// [`close_with`](Self::close_with) one of the table's closes and its reason.
    pub(crate) fn close_as(&mut self, id: SessionId, c: Close) {
        self.close_with(id, c.code(), c.reason());
    }

    /// A server-side close of a WebSocket session: the close frame goes after what is queued,
    /// and the socket when the peer answers, or after `close_timeout`. Other stages just end.
    pub(crate) fn close_with(&mut self, id: SessionId, code: u16, reason: &str) {
        let d = Disconnect::new(code, reason);
        self.close_session(id, code, reason, d, Linger::UntilAnswered);
    }

    /// [`close_with`](Self::close_with), choosing what the application is told and how long
    /// the socket lingers.
    pub(crate) fn close_session(
        &mut self,
        id: SessionId,
        code: u16,
        reason: &str,
        d: Disconnect,
        linger: Linger,
    ) {
        let config = self.ws_config;
        let Some(c) = self.conn(id) else { return };
        let Stage::Ws(w) = &mut c.stage else {
            return self.drop_conn(id, d);
        };
        let frame = close_frame(code, reason);
        let mut feed = Feed {
            input: &[],
            eof: false,
            out: &mut c.outbox,
        };
        // Writes go to the outbox and cannot block; an error means it is already closing.
        let _ = w.framing.context(config).close(&mut feed, Some(frame));
        self.mark_dirty(id);
        self.end_session(id, d, linger);
    }

    /// Ends the session (if any) and lets the connection go once its outbox is written.
    pub(crate) fn finish(&mut self, id: SessionId, d: Disconnect) {
        self.end_session(id, d, Linger::UntilFlushed);
        let Some(c) = self.conn(id) else { return };
        if c.outbox.is_empty() {
            self.mark_dead(id);
        }
    }

    /// Ends the session (if any) and drops the connection at the end of the turn.
    pub(crate) fn drop_conn(&mut self, id: SessionId, d: Disconnect) {
        self.end_session(id, d, Linger::OneFlush);
        self.mark_dead(id);
    }

    /// Moves a connection to `Closing`, ending its session first: see the module docs.
    pub(crate) fn end_session(&mut self, id: SessionId, d: Disconnect, linger: Linger) {
        let now = self.now;
        let config = self.ws_config;
        let Some(c) = self.conn(id) else { return };
        let closing = Stage::Closing(Closing {
            addr: c.addr(),
            since: now,
            ws: None,
            linger,
        });
        let ended = match std::mem::replace(&mut c.stage, closing) {
            Stage::Ws(mut w) => {
                if linger == Linger::UntilAnswered {
                    // The peer's close reply is still to be read.
                    if let Stage::Closing(cl) = &mut c.stage {
                        cl.ws = Some(w.framing.into_context(config));
                    }
                } else {
                    // Nothing more is read: tungstenite's pending replies (a close reply) go to
                    // the outbox, and the framing state goes. After a fault it could not parse
                    // on anyway: past a frame over the limit tungstenite keeps that frame's
                    // header and trips on its next read (found by the frame_reader fuzz target).
                    let mut feed = Feed {
                        input: &[],
                        eof: false,
                        out: &mut c.outbox,
                    };
                    if let Some(mut ws) = w.framing.take() {
                        let _ = ws.flush(&mut feed);
                    }
                }
                Some((w.session, true))
            }
            Stage::Sse(s) => Some((s.session, false)),
            Stage::Http(_) => None,
            Stage::Closing(mut cl) => {
                // Already closing: keep the earlier cause, tighten the linger only.
                cl.linger = cl.linger.min_with(linger);
                c.stage = Stage::Closing(cl);
                return;
            }
        };
        let due = now + self.timeouts.close_grace;
        self.arm(id, due);
        let Some((session, websocket)) = ended else {
            return;
        };
        self.leave_all(&session, websocket);
        if websocket {
            self.acks.end_session(session.id);
            self.hub.shared.router.directory().remove_session(id);
            self.stats.connections.sub(1);
            let hooks = self.hooks.clone();
            if let Some(on_disconnect) = &hooks.on_disconnect {
                // The session is gone already: a panic here has nothing left to close.
                self.contain(None, |_| on_disconnect(&session, &d));
            }
        } else {
            self.stats.sse_connections.sub(1);
        }
    }

    /// Takes an ended session out of its rooms everywhere; WebSocket members' departures are
    /// announced (streams are silent listeners).
    fn leave_all(&mut self, session: &Session, announce: bool) {
        for room in session.rooms.as_slice() {
            let shared = self.rooms.get(room).map(|r| r.shared.clone());
            self.rooms.remove(room, session.id);
            self.hub.shared.router.directory().leave(room, session.id);
            if let (Some(shared), true) = (shared, announce && self.cfg().presence) {
                self.announce(&shared, false, &session.user, session.id);
            }
        }
    }

    /// Routes a `joined` or `left` event of `user`'s session `id` to the room's members.
    pub(crate) fn announce(
        &mut self,
        room: &Arc<super::directory::RoomShared>,
        joined: bool,
        user: &str,
        id: SessionId,
    ) {
        let out = self.fb.start();
        reply::presence(out, joined, &room.name, user, id.0);
        let frame = self.fb.finish(OpCode::Text);
        let routed = self.hub.shared.router.route(
            Some(self.shard),
            Route::Presence {
                room,
                frame,
                about: id,
            },
        );
        if let Some(local) = routed.local {
            self.apply(local);
        }
    }

    /// Marks a connection for removal at the end of the turn.
    pub(crate) fn mark_dead(&mut self, id: SessionId) {
        if let Some(c) = self.conn(id) {
            c.dead = true;
            self.reap.push(id);
        }
    }

    // ----- timers -----

    /// A timer armed for tick `due` fired in connection `id`'s slab slot.
    pub(super) fn on_timer(&mut self, id: SessionId, due: u64) {
        let (now, t) = (self.now, self.timeouts);
        // A timer due at tick `due` is on time anywhere within that tick.
        let lag = self.hub.shared.config.tick * now.saturating_sub(due) as u32;
        let Some(c) = super::live(&mut self.conns, id) else {
            return;
        };
        // Superseded by an earlier deadline, or armed by the slot's previous occupant (whose
        // deadline, were it the same tick, this one's firing makes stale: it re-arms).
        if c.timer_due != due {
            return;
        }
        c.timer_due = u64::MAX;
        Histograms::record(&mut self.hist.timer_lag, lag, 1);
        let queued = !c.outbox.is_empty();
        let verdict = match &mut c.stage {
            Stage::Http(h) => match liveness::deadline(h.since, t.handshake, now) {
                // Idle between requests: close without a 408 (browsers show those).
                Verdict::Expired if h.requests > 0 && h.buf.is_empty() => {
                    return self.drop_conn(id, Disconnect::new(close::ABNORMAL, "idle"));
                }
                Verdict::Expired => {
                    self.stats.handshake_timeouts.add(1);
                    self.stats.handshake_failures.add(1);
                    let r = Response::refusal(408, "request timeout");
                    return self.respond(id, &r, false);
                }
                v => v,
            },
            Stage::Ws(_) => c.live.open(queued, now, &t),
            Stage::Sse(s) => {
                let v = c.live.stream(s.last_beat, queued, now, &t);
                if matches!(v, Verdict::Beat(_)) {
                    s.last_beat = now;
                }
                v
            }
            Stage::Closing(cl) => liveness::deadline(cl.since, t.close_grace, now),
        };
        match verdict {
            Verdict::Wait(due) => self.arm(id, due),
            Verdict::Ping(due) => {
                // A server frame needs no masking and tungstenite need not know: the client's
                // pong only proves life, which any input does.
                self.queue(id, frame::encode(OpCode::Ping, b""));
                self.arm(id, due);
            }
            Verdict::Beat(due) => {
                self.queue(id, Frame::from(crate::http::sse::HEARTBEAT));
                self.arm(id, due);
            }
            Verdict::IdleTimeout => {
                self.stats.heartbeat_timeouts.add(1);
                self.report_error(id, &SessionError::HeartbeatTimeout);
                // The peer is gone or wedged: the close frame as a courtesy, one write, then
                // the socket.
                let c = Close::HeartbeatTimeout;
                self.close_session(id, c.code(), c.reason(), c.into(), Linger::OneFlush);
            }
            Verdict::WriteStall => self.slow.push((id, Close::WriteStall)),
            Verdict::Expired => {
                // A close the peer never completed: reset, so that the kernel drops whatever
                // the peer left unread instead of keeping it in an orphaned socket.
                if let Some(c) = self.conn(id) {
                    c.reset = matches!(c.stage, Stage::Closing(_));
                }
                self.mark_dead(id);
            }
        }
    }

    /// Closes a connection that fell behind (`why`: [`Close::SlowConsumer`] or
    /// [`Close::WriteStall`]): unsent frames are dropped (a torn frame is finished), and a
    /// WebSocket gets the close behind it. The socket goes when the peer answers that close, or
    /// is reset after `close_timeout` (docs/protocol.md, "Slow consumers"). A stream or an HTTP
    /// connection just goes, reset.
    pub(super) fn close_slow(&mut self, id: SessionId, why: Close) {
        let Some(c) = super::live(&mut self.conns, id) else {
            return;
        };
        if matches!(c.stage, Stage::Closing(_)) {
            return;
        }
        c.outbox.discard_unstarted();
        self.stats.slow_consumer_closes.add(1);
        if !matches!(c.stage, Stage::Ws(_)) {
            c.reset = true;
            return self.drop_conn(id, why.into());
        }
        self.report_error(id, &SessionError::SlowConsumer);
        self.close_as(id, why);
    }

    // ----- writes and removal -----

    /// Settles a flush of connection `id`.
    pub(super) fn flushed(&mut self, id: SessionId, result: std::io::Result<Flushed>) {
        let (now, stall) = (self.now, self.timeouts.write_stall);
        let max_queue = self.hub.shared.config.max_queue_bytes;
        let f = match result {
            Ok(f) => f,
            Err(_) => return self.drop_conn(id, Disconnect::new(close::ABNORMAL, "write failed")),
        };
        self.stats.bytes_out.add(f.bytes as u64);
        let Some(c) = super::live(&mut self.conns, id) else {
            return;
        };
        if f.bytes > 0 {
            c.live.last_tx = now;
        }
        if let Stage::Closing(cl) = &c.stage {
            let done = match cl.linger {
                Linger::UntilFlushed => f.drained,
                Linger::OneFlush => true,
                Linger::UntilAnswered => false,
            };
            if done {
                return self.mark_dead(id);
            }
        }
        if !f.drained {
            // What the socket would not take counts against the queue bound.
            if c.outbox.queued() > max_queue {
                self.slow.push((id, Close::SlowConsumer));
            }
            let due = c.live.last_tx + stall;
            self.arm(id, due);
        }
    }

    /// Removes the connections that ended this turn and hands their sockets back.
    pub(super) fn remove_dead(&mut self) {
        while let Some(id) = self.reap.pop() {
            if self.conns.get(id.key()).is_none_or(|c| c.id != id) {
                continue;
            }
            let c = self.conns.remove(id.key());
            self.hub.shared.open.fetch_sub(1, Ordering::Relaxed);
            self.hub.shared.gate.ip.release(c.addr().ip(), self.now_ns);
            // Output the peer never took (a slow consumer past `close_timeout`, a dead one past
            // its heartbeat): reset rather than an orderly close that would wait behind bytes
            // nobody reads. docs/protocol.md, "Slow consumers".
            self.effects.push_back(Effect::Closed {
                socket: c.socket,
                reset: c.reset || !c.outbox.is_empty(),
            });
        }
    }

    // ----- shutdown -----

    /// Stops taking connections and closes every session with [`Close::Shutdown`]; the
    /// connections have `drain` ticks to go.
    pub(super) fn shutdown(&mut self, drain: u64) {
        if self.draining.is_some() {
            return;
        }
        self.draining = Some(self.now + drain);
        self.effects.push_back(Effect::StopAccepting);
        let ids: Vec<SessionId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in ids {
            let Some(c) = self.conn(id) else { continue };
            match c.stage {
                // Waiting for every client's close reply could take the whole drain time;
                // the close frame is what matters.
                Stage::Ws(_) => {
                    let c = Close::Shutdown;
                    self.close_session(id, c.code(), c.reason(), c.into(), Linger::UntilFlushed);
                }
                Stage::Http(_) | Stage::Sse(_) => self.drop_conn(id, Close::Shutdown.into()),
                Stage::Closing(_) => {}
            }
        }
    }

    /// Drops whatever is left when the drain ends.
    pub fn abandon(&mut self) {
        let ids: Vec<SessionId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in ids {
            self.drop_conn(id, Close::Shutdown.into());
        }
        self.remove_dead();
    }
}

/// A close frame for tungstenite, its reason cut to what fits ([`frame::truncate_reason`]).
pub(crate) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: frame::truncate_reason(reason).to_string().into(),
    }
}

impl Linger {
    /// The shorter of two lingers.
    fn min_with(self, other: Linger) -> Linger {
        use Linger::*;
        match (self, other) {
            (OneFlush, _) | (_, OneFlush) => OneFlush,
            (UntilFlushed, _) | (_, UntilFlushed) => UntilFlushed,
            _ => UntilAnswered,
        }
    }
}
