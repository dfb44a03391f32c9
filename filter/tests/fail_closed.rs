//! Connections under a rule fail closed, and what a stage needs whole is held only within
//! bounds: frames too large to hold, or that do not fit the VM's budget, are refused as they
//! stream through, never collected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::{drive, frame, request_from as request, response};
use kafka_filter::codec::source::CountingSource;
use kafka_filter::codec::ByteSource;
use kafka_filter::config::{self, Config};
use kafka_filter::connection::{KafkaConnection, Verdict};
use kafka_filter::metrics::{MetricKey, RecordingSink};
use kafka_filter::pipeline::held::HeldBudget;
use kafka_filter::pipeline::refusal::substitute_request;
use kafka_filter::pipeline::ClientSoftware;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

const TENANTS: &str = r#"{"rules": [
    {"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}}
]}"#;

fn config(json: &str) -> Rc<Config> {
    Rc::new(config::parse(json.as_bytes()).unwrap())
}

fn metadata(corr: i32, client: &str) -> Vec<u8> {
    let body = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str("events"))))]));
    request(ApiKey::Metadata, 12, corr, client, &body)
}

fn multi_topic_produce(corr: i32, client: &str, payload: usize) -> Vec<u8> {
    let topic = |name: &'static str| {
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_records(Some(Bytes::from(vec![7u8; payload / 2])))])
    };
    let body = ProduceRequest::default()
        .with_acks(1)
        .with_topic_data(vec![topic("a"), topic("b")]);
    request(ApiKey::Produce, 9, corr, client, &body)
}

/// With stages configured every response is handled as its request's (names mapped back, topics
/// hidden, throttles raised), whether or not this client is under a rule: one that answers
/// nothing known closes the connection. Only observed, it passes.
#[test]
fn an_unmatched_response_closes_a_connection_with_stages_and_passes_when_only_observed() {
    let stray = response(ApiKey::Metadata, 12, 99, &MetadataResponse::default());
    for (cfg, client, closes) in [
        (TENANTS, "team-a-app", true),
        (TENANTS, "other", true),
        ("{}", "team-a-app", false),
    ] {
        let mut conn = KafkaConnection::new(1, config(cfg));
        let mut m = RecordingSink::default();
        drive(&mut conn, &metadata(1, client), 1000, true, &mut m).unwrap();
        let fwd = drive(&mut conn, &stray, 7, false, &mut m);
        assert_eq!(fwd.is_none(), closes, "{cfg} {client}");
        if !closes {
            assert_eq!(fwd.unwrap(), stray);
        }
        assert_eq!(m.get(MetricKey::ResponsesUnmatched), 1);
    }
}

