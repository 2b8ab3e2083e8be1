//! One client connection's state ([`Conn`]: socket, phase, buffers) and the parsing of its
//! input: the 101 upgrade response, then server frames, with pings answered and close frames
//! echoed in place. No poller here: [`super::Net`] owns the connections, [`super::drive`]
//! reads them.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::set_bind_address_no_port;
use crate::ws::{self, opcode};

use super::Failure;

/// One read's size: large enough that a subscriber flooded by fan-out drains in few calls.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// Largest message accepted from the server; larger is reported as a protocol failure instead of
/// buffered.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Connecting,
    Handshaking,
    Open,
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) gen: u32,
    pub(super) tag: usize,
    pub(super) phase: Phase,
    pub(super) started_ns: u64,
    pub(super) ready: bool,
    pub(super) accept: String,
    pub(super) inbuf: Vec<u8>,
    pub(super) rpos: usize,
    pub(super) out: Vec<u8>,
    pub(super) wpos: usize,
    pub(super) dirty: bool,
    /// A fragmented message being reassembled: its opcode and bytes so far.
    pub(super) frag: Option<(u8, Vec<u8>)>,
    /// We sent a close frame: whatever ends the connection now is not a failure.
    pub(super) close_sent: bool,
}

/// What one step of parsing a connection's input produced.
pub(super) enum Got {
    Upgraded,
    Text,
    Nothing,
}

pub(super) fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    // Small request/response frames must not wait for Nagle.
    sock.set_tcp_nodelay(true)?;
    if let Some(src) = source {
        if src.is_ipv4() {
            set_bind_address_no_port(&sock)?;
        }
        sock.bind(&SocketAddr::new(src, 0).into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

impl Conn {
    /// Parses the next thing in the input. Text payloads are copied into `scratch`.
    pub(super) fn next(&mut self, scratch: &mut Vec<u8>, mask: [u8; 4]) -> Result<Got, Failure> {
        let buf = &self.inbuf[self.rpos..];
        match self.phase {
            Phase::Connecting => Ok(Got::Nothing),
            Phase::Handshaking => match ws::parse_upgrade_response(buf, &self.accept) {
                Ok(None) => Ok(Got::Nothing),
                Ok(Some(n)) => {
                    self.rpos += n;
                    self.phase = Phase::Open;
                    Ok(Got::Upgraded)
                }
                Err(e) => Err(Failure::from_ws(e)),
            },
            Phase::Open => loop {
                let buf = &self.inbuf[self.rpos..];
                let Some(f) = ws::parse_frame(buf, MAX_MESSAGE).map_err(Failure::from_ws)? else {
                    return Ok(Got::Nothing);
                };
                let payload = &buf[f.payload.clone()];
                let consumed = f.payload.end;
                let got = match f.op {
                    opcode::PING => {
                        if !self.close_sent {
                            ws::encode_frame(&mut self.out, opcode::PONG, payload, mask);
                        }
                        None
                    }
                    opcode::PONG => None,
                    opcode::CLOSE => {
                        let code = ws::close_code(payload);
                        if !self.close_sent {
                            // Echo the close as RFC 6455 asks; the caller flushes and drops.
                            ws::encode_frame(
                                &mut self.out,
                                opcode::CLOSE,
                                &payload[..payload.len().min(2)],
                                mask,
                            );
                        }
                        self.rpos += consumed;
                        return Err(Failure::Close(code));
                    }
                    opcode::TEXT | opcode::BINARY if self.frag.is_some() => {
                        return Err(Failure::Protocol("new message inside a fragmented one"));
                    }
                    opcode::TEXT | opcode::BINARY if f.fin => {
                        scratch.clear();
                        scratch.extend_from_slice(payload);
                        Some(f.op)
                    }
                    opcode::TEXT | opcode::BINARY => {
                        self.frag = Some((f.op, payload.to_vec()));
                        None
                    }
                    _ => {
                        // Continuation.
                        let Some((op, mut acc)) = self.frag.take() else {
                            return Err(Failure::Protocol("continuation without a start"));
                        };
                        if acc.len() + payload.len() > MAX_MESSAGE {
                            return Err(Failure::Protocol("message over the maximum size"));
                        }
                        acc.extend_from_slice(payload);
                        if f.fin {
                            *scratch = acc;
                            Some(op)
                        } else {
                            self.frag = Some((op, acc));
                            None
                        }
                    }
                };
                self.rpos += consumed;
                match got {
                    Some(opcode::TEXT) => return Ok(Got::Text),
                    // Binary messages are not part of any scenario: consumed and skipped.
                    _ => continue,
                }
            },
        }
    }

    pub(super) fn compact(&mut self) {
        if self.rpos == self.inbuf.len() {
            self.inbuf.clear();
            self.rpos = 0;
        } else if self.rpos > READ_CHUNK {
            self.inbuf.drain(..self.rpos);
            self.rpos = 0;
        }
    }
}
