//! The bus thread: the one bus client of the process, on a current-thread runtime of its own.
//!
//! It moves four things, in this order of priority:
//! 1. the directory's journal: subscriptions follow local membership (a room's channel is
//!    subscribed while the node has members there), and the changes go out as a numbered
//!    delta, at the latest every [`DELTA_EVERY`];
//! 2. envelopes the shards queued ([`super::Link::send`]), after the journal, so that a
//!    subscription always precedes a publication that announces it (a `joined` event);
//! 3. envelopes from the bus: control messages update the [`View`], deliveries go through the
//!    router exactly as local ones do;
//! 4. a heartbeat every [`HEARTBEAT`], and forgetting nodes silent for [`DEAD_AFTER`].
//!
//! Startup is synchronous for the server: [`start`] returns once the bus answered and the
//! node listened for [`JOIN_WINDOW`] (so it knows the others, and refuses to run if its name
//! or tag is taken), or with the reason it cannot run.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::history::{self, HistoryOp};
use super::transport::{Inbound, Transport};
use super::view::{Ask, DEAD_AFTER, HEARTBEAT};
use super::wire::{self, Body, Channel, Control, Data, Op};
use super::{Link, Outbound};
use crate::engine::directory::Change;
use crate::engine::history::StoredRead;
use crate::engine::offline::Stored;
use crate::engine::router::{Route, ShardMsg};
use crate::hooks::StoreEventKind;
use crate::hub::Hub;
use crate::protocol::frame::{self, Frame, OpCode};
use crate::protocol::reply;

/// The longest a change waits before it goes out in a delta.
pub const DELTA_EVERY: Duration = Duration::from_millis(20);

/// The longest one publish call (a batch) may wait for the bus client.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);
/// At most this many envelopes share one publish call (one Redis pipeline, one round trip).
const PUBLISH_BATCH: usize = 256;
/// At most this many room history operations share one Redis pipeline, each pipeline with its
/// own `READ_TIMEOUT`: a recovery storm's reads (10,000 joins, each reading 100 publications)
/// answered in one 256-read pipeline could take longer than the timeout on a busy machine and
/// fail every join in it (`recovered: false` for 256 clients, measured in
/// bench/runs/2026-12-02-recovery-storm-redis); smaller pipelines keep each answer short.
const HISTORY_PIPELINE: usize = 32;

/// Sessions per snapshot part (NATS's default payload limit is 1 MB).
const SNAPSHOT_PART: usize = 2_000;

/// How long a starting node listens before it serves: every running node answers its sync
/// request with a snapshot at once, so this is several bus round trips; a name or tag taken
/// by a running node shows in that time.
const JOIN_WINDOW: Duration = Duration::from_secs(1);

/// The running bus thread.
#[derive(Debug)]
pub struct Running {
    thread: std::thread::JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

impl Running {
    /// Says goodbye on the bus (the others forget this node at once) and ends the thread.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Starts the bus thread for `url`; returns once the node has joined the cluster, or why it
/// cannot.
pub fn start(
    url: &str,
    link: Arc<Link>,
    rx: mpsc::Receiver<Outbound>,
    hub: Hub,
) -> Result<Running, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = oneshot::channel();
    let url = url.to_string();
    let thread = std::thread::Builder::new()
        .name("cluster-bus".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(run(url, link, rx, hub, ready_tx, stop_rx)),
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start the bus runtime: {e}")));
                }
            }
        })
        .map_err(|e| format!("cannot start the bus thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Running { thread, stop }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err("the bus thread ended during startup".into()),
    }
}

struct Bus {
    t: Transport,
    link: Arc<Link>,
    hub: Hub,
    /// The number of the last delta sent.
    seq: u64,
    /// Room channels subscribed to.
    rooms: HashSet<String>,
}

