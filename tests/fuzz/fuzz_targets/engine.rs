//! Whole shard engines under hostile clients: two engines of the server's simulation
//! (`shardhub::engine::sim`, built with `--cfg fuzzing`), clients that open connections, send
//! raw bytes, upgrade and then send frames of any shape (masked or not, any opcode and RSV
//! bits, lengths that lie, fragments) carrying hub requests of every type with hostile names
//! and deep JSON (joins that recover from near or far positions in rooms with history; sends
//! with receipts and to offline users, and receipts for real and made-up message ids), end
//! their streams, stop reading, while time passes.
//!
//! This is the frame reader, the HTTP parser, the hub protocol, the router and the timers as
//! the server runs them. Invariants: nothing panics, not even inside the engine's per-session
//! containment (`stats().panics` stays 0: a contained panic is still a bug); memory stays
//! bounded (libFuzzer's RSS limit).
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardhub::engine::ids::SessionId;
use shardhub::engine::sim::{Client, Sim};
use shardhub_fuzz::text::Name;

/// A `join`'s `recover`: a position near the room's (small offsets, the room's real epoch or
/// not), so that replays, overflows and expired histories are reached, or one far off.
#[derive(Arbitrary, Debug)]
enum Recover {
    Near { offset: u8, real_epoch: bool },
    Far { offset: u64 },
}

