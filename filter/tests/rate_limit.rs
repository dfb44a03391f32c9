//! The rate-limit stage through the whole sans-io connection: delays, `throttle_time_ms` in
//! responses (alone and after a name-conversion rewrite), dry run, connection limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::{drive, request_from as request, response};
use kafka_filter::config::{self, Config};
use kafka_filter::connection::KafkaConnection;
use kafka_filter::limits::{BucketStore, LocalStore};
use kafka_filter::metrics::RecordingSink;
use kafka_filter::pipeline::held::HeldBudget;
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
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

fn produce(corr: i32, client: &str, payload: usize) -> Vec<u8> {
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic("orders"))
            .with_partition_data(vec![
                PartitionProduceData::default().with_records(Some(Bytes::from(vec![7u8; payload])))
            ])]);
    request(ApiKey::Produce, 9, corr, client, &body)
}

fn produce_response(corr: i32, topic_name: &str, throttle: i32) -> Vec<u8> {
    let body = ProduceResponse::default()
        .with_throttle_time_ms(throttle)
        .with_responses(vec![TopicProduceResponse::default()
            .with_name(topic(topic_name))
            .with_partition_responses(vec![PartitionProduceResponse::default()])]);
    response(ApiKey::Produce, 9, corr, &body)
}

fn decode_produce(frame: &[u8]) -> ProduceResponse {
    let mut b = Bytes::copy_from_slice(&frame[4..]);
    ResponseHeader::decode(&mut b, 1).unwrap();
    ProduceResponse::decode(&mut b, 9).unwrap()
}

const ONE_KIB_PER_S: &str = r#"{"limits": [{"name": "slow", "match": {"client_id": {"exact": "slow"}},
    "produce_bytes_per_second": {"rate": 1024, "burst": 1024}, "key": "client_id"}]}"#;

#[test]
fn a_produce_over_the_rate_is_forwarded_then_the_client_is_held_and_told() {
    let cfg = config(ONE_KIB_PER_S);
    let store = Rc::new(LocalStore::default());
    for chunk in [1, 13, 1 << 20] {
        let store = Rc::new(LocalStore::default());
        let mut c = conn(&cfg, &store, 1);
        let mut m = RecordingSink::default();
        // 3 KiB against a 1 KiB burst: forwarded untouched, about 2 s of debt.
        let req = produce(1, "slow", 3000);
        assert_eq!(drive(&mut c, &req, chunk, true, &mut m).unwrap(), req);
        let delay = c.take_delay_ms().expect("a delay");
        assert!((1900..=2200).contains(&delay), "{delay}");
        assert_eq!(c.take_delay_ms(), None);
        let back = drive(
            &mut c,
            &produce_response(1, "orders", 5),
            chunk,
            false,
            &mut m,
        )
        .unwrap();
        assert_eq!(
            decode_produce(&back).throttle_time_ms,
            delay as i32,
            "chunk {chunk}"
        );
        c.flush(&mut m);
        assert_eq!(m.named("limit.slow.limit_throttled"), 1);
        assert_eq!(m.named("limit.slow.limit_throttle_ms"), i64::from(delay));
        assert!(m.named("limit.slow.limit_produce_bytes") > 3000);
    }
    // Another client id is not limited, and a larger broker value stays.
    let mut c = conn(&cfg, &store, 2);
    let mut m = RecordingSink::default();
    drive(&mut c, &produce(1, "fast", 3000), 7, true, &mut m).unwrap();
    assert_eq!(c.take_delay_ms(), None);
    let resp = produce_response(1, "orders", 0);
    assert_eq!(drive(&mut c, &resp, 7, false, &mut m).unwrap(), resp);
}

#[test]
fn throttle_time_is_set_after_a_name_conversion_rewrite() {
    let cfg = config(
        r#"{"rules": [{"name": "t", "match": {"client_id": {"prefix": "slow"}}, "topics": {"prefix": "team."}}],
            "limits": [{"name": "slow", "produce_bytes_per_second": {"rate": 1024, "burst": 1024}}]}"#,
    );
    for chunk in [1, 5, 1 << 20] {
        let store = Rc::new(LocalStore::default());
        let mut c = conn(&cfg, &store, 1);
        let mut m = RecordingSink::default();
        drive(&mut c, &produce(1, "slow", 3000), chunk, true, &mut m).unwrap();
        let delay = c.take_delay_ms().unwrap();
        let back = drive(
            &mut c,
            &produce_response(1, "team.orders", 0),
            chunk,
            false,
            &mut m,
        )
        .unwrap();
        let got = decode_produce(&back);
        assert_eq!(got.responses[0].name, topic("orders"), "chunk {chunk}");
        assert_eq!(got.throttle_time_ms, delay as i32, "chunk {chunk}");
    }
}

