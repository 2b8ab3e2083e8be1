//! The scenarios: one module each, every one a [`Workload`] driven by the same [`Runner`], one
//! runner per thread, coordinated by [`run`].
//!
//! Every part goes through the same stages: `Setup` (ramp connections at the intended rate, wait
//! for each greeting and join ack), `Waiting` (this part is ready; all parts start together at a
//! time chosen once everyone is ready, so no publish goes to a room still filling), `Running`
//! (hold, publish or request for the duration), `Draining` (bounded grace for replies in flight),
//! then done. Setup is bounded by the ramp time plus the connect timeout; the whole run by
//! `--timeout`.
//!
//! Who owns what:
//! * [`runner`]: the stages, the setup ramp, greetings and join acks, reading frames, the
//!   per-thread summary: everything every scenario needs.
//! * [`coord`]: the threads of one process, their common start ([`Coord`], [`Gate`]), the
//!   per-second samples and the merge.
//! * [`tally`], [`open_loop`], [`probe`]: what scenarios count, open-loop send schedules, and
//!   the probe payload's encoding.
//! * [`connect`], [`fanout`], [`echo`], [`direct`], [`churn`], [`recover`]: what each
//!   scenario's connections do and count (`echo` and `direct` share the round-trip workload,
//!   `direct` adding the peers that bounce; `churn` wraps a fan-out; `recover` is a reconnect
//!   storm into a room with history). [`maxrate`] is a search over fanout runs.

pub mod churn;
pub mod connect;
pub mod coord;
pub mod direct;
pub mod echo;
pub mod fanout;
pub mod maxrate;
pub mod open_loop;
pub mod probe;
pub mod recover;
pub mod runner;
pub mod tally;
#[cfg(test)]
mod testbed;

pub use coord::{run, Coord, Gate};
pub use runner::{Ctx, Runner};

use crate::net::Failure;
use crate::plan::{Plan, Scenario, Share};
use crate::report::Traffic;

use probe::Probe;
use tally::Tally;

/// A frame of a scenario's traffic, as the runner read it. Greetings, join acks and errors are
/// the runner's; everything a scenario measures comes as one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A bare probe: what a raw echo or broadcast server sends back.
    Raw(Probe),
    /// A hub room delivery (`message`) carrying a probe, with the room's stream position when
    /// the room keeps history.
    Message(Probe, Option<u64>),
    /// A hub direct message (`direct`) carrying a probe.
    Direct(Probe),
    /// A hub `pong` answering the request with this id.
    Pong(u64),
}

/// What one scenario's connections do on one thread. Connections are named by tag: setup ones
/// are `0..setup_conns()`, opened by the runner at the ramp rate to the URL the workload names
/// ([`Workload::url`]); extra ones follow, opened by the workload itself ([`Ctx::open_extra`]). Every method runs on the thread's loop, between
/// polls, and must not block.
pub trait Workload {
    /// Connections the runner opens during setup.
    fn setup_conns(&self) -> usize;

    /// Connections the workload opens itself later (tags after the setup ones).
    fn extra_conns(&self) -> usize {
        0
    }

    /// The user id connection `tag` connects as (`None`: anonymous).
    fn user(&self, _tag: usize) -> Option<String> {
        None
    }

    /// The URL setup connection `tag` connects to: an index in the plan's
    /// [`crate::target::Targets`], chosen by its rule.
    fn url(&self, _tag: usize) -> usize {
        0
    }

    /// Connection `tag` is ready (upgraded, and greeted in hub mode). Sends its room joins and
    /// returns how many; its setup is done once each is answered.
    fn on_ready(&mut self, _ctx: &mut Ctx<'_>, _tag: usize) -> usize {
        0
    }

    /// One of `tag`'s joins was acked: it is a member from now on.
    fn on_joined(&mut self, _tag: usize) {}

    /// The ack of one of `tag`'s joins, with the room's stream position (rooms with history),
    /// just before [`Workload::on_joined`]; for workloads that follow positions (`recover`).
    fn on_join_ack(&mut self, _ctx: &mut Ctx<'_>, _tag: usize, _ack: &JoinAck) {}

    /// The common start: sending begins at `start` and ends before `end`.
    fn begin(&mut self, _ctx: &mut Ctx<'_>, _start: u64, _end: u64) {}

    /// While running: sends what is due. Returns the next time it has something to do.
    fn tick(&mut self, _ctx: &mut Ctx<'_>) -> Option<u64> {
        None
    }

    /// A frame of traffic arrived on `tag`.
    fn on_frame(&mut self, ctx: &mut Ctx<'_>, tag: usize, frame: Frame);

    /// Connection `tag` ended: `None` after a clean close, otherwise the failure.
    fn on_closed(&mut self, _ctx: &mut Ctx<'_>, _tag: usize, _failure: Option<&Failure>) {}

    /// Whether it sends and receives messages. One that does not (connect) ends with the
    /// measurement, and its summary has no latency or traffic.
    fn has_traffic(&self) -> bool {
        true
    }

    /// Whether nothing is owed any more, so draining can end before the grace period does
    /// (request/response scenarios; a fan-out cannot know).
    fn all_answered(&self) -> bool {
        false
    }

    /// Whether the measurement is complete before `--duration` is over (a `recover` storm whose
    /// clients have all recovered or failed): the run then moves on to draining at once.
    fn finished(&self) -> bool {
        false
    }

    /// Fills the scenario's own part of the traffic summary (rooms, expected, unique).
    fn account(&self, _tally: &Tally, _traffic: &mut Traffic) {}
}

/// What a `join` ack says about the room's stream (docs/protocol.md, "History and recovery").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinAck {
    /// Where the member starts from: the last offset it has (been replayed), if the room keeps
    /// history.
    pub offset: Option<u64>,
    /// The stream's epoch, if the room keeps history.
    pub epoch: Option<String>,
    /// The answer to a `recover`, if the join carried one.
    pub recovered: Option<bool>,
}

/// Counter of direct messages that arrived where none was expected (or without a probe).
pub const FOREIGN: &str = "foreign_messages";

/// The workload of `plan`'s scenario for one thread's `share`; `origin` is the run's monotonic
/// origin, which also makes user ids unique per run.
pub fn workload(plan: &Plan, share: &Share, origin: u64) -> Box<dyn Workload> {
    match plan.scenario {
        Scenario::Connect => Box::new(connect::Connect::new(plan, share)),
        Scenario::Fanout => Box::new(fanout::Fanout::new(plan, share)),
        Scenario::Echo => Box::new(echo::RoundTrip::echo(plan, share)),
        Scenario::Direct => Box::new(direct::pairs(plan, share, origin)),
        Scenario::Churn => Box::new(churn::Churn::new(plan, share)),
        Scenario::Recover => Box::new(recover::Recover::new(plan, share)),
    }
}
