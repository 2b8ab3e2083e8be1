//! The event loop of one thread ([`drive`]): poll, read every ready connection within a budget,
//! hand what arrived to the [`Handler`], flush what it queued, and end with a bounded close of
//! every connection. Precise wakeups for the handler's next send come from a `timerfd`.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::{Events, Interest, Token};

use crate::sys::{monotonic_ns, TimerFd};

use super::conn::{Got, Phase, READ_CHUNK};
use super::{ConnId, Failure, Handler, Net, CLOSE_WAIT_NS};

/// Reads of [`READ_CHUNK`] bytes per connection per event before moving on to others.
const READ_BUDGET: usize = 8;
/// Token of the wakeup timer: generation 0 is never given to a connection.
const TIMER: Token = Token(u32::MAX as usize);

/// Longest blocking poll, so progress samples and deadlines are checked at least this often.
const MAX_POLL_NS: u64 = 50_000_000;

/// Runs `h` on `net` until the handler says it is done or `hard_deadline` passes, then closes
/// every connection and waits (bounded) for the closes to complete.
pub fn drive<H: Handler>(net: &mut Net, h: &mut H, hard_deadline: u64) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut scratch = Vec::with_capacity(4096);
    let mut tmp = vec![0u8; READ_CHUNK];
    let mut backlog: Vec<ConnId> = Vec::new();
    let mut closing_until: Option<u64> = None;
    let mut timer = TimerFd::new()?;
    net.poll.registry().register(
        &mut mio::unix::SourceFd(&timer.as_raw_fd()),
        TIMER,
        Interest::READABLE,
    )?;
    loop {
        let now = monotonic_ns();
        net.expire(now);
        deliver_closed(net, h, now);
        let wake = if closing_until.is_some() {
            Some(now + MAX_POLL_NS)
        } else {
            h.tick(net, now)
        };
        net.flush_dirty();
        deliver_closed(net, h, now);
        match (wake, closing_until) {
            (_, Some(until)) if net.is_empty() || now >= until => return Ok(()),
            (_, Some(_)) => {}
            (None, None) => {
                net.close_all(now);
                net.flush_dirty();
                deliver_closed(net, h, now);
                closing_until = Some(now + CLOSE_WAIT_NS);
                continue;
            }
            (Some(_), None) if now >= hard_deadline => {
                net.close_all(now);
                net.flush_dirty();
                deliver_closed(net, h, now);
                closing_until = Some(now + CLOSE_WAIT_NS);
                continue;
            }
            (Some(_), None) => {}
        }
        let until = wake
            .unwrap_or(u64::MAX)
            .min(now + MAX_POLL_NS)
            .min(net.next_deadline())
            .min(hard_deadline);
        let timeout = if backlog.is_empty() {
            // Precise wakeup via the timerfd for the scenario's next send; the poll timeout
            // (rounded up to whole ms by epoll) backs it up and covers the coarse deadlines
            // (connect timeouts, samples), which need no better than a millisecond.
            if let Some(w) = wake.filter(|&w| w > now && w <= until) {
                timer.arm_at(w)?;
            }
            Duration::from_nanos(until.saturating_sub(now))
        } else {
            Duration::ZERO
        };
        match net.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = monotonic_ns();
        let mut work = std::mem::take(&mut backlog);
        for ev in events.iter() {
            if ev.token() == TIMER {
                timer.drain();
                continue;
            }
            let id = ConnId::from_token(ev.token());
            // Stale events (slot reused, generation differs) are dropped here.
            let Some(c) = net.get(id) else { continue };
            if c.phase == Phase::Connecting {
                net.check_connect(id);
                if net.get(id).is_none() {
                    continue;
                }
            } else if ev.is_writable() {
                net.flush_one(id);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                work.push(id);
            }
        }
        for id in work {
            if service(net, h, id, now, &mut tmp, &mut scratch) {
                backlog.push(id);
            }
        }
        deliver_closed(net, h, now);
    }
}

fn deliver_closed<H: Handler>(net: &mut Net, h: &mut H, now: u64) {
    while !net.closed.is_empty() {
        let closed = std::mem::take(&mut net.closed);
        for (tag, f) in &closed {
            h.on_closed(net, *tag, f.as_ref(), now);
        }
    }
}

/// Reads what a connection has (within budget) and dispatches it. Returns true when data may be
/// left unread.
fn service<H: Handler>(
    net: &mut Net,
    h: &mut H,
    id: ConnId,
    now: u64,
    tmp: &mut [u8],
    scratch: &mut Vec<u8>,
) -> bool {
    let Some(c) = net.get(id) else { return false };
    if c.phase == Phase::Connecting {
        return false;
    }
    let mut more = false;
    let mut eof = None;
    for i in 0..=READ_BUDGET {
        if i == READ_BUDGET {
            more = true;
            break;
        }
        match c.stream.read(tmp) {
            Ok(0) => {
                eof = Some(Failure::Eof);
                break;
            }
            Ok(n) => c.inbuf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eof = Some(Failure::from_io(&e));
                break;
            }
        }
    }
    loop {
        let mask = (net.rand() as u32).to_ne_bytes();
        let Some(c) = net.get(id) else { return false };
        let tag = c.tag;
        match c.next(scratch, mask) {
            Ok(Got::Nothing) => break,
            Ok(Got::Upgraded) => h.on_upgraded(net, id, tag, now),
            Ok(Got::Text) => h.on_text(net, id, tag, scratch, now),
            Err(f) => {
                // Flush a close echo or anything queued before the failure, best effort.
                if let Some(c) = net.get(id) {
                    c.dirty = false;
                }
                net.flush(id);
                net.finish(id, Some(f));
                return false;
            }
        }
    }
    let Some(c) = net.get(id) else { return false };
    c.compact();
    if c.wpos < c.out.len() && !c.dirty {
        c.dirty = true;
        net.dirty.push(id);
    }
    if let Some(f) = eof {
        net.flush(id);
        net.finish(id, Some(f));
        return false;
    }
    more
}
