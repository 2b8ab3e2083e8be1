//! Binary frames: a 2-byte header names the target, the payload is delivered untouched.

use serde_json::json;

use crate::util::*;

fn header(op: u8, target: &str, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![op, target.len() as u8];
    f.extend_from_slice(target.as_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn binary_payloads_reach_rooms_users_and_everyone_unchanged() {
    let s = TestServer::start(|c| c.presence = false);
    let mut a = Client::connect_on_shard(&s, "al", 0);
    let mut b = Client::connect_on_shard(&s, "bo", 1);
    for c in [&mut a, &mut b] {
        c.send_json(json!({"type":"join","room":"bin"}));
        c.expect("ack");
    }
    let payload: Vec<u8> = (0..=255).collect();

    a.send_binary(&header(5, "bin", &payload)); // room, without the sender
    let mut want = b"\x01\x03bin\x02al".to_vec();
    want.extend_from_slice(&payload);
    assert_eq!(b.recv_binary(), want);

    a.send_binary(&header(2, "bo", b"\x00direct")); // user
    assert_eq!(b.recv_binary(), b"\x02\x00\x02al\x00direct");

    b.send_binary(&header(3, "", b"all")); // everyone
    assert_eq!(a.recv_binary(), b"\x03\x00\x02boall");
    assert_eq!(b.recv_binary(), b"\x03\x00\x02boall");
    a.expect_silence(std::time::Duration::from_millis(100));
}

#[test]
fn bad_binary_requests_get_json_errors() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect(&s, Some("a"));
    a.send_binary(&[1]);
    let e = a.expect("error");
    assert_eq!(
        (e["code"].as_str(), e["op"].as_str()),
        (Some("bad_request"), Some("binary"))
    );
    a.send_binary(&[9, 0]);
    assert_eq!(a.expect("error")["code"], "bad_request");
    a.send_binary(&header(1, "notjoined", b"x"));
    assert_eq!(a.expect("error")["code"], "not_member");
    a.send_binary(&header(2, "nobody", b"x"));
    assert_eq!(a.expect("error")["code"], "not_online");
}
