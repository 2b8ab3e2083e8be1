//! The WebSocket upgrade: what makes a parsed request ([`super::request`]) a valid opening
//! handshake (RFC 6455, section 4.2.1), and the `101` that accepts it.
//!
//! shardhub answers the upgrade itself rather than through tungstenite's handshake machine so
//! that a refusal is a real HTTP response written through the connection's outbox (tungstenite
//! drops the stream with an unsent rejection in it), and so that plain requests such as
//! `GET /health` are answered on the same port by the same parse. Pure: a request in, a
//! decision out.

use super::request::{find_header, find_query_param, has_token, Request};
use super::response::Response;

/// A valid upgrade request, as the authenticator and `on_connect` hooks see it.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// The path without the query, e.g. `/ws`.
    pub path: String,
    /// The raw query string (after `?`), if any.
    pub query: Option<String>,
    /// Every header as sent (names as sent; compare case-insensitively).
    pub headers: Vec<(String, String)>,
    /// `Sec-WebSocket-Accept` for the response (empty for an SSE request admitted alike).
    pub accept: String,
}

impl UpgradeRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The first query parameter with this name, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        find_query_param(self.query.as_deref(), name)
    }

    /// A plain request seen as an upgrade, for the checks both share (SSE streams are admitted
    /// exactly as WebSocket sessions are).
    pub fn from_plain(req: &Request) -> Self {
        Self {
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            accept: String::new(),
        }
    }
}

/// Checks an upgrade request (`req.upgrade` is set) for a path in `ws_paths`.
pub fn validate(req: Request, ws_paths: &[&str]) -> Result<UpgradeRequest, Response> {
    if req.method != "GET" {
        return Err(
            Response::refusal(405, "only GET is supported here").with_header("Allow", "GET")
        );
    }
    if !ws_paths.contains(&req.path.as_str()) {
        let msg = format!("no WebSocket endpoint at {}", req.path);
        return Err(Response::refusal(404, &msg));
    }
    if req.version != 1 {
        return Err(Response::refusal(400, "WebSocket upgrades need HTTP/1.1"));
    }
    if !req
        .header("connection")
        .is_some_and(|v| has_token(v, "upgrade"))
    {
        return Err(Response::refusal(400, "missing Connection: Upgrade"));
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        let msg = "unsupported Sec-WebSocket-Version (13 expected)";
        return Err(Response::refusal(426, msg).with_header("Sec-WebSocket-Version", "13"));
    }
    let key = match req.header("sec-websocket-key").map(str::trim) {
        Some(k) if is_key(k) => k,
        _ => {
            return Err(Response::refusal(
                400,
                "missing or malformed Sec-WebSocket-Key",
            ))
        }
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(UpgradeRequest {
        path: req.path,
        query: req.query,
        headers: req.headers,
        accept,
    })
}

/// Whether `key` is the base64 encoding of 16 bytes (RFC 6455, section 4.1): 22 characters of
/// the base64 alphabet, the last of which carries only 2 bits, then `==`.
fn is_key(key: &str) -> bool {
    let b = key.as_bytes();
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    b.len() == 24
        && b[..22].iter().all(alphabet)
        && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
        && &b[22..] == b"=="
}

/// Appends the `101 Switching Protocols` response for an accepted upgrade to `out`, selecting
/// `subprotocol` if given (it must be one the client offered, or the client fails the
/// connection) and the `Sec-WebSocket-Extensions` the server accepted, if any
/// (`crate::protocol::deflate::negotiate`). Appended rather than returned: the engine sends
/// the `welcome` frame in the same buffer.
pub fn switching_protocols(
    out: &mut Vec<u8>,
    accept: &str,
    subprotocol: Option<&str>,
    extensions: Option<&str>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in [
        (&b"Sec-WebSocket-Protocol: "[..], subprotocol),
        (&b"Sec-WebSocket-Extensions: "[..], extensions),
    ] {
        if let Some(v) = value {
            out.extend_from_slice(name);
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse, Limits, Parsed};

    const PATHS: &[&str] = &["/ws"];
    const L: Limits = Limits {
        max_header_bytes: 8192,
        max_body_bytes: 1024,
    };

    fn upgrade(target: &str, extra: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    fn check(raw: &str) -> Result<UpgradeRequest, u16> {
        match parse(raw.as_bytes(), L) {
            Parsed::Complete(r, _) => validate(r, PATHS).map_err(|e| e.status),
            Parsed::Refuse(r) => Err(r.status),
            Parsed::Partial => Err(0),
        }
    }

    #[test]
    fn a_valid_upgrade_yields_the_rfc_accept_key_and_the_user() {
        let u = check(&upgrade("/ws?user=al%20ice&x=1", "")).expect("valid");
        // The example key and answer of RFC 6455, section 1.3.
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.query_param("user").as_deref(), Some("al ice"));
        assert_eq!(u.query_param("nope"), None);
        assert_eq!(u.header("SEC-WEBSOCKET-VERSION"), Some("13"));
    }

    #[test]
    fn the_101_names_the_accept_key_and_what_was_selected() {
        let mut out = b"before|".to_vec();
        switching_protocols(&mut out, "KEY=", Some("bearer"), Some("permessage-deflate"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "before|HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: KEY=\r\n\
             Sec-WebSocket-Protocol: bearer\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        );
        let mut plain = Vec::new();
        switching_protocols(&mut plain, "KEY=", None, None);
        assert!(plain.ends_with(b"Sec-WebSocket-Accept: KEY=\r\n\r\n"));
    }

    #[test]
    fn every_refusal_has_its_status() {
        let cases = [
            (upgrade("/nope", ""), 404),
            (upgrade("/ws", "").replace("GET", "POST"), 405),
            (upgrade("/ws", "").replace("Version: 13", "Version: 8"), 426),
            (
                upgrade("/ws", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
                400,
            ),
            (
                upgrade("/ws", "").replace("keep-alive, Upgrade", "keep-alive"),
                400,
            ),
            (upgrade("/ws", "").replace("HTTP/1.1", "HTTP/1.0"), 400),
            (
                upgrade("/ws", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!=="),
                400,
            ),
            (
                upgrade("/ws", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="),
                400,
            ),
            (
                format!("GET /ws HTTP/1.1\r\nX-Pad: {}", "a".repeat(10_000)),
                431,
            ),
        ];
        for (req, want) in cases {
            assert_eq!(check(&req).map(|_| 101), Err(want), "{req:?}");
        }
    }
}
