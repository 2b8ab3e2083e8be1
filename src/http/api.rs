//! The handlers of the HTTP routes other than `/sse`: each turns a request into a response
//! through the thread-safe [`Hub`] (and so through the router, like every delivery), so they
//! run on whichever shard read the request and never touch another shard's state. Deliveries
//! use the hub protocol's envelopes (`docs/protocol.md`) from the sender `"server"` (session
//! `"0"`), encoded once. A delivery some shard could not take is a 503 `overloaded`.

use std::sync::atomic::Ordering;

use serde_json::json;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::prometheus;
use super::request::Request;
use super::response::Response;
use super::router::Route;
use crate::engine::ids::SessionId;
use crate::hub::{Hub, HubError};
use crate::metrics::Percentiles;
use crate::protocol::close::{reconnects, Close};
use crate::protocol::envelope::check_name;
use crate::protocol::frame::{self, Frame, OpCode};
use crate::protocol::reply;

/// The sender name of deliveries made through the API.
pub const SERVER_SENDER: &str = "server";

/// A shard whose last tick is older than this is considered stuck by `/ready`.
const STALE_SHARD_MS: u64 = 2_000;

/// Default and largest page of `/api/v1/online`.
const ONLINE_DEFAULT_LIMIT: usize = 100;
const ONLINE_MAX_LIMIT: usize = 1_000;

/// Answers a routed request (not `/sse`, which the shard turns into a stream). `draining`: the
/// answering shard is shutting down.
pub(crate) fn handle(hub: &Hub, route: Route, req: &mut Request, draining: bool) -> Response {
    let result = match route {
        Route::Health => Ok(Response::json(200, &json!({"status": "ok"}))),
        Route::Ready => Ok(ready(hub, draining)),
        Route::Metrics => Ok(metrics(hub)),
        Route::Stats => stats(hub, req),
        Route::Online => online(hub, req),
        Route::Rooms => rooms(hub, req),
        Route::Room(room) => room_members(hub, &room),
        Route::Send => send(hub, req),
        Route::Broadcast => broadcast(hub, req),
        Route::Publish(room) => publish(hub, &room, req),
        Route::CloseSession(id) => close_session(hub, &id, req),
        Route::History(room) => history(hub, &room, req),
        Route::Sse => Err(Response::error(
            404,
            "not_found",
            "SSE streams are not served on this listener",
        )),
    };
    result.unwrap_or_else(|e| e)
}

fn bad_request(message: &str) -> Response {
    Response::error(400, "bad_request", message)
}

/// The answer to a hub error: 503 for an overload (nothing is retried for the caller), 404
/// for what does not exist.
fn hub_error(e: HubError) -> Response {
    match e {
        HubError::Overloaded { .. } => Response::error(503, "overloaded", &e.to_string()),
        HubError::NoSuchRoom(room) => no_such_room(&room),
        HubError::Unsupported(why) => Response::error(501, "unsupported", why),
        HubError::StoreFull(why) => Response::error(507, "store_full", &why),
        HubError::NoSuchSession(id) => {
            Response::error(404, "no_such_session", &format!("no open session {id}"))
        }
    }
}

fn ready(hub: &Hub, draining: bool) -> Response {
    if draining {
        return Response::error(503, "not_ready", "the server is shutting down");
    }
    let now = hub.shared.started.elapsed().as_millis() as u64;
    let stuck: Vec<usize> = hub
        .shared
        .heartbeats
        .iter()
        .enumerate()
        .filter(|(_, t)| now.saturating_sub(t.load(Ordering::Relaxed)) > STALE_SHARD_MS)
        .map(|(i, _)| i)
        .collect();
    if stuck.is_empty() {
        Response::json(200, &json!({"status": "ready"}))
    } else {
        Response::error(
            503,
            "not_ready",
            &format!("shard(s) {stuck:?} have not ticked for over {STALE_SHARD_MS} ms"),
        )
    }
}

fn metrics(hub: &Hub) -> Response {
    let histograms = hub.histograms();
    let directory = hub.shared.router.directory();
    let text = prometheus::render(&prometheus::Snapshot {
        cluster: hub.cluster_nodes().zip(hub.bus_stats()),
        shards: hub.shard_stats(),
        sessions: hub.session_count(),
        users: directory.user_count(),
        rooms: directory.rooms().len(),
        uptime_seconds: hub.shared.started.elapsed().as_secs_f64(),
        histograms: &histograms,
        node: hub.shared.offline.metrics(),
    });
    let mut r = Response::text(200, text);
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r
}

