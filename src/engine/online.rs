//! Who is online on this node: each open session's user and address, found by session id or by
//! user. The [`Directory`](super::directory::Directory) keeps one, under its lock.
//!
//! Every connection has an entry here, so the layout is chosen for memory per connection
//! (tuning.md, "Memory per connection"):
//!
//! * Sessions live in a dense table per shard, indexed by the slab key their id carries: one
//!   56-byte slot per connection, where a hash map keyed by id spent ~106 bytes at typical
//!   loads (its entries plus the empty buckets a hash table keeps).
//! * A user's sessions are a list linked through those slots (circular and doubly linked, so
//!   adding and removing are O(1) however many sessions one user has), by 4-byte [`Place`]s.
//!   The user index holds only the place of each user's first session, 4 bytes and a control
//!   byte per bucket: the user's name is read from that session's slot, not stored again.
//!
//! This replaced two indexes of user name to session list (one here, one in each shard), which
//! cost ~170 bytes more of heap per connection of a distinct user (anonymous clients are each
//! their own; `engine::sim::memory` measures it).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use super::directory::SessionInfo;
use super::ids::SessionId;
use crate::session::PeerAddr;

/// Where an open session's slot is: its shard and slab key, which is what a [`SessionId`]
/// carries besides its sequence number, in 4 bytes (6 + 20 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place(u32);

impl Place {
    fn of(id: SessionId) -> Self {
        Self(((id.shard() as u32) << SessionId::KEY_BITS) | id.key() as u32)
    }

    fn shard(self) -> usize {
        (self.0 >> SessionId::KEY_BITS) as usize
    }

    fn key(self) -> usize {
        (self.0 & SessionId::MAX_KEY as u32) as usize
    }
}

/// A session and its neighbours in its user's list.
#[derive(Debug)]
struct Slot {
    id: SessionId,
    user: Arc<str>,
    addr: PeerAddr,
    /// The user's previous session (the first one's `prev` is the last one).
    prev: Place,
    /// The user's next session (the last one's `next` is the first one).
    next: Place,
}

/// The open sessions of one node. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Online {
    /// `shards[shard][key]`: the session in that shard's slab slot, if it is open.
    shards: Vec<Vec<Option<Slot>>>,
    /// The first session of each user online.
    users: HashTable<Place>,
    hasher: RandomState,
    /// Open sessions.
    count: usize,
    /// Slots to reserve per shard when its table is first used (address space, not memory:
    /// like the shard's slab, it spares a copy of every entry as the table grows).
    reserve: usize,
}

impl Slot {
    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id,
            user: self.user.clone(),
            addr: self.addr.get(),
        }
    }
}

impl Online {
    /// An empty index reserving `slots_per_shard` entries per shard up front.
    pub(crate) fn with_reserve(slots_per_shard: usize) -> Self {
        Self {
            reserve: slots_per_shard,
            ..Self::default()
        }
    }

    fn slot(&self, id: SessionId) -> Option<&Slot> {
        placed(&self.shards, Place::of(id)).filter(|s| s.id == id)
    }

    /// The slot at a place in a user list or the user index (only open sessions are there).
    fn at(&self, p: Place) -> &Slot {
        match placed(&self.shards, p) {
            Some(s) => s,
            None => unreachable!("a user's session list names a closed session"),
        }
    }

    fn at_mut(&mut self, p: Place) -> &mut Slot {
        match self
            .shards
            .get_mut(p.shard())
            .and_then(|t| t.get_mut(p.key()))
        {
            Some(Some(s)) => s,
            _ => unreachable!("a user's session list names a closed session"),
        }
    }

    fn hash(&self, user: &str) -> u64 {
        self.hasher.hash_one(user)
    }

    /// Where the first session of `user` is, if it has one.
    fn first_place(&self, user: &str) -> Option<Place> {
        self.first_place_hashed(user, self.hash(user))
    }

    fn first_place_hashed(&self, user: &str, hash: u64) -> Option<Place> {
        let eq = |p: &Place| &*self.at(*p).user == user;
        self.users.find(hash, eq).copied()
    }

