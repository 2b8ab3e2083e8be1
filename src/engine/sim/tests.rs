//! The engine's timing and routing, driven on a virtual clock: heartbeats, idle and write-stall
//! timeouts, handshake and keep-alive deadlines, rate limits, slow consumers, overload and
//! contained panics. Each would take seconds of sleeping against the real server; here they
//! take none.

use std::time::Duration;

use serde_json::json;
use tungstenite::Message;

use super::Sim;
use crate::hooks::Hooks;
use crate::protocol::close::Close;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// No rate limits: the timing tests send as they please.
fn unlimited(c: &mut crate::Config) {
    c.rate_messages_per_sec = 0;
    c.rate_bytes_per_sec = 0;
}

#[test]
fn a_silent_client_is_pinged_then_dropped_while_a_live_one_stays() {
    let mut sim = Sim::new(2, unlimited);
    let mut alive = sim.connect(0, "alive");
    let mut silent = sim.connect(1, "silent");
    // ping_interval 25 s, pong_timeout 20 s: the live client reads (and so answers pings)
    // every 5 s; the silent one never does.
    for _ in 0..12 {
        sim.advance(secs(5));
        sim.read(&mut alive);
    }
    assert!(sim.hub.is_online("alive"));
    assert!(
        !sim.hub.is_online("silent"),
        "dropped after 45 s of silence"
    );
    assert_eq!(sim.hub.stats().heartbeat_timeouts, 1);
    // It got a ping at 25 s and the courtesy close before the socket went.
    sim.read(&mut silent);
    assert!(silent.inbox.iter().any(|m| matches!(m, Message::Ping(_))));
    assert_eq!(
        sim.close_code(&mut silent),
        Some(Close::HeartbeatTimeout.code())
    );
    assert_eq!(silent.dropped(), Some(false), "written out, then closed");
    sim.send(&mut alive, json!({"type":"ping","id":1}));
    assert_eq!(sim.expect(&mut alive, "pong")["id"], 1);
}

#[test]
fn a_stalled_reader_is_closed_after_the_write_stall_timeout_then_reset() {
    let mut sim = Sim::new(1, unlimited);
    let mut stuck = sim.connect(0, "stuck");
    stuck.stop_reading();
    sim.send(&mut stuck, json!({"type":"ping"}));
    // The pong is queued and cannot go: 15 s of no progress make a slow consumer.
    sim.advance(secs(14));
    assert_eq!(sim.hub.stats().slow_consumer_closes, 0);
    sim.advance(secs(2));
    assert_eq!(sim.hub.stats().slow_consumer_closes, 1);
    assert!(
        !sim.hub.is_online("stuck"),
        "the session ends at the decision"
    );
    assert_eq!(stuck.dropped(), None, "its close waits for close_timeout");
    sim.advance(secs(3));
    assert_eq!(stuck.dropped(), Some(true), "never read: reset");
}

/// A member on shard 0 that stopped reading, and a publisher on shard 1 that sent it 5 KB
/// past its 4 KiB queue bound: a slow consumer.
fn slow_consumer() -> (Sim, super::Client, super::Client) {
    let mut sim = Sim::new(2, |c| {
        unlimited(c);
        c.max_queue_bytes = 4096;
    });
    let mut slow = sim.connect(0, "slow");
    let mut publisher = sim.connect(1, "pub");
    for c in [&mut slow, &mut publisher] {
        sim.send(c, json!({"type":"join","room":"r"}));
        sim.expect(c, "ack");
    }
    slow.stop_reading();
    let chunk = "x".repeat(1000);
    for _ in 0..5 {
        sim.send(
            &mut publisher,
            json!({"type":"publish","room":"r","data":chunk,"exclude_self":true}),
        );
    }
    (sim, slow, publisher)
}