#[test]
fn fetch_bytes_are_charged_on_the_response_and_set_in_it() {
    let cfg = config(
        r#"{"limits": [{"name": "reader", "fetch_bytes_per_second": {"rate": 1000, "burst": 1000}}]}"#,
    );
    for chunk in [1, 9, 1 << 20] {
        let store = Rc::new(LocalStore::default());
        let mut c = conn(&cfg, &store, 1);
        let mut m = RecordingSink::default();
        let req = request(ApiKey::Fetch, 12, 4, "reader", &FetchRequest::default());
        assert_eq!(drive(&mut c, &req, chunk, true, &mut m).unwrap(), req);
        assert_eq!(c.take_delay_ms(), None);
        let body = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_topic(topic("orders"))
        ]);
        let resp = response(ApiKey::Fetch, 12, 4, &body);
        let back = drive(&mut c, &resp, chunk, false, &mut m).unwrap();
        let mut b = Bytes::copy_from_slice(&back[4..]);
        ResponseHeader::decode(&mut b, 1).unwrap();
        let got = FetchResponse::decode(&mut b, 12).unwrap();
        // A tiny response under the burst: no delay.
        assert_eq!(got.throttle_time_ms, 0);
        // More of them: past the burst, the client is held and the response says so.
        let mut held = 0;
        for corr in 5..40 {
            let req = request(ApiKey::Fetch, 12, corr, "reader", &FetchRequest::default());
            drive(&mut c, &req, chunk, true, &mut m).unwrap();
            // A Fetch of a key still in debt for earlier responses waits for it too.
            if c.take_delay_ms().is_some() {
                assert!(c.take_hold_first());
                held += 1;
            }
            let resp = response(ApiKey::Fetch, 12, corr, &body);
            let back = drive(&mut c, &resp, chunk, false, &mut m).unwrap();
            let mut b = Bytes::copy_from_slice(&back[4..]);
            ResponseHeader::decode(&mut b, 1).unwrap();
            let got = FetchResponse::decode(&mut b, 12).unwrap();
            if let Some(d) = c.take_delay_ms() {
                assert_eq!(got.throttle_time_ms, d as i32);
                held += 1;
            }
        }
        assert!(held > 0, "chunk {chunk}");
        assert_eq!(m.named("limit.reader.limit_throttled"), held);
    }
}

#[test]
fn dry_run_changes_no_byte_and_counts() {
    let cfg = config(
        r#"{"limits": [{"name": "dry", "mode": "dry_run", "produce_bytes_per_second": {"rate": 1024, "burst": 1024}}]}"#,
    );
    let store = Rc::new(LocalStore::default());
    let mut c = conn(&cfg, &store, 1);
    let mut m = RecordingSink::default();
    for corr in 0..5 {
        let req = produce(corr, "any", 3000);
        assert_eq!(drive(&mut c, &req, 11, true, &mut m).unwrap(), req);
        assert_eq!(c.take_delay_ms(), None);
        let resp = produce_response(corr, "orders", 0);
        assert_eq!(drive(&mut c, &resp, 11, false, &mut m).unwrap(), resp);
    }
    assert_eq!(m.named("limit.dry.limit_would_throttle"), 5);
    assert_eq!(m.named("limit.dry.limit_throttled"), 0);
}

#[test]
fn connections_over_the_limit_close_and_give_their_slot_back() {
    let cfg = config(
        r#"{"limits": [{"name": "conns", "match": {"client_id": {"prefix": "app"}}, "key": "client_id", "max_connections": 2}]}"#,
    );
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut open: Vec<KafkaConnection> = Vec::new();
    for id in 0..2 {
        let mut c = conn(&cfg, &store, id);
        assert!(drive(&mut c, &produce(1, "app-1", 10), 64, true, &mut m).is_some());
        open.push(c);
    }
    let mut third = conn(&cfg, &store, 3);
    assert!(drive(&mut third, &produce(1, "app-1", 10), 64, true, &mut m).is_none());
    assert_eq!(m.named("limit.conns.limit_connections_refused"), 1);
    // Another identity still connects.
    let mut other = conn(&cfg, &store, 4);
    assert!(drive(&mut other, &produce(1, "app-2", 10), 64, true, &mut m).is_some());
    // One closes: its slot is free again.
    open.pop();
    let mut again = conn(&cfg, &store, 5);
    assert!(drive(&mut again, &produce(1, "app-1", 10), 64, true, &mut m).is_some());
}

