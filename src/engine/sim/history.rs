//! Room history and recovery on the virtual clock: a client that comes back with `recover`
//! gets exactly what it missed, in order, then live publications; a publication racing the
//! recovery (interleaved by hand, shard inbox by shard inbox) is neither lost nor repeated;
//! overflowed or expired history, and another epoch, answer `recovered: false` and replay
//! nothing.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{Client, Sim};

fn history(size: usize, ttl_secs: u64) -> impl FnOnce(&mut crate::Config) {
    move |c| {
        c.rate_messages_per_sec = 0;
        c.rate_bytes_per_sec = 0;
        c.presence = false;
        c.history_size = size;
        c.history_ttl = Duration::from_secs(ttl_secs);
    }
}

fn publish(sim: &mut Sim, c: &mut Client, n: u64) {
    sim.send(c, json!({"type":"publish","room":"r","data":{"n":n}}));
}

fn join(sim: &mut Sim, c: &mut Client, recover: Option<(u64, &str)>) -> Value {
    let mut req = json!({"type":"join","room":"r","id":"j"});
    if let Some((offset, epoch)) = recover {
        req["recover"] = json!({"offset": offset, "epoch": epoch});
    }
    sim.send(c, req);
    sim.expect(c, "ack")
}

fn leave(sim: &mut Sim, c: &mut Client) {
    sim.send(c, json!({"type":"leave","room":"r","id":"l"}));
    assert_eq!(sim.expect(c, "ack")["op"], "leave");
}

/// The offsets of the `message` frames a client received since the last look.
fn offsets(sim: &mut Sim, c: &mut Client) -> Vec<u64> {
    sim.texts(c)
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| {
            v["offset"]
                .as_u64()
                .expect("a message in a history room has an offset")
        })
        .collect()
}

#[test]
fn a_client_that_comes_back_gets_exactly_what_it_missed_then_live_ones() {
    let mut sim = Sim::new(2, history(100, 0));
    let mut publisher = sim.connect(1, "p");
    let ack = join(&mut sim, &mut publisher, None);
    assert_eq!(
        (ack["offset"].as_u64(), ack.get("recovered")),
        (Some(0), None)
    );
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let mut reader = sim.connect(0, "r");
    join(&mut sim, &mut reader, None);
    for n in 1..=3 {
        publish(&mut sim, &mut publisher, n);
    }
    let seen = sim.texts(&mut reader);
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2]["data"]["n"], 3);
    assert_eq!(seen[2]["offset"], 3, "the frame carries its position");
    sim.eof(0, reader.id);
    // Missed while away: 4..=8.
    for n in 4..=8 {
        publish(&mut sim, &mut publisher, n);
    }
    let mut back = sim.connect(0, "r");
    let ack = join(&mut sim, &mut back, Some((3, &epoch)));
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(
        (ack["offset"].as_u64(), ack["epoch"].as_str()),
        (Some(8), Some(&*epoch))
    );
    publish(&mut sim, &mut publisher, 9);
    let got = sim.texts(&mut back);
    let ns: Vec<u64> = got
        .iter()
        .map(|v| v["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ns,
        [4, 5, 6, 7, 8, 9],
        "the missed five in order, then the live one"
    );
    let offs: Vec<u64> = got.iter().map(|v| v["offset"].as_u64().unwrap()).collect();
    assert_eq!(offs, [4, 5, 6, 7, 8, 9]);
    let stats = sim.hub.stats();
    assert_eq!((stats.recoveries, stats.recovered_messages), (1, 5));
}