#[test]
fn a_slow_consumer_that_reads_again_in_time_gets_its_close() {
    let (mut sim, mut slow, mut publisher) = slow_consumer();
    assert_eq!(sim.hub.stats().slow_consumer_closes, 1);
    // Presence told the publisher.
    let left = sim.texts(&mut publisher);
    assert!(left
        .iter()
        .any(|v| v["type"] == "left" && v["user"] == "slow"));
    sim.resume_reading(&slow);
    assert_eq!(sim.close_code(&mut slow), Some(Close::SlowConsumer.code()));
    assert_eq!(slow.dropped(), Some(false));
}

#[test]
fn an_unfinished_request_gets_408_and_an_idle_keep_alive_is_closed_quietly() {
    let mut sim = Sim::new(1, |_| {});
    let (slow, pipe) = sim.open(0);
    sim.raw(0, slow, b"GET /ws HTTP/1.1\r\nHost: x\r\n");
    let (idle, idle_pipe) = sim.open(0);
    sim.raw(0, idle, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(idle_pipe.borrow().to_client.starts_with(b"HTTP/1.1 200"));
    idle_pipe.borrow_mut().to_client.clear();
    sim.advance(secs(9));
    assert!(pipe.borrow().to_client.is_empty());
    sim.advance(secs(2));
    assert!(pipe.borrow().to_client.starts_with(b"HTTP/1.1 408"));
    assert_eq!(pipe.borrow().closed, Some(false));
    assert!(
        idle_pipe.borrow().to_client.is_empty(),
        "no 408 between requests"
    );
    assert_eq!(idle_pipe.borrow().closed, Some(false));
    let stats = sim.hub.stats();
    assert_eq!((stats.handshake_timeouts, stats.http_requests), (1, 1));
}

#[test]
fn a_flood_is_dropped_then_closed_while_others_are_served() {
    let mut sim = Sim::new(1, |c| {
        c.rate_messages_per_sec = 10;
        c.rate_burst_messages = 2;
    });
    let mut flood = sim.connect(0, "flood");
    let mut calm = sim.connect(0, "calm");
    for i in 0..5 {
        sim.send(&mut flood, json!({"type":"ping","id":i}));
    }
    let got = sim.texts(&mut flood);
    let pongs = got.iter().filter(|v| v["type"] == "pong").count();
    let notices = got.iter().filter(|v| v["code"] == "rate_limited").count();
    assert_eq!((pongs, notices), (2, 1), "{got:?}");
    // Flooding at twice the rate without a 1 s pause for rate_limit_close_after (10 s)
    // closes it.
    for _ in 0..110 {
        sim.send(&mut flood, json!({"type":"ping"}));
        sim.send(&mut flood, json!({"type":"ping"}));
        sim.advance(Duration::from_millis(100));
    }
    assert_eq!(sim.close_code(&mut flood), Some(Close::RateLimited.code()));
    assert_eq!(sim.hub.stats().rate_limit_closes, 1);
    sim.send(&mut calm, json!({"type":"ping","id":"c"}));
    assert_eq!(sim.expect(&mut calm, "pong")["id"], "c");
}

#[test]
fn a_pause_refills_the_message_bucket() {
    let mut sim = Sim::new(1, |c| {
        c.rate_messages_per_sec = 1;
        c.rate_burst_messages = 5;
    });
    let mut c = sim.connect(0, "c");
    for i in 0..20 {
        sim.send(&mut c, json!({"type":"ping","id":i}));
    }
    let got = sim.texts(&mut c);
    assert_eq!(got.iter().filter(|v| v["type"] == "pong").count(), 5);
    sim.send(&mut c, json!({"type":"ping","id":"early"}));
    assert!(sim.texts(&mut c).is_empty(), "still dropped");
    sim.advance(Duration::from_millis(1100));
    sim.send(&mut c, json!({"type":"ping","id":"again"}));
    assert_eq!(sim.expect(&mut c, "pong")["id"], "again");
    assert_eq!(sim.hub.stats().rate_limit_closes, 0);
}

#[test]
fn handshakes_per_address_refill_one_a_second() {
    let mut sim = Sim::new(1, |c| {
        c.handshakes_per_ip_per_sec = 1;
        c.handshakes_per_ip_burst = 3;
    });
    for _ in 0..3 {
        sim.open(0);
    }
    let refusal = sim.try_open(0).expect_err("over the burst");
    assert!(refusal.starts_with("HTTP/1.1 429"), "{refusal}");
    assert!(refusal.contains("Retry-After: 1"), "{refusal}");
    sim.advance(Duration::from_millis(900));
    assert!(sim.try_open(0).is_err());
    sim.advance(Duration::from_millis(200));
    assert!(sim.try_open(0).is_ok(), "one more after a second");
    assert_eq!(sim.hub.stats().ip_limit_refusals, 2);
}

#[test]
fn a_full_inbox_makes_the_publisher_hear_overloaded_and_the_metrics_count_it() {
    let mut sim = Sim::new(2, unlimited);
    let mut a = sim.connect(0, "a");
    let mut b = sim.connect(1, "b");
    for c in [&mut a, &mut b] {
        sim.send(c, json!({"type":"join","room":"r"}));
        sim.expect(c, "ack");
    }
    sim.texts(&mut a);
    sim.set_inbox_capacity(0);
    sim.send(
        &mut a,
        json!({"type":"publish","room":"r","data":1,"id":"p"}),
    );
    let e = sim.expect(&mut a, "message");
    assert_eq!(e["data"], 1, "the local member (the sender) still got it");
    let e = sim.expect(&mut a, "error");
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("overloaded"), Some("p"))
    );
    assert!(e["message"].as_str().unwrap().contains("shard(s) 1"), "{e}");
    assert!(sim.texts(&mut b).is_empty(), "shard 1 never got it");
    assert_eq!(sim.hub.shard_stats()[1].inbox_full_drops, 1);
    assert!(sim.hub.publish("r", "from the app").is_err());
}