#[test]
fn unframeable_streams_close_under_a_rule_even_before_the_first_request() {
    let cfg = r#"{"max_frame_bytes": 2048, "rules": [
        {"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}}]}"#;
    let oversized = frame(&vec![0u8; 4096]);
    let negative = (-3i32).to_be_bytes().to_vec();
    for bad in [&oversized, &negative] {
        // First thing on the connection, and after a request under the rule.
        for before in [Vec::new(), metadata(1, "team-a-app")] {
            let mut conn = KafkaConnection::new(1, config(cfg));
            let mut m = RecordingSink::default();
            let mut stream = before.clone();
            stream.extend_from_slice(bad);
            assert_eq!(drive(&mut conn, &stream, 1000, true, &mut m), None);
            assert_eq!(m.get(MetricKey::ConnectionsClosedByPolicy), 1);
            assert_eq!(m.get(MetricKey::ConnectionsBypassed), 0);
        }
        // The response stream too.
        let mut conn = KafkaConnection::new(1, config(cfg));
        let mut m = RecordingSink::default();
        drive(&mut conn, &metadata(1, "team-a-app"), 1000, true, &mut m).unwrap();
        assert_eq!(drive(&mut conn, bad, 1000, false, &mut m), None);
    }
}

/// A host buffer that cannot be read.
struct Unreadable(usize);

impl ByteSource for Unreadable {
    fn len(&self) -> usize {
        self.0
    }

    fn copy_into(&mut self, _: usize, _: usize, _: &mut Vec<u8>) -> bool {
        false
    }
}

#[test]
fn a_host_read_error_closes_under_a_rule_and_passes_elsewhere() {
    for (cfg, closes) in [(TENANTS, true), ("{}", false)] {
        let mut conn = KafkaConnection::new(1, config(cfg));
        let mut m = RecordingSink::default();
        let v = conn.on_request_data(&mut Unreadable(100), || 0, &mut m);
        assert_eq!(v == Verdict::Close, closes, "{cfg}");
        assert_eq!(m.get(MetricKey::HostReadErrors), 1);
        // And it stays that way.
        let later = conn.on_request_data(&mut metadata(2, "x").as_slice(), || 0, &mut m);
        assert_eq!(later == Verdict::Close, closes);
    }
}

#[test]
fn a_refused_request_streams_through_without_being_held() {
    // AlterConfigs cannot be rewritten: refused at its header. 20 MiB of body follow.
    let body_len = 20 << 20;
    let mut head = Vec::new();
    head.extend_from_slice(&(ApiKey::AlterConfigs as i16).to_be_bytes());
    head.extend_from_slice(&2i16.to_be_bytes());
    head.extend_from_slice(&5i32.to_be_bytes());
    let client = b"team-a-app";
    head.extend_from_slice(&(client.len() as i16).to_be_bytes());
    head.extend_from_slice(client);
    head.push(0); // header v2 tagged fields
    let mut stream = ((head.len() + body_len) as i32).to_be_bytes().to_vec();
    stream.extend_from_slice(&head);
    stream.resize(4 + head.len() + body_len, 0xab);

    let mut conn = KafkaConnection::new(1, config(TENANTS));
    let mut m = RecordingSink::default();
    let mut forwarded = Vec::new();
    let mut copied = 0;
    for chunk in stream.chunks(64 * 1024) {
        let mut src = CountingSource::new(chunk);
        match conn.on_request_data(&mut src, || 0, &mut m) {
            Verdict::Continue => forwarded.extend_from_slice(chunk),
            Verdict::Rewrite { prefix_len, bytes } => {
                forwarded.extend_from_slice(&bytes);
                forwarded.extend_from_slice(&chunk[prefix_len..]);
            }
            Verdict::Close => panic!("closed"),
        }
        copied += src.copied;
    }
    assert_eq!(forwarded, substitute_request(5));
    assert!(copied < 4096, "{copied} bytes copied into the filter");
    assert_eq!(m.get(MetricKey::RewriteRefused), 1);
    // The broker's answer to the substitute becomes the refusal.
    let answer = response(ApiKey::ApiVersions, 0, 5, &ApiVersionsResponse::default());
    let fwd = drive(&mut conn, &answer, 3, false, &mut m).unwrap();
    let mut b = Bytes::copy_from_slice(&fwd[4..]);
    assert_eq!(ResponseHeader::decode(&mut b, 1).unwrap().correlation_id, 5);
    let resp = AlterConfigsResponse::decode(&mut b, 2).unwrap();
    assert_eq!(resp.responses.len(), 0);
}

/// The filter's answer to a refused Produce v9: a Produce response for the same correlation id.
/// Produce responses carry errors per partition only and the refused frame was never read, so
/// it lists none: the client sees its partitions unanswered and retries or fails them.
fn assert_produce_refused(fwd: &[u8], corr: i32) {
    let mut b = Bytes::copy_from_slice(&fwd[4..]);
    assert_eq!(
        ResponseHeader::decode(&mut b, 1).unwrap().correlation_id,
        corr
    );
    let resp = ProduceResponse::decode(&mut b, 9).unwrap();
    assert!(resp.responses.is_empty(), "{resp:?}");
}

#[test]
fn a_frame_larger_than_max_held_frame_bytes_is_refused_as_it_streams() {
    let cfg = r#"{"max_held_frame_bytes": 1048576, "rules": [
        {"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}}]}"#;
    let big = multi_topic_produce(3, "team-a-app", 3 << 20);
    let mut conn = KafkaConnection::new(1, config(cfg));
    let mut m = RecordingSink::default();
    for chunk in [7, 1000, 65536] {
        let mut conn2 = KafkaConnection::new(1, config(cfg));
        let fwd = drive(&mut conn2, &big, chunk, true, &mut m).unwrap();
        assert_eq!(fwd, substitute_request(3), "chunks of {chunk}");
    }
    let fwd = drive(&mut conn, &big, 65536, true, &mut m).unwrap();
    assert_eq!(fwd, substitute_request(3));
    assert_eq!(m.get(MetricKey::HeldFrameTooLarge), 4);
    let answer = response(ApiKey::ApiVersions, 0, 3, &ApiVersionsResponse::default());
    let fwd = drive(&mut conn, &answer, 5, false, &mut m).unwrap();
    assert_produce_refused(&fwd, 3);
}

#[test]
fn the_held_bytes_budget_is_shared_by_the_connections_of_a_vm() {
    let cfg = config(
        r#"{"max_held_frame_bytes": 1048576, "max_held_bytes": 1572864, "rules": [
        {"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}}]}"#,
    );
    let budget = HeldBudget::new(cfg.max_held_bytes);
    let frame1 = multi_topic_produce(1, "team-a-one", 1_000_000);
    let frame2 = multi_topic_produce(1, "team-a-two", 1_000_000);
    let mut m = RecordingSink::default();
    let mut one = KafkaConnection::with_budget(1, cfg.clone(), budget.clone());
    let mut two = KafkaConnection::with_budget(2, cfg.clone(), budget.clone());
    // The first connection is half-way through a frame it holds.
    let half = frame1.len() / 2;
    assert_eq!(
        drive(&mut one, &frame1[..half], 65536, true, &mut m).unwrap(),
        Vec::<u8>::new()
    );
    assert_eq!(budget.in_use(), frame1.len());
    // The second does not fit: refused, not held.
    let fwd = drive(&mut two, &frame2, 65536, true, &mut m).unwrap();
    assert_eq!(fwd, substitute_request(1));
    assert_eq!(m.get(MetricKey::HeldBudgetExhausted), 1);
    let answer = response(ApiKey::ApiVersions, 0, 1, &ApiVersionsResponse::default());
    let refused = drive(&mut two, &answer, 100, false, &mut m).unwrap();
    assert_produce_refused(&refused, 1);
    // The first finishes: rewritten, and its share given back.
    let rest = drive(&mut one, &frame1[half..], 65536, true, &mut m).unwrap();
    assert!(rest.len() > frame1.len(), "rewritten with prefixed names");
    assert_eq!(budget.in_use(), 0);
    // A connection that goes away mid-frame gives its share back too.
    let mut three = KafkaConnection::with_budget(3, cfg, budget.clone());
    drive(&mut three, &frame1[..half], 65536, true, &mut m).unwrap();
    assert_eq!(budget.in_use(), frame1.len());
    drop(three);
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn the_client_software_is_read_from_api_versions() {
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("librdkafka"))
        .with_client_software_version(StrBytes::from_static_str("2.16.1"));
    let req = request(ApiKey::ApiVersions, 3, 1, "app", &body);
    for cfg in ["{}", TENANTS] {
        for chunk in [1, 5, 1000] {
            let mut conn = KafkaConnection::new(1, config(cfg));
            let mut m = RecordingSink::default();
            let fwd = drive(&mut conn, &req, chunk, true, &mut m).unwrap();
            assert_eq!(fwd, req);
            assert_eq!(
                conn.identity().software,
                Some(ClientSoftware {
                    name: "librdkafka".into(),
                    version: "2.16.1".into()
                }),
                "{cfg} chunks of {chunk}"
            );
            assert_eq!(conn.client_id(), Some("app"));
        }
    }
}

#[test]
fn a_request_whose_header_or_body_does_not_decode_never_reaches_the_broker_under_rules() {
    // Found by fuzzing: a first request under no rule, then a Metadata v12 request from the
    // canary's client id whose header carries tagged fields and whose body is empty. Its header
    // was taken as undecodable, so it inherited the earlier request's rule (none) and reached the
    // broker as it was. Now the header decodes, the rule applies, and the empty body is refused.
    let canary = r#"{"rules": [{"name": "c", "match": {"client_id": {"exact": "checkout-canary"}},
        "topics": {"map": {"orders": "orders-canary"}}, "groups": {"add_suffix": "-canary"}}]}"#;
    let first = request(
        ApiKey::ApiVersions,
        3,
        1,
        "checkout-Canary",
        &ApiVersionsRequest::default(),
    );
    let mut bad = Vec::new();
    bad.extend_from_slice(&(ApiKey::Metadata as i16).to_be_bytes());
    bad.extend_from_slice(&12i16.to_be_bytes());
    bad.extend_from_slice(&2i32.to_be_bytes());
    bad.extend_from_slice(&15i16.to_be_bytes());
    bad.extend_from_slice(b"checkout-canary");
    bad.extend_from_slice(&[2, 0, 0, 0, 0]); // two empty tagged fields, then no body
    let mut stream = first.clone();
    stream.extend(frame(&bad));
    let mut refused = first.clone();
    refused.extend(substitute_request(2));
    for chunk in [1, 7, 1000] {
        let mut conn = KafkaConnection::new(1, config(canary));
        let mut m = RecordingSink::default();
        let fwd = drive(&mut conn, &stream, chunk, true, &mut m);
        assert_eq!(fwd, Some(refused.clone()), "chunks of {chunk}");
        // Without rules it is forwarded, as every malformed request is.
        let mut conn = KafkaConnection::new(1, config("{}"));
        assert_eq!(
            drive(&mut conn, &stream, chunk, true, &mut m),
            Some(stream.clone())
        );
    }
    // A header that cannot decode at all (a negative tag count length) closes under rules.
    let mut broken = Vec::new();
    broken.extend_from_slice(&(ApiKey::Metadata as i16).to_be_bytes());
    broken.extend_from_slice(&12i16.to_be_bytes());
    broken.extend_from_slice(&3i32.to_be_bytes());
    broken.extend_from_slice(&(-7i16).to_be_bytes());
    broken.extend_from_slice(&[0u8; 20]);
    let mut stream = first;
    stream.extend(frame(&broken));
    let mut conn = KafkaConnection::new(1, config(canary));
    let mut m = RecordingSink::default();
    assert_eq!(drive(&mut conn, &stream, 1000, true, &mut m), None);
}

