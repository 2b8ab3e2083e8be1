//! Close codes: every close the server starts, with the code, the reason and what a client
//! should do next. The one place these numbers live; `docs/protocol.md` ("Close codes") has the
//! same table for client authors.
//!
//! RFC 6455 leaves 3000-3999 to libraries and frameworks and 4000-4999 to applications. Like
//! Centrifugo, shardhub splits its range in two **classes** so that a client can act on any
//! close without knowing every code:
//!
//! * **3000-3499: reconnect**, with backoff. Nothing is wrong with the client: the server is
//!   restarting, the connection was too slow, or the application asked it to come back.
//! * **3500-3999: do not reconnect**. Reconnecting as before would be refused again (a bad
//!   token, a forbidden origin) or is unwanted (abuse, a kick); the client should stop, or
//!   change something first (get a new token).
//!
//! Codes outside these ranges follow [`reconnects`]: the RFC's own (1002, 1007, 1009, and 1006
//! when a connection drops without a close frame) mean reconnect, and the application's
//! 4000-4999 are split like ours, 4000-4499 reconnect and 4500-4999 do not (Centrifugo's
//! convention for application codes).
//!
//! Where the WebSocket protocol itself requires a code, it stays: a client that breaks RFC 6455
//! gets 1002, 1007 or 1009 (the Autobahn suite checks them).

/// A close the server sends, by cause. [`code`](Self::code), [`reason`](Self::reason) and
/// [`reconnect`](Self::reconnect) give its wire form and class; the variants are in the order
/// of the table in `docs/protocol.md`.
///
/// The application sends them too: [`Context::disconnect`](crate::Context::disconnect),
/// [`Hub::disconnect`](crate::Hub::disconnect), and the HTTP API's `DELETE
/// /api/v1/sessions/{id}?code=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Close {
    // ----- reconnect (3000-3499) -----
    /// 3000: the server is shutting down or restarting (SIGINT/SIGTERM,
    /// [`RunningServer::shutdown`](crate::RunningServer::shutdown)).
    Shutdown,
    /// 3001: nothing arrived from the client for `ping_interval + pong_timeout`. The close
    /// frame is a courtesy: the socket goes after one write, so the client may see 1006.
    HeartbeatTimeout,
    /// 3002: more than `max_queue_bytes` of output the client's socket would not take.
    SlowConsumer,
    /// 3003: queued output made no progress for `write_stall_timeout`.
    WriteStall,
    /// 3004: the server sheds load: an authenticator or `on_connect` refused the upgrade with
    /// 503 (or another 5xx but 500), or the application or an operator moved the client off.
    Overloaded,
    /// 3005: handling this session failed on the server's side (a panic in an application hook
    /// or in the server, counted in `Stats::panics`), or a refusal with status 500.
    InternalError,
    /// 3006: the application or an operator closed the session and wants the client back
    /// (`DELETE /api/v1/sessions/{id}?reconnect=true`).
    ForceReconnect,

    // ----- do not reconnect (3500-3999) -----
    /// 3500: the upgrade carried no acceptable credential: a missing, invalid or expired token,
    /// or no user while anonymous access is off (what was HTTP 401). The reason says which
    /// (`invalid token: expired`, `a bearer token is required`, …).
    Unauthorized,
    /// 3501: the client may not connect: its `Origin` is not in `allowed_origins`, or an
    /// authenticator or `on_connect` refused it with 403 (or another 4xx without a code of its
    /// own). The reason is the refusal's.
    Forbidden,
    /// 3502: the client kept exceeding its message or byte rate for `rate_limit_close_after`.
    RateLimited,
    /// 3503: a connection limit: an authenticator or `on_connect` refused with 429 (a limit of
    /// sessions per user, say).
    ConnectionLimit,
    /// 3504: an authenticator or `on_connect` refused the request as malformed (400).
    BadRequest,
    /// 3505: the application or an operator closed the session and does not want the client
    /// back (the default of `DELETE /api/v1/sessions/{id}`).
    ForceDisconnect,

    // ----- RFC 6455's own (reconnect) -----
    /// 1002: the client broke the WebSocket protocol (bad framing, an unmasked frame, a bad
    /// opcode or continuation). The reason is the parser's.
    ProtocolError,
    /// 1007: a text message that is not valid UTF-8.
    InvalidUtf8,
    /// 1009: a message over `max_message_bytes`.
    MessageTooBig,
}

/// RFC 6455 close code 1000: a normal closure (what the server echoes when a client closes).
pub const NORMAL: u16 = 1000;

/// RFC 6455 close code 1005: a close frame without a code. Never sent; what
/// [`Disconnect::code`](crate::Disconnect) says when the client's close frame had none.
pub const NO_STATUS: u16 = 1005;

/// RFC 6455 close code 1006: the connection ended without a close frame. Never sent; what a
/// client reports when the server dropped or reset the socket, and what
/// [`Disconnect::code`](crate::Disconnect) says when the client's socket did that.
pub const ABNORMAL: u16 = 1006;

impl Close {
    /// Every close, in table order.
    pub const ALL: [Close; 16] = [
        Close::Shutdown,
        Close::HeartbeatTimeout,
        Close::SlowConsumer,
        Close::WriteStall,
        Close::Overloaded,
        Close::InternalError,
        Close::ForceReconnect,
        Close::Unauthorized,
        Close::Forbidden,
        Close::RateLimited,
        Close::ConnectionLimit,
        Close::BadRequest,
        Close::ForceDisconnect,
        Close::ProtocolError,
        Close::InvalidUtf8,
        Close::MessageTooBig,
    ];

