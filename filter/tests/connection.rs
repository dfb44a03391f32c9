//! The sans-io connection driven like Envoy drives it: real Kafka frames encoded with
//! `kafka-protocol`, fed in every chunking, checked against what the filter reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;

use common::{frame, request_from, response};
use kafka_filter::codec::frame::HEAD_WINDOW;
use kafka_filter::codec::source::CountingSource;
use kafka_filter::config::{Config, FrameErrorPolicy};
use kafka_filter::connection::{KafkaConnection, Verdict};
use kafka_filter::metrics::{MetricKey, RecordingSink};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse,
};
use kafka_protocol::protocol::Encodable;

fn request<B: Encodable>(api: ApiKey, version: i16, corr: i32, body: &B) -> Vec<u8> {
    request_from(api, version, corr, "test-client", body)
}

/// A Produce request whose record payload is `payload_len` opaque bytes. The filter must never
/// look at them; their content is irrelevant to framing.
fn produce(corr: i32, acks: i16, payload_len: usize) -> Vec<u8> {
    let mut f = request(
        ApiKey::Produce,
        9,
        corr,
        &ProduceRequest::default().with_acks(acks),
    );
    f.extend(vec![0x5A; payload_len]);
    let size = (f.len() - 4) as i32;
    f[..4].copy_from_slice(&size.to_be_bytes());
    f
}

struct Exchange {
    requests: Vec<u8>,
    responses: Vec<u8>,
}

fn sample_exchange() -> Exchange {
    let mut requests = Vec::new();
    requests.extend(request(
        ApiKey::ApiVersions,
        3,
        1,
        &ApiVersionsRequest::default(),
    ));
    requests.extend(request(
        ApiKey::Metadata,
        12,
        2,
        &MetadataRequest::default(),
    ));
    requests.extend(produce(3, 1, 5000));
    requests.extend(produce(4, 0, 300)); // acks=0: no response
    requests.extend(produce(5, -1, 70_000));
    let mut responses = Vec::new();
    responses.extend(response(
        ApiKey::ApiVersions,
        3,
        1,
        &ApiVersionsResponse::default(),
    ));
    responses.extend(response(
        ApiKey::Metadata,
        12,
        2,
        &MetadataResponse::default(),
    ));
    responses.extend(response(ApiKey::Produce, 9, 3, &ProduceResponse::default()));
    responses.extend(response(ApiKey::Produce, 9, 5, &ProduceResponse::default()));
    Exchange {
        requests,
        responses,
    }
}

fn feed_in_chunks(
    conn: &mut KafkaConnection,
    sink: &mut RecordingSink,
    data: &[u8],
    chunk: usize,
    requests: bool,
) -> (Vec<Verdict>, usize) {
    let mut verdicts = Vec::new();
    let mut copied = 0;
    for c in data.chunks(chunk.max(1)) {
        let mut src = CountingSource::new(c);
        let v = if requests {
            conn.on_request_data(&mut src, || 1_000_000, sink)
        } else {
            conn.on_response_data(&mut src, || 3_000_000, sink)
        };
        copied += src.copied;
        verdicts.push(v);
    }
    (verdicts, copied)
}

fn check_counts(sink: &RecordingSink) {
    assert_eq!(sink.get(MetricKey::Requests(Some(ApiKey::ApiVersions))), 1);
    assert_eq!(sink.get(MetricKey::Requests(Some(ApiKey::Metadata))), 1);
    assert_eq!(sink.get(MetricKey::Requests(Some(ApiKey::Produce))), 3);
    assert_eq!(sink.get(MetricKey::Responses(Some(ApiKey::Produce))), 2);
    assert_eq!(sink.get(MetricKey::Responses(Some(ApiKey::Metadata))), 1);
    assert_eq!(sink.get(MetricKey::ResponsesUnmatched), 0);
    assert_eq!(sink.get(MetricKey::RequestsUnanswered), 0);
    assert_eq!(sink.get(MetricKey::FramesUndecodable), 0);
    assert_eq!(
        sink.samples[&MetricKey::ResponseLatencyUs(Some(ApiKey::Produce))],
        vec![2000, 2000]
    );
}

