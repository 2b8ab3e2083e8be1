//! The IO driver: one reactor thread per core, with its own listener, its inbox, and the
//! [`Engine`] that decides everything about its connections.
//!
//! Each turn of [`Shard::run`]: poll (mio, edge-triggered) → accept → read each ready
//! connection into the shard's one scratch buffer and hand the bytes to the engine, until a
//! read comes back short (the socket is drained), its end, or the read budget → drain the
//! inbox into the engine → let the engine's timers fire → write the connections the engine
//! queued output for (one `send` each, at most `FLUSH_SLICE` per turn: a long fan-out walk is
//! resumed on the next turn, after new input was read, see `engine::writes`) → apply the
//! engine's effects (drop sockets, stop accepting). Nothing writes to a socket in the middle of
//! an event, so frames for one connection coalesce into one write.
//!
//! The driver knows sockets and time; the engine knows everything else. A connection's mio
//! token is its [`SessionId`], whose sequence part makes a stale event for a reused slab slot
//! harmless: the engine no longer knows that id.

pub(crate) mod bus;
pub(crate) mod listener;
mod send;

use std::io::{self, Read};
use std::mem;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::engine::ids::SessionId;
use crate::engine::router::ShardMsg;
use crate::engine::writes::Walked;
use crate::engine::{Effect, Engine, Input};
use crate::hooks::QUIET_AFTER;
use crate::http::response::Response;
use crate::http::Listener;
use crate::hub::Hub;
use crate::metrics::Histograms;
use bus::Inbox;
use send::SendWriter;

const LISTENER: Token = Token(usize::MAX);
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
/// The `admin_listen` listener (shard 0 only).
const ADMIN: Token = Token(usize::MAX - 2);

/// The shard's read buffer: every connection's bytes pass through it on their way to the
/// engine, so idle connections hold no read buffer of their own for the socket.
const SCRATCH_BYTES: usize = 16 * 1024;

/// Reads from one connection before the shard turns to others (at most 64 KiB with
/// [`SCRATCH_BYTES`]): keeps one chatty client from delaying everyone else's reads; the rest
/// is read on the next turn.
const READ_BUDGET: usize = 4;

/// Connections accepted per listener event before other work gets a turn.
const ACCEPT_BUDGET: usize = 256;

