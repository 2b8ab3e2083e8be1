//! One connection as the engine holds it: its lifecycle, its outbound queue and its timers,
//! beside the driver's socket (`S`, which the engine stores and never touches).
//!
//! A connection lives through one [`Stage`] at a time, and each stage owns exactly the state it
//! needs, so there is no flag that could disagree with another:
//!
//! ```text
//! Http ──upgrade──> Ws ──close (either side), fault, timeout──> Closing ──> removed
//!   │ └──GET /sse──> Sse ──end of stream, slow reader──────────────┘
//!   └──a refusal, `Connection: close`, an idle keep-alive timeout──────────> Closing
//! ```
//!
//! A session (a WebSocket or an SSE stream) ends when its connection leaves `Ws` or `Sse`: it
//! leaves its rooms and the directory, and `on_disconnect` runs, at that moment.
//! `Closing` is then only bytes: the final close frame or response goes out, the peer's close
//! reply is read, and the socket goes.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use tungstenite::protocol::WebSocketContext;

use super::framing::Framing;
use super::ids::SessionId;
use super::lifecycle::Linger;
use super::liveness::Liveness;
use super::outbox::Outbox;
use super::ratelimit::RateLimiter;
use crate::http::Listener;
use crate::session::Session;

/// A connection in the engine's slab.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    /// The driver's socket.
    pub(crate) socket: S,
    pub(crate) id: SessionId,
    /// Where the connection is; each stage also holds the peer's address ([`Conn::addr`]),
    /// which a session needs anyway, rather than the slot holding a second copy.
    pub(crate) stage: Stage,
    /// Every byte the connection sends, in order.
    pub(crate) outbox: Outbox,
    pub(crate) live: Liveness,
    /// The tick of the connection's one live timer (`u64::MAX`: none).
    pub(crate) timer_due: u64,
    /// Where it is in the write schedule (`writes.rs`).
    pub(crate) dirty: super::writes::Dirty,
    /// To be removed at the end of the turn; nothing more is read, queued or written.
    pub(crate) dead: bool,
    /// Reset the connection when it is removed (the peer never completed the close).
    pub(crate) reset: bool,
}

/// Where a connection is in its life. See the module docs.
///
/// Not boxed although `Ws` is much larger than `Http`: nearly every connection is an open
/// WebSocket, and boxing it would add an allocation and a pointer chase to each of them.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Stage {
    /// Reading HTTP requests: the first one (an upgrade or an API call) or, kept alive, the next.
    Http(HttpConn),
    /// An open WebSocket session.
    Ws(WsConn),
    /// A Server-Sent Events stream of one room.
    Sse(SseConn),
    /// The session (if any) has ended; the last bytes go out.
    Closing(Closing),
}

/// The HTTP stage.
#[derive(Debug)]
pub(crate) struct HttpConn {
    pub(crate) addr: SocketAddr,
    /// Bytes received and not yet parsed into a request.
    pub(crate) buf: Vec<u8>,
    /// Requests answered on this connection so far.
    pub(crate) requests: u32,
    /// Tick of the accept or of the last response: the request deadline counts from here.
    pub(crate) since: u64,
    /// The listener it came from, which decides the routes it may use.
    pub(crate) listener: Listener,
    /// The peer ended its side: once the buffered requests are answered, so does the server.
    pub(crate) eof: bool,
}

/// An open WebSocket.
pub(crate) struct WsConn {
    /// tungstenite's framing state, driven through [`Feed`]; none while between messages.
    pub(crate) framing: Framing,
    pub(crate) session: Session,
    /// Message and byte buckets.
    pub(crate) rate: RateLimiter,
    /// permessage-deflate, when negotiated. Boxed: a session without compression (the
    /// default) pays one pointer for it in its slab slot.
    pub(crate) deflate: Option<Box<super::compression::Deflating>>,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConn")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// An SSE stream: a room member that only listens.
#[derive(Debug)]
pub(crate) struct SseConn {
    pub(crate) session: Session,
    /// Tick of the last heartbeat comment.
    pub(crate) last_beat: u64,
}

/// The last bytes of a connection.
pub(crate) struct Closing {
    pub(crate) addr: SocketAddr,
    /// Tick the close began: the socket goes `close_timeout` later at the latest.
    pub(crate) since: u64,
    /// A WebSocket's framing, kept to read the peer's close reply.
    pub(crate) ws: Option<Box<WebSocketContext>>,
    /// When the socket goes.
    pub(crate) linger: Linger,
}

impl std::fmt::Debug for Closing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closing")
            .field("addr", &self.addr)
            .field("since", &self.since)
            .field("ws", &self.ws.is_some())
            .field("linger", &self.linger)
            .finish()
    }
}

impl<S> Conn<S> {
    /// The peer's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        match &self.stage {
            Stage::Http(h) => h.addr,
            Stage::Ws(w) => w.session.remote_addr(),
            Stage::Sse(s) => s.session.remote_addr(),
            Stage::Closing(c) => c.addr,
        }
    }

    /// The connection's session, while it has one.
    pub(crate) fn session(&self) -> Option<&Session> {
        match &self.stage {
            Stage::Ws(w) => Some(&w.session),
            Stage::Sse(s) => Some(&s.session),
            _ => None,
        }
    }

    /// Whether it is an open WebSocket session (the only kind that gets hub frames).
    pub(crate) fn is_ws(&self) -> bool {
        matches!(self.stage, Stage::Ws(_)) && !self.dead
    }
}

/// The stream tungstenite reads from and writes to: the bytes the driver read, and the
/// connection's outbox. tungstenite thereby never blocks, never holds bytes of its own to
/// write (its pongs and close frames queue behind the frames already in the outbox), and never
/// sees a socket.
pub(crate) struct Feed<'i, 'o> {
    pub(crate) input: &'i [u8],
    /// The peer ended its side: reads past the input return end of stream.
    pub(crate) eof: bool,
    pub(crate) out: &'o mut Outbox,
}

impl Read for Feed<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Feed<'_, '_> {
    /// Queues tungstenite's bytes (control frames, a few bytes each) behind everything else.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.push(Arc::from(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The slab entry is most of an idle connection's memory (see tuning.md): 224 bytes, of
    /// which the open WebSocket stage is 136 (session 88, rate buckets 32, framing 8: the
    /// 256-byte tungstenite context lives out of line only while a frame is incomplete;
    /// permessage-deflate 8, its state boxed for the sessions that negotiated it), the outbox
    /// 48 and the liveness clock 16.
    #[test]
    fn a_connection_slot_stays_small() {
        let size = std::mem::size_of::<super::Conn<mio_like::Socket>>();
        eprintln!("size_of::<Conn>() = {size}");
        assert!(size <= 224, "Conn grew to {size} bytes");
        let ws = std::mem::size_of::<super::WsConn>();
        assert!(ws <= 136, "the WebSocket stage grew to {ws} bytes");
    }

    /// The size of the driver's socket (a mio TcpStream is one file descriptor).
    mod mio_like {
        #[allow(dead_code)]
        pub struct Socket(i32);
    }
}
