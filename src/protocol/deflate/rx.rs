//! The read side of a compressing connection: a frame shim in front of tungstenite.
//!
//! tungstenite 0.30 has no extension support and fails every frame with RSV1 set
//! (`NonZeroReservedBits`). Rather than parse client frames twice or replace tungstenite's
//! reader, the shim rewrites the byte stream: it walks the client's frames, passes every frame
//! that is not part of a compressed message through byte for byte, and turns each compressed
//! message (RSV1 on its first frame, then its continuation frames, RFC 7692 section 6.1) into
//! one equivalent uncompressed final frame, masked with a zero key. tungstenite then still does
//! all the validation it does for plain connections: masking, control frames, close codes,
//! UTF-8, fragmentation order, `max_message_size`. The shim itself checks only what tungstenite
//! cannot see any more: RSV1 where RFC 7692 forbids it, data frames inside a compressed
//! message, and the size limit, which it applies to the inflated bytes.
//!
//! Untrusted input: nothing here panics or recurses, and memory is bounded by the limit. A
//! compressed message's bytes are kept until its final frame (at most `limit` plus DEFLATE's
//! worst-case expansion), then inflated by the shard's one [`Inflater`] into at most `limit`
//! bytes. Between reads a connection keeps an [`RxState`] only while it is inside a frame or a
//! compressed message; an idle connection holds nothing.

use super::codec::{InflateError, Inflater, RSV1};

/// Longest client frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_CLIENT_HEADER: usize = 14;

/// Why the shim stopped reading: the connection closes with the error's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxError {
    /// A frame breaks RFC 7692's framing rules: 1002.
    Protocol(&'static str),
    /// The message inflates past the limit, or its compressed form is already longer: 1009.
    TooBig,
    /// The compressed data is not valid DEFLATE: 1007.
    Invalid,
}

impl From<InflateError> for RxError {
    fn from(e: InflateError) -> Self {
        match e {
            InflateError::TooBig => Self::TooBig,
            InflateError::Invalid => Self::Invalid,
        }
    }
}

/// A connection's place in the client's frame stream, kept between reads only while it is
/// inside a frame or a compressed message (see the module docs).
#[derive(Debug, Default)]
pub struct RxState {
    /// A frame header received in part.
    head: [u8; MAX_CLIENT_HEADER],
    head_len: usize,
    /// The frame whose payload is being read.
    frame: Option<InFrame>,
    /// The compressed message being received.
    msg: Option<Compressed>,
}

#[derive(Debug)]
struct InFrame {
    remaining: u64,
    /// `None`: passed through. `Some`: part of the compressed message, unmasked with this key.
    inflate: Option<Unmask>,
}

#[derive(Debug)]
struct Unmask {
    key: [u8; 4],
    /// Payload bytes of this frame seen so far, modulo 4.
    at: usize,
    fin: bool,
}

#[derive(Debug)]
struct Compressed {
    opcode: u8,
    /// The unmasked payloads so far.
    data: Vec<u8>,
}

impl RxState {
    fn idle(&self) -> bool {
        self.head_len == 0 && self.frame.is_none() && self.msg.is_none()
    }
}

/// The longest compressed form accepted for a message of at most `limit` bytes: DEFLATE's
/// stored blocks add 5 bytes per 64 KiB, and a flush a few bytes.
pub fn compressed_bound(limit: usize) -> usize {
    limit.saturating_add(limit / 1024).saturating_add(64)
}

/// Rewrites the next bytes from the client into `out` for tungstenite, carrying the
/// connection's place in `state` across calls; returns how many bytes of `input` it used.
///
/// It stops right after each inflated message, so the caller hands `out` to tungstenite and
/// calls again with the rest: `out` then never holds more than one inflated message (at most
/// `limit` bytes) beside the input, where a read full of tiny messages that each inflate to
/// `limit` would otherwise multiply. On an error, `out` still holds the rewriting of every
/// frame before the offending one (tungstenite should read those first); the state is then
/// meaningless and the connection must close.
pub fn rewrite(
    state: &mut Option<Box<RxState>>,
    input: &[u8],
    limit: usize,
    inflater: &mut Inflater,
    out: &mut Vec<u8>,
) -> Result<usize, RxError> {
    let mut st = match state.take() {
        Some(b) => *b,
        None => RxState::default(),
    };
    let left = st.run(input, limit, inflater, out)?;
    if !st.idle() {
        *state = Some(Box::new(st));
    }
    Ok(input.len() - left)
}

