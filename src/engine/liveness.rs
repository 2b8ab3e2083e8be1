//! When a connection is due a ping, and when it has been silent, stuck or slow for too long.
//!
//! Pure decisions over tick counts: the engine keeps a [`Liveness`] per connection, updates it
//! as bytes move, and asks it (or [`deadline`]) whenever the connection's timer fires. The
//! answer says what to do now and when to look again.

/// Timeouts in ticks (the engine's timer resolution), derived from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A complete HTTP request (the upgrade, or the next one on a kept-alive connection) must
    /// arrive within this.
    pub handshake: u64,
    /// Quiet time before the server pings.
    pub ping_interval: u64,
    /// Further quiet time after the ping before the connection counts as dead.
    pub pong_timeout: u64,
    /// Time with bytes queued and none written before the reader counts as stuck.
    pub write_stall: u64,
    /// Time a closing connection gets to flush its close frame and hear the peer's close.
    pub close_grace: u64,
    /// Interval of the heartbeat comments on an idle SSE stream.
    pub stream_beat: u64,
}

/// What a connection's timer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet; look again at this tick.
    Wait(u64),
    /// Send a WebSocket ping, then look again at this tick.
    Ping(u64),
    /// Send an SSE heartbeat comment, then look again at this tick.
    Beat(u64),
    /// The deadline passed (a request that did not arrive, a close that did not complete).
    Expired,
    /// Nothing received for `ping_interval + pong_timeout`.
    IdleTimeout,
    /// Bytes have been queued with no write progress for `write_stall`.
    WriteStall,
}

/// A plain deadline: `span` ticks after `since`.
pub fn deadline(since: u64, span: u64, now: u64) -> Verdict {
    if now >= since + span {
        Verdict::Expired
    } else {
        Verdict::Wait(since + span)
    }
}

/// Per-connection timestamps (ticks), updated as bytes move.
///
/// 16 bytes, in every connection's slab slot: whether a ping went out since the last input is
/// the top bit of `rx` (ticks never get near 2^63), not a flag that would pad the struct to 24.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Last tick anything arrived from the peer, and [`PING_SENT`].
    rx: u64,
    /// Last tick the outbox made progress (or became non-empty).
    pub last_tx: u64,
}

/// The bit of [`Liveness::rx`] that says a ping went out since the tick in the other bits.
const PING_SENT: u64 = 1 << 63;

impl Liveness {
    /// A connection accepted at `now`.
    pub fn new(now: u64) -> Self {
        Self {
            rx: now & !PING_SENT,
            last_tx: now,
        }
    }

    /// Something arrived from the peer.
    pub fn received(&mut self, now: u64) {
        self.rx = now & !PING_SENT;
    }

    /// Last tick anything arrived from the peer.
    pub fn last_rx(&self) -> u64 {
        self.rx & !PING_SENT
    }

    /// Whether a ping went out since [`last_rx`](Self::last_rx).
    pub fn ping_sent(&self) -> bool {
        self.rx & PING_SENT != 0
    }

    fn stall_at(&self, queued: bool, t: &Timeouts) -> u64 {
        if queued {
            self.last_tx + t.write_stall
        } else {
            u64::MAX
        }
    }

    /// An open WebSocket's timer at `now`. `queued` is whether the outbox holds unwritten
    /// bytes.
    pub fn open(&mut self, queued: bool, now: u64, t: &Timeouts) -> Verdict {
        let stall_at = self.stall_at(queued, t);
        if now >= stall_at {
            return Verdict::WriteStall;
        }
        let dead_at = self.last_rx() + t.ping_interval + t.pong_timeout;
        if now >= dead_at {
            return Verdict::IdleTimeout;
        }
        let ping_at = self.last_rx() + t.ping_interval;
        if !self.ping_sent() && now >= ping_at {
            self.rx |= PING_SENT;
            return Verdict::Ping(dead_at.min(stall_at));
        }
        let next = if self.ping_sent() { dead_at } else { ping_at };
        Verdict::Wait(next.min(stall_at))
    }

    /// An SSE stream's timer at `now`: a heartbeat every `stream_beat` after `last_beat`, and
    /// the same write-stall rule as WebSockets.
    pub fn stream(&self, last_beat: u64, queued: bool, now: u64, t: &Timeouts) -> Verdict {
        let stall_at = self.stall_at(queued, t);
        if now >= stall_at {
            return Verdict::WriteStall;
        }
        let beat_at = last_beat + t.stream_beat;
        if now >= beat_at {
            Verdict::Beat((now + t.stream_beat).min(stall_at))
        } else {
            Verdict::Wait(beat_at.min(stall_at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        handshake: 10,
        ping_interval: 25,
        pong_timeout: 20,
        write_stall: 15,
        close_grace: 3,
        stream_beat: 10,
    };

    #[test]
    fn a_silent_client_is_pinged_then_timed_out() {
        let mut l = Liveness::new(0);
        assert_eq!(l.open(false, 1, &T), Verdict::Wait(25));
        assert_eq!(l.open(false, 25, &T), Verdict::Ping(45));
        assert_eq!(l.open(false, 30, &T), Verdict::Wait(45));
        assert_eq!(l.open(false, 45, &T), Verdict::IdleTimeout);
    }

    #[test]
    fn a_pong_resets_the_clock() {
        let mut l = Liveness::new(0);
        assert_eq!(l.open(false, 25, &T), Verdict::Ping(45));
        l.received(30);
        assert_eq!(l.open(false, 45, &T), Verdict::Wait(55));
        assert_eq!(l.open(false, 55, &T), Verdict::Ping(75));
        assert!(l.ping_sent() && l.last_rx() == 30);
    }

    #[test]
    fn the_ping_bit_leaves_the_ticks_alone() {
        assert_eq!(std::mem::size_of::<Liveness>(), 16);
        let mut l = Liveness::new(u64::MAX >> 1);
        assert!(!l.ping_sent());
        assert_eq!(l.last_rx(), u64::MAX >> 1);
        l.received(7);
        assert_eq!((l.last_rx(), l.ping_sent()), (7, false));
    }

    #[test]
    fn a_stuck_reader_is_caught_before_the_heartbeat() {
        let mut l = Liveness::new(0);
        l.last_tx = 5;
        assert_eq!(l.open(true, 6, &T), Verdict::Wait(20));
        assert_eq!(l.open(true, 20, &T), Verdict::WriteStall);
        // Queue drained: no stall however old last_tx is.
        assert_eq!(l.open(false, 20, &T), Verdict::Wait(25));
    }

    #[test]
    fn requests_and_closes_have_plain_deadlines() {
        assert_eq!(deadline(2, 10, 5), Verdict::Wait(12));
        assert_eq!(deadline(2, 10, 12), Verdict::Expired);
    }

    #[test]
    fn streams_beat_and_stall() {
        let mut l = Liveness::new(0);
        assert_eq!(l.stream(0, false, 3, &T), Verdict::Wait(10));
        assert_eq!(l.stream(0, false, 10, &T), Verdict::Beat(20));
        l.last_tx = 8;
        assert_eq!(l.stream(10, true, 12, &T), Verdict::Wait(20));
        assert_eq!(l.stream(10, true, 23, &T), Verdict::WriteStall);
    }
}
