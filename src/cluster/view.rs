//! What this node knows of the others: their sessions, users and room memberships, as their
//! heartbeats, deltas and snapshots told it. Pure: control messages and the time in, answers
//! and requests out; the bus thread (`bus.rs`) feeds it and acts on what it asks.
//!
//! Consistency (docs/cluster.md): each node is the only writer of its own state and sends it
//! as numbered deltas, batched every few milliseconds, and a heartbeat with the last delta's
//! number every `HEARTBEAT`. A receiver applies deltas in order; a gap (a missed delta, a
//! heartbeat ahead of what it applied, an unknown node) makes it ask that node for a snapshot,
//! which replaces what it knew. A node unheard of for `DEAD_AFTER` is forgotten, sessions and
//! all. So the view of another node lags it by one bus round trip plus the delta batch in the
//! normal case, by a snapshot round trip after a loss, and a dead node's sessions disappear
//! within `DEAD_AFTER`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::wire::{Body, Control, Op, SessionRecord};
use crate::engine::ids::SessionId;

/// How often every node announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a node may go unheard before the others forget it: three heartbeats, so one or
/// two lost or late ones do not drop a live node.
pub const DEAD_AFTER: Duration = Duration::from_secs(6);

/// One remote session.
#[derive(Debug, Clone)]
struct Remote {
    user: Arc<str>,
    rooms: Vec<Arc<str>>,
}

/// One remote node as last heard.
#[derive(Debug)]
struct NodeState {
    tag: u16,
    epoch: u64,
    /// The last delta applied.
    seq: u64,
    /// Nanoseconds (the bus thread's clock) of the last message from it.
    last_seen: u64,
    /// Whether a snapshot was received since the node appeared or a gap was seen; until then
    /// what is known of it is partial.
    synced: bool,
    sessions: HashMap<u64, Remote>,
    /// Parts of a snapshot being received.
    partial: Vec<SessionRecord>,
    /// What its last heartbeat said.
    published: u64,
}

/// A node as the stats and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Its tag (the node part of its session ids).
    pub tag: u16,
    /// Its open sessions, as known here.
    pub sessions: usize,
    /// Publications it sent to the bus, by its last heartbeat.
    pub published: u64,
    /// Milliseconds since it was last heard.
    pub last_seen_ms: u64,
}

/// A session of a node that went away (said goodbye, or fell silent): what its room members
/// here must be told.
pub type Gone = (SessionId, Arc<str>, Vec<Arc<str>>);

/// What the bus thread must do after a control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// A node said goodbye: these sessions left their rooms.
    Left(Vec<Gone>),
    /// Ask `node` for a snapshot.
    Sync(String),
    /// Send our snapshot (someone asked).
    SendSnapshot,
    /// Another node uses our tag under another name: we must not run.
    TagTaken(String),
}

/// The remote part of the cluster. See the module docs.
#[derive(Debug, Default)]
pub struct View {
    me: String,
    my_tag: u16,
    nodes: HashMap<String, NodeState>,
    /// user → node → sessions there.
    users: HashMap<Arc<str>, HashMap<String, usize>>,
    /// room → remote session → user.
    rooms: HashMap<Arc<str>, HashMap<u64, Arc<str>>>,
}

impl View {
    /// The view of node `me` (tag `my_tag`), knowing nobody yet.
    pub fn new(me: &str, my_tag: u16) -> Self {
        Self {
            me: me.to_string(),
            my_tag,
            ..Self::default()
        }
    }

