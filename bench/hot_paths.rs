//! Micro-benchmarks of the per-message hot paths, with the sans-IO pieces the shard uses:
//! parsing a request, encoding the outgoing frame once, queueing it to 10,000 local room
//! members and flushing their outboxes, and the timer wheel.
//!
//! `cargo bench --bench hot_paths` (criterion; reports in target/criterion).

use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardhub::engine::directory::Directory;
use shardhub::engine::outbox::Outbox;
use shardhub::engine::rooms::LocalRooms;
use shardhub::engine::timer::TimerWheel;
use shardhub::protocol::envelope::{parse_envelope, parse_value, Request};
use shardhub::protocol::frame::{FrameBuf, OpCode};
use shardhub::protocol::reply;
use shardhub::SessionId;

const PUBLISH: &str = r#"{"type":"publish","room":"room-42","id":17,"data":{"t":1732233600123456789,"s":991,"p":3,"text":"the quick brown fox jumps over the lazy dog"}}"#;

fn parse_and_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("message");
    g.throughput(Throughput::Bytes(PUBLISH.len() as u64));
    let mut scratch = Vec::new();
    let mut bufs = simd_json::Buffers::default();
    g.bench_function("parse publish envelope", |b| {
        b.iter(|| {
            scratch.clear();
            scratch.extend_from_slice(PUBLISH.as_bytes());
            let v = parse_value(&mut scratch, &mut bufs, 64).unwrap();
            let e = parse_envelope(&v, 128).unwrap();
            black_box(matches!(e.request, Request::Publish { .. }));
        })
    });
    let mut raw = PUBLISH.as_bytes().to_vec();
    let v = parse_value(&mut raw, &mut bufs, 64).unwrap();
    let data = {
        use simd_json::prelude::*;
        v.get("data").unwrap().clone()
    };
    let mut fb = FrameBuf::default();
    g.bench_function("encode delivery frame once", |b| {
        b.iter(|| {
            let out = fb.start();
            reply::delivery(out, "message", Some("room-42"), "alice", 123456789, &data);
            black_box(fb.finish(OpCode::Text));
        })
    });
    g.finish();
}

/// A socket that takes everything (the kernel side of a flush is not what is measured).
struct Sink(usize);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = bufs.iter().map(|b| b.len()).sum();
        self.0 += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn room_fanout(c: &mut Criterion) {
    const MEMBERS: usize = 10_000;
    let dir = Directory::new(0, Default::default());
    let user: Arc<str> = "u".into();
    let mut rooms = LocalRooms::new(0);
    for k in 0..MEMBERS {
        let id = SessionId::new(k as u64 + 1, 0, k);
        let shared = dir.join("big", id, &user).unwrap().room;
        rooms.add(&shared, id);
    }
    let mut outboxes: Vec<Outbox> = (0..MEMBERS).map(|_| Outbox::default()).collect();
    let frame: Arc<[u8]> = shardhub::protocol::frame::encode(OpCode::Text, &[b'x'; 120]);
    let mut g = c.benchmark_group("fan-out to 10k local members");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    g.bench_function("queue one shared frame per member", |b| {
        b.iter_batched(
            || (),
            |_| {
                let r = rooms.get("big").unwrap();
                for m in &r.members {
                    outboxes[m.key()].push(frame.clone());
                }
                // Empty the queues again without syscalls, as a flush would.
                let mut sink = Sink(0);
                for o in &mut outboxes {
                    o.flush(&mut sink).unwrap();
                }
                black_box(sink.0);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn timer_wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer wheel");
    const N: u64 = 100_000;
    g.throughput(Throughput::Elements(N));
    g.bench_function("schedule 100k and expire them", |b| {
        let mut wheel = TimerWheel::new(1024, 0);
        let mut out = Vec::with_capacity(N as usize);
        let mut now = 0;
        b.iter(|| {
            for k in 0..N {
                let _ = wheel.schedule(k, now + 1 + (k % 450));
            }
            now += 451;
            out.clear();
            wheel.advance(now, &mut out);
            black_box(out.len());
        })
    });
    g.finish();
}

criterion_group!(benches, parse_and_encode, room_fanout, timer_wheel);
criterion_main!(benches);
