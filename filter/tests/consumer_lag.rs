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
    // A connection shares a partition's end at most once a second; the rest on its flush.
    assert_eq!(m.named(LAG), 40);
    fetcher.flush(&mut m);
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
    fetcher.flush(&mut m);
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

/// Fetch-position lag per client: log end (or last stable offset when reading committed) minus
/// the offset fetched from, following a fetch session (KIP-227) across full and incremental
/// fetches.
#[test]
fn fetch_lag_follows_positions_and_fetch_sessions() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    let cfg = Rc::new(config::parse(br#"{"consumer_lag": {}}"#).unwrap());
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    let fetch = |epoch: i32, isolation: i8, parts: &[(i32, i64)], forgotten: &[i32]| {
        let mut req = FetchRequest::default()
            .with_session_epoch(epoch)
            .with_isolation_level(isolation);
        if !parts.is_empty() {
            req = req.with_topics(vec![FetchTopic::default()
                .with_topic(name("orders.v1"))
                .with_partitions(
                    parts
                        .iter()
                        .map(|&(p, o)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(o)
                        })
                        .collect(),
                )]);
        }
        if !forgotten.is_empty() {
            req = req.with_forgotten_topics_data(vec![ForgottenTopic::default()
                .with_topic(name("orders.v1"))
                .with_partitions(forgotten.to_vec())]);
        }
        req
    };
    // Per partition: high watermark, last stable offset, and the one record it carries.
    let answer = |parts: &[(i32, i64, i64, i64)]| {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(name("orders.v1"))
            .with_partitions(
                parts
                    .iter()
                    .map(|&(p, hw, lso, at)| {
                        PartitionData::default()
                            .with_partition_index(p)
                            .with_high_watermark(hw)
                            .with_last_stable_offset(lso)
                            .with_records(Some(record_set(&[1], at)))
                    })
                    .collect(),
            )])
    };
    let gauge = |p: i32| {
        format!("client.reader.principal.none.topic.orders.v1.partition.{p}.client_fetch_lag")
    };
    let mut round = |corr: i32, req: FetchRequest, resp: FetchResponse, m: &mut RecordingSink| {
        exchange(
            &mut c,
            &request(ApiKey::Fetch, 12, corr, "reader", &req),
            &response(ApiKey::Fetch, 12, corr, &resp),
            m,
        );
        c.flush(m);
    };
    // A full fetch opening a session; the lag counts the records the response carries as read
    // (where the consumer stands once it has them).
    round(
        1,
        fetch(0, 0, &[(0, 10), (1, 5)], &[]),
        answer(&[(0, 100, 90, 10), (1, 50, 40, 5)]),
        &mut m,
    );
    assert_eq!((m.named(&gauge(0)), m.named(&gauge(1))), (89, 44));
    // Incremental: only partition 0 moved; the response leaves partition 1 out.
    round(
        2,
        fetch(1, 0, &[(0, 100)], &[]),
        answer(&[(0, 120, 120, 100)]),
        &mut m,
    );
    assert_eq!((m.named(&gauge(0)), m.named(&gauge(1))), (19, 44));
    // Partition 1 forgotten: a log end for it no longer moves its figure.
    round(
        3,
        fetch(2, 0, &[], &[1]),
        answer(&[(1, 80, 80, 60)]),
        &mut m,
    );
    assert_eq!(m.named(&gauge(1)), 44);
    // A read-committed consumer without a session: up to the last stable offset.
    round(
        4,
        fetch(-1, 1, &[(0, 100)], &[]),
        answer(&[(0, 130, 110, 100)]),
        &mut m,
    );
    assert_eq!(m.named(&gauge(0)), 9);
    // Off when asked.
    let off = Rc::new(config::parse(br#"{"consumer_lag": {"fetch_lag": false}}"#).unwrap());
    let mut m2 = RecordingSink::default();
    let mut c2 = conn(&off, &store, 2);
    exchange(
        &mut c2,
        &request(ApiKey::Fetch, 12, 1, "reader", &fetch(0, 0, &[(0, 1)], &[])),
        &response(ApiKey::Fetch, 12, 1, &answer(&[(0, 100, 100, 1)])),
        &mut m2,
    );
    c2.end(&mut m2);
    assert!(!m2.named.keys().any(|k| k.ends_with("client_fetch_lag")));
}

/// Producers move log ends too: a Produce response's base offset plus the records the request
/// carried, so a group whose consumers have stopped fetching still shows its lag growing.
#[test]
fn produce_responses_move_log_ends() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    let cfg = Rc::new(config::parse(br#"{"consumer_lag": {}}"#).unwrap());
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut consumer = conn(&cfg, &store, 1);
    fetch(&mut consumer, 1, "orders.v1", 60, &mut m);
    commit(&mut consumer, 2, "g1", 60, 0, &mut m);
    assert_eq!(m.named(LAG), 0);
    let mut producer = conn(&cfg, &store, 2);
    for (corr, base, error) in [(1, 60, 0), (2, 65, 0), (3, 70, 6)] {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("orders.v1"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(record_set(&[2, 3], 0)))])]);
        let resp = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_name(name("orders.v1"))
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(0)
                .with_error_code(error)
                .with_base_offset(base)])]);
        exchange(
            &mut producer,
            &request(ApiKey::Produce, 9, corr, "writer", &req),
            &response(ApiKey::Produce, 9, corr, &resp),
            &mut m,
        );
    }
    // Two appends of 5 records accepted (the third refused: NOT_LEADER_OR_FOLLOWER): end 70,
    // the first shared at once, the second on the producer connection's flush.
    assert_eq!(m.named(LAG), 5);
    producer.flush(&mut m);
    assert_eq!(m.named(LAG), 10);
}

