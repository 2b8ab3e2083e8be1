//! The IO driver: one reactor thread per core, owning its connections outright.
//!
//! Each iteration of [`Shard::run`]: poll (mio, edge-triggered) → accept → read each ready
//! connection until `WouldBlock` or its budget → drain the inbox → fire due timers → flush every
//! connection that got output (one `writev` per connection, however many frames it got) →
//! remove the dead. Handlers only queue frames; nothing writes to a socket in the middle of an
//! event, so frames for one connection coalesce into one write.
//!
//! Invariants:
//! * A connection is addressed by its [`SessionId`] (slab key + shard + sequence). Events,
//!   timers and inbox messages carrying an id whose sequence no longer matches the slot are
//!   stale and ignored.
//! * Connections are removed only at the end of an iteration (`reap`), never while a handler
//!   may still hold their key.
//! * The shard never blocks: sockets are non-blocking, the inbox is drained with `try_recv`, and
//!   messages to other shards use `try_send` (a full inbox drops and counts).

pub(crate) mod bus;
pub(crate) mod conn;
mod contain;
pub(crate) use contain::panic_message;
mod guard;
pub(crate) mod listener;
mod web;

use std::collections::HashMap;
use std::io;
use std::mem;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;
use slab::Slab;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message as WsMessage, WebSocket};

use crate::engine::directory::{JoinError, RoomShared, SessionInfo};
use crate::engine::ids::SessionId;
use crate::engine::liveness::{Phase, Timeouts, Verdict};
use crate::engine::rooms::LocalRooms;
use crate::engine::timer::{Expired, TimerWheel};
use crate::hooks::{Action, Context, Flow, Message, Request, SessionError};
use crate::hub::Hub;
use crate::metrics::{Histograms, ShardStats};
use crate::protocol::envelope::{self, BinaryKind, BinaryOp, Envelope, Request as Req};
use crate::protocol::frame::{self, Frame, FrameBuf, OpCode};
use crate::protocol::handshake::{self, Response, UpgradeRequest};
use crate::protocol::reply::{self, Ack};
use crate::session::Session;
use bus::{Inbox, ShardMsg};
use conn::{Conn, Wire};
use guard::Act;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// The `admin_listen` listener (shard 0 only).
const ADMIN: Token = Token(usize::MAX - 2);

/// Messages read from one connection before the shard turns to others. Keeps one chatty client
/// from delaying everyone else's reads; the rest is read on the next iteration.
const READ_BUDGET: usize = 64;

/// Connections accepted per listener event before other work gets a turn.
const ACCEPT_BUDGET: usize = 256;

/// Local recipients above which a frame from another shard is copied into this shard's own
/// allocation first: one memcpy instead of a reference-count cache line bouncing between cores
/// for every recipient.
const LOCAL_COPY_THRESHOLD: usize = 8;

/// The connections of a shard and the bookkeeping that delivering to them needs.
struct Conns {
    slab: Slab<Conn>,
    /// Connections with output queued since the last flush.
    dirty: Vec<SessionId>,
    /// The previous `dirty` list, emptied, kept for its capacity.
    dirty_spare: Vec<SessionId>,
    /// Connections whose outbox went over `max_queue_bytes`.
    slow: Vec<SessionId>,
    /// Connections to remove at the end of the iteration.
    reap: Vec<SessionId>,
    max_queue: usize,
    now: u64,
    /// Nanoseconds on the limits' clock (see `guard`), read with `now`.
    now_ns: u64,
}

impl Conns {
    fn get(&mut self, id: SessionId) -> Option<&mut Conn> {
        self.slab
            .get_mut(id.key())
            .filter(|c| c.session.id == id && !c.dead)
    }

    /// Queues a frame to an open session; returns whether it was queued.
    fn push(&mut self, id: SessionId, frame: Frame) -> bool {
        let Some(c) = self.slab.get_mut(id.key()) else {
            return false;
        };
        if c.session.id != id {
            return false;
        }
        Self::enqueue(
            c,
            frame,
            self.now,
            self.max_queue,
            &mut self.dirty,
            &mut self.slow,
        )
    }

    /// Queues a frame to every open WebSocket session but `exclude`; returns how many.
    fn push_all(&mut self, frame: &Frame, exclude: Option<SessionId>) -> u64 {
        let (now, max) = (self.now, self.max_queue);
        let mut n = 0;
        for (_, c) in self.slab.iter_mut() {
            if Some(c.session.id) != exclude
                && Self::enqueue(c, frame.clone(), now, max, &mut self.dirty, &mut self.slow)
            {
                n += 1;
            }
        }
        n
    }

    /// The one place a frame joins a connection's outbox: open WebSockets only, dirty-listed
    /// once per flush, slow-listed past `max_queue` bytes.
    fn enqueue(
        c: &mut Conn,
        frame: Frame,
        now: u64,
        max_queue: usize,
        dirty: &mut Vec<SessionId>,
        slow: &mut Vec<SessionId>,
    ) -> bool {
        if c.phase != Phase::Open || c.dead {
            return false;
        }
        let Wire::Ws(ws) = &mut c.wire else {
            return false;
        };
        let io = ws.get_mut();
        if io.outbox.is_empty() {
            c.live.last_tx = now;
        }
        let queued = io.outbox.push(frame);
        if !c.dirty {
            c.dirty = true;
            dirty.push(c.session.id);
        }
        if queued > max_queue {
            slow.push(c.session.id);
        }
        true
    }

