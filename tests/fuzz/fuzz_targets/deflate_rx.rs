//! The read path of a compressing connection: the permessage-deflate shim
//! (`shardhub::protocol::deflate::rx`) in front of tungstenite, fed in arbitrary chunks, the way
//! `Engine::ws_input_inflating` drives it.
//!
//! The input is a list of pieces: compressed messages (any data, including runs that inflate
//! far past the limit, cut into any number of fragments, with control frames between them),
//! raw frames with any header bits (RSV1 where it is forbidden, continuations out of place,
//! unmasked, lying lengths) and garbage that claims to be compressed. Invariants:
//!
//! * nothing panics, whatever the bytes and however they are split;
//! * every call uses at least one byte and hands tungstenite at most the bytes it used plus one
//!   inflated message (at most the limit);
//! * memory stays bounded by the limit, however far the data claims to inflate (a global
//!   allocator counts every byte);
//! * a stream of only well-formed compressed messages within the limit comes out of
//!   tungstenite as exactly those messages.
#![no_main]

use std::io::{self, Read, Write};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardhub::protocol::deflate::codec::{server_frame, Compressor};
use shardhub::protocol::deflate::{rewrite, Inflater};
use shardhub::protocol::frame::{encode, OpCode};
use shardhub_fuzz::counting::{self, Counting};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

/// The message limit: small, so that inputs of a few bytes inflate past it.
const MAX: usize = 4096;

/// tungstenite's share (as in `frame_reader`), the compressed message being collected, the
/// inflater's output and its DEFLATE state (window and tables), and the rewritten bytes.
const MEMORY_BOUND: usize = 16 * MAX + 128 * 1024;

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Arbitrary, Debug)]
struct Input {
    pieces: Vec<Piece>,
    /// Read sizes, cycled.
    chunks: Vec<u16>,
}

#[derive(Arbitrary, Debug)]
enum Piece {
    /// A well-formed compressed message.
    Compressed {
        binary: bool,
        data: Data,
        /// Fragments (1 + this, at most 8).
        fragments: u8,
        /// A ping after the first fragment.
        ping: bool,
        key: [u8; 4],
    },
    /// Any frame: header bits as given, the payload deflated or raw.
    Raw {
        b0: u8,
        mask: Option<[u8; 4]>,
        /// A declared length the payload does not match.
        lie: Option<u64>,
        deflate: bool,
        data: Data,
    },
}

#[derive(Arbitrary, Debug)]
enum Data {
    Bytes(Vec<u8>),
    /// A byte repeated: inflates far past the limit from a few compressed bytes.
    Run { byte: u8, count: u32 },
}

impl Data {
    fn bytes(&self, text: bool) -> Vec<u8> {
        match self {
            Self::Bytes(b) if text => String::from_utf8_lossy(b).into_owned().into_bytes(),
            Self::Bytes(b) => b.clone(),
            Self::Run { byte, count } => {
                let b = if text { byte & 0x7f } else { *byte };
                vec![b; (*count as usize) % (1 << 18)]
            }
        }
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    match Compressor::default().compress(&encode(OpCode::Binary, data)) {
        Some(f) => {
            let (_, off) = server_frame(&f).expect("a server frame");
            f[off..].to_vec()
        }
        // Not smaller compressed: a stored block (RFC 1951) holds it as is.
        None => {
            let mut v = vec![0x00];
            let n = data.len().min(0xffff) as u16;
            v.extend_from_slice(&n.to_le_bytes());
            v.extend_from_slice(&(!n).to_le_bytes());
            v.extend_from_slice(&data[..usize::from(n)]);
            v
        }
    }
}

fn frame(out: &mut Vec<u8>, b0: u8, payload: &[u8], mask: Option<[u8; 4]>, lie: Option<u64>) {
    out.push(b0);
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = lie.unwrap_or(payload.len() as u64);
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&n.to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// tungstenite's stream: the rewritten bytes in, its writes (pongs) swallowed.
struct Feed<'a>(&'a [u8]);

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

impl Write for Feed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|input: Input| {
    let mut wire = Vec::new();
    // The messages tungstenite must return if every piece is well-formed and within the limit.
    let mut expected: Option<Vec<(bool, Vec<u8>)>> = Some(Vec::new());
    for p in input.pieces.iter().take(32) {
        match p {
            Piece::Compressed { binary, data, fragments, ping, key } => {
                let plain = data.bytes(!binary);
                let z = deflate(&plain);
                let parts = usize::from(fragments % 8) + 1;
                let step = z.len().div_ceil(parts).max(1);
                let cuts: Vec<&[u8]> = z.chunks(step).collect();
                let cuts = if cuts.is_empty() { vec![&z[..]] } else { cuts };
                for (i, c) in cuts.iter().enumerate() {
                    let fin = if i + 1 == cuts.len() { 0x80 } else { 0 };
                    let op = match (i, binary) {
                        (0, true) => 0x42,
                        (0, false) => 0x41,
                        _ => 0,
                    };
                    frame(&mut wire, fin | op, c, Some(*key), None);
                    if i == 0 && *ping {
                        frame(&mut wire, 0x89, b"ping", Some(*key), None);
                    }
                }
                match &mut expected {
                    Some(e) if plain.len() <= MAX => e.push((*binary, plain)),
                    _ => expected = None,
                }
            }
            Piece::Raw { b0, mask, lie, deflate: d, data } => {
                let bytes = data.bytes(false);
                let payload = if *d { deflate(&bytes) } else { bytes };
                frame(&mut wire, *b0, &payload, *mask, *lie);
                expected = None;
            }
        }
    }

    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    let mut ws = WebSocketContext::new(Role::Server, Some(config));
    let (mut state, mut inflater, mut out) = (None, Inflater::default(), Vec::new());
    let mut got = Vec::new();
    let base = counting::reset_peak();
    let mut rest = &wire[..];
    let mut next = 0;
    'read: while !rest.is_empty() {
        let size = match input.chunks.get(next % input.chunks.len().max(1)) {
            Some(&n) => usize::from(n).max(1),
            None => usize::MAX,
        };
        next += 1;
        let mut chunk = &rest[..size.min(rest.len())];
        rest = &rest[chunk.len()..];
        while !chunk.is_empty() {
            out.clear();
            let used = match rewrite(&mut state, chunk, MAX, &mut inflater, &mut out) {
                Ok(used) => used,
                Err(_) => {
                    assert!(state.is_none(), "an error leaves no state");
                    break 'read;
                }
            };
            assert!(used > 0 && used <= chunk.len(), "used {used} of {}", chunk.len());
            assert!(
                out.len() <= used + MAX + 28,
                "{} bytes handed on for {used} bytes",
                out.len()
            );
            chunk = &chunk[used..];
            let mut feed = Feed(&out);
            loop {
                match ws.read(&mut feed) {
                    Ok(Message::Text(t)) => got.push((false, t.as_bytes().to_vec())),
                    Ok(Message::Binary(b)) => got.push((true, b.to_vec())),
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break 'read,
                }
            }
            let peak = counting::peak().saturating_sub(base);
            // Plus the messages kept for the final check (32 pieces of at most MAX, doubled by
            // growth).
            assert!(
                peak <= MEMORY_BOUND + 2 * wire.len() + 64 * MAX,
                "peaked at {peak} bytes for {} bytes of input",
                wire.len()
            );
        }
    }
    if let Some(e) = expected {
        assert!(rest.is_empty());
        assert_eq!(got, e, "well-formed compressed messages come out as sent");
    }
});
