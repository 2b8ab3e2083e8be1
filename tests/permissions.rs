//! Permissions from token claims and `default_permissions`: each denied action answers
//! `forbidden` and delivers nothing, over JSON and binary frames.

use std::time::Duration;

use serde_json::json;
use shardhub::auth::PermissionSpec;

use crate::auth::{connect_token, jwt_server, token_for};
use crate::util::*;

const QUIET: Duration = Duration::from_millis(200);

fn binary(op: u8, target: &str, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![op, target.len() as u8];
    f.extend_from_slice(target.as_bytes());
    f.extend_from_slice(payload);
    f
}

/// The claims of the example: chat rooms and the lobby, presence of the lobby only.
fn restricted() -> serde_json::Value {
    json!({
        "rooms": {"join": ["chat:*", "lobby"], "publish": ["chat:*"], "presence": ["lobby"]},
        "broadcast": false,
        "send": false
    })
}

#[test]
fn json_requests_outside_the_claims_are_forbidden_and_deliver_nothing() {
    let s = jwt_server(|c| c.presence = false);
    let mut r = connect_token(&s, &token_for("rita", restricted()));
    let mut other = connect_token(&s, &token_for("otto", json!({})));
    for room in ["lobby", "chat:general", "secret"] {
        other.send_json(json!({"type":"join","room":room}));
        other.expect("ack");
    }

    // join: exact names and prefixes pass, anything else is forbidden.
    r.send_json(json!({"type":"join","room":"secret","id":1}));
    let e = r.expect("error");
    assert_eq!(
        (&e["code"], &e["id"], &e["room"]),
        (&json!("forbidden"), &json!(1), &json!("secret"))
    );
    assert!(!s
        .hub
        .room_members("secret")
        .unwrap_or_default()
        .iter()
        .any(|m| m.1.as_ref() == "rita"));
    for room in ["lobby", "chat:general"] {
        r.send_json(json!({"type":"join","room":room}));
        r.expect("ack");
    }
    r.send_json(json!({"type":"join","room":"chat","id":"bare"}));
    assert_eq!(
        r.expect("error")["code"],
        "forbidden",
        "chat:* needs the colon"
    );

    // publish: allowed in chat:*, not in the lobby it may join.
    r.send_json(json!({"type":"publish","room":"lobby","data":"x","id":2}));
    let e = r.expect("error");
    assert_eq!(
        (&e["code"], &e["room"]),
        (&json!("forbidden"), &json!("lobby"))
    );
    other.expect_silence(QUIET);
    r.send_json(json!({"type":"publish","room":"chat:general","data":"hi","exclude_self":true}));
    assert_eq!(other.expect("message")["data"], "hi");

    // members: presence permission, lobby only.
    r.send_json(json!({"type":"members","room":"chat:general","id":3}));
    let e = r.expect("error");
    assert_eq!((&e["code"], &e["id"]), (&json!("forbidden"), &json!(3)));
    r.send_json(json!({"type":"members","room":"lobby","id":4}));
    assert_eq!(r.expect("members")["id"], 4);

    // broadcast and send.
    r.send_json(json!({"type":"broadcast","data":"all","id":5}));
    let e = r.expect("error");
    assert_eq!((&e["code"], &e["id"]), (&json!("forbidden"), &json!(5)));
    r.send_json(json!({"type":"send","to":"otto","data":"psst","id":6}));
    let e = r.expect("error");
    assert_eq!(
        (&e["code"], &e["id"], &e["to"]),
        (&json!("forbidden"), &json!(6), &json!("otto"))
    );
    other.expect_silence(QUIET);
    r.expect_silence(QUIET);
    wait_until("the denials are counted", || {
        s.hub.stats().forbidden_requests == 6
    });
}

