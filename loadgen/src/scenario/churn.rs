//! `churn`: a [`Fanout`] measured while extra connections connect, join a room (in turn) and
//! disconnect, started at `--churn-rate` per second during the measurement, each closed
//! `--churn-life` after its greeting. Churn connections are not subscribers: what the fan-out
//! owes and delivers is counted exactly as in `fanout`, so any loss is the churn's doing.
//!
//! Extra connections live on a fixed set of tags after the fan-out's (enough for the connections
//! alive at once); a due churn connect that finds none free is counted, not queued. The *k*-th
//! churn connection of a thread joins `room-(k % rooms)` and is placed on a URL as subscriber *k*
//! would be ([`crate::target::Targets::subscriber`]).

use std::collections::VecDeque;

use crate::net::{ConnId, Failure};
use crate::plan::{Plan, Share};
use crate::report::Traffic;
use crate::schedule::Schedule;
use crate::target::Targets;

use super::fanout::Fanout;
use super::tally::Tally;
use super::{Ctx, Frame, Workload};

/// A fan-out and its churn connections.
pub struct Churn {
    fanout: Fanout,
    /// Tags before this are the fan-out's.
    first: usize,
    /// The room of each churn tag's current connection, if it has one.
    rooms: Vec<Option<usize>>,
    /// Churn tags without a connection, the lowest last.
    free: Vec<usize>,
    /// (close time, tag, connection) of live churn connections, in close-time order (every one
    /// lives as long, so greeting order is close order).
    closing: VecDeque<(u64, usize, ConnId)>,
    /// Churn connections started so far, for rooms and URLs in turn.
    started: usize,
    targets: Targets,
    /// This thread's churn connections per second.
    rate: f64,
    life_ns: u64,
    sched: Option<Schedule>,
}

impl Churn {
    /// This thread's `share` of `plan`.
    pub fn new(plan: &Plan, share: &Share) -> Self {
        let fanout = Fanout::new(plan, share);
        let first = fanout.setup_conns();
        // Enough for the connections alive at once (rate x life), plus room for slow closes.
        let slots = ((share.churn_rate * plan.churn_life.as_secs_f64() * 2.0).ceil() as usize + 4)
            .min(100_000);
        Self {
            fanout,
            first,
            rooms: vec![None; slots],
            free: (first..first + slots).rev().collect(),
            closing: VecDeque::new(),
            started: 0,
            targets: plan.targets.clone(),
            rate: share.churn_rate,
            life_ns: plan.churn_life.as_nanos() as u64,
            sched: None,
        }
    }

    /// Closes the churn connections whose life is over and starts those due.
    fn churn(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        while let Some(&(t, tag, id)) = self.closing.front() {
            if t > now {
                break;
            }
            self.closing.pop_front();
            // Only if the tag still holds that connection (it may have failed and been reused).
            if ctx.conn(tag) == Some(id) {
                ctx.close(id);
            }
        }
        let rooms = self.fanout.room_count().max(1);
        while let Some(sched) = self.sched.as_mut() {
            if sched.take_due(now).is_none() {
                break;
            }
            let Some(tag) = self.free.pop() else {
                ctx.tally.count("churn_no_free_slot");
                continue;
            };
            self.rooms[tag - self.first] = Some(self.started % rooms);
            ctx.open_extra(tag, self.targets.subscriber(self.started, rooms));
            self.started += 1;
            ctx.tally.count("churn_started");
        }
    }
}

impl Workload for Churn {
    fn setup_conns(&self) -> usize {
        self.first
    }

    fn extra_conns(&self) -> usize {
        self.rooms.len()
    }

    fn url(&self, tag: usize) -> usize {
        self.fanout.url(tag)
    }

    fn on_ready(&mut self, ctx: &mut Ctx<'_>, tag: usize) -> usize {
        let Some(i) = tag.checked_sub(self.first) else {
            return self.fanout.on_ready(ctx, tag);
        };
        let Some(room) = self.rooms[i] else { return 0 };
        let joins = self.fanout.send_joins(ctx, tag, &[room]);
        if let Some(id) = ctx.conn(tag) {
            self.closing.push_back((ctx.now + self.life_ns, tag, id));
        }
        joins
    }

    fn on_joined(&mut self, tag: usize) {
        self.fanout.on_joined(tag);
    }

