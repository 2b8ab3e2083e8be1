//! Every close of the table (`protocol::close`, docs/protocol.md "Close codes"), each provoked
//! the way it happens, on a virtual clock: the client reads the code and reason, and the
//! application's `on_disconnect` sees the same code. Then the details of refused upgrades,
//! which close rather than answer with an HTTP status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tungstenite::Message;

use super::{Client, Sim};
use crate::engine::router::ShardMsg;
use crate::hooks::{Hooks, Reject};
use crate::protocol::close::Close;
use crate::Config;

/// The codes `on_disconnect` saw, in order.
type Seen = Arc<Mutex<Vec<u16>>>;

/// Hooks that refuse an upgrade with the status in `X-Refuse`, panic on `boom`, and close the
/// session for good on `leave-me`.
fn hooks(seen: &Seen) -> Hooks {
    let seen = seen.clone();
    Hooks::default()
        .on_connect(
            |req, _| match req.header("x-refuse").and_then(|s| s.parse().ok()) {
                Some(status) => Err(Reject::with_status(status, "refused by the application")),
                None => Ok(()),
            },
        )
        .handle("boom", |_, _| panic!("boom"))
        .handle("leave-me", |ctx, _| ctx.disconnect(Close::ForceDisconnect))
        .on_disconnect(move |_, d| seen.lock().unwrap().push(d.code))
}

/// One shard, no anonymous clients, one allowed origin, small queue and message bounds, no
/// rate limits; `tweak` on top.
fn sim(seen: &Seen, tweak: impl FnOnce(&mut Config)) -> Sim {
    Sim::with_hooks(1, hooks(seen), |c| {
        c.allow_anonymous = false;
        c.allowed_origins = vec!["https://app.example.com".into()];
        c.max_queue_bytes = 4096;
        c.max_message_bytes = 2048;
        c.rate_messages_per_sec = 0;
        c.rate_bytes_per_sec = 0;
        tweak(c);
    })
}

/// An upgrade that must get the `101` (then, here, its close).
fn refused(sim: &mut Sim, target: &str, headers: &str) -> Client {
    sim.upgrade(0, target, headers)
        .unwrap_or_else(|r| panic!("wanted a 101, got {r}"))
        .0
}

