//! Client requests: the JSON envelope of text frames and the header of binary frames.
//!
//! Parsing is a pure function from bytes to a typed [`Request`]; it never touches a session.
//! Text frames are parsed with simd-json into a borrowed DOM (the shard keeps the scratch buffer
//! and simd-json's buffers, so steady-state parsing allocates only the DOM nodes). The `data`
//! of a request is kept as a value and re-serialized once into the outgoing frame, however many
//! recipients it has.

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

/// A parsed request, borrowing from the DOM.
#[derive(Debug)]
pub enum Request<'v> {
    /// Join a room.
    Join {
        /// The room.
        room: &'v str,
        /// `"recover": {"offset": N, "epoch": "E"}`: the last position the client got.
        recover: Option<Recover<'v>>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: &'v str,
    },
    /// Publish to a joined room.
    Publish {
        /// The room.
        room: &'v str,
        /// The payload, any JSON.
        data: &'v Value<'v>,
        /// Whether the sender is left out.
        exclude_self: bool,
    },
    /// Send to every session of a user.
    Send {
        /// The user id.
        to: &'v str,
        /// The payload, any JSON.
        data: &'v Value<'v>,
        /// `"ack": true`: report `delivered` / `not_delivered` from the recipients' receipts.
        ack: bool,
        /// `"store": true`: keep it if the user is offline.
        store: bool,
        /// `"timeout_ms"`: how long to wait for receipts (1..=300000; only with `ack`).
        timeout_ms: Option<u64>,
    },
    /// A receipt for an acknowledged direct message.
    Received {
        /// The message id the `direct` carried.
        mid: &'v str,
    },
    /// Send to every session on the server.
    Broadcast {
        /// The payload, any JSON.
        data: &'v Value<'v>,
        /// Whether the sender is left out.
        exclude_self: bool,
    },
    /// List a room's members.
    Members {
        /// The room.
        room: &'v str,
    },
    /// Application-level ping.
    Ping,
    /// A type the built-in protocol does not know; application handlers may.
    Other,
}

/// A client's last stream position in a room (`join`'s `recover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recover<'v> {
    /// The last offset it received.
    pub offset: u64,
    /// The epoch it was received in.
    pub epoch: &'v str,
}

/// The `recover` field of a join: absent, or an object with a non-negative integer `offset`
/// and a string `epoch`.
fn recover<'v>(v: &'v Value<'v>) -> Result<Option<Recover<'v>>, BadRequest> {
    let Some(r) = v.get("recover") else {
        return Ok(None);
    };
    let shape = || bad("field recover must be {\"offset\": <integer >= 0>, \"epoch\": <string>}");
    if !r.is_object() {
        return Err(shape());
    }
    let offset = r.get("offset").and_then(|o| o.as_u64()).ok_or_else(shape)?;
    let epoch = r.get("epoch").and_then(|e| e.as_str()).ok_or_else(shape)?;
    if epoch.len() > 64 {
        return Err(bad(
            "field recover.epoch is longer than any epoch (64 bytes)",
        ));
    }
    Ok(Some(Recover { offset, epoch }))
}

/// A request with the envelope fields every request shares.
#[derive(Debug)]
pub struct Envelope<'v> {
    /// The `type` field.
    pub kind: &'v str,
    /// The `id` field, a string or a number, echoed back in the reply.
    pub id: Option<&'v Value<'v>>,
    /// The typed request.
    pub request: Request<'v>,
}

/// Why a text frame is not a valid request. The message goes into a `bad_request` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(msg.into())
}

/// Checks a room name or user id: 1 to `max` bytes of UTF-8 with no control character
/// (U+0000-U+001F, U+007F-U+009F). Names are compared exactly as given, byte for byte: no case
/// folding, trimming or Unicode normalization (see docs/protocol.md, "Names").
pub fn check_name(what: &str, name: &str, max: usize) -> Result<(), BadRequest> {
    if name.is_empty() {
        Err(bad(format!("{what} must not be empty")))
    } else if name.len() > max {
        Err(bad(format!("{what} is longer than {max} bytes")))
    } else if name.chars().any(char::is_control) {
        Err(bad(format!("{what} must not contain control characters")))
    } else {
        Ok(())
    }
}

