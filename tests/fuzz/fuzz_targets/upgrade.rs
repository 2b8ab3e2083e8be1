//! The HTTP upgrade request, byte by byte as it may arrive, through the one request parser and
//! the upgrade's checks: never panics, never uses more bytes than it was given, and accepts
//! only what RFC 6455 allows (a base64 key of 16 bytes, version 13, GET on an upgrade path).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardhub::http::request::{parse, Limits, Parsed};
use shardhub::http::upgrade::validate;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_header_bytes: 8192,
        max_body_bytes: 1024,
    };
    for end in [data.len() / 2, data.len()] {
        let Parsed::Complete(req, used) = parse(&data[..end], limits) else {
            continue;
        };
        assert!(used <= end);
        if !req.upgrade {
            continue;
        }
        if let Ok(u) = validate(req, &["/ws"]) {
            assert_eq!(u.header("sec-websocket-version").map(str::trim), Some("13"));
            assert_eq!(u.accept.len(), 28, "a SHA-1 in base64");
            let _ = u.query_param("user");
        }
    }
});
