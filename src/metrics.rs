//! Per-shard counters, written by their shard alone and summed on demand.
//!
//! Each counter has a single writer, so an increment is a relaxed load and store (a plain add
//! on x86), not a locked read-modify-write; readers on other threads see a recent value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($(#[doc = $doc:literal] $name:ident),* $(,)?) => {
        /// One shard's counters.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $(#[doc = $doc] pub(crate) $name: Counter,)*
        }

        /// A snapshot of counters summed over shards.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct Stats {
            $(#[doc = $doc] pub $name: u64,)*
        }

        impl Stats {
            pub(crate) fn add(&mut self, s: &ShardStats) {
                $(self.$name += s.$name.get();)*
            }
        }
    };
}

counters! {
    /// Open WebSocket sessions (a gauge).
    connections,
    /// TCP connections accepted.
    accepted,
    /// Upgrades that completed.
    handshakes,
    /// Upgrades refused or abandoned (bad request, rejected, limit, timeout).
    handshake_failures,
    /// Handshakes that did not complete within `handshake_timeout`.
    handshake_timeouts,
    /// Data messages received.
    messages_in,
    /// Payload bytes received in data messages.
    bytes_in,
    /// Frames queued to sessions (each recipient counts once).
    deliveries,
    /// Bytes written to sockets.
    bytes_out,
    /// Sessions closed for falling behind (queue over `max_queue_bytes` or write stall).
    slow_consumer_closes,
    /// Sessions dropped for silence past `ping_interval + pong_timeout`.
    heartbeat_timeouts,
    /// Sessions closed for protocol violations (1002, 1007, 1009).
    protocol_errors,
    /// Cross-shard messages dropped because a shard's inbox was full.
    bus_drops,
}

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` (gauges). Only the owning shard may call this.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}
