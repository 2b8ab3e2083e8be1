//! The one routing path: every publish, broadcast, direct send, presence event, close, join and
//! leave, whether a client, a hook through the [`Hub`](crate::Hub), the HTTP API or (later) a
//! cluster bus asked for it, goes through [`Router::route`].
//!
//! `route` decides which shards hold recipients (a room's shard mask, a user's sessions in the
//! directory, every shard for a broadcast, the session's own shard), numbers room publications
//! ([`RoomLog`](super::history::RoomLog)), and posts one [`ShardMsg`] to each of those shards
//! through the [`Bus`]. The shard it is called from (`from`) gets its part back instead of
//! through its own inbox, so a client's publish reaches local members in the same reactor
//! iteration; either way the message is applied by the same `Engine::handle_inbox`.
//!
//! One drop policy: a shard whose inbox is full (or gone) does not get the message, and the
//! caller learns it ([`Routed::missed`]: the client gets `overloaded`, the HTTP API 503, the
//! `Hub` an `Err`). Nothing is retried or queued elsewhere, so a slow shard cannot make another
//! one block or grow without bound. The drops are counted here, per target shard and reason,
//! with atomic increments, since any thread may route.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::directory::{Directory, RoomShared};
use super::history::{HistoryPolicy, Since, StoredRead};
use super::ids::SessionId;
use crate::protocol::frame::{self, Frame};

/// Work for a shard, from its own engine, another shard or another thread.
#[derive(Debug, Clone)]
pub enum ShardMsg {
    /// Deliver to this shard's members of a room. `seq` is the publication's position in the
    /// room's log (0: the room keeps none).
    Room {
        /// The room.
        room: Arc<str>,
        /// The encoded frame.
        frame: Frame,
        /// A session that must not receive it (`exclude_self`).
        exclude: Option<SessionId>,
        /// The room log position (SSE event id).
        seq: u64,
    },
    /// Deliver a presence event to this shard's members of a room allowed to see it.
    Presence {
        /// The room.
        room: Arc<str>,
        /// The encoded `joined`/`left` frame.
        frame: Frame,
        /// The session the event is about.
        exclude: SessionId,
    },
    /// Deliver to every session on this shard.
    All {
        /// The encoded frame.
        frame: Frame,
        /// A session that must not receive it.
        exclude: Option<SessionId>,
    },
    /// Deliver to this shard's sessions of a user: the directory's list of them when the
    /// message was routed (one list for every shard, each taking its own).
    User {
        /// The user's sessions on this node.
        sessions: Arc<[SessionId]>,
        /// The encoded frame.
        frame: Frame,
    },
    /// Deliver to one session.
    Session {
        /// The session.
        id: SessionId,
        /// The encoded frame.
        frame: Frame,
    },
    /// A receipt for an acknowledged direct message, for its sender's shard (`acks.rs`).
    Receipt {
        /// The sending session (from the message id).
        id: SessionId,
        /// The send's number on that session's shard (from the message id).
        seq: u64,
        /// The user whose session sent the receipt.
        user: Arc<str>,
        /// That session.
        from: SessionId,
    },
    /// Close one session.
    Close {
        /// The session.
        id: SessionId,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Join a room on a session's behalf, as if it had asked.
    Join {
        /// The session.
        id: SessionId,
        /// The room.
        room: String,
    },
    /// Leave a room on a session's behalf, as if it had asked.
    Leave {
        /// The session.
        id: SessionId,
        /// The room.
        room: String,
    },
    /// The history store's answer for a member joining `room` (Redis cluster mode): the
    /// join finishes with it (`engine::recovery`).
    History {
        /// The joining session.
        id: SessionId,
        /// The room.
        room: Arc<str>,
        /// What the store said.
        read: StoredRead,
    },
    /// Stop accepting, close every session (`Close::Shutdown`), drain, exit.
    Shutdown,
}

impl ShardMsg {
    /// The session a message is about, if it is about one (a panic while applying it closes
    /// that session).
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Self::Session { id, .. }
            | Self::Receipt { id, .. }
            | Self::Close { id, .. }
            | Self::Join { id, .. }
            | Self::Leave { id, .. }
            | Self::History { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// Why a shard did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its inbox is full: it is overloaded.
    Full,
    /// It has stopped.
    Gone,
}

/// The transport between shards: bounded inboxes. The server's is crossbeam channels plus a
/// mio waker per shard (`shard::bus`); the simulation's is plain queues.
pub trait Bus: Send + Sync + fmt::Debug {
    /// The number of shards.
    fn shards(&self) -> usize;
    /// Queues a message for `shard` without blocking.
    fn post(&self, shard: usize, msg: ShardMsg) -> Result<(), Refused>;
    /// Whether `shard`'s inbox holds nothing (asked by that shard itself, see
    /// [`Router::route`]); `false` when the bus cannot tell, which is always safe.
    fn is_empty(&self, _shard: usize) -> bool {
        false
    }
}

/// What to route.
#[derive(Debug)]
pub enum Route<'a> {
    /// A publication to a room's members (numbered in the room's log).
    Publish {
        /// The room.
        room: &'a Arc<RoomShared>,
        /// The encoded frame.
        frame: Frame,
        /// A session that must not receive it.
        exclude: Option<SessionId>,
        /// Now, on the engine's clock (history expiry).
        now: u64,
    },
    /// A publication that already has its position in the room's stream (Redis cluster mode:
    /// Redis numbered it), from the bus: to this node's members, not numbered again.
    Numbered {
        /// The room.
        room: &'a Arc<RoomShared>,
        /// The frame, stamped with its offset.
        frame: Frame,
        /// A session that must not receive it.
        exclude: Option<SessionId>,
        /// Its offset.
        seq: u64,
    },
    /// A `joined`/`left` event to a room's members allowed to see its presence.
    Presence {
        /// The room.
        room: &'a Arc<RoomShared>,
        /// The encoded frame.
        frame: Frame,
        /// The session the event is about (it does not get it).
        about: SessionId,
    },
    /// A broadcast to every session.
    Broadcast {
        /// The encoded frame.
        frame: Frame,
        /// A session that must not receive it.
        exclude: Option<SessionId>,
    },
    /// A direct message to every session of a user.
    User {
        /// The user id.
        user: &'a str,
        /// The encoded frame.
        frame: Frame,
    },
    /// A message about one session (a frame for it, its close, a join or leave on its behalf),
    /// for the session's shard: one of the [`ShardMsg`]s whose [`ShardMsg::session`] is set.
    Session(ShardMsg),
}

/// What routing achieved.
#[derive(Debug, Default)]
pub struct Routed {
    /// The shards that should have got the message but did not (their inbox was full or
    /// gone), as a bit mask; 0 when every one did.
    pub missed: u64,
    /// For a user: how many sessions the user has server-wide (0: not online, nothing sent).
    pub sessions: usize,
    /// For a room publication: its position in the room's log (0: none kept).
    pub seq: u64,
    /// The other nodes' part was refused: the queue to the cluster bus is full.
    pub bus_dropped: bool,
    /// The calling shard's own part, to apply at once (see the module docs).
    pub local: Option<ShardMsg>,
}

/// Messages refused per target shard, by reason (any thread increments them).
#[derive(Debug, Default)]
pub struct Drops {
    /// Refused because the shard's inbox was full.
    pub full: AtomicU64,
    /// Refused because the shard was gone.
    pub gone: AtomicU64,
}

/// What a route achieved on the other nodes of a cluster.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// For a user: that user's sessions on other nodes.
    pub sessions: usize,
    /// The queue to the cluster bus refused it.
    pub dropped: bool,
}

