//! Instructions the core spends per Produce request, for `make bench` (run under callgrind).
//!
//! `core_cost <payload_bytes> <requests> [chunk_bytes] [rule]` feeds `requests` Produce requests
//! of `payload_bytes` record data to topic `bench`, and their responses, through one connection,
//! in chunks of `chunk_bytes` (Envoy reads a socket 16 KiB at a time until it drains or the
//! connection's buffer limit is reached, then hands the filter everything read so far).
//! Running it twice with different `requests` and dividing the difference of the instruction
//! totals gives the per-request cost, free of setup. The record bytes are opaque to the filter,
//! so their content does not matter. With `rule` (the literal word), a name conversion rule maps
//! `bench` to `bench-physical`: every request and response is then held and rewritten.
//!
//! A fourth argument `clients` keeps per-client metrics (the Produce request is walked); `acls`
//! checks every request against the ACL policy of `make bench`'s all-features row.
//! `core_cost small <requests> [chunk_bytes] [rule]` does the same with the `small` workload of
//! `make bench` instead: a Metadata v12 request for one topic and an ApiVersions v3 request,
//! alternating (`requests` counts both).

use std::rc::Rc;

use bytes::BytesMut;
use kafka_filter::codec::source::CountingSource;
use kafka_filter::config::{self, Config};
use kafka_filter::connection::KafkaConnection;
use kafka_filter::metrics::{CounterBatch, MetricKey, MetricsSink};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

const VERSION: i16 = 9;

/// The ACL policy of `make bench`'s all-features row, for this example's client ids.
const ACLS: &[u8] = br#"{"acls": {"default": "deny", "entries": [
    {"match": {"client_id": {"prefix": "bench-"}}, "permission": "allow", "operations": ["All"], "resource_type": "topic", "name": "bench"},
    {"match": {"client_id": {"prefix": "bench-"}}, "permission": "allow", "operations": ["All"], "resource_type": "group", "pattern_type": "any"},
    {"match": {"client_id": {"prefix": "intruder-"}}, "permission": "deny", "operations": ["All"], "resource_type": "topic", "pattern_type": "any"}]}}"#;

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

/// Keeps counters in a flat array, as the wasm host keeps metric ids: the cost measured is the
/// core's, not a hash map's.
struct FlatSink(Vec<i64>, usize);

impl MetricsSink for FlatSink {
    fn add(&mut self, key: MetricKey, delta: i64) {
        if !CounterBatch::holds(key) {
            self.1 += 1;
        }
        if let Some(v) = self.0.get_mut(key.index()) {
            *v += delta;
        }
    }

    fn add_named(&mut self, _: &str, _: i64) {
        self.1 += 1;
    }

    fn gauge_named(&mut self, _: &str, _: i64) {
        self.1 += 1;
    }

    fn record_named(&mut self, _: &str, _: u64) {
        self.1 += 1;
    }

    fn set_gauge_named(&mut self, _: &str, _: u64) {
        self.1 += 1;
    }

    fn record(&mut self, key: MetricKey, value: u64) {
        self.1 += 1;
        if let Some(v) = self.0.get_mut(key.index()) {
            *v = v.wrapping_add(value as i64);
        }
    }
}