#[test]
fn a_panicking_handler_closes_its_session_alone() {
    let hooks = Hooks::default().handle("boom", |_, _| panic!("boom"));
    let mut sim = Sim::with_hooks(2, hooks, unlimited);
    let mut victim = sim.connect(0, "victim");
    let mut other = sim.connect(0, "other");
    sim.send(&mut victim, json!({"type":"boom"}));
    assert_eq!(
        sim.close_code(&mut victim),
        Some(Close::InternalError.code())
    );
    assert_eq!(sim.hub.stats().panics, 1);
    assert!(!sim.hub.is_online("victim"));
    sim.send(&mut other, json!({"type":"ping","id":2}));
    assert_eq!(sim.expect(&mut other, "pong")["id"], 2);
}

#[test]
fn streams_get_heartbeats_and_numbered_events() {
    let mut sim = Sim::new(2, unlimited);
    let (id, pipe) = sim.open(1);
    sim.raw(1, id, b"GET /sse?room=news HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(pipe.borrow().to_client.starts_with(b"HTTP/1.1 200"));
    pipe.borrow_mut().to_client.clear();
    let mut writer = sim.connect(0, "writer");
    sim.send(&mut writer, json!({"type":"join","room":"news"}));
    sim.expect(&mut writer, "ack");
    sim.send(
        &mut writer,
        json!({"type":"publish","room":"news","data":"hi"}),
    );
    let got = String::from_utf8(std::mem::take(&mut pipe.borrow_mut().to_client)).unwrap();
    let epoch = sim
        .hub
        .room_position("news")
        .expect("an SSE reader started the log")
        .1;
    let head = format!("id: 1:{epoch}\nevent: message\ndata: {{");
    assert!(got.starts_with(&head), "{got}");
    assert!(
        got.ends_with(",\"offset\":1}\n\n"),
        "the same frame as WebSocket members get"
    );
    sim.advance(secs(15));
    assert_eq!(pipe.borrow().to_client, crate::http::sse::HEARTBEAT);
    assert_eq!(sim.hub.publish("news", "raw").unwrap(), 2, "one numbering");
    sim.step();
    let got = String::from_utf8(std::mem::take(&mut pipe.borrow_mut().to_client)).unwrap();
    let raw = format!("id: 2:{epoch}\nevent: message\ndata: raw\n\n");
    assert!(got.ends_with(&raw), "as it is: {got}");
}

/// Found by the frame_reader fuzz target: past a frame over the limit tungstenite keeps that
/// frame's header, and reading on tripped its internal assertion. The session gets its 1009
/// and the socket goes; nothing panics, however many bytes follow.
#[test]
fn bytes_after_an_oversized_frame_are_never_parsed() {
    let mut sim = Sim::new(1, |c| c.max_message_bytes = 1024);
    let c = sim.connect(0, "big");
    // A masked text frame claiming 1 MiB, then junk that is not its payload.
    let mut frame = vec![0x81, 0xff];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0x81; 4096]);
    sim.raw(0, c.id, &frame);
    sim.raw(0, c.id, &[0x89, 0x80, 0, 0, 0, 0]);
    let mut c = c;
    assert_eq!(sim.close_code(&mut c), Some(1009));
    assert_eq!(
        c.dropped(),
        Some(false),
        "the 1009 went out, then the socket"
    );
    let stats = sim.hub.stats();
    assert_eq!((stats.protocol_errors, stats.panics), (1, 0));
}

