//! JSON trees of any shape and depth through the text-frame path: `json::check`, then
//! `parse_value` (simd-json), then `parse_envelope`, with a `max_depth` of 1..=1024.
//!
//! The input is a tree, not bytes: a `Wrap` node puts thousands of arrays or objects around
//! its child for a few input bytes, and strings are built from pieces in any spelling (see
//! `shardhub_fuzz::text`), so depth limits and escape handling are reached directly instead of
//! by luck. Invariants:
//!
//! * nothing panics or overflows the stack;
//! * a text deeper than `max_depth` is refused; a refusal for depth means the text is deeper;
//! * a text a strict parser (serde_json) accepts within the depth passes `json::check`, and
//!   parses unless it holds a number beyond 64 bits (simd-json refuses those);
//! * a DOM that parses nests at most `max_depth` levels (measured iteratively);
//! * the type and names `parse_envelope` accepts are exactly what a strict decoder reads from
//!   the literal, pass the naming rule, and round-trip through `reply::write_str`;
//! * every reply written for the request (ack, error, pong, presence, delivery) is valid JSON.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardhub::protocol::envelope::{parse_envelope, parse_value, Request};
use shardhub::protocol::json::{self, JsonError, MAX_DEPTH_LIMIT};
use shardhub_fuzz::oracle;
use shardhub_fuzz::text::{write_literal, JStr, Name, Num, Spelling};

/// Rendering stops adding siblings past this many bytes: enough for every limit, small enough
/// to keep each run fast.
const TEXT_BUDGET: usize = 1 << 20;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Folded into 1..=MAX_DEPTH_LIMIT.
    max_depth: u16,
    /// Folded into 1..=255, the range the configuration allows.
    max_name: u8,
    root: Root,
}

#[derive(Arbitrary, Debug)]
enum Root {
    /// An object of the fields `parse_envelope` reads, in any order, repeated or not.
    Envelope(Vec<(Key, Node)>),
    /// Any JSON value.
    Any(Node),
}

/// A top-level key, spelled in any way (`"ro\u006fm"` is `room`).
#[derive(Arbitrary, Debug)]
struct Key {
    name: KeyName,
    spelling: Spelling,
}

#[derive(Arbitrary, Debug)]
enum KeyName {
    Type,
    Id,
    Room,
    To,
    Data,
    ExcludeSelf,
    Other(JStr),
}

/// The strings the protocol gives meaning to.
const WORDS: [&str; 10] = [
    "join",
    "leave",
    "publish",
    "send",
    "broadcast",
    "members",
    "ping",
    "Join",
    "join ",
    "",
];

