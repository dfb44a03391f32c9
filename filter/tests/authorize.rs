//! ACLs through a whole connection (frames in, frames out): what reaches the broker, what the
//! client gets back, and that what the filter cannot read is denied.
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
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

const POLICY: &str = r#"{"acls": {"default": "deny", "entries": [
  {"match": {"client_id": {"exact": "writer"}}, "permission": "allow",
   "operations": ["Write", "Describe"], "resource_type": "topic", "pattern_type": "prefixed", "name": "orders"},
  {"match": {"client_id": {"exact": "reader"}}, "permission": "allow",
   "operations": ["Read", "Describe"], "resource_type": "topic", "name": "orders"},
  {"match": {"client_id": {"exact": "reader"}}, "permission": "allow",
   "operations": ["Read", "Describe"], "resource_type": "group", "pattern_type": "prefixed", "name": "readers-"},
  {"match": {"client_id": {"exact": "writer"}}, "permission": "deny",
   "operations": ["All"], "resource_type": "topic", "name": "orders-secret"}
]}}"#;

fn config(json: &str) -> Rc<Config> {
    Rc::new(config::parse(json.as_bytes()).unwrap())
}

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

fn produce(corr: i32, client: &str, topics: &[&str], acks: i16) -> Vec<u8> {
    let body = ProduceRequest::default().with_acks(acks).with_topic_data(
        topics
            .iter()
            .map(|t| {
                TopicProduceData::default()
                    .with_name(name(t))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(common::record_set(&[2], 0)))])
            })
            .collect(),
    );
    request(ApiKey::Produce, 9, corr, client, &body)
}

fn produce_response(corr: i32, topics: &[&str]) -> Vec<u8> {
    let body = ProduceResponse::default().with_responses(
        topics
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(name(t))
                    .with_partition_responses(vec![PartitionProduceResponse::default()
                        .with_index(0)
                        .with_base_offset(5)])
            })
            .collect(),
    );
    response(ApiKey::Produce, 9, corr, &body)
}

/// The request body a forwarded frame carries (after its header), decoded.
fn forwarded<T: Decodable>(bytes: &[u8], api: ApiKey, version: i16) -> T {
    let mut b = Bytes::copy_from_slice(&bytes[4..]);
    RequestHeader::decode(&mut b, api.request_header_version(version)).unwrap();
    T::decode(&mut b, version).unwrap()
}

fn answered<T: Decodable>(bytes: &[u8], api: ApiKey, version: i16, corr: i32) -> T {
    let mut b = Bytes::copy_from_slice(&bytes[4..]);
    let h = ResponseHeader::decode(&mut b, api.response_header_version(version)).unwrap();
    assert_eq!(h.correlation_id, corr);
    let r = T::decode(&mut b, version).unwrap();
    assert!(b.is_empty(), "trailing bytes");
    r
}

/// What the client gets once the broker answers the stand-in of request `corr`.
fn answer_stand_in(conn: &mut KafkaConnection, corr: i32, m: &mut RecordingSink) -> Vec<u8> {
    let stand_in = response(
        ApiKey::ApiVersions,
        0,
        corr,
        &ApiVersionsResponse::default(),
    );
    drive(conn, &stand_in, 1000, false, m).unwrap()
}

fn produce_errors(r: &ProduceResponse) -> Vec<(String, i16)> {
    let mut v: Vec<(String, i16)> = r
        .responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(|p| (t.name.to_string(), p.error_code))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_mixed_produce_forwards_the_allowed_topic_and_merges_the_denied_one() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let req = produce(7, "writer", &["orders", "payments", "orders-secret"], 1);
    let fwd = drive(&mut conn, &req, 100, true, &mut m).unwrap();
    let sent: ProduceRequest = forwarded(&fwd, ApiKey::Produce, 9);
    let names: Vec<_> = sent.topic_data.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["orders"]);
    let back = drive(
        &mut conn,
        &produce_response(7, &["orders"]),
        9,
        false,
        &mut m,
    )
    .unwrap();
    let got: ProduceResponse = answered(&back, ApiKey::Produce, 9, 7);
    assert_eq!(
        produce_errors(&got),
        [
            ("orders".into(), 0),
            ("orders-secret".into(), 29),
            ("payments".into(), 29)
        ]
    );
    conn.flush(&mut m);
    assert_eq!(m.named("acl.operation.Write.resource.topic.denied"), 2);
    assert_eq!(m.named("acl.operation.Write.resource.topic.allowed"), 1);
    assert_eq!(m.named("acl_requests_split"), 1);
    assert_eq!(m.named("acl_audit_lines"), 3, "connection + two denials");
}

