//! Cluster mode: three real nodes over a real NATS or Redis server, started for each test on a
//! free loopback port. Every test runs once per bus; without `nats-server` (or
//! `redis-server`) on the machine, that bus's tests say so in one line and pass
//! (`.ci/run` installs both).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nats,
    Redis,
}

/// A bus server of this test's own.
struct Bus {
    kind: Kind,
    port: u16,
    child: Child,
}

fn find(bin: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"])
        .map(|d| PathBuf::from(d).join(bin))
        .find(|p| p.is_file());
    found
}

static SKIP_NATS: Once = Once::new();
static SKIP_REDIS: Once = Once::new();

impl Bus {
    /// Starts the bus, or says in one line (once per run) that its tests are skipped.
    fn start(kind: Kind) -> Option<Self> {
        let (bin, once) = match kind {
            Kind::Nats => ("nats-server", &SKIP_NATS),
            Kind::Redis => ("redis-server", &SKIP_REDIS),
        };
        let Some(path) = find(bin) else {
            once.call_once(|| eprintln!("cluster tests: {bin} not found, its tests are skipped"));
            return None;
        };
        let port = free_port();
        let mut bus = Bus {
            kind,
            port,
            child: spawn(&path, kind, port),
        };
        bus.wait_up();
        Some(bus)
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the bus did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the bus server and starts it again on the same port.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let bin = match self.kind {
            Kind::Nats => "nats-server",
            Kind::Redis => "redis-server",
        };
        self.child = spawn(&find(bin).unwrap(), self.kind, self.port);
        self.wait_up();
    }
}

fn spawn(path: &PathBuf, kind: Kind, port: u16) -> Child {
    let mut cmd = Command::new(path);
    match kind {
        Kind::Nats => cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]),
        Kind::Redis => cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]),
    };
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three nodes of one cluster, started side by side.
fn cluster(bus: &Bus) -> Vec<TestServer> {
    cluster_with(bus, |_| {})
}

