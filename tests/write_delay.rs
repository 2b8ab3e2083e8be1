//! The write delay (`write_delay`): deliveries are held up to the delay so they share writes;
//! replies are not held.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{Client, TestServer};

#[test]
fn deliveries_wait_for_the_write_delay_and_replies_do_not() {
    let delay = Duration::from_millis(300);
    let s = TestServer::start(|c| {
        c.presence = false;
        c.write_delay = delay;
    });
    // On different shards: the publication crosses the inbox, and is held on the member's.
    let mut publisher = Client::connect_on_shard(&s, "pub", 0);
    let mut member = Client::connect_on_shard(&s, "member", 1);
    for c in [&mut publisher, &mut member] {
        c.send_json(json!({"type":"join","room":"r"}));
        c.expect("ack");
    }
    let sent = Instant::now();
    for i in 0..3 {
        publisher
            .send_json(json!({"type":"publish","room":"r","data":i,"exclude_self":true,"id":i}));
        // Replies go out at once (no assertion on how soon: the machine may be slow).
        assert_eq!(publisher.expect("ack")["id"], i);
    }
    for i in 0..3 {
        assert_eq!(member.expect("message")["data"], i, "in order");
    }
    let waited = sent.elapsed();
    assert!(
        waited >= delay,
        "delivered after {waited:?}, before the {delay:?} write delay"
    );
}
