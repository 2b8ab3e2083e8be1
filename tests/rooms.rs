//! Rooms: membership, capacity, presence and publishing.

use std::time::Duration;

use serde_json::json;

use crate::util::*;

#[test]
fn members_of_a_room_chat_and_see_each_other_come_and_go() {
    let s = TestServer::start(|_| {});
    let mut alice = Client::connect(&s, Some("alice"));
    let mut bob = Client::connect(&s, Some("bob"));

    alice.send_json(json!({"type":"join","room":"lobby","id":1}));
    assert_eq!(
        alice.expect("ack"),
        json!({"type":"ack","id":1,"op":"join","room":"lobby","members":1})
    );
    bob.send_json(json!({"type":"join","room":"lobby","id":"b1"}));
    assert_eq!(bob.expect("ack")["members"], 2);
    let joined = alice.expect("joined");
    assert_eq!(
        (joined["user"].as_str(), joined["session"].as_str()),
        (Some("bob"), Some(&*bob.session))
    );

    bob.send_json(json!({"type":"publish","room":"lobby","data":{"text":"hi all","n":[1,2]}}));
    for c in [&mut alice, &mut bob] {
        let m = c.expect("message");
        assert_eq!(m["room"], "lobby");
        assert_eq!(m["from"], "bob");
        assert_eq!(m["data"], json!({"text":"hi all","n":[1,2]}));
    }

    bob.send_json(json!({"type":"leave","room":"lobby","id":2}));
    assert_eq!(
        bob.expect("ack"),
        json!({"type":"ack","id":2,"op":"leave","room":"lobby"})
    );
    assert_eq!(alice.expect("left")["user"], "bob");

    // A disconnect counts as leaving.
    let mut carol = Client::connect(&s, Some("carol"));
    carol.send_json(json!({"type":"join","room":"lobby"}));
    carol.expect("ack");
    assert_eq!(alice.expect("joined")["user"], "carol");
    carol.close();
    assert_eq!(alice.expect("left")["user"], "carol");
}

#[test]
fn publish_can_leave_the_sender_out_and_acks_when_asked() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect(&s, Some("a"));
    let mut b = Client::connect(&s, Some("b"));
    for c in [&mut a, &mut b] {
        c.send_json(json!({"type":"join","room":"r"}));
        c.expect("ack");
    }
    a.expect("joined");
    a.send_json(json!({"type":"publish","room":"r","data":1,"exclude_self":true,"id":9}));
    assert_eq!(
        a.expect("ack"),
        json!({"type":"ack","id":9,"op":"publish","room":"r"})
    );
    assert_eq!(b.expect("message")["data"], 1);
    a.expect_silence(Duration::from_millis(200));
}

#[test]
fn publishing_or_leaving_without_membership_is_an_error_not_a_disconnect() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect(&s, Some("a"));
    a.send_json(json!({"type":"publish","room":"elsewhere","data":"x","id":1}));
    let e = a.expect("error");
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64(), e["room"].as_str()),
        (Some("not_member"), Some(1), Some("elsewhere"))
    );
    a.send_json(json!({"type":"leave","room":"elsewhere"}));
    assert_eq!(a.expect("error")["code"], "not_member");
    a.send_json(json!({"type":"ping"}));
    a.expect("pong");
}

#[test]
fn a_full_room_refuses_the_next_member() {
    let s = TestServer::start(|c| {
        c.room_capacities.insert("vip".into(), 2);
        c.presence = false;
    });
    let mut cs: Vec<Client> = (0..3)
        .map(|i| Client::connect(&s, Some(&format!("u{i}"))))
        .collect();
    cs[0].send_json(json!({"type":"join","room":"vip"}));
    cs[0].expect("ack");
    cs[1].send_json(json!({"type":"join","room":"vip"}));
    cs[1].expect("ack");
    cs[2].send_json(json!({"type":"join","room":"vip","id":"x"}));
    let e = cs[2].expect("error");
    assert_eq!(e["code"], "room_full");
    assert_eq!(e["id"], "x");
    assert!(e["message"].as_str().unwrap().contains("capacity 2"));
    // A place frees up when someone leaves.
    cs[0].send_json(json!({"type":"leave","room":"vip"}));
    cs[0].expect("ack");
    cs[2].send_json(json!({"type":"join","room":"vip"}));
    assert_eq!(cs[2].expect("ack")["members"], 2);
}

