//! Offline messages: direct messages kept for a user with no session anywhere (`send` with
//! `"store": true`, the HTTP and `Hub` equivalents) until that user's next session opens.
//!
//! One store per node, shared by its shards behind one lock (as the [`Directory`] is): a
//! session opening on any shard takes its user's messages, in the order they were stored, and
//! they are gone from here once handed to it. A message is stored complete, as the `direct`
//! frame the session will get (marked `"stored": true`, with its `mid`, sender and time), so
//! delivering costs a queue push per message.
//!
//! # Bounds
//! Per user: `offline_max_messages`, `offline_max_bytes` (frame bytes) and `offline_ttl`; past
//! the first two the user's oldest messages are evicted, and expired ones are dropped when the
//! user's queue is next touched or at the once-a-second [`sweep`](OfflineStore::sweep). For the
//! node: `offline_max_users` users and `offline_max_total_bytes`; a message that would pass
//! either is refused ([`Refusal::Full`]) rather than evicting another user's, so one busy
//! recipient cannot push out everyone else's messages. Memory is therefore at most
//! `offline_max_total_bytes` of frames plus the bookkeeping of each message: 373 bytes of RSS
//! per message with a 202-byte frame, so ~170 bytes (`bench/runs/2026-12-02-acked-send`).
//!
//! # Races with a session opening
//! A sender stores only if the user is still offline under this store's lock
//! ([`store_if_offline`](OfflineStore::store_if_offline) asks again), and a session opening
//! registers in the directory before it takes its messages under the same lock: either the
//! sender sees the session and delivers live, or the session finds the message.
//!
//! [`Directory`]: super::directory::Directory

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::hooks::{OnStoredFn, StoreEvent, StoreEventKind};
use crate::protocol::frame::Frame;

/// One stored message.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its message id, as in the frame.
    pub mid: Arc<str>,
    /// The sending user.
    pub from: Arc<str>,
    /// When it was stored, on the engines' clock (ns).
    pub at: u64,
    /// The `direct` frame the recipient gets (`"stored": true`).
    pub frame: Frame,
}

/// The store's bounds (from the config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages per user.
    pub max_messages: usize,
    /// Frame bytes per user.
    pub max_bytes: usize,
    /// Age of a message, ns (0: none).
    pub ttl: u64,
    /// Frame bytes on the node.
    pub max_total_bytes: usize,
    /// Users on the node.
    pub max_users: usize,
}

impl Limits {
    /// The bounds of `cfg`.
    pub fn of(cfg: &crate::config::Config) -> Self {
        Self {
            max_messages: cfg.offline_max_messages,
            max_bytes: cfg.offline_max_bytes,
            ttl: cfg.offline_ttl.as_nanos().min(u128::from(u64::MAX)) as u64,
            max_total_bytes: cfg.offline_max_total_bytes,
            max_users: cfg.offline_max_users,
        }
    }
}

/// Why a message was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The user has a session after all: deliver live.
    Online,
    /// Storing is off (`offline_max_messages` 0), the message alone is over the user's bytes,
    /// or the node's users or bytes are at their bound. The text says which.
    Full(String),
}

/// What storing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The user's older messages evicted to make room.
    pub evicted: usize,
}

/// Counters, read by the metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Messages stored.
    pub stored: AtomicU64,
    /// Messages evicted by newer ones past a user's bounds.
    pub evicted: AtomicU64,
    /// Messages dropped at `offline_ttl`.
    pub expired: AtomicU64,
    /// Messages refused (`store_full`).
    pub refused: AtomicU64,
    /// Messages sent to the node of the user's new session (cluster mode).
    pub forwarded: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<Arc<str>, Queue>,
    bytes: usize,
    messages: usize,
}

#[derive(Debug, Default)]
struct Queue {
    msgs: VecDeque<Stored>,
    bytes: usize,
}

