//! The HTTP API on the WebSocket port: probes, limits, keep-alive, the key, every route.

use std::time::Duration;

use serde_json::json;
use shardhub::{Close, Config, ConfigError, Server, StartError};

use crate::util::*;

#[test]
fn probes_answer_and_unknown_routes_and_methods_are_refused() {
    let s = TestServer::start(|_| {});
    let h = http(s.addr, "GET", "/health", None);
    assert_eq!((h.status, h.json()), (200, json!({"status":"ok"})));
    let r = http(s.addr, "GET", "/ready", None);
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("ready"))
    );
    let m = http(s.addr, "GET", "/metrics", None);
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().contains("version=0.0.4"));

    let nf = http(s.addr, "GET", "/nope", None);
    assert_eq!((nf.status, nf.error_code()), (404, "not_found".to_string()));
    let wrong = http(s.addr, "POST", "/health", Some("{}"));
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET"));
    assert_eq!(wrong.error_code(), "method_not_allowed");
    let wrong = http(s.addr, "GET", "/api/v1/send", None);
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("POST")));
    let ws = http(s.addr, "GET", "/ws", None);
    assert_eq!(
        (ws.status, ws.error_code()),
        (426, "upgrade_required".into())
    );
    let bad = http(s.addr, "GET", "/api/v1/rooms/%ff", None);
    assert_eq!(bad.status, 400);
}

/// A client that sends its request and shuts down its sending side, at once or a little later,
/// gets its answer and then the end of the stream, without waiting for a timeout: the shard
/// stops reading at a short read, and a FIN that came with the request must still be seen.
#[test]
fn a_request_followed_by_the_clients_fin_is_answered_and_closed_at_once() {
    use std::io::{Read, Write};
    let s = TestServer::start(|c| c.handshake_timeout = Duration::from_secs(30));
    for pause in [Duration::ZERO, Duration::from_millis(100)] {
        let mut tcp = std::net::TcpStream::connect(s.addr).unwrap();
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        std::thread::sleep(pause);
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
        let asked = std::time::Instant::now();
        let mut out = Vec::new();
        tcp.read_to_end(&mut out)
            .expect("the server ends the stream");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{pause:?}: {text}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{pause:?}: closed after {:?}",
            asked.elapsed()
        );
    }
}

