//! The gate every untrusted JSON text passes before it is parsed: bounded nesting and escapes
//! that decode to valid Unicode.
//!
//! simd-json turns its tape into a DOM by recursion, and dropping or re-serializing that DOM
//! recurses again, one stack frame per nesting level: a 20 KB message of ten thousand `[`
//! overflowed a shard's stack and aborted the process. It also decodes a lone surrogate escape
//! (`"\ud800"`) to U+0000 and an invalid pair (`"\ud800\ue000"`) to an unrelated character, so
//! two different names could collide. [`check`] rejects both before anything recursive runs:
//! after it, every DOM the server builds has at most `max_depth` levels, and every string in it
//! is exactly what the client wrote.
//!
//! Cost: one branch-free pass counting `[`, `{` and `\` (the compiler vectorizes it); only a
//! text with escapes or more opening brackets than `max_depth` takes the exact scan, a simple
//! byte-at-a-time state machine. Neither recurses nor allocates.

use std::fmt;

/// The nesting a server accepts by default: deep enough for any real message (serde_json's own
/// recursion limit is 128), shallow enough that the recursive DOM code uses a few tens of
/// kilobytes of stack at most.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// The largest `max_json_depth` a configuration may set. The DOM code costs a few hundred bytes
/// of stack per level (10,000 levels overflowed a 2 MiB shard stack); 1,024 levels stay far
/// below that, whatever the message size. `tests::the_deepest_allowed_text_fits_a_small_stack`
/// checks it on a 512 KiB stack.
pub const MAX_DEPTH_LIMIT: usize = 1024;

/// Why a JSON text was refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// Arrays and objects nest deeper than the limit.
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A `\u` escape without four hex digits.
    BadEscape,
    /// A `\u` escape of a surrogate that is not part of a valid pair: it has no Unicode
    /// character to decode to.
    LoneSurrogate,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooDeep { max } => write!(f, "JSON nested deeper than {max} levels"),
            Self::BadEscape => f.write_str("malformed JSON: a \\u escape needs four hex digits"),
            Self::LoneSurrogate => f.write_str(
                "malformed JSON: a \\u escape of a lone surrogate is not a Unicode character",
            ),
        }
    }
}

impl std::error::Error for JsonError {}

/// Checks that `text` nests at most `max_depth` arrays and objects and that its `\u` escapes
/// decode to Unicode characters. Malformed JSON otherwise passes: the parser reports it.
pub fn check(text: &[u8], max_depth: usize) -> Result<(), JsonError> {
    // Fast path: with no escape and no more opening brackets than the limit, neither rule can
    // be broken. Counting without branches lets this loop run at vector speed.
    let (mut opens, mut escapes) = (0usize, 0usize);
    for &b in text {
        opens += usize::from(b == b'[' || b == b'{');
        escapes += usize::from(b == b'\\');
    }
    if opens <= max_depth && escapes == 0 {
        return Ok(());
    }
    scan(text, max_depth)
}

