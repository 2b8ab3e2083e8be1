//! One thread's [`Runner`]: what every scenario needs, and nothing one scenario alone does. It
//! opens the setup connections at the ramp rate, marks each ready at its greeting (the 101 in raw
//! mode, `welcome` in hub mode, the acknowledged CONNECT in socketio mode, whose Engine.IO
//! handshake and pings it answers itself), waits for its joins to be acked, moves through the stages
//! (module docs of [`super`]), reads every frame and hands the scenario's traffic to its
//! [`Workload`] as a [`Frame`], samples the [`Tally`] every second, and builds the thread's part
//! of the summary.
//!
//! The workload never sees a socket: it names its connections by tag (their index in this
//! thread) and acts through a [`Ctx`]. A tag's `ConnId` only serves to tell a connection from a
//! later one on the same tag (churn).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::hist::Latency;
use crate::net::{ConnId, Failure, Handler, Net};
use crate::plan::{Adapter, Plan, Scenario};
use crate::report::{Connections, RunSummary, Traffic, FORMAT_VERSION};
use crate::schedule::Schedule;
use crate::sio;

use super::probe::{fast_probe, FastKind, Inbound};
use super::tally::Tally;
use super::{Coord, Frame, JoinAck, Workload};

/// Where a thread is in the run (see the module docs of [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Opening connections, waiting for greetings and join acks.
    Setup,
    /// Set up; waiting for the common start.
    Waiting,
    /// Measuring: holding, publishing or requesting.
    Running,
    /// The measurement is over; waiting (bounded) for what is still in flight.
    Draining,
    /// Finished.
    Done,
}

/// What the runner keeps of each connection, whatever the scenario.
#[derive(Debug, Default, Clone)]
pub(super) struct Link {
    pub(super) id: Option<ConnId>,
    welcomed: bool,
    /// Joins sent and not yet answered.
    pending_joins: usize,
    /// Done with setup: greeted with every join answered, or gone.
    ready: bool,
}

/// What a workload's context needs of the IO driver: [`Net`] in a run, a recorder in tests.
pub trait Wire {
    /// Starts a connection tagged `tag` to URL `url` (see [`Net::open`]).
    fn open(&mut self, tag: usize, now: u64, user: Option<&str>, url: usize) -> Option<ConnId>;
    /// Queues a text message; false if the connection is gone or closing.
    fn send_text(&mut self, id: ConnId, msg: &[u8]) -> bool;
    /// Starts a clean close.
    fn close(&mut self, id: ConnId, now: u64);
}

impl Wire for Net {
    fn open(&mut self, tag: usize, now: u64, user: Option<&str>, url: usize) -> Option<ConnId> {
        Net::open(self, tag, now, user, url)
    }
    fn send_text(&mut self, id: ConnId, msg: &[u8]) -> bool {
        Net::send_text(self, id, msg)
    }
    fn close(&mut self, id: ConnId, now: u64) {
        Net::close(self, id, now)
    }
}

/// What a workload acts through: its connections by tag, the thread's tally, and the time.
pub struct Ctx<'a> {
    pub(super) net: &'a mut dyn Wire,
    pub(super) links: &'a mut [Link],
    /// The thread's counts.
    pub tally: &'a mut Tally,
    /// Now, monotonic ns.
    pub now: u64,
    pub(super) stage: Stage,
    pub(super) end_ns: u64,
    pub(super) adapter: Adapter,
    /// Where a message is framed for the server's protocol (socketio: into an event).
    pub(super) scratch: &'a mut Vec<u8>,
}

impl Ctx<'_> {
    /// Queues a text message on connection `tag`; false when it has no open connection. In
    /// socketio mode the message goes out as the argument of a `msg` event.
    pub fn send(&mut self, tag: usize, msg: &[u8]) -> bool {
        let Some(id) = self.links.get(tag).and_then(|l| l.id) else {
            return false;
        };
        if self.adapter == Adapter::SocketIo {
            self.scratch.clear();
            sio::write_event(self.scratch, msg);
            return self.net.send_text(id, self.scratch);
        }
        self.net.send_text(id, msg)
    }

    /// The connection `tag` holds now, to tell it apart from a later one on the same tag.
    pub fn conn(&self, tag: usize) -> Option<ConnId> {
        self.links.get(tag).and_then(|l| l.id)
    }

    /// Opens a new connection on tag `tag` to URL `url` (an index in the plan's
    /// [`crate::target::Targets`]) outside setup (it takes no part in setup accounting).
    pub fn open_extra(&mut self, tag: usize, url: usize) {
        let now = self.now;
        let link = &mut self.links[tag];
        *link = Link {
            ready: true,
            ..Link::default()
        };
        link.id = self.net.open(tag, now, None, url);
    }

    /// Closes `conn` cleanly (1000), if it is still open.
    pub fn close(&mut self, conn: ConnId) {
        self.net.close(conn, self.now);
    }

    /// Whether what arrives now counts: the measurement has started.
    pub fn measuring(&self) -> bool {
        self.stage >= Stage::Running
    }

    /// Whether a new closed-loop request may go out: running, before the end.
    pub fn sending(&self) -> bool {
        self.stage == Stage::Running && self.now < self.end_ns
    }
}

