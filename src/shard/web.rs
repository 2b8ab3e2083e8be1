//! The shard's side of the HTTP API and of Server-Sent Events: reading plain HTTP requests off
//! connections in the `Wire::Http` stage, answering them (keep-alive, pipelining), turning
//! `GET /sse` into a `Wire::Sse` stream, delivering room events to streams and timing them.
//!
//! Parsing, routing, authorization and the answers themselves are pure or hub-level
//! (`crate::http`, `crate::sse`); this file only moves bytes and connection state.
//!
//! Invariants:
//! * A connection in `Wire::Http` waits for a request in `Phase::Handshake { since }`, where
//!   `since` is its accept or its last response: `handshake_timeout` bounds both a slow request
//!   and an idle keep-alive connection. The first request times out with 408 (as before); an
//!   idle kept-alive connection is closed silently, as browsers expect.
//! * An SSE stream is `Phase::Open` and a member of its room in the directory and in
//!   `LocalRooms` (so publishes reach its shard), but not a session: WebSocket deliveries skip
//!   it (`Conns::push` takes `Wire::Ws` only) and it gets `message` events through
//!   [`Shard::sse_deliver`] alone.

use std::io::{self, Read};
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::conn::Wire;
use super::{Conns, Shard};
use crate::engine::directory::JoinError;
use crate::engine::ids::SessionId;
use crate::engine::liveness::Phase;
use crate::http::request::{self, Limits, Parsed as HttpParsed, Request};
use crate::http::response::Response;
use crate::http::router::{self, Route};
use crate::http::{self, api, Listener};
use crate::protocol::envelope;
use crate::protocol::frame::Frame;
use crate::protocol::handshake::{self, Parsed, UpgradeRequest};
use crate::sse;

/// The routes a connection accepted on `admin` (or the main listener) may use.
pub(super) fn listener_kind(admin: bool, admin_configured: bool) -> Listener {
    match (admin, admin_configured) {
        (true, _) => Listener::Admin,
        (false, true) => Listener::Public,
        (false, false) => Listener::Main,
    }
}

impl Conns {
    /// Queues bytes to an SSE stream, with the same queue limit as WebSocket sessions.
    fn push_sse(&mut self, id: SessionId, bytes: Frame) -> bool {
        let now = self.now;
        let Some(c) = self.slab.get_mut(id.key()) else {
            return false;
        };
        if c.session.id != id || c.phase != Phase::Open || c.dead {
            return false;
        }
        let Wire::Sse { io, .. } = &mut c.wire else {
            return false;
        };
        if io.outbox.is_empty() {
            c.live.last_tx = now;
        }
        let queued = io.outbox.push(bytes);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(id);
        }
        if queued > self.max_queue {
            self.slow.push(id);
        }
        true
    }
}

impl Shard {
    fn limits(&self) -> Limits {
        let cfg = self.cfg();
        Limits {
            max_header_bytes: cfg.max_header_bytes,
            max_body_bytes: cfg.max_request_body_bytes,
        }
    }

