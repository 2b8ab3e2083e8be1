//! `echo`: request/response round trips, hub `{"type":"ping","id":N}` → `pong`, raw and
//! socketio: the probe comes back as it was sent (from a broadcast server, to every client: each
//! requester takes only its own probes as answers and counts the others as `foreign_echoes`).
//! Closed loop (`--rate 0`: one request outstanding per connection, the next sent when the
//! answer arrives) or open loop at `--rate` in total.
//!
//! [`RoundTrip`] is the workload of `echo` and of `direct`, whose requests go to a peer user
//! that bounces them back ([`Bouncer`]). The server answers in order, so each requester keeps its outstanding requests
//! oldest first: an answer to request *n* means every older one still outstanding was dropped
//! (`replies_missing`). Expected answers are the requests sent; latency is from each request's
//! intended send time, recorded in total and under the requester's URL (connection *i* goes to
//! URL `i % n` of the `--url`s).

use std::collections::VecDeque;
use std::io::Write as _;

use crate::net::Failure;
use crate::plan::{Adapter, Plan, Share};
use crate::report::Traffic;
use crate::schedule::Schedule;

use super::direct::Bouncer;
use super::open_loop::OpenLoop;
use super::probe::{write_probe, Probe};
use super::tally::Tally;
use super::{Ctx, Frame, Workload};

/// What a request looks like on the wire.
pub enum Request {
    /// Hub: `{"type":"ping","id":SEQ}`, answered by a `pong` with that id.
    Ping,
    /// Raw: a bare probe, echoed back.
    Probe,
    /// Hub `send` of a probe to user `{prefix}-{index + 1}` (direct), who sends it back.
    Send {
        /// User id prefix of this run.
        prefix: String,
    },
}

/// One requester: its global index, next sequence number, and its outstanding requests
/// (sequence, intended send time), oldest first.
struct Requester {
    index: usize,
    seq: u64,
    outstanding: VecDeque<(u64, u64)>,
}

/// The requesters of one thread, by tag; a tag without one is a bouncer (direct).
pub struct RoundTrip {
    requesters: Vec<Option<Requester>>,
    /// The URL of each tag.
    urls: Vec<usize>,
    /// The other half of each `direct` pair; none for `echo`.
    bouncer: Option<Bouncer>,
    request: Request,
    /// Requests per second of each requester; 0 for closed loop.
    rate: f64,
    /// Connections in all parts together, for the requesters' phases.
    conns: usize,
    payload: usize,
    sends: OpenLoop,
    /// Requests sent and not yet answered.
    in_flight: usize,
    buf: Vec<u8>,
}

impl RoundTrip {
    /// `echo`: every connection of this thread's `share` a requester.
    pub fn echo(plan: &Plan, share: &Share) -> Self {
        let request = match plan.adapter {
            Adapter::Hub => Request::Ping,
            Adapter::Raw | Adapter::SocketIo => Request::Probe,
        };
        let rate = if plan.conns > 0 {
            plan.rate / plan.conns as f64
        } else {
            0.0
        };
        Self::new(plan, share, |_| true, request, rate, None)
    }

    /// The connections of `share`, by tag: those whose global index `is_requester` send
    /// `request`s at `rate` each (0: closed loop) among `plan.conns` connections in total, the
    /// others are `bouncer`'s.
    pub fn new(
        plan: &Plan,
        share: &Share,
        is_requester: impl Fn(usize) -> bool,
        request: Request,
        rate: f64,
        bouncer: Option<Bouncer>,
    ) -> Self {
        Self {
            requesters: share
                .conns
                .clone()
                .map(|index| {
                    is_requester(index).then(|| Requester {
                        index,
                        seq: 0,
                        outstanding: VecDeque::new(),
                    })
                })
                .collect(),
            urls: share.conns.clone().map(|i| plan.targets.conn(i)).collect(),
            bouncer,
            request,
            rate,
            conns: plan.conns,
            payload: plan.payload,
            sends: OpenLoop::default(),
            in_flight: 0,
            buf: Vec::with_capacity(256),
        }
    }

    /// The global index of requester `tag` (what its probes carry as `p`), if it is one.
    fn sender(&self, tag: usize) -> Option<usize> {
        self.requesters.get(tag)?.as_ref().map(|r| r.index)
    }

    /// Whether `tag` is a requester.
    pub(super) fn is_requester(&self, tag: usize) -> bool {
        matches!(self.requesters.get(tag), Some(Some(_)))
    }

