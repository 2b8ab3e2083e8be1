//! The thread-safe handle to a running server: reach sessions, users and rooms from anywhere.
//!
//! A [`Hub`] is cheap to clone and usable from any thread (an HTTP handler, a timer, a message
//! bus consumer) as well as from hooks on a shard. Sends encode the frame once and hand it to
//! the router ([`crate::engine::router`]), exactly as a client's request is; they return as
//! soon as it is queued, not when it is written, and say so when an overloaded shard did not
//! take it.

use std::sync::Arc;

use crate::config::Config;
use crate::engine::directory::{Directory, RoomInfo, SessionInfo};
use crate::engine::ids::SessionId;
use crate::engine::offline::Refusal;
use crate::engine::router::{self, Bus, Route, Routed, Router, ShardMsg};
use crate::hooks::Hooks;
use crate::http::api::SERVER_SENDER;
use crate::metrics::{Histograms, ShardStats, Stats};
use crate::protocol::close::Close;
use crate::protocol::frame::{self, Frame, OpCode};
use crate::protocol::reply;

/// A message body for the hub's send functions: text or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame.
    Binary(&'a [u8]),
}

impl<'a> From<&'a str> for Payload<'a> {
    fn from(s: &'a str) -> Self {
        Payload::Text(s)
    }
}

impl<'a> From<&'a String> for Payload<'a> {
    fn from(s: &'a String) -> Self {
        Payload::Text(s)
    }
}

impl<'a> From<&'a [u8]> for Payload<'a> {
    fn from(b: &'a [u8]) -> Self {
        Payload::Binary(b)
    }
}

impl Payload<'_> {
    fn frame(self) -> Frame {
        match self {
            Payload::Text(t) => frame::encode(OpCode::Text, t.as_bytes()),
            Payload::Binary(b) => frame::encode(OpCode::Binary, b),
        }
    }
}

/// Why a hub operation did nothing, or not everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// No open session has this id.
    NoSuchSession(SessionId),
    /// No room has this name.
    NoSuchRoom(String),
    /// Some shards' inboxes were full (the server is overloaded), or the queue to the cluster
    /// bus was: their recipients did not get the message; the others did.
    Overloaded {
        /// The shards that missed it, as a bit mask.
        shards: u64,
        /// Whether the other nodes of the cluster missed it.
        bus: bool,
    },
    /// This server cannot do it in its mode; the message says why (room history in cluster
    /// mode).
    Unsupported(&'static str),
    /// The offline store refused the message (off, the message too large, or the node's
    /// bounds reached); the message says which.
    StoreFull(String),
}

/// What [`Hub::send_direct`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Sessions the message went to (0: the user is not online anywhere).
    pub sessions: usize,
    /// Its message id (`mid`), when it was stored.
    pub mid: Option<String>,
    /// `Some(evicted)` when it was stored for the offline user, with the user's older
    /// messages pushed out to make room.
    pub stored: Option<usize>,
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSuchSession(id) => write!(f, "no session {id}"),
            Self::NoSuchRoom(r) => write!(f, "no room {r}"),
            Self::Unsupported(why) => f.write_str(why),
            Self::StoreFull(why) => f.write_str(why),
            Self::Overloaded { shards, bus } => {
                f.write_str("server overloaded: ")?;
                if *shards != 0 {
                    let list = router::shard_list(*shards);
                    write!(f, "shard(s) {list} did not take the message")?;
                }
                if *bus {
                    let and = if *shards != 0 { "; " } else { "" };
                    write!(f, "{and}the cluster bus did not take it")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for HubError {}

/// Why room history is refused in cluster mode.
pub(crate) const HISTORY_IN_CLUSTER: &str = "room history in cluster mode needs a Redis bus \
     (--cluster redis://...): with NATS, positions would be one node's alone \
     (docs/cluster.md#history-and-recovery)";

/// A random seed per process for room epochs (std's per-process random hash keys, plus the
/// time): a restarted server never repeats an epoch.
fn epoch_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(t);
    h.write_u32(std::process::id());
    h.finish()
}

/// State shared by the shards and every hub handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) hooks: Hooks,
    /// Admission policy and abuse limits.
    pub(crate) gate: crate::auth::Gate,
    /// The one routing path, with the directory it reads.
    pub(crate) router: Router,
    pub(crate) stats: Vec<Arc<ShardStats>>,
    /// TCP connections open on all shards (upgraded or not), for `max_connections`.
    pub(crate) open: std::sync::atomic::AtomicUsize,
    /// Each shard's latency histograms, merged in by the shard once per tick.
    pub(crate) histograms: Vec<std::sync::Mutex<Histograms>>,
    /// The last second's histograms over every shard, merged in with the same values.
    pub(crate) recent: std::sync::Mutex<crate::metrics::RecentHistograms>,
    /// When the server was built (uptime, and the clock of `heartbeats`).
    pub(crate) started: std::time::Instant,
    /// Each shard's last timer tick, in milliseconds since `started`: `/ready` checks that
    /// every reactor is still turning.
    pub(crate) heartbeats: Vec<std::sync::atomic::AtomicU64>,
    /// The cluster link, in cluster mode.
    pub(crate) cluster: Option<Arc<crate::cluster::Link>>,
    /// Direct messages kept for offline users (`engine::offline`).
    pub(crate) offline: crate::engine::offline::OfflineStore,
}