async fn run(
    url: String,
    link: Arc<Link>,
    mut rx: mpsc::Receiver<Outbound>,
    hub: Hub,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    mut stop: oneshot::Receiver<()>,
) {
    let t = match Transport::connect(&url, &link.node, link.stats.clone()).await {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut bus = Bus {
        t,
        link,
        hub,
        seq: 0,
        rooms: HashSet::new(),
    };
    let fixed = [
        Channel::Control.name(),
        Channel::All.name(),
        Channel::Node(bus.link.tag).name(),
    ];
    if let Err(e) = bus.t.subscribe(&fixed).await {
        let _ = ready.send(Err(e));
        return;
    }
    // Ask everyone for their state, say who we are, and listen for their snapshots.
    bus.control(Body::Sync { target: None }).await;
    bus.heartbeat().await;
    let window = tokio::time::Instant::now() + JOIN_WINDOW;
    while let Ok(Some(m)) = tokio::time::timeout_at(window, bus.t.recv()).await {
        if let Err(e) = bus.inbound(m).await {
            let _ = ready.send(Err(e));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    log::info!(
        "cluster: node {} (tag {}) joined over {url}; {} other node(s)",
        bus.link.node,
        bus.link.tag,
        bus.link.view().nodes(0).len()
    );
    let mut deltas = tokio::time::interval(DELTA_EVERY);
    let mut beats = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => {
                // The shards have ended (`Server::join` stops the bus last). What they queued
                // while closing their sessions, their members' leaves among it, goes out before
                // the goodbye, in the order the running loop keeps: journal, then the batch.
                // Dropped, the others' members would never hear those sessions leave.
                bus.flush_journal().await;
                loop {
                    let batch: Vec<_> =
                        std::iter::from_fn(|| rx.try_recv().ok()).take(PUBLISH_BATCH).collect();
                    if batch.is_empty() {
                        break;
                    }
                    bus.send_batch(batch).await;
                }
                bus.control(Body::Bye).await;
                // Bounded: a bus that is down must not hold up the shutdown.
                if let Ok(Err(e)) = tokio::time::timeout(PUBLISH_TIMEOUT, bus.t.flush()).await {
                    log::warn!("cluster: goodbye not confirmed: {e}");
                }
                return;
            }
            _ = bus.link.wake.notified() => bus.flush_journal().await,
            out = rx.recv() => {
                let Some(out) = out else { return };
                // Subscriptions first: a history read queued after a join must find the
                // node subscribed to the room (`engine/recovery.rs`).
                bus.flush_journal().await;
                let mut batch = vec![out];
                while batch.len() < PUBLISH_BATCH {
                    let Ok(out) = rx.try_recv() else { break };
                    batch.push(out);
                }
                bus.send_batch(batch).await;
            }
            m = bus.t.recv() => match m {
                Some(m) => {
                    if let Err(e) = bus.inbound(m).await {
                        log::error!("cluster: {e}");
                    }
                }
                None => bus.t.reconnect().await,
            },
            _ = deltas.tick() => bus.flush_journal().await,
            _ = beats.tick() => {
                bus.heartbeat().await;
                let now = bus.now();
                let dead = bus.link.view().expire(now, DEAD_AFTER);
                for (node, gone) in dead {
                    log::warn!("cluster: node {node} unheard of for {DEAD_AFTER:?}: forgotten");
                    bus.announce_left(&gone);
                }
            }
        }
    }
}

impl Bus {
    fn now(&self) -> u64 {
        self.link.now()
    }

    async fn publish(&mut self, channel: &str, payload: Vec<u8>) {
        self.publish_batch(vec![(channel.to_string(), payload)])
            .await;
    }

    /// Sends what the shards queued, in order: runs of plain envelopes as one publish call,
    /// runs of history operations as one Redis pipeline.
    async fn send_batch(&mut self, batch: Vec<Outbound>) {
        let mut plain = Vec::new();
        let mut ops = Vec::new();
        for out in batch {
            match out.history {
                None => {
                    if !ops.is_empty() {
                        self.run_history(std::mem::take(&mut ops)).await;
                    }
                    plain.push((out.channel.name(), out.payload));
                }
                Some(op) => {
                    if !plain.is_empty() {
                        self.publish_batch(std::mem::take(&mut plain)).await;
                    }
                    ops.push((out.channel.name(), out.payload, op));
                }
            }
        }
        if !plain.is_empty() {
            self.publish_batch(plain).await;
        }
        if !ops.is_empty() {
            self.run_history(ops).await;
        }
    }

    /// Runs room history operations in Redis, in order, [`HISTORY_PIPELINE`] per pipeline.
    async fn run_history(&mut self, ops: Vec<(String, Vec<u8>, HistoryOp)>) {
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let pipeline: Vec<_> = ops.by_ref().take(HISTORY_PIPELINE).collect();
            self.run_history_pipeline(pipeline).await;
        }
    }

    /// Runs one pipeline of room history operations and posts each read's answer to the
    /// joining session's shard (a failed read answers "could not read": the join says
    /// `recovered: false`). Failures are counted (`history_errors`).
    async fn run_history_pipeline(&mut self, ops: Vec<(String, Vec<u8>, HistoryOp)>) {
        let answers = match tokio::time::timeout(history::READ_TIMEOUT, self.t.history(&ops)).await
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                log::warn!("cluster: {e}");
                Vec::new()
            }
            Err(_) => {
                log::warn!("cluster: Redis did not answer history operations in time");
                Vec::new()
            }
        };
        let stats = &self.link.stats;
        let router = &self.hub.shared.router;
        for (i, (_, payload, op)) in ops.into_iter().enumerate() {
            let answer = answers
                .get(i)
                .filter(|v| !matches!(v, redis::Value::ServerError(_)));
            match answer {
                Some(_) => {
                    if let HistoryOp::Publish { frame, .. } = &op {
                        stats.published.fetch_add(1, Relaxed);
                        // What the script publishes: the prefix, the epoch and offset (about 24
                        // bytes with their lengths), the frame.
                        let len = payload.len() + frame.len() + 24;
                        stats.bytes_out.fetch_add(len as u64, Relaxed);
                    }
                }
                None => {
                    if let Some(redis::Value::ServerError(e)) = answers.get(i) {
                        log::warn!("cluster: Redis refused a history operation: {e:?}");
                    }
                    stats.history_errors.fetch_add(1, Relaxed);
                }
            }
            if let HistoryOp::Read {
                room, id, since, ..
            } = op
            {
                let read = answer.map_or_else(StoredRead::default, |v| {
                    history::parse_read(v, since.as_ref())
                });
                let msg = ShardMsg::History {
                    id,
                    room: room.into(),
                    read,
                };
                router.route_from_bus(Route::Session(msg));
            }
        }
    }

    async fn publish_batch(&mut self, batch: Vec<(String, Vec<u8>)>) {
        let count = batch.len() as u64;
        let len: u64 = batch.iter().map(|(_, p)| p.len() as u64).sum();
        // A bus that takes nothing (NATS holds a bounded buffer while it reconnects) must not
        // stall the thread: the envelopes are counted as failed, and the thread goes on.
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.t.publish(batch)).await {
            Ok(Ok(())) => {
                self.link.stats.published.fetch_add(count, Relaxed);
                self.link.stats.bytes_out.fetch_add(len, Relaxed);
            }
            _ => {
                self.link.stats.publish_errors.fetch_add(count, Relaxed);
            }
        }
    }

    async fn control(&mut self, body: Body) {
        let msg = Control {
            node: self.link.node.clone(),
            tag: self.link.tag,
            epoch: self.link.epoch,
            body,
        };
        self.publish(&Channel::Control.name(), msg.to_bytes()).await;
    }

    async fn heartbeat(&mut self) {
        let body = Body::Heartbeat {
            seq: self.seq,
            sessions: self.hub.session_count_local(),
            published: self.link.stats.published.load(Relaxed),
        };
        self.control(body).await;
    }

    /// Takes the directory's journal: subscriptions follow membership, changes go out.
    async fn flush_journal(&mut self) {
        let taken = self.hub.shared.router.directory().take();
        let mut seen = HashSet::new();
        for room in taken.interest {
            if !seen.insert(room.clone()) {
                continue;
            }
            let channel = Channel::Room(room.to_string()).name();
            let wanted = self.hub.shared.router.directory().has_members(&room);
            if wanted && !self.rooms.contains(&channel) {
                if let Err(e) = self.t.subscribe(std::slice::from_ref(&channel)).await {
                    log::warn!("cluster: {e}");
                    continue;
                }
                self.rooms.insert(channel);
            } else if !wanted && self.rooms.remove(&channel) {
                self.t.unsubscribe(&channel).await;
            }
        }
        if taken.overflowed {
            // Changes were dropped while the bus was stuck: the whole state replaces them.
            self.seq += 1;
            self.send_snapshot().await;
            return;
        }
        if taken.changes.is_empty() {
            return;
        }
        let ops = taken.changes.into_iter().map(op).collect();
        self.seq += 1;
        let seq = self.seq;
        self.control(Body::Delta { seq, ops }).await;
    }

    async fn snapshot(&mut self) {
        self.flush_journal().await;
        self.send_snapshot().await;
    }

    async fn send_snapshot(&mut self) {
        let all = self.hub.shared.router.directory().snapshot();
        let mut parts: Vec<Vec<wire::SessionRecord>> = all
            .chunks(SNAPSHOT_PART)
            .map(|c| {
                c.iter()
                    .map(|(id, user, rooms)| {
                        let rooms = rooms.iter().map(|r| r.to_string()).collect();
                        (id.0, user.to_string(), rooms)
                    })
                    .collect()
            })
            .collect();
        if parts.is_empty() {
            parts.push(Vec::new());
        }
        let n = parts.len();
        for (i, sessions) in parts.into_iter().enumerate() {
            let last = i + 1 == n;
            let seq = self.seq;
            self.control(Body::Snapshot {
                seq,
                sessions,
                last,
            })
            .await;
        }
    }

    /// One message from the bus. `Err`: this node must not run (its name or tag is taken).
    async fn inbound(&mut self, m: Inbound) -> Result<(), String> {
        self.link.stats.received.fetch_add(1, Relaxed);
        if m.channel == Channel::Control.name() {
            let Ok(msg) = Control::from_bytes(&m.payload) else {
                return Ok(());
            };
            if msg.node == self.link.node {
                if msg.epoch != self.link.epoch {
                    return Err(format!(
                        "another node named {} is running in this cluster; choose another --node",
                        msg.node
                    ));
                }
                return Ok(());
            }
            self.forward_stored(&msg);
            let now = self.now();
            let asks = self.link.view().on_control(msg, now);
            for ask in asks {
                match ask {
                    Ask::Sync(node) => {
                        let target = Some(node);
                        self.control(Body::Sync { target }).await;
                    }
                    Ask::SendSnapshot => self.snapshot().await,
                    Ask::Left(gone) => self.announce_left(&gone),
                    Ask::TagTaken(other) => {
                        return Err(format!(
                            "node {other} has the same tag ({}) as this node {}; choose another \
                             --node name",
                            self.link.tag, self.link.node
                        ))
                    }
                }
            }
            return Ok(());
        }
        match wire::decode(&m.payload) {
            // Numbered by Redis: every node delivers it, the origin too (it did not before).
            Ok((_, data @ Data::Stored { .. })) => self.deliver(data),
            Ok((origin, _)) if origin == self.link.tag => {} // our own, echoed
            Ok((_, data)) => self.deliver(data),
            Err(e) => log::debug!("cluster: a bad envelope on {}: {}", m.channel, e.0),
        }
        Ok(())
    }

    /// Tells this node's members of their rooms that sessions of a node that went away left
    /// them (the node cannot say so itself).
    fn announce_left(&self, gone: &[super::view::Gone]) {
        if !self.hub.config().presence {
            return;
        }
        let router = &self.hub.shared.router;
        for (id, user, rooms) in gone {
            for room in rooms {
                let Some(shared) = router.directory().room(room) else {
                    continue; // no members here
                };
                let mut out = Vec::with_capacity(96);
                reply::presence(&mut out, false, room, user, id.0);
                let frame = frame::encode(OpCode::Text, &out);
                router.route_from_bus(Route::Presence {
                    room: &shared,
                    frame,
                    about: *id,
                });
            }
        }
    }

    /// Routes a delivery from another node on this one, as a local one would be.
    fn deliver(&self, data: Data<'_>) {
        let router = &self.hub.shared.router;
        let route = match data {
            Data::Stored {
                room,
                exclude,
                epoch,
                offset,
                frame,
            } => {
                let Some(shared) = router.directory().room(room) else {
                    return; // no members here (any more)
                };
                shared.log.note_stored_epoch(epoch);
                let frame = crate::engine::history::stamp(&Frame::from(frame), offset);
                router.route_from_bus(Route::Numbered {
                    room: &shared,
                    frame,
                    exclude,
                    seq: offset,
                });
                return;
            }
            Data::Room { room, frame } | Data::Presence { room, frame } => {
                let Some(shared) = router.directory().room(room) else {
                    return; // no members here (any more)
                };
                let frame: Frame = Frame::from(frame);
                let route = if matches!(data, Data::Room { .. }) {
                    Route::Publish {
                        room: &shared,
                        frame,
                        exclude: None,
                        now: self.hub.now_ns(),
                    }
                } else {
                    Route::Presence {
                        room: &shared,
                        frame,
                        about: crate::engine::ids::SessionId(0),
                    }
                };
                router.route_from_bus(route);
                return;
            }
            Data::All { frame } => Route::Broadcast {
                frame: Frame::from(frame),
                exclude: None,
            },
            Data::User { user, frame } => {
                let frame = Frame::from(frame);
                router.route_from_bus(Route::User { user, frame });
                return;
            }
            Data::Session { id, frame } => Route::Session(ShardMsg::Session {
                id,
                frame: Frame::from(frame),
            }),
            Data::Close { id, code, reason } => Route::Session(ShardMsg::Close {
                id,
                code,
                reason: reason.to_string(),
            }),
            Data::Join { id, room } => Route::Session(ShardMsg::Join {
                id,
                room: room.to_string(),
            }),
            Data::Leave { id, room } => Route::Session(ShardMsg::Leave {
                id,
                room: room.to_string(),
            }),
            Data::Receipt {
                id,
                seq,
                from,
                user,
            } => Route::Session(ShardMsg::Receipt {
                id,
                seq,
                user: user.into(),
                from,
            }),
            Data::Offline {
                user,
                unix_ms,
                mid,
                from,
                frame,
            } => return self.receive_stored(user, unix_ms, mid, from, frame),
        };
        router.route_from_bus(route);
    }
}

