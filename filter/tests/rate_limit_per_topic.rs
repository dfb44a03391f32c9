//! Byte rates kept per topic (`per_topic`) through the whole sans-io connection: each topic's
//! record bytes charged to its own bucket once counted, the hold, `throttle_time_ms` in the
//! response, the caps on topics, and what is charged when topics cannot be counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::{drive, record_set, request_from as request, response};
use kafka_filter::config::{self, Config};
use kafka_filter::connection::KafkaConnection;
use kafka_filter::limits::{BucketStore, LocalStore};
use kafka_filter::metrics::RecordingSink;
use kafka_filter::pipeline::held::HeldBudget;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

fn config(json: &str) -> Rc<Config> {
    Rc::new(config::parse(json.as_bytes()).unwrap())
}

fn conn(cfg: &Rc<Config>, store: &Rc<LocalStore>, id: u32) -> KafkaConnection {
    let store: Rc<dyn BucketStore> = store.clone();
    KafkaConnection::with_shared(id, cfg.clone(), HeldBudget::new(1 << 26), store)
}

fn topic(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

/// One batch of `records` records per topic, partitions `0..partitions` each.
fn produce_v(version: i16, corr: i32, topics: &[(&str, usize)], partitions: i32) -> Vec<u8> {
    let data = topics
        .iter()
        .map(|&(name, records)| {
            TopicProduceData::default()
                .with_name(topic(name))
                .with_partition_data(
                    (0..partitions)
                        .map(|p| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(record_set(&[records], 0)))
                        })
                        .collect(),
                )
        })
        .collect();
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(data);
    request(ApiKey::Produce, version, corr, "app", &body)
}

fn produce(corr: i32, topics: &[(&str, usize)]) -> Vec<u8> {
    produce_v(9, corr, topics, 1)
}

fn produce_response(corr: i32, throttle: i32) -> Vec<u8> {
    let body = ProduceResponse::default().with_throttle_time_ms(throttle);
    response(ApiKey::Produce, 9, corr, &body)
}

fn throttle_of_produce(frame: &[u8]) -> i32 {
    let mut b = Bytes::copy_from_slice(&frame[4..]);
    ResponseHeader::decode(&mut b, 1).unwrap();
    ProduceResponse::decode(&mut b, 9).unwrap().throttle_time_ms
}

fn fetch_response(corr: i32, topics: &[(&str, usize)]) -> Vec<u8> {
    let responses = topics
        .iter()
        .map(|&(name, records)| {
            FetchableTopicResponse::default()
                .with_topic(topic(name))
                .with_partitions(vec![PartitionData::default()
                    .with_high_watermark(100)
                    .with_records(Some(record_set(&[records], 0)))])
        })
        .collect();
    response(
        ApiKey::Fetch,
        12,
        corr,
        &FetchResponse::default().with_responses(responses),
    )
}

fn throttle_of_fetch(frame: &[u8]) -> i32 {
    let mut b = Bytes::copy_from_slice(&frame[4..]);
    ResponseHeader::decode(&mut b, 1).unwrap();
    FetchResponse::decode(&mut b, 12).unwrap().throttle_time_ms
}

/// Bytes of one batch of `records` records (what a topic of `produce` is charged).
fn batch_bytes(records: usize) -> usize {
    record_set(&[records], 0).len()
}

const PER_TOPIC: &str = r#"{"limits": [{"name": "t", "per_topic": true,
    "produce_bytes_per_second": {"rate": 2000, "burst": 2000},
    "fetch_bytes_per_second": {"rate": 2000, "burst": 2000}}]}"#;

