//! The sans-IO core: one [`Engine`] per shard decides everything about its connections, with
//! no socket, thread or clock of its own.
//!
//! The engine owns each connection's protocol state (the HTTP request being read, tungstenite's
//! framing, the session, its rooms, rate limits and timers) and its outbound queue. The IO
//! driver (`crate::shard`) owns the sockets' readiness and the system calls: it hands the
//! engine what happened and writes what the engine queued. Time is an argument: `now` is
//! nanoseconds since the server's epoch ([`crate::auth::Gate`]), read once per reactor turn by
//! the driver and advanced at will by the simulation tests.
//!
//! # Inputs (`handle_*`)
//! * [`handle_accept`](Engine::handle_accept): a new connection (its socket, address, listener).
//! * [`handle_input`](Engine::handle_input): bytes read from a connection, its end, or an error.
//! * [`handle_inbox`](Engine::handle_inbox): a message routed to this shard ([`router`]).
//! * [`handle_timeout`](Engine::handle_timeout): time passed; due timers fire.
//! * [`handle_writable`](Engine::handle_writable): a socket can take bytes again.
//!
//! # Outputs
//! * [`flush`](Engine::flush): the driver writes connections with queued output through the
//!   given function (one write per connection, at most [`writes::FLUSH_SLICE`] per call: a
//!   longer walk continues on the next turn, after new input), then the engine settles what
//!   the writes mean (drained, stalled, failed) and removes the connections that ended.
//!   Deliveries may be held up to `write_delay` first ([`writes`]).
//! * [`poll_effect`](Engine::poll_effect): what the driver must do to sockets (drop one,
//!   resetting it or not; stop accepting).
//! * [`next_wakeup`](Engine::next_wakeup): when to call `handle_timeout` and `flush` next (the
//!   next tick, or the flush deadline of held output); [`has_pending`](Engine::has_pending):
//!   do not sleep at all (a walk is under way).
//!
//! Order within one turn: inputs in any order, then `handle_timeout`, then `flush`, then drain
//! `poll_effect`. Messages to other shards leave during the inputs, through the router.
//!
//! # Layout
//! `conn`: a connection's lifecycle. `input`: HTTP requests, upgrades, WebSocket frames.
//! `requests`: the hub protocol's requests. `direct`: direct messages with receipts
//! ([`acks`]) and for offline users ([`offline`]). `deliver`: routed messages to local members.
//! `compression`: permessage-deflate's compress-once cache and the inflating read path.
//! `lifecycle`: closing, ending sessions, timers, flushing, removal, shutdown. `hooks`: the
//! application's callbacks and the containment of their panics. The rest are the pieces these
//! use: the [`directory`], a shard's [`rooms`], the [`router`], the room [`history`], the
//! [`outbox`], the write schedule ([`writes`]), the [`timer`] wheel, the [`liveness`] policy, [`ratelimit`] and [`iplimit`].

pub mod acks;
mod compression;
pub(crate) mod conn;
mod deliver;
mod direct;
pub mod directory;
pub(crate) mod framing;
pub mod history;
mod hooks;
pub mod ids;
mod input;
pub mod iplimit;
mod lifecycle;
pub mod liveness;
pub mod offline;
mod online;
pub mod outbox;
pub mod ratelimit;
pub mod recovery;
mod requests;
pub mod rooms;
pub mod router;
pub mod timer;
pub mod writes;

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod sim;

pub(crate) use hooks::panic_message;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use slab::Slab;
use tungstenite::protocol::WebSocketConfig;

use crate::http::Listener;
use crate::hub::Hub;
use crate::metrics::{Histograms, ShardStats};
use crate::protocol::frame::{Frame, FrameBuf};
use conn::{Conn, HttpConn, Stage, WsConn};
use ids::SessionId;
use liveness::{Liveness, Timeouts};
use outbox::{Flushed, Outbox};
use router::ShardMsg;
use timer::{Expired, TimerWheel};
use writes::{Dirty, Walked, Writes, FLUSH_SLICE};