#[test]
fn header_tagged_fields_split_across_chunks_still_decode_and_the_rule_applies() {
    // Found by fuzzing: a header v2 whose tagged fields did not fit in the bytes first shown was
    // taken as undecodable (kafka-protocol's varint reports `TryGetError`), so the rule did not
    // apply to the connection's first request. Tag 7 carries 200 bytes.
    let mut header = Vec::new();
    header.extend_from_slice(&(ApiKey::Metadata as i16).to_be_bytes());
    header.extend_from_slice(&12i16.to_be_bytes());
    header.extend_from_slice(&1i32.to_be_bytes());
    header.extend_from_slice(&10i16.to_be_bytes());
    header.extend_from_slice(b"team-a-app");
    header.extend_from_slice(&[1, 7, 0x80 | (200 & 0x7f), 200 >> 7]);
    header.extend(std::iter::repeat_n(0u8, 200));
    // Metadata v12 body: topics [ {topic_id zero, name "events"} ], auto-create false,
    // include topic authorized operations false, no tagged fields.
    let mut body = vec![2];
    body.extend_from_slice(&[0u8; 16]);
    body.push(7);
    body.extend_from_slice(b"events");
    body.push(0);
    body.extend_from_slice(&[0, 0, 0]);
    let mut frame_body = header;
    frame_body.extend_from_slice(&body);
    let stream = frame(&frame_body);
    for chunk in [1, 13, 4096] {
        let mut conn = KafkaConnection::new(1, config(TENANTS));
        let mut m = RecordingSink::default();
        let fwd = drive(&mut conn, &stream, chunk, true, &mut m).expect("closed");
        assert_eq!(m.get(MetricKey::RewriteRequests), 1, "chunks of {chunk}");
        assert!(
            fwd.windows(b"team-a.events".len())
                .any(|w| w == b"team-a.events"),
            "chunks of {chunk}: not mapped"
        );
    }
}

