//! What the fuzz targets share: hostile JSON strings and numbers as `Arbitrary` types that render
//! to text ([`text`]), the invariants every parsed request must keep ([`oracle`]), and the
//! allocator that counts heap bytes for the memory bounds ([`counting`]).
//!
//! The targets in `fuzz_targets/` only build inputs and call into these; keeping the invariants
//! in one place means `json_tree` and `requests` check exactly the same things of whatever the
//! server accepts.

pub mod counting;
pub mod oracle;
pub mod text;
