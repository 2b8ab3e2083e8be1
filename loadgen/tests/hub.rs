//! Every scenario against a real shardhub server started in this process.

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shardhub::hooks::{Flow, Hooks, Message};
use shardhub::{Config, RunningServer, Server, Stats};
use shardhub_loadgen::plan::{Plan, Scenario};
use shardhub_loadgen::{run, Gate, RunSummary, Target};

/// A shardhub server in this process: two shards (so cross-shard paths run), on port 0.
pub(crate) struct Hub {
    pub(crate) url: String,
    running: Option<RunningServer>,
}

impl Hub {
    pub(crate) fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::with_hooks(Hooks::default(), tweak)
    }

    /// The same, with the application's hooks.
    pub(crate) fn with_hooks(hooks: Hooks, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: 2,
            pin_cores: false,
            // A load generator sends faster than the per-connection abuse limits allow.
            rate_messages_per_sec: 0,
            rate_bytes_per_sec: 0,
            ..Config::default()
        };
        tweak(&mut config);
        let server = Server::builder(config)
            .hooks(hooks)
            .build()
            .expect("server builds");
        let url = format!("ws://{}/ws", server.local_addr());
        let running = server.spawn().expect("server starts");
        Self {
            url,
            running: Some(running),
        }
    }

    /// The server's counters now, summed over its shards.
    pub(crate) fn stats(&self) -> Stats {
        self.running.as_ref().expect("running").hub().stats()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown();
        }
    }
}

pub(crate) fn plan(scenario: Scenario, hub: &Hub) -> Plan {
    let mut p = Plan::new(scenario, Target::parse(&hub.url).unwrap());
    p.duration = Duration::from_secs(1);
    p.grace = Duration::from_secs(1);
    p.connect_timeout = Duration::from_secs(5);
    p.timeout = Duration::from_secs(30);
    p
}

pub(crate) fn no_failures(s: &RunSummary) {
    assert_eq!(s.connections.failed, 0, "{:?}", s.connections.failures);
    assert_eq!(s.connections.established, s.connections.target);
}

#[test]
fn connect_holds_every_connection() {
    let hub = Hub::start(|_| {});
    let mut p = plan(Scenario::Connect, &hub);
    p.conns = 300;
    p.connect_rate = 3000.0;
    p.threads = 2;
    let s = run(&p, Gate::Local).unwrap();
    no_failures(&s);
    assert_eq!(s.connections.established, 300);
    assert_eq!(s.connections.open_at_end, 300);
    // Latency runs to the welcome frame, one value per connection.
    assert_eq!(s.handshake.count, 300);
    assert!(s.connections.connect_rate_per_s > 0.0);
}

#[test]
fn held_connections_answer_server_pings() {
    // The server pings after 150 ms of silence and drops a client silent for 300 ms more: a
    // 1.5 s hold survives only if every connection answers its pings.
    let hub = Hub::start(|c| {
        c.ping_interval = Duration::from_millis(150);
        c.pong_timeout = Duration::from_millis(300);
    });
    let mut p = plan(Scenario::Connect, &hub);
    p.conns = 50;
    p.duration = Duration::from_millis(1500);
    let s = run(&p, Gate::Local).unwrap();
    no_failures(&s);
    assert_eq!(s.connections.open_at_end, 50);
}

#[test]
fn fanout_delivers_everything_exactly_once() {
    let hub = Hub::start(|_| {});
    let mut p = plan(Scenario::Fanout, &hub);
    p.conns = 40;
    p.rooms = 4;
    p.publishers = 2;
    p.rate = 200.0;
    p.threads = 2;
    let s = run(&p, Gate::Local).unwrap();
    no_failures(&s);
    let t = s.traffic.as_ref().unwrap();
    assert_eq!(t.sent, 200);
    assert_eq!(t.rooms.len(), 4);
    for r in &t.rooms {
        assert_eq!(r.members, 10, "{r:?}");
        assert_eq!(
            r.unique,
            r.published * 10,
            "{r:?} {:?} {:?}",
            t.counters,
            s.latency
        );
    }
    assert_eq!(t.rooms.iter().map(|r| r.published).sum::<u64>(), 200);
    assert_eq!((t.expected, t.lost, t.duplicates), (2000, 0, 0));
    assert_eq!(
        t.counters.get("foreign_messages"),
        None,
        "publishers use exclude_self"
    );
    assert_eq!(s.latency.as_ref().unwrap().count, 2000);
}