/// Parses a text frame's bytes (in place: simd-json unescapes into the buffer) into a DOM.
///
/// The text passes [`json::check`](super::json::check) first, so the DOM nests at most
/// `max_depth` levels and its strings are exactly what the client escaped.
pub fn parse_value<'b>(
    bytes: &'b mut [u8],
    buffers: &mut simd_json::Buffers,
    max_depth: usize,
) -> Result<Value<'b>, BadRequest> {
    super::json::check(bytes, max_depth).map_err(|e| bad(e.to_string()))?;
    simd_json::to_borrowed_value_with_buffers(bytes, buffers).map_err(|e| bad(malformed(&e)))
}

/// What a client is told about JSON the parser refused: where, not the parser's internals.
pub fn malformed(e: &simd_json::Error) -> String {
    format!("malformed JSON near byte {}", e.index())
}

/// Turns a DOM into a request. `max_name` bounds room names and user ids.
pub fn parse_envelope<'v>(v: &'v Value<'v>, max_name: usize) -> Result<Envelope<'v>, BadRequest> {
    if !v.is_object() {
        return Err(bad("a request must be a JSON object"));
    }
    let kind = match v.get("type") {
        Some(t) => t
            .as_str()
            .ok_or_else(|| bad("field type must be a string"))?,
        None => return Err(bad("missing field type")),
    };
    let id = v.get("id");
    if let Some(id) = id {
        if !(id.is_str() || id.is_number()) {
            return Err(bad("field id must be a string or a number"));
        }
    }
    let name = |field: &'static str| -> Result<&'v str, BadRequest> {
        let s = v
            .get(field)
            .ok_or_else(|| bad(format!("missing field {field}")))?
            .as_str()
            .ok_or_else(|| bad(format!("field {field} must be a string")))?;
        check_name(field, s, max_name)?;
        Ok(s)
    };
    let data = || v.get("data").ok_or_else(|| bad("missing field data"));
    let exclude_self = || match v.get("exclude_self") {
        None => Ok(false),
        Some(b) => b
            .as_bool()
            .ok_or_else(|| bad("field exclude_self must be a boolean")),
    };
    let request =
        match kind {
            "join" => Request::Join {
                room: name("room")?,
                recover: recover(v)?,
            },
            "leave" => Request::Leave {
                room: name("room")?,
            },
            "publish" => Request::Publish {
                room: name("room")?,
                data: data()?,
                exclude_self: exclude_self()?,
            },
            "send" => {
                let flag = |field: &str| match v.get(field) {
                    None => Ok(false),
                    Some(b) => b
                        .as_bool()
                        .ok_or_else(|| bad(format!("field {field} must be a boolean"))),
                };
                let ack = flag("ack")?;
                let timeout_ms =
                    match v.get("timeout_ms") {
                        None => None,
                        Some(t) => {
                            let max = crate::config::MAX_ACK_TIMEOUT.as_millis() as u64;
                            let ms = t.as_u64().filter(|ms| (1..=max).contains(ms)).ok_or_else(
                                || bad(format!("field timeout_ms must be an integer in 1..={max}")),
                            )?;
                            if !ack {
                                return Err(bad("field timeout_ms needs \"ack\": true"));
                            }
                            Some(ms)
                        }
                    };
                Request::Send {
                    to: name("to")?,
                    data: data()?,
                    ack,
                    store: flag("store")?,
                    timeout_ms,
                }
            }
            "received" => {
                let mid = v
                    .get("mid")
                    .ok_or_else(|| bad("missing field mid"))?
                    .as_str()
                    .ok_or_else(|| bad("field mid must be a string"))?;
                Request::Received { mid }
            }
            "broadcast" => Request::Broadcast {
                data: data()?,
                exclude_self: exclude_self()?,
            },
            "members" => Request::Members {
                room: name("room")?,
            },
            "ping" => Request::Ping,
            _ => Request::Other,
        };
    Ok(Envelope { kind, id, request })
}

/// Where a binary frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// To a room the sender joined (op 1, or 5 without the sender).
    Publish {
        /// Whether the sender is left out.
        exclude_self: bool,
    },
    /// To every session of a user (op 2).
    Send,
    /// To everyone (op 3, or 4 without the sender).
    Broadcast {
        /// Whether the sender is left out.
        exclude_self: bool,
    },
}

/// A binary frame's header and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryRequest<'a> {
    /// The operation.
    pub op: BinaryOp,
    /// Room or user; empty for broadcasts.
    pub target: &'a str,
    /// The bytes to deliver.
    pub payload: &'a [u8],
}

/// Recipient-side kind byte of a binary delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BinaryKind {
    /// A room message.
    Room = 1,
    /// A direct message.
    Direct = 2,
    /// A broadcast.
    Broadcast = 3,
}