#[test]
fn keep_alive_serves_several_requests_and_connection_close_is_honoured() {
    let s = TestServer::start(|_| {});
    let mut c = HttpConn::connect(s.addr);
    for _ in 0..3 {
        let r = c.request("GET", "/health", &[], None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    // Pipelined: two requests in one write, two answers in order.
    c.tcp
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    std::io::Write::write_all(
        &mut c.tcp,
        b"GET /health HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.read_response().status, 200);
    assert_eq!(c.read_response().status, 404, "errors keep the connection");
    let last = c.request("GET", "/health", &[("Connection", "close")], None);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.is_closed(), "closed after Connection: close");
}

#[test]
fn oversized_and_malformed_requests_get_their_status() {
    let s = TestServer::start(|c| c.max_request_body_bytes = 1024);
    let pad = "a".repeat(9000);
    let mut c = HttpConn::connect(s.addr);
    let r = c.request("GET", "/health", &[("X-Pad", &pad)], None);
    assert_eq!(
        (r.status, r.error_code()),
        (431, "headers_too_large".into())
    );
    assert!(c.is_closed());

    let big = format!("{{\"data\":\"{}\"}}", "x".repeat(2000));
    let r = http(s.addr, "POST", "/api/v1/broadcast", Some(&big));
    assert_eq!((r.status, r.error_code()), (413, "body_too_large".into()));

    let r = http(s.addr, "POST", "/api/v1/send", Some("{not json"));
    assert_eq!((r.status, r.error_code()), (400, "bad_json".into()));
    let r = http(s.addr, "POST", "/api/v1/send", Some("[1,2]"));
    assert_eq!((r.status, r.error_code()), (400, "bad_json".into()));
    let r = http(s.addr, "POST", "/api/v1/send", Some(r#"{"data":1}"#));
    assert_eq!((r.status, r.error_code()), (400, "bad_request".into()));
    let r = http(s.addr, "POST", "/api/v1/send", Some(r#"{"to":5,"data":1}"#));
    assert_eq!(r.status, 400);
    let r = http(s.addr, "POST", "/api/v1/send", None);
    assert_eq!(r.status, 400, "no body");
    let (code, _) = raw_http(
        s.addr,
        b"POST /api/v1/send HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(code, 411);
    let r = http(s.addr, "GET", "/api/v1/online?limit=abc", None);
    assert_eq!(r.status, 400);
}

#[test]
fn the_api_key_is_required_accepted_and_checked() {
    let s = TestServer::start(|c| c.api_key = Some("s3cret".into()));
    let r = http(s.addr, "GET", "/api/v1/stats", None);
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".into()));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let mut c = HttpConn::connect(s.addr);
    let wrong = c.request(
        "GET",
        "/api/v1/stats",
        &[("Authorization", "Bearer nope")],
        None,
    );
    assert_eq!(wrong.status, 401);
    let ok = c.request(
        "GET",
        "/api/v1/stats",
        &[("Authorization", "Bearer s3cret")],
        None,
    );
    assert_eq!(ok.status, 200);
    let ok = c.request("GET", "/api/v1/rooms", &[("X-API-Key", "s3cret")], None);
    assert_eq!(ok.status, 200);
    // Probes and metrics stay open.
    for p in ["/health", "/ready", "/metrics"] {
        assert_eq!(http(s.addr, "GET", p, None).status, 200, "{p}");
    }
}

#[test]
fn an_open_api_on_a_public_address_is_refused_at_startup() {
    let public = Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        shards: 1,
        pin_cores: false,
        ..Config::default()
    };
    match Server::builder(public.clone()).build() {
        Err(StartError::Config(ConfigError::Invalid(m))) => assert!(m.contains("api_key"), "{m}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let keyed = Config {
        api_key: Some("k".into()),
        ..public.clone()
    };
    assert!(Server::builder(keyed).build().is_ok());
    let off = Config {
        http_api: false,
        ..public.clone()
    };
    assert!(Server::builder(off).build().is_ok());
    let admin_on_loopback = Config {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..public
    };
    assert!(Server::builder(admin_on_loopback).build().is_ok());
}

#[test]
fn publishes_sends_and_broadcasts_through_the_api_reach_both_shards() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect_on_shard(&s, "alice", 0);
    let mut b = Client::connect_on_shard(&s, "bob", 1);
    for c in [&mut a, &mut b] {
        c.send_json(json!({"type":"join","room":"lobby"}));
        c.expect("ack");
    }
    a.expect("joined");
    let r = http(
        s.addr,
        "POST",
        "/api/v1/rooms/lobby/publish",
        Some(r#"{"data":{"text":"hi"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["members"], 2);
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.expect("message"),
            json!({"type":"message","room":"lobby","from":"server","session":"0","data":{"text":"hi"}})
        );
    }
    let r = http(
        s.addr,
        "POST",
        "/api/v1/broadcast",
        Some(r#"{"room":"lobby","data":2}"#),
    );
    assert_eq!(r.status, 200);
    for c in [&mut a, &mut b] {
        assert_eq!(c.expect("message")["data"], 2);
    }
    let r = http(
        s.addr,
        "POST",
        "/api/v1/broadcast",
        Some(r#"{"data":"all"}"#),
    );
    assert_eq!((r.status, r.json()["sessions"].as_u64()), (200, Some(2)));
    for c in [&mut a, &mut b] {
        let m = c.expect("broadcast");
        assert_eq!(
            (m["from"].as_str(), m["data"].as_str()),
            (Some("server"), Some("all"))
        );
    }
    let r = http(
        s.addr,
        "POST",
        "/api/v1/send",
        Some(r#"{"to":"bob","data":"psst"}"#),
    );
    assert_eq!(r.json(), json!({"to":"bob","sessions":1}));
    assert_eq!(
        b.expect("direct"),
        json!({"type":"direct","from":"server","session":"0","data":"psst"})
    );
    let r = http(
        s.addr,
        "POST",
        "/api/v1/send",
        Some(r#"{"to":"carol","data":1}"#),
    );
    assert_eq!((r.status, r.error_code()), (404, "not_online".into()));
    let r = http(
        s.addr,
        "POST",
        "/api/v1/rooms/nowhere/publish",
        Some(r#"{"data":1}"#),
    );
    assert_eq!((r.status, r.error_code()), (404, "no_such_room".into()));
    a.expect_silence(Duration::from_millis(100));
}

#[test]
fn rooms_members_online_and_stats_describe_the_hub() {
    let s = TestServer::start(|c| {
        c.room_capacities.insert("a b/c".into(), 5);
    });
    let mut clients = Vec::new();
    for u in ["carol", "alice", "bob", "alice"] {
        let mut c = Client::connect(&s, Some(u));
        c.send_json(json!({"type":"join","room":"a b/c"}));
        c.expect("ack");
        clients.push(c);
    }
    wait_until("four sessions", || s.hub.session_count() == 4);
    let r = http(s.addr, "GET", "/api/v1/rooms", None);
    assert_eq!(
        r.json(),
        json!({"rooms":[{"name":"a b/c","members":4,"capacity":5}]})
    );
    let r = http(s.addr, "GET", "/api/v1/rooms/a%20b%2Fc", None);
    assert_eq!(r.status, 200);
    let members = r.json()["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 4);
    assert!(members
        .iter()
        .any(|m| m["session"] == clients[0].session.as_str()));
    let r = http(s.addr, "GET", "/api/v1/rooms/empty", None);
    assert_eq!((r.status, r.error_code()), (404, "no_such_room".into()));

    let r = http(s.addr, "GET", "/api/v1/online", None).json();
    assert_eq!(r["total"], 3);
    assert_eq!(
        r["users"],
        json!([{"user":"alice","sessions":2},{"user":"bob","sessions":1},{"user":"carol","sessions":1}])
    );
    let r = http(s.addr, "GET", "/api/v1/online?limit=1&offset=1", None).json();
    assert_eq!(r["users"], json!([{"user":"bob","sessions":1}]));

    let st = http(s.addr, "GET", "/api/v1/stats", None).json();
    assert_eq!(
        (st["sessions"].as_u64(), st["users"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(
        (st["rooms"].as_u64(), st["shards"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(st["counters"]["connections"], 4);
    assert!(st["uptime_seconds"].as_f64().unwrap() >= 0.0);
}

/// What the dashboard reads: the largest rooms, each shard's counters, and the latency
/// percentiles of the last second and since start.
#[test]
fn rooms_top_and_stats_detail_give_what_a_live_view_needs() {
    let s = TestServer::start(|_| {});
    let mut clients = Vec::new();
    for (i, rooms) in [&["a", "b", "c"][..], &["b", "c", "d"], &["b", "d"]]
        .iter()
        .enumerate()
    {
        // Two sessions on shard 0, one on shard 1.
        let mut c = Client::connect_on_shard(&s, &format!("u{i}"), u64::from(i == 2));
        for room in *rooms {
            c.send_json(json!({"type":"join","room":room}));
            c.expect("ack");
        }
        clients.push(c);
    }
    let names = |target: &str| -> Vec<(String, u64)> {
        http(s.addr, "GET", target, None).json()["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().into(),
                    r["members"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let pairs = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(n, m)| (n.to_string(), *m)).collect()
    };
    assert_eq!(
        names("/api/v1/rooms?top=3"),
        pairs(&[("b", 3), ("c", 2), ("d", 2)]),
        "largest first, ties by name"
    );
    assert_eq!(names("/api/v1/rooms?top=100").len(), 4);
    assert_eq!(
        names("/api/v1/rooms"),
        pairs(&[("a", 1), ("b", 3), ("c", 2), ("d", 2)]),
        "without top: every room by name"
    );
    for bad in ["0", "-1", "x", ""] {
        let r = http(s.addr, "GET", &format!("/api/v1/rooms?top={bad}"), None);
        assert_eq!(
            (r.status, r.error_code()),
            (400, "bad_request".into()),
            "{bad}"
        );
    }

    let st = http(s.addr, "GET", "/api/v1/stats", None).json();
    assert!(st.get("shard_counters").is_none() && st.get("histograms").is_none());
    let st = http(s.addr, "GET", "/api/v1/stats?detail=shards", None).json();
    let per: Vec<u64> = st["shard_counters"]
        .as_array()
        .expect("shard_counters")
        .iter()
        .map(|c| c["connections"].as_u64().unwrap())
        .collect();
    assert_eq!(per, [2, 1], "each shard's own sessions");
    assert_eq!(st["counters"]["connections"], 3);
    assert!(st.get("histograms").is_none(), "only what was asked");

    // Publications keep coming until a whole second of them has been counted.
    let mut recent = json!(null);
    wait_until("a second with fan-outs", || {
        clients[2].send_json(json!({"type":"publish","room":"b","data":"x"}));
        let st = http(
            s.addr,
            "GET",
            "/api/v1/stats?detail=histograms,shards",
            None,
        )
        .json();
        assert_eq!(st["shard_counters"].as_array().map(Vec::len), Some(2));
        recent = st["histograms"].clone();
        recent["recent"]["fanout"]["count"].as_u64() > Some(0)
    });
    assert_eq!(recent["unit"], "us");
    let window = recent["window_seconds"].as_f64().unwrap();
    assert!((0.9..3.0).contains(&window), "window {window}");
    for which in ["recent", "total"] {
        for h in ["fanout", "tick"] {
            let p = &recent[which][h];
            let ladder: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
                .iter()
                .map(|k| p[k].as_u64().unwrap())
                .collect();
            assert!(p["count"].as_u64().unwrap() > 0, "{which} {h}: {p}");
            assert!(ladder[0] > 0, "{which} {h}: {p}");
            assert!(ladder.windows(2).all(|w| w[0] <= w[1]), "{which} {h}: {p}");
        }
    }
    assert!(
        recent["total"]["fanout"]["count"].as_u64() >= recent["recent"]["fanout"]["count"].as_u64()
    );
    for bad in ["bogus", "shards,rooms"] {
        let r = http(s.addr, "GET", &format!("/api/v1/stats?detail={bad}"), None);
        assert_eq!(
            (r.status, r.error_code()),
            (400, "bad_request".into()),
            "{bad}"
        );
    }
}

#[test]
fn delete_closes_a_session_with_its_code_and_reason() {
    let s = TestServer::start(|_| {});
    let mut a = Client::connect(&s, Some("a"));
    let mut b = Client::connect(&s, Some("b"));
    let target = format!("/api/v1/sessions/{}?code=4000&reason=bye%20now", a.session);
    let r = http(s.addr, "DELETE", &target, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["code"], 4000);
    loop {
        match a.ws.read() {
            Ok(tungstenite::Message::Close(Some(f))) => {
                assert_eq!((u16::from(f.code), f.reason.as_str()), (4000, "bye now"));
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
    let r = http(
        s.addr,
        "DELETE",
        &format!("/api/v1/sessions/{}", b.session),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"session": b.session, "code": 3505, "reason": "force disconnect", "reconnect": false})
    );
    assert_eq!(
        b.expect_close(),
        Close::ForceDisconnect.code(),
        "do not reconnect, by default"
    );
    let r = http(s.addr, "DELETE", "/api/v1/sessions/12345", None);
    assert_eq!((r.status, r.error_code()), (404, "no_such_session".into()));
    let r = http(s.addr, "DELETE", "/api/v1/sessions/abc", None);
    assert_eq!(r.status, 400);
    let c = Client::connect(&s, Some("c"));
    let r = http(
        s.addr,
        "DELETE",
        &format!("/api/v1/sessions/{}?code=1005", c.session),
        None,
    );
    assert_eq!(r.status, 400, "1005 may not be sent");
}

#[test]
fn delete_chooses_the_close_class_with_reconnect() {
    let s = TestServer::start(|_| {});
    for (query, code, reconnect) in [
        ("?reconnect=true", Close::ForceReconnect.code(), true),
        ("?reconnect=false", Close::ForceDisconnect.code(), false),
        ("?code=3004", Close::Overloaded.code(), true),
        ("?code=4500&reason=banned", 4500, false),
    ] {
        let mut c = Client::connect(&s, Some("target"));
        let target = format!("/api/v1/sessions/{}{query}", c.session);
        let r = http(s.addr, "DELETE", &target, None);
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        assert_eq!(
            (r.json()["code"].as_u64(), r.json()["reconnect"].as_bool()),
            (Some(u64::from(code)), Some(reconnect)),
            "{query}"
        );
        let reason = r.json()["reason"].as_str().unwrap().to_string();
        let want = Close::from_code(code).map_or("banned", Close::reason);
        assert_eq!(
            reason, want,
            "{query}: the table's reason unless one is given"
        );
        loop {
            match c.ws.read() {
                Ok(tungstenite::Message::Close(Some(f))) => {
                    assert_eq!((u16::from(f.code), f.reason.as_str()), (code, want));
                    break;
                }
                Ok(_) => continue,
                Err(e) => panic!("{query}: expected a close frame, got {e}"),
            }
        }
    }
    let c = Client::connect(&s, Some("still-here"));
    for query in [
        "?reconnect=maybe",
        "?reconnect=true&code=3006",
        "?code=2999",
    ] {
        let target = format!("/api/v1/sessions/{}{query}", c.session);
        let r = http(s.addr, "DELETE", &target, None);
        assert_eq!(
            (r.status, r.error_code()),
            (400, "bad_request".into()),
            "{query}"
        );
    }
    assert!(s.hub.is_online("still-here"));
}

#[test]
fn the_api_can_be_switched_off_or_moved_to_an_admin_address() {
    let s = TestServer::start(|c| c.http_api = false);
    let r = http(s.addr, "GET", "/api/v1/stats", None);
    assert_eq!((r.status, r.error_code()), (403, "api_disabled".into()));
    assert_eq!(http(s.addr, "GET", "/metrics", None).status, 200);
    drop(s);

    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: 2,
        pin_cores: false,
        ..Config::default()
    };
    config.api_key = Some("k".into());
    let server = Server::builder(config).build().unwrap();
    let (main, admin) = (server.local_addr(), server.admin_addr().unwrap());
    let running = server.spawn().unwrap();
    assert_eq!(http(main, "GET", "/health", None).status, 200);
    assert_eq!(http(main, "GET", "/api/v1/stats", None).status, 404);
    assert_eq!(http(main, "GET", "/metrics", None).status, 404);
    assert_eq!(http(admin, "GET", "/health", None).status, 200);
    assert_eq!(http(admin, "GET", "/metrics", None).status, 200);
    let mut c = HttpConn::connect(admin);
    assert_eq!(
        c.request("GET", "/api/v1/stats", &[("X-API-Key", "k")], None)
            .status,
        200
    );
    let (code, _) = raw_http(admin, upgrade_request("/ws", "").as_bytes());
    assert_eq!(code, 404, "no WebSockets on the admin address");
    let (code, _) = raw_http(main, upgrade_request("/ws", "").as_bytes());
    assert_eq!(code, 101);
    running.shutdown().unwrap();
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let s = TestServer::start(|_| {});
    let scrape = || {
        let text = http(s.addr, "GET", "/metrics", None).text();
        // prometheus_parse is lenient; Prometheus' own parser refuses a family declared twice.
        let mut families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        families.sort_unstable();
        let twice: Vec<_> = families.windows(2).filter(|w| w[0] == w[1]).collect();
        assert!(
            twice.is_empty(),
            "metric families declared twice: {twice:?}"
        );
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("valid exposition text")
    };
    let value = |sc: &prometheus_parse::Scrape, name: &str| -> f64 {
        sc.samples
            .iter()
            .filter(|x| x.metric == name)
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let before = scrape();
    for name in [
        "shardhub_connections",
        "shardhub_handshakes_total",
        "shardhub_deliveries_total",
        "shardhub_sessions",
        "shardhub_rooms",
    ] {
        assert!(before.samples.iter().any(|x| x.metric == name), "{name}");
    }
    let shards: Vec<_> = before
        .samples
        .iter()
        .filter(|x| x.metric == "shardhub_connections")
        .map(|x| x.labels.get("shard").unwrap().to_string())
        .collect();
    assert_eq!(shards, ["0", "1"]);
    let hist = before
        .samples
        .iter()
        .find(|x| x.metric == "shardhub_fanout_seconds")
        .expect("the fan-out histogram");
    assert!(matches!(hist.value, prometheus_parse::Value::Histogram(_)));

    let mut a = Client::connect(&s, Some("a"));
    a.send_json(json!({"type":"join","room":"r"}));
    a.expect("ack");
    for i in 0..5 {
        a.send_json(json!({"type":"publish","room":"r","data":i}));
        a.expect("message");
    }
    // Histograms are merged once per tick.
    let fanouts = |m: &prometheus_parse::Scrape| {
        m.samples
            .iter()
            .find(|x| x.metric == "shardhub_fanout_seconds")
            .map_or(0.0, |x| match &x.value {
                prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
                _ => 0.0,
            })
    };
    wait_until("the fan-outs are merged", || fanouts(&scrape()) >= 5.0);
    let after = scrape();
    assert_eq!(value(&after, "shardhub_connections"), 1.0);
    assert_eq!(value(&after, "shardhub_sessions"), 1.0);
    assert_eq!(value(&after, "shardhub_rooms"), 1.0);
    assert!(
        value(&after, "shardhub_handshakes_total")
            >= value(&before, "shardhub_handshakes_total") + 1.0
    );
    assert!(
        value(&after, "shardhub_messages_in_total")
            >= value(&before, "shardhub_messages_in_total") + 6.0
    );
    assert!(
        value(&after, "shardhub_deliveries_total")
            >= value(&before, "shardhub_deliveries_total") + 5.0
    );
    assert!(value(&after, "shardhub_http_requests_total") >= 2.0);
}
