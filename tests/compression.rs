//! permessage-deflate over real sockets: a hand-written compressing client (tungstenite cannot
//! negotiate extensions) built on `flate2`, against the server in hub and echo mode.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};

use crate::util::{http, upgrade_request, Client, TestServer, PATIENCE};

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Raw DEFLATE with a sync flush, the tail removed (RFC 7692, section 7.2.1).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let done = z.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity());
        }
        z.compress_vec(&data[done..], &mut out, FlushCompress::Sync)
            .unwrap();
        if z.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut z = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(16 << 20);
    z.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// A masked client frame; `rsv1` marks the first frame of a compressed message.
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut rsv = 0;
    if rsv1 {
        rsv = 4;
    }
    crate::util::raw_frame(fin, rsv, opcode, payload, true)
}

/// A server frame as received: (rsv1, opcode, payload as sent).
struct Frame {
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A minimal compressing WebSocket client.
struct DeflateClient {
    s: TcpStream,
    /// The `Sec-WebSocket-Extensions` the server answered, if any.
    accepted: Option<String>,
}

impl DeflateClient {
    fn connect(addr: SocketAddr, path: &str, offer: &str) -> Self {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let extra = format!("Sec-WebSocket-Extensions: {offer}\r\n");
        s.write_all(upgrade_request(path, &extra).as_bytes())
            .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let accepted = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
            .map(str::to_owned);
        Self { s, accepted }
    }

    fn recv(&mut self) -> Frame {
        let mut h = [0u8; 2];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are unmasked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.s.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                self.s.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.s.read_exact(&mut payload).unwrap();
        assert!(h[0] & 0x80 != 0, "the server sends whole messages");
        Frame {
            rsv1: h[0] & 0x40 != 0,
            opcode: h[0] & 0x0f,
            payload,
        }
    }

    /// The next message, inflated if compressed: (was compressed, opcode, data).
    fn recv_message(&mut self) -> (bool, u8, Vec<u8>) {
        let f = self.recv();
        let data = if f.rsv1 {
            inflate(&f.payload)
        } else {
            f.payload
        };
        (f.rsv1, f.opcode, data)
    }

    fn recv_json(&mut self) -> (bool, Value) {
        let (z, op, data) = self.recv_message();
        assert_eq!(op, 1);
        (z, serde_json::from_slice(&data).unwrap())
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Sends `data` compressed, split into `parts` frames.
    fn send_compressed(&mut self, opcode: u8, data: &[u8], parts: usize) {
        self.send_deflated(opcode, &deflate(data), parts);
    }

    /// Sends already compressed bytes as one message in `parts` frames.
    fn send_deflated(&mut self, opcode: u8, z: &[u8], parts: usize) {
        let step = z.len().div_ceil(parts).max(1);
        let chunks: Vec<&[u8]> = z.chunks(step).collect();
        for (i, c) in chunks.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == chunks.len();
            let op = if first { opcode } else { 0 };
            self.send(&frame(last, first, op, c));
        }
    }

