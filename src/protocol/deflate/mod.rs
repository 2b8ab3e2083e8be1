//! permessage-deflate (RFC 7692) with no context takeover in either direction: the handshake
//! ([`negotiate`]), the codec ([`codec`]: one compressor and one inflater per shard, reset per
//! message) and the read shim that lets tungstenite, which knows no extensions, read compressed
//! messages ([`rx`]). Pure: no sockets, no clocks; the engine wires them in
//! (`crate::engine::compression`).
//!
//! Why no context takeover: a publication is compressed once into one shared frame for every
//! compressing recipient (what uWebSockets' shared compressor and Centrifugo's prepared
//! messages do); with context takeover each recipient's frame would depend on what that
//! connection was sent before, so each would need its own compressor (hundreds of KiB per
//! connection) and its own compression of every message.

pub mod codec;
pub mod negotiate;
pub mod rx;

pub use codec::{Compressor, InflateError, Inflater};
pub use negotiate::{negotiate, Agreed, Malformed};
pub use rx::{rewrite, RxError, RxState};
