//! Decoding, rewriting and re-encoding one message body with kafka-protocol.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::budget::{with_decode_budget, MAX_PREALLOC_BYTES};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::names::Names;
use super::{Hints, RewriteError};
use crate::topics::mapping::NameMapper;

/// What decoding a message may allocate, per byte of the message: legitimate messages take at
/// most about 7x (measured, `filter/tests/decode_memory.rs`); arrays of tiny elements could
/// otherwise take up to 120x.
const DECODE_BUDGET_PER_BYTE: usize = 16;

/// Decodes `body` as a `T` at `version`, within an allocation budget proportional to its size
/// (past it the message is refused, never half-decoded). Bytes left over after the message are
/// ignored, as Kafka brokers ignore them: librdkafka 2.16 sends three extra bytes after a
/// Metadata v12 request for all topics. They are dropped when the message is re-encoded.
pub(super) fn decode<T: Decodable>(mut body: Bytes, version: i16) -> Result<T, RewriteError> {
    let budget = body
        .len()
        .saturating_mul(DECODE_BUDGET_PER_BYTE)
        .saturating_add(MAX_PREALLOC_BYTES);
    let message = with_decode_budget(budget, || T::decode(&mut body, version))
        .map_err(|e| RewriteError::Decode(format!("{e:#}")))?;
    Ok(message)
}

/// `before`, then the message: one buffer of the exact size.
pub(super) fn encode<T: Encodable>(
    message: &T,
    version: i16,
    before: &[u8],
) -> Result<BytesMut, RewriteError> {
    let size = message.compute_size(version).unwrap_or(0);
    let mut out = BytesMut::with_capacity(before.len().saturating_add(size));
    out.extend_from_slice(before);
    message
        .encode(&mut out, version)
        .map_err(|e| RewriteError::Encode(format!("{e:#}")))?;
    Ok(out)
}

/// The rewriter of one message type: maps the names of `message`, which was decoded at `version`.
pub(super) type Rewriter<T> = fn(&mut Names<'_>, &mut T, i16) -> Result<(), RewriteError>;

/// Decodes `body`, applies `rewrite` and re-encodes the message if a name changed. Every body is
/// decoded, even of a message with no name at this version, so that a malformed frame is refused
/// the same way whatever its API.
pub(super) fn apply<T: Decodable + Encodable>(
    body: Bytes,
    version: i16,
    mapper: &dyn NameMapper,
    hints: Hints,
    rewrite: Rewriter<T>,
    before: &[u8],
) -> Result<Option<BytesMut>, RewriteError> {
    let mut message: T = decode(body, version)?;
    let mut names = Names::new(mapper, hints);
    rewrite(&mut names, &mut message, version)?;
    if !names.changed() {
        return Ok(None);
    }
    encode(&message, version, before).map(Some)
}

/// The rewriter of a message that carries no name (at any version): the body is only checked.
pub(super) fn no_names<T>(_: &mut Names<'_>, _: &mut T, _: i16) -> Result<(), RewriteError> {
    Ok(())
}
