//! Correlation integrity: a response is only ever handled as the answer to the request it
//! answers. With stages configured, whatever would make pairing ambiguous (a correlation id
//! still waiting, a full table, an answer out of order) closes the connection before anything
//! more passes; the broker's answer to an acks=0 Produce (Kafka sends none) never reaches the
//! client. A connection that is only observed keeps every byte as it came.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;

use common::{feed, request_from as request, response};
use kafka_filter::config::{self, Config};
use kafka_filter::connection::KafkaConnection;
use kafka_filter::limits::{BucketStore, LocalStore};
use kafka_filter::metrics::{MetricKey, RecordingSink};
use kafka_filter::pipeline::held::HeldBudget;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const ACLS: &str = r#"{"acls": {"default": "deny", "entries": [
    {"match": {"client_id": {"exact": "team-a"}}, "permission": "allow", "operations": ["All"],
     "resource_type": "topic", "pattern_type": "prefixed", "name": "a-"},
    {"match": {"client_id": {"exact": "team-a"}}, "permission": "allow", "operations": ["Describe"],
     "resource_type": "cluster"}]}}"#;
const OBSERVED: &str = r#"{"client_metrics": {}}"#;

fn config(json: &str) -> Rc<Config> {
    Rc::new(config::parse(json.as_bytes()).unwrap())
}

fn produce(corr: i32, acks: i16) -> Vec<u8> {
    let body = ProduceRequest::default()
        .with_acks(acks)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("a-1")))
            .with_partition_data(vec![PartitionProduceData::default()])]);
    request(ApiKey::Produce, 7, corr, "team-a", &body)
}

fn all_topics(corr: i32) -> Vec<u8> {
    request(
        ApiKey::Metadata,
        9,
        corr,
        "team-a",
        &MetadataRequest::default(),
    )
}

fn describe_cluster(corr: i32) -> Vec<u8> {
    request(
        ApiKey::DescribeCluster,
        0,
        corr,
        "team-a",
        &DescribeClusterRequest::default(),
    )
}

fn produce_answer(corr: i32) -> Vec<u8> {
    response(ApiKey::Produce, 7, corr, &ProduceResponse::default())
}

#[test]
fn a_reused_correlation_id_closes_before_the_request_is_forwarded() {
    // The attack: an acks=0 Produce (which some brokers answer), then an all-topics Metadata
    // and a DescribeCluster with the same id, hoping to get the Metadata answer unfiltered as
    // the DescribeCluster's.
    let (p, md, dc) = (produce(7, 0), all_topics(7), describe_cluster(7));
    let mut one_write = p.clone();
    one_write.extend_from_slice(&md);
    one_write.extend_from_slice(&dc);
    for chunks in [vec![&p[..], &md[..], &dc[..]], vec![&one_write[..]]] {
        let mut conn = KafkaConnection::new(1, config(ACLS));
        let mut m = RecordingSink::default();
        let (fwd, closed) = feed(&mut conn, &chunks, true, &mut m);
        assert!(closed);
        // Nothing of the Metadata request reached the broker.
        assert!(fwd.len() <= p.len(), "{} bytes forwarded", fwd.len());
        assert_eq!(m.get(MetricKey::RequestsDuplicateCorrelation), 1);
        assert_eq!(m.get(MetricKey::ConnectionsClosedByPolicy), 1);
    }
}

#[test]
fn only_observed_a_reused_id_is_counted_and_forwarded() {
    let mut conn = KafkaConnection::new(1, config(OBSERVED));
    let mut m = RecordingSink::default();
    let (md, dc) = (all_topics(7), describe_cluster(7));
    let (fwd, closed) = feed(&mut conn, &[&md, &dc], true, &mut m);
    assert!(!closed);
    assert_eq!(fwd, [md, dc].concat());
    assert_eq!(m.get(MetricKey::RequestsDuplicateCorrelation), 1);
}

