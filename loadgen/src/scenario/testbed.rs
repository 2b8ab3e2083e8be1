//! A runner's context without a runner, for testing workloads without sockets: a [`Wire`] that
//! records what is sent, opened and closed, and a tally. Tests only.

use std::sync::mpsc;

use crate::net::ConnId;
use crate::plan::{Adapter, Plan, Scenario};
use crate::report::Sample;

use super::runner::{Ctx, Link, Stage, Wire};
use super::tally::Tally;
use crate::target::{Target, Targets};

/// Records what a workload does to its connections; every connection it holds accepts.
#[derive(Default)]
pub(crate) struct Recorder {
    /// (tag, message) of every text sent.
    pub(crate) sent: Vec<(usize, String)>,
    /// Tags opened.
    pub(crate) opened: Vec<usize>,
    /// The URL (index) of each of `opened`.
    pub(crate) opened_to: Vec<usize>,
    /// Tags closed.
    pub(crate) closed: Vec<usize>,
}

impl Wire for Recorder {
    fn open(&mut self, tag: usize, _now: u64, _user: Option<&str>, url: usize) -> Option<ConnId> {
        self.opened.push(tag);
        self.opened_to.push(url);
        Some(ConnId::for_test(tag))
    }
    fn send_text(&mut self, id: ConnId, msg: &[u8]) -> bool {
        let text = String::from_utf8_lossy(msg).into_owned();
        self.sent.push((id.key_for_test(), text));
        true
    }
    fn close(&mut self, id: ConnId, _now: u64) {
        self.closed.push(id.key_for_test());
    }
}

pub(crate) struct Bed {
    pub(crate) wire: Recorder,
    links: Vec<Link>,
    pub(crate) tally: Tally,
    pub(crate) stage: Stage,
    pub(crate) end_ns: u64,
    /// The protocol the context frames messages for.
    pub(crate) adapter: Adapter,
    scratch: Vec<u8>,
    _samples: mpsc::Receiver<Sample>,
}

impl Bed {
    /// A bed for `conns` tags, none connected, in `Setup`, with no end time yet.
    pub(crate) fn new(conns: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            wire: Recorder::default(),
            links: vec![Link::default(); conns],
            tally: Tally::new(tx, 0, 0),
            stage: Stage::Setup,
            end_ns: u64::MAX,
            adapter: Adapter::Hub,
            scratch: Vec::new(),
            _samples: rx,
        }
    }

    /// Gives `tags` a connection each.
    pub(crate) fn connect(&mut self, tags: std::ops::Range<usize>) {
        for tag in tags {
            self.links[tag].id = Some(ConnId::for_test(tag));
        }
    }

    /// Takes `tag`'s connection away, as the runner does when it closes.
    pub(crate) fn disconnect(&mut self, tag: usize) {
        self.links[tag].id = None;
    }

    /// The context at `now`.
    pub(crate) fn ctx(&mut self, now: u64) -> Ctx<'_> {
        Ctx {
            net: &mut self.wire,
            links: &mut self.links,
            tally: &mut self.tally,
            now,
            stage: self.stage,
            end_ns: self.end_ns,
            adapter: self.adapter,
            scratch: &mut self.scratch,
        }
    }
}

/// A plan of `scenario` with the defaults, aimed at a loopback port nothing listens on.
pub(crate) fn plan(scenario: Scenario) -> Plan {
    Plan::new(
        scenario,
        Target::parse("ws://127.0.0.1:1/ws").expect("loopback url"),
    )
}

/// [`plan`] spread over `n` URLs (ports 1..=n), publishers on `publisher` if given.
pub(crate) fn plan_over(scenario: Scenario, n: u16, publisher: Option<&str>) -> Plan {
    let urls: Vec<String> = (1..=n).map(|p| format!("ws://127.0.0.1:{p}/ws")).collect();
    let mut p = plan(scenario);
    p.targets = Targets::parse(&urls, publisher).expect("loopback urls");
    p
}
