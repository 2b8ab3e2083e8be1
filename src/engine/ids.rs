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
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
    }
}
