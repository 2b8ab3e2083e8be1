//! `fanout`: subscribers in rooms and open-loop publishers. Subscriber *i* joins `room-(i %
//! rooms)`; publisher *p* joins and publishes to [`publisher_rooms`] in turn, with
//! `exclude_self` (the protocol lets only members publish, and a publisher is not a subscriber).
//! The raw and socketio adapters have one implicit room that every connection is in. Publishers connect to the
//! publishers' URL; each room's subscribers round-robin over the `--url`s
//! ([`crate::target::Targets::subscriber`]).
//!
//! Accounting: each publisher numbers its publishes per room from 0; each subscriber keeps one
//! [`SeqTracker`] per publisher; per-room totals ([`RoomStats`]) count members at the start,
//! publishes, distinct deliveries and duplicates, so losses are `expected - unique` after the
//! merge. Latency is recorded once per distinct delivery, from the publish's intended time, in
//! total and under the subscriber's URL.

use std::io::Write as _;

use crate::net::Failure;
use crate::plan::{publisher_rooms, Adapter, Plan, Share};
use crate::report::Traffic;
use crate::schedule::Schedule;
use crate::seq::{RoomStats, Seen, SeqTracker};

use super::open_loop::OpenLoop;
use super::probe::{write_probe, Probe};
use super::tally::Tally;
use super::{Ctx, Frame, Workload, FOREIGN};

/// A publisher: global index, its rooms and the next sequence number in each.
struct Publisher {
    index: usize,
    rooms: Vec<usize>,
    seqs: Vec<u64>,
    next_room: usize,
}

/// A subscriber of `room` on URL `url`, with one tracker per publisher.
struct Subscriber {
    room: usize,
    url: usize,
    /// Its join was acked (always, in raw mode), and it has not failed since.
    member: bool,
    trackers: Vec<SeqTracker>,
}

/// One thread's publishers (tags `0..pubs.len()`, first: they are few, and a ramp that stalls
/// should not leave a room without its publisher) and subscribers (the tags after them).
pub struct Fanout {
    adapter: Adapter,
    pubs: Vec<Publisher>,
    /// The URL every publisher connects to.
    pub_url: usize,
    subs: Vec<Subscriber>,
    rooms: Vec<RoomStats>,
    /// Publishers in all parts together, for the publishers' phases.
    publishers: usize,
    /// Publishes per second of each publisher.
    pub_rate: f64,
    payload: usize,
    /// Publishers send `broadcast` instead of `publish` (one room: every subscriber is in it).
    broadcast: bool,
    sends: OpenLoop,
    buf: Vec<u8>,
}

impl Fanout {
    /// This thread's `share` of `plan`.
    pub fn new(plan: &Plan, share: &Share) -> Self {
        let publishers = plan.publisher_count();
        let rooms = plan.room_count();
        let pubs = share
            .pubs
            .clone()
            .map(|p| {
                let rs = if plan.adapter.one_room() {
                    vec![0]
                } else {
                    publisher_rooms(p, publishers, rooms)
                };
                Publisher {
                    index: p,
                    seqs: vec![0; rs.len()],
                    rooms: rs,
                    next_room: 0,
                }
            })
            .collect();
        let subs = share
            .conns
            .clone()
            .map(|i| Subscriber {
                room: i % rooms.max(1),
                url: plan.targets.subscriber(i, rooms),
                member: false,
                trackers: vec![SeqTracker::default(); publishers],
            })
            .collect();
        Self {
            adapter: plan.adapter,
            pubs,
            pub_url: plan.targets.publisher(),
            subs,
            rooms: vec![RoomStats::default(); rooms],
            publishers,
            pub_rate: if publishers > 0 {
                plan.rate / publishers as f64
            } else {
                0.0
            },
            payload: plan.payload,
            broadcast: plan.broadcast,
            sends: OpenLoop::default(),
            buf: Vec::with_capacity(256),
        }
    }

