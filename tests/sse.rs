//! Server-Sent Events streams of rooms: events with ids, heartbeats, replay, limits.

use serde_json::json;

use crate::util::*;

#[test]
fn a_stream_gets_the_rooms_publishes_with_ids_from_both_shards() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect_on_shard(&s, "alice", 0);
    let mut b = Client::connect_on_shard(&s, "bob", 1);
    for c in [&mut a, &mut b] {
        c.send_json(json!({"type":"join","room":"live"}));
        c.expect("ack");
    }
    a.expect("joined");
    let mut streams: Vec<SseClient> = (0..4)
        .map(|_| SseClient::open(s.addr, "/sse?room=live&user=viewer", &[]))
        .collect();
    assert!(streams[0].head.contains("Content-Type: text/event-stream"));
    wait_until("the streams are members", || {
        s.hub.room("live").is_some_and(|r| r.members == 6)
    });
    a.send_json(json!({"type":"publish","room":"live","data":"from a"}));
    b.send_json(json!({"type":"publish","room":"live","data":"from b","exclude_self":true}));
    let r = http(
        s.addr,
        "POST",
        "/api/v1/rooms/live/publish",
        Some(r#"{"data":"api"}"#),
    );
    assert_eq!(r.status, 200);
    for st in &mut streams {
        let mut got = Vec::new();
        for _ in 0..3 {
            let (id, event, v) = st.next_event();
            assert_eq!(event, "message");
            assert_eq!(v["type"], "message");
            got.push((id, v["data"].as_str().unwrap().to_string()));
        }
        let ids: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            ids,
            [1, 2, 3],
            "ids are per room, one per publish, in order"
        );
        let mut data: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
        data.sort();
        assert_eq!(data, ["api", "from a", "from b"]);
    }
    // The SSE data is exactly what WebSocket members get (`a` gets three messages, in offset
    // order: whose comes first depends on which shard numbered it first).
    let ws: Vec<serde_json::Value> = (0..3).map(|_| a.expect("message")).collect();
    let offsets: Vec<u64> = ws.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [1, 2, 3]);
    assert!(ws.iter().any(|m| m["data"] == "from a"));
}

#[test]
fn last_event_id_replays_the_kept_history() {
    let s = TestServer::start(|c| c.sse_history = 3);
    // A WebSocket member keeps the room (and so its history) alive across reconnects.
    let mut a = Client::connect(&s, Some("a"));
    a.send_json(json!({"type":"join","room":"r"}));
    a.expect("ack");
    let mut first = SseClient::open(s.addr, "/sse?room=r", &[]);
    wait_until("the stream joined", || {
        s.hub.room("r").is_some_and(|r| r.members == 2)
    });
    for i in 1..=5 {
        a.send_json(json!({"type":"publish","room":"r","data":i}));
    }
    for i in 1..=5u64 {
        let (id, _, v) = first.next_event();
        assert_eq!((id, v["data"].as_u64()), (i, Some(i)));
    }
    let last = first.last_id.clone();
    let epoch = last.split_once(':').unwrap().1.to_string();
    drop(first);
    let two = format!("2:{epoch}");
    let mut again = SseClient::open(s.addr, "/sse?room=r", &[("Last-Event-ID", &two)]);
    let replayed: Vec<u64> = (0..3).map(|_| again.next_event().0).collect();
    assert_eq!(replayed, [3, 4, 5], "history keeps the last three");
    let mut bare = SseClient::open(s.addr, "/sse?room=r", &[("Last-Event-ID", "4")]);
    assert_eq!(
        bare.next_event().0,
        5,
        "a bare offset (older servers' ids) still resumes"
    );
    let mut old = SseClient::open(s.addr, "/sse?room=r", &[("Last-Event-ID", "0")]);
    let (id, event, v) = old.next_event();
    assert_eq!(event, "reset", "1 and 2 are gone: nothing partial");
    assert_eq!(
        (id, v["offset"].as_u64(), v["epoch"].as_str()),
        (5, Some(5), Some(&*epoch))
    );
    let other = SseClient::open(
        s.addr,
        "/sse?room=r",
        &[("Last-Event-ID", "4:0000000000000000")],
    );
    let mut other = other;
    assert_eq!(other.next_event().1, "reset", "another epoch");
    a.send_json(json!({"type":"publish","room":"r","data":6}));
    assert_eq!(again.next_event().0, 6, "live events follow the replay");
    assert_eq!(old.next_event().0, 6, "and the reset");
    // The WebSocket member saw the same offsets in its frames.
    let ws: Vec<u64> = (0..6)
        .map(|_| a.expect("message")["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ws,
        [1, 2, 3, 4, 5, 6],
        "one numbering for streams and WebSockets"
    );
    let _ = last;
}

#[test]
fn streams_are_refused_without_a_room_or_over_capacity_and_leave_on_close() {
    let s = TestServer::start(|c| {
        c.room_capacities.insert("tiny".into(), 1);
    });
    let r = http(s.addr, "GET", "/sse", None);
    assert_eq!((r.status, r.error_code()), (400, "bad_request".into()));
    let st = SseClient::open(s.addr, "/sse?room=tiny", &[]);
    wait_until("joined", || s.hub.room("tiny").is_some());
    let r = http(s.addr, "GET", "/sse?room=tiny", None);
    assert_eq!((r.status, r.error_code()), (409, "room_full".into()));
    let metrics = http(s.addr, "GET", "/metrics", None).text();
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("shardhub_sse_connections{") && l.ends_with(" 1")));
    drop(st);
    wait_until("the room is gone", || s.hub.room("tiny").is_none());
}

