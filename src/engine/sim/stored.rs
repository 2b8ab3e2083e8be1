//! Joins to rooms whose history lives in the cluster's store (Redis cluster mode), on the
//! virtual clock, with a hand-driven stand-in for Redis ([`Store`]): the test decides when
//! each publication is numbered and delivered and when each history read is answered, so the
//! races of a real cluster (publications between the subscription and the read, between the
//! read and its answer) are played one by one. The recovering member's state machine
//! (`engine/recovery.rs`): its ack waits for the answer, live publications wait in its buffer,
//! replay and buffer merge by offset without gap or duplicate, an overflowing buffer closes
//! the session with a reconnect code, an unreadable store answers `recovered: false`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{Client, Sim};
use crate::engine::history::{self, HistoryPolicy, Since, StoredRead};
use crate::engine::ids::SessionId;
use crate::engine::recovery::RECOVERY_BUFFER;
use crate::engine::router::{Forwarded, Remote, Route, ShardMsg};
use crate::protocol::frame::Frame;

const EPOCH: &str = "e1";

/// Redis, played by hand: publications wait to be numbered, reads wait to be answered.
#[derive(Debug, Default)]
struct Store {
    s: Mutex<State>,
}

/// A read waiting for its answer: (room, session, the client's position).
type Read = (String, SessionId, Option<(u64, String)>);

#[derive(Debug, Default)]
struct State {
    /// Publications not yet numbered: (room, frame, exclude).
    queued: VecDeque<(String, Frame, Option<SessionId>)>,
    /// Reads not yet answered: (room, session, since).
    reads: VecDeque<Read>,
    /// Every numbered publication (offset = index + 1), unstamped.
    log: Vec<Frame>,
    /// How many the stream keeps.
    size: usize,
    /// Answer reads with "could not read".
    down: bool,
}

impl Remote for Store {
    fn forward(&self, _: &Route<'_>) -> Forwarded {
        Forwarded::default()
    }
    fn is_remote(&self, _: SessionId) -> bool {
        false
    }
    fn has_session(&self, _: SessionId) -> bool {
        false
    }
    fn members(&self, _: &str) -> Vec<(SessionId, Arc<str>)> {
        Vec::new()
    }
    fn member_count(&self, _: &str) -> usize {
        0
    }
    fn users(&self) -> Vec<(Arc<str>, usize)> {
        Vec::new()
    }
    fn user_sessions(&self, _: &str) -> usize {
        0
    }
    fn rooms(&self) -> Vec<(Arc<str>, usize)> {
        Vec::new()
    }
    fn session_count(&self) -> usize {
        0
    }
    fn history(&self) -> bool {
        true
    }
    fn publish_history(
        &self,
        room: &str,
        frame: &Frame,
        exclude: Option<SessionId>,
        _: HistoryPolicy,
    ) -> bool {
        let mut s = self.s.lock().unwrap();
        s.queued.push_back((room.into(), frame.clone(), exclude));
        true
    }
    fn read_history(
        &self,
        room: &str,
        id: SessionId,
        since: Option<Since<'_>>,
        _: HistoryPolicy,
    ) -> bool {
        let since = since.map(|s| (s.offset, s.epoch.unwrap_or_default().to_string()));
        self.s
            .lock()
            .unwrap()
            .reads
            .push_back((room.into(), id, since));
        true
    }
}

struct World {
    sim: Sim,
    store: Arc<Store>,
}

impl World {
    fn new(size: usize) -> Self {
        let store = Arc::new(Store::default());
        store.s.lock().unwrap().size = size;
        let sim = Sim::with_remote(2, store.clone(), move |c| {
            c.rate_messages_per_sec = 0;
            c.rate_bytes_per_sec = 0;
            c.presence = false;
            c.history_size = size;
        });
        Self { sim, store }
    }

    /// Numbers the next queued publication and delivers it on this node, as the bus thread
    /// does with what Redis published.
    fn number_next(&mut self) -> u64 {
        let (room, frame, exclude, offset) = {
            let mut s = self.store.s.lock().unwrap();
            let (room, frame, exclude) = s.queued.pop_front().expect("a queued publication");
            s.log.push(frame.clone());
            let offset = s.log.len() as u64;
            (room, frame, exclude, offset)
        };
        let router = &self.sim.hub.shared.router;
        if let Some(shared) = router.directory().room(&room) {
            router.route_from_bus(Route::Numbered {
                room: &shared,
                frame: history::stamp(&frame, offset),
                exclude,
                seq: offset,
            });
        }
        self.sim.step();
        offset
    }

