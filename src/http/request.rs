//! One HTTP/1.1 request read off a connection's buffer, with the server's size limits: the one
//! parse every connection's first bytes go through, WebSocket upgrades and plain requests alike.
//!
//! Pure: [`parse`] looks at the bytes received so far and says whether they hold a complete
//! request (head and `Content-Length` body), need more, or break a limit. Limits are checked as
//! soon as they can be: an oversized head is refused before its end arrives, an oversized body
//! before a byte of it is read. An upgrade (`Upgrade: websocket`) is a complete request without
//! a body whose [`Request::upgrade`] is set; [`super::upgrade`] checks the rest of it, and the
//! bytes after its head are the client's first WebSocket frames.

use super::response::Response;

/// Header slots offered to httparse; more headers than this is a 431.
const MAX_HEADERS: usize = 64;

/// Size limits for one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// Largest body; larger gets 413.
    pub max_body_bytes: usize,
}

/// A complete request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path without the query, still percent-encoded.
    pub path: String,
    /// The raw query string (after `?`), if any.
    pub query: Option<String>,
    /// Every header (names as sent; compare case-insensitively).
    pub headers: Vec<(String, String)>,
    /// The body (empty without `Content-Length`).
    pub body: Vec<u8>,
    /// Whether the connection stays open after the response (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// Whether it asks for a WebSocket (`Upgrade: websocket`); it then has no body.
    pub upgrade: bool,
    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
}

