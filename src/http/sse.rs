//! Server-Sent Events: the wire format. Pure: bytes in, bytes out; the engine decides who gets
//! what and when (`engine/stream.rs`).
//!
//! An SSE stream is a room member that cannot speak: it gets the room's `message` events as
//!
//! ```text
//! id: 17:5d0c9a1e7b3f2c48
//! event: message
//! data: {"type":"message","room":"lobby","from":"alice","session":"5","data":"hi","offset":17}
//!
//! ```
//!
//! where `data` is byte for byte the JSON text a WebSocket member receives. A shard derives the
//! event from the WebSocket frame once per message ([`event`] over [`ws_payload`]) and queues
//! the same `Arc<[u8]>` to each of its SSE members, so a publish still costs one encode per
//! shard, not one per recipient.
//!
//! Event ids are the publications' positions in the room's log, `offset:epoch`
//! ([`RoomLog`](crate::engine::history::RoomLog)): the same positions WebSocket members see,
//! comparable whichever shard a reconnecting client lands on. A stream that comes back with a
//! `Last-Event-ID` the room's history no longer covers (another epoch, or publications pushed
//! out or expired) gets no partial replay but a [`reset`] event with the current position.

/// The comment line sent every `sse_heartbeat` so proxies and clients see the stream alive.
pub const HEARTBEAT: &[u8] = b": ping\n\n";

/// The response head that turns an HTTP connection into an event stream.
pub fn response_head() -> &'static [u8] {
    // No Content-Length: the body ends when the connection does. `X-Accel-Buffering: no` keeps
    // nginx from holding events back in its buffer.
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
      Connection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\n"
}

/// The payload of a complete, unmasked server frame (as `protocol::frame` encodes them).
pub fn ws_payload(frame: &[u8]) -> &[u8] {
    let start = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(start..).unwrap_or_default()
}

/// One `message` event with id `offset:epoch`. Every line of `data` becomes a `data:` line, so
/// a payload with newlines (not one of ours: compact JSON has none) still arrives whole.
pub fn event(offset: u64, epoch: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(offset.to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(epoch.as_bytes());
    out.extend_from_slice(b"\nevent: message\n");
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// The event telling a stream that came back with a `Last-Event-ID` that nothing was replayed
/// (the history does not reach back to it, or the stream is another epoch): the application
/// reloads, then follows from `offset`.
pub fn reset(offset: u64, epoch: &str) -> Vec<u8> {
    format!("id: {offset}:{epoch}\nevent: reset\ndata: {{\"offset\":{offset},\"epoch\":\"{epoch}\"}}\n\n")
        .into_bytes()
}

/// A `Last-Event-ID`: `offset:epoch` as this server writes them, or a bare offset (older
/// servers; then only the offset is compared).
pub fn parse_last_event_id(v: &str) -> Option<(u64, Option<&str>)> {
    let v = v.trim();
    match v.split_once(':') {
        Some((o, e)) if !e.is_empty() => Some((o.parse().ok()?, Some(e))),
        Some(_) => None,
        None => Some((v.parse().ok()?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{encode, OpCode};

    #[test]
    fn events_carry_the_websocket_payload_unchanged() {
        for len in [5, 200, 70_000] {
            let json = format!("{{\"x\":\"{}\"}}", "a".repeat(len));
            let f = encode(OpCode::Text, json.as_bytes());
            assert_eq!(ws_payload(&f), json.as_bytes());
            let ev = event(7, "e", ws_payload(&f));
            let want = format!("id: 7:e\nevent: message\ndata: {json}\n\n");
            assert_eq!(ev, want.as_bytes());
        }
        assert_eq!(
            event(1, "e", b"a\nb"),
            b"id: 1:e\nevent: message\ndata: a\ndata: b\n\n"
        );
        assert_eq!(parse_last_event_id(" 5:ab "), Some((5, Some("ab"))));
        assert_eq!(parse_last_event_id("5"), Some((5, None)));
        assert_eq!(parse_last_event_id("5:"), None);
        assert_eq!(parse_last_event_id("x:ab"), None);
    }
}
