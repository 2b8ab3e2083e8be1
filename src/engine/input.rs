//! What arrives on a connection: HTTP requests until an upgrade (or an SSE stream, or the end),
//! then WebSocket frames through tungstenite, then the peer's close.
//!
//! Parsing, routing and the API's answers are pure and live in `crate::http`; this file moves a
//! connection through its stages as its bytes say.

use std::sync::Arc;

use tungstenite::protocol::{Role, WebSocketContext};
use tungstenite::Message as WsMessage;

use super::compression::Deflating;
use super::conn::{Closing, Feed, SseConn, Stage, WsConn};
use super::framing::Framing;
use super::history::Since;
use super::ids::SessionId;
use super::lifecycle::{close_frame, Linger};
use super::Input;
use crate::auth::Refusal;
use crate::engine::directory::{JoinError, SessionInfo};
use crate::engine::ratelimit::RateLimiter;
use crate::hooks::{Disconnect, SessionError};
use crate::http::request::{self, Limits, Parsed, Request};
use crate::http::response::Response;
use crate::http::router::{self, Route};
use crate::http::upgrade::{self, UpgradeRequest};
use crate::http::{self, api, sse, Listener};
use crate::protocol::close::{self, Close};
use crate::protocol::envelope;
use crate::protocol::frame::{Frame, OpCode};
use crate::protocol::reply;
use crate::session::Session;

/// Pipelined HTTP requests answered per connection per turn. A `GET /metrics` costs about
/// 150 µs in a release build: 16 of them hold the shard for a few milliseconds at most
/// (`tests/hostile.rs`, `pipelined_metrics_requests_do_not_stall_the_shard`).
const HTTP_REQUESTS_PER_TURN: usize = 16;

impl<S> super::Engine<S> {
    pub(super) fn input(&mut self, id: SessionId, input: Input<'_>) {
        let now = self.now;
        let Some(c) = self.conn(id) else { return };
        let (bytes, eof) = match input {
            Input::Bytes(b) => (b, false),
            Input::Eof => (&[][..], true),
            Input::Error(e) => {
                let err = SessionError::Io(std::io::Error::from(e).to_string());
                self.report_error(id, &err);
                return self.drop_conn(id, Disconnect::new(close::ABNORMAL, "socket error"));
            }
        };
        c.live.received(now);
        match &mut c.stage {
            Stage::Http(_) => self.http_input(id, bytes, eof),
            Stage::Ws(_) => self.ws_input(id, bytes, eof),
            Stage::Closing(Closing { ws: Some(_), .. }) => self.ws_input(id, bytes, eof),
            // Streams only send, and a closing connection has nothing more to hear: the input
            // is dropped. The end of a stream's input ends it; a closing connection still
            // writes what it queued (the answer to a request sent just before a half-close).
            Stage::Sse(_) if eof => {
                self.drop_conn(id, Disconnect::new(close::ABNORMAL, "stream closed"))
            }
            Stage::Closing(_) if eof => {
                self.finish(id, Disconnect::new(close::ABNORMAL, "peer closed"))
            }
            Stage::Sse(_) | Stage::Closing(_) => {}
        }
    }

    // ----- HTTP -----

    fn limits(&self) -> Limits {
        let cfg = self.cfg();
        Limits {
            max_header_bytes: cfg.max_header_bytes,
            max_body_bytes: cfg.max_request_body_bytes,
        }
    }

