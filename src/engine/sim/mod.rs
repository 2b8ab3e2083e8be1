//! A deterministic simulation of a server: several shard engines wired together in one test
//! thread, a virtual clock, and clients that speak real WebSocket frames (tungstenite's client
//! side) over in-memory pipes. quinn-proto's `Pair` is the model.
//!
//! Nothing here sleeps or touches a socket: [`Sim::step`] carries routed messages between the
//! engines and flushes their output until everything is quiet, and [`Sim::advance`] moves the
//! clock and fires the timers that came due. A heartbeat timeout of 45 s takes no wall time.
//! A client's pipe can stop taking bytes ([`Client::stop_reading`]) to play a slow consumer.
//!
//! Built for the crate's tests, and for the fuzz targets (`--cfg fuzzing`, as cargo-fuzz
//! builds), which drive whole engines with hostile bytes through it.

#[cfg(test)]
mod closes;
#[cfg(test)]
mod direct;
#[cfg(test)]
mod history;
#[cfg(test)]
mod memory;
#[cfg(test)]
mod model;
#[cfg(test)]
mod presence;
#[cfg(test)]
mod stored;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod writes;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tungstenite::protocol::{Role, WebSocketContext};
use tungstenite::Message;

use super::ids::SessionId;
use super::router::{Bus, Refused, ShardMsg};
use super::{Effect, Engine, Input};
use crate::config::Config;
use crate::hooks::Hooks;
use crate::http::Listener;
use crate::hub::{Hub, Shared};
use crate::protocol::close::NO_STATUS;

/// Inboxes as plain queues with a capacity, as the server's are bounded channels.
#[derive(Debug)]
struct Queues {
    cap: AtomicUsize,
    q: Vec<Mutex<VecDeque<ShardMsg>>>,
}

impl Bus for Arc<Queues> {
    fn shards(&self) -> usize {
        self.q.len()
    }

    fn is_empty(&self, shard: usize) -> bool {
        self.q[shard].lock().unwrap().is_empty()
    }

    fn post(&self, shard: usize, msg: ShardMsg) -> Result<(), Refused> {
        let mut q = self.q[shard].lock().unwrap();
        if q.len() >= self.cap.load(Ordering::Relaxed) {
            return Err(Refused::Full);
        }
        q.push_back(msg);
        Ok(())
    }
}

/// The server's end of a client's connection: what it wrote, and how much more the client
/// takes before its side is full.
#[derive(Debug, Default)]
pub struct Pipe {
    /// Bytes written by the server, not yet read by the client.
    to_client: Vec<u8>,
    /// Bytes the client still takes (`None`: unlimited).
    window: Option<usize>,
    /// The server dropped the socket; `reset` if it did so with a reset.
    closed: Option<bool>,
    /// Write calls that took bytes (one per `writev` of the driver).
    writes: usize,
}

/// The socket type the simulated engines hold.
pub type Socket = Rc<RefCell<Pipe>>;

struct PipeWriter<'a>(&'a mut Pipe);

impl Write for PipeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.window.map_or(buf.len(), |w| w.min(buf.len()));
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if let Some(w) = &mut self.0.window {
            *w -= n;
        }
        self.0.to_client.extend_from_slice(&buf[..n]);
        self.0.writes += 1;
        Ok(n)
    }

    /// One call takes from every slice, as `writev` does (and counts once).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let n = self.0.window.map_or(total, |w| w.min(total));
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if let Some(w) = &mut self.0.window {
            *w -= n;
        }
        let mut left = n;
        for b in bufs {
            let take = b.len().min(left);
            self.0.to_client.extend_from_slice(&b[..take]);
            left -= take;
        }
        self.0.writes += 1;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A server of `engines.len()` shards on a virtual clock.
pub struct Sim {
    /// Nanoseconds since the epoch.
    pub clock: u64,
    pub hub: Hub,
    pub engines: Vec<Engine<Socket>>,
    queues: Arc<Queues>,
}

/// One simulated client.
pub struct Client {
    pub shard: usize,
    pub id: SessionId,
    pub user: String,
    pipe: Socket,
    ws: WebSocketContext,
    /// Bytes the client's tungstenite wrote (pongs, close replies) not yet sent.
    tx: Vec<u8>,
    /// Messages received and not yet taken.
    pub inbox: VecDeque<Message>,
}