/// Three nodes of one cluster (rate limits off), each configuration adjusted by `tweak`,
/// started side by side.
fn cluster_with(bus: &Bus, tweak: impl Fn(&mut shardhub::Config) + Copy + Send) -> Vec<TestServer> {
    let url = bus.url();
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..=3)
            .map(|i| {
                let url = url.clone();
                s.spawn(move || {
                    TestServer::start(move |c| {
                        c.cluster = Some(url);
                        c.node = Some(format!("n{i}"));
                        c.rate_messages_per_sec = 0;
                        c.rate_bytes_per_sec = 0;
                        tweak(c);
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Waits until every node lists `n` members in `room`.
fn members_everywhere(nodes: &[TestServer], room: &str, n: usize) {
    wait_until(&format!("{n} members of {room} on every node"), || {
        nodes
            .iter()
            .all(|s| s.hub.room_members(room).map_or(0, |m| m.len()) == n)
    });
}

fn joined(c: &mut Client, room: &str) {
    c.send_json(json!({"type":"join","room":room}));
    c.expect("ack");
}

/// Reads up to the next message of `kind`, skipping presence events.
fn next(c: &mut Client, kind: &str) -> serde_json::Value {
    loop {
        let v = c.recv_json();
        if v["type"] == kind {
            return v;
        }
        assert!(
            matches!(v["type"].as_str(), Some("joined" | "left")),
            "expected {kind}, got {v}"
        );
    }
}

macro_rules! on_both_buses {
    ($($name:ident),* $(,)?) => {
        mod nats {
            $(#[test] fn $name() { if let Some(bus) = super::Bus::start(super::Kind::Nats) { super::$name(bus) } })*
        }
        mod redis {
            $(#[test] fn $name() { if let Some(bus) = super::Bus::start(super::Kind::Redis) { super::$name(bus) } })*
        }
    };
}

on_both_buses!(
    rooms_presence_and_members_span_the_nodes,
    direct_messages_find_users_anywhere_and_not_online_is_cluster_wide,
    broadcasts_reach_every_node,
    the_http_api_answers_for_the_whole_cluster_from_any_node,
    a_bus_restart_is_survived,
    a_killed_node_leaves_no_ghosts,
    a_node_that_shuts_down_is_forgotten_at_once,
    acked_sends_and_offline_messages_cross_nodes,
);

mod nats_only {
    #[test]
    fn history_is_refused_and_recovery_says_false() {
        if let Some(bus) = super::Bus::start(super::Kind::Nats) {
            super::history_is_refused_and_recovery_says_false(bus)
        }
    }
}

/// With NATS, room history stays refused: a node never hands out positions that another node
/// would not share (docs/cluster.md#history-and-recovery says to use Redis).
fn history_is_refused_and_recovery_says_false(bus: Bus) {
    let nodes = cluster(&bus);
    let e = nodes[0]
        .hub
        .set_room_history("lobby", 10, std::time::Duration::ZERO)
        .unwrap_err();
    assert!(
        e.to_string().contains("cluster mode") && e.to_string().contains("redis://"),
        "{e}"
    );
    let r = http(
        nodes[0].addr,
        "PUT",
        "/api/v1/rooms/lobby/history",
        Some(r#"{"size":10}"#),
    );
    assert_eq!((r.status, r.error_code()), (501, "unsupported".into()));
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let mut b = Client::connect(&nodes[1], Some("bob"));
    joined(&mut a, "lobby");
    // An SSE stream numbers the room on its node (its own ids), and still no WebSocket client
    // sees a position.
    let mut st = SseClient::open(nodes[0].addr, "/sse?room=lobby", &[]);
    wait_until("the stream joined", || {
        nodes[0].hub.room("lobby").is_some_and(|r| r.members == 2)
    });
    members_everywhere(&nodes[1..], "lobby", 1);
    b.send_json(json!({"type":"join","room":"lobby","id":1,"recover":{"offset":0,"epoch":"x"}}));
    let ack = next(&mut b, "ack");
    assert_eq!(ack["recovered"], false, "{ack}");
    assert!(
        ack.get("offset").is_none() && ack.get("epoch").is_none(),
        "{ack}"
    );
    b.send_json(json!({"type":"publish","room":"lobby","data":"hi"}));
    let m = next(&mut a, "message");
    assert!(
        m.get("offset").is_none(),
        "no position in cluster mode: {m}"
    );
    let (id, _, v) = st.next_event();
    assert_eq!(
        (id, v["data"].as_str()),
        (1, Some("hi")),
        "the stream's own numbering"
    );
}

fn rooms_presence_and_members_span_the_nodes(bus: Bus) {
    let nodes = cluster(&bus);
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let mut b = Client::connect(&nodes[1], Some("bob"));
    let mut c = Client::connect(&nodes[2], Some("carol"));
    joined(&mut a, "lobby");
    members_everywhere(&nodes, "lobby", 1);
    joined(&mut b, "lobby");
    assert_eq!(
        next(&mut a, "joined")["user"],
        "bob",
        "presence crosses nodes"
    );
    members_everywhere(&nodes, "lobby", 2);
    c.send_json(json!({"type":"join","room":"lobby","id":1}));
    let ack = c.expect("ack");
    assert_eq!(
        ack["members"], 3,
        "the join ack counts members on every node"
    );
    for x in [&mut a, &mut b] {
        // Bob may also hear alice's own `joined`: node 2 subscribed to the room when bob
        // joined, and node 1 can put alice's event on the bus after the delta that listed her
        // (docs/cluster.md, "The consistency model"). Nothing else may come before carol's.
        let mut j = next(x, "joined");
        if j["user"] == "alice" {
            j = next(x, "joined");
        }
        assert_eq!(j["user"], "carol");
    }
    members_everywhere(&nodes, "lobby", 3);
    a.send_json(json!({"type":"publish","room":"lobby","data":"hi","exclude_self":true}));
    for x in [&mut b, &mut c] {
        let m = next(x, "message");
        assert_eq!(
            (m["from"].as_str(), m["data"].as_str()),
            (Some("alice"), Some("hi"))
        );
    }
    c.send_json(json!({"type":"members","room":"lobby","id":2}));
    let list = next(&mut c, "members");
    let mut users: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "bob", "carol"]);
    b.send_json(json!({"type":"leave","room":"lobby"}));
    b.expect("ack");
    for x in [&mut a, &mut c] {
        assert_eq!(next(x, "left")["user"], "bob");
    }
    members_everywhere(&nodes, "lobby", 2);
    // One publisher's messages arrive in order on another node.
    for i in 0..50 {
        a.send_json(json!({"type":"publish","room":"lobby","data":i,"exclude_self":true}));
    }
    for i in 0..50 {
        assert_eq!(next(&mut c, "message")["data"], i);
    }
}

fn direct_messages_find_users_anywhere_and_not_online_is_cluster_wide(bus: Bus) {
    let nodes = cluster(&bus);
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let mut b1 = Client::connect(&nodes[1], Some("bob"));
    let mut b2 = Client::connect(&nodes[2], Some("bob"));
    wait_until("bob's two sessions are known on alice's node", || {
        nodes[0]
            .hub
            .users()
            .iter()
            .any(|(u, n)| &**u == "bob" && *n == 2)
    });
    a.send_json(json!({"type":"send","to":"bob","data":"psst","id":"m"}));
    let ack = a.expect("ack");
    assert_eq!(ack["sessions"], 2, "{ack}");
    for b in [&mut b1, &mut b2] {
        let d = b.expect("direct");
        assert_eq!(
            (d["from"].as_str(), d["data"].as_str()),
            (Some("alice"), Some("psst"))
        );
    }
    a.send_json(json!({"type":"send","to":"nobody","data":1,"id":"x"}));
    assert_eq!(a.expect("error")["code"], "not_online");
    // Binary sends too.
    let mut frame = vec![2u8, 3];
    frame.extend_from_slice(b"bob");
    frame.extend_from_slice(b"raw");
    a.send_binary(&frame);
    for b in [&mut b1, &mut b2] {
        assert!(b.recv_binary().ends_with(b"raw"));
    }
}

/// A receipt travels back to the sender's node; a message stored on alice's node reaches
/// carol's first session on another node, in order, once, and leaves alice's node's store.
fn acked_sends_and_offline_messages_cross_nodes(bus: Bus) {
    let nodes = cluster(&bus);
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let mut b = Client::connect(&nodes[1], Some("bob"));
    wait_until("bob is known on alice's node", || {
        nodes[0].hub.is_online("bob")
    });
    a.send_json(json!({"type":"send","to":"bob","data":"x","id":1,"ack":true}));
    let ack = a.expect("ack");
    assert_eq!(ack["sessions"], 1, "{ack}");
    let d = b.expect("direct");
    assert_eq!(
        (d["mid"].clone(), d["ack"].as_bool()),
        (ack["mid"].clone(), Some(true))
    );
    b.send_json(json!({"type":"received","mid":d["mid"]}));
    let done = a.expect("delivered");
    assert_eq!(
        done,
        json!({"type":"delivered","id":1,"mid":ack["mid"],"to":"bob","sessions":1,"reached":1})
    );
    // Carol is offline everywhere: three messages wait on alice's node.
    for i in 0..3 {
        a.send_json(json!({"type":"send","to":"carol","data":i,"store":true}));
        let ack = a.expect("ack");
        assert_eq!(ack["stored"], true, "{ack}");
    }
    assert_eq!(nodes[0].hub.offline_size(), (1, 3));
    let mut c = Client::connect(&nodes[2], Some("carol"));
    for i in 0..3 {
        let d = c.expect("direct");
        assert_eq!(
            (d["data"].as_u64(), d["stored"].as_bool()),
            (Some(i), Some(true))
        );
        assert_eq!(d["from"], "alice");
    }
    assert_eq!(nodes[0].hub.offline_size(), (0, 0));
    let mut c2 = Client::connect(&nodes[1], Some("carol"));
    c2.expect_silence(Duration::from_millis(300));
    c.expect_silence(Duration::from_millis(1));
}

fn broadcasts_reach_every_node(bus: Bus) {
    let nodes = cluster(&bus);
    let mut cs: Vec<Client> = nodes
        .iter()
        .enumerate()
        .map(|(i, s)| Client::connect(s, Some(&format!("u{i}"))))
        .collect();
    wait_until("every node knows three sessions", || {
        nodes.iter().all(|s| s.hub.session_count() == 3)
    });
    cs[0].send_json(json!({"type":"broadcast","data":"all","id":1}));
    for c in cs.iter_mut() {
        assert_eq!(c.expect("broadcast")["data"], "all");
    }
    cs[0].expect("ack");
    cs[1].send_json(json!({"type":"broadcast","data":"others","exclude_self":true}));
    cs[0].expect("broadcast");
    cs[2].expect("broadcast");
    cs[1].expect_silence(Duration::from_millis(200));
}

fn the_http_api_answers_for_the_whole_cluster_from_any_node(bus: Bus) {
    let nodes = cluster(&bus);
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let mut b = Client::connect(&nodes[1], Some("bob"));
    joined(&mut a, "lobby");
    joined(&mut b, "lobby");
    members_everywhere(&nodes, "lobby", 2);
    let api = nodes[2].addr;
    let online = http(api, "GET", "/api/v1/online", None).json();
    assert_eq!(online["total"], 2, "{online}");
    let room = http(api, "GET", "/api/v1/rooms/lobby", None).json();
    assert_eq!(room["members"].as_array().unwrap().len(), 2, "{room}");
    let r = http(
        api,
        "POST",
        "/api/v1/rooms/lobby/publish",
        Some(r#"{"data":"from the api"}"#),
    );
    assert_eq!(r.status, 200);
    for x in [&mut a, &mut b] {
        assert_eq!(next(x, "message")["data"], "from the api");
    }
    let r = http(
        api,
        "POST",
        "/api/v1/send",
        Some(r#"{"to":"bob","data":"dm"}"#),
    );
    assert_eq!((r.status, r.json()["sessions"].as_u64()), (200, Some(1)));
    assert_eq!(next(&mut b, "direct")["data"], "dm");
    let r = http(api, "POST", "/api/v1/broadcast", Some(r#"{"data":"bc"}"#));
    assert_eq!(r.status, 200);
    for x in [&mut a, &mut b] {
        assert_eq!(next(x, "broadcast")["data"], "bc");
    }
    // Node 3 knows the others and says so in its stats and metrics.
    let stats = http(api, "GET", "/api/v1/stats", None).json();
    let names: Vec<&str> = stats["cluster"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        (stats["cluster"]["node"].as_str(), names),
        (Some("n3"), vec!["n1", "n2"])
    );
    assert_eq!(stats["cluster"]["bus"]["connected"], true);
    let text = String::from_utf8(http(api, "GET", "/metrics", None).body).unwrap();
    let metrics = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition text");
    let known = metrics
        .samples
        .iter()
        .find(|s| s.metric == "shardhub_cluster_nodes")
        .map(|s| s.value.clone());
    assert!(
        matches!(known, Some(prometheus_parse::Value::Gauge(n)) if n == 3.0),
        "{known:?}"
    );
    assert!(text.contains("shardhub_bus_published_total"));
    // A session on node 1 closed through node 3.
    let r = http(
        api,
        "DELETE",
        &format!("/api/v1/sessions/{}?code=4001&reason=bye", a.session),
        None,
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(a.expect_close(), 4001);
    wait_until("alice is gone everywhere", || {
        nodes.iter().all(|s| !s.hub.is_online("alice"))
    });
}

fn a_bus_restart_is_survived(mut bus: Bus) {
    let nodes = cluster(&bus);
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let mut b = Client::connect(&nodes[1], Some("bob"));
    joined(&mut a, "r");
    joined(&mut b, "r");
    members_everywhere(&nodes, "r", 2);
    bus.restart();
    // Local delivery never stops; cross-node delivery comes back once the nodes reconnect.
    a.send_json(json!({"type":"publish","room":"r","data":"local"}));
    assert_eq!(next(&mut a, "message")["data"], "local");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    b.ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    loop {
        assert!(
            Instant::now() < deadline,
            "cross-node delivery never resumed"
        );
        a.send_json(json!({"type":"publish","room":"r","data":i,"exclude_self":true}));
        i += 1;
        match b.ws.read() {
            Ok(tungstenite::Message::Text(t)) if t.contains("\"message\"") => break,
            _ => continue,
        }
    }
    let stats = nodes[0].hub.bus_stats().expect("cluster mode");
    assert!(stats.reconnects >= 1, "{stats:?}");
}

fn a_node_that_shuts_down_is_forgotten_at_once(bus: Bus) {
    let mut nodes = cluster(&bus);
    let mut watcher = Client::connect(&nodes[0], Some("watcher"));
    joined(&mut watcher, "r");
    // Known everywhere: the watcher's node has subscribed to the room's channel, so alice's
    // `joined` below cannot go out before it listens.
    members_everywhere(&nodes, "r", 1);
    let leaving = nodes.pop().expect("three nodes");
    let mut alice = Client::connect(&leaving, Some("alice"));
    joined(&mut alice, "r");
    wait_until("alice is online everywhere", || {
        nodes.iter().all(|s| s.hub.is_online("alice"))
    });
    assert_eq!(next(&mut watcher, "joined")["user"], "alice");
    let others = |s: &TestServer| s.hub.cluster_nodes().map_or(0, |(_, n)| n.len());
    assert!(nodes.iter().all(|s| others(s) == 2));
    let stopped = Instant::now();
    // A graceful shutdown says goodbye on the bus; the others need not wait for its silence
    // (`DEAD_AFTER`, 6 s). Over NATS the goodbye was lost until the bus thread flushed it.
    leaving.shutdown();
    while nodes
        .iter()
        .any(|s| s.hub.is_online("alice") || others(s) != 1)
    {
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "never forgotten"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = stopped.elapsed();
    eprintln!("cluster: a node that shut down was forgotten everywhere after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "forgotten after {took:?}, as if silent"
    );
    assert_eq!(next(&mut watcher, "left")["user"], "alice");
    drop(alice);
}

fn a_killed_node_leaves_no_ghosts(bus: Bus) {
    let nodes = cluster(&bus);
    let mut watcher = Client::connect(&nodes[0], Some("watcher"));
    joined(&mut watcher, "haunt");
    let port = free_port();
    let mut ghost_node = Command::new(env!("CARGO_BIN_EXE_shardhub"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shards",
            "1",
            "--cluster",
            &bus.url(),
            "--node",
            "doomed",
            "--log",
            "warn",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("the fourth node listens", || {
        TcpStream::connect(addr).is_ok()
    });
    let ws = connect_raw(&format!("ws://{addr}/ws?user=ghost")).expect("upgrade");
    let mut ghost = Client::greeted(ws);
    joined(&mut ghost, "haunt");
    wait_until("the ghost is online everywhere", || {
        nodes.iter().all(|s| s.hub.is_online("ghost"))
    });
    assert_eq!(next(&mut watcher, "joined")["user"], "ghost");
    let killed = Instant::now();
    // SIGKILL: no goodbye on the bus.
    ghost_node.kill().unwrap();
    let _ = ghost_node.wait();
    let deadline = killed + Duration::from_secs(15);
    while nodes.iter().any(|s| {
        s.hub.is_online("ghost") || s.hub.room_members("haunt").is_some_and(|m| m.len() > 1)
    }) {
        assert!(Instant::now() < deadline, "ghosts left after 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = killed.elapsed();
    eprintln!("cluster: a killed node was forgotten everywhere after {took:?}");
    assert!(took <= Duration::from_secs(10), "forgotten after {took:?}");
    // The room's members here are told, as if the ghost had left.
    watcher
        .ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    assert_eq!(next(&mut watcher, "left")["user"], "ghost");
}

// ----- room history in Redis -----

macro_rules! on_redis {
    ($($name:ident),* $(,)?) => {
        mod redis_history {
            $(#[test] fn $name() { if let Some(bus) = super::Bus::start(super::Kind::Redis) { super::$name(bus) } })*
        }
    };
}

on_redis!(
    history_lives_in_redis_and_a_client_recovers_on_another_node,
    a_publish_loop_racing_the_recovery_loses_and_repeats_nothing,
    overflowed_history_and_a_reset_say_recovered_false,
    an_sse_stream_resumes_on_another_node_from_last_event_id,
    a_restarted_node_keeps_the_epoch_and_its_clients_recover,
);

/// Three nodes whose rooms keep `size` publications in Redis.
fn history_cluster(bus: &Bus, size: usize) -> Vec<TestServer> {
    cluster_with(bus, move |c| {
        c.presence = false;
        c.history_size = size;
        c.history_ttl = Duration::from_secs(300);
    })
}

/// Joins `room` (recovering from `recover`) and returns the ack.
fn join_at(c: &mut Client, room: &str, recover: Option<(u64, &str)>) -> serde_json::Value {
    let mut req = json!({"type":"join","room":room,"id":"j"});
    if let Some((offset, epoch)) = recover {
        req["recover"] = json!({"offset": offset, "epoch": epoch});
    }
    c.send_json(req);
    let ack = next(c, "ack");
    assert_eq!(ack["op"], "join", "{ack}");
    ack
}

/// The offsets of the next `n` publications (`message`s, or raw JSON objects from
/// `Hub::publish`, which are stamped all the same).
fn offsets(c: &mut Client, n: usize) -> Vec<u64> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let m = c.recv_json();
        if matches!(m["type"].as_str(), Some("joined" | "left")) {
            continue;
        }
        got.push(
            m["offset"]
                .as_u64()
                .unwrap_or_else(|| panic!("no offset: {m}")),
        );
    }
    got
}

fn history_lives_in_redis_and_a_client_recovers_on_another_node(bus: Bus) {
    let nodes = history_cluster(&bus, 100);
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let mut b = Client::connect(&nodes[1], Some("bob"));
    let mut o = Client::connect(&nodes[2], Some("olga"));
    let ack = join_at(&mut a, "h", None);
    let epoch = ack["epoch"]
        .as_str()
        .expect("an epoch in the ack")
        .to_string();
    assert_eq!(ack["offset"], 0, "{ack}");
    for c in [&mut b, &mut o] {
        let ack = join_at(c, "h", None);
        assert_eq!(
            ack["epoch"],
            epoch.as_str(),
            "one epoch on every node: {ack}"
        );
    }
    members_everywhere(&nodes, "h", 3);
    for i in 1..=3 {
        b.send_json(json!({"type":"publish","room":"h","data":{"i":i}}));
    }
    // Members on three nodes, the publisher's included, see the same offsets in order.
    assert_eq!(offsets(&mut a, 3), [1, 2, 3]);
    assert_eq!(offsets(&mut o, 3), [1, 2, 3]);
    assert_eq!(offsets(&mut b, 3), [1, 2, 3]);
    a.close();
    members_everywhere(&nodes, "h", 2);
    for i in 4..=6 {
        b.send_json(json!({"type":"publish","room":"h","data":{"i":i}}));
    }
    assert_eq!(offsets(&mut o, 3), [4, 5, 6]);
    let r = http(
        nodes[1].addr,
        "POST",
        "/api/v1/rooms/h/publish",
        Some(r#"{"data":{"i":7}}"#),
    );
    assert!(r.status < 300, "{}", r.text());
    assert_eq!(offsets(&mut o, 1), [7]);
    // Alice comes back on the third node: exactly what she missed, in order, then live ones.
    let mut a = Client::connect(&nodes[2], Some("alice"));
    let ack = join_at(&mut a, "h", Some((3, &epoch)));
    assert_eq!(
        (&ack["recovered"], &ack["offset"], ack["epoch"].as_str()),
        (&json!(true), &json!(7), Some(epoch.as_str())),
        "{ack}"
    );
    let replay: Vec<serde_json::Value> = (0..4).map(|_| next(&mut a, "message")).collect();
    let got: Vec<(u64, u64)> = replay
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["data"]["i"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(4, 4), (5, 5), (6, 6), (7, 7)]);
    b.send_json(json!({"type":"publish","room":"h","data":{"i":8}}));
    assert_eq!(offsets(&mut a, 1), [8]);
    a.expect_silence(Duration::from_millis(200));
    let text = http(nodes[2].addr, "GET", "/metrics", None).text();
    let recoveries: u64 = text
        .lines()
        .filter(|l| l.starts_with("shardhub_recoveries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(recoveries, 1, "the recovery is counted on its node");
    assert!(
        text.contains("shardhub_bus_history_errors_total 0"),
        "no Redis error"
    );
}

fn a_publish_loop_racing_the_recovery_loses_and_repeats_nothing(bus: Bus) {
    let nodes = history_cluster(&bus, 10_000);
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let epoch = join_at(&mut a, "race", None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    members_everywhere(&nodes, "race", 1);
    let hub = nodes[1].hub.clone();
    for i in 0..5 {
        hub.publish("race", format!("{{\"i\":{i}}}").as_str())
            .unwrap();
    }
    assert_eq!(offsets(&mut a, 5), [1, 2, 3, 4, 5]);
    a.close();
    wait_until("alice gone", || nodes[1].hub.room_members("race").is_none());
    // A publish loop on node 2 (through its Hub, as an application would), while Alice
    // recovers on node 3. The room has no member while she is away: the loop keeps a member
    // on node 2 so that publications have somewhere to go.
    let mut keeper = Client::connect(&nodes[1], Some("keeper"));
    join_at(&mut keeper, "race", None);
    const LOOP: u64 = 400;
    let publisher = std::thread::spawn(move || {
        for i in 0..LOOP {
            hub.publish("race", format!("{{\"i\":{}}}", i + 5).as_str())
                .unwrap();
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    let mut a = Client::connect(&nodes[2], Some("alice"));
    let ack = join_at(&mut a, "race", Some((5, &epoch)));
    assert_eq!(ack["recovered"], true, "{ack}");
    publisher.join().unwrap();
    let last = 5 + LOOP;
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        got.extend(offsets(&mut a, 1));
    }
    let want: Vec<u64> = (6..=last).collect();
    assert_eq!(got, want, "every publication after 5, once, in order");
    a.expect_silence(Duration::from_millis(200));
}

fn overflowed_history_and_a_reset_say_recovered_false(bus: Bus) {
    let nodes = history_cluster(&bus, 5);
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let mut b = Client::connect(&nodes[1], Some("bob"));
    let epoch = join_at(&mut a, "small", None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    join_at(&mut b, "small", None);
    members_everywhere(&nodes, "small", 2);
    b.send_json(json!({"type":"publish","room":"small","data":1}));
    assert_eq!(offsets(&mut a, 1), [1]);
    a.close();
    members_everywhere(&nodes, "small", 1);
    for i in 0..10 {
        b.send_json(json!({"type":"publish","room":"small","data":i}));
    }
    assert_eq!(offsets(&mut b, 11).last(), Some(&11));
    // 2..=6 were pushed out of the 5 kept: nothing partial, the current position instead.
    let mut a = Client::connect(&nodes[2], Some("alice"));
    let ack = join_at(&mut a, "small", Some((1, &epoch)));
    assert_eq!(
        (&ack["recovered"], &ack["offset"]),
        (&json!(false), &json!(11)),
        "{ack}"
    );
    b.send_json(json!({"type":"publish","room":"small","data":"live"}));
    assert_eq!(
        offsets(&mut a, 1),
        [12],
        "live ones go on, nothing replayed"
    );
    // A history reset drops the stream: a new epoch, so the old position cannot recover.
    nodes[1]
        .hub
        .set_room_history("small", 5, Duration::from_secs(300))
        .unwrap();
    b.send_json(json!({"type":"publish","room":"small","data":"after"}));
    assert_eq!(offsets(&mut a, 1), [1], "a new stream");
    a.close();
    let mut a = Client::connect(&nodes[0], Some("alice"));
    let ack = join_at(&mut a, "small", Some((12, &epoch)));
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], epoch.as_str(), "{ack}");
}

fn an_sse_stream_resumes_on_another_node_from_last_event_id(bus: Bus) {
    let nodes = history_cluster(&bus, 100);
    let mut b = Client::connect(&nodes[1], Some("bob"));
    let epoch = join_at(&mut b, "s", None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let mut st = SseClient::open(nodes[0].addr, "/sse?room=s", &[]);
    // A stream is a member of its node's room (Bob counts there too), not announced to the
    // others: wait for it there, and for the node's subscription (a journal flush, every 20 ms
    // at the latest).
    wait_until("the stream joined", || {
        nodes[0].hub.room("s").is_some_and(|r| r.members == 2)
    });
    std::thread::sleep(Duration::from_millis(100));
    for i in 1..=2 {
        b.send_json(json!({"type":"publish","room":"s","data":i}));
    }
    for want in 1..=2 {
        let (id, event, v) = st.next_event();
        assert_eq!(
            (id, event.as_str(), &v["data"]),
            (want, "message", &json!(want))
        );
    }
    assert_eq!(
        st.last_id,
        format!("2:{epoch}"),
        "the ids are Redis's positions"
    );
    let last = st.last_id.clone();
    drop(st);
    for i in 3..=4 {
        b.send_json(json!({"type":"publish","room":"s","data":i}));
    }
    assert_eq!(offsets(&mut b, 4), [1, 2, 3, 4]);
    // Back on another node: the two it missed, then live ones.
    let mut st = SseClient::open(nodes[2].addr, "/sse?room=s", &[("Last-Event-ID", &last)]);
    for want in 3..=4 {
        let (id, _, v) = st.next_event();
        assert_eq!((id, &v["data"]), (want, &json!(want)));
    }
    b.send_json(json!({"type":"publish","room":"s","data":5}));
    assert_eq!(st.next_event().0, 5);
    // A position from another epoch: a reset event with the current position.
    let mut old = SseClient::open(nodes[0].addr, "/sse?room=s", &[("Last-Event-ID", "1:gone")]);
    let (id, event, v) = old.next_event();
    assert_eq!((id, event.as_str(), &v["offset"]), (5, "reset", &json!(5)));
}

/// The stream lives in Redis: every node of the cluster restarting one after the other (here:
/// the only node, then a new one) changes no epoch, and a client recovers across it.
fn a_restarted_node_keeps_the_epoch_and_its_clients_recover(bus: Bus) {
    let start = |name: &str| {
        let (url, name) = (bus.url(), name.to_string());
        TestServer::start(move |c| {
            c.cluster = Some(url);
            c.node = Some(name);
            c.presence = false;
            c.history_size = 100;
        })
    };
    let first = start("before");
    let mut a = Client::connect(&first, Some("alice"));
    let epoch = join_at(&mut a, "r", None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..=3 {
        a.send_json(json!({"type":"publish","room":"r","data":i}));
    }
    assert_eq!(offsets(&mut a, 3), [1, 2, 3]);
    drop(a);
    first.shutdown();
    let second = start("after");
    let mut a = Client::connect(&second, Some("alice"));
    let ack = join_at(&mut a, "r", Some((1, &epoch)));
    assert_eq!(
        (&ack["recovered"], &ack["offset"], ack["epoch"].as_str()),
        (&json!(true), &json!(3), Some(epoch.as_str())),
        "{ack}"
    );
    assert_eq!(offsets(&mut a, 2), [2, 3]);
}