#[test]
fn a_wholly_denied_produce_never_reaches_the_broker() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let fwd = drive(
        &mut conn,
        &produce(3, "reader", &["orders"], -1),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert_eq!(fwd, substitute_request(3));
    let back = answer_stand_in(&mut conn, 3, &mut m);
    let got: ProduceResponse = answered(&back, ApiKey::Produce, 9, 3);
    assert_eq!(produce_errors(&got), [("orders".into(), 29)]);
    assert_eq!(got.responses[0].partition_responses[0].base_offset, -1);
    // acks=0: nothing is forwarded and nothing answered.
    let fwd = drive(
        &mut conn,
        &produce(4, "reader", &["orders"], 0),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert!(fwd.is_empty());
}

#[test]
fn a_denied_transactional_id_denies_the_whole_produce() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("orders"))
            .with_partition_data(vec![
                PartitionProduceData::default().with_records(Some(common::record_set(&[1], 0)))
            ])]);
    let fwd = drive(
        &mut conn,
        &request(ApiKey::Produce, 9, 5, "writer", &body),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert_eq!(fwd, substitute_request(5));
    let back = answer_stand_in(&mut conn, 5, &mut m);
    let got: ProduceResponse = answered(&back, ApiKey::Produce, 9, 5);
    assert_eq!(produce_errors(&got), [("orders".into(), 53)]);
}

fn metadata_response(corr: i32, topics: &[(&str, u8)]) -> Vec<u8> {
    let body = MetadataResponse::default().with_topics(
        topics
            .iter()
            .map(|(t, id)| {
                MetadataResponseTopic::default()
                    .with_name(Some(name(t)))
                    .with_topic_id(uuid::Uuid::from_bytes([*id; 16]))
            })
            .collect(),
    );
    response(ApiKey::Metadata, 12, corr, &body)
}

fn metadata_topics(r: &MetadataResponse) -> Vec<(String, i16)> {
    r.topics
        .iter()
        .map(|t| (t.name.as_ref().unwrap().to_string(), t.error_code))
        .collect()
}

#[test]
fn metadata_shows_only_what_may_be_described() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    // All topics: filtered.
    let all = request(
        ApiKey::Metadata,
        12,
        1,
        "reader",
        &MetadataRequest::default().with_topics(None),
    );
    assert_eq!(drive(&mut conn, &all, 1000, true, &mut m).unwrap(), all);
    let back = drive(
        &mut conn,
        &metadata_response(1, &[("orders", 1), ("payments", 2)]),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    let got: MetadataResponse = answered(&back, ApiKey::Metadata, 12, 1);
    assert_eq!(metadata_topics(&got), [("orders".into(), 0)]);
    // Named: the denied one is answered with the error (and no id), the rest forwarded.
    let named = MetadataRequest::default().with_topics(Some(
        ["orders", "payments"]
            .iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
            .collect(),
    ));
    let fwd = drive(
        &mut conn,
        &request(ApiKey::Metadata, 12, 2, "reader", &named),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    let sent: MetadataRequest = forwarded(&fwd, ApiKey::Metadata, 12);
    assert_eq!(sent.topics.unwrap().len(), 1);
    let back = drive(
        &mut conn,
        &metadata_response(2, &[("orders", 1)]),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    let got: MetadataResponse = answered(&back, ApiKey::Metadata, 12, 2);
    assert_eq!(
        metadata_topics(&got),
        [("orders".into(), 0), ("payments".into(), 29)]
    );
    assert!(got.topics[1].topic_id.is_nil());
}

#[test]
fn auto_creation_needs_create() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let body = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("orders")))
        ]));
    let fwd = drive(
        &mut conn,
        &request(ApiKey::Metadata, 12, 1, "reader", &body),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    let sent: MetadataRequest = forwarded(&fwd, ApiKey::Metadata, 12);
    assert!(!sent.allow_auto_topic_creation);
    assert_eq!(m.named("acl_auto_create_prevented"), 1);
}

