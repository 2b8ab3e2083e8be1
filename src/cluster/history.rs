//! Room history in Redis (`--cluster redis://…`): the two Lua scripts, the operations the
//! shards queue for the bus thread, and the reading of Redis's answers.
//!
//! Per room, two keys ([`wire::history_keys`](super::wire::history_keys)): a stream whose entry
//! ids are the offsets (`N-0`) and whose entries hold the frame the origin node encoded, trimmed
//! to the room's `history_size` (`MAXLEN`); and a meta hash with the last offset (`s`) and the
//! epoch (`e`). With a `history_ttl` both expire that long after the last publication, and
//! the next publication starts a new epoch (so a client's position from before cannot match).
//!
//! [`PUBLISH`] runs atomically in Redis: it takes the next offset, appends the frame, refreshes
//! the TTL, creates the epoch if there is none, and publishes the envelope (the node's
//! [`stored_prefix`](super::wire::stored_prefix), then epoch, offset and frame) on the room's
//! channel. [`READ`] reads the position and, for a client's position in the same epoch, the
//! entries after it, also atomically: a publication is either in what the read returned or
//! published after it (the recovery argument in `engine/recovery.rs`).
//!
//! Scripts go as `EVALSHA` (loaded once per connection with `SCRIPT LOAD`); a `NOSCRIPT`
//! answer (Redis restarted, `SCRIPT FLUSH`) is retried once with `EVAL`.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use crate::engine::history::{self, HistoryPolicy, StoredRead};
use crate::engine::ids::SessionId;
use crate::protocol::frame::Frame;

/// Appends a publication to a room's stream and publishes it, numbered.
/// KEYS: stream, meta. ARGV: channel, envelope prefix, frame, a new epoch, size, ttl (ms).
pub const PUBLISH: &str = r#"
local epoch = redis.call("hget", KEYS[2], "e")
if not epoch then
  epoch = ARGV[4]
  redis.call("del", KEYS[1])
  redis.call("hset", KEYS[2], "e", epoch, "s", 0)
end
local offset = redis.call("hincrby", KEYS[2], "s", 1)
local o = string.format("%d", offset)
redis.call("xadd", KEYS[1], "MAXLEN", ARGV[5], o .. "-0", "d", ARGV[3])
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call("pexpire", KEYS[1], ttl)
  redis.call("pexpire", KEYS[2], ttl)
