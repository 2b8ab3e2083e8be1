//! `recover`: a recovery storm. Every subscriber joins one room with history (`storm`) and keeps
//! the last stream position it saw (the join ack's `offset` and `epoch`, then each message's
//! `offset`). At the common start they all close; halfway through `--offline` the publisher
//! publishes `--missed` messages; at the start plus `--offline` they all reconnect (at once, or
//! at `--reconnect-rate`) and join with `recover` from their last position, or, with
//! `--no-recover`, with a plain join (the baseline: what reconnecting costs without a replay).
//! With `--url` given several times (a cluster), a member reconnects to the next URL, not the one
//! it left.
//!
//! Measured per client, from its *intended* reconnect time (so a generator that opens 10,000
//! connections late is charged for it): the join ack (`ack`), the last replayed message
//! (`replayed`), and from the storm's start to the moment the client is done (`done_since_storm`:
//! its max is the time until all have recovered). Every offset a client receives is checked
//! against the one before: a repeat is a duplicate, a jump a gap, before and after the replay,
//! and live publications (`--rate`) during the storm are checked the same way. Counted:
//! `recovered_true`, `recovered_false`, `reconnect_failed`, `not_done` (neither by the end),
//! `duplicates`, `gaps`, `missed_total` (what the acks said each client missed).
//!
//! The publisher (global index 0, the first tag of the thread that holds it) joins the room
//! too and publishes with `exclude_self`, to the publishers' URL.

use std::io::Write as _;

use crate::net::Failure;
use crate::plan::{Plan, Share, Storm};
use crate::report::Traffic;
use crate::schedule::Schedule;

use super::probe::{write_probe, Probe};
use super::tally::Tally;
use super::{Ctx, Frame, JoinAck, Workload};

/// The one room of a storm.
pub const ROOM: &str = "storm";

/// Where one subscriber is in the storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Setup: connecting and joining.
    Joining,
    /// Joined, following the room, before the storm.
    Member,
    /// Closed at the start of the storm; the close is not complete yet.
    Leaving,
    /// Gone, waiting for its reconnect.
    Away,
    /// Reconnect opened (intended at `t0`); its join is not answered yet.
    Reconnecting,
    /// `recovered: true`: the replay up to `until` is not complete yet.
    Replaying,
    /// Recovered (or, without `recover`, rejoined).
    Done,
    /// Not recovered: `recovered: false`, or its reconnect failed.
    Failed,
    /// Never a member at the start of the storm (its setup failed, or it dropped before).
    Out,
}

/// A subscriber and the last position it has.
#[derive(Debug, Clone)]
struct Sub {
    url: usize,
    phase: Phase,
    /// The last offset it received in order (or was told by a join ack).
    last: Option<u64>,
    epoch: Option<String>,
    /// Intended reconnect time.
    t0: u64,
    /// The last offset of its replay (the recover ack's offset).
    until: u64,
    /// Its reconnect is due but its close was not complete: reconnect as soon as it is.
    due: bool,
    /// No gap or duplicate since it reconnected.
    clean: bool,
}

/// What a received offset is, next to the last one a client has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The next one.
    Next,
    /// One it already had.
    Duplicate,
    /// Past the next one: this many were skipped.
    Gap(u64),
}

/// `offset` after `last` (`None`: no position yet, so anything is next).
fn step(last: Option<u64>, offset: u64) -> Step {
    match last {
        Some(l) if offset <= l => Step::Duplicate,
        Some(l) if offset > l + 1 => Step::Gap(offset - l - 1),
        _ => Step::Next,
    }
}