impl Request {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The first query parameter with this name, percent-decoded (`+` is a space).
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

/// Decodes `%XX` escapes and `+`; `None` if the result is not UTF-8 or an escape is malformed.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                // Exactly two hex digits (`from_str_radix` would also take a sign: `%+1`).
                let hex = |k: usize| b.get(i + k).and_then(|&c| char::from(c).to_digit(16));
                out.push((hex(1)? * 16 + hex(2)?) as u8);
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

/// What the bytes so far amount to.
#[derive(Debug)]
pub enum Parsed {
    /// Not complete yet.
    Partial,
    /// A complete request that used the first `usize` bytes of the buffer.
    Complete(Request, usize),
    /// A request the server refuses outright; the connection closes after the response.
    Refuse(Response),
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses the bytes received so far.
pub fn parse(buf: &[u8], limits: Limits) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header_bytes => {
            return Parsed::Refuse(Response::error(
                431,
                "headers_too_large",
                "request headers too large",
            ))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refuse(Response::error(
                431,
                "headers_too_large",
                "too many request headers",
            ))
        }
        Err(e) => {
            return Parsed::Refuse(Response::error(
                400,
                "bad_request",
                &format!("malformed request: {e}"),
            ))
        }
    };
    if head > limits.max_header_bytes {
        return Parsed::Refuse(Response::error(
            431,
            "headers_too_large",
            "request headers too large",
        ));
    }
    let get = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value))
    };
    let upgrade = get("upgrade").is_some_and(|v| has_token(&v, "websocket"));
    if !upgrade && get("transfer-encoding").is_some() {
        // Chunked bodies would need a second parser for no client we know of: API clients send
        // small JSON bodies with a length.
        return Parsed::Refuse(Response::error(
            411,
            "length_required",
            "chunked request bodies are not supported; send Content-Length",
        ));
    }
    let mut length: Option<usize> = None;
    // An upgrade has no body: what follows its head are WebSocket frames.
    for h in req
        .headers
        .iter()
        .filter(|h| !upgrade && h.name.eq_ignore_ascii_case("content-length"))
    {
        // RFC 9110: 1*DIGIT. `str::parse` alone would also take `+5` (and `trim` a Unicode
        // space), which a proxy in front may read differently: a smuggling vector.
        let n = std::str::from_utf8(h.value)
            .ok()
            .map(|v| v.trim_matches([' ', '\t']))
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<usize>().ok());
        match (n, length) {
            // Two different lengths are a request-smuggling attempt or a broken client.
            (Some(n), None) => length = Some(n),
            (Some(n), Some(l)) if n == l => {}
            _ => {
                return Parsed::Refuse(Response::error(
                    400,
                    "bad_request",
                    "invalid Content-Length",
                ))
            }
        }
    }
    let length = length.unwrap_or(0);
    if length > limits.max_body_bytes {
        return Parsed::Refuse(Response::error(
            413,
            "body_too_large",
            &format!(
                "request body of {length} bytes is over the limit of {}",
                limits.max_body_bytes
            ),
        ));
    }
    let Some(body) = buf.get(head..head + length) else {
        return Parsed::Partial;
    };
    let connection = get("connection");
    let keep_alive = match req.version {
        Some(1) => !connection.as_deref().is_some_and(|v| has_token(v, "close")),
        _ => connection
            .as_deref()
            .is_some_and(|v| has_token(v, "keep-alive")),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let request = Request {
        method: req.method.unwrap_or("GET").to_string(),
        path: path.to_string(),
        query,
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        keep_alive,
        upgrade,
        version: req.version.unwrap_or(1),
    };
    Parsed::Complete(request, head + length)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_header_bytes: 1024,
        max_body_bytes: 16,
    };

    fn status(p: &Parsed) -> u16 {
        match p {
            Parsed::Partial => 0,
            Parsed::Complete(r, _) if r.upgrade => 101,
            Parsed::Complete(..) => 200,
            Parsed::Refuse(r) => r.status,
        }
    }

    #[test]
    fn a_request_with_a_body_completes_only_when_the_body_is_in() {
        let raw = b"POST /api/v1/send?x=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /";
        for cut in [10, 50, raw.len() - 11] {
            assert_eq!(status(&parse(&raw[..cut], L)), 0, "cut at {cut}");
        }
        let Parsed::Complete(r, used) = parse(raw, L) else {
            panic!("complete")
        };
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v1/send")
        );
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.body, b"hello");
        assert!(r.keep_alive);
        assert_eq!(&raw[used..], b"GET /", "the next pipelined request stays");
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let ka = |raw: &str| match parse(raw.as_bytes(), L) {
            Parsed::Complete(r, _) => r.keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(ka("GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn limits_and_malformed_requests_are_refused_early() {
        let big_head = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000));
        assert_eq!(
            status(&parse(big_head.as_bytes(), L)),
            431,
            "before its end"
        );
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let roomy = Limits {
            max_header_bytes: 1 << 20,
            ..L
        };
        assert_eq!(status(&parse(many.as_bytes(), roomy)), 431);
        let big_body = "POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n";
        assert_eq!(
            status(&parse(big_body.as_bytes(), L)),
            413,
            "before the body"
        );
        let cases = [
            ("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 2\r\n\r\nab",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nab", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
            ("\x16\x03\x01 junk\r\n\r\n", 400),
            (
                "GET /ws HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n",
                101,
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(status(&parse(raw.as_bytes(), L)), want, "{raw:?}");
        }
    }

    /// Found by the `http_request` fuzz target: `Content-Length: +0` was read as 0, because
    /// `str::parse` takes a sign. RFC 9110 allows digits only, and a proxy that reads the
    /// header differently would frame the body differently (request smuggling).
    #[test]
    fn a_content_length_is_digits_only() {
        for bad in ["+0", "+5", "-0", "5 5", "0x5", "\u{a0}5", ""] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\nhello");
            assert_eq!(status(&parse(raw.as_bytes(), L)), 400, "{bad:?}");
        }
        for good in ["5", " 5", "5\t", "005"] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {good}\r\n\r\nhello");
            let Parsed::Complete(r, _) = parse(raw.as_bytes(), L) else {
                panic!("{good:?} refused")
            };
            assert_eq!(r.body, b"hello");
        }
    }

    /// Found by the `http_request` fuzz target: `Content-Length: 0` followed by
    /// `Content-Length: 01` was read as a body of one byte, because 0 stood for "no length
    /// yet". Two lengths must agree whatever the first one is.
    #[test]
    fn two_content_lengths_must_agree_even_when_the_first_is_zero() {
        for (a, b) in [("0", "01"), ("0", "5"), ("5", "0"), ("3", "4")] {
            let raw = format!(
                "POST / HTTP/1.1\r\nContent-Length: {a}\r\nContent-Length: {b}\r\n\r\nhello"
            );
            assert_eq!(status(&parse(raw.as_bytes(), L)), 400, "{a} then {b}");
        }
        let same = "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 005\r\n\r\nhello";
        assert_eq!(
            status(&parse(same.as_bytes(), L)),
            200,
            "the same length twice"
        );
    }

    #[test]
    fn query_parameters_are_decoded() {
        let Parsed::Complete(r, _) = parse(b"GET /sse?room=a%20b&n=1 HTTP/1.1\r\n\r\n", L) else {
            panic!()
        };
        assert_eq!(r.query_param("room").as_deref(), Some("a b"));
        assert_eq!(r.query_param("n").as_deref(), Some("1"));
        assert_eq!(r.query_param("x"), None);
    }

    #[test]
    fn an_upgrade_is_a_request_whose_body_is_the_first_frames() {
        let raw = b"GET /ws?user=al%20ice HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\n\x81\x80xyz";
        let Parsed::Complete(r, used) = parse(raw, L) else {
            panic!("complete")
        };
        assert!(r.upgrade && r.body.is_empty());
        assert_eq!(&raw[used..], b"\x81\x80xyz");
        assert_eq!(r.query_param("user").as_deref(), Some("al ice"));
    }

    #[test]
    fn percent_decoding_rejects_broken_escapes() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        // A sign is no hex digit (found by the `http_request` fuzz target).
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%-1"), None);
    }
}
