//! The wire: WebSocket frames the server encodes and the JSON/binary hub protocol documented
//! in `docs/protocol.md`. Pure functions over bytes; no sockets, no clocks.

pub mod close;
pub mod deflate;
pub mod envelope;
pub mod frame;
pub mod json;
pub mod reply;