/// What the driver must do.
#[derive(Debug)]
pub enum Effect<S> {
    /// The connection is gone: deregister and drop its socket. `reset`: with output the peer
    /// never took, so close with a reset (`SO_LINGER` 0) rather than an orderly shutdown.
    Closed {
        /// The socket.
        socket: S,
        /// Whether to reset.
        reset: bool,
    },
    /// Shutdown began: stop accepting.
    StopAccepting,
}

/// What the driver read from a connection.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Bytes, in order.
    Bytes(&'a [u8]),
    /// The peer ended its side of the stream.
    Eof,
    /// The socket failed.
    Error(io::ErrorKind),
}

/// One shard's engine. See the module docs; `S` is the driver's socket type.
pub struct Engine<S> {
    pub(crate) shard: usize,
    pub(crate) hub: Hub,
    /// This shard's copy of the application's hooks: cloning an `Rc` to call one while the
    /// engine is borrowed costs a plain increment.
    pub(crate) hooks: Rc<crate::hooks::Hooks>,
    pub(crate) stats: Arc<ShardStats>,
    pub(crate) conns: Slab<Conn<S>>,
    /// The per-shard part of session ids, so a reused slab slot gets a new id.
    seq: u64,
    pub(crate) rooms: rooms::LocalRooms,
    /// Each connection's deadline, keyed by its slab key.
    pub(crate) wheel: TimerWheel<u32>,
    /// Acknowledged sends of this shard's sessions waiting for receipts.
    pub(crate) acks: acks::Acks,
    pub(crate) timeouts: Timeouts,
    pub(crate) ws_config: WebSocketConfig,
    pub(crate) ws_paths: &'static [&'static str],
    tick_ns: u64,
    /// The current tick and nanoseconds, from the last input.
    pub(crate) now: u64,
    pub(crate) now_ns: u64,
    /// Which connections are written when: due, held by the write delay, the walk under way.
    pub(crate) writes: Writes,
    /// Connections whose unwritten output passed `max_queue_bytes` after a write, or made no
    /// progress for `write_stall_timeout`: closed at the end of the flush, with the close
    /// that says which.
    pub(crate) slow: Vec<(SessionId, crate::protocol::close::Close)>,
    /// Connections to remove at the end of the turn.
    pub(crate) reap: Vec<SessionId>,
    /// HTTP connections with pipelined requests left over from this turn's budget.
    pub(crate) pending: Vec<SessionId>,
    pub(crate) effects: VecDeque<Effect<S>>,
    expired: Vec<Expired<u32>>,
    /// Scratch of the request parser and the frame builder, kept for their capacity.
    pub(crate) scratch: Vec<u8>,
    pub(crate) json: simd_json::Buffers,
    pub(crate) fb: FrameBuf,
    /// A handshake's `101` and welcome frame, built here before they become one frame.
    pub(crate) handshake: Vec<u8>,
    /// permessage-deflate: the shard's compressor, inflater and compress-once cache.
    pub(crate) compression: compression::Compression,
    pub(crate) actions: Vec<crate::hooks::Action>,
    /// Set once shutdown began: the tick by which every connection must be gone.
    pub(crate) draining: Option<u64>,
    /// Publishes and broadcasts delivered since the driver last asked (fan-out histogram).
    pub(crate) fanouts: u64,
    /// Timer lateness since the driver last merged it.
    pub(crate) hist: Histograms,
    /// When a contained panic was last logged (ns), and the panics since (`hooks.rs`).
    pub(crate) last_panic_log: Option<u64>,
    pub(crate) panics_unlogged: u64,
    /// When shard 0 next sweeps expired room history (`Directory::sweep`), ns.
    next_sweep: u64,
    /// Rooms over `presence_limit` whose member count changed since this shard last told its
    /// members (`deliver::send_presence_counts`), and when it may next tell them, ns.
    pub(crate) presence_counts: std::collections::HashSet<Arc<str>>,
    next_presence: u64,
    /// Set while a message from the inbox is applied (`handle_inbox`).
    pub(crate) in_inbox: bool,
}