/// Found by the hostile-input matrix: when the close still fitted the socket, the server ended
/// the connection at once with an orderly close, leaving what the client never read in an
/// orphaned kernel socket. A close the peer does not answer within `close_timeout` now ends
/// with a reset, whether or not its frame went out.
#[test]
fn a_slow_consumer_that_never_answers_its_close_is_reset_even_when_it_was_written() {
    let (mut sim, slow, _publisher) = slow_consumer();
    assert_eq!(sim.hub.stats().slow_consumer_closes, 1);
    // The kernel takes the close frame after all, but nobody reads it or answers.
    slow.window(1 << 20);
    sim.resume_writes(&slow);
    assert_eq!(slow.dropped(), None, "waiting for the answer");
    sim.advance(secs(3));
    assert_eq!(
        slow.dropped(),
        Some(true),
        "no answer within close_timeout: reset"
    );
}

/// Found by the hostile-input matrix: after a close the server started, the client's answer
/// ended the connection only when `close_timeout` passed; it holds its place until then.
#[test]
fn an_answered_close_ends_the_connection_at_once() {
    let mut sim = Sim::new(1, unlimited);
    let mut c = sim.connect(0, "c");
    sim.hub.close_session(c.id, 4000, "bye").unwrap();
    sim.step();
    assert_eq!(c.dropped(), None, "waiting for the answer");
    // Reading the close makes the client's tungstenite answer it; `read` sends the answer.
    assert_eq!(sim.close_code(&mut c), Some(4000));
    assert_eq!(
        c.dropped(),
        Some(false),
        "closed cleanly, with no time passing"
    );
}

/// A client that sends its request and half-closes at once (`Connection: close`, then the end
/// of its stream, read in two turns) still gets the answer.
#[test]
fn an_answer_goes_out_after_the_peer_half_closes() {
    let mut sim = Sim::new(1, |_| {});
    let (id, pipe) = sim.open(0);
    sim.engines[0].handle_input(
        id,
        crate::engine::Input::Bytes(b"GET /health HTTP/1.0\r\n\r\n"),
        sim.clock,
    );
    sim.eof(0, id);
    assert!(pipe.borrow().to_client.starts_with(b"HTTP/1.1 200"));
    assert_eq!(pipe.borrow().closed, Some(false));
}
