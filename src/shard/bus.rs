//! The only path between threads: each shard's inbox and the waker that rouses its reactor.
//!
//! Messages carry encoded frames (`Arc<[u8]>`), so a broadcast crosses to another shard as one
//! pointer, whatever the number of recipients there. A sender wakes the receiving reactor only
//! when its inbox goes from idle to pending (an atomic flag), so a burst of a thousand
//! publishes costs one eventfd write, not a thousand.
//!
//! Inboxes are bounded; a full inbox drops the message (counted in `bus_drops`) rather than
//! blocking a shard on another shard, which could deadlock two shards sending to each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;

use crate::engine::ids::SessionId;
use crate::protocol::frame::Frame;

/// Messages a shard's inbox holds. Capacity of each inbox: enough for a few seconds of a busy
/// shard's cross-shard traffic.
pub(crate) const INBOX_CAPACITY: usize = 64 * 1024;

/// Work for a shard from another thread.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// Deliver to this shard's members of a room. `seq` is the room's SSE event id of a
    /// `message` publish (0: not an SSE event, or the room has no SSE subscribers).
    Room {
        room: Arc<str>,
        frame: Frame,
        exclude: Option<SessionId>,
        seq: u64,
    },
    /// Deliver a presence event to this shard's members of a room allowed to see it.
    Presence {
        room: Arc<str>,
        frame: Frame,
        exclude: SessionId,
    },
    /// Deliver to every session on this shard.
    All {
        frame: Frame,
        exclude: Option<SessionId>,
    },
    /// Deliver to this shard's sessions of a user.
    User { user: Arc<str>, frame: Frame },
    /// Deliver to one session.
    Session { id: SessionId, frame: Frame },
    /// Close one session.
    Close {
        id: SessionId,
        code: u16,
        reason: String,
    },
    /// Join or leave a room on a session's behalf (as if it had asked).
    Join { id: SessionId, room: String },
    /// See `Join`.
    Leave { id: SessionId, room: String },
    /// Stop accepting, close every session with 1001, drain, exit.
    Shutdown,
}

impl ShardMsg {
    /// The session a message is about, if it is about one (a panic handling it closes that
    /// session).
    pub(crate) fn session(&self) -> Option<SessionId> {
        match self {
            Self::Session { id, .. }
            | Self::Close { id, .. }
            | Self::Join { id, .. }
            | Self::Leave { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// The sending side of a shard's inbox.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    tx: Sender<ShardMsg>,
    waker: Arc<Waker>,
    pending: Arc<AtomicBool>,
}

/// The receiving side, owned by the shard.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: Receiver<ShardMsg>,
    pending: Arc<AtomicBool>,
}

/// A connected mailbox and inbox around a shard's waker.
pub(crate) fn inbox(waker: Waker) -> (Mailbox, Inbox) {
    let (tx, rx) = crossbeam_channel::bounded(INBOX_CAPACITY);
    let pending = Arc::new(AtomicBool::new(false));
    (
        Mailbox {
            tx,
            waker: Arc::new(waker),
            pending: pending.clone(),
        },
        Inbox { rx, pending },
    )
}

impl Mailbox {
    /// Queues a message; hands it back if the inbox is full or the shard is gone.
    pub(crate) fn send(&self, msg: ShardMsg) -> Result<(), TrySendError<ShardMsg>> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                if !self.pending.swap(true, Ordering::AcqRel) {
                    // A failed wake means the shard's poll is gone: it is shutting down.
                    let _ = self.waker.wake();
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Inbox {
    /// Takes the pending messages. Clearing the flag first means a message sent during the
    /// drain either is drained now or wakes the shard again.
    pub(crate) fn drain(&self, mut f: impl FnMut(ShardMsg)) {
        self.pending.store(false, Ordering::Release);
        // Bounded by the channel capacity, so one busy sender cannot starve the sockets.
        for _ in 0..INBOX_CAPACITY {
            match self.rx.try_recv() {
                Ok(m) => f(m),
                Err(_) => return,
            }
        }
        // More remain: make sure the shard comes back for them.
        self.pending.store(true, Ordering::Release);
    }

    /// Whether messages were left behind by a bounded drain.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.rx.is_empty()
    }
}
