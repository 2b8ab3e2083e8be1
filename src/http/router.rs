//! Which route a method and path name. Pure; [`ROUTES`] is the documented table, and a test
//! checks that it, the router and `docs/http-api.md` agree.

/// A matched route. Path parameters are percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: liveness.
    Health,
    /// `GET /ready`: readiness.
    Ready,
    /// `GET /metrics`: Prometheus exposition.
    Metrics,
    /// `GET /sse?room=…`: a Server-Sent Events stream of a room.
    Sse,
    /// `GET /api/v1/stats`.
    Stats,
    /// `GET /api/v1/online`.
    Online,
    /// `GET /api/v1/rooms`.
    Rooms,
    /// `GET /api/v1/rooms/{room}`.
    Room(String),
    /// `POST /api/v1/send`.
    Send,
    /// `POST /api/v1/broadcast`.
    Broadcast,
    /// `POST /api/v1/rooms/{room}/publish`.
    Publish(String),
    /// `DELETE /api/v1/sessions/{id}`.
    CloseSession(String),
    /// `PUT /api/v1/rooms/{room}/history`.
    History(String),
}

impl Route {
    /// Whether the route belongs to the keyed API under `/api/v1/`.
    pub fn is_api(&self) -> bool {
        !matches!(self, Self::Health | Self::Ready | Self::Metrics | Self::Sse)
    }
}

/// Why no route matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No route has this path (404).
    NotFound,
    /// The path exists for other methods (405, with this `Allow` value).
    MethodNotAllowed(&'static str),
    /// A path parameter is not valid percent-encoded UTF-8 (400).
    BadPath,
}

/// Every route: (method, path pattern). `{name}` is one percent-encoded path segment.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/sse"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/online"),
    ("GET", "/api/v1/rooms"),
    ("GET", "/api/v1/rooms/{room}"),
    ("POST", "/api/v1/send"),
    ("POST", "/api/v1/broadcast"),
    ("POST", "/api/v1/rooms/{room}/publish"),
    ("DELETE", "/api/v1/sessions/{id}"),
    ("PUT", "/api/v1/rooms/{room}/history"),
];

/// Decodes `%XX` escapes of one path segment (`+` stays a plus, unlike in a query).
pub fn decode_segment(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Matches a request.
pub fn route(method: &str, path: &str) -> Result<Route, RouteError> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let param = |s: &str| {
        decode_segment(s)
            .filter(|v| !v.is_empty())
            .ok_or(RouteError::BadPath)
    };
    let (allow, route): (&'static str, Route) = match segs.as_slice() {
        ["health"] => ("GET", Route::Health),
        ["ready"] => ("GET", Route::Ready),
        ["metrics"] => ("GET", Route::Metrics),
        ["sse"] => ("GET", Route::Sse),
        ["api", "v1", "stats"] => ("GET", Route::Stats),
        ["api", "v1", "online"] => ("GET", Route::Online),
        ["api", "v1", "rooms"] => ("GET", Route::Rooms),
        ["api", "v1", "rooms", room] => ("GET", Route::Room(param(room)?)),
        ["api", "v1", "send"] => ("POST", Route::Send),
        ["api", "v1", "broadcast"] => ("POST", Route::Broadcast),
        ["api", "v1", "rooms", room, "publish"] => ("POST", Route::Publish(param(room)?)),
        ["api", "v1", "sessions", id] => ("DELETE", Route::CloseSession(param(id)?)),
        ["api", "v1", "rooms", room, "history"] => ("PUT", Route::History(param(room)?)),
        _ => return Err(RouteError::NotFound),
    };
    if method == allow {
        Ok(route)
    } else {
        Err(RouteError::MethodNotAllowed(allow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_matches_with_its_method_only() {
        for (method, pattern) in ROUTES {
            let path = pattern.replace("{room}", "a%2Fb").replace("{id}", "42");
            let r = route(method, &path).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
            if let Route::Room(n) | Route::Publish(n) | Route::History(n) = &r {
                assert_eq!(n, "a/b", "path parameters are percent-decoded");
            }
            let other = if *method == "GET" { "POST" } else { "GET" };
            assert_eq!(
                route(other, &path),
                Err(RouteError::MethodNotAllowed(method))
            );
        }
    }

    #[test]
    fn unknown_paths_and_bad_parameters() {
        assert_eq!(route("GET", "/nope"), Err(RouteError::NotFound));
        assert_eq!(route("GET", "/api/v1"), Err(RouteError::NotFound));
        assert_eq!(route("GET", "/api/v1/rooms/a/b"), Err(RouteError::NotFound));
        assert_eq!(route("GET", "/api/v1/rooms/%ff"), Err(RouteError::BadPath));
        assert_eq!(
            route("GET", "/api/v1/rooms/a+b"),
            Ok(Route::Room("a+b".into())),
            "a plus in a path is a plus"
        );
    }

    /// docs/http-api.md documents exactly the routes the router serves.
    #[test]
    fn the_docs_list_every_route_and_no_other() {
        let doc = include_str!("../../docs/http-api.md");
        let documented: std::collections::BTreeSet<(String, String)> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("### "))
            .filter_map(|l| {
                let (m, p) = l.trim().split_once(' ')?;
                let p = p.trim_matches('`').split('?').next()?;
                Some((m.trim_matches('`').to_string(), p.to_string()))
            })
            .collect();
        let served: std::collections::BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
    }
}
