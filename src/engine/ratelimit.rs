//! Token buckets: per-connection message and byte rates, and the policy for clients that keep
//! exceeding them.
//!
//! Sans-IO like the rest of the engine: every call takes `now` in nanoseconds on the caller's
//! monotonic clock, and nothing here reads a clock. Tokens are kept in fixed point (units of
//! 1e-9 token), so refilling is one multiply: a bucket refilling `rate` tokens per second gains
//! exactly `rate` units per elapsed nanosecond. Rates and bursts are capped at [`MAX_RATE`] so
//! that never overflows.
//!
//! A connection's state is [`RateLimiter`], 40 bytes inline in its slot; the limits themselves
//! ([`Limits`]) are shared by every connection of a server.

/// Fixed-point units per token.
const UNIT: u64 = 1_000_000_000;

/// Largest rate or burst a bucket accepts (per second, or tokens): 1e9 keeps
/// `burst * UNIT` within a u64 with room to spare.
pub const MAX_RATE: u64 = 1_000_000_000;

/// Nanoseconds per second, for `now` arithmetic.
const SECOND: u64 = 1_000_000_000;

/// The shape of one bucket: refill rate and capacity. A rate of 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens added per second; 0 turns the bucket off.
    pub rate: u64,
    /// Capacity in tokens: the largest burst after a quiet period.
    pub burst: u64,
}

impl Bucket {
    /// A bucket; `burst` below `rate`'s one-second worth is allowed (it only bounds bursts).
    pub fn new(rate: u64, burst: u64) -> Self {
        Self {
            rate: rate.min(MAX_RATE),
            burst: burst.min(MAX_RATE),
        }
    }

    /// Whether the bucket limits anything.
    pub fn is_on(&self) -> bool {
        self.rate > 0
    }

    fn capacity(&self) -> u64 {
        self.burst.max(1) * UNIT
    }

    /// The level after `elapsed` nanoseconds of refilling.
    fn refill(&self, level: u64, elapsed: u64) -> u64 {
        level
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.capacity())
    }

    /// A full bucket's level (what a new connection starts with).
    pub fn full(&self) -> u64 {
        self.capacity()
    }

    /// Refills `level` from `last` to `now`, then takes `n` tokens if they are there. Returns
    /// whether they were; `level` and `last` are updated either way.
    pub fn take(&self, level: &mut u64, last: &mut u64, now: u64, n: u64) -> bool {
        if !self.is_on() {
            return true;
        }
        *level = self.refill(*level, now.saturating_sub(*last));
        *last = (*last).max(now);
        let cost = n.saturating_mul(UNIT);
        if *level >= cost {
            *level -= cost;
            true
        } else {
            false
        }
    }

    /// Whether a bucket at `level`, last touched at `last`, is full at `now`.
    pub fn is_full(&self, level: u64, last: u64, now: u64) -> bool {
        !self.is_on() || self.refill(level, now.saturating_sub(last)) >= self.capacity()
    }
}

/// The per-connection limits of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Data messages.
    pub messages: Bucket,
    /// Payload bytes of data messages.
    pub bytes: Bucket,
    /// Nanoseconds a client may keep having every message dropped before it is closed.
    pub close_after: u64,
    /// Least nanoseconds between two `rate_limited` notices to one client.
    pub notice_every: u64,
}

impl Limits {
    /// Whether any limit is on (if not, the shard skips the limiter entirely).
    pub fn is_on(&self) -> bool {
        self.messages.is_on() || self.bytes.is_on()
    }
}

/// What to do with one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limits: handle it.
    Pass,
    /// Over a limit: drop it; `notify` says whether to tell the client this time.
    Drop {
        /// Send a `rate_limited` error (at most one per `notice_every`).
        notify: bool,
    },
    /// Dropping messages for `close_after` without a pause of `notice_every`: drop it and
    /// close (`Close::RateLimited`).
    Close,
}

/// One connection's buckets and its over-limit streak.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimiter {
    last: u64,
    messages: u64,
    bytes: u64,
    /// Boxed: only a client that went over a limit has a streak, and every connection's slab
    /// slot would otherwise carry its 24 bytes.
    drops: Option<Box<Drops>>,
}