/// Found by fuzzing: a client under no rule, then the same connection's next request under a
/// rule, still undecided (its head is waiting for more bytes), when a response with an unknown
/// correlation id arrives.
#[test]
fn an_unmatched_response_closes_once_a_request_under_a_rule_has_been_seen() {
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let client = hex(concat!(
        "000000670003000c0000000700087465612d6d612d7808030000000e0000000000000000006a0000393939",
        "3939390000000bf8003c0000890100000d0000000500004500000000000019ff00000400001a000000040000",
        "20000000040000100000000500000000090000240000000000330000000000090000000300087465616d2d",
        "612d7800ffffffff0003076576656e74730300000000fffffffffffffffffffffffe000002002d19000200",
        "32006d2d612d2d782b000000050000000000020a7465616d2d622e670000590131312d612d00a4bcbcbcbc",
        "bcbcbcbcbc46bcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbc000001ff6d2d7f7f7f7f7f7f7f7f7f7f",
        "7f7fadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadad",
        "adadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadad7800",
        "17636f6e66ff6c75656e742d6b61666b612d70bcbcff79746800000016000e000400000001ffff00026600",
        "000000026d000100"
    ));
    let broker = hex(concat!(
        "000000290000000700000000000000020000000020000000000000000000002000077465616d2d612e0000",
        "00000000007f322e31362e300003011b00000001000025004b00616d2d612d780000000000000000000000",
        "000000ffffffffffff7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f",
        "050000000004020a74653000000a00ced1302ed500238400000000ff000000ced1302ed5007465616d2d61",
        "ffffff2d"
    ));
    let cfg = config(TENANTS);
    let mut conn = KafkaConnection::new(1, cfg);
    let mut m = RecordingSink::default();
    // After its Metadata request the stream held a 2-byte request frame, which now closes the
    // connection by itself (no correlation id to pair its answer with): left out, so that the
    // response is the test. The next frame's first bytes stay unread, as in the finding.
    let first = 4 + 0x67;
    let client = [&client[..first], &client[client.len() - 2..]].concat();
    assert!(drive(&mut conn, &client, 13, true, &mut m).is_some());
    let back = drive(&mut conn, &broker, 5, false, &mut m);
    // The matched Metadata response passes; the unknown one must never reach the client.
    assert!(
        back.is_none(),
        "the connection must close, got {:?}",
        back.map(|b| b.len())
    );
    assert_eq!(m.get(MetricKey::ResponsesUnmatched), 1);
}
