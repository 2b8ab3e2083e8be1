//! The HTTP/1.1 upgrade request that opens a WebSocket, and the responses to it.
//!
//! shardhub parses the upgrade itself (with httparse) rather than through tungstenite's
//! handshake machine so that a refusal is a real HTTP response written through the connection's
//! outbox (tungstenite drops the stream with an unsent rejection in it), and so that plain HTTP
//! requests such as `GET /health` can be answered on the same port. Pure: bytes in, a decision out.

use std::fmt::Write as _;

/// Header slots offered to httparse; more headers than this is a 431.
const MAX_HEADERS: usize = 64;

/// A complete, valid upgrade request.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// The path without the query, e.g. `/ws`.
    pub path: String,
    /// The raw query string (after `?`), if any.
    pub query: Option<String>,
    /// Every header as sent (names as sent; compare case-insensitively).
    pub headers: Vec<(String, String)>,
    /// `Sec-WebSocket-Accept` for the response.
    pub accept: String,
    /// Bytes of the buffer the request used; the rest are early WebSocket frames.
    pub consumed: usize,
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
}

/// The first header called `name` (case-insensitive) in a parsed request's headers.
pub fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The first query parameter called `name`, percent-decoded (`+` is a space).
pub fn find_query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k).as_deref() == Some(name))
            .then(|| percent_decode(v))
            .flatten()
    })
}

/// What the bytes so far amount to.
#[derive(Debug)]
pub enum Parsed {
    /// The request is not complete yet.
    Partial,
    /// A valid WebSocket upgrade.
    Upgrade(UpgradeRequest),
    /// A plain request the server answers and then closes, e.g. a health check or a refusal.
    Respond(Response),
}

/// A plain HTTP response, sent before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Short text body (a reason).
    pub body: String,
    /// Extra header lines, each without CRLF.
    pub extra: Vec<String>,
}

impl Response {
    /// A response with a plain-text body.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            extra: Vec::new(),
        }
    }

    /// The bytes on the wire (always `Connection: close`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.body.len() + 1
        );
        for h in &self.extra {
            let _ = write!(s, "{h}\r\n");
        }
        let _ = write!(s, "\r\n{}\n", self.body);
        s.into_bytes()
    }
}

/// The standard reason phrase of the statuses the server answers with (upgrade refusals here,
/// and the HTTP API's responses).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The `101 Switching Protocols` response for an accepted upgrade, selecting `subprotocol`
/// if given (it must be one the client offered, or the client fails the connection).
pub fn switching_protocols(accept: &str, subprotocol: Option<&str>) -> Vec<u8> {
    let mut s = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = subprotocol {
        let _ = write!(s, "Sec-WebSocket-Protocol: {p}\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses the request bytes received so far. `ws_paths` are the paths that accept upgrades.
pub fn parse(buf: &[u8], max_header_bytes: usize, ws_paths: &[&str]) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_header_bytes => {
            return Parsed::Respond(Response::new(431, "request headers too large"))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Respond(Response::new(431, "too many request headers"))
        }
        Err(e) => return Parsed::Respond(Response::new(400, format!("malformed request: {e}"))),
    };
    if consumed > max_header_bytes {
        return Parsed::Respond(Response::new(431, "request headers too large"));
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    if req.method != Some("GET") {
        let mut r = Response::new(405, "only GET is supported here");
        r.extra.push("Allow: GET".into());
        return Parsed::Respond(r);
    }
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let get = |name: &str| find_header(&headers, name);
    let is_upgrade = get("upgrade").is_some_and(|v| has_token(v, "websocket"));
    if !is_upgrade {
        return Parsed::Respond(match path {
            "/health" => Response::new(200, "ok"),
            p if ws_paths.contains(&p) => {
                let mut r = Response::new(426, "this endpoint expects a WebSocket upgrade");
                r.extra.push("Upgrade: websocket".into());
                r
            }
            _ => Response::new(404, "not found"),
        });
    }
    if !ws_paths.contains(&path) {
        return Parsed::Respond(Response::new(
            404,
            format!("no WebSocket endpoint at {path}"),
        ));
    }
    if req.version != Some(1) {
        return Parsed::Respond(Response::new(400, "WebSocket upgrades need HTTP/1.1"));
    }
    if !get("connection").is_some_and(|v| has_token(v, "upgrade")) {
        return Parsed::Respond(Response::new(400, "missing Connection: Upgrade"));
    }
    if get("sec-websocket-version").map(str::trim) != Some("13") {
        let mut r = Response::new(426, "unsupported Sec-WebSocket-Version (13 expected)");
        r.extra.push("Sec-WebSocket-Version: 13".into());
        return Parsed::Respond(r);
    }
    let key = match get("sec-websocket-key").map(str::trim) {
        Some(k) if k.len() == 24 && k.ends_with("==") => k,
        _ => return Parsed::Respond(Response::new(400, "missing or malformed Sec-WebSocket-Key")),
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Parsed::Upgrade(UpgradeRequest {
        path: path.to_string(),
        query,
        headers,
        accept,
        consumed,
    })
}

/// Decodes `%XX` escapes and `+`; `None` if the result is not UTF-8 or an escape is malformed.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: &[&str] = &["/ws"];

    fn upgrade(target: &str, extra: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    fn status(p: Parsed) -> u16 {
        match p {
            Parsed::Respond(r) => r.status,
            Parsed::Upgrade(_) => 101,
            Parsed::Partial => 0,
        }
    }

    #[test]
    fn a_valid_upgrade_yields_the_rfc_accept_key_and_the_user() {
        let mut req = upgrade("/ws?user=al%20ice&x=1", "").into_bytes();
        req.extend_from_slice(b"\x81\x80early frame");
        let Parsed::Upgrade(u) = parse(&req, 8192, PATHS) else {
            panic!("not an upgrade")
        };
        // The example key and answer of RFC 6455, section 1.3.
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.query_param("user").as_deref(), Some("al ice"));
        assert_eq!(u.query_param("nope"), None);
        assert_eq!(&req[u.consumed..], b"\x81\x80early frame");
        assert_eq!(u.header("SEC-WEBSOCKET-VERSION"), Some("13"));
    }

    #[test]
    fn incomplete_requests_wait_and_oversized_ones_are_refused() {
        let req = upgrade("/ws", "");
        assert_eq!(status(parse(&req.as_bytes()[..30], 8192, PATHS)), 0);
        let huge = format!("GET /ws HTTP/1.1\r\nX-Pad: {}", "a".repeat(10_000));
        assert_eq!(status(parse(huge.as_bytes(), 8192, PATHS)), 431);
        let many: String = (0..80).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            status(parse(upgrade("/ws", &many).as_bytes(), 1 << 20, PATHS)),
            431
        );
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
            ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 426),
            ("GET /health HTTP/1.1\r\n\r\n".to_string(), 200),
            ("GET /other HTTP/1.1\r\n\r\n".to_string(), 404),
            ("\x16\x03\x01 binary junk\r\n\r\n".to_string(), 400),
        ];
        for (req, want) in cases {
            assert_eq!(status(parse(req.as_bytes(), 8192, PATHS)), want, "{req:?}");
        }
    }

    #[test]
    fn responses_are_well_formed_http() {
        let bytes = Response::new(403, "nope").to_bytes();
        let mut slots = [httparse::EMPTY_HEADER; 8];
        let mut r = httparse::Response::new(&mut slots);
        let n = match r.parse(&bytes).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete"),
        };
        assert_eq!(r.code, Some(403));
        assert_eq!(&bytes[n..], b"nope\n");
    }

    #[test]
    fn percent_decoding_rejects_broken_escapes() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
