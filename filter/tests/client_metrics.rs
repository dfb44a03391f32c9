//! Per-client metrics through the whole sans-io connection: series per client id, principal and
//! API, client software, the cap on distinct clients, and bad configuration.
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
use kafka_filter::pipeline::Peer;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

fn config(json: &str) -> Rc<Config> {
    Rc::new(config::parse(json.as_bytes()).unwrap())
}

fn conn(cfg: &Rc<Config>, store: &Rc<LocalStore>, id: u32) -> KafkaConnection {
    let store: Rc<dyn BucketStore> = store.clone();
    KafkaConnection::with_shared(id, cfg.clone(), HeldBudget::new(1 << 26), store)
}

fn api_versions(corr: i32, client: &str, software: (&str, &str)) -> Vec<u8> {
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_string(software.0.into()))
        .with_client_software_version(StrBytes::from_string(software.1.into()));
    request(ApiKey::ApiVersions, 3, corr, client, &body)
}

fn metadata(corr: i32, client: &str) -> Vec<u8> {
    request(
        ApiKey::Metadata,
        12,
        corr,
        client,
        &MetadataRequest::default(),
    )
}

/// One exchange; the request and response sizes.
fn exchange(
    c: &mut KafkaConnection,
    req: &[u8],
    resp: &[u8],
    m: &mut RecordingSink,
) -> (usize, usize) {
    assert_eq!(drive(c, req, 5, true, m).unwrap(), req);
    assert_eq!(drive(c, resp, 5, false, m).unwrap(), resp);
    (req.len(), resp.len())
}

fn versions_response(corr: i32) -> Vec<u8> {
    response(
        ApiKey::ApiVersions,
        3,
        corr,
        &ApiVersionsResponse::default(),
    )
}

fn metadata_response(corr: i32) -> Vec<u8> {
    response(ApiKey::Metadata, 12, corr, &MetadataResponse::default())
}

const ON: &str = r#"{"client_metrics": {}}"#;

#[test]
fn series_per_client_and_api_with_bytes_latency_and_software() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    let mut bytes = (0, 0);
    let mut add = |b: (usize, usize)| {
        bytes.0 += b.0;
        bytes.1 += b.1;
    };
    add(exchange(
        &mut c,
        &api_versions(1, "app-a", ("librdkafka", "2.3.0")),
        &versions_response(1),
        &mut m,
    ));
    for corr in 2..5 {
        add(exchange(
            &mut c,
            &metadata(corr, "app-a"),
            &metadata_response(corr),
            &mut m,
        ));
    }
    let p = "client.app-a.principal.none.";
    let conns = format!("{p}software.librdkafka.version.2.3.0.client_connections");
    // The connection is counted as soon as it is seen; counters come with the flush.
    assert_eq!(m.named(&conns), 1);
    assert_eq!(m.named(&format!("{p}api.Metadata.client_requests")), 0);
    c.flush(&mut m);
    assert_eq!(m.named(&format!("{p}api.ApiVersions.client_requests")), 1);
    assert_eq!(m.named(&format!("{p}api.ApiVersions.client_responses")), 1);
    assert_eq!(m.named(&format!("{p}api.Metadata.client_requests")), 3);
    assert_eq!(m.named(&format!("{p}api.Metadata.client_responses")), 3);
    assert_eq!(
        m.named(&format!("{p}client_request_bytes")) as usize,
        bytes.0
    );
    assert_eq!(
        m.named(&format!("{p}client_response_bytes")) as usize,
        bytes.1
    );
    let samples = &m.named_samples[&format!("{p}api.Metadata.client_response_latency_us")];
    assert_eq!(samples.len(), 3);
    // Flushing again adds nothing; the end gives the connection back.
    c.flush(&mut m);
    assert_eq!(m.named(&format!("{p}api.Metadata.client_requests")), 3);
    c.end(&mut m);
    assert_eq!(m.named(&conns), 0);
    c.end(&mut m);
    assert_eq!(m.named(&conns), 0, "ended twice, given back once");
}

#[test]
fn a_client_that_names_itself_later_moves_from_unknown() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    exchange(&mut c, &metadata(1, "late"), &metadata_response(1), &mut m);
    let p = "client.late.principal.none.software.";
    assert_eq!(
        m.named(&format!("{p}unknown.version.unknown.client_connections")),
        1
    );
    exchange(
        &mut c,
        &api_versions(2, "late", ("kafka-python", "2.0.2")),
        &versions_response(2),
        &mut m,
    );
    assert_eq!(
        m.named(&format!("{p}unknown.version.unknown.client_connections")),
        0
    );
    assert_eq!(
        m.named(&format!("{p}kafka-python.version.2.0.2.client_connections")),
        1
    );
}

