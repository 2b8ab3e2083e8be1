//! Plain HTTP/1.1 requests (the API, SSE, probes) built from parts: `http::request::parse` with
//! small limits, then `router::route` and `query_param`, pipelined the way a keep-alive
//! connection is served.
//!
//! A request is a method, a path of segments with percent escapes (`%00`, `%ff`, overlong
//! UTF-8, broken ones), a query, a header list (duplicates, huge values, obs-fold, bad bytes,
//! every spelling of `Content-Length` and `Transfer-Encoding`) and a body that may or may not
//! match its declared length; several requests follow each other on one connection.
//! Invariants:
//!
//! * nothing panics;
//! * a complete request never uses more bytes than it was given, nor fewer than one, and its
//!   body is within the limit and is exactly the bytes its `Content-Length` covers;
//! * a request is complete only if its `Content-Length` headers are digits and agree (anything
//!   else is how request smuggling starts);
//! * the same bytes split anywhere give `Partial` before the request's end, never a refusal or
//!   a different request;
//! * route parameters and query parameters are what a strict percent-decoder gives (two hex
//!   digits per escape, valid UTF-8), non-empty for route parameters;
//! * every refusal is a well-formed HTTP response.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardhub::http::request::{parse, Limits, Parsed, Request};
use shardhub::http::router::{route, Route};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Folded into 64..=1087 bytes of head.
    max_header: u16,
    /// Folded into 0..=255 bytes of body.
    max_body: u8,
    requests: Vec<Req>,
    /// Bytes after the last request.
    tail: Vec<u8>,
    /// Where the bytes are cut to see what a partial read gives.
    cuts: Vec<u16>,
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: Method,
    /// The path: `/` and segments.
    path: Vec<Seg>,
    /// `?` and `key=value` pairs joined by `&`.
    query: Option<Vec<Pair>>,
    version: Version,
    headers: Vec<Header>,
    body: Vec<u8>,
    /// `\n` instead of `\r\n` as the line end.
    bare_lf: bool,
}

/// A query pair: a key and, after `=`, a value (none: the key alone).
type Pair = (Vec<Seg>, Option<Vec<Seg>>);

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
    Delete,
    Head,
    Lower,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Version {
    V11,
    V10,
    V2,
    Other(String),
}

/// Path and query words the router knows.
const WORDS: [&str; 12] = [
    "api",
    "v1",
    "rooms",
    "publish",
    "sessions",
    "send",
    "broadcast",
    "health",
    "sse",
    "room",
    "user",
    "metrics",
];

#[derive(Arbitrary, Debug)]
enum Seg {
    /// A word the router knows (index mod 12).
    Word(u8),
    Text(String),
    /// `%XX` of any byte, hex case chosen.
    Escape {
        byte: u8,
        upper: bool,
    },
    /// An overlong UTF-8 encoding of `/` or NUL (`%C0%AF`, `%C0%80`), or a lone `%ff`.
    Overlong(u8),
    /// `%` and two arbitrary bytes: `%zz`, `%+1`, `%4` at the end.
    Broken([u8; 2]),
    /// A UTF-8 character escaped byte by byte.
    EscapedChar(char),
    Plus,
}

#[derive(Arbitrary, Debug)]
enum Header {
    ContentLength(Length),
    TransferEncoding(String),
    Connection(String),
    Upgrade(String),
    Host,
    Named(String, String),
    /// A value of `size` bytes.
    Huge {
        size: u16,
    },
    /// A continuation line (obs-fold) after a header.
    Folded(String),
    /// Any bytes as a header line.
    Raw(Vec<u8>),
}

/// A `Content-Length` value.
#[derive(Arbitrary, Debug)]
enum Length {
    /// The body's true length.
    True,
    Value(u64),
    /// Any text.
    Text(String),
    /// The true length spelled `+N`, ` N `, `0N`, `N, N` (index mod 4).
    Spelled(u8),
}

