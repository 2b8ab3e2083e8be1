//! The probe every measured message carries, `{"t":T,"s":S,"p":P}` (intended send time on the
//! monotonic clock in ns, sequence number, sender index), and the two ways of reading server
//! frames: [`fast_probe`] for the exact layout this tool sends and shardhub forwards (nearly all
//! the traffic), and [`Inbound`] (serde) for everything else. Pure: no IO, no clock.

use std::borrow::Cow;

use serde::Deserialize;

/// Probe carried in payloads: intended send time (monotonic ns), sequence, sender index.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Intended send time, monotonic ns: latency is measured from it.
    pub t: u64,
    /// Sequence number, per sender (and per room for publishers).
    pub s: u64,
    /// Global index of the sender.
    pub p: usize,
}

/// Appends the probe object `{"t":T,"s":S,"p":P[,"r":1][,"x":"aaa…"]}`: `bounced` marks a direct
/// message sent back by its receiver, `pad` adds that many padding bytes (payload size control).
pub fn write_probe(buf: &mut Vec<u8>, p: Probe, bounced: bool, pad: usize) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(buf, r#"{{"t":{},"s":{},"p":{}"#, p.t, p.s, p.p);
    if bounced {
        buf.extend_from_slice(br#","r":1"#);
    }
    if pad > 0 {
        buf.extend_from_slice(br#","x":""#);
        buf.resize(buf.len() + pad, b'a');
        buf.push(b'"');
    }
    buf.push(b'}');
}

/// The fields of a server frame any scenario looks at; everything else is skipped.
#[derive(Deserialize)]
pub struct Inbound<'a> {
    /// Hub frame type (`welcome`, `ack`, `message`, ...); absent in raw frames.
    #[serde(rename = "type", borrow, default)]
    pub ty: Option<Cow<'a, str>>,
    /// The acked operation (`ack`).
    #[serde(borrow, default)]
    pub op: Option<Cow<'a, str>>,
    /// The error code (`error`).
    #[serde(borrow, default)]
    pub code: Option<Cow<'a, str>>,
    /// The request id echoed back (`pong`).
    #[serde(default)]
    pub id: Option<u64>,
    /// The stream position: of a `message` in a room with history, or where a `join` ack
    /// starts the member from.
    #[serde(default)]
    pub offset: Option<u64>,
    /// The room's stream epoch (`join` ack of a room with history).
    #[serde(borrow, default)]
    pub epoch: Option<Cow<'a, str>>,
    /// Whether a `join` with `recover` recovered (`join` ack).
    #[serde(default)]
    pub recovered: Option<bool>,
    #[serde(default)]
    data: Option<Probe>,
    // Raw adapter: the probe is the whole message.
    #[serde(default)]
    t: Option<u64>,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    p: Option<usize>,
}

impl Inbound<'_> {
    /// The probe, from `data` (hub) or from the frame itself (raw).
    pub fn probe(&self) -> Option<Probe> {
        if let Some(d) = self.data {
            return Some(d);
        }
        Some(Probe {
            t: self.t?,
            s: self.s?,
            p: self.p?,
        })
    }
}

/// Which frame [`fast_probe`] recognized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastKind {
    /// `{"type":"message",...,"data":{probe}}` (hub room delivery).
    Message,
    /// `{"type":"direct",...,"data":{probe}}` (hub direct message).
    Direct,
    /// `{"type":"broadcast",...,"data":{probe}}` (hub broadcast, counted like a room delivery).
    Broadcast,
    /// `{probe}` (raw adapter).
    Raw,
}