    /// Answers the next read as Redis would now.
    fn answer_next(&mut self) {
        let (room, id, read) = {
            let mut s = self.store.s.lock().unwrap();
            let (room, id, since) = s.reads.pop_front().expect("a pending read");
            let top = s.log.len() as u64;
            let oldest = top.saturating_sub(s.size as u64) + 1;
            let read = if s.down {
                StoredRead::default()
            } else {
                let replay = since
                    .filter(|(n, e)| e == EPOCH && *n <= top && *n + 1 >= oldest)
                    .map(|(n, _)| {
                        (n + 1..=top)
                            .map(|o| (o, history::stamp(&s.log[o as usize - 1], o)))
                            .collect()
                    });
                StoredRead {
                    position: Some((top, EPOCH.into())),
                    replay,
                }
            };
            (room, id, read)
        };
        let msg = ShardMsg::History {
            id,
            room: room.into(),
            read,
        };
        self.sim
            .hub
            .shared
            .router
            .route_from_bus(Route::Session(msg));
        self.sim.step();
    }

    fn publish(&mut self, c: &mut Client, n: u64) {
        self.sim
            .send(c, json!({"type":"publish","room":"r","data":{"n":n}}));
    }

    fn ask_join(&mut self, c: &mut Client, recover: Option<u64>) {
        let mut req = json!({"type":"join","room":"r","id":"j"});
        if let Some(offset) = recover {
            req["recover"] = json!({"offset": offset, "epoch": EPOCH});
        }
        self.sim.send(c, req);
    }

    /// What the client got since the last look: acks as ("ack", offset), publications as
    /// ("m", offset).
    fn got(&mut self, c: &mut Client) -> Vec<(String, u64)> {
        self.sim
            .texts(c)
            .iter()
            .map(|v: &Value| {
                let kind = if v["type"] == "ack" { "ack" } else { "m" };
                (kind.to_string(), v["offset"].as_u64().unwrap_or(0))
            })
            .collect()
    }
}

fn m(o: u64) -> (String, u64) {
    ("m".into(), o)
}

fn ack(o: u64) -> (String, u64) {
    ("ack".into(), o)
}

#[test]
fn the_ack_waits_for_the_store_and_live_ones_wait_for_the_ack() {
    let mut w = World::new(100);
    let mut p = w.sim.connect(1, "p");
    w.ask_join(&mut p, None);
    assert!(w.got(&mut p).is_empty(), "no ack before the store answers");
    w.answer_next();
    assert_eq!(w.got(&mut p), [ack(0)]);
    for n in 1..=3 {
        w.publish(&mut p, n);
        let early = w.got(&mut p);
        assert!(
            early.is_empty(),
            "nothing before Redis numbers it: {early:?}"
        );
        w.number_next();
        assert_eq!(w.got(&mut p), [m(n)], "then from the bus, numbered");
    }
    // A member who joins while 4 and 5 are published: they wait for its ack.
    let mut c = w.sim.connect(0, "c");
    w.ask_join(&mut c, None);
    w.publish(&mut p, 4);
    w.number_next();
    w.answer_next(); // the read saw 4
    w.publish(&mut p, 5);
    w.number_next();
    assert_eq!(w.got(&mut c), [ack(4), m(5)], "4 is before its position");
}

