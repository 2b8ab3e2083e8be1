//! The scenarios as [`Handler`]s, one [`Runner`] per thread, and [`run`], which spawns the
//! threads, coordinates their common start, collects per-second samples and merges the result.
//!
//! Every part goes through the same stages: `Setup` (ramp connections at the intended rate, wait
//! for each greeting and join ack), `Waiting` (this part is ready; all parts start together at a
//! time chosen once everyone is ready, so no publish goes to a room still filling), `Running`
//! (hold, publish or request for the duration), `Draining` (bounded grace for replies in flight),
//! then done. Setup is bounded by the ramp time plus the connect timeout; the whole run by
//! `--timeout`.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::error::RunError;
use crate::hist::{self, Latency};
use crate::net::{drive, ConnId, Failure, Handler, Net};
use crate::plan::{publisher_rooms, Adapter, Plan, Scenario, Share};
use crate::report::{Connections, RunSummary, Sample, Traffic, FORMAT_VERSION};
use crate::schedule::Schedule;
use crate::seq::{RoomStats, Seen, SeqTracker};
use crate::sys::monotonic_ns;

/// Shared by the threads of one process: how many parts are ready, and the common start time.
#[derive(Debug, Default)]
pub struct Coord {
    ready: AtomicUsize,
    start_ns: AtomicU64,
}

/// How the common start time is decided once every thread of this process is ready.
pub enum Gate {
    /// This process decides: start shortly after now.
    Local,
    /// A parent process decides: print `READY` on stdout, read `GO <start_ns>` from stdin.
    Stdio,
}

/// Delay between "everyone is ready" and the start, so every thread sees the start time before
/// it passes and the first scheduled sends are not all late.
const START_DELAY_NS: u64 = 50_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Setup,
    Waiting,
    Running,
    Draining,
    Done,
}

enum Kind {
    /// A connection with no role but to exist (connect scenario).
    Plain,
    /// A fanout subscriber of `room`, with one tracker per publisher.
    Sub {
        room: usize,
        member: bool,
        trackers: Vec<SeqTracker>,
    },
    /// A fanout publisher.
    Pub {
        index: usize,
        rooms: Vec<usize>,
        seqs: Vec<u64>,
        next_room: usize,
        sched: Option<Schedule>,
    },
    /// An echo client (or a direct initiator, with its `peer`): outstanding (seq, intended send
    /// ns), oldest first.
    Echo {
        index: usize,
        peer: Option<usize>,
        seq: u64,
        outstanding: VecDeque<(u64, u64)>,
        sched: Option<Schedule>,
    },
    /// A direct responder (global index `index`): sends every probe back to its sender.
    Bounce { index: usize },
    /// A churn connection: joins `room`, lives until `close_at` (set at its greeting).
    Churn { room: usize, in_use: bool },
}

struct Slot {
    id: Option<ConnId>,
    welcomed: bool,
    pending_joins: usize,
    ready: bool,
    gone: bool,
    kind: Kind,
}

/// Counters and histograms reported every second and at the end.
struct Meter {
    total: Histogram<u64>,
    /// How late each send left versus its intended time: the generator's own share of the
    /// latency (scheduling, its CPU), reported so it is not mistaken for the server's.
    lag: Histogram<u64>,
    interval: Histogram<u64>,
    sent: u64,
    received: u64,
    sec_sent: u64,
    sec_received: u64,
    sec: u64,
    origin: u64,
    tx: mpsc::Sender<Sample>,
}

impl Meter {
    fn record(&mut self, ns: u64) {
        hist::record_ns(&mut self.total, ns);
        hist::record_ns(&mut self.interval, ns);
    }

    /// Sends one sample per elapsed second.
    fn sample(&mut self, now: u64, open: u64) {
        let sec = now.saturating_sub(self.origin) / 1_000_000_000;
        if sec == self.sec {
            return;
        }
        let s = Sample {
            t_s: self.sec,
            conns: open,
            sent: self.sent - self.sec_sent,
            received: self.received - self.sec_received,
            p99_ms: if self.interval.is_empty() {
                0.0
            } else {
                self.interval.value_at_quantile(0.99) as f64 / 1_000.0
            },
            hist: hist::encode(&self.interval),
        };
        // The receiver only goes away when the run is being torn down; samples are then moot.
        let _ = self.tx.send(s);
        self.interval.reset();
        self.sec_sent = self.sent;
        self.sec_received = self.received;
        self.sec = sec;
    }
}

