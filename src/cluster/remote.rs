//! The router's view of the other nodes ([`Remote`]), over the [`Link`]: which routes leave
//! this node, to which channel, in which envelope; and the cluster-wide answers from the
//! [`View`](super::view::View).
//!
//! A route leaves at most once per channel: a room's publication goes once to the room's
//! channel (the bus fans it out to the nodes with members), a direct message once to each node
//! holding the user, a command once to its session's node. Routes that came from the bus are
//! never forwarded again (`Router::route_from_bus`).

use std::sync::Arc;

use super::history::HistoryOp;
use super::wire::{self, Channel, Data};
use super::Link;
use crate::engine::history::{HistoryPolicy, Since};
use crate::engine::ids::SessionId;
use crate::engine::router::{Forwarded, Remote, Route, ShardMsg};
use crate::protocol::frame::Frame;

impl Remote for Link {
    fn forward(&self, route: &Route<'_>) -> Forwarded {
        let mut f = Forwarded::default();
        let mut send = |channel: Channel, data: Data<'_>| {
            if !self.send(channel, wire::encode(self.tag, &data)) {
                f.dropped = true;
            }
        };
        match route {
            Route::Publish { room, frame, .. } => {
                let data = Data::Room {
                    room: &room.name,
                    frame,
                };
                send(Channel::Room(room.name.to_string()), data);
            }
            // Came from the bus: never forwarded again.
            Route::Numbered { .. } => {}
            Route::Presence { room, frame, .. } => {
                let data = Data::Presence {
                    room: &room.name,
                    frame,
                };
                send(Channel::Room(room.name.to_string()), data);
            }
            Route::Broadcast { frame, .. } => send(Channel::All, Data::All { frame }),
            Route::User { user, frame } => {
                let nodes = self.view().user_nodes(user);
                for (tag, sessions) in nodes {
                    f.sessions += sessions;
                    send(Channel::Node(tag), Data::User { user, frame });
                }
            }
            Route::Session(msg) => {
                let Some(id) = msg.session().filter(|id| self.is_remote(*id)) else {
                    return f;
                };
                let data = match msg {
                    ShardMsg::Session { id, frame } => Data::Session { id: *id, frame },
                    ShardMsg::Close { id, code, reason } => Data::Close {
                        id: *id,
                        code: *code,
                        reason,
                    },
                    ShardMsg::Join { id, room } => Data::Join { id: *id, room },
                    ShardMsg::Leave { id, room } => Data::Leave { id: *id, room },
                    ShardMsg::Receipt {
                        id,
                        seq,
                        user,
                        from,
                    } => Data::Receipt {
                        id: *id,
                        seq: *seq,
                        from: *from,
                        user,
                    },
                    _ => return f,
                };
                send(Channel::Node(id.node_tag()), data);
            }
        }
        f
    }

    fn is_remote(&self, id: SessionId) -> bool {
        id.node_tag() != self.tag
    }

    fn has_session(&self, id: SessionId) -> bool {
        self.view().has_session(id)
    }

    fn members(&self, room: &str) -> Vec<(SessionId, Arc<str>)> {
        self.view().members(room)
    }

    fn member_count(&self, room: &str) -> usize {
        self.view().member_count(room)
    }

    fn users(&self) -> Vec<(Arc<str>, usize)> {
        self.view().users()
    }

    fn user_sessions(&self, user: &str) -> usize {
        self.view().user_nodes(user).iter().map(|(_, n)| n).sum()
    }

    fn rooms(&self) -> Vec<(Arc<str>, usize)> {
        self.view().rooms()
    }

    fn session_count(&self) -> usize {
        self.view().session_count()
    }

    fn history(&self) -> bool {
        self.history
    }

    fn publish_history(
        &self,
        room: &str,
        frame: &Frame,
        exclude: Option<SessionId>,
        policy: HistoryPolicy,
    ) -> bool {
        let op = HistoryOp::Publish {
            room: room.to_string(),
            frame: frame.clone(),
            policy,
        };
        let prefix = wire::stored_prefix(self.tag, room, exclude);
        self.send_op(Channel::Room(room.to_string()), prefix, Some(op))
    }

    fn read_history(
        &self,
        room: &str,
        id: SessionId,
        since: Option<Since<'_>>,
        policy: HistoryPolicy,
    ) -> bool {
        let op = HistoryOp::Read {
            room: room.to_string(),
            id,
            since: since.map(|s| (s.offset, s.epoch.unwrap_or_default().to_string())),
            policy,
        };
        self.send_op(Channel::Room(room.to_string()), Vec::new(), Some(op))
    }
}
