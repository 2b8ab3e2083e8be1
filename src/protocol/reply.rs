//! Server messages of the JSON protocol, written straight into a frame buffer.
//!
//! Each function appends one complete JSON object to `out` (usually a shard's
//! [`FrameBuf`](super::frame::FrameBuf)). The `data` and `id` the client sent are re-serialized
//! from the parsed DOM, once per message, not once per recipient.

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

/// Appends `s` as a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a parsed value as JSON.
pub fn write_value(out: &mut Vec<u8>, v: &Value<'_>) {
    // Writing into a Vec cannot fail.
    let _ = v.write(out);
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Starts an object with its `type` and, when the request had one, its `id`.
fn head(out: &mut Vec<u8>, kind: &str, id: Option<&Value<'_>>) {
    out.extend_from_slice(b"{\"type\":");
    write_str(out, kind);
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        write_value(out, id);
    }
}

fn field_str(out: &mut Vec<u8>, key: &str, v: &str) {
    out.push(b',');
    write_str(out, key);
    out.push(b':');
    write_str(out, v);
}

fn field_u64(out: &mut Vec<u8>, key: &str, v: u64) {
    out.push(b',');
    write_str(out, key);
    out.push(b':');
    write_u64(out, v);
}

fn field_session(out: &mut Vec<u8>, session: u64) {
    // Decimal string: session ids exceed JavaScript's 2^53 integers.
    out.extend_from_slice(b",\"session\":\"");
    write_u64(out, session);
    out.push(b'"');
}

/// `{"type":"welcome","session":"…","user":"…","shard":N}`
pub fn welcome(out: &mut Vec<u8>, session: u64, user: &str, shard: usize) {
    head(out, "welcome", None);
    field_session(out, session);
    field_str(out, "user", user);
    field_u64(out, "shard", shard as u64);
    out.push(b'}');
}

/// Extra fields of an `ack`.
#[derive(Debug, Clone, Copy)]
pub enum Ack<'a> {
    /// A join, with the member count after it.
    Join {
        /// The room.
        room: &'a str,
        /// Members after the join.
        members: usize,
        /// The room's stream position (`offset`, `epoch`), when it has one.
        position: Option<(u64, &'a str)>,
        /// Whether the publications after the client's `recover` position follow (only when
        /// it asked).
        recovered: Option<bool>,
    },
    /// A leave.
    Leave {
        /// The room.
        room: &'a str,
    },
    /// A publish.
    Publish {
        /// The room.
        room: &'a str,
    },
    /// A direct message, with the number of sessions it reached.
    Send {
        /// The user.
        to: &'a str,
        /// Sessions the message went to.
        sessions: usize,
        /// Its message id, when it has one (`ack` or `store` asked).
        mid: Option<&'a str>,
        /// Stored for the offline user: `Some(evicted)`, the user's older messages pushed out.
        stored: Option<usize>,
    },
    /// A broadcast.
    Broadcast,
}

/// `{"type":"ack","id":…,"op":"…",…}`
pub fn ack(out: &mut Vec<u8>, id: Option<&Value<'_>>, what: Ack<'_>) {
    head(out, "ack", id);
    match what {
        Ack::Join {
            room,
            members,
            position,
            recovered,
        } => {
            field_str(out, "op", "join");
            field_str(out, "room", room);
            field_u64(out, "members", members as u64);
            if let Some((offset, epoch)) = position {
                field_u64(out, "offset", offset);
                field_str(out, "epoch", epoch);
            }
            if let Some(r) = recovered {
                out.extend_from_slice(if r {
                    b",\"recovered\":true"
                } else {
                    b",\"recovered\":false"
                });
            }
        }
        Ack::Leave { room } => {
            field_str(out, "op", "leave");
            field_str(out, "room", room);
        }
        Ack::Publish { room } => {
            field_str(out, "op", "publish");
            field_str(out, "room", room);
        }
        Ack::Send {
            to,
            sessions,
            mid,
            stored,
        } => {
            field_str(out, "op", "send");
            field_str(out, "to", to);
            field_u64(out, "sessions", sessions as u64);
            if let Some(mid) = mid {
                field_str(out, "mid", mid);
            }
            if let Some(evicted) = stored {
                out.extend_from_slice(b",\"stored\":true");
                field_u64(out, "evicted", evicted as u64);
            }
        }
        Ack::Broadcast => field_str(out, "op", "broadcast"),
    }
    out.push(b'}');
}

/// `{"type":"error","id":…,"code":"…","message":"…"}` plus one optional context field
/// (`room`, `to` or `op`).
pub fn error(
    out: &mut Vec<u8>,
    id: Option<&Value<'_>>,
    code: &str,
    message: &str,
    context: Option<(&str, &str)>,
) {
    head(out, "error", id);
    field_str(out, "code", code);
    field_str(out, "message", message);
    if let Some((k, v)) = context {
        field_str(out, k, v);
    }
    out.push(b'}');
}

/// A delivery: `message` (room), `direct` or `broadcast`, with the sender and the data.
pub fn delivery(
    out: &mut Vec<u8>,
    kind: &str,
    room: Option<&str>,
    from: &str,
    session: u64,
    data: &Value<'_>,
) {
    head(out, kind, None);
    if let Some(room) = room {
        field_str(out, "room", room);
    }
    field_str(out, "from", from);
    field_session(out, session);
    out.extend_from_slice(b",\"data\":");
    write_value(out, data);
    out.push(b'}');
}

/// What a `direct` delivery carries beyond the plain one (`docs/protocol.md`, "Acknowledged
/// and offline direct messages").
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectMark<'a> {
    /// The message id (`"mid"`), for receipts and deduplication.
    pub mid: Option<&'a str>,
    /// The sender waits for a receipt (`"ack": true`): answer `received`.
    pub ack: bool,
    /// Kept while the user was offline: when it was sent, Unix ms (`"stored": true, "ts"`).
    pub stored_at: Option<u64>,
}