/// One reactor thread's state. See the module docs.
pub(crate) struct Shard {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    admin: Option<TcpListener>,
    inbox: Inbox,
    hub: Hub,
    engine: Engine<TcpStream>,
    scratch: Box<[u8]>,
    /// The clock origin the engine's time counts from.
    epoch: Instant,
    /// Connections that still had input when their read budget ran out.
    ready: Vec<SessionId>,
    ready_spare: Vec<SessionId>,
    inbox_buf: Vec<ShardMsg>,
    /// Set when accept hit the file limit or its budget: retry on the next turn.
    accept_paused: bool,
    /// A descriptor held back so that, out of descriptors, the shard can still accept a client
    /// to tell it 503 instead of leaving it to time out in the backlog.
    reserve_fd: Option<std::fs::File>,
    last_accept_warning: Option<Instant>,
    /// The engine's tick at the last histogram merge.
    last_tick: u64,
    hist: Histograms,
    /// Fan-outs handled (when the reactor woke with them, how many) whose recipients wait for
    /// the next walk to start, and those in the walk under way: a fan-out is done when the
    /// first walk that started after it ends.
    fanouts_next: Vec<(Instant, u64)>,
    fanouts_walk: Vec<(Instant, u64)>,
    /// The last turn with a socket or inbox event, while `on_quiet` has not run since.
    busy_at: Option<Instant>,
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
        let epoch = hub.shared.gate.epoch;
        let engine = Engine::new(index, hub.clone(), nanos_since(epoch));
        Ok(Self {
            index,
            poll,
            listener: Some(listener),
            admin,
            inbox,
            engine,
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            epoch,
            ready: Vec::new(),
            ready_spare: Vec::new(),
            inbox_buf: Vec::new(),
            accept_paused: false,
            reserve_fd: std::fs::File::open("/dev/null").ok(),
            last_accept_warning: None,
            last_tick: 0,
            hist: Histograms::default(),
            fanouts_next: Vec::new(),
            fanouts_walk: Vec::new(),
            busy_at: None,
            hub,
        })
    }

    fn now(&self) -> u64 {
        nanos_since(self.epoch)
    }

    /// The reactor loop; returns after a shutdown has drained.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let busy = self.engine.has_pending() || !self.ready.is_empty();
            let timeout = if busy || self.inbox.has_backlog() {
                Duration::ZERO
            } else {
                Duration::from_nanos(self.engine.next_wakeup().saturating_sub(self.now()))
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let woke = Instant::now();
            let mut wake = false;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(false),
                    ADMIN => self.accept(true),
                    WAKER => wake = true,
                    Token(t) => {
                        let id = SessionId(t as u64);
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(id, ev.is_read_closed());
                        }
                        if ev.is_writable() {
                            self.engine.handle_writable(id);
                        }
                    }
                }
            }
            // Swap in the spare list so reads may queue again; both keep their capacity.
            let mut ready = mem::replace(&mut self.ready, mem::take(&mut self.ready_spare));
            for &id in &ready {
                self.read(id, true);
            }
            ready.clear();
            self.ready_spare = ready;
            if wake || self.inbox.has_backlog() {
                self.drain_inbox();
            }
            if mem::take(&mut self.accept_paused) {
                self.accept(false);
                self.accept(true);
            }
            let now = self.now();
            self.engine.handle_timeout(now);
            let fanouts = self.engine.take_fanouts();
            if fanouts > 0 {
                self.fanouts_next.push((woke, fanouts));
            }
            let walked = self
                .engine
                .flush(|socket, outbox| outbox.flush(&mut SendWriter(socket)));
            self.apply_effects();
            self.record(woke, walked);
            self.watch_quiet(!events.is_empty() || wake, woke);
            if self.engine.is_drained() {
                self.engine.abandon();
                self.apply_effects();
                self.publish_histograms();
                return Ok(());
            }
        }
    }

    // ----- accept and read -----

    /// Accepts from the main listener, or from the `admin_listen` one (`admin`).
    fn accept(&mut self, admin: bool) {
        let listener = if admin { &self.admin } else { &self.listener };
        let Some(listener) = listener else { return };
        let kind = match (admin, self.hub.config().admin_listen.is_some()) {
            (true, _) => Listener::Admin,
            (false, true) => Listener::Public,
            (false, false) => Listener::Main,
        };
        for _ in 0..ACCEPT_BUDGET {
            let (tcp, addr) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.out_of_descriptors(e, admin),
            };
            let _ = tcp.set_nodelay(true);
            let now = nanos_since(self.epoch);
            let id = match self.engine.handle_accept(tcp, addr, kind, now) {
                Ok(id) => id,
                Err((mut tcp, refusal)) => {
                    // An empty socket buffer always takes a response this small.
                    let _ = io::Write::write(&mut tcp, &refusal);
                    continue;
                }
            };
            let registered = self.engine.socket_mut(id).map(|s| {
                self.poll.registry().register(
                    s,
                    Token(id.0 as usize),
                    Interest::READABLE | Interest::WRITABLE,
                )
            });
            if let Some(Err(e)) = registered {
                log::warn!("shard {}: register failed: {e}", self.index);
                self.engine.handle_input(id, Input::Error(e.kind()), now);
            }
        }
        // Budget used up with connections possibly still queued: edge-triggered readiness will
        // not fire again for them, so come back next turn.
        self.accept_paused = true;
    }

    /// Out of file descriptors (EMFILE/ENFILE): the kernel keeps the clients queued, where they
    /// would wait for a timeout. Spend the reserve descriptor to tell them (503), and look again
    /// on the next turn.
    fn out_of_descriptors(&mut self, e: io::Error, admin: bool) {
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
        let listener = if admin { &self.admin } else { &self.listener };
        let refusal = Response::refusal(503, "server at its open-file limit").to_bytes(false);
        // Bounded like any accept round: a flood waits for the next turn.
        for _ in 0..ACCEPT_BUDGET {
            let Some(Ok((mut tcp, _))) = listener.as_ref().map(|l| l.accept()) else {
                break;
            };
            let _ = io::Write::write(&mut tcp, &refusal);
            self.engine.stats().handshake_failures.add(1);
        }
        self.reserve_fd = std::fs::File::open("/dev/null").ok();
        self.accept_paused = true;
    }

    /// Reads a connection the poller reported, at most [`READ_BUDGET`] times.
    ///
    /// A read that does not fill the scratch buffer took everything the socket held, so the
    /// shard stops there instead of reading again for the `WouldBlock` that edge-triggered
    /// polling is usually drained with: bytes that arrive later raise a new event. That saves a
    /// system call per message read (and per handshake). Not when the peer's FIN may be queued
    /// (`eof_possible`: the event said the read side closed, or it is a read resumed after the
    /// budget): no new event would announce it, so reading goes on to the end of stream.
    fn read(&mut self, id: SessionId, eof_possible: bool) {
        for _ in 0..READ_BUDGET {
            let now = nanos_since(self.epoch);
            let Some(socket) = self.engine.socket_mut(id) else {
                return;
            };
            let (input, more) = match socket.read(&mut self.scratch) {
                Ok(0) => (Input::Eof, false),
                Ok(n) => (
                    Input::Bytes(&self.scratch[..n]),
                    n == SCRATCH_BYTES || eof_possible,
                ),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => (Input::Error(e.kind()), false),
            };
            self.engine.handle_input(id, input, now);
            if !more {
                return;
            }
        }
        self.ready.push(id);
    }

    fn drain_inbox(&mut self) {
        let mut msgs = mem::take(&mut self.inbox_buf);
        self.inbox.drain(|m| msgs.push(m));
        let now = self.now();
        for m in msgs.drain(..) {
            self.engine.handle_inbox(m, now);
        }
        self.inbox_buf = msgs;
    }

    // ----- effects and bookkeeping -----

    fn apply_effects(&mut self) {
        while let Some(effect) = self.engine.poll_effect() {
            match effect {
                Effect::Closed { socket, reset } => {
                    // Not deregistered: closing the descriptor (it is never duplicated) takes
                    // it out of the epoll set, and an `epoll_ctl` per connection is saved.
                    if reset {
                        let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
                    }
                }
                Effect::StopAccepting => {
                    for mut l in [self.listener.take(), self.admin.take()]
                        .into_iter()
                        .flatten()
                    {
                        let _ = self.poll.registry().deregister(&mut l);
                    }
                }
            }
        }
    }

    /// Records the turn in the histograms (and the fan-outs the walk finished); once per
    /// tick, merges them into the shared ones and marks the reactor alive for `/ready`.
    fn record(&mut self, woke: Instant, walked: Walked) {
        let end = Instant::now();
        Histograms::record(&mut self.hist.tick, end - woke, 1);
        if walked.started {
            self.fanouts_walk.append(&mut self.fanouts_next);
        }
        if walked.finished {
            for (at, n) in self.fanouts_walk.drain(..) {
                Histograms::record(&mut self.hist.fanout, end - at, n);
            }
        }
        let tick = self.engine.next_tick();
        if tick != self.last_tick {
            self.last_tick = tick;
            self.publish_histograms();
            let ms = self.hub.shared.started.elapsed().as_millis() as u64;
            if let Some(h) = self.hub.shared.heartbeats.get(self.index) {
                h.store(ms, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Runs `on_quiet` once the shard has had no event for [`QUIET_AFTER`] after a busy spell.
    /// The reactor wakes every tick, so the hook runs within a tick of that moment.
    fn watch_quiet(&mut self, eventful: bool, now: Instant) {
        if eventful {
            self.busy_at = Some(now);
        } else if self.busy_at.is_some_and(|t| now - t >= QUIET_AFTER) {
            self.busy_at = None;
            if let Some(f) = &self.hub.shared.hooks.on_quiet {
                f();
            }
        }
    }

    /// Merges this shard's recent histograms into the shared ones (this shard's since start,
    /// and every shard's last second).
    fn publish_histograms(&mut self) {
        self.hist.add(self.engine.histograms_mut());
        self.engine.histograms_mut().reset();
        self.hub
            .shared
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(&self.hist, Instant::now());
        if let Some(shared) = self.hub.shared.histograms.get(self.index) {
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(&self.hist);
            self.hist.reset();
        }
    }
}

/// Nanoseconds since `epoch`: the engine's clock.
fn nanos_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
}