/// One thread's part of a storm.
pub struct Recover {
    storm: Storm,
    /// Tag of the publisher, if this thread holds it (tag 0).
    publisher: bool,
    pub_url: usize,
    /// Subscribers, tags `first..`.
    first: usize,
    subs: Vec<Sub>,
    /// URLs in the run.
    urls: usize,
    /// Live publishes per second during the measurement (the publisher's; 0: none).
    live_rate: f64,
    live: Option<Schedule>,
    /// When the missed publications go out, and whether they have.
    burst_at: u64,
    burst_done: bool,
    /// The storm: when reconnects start, and their schedule (`None`: all at once).
    storm_at: u64,
    reconnects: Option<Schedule>,
    /// The next subscriber (index) to reconnect, and whether every one has been.
    next_reconnect: usize,
    began: bool,
    /// Storm members not yet done or failed.
    pending: usize,
    seq: u64,
    /// Replayed messages the recover acks promised, and those received in order.
    promised: u64,
    replayed: u64,
    duplicates: u64,
    buf: Vec<u8>,
}

impl Recover {
    /// This thread's `share` of `plan`.
    pub fn new(plan: &Plan, share: &Share) -> Self {
        let publisher = !share.pubs.is_empty();
        let subs = share
            .conns
            .clone()
            .map(|i| Sub {
                url: plan.targets.conn(i),
                phase: Phase::Joining,
                last: None,
                epoch: None,
                t0: 0,
                until: 0,
                due: false,
                clean: true,
            })
            .collect();
        let parts = (plan.part.1 * plan.threads).max(1) as f64;
        let mut storm = plan.storm.clone();
        // Each thread reconnects its share at its share of the rate.
        storm.reconnect_rate /= parts;
        Self {
            storm,
            publisher,
            pub_url: plan.targets.publisher(),
            first: usize::from(publisher),
            subs,
            urls: plan.targets.all().len().max(1),
            live_rate: plan.rate,
            live: None,
            burst_at: 0,
            burst_done: false,
            storm_at: 0,
            reconnects: None,
            next_reconnect: 0,
            began: false,
            pending: 0,
            seq: 0,
            promised: 0,
            replayed: 0,
            duplicates: 0,
            buf: Vec::with_capacity(256),
        }
    }

    fn sub_index(&self, tag: usize) -> Option<usize> {
        tag.checked_sub(self.first).filter(|&i| i < self.subs.len())
    }

    /// Sends one publication, intended at `intended`.
    fn publish(&mut self, ctx: &mut Ctx<'_>, intended: u64) {
        self.buf.clear();
        let _ = write!(
            self.buf,
            r#"{{"type":"publish","room":"{ROOM}","exclude_self":true,"data":"#
        );
        let probe = Probe {
            t: intended,
            s: self.seq,
            p: 0,
        };
        write_probe(&mut self.buf, probe, false, 0);
        self.buf.push(b'}');
        if ctx.send(0, &self.buf) {
            self.seq += 1;
            ctx.tally.sent(Some(ctx.now.saturating_sub(intended)));
        } else {
            ctx.tally.skipped();
        }
    }

    /// Reconnects subscriber `i`, intended at `t0`, to the next URL when asked to move.
    fn reconnect(&mut self, ctx: &mut Ctx<'_>, i: usize, t0: u64) {
        let moved = if self.storm.move_node {
            (self.subs[i].url + 1) % self.urls
        } else {
            self.subs[i].url
        };
        let s = &mut self.subs[i];
        s.t0 = t0;
        s.url = moved;
        s.due = false;
        s.phase = Phase::Reconnecting;
        ctx.open_extra(self.first + i, moved);
    }

    /// Starts the reconnects that are due: every remaining one at once, or those the schedule
    /// has reached. A member whose close is not complete reconnects when it is.
    fn storm(&mut self, ctx: &mut Ctx<'_>) {
        if !self.began || ctx.now < self.storm_at {
            return;
        }
        while self.next_reconnect < self.subs.len() {
            let i = self.next_reconnect;
            if !matches!(self.subs[i].phase, Phase::Leaving | Phase::Away) {
                // Not a storm member: takes no slot of the schedule.
                self.next_reconnect += 1;
                continue;
            }
            let t0 = match self.reconnects.as_mut() {
                None => self.storm_at,
                Some(sched) => match sched.take_due(ctx.now) {
                    Some((_, t)) => t,
                    None => break,
                },
            };
            self.next_reconnect += 1;
            if self.subs[i].phase == Phase::Away {
                self.reconnect(ctx, i, t0);
            } else {
                let s = &mut self.subs[i];
                s.due = true;
                s.t0 = t0;
                ctx.tally.count("reconnect_waited_for_close");
            }
        }
    }

