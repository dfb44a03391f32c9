//! Name conversion through the whole sans-io connection, driven like Envoy drives it: every
//! chunking of a real exchange, with the connection's verdicts applied to the chunks the way the
//! wasm host applies them (prefix replacement), and the forwarded bytes decoded again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::{drive, frame, offering, request_from as request, response};
use kafka_filter::codec::source::CountingSource;
use kafka_filter::config::{self, Config};
use kafka_filter::connection::{KafkaConnection, Verdict};
use kafka_filter::metrics::{MetricKey, RecordingSink};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

const TENANTS: &str = r#"{"rules": [
    {"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}}
]}"#;

/// The canary of `checkout` writes `orders` to `orders-canary`, in groups of its own.
const CANARY: &str = r#"{"rules": [{"name": "c", "match": {"client_id": {"exact": "checkout-canary"}},
    "topics": {"map": {"orders": "orders-canary"}}, "groups": {"add_suffix": "-canary"}}]}"#;

fn config(json: &str) -> Rc<Config> {
    Rc::new(config::parse(json.as_bytes()).unwrap())
}

/// Split a stream of frames into (header-stripped) bodies given the header version of each.
fn frames(stream: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let len = i32::from_be_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
        out.push(Bytes::copy_from_slice(&stream[at + 4..at + 4 + len]));
        at += 4 + len;
    }
    assert_eq!(at, stream.len(), "stream ends inside a frame");
    out
}

fn topic_names_req(t: &[&str]) -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(
        t.iter()
            .map(|n| {
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
            })
            .collect(),
    ))
}

fn metadata_resp(t: &[&str]) -> MetadataResponse {
    MetadataResponse::default().with_topics(
        t.iter()
            .map(|n| {
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
            })
            .collect(),
    )
}

/// The request stream and the response stream as forwarded, for every chunk size given.
fn exchange(
    cfg: &Rc<Config>,
    reqs: &[u8],
    resps: &[u8],
    chunks: &[usize],
) -> Vec<(Vec<u8>, Vec<u8>, RecordingSink)> {
    chunks
        .iter()
        .map(|&c| {
            let mut conn = KafkaConnection::new(1, cfg.clone());
            let mut m = RecordingSink::default();
            let fwd_req = drive(&mut conn, reqs, c, true, &mut m).expect("request side closed");
            let fwd_resp = drive(&mut conn, resps, c, false, &mut m).expect("response side closed");
            (fwd_req, fwd_resp, m)
        })
        .collect()
}

fn all_chunk_sizes(len: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (1..40).collect();
    v.extend([97, 500, len]);
    v
}

#[test]
fn a_client_under_no_rule_is_forwarded_byte_exact() {
    let cfg = config(TENANTS);
    let mut reqs = request(
        ApiKey::Metadata,
        12,
        1,
        "other-client",
        &topic_names_req(&["events"]),
    );
    reqs.extend(request(
        ApiKey::ApiVersions,
        3,
        2,
        "other-client",
        &ApiVersionsRequest::default(),
    ));
    let mut resps = response(
        ApiKey::Metadata,
        12,
        1,
        &metadata_resp(&["events", "team-a.x"]),
    );
    resps.extend(response(
        ApiKey::ApiVersions,
        3,
        2,
        &ApiVersionsResponse::default(),
    ));
    for (fwd_req, fwd_resp, m) in exchange(&cfg, &reqs, &resps, &all_chunk_sizes(reqs.len())) {
        assert_eq!(fwd_req, reqs);
        assert_eq!(fwd_resp, resps);
        assert_eq!(m.get(MetricKey::RewriteRequests), 0);
    }
}