#[test]
fn an_answer_to_an_acks0_produce_is_dropped_and_the_next_one_pairs() {
    let mut conn = KafkaConnection::new(1, config(ACLS));
    let mut m = RecordingSink::default();
    let (p, md) = (produce(1, 0), all_topics(2));
    let (fwd, closed) = feed(&mut conn, &[&p, &md], true, &mut m);
    assert!(!closed);
    assert_eq!(fwd.len(), p.len() + md.len());
    // The broker answers the acks=0 Produce, then the Metadata request.
    let stray = produce_answer(1);
    let answer = response(ApiKey::Metadata, 9, 2, &MetadataResponse::default());
    let (back, closed) = feed(&mut conn, &[&stray, &answer], false, &mut m);
    assert!(!closed);
    assert_eq!(
        back, answer,
        "the client gets the Metadata answer, nothing else"
    );
    assert_eq!(m.get(MetricKey::ResponsesAcks0), 1);
    // Its id is free again once answered.
    let (_, closed) = feed(&mut conn, &[&produce(1, 1)], true, &mut m);
    assert!(!closed);
}

#[test]
fn an_acks0_produce_kafka_never_answers_is_passed_over() {
    let mut conn = KafkaConnection::new(1, config(ACLS));
    let mut m = RecordingSink::default();
    let reqs: Vec<Vec<u8>> = (1..=200).map(|c| produce(c, 0)).collect();
    let refs: Vec<&[u8]> = reqs.iter().map(|r| &r[..]).collect();
    let (_, closed) = feed(&mut conn, &refs, true, &mut m);
    assert!(!closed);
    let md = all_topics(1000);
    feed(&mut conn, &[&md], true, &mut m);
    let answer = response(ApiKey::Metadata, 9, 1000, &MetadataResponse::default());
    let (back, closed) = feed(&mut conn, &[&answer], false, &mut m);
    assert!(!closed);
    assert_eq!(back, answer);
    // Every id is free again: none of those Produce requests will be answered after this.
    let (_, closed) = feed(&mut conn, &[&produce(5, 1)], true, &mut m);
    assert!(!closed);
}

#[test]
fn an_old_acks0_answer_is_recognised_and_its_id_stays_taken() {
    // More acks=0 requests than the filter keeps one by one: their ids stay taken (a request
    // reusing one closes) and their late answers are still dropped.
    let mut conn = KafkaConnection::new(1, config(ACLS));
    let mut m = RecordingSink::default();
    let reqs: Vec<Vec<u8>> = (1..=500).map(|c| produce(c, 0)).collect();
    let refs: Vec<&[u8]> = reqs.iter().map(|r| &r[..]).collect();
    feed(&mut conn, &refs, true, &mut m);
    let (back, closed) = feed(&mut conn, &[&produce_answer(3)], false, &mut m);
    assert!(!closed);
    assert!(back.is_empty());
    let (_, closed) = feed(&mut conn, &[&all_topics(4)], true, &mut m);
    assert!(closed);
}

#[test]
fn a_full_table_closes_before_the_request_is_forwarded() {
    let cfg = r#"{"max_inflight_requests": 3, "acls": {"default": "allow", "entries": []}}"#;
    let mut conn = KafkaConnection::new(1, config(cfg));
    let mut m = RecordingSink::default();
    let reqs: Vec<Vec<u8>> = (1..=4).map(describe_cluster).collect();
    let (fwd, closed) = feed(
        &mut conn,
        &[&reqs[0], &reqs[1], &reqs[2], &reqs[3]],
        true,
        &mut m,
    );
    assert!(closed);
    assert_eq!(fwd, reqs[..3].concat());
    assert_eq!(m.get(MetricKey::InflightOverflow), 1);
}

#[test]
fn only_observed_a_full_table_forgets_its_oldest() {
    let cfg = r#"{"max_inflight_requests": 3, "client_metrics": {}}"#;
    let mut conn = KafkaConnection::new(1, config(cfg));
    let mut m = RecordingSink::default();
    let reqs: Vec<Vec<u8>> = (1..=4).map(describe_cluster).collect();
    let (_, closed) = feed(
        &mut conn,
        &[&reqs[0], &reqs[1], &reqs[2], &reqs[3]],
        true,
        &mut m,
    );
    assert!(!closed);
    assert_eq!(m.get(MetricKey::InflightOverflow), 1);
}