    /// Buffers the bytes, then answers the complete requests in order, at most
    /// [`HTTP_REQUESTS_PER_TURN`] of them: the rest wait for the next turn
    /// ([`Engine::answer_pending`](super::Engine::answer_pending)), so pipelined requests cannot
    /// hold the shard, and a client that does not read its answers is caught by the queue bound
    /// after each write.
    pub(super) fn http_input(&mut self, id: SessionId, bytes: &[u8], eof: bool) {
        let limits = self.limits();
        let Some(c) = self.conn(id) else { return };
        let Stage::Http(h) = &mut c.stage else { return };
        h.buf.extend_from_slice(bytes);
        h.eof |= eof;
        for _ in 0..HTTP_REQUESTS_PER_TURN {
            let Some(c) = self.conn(id) else { return };
            let Stage::Http(h) = &mut c.stage else { return };
            if h.buf.is_empty() {
                break;
            }
            let first = h.requests == 0;
            let listener = h.listener;
            match request::parse(&h.buf, limits) {
                Parsed::Partial => break,
                Parsed::Refuse(resp) => {
                    if first {
                        self.stats.handshake_failures.add(1);
                    }
                    if resp.status == 431 {
                        self.stats.oversized_headers.add(1);
                    }
                    return self.respond(id, &resp, false);
                }
                Parsed::Complete(req, used) if req.upgrade => {
                    let early = h.buf.split_off(used);
                    return self.upgrade(id, req, listener, early);
                }
                Parsed::Complete(req, used) => {
                    h.buf.drain(..used);
                    h.requests = h.requests.saturating_add(1);
                    self.http_request(id, req, listener);
                }
            }
        }
        let Some(c) = self.conn(id) else { return };
        let Stage::Http(h) = &c.stage else { return };
        if matches!(request::parse(&h.buf, limits), Parsed::Complete(..)) {
            self.pending.push(id);
        } else if h.eof {
            if h.requests == 0 {
                self.stats.handshake_failures.add(1);
            }
            // The peer may have half-closed after its last request: answers still go out.
            self.finish(
                id,
                Disconnect::new(close::ABNORMAL, "closed during handshake"),
            );
        }
    }

    /// Routes and answers one plain request.
    fn http_request(&mut self, id: SessionId, mut req: Request, listener: Listener) {
        self.stats.http_requests.add(1);
        let keep = req.keep_alive && self.draining.is_none();
        if req.method == "GET"
            && listener != Listener::Admin
            && self.ws_paths.contains(&req.path.as_str())
        {
            let r = Response::refusal(426, "this endpoint expects a WebSocket upgrade")
                .with_header("Upgrade", "websocket");
            return self.respond(id, &r, keep);
        }
        if req.method == "GET" && listener != Listener::Admin {
            if let Some(page) = self.hooks.pages.get(req.path.as_str()) {
                let r = Response {
                    status: 200,
                    content_type: page.content_type,
                    body: page.body.to_vec(),
                    headers: vec![("Cache-Control", "no-cache".into())],
                };
                return self.respond(id, &r, keep);
            }
        }
        let route = match router::route(&req.method, &req.path) {
            Ok(r) if listener.serves(&r) => r,
            Ok(_) => {
                let r = Response::error(404, "not_found", "no such route on this listener");
                return self.respond(id, &r, keep);
            }
            Err(e) => return self.respond(id, &http::route_error(&e), keep),
        };
        if let Err(r) = http::authorize(self.cfg(), &route, &req) {
            return self.respond(id, &r, keep);
        }
        if route == Route::Sse {
            return self.open_stream(id, &req);
        }
        let resp = api::handle(&self.hub, route, &mut req, self.draining.is_some());
        if resp.status == 400 {
            self.stats.bad_requests.add(1);
        }
        self.respond(id, &resp, keep);
    }

    /// Queues a response; keeps the connection for the next request, or closes it once the
    /// response is written.
    pub(crate) fn respond(&mut self, id: SessionId, resp: &Response, keep_alive: bool) {
        self.queue(id, resp.to_bytes(keep_alive).into());
        let now = self.now;
        let Some(c) = self.conn(id) else { return };
        if keep_alive {
            if let Stage::Http(h) = &mut c.stage {
                h.since = now;
            }
            let due = now + self.timeouts.handshake;
            self.arm(id, due);
        } else {
            self.finish(id, Disconnect::new(close::ABNORMAL, "HTTP response"));
        }
    }