/// The exact scan: depth outside strings, escapes inside them.
fn scan(text: &[u8], max_depth: usize) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        i += 1;
        if in_string {
            match b {
                b'"' => in_string = false,
                b'\\' => match text.get(i) {
                    Some(b'u') => {
                        let unit = hex4(text, i + 1)?;
                        i += 5;
                        match unit {
                            0xd800..=0xdbff => {
                                // A high surrogate counts only with a low one right after it.
                                let low = (text.get(i) == Some(&b'\\')
                                    && text.get(i + 1) == Some(&b'u'))
                                .then(|| hex4(text, i + 2))
                                .transpose()?;
                                match low {
                                    Some(0xdc00..=0xdfff) => i += 6,
                                    _ => return Err(JsonError::LoneSurrogate),
                                }
                            }
                            0xdc00..=0xdfff => return Err(JsonError::LoneSurrogate),
                            _ => {}
                        }
                    }
                    // Any other escape is one byte; the parser judges whether it is valid.
                    Some(_) => i += 1,
                    None => {}
                },
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max_depth {
                        return Err(JsonError::TooDeep { max: max_depth });
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The four hex digits at `at` as a UTF-16 code unit.
fn hex4(text: &[u8], at: usize) -> Result<u32, JsonError> {
    let digits = text.get(at..at + 4).ok_or(JsonError::BadEscape)?;
    digits.iter().try_fold(0u32, |n, &d| {
        let v = (d as char).to_digit(16).ok_or(JsonError::BadEscape)?;
        Ok(n << 4 | v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use simd_json::prelude::*;

    fn nested(depth: usize) -> String {
        format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    }

    #[test]
    fn depth_counts_arrays_and_objects_outside_strings() {
        // The envelope object is level 1.
        assert_eq!(check(nested(63).as_bytes(), 64), Ok(()));
        assert_eq!(
            check(nested(64).as_bytes(), 64),
            Err(JsonError::TooDeep { max: 64 })
        );
        // Brackets inside strings are text, escaped quotes do not end a string.
        let text = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert_eq!(check(text.as_bytes(), 2), Ok(()));
        assert_eq!(check(br#"{"a":{"b":[1]}}"#, 3), Ok(()));
        assert_eq!(
            check(br#"{"a":{"b":[1]}}"#, 2),
            Err(JsonError::TooDeep { max: 2 })
        );
        // Siblings do not add up.
        assert_eq!(check(br#"[[],[],[],[],[]]"#, 2), Ok(()));
    }

    #[test]
    fn surrogate_escapes_must_pair() {
        for ok in [
            r#""\ud83d\ude00""#,
            r#""\u00e9\u0041""#,
            r#""\uFFFF""#,
            r#""\n\t\\\"""#,
        ] {
            assert_eq!(check(ok.as_bytes(), 8), Ok(()), "{ok}");
        }
        for lone in [
            r#""x\ud800y""#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\ud800""#,
            r#""\ud800\ue000""#,
            r#""\ud800\n""#,
            r#""\uDBFF""#,
        ] {
            assert_eq!(
                check(lone.as_bytes(), 8),
                Err(JsonError::LoneSurrogate),
                "{lone}"
            );
        }
        for bad in [r#""\u12""#, r#""\u12G4""#, r#""\ud800\u12""#] {
            assert_eq!(check(bad.as_bytes(), 8), Err(JsonError::BadEscape), "{bad}");
        }
    }

    /// The bound on the limit is a bound on the stack: the deepest text a configuration may
    /// allow parses, re-serializes and drops on a thread with a quarter of a shard's stack.
    #[test]
    fn the_deepest_allowed_text_fits_a_small_stack() {
        let text = nested(MAX_DEPTH_LIMIT - 1);
        assert_eq!(check(text.as_bytes(), MAX_DEPTH_LIMIT), Ok(()));
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let mut b = text.into_bytes();
                let v = simd_json::to_borrowed_value(&mut b).expect("valid JSON");
                let mut out = Vec::new();
                crate::protocol::reply::write_value(&mut out, &v);
                assert!(out.len() > 2 * MAX_DEPTH_LIMIT);
                drop(v);
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
    }

    /// A naive model: depth by a parse with serde_json (which has its own recursion guard).
    fn model_depth(v: &serde_json::Value) -> usize {
        let mut max = 0;
        let mut stack = vec![(v, 0usize)];
        while let Some((v, d)) = stack.pop() {
            let children: Vec<&serde_json::Value> = match v {
                serde_json::Value::Array(a) => a.iter().collect(),
                serde_json::Value::Object(o) => o.values().collect(),
                _ => continue,
            };
            max = max.max(d + 1);
            stack.extend(children.into_iter().map(|c| (c, d + 1)));
        }
        max
    }

    fn json_tree() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i32>().prop_map(serde_json::Value::from),
            "[\\[\\]{}\"\\\\a-z\u{e9}\u{1F600}]{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(40, 400, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\\[{\"]{0,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// For any valid JSON, the check refuses exactly the texts deeper than the limit.
        #[test]
        fn the_check_agrees_with_a_model(v in json_tree(), max in 1usize..50) {
            let text = serde_json::to_string(&v).unwrap();
            let deep = model_depth(&v) > max;
            prop_assert_eq!(check(text.as_bytes(), max).is_err(), deep, "{}", text);
        }

        /// Deep nesting of any shape and size is refused without recursion, and never panics.
        #[test]
        fn deep_and_odd_inputs_are_refused(
            depth in 65usize..200_000,
            open in prop_oneof![Just(b'['), Just(b'{')],
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut text = vec![open; depth];
            text.extend_from_slice(&junk);
            prop_assert_eq!(check(&text, 64), Err(JsonError::TooDeep { max: 64 }));
        }

        /// Strings of escapes pass exactly when a strict decoder (serde_json) accepts them, and
        /// then simd-json decodes them to the same text: no two spellings of different names
        /// can meet in one.
        #[test]
        fn what_passes_decodes_exactly(
            parts in proptest::collection::vec(prop_oneof![
                Just("\\ud800"), Just("\\udbff"), Just("\\udc00"), Just("\\ude00"),
                Just("\\ud83d"), Just("\\u0041"), Just("\\ue000"), Just("\\u0000"),
                Just("a"), Just("\\n"), Just("\\\\"),
            ], 0..6),
        ) {
            let text = format!("\"{}\"", parts.concat());
            let strict: Result<String, _> = serde_json::from_str(&text);
            let passes = check(text.as_bytes(), 8).is_ok();
            prop_assert_eq!(passes, strict.is_ok(), "{}", text);
            if let Ok(want) = strict {
                let mut b = text.clone().into_bytes();
                let got = simd_json::to_owned_value(&mut b).expect("valid JSON");
                prop_assert_eq!(got.as_str(), Some(want.as_str()), "{}", text);
            }
        }

        /// Arbitrary bytes never panic the check.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = check(&bytes, 8);
        }
    }
}
