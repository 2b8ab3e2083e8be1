//! A hashed timer wheel: every connection's next deadline, in O(1) per operation.
//!
//! Time is a tick count (the shard converts `Instant`s; nothing here reads a clock). A timer is a
//! `(key, due)` pair in the slot `due % slots`; advancing to `now` visits only the slots of the
//! ticks that passed. Entries due beyond one rotation stay in their slot and are skipped until
//! their round comes.
//!
//! Cancellation is lazy, as in uSockets: the owner keeps the `due` it armed last and ignores an
//! expired entry whose `due` differs (or whose key no longer exists). A connection therefore has
//! one live entry, re-armed from its timer callback, so activity (a message received) never
//! touches the wheel: it only moves a timestamp that the callback reads.

/// One armed timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// What the timer belongs to (a session id).
    pub key: u64,
    /// The tick it was armed for; compare with the owner's current deadline.
    pub due: u64,
}

/// The wheel.
///
/// A slot that drained gives back the capacity it no longer needs (see [`advance`]): a burst of
/// clients puts thousands of deadlines into a few slots, and as their heartbeats move the
/// cluster around the wheel every slot it passed would otherwise keep room for all of them
/// (10,000 clients pinged every 2 s grew the server by 70 bytes per connection in 60 s,
/// `bench/runs/2026-12-02-heartbeat-memory`).
///
/// [`advance`]: TimerWheel::advance
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<Expired>>,
    /// The last tick fully processed.
    now: u64,
    len: usize,
}

impl TimerWheel {
    /// A wheel with `slots` slots (rounded up to a power of two) starting at tick `now`.
    pub fn new(slots: usize, now: u64) -> Self {
        let n = slots.max(2).next_power_of_two();
        Self {
            slots: (0..n).map(|_| Vec::new()).collect(),
            now,
            len: 0,
        }
    }

    /// Entries in the wheel, stale ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the wheel holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last tick processed by [`advance`](Self::advance).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Arms a timer for tick `due`; a past tick is moved to the next one. Returns the tick the
    /// timer will carry when it expires, which owners must keep to recognise it.
    #[must_use = "lazy cancellation needs the tick the entry really carries"]
    pub fn schedule(&mut self, key: u64, due: u64) -> u64 {
        let due = due.max(self.now + 1);
        let mask = self.slots.len() as u64 - 1;
        self.slots[(due & mask) as usize].push(Expired { key, due });
        self.len += 1;
        due
    }

    /// Moves time to `now` and appends every entry due at or before it to `out`.
    pub fn advance(&mut self, now: u64, out: &mut Vec<Expired>) {
        if now <= self.now {
            return;
        }
        let mask = self.slots.len() as u64 - 1;
        // Past one rotation every slot is visited once; more would revisit the same slots.
        let last = now.min(self.now + self.slots.len() as u64);
        for t in self.now + 1..=last {
            let slot = &mut self.slots[(t & mask) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].due <= now {
                    out.push(slot.swap_remove(i));
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
            if slot.capacity() > KEEP && slot.capacity() > slot.len() * 4 {
                slot.shrink_to(slot.len() * 2);
            }
        }
        self.now = now;
    }
}

/// Entries a drained slot may always keep room for: a steady load that fills slots to about
/// this size reuses their vectors rather than regrowing them. Above it, a slot keeps at most
/// four times what is left in it.
const KEEP: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(w: &mut TimerWheel, now: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        w.advance(now, &mut out);
        let mut v: Vec<_> = out.iter().map(|e| (e.key, e.due)).collect();
        v.sort();
        v
    }

    #[test]
    fn timers_fire_at_their_tick_and_not_before() {
        let mut w = TimerWheel::new(8, 0);
        let _ = w.schedule(1, 3);
        let _ = w.schedule(2, 5);
        assert_eq!(fired(&mut w, 2), vec![]);
        assert_eq!(fired(&mut w, 3), vec![(1, 3)]);
        assert_eq!(fired(&mut w, 10), vec![(2, 5)]);
        assert!(w.is_empty());
    }

    #[test]
    fn deadlines_beyond_one_rotation_wait_for_their_round() {
        let mut w = TimerWheel::new(8, 0);
        let _ = w.schedule(7, 20); // slot 4, two rotations ahead
        assert_eq!(fired(&mut w, 4), vec![]);
        assert_eq!(fired(&mut w, 12), vec![]);
        assert_eq!(fired(&mut w, 19), vec![]);
        assert_eq!(fired(&mut w, 20), vec![(7, 20)]);
    }

    #[test]
    fn a_long_jump_fires_everything_due_exactly_once() {
        let mut w = TimerWheel::new(16, 0);
        for k in 0..100 {
            let _ = w.schedule(k, k * 3 + 1);
        }
        let all = fired(&mut w, 1000);
        assert_eq!(all.len(), 100);
        assert!(w.is_empty());
        assert_eq!(fired(&mut w, 2000), vec![]);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_tick() {
        let mut w = TimerWheel::new(8, 50);
        assert_eq!(
            w.schedule(9, 10),
            51,
            "a past deadline moves to the next tick"
        );
        assert_eq!(fired(&mut w, 51), vec![(9, 51)]);
    }

    #[test]
    fn a_drained_slot_gives_back_what_a_burst_made_it_grow_to() {
        let mut w = TimerWheel::new(8, 0);
        for k in 0..10_000 {
            let _ = w.schedule(k, 3);
        }
        let _ = w.schedule(1, 11); // the same slot, one rotation later
        assert_eq!(fired(&mut w, 3).len(), 10_000);
        let slot = &w.slots[3];
        assert_eq!(slot.len(), 1);
        assert!(slot.capacity() <= KEEP, "kept room for {}", slot.capacity());
        // A slot that stays small keeps its vector.
        let _ = w.schedule(2, 12);
        let _ = w.schedule(3, 12);
        let cap = w.slots[4].capacity();
        assert_eq!(fired(&mut w, 12).len(), 3);
        assert_eq!(w.slots[4].capacity(), cap);
    }

    /// The wheel against a naive model: a sorted list of deadlines.
    #[test]
    fn agrees_with_a_naive_model() {
        use proptest::prelude::*;
        proptest!(|(ops in proptest::collection::vec((0u64..300, 1u64..40), 1..200))| {
            let mut w = TimerWheel::new(16, 0);
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut now = 0;
            for (i, (due, step)) in ops.into_iter().enumerate() {
                let _ = w.schedule(i as u64, now + due);
                model.push((i as u64, (now + due).max(now + 1)));
                now += step;
                let mut got = fired(&mut w, now);
                let mut want: Vec<_> = model.iter().copied().filter(|&(_, d)| d <= now).collect();
                model.retain(|&(_, d)| d > now);
                got.sort();
                want.sort();
                prop_assert_eq!(got, want);
            }
        });
    }
}
