//! The Produce and Fetch walkers against `kafka-protocol` on the same bytes: every version,
//! several topics, partitions and batches, null record sets; fed as the frame reader's peeks
//! under every chunking; and cut or corrupted frames end the walk without a panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use bytes::BytesMut;
use common::record_set;
use kafka_filter::codec::walk::{FetchWalker, ProduceWalker, TopicRef, Want};
use kafka_filter::codec::{FrameReader, Step};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, ProduceRequest, ProducerId, RequestHeader, ResponseHeader, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

/// Per partition of a Fetch response: (high watermark, last stable offset, next offset).
type Offsets = (i64, i64, i64);

/// Per topic and partition: (partition, record set bytes, records).
type Expect = Vec<(TopicRef, Vec<(i32, u64, u64)>)>;

fn topic_ref(i: usize, ids: bool) -> TopicRef {
    if ids {
        TopicRef::Id([i as u8 + 1; 16])
    } else {
        TopicRef::Name(format!("topic-{i}"))
    }
}

/// A Produce request frame (after the size field) and where its body starts.
fn produce_frame(version: i16) -> (Vec<u8>, usize, Expect) {
    let ids = version >= 13;
    let shapes: [&[&[usize]]; 3] = [&[&[3], &[1, 2]], &[&[]], &[&[5], &[0], &[2, 2, 2]]];
    let mut topics = Vec::new();
    let mut expect = Vec::new();
    for (t, parts) in shapes.iter().enumerate() {
        let mut data = Vec::new();
        let mut exp = Vec::new();
        for (p, batches) in parts.iter().enumerate() {
            // A partition with no batches has a null record set.
            let records = (!batches.is_empty()).then(|| record_set(batches, 0));
            let len = records.as_ref().map_or(0, |r| r.len() as u64);
            exp.push((p as i32, len, batches.iter().sum::<usize>() as u64));
            data.push(
                PartitionProduceData::default()
                    .with_index(p as i32)
                    .with_records(records),
            );
        }
        let mut topic = TopicProduceData::default().with_partition_data(data);
        match topic_ref(t, ids) {
            TopicRef::Id(id) => topic = topic.with_topic_id(uuid::Uuid::from_bytes(id)),
            TopicRef::Name(n) => topic = topic.with_name(TopicName(StrBytes::from_string(n))),
        }
        topics.push(topic);
        expect.push((topic_ref(t, ids), exp));
    }
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_client_id(Some(StrBytes::from_static_str("walker")))
        .encode(&mut buf, ProduceRequest::header_version(version))
        .unwrap();
    let body_at = buf.len();
    ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("txn-1"))))
        .with_acks(-1)
        .with_topic_data(topics)
        .encode(&mut buf, version)
        .unwrap();
    (buf.to_vec(), body_at, expect)
}

/// A Fetch response frame (after the size field), its body's start, and what it holds:
/// per partition also (high watermark, last stable offset, next offset).
fn fetch_frame(version: i16) -> (Vec<u8>, usize, Expect, Vec<Offsets>) {
    let ids = version >= 13;
    let shapes: [&[&[usize]]; 2] = [&[&[4, 1], &[]], &[&[2]]];
    let mut topics = Vec::new();
    let mut expect = Vec::new();
    let mut offsets = Vec::new();
    for (t, parts) in shapes.iter().enumerate() {
        let mut data = Vec::new();
        let mut exp = Vec::new();
        for (p, batches) in parts.iter().enumerate() {
            let base = 100 * (t as i64 + 1);
            let records = (!batches.is_empty()).then(|| record_set(batches, base));
            let n = batches.iter().sum::<usize>() as i64;
            let len = records.as_ref().map_or(0, |r| r.len() as u64);
            exp.push((p as i32, len, n as u64));
            let hw = base + n + 7;
            offsets.push((hw, hw - 3, if n > 0 { base + n } else { 0 }));
            data.push(
                PartitionData::default()
                    .with_partition_index(p as i32)
                    .with_high_watermark(hw)
                    .with_last_stable_offset(hw - 3)
                    .with_log_start_offset(if version >= 5 { 1 } else { -1 })
                    .with_aborted_transactions(Some(vec![
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(9))
                            .with_first_offset(5);
                        p + 1
                    ]))
                    .with_records(records),
            );
        }
        let mut topic = FetchableTopicResponse::default().with_partitions(data);
        match topic_ref(t, ids) {
            TopicRef::Id(id) => topic = topic.with_topic_id(uuid::Uuid::from_bytes(id)),
            TopicRef::Name(n) => topic = topic.with_topic(TopicName(StrBytes::from_string(n))),
        }
        topics.push(topic);
        expect.push((topic_ref(t, ids), exp));
    }
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(7)
        .encode(&mut buf, FetchResponse::header_version(version))
        .unwrap();
    // The walker starts after the correlation id: the header's tagged fields are its.
    let body_at = 4;
    FetchResponse::default()
        .with_throttle_time_ms(5)
        .with_session_id(if version >= 7 { 3 } else { 0 })
        .with_responses(topics)
        .encode(&mut buf, version)
        .unwrap();
    (buf.to_vec(), body_at, expect, offsets)
}