/// A node's offline messages. See the module docs.
pub struct OfflineStore {
    limits: Limits,
    inner: Mutex<Inner>,
    /// Users with messages: a session opening checks this before taking the lock, so the
    /// common case (nothing stored for anyone) costs one atomic load.
    users: AtomicUsize,
    on_stored: Option<Arc<OnStoredFn>>,
    /// Unix time of the engines' epoch, ms: the `ts` of stored frames.
    unix_epoch_ms: u64,
    /// Message ids of the server's own stored messages ([`server_mid`](Self::server_mid)).
    next_mid: AtomicU64,
    /// Counters.
    pub stats: StoreStats,
}

impl std::fmt::Debug for OfflineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineStore")
            .field("limits", &self.limits)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

/// Events collected under the lock, for the hook after it.
type Events = Vec<(StoreEventKind, Arc<str>, Stored)>;

impl OfflineStore {
    /// An empty store with these bounds, calling `on_stored` (if set) for every change.
    pub fn new(limits: Limits, on_stored: Option<Arc<OnStoredFn>>, unix_epoch_ms: u64) -> Self {
        Self {
            limits,
            inner: Mutex::default(),
            users: AtomicUsize::new(0),
            on_stored,
            unix_epoch_ms,
            next_mid: AtomicU64::new(0),
            stats: StoreStats::default(),
        }
    }

    /// A message id for a message from the server (`Hub`, HTTP API): `"0-<n>"` with this
    /// node's tag in the top bits of n, so ids differ across a cluster's nodes, and the shape
    /// of a session's (`acks::mid`; a receipt for it finds no sender and is ignored).
    pub fn server_mid(&self, node_tag: u16) -> String {
        let n = self.next_mid.fetch_add(1, Relaxed) + 1;
        format!("0-{}", (u64::from(node_tag) << 48) | (n & ((1 << 48) - 1)))
    }