#[test]
fn overflowed_expired_or_foreign_history_recovers_nothing() {
    let mut sim = Sim::new(2, history(3, 60));
    let mut p = sim.connect(1, "p");
    let epoch = join(&mut sim, &mut p, None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for n in 1..=5 {
        publish(&mut sim, &mut p, n);
    }
    let mut c = sim.connect(0, "c");
    let ack = join(&mut sim, &mut c, Some((1, &epoch)));
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(false), Some(5))
    );
    assert!(
        offsets(&mut sim, &mut c).is_empty(),
        "2 was pushed out: nothing partial"
    );
    leave(&mut sim, &mut c);
    let ack = join(&mut sim, &mut c, Some((2, "not-the-epoch")));
    assert_eq!(ack["recovered"], false, "another stream");
    leave(&mut sim, &mut c);
    let ack = join(&mut sim, &mut c, Some((2, &epoch)));
    assert_eq!(ack["recovered"], true);
    assert_eq!(offsets(&mut sim, &mut c), [3, 4, 5]);
    leave(&mut sim, &mut c);
    // A minute later 3..=5 have expired (the client reads, so answers pings, meanwhile).
    for _ in 0..13 {
        sim.advance(Duration::from_secs(5));
        sim.read(&mut c);
        sim.read(&mut p);
    }
    let ack = join(&mut sim, &mut c, Some((2, &epoch)));
    assert_eq!(ack["recovered"], false, "expired");
    let ack_up_to_date = {
        leave(&mut sim, &mut c);
        join(&mut sim, &mut c, Some((5, &epoch)))
    };
    assert_eq!(
        ack_up_to_date["recovered"], true,
        "nothing missed, nothing needed"
    );
    assert_eq!(sim.hub.stats().recoveries_failed, 3);
}

#[test]
fn without_history_join_acks_carry_no_position_and_recovery_fails() {
    let mut sim = Sim::new(1, history(0, 0));
    let mut c = sim.connect(0, "c");
    let ack = join(&mut sim, &mut c, Some((0, "e")));
    assert!(
        ack.get("offset").is_none() && ack.get("epoch").is_none(),
        "{ack}"
    );
    assert_eq!(ack["recovered"], false);
    publish(&mut sim, &mut c, 1);
    let got = sim.texts(&mut c);
    assert!(
        got[0].get("offset").is_none(),
        "no history, no offset: {}",
        got[0]
    );
}

