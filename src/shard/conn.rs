//! One client connection as the shard holds it: socket, outbox, protocol state and timers.
//!
//! The socket and outbox travel together as [`ConnIo`], which is also the stream tungstenite
//! drives: its reads come from the socket, its writes (pongs, close frames) land in the outbox
//! behind the frames already queued. tungstenite therefore never blocks on a write and never
//! holds bytes of its own, and every byte leaves through one ordered, vectored path.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use tungstenite::WebSocket;

use crate::engine::liveness::{Liveness, Phase};
use crate::engine::outbox::Outbox;
use crate::engine::ratelimit::RateLimiter;
use crate::hooks::Disconnect;
use crate::session::Session;

/// A socket with its outbound queue; the stream tungstenite reads from and writes to.
#[derive(Debug)]
pub(crate) struct ConnIo {
    pub(crate) tcp: TcpStream,
    pub(crate) outbox: Outbox,
}

impl Read for ConnIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for ConnIo {
    /// Queues tungstenite's bytes (control frames, a few bytes each) behind everything else.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.push(Arc::from(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ConnIo {
    /// Writes queued bytes to the socket; see [`Outbox::flush`].
    pub(crate) fn flush_outbox(&mut self) -> io::Result<crate::engine::outbox::Flushed> {
        self.outbox.flush(&mut self.tcp)
    }
}

/// The protocol stage of a connection.
///
/// Not boxed although `Ws` is much larger than `Http`: nearly every connection is an open
/// WebSocket, and boxing it would add an allocation and a pointer chase to each of them.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Wire {
    /// Reading the HTTP upgrade request.
    Http { io: ConnIo, buf: Vec<u8> },
    /// An open WebSocket.
    Ws(WebSocket<ConnIo>),
    /// A Server-Sent Events stream (`shard/web.rs`); `last_beat` is the tick of the last
    /// heartbeat comment.
    Sse { io: ConnIo, last_beat: u64 },
    /// Transient, while moving between stages.
    Moved,
}

/// One connection in the shard's slab.
pub(crate) struct Conn {
    pub(crate) wire: Wire,
    pub(crate) session: Session,
    pub(crate) phase: Phase,
    pub(crate) live: Liveness,
    /// The deadline of the connection's one live timer (`u64::MAX`: none).
    pub(crate) timer_due: u64,
    /// Queued in the shard's dirty list for the next flush.
    pub(crate) dirty: bool,
    /// The session is in the directory and rooms (it completed the upgrade).
    pub(crate) announced: bool,
    /// Drop the socket once the outbox is empty.
    pub(crate) drop_when_flushed: bool,
    /// Queued for removal at the end of this loop iteration.
    pub(crate) dead: bool,
    /// How the session ended, once known.
    pub(crate) disconnect: Option<Disconnect>,
    /// Plain HTTP bookkeeping (`shard/web.rs`).
    pub(crate) http: HttpState,
    /// Message and byte buckets, filled when the upgrade completes.
    pub(crate) rate: RateLimiter,
}

/// What a connection's HTTP stage needs to remember between requests.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HttpState {
    /// Requests answered on this connection (keep-alive); 0 while the first is pending.
    pub(crate) requests: u32,
    /// The listener it came from, which decides the routes it may use.
    pub(crate) listener: crate::http::Listener,
}

impl Conn {
    pub(crate) fn new(tcp: TcpStream, session: Session, now: u64) -> Self {
        Self {
            wire: Wire::Http {
                io: ConnIo {
                    tcp,
                    outbox: Outbox::default(),
                },
                buf: Vec::new(),
            },
            session,
            phase: Phase::Handshake { since: now },
            live: Liveness::new(now),
            timer_due: u64::MAX,
            dirty: false,
            announced: false,
            drop_when_flushed: false,
            dead: false,
            disconnect: None,
            http: HttpState::default(),
            rate: RateLimiter::default(),
        }
    }

    /// The socket and outbox, whatever the stage.
    pub(crate) fn io(&mut self) -> Option<&mut ConnIo> {
        match &mut self.wire {
            Wire::Http { io, .. } => Some(io),
            Wire::Ws(ws) => Some(ws.get_mut()),
            Wire::Sse { io, .. } => Some(io),
            Wire::Moved => None,
        }
    }

    /// Records how the session ended, keeping the first cause.
    pub(crate) fn ended(&mut self, code: u16, reason: &str) {
        if self.disconnect.is_none() {
            self.disconnect = Some(Disconnect {
                code,
                reason: reason.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    /// The slab entry is most of an idle connection's memory besides the read buffer; keep an
    /// eye on it (see tuning.md).
    #[test]
    fn a_connection_slot_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        eprintln!("size_of::<Conn>() = {size}");
        assert!(size <= 640, "Conn grew to {size} bytes");
    }
}