fn fetch_by_id(corr: i32, id: u8) -> Vec<u8> {
    let body = FetchRequest::default()
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(uuid::Uuid::from_bytes([id; 16]))
            .with_partitions(vec![FetchPartition::default().with_partition(0)])]);
    request(ApiKey::Fetch, 13, corr, "reader", &body)
}

#[test]
fn topic_ids_are_allowed_only_once_named_and_then_by_their_name() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    // Not named yet: denied, answered here.
    let fwd = drive(&mut conn, &fetch_by_id(1, 1), 1000, true, &mut m).unwrap();
    assert_eq!(fwd, substitute_request(1));
    let back = answer_stand_in(&mut conn, 1, &mut m);
    let got: FetchResponse = answered(&back, ApiKey::Fetch, 13, 1);
    assert_eq!(got.responses[0].partitions[0].error_code, 29);
    assert_eq!(got.responses[0].topic_id.as_bytes(), &[1; 16]);
    // A Metadata response names `orders` (id 1) and `payments` (id 2, filtered out).
    let all = request(
        ApiKey::Metadata,
        12,
        2,
        "reader",
        &MetadataRequest::default().with_topics(None),
    );
    drive(&mut conn, &all, 1000, true, &mut m).unwrap();
    drive(
        &mut conn,
        &metadata_response(2, &[("orders", 1), ("payments", 2)]),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    let fwd = drive(&mut conn, &fetch_by_id(3, 1), 1000, true, &mut m).unwrap();
    assert_eq!(fwd, fetch_by_id(3, 1), "orders by id: allowed, untouched");
    // payments' id was never shown to this client: still denied, and split out of a mixed one.
    let body = FetchRequest::default()
        .with_max_bytes(50 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic_id(uuid::Uuid::from_bytes([1; 16]))
                .with_partitions(vec![FetchPartition::default()]),
            FetchTopic::default()
                .with_topic_id(uuid::Uuid::from_bytes([2; 16]))
                .with_partitions(vec![FetchPartition::default()]),
        ]);
    let fwd = drive(
        &mut conn,
        &request(ApiKey::Fetch, 13, 4, "reader", &body),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    let sent: FetchRequest = forwarded(&fwd, ApiKey::Fetch, 13);
    assert_eq!(sent.topics.len(), 1);
    assert!(
        sent.max_bytes < 16 << 20,
        "capped to what can be held: {}",
        sent.max_bytes
    );
    let broker = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic_id(uuid::Uuid::from_bytes([1; 16]))
        .with_partitions(vec![
            PartitionData::default().with_records(Some(common::record_set(&[3], 0)))
        ])]);
    let back = drive(
        &mut conn,
        &response(ApiKey::Fetch, 13, 3, &FetchResponse::default()),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    assert!(!back.is_empty());
    let back = drive(
        &mut conn,
        &response(ApiKey::Fetch, 13, 4, &broker),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    let got: FetchResponse = answered(&back, ApiKey::Fetch, 13, 4);
    let errors: Vec<_> = got
        .responses
        .iter()
        .map(|t| (t.topic_id.as_bytes()[0], t.partitions[0].error_code))
        .collect();
    assert_eq!(errors, [(1, 0), (2, 29)]);
}

#[test]
fn list_groups_and_describe_groups_show_only_allowed_groups() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let req = request(
        ApiKey::ListGroups,
        4,
        1,
        "reader",
        &ListGroupsRequest::default(),
    );
    drive(&mut conn, &req, 1000, true, &mut m).unwrap();
    let groups = ListGroupsResponse::default().with_groups(
        ["readers-1", "other"]
            .iter()
            .map(|g| {
                ListedGroup::default().with_group_id(GroupId(StrBytes::from_string(g.to_string())))
            })
            .collect(),
    );
    let back = drive(
        &mut conn,
        &response(ApiKey::ListGroups, 4, 1, &groups),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    let got: ListGroupsResponse = answered(&back, ApiKey::ListGroups, 4, 1);
    let names: Vec<_> = got.groups.iter().map(|g| g.group_id.to_string()).collect();
    assert_eq!(names, ["readers-1"]);
    let describe = DescribeGroupsRequest::default().with_groups(vec![
        GroupId(StrBytes::from_static_str("readers-1")),
        GroupId(StrBytes::from_static_str("other")),
    ]);
    let fwd = drive(
        &mut conn,
        &request(ApiKey::DescribeGroups, 5, 2, "reader", &describe),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    let sent: DescribeGroupsRequest = forwarded(&fwd, ApiKey::DescribeGroups, 5);
    assert_eq!(sent.groups.len(), 1);
    let broker = DescribeGroupsResponse::default().with_groups(vec![
        kafka_protocol::messages::describe_groups_response::DescribedGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str("readers-1"))),
    ]);
    let back = drive(
        &mut conn,
        &response(ApiKey::DescribeGroups, 5, 2, &broker),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    let got: DescribeGroupsResponse = answered(&back, ApiKey::DescribeGroups, 5, 2);
    let codes: Vec<_> = got
        .groups
        .iter()
        .map(|g| (g.group_id.to_string(), g.error_code))
        .collect();
    assert_eq!(codes, [("readers-1".into(), 0), ("other".into(), 30)]);
}

#[test]
fn a_denied_group_answers_with_the_group_error() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("elsewhere")))
        .with_protocol_type(StrBytes::from_static_str("consumer"));
    let fwd = drive(
        &mut conn,
        &request(ApiKey::JoinGroup, 7, 1, "reader", &join),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert_eq!(fwd, substitute_request(1));
    let back = answer_stand_in(&mut conn, 1, &mut m);
    let got: JoinGroupResponse = answered(&back, ApiKey::JoinGroup, 7, 1);
    assert_eq!(got.error_code, 30);
}

