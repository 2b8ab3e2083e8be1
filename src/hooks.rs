//! Application hooks: what an embedding program runs on connect, message and disconnect.
//!
//! Hooks run on the shard thread that owns the session, between reading a message and
//! flushing replies, so they must not block. They do not touch sockets or other sessions
//! directly: a hook records [`Context`] actions (reply, join, leave, close) that the shard
//! applies after the hook returns (the uWebSockets rule: no subscribing or publishing while a
//! publish is being delivered), and reaches other sessions through the thread-safe [`Hub`].

use std::collections::HashMap;
use std::sync::Arc;

use simd_json::BorrowedValue;

use crate::http::upgrade::UpgradeRequest;
use crate::hub::Hub;
use crate::protocol::close::Close;
use crate::protocol::frame::{self, Frame, OpCode};
use crate::session::Session;

/// Why an authenticator or `on_connect` refused a client. A WebSocket client gets the upgrade
/// and then a close frame of the status's class ([`Close::for_refusal`]: 401 is
/// [`Close::Unauthorized`], 403 [`Close::Forbidden`], …) with the reason, because a browser
/// cannot read the status of a failed upgrade; a Server-Sent Events request gets the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status, e.g. 401 or 403; it chooses the close code (see above).
    pub status: u16,
    /// A short reason, sent as the body or the close reason (at most 123 bytes of it).
    pub reason: String,
}

impl Reject {
    /// A refusal with status 403.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: 403,
            reason: reason.into(),
        }
    }

    /// A refusal with any status.
    pub fn with_status(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The WebSocket close code: the peer's, the server's (one of [`Close`]'s, or the
    /// application's), 1005 for a client close frame without a code, or 1006 when the
    /// connection dropped without a close frame.
    pub code: u16,
    /// The close reason, if any.
    pub reason: String,
}

impl Disconnect {
    /// A close code and reason.
    pub fn new(code: u16, reason: &str) -> Self {
        Self {
            code,
            reason: reason.to_string(),
        }
    }

    /// The close of the table this code stands for, if it is one.
    pub fn close(&self) -> Option<Close> {
        Close::from_code(self.code)
    }

    /// Whether the client was told to reconnect (the class of the code, see
    /// [`close::reconnects`](crate::protocol::close::reconnects)).
    pub fn reconnect(&self) -> bool {
        crate::protocol::close::reconnects(self.code)
    }
}

impl From<Close> for Disconnect {
    fn from(c: Close) -> Self {
        Self::new(c.code(), c.reason())
    }
}

/// A fault on a session, reported to `on_error` before the session is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The client broke RFC 6455 (closed with 1002, 1007 or 1009).
    Protocol(String),
    /// A socket error other than would-block.
    Io(String),
    /// The client did not keep up with its outbound queue (closed with
    /// [`Close::SlowConsumer`] or [`Close::WriteStall`]).
    SlowConsumer,
    /// Nothing arrived for `ping_interval + pong_timeout` ([`Close::HeartbeatTimeout`]).
    HeartbeatTimeout,
    /// The client kept exceeding its message or byte rate ([`Close::RateLimited`]).
    RateLimited,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
            Self::Io(m) => write!(f, "socket error: {m}"),
            Self::SlowConsumer => f.write_str("slow consumer"),
            Self::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            Self::RateLimited => f.write_str("rate limit exceeded"),
        }
    }
}

/// An incoming data message.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// A JSON request of a type registered with [`Hooks::handle`].
#[derive(Debug)]
pub struct Request<'a> {
    /// The `type` field.
    pub kind: &'a str,
    /// The whole message as received.
    pub text: &'a str,
    /// The parsed message (simd-json's borrowed DOM).
    pub value: &'a BorrowedValue<'a>,
    /// The `id` field, to echo in a reply.
    pub id: Option<&'a BorrowedValue<'a>>,
}

impl Request<'_> {
    /// A top-level field of the request.
    pub fn field(&self, name: &str) -> Option<&BorrowedValue<'_>> {
        use simd_json::prelude::*;
        self.value.get(name)
    }

    /// A top-level string field of the request.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        use simd_json::prelude::*;
        self.field(name).and_then(|v| v.as_str())
    }
}

/// What a message hook decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Let the built-in protocol (or echo) handle the message too.
    Continue,
    /// The hook handled it; stop here.
    Handled,
}

/// A deferred action on the current session, applied by the shard after the hook returns.
#[derive(Debug)]
pub(crate) enum Action {
    Send(Frame),
    Join(String),
    Leave(String),
    Close(u16, String),
}

/// What a hook can see and do on the shard thread.
pub struct Context<'a> {
    pub(crate) session: &'a mut Session,
    pub(crate) actions: &'a mut Vec<Action>,
    pub(crate) hub: &'a Hub,
}

