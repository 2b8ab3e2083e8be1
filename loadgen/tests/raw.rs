//! The client against the small in-test servers of `util`: framing, accounting, failure causes,
//! worker processes and the command line.

use std::time::Duration;

use shardhub_loadgen::plan::{Adapter, Plan, Scenario};
use shardhub_loadgen::{run, Gate, Target};

use crate::util::{spawn, Mode};

fn plan(scenario: Scenario, url: &str) -> Plan {
    let mut p = Plan::new(scenario, Target::parse(url).expect("loopback url"));
    p.adapter = Adapter::Raw;
    p.duration = Duration::from_millis(800);
    p.grace = Duration::from_millis(500);
    p.connect_timeout = Duration::from_secs(3);
    p.timeout = Duration::from_secs(20);
    p
}

#[test]
fn echo_closed_loop_counts_every_round_trip() {
    let srv = spawn(Mode::Echo);
    let mut p = plan(Scenario::Echo, &srv.url());
    p.conns = 4;
    p.threads = 2;
    p.rate = 0.0; // closed loop
    let s = run(&p, Gate::Local).unwrap();
    assert_eq!(s.connections.established, 4);
    assert_eq!(s.connections.failed, 0);
    let t = s.traffic.as_ref().unwrap();
    assert!(t.sent > 100, "{t:?}");
    assert_eq!(t.received, t.sent);
    assert_eq!(t.lost, 0);
    assert_eq!(s.latency.as_ref().unwrap().count, t.received);
    assert_eq!(s.handshake.count, 4);
    assert!(!s.timeline.is_empty());
}

#[test]
fn echo_open_loop_sends_at_the_rate() {
    let srv = spawn(Mode::Echo);
    let mut p = plan(Scenario::Echo, &srv.url());
    p.conns = 2;
    p.rate = 500.0;
    p.payload = 300;
    p.duration = Duration::from_secs(1);
    let s = run(&p, Gate::Local).unwrap();
    let t = s.traffic.as_ref().unwrap();
    // 500/s for 1 s, a fixed schedule: exactly 500 intended sends.
    assert_eq!(t.sent, 500);
    assert_eq!(t.received, 500);
    assert_eq!(t.lost, 0);
}

#[test]
fn fanout_raw_broadcast_has_no_loss() {
    let srv = spawn(Mode::Broadcast);
    let mut p = plan(Scenario::Fanout, &srv.url());
    p.conns = 6;
    p.publishers = 2;
    p.rate = 200.0;
    let s = run(&p, Gate::Local).unwrap();
    let t = s.traffic.as_ref().unwrap();
    assert_eq!(t.rooms.len(), 1);
    assert_eq!(t.rooms[0].members, 6);
    assert_eq!(t.sent, 160, "200/s for 0.8 s");
    assert_eq!(t.expected, 160 * 6);
    assert_eq!(t.unique, t.expected);
    assert_eq!((t.lost, t.duplicates), (0, 0));
    assert_eq!(s.latency.as_ref().unwrap().count, t.expected);
}

#[test]
fn fanout_socketio_connects_answers_pings_and_has_no_loss() {
    let srv = spawn(Mode::SocketIo);
    let mut p = plan(Scenario::Fanout, &srv.url());
    p.adapter = Adapter::SocketIo;
    p.conns = 6;
    p.publishers = 2;
    p.rate = 200.0;
    let s = run(&p, Gate::Local).unwrap();
    assert_eq!((s.connections.established, s.connections.failed), (8, 0));
    assert_eq!(s.handshake.count, 8, "ready at the namespace connect");
    let t = s.traffic.as_ref().unwrap();
    assert_eq!((t.rooms.len(), t.rooms[0].members), (1, 6));
    assert_eq!(t.sent, 160, "200/s for 0.8 s");
    assert_eq!(t.unique, 160 * 6);
    assert_eq!((t.lost, t.duplicates), (0, 0));
    assert!(!t.counters.contains_key("unparsed_frames"), "{t:?}");
    assert_eq!(srv.pongs(), 8, "every connection answered its ping");
}

#[test]
fn echo_socketio_broadcast_counts_only_own_answers() {
    let srv = spawn(Mode::SocketIo);
    let mut p = plan(Scenario::Echo, &srv.url());
    p.adapter = Adapter::SocketIo;
    p.conns = 3;
    p.rate = 0.0;
    let s = run(&p, Gate::Local).unwrap();
    let t = s.traffic.as_ref().unwrap();
    assert!(t.sent > 50, "{t:?}");
    assert_eq!(t.received, t.sent);
    assert_eq!(t.lost, 0);
    // Every request also reached the two other clients (the copies of the last three may
    // arrive after the run has ended).
    let foreign = t.counters.get("foreign_echoes").copied().unwrap_or(0);
    assert!(foreign <= 2 * t.sent && foreign + 6 >= 2 * t.sent, "{t:?}");
    assert!(!t.counters.contains_key("echo_unmatched"), "{t:?}");
}

