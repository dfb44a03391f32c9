//! The consumer's hot path of name conversion: a Fetch response for a single topic gets its
//! topic name mapped back from its first bytes alone, and its records pass without being held or
//! copied into the filter.
//!
//! A Fetch response (v4..12) is `[throttle_time_ms] [error_code, session_id] responses[topic,
//! partitions[.. records ..]]`: with one topic, its name sits before every record. With several,
//! later names follow earlier records, and the response is held whole and rewritten by the full
//! rewriter. v13+ names topics by id and is never held. The tests check the result against the
//! full rewriter (`rewrite::rewrite_response`) on the same responses.

use std::ops::Range;

use bytes::BytesMut;

use super::mapping::{NameKind, NameMapper, ToClient};
use super::wire::{read_array_len, read_string, skip_tagged_fields, write_string, Count, Str};

/// Versions the head scan handles: names by string.
pub const VERSIONS: std::ops::RangeInclusive<i16> = 4..=12;
const FIRST_FLEXIBLE: i16 = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The frame's first `n` bytes are needed.
    Need(usize),
    /// How many topics the response has, and where the first one's name is (with its length
    /// field starting at `name_at`), relative to the frame after its size field.
    Topics {
        count: u32,
        name_at: usize,
        first: Option<Range<usize>>,
    },
    Invalid,
}

/// `frame`: the response's first bytes after its size field (correlation id first).
pub fn scan(frame: &[u8], version: i16) -> Scan {
    let flexible = version >= FIRST_FLEXIBLE;
    let mut at = 4; // correlation id
    if flexible {
        at = match skip_tagged_fields(frame, at) {
            Ok(end) => end,
            Err(Some(need)) => return Scan::Need(need),
            Err(None) => return Scan::Invalid,
        };
    }
    at += 4; // throttle_time_ms
    if version >= 7 {
        at += 2 + 4; // error_code, session_id
    }
    let (count, name_at) = match read_array_len(frame, at, flexible) {
        Count::Value(n, end) => (n, end),
        Count::Need(n) => return Scan::Need(n),
        Count::Invalid => return Scan::Invalid,
    };
    let first = if count == 0 {
        None
    } else {
        match read_string(frame, name_at, flexible) {
            Str::Need(n) => return Scan::Need(n),
            Str::Value(r) => Some(r),
            Str::Null(_) | Str::Invalid => return Scan::Invalid,
        }
    };
    Scan::Topics {
        count,
        name_at,
        first,
    }
}

/// What to do with a single-topic response after [`scan`].
#[derive(Debug, PartialEq, Eq)]
pub enum Mapped {
    /// Nothing to change.
    Unchanged,
    /// Forward these bytes (size field included) instead of the frame's first `upto` bytes
    /// after its size field; the rest follows unchanged.
    Head { upto: usize, bytes: Vec<u8> },
    /// Not for the head-only path (several topics, or one the client must not see): hold it
    /// whole.
    Whole,
}

/// Map the first topic's name back for the client. `frame_len`: the frame's size field.
pub fn map(
    frame: &[u8],
    frame_len: usize,
    version: i16,
    scan: &Scan,
    names: &dyn NameMapper,
) -> Mapped {
    let Scan::Topics {
        count,
        name_at,
        first,
    } = scan
    else {
        return Mapped::Whole;
    };
    let first = match (count, first) {
        (0, _) => return Mapped::Unchanged,
        (1, Some(first)) => first,
        _ => return Mapped::Whole,
    };
    let Some(name) = frame
        .get(first.clone())
        .and_then(|b| std::str::from_utf8(b).ok())
    else {
        return Mapped::Whole;
    };
    let client_name = match names.to_client(NameKind::Topic, name) {
        ToClient::Same => return Mapped::Unchanged,
        ToClient::Renamed(n) => n,
        ToClient::Hidden => return Mapped::Whole,
    };
    let Some(before) = frame.get(..*name_at) else {
        return Mapped::Whole;
    };
    let mut head = BytesMut::with_capacity(4 + name_at + 5 + client_name.len());
    // The size field is filled in once the name's encoded length is known.
    head.extend_from_slice(&[0; 4]);
    head.extend_from_slice(before);
    if write_string(&mut head, &client_name, version >= FIRST_FLEXIBLE).is_err() {
        return Mapped::Whole;
    }
    let rest = frame_len.saturating_sub(first.end);
    let Ok(size) = i32::try_from(rest + head.len() - 4) else {
        return Mapped::Whole;
    };
    if let Some(field) = head.get_mut(..4) {
        field.copy_from_slice(&size.to_be_bytes());
    }
    Mapped::Head {
        upto: first.end,
        bytes: head.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn every_truncation_asks_for_more_and_the_whole_head_finds_the_name() {
        let long = "n".repeat(300);
        for version in VERSIONS {
            for topic in ["orders", long.as_str()] {
                let mut buf = BytesMut::new();
                let header = ResponseHeader::default().with_correlation_id(9);
                let mut tagged = header.clone();
                // A header with an unknown tagged field must be skipped, not misread.
                tagged
                    .unknown_tagged_fields
                    .insert(7, Bytes::from_static(b"abc"));
                let header = if version >= FIRST_FLEXIBLE {
                    tagged
                } else {
                    header
                };
                header
                    .encode(&mut buf, ApiKey::Fetch.response_header_version(version))
                    .unwrap();
                FetchResponse::default()
                    .with_responses(vec![FetchableTopicResponse::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.into())))
                        .with_partitions(vec![PartitionData::default()
                            .with_records(Some(Bytes::from_static(b"records")))])])
                    .encode(&mut buf, version)
                    .unwrap();
                let Scan::Topics {
                    count,
                    first: Some(first),
                    ..
                } = scan(&buf, version)
                else {
                    panic!("v{version}: no name");
                };
                assert_eq!(count, 1);
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
