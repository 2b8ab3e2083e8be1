//! `send-cost`: what the kernel charges the sender for one small write over loopback, by
//! system call, with no WebSocket server in the way.
//!
//! At low rates a fan-out costs each recipient one write, and over loopback that write also
//! carries the receiver's TCP work (the packet is processed in the sender's softirq). This is
//! the floor under every server's "CPU per delivery" in `bench/compare.py`: a server that makes
//! one write per delivery cannot go below the cost of that write, whatever its user space does.
//!
//! The measurement: `conns` connected loopback pairs. A sender thread writes `bytes` to each of
//! them once per round, `rate` rounds a second, the system calls taking turns round by round (so
//! a noisy stretch of a shared machine hits each call alike); a reader thread drains every
//! socket through epoll, as a client would. Per call: the sender thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`, user and system) over its rounds, divided by its writes.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use socket2::SockRef;

use crate::sys;

/// A system call that writes to a connected socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Call {
    /// `send(2)` with `MSG_NOSIGNAL` (what std's `TcpStream::write` and uWebSockets use).
    Send,
    /// `sendmsg(2)` with one iovec and `MSG_NOSIGNAL`.
    Sendmsg,
    /// `write(2)` on the socket's file descriptor.
    Write,
    /// `writev(2)` with one iovec (what mio's and std's `write_vectored` use).
    Writev,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Send => "send",
            Call::Sendmsg => "sendmsg",
            Call::Write => "write",
            Call::Writev => "writev",
        }
    }

    fn write(self, sock: &File, buf: &[u8]) -> io::Result<usize> {
        match self {
            Call::Send => SockRef::from(sock).send_with_flags(buf, libc::MSG_NOSIGNAL),
            Call::Sendmsg => SockRef::from(sock)
                .send_vectored_with_flags(&[IoSlice::new(buf)], libc::MSG_NOSIGNAL),
            Call::Write => (&*sock).write(buf),
            Call::Writev => (&*sock).write_vectored(&[IoSlice::new(buf)]),
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Connected pairs (each holds three descriptors in this process).
    pub conns: usize,
    /// Rounds per second; each round writes once to every connection.
    pub rate: f64,
    /// Seconds of rounds.
    pub duration: f64,
    /// Bytes per write (66: a 64-byte message with its WebSocket frame header).
    pub bytes: usize,
    /// The calls, taking turns round by round.
    pub calls: Vec<Call>,
    /// Core to pin the sender thread to.
    pub sender_core: Option<usize>,
    /// Core to pin the reader thread to.
    pub reader_core: Option<usize>,
}

/// One call's cost.
#[derive(Debug, Clone, Serialize)]
pub struct CallCost {
    /// The system call.
    pub call: Call,
    /// Writes that took all their bytes.
    pub writes: u64,
    /// Writes that would have blocked or took part of their bytes (a reader falling behind).
    pub short: u64,
    /// The sender thread's CPU time over this call's rounds.
    pub cpu_ns: u64,
    /// `cpu_ns` per write, in microseconds.
    pub us_per_write: f64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Connected pairs.
    pub conns: usize,
    /// Rounds per second.
    pub rate: f64,
    /// Rounds in all.
    pub rounds: u64,
    /// Bytes per write.
    pub bytes: usize,
    /// Bytes the reader got.
    pub received: u64,
    /// Per call, in the order given.
    pub calls: Vec<CallCost>,
}

impl Report {
    /// A markdown table.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} connections, {} rounds at {}/s, {}-byte writes, {} bytes read\n\n\
             | call | writes | short | sender CPU per write |\n| --- | ---: | ---: | ---: |\n",
            self.conns, self.rounds, self.rate, self.bytes, self.received
        );
        for c in &self.calls {
            s += &format!(
                "| `{}` | {} | {} | {:.2} us |\n",
                c.call.name(),
                c.writes,
                c.short,
                c.us_per_write
            );
        }
        s
    }
}

/// Checks the plan's bounds.
pub fn validate(plan: &Plan) -> Result<(), String> {
    if plan.conns == 0 || plan.conns > 6_000 {
        return Err("--conns must be 1..=6000 (three descriptors each)".into());
    }
    if !(plan.rate > 0.0 && plan.rate <= 10_000.0) {
        return Err("--rate must be in (0, 10000]".into());
    }
    if !(plan.duration > 0.0 && plan.duration <= 600.0) {
        return Err("--duration must be in (0, 600] seconds".into());
    }
    if plan.bytes == 0 || plan.bytes > 65_536 {
        return Err("--bytes must be 1..=65536".into());
    }
    if plan.calls.is_empty() {
        return Err("--calls needs at least one call".into());
    }
    Ok(())
}