impl<S> Engine<S> {
    /// The engine of shard `shard` of the server behind `hub`, at time `now`.
    pub fn new(shard: usize, hub: Hub, now: u64) -> Self {
        let cfg = hub.config().clone();
        let tick_ns = cfg.tick.as_nanos().max(1) as u64;
        let ticks = |d: std::time::Duration| (d.as_nanos() as u64 / tick_ns).max(1);
        let timeouts = Timeouts {
            handshake: ticks(cfg.handshake_timeout),
            ping_interval: ticks(cfg.ping_interval),
            pong_timeout: ticks(cfg.pong_timeout),
            write_stall: ticks(cfg.write_stall_timeout),
            close_grace: ticks(cfg.close_timeout),
            stream_beat: ticks(cfg.sse_heartbeat),
        };
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(cfg.read_buffer_bytes)
            .write_buffer_size(0)
            .max_message_size(Some(cfg.max_message_bytes))
            .max_frame_size(Some(cfg.max_message_bytes));
        // Reserving the slab up front spares a reallocation-and-copy of every connection as the
        // shard fills.
        let conns = Slab::with_capacity(cfg.reserved_slots_per_shard());
        let tick = now / tick_ns;
        Self {
            shard,
            hooks: Rc::new(hub.shared.hooks.clone()),
            stats: hub.shared.stats[shard].clone(),
            conns,
            seq: 0,
            rooms: rooms::LocalRooms::new(shard),
            // 1024 slots of 100 ms: one rotation covers the 45 s default heartbeat deadline.
            wheel: TimerWheel::new(1024, tick),
            acks: acks::Acks::new(tick),
            timeouts,
            ws_config,
            ws_paths: if cfg.echo { &["/ws", "/"] } else { &["/ws"] },
            tick_ns,
            now: tick,
            now_ns: now,
            writes: Writes::new(cfg.write_delay.as_nanos().min(u128::from(u64::MAX)) as u64),
            slow: Vec::new(),
            reap: Vec::new(),
            pending: Vec::new(),
            effects: VecDeque::new(),
            expired: Vec::new(),
            scratch: Vec::new(),
            json: simd_json::Buffers::default(),
            fb: FrameBuf::default(),
            handshake: Vec::new(),
            compression: compression::Compression::new(
                cfg.compression_min_bytes,
                hub.shared.stats[shard].clone(),
            ),
            actions: Vec::new(),
            draining: None,
            fanouts: 0,
            hist: Histograms::default(),
            last_panic_log: None,
            panics_unlogged: 0,
            next_sweep: 0,
            presence_counts: std::collections::HashSet::new(),
            next_presence: 0,
            in_inbox: false,
            hub,
        }
    }

    pub(crate) fn cfg(&self) -> &crate::config::Config {
        &self.hub.shared.config
    }

    fn set_now(&mut self, now: u64) {
        self.now_ns = self.now_ns.max(now);
        self.now = self.now_ns / self.tick_ns;
        self.writes.now_ns = self.now_ns;
    }

    /// An open connection by id (a stale id, of a connection gone or dying, finds nothing).
    pub(crate) fn conn(&mut self, id: SessionId) -> Option<&mut Conn<S>> {
        live(&mut self.conns, id)
    }

    // ----- inputs -----