    /// Subscriber `i` is done (recovered, or rejoined without `recover`).
    fn done(&mut self, ctx: &mut Ctx<'_>, i: usize) {
        let s = &mut self.subs[i];
        s.phase = Phase::Done;
        self.pending = self.pending.saturating_sub(1);
        ctx.tally
            .phase("done_since_storm", ctx.now.saturating_sub(self.storm_at));
        if !s.clean {
            ctx.tally.count("done_with_gaps_or_duplicates");
        }
    }

    fn failed(&mut self, i: usize) {
        self.subs[i].phase = Phase::Failed;
        self.pending = self.pending.saturating_sub(1);
    }

    /// A message at `offset` for subscriber `i`.
    fn message(&mut self, ctx: &mut Ctx<'_>, i: usize, probe: Probe, offset: u64) {
        let s = &mut self.subs[i];
        let st = step(s.last, offset);
        match st {
            Step::Next => {}
            Step::Duplicate => {
                self.duplicates += 1;
                s.clean = false;
                ctx.tally.count("duplicates");
                ctx.tally.received_again();
                return;
            }
            Step::Gap(n) => {
                s.clean = false;
                ctx.tally.count("gaps");
                ctx.tally.count_n("gap_messages", n);
            }
        }
        s.last = Some(offset);
        let (url, phase, until, t0) = (s.url, s.phase, s.until, s.t0);
        match phase {
            Phase::Replaying if offset <= until => {
                // A distinct replayed message (duplicates returned above).
                ctx.tally.received_again();
                self.replayed += 1;
                if offset == until {
                    ctx.tally.phase("replayed", ctx.now.saturating_sub(t0));
                    self.done(ctx, i);
                }
            }
            Phase::Replaying => {
                // Past the replay's end without its last message: that one is lost.
                ctx.tally.received(ctx.now.saturating_sub(probe.t), url);
                ctx.tally.count("replay_incomplete");
                self.done(ctx, i);
            }
            Phase::Reconnecting => {
                ctx.tally.count("message_before_ack");
                ctx.tally.received_again();
            }
            Phase::Member | Phase::Leaving | Phase::Done if ctx.measuring() => {
                ctx.tally.received(ctx.now.saturating_sub(probe.t), url);
            }
            _ => ctx.tally.count("deliveries_outside_measurement"),
        }
    }

    /// The recover or rejoin ack of subscriber `i`.
    fn rejoined(&mut self, ctx: &mut Ctx<'_>, i: usize, ack: &JoinAck) {
        let s = &mut self.subs[i];
        ctx.tally.phase("ack", ctx.now.saturating_sub(s.t0));
        let before = s.last;
        if !self.storm.recover {
            // The baseline: a plain join follows live publications from the ack on.
            s.last = ack.offset;
            ctx.tally.count("rejoined");
            if let (Some(a), Some(b)) = (ack.offset, before) {
                ctx.tally.count_n("missed_total", a.saturating_sub(b));
            }
            return self.done(ctx, i);
        }
        match (ack.recovered, ack.offset) {
            (Some(true), Some(until)) => {
                ctx.tally.count("recovered_true");
                let from = before.unwrap_or(0);
                let missed = until.saturating_sub(from);
                ctx.tally.count_n("missed_total", missed);
                if self.live_rate == 0.0 && missed != self.storm.missed {
                    // Without live publications each member misses exactly the burst.
                    ctx.tally.count("missed_other_than_published");
                }
                self.promised += missed;
                s.until = until;
                if missed == 0 {
                    ctx.tally.phase("replayed", ctx.now.saturating_sub(s.t0));
                    return self.done(ctx, i);
                }
                s.phase = Phase::Replaying;
            }
            (Some(false), offset) => {
                ctx.tally.count("recovered_false");
                s.last = offset;
                self.failed(i);
            }
            _ => {
                ctx.tally.count("recover_unanswered_in_ack");
                self.failed(i);
            }
        }
    }
}

