//! Broker addresses rewritten in the responses that carry them, through a whole connection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::{drive, offering, request_from as request, response};
use kafka_filter::config::{self, Config};
use kafka_filter::connection::KafkaConnection;
use kafka_filter::metrics::RecordingSink;
use kafka_filter::pipeline::refusal::substitute_request;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

const CFG: &str = r#"{"broker_addresses": {"map": {"1": "proxy-a:19091"},
    "host": "proxy-{id}.example", "port_base": 20000}}"#;
const ONLY_MAP: &str = r#"{"broker_addresses": {"map": {"1": "proxy-a:19091"}}}"#;

fn config(json: &str) -> Rc<Config> {
    Rc::new(config::parse(json.as_bytes()).unwrap())
}

fn answered<T: Decodable>(bytes: &[u8], api: ApiKey, version: i16, corr: i32) -> T {
    let mut b = Bytes::copy_from_slice(&bytes[4..]);
    let h = ResponseHeader::decode(&mut b, api.response_header_version(version)).unwrap();
    assert_eq!(h.correlation_id, corr);
    T::decode(&mut b, version).unwrap()
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn metadata_brokers(ids: &[i32]) -> MetadataResponse {
    MetadataResponse::default().with_brokers(
        ids.iter()
            .map(|id| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(*id))
                    .with_host(s("10.0.0.9"))
                    .with_port(9092 + id)
            })
            .collect(),
    )
}

/// (id, host, port) of each broker a Metadata response lists.
fn listed(got: &MetadataResponse) -> Vec<(i32, String, i32)> {
    got.brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect()
}

fn through(
    cfg: &str,
    api: ApiKey,
    v: i16,
    req_body: &impl kafka_protocol::protocol::Encodable,
    resp: &impl kafka_protocol::protocol::Encodable,
) -> (Vec<u8>, RecordingSink) {
    let mut conn = KafkaConnection::new(1, config(cfg));
    let mut m = RecordingSink::default();
    let req = request(api, v, 1, "app", req_body);
    assert_eq!(drive(&mut conn, &req, 1000, true, &mut m).unwrap(), req);
    let back = drive(&mut conn, &response(api, v, 1, resp), 7, false, &mut m).unwrap();
    (back, m)
}

/// What a client under `CFG` is offered when the broker offers `body` (ApiVersions v3).
fn versions_through(body: &ApiVersionsResponse) -> ApiVersionsResponse {
    let (back, _) = through(
        CFG,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
        body,
    );
    answered(&back, ApiKey::ApiVersions, 3, 1)
}

#[test]
fn metadata_brokers_get_the_proxy_addresses() {
    let (back, m) = through(
        CFG,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default(),
        &metadata_brokers(&[1, 2]),
    );
    let got: MetadataResponse = answered(&back, ApiKey::Metadata, 12, 1);
    assert_eq!(
        listed(&got),
        [
            (1, "proxy-a".into(), 19091),
            (2, "proxy-2.example".into(), 20002)
        ]
    );
    assert_eq!(m.named("broker_addresses_rewritten"), 1);
    assert_eq!(m.named("broker_addresses_unmapped"), 0);
}

#[test]
fn a_host_per_broker_on_one_port() {
    let cfg = r#"{"broker_addresses": {"host": "kafka-{id}.proxy.example", "port": 9092}}"#;
    let (back, m) = through(
        cfg,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default(),
        &metadata_brokers(&[1, 2, 3]),
    );
    let got: MetadataResponse = answered(&back, ApiKey::Metadata, 12, 1);
    assert_eq!(
        listed(&got),
        [
            (1, "kafka-1.proxy.example".into(), 9092),
            (2, "kafka-2.proxy.example".into(), 9092),
            (3, "kafka-3.proxy.example".into(), 9092)
        ]
    );
    assert_eq!(m.named("broker_addresses_unmapped"), 0);
}

#[test]
fn an_unmapped_broker_is_left_out_or_kept_and_always_counted() {
    let (back, m) = through(
        ONLY_MAP,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default(),
        &metadata_brokers(&[1, 2]),
    );
    let got: MetadataResponse = answered(&back, ApiKey::Metadata, 12, 1);
    assert_eq!(
        got.brokers.iter().map(|b| b.node_id.0).collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(m.named("broker_addresses_unmapped"), 1);
    let keep = r#"{"broker_addresses": {"map": {"1": "proxy-a:19091"}, "unmapped": "keep"}}"#;
    let (back, m) = through(
        keep,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default(),
        &metadata_brokers(&[1, 2]),
    );
    let got: MetadataResponse = answered(&back, ApiKey::Metadata, 12, 1);
    assert_eq!(got.brokers[1].host.as_str(), "10.0.0.9");
    assert_eq!(m.named("broker_addresses_unmapped"), 1);
}

#[test]
fn coordinators_and_cluster_descriptions_too() {
    // FindCoordinator v3 (one key) and v4 (per key); unmapped: COORDINATOR_NOT_AVAILABLE.
    let v3 = FindCoordinatorResponse::default()
        .with_node_id(BrokerId(1))
        .with_host(s("10.0.0.9"))
        .with_port(9093);
    let (back, _) = through(
        CFG,
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(s("g")),
        &v3,
    );
    let got: FindCoordinatorResponse = answered(&back, ApiKey::FindCoordinator, 3, 1);
    assert_eq!((got.host.as_str(), got.port), ("proxy-a", 19091));
    let v4 = FindCoordinatorResponse::default().with_coordinators(vec![
        Coordinator::default()
            .with_key(s("g"))
            .with_node_id(BrokerId(1))
            .with_host(s("10.0.0.9"))
            .with_port(9093),
        Coordinator::default()
            .with_key(s("h"))
            .with_node_id(BrokerId(2))
            .with_host(s("10.0.0.9"))
            .with_port(9094),
    ]);
    let req = FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")]);
    let (back, m) = through(ONLY_MAP, ApiKey::FindCoordinator, 4, &req, &v4);
    let got: FindCoordinatorResponse = answered(&back, ApiKey::FindCoordinator, 4, 1);
    let c: Vec<_> = got
        .coordinators
        .iter()
        .map(|c| (c.key.to_string(), c.error_code, c.host.to_string(), c.port))
        .collect();
    assert_eq!(
        c,
        [
            ("g".into(), 0, "proxy-a".into(), 19091),
            ("h".into(), 15, "".into(), -1)
        ]
    );
    assert_eq!(m.named("broker_addresses_unmapped"), 1);
    let cluster =
        DescribeClusterResponse::default().with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(3))
            .with_host(s("10.0.0.9"))
            .with_port(9095)]);
    let (back, _) = through(
        CFG,
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default(),
        &cluster,
    );
    let got: DescribeClusterResponse = answered(&back, ApiKey::DescribeCluster, 1, 1);
    assert_eq!(
        (got.brokers[0].host.as_str(), got.brokers[0].port),
        ("proxy-3.example", 20003)
    );
}

