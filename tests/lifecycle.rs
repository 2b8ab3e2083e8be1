//! Slow consumers over real sockets and graceful shutdown. (Heartbeats and write stalls are
//! timed: the engine's simulation tests check them on a virtual clock.)

use std::time::{Duration, Instant};

use serde_json::json;
use shardhub::Close;

use crate::util::*;

#[test]
fn a_reader_that_falls_behind_is_closed_as_a_slow_consumer_and_others_keep_up() {
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
    // The client wakes up within close_timeout: what was already on its way, then the close.
    assert_eq!(slow.expect_close(), Close::SlowConsumer.code());
    wait_until("the slow client is gone", || !s.hub.is_online("slow"));
    // Everyone else is fine.
    publisher
        .send_json(json!({"type":"publish","room":"firehose","data":"after","exclude_self":true}));
    assert_eq!(fast.expect("message")["data"], "after");
}

#[test]
fn shutdown_sends_3000_to_everyone_and_stops_accepting() {
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
        assert_eq!(c.expect_close(), Close::Shutdown.code());
    }
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}