#[test]
fn principal_and_odd_client_ids_become_plain_labels() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    c.set_peer(Peer {
        principal: Some("spiffe://cluster.local/ns/a/sa/b".into()),
        source_ip: None,
    });
    exchange(&mut c, &metadata(1, "a.b c"), &metadata_response(1), &mut m);
    c.flush(&mut m);
    assert_eq!(
        m.named(
            "client.a_b_c.principal.spiffe___cluster_local_ns_a_sa_b.api.Metadata.client_requests"
        ),
        1
    );
}

#[test]
fn clients_past_the_cap_are_counted_under_other_and_the_series_add_up() {
    let cfg = config(r#"{"client_metrics": {"max_clients": 3, "latency_histograms": false}}"#);
    // One store for every connection: the cap is per Envoy process, not per connection.
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    for i in 0..50 {
        let mut c = conn(&cfg, &store, i);
        let client = format!("id-{i}");
        exchange(&mut c, &metadata(1, &client), &metadata_response(1), &mut m);
        exchange(&mut c, &metadata(2, &client), &metadata_response(2), &mut m);
        c.end(&mut m);
    }
    let requests: Vec<(&String, &i64)> = m
        .named
        .iter()
        .filter(|(k, _)| k.ends_with(".api.Metadata.client_requests"))
        .collect();
    assert_eq!(requests.len(), 4, "3 clients and other: {requests:?}");
    assert_eq!(requests.iter().map(|(_, v)| **v).sum::<i64>(), 100);
    assert_eq!(
        m.named("client.other.principal.other.api.Metadata.client_requests"),
        94
    );
    assert!(m.named_samples.is_empty(), "latency histograms are off");
    // A client admitted before the cap filled keeps its series.
    let mut c = conn(&cfg, &store, 99);
    exchange(&mut c, &metadata(1, "id-0"), &metadata_response(1), &mut m);
    c.end(&mut m);
    assert_eq!(
        m.named("client.id-0.principal.none.api.Metadata.client_requests"),
        3
    );
}

#[test]
fn off_unless_configured() {
    let cfg = config("{}");
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    exchange(&mut c, &metadata(1, "app"), &metadata_response(1), &mut m);
    c.end(&mut m);
    assert!(m.named.is_empty(), "{:?}", m.named);
}

#[test]
fn bad_client_metrics_configuration_names_the_field() {
    for (doc, field) in [
        (
            r#"{"client_metrics": {"max_clients": -1}}"#,
            "client_metrics.max_clients",
        ),
        (
            r#"{"client_metrics": {"max_clients": 100001}}"#,
            "client_metrics.max_clients",
        ),
        (r#"{"client_metrics": {"max_client": 5}}"#, "client_metrics"),
        (
            r#"{"client_metrics": {"latency_histograms": "yes"}}"#,
            "client_metrics.latency_histograms",
        ),
    ] {
        let err = config::parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(field), "{doc}: {err}");
    }
}

#[test]
fn requests_never_answered_are_counted_when_the_connection_ends() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    exchange(&mut c, &metadata(1, "app"), &metadata_response(1), &mut m);
    // Two more requests: the broker answers only the second (the first is passed over), and a
    // third is still waiting when the connection ends.
    for corr in 2..5 {
        let req = metadata(corr, "app");
        assert_eq!(drive(&mut c, &req, 64, true, &mut m).unwrap(), req);
    }
    let resp = metadata_response(3);
    assert_eq!(drive(&mut c, &resp, 64, false, &mut m).unwrap(), resp);
    c.end(&mut m);
    let p = "client.app.principal.none.api.Metadata.";
    assert_eq!(m.named(&format!("{p}client_requests")), 4);
    assert_eq!(m.named(&format!("{p}client_responses")), 2);
}

fn produce(corr: i32, client: &str, topics: &[(&str, &[usize])], acks: i16) -> Vec<u8> {
    let data = topics
        .iter()
        .map(|(name, batches)| {
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(record_set(batches, 0)))])
        })
        .collect();
    let body = ProduceRequest::default()
        .with_acks(acks)
        .with_topic_data(data);
    request(ApiKey::Produce, 9, corr, client, &body)
}

