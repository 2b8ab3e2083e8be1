//! Random sequences of joins, leaves, publishes, direct sends, broadcasts and disconnects
//! across 2-4 simulated shards, checked against a naive single-threaded model of who receives
//! what, in which order, and which errors come back.
//!
//! The simulation settles after every operation, so each recipient's messages arrive in the
//! order the operations happened; the model predicts every text frame a client receives
//! (deliveries, presence, acks and errors) exactly.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{Client, Sim};

#[derive(Debug, Clone)]
enum Op {
    Connect {
        user: u8,
        shard: usize,
    },
    Join {
        c: usize,
        room: u8,
    },
    Leave {
        c: usize,
        room: u8,
    },
    Publish {
        c: usize,
        room: u8,
        exclude_self: bool,
    },
    Send {
        c: usize,
        to: u8,
    },
    Broadcast {
        c: usize,
        exclude_self: bool,
    },
    Disconnect {
        c: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..4, 0usize..4).prop_map(|(user, shard)| Op::Connect { user, shard }),
        3 => (any::<usize>(), 0u8..3).prop_map(|(c, room)| Op::Join { c, room }),
        1 => (any::<usize>(), 0u8..3).prop_map(|(c, room)| Op::Leave { c, room }),
        3 => (any::<usize>(), 0u8..3, any::<bool>())
            .prop_map(|(c, room, exclude_self)| Op::Publish { c, room, exclude_self }),
        2 => (any::<usize>(), 0u8..5).prop_map(|(c, to)| Op::Send { c, to }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(c, exclude_self)| Op::Broadcast { c, exclude_self }),
        1 => any::<usize>().prop_map(|c| Op::Disconnect { c }),
    ]
}

/// A client as the model sees it.
struct Modeled {
    client: Client,
    open: bool,
    /// Rooms in join order (a disconnect announces its departures in that order).
    rooms: Vec<String>,
    /// What it must receive before the next operation.
    expected: Vec<Value>,
}

fn room_name(r: u8) -> String {
    format!("r{r}")
}

fn user_name(u: u8) -> String {
    format!("u{u}")
}

/// Everyone in `room`, in no particular order.
fn members(cs: &[Modeled], room: &str) -> Vec<usize> {
    (0..cs.len())
        .filter(|&i| cs[i].open && cs[i].rooms.iter().any(|r| r == room))
        .collect()
}

