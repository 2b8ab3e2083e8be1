//! The server's WebSocket frame reader: tungstenite's `WebSocket` in the server role with the
//! shard's configuration, fed frames in arbitrary chunks, the way `Shard::read_ws` drives it.
//!
//! The input is a list of frames (FIN, RSV bits, any opcode including the reserved ones, masked
//! or not, the length in its minimal or a non-minimal encoding or a lie up to 2^64-1, a
//! payload) serialized to bytes, the read sizes the socket hands out (0 is a spurious
//! WouldBlock mid-stream) and whether the peer then closes. Text messages go on through the
//! JSON path and binary ones through `parse_binary`, as the shard does. Invariants:
//!
//! * nothing panics, whatever the bytes and however they are split;
//! * no message larger than the limit (4 KiB here) is ever returned, no control frame payload
//!   larger than 125 bytes;
//! * memory stays bounded by the limit: no read allocates in proportion to a declared length
//!   the bytes do not back, beyond `max_frame_size` (a global allocator counts every byte).
//!
//! Findings (see README.md): after a frame header over the limit tungstenite cannot read on
//! (the shard now stops reading there); within the limit it reserves the declared length as
//! soon as it has the header, before any payload arrives.
#![no_main]

use std::io::{self, Read, Write};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardhub::protocol::envelope::{parse_envelope, parse_value};
use shardhub::protocol::json::DEFAULT_MAX_DEPTH;
use shardhub_fuzz::counting::{self, Counting};
use shardhub_fuzz::oracle;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// The message and frame limit: small, so that inputs of a few KiB cross it.
const MAX: usize = 4096;

/// Room for everything a read may hold at once: the input buffer (the reserved frame, doubled
/// by growth), the fragments collected so far (doubled by growth), the frame being added, and
/// small change.
const MEMORY_BOUND: usize = 8 * MAX + 16 * 1024;

/// The shard's configuration (`Shard::new` in `src/shard/mod.rs`) with a 4 KiB limit.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX))
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Arbitrary, Debug)]
struct Input {
    frames: Vec<Frame>,
    /// Bytes after the frames: a truncated header, garbage.
    tail: Vec<u8>,
    /// Read sizes, cycled; 0 is a WouldBlock before the data is exhausted.
    chunks: Vec<u16>,
    /// After the data: end of stream (the peer closed) rather than WouldBlock.
    eof: bool,
}

#[derive(Arbitrary, Debug)]
struct Frame {
    fin: bool,
    /// RSV1-3 (low three bits).
    rsv: u8,
    /// Low four bits: data 0-2, reserved 3-7, control 8-10, reserved 11-15.
    opcode: u8,
    mask: Option<[u8; 4]>,
    length: Length,
    payload: Payload,
}

/// How the payload length is written.
#[derive(Arbitrary, Debug)]
enum Length {
    /// The shortest encoding.
    Minimal,
    /// 126 and 16 bits, whatever the length.
    Sixteen,
    /// 127 and 64 bits, whatever the length.
    SixtyFour,
    /// A declared length the payload does not match, in the encoding its size calls for.
    Lie(u64),
    /// 127 and a length with the top bit set (the RFC forbids it).
    TopBit(u64),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Text(String),
    /// A byte repeated: payloads around and beyond the limit from a few input bytes.
    Repeat {
        byte: u8,
        count: u16,
    },
    /// A close payload: code and reason.
    Close {
        code: u16,
        reason: String,
    },
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Text(s) => s.as_bytes().to_vec(),
            Self::Repeat { byte, count } => vec![*byte; usize::from(*count)],
            Self::Close { code, reason } => {
                let mut b = code.to_be_bytes().to_vec();
                b.extend_from_slice(reason.as_bytes());
                b
            }
        }
    }
}

impl Frame {
    fn write(&self, out: &mut Vec<u8>) {
        let mut payload = self.payload.bytes();
        out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 15));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let n = payload.len() as u64;
        let (declared, form) = match self.length {
            Length::Minimal => (n, 0),
            Length::Sixteen => (n, 16),
            Length::SixtyFour => (n, 64),
            Length::Lie(d) => (d, 0),
            Length::TopBit(d) => (d | 1 << 63, 64),
        };
        match form {
            0 if declared < 126 => out.push(mask_bit | declared as u8),
            0 | 16 if declared <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(declared as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&declared.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            out.extend_from_slice(&key);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        out.extend_from_slice(&payload);
    }
}