    /// The first session of `user`, if it has one.
    pub(crate) fn first_of(&self, user: &str) -> Option<SessionId> {
        self.first_place(user).map(|p| self.at(p).id)
    }

    /// Adds an open session (replacing a stale one in the same slot, which cannot happen while
    /// shards remove their sessions before reusing a slot, but would otherwise corrupt a list).
    pub(crate) fn add(&mut self, info: SessionInfo) {
        let id = info.id;
        if let Some(old) = placed(&self.shards, Place::of(id)).map(|s| s.id) {
            self.remove(old);
        }
        let hash = self.hash(&info.user);
        let first = self.first_place_hashed(&info.user, hash);
        if self.shards.len() <= id.shard() {
            self.shards.resize_with(id.shard() + 1, Vec::new);
        }
        let table = &mut self.shards[id.shard()];
        if table.capacity() == 0 {
            table.reserve_exact(self.reserve);
        }
        if table.len() <= id.key() {
            table.resize_with(id.key() + 1, || None);
        }
        let me = Place::of(id);
        let (prev, next) = match first {
            // Appended: before the first, which is after the last.
            Some(first) => (self.at(first).prev, first),
            None => (me, me),
        };
        self.shards[id.shard()][id.key()] = Some(Slot {
            id,
            user: info.user,
            addr: PeerAddr::new(info.addr),
            prev,
            next,
        });
        match first {
            Some(first) => {
                self.at_mut(prev).next = me;
                self.at_mut(first).prev = me;
            }
            None => {
                let Self {
                    users,
                    shards,
                    hasher,
                    ..
                } = self;
                // Rehashing as the index grows reads each user's name from its first session.
                let name = |p: &Place| placed(shards, *p).map_or("", |s| &*s.user);
                users.insert_unique(hash, me, |p| hasher.hash_one(name(p)));
            }
        }
        self.count += 1;
    }

    /// Removes a session; whether it was open.
    pub(crate) fn remove(&mut self, id: SessionId) -> bool {
        let Some(slot) = self.slot(id) else {
            return false;
        };
        let (prev, next) = (slot.prev, slot.next);
        let hash = self.hash(&slot.user);
        let me = Place::of(id);
        // Indexed only if it is its user's first session.
        if let Ok(mut entry) = self.users.find_entry(hash, |p| *p == me) {
            if next == me {
                entry.remove(); // its user's only session: the user goes
            } else {
                *entry.get_mut() = next;
            }
        }
        if next != me {
            self.at_mut(prev).next = next;
            self.at_mut(next).prev = prev;
        }
        self.count -= 1;
        self.shards[id.shard()][id.key()] = None;
        true
    }

    /// Whether a session is open.
    pub(crate) fn contains(&self, id: SessionId) -> bool {
        self.slot(id).is_some()
    }

    /// One session's description.
    pub(crate) fn get(&self, id: SessionId) -> Option<SessionInfo> {
        self.slot(id).map(Slot::info)
    }

    /// A session's user.
    pub(crate) fn user(&self, id: SessionId) -> Option<&Arc<str>> {
        self.slot(id).map(|s| &s.user)
    }

    /// Open sessions.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Every open session.
    pub(crate) fn iter(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        self.shards.iter().flatten().flatten().map(Slot::info)
    }

    /// A user's sessions, first (oldest) to last.
    pub(crate) fn sessions_of(&self, user: &str) -> UserSessions<'_> {
        self.sessions_from(self.first_place(user))
    }

    fn sessions_from(&self, first: Option<Place>) -> UserSessions<'_> {
        UserSessions {
            online: self,
            first,
            next: first,
        }
    }

    /// Distinct users online.
    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Every user online with its number of sessions.
    pub(crate) fn users(&self) -> impl Iterator<Item = (&Arc<str>, usize)> {
        let count = |first| self.sessions_from(Some(first)).count();
        self.users
            .iter()
            .map(move |&first| (&self.at(first).user, count(first)))
    }
}

/// The session in the slot at `p`, if one is open there.
fn placed(shards: &[Vec<Option<Slot>>], p: Place) -> Option<&Slot> {
    shards.get(p.shard())?.get(p.key())?.as_ref()
}