/// One thread's scenario state: the common part, and the scenario's [`Workload`].
pub struct Runner {
    adapter: Adapter,
    coord: Arc<Coord>,
    stage: Stage,
    links: Vec<Link>,
    /// Links opened during setup (tags `0..setup_len`); the rest are the workload's extras.
    setup_len: usize,
    ramp: Schedule,
    opened: usize,
    settled: usize,
    setup_deadline: u64,
    setup_last_ready: Option<u64>,
    end_ns: u64,
    drain_until: u64,
    duration_ns: u64,
    /// How long the measurement lasted: `--duration`, or less if the workload finished early.
    measured_ns: u64,
    grace_ns: u64,
    open_at_end: u64,
    tally: Tally,
    work: Box<dyn Workload>,
    /// [`Ctx::scratch`], kept to reuse its allocation.
    scratch: Vec<u8>,
}

impl Runner {
    /// A runner for `work`, which drives this thread's share of `plan`; `connect_rate` is the
    /// thread's share of the setup ramp.
    pub fn new(
        plan: &Plan,
        connect_rate: f64,
        coord: Arc<Coord>,
        tally: Tally,
        work: Box<dyn Workload>,
        now: u64,
    ) -> Self {
        let setup_len = work.setup_conns();
        let ramp_s = if connect_rate > 0.0 {
            setup_len as f64 / connect_rate
        } else {
            0.0
        };
        Self {
            adapter: plan.adapter,
            coord,
            stage: Stage::Setup,
            links: vec![Link::default(); setup_len + work.extra_conns()],
            setup_len,
            ramp: Schedule::new(now, connect_rate, 0.0, u64::MAX),
            opened: 0,
            settled: 0,
            setup_deadline: now
                + (ramp_s * 1e9) as u64
                + plan.connect_timeout.as_nanos() as u64
                + 1_000_000_000,
            setup_last_ready: None,
            end_ns: 0,
            drain_until: 0,
            duration_ns: plan.duration.as_nanos() as u64,
            measured_ns: plan.duration.as_nanos() as u64,
            grace_ns: plan.grace.as_nanos() as u64,
            open_at_end: 0,
            tally,
            work,
            scratch: Vec::new(),
        }
    }

