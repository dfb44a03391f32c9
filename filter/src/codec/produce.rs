//! Reads a Produce request's `acks` without decoding (or copying) its records.
//!
//! `acks` decides whether the broker answers at all (acks=0: no response), which the correlation
//! table must know. It sits right after the optional transactional id, ahead of the topic data,
//! so a few bytes suffice. Hand-written because decoding the whole request with `kafka-protocol`
//! would copy every record; the tests check it against `kafka-protocol` on the same bytes.

use super::{read_i16, read_uvarint, Varint};

/// Bytes after the request header that hold `acks` when there is no transactional id (the
/// common case): a null STRING (2 bytes; a null COMPACT_STRING takes 1) and `acks` (2).
pub const PREAMBLE_HINT: usize = 4;

/// Result of scanning the start of a Produce request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    Known(i16),
    /// The body's first `n` bytes are needed.
    Need(usize),
    Invalid,
}

/// `body`: the request's first bytes after the request header.
pub fn scan_acks(body: &[u8], version: i16) -> Acks {
    let acks_at = if version <= 2 {
        0
    } else if version <= 8 {
        // transactional_id: nullable STRING (int16 length, -1 = null).
        let Some(len) = read_i16(body, 0) else {
            return Acks::Need(2);
        };
        match len {
            -1 => 2,
            n if n >= 0 => 2 + n as usize,
            _ => return Acks::Invalid,
        }
    } else {
        // transactional_id: nullable COMPACT_STRING (unsigned varint length + 1, 0 = null).
        match read_uvarint(body, 0) {
            Varint::Value(0, used) => used,
            Varint::Value(n, used) => used + (n as usize - 1),
            Varint::Short(need) => return Acks::Need(need),
            Varint::Invalid => return Acks::Invalid,
        }
    };
    match read_i16(body, acks_at) {
        Some(acks) => Acks::Known(acks),
        None => Acks::Need(acks_at + 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::{ProduceRequest, TransactionalId};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encode(version: i16, tx: Option<&str>, acks: i16) -> Vec<u8> {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(1500)
            .with_transactional_id(tx.map(|t| TransactionalId(StrBytes::from_string(t.into()))));
        let mut buf = BytesMut::new();
        req.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    #[test]
    fn matches_kafka_protocol_for_every_version() {
        let long_tx = "t".repeat(300);
        for version in 3..=13 {
            for tx in [None, Some(""), Some("txn-1"), Some(long_tx.as_str())] {
                for acks in [0i16, 1, -1] {
                    let body = encode(version, tx, acks);
                    assert_eq!(
                        scan_acks(&body, version),
                        Acks::Known(acks),
                        "v{version} tx={tx:?}"
                    );
                    // Every truncation asks for more, never misreads.
                    for cut in 0..body.len() {
                        match scan_acks(&body[..cut], version) {
                            Acks::Known(a) => assert_eq!(a, acks),
                            Acks::Need(n) => assert!(n > cut, "v{version} cut {cut} need {n}"),
                            Acks::Invalid => panic!("v{version} cut {cut} invalid"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn old_versions_and_garbage() {
        assert_eq!(scan_acks(&[0, 0, 0, 0], 0), Acks::Known(0));
        assert_eq!(scan_acks(&[0xff, 0xfe], 5), Acks::Invalid);
        assert_eq!(scan_acks(&[0xff; 5], 9), Acks::Invalid);
        assert_eq!(scan_acks(&[], 9), Acks::Need(1));
    }
}