/// One request and its response through the core, the request in `chunk`-sized reads. The
/// benchmark counts instructions inside the core's two entry points only (callgrind
/// `--toggle-collect` on `KafkaConnection::on_request_data` and `on_response_data`): the
/// harness's own loop and byte sources are not the filter's cost.
#[inline(never)]
fn exchange(
    conn: &mut KafkaConnection,
    sink: &mut FlatSink,
    frame: &[u8],
    chunk: usize,
    response: &[u8],
    now: u64,
) -> (usize, usize) {
    let (mut copied, mut reads) = (0, 0);
    for part in frame.chunks(chunk) {
        let mut src = CountingSource::new(part);
        conn.on_request_data(&mut src, || now, sink);
        copied += src.copied;
        reads += src.reads;
    }
    let mut src = CountingSource::new(response);
    conn.on_response_data(&mut src, || now + 1, sink);
    (copied + src.copied, reads + src.reads)
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// A frame: size field, header, body.
fn framed<H: Encodable, B: Encodable>(
    header: &H,
    header_version: i16,
    body: &B,
    version: i16,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut b = BytesMut::new();
    header.encode(&mut b, header_version)?;
    body.encode(&mut b, version)?;
    let mut frame = i32::try_from(b.len())?.to_be_bytes().to_vec();
    frame.extend_from_slice(&b);
    Ok(frame)
}

/// The `small` workload's two exchanges, as `make bench` sends them (bench/src: Metadata v12
/// for one topic, ApiVersions v3 with the client's software name), and a broker's answers.
/// A request frame and its response frame.
type Exchange = (Vec<u8>, Vec<u8>);

fn small_exchanges(rule: bool) -> Result<Vec<Exchange>, Box<dyn std::error::Error>> {
    let header = |key: ApiKey, v: i16| {
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(v)
            .with_client_id(Some(StrBytes::from_static_str("bench-small")))
    };
    let metadata = framed(
        &header(ApiKey::Metadata, 12),
        ApiKey::Metadata.request_header_version(12),
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic("bench")))
        ])),
        12,
    )?;
    let physical = topic(if rule { "bench-physical" } else { "bench" });
    let metadata_response = framed(
        &ResponseHeader::default(),
        ApiKey::Metadata.response_header_version(12),
        &MetadataResponse::default().with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(physical))
            .with_partitions(
                (0..4)
                    .map(|p| MetadataResponsePartition::default().with_partition_index(p))
                    .collect(),
            )]),
        12,
    )?;
    let versions = framed(
        &header(ApiKey::ApiVersions, 3),
        ApiVersionsRequest::header_version(3),
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kafka-bench"))
            .with_client_software_version(StrBytes::from_static_str("1.0")),
        3,
    )?;
    let versions_response = framed(
        &ResponseHeader::default(),
        ApiKey::ApiVersions.response_header_version(3),
        &ApiVersionsResponse::default().with_api_keys(
            (0..75)
                .map(|k| ApiVersion::default().with_api_key(k).with_max_version(9))
                .collect(),
        ),
        3,
    )?;
    Ok(vec![
        (metadata, metadata_response),
        (versions, versions_response),
    ])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("small") {
        return small_main();
    }
    let payload = arg(1, 1024);
    let requests = arg(2, 100);
    let chunk = arg(3, 64 * 1024).max(1);

    let rule = std::env::args().nth(4).as_deref() == Some("rule");

    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(VERSION)
        .with_client_id(Some(StrBytes::from_static_str("bench-producer")))
        .encode(&mut body, ApiKey::Produce.request_header_version(VERSION))?;
    ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic("bench"))
            .with_partition_data(vec![
                PartitionProduceData::default().with_records(Some(vec![0x42; payload].into()))
            ])])
        .encode(&mut body, VERSION)?;
    let mut frame = i32::try_from(body.len())?.to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let correlation_at = 4 + 4;

    // The broker's answer names the physical topic when the rule is on.
    let mut resp = BytesMut::new();
    ResponseHeader::default()
        .encode(&mut resp, ApiKey::Produce.response_header_version(VERSION))?;
    ProduceResponse::default()
        .with_responses(vec![TopicProduceResponse::default()
            .with_name(topic(if rule { "bench-physical" } else { "bench" }))
            .with_partition_responses(vec![PartitionProduceResponse::default()])])
        .encode(&mut resp, VERSION)?;
    let mut response = i32::try_from(resp.len())?.to_be_bytes().to_vec();
    response.extend_from_slice(&resp);

    let config = if rule {
        config::parse(
            br#"{"rules": [{"name": "bench", "topics": {"map": {"bench": "bench-physical"}}, "groups": "unchanged"}]}"#,
        )?
    } else if std::env::args().nth(4).as_deref() == Some("clients") {
        // Per-client metrics: the request is walked for its topics (one partition, one batch).
        config::parse(br#"{"client_metrics": {}}"#)?
    } else if std::env::args().nth(4).as_deref() == Some("acls") {
        // ACLs: the request is decided from its names (the bench's policy).
        config::parse(ACLS)?
    } else {
        Config::default()
    };
    let mut conn = KafkaConnection::new(1, Rc::new(config));
    let mut sink = FlatSink(vec![0; MetricKey::COUNT], 0);
    let (mut copied, mut reads) = (0usize, 0usize);
    for i in 0..requests {
        let id = i32::try_from(i)?;
        if let Some(c) = frame.get_mut(correlation_at..correlation_at + 4) {
            c.copy_from_slice(&id.to_be_bytes());
        }
        if let Some(c) = response.get_mut(4..8) {
            c.copy_from_slice(&id.to_be_bytes());
        }
        let (c, r) = exchange(&mut conn, &mut sink, &frame, chunk, &response, i as u64);
        copied += c;
        reads += r;
    }
    let rewritten = sink
        .0
        .get(MetricKey::RewriteRequests.index())
        .copied()
        .unwrap_or(0);
    if rule && rewritten != i64::try_from(requests)? {
        return Err(format!("only {rewritten} of {requests} requests were rewritten").into());
    }
    println!(
        "payload={payload} requests={requests} chunk={chunk} rule={rule} bytes_copied_per_request={} \
         host_reads_per_request={:.2}",
        copied / requests.max(1),
        reads as f64 / requests.max(1) as f64
    );
    Ok(())
}

fn small_main() -> Result<(), Box<dyn std::error::Error>> {
    let requests = arg(2, 100);
    let chunk = arg(3, 64 * 1024).max(1);
    let rule = std::env::args().nth(4).as_deref() == Some("rule");
    let config = if rule {
        config::parse(
            br#"{"rules": [{"name": "bench", "topics": {"map": {"bench": "bench-physical"}}, "groups": "unchanged"}]}"#,
        )?
    } else {
        Config::default()
    };
    let mut exchanges = small_exchanges(rule)?;
    let mut conn = KafkaConnection::new(1, Rc::new(config));
    let mut sink = FlatSink(vec![0; MetricKey::COUNT], 0);
    let mut reads = 0usize;
    for i in 0..requests {
        let id = i32::try_from(i)?.to_be_bytes();
        let n = exchanges.len();
        let Some((request, response)) = exchanges.get_mut(i % n) else {
            break;
        };
        if let Some(c) = request.get_mut(8..12) {
            c.copy_from_slice(&id);
        }
        if let Some(c) = response.get_mut(4..8) {
            c.copy_from_slice(&id);
        }
        let (_, r) = exchange(&mut conn, &mut sink, request, chunk, response, i as u64);
        reads += r;
    }
    let count = |key: MetricKey| sink.0.get(key.index()).copied().unwrap_or(0);
    let answered = count(MetricKey::Responses(Some(ApiKey::Metadata)))
        + count(MetricKey::Responses(Some(ApiKey::ApiVersions)));
    if answered != i64::try_from(requests)? {
        return Err(format!("only {answered} of {requests} responses were matched").into());
    }
    println!(
        "small requests={requests} chunk={chunk} rule={rule} host_reads={reads} metric_host_calls={}",
        sink.1
    );
    Ok(())
}