impl RxState {
    /// [`rewrite`]'s loop; returns how many input bytes are left.
    fn run(
        &mut self,
        mut input: &[u8],
        limit: usize,
        inflater: &mut Inflater,
        out: &mut Vec<u8>,
    ) -> Result<usize, RxError> {
        loop {
            if self.frame.is_none() && !self.header(&mut input, limit, out)? {
                return Ok(0); // the rest of the header has not arrived
            }
            let Some(f) = &mut self.frame else {
                return Ok(0);
            };
            let n = usize::try_from(f.remaining)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let (now, rest) = input.split_at(n);
            input = rest;
            f.remaining -= n as u64;
            match (&mut f.inflate, &mut self.msg) {
                (Some(u), Some(m)) => {
                    if m.data.len().saturating_add(now.len()) > compressed_bound(limit) {
                        return Err(RxError::TooBig);
                    }
                    m.data.extend(
                        now.iter()
                            .enumerate()
                            .map(|(i, b)| b ^ u.key[(u.at + i) % 4]),
                    );
                    u.at = (u.at + n) % 4;
                }
                _ => out.extend_from_slice(now),
            }
            if f.remaining > 0 {
                return Ok(0); // the input ended inside this frame's payload
            }
            let fin = f.inflate.as_ref().is_some_and(|u| u.fin);
            self.frame = None;
            if fin {
                if let Some(m) = self.msg.take() {
                    let plain = inflater.inflate(&m.data, limit)?;
                    client_header(m.opcode, plain.len(), out);
                    out.extend_from_slice(plain);
                    inflater.shrink();
                    return Ok(input.len());
                }
            }
        }
    }

    /// Reads a frame header (completing one received in part) and decides what its frame is.
    /// Returns `Ok(false)` if the input ended first.
    fn header(
        &mut self,
        input: &mut &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, RxError> {
        let mut take = |st: &mut Self, want: usize| {
            let n = want.saturating_sub(st.head_len).min(input.len());
            st.head[st.head_len..st.head_len + n].copy_from_slice(&input[..n]);
            st.head_len += n;
            *input = &input[n..];
            st.head_len >= want
        };
        if !take(self, 2) {
            return Ok(false);
        }
        let (b0, b1) = (self.head[0], self.head[1]);
        let masked = b1 & 0x80 != 0;
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let len_at = 2 + ext;
        let total = len_at + if masked { 4 } else { 0 };
        if !take(self, total) {
            return Ok(false);
        }
        let h = &self.head[..total];
        let len = match ext {
            0 => u64::from(b1 & 0x7f),
            2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            _ => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        };
        let (fin, rsv1, opcode) = (b0 & 0x80 != 0, b0 & RSV1 != 0, b0 & 0x0f);
        let control = opcode & 0x08 != 0;
        self.head_len = 0;
        let unmask = |h: &[u8]| {
            let mut key = [0u8; 4];
            key.copy_from_slice(&h[len_at..len_at + 4]);
            Unmask { key, at: 0, fin }
        };
        let inflate = if rsv1 {
            if control || opcode == 0 {
                return Err(RxError::Protocol(
                    "RSV1 is only allowed on the first frame of a data message",
                ));
            }
            if b0 & 0x30 != 0 {
                return Err(RxError::Protocol("reserved bits RSV2 and RSV3 must be 0"));
            }
            if self.msg.is_some() {
                return Err(RxError::Protocol(
                    "a new data message inside a fragmented message",
                ));
            }
            if !masked {
                return Err(RxError::Protocol("client frames must be masked"));
            }
            self.msg = Some(Compressed {
                opcode,
                data: Vec::new(),
            });
            Some(unmask(h))
        } else if self.msg.is_some() && opcode == 0 {
            if !masked || b0 & 0x30 != 0 {
                return Err(RxError::Protocol("bad continuation frame"));
            }
            Some(unmask(h))
        } else if self.msg.is_some() && !control {
            return Err(RxError::Protocol(
                "expected a continuation of the compressed message",
            ));
        } else {
            // tungstenite judges every other frame as it would on a plain connection.
            out.extend_from_slice(h);
            None
        };
        if inflate.is_some() && len > compressed_bound(limit) as u64 {
            return Err(RxError::TooBig);
        }
        self.frame = Some(InFrame {
            remaining: len,
            inflate,
        });
        Ok(true)
    }
}

/// A final client frame header for `len` payload bytes, masked with the zero key (so the
/// payload is written as is) as tungstenite's server role requires.
fn client_header(opcode: u8, len: usize, out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0; 4]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::codec::{server_frame, Compressor};
    use crate::protocol::frame::{encode, OpCode};

