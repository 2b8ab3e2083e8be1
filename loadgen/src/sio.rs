//! Socket.IO (protocol v5) over Engine.IO v4, WebSocket transport only: just enough to drive a
//! Socket.IO broadcast server (`--adapter socketio`). Pure: no IO, no clock.
//!
//! The client connects straight to `/socket.io/?EIO=4&transport=websocket` (no HTTP polling
//! first), and every WebSocket text frame is one Engine.IO packet, its type a leading digit:
//! the server opens with `0{"sid":...,"pingInterval":...}`; the client connects to the default
//! namespace with `40` and is in once the server answers `40{"sid":...}` (`44{...}`: refused).
//! Events are `42["name",arg]`; the measured traffic is `42["msg",{probe}]` both ways, the
//! probe object unchanged (Socket.IO re-serializes it with `JSON.stringify`, which keeps the
//! compact layout this tool writes). The server pings with `2` and drops a client that does not
//! answer `3` within its `pingTimeout`, so every ping is answered.

/// The client's Socket.IO CONNECT to the default namespace, sent on the Engine.IO open packet.
pub const CONNECT: &[u8] = b"40";

/// The client's answer to an Engine.IO ping.
pub const PONG: &[u8] = b"3";

/// The event name of the measured traffic, both ways.
pub const EVENT: &str = "msg";

/// What one server frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO OPEN (`0{...}`): answer with [`CONNECT`].
    Open,
    /// Socket.IO CONNECT acknowledged (`40`, `40{"sid":...}`): the client is in.
    Connected,
    /// Socket.IO CONNECT_ERROR (`44{...}`): the server refused the namespace.
    ConnectError,
    /// Engine.IO PING (`2`): answer with [`PONG`].
    Ping,
    /// A Socket.IO EVENT named [`EVENT`] on the default namespace without an ack id: its one
    /// argument, as JSON text.
    Event(&'a [u8]),
    /// Anything else (other events, noop, close, ...).
    Other,
}

/// Classifies one text frame from the server.
pub fn parse(msg: &[u8]) -> Packet<'_> {
    match msg {
        [b'0', ..] => Packet::Open,
        [b'2'] => Packet::Ping,
        [b'4', b'0', ..] => Packet::Connected,
        [b'4', b'4', ..] => Packet::ConnectError,
        [b'4', b'2', b'[', rest @ ..] => match event_arg(rest) {
            Some(arg) => Packet::Event(arg),
            None => Packet::Other,
        },
        _ => Packet::Other,
    }
}

/// The argument of `"msg",ARG]`, the rest of an event after its `[`.
fn event_arg(rest: &[u8]) -> Option<&[u8]> {
    let rest = rest.strip_prefix(b"\"")?;
    let rest = rest.strip_prefix(EVENT.as_bytes())?;
    let rest = rest.strip_prefix(b"\",")?;
    let arg = rest.strip_suffix(b"]")?;
    (!arg.is_empty()).then_some(arg)
}

/// Appends `42["msg",ARG]`: the event carrying `arg` (JSON text, e.g. a probe object).
pub fn write_event(buf: &mut Vec<u8>, arg: &[u8]) {
    buf.extend_from_slice(b"42[\"");
    buf.extend_from_slice(EVENT.as_bytes());
    buf.extend_from_slice(b"\",");
    buf.extend_from_slice(arg);
    buf.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_packets() {
        let open = br#"0{"sid":"Lbo5JLzTotvW3g2LAAAA","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(parse(open), Packet::Open);
        assert_eq!(
            parse(br#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#),
            Packet::Connected
        );
        assert_eq!(parse(b"40"), Packet::Connected);
        assert_eq!(
            parse(br#"44{"message":"Not authorized"}"#),
            Packet::ConnectError
        );
        assert_eq!(parse(b"2"), Packet::Ping);
        assert_eq!(CONNECT, b"40");
        assert_eq!(PONG, b"3");
    }

    #[test]
    fn events_round_trip() {
        let probe = br#"{"t":123456789,"s":7,"p":3}"#;
        let mut buf = Vec::new();
        write_event(&mut buf, probe);
        assert_eq!(buf, br#"42["msg",{"t":123456789,"s":7,"p":3}]"#);
        assert_eq!(parse(&buf), Packet::Event(probe));
        // A probe with padding (a string with its own brackets and commas) survives as is.
        let padded = br#"{"t":1,"s":2,"p":3,"x":"],[\"msg\","}"#;
        buf.clear();
        write_event(&mut buf, padded);
        assert_eq!(parse(&buf), Packet::Event(padded));
    }

    #[test]
    fn other_frames_are_not_events() {
        for msg in [
            &br#"42["other",{"t":1,"s":2,"p":3}]"#[..],
            br#"421["msg",{"t":1}]"#,      // with an ack id
            br#"42/chat,["msg",{"t":1}]"#, // another namespace
            br#"42["msg"]"#,               // no argument
            br#"42["msg",]"#,
            b"3",
            b"6",
            b"",
            b"22",
        ] {
            assert_eq!(
                parse(msg),
                Packet::Other,
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
    }
}