    /// Splits `self` into the workload and the context it acts through.
    fn parts<'a>(&'a mut self, net: &'a mut Net, now: u64) -> (&'a mut dyn Workload, Ctx<'a>) {
        let ctx = Ctx {
            net,
            links: &mut self.links,
            tally: &mut self.tally,
            now,
            stage: self.stage,
            end_ns: self.end_ns,
            adapter: self.adapter,
            scratch: &mut self.scratch,
        };
        (&mut *self.work, ctx)
    }

    /// A link finished its setup (ready with its joins acked, or gone).
    fn settle(&mut self, tag: usize) {
        let l = &mut self.links[tag];
        if !l.ready {
            l.ready = true;
            self.settled += 1;
        }
    }

    /// The connection on `tag` is greeted: the workload sends its joins, if any.
    fn greeted(&mut self, net: &mut Net, id: ConnId, tag: usize, now: u64) {
        net.mark_ready(id, now);
        self.links[tag].welcomed = true;
        let (work, mut ctx) = self.parts(net, now);
        let joins = work.on_ready(&mut ctx, tag);
        if joins == 0 {
            self.settle(tag);
        } else {
            self.links[tag].pending_joins = joins;
        }
    }

    /// A join of `tag` was answered: acked (`ok`) or refused.
    fn join_answered(&mut self, tag: usize, ok: bool) {
        let l = &mut self.links[tag];
        if l.pending_joins == 0 {
            return;
        }
        l.pending_joins -= 1;
        let done = l.pending_joins == 0;
        if ok {
            self.work.on_joined(tag);
        }
        if done {
            self.settle(tag);
        }
    }

    /// Moves from `Waiting` to `Running` once the common start time has passed.
    fn maybe_begin(&mut self, net: &mut Net, now: u64) -> bool {
        if self.stage != Stage::Waiting {
            return false;
        }
        let start = self.coord.start_ns.load(Ordering::Acquire);
        if start == 0 || now < start {
            return false;
        }
        self.stage = Stage::Running;
        self.end_ns = start + self.duration_ns;
        let end = self.end_ns;
        let (work, mut ctx) = self.parts(net, now);
        work.begin(&mut ctx, start, end);
        true
    }

    /// Hands a frame of the scenario's traffic to the workload.
    fn frame(&mut self, net: &mut Net, tag: usize, frame: Frame, now: u64) {
        let (work, mut ctx) = self.parts(net, now);
        work.on_frame(&mut ctx, tag, frame);
    }

    /// Opens the setup connections that are due and moves to `Waiting` once all are settled
    /// (or the setup deadline passed). Returns when to be called again.
    fn setup(&mut self, net: &mut Net, now: u64) -> u64 {
        let all_at_once = self.ramp.next_at().is_none();
        while self.opened < self.setup_len {
            if !all_at_once && self.ramp.take_due(now).is_none() {
                break;
            }
            let tag = self.opened;
            self.opened += 1;
            let user = self.work.user(tag);
            let url = self.work.url(tag);
            self.links[tag].id = net.open(tag, now, user.as_deref(), url);
        }
        if self.opened == self.setup_len && self.settled == self.setup_len
            || now >= self.setup_deadline
        {
            self.coord.ready.fetch_add(1, Ordering::AcqRel);
            self.stage = Stage::Waiting;
            // The achieved connect rate is the setup ramp's; churn comes later.
            self.setup_last_ready = net.stats.last_ready_ns;
        }
        let next_open = if self.opened < self.setup_len {
            self.ramp.next_at()
        } else {
            None
        };
        next_open.unwrap_or(u64::MAX)
    }

    /// This thread's part of the summary.
    pub fn into_summary(self, plan: &Plan, net: &Net) -> RunSummary {
        let st = &net.stats;
        let t = &self.tally;
        let has_traffic = self.work.has_traffic();
        let traffic = has_traffic.then(|| {
            let mut traffic = Traffic {
                sent: t.sent,
                skipped: t.skipped,
                received: t.received,
                counters: t.counters.clone(),
                ..Traffic::default()
            };
            self.work.account(t, &mut traffic);
            traffic
        });
        RunSummary {
            version: FORMAT_VERSION,
            scenario: plan.scenario.name().into(),
            label: plan.label.clone(),
            url: plan.targets.first().url.clone(),
            urls: plan.targets.all().iter().map(|t| t.url.clone()).collect(),
            publisher_url: (plan.scenario.is_fanout() || plan.scenario == Scenario::Recover)
                .then(|| plan.targets.publisher_target().url.clone()),
            adapter: plan.adapter.name().into(),
            params: plan.params(),
            started_unix_ms: 0,
            measured_s: self.measured_ns as f64 / 1e9,
            connections: Connections {
                target: self.links.len() as u64,
                attempted: st.attempted,
                established: st.established,
                failed: st.failures.values().sum(),
                failures: st.failures.clone(),
                open_at_end: self.open_at_end,
                connect_rate_per_s: 0.0,
                first_start_ns: st.first_start_ns,
                last_ready_ns: self.setup_last_ready,
            },
            handshake: Latency::from_hist(&st.handshake),
            latency: has_traffic.then(|| Latency::from_hist(&t.total)),
            latency_by_url: if has_traffic {
                (plan.targets.all().iter().zip(&t.by_url))
                    .map(|(target, h)| (target.url.clone(), Latency::from_hist(h)))
                    .collect()
            } else {
                Default::default()
            },
            send_lag: (has_traffic && !t.lag.is_empty()).then(|| Latency::from_hist(&t.lag)),
            phases: (t.phases.iter())
                .map(|(k, h)| (k.to_string(), Latency::from_hist(h)))
                .collect(),
            traffic,
            timeline: Vec::new(),
        }
    }
}

