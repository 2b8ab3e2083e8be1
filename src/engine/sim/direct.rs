//! Acknowledged direct messages and offline delivery, on a virtual clock: receipts from every
//! session, from some, from none and from the wrong user; a sender that leaves; messages kept
//! for an offline user within their bounds and handed to its next session once, in order.

use std::time::Duration;

use serde_json::{json, Value};

use super::{Client, Sim};

fn unlimited(c: &mut crate::Config) {
    c.rate_messages_per_sec = 0;
    c.rate_bytes_per_sec = 0;
}

/// Reads `c`'s `direct` messages.
fn directs(sim: &mut Sim, c: &mut Client) -> Vec<Value> {
    sim.texts(c)
        .into_iter()
        .filter(|v| v["type"] == "direct")
        .collect()
}

/// Bob's receipt for a `direct` he got.
fn receipt(sim: &mut Sim, bob: &mut Client, d: &Value) {
    sim.send(bob, json!({"type":"received","mid":d["mid"]}));
}

#[test]
fn a_send_acked_by_every_session_is_delivered_with_the_count() {
    let mut sim = Sim::new(3, unlimited);
    let mut al = sim.connect(0, "al");
    let mut bob1 = sim.connect(1, "bob");
    let mut bob2 = sim.connect(2, "bob");
    sim.send(
        &mut al,
        json!({"type":"send","to":"bob","data":"hi","id":7,"ack":true}),
    );
    let ack = sim.expect(&mut al, "ack");
    assert_eq!(
        (ack["sessions"].as_u64(), ack["id"].as_u64()),
        (Some(2), Some(7))
    );
    let mid = ack["mid"].as_str().unwrap().to_string();
    let d1 = directs(&mut sim, &mut bob1).remove(0);
    let d2 = directs(&mut sim, &mut bob2).remove(0);
    assert_eq!(
        (d1["mid"].as_str(), d1["ack"].as_bool()),
        (Some(&*mid), Some(true))
    );
    assert_eq!(d1["data"], "hi");
    receipt(&mut sim, &mut bob1, &d1);
    assert!(sim.texts(&mut al).is_empty(), "one of two: still waiting");
    // The same session again counts once.
    receipt(&mut sim, &mut bob1, &d1);
    receipt(&mut sim, &mut bob2, &d2);
    let done = sim.expect(&mut al, "delivered");
    assert_eq!(
        done,
        json!({"type":"delivered","id":7,"mid":mid,"to":"bob","sessions":2,"reached":2})
    );
    // Nothing later: the entry is gone, and a late receipt is ignored.
    receipt(&mut sim, &mut bob2, &d2);
    sim.advance(Duration::from_secs(10));
    assert!(sim.texts(&mut al).is_empty());
    let s = sim.hub.stats();
    assert_eq!((s.acked_sends, s.acked_delivered, s.receipts), (1, 1, 2));
    assert_eq!(s.receipts_ignored, 2);
    assert!(sim.engines.iter().all(|e| e.acks.is_empty()));
}

#[test]
fn no_receipt_by_the_timeout_is_not_delivered_and_some_is_partial() {
    let mut sim = Sim::new(2, unlimited);
    let mut al = sim.connect(0, "al");
    let mut bob1 = sim.connect(1, "bob");
    let mut bob2 = sim.connect(1, "bob");
    sim.send(
        &mut al,
        json!({"type":"send","to":"bob","data":1,"id":"a","ack":true,"timeout_ms":2000}),
    );
    sim.expect(&mut al, "ack");
    sim.advance(Duration::from_millis(1900));
    assert!(sim.texts(&mut al).is_empty(), "not before the timeout");
    sim.advance(Duration::from_millis(200));
    let v = sim.expect(&mut al, "not_delivered");
    assert_eq!(
        (v["id"].as_str(), v["reached"].as_u64()),
        (Some("a"), Some(2))
    );
    assert!(v.get("sessions").is_none());
    // The default timeout (ack_timeout, 5 s) with one of two answering.
    directs(&mut sim, &mut bob2);
    let d = directs(&mut sim, &mut bob1).remove(0);
    assert_eq!(d["data"], 1);
    sim.send(
        &mut al,
        json!({"type":"send","to":"bob","data":2,"ack":true}),
    );
    sim.expect(&mut al, "ack");
    let d = directs(&mut sim, &mut bob1).remove(0);
    receipt(&mut sim, &mut bob1, &d);
    sim.advance(Duration::from_millis(4900));
    assert!(sim.texts(&mut al).is_empty());
    sim.advance(Duration::from_millis(200));
    let v = sim.expect(&mut al, "delivered");
    assert_eq!(
        (v["sessions"].as_u64(), v["reached"].as_u64()),
        (Some(1), Some(2))
    );
    let s = sim.hub.stats();
    assert_eq!(
        (s.acked_timeouts, s.acked_not_delivered, s.acked_delivered),
        (2, 1, 1)
    );
}