/// Runs the measurement; blocks for about `duration` seconds.
pub fn run(plan: &Plan) -> io::Result<Report> {
    validate(plan).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    sys::raise_nofile_limit()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut readers = Vec::with_capacity(plan.conns);
    let mut writers = Vec::with_capacity(plan.conns);
    for _ in 0..plan.conns {
        let reader = TcpStream::connect(addr)?;
        let (writer, _) = listener.accept()?;
        writer.set_nodelay(true)?;
        writer.set_nonblocking(true)?;
        reader.set_nonblocking(true)?;
        readers.push(mio::net::TcpStream::from_std(reader));
        writers.push(File::from(OwnedFd::from(writer)));
    }
    drop(listener);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let core = plan.reader_core;
        thread::Builder::new()
            .name("send-cost-reader".into())
            .spawn(move || read_all(readers, core, &stop))?
    };
    pin(plan.sender_core);
    // Let the reader reach its first wait.
    thread::sleep(Duration::from_millis(200));

    let buf = vec![b'x'; plan.bytes];
    let rounds = (plan.duration * plan.rate).round().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let mut calls: Vec<CallCost> = plan
        .calls
        .iter()
        .map(|&call| CallCost {
            call,
            writes: 0,
            short: 0,
            cpu_ns: 0,
            us_per_write: 0.0,
        })
        .collect();
    let start = Instant::now();
    for r in 0..rounds {
        let due = start + period.mul_f64(r as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let slot = &mut calls[(r % plan.calls.len() as u64) as usize];
        let before = sys::thread_cpu_ns();
        for w in &writers {
            match slot.call.write(w, &buf) {
                Ok(n) if n == buf.len() => slot.writes += 1,
                Ok(_) => slot.short += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => slot.short += 1,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        slot.cpu_ns += sys::thread_cpu_ns() - before;
    }
    // Let the reader drain what is in flight before it stops.
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let received = reader
        .join()
        .map_err(|_| io::Error::other("reader thread panicked"))??;
    for c in &mut calls {
        c.us_per_write = c.cpu_ns as f64 / 1e3 / c.writes.max(1) as f64;
    }
    Ok(Report {
        conns: plan.conns,
        rate: plan.rate,
        rounds,
        bytes: plan.bytes,
        received,
        calls,
    })
}

fn pin(core: Option<usize>) {
    if let Some(id) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

/// Drains every socket until `stop`, edge-triggered as a client's poller would; returns the
/// bytes read.
fn read_all(
    mut socks: Vec<mio::net::TcpStream>,
    core: Option<usize>,
    stop: &AtomicBool,
) -> io::Result<u64> {
    pin(core);
    let mut poll = Poll::new()?;
    for (i, s) in socks.iter_mut().enumerate() {
        poll.registry().register(s, Token(i), Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in &events {
            let Some(s) = socks.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => received += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_delivers_every_byte_and_is_charged() {
        let plan = Plan {
            conns: 20,
            rate: 200.0,
            duration: 0.2,
            bytes: 66,
            calls: vec![Call::Send, Call::Sendmsg, Call::Write, Call::Writev],
            sender_core: None,
            reader_core: None,
        };
        let r = run(&plan).expect("run");
        assert_eq!(r.rounds, 40);
        for c in &r.calls {
            assert_eq!(c.writes + c.short, 10 * 20, "{:?}", c.call);
            assert!(c.cpu_ns > 0, "{:?} charged no CPU", c.call);
        }
        let written: u64 = r.calls.iter().map(|c| c.writes).sum();
        assert_eq!(r.received, written * 66);
        assert!(r.text().contains("| `writev` |"));
    }

    #[test]
    fn bounds_are_checked() {
        let mut plan = Plan {
            conns: 0,
            rate: 50.0,
            duration: 1.0,
            bytes: 66,
            calls: vec![Call::Send],
            sender_core: None,
            reader_core: None,
        };
        assert!(validate(&plan).is_err());
        plan.conns = 10;
        assert!(validate(&plan).is_ok());
        plan.calls.clear();
        assert!(validate(&plan).is_err());
    }
}