/// One thread's scenario state.
pub struct Runner {
    scenario: Scenario,
    adapter: Adapter,
    coord: Arc<Coord>,
    stage: Stage,
    slots: Vec<Slot>,
    ramp: Schedule,
    opened: usize,
    settled: usize,
    setup_deadline: u64,
    start_ns: u64,
    end_ns: u64,
    drain_until: u64,
    duration_ns: u64,
    grace_ns: u64,
    pub_rate: f64,
    echo_rate: f64,
    echo_conns: usize,
    publishers: usize,
    payload: usize,
    rooms: Vec<RoomStats>,
    counters: BTreeMap<String, u64>,
    skipped: u64,
    open_at_end: u64,
    meter: Meter,
    buf: Vec<u8>,
    /// Slots opened during setup (churn slots come after them).
    setup_len: usize,
    /// Prefix of user ids (direct), unique per run so runs do not cross.
    user_prefix: String,
    churn: Option<Schedule>,
    churn_rate: f64,
    churn_life_ns: u64,
    churn_free: Vec<usize>,
    churn_closing: VecDeque<(u64, usize, ConnId)>,
    churn_next: usize,
    setup_last_ready: Option<u64>,
    /// Open-loop senders by next intended send time, so a tick costs O(due · log senders), not
    /// O(connections).
    due: BinaryHeap<Reverse<(u64, usize)>>,
    /// Requests sent and not yet answered (echo, direct).
    in_flight: usize,
}

/// Probe carried in payloads: intended send time (monotonic ns), sequence, sender index.
#[derive(Deserialize, Clone, Copy)]
struct Probe {
    t: u64,
    s: u64,
    p: usize,
}

/// The fields of a server frame any scenario looks at; everything else is skipped.
#[derive(Deserialize)]
struct Inbound<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    data: Option<Probe>,
    // Raw adapter: the probe is the whole message.
    #[serde(default)]
    t: Option<u64>,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    p: Option<usize>,
}

impl Inbound<'_> {
    fn probe(&self) -> Option<Probe> {
        if let Some(d) = &self.data {
            return Some(Probe {
                t: d.t,
                s: d.s,
                p: d.p,
            });
        }
        Some(Probe {
            t: self.t?,
            s: self.s?,
            p: self.p?,
        })
    }
}

impl Runner {
    fn new(
        plan: &Plan,
        share: &Share,
        coord: Arc<Coord>,
        tx: mpsc::Sender<Sample>,
        origin: u64,
        now: u64,
    ) -> Self {
        let churn_life_ns = plan.churn_life.as_nanos() as u64;
        let publishers = plan.publisher_count();
        let rooms = plan.room_count();
        let mut slots = Vec::new();
        let slot = |kind| Slot {
            id: None,
            welcomed: false,
            pending_joins: 0,
            ready: false,
            gone: false,
            kind,
        };
        // Publishers first: they are few, and a ramp that stalls should not leave a room without
        // its publisher.
        for p in share.pubs.clone() {
            let rs = if plan.adapter == Adapter::Raw {
                vec![0]
            } else {
                publisher_rooms(p, publishers, rooms)
            };
            slots.push(slot(Kind::Pub {
                index: p,
                seqs: vec![0; rs.len()],
                rooms: rs,
                next_room: 0,
                sched: None,
            }));
        }
        for i in share.conns.clone() {
            slots.push(slot(match plan.scenario {
                Scenario::Connect => Kind::Plain,
                Scenario::Fanout | Scenario::Churn => Kind::Sub {
                    room: i % rooms.max(1),
                    member: false,
                    trackers: vec![SeqTracker::default(); publishers],
                },
                Scenario::Direct if i % 2 == 1 => Kind::Bounce { index: i },
                Scenario::Echo | Scenario::Direct => Kind::Echo {
                    index: i,
                    peer: (plan.scenario == Scenario::Direct).then_some(i + 1),
                    seq: 0,
                    outstanding: VecDeque::new(),
                    sched: None,
                },
            }));
        }
        let setup_len = slots.len();
        // Churn slots: enough for the connections alive at once (rate x life, plus room for
        // slow closes); a due churn connect finding none free is counted, not queued.
        let churn_slots = if plan.scenario == Scenario::Churn {
            ((share.churn_rate * plan.churn_life.as_secs_f64() * 2.0).ceil() as usize + 4)
                .min(100_000)
        } else {
            0
        };
        let churn_free: Vec<usize> = (setup_len..setup_len + churn_slots).rev().collect();
        for _ in 0..churn_slots {
            slots.push(slot(Kind::Churn {
                room: 0,
                in_use: false,
            }));
        }
        let ramp_s = if share.connect_rate > 0.0 {
            setup_len as f64 / share.connect_rate
        } else {
            0.0
        };
        Self {
            scenario: plan.scenario,
            adapter: plan.adapter,
            coord,
            stage: Stage::Setup,
            ramp: Schedule::new(now, share.connect_rate, 0.0, u64::MAX),
            slots,
            opened: 0,
            settled: 0,
            setup_deadline: now
                + (ramp_s * 1e9) as u64
                + plan.connect_timeout.as_nanos() as u64
                + 1_000_000_000,
            start_ns: 0,
            end_ns: 0,
            drain_until: 0,
            duration_ns: plan.duration.as_nanos() as u64,
            grace_ns: plan.grace.as_nanos() as u64,
            pub_rate: if publishers > 0 {
                plan.rate / publishers as f64
            } else {
                0.0
            },
            // Direct: only the first of each pair sends requests.
            echo_rate: match plan.scenario {
                Scenario::Direct => plan.rate / (plan.conns / 2).max(1) as f64,
                _ if plan.conns > 0 => plan.rate / plan.conns as f64,
                _ => 0.0,
            },
            echo_conns: plan.conns,
            publishers,
            payload: plan.payload,
            rooms: vec![RoomStats::default(); rooms],
            counters: BTreeMap::new(),
            skipped: 0,
            open_at_end: 0,
            meter: Meter {
                total: hist::new_hist(),
                lag: hist::new_hist(),
                interval: hist::new_hist(),
                sent: 0,
                received: 0,
                sec_sent: 0,
                sec_received: 0,
                sec: now.saturating_sub(origin) / 1_000_000_000,
                origin,
                tx,
            },
            buf: Vec::with_capacity(256),
            setup_len,
            user_prefix: format!("lg{:x}", origin & 0xFF_FFFF),
            churn: None,
            churn_rate: share.churn_rate,
            churn_life_ns,
            churn_free,
            churn_closing: VecDeque::new(),
            churn_next: 0,
            setup_last_ready: None,
            due: BinaryHeap::new(),
            in_flight: 0,
        }
    }