    /// Marks a connection as having output to flush (bytes tungstenite wrote into the outbox).
    fn touch(&mut self, id: SessionId) {
        if let Some(c) = self.get(id) {
            if !c.dirty && c.io().is_some_and(|io| !io.outbox.is_empty()) {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn kill(&mut self, id: SessionId) {
        if let Some(c) = self.get(id) {
            c.dead = true;
            self.reap.push(id);
        }
    }
}

/// One reactor thread's state. See the module docs.
pub(crate) struct Shard {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    inbox: Inbox,
    hub: Hub,
    /// This shard's copy of the application's hooks: cloning an `Rc` to call one while the
    /// shard is borrowed costs a plain increment, where cloning `Hooks` would copy its handler
    /// map for every message.
    hooks: Rc<crate::hooks::Hooks>,
    stats: Arc<ShardStats>,
    conns: Conns,
    rooms: LocalRooms,
    /// This shard's SSE streams per room, and its `admin_listen` listener (`web.rs`).
    sse: crate::sse::SseMembers,
    admin: Option<TcpListener>,
    /// This shard's sessions per user, for direct messages.
    users: HashMap<Arc<str>, Vec<SessionId>>,
    wheel: TimerWheel,
    timeouts: Timeouts,
    ws_config: WebSocketConfig,
    ws_paths: &'static [&'static str],
    seq: u64,
    start: Instant,
    /// Connections that still had input when their read budget ran out.
    ready: Vec<SessionId>,
    /// The previous `ready` list, emptied, kept for its capacity.
    ready_spare: Vec<SessionId>,
    /// Messages taken from the inbox in one drain, kept for its capacity.
    inbox_buf: Vec<ShardMsg>,
    expired: Vec<Expired>,
    actions: Vec<crate::hooks::Action>,
    fb: FrameBuf,
    scratch: Vec<u8>,
    json: simd_json::Buffers,
    /// Set when accept hit the file limit: retry on the next tick.
    accept_paused: bool,
    /// A descriptor held back so that, out of descriptors, the shard can still accept a client
    /// to tell it 503 instead of leaving it to time out in the backlog.
    reserve_fd: Option<std::fs::File>,
    last_accept_warning: Option<Instant>,
    /// When a contained panic was last logged, and the panics since (`contain.rs`).
    last_panic_log: Option<Instant>,
    panics_unlogged: u64,
    /// Set once shutdown began: the deadline for the drain.
    draining: Option<Instant>,
    /// Publishes and broadcasts handled in this iteration (for the fan-out histogram).
    fanouts: u64,
    /// This shard's histograms since the last merge into the shared ones.
    hist: Histograms,
}

impl Shard {
    /// A shard around an already bound listener. Call [`run`](Self::run) on its thread.
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        mut listener: TcpListener,
        mut admin: Option<TcpListener>,
        inbox: Inbox,
        hub: Hub,
    ) -> io::Result<Self> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        if let Some(a) = &mut admin {
            poll.registry().register(a, ADMIN, Interest::READABLE)?;
        }
        let cfg = hub.config().clone();
        let tick = cfg.tick;
        let ticks = |d: Duration| (d.as_nanos() / tick.as_nanos()).max(1) as u64;
        let timeouts = Timeouts {
            handshake: ticks(cfg.handshake_timeout),
            ping_interval: ticks(cfg.ping_interval),
            pong_timeout: ticks(cfg.pong_timeout),
            write_stall: ticks(cfg.write_stall_timeout),
            close_grace: ticks(cfg.close_timeout),
        };
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(cfg.read_buffer_bytes)
            .write_buffer_size(0)
            .max_message_size(Some(cfg.max_message_bytes))
            .max_frame_size(Some(cfg.max_message_bytes));
        let stats = hub.shared.stats[index].clone();
        // Reserving the slab up front costs address space, not memory (untouched pages are not
        // resident), and spares a reallocation-and-copy of every connection as the shard fills.
        let slab = Slab::with_capacity(cfg.max_connections_per_shard.min(1 << 17));
        Ok(Self {
            index,
            poll,
            listener: Some(listener),
            inbox,
            stats,
            conns: Conns {
                slab,
                dirty: Vec::new(),
                dirty_spare: Vec::new(),
                slow: Vec::new(),
                reap: Vec::new(),
                max_queue: cfg.max_queue_bytes,
                now: 0,
                now_ns: 0,
            },
            rooms: LocalRooms::new(index),
            sse: Default::default(),
            admin,
            users: HashMap::new(),
            // 1024 slots of 100 ms: one rotation covers the 45 s default heartbeat deadline.
            wheel: TimerWheel::new(1024, 0),
            timeouts,
            ws_config,
            ws_paths: if cfg.echo { &["/ws", "/"] } else { &["/ws"] },
            seq: 0,
            start: Instant::now(),
            ready: Vec::new(),
            ready_spare: Vec::new(),
            inbox_buf: Vec::new(),
            expired: Vec::new(),
            actions: Vec::new(),
            fb: FrameBuf::default(),
            scratch: Vec::new(),
            json: simd_json::Buffers::default(),
            accept_paused: false,
            reserve_fd: std::fs::File::open("/dev/null").ok(),
            last_accept_warning: None,
            last_panic_log: None,
            panics_unlogged: 0,
            draining: None,
            fanouts: 0,
            hist: Histograms::default(),
            hooks: Rc::new(hub.shared.hooks.clone()),
            hub,
        })
    }

    fn cfg(&self) -> &crate::config::Config {
        &self.hub.shared.config
    }

    fn tick_of(&self, t: Instant) -> u64 {
        (t.duration_since(self.start).as_nanos() / self.cfg().tick.as_nanos()) as u64
    }

