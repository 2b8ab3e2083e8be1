//! What to run: the validated [`Plan`] of a scenario, and how it splits into parts (processes ×
//! threads) that each own a contiguous share of the connections and of the send rate.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::ConfigError;
use crate::report::Params;
use crate::schedule::share;
use crate::target::{Target, Targets};

/// The scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Ramp up connections, hold them, measure handshakes.
    Connect,
    /// Subscribers in rooms, open-loop publishers, end-to-end delivery latency.
    Fanout,
    /// Request/response round trips.
    Echo,
    /// Pairs of users bouncing `send` messages (hub only): round-trip latency through routing.
    Direct,
    /// A fanout measured while extra connections connect, join and disconnect at a rate.
    Churn,
    /// Members of a room with history leave together, miss publications, and reconnect at once
    /// with `recover` (or plainly rejoin): time until each, and all, have recovered.
    Recover,
}

impl Scenario {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Fanout => "fanout",
            Self::Echo => "echo",
            Self::Direct => "direct",
            Self::Churn => "churn",
            Self::Recover => "recover",
        }
    }

    /// Fanout-shaped: subscribers, rooms, publishers, deliveries.
    pub fn is_fanout(self) -> bool {
        matches!(self, Self::Fanout | Self::Churn)
    }

    /// Round-trip-shaped: requests and their answers.
    pub fn is_round_trip(self) -> bool {
        matches!(self, Self::Echo | Self::Direct)
    }
}

/// Which server protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// shardhub's JSON protocol (docs/protocol.md): welcome, join, publish, ping.
    Hub,
    /// A plain server: ready at the 101; echo servers echo text, broadcast servers send every
    /// text to every client (one implicit room).
    Raw,
    /// A Socket.IO server over Engine.IO v4 WebSocket ([`crate::sio`]): ready once its CONNECT
    /// is acknowledged; the measured messages travel as `msg` events, and the server sends
    /// every one to every client like a raw broadcast server (one implicit room).
    SocketIo,
}

impl Adapter {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hub => "hub",
            Self::Raw => "raw",
            Self::SocketIo => "socketio",
        }
    }

    /// Whether the server has no rooms of its own: every client gets every message (raw and
    /// Socket.IO broadcast servers), so there are no joins and one implicit room.
    pub fn one_room(self) -> bool {
        matches!(self, Self::Raw | Self::SocketIo)
    }
}

/// A validated run request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What to run.
    pub scenario: Scenario,
    /// Protocol spoken.
    pub adapter: Adapter,
    /// Where to connect: every URL, and which connection goes to which ([`Targets`]).
    pub targets: Targets,
    /// Connections (connect, echo) or subscribers (fanout).
    pub conns: usize,
    /// New connections per second, all parts together; 0 opens them all at once.
    pub connect_rate: f64,
    /// Hold time (connect) or measurement time (fanout, echo).
    pub duration: Duration,
    /// Rooms (fanout, hub adapter; the raw adapter has one implicit room).
    pub rooms: usize,
    /// Publisher connections (fanout).
    pub publishers: usize,
    /// Publishes/s in total (fanout) or requests/s in total (echo; 0 = closed loop).
    pub rate: f64,
    /// Padding bytes added to each probe payload.
    pub payload: usize,
    /// Fanout: publishers send `broadcast` (every session but their own) instead of publishing
    /// to a room; every subscriber counts as receiving each one (hub adapter, one room).
    pub broadcast: bool,
    /// Threads in this process, each with its own poller.
    pub threads: usize,
    /// Loopback source addresses to bind, round-robin (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// Connect + upgrade + greeting (+ joins) must finish within this.
    pub connect_timeout: Duration,
    /// After the measurement, how long to wait for deliveries still in flight.
    pub grace: Duration,
    /// Upper bound on the whole run; every loop stops by then.
    pub timeout: Duration,
    /// Print a live progress line on stderr.
    pub progress: bool,
    /// Free label for reports.
    pub label: Option<String>,
    /// Churn: extra connections started per second, all parts together.
    pub churn_rate: f64,
    /// Churn: how long each extra connection lives after its greeting.
    pub churn_life: Duration,
    /// Recover: the storm's own settings.
    pub storm: Storm,
    /// This process's share when run as a worker: (index, count). (0, 1) otherwise.
    pub part: (usize, usize),
    /// Monotonic origin of the run's timeline (set by the parent of worker processes).
    pub origin_ns: Option<u64>,
}