    /// A masked client frame.
    fn frame(b0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut v = vec![b0];
        let len = payload.len();
        if len < 126 {
            v.push(0x80 | len as u8);
        } else if len <= 0xffff {
            v.push(0x80 | 126);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            v.push(0x80 | 127);
            v.extend_from_slice(&(len as u64).to_be_bytes());
        }
        v.extend_from_slice(&key);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        v
    }

    fn deflated(data: &[u8]) -> Vec<u8> {
        let f = Compressor::default()
            .compress(&encode(OpCode::Binary, data))
            .unwrap();
        let (_, off) = server_frame(&f).unwrap();
        f[off..].to_vec()
    }

    /// Feeds `stream` in chunks of `step` bytes; returns the rewritten bytes or the error.
    fn run(stream: &[u8], step: usize, limit: usize) -> Result<Vec<u8>, RxError> {
        let (mut st, mut inf, mut out) = (None, Inflater::default(), Vec::new());
        for mut chunk in stream.chunks(step.max(1)) {
            while !chunk.is_empty() {
                let used = rewrite(&mut st, chunk, limit, &mut inf, &mut out)?;
                assert!(used > 0 && used <= chunk.len());
                chunk = &chunk[used..];
            }
        }
        assert!(st.is_none(), "a complete stream leaves no state");
        Ok(out)
    }

