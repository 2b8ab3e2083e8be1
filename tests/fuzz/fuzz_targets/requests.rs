//! Every request of the hub protocol with typed but hostile field values, text and binary, as a
//! session sends them one after another.
//!
//! A text request is a `type` plus fields whose values may be of the wrong type, missing,
//! repeated or extra, with ids beyond 64 bits and names of every length around
//! `max_name_bytes` (1..=255) in every UTF-8 width and spelling; a binary frame is an op byte,
//! a target length byte that may lie, a target and a payload. The frames go through one
//! `simd_json::Buffers`, reused the way a shard reuses it. Invariants:
//!
//! * nothing panics;
//! * with no repeated key, `parse_envelope` accepts exactly what a model of
//!   `docs/protocol.md` accepts, with the same request and the same names;
//! * accepted names pass the naming rule and round-trip through `reply::write_str`;
//! * every reply about the request (ack, error, pong, presence, delivery) is valid JSON;
//! * `parse_binary` agrees with a model of the binary header, and deliveries decode back.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardhub::protocol::envelope::{parse_envelope, parse_value, Request};
use shardhub::protocol::json::DEFAULT_MAX_DEPTH;
use shardhub_fuzz::oracle::{self, name_ok};
use shardhub_fuzz::text::{write_literal, Name, Num, Spelling};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Folded into 1..=255, the range the configuration allows.
    max_name: u8,
    frames: Vec<Frame>,
}

#[derive(Arbitrary, Debug)]
enum Frame {
    Text(Text),
    Binary(Binary),
}

/// A text request: a type, the fields that type needs (when `complete`), and fields that
/// override, repeat or add to them.
#[derive(Arbitrary, Debug)]
struct Text {
    kind: Kind,
    /// Start from a valid request of this kind.
    complete: bool,
    fields: Vec<Field>,
    /// The extra fields come before the complete ones (a repeated key: the first one counts).
    fields_first: bool,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    /// One of the built-in types (index mod 8).
    Known(u8),
    /// Any other string, in a spelling.
    Unknown(String, Spelling),
    /// No `type` field.
    Missing,
    /// A `type` that is not a string.
    NotString(Val),
}

const KINDS: [&str; 8] = [
    "join",
    "leave",
    "publish",
    "send",
    "broadcast",
    "members",
    "ping",
    "received",
];

#[derive(Arbitrary, Debug)]
enum Field {
    Room(Val),
    To(Val),
    Data(Val),
    Id(Val),
    ExcludeSelf(Val),
    /// `send`'s `ack`, `store` and `timeout_ms`; `received`'s `mid`.
    Ack(Val),
    Store(Val),
    TimeoutMs(Val),
    Mid(Val),
    /// A field no request reads, with any name.
    Extra(String, Val),
}

#[derive(Arbitrary, Debug)]
enum Val {
    Name(Name),
    Str(String, Spelling),
    Int(i64),
    UInt(u64),
    Num(Num),
    Bool(bool),
    Null,
    Array(Vec<Val>),
    Object(Vec<(String, Val)>),
    /// Any text in a value's place.
    Raw(String),
}

/// What the model knows of a rendered value.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    /// A string that decodes to this (the spelling was valid).
    Str(String),
    /// A string literal that may not decode: the parser refuses it, or the model cannot tell.
    BadStr,
    /// An integer, with its value.
    Int(i128),
    /// Any other number.
    Number,
    Bool(bool),
    Null,
    Array,
    Object,
    Unknown,
}

impl Val {
    fn render(&self, out: &mut Vec<u8>, max_name: usize, depth: usize) -> Ty {
        match self {
            Self::Name(n) => {
                let s = n.build(max_name);
                write_literal(out, &s, n.spelling);
                valid_spelling(&s, n.spelling)
            }
            Self::Str(s, spelling) => {
                write_literal(out, s, *spelling);
                valid_spelling(s, *spelling)
            }
            Self::Int(n) => {
                out.extend_from_slice(n.to_string().as_bytes());
                Ty::Int(i128::from(*n))
            }
            Self::UInt(n) => {
                out.extend_from_slice(n.to_string().as_bytes());
                Ty::Int(i128::from(*n))
            }
            Self::Num(n) => {
                n.render(out);
                // If it parses at all, it parsed as a number.
                Ty::Number
            }
            Self::Bool(b) => {
                out.extend_from_slice(if *b { b"true" } else { b"false" });
                Ty::Bool(*b)
            }
            Self::Null => {
                out.extend_from_slice(b"null");
                Ty::Null
            }
            // Containers stop nesting before the default depth limit: depth is json_tree's job.
            Self::Array(items) if depth < 8 => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.render(out, max_name, depth + 1);
                }
                out.push(b']');
                Ty::Array
            }
            Self::Object(fields) if depth < 8 => {
                out.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_literal(out, k, Spelling::Minimal);
                    out.push(b':');
                    v.render(out, max_name, depth + 1);
                }
                out.push(b'}');
                Ty::Object
            }
            Self::Array(_) | Self::Object(_) => {
                out.extend_from_slice(b"[]");
                Ty::Array
            }
            Self::Raw(s) => {
                out.extend_from_slice(s.as_bytes());
                Ty::Unknown
            }
        }
    }
}