impl Plan {
    /// A plan with defaults for everything but the scenario and target (one URL; set
    /// [`Plan::targets`] for several).
    pub fn new(scenario: Scenario, target: Target) -> Self {
        Self {
            scenario,
            adapter: Adapter::Hub,
            targets: Targets::single(target),
            conns: 100,
            connect_rate: 1_000.0,
            duration: Duration::from_secs(10),
            rooms: 10,
            publishers: 1,
            rate: 100.0,
            payload: 0,
            broadcast: false,
            threads: 1,
            sources: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(2),
            timeout: Duration::from_secs(40),
            progress: false,
            label: None,
            churn_rate: 0.0,
            churn_life: Duration::from_secs(1),
            storm: Storm::default(),
            part: (0, 1),
            origin_ns: None,
        }
    }

    /// Checks option combinations; call before running.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError::Invalid(s.to_string()));
        if self.threads == 0 || self.threads > 256 {
            return bad("--threads must be 1..=256");
        }
        if self.part.1 == 0 || self.part.0 >= self.part.1 {
            return bad("worker part index out of range");
        }
        if !(self.connect_rate >= 0.0 && self.connect_rate.is_finite()) {
            return bad("--rate of connections must be a finite number >= 0");
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return bad("the send rate must be a finite number >= 0");
        }
        if self.payload > 1 << 20 {
            return bad("--payload is capped at 1 MiB");
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be > 0");
        }
        match self.scenario {
            Scenario::Fanout | Scenario::Churn => {
                if self.publishers == 0 {
                    return bad("fanout needs at least one publisher");
                }
                if self.adapter == Adapter::Hub && self.rooms == 0 {
                    return bad("fanout needs at least one room");
                }
                if self.rate <= 0.0 {
                    return bad("fanout needs a publish --rate > 0 (it is open loop)");
                }
                if self.broadcast && (self.adapter != Adapter::Hub || self.rooms != 1) {
                    return bad("--broadcast needs the hub adapter and --rooms 1");
                }
            }
            Scenario::Connect | Scenario::Echo | Scenario::Direct => {
                if self.conns == 0 {
                    return bad("--conns must be > 0");
                }
            }
            Scenario::Recover => {
                if self.conns == 0 {
                    return bad("--conns must be > 0");
                }
                if self.adapter != Adapter::Hub {
                    return bad("recover needs the hub adapter (rooms with history)");
                }
                let st = &self.storm;
                if st.missed == 0 {
                    return bad("recover needs --missed > 0 publications to miss");
                }
                if !(st.reconnect_rate >= 0.0 && st.reconnect_rate.is_finite()) {
                    return bad("--reconnect-rate must be a finite number >= 0");
                }
                if st.offline.is_zero() {
                    return bad("--offline must be > 0");
                }
                if self.duration <= st.offline {
                    return bad("--duration must be longer than --offline (it includes it)");
                }
            }
        }
        if self.scenario == Scenario::Direct {
            if self.adapter != Adapter::Hub {
                return bad("direct needs the hub adapter (it routes `send` by user id)");
            }
            if self.conns < 2 || self.conns % 2 != 0 {
                return bad("direct needs an even --conns >= 2 (pairs of users)");
            }
        }
        if self.scenario == Scenario::Churn {
            if !(self.churn_rate > 0.0 && self.churn_rate.is_finite()) {
                return bad("churn needs --churn-rate > 0");
            }
            if self.churn_life.is_zero() {
                return bad("--churn-life must be > 0");
            }
        }
        Ok(())
    }

    /// Rooms actually used (the raw adapter has one implicit room).
    pub fn room_count(&self) -> usize {
        match (self.scenario.is_fanout(), self.adapter) {
            (true, Adapter::Hub) => self.rooms,
            (true, Adapter::Raw | Adapter::SocketIo) => 1,
            _ if self.scenario == Scenario::Recover => 1,
            _ => 0,
        }
    }

    /// Publisher connections actually used (a storm has one).
    pub fn publisher_count(&self) -> usize {
        if self.scenario.is_fanout() {
            self.publishers
        } else if self.scenario == Scenario::Recover {
            1
        } else {
            0
        }
    }

    /// Every connection this run opens, all parts together.
    pub fn total_conns(&self) -> usize {
        self.conns + self.publisher_count()
    }

    /// The share of thread `t` of this process: global subscriber/connection and publisher
    /// index ranges, and the fraction of the connect rate it drives.
    pub fn thread_share(&self, t: usize) -> Share {
        let parts = self.part.1 * self.threads;
        let g = self.part.0 * self.threads + t;
        let conns = share(self.conns, g, parts);
        let pubs = share(self.publisher_count(), g, parts);
        let total = self.total_conns().max(1);
        let mine = conns.len() + pubs.len();
        Share {
            conns,
            pubs,
            connect_rate: self.connect_rate * mine as f64 / total as f64,
            churn_rate: self.churn_rate / parts as f64,
        }
    }

    /// The request as recorded in reports.
    pub fn params(&self) -> Params {
        Params {
            conns: self.conns,
            connect_rate: self.connect_rate,
            duration_s: self.duration.as_secs_f64(),
            rooms: self.room_count(),
            publishers: self.publisher_count(),
            rate: self.rate,
            payload: self.payload,
            threads: self.threads,
            procs: self.part.1,
            sources: self.sources.len(),
            churn_rate: self.churn_rate,
            churn_life_s: self.churn_life.as_secs_f64(),
            storm: (self.scenario == Scenario::Recover).then(|| self.storm.clone()),
        }
    }
}