/// A `direct` delivery: `{"type":"direct","from":…,"session":…,["mid","ack","stored","ts"],
/// "data":…}`.
pub fn direct(out: &mut Vec<u8>, from: &str, session: u64, data: &Value<'_>, m: DirectMark<'_>) {
    direct_head(out, from, session, m);
    write_value(out, data);
    out.push(b'}');
}

/// A `direct` delivery up to its `"data":`; the caller appends the data and the closing `}`.
pub fn direct_head(out: &mut Vec<u8>, from: &str, session: u64, m: DirectMark<'_>) {
    head(out, "direct", None);
    field_str(out, "from", from);
    field_session(out, session);
    if let Some(mid) = m.mid {
        field_str(out, "mid", mid);
    }
    if m.ack {
        out.extend_from_slice(b",\"ack\":true");
    }
    if let Some(ts) = m.stored_at {
        out.extend_from_slice(b",\"stored\":true");
        field_u64(out, "ts", ts);
    }
    out.extend_from_slice(b",\"data\":");
}

/// The outcome of an acknowledged send, once every session it reached sent a receipt or the
/// timeout passed: `{"type":"delivered","id":…,"mid":"…","to":"…","sessions":N,"reached":M}`
/// with N > 0 receipts, else `{"type":"not_delivered",…,"reached":M}`. `id` is the request's,
/// kept as the JSON it was.
pub fn delivered(
    out: &mut Vec<u8>,
    id: Option<&[u8]>,
    mid: &str,
    to: &str,
    acked: usize,
    reached: usize,
) {
    out.extend_from_slice(b"{\"type\":");
    write_str(
        out,
        if acked > 0 {
            "delivered"
        } else {
            "not_delivered"
        },
    );
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id);
    }
    field_str(out, "mid", mid);
    field_str(out, "to", to);
    if acked > 0 {
        field_u64(out, "sessions", acked as u64);
    }
    field_u64(out, "reached", reached as u64);
    out.push(b'}');
}

/// `{"type":"joined"|"left","room":"…","user":"…","session":"…"}`
pub fn presence(out: &mut Vec<u8>, joined: bool, room: &str, user: &str, session: u64) {
    head(out, if joined { "joined" } else { "left" }, None);
    field_str(out, "room", room);
    field_str(out, "user", user);
    field_session(out, session);
    out.push(b'}');
}

/// `{"type":"presence","room":"…","members":N}`: the member count of a room too large for
/// `joined`/`left` events.
pub fn presence_count(out: &mut Vec<u8>, room: &str, members: usize) {
    head(out, "presence", None);
    field_str(out, "room", room);
    field_u64(out, "members", members as u64);
    out.push(b'}');
}

/// `{"type":"members","id":…,"room":"…","members":[{"user":"…","session":"…"},…]}`
pub fn members<'a>(
    out: &mut Vec<u8>,
    id: Option<&Value<'_>>,
    room: &str,
    list: impl IntoIterator<Item = (u64, &'a str)>,
) {
    head(out, "members", id);
    field_str(out, "room", room);
    out.extend_from_slice(b",\"members\":[");
    for (i, (session, user)) in list.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"user\":");
        write_str(out, user);
        field_session(out, session);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// `{"type":"pong","id":…}`
pub fn pong(out: &mut Vec<u8>, id: Option<&Value<'_>>) {
    head(out, "pong", id);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(f: impl FnOnce(&mut Vec<u8>)) -> serde_json::Value {
        let mut out = Vec::new();
        f(&mut out);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn strings_escape_everything_json_requires() {
        let nasty = "quote\" back\\ nl\n tab\t bell\u{7} é 😀";
        let v = json(|o| write_str(o, nasty));
        assert_eq!(v, serde_json::Value::String(nasty.into()));
    }

    #[test]
    fn replies_are_valid_json_with_the_documented_fields() {
        let mut raw = br#"{"id":"m7","data":{"t":[1,2.5,"x"]}}"#.to_vec();
        let v = simd_json::to_borrowed_value(&mut raw).unwrap();
        let (id, data) = (v.get("id"), v.get("data").unwrap());

        let w = json(|o| welcome(o, 1 << 60, "alice", 1));
        assert_eq!(w["session"], "1152921504606846976");
        let a = json(|o| {
            ack(
                o,
                id,
                Ack::Send {
                    to: "bob",
                    sessions: 2,
                    mid: None,
                    stored: None,
                },
            )
        });
        assert_eq!(
            a,
            serde_json::json!({"type":"ack","id":"m7","op":"send","to":"bob","sessions":2})
        );
        let e = json(|o| {
            error(
                o,
                None,
                "not_online",
                "user carol is not online",
                Some(("to", "carol")),
            )
        });
        assert_eq!(e["code"], "not_online");
        assert_eq!(e["to"], "carol");
        let d = json(|o| delivery(o, "message", Some("lobby"), "al", 5, data));
        assert_eq!(
            d,
            serde_json::json!({"type":"message","room":"lobby","from":"al","session":"5","data":{"t":[1,2.5,"x"]}})
        );
        let m = json(|o| members(o, id, "r", [(1, "a"), (2, "b")]));
        assert_eq!(
            m["members"][1],
            serde_json::json!({"user":"b","session":"2"})
        );
        assert_eq!(json(|o| pong(o, None)), serde_json::json!({"type":"pong"}));
        assert_eq!(json(|o| presence(o, false, "r", "u", 3))["type"], "left");
    }
}
