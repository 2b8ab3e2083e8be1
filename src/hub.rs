//! The thread-safe handle to a running server: reach sessions, users and rooms from anywhere.
//!
//! A [`Hub`] is cheap to clone and usable from any thread (an HTTP handler, a timer, a message
//! bus consumer) as well as from hooks on a shard. Sends encode the frame once and hand it to
//! the shards that need it; they return as soon as it is queued, not when it is written.

use std::sync::Arc;

use crate::config::Config;
use crate::engine::directory::{Directory, RoomInfo, SessionInfo};
use crate::engine::ids::SessionId;
use crate::hooks::Hooks;
use crate::metrics::{Histograms, ShardStats, Stats};
use crate::protocol::frame::{self, Frame, OpCode};
use crate::shard::bus::{Mailbox, ShardMsg};

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

/// Why a hub operation did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// No open session has this id.
    NoSuchSession(SessionId),
    /// No room has this name.
    NoSuchRoom(String),
    /// A shard's inbox is full (the server is overloaded); nothing was queued there.
    Busy,
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSuchSession(id) => write!(f, "no session {id}"),
            Self::NoSuchRoom(r) => write!(f, "no room {r}"),
            Self::Busy => f.write_str("server busy"),
        }
    }
}

impl std::error::Error for HubError {}

/// State shared by the shards and every hub handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) hooks: Hooks,
    /// Admission policy and abuse limits.
    pub(crate) gate: crate::auth::Gate,
    pub(crate) directory: Directory,
    pub(crate) mailboxes: Vec<Mailbox>,
    pub(crate) stats: Vec<Arc<ShardStats>>,
    /// TCP connections open on all shards (upgraded or not), for `max_connections`.
    pub(crate) open: std::sync::atomic::AtomicUsize,
    /// Each shard's latency histograms, merged in by the shard once per tick.
    pub(crate) histograms: Vec<std::sync::Mutex<Histograms>>,
    /// When the server was built (uptime, and the clock of `heartbeats`).
    pub(crate) started: std::time::Instant,
    /// Each shard's last timer tick, in milliseconds since `started`: `/ready` checks that
    /// every reactor is still turning.
    pub(crate) heartbeats: Vec<std::sync::atomic::AtomicU64>,
}

/// A cloneable, thread-safe handle to the server. See the module docs.
#[derive(Debug, Clone)]
pub struct Hub {
    pub(crate) shared: Arc<Shared>,
}

impl Hub {
    fn post(&self, shard: usize, msg: ShardMsg) -> Result<(), HubError> {
        let mb = self.shared.mailboxes.get(shard).ok_or(HubError::Busy)?;
        mb.send(msg).map_err(|_| {
            self.shared.stats[shard].bus_drops.add(1);
            HubError::Busy
        })
    }

    fn shards_in(&self, mask: u64) -> impl Iterator<Item = usize> + '_ {
        (0..self.shared.mailboxes.len()).filter(move |s| mask & (1 << s) != 0)
    }

    /// Sends to every session. Fails only if a shard is overloaded (others still got it).
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

    fn broadcast_frame(&self, frame: Frame, exclude: Option<SessionId>) -> Result<(), HubError> {
        let mut res = Ok(());
        for s in 0..self.shared.mailboxes.len() {
            if let Err(e) = self.post(
                s,
                ShardMsg::All {
                    frame: frame.clone(),
                    exclude,
                },
            ) {
                res = Err(e);
            }
        }
        res
    }

    /// Sends to one session.
    pub fn send_to_session<'a>(
        &self,
        id: SessionId,
        msg: impl Into<Payload<'a>>,
    ) -> Result<(), HubError> {
        if self.shared.directory.session(id).is_none() {
            return Err(HubError::NoSuchSession(id));
        }
        self.post(
            id.shard(),
            ShardMsg::Session {
                id,
                frame: msg.into().frame(),
            },
        )
    }

    /// Sends to every session of a user, on any shard; returns how many sessions it went to
    /// (0: the user is not online).
    pub fn send_to_user<'a>(
        &self,
        user: &str,
        msg: impl Into<Payload<'a>>,
    ) -> Result<usize, HubError> {
        let (mask, count) = self.shared.directory.user_shards(user);
        if count == 0 {
            return Ok(0);
        }
        let frame = msg.into().frame();
        let user: Arc<str> = Arc::from(user);
        for s in self.shards_in(mask) {
            self.post(
                s,
                ShardMsg::User {
                    user: user.clone(),
                    frame: frame.clone(),
                },
            )?;
        }
        Ok(count)
    }

    /// Publishes to a room's members (raw payload, not wrapped in the JSON protocol).
    pub fn publish<'a>(&self, room: &str, msg: impl Into<Payload<'a>>) -> Result<(), HubError> {
        let shared = self
            .shared
            .directory
            .room(room)
            .ok_or_else(|| HubError::NoSuchRoom(room.into()))?;
        let frame = msg.into().frame();
        for s in self.shards_in(shared.shards()) {
            self.post(
                s,
                ShardMsg::Room {
                    room: shared.name.clone(),
                    frame: frame.clone(),
                    exclude: None,
                    seq: 0,
                },
            )?;
        }
        Ok(())
    }

    /// Closes a session with a close code and reason.
    pub fn close_session(&self, id: SessionId, code: u16, reason: &str) -> Result<(), HubError> {
        if self.shared.directory.session(id).is_none() {
            return Err(HubError::NoSuchSession(id));
        }
        self.post(
            id.shard(),
            ShardMsg::Close {
                id,
                code,
                reason: reason.into(),
            },
        )
    }

    /// Asks a session's shard to join it to a room, exactly as if the client had sent a `join`
    /// request (the client receives the `ack` or `error`, presence is announced).
    pub fn join(&self, id: SessionId, room: &str) -> Result<(), HubError> {
        if self.shared.directory.session(id).is_none() {
            return Err(HubError::NoSuchSession(id));
        }
        self.post(
            id.shard(),
            ShardMsg::Join {
                id,
                room: room.into(),
            },
        )
    }

    /// Asks a session's shard to remove it from a room, as if the client had sent `leave`.
    pub fn leave(&self, id: SessionId, room: &str) -> Result<(), HubError> {
        if self.shared.directory.session(id).is_none() {
            return Err(HubError::NoSuchSession(id));
        }
        self.post(
            id.shard(),
            ShardMsg::Leave {
                id,
                room: room.into(),
            },
        )
    }

    /// Creates a room that stays when empty, with a capacity (0 is unlimited), or changes an
    /// existing room's capacity.
    pub fn create_room(&self, room: &str, capacity: usize) {
        self.shared.directory.create_room(room, capacity);
    }

    /// A room's members: (session, user).
    pub fn room_members(&self, room: &str) -> Option<Vec<(SessionId, Arc<str>)>> {
        self.shared.directory.members(room)
    }

    /// A room's member count and capacity.
    pub fn room(&self, room: &str) -> Option<RoomInfo> {
        self.shared.directory.room_info(room)
    }

    /// Every room.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.shared.directory.rooms()
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.shared.directory.session_count()
    }

    /// Every open session (a snapshot).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared.directory.sessions()
    }

    /// One session, if open.
    pub fn session(&self, id: SessionId) -> Option<SessionInfo> {
        self.shared.directory.session(id)
    }

    /// Whether a user has at least one session.
    pub fn is_online(&self, user: &str) -> bool {
        self.shared.directory.user_shards(user).1 > 0
    }

    /// Counters summed over shards.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for shard in &self.shared.stats {
            s.add(shard);
        }
        s
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

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}