fn produce_response(corr: i32) -> Vec<u8> {
    response(ApiKey::Produce, 9, corr, &ProduceResponse::default())
}

fn fetch(corr: i32, client: &str) -> Vec<u8> {
    request(ApiKey::Fetch, 12, corr, client, &FetchRequest::default())
}

fn fetch_response(corr: i32, topics: &[(&str, &[usize])]) -> Vec<u8> {
    let responses = topics
        .iter()
        .map(|(name, batches)| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                .with_partitions(vec![PartitionData::default()
                    .with_partition_index(0)
                    .with_high_watermark(100)
                    .with_records(Some(record_set(batches, 10)))])
        })
        .collect();
    let body = FetchResponse::default().with_responses(responses);
    response(ApiKey::Fetch, 12, corr, &body)
}

fn record_set_len(batches: &[usize]) -> i64 {
    record_set(batches, 0).len() as i64
}

#[test]
fn produced_and_fetched_bytes_and_records_per_client_and_topic() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    let produced: &[(&str, &[usize])] = &[("orders.v1", &[3, 2]), ("audit", &[1])];
    exchange(
        &mut c,
        &produce(1, "app", produced, -1),
        &produce_response(1),
        &mut m,
    );
    // acks=0: no response; counted when the request has passed.
    let req = produce(2, "app", &[("orders.v1", &[4])], 0);
    assert_eq!(drive(&mut c, &req, 5, true, &mut m).unwrap(), req);
    let fetched: &[(&str, &[usize])] = &[("orders.v1", &[7]), ("audit", &[1, 1, 1])];
    exchange(
        &mut c,
        &fetch(3, "app"),
        &fetch_response(3, fetched),
        &mut m,
    );
    c.end(&mut m);
    let t = |topic: &str, what: &str| {
        m.named(&format!(
            "client.app.principal.none.topic.{topic}.client_topic_{what}"
        ))
    };
    assert_eq!(t("orders.v1", "produced_records"), 9);
    assert_eq!(
        t("orders.v1", "produced_bytes"),
        record_set_len(&[3, 2]) + record_set_len(&[4])
    );
    assert_eq!(t("audit", "produced_records"), 1);
    assert_eq!(t("audit", "produced_bytes"), record_set_len(&[1]));
    assert_eq!(t("orders.v1", "fetched_records"), 7);
    assert_eq!(t("audit", "fetched_records"), 3);
    assert_eq!(t("audit", "fetched_bytes"), record_set_len(&[1, 1, 1]));
    // Every request still counted once.
    let p = "client.app.principal.none.api.";
    assert_eq!(m.named(&format!("{p}Produce.client_requests")), 2);
    assert_eq!(m.named(&format!("{p}Fetch.client_responses")), 1);
}