    fn begin(&mut self, ctx: &mut Ctx<'_>, start: u64, end: u64) {
        self.fanout.begin(ctx, start, end);
        self.sched = Some(Schedule::new(start, self.rate, 0.0, end));
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<u64> {
        self.churn(ctx);
        let publish = self.fanout.tick(ctx).unwrap_or(u64::MAX);
        let start = self
            .sched
            .as_ref()
            .and_then(Schedule::next_at)
            .unwrap_or(u64::MAX);
        let close = self.closing.front().map_or(u64::MAX, |c| c.0);
        Some(publish.min(start).min(close)).filter(|&t| t < u64::MAX)
    }

    fn on_frame(&mut self, ctx: &mut Ctx<'_>, tag: usize, frame: Frame) {
        // Churn connections are no subscribers: the fan-out ignores what they hear as it
        // ignores its publishers.
        self.fanout.on_frame(ctx, tag, frame);
    }

    fn on_closed(&mut self, ctx: &mut Ctx<'_>, tag: usize, failure: Option<&Failure>) {
        let Some(i) = tag.checked_sub(self.first) else {
            return self.fanout.on_closed(ctx, tag, failure);
        };
        if self.rooms[i].take().is_some() {
            self.free.push(tag);
            if failure.is_none() {
                ctx.tally.count("churn_completed");
            }
        }
    }

    fn account(&self, tally: &Tally, traffic: &mut Traffic) {
        self.fanout.account(tally, traffic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Scenario;
    use crate::scenario::runner::Stage;
    use crate::scenario::testbed::{plan_over, Bed};

    #[test]
    fn starts_at_the_rate_lives_its_life_and_frees_its_tag() {
        let mut plan = plan_over(Scenario::Churn, 2, None);
        plan.conns = 2;
        plan.rooms = 2;
        plan.churn_rate = 1000.0;
        plan.churn_life = std::time::Duration::from_millis(1);
        let mut c = Churn::new(&plan, &plan.thread_share(0));
        // 1 publisher + 2 subscribers; 1000/s × 1 ms × 2 + 4 churn tags.
        assert_eq!((c.setup_conns(), c.extra_conns()), (3, 6));
        let mut bed = Bed::new(9);
        bed.stage = Stage::Running;
        c.begin(&mut bed.ctx(0), 0, 100_000_000);
        // At 9.5 ms, 10 starts are due (0..=9 ms), for 6 tags.
        c.tick(&mut bed.ctx(9_500_000));
        assert_eq!(bed.tally.counters["churn_started"], 6);
        assert_eq!(bed.tally.counters["churn_no_free_slot"], 4);
        assert_eq!(bed.wire.opened, [3, 4, 5, 6, 7, 8]);
        // Members 0, 0, 1, 1, 2, 2 of rooms 0, 1, 0, 1, 0, 1: round the 2 URLs in each room.
        assert_eq!(
            bed.wire.opened_to,
            [0, 0, 1, 1, 0, 0],
            "URLs in turn per room"
        );
        let setup: Vec<usize> = (0..3).map(|tag| c.url(tag)).collect();
        assert_eq!(
            setup,
            [0, 0, 0],
            "the publisher, then the first of rooms 0 and 1"
        );
        for tag in 3..9 {
            assert_eq!(c.on_ready(&mut bed.ctx(9_500_000), tag), 1, "one join");
        }
        let join = |r| format!(r#"{{"type":"join","room":"room-{r}","id":{r}}}"#);
        assert_eq!(bed.wire.sent[0], (3, join(0)), "rooms in turn");
        assert_eq!(bed.wire.sent[1], (4, join(1)));
        // Their life is over at 10.5 ms.
        assert_eq!(c.tick(&mut bed.ctx(10_000_000)), Some(10_500_000));
        assert!(bed.wire.closed.is_empty());
        c.tick(&mut bed.ctx(10_500_000));
        assert_eq!(bed.wire.closed, [3, 4, 5, 6, 7, 8]);
        for tag in 3..9 {
            bed.disconnect(tag);
            let failure = (tag == 8).then_some(&Failure::Reset);
            c.on_closed(&mut bed.ctx(10_600_000), tag, failure);
        }
        assert_eq!(bed.tally.counters["churn_completed"], 5);
        assert_eq!(c.free.len(), 6, "every tag free again");
        c.tick(&mut bed.ctx(11_000_000));
        assert_eq!(
            bed.wire.opened.last(),
            Some(&8),
            "the last freed is reused first"
        );
    }
}