/// The other nodes of a cluster, as the router sees them (`crate::cluster` implements it over
/// NATS or Redis; without a cluster there is none and nothing below is asked).
pub trait Remote: Send + Sync + fmt::Debug {
    /// Sends a route that started on this node to the nodes that need it.
    fn forward(&self, route: &Route<'_>) -> Forwarded;
    /// Whether `id` is another node's session (its tag is not this node's).
    fn is_remote(&self, id: SessionId) -> bool;
    /// Whether another node has the session open, as far as this node knows.
    fn has_session(&self, id: SessionId) -> bool;
    /// A room's members on other nodes.
    fn members(&self, room: &str) -> Vec<(SessionId, Arc<str>)>;
    /// How many members a room has on other nodes (every join asks: no list is built).
    fn member_count(&self, room: &str) -> usize;
    /// Users on other nodes, with their session counts there.
    fn users(&self) -> Vec<(Arc<str>, usize)>;
    /// A user's sessions on other nodes.
    fn user_sessions(&self, user: &str) -> usize;
    /// Rooms with members on other nodes, with their member counts there.
    fn rooms(&self) -> Vec<(Arc<str>, usize)>;
    /// Sessions on other nodes.
    fn session_count(&self) -> usize;
    /// Whether room history lives in the cluster's store (Redis) rather than on this node: then
    /// publications to a room with history go through [`publish_history`](Self::publish_history)
    /// and joins read it with [`read_history`](Self::read_history).
    fn history(&self) -> bool {
        false
    }
    /// Queues a text publication to a room with history for the store, which numbers it, keeps
    /// it and sends it to every node with members, this one included (nothing is delivered
    /// here before that). `false`: the queue refused it.
    fn publish_history(
        &self,
        _room: &str,
        _frame: &Frame,
        _exclude: Option<SessionId>,
        _policy: HistoryPolicy,
    ) -> bool {
        false
    }
    /// Asks the store for `room`'s position and, with `since`, the publications after it; the
    /// answer comes back to session `id`'s shard as [`ShardMsg::History`]. Called once the
    /// member is visible (so the node subscribes to the room before the store is read).
    /// `false`: the queue refused it (no answer will come).
    fn read_history(
        &self,
        _room: &str,
        _id: SessionId,
        _since: Option<Since<'_>>,
        _policy: HistoryPolicy,
    ) -> bool {
        false
    }
}

/// The router: the directory it reads and the bus it posts to. See the module docs.
#[derive(Debug)]
pub struct Router {
    directory: Directory,
    bus: Box<dyn Bus>,
    drops: Vec<Drops>,
    remote: Option<Arc<dyn Remote>>,
}

impl Router {
    /// A router over a directory and a bus, with the other nodes of a cluster if there are.
    pub fn new(directory: Directory, bus: Box<dyn Bus>, remote: Option<Arc<dyn Remote>>) -> Self {
        let drops = (0..bus.shards()).map(|_| Drops::default()).collect();
        Self {
            directory,
            bus,
            drops,
            remote,
        }
    }