/// The over-limit streak of a client that has had a message dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Drops {
    /// When the current streak of drops began. A streak lasts while drops come less than
    /// `notice_every` apart, whatever passes in between.
    streak_since: u64,
    /// When the last message was dropped.
    last: u64,
    /// When the client was last told.
    noticed_at: u64,
}

impl RateLimiter {
    /// Full buckets at `now`.
    pub fn new(limits: &Limits, now: u64) -> Self {
        Self {
            last: now,
            messages: limits.messages.full(),
            bytes: limits.bytes.full(),
            drops: None,
        }
    }

    /// Decides on a message of `len` payload bytes arriving at `now`.
    ///
    /// A message passes only if both buckets have room; a dropped one takes no tokens, so a
    /// client that slows down gets through again as soon as the buckets refill. A message
    /// larger than the byte burst can never pass: configuration keeps `rate_burst_bytes` at
    /// least `max_message_bytes`.
    pub fn check(&mut self, limits: &Limits, now: u64, len: usize) -> Verdict {
        let (mut last_m, mut last_b) = (self.last, self.last);
        let mut m = self.messages;
        let mut b = self.bytes;
        let ok = limits.messages.take(&mut m, &mut last_m, now, 1)
            && limits.bytes.take(&mut b, &mut last_b, now, len as u64);
        if ok {
            self.messages = m;
            self.bytes = b;
            self.last = self.last.max(now);
            return Verdict::Pass;
        }
        // Keep the refill but not the take: only the message bucket may have been charged.
        self.messages = limits
            .messages
            .refill_only(self.messages, now.saturating_sub(self.last));
        self.bytes = limits
            .bytes
            .refill_only(self.bytes, now.saturating_sub(self.last));
        self.last = self.last.max(now);
        // A client that keeps losing messages (even if some of its flood gets through as the
        // buckets refill) is abusive, not bursty; one that pauses for a notice interval is not.
        let (d, notify) = match &mut self.drops {
            None => {
                let first = Drops {
                    streak_since: now,
                    last: now,
                    noticed_at: now,
                };
                (&mut **self.drops.insert(Box::new(first)), true)
            }
            Some(d) => {
                if now.saturating_sub(d.last) >= limits.notice_every {
                    d.streak_since = now;
                }
                d.last = now;
                let notify = now.saturating_sub(d.noticed_at) >= limits.notice_every;
                (&mut **d, notify)
            }
        };
        if now.saturating_sub(d.streak_since) >= limits.close_after {
            return Verdict::Close;
        }
        if notify {
            d.noticed_at = now;
        }
        Verdict::Drop { notify }
    }
}

impl Bucket {
    fn refill_only(&self, level: u64, elapsed: u64) -> u64 {
        if self.is_on() {
            self.refill(level, elapsed)
        } else {
            level
        }
    }
}

