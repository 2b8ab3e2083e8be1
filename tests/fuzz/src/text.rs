//! JSON strings, names and numbers as `Arbitrary` values, rendered to text in any spelling.
//!
//! The fuzzer picks the content *and* the spelling: the same character may come out raw, as a
//! short escape or as a `\u` escape (a surrogate pair above the BMP), so the tests reach the
//! paths where the server's gate (`json::check`) and the parser (simd-json) could disagree.
//! Hostile pieces (lone surrogates, bad hex, truncated escapes, raw control characters and
//! bytes that are not UTF-8) are values of the same types, not a separate mode: a valid name
//! and a broken one differ by one piece.
//!
//! Rendering never decides what the text means: the targets ask a strict decoder (serde_json)
//! what a literal decodes to and compare the server's result with that.

use arbitrary::Arbitrary;

/// How one character is written inside a string literal.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Spelling {
    /// As itself. A raw `"`, `\` or control character is malformed JSON: on purpose.
    Raw,
    /// The JSON-required escapes only (`\"`, `\\`, `\n` …, `\u00XX` for other controls).
    Minimal,
    /// `\uXXXX`, a surrogate pair above U+FFFF; `upper` picks the hex case.
    Unicode { upper: bool },
}

/// A string literal's content, piece by piece.
#[derive(Arbitrary, Debug, Clone, Default)]
pub struct JStr(pub Vec<Piece>);

/// One piece of a string literal.
#[derive(Arbitrary, Debug, Clone)]
pub enum Piece {
    /// Text in one spelling.
    Text(String, Spelling),
    /// One of the short escapes, `\"` `\\` `\/` `\b` `\f` `\n` `\r` `\t` (index mod 8).
    Short(u8),
    /// `\u` and any code unit: lone high and low surrogates among them.
    Unit { unit: u16, upper: bool },
    /// A valid surrogate pair, as two escapes (`high` and `low` are folded into range).
    Pair { high: u16, low: u16 },
    /// A high surrogate escape followed by an escape of a unit that is not a low surrogate,
    /// or by a short escape, or by nothing escaped at all.
    HighThen { high: u16, next: u16, how: u8 },
    /// `\u` followed by four arbitrary bytes: bad hex, a quote, a backslash.
    BadHex([u8; 4]),
    /// A backslash and any byte.
    Backslash(u8),
    /// `\u` with fewer than four hex digits (then the string goes on or ends).
    Truncated { digits: u8 },
    /// A character repeated, escaped or not: long strings from a few input bytes.
    Repeat {
        c: char,
        times: u16,
        spelling: Spelling,
    },
    /// A base letter and a run of combining marks (U+0300..U+036F).
    Combining {
        base: u8,
        marks: u8,
        spelling: Spelling,
    },
    /// A raw byte, UTF-8 or not (NUL, 0x7f, 0xff, a lone continuation byte …).
    Byte(u8),
}

/// Writes `c` in `spelling`.
pub fn write_char(out: &mut Vec<u8>, c: char, spelling: Spelling) {
    match spelling {
        Spelling::Raw => {
            let mut b = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
        Spelling::Minimal => match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => write_char(out, c, Spelling::Raw),
        },
        Spelling::Unicode { upper } => {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write_unit(out, *unit, upper);
            }
        }
    }
}

/// Writes `\uXXXX`.
pub fn write_unit(out: &mut Vec<u8>, unit: u16, upper: bool) {
    let s = if upper {
        format!("\\u{unit:04X}")
    } else {
        format!("\\u{unit:04x}")
    };
    out.extend_from_slice(s.as_bytes());
}

/// Writes `s` in `spelling`.
pub fn write_text(out: &mut Vec<u8>, s: &str, spelling: Spelling) {
    for c in s.chars() {
        write_char(out, c, spelling);
    }
}

/// Writes `s` as a complete literal with every character in `spelling`.
pub fn write_literal(out: &mut Vec<u8>, s: &str, spelling: Spelling) {
    out.push(b'"');
    write_text(out, s, spelling);
    out.push(b'"');
}

impl JStr {
    /// Writes the literal, quotes included.
    pub fn render(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        for piece in &self.0 {
            piece.render(out);
        }
        out.push(b'"');
    }
}

impl Piece {
    fn render(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Text(ref s, spelling) => write_text(out, s, spelling),
            Self::Short(i) => {
                let e = [b'"', b'\\', b'/', b'b', b'f', b'n', b'r', b't'][usize::from(i % 8)];
                out.extend_from_slice(&[b'\\', e]);
            }
            Self::Unit { unit, upper } => write_unit(out, unit, upper),
            Self::Pair { high, low } => {
                write_unit(out, 0xd800 | (high & 0x3ff), false);
                write_unit(out, 0xdc00 | (low & 0x3ff), true);
            }
            Self::HighThen { high, next, how } => {
                write_unit(out, 0xd800 | (high & 0x3ff), false);
                match how % 4 {
                    // Any unit but a low surrogate: another high one, a BMP character.
                    0 if !(0xdc00..=0xdfff).contains(&next) => write_unit(out, next, false),
                    0 => write_unit(out, next & 0xdbff, false),
                    1 => out.extend_from_slice(b"\\n"),
                    2 => out.push(b'x'),
                    _ => {}
                }
            }
            Self::BadHex(bytes) => {
                out.extend_from_slice(b"\\u");
                out.extend_from_slice(&bytes);
            }
            Self::Backslash(b) => out.extend_from_slice(&[b'\\', b]),
            Self::Truncated { digits } => {
                out.extend_from_slice(b"\\u");
                out.extend_from_slice(&b"d83d"[..usize::from(digits % 4)]);
            }
            Self::Repeat { c, times, spelling } => {
                for _ in 0..times % 2048 {
                    write_char(out, c, spelling);
                }
            }
            Self::Combining {
                base,
                marks,
                spelling,
            } => {
                write_char(out, char::from(b'a' + base % 26), spelling);
                for m in 0..marks % 32 {
                    let mark = char::from_u32(0x300 + u32::from(m) * 3 % 0x70).unwrap_or('\u{301}');
                    write_char(out, mark, spelling);
                }
            }
            Self::Byte(b) => out.push(b),
        }
    }
}