#[test]
fn topics_past_the_cap_are_counted_under_other() {
    let cfg = config(r#"{"client_metrics": {"max_topics": 2}}"#);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    let names: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    let topics: Vec<(&str, &[usize])> = names.iter().map(|n| (n.as_str(), &[1][..])).collect();
    exchange(
        &mut c,
        &produce(1, "app", &topics, 1),
        &produce_response(1),
        &mut m,
    );
    c.end(&mut m);
    let records: Vec<(&String, &i64)> = m
        .named
        .iter()
        .filter(|(k, _)| k.ends_with("client_topic_produced_records"))
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(
        m.named("client.app.principal.none.topic.other.client_topic_produced_records"),
        4
    );
}

#[test]
fn no_topic_series_when_max_topics_is_zero() {
    let cfg = config(r#"{"client_metrics": {"max_topics": 0}}"#);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    exchange(
        &mut c,
        &produce(1, "app", &[("a", &[1])], 1),
        &produce_response(1),
        &mut m,
    );
    c.end(&mut m);
    assert!(
        m.named.keys().all(|k| !k.contains(".topic.")),
        "{:?}",
        m.named
    );
}

fn fetch_response_by_id(corr: i32, id: [u8; 16], batches: &[usize]) -> Vec<u8> {
    let topic = FetchableTopicResponse::default()
        .with_topic_id(uuid::Uuid::from_bytes(id))
        .with_partitions(vec![PartitionData::default()
            .with_partition_index(0)
            .with_records(Some(record_set(batches, 0)))]);
    let body = FetchResponse::default().with_responses(vec![topic]);
    response(ApiKey::Fetch, 13, corr, &body)
}

#[test]
fn topics_fetched_by_id_are_named_from_metadata_responses() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let id = [7u8; 16];
    let fetch13 = |corr| request(ApiKey::Fetch, 13, corr, "app", &FetchRequest::default());
    // Before any Metadata response: the id is the label.
    let mut c = conn(&cfg, &store, 1);
    exchange(
        &mut c,
        &fetch13(1),
        &fetch_response_by_id(1, id, &[2]),
        &mut m,
    );
    c.end(&mut m);
    let hex = "07".repeat(16);
    let t = |m: &RecordingSink, topic: &str| {
        m.named(&format!(
            "client.app.principal.none.topic.{topic}.client_topic_fetched_records"
        ))
    };
    assert_eq!(t(&m, &format!("id-{hex}")), 2);
    // A Metadata v12 response on another connection (another worker shares the store) names it.
    let metadata = MetadataResponse::default().with_topics(vec![MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str("payments.v2"))))
        .with_topic_id(uuid::Uuid::from_bytes(id))]);
    // Shown whole at once (the common case: one read holds it).
    let mut other = conn(&cfg, &store, 2);
    let req = request(ApiKey::Metadata, 12, 1, "tool", &MetadataRequest::default());
    let resp = response(ApiKey::Metadata, 12, 1, &metadata);
    assert_eq!(drive(&mut other, &req, 1 << 20, true, &mut m).unwrap(), req);
    assert_eq!(
        drive(&mut other, &resp, 1 << 20, false, &mut m).unwrap(),
        resp
    );
    other.end(&mut m);
    assert_eq!(
        m.named("client.tool.principal.none.api.Metadata.client_responses"),
        1
    );
    let mut c = conn(&cfg, &store, 3);
    exchange(
        &mut c,
        &fetch13(1),
        &fetch_response_by_id(1, id, &[3]),
        &mut m,
    );
    c.end(&mut m);
    assert_eq!(t(&m, "payments.v2"), 3);
    assert_eq!(t(&m, &format!("id-{hex}")), 2);
}

#[test]
fn group_members_per_client_join_and_leave() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("payments")))
        .with_protocol_type(StrBytes::from_static_str("consumer"));
    let gauge = "client.reader.principal.none.group.payments.client_group_members";
    for (corr, version) in [(1, 5), (2, 9)] {
        // Non-flexible and flexible versions both name the group first.
        let req = request(ApiKey::JoinGroup, version, corr, "reader", &join);
        let resp = response(
            ApiKey::JoinGroup,
            version,
            corr,
            &JoinGroupResponse::default(),
        );
        exchange(&mut c, &req, &resp, &mut m);
        assert_eq!(m.named(gauge), 1, "v{version}: counted once per connection");
    }
    let hb =
        HeartbeatRequest::default().with_group_id(GroupId(StrBytes::from_static_str("payments")));
    exchange(
        &mut c,
        &request(ApiKey::Heartbeat, 4, 3, "reader", &hb),
        &response(ApiKey::Heartbeat, 4, 3, &HeartbeatResponse::default()),
        &mut m,
    );
    assert_eq!(m.named(gauge), 1);
    // A second consumer with the same client id: two members.
    let mut other = conn(&cfg, &store, 2);
    exchange(
        &mut other,
        &request(ApiKey::Heartbeat, 4, 1, "reader", &hb),
        &response(ApiKey::Heartbeat, 4, 1, &HeartbeatResponse::default()),
        &mut m,
    );
    assert_eq!(m.named(gauge), 2);
    let leave =
        LeaveGroupRequest::default().with_group_id(GroupId(StrBytes::from_static_str("payments")));
    exchange(
        &mut c,
        &request(ApiKey::LeaveGroup, 4, 4, "reader", &leave),
        &response(ApiKey::LeaveGroup, 4, 4, &LeaveGroupResponse::default()),
        &mut m,
    );
    assert_eq!(m.named(gauge), 1);
    other.end(&mut m);
    assert_eq!(m.named(gauge), 0);
}