impl Handler for Runner {
    fn on_upgraded(&mut self, net: &mut Net, id: ConnId, tag: usize, now: u64) {
        // A raw server sends no greeting: the 101 is all there is.
        if self.adapter == Adapter::Raw {
            self.greeted(net, id, tag, now);
        }
    }

    fn on_text(&mut self, net: &mut Net, id: ConnId, tag: usize, msg: &[u8], now: u64) {
        // Another thread's (or process's) publisher may already be past the common start while
        // this thread has not ticked since: start here too, so its first deliveries count.
        self.maybe_begin(net, now);
        let msg = if self.adapter == Adapter::SocketIo {
            match sio::parse(msg) {
                sio::Packet::Event(arg) => arg,
                sio::Packet::Open => {
                    net.send_text(id, sio::CONNECT);
                    return;
                }
                sio::Packet::Connected => {
                    if !self.links[tag].welcomed {
                        self.greeted(net, id, tag, now);
                    }
                    return;
                }
                sio::Packet::Ping => {
                    net.send_text(id, sio::PONG);
                    return;
                }
                sio::Packet::ConnectError => {
                    self.tally.count("server_error_connect");
                    return;
                }
                sio::Packet::Other => {
                    self.tally.count("unparsed_frames");
                    return;
                }
            }
        } else {
            msg
        };
        // Deliveries are nearly all the traffic; read them without a JSON parser when they have
        // exactly the layout this tool sends and shardhub forwards (anything else falls through).
        if let Some((kind, p, offset)) = fast_probe(msg) {
            let frame = match kind {
                FastKind::Message | FastKind::Broadcast => Frame::Message(p, offset),
                FastKind::Direct => Frame::Direct(p),
                FastKind::Raw => Frame::Raw(p),
            };
            return self.frame(net, tag, frame, now);
        }
        let Ok(m) = serde_json::from_slice::<Inbound<'_>>(msg) else {
            self.tally.count("unparsed_frames");
            return;
        };
        if self.adapter.one_room() {
            match m.probe() {
                _ if !self.work.has_traffic() => {}
                Some(p) => self.frame(net, tag, Frame::Raw(p), now),
                None => self.tally.count("unparsed_frames"),
            }
            return;
        }
        match m.ty.as_deref() {
            Some("welcome") if !self.links[tag].welcomed => self.greeted(net, id, tag, now),
            Some("ack") if m.op.as_deref() == Some("join") => {
                let ack = JoinAck {
                    offset: m.offset,
                    epoch: m.epoch.as_deref().map(str::to_owned),
                    recovered: m.recovered,
                };
                let (work, mut ctx) = self.parts(net, now);
                work.on_join_ack(&mut ctx, tag, &ack);
                self.join_answered(tag, true);
            }
            Some("error") => {
                let code = m.code.as_deref().unwrap_or("unknown");
                self.tally.count(&format!("server_error_{code}"));
                self.join_answered(tag, false);
            }
            Some("message" | "broadcast") => match m.probe() {
                Some(p) => self.frame(net, tag, Frame::Message(p, m.offset), now),
                None => self.tally.count("foreign_messages"),
            },
            Some("direct") => match m.probe() {
                Some(p) => self.frame(net, tag, Frame::Direct(p), now),
                None => self.tally.count("foreign_messages"),
            },
            Some("pong") => match m.id {
                Some(seq) => self.frame(net, tag, Frame::Pong(seq), now),
                None => self.tally.count("echo_unmatched"),
            },
            _ => {}
        }
    }

    fn on_closed(&mut self, net: &mut Net, tag: usize, failure: Option<&Failure>, now: u64) {
        let Some(l) = self.links.get_mut(tag) else {
            return;
        };
        l.id = None;
        if failure.is_some() && tag < self.setup_len {
            self.settle(tag);
        }
        let (work, mut ctx) = self.parts(net, now);
        work.on_closed(&mut ctx, tag, failure);
    }

    fn tick(&mut self, net: &mut Net, now: u64) -> Option<u64> {
        self.tally.sample(now, net.stats.open);
        let next_sec = self.tally.next_sample_at();
        match self.stage {
            Stage::Setup => Some(self.setup(net, now).min(next_sec)),
            Stage::Waiting => {
                if self.maybe_begin(net, now) {
                    return Some(now);
                }
                // Poll the shared start time often; this stage lasts only until all are ready.
                Some(now + 2_000_000)
            }
            Stage::Running => {
                let (work, mut ctx) = self.parts(net, now);
                let next = work.tick(&mut ctx).unwrap_or(u64::MAX);
                if now >= self.end_ns || self.work.finished() {
                    self.open_at_end = net.stats.open;
                    // A workload that finished early measured until now, not for --duration.
                    let start = self.end_ns - self.duration_ns;
                    self.measured_ns = now.min(self.end_ns).saturating_sub(start);
                    if !self.work.has_traffic() {
                        // Nothing in flight to wait for.
                        self.stage = Stage::Done;
                        return None;
                    }
                    self.stage = Stage::Draining;
                    self.drain_until = now + self.grace_ns;
                    return Some(now);
                }
                Some(next.min(self.end_ns).min(next_sec))
            }
            Stage::Draining => {
                if now >= self.drain_until || self.work.all_answered() {
                    // The last, partial second.
                    self.tally.sample(now + 1_000_000_000, net.stats.open);
                    self.stage = Stage::Done;
                    return None;
                }
                Some(self.drain_until.min(next_sec))
            }
            Stage::Done => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::scenario::testbed::plan;
    use crate::target::Target;

    /// A workload with no connection that logs what the runner asks of it.
    #[derive(Default)]
    struct Log {
        calls: Vec<String>,
        answered: bool,
    }

    /// Shares the log with the test while the runner owns the workload.
    struct Shared(std::rc::Rc<std::cell::RefCell<Log>>);

    impl Workload for Shared {
        fn setup_conns(&self) -> usize {
            0
        }
        fn begin(&mut self, ctx: &mut Ctx<'_>, start: u64, end: u64) {
            let running = ctx.measuring();
            self.0
                .borrow_mut()
                .calls
                .push(format!("begin {start} {end} {running}"));
        }
        fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<u64> {
            self.0.borrow_mut().calls.push(format!("tick {}", ctx.now));
            Some(ctx.now + 7)
        }
        fn on_frame(&mut self, _ctx: &mut Ctx<'_>, _tag: usize, _frame: Frame) {}
        fn all_answered(&self) -> bool {
            self.0.borrow().answered
        }
    }

    #[test]
    fn stages_from_setup_to_done() {
        let mut p = plan(Scenario::Echo);
        p.duration = Duration::from_nanos(100);
        p.grace = Duration::from_secs(1);
        let log = std::rc::Rc::new(std::cell::RefCell::new(Log::default()));
        let coord = Arc::new(Coord::default());
        let (tx, rx) = mpsc::channel();
        let tally = Tally::new(tx, 0, 0);
        let work = Box::new(Shared(log.clone()));
        let mut r = Runner::new(&p, 0.0, coord.clone(), tally, work, 0);
        let target = Target::parse("ws://127.0.0.1:1/").unwrap();
        let mut net = Net::new(vec![target], Vec::new(), Duration::from_secs(1), 1).unwrap();
        // Nothing to open: set up at once, then waiting for the common start.
        assert_eq!(r.tick(&mut net, 0), Some(1_000_000_000), "the next sample");
        assert_eq!(
            (r.stage, coord.ready.load(Ordering::Acquire)),
            (Stage::Waiting, 1)
        );
        assert_eq!(r.tick(&mut net, 5), Some(2_000_005), "polls for the start");
        coord.start_ns.store(10, Ordering::Release);
        assert_eq!(r.tick(&mut net, 12), Some(12));
        assert_eq!(r.tick(&mut net, 13), Some(20), "the workload's next send");
        assert_eq!(
            r.tick(&mut net, 105),
            Some(110),
            "the end of the measurement"
        );
        assert_eq!(r.tick(&mut net, 110), Some(110), "draining");
        assert_eq!(r.stage, Stage::Draining);
        assert_eq!(r.tick(&mut net, 111), Some(1_000_000_000), "grace not over");
        log.borrow_mut().answered = true;
        assert_eq!(
            r.tick(&mut net, 112),
            None,
            "all answered: done before the grace"
        );
        let calls = log.borrow().calls.clone();
        assert_eq!(
            calls,
            ["begin 10 110 true", "tick 13", "tick 105", "tick 110"]
        );
        assert_eq!(
            rx.try_recv().map(|s| s.t_s),
            Ok(0),
            "the last, partial second"
        );
        let s = r.into_summary(&p, &net);
        assert_eq!(s.traffic.map(|t| t.sent), Some(0));
    }
}