    /// Applies a control message received at `now` (ns); says what to do in return.
    pub fn on_control(&mut self, msg: Control, now: u64) -> Vec<Ask> {
        let mut asks = Vec::new();
        if msg.node == self.me {
            return asks; // our own, echoed by the bus
        }
        if msg.tag == self.my_tag {
            asks.push(Ask::TagTaken(msg.node));
            return asks;
        }
        if let Body::Sync { target } = &msg.body {
            if target.as_deref().is_none_or(|t| t == self.me) {
                asks.push(Ask::SendSnapshot);
            }
        }
        if matches!(msg.body, Body::Bye) {
            let gone = self.forget(&msg.node);
            if !gone.is_empty() {
                asks.push(Ask::Left(gone));
            }
            return asks;
        }
        let fresh = self
            .nodes
            .get(&msg.node)
            .is_none_or(|n| n.epoch != msg.epoch);
        if fresh {
            // A node we did not know, or a restart: what we knew of it is void.
            let gone = self.forget(&msg.node);
            if !gone.is_empty() {
                asks.push(Ask::Left(gone));
            }
            self.nodes.insert(
                msg.node.clone(),
                NodeState {
                    tag: msg.tag,
                    epoch: msg.epoch,
                    seq: 0,
                    last_seen: now,
                    synced: false,
                    sessions: HashMap::new(),
                    partial: Vec::new(),
                    published: 0,
                },
            );
            if !matches!(msg.body, Body::Snapshot { .. }) {
                asks.push(Ask::Sync(msg.node.clone()));
            }
        }
        let node = msg.node;
        let Some(n) = self.nodes.get_mut(&node) else {
            return asks;
        };
        n.last_seen = now;
        match msg.body {
            Body::Heartbeat { seq, published, .. } => {
                n.published = published;
                if seq > n.seq && n.synced && !fresh {
                    asks.push(Ask::Sync(node));
                }
            }
            Body::Delta { seq, ops } => {
                if !n.synced || seq <= n.seq {
                    // Before a snapshot, or a duplicate: the snapshot will carry it.
                } else if seq == n.seq + 1 {
                    n.seq = seq;
                    for op in ops {
                        self.apply(&node, op);
                    }
                } else {
                    n.synced = false;
                    asks.push(Ask::Sync(node));
                }
            }
            Body::Snapshot {
                seq,
                sessions,
                last,
            } => {
                n.partial.extend(sessions);
                if last {
                    let all = std::mem::take(&mut n.partial);
                    n.seq = seq;
                    n.synced = true;
                    self.replace(&node, all);
                }
            }
            Body::Sync { .. } | Body::Bye => {}
        }
        asks
    }

