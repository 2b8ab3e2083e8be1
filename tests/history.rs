//! Room history and recovery against the real server: a client that reconnects gets what it
//! missed, then live publications; publishers on both shards racing recoveries lose and repeat
//! nothing; a restarted server (the real binary, configured by flags) has new epochs; the HTTP
//! endpoint and the config file set per-room history; cluster mode over NATS refuses history clearly (Redis
//! clusters: tests/cluster.rs).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

fn no_limits(c: &mut shardhub::Config) {
    c.rate_messages_per_sec = 0;
    c.rate_bytes_per_sec = 0;
    c.presence = false;
}

fn join(c: &mut Client, room: &str, recover: Option<(u64, &str)>) -> Value {
    let mut req = json!({"type":"join","room":room,"id":"j"});
    if let Some((offset, epoch)) = recover {
        req["recover"] = json!({"offset": offset, "epoch": epoch});
    }
    c.send_json(req);
    c.expect("ack")
}

#[test]
fn a_client_that_reconnects_gets_the_publications_it_missed_then_live_ones() {
    let s = TestServer::start(|c| {
        no_limits(c);
        c.history_size = 100;
        c.history_ttl = Duration::from_secs(300);
    });
    let mut p = Client::connect_on_shard(&s, "p", 1);
    let epoch = join(&mut p, "news", None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let mut r = Client::connect_on_shard(&s, "r", 0);
    join(&mut r, "news", None);
    let publish = |p: &mut Client, n: u64| {
        p.send_json(json!({"type":"publish","room":"news","data":n,"exclude_self":true}));
    };
    for n in 1..=3 {
        publish(&mut p, n);
    }
    let last = (0..3).map(|_| r.expect("message")).last().unwrap();
    assert_eq!(
        (last["data"].as_u64(), last["offset"].as_u64()),
        (Some(3), Some(3))
    );
    r.close();
    for n in 4..=8 {
        publish(&mut p, n);
    }
    wait_until("4..=8 are numbered", || {
        s.hub.room_position("news").is_some_and(|(o, _)| o == 8)
    });
    // The HTTP API publishes into the same stream.
    let api = http(
        s.addr,
        "POST",
        "/api/v1/rooms/news/publish",
        Some(r#"{"data":9}"#),
    )
    .json();
    assert_eq!(
        (api["offset"].as_u64(), api["epoch"].as_str()),
        (Some(9), Some(&*epoch))
    );
    let mut back = Client::connect_on_shard(&s, "r", 0);
    let ack = join(&mut back, "news", Some((3, &epoch)));
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["offset"], 9);
    publish(&mut p, 10);
    let got: Vec<(u64, u64)> = (0..7)
        .map(|_| {
            let m = back.expect("message");
            (m["offset"].as_u64().unwrap(), m["data"].as_u64().unwrap())
        })
        .collect();
    let want: Vec<(u64, u64)> = (4..=10).map(|n| (n, n)).collect();
    assert_eq!(got, want, "4..=9 from history, then 10 live");
    back.expect_silence(Duration::from_millis(100));
}

/// Two publishers (one per shard) publish as fast as they can while clients on both shards
/// join with `recover` over and over: each recovering client must see, after its ack, the
/// offsets right after its position with no gap and no repeat.
#[test]
fn publishers_on_both_shards_racing_recoveries_lose_and_repeat_nothing() {
    // Publishers and `first` never read: their queues may grow for the test's few seconds.
    let s = TestServer::start(|c| {
        no_limits(c);
        c.history_size = 1_000_000;
        c.max_queue_bytes = 1 << 30;
        c.write_stall_timeout = Duration::from_secs(300);
    });
    let mut first = Client::connect_on_shard(&s, "first", 0);
    let epoch = join(&mut first, "race", None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..2)
        .map(|shard| {
            let mut p = Client::connect_on_shard(&s, "p", shard);
            join(&mut p, "race", None);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    p.send_json(
                        json!({"type":"publish","room":"race","data":n,"exclude_self":true}),
                    );
                    if n % 8 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                p.close();
            })
        })
        .collect();
    wait_until("publications flow", || {
        s.hub.room_position("race").is_some_and(|(o, _)| o > 200)
    });
    for round in 0..8u64 {
        let mut c = Client::connect_on_shard(&s, "r", round % 2);
        let (from, _) = s.hub.room_position("race").unwrap();
        let from = from.saturating_sub(50);
        let ack = join(&mut c, "race", Some((from, &epoch)));
        assert_eq!(ack["recovered"], true, "{ack}");
        let at = ack["offset"].as_u64().unwrap();
        let expected: Vec<u64> = (from + 1..=at + 100).collect();
        let got: Vec<u64> = expected
            .iter()
            .map(|_| c.expect("message")["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(got, expected, "round {round}: replay to {at}, then live");
        c.close();
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.join().unwrap();
    }
}

#[test]
fn recovery_fails_cleanly_past_the_history_or_in_another_epoch() {
    let s = TestServer::start(|c| {
        no_limits(c);
        c.history_size = 2;
    });
    let mut p = Client::connect(&s, Some("p"));
    let epoch = join(&mut p, "r", None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for n in 0..4 {
        p.send_json(json!({"type":"publish","room":"r","data":n,"exclude_self":true}));
    }
    wait_until("published", || {
        s.hub.room_position("r").is_some_and(|(o, _)| o == 4)
    });
    let mut c = Client::connect(&s, Some("c"));
    let ack = join(&mut c, "r", Some((1, &epoch)));
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(false), Some(4)),
        "2 was pushed out: {ack}"
    );
    c.expect_silence(Duration::from_millis(100));
    let mut d = Client::connect(&s, Some("d"));
    let ack = join(&mut d, "r", Some((3, "0123456789abcdef")));
    assert_eq!(ack["recovered"], false, "another epoch");
    d.expect_silence(Duration::from_millis(100));
    let stats = s.hub.stats();
    assert_eq!((stats.recoveries, stats.recoveries_failed), (0, 2));
    // A malformed recover is a bad request, not a silent fresh join.
    d.send_json(json!({"type":"join","room":"q","id":1,"recover":{"offset":"x"}}));
    assert_eq!(d.expect("error")["code"], "bad_request");
}