#[test]
fn each_topic_has_its_own_produce_bucket_and_the_response_says_the_hold() {
    let cfg = config(PER_TOPIC);
    // Over 3 KB of records (a batch's records are 10.. bytes of value each).
    let big = 80;
    assert!(batch_bytes(big) > 3000, "{}", batch_bytes(big));
    assert!(batch_bytes(2) < 200);
    for chunk in [1, 17, 1 << 20] {
        let store = Rc::new(LocalStore::default());
        let mut c = conn(&cfg, &store, 1);
        let mut m = RecordingSink::default();
        // `big` over its burst, `small` well under its own.
        let req = produce(1, &[("big", big), ("small", 2)]);
        assert_eq!(drive(&mut c, &req, chunk, true, &mut m).unwrap(), req);
        let delay = c.take_delay_ms().expect("held for `big`");
        let owed = (batch_bytes(big) - 2000) as u32 * 1000 / 2000;
        assert!(delay.abs_diff(owed) <= 2, "{delay} vs {owed}");
        let back = drive(&mut c, &produce_response(1, 0), chunk, false, &mut m).unwrap();
        assert_eq!(throttle_of_produce(&back), delay as i32, "chunk {chunk}");
        // `small` alone is not held: a limit on the sum would.
        let req2 = produce(2, &[("small", 2)]);
        drive(&mut c, &req2, chunk, true, &mut m).unwrap();
        assert_eq!(c.take_delay_ms(), None, "chunk {chunk}");
        // `big` still owes.
        let req3 = produce(3, &[("big", 1)]);
        drive(&mut c, &req3, chunk, true, &mut m).unwrap();
        assert!(c.take_delay_ms().is_some());
        c.flush(&mut m);
        assert_eq!(m.named("limit.t.topic.big.limit_topic_throttled"), 2);
        assert_eq!(m.named("limit.t.topic.small.limit_topic_throttled"), 0);
        assert_eq!(m.named("limit.t.limit_throttled"), 2);
        // Every frame in full: its topics' record bytes to them, its framing to `~other`.
        let charged = req.len() + req2.len() + req3.len();
        assert_eq!(m.named("limit.t.limit_produce_bytes"), charged as i64);
    }
}

#[test]
fn each_topic_has_its_own_fetch_bucket_and_the_next_response_says_what_is_left() {
    let cfg = config(PER_TOPIC);
    for chunk in [1, 17, 1 << 20] {
        let store = Rc::new(LocalStore::default());
        let mut c = conn(&cfg, &store, 1);
        let mut m = RecordingSink::default();
        let fetch = |corr| request(ApiKey::Fetch, 12, corr, "app", &FetchRequest::default());
        drive(&mut c, &fetch(1), chunk, true, &mut m).unwrap();
        let resp = fetch_response(1, &[("big", 80), ("small", 2)]);
        let back = drive(&mut c, &resp, chunk, false, &mut m).unwrap();
        // Counted as it passed: its own `throttle_time_ms` came before its records.
        assert_eq!(back, resp);
        let delay = c.take_delay_ms().expect("held for `big`");
        // The client's next request, read while the hold runs: its response says what is left.
        drive(&mut c, &fetch(2), chunk, true, &mut m).unwrap();
        let resp2 = fetch_response(2, &[("small", 1)]);
        let back = drive(&mut c, &resp2, chunk, false, &mut m).unwrap();
        let left = throttle_of_fetch(&back);
        assert!(left > 0 && left <= delay as i32, "{left} of {delay}");
        assert_eq!(c.take_delay_ms(), None, "`small` is under its rate");
        c.flush(&mut m);
        assert_eq!(m.named("limit.t.topic.big.limit_topic_throttled"), 1);
        assert_eq!(
            m.named("limit.t.limit_fetch_bytes"),
            (resp.len() + resp2.len()) as i64
        );
    }
}

#[test]
fn topics_past_max_keys_share_one_bucket_and_a_frame_past_the_topic_cap_is_charged_in_full() {
    let cfg = config(
        r#"{"limits": [{"name": "t", "per_topic": true, "max_keys": 3,
        "produce_bytes_per_second": {"rate": 1000000000, "burst": 1000000000}}]}"#,
    );
    let store = Rc::new(LocalStore::default());
    let mut c = conn(&cfg, &store, 1);
    let mut m = RecordingSink::default();
    let names: Vec<String> = (0..200).map(|i| format!("topic-{i}")).collect();
    let topics: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let req = produce(1, &topics);
    assert_eq!(drive(&mut c, &req, 4096, true, &mut m).unwrap(), req);
    c.flush(&mut m);
    // Every byte is charged, under the topics' own buckets or `other`.
    assert_eq!(m.named("limit.t.limit_produce_bytes"), req.len() as i64);
    assert!(m.named("limit.t.limit_keys_overflow") > 0);
    // No more than max_keys topic buckets, plus `other` ones.
    let entries = store.entries();
    let own = entries
        .iter()
        .filter(|k| k.contains("/topic/") && !k.ends_with("/topic/~other"))
        .count();
    assert!(own <= 3, "{entries:?}");
}