    /// Forgets the nodes unheard of since `now - dead_after`; returns their names and their
    /// sessions.
    pub fn expire(&mut self, now: u64, dead_after: Duration) -> Vec<(String, Vec<Gone>)> {
        let limit = dead_after.as_nanos() as u64;
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| now.saturating_sub(n.last_seen) > limit)
            .map(|(name, _)| name.clone())
            .collect();
        dead.into_iter()
            .map(|name| {
                let gone = self.forget(&name);
                (name, gone)
            })
            .collect()
    }

    fn apply(&mut self, node: &str, op: Op) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        match op {
            Op::Up { session, user } => {
                if n.sessions.contains_key(&session) {
                    return; // a snapshot already had it
                }
                let user: Arc<str> = user.into();
                *self
                    .users
                    .entry(user.clone())
                    .or_default()
                    .entry(node.to_string())
                    .or_default() += 1;
                n.sessions.insert(
                    session,
                    Remote {
                        user,
                        rooms: Vec::new(),
                    },
                );
            }
            Op::Down { session } => {
                if let Some(r) = n.sessions.remove(&session) {
                    Self::unindex(&mut self.users, &mut self.rooms, node, session, &r);
                }
            }
            Op::Join { session, room } => {
                if let Some(r) = n.sessions.get_mut(&session) {
                    let room: Arc<str> = room.into();
                    if !r.rooms.contains(&room) {
                        r.rooms.push(room.clone());
                        let user = r.user.clone();
                        self.rooms.entry(room).or_default().insert(session, user);
                    }
                }
            }
            Op::Leave { session, room } => {
                if let Some(r) = n.sessions.get_mut(&session) {
                    r.rooms.retain(|x| **x != *room);
                    Self::unroom(&mut self.rooms, &room, session);
                }
            }
        }
    }

    /// Replaces everything known of `node` with a snapshot.
    fn replace(&mut self, node: &str, sessions: Vec<SessionRecord>) {
        let old = match self.nodes.get_mut(node) {
            Some(n) => std::mem::take(&mut n.sessions),
            None => return,
        };
        for (session, r) in &old {
            Self::unindex(&mut self.users, &mut self.rooms, node, *session, r);
        }
        for (session, user, rooms) in sessions {
            self.apply(node, Op::Up { session, user });
            for room in rooms {
                self.apply(node, Op::Join { session, room });
            }
        }
    }

    fn forget(&mut self, node: &str) -> Vec<Gone> {
        let Some(n) = self.nodes.remove(node) else {
            return Vec::new();
        };
        for (session, r) in &n.sessions {
            Self::unindex(&mut self.users, &mut self.rooms, node, *session, r);
        }
        n.sessions
            .into_iter()
            .map(|(s, r)| (SessionId(s), r.user, r.rooms))
            .collect()
    }

    fn unindex(
        users: &mut HashMap<Arc<str>, HashMap<String, usize>>,
        rooms: &mut HashMap<Arc<str>, HashMap<u64, Arc<str>>>,
        node: &str,
        session: u64,
        r: &Remote,
    ) {
        for room in &r.rooms {
            Self::unroom(rooms, room, session);
        }
        if let Some(per_node) = users.get_mut(&r.user) {
            if let Some(c) = per_node.get_mut(node) {
                *c -= 1;
                if *c == 0 {
                    per_node.remove(node);
                }
            }
            if per_node.is_empty() {
                users.remove(&r.user);
            }
        }
    }

    fn unroom(rooms: &mut HashMap<Arc<str>, HashMap<u64, Arc<str>>>, room: &str, session: u64) {
        if let Some(m) = rooms.get_mut(room) {
            m.remove(&session);
            if m.is_empty() {
                rooms.remove(room);
            }
        }
    }

    // ----- questions -----

    /// The other nodes holding sessions of `user`: (tag, sessions there).
    pub fn user_nodes(&self, user: &str) -> Vec<(u16, usize)> {
        let Some(per_node) = self.users.get(user) else {
            return Vec::new();
        };
        per_node
            .iter()
            .filter_map(|(node, &c)| Some((self.nodes.get(node)?.tag, c)))
            .collect()
    }

    /// A room's members on other nodes.
    pub fn members(&self, room: &str) -> Vec<(SessionId, Arc<str>)> {
        self.rooms.get(room).map_or_else(Vec::new, |m| {
            m.iter().map(|(s, u)| (SessionId(*s), u.clone())).collect()
        })
    }

    /// A room's member count on other nodes.
    pub fn member_count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, HashMap::len)
    }

    /// Users on other nodes with their session counts there.
    pub fn users(&self) -> Vec<(Arc<str>, usize)> {
        self.users
            .iter()
            .map(|(u, per_node)| (u.clone(), per_node.values().sum()))
            .collect()
    }

    /// Rooms with members on other nodes, with their member counts there.
    pub fn rooms(&self) -> Vec<(Arc<str>, usize)> {
        self.rooms
            .iter()
            .map(|(r, m)| (r.clone(), m.len()))
            .collect()
    }

    /// Whether another node has this session open.
    pub fn has_session(&self, id: SessionId) -> bool {
        self.nodes.values().any(|n| n.sessions.contains_key(&id.0))
    }

    /// Sessions on other nodes.
    pub fn session_count(&self) -> usize {
        self.nodes.values().map(|n| n.sessions.len()).sum()
    }

    /// Whether a session id belongs to a known node (by its tag), and which.
    pub fn node_of_tag(&self, tag: u16) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(_, n)| n.tag == tag)
            .map(|(name, _)| name.as_str())
    }

    /// Every other node, as last heard at `now`.
    pub fn nodes(&self, now: u64) -> Vec<NodeInfo> {
        let mut v: Vec<NodeInfo> = self
            .nodes
            .iter()
            .map(|(name, n)| NodeInfo {
                name: name.clone(),
                tag: n.tag,
                sessions: n.sessions.len(),
                published: n.published,
                last_seen_ms: now.saturating_sub(n.last_seen) / 1_000_000,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(node: &str, epoch: u64, body: Body) -> Control {
        Control {
            node: node.into(),
            tag: super::super::wire::tag_of(node),
            epoch,
            body,
        }
    }

    fn delta(seq: u64, ops: Vec<Op>) -> Body {
        Body::Delta { seq, ops }
    }

    fn up(session: u64, user: &str) -> Op {
        Op::Up {
            session,
            user: user.into(),
        }
    }

    fn join(session: u64, room: &str) -> Op {
        Op::Join {
            session,
            room: room.into(),
        }
    }

    fn synced(v: &mut View, node: &str, epoch: u64) {
        let asks = v.on_control(
            msg(
                node,
                epoch,
                Body::Heartbeat {
                    seq: 0,
                    sessions: 0,
                    published: 0,
                },
            ),
            0,
        );
        assert_eq!(
            asks,
            vec![Ask::Sync(node.into())],
            "a new node is asked for its state"
        );
        let snap = Body::Snapshot {
            seq: 0,
            sessions: vec![],
            last: true,
        };
        assert!(v.on_control(msg(node, epoch, snap), 0).is_empty());
    }

    #[test]
    fn deltas_build_users_rooms_and_members() {
        let mut v = View::new("me", 1);
        synced(&mut v, "b", 7);
        let ops = vec![
            up(10, "al"),
            join(10, "r"),
            up(11, "al"),
            up(12, "bo"),
            join(12, "r"),
        ];
        assert!(v.on_control(msg("b", 7, delta(1, ops)), 1).is_empty());
        assert_eq!(
            v.user_nodes("al"),
            vec![(super::super::wire::tag_of("b"), 2)]
        );
        assert_eq!(v.member_count("r"), 2);
        let down = delta(2, vec![Op::Down { session: 10 }]);
        v.on_control(msg("b", 7, down), 2);
        assert_eq!(v.user_nodes("al")[0].1, 1);
        assert_eq!(v.member_count("r"), 1);
        assert_eq!(v.session_count(), 2);
    }

    #[test]
    fn a_gap_asks_for_a_snapshot_which_replaces_what_was_known() {
        let mut v = View::new("me", 1);
        synced(&mut v, "b", 7);
        v.on_control(msg("b", 7, delta(1, vec![up(1, "al")])), 1);
        // Delta 2 was lost.
        let asks = v.on_control(msg("b", 7, delta(3, vec![up(3, "cy")])), 2);
        assert_eq!(asks, vec![Ask::Sync("b".into())]);
        assert!(v.user_nodes("cy").is_empty(), "nothing applied past a gap");
        let snap = Body::Snapshot {
            seq: 3,
            sessions: vec![(2, "bo".into(), vec!["r".into()]), (3, "cy".into(), vec![])],
            last: true,
        };
        v.on_control(msg("b", 7, snap), 3);
        assert!(v.user_nodes("al").is_empty(), "the snapshot replaces");
        assert_eq!(v.member_count("r"), 1);
        assert_eq!(v.session_count(), 2);
        // A heartbeat ahead of the last delta also asks.
        let hb = Body::Heartbeat {
            seq: 5,
            sessions: 2,
            published: 0,
        };
        assert_eq!(
            v.on_control(msg("b", 7, hb), 4),
            vec![Ask::Sync("b".into())]
        );
    }

    #[test]
    fn a_silent_node_is_forgotten_and_a_restart_voids_the_old_state() {
        let mut v = View::new("me", 1);
        synced(&mut v, "b", 7);
        v.on_control(
            msg("b", 7, delta(1, vec![up(1, "al"), join(1, "r")])),
            1_000,
        );
        assert!(v
            .expire(DEAD_AFTER.as_nanos() as u64, DEAD_AFTER)
            .is_empty());
        // Restarted under the same name: a new epoch; its old sessions left their rooms.
        let hb = Body::Heartbeat {
            seq: 0,
            sessions: 0,
            published: 0,
        };
        let asks = v.on_control(msg("b", 8, hb), 2_000);
        assert_eq!(asks.len(), 2, "{asks:?}");
        assert!(matches!(&asks[0], Ask::Left(g) if g.len() == 1 && &*g[0].1 == "al"));
        assert_eq!(asks[1], Ask::Sync("b".into()));
        assert!(v.user_nodes("al").is_empty());
        let late = 2_000 + DEAD_AFTER.as_nanos() as u64 + 1;
        let dead = v.expire(late, DEAD_AFTER);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0, "b");
        assert!(v.nodes(late).is_empty());
    }

    #[test]
    fn our_tag_under_another_name_is_a_conflict_and_sync_requests_are_answered() {
        let mut v = View::new("me", 5);
        let mut m = msg("other", 1, Body::Bye);
        m.tag = 5;
        assert_eq!(v.on_control(m, 0), vec![Ask::TagTaken("other".into())]);
        let asks = v.on_control(msg("c", 1, Body::Sync { target: None }), 0);
        assert!(asks.contains(&Ask::SendSnapshot));
        let not_us = Body::Sync {
            target: Some("d".into()),
        };
        assert!(!v
            .on_control(msg("c", 1, not_us), 0)
            .contains(&Ask::SendSnapshot));
    }
}