    /// The reactor loop; returns after a shutdown has drained.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if !self.ready.is_empty() || self.inbox.has_backlog() {
                Duration::ZERO
            } else {
                // Sleep until the next tick boundary.
                let next = self.start + self.cfg().tick * (self.wheel.now() as u32 + 1);
                next.saturating_duration_since(Instant::now())
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let woke = Instant::now();
            self.conns.now = self.tick_of(woke);
            self.conns.now_ns = self.limit_clock(woke);

            let mut wake = false;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    ADMIN => self.accept_from(true),
                    WAKER => wake = true,
                    Token(t) => {
                        let id = SessionId(t as u64);
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.contain(Some(id), |s| s.read(id));
                        }
                        if ev.is_writable() {
                            self.conns.touch(id);
                        }
                    }
                }
            }
            // Swap in the spare list so reads may queue again; both keep their capacity.
            let mut ready = mem::replace(&mut self.ready, mem::take(&mut self.ready_spare));
            for &id in &ready {
                self.contain(Some(id), |s| s.read(id));
            }
            ready.clear();
            self.ready_spare = ready;
            if wake || self.inbox.has_backlog() {
                self.drain_inbox();
            }
            self.fire_timers();
            self.handle_slow();
            self.flush();
            self.reap();
            let busy = woke.elapsed();
            Histograms::record(&mut self.hist.tick, busy, 1);
            if self.fanouts > 0 {
                Histograms::record(&mut self.hist.fanout, busy, self.fanouts);
                self.fanouts = 0;
            }

            if let Some(deadline) = self.draining {
                if self.conns.slab.is_empty() || Instant::now() >= deadline {
                    self.finish();
                    return Ok(());
                }
            }
        }
    }

    // ----- accept and handshake -----

    fn accept(&mut self) {
        self.accept_from(false);
    }

    /// Accepts from the main listener, or from the `admin_listen` one (`admin`).
    fn accept_from(&mut self, admin: bool) {
        let listener = if admin { &self.admin } else { &self.listener };
        let Some(listener) = listener else {
            return;
        };
        let shared = &self.hub.shared;
        for _ in 0..ACCEPT_BUDGET {
            let (mut tcp, addr) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors (EMFILE/ENFILE): the kernel keeps the clients
                    // queued, where they would wait for a timeout. Spend the reserve descriptor
                    // to tell them (503), and look again on the next tick.
                    if self
                        .last_accept_warning
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                    {
                        log::warn!(
                            "shard {}: accept failed: {e}; refusing new clients with 503",
                            self.index
                        );
                        self.last_accept_warning = Some(Instant::now());
                    }
                    self.reserve_fd = None;
                    // Bounded like any accept round: a flood waits for the next tick.
                    for _ in 0..ACCEPT_BUDGET {
                        let Ok((mut tcp, _)) = listener.accept() else {
                            break;
                        };
                        let _ = io::Write::write(
                            &mut tcp,
                            &Response::new(503, "server at its open-file limit").to_bytes(),
                        );
                        self.stats.handshake_failures.add(1);
                    }
                    self.reserve_fd = std::fs::File::open("/dev/null").ok();
                    self.accept_paused = true;
                    return;
                }
            };
            self.stats.accepted.add(1);
            let _ = tcp.set_nodelay(true);
            let cfg = &shared.config;
            // Counted at accept, not at the upgrade, so that connections still handshaking
            // cannot overshoot the limit.
            let over_total = shared.open.fetch_add(1, Ordering::Relaxed) >= cfg.max_connections;
            if over_total || self.conns.slab.len() >= cfg.max_connections_per_shard {
                shared.open.fetch_sub(1, Ordering::Relaxed);
                // An empty socket buffer always takes a response this small.
                let _ = io::Write::write(
                    &mut tcp,
                    &Response::new(503, "connection limit reached").to_bytes(),
                );
                self.stats.handshake_failures.add(1);
                continue;
            }
            if !self.admit_ip(&mut tcp, addr) {
                continue;
            }
            let entry = self.conns.slab.vacant_entry();
            self.seq += 1;
            let id = SessionId::new(self.seq, self.index, entry.key());
            if let Err(e) = self.poll.registry().register(
                &mut tcp,
                Token(id.0 as usize),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("shard {}: register failed: {e}", self.index);
                shared.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let now = self.conns.now;
            let mut conn = Conn::new(tcp, Session::new(id, addr), now);
            conn.http.listener = web::listener_kind(admin, cfg.admin_listen.is_some());
            conn.timer_due = self.wheel.schedule(id.0, now + self.timeouts.handshake);
            entry.insert(conn);
        }
        // Budget used up with connections possibly still queued: edge-triggered readiness will
        // not fire again for them, so come back next iteration.
        self.accept_paused = true;
    }

    fn read(&mut self, id: SessionId) {
        let Some(c) = self.conns.get(id) else { return };
        match c.wire {
            Wire::Http { .. } => self.read_http(id),
            Wire::Ws(_) => self.read_ws(id),
            Wire::Sse { .. } => self.read_sse(id),
            Wire::Moved => {}
        }
    }

    /// Sends a plain HTTP response and closes once it is written.
    fn respond_and_close(&mut self, id: SessionId, resp: &Response) {
        if resp.status != 200 {
            self.stats.handshake_failures.add(1);
        }
        if resp.status == 431 {
            self.stats.oversized_headers.add(1);
        }
        let now = self.conns.now;
        let Some(c) = self.conns.get(id) else { return };
        let Some(io) = c.io() else { return };
        io.outbox.push(resp.to_bytes().into());
        c.phase = Phase::Closing { since: now };
        c.drop_when_flushed = true;
        self.conns.touch(id);
        self.arm(id, now + self.timeouts.close_grace);
    }

    fn upgrade(&mut self, id: SessionId, req: UpgradeRequest) {
        let cfg = &self.hub.shared.config;
        if self.draining.is_some() {
            return self.respond_and_close(id, &Response::new(503, "server shutting down"));
        }
        let admitted = match self.hub.shared.gate.admit(&req) {
            Ok(a) => a,
            Err(refusal) => {
                match refusal {
                    crate::auth::Refusal::Origin(_) => self.stats.origin_refusals.add(1),
                    crate::auth::Refusal::Unauthenticated(_) => self.stats.auth_failures.add(1),
                    _ => {}
                }
                return self.respond_and_close(id, &refusal.response());
            }
        };
        let user: Arc<str> = admitted.user.unwrap_or_else(|| format!("anon-{id}").into());
        let rate = crate::engine::ratelimit::RateLimiter::new(
            &self.hub.shared.gate.rates,
            self.conns.now_ns,
        );
        let echo = cfg.echo;
        let hooks = Rc::clone(&self.hooks);
        let ws_config = self.ws_config;
        let now = self.conns.now;
        let Some(c) = self.conns.get(id) else { return };
        c.session.user = user;
        c.session.permissions = admitted.permissions;
        c.rate = rate;
        if let Some(on_connect) = &hooks.on_connect {
            if let Err(r) = on_connect(&req, &mut c.session) {
                let resp = Response::new(r.status, r.reason);
                return self.respond_and_close(id, &resp);
            }
            // A user id the hook chose (often from the request) follows the same rules.
            if let Err(e) = envelope::check_name("user", &c.session.user, cfg.max_name_bytes) {
                return self.respond_and_close(id, &Response::new(400, e.0));
            }
        }
        let Wire::Http { mut io, buf } = mem::replace(&mut c.wire, Wire::Moved) else {
            return;
        };
        io.outbox
            .push(handshake::switching_protocols(&req.accept, admitted.subprotocol).into());
        let early = buf.get(req.consumed..).unwrap_or_default().to_vec();
        c.wire = Wire::Ws(WebSocket::from_partially_read(
            io,
            early,
            Role::Server,
            Some(ws_config),
        ));
        c.phase = Phase::Open;
        c.announced = true;
        c.live.received(now);
        let user = c.session.user.clone();
        let addr = c.session.addr;
        self.stats.handshakes.add(1);
        self.stats.connections.add(1);
        self.hub.shared.directory.add_session(SessionInfo {
            id,
            user: user.clone(),
            addr,
        });
        self.users.entry(user.clone()).or_default().push(id);
        if !echo {
            let out = self.fb.start();
            reply::welcome(out, id.0, &user, self.index);
            let f = self.fb.finish(OpCode::Text);
            self.conns.push(id, f);
        }
        self.conns.touch(id);
        if let Some(on_open) = &hooks.on_open {
            self.with_context(id, |ctx| on_open(ctx));
        }
        let due = self.conns.now + self.timeouts.ping_interval;
        self.arm(id, due);
        // Frames may have arrived with the request.
        self.read_ws(id);
    }

    // ----- WebSocket input -----

    fn read_ws(&mut self, id: SessionId) {
        let now = self.conns.now;
        for _ in 0..READ_BUDGET {
            let Some(c) = self.conns.get(id) else { return };
            // Only the queued close frame is left to send (see `on_ws_error`).
            if c.drop_when_flushed {
                return;
            }
            let Wire::Ws(ws) = &mut c.wire else { return };
            let result = ws.read();
            // tungstenite may have queued a pong or close reply into the outbox.
            self.conns.touch(id);
            match result {
                Ok(msg) => {
                    let Some(c) = self.conns.get(id) else { return };
                    c.live.received(now);
                    let closing = c.phase != Phase::Open;
                    match msg {
                        WsMessage::Text(t) if !closing => self.on_text(id, t.as_str()),
                        WsMessage::Binary(b) if !closing => self.on_binary(id, &b),
                        WsMessage::Close(cf) => {
                            let (code, reason) = cf.map_or((1005, String::new()), |f| {
                                (f.code.into(), f.reason.to_string())
                            });
                            c.ended(code, &reason);
                        }
                        _ => {}
                    }
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {
                    continue
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    // The close handshake is complete; our reply (if any) is in the outbox.
                    let Some(c) = self.conns.get(id) else { return };
                    c.ended(1006, "");
                    c.drop_when_flushed = true;
                    if matches!(c.phase, Phase::Open) {
                        c.phase = Phase::Closing { since: now };
                    }
                    self.conns.touch(id);
                    self.arm(id, now + self.timeouts.close_grace);
                    return;
                }
                Err(e) => return self.on_ws_error(id, e),
            }
        }
        self.ready.push(id);
    }

    /// Maps a tungstenite error to the RFC close code and closes, or drops a dead socket.
    fn on_ws_error(&mut self, id: SessionId, e: tungstenite::Error) {
        use tungstenite::error::ProtocolError;
        let (code, reason): (u16, String) = match &e {
            tungstenite::Error::Capacity(c) => (1009, c.to_string()),
            tungstenite::Error::Utf8(_) => (1007, "invalid UTF-8 in text message".into()),
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                if let Some(c) = self.conns.get(id) {
                    c.ended(1006, "connection reset");
                }
                return self.conns.kill(id);
            }
            tungstenite::Error::Protocol(p) => (1002, p.to_string()),
            tungstenite::Error::Io(io) => {
                let err = SessionError::Io(io.to_string());
                self.report_error(id, &err);
                if let Some(c) = self.conns.get(id) {
                    c.ended(1006, "socket error");
                }
                return self.conns.kill(id);
            }
            other => (1011, other.to_string()),
        };
        let already_closing = self.conns.get(id).is_some_and(|c| c.phase != Phase::Open);
        if already_closing {
            // A second fault after our close frame: stop waiting for the peer.
            return self.conns.kill(id);
        }
        if code != 1011 {
            self.stats.protocol_errors.add(1);
        }
        self.report_error(id, &SessionError::Protocol(reason.clone()));
        self.close_with(id, code, &reason);
        if matches!(e, tungstenite::Error::Capacity(_)) {
            // tungstenite keeps the header of a frame over the limit, and the next read trips
            // its internal assertion (a panic in debug builds) or takes its full buffer for a
            // reset: nothing after that header can be parsed. Send the 1009 and drop the socket
            // (found by the frame_reader fuzz target).
            if let Some(c) = self.conns.get(id) {
                c.drop_when_flushed = true;
            }
        }
    }

    fn report_error(&mut self, id: SessionId, err: &SessionError) {
        let hooks = Rc::clone(&self.hooks);
        if let (Some(on_error), Some(c)) = (&hooks.on_error, self.conns.get(id)) {
            on_error(&c.session, err);
        }
    }

    /// Starts a server-side close: the close frame goes after what is queued, then the socket
    /// is dropped when the peer answers, or after `close_timeout`.
    fn close_with(&mut self, id: SessionId, code: u16, reason: &str) {
        let now = self.conns.now;
        let Some(c) = self.conns.get(id) else { return };
        c.ended(code, reason);
        match &mut c.wire {
            Wire::Ws(ws) if c.phase == Phase::Open => {
                let mut end = reason.len().min(123);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason[..end].to_string().into(),
                };
                // Writes go to the outbox and cannot block; an error means it is already closed.
                let _ = ws.close(Some(frame));
                c.phase = Phase::Closing { since: now };
            }
            Wire::Ws(_) => {}
            _ => {
                c.dead = true;
                self.conns.reap.push(id);
                return;
            }
        }
        self.conns.touch(id);
        self.arm(id, now + self.timeouts.close_grace);
    }

    // ----- the hub protocol -----

    fn on_text(&mut self, id: SessionId, text: &str) {
        self.stats.messages_in.add(1);
        self.stats.bytes_in.add(text.len() as u64);
        if !self.admit_message(id, text.len(), false) {
            return;
        }
        if self.cfg().echo {
            self.conns
                .push(id, frame::encode(OpCode::Text, text.as_bytes()));
            return;
        }
        let hooks = Rc::clone(&self.hooks);
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
        // The DOM borrows `scratch`, not the buffers, so those are used in place.
        let max_depth = self.cfg().max_json_depth;
        match envelope::parse_value(&mut scratch, &mut self.json, max_depth) {
            Err(e) => self.error(id, None, "bad_request", &e.0, None),
            Ok(v) => match envelope::parse_envelope(&v, self.cfg().max_name_bytes) {
                Err(e) => {
                    let req_id = v.get("id").filter(|i| i.is_str() || i.is_number());
                    self.error(id, req_id, "bad_request", &e.0, None);
                }
                Ok(env) => {
                    if let Some(h) = hooks.handlers.get(env.kind) {
                        let req = Request {
                            kind: env.kind,
                            text,
                            value: &v,
                            id: env.id,
                        };
                        self.with_context(id, |ctx| h(ctx, &req));
                    } else {
                        self.dispatch(id, env);
                    }
                }
            },
        }
        self.scratch = scratch;
    }

    fn dispatch(&mut self, id: SessionId, env: Envelope<'_>) {
        let req_id = env.id;
        match env.request {
            Req::Join { room } => {
                if self.permit(id, Act::Join(room), req_id, false) {
                    self.join(id, room, req_id);
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
                    return self.not_member(id, req_id, room);
                };
                let out = self.fb.start();
                reply::delivery(out, "message", Some(room), &user, id.0, data);
                let f = self.fb.finish(OpCode::Text);
                self.route_publish(&shared, f, exclude_self.then_some(id));
                if req_id.is_some() {
                    self.ack(id, req_id, Ack::Publish { room });
                }
            }
            Req::Send { to, data } => {
                if !self.permit(id, Act::Send(to), req_id, false) {
                    return;
                }
                let Some(user) = self.conns.get(id).map(|c| c.session.user.clone()) else {
                    return;
                };
                let out = self.fb.start();
                reply::delivery(out, "direct", None, &user, id.0, data);
                let f = self.fb.finish(OpCode::Text);
                match self.route_user(to, f) {
                    0 => self.error(
                        id,
                        req_id,
                        "not_online",
                        &format!("user {to} is not online"),
                        Some(("to", to)),
                    ),
                    n => self.ack(id, req_id, Ack::Send { to, sessions: n }),
                }
            }
            Req::Broadcast { data, exclude_self } => {
                if !self.permit(id, Act::Broadcast, req_id, false) {
                    return;
                }
                let Some(user) = self.conns.get(id).map(|c| c.session.user.clone()) else {
                    return;
                };
                let out = self.fb.start();
                reply::delivery(out, "broadcast", None, &user, id.0, data);
                let f = self.fb.finish(OpCode::Text);
                self.route_all(f, exclude_self.then_some(id));
                if req_id.is_some() {
                    self.ack(id, req_id, Ack::Broadcast);
                }
            }
            Req::Members { room } => {
                if !self.permit(id, Act::Members(room), req_id, false) {
                    return;
                }
                let list = self.hub.shared.directory.members(room).unwrap_or_default();
                let out = self.fb.start();
                reply::members(out, req_id, room, list.iter().map(|(s, u)| (s.0, &**u)));
                let f = self.fb.finish(OpCode::Text);
                self.conns.push(id, f);
            }
            Req::Ping => {
                let out = self.fb.start();
                reply::pong(out, req_id);
                let f = self.fb.finish(OpCode::Text);
                self.conns.push(id, f);
            }
            Req::Other => {
                let msg = format!("unknown request type {}", env.kind);
                self.error(id, req_id, "unknown_type", &msg, None);
            }
        }
    }

    fn on_binary(&mut self, id: SessionId, bytes: &[u8]) {
        self.stats.messages_in.add(1);
        self.stats.bytes_in.add(bytes.len() as u64);
        if !self.admit_message(id, bytes.len(), true) {
            return;
        }
        if self.cfg().echo {
            self.conns.push(id, frame::encode(OpCode::Binary, bytes));
            return;
        }
        let hooks = Rc::clone(&self.hooks);
        if let Some(on_message) = &hooks.on_message {
            if self.with_context(id, |ctx| on_message(ctx, Message::Binary(bytes)))
                == Some(Flow::Handled)
            {
                return;
            }
        }
        let binary_ctx = Some(("op", "binary"));
        let req = match envelope::parse_binary(bytes, self.cfg().max_name_bytes) {
            Ok(r) => r,
            Err(e) => return self.error(id, None, "bad_request", &e.0, binary_ctx),
        };
        let Some(user) = self.conns.get(id).map(|c| c.session.user.clone()) else {
            return;
        };
        match req.op {
            BinaryOp::Publish { exclude_self } => {
                if !self.permit(id, Act::Publish(req.target), None, true) {
                    return;
                }
                let Some((_, shared)) = self.member_room(id, req.target) else {
                    let msg = format!("not a member of room {}", req.target);
                    return self.error(id, None, "not_member", &msg, binary_ctx);
                };
                let out = self.fb.start();
                envelope::write_binary_delivery(
                    out,
                    BinaryKind::Room,
                    req.target,
                    &user,
                    req.payload,
                );
                let f = self.fb.finish(OpCode::Binary);
                self.route_room(&shared, f, exclude_self.then_some(id));
            }
            BinaryOp::Send => {
                if !self.permit(id, Act::Send(req.target), None, true) {
                    return;
                }
                let out = self.fb.start();
                envelope::write_binary_delivery(out, BinaryKind::Direct, "", &user, req.payload);
                let f = self.fb.finish(OpCode::Binary);
                if self.route_user(req.target, f) == 0 {
                    let msg = format!("user {} is not online", req.target);
                    self.error(id, None, "not_online", &msg, binary_ctx);
                }
            }
            BinaryOp::Broadcast { exclude_self } => {
                if !self.permit(id, Act::Broadcast, None, true) {
                    return;
                }
                let out = self.fb.start();
                envelope::write_binary_delivery(out, BinaryKind::Broadcast, "", &user, req.payload);
                let f = self.fb.finish(OpCode::Binary);
                self.route_all(f, exclude_self.then_some(id));
            }
        }
    }

    /// The sender's user id and the room's shared part, if the session is a member.
    fn member_room(&mut self, id: SessionId, room: &str) -> Option<(Arc<str>, Arc<RoomShared>)> {
        let c = self.conns.get(id)?;
        if !c.session.in_room(room) {
            return None;
        }
        let user = c.session.user.clone();
        Some((user, self.rooms.get(room)?.shared.clone()))
    }

    fn not_member(&mut self, id: SessionId, req_id: Option<&Value<'_>>, room: &str) {
        let msg = format!("not a member of room {room}");
        self.error(id, req_id, "not_member", &msg, Some(("room", room)));
    }

    fn join(&mut self, id: SessionId, room: &str, req_id: Option<&Value<'_>>) {
        let cfg = &self.hub.shared.config;
        if let Err(e) = envelope::check_name("room", room, cfg.max_name_bytes) {
            return self.error(id, req_id, "bad_request", &e.0, None);
        }
        let (max_rooms, presence) = (cfg.max_rooms_per_session, cfg.presence);
        let Some(c) = self.conns.get(id) else { return };
        if c.phase != Phase::Open {
            return;
        }
        let in_room = c.session.in_room(room);
        if !in_room && c.session.rooms.len() >= max_rooms {
            let msg = format!("already in {max_rooms} rooms (max_rooms_per_session)");
            return self.error(id, req_id, "too_many_rooms", &msg, Some(("room", room)));
        }
        let user = c.session.user.clone();
        match self.hub.shared.directory.join(room, id, &user) {
            Err(JoinError::Full { capacity }) => {
                let msg = format!("room {room} is full (capacity {capacity})");
                self.error(id, req_id, "room_full", &msg, Some(("room", room)));
            }
            Ok(j) => {
                if !j.already {
                    if let Some(c) = self.conns.get(id) {
                        c.session.rooms.push(j.room.name.clone());
                    }
                    self.rooms.add(&j.room, id);
                }
                self.ack(
                    id,
                    req_id,
                    Ack::Join {
                        room,
                        members: j.members,
                    },
                );
                if presence && !j.already {
                    let out = self.fb.start();
                    reply::presence(out, true, room, &user, id.0);
                    let f = self.fb.finish(OpCode::Text);
                    self.route_presence(&j.room, f, id);
                }
            }
        }
    }

    fn leave(&mut self, id: SessionId, room: &str, req_id: Option<&Value<'_>>) {
        let Some((user, shared)) = self.member_room(id, room) else {
            return self.not_member(id, req_id, room);
        };
        self.leave_room(id, &user, &shared);
        self.ack(id, req_id, Ack::Leave { room });
    }

    /// Removes a member everywhere and tells the others.
    fn leave_room(&mut self, id: SessionId, user: &str, shared: &Arc<RoomShared>) {
        if let Some(c) = self
            .conns
            .slab
            .get_mut(id.key())
            .filter(|c| c.session.id == id)
        {
            c.session.rooms.retain(|r| **r != *shared.name);
        }
        self.rooms.remove(&shared.name, id);
        self.hub.shared.directory.leave(&shared.name, id);
        if self.cfg().presence {
            let out = self.fb.start();
            reply::presence(out, false, &shared.name, user, id.0);
            let f = self.fb.finish(OpCode::Text);
            self.route_presence(shared, f, id);
        }
    }

    fn ack(&mut self, id: SessionId, req_id: Option<&Value<'_>>, what: Ack<'_>) {
        let out = self.fb.start();
        reply::ack(out, req_id, what);
        let f = self.fb.finish(OpCode::Text);
        self.conns.push(id, f);
    }

    fn error(
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
        let f = self.fb.finish(OpCode::Text);
        self.conns.push(id, f);
    }

    // ----- routing -----

    /// Delivers to a room's members here and posts one message to each other shard with members.
    fn route_room(&mut self, shared: &Arc<RoomShared>, f: Frame, exclude: Option<SessionId>) {
        self.route_room_seq(shared, f, exclude, 0);
    }

    /// A member's `message` publish: [`route_room`](Self::route_room) with the room's SSE event
    /// id, so SSE subscribers get it too.
    fn route_publish(&mut self, shared: &Arc<RoomShared>, f: Frame, exclude: Option<SessionId>) {
        let seq = shared.events.record(&f);
        self.route_room_seq(shared, f, exclude, seq);
    }

    fn route_room_seq(
        &mut self,
        shared: &Arc<RoomShared>,
        f: Frame,
        exclude: Option<SessionId>,
        seq: u64,
    ) {
        self.fanouts += 1;
        let mask = shared.shards();
        for s in 0..self.hub.shared.mailboxes.len() {
            if s != self.index && mask & (1 << s) != 0 {
                let msg = ShardMsg::Room {
                    room: shared.name.clone(),
                    frame: f.clone(),
                    exclude,
                    seq,
                };
                self.post(s, msg);
            }
        }
        self.sse_deliver(&shared.name, seq, &f);
        self.deliver_room(&shared.name, f, exclude);
    }

    fn deliver_room(&mut self, room: &str, f: Frame, exclude: Option<SessionId>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut n = 0;
        for &m in &r.members {
            if Some(m) != exclude && self.conns.push(m, f.clone()) {
                n += 1;
            }
        }
        self.stats.deliveries.add(n);
    }

    fn route_all(&mut self, f: Frame, exclude: Option<SessionId>) {
        self.fanouts += 1;
        for s in 0..self.hub.shared.mailboxes.len() {
            if s != self.index {
                self.post(
                    s,
                    ShardMsg::All {
                        frame: f.clone(),
                        exclude,
                    },
                );
            }
        }
        self.deliver_all(f, exclude);
    }

    fn deliver_all(&mut self, f: Frame, exclude: Option<SessionId>) {
        let n = self.conns.push_all(&f, exclude);
        self.stats.deliveries.add(n);
    }

    /// Delivers to every session of a user; returns how many there are server-wide.
    fn route_user(&mut self, user: &str, f: Frame) -> usize {
        let (mask, count) = self.hub.shared.directory.user_shards(user);
        if count == 0 {
            return 0;
        }
        let remote = mask & !(1 << self.index);
        if remote != 0 {
            let name: Arc<str> = Arc::from(user);
            for s in 0..self.hub.shared.mailboxes.len() {
                if remote & (1 << s) != 0 {
                    self.post(
                        s,
                        ShardMsg::User {
                            user: name.clone(),
                            frame: f.clone(),
                        },
                    );
                }
            }
        }
        self.deliver_user(user, f);
        count
    }

    fn deliver_user(&mut self, user: &str, f: Frame) {
        let Some(list) = self.users.get(user) else {
            return;
        };
        let mut n = 0;
        for &s in list {
            n += u64::from(self.conns.push(s, f.clone()));
        }
        self.stats.deliveries.add(n);
    }

    fn post(&self, shard: usize, msg: ShardMsg) {
        if self.hub.shared.mailboxes[shard].send(msg).is_err() {
            self.stats.bus_drops.add(1);
        }
    }

    /// A frame from another shard, copied into a local allocation when many recipients here
    /// would otherwise all bump the sender's reference count.
    fn localize(f: Frame, recipients: usize) -> Frame {
        if recipients >= LOCAL_COPY_THRESHOLD {
            Arc::from(&*f)
        } else {
            f
        }
    }

    fn drain_inbox(&mut self) {
        let mut msgs = mem::take(&mut self.inbox_buf);
        self.inbox.drain(|m| msgs.push(m));
        for m in msgs.drain(..) {
            self.contain(m.session(), |s| s.handle_msg(m));
        }
        self.inbox_buf = msgs;
    }

    /// One message from another thread.
    fn handle_msg(&mut self, m: ShardMsg) {
        match m {
            ShardMsg::Room {
                room,
                frame,
                exclude,
                seq,
            } => {
                self.fanouts += 1;
                self.sse_deliver(&room, seq, &frame);
                let n = self.rooms.get(&room).map_or(0, |r| r.members.len());
                self.deliver_room(&room, Self::localize(frame, n), exclude);
            }
            ShardMsg::Presence {
                room,
                frame,
                exclude,
            } => self.deliver_presence(&room, frame, exclude),
            ShardMsg::All { frame, exclude } => {
                self.fanouts += 1;
                let n = self.conns.slab.len();
                self.deliver_all(Self::localize(frame, n), exclude);
            }
            ShardMsg::User { user, frame } => self.deliver_user(&user, frame),
            ShardMsg::Session { id, frame } => {
                if self.conns.push(id, frame) {
                    self.stats.deliveries.add(1);
                }
            }
            ShardMsg::Close { id, code, reason } => self.close_with(id, code, &reason),
            ShardMsg::Join { id, room } => self.join(id, &room, None),
            ShardMsg::Leave { id, room } => self.leave(id, &room, None),
            ShardMsg::Shutdown => self.begin_shutdown(),
        }
    }

    // ----- hooks -----

    /// Runs a hook with a context on a session, then applies what it asked for.
    fn with_context<R>(
        &mut self,
        id: SessionId,
        f: impl FnOnce(&mut Context<'_>) -> R,
    ) -> Option<R> {
        let mut actions = mem::take(&mut self.actions);
        let hub = self.hub.clone();
        let c = self.conns.get(id)?;
        let r = {
            let mut ctx = Context {
                session: &mut c.session,
                actions: &mut actions,
                hub: &hub,
            };
            f(&mut ctx)
        };
        for a in actions.drain(..) {
            match a {
                Action::Send(frame) => {
                    self.conns.push(id, frame);
                }
                Action::Join(room) => self.join(id, &room, None),
                Action::Leave(room) => self.leave(id, &room, None),
                Action::Close(code, reason) => self.close_with(id, code, &reason),
            }
        }
        self.actions = actions;
        Some(r)
    }

    // ----- timers, flushing, removal -----

    /// Arms the connection's timer for `due` unless it is already armed earlier.
    fn arm(&mut self, id: SessionId, due: u64) {
        if let Some(c) = self.conns.get(id) {
            if due < c.timer_due {
                c.timer_due = self.wheel.schedule(id.0, due);
            }
        }
    }

    fn fire_timers(&mut self) {
        if self.accept_paused {
            self.accept_paused = false;
            self.accept();
            self.accept_from(true);
        }
        let now = self.conns.now;
        if now > self.wheel.now() {
            self.publish_histograms();
            self.heartbeat();
        }
        let mut expired = mem::take(&mut self.expired);
        self.wheel.advance(now, &mut expired);
        for e in expired.drain(..) {
            self.contain(Some(SessionId(e.key)), |s| s.on_timer(e));
        }
        self.expired = expired;
    }

    /// A connection's timer fired.
    fn on_timer(&mut self, e: Expired) {
        let now = self.conns.now;
        let tick = self.cfg().tick;
        let id = SessionId(e.key);
        let t = self.timeouts;
        let Some(c) = self.conns.get(id) else {
            return;
        };
        if c.timer_due != e.due {
            return; // superseded by an earlier deadline
        }
        // A timer due at tick `due` is on time anywhere within that tick.
        let lag = tick * now.saturating_sub(e.due) as u32;
        Histograms::record(&mut self.hist.timer_lag, lag, 1);
        c.timer_due = u64::MAX;
        // SSE streams and kept-alive HTTP connections keep their own time (web.rs).
        if self.web_timer(id) {
            return;
        }
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let queued = c.io().is_some_and(|io| !io.outbox.is_empty());
        let phase = c.phase;
        match c.live.check(phase, queued, now, &t) {
            Verdict::Wait(due) => self.arm(id, due),
            Verdict::Ping(due) => {
                if let Wire::Ws(ws) = &mut c.wire {
                    let _ = ws.write(WsMessage::Ping(Default::default()));
                }
                self.conns.touch(id);
                self.arm(id, due);
            }
            Verdict::HandshakeTimeout => {
                self.stats.handshake_timeouts.add(1);
                self.respond_and_close(id, &Response::new(408, "handshake timeout"));
                if let Some(c) = self.conns.get(id) {
                    c.ended(1006, "handshake timeout");
                }
            }
            Verdict::IdleTimeout => {
                self.stats.heartbeat_timeouts.add(1);
                self.report_error(id, &SessionError::HeartbeatTimeout);
                // The peer is gone or wedged: send 1001 as a courtesy, then drop at once.
                self.close_with(id, 1001, "heartbeat timeout");
                if let Some(c) = self.conns.get(id) {
                    c.disconnect = Some(crate::hooks::Disconnect {
                        code: 1006,
                        reason: "heartbeat timeout".into(),
                    });
                    if let Some(io) = c.io() {
                        let _ = io.flush_outbox();
                    }
                }
                self.conns.kill(id);
            }
            Verdict::WriteStall => {
                self.conns.slow.push(id);
            }
            Verdict::CloseExpired => self.conns.kill(id),
        }
    }

    /// Closes every connection that fell behind: unsent frames are dropped (a torn frame is
    /// finished), a 1008 close follows, and the socket goes after `close_timeout` at most.
    fn handle_slow(&mut self) {
        for id in mem::take(&mut self.conns.slow) {
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            if c.phase != Phase::Open {
                continue;
            }
            if let Some(io) = c.io() {
                io.outbox.discard_unstarted();
            }
            self.stats.slow_consumer_closes.add(1);
            self.report_error(id, &SessionError::SlowConsumer);
            self.close_with(id, 1008, "slow consumer");
            if let Some(c) = self.conns.get(id) {
                c.drop_when_flushed = true;
            }
        }
    }

    fn flush(&mut self) {
        let now = self.conns.now;
        let stall = self.timeouts.write_stall;
        let mut dirty = mem::replace(
            &mut self.conns.dirty,
            mem::take(&mut self.conns.dirty_spare),
        );
        for &id in &dirty {
            let Some(c) = self
                .conns
                .slab
                .get_mut(id.key())
                .filter(|c| c.session.id == id)
            else {
                continue;
            };
            c.dirty = false;
            if c.dead {
                continue;
            }
            let Some(io) = c.io() else { continue };
            match io.flush_outbox() {
                Ok(f) => {
                    self.stats.bytes_out.add(f.bytes as u64);
                    if f.bytes > 0 {
                        c.live.last_tx = now;
                    }
                    if f.drained {
                        if c.drop_when_flushed {
                            c.dead = true;
                            self.conns.reap.push(id);
                        }
                    } else {
                        let due = c.live.last_tx + stall;
                        self.arm(id, due);
                    }
                }
                Err(_) => {
                    c.ended(1006, "write failed");
                    c.dead = true;
                    self.conns.reap.push(id);
                }
            }
        }
        // Output queued meanwhile went to the live list; this one is kept for its capacity.
        dirty.clear();
        self.conns.dirty_spare = dirty;
    }

    fn reap(&mut self) {
        while let Some(id) = self.conns.reap.pop() {
            let Some(c) = self.conns.slab.get(id.key()) else {
                continue;
            };
            if c.session.id != id {
                continue;
            }
            let mut c = self.conns.slab.remove(id.key());
            self.hub.shared.open.fetch_sub(1, Ordering::Relaxed);
            self.release_ip(c.session.addr);
            if let Some(io) = c.io() {
                let _ = self.poll.registry().deregister(&mut io.tcp);
                if !io.outbox.is_empty() {
                    // Output the peer never took (a slow consumer past `close_timeout`, a dead
                    // one past its heartbeat): reset the connection (SO_LINGER 0) instead of
                    // an orderly FIN that would wait behind bytes nobody reads. The peer sees
                    // a reset (1006), and the kernel frees the socket's buffers at once rather
                    // than keeping an orphan for minutes. docs/protocol.md, "Slow consumers".
                    let _ = socket2::SockRef::from(&io.tcp).set_linger(Some(Duration::ZERO));
                }
            }
            if matches!(c.wire, Wire::Sse { .. }) {
                self.sse_gone(id, &mut c);
                continue;
            }
            if !c.announced {
                continue;
            }
            let user = c.session.user.clone();
            for room in mem::take(&mut c.session.rooms) {
                if let Some(shared) = self.rooms.get(&room).map(|r| r.shared.clone()) {
                    self.leave_room(id, &user, &shared);
                } else {
                    self.hub.shared.directory.leave(&room, id);
                }
            }
            if let Some(list) = self.users.get_mut(&user) {
                list.retain(|s| *s != id);
                if list.is_empty() {
                    self.users.remove(&user);
                }
            }
            self.hub.shared.directory.remove_session(id);
            self.stats.connections.sub(1);
            let hooks = Rc::clone(&self.hooks);
            if let Some(on_disconnect) = &hooks.on_disconnect {
                let d = c.disconnect.take().unwrap_or(crate::hooks::Disconnect {
                    code: 1006,
                    reason: String::new(),
                });
                // The session is gone already: a panic here has nothing left to close.
                self.contain(None, |_| on_disconnect(&c.session, &d));
            }
        }
    }

    // ----- shutdown -----

    fn begin_shutdown(&mut self) {
        if self.draining.is_some() {
            return;
        }
        self.draining = Some(Instant::now() + self.cfg().drain_timeout);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Some(mut l) = self.admin.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let ids: Vec<SessionId> = self.conns.slab.iter().map(|(_, c)| c.session.id).collect();
        for id in ids {
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            match c.phase {
                Phase::Open => {
                    self.close_with(id, 1001, "server shutdown");
                    if let Some(c) = self.conns.get(id) {
                        // Waiting for every client's close reply could take the whole drain
                        // time; the close frame is what matters.
                        c.drop_when_flushed = true;
                    }
                }
                Phase::Handshake { .. } => self.conns.kill(id),
                Phase::Closing { .. } => {}
            }
        }
    }

    /// Merges this shard's recent histograms into the shared ones.
    fn publish_histograms(&mut self) {
        if let Some(shared) = self.hub.shared.histograms.get(self.index) {
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(&self.hist);
            self.hist.reset();
        }
    }

    /// Drops whatever is left when the drain ends.
    fn finish(&mut self) {
        self.publish_histograms();
        let ids: Vec<SessionId> = self.conns.slab.iter().map(|(_, c)| c.session.id).collect();
        for id in ids {
            self.conns.kill(id);
        }
        self.reap();
    }
}
