//! Acknowledged direct messages, on the sender's shard: which sends wait for receipts, from
//! which sessions they have them, and when they give up.
//!
//! A send with `"ack": true` gets a number unique on its shard; its message id (`mid`, see
//! [`mid`]) is the sender's session id and that number, so a recipient's receipt
//! (`{"type":"received","mid":…}`) finds its way back with no state on the recipient's side:
//! the session id names the sender's node and shard (`Route::Session`), the number the entry
//! here. An entry counts a receipt only from a session of the user it was sent to, once per
//! session; it ends when every session the send reached has answered, or at its deadline, and
//! with its sender's session. Deadlines live in this table's own [`TimerWheel`] (lazy
//! cancellation: an expired number no longer here is ignored).
//!
//! Bounded: a session has at most `max_pending_acks` entries ([`Acks::reserve`] refuses the
//! next), each for at most `MAX_ACK_TIMEOUT`.

use std::collections::HashMap;
use std::sync::Arc;

use super::ids::SessionId;
use super::timer::{Expired, TimerWheel};

/// One send waiting for receipts.
#[derive(Debug)]
pub struct Pending {
    /// The sending session.
    pub sender: SessionId,
    /// The request's `id`, as the JSON it was (echoed in the outcome).
    pub req_id: Option<Box<[u8]>>,
    /// The recipient user.
    pub to: Arc<str>,
    /// Sessions the message went to.
    pub reached: usize,
    /// Sessions that sent a receipt.
    pub acked: Vec<SessionId>,
    /// The tick it gives up at.
    due: u64,
}

/// What a receipt did.
#[derive(Debug, PartialEq, Eq)]
pub enum Receipt {
    /// Counted; more are awaited.
    Counted,
    /// Counted, and it was the last one: the entry is done (returned by `receipt`).
    Complete,
    /// Not counted: no such entry (late, or never sent), a session of another user, or a
    /// session that had answered already.
    Ignored,
}

/// A shard's pending acknowledged sends. See the module docs.
#[derive(Debug)]
pub struct Acks {
    pending: HashMap<u64, Pending>,
    by_session: HashMap<SessionId, Vec<u64>>,
    wheel: TimerWheel,
    next: u64,
    expired: Vec<Expired>,
}

/// The message id of send number `seq` of session `sender`: `"<session>-<seq>"`, decimal.
pub fn mid(sender: SessionId, seq: u64) -> String {
    format!("{}-{}", sender.0, seq)
}

/// The sender and number of a message id, if it is one of ours in shape.
pub fn parse_mid(mid: &str) -> Option<(SessionId, u64)> {
    let (s, n) = mid.split_once('-')?;
    let digits = |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(s) || !digits(n) {
        return None;
    }
    Some((SessionId(s.parse().ok()?), n.parse().ok()?))
}

impl Acks {
    /// An empty table at tick `now`.
    pub fn new(now: u64) -> Self {
        Self {
            pending: HashMap::new(),
            by_session: HashMap::new(),
            // 1024 ticks of 100 ms per rotation: a 5 s timeout is one pass; longer ones wait
            // their round in their slot.
            wheel: TimerWheel::new(1024, now),
            next: 0,
            expired: Vec::new(),
        }
    }

    /// A new number for a message id (unique on this shard).
    pub fn next_seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// A number for an acknowledged send of `sender`, unless it already has `cap` waiting.
    pub fn reserve(&mut self, sender: SessionId, cap: usize) -> Option<u64> {
        let n = self.by_session.get(&sender).map_or(0, Vec::len);
        (n < cap).then(|| self.next_seq())
    }

    /// Starts waiting for the receipts of send `seq`, until tick `due`.
    pub fn insert(&mut self, seq: u64, mut p: Pending, due: u64) {
        p.due = self.wheel.schedule(seq, due);
        self.by_session.entry(p.sender).or_default().push(seq);
        self.pending.insert(seq, p);
    }

    /// A new entry (its deadline is set by [`insert`](Self::insert)).
    pub fn pending(
        sender: SessionId,
        req_id: Option<Box<[u8]>>,
        to: Arc<str>,
        reached: usize,
    ) -> Pending {
        Pending {
            sender,
            req_id,
            to,
            reached,
            acked: Vec::new(),
            due: 0,
        }
    }

    /// A receipt for send `seq` of `sender` from session `from` of `user`. On
    /// [`Receipt::Complete`] the finished entry comes back too.
    pub fn receipt(
        &mut self,
        sender: SessionId,
        seq: u64,
        user: &str,
        from: SessionId,
    ) -> (Receipt, Option<Pending>) {
        let Some(p) = self.pending.get_mut(&seq) else {
            return (Receipt::Ignored, None);
        };
        if p.sender != sender || *p.to != *user || p.acked.contains(&from) {
            return (Receipt::Ignored, None);
        }
        p.acked.push(from);
        if p.acked.len() < p.reached {
            return (Receipt::Counted, None);
        }
        (Receipt::Complete, self.remove(seq))
    }

    fn remove(&mut self, seq: u64) -> Option<Pending> {
        let p = self.pending.remove(&seq)?;
        if let Some(list) = self.by_session.get_mut(&p.sender) {
            list.retain(|&s| s != seq);
            if list.is_empty() {
                self.by_session.remove(&p.sender);
            }
        }
        Some(p)
    }

    /// Moves time to tick `now`; the entries whose deadline passed come out in `out`, with
    /// their numbers.
    pub fn expire(&mut self, now: u64, out: &mut Vec<(u64, Pending)>) {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(now, &mut expired);
        for e in expired.drain(..) {
            let current = self.pending.get(&e.key).is_some_and(|p| p.due == e.due);
            if current {
                if let Some(p) = self.remove(e.key) {
                    out.push((e.key, p));
                }
            }
        }
        self.expired = expired;
    }

    /// Forgets every entry of a session that ended.
    pub fn end_session(&mut self, sender: SessionId) {
        for seq in self.by_session.remove(&sender).unwrap_or_default() {
            self.pending.remove(&seq);
        }
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip_and_reject_other_shapes() {
        let s = SessionId(123456789);
        assert_eq!(parse_mid(&mid(s, 42)), Some((s, 42)));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "1 -2",
            "+1-2",
            "99999999999999999999-1",
        ] {
            assert_eq!(parse_mid(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_per_session_cap_and_the_end_of_a_session_bound_the_table() {
        let mut a = Acks::new(0);
        let s = SessionId(7);
        for _ in 0..2 {
            let seq = a.reserve(s, 2).unwrap();
            a.insert(seq, Acks::pending(s, None, "bob".into(), 1), 10);
        }
        assert_eq!(a.reserve(s, 2), None);
        assert!(a.reserve(SessionId(8), 2).is_some(), "per session");
        a.end_session(s);
        assert!(a.is_empty() && a.by_session.is_empty());
        let mut out = Vec::new();
        a.expire(20, &mut out);
        assert!(out.is_empty(), "their timers find nothing");
    }
}