    // ----- the upgrade -----

    /// Admits a client exactly as the gate says (origin, authenticator or `?user=`), counting
    /// the refusals.
    fn admit(&self, req: &UpgradeRequest) -> Result<crate::auth::Admitted, Refusal> {
        self.hub
            .shared
            .gate
            .admit(req)
            .inspect_err(|refusal| match refusal {
                Refusal::Origin(_) => self.stats.origin_refusals.add(1),
                Refusal::Unauthenticated(_) => self.stats.auth_failures.add(1),
                _ => {}
            })
    }

    fn upgrade(&mut self, id: SessionId, req: Request, listener: Listener, early: Vec<u8>) {
        if listener == Listener::Admin {
            let r = Response::error(404, "not_found", "no WebSockets on this listener");
            return self.refuse(id, &r);
        }
        let req = match upgrade::validate(req, self.ws_paths) {
            Ok(r) => r,
            Err(resp) => return self.refuse(id, &resp),
        };
        if self.draining.is_some() {
            return self.refuse(id, &Response::refusal(503, "server shutting down"));
        }
        let deflate = match self.negotiate_compression(&req) {
            Ok(d) => d,
            Err(resp) => return self.refuse(id, &resp),
        };
        let admitted = match self.admit(&req) {
            Ok(a) => a,
            Err(refusal) => {
                return match refusal.close() {
                    Some((close, reason)) => {
                        self.refuse_with_close(id, &req, close, &reason, early)
                    }
                    None => self.refuse(id, &refusal.response()),
                };
            }
        };
        let user: Arc<str> = admitted.user.unwrap_or_else(|| format!("anon-{id}").into());
        let max_name = self.cfg().max_name_bytes;
        let Some(c) = self.conn(id) else { return };
        let mut session = Session::new(id, c.addr());
        session.user = user;
        session.permissions = admitted.permissions;
        let hooks = self.hooks.clone();
        if let Some(on_connect) = &hooks.on_connect {
            if let Err(r) = on_connect(&req, &mut session) {
                let close = Close::for_refusal(r.status);
                return self.refuse_with_close(id, &req, close, &r.reason, early);
            }
            // A user id the hook chose (often from the request) follows the same rules.
            if let Err(e) = envelope::check_name("user", &session.user, max_name) {
                return self.refuse(id, &Response::refusal(400, &e.0));
            }
        }
        let rate = RateLimiter::new(&self.hub.shared.gate.rates, self.now_ns);
        let user = session.user.clone();
        let Some(c) = self.conn(id) else { return };
        c.stage = Stage::Ws(WsConn {
            framing: Framing::default(),
            session,
            rate,
            deflate: deflate.map(|a| {
                Box::new(Deflating {
                    window: a.server_window_bits,
                    rx: None,
                })
            }),
        });
        self.stats.handshakes.add(1);
        self.stats.connections.add(1);
        self.hub.shared.router.directory().add_session(SessionInfo {
            id,
            user: user.clone(),
            addr: self.conns[id.key()].addr(),
        });
        // The 101 and the welcome go out as one frame: one allocation and one slot of the
        // outbox per handshake, which a burst of thousands of clients holds until the turn's
        // writes (the allocator keeps what a burst used; see `Hooks::on_quiet`).
        let mut head = std::mem::take(&mut self.handshake);
        head.clear();
        let extensions = deflate.map(|a| a.response());
        upgrade::switching_protocols(
            &mut head,
            &req.accept,
            admitted.subprotocol,
            extensions.as_deref(),
        );
        let mut welcome = None;
        if !self.cfg().echo && !hooks.no_welcome {
            reply::welcome(self.fb.start(), id.0, &user, self.shard);
            if deflate.is_some() {
                // A compressing session gets the welcome as every frame, through `push`.
                welcome = Some(self.fb.finish(OpCode::Text));
            } else {
                self.fb.finish_into(OpCode::Text, &mut head);
            }
        }
        self.queue(id, Arc::from(&head[..]));
        self.handshake = head;
        if let Some(f) = welcome {
            self.push(id, f);
        }
        if !self.cfg().echo {
            // Before anything live: nothing routed to this session can be applied before
            // this returns (see `offline.rs` on why none is missed or duplicated). An
            // application without the welcome gets them too: it stored them (`Hub::send_direct`).
            self.deliver_stored(id, &user);
        }
        if let Some(on_open) = &hooks.on_open {
            self.with_context(id, |ctx| on_open(ctx));
        }
        let due = self.now + self.timeouts.ping_interval;
        self.arm(id, due);
        // Frames may have arrived with the request.
        if !early.is_empty() {
            self.ws_input(id, &early, false);
        }
    }