/// A socket that hands out `data` in the given chunk sizes, then WouldBlock (or end of stream),
/// and swallows what tungstenite writes (pongs, close replies), as `ConnIo` queues it.
struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    chunks: &'a [u16],
    next: usize,
    eof: bool,
    written: usize,
}

impl Chunked<'_> {
    fn exhausted(&self) -> bool {
        self.pos == self.data.len()
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exhausted() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let chunk = match self.chunks.get(self.next % self.chunks.len().max(1)) {
            None => usize::MAX,
            Some(0) => {
                self.next += 1;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Some(&n) => usize::from(n),
        };
        self.next += 1;
        let n = chunk.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Chunked<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the shard does with a message: text through the JSON path, binary through its header.
fn handle(msg: &Message) {
    match msg {
        Message::Text(t) => {
            assert!(t.len() <= MAX, "a text message of {} bytes", t.len());
            let mut bytes = t.as_bytes().to_vec();
            let mut bufs = simd_json::Buffers::default();
            match parse_value(&mut bytes, &mut bufs, DEFAULT_MAX_DEPTH) {
                Err(e) => oracle::assert_refusal_valid(None, &e),
                Ok(v) => match parse_envelope(&v, 128) {
                    Err(e) => oracle::assert_refusal_valid(Some(&v), &e),
                    Ok(env) => oracle::assert_replies_valid(&env, 128),
                },
            };
        }
        Message::Binary(b) => {
            assert!(b.len() <= MAX, "a binary message of {} bytes", b.len());
            oracle::check_binary(b, 128);
        }
        Message::Ping(p) | Message::Pong(p) => {
            assert!(p.len() <= 125, "a control payload of {} bytes", p.len())
        }
        Message::Close(Some(c)) => assert!(c.reason.len() <= 123),
        Message::Close(None) | Message::Frame(_) => {}
    }
}

fuzz_target!(|input: Input| {
    let mut data = Vec::new();
    for f in input.frames.iter().take(64) {
        f.write(&mut data);
    }
    data.extend_from_slice(&input.tail);
    let stream = Chunked {
        data: &data,
        pos: 0,
        chunks: &input.chunks,
        next: 0,
        eof: input.eof,
        written: 0,
    };

    let base = counting::reset_peak();
    let mut ws = WebSocket::from_raw_socket(stream, Role::Server, Some(config()));
    let mut closing = false;
    // Bounded like the shard's loop; every iteration either consumes bytes, ends, or is a
    // chunk-0 WouldBlock, so this is far more than the input can need.
    for _ in 0..data.len() + input.chunks.len() + 16 {
        let result = ws.read();
        let peak = counting::peak() - base;
        assert!(
            peak <= MEMORY_BOUND + data.len(),
            "a read peaked at {peak} bytes for {} bytes of input",
            data.len()
        );
        match result {
            Ok(msg) => {
                if !closing {
                    handle(&msg);
                }
                drop(msg);
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                if ws.get_ref().exhausted() {
                    break;
                }
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
            // A second fault after our close frame: the shard drops the connection.
            Err(_) if closing => break,
            Err(e) => {
                // The shard answers a fault with a close frame (`on_ws_error`) and reads on
                // for the peer's reply, except after a frame over the limit: tungstenite keeps
                // its header and cannot read on (tests/bad_input.rs,
                // reading_after_an_oversized_frame_header_does_not_panic).
                let code = match e {
                    tungstenite::Error::Capacity(_) => CloseCode::Size,
                    tungstenite::Error::Utf8(_) => CloseCode::Invalid,
                    _ => CloseCode::Protocol,
                };
                let _ = ws.close(Some(CloseFrame {
                    code,
                    reason: e.to_string().chars().take(100).collect::<String>().into(),
                }));
                if code == CloseCode::Size {
                    break;
                }
                closing = true;
            }
        }
        counting::reset_peak();
    }
});
