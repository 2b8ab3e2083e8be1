//! Acknowledged direct messages and offline delivery against the real server: receipts over
//! real sockets, a timeout, messages kept for an offline user and handed to its next session
//! in order and once, the HTTP API's `store`, and the `on_stored` hook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use shardhub::{Hooks, StoreEventKind};

use crate::util::*;

fn server() -> TestServer {
    TestServer::start(|c| {
        c.rate_messages_per_sec = 0;
        c.rate_bytes_per_sec = 0;
        c.offline_max_messages = 3;
    })
}

#[test]
fn an_acked_send_reports_delivery_and_a_silent_recipient_times_out() {
    let s = server();
    let mut al = Client::connect(&s, Some("al"));
    let mut bob1 = Client::connect(&s, Some("bob"));
    let mut bob2 = Client::connect(&s, Some("bob"));
    al.send_json(json!({"type":"send","to":"bob","data":{"n":1},"id":"q","ack":true}));
    let ack = al.expect("ack");
    assert_eq!(ack["sessions"], 2);
    for b in [&mut bob1, &mut bob2] {
        let d = b.expect("direct");
        assert_eq!(
            (d["mid"].clone(), d["ack"].as_bool()),
            (ack["mid"].clone(), Some(true))
        );
        b.send_json(json!({"type":"received","mid":d["mid"]}));
    }
    let done = al.expect("delivered");
    assert_eq!(
        done,
        json!({"type":"delivered","id":"q","mid":ack["mid"],"to":"bob","sessions":2,"reached":2})
    );
    // Nobody answers this one: 300 ms later, not_delivered.
    al.send_json(json!({"type":"send","to":"bob","data":2,"id":3,"ack":true,"timeout_ms":300}));
    let ack = al.expect("ack");
    bob1.expect("direct");
    let t = std::time::Instant::now();
    let v = al.expect("not_delivered");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        v,
        json!({"type":"not_delivered","id":3,"mid":ack["mid"],"to":"bob","reached":2})
    );
    let st = s.hub.stats();
    assert_eq!(
        (st.acked_delivered, st.acked_not_delivered, st.receipts),
        (1, 1, 2)
    );
}

#[test]
fn offline_messages_arrive_on_connect_in_order_once_within_the_bounds() {
    let s = server();
    let mut al = Client::connect(&s, Some("al"));
    for i in 0..5 {
        al.send_json(json!({"type":"send","to":"bob","data":i,"store":true,"id":i}));
        let ack = al.expect("ack");
        assert_eq!(
            (ack["stored"].as_bool(), ack["id"].as_u64()),
            (Some(true), Some(i))
        );
        assert_eq!(ack["evicted"], u64::from(i >= 3), "past 3, the oldest goes");
    }
    assert_eq!(s.hub.offline_size(), (1, 3));
    let mut bob = Client::connect(&s, Some("bob"));
    al.send_json(json!({"type":"send","to":"bob","data":"live"}));
    for want in [json!(2), json!(3), json!(4)] {
        let d = bob.expect("direct");
        assert_eq!(
            (d["data"].clone(), d["stored"].as_bool()),
            (want, Some(true))
        );
        assert_eq!(d["from"], "al");
    }
    assert_eq!(bob.expect("direct")["data"], "live");
    let mut bob2 = Client::connect(&s, Some("bob"));
    bob2.expect_silence(Duration::from_millis(200));
    assert_eq!(s.hub.offline_size(), (0, 0));
    assert_eq!(s.hub.stats().offline_delivered, 3);
}

#[test]
fn the_http_send_stores_with_store_and_the_hook_sees_it() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let hooks = Hooks::default().on_stored(move |e| {
        log.lock()
            .unwrap()
            .push((e.kind, e.user.to_string(), e.mid.to_string()));
    });
    let s = TestServer::with_hooks(hooks, |c| c.offline_max_messages = 3);
    let send = |body: &str| http(s.addr, "POST", "/api/v1/send", Some(body));
    let r = send(r#"{"to":"dee","data":{"hi":1}}"#);
    assert_eq!((r.status, r.error_code()), (404, "not_online".to_string()));
    let r = send(r#"{"to":"dee","data":{"hi":1},"store":"yes"}"#);
    assert_eq!(r.status, 400);
    let r = send(r#"{"to":"dee","data":{"hi":1},"store":true}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    let body = r.json();
    assert_eq!(
        (body["stored"].as_bool(), body["evicted"].as_u64()),
        (Some(true), Some(0))
    );
    let mid = body["mid"].as_str().unwrap().to_string();
    assert_eq!(s.hub.offline_messages("dee").len(), 1);
    let mut dee = Client::connect(&s, Some("dee"));
    let d = dee.expect("direct");
    assert_eq!(
        (d["from"].as_str(), d["mid"].as_str(), d["data"].clone()),
        (Some("server"), Some(&*mid), json!({"hi":1}))
    );
    // Online now: delivered live, 200.
    let r = send(r#"{"to":"dee","data":2,"store":true}"#);
    assert_eq!((r.status, r.json()["sessions"].as_u64()), (200, Some(1)));
    let got = events.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            (StoreEventKind::Stored, "dee".to_string(), mid.clone()),
            (StoreEventKind::Delivered, "dee".to_string(), mid),
        ]
    );
}