    /// The close code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            Close::Shutdown => 3000,
            Close::HeartbeatTimeout => 3001,
            Close::SlowConsumer => 3002,
            Close::WriteStall => 3003,
            Close::Overloaded => 3004,
            Close::InternalError => 3005,
            Close::ForceReconnect => 3006,
            Close::Unauthorized => 3500,
            Close::Forbidden => 3501,
            Close::RateLimited => 3502,
            Close::ConnectionLimit => 3503,
            Close::BadRequest => 3504,
            Close::ForceDisconnect => 3505,
            Close::ProtocolError => 1002,
            Close::InvalidUtf8 => 1007,
            Close::MessageTooBig => 1009,
        }
    }

    /// The reason sent with the code when the cause has no more specific one (an upgrade
    /// refusal sends the refusal's reason, a protocol error the parser's).
    pub const fn reason(self) -> &'static str {
        match self {
            Close::Shutdown => "server shutdown",
            Close::HeartbeatTimeout => "heartbeat timeout",
            Close::SlowConsumer => "slow consumer",
            Close::WriteStall => "write stall",
            Close::Overloaded => "server overloaded",
            Close::InternalError => "internal error",
            Close::ForceReconnect => "force reconnect",
            Close::Unauthorized => "unauthorized",
            Close::Forbidden => "forbidden",
            Close::RateLimited => "rate limit exceeded",
            Close::ConnectionLimit => "connection limit",
            Close::BadRequest => "bad request",
            Close::ForceDisconnect => "force disconnect",
            Close::ProtocolError => "protocol error",
            Close::InvalidUtf8 => "invalid UTF-8 in text message",
            Close::MessageTooBig => "message too big",
        }
    }

    /// Whether the client should reconnect (with backoff) after this close: its class.
    pub const fn reconnect(self) -> bool {
        reconnects(self.code())
    }

    /// The close with this code, if it is one of the table's.
    pub fn from_code(code: u16) -> Option<Close> {
        Close::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The close that tells a WebSocket client what an HTTP refusal of its upgrade would have
    /// told an HTTP client (browsers cannot read the status of a failed upgrade): 401
    /// [`Unauthorized`](Self::Unauthorized), 403 [`Forbidden`](Self::Forbidden), 429
    /// [`ConnectionLimit`](Self::ConnectionLimit), 400 [`BadRequest`](Self::BadRequest), 500
    /// [`InternalError`](Self::InternalError), another 5xx [`Overloaded`](Self::Overloaded),
    /// anything else [`Forbidden`](Self::Forbidden).
    pub const fn for_refusal(status: u16) -> Close {
        match status {
            400 => Close::BadRequest,
            401 => Close::Unauthorized,
            429 => Close::ConnectionLimit,
            500 => Close::InternalError,
            501..=599 => Close::Overloaded,
            _ => Close::Forbidden,
        }
    }
}

impl From<Close> for u16 {
    fn from(c: Close) -> u16 {
        c.code()
    }
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

/// Whether a client should reconnect (with backoff) after a close with `code`, any code:
/// 3500-3999 and 4500-4999 say no; everything else, including 1006 (no close frame at all),
/// says yes. See the module docs.
pub const fn reconnects(code: u16) -> bool {
    !matches!(code, 3500..=3999 | 4500..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_in_the_range_of_their_class() {
        for (i, c) in Close::ALL.iter().enumerate() {
            assert!(
                Close::ALL[..i].iter().all(|o| o.code() != c.code()),
                "{c:?} reuses a code"
            );
            assert_eq!(Close::from_code(c.code()), Some(*c));
            match c.code() {
                3000..=3499 => assert!(c.reconnect(), "{c:?}"),
                3500..=3999 => assert!(!c.reconnect(), "{c:?}"),
                // The RFC's codes: protocol errors, which reconnect.
                code => assert!(matches!(code, 1002 | 1007 | 1009) && c.reconnect(), "{c:?}"),
            }
            assert!(!c.reason().is_empty() && c.reason().len() <= 123);
        }
        assert_eq!(Close::from_code(3999), None);
    }

    #[test]
    fn the_class_of_any_code() {
        for code in [
            NORMAL, 1001, 1002, 1008, 1011, ABNORMAL, 3000, 3499, 4000, 4499,
        ] {
            assert!(reconnects(code), "{code}");
        }
        for code in [3500, 3505, 3999, 4500, 4999] {
            assert!(!reconnects(code), "{code}");
        }
    }

    #[test]
    fn refusal_statuses_keep_their_meaning() {
        let cases = [
            (401, Close::Unauthorized),
            (403, Close::Forbidden),
            (404, Close::Forbidden),
            (429, Close::ConnectionLimit),
            (400, Close::BadRequest),
            (500, Close::InternalError),
            (503, Close::Overloaded),
            (200, Close::Forbidden),
        ];
        for (status, close) in cases {
            assert_eq!(Close::for_refusal(status), close, "{status}");
        }
        // A client refused for its credentials or its abuse must not come straight back; one
        // refused for the server's trouble should.
        assert!(!Close::for_refusal(401).reconnect());
        assert!(Close::for_refusal(503).reconnect());
    }
}
