//! Wire-level pieces: framing, request and response headers, and the correlation table.

pub mod api_versions;
pub mod budgeted;
mod edits;
pub mod frame;
pub mod inflight;
pub mod produce;
pub mod request;
pub mod response;
pub mod response_fields;
pub mod source;
pub mod walk;

pub use frame::{Edit, Edits, FrameError, FrameReader, Step};
pub use inflight::{Ambiguous, Answer, Inflight, InflightTable, Matched};
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

/// An unsigned varint (the length prefix of flexible-version fields).
pub(crate) enum Varint {
    /// The value and the position just after it.
    Value(u32, usize),
    /// The buffer's first `n` bytes are needed (at least one more than it has).
    Short(usize),
    Invalid,
}

/// The unsigned varint at `at`: at most five bytes.
pub(crate) fn read_uvarint(buf: &[u8], at: usize) -> Varint {
    let mut value: u32 = 0;
    for i in 0..5 {
        let Some(b) = buf.get(at + i) else {
            return Varint::Short(at + i + 1);
        };
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Varint::Value(value, at + i + 1);
        }
    }
    Varint::Invalid
}
