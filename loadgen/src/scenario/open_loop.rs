//! Open-loop senders of one thread (fanout publishers, open-loop echo and direct clients): each
//! with its own fixed-rate [`Schedule`], kept in a heap by next intended send time so that a tick
//! costs O(due · log senders), not O(connections).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::schedule::Schedule;

/// Schedules by connection tag, and the heap of their next intended times.
#[derive(Default)]
pub struct OpenLoop {
    scheds: Vec<Option<Schedule>>,
    due: BinaryHeap<Reverse<(u64, usize)>>,
}

impl OpenLoop {
    /// Gives connection `tag` the schedule `s`, replacing any it had.
    pub fn add(&mut self, tag: usize, s: Schedule) {
        if self.scheds.len() <= tag {
            self.scheds.resize(tag + 1, None);
        }
        if let Some(t) = s.next_at() {
            self.due.push(Reverse((t, tag)));
        }
        self.scheds[tag] = Some(s);
    }

    /// Whether `tag` has a schedule (it sends open loop).
    pub fn has(&self, tag: usize) -> bool {
        self.scheds.get(tag).is_some_and(Option::is_some)
    }

    /// The earliest next intended send time of any sender.
    pub fn next_at(&self) -> Option<u64> {
        self.due.peek().map(|r| r.0 .0)
    }

    /// Calls `send(tag, intended)` for every send due at `now`, sender by sender, each sender's
    /// sends in order.
    pub fn run_due(&mut self, now: u64, mut send: impl FnMut(usize, u64)) {
        while let Some(&Reverse((t, tag))) = self.due.peek() {
            if t > now {
                break;
            }
            self.due.pop();
            let Some(Some(sched)) = self.scheds.get_mut(tag) else {
                continue;
            };
            while let Some((_, intended)) = sched.take_due(now) {
                send(tag, intended);
            }
            if let Some(n) = sched.next_at() {
                self.due.push(Reverse((n, tag)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_every_due_event_in_time_order_of_senders() {
        let mut ol = OpenLoop::default();
        // 1000/s from 0 and 1000/s from 0.5 ms, both stopping at 3 ms.
        ol.add(4, Schedule::new(0, 1000.0, 0.0, 3_000_000));
        ol.add(1, Schedule::new(0, 1000.0, 0.5, 3_000_000));
        assert!(ol.has(1) && ol.has(4) && !ol.has(0) && !ol.has(9));
        assert_eq!(ol.next_at(), Some(0));
        let mut got = Vec::new();
        ol.run_due(1_000_000, |tag, t| got.push((tag, t)));
        assert_eq!(got, [(4, 0), (4, 1_000_000), (1, 500_000)]);
        assert_eq!(ol.next_at(), Some(1_500_000));
        got.clear();
        ol.run_due(u64::MAX, |tag, t| got.push((tag, t)));
        assert_eq!(got, [(1, 1_500_000), (1, 2_500_000), (4, 2_000_000)]);
        assert_eq!(ol.next_at(), None, "both schedules are over");
    }
}
