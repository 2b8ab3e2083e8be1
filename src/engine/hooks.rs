//! The application's hooks on the engine's side: running one with a [`Context`] over its
//! session, applying what it asked for afterwards, and containing failures.
//!
//! Hooks run on the shard thread, between reading a message and flushing replies. A hook sees
//! only its own session and a list of deferred actions, which the engine applies after it
//! returns (the uWebSockets rule: nothing subscribes, unsubscribes or publishes while a
//! delivery is under way).
//!
//! Containment: the engine runs each unit of work (one connection's input, one routed message,
//! one timer) under [`std::panic::catch_unwind`], whose landing pad costs nothing until a
//! panic happens. A panic in a hook, an `unwrap` on a client's field say, then ends that
//! session with `Close::InternalError` (3005) and is counted; the shard and every other session go on. That is sound
//! because a hook's deferred actions are dropped unapplied, and the engine never hands control
//! to application code half-way through an update of its own state. A panic that escapes
//! anyway ends the shard thread, and `server.rs` then stops the process with a non-zero exit.

use std::any::Any;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::conn::Stage;
use super::ids::SessionId;
use super::Engine;
use crate::hooks::{Action, Context, SessionError};
use crate::http::response::Response;
use crate::protocol::close::Close;

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

impl<S> Engine<S> {
    /// Runs a hook with a context on an open WebSocket session, then applies what it asked for.
    pub(crate) fn with_context<R>(
        &mut self,
        id: SessionId,
        f: impl FnOnce(&mut Context<'_>) -> R,
    ) -> Option<R> {
        let mut actions = mem::take(&mut self.actions);
        let hub = self.hub.clone();
        let c = self.conn(id)?;
        let Stage::Ws(w) = &mut c.stage else {
            self.actions = actions;
            return None;
        };
        let r = {
            let mut ctx = Context {
                session: &mut w.session,
                actions: &mut actions,
                hub: &hub,
            };
            f(&mut ctx)
        };
        for a in actions.drain(..) {
            match a {
                Action::Send(frame) => {
                    self.push(id, frame);
                }
                Action::Join(room) => self.join(id, &room, None, None),
                Action::Leave(room) => self.leave(id, &room, None),
                Action::Close(code, reason) => self.close_with(id, code, &reason),
            }
        }
        self.actions = actions;
        Some(r)
    }

    /// Tells `on_error` about a fault on an open session.
    pub(crate) fn report_error(&mut self, id: SessionId, err: &SessionError) {
        let hooks = self.hooks.clone();
        let Some(on_error) = &hooks.on_error else {
            return;
        };
        if let Some(session) = self.conn(id).and_then(|c| c.session()) {
            on_error(session, err);
        }
    }

    /// Runs `work` for session `id` (or for no session in particular); if it panics, the
    /// session is closed with [`Close::InternalError`] and the panic counted and logged.
    pub(crate) fn contain(&mut self, id: Option<SessionId>, work: impl FnOnce(&mut Self)) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| work(self))) {
            self.stats.panics.add(1);
            self.log_panic(id, panic_message(&*payload));
            if let Some(id) = id {
                self.close_after_panic(id);
            }
        }
    }

    /// Closes a session whose handling panicked: an [`Close::InternalError`] close frame if it
    /// is open, a 500 if it was still an HTTP request (a browser sees 1006 and reconnects, as
    /// it would on the close). If even that panics, the connection is dropped.
    fn close_after_panic(&mut self, id: SessionId) {
        let closed = catch_unwind(AssertUnwindSafe(|| {
            let http = self
                .conn(id)
                .is_some_and(|c| matches!(c.stage, Stage::Http(_)));
            if http {
                self.respond(id, &Response::refusal(500, "internal error"), false);
            } else {
                self.close_as(id, Close::InternalError);
            }
        }));
        if closed.is_err() {
            self.mark_dead(id);
        }
    }

    /// One line per panic, at most one a second per shard (a client that found a way to make a
    /// hook panic must not flood the log); the suppressed ones are counted in the next line.
    fn log_panic(&mut self, id: Option<SessionId>, msg: &str) {
        self.panics_unlogged += 1;
        let now = self.now_ns;
        if self
            .last_panic_log
            .is_some_and(|t| now.saturating_sub(t) < 1_000_000_000)
        {
            return;
        }
        let whom = id.map_or_else(|| "no session".to_string(), |id| format!("session {id}"));
        let more = match self.panics_unlogged - 1 {
            0 => String::new(),
            n => format!(" ({n} more since the last report)"),
        };
        log::error!(
            "shard {}: a panic while handling {whom}: {msg}; closed it with {}{more}",
            self.shard,
            Close::InternalError.code()
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