#[test]
fn what_the_filter_cannot_read_is_denied() {
    // An unknown API key: the connection closes (there is no response to answer with).
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let unknown = common::bare_request(999, 0, 1, &[]);
    assert_eq!(drive(&mut conn, &unknown, 1000, true, &mut m), None);
    assert_eq!(m.named("acl_unreadable_denied"), 1);
    // A version newer than the filter knows: never forwarded.
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let newer = common::bare_request(ApiKey::Produce as i16, 99, 2, &[0; 32]);
    let fwd = drive(&mut conn, &newer, 1000, true, &mut m);
    assert!(
        fwd.is_none() || fwd == Some(substitute_request(2)),
        "{fwd:?}"
    );
    // A body that does not decode: refused. (A single-topic Produce is decided from its names:
    // records that do not decode are the broker's to refuse, as without ACLs.)
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut bad = produce(3, "writer", &["orders", "orders-2"], 1);
    let keep = bad.len() - 30;
    bad.truncate(keep);
    let len = (bad.len() - 4) as i32;
    bad[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        drive(&mut conn, &bad, 1000, true, &mut m).unwrap(),
        substitute_request(3)
    );
}

#[test]
fn api_versions_offer_no_topic_id_versions() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let req = request(
        ApiKey::ApiVersions,
        3,
        1,
        "reader",
        &ApiVersionsRequest::default(),
    );
    drive(&mut conn, &req, 1000, true, &mut m).unwrap();
    let body = offering(&[(0, 3, 13), (1, 4, 17)]);
    let back = drive(
        &mut conn,
        &response(ApiKey::ApiVersions, 3, 1, &body),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    let got: ApiVersionsResponse = answered(&back, ApiKey::ApiVersions, 3, 1);
    let max: Vec<_> = got
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.max_version))
        .collect();
    assert_eq!(max, [(0, 12), (1, 12)]);
}

