//! The write schedule: which connections the driver writes, and when.
//!
//! A connection with output waits in one of two lists. **Due** connections are written by the
//! next walk; output that answers the connection itself (HTTP responses, request replies,
//! control frames, close frames) always makes it due. **Held** connections got deliveries
//! (publications, presence, broadcasts, direct messages) while the optional write delay
//! (`write_delay`) is on: they become due together when the shard's flush deadline passes, so
//! the frames that arrive meanwhile share one write. The deadline is one per shard, set by
//! the first delivery held after the last release: no timer per connection, and no connection
//! is held longer than the delay. Off (the default), deliveries are due at once.
//!
//! A **walk** writes the due connections of one moment, in order, at most [`FLUSH_SLICE`] of
//! them per call of `Engine::flush`, so the driver can read input and its inbox between slices
//! (fan-out to 5,000 sockets is a ~50 ms walk). A publish that arrives mid-walk is queued on
//! every recipient at once: the ones the walk has not reached yet get it in this walk, the
//! ones it has passed become due for the next. Each recipient's frames stay in order (one
//! outbox per connection; a walk writes its prefix), and a publication waits at most one walk
//! instead of the rest of the current walk plus its own.
//!
//! A connection is in at most one of `due` and the walk at a time ([`Dirty::Due`] is cleared
//! when the walk writes it); it may be in `held` as well, and a stale `held` entry (the
//! connection went due meanwhile) is skipped at release.

use super::ids::SessionId;

/// Connections written per `Engine::flush` call before the driver polls for input again. One
/// loopback write costs 5-7 µs of server CPU on the project VM
/// (bench/runs/2026-12-02-delivery-cost), so a slice is ~1.5-2 ms of writes: a publish waits at
/// most that long to join the walk under way, and the extra `epoll_wait` per slice measured
/// 0.005 system calls per delivery against 0.002 without slices (strace, same run). Not tuned
/// further: any value from ~64 to ~1,000 keeps both costs small.
pub const FLUSH_SLICE: usize = 256;

/// Where a connection is in the write schedule (held in its slab entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Dirty {
    /// Nothing to write, or waiting for the socket to be writable again.
    #[default]
    Clean,
    /// Deliveries held until the shard's flush deadline.
    Held,
    /// In the due list or in the walk: written by the next (or current) walk.
    Due,
}

/// What one `Engine::flush` call did to the walk (the driver's fan-out histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Walked {
    /// A walk began in this call: everything queued before it is in it (or held).
    pub started: bool,
    /// The walk ended in this call: every connection in it was written.
    pub finished: bool,
    /// Connections written in this call.
    pub written: usize,
}

/// The schedule's lists. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// Connections for the next walk.
    pub(crate) due: Vec<SessionId>,
    /// The walk in progress (empty when none), and how far it got.
    pub(crate) walk: Vec<SessionId>,
    pub(crate) pos: usize,
    /// Connections with held deliveries, and when they become due (ns; meaningful while
    /// `held` is not empty).
    pub(crate) held: Vec<SessionId>,
    pub(crate) held_until: u64,
    /// The write delay in ns (0: off).
    pub(crate) delay: u64,
    /// The engine's clock (ns), set with it (`Engine::set_now`): when a held delivery starts
    /// the deadline.
    pub(crate) now_ns: u64,
}

impl Writes {
    /// A schedule holding deliveries for `delay` ns (0: not at all).
    pub(crate) fn new(delay: u64) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Makes a connection due (it is in state `dirty`); returns its new state.
    #[inline]
    pub(crate) fn make_due(&mut self, id: SessionId, dirty: Dirty) -> Dirty {
        if dirty != Dirty::Due {
            self.due.push(id);
        }
        Dirty::Due
    }

    /// Schedules a delivery to a connection (in state `dirty`): held with the write delay on,
    /// due otherwise; returns its new state.
    #[inline]
    pub(crate) fn deliver(&mut self, id: SessionId, dirty: Dirty) -> Dirty {
        if self.delay == 0 {
            return self.make_due(id, dirty);
        }
        if dirty != Dirty::Clean {
            return dirty;
        }
        if self.held.is_empty() {
            self.held_until = self.now_ns.saturating_add(self.delay);
        }
        self.held.push(id);
        Dirty::Held
    }

    /// Whether a walk is under way.
    pub(crate) fn walking(&self) -> bool {
        self.pos < self.walk.len()
    }

    /// Whether the held connections are due at `now` (ns).
    pub(crate) fn release_due(&self, now: u64) -> bool {
        !self.held.is_empty() && now >= self.held_until
    }

    /// When the held connections become due, if any are held.
    pub(crate) fn deadline(&self) -> Option<u64> {
        (!self.held.is_empty()).then_some(self.held_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k: usize) -> SessionId {
        SessionId::new(1, 0, k)
    }

    #[test]
    fn without_a_delay_a_delivery_is_due_at_once_and_listed_once() {
        let mut w = Writes::new(0);
        let s = w.deliver(id(1), Dirty::Clean);
        assert_eq!(s, Dirty::Due);
        assert_eq!(w.deliver(id(1), s), Dirty::Due);
        assert_eq!(w.due, [id(1)]);
        assert!(w.held.is_empty());
    }

    #[test]
    fn the_first_held_delivery_sets_the_deadline_and_later_ones_keep_it() {
        let mut w = Writes::new(10);
        w.now_ns = 100;
        let a = w.deliver(id(1), Dirty::Clean);
        w.now_ns = 105;
        let b = w.deliver(id(2), Dirty::Clean);
        assert_eq!((a, b), (Dirty::Held, Dirty::Held));
        assert_eq!(
            w.deadline(),
            Some(110),
            "no connection waits past the first + delay"
        );
        assert!(!w.release_due(109) && w.release_due(110));
        // A reply makes a held connection due at once; it stays listed in `held` (skipped).
        assert_eq!(w.make_due(id(1), a), Dirty::Due);
        assert_eq!(w.due, [id(1)]);
        assert_eq!(w.deliver(id(1), Dirty::Due), Dirty::Due, "due stays due");
    }
}
