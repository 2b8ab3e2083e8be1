//! What an idle connection holds on the heap, counted by a global allocator that keeps each
//! thread's live bytes (tests run in parallel threads; each counts only its own).
//!
//! RSS over real sockets (`bench/idle_memory.py`) is the number users see; these tests pin the
//! part the engine controls, so that a change that makes every connection keep a buffer fails
//! here rather than in a benchmark months later.
//!
//! The only `unsafe` of the crate, and only in its unit tests: a `GlobalAlloc` cannot be
//! written without it, and the standard library offers no allocation counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::Sim;

/// The system allocator, counting each thread's live bytes.
struct Counting;

thread_local! {
    /// Bytes allocated and not yet freed by this thread (frees of another thread's blocks count
    /// against the freeing thread, which these single-threaded tests never do).
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down may still free.
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// caller's obligations are passed on as they are; the counting touches only a thread-local
// integer (const-initialised, without a destructor, so it never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: see the impl.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: see the impl.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: see the impl.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: see the impl.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Who the connections are.
#[derive(Clone, Copy)]
enum Users {
    /// One user with every session.
    One,
    /// A user of its own for each connection, as anonymous clients are.
    Distinct,
}

fn upgrade(user: &str) -> Vec<u8> {
    format!(
        "GET /ws?user={user} HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes()
}

/// A masked client text frame.
fn masked(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// Heap bytes per connection over `n` connections that upgrade, read their welcome and send
/// `then` (complete or partial frames), measured after a warm-up that sized the shard's
/// scratch buffers. The server's output is read and freed, as a client's kernel would. The slab
/// and the directory's session table are reserved up front, so their slots are not counted.
fn bytes_per_connection(n: usize, then: &[u8], users: Users) -> isize {
    let mut sim = Sim::new(1, |_| {});
    let mut conns = Vec::with_capacity(n + 16);
    // Built before counting: the names themselves are the client's.
    let requests: Vec<Vec<u8>> = (0..n + 16)
        .map(|i| match users {
            Users::One => upgrade("idle"),
            Users::Distinct => upgrade(&format!("u{i:05}")),
        })
        .collect();
    let mut requests = requests.iter();
    let mut one = |sim: &mut Sim| {
        let (id, pipe) = sim.open(0);
        let request = requests.next().map_or(&[][..], Vec::as_slice);
        sim.raw(0, id, request);
        if !then.is_empty() {
            sim.raw(0, id, then);
        }
        let out = std::mem::take(&mut pipe.borrow_mut().to_client);
        assert!(
            out.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        drop(out);
        (id, pipe)
    };
    for _ in 0..16 {
        let c = one(&mut sim);
        conns.push(c);
    }
    let before = live();
    for _ in 0..n {
        let c = one(&mut sim);
        conns.push(c);
    }
    // Presence events to the earlier members: in a client's kernel buffer, not the server.
    for (_, pipe) in &conns {
        drop(std::mem::take(&mut pipe.borrow_mut().to_client));
    }
    (live() - before) / n as isize
}

#[test]
fn an_idle_connection_holds_no_read_buffer_and_no_framing_state() {
    // 1024 connections: the server-wide tables (directory, users) are at a load where their
    // share per connection is typical of any size, not just after a doubling.
    let per = bytes_per_connection(1024, b"", Users::One);
    eprintln!("heap per idle connection: {per} bytes");
    // The user's name, the timer wheel's 8-byte entry and this test's pipe (80): 119 bytes
    // measured (135 with 16-byte entries).
    // tungstenite's context (~300 bytes) or read buffer (512) per connection would not fit.
    assert!(per < 200, "an idle connection holds {per} heap bytes");
}

#[test]
fn a_connection_of_its_own_user_adds_only_the_name_and_an_index_bucket() {
    let one = bytes_per_connection(1024, b"", Users::One);
    let distinct = bytes_per_connection(1024, b"", Users::Distinct);
    eprintln!("heap per idle connection: one user {one}, a user each {distinct}");
    // A bucket of the user index: 5 bytes, up to twice that with the empty buckets (10
    // measured; each session has its own copy of the name either way). Two maps of name to
    // list of sessions, one server-wide and one per shard, cost ~180.
    assert!(
        distinct - one < 64,
        "a user of its own costs {} bytes",
        distinct - one
    );
}

#[test]
fn a_connection_that_joined_a_room_keeps_only_its_membership() {
    let join = masked(br#"{"type":"join","room":"lobby","id":1}"#);
    let idle = bytes_per_connection(1024, b"", Users::One);
    let joined = bytes_per_connection(1024, &join, Users::One);
    eprintln!("heap per connection: idle {idle}, joined to a room {joined}");
    // An id in the directory's member set (with the table's slack) and in the shard's member
    // list: 23 bytes measured. The session's own room needs no list of its own, and the user
    // is not stored beside each member (together they were 71 bytes).
    assert!(
        joined - idle < 40,
        "joining a room kept {} bytes",
        joined - idle
    );
}

#[test]
fn a_frame_split_over_reads_keeps_a_context_only_until_it_completes() {
    let join = masked(br#"{"type":"join","room":"lobby","id":1}"#);
    let idle = bytes_per_connection(256, &join, Users::One);
    let half = bytes_per_connection(256, &join[..9], Users::One);
    eprintln!("heap per connection: after a whole frame {idle}, mid-frame {half}");
    // tungstenite's context and its read buffer while the frame is incomplete.
    assert!(half - idle > 512, "a partial frame must stay buffered");
}
