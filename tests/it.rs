//! shardhub's integration tests: each starts the real server in this process (two shards, an
//! ephemeral port) and talks to it with a real WebSocket client or raw TCP.

mod util;

// The upgrade: greeting, user ids, refusals with their HTTP statuses.
mod handshake;
// Rooms: join, leave, capacity, presence, members, publish.
mod rooms;
// Direct messages and broadcasts, within and across shards.
mod messaging;
// Acknowledged direct messages and offline delivery.
mod delivery;
// Binary frames routed by their header.
mod binary;
// Bad input: error frames that keep the connection, close codes that end it.
mod bad_input;
// Slow consumers over real sockets, graceful shutdown.
mod lifecycle;
// Embedding: hooks, typed handlers, session keys, the hub handle.
mod embedding;
// The examples that speak Melody's and the gorilla hub tutorial's protocols.
mod examples;
// The HTTP API on the same port: probes, limits, keep-alive, the key, every route.
mod http;
// Server-Sent Events streams of rooms.
mod sse;
// Room history: recovery on reconnect, races with publishers, epochs across restarts.
mod history;
// The binary: configuration layering and signals.
mod binary_cli;
// Authentication: JWT carriers and algorithms, bad tokens, origins, custom authenticators.
mod auth;
// Permissions from claims and defaults: forbidden requests deliver nothing.
mod permissions;
// Abuse limits: message and byte rates, per-address connections and handshakes.
mod limits;
// Cluster mode: three nodes over a real NATS and a real Redis server.
mod cluster;
// The write delay: deliveries held to share writes, replies not held.
mod write_delay;
// permessage-deflate: negotiation, compressed publications, compressed input, bombs.
mod compression;
// Hostile input: a matrix of attacks, each followed by a check that a bystander is still served.
mod hostile;
