//! The only `unsafe` code of the crate: the clock and two system calls that std and socket2 do
//! not wrap. Each block carries a `// SAFETY:` note.
//!
//! The clock is `CLOCK_MONOTONIC` rather than `Instant` because latency is measured across
//! processes (`--procs`): the publisher stamps its intended send time into the payload and a
//! subscriber in another process subtracts it from its own clock. `Instant` is opaque and cannot be
//! sent over the wire; `CLOCK_MONOTONIC` is one system-wide clock that never jumps, unlike
//! `SystemTime`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// Nanoseconds on the system-wide monotonic clock.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) cannot fail");
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft open-files limit to the hard limit and returns the new soft limit, so that one
/// process can hold as many client sockets as the machine allows.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit that does not exceed the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(want.rlim_cur);
    }
    Ok(lim.rlim_cur)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` so that binding a client socket to a source address does not
/// reserve an ephemeral port at `bind` time: the kernel then picks the port at `connect` time,
/// per destination 4-tuple, instead of limiting each source address to one global port range.
pub fn set_bind_address_no_port<S: AsRawFd>(sock: &S) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the fd is open for the duration of the call (borrowed), and `one` is a c_int whose
    // size is passed alongside its address.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
    }
}
