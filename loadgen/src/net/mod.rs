//! The IO driver of one worker thread: a mio `Poll`, client connections in a `Slab`, and the
//! per-connection state machine `Connecting -> Handshaking -> Open` built on [`crate::ws`].
//!
//! Scenarios never touch sockets: they implement [`Handler`] and get called back with upgrades,
//! text messages and closures, and answer by queueing frames through [`Net`]. Queued frames are
//! written once per loop iteration ([`Net::flush_dirty`]), so a pong and the next request coalesce
//! into one `write`. Server pings are answered here, on every read, whatever the scenario does.
//!
//! Invariants:
//! * Tokens carry a generation next to the slab key ([`ConnId`]); an event or a handler call for a
//!   key whose occupant changed is ignored, never applied to the new occupant.
//! * Reads are bounded per event (`READ_BUDGET` in [`drive`]); a connection that still has data
//!   goes on a backlog serviced before the next blocking poll, because mio is edge-triggered and
//!   will not report it again.
//! * Every connection ends through `Net::finish`, which counts its failure cause once.
//!
//! Files: this one holds the connections ([`Net`]) and what a scenario sees of them; `conn`
//! one connection's state and input parsing; `drive` the event loop.

mod conn;
mod drive;

pub use drive::drive;

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::net::IpAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::{Interest, Poll, Token};
use slab::Slab;

use crate::hist;
use crate::target::Target;
use crate::ws::{self, opcode, WsError};

use conn::{connect, Conn, Phase};

/// Unsent bytes one connection may queue before it is failed: the server has stopped reading it.
const MAX_OUTBOX: usize = 64 * 1024 * 1024;
/// How long a connection we closed may take to answer our close frame.
const CLOSE_WAIT_NS: u64 = 1_000_000_000;

/// A handle to one connection: slab key plus generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    key: u32,
    gen: u32,
}

impl ConnId {
    /// A handle for tests of code that only passes handles around: key `key`, generation 1.
    #[cfg(test)]
    pub(crate) fn for_test(key: usize) -> Self {
        Self {
            key: key as u32,
            gen: 1,
        }
    }

    /// The key of a handle made by [`ConnId::for_test`].
    #[cfg(test)]
    pub(crate) fn key_for_test(self) -> usize {
        self.key as usize
    }

    fn token(self) -> Token {
        Token(((self.gen as usize) << 32) | self.key as usize)
    }
    fn from_token(t: Token) -> Self {
        Self {
            key: (t.0 & 0xFFFF_FFFF) as u32,
            gen: (t.0 >> 32) as u32,
        }
    }
}

/// Why a connection ended other than by our own close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Connection refused (nothing listening, or the accept backlog overflowed).
    Refused,
    /// Not ready within the connect timeout (TCP connect, upgrade or greeting).
    Timeout,
    /// The upgrade was answered with this HTTP status.
    Http(u16),
    /// The server closed the WebSocket with this code.
    Close(u16),
    /// The server reset the TCP connection.
    Reset,
    /// The server closed TCP without a close frame.
    Eof,
    /// The server violated the protocol.
    Protocol(&'static str),
    /// No free local address/port (ephemeral port exhaustion): use `--source`.
    AddrUnavailable,
    /// Out of file descriptors in this process: use `--procs`.
    TooManyFiles,
    /// This side queued more than its outbox limit: the server stopped reading.
    Outbox,
    /// Any other socket error.
    Io(io::ErrorKind),
}

impl Failure {
    /// The key under which this cause is counted in reports.
    pub fn key(&self) -> String {
        match self {
            Self::Refused => "refused".into(),
            Self::Timeout => "timeout".into(),
            Self::Http(c) => format!("http_{c}"),
            Self::Close(c) => format!("close_{c}"),
            Self::Reset => "reset".into(),
            Self::Eof => "eof".into(),
            Self::Protocol(r) => format!("protocol: {r}"),
            Self::AddrUnavailable => "addr_unavailable".into(),
            Self::TooManyFiles => "too_many_files".into(),
            Self::Outbox => "outbox_overflow".into(),
            Self::Io(k) => format!("io_{k:?}").to_lowercase(),
        }
    }