    /// Sends one request of `tag`, due at `intended`; `now` is when it actually goes out.
    fn send(&mut self, ctx: &mut Ctx<'_>, tag: usize, intended: u64, now: u64) {
        let Some(Some(r)) = self.requesters.get_mut(tag) else {
            return;
        };
        let probe = Probe {
            t: intended,
            s: r.seq,
            p: r.index,
        };
        self.buf.clear();
        match &self.request {
            Request::Ping => {
                let _ = write!(self.buf, r#"{{"type":"ping","id":{}}}"#, r.seq);
            }
            Request::Probe => write_probe(&mut self.buf, probe, false, self.payload),
            Request::Send { prefix } => {
                let peer = r.index + 1;
                let _ = write!(
                    self.buf,
                    r#"{{"type":"send","to":"{prefix}-{peer}","data":"#
                );
                write_probe(&mut self.buf, probe, false, self.payload);
                self.buf.push(b'}');
            }
        }
        if ctx.send(tag, &self.buf) {
            r.outstanding.push_back((r.seq, intended));
            r.seq += 1;
            self.in_flight += 1;
            ctx.tally.sent((now > intended).then(|| now - intended));
        } else {
            ctx.tally.skipped();
        }
    }

    /// The common start: open-loop schedules, or every requester's first closed-loop request.
    fn start(&mut self, ctx: &mut Ctx<'_>, start: u64, end: u64) {
        let conns = self.conns.max(1);
        if self.rate > 0.0 {
            for (tag, r) in self.requesters.iter().enumerate() {
                if let Some(r) = r {
                    let phase = r.index as f64 / conns as f64;
                    self.sends
                        .add(tag, Schedule::new(start, self.rate, phase, end));
                }
            }
        } else {
            for tag in 0..self.requesters.len() {
                self.send(ctx, tag, start, start);
            }
        }
    }

    /// Sends every open-loop request that is due; returns when the next one is.
    fn send_due(&mut self, ctx: &mut Ctx<'_>) -> Option<u64> {
        let now = ctx.now;
        let mut sends = std::mem::take(&mut self.sends);
        sends.run_due(now, |tag, t| self.send(ctx, tag, t, now));
        self.sends = sends;
        self.sends.next_at()
    }

    /// The answer to `tag`'s request `seq` arrived.
    fn answered(&mut self, ctx: &mut Ctx<'_>, tag: usize, seq: u64) {
        let Some(Some(r)) = self.requesters.get_mut(tag) else {
            return;
        };
        let mut lost = 0;
        let mut hit = None;
        while let Some(&(s, t)) = r.outstanding.front() {
            if s > seq {
                break;
            }
            r.outstanding.pop_front();
            self.in_flight -= 1;
            if s == seq {
                hit = Some(t);
                break;
            }
            // The server answers in order; an older request passed over was dropped.
            lost += 1;
        }
        if lost > 0 {
            ctx.tally.count_n("replies_missing", lost);
        }
        let Some(t) = hit else {
            ctx.tally.count("echo_unmatched");
            return;
        };
        ctx.tally
            .received(ctx.now.saturating_sub(t), self.urls[tag]);
        if self.rate <= 0.0 && ctx.sending() {
            self.send(ctx, tag, ctx.now, ctx.now);
        }
    }
}

impl Workload for RoundTrip {
    fn setup_conns(&self) -> usize {
        self.requesters.len()
    }

    fn user(&self, tag: usize) -> Option<String> {
        self.bouncer.as_ref().map(|b| b.user(tag))
    }

    fn url(&self, tag: usize) -> usize {
        self.urls.get(tag).copied().unwrap_or(0)
    }