#[test]
fn authorization_comes_before_name_conversion() {
    // The ACLs are on the names the client uses; the rule then prefixes what is forwarded.
    let cfg = r#"{"rules": [{"name": "t", "match": {"client_id": {"exact": "writer"}}, "topics": {"prefix": "team."}}],
      "acls": {"default": "deny", "entries": [
        {"match": {"client_id": {"exact": "writer"}}, "permission": "allow", "operations": ["Write"],
         "resource_type": "topic", "name": "orders"}]}}"#;
    let mut conn = KafkaConnection::new(1, config(cfg));
    let mut m = RecordingSink::default();
    let fwd = drive(
        &mut conn,
        &produce(1, "writer", &["orders", "payments"], 1),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    let sent: ProduceRequest = forwarded(&fwd, ApiKey::Produce, 9);
    let names: Vec<_> = sent.topic_data.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["team.orders"]);
    let back = drive(
        &mut conn,
        &produce_response(1, &["team.orders"]),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    let got: ProduceResponse = answered(&back, ApiKey::Produce, 9, 1);
    assert_eq!(
        produce_errors(&got),
        [("orders".into(), 0), ("payments".into(), 29)]
    );
}

#[test]
fn bad_acl_configurations_name_the_entry() {
    for (acls, needle) in [
        (r#"{"default": "maybe"}"#, "acls.default"),
        (
            r#"{"default": "deny", "entries": [{"permission": "allow", "operations": ["Fly"], "resource_type": "topic", "name": "a"}]}"#,
            "acls.entries[0].operations",
        ),
        (
            r#"{"default": "deny", "entries": [{"permission": "allow", "operations": ["Read"], "resource_type": "topic", "name": "a"}, {"permission": "allow", "operations": ["Write"], "resource_type": "group", "name": "g"}]}"#,
            "acls.entries[1].operations",
        ),
        (
            r#"{"default": "deny", "entries": [{"permission": "allow", "operations": ["Read"], "resource_type": "queue", "name": "a"}]}"#,
            "acls.entries[0].resource_type",
        ),
        (
            r#"{"default": "deny", "entries": [{"operations": ["Read"], "resource_type": "topic", "name": "a"}]}"#,
            "acls.entries[0].permission",
        ),
        (
            r#"{"default": "deny", "entries": [{"match": {"principal": {"regex": "("}}, "permission": "allow", "operations": ["Read"], "resource_type": "topic", "name": "a"}]}"#,
            "acls.entries[0].match",
        ),
    ] {
        let doc = format!(r#"{{"acls": {acls}}}"#);
        let err = config::parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(needle), "{doc}: {err}");
    }
    let err = config::parse(br#"{"on_frame_error": "pass_through", "acls": {"default": "allow"}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("on_frame_error"), "{err}");
}

#[test]
fn an_encoded_split_keeps_the_records_it_forwards() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let req = produce(9, "writer", &["payments", "orders"], 1);
    let fwd = drive(&mut conn, &req, 3, true, &mut m).unwrap();
    let sent: ProduceRequest = forwarded(&fwd, ApiKey::Produce, 9);
    assert_eq!(
        sent.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .unwrap(),
        &common::record_set(&[2], 0)
    );
}

#[test]
fn a_broker_answering_with_more_than_was_asked_shows_nothing_denied() {
    // Every named topic denied: asked for none; a broker that answers with all of them anyway
    // (tansu does) has them filtered out.
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let named = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name("payments")))
    ]));
    let fwd = drive(
        &mut conn,
        &request(ApiKey::Metadata, 12, 1, "reader", &named),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    let sent: MetadataRequest = forwarded(&fwd, ApiKey::Metadata, 12);
    assert_eq!(sent.topics, Some(vec![]));
    let back = drive(
        &mut conn,
        &metadata_response(1, &[("payments", 2), ("orders", 1)]),
        1000,
        false,
        &mut m,
    )
    .unwrap();
    let got: MetadataResponse = answered(&back, ApiKey::Metadata, 12, 1);
    assert_eq!(
        metadata_topics(&got),
        [("orders".into(), 0), ("payments".into(), 29)]
    );
    assert!(got.topics[1].topic_id.is_nil());
}

