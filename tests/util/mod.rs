//! Shared helpers: start a real server on an ephemeral port, talk to it with a real WebSocket
//! client. Every blocking read has a timeout; waits poll a condition up to a deadline.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use shardhub::{Config, Hooks, Hub, RunningServer, Server};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long any single expected event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A server running in this process on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    running: Option<RunningServer>,
}

impl TestServer {
    /// Two shards (so cross-shard paths run), defaults otherwise, adjusted by `tweak`.
    pub fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::with_hooks(Hooks::default(), tweak)
    }

    pub fn with_hooks(hooks: Hooks, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: 2,
            pin_cores: false,
            ..Config::default()
        };
        tweak(&mut config);
        let server = Server::builder(config)
            .hooks(hooks)
            .build()
            .expect("server builds");
        let addr = server.local_addr();
        let hub = server.hub();
        let running = server.spawn().expect("server starts");
        Self {
            addr,
            hub,
            running: Some(running),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// Graceful shutdown; returns when every shard thread has ended.
    pub fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().expect("clean shutdown");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown();
        }
    }
}

/// Polls `cond` until it holds or `PATIENCE` runs out.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback port nothing listens on now (for a process that binds it itself).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("its address").port()
}

/// Reads the `shardhub` binary's stderr until it logs "listening on", within `PATIENCE`.
pub fn wait_listening(child: &mut std::process::Child) {
    use std::io::{BufRead, BufReader};
    let mut log = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    let deadline = Instant::now() + PATIENCE;
    while !line.contains("listening on") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "server exited early");
        assert!(
            Instant::now() < deadline,
            "the server did not start listening"
        );
    }
}

/// A WebSocket client on a blocking socket with a read timeout.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub session: String,
    pub user: String,
    pub shard: u64,
}

/// Opens a WebSocket to `url` without reading anything.
pub fn connect_raw(url: &str) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let tcp = TcpStream::connect(addr).expect("tcp connect");
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    tcp.set_nodelay(true).unwrap();
    match tungstenite::client(url, tcp) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            panic!("blocking handshake interrupted")
        }
    }
}

impl Client {
    /// Connects as `user` (anonymous if `None`) and reads the welcome.
    pub fn connect(server: &TestServer, user: Option<&str>) -> Self {
        let q = user.map(|u| format!("?user={u}")).unwrap_or_default();
        let ws = connect_raw(&server.url(&format!("/ws{q}"))).expect("upgrade accepted");
        Client::greeted(ws)
    }

    /// Wraps an upgraded socket and reads the server's `welcome`.
    pub fn greeted(ws: WebSocket<TcpStream>) -> Self {
        let mut c = Client {
            ws,
            session: String::new(),
            user: String::new(),
            shard: 0,
        };
        let w = c.expect("welcome");
        c.session = w["session"].as_str().unwrap().to_string();
        c.user = w["user"].as_str().unwrap().to_string();
        c.shard = w["shard"].as_u64().unwrap();
        c
    }

    /// Connects as `user` until the session lands on `shard` (the kernel spreads connections
    /// over SO_REUSEPORT listeners by hash, so a few tries are needed).
    pub fn connect_on_shard(server: &TestServer, user: &str, shard: u64) -> Self {
        for _ in 0..200 {
            let c = Client::connect(server, Some(user));
            if c.shard == shard {
                return c;
            }
            c.close();
        }
        panic!("no connection landed on shard {shard} in 200 tries");
    }

    pub fn send_json(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    pub fn send_text(&mut self, t: &str) {
        self.ws.send(Message::text(t)).expect("send");
    }

    pub fn send_binary(&mut self, b: &[u8]) {
        self.ws.send(Message::binary(b.to_vec())).expect("send");
    }

    /// The next data message (pings are answered and skipped).
    pub fn recv(&mut self) -> Message {
        loop {
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(m) => return m,
                Err(e) => panic!("expected a message, got {e}"),
            }
        }
    }

    /// The next message, which must be JSON text.
    pub fn recv_json(&mut self) -> Value {
        match self.recv() {
            Message::Text(t) => {
                serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
            }
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// The next message, which must be JSON of this `type`.
    pub fn expect(&mut self, kind: &str) -> Value {
        let v = self.recv_json();
        assert_eq!(v["type"], kind, "expected a {kind}, got {v}");
        v
    }

    /// The next message, which must be binary.
    pub fn recv_binary(&mut self) -> Vec<u8> {
        match self.recv() {
            Message::Binary(b) => b.to_vec(),
            other => panic!("expected binary, got {other:?}"),
        }
    }

    /// Asserts that no data message arrives for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        let r = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()));
            }
            self.ws.get_mut().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                other => break other,
            }
        };
        self.ws.get_mut().set_read_timeout(Some(PATIENCE)).unwrap();
        match r {
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Reads until the server's close frame; returns its code.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => return u16::from(f.code),
                Ok(Message::Close(None)) => return 1005,
                Ok(_) => continue,
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        }
    }

    pub fn close(mut self) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        // Read the server's reply so the close completes cleanly.
        for _ in 0..10 {
            if self.ws.read().is_err() {
                break;
            }
        }
    }
}

