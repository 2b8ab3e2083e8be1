//! The DEFLATE codec of permessage-deflate with no context takeover (RFC 7692, section 7.2):
//! a [`Compressor`] that turns a whole server frame into its compressed twin, and an
//! [`Inflater`] that restores a client message under a size limit. One of each per shard, reset
//! for every message, so no connection holds a zlib state (about 300 KiB for a compressor).
//!
//! Backend: `flate2` over miniz_oxide (pure Rust, already in the tree through hdrhistogram).
//! It compresses with a fixed 32 KiB window (no `window_bits` without a zlib backend), which is
//! why [`super::negotiate`] sends compressed frames to a connection with a smaller
//! `server_max_window_bits` only for messages that fit its window.

use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::protocol::frame::{Frame, MAX_HEADER};

/// The empty stored block a sync flush ends with; removed from every compressed message and
/// appended again before inflating (RFC 7692, sections 7.2.1 and 7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The RSV1 bit: set on the first frame of a compressed message.
pub const RSV1: u8 = 0x40;

/// Compresses whole server frames; one per shard.
pub struct Compressor {
    z: Compress,
    /// Output scratch, kept for its capacity: header room, then the compressed payload.
    buf: Vec<u8>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor").finish_non_exhaustive()
    }
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new(Compression::default())
    }
}

/// The parts of a complete, unmasked server frame as [`crate::protocol::frame`] writes them:
/// (first byte, payload offset). `None` for anything else.
pub fn server_frame(frame: &[u8]) -> Option<(u8, usize)> {
    let b1 = *frame.get(1)?;
    let (len, off): (usize, usize) = match b1 {
        126 => (
            usize::from(u16::from_be_bytes([*frame.get(2)?, *frame.get(3)?])),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(frame.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n if n < 126 => (usize::from(n), 2),
        _ => return None, // masked: not a server frame
    };
    (frame.len() == off.checked_add(len)?).then_some((frame[0], off))
}

impl Compressor {
    /// A compressor at `level` (0-9).
    pub fn new(level: Compression) -> Self {
        Self {
            z: Compress::new(level, false),
            buf: Vec::new(),
        }
    }

    /// The compressed twin of a final text or binary frame: same opcode, RSV1 set, the payload
    /// deflated on its own with the sync flush's trailing `00 00 ff ff` removed. `None` when
    /// the frame is not a final, unextended data frame, or when compressing does not make it
    /// smaller (the plain frame is then the better one to send).
    pub fn compress(&mut self, frame: &[u8]) -> Option<Frame> {
        let (b0, off) = server_frame(frame)?;
        if b0 & 0xf0 != 0x80 || !matches!(b0 & 0x0f, 0x1 | 0x2) {
            return None;
        }
        let payload = &frame[off..];
        self.z.reset();
        self.buf.clear();
        self.buf.reserve(MAX_HEADER + payload.len() / 2 + 64);
        self.buf.resize(MAX_HEADER, 0);
        loop {
            let done = usize::try_from(self.z.total_in()).ok()?;
            if self.buf.capacity() - self.buf.len() < 64 {
                self.buf.reserve(self.buf.capacity().max(256));
            }
            self.z
                .compress_vec(&payload[done..], &mut self.buf, FlushCompress::Sync)
                .ok()?;
            // The flush is complete once every input byte is in and the output did not fill
            // the room it had (a full buffer may hold back the rest of the flush).
            if self.z.total_in() as usize == payload.len() && self.buf.len() < self.buf.capacity() {
                break;
            }
        }
        if !self.buf.ends_with(&TAIL) {
            return None;
        }
        let len = self.buf.len() - TAIL.len() - MAX_HEADER;
        let mut h = [0u8; MAX_HEADER];
        let hl = header(b0 | RSV1, len, &mut h);
        if hl + len >= frame.len() {
            return None;
        }
        let at = MAX_HEADER - hl;
        self.buf[at..MAX_HEADER].copy_from_slice(&h[..hl]);
        let out: Frame = Arc::from(&self.buf[at..self.buf.len() - TAIL.len()]);
        if self.buf.capacity() > SCRATCH_KEEP {
            self.buf = Vec::new();
        }
        Some(out)
    }
}

/// Scratch capacity kept between messages; a rare large message does not pin its size.
const SCRATCH_KEEP: usize = 256 * 1024;

/// An unmasked frame header with first byte `b0` for `len` payload bytes; returns its length.
fn header(b0: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = b0;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(l) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&l.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Why a compressed message could not be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit: close 1009, whatever its compressed size.
    TooBig,
    /// Not valid DEFLATE data: close 1007.
    Invalid,
}

/// Restores client messages; one per shard.
pub struct Inflater {
    z: Decompress,
    out: Vec<u8>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            z: Decompress::new(false),
            out: Vec::new(),
        }
    }
}