/// Feed the walker exactly what it asks for, cut at the frame's end.
fn drive<F>(frame: &[u8], mut want: Want, mut feed: F)
where
    F: FnMut(usize, &[u8]) -> Want,
{
    let mut steps = 0;
    while let Want::Peek { at, len } = want {
        let end = (at + len).min(frame.len());
        want = feed(at, &frame[at.min(end)..end]);
        steps += 1;

        assert!(steps < 10_000, "the walker does not finish");
    }
}

fn produce_found(w: &ProduceWalker) -> Expect {
    w.topics
        .iter()
        .map(|t| {
            let parts = t.partitions.iter();
            let parts = parts.map(|p| (p.partition, p.bytes, p.records)).collect();
            (t.topic.clone(), parts)
        })
        .collect()
}

fn fetch_found(w: &FetchWalker) -> Expect {
    w.topics
        .iter()
        .map(|t| {
            let parts = t.partitions.iter().map(|p| {
                let r = &p.records;
                (r.partition, r.bytes, r.records)
            });
            (t.topic.clone(), parts.collect())
        })
        .collect()
}

#[test]
fn produce_walker_matches_kafka_protocol_for_every_version() {
    for version in 3..=13 {
        let (frame, body_at, expect) = produce_frame(version);
        let mut w = ProduceWalker::produce(version, body_at, frame.len());
        let first = w.start();
        drive(&frame, first, |at, bytes| w.feed(at, bytes));
        assert!(w.complete, "v{version}");
        assert_eq!(produce_found(&w), expect, "v{version}");
    }
}

#[test]
fn fetch_walker_matches_kafka_protocol_for_every_version() {
    for version in 4..=18 {
        let (frame, body_at, expect, offsets) = fetch_frame(version);
        let mut w = FetchWalker::fetch(version, body_at, frame.len());
        let first = w.start();
        drive(&frame, first, |at, bytes| w.feed(at, bytes));
        assert!(w.complete, "v{version}");
        assert_eq!(fetch_found(&w), expect, "v{version}");
        let got: Vec<Offsets> = w
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| {
                (
                    p.high_watermark,
                    p.last_stable_offset,
                    p.records.next_offset,
                )
            })
            .collect();
        assert_eq!(got, offsets, "v{version}");
    }
}

/// Through the frame reader: the walker's ranges as peeks, the frame in chunks of every size.
#[test]
fn walking_through_the_frame_reader_under_any_chunking() {
    let (frame, body_at, expect) = produce_frame(9);
    let mut stream = (frame.len() as i32).to_be_bytes().to_vec();
    stream.extend_from_slice(&frame);
    stream.extend_from_slice(&stream.clone());
    for chunk in [1, 2, 3, 7, 61, 256, 1000, stream.len()] {
        let mut reader = FrameReader::new(16, 1 << 20);
        let mut walkers: Vec<ProduceWalker> = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut src = piece;
            reader
                .feed(&mut src, |h| {
                    let want = match h.peek {
                        None => {
                            let mut w = ProduceWalker::produce(9, body_at, h.frame_len);
                            let want = w.start();
                            walkers.push(w);
                            want
                        }
                        Some(p) => walkers.last_mut().unwrap().feed(p.at, p.bytes),
                    };
                    match want {
                        Want::Peek { at, len } => Step::Peek { at, len },
                        Want::Done => Step::Done,
                    }
                })
                .unwrap();
        }
        assert_eq!(walkers.len(), 2, "chunk {chunk}");
        for w in &walkers {
            assert!(w.complete, "chunk {chunk}");
            assert_eq!(produce_found(w), expect, "chunk {chunk}");
        }
    }
}

