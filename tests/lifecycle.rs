//! Heartbeats, slow consumers and graceful shutdown.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::json;
use shardhub::Config;

use crate::util::*;

fn fast_timers(c: &mut Config) {
    c.tick = Duration::from_millis(20);
    // Generous against a loaded CI machine: the live client's thread must get scheduled to
    // answer each ping within pong_timeout.
    c.ping_interval = Duration::from_millis(300);
    c.pong_timeout = Duration::from_millis(700);
}

#[test]
fn the_server_pings_quiet_clients_and_drops_silent_ones() {
    let s = TestServer::start(fast_timers);
    // A well-behaved client: tungstenite answers pings whenever it reads.
    let mut alive = Client::connect(&s, Some("alive"));
    // A silent one: after the upgrade it never reads or writes again.
    let silent = Client::connect(&s, Some("silent"));
    let start = Instant::now();
    // Reading on the live client answers its pings (tungstenite replies as it reads) while the
    // silent one runs past ping_interval + pong_timeout = 1 s.
    alive.expect_silence(Duration::from_millis(2000));
    assert!(
        !s.hub.is_online("silent"),
        "the silent client is still there after {:?}",
        start.elapsed()
    );
    assert!(s.hub.is_online("alive"));
    assert_eq!(s.hub.stats().heartbeat_timeouts, 1);
    alive.send_json(json!({"type":"ping"}));
    alive.expect("pong");

    // The silent client's socket got a 1001 close frame before the server dropped it.
    let mut tcp = silent.ws.into_inner();
    let mut bytes = Vec::new();
    let _ = tcp.read_to_end(&mut bytes);
    assert!(
        bytes.windows(2).any(|w| w == [0x88, 0x13])
            || bytes.windows(2).any(|w| w == 1001u16.to_be_bytes()),
        "no 1001 close frame in {bytes:?}"
    );
}

#[test]
fn a_reader_that_falls_behind_is_closed_with_1008_and_others_keep_up() {
    let s = TestServer::start(|c| {
        c.max_queue_bytes = 64 * 1024;
        c.presence = false;
        c.shards = 1;
        // The publisher floods on purpose; this test is about the readers.
        c.rate_messages_per_sec = 0;
        c.rate_bytes_per_sec = 0;
    });
    let mut slow = Client::connect(&s, Some("slow"));
    let mut fast = Client::connect(&s, Some("fast"));
    let mut publisher = Client::connect(&s, Some("pub"));
    for c in [&mut slow, &mut fast, &mut publisher] {
        c.send_json(json!({"type":"join","room":"firehose"}));
        c.expect("ack");
    }
    // The slow client stops reading. Socket buffers on loopback hold a few MB, so publish
    // until the server gives up on it, reading everything on the fast client as we go.
    let chunk = "x".repeat(16 * 1024);
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.hub.stats().slow_consumer_closes == 0 {
        assert!(
            Instant::now() < deadline,
            "slow consumer never detected after {sent} messages"
        );
        publisher.send_json(
            json!({"type":"publish","room":"firehose","data":chunk,"exclude_self":true}),
        );
        sent += 1;
        assert_eq!(
            fast.expect("message")["data"].as_str().map(str::len),
            Some(chunk.len())
        );
    }
    assert!(sent > 4, "closed before the queue could fill");
    // The client wakes up within close_timeout: what was already on its way, then the 1008.
    assert_eq!(slow.expect_close(), 1008);
    wait_until("the slow client is gone", || !s.hub.is_online("slow"));
    // Everyone else is fine.
    publisher
        .send_json(json!({"type":"publish","room":"firehose","data":"after","exclude_self":true}));
    assert_eq!(fast.expect("message")["data"], "after");
}

#[test]
fn a_reader_that_stalls_is_closed_after_the_write_stall_timeout() {
    let s = TestServer::start(|c| {
        c.tick = Duration::from_millis(20);
        c.write_stall_timeout = Duration::from_millis(500);
        c.max_queue_bytes = 64 << 20;
        c.presence = false;
        c.shards = 1;
        c.rate_messages_per_sec = 0;
        c.rate_bytes_per_sec = 0;
    });
    let stuck = Client::connect(&s, Some("stuck"));
    let mut publisher = Client::connect(&s, Some("pub"));
    publisher.send_json(json!({"type":"join","room":"r"}));
    publisher.expect("ack");
    s.hub.join(stuck.session.parse().unwrap(), "r").unwrap();
    wait_until("stuck joined", || {
        s.hub.room("r").is_some_and(|r| r.members == 2)
    });
    // Enough to fill the socket buffers but far below max_queue_bytes.
    let chunk = "y".repeat(60 * 1024);
    for _ in 0..200 {
        publisher.send_json(json!({"type":"publish","room":"r","data":chunk,"exclude_self":true}));
        if s.hub.stats().slow_consumer_closes > 0 {
            break;
        }
    }
    wait_until("the stalled reader is closed", || {
        s.hub.stats().slow_consumer_closes == 1
    });
    wait_until("and gone", || !s.hub.is_online("stuck"));
    drop(stuck);
}

#[test]
fn shutdown_sends_1001_to_everyone_and_stops_accepting() {
    let s = TestServer::start(|_| {});
    let mut clients: Vec<Client> = (0..6)
        .map(|i| Client::connect(&s, Some(&format!("u{i}"))))
        .collect();
    let addr = s.addr;
    let start = Instant::now();
    s.shutdown();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        start.elapsed()
    );
    for c in &mut clients {
        assert_eq!(c.expect_close(), 1001);
    }
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}
