//! The server-wide index of who is online and which rooms exist: the control plane.
//!
//! Shards own their connections outright; what must be answered across shards lives here:
//! which sessions a user has (for direct messages and "not online"), each room's members and
//! capacity (for `join`, `members` and capacity checks), and the list of sessions for the
//! embedding application (the sessions themselves, by id and by user, are kept in the compact
//! `online` index). It is one mutex-guarded structure, taken on connect, disconnect, join,
//! leave and direct-message routing: a few hundred nanoseconds per operation, which two to a
//! few dozen shards do not contend on. It is the only index of users: a direct message is
//! routed to the ids of the user's sessions, which each shard finds in its slab.
//!
//! The data plane never takes it. A room publish reads the room's shard mask from the
//! [`RoomShared`] the publishing shard already holds; a broadcast goes to every shard.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::history::{self, HistoryPolicy, RoomLog};
use super::ids::SessionId;
use super::online::Online;

/// What the rest of the server may know about a session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The session id.
    pub id: SessionId,
    /// The user id.
    pub user: Arc<str>,
    /// The peer's address.
    pub addr: SocketAddr,
}

/// The part of a room every shard with members holds: its name and which shards have members.
#[derive(Debug)]
pub struct RoomShared {
    /// The room's name.
    pub name: Arc<str>,
    /// Bit `i` is set while shard `i` has at least one member.
    shards: AtomicU64,
    /// Members on this node, as of the last join or leave (read without the directory's lock
    /// by shards deciding whether the room is too large for presence events).
    members: AtomicUsize,
    /// Positions and recent publications (dormant until a reader of positions subscribes).
    pub log: RoomLog,
}

impl RoomShared {
    fn new(name: Arc<str>, log: RoomLog) -> Self {
        Self {
            name,
            shards: AtomicU64::new(0),
            members: AtomicUsize::new(0),
            log,
        }
    }

    /// A room this node holds no member of, to route to the members other nodes have: no
    /// shard bit, a log that keeps nothing here but knows the room's history settings (in
    /// Redis cluster mode they decide whether the publication goes through Redis history).
    pub fn elsewhere(name: &str, policy: HistoryPolicy) -> Arc<Self> {
        let log = RoomLog::new(policy, 0, false, "".into());
        Arc::new(Self::new(name.into(), log))
    }

    /// Shards with members, as a bit mask.
    pub fn shards(&self) -> u64 {
        // Acquire pairs with the Release in `set_shard`: a shard that saw a member's join ack
        // arrive through a socket also sees that member's shard bit.
        self.shards.load(Ordering::Acquire)
    }

    /// Members on this node (sessions and streams), as of the last join or leave.
    pub fn member_count(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }

    /// Records that `shard` has (or no longer has) members. Only that shard calls this.
    pub fn set_shard(&self, shard: usize, present: bool) {
        let bit = 1u64 << shard;
        if present {
            self.shards.fetch_or(bit, Ordering::Release);
        } else {
            self.shards.fetch_and(!bit, Ordering::Release);
        }
    }
}

/// Why a join failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The room holds `capacity` members already.
    Full {
        /// The room's capacity.
        capacity: usize,
    },
}

/// A successful join.
#[derive(Debug)]
pub struct Joined {
    /// The room's shared part.
    pub room: Arc<RoomShared>,
    /// Members after the join.
    pub members: usize,
    /// Whether the session was a member already (nothing changed).
    pub already: bool,
}

/// A room's public description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The name.
    pub name: String,
    /// Members now.
    pub members: usize,
    /// Capacity; 0 is unlimited.
    pub capacity: usize,
}

#[derive(Debug)]
struct RoomEntry {
    shared: Arc<RoomShared>,
    capacity: usize,
    /// Sessions and SSE streams. A member of a large room costs a set entry (8 bytes and the
    /// table's slack) on top of the shard's own member list; its user is in `online`.
    members: HashSet<SessionId>,
    /// The users of members that are SSE streams, which are not sessions (not in `online`).
    stream_users: HashMap<SessionId, Arc<str>>,
    /// Created by the application: kept when empty.
    persistent: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Open sessions, by id and by user.
    online: Online,
    rooms: HashMap<Arc<str>, RoomEntry>,
    /// Empty rooms kept for their history until it expires (`Directory::sweep`).
    retained: Vec<Arc<str>>,
    /// Per-room history settings, from the config file and the `Hub`.
    history_rooms: HashMap<String, HistoryPolicy>,
    /// Logs created so far (each gets its own epoch).
    logs: u64,
    /// Changes kept for the cluster bus, while one watches (`watch`).
    journal: Option<Journal>,
}