    /// Reads what the socket has, then answers every complete request in the buffer.
    pub(super) fn read_http(&mut self, id: SessionId) {
        let limits = self.limits();
        // One request can be no larger than this; reading further before answering it would
        // let a client make the server buffer without bound.
        let cap = limits.max_header_bytes + limits.max_body_bytes + 4096;
        let Some(c) = self.conns.get(id) else { return };
        let Wire::Http { io, buf } = &mut c.wire else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let mut eof = false;
        let mut more = false;
        loop {
            if buf.len() >= cap {
                more = true;
                break;
            }
            match io.tcp.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    if c.http.requests == 0 {
                        self.stats.handshake_failures.add(1);
                    }
                    self.conns.kill(id);
                    return;
                }
            }
        }
        self.process_http(id);
        let now = self.conns.now;
        let Some(c) = self.conns.get(id) else { return };
        if eof {
            if !matches!(c.wire, Wire::Http { .. }) {
                return; // upgraded: the WebSocket path sees the end on its next read
            }
            if c.http.requests == 0 {
                c.ended(1006, "closed during handshake");
                self.stats.handshake_failures.add(1);
            }
            // The peer may have half-closed after its last request: answers still go out.
            if c.io().is_some_and(|io| !io.outbox.is_empty()) {
                c.drop_when_flushed = true;
                c.phase = Phase::Closing { since: now };
            } else {
                self.conns.kill(id);
            }
        } else if more && matches!(c.wire, Wire::Http { .. }) {
            // Input left unread with edge-triggered readiness: come back next iteration.
            self.ready.push(id);
        }
    }

    /// Answers the complete requests at the head of the buffer, in order.
    fn process_http(&mut self, id: SessionId) {
        let limits = self.limits();
        loop {
            let max = self.cfg().max_header_bytes;
            let paths = self.ws_paths;
            let Some(c) = self.conns.get(id) else { return };
            if c.drop_when_flushed || !matches!(c.phase, Phase::Handshake { .. }) {
                return; // answering a `Connection: close` request ends the input
            }
            let listener = c.http.listener;
            let Wire::Http { buf, .. } = &mut c.wire else {
                return;
            };
            if buf.is_empty() {
                return;
            }
            match request::parse(buf, limits) {
                HttpParsed::Partial => return,
                HttpParsed::Upgrade if listener == Listener::Admin => {
                    let r = Response::error(404, "not_found", "no WebSockets on this listener");
                    return self.http_respond(id, &r, false);
                }
                // The upgrade path is `protocol::handshake`'s, refusals and all.
                HttpParsed::Upgrade => match handshake::parse(buf, max, paths) {
                    Parsed::Partial => return,
                    Parsed::Upgrade(req) => return self.upgrade(id, req),
                    Parsed::Respond(resp) => return self.respond_and_close(id, &resp),
                },
                HttpParsed::Refuse(resp) => {
                    if c.http.requests == 0 {
                        self.stats.handshake_failures.add(1);
                    }
                    if resp.status == 431 {
                        self.stats.oversized_headers.add(1);
                    }
                    return self.http_respond(id, &resp, false);
                }
                HttpParsed::Complete(req, used) => {
                    buf.drain(..used);
                    c.http.requests = c.http.requests.saturating_add(1);
                    self.http_request(id, req, listener);
                }
            }
        }
    }

    /// Routes and answers one request.
    fn http_request(&mut self, id: SessionId, mut req: Request, listener: Listener) {
        self.stats.http_requests.add(1);
        let keep = req.keep_alive && self.draining.is_none();
        if req.method == "GET"
            && listener != Listener::Admin
            && self.ws_paths.contains(&req.path.as_str())
        {
            let r = Response::error(
                426,
                "upgrade_required",
                "this endpoint expects a WebSocket upgrade",
            )
            .with_header("Upgrade", "websocket");
            return self.http_respond(id, &r, keep);
        }
        let route = match router::route(&req.method, &req.path) {
            Ok(r) if listener.serves(&r) => r,
            Ok(_) => {
                let r = Response::error(404, "not_found", "no such route on this listener");
                return self.http_respond(id, &r, keep);
            }
            Err(e) => return self.http_respond(id, &http::route_error(&e), keep),
        };
        if let Err(r) = http::authorize(self.cfg(), &route, &req) {
            return self.http_respond(id, &r, keep);
        }
        if route == Route::Sse {
            return self.open_sse(id, &req);
        }
        let resp = api::handle(&self.hub, route, &mut req, self.draining.is_some());
        if resp.status == 400 {
            self.stats.bad_requests.add(1);
        }
        self.http_respond(id, &resp, keep);
    }

    /// Queues a response; keeps the connection waiting for the next request, or closes it
    /// once the response is written.
    fn http_respond(&mut self, id: SessionId, resp: &Response, keep_alive: bool) {
        let now = self.conns.now;
        let t = self.timeouts;
        let Some(c) = self.conns.get(id) else { return };
        let Some(io) = c.io() else { return };
        io.outbox.push(resp.to_bytes(keep_alive).into());
        if keep_alive {
            c.phase = Phase::Handshake { since: now };
            self.conns.touch(id);
            self.arm(id, now + t.handshake);
        } else {
            c.phase = Phase::Closing { since: now };
            c.drop_when_flushed = true;
            self.conns.touch(id);
            self.arm(id, now + t.close_grace);
        }
    }

    // ----- Server-Sent Events -----

    /// Admits an SSE subscriber exactly as a WebSocket upgrade is admitted (origin, then the
    /// authenticator or `?user=`), and checks it may join `room`: `Err` refuses the stream with
    /// that response.
    fn sse_admit(&self, room: &str, req: &Request) -> Result<crate::auth::Admitted, Response> {
        let as_upgrade = UpgradeRequest {
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            accept: String::new(),
            consumed: 0,
        };
        let admitted = self.hub.shared.gate.admit(&as_upgrade).map_err(|r| {
            let plain = r.response();
            let code = match plain.status {
                401 => "unauthorized",
                403 => "forbidden",
                _ => "bad_request",
            };
            let mut resp = Response::error(plain.status, code, &plain.body);
            if plain.status == 401 {
                resp.headers.push(("WWW-Authenticate", "Bearer".into()));
            }
            resp
        })?;
        if !admitted.permissions.join.allows(room) {
            let msg = format!("not allowed to read room {room}");
            return Err(Response::error(403, "forbidden", &msg));
        }
        Ok(admitted)
    }

    /// Turns the connection into an event stream of `room`.
    fn open_sse(&mut self, id: SessionId, req: &Request) {
        let max_name = self.cfg().max_name_bytes;
        let bad = |m: &str| Response::error(400, "bad_request", m);
        let Some(room) = req.query_param("room") else {
            return self.http_respond(id, &bad("the room query parameter is required"), false);
        };
        if let Err(e) = envelope::check_name("room", &room, max_name) {
            return self.http_respond(id, &bad(&e.0), false);
        }
        if self.draining.is_some() {
            let r = Response::error(503, "shutting_down", "the server is shutting down");
            return self.http_respond(id, &r, false);
        }
        let admitted = match self.sse_admit(&room, req) {
            Ok(a) => a,
            Err(r) => {
                self.stats.auth_failures.add(u64::from(r.status == 401));
                return self.http_respond(id, &r, false);
            }
        };
        let user: Arc<str> = admitted.user.unwrap_or_else(|| format!("anon-{id}").into());
        let joined = match self.hub.shared.directory.join(&room, id, &user) {
            Ok(j) => j,
            Err(JoinError::Full { capacity }) => {
                let msg = format!("room {room} is full (capacity {capacity})");
                let r = Response::error(409, "room_full", &msg);
                return self.http_respond(id, &r, false);
            }
        };
        let now = self.conns.now;
        let Some(c) = self.conns.get(id) else { return };
        let Wire::Http { mut io, .. } = mem::replace(&mut c.wire, Wire::Moved) else {
            return;
        };
        io.outbox.push(sse::response_head().into());
        c.wire = Wire::Sse { io, last_beat: now };
        c.phase = Phase::Open;
        c.session.user = user;
        c.session.permissions = admitted.permissions;
        c.session.rooms.push(joined.room.name.clone());
        self.rooms.add(&joined.room, id);
        self.sse.add(&joined.room.name, id);
        joined.room.events.watch();
        self.stats.sse_connections.add(1);
        let last = req
            .header("last-event-id")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(last) = last {
            for (seq, f) in joined.room.events.since(last) {
                let ev: Frame = sse::event(seq, sse::ws_payload(&f)).into();
                self.conns.push_sse(id, ev);
            }
        }
        self.conns.touch(id);
        let beat = self.sse_beat_ticks();
        self.arm(id, now + beat);
    }

    fn sse_beat_ticks(&self) -> u64 {
        let cfg = self.cfg();
        (cfg.sse_heartbeat.as_nanos() / cfg.tick.as_nanos()).max(1) as u64
    }

    /// Queues a room's `message` event (`seq` > 0) to this shard's streams of the room: encoded
    /// once here, shared by all of them.
    pub(super) fn sse_deliver(&mut self, room: &str, seq: u64, f: &Frame) {
        if seq == 0 {
            return;
        }
        let Some(list) = self.sse.get(room) else {
            return;
        };
        let ev: Frame = sse::event(seq, sse::ws_payload(f)).into();
        let mut n = 0;
        for &m in list {
            n += u64::from(self.conns.push_sse(m, ev.clone()));
        }
        self.stats.sse_events.add(n);
    }

    /// Streams only send; input is read and dropped, and the end of it ends the stream.
    pub(super) fn read_sse(&mut self, id: SessionId) {
        let Some(c) = self.conns.get(id) else { return };
        let Some(io) = c.io() else { return };
        let mut chunk = [0u8; 1024];
        loop {
            match io.tcp.read(&mut chunk) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        c.ended(1006, "stream closed");
        self.conns.kill(id);
    }

    /// Handles an expired timer of a stream or a kept-alive HTTP connection; returns `false`
    /// for the connections the ordinary liveness policy handles.
    pub(super) fn web_timer(&mut self, id: SessionId) -> bool {
        let now = self.conns.now;
        let t = self.timeouts;
        let beat = self.sse_beat_ticks();
        let Some(c) = self.conns.get(id) else {
            return true;
        };
        let last_tx = c.live.last_tx;
        let requests = c.http.requests;
        let phase = c.phase;
        match &mut c.wire {
            Wire::Sse { io, last_beat } => {
                let queued = !io.outbox.is_empty();
                match sse::check(*last_beat, last_tx, queued, now, beat, t.write_stall) {
                    sse::Verdict::Beat(due) => {
                        *last_beat = now;
                        self.conns.push_sse(id, Arc::from(sse::HEARTBEAT));
                        self.arm(id, due);
                    }
                    sse::Verdict::Wait(due) => self.arm(id, due),
                    sse::Verdict::Stalled => self.conns.slow.push(id),
                }
                true
            }
            Wire::Http { buf, .. } if requests > 0 => {
                let Phase::Handshake { since } = phase else {
                    return false;
                };
                let due = since + t.handshake;
                if now < due {
                    self.arm(id, due);
                } else if buf.is_empty() {
                    // Idle between requests: close without a 408 (browsers show those).
                    self.conns.kill(id);
                } else {
                    return false; // a request started and stalled: the ordinary 408
                }
                true
            }
            _ => false,
        }
    }

    /// A stream was removed: leave its room everywhere.
    pub(super) fn sse_gone(&mut self, id: SessionId, c: &mut super::conn::Conn) {
        for room in mem::take(&mut c.session.rooms) {
            self.sse.remove(&room, id);
            self.rooms.remove(&room, id);
            self.hub.shared.directory.leave(&room, id);
        }
        self.stats.sse_connections.sub(1);
    }

    /// Records that this shard's reactor is turning, for `/ready`.
    pub(super) fn heartbeat(&self) {
        let ms = self.hub.shared.started.elapsed().as_millis() as u64;
        if let Some(h) = self.hub.shared.heartbeats.get(self.index) {
            h.store(ms, Ordering::Relaxed);
        }
    }
}