    /// A new connection. Refused ones (over a connection limit, or over their address's
    /// limits) come back with the response to write before dropping them.
    pub fn handle_accept(
        &mut self,
        socket: S,
        addr: SocketAddr,
        listener: Listener,
        now: u64,
    ) -> Result<SessionId, (S, Vec<u8>)> {
        self.set_now(now);
        self.stats.accepted.add(1);
        if let Err(resp) = self.admit_connection(addr) {
            self.stats.handshake_failures.add(1);
            return Err((socket, resp.to_bytes(false)));
        }
        let entry = self.conns.vacant_entry();
        self.seq += 1;
        let seq = SessionId::sequence(self.seq, self.hub.shared.node_tag());
        let id = SessionId::new(seq, self.shard, entry.key());
        let due = self
            .wheel
            .schedule(id.key() as u32, self.now + self.timeouts.handshake);
        entry.insert(Conn {
            socket,
            id,
            stage: Stage::Http(HttpConn {
                addr,
                buf: Vec::new(),
                requests: 0,
                since: self.now,
                listener,
                eof: false,
            }),
            outbox: Outbox::default(),
            live: Liveness::new(self.now),
            timer_due: due,
            dirty: Dirty::Clean,
            dead: false,
            reset: false,
        });
        Ok(id)
    }

    /// The socket of a connection, for the driver's reads (`None` once it is gone or dying).
    pub fn socket_mut(&mut self, id: SessionId) -> Option<&mut S> {
        self.conn(id).map(|c| &mut c.socket)
    }

    /// What the driver read from connection `id`. A panic while handling it closes that
    /// connection alone (`Close::InternalError`), see `hooks.rs`.
    pub fn handle_input(&mut self, id: SessionId, input: Input<'_>, now: u64) {
        self.set_now(now);
        self.contain(Some(id), |e| e.input(id, input));
    }

    /// A message routed to this shard.
    pub fn handle_inbox(&mut self, msg: ShardMsg, now: u64) {
        self.set_now(now);
        let about = msg.session();
        // The driver took a batch from the inbox: later messages of it may be waiting even
        // though the inbox looks empty, so what this routes goes through the inbox too (see
        // `Router::route` on numbered publications).
        self.in_inbox = true;
        self.contain(about, |e| e.apply(msg));
        self.in_inbox = false;
    }