/// Parses a binary frame: `[op][target length][target][payload]`.
pub fn parse_binary(frame: &[u8], max_name: usize) -> Result<BinaryRequest<'_>, BadRequest> {
    let [op, len, rest @ ..] = frame else {
        return Err(bad("binary frame shorter than its 2-byte header"));
    };
    let len = *len as usize;
    if rest.len() < len {
        return Err(bad("binary target runs past the end of the frame"));
    }
    let (target, payload) = rest.split_at(len);
    let target =
        std::str::from_utf8(target).map_err(|_| bad("binary target is not valid UTF-8"))?;
    let op = match op {
        1 => BinaryOp::Publish {
            exclude_self: false,
        },
        5 => BinaryOp::Publish { exclude_self: true },
        2 => BinaryOp::Send,
        3 => BinaryOp::Broadcast {
            exclude_self: false,
        },
        4 => BinaryOp::Broadcast { exclude_self: true },
        other => return Err(bad(format!("unknown binary op {other}"))),
    };
    match op {
        BinaryOp::Broadcast { .. } => {}
        BinaryOp::Publish { .. } => check_name("room", target, max_name)?,
        BinaryOp::Send => check_name("to", target, max_name)?,
    }
    Ok(BinaryRequest {
        op,
        target,
        payload,
    })
}

