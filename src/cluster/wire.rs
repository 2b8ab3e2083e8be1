//! What crosses the bus: the channels (NATS subjects, Redis channels) and the envelopes.
//!
//! Deliveries travel in a compact binary envelope, one per publication per bus hop, carrying the
//! complete WebSocket frame the origin node encoded: a receiving node copies it once into its
//! own shared `Arc<[u8]>` and fans it out as a local publication, with no per-recipient work.
//! The control plane (heartbeats, session deltas, snapshots) is small and infrequent, and
//! travels as JSON for readability on the bus (`nats sub 'shardhub.ctl'`).
//!
//! Pure: bytes in, values out. Envelopes come from other nodes of the same cluster, yet they
//! are parsed as untrusted input: every length is checked, nothing recurses.

use serde::{Deserialize, Serialize};

use crate::engine::ids::SessionId;

/// A bus channel. Room and node names are hex-encoded in the channel name: NATS subject tokens
/// may not hold `.`, `*`, `>` or spaces, and room names may.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Publications and presence events of one room: only nodes with members subscribe.
    Room(String),
    /// Messages for one node: direct messages to its users, commands on its sessions.
    Node(u16),
    /// Broadcasts: every node.
    All,
    /// Heartbeats, session deltas, snapshots: every node.
    Control,
}

