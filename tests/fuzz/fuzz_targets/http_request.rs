//! Plain HTTP/1.1 requests (the API, SSE): never panics, respects its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardhub::http::request::{parse, Limits, Parsed};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_header_bytes: 4096,
        max_body_bytes: 4096,
    };
    if let Parsed::Complete(req, used) = parse(data, limits) {
        assert!(used <= data.len());
        assert!(req.body.len() <= limits.max_body_bytes);
        let _ = req.query_param("room");
    }
});