#[test]
fn find_coordinator_answers_each_denied_key() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let body = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![StrBytes::from_static_str("tx")]);
    let fwd = drive(
        &mut conn,
        &request(ApiKey::FindCoordinator, 4, 1, "writer", &body),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert_eq!(fwd, substitute_request(1));
    let back = answer_stand_in(&mut conn, 1, &mut m);
    let got: FindCoordinatorResponse = answered(&back, ApiKey::FindCoordinator, 4, 1);
    let keys: Vec<_> = got
        .coordinators
        .iter()
        .map(|c| (c.key.to_string(), c.error_code, c.node_id.0))
        .collect();
    assert_eq!(keys, [("tx".into(), 53, -1)]);
    // v3: one key, the top-level error.
    let body = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("elsewhere"));
    drive(
        &mut conn,
        &request(ApiKey::FindCoordinator, 3, 2, "reader", &body),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    let back = answer_stand_in(&mut conn, 2, &mut m);
    let got: FindCoordinatorResponse = answered(&back, ApiKey::FindCoordinator, 3, 2);
    assert_eq!(got.error_code, 30);
}

#[test]
fn an_allowed_single_topic_produce_streams_through_without_being_held() {
    use kafka_filter::codec::source::CountingSource;
    use kafka_filter::connection::Verdict;
    let body =
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("orders"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_records(Some(Bytes::from(vec![7u8; 4 << 20])))])]);
    let req = request(ApiKey::Produce, 9, 1, "writer", &body);
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let (mut forwarded, mut copied) = (Vec::new(), 0);
    for chunk in req.chunks(64 * 1024) {
        let mut src = CountingSource::new(chunk);
        match conn.on_request_data(&mut src, || 0, &mut m) {
            Verdict::Continue => forwarded.extend_from_slice(chunk),
            other => panic!("{other:?}"),
        }
        copied += src.copied;
    }
    assert_eq!(forwarded, req);
    assert!(copied < 4096, "{copied} bytes copied into the filter");
    // Decisions are counted at the connection's flush, not with a host call per request.
    assert_eq!(m.named("acl.operation.Write.resource.topic.allowed"), 0);
    conn.flush(&mut m);
    assert_eq!(m.named("acl.operation.Write.resource.topic.allowed"), 1);
    // The same for a topic the client may not write: held, split, answered.
    let denied = produce(2, "writer", &["payments"], 1);
    let fwd = drive(&mut conn, &denied, 50, true, &mut m).unwrap();
    assert_eq!(fwd, substitute_request(2));
}

fn fetch_session_request(corr: i32, session: i32, epoch: i32, topics: &[&str]) -> Vec<u8> {
    let body = FetchRequest::default()
        .with_max_bytes(1 << 20)
        .with_session_id(session)
        .with_session_epoch(epoch)
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    FetchTopic::default()
                        .with_topic(name(t))
                        .with_partitions(vec![FetchPartition::default()])
                })
                .collect(),
        );
    request(ApiKey::Fetch, 12, corr, "reader", &body)
}