#[test]
fn a_client_inventing_ids_shares_one_overflow_bucket_past_max_keys() {
    // One hostile client cycling through client ids: past max_keys, its ids share the overflow
    // bucket (so it cannot escape the limit by renaming itself, nor grow the store).
    let cfg = config(
        r#"{"limits": [{"name": "per-id", "key": "client_id", "max_keys": 3,
            "requests_per_second": {"rate": 1, "burst": 1}}]}"#,
    );
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut delays = Vec::new();
    for i in 0..10 {
        let mut c = conn(&cfg, &store, i);
        let id = format!(
            "inv-{i}-{}",
            "z".repeat(if i % 2 == 0 { 30_000 } else { 1 })
        );
        drive(&mut c, &produce(1, &id, 2000), 4096, true, &mut m).unwrap();
        delays.push(c.take_delay_ms().unwrap_or(0));
    }
    // The first three ids have buckets of their own (one request of a burst of one: no delay);
    // the seven others share one and are held more and more.
    assert_eq!(&delays[..3], &[0, 0, 0]);
    assert!(delays[9] > delays[5], "{delays:?}");
    assert_eq!(m.named("limit.per-id.limit_keys_overflow"), 7);
}

#[test]
fn topic_mutations_over_the_rate_get_throttling_quota_exceeded() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{
        ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse, RequestHeader,
    };
    let cfg = config(
        r#"{"limits": [{"name": "admin", "topic_mutations_per_second": {"rate": 1, "burst": 2}}]}"#,
    );
    let create = |corr: i32, names: &[&str], v: i16| {
        let body = CreateTopicsRequest::default().with_topics(
            names
                .iter()
                .map(|n| {
                    CreatableTopic::default()
                        .with_name(topic(n))
                        .with_num_partitions(1)
                })
                .collect(),
        );
        request(ApiKey::CreateTopics, v, corr, "admin-client", &body)
    };
    for chunk in [1, 7, 1 << 20] {
        let store = Rc::new(LocalStore::default());
        let mut c = conn(&cfg, &store, 1);
        let mut m = RecordingSink::default();
        // Two partitions of a burst of two: forwarded as they are, no delay.
        // The broker answers each in turn (a response answers the oldest request waiting).
        let answered = |corr: i32| {
            response(
                ApiKey::CreateTopics,
                7,
                corr,
                &CreateTopicsResponse::default(),
            )
        };
        let req = create(1, &["a", "b"], 7);
        assert_eq!(drive(&mut c, &req, chunk, true, &mut m).unwrap(), req);
        assert_eq!(c.take_delay_ms(), None);
        drive(&mut c, &answered(1), chunk, false, &mut m).unwrap();
        // Not in debt yet: admitted, and now a second in debt.
        let req = create(2, &["c"], 7);
        assert_eq!(drive(&mut c, &req, chunk, true, &mut m).unwrap(), req);
        assert!(c.take_delay_ms().is_some());
        drive(&mut c, &answered(2), chunk, false, &mut m).unwrap();
        // In debt: refused; the broker gets a stand-in with the same correlation id.
        let req = create(3, &["d", "e"], 7);
        let fwd = drive(&mut c, &req, chunk, true, &mut m).unwrap();
        let mut b = Bytes::copy_from_slice(&fwd[4..]);
        let h = RequestHeader::decode(&mut b, 1).unwrap();
        assert_eq!(
            (h.request_api_key, h.correlation_id),
            (18, 3),
            "chunk {chunk}"
        );
        // Answered in the API's own terms for every topic.
        let stand_in = response(ApiKey::ApiVersions, 0, 3, &ApiVersionsResponse::default());
        let back = drive(&mut c, &stand_in, chunk, false, &mut m).unwrap();
        let mut b = Bytes::copy_from_slice(&back[4..]);
        let h = ResponseHeader::decode(&mut b, ApiKey::CreateTopics.response_header_version(7))
            .unwrap();
        assert_eq!(h.correlation_id, 3);
        let got = CreateTopicsResponse::decode(&mut b, 7).unwrap();
        let codes: Vec<(String, i16)> = got
            .topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.error_code))
            .collect();
        assert_eq!(codes, [("d".to_string(), 89), ("e".to_string(), 89)]);
        assert!(got.throttle_time_ms > 0);
        // An old version has no such error: it is forwarded and the client held.
        let req = create(4, &["f"], 5);
        assert_eq!(drive(&mut c, &req, chunk, true, &mut m).unwrap(), req);
        assert!(c.take_delay_ms().unwrap() > 0);
    }
}