#[test]
fn fanout_of_broadcasts_reaches_every_subscriber_once() {
    // Counts the broadcast requests the server receives: the run must send those.
    let broadcasts = Arc::new(AtomicU64::new(0));
    let seen = broadcasts.clone();
    let hooks = Hooks::default().on_message(move |_, m| {
        if let Message::Text(t) = m {
            if t.starts_with(r#"{"type":"broadcast""#) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
        Flow::Continue
    });
    let hub = Hub::with_hooks(hooks, |_| {});
    let mut p = plan(Scenario::Fanout, &hub);
    p.conns = 40;
    p.rooms = 1;
    // Two publishers hear each other's broadcasts: not deliveries the run counts.
    p.publishers = 2;
    p.rate = 100.0;
    p.broadcast = true;
    let s = run(&p, Gate::Local).unwrap();
    no_failures(&s);
    let t = s.traffic.as_ref().unwrap();
    assert_eq!(t.sent, 100);
    assert_eq!((t.expected, t.lost, t.duplicates), (4000, 0, 0));
    assert_eq!(s.latency.as_ref().unwrap().count, 4000);
    assert_eq!(broadcasts.load(Ordering::Relaxed), 100);

    p.rooms = 2;
    assert!(run(&p, Gate::Local).is_err(), "--broadcast needs one room");
}

#[test]
fn echo_ping_pong_round_trips() {
    let hub = Hub::start(|_| {});
    let mut p = plan(Scenario::Echo, &hub);
    p.conns = 4;
    p.rate = 0.0;
    let s = run(&p, Gate::Local).unwrap();
    no_failures(&s);
    let t = s.traffic.as_ref().unwrap();
    assert!(t.sent > 100, "{t:?}");
    assert_eq!(t.received, t.sent);
    assert_eq!(t.lost, 0);
}

#[test]
fn direct_pairs_bounce_across_shards() {
    let hub = Hub::start(|_| {});
    let mut p = plan(Scenario::Direct, &hub);
    p.conns = 6;
    p.rate = 300.0;
    let s = run(&p, Gate::Local).unwrap();
    no_failures(&s);
    let t = s.traffic.as_ref().unwrap();
    assert_eq!(t.sent, 300);
    assert_eq!((t.received, t.lost), (300, 0));
    assert_eq!(t.counters.get("direct_bounced"), Some(&300));
}

#[test]
fn churn_does_not_disturb_the_fanout() {
    let hub = Hub::start(|_| {});
    let mut p = plan(Scenario::Churn, &hub);
    p.conns = 20;
    p.rooms = 2;
    p.rate = 100.0;
    p.churn_rate = 50.0;
    p.churn_life = Duration::from_millis(200);
    let s = run(&p, Gate::Local).unwrap();
    assert_eq!(s.connections.failed, 0, "{:?}", s.connections.failures);
    let t = s.traffic.as_ref().unwrap();
    assert_eq!((t.lost, t.duplicates), (0, 0));
    assert_eq!(t.counters.get("churn_started"), Some(&50));
    assert!(
        t.counters.get("churn_completed").copied().unwrap_or(0) >= 40,
        "{:?}",
        t.counters
    );
}

#[test]
fn refusals_are_counted_by_http_status_or_close_code() {
    let hub = Hub::start(|c| c.max_connections = 5);
    let mut p = plan(Scenario::Connect, &hub);
    p.conns = 8;
    // One connection every 50 ms, each upgraded before the next starts: the server counts
    // sessions once registered, so connections upgrading at the same moment can all get in
    // (seen: 8 of 8 admitted at 1 ms spacing). This test is about counting refusals.
    p.connect_rate = 20.0;
    let s = run(&p, Gate::Local).unwrap();
    let c = &s.connections;
    assert_eq!(c.established, 5, "{c:?}");
    assert_eq!(c.failures.get("http_503"), Some(&3), "{c:?}");
    assert_eq!(c.failed, 3, "{c:?}");

    // A refusal for who the client is completes the upgrade and closes with its code
    // (docs/protocol.md, "Refused upgrades"), before any greeting.
    let hub = Hub::start(|c| c.allow_anonymous = false);
    let mut p = plan(Scenario::Connect, &hub);
    p.conns = 2;
    let s = run(&p, Gate::Local).unwrap();
    let c = &s.connections;
    assert_eq!(
        (c.established, c.failures.get("close_3500")),
        (0, Some(&2)),
        "{c:?}"
    );
}

/// A recovery storm plan: `conns` members, 20 missed publications, 300 ms away.
fn storm_plan(hub: &Hub, conns: usize) -> Plan {
    let mut p = plan(Scenario::Recover, hub);
    p.conns = conns;
    p.rate = 0.0;
    p.threads = 2;
    p.storm.missed = 20;
    p.storm.offline = Duration::from_millis(300);
    p.duration = Duration::from_secs(10);
    p
}

#[test]
fn recover_storm_replays_exactly_what_each_member_missed() {
    let hub = Hub::start(|c| c.history_size = 100);
    let p = storm_plan(&hub, 40);
    let started = std::time::Instant::now();
    let s = run(&p, Gate::Local).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "ends once all are done, not after --duration"
    );
    assert_eq!(s.connections.failed, 0, "{:?}", s.connections.failures);
    let t = s.traffic.as_ref().unwrap();
    let c = &t.counters;
    assert_eq!(c["storm_members"], 40, "{c:?}");
    assert_eq!(c["recovered_true"], 40, "{c:?}");
    assert_eq!(c["missed_total"], 40 * 20, "{c:?}");
    for bad in [
        "gaps",
        "duplicates",
        "recovered_false",
        "not_done",
        "reconnect_failed",
    ] {
        assert!(!c.contains_key(bad), "{bad}: {c:?}");
    }
    assert_eq!((t.sent, t.expected, t.unique, t.lost), (20, 800, 800, 0));
    for phase in ["ack", "replayed", "done_since_storm"] {
        assert_eq!(s.phases[phase].count, 40, "{phase}");
    }
    assert!(s.phases["ack"].max_ms <= s.phases["replayed"].max_ms);
    let st = hub.stats();
    assert_eq!((st.recoveries, st.recovered_messages), (40, 800));
}

#[test]
fn recover_storm_with_live_publications_loses_and_repeats_none() {
    let hub = Hub::start(|c| c.history_size = 1000);
    let mut p = storm_plan(&hub, 30);
    p.rate = 200.0;
    p.duration = Duration::from_millis(1500);
    p.storm.reconnect_rate = 300.0;
    let s = run(&p, Gate::Local).unwrap();
    assert_eq!(s.connections.failed, 0, "{:?}", s.connections.failures);
    let t = s.traffic.as_ref().unwrap();
    let c = &t.counters;
    assert_eq!(c["recovered_true"], 30, "{c:?}");
    for bad in ["gaps", "duplicates", "not_done", "message_before_ack"] {
        assert!(!c.contains_key(bad), "{bad}: {c:?}");
    }
    assert!(c["missed_total"] >= 30 * 20, "{c:?}");
    assert_eq!(t.lost, 0);
    assert!(
        s.latency.as_ref().unwrap().count > 0,
        "live deliveries measured"
    );
}

#[test]
fn recover_storm_baseline_and_a_room_without_history() {
    let hub = Hub::start(|c| c.history_size = 100);
    let mut p = storm_plan(&hub, 20);
    p.storm.recover = false;
    let s = run(&p, Gate::Local).unwrap();
    let c = &s.traffic.as_ref().unwrap().counters;
    assert_eq!((c["rejoined"], c["missed_total"]), (20, 400), "{c:?}");
    assert_eq!(s.phases["ack"].count, 20);
    assert!(!s.phases.contains_key("replayed"));
    drop(hub);
    // No history: the acks carry no position, and nothing can be recovered.
    let hub = Hub::start(|_| {});
    let s = run(&storm_plan(&hub, 10), Gate::Local).unwrap();
    let c = &s.traffic.as_ref().unwrap().counters;
    assert_eq!(c["ack_without_position"], 10, "{c:?}");
    assert_eq!(c["no_position_to_recover_from"], 10, "{c:?}");
    assert!(!c.contains_key("recovered_true"), "{c:?}");
}