#[test]
fn an_answer_out_of_order_closes_before_it_reaches_the_client() {
    let mut conn = KafkaConnection::new(1, config(ACLS));
    let mut m = RecordingSink::default();
    feed(
        &mut conn,
        &[&all_topics(1), &describe_cluster(2)],
        true,
        &mut m,
    );
    // The DescribeCluster's answer first: it answers a request sent after one still waiting.
    let answer = response(
        ApiKey::DescribeCluster,
        0,
        2,
        &DescribeClusterResponse::default(),
    );
    let (back, closed) = feed(&mut conn, &[&answer], false, &mut m);
    assert!(closed);
    assert!(back.is_empty());
    assert_eq!(m.get(MetricKey::ResponsesUnmatched), 1);
}

#[test]
fn a_new_connection_of_a_key_in_debt_waits_before_its_first_request() {
    let cfg = config(
        r#"{"limits": [{"name": "per-client", "key": "client_id",
            "produce_bytes_per_second": {"rate": 1000, "burst": 1000}}]}"#,
    );
    let store = Rc::new(LocalStore::default());
    let shared: Rc<dyn BucketStore> = store.clone();
    let mut m = RecordingSink::default();
    let big = {
        let body = ProduceRequest::default().with_acks(1).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("a-1")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_records(Some(bytes::Bytes::from(vec![0u8; 4000])))]),
        ]);
        request(ApiKey::Produce, 7, 1, "team-a", &body)
    };
    // The first connection runs the key into debt: its request goes on, then it is held.
    let mut first =
        KafkaConnection::with_shared(1, cfg.clone(), HeldBudget::new(1 << 26), shared.clone());
    feed(&mut first, &[&big], true, &mut m);
    assert!(first.take_delay_ms().is_some());
    assert!(!first.take_hold_first());
    // A new connection of the same key: its first Produce waits for the debt too...
    let mut second =
        KafkaConnection::with_shared(2, cfg.clone(), HeldBudget::new(1 << 26), shared.clone());
    feed(&mut second, &[&produce(1, 1)], true, &mut m);
    assert!(second.take_delay_ms().unwrap() > 1000);
    assert!(second.take_hold_first());
    // ...and a request that adds nothing to a byte rate (a heartbeat, a Metadata request)
    // does not: a broker mutes only the channel it throttled.
    let mut third = KafkaConnection::with_shared(3, cfg, HeldBudget::new(1 << 26), shared);
    feed(&mut third, &[&all_topics(1)], true, &mut m);
    assert_eq!(third.take_delay_ms(), None);
    assert!(!third.take_hold_first());
}

#[test]
fn a_request_frame_too_short_for_its_header_closes_with_stages_and_passes_when_observed() {
    // Three bytes: no correlation id to pair the broker's answer with.
    let short = common::frame(&[0, 3, 0]);
    for (cfg, closes) in [(ACLS, true), (OBSERVED, false)] {
        let mut conn = KafkaConnection::new(1, config(cfg));
        let mut m = RecordingSink::default();
        let (fwd, closed) = feed(&mut conn, &[&short], true, &mut m);
        assert_eq!(closed, closes, "{cfg}");
        assert_eq!(fwd.is_empty(), closes);
        assert_eq!(m.get(MetricKey::FramesUndecodable), 1);
    }
}

#[test]
fn a_produce_whose_acks_cannot_be_read_may_go_unanswered() {
    // A version the filter has no schema for: its acks are unknown, so Kafka may not answer it
    // (acks=0); a later request's answer passes it over instead of closing.
    let cfg = r#"{"limits": [{"name": "l", "requests_per_second": 1000}]}"#;
    let unknown = common::bare_request(0, 99, 1, &[0xff; 16]);
    let mut conn = KafkaConnection::new(1, config(cfg));
    let mut m = RecordingSink::default();
    let (_, closed) = feed(&mut conn, &[&unknown, &all_topics(2)], true, &mut m);
    assert!(!closed);
    let answer = response(ApiKey::Metadata, 9, 2, &MetadataResponse::default());
    let (back, closed) = feed(&mut conn, &[&answer], false, &mut m);
    assert!(!closed);
    assert_eq!(back, answer);
}