/// Raw spelling leaves `"`, `\` and control characters unescaped: not a valid literal.
fn valid_spelling(s: &str, spelling: Spelling) -> Ty {
    let raw_breaks = s
        .chars()
        .any(|c| c == '"' || c == '\\' || (c as u32) < 0x20);
    if matches!(spelling, Spelling::Raw) && raw_breaks {
        Ty::BadStr
    } else {
        Ty::Str(s.to_string())
    }
}

/// Renders the request and returns, for the model, each top-level key with what its value is.
fn render(t: &Text, max_name: usize) -> (Vec<u8>, Vec<(String, Ty)>) {
    let mut fields: Vec<(String, &Val)> = Vec::new();
    let mut kind_text = None;
    match &t.kind {
        Kind::Known(i) => {
            kind_text = Some((KINDS[usize::from(i % 8)].to_string(), Spelling::Minimal))
        }
        Kind::Unknown(s, spelling) => kind_text = Some((s.clone(), *spelling)),
        Kind::Missing => {}
        Kind::NotString(v) => fields.push(("type".into(), v)),
    }
    let extra: Vec<(String, &Val)> = t
        .fields
        .iter()
        .map(|f| match f {
            Field::Room(v) => ("room".to_string(), v),
            Field::To(v) => ("to".to_string(), v),
            Field::Data(v) => ("data".to_string(), v),
            Field::Id(v) => ("id".to_string(), v),
            Field::ExcludeSelf(v) => ("exclude_self".to_string(), v),
            Field::Ack(v) => ("ack".to_string(), v),
            Field::Store(v) => ("store".to_string(), v),
            Field::TimeoutMs(v) => ("timeout_ms".to_string(), v),
            Field::Mid(v) => ("mid".to_string(), v),
            Field::Extra(k, v) => (k.clone(), v),
        })
        .collect();
    // A valid request of the kind: the names are of exactly max_name ASCII bytes.
    let good_name = Val::Str("n".repeat(max_name), Spelling::Minimal);
    let good_data = Val::Object(vec![("x".into(), Val::Array(vec![Val::Int(1), Val::Null]))]);
    let good_bool = Val::Bool(true);
    let mut complete: Vec<(String, &Val)> = Vec::new();
    if t.complete {
        let kind = kind_text.as_ref().map_or("", |(k, _)| k.as_str());
        match kind {
            "join" | "leave" | "members" => complete.push(("room".into(), &good_name)),
            "publish" => {
                complete.push(("room".into(), &good_name));
                complete.push(("data".into(), &good_data));
                complete.push(("exclude_self".into(), &good_bool));
            }
            "send" => {
                complete.push(("to".into(), &good_name));
                complete.push(("data".into(), &good_data));
            }
            "received" => complete.push(("mid".into(), &good_name)),
            "broadcast" => {
                complete.push(("data".into(), &good_data));
                complete.push(("exclude_self".into(), &good_bool));
            }
            _ => {}
        }
    }
    if t.fields_first {
        fields.extend(extra);
        fields.extend(complete);
    } else {
        fields.extend(complete);
        fields.extend(extra);
    }

    let mut out = b"{".to_vec();
    let mut model = Vec::new();
    if let Some((k, spelling)) = &kind_text {
        out.extend_from_slice(b"\"type\":");
        model.push(("type".to_string(), {
            write_literal(&mut out, k, *spelling);
            valid_spelling(k, *spelling)
        }));
    }
    for (key, v) in fields {
        if out.len() > 1 {
            out.push(b',');
        }
        write_literal(&mut out, &key, Spelling::Minimal);
        out.push(b':');
        let ty = v.render(&mut out, max_name, 0);
        model.push((key, ty));
    }
    out.push(b'}');
    (out, model)
}