/// A ListOffsets request for the latest offset (consumers ask it when they start, lag tools all
/// the time) tells the log end; other timestamps and read-committed requests do not.
#[test]
fn list_offsets_for_the_latest_offset_moves_log_ends() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    let cfg = Rc::new(config::parse(br#"{"consumer_lag": {}}"#).unwrap());
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    commit(&mut c, 1, "g1", 60, 0, &mut m);
    assert!(!m.named.contains_key(LAG), "no log end yet");
    for (corr, version, isolation, timestamp, offset) in [
        (2, 7, 0, -2, 0),   // earliest: not a log end
        (3, 7, 1, -1, 500), // read committed: the last stable offset, not the log end
        (4, 1, 0, -1, 80),  // latest
        (5, 9, 0, -1, 90),  // latest, flexible version
    ] {
        let req = ListOffsetsRequest::default()
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("orders.v1"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp)])]);
        let resp =
            ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
                .with_name(name("orders.v1"))
                .with_partitions(vec![ListOffsetsPartitionResponse::default()
                    .with_partition_index(0)
                    .with_offset(offset)])]);
        exchange(
            &mut c,
            &request(ApiKey::ListOffsets, version, corr, "lag-tool", &req),
            &response(ApiKey::ListOffsets, version, corr, &resp),
            &mut m,
        );
        c.flush(&mut m);
        let want = match corr {
            2 | 3 => None,
            4 => Some(20),
            _ => Some(30),
        };
        assert_eq!(m.named.get(LAG).copied(), want, "request {corr}");
    }
}

/// A canary's traffic, rewritten by a name-conversion rule, does not move the figures of the
/// topic the client names (the broker's `orders-canary` is the canary's `orders`).
#[test]
fn rewritten_traffic_does_not_move_shared_lag_figures() {
    let cfg = Rc::new(
        config::parse(
            br#"{"consumer_lag": {}, "rules": [{"name": "c", "match": {"client_id": {"exact": "checkout-canary"}},
            "topics": {"map": {"orders": "orders-canary"}}, "groups": {"add_suffix": "-canary"}}]}"#,
        )
        .unwrap(),
    );
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut reader = conn(&cfg, &store, 1);
    fetch(&mut reader, 1, "orders.v1", 100, &mut m);
    commit(&mut reader, 2, "g1", 60, 0, &mut m);
    assert_eq!(m.named(LAG), 40);
    // The canary fetches the broker's `orders-canary`, far ahead, which it sees as `orders`.
    let mut canary = conn(&cfg, &store, 2);
    let req = request(
        ApiKey::Fetch,
        12,
        1,
        "checkout-canary",
        &FetchRequest::default(),
    );
    let body = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(name("orders-canary"))
        .with_partitions(vec![PartitionData::default()
            .with_partition_index(0)
            .with_high_watermark(5000)
            .with_records(Some(record_set(&[2], 4998)))])]);
    drive(&mut canary, &req, 7, true, &mut m).unwrap();
    let resp = response(ApiKey::Fetch, 12, 1, &body);
    assert_ne!(
        drive(&mut canary, &resp, 7, false, &mut m).unwrap(),
        resp,
        "rewritten"
    );
    canary.end(&mut m);
    assert_eq!(store.number("lag/end/0/orders"), None);
    assert_eq!(m.named(LAG), 40);
}
