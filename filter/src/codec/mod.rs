//! Wire-level pieces: framing, request and response headers, and the correlation table.

pub mod frame;
pub mod inflight;
pub mod produce;
pub mod request;
pub mod response;
pub mod source;

pub use frame::{Edit, Edits, FrameError, FrameReader, Step};
pub use inflight::{InflightTable, Matched, Reply};
pub use request::{RequestHead, RequestParse};
pub use source::ByteSource;

/// Big-endian `int16` at `at`, if the buffer holds it.
pub(crate) fn read_i16(buf: &[u8], at: usize) -> Option<i16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    bytes.try_into().ok().map(i16::from_be_bytes)
}

/// Big-endian `int32` at `at`, if the buffer holds it.
pub(crate) fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    bytes.try_into().ok().map(i32::from_be_bytes)
}