    /// Time passed: fires every timer due by `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        self.set_now(now);
        // Shard 0 drops rooms kept only for their expired history, about once a second.
        if self.shard == 0 && self.now_ns >= self.next_sweep {
            self.next_sweep = self.now_ns + 1_000_000_000;
            self.hub.shared.router.directory().sweep(self.now_ns);
            self.hub.shared.offline.sweep(self.now_ns);
        }
        if !self.presence_counts.is_empty() && self.now_ns >= self.next_presence {
            let interval = self.cfg().presence_interval.as_nanos() as u64;
            self.next_presence = self.now_ns + interval;
            self.send_presence_counts();
        }
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(self.now, &mut expired);
        for e in expired.drain(..) {
            // The slot's occupant now, which `on_timer` checks was the one armed for `e.due`.
            let Some(id) = self.conns.get(e.key as usize).map(|c| c.id) else {
                continue;
            };
            self.contain(Some(id), |eng| eng.on_timer(id, e.due));
        }
        self.expired = expired;
        self.expire_acks();
    }

    /// The socket of `id` can take bytes again: flush it this turn.
    pub fn handle_writable(&mut self, id: SessionId) {
        self.mark_dirty(id);
    }

    // ----- outputs -----

    /// Writes connections with queued output through `write` (which writes an outbox to a
    /// socket without blocking), at most [`FLUSH_SLICE`] of them per call (see [`writes`]):
    /// continues the walk under way, or starts one over the connections due now (held ones
    /// join once their deadline passed). Then closes the slow consumers the writes showed and
    /// removes the connections that ended. While [`has_pending`](Self::has_pending) says so,
    /// the driver calls again after polling for input.
    pub fn flush(
        &mut self,
        mut write: impl FnMut(&mut S, &mut Outbox) -> io::Result<Flushed>,
    ) -> Walked {
        self.answer_pending();
        if self.writes.release_due(self.now_ns) {
            self.release_held();
        }
        let mut walked = Walked::default();
        if !self.writes.walking() {
            if self.writes.due.is_empty() && !self.writes.held.is_empty() {
                // Only held output: nothing to walk before the deadline.
                self.finish_flush();
                return walked;
            }
            // The due list becomes the walk; the old walk's allocation takes new arrivals.
            let w = &mut self.writes;
            w.walk.clear();
            std::mem::swap(&mut w.walk, &mut w.due);
            w.pos = 0;
            walked.started = true;
        }
        let walk = std::mem::take(&mut self.writes.walk);
        let from = self.writes.pos;
        let to = walk.len().min(from + FLUSH_SLICE);
        for &id in &walk[from..to] {
            let Some(c) = self.conns.get_mut(id.key()).filter(|c| c.id == id) else {
                continue;
            };
            c.dirty = Dirty::Clean;
            if c.dead {
                continue;
            }
            let result = write(&mut c.socket, &mut c.outbox);
            walked.written += 1;
            self.flushed(id, result);
        }
        self.writes.walk = walk;
        self.writes.pos = to;
        walked.finished = !self.writes.walking();
        self.finish_flush();
        walked
    }

    /// The end of each flush call: closes the slow consumers, removes what ended.
    fn finish_flush(&mut self) {
        for (id, why) in std::mem::take(&mut self.slow) {
            self.contain(Some(id), |e| e.close_slow(id, why));
        }
        self.remove_dead();
    }

    /// The flush deadline passed: every held connection becomes due.
    fn release_held(&mut self) {
        let mut held = std::mem::take(&mut self.writes.held);
        for &id in &held {
            if let Some(c) = self.conns.get_mut(id.key()).filter(|c| c.id == id) {
                if c.dirty == Dirty::Held {
                    c.dirty = self.writes.make_due(id, c.dirty);
                }
            }
        }
        held.clear();
        if self.writes.held.is_empty() {
            // Keep the allocation for the next hold.
            self.writes.held = held;
        }
    }

    /// Answers the pipelined requests the last turn's budget left (see `input.rs`).
    fn answer_pending(&mut self) {
        for id in std::mem::take(&mut self.pending) {
            self.contain(Some(id), |e| e.http_input(id, &[], false));
        }
    }

    /// Whether work waits for the next turn (requests left over, a walk under way, connections
    /// due): the driver must not sleep.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.writes.walking() || !self.writes.due.is_empty()
    }

    /// Whether a walk is under way (more `flush` calls will write more).
    pub fn is_walking(&self) -> bool {
        self.writes.walking()
    }

    /// The next thing the driver must do to a socket.
    pub fn poll_effect(&mut self) -> Option<Effect<S>> {
        self.effects.pop_front()
    }

    /// When the next tick begins, in nanoseconds since the epoch: the latest time to call
    /// `handle_timeout` again.
    pub fn next_tick(&self) -> u64 {
        (self.wheel.now() + 1) * self.tick_ns
    }

    /// The latest time to call `handle_timeout` and `flush` again, in nanoseconds since the
    /// epoch: the next tick, or the flush deadline of held output if that comes first.
    pub fn next_wakeup(&self) -> u64 {
        let tick = self.next_tick();
        self.flush_deadline().map_or(tick, |d| d.min(tick))
    }

    /// When held output becomes due (`write_delay`), if any is held, in ns since the epoch.
    pub fn flush_deadline(&self) -> Option<u64> {
        self.writes.deadline()
    }

    /// Whether a shutdown has run its course: no connection is left, or the drain time is up.
    pub fn is_drained(&self) -> bool {
        self.draining
            .is_some_and(|deadline| self.conns.is_empty() || self.now >= deadline)
    }

    /// Publishes and broadcasts delivered since the last call (for the fan-out histogram).
    pub fn take_fanouts(&mut self) -> u64 {
        std::mem::take(&mut self.fanouts)
    }

    /// The engine's own histograms (timer lateness) since the driver last merged them.
    pub fn histograms_mut(&mut self) -> &mut Histograms {
        &mut self.hist
    }

    /// This shard's counters.
    pub fn stats(&self) -> &crate::metrics::ShardStats {
        &self.stats
    }

    /// Connections held, in any stage.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    // ----- the outbox, for every part of the engine -----

    /// Queues bytes on any connection that is not dying (responses, control frames).
    pub(crate) fn queue(&mut self, id: SessionId, bytes: Frame) {
        if let Some(c) = self.conns.get_mut(id.key()).filter(|c| c.id == id) {
            enqueue(c, bytes, self.now, &mut self.writes);
        }
    }

    /// Queues a hub frame to an open WebSocket session; returns whether it was queued.
    pub(crate) fn push(&mut self, id: SessionId, frame: Frame) -> bool {
        let now = self.now;
        let Some(c) = self.conns.get_mut(id.key()).filter(|c| c.id == id) else {
            return false;
        };
        push_to(c, frame, now, &mut self.writes, &mut self.compression)
    }

    /// Marks a connection as having output to write (bytes tungstenite queued, a writable
    /// socket).
    pub(crate) fn mark_dirty(&mut self, id: SessionId) {
        if let Some(c) = self.conns.get_mut(id.key()).filter(|c| c.id == id) {
            if c.dirty != Dirty::Due && !c.dead && !c.outbox.is_empty() {
                c.dirty = self.writes.make_due(id, c.dirty);
            }
        }
    }
}

