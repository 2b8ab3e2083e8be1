//! Cluster mode: shardhub nodes form one hub over NATS or Redis (`--cluster URL`).
//!
//! One bus client per process, on its own thread ([`bus`]), talks to the shards only through
//! the router: a delivery from another node is routed exactly like a local one, and a local
//! delivery with recipients elsewhere leaves through the [`Link`], whose bounded queue never
//! blocks a shard (a full queue tells the sender `overloaded`, as a full inbox does).
//!
//! What goes where ([`wire::Channel`]):
//! * a room's publications and presence events on the room's channel, to which a node
//!   subscribes only while it has members there: a publish crosses the bus once and reaches
//!   only nodes with members;
//! * direct messages and commands on a session (close, join, leave) on the channel of the node
//!   that holds the user or session, found in the [`view::View`] of the others' sessions;
//! * broadcasts on one channel every node reads;
//! * heartbeats, session deltas and snapshots on the control channel ([`view`] has the
//!   consistency model);
//! * with Redis, publications to rooms with history through a Lua script that numbers and
//!   keeps them before publishing them on the room's channel, and the reads of joining members
//!   ([`history`]; the member's side is `engine/recovery.rs`).
//!
//! Session ids carry their node's tag (`SessionId::node_tag`), so any node can route a command
//! on any session. docs/cluster.md is the user's guide.

pub(crate) mod bus;
pub mod history;
mod remote;
mod transport;
pub mod view;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use view::View;
use wire::Channel;

/// Envelopes waiting for the bus thread: a few seconds of a busy node's cross-node traffic.
/// Past it, deliveries are refused and the sender told (`overloaded`).
pub const OUTBOUND_CAPACITY: usize = 65_536;

/// One envelope on its way to the bus.
#[derive(Debug)]
pub struct Outbound {
    /// Where it goes.
    pub channel: Channel,
    /// The envelope.
    pub payload: Vec<u8>,
    /// Work on a room's history in Redis instead of a plain publish (`history`).
    pub history: Option<history::HistoryOp>,
}

/// The shards' (and the hub's) handle on the cluster: the node's identity, the queue to the
/// bus thread, and what is known of the other nodes.
#[derive(Debug)]
pub struct Link {
    /// This node's name (`--node`).
    pub node: String,
    /// The node part of this node's session ids.
    pub tag: u16,
    /// Drawn at startup: the others tell a restart of this node from its previous life by it.
    pub epoch: u64,
    out: mpsc::Sender<Outbound>,
    view: Mutex<View>,
    /// Wakes the bus thread when the directory's journal needs it (`Directory::watch`).
    pub(crate) wake: Arc<Notify>,
    /// The bus counters.
    pub stats: Arc<BusStats>,
    /// The view's clock: [`now`](Self::now) counts from here.
    clock: std::time::Instant,
    /// Whether room history lives in the bus (Redis).
    pub history: bool,
}

impl Link {
    /// A link for node `node`, with the receiving end of its queue (for [`bus::start`]);
    /// `history`: room history lives in the bus (Redis).
    pub fn new(node: &str, history: bool) -> (Arc<Self>, mpsc::Receiver<Outbound>) {
        let (out, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let tag = wire::tag_of(node);
        let link = Self {
            node: node.to_string(),
            tag,
            epoch: random(),
            out,
            view: Mutex::new(View::new(node, tag)),
            wake: Arc::new(Notify::new()),
            stats: Arc::default(),
            clock: std::time::Instant::now(),
            history,
        };
        (Arc::new(link), rx)
    }

    /// Queues an envelope for the bus; `false` if the queue is full (counted).
    pub fn send(&self, channel: Channel, payload: Vec<u8>) -> bool {
        self.send_op(channel, payload, None)
    }

    /// Queues an envelope, or work on a room's history, for the bus; `false` if the queue is
    /// full (counted).
    pub fn send_op(
        &self,
        channel: Channel,
        payload: Vec<u8>,
        history: Option<history::HistoryOp>,
    ) -> bool {
        let out = Outbound {
            channel,
            payload,
            history,
        };
        match self.out.try_send(out) {
            Ok(()) => true,
            Err(_) => {
                self.stats.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Nanoseconds on the view's clock.
    pub fn now(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// What is known of the other nodes.
    pub fn view(&self) -> MutexGuard<'_, View> {
        // A panic while holding the lock leaves the view no worse than the panic itself.
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The bus counters (`shardhub_bus_*` in `/metrics`). Written by the bus thread and, for
/// `dropped`, by any thread: atomic increments.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Whether the bus connection is up.
    pub connected: AtomicBool,
    /// Envelopes published.
    pub published: AtomicU64,
    /// Bytes published.
    pub bytes_out: AtomicU64,
    /// Envelopes received from other nodes.
    pub received: AtomicU64,
    /// Envelopes refused because the queue to the bus thread was full.
    pub dropped: AtomicU64,
    /// Envelopes the bus client failed to publish.
    pub publish_errors: AtomicU64,
    /// Times the connection was lost.
    pub disconnects: AtomicU64,
    /// Times it came back.
    pub reconnects: AtomicU64,
    /// Room history operations (publishes, reads, resets) Redis failed or did not answer.
    pub history_errors: AtomicU64,
}

/// A snapshot of the bus counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BusCounters {
    /// Whether the bus connection is up.
    pub connected: bool,
    /// Envelopes published.
    pub published: u64,
    /// Bytes published.
    pub bytes_out: u64,
    /// Envelopes received from other nodes.
    pub received: u64,
    /// Envelopes refused because the queue to the bus thread was full.
    pub dropped: u64,
    /// Envelopes the bus client failed to publish.
    pub publish_errors: u64,
    /// Times the connection was lost.
    pub disconnects: u64,
    /// Times it came back.
    pub reconnects: u64,
    /// Room history operations Redis failed or did not answer.
    pub history_errors: u64,
}

impl BusStats {
    /// The counters now.
    pub fn snapshot(&self) -> BusCounters {
        BusCounters {
            connected: self.connected.load(Relaxed),
            published: self.published.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            received: self.received.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            publish_errors: self.publish_errors.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            history_errors: self.history_errors.load(Relaxed),
        }
    }

    pub(crate) fn set_connected(&self, up: bool) {
        let was = self.connected.swap(up, Relaxed);
        if was && !up {
            self.disconnects.fetch_add(1, Relaxed);
            log::warn!("cluster bus: connection lost; local delivery goes on, reconnecting");
        }
    }

    pub(crate) fn reconnected(&self) {
        if self.connected.swap(true, Relaxed) {
            return; // the first connection (NATS says so too)
        }
        self.reconnects.fetch_add(1, Relaxed);
        log::info!("cluster bus: connected again, subscriptions restored");
    }

    pub(crate) fn nats_event(&self, ev: &async_nats::Event) {
        match ev {
            async_nats::Event::Disconnected => self.set_connected(false),
            async_nats::Event::Connected => self.reconnected(),
            async_nats::Event::SlowConsumer(_) => {
                log::warn!("cluster bus: NATS dropped messages for a slow subscription");
            }
            _ => {}
        }
    }
}

/// A random `u64` from the operating system's hasher keys (no extra dependency; not for
/// cryptography: epochs and backoff jitter).
pub(crate) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A default node name: the host name and the process id, unique on one machine.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    format!("{host}-{}", std::process::id())
}
