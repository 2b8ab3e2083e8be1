//! shardhub: a thread-per-core WebSocket hub for real-time products.
//!
//! Clients connect over WebSocket, join rooms, publish to them, message users directly and
//! broadcast; the application embeds the server as a library and adds hooks (as with Melody or
//! GoHub), or runs the `shardhub` binary as is.
//!
//! # Architecture
//!
//! * [`engine`]: the sans-IO core. One [`engine::Engine`] per shard owns its connections'
//!   protocol state (HTTP requests, tungstenite's framing, sessions, rooms, rate limits,
//!   timers, outbound queues) and decides everything about them; bytes and time come in as
//!   arguments. [`engine::router`] is the one path every delivery takes, from a client, the
//!   [`Hub`], the HTTP API or (later) a cluster bus.
//! * `shard` (private): the IO driver, one mio reactor per core with its own SO_REUSEPORT
//!   listener: it reads sockets into one scratch buffer for the engine, writes what the engine
//!   queued with `send`/`sendmsg`, and carries routed messages between shards (crossbeam inboxes + a
//!   mio `Waker`).
//! * [`protocol`]: the wire, pure functions over bytes (frames encoded once, the JSON gate, the
//!   JSON and binary hub protocol of `docs/protocol.md`).
//! * [`http`]: HTTP, pure: one request parser for upgrades and API calls, the upgrade's checks,
//!   one response type, the API (`docs/http-api.md`) handlers over a [`Hub`], Prometheus
//!   rendering, the Server-Sent Events wire format.
//! * [`auth`]: who may connect and what they may do: origins, the authenticator (the built-in
//!   JWT scheme or the application's), permissions.
//! * [`cluster`]: one hub across several nodes over NATS or Redis (`--cluster`): the bus
//!   thread, the envelopes, the view of the other nodes.
//! * [`pages`]: the HTML pages the `shardhub` binary serves (the operator dashboard), embedded
//!   so that an application can serve them too with [`Hooks::page`].
//! * [`Hub`]: the thread-safe handle; [`Hooks`]: the application's callbacks; [`Server`]:
//!   binding, running and shutting down.
//!
//! A room publish encodes its frame once into an `Arc<[u8]>`; local members' outboxes get
//! clones, other shards with members get one message each. No lock is taken on that path.
//!
//! # Embedding
//!
//! ```no_run
//! use shardhub::{Config, Hooks, Server};
//!
//! let hooks = Hooks::default()
//!     .on_open(|ctx| ctx.join("lobby"))
//!     .handle("shout", |ctx, req| {
//!         let text = req.text.to_uppercase();
//!         let _ = ctx.hub().broadcast(text.as_str());
//!     });
//! let server = Server::builder(Config::default()).hooks(hooks).build()?;
//! server.run()?; // until SIGINT/SIGTERM
//! # Ok::<(), shardhub::StartError>(())
//! ```
// The server has no `unsafe`. Unit tests may allow it in one place: the counting allocator of
// `engine::sim::memory`, which measures what each connection keeps.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]
#![warn(missing_docs)]

pub mod auth;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod pages;
pub mod protocol;
pub mod server;
pub mod session;
mod shard;

pub use auth::{Identity, Permissions};
pub use config::{Config, ConfigError};
pub use engine::directory::{RoomInfo, SessionInfo};
pub use engine::ids::SessionId;
pub use hooks::{
    Context, Disconnect, Flow, Hooks, Message, Reject, Request, SessionError, StoreEvent,
    StoreEventKind,
};
pub use http::upgrade::UpgradeRequest;
pub use hub::{Hub, HubError, Payload};
pub use metrics::Stats;
pub use protocol::close::Close;
pub use server::{RunningServer, Server, ServerBuilder, StartError};
pub use session::Session;
/// The JSON parser of request DOMs ([`Request::value`]), re-exported for its value traits.
pub use simd_json;
