//! Decoding with `kafka-protocol` inside an allocation budget proportional to the bytes decoded
//! (the vendored crate's `budget` module): a hostile message of tiny array elements could
//! otherwise make a decoder allocate many times its size. Past the budget the message is
//! refused, never half-decoded.

use bytes::Bytes;
use kafka_protocol::protocol::budget::{with_decode_budget, MAX_PREALLOC_BYTES};
use kafka_protocol::protocol::Decodable;

/// What decoding may allocate per byte (legitimate messages take at most about 7x, measured in
/// `filter/tests/decode_memory.rs`).
const PER_BYTE: usize = 16;

fn budget(bytes: usize) -> usize {
    bytes
        .saturating_mul(PER_BYTE)
        .saturating_add(MAX_PREALLOC_BYTES)
}

/// `buf` decoded as a `T` at `version`, within the budget; `None` if it does not decode.
pub fn decode<T: Decodable>(buf: &mut Bytes, version: i16) -> Option<T> {
    with_decode_budget(budget(buf.len()), || T::decode(buf, version)).ok()
}

/// Run a decoding closure (a header, then a body) within the budget for `bytes` bytes.
pub fn within<T>(bytes: usize, f: impl FnOnce() -> anyhow::Result<T>) -> Option<T> {
    with_decode_budget(budget(bytes), f).ok()
}
