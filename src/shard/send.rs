//! Writing to a connection's socket with `send(2)` and `sendmsg(2)` instead of
//! `write(2)`/`writev(2)`.
//!
//! mio's `TcpStream` writes vectors with `writev`, which on a socket passes through the VFS
//! layer (iovec import, permission and fsnotify hooks) before reaching the socket code that
//! `sendmsg` enters directly. On the project VM a 66-byte write over loopback cost 9-14% more
//! with `writev` than with `send` in six runs (median 7.3 against 6.7 µs), the calls taking
//! turns within each run (`shardhub-loadgen send-cost`, `bench/runs/2026-12-02-send-syscall`).
//! One write per delivery is the whole per-delivery system-call cost of a fan-out.
//!
//! `MSG_NOSIGNAL` makes a write to a connection the peer reset return `EPIPE` instead of
//! raising `SIGPIPE`, so an embedding program need not ignore that signal.

use std::io::{self, IoSlice, Write};

use mio::net::TcpStream;
use socket2::SockRef;

/// A connection's socket as the engine's outbox writes to it: one contiguous slice goes out
/// with `send`, several with `sendmsg`.
pub(crate) struct SendWriter<'a>(pub(crate) &'a TcpStream);

impl Write for SendWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        SockRef::from(self.0).send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match bufs {
            [one] => self.write(one),
            _ => SockRef::from(self.0).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream as StdStream};

    fn pair() -> (TcpStream, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = StdStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (TcpStream::from_std(server), client)
    }

    #[test]
    fn one_slice_and_several_arrive_in_order() {
        let (server, mut client) = pair();
        let mut w = SendWriter(&server);
        assert_eq!(w.write_vectored(&[IoSlice::new(b"one")]).expect("send"), 3);
        let parts = [
            IoSlice::new(b"-two"),
            IoSlice::new(b""),
            IoSlice::new(b"-three"),
        ];
        assert_eq!(w.write_vectored(&parts).expect("sendmsg"), 10);
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"one-two-three");
    }

    #[test]
    fn a_reset_peer_is_an_error_not_a_signal() {
        let (server, client) = pair();
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .expect("linger");
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut w = SendWriter(&server);
        let err = (0..3)
            .find_map(|_| w.write(b"late").err())
            .expect("a write to a reset connection fails");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{err}"
        );
    }
}