/// [`Engine::conn`] over the slab alone, for code that borrows other fields meanwhile.
pub(crate) fn live<S>(conns: &mut Slab<Conn<S>>, id: SessionId) -> Option<&mut Conn<S>> {
    conns.get_mut(id.key()).filter(|c| c.id == id && !c.dead)
}

/// Queues a frame to an open WebSocket connection, due at once (see [`Engine::push`]); split
/// out so a walk over many connections can use it while holding the slab. A session that
/// negotiated permessage-deflate gets the frame's compressed twin, made once ([`compression`]).
pub(crate) fn push_to<S>(
    c: &mut Conn<S>,
    frame: Frame,
    now: u64,
    writes: &mut Writes,
    z: &mut compression::Compression,
) -> bool {
    let frame = compressed_for(c, frame, z);
    c.is_ws() && enqueue(c, frame, now, writes)
}

/// The frame `c` gets for `frame`: its compressed twin for a session that negotiated
/// permessage-deflate, else `frame` itself.
fn compressed_for<S>(c: &Conn<S>, frame: Frame, z: &mut compression::Compression) -> Frame {
    match &c.stage {
        Stage::Ws(WsConn {
            deflate: Some(d), ..
        }) if !c.dead => z.frame_for(frame, d.window),
        _ => frame,
    }
}

/// Queues a delivery (a publication, presence event, broadcast or direct message) to an open
/// WebSocket connection: like [`push_to`], but held by the write delay when it is on
/// ([`writes`]).
pub(crate) fn deliver_to<S>(
    c: &mut Conn<S>,
    frame: Frame,
    now: u64,
    writes: &mut Writes,
    z: &mut compression::Compression,
) -> bool {
    if !c.is_ws() {
        return false;
    }
    let frame = compressed_for(c, frame, z);
    if c.outbox.is_empty() {
        c.live.last_tx = now;
    }
    c.outbox.push(frame);
    c.dirty = writes.deliver(c.id, c.dirty);
    true
}

/// The one place bytes join an outbox due at once, whatever the connection's stage. The queue
/// is not bounded here but after each write (`lifecycle::flushed`): what counts against
/// `max_queue_bytes` is what the socket would not take, not a burst it was never offered.
pub(crate) fn enqueue<S>(c: &mut Conn<S>, frame: Frame, now: u64, writes: &mut Writes) -> bool {
    if c.dead {
        return false;
    }
    if c.outbox.is_empty() {
        c.live.last_tx = now;
    }
    c.outbox.push(frame);
    if c.dirty != Dirty::Due {
        c.dirty = writes.make_due(c.id, c.dirty);
    }
    true
}