#[test]
fn refused_connections_are_counted() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut p = plan(Scenario::Connect, &format!("ws://127.0.0.1:{port}/ws"));
    p.conns = 3;
    let s = run(&p, Gate::Local).unwrap();
    assert_eq!(s.connections.established, 0);
    assert_eq!(s.connections.failures.get("refused"), Some(&3));
}

#[test]
fn silent_server_times_out() {
    let srv = spawn(Mode::Silent);
    let mut p = plan(Scenario::Connect, &srv.url());
    p.conns = 2;
    p.connect_timeout = Duration::from_millis(300);
    let s = run(&p, Gate::Local).unwrap();
    assert_eq!(s.connections.failures.get("timeout"), Some(&2));
}

#[test]
fn http_status_and_close_codes_are_causes() {
    let srv = spawn(Mode::Status503);
    let mut p = plan(Scenario::Connect, &srv.url());
    p.conns = 2;
    let s = run(&p, Gate::Local).unwrap();
    assert_eq!(s.connections.failures.get("http_503"), Some(&2));

    let srv = spawn(Mode::Close1008);
    let mut p = plan(Scenario::Connect, &srv.url());
    p.conns = 2;
    p.duration = Duration::from_secs(1);
    let s = run(&p, Gate::Local).unwrap();
    assert_eq!(s.connections.established, 2);
    assert_eq!(
        s.connections.failures.get("close_1008"),
        Some(&2),
        "{:?}",
        s.connections
    );
    assert_eq!(s.connections.open_at_end, 0);
}

#[test]
fn only_loopback_targets() {
    assert!(Target::parse("ws://192.168.0.1:80/ws").is_err());
    assert!(Target::parse("ws://example.org/ws").is_err());
}

#[test]
fn worker_processes_merge_into_one_result() {
    let srv = spawn(Mode::Echo);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardhub-loadgen"))
        .args([
            "echo",
            "--url",
            &srv.url(),
            "--adapter",
            "raw",
            "--conns",
            "4",
            "--rate",
            "400",
        ])
        .args(["--duration", "1", "--procs", "2", "--json"])
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: shardhub_loadgen::RunSummary =
        serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(s.params.procs, 2);
    assert_eq!(s.connections.established, 4);
    let t = s.traffic.as_ref().unwrap();
    assert_eq!(t.sent, 400);
    assert_eq!(t.received, 400);
    assert_eq!(s.latency.as_ref().unwrap().count, 400);
}

#[test]
fn cli_writes_hgrm_json_and_html() {
    let srv = spawn(Mode::Echo);
    let dir = std::env::temp_dir().join(format!("loadgen-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, hgrm, html) = (
        dir.join("run.json"),
        dir.join("run.hgrm"),
        dir.join("run.html"),
    );
    let bin = env!("CARGO_BIN_EXE_shardhub-loadgen");
    let out = std::process::Command::new(bin)
        .args([
            "echo",
            "--url",
            &srv.url(),
            "--adapter",
            "raw",
            "--conns",
            "2",
            "--duration",
            "0.5",
        ])
        .arg("--out")
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("round trip latency"), "{text}");
    let h = std::fs::read_to_string(&hgrm).unwrap();
    assert!(h.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(h.contains("#[Max     ="));
    let out = std::process::Command::new(bin)
        .arg("report")
        .arg(&json)
        .arg("-o")
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));
    let out = std::process::Command::new(bin)
        .arg("compare")
        .arg(&json)
        .arg(&json)
        .arg("-o")
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("| p99 ms |"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_refuses_non_loopback() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardhub-loadgen"))
        .args(["connect", "--url", "ws://10.0.0.1:80/ws", "--conns", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only loopback"));
}

#[test]
fn stored_runs_still_load_render_and_compare() {
    // Every run recorded under bench/runs (format 1 as first written: one `url`, no `urls`;
    // the cluster runs over several URLs) must load and render.
    use shardhub_loadgen::{html, report};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/runs");
    let mut runs = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            // Not runs: the summaries of a directory (results*.json), max-rate searches
            // (*.search.json), `send-cost` reports (*.send-cost.json), the server's own
            // counters.
            if f.extension().is_some_and(|e| e == "json")
                && !name.starts_with("results")
                && !name.ends_with(".search.json")
                && !name.ends_with(".send-cost.json")
                && name != "stats.json"
            {
                runs.push(f);
            }
        }
    }
    assert!(
        runs.len() > 100,
        "{} runs under {}",
        runs.len(),
        root.display()
    );
    let mut loaded = Vec::new();
    for path in &runs {
        let s = report::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The first URL is `url`; a run over one URL has no per-URL latency.
        assert_eq!(s.urls.first(), Some(&s.url), "{}", path.display());
        if s.urls.len() == 1 {
            assert!(s.latency_by_url.is_empty(), "{}", path.display());
        }
        assert!(
            html::report(&s).unwrap().contains("<svg"),
            "{}",
            path.display()
        );
        loaded.push(s);
    }
    let names: Vec<String> = runs.iter().map(|p| p.display().to_string()).collect();
    assert!(html::markdown_table(&loaded, &names).contains("| p99 ms |"));
    assert!(html::compare(&loaded[..4], &names[..4])
        .unwrap()
        .contains("<svg"));
}