#[test]
fn a_stream_that_does_not_read_is_closed_as_a_slow_consumer() {
    // No rate limit on the publisher: the flood must outgrow the stream's socket buffers, since
    // the queue bound counts only what a write leaves behind.
    let s = TestServer::start(|c| {
        c.max_queue_bytes = 64 * 1024;
        c.rate_messages_per_sec = 0;
        c.rate_bytes_per_sec = 0;
    });
    let mut a = Client::connect(&s, Some("a"));
    a.send_json(json!({"type":"join","room":"flood"}));
    a.expect("ack");
    let st = SseClient::open(s.addr, "/sse?room=flood", &[]);
    st.tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    wait_until("joined", || {
        s.hub.room("flood").is_some_and(|r| r.members == 2)
    });
    let big = "x".repeat(60_000);
    for _ in 0..300 {
        a.send_json(json!({"type":"publish","room":"flood","data":big,"exclude_self":true}));
        if s.hub.stats().slow_consumer_closes > 0 {
            break;
        }
    }
    wait_until("the stream is closed", || {
        s.hub.stats().slow_consumer_closes == 1
    });
    wait_until("and removed", || {
        s.hub.room("flood").is_some_and(|r| r.members == 1)
    });
}

#[test]
fn streams_are_admitted_like_websockets_and_need_the_rooms_permission() {
    use crate::auth::{jwt_server, token_for};
    let s = jwt_server(|c| c.allow_anonymous = false);
    // No token: 401, as for a WebSocket upgrade.
    let r = http(s.addr, "GET", "/sse?room=news", None);
    assert_eq!(r.status, 401);
    // A token whose claims do not cover the room: 403.
    let narrow = token_for("reader", json!({"rooms": {"join": ["sports:*"]}}));
    let auth = format!("Bearer {narrow}");
    let mut conn = HttpConn::connect(s.addr);
    conn.send("GET", "/sse?room=news", &[("Authorization", &auth)], None);
    assert_eq!(conn.read_response().status, 403);
    // A token that covers it: the stream opens, under the token's user.
    let mut st = SseClient::open(s.addr, "/sse?room=sports:live", &[("Authorization", &auth)]);
    assert!(st.head.contains("text/event-stream"));
    wait_until("the stream is a member", || {
        s.hub
            .room_members("sports:live")
            .is_some_and(|m| m.iter().any(|(_, u)| &**u == "reader"))
    });
    let r = http(
        s.addr,
        "POST",
        "/api/v1/rooms/sports:live/publish",
        Some(r#"{"data":"goal"}"#),
    );
    assert_eq!(r.status, 200);
    let (_, _, v) = st.next_event();
    assert_eq!(v["data"], "goal");
}