#[test]
fn a_tenant_sees_only_its_topics_without_the_prefix_under_any_chunking() {
    let cfg = config(TENANTS);
    let version = 12;
    let mut reqs = request(
        ApiKey::Metadata,
        version,
        7,
        "team-a-app",
        &topic_names_req(&["events"]),
    );
    reqs.extend(request(
        ApiKey::Metadata,
        version,
        8,
        "team-a-app",
        &MetadataRequest::default().with_topics(None),
    ));
    let mut resps = response(
        ApiKey::Metadata,
        version,
        7,
        &metadata_resp(&["team-a.events"]),
    );
    resps.extend(response(
        ApiKey::Metadata,
        version,
        8,
        &metadata_resp(&[
            "team-a.events",
            "team-b.secret",
            "__consumer_offsets",
            "team-a.logs",
        ]),
    ));
    let header_v = ApiKey::Metadata.request_header_version(version);
    let resp_header_v = ApiKey::Metadata.response_header_version(version);
    for (fwd_req, fwd_resp, m) in exchange(&cfg, &reqs, &resps, &all_chunk_sizes(reqs.len())) {
        let sent = frames(&fwd_req);
        assert_eq!(sent.len(), 2);
        let mut first = sent[0].clone();
        let h = RequestHeader::decode(&mut first, header_v).unwrap();
        assert_eq!(h.correlation_id, 7);
        let body = MetadataRequest::decode(&mut first, version).unwrap();
        assert_eq!(body, topic_names_req(&["team-a.events"]));
        let got = frames(&fwd_resp);
        assert_eq!(got.len(), 2);
        let names = |b: &Bytes| {
            let mut b = b.clone();
            ResponseHeader::decode(&mut b, resp_header_v).unwrap();
            MetadataResponse::decode(&mut b, version)
                .unwrap()
                .topics
                .iter()
                .map(|t| t.name.as_ref().unwrap().0.as_str().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&got[0]), vec!["events"]);
        assert_eq!(names(&got[1]), vec!["events", "logs"]);
        assert_eq!(m.get(MetricKey::RewriteRequests), 1);
        assert_eq!(m.get(MetricKey::RewriteResponses), 2);
        assert_eq!(m.get(MetricKey::Responses(Some(ApiKey::Metadata))), 2);
    }
}

#[test]
fn an_api_the_filter_cannot_rewrite_is_refused_with_a_kafka_error() {
    let cfg = config(TENANTS);
    let v = 1;
    let reqs = request(
        ApiKey::DescribeLogDirs,
        v,
        42,
        "team-a-app",
        &DescribeLogDirsRequest::default(),
    );
    for chunk in all_chunk_sizes(reqs.len()) {
        let mut conn = KafkaConnection::new(1, cfg.clone());
        let mut m = RecordingSink::default();
        let fwd = drive(&mut conn, &reqs, chunk, true, &mut m).unwrap();
        // The broker gets an ApiVersions v0 request with the same correlation id instead.
        let sent = frames(&fwd);
        assert_eq!(sent.len(), 1);
        let mut b = sent[0].clone();
        let h = RequestHeader::decode(&mut b, 1).unwrap();
        assert_eq!(
            (h.request_api_key, h.request_api_version, h.correlation_id),
            (18, 0, 42)
        );
        assert!(b.is_empty());
        // Its answer becomes a DescribeLogDirs error response.
        let broker = response(ApiKey::ApiVersions, 0, 42, &ApiVersionsResponse::default());
        let back = drive(&mut conn, &broker, chunk, false, &mut m).unwrap();
        let got = frames(&back);
        let mut b = got[0].clone();
        let h = ResponseHeader::decode(&mut b, ApiKey::DescribeLogDirs.response_header_version(v))
            .unwrap();
        assert_eq!(h.correlation_id, 42);
        let resp = DescribeLogDirsResponse::decode(&mut b, v).unwrap();
        assert!(resp.results.is_empty());
        assert_eq!(m.get(MetricKey::RewriteRefused), 1);
        assert_eq!(
            m.get(MetricKey::Responses(Some(ApiKey::DescribeLogDirs))),
            1
        );
    }
}

#[test]
fn api_versions_advertise_only_what_can_be_rewritten() {
    let cfg = config(TENANTS);
    let v = 3;
    let reqs = request(
        ApiKey::ApiVersions,
        v,
        1,
        "team-a-app",
        &ApiVersionsRequest::default(),
    );
    let broker = offering(&[
        (ApiKey::Produce as i16, 3, 99),
        (ApiKey::Metadata as i16, 0, 12),
        (ApiKey::ApiVersions as i16, 0, 4),
        (ApiKey::DescribeLogDirs as i16, 0, 4),
        (9999, 0, 3),
    ]);
    let resps = response(ApiKey::ApiVersions, v, 1, &broker);
    for (fwd_req, fwd_resp, _) in exchange(&cfg, &reqs, &resps, &[1, 5, reqs.len()]) {
        assert_eq!(fwd_req, reqs);
        let mut b = frames(&fwd_resp)[0].clone();
        ResponseHeader::decode(&mut b, 0).unwrap();
        let got = ApiVersionsResponse::decode(&mut b, v).unwrap();
        let keys: Vec<(i16, i16, i16)> = got
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        let produce_max = ApiKey::Produce.valid_versions().max;
        assert_eq!(keys, vec![(0, 3, produce_max), (3, 0, 12), (18, 0, 4)]);
    }
}