#[test]
fn binary_requests_outside_the_claims_are_forbidden_and_deliver_nothing() {
    let s = jwt_server(|c| c.presence = false);
    let mut r = connect_token(&s, &token_for("rita", restricted()));
    let mut other = connect_token(&s, &token_for("otto", json!({})));
    for c in [&mut r, &mut other] {
        for room in ["lobby", "chat:a"] {
            c.send_json(json!({"type":"join","room":room}));
            c.expect("ack");
        }
    }
    for frame in [
        binary(1, "lobby", b"x"),
        binary(5, "lobby", b"x"),
        binary(2, "otto", b"x"),
        binary(3, "", b"x"),
        binary(4, "", b"x"),
    ] {
        r.send_binary(&frame);
        let e = r.expect("error");
        assert_eq!(
            (&e["code"], &e["op"]),
            (&json!("forbidden"), &json!("binary")),
            "{frame:?}"
        );
    }
    other.expect_silence(QUIET);
    r.send_binary(&binary(5, "chat:a", b"ok"));
    assert_eq!(other.recv_binary(), b"\x01\x06chat:a\x04ritaok");
}

#[test]
fn presence_events_reach_only_members_allowed_to_see_them() {
    let s = jwt_server(|_| {});
    let mut r = connect_token(&s, &token_for("rita", restricted()));
    for room in ["lobby", "chat:a"] {
        r.send_json(json!({"type":"join","room":room}));
        r.expect("ack");
    }
    // Sessions on both shards join both rooms: rita sees the lobby's presence only.
    let mut joiners = Vec::new();
    for shard in [0, 1] {
        // Anonymous (no token): they have the default permissions, everything.
        let mut j = Client::connect_on_shard(&s, "ignored", shard);
        for room in ["chat:a", "lobby"] {
            j.send_json(json!({"type":"join","room":room}));
            j.expect("ack");
        }
        let ev = r.expect("joined");
        assert_eq!(
            (&ev["room"], &ev["user"]),
            (&json!("lobby"), &json!(j.user))
        );
        joiners.push(j);
    }
    r.expect_silence(QUIET);
    // Leaving (here: disconnecting) is presence too.
    joiners.pop().unwrap().close();
    let ev = r.expect("left");
    assert_eq!(ev["room"], "lobby");
    r.expect_silence(QUIET);
}

#[test]
fn anonymous_sessions_get_the_default_permissions() {
    let s = TestServer::start(|c| {
        c.presence = false;
        c.default_permissions = PermissionSpec {
            broadcast: Some(false),
            rooms: shardhub::auth::permissions::RoomPatterns {
                join: Some(vec!["public:*".into()]),
                ..Default::default()
            },
            ..PermissionSpec::default()
        };
    });
    let mut a = Client::connect(&s, None);
    let mut named = Client::connect(&s, Some("nina"));
    for c in [&mut a, &mut named] {
        c.send_json(json!({"type":"broadcast","data":1,"id":1}));
        assert_eq!(c.expect("error")["code"], "forbidden");
        c.send_json(json!({"type":"join","room":"private"}));
        assert_eq!(c.expect("error")["code"], "forbidden");
        c.send_json(json!({"type":"join","room":"public:1"}));
        c.expect("ack");
    }
    // What the defaults leave out is allowed: direct messages here.
    a.send_json(json!({"type":"send","to":"nina","data":"hi","id":2}));
    assert_eq!(a.expect("ack")["sessions"], 1);
    assert_eq!(named.expect("direct")["data"], "hi");
}

#[test]
fn the_default_permissions_come_from_toml() {
    let c = shardhub::Config::from_toml_str(
        "[default_permissions]\nsend = false\n[default_permissions.rooms]\njoin = [\"a:*\"]\n",
    )
    .expect("parses");
    assert_eq!(c.default_permissions.send, Some(false));
    assert_eq!(
        c.default_permissions.rooms.join.as_deref(),
        Some(&["a:*".to_string()][..])
    );
    assert!(shardhub::Config::from_toml_str("[default_permissions]\nsned = false\n").is_err());
}

#[test]
fn the_application_is_not_bound_by_client_permissions() {
    let s = jwt_server(|c| c.presence = false);
    let mut r = connect_token(&s, &token_for("rita", restricted()));
    let id = r.session.parse().unwrap();
    s.hub.join(id, "secret").unwrap();
    assert_eq!(r.expect("ack")["room"], "secret");
}
