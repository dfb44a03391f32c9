//! Committed consumer lag through the sans-io connection: log ends from Fetch responses,
//! commits from OffsetCommit requests the broker accepted, across connections sharing a store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;

use common::{drive, record_set, request_from as request, response};
use kafka_filter::config::{self, Config};
use kafka_filter::connection::KafkaConnection;
use kafka_filter::limits::{BucketStore, LocalStore};
use kafka_filter::metrics::RecordingSink;
use kafka_filter::pipeline::held::HeldBudget;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, GroupId, OffsetCommitRequest, OffsetCommitResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

fn conn(cfg: &Rc<Config>, store: &Rc<LocalStore>, id: u32) -> KafkaConnection {
    let store: Rc<dyn BucketStore> = store.clone();
    KafkaConnection::with_shared(id, cfg.clone(), HeldBudget::new(1 << 26), store)
}

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

fn exchange(c: &mut KafkaConnection, req: &[u8], resp: &[u8], m: &mut RecordingSink) {
    assert_eq!(drive(c, req, 7, true, m).unwrap(), req);
    assert_eq!(drive(c, resp, 7, false, m).unwrap(), resp);
}

fn fetch(c: &mut KafkaConnection, corr: i32, topic: &str, hw: i64, m: &mut RecordingSink) {
    let req = request(ApiKey::Fetch, 12, corr, "reader", &FetchRequest::default());
    let body = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(name(topic))
        .with_partitions(vec![PartitionData::default()
            .with_partition_index(0)
            .with_high_watermark(hw)
            .with_records(Some(record_set(&[2], hw - 2)))])]);
    exchange(c, &req, &response(ApiKey::Fetch, 12, corr, &body), m);
}

fn commit(
    c: &mut KafkaConnection,
    corr: i32,
    group: &str,
    offset: i64,
    error: i16,
    m: &mut RecordingSink,
) {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name("orders.v1"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    let resp =
        OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
            .with_name(name("orders.v1"))
            .with_partitions(vec![OffsetCommitResponsePartition::default()
                .with_partition_index(0)
                .with_error_code(error)])]);
    exchange(
        c,
        &request(ApiKey::OffsetCommit, 8, corr, "reader", &req),
        &response(ApiKey::OffsetCommit, 8, corr, &resp),
        m,
    );
}

const LAG: &str = "group.g1.topic.orders.v1.partition.0.group_lag";

#[test]
fn committed_lag_follows_log_ends_and_accepted_commits_across_connections() {
    let cfg = Rc::new(config::parse(br#"{"consumer_lag": {}}"#).unwrap());
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    // The fetching connection and the coordinator's are not the same (another worker, even).
    let mut fetcher = conn(&cfg, &store, 1);
    let mut coordinator = conn(&cfg, &store, 2);
    fetch(&mut fetcher, 1, "orders.v1", 100, &mut m);
    assert!(!m.named.contains_key(LAG), "no commit yet: no lag");
    commit(&mut coordinator, 1, "g1", 60, 0, &mut m);
    assert_eq!(m.named(LAG), 40);
    fetch(&mut fetcher, 2, "orders.v1", 120, &mut m);
    assert_eq!(m.named(LAG), 60);
    // A commit the broker refuses (REBALANCE_IN_PROGRESS) changes nothing.
    commit(&mut coordinator, 2, "g1", 119, 27, &mut m);
    assert_eq!(m.named(LAG), 60);
    // Caught up: 0.
    commit(&mut coordinator, 3, "g1", 120, 0, &mut m);
    assert_eq!(m.named(LAG), 0);
    // An older log end (a stale worker) never lowers the end.
    fetch(&mut conn(&cfg, &store, 3), 1, "orders.v1", 90, &mut m);
    assert_eq!(m.named(LAG), 0);
    fetch(&mut fetcher, 3, "orders.v1", 125, &mut m);
    assert_eq!(m.named(LAG), 5);
}

#[test]
fn lag_series_are_capped() {
    let cfg = Rc::new(config::parse(br#"{"consumer_lag": {"max_series": 2}}"#).unwrap());
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    fetch(&mut c, 1, "orders.v1", 100, &mut m);
    for (i, g) in ["a", "b", "c", "d"].iter().enumerate() {
        commit(&mut c, 2 + i as i32, g, 50, 0, &mut m);
    }
    let lags = m.named.keys().filter(|k| k.ends_with("group_lag")).count();
    assert_eq!(lags, 2);
    assert_eq!(m.named("lag_series_overflow"), 2);
}

#[test]
fn bad_consumer_lag_configuration_names_the_field() {
    for (doc, field) in [
        (
            r#"{"consumer_lag": {"max_series": 0}}"#,
            "consumer_lag.max_series",
        ),
        (r#"{"consumer_lag": {"series": 5}}"#, "consumer_lag"),
    ] {
        let err = config::parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(field), "{doc}: {err}");
    }
}

/// Transactional commits (TxnOffsetCommit, as exactly-once consumers and Kafka Streams send
/// them) count like OffsetCommit once the broker accepts them, in every version.
#[test]
fn transactional_commits_count_once_accepted() {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::txn_offset_commit_response::{
        TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
    let cfg = Rc::new(config::parse(br#"{"consumer_lag": {}}"#).unwrap());
    for version in [0, 3, 4] {
        let store = Rc::new(LocalStore::default());
        let mut m = RecordingSink::default();
        let mut c = conn(&cfg, &store, 1);
        fetch(&mut c, 1, "orders.v1", 100, &mut m);
        for (corr, offset, error) in [(2, 70, 0), (3, 90, 51)] {
            let req = TxnOffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g1")))
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(name("orders.v1"))
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)])]);
            let resp = TxnOffsetCommitResponse::default().with_topics(vec![
                TxnOffsetCommitResponseTopic::default()
                    .with_name(name("orders.v1"))
                    .with_partitions(vec![TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(0)
                        .with_error_code(error)]),
            ]);
            exchange(
                &mut c,
                &request(ApiKey::TxnOffsetCommit, version, corr, "reader", &req),
                &response(ApiKey::TxnOffsetCommit, version, corr, &resp),
                &mut m,
            );
        }
        // 70 accepted; 90 refused (CONCURRENT_TRANSACTIONS): lag 30.
        assert_eq!(m.named(LAG), 30, "v{version}");
    }
}