#[test]
fn a_walk_cut_short_leaves_the_rest_of_the_frame_to_other() {
    let cfg = config(
        r#"{"limits": [{"name": "t", "per_topic": true,
        "produce_bytes_per_second": {"rate": 1000000000, "burst": 1000000000}}]}"#,
    );
    let store = Rc::new(LocalStore::default());
    let mut c = conn(&cfg, &store, 1);
    let mut m = RecordingSink::default();
    // Past the walkers' partition cap: the partitions after it are not counted.
    let req = produce_v(9, 1, &[("wide", 1)], 5000);
    drive(&mut c, &req, 1 << 20, true, &mut m).unwrap();
    c.flush(&mut m);
    let charged = m.named("limit.t.limit_produce_bytes");
    assert!(
        charged >= (5000 * batch_bytes(1)) as i64 && charged <= req.len() as i64,
        "{charged} of {}",
        req.len()
    );
}

#[test]
fn frames_whose_topics_are_not_counted_are_charged_whole_at_their_head() {
    let cfg = config(
        r#"{"limits": [{"name": "t", "per_topic": true,
        "produce_bytes_per_second": {"rate": 1000, "burst": 1000}}]}"#,
    );
    let store = Rc::new(LocalStore::default());
    let mut c = conn(&cfg, &store, 1);
    let mut m = RecordingSink::default();
    // Produce v2 (a v3 body under a v2 header: the filter reads no further): not walked.
    let mut req = produce_v(3, 1, &[("a", 60)], 1);
    req[6..8].copy_from_slice(&2i16.to_be_bytes());
    drive(&mut c, &req, 1 << 20, true, &mut m).unwrap();
    assert!(c.take_delay_ms().is_some());
    c.flush(&mut m);
    assert_eq!(m.named("limit.t.limit_produce_bytes"), req.len() as i64);
    assert_eq!(m.named("limit.t.topic.a.limit_topic_throttled"), 0);
}

#[test]
fn a_new_connection_waits_for_its_first_topics_debt_before_its_produce_goes_on() {
    let cfg = config(PER_TOPIC);
    for chunk in [1, 17, 1 << 20] {
        let store = Rc::new(LocalStore::default());
        let mut m = RecordingSink::default();
        // The first connection runs `big` into debt; its request went on before that was known.
        let mut first = conn(&cfg, &store, 1);
        let req = produce(1, &[("big", 80)]);
        drive(&mut first, &req, chunk, true, &mut m).unwrap();
        assert!(first.take_delay_ms().is_some());
        assert!(!first.take_hold_first());
        // A new connection's Produce to `big` waits before it goes on...
        let mut second = conn(&cfg, &store, 2);
        drive(&mut second, &produce(1, &[("big", 1)]), chunk, true, &mut m).unwrap();
        assert!(second.take_delay_ms().is_some(), "chunk {chunk}");
        assert!(second.take_hold_first(), "chunk {chunk}");
        // ...and one to another topic does not.
        let mut third = conn(&cfg, &store, 3);
        drive(
            &mut third,
            &produce(1, &[("small", 1)]),
            chunk,
            true,
            &mut m,
        )
        .unwrap();
        assert_eq!(third.take_delay_ms(), None, "chunk {chunk}");
        assert!(!third.take_hold_first());
        // A decoy topic first does not help: a request naming several topics waits for the
        // debt of any topic of the key.
        let mut fourth = conn(&cfg, &store, 4);
        let decoy = produce(1, &[("small", 1), ("big", 1)]);
        drive(&mut fourth, &decoy, chunk, true, &mut m).unwrap();
        assert!(fourth.take_delay_ms().is_some(), "chunk {chunk}");
        assert!(fourth.take_hold_first(), "chunk {chunk}");
    }
}