#[test]
fn any_chunking_gives_the_same_observations_and_never_copies_records() {
    let ex = sample_exchange();
    // At most one head window per request (5 of them), whatever the records' size (75 KB here).
    let header_bytes_bound = 5 * HEAD_WINDOW;
    for chunk in (1..64).chain([100, 1000, 4096, 65536, 1 << 20]) {
        let mut conn = KafkaConnection::new(1, Rc::new(Config::default()));
        let mut sink = RecordingSink::default();
        let (v, copied) = feed_in_chunks(&mut conn, &mut sink, &ex.requests, chunk, true);
        assert!(v.iter().all(|v| *v == Verdict::Continue));
        assert!(
            copied < header_bytes_bound,
            "chunk {chunk}: copied {copied} bytes of {}",
            ex.requests.len()
        );
        let (v, _) = feed_in_chunks(&mut conn, &mut sink, &ex.responses, chunk, false);
        assert!(v.iter().all(|v| *v == Verdict::Continue));
        check_counts(&sink);
        // Byte counters are batched; the host flushes them when the connection ends.
        conn.flush(&mut sink);
        assert_eq!(sink.get(MetricKey::RequestBytes), ex.requests.len() as i64);
        assert_eq!(
            sink.get(MetricKey::ResponseBytes),
            ex.responses.len() as i64
        );
        assert_eq!(conn.client_id(), Some("test-client"));
        assert_eq!(conn.inflight(), 0);
    }
}

#[test]
fn byte_counters_are_reported_at_least_every_second_of_traffic() {
    let mut conn = KafkaConnection::new(1, Rc::new(Config::default()));
    let mut sink = RecordingSink::default();
    let second = 1_000_000_000u64;
    let req = request(ApiKey::Metadata, 12, 1, &MetadataRequest::default());
    // The first request reports at once (nothing was reported before).
    conn.on_request_data(&mut req.as_slice(), || 5 * second, &mut sink);
    assert_eq!(sink.get(MetricKey::RequestBytes), req.len() as i64);
    // Within the second: pending.
    conn.on_request_data(&mut req.as_slice(), || 5 * second + 1, &mut sink);
    assert_eq!(sink.get(MetricKey::RequestBytes), req.len() as i64);
    // A second later: reported, the pending bytes included.
    conn.on_request_data(&mut req.as_slice(), || 6 * second + 1, &mut sink);
    assert_eq!(sink.get(MetricKey::RequestBytes), 3 * req.len() as i64);
}

#[test]
fn the_clock_is_read_only_for_chunks_with_a_header() {
    let frame = produce(1, 1, 100_000);
    let mut conn = KafkaConnection::new(1, Rc::new(Config::default()));
    let mut sink = RecordingSink::default();
    let reads = std::cell::Cell::new(0);
    for c in frame.chunks(16 * 1024) {
        conn.on_request_data(
            &mut &c[..],
            || {
                reads.set(reads.get() + 1);
                7
            },
            &mut sink,
        );
    }
    assert_eq!(reads.get(), 1);
}

#[test]
fn a_produce_request_takes_one_read_and_so_does_its_response() {
    let frame = produce(9, 1, 50_000);
    let mut conn = KafkaConnection::new(1, Rc::new(Config::default()));
    let mut sink = RecordingSink::default();
    let mut src = CountingSource::new(&frame);
    conn.on_request_data(&mut src, || 0, &mut sink);
    assert_eq!(src.reads, 1, "size, header and acks in one read");
    assert_eq!(src.copied, HEAD_WINDOW);
    let resp = response(ApiKey::Produce, 9, 9, &ProduceResponse::default());
    let mut src = CountingSource::new(&resp);
    conn.on_response_data(&mut src, || 1, &mut sink);
    assert_eq!(src.reads, 1);
    assert_eq!(src.copied, resp.len());
    assert_eq!(sink.get(MetricKey::Responses(Some(ApiKey::Produce))), 1);
}