impl Channel {
    /// The channel's name on the bus (`.`-separated tokens, valid for NATS and Redis alike).
    pub fn name(&self) -> String {
        match self {
            Self::Room(room) => format!("shardhub.room.{}", hex(room.as_bytes())),
            Self::Node(tag) => format!("shardhub.node.{tag}"),
            Self::All => "shardhub.all".into(),
            Self::Control => "shardhub.ctl".into(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Redis keys of a room's history: its stream (one entry per publication, the entry id is
/// the offset) and its meta hash (`s`: the last offset, `e`: the epoch).
pub fn history_keys(room: &str) -> (String, String) {
    let h = hex(room.as_bytes());
    (
        format!("shardhub.history.{h}"),
        format!("shardhub.history.{h}.meta"),
    )
}

/// A delivery or a command between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data<'a> {
    /// A room publication numbered by Redis (history in Redis): written in two parts, the
    /// node's [`stored_prefix`] and the tail the history script appends (epoch, offset, frame).
    /// Every node delivers it, its origin included.
    Stored {
        /// The room.
        room: &'a str,
        /// A session that must not receive it (`exclude_self`).
        exclude: Option<SessionId>,
        /// The room's epoch.
        epoch: &'a str,
        /// The publication's offset.
        offset: u64,
        /// The frame (not stamped: each node stamps its copy).
        frame: &'a [u8],
    },
    /// A room publication (the complete frame).
    Room {
        /// The room.
        room: &'a str,
        /// The frame.
        frame: &'a [u8],
    },
    /// A `joined`/`left` event of a room.
    Presence {
        /// The room.
        room: &'a str,
        /// The frame.
        frame: &'a [u8],
    },
    /// A broadcast.
    All {
        /// The frame.
        frame: &'a [u8],
    },
    /// A direct message to a user's sessions on the receiving node.
    User {
        /// The user.
        user: &'a str,
        /// The frame.
        frame: &'a [u8],
    },
    /// A frame for one session of the receiving node.
    Session {
        /// The session.
        id: SessionId,
        /// The frame.
        frame: &'a [u8],
    },
    /// Close a session of the receiving node.
    Close {
        /// The session.
        id: SessionId,
        /// The close code.
        code: u16,
        /// The reason.
        reason: &'a str,
    },
    /// Join a session of the receiving node to a room.
    Join {
        /// The session.
        id: SessionId,
        /// The room.
        room: &'a str,
    },
    /// Take a session of the receiving node out of a room.
    Leave {
        /// The session.
        id: SessionId,
        /// The room.
        room: &'a str,
    },
    /// A receipt for an acknowledged direct message, for the sender's node.
    Receipt {
        /// The sending session.
        id: SessionId,
        /// The send's number on its shard.
        seq: u64,
        /// The session that sent the receipt.
        from: SessionId,
        /// Its user.
        user: &'a str,
    },
    /// An offline message kept on the origin node, for the node where its user's session
    /// opened (the complete `direct` frame, `"stored": true`).
    Offline {
        /// The recipient.
        user: &'a str,
        /// When it was stored, Unix ms (the receiving node keeps its age if it must store it
        /// again).
        unix_ms: u64,
        /// Its message id.
        mid: &'a str,
        /// The sending user.
        from: &'a str,
        /// The frame.
        frame: &'a [u8],
    },
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEnvelope(pub &'static str);

const VERSION: u8 = 1;

/// Writes a data envelope: `[version][kind][origin tag: u16]` then the kind's fields, names as
/// `[u8 length][bytes]`, session ids as 8 big-endian bytes, the frame last (it runs to the end).
pub fn encode(origin: u16, data: &Data<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let kind = match data {
        Data::Room { .. } => 1,
        Data::Presence { .. } => 2,
        Data::All { .. } => 3,
        Data::User { .. } => 4,
        Data::Session { .. } => 5,
        Data::Close { .. } => 6,
        Data::Join { .. } => 7,
        Data::Leave { .. } => 8,
        Data::Stored { .. } => 9,
        Data::Receipt { .. } => 10,
        Data::Offline { .. } => 11,
    };
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&origin.to_be_bytes());
    let name = |out: &mut Vec<u8>, s: &str| {
        // Names are at most 255 bytes (`max_name_bytes`).
        let b = &s.as_bytes()[..s.len().min(255)];
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    };
    match data {
        Data::Room { room, frame } | Data::Presence { room, frame } => {
            name(&mut out, room);
            out.extend_from_slice(frame);
        }
        Data::All { frame } => out.extend_from_slice(frame),
        Data::User { user, frame } => {
            name(&mut out, user);
            out.extend_from_slice(frame);
        }
        Data::Session { id, frame } => {
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(frame);
        }
        Data::Close { id, code, reason } => {
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(reason.as_bytes());
        }
        Data::Join { id, room } | Data::Leave { id, room } => {
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(room.as_bytes());
        }
        Data::Stored {
            room,
            exclude,
            epoch,
            offset,
            frame,
        } => {
            out.truncate(0);
            out.extend_from_slice(&stored_prefix(origin, room, *exclude));
            name(&mut out, epoch);
            name(&mut out, &offset.to_string());
            out.extend_from_slice(frame);
        }
        Data::Receipt {
            id,
            seq,
            from,
            user,
        } => {
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&from.0.to_be_bytes());
            out.extend_from_slice(user.as_bytes());
        }
        Data::Offline {
            user,
            unix_ms,
            mid,
            from,
            frame,
        } => {
            name(&mut out, user);
            out.extend_from_slice(&unix_ms.to_be_bytes());
            name(&mut out, mid);
            name(&mut out, from);
            out.extend_from_slice(frame);
        }
    }
    out
}

/// The node's part of a [`Data::Stored`] envelope: `[version][9][origin]`, the room as a
/// name, the excluded session (8 bytes, 0: none). The history script appends the epoch and
/// the offset (names, the offset in decimal: Lua writes it) and the frame.
pub fn stored_prefix(origin: u16, room: &str, exclude: Option<SessionId>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + room.len());
    out.extend_from_slice(&[VERSION, 9]);
    out.extend_from_slice(&origin.to_be_bytes());
    let b = &room.as_bytes()[..room.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
    out.extend_from_slice(&exclude.map_or(0, |s| s.0).to_be_bytes());
    out
}

/// Reads a data envelope: its origin node's tag and the data.
pub fn decode(bytes: &[u8]) -> Result<(u16, Data<'_>), BadEnvelope> {
    let [version, kind, a, b, rest @ ..] = bytes else {
        return Err(BadEnvelope("shorter than its header"));
    };
    if *version != VERSION {
        return Err(BadEnvelope("unknown version"));
    }
    let origin = u16::from_be_bytes([*a, *b]);
    let data = match kind {
        1 | 2 => {
            let (room, frame) = name(rest)?;
            if *kind == 1 {
                Data::Room { room, frame }
            } else {
                Data::Presence { room, frame }
            }
        }
        3 => Data::All { frame: rest },
        4 => {
            let (user, frame) = name(rest)?;
            Data::User { user, frame }
        }
        5 => {
            let (id, frame) = id(rest)?;
            Data::Session { id, frame }
        }
        6 => {
            let (id, rest) = id(rest)?;
            let (code, reason) = rest
                .split_first_chunk::<2>()
                .ok_or(BadEnvelope("short close"))?;
            Data::Close {
                id,
                code: u16::from_be_bytes(*code),
                reason: text(reason)?,
            }
        }
        7 | 8 => {
            let (id, room) = id(rest)?;
            let room = text(room)?;
            if *kind == 7 {
                Data::Join { id, room }
            } else {
                Data::Leave { id, room }
            }
        }
        9 => {
            let (room, rest) = name(rest)?;
            let (exclude, rest) = id(rest)?;
            let (epoch, rest) = name(rest)?;
            let (offset, frame) = name(rest)?;
            let offset = offset
                .parse()
                .map_err(|_| BadEnvelope("offset not a number"))?;
            Data::Stored {
                room,
                exclude: (exclude.0 != 0).then_some(exclude),
                epoch,
                offset,
                frame,
            }
        }
        10 => {
            let (sender, rest) = id(rest)?;
            let (seq, rest) = id(rest)?;
            let (from, user) = id(rest)?;
            Data::Receipt {
                id: sender,
                seq: seq.0,
                from,
                user: text(user)?,
            }
        }
        11 => {
            let (user, rest) = name(rest)?;
            let (unix_ms, rest) = id(rest)?;
            let (mid, rest) = name(rest)?;
            let (from, frame) = name(rest)?;
            Data::Offline {
                user,
                unix_ms: unix_ms.0,
                mid,
                from,
                frame,
            }
        }
        _ => return Err(BadEnvelope("unknown kind")),
    };
    Ok((origin, data))
}

/// A `[u8 length][bytes]` name, and what follows it.
fn name(rest: &[u8]) -> Result<(&str, &[u8]), BadEnvelope> {
    let (&len, rest) = rest.split_first().ok_or(BadEnvelope("missing name"))?;
    let len = usize::from(len);
    let n = rest.get(..len).ok_or(BadEnvelope("name past the end"))?;
    let n = std::str::from_utf8(n).map_err(|_| BadEnvelope("name not UTF-8"))?;
    Ok((n, &rest[len..]))
}

/// An 8-byte session id, and what follows it.
fn id(rest: &[u8]) -> Result<(SessionId, &[u8]), BadEnvelope> {
    let (id, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(BadEnvelope("short id"))?;
    Ok((SessionId(u64::from_be_bytes(*id)), rest))
}

fn text(b: &[u8]) -> Result<&str, BadEnvelope> {
    std::str::from_utf8(b).map_err(|_| BadEnvelope("text not UTF-8"))
}

/// One change to a node's sessions, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A session opened.
    Up {
        /// The session.
        session: u64,
        /// Its user.
        user: String,
    },
    /// A session ended (and left its rooms).
    Down {
        /// The session.
        session: u64,
    },
    /// A session joined a room.
    Join {
        /// The session.
        session: u64,
        /// The room.
        room: String,
    },
    /// A session left a room.
    Leave {
        /// The session.
        session: u64,
        /// The room.
        room: String,
    },
}

/// One session in a snapshot: id, user, rooms.
pub type SessionRecord = (u64, String, Vec<String>);

/// A control message. Every one names its sender, its tag and its epoch (a random number
/// drawn at startup: a node that restarts under the same name starts a new epoch, and the
/// others forget what they knew of the old one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// The sender's node name.
    pub node: String,
    /// The sender's tag (the node part of its session ids).
    pub tag: u16,
    /// The sender's epoch.
    pub epoch: u64,
    /// What it says.
    pub body: Body,
}

/// The body of a control message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Body {
    /// "I am alive", every `heartbeat` interval, with the last delta's number and counts.
    Heartbeat {
        /// The number of the last delta sent.
        seq: u64,
        /// Open sessions.
        sessions: usize,
        /// Publications the node sent to the bus so far.
        published: u64,
    },
    /// Changes since the previous delta (`seq` - 1).
    Delta {
        /// This delta's number.
        seq: u64,
        /// The changes, in order.
        ops: Vec<Op>,
    },
    /// One part of the node's whole state as of delta `seq`; `last` closes it.
    Snapshot {
        /// The delta the state includes.
        seq: u64,
        /// This part's sessions.
        sessions: Vec<SessionRecord>,
        /// Whether this is the last part.
        last: bool,
    },
    /// "Send me your snapshot": from a node that starts, or that missed a delta of `target`
    /// (`None`: everyone).
    Sync {
        /// The node asked, or everyone.
        target: Option<String>,
    },
    /// A graceful shutdown: forget me now.
    Bye,
}

impl Control {
    /// The JSON text of the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a control message (serde_json bounds its own recursion).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BadEnvelope> {
        serde_json::from_slice(bytes).map_err(|_| BadEnvelope("not a control message"))
    }
}