/// Reads a probe from a frame laid out exactly as shardhub forwards what this tool publishes:
/// the `data` object last, with `t`, `s`, `p` first in that order, then the room's stream
/// `offset` if it has history (returned too). `None` for any other layout, which then goes
/// through the JSON parser; this is a shortcut, never a different reading.
pub fn fast_probe(msg: &[u8]) -> Option<(FastKind, Probe, Option<u64>)> {
    const DATA: &[u8] = br#","data":{"t":"#;
    let (kind, body, closing) = if let Some(rest) = msg.strip_prefix(br#"{"t":"#) {
        (FastKind::Raw, rest, 1)
    } else {
        let kind = if msg.starts_with(br#"{"type":"message","#) {
            FastKind::Message
        } else if msg.starts_with(br#"{"type":"direct","#) {
            FastKind::Direct
        } else if msg.starts_with(br#"{"type":"broadcast","#) {
            FastKind::Broadcast
        } else {
            return None;
        };
        let at = (0..msg.len().checked_sub(DATA.len())?)
            .rev()
            .find(|&i| msg[i..].starts_with(DATA))?;
        (kind, &msg[at + DATA.len()..], 2)
    };
    let (t, rest) = leading_u64(body)?;
    let (s, rest) = leading_u64(rest.strip_prefix(br#","s":"#)?)?;
    let (p, rest) = leading_u64(rest.strip_prefix(br#","p":"#)?)?;
    // A room with history appends its stream position after `data`: `…},"offset":N}`.
    let (rest, closing, offset) = match without_offset(rest) {
        Some((r, offset)) if closing == 2 => (r, 1, Some(offset)),
        _ => (rest, closing, None),
    };
    // What may follow: our padding field (`,"x":"aaa"`), a bounce marker, then the closing
    // braces and nothing else.
    let tail_ok = rest.len() >= closing
        && rest[rest.len() - closing..].iter().all(|&b| b == b'}')
        && !rest[..rest.len() - closing].contains(&b'}');
    if !tail_ok {
        return None;
    }
    Some((
        kind,
        Probe {
            t,
            s,
            p: usize::try_from(p).ok()?,
        },
        offset,
    ))
}

/// `b` without a trailing `,"offset":N}` (what shardhub appends to `message` frames of rooms
/// with history), and N, if it ends so.
fn without_offset(b: &[u8]) -> Option<(&[u8], u64)> {
    const OFFSET: &[u8] = br#","offset":"#;
    let inner = b.strip_suffix(b"}")?;
    let digits = inner
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 {
        return None;
    }
    let at = inner.len() - digits;
    let (offset, _) = leading_u64(&inner[at..])?;
    Some((inner[..at].strip_suffix(OFFSET)?, offset))
}

/// A decimal u64 at the start of `b`, and what follows it.
fn leading_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &b[..n] {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some((v, &b[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_probe(msg: &[u8]) -> Option<(u64, u64, usize, Option<u64>)> {
        let m: Inbound<'_> = serde_json::from_slice(msg).ok()?;
        m.probe().map(|p| (p.t, p.s, p.p, m.offset))
    }

    #[test]
    fn fast_probe_agrees_with_the_parser_or_declines() {
        let cases: &[&[u8]] = &[
            br#"{"type":"message","room":"r","from":"a","session":"1","data":{"t":123,"s":4,"p":0}}"#,
            br#"{"type":"message","room":"r","from":"a","session":"1","data":{"t":1,"s":2,"p":3,"x":"aaaa"}}"#,
            br#"{"type":"direct","from":"lg1-0","session":"9","data":{"t":5,"s":6,"p":7,"r":1}}"#,
            br#"{"t":18446744073709551615,"s":0,"p":12}"#,
            br#"{"t":1,"s":2,"p":3,"x":"aa"}"#,
            br#"{"type":"broadcast","from":"a","session":"2","data":{"t":8,"s":9,"p":0}}"#,
            // A room with history: its position after `data`.
            br#"{"type":"message","room":"r","from":"a","session":"1","data":{"t":1,"s":2,"p":3},"offset":17}"#,
        ];
        for c in cases {
            let (_, p, offset) =
                fast_probe(c).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(c)));
            assert_eq!(
                Some((p.t, p.s, p.p, offset)),
                serde_probe(c),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        let declined: &[&[u8]] = &[
            br#"{"type":"message","room":"r","data":{"s":4,"t":123,"p":0}}"#,
            br#"{"type":"message","room":"r","data":{"t":123,"s":4,"p":0},"extra":1}"#,
            br#"{"type":"message","room":"r","data":{"t":-1,"s":4,"p":0}}"#,
            br#"{"type":"message","room":"r","data":{"t":99999999999999999999999,"s":4,"p":0}}"#,
            br#"{"type":"ack","id":1}"#,
            br#"{"type":"message","room":"r","from":"a","session":"1","data":{"t":1,"s":2,"p":3},"offset":}"#,
            br#"{"type":"message","room":"r","from":"a","session":"1","data":{"t":1,"s":2,"p":3},"offset":1}}"#,
            br#"{"t":1,"s":2}"#,
            b"",
        ];
        for c in declined {
            assert!(fast_probe(c).is_none(), "{}", String::from_utf8_lossy(c));
        }
        assert_eq!(fast_probe(cases[2]).unwrap().0, FastKind::Direct);
        assert_eq!(fast_probe(cases[3]).unwrap().0, FastKind::Raw);
        assert_eq!(fast_probe(cases[5]).unwrap().0, FastKind::Broadcast);
        assert_eq!(
            fast_probe(cases[6]).unwrap().2,
            Some(17),
            "the offset is read"
        );
        assert_eq!(
            fast_probe(cases[0]).unwrap().2,
            None,
            "no history, no offset"
        );
    }

    #[test]
    fn written_probes_read_back_on_the_fast_path() {
        let p = Probe { t: 9, s: 8, p: 7 };
        for (bounced, pad) in [(false, 0), (true, 0), (false, 5), (true, 3)] {
            let mut buf = Vec::new();
            write_probe(&mut buf, p, bounced, pad);
            assert_eq!(fast_probe(&buf), Some((FastKind::Raw, p, None)));
            assert_eq!(serde_probe(&buf), Some((9, 8, 7, None)));
        }
        let mut buf = Vec::new();
        write_probe(&mut buf, p, true, 2);
        assert_eq!(buf, br#"{"t":9,"s":8,"p":7,"r":1,"x":"aa"}"#);
    }
}