    /// Unix time in ms of `now` on the engines' clock.
    pub fn unix_ms(&self, now: u64) -> u64 {
        self.unix_epoch_ms + now / 1_000_000
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere under this lock leaves the maps consistent (every change is one
        // step): keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether storing is on (`offline_max_messages` > 0).
    pub fn enabled(&self) -> bool {
        self.limits.max_messages > 0
    }

    /// Stores `msg` for `user` unless `online()` (asked under the lock) says the user has a
    /// session now. Evicts the user's oldest messages past its bounds.
    pub fn store_if_offline(
        &self,
        user: &str,
        msg: Stored,
        now: u64,
        online: impl FnOnce() -> bool,
    ) -> Result<Outcome, Refusal> {
        let mut events = Events::new();
        let r = {
            let mut g = self.lock();
            if online() {
                Err(Refusal::Online)
            } else {
                self.insert(&mut g, user, msg, now, &mut events)
            }
        };
        self.emit(&events);
        r
    }

    /// Stores `msg` for `user` whatever the directory says: messages forwarded from another
    /// node for a session that is gone again wait here for the next one.
    pub fn store(&self, user: &str, msg: Stored, now: u64) -> Result<Outcome, Refusal> {
        let mut events = Events::new();
        let r = self.insert(&mut self.lock(), user, msg, now, &mut events);
        self.emit(&events);
        r
    }

    fn insert(
        &self,
        g: &mut Inner,
        user: &str,
        msg: Stored,
        now: u64,
        events: &mut Events,
    ) -> Result<Outcome, Refusal> {
        let l = self.limits;
        let len = msg.frame.len();
        let refuse = |why: String| {
            self.stats.refused.fetch_add(1, Relaxed);
            Err(Refusal::Full(why))
        };
        if l.max_messages == 0 {
            return refuse("offline messages are off (offline_max_messages = 0)".into());
        }
        if len > l.max_bytes {
            return refuse(format!(
                "the message ({len} bytes) is larger than offline_max_bytes ({})",
                l.max_bytes
            ));
        }
        let key: Arc<str> = match g.users.get_key_value(user) {
            Some((k, _)) => k.clone(),
            None if g.users.len() >= l.max_users => {
                return refuse(format!(
                    "offline messages are kept for at most {} users (offline_max_users)",
                    l.max_users
                ))
            }
            None => Arc::from(user),
        };
        self.expire_user(g, &key, now, events);
        // What this user's own evictions would free counts towards the node's bound.
        let q = g.users.get(&*key);
        let (mut count, mut bytes) = q.map_or((0, 0), |q| (q.msgs.len(), q.bytes));
        let mut evict = 0;
        if let Some(q) = q {
            for m in &q.msgs {
                if count < l.max_messages && bytes + len <= l.max_bytes {
                    break;
                }
                evict += 1;
                count -= 1;
                bytes -= m.frame.len();
            }
        }
        let freed = q.map_or(0, |q| q.bytes) - bytes;
        if g.bytes - freed + len > l.max_total_bytes {
            return refuse(format!(
                "this node keeps at most {} bytes of offline messages (offline_max_total_bytes)",
                l.max_total_bytes
            ));
        }
        let new_user = !g.users.contains_key(&*key);
        let q = g.users.entry(key.clone()).or_default();
        for _ in 0..evict {
            if let Some(m) = q.msgs.pop_front() {
                q.bytes -= m.frame.len();
                events.push((StoreEventKind::Evicted, key.clone(), m));
            }
        }
        q.bytes += len;
        q.msgs.push_back(msg.clone());
        g.bytes = g.bytes - freed + len;
        g.messages = g.messages + 1 - evict;
        if new_user {
            self.users.fetch_add(1, Relaxed);
        }
        self.stats.stored.fetch_add(1, Relaxed);
        self.stats.evicted.fetch_add(evict as u64, Relaxed);
        events.push((StoreEventKind::Stored, key, msg));
        Ok(Outcome { evicted: evict })
    }

    /// Drops `user`'s messages older than the TTL (the user's queue must exist to do anything).
    fn expire_user(&self, g: &mut Inner, user: &str, now: u64, events: &mut Events) {
        let ttl = self.limits.ttl;
        let Inner {
            users,
            bytes,
            messages,
        } = g;
        let Some((key, _)) = users.get_key_value(user) else {
            return;
        };
        let key = key.clone();
        let Some(q) = users.get_mut(user) else { return };
        while let Some(m) = q.msgs.front() {
            if ttl == 0 || now.saturating_sub(m.at) < ttl {
                break;
            }
            let Some(m) = q.msgs.pop_front() else { break };
            q.bytes -= m.frame.len();
            *bytes -= m.frame.len();
            *messages -= 1;
            self.stats.expired.fetch_add(1, Relaxed);
            events.push((StoreEventKind::Expired, key.clone(), m));
        }
        if q.msgs.is_empty() {
            users.remove(user);
            self.users.fetch_sub(1, Relaxed);
        }
    }

    /// Takes every message kept for `user`, oldest first (expired ones are dropped instead).
    /// `kind` says why for the hook: [`StoreEventKind::Delivered`] when a session of this
    /// node gets them, [`StoreEventKind::Forwarded`] when they go to another node's.
    pub fn take(&self, user: &str, now: u64, kind: StoreEventKind) -> Vec<Stored> {
        if self.users.load(Relaxed) == 0 {
            return Vec::new();
        }
        let mut events = Events::new();
        let taken = {
            let mut g = self.lock();
            self.expire_user(&mut g, user, now, &mut events);
            match g.users.remove_entry(user) {
                Some((key, q)) => {
                    self.users.fetch_sub(1, Relaxed);
                    g.bytes -= q.bytes;
                    g.messages -= q.msgs.len();
                    let msgs: Vec<Stored> = q.msgs.into();
                    if self.on_stored.is_some() {
                        events.extend(msgs.iter().map(|m| (kind, key.clone(), m.clone())));
                    }
                    msgs
                }
                None => Vec::new(),
            }
        };
        // Deliveries are counted by the shard that makes them (`offline_delivered_total{shard}`).
        if kind == StoreEventKind::Forwarded {
            self.stats.forwarded.fetch_add(taken.len() as u64, Relaxed);
        }
        self.emit(&events);
        taken
    }

    /// The users of `candidates` with messages here (cheap when nothing is stored).
    pub fn holding<'a>(&self, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        if self.users.load(Relaxed) == 0 {
            return Vec::new();
        }
        let g = self.lock();
        candidates
            .into_iter()
            .filter(|u| g.users.contains_key(*u))
            .map(String::from)
            .collect()
    }

