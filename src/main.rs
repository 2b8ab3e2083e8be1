//! The `shardhub` binary: configuration from defaults, a TOML file, the environment and flags,
//! then the library's [`Server`] until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use shardhub::{Config, Hooks, Server};

// The allocator is the program's choice, not the library's: an embedding application picks its
// own. mimalloc keeps per-connection allocations small and fast at 100k+ connections.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A thread-per-core WebSocket hub: rooms, direct messages and broadcast for 100k+ connections.
///
/// Settings come from embedded defaults, then `--config FILE` (TOML, same names as the long
/// flags with `_` for `-`), then `SHARDHUB_*` environment variables, then flags.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "SHARDHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SHARDHUB_LISTEN")]
    listen: Option<SocketAddr>,
    /// Reactor threads, one per core by default (0 = number of cores).
    #[arg(long, env = "SHARDHUB_SHARDS")]
    shards: Option<usize>,
    /// Pin each shard thread to a core [default: true].
    #[arg(long, env = "SHARDHUB_PIN_CORES")]
    pin_cores: Option<bool>,
    /// Echo mode: every message is sent back unchanged (conformance tests, raw benchmarks).
    #[arg(long, env = "SHARDHUB_ECHO")]
    echo: bool,
    /// Accept clients without ?user= as anon-<session> [default: true].
    #[arg(long, env = "SHARDHUB_ALLOW_ANONYMOUS")]
    allow_anonymous: Option<bool>,
    /// HMAC secret for JWT authentication (HS256 by default), at least 32 bytes. Prefer the
    /// environment variable: flags are visible to other local users.
    #[arg(long, env = "SHARDHUB_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM public key file for JWT authentication (RS256 by default; ES256 etc. with
    /// --jwt-algorithm).
    #[arg(long, env = "SHARDHUB_JWT_PUBLIC_KEY_FILE")]
    jwt_public_key_file: Option<PathBuf>,
    /// The one JWT algorithm accepted: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384,
    /// EdDSA [default: HS256 with a secret, RS256 with a key file].
    #[arg(long, env = "SHARDHUB_JWT_ALGORITHM")]
    jwt_algorithm: Option<String>,
    /// Clock skew allowed on a token's exp and nbf [default: 30s].
    #[arg(long, env = "SHARDHUB_JWT_LEEWAY", value_parser = humantime::parse_duration)]
    jwt_leeway: Option<Duration>,
    /// Required JWT audience (aud claim), if set.
    #[arg(long, env = "SHARDHUB_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Required JWT issuer (iss claim), if set.
    #[arg(long, env = "SHARDHUB_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Browser origins allowed to connect, comma-separated (e.g. https://app.example.com);
    /// others get 403; requests without Origin always pass [default: *].
    #[arg(long, env = "SHARDHUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// Data messages per second per connection, 0 = unlimited [default: 100].
    #[arg(long, env = "SHARDHUB_RATE_MESSAGES_PER_SEC")]
    rate_messages_per_sec: Option<u64>,
    /// Message burst per connection [default: 200].
    #[arg(long, env = "SHARDHUB_RATE_BURST_MESSAGES")]
    rate_burst_messages: Option<u64>,
    /// Payload bytes per second per connection, 0 = unlimited [default: 1048576].
    #[arg(long, env = "SHARDHUB_RATE_BYTES_PER_SEC")]
    rate_bytes_per_sec: Option<u64>,
    /// Byte burst per connection, at least --max-message-bytes [default: 2097152].
    #[arg(long, env = "SHARDHUB_RATE_BURST_BYTES")]
    rate_burst_bytes: Option<u64>,
    /// Time a client may keep exceeding its rate before it is closed (3502) [default: 10s].
    #[arg(long, env = "SHARDHUB_RATE_LIMIT_CLOSE_AFTER", value_parser = humantime::parse_duration)]
    rate_limit_close_after: Option<Duration>,
    /// Open connections per client address (IPv6: per /64), 0 = unlimited [default: 0].
    #[arg(long, env = "SHARDHUB_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// New connections per second per client address, 0 = unlimited [default: 0].
    #[arg(long, env = "SHARDHUB_HANDSHAKES_PER_IP_PER_SEC")]
    handshakes_per_ip_per_sec: Option<u64>,
    /// Burst of new connections per client address [default: 20].
    #[arg(long, env = "SHARDHUB_HANDSHAKES_PER_IP_BURST")]
    handshakes_per_ip_burst: Option<u64>,
    /// Send joined/left presence events to room members [default: true].
    #[arg(long, env = "SHARDHUB_PRESENCE")]
    presence: Option<bool>,
    /// Rooms with more members get a member count each --presence-interval instead of
    /// joined/left events, 0 = no limit [default: 100].
    #[arg(long, env = "SHARDHUB_PRESENCE_LIMIT")]
    presence_limit: Option<usize>,
    /// How often members of rooms over --presence-limit hear the member count, e.g. 1s
    /// [default: 1s].
    #[arg(long, env = "SHARDHUB_PRESENCE_INTERVAL", value_parser = humantime::parse_duration)]
    presence_interval: Option<Duration>,
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it [default: false].
    #[arg(long, env = "SHARDHUB_COMPRESSION")]
    compression: Option<bool>,
    /// Messages with fewer payload bytes go uncompressed [default: 128].
    #[arg(long, env = "SHARDHUB_COMPRESSION_MIN_BYTES")]
    compression_min_bytes: Option<usize>,
    /// Largest incoming message in bytes; larger ones close with 1009 [default: 65536].
    #[arg(long, env = "SHARDHUB_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Deepest nesting of arrays and objects accepted in JSON messages and API bodies, 1-1024
    /// [default: 64].
    #[arg(long, env = "SHARDHUB_MAX_JSON_DEPTH")]
    max_json_depth: Option<usize>,
    /// Largest upgrade request head in bytes; larger ones get HTTP 431 [default: 8192].
    #[arg(long, env = "SHARDHUB_MAX_HEADER_BYTES")]
    max_header_bytes: Option<usize>,
    /// Rooms one session may be in [default: 64].
    #[arg(long, env = "SHARDHUB_MAX_ROOMS_PER_SESSION")]
    max_rooms_per_session: Option<usize>,
    /// Connections on the whole server [default: 1000000].
    #[arg(long, env = "SHARDHUB_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections per shard [default and maximum: 1048575].
    #[arg(long, env = "SHARDHUB_MAX_CONNECTIONS_PER_SHARD")]
    max_connections_per_shard: Option<usize>,
    /// Outbound bytes queued per connection before it is closed as a slow consumer (3002)
    /// [default: 1048576].
    #[arg(long, env = "SHARDHUB_MAX_QUEUE_BYTES")]
    max_queue_bytes: Option<usize>,
    /// Capacity of rooms created by a first join, 0 = unlimited [default: 0].
    #[arg(long, env = "SHARDHUB_DEFAULT_ROOM_CAPACITY")]
    default_room_capacity: Option<usize>,
    /// Per-connection read buffer in bytes; dominates idle memory [default: 512].
    #[arg(long, env = "SHARDHUB_READ_BUFFER_BYTES")]
    read_buffer_bytes: Option<usize>,
    /// Listen backlog [default: 4096].
    #[arg(long, env = "SHARDHUB_BACKLOG")]
    backlog: Option<u32>,
    /// Time allowed for the upgrade request, e.g. 10s [default: 10s].
    #[arg(long, env = "SHARDHUB_HANDSHAKE_TIMEOUT", value_parser = humantime::parse_duration)]
    handshake_timeout: Option<Duration>,
    /// Quiet time before the server pings [default: 25s].
    #[arg(long, env = "SHARDHUB_PING_INTERVAL", value_parser = humantime::parse_duration)]
    ping_interval: Option<Duration>,
    /// Further quiet time after a ping before the client is dropped [default: 20s].
    #[arg(long, env = "SHARDHUB_PONG_TIMEOUT", value_parser = humantime::parse_duration)]
    pong_timeout: Option<Duration>,
    /// Time with queued output and no progress before closing (3003) [default: 15s].
    #[arg(long, env = "SHARDHUB_WRITE_STALL_TIMEOUT", value_parser = humantime::parse_duration)]
    write_stall_timeout: Option<Duration>,
    /// Hold a connection's deliveries up to this long so they share one write, e.g. 10ms; 0 is
    /// off (tuning.md, "Write delay") [default: 0].
    #[arg(long, env = "SHARDHUB_WRITE_DELAY", value_parser = humantime::parse_duration)]
    write_delay: Option<Duration>,
    /// Time a closing connection gets to finish the close handshake [default: 3s].
    #[arg(long, env = "SHARDHUB_CLOSE_TIMEOUT", value_parser = humantime::parse_duration)]
    close_timeout: Option<Duration>,
    /// Time a graceful shutdown waits for close frames to go out [default: 5s].
    #[arg(long, env = "SHARDHUB_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    drain_timeout: Option<Duration>,
    // ----- HTTP API and SSE (docs/http-api.md) -----
    /// Serve the HTTP API under /api/v1/ [default: true].
    #[arg(long, env = "SHARDHUB_HTTP_API")]
    http_api: Option<bool>,
    /// Key the HTTP API requires (Authorization: Bearer KEY or X-API-Key) [default: none].
    #[arg(long, env = "SHARDHUB_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Separate address for the HTTP API (shard 0 only) [default: the main listener].
    #[arg(long, env = "SHARDHUB_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Largest HTTP request body in bytes; larger ones get 413 [default: 65536].
    #[arg(long, env = "SHARDHUB_MAX_REQUEST_BODY_BYTES")]
    max_request_body_bytes: Option<usize>,
    /// Interval of heartbeat comments on SSE streams [default: 15s].
    #[arg(long, env = "SHARDHUB_SSE_HEARTBEAT", value_parser = humantime::parse_duration)]
    sse_heartbeat: Option<Duration>,
    /// Recent events a room keeps for SSE Last-Event-ID replay [default: 64].
    #[arg(long, env = "SHARDHUB_SSE_HISTORY")]
    sse_history: Option<usize>,
    /// Publications each room keeps for clients that rejoin with `recover` [default: 0, no
    /// history].
    #[arg(long, env = "SHARDHUB_HISTORY_SIZE")]
    history_size: Option<usize>,
    /// How long a kept publication stays recoverable, e.g. 5m [default: 0, until pushed out].
    #[arg(long, env = "SHARDHUB_HISTORY_TTL", value_parser = humantime::parse_duration)]
    history_ttl: Option<Duration>,
    /// How long an acknowledged send waits for receipts by default, e.g. 5s [default: 5s].
    #[arg(long, env = "SHARDHUB_ACK_TIMEOUT", value_parser = humantime::parse_duration)]
    ack_timeout: Option<Duration>,
    /// Acknowledged sends one session may have waiting for receipts [default: 1024].
    #[arg(long, env = "SHARDHUB_MAX_PENDING_ACKS")]
    max_pending_acks: Option<usize>,
    /// Messages kept per offline user (send with store) [default: 100].
    #[arg(long, env = "SHARDHUB_OFFLINE_MAX_MESSAGES")]
    offline_max_messages: Option<usize>,
    /// Bytes of messages kept per offline user [default: 1048576].
    #[arg(long, env = "SHARDHUB_OFFLINE_MAX_BYTES")]
    offline_max_bytes: Option<usize>,
    /// How long a stored message waits for its user, e.g. 24h [default: 24h].
    #[arg(long, env = "SHARDHUB_OFFLINE_TTL", value_parser = humantime::parse_duration)]
    offline_ttl: Option<Duration>,
    /// Bytes of stored messages on this node, all users together [default: 268435456].
    #[arg(long, env = "SHARDHUB_OFFLINE_MAX_TOTAL_BYTES")]
    offline_max_total_bytes: Option<usize>,
    /// Offline users with stored messages on this node [default: 100000].
    #[arg(long, env = "SHARDHUB_OFFLINE_MAX_USERS")]
    offline_max_users: Option<usize>,
    /// Join a cluster over this bus: nats://HOST:PORT or redis://HOST:PORT [default: none, a
    /// single node].
    #[arg(long, env = "SHARDHUB_CLUSTER")]
    cluster: Option<String>,
    /// This node's name in the cluster, unique in it [default: host name and process id].
    #[arg(long, env = "SHARDHUB_NODE")]
    node: Option<String>,
    // ----- pages (shardhub::pages) -----
    /// Serve the live operator dashboard at /dashboard (it reads /api/v1/ with the API key)
    /// [default: true].
    #[arg(long, env = "SHARDHUB_DASHBOARD")]
    dashboard: Option<bool>,
    /// Serve the demo chat at / and the JavaScript client it loads at /shardhub-client.js
    /// [default: true when --listen is a loopback address, false otherwise].
    #[arg(long, env = "SHARDHUB_DEMO")]
    demo: Option<bool>,
    /// On shutdown, write the server's latency histograms (fanout.hgrm, tick.hgrm,
    /// timer_lag.hgrm) and counters (stats.json) to this directory.
    #[arg(long, env = "SHARDHUB_HISTOGRAMS_DIR")]
    histograms_dir: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (or RUST_LOG syntax) [default: info].
    #[arg(long, env = "SHARDHUB_LOG", default_value = "info")]
    log: String,
}