impl Seg {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Word(i) => out.extend_from_slice(WORDS[usize::from(i % 12)].as_bytes()),
            Self::Text(s) => out.extend_from_slice(s.as_bytes()),
            Self::Escape { byte, upper } => {
                let s = if *upper {
                    format!("%{byte:02X}")
                } else {
                    format!("%{byte:02x}")
                };
                out.extend_from_slice(s.as_bytes());
            }
            Self::Overlong(i) => out.extend_from_slice(
                ["%C0%AF", "%c0%80", "%ff", "%00"][usize::from(i % 4)].as_bytes(),
            ),
            Self::Broken(b) => {
                out.push(b'%');
                out.extend_from_slice(b);
            }
            Self::EscapedChar(c) => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("%{b:02X}").as_bytes());
                }
            }
            Self::Plus => out.push(b'+'),
        }
    }
}

impl Req {
    fn write(&self, out: &mut Vec<u8>) {
        let eol: &[u8] = if self.bare_lf { b"\n" } else { b"\r\n" };
        let method = match &self.method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Lower => "get",
            Method::Other(s) => s,
        };
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        for seg in &self.path {
            out.push(b'/');
            seg.write(out);
        }
        if self.path.is_empty() {
            out.push(b'/');
        }
        if let Some(pairs) = &self.query {
            out.push(b'?');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b'&');
                }
                k.iter().for_each(|s| s.write(out));
                if let Some(v) = v {
                    out.push(b'=');
                    v.iter().for_each(|s| s.write(out));
                }
            }
        }
        let version = match &self.version {
            Version::V11 => "HTTP/1.1",
            Version::V10 => "HTTP/1.0",
            Version::V2 => "HTTP/2.0",
            Version::Other(s) => s,
        };
        out.push(b' ');
        out.extend_from_slice(version.as_bytes());
        out.extend_from_slice(eol);
        let n = self.body.len();
        for h in &self.headers {
            let line = match h {
                Header::ContentLength(l) => {
                    let v = match l {
                        Length::True => n.to_string(),
                        Length::Value(v) => v.to_string(),
                        Length::Text(s) => s.clone(),
                        Length::Spelled(i) => match i % 4 {
                            0 => format!("+{n}"),
                            1 => format!("  {n} "),
                            2 => format!("0{n}"),
                            _ => format!("{n}, {n}"),
                        },
                    };
                    format!("Content-Length: {v}")
                }
                Header::TransferEncoding(v) => format!("Transfer-Encoding: {v}"),
                Header::Connection(v) => format!("Connection: {v}"),
                Header::Upgrade(v) => format!("Upgrade: {v}"),
                Header::Host => "Host: localhost".into(),
                Header::Named(k, v) => format!("{k}: {v}"),
                Header::Huge { size } => format!("X-Pad: {}", "a".repeat(usize::from(*size))),
                Header::Folded(v) => format!("X-Folded: a\r\n {v}"),
                Header::Raw(bytes) => {
                    out.extend_from_slice(bytes);
                    out.extend_from_slice(eol);
                    continue;
                }
            };
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(eol);
        out.extend_from_slice(&self.body);
    }
}

/// Percent-decoding as RFC 3986 has it: `%` and exactly two hex digits, UTF-8 result.
fn strict_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let digit = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
                out.push(digit(hex[0]) << 4 | digit(hex[1]));
                i += 3;
            }
            b'+' if plus_is_space => {
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

/// The query parameter `name` as the docs define it: the first pair whose key decodes to
/// `name` and whose value decodes.
fn model_query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (strict_decode(k, true).as_deref() == Some(name))
            .then(|| strict_decode(v, true))
            .flatten()
    })
}