impl Bus {
    /// Sends the offline messages kept here for users who, as `msg` says, now have a session
    /// on its node: in order, on that node's channel, and gone from here (see `offline.rs`).
    fn forward_stored(&self, msg: &Control) {
        let store = &self.hub.shared.offline;
        let users: Vec<&str> = match &msg.body {
            Body::Delta { ops, .. } => ops
                .iter()
                .filter_map(|op| match op {
                    Op::Up { user, .. } => Some(user.as_str()),
                    _ => None,
                })
                .collect(),
            Body::Snapshot { sessions, .. } => {
                sessions.iter().map(|(_, u, _)| u.as_str()).collect()
            }
            _ => return,
        };
        for user in store.holding(users) {
            let now = self.hub.now_ns();
            let msgs = store.take(&user, now, StoreEventKind::Forwarded);
            for m in msgs {
                let data = Data::Offline {
                    user: &user,
                    unix_ms: store.unix_ms(m.at),
                    mid: &m.mid,
                    from: &m.from,
                    frame: &m.frame,
                };
                let bytes = wire::encode(self.link.tag, &data);
                if !self.link.send(Channel::Node(msg.tag), bytes) {
                    // The queue to the bus is full: keep it here for the user's next session
                    // rather than lose it.
                    let _ = store.store(&user, m, now);
                }
            }
        }
    }