#[test]
fn garbage_under_a_rule_never_panics() {
    let cfg = config(TENANTS);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let good = request(
        ApiKey::Metadata,
        12,
        7,
        "team-a-app",
        &topic_names_req(&["events"]),
    );
    for round in 0..3000 {
        let mut bytes = good.clone();
        // Corrupt a few bytes, sometimes truncate, sometimes append noise.
        for _ in 0..(1 + next() % 4) {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        if round % 3 == 0 {
            bytes.truncate((next() as usize) % bytes.len());
        }
        if round % 5 == 0 {
            bytes.extend((0..(next() % 64)).map(|_| next() as u8));
        }
        let mut conn = KafkaConnection::new(1, cfg.clone());
        let mut m = RecordingSink::default();
        let _ = drive(&mut conn, &bytes, 1 + (next() as usize) % 40, true, &mut m);
        let _ = drive(&mut conn, &bytes, 1 + (next() as usize) % 40, false, &mut m);
    }
}

/// A Produce request to one topic with `payload` opaque record bytes.
fn produce_body(topic: &str, txn: Option<&str>, payload: usize) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_transactional_id(txn.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(3)
                .with_records(Some(Bytes::from(vec![0x42u8; payload])))])])
}

#[test]
fn single_topic_produce_is_rewritten_from_its_head_and_records_are_not_copied() {
    let canary = config(CANARY);
    let tenants = config(TENANTS);
    // (config, client id, topic, transactional id, expected topic, expected transactional id)
    type Case<'a> = (
        &'a Rc<Config>,
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        (
            &canary,
            "checkout-canary",
            "orders",
            None,
            "orders-canary",
            None,
        ),
        (
            &canary,
            "checkout-canary",
            "orders",
            Some("tx"),
            "orders-canary",
            Some("tx-canary"),
        ),
        (&canary, "checkout-canary", "other", None, "other", None),
        (
            &tenants,
            "team-a-app",
            "events",
            Some("t1"),
            "team-a.events",
            Some("team-a.t1"),
        ),
        (
            &tenants,
            "team-a-app",
            &"e".repeat(200),
            None,
            &format!("team-a.{}", "e".repeat(200)),
            None,
        ),
    ];
    let payload = 200_000;
    for version in 3..=12 {
        for (cfg, client, topic, txn, want_topic, want_txn) in cases {
            let sent = request(
                ApiKey::Produce,
                version,
                9,
                client,
                &produce_body(topic, *txn, payload),
            );
            let want = request(
                ApiKey::Produce,
                version,
                9,
                client,
                &produce_body(want_topic, *want_txn, payload),
            );
            for chunk in [1usize, 7, 64, 1000, 16 * 1024, 64 * 1024, sent.len()] {
                if chunk < 64 && version % 3 != 0 {
                    continue; // byte-sized chunks of 200 KB: a few versions suffice
                }
                let mut conn = KafkaConnection::new(1, (*cfg).clone());
                let mut m = RecordingSink::default();
                let mut out = Vec::new();
                let mut copied = 0;
                for c in sent.chunks(chunk) {
                    let mut src = CountingSource::new(c);
                    match conn.on_request_data(&mut src, || 1, &mut m) {
                        Verdict::Continue => out.extend_from_slice(c),
                        Verdict::Rewrite { prefix_len, bytes } => {
                            out.extend_from_slice(&bytes);
                            out.extend_from_slice(&c[prefix_len..]);
                        }
                        Verdict::Close => panic!("closed"),
                    }
                    copied += src.copied;
                }
                assert!(
                    out == want,
                    "v{version} {topic} -> {want_topic}, chunks of {chunk}"
                );
                // Records stay in the host's buffer: what is read is the head, whatever the size.
                assert!(
                    copied < 2_000,
                    "v{version} chunks of {chunk}: {copied} bytes copied"
                );
                assert_eq!(
                    m.get(MetricKey::RewriteRequests),
                    i64::from(topic != want_topic)
                );
            }
        }
    }
}