impl Shared {
    /// This node's tag in session ids (0 outside a cluster).
    pub(crate) fn node_tag(&self) -> u16 {
        self.cluster.as_ref().map_or(0, |l| l.tag)
    }

    /// The shared state of a server with `config`, `hooks` and shards reached through `bus`.
    pub(crate) fn new(
        config: Config,
        hooks: Hooks,
        bus: Box<dyn Bus>,
        cluster: Option<Arc<crate::cluster::Link>>,
    ) -> Result<Self, crate::ConfigError> {
        let remote = cluster
            .clone()
            .map(|l| l as Arc<dyn crate::engine::router::Remote>);
        Self::build(config, hooks, bus, cluster, remote)
    }

    /// The shared state of a node whose other nodes are `remote` (the simulation's stand-in
    /// for a cluster, without a bus thread).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn with_remote(
        config: Config,
        hooks: Hooks,
        bus: Box<dyn Bus>,
        remote: Arc<dyn crate::engine::router::Remote>,
    ) -> Result<Self, crate::ConfigError> {
        Self::build(config, hooks, bus, None, Some(remote))
    }

    fn build(
        config: Config,
        hooks: Hooks,
        bus: Box<dyn Bus>,
        cluster: Option<Arc<crate::cluster::Link>>,
        remote: Option<Arc<dyn crate::engine::router::Remote>>,
    ) -> Result<Self, crate::ConfigError> {
        let n = bus.shards();
        let directory =
            Directory::new(config.default_room_capacity, config.room_capacities.clone())
                .with_session_slots(config.reserved_slots_per_shard())
                .with_sse_history(config.sse_history)
                .with_history(
                    config.history(),
                    config
                        .history_rooms
                        .iter()
                        .map(|(room, h)| {
                            let policy = crate::engine::history::HistoryPolicy {
                                size: h.size,
                                ttl: h.ttl,
                            };
                            (room.clone(), policy)
                        })
                        .collect(),
                    cluster.is_none(),
                    epoch_seed(),
                );
        if let Some(link) = &cluster {
            let wake = link.wake.clone();
            directory.watch(Arc::new(move || wake.notify_one()));
        }
        let gate = crate::auth::Gate::new(&config, hooks.authenticate.clone())?;
        // The wall clock at the engines' epoch (near enough: read together), for the `ts` of
        // stored messages; the engines themselves never read a clock.
        let unix_epoch_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_sub(gate.epoch.elapsed().as_millis() as u64);
        let offline = crate::engine::offline::OfflineStore::new(
            crate::engine::offline::Limits::of(&config),
            hooks.on_stored.clone(),
            unix_epoch_ms,
        );
        Ok(Self {
            offline,
            config,
            gate,
            hooks,
            router: Router::new(directory, bus, remote),
            cluster,
            stats: (0..n).map(|_| Arc::new(ShardStats::default())).collect(),
            open: Default::default(),
            histograms: (0..n).map(|_| Default::default()).collect(),
            recent: std::sync::Mutex::new(crate::metrics::RecentHistograms::new(
                std::time::Instant::now(),
            )),
            started: std::time::Instant::now(),
            heartbeats: (0..n).map(|_| Default::default()).collect(),
        })
    }
}

/// A cloneable, thread-safe handle to the server. See the module docs.
#[derive(Debug, Clone)]
pub struct Hub {
    pub(crate) shared: Arc<Shared>,
}

impl Hub {
    fn directory(&self) -> &Directory {
        self.shared.router.directory()
    }

