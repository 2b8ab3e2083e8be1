//! The write schedule (`engine::writes`) on a virtual clock: the write delay holds deliveries
//! until the shard's flush deadline and never longer, never holds replies, and a walk written
//! in slices takes a publication that arrives mid-walk to the recipients it has not reached
//! yet, every recipient's frames in order.

use std::time::Duration;

use serde_json::{json, Value};

use super::{Client, Sim};
use crate::engine::writes::FLUSH_SLICE;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// No rate limits and no presence events: only the publications reach the members.
fn quiet(c: &mut crate::Config) {
    c.rate_messages_per_sec = 0;
    c.rate_bytes_per_sec = 0;
    c.presence = false;
}

/// Members of room `r`, joined in order, and a publisher (a member too: publishing takes
/// membership; it leaves itself out).
fn room(sim: &mut Sim, members: usize) -> (Vec<Client>, Client) {
    let mut subs = Vec::with_capacity(members);
    for i in 0..members {
        let mut c = sim.connect(0, &format!("s{i}"));
        sim.send(&mut c, json!({"type":"join","room":"r"}));
        sim.expect(&mut c, "ack");
        subs.push(c);
    }
    let mut publisher = sim.connect(0, "pub");
    sim.send(&mut publisher, json!({"type":"join","room":"r"}));
    sim.expect(&mut publisher, "ack");
    (subs, publisher)
}

fn publish(data: &str) -> Value {
    json!({"type":"publish","room":"r","data":data,"exclude_self":true})
}

/// The data of the publications a client received since the last look.
fn data(sim: &mut Sim, c: &mut Client) -> Vec<String> {
    sim.texts(c)
        .into_iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["data"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_write_delay_holds_deliveries_until_the_deadline_and_never_longer() {
    let mut sim = Sim::new(1, |c| {
        quiet(c);
        c.write_delay = ms(10);
    });
    let (mut subs, mut publisher) = room(&mut sim, 2);
    assert_eq!(
        sim.clock, 0,
        "joins were answered without waiting: replies are not held"
    );
    let before: Vec<usize> = subs.iter().map(Client::writes).collect();

    sim.send(&mut publisher, publish("one"));
    assert!(data(&mut sim, &mut subs[0]).is_empty(), "held");
    sim.advance(ms(4));
    sim.send(&mut publisher, publish("two"));
    sim.advance(ms(5));
    assert!(
        data(&mut sim, &mut subs[0]).is_empty(),
        "still held at 9 ms"
    );
    assert_eq!(sim.engines[0].flush_deadline(), Some(10_000_000));

    sim.advance(ms(1));
    for (c, before) in subs.iter_mut().zip(before) {
        assert_eq!(
            data(&mut sim, c),
            ["one", "two"],
            "at the deadline, in order"
        );
        assert_eq!(c.writes() - before, 1, "both publications in one write");
    }
    assert_eq!(sim.engines[0].flush_deadline(), None);

    // The next publication starts a new deadline, from its own arrival.
    sim.advance(ms(3));
    sim.send(&mut publisher, publish("three"));
    assert_eq!(sim.engines[0].flush_deadline(), Some(23_000_000));
    sim.advance(ms(10));
    assert_eq!(data(&mut sim, &mut subs[1]), ["three"]);
}

#[test]
fn a_reply_takes_the_held_deliveries_along_at_once() {
    let mut sim = Sim::new(1, |c| {
        quiet(c);
        c.write_delay = ms(50);
    });
    let (mut subs, mut publisher) = room(&mut sim, 1);
    let sub = &mut subs[0];
    sim.send(&mut publisher, publish("one"));
    sim.send(sub, json!({"type":"ping","id":7}));
    let got = sim.texts(sub);
    let kinds: Vec<&str> = got.iter().filter_map(|v| v["type"].as_str()).collect();
    assert_eq!(
        kinds,
        ["message", "pong"],
        "in queue order, without waiting"
    );
    assert_eq!(sim.clock, 0);
}

#[test]
fn without_a_write_delay_nothing_is_held() {
    let mut sim = Sim::new(1, quiet);
    let (mut subs, mut publisher) = room(&mut sim, 1);
    sim.send(&mut publisher, publish("one"));
    assert_eq!(sim.engines[0].flush_deadline(), None);
    assert_eq!(data(&mut sim, &mut subs[0]), ["one"]);
}

#[test]
fn a_publication_arriving_mid_walk_reaches_the_rest_of_that_walk_in_order() {
    let mut sim = Sim::new(1, quiet);
    let (mut subs, mut publisher) = room(&mut sim, FLUSH_SLICE + 100);
    let before: Vec<usize> = subs.iter().map(Client::writes).collect();

    sim.send_unflushed(&mut publisher, publish("one"));
    let first = sim.flush_once(0);
    assert!(first.started && !first.finished, "{first:?}");
    assert_eq!(first.written, FLUSH_SLICE);
    assert!(
        sim.engines[0].has_pending(),
        "the driver must come back without sleeping"
    );

    // Between slices the driver reads: a second publication arrives mid-walk.
    sim.send_unflushed(&mut publisher, publish("two"));
    sim.step();
    assert!(!sim.engines[0].is_walking());

    let mut writes = Vec::new();
    for (c, before) in subs.iter_mut().zip(before) {
        assert_eq!(data(&mut sim, c), ["one", "two"], "every member, in order");
        writes.push(c.writes() - before);
    }
    // Members the walk had passed get "two" from the next walk; the others got both frames in
    // one write of the walk under way, instead of waiting for it to end.
    let passed = writes.iter().take_while(|&&w| w == 2).count();
    assert!(passed <= FLUSH_SLICE, "{passed}");
    assert!(
        writes[passed..].iter().all(|&w| w == 1),
        "the rest of the walk wrote both at once: {writes:?}"
    );
    assert!(writes.len() - passed >= 100);
}