/// A room name or user id whose byte length sits near the server's `max_name_bytes`.
#[derive(Arbitrary, Debug, Clone)]
pub struct Name {
    /// Byte length relative to the limit.
    pub len: NameLen,
    /// The character the name is made of.
    pub unit: Unit,
    /// One odd character inserted at a position (modulo the name's length in characters).
    pub odd: Option<(u8, Odd)>,
    /// How the name is written.
    pub spelling: Spelling,
}

/// A name's length in bytes.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum NameLen {
    /// `max + delta`, delta folded into -4..=4: both sides of the limit and the limit itself.
    Around(i8),
    /// Any length up to 600 bytes, empty included.
    Exact(u16),
}

/// What a name is mostly made of: characters of every UTF-8 width.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Unit {
    /// `a`, one byte.
    Ascii,
    /// `é`, two bytes.
    Latin,
    /// `€`, three bytes.
    Euro,
    /// `😀`, four bytes.
    Emoji,
    /// `e` + U+0301: one glyph, three bytes.
    Combining,
}

/// A character that names must refuse, or that looks suspicious and must be kept as is.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Odd {
    /// U+0000.
    Nul,
    /// A C0 control, U+0001..U+001F.
    C0(u8),
    /// U+007F.
    Del,
    /// A C1 control, U+0080..U+009F.
    C1(u8),
    /// Allowed but easy to get wrong: U+2028, U+FEFF, U+200D, `"`, `\`, `/`, a space.
    Tricky(u8),
}

impl Odd {
    fn char(self) -> char {
        match self {
            Self::Nul => '\0',
            Self::C0(n) => char::from(1 + n % 0x1f),
            Self::Del => '\u{7f}',
            Self::C1(n) => char::from(0x80 + n % 0x20),
            Self::Tricky(n) => {
                ['\u{2028}', '\u{feff}', '\u{200d}', '"', '\\', '/', ' '][usize::from(n % 7)]
            }
        }
    }
}

impl Name {
    /// The name as a string, for a server whose limit is `max` bytes.
    pub fn build(&self, max: usize) -> String {
        let target = match self.len {
            NameLen::Around(d) => (max as isize + isize::from(d % 5)).max(0) as usize,
            NameLen::Exact(n) => usize::from(n % 601),
        };
        let unit = match self.unit {
            Unit::Ascii => "a",
            Unit::Latin => "é",
            Unit::Euro => "€",
            Unit::Emoji => "😀",
            Unit::Combining => "e\u{301}",
        };
        let mut s = String::with_capacity(target + 4);
        while s.len() + unit.len() <= target {
            s.push_str(unit);
        }
        while s.len() < target {
            s.push('z');
        }
        if let Some((at, odd)) = self.odd {
            let at = s
                .char_indices()
                .map(|(i, _)| i)
                .chain([s.len()])
                .nth(usize::from(at) % (s.chars().count() + 1))
                .unwrap_or(0);
            s.insert(at, odd.char());
        }
        s
    }

    /// Writes the literal for a server whose limit is `max` bytes.
    pub fn render(&self, out: &mut Vec<u8>, max: usize) {
        write_literal(out, &self.build(max), self.spelling);
    }
}

/// A JSON number, or something in a number's place.
#[derive(Arbitrary, Debug, Clone)]
pub enum Num {
    /// An unsigned integer, up to u64::MAX.
    U(u64),
    /// A signed integer, down to i64::MIN.
    I(i64),
    /// A float as Rust prints it (`NaN` and `inf` are not JSON).
    F(f64),
    /// `mantissa` e `exp`: underflow and overflow (1e400).
    Exp { mantissa: i32, exp: i16 },
    /// An integer of up to 400 digits: beyond u64 and i64.
    Digits { count: u16, negative: bool },
    /// Spellings JSON forbids or that parsers often get wrong (index mod 12).
    Odd(u8),
}

impl Num {
    /// Writes the number's text.
    pub fn render(&self, out: &mut Vec<u8>) {
        let s = match *self {
            Self::U(n) => n.to_string(),
            Self::I(n) => n.to_string(),
            Self::F(f) => format!("{f:?}"),
            Self::Exp { mantissa, exp } => format!("{mantissa}e{exp}"),
            Self::Digits { count, negative } => {
                let digits = "9".repeat(1 + usize::from(count % 400));
                if negative {
                    format!("-{digits}")
                } else {
                    digits
                }
            }
            Self::Odd(i) => [
                "-0",
                "01",
                ".5",
                "1.",
                "+1",
                "1e",
                "-",
                "0x10",
                "1E+2",
                "18446744073709551616",
                "-9223372036854775809",
                "2.5e-400",
            ][usize::from(i % 12)]
            .to_string(),
        };
        out.extend_from_slice(s.as_bytes());
    }
}
