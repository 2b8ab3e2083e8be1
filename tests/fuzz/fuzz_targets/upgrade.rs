//! The HTTP upgrade request, byte by byte as it may arrive: never panics, never accepts an
//! upgrade that consumed more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardhub::protocol::handshake::{parse, Parsed};

fuzz_target!(|data: &[u8]| {
    for end in [data.len() / 2, data.len()] {
        if let Parsed::Upgrade(u) = parse(&data[..end], 8192, &["/ws"]) {
            assert!(u.consumed <= end);
            let _ = u.query_param("user");
        }
    }
});