#[test]
fn only_fetch_sessions_opened_on_the_connection_are_used() {
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    // Someone else's session (guessed), naming nothing: never forwarded.
    let fwd = drive(
        &mut conn,
        &fetch_session_request(1, 777, 5, &[]),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert_eq!(fwd, substitute_request(1));
    let back = answer_stand_in(&mut conn, 1, &mut m);
    let got: FetchResponse = answered(&back, ApiKey::Fetch, 12, 1);
    assert_eq!(got.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
    assert_eq!(m.named("acl_fetch_sessions_refused"), 1);
    // A full fetch opens one: the broker's answer names it (read from its first bytes).
    let full = fetch_session_request(2, 0, 0, &["orders"]);
    assert_eq!(drive(&mut conn, &full, 1000, true, &mut m).unwrap(), full);
    let opened = FetchResponse::default()
        .with_session_id(4242)
        .with_responses(vec![FetchableTopicResponse::default()
            .with_topic(name("orders"))
            .with_partitions(vec![
                PartitionData::default().with_records(Some(common::record_set(&[50], 0)))
            ])]);
    let resp = response(ApiKey::Fetch, 12, 2, &opened);
    assert_eq!(drive(&mut conn, &resp, 7, false, &mut m).unwrap(), resp);
    // Its incremental fetches pass untouched; a final one closes it.
    for (corr, epoch) in [(3, 1), (4, -1)] {
        let inc = fetch_session_request(corr, 4242, epoch, &[]);
        assert_eq!(drive(&mut conn, &inc, 1000, true, &mut m).unwrap(), inc);
        drive(
            &mut conn,
            &response(ApiKey::Fetch, 12, corr, &FetchResponse::default()),
            1000,
            false,
            &mut m,
        )
        .unwrap();
    }
    let after = fetch_session_request(5, 4242, 2, &[]);
    assert_eq!(
        drive(&mut conn, &after, 1000, true, &mut m).unwrap(),
        substitute_request(5)
    );
}

#[test]
fn delete_topics_naming_a_topic_and_an_id_is_denied() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    let cfg = r#"{"acls": {"default": "allow", "entries": []}}"#;
    let mut conn = KafkaConnection::new(1, config(cfg));
    let mut m = RecordingSink::default();
    let body = DeleteTopicsRequest::default().with_topics(vec![DeleteTopicState::default()
        .with_name(Some(name("orders")))
        .with_topic_id(uuid::Uuid::from_bytes([9; 16]))]);
    let fwd = drive(
        &mut conn,
        &request(ApiKey::DeleteTopics, 6, 1, "x", &body),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert_eq!(fwd, substitute_request(1));
}

#[test]
fn a_request_naming_too_many_resources_closes_the_connection() {
    let cfg = r#"{"acls": {"default": "allow", "entries": []}}"#;
    let mut conn = KafkaConnection::new(1, config(cfg));
    let mut m = RecordingSink::default();
    let names: Vec<String> = (0..10_001).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let body = MetadataRequest::default().with_topics(Some(
        refs.iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
            .collect(),
    ));
    assert_eq!(
        drive(
            &mut conn,
            &request(ApiKey::Metadata, 12, 1, "x", &body),
            65536,
            true,
            &mut m
        ),
        None
    );
    assert_eq!(m.named("acl_unreadable_denied"), 1);
}

#[test]
fn a_denied_request_the_filter_would_answer_at_great_length_closes_the_connection() {
    // 100,001 denied partitions: the answer would be built in the VM, bounded like held frames.
    let body =
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("payments"))
                .with_partition_data(
                    (0..100_001)
                        .map(|i| {
                            PartitionProduceData::default()
                                .with_index(i)
                                .with_records(None)
                        })
                        .collect(),
                )]);
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    let req = request(ApiKey::Produce, 9, 1, "writer", &body);
    assert_eq!(drive(&mut conn, &req, 65536, true, &mut m), None);
    // A smaller one is answered.
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let fwd = drive(
        &mut conn,
        &produce(2, "writer", &["payments"], 1),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert_eq!(fwd, substitute_request(2));
}

#[test]
fn apis_without_a_top_level_error_are_answered_per_resource() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
    let mut conn = KafkaConnection::new(1, config(POLICY));
    let mut m = RecordingSink::default();
    // OffsetFetch v8 for a group the reader may not read.
    let body = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(StrBytes::from_static_str("elsewhere")))
        .with_topics(None)]);
    let fwd = drive(
        &mut conn,
        &request(ApiKey::OffsetFetch, 8, 1, "reader", &body),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert_eq!(fwd, substitute_request(1));
    let got: OffsetFetchResponse = answered(
        &answer_stand_in(&mut conn, 1, &mut m),
        ApiKey::OffsetFetch,
        8,
        1,
    );
    let groups: Vec<_> = got
        .groups
        .iter()
        .map(|g| (g.group_id.to_string(), g.error_code))
        .collect();
    assert_eq!(groups, [("elsewhere".into(), 30)]);
    // DescribeConfigs of a topic it may not describe the configuration of.
    let body =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("payments"))]);
    let fwd = drive(
        &mut conn,
        &request(ApiKey::DescribeConfigs, 4, 2, "reader", &body),
        1000,
        true,
        &mut m,
    )
    .unwrap();
    assert_eq!(fwd, substitute_request(2));
    let got: DescribeConfigsResponse = answered(
        &answer_stand_in(&mut conn, 2, &mut m),
        ApiKey::DescribeConfigs,
        4,
        2,
    );
    let results: Vec<_> = got
        .results
        .iter()
        .map(|r| (r.resource_name.to_string(), r.error_code))
        .collect();
    assert_eq!(results, [("payments".into(), 29)]);
}