/// What `docs/protocol.md` says the request is: the built-in type it names and its names, or
/// a refusal. `None` when the model cannot tell (a repeated key, a value of unknown type).
fn model(fields: &[(String, Ty)], max_name: usize) -> Option<Result<(String, Option<String>), ()>> {
    for (i, (k, ty)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(k2, _)| k2 == k) || matches!(ty, Ty::Unknown | Ty::BadStr) {
            return None;
        }
    }
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, t)| t);
    let Some(Ty::Str(kind)) = get("type") else {
        return Some(Err(()));
    };
    if get("id").is_some_and(|t| !matches!(t, Ty::Str(_) | Ty::Number | Ty::Int(_))) {
        return Some(Err(()));
    }
    let name = |f: &str| match get(f) {
        Some(Ty::Str(s)) if name_ok(s, max_name) => Ok(Some(s.clone())),
        _ => Err(()),
    };
    let data = || get("data").map(|_| ()).ok_or(());
    let bool_or_absent = |f: &str| match get(f) {
        None | Some(Ty::Bool(_)) => Ok(()),
        _ => Err(()),
    };
    let flag = || bool_or_absent("exclude_self");
    // `timeout_ms`: an integer in 1..=300000, and only with `"ack": true`; a number that is
    // not an integer literal is refused too.
    let timeout = || match get("timeout_ms") {
        None => Ok(()),
        Some(Ty::Int(ms)) if (1..=300_000).contains(ms) && get("ack") == Some(&Ty::Bool(true)) => {
            Ok(())
        }
        _ => Err(()),
    };
    if kind == "send" && matches!(get("timeout_ms"), Some(Ty::Number)) {
        return None; // 1e3 or 5.0: whether simd-json reads it as an integer is its business
    }
    let got = match kind.as_str() {
        "join" | "leave" | "members" => name("room"),
        "publish" => name("room").and_then(|n| data().and(flag()).map(|_| n)),
        "send" => bool_or_absent("ack")
            .and(timeout())
            .and(name("to"))
            .and_then(|n| data().and(bool_or_absent("store")).map(|_| n)),
        "received" => match get("mid") {
            Some(Ty::Str(_)) => Ok(None),
            _ => Err(()),
        },
        "broadcast" => data().and(flag()).map(|_| None),
        _ => Ok(None),
    };
    Some(got.map(|n| (kind.clone(), n)))
}

fuzz_target!(|input: Input| {
    let max_name = usize::from(input.max_name.max(1));
    let mut bufs = simd_json::Buffers::default();
    for frame in input.frames.iter().take(16) {
        let text = match frame {
            Frame::Binary(b) => {
                oracle::check_binary(&b.render(max_name), max_name);
                continue;
            }
            Frame::Text(t) => t,
        };
        let (mut bytes, fields) = render(text, max_name);
        let v = match parse_value(&mut bytes, &mut bufs, DEFAULT_MAX_DEPTH) {
            Ok(v) => v,
            Err(e) => {
                oracle::assert_refusal_valid(None, &e);
                continue;
            }
        };
        let want = model(&fields, max_name);
        match parse_envelope(&v, max_name) {
            Err(e) => {
                assert!(
                    !matches!(want, Some(Ok(_))),
                    "refused ({e}) what the model accepts: {fields:?}"
                );
                oracle::assert_refusal_valid(Some(&v), &e);
            }
            Ok(env) => {
                let name = match env.request {
                    Request::Join { room, .. }
                    | Request::Leave { room }
                    | Request::Publish { room, .. }
                    | Request::Members { room } => Some(room),
                    Request::Send { to, .. } => Some(to),
                    _ => None,
                };
                if let Some(want) = want {
                    let got = (env.kind.to_string(), name.map(str::to_string));
                    assert_eq!(want, Ok(got), "parsed against the model: {fields:?}");
                }
                oracle::assert_replies_valid(&env, max_name);
            }
        }
    }
});

/// A binary frame: `[op][target length][target][payload]`, the length byte possibly a lie.
#[derive(Arbitrary, Debug)]
struct Binary {
    op: u8,
    target: Target,
    /// The length byte, when not the target's true length (mod 256).
    lie: Option<u8>,
    payload: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Target {
    Name(Name),
    Bytes(Vec<u8>),
}

impl Binary {
    fn render(&self, max_name: usize) -> Vec<u8> {
        let target = match &self.target {
            Target::Name(n) => n.build(max_name).into_bytes(),
            Target::Bytes(b) => b.clone(),
        };
        // Ops 1-5 are the protocol's; 0 and 6 sit next to them.
        let mut out = vec![self.op % 8, self.lie.unwrap_or(target.len() as u8)];
        out.extend_from_slice(&target);
        out.extend_from_slice(&self.payload);
        out
    }
}