    /// The other nodes, in cluster mode.
    pub fn remote(&self) -> Option<&dyn Remote> {
        self.remote.as_deref()
    }

    /// Routes a delivery that came from another node: to this node's recipients only.
    pub fn route_from_bus(&self, route: Route<'_>) -> Routed {
        self.route_here(None, route)
    }

    /// This node's index of sessions, users and rooms.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    // ----- the whole cluster's answers (this node's alone without one) -----

    /// A room's members on every node, ordered by session id; `None` if no node has the room.
    pub fn members(&self, room: &str) -> Option<Vec<(SessionId, Arc<str>)>> {
        let here = self.directory.members(room);
        let there = self
            .remote
            .as_ref()
            .map(|r| r.members(room))
            .unwrap_or_default();
        if here.is_none() && there.is_empty() {
            return None;
        }
        let mut all = here.unwrap_or_default();
        all.extend(there);
        all.sort_by_key(|(s, _)| *s);
        Some(all)
    }

    /// A room's member count on the other nodes.
    pub fn remote_members(&self, room: &str) -> usize {
        self.remote.as_ref().map_or(0, |r| r.member_count(room))
    }

    /// Users online anywhere, with their session counts, sorted by user id.
    pub fn users(&self) -> Vec<(Arc<str>, usize)> {
        let mut all: std::collections::BTreeMap<Arc<str>, usize> =
            self.directory.users().into_iter().collect();
        for (u, n) in self.remote.as_ref().map(|r| r.users()).unwrap_or_default() {
            *all.entry(u).or_default() += n;
        }
        all.into_iter().collect()
    }

    /// Every room with members anywhere (and the application's empty ones here): name, members,
    /// this node's capacity for it.
    pub fn rooms(&self) -> Vec<super::directory::RoomInfo> {
        let mut all: std::collections::BTreeMap<String, super::directory::RoomInfo> = self
            .directory
            .rooms()
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        for (name, n) in self.remote.as_ref().map(|r| r.rooms()).unwrap_or_default() {
            let e = all
                .entry(name.to_string())
                .or_insert_with(|| super::directory::RoomInfo {
                    name: name.to_string(),
                    members: 0,
                    capacity: 0,
                });
            e.members += n;
        }
        all.into_values().collect()
    }

    /// Whether a session is open on any node (as far as this node knows).
    pub fn has_session(&self, id: SessionId) -> bool {
        self.directory.session(id).is_some()
            || self.remote.as_ref().is_some_and(|r| r.has_session(id))
    }

    /// Whether `user` has a session on any node (as far as this node knows).
    pub fn user_online(&self, user: &str) -> bool {
        self.directory.user_shards(user).1 > 0
            || self
                .remote
                .as_ref()
                .is_some_and(|r| r.user_sessions(user) > 0)
    }

    /// Open sessions on every node.
    pub fn session_count(&self) -> usize {
        self.directory.session_count() + self.remote.as_ref().map_or(0, |r| r.session_count())
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.drops.len()
    }

    /// Messages each shard refused, by reason.
    pub fn drops(&self) -> &[Drops] {
        &self.drops
    }

