//! The hot path of name conversion: a Produce request to a single topic gets its names rewritten
//! from its first bytes alone, and its records pass without being copied into the filter.
//!
//! A Produce request is `transactional_id, acks, timeout_ms, topic_data[name, partitions
//! [index, records]]`: with one topic, every name sits before the records. Hand-scanned because
//! decoding the request with `kafka-protocol` needs all of it (every record). (`kafka-protocol`
//! keeps its field encoders private, so the two string forms are written here too.) The tests
//! check the result against the full rewriter (`rewrite::rewrite_request`) on the same requests.

use std::ops::Range;

use bytes::BytesMut;

use super::mapping::{NameKind, NameMapper};
use super::wire::{null_len, read_first_name, read_string, write_string, Str};

/// Versions the head scan handles: names by string (v13 names topics by id and is held whole).
pub const VERSIONS: std::ops::RangeInclusive<i16> = 3..=12;
const FIRST_FLEXIBLE: i16 = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The body's first `n` bytes are needed.
    Need(usize),
    /// Where the names are, relative to the body.
    Names {
        transactional_id: Option<Range<usize>>,
        /// Bytes between the transactional id and the first topic name (acks, timeout, count).
        topics_at: usize,
        topic_count: u32,
        first_topic: Option<Range<usize>>,
    },
    Invalid,
}

/// `body`: the request's first bytes after the request header.
pub fn scan(body: &[u8], version: i16) -> Scan {
    let flexible = version >= FIRST_FLEXIBLE;
    let (transactional_id, after_txn) = match read_string(body, 0, flexible) {
        Str::Need(n) => return Scan::Need(n),
        Str::Invalid => return Scan::Invalid,
        Str::Null(end) => (None, end),
        Str::Value(r) => (Some(r.clone()), r.end),
    };
    let count_at = after_txn + 2 + 4; // acks, timeout_ms
    match read_first_name(body, count_at, flexible) {
        Ok(topics) => Scan::Names {
            transactional_id,
            topics_at: topics.name_at,
            topic_count: topics.count,
            first_topic: topics.name,
        },
        Err(Some(n)) => Scan::Need(n),
        Err(None) => Scan::Invalid,
    }
}

/// The request body's first `upto` bytes with the names mapped, or `None` when the rule changes
/// nothing. `upto` is the end of the last name of a [`Scan::Names`]; the body's bytes after it
/// follow unchanged.
pub fn rewrite(
    body: &[u8],
    version: i16,
    scan: &Scan,
    names: &dyn NameMapper,
) -> Result<Option<(usize, BytesMut)>, String> {
    let Scan::Names {
        transactional_id,
        topics_at,
        first_topic,
        ..
    } = scan
    else {
        return Ok(None);
    };
    let topics_at = *topics_at;
    let text = |r: &Range<usize>| {
        body.get(r.clone())
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| "a name is not UTF-8".to_string())
    };
    let new_txn = match transactional_id {
        Some(r) => names.to_broker(NameKind::TransactionalId, text(r)?),
        None => None,
    };
    let new_topic = match first_topic {
        Some(r) => names.to_broker(NameKind::Topic, text(r)?),
        None => None,
    };
    if new_txn.is_none() && new_topic.is_none() {
        return Ok(None);
    }
    let flexible = version >= FIRST_FLEXIBLE;
    let slice = |r: Range<usize>| body.get(r).ok_or_else(|| "short body".to_string());
    let txn_end = transactional_id
        .as_ref()
        .map_or(null_len(flexible), |r| r.end);
    let mut out = BytesMut::new();
    match &new_txn {
        Some(t) => write_string(&mut out, t, flexible)?,
        None => out.extend_from_slice(slice(0..txn_end)?),
    }
    // acks, timeout_ms and the topic count.
    out.extend_from_slice(slice(txn_end..topics_at)?);
    match (&new_topic, first_topic) {
        (Some(t), _) => write_string(&mut out, t, flexible)?,
        (None, Some(r)) => out.extend_from_slice(slice(topics_at..r.end)?),
        (None, None) => {}
    }
    let upto = first_topic.as_ref().map_or(topics_at, |r| r.end);
    Ok(Some((upto, out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::TopicProduceData;
    use kafka_protocol::messages::{ProduceRequest, TopicName, TransactionalId};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn every_truncation_asks_for_more_and_the_whole_head_finds_the_names() {
        let long = "n".repeat(300);
        for version in VERSIONS {
            for txn in [None, Some("t"), Some(long.as_str())] {
                for topic in ["orders", long.as_str()] {
                    let req = ProduceRequest::default()
                        .with_transactional_id(
                            txn.map(|t| TransactionalId(StrBytes::from_string(t.into()))),
                        )
                        .with_topic_data(vec![TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string(topic.into())))]);
                    let mut buf = BytesMut::new();
                    req.encode(&mut buf, version).unwrap();
                    let Scan::Names {
                        transactional_id,
                        topic_count,
                        first_topic,
                        ..
                    } = scan(&buf, version)
                    else {
                        panic!("v{version}: no names");
                    };
                    assert_eq!(topic_count, 1);
                    assert_eq!(transactional_id.map(|r| &buf[r]), txn.map(str::as_bytes));
                    let first = first_topic.unwrap();
                    assert_eq!(&buf[first.clone()], topic.as_bytes());
                    for cut in 0..first.end {
                        match scan(&buf[..cut], version) {
                            Scan::Need(n) => assert!(n > cut, "v{version} cut {cut}: need {n}"),
                            other => panic!("v{version} cut {cut}: {other:?}"),
                        }
                    }
                }
            }
        }
    }
}