#[test]
fn versions_that_carry_endpoints_elsewhere_are_not_offered_nor_answered() {
    let body = offering(&[(0, 3, 13), (1, 4, 17), (3, 0, 12)]);
    let got = versions_through(&body);
    let max: Vec<_> = got
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.max_version))
        .collect();
    assert_eq!(max, [(0, 9), (1, 15), (3, 12)]);
    // A Produce v10 anyway: never forwarded (its response could name a broker's own address).
    let mut conn = KafkaConnection::new(1, config(CFG));
    let mut m = RecordingSink::default();
    let req = request(
        ApiKey::Produce,
        10,
        5,
        "app",
        &ProduceRequest::default().with_acks(1),
    );
    assert_eq!(
        drive(&mut conn, &req, 1000, true, &mut m).unwrap(),
        substitute_request(5)
    );
}

#[test]
fn bad_configurations_name_the_field() {
    for (doc, field) in [
        (r#"{"broker_addresses": {}}"#, "broker_addresses.map"),
        (
            r#"{"broker_addresses": {"map": {"1": "nope"}}}"#,
            "broker_addresses.map.1",
        ),
        (
            r#"{"broker_addresses": {"host": "h"}}"#,
            "broker_addresses.port_base",
        ),
        (
            r#"{"broker_addresses": {"host": "h", "port": 9092}}"#,
            "broker_addresses.host",
        ),
        (
            r#"{"broker_addresses": {"map": {"1": "a:1"}, "unmapped": "hide"}}"#,
            "broker_addresses.unmapped",
        ),
    ] {
        let err = config::parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(field), "{doc}: {err}");
    }
}

#[test]
fn what_the_filter_cannot_read_closes_the_connection() {
    // An unknown API key (its response could carry any address).
    let mut conn = KafkaConnection::new(1, config(CFG));
    let mut m = RecordingSink::default();
    let unknown = common::bare_request(999, 0, 1, &[]);
    assert_eq!(drive(&mut conn, &unknown, 1000, true, &mut m), None);
    // A Metadata request whose client id is not UTF-8: its header does not decode.
    let mut conn = KafkaConnection::new(1, config(CFG));
    let mut bad = Vec::new();
    bad.extend_from_slice(&(ApiKey::Metadata as i16).to_be_bytes());
    bad.extend_from_slice(&4i16.to_be_bytes());
    bad.extend_from_slice(&2i32.to_be_bytes());
    bad.extend_from_slice(&2i16.to_be_bytes());
    bad.extend_from_slice(&[0xff, 0xfe]);
    bad.extend_from_slice(&(-1i32).to_be_bytes());
    bad.push(0);
    assert_eq!(
        drive(&mut conn, &common::frame(&bad), 1000, true, &mut m),
        None
    );
    assert_eq!(m.named("broker_addresses_closed"), 2);
}

#[test]
fn share_groups_are_not_offered() {
    let body = offering(&[(ApiKey::ShareFetch as i16, 0, 1), (3, 0, 12), (999, 0, 0)]);
    let got = versions_through(&body);
    assert_eq!(
        got.api_keys.iter().map(|k| k.api_key).collect::<Vec<_>>(),
        [3]
    );
    let err = config::parse(
        br#"{"on_frame_error": "pass_through", "broker_addresses": {"map": {"1": "a:1"}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("on_frame_error"), "{err}");
}

#[test]
fn a_response_that_would_grow_past_the_held_frame_limit_is_refused() {
    let cfg = r#"{"max_held_frame_bytes": 4096, "broker_addresses": {"host": "a-very-long-proxy-host-name-for-every-broker-{id}.example", "port_base": 10000}}"#;
    let ids: Vec<i32> = (1..200).collect();
    let resp = metadata_brokers(&ids);
    let mut conn = KafkaConnection::new(1, config(cfg));
    let mut m = RecordingSink::default();
    let req = request(ApiKey::Metadata, 12, 1, "app", &MetadataRequest::default());
    drive(&mut conn, &req, 1000, true, &mut m).unwrap();
    let back = drive(
        &mut conn,
        &response(ApiKey::Metadata, 12, 1, &resp),
        1 << 20,
        false,
        &mut m,
    );
    // Refused (or too large to hold at all): never the brokers' own addresses.
    if let Some(back) = back {
        let got: MetadataResponse = answered(&back, ApiKey::Metadata, 12, 1);
        assert!(got.brokers.is_empty(), "{} brokers", got.brokers.len());
    }
}