#[test]
fn small_frames_in_one_chunk_share_a_read() {
    let mut conn = KafkaConnection::new(1, Rc::new(Config::default()));
    let mut sink = RecordingSink::default();
    let mut chunk = Vec::new();
    for corr in 0..10 {
        chunk.extend(request(
            ApiKey::Metadata,
            12,
            corr,
            &MetadataRequest::default(),
        ));
    }
    assert!(chunk.len() <= HEAD_WINDOW);
    let mut src = CountingSource::new(&chunk);
    conn.on_request_data(&mut src, || 0, &mut sink);
    assert_eq!(src.reads, 1);
    assert_eq!(sink.get(MetricKey::Requests(Some(ApiKey::Metadata))), 10);
    // Past the window, the next frame start takes the next read.
    let mut big = chunk.clone();
    while big.len() <= HEAD_WINDOW {
        big.extend(request(
            ApiKey::Metadata,
            12,
            99,
            &MetadataRequest::default(),
        ));
    }
    let frames = sink.get(MetricKey::Requests(Some(ApiKey::Metadata)));
    let mut src = CountingSource::new(&big);
    conn.on_request_data(&mut src, || 0, &mut sink);
    assert_eq!(src.reads, 2);
    assert!(sink.get(MetricKey::Requests(Some(ApiKey::Metadata))) > frames + 10);
}

#[test]
fn record_size_does_not_change_what_is_read() {
    let small = produce(1, 1, 1024);
    let big = produce(1, 1, 1 << 20);
    let copied = |data: &[u8]| {
        let mut conn = KafkaConnection::new(1, Rc::new(Config::default()));
        let mut sink = RecordingSink::default();
        feed_in_chunks(&mut conn, &mut sink, data, 16 * 1024, true).1
    };
    assert_eq!(copied(&small), copied(&big));
}

#[test]
fn unknown_api_and_version_pass_and_are_counted() {
    let mut conn = KafkaConnection::new(1, Rc::new(Config::default()));
    let mut sink = RecordingSink::default();
    let mut body = 10000i16.to_be_bytes().to_vec();
    body.extend(0i16.to_be_bytes());
    body.extend(41i32.to_be_bytes());
    body.extend([0xFF; 20]);
    let mut stream = frame(&body);
    let mut newer = request(ApiKey::Metadata, 12, 42, &MetadataRequest::default());
    newer[6..8].copy_from_slice(&999i16.to_be_bytes());
    stream.extend(newer);
    for b in stream.chunks(1) {
        assert_eq!(
            conn.on_request_data(&mut &b[..], || 0, &mut sink),
            Verdict::Continue
        );
    }
    assert_eq!(sink.get(MetricKey::RequestsUnknownApi), 1);
    assert_eq!(sink.get(MetricKey::RequestsUnknownVersion), 1);
    assert_eq!(sink.get(MetricKey::Requests(None)), 1);
    // Both responses are still matched by correlation id.
    let mut responses = frame(&41i32.to_be_bytes());
    responses.extend(frame(&[0, 0, 0, 42, 0, 0]));
    conn.on_response_data(&mut responses.as_slice(), || 0, &mut sink);
    assert_eq!(sink.get(MetricKey::Responses(None)), 1);
    assert_eq!(sink.get(MetricKey::Responses(Some(ApiKey::Metadata))), 1);
    assert_eq!(sink.get(MetricKey::ResponsesUnmatched), 0);
}