struct ClientIo<'a> {
    rx: &'a mut Vec<u8>,
    tx: &'a mut Vec<u8>,
}

impl Read for ClientIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rx.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.rx.len());
        buf[..n].copy_from_slice(&self.rx[..n]);
        self.rx.drain(..n);
        Ok(n)
    }
}

impl Write for ClientIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sim {
    /// A server of `shards` shards with the test defaults (no rate limits unless `tweak` sets
    /// them) and `hooks`.
    pub fn with_hooks(shards: usize, hooks: Hooks, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::build(shards, hooks, None, tweak)
    }

    /// A server whose other nodes are `remote` (a stand-in cluster: see `sim/stored.rs`).
    pub fn with_remote(
        shards: usize,
        remote: Arc<dyn crate::engine::router::Remote>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::build(shards, Hooks::default(), Some(remote), tweak)
    }

    fn build(
        shards: usize,
        hooks: Hooks,
        remote: Option<Arc<dyn crate::engine::router::Remote>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config {
            shards,
            ..Config::default()
        };
        tweak(&mut config);
        config.validate().expect("a valid test configuration");
        let queues = Arc::new(Queues {
            cap: AtomicUsize::new(1024),
            q: (0..shards).map(|_| Mutex::default()).collect(),
        });
        let bus = Box::new(queues.clone());
        let shared = match remote {
            Some(r) => Shared::with_remote(config, hooks, bus, r),
            None => Shared::new(config, hooks, bus, None),
        }
        .expect("shared state");
        let hub = Hub {
            shared: Arc::new(shared),
        };
        let engines = (0..shards)
            .map(|i| Engine::new(i, hub.clone(), 0))
            .collect();
        Self {
            clock: 0,
            hub,
            engines,
            queues,
        }
    }

    pub fn new(shards: usize, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::with_hooks(shards, Hooks::default(), tweak)
    }

    /// Limits every inbox to `cap` messages (to overload a shard).
    pub fn set_inbox_capacity(&self, cap: usize) {
        self.queues.cap.store(cap, Ordering::Relaxed);
    }

    /// Opens a raw connection to `shard` (every client comes from 127.0.0.1); nothing is sent
    /// yet. A refusal comes back as the response the server wrote.
    pub fn try_open(&mut self, shard: usize) -> Result<(SessionId, Socket), String> {
        let pipe: Socket = Rc::default();
        let addr = format!("127.0.0.1:{}", 10_000 + self.engines[shard].len())
            .parse()
            .unwrap();
        match self.engines[shard].handle_accept(pipe.clone(), addr, Listener::Main, self.clock) {
            Ok(id) => Ok((id, pipe)),
            Err((_, refusal)) => Err(String::from_utf8_lossy(&refusal).into_owned()),
        }
    }

    /// [`try_open`](Self::try_open), which must be accepted.
    pub fn open(&mut self, shard: usize) -> (SessionId, Socket) {
        self.try_open(shard).expect("accepted")
    }

    /// Sends raw bytes on a connection, then lets everything settle.
    pub fn raw(&mut self, shard: usize, id: SessionId, bytes: &[u8]) {
        self.engines[shard].handle_input(id, Input::Bytes(bytes), self.clock);
        self.step();
    }

    /// The peer of a connection ends its stream, then everything settles.
    pub fn eof(&mut self, shard: usize, id: SessionId) {
        self.engines[shard].handle_input(id, Input::Eof, self.clock);
        self.step();
    }

    /// Connects `user` on `shard` and reads its welcome.
    pub fn connect(&mut self, shard: usize, user: &str) -> Client {
        let (mut c, _) = self
            .upgrade(shard, &format!("/ws?user={user}"), "")
            .unwrap_or_else(|refusal| panic!("{refusal}"));
        c.user = user.to_string();
        let welcome = self.expect(&mut c, "welcome");
        assert_eq!(welcome["session"], c.id.0.to_string());
        c
    }