/// Runs one operation on the simulation and records what the model expects.
fn run(sim: &mut Sim, cs: &mut Vec<Modeled>, shards: usize, op: &Op, n: usize) {
    let open: Vec<usize> = (0..cs.len()).filter(|&i| cs[i].open).collect();
    let pick = |c: usize| open.get(c % open.len().max(1)).copied();
    let presence = |kind: &str, room: &str, who: &Modeled| json!({"type": kind, "room": room, "user": who.client.user, "session": who.client.id.0.to_string()});
    match *op {
        Op::Connect { user, shard } => {
            let client = sim.connect(shard % shards, &user_name(user));
            cs.push(Modeled {
                client,
                open: true,
                rooms: Vec::new(),
                expected: Vec::new(),
            });
        }
        Op::Join { c, room } => {
            let Some(c) = pick(c) else { return };
            let room = room_name(room);
            let already = cs[c].rooms.contains(&room);
            if !already {
                let ev = presence("joined", &room, &cs[c]);
                for m in members(cs, &room) {
                    cs[m].expected.push(ev.clone());
                }
                cs[c].rooms.push(room.clone());
            }
            let count = members(cs, &room).len();
            cs[c]
                .expected
                .push(json!({"type":"ack","id":n,"op":"join","room":room,"members":count}));
            sim.send(&mut cs[c].client, json!({"type":"join","room":room,"id":n}));
        }
        Op::Leave { c, room } => {
            let Some(c) = pick(c) else { return };
            let room = room_name(room);
            if let Some(at) = cs[c].rooms.iter().position(|r| *r == room) {
                cs[c].rooms.remove(at);
                cs[c]
                    .expected
                    .push(json!({"type":"ack","id":n,"op":"leave","room":room}));
                let ev = presence("left", &room, &cs[c]);
                for m in members(cs, &room) {
                    cs[m].expected.push(ev.clone());
                }
            } else {
                cs[c]
                    .expected
                    .push(json!({"type":"error","id":n,"code":"not_member","room":room}));
            }
            sim.send(
                &mut cs[c].client,
                json!({"type":"leave","room":room,"id":n}),
            );
        }
        Op::Publish {
            c,
            room,
            exclude_self,
        } => {
            let Some(c) = pick(c) else { return };
            let room = room_name(room);
            if cs[c].rooms.contains(&room) {
                let msg = json!({"type":"message","room":room,"from":cs[c].client.user,
                    "session":cs[c].client.id.0.to_string(),"data":n});
                for m in members(cs, &room) {
                    if !(exclude_self && m == c) {
                        cs[m].expected.push(msg.clone());
                    }
                }
                cs[c]
                    .expected
                    .push(json!({"type":"ack","id":n,"op":"publish","room":room}));
            } else {
                cs[c]
                    .expected
                    .push(json!({"type":"error","id":n,"code":"not_member","room":room}));
            }
            sim.send(
                &mut cs[c].client,
                json!({"type":"publish","room":room,"data":n,"id":n,"exclude_self":exclude_self}),
            );
        }
        Op::Send { c, to } => {
            let Some(c) = pick(c) else { return };
            let to = user_name(to);
            let targets: Vec<usize> = open
                .iter()
                .copied()
                .filter(|&i| cs[i].client.user == to)
                .collect();
            if targets.is_empty() {
                cs[c]
                    .expected
                    .push(json!({"type":"error","id":n,"code":"not_online","to":to}));
            } else {
                let msg = json!({"type":"direct","from":cs[c].client.user,
                    "session":cs[c].client.id.0.to_string(),"data":n});
                for &t in &targets {
                    cs[t].expected.push(msg.clone());
                }
                cs[c].expected.push(
                    json!({"type":"ack","id":n,"op":"send","to":to,"sessions":targets.len()}),
                );
            }
            sim.send(
                &mut cs[c].client,
                json!({"type":"send","to":to,"data":n,"id":n}),
            );
        }
        Op::Broadcast { c, exclude_self } => {
            let Some(c) = pick(c) else { return };
            let msg = json!({"type":"broadcast","from":cs[c].client.user,
                "session":cs[c].client.id.0.to_string(),"data":n});
            for &m in &open {
                if !(exclude_self && m == c) {
                    cs[m].expected.push(msg.clone());
                }
            }
            cs[c]
                .expected
                .push(json!({"type":"ack","id":n,"op":"broadcast"}));
            sim.send(
                &mut cs[c].client,
                json!({"type":"broadcast","data":n,"id":n,"exclude_self":exclude_self}),
            );
        }
        Op::Disconnect { c } => {
            let Some(c) = pick(c) else { return };
            cs[c].open = false;
            for room in std::mem::take(&mut cs[c].rooms) {
                let ev = presence("left", &room, &cs[c]);
                for m in members(cs, &room) {
                    cs[m].expected.push(ev.clone());
                }
            }
            sim.send_message(&mut cs[c].client, tungstenite::Message::Close(None));
        }
    }
}

/// Keeps the fields the model predicts (error messages are prose; only their code counts).
fn comparable(mut v: Value) -> Value {
    if v["type"] == "error" {
        if let Some(o) = v.as_object_mut() {
            o.remove("message");
        }
    }
    v
}

fn check(sim: &mut Sim, cs: &mut [Modeled], op: &Op) -> Result<(), TestCaseError> {
    for m in cs.iter_mut().filter(|m| m.open) {
        let got: Vec<Value> = sim
            .texts(&mut m.client)
            .into_iter()
            .map(comparable)
            .collect();
        let want = std::mem::take(&mut m.expected);
        prop_assert_eq!(got, want, "client {} after {:?}", m.client.user, op);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the sequence, every client receives exactly what the model says, in order.
    #[test]
    fn every_client_receives_what_a_naive_model_predicts(
        shards in 2usize..=4,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut sim = Sim::new(shards, |c| {
            c.rate_messages_per_sec = 0;
            c.rate_bytes_per_sec = 0;
        });
        let mut cs: Vec<Modeled> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            run(&mut sim, &mut cs, shards, op, n);
            check(&mut sim, &mut cs, op)?;
        }
        let online: BTreeSet<String> = cs.iter().filter(|m| m.open).map(|m| m.client.user.clone()).collect();
        let hub_online: BTreeSet<String> = sim.hub.users().into_iter().map(|(u, _)| u.to_string()).collect();
        prop_assert_eq!(online, hub_online);
    }
}