    fn from_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Self::Reset,
            io::ErrorKind::BrokenPipe => Self::Reset,
            io::ErrorKind::AddrNotAvailable => Self::AddrUnavailable,
            io::ErrorKind::TimedOut => Self::Timeout,
            _ if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                Self::TooManyFiles
            }
            k => Self::Io(k),
        }
    }

    fn from_ws(e: WsError) -> Self {
        match e {
            WsError::Status(c) => Self::Http(c),
            WsError::BadResponse(r) | WsError::Frame(r) => Self::Protocol(r),
        }
    }
}

/// Connection counters of one thread (summed across threads and processes).
#[derive(Debug)]
pub struct ConnStats {
    /// Connections started.
    pub attempted: u64,
    /// Connections that became ready (101, plus the greeting in hub mode).
    pub established: u64,
    /// Failures by cause ([`Failure::key`]).
    pub failures: BTreeMap<String, u64>,
    /// Connect start to ready, µs.
    pub handshake: Histogram<u64>,
    /// Monotonic time of the first connect attempt.
    pub first_start_ns: Option<u64>,
    /// Monotonic time the last connection became ready.
    pub last_ready_ns: Option<u64>,
    /// Ready connections currently open.
    pub open: u64,
}

/// The callbacks a scenario implements; all run on the worker thread, between polls.
pub trait Handler {
    /// The 101 arrived and was valid.
    fn on_upgraded(&mut self, net: &mut Net, id: ConnId, tag: usize, now: u64);
    /// A complete text message arrived.
    fn on_text(&mut self, net: &mut Net, id: ConnId, tag: usize, msg: &[u8], now: u64);
    /// The connection is gone: `None` after our own close, otherwise the failure.
    fn on_closed(&mut self, net: &mut Net, tag: usize, failure: Option<&Failure>, now: u64);
    /// Called once per loop iteration: start connections, send what is due. Returns `None` when
    /// the scenario is finished, or the next time it wants to be called (it may be called
    /// earlier).
    fn tick(&mut self, net: &mut Net, now: u64) -> Option<u64>;
}

/// One thread's connections and poller.
pub struct Net {
    poll: Poll,
    conns: Slab<Conn>,
    next_gen: u32,
    /// Every URL of the run; [`Net::open`] names one by index.
    targets: Vec<Target>,
    sources: Vec<IpAddr>,
    next_source: usize,
    dirty: Vec<ConnId>,
    connect_deadlines: VecDeque<(u64, ConnId)>,
    close_deadlines: VecDeque<(u64, ConnId)>,
    connect_timeout_ns: u64,
    rng: u64,
    closed: Vec<(usize, Option<Failure>)>,
    /// Connection counters.
    pub stats: ConnStats,
}

impl Net {
    /// A poller for connections to `targets` (each connection names its own), bound round-robin
    /// to `sources` if not empty.
    pub fn new(
        targets: Vec<Target>,
        sources: Vec<IpAddr>,
        connect_timeout: Duration,
        seed: u64,
    ) -> io::Result<Self> {
        Ok(Self {
            poll: Poll::new()?,
            conns: Slab::new(),
            next_gen: 1,
            targets,
            sources,
            next_source: 0,
            dirty: Vec::new(),
            connect_deadlines: VecDeque::new(),
            close_deadlines: VecDeque::new(),
            connect_timeout_ns: connect_timeout.as_nanos() as u64,
            rng: seed | 1,
            closed: Vec::new(),
            stats: ConnStats {
                attempted: 0,
                established: 0,
                failures: BTreeMap::new(),
                handshake: hist::new_hist(),
                first_start_ns: None,
                last_ready_ns: None,
                open: 0,
            },
        })
    }

