//! Presence on the virtual clock: rooms up to `presence_limit` members announce every join and
//! leave; larger rooms tell their members the count instead, once per `presence_interval`
//! while it changes, so a room filling up costs O(members) deliveries rather than O(members²).

use std::time::Duration;

use serde_json::{json, Value};

use super::{Client, Sim};

fn limit(n: usize) -> impl FnOnce(&mut crate::Config) {
    move |c| {
        c.rate_messages_per_sec = 0;
        c.rate_bytes_per_sec = 0;
        c.presence_limit = n;
        c.presence_interval = Duration::from_secs(1);
    }
}

fn join(sim: &mut Sim, c: &mut Client) {
    sim.send(c, json!({"type":"join","room":"r","id":"j"}));
    assert_eq!(sim.expect(c, "ack")["op"], "join");
}

/// The presence frames (`joined`, `left`, `presence`) a client received since the last look.
fn presence(sim: &mut Sim, c: &mut Client) -> Vec<Value> {
    sim.texts(c)
        .into_iter()
        .filter(|v| matches!(v["type"].as_str(), Some("joined" | "left" | "presence")))
        .collect()
}

fn kinds(frames: &[Value]) -> Vec<&str> {
    frames
        .iter()
        .map(|v| v["type"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn a_room_over_the_limit_hears_its_count_once_per_interval_instead_of_each_join() {
    let mut sim = Sim::new(2, limit(3));
    let mut clients: Vec<Client> = (0..3)
        .map(|i| sim.connect(i % 2, &format!("u{i}")))
        .collect();
    for c in clients.iter_mut() {
        join(&mut sim, c);
    }
    // Three members: at the limit, every join was announced to those already in.
    let first = presence(&mut sim, &mut clients[0]);
    assert_eq!(kinds(&first), ["joined", "joined"]);
    assert_eq!(kinds(&presence(&mut sim, &mut clients[1])), ["joined"]);
    assert!(presence(&mut sim, &mut clients[2]).is_empty());

    // Seven more, across both shards: the room is over the limit from the fourth on.
    for i in 3..10 {
        let mut c = sim.connect(i % 2, &format!("u{i}"));
        join(&mut sim, &mut c);
        clients.push(c);
    }
    for c in clients.iter_mut() {
        assert!(presence(&mut sim, c).is_empty(), "no events over the limit");
    }
    // Within one tick of the first suppressed join, one count each; then nothing while the
    // count stands still.
    sim.advance(Duration::from_millis(100));
    for c in clients.iter_mut() {
        let got = presence(&mut sim, c);
        assert_eq!(got, [json!({"type":"presence","room":"r","members":10})]);
    }
    sim.advance(Duration::from_secs(3));
    for c in clients.iter_mut() {
        assert!(presence(&mut sim, c).is_empty());
    }

    // Leaves over the limit are counted the same way, no sooner than the interval.
    for c in clients.drain(7..) {
        let mut c = c;
        sim.send(&mut c, json!({"type":"leave","room":"r","id":"l"}));
        assert_eq!(sim.expect(&mut c, "ack")["op"], "leave");
    }
    assert!(presence(&mut sim, &mut clients[0]).is_empty());
    sim.advance(Duration::from_millis(100));
    assert_eq!(
        presence(&mut sim, &mut clients[0]),
        [json!({"type":"presence","room":"r","members":7})]
    );

    // Under the limit: the count says so, and events resume (the late joiner makes three).
    for c in clients.drain(2..) {
        let mut c = c;
        sim.send(&mut c, json!({"type":"leave","room":"r","id":"l"}));
        sim.expect(&mut c, "ack");
    }
    sim.advance(Duration::from_secs(1));
    let got = presence(&mut sim, &mut clients[0]);
    assert_eq!(
        got.last(),
        Some(&json!({"type":"presence","room":"r","members":2}))
    );
    let mut late = sim.connect(1, "late");
    join(&mut sim, &mut late);
    let got = presence(&mut sim, &mut clients[0]);
    assert_eq!(kinds(&got), ["joined"]);
    assert_eq!(got[0]["user"], "late");
}

/// Presence frames delivered while `n` clients join one room, one by one, with the clock
/// moving a tick between joins (as a storm spread over seconds would).
fn storm(presence_limit: usize, n: usize) -> u64 {
    let mut sim = Sim::new(2, limit(presence_limit));
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = sim.connect(i % 2, &format!("u{i}"));
        join(&mut sim, &mut c);
        clients.push(c);
        if i % 10 == 9 {
            sim.advance(Duration::from_millis(100));
        }
    }
    sim.advance(Duration::from_secs(2));
    let mut frames = 0;
    for c in clients.iter_mut() {
        frames += presence(&mut sim, c).len() as u64;
    }
    frames
}

#[test]
fn a_join_storm_costs_linear_presence_frames_over_the_limit_and_quadratic_without_one() {
    let n = 400;
    // Without a limit every join is announced to everyone already in: n(n-1)/2 frames.
    assert_eq!(storm(0, n), (n * (n - 1) / 2) as u64);
    // With a limit of 20: 190 events while the room fills to 20, then counts, at most one per
    // member per second of the storm (100 joins per second of virtual time here: 4 s), plus
    // the last one.
    let limited = storm(20, n);
    let bound = 190 + (n as u64) * 6;
    assert!(limited <= bound, "{limited} presence frames, bound {bound}");
    assert!(
        limited * 10 < storm(0, n),
        "{limited} is not an order below quadratic"
    );
}