    /// Refuses a valid upgrade with a close code rather than an HTTP status: the `101`, then
    /// at once a close frame with `close`'s code and `reason`. No session ever exists (no
    /// welcome, no hooks, no `connections` count); the refusal counts in `handshake_failures`
    /// (and `auth_failures` or `origin_refusals`, by [`admit`](Self::admit)), as an HTTP one
    /// did. Browsers cannot read the status of a failed upgrade, only that it failed, as a
    /// network does: the close code's class is what tells them to stop rather than retry
    /// (docs/protocol.md, "Refused upgrades"; Centrifugo answers a bad token the same way).
    fn refuse_with_close(
        &mut self,
        id: SessionId,
        req: &UpgradeRequest,
        close: Close,
        reason: &str,
        early: Vec<u8>,
    ) {
        self.stats.handshake_failures.add(1);
        // A browser that offered the bearer subprotocol aborts a 101 without it, and would
        // never see the close.
        let subprotocol =
            crate::auth::offers_bearer(req).then_some(crate::auth::BEARER_SUBPROTOCOL);
        let mut head = Vec::new();
        upgrade::switching_protocols(&mut head, &req.accept, subprotocol, None);
        self.queue(id, head.into());
        let now = self.now;
        let mut ws = WebSocketContext::new(Role::Server, Some(self.ws_config));
        let Some(c) = self.conn(id) else { return };
        let mut feed = Feed {
            input: &[],
            eof: false,
            out: &mut c.outbox,
        };
        // Writes go to the outbox and cannot fail.
        let _ = ws.close(&mut feed, Some(close_frame(close.code(), reason)));
        // As for any close the server starts: the socket goes when the client answers, or
        // after `close_timeout`.
        c.stage = Stage::Closing(Closing {
            addr: c.addr(),
            since: now,
            ws: Some(Box::new(ws)),
            linger: Linger::UntilAnswered,
        });
        self.mark_dirty(id);
        let due = now + self.timeouts.close_grace;
        self.arm(id, due);
        // Frames sent with the request keep tungstenite's reading in step; their messages
        // are dropped, as after any close.
        if !early.is_empty() {
            self.ws_input(id, &early, false);
        }
    }

    /// Refuses an upgrade (or stream) with a response, closing after it.
    fn refuse(&mut self, id: SessionId, resp: &Response) {
        self.stats.handshake_failures.add(1);
        if resp.status == 431 {
            self.stats.oversized_headers.add(1);
        }
        self.respond(id, resp, false);
    }

    // ----- Server-Sent Events -----