impl Workload for Recover {
    fn setup_conns(&self) -> usize {
        self.first + self.subs.len()
    }

    fn url(&self, tag: usize) -> usize {
        match self.sub_index(tag) {
            Some(i) => self.subs[i].url,
            None => self.pub_url,
        }
    }

    fn on_ready(&mut self, ctx: &mut Ctx<'_>, tag: usize) -> usize {
        self.buf.clear();
        let Some(i) = self.sub_index(tag) else {
            let _ = write!(self.buf, r#"{{"type":"join","room":"{ROOM}","id":0}}"#);
            ctx.send(tag, &self.buf);
            return 1;
        };
        let s = &self.subs[i];
        let _ = write!(self.buf, r#"{{"type":"join","room":"{ROOM}","id":1"#);
        if s.phase == Phase::Reconnecting && self.storm.recover {
            match (s.last, &s.epoch) {
                (Some(offset), Some(epoch)) => {
                    let _ = write!(
                        self.buf,
                        r#","recover":{{"offset":{offset},"epoch":{}}}"#,
                        serde_json::Value::from(epoch.as_str())
                    );
                }
                _ => ctx.tally.count("no_position_to_recover_from"),
            }
        }
        self.buf.push(b'}');
        ctx.send(tag, &self.buf);
        1
    }

    fn on_join_ack(&mut self, ctx: &mut Ctx<'_>, tag: usize, ack: &JoinAck) {
        let Some(i) = self.sub_index(tag) else { return };
        match self.subs[i].phase {
            Phase::Joining => {
                let s = &mut self.subs[i];
                if ack.offset.is_none() || ack.epoch.is_none() {
                    // The room keeps no history: nothing to recover from.
                    ctx.tally.count("ack_without_position");
                }
                s.last = ack.offset;
                s.epoch = ack.epoch.clone();
                s.phase = Phase::Member;
            }
            Phase::Reconnecting => self.rejoined(ctx, i, ack),
            _ => ctx.tally.count("unexpected_join_ack"),
        }
    }

    fn begin(&mut self, ctx: &mut Ctx<'_>, start: u64, end: u64) {
        let offline = self.storm.offline.as_nanos() as u64;
        self.storm_at = start + offline;
        self.burst_at = start + offline / 2;
        self.began = true;
        if self.publisher && self.live_rate > 0.0 {
            self.live = Some(Schedule::new(start, self.live_rate, 0.0, end));
        }
        if self.storm.reconnect_rate > 0.0 {
            let sched = Schedule::new(self.storm_at, self.storm.reconnect_rate, 0.0, end);
            self.reconnects = Some(sched);
        }
        for i in 0..self.subs.len() {
            let tag = self.first + i;
            let s = &mut self.subs[i];
            match (s.phase, ctx.conn(tag)) {
                (Phase::Member, Some(id)) => {
                    s.phase = Phase::Leaving;
                    ctx.close(id);
                    self.pending += 1;
                }
                _ => {
                    s.phase = Phase::Out;
                    ctx.tally.count("not_member_at_storm");
                }
            }
        }
        ctx.tally.count_n("storm_members", self.pending as u64);
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<u64> {
        let mut next = u64::MAX;
        if self.publisher {
            if !self.burst_done {
                if ctx.now >= self.burst_at {
                    self.burst_done = true;
                    for _ in 0..self.storm.missed {
                        self.publish(ctx, self.burst_at);
                    }
                } else {
                    next = next.min(self.burst_at);
                }
            }
            while let Some((_, t)) = self.live.as_mut().and_then(|l| l.take_due(ctx.now)) {
                self.publish(ctx, t);
            }
            if let Some(t) = self.live.as_ref().and_then(Schedule::next_at) {
                next = next.min(t);
            }
        }
        self.storm(ctx);
        if self.next_reconnect < self.subs.len() {
            let at = match &self.reconnects {
                Some(s) => s.next_at().unwrap_or(u64::MAX),
                None => self.storm_at,
            };
            next = next.min(at.max(ctx.now));
        }
        Some(next).filter(|&t| t < u64::MAX)
    }

    fn on_frame(&mut self, ctx: &mut Ctx<'_>, tag: usize, frame: Frame) {
        let Some(i) = self.sub_index(tag) else {
            // exclude_self: the publisher hears nothing of its own.
            ctx.tally.count("publisher_heard");
            return;
        };
        match frame {
            Frame::Message(probe, Some(offset)) => self.message(ctx, i, probe, offset),
            Frame::Message(_, None) => ctx.tally.count("message_without_offset"),
            _ => ctx.tally.count("foreign_frames"),
        }
    }

    fn on_closed(&mut self, ctx: &mut Ctx<'_>, tag: usize, failure: Option<&Failure>) {
        let Some(i) = self.sub_index(tag) else {
            if failure.is_some() && ctx.measuring() {
                ctx.tally.count("publisher_failed");
            }
            return;
        };
        match self.subs[i].phase {
            Phase::Joining => self.subs[i].phase = Phase::Out,
            Phase::Member => {
                self.subs[i].phase = Phase::Out;
                ctx.tally.count("dropped_before_storm");
            }
            Phase::Leaving => {
                self.subs[i].phase = Phase::Away;
                if self.subs[i].due {
                    let t0 = self.subs[i].t0;
                    self.reconnect(ctx, i, t0);
                }
            }
            Phase::Reconnecting | Phase::Replaying => {
                ctx.tally.count("reconnect_failed");
                self.failed(i);
            }
            Phase::Done if failure.is_some() && ctx.sending() => {
                ctx.tally.count("dropped_after_recovery");
            }
            _ => {}
        }
    }

    // `all_answered` stays false: after the storm the run holds every connection for --grace,
    // so what a server measures right after the storm is not its closing 10,000 connections.

    fn finished(&self) -> bool {
        // With live publications the run lasts its --duration: they are checked after the
        // storm too.
        self.live_rate == 0.0
            && self.began
            && self.pending == 0
            && self.next_reconnect >= self.subs.len()
            && (!self.publisher || self.burst_done)
    }

    fn account(&self, _tally: &Tally, traffic: &mut Traffic) {
        traffic.expected = self.promised;
        traffic.unique = self.replayed;
        traffic.duplicates = self.duplicates;
        let not_done = self
            .subs
            .iter()
            .filter(|s| {
                matches!(
                    s.phase,
                    Phase::Leaving | Phase::Away | Phase::Reconnecting | Phase::Replaying
                )
            })
            .count() as u64;
        if not_done > 0 {
            traffic.counters.insert("not_done".into(), not_done);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::Scenario;
    use crate::scenario::runner::Stage;
    use crate::scenario::testbed::{plan_over, Bed};

    const MS: u64 = 1_000_000;

    fn ack(offset: u64, recovered: Option<bool>) -> JoinAck {
        JoinAck {
            offset: Some(offset),
            epoch: Some("e1".into()),
            recovered,
        }
    }

    fn msg(offset: u64) -> Frame {
        Frame::Message(
            Probe {
                t: 0,
                s: offset,
                p: 0,
            },
            Some(offset),
        )
    }

    /// A storm of `conns` over `urls` URLs, set up: every subscriber joined at offset 5, then
    /// begun at 0 (members closing), the bed running.
    fn storm(conns: usize, urls: u16, f: impl FnOnce(&mut Plan)) -> (Recover, Bed) {
        let mut plan = plan_over(Scenario::Recover, urls, None);
        plan.conns = conns;
        plan.rate = 0.0;
        plan.storm.missed = 3;
        plan.storm.offline = Duration::from_millis(10);
        f(&mut plan);
        assert!(plan.validate().is_ok());
        let mut r = Recover::new(&plan, &plan.thread_share(0));
        let mut bed = Bed::new(r.setup_conns());
        bed.connect(0..r.setup_conns());
        for tag in 0..r.setup_conns() {
            assert_eq!(r.on_ready(&mut bed.ctx(0), tag), 1, "one join each");
            r.on_join_ack(&mut bed.ctx(0), tag, &ack(5, None));
        }
        bed.stage = Stage::Running;
        r.begin(&mut bed.ctx(0), 0, 1_000 * MS);
        (r, bed)
    }

    #[test]
    fn offsets_step_in_order() {
        assert_eq!(step(None, 7), Step::Next);
        assert_eq!(step(Some(6), 7), Step::Next);
        assert_eq!(step(Some(7), 7), Step::Duplicate);
        assert_eq!(step(Some(8), 7), Step::Duplicate);
        assert_eq!(step(Some(4), 7), Step::Gap(2));
    }

    #[test]
    fn members_leave_miss_the_burst_and_recover_on_another_node() {
        let (mut r, mut bed) = storm(3, 2, |_| {});
        assert_eq!(
            bed.wire.closed,
            [1, 2, 3],
            "every member leaves at the start"
        );
        assert_eq!(bed.tally.counters["storm_members"], 3);
        // Nothing before half the offline time; then the missed publications, at once.
        assert_eq!(r.tick(&mut bed.ctx(MS)), Some(5 * MS));
        let joins = bed.wire.sent.len();
        r.tick(&mut bed.ctx(5 * MS));
        let pubs: Vec<_> = bed.wire.sent[joins..].iter().collect();
        assert_eq!(pubs.len(), 3);
        assert!(pubs.iter().all(|(tag, m)| *tag == 0
            && m.starts_with(r#"{"type":"publish","room":"storm","exclude_self":true,"#)));
        for tag in 1..=3 {
            bed.disconnect(tag);
            r.on_closed(&mut bed.ctx(6 * MS), tag, None);
        }
        // The storm, all at once, each to the URL after the one it left (0, 1, 0 -> 1, 0, 1).
        assert_eq!(r.tick(&mut bed.ctx(6 * MS)), Some(10 * MS));
        assert!(bed.wire.opened.is_empty());
        r.tick(&mut bed.ctx(11 * MS));
        assert_eq!(bed.wire.opened, [1, 2, 3]);
        assert_eq!(bed.wire.opened_to, [1, 0, 1]);
        let sent = bed.wire.sent.len();
        for tag in 1..=3 {
            assert_eq!(r.on_ready(&mut bed.ctx(12 * MS), tag), 1);
        }
        let join = r#"{"type":"join","room":"storm","id":1,"recover":{"offset":5,"epoch":"e1"}}"#;
        assert_eq!(bed.wire.sent[sent], (1, join.to_string()));
        // 1 recovers cleanly; 2 hears a duplicate and misses one; 3 is refused.
        r.on_join_ack(&mut bed.ctx(13 * MS), 1, &ack(8, Some(true)));
        r.on_join_ack(&mut bed.ctx(13 * MS), 2, &ack(8, Some(true)));
        r.on_join_ack(&mut bed.ctx(14 * MS), 3, &ack(8, Some(false)));
        assert!(!r.finished());
        for o in 6..=8 {
            r.on_frame(&mut bed.ctx(15 * MS), 1, msg(o));
        }
        assert!(!r.finished(), "2 is still replaying");
        for o in [6, 6, 8] {
            r.on_frame(&mut bed.ctx(20 * MS), 2, msg(o));
        }
        assert!(r.finished());
        let c = &bed.tally.counters;
        assert_eq!((c["recovered_true"], c["recovered_false"]), (2, 1));
        assert_eq!((c["duplicates"], c["gaps"], c["gap_messages"]), (1, 1, 1));
        assert_eq!(c["done_with_gaps_or_duplicates"], 1);
        assert_eq!(c["missed_total"], 6);
        assert!(!c.contains_key("missed_other_than_published"));
        let p = &bed.tally.phases;
        assert_eq!(p["ack"].len(), 3);
        // From the intended reconnect (10 ms): 5 ms and 10 ms to the last replayed message.
        assert_eq!(p["replayed"].len(), 2);
        assert_eq!(p["replayed"].max() / 1000, 10, "in µs, rounded");
        assert_eq!(p["done_since_storm"].len(), 2);
        let mut traffic = Traffic::default();
        r.account(&bed.tally, &mut traffic);
        assert_eq!(
            (traffic.expected, traffic.unique, traffic.duplicates),
            (6, 5, 1)
        );
        assert!(!traffic.counters.contains_key("not_done"));
    }

    #[test]
    fn without_recover_a_plain_join_is_done_at_its_ack() {
        let (mut r, mut bed) = storm(2, 1, |p| p.storm.recover = false);
        r.tick(&mut bed.ctx(5 * MS));
        for tag in 1..=2 {
            bed.disconnect(tag);
            r.on_closed(&mut bed.ctx(6 * MS), tag, None);
        }
        r.tick(&mut bed.ctx(10 * MS));
        assert_eq!(bed.wire.opened_to, [0, 0], "one URL: back to it");
        let sent = bed.wire.sent.len();
        r.on_ready(&mut bed.ctx(11 * MS), 1);
        assert_eq!(
            bed.wire.sent[sent].1,
            r#"{"type":"join","room":"storm","id":1}"#
        );
        r.on_join_ack(&mut bed.ctx(12 * MS), 1, &ack(8, None));
        assert!(!r.finished());
        // Its connection fails instead.
        bed.disconnect(2);
        r.on_closed(&mut bed.ctx(12 * MS), 2, Some(&Failure::Reset));
        assert!(r.finished());
        let c = &bed.tally.counters;
        assert_eq!((c["rejoined"], c["reconnect_failed"]), (1, 1));
        assert_eq!(c["missed_total"], 3);
        // A live message after the ack is the next one.
        r.on_frame(&mut bed.ctx(13 * MS), 1, msg(9));
        assert!(!bed.tally.counters.contains_key("gaps"));
        assert_eq!(bed.tally.received_total(), 1);
    }

    #[test]
    fn a_ramp_spreads_reconnects_and_a_late_close_reconnects_when_done() {
        let (mut r, mut bed) = storm(3, 1, |p| p.storm.reconnect_rate = 1000.0);
        r.tick(&mut bed.ctx(5 * MS));
        // 1 and 2 are gone; 3's close is slow.
        for tag in 1..=2 {
            bed.disconnect(tag);
            r.on_closed(&mut bed.ctx(6 * MS), tag, None);
        }
        assert_eq!(r.tick(&mut bed.ctx(11 * MS + MS / 2)), Some(12 * MS));
        assert_eq!(bed.wire.opened, [1, 2], "10 ms and 11 ms are due");
        r.tick(&mut bed.ctx(12 * MS));
        assert_eq!(bed.wire.opened, [1, 2], "3 waits for its close");
        assert_eq!(bed.tally.counters["reconnect_waited_for_close"], 1);
        bed.disconnect(3);
        r.on_closed(&mut bed.ctx(20 * MS), 3, None);
        assert_eq!(bed.wire.opened, [1, 2, 3]);
        r.on_ready(&mut bed.ctx(21 * MS), 3);
        r.on_join_ack(&mut bed.ctx(22 * MS), 3, &ack(8, Some(true)));
        // Charged from its intended time, 12 ms: 10 ms to the ack.
        assert_eq!(bed.tally.phases["ack"].max() / 1000, 10);
        let mut traffic = Traffic::default();
        r.account(&bed.tally, &mut traffic);
        assert_eq!(
            traffic.counters["not_done"], 3,
            "1 and 2 unanswered, 3 replaying"
        );
    }
}
