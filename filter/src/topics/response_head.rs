//! The hot path of name conversion on responses: a Fetch or Produce response for a single topic
//! gets its topic name mapped back from its first bytes alone; the rest passes without being held
//! or copied into the filter (a Fetch response's records; a Produce response's offsets, which
//! would cost a decode and an encode for nothing).
//!
//! A Fetch response (v4..12) is `throttle_time_ms [error_code, session_id] responses[topic,
//! partitions[.. records ..]]`, a Produce response (v3..12) `responses[name, partitions[..]]
//! throttle_time_ms`: with one topic, its name sits before everything else of it. With several,
//! later names follow earlier topics' data, and the response is held whole and rewritten by the
//! full rewriter. v13+ names topics by id and is never held. The tests check the result against
//! the full rewriter (`rewrite::rewrite_response`) on the same responses.

use std::ops::Range;

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;

use super::mapping::{NameKind, NameMapper, ToClient};
use super::wire::{read_first_name, skip_tagged_fields, write_string};

/// Where a response's topic array starts, for the APIs and versions the head scan handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Compact strings and arrays, and a tagged-field section in the header.
    flexible: bool,
    /// Bytes of fixed-size fields between the header and the topic array.
    fixed: usize,
}

const FETCH: i16 = ApiKey::Fetch as i16;
const PRODUCE: i16 = ApiKey::Produce as i16;

/// The layout of a response to `api_key` v`version`, if its names can be mapped from its head.
pub fn layout(api_key: i16, version: i16) -> Option<Layout> {
    match (api_key, version) {
        (FETCH, 4..=12) => Some(Layout {
            flexible: version >= 12,
            // throttle_time_ms, then error_code and session_id from v7
            fixed: if version >= 7 { 4 + 2 + 4 } else { 4 },
        }),
        (PRODUCE, 3..=12) => Some(Layout {
            flexible: version >= 9,
            fixed: 0,
        }),
        _ => None,
    }
}

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
pub fn scan(frame: &[u8], layout: Layout) -> Scan {
    let flexible = layout.flexible;
    let mut at = 4; // correlation id
    if flexible {
        at = match skip_tagged_fields(frame, at) {
            Ok(end) => end,
            Err(Some(need)) => return Scan::Need(need),
            Err(None) => return Scan::Invalid,
        };
    }
    at += layout.fixed;
    match read_first_name(frame, at, flexible) {
        Ok(topics) => Scan::Topics {
            count: topics.count,
            name_at: topics.name_at,
            first: topics.name,
        },
        Err(Some(n)) => Scan::Need(n),
        Err(None) => Scan::Invalid,
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
    layout: Layout,
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
    if write_string(&mut head, &client_name, layout.flexible).is_err() {
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
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{FetchResponse, ProduceResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    /// A response to `api` v`version` for one topic, its header with an unknown tagged field when
    /// the version has tagged fields (it must be skipped, not misread).
    fn one_topic(api: ApiKey, version: i16, topic: &str) -> BytesMut {
        let mut buf = BytesMut::new();
        let header_version = api.response_header_version(version);
        let mut header = ResponseHeader::default().with_correlation_id(9);
        if header_version >= 1 {
            header
                .unknown_tagged_fields
                .insert(7, Bytes::from_static(b"abc"));
        }
        header.encode(&mut buf, header_version).unwrap();
        let name = TopicName(StrBytes::from_string(topic.into()));
        match api {
            ApiKey::Fetch => FetchResponse::default()
                .with_throttle_time_ms(3)
                .with_responses(vec![FetchableTopicResponse::default()
                    .with_topic(name)
                    .with_partitions(vec![
                        PartitionData::default().with_records(Some(Bytes::from_static(b"records")))
                    ])])
                .encode(&mut buf, version),
            _ => ProduceResponse::default()
                .with_throttle_time_ms(3)
                .with_responses(vec![TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(vec![
                        PartitionProduceResponse::default().with_base_offset(42)
                    ])])
                .encode(&mut buf, version),
        }
        .unwrap();
        buf
    }

    #[test]
    fn every_truncation_asks_for_more_and_the_whole_head_finds_the_name() {
        let long = "n".repeat(300);
        for (api, versions) in [(ApiKey::Fetch, 0..=17), (ApiKey::Produce, 0..=13)] {
            for version in versions {
                let by_name = match api {
                    ApiKey::Fetch => (4..=12).contains(&version),
                    _ => (3..=12).contains(&version),
                };
                assert_eq!(
                    layout(api as i16, version).is_some(),
                    by_name,
                    "{api:?} v{version}"
                );
                let Some(layout) = layout(api as i16, version) else {
                    continue;
                };
                for topic in ["orders", long.as_str()] {
                    let buf = one_topic(api, version, topic);
                    let Scan::Topics {
                        count,
                        first: Some(first),
                        ..
                    } = scan(&buf, layout)
                    else {
                        panic!("{api:?} v{version}: no name");
                    };
                    assert_eq!(count, 1);
                    assert_eq!(&buf[first.clone()], topic.as_bytes());
                    for cut in 0..first.end {
                        match scan(&buf[..cut], layout) {
                            Scan::Need(n) => {
                                assert!(n > cut, "{api:?} v{version} cut {cut}: need {n}")
                            }
                            other => panic!("{api:?} v{version} cut {cut}: {other:?}"),
                        }
                    }
                }
            }
        }
    }
}
