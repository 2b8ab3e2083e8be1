//! Test servers on 127.0.0.1:0 so the client can be tested without shardhub or Python: a raw
//! RFC 6455 server (echo or broadcast-to-all), the Engine.IO/Socket.IO handshake, pings and
//! event broadcast of a Socket.IO chat server, and misbehaving servers (never answers, answers
//! 503, closes with a code). One thread per connection is fine at test sizes; every blocking read
//! has a timeout and every server stops when dropped.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use shardhub_loadgen::ws;

/// What a test server does with each connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Echo every text frame.
    Echo,
    /// Send every text frame to every connected client (the sender included).
    Broadcast,
    /// A Socket.IO broadcast server as `socket.io` speaks it over Engine.IO v4 WebSocket: the
    /// open packet and a ping at once, `40{sid}` to the namespace connect, then every event
    /// from any connected client to every connected client (the sender included).
    SocketIo,
    /// Accept TCP, never answer.
    Silent,
    /// Answer the upgrade with 503.
    Status503,
    /// Upgrade, then close with 1008 after 200 ms.
    Close1008,
}

type Peers = Arc<Mutex<Vec<Arc<Mutex<TcpStream>>>>>;

/// A running test server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Engine.IO pongs (`3`) received (SocketIo).
    pongs: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Engine.IO pongs received so far.
    pub fn pongs(&self) -> usize {
        self.pongs.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

pub fn spawn(mode: Mode) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    let stop = Arc::new(AtomicBool::new(false));
    let peers: Peers = Arc::default();
    let pongs = Arc::new(AtomicUsize::new(0));
    let (st, pg) = (stop.clone(), pongs.clone());
    let accept = std::thread::spawn(move || {
        let mut conns = Vec::new();
        while !st.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((s, _)) => {
                    let (st, peers, pg) = (st.clone(), peers.clone(), pg.clone());
                    conns.push(std::thread::spawn(move || {
                        let _ = serve(s, mode, &st, &peers, &pg);
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => break,
            }
        }
        for c in conns {
            let _ = c.join();
        }
    });
    TestServer {
        addr,
        stop,
        pongs,
        accept: Some(accept),
    }
}

fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | op];
    let n = payload.len();
    if n < 126 {
        f.push(n as u8);
    } else if n < 65536 {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// Reads more bytes; Ok(false) on a read timeout (so the caller can check the stop flag).
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut tmp = [0u8; 16384];
    match s.read(&mut tmp) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(true)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn serve(
    mut s: TcpStream,
    mode: Mode,
    stop: &AtomicBool,
    peers: &Peers,
    pongs: &AtomicUsize,
) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    // Upgrade request.
    let head_end = loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(&mut s, &mut buf)?;
    };
    if mode == Mode::Silent {
        while !stop.load(Ordering::SeqCst) {
            let _ = fill(&mut s, &mut buf);
        }
        return Ok(());
    }
    if mode == Mode::Status503 {
        s.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap_or_default()
        .trim()
        .to_string();
    buf.drain(..head_end);
    write!(
        s,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept_for(&key)
    )?;
    if mode == Mode::Close1008 {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(&frame(8, &1008u16.to_be_bytes()))?;
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < until && fill(&mut s, &mut buf).is_ok() {}
        return Ok(());
    }
    let me = Arc::new(Mutex::new(s.try_clone()?));
    if mode == Mode::Broadcast {
        peers.lock().unwrap().push(me.clone());
    }
    if mode == Mode::SocketIo {
        let open = br#"0{"sid":"t","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        let mut w = me.lock().unwrap();
        w.write_all(&frame(1, open))?;
        // A ping before anything else: a client that ignores it would be dropped.
        w.write_all(&frame(1, b"2"))?;
    }
    let result = (|| -> io::Result<()> {
        while !stop.load(Ordering::SeqCst) {
            // Parse every complete (masked) client frame in the buffer.
            loop {
                if buf.len() < 2 {
                    break;
                }
                let op = buf[0] & 0x0F;
                assert!(buf[1] & 0x80 != 0, "client frames must be masked");
                let (len, mut pos) = match buf[1] & 0x7F {
                    126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                    127 if buf.len() >= 10 => (
                        u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => break,
                    n => (n as usize, 2),
                };
                if buf.len() < pos + 4 + len {
                    break;
                }
                let mask = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
                pos += 4;
                let mut payload = buf[pos..pos + len].to_vec();
                ws::apply_mask(&mut payload, mask);
                buf.drain(..pos + len);
                match op {
                    8 => {
                        me.lock()
                            .unwrap()
                            .write_all(&frame(8, &payload[..payload.len().min(2)]))?;
                        return Ok(());
                    }
                    9 => me.lock().unwrap().write_all(&frame(10, &payload))?,
                    1 if mode == Mode::Echo => me.lock().unwrap().write_all(&frame(1, &payload))?,
                    1 if mode == Mode::SocketIo && payload == b"40" => {
                        me.lock()
                            .unwrap()
                            .write_all(&frame(1, br#"40{"sid":"n"}"#))?;
                        peers.lock().unwrap().push(me.clone());
                    }
                    1 if mode == Mode::SocketIo && payload == b"3" => {
                        pongs.fetch_add(1, Ordering::SeqCst);
                    }
                    1 if mode == Mode::SocketIo && !payload.starts_with(b"42") => {
                        panic!("unexpected packet {}", String::from_utf8_lossy(&payload))
                    }
                    1 => {
                        let f = frame(1, &payload);
                        for p in peers.lock().unwrap().iter() {
                            let _ = p.lock().unwrap().write_all(&f);
                        }
                    }
                    _ => {}
                }
            }
            fill(&mut s, &mut buf)?;
        }
        Ok(())
    })();
    peers.lock().unwrap().retain(|p| !Arc::ptr_eq(p, &me));
    result
}