/// What the `Content-Length` headers allow: `Ok(n)` when every one is digits and they agree
/// (`Ok(0)` without any), `Err` otherwise.
fn model_length(req: &Request) -> Result<usize, ()> {
    let mut length = None;
    for (_, v) in req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        let v = v.trim_matches([' ', '\t']);
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let n: usize = v.parse().map_err(|_| ())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

/// Checks one complete request against the models.
fn check_complete(req: &Request, used: usize, buf: &[u8], limits: Limits) {
    assert!(used <= buf.len(), "used {used} of {} bytes", buf.len());
    assert!(used > 0, "a complete request of no bytes");
    assert!(req.body.len() <= limits.max_body_bytes);
    if req.upgrade {
        // An upgrade has no body: what follows its head are the client's first frames.
        assert!(req.body.is_empty());
    } else {
        assert_eq!(
            model_length(req),
            Ok(req.body.len()),
            "the body does not follow Content-Length: {:?}",
            req.headers
        );
    }
    assert_eq!(&buf[used - req.body.len()..used], &req.body[..]);

    for name in ["room", "user", "token", ""] {
        assert_eq!(
            req.query_param(name),
            model_query_param(req.query.as_deref(), name),
            "query {:?}, parameter {name:?}",
            req.query
        );
    }
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match route(&req.method, &req.path) {
        Ok(Route::Room(p)) | Ok(Route::Publish(p)) => {
            assert_eq!(
                strict_decode(segs[3], false).as_deref(),
                Some(p.as_str()),
                "{}",
                req.path
            );
            assert!(!p.is_empty());
        }
        Ok(Route::CloseSession(p)) => {
            assert_eq!(
                strict_decode(segs[3], false).as_deref(),
                Some(p.as_str()),
                "{}",
                req.path
            );
            assert!(!p.is_empty());
        }
        _ => {}
    }
}

/// A refusal is a well-formed response with its declared body.
fn check_refusal(resp: &shardhub::http::response::Response) {
    let bytes = resp.to_bytes(false);
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let mut r = httparse::Response::new(&mut slots);
    match r.parse(&bytes) {
        Ok(httparse::Status::Complete(n)) => {
            assert_eq!(r.code, Some(resp.status));
            assert_eq!(&bytes[n..], &resp.body[..]);
        }
        other => panic!(
            "refusal is not HTTP ({other:?}): {:?}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

/// The outcome's kind and, when complete, the bytes it used.
fn outcome(p: &Parsed) -> (u16, usize) {
    match p {
        Parsed::Partial => (0, 0),
        Parsed::Complete(r, used) if r.upgrade => (101, *used),
        Parsed::Complete(_, used) => (200, *used),
        Parsed::Refuse(r) => (r.status, 0),
    }
}

fuzz_target!(|input: Input| {
    let limits = Limits {
        max_header_bytes: 64 + usize::from(input.max_header % 1024),
        max_body_bytes: usize::from(input.max_body),
    };
    let mut buf = Vec::new();
    for r in input.requests.iter().take(8) {
        r.write(&mut buf);
    }
    buf.extend_from_slice(&input.tail);

    // Serve the connection: parse, take the request off the front, parse again.
    let mut at = 0;
    for _ in 0..16 {
        let rest = &buf[at..];
        let parsed = parse(rest, limits);
        let (kind, used) = outcome(&parsed);
        // A read that stopped anywhere short of the request's end waits for more.
        for &cut in &input.cuts {
            let cut = usize::from(cut) % (rest.len() + 1);
            let early = outcome(&parse(&rest[..cut], limits));
            match kind {
                200 | 101 if cut < used => {
                    assert_eq!(early, (0, 0), "cut at {cut} of {used}")
                }
                // Past an upgrade's head come frames, whatever they are.
                101 => assert_eq!(early.0, 101, "cut at {cut}, past the upgrade"),
                200 => assert_eq!(early, (kind, used), "cut at {cut}, past the request"),
                _ => {}
            }
        }
        match parsed {
            Parsed::Complete(req, used) => {
                check_complete(&req, used, rest, limits);
                if req.upgrade {
                    return;
                }
                at += used;
            }
            Parsed::Refuse(resp) => return check_refusal(&resp),
            Parsed::Partial => return,
        }
    }
});
