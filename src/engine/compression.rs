//! permessage-deflate in the engine: which frame a compressing session gets, and how its
//! compressed input reaches tungstenite. The codec and the handshake are pure
//! (`crate::protocol::deflate`); this file holds the shard's one compressor, its one inflater
//! and the cache that makes a publication compressed once.
//!
//! **Compressed once per shard.** Every hub frame for an open session goes through
//! [`push_to`](super::push_to); for a compressing session it asks [`Compression::frame_for`],
//! which compresses the plain frame the first time it sees it (same `Arc`) and hands the same
//! compressed `Arc` to every later compressing recipient. A room walk pushes one `Arc` to every
//! member in a row, so a one-entry cache is enough, and nothing is compressed when no
//! recipient compresses. Frames cross shards and nodes plain, and each shard with compressing
//! recipients compresses once: at most one compression per shard per publication (two on this
//! project's two-core machines), against carrying a second frame through the router, the
//! cluster wire and the room history for every publication whether anyone compresses or not.

use std::sync::Arc;

use super::conn::{Stage, WsConn};
use super::ids::SessionId;
use crate::hooks::Disconnect;
use crate::http::response::Response;
use crate::http::upgrade::UpgradeRequest;
use crate::metrics::ShardStats;
use crate::protocol::close::Close;
use crate::protocol::deflate::{self, codec, Agreed, Compressor, Inflater, RxError, RxState};
use crate::protocol::frame::Frame;

/// A compressing session's state (`WsConn::deflate`).
#[derive(Debug)]
pub(crate) struct Deflating {
    /// The server window (8..=15) the client allowed (`crate::protocol::deflate::Agreed`).
    pub(crate) window: u8,
    /// The compressed-input shim's place, only while inside a frame or a compressed message
    /// (`crate::protocol::deflate::rx`).
    pub(crate) rx: Option<Box<RxState>>,
}

/// The shard's compression state (see the module docs).
#[derive(Debug)]
pub(crate) struct Compression {
    compressor: Compressor,
    /// The last plain frame compressed, and its compressed twin (`None`: not worth it). The
    /// `Arc` is kept so its address cannot be reused by another frame while cached.
    last: Option<(Frame, Option<Frame>)>,
    /// Data frames with fewer payload bytes go plain.
    min_bytes: usize,
    stats: Arc<ShardStats>,
    inflater: Inflater,
    /// The rewritten input of a compressing connection (`deflate::rx`), kept for its capacity.
    rx_buf: Vec<u8>,
}

impl Compression {
    pub(crate) fn new(min_bytes: usize, stats: Arc<ShardStats>) -> Self {
        Self {
            compressor: Compressor::default(),
            last: None,
            min_bytes,
            stats,
            inflater: Inflater::default(),
            rx_buf: Vec::new(),
        }
    }

    /// The frame a session that negotiated a server window of `window_bits` gets for `plain`:
    /// its compressed twin when it is a data frame of at least `min_bytes` payload bytes that
    /// fits the window and compresses smaller, else `plain`.
    pub(crate) fn frame_for(&mut self, plain: Frame, window_bits: u8) -> Frame {
        let Some((_, off)) = codec::server_frame(&plain) else {
            return plain;
        };
        let len = plain.len() - off;
        if len < self.min_bytes || !Agreed::fits_window(window_bits, len) {
            return plain;
        }
        let hit = match &self.last {
            Some((p, z)) if Arc::ptr_eq(p, &plain) => Some(z.clone()),
            _ => None,
        };
        let z = match hit {
            Some(z) => z,
            None => {
                let z = self.compressor.compress(&plain);
                if z.is_some() {
                    self.stats.compressed_frames.add(1);
                }
                self.last = Some((plain.clone(), z.clone()));
                z
            }
        };
        match z {
            Some(z) => {
                self.stats.compressed_deliveries.add(1);
                self.stats
                    .compression_bytes_saved
                    .add((plain.len() - z.len()) as u64);
                z
            }
            None => plain,
        }
    }
}

impl<S> super::Engine<S> {
    /// The permessage-deflate answer to an upgrade: `None` when compression is off or no
    /// offer is acceptable; a 400 for a malformed `Sec-WebSocket-Extensions`.
    pub(super) fn negotiate_compression(
        &self,
        req: &UpgradeRequest,
    ) -> Result<Option<Agreed>, Response> {
        if !self.cfg().compression {
            return Ok(None);
        }
        let offers = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, v)| v.as_str());
        deflate::negotiate(offers).map_err(|m| Response::refusal(400, m.0))
    }

    /// Whether `id` is an open session that negotiated permessage-deflate.
    pub(super) fn compressing(&mut self, id: SessionId) -> bool {
        self.conn(id)
            .is_some_and(|c| matches!(&c.stage, Stage::Ws(w) if w.deflate.is_some()))
    }

    /// `ws_input` for a compressing session: the bytes go through the shim (`deflate::rx`)
    /// first, then to tungstenite; a shim error closes the session with its code once the
    /// frames before it have been read.
    pub(super) fn ws_input_inflating(&mut self, id: SessionId, bytes: &[u8], eof: bool) {
        let limit = self.cfg().max_message_bytes;
        let mut buf = std::mem::take(&mut self.compression.rx_buf);
        let mut rest = bytes;
        let result = loop {
            buf.clear();
            let conn = super::live(&mut self.conns, id).map(|c| &mut c.stage);
            let Some(Stage::Ws(WsConn {
                deflate: Some(z), ..
            })) = conn
            else {
                // The session ended (a close frame, an error): tungstenite reads the rest, as
                // it does after any close.
                self.ws_read(id, rest, eof);
                break Ok(());
            };
            match deflate::rewrite(
                &mut z.rx,
                rest,
                limit,
                &mut self.compression.inflater,
                &mut buf,
            ) {
                Ok(used) => {
                    rest = &rest[used..];
                    self.ws_read(id, &buf, eof && rest.is_empty());
                    if rest.is_empty() {
                        break Ok(());
                    }
                }
                Err(e) => {
                    self.ws_read(id, &buf, false);
                    break Err(e);
                }
            }
        };
        if buf.capacity() > 256 * 1024 {
            buf = Vec::new();
        }
        self.compression.rx_buf = buf;
        let Err(e) = result else { return };
        if !self.conn(id).is_some_and(|c| c.is_ws()) {
            return; // the frames before the error ended the session already
        }
        let (close, reason) = match e {
            RxError::Protocol(r) => (Close::ProtocolError, r),
            RxError::TooBig => (Close::MessageTooBig, "message too big"),
            RxError::Invalid => (Close::InvalidUtf8, "invalid compressed data"),
        };
        self.stats.protocol_errors.add(1);
        self.report_error(id, &crate::hooks::SessionError::Protocol(reason.into()));
        let d = Disconnect::new(close.code(), reason);
        // As for tungstenite's own errors: past a broken frame nothing can be parsed, so the
        // session goes once its close frame is written.
        self.close_session(
            id,
            close.code(),
            reason,
            d,
            super::lifecycle::Linger::UntilFlushed,
        );
    }
}