/// A user's sessions ([`Online::sessions_of`]).
pub(crate) struct UserSessions<'a> {
    online: &'a Online,
    first: Option<Place>,
    next: Option<Place>,
}

impl Iterator for UserSessions<'_> {
    type Item = SessionId;

    fn next(&mut self) -> Option<SessionId> {
        let slot = self.online.at(self.next?);
        self.next = Some(slot.next).filter(|n| Some(*n) != self.first);
        Some(slot.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info(id: SessionId, user: &str) -> SessionInfo {
        SessionInfo {
            id,
            user: user.into(),
            addr: "127.0.0.1:1".parse().expect("an address"),
        }
    }

    /// The slot is per connection (tuning.md): the session's id, user and address, and two
    /// 4-byte links.
    #[test]
    fn a_session_slot_stays_small() {
        let size = std::mem::size_of::<Option<Slot>>();
        assert!(size <= 56, "an online slot grew to {size} bytes");
    }

    #[test]
    fn a_users_sessions_are_listed_oldest_first_until_each_leaves() {
        let mut o = Online::with_reserve(4);
        let a1 = SessionId::new(1, 0, 0);
        let b = SessionId::new(2, 1, 0);
        let a2 = SessionId::new(3, 1, 1);
        let a3 = SessionId::new(4, 0, 1);
        o.add(info(a1, "alice"));
        o.add(info(b, "bob"));
        o.add(info(a2, "alice"));
        o.add(info(a3, "alice"));
        assert_eq!(o.sessions_of("alice").collect::<Vec<_>>(), [a1, a2, a3]);
        assert_eq!((o.len(), o.user_count()), (4, 2));
        assert!(o.remove(a1));
        assert_eq!(o.first_of("alice"), Some(a2));
        o.remove(a3);
        assert_eq!(o.sessions_of("alice").collect::<Vec<_>>(), [a2]);
        o.remove(a2);
        assert_eq!(o.sessions_of("alice").count(), 0);
        assert!(!o.remove(a2), "removed already");
        assert_eq!((o.len(), o.user_count()), (1, 1));
        assert!(o.contains(b) && !o.contains(a1));
    }

    #[test]
    fn a_reused_slot_does_not_answer_for_its_previous_session() {
        let mut o = Online::default();
        let old = SessionId::new(1, 0, 3);
        let new = SessionId::new(2, 0, 3);
        o.add(info(old, "alice"));
        o.remove(old);
        o.add(info(new, "bob"));
        assert!(o.get(old).is_none());
        assert_eq!(o.get(new).map(|i| i.user), Some("bob".into()));
        assert_eq!(o.first_of("alice"), None);
    }

    proptest! {
        /// Any sequence of opens and closes leaves the index agreeing with a plain model.
        #[test]
        fn agrees_with_a_list_of_sessions(ops in proptest::collection::vec((0usize..2, 0usize..24, 0usize..4, any::<bool>()), 1..200)) {
            let mut o = Online::default();
            let mut model: Vec<(SessionId, String)> = Vec::new();
            let mut seq = 0;
            for (shard, key, user, open) in ops {
                let user = format!("u{user}");
                let here = model.iter().position(|(id, _)| id.shard() == shard && id.key() == key);
                match (open, here) {
                    (true, None) => {
                        seq += 1;
                        let id = SessionId::new(seq, shard, key);
                        o.add(info(id, &user));
                        model.push((id, user));
                    }
                    (false, Some(i)) => {
                        let (id, _) = model.remove(i);
                        prop_assert!(o.remove(id));
                    }
                    _ => {}
                }
                prop_assert_eq!(o.len(), model.len());
                for u in 0..4 {
                    let u = format!("u{u}");
                    let want: Vec<_> = model.iter().filter(|(_, m)| *m == u).map(|(id, _)| *id).collect();
                    prop_assert_eq!(o.sessions_of(&u).collect::<Vec<_>>(), want);
                }
                let users = model.iter().map(|(_, u)| u).collect::<std::collections::HashSet<_>>();
                prop_assert_eq!(o.user_count(), users.len());
            }
        }
    }
}