impl Inflater {
    /// Inflates one whole message (its frames' payloads, unmasked and joined, without the
    /// tail) into at most `limit` bytes. Memory: the output grows with what the data really
    /// inflates to and never past `limit + 1` bytes, however the data claims to expand, so a
    /// compression bomb costs `limit` bytes at most, once per shard.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<&[u8], InflateError> {
        self.z.reset(false);
        self.out.clear();
        let cap = limit.saturating_add(1);
        for input in [compressed, &TAIL[..]] {
            let base = self.z.total_in();
            loop {
                let done = usize::try_from(self.z.total_in() - base).unwrap_or(usize::MAX);
                let rest = input.get(done..).unwrap_or_default();
                if self.out.len() == self.out.capacity() {
                    if self.out.len() >= cap {
                        return Err(InflateError::TooBig);
                    }
                    let grow = self.out.capacity().max(1024).min(cap - self.out.len());
                    self.out.reserve_exact(grow);
                }
                // `decompress_vec` writes into the spare capacity only, which the lines above
                // keep within `cap`.
                let before = (self.z.total_in(), self.out.len());
                let status = self
                    .z
                    .decompress_vec(rest, &mut self.out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                if self.out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                let progressed = (self.z.total_in(), self.out.len()) != before;
                let input_done = self.z.total_in() - base == input.len() as u64;
                match status {
                    // A final block: the message ends here (RFC 7692 allows it, section 7.2.3.1).
                    Status::StreamEnd => return Ok(self.finish()),
                    _ if input_done && self.out.len() < self.out.capacity() => break,
                    _ if !progressed && self.out.len() < self.out.capacity() => break,
                    _ => {}
                }
            }
        }
        Ok(self.finish())
    }

    fn finish(&mut self) -> &[u8] {
        &self.out
    }

    /// Drops a large output buffer once its message has been handed on.
    pub fn shrink(&mut self) {
        if self.out.capacity() > SCRATCH_KEEP {
            self.out = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{encode, OpCode};

    /// Inflates with an independent decoder, the way a client would.
    fn client_inflate(compressed: &[u8]) -> Vec<u8> {
        let mut z = Decompress::new(false);
        let mut data = compressed.to_vec();
        data.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        z.decompress_vec(&data, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = Compressor::default();
        let f = c
            .compress(&encode(OpCode::Binary, data))
            .expect("compressible");
        let (_, off) = server_frame(&f).unwrap();
        f[off..].to_vec()
    }

    #[test]
    fn a_frame_round_trips_with_rsv1_and_its_opcode() {
        let msg = br#"{"type":"message","room":"lobby","data":{"text":"hello hello hello hello"}}"#;
        for op in [OpCode::Text, OpCode::Binary] {
            let plain = encode(op, msg);
            let f = Compressor::default().compress(&plain).unwrap();
            let (b0, off) = server_frame(&f).unwrap();
            assert_eq!(b0, 0x80 | RSV1 | op as u8);
            assert!(f.len() < plain.len());
            assert!(!f.ends_with(&TAIL));
            assert_eq!(client_inflate(&f[off..]), msg);
            assert_eq!(
                Inflater::default().inflate(&f[off..], 1 << 20).unwrap(),
                msg
            );
        }
    }

    #[test]
    fn incompressible_and_non_data_frames_stay_plain() {
        let mut c = Compressor::default();
        assert!(c.compress(&encode(OpCode::Text, b"hi")).is_none());
        assert!(c
            .compress(&crate::protocol::frame::close(1000, "bye bye bye bye bye"))
            .is_none());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(c.compress(&encode(OpCode::Binary, &noise)).is_none());
        assert!(c.compress(b"\x81").is_none());
    }

    #[test]
    fn large_messages_round_trip_at_every_header_size() {
        for len in [200, 70_000, 1 << 20] {
            let data: Vec<u8> = (0..len)
                .map(|i| b"abcdefghij"[i % 10] ^ (i / 977) as u8)
                .collect();
            let d = deflate(&data);
            assert_eq!(Inflater::default().inflate(&d, len).unwrap(), &data[..]);
            assert_eq!(
                Inflater::default().inflate(&d, len - 1),
                Err(InflateError::TooBig)
            );
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let d = deflate(&vec![0u8; 50 << 20]);
        assert!(
            d.len() < 100_000,
            "50 MiB of zeros deflate to {} bytes",
            d.len()
        );
        let mut inf = Inflater::default();
        assert_eq!(inf.inflate(&d, 64 * 1024), Err(InflateError::TooBig));
        assert!(inf.out.capacity() <= 64 * 1024 + 1);
    }

    #[test]
    fn garbage_is_invalid_and_empty_is_empty() {
        let mut inf = Inflater::default();
        assert_eq!(
            inf.inflate(&[0xff, 0xff, 0xff], 100),
            Err(InflateError::Invalid)
        );
        assert_eq!(inf.inflate(&[0x00], 100).unwrap(), b"");
    }

    #[test]
    fn the_inflater_is_reset_between_messages() {
        let mut inf = Inflater::default();
        let a = deflate(&b"first message ".repeat(20));
        let b = deflate(&b"second message ".repeat(20));
        assert_eq!(
            inf.inflate(&a, 1000).unwrap(),
            &b"first message ".repeat(20)[..]
        );
        assert_eq!(
            inf.inflate(&b, 1000).unwrap(),
            &b"second message ".repeat(20)[..]
        );
    }
}