#[test]
fn the_default_capacity_applies_to_rooms_created_by_a_join() {
    let s = TestServer::start(|c| c.default_room_capacity = 1);
    let mut a = Client::connect(&s, Some("a"));
    let mut b = Client::connect(&s, Some("b"));
    a.send_json(json!({"type":"join","room":"solo"}));
    a.expect("ack");
    b.send_json(json!({"type":"join","room":"solo"}));
    assert_eq!(b.expect("error")["code"], "room_full");
}

#[test]
fn sessions_are_limited_in_how_many_rooms_they_hold() {
    let s = TestServer::start(|c| c.max_rooms_per_session = 2);
    let mut a = Client::connect(&s, Some("a"));
    for r in ["r1", "r2"] {
        a.send_json(json!({"type":"join","room":r}));
        a.expect("ack");
    }
    a.send_json(json!({"type":"join","room":"r3"}));
    assert_eq!(a.expect("error")["code"], "too_many_rooms");
    // Re-joining a room it is already in is fine.
    a.send_json(json!({"type":"join","room":"r1"}));
    assert_eq!(a.expect("ack")["members"], 1);
}

#[test]
fn members_lists_every_member_on_every_shard() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect_on_shard(&s, "a", 0);
    let mut b = Client::connect_on_shard(&s, "b", 1);
    a.send_json(json!({"type":"join","room":"m"}));
    a.expect("ack");
    b.send_json(json!({"type":"join","room":"m"}));
    b.expect("ack");
    b.send_json(json!({"type":"members","room":"m","id":5}));
    let m = b.expect("members");
    assert_eq!(m["id"], 5);
    let mut users: Vec<&str> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["a", "b"]);
    b.send_json(json!({"type":"members","room":"empty"}));
    assert_eq!(b.expect("members")["members"], json!([]));
}

#[test]
fn presence_events_can_be_switched_off() {
    let s = TestServer::start(|c| c.presence = false);
    let mut a = Client::connect(&s, Some("a"));
    let mut b = Client::connect(&s, Some("b"));
    a.send_json(json!({"type":"join","room":"quiet"}));
    a.expect("ack");
    b.send_json(json!({"type":"join","room":"quiet"}));
    b.expect("ack");
    a.expect_silence(Duration::from_millis(200));
}

#[test]
fn room_messages_cross_shards_and_reach_only_members() {
    let s = TestServer::start(|c| c.presence = false);
    let mut on0 = Client::connect_on_shard(&s, "zero", 0);
    let mut on1 = Client::connect_on_shard(&s, "one", 1);
    let mut outsider = Client::connect_on_shard(&s, "out", 1);
    for c in [&mut on0, &mut on1] {
        c.send_json(json!({"type":"join","room":"x"}));
        c.expect("ack");
    }
    for i in 0..50 {
        let (from, to) = if i % 2 == 0 {
            (&mut on0, &mut on1)
        } else {
            (&mut on1, &mut on0)
        };
        from.send_json(json!({"type":"publish","room":"x","data":i,"exclude_self":true}));
        assert_eq!(to.expect("message")["data"], i);
    }
    outsider.expect_silence(std::time::Duration::from_millis(200));
    // Each shard timed its fan-outs (its own publishes and the ones it received).
    wait_until("fan-out histograms merged", || {
        s.hub.histograms().fanout.len() >= 100
    });
    assert!(!s.hub.histograms().tick.is_empty());
}

#[test]
fn a_room_over_the_presence_limit_sends_its_member_count_instead_of_events() {
    let s = TestServer::start(|c| {
        c.presence_limit = 3;
        c.rate_messages_per_sec = 0;
    });
    let mut first = Client::connect(&s, Some("first"));
    first.send_json(json!({"type":"join","room":"big","id":1}));
    first.expect("ack");
    let mut others = Vec::new();
    for i in 0..9 {
        let mut c = Client::connect(&s, Some(&format!("u{i}")));
        c.send_json(json!({"type":"join","room":"big","id":1}));
        assert_eq!(c.expect("ack")["members"], i + 2);
        others.push(c);
    }
    // Two joins fit under the limit (the room had 2, then 3 members); the seven after them are
    // not announced one by one: a count follows within a tick of the first, then at most one
    // a second until it stands still at 10 (the joins may span a tick).
    assert_eq!(first.expect("joined")["user"], "u0");
    assert_eq!(first.expect("joined")["user"], "u1");
    let mut counts = Vec::new();
    while counts.last() != Some(&10) {
        let v = first.expect("presence");
        assert_eq!(v["room"], "big");
        counts.push(v["members"].as_u64().unwrap());
        assert!(counts.len() <= 3, "counts {counts:?}");
    }
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
    first.expect_silence(Duration::from_millis(1200));
}