/// One second in the units of `now`, for callers building [`Limits`].
pub const fn seconds(s: u64) -> u64 {
    s.saturating_mul(SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limits(msgs: u64, burst: u64) -> Limits {
        Limits {
            messages: Bucket::new(msgs, burst),
            bytes: Bucket::new(0, 0),
            close_after: seconds(2),
            notice_every: seconds(1),
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let b = Bucket::new(10, 5);
        let (mut level, mut last) = (b.full(), 0);
        for i in 0..5 {
            assert!(b.take(&mut level, &mut last, 0, 1), "burst token {i}");
        }
        assert!(!b.take(&mut level, &mut last, 0, 1), "burst spent");
        // 10 per second: one token every 100 ms.
        assert!(!b.take(&mut level, &mut last, 99 * MS, 1));
        assert!(b.take(&mut level, &mut last, 100 * MS, 1));
        assert!(!b.take(&mut level, &mut last, 100 * MS, 1));
        // A long pause refills to the burst, no further.
        assert!(b.is_full(level, last, seconds(60)));
        for _ in 0..5 {
            assert!(b.take(&mut level, &mut last, seconds(60), 1));
        }
        assert!(!b.take(&mut level, &mut last, seconds(60), 1));
    }

    #[test]
    fn a_zero_rate_is_off_and_huge_values_do_not_overflow() {
        let off = Bucket::new(0, 0);
        let (mut level, mut last) = (off.full(), 0);
        assert!(off.take(&mut level, &mut last, 0, u64::MAX));
        let big = Bucket::new(u64::MAX, u64::MAX);
        let (mut level, mut last) = (big.full(), 0);
        assert!(big.take(&mut level, &mut last, u64::MAX, MAX_RATE));
        assert!(!big.take(&mut level, &mut last, u64::MAX, u64::MAX));
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let b = Bucket::new(10, 1);
        let (mut level, mut last) = (b.full(), seconds(5));
        assert!(b.take(&mut level, &mut last, seconds(5), 1));
        assert!(!b.take(&mut level, &mut last, seconds(1), 1));
        assert_eq!(last, seconds(5));
    }

    #[test]
    fn drops_notify_once_per_interval_and_a_long_streak_closes() {
        let l = limits(10, 2);
        let mut r = RateLimiter::new(&l, 0);
        assert_eq!(r.check(&l, 0, 1), Verdict::Pass);
        assert_eq!(r.check(&l, 0, 1), Verdict::Pass);
        assert_eq!(r.check(&l, 0, 1), Verdict::Drop { notify: true });
        assert_eq!(r.check(&l, 1, 1), Verdict::Drop { notify: false });
        // A token comes back after 100 ms.
        assert_eq!(r.check(&l, 100 * MS, 1), Verdict::Pass);
        assert_eq!(r.check(&l, 100 * MS, 1), Verdict::Drop { notify: false });
        // A pause of a notice interval ends the streak: a later burst starts afresh.
        assert_eq!(r.check(&l, 1500 * MS, 1), Verdict::Pass);
        assert_eq!(r.check(&l, 1500 * MS, 1), Verdict::Pass);
        assert_eq!(r.check(&l, 1500 * MS, 1), Verdict::Drop { notify: true });
        // Flooding keeps every message dropped; one notice a second, then the close.
        let mut notices = 0;
        let mut t = 1500 * MS;
        let verdict = loop {
            t += MS / 2; // 2,000 messages a second, never a full token between them
            match r.check(&l, t, 1) {
                Verdict::Drop { notify } => notices += u32::from(notify),
                Verdict::Pass => {} // a refilled token slips through now and then
                v @ Verdict::Close => break v,
            }
            assert!(t < seconds(60), "never closed");
        };
        assert_eq!(verdict, Verdict::Close);
        assert!(
            (3500 * MS..3600 * MS).contains(&t),
            "closed close_after into the streak, not at {t}"
        );
        assert!((1..=2).contains(&notices), "{notices} notices");
    }

    #[test]
    fn a_steady_flood_at_twice_the_rate_is_limited_then_closed() {
        let l = limits(10, 1);
        let mut r = RateLimiter::new(&l, 0);
        let mut passed = 0;
        let mut i = 0;
        while r.check(&l, i * 50 * MS, 1) != Verdict::Close {
            if r.drops.as_ref().map(|d| d.last) != Some(i * 50 * MS) {
                passed += 1;
            }
            i += 1;
        }
        // Half got through until the streak reached close_after (2 s = 40 messages).
        assert_eq!(i * 50 * MS, seconds(2) + 50 * MS);
        assert!((19..=22).contains(&passed), "{passed}");
    }

    #[test]
    fn a_client_within_its_rate_is_never_dropped() {
        let l = limits(10, 1);
        let mut r = RateLimiter::new(&l, 0);
        for i in 0..1000 {
            assert_eq!(r.check(&l, i * 100 * MS, 1), Verdict::Pass, "message {i}");
        }
    }

    #[test]
    fn bytes_are_limited_separately() {
        let l = Limits {
            messages: Bucket::new(1000, 1000),
            bytes: Bucket::new(100, 150),
            close_after: seconds(2),
            notice_every: seconds(1),
        };
        let mut r = RateLimiter::new(&l, 0);
        assert_eq!(r.check(&l, 0, 100), Verdict::Pass);
        assert!(matches!(r.check(&l, 0, 100), Verdict::Drop { .. }));
        assert_eq!(r.check(&l, 0, 50), Verdict::Pass, "a drop takes no tokens");
        assert!(matches!(r.check(&l, 0, 1), Verdict::Drop { .. }));
        assert_eq!(r.check(&l, seconds(1), 100), Verdict::Pass);
    }
}