    fn begin(&mut self, ctx: &mut Ctx<'_>, start: u64, end: u64) {
        self.start(ctx, start, end);
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<u64> {
        self.send_due(ctx)
    }

    fn on_frame(&mut self, ctx: &mut Ctx<'_>, tag: usize, frame: Frame) {
        match frame {
            // A broadcast server sends every request to every client: only the requester's
            // own probe answers it (matching another sender's by sequence alone would pair
            // requests with the wrong answers).
            Frame::Raw(p) if self.sender(tag).is_some_and(|me| me != p.p) => {
                ctx.tally.count("foreign_echoes")
            }
            Frame::Raw(p) | Frame::Direct(p) if self.is_requester(tag) => {
                self.answered(ctx, tag, p.s)
            }
            Frame::Pong(seq) => self.answered(ctx, tag, seq),
            Frame::Direct(p) => {
                if let Some(b) = &mut self.bouncer {
                    b.bounce(ctx, tag, p);
                }
            }
            Frame::Raw(_) | Frame::Message(..) => {}
        }
    }

    fn on_closed(&mut self, _ctx: &mut Ctx<'_>, tag: usize, _failure: Option<&Failure>) {
        // Its requests will never be answered: no longer in flight (and still counted lost).
        if let Some(Some(r)) = self.requesters.get_mut(tag) {
            self.in_flight -= r.outstanding.len();
            r.outstanding.clear();
        }
    }

    fn all_answered(&self) -> bool {
        self.in_flight == 0
    }

    fn account(&self, tally: &Tally, traffic: &mut Traffic) {
        // Expected answers are the requests sent; unique ones are those received.
        traffic.expected = tally.sent_total();
        traffic.unique = tally.received_total();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Scenario;
    use crate::scenario::runner::Stage;
    use crate::scenario::testbed::{plan, plan_over, Bed};

    fn echo(rate: f64) -> RoundTrip {
        let mut plan = plan(Scenario::Echo);
        plan.conns = 2;
        plan.rate = rate;
        RoundTrip::echo(&plan, &plan.thread_share(0))
    }

    #[test]
    fn answers_in_order_drop_the_skipped_ones() {
        let mut e = echo(1000.0);
        let mut bed = Bed::new(2);
        bed.stage = Stage::Running;
        // Pretend tag 0 sent requests 0..4 at 1, 2, 3, 4 ms (the bed has no socket to send on).
        let r = e.requesters[0].as_mut().unwrap();
        r.outstanding
            .extend((0..4).map(|s| (s, (s + 1) * 1_000_000)));
        e.in_flight = 4;
        e.on_frame(&mut bed.ctx(5_000_000), 0, Frame::Pong(0));
        e.on_frame(&mut bed.ctx(5_000_000), 0, Frame::Pong(2));
        assert_eq!(
            bed.tally.counters["replies_missing"], 1,
            "1 was passed over"
        );
        e.on_frame(&mut bed.ctx(5_000_000), 0, Frame::Pong(2));
        assert_eq!(
            bed.tally.counters["echo_unmatched"], 1,
            "2 was answered already"
        );
        e.on_frame(
            &mut bed.ctx(5_000_000),
            1,
            Frame::Message(Probe { t: 0, s: 3, p: 0 }, None),
        );
        assert_eq!(bed.tally.received_total(), 2);
        let longest = bed.tally.total.max();
        assert!(
            bed.tally.total.equivalent(longest, 4_000),
            "the oldest answer waited 4 ms"
        );
        assert!(!e.all_answered());
        e.on_closed(&mut bed.ctx(5_000_000), 0, Some(&Failure::Eof));
        assert!(e.all_answered(), "a closed connection owes nothing more");
        let mut t = Traffic::default();
        e.account(&bed.tally, &mut t);
        assert_eq!((t.expected, t.unique), (0, 2));
    }

    #[test]
    fn a_broadcast_servers_copies_of_other_requests_are_not_answers() {
        let mut e = echo(0.0);
        let mut bed = Bed::new(2);
        bed.stage = Stage::Running;
        for tag in 0..2 {
            e.requesters[tag]
                .as_mut()
                .unwrap()
                .outstanding
                .push_back((0, 1_000_000));
        }
        e.in_flight = 2;
        // Requester 1's request 0 reaches requester 0 too: same sequence, another sender.
        e.on_frame(
            &mut bed.ctx(2_000_000),
            0,
            Frame::Raw(Probe { t: 0, s: 0, p: 1 }),
        );
        assert_eq!(bed.tally.counters["foreign_echoes"], 1);
        assert_eq!(bed.tally.received_total(), 0);
        assert_eq!(e.in_flight, 2, "requester 0 still waits for its own");
        e.on_frame(
            &mut bed.ctx(2_000_000),
            0,
            Frame::Raw(Probe { t: 0, s: 0, p: 0 }),
        );
        e.on_frame(
            &mut bed.ctx(2_000_000),
            1,
            Frame::Raw(Probe { t: 0, s: 0, p: 1 }),
        );
        assert_eq!(bed.tally.received_total(), 2);
        assert!(!bed.tally.counters.contains_key("echo_unmatched"));
    }

    #[test]
    fn open_loop_sends_on_schedule_closed_loop_at_the_start() {
        let mut open = echo(1000.0);
        let mut bed = Bed::new(2);
        bed.stage = Stage::Running;
        // 500/s each; phases 0 and 1/2: sends at 0, 1, 2, 3 ms... until 4 ms.
        open.begin(&mut bed.ctx(0), 0, 4_000_000);
        assert_eq!(bed.tally.skipped, 0);
        assert_eq!(open.tick(&mut bed.ctx(1_000_000)), Some(2_000_000));
        assert_eq!(bed.tally.skipped, 2, "due, but no connection to send on");
        assert_eq!(open.tick(&mut bed.ctx(u64::MAX)), None);
        assert_eq!(bed.tally.skipped, 4);

        let mut closed = echo(0.0);
        let mut bed = Bed::new(2);
        closed.begin(&mut bed.ctx(0), 0, 4_000_000);
        assert_eq!(bed.tally.skipped, 2, "one first request each");
        assert_eq!(closed.tick(&mut bed.ctx(u64::MAX)), None);
    }

    #[test]
    fn connections_round_robin_round_trips_by_url() {
        // 2 URLs, 5 connections over 2 threads: the second thread has connections 2, 3, 4.
        let mut plan = plan_over(Scenario::Echo, 2, None);
        plan.conns = 5;
        plan.threads = 2;
        let mut e = RoundTrip::echo(&plan, &plan.thread_share(1));
        let urls: Vec<usize> = (0..e.setup_conns()).map(|tag| e.url(tag)).collect();
        assert_eq!(urls, [0, 1, 0]);
        let mut bed = Bed::new(3);
        bed.tally.track_urls(2);
        bed.stage = Stage::Running;
        for tag in 0..3 {
            e.requesters[tag]
                .as_mut()
                .unwrap()
                .outstanding
                .push_back((0, 0));
            e.in_flight += 1;
            e.on_frame(&mut bed.ctx(1_000_000), tag, Frame::Pong(0));
        }
        let counts: Vec<u64> = bed.tally.by_url.iter().map(|h| h.len()).collect();
        assert_eq!(counts, [2, 1]);
    }
}
