//! Server-to-client WebSocket frames, encoded once and shared.
//!
//! A broadcast to N sessions must not format N frames (tungstenite's `write` formats every message
//! into each connection's own buffer). Here a message is encoded once into a [`Frame`], an
//! `Arc<[u8]>` holding the complete wire bytes (header and unmasked payload), and every outbound
//! queue holds a clone of the same `Arc`.

use std::sync::Arc;

/// A complete, ready-to-write WebSocket frame shared by every recipient.
pub type Frame = Arc<[u8]>;

/// Largest header a server frame needs: 2 bytes plus an 8-byte extended length (no mask).
pub const MAX_HEADER: usize = 10;

/// Frame opcodes the server sends itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// A UTF-8 text message.
    Text = 0x1,
    /// A binary message.
    Binary = 0x2,
    /// A close frame.
    Close = 0x8,
    /// A ping.
    Ping = 0x9,
}

/// Writes a final (FIN) unmasked frame header for `len` payload bytes at the end of `out`;
/// returns the header length.
fn header(op: OpCode, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x80 | op as u8;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Encodes `payload` as one final frame.
pub fn encode(op: OpCode, payload: &[u8]) -> Frame {
    let mut h = [0u8; MAX_HEADER];
    let hl = header(op, payload.len(), &mut h);
    let mut v = Vec::with_capacity(hl + payload.len());
    v.extend_from_slice(&h[..hl]);
    v.extend_from_slice(payload);
    v.into()
}

/// Whether a complete frame (as [`encode`] writes them) is a text frame.
pub fn is_text(frame: &[u8]) -> bool {
    frame
        .first()
        .is_some_and(|b| b & 0x0f == OpCode::Text as u8)
}

/// A close reason cut to fit the 125-byte control-frame limit (2 bytes go to the code), on a
/// character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Encodes a close frame with a status code and a reason ([`truncate_reason`]).
pub fn close(code: u16, reason: &str) -> Frame {
    let reason = truncate_reason(reason);
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    encode(OpCode::Close, &p)
}

/// A reusable buffer that builds one frame's payload in place, leaving room for the header, so
/// that finishing it costs a single copy into the shared allocation.
///
/// One lives per shard; its capacity is kept between messages.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// Starts a new payload, discarding any previous one.
    pub fn start(&mut self) -> &mut Vec<u8> {
        self.buf.clear();
        self.buf.resize(MAX_HEADER, 0);
        &mut self.buf
    }

    /// The payload written since [`start`](Self::start).
    pub fn payload(&self) -> &[u8] {
        self.buf.get(MAX_HEADER..).unwrap_or_default()
    }

    /// Prepends the header and copies the frame into a shared [`Frame`].
    pub fn finish(&mut self, op: OpCode) -> Frame {
        Arc::from(self.framed(op))
    }

    /// Prepends the header and appends the frame to `out`, behind what it holds (a handshake's
    /// `101`, which the first frame then shares one allocation and one write with).
    pub fn finish_into(&mut self, op: OpCode, out: &mut Vec<u8>) {
        out.extend_from_slice(self.framed(op));
    }

    /// The frame: the payload with its header written in front of it.
    fn framed(&mut self, op: OpCode) -> &[u8] {
        if self.buf.len() < MAX_HEADER {
            self.start();
        }
        let len = self.buf.len() - MAX_HEADER;
        let mut h = [0u8; MAX_HEADER];
        let hl = header(op, len, &mut h);
        let at = MAX_HEADER - hl;
        self.buf[at..MAX_HEADER].copy_from_slice(&h[..hl]);
        &self.buf[at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a server frame the way a client would: (fin, opcode, payload).
    fn decode(f: &[u8]) -> (bool, u8, &[u8]) {
        assert_eq!(f[1] & 0x80, 0, "server frames are never masked");
        let (len, off) = match f[1] & 0x7f {
            126 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        assert_eq!(f.len(), off + len, "frame length matches its header");
        (f[0] & 0x80 != 0, f[0] & 0x0f, &f[off..])
    }

    #[test]
    fn lengths_at_every_header_boundary_round_trip() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let f = encode(OpCode::Binary, &payload);
            let (fin, op, p) = decode(&f);
            assert!(fin);
            assert_eq!(op, 2);
            assert_eq!(p, &payload[..]);

            let mut fb = FrameBuf::default();
            fb.start().extend_from_slice(&payload);
            assert_eq!(
                &*fb.finish(OpCode::Binary),
                &*f,
                "FrameBuf and encode agree at {len}"
            );
            let mut behind = b"HTTP".to_vec();
            fb.finish_into(OpCode::Binary, &mut behind);
            assert_eq!(
                &behind[4..],
                &*f,
                "finish_into appends the same frame at {len}"
            );
        }
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let f = close(1008, &reason);
        let (_, op, p) = decode(&f);
        assert_eq!(op, 8);
        assert!(p.len() <= 125);
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), 1008);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}