#[test]
fn replay_and_buffer_merge_by_offset_without_gap_or_duplicate() {
    let mut w = World::new(100);
    let mut p = w.sim.connect(1, "p");
    w.ask_join(&mut p, None);
    w.answer_next();
    for n in 1..=3 {
        w.publish(&mut p, n);
        w.number_next();
    }
    // The client had up to 1. It joins; 4 reaches its node before the read, 5 after the read
    // but before the answer: 4 is both read and buffered, 5 buffered only.
    let mut c = w.sim.connect(0, "c");
    w.ask_join(&mut c, Some(1));
    w.publish(&mut p, 4);
    w.number_next();
    // Redis reads here, at position 4 (the answer holds 2..=4); 5 is delivered before the
    // answer comes back.
    let answer = {
        let s = w.store.s.lock().unwrap();
        let (room, id, _) = s.reads.front().cloned().unwrap();
        let replay = (2..=4)
            .map(|o| (o, history::stamp(&s.log[o as usize - 1], o)))
            .collect();
        (room, id, replay)
    };
    w.store.s.lock().unwrap().reads.clear();
    w.publish(&mut p, 5);
    w.number_next();
    assert!(w.got(&mut c).is_empty(), "all of it waits for the answer");
    let (room, id, replay) = answer;
    let read = StoredRead {
        position: Some((4, EPOCH.into())),
        replay: Some(replay),
    };
    let router = &w.sim.hub.shared.router;
    router.route_from_bus(Route::Session(ShardMsg::History {
        id,
        room: room.into(),
        read,
    }));
    w.sim.step();
    assert_eq!(
        w.got(&mut c),
        [ack(4), m(2), m(3), m(4), m(5)],
        "the replay, then the buffer above it: 4 once"
    );
    // A live 4 still on its way (published between the subscription and the read) is
    // dropped by the watermark; 6 goes through.
    let router = &w.sim.hub.shared.router;
    let shared = router.directory().room("r").unwrap();
    let late = history::stamp(&w.store.s.lock().unwrap().log[3], 4);
    router.route_from_bus(Route::Numbered {
        room: &shared,
        frame: late,
        exclude: None,
        seq: 4,
    });
    w.sim.step();
    w.publish(&mut p, 6);
    w.number_next();
    assert_eq!(w.got(&mut c), [m(6)]);
    let stats = w.sim.hub.stats();
    assert_eq!((stats.recoveries, stats.recovered_messages), (1, 3));
}

#[test]
fn trimmed_history_or_an_unreadable_store_answer_recovered_false() {
    let mut w = World::new(2);
    let mut p = w.sim.connect(1, "p");
    w.ask_join(&mut p, None);
    w.answer_next();
    for n in 1..=5 {
        w.publish(&mut p, n);
        w.number_next();
    }
    let mut c = w.sim.connect(0, "c");
    w.ask_join(&mut c, Some(1));
    w.answer_next();
    let acks = w.sim.texts(&mut c);
    assert_eq!(
        (&acks[0]["recovered"], &acks[0]["offset"], acks.len()),
        (&json!(false), &json!(5), 1),
        "only 4 and 5 are kept: nothing partial"
    );
    // Redis unreachable: no position, nothing replayed, live ones go on.
    let mut d = w.sim.connect(0, "d");
    w.store.s.lock().unwrap().down = true;
    w.ask_join(&mut d, Some(4));
    w.publish(&mut p, 6);
    w.number_next();
    w.answer_next();
    let got = w.sim.texts(&mut d);
    assert_eq!(got[0]["recovered"], false, "{got:?}");
    assert!(got[0].get("offset").is_none(), "no position: {got:?}");
    assert_eq!(got[1]["offset"], 6, "the buffered live one follows");
    assert_eq!(w.sim.hub.stats().recoveries_failed, 2);
}

#[test]
fn a_member_whose_buffer_overflows_is_told_to_reconnect() {
    let mut w = World::new(10);
    let mut p = w.sim.connect(1, "p");
    w.ask_join(&mut p, None);
    w.answer_next();
    let mut c = w.sim.connect(0, "c");
    w.ask_join(&mut c, Some(0));
    for n in 0..=RECOVERY_BUFFER as u64 {
        w.publish(&mut p, n);
        w.number_next();
        p.discard_output();
    }
    w.answer_next();
    let code = w.sim.close_code(&mut c);
    assert_eq!(
        code,
        Some(crate::protocol::close::Close::SlowConsumer.code()),
        "a reconnect code: it recovers again on its next join"
    );
    assert_eq!(w.sim.hub.stats().recoveries_failed, 1);
}

#[test]
fn a_member_who_leaves_while_recovering_gets_no_late_ack() {
    let mut w = World::new(10);
    let mut c = w.sim.connect(0, "c");
    w.ask_join(&mut c, Some(0));
    w.sim
        .send(&mut c, json!({"type":"leave","room":"r","id":"l"}));
    w.answer_next();
    let got = w.sim.texts(&mut c);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["op"], "leave", "the leave's ack only");
}
