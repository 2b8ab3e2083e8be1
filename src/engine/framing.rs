//! A WebSocket's read-side framing state, which exists only while the client is in the middle
//! of something.
//!
//! tungstenite's [`WebSocketContext`] is ~250 bytes, and once it has read anything it keeps a
//! read buffer of `read_buffer_bytes` (512) and whatever capacity its write buffer grew to for a
//! pong. An idle connection needs none of it: between messages a server context in the
//! `Active` state holds nothing a fresh one would not. So a connection holds [`Framing`], one
//! pointer: empty while idle, a boxed context while bytes of an unfinished frame or fragmented
//! message are buffered in it. The context is created when bytes arrive and dropped
//! ([`Framing::settle`]) once they all formed complete messages.
//!
//! Whether they did is not something tungstenite tells, so [`Boundary`] follows the frame
//! headers of the same bytes: it knows when the input ends exactly at the end of a frame that
//! is not part of an unfinished fragmented message. Its view can only be wrong on input
//! tungstenite rejects, and a rejected frame ends the session (the context then moves to
//! `Closing` or goes), so a wrong view never outlives the bytes that caused it.

use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

/// The framing state of one open WebSocket: nothing while the connection is between messages.
#[derive(Default)]
pub(crate) struct Framing(Option<Box<Active>>);

/// The state that exists while a frame or message is incomplete.
struct Active {
    ctx: WebSocketContext,
    at: Boundary,
}

impl Framing {
    /// tungstenite's context, created (with nothing buffered, in the `Active` state) if the
    /// connection was between messages.
    pub(crate) fn context(&mut self, config: WebSocketConfig) -> &mut WebSocketContext {
        &mut self
            .0
            .get_or_insert_with(|| {
                Box::new(Active {
                    ctx: WebSocketContext::new(Role::Server, Some(config)),
                    at: Boundary::default(),
                })
            })
            .ctx
    }

    /// Notes bytes about to be fed to the context (call [`context`](Self::context) first).
    pub(crate) fn saw(&mut self, bytes: &[u8]) {
        if let Some(a) = &mut self.0 {
            a.at.saw(bytes);
        }
    }

    /// Called once tungstenite has read every byte it was given (it answered `WouldBlock`) and
    /// the session is still open: drops the context if those bytes formed complete messages.
    /// tungstenite has by then also written any pong it owed (it writes pending replies before
    /// reading), so nothing of value goes with it.
    pub(crate) fn settle(&mut self) {
        if self.0.as_ref().is_some_and(|a| a.at.at_rest()) {
            self.0 = None;
        }
    }

    /// The context, if one exists (to write what it still owes as the session ends).
    pub(crate) fn take(&mut self) -> Option<WebSocketContext> {
        self.0.take().map(|a| a.ctx)
    }

    /// The context, created if the connection was between messages: for the close handshake,
    /// which keeps reading until the peer's reply.
    pub(crate) fn into_context(self, config: WebSocketConfig) -> Box<WebSocketContext> {
        match self.0 {
            Some(a) => Box::new(a.ctx),
            None => Box::new(WebSocketContext::new(Role::Server, Some(config))),
        }
    }

    /// Whether a context exists.
    #[cfg(test)]
    pub(crate) fn is_active(&self) -> bool {
        self.0.is_some()
    }
}

/// Where a stream of client frames stands: inside a header, inside a payload, or between
/// frames, and whether a fragmented data message is unfinished.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Boundary {
    /// Bytes of the current frame header seen so far (at most 14).
    head: [u8; 14],
    head_len: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A data frame without FIN was seen and its final fragment was not.
    fragmented: bool,
}

impl Boundary {
    /// Follows `bytes`, the next bytes of the stream.
    pub(crate) fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = (bytes.len() as u64).min(self.payload_left);
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            let have = usize::from(self.head_len);
            let want = header_len(&self.head[..have]);
            let n = bytes.len().min(want - have);
            self.head[have..have + n].copy_from_slice(&bytes[..n]);
            self.head_len += n as u8;
            bytes = &bytes[n..];
            let have = usize::from(self.head_len);
            if have == header_len(&self.head[..have]) {
                self.finish_header();
            }
        }
    }

    /// Whether the stream is between frames and not inside a fragmented message.
    pub(crate) fn at_rest(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0 && !self.fragmented
    }

    fn finish_header(&mut self) {
        let h = &self.head;
        let len7 = h[1] & 0x7f;
        self.payload_left = match len7 {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
        let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
        // Control frames (8 and up) may come between fragments and change nothing.
        if opcode < 8 {
            self.fragmented = !fin;
        }
        self.head_len = 0;
    }
}

/// The length of a frame header whose first bytes are `head`: 2 until the second byte says
/// more (extended length, mask).
fn header_len(head: &[u8]) -> usize {
    let Some(&b1) = head.get(1) else { return 2 };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(
            payload
                .iter()
                .zip([1u8, 2, 3, 4].iter().cycle())
                .map(|(b, m)| b ^ m),
        );
        out
    }

    #[test]
    fn complete_frames_in_any_split_leave_the_stream_at_rest_only_at_their_ends() {
        let mut stream = frame(true, 1, b"hello");
        stream.extend(frame(true, 2, &[7; 300]));
        stream.extend(frame(true, 1, &vec![b'x'; 70_000]));
        let ends = [11, 11 + 308, stream.len()];
        for chunk in [1, 2, 3, 7, 13, 500, stream.len()] {
            let mut b = Boundary::default();
            let mut fed = 0;
            for piece in stream.chunks(chunk) {
                b.saw(piece);
                fed += piece.len();
                assert_eq!(
                    b.at_rest(),
                    ends.contains(&fed),
                    "chunk {chunk}, after {fed} bytes"
                );
            }
        }
    }

    #[test]
    fn a_fragmented_message_is_unfinished_until_its_final_fragment_even_across_a_ping() {
        let mut b = Boundary::default();
        b.saw(&frame(false, 1, b"he"));
        assert!(!b.at_rest());
        b.saw(&frame(true, 9, b"ping"));
        assert!(!b.at_rest(), "a control frame does not end the message");
        b.saw(&frame(false, 0, b"ll"));
        assert!(!b.at_rest());
        b.saw(&frame(true, 0, b"o"));
        assert!(b.at_rest());
    }

    #[test]
    fn an_idle_connection_holds_no_context_and_a_partial_frame_keeps_one() {
        let cfg = WebSocketConfig::default().read_buffer_size(512);
        let mut f = Framing::default();
        assert!(!f.is_active());
        let whole = frame(true, 1, b"hi there");
        let (a, b) = whole.split_at(5);
        f.context(cfg);
        f.saw(a);
        f.settle();
        assert!(f.is_active(), "half a frame must stay buffered");
        f.context(cfg);
        f.saw(b);
        f.settle();
        assert!(!f.is_active());
    }
}