    /// A room's history settings when its history lives in the cluster's store (Redis
    /// cluster mode, the room keeps history); `None` otherwise.
    pub fn stored_history(&self, room: &RoomShared) -> Option<HistoryPolicy> {
        let remote = self.remote.as_ref()?;
        if !remote.history() || !room.log.is_active() {
            return None;
        }
        Some(room.log.policy()).filter(HistoryPolicy::is_on)
    }

    /// Routes `route`, called from shard `from` (or from outside the shards: `None`), to its
    /// recipients on this node and, in a cluster, on the others.
    pub fn route(&self, from: Option<usize>, route: Route<'_>) -> Routed {
        let Some(remote) = &self.remote else {
            return self.route_here(from, route);
        };
        if let Route::Publish {
            room,
            frame,
            exclude,
            ..
        } = &route
        {
            // A text publication to a room whose history lives in Redis: Redis numbers it and
            // sends it to every node, this one included, so that every member everywhere sees
            // the same offsets in the same order (docs/cluster.md, "History and recovery").
            if let Some(policy) = self.stored_history(room).filter(|_| frame::is_text(frame)) {
                let ok = remote.publish_history(&room.name, frame, *exclude, policy);
                return Routed {
                    bus_dropped: !ok,
                    ..Routed::default()
                };
            }
        }
        let forwarded = remote.forward(&route);
        let elsewhere = matches!(&route, Route::Session(m) if m.session().is_some_and(|id| remote.is_remote(id)));
        let mut routed = if elsewhere {
            Routed::default()
        } else {
            self.route_here(from, route)
        };
        routed.sessions += forwarded.sessions;
        routed.bus_dropped = forwarded.dropped;
        routed
    }

    /// The route's part on this node.
    fn route_here(&self, from: Option<usize>, route: Route<'_>) -> Routed {
        let mut routed = Routed::default();
        let (mask, msg) = match route {
            Route::Publish {
                room,
                frame,
                exclude,
                now,
            } => {
                // A numbered publication is posted under the log's lock, to every shard with
                // members, so each shard gets the room's publications in offset order (why
                // recovery needs that: `history.rs`). The caller's own part may still be applied
                // at once, but only when its inbox is empty: then no older publication of the
                // room is waiting there (any was posted, under this lock, before this one).
                // Otherwise it goes through the inbox, behind them. The caller passes `from` only
                // when it is not in the middle of applying a batch it took from its inbox.
                let numbered = room.log.publish(&frame, now, |seq, frame| {
                    let msg = ShardMsg::Room {
                        room: room.name.clone(),
                        frame,
                        exclude,
                        seq,
                    };
                    let here = from.filter(|&s| self.bus.is_empty(s));
                    self.post_mask(here, room.shards(), msg, Routed::default())
                });
                if let Some((seq, mut numbered)) = numbered {
                    numbered.seq = seq;
                    return numbered;
                }
                let msg = ShardMsg::Room {
                    room: room.name.clone(),
                    frame,
                    exclude,
                    seq: 0,
                };
                (room.shards(), msg)
            }
            Route::Numbered {
                room,
                frame,
                exclude,
                seq,
            } => {
                let msg = ShardMsg::Room {
                    room: room.name.clone(),
                    frame,
                    exclude,
                    seq,
                };
                (room.shards(), msg)
            }
            Route::Presence { room, frame, about } => {
                let msg = ShardMsg::Presence {
                    room: room.name.clone(),
                    frame,
                    exclude: about,
                };
                (room.shards(), msg)
            }
            Route::Broadcast { frame, exclude } => (u64::MAX, ShardMsg::All { frame, exclude }),
            Route::User { user, frame } => {
                let sessions = self.directory.user_sessions(user);
                routed.sessions = sessions.len();
                let mask = sessions.iter().fold(0, |m, s| m | 1 << s.shard());
                if mask == 0 {
                    return routed;
                }
                (mask, ShardMsg::User { sessions, frame })
            }
            Route::Session(msg) => match msg.session() {
                Some(id) => (1 << id.shard(), msg),
                None => {
                    debug_assert!(false, "a session route without a session: {msg:?}");
                    return routed;
                }
            },
        };
        self.post_mask(from, mask, msg, routed)
    }

    /// Posts `msg` to every shard of `mask`.
    fn post_mask(
        &self,
        from: Option<usize>,
        mask: u64,
        msg: ShardMsg,
        mut routed: Routed,
    ) -> Routed {
        // One copy per shard but the last, which takes the message itself (cheap copies: the
        // frame and names are shared).
        let mut shards = (0..self.shards())
            .filter(|s| mask & (1 << s) != 0)
            .peekable();
        while let Some(shard) = shards.next() {
            let one = if shards.peek().is_some() {
                msg.clone()
            } else {
                return self.post_one(from, shard, msg, routed);
            };
            routed = self.post_one(from, shard, one, routed);
        }
        routed
    }