    /// Drops every expired message (shard 0 calls it about once a second). Costs a look at
    /// each user's oldest message.
    pub fn sweep(&self, now: u64) {
        if self.limits.ttl == 0 || self.users.load(Relaxed) == 0 {
            return;
        }
        let mut events = Events::new();
        {
            let mut g = self.lock();
            let ttl = self.limits.ttl;
            let old: Vec<Arc<str>> = g
                .users
                .iter()
                .filter(|(_, q)| {
                    q.msgs
                        .front()
                        .is_some_and(|m| now.saturating_sub(m.at) >= ttl)
                })
                .map(|(u, _)| u.clone())
                .collect();
            for u in old {
                self.expire_user(&mut g, &u, now, &mut events);
            }
        }
        self.emit(&events);
    }

    /// Users with messages, messages, and their frame bytes.
    pub fn size(&self) -> (usize, usize, usize) {
        let g = self.lock();
        (g.users.len(), g.messages, g.bytes)
    }

    /// The store's metrics for `/metrics` and `/api/v1/stats`: name, help, gauge or counter,
    /// value.
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, bool, u64)> {
        let (users, messages, bytes) = self.size();
        let s = &self.stats;
        let c = |a: &AtomicU64| a.load(Relaxed);
        vec![
            (
                "offline_users",
                "Offline users with messages kept on this node.",
                true,
                users as u64,
            ),
            (
                "offline_messages",
                "Offline messages kept on this node.",
                true,
                messages as u64,
            ),
            (
                "offline_bytes",
                "Bytes of offline messages kept on this node (their frames).",
                true,
                bytes as u64,
            ),
            (
                "offline_stored_total",
                "Messages stored for offline users.",
                false,
                c(&s.stored),
            ),
            (
                "offline_forwarded_total",
                "Stored messages sent to the node of their user's new session.",
                false,
                c(&s.forwarded),
            ),
            (
                "offline_evicted_total",
                "Stored messages pushed out past offline_max_messages or offline_max_bytes.",
                false,
                c(&s.evicted),
            ),
            (
                "offline_expired_total",
                "Stored messages dropped at offline_ttl.",
                false,
                c(&s.expired),
            ),
            (
                "offline_refused_total",
                "Messages refused by the store (store_full).",
                false,
                c(&s.refused),
            ),
        ]
    }

    /// A copy of `user`'s messages, oldest first, without taking them.
    pub fn peek(&self, user: &str) -> Vec<Stored> {
        if self.users.load(Relaxed) == 0 {
            return Vec::new();
        }
        self.lock()
            .users
            .get(user)
            .map(|q| q.msgs.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn emit(&self, events: &Events) {
        let Some(hook) = &self.on_stored else { return };
        for (kind, user, m) in events {
            let ev = StoreEvent {
                kind: *kind,
                user,
                mid: &m.mid,
                from: &m.from,
                unix_ms: self.unix_ms(m.at),
                message: crate::http::sse::ws_payload(&m.frame),
            };
            // The hook runs on whichever thread changed the store; a panic in it must not
            // take that thread (a shard, the bus) down.
            let call = std::panic::AssertUnwindSafe(|| hook(&ev));
            if std::panic::catch_unwind(call).is_err() {
                log::error!("the on_stored hook panicked ({:?} for {user})", kind);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ns(d: Duration) -> u64 {
        d.as_nanos() as u64
    }

    fn limits() -> Limits {
        Limits {
            max_messages: 3,
            max_bytes: 100,
            ttl: ns(Duration::from_secs(60)),
            max_total_bytes: 150,
            max_users: 2,
        }
    }

    fn msg(mid: &str, len: usize, at: u64) -> Stored {
        Stored {
            mid: mid.into(),
            from: "a".into(),
            at,
            frame: Arc::from(vec![b'x'; len]),
        }
    }

    fn mids(v: &[Stored]) -> Vec<&str> {
        v.iter().map(|m| &*m.mid).collect()
    }

    #[test]
    fn count_bytes_and_age_bound_a_user_oldest_first() {
        let s = OfflineStore::new(limits(), None, 0);
        for i in 0..4 {
            let r = s.store("bob", msg(&i.to_string(), 10, 0), 0).unwrap();
            assert_eq!(r.evicted, usize::from(i == 3), "the 4th evicts the 1st");
        }
        assert_eq!(s.size(), (1, 3, 30));
        // 60 + 10 + 10 > 100 bytes: the two oldest go.
        assert_eq!(s.store("bob", msg("big", 60, 0), 0).unwrap().evicted, 1);
        assert_eq!(mids(&s.peek("bob")), ["2", "3", "big"]);
        // A minute later they are all expired.
        let later = ns(Duration::from_secs(60));
        assert!(s.take("bob", later, StoreEventKind::Delivered).is_empty());
        assert_eq!(s.size(), (0, 0, 0));
        assert_eq!(s.stats.expired.load(Relaxed), 3);
        assert_eq!(s.stats.evicted.load(Relaxed), 2);
    }

    #[test]
    fn the_node_bounds_refuse_rather_than_evict_others() {
        let s = OfflineStore::new(limits(), None, 0);
        s.store("a", msg("1", 100, 0), 0).unwrap();
        assert!(matches!(
            s.store("b", msg("2", 60, 0), 0),
            Err(Refusal::Full(_))
        ));
        s.store("b", msg("3", 50, 0), 0).unwrap();
        let third = s.store("c", msg("4", 1, 0), 0);
        assert!(matches!(third, Err(Refusal::Full(m)) if m.contains("offline_max_users")));
        // A user replacing its own message stays within the node's bytes.
        assert_eq!(s.store("a", msg("5", 100, 0), 0).unwrap().evicted, 1);
        assert!(matches!(
            s.store("a", msg("6", 101, 0), 0),
            Err(Refusal::Full(_))
        ));
        assert_eq!(s.stats.refused.load(Relaxed), 3);
    }

    #[test]
    fn take_hands_messages_over_once_and_the_hook_sees_each_step() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let hook: Arc<OnStoredFn> = Arc::new(move |e: &StoreEvent<'_>| {
            log.lock().unwrap().push(format!("{:?} {}", e.kind, e.mid));
        });
        let s = OfflineStore::new(limits(), Some(hook), 0);
        s.store_if_offline("bob", msg("1", 10, 0), 0, || false)
            .unwrap();
        assert_eq!(
            s.store_if_offline("bob", msg("2", 10, 0), 0, || true),
            Err(Refusal::Online)
        );
        assert_eq!(mids(&s.take("bob", 0, StoreEventKind::Delivered)), ["1"]);
        assert!(s.take("bob", 0, StoreEventKind::Delivered).is_empty());
        assert_eq!(*seen.lock().unwrap(), ["Stored 1", "Delivered 1"]);
    }

    #[test]
    fn the_sweep_drops_expired_users() {
        let s = OfflineStore::new(limits(), None, 0);
        s.store("a", msg("1", 10, 0), 0).unwrap();
        s.store("b", msg("2", 10, ns(Duration::from_secs(30))), 0)
            .unwrap();
        s.sweep(ns(Duration::from_secs(61)));
        assert_eq!(s.size(), (1, 1, 10));
        assert_eq!(s.holding(["a", "b"]), ["b"]);
    }
}
