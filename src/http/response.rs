//! HTTP responses: a status, a body, a few headers, written out with the connection's
//! keep-alive decision. The one response type of the server: API answers, upgrade refusals and
//! the `101` alike. Errors have one JSON shape everywhere:
//! `{"error":{"code":"…","message":"…"}}`.

use std::fmt::Write as _;

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// Extra headers (name, value).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    /// A plain-text body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
            headers: Vec::new(),
        }
    }

    /// The JSON error body `{"error":{"code":…,"message":…}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({"error": {"code": code, "message": message}}),
        )
    }

    /// An error whose code is the status's own ([`status_code`]).
    pub fn refusal(status: u16, message: &str) -> Self {
        Self::error(status, status_code(status), message)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire; `keep_alive` chooses the `Connection` header.
    pub fn to_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut s = String::with_capacity(160 + self.body.len());
        let _ = write!(
            s,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        for (k, v) in &self.headers {
            let _ = write!(s, "{k}: {v}\r\n");
        }
        s.push_str("\r\n");
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The standard reason phrase of the statuses the server answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The error code of a status, for refusals that have no more specific one.
pub fn status_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "body_too_large",
        426 => "upgrade_required",
        429 => "too_many_requests",
        431 => "headers_too_large",
        500 => "internal",
        503 => "unavailable",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_well_formed_http_with_a_json_error_body() {
        let r = Response::error(404, "not_found", "no route \"x\"").with_header("X-A", "b");
        let bytes = r.to_bytes(true);
        let mut slots = [httparse::EMPTY_HEADER; 8];
        let mut p = httparse::Response::new(&mut slots);
        let n = match p.parse(&bytes).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete"),
        };
        assert_eq!(p.code, Some(404));
        let h = |name: &str| {
            p.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).unwrap().to_string())
        };
        assert_eq!(h("connection").as_deref(), Some("keep-alive"));
        assert_eq!(h("x-a").as_deref(), Some("b"));
        assert_eq!(h("content-length"), Some((bytes.len() - n).to_string()));
        let v: serde_json::Value = serde_json::from_slice(&bytes[n..]).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "no route \"x\"");
        assert!(String::from_utf8_lossy(&r.to_bytes(false)).contains("Connection: close\r\n"));
    }
}