/// The binary with `--history-size`/`SHARDHUB_HISTORY_TTL`, until it listens.
fn spawn_binary(port: u16) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardhub"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--shards", "1"])
        .args(["--history-size", "10"])
        .env("SHARDHUB_HISTORY_TTL", "1m")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(&mut child);
    child
}

fn stop_binary(mut child: std::process::Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
}

/// A first message of a raw connection that is not the welcome is a failure.
fn ws(port: u16, user: &str) -> tungstenite::WebSocket<std::net::TcpStream> {
    let mut ws = connect_raw(&format!("ws://127.0.0.1:{port}/ws?user={user}")).unwrap();
    assert!(ws.read().unwrap().into_text().unwrap().contains("welcome"));
    ws
}

fn send_read(ws: &mut tungstenite::WebSocket<std::net::TcpStream>, v: Value) -> Value {
    ws.send(tungstenite::Message::text(v.to_string())).unwrap();
    serde_json::from_str(&ws.read().unwrap().into_text().unwrap()).unwrap()
}

#[test]
fn a_restarted_server_starts_new_epochs() {
    let port = free_port();
    let child = spawn_binary(port);
    let mut a = ws(port, "a");
    let ack = send_read(&mut a, json!({"type":"join","room":"r","id":1}));
    let epoch = ack["epoch"]
        .as_str()
        .expect("--history-size applies")
        .to_string();
    let msg = send_read(&mut a, json!({"type":"publish","room":"r","data":"x"}));
    assert_eq!(msg["offset"], 1);
    stop_binary(child);

    let child = spawn_binary(port);
    let mut b = ws(port, "a");
    let req = json!({"type":"join","room":"r","id":1,"recover":{"offset":1,"epoch":epoch}});
    let ack = send_read(&mut b, req);
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(
        ack["epoch"],
        epoch.as_str(),
        "the stream was lost with the process"
    );
    assert_eq!(ack["offset"], 0);
    stop_binary(child);
}

#[test]
fn per_room_history_from_the_config_file_the_hub_and_the_http_api() {
    let c = shardhub::Config::from_toml_str(
        "history_size = 0\n[history_rooms.lobby]\nsize = 5\nttl = \"2m\"\n",
    )
    .unwrap();
    assert_eq!(c.history_rooms["lobby"].size, 5);
    assert_eq!(c.history_rooms["lobby"].ttl, Duration::from_secs(120));
    let s = TestServer::start(|cfg| {
        no_limits(cfg);
        cfg.history_rooms = c.history_rooms.clone();
    });
    let mut m = Client::connect(&s, Some("m"));
    assert_eq!(
        join(&mut m, "lobby", None)["offset"],
        0,
        "lobby has history"
    );
    let plain = join(&mut m, "plain", None);
    assert!(
        plain.get("offset").is_none(),
        "no history elsewhere: {plain}"
    );
    let r = http(
        s.addr,
        "PUT",
        "/api/v1/rooms/plain/history",
        Some(r#"{"size":3,"ttl":"30s"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(
        (body["size"].as_u64(), body["offset"].as_u64()),
        (Some(3), Some(0))
    );
    m.send_json(json!({"type":"publish","room":"plain","data":1}));
    assert_eq!(m.expect("message")["offset"], 1, "numbered from now on");
    s.hub.set_room_history("other", 4, Duration::ZERO).unwrap();
    assert!(join(&mut m, "other", None).get("epoch").is_some());
    let bad = http(
        s.addr,
        "PUT",
        "/api/v1/rooms/x/history",
        Some(r#"{"ttl":"1s"}"#),
    );
    assert_eq!((bad.status, bad.error_code()), (400, "bad_request".into()));
}

#[test]
fn cluster_mode_refuses_history_with_a_clear_error() {
    let c = shardhub::Config {
        cluster: Some("nats://127.0.0.1:4222".into()),
        history_size: 10,
        ..shardhub::Config::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("cluster mode") && e.contains("redis://"), "{e}");
    let redis = shardhub::Config {
        cluster: Some("redis://127.0.0.1:6379".into()),
        ..c
    };
    assert!(redis.validate().is_ok(), "history lives in Redis there");
}
