//! Text frames and binary frames from clients: parse without panicking, and whatever parses
//! re-encodes into valid JSON replies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardhub::protocol::envelope::{parse_binary, parse_envelope, parse_value};
use shardhub::protocol::reply;

fuzz_target!(|data: &[u8]| {
    let _ = parse_binary(data, 128);
    let mut bytes = data.to_vec();
    let mut bufs = simd_json::Buffers::default();
    let Ok(v) = parse_value(&mut bytes, &mut bufs, 64) else {
        return;
    };
    let Ok(env) = parse_envelope(&v, 128) else {
        return;
    };
    // The id a client sent is echoed into replies: they must stay valid JSON.
    let mut out = Vec::new();
    reply::pong(&mut out, env.id);
    let mut check = out.clone();
    assert!(
        simd_json::to_borrowed_value(&mut check).is_ok(),
        "invalid reply: {:?}",
        String::from_utf8_lossy(&out)
    );
});