/// One change to this node's sessions and memberships, for the other nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A session opened.
    Up {
        /// The session.
        id: SessionId,
        /// Its user.
        user: Arc<str>,
    },
    /// A session ended.
    Down {
        /// The session.
        id: SessionId,
    },
    /// A session joined a room.
    Join {
        /// The session.
        id: SessionId,
        /// The room.
        room: Arc<str>,
    },
    /// A session left a room.
    Leave {
        /// The session.
        id: SessionId,
        /// The room.
        room: Arc<str>,
    },
}

/// What the cluster bus takes from the directory: the changes in the order they happened, and
/// the rooms whose local membership went from none to some or back (their bus subscription
/// must follow).
#[derive(Debug, Default)]
pub struct Taken {
    /// The changes.
    pub changes: Vec<Change>,
    /// The journal overflowed (the bus thread was stuck): changes were dropped, and the others
    /// need a snapshot instead.
    pub overflowed: bool,
    /// Rooms to subscribe to or unsubscribe from: ask [`Directory::has_members`].
    pub interest: Vec<Arc<str>>,
}

struct Journal {
    taken: Taken,
    /// Wakes the bus thread: a room's interest changed, or the journal grew large.
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

/// Changes kept before the bus thread is woken anyway (it also takes them every few ms).
const JOURNAL_WAKE_AT: usize = 1024;

/// Changes kept at most while the bus thread does not take them (a bus outage): past it they
/// are dropped and a snapshot replaces them, so a long outage costs no memory.
const JOURNAL_MAX: usize = 100_000;

impl Inner {
    /// A room's interest changed without a session change (an SSE stream came or went).
    fn note_interest(&mut self, room: &Arc<str>) {
        if let Some(j) = &mut self.journal {
            j.taken.interest.push(room.clone());
            (j.wake)();
        }
    }
}

impl Inner {
    fn note(&mut self, change: Change, interest: Option<&Arc<str>>) {
        let Some(j) = &mut self.journal else { return };
        if j.taken.changes.len() >= JOURNAL_MAX {
            j.taken.changes.clear();
            j.taken.overflowed = true;
        }
        if !j.taken.overflowed {
            j.taken.changes.push(change);
        }
        if let Some(room) = interest {
            j.taken.interest.push(room.clone());
        }
        if interest.is_some() || j.taken.changes.len() == JOURNAL_WAKE_AT {
            (j.wake)();
        }
    }
}

/// The control-plane index. See the module docs.
#[derive(Debug)]
pub struct Directory {
    inner: Mutex<Inner>,
    default_capacity: usize,
    capacities: HashMap<String, usize>,
    /// Events each room keeps at least once an SSE stream read it (`sse_history`).
    sse_history: usize,
    /// `history_size` / `history_ttl`: rooms without their own settings.
    default_history: HistoryPolicy,
    /// Whether WebSocket clients see positions (off in cluster mode, see `RoomLog`).
    stamp: bool,
    /// Random per process: epochs of this process never repeat another's.
    epoch_seed: u64,
}

impl Directory {
    /// An empty directory. Rooms get `capacities[name]` or else `default_capacity` (0 means
    /// unlimited) when they are created by a first join.
    pub fn new(default_capacity: usize, capacities: HashMap<String, usize>) -> Self {
        Self {
            inner: Mutex::default(),
            default_capacity,
            capacities,
            sse_history: 0,
            default_history: HistoryPolicy::default(),
            stamp: true,
            epoch_seed: 0,
        }
    }

    /// Room history: `default` for every room but those of `rooms`; `stamp` off in cluster
    /// mode; `seed` random per process (epochs).
    pub fn with_history(
        mut self,
        default: HistoryPolicy,
        rooms: HashMap<String, HistoryPolicy>,
        stamp: bool,
        seed: u64,
    ) -> Self {
        self.default_history = default;
        self.inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .history_rooms = rooms;
        self.stamp = stamp;
        self.epoch_seed = seed;
        self
    }

    /// A new log for `room`, with a new epoch (called under the lock).
    fn new_log(&self, g: &mut Inner, room: &str) -> RoomLog {
        g.logs += 1;
        let policy = g
            .history_rooms
            .get(room)
            .copied()
            .unwrap_or(self.default_history);
        let epoch = history::epoch(self.epoch_seed, g.logs);
        RoomLog::new(policy, self.sse_history, self.stamp, epoch)
    }

    /// A room's history settings: its own, or the default.
    pub fn history_of(&self, room: &str) -> HistoryPolicy {
        self.lock()
            .history_rooms
            .get(room)
            .copied()
            .unwrap_or(self.default_history)
    }

