//! Abuse limits: per-connection message and byte rates, per-address connections and
//! handshakes, and the counters that record them.

use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::Message;

use crate::util::*;

/// Sends pings as fast as possible until the server's close frame; returns its code.
fn flood_until_closed(c: &mut Client) -> u16 {
    c.ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "never closed");
        // Sending fails once the server has closed; keep reading then.
        let _ = c.ws.send(Message::text(r#"{"type":"ping"}"#));
        match c.ws.read() {
            Ok(Message::Close(Some(f))) => return u16::from(f.code),
            Ok(Message::Close(None)) => return 1005,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

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
    // After a pause the bucket has refilled.
    std::thread::sleep(Duration::from_millis(1100));
    c.send_json(json!({"type":"ping","id":"again"}));
    assert_eq!(c.expect("pong")["id"], "again");
    assert_eq!(s.hub.stats().rate_limit_closes, 0);
}

#[test]
fn sustained_flooding_closes_with_1008() {
    let s = TestServer::start(|c| {
        c.rate_messages_per_sec = 20;
        c.rate_burst_messages = 20;
        c.rate_limit_close_after = Duration::from_millis(500);
        c.tick = Duration::from_millis(20);
    });
    let mut c = Client::connect(&s, Some("flooder"));
    let mut calm = Client::connect(&s, Some("calm"));
    assert_eq!(flood_until_closed(&mut c), 1008);
    wait_until("the close is counted", || {
        s.hub.stats().rate_limit_closes == 1
    });
    wait_until("the flooder is gone", || !s.hub.is_online("flooder"));
    assert!(s.hub.stats().rate_limited_messages > 0);
    // Others are unaffected.
    calm.send_json(json!({"type":"ping","id":1}));
    assert_eq!(calm.expect("pong")["id"], 1);
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
    // One per second refills.
    std::thread::sleep(Duration::from_millis(1100));
    Client::connect(&s, Some("later"));
}

#[test]
fn oversized_headers_and_slow_handshakes_are_counted() {
    let s = TestServer::start(|c| {
        c.max_header_bytes = 1024;
        c.handshake_timeout = Duration::from_millis(300);
        c.tick = Duration::from_millis(20);
    });
    let (code, _) = raw_http(
        s.addr,
        upgrade_request("/ws", &format!("X-Pad: {}\r\n", "a".repeat(2000))).as_bytes(),
    );
    assert_eq!(code, 431);
    let (code, _) = raw_http(s.addr, b"GET /ws HTTP/1.1\r\nHost: slow");
    assert_eq!(code, 408);
    wait_until("both are counted", || {
        let st = s.hub.stats();
        st.oversized_headers == 1 && st.handshake_timeouts == 1
    });
}
