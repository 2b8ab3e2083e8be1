//! The shard's listening socket: SO_REUSEPORT so every shard accepts on the same address and
//! the kernel spreads connections, and a backlog large enough for connect bursts.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking listener with SO_REUSEADDR and SO_REUSEPORT.
///
/// mio's own `TcpListener::bind` sets neither SO_REUSEPORT nor a backlog above 128, and with 128
/// a burst of connects overflows the accept queue and waits about a second for SYN retransmits.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}