/// A masked client frame with the zero key (the payload goes as is).
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// Makes the server send `close` the way it does in production; returns the client that gets
/// it and the reason it should carry.
fn provoke(close: Close, seen: &Seen) -> (Sim, Client, String) {
    let table = close.reason().to_string();
    let by_app = "refused by the application".to_string();
    match close {
        Close::Shutdown => {
            let mut sim = sim(seen, |_| {});
            let c = sim.connect(0, "a");
            sim.engines[0].handle_inbox(ShardMsg::Shutdown, sim.clock);
            sim.step();
            (sim, c, table)
        }
        Close::HeartbeatTimeout => {
            let mut sim = sim(seen, |_| {});
            let c = sim.connect(0, "silent");
            // ping_interval 25 s + pong_timeout 20 s, and the client never answers.
            sim.advance(Duration::from_secs(46));
            (sim, c, table)
        }
        Close::SlowConsumer => {
            let mut sim = sim(seen, |_| {});
            let mut slow = sim.connect(0, "slow");
            let mut publisher = sim.connect(0, "pub");
            for c in [&mut slow, &mut publisher] {
                sim.send(c, json!({"type":"join","room":"r"}));
                sim.expect(c, "ack");
            }
            slow.stop_reading();
            for _ in 0..5 {
                let data = "x".repeat(1000);
                let m = json!({"type":"publish","room":"r","data":data,"exclude_self":true});
                sim.send(&mut publisher, m);
            }
            assert_eq!(sim.hub.stats().slow_consumer_closes, 1);
            sim.resume_reading(&slow);
            (sim, slow, table)
        }
        Close::WriteStall => {
            let mut sim = sim(seen, |_| {});
            let mut stuck = sim.connect(0, "stuck");
            stuck.stop_reading();
            // A pong the socket will not take, and 15 s without progress; under the queue
            // bound, so only the stall timer can tell.
            sim.send(&mut stuck, json!({"type":"ping"}));
            sim.advance(Duration::from_secs(16));
            assert_eq!(sim.hub.stats().slow_consumer_closes, 1);
            sim.resume_reading(&stuck);
            (sim, stuck, table)
        }
        Close::Overloaded => {
            let mut sim = sim(seen, |_| {});
            let c = refused(&mut sim, "/ws?user=a", "X-Refuse: 503\r\n");
            (sim, c, by_app)
        }
        Close::InternalError => {
            let mut sim = sim(seen, |_| {});
            let mut c = sim.connect(0, "victim");
            sim.send(&mut c, json!({"type":"boom"}));
            (sim, c, table)
        }
        Close::ForceReconnect => {
            let mut sim = sim(seen, |_| {});
            let c = sim.connect(0, "moved");
            sim.hub.disconnect(c.id, Close::ForceReconnect).unwrap();
            sim.step();
            (sim, c, table)
        }
        Close::Unauthorized => {
            let mut sim = sim(seen, |_| {});
            let c = refused(&mut sim, "/ws", "");
            (sim, c, "a user is required (?user=…)".into())
        }
        Close::Forbidden => {
            let mut sim = sim(seen, |_| {});
            let c = refused(
                &mut sim,
                "/ws?user=a",
                "Origin: https://evil.example.com\r\n",
            );
            (
                sim,
                c,
                "origin https://evil.example.com is not allowed".into(),
            )
        }
        Close::RateLimited => {
            let mut sim = sim(seen, |c| {
                c.rate_messages_per_sec = 10;
                c.rate_burst_messages = 2;
            });
            let mut flood = sim.connect(0, "flood");
            // Twice the rate, without a 1 s pause, for rate_limit_close_after (10 s).
            for _ in 0..110 {
                sim.send(&mut flood, json!({"type":"ping"}));
                sim.send(&mut flood, json!({"type":"ping"}));
                sim.advance(Duration::from_millis(100));
            }
            (sim, flood, table)
        }
        Close::ConnectionLimit => {
            let mut sim = sim(seen, |_| {});
            let c = refused(&mut sim, "/ws?user=a", "X-Refuse: 429\r\n");
            (sim, c, by_app)
        }
        Close::BadRequest => {
            let mut sim = sim(seen, |_| {});
            let c = refused(&mut sim, "/ws?user=a", "X-Refuse: 400\r\n");
            (sim, c, by_app)
        }
        Close::ForceDisconnect => {
            let mut sim = sim(seen, |_| {});
            let mut c = sim.connect(0, "kicked");
            sim.send(&mut c, json!({"type":"leave-me"}));
            (sim, c, table)
        }
        Close::ProtocolError => {
            let mut sim = sim(seen, |_| {});
            let c = sim.connect(0, "sloppy");
            // An unmasked client frame.
            sim.raw(0, c.id, &[0x81, 0x02, b'{', b'}']);
            (sim, c, "Received an unmasked frame from client".into())
        }
        Close::InvalidUtf8 => {
            let mut sim = sim(seen, |_| {});
            let c = sim.connect(0, "garbled");
            sim.raw(0, c.id, &masked(0x1, b"\"\xff\""));
            (sim, c, table)
        }
        Close::MessageTooBig => {
            let mut sim = sim(seen, |_| {});
            let mut c = sim.connect(0, "big");
            sim.send_message(&mut c, Message::text("x".repeat(4096)));
            (sim, c, "Message too long: 4096 > 2048".into())
        }
    }
}