    fn rand(&mut self) -> u64 {
        // xorshift64: mask keys and nonces need to vary, not to be secret, in a load generator.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Connections currently held (any phase).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection is held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    fn get(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.key as usize)
            .filter(|c| c.gen == id.gen)
    }

    /// Starts a connection tagged `tag` (the scenario's own index) to target number `url` of
    /// those given to [`Net::new`] (an index the plan's [`crate::target::Targets`] handed out; any
    /// other is a bug and panics). On immediate failure the failure is counted and reported
    /// through [`Handler::on_closed`], and `None` is returned. `user`, when given, is added to
    /// the URL's query as `user=` (ids made of URL-safe characters only).
    pub fn open(&mut self, tag: usize, now: u64, user: Option<&str>, url: usize) -> Option<ConnId> {
        self.stats.attempted += 1;
        self.stats.first_start_ns.get_or_insert(now);
        let source = if self.sources.is_empty() {
            None
        } else {
            let s = self.sources[self.next_source % self.sources.len()];
            self.next_source += 1;
            Some(s)
        };
        let stream = match connect(self.targets[url].addr, source) {
            Ok(s) => s,
            Err(e) => {
                let f = Failure::from_io(&e);
                *self.stats.failures.entry(f.key()).or_default() += 1;
                self.closed.push((tag, Some(f)));
                return None;
            }
        };
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.rand().to_le_bytes());
        nonce[8..].copy_from_slice(&self.rand().to_le_bytes());
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let id = ConnId {
            key: key as u32,
            gen,
        };
        let target = &self.targets[url];
        let resource = match user {
            None => Cow::Borrowed(target.resource.as_str()),
            Some(u) if target.resource.contains('?') => {
                Cow::Owned(format!("{}&user={u}", target.resource))
            }
            Some(u) => Cow::Owned(format!("{}?user={u}", target.resource)),
        };
        let (req, accept) = ws::upgrade_request(&target.host, &resource, nonce);
        let mut conn = Conn {
            stream,
            gen,
            tag,
            phase: Phase::Connecting,
            started_ns: now,
            ready: false,
            accept,
            inbuf: Vec::new(),
            rpos: 0,
            out: req,
            wpos: 0,
            dirty: false,
            frag: None,
            close_sent: false,
        };
        if let Err(e) = self.poll.registry().register(
            &mut conn.stream,
            id.token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            let f = Failure::from_io(&e);
            *self.stats.failures.entry(f.key()).or_default() += 1;
            self.closed.push((tag, Some(f)));
            return None;
        }
        entry.insert(conn);
        self.connect_deadlines
            .push_back((now + self.connect_timeout_ns, id));
        Some(id)
    }

    /// Marks a connection ready (upgrade done, and greeting received in hub mode): records its
    /// handshake latency and cancels its connect timeout.
    pub fn mark_ready(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.get(id) else { return };
        if c.ready {
            return;
        }
        c.ready = true;
        let started = c.started_ns;
        hist::record_ns(&mut self.stats.handshake, now.saturating_sub(started));
        self.stats.established += 1;
        self.stats.open += 1;
        self.stats.last_ready_ns = Some(now);
    }

    /// Queues a text message; it is written at the end of this loop iteration. Ignored for a
    /// connection that is gone or closing.
    pub fn send_text(&mut self, id: ConnId, payload: &[u8]) -> bool {
        self.send_frame(id, opcode::TEXT, payload)
    }

    fn send_frame(&mut self, id: ConnId, op: u8, payload: &[u8]) -> bool {
        let mask = (self.rand() as u32).to_ne_bytes();
        let Some(c) = self.get(id) else { return false };
        if c.close_sent || c.phase != Phase::Open {
            return false;
        }
        ws::encode_frame(&mut c.out, op, payload, mask);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(id);
        }
        true
    }

    /// Starts a clean close (1000); the connection is dropped when the server answers or after
    /// `CLOSE_WAIT_NS` (1 s). Not counted as a failure.
    pub fn close(&mut self, id: ConnId, now: u64) {
        let mask = (self.rand() as u32).to_ne_bytes();
        let Some(c) = self.get(id) else { return };
        if c.close_sent {
            return;
        }
        c.close_sent = true;
        if c.phase != Phase::Open {
            // Nothing to say to a server that has not upgraded yet.
            self.finish(id, None);
            return;
        }
        ws::encode_frame(&mut c.out, opcode::CLOSE, &1000u16.to_be_bytes(), mask);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(id);
        }
        self.close_deadlines.push_back((now + CLOSE_WAIT_NS, id));
    }

    /// Closes every connection (see [`Net::close`]).
    pub fn close_all(&mut self, now: u64) {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .map(|(k, c)| ConnId {
                key: k as u32,
                gen: c.gen,
            })
            .collect();
        for id in ids {
            self.close(id, now);
        }
    }

    /// Removes a connection and records how it ended. `None` means a normal end.
    fn finish(&mut self, id: ConnId, failure: Option<Failure>) {
        if self.get(id).is_none() {
            return;
        }
        let mut c = self.conns.remove(id.key as usize);
        let _ = self.poll.registry().deregister(&mut c.stream);
        if c.ready {
            self.stats.open -= 1;
        }
        // Anything that ends a connection we were closing is the close completing.
        let failure = if c.close_sent { None } else { failure };
        if let Some(f) = &failure {
            *self.stats.failures.entry(f.key()).or_default() += 1;
        }
        self.closed.push((c.tag, failure));
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(t, id)) = self.connect_deadlines.front() {
            if t > now {
                break;
            }
            self.connect_deadlines.pop_front();
            if self.get(id).is_some_and(|c| !c.ready) {
                self.finish(id, Some(Failure::Timeout));
            }
        }
        while let Some(&(t, id)) = self.close_deadlines.front() {
            if t > now {
                break;
            }
            self.close_deadlines.pop_front();
            self.finish(id, None);
        }
    }

    fn next_deadline(&self) -> u64 {
        let a = self.connect_deadlines.front().map_or(u64::MAX, |d| d.0);
        let b = self.close_deadlines.front().map_or(u64::MAX, |d| d.0);
        a.min(b)
    }

    /// Writes queued output of every connection that has some.
    pub fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for id in &dirty {
            if let Some(c) = self.get(*id) {
                c.dirty = false;
            }
            self.flush(*id);
        }
        // Reuse the allocation.
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn flush(&mut self, id: ConnId) {
        let Some(c) = self.get(id) else { return };
        if c.phase == Phase::Connecting {
            return;
        }
        let mut result = Ok(());
        while c.wpos < c.out.len() {
            match c.stream.write(&c.out[c.wpos..]) {
                Ok(0) => {
                    result = Err(Failure::Eof);
                    break;
                }
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(Failure::from_io(&e));
                    break;
                }
            }
        }
        if c.wpos == c.out.len() {
            c.out.clear();
            c.wpos = 0;
        } else if c.out.len() - c.wpos > MAX_OUTBOX {
            result = Err(Failure::Outbox);
        } else if c.wpos > c.out.len() / 2 {
            c.out.drain(..c.wpos);
            c.wpos = 0;
        }
        if let Err(f) = result {
            self.finish(id, Some(f));
        }
    }

    /// Completes a non-blocking connect once the socket reports an event.
    fn check_connect(&mut self, id: ConnId) {
        let Some(c) = self.get(id) else { return };
        match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                let f = Failure::from_io(&e);
                self.finish(id, Some(f));
                return;
            }
            Ok(None) => {}
        }
        match c.stream.peer_addr() {
            Ok(_) => {
                c.phase = Phase::Handshaking;
                self.flush(id);
            }
            // Spurious wakeup before the connect finished: wait for the next event.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => {
                let f = Failure::from_io(&e);
                self.finish(id, Some(f));
            }
        }
    }

    fn flush_one(&mut self, id: ConnId) {
        if self
            .get(id)
            .is_some_and(|c| c.wpos < c.out.len() && !c.dirty)
        {
            self.flush(id);
        }
    }
}