#[test]
fn an_emptied_room_keeps_its_history_until_it_expires_then_gets_a_new_epoch() {
    let mut sim = Sim::new(1, history(10, 30));
    let mut c = sim.connect(0, "c");
    let epoch = join(&mut sim, &mut c, None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    publish(&mut sim, &mut c, 1);
    sim.eof(0, c.id);
    assert!(sim.hub.room("r").is_some(), "kept for its history");
    sim.advance(Duration::from_secs(10));
    let mut back = sim.connect(0, "c");
    let ack = join(&mut sim, &mut back, Some((0, &epoch)));
    assert_eq!(ack["recovered"], true);
    assert_eq!(offsets(&mut sim, &mut back), [1]);
    sim.eof(0, back.id);
    sim.advance(Duration::from_secs(32));
    assert!(
        sim.hub.room("r").is_none(),
        "history expired: the room went"
    );
    let mut later = sim.connect(0, "c");
    let ack = join(&mut sim, &mut later, Some((1, &epoch)));
    assert_eq!(ack["recovered"], false);
    assert_ne!(ack["epoch"], epoch.as_str(), "a new stream, a new epoch");
    assert_eq!(ack["offset"], 0);
}

/// The race, by hand: a publication routed (numbered, posted to the inboxes) before the
/// recovering join is handled, but delivered after it; and one routed after the join but
/// delivered while an older one still waits. Shard 0 has another member, so every publication
/// goes to its inbox too.
#[test]
fn publications_racing_a_recovery_are_neither_lost_nor_repeated() {
    let mut sim = Sim::new(3, history(100, 0));
    let mut p = sim.connect(1, "p");
    let mut q = sim.connect(2, "q");
    let mut other = sim.connect(0, "o");
    let epoch = join(&mut sim, &mut p, None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    join(&mut sim, &mut q, None);
    join(&mut sim, &mut other, None);
    for n in 1..=2 {
        publish(&mut sim, &mut p, n);
    }
    let mut r = sim.connect(0, "r");
    // 3 is numbered and waits in shard 0's inbox (for `other`) when r's join is handled.
    sim.send_quiet(&mut p, json!({"type":"publish","room":"r","data":{"n":3}}));
    assert_eq!(sim.waiting(0), 1);
    sim.send_quiet(
        &mut r,
        json!({"type":"join","room":"r","recover":{"offset":1,"epoch":epoch}}),
    );
    // 4, from shard 2, is numbered after the join; 3 is still waiting ahead of it.
    sim.send_quiet(&mut q, json!({"type":"publish","room":"r","data":{"n":4}}));
    assert_eq!(sim.waiting(0), 2);
    assert!(
        sim.deliver_one(0),
        "3 reaches shard 0: r has it from the ring already"
    );
    assert!(sim.deliver_one(0), "4 reaches shard 0: live for r");
    sim.step();
    let got = sim.texts(&mut r);
    assert_eq!(got[0]["recovered"], true, "{}", got[0]);
    assert_eq!(got[0]["offset"], 3);
    let offs: Vec<u64> = got[1..]
        .iter()
        .map(|v| v["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offs, [2, 3, 4], "2 and 3 replayed, 4 live, each once");
    assert_eq!(offsets(&mut sim, &mut other), [1, 2, 3, 4]);
}

/// A publisher's own shard gets its numbered publication through its inbox, behind older ones
/// from other shards: every member sees a room's offsets in order.
#[test]
fn members_see_offsets_in_order_whichever_shard_published_first() {
    let mut sim = Sim::new(2, history(10, 0));
    let mut a = sim.connect(0, "a");
    let mut b = sim.connect(1, "b");
    join(&mut sim, &mut a, None);
    join(&mut sim, &mut b, None);
    sim.send_quiet(&mut b, json!({"type":"publish","room":"r","data":1}));
    sim.send_quiet(&mut a, json!({"type":"publish","room":"r","data":2}));
    sim.step();
    assert_eq!(offsets(&mut sim, &mut a), [1, 2]);
    assert_eq!(offsets(&mut sim, &mut b), [1, 2]);
}

#[derive(Debug, Clone)]
enum Step {
    /// A publisher (on shard 1 or 2) publishes; the frame waits in the inboxes.
    Publish(usize),
    /// Shard `s` takes one message from its inbox.
    Deliver(usize),
    /// The recovering client joins (once; later ones are no-ops).
    Join,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1usize..3).prop_map(Step::Publish),
        4 => (0usize..3).prop_map(Step::Deliver),
        1 => Just(Step::Join),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any interleaving of publications from two shards, inbox deliveries and one recovering
    /// join: the recovering client gets every offset after its position exactly once, in
    /// order; a bystander gets every offset once, in order.
    #[test]
    fn recovery_under_any_interleaving(
        missed in 0u64..4,
        steps in proptest::collection::vec(step(), 1..30),
    ) {
        let mut sim = Sim::new(3, history(1000, 0));
        let mut pubs = [sim.connect(1, "p1"), sim.connect(2, "p2")];
        let mut bystander = sim.connect(0, "b");
        let epoch = join(&mut sim, &mut pubs[0], None)["epoch"].as_str().unwrap().to_string();
        join(&mut sim, &mut pubs[1], None);
        join(&mut sim, &mut bystander, None);
        let mut n = 0;
        for _ in 0..missed + 1 {
            n += 1;
            publish(&mut sim, &mut pubs[0], n);
        }
        let mut r = sim.connect(0, "r");
        let mut joined = false;
        for s in steps.iter().cloned().chain([Step::Join]) {
            match s {
                Step::Publish(p) => {
                    n += 1;
                    sim.send_quiet(&mut pubs[p - 1], json!({"type":"publish","room":"r","data":n}));
                }
                Step::Deliver(shard) => {
                    sim.deliver_one(shard);
                }
                Step::Join if !joined => {
                    joined = true;
                    let req = json!({"type":"join","room":"r","recover":{"offset":1,"epoch":epoch}});
                    sim.send_quiet(&mut r, req);
                }
                Step::Join => {}
            }
        }
        sim.step();
        let got = sim.texts(&mut r);
        prop_assert_eq!(&got[0]["recovered"], &json!(true));
        let offs: Vec<u64> = got[1..].iter().map(|v| v["offset"].as_u64().unwrap()).collect();
        prop_assert_eq!(offs, (2..=n).collect::<Vec<_>>());
        prop_assert_eq!(offsets(&mut sim, &mut bystander), (1..=n).collect::<Vec<_>>());
    }
}

/// With nothing waiting in its inbox, the publisher's shard delivers a numbered publication at
/// once, as it does any other (no detour through its own inbox).
#[test]
fn a_quiet_shard_delivers_its_own_numbered_publication_at_once() {
    let mut sim = Sim::new(2, history(10, 0));
    let mut a = sim.connect(0, "a");
    join(&mut sim, &mut a, None);
    sim.send_quiet(&mut a, json!({"type":"publish","room":"r","data":1}));
    assert_eq!(sim.waiting(0), 0, "not posted to its own inbox");
    assert_eq!(offsets(&mut sim, &mut a), [1]);
}