#[derive(Arbitrary, Debug)]
enum Node {
    Null,
    Bool(bool),
    Num(Num),
    Str(JStr),
    /// A protocol word (index mod 10) in a spelling.
    Word(u8, Spelling),
    /// A name near `max_name` bytes.
    Name(Name),
    Array(Vec<Node>),
    Object(Vec<(JStr, Node)>),
    /// `levels` arrays or objects around `inner`.
    Wrap {
        levels: u16,
        shape: Shape,
        inner: Box<Node>,
    },
    /// Raw bytes where a value belongs: stray brackets, quotes, backslashes.
    Garbage(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Shape {
    Arrays,
    Objects,
    /// `[{"k":[{"k":…`
    Alternating,
    /// `[0,[0,[0,…]]]`: a sibling before each level.
    ArraysWithSiblings,
}

/// What rendering learned about the text.
#[derive(Default)]
struct Facts {
    /// The nesting depth, when the structure is known.
    depth: usize,
    /// Garbage or a string literal a strict decoder refuses: brackets may hide in it.
    structure_unknown: bool,
    /// A number simd-json refuses and serde_json takes (beyond 64 bits) or that is not JSON.
    odd_number: bool,
}

impl Node {
    /// Writes the node and returns its depth.
    fn render(&self, out: &mut Vec<u8>, max_name: usize, facts: &mut Facts) -> usize {
        match self {
            Self::Null => out.extend_from_slice(b"null"),
            Self::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Self::Num(n) => {
                facts.odd_number |= !matches!(n, Num::U(_) | Num::I(_));
                n.render(out);
            }
            Self::Str(s) => {
                let start = out.len();
                s.render(out);
                note_literal(&out[start..], facts);
            }
            Self::Word(i, spelling) => {
                write_literal(out, WORDS[usize::from(i % 10)], *spelling);
            }
            Self::Name(n) => {
                let start = out.len();
                n.render(out, max_name);
                note_literal(&out[start..], facts);
            }
            Self::Array(items) => {
                out.push(b'[');
                let mut depth = 0;
                for (i, item) in items.iter().enumerate() {
                    if out.len() > TEXT_BUDGET {
                        break;
                    }
                    if i > 0 {
                        out.push(b',');
                    }
                    depth = depth.max(item.render(out, max_name, facts));
                }
                out.push(b']');
                return depth + 1;
            }
            Self::Object(fields) => {
                out.push(b'{');
                let mut depth = 0;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if out.len() > TEXT_BUDGET {
                        break;
                    }
                    if i > 0 {
                        out.push(b',');
                    }
                    let start = out.len();
                    k.render(out);
                    note_literal(&out[start..], facts);
                    out.push(b':');
                    depth = depth.max(v.render(out, max_name, facts));
                }
                out.push(b'}');
                return depth + 1;
            }
            Self::Wrap {
                levels,
                shape,
                inner,
            } => {
                let levels = usize::from(*levels % 8192);
                let opener = |i: usize| match (shape, i % 2) {
                    (Shape::Arrays, _) | (Shape::Alternating, 0) => &b"["[..],
                    (Shape::Objects, _) | (Shape::Alternating, _) => b"{\"k\":",
                    (Shape::ArraysWithSiblings, _) => b"[0,",
                };
                for i in 0..levels {
                    out.extend_from_slice(opener(i));
                }
                let depth = inner.render(out, max_name, facts);
                for i in (0..levels).rev() {
                    out.push(if opener(i)[0] == b'[' { b']' } else { b'}' });
                }
                return depth + levels;
            }
            Self::Garbage(bytes) => {
                facts.structure_unknown = true;
                out.extend_from_slice(bytes);
            }
        }
        0
    }
}

/// A literal a strict decoder refuses may be malformed enough to swallow or expose brackets.
fn note_literal(literal: &[u8], facts: &mut Facts) {
    if decode_literal(literal).is_none() {
        facts.structure_unknown = true;
    }
}

/// What a strict decoder reads from a string literal (quotes included), if it is one.
fn decode_literal(literal: &[u8]) -> Option<String> {
    serde_json::from_slice::<String>(literal).ok()
}

/// One top-level field as rendered: its key and, for string values, its literal.
struct Field {
    key: Option<String>,
    literal: Option<Vec<u8>>,
}

fn render(input: &Input, max_name: usize) -> (Vec<u8>, Facts, Vec<Field>) {
    let mut out = Vec::new();
    let mut facts = Facts::default();
    let mut fields = Vec::new();
    match &input.root {
        Root::Any(node) => facts.depth = node.render(&mut out, max_name, &mut facts),
        Root::Envelope(items) => {
            out.push(b'{');
            let mut depth = 0;
            for (i, (key, value)) in items.iter().enumerate() {
                if out.len() > TEXT_BUDGET {
                    break;
                }
                if i > 0 {
                    out.push(b',');
                }
                let start = out.len();
                match &key.name {
                    KeyName::Other(s) => s.render(&mut out),
                    k => {
                        let name = match k {
                            KeyName::Type => "type",
                            KeyName::Id => "id",
                            KeyName::Room => "room",
                            KeyName::To => "to",
                            KeyName::Data => "data",
                            _ => "exclude_self",
                        };
                        write_literal(&mut out, name, key.spelling);
                    }
                }
                let key = decode_literal(&out[start..]);
                facts.structure_unknown |= key.is_none();
                out.push(b':');
                let start = out.len();
                depth = depth.max(value.render(&mut out, max_name, &mut facts));
                let literal = matches!(value, Node::Str(_) | Node::Word(..) | Node::Name(_))
                    .then(|| out[start..].to_vec());
                fields.push(Field { key, literal });
            }
            out.push(b'}');
            facts.depth = depth + 1;
        }
    }
    (out, facts, fields)
}

/// The one field called `key` in the envelope, if there is exactly one: with duplicates
/// simd-json keeps the first and serde_json (like JavaScript) the last, so neither is "the"
/// value (see README.md, findings).
fn unique_field<'f>(fields: &'f [Field], key: &str) -> Option<&'f Field> {
    let mut matching = fields.iter().filter(|f| f.key.as_deref() == Some(key));
    let first = matching.next()?;
    matching.next().is_none().then_some(first)
}