/// Writes a binary delivery: `[kind][room length][room][sender length][sender][payload]`.
/// Names longer than 255 bytes cannot occur: they are bounded by `max_name_bytes` (at most 255).
pub fn write_binary_delivery(
    out: &mut Vec<u8>,
    kind: BinaryKind,
    room: &str,
    from: &str,
    payload: &[u8],
) {
    let room = &room.as_bytes()[..room.len().min(255)];
    let from = &from.as_bytes()[..from.len().min(255)];
    out.push(kind as u8);
    out.push(room.len() as u8);
    out.extend_from_slice(room);
    out.push(from.len() as u8);
    out.extend_from_slice(from);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<String, BadRequest> {
        let mut b = text.as_bytes().to_vec();
        let mut bufs = simd_json::Buffers::default();
        let v = parse_value(&mut b, &mut bufs, 64)?;
        let e = parse_envelope(&v, 128)?;
        Ok(format!("{:?}", e.request)
            .split([' ', '{'])
            .next()
            .unwrap_or("")
            .to_string())
    }

    #[test]
    fn every_built_in_request_parses() {
        assert_eq!(parse(r#"{"type":"join","room":"a"}"#).unwrap(), "Join");
        assert_eq!(
            parse(r#"{"type":"leave","room":"a","id":3}"#).unwrap(),
            "Leave"
        );
        assert_eq!(
            parse(r#"{"type":"publish","room":"a","data":{"x":[1]}}"#).unwrap(),
            "Publish"
        );
        assert_eq!(
            parse(r#"{"type":"send","to":"bob","data":"hi"}"#).unwrap(),
            "Send"
        );
        assert_eq!(
            parse(r#"{"type":"broadcast","data":1,"exclude_self":true}"#).unwrap(),
            "Broadcast"
        );
        assert_eq!(
            parse(r#"{"type":"members","room":"a"}"#).unwrap(),
            "Members"
        );
        assert_eq!(parse(r#"{"type":"ping","id":"x"}"#).unwrap(), "Ping");
        assert_eq!(
            parse(r#"{"type":"send","to":"b","data":1,"ack":true,"store":false,"timeout_ms":9}"#)
                .unwrap(),
            "Send"
        );
        assert_eq!(
            parse(r#"{"type":"received","mid":"1-2"}"#).unwrap(),
            "Received"
        );
        assert_eq!(parse(r#"{"type":"echo","text":"x"}"#).unwrap(), "Other");
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("{", "malformed JSON"),
            ("[1,2]", "must be a JSON object"),
            (r#"{"room":"a"}"#, "missing field type"),
            (r#"{"type":7}"#, "type must be a string"),
            (r#"{"type":"join"}"#, "missing field room"),
            (r#"{"type":"join","room":""}"#, "room must not be empty"),
            (r#"{"type":"join","room":5}"#, "room must be a string"),
            (r#"{"type":"publish","room":"a"}"#, "missing field data"),
            (
                r#"{"type":"ping","id":{}}"#,
                "id must be a string or a number",
            ),
            (
                r#"{"type":"broadcast","data":1,"exclude_self":"yes"}"#,
                "exclude_self must be a boolean",
            ),
            (
                r#"{"type":"send","to":"b","data":1,"ack":1}"#,
                "ack must be a boolean",
            ),
            (
                r#"{"type":"send","to":"b","data":1,"store":"yes"}"#,
                "store must be a boolean",
            ),
            (
                r#"{"type":"send","to":"b","data":1,"ack":true,"timeout_ms":0}"#,
                "timeout_ms must be an integer in 1..=300000",
            ),
            (
                r#"{"type":"send","to":"b","data":1,"ack":true,"timeout_ms":1.5}"#,
                "timeout_ms must be an integer",
            ),
            (
                r#"{"type":"send","to":"b","data":1,"timeout_ms":10}"#,
                "timeout_ms needs",
            ),
            (r#"{"type":"received"}"#, "missing field mid"),
            (r#"{"type":"received","mid":7}"#, "mid must be a string"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.0.contains(want), "{text}: {err} should mention {want}");
        }
        let long = format!(r#"{{"type":"join","room":"{}"}}"#, "r".repeat(129));
        assert!(parse(&long).unwrap_err().0.contains("longer than 128"));
    }

    #[test]
    fn binary_headers_route_and_reject() {
        let f = [1u8, 3, b'a', b'b', b'c', 9, 9];
        let r = parse_binary(&f, 128).unwrap();
        assert_eq!(
            r.op,
            BinaryOp::Publish {
                exclude_self: false
            }
        );
        assert_eq!((r.target, r.payload), ("abc", &[9u8, 9][..]));
        assert_eq!(
            parse_binary(&[3, 0], 128).unwrap().op,
            BinaryOp::Broadcast {
                exclude_self: false
            }
        );
        assert!(parse_binary(&[1], 128).is_err());
        assert!(parse_binary(&[1, 5, b'a'], 128).is_err());
        assert!(parse_binary(&[9, 0], 128).is_err());
        assert!(
            parse_binary(&[2, 0, 1, 2], 128).is_err(),
            "a send needs a user"
        );
        assert!(parse_binary(&[1, 2, 0xff, 0xfe], 128).is_err());
    }

    #[test]
    fn binary_deliveries_carry_room_and_sender() {
        let mut out = Vec::new();
        write_binary_delivery(&mut out, BinaryKind::Room, "lobby", "al", b"xyz");
        assert_eq!(out, b"\x01\x05lobby\x02alxyz");
    }

    proptest! {
        /// Arbitrary bytes never panic the parsers; they parse or give a reason.
        #[test]
        fn arbitrary_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = bytes.clone();
            let mut bufs = simd_json::Buffers::default();
            if let Ok(v) = parse_value(&mut b, &mut bufs, 64) {
                let _ = parse_envelope(&v, 16);
            }
            let _ = parse_binary(&bytes, 16);
        }

        /// Envelopes built from arbitrary field values parse or are rejected, never panic.
        #[test]
        fn arbitrary_envelopes_never_panic(
            kind in prop_oneof![Just("join".to_string()), Just("publish".to_string()), Just("send".to_string()), Just("broadcast".to_string()), ".{0,8}"],
            room in proptest::option::of(".{0,20}"),
            data in proptest::option::of(prop_oneof![Just("null".to_string()), "[1-9][0-9]{0,4}", Just("{\"a\":[1,{}]}".to_string())]),
            id in proptest::option::of(prop_oneof![Just("1".to_string()), Just("\"x\"".to_string()), Just("[]".to_string())]),
        ) {
            let mut fields = vec![format!("\"type\":{}", serde_json::to_string(&kind).unwrap())];
            if let Some(r) = &room { fields.push(format!("\"room\":{}", serde_json::to_string(r).unwrap())); fields.push(format!("\"to\":{}", serde_json::to_string(r).unwrap())); }
            if let Some(d) = &data { fields.push(format!("\"data\":{d}")); }
            if let Some(i) = &id { fields.push(format!("\"id\":{i}")); }
            let text = format!("{{{}}}", fields.join(","));
            let mut b = text.into_bytes();
            let mut bufs = simd_json::Buffers::default();
            let v = parse_value(&mut b, &mut bufs, 64).expect("well-formed JSON");
            let _ = parse_envelope(&v, 16);
        }
    }

    /// `data` nested as `depth` levels of one of three shapes (the envelope is one more level).
    fn nested_publish(depth: usize, shape: u8, tail: &str) -> Vec<u8> {
        let (open, close) = match shape {
            0 => ("[", "]"),
            1 => ("{\"k\":", "}"),
            _ => ("[{\"k\":", "}]"),
        };
        let levels = if shape < 2 { depth } else { depth / 2 };
        format!(
            r#"{{"type":"publish","room":"r","data":{}1{}}}{tail}"#,
            open.repeat(levels),
            close.repeat(levels)
        )
        .into_bytes()
    }

    proptest! {
        // Inputs of up to 1 MiB and 200,000 levels: fewer cases keep the debug build quick.
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A request whose data nests far beyond any allowed limit (up to ~200,000 levels), of
        /// any shape, whatever follows it: refused by the depth check, before simd-json builds
        /// a DOM by recursion.
        #[test]
        fn deep_data_is_refused_before_parsing(
            depth in 1_026usize..200_000,
            max in 1usize..=crate::protocol::json::MAX_DEPTH_LIMIT,
            shape in 0u8..3,
            tail in "[\\[\\]{}\",a-z0-9]{0,16}",
        ) {
            let mut b = nested_publish(depth, shape, &tail);
            let mut bufs = simd_json::Buffers::default();
            let err = parse_value(&mut b, &mut bufs, max).expect_err("too deep");
            prop_assert!(err.0.contains(&format!("deeper than {max} levels")), "{}", err);
        }

        /// Nesting up to the limit parses, into a request whose DOM is exactly that deep.
        #[test]
        fn nesting_within_the_limit_parses(
            depth in 0usize..crate::protocol::json::MAX_DEPTH_LIMIT,
            slack in 0usize..64,
            shape in 0u8..2,
        ) {
            let max = (depth + 1 + slack).min(crate::protocol::json::MAX_DEPTH_LIMIT);
            let mut b = nested_publish(depth, shape, " ");
            let mut bufs = simd_json::Buffers::default();
            let v = parse_value(&mut b, &mut bufs, max).expect("within the limit");
            let env = parse_envelope(&v, 16).expect("a publish");
            let publish = matches!(env.request, Request::Publish { .. });
            prop_assert!(publish, "{:?}", env.request);
        }

        /// Messages of up to 1 MiB with names of up to 2 KiB, one to four bytes a character:
        /// valid JSON always parses, and the request is refused exactly when its name is empty
        /// or longer than `max_name` bytes, saying so.
        #[test]
        fn oversized_messages_and_names_get_a_clean_answer(
            data_len in 0usize..(1 << 20),
            units in 0usize..512,
            unit in prop_oneof![Just("r"), Just("\u{e9}"), Just("\u{20ac}"), Just("\u{1F600}")],
            max_name in 1usize..=255,
            kind in prop_oneof![Just("join"), Just("send"), Just("publish"), Just("members")],
        ) {
            let name = unit.repeat(units);
            let text = format!(
                r#"{{"type":"{kind}","room":"{name}","to":"{name}","data":"{}"}}"#,
                "x".repeat(data_len)
            );
            let mut b = text.into_bytes();
            let mut bufs = simd_json::Buffers::default();
            let v = parse_value(&mut b, &mut bufs, 64).expect("valid JSON");
            match parse_envelope(&v, max_name) {
                Ok(_) => prop_assert!((1..=max_name).contains(&name.len())),
                Err(e) if name.is_empty() => prop_assert!(e.0.contains("must not be empty"), "{}", e),
                Err(e) => {
                    prop_assert!(name.len() > max_name, "{}", e);
                    prop_assert!(e.0.contains(&format!("longer than {max_name} bytes")), "{}", e);
                }
            }
        }

        /// Binary frames with payloads of up to 1 MiB and targets of every length the length
        /// byte can state: routed when the target is a valid name (or ignored, for
        /// broadcasts), refused with the reason otherwise, the payload untouched.
        #[test]
        fn oversized_binary_frames_get_a_clean_answer(
            op in 1u8..=5,
            target_len in 0usize..=255,
            payload_len in 0usize..(1 << 20),
            max_name in 1usize..=255,
        ) {
            let mut frame = vec![op, target_len as u8];
            frame.resize(2 + target_len, b't');
            frame.resize(2 + target_len + payload_len, 0xff);
            let named = !matches!(op, 3 | 4);
            match parse_binary(&frame, max_name) {
                Ok(r) => {
                    prop_assert!(!named || (1..=max_name).contains(&target_len));
                    prop_assert_eq!(r.payload.len(), payload_len);
                }
                Err(e) => {
                    prop_assert!(named, "{}", e);
                    prop_assert!(target_len == 0 || target_len > max_name, "{}", e);
                }
            }
        }
    }
}