    /// Rooms in use (one in raw mode).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn sub(&mut self, tag: usize) -> Option<&mut Subscriber> {
        let i = tag.checked_sub(self.pubs.len())?;
        self.subs.get_mut(i)
    }

    /// Sends `tag` a join for each of `rooms` and returns how many; none in raw mode, where
    /// the one room needs no join.
    pub fn send_joins(&mut self, ctx: &mut Ctx<'_>, tag: usize, rooms: &[usize]) -> usize {
        if self.adapter.one_room() {
            return 0;
        }
        for r in rooms {
            self.buf.clear();
            let _ = write!(self.buf, r#"{{"type":"join","room":"room-{r}","id":{r}}}"#);
            ctx.send(tag, &self.buf);
        }
        rooms.len()
    }

    /// Sends one publish of publisher `tag`, due at `intended`.
    fn publish(&mut self, ctx: &mut Ctx<'_>, tag: usize, intended: u64) {
        let p = &mut self.pubs[tag];
        let ri = p.next_room % p.rooms.len();
        let (room, seq) = (p.rooms[ri], p.seqs[ri]);
        let probe = Probe {
            t: intended,
            s: seq,
            p: p.index,
        };
        self.buf.clear();
        if self.broadcast {
            self.buf
                .extend_from_slice(br#"{"type":"broadcast","exclude_self":true,"data":"#);
        } else if self.adapter == Adapter::Hub {
            let _ = write!(
                self.buf,
                r#"{{"type":"publish","room":"room-{room}","exclude_self":true,"data":"#
            );
        }
        write_probe(&mut self.buf, probe, false, self.payload);
        if self.adapter == Adapter::Hub {
            self.buf.push(b'}');
        }
        if ctx.send(tag, &self.buf) {
            p.next_room += 1;
            p.seqs[ri] += 1;
            self.rooms[room].published += 1;
            ctx.tally.sent(Some(ctx.now.saturating_sub(intended)));
        } else {
            ctx.tally.skipped();
        }
    }

    /// A delivery to subscriber `tag`.
    fn delivered(&mut self, ctx: &mut Ctx<'_>, tag: usize, probe: Probe) {
        let measuring = ctx.measuring();
        // Publishers hear their own messages in raw mode: not a delivery we count.
        let Some(sub) = self.sub(tag) else { return };
        if !sub.member || !measuring {
            ctx.tally.count("deliveries_outside_measurement");
            return;
        }
        let (room, url) = (sub.room, sub.url);
        let Some(tracker) = sub.trackers.get_mut(probe.p) else {
            ctx.tally.count("unknown_publisher");
            return;
        };
        match tracker.observe(probe.s) {
            Seen::New => {
                self.rooms[room].unique += 1;
                ctx.tally.received(ctx.now.saturating_sub(probe.t), url);
            }
            Seen::Duplicate => {
                self.rooms[room].duplicates += 1;
                ctx.tally.received_again();
            }
        }
    }
}

impl Workload for Fanout {
    fn setup_conns(&self) -> usize {
        self.pubs.len() + self.subs.len()
    }

    fn url(&self, tag: usize) -> usize {
        match tag.checked_sub(self.pubs.len()) {
            None => self.pub_url,
            Some(i) => self.subs.get(i).map_or(0, |s| s.url),
        }
    }

    fn on_ready(&mut self, ctx: &mut Ctx<'_>, tag: usize) -> usize {
        if let Some(p) = self.pubs.get(tag) {
            let rooms = p.rooms.clone();
            return self.send_joins(ctx, tag, &rooms);
        }
        let raw = self.adapter.one_room();
        let Some(sub) = self.sub(tag) else { return 0 };
        // Raw mode: every connection is in the one room from the start.
        sub.member |= raw;
        let room = sub.room;
        self.send_joins(ctx, tag, &[room])
    }

    fn on_joined(&mut self, tag: usize) {
        if let Some(sub) = self.sub(tag) {
            sub.member = true;
        }
    }

    fn begin(&mut self, _ctx: &mut Ctx<'_>, start: u64, end: u64) {
        // Members are counted at the start: a subscriber that is gone by now owes nothing.
        for s in self.subs.iter().filter(|s| s.member) {
            self.rooms[s.room].members += 1;
        }
        let pubs = self.publishers.max(1);
        for (tag, p) in self.pubs.iter().enumerate() {
            let phase = p.index as f64 / pubs as f64;
            let sched = Schedule::new(start, self.pub_rate, phase, end);
            self.sends.add(tag, sched);
        }
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<u64> {
        let mut sends = std::mem::take(&mut self.sends);
        sends.run_due(ctx.now, |tag, t| self.publish(ctx, tag, t));
        self.sends = sends;
        self.sends.next_at()
    }

    fn on_frame(&mut self, ctx: &mut Ctx<'_>, tag: usize, frame: Frame) {
        match frame {
            Frame::Message(p, _) | Frame::Raw(p) => self.delivered(ctx, tag, p),
            Frame::Direct(_) => ctx.tally.count(FOREIGN),
            Frame::Pong(_) => {}
        }
    }

    fn on_closed(&mut self, _ctx: &mut Ctx<'_>, tag: usize, failure: Option<&Failure>) {
        if failure.is_some() {
            if let Some(sub) = self.sub(tag) {
                sub.member = false;
            }
        }
    }

    fn account(&self, _tally: &Tally, traffic: &mut Traffic) {
        traffic.rooms = self.rooms.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Scenario;
    use crate::scenario::runner::Stage;
    use crate::scenario::testbed::{plan, plan_over, Bed};

    /// 2 publishers and 4 subscribers in 2 rooms, all on one thread.
    fn fanout(adapter: Adapter) -> (Plan, Fanout) {
        let mut plan = plan(Scenario::Fanout);
        plan.adapter = adapter;
        plan.conns = 4;
        plan.rooms = 2;
        plan.publishers = 2;
        plan.rate = 1000.0;
        let f = Fanout::new(&plan, &plan.thread_share(0));
        (plan, f)
    }

    fn msg(t: u64, s: u64, p: usize) -> Frame {
        Frame::Message(Probe { t, s, p }, None)
    }

    #[test]
    fn counts_members_deliveries_and_duplicates_per_room() {
        let (_, mut f) = fanout(Adapter::Hub);
        assert_eq!(f.setup_conns(), 6);
        let mut bed = Bed::new(6);
        // Tags 0, 1 publish; 2..6 subscribe, to rooms 0, 1, 0, 1. Tag 5 never gets its ack and
        // tag 4 fails: neither is a member at the start.
        for tag in 0..6 {
            let joins = f.on_ready(&mut bed.ctx(0), tag);
            assert_eq!(joins, 1, "one room each");
        }
        for tag in 0..5 {
            f.on_joined(tag);
        }
        f.on_closed(&mut bed.ctx(0), 4, Some(&Failure::Reset));
        let early = msg(0, 0, 0);
        f.on_frame(&mut bed.ctx(0), 2, early);
        assert_eq!(bed.tally.counters["deliveries_outside_measurement"], 1);
        bed.stage = Stage::Running;
        f.begin(&mut bed.ctx(1_000), 1_000, 1_000_000_000);
        assert_eq!((f.rooms[0].members, f.rooms[1].members), (1, 1));
        f.on_frame(&mut bed.ctx(3_000_000), 2, msg(1_000_000, 0, 0));
        f.on_frame(&mut bed.ctx(3_000_000), 2, msg(1_000_000, 0, 0));
        f.on_frame(&mut bed.ctx(3_000_000), 3, msg(1_000_000, 0, 1));
        f.on_frame(&mut bed.ctx(3_000_000), 3, msg(1_000_000, 0, 7));
        f.on_frame(&mut bed.ctx(3_000_000), 5, msg(1_000_000, 0, 1));
        f.on_frame(
            &mut bed.ctx(3_000_000),
            0,
            Frame::Raw(Probe { t: 0, s: 0, p: 0 }),
        );
        let (u, d) = (|r: &RoomStats| r.unique, |r: &RoomStats| r.duplicates);
        assert_eq!((u(&f.rooms[0]), d(&f.rooms[0])), (1, 1));
        assert_eq!((u(&f.rooms[1]), d(&f.rooms[1])), (1, 0));
        assert_eq!(bed.tally.counters["unknown_publisher"], 1);
        assert_eq!(bed.tally.counters["deliveries_outside_measurement"], 2);
        assert_eq!(bed.tally.received_total(), 3, "duplicates are received too");
        assert_eq!(
            bed.tally.total.len(),
            2,
            "latency once per distinct delivery"
        );
        assert_eq!(
            bed.tally.total.max(),
            2_000,
            "2 ms after the intended time, in µs"
        );
        f.on_frame(
            &mut bed.ctx(0),
            2,
            Frame::Direct(Probe { t: 0, s: 0, p: 0 }),
        );
        assert_eq!(bed.tally.counters[FOREIGN], 1);
    }

    #[test]
    fn publishes_follow_the_schedule_or_are_skipped() {
        let (_, mut f) = fanout(Adapter::Hub);
        let mut bed = Bed::new(6);
        bed.connect(0..1);
        bed.stage = Stage::Running;
        f.begin(&mut bed.ctx(0), 0, 10_000_000);
        // 500/s each, phases 0 and 1/2: publisher 0 at 0, 2, 4 ms..., publisher 1 at 1, 3 ms...
        assert_eq!(f.tick(&mut bed.ctx(2_500_000)), Some(3_000_000));
        // Publisher 1 has no connection: its due publish is skipped, not counted as published.
        assert_eq!(bed.tally.skipped, 1);
        assert_eq!(bed.tally.sent_total(), 2);
        assert_eq!((f.rooms[0].published, f.rooms[1].published), (2, 0));
        assert_eq!(
            bed.wire.sent,
            [
                (0, r#"{"type":"publish","room":"room-0","exclude_self":true,"data":{"t":0,"s":0,"p":0}}"#.to_string()),
                (0, r#"{"type":"publish","room":"room-0","exclude_self":true,"data":{"t":2000000,"s":1,"p":0}}"#.to_string()),
            ]
        );
        // Lag: 2.5 ms for the first, 0.5 ms for the second.
        assert_eq!(bed.tally.lag.len(), 2);
        assert_eq!(f.tick(&mut bed.ctx(u64::MAX)), None, "10 ms, 10 publishes");
        assert_eq!((bed.tally.sent_total(), bed.tally.skipped), (5, 5));
    }

    #[test]
    fn raw_mode_has_one_room_and_no_joins() {
        let (_, mut f) = fanout(Adapter::Raw);
        let mut bed = Bed::new(6);
        for tag in 0..6 {
            assert_eq!(f.on_ready(&mut bed.ctx(0), tag), 0);
        }
        assert!(bed.wire.sent.is_empty());
        f.begin(&mut bed.ctx(0), 0, 10_000_000);
        assert_eq!(f.rooms.len(), 1);
        assert_eq!(f.rooms[0].members, 4, "every subscriber, at its 101");
    }

    #[test]
    fn socketio_mode_has_one_room_and_publishes_msg_events() {
        let (_, mut f) = fanout(Adapter::SocketIo);
        let mut bed = Bed::new(6);
        bed.adapter = Adapter::SocketIo;
        bed.connect(0..6);
        for tag in 0..6 {
            assert_eq!(f.on_ready(&mut bed.ctx(0), tag), 0, "no joins");
        }
        assert!(bed.wire.sent.is_empty());
        bed.stage = Stage::Running;
        f.begin(&mut bed.ctx(0), 0, 10_000_000);
        assert_eq!((f.rooms.len(), f.rooms[0].members), (1, 4));
        f.tick(&mut bed.ctx(0));
        assert_eq!(
            bed.wire.sent.first().map(|(tag, m)| (*tag, m.as_str())),
            Some((0, r#"42["msg",{"t":0,"s":0,"p":0}]"#)),
            "the probe as a msg event"
        );
    }

    #[test]
    fn publishers_on_their_url_subscribers_round_robin_latency_by_url() {
        // 3 URLs, publishers on a fourth; the second of two threads: publisher 1, subscribers
        // 2..5 (global), so the rule's global indices show.
        let mut plan = plan_over(Scenario::Fanout, 3, Some("ws://127.0.0.1:9/ws"));
        plan.conns = 5;
        plan.rooms = 1;
        plan.publishers = 2;
        plan.threads = 2;
        let share = plan.thread_share(1);
        assert_eq!((share.pubs.clone(), share.conns.clone()), (1..2, 2..5));
        let mut f = Fanout::new(&plan, &share);
        let urls: Vec<usize> = (0..f.setup_conns()).map(|tag| f.url(tag)).collect();
        assert_eq!(
            urls,
            [3, 2, 0, 1],
            "publisher on URL 3; subscribers 2, 3, 4 on 2, 0, 1"
        );
        // In 2 rooms, each room's members go round the URLs: 0, 0, 1, 1, 2 for subscribers 0..5.
        let mut rooms = plan.clone();
        (rooms.rooms, rooms.threads) = (2, 1);
        let f2 = Fanout::new(&rooms, &rooms.thread_share(0));
        let urls: Vec<usize> = (2..7).map(|tag| f2.url(tag)).collect();
        assert_eq!(urls, [0, 0, 1, 1, 2]);
        let mut bed = Bed::new(4);
        bed.tally.track_urls(3);
        for tag in 1..4 {
            f.on_ready(&mut bed.ctx(0), tag);
            f.on_joined(tag);
        }
        bed.stage = Stage::Running;
        f.begin(&mut bed.ctx(0), 0, 1_000_000_000);
        // Subscriber tag 1 (URL 2) hears 1 ms after the intended time, tag 3 (URL 1) 5 ms.
        f.on_frame(&mut bed.ctx(2_000_000), 1, msg(1_000_000, 0, 0));
        f.on_frame(&mut bed.ctx(6_000_000), 3, msg(1_000_000, 0, 0));
        f.on_frame(&mut bed.ctx(7_000_000), 3, msg(1_000_000, 0, 0));
        let h = &bed.tally.by_url;
        let counts: Vec<u64> = h.iter().map(|h| h.len()).collect();
        assert_eq!(counts, [0, 1, 1], "a duplicate is not measured");
        assert!(h[1].equivalent(h[1].max(), 5_000) && h[2].equivalent(h[2].max(), 1_000));
    }
}
