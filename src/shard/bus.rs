//! The only path between threads: each shard's inbox and the waker that rouses its reactor,
//! the [`Bus`] the router posts through.
//!
//! Messages carry encoded frames (`Arc<[u8]>`), so a broadcast crosses to another shard as one
//! pointer, whatever the number of recipients there. A sender wakes the receiving reactor only
//! when its inbox goes from idle to pending (an atomic flag), so a burst of a thousand
//! publishes costs one eventfd write, not a thousand.
//!
//! Inboxes are bounded; a full inbox refuses the message (the router counts it and tells the
//! sender) rather than blocking a shard on another shard, which could deadlock two shards
//! sending to each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;

use crate::engine::router::{Bus, Refused, ShardMsg};

/// Messages a shard's inbox holds. Capacity of each inbox: enough for a few seconds of a busy
/// shard's cross-shard traffic.
pub(crate) const INBOX_CAPACITY: usize = 64 * 1024;

/// The sending side of a shard's inbox.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    tx: Sender<ShardMsg>,
    waker: Arc<Waker>,
    pending: Arc<AtomicBool>,
}

/// Every shard's mailbox: the server's [`Bus`].
#[derive(Debug, Clone)]
pub(crate) struct Mailboxes(pub(crate) Vec<Mailbox>);

impl Bus for Mailboxes {
    fn shards(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self, shard: usize) -> bool {
        self.0.get(shard).is_some_and(|mb| mb.tx.is_empty())
    }

    fn post(&self, shard: usize, msg: ShardMsg) -> Result<(), Refused> {
        let mb = self.0.get(shard).ok_or(Refused::Gone)?;
        mb.send(msg).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Full,
            TrySendError::Disconnected(_) => Refused::Gone,
        })
    }
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
