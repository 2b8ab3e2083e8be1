//! Client-side RFC 6455, sans-IO: the upgrade request and the check of its response, masked frame
//! encoding straight into a connection's output buffer, and frame parsing of what the server sends.
//!
//! Own framing instead of tungstenite because a load generator needs to stamp the clock at the
//! exact byte the 101 or the first frame arrives, and to encode each (unique, timestamped)
//! payload once, directly into the socket buffer, without a `Message` allocation per send. The
//! parts are small enough to test exhaustively below. Not implemented, because no server we target
//! negotiates them: extensions (any RSV bit is a protocol error) and subprotocols. Text payloads
//! are not UTF-8 validated; the scenario's JSON parser rejects what it cannot read.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Frame opcodes (RFC 6455 section 5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONT: u8 = 0x0;
    /// Text message.
    pub const TEXT: u8 = 0x1;
    /// Binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest response head accepted for the upgrade; a server sending more is broken.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// A protocol violation by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// The upgrade response is not valid HTTP or is over [`MAX_RESPONSE_HEAD`].
    BadResponse(&'static str),
    /// The server answered the upgrade with this non-101 status.
    Status(u16),
    /// A frame violates RFC 6455 (reason).
    Frame(&'static str),
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    B64.encode(h.finalize())
}

/// Builds the upgrade request; returns it and the `Sec-WebSocket-Accept` value to expect.
pub fn upgrade_request(host: &str, resource: &str, nonce: [u8; 16]) -> (Vec<u8>, String) {
    let key = B64.encode(nonce);
    let req = format!(
        "GET {resource} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    (req.into_bytes(), accept_for(&key))
}

/// Parses the upgrade response at the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some(n))`: a valid 101 whose head is `n` bytes (frames may follow in `buf[n..]`).
pub fn parse_upgrade_response(buf: &[u8], accept: &str) -> Result<Option<usize>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(WsError::BadResponse("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(WsError::BadResponse("malformed HTTP response")),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(WsError::Status(code));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |v: Option<&[u8]>, token: &str| {
        v.and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token(header("upgrade"), "websocket") {
        return Err(WsError::BadResponse("101 without Upgrade: websocket"));
    }
    if !has_token(header("connection"), "upgrade") {
        return Err(WsError::BadResponse("101 without Connection: upgrade"));
    }
    if header("sec-websocket-accept").map(|v| v.trim_ascii()) != Some(accept.as_bytes()) {
        return Err(WsError::BadResponse("wrong Sec-WebSocket-Accept"));
    }
    if header("sec-websocket-extensions").is_some() {
        return Err(WsError::BadResponse(
            "server negotiated an extension we did not offer",
        ));
    }
    Ok(Some(n))
}

/// Appends one complete (FIN) client frame to `out`, masked with `mask` as RFC 6455 requires of
/// every client frame.
pub fn encode_frame(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | op);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `buf` with the repeating 4-byte mask. Works a word at a time where it can: this runs once
/// per byte sent, so it is the one loop on the send path that scales with payload size.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = buf.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// A parsed server frame header; the payload is `buf[payload]` of the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHead {
    /// Final fragment.
    pub fin: bool,
    /// Opcode.
    pub op: u8,
    /// Payload byte range within the parsed buffer.
    pub payload: std::ops::Range<usize>,
}

/// Parses one server frame at the start of `buf`. `Ok(None)`: incomplete. A frame longer than
/// `max_payload` is an error rather than a reason to buffer without bound.
pub fn parse_frame(buf: &[u8], max_payload: usize) -> Result<Option<FrameHead>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Frame("RSV bit set without a negotiated extension"));
    }
    if b1 & 0x80 != 0 {
        return Err(WsError::Frame("masked frame from server"));
    }
    let fin = b0 & 0x80 != 0;
    let op = b0 & 0x0F;
    let (len, mut pos) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    match op {
        opcode::CONT | opcode::TEXT | opcode::BINARY => {}
        opcode::CLOSE | opcode::PING | opcode::PONG => {
            if !fin {
                return Err(WsError::Frame("fragmented control frame"));
            }
            if len > 125 {
                return Err(WsError::Frame("control frame over 125 bytes"));
            }
        }
        _ => return Err(WsError::Frame("reserved opcode")),
    }
    if len > max_payload as u64 {
        return Err(WsError::Frame("frame over the maximum message size"));
    }
    let len = len as usize;
    if buf.len() - pos < len {
        return Ok(None);
    }
    let start = pos;
    pos += len;
    Ok(Some(FrameHead {
        fin,
        op,
        payload: start..pos,
    }))
}

/// The close code in a close frame payload: 1005 (no status) when empty, 1002 for a 1-byte body.
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [] => 1005,
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        [_] => 1002,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_roundtrip() {
        let (req, accept) = upgrade_request("127.0.0.1:1", "/ws?user=a", [7; 16]);
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("GET /ws?user=a HTTP/1.1\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n\x01\x02hi"
        );
        let n = parse_upgrade_response(resp.as_bytes(), &accept)
            .unwrap()
            .unwrap();
        assert_eq!(&resp.as_bytes()[n..], b"\x01\x02hi");
        assert_eq!(
            parse_upgrade_response(&resp.as_bytes()[..20], &accept),
            Ok(None)
        );
        assert_eq!(
            parse_upgrade_response(resp.as_bytes(), "nope"),
            Err(WsError::BadResponse("wrong Sec-WebSocket-Accept"))
        );
        let r503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_upgrade_response(r503, &accept),
            Err(WsError::Status(503))
        );
    }

    #[test]
    fn mask_matches_naive_at_every_length_and_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..67u8).collect();
        for start in 0..4 {
            for end in start..data.len() {
                let mut fast = data[start..end].to_vec();
                apply_mask(&mut fast, mask);
                let naive: Vec<u8> = data[start..end]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[i % 4])
                    .collect();
                assert_eq!(fast, naive);
            }
        }
    }

    #[test]
    fn encodes_masked_frames_of_every_length_class() {
        for len in [0usize, 5, 125, 126, 65535, 65536] {
            let payload = vec![b'a'; len];
            let mut out = Vec::new();
            encode_frame(&mut out, opcode::TEXT, &payload, [1, 2, 3, 4]);
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0, "client frames must be masked");
            let (len_field, hdr) = match out[1] & 0x7F {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            assert_eq!(len_field, len);
            let mut body = out[hdr + 4..].to_vec();
            apply_mask(&mut body, [1, 2, 3, 4]);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn parses_server_frames() {
        assert_eq!(parse_frame(b"\x81", 100), Ok(None));
        let f = parse_frame(b"\x81\x03abcX", 100).unwrap().unwrap();
        assert_eq!((f.fin, f.op, f.payload), (true, opcode::TEXT, 2..5));
        let mut long = vec![0x82, 126, 0x01, 0x00];
        long.extend(vec![0; 256]);
        assert_eq!(parse_frame(&long[..100], 1000), Ok(None));
        assert_eq!(parse_frame(&long, 1000).unwrap().unwrap().payload, 4..260);
        assert!(parse_frame(&long, 100).is_err());
        assert!(
            parse_frame(b"\x81\x83abc", 100).is_err(),
            "masked server frame"
        );
        assert!(parse_frame(b"\xC1\x00", 100).is_err(), "RSV1");
        assert!(parse_frame(b"\x09\x00", 100).is_err(), "fragmented ping");
        assert!(parse_frame(b"\x83\x00", 100).is_err(), "reserved opcode");
        assert_eq!(close_code(b"\x03\xe8bye"), 1000);
        assert_eq!(close_code(b""), 1005);
    }
}
