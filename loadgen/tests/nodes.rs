//! One run over two shardhub servers on two ports, as a cluster would be measured. Here they are
//! independent hubs (no cluster mode), which makes the assignment visible: each server counts the
//! connections and requests it got, and a room's publishes reach only the subscribers on the
//! publishers' server.

use shardhub_loadgen::plan::Scenario;
use shardhub_loadgen::target::Targets;
use shardhub_loadgen::{run, Gate, RunSummary};

use crate::hub::{no_failures, plan, Hub};

#[test]
fn echo_spreads_connections_round_robin_by_global_index() {
    let (a, b) = (Hub::start(|_| {}), Hub::start(|_| {}));
    let mut p = plan(Scenario::Echo, &a);
    p.targets = Targets::parse(&[a.url.clone(), b.url.clone()], None).unwrap();
    // 9 connections on 3 threads (0..3, 3..6, 6..9), open loop at 100 requests/s each for 1 s.
    // Round-robin by global index puts 0, 2, 4, 6, 8 on A and 1, 3, 5, 7 on B; by each
    // thread's own index it would be 6 and 3, and by the first URL alone 9 and 0.
    p.conns = 9;
    p.threads = 3;
    p.rate = 900.0;
    let s = run(&p, Gate::Local).unwrap();
    no_failures(&s);
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.handshakes, sb.handshakes), (5, 4));
    assert_eq!(
        (sa.messages_in, sb.messages_in),
        (500, 400),
        "pings by server"
    );
    assert_eq!(s.urls, [a.url.clone(), b.url.clone()]);
    assert_eq!(s.url, a.url, "the first URL, as before");
    assert_eq!(s.publisher_url, None, "echo has no publishers");
    let t = s.traffic.as_ref().unwrap();
    assert_eq!((t.sent, t.received, t.lost), (900, 900, 0));
    let by_url = |u: &str| s.latency_by_url[u].count;
    assert_eq!((by_url(&a.url), by_url(&b.url)), (500, 400));
    assert_eq!(s.latency.as_ref().unwrap().count, 900);
    assert!(s
        .text()
        .contains("round trip latency by requester URL (ms):"));
}

#[test]
fn fanout_from_one_node_reports_latency_by_subscriber_url_across_processes() {
    let (a, b) = (Hub::start(|_| {}), Hub::start(|_| {}));
    let dir = std::env::temp_dir().join(format!("loadgen-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("run.json");
    // Publisher on A, publishing to both rooms; subscriber i is member i / 2 of room i % 2 and
    // the members of each room go round the URLs: 0, 1, 4, 5 on A and 2, 3 on B (each room has
    // members on both). Two worker processes, whose latencies by URL must merge.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardhub-loadgen"))
        .args(["fanout", "--url", &format!("{},{}", a.url, b.url)])
        .args(["--publisher-url", &a.url, "--conns", "6", "--rooms", "2"])
        .args(["--rate", "100", "--duration", "1", "--grace", "0.5"])
        .args(["--procs", "2", "--out"])
        .arg(&json)
        .output()
        .expect("run the binary");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let s: RunSummary = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    no_failures(&s);
    assert_eq!(s.params.procs, 2);
    let (sa, sb) = (a.stats(), b.stats());
    let by_server = (sa.handshakes, sb.handshakes);
    assert_eq!(
        by_server,
        (5, 2),
        "publisher + 4 subscribers, 2 subscribers"
    );
    assert_eq!(s.urls, [a.url.clone(), b.url.clone()]);
    assert_eq!(s.publisher_url.as_deref(), Some(a.url.as_str()));
    // Independent hubs: B's subscribers are in rooms nobody publishes to on B. (In a cluster,
    // these would be the cross-node deliveries.)
    let t = s.traffic.as_ref().unwrap();
    assert_eq!((t.sent, t.expected, t.unique, t.lost), (100, 300, 200, 100));
    for r in &t.rooms {
        assert_eq!((r.members, r.published, r.unique), (3, 50, 100), "{r:?}");
    }
    let (la, lb) = (&s.latency_by_url[&a.url], &s.latency_by_url[&b.url]);
    assert_eq!((la.count, lb.count), (200, 0));
    assert_eq!(s.latency.as_ref().unwrap().count, 200);
    assert!(la.p50_ms > 0.0 && la.p50_ms <= la.p99_ms && la.p99_ms <= la.max_ms);
    // The text summary has the table, the publishers' URL marked.
    let table = "delivery latency by subscriber URL (ms):";
    assert!(text.contains(table), "{text}");
    let row = |u: &str| text.lines().find(|l| l.contains(u) && !l.contains("->"));
    let (ra, rb) = (row(&a.url).unwrap(), row(&b.url).unwrap());
    assert!(ra.starts_with("  * ") && ra.contains(" 200 "), "{text}");
    assert!(rb.starts_with("    ") && rb.contains(" 0 "), "{text}");
}

#[test]
fn connect_takes_repeated_urls_and_checks_every_one() {
    let (a, b) = (Hub::start(|_| {}), Hub::start(|_| {}));
    let bin = env!("CARGO_BIN_EXE_shardhub-loadgen");
    let out = std::process::Command::new(bin)
        .args(["connect", "--url", &a.url, "--url", &b.url])
        .args(["--conns", "5", "--hold", "0.2", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: RunSummary = serde_json::from_slice(&out.stdout).unwrap();
    no_failures(&s);
    assert_eq!((a.stats().handshakes, b.stats().handshakes), (3, 2));
    assert!(s.latency_by_url.is_empty(), "connect measures no traffic");
    for args in [
        vec!["connect", "--url", &a.url, "--url", "ws://10.0.0.1:80/ws"],
        vec![
            "fanout",
            "--url",
            &a.url,
            "--publisher-url",
            "ws://10.0.0.1/ws",
        ],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("only loopback"));
    }
    let out = std::process::Command::new(bin)
        .args(["echo", "--url", &format!("{},{}", a.url, a.url)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("same node"));
}
