//! The upgrade request and what the server answers to it.

use serde_json::json;
use shardhub::SessionId;

use crate::util::*;

#[test]
fn a_named_user_is_greeted_with_session_user_and_shard() {
    let s = TestServer::start(|_| {});
    let c = Client::connect(&s, Some("alice"));
    assert_eq!(c.user, "alice");
    let id: SessionId = c.session.parse().expect("session id is a decimal string");
    assert_eq!(id.shard() as u64, c.shard);
    assert!(c.shard < 2);
    wait_until("the hub sees the session", || s.hub.session(id).is_some());
    assert_eq!(&*s.hub.session(id).unwrap().user, "alice");
}

#[test]
fn percent_encoded_user_ids_are_decoded() {
    let s = TestServer::start(|_| {});
    let c = Client::connect(&s, Some("J%C3%BCrgen%20M"));
    assert_eq!(c.user, "Jürgen M");
}

#[test]
fn anonymous_clients_get_a_generated_user_id() {
    let s = TestServer::start(|_| {});
    let c = Client::connect(&s, None);
    assert_eq!(c.user, format!("anon-{}", c.session));
}

#[test]
fn anonymous_access_can_be_disabled() {
    let s = TestServer::start(|c| c.allow_anonymous = false);
    let (code, reason, _) = refused_upgrade(s.addr, upgrade_request("/ws", "").as_bytes());
    assert_eq!(code, shardhub::Close::Unauthorized.code(), "{reason}");
    assert!(reason.contains("user is required"), "{reason}");
    // Named users still get in.
    Client::connect(&s, Some("bob"));
}

#[test]
fn refused_upgrades_get_real_http_statuses() {
    let s = TestServer::start(|c| c.max_header_bytes = 1024);
    let long_user = "u".repeat(200);
    let cases = [
        (upgrade_request("/nope", ""), 404),
        (upgrade_request("/ws", "").replacen("GET", "POST", 1), 405),
        (
            upgrade_request("/ws", "").replace("Version: 13", "Version: 8"),
            426,
        ),
        (
            upgrade_request("/ws", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "bad"),
            400,
        ),
        (upgrade_request(&format!("/ws?user={long_user}"), ""), 400),
        (upgrade_request("/ws?user=%ff", ""), 400),
        (
            upgrade_request("/ws", &format!("X-Pad: {}\r\n", "a".repeat(2000))),
            431,
        ),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 426),
        ("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 200),
        ("NOT HTTP AT ALL\r\n\r\n".to_string(), 400),
    ];
    for (req, want) in cases {
        let (code, resp) = raw_http(s.addr, req.as_bytes());
        assert_eq!(code, want, "request {req:?} got {resp:?}");
    }
    // None of that disturbed the server.
    let mut c = Client::connect(&s, Some("still-fine"));
    c.send_json(json!({"type":"ping","id":1}));
    assert_eq!(c.expect("pong")["id"], 1);
}

#[test]
fn frames_sent_right_behind_the_request_are_not_lost() {
    use std::io::{Read, Write};
    let s = TestServer::start(|_| {});
    let mut tcp = std::net::TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut bytes = upgrade_request("/ws?user=eager", "").into_bytes();
    bytes.extend(raw_frame(
        true,
        0,
        1,
        br#"{"type":"ping","id":"early"}"#,
        true,
    ));
    tcp.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("pong") {
        let n = tcp.read(&mut buf).expect("the pong arrives");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains(r#"{"type":"pong","id":"early"}"#));
}

#[test]
fn the_connection_limit_answers_503() {
    let s = TestServer::start(|c| {
        c.shards = 1;
        c.max_connections = 2;
    });
    let _a = Client::connect(&s, Some("a"));
    let _b = Client::connect(&s, Some("b"));
    let (code, _) = raw_http(s.addr, upgrade_request("/ws?user=c", "").as_bytes());
    assert_eq!(code, 503);
}

#[test]
fn connections_still_handshaking_count_against_the_limit() {
    let s = TestServer::start(|c| c.max_connections = 2);
    // Two clients that connect and say nothing yet hold both places.
    let quiet: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(s.addr).unwrap())
        .collect();
    wait_until("both accepted", || s.hub.stats().accepted == 2);
    let (code, _) = raw_http(s.addr, upgrade_request("/ws?user=late", "").as_bytes());
    assert_eq!(code, 503);
    drop(quiet);
    // Their places free up once the server sees them go.
    wait_until("a place is free again", || {
        raw_http(s.addr, upgrade_request("/ws?user=later", "").as_bytes()).0 != 503
    });
}

#[test]
fn a_second_server_cannot_share_a_port_by_accident() {
    let s = TestServer::start(|_| {});
    let cfg = shardhub::Config {
        listen: s.addr,
        shards: 1,
        ..shardhub::Config::default()
    };
    let err = shardhub::Server::builder(cfg)
        .build()
        .expect_err("the port is taken");
    assert!(err.to_string().contains("in use"), "{err}");
}
