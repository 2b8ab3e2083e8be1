//! Direct messages from a session (`send`): plain, acknowledged (receipts counted in
//! [`acks`](super::acks) on the sender's shard) and stored for offline users
//! ([`offline`](super::offline)), and the stored messages a session gets when it opens.
//!
//! A plain send frames the `direct` once and routes it to the user's sessions. With `ack` or
//! `store` the frame also carries a message id (`mid`, `acks::mid`). With `ack` the send that
//! reached sessions waits for their receipts; a receipt (`received`) goes straight back to the
//! sender's shard (`ShardMsg::Receipt`, across nodes in a cluster), which answers `delivered`
//! when every reached session answered, or at the timeout `delivered` with the count that
//! did, or `not_delivered`. With `store` a send that reached no session anywhere is stored
//! instead (framed again with `"stored": true` and its time) and acknowledged
//! `"stored": true`; its receipts are not tracked (the sender may be long gone when it is
//! read; `Hooks::on_stored` reports its delivery).

use std::sync::Arc;
use std::time::Duration;

use simd_json::BorrowedValue as Value;

use super::acks::{self, Acks, Pending, Receipt};
use super::ids::SessionId;
use super::offline::{Refusal, Stored};
use super::router::{Route, ShardMsg};
use super::Engine;
use crate::hooks::StoreEventKind;
use crate::protocol::frame::OpCode;
use crate::protocol::reply::{self, Ack, DirectMark};

/// A `send` request's options.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SendOpts {
    /// Wait for receipts.
    pub ack: bool,
    /// Store when the user is offline.
    pub store: bool,
    /// The receipt timeout the request asked for.
    pub timeout_ms: Option<u64>,
}

impl<S> Engine<S> {
    /// A `send` of session `id` (permission checked) to `to`.
    pub(super) fn send_direct(
        &mut self,
        id: SessionId,
        req_id: Option<&Value<'_>>,
        to: &str,
        data: &Value<'_>,
        o: SendOpts,
    ) {
        let Some(user) = self.user_of(id) else { return };
        let seq = if o.ack {
            let cap = self.cfg().max_pending_acks;
            let Some(seq) = self.acks.reserve(id, cap) else {
                let msg = format!(
                    "{cap} acknowledged sends are waiting for receipts already (max_pending_acks)"
                );
                return self.error(id, req_id, "too_many_pending", &msg, Some(("to", to)));
            };
            Some(seq)
        } else if o.store {
            Some(self.acks.next_seq())
        } else {
            None
        };
        let mid = seq.map(|n| acks::mid(id, n));
        let mark = DirectMark {
            mid: mid.as_deref(),
            ack: o.ack,
            stored_at: None,
        };
        let out = self.fb.start();
        reply::direct(out, &user, id.0, data, mark);
        let frame = self.fb.finish(OpCode::Text);
        let routed = self.route(Route::User { user: to, frame });
        if routed.sessions == 0 {
            if let (true, Some(mid)) = (o.store, &mid) {
                return self.store_direct(id, req_id, to, &user, data, mid);
            }
            return self.not_online(id, req_id, to, None);
        }
        if self.overloaded(id, req_id, &routed, None) {
            return;
        }
        if let (true, Some(seq)) = (o.ack, seq) {
            let timeout = o
                .timeout_ms
                .map_or(self.cfg().ack_timeout, Duration::from_millis);
            let due = self.now + (timeout.as_nanos() as u64).div_ceil(self.tick_ns).max(1);
            let req = req_id.map(|v| {
                let mut b = Vec::new();
                reply::write_value(&mut b, v);
                b.into_boxed_slice()
            });
            let p = Acks::pending(id, req, Arc::from(to), routed.sessions);
            self.acks.insert(seq, p, due);
            self.stats.acked_sends.add(1);
        }
        let ack = Ack::Send {
            to,
            sessions: routed.sessions,
            mid: mid.as_deref(),
            stored: None,
        };
        self.ack(id, req_id, ack);
    }

