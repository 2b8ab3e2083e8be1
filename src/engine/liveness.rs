//! When a connection is due a ping, and when it has been silent, stuck or slow for too long.
//!
//! Pure decisions over tick counts: the shard keeps a [`Liveness`] per connection, updates it as
//! bytes move, and asks [`Liveness::check`] whenever the connection's timer fires. The answer
//! says what to do now and when to look again.

/// Timeouts in ticks (the shard's timer resolution), derived from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A complete upgrade request must arrive within this.
    pub handshake: u64,
    /// Quiet time before the server pings.
    pub ping_interval: u64,
    /// Further quiet time after the ping before the connection counts as dead.
    pub pong_timeout: u64,
    /// Time with bytes queued and none written before the reader counts as stuck.
    pub write_stall: u64,
    /// Time a closing connection gets to flush its close frame and hear the peer's close.
    pub close_grace: u64,
}

/// Where a connection is in its life, as far as timing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the HTTP upgrade request since the given tick.
    Handshake {
        /// Tick of the accept.
        since: u64,
    },
    /// An open WebSocket.
    Open,
    /// A close was sent (or an error response) at the given tick.
    Closing {
        /// Tick the close began.
        since: u64,
    },
}

/// What the timer callback should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet; look again at this tick.
    Wait(u64),
    /// Send a WebSocket ping, then look again at this tick.
    Ping(u64),
    /// The upgrade request did not arrive in time.
    HandshakeTimeout,
    /// Nothing received for `ping_interval + pong_timeout`.
    IdleTimeout,
    /// Bytes have been queued with no write progress for `write_stall`.
    WriteStall,
    /// The close did not complete within `close_grace`: drop the socket.
    CloseExpired,
}

/// Per-connection timestamps (ticks), updated by the IO layer.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Last tick anything arrived from the peer.
    pub last_rx: u64,
    /// Last tick the outbox made progress (or became non-empty).
    pub last_tx: u64,
    /// Whether a ping went out since `last_rx`.
    pub ping_sent: bool,
}

impl Liveness {
    /// A connection accepted at `now`.
    pub fn new(now: u64) -> Self {
        Self {
            last_rx: now,
            last_tx: now,
            ping_sent: false,
        }
    }

    /// Something arrived from the peer.
    pub fn received(&mut self, now: u64) {
        self.last_rx = now;
        self.ping_sent = false;
    }

    /// Decides what the connection's timer means at `now`. `queued` is whether the outbox holds
    /// unwritten bytes.
    pub fn check(&mut self, phase: Phase, queued: bool, now: u64, t: &Timeouts) -> Verdict {
        match phase {
            Phase::Handshake { since } => {
                let due = since + t.handshake;
                if now >= due {
                    Verdict::HandshakeTimeout
                } else {
                    Verdict::Wait(due)
                }
            }
            Phase::Closing { since } => {
                let due = since + t.close_grace;
                if now >= due {
                    Verdict::CloseExpired
                } else {
                    Verdict::Wait(due)
                }
            }
            Phase::Open => {
                if queued && now >= self.last_tx + t.write_stall {
                    return Verdict::WriteStall;
                }
                let dead_at = self.last_rx + t.ping_interval + t.pong_timeout;
                if now >= dead_at {
                    return Verdict::IdleTimeout;
                }
                let stall_at = if queued {
                    self.last_tx + t.write_stall
                } else {
                    u64::MAX
                };
                let ping_at = self.last_rx + t.ping_interval;
                if !self.ping_sent && now >= ping_at {
                    self.ping_sent = true;
                    return Verdict::Ping(dead_at.min(stall_at));
                }
                let next = if self.ping_sent { dead_at } else { ping_at };
                Verdict::Wait(next.min(stall_at))
            }
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
    };

    #[test]
    fn a_silent_client_is_pinged_then_timed_out() {
        let mut l = Liveness::new(0);
        assert_eq!(l.check(Phase::Open, false, 1, &T), Verdict::Wait(25));
        assert_eq!(l.check(Phase::Open, false, 25, &T), Verdict::Ping(45));
        assert_eq!(l.check(Phase::Open, false, 30, &T), Verdict::Wait(45));
        assert_eq!(l.check(Phase::Open, false, 45, &T), Verdict::IdleTimeout);
    }

    #[test]
    fn a_pong_resets_the_clock() {
        let mut l = Liveness::new(0);
        assert_eq!(l.check(Phase::Open, false, 25, &T), Verdict::Ping(45));
        l.received(30);
        assert_eq!(l.check(Phase::Open, false, 45, &T), Verdict::Wait(55));
        assert_eq!(l.check(Phase::Open, false, 55, &T), Verdict::Ping(75));
    }

    #[test]
    fn a_stuck_reader_is_caught_before_the_heartbeat() {
        let mut l = Liveness::new(0);
        l.last_tx = 5;
        assert_eq!(l.check(Phase::Open, true, 6, &T), Verdict::Wait(20));
        assert_eq!(l.check(Phase::Open, true, 20, &T), Verdict::WriteStall);
        // Queue drained: no stall however old last_tx is.
        assert_eq!(l.check(Phase::Open, false, 20, &T), Verdict::Wait(25));
    }

    #[test]
    fn handshakes_and_closes_have_their_own_deadlines() {
        let mut l = Liveness::new(0);
        assert_eq!(
            l.check(Phase::Handshake { since: 2 }, false, 5, &T),
            Verdict::Wait(12)
        );
        assert_eq!(
            l.check(Phase::Handshake { since: 2 }, false, 12, &T),
            Verdict::HandshakeTimeout
        );
        assert_eq!(
            l.check(Phase::Closing { since: 7 }, true, 8, &T),
            Verdict::Wait(10)
        );
        assert_eq!(
            l.check(Phase::Closing { since: 7 }, true, 10, &T),
            Verdict::CloseExpired
        );
    }
}