    /// Sends an upgrade request for `target` with `headers` (whole lines, each ending in
    /// `\r\n`) on a new connection to `shard`. A `101` gives the client, nothing read past
    /// the response head, and that head; anything else, the whole response.
    pub fn upgrade(
        &mut self,
        shard: usize,
        target: &str,
        headers: &str,
    ) -> Result<(Client, String), String> {
        let (id, pipe) = self.open(shard);
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
        );
        self.raw(shard, id, req.as_bytes());
        let head = {
            let mut p = pipe.borrow_mut();
            let Some(end) = p.to_client.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Err(String::from_utf8_lossy(&p.to_client).into_owned());
            };
            if !p.to_client.starts_with(b"HTTP/1.1 101") {
                return Err(String::from_utf8_lossy(&p.to_client).into_owned());
            }
            let head = String::from_utf8_lossy(&p.to_client[..end]).into_owned();
            p.to_client.drain(..end + 4);
            head
        };
        let c = Client {
            shard,
            id,
            user: String::new(),
            pipe,
            ws: WebSocketContext::new(Role::Client, None),
            tx: Vec::new(),
            inbox: VecDeque::new(),
        };
        Ok((c, head))
    }

    /// Sends a text message from a client.
    pub fn send(&mut self, c: &mut Client, v: Value) {
        self.send_message(c, Message::text(v.to_string()));
    }

    /// Sends any message from a client (its frames are masked, as a client's must be).
    pub fn send_message(&mut self, c: &mut Client, m: Message) {
        let mut io = ClientIo {
            rx: &mut Vec::new(),
            tx: &mut c.tx,
        };
        c.ws.write(&mut io, m).expect("client write");
        c.ws.flush(&mut io).expect("client flush");
        self.push_client(c);
    }

    fn push_client(&mut self, c: &mut Client) {
        if !c.tx.is_empty() {
            let bytes = std::mem::take(&mut c.tx);
            self.engines[c.shard].handle_input(c.id, Input::Bytes(&bytes), self.clock);
        }
        self.step();
    }

    /// Sends a text message from a client and lets its shard handle it, but nothing else: what
    /// it routed waits in the inboxes (to interleave deliveries by hand, [`deliver_one`]).
    ///
    /// [`deliver_one`]: Self::deliver_one
    pub fn send_quiet(&mut self, c: &mut Client, v: Value) {
        self.send_unflushed(c, v);
        self.flush_outputs();
    }

    /// Hands shard `shard` the oldest message waiting in its inbox; false if there is none.
    pub fn deliver_one(&mut self, shard: usize) -> bool {
        let Some(m) = self.queues.q[shard].lock().unwrap().pop_front() else {
            return false;
        };
        self.engines[shard].handle_inbox(m, self.clock);
        self.flush_outputs();
        true
    }

    /// Messages waiting in shard `shard`'s inbox.
    pub fn waiting(&self, shard: usize) -> usize {
        self.queues.q[shard].lock().unwrap().len()
    }

    /// Writes out what the engines queued (whole walks), without carrying inbox messages.
    fn flush_outputs(&mut self) {
        for i in 0..self.engines.len() {
            self.flush_once(i);
            while self.engines[i].is_walking() {
                self.flush_once(i);
            }
        }
    }

    /// One `flush` call of shard `shard`'s engine (one slice of a walk), as one reactor turn
    /// makes, with its effects applied.
    pub fn flush_once(&mut self, shard: usize) -> super::writes::Walked {
        let e = &mut self.engines[shard];
        let walked = e.flush(|pipe, outbox| outbox.flush(&mut PipeWriter(&mut pipe.borrow_mut())));
        while let Some(effect) = e.poll_effect() {
            if let Effect::Closed { socket, reset } = effect {
                socket.borrow_mut().closed = Some(reset);
            }
        }
        walked
    }

    /// Sends a text message from a client and lets its shard handle it, writing nothing: what
    /// it queued waits for the next [`flush_once`](Self::flush_once) or [`step`](Self::step).
    pub fn send_unflushed(&mut self, c: &mut Client, v: Value) {
        let mut io = ClientIo {
            rx: &mut Vec::new(),
            tx: &mut c.tx,
        };
        c.ws.write(&mut io, Message::text(v.to_string()))
            .expect("client write");
        c.ws.flush(&mut io).expect("client flush");
        let bytes = std::mem::take(&mut c.tx);
        self.engines[c.shard].handle_input(c.id, Input::Bytes(&bytes), self.clock);
    }

    /// Carries routed messages between engines and flushes every engine until all is quiet.
    pub fn step(&mut self) {
        loop {
            let mut moved = false;
            for (i, e) in self.engines.iter_mut().enumerate() {
                let msgs: Vec<ShardMsg> = self.queues.q[i].lock().unwrap().drain(..).collect();
                moved |= !msgs.is_empty();
                for m in msgs {
                    e.handle_inbox(m, self.clock);
                }
            }
            for i in 0..self.engines.len() {
                self.flush_once(i);
            }
            if !moved && !self.engines.iter().any(Engine::has_pending) {
                return;
            }
        }
    }

    /// Moves the clock by `d`, one tick at a time, stopping as well at every flush deadline of
    /// held output (`write_delay`), firing timers and settling after each.
    pub fn advance(&mut self, d: Duration) {
        let tick = self.hub.config().tick.as_nanos() as u64;
        let end = self.clock + d.as_nanos() as u64;
        while self.clock < end {
            let held = self.engines.iter().filter_map(Engine::flush_deadline).min();
            let next = held.map_or(self.clock + tick, |h| {
                h.clamp(self.clock + 1, self.clock + tick)
            });
            self.clock = next.min(end);
            for e in &mut self.engines {
                e.handle_timeout(self.clock);
            }
            self.step();
        }
    }

    /// Reads what the server sent a client: decodes its frames (answering pings, as a client
    /// that reads does) into the client's inbox.
    pub fn read(&mut self, c: &mut Client) {
        let mut rx = std::mem::take(&mut c.pipe.borrow_mut().to_client);
        loop {
            let mut io = ClientIo {
                rx: &mut rx,
                tx: &mut c.tx,
            };
            match c.ws.read(&mut io) {
                Ok(m) => c.inbox.push_back(m),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        self.push_client(c);
    }

    /// The next text message of `kind` the client received, skipping control frames and
    /// presence events and counts unless asked for.
    pub fn expect(&mut self, c: &mut Client, kind: &str) -> Value {
        self.read(c);
        while let Some(m) = c.inbox.pop_front() {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON from the server");
                if v["type"] == kind {
                    return v;
                }
                if !matches!(v["type"].as_str(), Some("joined" | "left" | "presence")) {
                    panic!("expected {kind}, got {v}");
                }
            }
        }
        panic!("expected {kind}, got nothing");
    }

    /// Every text message the client received since the last look, parsed.
    pub fn texts(&mut self, c: &mut Client) -> Vec<Value> {
        self.read(c);
        c.inbox
            .drain(..)
            .filter_map(|m| match m {
                Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
                _ => None,
            })
            .collect()
    }

    /// The client reads again: its socket is writable.
    pub fn resume_reading(&mut self, c: &Client) {
        c.pipe.borrow_mut().window = None;
        self.resume_writes(c);
    }

    /// The client's socket can take bytes again (after [`Client::window`]).
    pub fn resume_writes(&mut self, c: &Client) {
        self.engines[c.shard].handle_writable(c.id);
        self.step();
    }

    /// The close code the client received, if a close frame arrived.
    pub fn close_code(&mut self, c: &mut Client) -> Option<u16> {
        self.close_frame(c).map(|(code, _)| code)
    }

    /// The code and reason of the close frame the client received, if one arrived.
    pub fn close_frame(&mut self, c: &mut Client) -> Option<(u16, String)> {
        self.read(c);
        c.inbox.iter().find_map(|m| match m {
            Message::Close(f) => Some(f.as_ref().map_or((NO_STATUS, String::new()), |f| {
                (u16::from(f.code), f.reason.to_string())
            })),
            _ => None,
        })
    }
}

impl Client {
    /// Forgets what the server sent (a fuzz target that never reads keeps memory flat).
    pub fn discard_output(&self) {
        self.pipe.borrow_mut().to_client.clear();
    }

    /// The client stops reading: the server can write nothing more to it.
    pub fn stop_reading(&self) {
        self.pipe.borrow_mut().window = Some(0);
    }

    /// The client's side takes `bytes` more without the client reading them (a kernel buffer).
    pub fn window(&self, bytes: usize) {
        self.pipe.borrow_mut().window = Some(bytes);
    }

    /// Whether the server dropped the connection, and whether with a reset.
    pub fn dropped(&self) -> Option<bool> {
        self.pipe.borrow().closed
    }

    /// Write calls the server made on this connection so far (each a `writev`).
    pub fn writes(&self) -> usize {
        self.pipe.borrow().writes
    }
}