#[test]
fn a_receipt_from_another_user_is_ignored_and_a_bad_one_answered() {
    let mut sim = Sim::new(2, unlimited);
    let mut al = sim.connect(0, "al");
    let mut bob = sim.connect(1, "bob");
    let mut eve = sim.connect(1, "eve");
    sim.send(
        &mut al,
        json!({"type":"send","to":"bob","data":0,"ack":true,"timeout_ms":1000}),
    );
    let mid = sim.expect(&mut al, "ack")["mid"].clone();
    assert_eq!(directs(&mut sim, &mut bob).len(), 1);
    // Eve guesses (or learned) the id: her receipt does not count.
    sim.send(&mut eve, json!({"type":"received","mid":mid}));
    sim.send(&mut al, json!({"type":"received","mid":mid}));
    assert_eq!(sim.hub.stats().receipts_ignored, 2);
    sim.advance(Duration::from_millis(1100));
    assert_eq!(sim.expect(&mut al, "not_delivered")["reached"], 1);
    // Malformed ids are bad requests; well-formed unknown ones are ignored silently.
    for bad in [json!("x"), json!("1-"), json!("12-3-4")] {
        sim.send(&mut bob, json!({"type":"received","mid":bad,"id":1}));
        let e = sim.expect(&mut bob, "error");
        assert_eq!(
            (e["code"].as_str(), e["id"].as_u64()),
            (Some("bad_request"), Some(1))
        );
    }
    sim.send(&mut bob, json!({"type":"received","mid":5}));
    assert_eq!(sim.expect(&mut bob, "error")["code"], "bad_request");
    sim.send(&mut bob, json!({"type":"received","mid":"99999-1"}));
    sim.send(
        &mut bob,
        json!({"type":"received","mid":"18446744073709551615-1"}),
    );
    assert!(sim.texts(&mut bob).is_empty());
    sim.send(
        &mut al,
        json!({"type":"send","to":"bob","data":0,"ack":"yes","id":2}),
    );
    let e = sim.expect(&mut al, "error");
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("ack must be a boolean"));
}

#[test]
fn pending_acks_are_capped_per_session_and_die_with_the_sender() {
    let mut sim = Sim::new(2, |c| {
        unlimited(c);
        c.max_pending_acks = 3;
    });
    let mut al = sim.connect(0, "al");
    let mut bob = sim.connect(1, "bob");
    for i in 0..3 {
        sim.send(
            &mut al,
            json!({"type":"send","to":"bob","data":i,"ack":true}),
        );
        sim.expect(&mut al, "ack");
    }
    sim.send(
        &mut al,
        json!({"type":"send","to":"bob","data":3,"ack":true,"id":9}),
    );
    let e = sim.expect(&mut al, "error");
    assert_eq!(
        (e["code"].as_str(), e["id"].as_u64()),
        (Some("too_many_pending"), Some(9))
    );
    assert_eq!(sim.engines[0].acks.len(), 3);
    // Plain sends are not limited by it.
    sim.send(&mut al, json!({"type":"send","to":"bob","data":4}));
    sim.expect(&mut al, "ack");
    let ds = directs(&mut sim, &mut bob);
    assert_eq!(ds.len(), 4);
    sim.eof(0, al.id);
    sim.step();
    assert!(sim.engines[0].acks.is_empty(), "gone with its session");
    // Bob's receipts and the timeouts find nothing, and nobody is told anything.
    for d in ds.iter().take(3) {
        receipt(&mut sim, &mut bob, d);
    }
    sim.advance(Duration::from_secs(6));
    assert_eq!(sim.hub.stats().receipts_ignored, 3);
    assert_eq!(sim.hub.stats().acked_timeouts, 0);
}

