//! The sans-IO core: state and decisions that need no socket, thread or clock.
//!
//! Everything here is driven by the shard (see `crate::shard`) and tested on its own:
//! identifiers, the server-wide directory, a shard's room table, the outbound queue, the timer
//! wheel, the liveness policy and the rate limits.

pub mod directory;
pub mod ids;
pub mod iplimit;
pub mod liveness;
pub mod outbox;
pub mod ratelimit;
pub mod rooms;
pub mod timer;