#[test]
fn multi_topic_produce_is_held_whole_and_rewritten() {
    let cfg = config(TENANTS);
    let version = 9;
    let mut body = produce_body("a", None, 5000);
    body.topic_data
        .push(produce_body("b", None, 3000).topic_data.remove(0));
    let mut want = produce_body("team-a.a", None, 5000);
    want.topic_data
        .push(produce_body("team-a.b", None, 3000).topic_data.remove(0));
    let sent = request(ApiKey::Produce, version, 4, "team-a-x", &body);
    let want = request(ApiKey::Produce, version, 4, "team-a-x", &want);
    for (fwd, _, m) in exchange(&cfg, &sent, &[], &[1, 13, 999, sent.len()]) {
        assert!(fwd == want);
        assert_eq!(m.get(MetricKey::RewriteRequests), 1);
        assert!(m.get(MetricKey::RewriteBytesHeld) >= sent.len() as i64);
    }
}

#[test]
fn an_unknown_api_key_under_a_rule_closes_the_connection() {
    // API key 10000 v0 from a team-a client (header v1 layout), as a raw client sends it.
    let mut body = Vec::new();
    body.extend_from_slice(&10000i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&10i16.to_be_bytes());
    body.extend_from_slice(b"team-a-raw");
    body.extend_from_slice(&[0u8; 16]);
    let stream = frame(&body);
    for chunk in [1, 3, 11, stream.len()] {
        let mut conn = KafkaConnection::new(1, config(TENANTS));
        let mut m = RecordingSink::default();
        assert_eq!(
            drive(&mut conn, &stream, chunk, true, &mut m),
            None,
            "chunks of {chunk}"
        );
        assert_eq!(m.get(MetricKey::RewriteRefused), 1);
    }
    // The same bytes from a client under no rule pass untouched.
    let other = String::from_utf8(stream.clone())
        .unwrap()
        .replace("team-a-raw", "team-z-raw");
    let mut conn = KafkaConnection::new(1, config(TENANTS));
    let mut m = RecordingSink::default();
    assert_eq!(
        drive(&mut conn, other.as_bytes(), 5, true, &mut m),
        Some(other.into_bytes())
    );
}

fn fetch_req(topic: &str) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(500)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default().with_partition(0)])])
}