    fn expect_close(&mut self) -> u16 {
        loop {
            let f = self.recv();
            if f.opcode == 8 {
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }
}

fn counter(addr: SocketAddr, name: &str) -> u64 {
    let st = http(addr, "GET", "/api/v1/stats", None).json();
    st["counters"][name].as_u64().unwrap_or(0)
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A chat message of about 300 bytes, as the measurements use.
fn chat(i: usize) -> Value {
    json!({"user":"alice","text": format!("message {i}: the quick brown fox jumps over the lazy dog while the quick brown fox watches; the lazy dog sleeps through it all and the fox jumps again, again and again, until the room is quiet"),"ts":1764660000000u64 + i as u64})
}

#[test]
fn a_publication_reaches_compressing_and_plain_members_and_is_compressed_once_per_shard() {
    let s = TestServer::start(|c| c.compression = true);
    let mut zs: Vec<DeflateClient> = (0..6)
        .map(|i| DeflateClient::connect(s.addr, &format!("/ws?user=z{i}"), OFFER))
        .collect();
    for z in &mut zs {
        assert_eq!(
            z.accepted.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        let (_, welcome) = z.recv_json();
        assert_eq!(welcome["type"], "welcome");
        // Requests may be compressed too.
        z.send_compressed(1, br#"{"type":"join","room":"lobby","id":1}"#, 1);
        let (_, ack) = z.recv_json();
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let mut plain = Client::connect(&s, Some("plain"));
    plain.send_json(json!({"type":"join","room":"lobby","id":1}));
    plain.expect("ack");
    let before = counter(s.addr, "compressed_frames");
    let data = chat(1);
    plain.send_json(json!({"type":"publish","room":"lobby","data":data}));
    let want = plain.expect("message");
    assert_eq!(want["data"], data);
    for z in &mut zs {
        // Presence frames may come first (small, so plain).
        let got = loop {
            let (compressed, v) = z.recv_json();
            if v["type"] == "message" {
                assert!(compressed, "a 300-byte publication goes compressed");
                break v;
            }
        };
        assert_eq!(got, want);
    }
    let made = counter(s.addr, "compressed_frames") - before;
    assert!(
        (1..=2).contains(&made),
        "one publication to 6 compressing members on 2 shards compressed {made} times"
    );
    assert!(counter(s.addr, "compressed_deliveries") >= 6);
    assert!(counter(s.addr, "compression_bytes_saved") > 0);
}

#[test]
fn echo_mode_echoes_compressed_messages_whole_and_fragmented() {
    let s = TestServer::start(|c| {
        c.compression = true;
        c.echo = true;
    });
    let mut z = DeflateClient::connect(s.addr, "/", OFFER);
    assert!(z.accepted.is_some());
    let text = "ünïcode text that repeats, repeats, repeats. ".repeat(40);
    for parts in [1, 2, 5] {
        z.send_compressed(1, text.as_bytes(), parts);
        assert_eq!(z.recv_message(), (true, 1, text.clone().into_bytes()));
    }
    // A ping between the fragments of a compressed message is answered at once.
    let bin: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
    let c = deflate(&bin);
    let (a, b) = c.split_at(c.len() / 2);
    z.send(&frame(false, true, 2, a));
    z.send(&frame(true, false, 9, b"ping"));
    z.send(&frame(true, false, 0, b));
    let pong = z.recv();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"ping"[..]));
    assert_eq!(z.recv_message(), (true, 2, bin));
    // Uncompressed messages still work on a compressing connection, and small replies go
    // plain (below compression_min_bytes).
    z.send(&frame(true, false, 1, b"tiny"));
    assert_eq!(z.recv_message(), (false, 1, b"tiny".to_vec()));
    // Invalid UTF-8 inside a compressed text message is caught by tungstenite: 1007.
    z.send_compressed(1, &[b'a', 0xff, 0xfe, b'b'], 1);
    assert_eq!(z.expect_close(), 1007);
}

#[test]
fn a_compression_bomb_gets_1009_and_bad_framing_1002() {
    let s = TestServer::start(|c| {
        c.compression = true;
        c.echo = true;
        c.max_message_bytes = 64 * 1024;
    });
    let mut z = DeflateClient::connect(s.addr, "/", OFFER);
    // 20 MiB of zeros deflate to about 20 KB: a frame well within the 64 KiB limit that
    // inflates to 320 times it.
    let bomb = deflate(&vec![0u8; 20 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    z.send_deflated(2, &bomb, 1);
    assert_eq!(z.expect_close(), 1009);

    let mut z = DeflateClient::connect(s.addr, "/", OFFER);
    z.send(&frame(true, true, 9, b"")); // RSV1 on a ping
    assert_eq!(z.expect_close(), 1002);
    // A session that did not negotiate compression still refuses RSV1 (tungstenite).
    let mut plain = DeflateClient::connect(s.addr, "/", "x-other");
    assert_eq!(plain.accepted, None);
    plain.send_compressed(1, b"hello hello hello", 1);
    assert_eq!(plain.expect_close(), 1002);
}

#[test]
fn negotiation_follows_the_config_and_the_offers() {
    let off = TestServer::start(|_| {});
    assert_eq!(
        DeflateClient::connect(off.addr, "/ws", OFFER).accepted,
        None,
        "off by default"
    );
    let s = TestServer::start(|c| c.compression = true);
    let z = DeflateClient::connect(
        s.addr,
        "/ws",
        "permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=10",
    );
    assert_eq!(
        z.accepted.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    let (status, _) = crate::util::raw_http(
        s.addr,
        upgrade_request("/ws", "Sec-WebSocket-Extensions: permessage-deflate; =\r\n").as_bytes(),
    );
    assert_eq!(status, 400);
}

#[test]
fn a_small_window_gets_compressed_frames_only_for_messages_that_fit() {
    let s = TestServer::start(|c| {
        c.compression = true;
        c.echo = true;
    });
    let mut z = DeflateClient::connect(s.addr, "/", "permessage-deflate; server_max_window_bits=9");
    let small = "abc".repeat(150); // 450 bytes <= 512
    let large = "abc".repeat(400); // 1200 bytes > 512
    z.send_compressed(1, small.as_bytes(), 1);
    assert_eq!(z.recv_message(), (true, 1, small.into_bytes()));
    z.send_compressed(1, large.as_bytes(), 1);
    assert_eq!(z.recv_message(), (false, 1, large.into_bytes()));
}
