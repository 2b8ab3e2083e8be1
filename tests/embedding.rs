//! Embedding shardhub as a library: hooks, typed handlers, session keys and the hub handle.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use shardhub::{Close, Flow, Hooks, Message, Reject};

use crate::util::*;

#[test]
fn on_connect_can_refuse_with_a_status_and_reason_sent_as_a_close() {
    let hooks = Hooks::default().on_connect(|req, session| {
        if req.header("x-ban").is_some() {
            return Err(Reject::forbidden("banned"));
        }
        session.set("greeting", format!("hello {}", session.user()));
        Ok(())
    });
    let s = TestServer::with_hooks(hooks, |_| {});
    let (code, reason, _) = refused_upgrade(
        s.addr,
        upgrade_request("/ws?user=x", "X-Ban: 1\r\n").as_bytes(),
    );
    assert_eq!((code, reason.as_str()), (Close::Forbidden.code(), "banned"));
    Client::connect(&s, Some("fine"));
}

#[test]
fn typed_handlers_session_keys_and_replies() {
    let hooks = Hooks::default()
        .on_connect(|_, session| {
            session.set("count", 0u32);
            Ok(())
        })
        .handle("count", |ctx, req| {
            let n = ctx.session_mut().get_mut::<u32>("count").map(|n| {
                *n += 1;
                *n
            });
            let id = req.id.map(|v| v.to_string()).unwrap_or_default();
            ctx.send_text(&json!({"type":"count","n":n,"id":id}).to_string());
        })
        .handle("echo", |ctx, req| ctx.send_text(req.text));
    let s = TestServer::with_hooks(hooks, |_| {});
    let mut c = Client::connect(&s, Some("counter"));
    for want in 1..=3 {
        c.send_json(json!({"type":"count"}));
        assert_eq!(c.expect("count")["n"], want);
    }
    c.send_text(r#"{"type":"echo","x":[1]}"#);
    assert_eq!(c.recv_json(), json!({"type":"echo","x":[1]}));
}

#[test]
fn on_message_sees_everything_and_can_take_over() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let hooks = Hooks::default().on_message(move |ctx, msg| {
        match msg {
            Message::Text(t) => seen2.lock().unwrap().push(t.to_string()),
            Message::Binary(b) => seen2.lock().unwrap().push(format!("{} bytes", b.len())),
        }
        if matches!(msg, Message::Text(t) if t.starts_with("raw:")) {
            ctx.send_text("handled by the application");
            return Flow::Handled;
        }
        Flow::Continue
    });
    let s = TestServer::with_hooks(hooks, |_| {});
    let mut c = Client::connect(&s, Some("m"));
    c.send_text("raw:hello");
    assert_eq!(
        c.recv(),
        tungstenite::Message::text("handled by the application")
    );
    c.send_json(json!({"type":"ping"}));
    c.expect("pong");
    c.send_binary(&[1, 2, 3]);
    c.expect("error"); // not a valid binary header: the protocol still ran
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            "raw:hello".to_string(),
            r#"{"type":"ping"}"#.into(),
            "3 bytes".into()
        ]
    );
}

#[test]
fn on_open_joins_and_on_disconnect_reports_the_close_code() {
    let closed = Arc::new(Mutex::new(Vec::new()));
    let closed2 = closed.clone();
    let hooks = Hooks::default()
        .on_open(|ctx| ctx.join("auto"))
        .on_disconnect(move |session, d| {
            closed2
                .lock()
                .unwrap()
                .push((session.user().to_string(), d.code))
        });
    let s = TestServer::with_hooks(hooks, |c| c.presence = false);
    let mut c = Client::connect(&s, Some("joiner"));
    assert_eq!(c.expect("ack")["room"], "auto");
    c.close();
    wait_until("on_disconnect ran", || !closed.lock().unwrap().is_empty());
    assert_eq!(*closed.lock().unwrap(), vec![("joiner".to_string(), 1000)]);
}

#[test]
fn the_hub_reaches_sessions_users_and_rooms_from_any_thread() {
    let s = TestServer::start(|c| c.presence = false);
    let mut a = Client::connect_on_shard(&s, "ann", 0);
    let mut b = Client::connect_on_shard(&s, "ben", 1);
    let hub = s.hub.clone();
    wait_until("both sessions registered", || hub.session_count() == 2);

    let ids: Vec<String> = {
        let mut v: Vec<_> = hub
            .sessions()
            .into_iter()
            .map(|i| i.id.to_string())
            .collect();
        v.sort();
        v
    };
    let mut want = vec![a.session.clone(), b.session.clone()];
    want.sort();
    assert_eq!(ids, want);

    std::thread::spawn(move || {
        hub.broadcast("to all").unwrap();
        assert_eq!(hub.send_to_user("ben", "to ben").unwrap(), 1);
        assert_eq!(hub.send_to_user("nobody", "x").unwrap(), 0);
    })
    .join()
    .unwrap();
    assert_eq!(a.recv(), tungstenite::Message::text("to all"));
    assert_eq!(b.recv(), tungstenite::Message::text("to all"));
    assert_eq!(b.recv(), tungstenite::Message::text("to ben"));

    let bid = b.session.parse().unwrap();
    s.hub.send_to_session(bid, b"bytes".as_slice()).unwrap();
    assert_eq!(b.recv_binary(), b"bytes");
    s.hub.broadcast_others("not ben", bid).unwrap();
    assert_eq!(a.recv(), tungstenite::Message::text("not ben"));
    b.expect_silence(Duration::from_millis(150));

    // Rooms: an application room with a capacity, joins on a session's behalf, publish.
    s.hub.create_room("stage", 1);
    s.hub.join(a.session.parse().unwrap(), "stage").unwrap();
    assert_eq!(a.expect("ack")["room"], "stage");
    s.hub.join(bid, "stage").unwrap();
    assert_eq!(b.expect("error")["code"], "room_full");
    s.hub.publish("stage", "on stage").unwrap();
    assert_eq!(a.recv(), tungstenite::Message::text("on stage"));
    let info = s.hub.room("stage").unwrap();
    assert_eq!((info.members, info.capacity), (1, 1));
    assert_eq!(s.hub.room_members("stage").unwrap()[0].1.as_ref(), "ann");
    assert!(s.hub.publish("nowhere", "x").is_err());

    s.hub.close_session(bid, 4000, "kicked").unwrap();
    assert_eq!(b.expect_close(), 4000);
    wait_until("ben is gone", || !s.hub.is_online("ben"));
    assert!(s.hub.close_session(bid, 1000, "").is_err());
}

#[test]
fn on_quiet_runs_once_after_a_busy_spell_and_not_while_idle() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let hooks = Hooks::default().on_quiet(move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let s = TestServer::with_hooks(hooks, |c| c.shards = 1);
    // A server nobody has talked to has had no busy spell.
    std::thread::sleep(shardhub::hooks::QUIET_AFTER + Duration::from_millis(300));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "ran before any event");
    let mut c = Client::connect(&s, Some("q"));
    c.send_json(json!({"type":"join","room":"r","id":1}));
    c.expect("ack");
    c.close();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "on_quiet never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Once per quiet spell, not on every tick of it.
    std::thread::sleep(shardhub::hooks::QUIET_AFTER * 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
