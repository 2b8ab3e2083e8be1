//! A shard's own view of its rooms: which local sessions are in which room.
//!
//! Publishing to a room walks this shard's member list (O(local members)); other shards get the
//! frame only if the room's shard mask has their bit, which this table maintains as the local
//! member count goes from zero to one and back. Removal is a linear scan of the room's local
//! members, which costs microseconds even for rooms of ten thousand and keeps the per-member
//! footprint at one id.

use std::collections::HashMap;
use std::sync::Arc;

use super::directory::RoomShared;
use super::ids::SessionId;
use super::recovery::Pending;

/// One room as seen from one shard.
#[derive(Debug)]
pub struct LocalRoom {
    /// The room's shared part (name and shard mask).
    pub shared: Arc<RoomShared>,
    /// This shard's members.
    pub members: Vec<SessionId>,
    /// Members that joined at a stream position `H` (their watermark) and have not had a live
    /// publication above it yet: live frames at or below it are dropped for them alone (they
    /// had those from the ring, or they predate the join; `history.rs`). Usually empty; a map,
    /// so that a recovery storm (thousands of members recovering at once) costs a lookup per
    /// recipient, not a scan of every watermark.
    pub marks: HashMap<SessionId, u64>,
    /// Members whose join waits for the cluster's history store, with the live publications
    /// that reached them meanwhile (`recovery.rs`). Usually empty.
    pub recovering: HashMap<SessionId, Pending>,
    /// The member count this shard last told the room's members (`presence` frames of rooms
    /// over `presence_limit`; 0: none yet), so that an unchanged count is not sent again.
    pub presence_sent: usize,
}

/// Every room with at least one member on this shard.
#[derive(Debug)]
pub struct LocalRooms {
    shard: usize,
    rooms: HashMap<Arc<str>, LocalRoom>,
}

impl LocalRooms {
    /// An empty table for shard `shard`.
    pub fn new(shard: usize) -> Self {
        Self {
            shard,
            rooms: HashMap::new(),
        }
    }

    /// Adds a local member; the first one sets this shard's bit in the room's mask.
    pub fn add(&mut self, shared: &Arc<RoomShared>, session: SessionId) {
        let shard = self.shard;
        let room = self.rooms.entry(shared.name.clone()).or_insert_with(|| {
            shared.set_shard(shard, true);
            LocalRoom {
                shared: shared.clone(),
                members: Vec::new(),
                marks: HashMap::new(),
                recovering: HashMap::new(),
                presence_sent: 0,
            }
        });
        if !room.members.contains(&session) {
            room.members.push(session);
        }
    }

    /// Removes a local member; the last one clears this shard's bit. Returns whether it was one.
    pub fn remove(&mut self, room: &str, session: SessionId) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        let Some(i) = r.members.iter().position(|s| *s == session) else {
            return false;
        };
        r.members.swap_remove(i);
        r.marks.remove(&session);
        r.recovering.remove(&session);
        if r.members.is_empty() {
            r.shared.set_shard(self.shard, false);
            self.rooms.remove(room);
        }
        true
    }

    /// Notes that member `session` joined at stream position `offset` (see
    /// [`LocalRoom::marks`]); nothing to note at 0, which no publication has.
    pub fn mark(&mut self, room: &str, session: SessionId, offset: u64) {
        if offset == 0 {
            return;
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.marks.insert(session, offset);
        }
    }

    /// The room, if it has local members.
    pub fn get(&self, room: &str) -> Option<&LocalRoom> {
        self.rooms.get(room)
    }

    /// The room, if it has local members, to change its watermarks.
    pub fn get_mut(&mut self, room: &str) -> Option<&mut LocalRoom> {
        self.rooms.get_mut(room)
    }

    /// Rooms with local members.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room has local members.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::directory::Directory;

    #[test]
    fn the_shard_bit_follows_the_first_and_last_local_member() {
        let d = Directory::new(0, Default::default());
        let u: Arc<str> = "u".into();
        let (a, b) = (SessionId::new(1, 3, 1), SessionId::new(2, 3, 2));
        let shared = d.join("r", a, &u).unwrap().room;
        let mut rooms = LocalRooms::new(3);
        rooms.add(&shared, a);
        rooms.add(&shared, b);
        rooms.add(&shared, b);
        assert_eq!(
            rooms.get("r").unwrap().members.len(),
            2,
            "adding twice is a no-op"
        );
        assert_eq!(shared.shards(), 1 << 3);
        assert!(rooms.remove("r", a));
        assert!(!rooms.remove("r", a));
        assert_eq!(shared.shards(), 1 << 3);
        assert!(rooms.remove("r", b));
        assert_eq!(shared.shards(), 0);
        assert!(rooms.is_empty());
    }
}