/// A hub request, structured enough to reach every handler.
#[derive(Arbitrary, Debug)]
enum Request {
    Join(Name, Option<Recover>),
    Leave(Name),
    Publish {
        room: Name,
        depth: u16,
        exclude_self: bool,
    },
    Send {
        to: Name,
        depth: u16,
    },
    /// A send to user `u{to % 8}` (online or not) with `ack`, `store` and `timeout_ms`.
    SendTo {
        to: u8,
        ack: bool,
        store: bool,
        timeout_ms: Option<u16>,
    },
    /// A receipt for send number `seq` of client `sender`'s session (a real one when that
    /// send asked for receipts), or for any text.
    Received { sender: u8, seq: u8 },
    ReceivedRaw(String),
    Broadcast {
        depth: u16,
    },
    Members(Name),
    Ping,
    /// Any bytes as the payload of a text frame.
    Raw(Vec<u8>),
    /// A binary frame: op, target length byte, target, payload.
    Binary {
        op: u8,
        len: u8,
        target: Vec<u8>,
        payload: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Frame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    /// 0: the payload's own length; otherwise a lie, widened to 16 or 64 bits.
    lie: u64,
    request: Request,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A client that upgrades on shard 0 or 1.
    Connect { shard: bool },
    /// A connection that has not upgraded, and its raw bytes.
    Open { shard: bool, bytes: Vec<u8> },
    /// A frame from client `who`.
    Send { who: u8, frame: Frame, split: u8 },
    /// Client `who` ends its stream.
    End { who: u8 },
    /// Client `who` stops, or starts again, reading.
    Reading { who: u8, on: bool },
    /// Time passes.
    Wait { ms: u16 },
}

const MAX: usize = 4096;

fn data(depth: u16) -> String {
    let d = usize::from(depth % 1500);
    format!("{}1{}", "[".repeat(d), "]".repeat(d))
}

/// The request's frame payload; `epoch` gives a room's current epoch (history on), `sessions`
/// the clients' session ids.
fn payload(
    r: &Request,
    epoch: impl Fn(&str) -> Option<String>,
    sessions: &[u64],
) -> (u8, Vec<u8>) {
    let name = |n: &Name| serde_json::to_string(&n.build(128)).unwrap_or_default();
    let text = match r {
        Request::Join(room, None) => {
            format!(r#"{{"type":"join","room":{},"id":1}}"#, name(room))
        }
        Request::Join(room, Some(recover)) => {
            let (offset, epoch) = match recover {
                Recover::Near { offset, real_epoch } => {
                    let real = real_epoch.then(|| epoch(&room.build(128))).flatten();
                    (u64::from(*offset), real.unwrap_or_else(|| "0".into()))
                }
                Recover::Far { offset } => (*offset, "0".into()),
            };
            format!(
                r#"{{"type":"join","room":{},"id":1,"recover":{{"offset":{offset},"epoch":{}}}}}"#,
                name(room),
                serde_json::to_string(&epoch).unwrap_or_default()
            )
        }
        Request::Leave(room) => format!(r#"{{"type":"leave","room":{}}}"#, name(room)),
        Request::Publish {
            room,
            depth,
            exclude_self,
        } => format!(
            r#"{{"type":"publish","room":{},"data":{},"exclude_self":{exclude_self},"id":"p"}}"#,
            name(room),
            data(*depth)
        ),
        Request::Send { to, depth } => format!(
            r#"{{"type":"send","to":{},"data":{}}}"#,
            name(to),
            data(*depth)
        ),
        Request::SendTo {
            to,
            ack,
            store,
            timeout_ms,
        } => {
            let timeout = timeout_ms.map_or(String::new(), |t| format!(r#","timeout_ms":{t}"#));
            format!(
                r#"{{"type":"send","to":"u{}","data":1,"ack":{ack},"store":{store}{timeout},"id":4}}"#,
                to % 8
            )
        }
        Request::Received { sender, seq } => {
            let s = sessions
                .get(usize::from(*sender) % sessions.len().max(1))
                .copied()
                .unwrap_or(1);
            format!(r#"{{"type":"received","mid":"{s}-{seq}"}}"#)
        }
        Request::ReceivedRaw(mid) => format!(
            r#"{{"type":"received","mid":{}}}"#,
            serde_json::to_string(mid).unwrap_or_default()
        ),
        Request::Broadcast { depth } => {
            format!(r#"{{"type":"broadcast","data":{},"id":2}}"#, data(*depth))
        }
        Request::Members(room) => format!(r#"{{"type":"members","room":{}}}"#, name(room)),
        Request::Ping => r#"{"type":"ping","id":3}"#.to_string(),
        Request::Raw(bytes) => return (1, bytes.clone()),
        Request::Binary {
            op,
            len,
            target,
            payload,
        } => {
            let mut b = vec![*op, *len];
            b.extend_from_slice(target);
            b.extend_from_slice(payload);
            return (2, b);
        }
    };
    (1, text.into_bytes())
}

fn encode(f: &Frame, epoch: impl Fn(&str) -> Option<String>, sessions: &[u64]) -> Vec<u8> {
    let (op, body) = payload(&f.request, epoch, sessions);
    let opcode = if f.opcode % 4 == 0 {
        op
    } else {
        f.opcode & 0x0f
    };
    let mut out = vec![u8::from(f.fin) << 7 | (f.rsv & 7) << 4 | opcode];
    let len = if f.lie == 0 { body.len() as u64 } else { f.lie };
    let mask = u8::from(f.masked) << 7;
    if len < 126 && f.lie < 1 << 16 {
        out.push(mask | len as u8);
    } else if len < 1 << 16 {
        out.push(mask | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if f.masked {
        out.extend_from_slice(&key);
    }
    out.extend(
        body.iter()
            .enumerate()
            .map(|(i, b)| if f.masked { b ^ key[i % 4] } else { *b }),
    );
    out
}

fuzz_target!(|ops: Vec<Op>| {
    let mut sim = Sim::new(2, |c| {
        c.max_message_bytes = MAX;
        // A small slab: the engine reserves one up front, and every input builds two engines.
        c.max_connections_per_shard = 64;
        c.max_queue_bytes = 16 * 1024;
        c.rate_messages_per_sec = 0;
        c.rate_bytes_per_sec = 0;
        // Rooms keep history: numbered publications, recovering joins, expiry while time
        // passes, memberless rooms kept for their history.
        c.history_size = 8;
        c.history_ttl = Duration::from_secs(30);
        // Small bounds on receipts and the offline store, so that they are reached.
        c.max_pending_acks = 4;
        c.offline_max_messages = 4;
        c.offline_max_bytes = 1024;
        c.offline_ttl = Duration::from_secs(30);
        c.offline_max_users = 4;
    });
    let mut clients: Vec<Client> = Vec::new();
    let mut raw: Vec<(usize, SessionId)> = Vec::new();
    for op in ops.iter().take(64) {
        match op {
            Op::Connect { shard } => {
                if clients.len() < 8 {
                    let n = clients.len();
                    clients.push(sim.connect(usize::from(*shard), &format!("u{n}")));
                }
            }
            Op::Open { shard, bytes } => {
                let shard = usize::from(*shard);
                if let Ok((id, _)) = sim.try_open(shard) {
                    sim.raw(shard, id, bytes);
                    raw.push((shard, id));
                }
            }
            Op::Send { who, frame, split } => {
                let Some(c) = clients.get(usize::from(*who) % clients.len().max(1)) else {
                    continue;
                };
                let sessions: Vec<u64> = clients.iter().map(|c| c.id.0).collect();
                let epoch = |room: &str| sim.hub.room_position(room).map(|(_, e)| e);
                let bytes = encode(frame, epoch, &sessions);
                let at = usize::from(*split) % (bytes.len() + 1);
                sim.raw(c.shard, c.id, &bytes[..at]);
                sim.raw(c.shard, c.id, &bytes[at..]);
            }
            Op::End { who } => {
                if let Some(c) = clients.get(usize::from(*who) % clients.len().max(1)) {
                    sim.eof(c.shard, c.id);
                } else if let Some(&(shard, id)) = raw.first() {
                    sim.eof(shard, id);
                }
            }
            Op::Reading { who, on } => {
                if let Some(c) = clients.get(usize::from(*who) % clients.len().max(1)) {
                    if *on {
                        sim.resume_reading(c);
                    } else {
                        c.stop_reading();
                    }
                }
            }
            // Up to a minute at a time: past every timeout, in ticks the simulation steps through.
            Op::Wait { ms } => sim.advance(Duration::from_millis(u64::from(*ms % 1200) * 50)),
        }
        for c in &clients {
            c.discard_output();
        }
        assert_eq!(
            sim.hub.stats().panics,
            0,
            "a panic was contained after {op:?}"
        );
    }
});