    const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    #[test]
    fn a_compressed_message_becomes_its_plain_frame_at_any_split() {
        let text = "héllo, compressed world! ".repeat(20);
        let wire = frame(0x80 | RSV1 | 0x1, &deflated(text.as_bytes()), KEY);
        let want = frame(0x81, text.as_bytes(), [0; 4]);
        for step in [1, 2, 3, 7, 64, wire.len()] {
            assert_eq!(run(&wire, step, 1 << 16).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn fragments_and_interleaved_control_frames_are_kept_in_order() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let d = deflated(&data);
        let (a, rest) = d.split_at(d.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let ping = frame(0x89, b"p", KEY);
        let mut wire = frame(RSV1 | 0x2, a, KEY);
        wire.extend(frame(0x00, b, [9, 8, 7, 6]));
        wire.extend(&ping);
        wire.extend(frame(0x80, c, [1, 2, 3, 4]));
        let plain_text = frame(0x81, b"plain", KEY);
        wire.extend(&plain_text);
        let mut want = ping.clone();
        want.extend(frame(0x82, &data, [0; 4]));
        want.extend(&plain_text);
        for step in [1, 5, 100, wire.len()] {
            assert_eq!(run(&wire, step, 1 << 16).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn an_empty_compressed_message_is_an_empty_frame() {
        let wire = frame(0x80 | RSV1 | 0x1, &[0x00], KEY);
        assert_eq!(run(&wire, 1, 100).unwrap(), frame(0x81, b"", [0; 4]));
    }

    #[test]
    fn rfc_7692_framing_violations_are_protocol_errors() {
        let c = deflated(b"abcabcabcabc");
        let cases = [
            frame(0x80 | RSV1 | 0x9, b"", KEY),       // RSV1 on a ping
            frame(0x80 | RSV1, &c, KEY),              // RSV1 on a continuation (opcode 0)
            frame(0x80 | RSV1 | 0x20 | 0x1, &c, KEY), // RSV1 with RSV2
            [frame(RSV1 | 0x1, &c, KEY), frame(0x81, b"x", KEY)].concat(), // data inside
            [
                frame(RSV1 | 0x1, &c, KEY),
                frame(0x80 | RSV1 | 0x1, &c, KEY),
            ]
            .concat(),
        ];
        for wire in cases {
            assert!(
                matches!(run(&wire, 3, 1000), Err(RxError::Protocol(_))),
                "{wire:x?}"
            );
        }
        // Unmasked compressed frames too (tungstenite would refuse a plain one).
        let mut unmasked = vec![0x80 | RSV1 | 0x1, c.len() as u8];
        unmasked.extend(&c);
        assert!(matches!(run(&unmasked, 3, 1000), Err(RxError::Protocol(_))));
    }

    #[test]
    fn a_bomb_is_too_big_and_garbage_is_invalid() {
        let bomb = frame(0x80 | RSV1 | 0x2, &deflated(&vec![b'a'; 10 << 20]), KEY);
        assert!(bomb.len() < 20_000);
        assert_eq!(run(&bomb, 4096, 64 * 1024), Err(RxError::TooBig));
        let garbage = frame(0x80 | RSV1 | 0x2, &[0xff; 10], KEY);
        assert_eq!(run(&garbage, 4, 1000), Err(RxError::Invalid));
        // A header that declares more compressed bytes than any message within the limit.
        let mut huge = vec![0x80 | RSV1 | 0x2, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&KEY);
        assert_eq!(run(&huge, 3, 1000), Err(RxError::TooBig));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Any message, compressed and cut into any number of fragments, arriving in reads
            /// of any size, comes out as exactly its plain frame.
            #[test]
            fn any_compressed_message_round_trips(
                data in proptest::collection::vec(any::<u8>(), 0..3000),
                repeat in 1usize..8,
                parts in 1usize..6,
                step in 1usize..300,
                key in any::<[u8; 4]>(),
            ) {
                let data = data.repeat(repeat);
                let z = {
                    let f = Compressor::default().compress(&encode(OpCode::Binary, &data));
                    match f {
                        Some(f) => {
                            let (_, off) = server_frame(&f).unwrap();
                            f[off..].to_vec()
                        }
                        None => return Ok(()), // incompressible: sent plain
                    }
                };
                let cut = z.len().div_ceil(parts).max(1);
                let chunks: Vec<&[u8]> = z.chunks(cut).collect();
                let mut wire = Vec::new();
                for (i, c) in chunks.iter().enumerate() {
                    let fin = if i + 1 == chunks.len() { 0x80 } else { 0 };
                    let first = if i == 0 { RSV1 | 0x2 } else { 0 };
                    wire.extend(frame(fin | first, c, key));
                }
                prop_assert_eq!(run(&wire, step, 1 << 16).unwrap(), frame(0x82, &data, [0; 4]));
            }

            /// Arbitrary bytes never panic, never hand on more than the input plus one
            /// inflated message per call, and leave no state behind an error.
            #[test]
            fn arbitrary_bytes_are_bounded(
                bytes in proptest::collection::vec(any::<u8>(), 0..2000),
                step in 1usize..64,
                limit in 1usize..5000,
            ) {
                let (mut st, mut inf) = (None, Inflater::default());
                'outer: for mut chunk in bytes.chunks(step) {
                    while !chunk.is_empty() {
                        let mut out = Vec::new();
                        match rewrite(&mut st, chunk, limit, &mut inf, &mut out) {
                            Ok(used) => {
                                prop_assert!(used > 0 && used <= chunk.len());
                                prop_assert!(out.len() <= used + limit + 2 * 14);
                                chunk = &chunk[used..];
                            }
                            Err(_) => {
                                prop_assert!(st.is_none());
                                break 'outer;
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn frames_before_an_error_are_rewritten() {
        let ok = frame(0x81, b"fine", KEY);
        let wire = [ok.clone(), frame(0x80 | RSV1 | 0x9, b"", KEY)].concat();
        let (mut st, mut inf, mut out) = (None, Inflater::default(), Vec::new());
        assert!(rewrite(&mut st, &wire, 100, &mut inf, &mut out).is_err());
        assert_eq!(out, ok);
    }
}