/// The tag of a node name: 1 to 4095, stable across restarts. Two nodes whose names share a
/// tag cannot run in one cluster; the later one refuses to start (see `bus.rs`).
pub fn tag_of(node: &str) -> u16 {
    // FNV-1a: stable across Rust versions, unlike the standard hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in node.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % 4095) as u16 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_round_trips() {
        let id = SessionId::new(9, 3, 7);
        let cases = [
            Data::Room {
                room: "lobby",
                frame: b"\x81\x02hi",
            },
            Data::Presence {
                room: "a.b c",
                frame: b"x",
            },
            Data::All { frame: b"" },
            Data::User {
                user: "J\u{fc}rgen",
                frame: b"\x82\x01\x00",
            },
            Data::Session { id, frame: b"f" },
            Data::Close {
                id,
                code: 4000,
                reason: "kicked",
            },
            Data::Join { id, room: "r" },
            Data::Leave { id, room: "r" },
            Data::Stored {
                room: "h",
                exclude: Some(id),
                epoch: "0123abcd",
                offset: 12_345,
                frame: b"\x81\x02{}",
            },
            Data::Stored {
                room: "h",
                exclude: None,
                epoch: "",
                offset: 1,
                frame: b"",
            },
            Data::Receipt {
                id,
                seq: u64::MAX,
                from: SessionId::new(1, 0, 0),
                user: "bob",
            },
            Data::Offline {
                user: "bob",
                unix_ms: 1_764_000_000_000,
                mid: "123-4",
                from: "al",
                frame: b"\x81\x02{}",
            },
        ];
        for d in cases {
            let bytes = encode(4095, &d);
            assert_eq!(decode(&bytes), Ok((4095, d.clone())), "{d:?}");
        }
    }

    #[test]
    fn channels_are_valid_subjects() {
        let room = Channel::Room("a.b c*>".into()).name();
        assert_eq!(room, "shardhub.room.612e6220632a3e");
        assert!(room.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'));
        assert_eq!(Channel::Node(17).name(), "shardhub.node.17");
    }

    #[test]
    fn control_messages_round_trip() {
        let c = Control {
            node: "n1".into(),
            tag: 5,
            epoch: 77,
            body: Body::Delta {
                seq: 3,
                ops: vec![
                    Op::Up {
                        session: 1,
                        user: "al".into(),
                    },
                    Op::Join {
                        session: 1,
                        room: "r".into(),
                    },
                ],
            },
        };
        assert_eq!(Control::from_bytes(&c.to_bytes()), Ok(c));
        assert!(Control::from_bytes(b"{\"node\":1}").is_err());
    }

    #[test]
    fn tags_are_stable_and_in_range() {
        assert_eq!(tag_of("node-a"), tag_of("node-a"));
        assert_ne!(tag_of("node-a"), tag_of("node-b"));
        for n in ["", "x", "a-very-long-node-name-indeed"] {
            assert!((1..=4095).contains(&tag_of(n)));
        }
    }

    proptest! {
        /// Any bytes from the bus decode or are refused; nothing panics.
        #[test]
        fn arbitrary_envelopes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let _ = Control::from_bytes(&bytes);
        }
    }
}
