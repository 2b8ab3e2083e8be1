//! A connection's outbound queue: shared frames written with vectored writes, bounded in bytes.
//!
//! Every byte a connection sends goes through its outbox, in order: the HTTP upgrade response,
//! frames the hub encoded once for many recipients, and the control frames tungstenite produces
//! (pongs, close replies). Keeping one path means raw frames can never interleave with bytes
//! still sitting in tungstenite's buffer.
//!
//! Frames queued between two flushes are coalesced into one vectored write (up to [`MAX_IOVECS`]
//! slices): that, not the frame encoding, is what decides fan-out throughput.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use crate::protocol::frame::Frame;

/// Slices handed to one vectored write (`sendmsg` in the shard). Linux accepts 1024; 64 frames
/// of a typical chat message are already several kilobytes, which fills a socket buffer
/// quickly, so more buys nothing.
pub const MAX_IOVECS: usize = 64;

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Bytes written by this flush.
    pub bytes: usize,
    /// Whether the queue is now empty. `false` means the socket would block.
    pub drained: bool,
}

/// Ordered frames waiting to be written, with the write offset into the first one.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: Frames,
    /// Bytes of `frames[0]` already written.
    head_written: usize,
    /// Bytes not yet written, over all frames.
    queued: usize,
}

impl Outbox {
    /// Appends a frame; returns the bytes now queued.
    pub fn push(&mut self, frame: Frame) -> usize {
        self.queued += frame.len();
        self.frames.push_back(frame);
        self.queued
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Drops every frame that has not started to go out. A frame already partly written must be
    /// finished, or the peer would see a torn frame; it stays.
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.head_written > 0);
        while self.frames.len() > keep {
            if let Some(f) = self.frames.pop_back() {
                self.queued -= f.len();
            }
        }
    }

    /// Writes as much as the writer takes without blocking.
    ///
    /// Returns `Ok` with `drained: false` when the writer reported `WouldBlock`; any other error
    /// is the connection's end.
    pub fn flush(&mut self, w: &mut impl Write) -> io::Result<Flushed> {
        let mut total = 0;
        while !self.frames.is_empty() {
            let mut slices: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (i, f) in self.frames.iter().take(MAX_IOVECS).enumerate() {
                let from = if i == 0 { self.head_written } else { 0 };
                slices[i] = IoSlice::new(&f[from..]);
                n += 1;
            }
            let written = match w.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Flushed {
                        bytes: total,
                        drained: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += written;
            self.advance(written);
        }
        // An idle connection keeps no ring (64 bytes at the least): the next burst allocates one
        // again, a few nanoseconds beside the write that emptied this one.
        self.frames = Frames::Empty;
        Ok(Flushed {
            bytes: total,
            drained: true,
        })
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(head) = self.frames.front() else {
                break;
            };
            let left = head.len() - self.head_written;
            if n >= left {
                n -= left;
                self.head_written = 0;
                self.frames.pop_front();
            } else {
                self.head_written += n;
                n = 0;
            }
        }
    }
}

/// The queue itself. Most of the time it holds nothing or one frame (a lone delivery, a reply),
/// which need no heap ring: a ring is allocated only once a second frame waits, so a
/// delivery to a connection with nothing queued allocates nothing, and a fan-out to 10,000
/// idle members does not allocate (and free) 10,000 rings.
#[derive(Debug, Default)]
enum Frames {
    #[default]
    Empty,
    One(Frame),
    Many(VecDeque<Frame>),
}

impl Frames {
    fn push_back(&mut self, frame: Frame) {
        match self {
            Frames::Many(ring) => ring.push_back(frame),
            Frames::Empty => *self = Frames::One(frame),
            Frames::One(_) => {
                let mut ring = VecDeque::with_capacity(4);
                if let Frames::One(first) = std::mem::take(self) {
                    ring.push_back(first);
                }
                ring.push_back(frame);
                *self = Frames::Many(ring);
            }
        }
    }

    fn front(&self) -> Option<&Frame> {
        match self {
            Frames::Empty => None,
            Frames::One(f) => Some(f),
            Frames::Many(ring) => ring.front(),
        }
    }

    fn pop_front(&mut self) -> Option<Frame> {
        match self {
            Frames::Empty => None,
            Frames::One(_) => match std::mem::take(self) {
                Frames::One(f) => Some(f),
                _ => None,
            },
            Frames::Many(ring) => ring.pop_front(),
        }
    }

