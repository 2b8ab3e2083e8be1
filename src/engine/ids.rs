//! Typed identifiers.

use std::fmt;

/// A session id: unique for the server's lifetime, and it says where the session lives.
///
/// Layout (high to low): a per-shard sequence number (38 bits), the shard index (6 bits), the
/// connection's slab key (20 bits). Routing a message to a session is therefore a shift and a
/// slab index, with no shared map; the sequence number tells a reused slab slot's new occupant
/// from the old one, which also makes stale readiness events and timers harmless.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl SessionId {
    /// Bits of the slab key: at most 2^20 - 1 connections per shard.
    pub const KEY_BITS: u32 = 20;
    /// Bits of the shard index: at most 64 shards (room routing uses a 64-bit shard mask).
    pub const SHARD_BITS: u32 = 6;
    /// Largest slab key.
    pub const MAX_KEY: usize = (1 << Self::KEY_BITS) - 1;
    /// Largest number of shards.
    pub const MAX_SHARDS: usize = 1 << Self::SHARD_BITS;

    /// Composes an id. `seq` must be non-zero so that no id is ever 0.
    pub fn new(seq: u64, shard: usize, key: usize) -> Self {
        debug_assert!(seq > 0 && shard < Self::MAX_SHARDS && key <= Self::MAX_KEY);
        Self(
            seq << (Self::KEY_BITS + Self::SHARD_BITS)
                | (shard as u64) << Self::KEY_BITS
                | key as u64,
        )
    }

    /// The shard that owns the session.
    pub fn shard(self) -> usize {
        ((self.0 >> Self::KEY_BITS) & (Self::MAX_SHARDS as u64 - 1)) as usize
    }

    /// The session's slot in its shard's slab.
    pub fn key(self) -> usize {
        (self.0 & Self::MAX_KEY as u64) as usize
    }

    /// Bits of the sequence that carry the node's tag in cluster mode.
    pub const TAG_BITS: u32 = 12;

    /// The sequence part of a session id on a node with tag `tag` (1 to 4095, or 0 outside a
    /// cluster): in a cluster the low [`TAG_BITS`](Self::TAG_BITS) say which node the session
    /// lives on, so that any node can route to it, and the per-shard count keeps 26 bits
    /// (it wraps after 67 million sessions on one shard, harmlessly: a live session is still
    /// told apart by its slot). Outside a cluster the count has all 38 bits.
    pub fn sequence(count: u64, tag: u16) -> u64 {
        if tag == 0 {
            count
        } else {
            let bits = 64 - Self::KEY_BITS - Self::SHARD_BITS - Self::TAG_BITS;
            (count & ((1 << bits) - 1)) << Self::TAG_BITS | u64::from(tag)
        }
    }

    /// The node tag of a cluster session id (see [`sequence`](Self::sequence)).
    pub fn node_tag(self) -> u16 {
        ((self.0 >> (Self::KEY_BITS + Self::SHARD_BITS)) & ((1 << Self::TAG_BITS) - 1)) as u16
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionId({}: shard {}, key {})",
            self.0,
            self.shard(),
            self.key()
        )
    }
}

impl std::str::FromStr for SessionId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(SessionId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let id = SessionId::new(12345, 63, SessionId::MAX_KEY);
        assert_eq!((id.shard(), id.key()), (63, SessionId::MAX_KEY));
        let id = SessionId::new(1, 0, 0);
        assert_ne!(id.0, 0);
        let tagged = SessionId::new(SessionId::sequence(u64::MAX, 4095), 5, 9);
        assert_eq!(
            (tagged.node_tag(), tagged.shard(), tagged.key()),
            (4095, 5, 9)
        );
        assert_eq!(SessionId::new(SessionId::sequence(3, 0), 0, 0).0 >> 26, 3);
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
    }
}
