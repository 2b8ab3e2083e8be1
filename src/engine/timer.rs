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
//!
//! Every connection has an entry, so an entry is small: the key the owner chose (a connection's
//! 4-byte slab key) and the low 32 bits of its deadline, 8 bytes in all. The low bits suffice
//! because no deadline is armed more than [`MAX_AHEAD`] ticks ahead, and the wheel fires each
//! entry within a rotation of its deadline.

/// One armed timer, as it comes out of the wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired<K = u64> {
    /// What the timer belongs to (a connection's slab key, an acknowledged send's number).
    pub key: K,
    /// The tick it was armed for; compare with the owner's current deadline.
    pub due: u64,
}

/// One armed timer as its slot holds it.
#[derive(Debug, Clone, Copy)]
struct Entry<K> {
    key: K,
    /// The deadline's low 32 bits.
    due: u32,
}

/// The furthest ahead a deadline is armed, in ticks (2^30: 3.4 years of 100 ms ticks); a later
/// one is armed this far ahead. Every entry's deadline is thereby within 2^31 ticks of the
/// wheel's time, where its low 32 bits tell whether it has passed. The owners arm seconds to
/// minutes ahead; a connection whose deadline were further would find it not reached when the
/// timer fires, and arm again.
pub const MAX_AHEAD: u64 = 1 << 30;

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
pub struct TimerWheel<K = u64> {
    slots: Vec<Vec<Entry<K>>>,
    /// The last tick fully processed.
    now: u64,
    len: usize,
}

impl<K: Copy> TimerWheel<K> {
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

    /// Arms a timer for tick `due`; a past tick is moved to the next one, and one more than
    /// [`MAX_AHEAD`] ahead to that. Returns the tick the timer will carry when it expires,
    /// which owners must keep to recognise it.
    #[must_use = "lazy cancellation needs the tick the entry really carries"]
    pub fn schedule(&mut self, key: K, due: u64) -> u64 {
        let due = due.clamp(self.now + 1, self.now + MAX_AHEAD);
        let mask = self.slots.len() as u64 - 1;
        self.slots[(due & mask) as usize].push(Entry {
            key,
            // The low bits: see `MAX_AHEAD`.
            due: due as u32,
        });
        self.len += 1;
        due
    }

    /// Moves time to `now` and appends every entry due at or before it to `out`.
    pub fn advance(&mut self, now: u64, out: &mut Vec<Expired<K>>) {
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
                // Ticks since the deadline, modulo 2^32: below 2^31 it has passed (a deadline
                // ahead is at most `MAX_AHEAD` away, one behind less than a rotation).
                let late = (now as u32).wrapping_sub(slot[i].due);
                if late < 1 << 31 {
                    let e = slot.swap_remove(i);
                    out.push(Expired {
                        key: e.key,
                        due: now - u64::from(late),
                    });
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

    #[test]
    fn an_entry_is_a_slab_key_and_the_low_half_of_its_deadline() {
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 8);
    }

    #[test]
    fn deadlines_far_ahead_are_armed_at_the_horizon_and_fire_there() {
        let start = u64::from(u32::MAX) - 5; // the low bits wrap on the way
        let mut w = TimerWheel::new(8, start);
        assert_eq!(w.schedule(1, u64::MAX), start + MAX_AHEAD);
        assert_eq!(w.schedule(2, start + 10), start + 10);
        assert_eq!(fired(&mut w, start + 9), vec![]);
        assert_eq!(fired(&mut w, start + 10), vec![(2, start + 10)]);
        assert_eq!(fired(&mut w, start + MAX_AHEAD - 1), vec![]);
        assert_eq!(
            fired(&mut w, start + MAX_AHEAD),
            vec![(1, start + MAX_AHEAD)]
        );
    }

    /// The wheel against a naive model: a sorted list of deadlines.
    #[test]
    fn agrees_with_a_naive_model() {
        use proptest::prelude::*;
        // Starting near 2^32, the deadlines' low 32 bits wrap during the run.
        let starts = prop_oneof![Just(0u64), (1u64 << 32) - 400..(1u64 << 32) + 100];
        proptest!(|(ops in proptest::collection::vec((0u64..300, 1u64..40), 1..200), start in starts)| {
            let mut w = TimerWheel::new(16, start);
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut now = start;
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