end
redis.call("publish", ARGV[1], ARGV[2] .. string.char(#epoch) .. epoch .. string.char(#o) .. o .. ARGV[3])
return offset
"#;

/// Reads a room's position and, for a position in the current epoch, the entries after it.
/// KEYS: stream, meta. ARGV: the client's offset ("" for none), its epoch, a new epoch,
/// ttl (ms), size. Returns `{offset, epoch, id, frame, id, frame, …}`.
pub const READ: &str = r#"
local epoch = redis.call("hget", KEYS[2], "e")
if not epoch then
  epoch = ARGV[3]
  redis.call("del", KEYS[1])
  redis.call("hset", KEYS[2], "e", epoch, "s", 0)
  local ttl = tonumber(ARGV[4])
  if ttl > 0 then redis.call("pexpire", KEYS[2], ttl) end
end
local top = tonumber(redis.call("hget", KEYS[2], "s") or "0")
local out = {top, epoch}
if ARGV[1] ~= "" and ARGV[2] == epoch then
  local since = tonumber(ARGV[1])
  if since and since < top then
    local from = string.format("%d", since + 1) .. "-0"
    local entries = redis.call("xrange", KEYS[1], from, "+", "COUNT", ARGV[5])
    for _, e in ipairs(entries) do
      out[#out + 1] = e[1]
      out[#out + 1] = e[2][2]
    end
  end
end
return out
"#;

/// How long a history read may take before the join answers `recovered: false`.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Work on a room's history for the bus thread.
#[derive(Debug)]
pub enum HistoryOp {
    /// Run [`PUBLISH`]: the envelope prefix is the [`Outbound`](super::Outbound)'s payload.
    Publish {
        /// The room.
        room: String,
        /// The frame to keep and publish.
        frame: Frame,
        /// The room's history settings.
        policy: HistoryPolicy,
    },
    /// Run [`READ`] and post the answer to the session's shard.
    Read {
        /// The room.
        room: String,
        /// The joining session.
        id: SessionId,
        /// Its `recover` position.
        since: Option<(u64, String)>,
        /// The room's history settings.
        policy: HistoryPolicy,
    },
    /// Drop the room's stream and meta (its history settings changed): the next publication
    /// starts a new epoch.
    Reset {
        /// The room.
        room: String,
    },
}

fn ttl_ms(p: &HistoryPolicy) -> u64 {
    p.ttl.as_millis().min(u128::from(u64::MAX)) as u64
}

/// A fresh epoch (16 hex digits).
fn new_epoch() -> String {
    format!("{:016x}", super::random())
}

/// The command for an operation: `EVALSHA` of its script (`eval`: `EVAL` with the script's
/// text, after a `NOSCRIPT`), or `DEL` for a reset.
pub fn command(op: &HistoryOp, channel: &str, payload: &[u8], eval: bool) -> redis::Cmd {
    let script = |c: &mut redis::Cmd, src: &'static str| {
        if eval {
            c.arg("EVAL").arg(src);
        } else {
            c.arg("EVALSHA").arg(sha(src));
        }
    };
    let mut c = redis::Cmd::new();
    match op {
        HistoryOp::Publish {
            room,
            frame,
            policy,
        } => {
            let (stream, meta) = super::wire::history_keys(room);
            script(&mut c, PUBLISH);
            c.arg(2)
                .arg(stream)
                .arg(meta)
                .arg(channel)
                .arg(payload)
                .arg(&frame[..])
                .arg(new_epoch())
                .arg(policy.size.max(1))
                .arg(ttl_ms(policy));
        }
        HistoryOp::Read {
            room,
            since,
            policy,
            ..
        } => {
            let (stream, meta) = super::wire::history_keys(room);
            let (offset, epoch) = match since {
                Some((o, e)) => (o.to_string(), e.clone()),
                None => (String::new(), String::new()),
            };
            script(&mut c, READ);
            c.arg(2)
                .arg(stream)
                .arg(meta)
                .arg(offset)
                .arg(epoch)
                .arg(new_epoch())
                .arg(ttl_ms(policy))
                .arg(policy.size.max(1));
        }
        HistoryOp::Reset { room } => {
            let (stream, meta) = super::wire::history_keys(room);
            c.arg("DEL").arg(stream).arg(meta);
        }
    }
    c
}

/// The SHA1 of a script (one of [`PUBLISH`], [`READ`]), computed once.
pub fn sha(src: &'static str) -> &'static str {
    use std::sync::OnceLock;
    static SHAS: OnceLock<[(usize, String); 2]> = OnceLock::new();
    let shas = SHAS.get_or_init(|| {
        [PUBLISH, READ].map(|s| (s.len(), redis::Script::new(s).get_hash().to_string()))
    });
    // The two scripts differ in length: the length picks the hash without hashing again.
    shas.iter()
        .find(|(len, _)| *len == src.len())
        .map_or("", |(_, h)| h.as_str())
}

/// Whether Redis answered `NOSCRIPT` (the script is not loaded).
pub fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript))
}

/// Reads [`READ`]'s answer for a client at `since`: the position, and the replay when every
/// publication after `since` is there (the entries are consecutive from `since + 1` to the
/// position), stamped with their offsets. Anything unexpected reads as "could not read".
pub fn parse_read(v: &Value, since: Option<&(u64, String)>) -> StoredRead {
    let Value::Array(items) = v else {
        return StoredRead::default();
    };
    let (Some(Value::Int(top)), Some(epoch)) = (items.first(), items.get(1).and_then(bytes)) else {
        return StoredRead::default();
    };
    let top = *top as u64;
    let Ok(epoch) = std::str::from_utf8(epoch) else {
        return StoredRead::default();
    };
    let epoch: Arc<str> = epoch.into();
    let mut read = StoredRead {
        position: Some((top, epoch.clone())),
        replay: None,
    };
    let Some((n, e)) = since else { return read };
    if **e != *epoch || *n > top {
        return read;
    }
    let mut replay = Vec::with_capacity(items.len() / 2);
    let mut want = n + 1;
    for pair in items[2..].chunks(2) {
        let [id, frame] = pair else { return read };
        let (Some(id), Some(frame)) = (bytes(id), bytes(frame)) else {
            return read;
        };
        let offset = std::str::from_utf8(id)
            .ok()
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse::<u64>().ok());
        if offset != Some(want) {
            return read; // trimmed: the oldest kept is past the client's position
        }
        replay.push((want, history::stamp(&Frame::from(frame), want)));
        want += 1;
    }
    if want != top + 1 {
        return read;
    }
    read.replay = Some(replay);
    read
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{encode, OpCode};

    fn answer(top: i64, epoch: &str, entries: &[u64]) -> Value {
        let mut v = vec![Value::Int(top), Value::BulkString(epoch.into())];
        for o in entries {
            v.push(Value::BulkString(format!("{o}-0").into_bytes()));
            v.push(Value::BulkString(encode(OpCode::Text, b"{}").to_vec()));
        }
        Value::Array(v)
    }

    #[test]
    fn a_complete_read_recovers_stamped_frames() {
        let since = (2, "e".to_string());
        let r = parse_read(&answer(4, "e", &[3, 4]), Some(&since));
        let replay = r.replay.expect("recovered");
        assert_eq!(replay.iter().map(|e| e.0).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(
            crate::http::sse::ws_payload(&replay[1].1),
            br#"{"offset":4}"#
        );
        assert_eq!(r.position.map(|p| p.0), Some(4));
    }

    #[test]
    fn trimmed_other_epoch_or_future_positions_do_not_recover() {
        let since = (1, "e".to_string());
        assert!(parse_read(&answer(4, "e", &[3, 4]), Some(&since))
            .replay
            .is_none());
        let other = (3, "x".to_string());
        assert!(parse_read(&answer(4, "e", &[]), Some(&other))
            .replay
            .is_none());
        let future = (9, "e".to_string());
        assert!(parse_read(&answer(4, "e", &[]), Some(&future))
            .replay
            .is_none());
        let at = (4, "e".to_string());
        assert_eq!(
            parse_read(&answer(4, "e", &[]), Some(&at))
                .replay
                .map(|r| r.len()),
            Some(0)
        );
        assert!(parse_read(&Value::Nil, Some(&at)).position.is_none());
    }

    #[test]
    fn the_script_hashes_are_those_of_the_scripts() {
        assert_ne!(sha(PUBLISH), sha(READ));
        assert_ne!(
            PUBLISH.len(),
            READ.len(),
            "sha() tells them apart by length"
        );
        assert_eq!(sha(READ), redis::Script::new(READ).get_hash());
        assert_eq!(sha(PUBLISH), redis::Script::new(PUBLISH).get_hash());
    }
}