/// A server keeping at most 3 messages / 450 bytes per user for 60 s. A stored `direct` of
/// al's with a small number as data is ~100 bytes; with 200 bytes of text, ~300.
fn store_sim() -> Sim {
    Sim::new(2, |c| {
        unlimited(c);
        c.offline_max_messages = 3;
        c.offline_max_bytes = 450;
        c.offline_ttl = Duration::from_secs(60);
    })
}

#[test]
fn stored_messages_reach_the_next_session_once_in_order() {
    let mut sim = store_sim();
    let mut al = sim.connect(0, "al");
    sim.send(&mut al, json!({"type":"send","to":"bob","data":0,"id":1}));
    assert_eq!(
        sim.expect(&mut al, "error")["code"],
        "not_online",
        "not without store"
    );
    let mut mids = Vec::new();
    for i in 1..=2 {
        sim.send(
            &mut al,
            json!({"type":"send","to":"bob","data":i,"store":true}),
        );
        let ack = sim.expect(&mut al, "ack");
        assert_eq!(
            (ack["stored"].as_bool(), ack["sessions"].as_u64()),
            (Some(true), Some(0))
        );
        assert_eq!(ack["evicted"], 0);
        mids.push(ack["mid"].clone());
    }
    assert_eq!(sim.hub.offline_size(), (1, 2));
    sim.advance(Duration::from_secs(1));
    // Bob opens on the other shard: welcome, then both, oldest first, then live ones.
    let mut bob = sim.connect(1, "bob");
    sim.send(
        &mut al,
        json!({"type":"send","to":"bob","data":3,"store":true}),
    );
    assert_eq!(sim.expect(&mut al, "ack")["sessions"], 1, "online: live");
    let ds = directs(&mut sim, &mut bob);
    let data: Vec<_> = ds.iter().map(|d| d["data"].as_u64().unwrap()).collect();
    assert_eq!(data, [1, 2, 3]);
    assert_eq!(
        [ds[0]["mid"].clone(), ds[1]["mid"].clone()],
        [mids[0].clone(), mids[1].clone()]
    );
    assert_eq!(
        (ds[0]["stored"].as_bool(), ds[0]["from"].as_str()),
        (Some(true), Some("al"))
    );
    assert!(ds[0]["ts"].as_u64().is_some());
    assert!(ds[2].get("stored").is_none());
    // A second session later gets nothing more: they were handed over once.
    let mut bob2 = sim.connect(0, "bob");
    assert!(directs(&mut sim, &mut bob2).is_empty());
    assert_eq!(sim.hub.offline_size(), (0, 0));
    assert_eq!(sim.hub.stats().offline_delivered, 2);
}

#[test]
fn the_store_keeps_the_newest_within_count_bytes_and_age() {
    let mut sim = store_sim();
    let mut al = sim.connect(0, "al");
    let send = |sim: &mut Sim, al: &mut Client, data: Value| {
        sim.send(
            al,
            json!({"type":"send","to":"bob","data":data,"store":true}),
        );
        sim.expect(al, "ack")
    };
    for i in 0..3 {
        send(&mut sim, &mut al, json!(i));
    }
    assert_eq!(send(&mut sim, &mut al, json!(3))["evicted"], 1, "count");
    // ~300 bytes: with 3 of ~100 it passes 450 bytes, with 1 it does not: two go.
    let big = "x".repeat(200);
    assert_eq!(send(&mut sim, &mut al, json!(big))["evicted"], 2, "bytes");
    // Too big to store at all: store_full, and nothing is evicted for it.
    sim.send(
        &mut al,
        json!({"type":"send","to":"bob","data":"y".repeat(500),"store":true,"id":5}),
    );
    let e = sim.expect(&mut al, "error");
    assert_eq!(
        (e["code"].as_str(), e["to"].as_str()),
        (Some("store_full"), Some("bob"))
    );
    sim.advance(Duration::from_secs(30));
    // 3, big and this pass 450 bytes: 3 goes.
    assert_eq!(send(&mut sim, &mut al, json!("late"))["evicted"], 1);
    // At 61 s the big one (stored at 0 s) is expired: the sweep, once a second, drops it.
    sim.advance(Duration::from_secs(31));
    assert_eq!(sim.hub.offline_size(), (1, 1));
    let mut bob = sim.connect(1, "bob");
    let ds = directs(&mut sim, &mut bob);
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0]["data"], "late");
    let st = &sim.hub.shared.offline.stats;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (
            st.evicted.load(Relaxed),
            st.expired.load(Relaxed),
            st.refused.load(Relaxed)
        ),
        (4, 1, 1)
    );
}
