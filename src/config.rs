//! Server configuration: embedded defaults, an optional TOML file, then overrides.
//!
//! [`Config`] is the validated form every other module reads. Each field documents its default
//! and what it trades; `tuning.md` explains the ones that matter at 100k+ connections. The
//! binary layers a TOML file, `SHARDHUB_*` environment variables and command-line flags on top
//! of [`Config::default`], in that order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::ids::SessionId;

/// Everything a server needs to know before it starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT). Default `127.0.0.1:8080`; port 0 picks a
    /// free port (shared by all shards).
    pub listen: SocketAddr,
    /// Reactor threads; 0 means one per core. At most 64.
    pub shards: usize,
    /// Pin shard `i` to core `i mod cores`. Default on; turn off when sharing cores with other
    /// busy processes on purpose.
    pub pin_cores: bool,
    /// Echo mode: no hub protocol, every message is sent back unchanged (for conformance tests
    /// and raw benchmarks), on `/ws` and `/`.
    pub echo: bool,
    /// Let clients without `?user=` in as `anon-<session>`. Default on.
    pub allow_anonymous: bool,
    // ----- authentication, permissions and abuse limits (see docs/protocol.md) -----
    /// HMAC secret for JWTs (HS256 unless `jwt_algorithm` says otherwise), at least 32 bytes.
    /// Setting it (or `jwt_public_key_file`) makes a token decide who a client is.
    pub jwt_secret: Option<String>,
    /// PEM public key file for JWTs (RS256 unless `jwt_algorithm` says ES256, PS256, …).
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// The one JWT algorithm accepted, e.g. `HS256`, `RS256`, `ES256`. Default: HS256 with a
    /// secret, RS256 with a key file.
    pub jwt_algorithm: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s.
    #[serde(with = "humantime_serde_compat")]
    pub jwt_leeway: Duration,
    /// Required `aud` claim, if set.
    pub jwt_audience: Option<String>,
    /// Required `iss` claim, if set.
    pub jwt_issuer: Option<String>,
    /// Browser origins allowed to connect (`Origin` header), e.g. `https://app.example.com`;
    /// others get 403. Default `["*"]`: any. Requests without `Origin` always pass.
    pub allowed_origins: Vec<String>,
    /// Permissions of anonymous sessions and `?user=` sessions, and of tokens for every claim
    /// they leave out: `[default_permissions]` with `broadcast`, `send` and a `rooms` table of
    /// `join`/`publish`/`presence` pattern lists. What it leaves out is allowed; the default
    /// allows everything.
    pub default_permissions: crate::auth::PermissionSpec,
    /// Data messages per second per connection; 0 = unlimited. Default 100.
    pub rate_messages_per_sec: u64,
    /// Message burst per connection. Default 200.
    pub rate_burst_messages: u64,
    /// Payload bytes per second per connection; 0 = unlimited. Default 1 MiB.
    pub rate_bytes_per_sec: u64,
    /// Byte burst per connection, raised to `max_message_bytes` if smaller (a whole message
    /// must fit). Default 2 MiB.
    pub rate_burst_bytes: u64,
    /// Time a client may keep having messages dropped (without a 1 s pause) before it is
    /// closed with 3502 (`Close::RateLimited`). Default 10 s.
    #[serde(with = "humantime_serde_compat")]
    pub rate_limit_close_after: Duration,
    /// Open connections (including handshakes) per client address (IPv6: per /64); 0 =
    /// unlimited, the default (clients behind one proxy or NAT share an address).
    pub max_connections_per_ip: usize,
    /// New connections per second per client address; 0 = unlimited, the default.
    pub handshakes_per_ip_per_sec: u64,
    /// Burst of new connections per client address. Default 20.
    pub handshakes_per_ip_burst: u64,
    /// Send `joined`/`left` events to room members. Default on; each join costs one delivery per
    /// member.
    pub presence: bool,
    /// Rooms with more members than this get no `joined`/`left` events: their members get the
    /// room's member count (`presence` frame) at most once per `presence_interval` instead, so
    /// that a room filling up costs O(members) deliveries, not O(members²). 0: no limit.
    /// Default 100.
    pub presence_limit: usize,
    /// How often members of a room over `presence_limit` hear its member count while it
    /// changes. Default 1 s.
    #[serde(with = "humantime_serde_compat")]
    pub presence_interval: Duration,
    /// Negotiate permessage-deflate (RFC 7692, no context takeover either way) with clients
    /// that offer it. Default off, as in uWebSockets and Centrifugo: it costs server CPU for
    /// each message (compressed once per shard, inflated per client message) to save
    /// bandwidth; see tuning.md, "Compression".
    pub compression: bool,
    /// Data frames with fewer payload bytes go uncompressed even to compressing sessions:
    /// small messages barely shrink and still cost a compression. Default 128 (tuning.md).
    pub compression_min_bytes: usize,
    /// Largest incoming message (after reassembly of fragments); larger ones close with 1009.
    /// Default 64 KiB: chat-sized, and it bounds what one client can make the server buffer.
    pub max_message_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON message or HTTP API body (the request
    /// object itself is level 1); deeper ones get `bad_request` / HTTP 400 before anything
    /// parses them. Default 64; at most 1,024, which bounds the stack the parser may use
    /// whatever `max_message_bytes` is (see docs/security.md).
    pub max_json_depth: usize,
    /// Largest upgrade request head; larger ones get HTTP 431. Default 8 KiB, like nginx.
    pub max_header_bytes: usize,
    /// Longest room name or user id, in bytes (at most 255). Default 128.
    pub max_name_bytes: usize,
    /// Rooms one session may be in at once. Default 64.
    pub max_rooms_per_session: usize,
    /// Connections on the whole server; more get HTTP 503. Default 1,000,000.
    pub max_connections: usize,
    /// Connections per shard; more get HTTP 503. Default and maximum 1,048,575.
    pub max_connections_per_shard: usize,
    /// Outbound bytes queued for one connection before it counts as a slow consumer and is
    /// closed with 3002 (`Close::SlowConsumer`). Default 1 MiB: about 5,000 chat messages of
    /// backlog.
    pub max_queue_bytes: usize,
    /// Capacity of rooms created by a first join; 0 is unlimited (the default).
    pub default_room_capacity: usize,
    /// Capacities of particular rooms, by name.
    pub room_capacities: HashMap<String, usize>,
    /// Bytes tungstenite reads per call, and its eagerly allocated read buffer per connection.
    /// Default 512: it dominates idle memory per connection (see tuning.md); larger messages
    /// still arrive, in more read calls.
    pub read_buffer_bytes: usize,
    /// Listen backlog. Default 4096: connect bursts overflow mio's 128 and wait for SYN
    /// retransmits (~1 s).
    pub backlog: u32,
    /// Time allowed for the upgrade request. Default 10 s (slowloris bound).
    #[serde(with = "humantime_serde_compat")]
    pub handshake_timeout: Duration,
    /// Quiet time before the server pings a client. Default 25 s, under common 30-60 s proxy
    /// idle timeouts.
    #[serde(with = "humantime_serde_compat")]
    pub ping_interval: Duration,
    /// Further quiet time after a ping before the client is dropped. Default 20 s.
    #[serde(with = "humantime_serde_compat")]
    pub pong_timeout: Duration,
    /// Time with queued output and no write progress before the client counts as stuck and is
    /// closed with 3003 (`Close::WriteStall`). Default 15 s.
    #[serde(with = "humantime_serde_compat")]
    pub write_stall_timeout: Duration,
    /// How long a connection's deliveries (publications, presence, broadcasts, direct
    /// messages) may be held so that the frames arriving meanwhile share one write. Default 0:
    /// off, each turn writes what it queued. Up to 1 s; one deadline per shard, so no delivery
    /// waits longer than this (plus the write itself). Replies, control frames and HTTP
    /// responses are never held. Trades latency for fewer system calls: see tuning.md,
    /// "Write delay".
    #[serde(with = "humantime_serde_compat")]
    pub write_delay: Duration,
    /// Time a closing connection gets to finish the close handshake. Default 3 s.
    #[serde(with = "humantime_serde_compat")]
    pub close_timeout: Duration,
    /// Time a graceful shutdown waits for clients to receive their close frames. Default 5 s.
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
    /// Timer resolution. Default 100 ms: deadlines are seconds apart, so coarse ticks cost
    /// nothing in accuracy and keep the wheel's work per tick small.
    #[serde(with = "humantime_serde_compat")]
    pub tick: Duration,

    // ----- HTTP API and Server-Sent Events (docs/http-api.md) -----
    /// Serve the HTTP API under `/api/v1/` (stats, online users, rooms, send, broadcast,
    /// publish, closing sessions). Default on. `/health`, `/ready` and `/metrics` are always
    /// served and never need the key.
    pub http_api: bool,
    /// The key `/api/v1/` requests must carry (`Authorization: Bearer KEY` or `X-API-Key: KEY`).
    /// Default none: the API is open, which the server allows only on loopback addresses.
    pub api_key: Option<String>,
    /// A separate address for the HTTP API (bound by shard 0 alone). Default none: the API is
    /// served on `listen`. When set, `listen` keeps WebSockets, `/sse` and `/health` only.
    pub admin_listen: Option<SocketAddr>,
    /// Largest HTTP request body; larger ones get 413. Default 64 KiB, like `max_message_bytes`.
    pub max_request_body_bytes: usize,
    /// Interval of the `: ping` comments on idle SSE streams. Default 15 s, under common
    /// 30-60 s proxy idle timeouts.
    #[serde(with = "humantime_serde_compat")]
    pub sse_heartbeat: Duration,
    /// The least history a room keeps once an SSE stream has read it, for streams
    /// reconnecting with `Last-Event-ID`: a minimum over `history_size`, in the same ring and
    /// positions (docs/http-api.md). Default 64; 0 keeps none.
    pub sse_history: usize,

    // ----- room history and recovery (docs/protocol.md#history-and-recovery) -----
    /// Publications each room keeps, for clients that rejoin with `recover` (and SSE streams
    /// with `Last-Event-ID`). Default 0: no history, and WebSocket publications carry no
    /// `offset`. Each kept publication costs its frame (shared with the live delivery) and
    /// ~40 bytes.
    pub history_size: usize,
    /// How long a kept publication stays recoverable. Default 0: until newer ones push it out,
    /// and a room's history goes with its last member. Set, an emptied room with history
    /// stays (memberless) until its newest publication is this old, so that members who all
    /// dropped at once can still recover.
    #[serde(with = "humantime_serde_compat")]
    pub history_ttl: Duration,
    /// History settings of particular rooms, by name (`size` 0 turns it off for that room);
    /// `[history_rooms.lobby] size = 100, ttl = "5m"`.
    pub history_rooms: HashMap<String, RoomHistory>,

    // ----- acknowledged sends and offline messages (docs/protocol.md#acknowledged-and-offline-direct-messages) -----
    /// How long an acknowledged `send` (`"ack": true`) waits for the recipients' receipts when
    /// the request names no `timeout_ms`. Default 5 s: a connected client answers within a
    /// round trip; a phone that stopped reading should not hold the sender for long.
    #[serde(with = "humantime_serde_compat")]
    pub ack_timeout: Duration,
    /// Acknowledged sends one session may have waiting for receipts; one more is answered
    /// `too_many_pending`. Default 1024: a bound on the memory one session pins (each entry
    /// is ~130 bytes of table and timer by the structs' sizes, plus the request's `id` and one
    /// session id per receipt), far above what a client waiting for its receipts keeps in
    /// flight.
    pub max_pending_acks: usize,
    /// Messages kept per offline user (`"store": true`); the oldest is evicted past it.
    /// Default 100.
    pub offline_max_messages: usize,
    /// Bytes of messages kept per offline user (their frames); the oldest are evicted past it.
    /// Default 1 MiB.
    pub offline_max_bytes: usize,
    /// How long a stored message waits for its user. Default 24 h.
    #[serde(with = "humantime_serde_compat")]
    pub offline_ttl: Duration,
    /// Bytes of stored messages on this node, all users together; a message that would pass
    /// it is refused (`store_full`) rather than evicting another user's. Default 256 MiB.
    pub offline_max_total_bytes: usize,
    /// Offline users with stored messages on this node; a message for one more is refused
    /// (`store_full`). Default 100,000.
    pub offline_max_users: usize,

    // ----- cluster mode (docs/cluster.md) -----
    /// The bus that joins this node to others, `nats://HOST:PORT` or `redis://HOST:PORT`.
    /// Default none: a single node, and no bus code runs.
    pub cluster: Option<String>,
    /// This node's name in the cluster, unique in it. Default: the host name and the process
    /// id.
    pub node: Option<String>,

    // ----- the pages the `shardhub` binary serves (crate::pages) -----
    /// Serve the operator dashboard ([`pages::DASHBOARD`](crate::pages::DASHBOARD)) at
    /// `/dashboard`. Default on: the page itself is public, and the API it reads is guarded by
    /// `api_key` as always. Read by the `shardhub` binary, which registers the page with
    /// [`Hooks::page`](crate::Hooks::page); an embedding application serves it (or not) the
    /// same way, and the library serves no page of its own.
    pub dashboard: bool,
    /// Serve the demo chat at `/`. Default (none): on when `listen` is a loopback address, off
    /// otherwise, so a server facing the network shows no demo unless asked to
    /// ([`Config::demo_enabled`]). Read by the `shardhub` binary, like `dashboard`.
    pub demo: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shards: 0,
            pin_cores: true,
            echo: false,
            allow_anonymous: true,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_algorithm: None,
            jwt_leeway: Duration::from_secs(30),
            jwt_audience: None,
            jwt_issuer: None,
            allowed_origins: vec!["*".into()],
            default_permissions: crate::auth::PermissionSpec::allow_all(),
            rate_messages_per_sec: 100,
            rate_burst_messages: 200,
            rate_bytes_per_sec: 1024 * 1024,
            rate_burst_bytes: 2 * 1024 * 1024,
            rate_limit_close_after: Duration::from_secs(10),
            max_connections_per_ip: 0,
            handshakes_per_ip_per_sec: 0,
            handshakes_per_ip_burst: 20,
            presence: true,
            presence_limit: 100,
            presence_interval: Duration::from_secs(1),
            compression: false,
            compression_min_bytes: 128,
            max_message_bytes: 64 * 1024,
            max_json_depth: crate::protocol::json::DEFAULT_MAX_DEPTH,
            max_header_bytes: 8 * 1024,
            max_name_bytes: 128,
            max_rooms_per_session: 64,
            max_connections: 1_000_000,
            max_connections_per_shard: SessionId::MAX_KEY,
            max_queue_bytes: 1024 * 1024,
            default_room_capacity: 0,
            room_capacities: HashMap::new(),
            read_buffer_bytes: 512,
            backlog: 4096,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(20),
            write_stall_timeout: Duration::from_secs(15),
            write_delay: Duration::ZERO,
            close_timeout: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(5),
            tick: Duration::from_millis(100),

            http_api: true,
            api_key: None,
            admin_listen: None,
            max_request_body_bytes: 64 * 1024,
            sse_heartbeat: Duration::from_secs(15),
            sse_history: 64,
            history_size: 0,
            history_ttl: Duration::ZERO,
            history_rooms: HashMap::new(),
            ack_timeout: Duration::from_secs(5),
            max_pending_acks: 1024,
            offline_max_messages: 100,
            offline_max_bytes: 1024 * 1024,
            offline_ttl: Duration::from_secs(24 * 3600),
            offline_max_total_bytes: 256 * 1024 * 1024,
            offline_max_users: 100_000,
            cluster: None,
            node: None,
            dashboard: true,
            demo: None,
        }
    }
}