/// A Fetch response with `payload` opaque record bytes in each of two partitions of each topic.
fn fetch_resp(version: i16, topics: &[&str], payload: usize) -> FetchResponse {
    FetchResponse::default()
        .with_throttle_time_ms(if version >= 1 { 3 } else { 0 })
        .with_session_id(if version >= 7 { 77 } else { 0 })
        .with_responses(
            topics
                .iter()
                .map(|t| {
                    FetchableTopicResponse::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(
                            (0..2)
                                .map(|p| {
                                    PartitionData::default()
                                        .with_partition_index(p)
                                        .with_high_watermark(1000)
                                        .with_records(Some(Bytes::from(vec![0x17u8; payload])))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

#[test]
fn single_topic_fetch_response_is_mapped_from_its_head_and_records_are_not_copied() {
    let canary = config(CANARY);
    let tenants = config(TENANTS);
    // (config, client id, topic the client asks for, what the broker answers for, expected)
    let long = "e".repeat(200);
    let long_physical = format!("team-a.{long}");
    let cases: &[(&Rc<Config>, &str, &str, &str)] = &[
        (&canary, "checkout-canary", "orders", "orders-canary"),
        (&canary, "checkout-canary", "other", "other"),
        (&tenants, "team-a-app", "events", "team-a.events"),
        (&tenants, "team-a-app", &long, &long_physical),
    ];
    let payload = 100_000;
    for version in 4..=12 {
        for (cfg, client, topic, physical) in cases {
            let req = request(ApiKey::Fetch, version, 5, client, &fetch_req(topic));
            let sent = response(
                ApiKey::Fetch,
                version,
                5,
                &fetch_resp(version, &[physical], payload),
            );
            let want = response(
                ApiKey::Fetch,
                version,
                5,
                &fetch_resp(version, &[topic], payload),
            );
            for chunk in [1usize, 5, 64, 1000, 16 * 1024, sent.len()] {
                if chunk < 64 && version % 4 != 0 {
                    continue; // byte-sized chunks of 200 KB: a few versions suffice
                }
                let mut conn = KafkaConnection::new(1, (*cfg).clone());
                let mut m = RecordingSink::default();
                let fwd_req = drive(&mut conn, &req, 7, true, &mut m).unwrap();
                assert!(
                    fwd_req == request(ApiKey::Fetch, version, 5, client, &fetch_req(physical))
                );
                let mut out = Vec::new();
                let mut copied = 0;
                for c in sent.chunks(chunk) {
                    let mut src = CountingSource::new(c);
                    match conn.on_response_data(&mut src, || 1, &mut m) {
                        Verdict::Continue => out.extend_from_slice(c),
                        Verdict::Rewrite { prefix_len, bytes } => {
                            out.extend_from_slice(&bytes);
                            out.extend_from_slice(&c[prefix_len..]);
                        }
                        Verdict::Close => panic!("closed"),
                    }
                    copied += src.copied;
                }
                assert!(
                    out == want,
                    "v{version} {physical} -> {topic}, chunks of {chunk}"
                );
                assert!(
                    copied < 2_000,
                    "v{version} chunks of {chunk}: {copied} bytes copied"
                );
                assert_eq!(
                    m.get(MetricKey::RewriteResponses),
                    i64::from(topic != physical)
                );
            }
        }
    }
}

#[test]
fn multi_topic_and_hidden_topic_fetch_responses_are_held_whole() {
    let canary = config(CANARY);
    for version in [4, 11, 12] {
        let req = |corr| {
            request(
                ApiKey::Fetch,
                version,
                corr,
                "checkout-canary",
                &fetch_req("orders"),
            )
        };
        let resp = |corr, names: &[&str], len| {
            response(
                ApiKey::Fetch,
                version,
                corr,
                &fetch_resp(version, names, len),
            )
        };
        // Two topics: the second name comes after the first topic's records.
        let sent = |corr| resp(corr, &["x", "orders-canary"], 3000);
        let want = |corr| resp(corr, &["x", "orders"], 3000);
        // The production topic a canary's own stands in for is never shown to the canary.
        let hidden = |corr| resp(corr, &["orders"], 3000);
        let hidden_want = |corr| resp(corr, &[], 0);
        let len = sent(5).len();
        for chunk in [1usize, 13, 999, len] {
            type Frames<'a> = &'a dyn Fn(i32) -> Vec<u8>;
            let cases: [(Frames, Frames); 2] = [(&sent, &want), (&hidden, &hidden_want)];
            for (sent, want) in cases {
                let mut both = req(5);
                both.extend_from_slice(&req(6));
                let mut resps = sent(5);
                resps.extend_from_slice(&sent(6));
                for (_, fwd, m) in exchange(&canary, &both, &resps, &[chunk]) {
                    let mut twice = want(5);
                    twice.extend_from_slice(&want(6));
                    assert!(fwd == twice, "v{version} chunks of {chunk}");
                    assert_eq!(m.get(MetricKey::RewriteResponses), 2);
                    assert!(m.get(MetricKey::RewriteBytesHeld) >= 2 * sent(5).len() as i64);
                }
            }
        }
    }
}

/// A Produce response naming `topics`, each with `partitions` partition results.
fn produce_resp(topics: &[&str], partitions: i32) -> ProduceResponse {
    ProduceResponse::default()
        .with_throttle_time_ms(3)
        .with_responses(
            topics
                .iter()
                .map(|t| {
                    TopicProduceResponse::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_responses(
                            (0..partitions)
                                .map(|p| {
                                    PartitionProduceResponse::default()
                                        .with_index(p)
                                        .with_base_offset(1000 + i64::from(p))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

#[test]
fn produce_responses_are_mapped_from_their_head_for_one_topic_and_held_whole_for_several() {
    let canary = config(CANARY);
    let tenants = config(TENANTS);
    // (config, client id, topics the client produces to, what the broker answers for)
    type Case<'a> = (&'a Rc<Config>, &'a str, &'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (&canary, "checkout-canary", &["orders"], &["orders-canary"]),
        (&canary, "checkout-canary", &["other"], &["other"]),
        (&tenants, "team-a-app", &["events"], &["team-a.events"]),
        (
            &tenants,
            "team-a-app",
            &["a", "b"],
            &["team-a.a", "team-a.b"],
        ),
    ];
    for version in 3..=12 {
        for (cfg, client, topics, physical) in cases {
            let mut body = produce_body(topics[0], None, 10);
            for t in &topics[1..] {
                body.topic_data
                    .push(produce_body(t, None, 10).topic_data.remove(0));
            }
            let req = request(ApiKey::Produce, version, 6, client, &body);
            let sent = response(ApiKey::Produce, version, 6, &produce_resp(physical, 40));
            let want = response(ApiKey::Produce, version, 6, &produce_resp(topics, 40));
            for (_, fwd, m) in exchange(cfg, &req, &sent, &[1, 5, 64, sent.len()]) {
                assert!(fwd == want, "v{version} {physical:?} -> {topics:?}");
                let renamed = topics != physical;
                assert_eq!(m.get(MetricKey::RewriteResponses), i64::from(renamed));
                // One topic: only the head up to its name is held; several: the whole frame.
                let held = m.get(MetricKey::RewriteBytesHeld);
                if topics.len() == 1 {
                    assert!(held < sent.len() as i64 / 2, "v{version}: held {held}");
                } else {
                    assert!(held >= sent.len() as i64, "v{version}: held {held}");
                }
            }
        }
    }
}

#[test]
fn a_coordinator_key_of_another_tenant_is_never_shown() {
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    let cfg = config(TENANTS);
    let v = 4;
    let s = |n: &str| StrBytes::from_string(n.to_string());
    let ask = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![s("tx")]);
    let reqs = request(ApiKey::FindCoordinator, v, 9, "team-a-app", &ask);
    let answer = |keys: &[&str]| {
        let r = FindCoordinatorResponse::default().with_coordinators(
            keys.iter()
                .map(|k| Coordinator::default().with_key(s(k)).with_node_id(1.into()))
                .collect(),
        );
        response(ApiKey::FindCoordinator, v, 9, &r)
    };
    let decode = |fwd: &[u8]| {
        let mut b = frames(fwd)[0].clone();
        let h = ResponseHeader::decode(&mut b, ApiKey::FindCoordinator.response_header_version(v))
            .unwrap();
        assert_eq!(h.correlation_id, 9);
        FindCoordinatorResponse::decode(&mut b, v).unwrap()
    };
    for chunk in [1, 7, 4096] {
        // What the broker should send: the tenant's own key, shown without its prefix.
        let mut conn = KafkaConnection::new(1, cfg.clone());
        let mut m = RecordingSink::default();
        let fwd = drive(&mut conn, &reqs, chunk, true, &mut m).unwrap();
        let mut b = frames(&fwd)[0].clone();
        RequestHeader::decode(&mut b, 2).unwrap();
        let sent = FindCoordinatorRequest::decode(&mut b, v).unwrap();
        assert_eq!(sent.coordinator_keys, vec![s("team-a.tx")]);
        let back = drive(&mut conn, &answer(&["team-a.tx"]), chunk, false, &mut m).unwrap();
        let got = decode(&back);
        assert_eq!(got.coordinators[0].key, s("tx"));
        assert_eq!(got.coordinators[0].error_code, 0);
        // A key the client cannot have asked for: never shown, the client gets an error.
        let mut conn = KafkaConnection::new(1, cfg.clone());
        let mut m = RecordingSink::default();
        drive(&mut conn, &reqs, chunk, true, &mut m).unwrap();
        let back = drive(&mut conn, &answer(&["team-b.tx"]), chunk, false, &mut m).unwrap();
        assert!(!back.windows(4).any(|w| w == b"team"), "chunk {chunk}");
        // v4+ has no top-level error code: the error answer holds no coordinator at all.
        let got = decode(&back);
        assert!(got.coordinators.is_empty(), "chunk {chunk}: {got:?}");
        assert_eq!(m.get(MetricKey::RewriteErrors), 1);
    }
}
