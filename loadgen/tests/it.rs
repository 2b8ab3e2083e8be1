//! The loadgen integration tests: one binary, shared helpers in `util`.

// Scenarios against in-test raw servers (echo, broadcast, misbehaving): the client itself.
mod raw;
// Scenarios against the real shardhub server, in-process.
mod hub;
// One run over several servers (`--url` given more than once): who goes where, latency by URL.
mod nodes;
mod util;