#[test]
fn oversized_frame_closes_or_passes_by_policy() {
    let config = |policy| {
        Rc::new(Config {
            max_frame_bytes: 4096,
            on_frame_error: policy,
            ..Config::default()
        })
    };
    let mut stream = request(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
    stream.extend(5000i32.to_be_bytes());
    stream.extend([1u8; 100]);

    let mut conn = KafkaConnection::new(1, config(FrameErrorPolicy::Close));
    let mut sink = RecordingSink::default();
    assert_eq!(
        conn.on_request_data(&mut stream.as_slice(), || 0, &mut sink),
        Verdict::Close
    );
    assert_eq!(
        conn.on_response_data(&mut &[0u8; 8][..], || 0, &mut sink),
        Verdict::Close
    );
    assert_eq!(sink.get(MetricKey::FramesOversized), 1);
    assert_eq!(sink.get(MetricKey::ConnectionsClosedByPolicy), 1);
    assert_eq!(sink.get(MetricKey::Requests(Some(ApiKey::ApiVersions))), 1);

    let mut conn = KafkaConnection::new(1, config(FrameErrorPolicy::PassThrough));
    let mut sink = RecordingSink::default();
    assert_eq!(
        conn.on_request_data(&mut stream.as_slice(), || 0, &mut sink),
        Verdict::Continue
    );
    assert_eq!(
        conn.on_request_data(&mut &[9u8; 50][..], || 0, &mut sink),
        Verdict::Continue
    );
    assert_eq!(sink.get(MetricKey::ConnectionsBypassed), 1);
    assert_eq!(sink.get(MetricKey::RequestBytes), stream.len() as i64 + 50);
}

#[test]
fn negative_size_is_a_framing_error() {
    let mut conn = KafkaConnection::new(1, Rc::new(Config::default()));
    let mut sink = RecordingSink::default();
    let v = conn.on_response_data(&mut &(-2i32).to_be_bytes()[..], || 0, &mut sink);
    assert_eq!(v, Verdict::Close);
    assert_eq!(sink.get(MetricKey::FramesInvalidSize), 1);
}

#[test]
fn garbage_never_panics() {
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..2000 {
        let len = (next() % 400) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Keep size fields plausible half of the time so frames get parsed, not just rejected.
        if round % 2 == 0 && data.len() > 4 {
            let size = ((data.len() - 4) as i32).to_be_bytes();
            data[..4].copy_from_slice(&size);
        }
        let policy = if round % 3 == 0 {
            FrameErrorPolicy::PassThrough
        } else {
            FrameErrorPolicy::Close
        };
        let mut conn = KafkaConnection::new(
            1,
            Rc::new(Config {
                max_frame_bytes: 1024,
                on_frame_error: policy,
                ..Config::default()
            }),
        );
        let mut sink = RecordingSink::default();
        let chunk = 1 + (next() % 50) as usize;
        for c in data.chunks(chunk) {
            let (t1, t2) = (next(), next());
            conn.on_request_data(&mut &c[..], || t1, &mut sink);
            conn.on_response_data(&mut &c[..], || t2, &mut sink);
        }
    }
}

#[test]
fn every_single_byte_corruption_of_a_real_exchange_is_survived() {
    let ex = sample_exchange();
    // Truncate the large produce so the sweep stays quick; framing still covers every field.
    let requests = &ex.requests[..ex.requests.len().min(8000)];
    for at in 0..requests.len().min(2000) {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut data = requests.to_vec();
            data[at] ^= flip;
            let mut conn = KafkaConnection::new(1, Rc::new(Config::default()));
            let mut sink = RecordingSink::default();
            for c in data.chunks(7) {
                conn.on_request_data(&mut &c[..], || 0, &mut sink);
            }
            let mut responses = ex.responses.clone();
            let r_at = at % responses.len();
            responses[r_at] ^= flip;
            for c in responses.chunks(5) {
                conn.on_response_data(&mut &c[..], || 1, &mut sink);
            }
            conn.flush(&mut sink);
            // Whatever happened, every byte was accounted for.
            assert_eq!(sink.get(MetricKey::RequestBytes), data.len() as i64);
            assert_eq!(sink.get(MetricKey::ResponseBytes), responses.len() as i64);
        }
    }
}