/// Sends raw bytes on a fresh TCP connection and returns the HTTP status line's code and the
/// whole response.
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    // The server may answer (and close) before it has read everything we send.
    let _ = tcp.write_all(request);
    // Read one response: to the end of its Content-Length body, as the server may keep the
    // connection alive, or to the close; a `101` ends at its head.
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_done = out.windows(4).any(|w| w == b"\r\n\r\n");
        if head_done && out.starts_with(b"HTTP/1.1 101") {
            break;
        }
        if response_len(&out).is_some_and(|total| out.len() >= total) {
            break;
        }
        match tcp.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// Sends an upgrade request the server accepts only to refuse it with a close code (an
/// authentication or origin refusal, or an application's `Reject`: docs/protocol.md, "Refused
/// upgrades"); checks that the `101` comes with nothing but a close frame, and returns that
/// frame's code and reason and the `101`'s head.
pub fn refused_upgrade(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    tcp.write_all(request).unwrap();
    // The server ends the connection after the close (a reset, as this client never answers
    // it): read to the end.
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let done = out.windows(4).position(|w| w == b"\r\n\r\n").and_then(|h| {
            out.get(h + 5)
                .map(|len| out.len() >= h + 6 + usize::from(*len))
        });
        if done == Some(true) {
            break;
        }
        match tcp.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {text}"))
        + 4;
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "wanted a 101: {text}");
    let frame = &out[end..];
    // An unmasked, final close frame whose payload (code and a reason of at most 123 bytes)
    // fits the 7-bit length, and nothing after it.
    assert!(
        frame.len() >= 4 && frame[0] == 0x88,
        "wanted a close frame: {frame:?}"
    );
    assert_eq!(frame.len(), 2 + usize::from(frame[1]), "{frame:?}");
    let code = u16::from_be_bytes([frame[2], frame[3]]);
    let reason = String::from_utf8(frame[4..].to_vec()).expect("a UTF-8 reason");
    (code, reason, head)
}

/// The full length of the HTTP response at the start of `buf` (head plus `Content-Length`),
/// once its head is complete and it has a length.
pub fn response_len(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse::<usize>()
        .ok()?;
    Some(head + len)
}

/// A correct upgrade request for `target` with extra header lines.
pub fn upgrade_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Writes one masked client frame by hand (for frames a well-behaved client cannot send).
pub fn raw_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 65535 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [1u8, 2, 3, 4];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// An HTTP response as a test sees it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.text()))
            .to_string()
    }
}

/// A hand-written HTTP/1.1 client on one (keep-alive) connection.
pub struct HttpConn {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).expect("tcp connect");
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        Self {
            tcp,
            buf: Vec::new(),
        }
    }

    /// Writes a request with a `Content-Length` body when `body` is given.
    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        self.tcp.write_all(req.as_bytes()).expect("write request");
    }

    /// Reads one response (its head and `Content-Length` body).
    pub fn read_response(&mut self) -> HttpResponse {
        let mut chunk = [0u8; 8192];
        let total = loop {
            if let Some(n) = response_len(&self.buf) {
                if self.buf.len() >= n {
                    break n;
                }
            }
            match self.tcp.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed mid-response: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading a response: {e}"),
            }
        };
        let raw: Vec<u8> = self.buf.drain(..total).collect();
        let head_len = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&raw[..head_len]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        HttpResponse {
            status,
            headers,
            body: raw[head_len..].to_vec(),
        }
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> HttpResponse {
        self.send(method, target, headers, body);
        self.read_response()
    }

    /// Whether the server closed the connection (within `PATIENCE`).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(self.tcp.read(&mut b), Ok(0))
    }
}

/// One request on a fresh connection.
pub fn http(addr: SocketAddr, method: &str, target: &str, body: Option<&str>) -> HttpResponse {
    HttpConn::connect(addr).request(method, target, &[], body)
}

/// An SSE stream read by hand.
pub struct SseClient {
    pub tcp: TcpStream,
    buf: Vec<u8>,
    pub head: String,
    /// The id of the last event read, whole (`offset:epoch`), for `Last-Event-ID`.
    pub last_id: String,
}

impl SseClient {
    /// Opens `target` (e.g. `/sse?room=r`) and reads the response head; panics unless 200.
    pub fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Self {
        let mut conn = HttpConn::connect(addr);
        conn.send("GET", target, headers, None);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w: &[u8]| w == b"\r\n\r\n") {
                break p + 4;
            }
            match conn.tcp.read(&mut chunk) {
                Ok(0) => panic!("closed: {:?}", String::from_utf8_lossy(&buf)),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading the SSE head: {e}"),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let rest = buf[head_end..].to_vec();
        Self {
            tcp: conn.tcp,
            buf: rest,
            head,
            last_id: String::new(),
        }
    }

    /// The next block (an event or a comment) without its blank-line terminator.
    pub fn next_block(&mut self) -> String {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..p + 2).collect();
                return String::from_utf8_lossy(&block[..p]).into_owned();
            }
            match self.tcp.read(&mut chunk) {
                Ok(0) => panic!("stream closed"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading SSE: {e}"),
            }
        }
    }

    /// The next event (skipping comments): (offset from its `offset:epoch` id, event name, data
    /// as JSON); the whole id goes to `last_id`.
    pub fn next_event(&mut self) -> (u64, String, Value) {
        loop {
            let block = self.next_block();
            if block.starts_with(':') {
                continue;
            }
            let mut id = 0;
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    let (offset, epoch) = v.split_once(':').expect("an offset:epoch id");
                    assert!(!epoch.is_empty(), "{v}");
                    id = offset.parse().expect("a numeric offset");
                    self.last_id = v.to_string();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            let v = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {block}"));
            return (id, event, v);
        }
    }
}