    /// Hands `msg` to `shard` (the caller's own part goes back in `routed.local`), counting a
    /// refusal: the one drop policy.
    fn post_one(
        &self,
        from: Option<usize>,
        shard: usize,
        msg: ShardMsg,
        mut routed: Routed,
    ) -> Routed {
        if Some(shard) == from {
            routed.local = Some(msg);
        } else if let Err(why) = self.bus.post(shard, msg) {
            routed.missed |= 1 << shard;
            let d = &self.drops[shard];
            match why {
                Refused::Full => d.full.fetch_add(1, Ordering::Relaxed),
                Refused::Gone => d.gone.fetch_add(1, Ordering::Relaxed),
            };
        }
        routed
    }
}

/// The shards named in a mask, for messages (`"1, 3"`).
pub fn shard_list(mask: u64) -> String {
    (0..64)
        .filter(|s| mask & (1 << s) != 0)
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Inboxes of a fixed capacity.
    #[derive(Debug)]
    struct Queues {
        cap: usize,
        q: Vec<Mutex<Vec<ShardMsg>>>,
    }

    impl Bus for Arc<Queues> {
        fn shards(&self) -> usize {
            self.q.len()
        }
        fn post(&self, shard: usize, msg: ShardMsg) -> Result<(), Refused> {
            let mut q = self.q[shard].lock().unwrap();
            if q.len() >= self.cap {
                return Err(Refused::Full);
            }
            q.push(msg);
            Ok(())
        }
    }

    fn router(shards: usize, cap: usize) -> (Router, Arc<Queues>) {
        let q = Arc::new(Queues {
            cap,
            q: (0..shards).map(|_| Mutex::default()).collect(),
        });
        let d = Directory::new(0, Default::default());
        (Router::new(d, Box::new(q.clone()), None), q)
    }

    fn frame() -> Frame {
        Arc::from(&b"x"[..])
    }

    #[test]
    fn a_publish_goes_to_shards_with_members_and_the_caller_keeps_its_part() {
        let (r, q) = router(4, 8);
        let u: Arc<str> = "u".into();
        let room = r
            .directory()
            .join("lobby", SessionId::new(1, 1, 1), &u)
            .unwrap()
            .room;
        room.set_shard(1, true);
        room.set_shard(3, true);
        let routed = r.route(
            Some(1),
            Route::Publish {
                room: &room,
                frame: frame(),
                exclude: None,
                now: 0,
            },
        );
        assert!(matches!(routed.local, Some(ShardMsg::Room { .. })));
        assert_eq!(routed.missed, 0);
        let lens: Vec<usize> = q.q.iter().map(|q| q.lock().unwrap().len()).collect();
        assert_eq!(lens, [0, 0, 0, 1], "shard 3 only; shard 1 kept its own");
    }

    #[test]
    fn a_full_inbox_is_missed_counted_and_reported() {
        let (r, _q) = router(3, 1);
        let b = || Route::Broadcast {
            frame: frame(),
            exclude: None,
        };
        assert_eq!(r.route(None, b()).missed, 0);
        let second = r.route(None, b());
        assert_eq!(second.missed, 0b111, "every inbox holds one already");
        assert_eq!(r.route(Some(0), b()).missed, 0b110);
        assert_eq!(r.drops()[1].full.load(Ordering::Relaxed), 2);
        assert_eq!(r.drops()[0].full.load(Ordering::Relaxed), 1);
        assert_eq!(shard_list(0b110), "1, 2");
    }

    #[test]
    fn a_user_who_is_not_online_costs_nothing() {
        let (r, q) = router(2, 8);
        let routed = r.route(
            None,
            Route::User {
                user: "nobody",
                frame: frame(),
            },
        );
        assert_eq!((routed.sessions, routed.missed), (0, 0));
        assert!(q.q.iter().all(|q| q.lock().unwrap().is_empty()));
    }

    /// Concurrent routers lose no drop count (the bug of a single-writer counter written by
    /// several threads).
    #[test]
    fn drops_counted_from_many_threads_add_up() {
        let (r, _q) = router(2, 0);
        let r = Arc::new(r);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let id = SessionId::new(1, 1, 0);
                        let frame = frame();
                        r.route(None, Route::Session(ShardMsg::Session { id, frame }));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(r.drops()[1].full.load(Ordering::Relaxed), 4000);
    }
}