    fn pop_back(&mut self) -> Option<Frame> {
        match self {
            Frames::Many(ring) => ring.pop_back(),
            _ => self.pop_front(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Frames::Empty => 0,
            Frames::One(_) => 1,
            Frames::Many(ring) => ring.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> impl Iterator<Item = &Frame> {
        let (one, ring) = match self {
            Frames::Empty => (None, None),
            Frames::One(f) => (Some(f), None),
            Frames::Many(ring) => (None, Some(ring.iter())),
        };
        one.into_iter().chain(ring.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A socket stand-in that accepts at most `budget` bytes, then reports `WouldBlock`.
    struct Trickle {
        got: Vec<u8>,
        budget: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.budget - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.budget {
                    break;
                }
            }
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frame(s: &str) -> Frame {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn queued_frames_go_out_in_one_vectored_write() {
        let mut ob = Outbox::default();
        for s in ["one ", "two ", "three"] {
            ob.push(frame(s));
        }
        let mut w = Trickle {
            got: vec![],
            budget: 1 << 20,
            calls: 0,
        };
        let f = ob.flush(&mut w).unwrap();
        assert_eq!(
            f,
            Flushed {
                bytes: 13,
                drained: true
            }
        );
        assert_eq!(w.got, b"one two three");
        assert_eq!(w.calls, 1, "coalesced into a single writev");
    }

    #[test]
    fn partial_writes_resume_mid_frame_without_tearing() {
        let mut ob = Outbox::default();
        ob.push(frame("abcdef"));
        ob.push(frame("ghij"));
        let mut w = Trickle {
            got: vec![],
            budget: 4,
            calls: 0,
        };
        assert!(!ob.flush(&mut w).unwrap().drained);
        assert_eq!(ob.queued(), 6);

        // A slow consumer: unstarted frames are dropped, the torn head is kept.
        ob.discard_unstarted();
        assert_eq!(ob.queued(), 2);
        w.budget = 100;
        assert!(ob.flush(&mut w).unwrap().drained);
        assert_eq!(w.got, b"abcdef");
        assert!(ob.is_empty());
    }

    #[test]
    fn more_frames_than_iovecs_all_arrive_in_order() {
        let mut ob = Outbox::default();
        let mut want = Vec::new();
        for i in 0..(MAX_IOVECS * 3 + 5) {
            let s = format!("{i},");
            want.extend_from_slice(s.as_bytes());
            ob.push(frame(&s));
        }
        let mut w = Trickle {
            got: vec![],
            budget: 1 << 20,
            calls: 0,
        };
        assert!(ob.flush(&mut w).unwrap().drained);
        assert_eq!(w.got, want);
        assert_eq!(ob.queued(), 0);
    }

    #[test]
    fn closing_keeps_only_a_frame_already_started() {
        for frames in [1, 2, 5] {
            let mut ob = Outbox::default();
            for i in 0..frames {
                ob.push(frame(&format!("frame{i}")));
            }
            let mut w = Trickle {
                got: vec![],
                budget: 3,
                calls: 0,
            };
            assert!(!ob.flush(&mut w).unwrap().drained);
            ob.discard_unstarted();
            assert_eq!(ob.queued(), 3, "{frames} frames: the rest of the first");
            w.budget = 100;
            assert!(ob.flush(&mut w).unwrap().drained);
            assert_eq!(w.got, b"frame0");
            // And from empty: nothing started, nothing kept.
            ob.push(frame("late"));
            ob.discard_unstarted();
            assert!(ob.is_empty());
        }
    }

    /// Random pushes and trickling writes deliver every byte in order, whether the queue holds
    /// one frame inline or a ring.
    #[test]
    fn any_mix_of_pushes_and_partial_writes_keeps_the_bytes_in_order() {
        use proptest::prelude::*;
        proptest!(|(ops in proptest::collection::vec((0usize..3, 0usize..12), 1..60))| {
            let mut ob = Outbox::default();
            let mut want = Vec::new();
            let mut w = Trickle { got: vec![], budget: 0, calls: 0 };
            for (i, (pushes, budget)) in ops.into_iter().enumerate() {
                for p in 0..pushes {
                    let s = format!("<{i}.{p}>");
                    want.extend_from_slice(s.as_bytes());
                    ob.push(frame(&s));
                }
                w.budget = budget;
                ob.flush(&mut w).unwrap();
                prop_assert_eq!(ob.queued() + w.got.len(), want.len());
            }
            w.budget = usize::MAX / 2;
            prop_assert!(ob.flush(&mut w).unwrap().drained);
            prop_assert_eq!(w.got, want);
        });
    }
}