    /// Turns the connection into an event stream of the `room` query parameter, admitted as a
    /// WebSocket upgrade is and needing permission to join the room.
    fn open_stream(&mut self, id: SessionId, req: &Request) {
        let bad = |m: &str| Response::error(400, "bad_request", m);
        let Some(room) = req.query_param("room") else {
            let given = req
                .query
                .as_deref()
                .is_some_and(|q| q.split('&').any(|p| p.starts_with("room=")));
            let msg = if given {
                "room is not valid percent-encoded UTF-8"
            } else {
                "the room query parameter is required"
            };
            self.stats.bad_requests.add(1);
            return self.respond(id, &bad(msg), false);
        };
        if let Err(e) = envelope::check_name("room", &room, self.cfg().max_name_bytes) {
            self.stats.bad_requests.add(1);
            return self.respond(id, &bad(&e.0), false);
        }
        if self.draining.is_some() {
            let r = Response::error(503, "shutting_down", "the server is shutting down");
            return self.respond(id, &r, false);
        }
        let admitted = match self.admit(&UpgradeRequest::from_plain(req)) {
            Ok(a) if !a.permissions.join.allows(&room) => {
                let msg = format!("not allowed to read room {room}");
                return self.respond(id, &Response::error(403, "forbidden", &msg), false);
            }
            Ok(a) => a,
            // An EventSource does not retry after an HTTP error: streams keep the status.
            Err(r) => return self.respond(id, &r.response(), false),
        };
        let user: Arc<str> = admitted.user.unwrap_or_else(|| format!("anon-{id}").into());
        let directory = self.hub.shared.router.directory();
        let joined = match directory.join(&room, id, &user) {
            Ok(j) => j,
            Err(JoinError::Full { capacity }) => {
                let msg = format!("room {room} is full (capacity {capacity})");
                let r = Response::error(409, "room_full", &msg);
                return self.respond(id, &r, false);
            }
        };
        let now = self.now;
        self.queue(id, Frame::from(sse::response_head()));
        let Some(c) = self.conn(id) else { return };
        let mut session = Session::new(id, c.addr());
        session.user = user;
        session.permissions = admitted.permissions;
        session.push_room(joined.room.name.clone());
        c.stage = Stage::Sse(SseConn {
            session,
            last_beat: now,
        });
        // The same join as a WebSocket member's: visible and positioned under the log's lock
        // (`history.rs`), with `Last-Event-ID` as the position to recover from.
        joined.room.log.watch();
        self.stats.sse_connections.add(1);
        let last = req
            .header("last-event-id")
            .and_then(|v| sse::parse_last_event_id(v).map(|(o, e)| (o, e.map(str::to_owned))));
        if let (Some(policy), Some((offset, epoch))) =
            (self.hub.shared.router.stored_history(&joined.room), &last)
        {
            // History in Redis (cluster mode): the same join as a WebSocket member's there
            // (`recovery.rs`). A bare offset (no epoch) never matches the store's epoch.
            let since = (*offset, epoch.clone().unwrap_or_default());
            self.stream_stored(id, &joined.room, since, policy);
            let due = now + self.timeouts.stream_beat;
            return self.arm(id, due);
        }
        let since = last.as_ref().map(|(offset, epoch)| Since {
            offset: *offset,
            epoch: epoch.as_deref(),
        });
        let rooms = &mut self.rooms;
        let at = joined
            .room
            .log
            .join(since, self.now_ns, || rooms.add(&joined.room, id));
        self.rooms.mark(&joined.room.name, id, at.offset);
        if last.is_some() {
            if at.recovered {
                let n = at.replay.len() as u64;
                for (seq, f) in at.replay {
                    // Binary publications are never kept, so every replayed frame is text.
                    self.queue(id, sse::event(seq, &at.epoch, sse::ws_payload(&f)).into());
                }
                self.stats.sse_events.add(n);
                self.stats.recovered_messages.add(n);
                self.stats.recoveries.add(1);
            } else {
                self.queue(id, sse::reset(at.offset, &at.epoch).into());
                self.stats.recoveries_failed.add(1);
            }
        }
        let due = now + self.timeouts.stream_beat;
        self.arm(id, due);
    }

    // ----- WebSocket -----