/// `GET /api/v1/stats`, with what `detail` (comma-separated) asks for besides the totals:
/// `shards` (each shard's counters) and `histograms` (latency percentiles).
fn stats(hub: &Hub, req: &Request) -> Result<Response, Response> {
    let mut body = json!({
        "uptime_seconds": hub.shared.started.elapsed().as_secs_f64(),
        "shards": hub.shared.router.shards(),
        "cluster": cluster(hub),
        "sessions": hub.session_count(),
        "users": hub.shared.router.directory().user_count(),
        "rooms": hub.shared.router.directory().rooms().len(),
        "counters": hub.stats(),
        "offline": hub
            .shared
            .offline
            .metrics()
            .iter()
            .map(|(n, _, _, v)| (*n, *v))
            .collect::<std::collections::BTreeMap<_, _>>(),
    });
    let detail = req.query_param("detail").unwrap_or_default();
    for part in detail.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "shards" => body["shard_counters"] = json!(hub.shard_stats()),
            "histograms" => body["histograms"] = histograms(hub),
            _ => {
                return Err(bad_request(
                    "detail takes a comma-separated list of shards, histograms",
                ))
            }
        }
    }
    Ok(Response::json(200, &body))
}

/// The `histograms` detail of `/api/v1/stats`: percentiles in microseconds of the last
/// window of about a second (`recent`, what a live view plots) and since start (`total`).
fn histograms(hub: &Hub) -> serde_json::Value {
    let ladder = |h: &crate::metrics::Histograms| {
        json!({
            "fanout": Percentiles::of(&h.fanout),
            "tick": Percentiles::of(&h.tick),
            "timer_lag": Percentiles::of(&h.timer_lag),
        })
    };
    let (recent, window) = hub.recent_histograms();
    json!({
        "unit": "us",
        "window_seconds": window.as_secs_f64(),
        "recent": ladder(&recent),
        "total": ladder(&hub.histograms()),
    })
}

/// The cluster part of `/api/v1/stats`: this node, the others as last heard, the bus counters
/// (`null` outside a cluster).
fn cluster(hub: &Hub) -> serde_json::Value {
    match (hub.cluster_nodes(), hub.bus_stats()) {
        (Some((node, others)), Some(bus)) => json!({
            "node": node,
            "local_sessions": hub.session_count_local(),
            "nodes": others,
            "bus": bus,
        }),
        _ => serde_json::Value::Null,
    }
}

fn number_param(req: &Request, name: &str, default: usize) -> Result<usize, Response> {
    match req.query_param(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| bad_request(&format!("{name} must be a non-negative integer"))),
    }
}

fn online(hub: &Hub, req: &Request) -> Result<Response, Response> {
    let limit = number_param(req, "limit", ONLINE_DEFAULT_LIMIT)?;
    let offset = number_param(req, "offset", 0)?;
    if limit == 0 || limit > ONLINE_MAX_LIMIT {
        return Err(bad_request(&format!(
            "limit must be 1..={ONLINE_MAX_LIMIT}"
        )));
    }
    let users = hub.users();
    let page: Vec<_> = users
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(u, n)| json!({"user": &**u, "sessions": n}))
        .collect();
    Ok(Response::json(
        200,
        &json!({"total": users.len(), "offset": offset, "limit": limit, "users": page}),
    ))
}

/// `GET /api/v1/rooms`: every room by name, or with `top=N` the `N` largest, largest first.
fn rooms(hub: &Hub, req: &Request) -> Result<Response, Response> {
    let mut all = hub.rooms();
    if let Some(top) = req.query_param("top") {
        let n: usize = top
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad_request("top must be a positive integer"))?;
        // Stable: rooms of equal size stay in name order.
        all.sort_by_key(|r| std::cmp::Reverse(r.members));
        all.truncate(n);
    }
    let list: Vec<_> = all
        .into_iter()
        .map(|r| json!({"name": r.name, "members": r.members, "capacity": r.capacity}))
        .collect();
    Ok(Response::json(200, &json!({ "rooms": list })))
}

fn no_such_room(room: &str) -> Response {
    Response::error(404, "no_such_room", &format!("room {room} does not exist"))
}

fn room_members(hub: &Hub, room: &str) -> Result<Response, Response> {
    let members = hub.room_members(room).ok_or_else(|| no_such_room(room))?;
    let capacity = hub.room(room).map_or(0, |r| r.capacity);
    let list: Vec<_> = members
        .iter()
        .map(|(s, u)| json!({"user": &**u, "session": s.to_string()}))
        .collect();
    Ok(Response::json(
        200,
        &json!({"room": room, "capacity": capacity, "members": list}),
    ))
}