/// A name the server accepted is what a strict decoder reads from the literal the client sent.
fn assert_decoded_as_sent(fields: &[Field], key: &str, got: &str) {
    if let Some(literal) = unique_field(fields, key).and_then(|f| f.literal.as_ref()) {
        let want = decode_literal(literal);
        assert_eq!(
            want.as_deref(),
            Some(got),
            "{key} literal {:?} decoded differently",
            String::from_utf8_lossy(literal)
        );
    }
}

fuzz_target!(|input: Input| {
    let max_depth = 1 + usize::from(input.max_depth) % MAX_DEPTH_LIMIT;
    let max_name = usize::from(input.max_name.max(1));
    let (text, facts, fields) = render(&input, max_name);

    let checked = json::check(&text, max_depth);
    if !facts.structure_unknown {
        if facts.depth > max_depth {
            assert!(
                checked.is_err(),
                "depth {} passed a limit of {max_depth}",
                facts.depth
            );
        } else {
            assert_ne!(
                checked,
                Err(JsonError::TooDeep { max: max_depth }),
                "depth {} refused as too deep",
                facts.depth
            );
        }
    }
    // serde_json recurses: ask it only about texts whose every bracket fits a small stack.
    let brackets = text.iter().filter(|&&b| b == b'[' || b == b'{').count();
    let strict_ok = brackets <= MAX_DEPTH_LIMIT + 64 && oracle::strict_parse(&text).is_ok();

    let mut bytes = text.clone();
    let mut bufs = simd_json::Buffers::default();
    let parsed = parse_value(&mut bytes, &mut bufs, max_depth);
    if strict_ok && !facts.structure_unknown && facts.depth <= max_depth {
        assert_eq!(checked, Ok(()), "valid JSON refused by the check");
        if !facts.odd_number {
            if let Err(e) = &parsed {
                panic!("valid JSON refused: {e}");
            }
        }
    }
    let v = match parsed {
        Ok(v) => v,
        Err(e) => return oracle::assert_refusal_valid(None, &e),
    };
    assert!(
        checked.is_ok(),
        "parse_value accepted what json::check refused"
    );
    let depth = oracle::dom_depth(&v);
    assert!(
        depth <= max_depth,
        "a DOM of depth {depth} under a limit of {max_depth}"
    );

    match parse_envelope(&v, max_name) {
        Err(e) => oracle::assert_refusal_valid(Some(&v), &e),
        Ok(env) => {
            assert_decoded_as_sent(&fields, "type", env.kind);
            match env.request {
                Request::Join { room, .. }
                | Request::Leave { room }
                | Request::Publish { room, .. }
                | Request::Members { room } => assert_decoded_as_sent(&fields, "room", room),
                Request::Send { to, .. } => assert_decoded_as_sent(&fields, "to", to),
                _ => {}
            }
            oracle::assert_replies_valid(&env, max_name);
        }
    }
});
