//! Bad input: protocol-level mistakes get an error frame and the connection stays; RFC 6455
//! violations close with the RFC's code; nobody else notices either.

use std::io::Write;

use serde_json::json;

use crate::util::*;

#[test]
fn malformed_requests_get_bad_request_and_the_session_continues() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect(&s, Some("a"));
    let cases = [
        ("{not json", "malformed JSON"),
        ("[1,2,3]", "must be a JSON object"),
        (r#"{"room":"r"}"#, "missing field type"),
        (r#"{"type":"join"}"#, "missing field room"),
        (r#"{"type":"join","room":42}"#, "room must be a string"),
        (r#"{"type":"publish","room":"r"}"#, "missing field data"),
        (
            r#"{"type":"send","to":"","data":1}"#,
            "to must not be empty",
        ),
    ];
    for (text, want) in cases {
        a.send_text(text);
        let e = a.expect("error");
        assert_eq!(e["code"], "bad_request", "{text}");
        assert!(e["message"].as_str().unwrap().contains(want), "{text}: {e}");
    }
    // The id is echoed even when the rest of the request is wrong.
    a.send_text(r#"{"type":"join","id":77}"#);
    assert_eq!(a.expect("error")["id"], 77);
    a.send_json(json!({"type":"teleport","id":"t"}));
    let e = a.expect("error");
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unknown_type"), Some("t"))
    );
    a.send_json(json!({"type":"ping"}));
    a.expect("pong");
}

/// Connects a victim and a bystander, lets `attack` misbehave on the victim's socket, and
/// checks the close code and that the bystander is unaffected.
fn violation_closes_with(code: u16, attack: impl FnOnce(&mut Client)) {
    let s = TestServer::start(|c| c.max_message_bytes = 1024);
    let mut bystander = Client::connect(&s, Some("bystander"));
    let mut victim = Client::connect(&s, Some("victim"));
    attack(&mut victim);
    assert_eq!(victim.expect_close(), code);
    bystander.send_json(json!({"type":"ping","id":1}));
    bystander.expect("pong");
    wait_until("the victim is gone", || !s.hub.is_online("victim"));
}

fn raw(c: &mut Client, bytes: &[u8]) {
    c.ws.get_mut().write_all(bytes).unwrap();
}

#[test]
fn an_oversized_message_closes_with_1009() {
    violation_closes_with(1009, |c| c.send_text(&"x".repeat(2000)));
}

#[test]
fn an_oversized_fragmented_message_closes_with_1009() {
    violation_closes_with(1009, |c| {
        for i in 0..4 {
            let op = if i == 0 { 1 } else { 0 };
            raw(c, &raw_frame(i == 3, 0, op, &[b'a'; 400], true));
        }
    });
}

#[test]
fn invalid_utf8_closes_with_1007() {
    violation_closes_with(1007, |c| {
        raw(c, &raw_frame(true, 0, 1, b"\xff\xfe bad", true))
    });
}

#[test]
fn an_unmasked_client_frame_closes_with_1002() {
    violation_closes_with(1002, |c| raw(c, &raw_frame(true, 0, 1, b"hello", false)));
}

#[test]
fn reserved_bits_close_with_1002() {
    violation_closes_with(1002, |c| raw(c, &raw_frame(true, 0b100, 1, b"hello", true)));
}

#[test]
fn a_stray_continuation_frame_closes_with_1002() {
    violation_closes_with(1002, |c| raw(c, &raw_frame(true, 0, 0, b"cont", true)));
}

#[test]
fn an_unknown_opcode_closes_with_1002() {
    violation_closes_with(1002, |c| raw(c, &raw_frame(true, 0, 0x3, b"", true)));
}

#[test]
fn violations_are_counted() {
    let s = TestServer::start(|_| {});
    let mut c = Client::connect(&s, None);
    raw(&mut c, &raw_frame(true, 0, 1, b"x", false));
    assert_eq!(c.expect_close(), 1002);
    wait_until("counted", || s.hub.stats().protocol_errors == 1);
}

/// Found by the `frame_reader` fuzz target. A frame header over the limit leaves tungstenite
/// holding that header: the next read trips its `capacity > len` assertion (a panic in debug
/// builds, contained as an internal error) or reads into an empty buffer and reports a reset (release).
/// After a 1009 the server must stop reading: here the victim's close reply and the rest of
/// the oversized frame arrive after the close, and nothing panics.
#[test]
fn reading_after_an_oversized_frame_header_does_not_panic() {
    let s = TestServer::start(|c| c.max_message_bytes = 1024);
    let mut victim = Client::connect(&s, Some("victim"));
    let big = raw_frame(true, 0, 2, &[7; 4000], true);
    raw(&mut victim, &big[..700]);
    assert_eq!(victim.expect_close(), 1009);
    let _ = victim.ws.get_mut().write_all(&big[700..]);
    let _ = victim
        .ws
        .get_mut()
        .write_all(&raw_frame(true, 0, 8, &1009u16.to_be_bytes(), true));
    wait_until("the victim is gone", || !s.hub.is_online("victim"));
    assert_eq!(s.hub.stats().panics, 0, "a read after the 1009 panicked");
}