/// Parses a JSON object body with simd-json (in place, as the WebSocket path does), after the
/// same nesting and escape check (`protocol::json`).
fn parse_body(body: &mut [u8], max_depth: usize) -> Result<Value<'_>, Response> {
    if body.is_empty() {
        return Err(bad_request("a JSON object body is required"));
    }
    crate::protocol::json::check(body, max_depth)
        .map_err(|e| Response::error(400, "bad_json", &e.to_string()))?;
    let v = simd_json::to_borrowed_value(body)
        .map_err(|e| Response::error(400, "bad_json", &crate::protocol::envelope::malformed(&e)))?;
    if !v.is_object() {
        return Err(Response::error(
            400,
            "bad_json",
            "the body must be a JSON object",
        ));
    }
    Ok(v)
}

fn data_of<'v>(v: &'v Value<'_>) -> Result<&'v Value<'v>, Response> {
    v.get("data")
        .ok_or_else(|| bad_request("missing field data"))
}

fn name_field<'v>(
    hub: &Hub,
    v: &'v Value<'_>,
    field: &str,
    required: bool,
) -> Result<Option<&'v str>, Response> {
    match v.get(field) {
        None if !required => Ok(None),
        None => Err(bad_request(&format!("missing field {field}"))),
        Some(x) => {
            let s = x
                .as_str()
                .ok_or_else(|| bad_request(&format!("{field} must be a string")))?;
            check_name(field, s, hub.config().max_name_bytes).map_err(|e| bad_request(&e.0))?;
            Ok(Some(s))
        }
    }
}

/// One delivery envelope from the server, framed once.
fn envelope(kind: &str, room: Option<&str>, data: &Value<'_>) -> Frame {
    let mut out = Vec::with_capacity(128);
    reply::delivery(&mut out, kind, room, SERVER_SENDER, 0, data);
    frame::encode(OpCode::Text, &out)
}

fn send(hub: &Hub, req: &mut Request) -> Result<Response, Response> {
    let v = parse_body(&mut req.body, hub.config().max_json_depth)?;
    let to = name_field(hub, &v, "to", true)?.unwrap_or_default();
    let data = data_of(&v)?;
    let store = match v.get("store") {
        None => false,
        Some(b) => b
            .as_bool()
            .ok_or_else(|| bad_request("store must be a boolean"))?,
    };
    if !store {
        let frame = envelope("direct", None, data);
        return match hub.send_frame_to_user(to, frame).map_err(hub_error)? {
            0 => Err(not_online(to)),
            n => Ok(Response::json(200, &json!({"to": to, "sessions": n}))),
        };
    }
    let mut text = Vec::new();
    reply::write_value(&mut text, data);
    let text = String::from_utf8_lossy(&text);
    let sent = hub.send_direct(to, &text, true).map_err(hub_error)?;
    match (sent.sessions, sent.stored) {
        (0, None) => Err(not_online(to)),
        (_, Some(evicted)) => Ok(Response::json(
            202,
            &json!({"to": to, "sessions": 0, "stored": true, "mid": sent.mid, "evicted": evicted}),
        )),
        (n, None) => Ok(Response::json(200, &json!({"to": to, "sessions": n}))),
    }
}

fn not_online(to: &str) -> Response {
    Response::error(404, "not_online", &format!("user {to} is not online"))
}

fn broadcast(hub: &Hub, req: &mut Request) -> Result<Response, Response> {
    let v = parse_body(&mut req.body, hub.config().max_json_depth)?;
    if let Some(room) = name_field(hub, &v, "room", false)? {
        return publish_value(hub, room, data_of(&v)?);
    }
    let frame = envelope("broadcast", None, data_of(&v)?);
    let sessions = hub.session_count();
    hub.broadcast_frame(frame, None).map_err(hub_error)?;
    Ok(Response::json(200, &json!({ "sessions": sessions })))
}

fn publish(hub: &Hub, room: &str, req: &mut Request) -> Result<Response, Response> {
    check_name("room", room, hub.config().max_name_bytes).map_err(|e| bad_request(&e.0))?;
    let v = parse_body(&mut req.body, hub.config().max_json_depth)?;
    publish_value(hub, room, data_of(&v)?)
}

/// A `message` event in a room, exactly as a member's publish: one frame, routed (and
/// numbered) by the router.
fn publish_value(hub: &Hub, room: &str, data: &Value<'_>) -> Result<Response, Response> {
    let frame = envelope("message", Some(room), data);
    let id = hub.publish_frame(room, frame).map_err(hub_error)?;
    let members = hub.room(room).map_or(0, |r| r.members);
    let mut body = json!({"room": room, "members": members});
    if id > 0 {
        body["id"] = json!(id);
        if let Some((_, epoch)) = hub.room_position(room) {
            body["offset"] = json!(id);
            body["epoch"] = json!(epoch);
        }
    }
    Ok(Response::json(200, &body))
}