    /// The user id a slot connects as (direct only; other scenarios connect anonymously).
    fn user_of(&self, tag: usize) -> Option<String> {
        match &self.slots[tag].kind {
            Kind::Echo {
                index,
                peer: Some(_),
                ..
            }
            | Kind::Bounce { index } => Some(format!("{}-{index}", self.user_prefix)),
            _ => None,
        }
    }

    fn count(&mut self, what: &str) {
        *self.counters.entry(what.to_string()).or_default() += 1;
    }

    /// A slot finished its setup (ready with its joins acked, or gone).
    fn settle(&mut self, tag: usize) {
        let s = &mut self.slots[tag];
        if !s.ready {
            s.ready = true;
            self.settled += 1;
        }
    }

    fn send_joins(&mut self, net: &mut Net, tag: usize) {
        let Some(id) = self.slots[tag].id else { return };
        let rooms: Vec<usize> = match &self.slots[tag].kind {
            Kind::Sub { room, .. } | Kind::Churn { room, .. } => vec![*room],
            Kind::Pub { rooms, .. } => rooms.clone(),
            _ => Vec::new(),
        };
        if !self.scenario.is_fanout() || self.adapter == Adapter::Raw || rooms.is_empty() {
            self.settle(tag);
            return;
        }
        self.slots[tag].pending_joins = rooms.len();
        for r in rooms {
            self.buf.clear();
            let _ = write!(self.buf, r#"{{"type":"join","room":"room-{r}","id":{r}}}"#);
            net.send_text(id, &self.buf);
        }
    }

    fn begin(&mut self, net: &mut Net, start: u64) {
        self.stage = Stage::Running;
        self.start_ns = start;
        self.end_ns = start + self.duration_ns;
        // Members are counted at the start: a subscriber that is gone by now owes nothing.
        for s in &self.slots {
            if let (
                Kind::Sub {
                    room, member: true, ..
                },
                false,
            ) = (&s.kind, s.gone)
            {
                self.rooms[*room].members += 1;
            }
        }
        let (pub_rate, echo_rate, pubs, conns, end) = (
            self.pub_rate,
            self.echo_rate,
            self.publishers.max(1),
            self.echo_conns.max(1),
            self.end_ns,
        );
        for s in &mut self.slots {
            match &mut s.kind {
                Kind::Pub { index, sched, .. } => {
                    *sched = Some(Schedule::new(
                        start,
                        pub_rate,
                        *index as f64 / pubs as f64,
                        end,
                    ));
                }
                Kind::Echo { index, sched, .. } if echo_rate > 0.0 => {
                    *sched = Some(Schedule::new(
                        start,
                        echo_rate,
                        *index as f64 / conns as f64,
                        end,
                    ));
                }
                _ => {}
            }
        }
        for (tag, s) in self.slots.iter().enumerate() {
            if let Kind::Pub {
                sched: Some(sc), ..
            }
            | Kind::Echo {
                sched: Some(sc), ..
            } = &s.kind
            {
                if let Some(t) = sc.next_at() {
                    self.due.push(Reverse((t, tag)));
                }
            }
        }
        if self.scenario == Scenario::Churn {
            self.churn = Some(Schedule::new(start, self.churn_rate, 0.0, end));
        }
        if self.scenario.is_round_trip() && echo_rate <= 0.0 {
            // Closed loop: every connection sends its first request at the start.
            for tag in 0..self.slots.len() {
                self.echo_send(net, tag, start, start);
            }
        }
    }

    /// Moves from `Waiting` to `Running` once the common start time has passed.
    fn maybe_begin(&mut self, net: &mut Net, now: u64) -> bool {
        if self.stage != Stage::Waiting {
            return false;
        }
        let start = self.coord.start_ns.load(Ordering::Acquire);
        if start != 0 && now >= start {
            self.begin(net, start);
            return true;
        }
        false
    }

    /// Sends one request due at `intended`; `now` is when it actually goes out.
    fn echo_send(&mut self, net: &mut Net, tag: usize, intended: u64, now: u64) {
        let (adapter, payload) = (self.adapter, self.payload);
        let s = &mut self.slots[tag];
        let Kind::Echo {
            index,
            peer,
            seq,
            outstanding,
            ..
        } = &mut s.kind
        else {
            return;
        };
        let Some(id) = s.id else {
            self.skipped += 1;
            return;
        };
        self.buf.clear();
        match (adapter, peer) {
            (Adapter::Hub, Some(peer)) => {
                let _ = write!(
                    self.buf,
                    r#"{{"type":"send","to":"{}-{peer}","data":{{"t":{intended},"s":{seq},"p":{index}"#,
                    self.user_prefix
                );
                pad(&mut self.buf, payload);
                self.buf.extend_from_slice(b"}}");
            }
            (Adapter::Hub, None) => {
                let _ = write!(self.buf, r#"{{"type":"ping","id":{seq}}}"#);
            }
            (Adapter::Raw, _) => {
                let _ = write!(self.buf, r#"{{"t":{intended},"s":{seq},"p":{index}"#);
                pad(&mut self.buf, payload);
                self.buf.push(b'}');
            }
        }
        if net.send_text(id, &self.buf) {
            outstanding.push_back((*seq, intended));
            self.in_flight += 1;
            *seq += 1;
            self.meter.sent += 1;
            if now > intended {
                hist::record_ns(&mut self.meter.lag, now - intended);
            }
        } else {
            self.skipped += 1;
        }
    }

    /// Sends everything due from one open-loop sender (publisher or echo client).
    fn send_due(&mut self, net: &mut Net, tag: usize, now: u64) {
        if matches!(self.slots[tag].kind, Kind::Echo { .. }) {
            loop {
                let due = match &mut self.slots[tag].kind {
                    Kind::Echo {
                        sched: Some(sc), ..
                    } => sc.take_due(now),
                    _ => None,
                };
                let Some((_, t)) = due else { break };
                self.echo_send(net, tag, t, now);
            }
            return;
        }
        let (adapter, payload) = (self.adapter, self.payload);
        {
            let s = &mut self.slots[tag];
            let Kind::Pub {
                index,
                rooms,
                seqs,
                next_room,
                sched: Some(sched),
            } = &mut s.kind
            else {
                return;
            };
            while let Some((_, t)) = sched.take_due(now) {
                let ri = *next_room % rooms.len();
                let (room, seq) = (rooms[ri], seqs[ri]);
                self.buf.clear();
                if adapter == Adapter::Hub {
                    let _ = write!(
                        self.buf,
                        r#"{{"type":"publish","room":"room-{room}","exclude_self":true,"data":"#
                    );
                }
                let _ = write!(self.buf, r#"{{"t":{t},"s":{seq},"p":{index}"#);
                pad(&mut self.buf, payload);
                self.buf.push(b'}');
                if adapter == Adapter::Hub {
                    self.buf.push(b'}');
                }
                let sent = s.id.is_some_and(|id| net.send_text(id, &self.buf));
                if sent {
                    *next_room += 1;
                    seqs[ri] += 1;
                    self.rooms[room].published += 1;
                    self.meter.sent += 1;
                    hist::record_ns(&mut self.meter.lag, now.saturating_sub(t));
                } else {
                    self.skipped += 1;
                }
            }
        }
    }

    fn next_send_at(&self) -> Option<u64> {
        self.due.peek().map(|r| r.0 .0)
    }

    /// Sends what is due from every sender whose time has come.
    fn send_all_due(&mut self, net: &mut Net, now: u64) {
        while let Some(&Reverse((t, tag))) = self.due.peek() {
            if t > now {
                break;
            }
            self.due.pop();
            self.send_due(net, tag, now);
            let next = match &self.slots[tag].kind {
                Kind::Pub {
                    sched: Some(sc), ..
                }
                | Kind::Echo {
                    sched: Some(sc), ..
                } => sc.next_at(),
                _ => None,
            };
            if let Some(n) = next {
                self.due.push(Reverse((n, tag)));
            }
        }
    }

    fn on_probe(&mut self, tag: usize, probe: Probe, now: u64) {
        let Kind::Sub {
            room,
            member,
            trackers,
        } = &mut self.slots[tag].kind
        else {
            // Publishers hear their own messages in raw mode: not a delivery we count.
            return;
        };
        if !*member || self.stage < Stage::Running {
            self.count("deliveries_outside_measurement");
            return;
        }
        let Some(tr) = trackers.get_mut(probe.p) else {
            self.count("unknown_publisher");
            return;
        };
        self.meter.received += 1;
        let room = *room;
        match tr.observe(probe.s) {
            Seen::New => {
                self.rooms[room].unique += 1;
                self.meter.record(now.saturating_sub(probe.t));
            }
            Seen::Duplicate => self.rooms[room].duplicates += 1,
        }
    }

    fn on_echo(&mut self, net: &mut Net, tag: usize, seq: u64, now: u64) {
        let Kind::Echo {
            outstanding, sched, ..
        } = &mut self.slots[tag].kind
        else {
            return;
        };
        let closed_loop = sched.is_none();
        let mut lost = 0;
        let mut hit = None;
        while let Some(&(s, t)) = outstanding.front() {
            if s > seq {
                break;
            }
            outstanding.pop_front();
            self.in_flight -= 1;
            if s == seq {
                hit = Some(t);
                break;
            }
            // The server answers in order; an older request passed over was dropped.
            lost += 1;
        }
        if lost > 0 {
            *self.counters.entry("replies_missing".into()).or_default() += lost;
        }
        let Some(t) = hit else {
            self.count("echo_unmatched");
            return;
        };
        self.meter.received += 1;
        self.meter.record(now.saturating_sub(t));
        if closed_loop && self.stage == Stage::Running && now < self.end_ns {
            self.echo_send(net, tag, now, now);
        }
    }

    /// Direct responder: send the probe back to the user it came from.
    fn bounce(&mut self, net: &mut Net, id: ConnId, p: Probe) {
        if self.stage < Stage::Running {
            return;
        }
        self.buf.clear();
        let _ = write!(
            self.buf,
            r#"{{"type":"send","to":"{}-{}","data":{{"t":{},"s":{},"p":{},"r":1"#,
            self.user_prefix, p.p, p.t, p.s, p.p
        );
        pad(&mut self.buf, self.payload);
        self.buf.extend_from_slice(b"}}");
        if net.send_text(id, &self.buf) {
            self.count("direct_bounced");
        }
    }

    /// A churn connection got its greeting: schedule its close.
    fn churn_ready(&mut self, id: ConnId, tag: usize, now: u64) {
        if matches!(self.slots[tag].kind, Kind::Churn { .. }) {
            self.churn_closing
                .push_back((now + self.churn_life_ns, tag, id));
        }
    }

    /// Starts due churn connections and closes those whose life is over.
    fn churn_tick(&mut self, net: &mut Net, now: u64) {
        while let Some(&(t, tag, id)) = self.churn_closing.front() {
            if t > now {
                break;
            }
            self.churn_closing.pop_front();
            // Only if the slot still holds that connection (it may have failed and been reused).
            if self.slots[tag].id == Some(id) {
                net.close(id, now);
            }
        }
        let rooms = self.rooms.len().max(1);
        while let Some(sched) = self.churn.as_mut() {
            if sched.take_due(now).is_none() {
                break;
            }
            let Some(tag) = self.churn_free.pop() else {
                self.count("churn_no_free_slot");
                continue;
            };
            let room = self.churn_next % rooms;
            self.churn_next += 1;
            let s = &mut self.slots[tag];
            s.kind = Kind::Churn { room, in_use: true };
            s.welcomed = false;
            s.pending_joins = 0;
            s.ready = true; // not part of setup accounting
            s.gone = false;
            s.id = net.open(tag, now, None);
            self.count("churn_started");
        }
    }

    fn into_summary(self, plan: &Plan, net: &Net) -> RunSummary {
        let st = &net.stats;
        let failed: u64 = st.failures.values().sum();
        let has_traffic = self.scenario != Scenario::Connect;
        let mut rooms = self.rooms;
        let (expected, unique) = if self.scenario.is_round_trip() {
            (self.meter.sent, self.meter.received)
        } else {
            (0, 0)
        };
        if self.scenario.is_round_trip() {
            rooms.clear();
        }
        RunSummary {
            version: FORMAT_VERSION,
            scenario: plan.scenario.name().into(),
            label: plan.label.clone(),
            url: plan.target.url.clone(),
            adapter: plan.adapter.name().into(),
            params: plan.params(),
            started_unix_ms: 0,
            measured_s: plan.duration.as_secs_f64(),
            connections: Connections {
                target: self.slots.len() as u64,
                attempted: st.attempted,
                established: st.established,
                failed,
                failures: st.failures.clone(),
                open_at_end: self.open_at_end,
                connect_rate_per_s: 0.0,
                first_start_ns: st.first_start_ns,
                last_ready_ns: self.setup_last_ready,
            },
            handshake: Latency::from_hist(&st.handshake),
            latency: has_traffic.then(|| Latency::from_hist(&self.meter.total)),
            send_lag: (has_traffic && !self.meter.lag.is_empty())
                .then(|| Latency::from_hist(&self.meter.lag)),
            traffic: has_traffic.then(|| Traffic {
                sent: self.meter.sent,
                skipped: self.skipped,
                received: self.meter.received,
                expected,
                unique,
                rooms,
                counters: self.counters,
                ..Traffic::default()
            }),
            timeline: Vec::new(),
        }
    }
}

/// Which frame [`fast_probe`] recognized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastKind {
    /// `{"type":"message",...,"data":{probe}}` (hub room delivery).
    Message,
    /// `{"type":"direct",...,"data":{probe}}` (hub direct message).
    Direct,
    /// `{probe}` (raw adapter).
    Raw,
}

/// Reads a probe from a frame laid out exactly as shardhub forwards what this tool publishes:
/// the `data` object last, with `t`, `s`, `p` first in that order. `None` for any other layout,
/// which then goes through the JSON parser; this is a shortcut, never a different reading.
fn fast_probe(msg: &[u8]) -> Option<(FastKind, Probe)> {
    const DATA: &[u8] = br#","data":{"t":"#;
    let (kind, body, closing) = if let Some(rest) = msg.strip_prefix(br#"{"t":"#) {
        (FastKind::Raw, rest, 1)
    } else {
        let kind = if msg.starts_with(br#"{"type":"message","#) {
            FastKind::Message
        } else if msg.starts_with(br#"{"type":"direct","#) {
            FastKind::Direct
        } else {
            return None;
        };
        let at = (0..msg.len().checked_sub(DATA.len())?)
            .rev()
            .find(|&i| msg[i..].starts_with(DATA))?;
        (kind, &msg[at + DATA.len()..], 2)
    };
    let (t, rest) = leading_u64(body)?;
    let (s, rest) = leading_u64(rest.strip_prefix(br#","s":"#)?)?;
    let (p, rest) = leading_u64(rest.strip_prefix(br#","p":"#)?)?;
    // What may follow: our padding field (`,"x":"aaa"`), a bounce marker, then the closing
    // braces and nothing else.
    let tail_ok = rest.len() >= closing
        && rest[rest.len() - closing..].iter().all(|&b| b == b'}')
        && !rest[..rest.len() - closing].contains(&b'}');
    if !tail_ok {
        return None;
    }
    Some((
        kind,
        Probe {
            t,
            s,
            p: usize::try_from(p).ok()?,
        },
    ))
}

/// A decimal u64 at the start of `b`, and what follows it.
fn leading_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &b[..n] {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some((v, &b[n..]))
}

/// Appends `,"x":"aaa..."` with `n` padding bytes (payload size control).
fn pad(buf: &mut Vec<u8>, n: usize) {
    if n > 0 {
        buf.extend_from_slice(br#","x":""#);
        buf.resize(buf.len() + n, b'a');
        buf.push(b'"');
    }
}

impl Handler for Runner {
    fn on_upgraded(&mut self, net: &mut Net, id: ConnId, tag: usize, now: u64) {
        if self.adapter == Adapter::Raw {
            net.mark_ready(id, now);
            self.slots[tag].welcomed = true;
            if let Kind::Sub { member, .. } = &mut self.slots[tag].kind {
                *member = true;
            }
            self.send_joins(net, tag);
            self.churn_ready(id, tag, now);
        }
    }

    fn on_text(&mut self, net: &mut Net, id: ConnId, tag: usize, msg: &[u8], now: u64) {
        // Another thread's (or process's) publisher may already be past the common start while
        // this thread has not ticked since: start here too, so its first deliveries count.
        self.maybe_begin(net, now);
        // Deliveries are nearly all the traffic; read them without a JSON parser when they have
        // exactly the layout this tool sends and shardhub forwards (anything else falls through).
        if let Some((kind, p)) = fast_probe(msg) {
            match (kind, &self.slots[tag].kind) {
                (FastKind::Message, _) | (FastKind::Raw, Kind::Sub { .. }) => {
                    return self.on_probe(tag, p, now)
                }
                (FastKind::Raw, Kind::Echo { .. }) | (FastKind::Direct, Kind::Echo { .. }) => {
                    return self.on_echo(net, tag, p.s, now)
                }
                (FastKind::Direct, Kind::Bounce { .. }) => return self.bounce(net, id, p),
                _ => {}
            }
        }
        let Ok(m) = serde_json::from_slice::<Inbound<'_>>(msg) else {
            self.count("unparsed_frames");
            return;
        };
        if self.adapter == Adapter::Raw {
            match (self.scenario, m.probe()) {
                (Scenario::Connect, _) => {}
                (sc, Some(p)) if sc.is_fanout() => self.on_probe(tag, p, now),
                (_, Some(p)) => self.on_echo(net, tag, p.s, now),
                _ => self.count("unparsed_frames"),
            }
            return;
        }
        match m.ty.as_deref() {
            Some("welcome") if !self.slots[tag].welcomed => {
                self.slots[tag].welcomed = true;
                net.mark_ready(id, now);
                self.send_joins(net, tag);
                self.churn_ready(id, tag, now);
            }
            Some("direct") => match (m.probe(), &self.slots[tag].kind) {
                (Some(p), Kind::Bounce { .. }) => self.bounce(net, id, p),
                (Some(p), Kind::Echo { .. }) => self.on_echo(net, tag, p.s, now),
                _ => self.count("foreign_messages"),
            },
            Some("ack") if m.op.as_deref() == Some("join") => {
                let s = &mut self.slots[tag];
                if s.pending_joins > 0 {
                    s.pending_joins -= 1;
                    if let Kind::Sub { member, .. } = &mut s.kind {
                        *member = true;
                    }
                    if s.pending_joins == 0 {
                        self.settle(tag);
                    }
                }
            }
            Some("error") => {
                let code = m.code.as_deref().unwrap_or("unknown").to_string();
                self.count(&format!("server_error_{code}"));
                let s = &mut self.slots[tag];
                if s.pending_joins > 0 {
                    s.pending_joins -= 1;
                    if s.pending_joins == 0 {
                        self.settle(tag);
                    }
                }
            }
            Some("message") => match m.probe() {
                Some(p) => self.on_probe(tag, p, now),
                None => self.count("foreign_messages"),
            },
            Some("pong") => match m.id {
                Some(seq) => self.on_echo(net, tag, seq, now),
                None => self.count("echo_unmatched"),
            },
            _ => {}
        }
    }

    fn on_closed(&mut self, _net: &mut Net, tag: usize, failure: Option<&Failure>, _now: u64) {
        let Some(s) = self.slots.get_mut(tag) else {
            return;
        };
        s.id = None;
        if let Kind::Churn { in_use, .. } = &mut s.kind {
            if *in_use {
                *in_use = false;
                self.churn_free.push(tag);
                if failure.is_none() {
                    self.count("churn_completed");
                }
            }
            return;
        }
        if let Kind::Echo { outstanding, .. } = &mut s.kind {
            // Its requests will never be answered: no longer in flight (still counted lost).
            self.in_flight -= outstanding.len();
            outstanding.clear();
        }
        if failure.is_some() && !s.gone {
            s.gone = true;
            if !s.ready {
                s.ready = true;
                self.settled += 1;
            }
        }
    }

    fn tick(&mut self, net: &mut Net, now: u64) -> Option<u64> {
        self.meter.sample(now, net.stats.open);
        let next_sec = self.meter.origin + (self.meter.sec + 1) * 1_000_000_000;
        match self.stage {
            Stage::Setup => {
                let all_at_once = self.ramp.next_at().is_none();
                while self.opened < self.setup_len {
                    if !all_at_once && self.ramp.take_due(now).is_none() {
                        break;
                    }
                    let tag = self.opened;
                    self.opened += 1;
                    let user = self.user_of(tag);
                    self.slots[tag].id = net.open(tag, now, user.as_deref());
                }
                if self.opened == self.setup_len && self.settled == self.setup_len
                    || now >= self.setup_deadline
                {
                    self.coord.ready.fetch_add(1, Ordering::AcqRel);
                    self.stage = Stage::Waiting;
                    // The achieved connect rate is the setup ramp's; churn comes later.
                    self.setup_last_ready = net.stats.last_ready_ns;
                }
                let next_open = if self.opened < self.slots.len() {
                    self.ramp.next_at()
                } else {
                    None
                };
                Some(next_open.unwrap_or(u64::MAX).min(next_sec))
            }
            Stage::Waiting => {
                if self.maybe_begin(net, now) {
                    return Some(now);
                }
                // Poll the shared start time often; this stage lasts only until all are ready.
                Some(now + 2_000_000)
            }
            Stage::Running => {
                if self.scenario == Scenario::Churn {
                    self.churn_tick(net, now);
                }
                self.send_all_due(net, now);
                if now >= self.end_ns {
                    self.open_at_end = net.stats.open;
                    if self.scenario == Scenario::Connect {
                        self.stage = Stage::Done;
                        return None;
                    }
                    self.stage = Stage::Draining;
                    self.drain_until = now + self.grace_ns;
                    return Some(now);
                }
                let churn_next = self
                    .churn
                    .as_ref()
                    .and_then(Schedule::next_at)
                    .unwrap_or(u64::MAX);
                let churn_close = self.churn_closing.front().map_or(u64::MAX, |c| c.0);
                Some(
                    self.next_send_at()
                        .unwrap_or(u64::MAX)
                        .min(churn_next)
                        .min(churn_close)
                        .min(self.end_ns)
                        .min(next_sec),
                )
            }
            Stage::Draining => {
                let echo_done = self.scenario.is_round_trip() && self.in_flight == 0;
                if now >= self.drain_until || echo_done {
                    self.meter.sample(now + 1_000_000_000, net.stats.open);
                    self.stage = Stage::Done;
                    return None;
                }
                Some(self.drain_until.min(next_sec))
            }
            Stage::Done => None,
        }
    }
}

/// Runs a plan in this process (with `plan.threads` threads) and returns the merged summary.
pub fn run(plan: &Plan, gate: Gate) -> Result<RunSummary, RunError> {
    plan.validate()?;
    // Best effort: without it the run may still fit the soft limit, and failures will say
    // `too_many_files` if not.
    let _ = crate::sys::raise_nofile_limit();
    let origin = plan.origin_ns.unwrap_or_else(monotonic_ns);
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let deadline = monotonic_ns() + plan.timeout.as_nanos() as u64;
    let coord = Arc::new(Coord::default());
    let (tx, rx) = mpsc::channel::<Sample>();
    let mut handles = Vec::new();
    for t in 0..plan.threads {
        let share = plan.thread_share(t);
        let (plan, coord, tx) = (plan.clone(), coord.clone(), tx.clone());
        let seed = monotonic_ns() ^ ((t as u64 + 1) << 48) ^ ((plan.part.0 as u64) << 40);
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || -> Result<RunSummary, RunError> {
                let mut net = Net::new(
                    plan.target.clone(),
                    plan.sources.clone(),
                    plan.connect_timeout,
                    seed,
                )?;
                let mut runner = Runner::new(&plan, &share, coord, tx, origin, monotonic_ns());
                drive(&mut net, &mut runner, deadline)?;
                let open_at_end = runner.open_at_end;
                let mut s = runner.into_summary(&plan, &net);
                s.connections.open_at_end = open_at_end;
                Ok(s)
            })?;
        handles.push(h);
    }
    drop(tx);
    let mut timeline: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
    let mut gate_done = false;
    let progress = Progress::new(plan.progress);
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(s) => {
                let t = s.t_s;
                timeline.entry(t).or_default().push(s);
                if timeline.get(&t).is_some_and(|v| v.len() == plan.threads) {
                    progress.show(t, &timeline[&t]);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !gate_done && coord.ready.load(Ordering::Acquire) == plan.threads {
            gate_done = true;
            let start = match gate {
                Gate::Local => monotonic_ns() + START_DELAY_NS,
                Gate::Stdio => stdio_gate()?,
            };
            coord.start_ns.store(start, Ordering::Release);
        }
    }
    progress.finish();
    let mut parts = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => parts.push(r?),
            Err(_) => return Err(RunError::Worker("a worker thread panicked".into())),
        }
    }
    // Per-second samples become part of the first thread's summary so that the merge combines
    // them like any other part.
    if let Some(first) = parts.first_mut() {
        first.timeline = timeline.into_values().flatten().collect();
    }
    let mut out = RunSummary::merge(parts)?;
    out.started_unix_ms = started_unix_ms;
    out.connections.target = plan.total_conns() as u64 / plan.part.1 as u64;
    if plan.part.1 == 1 {
        out.connections.target = plan.total_conns() as u64;
    }
    Ok(out)
}

/// Worker-process side of the start barrier.
fn stdio_gate() -> Result<u64, RunError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY")?;
    out.flush()?;
    drop(out);
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    // A parent that went away (EOF) or sent garbage: start now rather than hang.
    Ok(line
        .trim()
        .strip_prefix("GO ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| monotonic_ns() + START_DELAY_NS))
}

/// The live progress line on stderr (only when asked, i.e. when stderr is a terminal).
struct Progress {
    on: bool,
    last_conns: std::cell::Cell<u64>,
}

impl Progress {
    fn new(on: bool) -> Self {
        Self {
            on,
            last_conns: std::cell::Cell::new(0),
        }
    }

    fn show(&self, t: u64, samples: &[Sample]) {
        if !self.on {
            return;
        }
        let conns: u64 = samples.iter().map(|s| s.conns).sum();
        let new_conns = conns as i64 - self.last_conns.replace(conns) as i64;
        let sent: u64 = samples.iter().map(|s| s.sent).sum();
        let recv: u64 = samples.iter().map(|s| s.received).sum();
        let mut h = hist::new_hist();
        for s in samples {
            if let Ok(x) = hist::decode(&s.hist) {
                hist::merge(&mut h, &x);
            }
        }
        let p99 = if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(0.99) as f64 / 1_000.0
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K[{t:>4}s] conns {conns} ({new_conns:+}/s)  sent {sent}/s  recv {recv}/s  p99 {p99:.3} ms"
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.on {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_probe(msg: &[u8]) -> Option<(u64, u64, usize)> {
        let m: Inbound<'_> = serde_json::from_slice(msg).ok()?;
        m.probe().map(|p| (p.t, p.s, p.p))
    }

    #[test]
    fn fast_probe_agrees_with_the_parser_or_declines() {
        let cases: &[&[u8]] = &[
            br#"{"type":"message","room":"r","from":"a","session":"1","data":{"t":123,"s":4,"p":0}}"#,
            br#"{"type":"message","room":"r","from":"a","session":"1","data":{"t":1,"s":2,"p":3,"x":"aaaa"}}"#,
            br#"{"type":"direct","from":"lg1-0","session":"9","data":{"t":5,"s":6,"p":7,"r":1}}"#,
            br#"{"t":18446744073709551615,"s":0,"p":12}"#,
            br#"{"t":1,"s":2,"p":3,"x":"aa"}"#,
        ];
        for c in cases {
            let (_, p) = fast_probe(c).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(c)));
            assert_eq!(
                Some((p.t, p.s, p.p)),
                serde_probe(c),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        let declined: &[&[u8]] = &[
            br#"{"type":"message","room":"r","data":{"s":4,"t":123,"p":0}}"#,
            br#"{"type":"message","room":"r","data":{"t":123,"s":4,"p":0},"extra":1}"#,
            br#"{"type":"message","room":"r","data":{"t":-1,"s":4,"p":0}}"#,
            br#"{"type":"message","room":"r","data":{"t":99999999999999999999999,"s":4,"p":0}}"#,
            br#"{"type":"ack","id":1}"#,
            br#"{"t":1,"s":2}"#,
            b"",
        ];
        for c in declined {
            assert!(fast_probe(c).is_none(), "{}", String::from_utf8_lossy(c));
        }
        assert_eq!(fast_probe(cases[2]).unwrap().0, FastKind::Direct);
        assert_eq!(fast_probe(cases[3]).unwrap().0, FastKind::Raw);
    }
}