impl Args {
    fn to_config(&self) -> Result<Config, shardhub::ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { c.$f = v; })* };
        }
        set!(
            listen,
            shards,
            pin_cores,
            allow_anonymous,
            presence,
            presence_limit,
            presence_interval,
            compression,
            compression_min_bytes,
            max_message_bytes,
            max_json_depth,
            max_header_bytes,
            max_rooms_per_session,
            max_connections,
            max_connections_per_shard,
            max_queue_bytes,
            default_room_capacity,
            read_buffer_bytes,
            backlog,
            handshake_timeout,
            ping_interval,
            pong_timeout,
            write_stall_timeout,
            write_delay,
            close_timeout,
            drain_timeout,
            jwt_leeway,
            rate_messages_per_sec,
            rate_burst_messages,
            rate_bytes_per_sec,
            rate_burst_bytes,
            rate_limit_close_after,
            max_connections_per_ip,
            handshakes_per_ip_per_sec,
            handshakes_per_ip_burst
        );
        // Not Copy: cloned. (`default_permissions` is a table: TOML only.)
        macro_rules! set_cloned {
            ($($f:ident),*) => { $(if let Some(v) = &self.$f { c.$f = v.clone().into(); })* };
        }
        set_cloned!(
            jwt_secret,
            jwt_public_key_file,
            jwt_algorithm,
            jwt_audience,
            jwt_issuer,
            allowed_origins,
            cluster,
            node
        );
        c.echo |= self.echo;
        // HTTP API and SSE.
        set!(http_api, max_request_body_bytes, sse_heartbeat, sse_history);
        set!(history_size, history_ttl);
        // Pages.
        set!(dashboard);
        if self.demo.is_some() {
            c.demo = self.demo;
        }
        set!(
            ack_timeout,
            max_pending_acks,
            offline_max_messages,
            offline_max_bytes,
            offline_ttl,
            offline_max_total_bytes,
            offline_max_users
        );
        if self.api_key.is_some() {
            c.api_key.clone_from(&self.api_key);
        }
        if self.admin_listen.is_some() {
            c.admin_listen = self.admin_listen;
        }
        Ok(c)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::new()
        .parse_filters(&args.log)
        .format_timestamp_millis()
        .init();
    let histograms_dir = args.histograms_dir.clone();
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardhub: {e}");
            return ExitCode::from(2);
        }
    };
    let hooks = pages(&config).on_quiet(return_freed_memory);
    let server = match Server::builder(config).hooks(hooks).build() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shardhub: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hub = server.hub();
    if let Err(e) = server.run() {
        eprintln!("shardhub: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(dir) = histograms_dir {
        if let Err(e) = write_histograms(&hub, &dir) {
            eprintln!(
                "shardhub: cannot write histograms to {}: {e}",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Hands the memory a busy spell freed back to the system once a shard is quiet
/// ([`Hooks::on_quiet`]). mimalloc keeps freed pages for reuse and purges them only from within
/// later allocations, which an idle server hardly makes. With this and a handshake that
/// allocates less, 10,000 clients connecting at once leave 416-419 bytes per connection
/// instead of 500-578 (`bench/runs/2026-12-02-burst-memory`).
fn return_freed_memory() {
    // SAFETY: `mi_collect` has no preconditions: it frees this thread's empty pages and purges
    // the arena pages whose purge delay has passed, touching no live allocation.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// The pages the configuration turns on, registered as an embedding application would.
///
/// `/dashboard` when `dashboard` is on; the demo chat at `/` and the JavaScript client it
/// imports at `/shardhub-client.js` when `demo` is on ([`Config::demo_enabled`]: by default on
/// a loopback `listen` only).
fn pages(config: &Config) -> Hooks {
    use shardhub::pages;
    let mut hooks = Hooks::default();
    if config.demo_enabled() {
        hooks = hooks.page(pages::DEMO_PATH, pages::HTML, pages::DEMO).page(
            pages::CLIENT_PATH,
            pages::JAVASCRIPT,
            pages::CLIENT,
        );
    }
    if config.dashboard {
        hooks = hooks.page(
            shardhub::pages::DASHBOARD_PATH,
            shardhub::pages::HTML,
            shardhub::pages::DASHBOARD,
        );
    }
    hooks
}

/// Writes the server's histograms (`.hgrm`) and counters (`stats.json`) into `dir`.
fn write_histograms(hub: &shardhub::Hub, dir: &std::path::Path) -> std::io::Result<()> {
    use shardhub::metrics::hgrm;
    std::fs::create_dir_all(dir)?;
    let h = hub.histograms();
    for (name, hist) in [
        ("fanout", &h.fanout),
        ("tick", &h.tick),
        ("timer_lag", &h.timer_lag),
    ] {
        std::fs::write(dir.join(format!("{name}.hgrm")), hgrm(hist))?;
    }
    let stats = serde_json::to_string_pretty(&hub.stats()).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("stats.json"), stats)
}