    /// An offline message another node kept, for a session of its user here: the user's
    /// first session on this node gets it; if none is left, it is kept here for the next.
    fn receive_stored(&self, user: &str, unix_ms: u64, mid: &str, from: &str, frame: &[u8]) {
        let router = &self.hub.shared.router;
        let store = &self.hub.shared.offline;
        let frame = Frame::from(frame);
        if let Some(id) = router.directory().user_session(user) {
            let routed = router.route_from_bus(Route::Session(ShardMsg::Session {
                id,
                frame: frame.clone(),
            }));
            if routed.missed == 0 {
                return;
            }
        }
        // Its age counts from when the origin stored it.
        let now = self.hub.now_ns();
        let age_ns = store.unix_ms(now).saturating_sub(unix_ms) * 1_000_000;
        let m = Stored {
            mid: mid.into(),
            from: from.into(),
            at: now.saturating_sub(age_ns),
            frame,
        };
        let _ = store.store(user, m, now);
    }
}

fn op(c: Change) -> Op {
    match c {
        Change::Up { id, user } => Op::Up {
            session: id.0,
            user: user.to_string(),
        },
        Change::Down { id } => Op::Down { session: id.0 },
        Change::Join { id, room } => Op::Join {
            session: id.0,
            room: room.to_string(),
        },
        Change::Leave { id, room } => Op::Leave {
            session: id.0,
            room: room.to_string(),
        },
    }
}