#[test]
fn a_metadata_response_read_whole_counts_in_the_held_budget() {
    let cfg = config(ON);
    let id = [9u8; 16];
    // Large enough to be collected (more than the first KiB read anyway).
    let mut topics: Vec<MetadataResponseTopic> = (0..100)
        .map(|i| {
            MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_string(
                format!("filler-topic-{i}"),
            ))))
        })
        .collect();
    topics.push(
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("named"))))
            .with_topic_id(uuid::Uuid::from_bytes(id)),
    );
    let metadata = response(
        ApiKey::Metadata,
        12,
        1,
        &MetadataResponse::default().with_topics(topics),
    );
    assert!(metadata.len() > 2048);
    for (budget, learned) in [(1024, false), (1 << 20, true)] {
        let store = Rc::new(LocalStore::default());
        let shared: Rc<dyn BucketStore> = store.clone();
        let held = HeldBudget::new(budget);
        let mut c = KafkaConnection::with_shared(1, cfg.clone(), held.clone(), shared);
        let mut m = RecordingSink::default();
        let req = request(ApiKey::Metadata, 12, 1, "tool", &MetadataRequest::default());
        exchange(&mut c, &req, &metadata, &mut m);
        assert_eq!(held.in_use(), 0, "budget {budget}: given back");
        let name = store.recall(&kafka_filter::connection::topic_id_key(&id));
        assert_eq!(name.is_some(), learned, "budget {budget}");
    }
}

/// Under a name-conversion rule, frames whose head or whole is rewritten are still counted per
/// topic, by the names the client uses: requests as sent, responses as the client gets them.
#[test]
fn rewritten_frames_are_counted_per_topic_by_the_client_names() {
    let cfg = config(
        r#"{"client_metrics": {}, "rules": [
        {"name": "t", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}}]}"#,
    );
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    let client = "team-a-app";
    for chunk in [1, 7, 4096] {
        // One topic: its head is rewritten as it streams. Two: held and rewritten whole.
        for (corr, topics) in [
            (1, &[("orders", &[3usize, 2][..])][..]),
            (2, &[("orders", &[4][..]), ("audit", &[1][..])][..]),
        ] {
            let req = produce(corr, client, topics, -1);
            let out = drive(&mut c, &req, chunk, true, &mut m).unwrap();
            assert_ne!(out, req, "renamed for the broker");
            drive(&mut c, &produce_response(corr), chunk, false, &mut m).unwrap();
        }
        for (corr, topics) in [
            (3, &[("team-a.orders", &[7usize][..])][..]),
            (
                4,
                &[("team-a.orders", &[1][..]), ("team-a.audit", &[2, 2][..])][..],
            ),
        ] {
            drive(&mut c, &fetch(corr, client), chunk, true, &mut m).unwrap();
            let resp = fetch_response(corr, topics);
            let out = drive(&mut c, &resp, chunk, false, &mut m).unwrap();
            assert_ne!(out, resp, "renamed for the client");
        }
    }
    c.end(&mut m);
    let t = |topic: &str, what: &str| {
        m.named(&format!(
            "client.{client}.principal.none.topic.{topic}.client_topic_{what}"
        ))
    };
    assert_eq!(t("orders", "produced_records"), 3 * 9);
    assert_eq!(
        t("orders", "produced_bytes"),
        3 * (record_set_len(&[3, 2]) + record_set_len(&[4]))
    );
    assert_eq!(t("audit", "produced_records"), 3);
    assert_eq!(t("orders", "fetched_records"), 3 * 8);
    assert_eq!(t("audit", "fetched_records"), 3 * 4);
    assert_eq!(t("audit", "fetched_bytes"), 3 * record_set_len(&[2, 2]));
    assert_eq!(t("team-a.orders", "fetched_records"), 0, "no broker names");
}