impl Context<'_> {
    /// The current session.
    pub fn session(&self) -> &Session {
        self.session
    }

    /// The current session, to change its key/value store.
    pub fn session_mut(&mut self) -> &mut Session {
        self.session
    }

    /// The hub, to reach other sessions, users and rooms.
    pub fn hub(&self) -> &Hub {
        self.hub
    }

    /// Sends a text message to this session.
    pub fn send_text(&mut self, text: &str) {
        self.actions
            .push(Action::Send(frame::encode(OpCode::Text, text.as_bytes())));
    }

    /// Sends a binary message to this session.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.actions
            .push(Action::Send(frame::encode(OpCode::Binary, bytes)));
    }

    /// Joins a room, exactly as if the client had sent `{"type":"join","room":…}`: the client
    /// gets the `ack` or `error`.
    pub fn join(&mut self, room: impl Into<String>) {
        self.actions.push(Action::Join(room.into()));
    }

    /// Leaves a room, as if the client had sent `{"type":"leave","room":…}`.
    pub fn leave(&mut self, room: impl Into<String>) {
        self.actions.push(Action::Leave(room.into()));
    }

    /// Closes the session with a close code and reason once queued output is sent. Prefer a
    /// code of [`Close`]'s table (`ctx.close(Close::ForceReconnect.code(), "moving you")`) or
    /// the application's 4000-4999, so that clients know whether to reconnect.
    pub fn close(&mut self, code: u16, reason: impl Into<String>) {
        self.actions.push(Action::Close(code, reason.into()));
    }

    /// Closes the session with one of the table's closes and its reason, e.g.
    /// [`Close::ForceDisconnect`] or [`Close::ForceReconnect`].
    pub fn disconnect(&mut self, close: Close) {
        self.close(close.code(), close.reason());
    }
}

/// The signature of an authenticator; see [`Hooks::authenticate`].
pub(crate) type AuthenticateFn =
    dyn Fn(&UpgradeRequest) -> Result<crate::auth::Identity, Reject> + Send + Sync;
type ConnectFn = dyn Fn(&UpgradeRequest, &mut Session) -> Result<(), Reject> + Send + Sync;
type OpenFn = dyn Fn(&mut Context<'_>) + Send + Sync;
type MessageFn = dyn Fn(&mut Context<'_>, Message<'_>) -> Flow + Send + Sync;
type HandlerFn = dyn Fn(&mut Context<'_>, &Request<'_>) + Send + Sync;
type DisconnectFn = dyn Fn(&Session, &Disconnect) + Send + Sync;
type ErrorFn = dyn Fn(&Session, &SessionError) + Send + Sync;
/// The `on_stored` hook's type.
pub(crate) type OnStoredFn = dyn Fn(&StoreEvent<'_>) + Send + Sync;
type QuietFn = dyn Fn() + Send + Sync;

/// How long a shard has had no event before [`Hooks::on_quiet`] runs: longer than the pauses
/// within a burst of clients, and than mimalloc's default purge delay (1 s).
pub const QUIET_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);

/// What happened to an offline message ([`Hooks::on_stored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEventKind {
    /// Kept for its offline user (`send` with `"store": true`).
    Stored,
    /// Handed to a session of its user on this node, and gone from the store.
    Delivered,
    /// Sent to the node where its user's session opened (cluster mode), and gone from here.
    Forwarded,
    /// Pushed out by newer messages past `offline_max_messages` or `offline_max_bytes`.
    Evicted,
    /// Older than `offline_ttl`.
    Expired,
}

/// An offline message changing hands, for [`Hooks::on_stored`].
#[derive(Debug, Clone, Copy)]
pub struct StoreEvent<'a> {
    /// What happened.
    pub kind: StoreEventKind,
    /// The recipient.
    pub user: &'a str,
    /// The message id (`mid`).
    pub mid: &'a str,
    /// The sending user.
    pub from: &'a str,
    /// When it was stored, Unix time in ms.
    pub unix_ms: u64,
    /// The `direct` message as the recipient gets it (JSON).
    pub message: &'a [u8],
}

/// A static page the server answers `GET` requests of its path with (see [`Hooks::page`]).
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub(crate) content_type: &'static str,
    pub(crate) body: Arc<[u8]>,
}