#[test]
fn cut_or_corrupted_frames_end_the_walk_without_a_panic() {
    let (frame, body_at, _) = produce_frame(9);
    // Cut anywhere: never complete (the frame claims more than it has), never a panic. The
    // walk ends with the last record set: the three empty tagged-field sections after it
    // (partition, topic, request) are not read.
    for cut in 0..frame.len() - 3 {
        let short = &frame[..cut];
        let mut w = ProduceWalker::produce(9, body_at.min(cut), short.len());
        let first = w.start();
        drive(short, first, |at, bytes| w.feed(at, bytes));
        assert!(!w.complete, "cut at {cut}");
    }
    // Every byte flipped in turn: whatever the walker makes of it, it finishes.
    let (fetch, fetch_at, _, _) = fetch_frame(16);
    for (frame, at, fetching) in [(frame, body_at, false), (fetch, fetch_at, true)] {
        for i in 0..frame.len() {
            for flip in [0xff_u8, 0x80, 0x01] {
                let mut bad = frame.clone();
                bad[i] ^= flip;
                if fetching {
                    let mut w = FetchWalker::fetch(16, at, bad.len());
                    let first = w.start();
                    drive(&bad, first, |a, b| w.feed(a, b));
                } else {
                    let mut w = ProduceWalker::produce(9, at, bad.len());
                    let first = w.start();
                    drive(&bad, first, |a, b| w.feed(a, b));
                }
            }
        }
    }
}

#[test]
fn a_hostile_partition_count_is_bounded() {
    // Produce v3: one topic claiming i32::MAX partitions, then 4 MB of partitions
    // (index and an empty record set, 8 bytes each): the walker stops at its cap.
    let mut frame = Vec::new();
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    frame.extend_from_slice(&1i16.to_be_bytes()); // acks
    frame.extend_from_slice(&1000i32.to_be_bytes()); // timeout
    frame.extend_from_slice(&1i32.to_be_bytes()); // one topic
    frame.extend_from_slice(&1i16.to_be_bytes());
    frame.push(b't');
    frame.extend_from_slice(&i32::MAX.to_be_bytes());
    for i in 0..500_000i32 {
        frame.extend_from_slice(&i.to_be_bytes());
        frame.extend_from_slice(&0i32.to_be_bytes());
    }
    let mut w = ProduceWalker::produce(3, 0, frame.len());
    let first = w.start();
    drive(&frame, first, |at, bytes| w.feed(at, bytes));
    assert!(!w.complete);
    let kept: usize = w.topics.iter().map(|t| t.partitions.len()).sum();
    assert_eq!(kept, kafka_filter::codec::walk::MAX_PARTITIONS);
}

#[test]
fn records_are_never_read() {
    // One partition of 16 batches of 1,000 records (about 1 MiB): the walker reads the
    // partition's fields and each batch header, not the records.
    let records = record_set(&[1000; 16], 0);
    let body =
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("big")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records.clone()))])]);
    let mut frame = BytesMut::new();
    body.encode(&mut frame, 9).unwrap();
    let mut w = ProduceWalker::produce(9, 0, frame.len());
    let mut shown = 0;
    let first = w.start();
    drive(&frame, first, |at, bytes| {
        shown += bytes.len();
        w.feed(at, bytes)
    });
    assert!(w.complete);
    assert_eq!(w.topics[0].partitions[0].records, 16_000);
    assert_eq!(w.topics[0].partitions[0].bytes, records.len() as u64);
    assert!(records.len() > 1_000_000);
    assert!(
        shown <= 16 * 256 + 512,
        "read {shown} bytes of {}",
        frame.len()
    );
}

/// A hostile Produce request of many empty topics (three bytes each when flexible) does not make
/// the walk keep them all: it stops at the cap, marked incomplete.
#[test]
fn a_frame_of_countless_empty_topics_is_cut_at_the_cap() {
    use kafka_filter::codec::walk::{ProduceWalker, Want, MAX_PARTITIONS};
    // Produce v9 body: transactional_id (null), acks, timeout, topics (compact array).
    let n = 3 * MAX_PARTITIONS;
    let mut body = vec![0u8, 0, 1, 0, 0, 0x75, 0x30];
    let mut count = Vec::new();
    let mut v = (n + 1) as u32;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            count.push(b);
            break;
        }
        count.push(b | 0x80);
    }
    body.extend(count);
    for _ in 0..n {
        // An empty name (compact string length 1), no partitions (compact array 1), no tags.
        body.extend([1u8, 1, 0]);
    }
    body.push(0);
    let mut w = ProduceWalker::produce(9, 0, body.len());
    let mut want = w.start();
    let mut steps = 0;
    while let Want::Peek { at, len } = want {
        let end = (at + len).min(body.len());
        want = w.feed(at, body.get(at..end).unwrap_or_default());
        steps += 1;
        assert!(steps < 10 * n, "the walk ends");
    }
    let walked = w.into_summary();
    assert!(!walked.complete);
    assert!(walked.topics.len() <= MAX_PARTITIONS);
}
