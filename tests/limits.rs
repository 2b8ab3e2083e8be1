//! Abuse limits: per-connection message and byte rates, per-address connections and
//! handshakes, and the counters that record them.

use std::time::Duration;

use serde_json::json;

use crate::util::*;

#[test]
fn a_flood_is_dropped_with_one_notice_and_service_resumes() {
    let s = TestServer::start(|c| {
        c.rate_messages_per_sec = 1;
        c.rate_burst_messages = 5;
        c.rate_limit_close_after = Duration::from_secs(60);
    });
    let mut c = Client::connect(&s, Some("flooder"));
    for i in 0..20 {
        c.send_json(json!({"type":"ping","id":i}));
    }
    // The burst is answered, then one rate_limited notice for the rest.
    for i in 0..5 {
        assert_eq!(c.expect("pong")["id"], i);
    }
    let e = c.expect("error");
    assert_eq!(e["code"], "rate_limited");
    c.expect_silence(Duration::from_millis(300));
    wait_until("the drops are counted", || {
        s.hub.stats().rate_limited_messages == 15
    });
    assert_eq!(s.hub.stats().rate_limit_closes, 0);
    // Refilling after a pause and closing a sustained flood are timed: the engine's
    // simulation tests check them on a virtual clock (src/engine/sim/tests.rs).
}

#[test]
fn the_byte_rate_limits_large_messages_binary_included() {
    let s = TestServer::start(|c| {
        c.presence = false;
        c.max_message_bytes = 1024;
        c.rate_bytes_per_sec = 1000;
        c.rate_burst_bytes = 1024;
        c.rate_limit_close_after = Duration::from_secs(60);
    });
    let mut a = Client::connect(&s, Some("a"));
    let mut b = Client::connect(&s, Some("b"));
    for c in [&mut a, &mut b] {
        c.send_json(json!({"type":"join","room":"r"}));
        c.expect("ack");
    }
    let big = "x".repeat(600);
    a.send_json(json!({"type":"publish","room":"r","data":big,"exclude_self":true}));
    assert_eq!(
        b.expect("message")["data"].as_str().map(str::len),
        Some(600)
    );
    let mut frame = vec![5, 1, b'r'];
    frame.extend_from_slice(&[0u8; 600]);
    a.send_binary(&frame);
    let e = a.expect("error");
    assert_eq!(
        (&e["code"], &e["op"]),
        (&json!("rate_limited"), &json!("binary"))
    );
    b.expect_silence(Duration::from_millis(200));
    // Small messages still fit in what is left.
    a.send_json(json!({"type":"ping","id":1}));
    assert_eq!(a.expect("pong")["id"], 1);
}

#[test]
fn connections_per_address_are_capped_with_429() {
    let s = TestServer::start(|c| c.max_connections_per_ip = 2);
    let a = Client::connect(&s, Some("a"));
    let _b = Client::connect(&s, Some("b"));
    let (code, body) = raw_http(s.addr, upgrade_request("/ws?user=c", "").as_bytes());
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("too many connections"), "{body}");
    assert!(matches!(
        connect_raw(&s.url("/ws?user=c")),
        Err(tungstenite::Error::Http(r)) if r.status() == 429
    ));
    wait_until("the refusals are counted", || {
        s.hub.stats().ip_limit_refusals == 2
    });
    // A slot frees when a connection ends.
    a.close();
    wait_until("a is gone", || !s.hub.is_online("a"));
    let mut c = None;
    wait_until("c gets in", || {
        c = connect_raw(&s.url("/ws?user=c")).ok();
        c.is_some()
    });
}

#[test]
fn handshakes_per_address_are_rate_limited_with_429() {
    let s = TestServer::start(|c| {
        c.handshakes_per_ip_per_sec = 1;
        c.handshakes_per_ip_burst = 3;
    });
    for i in 0..3 {
        Client::connect(&s, Some(&format!("u{i}"))).close();
    }
    let (code, body) = raw_http(s.addr, upgrade_request("/ws?user=x", "").as_bytes());
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("Retry-After: 1"), "{body}");
    assert!(body.contains("too many connection attempts"), "{body}");
    // The refill, one a second, is checked on the engine's virtual clock.
}

#[test]
fn oversized_headers_are_counted() {
    let s = TestServer::start(|c| c.max_header_bytes = 1024);
    let (code, _) = raw_http(
        s.addr,
        upgrade_request("/ws", &format!("X-Pad: {}\r\n", "a".repeat(2000))).as_bytes(),
    );
    assert_eq!(code, 431);
    wait_until("it is counted", || s.hub.stats().oversized_headers == 1);
}
