//! Failure containment: a panic while handling one connection's input, timer or message ends
//! that session with 1011 and is counted; the shard and every other session go on.
//!
//! Application hooks run on the shard thread, so a bug in one (an `unwrap` on a client's
//! field, an index out of range) would otherwise unwind through the reactor and take every
//! connection of the shard with it. The shard runs each unit of work (reading one
//! connection, one inbox message, one timer) under [`std::panic::catch_unwind`]: the landing
//! pad costs nothing until a panic happens.
//!
//! Why it is sound to go on: a hook sees only its own session and a list of deferred actions
//! (`hooks::Context`), which are dropped unapplied when it panics; the shard's own bookkeeping
//! never hands control to application code half-way through an update. A panic that escapes
//! anyway (in the reactor loop itself) ends the thread, and `server.rs` then stops the process
//! with a non-zero exit rather than let it run with a shard missing.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::conn::Wire;
use super::Shard;
use crate::engine::ids::SessionId;
use crate::protocol::handshake::Response;

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

impl Shard {
    /// Runs `work` for session `id` (or for no session in particular); if it panics, the
    /// session is closed with 1011 and the panic counted and logged.
    pub(super) fn contain(&mut self, id: Option<SessionId>, work: impl FnOnce(&mut Self)) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| work(self))) {
            self.stats.panics.add(1);
            self.log_panic(id, panic_message(&*payload));
            if let Some(id) = id {
                self.close_after_panic(id);
            }
        }
    }

    /// Closes a session whose handling panicked: a 1011 close frame if it is open, a 500 if it
    /// was still an HTTP request. If even that panics, the socket is dropped without a word.
    fn close_after_panic(&mut self, id: SessionId) {
        let closed = catch_unwind(AssertUnwindSafe(|| {
            let http = self
                .conns
                .get(id)
                .is_some_and(|c| matches!(c.wire, Wire::Http { .. }));
            if http {
                self.respond_and_close(id, &Response::new(500, "internal error"));
            } else {
                self.close_with(id, 1011, "internal error");
            }
        }));
        if closed.is_err() {
            self.conns.kill(id);
        }
    }

    /// One line per panic, at most one a second per shard (a client that found a way to make a
    /// hook panic must not flood the log); the suppressed ones are counted in the next line.
    fn log_panic(&mut self, id: Option<SessionId>, msg: &str) {
        self.panics_unlogged += 1;
        let now = Instant::now();
        if self
            .last_panic_log
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        let whom = id.map_or_else(|| "no session".to_string(), |id| format!("session {id}"));
        let more = match self.panics_unlogged - 1 {
            0 => String::new(),
            n => format!(" ({n} more since the last report)"),
        };
        log::error!(
            "shard {}: a panic while handling {whom}: {msg}; closed it with 1011{more}",
            self.index
        );
        self.panics_unlogged = 0;
        self.last_panic_log = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let lit = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*lit), "plain");
        let n = 7;
        let fmt = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(&*fmt), "formatted 7");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(panic_message(&*other), "a panic without a message");
    }
}