/// `PUT /api/v1/rooms/{room}/history` with `{"size": N, "ttl": "5m"}`: the room's history
/// settings (`Hub::set_room_history`); answers the room's position when it has one.
fn history(hub: &Hub, room: &str, req: &mut Request) -> Result<Response, Response> {
    check_name("room", room, hub.config().max_name_bytes).map_err(|e| bad_request(&e.0))?;
    let v = parse_body(&mut req.body, hub.config().max_json_depth)?;
    let size = v
        .get("size")
        .and_then(|s| s.as_u64())
        .ok_or_else(|| bad_request("field size (a count of publications, 0: none) is required"))?;
    let ttl = match v.get("ttl") {
        None => std::time::Duration::ZERO,
        Some(t) => t
            .as_str()
            .and_then(|t| humantime::parse_duration(t).ok())
            .ok_or_else(|| bad_request("field ttl must be a duration such as \"90s\" or \"5m\""))?,
    };
    hub.set_room_history(room, size as usize, ttl)
        .map_err(hub_error)?;
    let mut body = json!({"room": room, "size": size, "ttl_seconds": ttl.as_secs_f64()});
    if let Some((offset, epoch)) = hub.room_position(room) {
        body["offset"] = json!(offset);
        body["epoch"] = json!(epoch);
    }
    Ok(Response::json(200, &body))
}

/// Close codes an operator may choose by number: the table's ([`Close`]) and the rest of
/// 3000-3999 (classed by range), the application's 4000-4999, and the standard codes that make
/// sense for a server-side close (accepted as before the table existed; clients reconnect after
/// them).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 1008 | 1011 | 1012 | 1013 | 3000..=4999)
}

/// The close code a `DELETE` asks for: `code`, or `reconnect` (`true`: [`Close::ForceReconnect`],
/// `false`: [`Close::ForceDisconnect`]), not both; neither is [`Close::ForceDisconnect`] (a
/// session an operator closes is usually one that should not come back).
fn close_code(code: Option<&str>, reconnect: Option<&str>) -> Result<u16, String> {
    match (code, reconnect) {
        (Some(_), Some(_)) => Err("give code or reconnect, not both".into()),
        (Some(c), None) => c.parse().ok().filter(|c| valid_close_code(*c)).ok_or_else(|| {
            "code must be 3000-4999 (docs/protocol.md, \"Close codes\"), 1000, 1001, 1008, 1011, \
             1012 or 1013"
                .into()
        }),
        (None, Some("true" | "1")) => Ok(Close::ForceReconnect.code()),
        (None, Some("false" | "0")) => Ok(Close::ForceDisconnect.code()),
        (None, Some(_)) => Err("reconnect must be true or false".into()),
        (None, None) => Ok(Close::ForceDisconnect.code()),
    }
}

fn close_session(hub: &Hub, id: &str, req: &Request) -> Result<Response, Response> {
    let n: u64 = id
        .parse()
        .map_err(|_| bad_request("the session id must be a decimal number"))?;
    let code = close_code(
        req.query_param("code").as_deref(),
        req.query_param("reconnect").as_deref(),
    )
    .map_err(|m| bad_request(&m))?;
    let reason = req.query_param("reason").unwrap_or_else(|| {
        Close::from_code(code)
            .map_or("closed by the server", Close::reason)
            .into()
    });
    hub.close_session(SessionId(n), code, &reason)
        .map_err(hub_error)?;
    Ok(Response::json(
        200,
        &json!({"session": id, "code": code, "reason": reason, "reconnect": reconnects(code)}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_is_chosen_by_code_or_by_class() {
        let ok = |code, reconnect| close_code(code, reconnect).unwrap();
        assert_eq!(ok(None, None), Close::ForceDisconnect.code());
        assert_eq!(ok(None, Some("true")), Close::ForceReconnect.code());
        assert_eq!(ok(None, Some("1")), Close::ForceReconnect.code());
        assert_eq!(ok(None, Some("false")), Close::ForceDisconnect.code());
        assert_eq!(ok(Some("3004"), None), Close::Overloaded.code());
        assert_eq!(ok(Some("4500"), None), 4500);
        assert_eq!(ok(Some("1008"), None), 1008, "accepted as before");
        for (code, reconnect) in [
            (Some("1005"), None),
            (Some("1006"), None),
            (Some("2999"), None),
            (Some("5000"), None),
            (Some("x"), None),
            (None, Some("maybe")),
            (Some("3006"), Some("true")),
        ] {
            assert!(
                close_code(code, reconnect).is_err(),
                "{code:?} {reconnect:?}"
            );
        }
    }
}
