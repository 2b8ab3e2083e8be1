//! Loss and duplicate accounting. Each publisher numbers its messages per room from 0; each
//! subscriber keeps one [`SeqTracker`] per publisher, which tolerates reordering (numbers seen
//! ahead of the next expected one are kept in a small set until the gap fills). Per-room totals
//! ([`RoomStats`]) are plain sums, so threads and processes merge by addition, and losses are
//! derived at the end: `expected - unique`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Sequence numbers seen from one publisher by one subscriber.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    next: u64,
    ahead: BTreeSet<u64>,
}

/// What one received sequence number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time this number arrived.
    New,
    /// Already received before.
    Duplicate,
}

impl SeqTracker {
    /// Records sequence number `s`.
    pub fn observe(&mut self, s: u64) -> Seen {
        if s < self.next || self.ahead.contains(&s) {
            return Seen::Duplicate;
        }
        if s == self.next {
            self.next += 1;
            while self.ahead.remove(&self.next) {
                self.next += 1;
            }
        } else {
            self.ahead.insert(s);
        }
        Seen::New
    }

    /// Distinct numbers received.
    pub fn unique(&self) -> u64 {
        self.next + self.ahead.len() as u64
    }
}

/// Delivery totals of one room (or of the implicit room in raw mode).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomStats {
    /// Subscribers that had joined when publishing started.
    pub members: u64,
    /// Messages published to the room.
    pub published: u64,
    /// Distinct deliveries received (a (subscriber, publisher, seq) triple counts once).
    pub unique: u64,
    /// Deliveries of a message a subscriber had already received.
    pub duplicates: u64,
}

impl RoomStats {
    /// Deliveries the server owed: every published message to every member.
    pub fn expected(&self) -> u64 {
        self.published * self.members
    }

    /// Expected deliveries that never arrived (within the run's grace period).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.unique)
    }

    /// Adds another part's totals (another thread or process).
    pub fn add(&mut self, o: &Self) {
        self.members += o.members;
        self.published += o.published;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
    }
}

/// Element-wise sum of per-room totals; `into` grows to the longer length.
pub fn merge_rooms(into: &mut Vec<RoomStats>, from: &[RoomStats]) {
    if into.len() < from.len() {
        into.resize(from.len(), RoomStats::default());
    }
    for (a, b) in into.iter_mut().zip(from) {
        a.add(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_reordered_and_duplicates() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Seen::New);
        assert_eq!(t.observe(2), Seen::New);
        assert_eq!(t.observe(2), Seen::Duplicate);
        assert_eq!(t.observe(0), Seen::Duplicate);
        assert_eq!(t.unique(), 2);
        assert_eq!(t.observe(1), Seen::New);
        assert_eq!(t.unique(), 3);
        assert!(t.ahead.is_empty(), "gap filled, set drained");
        assert_eq!(t.observe(5), Seen::New);
        assert_eq!(t.unique(), 4);
    }

    #[test]
    fn losses_from_expected_minus_unique() {
        // 3 members, 10 published; two subscribers got everything, one missed 4, and one
        // duplicate arrived.
        let mut subs: Vec<SeqTracker> = vec![SeqTracker::default(); 3];
        let mut dups = 0;
        for (i, sub) in subs.iter_mut().enumerate() {
            for s in 0..10u64 {
                if i == 2 && (3..7).contains(&s) {
                    continue;
                }
                sub.observe(s);
            }
        }
        if subs[0].observe(4) == Seen::Duplicate {
            dups += 1;
        }
        let room = RoomStats {
            members: 3,
            published: 10,
            unique: subs.iter().map(SeqTracker::unique).sum(),
            duplicates: dups,
        };
        assert_eq!(room.expected(), 30);
        assert_eq!(room.lost(), 4);
        assert_eq!(room.duplicates, 1);
        let mut merged = vec![RoomStats::default()];
        merge_rooms(&mut merged, &[room.clone(), room.clone()]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0], room);
    }
}