    /// Sets a room's history (size 0: none), for the room now and if it is created again.
    pub fn set_history(&self, room: &str, policy: HistoryPolicy) {
        let mut g = self.lock();
        g.history_rooms.insert(room.to_string(), policy);
        if let Some(e) = g.rooms.get(room) {
            e.shared.log.configure(policy);
        }
    }

    /// Drops retained empty rooms whose history expired by `now` (any shard may call it; the
    /// engine does about once a second).
    pub fn sweep(&self, now: u64) {
        let mut g = self.lock();
        if g.retained.is_empty() {
            return;
        }
        let mut retained = std::mem::take(&mut g.retained);
        // A room emptied, refilled and emptied again between sweeps is listed twice.
        retained.sort_unstable();
        retained.dedup();
        for name in retained {
            let Some(e) = g.rooms.get(&name) else {
                continue;
            };
            if !e.members.is_empty() || e.persistent {
                continue; // in use again: no longer retained
            }
            if e.shared.log.expired(now) {
                g.rooms.remove(&name);
            } else {
                g.retained.push(name);
            }
        }
    }

    /// Sets how many recent events each room keeps for SSE clients (`sse_history`).
    pub fn with_sse_history(mut self, events: usize) -> Self {
        self.sse_history = events;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that is
        // worse than the panic itself; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts keeping a journal of changes for a cluster bus, which `wake` rouses.
    pub fn watch(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.lock().journal = Some(Journal {
            taken: Taken::default(),
            wake,
        });
    }

    /// The changes since the last call (see [`Taken`]).
    pub fn take(&self) -> Taken {
        self.lock()
            .journal
            .as_mut()
            .map(|j| std::mem::take(&mut j.taken))
            .unwrap_or_default()
    }

    /// Every session with its user and rooms, and the changes not yet taken (which a snapshot
    /// already includes: they are dropped, so that the next delta does not repeat them).
    pub fn snapshot(&self) -> Vec<(SessionId, Arc<str>, Vec<Arc<str>>)> {
        let mut g = self.lock();
        let mut rooms: HashMap<SessionId, Vec<Arc<str>>> = HashMap::new();
        for (name, e) in &g.rooms {
            for s in &e.members {
                rooms.entry(*s).or_default().push(name.clone());
            }
        }
        let all = g
            .online
            .iter()
            .map(|s| {
                (
                    s.id,
                    s.user.clone(),
                    rooms.remove(&s.id).unwrap_or_default(),
                )
            })
            .collect();
        if let Some(j) = &mut g.journal {
            j.taken.changes.clear();
        }
        all
    }

    /// Whether `room` has members on this node (its bus subscription follows this).
    pub fn has_members(&self, room: &str) -> bool {
        self.lock()
            .rooms
            .get(room)
            .is_some_and(|e| !e.members.is_empty())
    }

    /// Reserves room for `per_shard` sessions on each shard up front: address space, not
    /// memory (see the `online` module).
    pub fn with_session_slots(self, per_shard: usize) -> Self {
        self.lock().online = Online::with_reserve(per_shard);
        self
    }

    /// Adds an open session.
    pub fn add_session(&self, info: SessionInfo) {
        let mut g = self.lock();
        let change = Change::Up {
            id: info.id,
            user: info.user.clone(),
        };
        g.online.add(info);
        g.note(change, None);
    }

    /// Removes a session (its rooms must have been left first).
    pub fn remove_session(&self, id: SessionId) {
        let mut g = self.lock();
        if g.online.remove(id) {
            g.note(Change::Down { id }, None);
        }
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.lock().online.len()
    }

    /// One session's description.
    pub fn session(&self, id: SessionId) -> Option<SessionInfo> {
        self.lock().online.get(id)
    }

    /// Every open session (a snapshot).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.lock().online.iter().collect()
    }

    /// Where a user's sessions are: (shard mask, session count). `(0, 0)` means not online.
    pub fn user_shards(&self, user: &str) -> (u64, usize) {
        self.lock()
            .online
            .sessions_of(user)
            .fold((0, 0), |(m, n), s| (m | 1 << s.shard(), n + 1))
    }

    /// A user's sessions on this node, oldest first (empty: not online); shared, as a direct
    /// message hands the one list to every shard it goes to.
    pub fn user_sessions(&self, user: &str) -> Arc<[SessionId]> {
        self.lock().online.sessions_of(user).collect()
    }

    /// One session of `user` on this node (its oldest), if it has any.
    pub fn user_session(&self, user: &str) -> Option<SessionId> {
        self.lock().online.first_of(user)
    }

    /// Distinct users online.
    pub fn user_count(&self) -> usize {
        self.lock().online.user_count()
    }

