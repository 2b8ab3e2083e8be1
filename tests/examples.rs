//! The examples that bring other servers' protocols along (`examples/melody_chat.rs`,
//! `examples/gorilla_hub.rs`), run with their own hooks against real clients that speak those
//! protocols and nothing of shardhub's.

#[allow(dead_code)]
#[path = "../examples/melody_chat.rs"]
mod melody_chat;

#[allow(dead_code)]
#[path = "../examples/gorilla_hub.rs"]
mod gorilla_hub;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::Message;

use crate::util::*;

/// A client of a foreign protocol: no `welcome` to read.
fn foreign(s: &TestServer, path: &str) -> Client {
    let ws = connect_raw(&s.url(path)).expect("upgrade accepted");
    Client {
        ws,
        session: String::new(),
        user: String::new(),
        shard: 0,
    }
}

#[test]
fn melody_chat_serves_its_page_and_broadcasts_every_message_as_it_is() {
    let s = TestServer::with_hooks(melody_chat::hooks(), |_| {});
    let page = http(s.addr, "GET", "/", None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains(r#"location.host + "/ws""#));
    // The page is served whatever the query; other paths are still the server's.
    assert_eq!(http(s.addr, "GET", "/?from=link", None).status, 200);
    assert_eq!(http(s.addr, "GET", "/health", None).status, 200);

    let mut a = foreign(&s, "/ws");
    let mut b = foreign(&s, "/ws");
    // Both are registered once a message reaches both (nothing else is sent: no welcome).
    a.send_text("<Guest1> hello");
    for c in [&mut a, &mut b] {
        match c.recv() {
            Message::Text(t) => assert_eq!(t.as_str(), "<Guest1> hello"),
            other => panic!("expected the chat line, got {other:?}"),
        }
    }
    b.send_binary(&[1, 2, 3]);
    assert_eq!(a.recv_binary(), vec![1, 2, 3]);
    assert_eq!(b.recv_binary(), vec![1, 2, 3]);
    a.expect_silence(Duration::from_millis(200));
}

/// Starts the gorilla hub example with its hub handle filled in, as its `main` does.
fn gorilla() -> TestServer {
    let hub = Arc::new(OnceLock::new());
    let s = TestServer::with_hooks(gorilla_hub::hooks(hub.clone()), |_| {});
    let _ = hub.set(s.hub.clone());
    s
}

fn msg(kind: u64, receiver: &str, content: &str) -> Value {
    json!({"type": kind, "sender": "whoever", "receiver": receiver, "content": content})
}

#[test]
fn gorilla_hub_speaks_the_tutorials_typed_messages() {
    let s = gorilla();
    let mut alice = foreign(&s, "/ws?uid=alice");
    // alice sees bob arrive: type 1.
    let mut bob = foreign(&s, "/ws?uid=bob");
    let online = alice.recv_json();
    assert_eq!(
        (online["type"].as_u64(), online["sender"].as_str()),
        (Some(1), Some("bob"))
    );

    // A private message: bob gets it with the real sender, alice "success send".
    alice.send_json(msg(2, "bob", "hi bob"));
    let got = bob.recv_json();
    assert_eq!(
        got,
        json!({"type":2,"sender":"alice","receiver":"bob","content":"hi bob"})
    );
    let reply = alice.recv_json();
    assert_eq!(
        reply,
        json!({"type":3,"sender":"system","receiver":"alice","content":"success send"})
    );

    // To someone who is not there: "not online", and nobody else hears of it.
    alice.send_json(msg(2, "carol", "anyone?"));
    assert_eq!(alice.recv_json()["content"], "not online");
    bob.expect_silence(Duration::from_millis(100));

    // A broadcast reaches everyone else; the sender gets "success send".
    bob.send_json(msg(4, "", "hello all"));
    let got = alice.recv_json();
    assert_eq!(
        (got["type"].as_u64(), got["sender"].as_str()),
        (Some(4), Some("bob"))
    );
    assert_eq!(got["content"], "hello all");
    assert_eq!(bob.recv_json()["content"], "success send");

    // Nonsense gets a system message, and the connection stays.
    bob.send_text("not json");
    assert_eq!(bob.recv_json()["content"], "bad message: not JSON");
    bob.send_json(json!({"type": 9}));
    assert_eq!(bob.recv_json()["content"], "bad message: unknown type");
    bob.send_json(json!({"type": 2, "content": "to nobody"}));
    assert_eq!(
        bob.recv_json()["content"],
        "bad message: send needs a receiver"
    );

    // Type 5: bob leaves (closed with 1000) and alice is told.
    bob.send_json(msg(5, "", ""));
    assert_eq!(bob.expect_close(), 1000);
    let offline = alice.recv_json();
    assert_eq!(
        (offline["type"].as_u64(), offline["sender"].as_str()),
        (Some(5), Some("bob"))
    );
    // So is a client that just drops.
    let carol = foreign(&s, "/ws?uid=carol");
    assert_eq!(alice.recv_json()["sender"], "carol");
    drop(carol);
    let gone = alice.recv_json();
    assert_eq!(
        (gone["type"].as_u64(), gone["sender"].as_str()),
        (Some(5), Some("carol"))
    );
}