/// The application's hooks, and what it serves besides the hub protocol (static pages, the
/// `welcome` frame). Every hook is optional; the default is the plain hub protocol.
#[derive(Default, Clone)]
pub struct Hooks {
    pub(crate) authenticate: Option<Arc<AuthenticateFn>>,
    pub(crate) on_connect: Option<Arc<ConnectFn>>,
    pub(crate) on_open: Option<Arc<OpenFn>>,
    pub(crate) on_message: Option<Arc<MessageFn>>,
    pub(crate) handlers: HashMap<String, Arc<HandlerFn>>,
    pub(crate) on_disconnect: Option<Arc<DisconnectFn>>,
    pub(crate) on_error: Option<Arc<ErrorFn>>,
    /// Static pages by exact path.
    pub(crate) pages: HashMap<String, Page>,
    /// Sessions open without the `welcome` frame.
    pub(crate) no_welcome: bool,
    pub(crate) on_stored: Option<Arc<OnStoredFn>>,
    pub(crate) on_quiet: Option<Arc<QuietFn>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("pages", &self.pages.keys().collect::<Vec<_>>())
            .field("no_welcome", &self.no_welcome)
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// Decides who a client is, during the upgrade and before `on_connect`: return the user id
    /// and permissions, [`Identity::anonymous`](crate::auth::Identity::anonymous) (admitted
    /// only with `allow_anonymous`), or a refusal (401 for bad credentials). Replaces the
    /// built-in JWT scheme, which is itself an authenticator; with one set, `?user=` is
    /// ignored. See `docs/protocol.md`, "Authentication".
    pub fn authenticate(
        mut self,
        f: impl Fn(&UpgradeRequest) -> Result<crate::auth::Identity, Reject> + Send + Sync + 'static,
    ) -> Self {
        self.authenticate = Some(Arc::new(f));
        self
    }

    /// Runs during the upgrade, before the session exists for anyone else: inspect the request
    /// (path, query, headers), set the user id or session keys, or refuse with a [`Reject`]
    /// (the client gets the close code of its status, see [`Reject`]).
    pub fn on_connect(
        mut self,
        f: impl Fn(&UpgradeRequest, &mut Session) -> Result<(), Reject> + Send + Sync + 'static,
    ) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// Runs once the session is open and greeted.
    pub fn on_open(mut self, f: impl Fn(&mut Context<'_>) + Send + Sync + 'static) -> Self {
        self.on_open = Some(Arc::new(f));
        self
    }

    /// Runs for every text and binary message before the built-in protocol; return
    /// [`Flow::Handled`] to stop there.
    pub fn on_message(
        mut self,
        f: impl Fn(&mut Context<'_>, Message<'_>) -> Flow + Send + Sync + 'static,
    ) -> Self {
        self.on_message = Some(Arc::new(f));
        self
    }

    /// Handles JSON requests whose `type` is `kind` (GoHub's `RegisterHandler`). Registered
    /// types take precedence over built-in ones of the same name.
    pub fn handle(
        mut self,
        kind: impl Into<String>,
        f: impl Fn(&mut Context<'_>, &Request<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.handlers.insert(kind.into(), Arc::new(f));
        self
    }

    /// Runs after a session ended, with its close code.
    pub fn on_disconnect(
        mut self,
        f: impl Fn(&Session, &Disconnect) + Send + Sync + 'static,
    ) -> Self {
        self.on_disconnect = Some(Arc::new(f));
        self
    }

    /// Runs when an offline message is stored, and again when it leaves the store: delivered
    /// to its user's new session, forwarded to that session's node, evicted or expired
    /// (go-wsc's `OnMessageSend`), so the application can persist what it wants. It runs on
    /// the thread that changed the store (a shard, the cluster bus, an HTTP or `Hub` caller),
    /// outside the store's lock: keep it short; a panic in it is logged and contained.
    pub fn on_stored(mut self, f: impl Fn(&StoreEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_stored = Some(Arc::new(f));
        self
    }

    /// Runs on a shard's thread once the shard has been quiet (no socket or inbox event) for
    /// [`QUIET_AFTER`] after a busy spell: the moment to hand memory that the spell freed back
    /// to the system. An allocator keeps the pages a burst of handshakes used and freed for
    /// its next burst, and nothing in an idle server asks it to return them. The `shardhub`
    /// binary calls mimalloc's `mi_collect` here (tuning.md, "Memory per connection"). It runs
    /// at most once per quiet spell; keep it short.
    pub fn on_quiet(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_quiet = Some(Arc::new(f));
        self
    }

    /// Runs when a session fails (protocol error, socket error, slow consumer, heartbeat).
    pub fn on_error(mut self, f: impl Fn(&Session, &SessionError) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(f));
        self
    }

    /// Serves `body` to `GET` requests of exactly `path` (the query is ignored) on the main
    /// listener, with `content_type` and `Cache-Control: no-cache`: the page of an embedded
    /// application's client, next to its WebSocket (`/ws`) on the same port. A page takes
    /// precedence over the built-in routes of the same path; it is public (the API key guards
    /// `/api/v1/`, which a page's script calls with the key if it needs to).
    pub fn page(
        mut self,
        path: impl Into<String>,
        content_type: &'static str,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        let page = Page {
            content_type,
            body: body.into().into(),
        };
        self.pages.insert(path.into(), page);
        self
    }

    /// Opens sessions without the `welcome` frame, for applications that speak their own
    /// protocol to their clients (a Melody chat page would show it as a message). Everything
    /// else the server sends unasked (presence, closes) comes only from requests of the
    /// built-in protocol that the application's clients do not make.
    pub fn without_welcome(mut self) -> Self {
        self.no_welcome = true;
        self
    }
}