    /// Routes from outside the shards; a shard (or the cluster bus) that missed it is an
    /// error.
    fn route(&self, route: Route<'_>) -> Result<Routed, HubError> {
        let routed = self.shared.router.route(None, route);
        match (routed.missed, routed.bus_dropped) {
            (0, false) => Ok(routed),
            (shards, bus) => Err(HubError::Overloaded { shards, bus }),
        }
    }

    fn session_exists(&self, id: SessionId) -> Result<(), HubError> {
        if self.shared.router.has_session(id) {
            Ok(())
        } else {
            Err(HubError::NoSuchSession(id))
        }
    }

    /// Sends to every session. Fails only if some shard is overloaded (the others got it).
    pub fn broadcast<'a>(&self, msg: impl Into<Payload<'a>>) -> Result<(), HubError> {
        self.broadcast_frame(msg.into().frame(), None)
    }

    /// Sends to every session but one (Melody's `BroadcastOthers`).
    pub fn broadcast_others<'a>(
        &self,
        msg: impl Into<Payload<'a>>,
        except: SessionId,
    ) -> Result<(), HubError> {
        self.broadcast_frame(msg.into().frame(), Some(except))
    }

    pub(crate) fn broadcast_frame(
        &self,
        frame: Frame,
        exclude: Option<SessionId>,
    ) -> Result<(), HubError> {
        self.route(Route::Broadcast { frame, exclude }).map(drop)
    }

    /// Sends to one session.
    pub fn send_to_session<'a>(
        &self,
        id: SessionId,
        msg: impl Into<Payload<'a>>,
    ) -> Result<(), HubError> {
        self.session_exists(id)?;
        let frame = msg.into().frame();
        self.route(Route::Session(ShardMsg::Session { id, frame }))
            .map(drop)
    }

    /// Sends to every session of a user, on any shard; returns how many sessions it went to
    /// (0: the user is not online).
    pub fn send_to_user<'a>(
        &self,
        user: &str,
        msg: impl Into<Payload<'a>>,
    ) -> Result<usize, HubError> {
        self.send_frame_to_user(user, msg.into().frame())
    }

    pub(crate) fn send_frame_to_user(&self, user: &str, frame: Frame) -> Result<usize, HubError> {
        self.route(Route::User { user, frame }).map(|r| r.sessions)
    }

    /// Sends JSON `data` to every session of `user` as a `direct` message from `"server"`
    /// (the envelope `POST /api/v1/send` uses). With `store` and no session anywhere, keeps it
    /// for the user's next session instead (`docs/protocol.md`, "Offline messages"). `data`
    /// must be valid JSON text (it is copied into the frame as it is).
    pub fn send_direct(&self, user: &str, data: &str, store: bool) -> Result<Sent, HubError> {
        let frame = |mark: reply::DirectMark<'_>| {
            let mut out = Vec::with_capacity(data.len() + 96);
            reply::direct_head(&mut out, SERVER_SENDER, 0, mark);
            out.extend_from_slice(data.as_bytes());
            out.push(b'}');
            crate::protocol::frame::encode(OpCode::Text, &out)
        };
        let routed = self.route(Route::User {
            user,
            frame: frame(Default::default()),
        })?;
        let sent = |sessions| Sent {
            sessions,
            mid: None,
            stored: None,
        };
        if routed.sessions > 0 || !store {
            return Ok(sent(routed.sessions));
        }
        let offline = &self.shared.offline;
        let now = self.now_ns();
        let mid = offline.server_mid(self.shared.node_tag());
        let mark = reply::DirectMark {
            mid: Some(&mid),
            ack: false,
            stored_at: Some(offline.unix_ms(now)),
        };
        let msg = crate::engine::offline::Stored {
            mid: mid.as_str().into(),
            from: SERVER_SENDER.into(),
            at: now,
            frame: frame(mark),
        };
        let router = &self.shared.router;
        match offline.store_if_offline(user, msg, now, || router.user_online(user)) {
            Ok(o) => Ok(Sent {
                sessions: 0,
                mid: Some(mid),
                stored: Some(o.evicted),
            }),
            // Online after all: deliver it live.
            Err(Refusal::Online) => self
                .route(Route::User {
                    user,
                    frame: frame(Default::default()),
                })
                .map(|r| sent(r.sessions)),
            Err(Refusal::Full(why)) => Err(HubError::StoreFull(why)),
        }
    }

    /// The messages kept for offline `user` on this node, oldest first, as the JSON text its
    /// next session will get (they stay kept).
    pub fn offline_messages(&self, user: &str) -> Vec<String> {
        self.shared
            .offline
            .peek(user)
            .iter()
            .map(|m| String::from_utf8_lossy(crate::http::sse::ws_payload(&m.frame)).into_owned())
            .collect()
    }

    /// Offline users with messages kept on this node, and those messages.
    pub fn offline_size(&self) -> (usize, usize) {
        let (users, messages, _) = self.shared.offline.size();
        (users, messages)
    }

    /// Publishes to a room's members (raw payload, not wrapped in the JSON protocol); returns
    /// the publication's position in the room's log (0 while the room keeps none).
    pub fn publish<'a>(&self, room: &str, msg: impl Into<Payload<'a>>) -> Result<u64, HubError> {
        self.publish_frame(room, msg.into().frame())
    }

    pub(crate) fn publish_frame(&self, room: &str, frame: Frame) -> Result<u64, HubError> {
        let shared = match self.directory().room(room) {
            Some(shared) => shared,
            // Members on other nodes only: the publication goes to them through the bus.
            None if self.shared.router.remote_members(room) > 0 => {
                crate::engine::directory::RoomShared::elsewhere(
                    room,
                    self.directory().history_of(room),
                )
            }
            None => return Err(HubError::NoSuchRoom(room.into())),
        };
        let route = Route::Publish {
            room: &shared,
            frame,
            exclude: None,
            now: self.now_ns(),
        };
        self.route(route).map(|r| r.seq)
    }

    /// Closes a session with a close code and reason. Prefer a code of [`Close`]'s table, or
    /// the application's 4000-4999, so that the client knows whether to reconnect
    /// ([`reconnects`](crate::protocol::close::reconnects)).
    pub fn close_session(&self, id: SessionId, code: u16, reason: &str) -> Result<(), HubError> {
        self.session_exists(id)?;
        let reason = reason.to_string();
        self.route(Route::Session(ShardMsg::Close { id, code, reason }))
            .map(drop)
    }

    /// Closes a session with one of the table's closes and its reason: typically
    /// [`Close::ForceReconnect`] (come back, e.g. to another node) or [`Close::ForceDisconnect`]
    /// (do not).
    pub fn disconnect(&self, id: SessionId, close: Close) -> Result<(), HubError> {
        self.close_session(id, close.code(), close.reason())
    }

    /// Asks a session's shard to join it to a room, exactly as if the client had sent a `join`
    /// request (the client receives the `ack` or `error`, presence is announced).
    pub fn join(&self, id: SessionId, room: &str) -> Result<(), HubError> {
        self.session_exists(id)?;
        let room = room.to_string();
        self.route(Route::Session(ShardMsg::Join { id, room }))
            .map(drop)
    }

    /// Asks a session's shard to remove it from a room, as if the client had sent `leave`.
    pub fn leave(&self, id: SessionId, room: &str) -> Result<(), HubError> {
        self.session_exists(id)?;
        let room = room.to_string();
        self.route(Route::Session(ShardMsg::Leave { id, room }))
            .map(drop)
    }

    /// Creates a room that stays when empty, with a capacity (0 is unlimited), or changes an
    /// existing room's capacity.
    pub fn create_room(&self, room: &str, capacity: usize) {
        self.directory().create_room(room, capacity);
    }

    /// Sets a room's history: the last `size` publications (0: none), each kept for `ttl`
    /// (zero: until pushed out), from now on and whenever the room is created again; overrides
    /// `history_size`/`history_ttl` and the config file's `history_rooms`. In cluster mode only
    /// with a Redis bus, and for this node's publications and joins: give every node the same
    /// settings (docs/cluster.md, "History and recovery"); the room's history in Redis is
    /// dropped, so its next publication starts a new epoch.
    pub fn set_room_history(
        &self,
        room: &str,
        size: usize,
        ttl: std::time::Duration,
    ) -> Result<(), HubError> {
        if self.shared.cluster.as_ref().is_some_and(|l| !l.history) {
            return Err(HubError::Unsupported(HISTORY_IN_CLUSTER));
        }
        if size > crate::config::MAX_HISTORY_SIZE {
            return Err(HubError::Unsupported("history size over MAX_HISTORY_SIZE"));
        }
        let policy = crate::engine::history::HistoryPolicy { size, ttl };
        self.directory().set_history(room, policy);
        if let Some(link) = &self.shared.cluster {
            // A reset: the stream kept under the old settings goes, with its epoch.
            let op = crate::cluster::history::HistoryOp::Reset {
                room: room.to_string(),
            };
            let channel = crate::cluster::wire::Channel::Room(room.to_string());
            if !link.send_op(channel, Vec::new(), Some(op)) {
                return Err(HubError::Overloaded {
                    shards: 0,
                    bus: true,
                });
            }
        }
        Ok(())
    }

    /// A room's stream position, `(offset, epoch)`, when it keeps one (WebSocket clients see
    /// it: single node, the room has history or an SSE reader).
    pub fn room_position(&self, room: &str) -> Option<(u64, String)> {
        let shared = self.directory().room(room)?;
        if !(shared.log.is_active() && shared.log.stamps()) {
            return None;
        }
        let (offset, epoch) = shared.log.position();
        Some((offset, epoch.to_string()))
    }

    /// Now on the engines' clock (nanoseconds since the server was built): the time a
    /// publication from outside the shards is kept at.
    pub(crate) fn now_ns(&self) -> u64 {
        let e = self.shared.gate.epoch.elapsed();
        e.as_nanos().min(u128::from(u64::MAX)) as u64
    }

    /// A room's members on every node: (session, user).
    pub fn room_members(&self, room: &str) -> Option<Vec<(SessionId, Arc<str>)>> {
        self.shared.router.members(room)
    }

    /// A room's member count (on every node) and this node's capacity for it.
    pub fn room(&self, room: &str) -> Option<RoomInfo> {
        let remote = self.shared.router.remote_members(room);
        match self.directory().room_info(room) {
            Some(mut r) => {
                r.members += remote;
                Some(r)
            }
            None if remote > 0 => Some(RoomInfo {
                name: room.to_string(),
                members: remote,
                capacity: 0,
            }),
            None => None,
        }
    }

    /// Every room, on every node.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.shared.router.rooms()
    }

    /// Open sessions on every node.
    pub fn session_count(&self) -> usize {
        self.shared.router.session_count()
    }

    /// Open sessions on this node.
    pub fn session_count_local(&self) -> usize {
        self.directory().session_count()
    }

    /// Every open session (a snapshot).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.directory().sessions()
    }

    /// One session of this node, if open.
    pub fn session(&self, id: SessionId) -> Option<SessionInfo> {
        self.directory().session(id)
    }

    /// Whether a user has at least one session, on any node.
    pub fn is_online(&self, user: &str) -> bool {
        self.directory().user_shards(user).1 > 0
            || self
                .shared
                .router
                .remote()
                .is_some_and(|r| r.user_sessions(user) > 0)
    }

    /// Distinct users online on every node, with their session counts, sorted by user id.
    pub fn users(&self) -> Vec<(Arc<str>, usize)> {
        self.shared.router.users()
    }

    /// Counters summed over shards (cross-shard drops included).
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for shard in &self.shared.stats {
            s.add(shard);
        }
        s.add_drops(self.shared.router.drops());
        s
    }

    /// The cluster bus counters (`None` outside a cluster).
    pub fn bus_stats(&self) -> Option<crate::cluster::BusCounters> {
        self.shared.cluster.as_ref().map(|l| l.stats.snapshot())
    }

    /// This node's name and the other nodes of its cluster as last heard (`None` outside a
    /// cluster).
    pub fn cluster_nodes(&self) -> Option<(String, Vec<crate::cluster::view::NodeInfo>)> {
        let link = self.shared.cluster.as_ref()?;
        Some((link.node.clone(), link.view().nodes(link.now())))
    }

    /// Each shard's counters, with the messages its inbox refused.
    pub fn shard_stats(&self) -> Vec<Stats> {
        let drops = self.shared.router.drops();
        self.shared
            .stats
            .iter()
            .zip(drops)
            .map(|(shard, d)| {
                let mut s = Stats::default();
                s.add(shard);
                s.add_drops(std::slice::from_ref(d));
                s
            })
            .collect()
    }

    /// Latency histograms (fan-out time, reactor iteration time) merged over shards, as of the
    /// last tick.
    pub fn histograms(&self) -> Histograms {
        let mut all = Histograms::default();
        for h in &self.shared.histograms {
            all.add(&h.lock().unwrap_or_else(|e| e.into_inner()));
        }
        all
    }

    /// The latency histograms of the last complete window of about a second, merged over
    /// shards, and the window's length (zero, with empty histograms, before the first window
    /// closed or when the shards stopped): what a live view plots. See
    /// [`RecentHistograms`](crate::metrics::RecentHistograms).
    pub fn recent_histograms(&self) -> (Histograms, std::time::Duration) {
        self.shared
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last(std::time::Instant::now())
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}