/// A recovery storm's settings (`recover`): the room's members leave together at the common
/// start, the publisher publishes `missed` times while they are away, and at the start plus
/// `offline` they reconnect, all at once or at `reconnect_rate`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Storm {
    /// Publications made while the members are away (each member is this far behind).
    pub missed: u64,
    /// How long the members stay away; the missed publications go out halfway through.
    #[serde(with = "secs_f64")]
    pub offline: Duration,
    /// Reconnects per second, all parts together; 0: all at once.
    pub reconnect_rate: f64,
    /// Rejoin with `recover` (false: a plain join, the baseline without replay).
    pub recover: bool,
    /// Reconnect to the next `--url` rather than the one a member left (cluster runs).
    pub move_node: bool,
}

impl Default for Storm {
    fn default() -> Self {
        Self {
            missed: 100,
            offline: Duration::from_secs(2),
            reconnect_rate: 0.0,
            recover: true,
            move_node: true,
        }
    }
}

/// A [`Duration`] as seconds (f64) in reports.
mod secs_f64 {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// The part of a plan one thread drives.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// Global indices of its connections (connect, echo) or subscribers (fanout).
    pub conns: std::ops::Range<usize>,
    /// Global indices of its publishers.
    pub pubs: std::ops::Range<usize>,
    /// Its new connections per second.
    pub connect_rate: f64,
    /// Its churn connections per second.
    pub churn_rate: f64,
}

/// The rooms publisher `p` of `pubs` publishes to among `rooms`: every room gets at least one
/// publisher and every publisher at least one room.
pub fn publisher_rooms(p: usize, pubs: usize, rooms: usize) -> Vec<usize> {
    if rooms == 0 || pubs == 0 {
        return Vec::new();
    }
    if pubs >= rooms {
        vec![p % rooms]
    } else {
        (0..rooms).filter(|r| r % pubs == p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publisher_rooms_cover_every_room() {
        for (pubs, rooms) in [(1, 1), (1, 10), (3, 10), (10, 3), (4, 4)] {
            let mut covered = vec![0; rooms];
            for p in 0..pubs {
                let rs = publisher_rooms(p, pubs, rooms);
                assert!(!rs.is_empty());
                for r in rs {
                    covered[r] += 1;
                }
            }
            assert!(covered.iter().all(|&c| c > 0), "{pubs} pubs, {rooms} rooms");
        }
    }

    #[test]
    fn shares_split_connections_and_rate() {
        let mut p = Plan::new(
            Scenario::Fanout,
            Target::parse("ws://127.0.0.1:1/ws").unwrap(),
        );
        p.conns = 10;
        p.publishers = 2;
        p.threads = 2;
        p.connect_rate = 120.0;
        p.part = (1, 2);
        let s = p.thread_share(1);
        assert_eq!(s.conns, 7..10);
        assert_eq!(s.pubs, 1..2);
        assert!((s.connect_rate - 40.0).abs() < 1e-9);
        assert!(p.validate().is_ok());
        p.rate = 0.0;
        assert!(p.validate().is_err());
    }
}
