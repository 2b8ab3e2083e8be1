//! The shard's enforcement of the admission policy and abuse limits: per-address limits on
//! accept, rate limits on each incoming message, permission checks on each client request and
//! presence events only to sessions allowed to see them.
//!
//! The decisions themselves are pure ([`crate::auth`], [`crate::engine::ratelimit`],
//! [`crate::engine::iplimit`]); this module applies them to the shard's connections and
//! answers the client. It is an `impl Shard` block kept apart from the reactor loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use simd_json::BorrowedValue as Value;

use super::bus::ShardMsg;
use super::Shard;
use crate::engine::directory::RoomShared;
use crate::engine::ids::SessionId;
use crate::engine::iplimit::IpRefusal;
use crate::engine::ratelimit::Verdict;
use crate::hooks::SessionError;
use crate::protocol::frame::Frame;
use crate::protocol::handshake::Response;

/// A client request that needs a permission.
#[derive(Debug, Clone, Copy)]
pub(super) enum Act<'a> {
    Join(&'a str),
    Publish(&'a str),
    /// `members` of a room.
    Members(&'a str),
    Broadcast,
    Send(&'a str),
}

impl Shard {
    /// The shared clock of the limits, in nanoseconds since the gate's epoch.
    pub(super) fn limit_clock(&self, now: std::time::Instant) -> u64 {
        now.saturating_duration_since(self.hub.shared.gate.epoch)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    /// Applies the per-address limits to a just-accepted socket; a refused one gets its 429
    /// and is dropped. Returns whether the connection may proceed.
    pub(super) fn admit_ip(&self, tcp: &mut TcpStream, addr: SocketAddr) -> bool {
        let now = self.conns.now_ns;
        let refusal = match self.hub.shared.gate.ip.admit(addr.ip(), now) {
            Ok(()) => return true,
            Err(IpRefusal::Rate) => {
                let mut r = Response::new(429, "too many connection attempts from your address");
                r.extra.push("Retry-After: 1".into());
                r
            }
            Err(IpRefusal::Concurrency) => {
                Response::new(429, "too many connections from your address")
            }
        };
        // An empty socket buffer always takes a response this small.
        let _ = io::Write::write(tcp, &refusal.to_bytes());
        self.stats.ip_limit_refusals.add(1);
        self.stats.handshake_failures.add(1);
        false
    }

    /// Forgets a removed connection in the per-address table.
    pub(super) fn release_ip(&self, addr: SocketAddr) {
        self.hub
            .shared
            .gate
            .ip
            .release(addr.ip(), self.conns.now_ns);
    }

    /// Charges one incoming data message of `len` bytes to its connection's rate; returns
    /// whether to handle it. Dropped messages are counted, the client is told at most once a
    /// second, and a client that keeps flooding is closed with 1008.
    pub(super) fn admit_message(&mut self, id: SessionId, len: usize, binary: bool) -> bool {
        let limits = self.hub.shared.gate.rates;
        if !limits.is_on() || self.cfg().echo {
            return true;
        }
        let now = self.conns.now_ns;
        let Some(c) = self.conns.get(id) else {
            return false;
        };
        match c.rate.check(&limits, now, len) {
            Verdict::Pass => true,
            Verdict::Drop { notify } => {
                self.stats.rate_limited_messages.add(1);
                if notify {
                    let ctx = binary.then_some(("op", "binary"));
                    self.error(
                        id,
                        None,
                        "rate_limited",
                        "message rate or size limit exceeded; messages are being dropped",
                        ctx,
                    );
                }
                false
            }
            Verdict::Close => {
                self.stats.rate_limited_messages.add(1);
                self.stats.rate_limit_closes.add(1);
                self.report_error(id, &SessionError::RateLimited);
                self.close_with(id, 1008, "rate limit exceeded");
                false
            }
        }
    }

    /// Whether the session may do `act`; if not, answers `forbidden` (with the request's `id`
    /// and the room or user, or `"op":"binary"`) and counts it.
    pub(super) fn permit(
        &mut self,
        id: SessionId,
        act: Act<'_>,
        req_id: Option<&Value<'_>>,
        binary: bool,
    ) -> bool {
        let Some(c) = self.conns.get(id) else {
            return false;
        };
        let p = &c.session.permissions;
        let allowed = match act {
            Act::Join(room) => p.join.allows(room),
            Act::Publish(room) => p.publish.allows(room),
            Act::Members(room) => p.presence.allows(room),
            Act::Broadcast => p.broadcast,
            Act::Send(_) => p.send,
        };
        if allowed {
            return true;
        }
        self.stats.forbidden_requests.add(1);
        let (msg, ctx) = match act {
            Act::Join(r) => (format!("not allowed to join room {r}"), Some(("room", r))),
            Act::Publish(r) => (
                format!("not allowed to publish to room {r}"),
                Some(("room", r)),
            ),
            Act::Members(r) => (
                format!("not allowed to see the members of room {r}"),
                Some(("room", r)),
            ),
            Act::Broadcast => ("not allowed to broadcast".to_string(), None),
            Act::Send(to) => (
                "not allowed to send direct messages".to_string(),
                Some(("to", to)),
            ),
        };
        let ctx = if binary { Some(("op", "binary")) } else { ctx };
        self.error(id, req_id, "forbidden", &msg, ctx);
        false
    }

    /// Routes a `joined`/`left` event: like a room publish, but each shard delivers it only to
    /// members allowed to see the room's presence. The check is per recipient, so it is kept
    /// off the publish path, which stays a plain walk of the member list.
    pub(super) fn route_presence(
        &mut self,
        shared: &Arc<RoomShared>,
        f: Frame,
        exclude: SessionId,
    ) {
        let mask = shared.shards();
        for s in 0..self.hub.shared.mailboxes.len() {
            if s != self.index && mask & (1 << s) != 0 {
                let msg = ShardMsg::Presence {
                    room: shared.name.clone(),
                    frame: f.clone(),
                    exclude,
                };
                self.post(s, msg);
            }
        }
        self.deliver_presence(&shared.name, f, exclude);
    }

    /// Delivers a presence event to this shard's members of `room` that may see it.
    pub(super) fn deliver_presence(&mut self, room: &str, f: Frame, exclude: SessionId) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut n = 0;
        for &m in &r.members {
            let sees = m != exclude
                && self
                    .conns
                    .get(m)
                    .is_some_and(|c| c.session.permissions.presence.allows(room));
            if sees && self.conns.push(m, f.clone()) {
                n += 1;
            }
        }
        self.stats.deliveries.add(n);
    }
}