/// One room's history settings (`history_rooms`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomHistory {
    /// Publications kept; 0: none.
    pub size: usize,
    /// How long each is kept; zero: until pushed out.
    #[serde(with = "humantime_serde_compat")]
    pub ttl: Duration,
}

impl Config {
    /// Connection slots each shard reserves up front, in its slab and in the directory's session
    /// table: `max_connections_per_shard`, at most 131,072 (the tables grow past it if need
    /// be). Address space, not memory: untouched pages are not resident.
    pub fn reserved_slots_per_shard(&self) -> usize {
        self.max_connections_per_shard.min(1 << 17)
    }

    /// The history of rooms without their own settings.
    pub fn history(&self) -> crate::engine::history::HistoryPolicy {
        crate::engine::history::HistoryPolicy {
            size: self.history_size,
            ttl: self.history_ttl,
        }
    }

    /// Whether the demo page is on: `demo` if set, else whether `listen` is a loopback
    /// address.
    pub fn demo_enabled(&self) -> bool {
        self.demo.unwrap_or_else(|| self.listen.ip().is_loopback())
    }

    /// Whether any room may keep history (`history_size` or a `history_rooms` entry).
    pub fn has_history(&self) -> bool {
        self.history_size > 0 || self.history_rooms.values().any(|r| r.size > 0)
    }
}