    /// Handles a WebSocket's bytes: through the permessage-deflate shim first if the session
    /// compresses (`compression.rs`), else straight to tungstenite.
    fn ws_input(&mut self, id: SessionId, bytes: &[u8], eof: bool) {
        if self.compressing(id) {
            return self.ws_input_inflating(id, bytes, eof);
        }
        self.ws_read(id, bytes, eof);
    }

    /// Feeds bytes to tungstenite and handles every message they complete. For a compressing
    /// session these are the shim's rewritten frames: the framing tracker follows what
    /// tungstenite reads.
    pub(super) fn ws_read(&mut self, id: SessionId, bytes: &[u8], eof: bool) {
        let config = self.ws_config;
        if let Some(Stage::Ws(w)) = self.conn(id).map(|c| &mut c.stage) {
            w.framing.context(config);
            w.framing.saw(bytes);
        }
        let mut rest = bytes;
        loop {
            let Some(c) = self.conn(id) else { return };
            let ws = match &mut c.stage {
                Stage::Ws(w) => w.framing.context(config),
                Stage::Closing(Closing { ws: Some(ws), .. }) => &mut **ws,
                _ => return,
            };
            let mut feed = Feed {
                input: rest,
                eof,
                out: &mut c.outbox,
            };
            let result = ws.read(&mut feed);
            rest = feed.input;
            // tungstenite may have queued a pong or a close reply.
            self.mark_dirty(id);
            match result {
                Ok(WsMessage::Text(t)) => self.on_text(id, t.as_str()),
                Ok(WsMessage::Binary(b)) => self.on_binary(id, &b),
                Ok(WsMessage::Close(cf)) => {
                    let d = cf.map_or(Disconnect::new(close::NO_STATUS, ""), |f| {
                        Disconnect::new(f.code.into(), &f.reason)
                    });
                    // tungstenite queued the reply; the socket goes once it is written.
                    self.end_session(id, d, Linger::UntilFlushed);
                }
                Ok(_) => {} // pings are answered by tungstenite; pongs only prove life
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Every byte is read: between messages, the framing state goes.
                    if let Some(Stage::Ws(w)) = self.conn(id).map(|c| &mut c.stage) {
                        w.framing.settle();
                    }
                    return;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    // The close handshake is complete; our reply (if any) is in the outbox.
                    return self.finish(id, Disconnect::new(close::ABNORMAL, ""));
                }
                Err(e) => return self.on_ws_error(id, e),
            }
        }
    }

    /// Maps a tungstenite error to the RFC close code (or, for a fault that is not the
    /// client's, [`Close::InternalError`]) and closes, or drops a dead stream.
    fn on_ws_error(&mut self, id: SessionId, e: tungstenite::Error) {
        use tungstenite::error::ProtocolError;
        let (close, reason): (Close, String) = match &e {
            tungstenite::Error::Capacity(c) => (Close::MessageTooBig, c.to_string()),
            tungstenite::Error::Utf8(_) => (Close::InvalidUtf8, Close::InvalidUtf8.reason().into()),
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                return self.drop_conn(id, Disconnect::new(close::ABNORMAL, "connection reset"));
            }
            tungstenite::Error::Protocol(p) => (Close::ProtocolError, p.to_string()),
            other => (Close::InternalError, other.to_string()),
        };
        let (code, d) = (close.code(), Disconnect::new(close.code(), &reason));
        let open = self.conn(id).is_some_and(|c| c.is_ws());
        if !open {
            // A second fault after our close frame: stop waiting for the peer.
            return self.drop_conn(id, d);
        }
        if close != Close::InternalError {
            self.stats.protocol_errors.add(1);
        }
        self.report_error(id, &SessionError::Protocol(reason.clone()));
        // Past a frame over the limit nothing can be parsed (see `end_session`): send the
        // 1009 and go, rather than wait for a reply that could not be read.
        let linger = if close == Close::MessageTooBig {
            Linger::UntilFlushed
        } else {
            Linger::UntilAnswered
        };
        self.close_session(id, code, &reason, d, linger);
    }
}