    /// Users online with their session counts, sorted by user id.
    pub fn users(&self) -> Vec<(Arc<str>, usize)> {
        let g = self.lock();
        let mut v: Vec<_> = g.online.users().map(|(u, n)| (u.clone(), n)).collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Adds `session` to `room`, creating the room on first use.
    pub fn join(
        &self,
        room: &str,
        session: SessionId,
        user: &Arc<str>,
    ) -> Result<Joined, JoinError> {
        let mut g = self.lock();
        if !g.rooms.contains_key(room) {
            let name: Arc<str> = Arc::from(room);
            let capacity = self
                .capacities
                .get(room)
                .copied()
                .unwrap_or(self.default_capacity);
            let log = self.new_log(&mut g, room);
            let entry = RoomEntry {
                shared: Arc::new(RoomShared::new(name.clone(), log)),
                capacity,
                members: HashSet::new(),
                stream_users: HashMap::new(),
                persistent: false,
            };
            g.rooms.insert(name, entry);
        }
        let stream = !g.online.contains(session);
        let Some(e) = g.rooms.get_mut(room) else {
            unreachable!("inserted above")
        };
        if e.members.contains(&session) {
            return Ok(Joined {
                room: e.shared.clone(),
                members: e.members.len(),
                already: true,
            });
        }
        if e.capacity > 0 && e.members.len() >= e.capacity {
            let capacity = e.capacity;
            if e.members.is_empty() && !e.persistent {
                g.rooms.remove(room);
            }
            return Err(JoinError::Full { capacity });
        }
        e.members.insert(session);
        if stream {
            e.stream_users.insert(session, user.clone());
        }
        e.shared.members.store(e.members.len(), Ordering::Relaxed);
        let joined = Joined {
            room: e.shared.clone(),
            members: e.members.len(),
            already: false,
        };
        let first = joined.members == 1;
        let name = joined.room.name.clone();
        if !stream {
            let change = Change::Join {
                id: session,
                room: name.clone(),
            };
            g.note(change, first.then_some(&name));
        } else if first {
            // A stream (not a session, so not announced) that makes the room worth receiving.
            g.note_interest(&name);
        }
        Ok(joined)
    }

    /// Removes `session` from `room`; returns the members left, or `None` if it was not one.
    /// An emptied room is forgotten unless the application created it.
    pub fn leave(&self, room: &str, session: SessionId) -> Option<usize> {
        let mut g = self.lock();
        let e = g.rooms.get_mut(room)?;
        if !e.members.remove(&session) {
            return None;
        }
        e.stream_users.remove(&session);
        let left = e.members.len();
        e.shared.members.store(left, Ordering::Relaxed);
        let name = e.shared.name.clone();
        if left == 0 && !e.persistent {
            // A room with history outlives its last member until that history expires, so
            // that the member can come back and recover (`sweep` drops it then).
            if e.shared.log.retains() {
                g.retained.push(name.clone());
            } else {
                g.rooms.remove(room);
            }
        }
        let last = (left == 0).then_some(&name);
        if g.online.contains(session) {
            let change = Change::Leave {
                id: session,
                room: name.clone(),
            };
            g.note(change, last);
        } else if let Some(name) = last {
            g.note_interest(name);
        }
        Some(left)
    }

    /// A room's members: (session, user), ordered by session id.
    pub fn members(&self, room: &str) -> Option<Vec<(SessionId, Arc<str>)>> {
        let g = self.lock();
        let e = g.rooms.get(room)?;
        let user = |s: &SessionId| g.online.user(*s).or_else(|| e.stream_users.get(s)).cloned();
        let mut v: Vec<_> = e
            .members
            .iter()
            .map(|s| (*s, user(s).unwrap_or_else(|| Arc::from(""))))
            .collect();
        v.sort_by_key(|(s, _)| *s);
        Some(v)
    }

    /// A room's shared part, for publishing from outside its members' shards.
    pub fn room(&self, room: &str) -> Option<Arc<RoomShared>> {
        self.lock().rooms.get(room).map(|e| e.shared.clone())
    }

    /// A room's description.
    pub fn room_info(&self, room: &str) -> Option<RoomInfo> {
        let g = self.lock();
        g.rooms.get(room).map(|e| RoomInfo {
            name: room.to_string(),
            members: e.members.len(),
            capacity: e.capacity,
        })
    }

    /// Every room, sorted by name.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        let g = self.lock();
        let mut v: Vec<_> = g
            .rooms
            .iter()
            .map(|(n, e)| RoomInfo {
                name: n.to_string(),
                members: e.members.len(),
                capacity: e.capacity,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates a room that lives until the server stops, or changes an existing room's capacity
    /// (0 is unlimited). Members above a lowered capacity stay; new joins are refused.
    pub fn create_room(&self, room: &str, capacity: usize) {
        let mut g = self.lock();
        match g.rooms.get_mut(room) {
            Some(e) => {
                e.capacity = capacity;
                e.persistent = true;
            }
            None => {
                let name: Arc<str> = Arc::from(room);
                let log = self.new_log(&mut g, room);
                let shared = Arc::new(RoomShared::new(name.clone(), log));
                let entry = RoomEntry {
                    shared,
                    capacity,
                    members: HashSet::new(),
                    stream_users: HashMap::new(),
                    persistent: true,
                };
                g.rooms.insert(name, entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u64, shard: usize) -> SessionId {
        SessionId::new(n, shard, n as usize)
    }

    fn dir() -> Directory {
        Directory::new(0, HashMap::from([("vip".to_string(), 2)]))
    }

    #[test]
    fn users_are_online_while_any_session_is() {
        let d = dir();
        let alice: Arc<str> = "alice".into();
        let addr = "127.0.0.1:1".parse().unwrap();
        d.add_session(SessionInfo {
            id: sid(1, 0),
            user: alice.clone(),
            addr,
        });
        d.add_session(SessionInfo {
            id: sid(2, 3),
            user: alice.clone(),
            addr,
        });
        assert_eq!(d.user_shards("alice"), (0b1001, 2));
        d.remove_session(sid(1, 0));
        assert_eq!(d.user_shards("alice"), (0b1000, 1));
        d.remove_session(sid(2, 3));
        assert_eq!(d.user_shards("alice"), (0, 0));
        assert_eq!(d.user_count(), 0);
    }

    #[test]
    fn capacity_is_enforced_and_rooms_vanish_when_empty() {
        let d = dir();
        let u: Arc<str> = "u".into();
        assert_eq!(d.join("vip", sid(1, 0), &u).unwrap().members, 1);
        assert!(d.join("vip", sid(1, 0), &u).unwrap().already);
        assert_eq!(d.join("vip", sid(2, 1), &u).unwrap().members, 2);
        assert_eq!(
            d.join("vip", sid(3, 0), &u).unwrap_err(),
            JoinError::Full { capacity: 2 }
        );
        assert_eq!(d.leave("vip", sid(3, 0)), None, "not a member");
        assert_eq!(d.leave("vip", sid(1, 0)), Some(1));
        assert_eq!(d.leave("vip", sid(2, 1)), Some(0));
        assert!(d.room_info("vip").is_none(), "emptied rooms are forgotten");
    }

    #[test]
    fn application_rooms_persist_and_take_their_capacity() {
        let d = dir();
        d.create_room("stage", 1);
        let u: Arc<str> = "u".into();
        d.join("stage", sid(1, 0), &u).unwrap();
        assert!(d.join("stage", sid(2, 0), &u).is_err());
        d.leave("stage", sid(1, 0));
        assert_eq!(d.room_info("stage").unwrap().members, 0);
        assert_eq!(d.rooms().len(), 1);
    }

    #[test]
    fn the_journal_keeps_changes_in_order_and_a_snapshot_when_it_overflows() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let d = dir();
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        d.watch(Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }));
        let addr = "127.0.0.1:1".parse().unwrap();
        let u: Arc<str> = "u".into();
        d.add_session(SessionInfo {
            id: sid(1, 0),
            user: u.clone(),
            addr,
        });
        d.join("r", sid(1, 0), &u).unwrap();
        d.leave("r", sid(1, 0));
        let t = d.take();
        assert_eq!(t.changes.len(), 3);
        assert!(matches!(t.changes[1], Change::Join { .. }));
        assert_eq!(t.interest.len(), 2, "the room came and went");
        assert_eq!(
            wakes.load(Ordering::Relaxed),
            2,
            "woken for each interest change"
        );
        for n in 2..=(JOURNAL_MAX as u64 + 10) {
            d.add_session(SessionInfo {
                id: sid(n, 0),
                user: u.clone(),
                addr,
            });
        }
        let t = d.take();
        assert!(t.overflowed && t.changes.is_empty());
        assert!(!d.take().overflowed, "taking resets it");
    }

    #[test]
    fn shard_mask_tracks_presence() {
        let d = dir();
        let u: Arc<str> = "u".into();
        let j = d.join("r", sid(1, 5), &u).unwrap();
        j.room.set_shard(5, true);
        j.room.set_shard(2, true);
        j.room.set_shard(5, false);
        assert_eq!(j.room.shards(), 0b100);
    }
}
