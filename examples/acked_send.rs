//! The cost of `"ack": true` against a plain `send`, and the memory of stored offline messages,
//! measured against an in-process server over loopback (bench/runs/2026-12-02-acked-send).
//!
//! One sender, one recipient, one message in flight (closed loop, so latency is a round trip
//! and rate its inverse; no coordinated-omission correction is needed with one in flight):
//! * `plain`: `send`, the sender waits for its `ack`, the recipient reads the `direct`; the
//!   time is send to the later of the two.
//! * `ack`: `send` with `"ack": true`, the recipient answers `received`, the sender waits for
//!   `delivered`; the time is send to `delivered`.
//!
//! Then `--stored N` messages of 100 bytes of data each for 1,000 offline users go through
//! `Hub::send_direct` with `store`, and the process's resident memory before and after gives the
//! bytes per stored message (frames included).
//!
//! `cargo run --release --example acked_send -- ROUNDS STORED`

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardhub::{Config, Server};
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn connect(addr: std::net::SocketAddr, user: &str) -> Ws {
    let (mut ws, _) =
        tungstenite::connect(format!("ws://{addr}/ws?user={user}")).expect("connects");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_nodelay(true).expect("nodelay");
    }
    let w = read(&mut ws);
    assert_eq!(w["type"], "welcome");
    ws
}

fn read(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            _ => continue,
        }
    }
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).expect("send");
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

fn run(ack: bool, rounds: usize, al: &mut Ws, bob: &mut Ws) -> Vec<Duration> {
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        if ack {
            send(al, json!({"type":"send","to":"bob","data":i,"ack":true}));
            let d = read(bob);
            send(bob, json!({"type":"received","mid":d["mid"]}));
            assert_eq!(read(al)["type"], "ack");
            assert_eq!(read(al)["type"], "delivered");
        } else {
            send(al, json!({"type":"send","to":"bob","data":i}));
            assert_eq!(read(bob)["type"], "direct");
            assert_eq!(read(al)["type"], "ack");
        }
        times.push(t.elapsed());
    }
    times
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let stored: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        shards: 2,
        pin_cores: false,
        rate_messages_per_sec: 0,
        rate_bytes_per_sec: 0,
        offline_max_users: 1_000_000,
        offline_max_messages: 1_000_000,
        offline_max_bytes: 1 << 30,
        offline_max_total_bytes: 1 << 40,
        ..Config::default()
    };
    let server = Server::builder(config).build().expect("builds");
    let addr = server.local_addr();
    let hub = server.hub();
    let running = server.spawn().expect("starts");
    let mut al = connect(addr, "al");
    let mut bob = connect(addr, "bob");
    // Warm up both paths, then alternate them in blocks so drift in the host's load hits both.
    run(false, 1000, &mut al, &mut bob);
    run(true, 1000, &mut al, &mut bob);
    let (mut plain, mut acked) = (Vec::new(), Vec::new());
    let block = (rounds / 10).max(1);
    for _ in 0..10 {
        plain.extend(run(false, block, &mut al, &mut bob));
        acked.extend(run(true, block, &mut al, &mut bob));
    }
    println!("mode   rounds  sends/s  p50_us  p99_us  p999_us");
    for (name, mut t) in [("plain", plain), ("ack", acked)] {
        let total: Duration = t.iter().sum();
        t.sort();
        println!(
            "{name:<6} {:>6} {:>8.0} {:>7.1} {:>7.1} {:>8.1}",
            t.len(),
            t.len() as f64 / total.as_secs_f64(),
            percentile(&t, 0.5),
            percentile(&t, 0.99),
            percentile(&t, 0.999),
        );
    }
    let data = format!("\"{}\"", "x".repeat(98));
    let before = rss_bytes();
    for i in 0..stored {
        let user = format!("u{}", i % 1000);
        let sent = hub.send_direct(&user, &data, true).expect("stored");
        assert!(sent.stored.is_some());
    }
    let after = rss_bytes();
    let (users, messages) = hub.offline_size();
    let frame_bytes = hub
        .offline_messages("u0")
        .first()
        .map_or(0, |m| m.len() + 2);
    println!(
        "stored {messages} messages for {users} users: RSS +{} bytes, {:.0} bytes per message \
         (its frame: {frame_bytes} bytes)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / messages as f64
    );
    drop(al);
    drop(bob);
    running.shutdown().expect("shuts down");
}
