//! The invariants of the hub protocol's parsers, checked on whatever they accept or refuse.
//!
//! Each check restates a rule from `docs/protocol.md` independently of the code under test, or
//! hands the server's output to a strict second parser (serde_json), so a bug has to be made
//! twice, the same way, to slip through:
//!
//! * a name the server accepts is 1..=max bytes with no control character, and survives
//!   `reply::write_str` and a strict parse unchanged;
//! * every reply the server would write about a request (acks, errors, pongs, presence,
//!   deliveries echoing `id` and `data`) is valid JSON;
//! * a DOM the server built nests at most `max_depth` levels (measured without recursion);
//! * a binary frame is accepted exactly when its header is well formed, and routes where its
//!   bytes say.

use shardhub::protocol::envelope::{
    check_name, parse_binary, write_binary_delivery, BadRequest, BinaryKind, BinaryOp, Envelope,
    Request,
};
use shardhub::protocol::reply::{self, Ack};
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

/// A session id as large as they come: replies must not depend on it being small.
const SESSION: u64 = u64::MAX;

/// Parses `bytes` as one JSON value with serde_json, without its recursion limit (the server
/// allows up to 1,024 levels and a delivery adds one). Callers bound the depth first: serde_json
/// recurses.
pub fn strict_parse(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v = serde_json::Value::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Asserts that `out` is one valid JSON value and returns it.
pub fn assert_json(out: &[u8], what: &str) -> serde_json::Value {
    strict_parse(out).unwrap_or_else(|e| {
        panic!(
            "{what} is not valid JSON ({e}): {:?}",
            String::from_utf8_lossy(out)
        )
    })
}

/// The naming rule of `docs/protocol.md`, restated: 1..=max bytes of UTF-8 with no C0 control,
/// DEL or C1 control.
pub fn name_ok(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && !name
            .chars()
            .any(|c| matches!(u32::from(c), 0..=0x1f | 0x7f..=0x9f))
}

/// A name the server accepted: valid by the rule, by `check_name`, and unchanged through
/// `reply::write_str` and a strict parse.
pub fn assert_name_accepted(what: &str, name: &str, max: usize) {
    assert!(
        name_ok(name, max),
        "{what} {name:?} accepted against the rule (max {max})"
    );
    assert_eq!(check_name(what, name, max), Ok(()), "{what} {name:?}");
    let mut out = Vec::new();
    reply::write_str(&mut out, name);
    let back = assert_json(&out, "a written name");
    assert_eq!(back.as_str(), Some(name), "{what} does not round-trip");
}

/// The depth of a DOM, measured with an explicit stack so that a DOM deeper than it should be
/// is reported, not turned into a stack overflow of the checker.
pub fn dom_depth(v: &Value<'_>) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        if let Some(a) = v.as_array() {
            max = max.max(d);
            stack.extend(a.iter().map(|c| (c, d + 1)));
        } else if let Some(o) = v.as_object() {
            max = max.max(d);
            stack.extend(o.values().map(|c| (c, d + 1)));
        }
    }
    max
}

/// Writes every reply the server could send about an accepted request (the id echoed, names in
/// context fields, `data` in deliveries) and checks each is valid JSON that says what it should.
pub fn assert_replies_valid(env: &Envelope<'_>, max_name: usize) {
    let id = env.id;
    if let Some(id) = id {
        assert!(id.is_str() || id.is_number(), "id {id:?} accepted");
    }
    let mut out = Vec::new();
    let mut check = |what: &str, write: &dyn Fn(&mut Vec<u8>)| {
        out.clear();
        write(&mut out);
        let v = assert_json(&out, what);
        if let Some(id) = id {
            if v.get("id").is_some() {
                let mut want = Vec::new();
                reply::write_value(&mut want, id);
                assert_eq!(
                    Some(&assert_json(&want, "the id")),
                    v.get("id"),
                    "{what}: the id is echoed"
                );
            }
        }
        v
    };
    check("a pong", &|o| reply::pong(o, id));
    let unknown = format!("unknown request type {}", env.kind);
    let v = check("an unknown_type error", &|o| {
        reply::error(o, id, "unknown_type", &unknown, Some(("op", env.kind)))
    });
    assert_eq!(v["op"].as_str(), Some(env.kind), "the type round-trips");
    match env.request {
        Request::Join { room, recover } => {
            assert_name_accepted("room", room, max_name);
            let epoch = recover.map_or("e", |r| r.epoch);
            check("a join ack", &|o| {
                reply::ack(
                    o,
                    id,
                    Ack::Join {
                        room,
                        members: usize::MAX,
                        position: Some((u64::MAX, epoch)),
                        recovered: recover.map(|_| true),
                    },
                )
            });
            check("a presence event", &|o| {
                reply::presence(o, true, room, room, SESSION)
            });
            check("a presence count", &|o| {
                reply::presence_count(o, room, usize::MAX)
            });
            check("a forbidden error", &|o| {
                reply::error(o, id, "forbidden", "no", Some(("room", room)))
            });
        }
        Request::Leave { room } => {
            assert_name_accepted("room", room, max_name);
            check("a leave ack", &|o| reply::ack(o, id, Ack::Leave { room }));
            check("a presence event", &|o| {
                reply::presence(o, false, room, room, SESSION)
            });
        }
        Request::Publish { room, data, .. } => {
            assert_name_accepted("room", room, max_name);
            check("a publish ack", &|o| {
                reply::ack(o, id, Ack::Publish { room })
            });
            check("a room delivery", &|o| {
                reply::delivery(o, "message", Some(room), room, SESSION, data)
            });
        }
        Request::Send { to, data, .. } => {
            assert_name_accepted("to", to, max_name);
            check("a send ack", &|o| {
                reply::ack(
                    o,
                    id,
                    Ack::Send {
                        to,
                        sessions: usize::MAX,
                        mid: Some("1-2"),
                        stored: Some(3),
                    },
                )
            });
            check("a direct delivery", &|o| {
                reply::delivery(o, "direct", None, to, SESSION, data)
            });
            check("a stored direct delivery", &|o| {
                let mark = reply::DirectMark {
                    mid: Some("1-2"),
                    ack: true,
                    stored_at: Some(u64::MAX),
                };
                reply::direct(o, to, SESSION, data, mark)
            });
            // `delivered` echoes the id as the JSON it was.
            let mut raw = Vec::new();
            if let Some(id) = id {
                reply::write_value(&mut raw, id);
            }
            check("a delivered report", &|o| {
                reply::delivered(o, id.map(|_| &raw[..]), "1-2", to, 1, 2)
            });
            check("a not_online error", &|o| {
                reply::error(o, id, "not_online", "offline", Some(("to", to)))
            });
        }
        Request::Broadcast { data, .. } => {
            check("a broadcast ack", &|o| reply::ack(o, id, Ack::Broadcast));
            check("a broadcast delivery", &|o| {
                reply::delivery(o, "broadcast", None, "u", SESSION, data)
            });
        }
        Request::Members { room } => {
            assert_name_accepted("room", room, max_name);
            let v = check("a members reply", &|o| {
                reply::members(o, id, room, [(SESSION, room), (0, room)])
            });
            assert_eq!(v["members"][1]["user"].as_str(), Some(room));
        }
        Request::Received { mid } => {
            check("a receipt's error", &|o| {
                reply::error(o, id, "bad_request", mid, Some(("mid", mid)))
            });
        }
        Request::Ping | Request::Other => {}
    }
}

