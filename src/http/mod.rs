//! HTTP on the same reactors (and port) as the WebSockets: the upgrade, the API
//! (`docs/http-api.md` lists the routes) and Server-Sent Events.
//!
//! Every connection's first bytes go through one parser ([`request`]). An upgrade is checked by
//! [`upgrade`]; any other request is routed ([`router`]), checked against the API key
//! ([`authorize`]) and answered by the API handlers through the thread-safe
//! [`Hub`](crate::Hub), on the shard that read it; `GET /sse` becomes an event stream ([`sse`]
//! is its wire format). One [`response::Response`] type answers them all.
//!
//! Everything in this module is pure or goes through the hub; the engine
//! (`crate::engine`) moves connections between these stages.

pub(crate) mod api;
pub mod prometheus;
pub mod request;
pub mod response;
pub mod router;
pub mod sse;
pub mod upgrade;

use request::Request;
use response::Response;
use router::Route;

use crate::config::Config;

/// Which listener a connection came from, which decides the routes it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listener {
    /// The main address, with the API (no `admin_listen` configured).
    #[default]
    Main,
    /// The main address while the API lives on `admin_listen`: WebSockets, `/sse`, `/health`.
    Public,
    /// The `admin_listen` address: the HTTP API, no WebSockets or SSE.
    Admin,
}

impl Listener {
    /// Whether this listener serves `route`.
    pub fn serves(self, route: &Route) -> bool {
        match self {
            Self::Main => true,
            Self::Public => matches!(route, Route::Health | Route::Sse),
            Self::Admin => !matches!(route, Route::Sse),
        }
    }
}

/// Compares two secrets in time that depends on their lengths only, not on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Checks a request to `route` against the configuration: the API switch and its key.
/// `/health`, `/ready`, `/metrics` and `/sse` never need the key.
pub fn authorize(cfg: &Config, route: &Route, req: &Request) -> Result<(), Response> {
    if !route.is_api() {
        return Ok(());
    }
    if !cfg.http_api {
        return Err(Response::error(
            403,
            "api_disabled",
            "the HTTP API is turned off (http_api = false)",
        ));
    }
    let Some(key) = cfg.api_key.as_deref() else {
        return Ok(());
    };
    let given = req
        .header("authorization")
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .or_else(|| req.header("x-api-key").map(str::trim));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), key.as_bytes()) => Ok(()),
        Some(_) => Err(unauthorized("invalid API key")),
        None => Err(unauthorized(
            "an API key is required (Authorization: Bearer KEY or X-API-Key)",
        )),
    }
}

fn unauthorized(message: &str) -> Response {
    Response::error(401, "unauthorized", message).with_header("WWW-Authenticate", "Bearer")
}

/// The response to a request no route takes.
pub fn route_error(e: &router::RouteError) -> Response {
    match e {
        router::RouteError::NotFound => Response::error(404, "not_found", "no such route"),
        router::RouteError::MethodNotAllowed(allow) => Response::error(
            405,
            "method_not_allowed",
            &format!("this route takes {allow}"),
        )
        .with_header("Allow", *allow),
        router::RouteError::BadPath => Response::error(
            400,
            "bad_request",
            "a path parameter is not valid percent-encoded UTF-8",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/api/v1/stats".into(),
            query: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            keep_alive: true,
            upgrade: false,
            version: 1,
        }
    }

    #[test]
    fn the_key_is_required_only_on_the_api_and_accepted_in_either_header() {
        let cfg = Config {
            api_key: Some("s3cret".into()),
            ..Config::default()
        };
        let status = |r: Result<(), Response>| r.map_or_else(|e| e.status, |()| 200);
        assert_eq!(status(authorize(&cfg, &Route::Stats, &req(&[]))), 401);
        assert_eq!(status(authorize(&cfg, &Route::Metrics, &req(&[]))), 200);
        let bearer = req(&[("Authorization", "Bearer s3cret")]);
        assert_eq!(status(authorize(&cfg, &Route::Stats, &bearer)), 200);
        let x = req(&[("x-api-key", "s3cret")]);
        assert_eq!(status(authorize(&cfg, &Route::Send, &x)), 200);
        let wrong = req(&[("Authorization", "Bearer s3cre")]);
        assert_eq!(status(authorize(&cfg, &Route::Stats, &wrong)), 401);
        let off = Config {
            http_api: false,
            ..Config::default()
        };
        assert_eq!(status(authorize(&off, &Route::Stats, &req(&[]))), 403);
    }

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