/// The longest an acknowledged send may wait for receipts (`ack_timeout`, and a request's
/// `timeout_ms`): pending entries pin memory for that long.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest `write_delay`: past a second, held output is a batch interval rather than a
/// delay, and heartbeats and the write-stall timeout (1 s and up) would have to allow for it.
pub const MAX_WRITE_DELAY: Duration = Duration::from_secs(1);

/// Most publications one room may keep (`history_size`): a bound on the memory a
/// configuration typo can claim per room.
pub const MAX_HISTORY_SIZE: usize = 1_000_000;

/// A configuration that cannot run.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io(std::path::PathBuf, std::io::Error),
    /// The file is not valid TOML for [`Config`].
    Toml(String),
    /// A value is out of range; the message says which and why.
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            Self::Toml(e) => write!(f, "invalid configuration file: {e}"),
            Self::Invalid(e) => write!(f, "invalid configuration: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads a TOML file; missing keys keep their defaults, unknown keys are an error.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io(path.into(), e))?;
        Self::from_toml_str(&text)
    }

    /// Parses TOML text; missing keys keep their defaults, unknown keys are an error.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))
    }

    /// The number of shards this configuration runs: `shards`, or the core count if 0.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// Checks every value; the server calls this before it starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_http()?;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.shard_count() > SessionId::MAX_SHARDS {
            return bad(format!("shards must be at most {}", SessionId::MAX_SHARDS));
        }
        if self.max_connections_per_shard == 0
            || self.max_connections_per_shard > SessionId::MAX_KEY
        {
            return bad(format!(
                "max_connections_per_shard must be 1..={}",
                SessionId::MAX_KEY
            ));
        }
        if self.max_name_bytes == 0 || self.max_name_bytes > 255 {
            return bad(
                "max_name_bytes must be 1..=255 (binary headers carry one length byte)".into(),
            );
        }
        let max_depth = crate::protocol::json::MAX_DEPTH_LIMIT;
        if self.max_json_depth == 0 || self.max_json_depth > max_depth {
            return bad(format!(
                "max_json_depth must be 1..={max_depth} (it bounds the parser's stack)"
            ));
        }
        if self.max_message_bytes == 0 {
            return bad("max_message_bytes must be positive".into());
        }
        if self.compression_min_bytes > self.max_message_bytes.max(1 << 20) {
            return bad(format!(
                "compression_min_bytes must be at most {} (max_message_bytes or 1 MiB)",
                self.max_message_bytes.max(1 << 20)
            ));
        }
        if self.max_queue_bytes < 1024 {
            return bad("max_queue_bytes must be at least 1024".into());
        }
        if self.read_buffer_bytes < 64 {
            return bad("read_buffer_bytes must be at least 64".into());
        }
        if self.max_header_bytes < 256 {
            return bad("max_header_bytes must be at least 256".into());
        }
        if self.write_delay > MAX_WRITE_DELAY || self.write_delay >= self.write_stall_timeout {
            return bad(format!(
                "write_delay must be at most {MAX_WRITE_DELAY:?} and below write_stall_timeout"
            ));
        }
        if self.tick.is_zero() || self.tick > Duration::from_secs(1) {
            return bad("tick must be between 1 ms and 1 s".into());
        }
        for (name, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
            ("write_stall_timeout", self.write_stall_timeout),
            ("close_timeout", self.close_timeout),
            ("presence_interval", self.presence_interval),
        ] {
            if d < self.tick {
                return bad(format!(
                    "{name} must be at least one tick ({:?})",
                    self.tick
                ));
            }
        }
        if self.ack_timeout < self.tick || self.ack_timeout > MAX_ACK_TIMEOUT {
            return bad(format!(
                "ack_timeout must be between one tick and {MAX_ACK_TIMEOUT:?}"
            ));
        }
        if self.max_pending_acks == 0 {
            return bad("max_pending_acks must be positive".into());
        }
        let sizes =
            std::iter::once(self.history_size).chain(self.history_rooms.values().map(|r| r.size));
        if sizes.into_iter().any(|n| n > MAX_HISTORY_SIZE) {
            return bad(format!("history_size must be at most {MAX_HISTORY_SIZE}"));
        }
        let redis = self
            .cluster
            .as_ref()
            .is_some_and(|u| u.starts_with("redis://") || u.starts_with("rediss://"));
        if self.cluster.is_some() && !redis && self.has_history() {
            return bad(
                "history_size and history_rooms in cluster mode need a Redis bus \
                 (--cluster redis://...): with NATS, positions would be this node's alone \
                 (docs/cluster.md#history-and-recovery)"
                    .into(),
            );
        }
        if let Some(url) = &self.cluster {
            if !["nats://", "tls://", "redis://", "rediss://"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return bad(format!(
                    "cluster must be a nats:// or redis:// URL, not {url:?}"
                ));
            }
        }
        if let Some(node) = &self.node {
            if node.is_empty() || node.len() > 255 || node.chars().any(char::is_control) {
                return bad("node must be 1-255 bytes without control characters".into());
            }
        }
        crate::auth::validate_config(self)
    }

    /// The HTTP API's checks: an open write API only on loopback.
    fn validate_http(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.api_key.as_deref() == Some("") {
            return bad("api_key must not be empty (leave it out to disable the key)".into());
        }
        if self.max_request_body_bytes == 0 {
            return bad("max_request_body_bytes must be positive".into());
        }
        if self.sse_heartbeat < self.tick {
            return bad(format!(
                "sse_heartbeat must be at least one tick ({:?})",
                self.tick
            ));
        }
        // The API lets anyone who reaches it message every user and close sessions: without a
        // key it must not face the network.
        let api_addr = self.admin_listen.unwrap_or(self.listen);
        if self.http_api && self.api_key.is_none() && !api_addr.ip().is_loopback() {
            return bad(format!(
                "the HTTP API would be open on non-loopback address {api_addr}: set api_key, \
                 bind it to loopback (admin_listen), or turn it off (http_api = false)"
            ));
        }
        Ok(())
    }
}

