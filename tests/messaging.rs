//! Direct messages to users and broadcasts to everyone.

use serde_json::json;

use crate::util::*;

#[test]
fn a_direct_message_reaches_every_session_of_the_user_on_any_shard() {
    let s = TestServer::start(|_| {});
    let mut bob0 = Client::connect_on_shard(&s, "bob", 0);
    let mut bob1 = Client::connect_on_shard(&s, "bob", 1);
    let mut alice = Client::connect_on_shard(&s, "alice", 0);
    alice.send_json(json!({"type":"send","to":"bob","data":"psst","id":"m7"}));
    assert_eq!(
        alice.expect("ack"),
        json!({"type":"ack","id":"m7","op":"send","to":"bob","sessions":2})
    );
    for b in [&mut bob0, &mut bob1] {
        let d = b.expect("direct");
        assert_eq!(
            (d["from"].as_str(), d["data"].as_str()),
            (Some("alice"), Some("psst"))
        );
        assert_eq!(d["session"].as_str(), Some(&*alice.session));
    }
}

#[test]
fn a_direct_message_to_someone_offline_says_not_online() {
    let s = TestServer::start(|_| {});
    let mut alice = Client::connect(&s, Some("alice"));
    alice.send_json(json!({"type":"send","to":"carol","data":"hello?","id":3}));
    let e = alice.expect("error");
    assert_eq!(
        (e["code"].as_str(), e["to"].as_str(), e["id"].as_i64()),
        (Some("not_online"), Some("carol"), Some(3))
    );

    // Once carol connects she is reachable, and after she leaves she is not.
    let carol = Client::connect(&s, Some("carol"));
    alice.send_json(json!({"type":"send","to":"carol","data":"now?"}));
    assert_eq!(alice.expect("ack")["sessions"], 1);
    carol.close();
    wait_until("carol is offline", || !s.hub.is_online("carol"));
    alice.send_json(json!({"type":"send","to":"carol","data":"gone?"}));
    assert_eq!(alice.expect("error")["code"], "not_online");
}

#[test]
fn broadcasts_reach_everyone_or_everyone_else() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect_on_shard(&s, "a", 0);
    let mut b = Client::connect_on_shard(&s, "b", 1);
    let mut c = Client::connect_on_shard(&s, "c", 0);
    a.send_json(json!({"type":"broadcast","data":{"alert":"deploy"},"id":1}));
    // The sender's copy is queued before the ack that confirms it.
    assert_eq!(a.expect("broadcast")["from"], "a");
    assert_eq!(a.expect("ack")["op"], "broadcast");
    for x in [&mut b, &mut c] {
        let m = x.expect("broadcast");
        assert_eq!(
            (m["from"].as_str(), &m["data"]),
            (Some("a"), &json!({"alert":"deploy"}))
        );
    }
    b.send_json(json!({"type":"broadcast","data":"others","exclude_self":true}));
    assert_eq!(a.expect("broadcast")["data"], "others");
    assert_eq!(c.expect("broadcast")["data"], "others");
    b.expect_silence(std::time::Duration::from_millis(200));
}

#[test]
fn application_ping_gets_pong() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect(&s, None);
    a.send_json(json!({"type":"ping","id":"p"}));
    assert_eq!(a.expect("pong"), json!({"type":"pong","id":"p"}));
    a.send_json(json!({"type":"ping"}));
    assert_eq!(a.expect("pong"), json!({"type":"pong"}));
}