    /// Stores a send that reached no session (see the module docs).
    fn store_direct(
        &mut self,
        id: SessionId,
        req_id: Option<&Value<'_>>,
        to: &str,
        from: &Arc<str>,
        data: &Value<'_>,
        mid: &str,
    ) {
        let store = &self.hub.shared.offline;
        let mark = DirectMark {
            mid: Some(mid),
            ack: false,
            stored_at: Some(store.unix_ms(self.now_ns)),
        };
        let out = self.fb.start();
        reply::direct(out, from, id.0, data, mark);
        let frame = self.fb.finish(OpCode::Text);
        let msg = Stored {
            mid: mid.into(),
            from: from.clone(),
            at: self.now_ns,
            frame: frame.clone(),
        };
        let router = &self.hub.shared.router;
        let stored = store.store_if_offline(to, msg, self.now_ns, || router.user_online(to));
        let ack = |sessions, stored| Ack::Send {
            to,
            sessions,
            mid: Some(mid),
            stored,
        };
        match stored {
            Ok(o) => self.ack(id, req_id, ack(0, Some(o.evicted))),
            // A session opened meanwhile: it gets the message live (marked stored, since it
            // was framed so; harmless).
            Err(Refusal::Online) => {
                let routed = self.route(Route::User { user: to, frame });
                if routed.sessions == 0 {
                    self.not_online(id, req_id, to, None);
                } else if !self.overloaded(id, req_id, &routed, None) {
                    self.ack(id, req_id, ack(routed.sessions, None));
                }
            }
            Err(Refusal::Full(why)) => self.error(id, req_id, "store_full", &why, Some(("to", to))),
        }
    }

    /// A `received` from session `id`: routed to the sender's shard, whatever node it is on.
    pub(super) fn send_receipt(&mut self, id: SessionId, req_id: Option<&Value<'_>>, mid: &str) {
        let Some((sender, seq)) = acks::parse_mid(mid) else {
            let msg = "field mid is not a message id (\"<session>-<number>\")";
            return self.error(id, req_id, "bad_request", msg, None);
        };
        let Some(user) = self.user_of(id) else { return };
        let receipt = ShardMsg::Receipt {
            id: sender,
            seq,
            user,
            from: id,
        };
        // A receipt is best effort like any delivery: one lost to a full inbox makes the send
        // time out with fewer sessions, which the sender is told.
        self.route(Route::Session(receipt));
    }

    /// A receipt reached the sender's shard.
    pub(super) fn on_receipt(&mut self, sender: SessionId, seq: u64, user: &str, from: SessionId) {
        match self.acks.receipt(sender, seq, user, from) {
            (Receipt::Complete, Some(p)) => {
                self.stats.receipts.add(1);
                self.report(seq, p);
            }
            (Receipt::Counted, _) => self.stats.receipts.add(1),
            _ => self.stats.receipts_ignored.add(1),
        }
    }

    /// Answers the sends whose receipt timeout passed.
    pub(super) fn expire_acks(&mut self) {
        let mut out = Vec::new();
        self.acks.expire(self.now, &mut out);
        for (seq, p) in out {
            self.stats.acked_timeouts.add(1);
            self.report(seq, p);
        }
    }

    /// Tells the sender how its acknowledged send ended.
    fn report(&mut self, seq: u64, p: Pending) {
        let acked = p.acked.len();
        let counter = if acked > 0 {
            &self.stats.acked_delivered
        } else {
            &self.stats.acked_not_delivered
        };
        counter.add(1);
        let mid = acks::mid(p.sender, seq);
        let out = self.fb.start();
        reply::delivered(out, p.req_id.as_deref(), &mid, &p.to, acked, p.reached);
        let f = self.fb.finish(OpCode::Text);
        self.push(p.sender, f);
    }

    /// Hands a session that just opened its user's stored messages, oldest first.
    pub(super) fn deliver_stored(&mut self, id: SessionId, user: &str) {
        let msgs = self
            .hub
            .shared
            .offline
            .take(user, self.now_ns, StoreEventKind::Delivered);
        if msgs.is_empty() {
            return;
        }
        let n = msgs.len() as u64;
        for m in msgs {
            self.push(id, m.frame);
        }
        self.stats.deliveries.add(n);
        self.stats.offline_delivered.add(n);
    }
}