/// Durations in TOML as humantime strings: `"25s"`, `"1500ms"`, `"2m"`.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn the_demo_defaults_to_on_for_loopback_only_and_the_dashboard_to_on() {
        let on = |toml: &str| {
            let c = Config::from_toml_str(toml).unwrap();
            (c.dashboard, c.demo_enabled())
        };
        assert_eq!(on(""), (true, true));
        assert_eq!(on("listen = \"[::1]:9000\""), (true, true));
        assert_eq!(on("listen = \"0.0.0.0:9000\""), (true, false));
        assert_eq!(on("listen = \"0.0.0.0:9000\"\ndemo = true"), (true, true));
        assert_eq!(on("demo = false\ndashboard = false"), (false, false));
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let c = Config::from_toml_str(
            "listen = \"0.0.0.0:9000\"\nping_interval = \"5s\"\npresence_interval = \"2s\"\n[room_capacities]\nvip = 2\n",
        )
        .unwrap();
        assert_eq!(c.presence_interval, Duration::from_secs(2));
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(c.room_capacities["vip"], 2);
        assert_eq!(c.max_message_bytes, Config::default().max_message_bytes);
    }

    #[test]
    fn compression_is_off_by_default_and_its_keys_parse_and_validate() {
        let d = Config::default();
        assert!(!d.compression);
        let c = Config::from_toml_str("compression = true\ncompression_min_bytes = 0\n").unwrap();
        assert!(c.compression && c.compression_min_bytes == 0);
        assert!(c.validate().is_ok());
        let c = Config {
            compression_min_bytes: (1 << 20) + 1,
            ..Config::default()
        };
        assert!(c.validate().is_err(), "a minimum no message can reach");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::from_toml_str("lisen = \"x\"").is_err());
        assert!(Config::from_toml_str("ping_interval = \"soon\"").is_err());
        let c = Config {
            max_name_bytes: 300,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            max_json_depth: 100_000,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            shards: 65,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn write_delay_is_off_by_default_and_bounded() {
        assert_eq!(Config::default().write_delay, Duration::ZERO);
        let c = Config::from_toml_str("write_delay = \"10ms\"").unwrap();
        assert_eq!(c.write_delay, Duration::from_millis(10));
        c.validate().unwrap();
        let with = |d: Duration, stall: u64| Config {
            write_delay: d,
            write_stall_timeout: Duration::from_secs(stall),
            ..Config::default()
        };
        with(MAX_WRITE_DELAY, 15).validate().unwrap();
        assert!(with(MAX_WRITE_DELAY + Duration::from_millis(1), 15)
            .validate()
            .is_err());
        assert!(
            with(Duration::from_secs(1), 1).validate().is_err(),
            "below the stall timeout"
        );
    }

    /// The service's example configuration (deploy/shardhub.toml) starts as the unit runs it:
    /// with the API key its environment file provides, and not without one (a public HTTP API
    /// without a key is refused).
    #[test]
    fn the_deploy_example_is_valid_with_the_units_api_key() {
        let mut c = Config::from_toml_str(include_str!("../deploy/shardhub.toml")).unwrap();
        assert!(c.listen.ip().is_unspecified());
        assert!(c.has_history());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("api_key"), "{err}");
        c.api_key = Some("from /etc/shardhub/env".into());
        c.validate().unwrap();
    }
}