#[test]
fn every_close_of_the_table_is_sent_by_its_path() {
    for close in Close::ALL {
        let seen = Seen::default();
        let (mut sim, mut c, reason) = provoke(close, &seen);
        let got = sim.close_frame(&mut c);
        assert_eq!(got, Some((close.code(), reason)), "{close:?}");
        // The application hears what the client heard; a refused upgrade never had a session.
        let refusal = sim.hub.stats().handshakes == 0;
        let want = if refusal { vec![] } else { vec![close.code()] };
        assert_eq!(*seen.lock().unwrap(), want, "{close:?}");
    }
}

#[test]
fn a_refused_upgrade_is_a_101_then_a_close_and_never_a_session() {
    let seen = Seen::default();
    let mut sim = sim(&seen, |_| {});
    let (mut c, head) = sim.upgrade(0, "/ws", "").expect("a 101");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    sim.read(&mut c);
    assert!(
        matches!(c.inbox.front(), Some(Message::Close(Some(f))) if u16::from(f.code) == 3500),
        "the close comes first, with no welcome: {:?}",
        c.inbox
    );
    let stats = sim.hub.stats();
    assert_eq!(
        (
            stats.handshakes,
            stats.handshake_failures,
            stats.auth_failures
        ),
        (0, 1, 1)
    );
    assert_eq!((stats.connections, sim.hub.session_count()), (0, 0));
    // Reading the close made the client's tungstenite answer it: the socket goes at once.
    assert_eq!(c.dropped(), Some(false));

    // A client that never answers is reset after close_timeout, as after any close.
    let quiet = refused(&mut sim, "/ws", "");
    sim.advance(Duration::from_secs(2));
    assert_eq!(quiet.dropped(), None, "waiting for the answer");
    sim.advance(Duration::from_secs(2));
    assert_eq!(quiet.dropped(), Some(true));
    assert!(
        seen.lock().unwrap().is_empty(),
        "no session, no on_disconnect"
    );
}

#[test]
fn a_refusal_selects_the_bearer_subprotocol_the_browser_offered() {
    let seen = Seen::default();
    let mut sim = sim(&seen, |c| {
        c.jwt_secret = Some("a-secret-of-at-least-thirty-two-bytes".into());
    });
    let offer = "Sec-WebSocket-Protocol: bearer, not.a.token\r\n";
    let (mut c, head) = sim.upgrade(0, "/ws", offer).expect("a 101");
    // Without it the browser would abort the connection and see 1006, not the close.
    assert!(head.contains("Sec-WebSocket-Protocol: bearer"), "{head}");
    let (code, reason) = sim.close_frame(&mut c).expect("a close");
    assert_eq!(code, Close::Unauthorized.code());
    assert!(reason.starts_with("invalid token: "), "{reason}");
}

#[test]
fn frames_sent_with_a_refused_upgrade_are_not_handled() {
    let seen = Seen::default();
    let mut sim = sim(&seen, |_| {});
    let (id, pipe) = sim.open(0);
    let mut bytes = b"GET /ws HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    bytes.extend(masked(0x1, br#"{"type":"ping","id":1}"#));
    bytes.extend(masked(0x9, b"are you there"));
    sim.raw(0, id, &bytes);
    let out = pipe.borrow().to_client.clone();
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(out.starts_with(b"HTTP/1.1 101"));
    // Only the close frame follows the 101: no pong of either kind.
    let close = &out[head_end..];
    assert_eq!(close[0], 0x88, "{close:?}");
    assert_eq!(close.len(), 2 + usize::from(close[1]), "{close:?}");
    assert_eq!(
        u16::from_be_bytes([close[2], close[3]]),
        Close::Unauthorized.code()
    );
}

#[test]
fn an_application_close_with_its_own_code_keeps_it() {
    let seen = Seen::default();
    let mut sim = sim(&seen, |_| {});
    let mut c = sim.connect(0, "app");
    sim.hub.close_session(c.id, 4500, "banned").unwrap();
    sim.step();
    assert_eq!(sim.close_frame(&mut c), Some((4500, "banned".into())));
    assert_eq!(*seen.lock().unwrap(), vec![4500]);
    assert!(!crate::protocol::close::reconnects(4500));
}