/// The `bad_request` error the server sends for a refused request (echoing the id when it is a
/// string or a number) is valid JSON.
pub fn assert_refusal_valid(v: Option<&Value<'_>>, err: &BadRequest) {
    let id = v
        .and_then(|v| v.get("id"))
        .filter(|i| i.is_str() || i.is_number());
    let mut out = Vec::new();
    reply::error(&mut out, id, "bad_request", &err.0, None);
    let r = assert_json(&out, "a bad_request error");
    assert_eq!(r["message"].as_str(), Some(err.0.as_str()));
}

/// Parses a binary frame and checks the result against a model of the header format
/// (`[op][target length][target][payload]`, ops 1-5, a valid name for ops 1, 2 and 5), then
/// encodes the delivery its recipients would get and decodes it back.
pub fn check_binary(frame: &[u8], max_name: usize) {
    let model = match frame {
        [op @ 1..=5, len, rest @ ..] if rest.len() >= usize::from(*len) => {
            let (target, payload) = rest.split_at(usize::from(*len));
            std::str::from_utf8(target)
                .ok()
                .filter(|t| *op == 3 || *op == 4 || name_ok(t, max_name))
                .map(|t| (*op, t, payload))
        }
        _ => None,
    };
    let got = parse_binary(frame, max_name);
    let (op, target, payload) = match (model, got) {
        (None, Err(e)) => return assert_refusal_valid(None, &e),
        (Some(m), Ok(r)) => {
            assert_eq!((r.target, r.payload), (m.1, m.2), "binary routing");
            let want = match m.0 {
                1 => BinaryOp::Publish {
                    exclude_self: false,
                },
                5 => BinaryOp::Publish { exclude_self: true },
                2 => BinaryOp::Send,
                3 => BinaryOp::Broadcast {
                    exclude_self: false,
                },
                _ => BinaryOp::Broadcast { exclude_self: true },
            };
            assert_eq!(r.op, want);
            (r.op, r.target, r.payload)
        }
        (m, r) => panic!("binary frame {frame:?}: model {m:?}, parser {r:?}"),
    };
    let kind = match op {
        BinaryOp::Publish { .. } => BinaryKind::Room,
        BinaryOp::Send => BinaryKind::Direct,
        BinaryOp::Broadcast { .. } => BinaryKind::Broadcast,
    };
    // A broadcast's target is ignored (and never sent on); the others are names.
    if !matches!(op, BinaryOp::Broadcast { .. }) {
        assert_name_accepted("binary target", target, max_name);
    }
    let mut out = Vec::new();
    write_binary_delivery(&mut out, kind, target, target, payload);
    let [k, n, rest @ ..] = &out[..] else {
        panic!("short delivery")
    };
    let (room, rest) = rest.split_at(usize::from(*n));
    let [m, rest @ ..] = rest else {
        panic!("no sender length")
    };
    let (from, data) = rest.split_at(usize::from(*m));
    assert_eq!(*k, kind as u8);
    assert_eq!(
        (room, from, data),
        (target.as_bytes(), target.as_bytes(), payload)
    );
}