/// Responses by top-level error code per client and API, and the throttle time the broker sent,
/// read from the response's first bytes however the response arrives; under a rule too (the
/// response head is read as the broker sent it, before any stage).
#[test]
fn error_codes_and_broker_throttle_time_per_client() {
    for json in [
        ON,
        r#"{"client_metrics": {}, "rules": [{"name": "t", "match": {"client_id": {"prefix": "team-"}},
            "topics": {"prefix": "x."}, "groups": {"add_suffix": "-x"}}]}"#,
    ] {
        let cfg = config(json);
        for (client, chunk) in [("app", 1), ("team-app", 3), ("app", 4096)] {
            let store = Rc::new(LocalStore::default());
            let mut m = RecordingSink::default();
            let mut c = conn(&cfg, &store, 1);
            let join = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_protocol_type(StrBytes::from_static_str("consumer"));
            for (corr, version, error, throttle) in [(1, 5, 79, 250), (2, 9, 79, 0), (3, 9, 0, 40)]
            {
                let req = request(ApiKey::JoinGroup, version, corr, client, &join);
                let body = JoinGroupResponse::default()
                    .with_error_code(error)
                    .with_throttle_time_ms(throttle);
                let resp = response(ApiKey::JoinGroup, version, corr, &body);
                drive(&mut c, &req, chunk, true, &mut m).unwrap();
                drive(&mut c, &resp, chunk, false, &mut m).unwrap();
            }
            // A code Kafka does not define counts as `unknown`; no top-level code counts none.
            let hb =
                HeartbeatRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g")));
            drive(
                &mut c,
                &request(ApiKey::Heartbeat, 4, 4, client, &hb),
                chunk,
                true,
                &mut m,
            )
            .unwrap();
            let resp = response(
                ApiKey::Heartbeat,
                4,
                4,
                &HeartbeatResponse::default().with_error_code(9999),
            );
            drive(&mut c, &resp, chunk, false, &mut m).unwrap();
            exchange(&mut c, &metadata(5, client), &metadata_response(5), &mut m);
            c.end(&mut m);
            let p = format!("client.{client}.principal.none.");
            let mut errors: Vec<(String, i64)> = m
                .named
                .iter()
                .filter(|(n, _)| n.ends_with(".client_response_errors"))
                .map(|(n, v)| (n.clone(), *v))
                .collect();
            errors.sort();
            assert_eq!(
                errors,
                vec![
                    (
                        format!("{p}api.Heartbeat.error.unknown.client_response_errors"),
                        1
                    ),
                    (
                        format!("{p}api.JoinGroup.error.MemberIdRequired.client_response_errors"),
                        2
                    ),
                ],
                "{json} {client} chunk {chunk}"
            );
            assert_eq!(m.named(&format!("{p}client_broker_throttled")), 2);
            assert_eq!(m.named(&format!("{p}client_broker_throttle_ms")), 290);
        }
    }
}

/// A Produce response keeps the broker's throttle time after its results: read from the whole
/// response when it is small (it is, one partition's answer being some 50 bytes).
#[test]
fn the_broker_throttle_time_of_produce_responses() {
    let cfg = config(ON);
    for chunk in [1, 7, 4096] {
        let store = Rc::new(LocalStore::default());
        let mut m = RecordingSink::default();
        let mut c = conn(&cfg, &store, 1);
        for (corr, throttle) in [(1, 300), (2, 0), (3, 25)] {
            let req = produce(corr, "app", &[("orders", &[2])], -1);
            let resp = response(
                ApiKey::Produce,
                9,
                corr,
                &ProduceResponse::default().with_throttle_time_ms(throttle),
            );
            drive(&mut c, &req, chunk, true, &mut m).unwrap();
            drive(&mut c, &resp, chunk, false, &mut m).unwrap();
        }
        c.end(&mut m);
        let p = "client.app.principal.none.";
        assert_eq!(
            m.named(&format!("{p}client_broker_throttled")),
            2,
            "chunk {chunk}"
        );
        assert_eq!(m.named(&format!("{p}client_broker_throttle_ms")), 325);
    }
}

/// Produce and Fetch answer per partition: a response is counted under its first partition in
/// error (Fetch from the walk that counts its records, Produce from the whole small response).
#[test]
fn partition_errors_of_produce_and_fetch_responses() {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    let fetched = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("orders")))
        .with_partitions(vec![
            PartitionData::default()
                .with_partition_index(0)
                .with_records(Some(record_set(&[1], 0))),
            PartitionData::default()
                .with_partition_index(1)
                .with_error_code(6),
        ])]);
    exchange(
        &mut c,
        &fetch(1, "app"),
        &response(ApiKey::Fetch, 12, 1, &fetched),
        &mut m,
    );
    let produced = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
        .with_name(TopicName(StrBytes::from_static_str("orders")))
        .with_partition_responses(vec![PartitionProduceResponse::default()
            .with_index(0)
            .with_error_code(19)])]);
    exchange(
        &mut c,
        &produce(2, "app", &[("orders", &[1])], -1),
        &response(ApiKey::Produce, 9, 2, &produced),
        &mut m,
    );
    c.end(&mut m);
    let p = "client.app.principal.none.api.";
    assert_eq!(
        m.named(&format!(
            "{p}Fetch.error.NotLeaderOrFollower.client_response_errors"
        )),
        1
    );
    assert_eq!(
        m.named(&format!(
            "{p}Produce.error.NotEnoughReplicas.client_response_errors"
        )),
        1
    );
}
