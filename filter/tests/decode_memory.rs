//! The heap kafka-protocol takes to decode hostile frames, measured: nothing a client sends may
//! make the decoder reserve memory out of proportion to the bytes it sent
//! (`vendor/kafka-protocol/PATCHED.md`).
//!
//! Its own test binary, so that it can count allocations: a global allocator keeps the current
//! and peak heap of each thread, and every test measures the peak of one decode on its own thread.
//! Plain std, no threads and no files: it runs natively and on wasm32-wasip1 (32-bit `usize`).
//! `cargo test -p kafka-filter --test decode_memory -- --nocapture` prints the measurements.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::mem::size_of;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    BrokerId, FetchResponse, MetadataRequest, MetadataResponse, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::budget::{
    decode_budget_left, with_decode_budget, DecodeBudgetExceeded, MAX_PREALLOC_BYTES,
};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;

// ---- counting allocator ----------------------------------------------------------------------

struct Counting;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: usize) {
    let _ = CURRENT.try_with(|current| {
        let now = current.get() + bytes as isize;
        current.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn sub(bytes: usize) {
    let _ = CURRENT.try_with(|current| current.set(current.get() - bytes as isize));
}

// SAFETY: every call is forwarded to `System` unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            add(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            add(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Counted as a move: the old and the new block are both live at the peak.
            add(new_size);
            sub(layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`; returns its result and the peak heap this thread held during `f` above what it held
/// before (what `f` returns, still alive, included).
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = CURRENT.get();
    PEAK.set(before);
    let result = f();
    let peak = PEAK.get() - before;
    (result, peak.max(0) as usize)
}

// ---- frames ----------------------------------------------------------------------------------

fn varint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// A Metadata v1 request body: the topic count `claimed`, then `names` topic names `name`.
fn metadata_v1(claimed: i32, names: usize, name: &[u8]) -> Bytes {
    let mut topic = (name.len() as i16).to_be_bytes().to_vec();
    topic.extend_from_slice(name);
    let mut out = claimed.to_be_bytes().to_vec();
    out.extend_from_slice(&topic.repeat(names));
    out.into()
}

/// A Metadata v1 request body of `n` null topic names (2 bytes each, the smallest v1 topic).
fn metadata_v1_null_names(n: usize) -> Bytes {
    let mut out = (n as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&(-1i16).to_be_bytes().repeat(n));
    out.into()
}

/// A Metadata v9 request body (compact, flexible) of `n` topics, each the bytes `topic`, and
/// `tags` unknown tagged fields (tags 0.., empty) at the top level.
fn metadata_v9(n: usize, topic: &[u8], tags: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + n * topic.len() + 3 * tags as usize);
    varint(&mut out, n as u32 + 1);
    out.put_slice(&topic.repeat(n));
    // allow_auto_topic_creation, include_cluster_authorized_operations,
    // include_topic_authorized_operations
    out.put_slice(&[1, 0, 0]);
    varint(&mut out, tags);
    for tag in 0..tags {
        varint(&mut out, tag);
        varint(&mut out, 0);
    }
    out.freeze()
}

/// An OffsetFetch v8 request body of `n` groups, each with an empty id and one topic with an
/// empty name and no partitions: an array nested in an array, 6 bytes a group.
fn offset_fetch_v8_nested(n: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + 6 * n);
    varint(&mut out, n as u32 + 1);
    // group id "", 1 topic: name "", 0 partitions, no tags; no tags
    out.put_slice(&[1, 2, 1, 1, 0, 0].repeat(n));
    out.put_slice(&[0, 0]); // require_stable, no tags
    out.freeze()
}

/// A legitimate Metadata v12 request for `n` topics with realistic names.
fn metadata_v12_request(n: usize) -> Bytes {
    let topics = (0..n)
        .map(|i| {
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(
                format!("orders.eu-west-1.{i:06}"),
            ))))
        })
        .collect();
    let mut out = BytesMut::new();
    MetadataRequest::default()
        .with_topics(Some(topics))
        .encode(&mut out, 12)
        .unwrap();
    out.freeze()
}

/// A legitimate Metadata v12 response: `topics` topics of `partitions` partitions, 3 replicas.
fn metadata_v12_response(topics: usize, partitions: usize) -> Bytes {
    let replicas = vec![BrokerId(1), BrokerId(2), BrokerId(3)];
    let topics = (0..topics)
        .map(|t| {
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(format!(
                    "orders.eu-west-1.{t:06}"
                )))))
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p as i32)
                                .with_leader_id(BrokerId(1))
                                .with_replica_nodes(replicas.clone())
                                .with_isr_nodes(replicas.clone())
                        })
                        .collect(),
                )
        })
        .collect();
    let mut out = BytesMut::new();
    MetadataResponse::default()
        .with_topics(topics)
        .encode(&mut out, 12)
        .unwrap();
    out.freeze()
}

/// A legitimate Fetch v4 response: `topics` topics of `partitions` partitions with no records
/// (the most decoded structure per wire byte among the legitimate frames measured).
fn fetch_v4_response(topics: usize, partitions: usize) -> Bytes {
    let topics = (0..topics)
        .map(|t| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(format!(
                    "orders.eu-west-1.{t:06}"
                ))))
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p as i32)
                                .with_records(Some(Bytes::new()))
                        })
                        .collect(),
                )
        })
        .collect();
    let mut out = BytesMut::new();
    FetchResponse::default()
        .with_responses(topics)
        .encode(&mut out, 4)
        .unwrap();
    out.freeze()
}

// ---- measuring -------------------------------------------------------------------------------

/// How a decode ended.
#[derive(Debug)]
enum Outcome<T> {
    Decoded(T),
    /// Refused with [`DecodeBudgetExceeded`] as the root cause.
    OverBudget(DecodeBudgetExceeded),
    /// Refused for another reason (the message).
    Refused(String),
}

impl<T> Outcome<T> {
    fn decoded(self) -> T {
        match self {
            Outcome::Decoded(message) => message,
            other => panic!("not decoded: {other:?}", other = other.map(|_| ())),
        }
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Decoded(message) => Outcome::Decoded(f(message)),
            Outcome::OverBudget(e) => Outcome::OverBudget(e),
            Outcome::Refused(e) => Outcome::Refused(e),
        }
    }
}

/// Decodes `body` as a `T` at `version`, optionally within a budget; returns how it ended and
/// the peak heap of the decode (the decoded message included).
fn measure<T: Decodable>(
    label: &str,
    body: &Bytes,
    version: i16,
    budget: Option<usize>,
) -> (Outcome<T>, usize) {
    let (outcome, peak) = peak_of(|| {
        let mut buf = body.clone();
        let result = match budget {
            Some(limit) => with_decode_budget(limit, || T::decode(&mut buf, version)),
            None => T::decode(&mut buf, version),
        };
        match result {
            Ok(message) => Outcome::Decoded(message),
            Err(e) => match e.downcast_ref::<DecodeBudgetExceeded>() {
                Some(over) => Outcome::OverBudget(*over),
                None => Outcome::Refused(format!("{e:#}")),
            },
        }
    });
    println!(
        "{label:<62} frame {:>10} B  peak {:>11} B  {:>6.2} x frame  {}",
        body.len(),
        peak,
        peak as f64 / body.len() as f64,
        match &outcome {
            Outcome::Decoded(_) => "decoded".to_string(),
            Outcome::OverBudget(e) => format!("refused: {e}"),
            Outcome::Refused(e) => format!("refused: {e}"),
        }
    );
    (outcome, peak)
}

/// The heap of one `BTreeMap<i32, Bytes>` holding one entry: one leaf node.
fn tagged_fields_node() -> usize {
    let (_map, bytes) = peak_of(|| BTreeMap::from([(0i32, Bytes::new())]));
    bytes
}

/// Slack for the allocations a decode makes that do not grow with the frame (an error value, the
/// shared header of a `Bytes`).
const SLACK: usize = 4 * 1024;

// ---- the issue's frame -----------------------------------------------------------------------

/// The frame of the issue: a Metadata v1 request whose topic array claims 0x7ffffff0 entries,
/// followed by 60 MB of 10-byte names. Upstream reserved 0x7ffffff0 x size_of::<topic>() (an
/// abort), the first patch min(count, bytes left) x size_of (4.3 GB here, a capacity overflow on
/// wasm32). The count exceeds the bytes left, so the decode is refused before anything is
/// reserved.
#[test]
fn issue_frame_claiming_0x7ffffff0_topics_is_refused_without_reserving() {
    let body = metadata_v1(0x7fff_fff0, 5_000_000, b"topic-0001");
    assert_eq!(body.len(), 4 + 60_000_000);
    let (result, peak) = measure::<MetadataRequest>(
        "issue: v1, count 0x7ffffff0, 60 MB of 10-byte names",
        &body,
        1,
        None,
    );
    match result {
        Outcome::Refused(e) => assert!(
            e.contains("Tried to allocate a collection of size 2147483632"),
            "{e}"
        ),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(peak <= SLACK, "peak {peak} B");
}

/// The same names under a count the bytes left allow (one element a byte), so the decoder must
/// decode the 5 million names before it finds the buffer short: the array grows only as they
/// decode, to less than 3 x what they take (doubling, and the old block while it is copied).
#[test]
fn count_within_the_bytes_left_reserves_only_for_decoded_elements() {
    let names = 500_000;
    let body = metadata_v1(12 * names as i32, names, b"topic-0001");
    let (result, peak) = measure::<MetadataRequest>(
        "v1, count = bytes left, 6 MB of 10-byte names",
        &body,
        1,
        None,
    );
    assert!(matches!(result, Outcome::Refused(_)));
    let decoded = names * size_of::<MetadataRequestTopic>();
    assert!(peak <= 3 * decoded + SLACK, "peak {peak} B");
}

// ---- other hostile shapes, without a budget --------------------------------------------------

/// Arrays of the smallest elements decode; what they reserve is bounded by what the decoded
/// elements take (`needed`, less than 3 x that while the arrays grow), which is proportional to
/// the frame: the printed ratio is the amplification a budget has to bound.
#[test]
fn hostile_shapes_reserve_in_proportion_to_the_frame() {
    let n = 100_000;
    let topic = size_of::<MetadataRequestTopic>();
    let node = tagged_fields_node();
    let shapes: [(&str, Bytes, i16, usize); 4] = [
        (
            "v1, 100k null topic names (2 B each)",
            metadata_v1_null_names(n),
            1,
            n * topic,
        ),
        (
            "v1, 100k 10-byte topic names (12 B each)",
            metadata_v1(n as i32, n, b"topic-0001"),
            1,
            n * topic,
        ),
        (
            "v9, 100k null topic names (2 B each)",
            metadata_v9(n, &[0, 0], 0),
            9,
            n * topic,
        ),
        (
            "v9, 100k topics with an unknown tagged field (4 B each)",
            metadata_v9(n, &[0, 1, 0, 0], 0),
            9,
            n * (topic + node),
        ),
    ];
    for (label, body, version, needed) in shapes {
        let (result, peak) = measure::<MetadataRequest>(label, &body, version, None);
        result.decoded();
        assert!(peak <= 3 * needed + SLACK, "{label}: peak {peak} B");
    }

    let body = offset_fetch_v8_nested(n);
    let (result, peak) = measure::<OffsetFetchRequest>(
        "OffsetFetch v8, 100k groups of 1 topic (nested, 6 B each)",
        &body,
        8,
        None,
    );
    result.decoded();
    let needed = n * (size_of::<OffsetFetchRequestGroup>() + size_of::<OffsetFetchRequestTopics>());
    assert!(peak <= 3 * needed + SLACK, "peak {peak} B");

    // Distinct tags: 2 wire bytes each up to tag 127, 3 after. A node holds 5 to 11 entries.
    let tags = 50_000;
    let body = metadata_v9(0, &[], tags);
    let (result, peak) =
        measure::<MetadataRequest>("v9, 50k unknown tagged fields (3 B each)", &body, 9, None);
    result.decoded();
    assert!(
        peak <= tags as usize / 5 * 2 * node + SLACK,
        "peak {peak} B"
    );
}

/// Legitimate large frames, for comparison.
#[test]
fn legitimate_frames_take_a_few_times_their_size() {
    let body = metadata_v12_request(50_000);
    let (result, peak) = measure::<MetadataRequest>(
        "legit: Metadata v12 request, 50k topic names",
        &body,
        12,
        None,
    );
    assert_eq!(result.decoded().topics.unwrap().len(), 50_000);
    assert!(peak <= 8 * body.len(), "peak {peak} B");

    let body = metadata_v12_response(200, 100);
    let (result, peak) = measure::<MetadataResponse>(
        "legit: Metadata v12 response, 200 topics x 100 partitions",
        &body,
        12,
        None,
    );
    assert_eq!(result.decoded().topics.len(), 200);
    assert!(peak <= 8 * body.len(), "peak {peak} B");
}

// ---- with a budget ---------------------------------------------------------------------------

/// The budget these tests set for a frame: 16 x its bytes + 64 KiB. The legitimate frames here
/// are charged at most 7.4 x (a Fetch v4 response of empty partitions; 4.6 x on wasm32), the
/// hostile shapes above more than 16 x on both (they hold 18 x to 120 x without a budget, 10 x to
/// 76 x on wasm32, where the unknown tagged fields are charged 24 x).
fn budget_for(body: &Bytes) -> usize {
    16 * body.len() + MAX_PREALLOC_BYTES
}

/// Legitimate frames decode within [`budget_for`] and hold at most the budget.
#[test]
fn a_budget_lets_legitimate_frames_decode() {
    let check = |label: &str, peak: usize, budget: usize| {
        assert!(peak <= budget + SLACK, "{label}: peak {peak} B");
    };
    for (label, body) in [
        (
            "legit + budget: Metadata v12 request, 50k topic names",
            metadata_v12_request(50_000),
        ),
        (
            "legit + budget: Metadata v12 request, 3 topic names",
            metadata_v12_request(3),
        ),
    ] {
        let budget = budget_for(&body);
        let (result, peak) = measure::<MetadataRequest>(label, &body, 12, Some(budget));
        result.decoded();
        check(label, peak, budget);
    }

    let label = "legit + budget: Metadata v12 response, 200 x 100 partitions";
    let body = metadata_v12_response(200, 100);
    let (result, peak) = measure::<MetadataResponse>(label, &body, 12, Some(budget_for(&body)));
    result.decoded();
    check(label, peak, budget_for(&body));

    let label = "legit + budget: Fetch v4 response, 1000 x 10 empty partitions";
    let body = fetch_v4_response(1000, 10);
    let (result, peak) = measure::<FetchResponse>(label, &body, 4, Some(budget_for(&body)));
    result.decoded();
    check(label, peak, budget_for(&body));
}

/// Every hostile shape is refused within [`budget_for`] with [`DecodeBudgetExceeded`], and never
/// holds more than the budget: the heap of a decode is bounded in bytes, 16 x the frame here.
#[test]
fn a_budget_refuses_every_hostile_shape_in_bytes() {
    let n = 100_000;
    let check = |label: &str, outcome: Outcome<()>, peak: usize, budget: usize| {
        match outcome {
            Outcome::OverBudget(e) => assert_eq!(e, DecodeBudgetExceeded { limit: budget }),
            other => panic!("{label}: {other:?}"),
        }
        assert!(peak <= budget + SLACK, "{label}: peak {peak} B");
    };
    for (label, body, version) in [
        (
            "hostile + budget: v1, 100k null topic names",
            metadata_v1_null_names(n),
            1,
        ),
        (
            "hostile + budget: v9, 100k null topic names",
            metadata_v9(n, &[0, 0], 0),
            9,
        ),
        (
            "hostile + budget: v9, 100k topics with a tagged field",
            metadata_v9(n, &[0, 1, 0, 0], 0),
            9,
        ),
        (
            "hostile + budget: v9, 100k unknown tagged fields",
            metadata_v9(0, &[], 100_000),
            9,
        ),
    ] {
        let budget = budget_for(&body);
        let (result, peak) = measure::<MetadataRequest>(label, &body, version, Some(budget));
        check(label, result.map(|_| ()), peak, budget);
    }

    let label = "hostile + budget: OffsetFetch v8, 100k nested groups";
    let body = offset_fetch_v8_nested(n);
    let budget = budget_for(&body);
    let (result, peak) = measure::<OffsetFetchRequest>(label, &body, 8, Some(budget));
    check(label, result.map(|_| ()), peak, budget);

    // The issue's frame, with the count the bytes left allow: refused at the budget, not at the
    // end of the 60 MB.
    let label = "hostile + budget: v1, count = bytes left, 60 MB of names";
    let body = metadata_v1(60_000_000, 5_000_000, b"topic-0001");
    let budget = 16 * 1024 * 1024;
    let (result, peak) = measure::<MetadataRequest>(label, &body, 1, Some(budget));
    check(label, result.map(|_| ()), peak, budget);

    assert_eq!(decode_budget_left(), None);
}

/// The budget is charged for what is reserved, not for the bytes on the wire: a decode within
/// budget leaves what it did not use.
#[test]
fn a_budget_is_charged_for_the_decoded_structure() {
    let body = metadata_v12_request(1000);
    let topics = 1000 * size_of::<MetadataRequestTopic>();
    let left = with_decode_budget(1 << 20, || {
        MetadataRequest::decode(&mut body.clone(), 12).map(|_| decode_budget_left().unwrap())
    })
    .unwrap();
    // One reservation for the 1000 topics (the names share the frame's buffer).
    assert_eq!((1 << 20) - left, topics);
}

// ---- record batches and the request header ---------------------------------------------------

/// CRC-32C (Castagnoli), bitwise: record batches carry one over their attributes and records.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn zigzag(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// One v2 record: no key, no value, `headers` as the header count, offset delta `offset_delta`.
fn record(offset_delta: i64, headers: i64) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i8(0); // attributes
    zigzag(&mut body, 0); // timestamp delta
    zigzag(&mut body, offset_delta);
    zigzag(&mut body, -1); // key
    zigzag(&mut body, -1); // value
    zigzag(&mut body, headers);
    let mut out = BytesMut::new();
    zigzag(&mut out, body.len() as i64);
    out.put_slice(&body);
    out.to_vec()
}

/// A v2 record batch (no compression) claiming `record_count` records, holding `records`.
fn record_batch(base_offset: i64, record_count: i32, records: &[u8]) -> Bytes {
    let mut crc_covered = BytesMut::new();
    crc_covered.put_i16(0); // attributes
    crc_covered.put_i32(0); // last offset delta
    crc_covered.put_i64(0); // first timestamp
    crc_covered.put_i64(0); // max timestamp
    crc_covered.put_i64(-1); // producer id
    crc_covered.put_i16(-1); // producer epoch
    crc_covered.put_i32(-1); // base sequence
    crc_covered.put_i32(record_count);
    crc_covered.put_slice(records);
    let mut out = BytesMut::new();
    out.put_i64(base_offset);
    out.put_i32(4 + 1 + 4 + crc_covered.len() as i32); // batch length
    out.put_i32(0); // partition leader epoch
    out.put_i8(2); // magic
    out.put_u32(crc32c(&crc_covered));
    out.put_slice(&crc_covered);
    out.freeze()
}

/// `RecordBatchDecoder::decode` on `batch`: the error message, or `None` if it decoded.
fn decode_batch(label: &str, batch: &Bytes) -> (Option<String>, usize) {
    let (result, peak) = peak_of(|| RecordBatchDecoder::decode(&mut batch.clone()).map(|_| ()));
    let error = result.err().map(|e| format!("{e:#}"));
    println!(
        "{label:<62} frame {:>10} B  peak {:>11} B  {}",
        batch.len(),
        peak,
        error.as_deref().unwrap_or("decoded")
    );
    (error, peak)
}

/// Upstream reserved `record_count` records and `IndexMap::with_capacity(header count)` from the
/// wire (2^31 - 1 records: an abort). Counts past the bytes left are refused before reserving.
#[test]
fn record_batches_claiming_2_pow_31_records_or_headers_are_refused_without_reserving() {
    let (error, _) = decode_batch("records: a valid batch of 3", &{
        let records = [record(0, 0), record(1, 0), record(2, 0)].concat();
        record_batch(0, 3, &records)
    });
    assert_eq!(error, None);

    let (error, peak) = decode_batch(
        "records: batch claiming 2^31-1 records, holding 1",
        &record_batch(0, i32::MAX, &record(0, 0)),
    );
    assert!(
        error
            .unwrap()
            .contains("Tried to allocate a collection of size 2147483647"),
        "refused for another reason"
    );
    assert!(peak <= SLACK, "peak {peak} B");

    let (error, peak) = decode_batch(
        "records: record claiming 2^31-1 headers",
        &record_batch(0, 1, &record(0, i64::from(i32::MAX))),
    );
    assert!(error.unwrap().contains("2147483647 headers"));
    assert!(peak <= SLACK, "peak {peak} B");
}

/// Offsets and timestamps are the batch's base plus a delta from the wire: an overflow is an
/// error, not a panic (debug) or a wrapped offset (release).
#[test]
fn record_offsets_that_overflow_are_refused() {
    let (error, _) = decode_batch(
        "records: base offset i64::MAX, offset delta 1",
        &record_batch(i64::MAX, 1, &record(1, 0)),
    );
    assert!(error.unwrap().contains("offset overflows"));
}

/// `decode_request_header_from_buffer` peeked at the API key and version without checking the
/// buffer held 4 bytes: a short buffer panicked.
#[test]
fn a_short_request_header_is_an_error_not_a_panic() {
    for short in [&[][..], &[0, 3][..], &[0, 3, 0][..]] {
        assert!(decode_request_header_from_buffer(&mut Bytes::copy_from_slice(short)).is_err());
    }
    let mut header = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff]);
    let header = decode_request_header_from_buffer(&mut header).unwrap();
    assert_eq!((header.request_api_key, header.correlation_id), (3, 7));
}
