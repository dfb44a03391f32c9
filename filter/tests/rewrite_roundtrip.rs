#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The per-API name rewriters, round-tripped through kafka-protocol for every rewritten API and
//! every version: requests carry logical names in, physical names out; responses the reverse;
//! hidden names drop their element; malformed bodies are errors, never panics.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_filter::pipeline::error_body::error_response_body;
use kafka_filter::topics::mapping::{NameKind, NameMapper, ToClient};
use kafka_filter::topics::rewrite::{
    coordinator_key_type, coverage, rewrite_request, rewrite_response, rewrite_response_after,
    Coverage, Hints, RewriteError,
};
use kafka_protocol::messages::add_partitions_to_txn_request::*;
use kafka_protocol::messages::add_partitions_to_txn_response::*;
use kafka_protocol::messages::create_partitions_request::*;
use kafka_protocol::messages::create_partitions_response::*;
use kafka_protocol::messages::create_topics_request::*;
use kafka_protocol::messages::create_topics_response::*;
use kafka_protocol::messages::delete_groups_response::*;
use kafka_protocol::messages::delete_records_request::*;
use kafka_protocol::messages::delete_records_response::*;
use kafka_protocol::messages::delete_topics_request::*;
use kafka_protocol::messages::delete_topics_response::*;
use kafka_protocol::messages::describe_configs_request::*;
use kafka_protocol::messages::describe_configs_response::*;
use kafka_protocol::messages::describe_groups_response::*;
use kafka_protocol::messages::fetch_request::*;
use kafka_protocol::messages::fetch_response::*;
use kafka_protocol::messages::find_coordinator_response::*;
use kafka_protocol::messages::join_group_request::*;
use kafka_protocol::messages::join_group_response::*;
use kafka_protocol::messages::leave_group_request::*;
use kafka_protocol::messages::leave_group_response::*;
use kafka_protocol::messages::list_groups_response::*;
use kafka_protocol::messages::list_offsets_request::*;
use kafka_protocol::messages::list_offsets_response::*;
use kafka_protocol::messages::metadata_request::*;
use kafka_protocol::messages::metadata_response::*;
use kafka_protocol::messages::offset_commit_request::*;
use kafka_protocol::messages::offset_commit_response::*;
use kafka_protocol::messages::offset_delete_request::*;
use kafka_protocol::messages::offset_delete_response::*;
use kafka_protocol::messages::offset_fetch_request::*;
use kafka_protocol::messages::offset_fetch_response::*;
use kafka_protocol::messages::offset_for_leader_epoch_request::*;
use kafka_protocol::messages::offset_for_leader_epoch_response::*;
use kafka_protocol::messages::produce_request::*;
use kafka_protocol::messages::produce_response::*;
use kafka_protocol::messages::sync_group_request::*;
use kafka_protocol::messages::txn_offset_commit_request::*;
use kafka_protocol::messages::txn_offset_commit_response::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes};

// ---------------------------------------------------------------------------------------------
// Mappers
// ---------------------------------------------------------------------------------------------

/// Exact names: topic `orders` is `orders-canary` on the broker, group `g` is `g-canary`,
/// transactional id `t` is `t-canary`. The broker's own `orders`, `g`, `t` are hidden.
struct Exact;

const EXACT: [(NameKind, &str, &str); 3] = [
    (NameKind::Topic, "orders", "orders-canary"),
    (NameKind::Group, "g", "g-canary"),
    (NameKind::TransactionalId, "t", "t-canary"),
];

impl NameMapper for Exact {
    fn to_broker(&self, kind: NameKind, name: &str) -> Option<String> {
        EXACT
            .iter()
            .find(|(k, logical, _)| *k == kind && *logical == name)
            .map(|(_, _, physical)| physical.to_string())
    }
    fn to_client(&self, kind: NameKind, name: &str) -> ToClient {
        for (k, logical, physical) in EXACT {
            if k == kind && physical == name {
                return ToClient::Renamed(logical.to_string());
            }
            if k == kind && logical == name {
                return ToClient::Hidden;
            }
        }
        ToClient::Same
    }
}

/// Every name of every kind is `team-a.<name>` on the broker; unprefixed names are hidden.
struct Prefix;

const PREFIX: &str = "team-a.";

impl NameMapper for Prefix {
    fn to_broker(&self, _: NameKind, name: &str) -> Option<String> {
        Some(format!("{PREFIX}{name}"))
    }
    fn to_client(&self, _: NameKind, name: &str) -> ToClient {
        match name.strip_prefix(PREFIX) {
            Some(rest) if !rest.is_empty() => ToClient::Renamed(rest.to_string()),
            _ => ToClient::Hidden,
        }
    }
}

/// Groups and transactional ids mapped to different logical names: a FindCoordinator key cannot
/// be told apart.
struct Conflicting;

impl NameMapper for Conflicting {
    fn to_broker(&self, _: NameKind, _: &str) -> Option<String> {
        None
    }
    fn to_client(&self, kind: NameKind, _: &str) -> ToClient {
        match kind {
            NameKind::Group => ToClient::Renamed("as-group".into()),
            NameKind::TransactionalId => ToClient::Renamed("as-txn".into()),
            NameKind::Topic => ToClient::Same,
        }
    }
}

fn mappers() -> [(&'static str, &'static dyn NameMapper); 2] {
    [("exact", &Exact), ("prefix", &Prefix)]
}

// ---------------------------------------------------------------------------------------------
// The names a message is built with
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct N {
    topic: String,
    group: String,
    txn: String,
}

impl N {
    /// What the client uses.
    fn logical() -> N {
        N {
            topic: "orders".into(),
            group: "g".into(),
            txn: "t".into(),
        }
    }
    /// What the broker uses for the logical names under `m`.
    fn physical(m: &dyn NameMapper) -> N {
        let l = N::logical();
        N {
            topic: m.to_broker(NameKind::Topic, &l.topic).unwrap(),
            group: m.to_broker(NameKind::Group, &l.group).unwrap(),
            txn: m.to_broker(NameKind::TransactionalId, &l.txn).unwrap(),
        }
    }
    /// Names the exact mapper leaves alone in both directions.
    fn untouched() -> N {
        N {
            topic: "payments".into(),
            group: "h".into(),
            txn: "u".into(),
        }
    }
    fn t(&self) -> TopicName {
        TopicName(self.s_topic())
    }
    fn g(&self) -> GroupId {
        GroupId(self.s_group())
    }
    fn x(&self) -> TransactionalId {
        TransactionalId(self.s_txn())
    }
    fn s_topic(&self) -> StrBytes {
        StrBytes::from_string(self.topic.clone())
    }
    fn s_group(&self) -> StrBytes {
        StrBytes::from_string(self.group.clone())
    }
    fn s_txn(&self) -> StrBytes {
        StrBytes::from_string(self.txn.clone())
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn records() -> Option<Bytes> {
    Some(Bytes::from_static(b"\x00opaque record batch bytes\xff"))
}

/// A carrier of a non-nil topic id (kafka-protocol does not re-export `Uuid`): `.topic_id`.
fn id() -> DeleteTopicState {
    let mut b = BytesMut::new();
    b.extend_from_slice(&[0]); // null compact name
    b.extend_from_slice(&[0x5a; 16]); // topic id
    b.extend_from_slice(&[0]); // no tagged fields
    DeleteTopicState::decode(&mut b.freeze(), 6).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Builders: one request and one response per API, with every name field that exists at `v`
// ---------------------------------------------------------------------------------------------

fn produce_req(v: i16, n: &N) -> ProduceRequest {
    let partition = PartitionProduceData::default()
        .with_index(2)
        .with_records(records());
    let topic = if v <= 12 {
        TopicProduceData::default().with_name(n.t())
    } else {
        TopicProduceData::default().with_topic_id(id().topic_id)
    };
    ProduceRequest::default()
        .with_transactional_id(Some(n.x()))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![topic.with_partition_data(vec![partition])])
}

fn produce_resp(v: i16, n: &N) -> ProduceResponse {
    let partition = PartitionProduceResponse::default()
        .with_index(2)
        .with_base_offset(42);
    let topic = if v <= 12 {
        TopicProduceResponse::default().with_name(n.t())
    } else {
        TopicProduceResponse::default().with_topic_id(id().topic_id)
    };
    ProduceResponse::default()
        .with_throttle_time_ms(5)
        .with_responses(vec![topic.with_partition_responses(vec![partition])])
}

fn fetch_req(v: i16, n: &N) -> FetchRequest {
    let partition = FetchPartition::default()
        .with_partition(1)
        .with_fetch_offset(77);
    let mut topic = FetchTopic::default().with_partitions(vec![partition]);
    let mut forgotten = ForgottenTopic::default().with_partitions(vec![3]);
    if v <= 12 {
        topic.topic = n.t();
        forgotten.topic = n.t();
    } else {
        topic.topic_id = id().topic_id;
        forgotten.topic_id = id().topic_id;
    }
    let mut r = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_topics(vec![topic]);
    if v >= 7 {
        r.forgotten_topics_data = vec![forgotten];
    }
    r
}

fn fetch_resp(v: i16, n: &N) -> FetchResponse {
    let partition = fetch_response::PartitionData::default()
        .with_partition_index(1)
        .with_high_watermark(100)
        .with_records(records());
    let mut topic = FetchableTopicResponse::default().with_partitions(vec![partition]);
    if v <= 12 {
        topic.topic = n.t();
    } else {
        topic.topic_id = id().topic_id;
    }
    FetchResponse::default().with_responses(vec![topic])
}

fn list_offsets_req(_: i16, n: &N) -> ListOffsetsRequest {
    ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(n.t())
        .with_partitions(vec![ListOffsetsPartition::default()
            .with_partition_index(4)
            .with_timestamp(-1)])])
}

fn list_offsets_resp(_: i16, n: &N) -> ListOffsetsResponse {
    ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
        .with_name(n.t())
        .with_partitions(vec![ListOffsetsPartitionResponse::default()
            .with_partition_index(4)
            .with_offset(1234)])])
}

fn metadata_req(v: i16, n: &N) -> MetadataRequest {
    let mut topics = vec![MetadataRequestTopic::default().with_name(Some(n.t()))];
    if v >= 10 {
        topics.push(
            MetadataRequestTopic::default()
                .with_topic_id(id().topic_id)
                .with_name(None),
        );
    }
    MetadataRequest::default()
        .with_topics(Some(topics))
        .with_allow_auto_topic_creation(v < 4)
}

fn metadata_topic(name: TopicName) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(name))
        .with_partitions(vec![MetadataResponsePartition::default()
            .with_partition_index(0)
            .with_leader_id(BrokerId(1))
            .with_replica_nodes(vec![BrokerId(1)])
            .with_isr_nodes(vec![BrokerId(1)])])
}

fn metadata_resp(v: i16, n: &N) -> MetadataResponse {
    let mut topic = metadata_topic(n.t());
    if v >= 10 {
        topic.topic_id = id().topic_id;
    }
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(s("broker-1"))
            .with_port(9092)])
        .with_topics(vec![topic])
}

fn offset_commit_req(_: i16, n: &N) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(n.g())
        .with_member_id(s("member-1"))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(n.t())
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(9)])])
}

fn offset_commit_resp(_: i16, n: &N) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
        .with_name(n.t())
        .with_partitions(vec![
            OffsetCommitResponsePartition::default().with_partition_index(0)
        ])])
}

fn offset_fetch_req(v: i16, n: &N) -> OffsetFetchRequest {
    if v <= 7 {
        OffsetFetchRequest::default()
            .with_group_id(n.g())
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(n.t())
                .with_partition_indexes(vec![0, 1])]))
    } else {
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(n.g())
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(n.t())
                .with_partition_indexes(vec![0, 1])]))])
    }
}

fn offset_fetch_resp(v: i16, n: &N) -> OffsetFetchResponse {
    if v <= 7 {
        OffsetFetchResponse::default().with_topics(vec![OffsetFetchResponseTopic::default()
            .with_name(n.t())
            .with_partitions(vec![OffsetFetchResponsePartition::default()
                .with_partition_index(0)
                .with_committed_offset(3)])])
    } else {
        OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
            .with_group_id(n.g())
            .with_topics(vec![OffsetFetchResponseTopics::default()
                .with_name(n.t())
                .with_partitions(vec![OffsetFetchResponsePartitions::default()
                    .with_partition_index(0)
                    .with_committed_offset(3)])])])
    }
}

fn find_coordinator_req(v: i16, n: &N) -> FindCoordinatorRequest {
    // v0 has no key type (group); later versions alternate groups and transactional ids.
    let key_type = if v % 2 == 1 { 1 } else { 0 };
    let key = if key_type == 1 {
        n.s_txn()
    } else {
        n.s_group()
    };
    let r = FindCoordinatorRequest::default().with_key_type(key_type);
    if v <= 3 {
        r.with_key(key)
    } else {
        r.with_coordinator_keys(vec![key])
    }
}

fn find_coordinator_resp(v: i16, n: &N) -> FindCoordinatorResponse {
    if v <= 3 {
        FindCoordinatorResponse::default()
            .with_node_id(BrokerId(2))
            .with_host(s("broker-2"))
            .with_port(9092)
    } else {
        let coordinator = |key| {
            Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(2))
                .with_host(s("broker-2"))
                .with_port(9092)
        };
        FindCoordinatorResponse::default()
            .with_coordinators(vec![coordinator(n.s_group()), coordinator(n.s_txn())])
    }
}

/// Consumer-protocol bytes (subscription/assignment): opaque to the filter, kept as they are.
fn consumer_protocol() -> Bytes {
    Bytes::from_static(b"\x00\x01\x00\x00\x00\x01\x00\x06orders\xff\xff\xff\xff")
}

fn join_group_req(v: i16, n: &N) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(n.g())
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(if v >= 1 { 30_000 } else { -1 })
        .with_member_id(s("member-1"))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(consumer_protocol())])
}

fn join_group_resp(_: i16, _: &N) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_generation_id(3)
        .with_protocol_name(Some(s("range")))
        .with_leader(s("member-1"))
        .with_member_id(s("member-1"))
        .with_members(vec![JoinGroupResponseMember::default()
            .with_member_id(s("member-1"))
            .with_metadata(consumer_protocol())])
}

fn sync_group_req(_: i16, n: &N) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(n.g())
        .with_generation_id(3)
        .with_member_id(s("member-1"))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s("member-1"))
            .with_assignment(consumer_protocol())])
}

fn sync_group_resp(_: i16, _: &N) -> SyncGroupResponse {
    SyncGroupResponse::default().with_assignment(consumer_protocol())
}

fn heartbeat_req(_: i16, n: &N) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(n.g())
        .with_generation_id(3)
        .with_member_id(s("member-1"))
}

fn heartbeat_resp(_: i16, _: &N) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(27)
}

fn leave_group_req(v: i16, n: &N) -> LeaveGroupRequest {
    let r = LeaveGroupRequest::default().with_group_id(n.g());
    if v <= 2 {
        r.with_member_id(s("member-1"))
    } else {
        r.with_members(vec![MemberIdentity::default().with_member_id(s("member-1"))])
    }
}

fn leave_group_resp(v: i16, _: &N) -> LeaveGroupResponse {
    let r = LeaveGroupResponse::default();
    if v >= 3 {
        r.with_members(vec![MemberResponse::default().with_member_id(s("member-1"))])
    } else {
        r
    }
}

fn describe_groups_req(_: i16, n: &N) -> DescribeGroupsRequest {
    DescribeGroupsRequest::default().with_groups(vec![n.g()])
}

fn describe_groups_resp(_: i16, n: &N) -> DescribeGroupsResponse {
    DescribeGroupsResponse::default().with_groups(vec![DescribedGroup::default()
        .with_group_id(n.g())
        .with_group_state(s("Stable"))
        .with_protocol_type(s("consumer"))
        .with_protocol_data(s("range"))
        .with_members(vec![DescribedGroupMember::default()
            .with_member_id(s("member-1"))
            .with_client_id(s("client"))
            .with_client_host(s("/10.0.0.1"))
            .with_member_metadata(consumer_protocol())
            .with_member_assignment(consumer_protocol())])])
}

fn list_groups_req(v: i16, _: &N) -> ListGroupsRequest {
    let r = ListGroupsRequest::default();
    if v >= 4 {
        r.with_states_filter(vec![s("Stable")])
    } else {
        r
    }
}

fn list_groups_resp(_: i16, n: &N) -> ListGroupsResponse {
    ListGroupsResponse::default().with_groups(vec![ListedGroup::default()
        .with_group_id(n.g())
        .with_protocol_type(s("consumer"))])
}

fn offset_for_leader_epoch_req(_: i16, n: &N) -> OffsetForLeaderEpochRequest {
    OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
        .with_topic(n.t())
        .with_partitions(vec![OffsetForLeaderPartition::default()
            .with_partition(0)
            .with_leader_epoch(1)])])
}

fn offset_for_leader_epoch_resp(_: i16, n: &N) -> OffsetForLeaderEpochResponse {
    OffsetForLeaderEpochResponse::default().with_topics(vec![OffsetForLeaderTopicResult::default()
        .with_topic(n.t())
        .with_partitions(vec![
            offset_for_leader_epoch_response::EpochEndOffset::default()
                .with_partition(0)
                .with_end_offset(10),
        ])])
}

fn create_topics_req(_: i16, n: &N) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(n.t())
            .with_num_partitions(3)
            .with_replication_factor(1)])
        .with_timeout_ms(1000)
}

fn create_topics_resp(v: i16, n: &N) -> CreateTopicsResponse {
    let mut topic = CreatableTopicResult::default()
        .with_name(n.t())
        .with_error_code(36);
    if v >= 7 {
        topic.topic_id = id().topic_id;
    }
    CreateTopicsResponse::default().with_topics(vec![topic])
}

fn delete_topics_req(v: i16, n: &N) -> DeleteTopicsRequest {
    let r = DeleteTopicsRequest::default().with_timeout_ms(1000);
    if v <= 5 {
        r.with_topic_names(vec![n.t()])
    } else {
        r.with_topics(vec![
            DeleteTopicState::default().with_name(Some(n.t())),
            DeleteTopicState::default()
                .with_name(None)
                .with_topic_id(id().topic_id),
        ])
    }
}

fn delete_topics_resp(v: i16, n: &N) -> DeleteTopicsResponse {
    let mut topic = DeletableTopicResult::default().with_name(Some(n.t()));
    if v >= 6 {
        topic.topic_id = id().topic_id;
    }
    DeleteTopicsResponse::default().with_responses(vec![topic])
}

fn create_partitions_req(_: i16, n: &N) -> CreatePartitionsRequest {
    CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
        .with_name(n.t())
        .with_count(6)])
}

fn create_partitions_resp(_: i16, n: &N) -> CreatePartitionsResponse {
    CreatePartitionsResponse::default()
        .with_results(vec![CreatePartitionsTopicResult::default().with_name(n.t())])
}

fn describe_configs_req(_: i16, n: &N) -> DescribeConfigsRequest {
    let resource = |resource_type, name| {
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(name)
    };
    DescribeConfigsRequest::default().with_resources(vec![
        resource(2, n.s_topic()),
        resource(32, n.s_group()),
        resource(4, s("1")),
    ])
}

fn describe_configs_resp(_: i16, n: &N) -> DescribeConfigsResponse {
    let result = |resource_type, name| {
        DescribeConfigsResult::default()
            .with_resource_type(resource_type)
            .with_resource_name(name)
            .with_configs(vec![DescribeConfigsResourceResult::default()
                .with_name(s("retention.ms"))
                .with_value(Some(s("1000")))])
    };
    DescribeConfigsResponse::default().with_results(vec![
        result(2, n.s_topic()),
        result(32, n.s_group()),
        result(4, s("1")),
    ])
}

fn delete_records_req(_: i16, n: &N) -> DeleteRecordsRequest {
    DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
        .with_name(n.t())
        .with_partitions(vec![DeleteRecordsPartition::default()
            .with_partition_index(0)
            .with_offset(5)])])
}

fn delete_records_resp(_: i16, n: &N) -> DeleteRecordsResponse {
    DeleteRecordsResponse::default().with_topics(vec![DeleteRecordsTopicResult::default()
        .with_name(n.t())
        .with_partitions(vec![DeleteRecordsPartitionResult::default()
            .with_partition_index(0)
            .with_low_watermark(5)])])
}

fn init_producer_id_req(_: i16, n: &N) -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(Some(n.x()))
        .with_transaction_timeout_ms(60_000)
}

fn init_producer_id_resp(_: i16, _: &N) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(7))
        .with_producer_epoch(1)
}

fn add_partitions_to_txn_req(v: i16, n: &N) -> AddPartitionsToTxnRequest {
    let topics = vec![AddPartitionsToTxnTopic::default()
        .with_name(n.t())
        .with_partitions(vec![0, 1])];
    if v <= 3 {
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(n.x())
            .with_v3_and_below_producer_id(ProducerId(7))
            .with_v3_and_below_topics(topics)
    } else {
        AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(n.x())
                .with_producer_id(ProducerId(7))
                .with_topics(topics),
        ])
    }
}

fn add_partitions_to_txn_resp(v: i16, n: &N) -> AddPartitionsToTxnResponse {
    let topics = vec![AddPartitionsToTxnTopicResult::default()
        .with_name(n.t())
        .with_results_by_partition(vec![
            AddPartitionsToTxnPartitionResult::default().with_partition_index(1)
        ])];
    if v <= 3 {
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
    } else {
        AddPartitionsToTxnResponse::default().with_results_by_transaction(vec![
            AddPartitionsToTxnResult::default()
                .with_transactional_id(n.x())
                .with_topic_results(topics),
        ])
    }
}

fn add_offsets_to_txn_req(_: i16, n: &N) -> AddOffsetsToTxnRequest {
    AddOffsetsToTxnRequest::default()
        .with_transactional_id(n.x())
        .with_producer_id(ProducerId(7))
        .with_group_id(n.g())
}

fn add_offsets_to_txn_resp(_: i16, _: &N) -> AddOffsetsToTxnResponse {
    AddOffsetsToTxnResponse::default().with_error_code(0)
}

fn txn_offset_commit_req(_: i16, n: &N) -> TxnOffsetCommitRequest {
    TxnOffsetCommitRequest::default()
        .with_transactional_id(n.x())
        .with_group_id(n.g())
        .with_producer_id(ProducerId(7))
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(n.t())
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(11)])])
}

fn txn_offset_commit_resp(_: i16, n: &N) -> TxnOffsetCommitResponse {
    TxnOffsetCommitResponse::default().with_topics(vec![TxnOffsetCommitResponseTopic::default()
        .with_name(n.t())
        .with_partitions(vec![
            TxnOffsetCommitResponsePartition::default().with_partition_index(0)
        ])])
}

fn end_txn_req(_: i16, n: &N) -> EndTxnRequest {
    EndTxnRequest::default()
        .with_transactional_id(n.x())
        .with_producer_id(ProducerId(7))
        .with_committed(true)
}

fn end_txn_resp(_: i16, _: &N) -> EndTxnResponse {
    EndTxnResponse::default().with_throttle_time_ms(1)
}

fn delete_groups_req(_: i16, n: &N) -> DeleteGroupsRequest {
    DeleteGroupsRequest::default().with_groups_names(vec![n.g()])
}

fn delete_groups_resp(_: i16, n: &N) -> DeleteGroupsResponse {
    DeleteGroupsResponse::default().with_results(vec![DeletableGroupResult::default()
        .with_group_id(n.g())
        .with_error_code(69)])
}

fn offset_delete_req(_: i16, n: &N) -> OffsetDeleteRequest {
    OffsetDeleteRequest::default()
        .with_group_id(n.g())
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(n.t())
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])])
}

fn offset_delete_resp(_: i16, n: &N) -> OffsetDeleteResponse {
    OffsetDeleteResponse::default().with_topics(vec![OffsetDeleteResponseTopic::default()
        .with_name(n.t())
        .with_partitions(vec![
            OffsetDeleteResponsePartition::default().with_partition_index(0)
        ])])
}

fn consumer_group_heartbeat_req(_: i16, n: &N) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(n.g())
        .with_member_id(s("member-1"))
        .with_subscribed_topic_names(Some(vec![n.t()]))
}

fn consumer_group_heartbeat_resp(_: i16, _: &N) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(s("member-1")))
        .with_member_epoch(4)
        .with_assignment(Some(
            consumer_group_heartbeat_response::Assignment::default().with_topic_partitions(vec![
                consumer_group_heartbeat_response::TopicPartitions::default()
                    .with_topic_id(id().topic_id)
                    .with_partitions(vec![0]),
            ]),
        ))
}

fn consumer_group_describe_req(_: i16, n: &N) -> ConsumerGroupDescribeRequest {
    ConsumerGroupDescribeRequest::default().with_group_ids(vec![n.g()])
}

fn cgd_assignment(n: &N) -> consumer_group_describe_response::Assignment {
    consumer_group_describe_response::Assignment::default().with_topic_partitions(vec![
        consumer_group_describe_response::TopicPartitions::default()
            .with_topic_id(id().topic_id)
            .with_topic_name(n.t())
            .with_partitions(vec![0, 1]),
    ])
}

fn consumer_group_describe_resp(_: i16, n: &N) -> ConsumerGroupDescribeResponse {
    ConsumerGroupDescribeResponse::default().with_groups(vec![
        consumer_group_describe_response::DescribedGroup::default()
            .with_group_id(n.g())
            .with_group_state(s("Stable"))
            .with_members(vec![consumer_group_describe_response::Member::default()
                .with_member_id(s("member-1"))
                .with_subscribed_topic_names(vec![n.t()])
                .with_assignment(cgd_assignment(n))
                .with_target_assignment(cgd_assignment(n))]),
    ])
}

// ---------------------------------------------------------------------------------------------
// Codec helpers
// ---------------------------------------------------------------------------------------------

fn enc<T: Encodable>(m: &T, v: i16) -> Bytes {
    let mut b = BytesMut::new();
    m.encode(&mut b, v)
        .unwrap_or_else(|e| panic!("encode {} v{v}: {e:#}", std::any::type_name::<T>()));
    b.freeze()
}

/// Decodes exactly: no bytes left over.
/// What kafka-protocol decodes from `b` (bytes after the message are ignored, as brokers do).
fn dec<T: Decodable>(b: impl Into<Bytes>, v: i16) -> Option<T> {
    let mut b: Bytes = b.into();
    T::decode(&mut b, v).ok()
}

/// A small deterministic generator for garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

type Rewrite = fn(i16, i16, Bytes, &dyn NameMapper) -> Result<Option<BytesMut>, RewriteError>;

/// Truncations, random bodies and random mutations of `valid` are errors, or (for a body that
/// happens to be a well-formed `T`) accepted; never a panic. Returns how many bodies were tried.
fn hostile<T: Decodable>(
    rewrite: Rewrite,
    key: ApiKey,
    v: i16,
    valid: &Bytes,
    rng: &mut Rng,
) -> usize {
    let mut tried = 0;
    for len in 0..valid.len() {
        let r = rewrite(key as i16, v, valid.slice(..len), &Prefix);
        assert!(
            r.is_err(),
            "{key:?} v{v}: truncated to {len} bytes accepted"
        );
        tried += 1;
    }
    let check = |body: Vec<u8>| {
        let body = Bytes::from(body);
        for (_, m) in mappers() {
            if rewrite(key as i16, v, body.clone(), m).is_ok() {
                assert!(
                    dec::<T>(body.clone(), v).is_some(),
                    "{key:?} v{v}: accepted a body kafka-protocol does not decode: {body:?}"
                );
            }
        }
    };
    for _ in 0..150 {
        let len = rng.below(80);
        check(rng.bytes(len));
        tried += 1;
    }
    for _ in 0..150 {
        let mut body = valid.to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(body.len() + 1);
            match rng.below(3) {
                0 if at < body.len() => body[at] = rng.next() as u8,
                1 => body.insert(at, rng.next() as u8),
                _ if at < body.len() => {
                    body.remove(at);
                }
                _ => body.push(0xff),
            }
        }
        check(body);
        tried += 1;
    }
    tried
}

#[derive(Default)]
struct Counts {
    apis: usize,
    versions: usize,
    round_trips: usize,
    hostile_bodies: usize,
}

/// Every check for one rewritten API at every version kafka-protocol supports.
fn check_api<Q>(
    key: ApiKey,
    req: fn(i16, &N) -> Q,
    resp: fn(i16, &N) -> Q::Response,
    counts: &mut Counts,
) where
    Q: Request + PartialEq + Debug,
    Q::Response: PartialEq + Debug,
{
    let versions = Q::VERSIONS
        .intersect(&<Q::Response as Message>::VERSIONS)
        .intersect(&key.valid_versions());
    assert!(versions.min <= versions.max, "{key:?}: no version");
    for v in -1..=versions.max + 3 {
        let expected = if key == ApiKey::Fetch && v >= 13 && v <= versions.max {
            // Topic ids only: nothing to rewrite, frames are not held.
            Coverage::NameFree
        } else if versions.min <= v && v <= versions.max {
            Coverage::Rewritten
        } else {
            Coverage::Unsupported
        };
        assert_eq!(coverage(key as i16, v), expected, "{key:?} v{v}");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (key as u64));
    counts.apis += 1;
    for v in versions.min..=versions.max {
        counts.versions += 1;
        for (mapper_name, m) in mappers() {
            let ctx = format!("{key:?} v{v} ({mapper_name})");
            let (logical, physical) = (N::logical(), N::physical(m));

            // Request: logical names in, physical names out, all else equal.
            let input = req(v, &logical);
            let want = req(v, &physical);
            let out = rewrite_request(key as i16, v, enc(&input, v), m)
                .unwrap_or_else(|e| panic!("{ctx} request: {e}"));
            match out {
                None => assert_eq!(input, want, "{ctx} request: names left unmapped"),
                Some(out) => {
                    assert_ne!(
                        input, want,
                        "{ctx} request: re-encoded with no name changed"
                    );
                    let got: Q = dec(out, v).unwrap_or_else(|| panic!("{ctx}: request output"));
                    assert_eq!(got, want, "{ctx} request");
                }
            }

            // Response: physical names in, logical names out, all else equal.
            let input = resp(v, &physical);
            let want = resp(v, &logical);
            let out = rewrite_response(key as i16, v, enc(&input, v), m)
                .unwrap_or_else(|e| panic!("{ctx} response: {e}"));
            match out {
                None => assert_eq!(input, want, "{ctx} response: names left unmapped"),
                Some(out) => {
                    assert_ne!(
                        input, want,
                        "{ctx} response: re-encoded with no name changed"
                    );
                    let got: Q::Response =
                        dec(out, v).unwrap_or_else(|| panic!("{ctx}: response output"));
                    assert_eq!(got, want, "{ctx} response");
                }
            }
            counts.round_trips += 2;
        }

        // Names no rule touches: forwarded as the original bytes.
        let untouched = N::untouched();
        let r = rewrite_request(key as i16, v, enc(&req(v, &untouched), v), &Exact);
        assert!(
            matches!(r, Ok(None)),
            "{key:?} v{v}: untouched request {r:?}"
        );
        let r = rewrite_response(key as i16, v, enc(&resp(v, &untouched), v), &Exact);
        assert!(
            matches!(r, Ok(None)),
            "{key:?} v{v}: untouched response {r:?}"
        );

        // Hostile bodies (a name-free version is never decoded: nothing to be hostile to).
        if coverage(key as i16, v) == Coverage::NameFree {
            continue;
        }
        let valid = enc(&req(v, &N::logical()), v);
        counts.hostile_bodies += hostile::<Q>(rewrite_request, key, v, &valid, &mut rng);
        let valid = enc(&resp(v, &N::physical(&Prefix)), v);
        counts.hostile_bodies += hostile::<Q::Response>(rewrite_response, key, v, &valid, &mut rng);
    }
}

#[test]
fn every_rewritten_api_and_version_round_trips() {
    let mut c = Counts::default();
    check_api(ApiKey::Produce, produce_req, produce_resp, &mut c);
    check_api(ApiKey::Fetch, fetch_req, fetch_resp, &mut c);
    check_api(
        ApiKey::ListOffsets,
        list_offsets_req,
        list_offsets_resp,
        &mut c,
    );
    check_api(ApiKey::Metadata, metadata_req, metadata_resp, &mut c);
    check_api(
        ApiKey::OffsetCommit,
        offset_commit_req,
        offset_commit_resp,
        &mut c,
    );
    check_api(
        ApiKey::OffsetFetch,
        offset_fetch_req,
        offset_fetch_resp,
        &mut c,
    );
    check_api(
        ApiKey::FindCoordinator,
        find_coordinator_req,
        find_coordinator_resp,
        &mut c,
    );
    check_api(ApiKey::JoinGroup, join_group_req, join_group_resp, &mut c);
    check_api(ApiKey::SyncGroup, sync_group_req, sync_group_resp, &mut c);
    check_api(ApiKey::Heartbeat, heartbeat_req, heartbeat_resp, &mut c);
    check_api(
        ApiKey::LeaveGroup,
        leave_group_req,
        leave_group_resp,
        &mut c,
    );
    check_api(
        ApiKey::DescribeGroups,
        describe_groups_req,
        describe_groups_resp,
        &mut c,
    );
    check_api(
        ApiKey::ListGroups,
        list_groups_req,
        list_groups_resp,
        &mut c,
    );
    check_api(
        ApiKey::OffsetForLeaderEpoch,
        offset_for_leader_epoch_req,
        offset_for_leader_epoch_resp,
        &mut c,
    );
    check_api(
        ApiKey::CreateTopics,
        create_topics_req,
        create_topics_resp,
        &mut c,
    );
    check_api(
        ApiKey::DeleteTopics,
        delete_topics_req,
        delete_topics_resp,
        &mut c,
    );
    check_api(
        ApiKey::CreatePartitions,
        create_partitions_req,
        create_partitions_resp,
        &mut c,
    );
    check_api(
        ApiKey::DescribeConfigs,
        describe_configs_req,
        describe_configs_resp,
        &mut c,
    );
    check_api(
        ApiKey::DeleteRecords,
        delete_records_req,
        delete_records_resp,
        &mut c,
    );
    check_api(
        ApiKey::InitProducerId,
        init_producer_id_req,
        init_producer_id_resp,
        &mut c,
    );
    check_api(
        ApiKey::AddPartitionsToTxn,
        add_partitions_to_txn_req,
        add_partitions_to_txn_resp,
        &mut c,
    );
    check_api(
        ApiKey::AddOffsetsToTxn,
        add_offsets_to_txn_req,
        add_offsets_to_txn_resp,
        &mut c,
    );
    check_api(
        ApiKey::TxnOffsetCommit,
        txn_offset_commit_req,
        txn_offset_commit_resp,
        &mut c,
    );
    check_api(ApiKey::EndTxn, end_txn_req, end_txn_resp, &mut c);
    check_api(
        ApiKey::DeleteGroups,
        delete_groups_req,
        delete_groups_resp,
        &mut c,
    );
    check_api(
        ApiKey::OffsetDelete,
        offset_delete_req,
        offset_delete_resp,
        &mut c,
    );
    check_api(
        ApiKey::ConsumerGroupHeartbeat,
        consumer_group_heartbeat_req,
        consumer_group_heartbeat_resp,
        &mut c,
    );
    check_api(
        ApiKey::ConsumerGroupDescribe,
        consumer_group_describe_req,
        consumer_group_describe_resp,
        &mut c,
    );
    eprintln!(
        "{} APIs, {} versions, {} round trips, {} hostile bodies",
        c.apis, c.versions, c.round_trips, c.hostile_bodies
    );
    assert_eq!(c.apis, 28);
    // Every rewritten API is checked above.
    let rewritten = ApiKey::iter()
        .filter(|k| {
            (k.valid_versions().min..=k.valid_versions().max)
                .any(|v| coverage(*k as i16, v) == Coverage::Rewritten)
        })
        .count();
    assert_eq!(rewritten, c.apis);
}

// ---------------------------------------------------------------------------------------------
// Coverage
// ---------------------------------------------------------------------------------------------

#[test]
fn coverage_of_name_free_and_unsupported_apis() {
    for key in [
        ApiKey::SaslHandshake,
        ApiKey::SaslAuthenticate,
        ApiKey::DescribeCluster,
        ApiKey::GetTelemetrySubscriptions,
        ApiKey::PushTelemetry,
    ] {
        let r = key.valid_versions();
        for v in r.min..=r.max {
            assert_eq!(coverage(key as i16, v), Coverage::NameFree, "{key:?} v{v}");
        }
        assert_eq!(coverage(key as i16, r.max + 1), Coverage::Unsupported);
    }
    // Version negotiation: a client sends ApiVersions at the newest version it knows.
    for v in 0..=20 {
        assert_eq!(coverage(18, v), Coverage::NameFree);
    }
    assert_eq!(coverage(18, -1), Coverage::Unsupported);
    for key in [
        ApiKey::AlterConfigs,
        ApiKey::IncrementalAlterConfigs,
        ApiKey::DescribeAcls,
        ApiKey::ShareFetch,
        ApiKey::DescribeTopicPartitions,
        ApiKey::ListTransactions,
        ApiKey::DescribeProducers,
        ApiKey::WriteTxnMarkers,
    ] {
        let r = key.valid_versions();
        for v in r.min..=r.max {
            assert_eq!(
                coverage(key as i16, v),
                Coverage::Unsupported,
                "{key:?} v{v}"
            );
        }
    }
    for api_key in [-1, 88, 89, 93, 1000, i16::MAX, i16::MIN] {
        assert_eq!(coverage(api_key, 0), Coverage::Unsupported, "key {api_key}");
    }
    // kafka-protocol lists these versions but has no request schema for them.
    assert_eq!(
        coverage(ApiKey::OffsetCommit as i16, 10),
        Coverage::Unsupported
    );
    assert_eq!(
        coverage(ApiKey::OffsetFetch as i16, 10),
        Coverage::Unsupported
    );
    assert_eq!(
        coverage(ApiKey::InitProducerId as i16, 6),
        Coverage::Unsupported
    );
}

#[test]
fn name_free_passes_untouched_and_unsupported_is_refused() {
    let garbage = Bytes::from_static(b"\xff\xff\xff\xff not a message");
    for m in [&Exact as &dyn NameMapper, &Prefix] {
        assert!(matches!(
            rewrite_request(ApiKey::ApiVersions as i16, 9, garbage.clone(), m),
            Ok(None)
        ));
        assert!(matches!(
            rewrite_response(ApiKey::SaslAuthenticate as i16, 2, garbage.clone(), m),
            Ok(None)
        ));
        assert!(matches!(
            rewrite_request(ApiKey::AlterConfigs as i16, 1, garbage.clone(), m),
            Err(RewriteError::Unsupported {
                api_key: 33,
                api_version: 1
            })
        ));
        assert!(matches!(
            rewrite_response(ApiKey::Produce as i16, 2, garbage.clone(), m),
            Err(RewriteError::Unsupported { .. })
        ));
        assert!(matches!(
            rewrite_request(500, 0, garbage.clone(), m),
            Err(RewriteError::Unsupported { .. })
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Hidden names
// ---------------------------------------------------------------------------------------------

fn names_of(r: &MetadataResponse) -> Vec<&str> {
    r.topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().0.as_str())
        .collect()
}

#[test]
fn metadata_of_all_topics_under_a_prefix_shows_only_the_tenants_topics() {
    for v in 0..=13 {
        let physical = [
            "team-a.orders",
            "team-b.orders",
            "orders",
            "team-a.payments",
            "team-a.",
        ];
        let input = MetadataResponse::default().with_topics(
            physical
                .iter()
                .map(|n| metadata_topic(TopicName(s(n))))
                .collect(),
        );
        let out = rewrite_response(3, v, enc(&input, v), &Prefix)
            .unwrap()
            .unwrap();
        let got: MetadataResponse = dec(out, v).unwrap();
        assert_eq!(names_of(&got), ["orders", "payments"], "v{v}");
    }
}

#[test]
fn the_production_topic_is_hidden_from_a_canary() {
    for v in 0..=13 {
        let input = MetadataResponse::default().with_topics(vec![
            metadata_topic(TopicName(s("orders"))),
            metadata_topic(TopicName(s("orders-canary"))),
            metadata_topic(TopicName(s("payments"))),
        ]);
        let out = rewrite_response(3, v, enc(&input, v), &Exact)
            .unwrap()
            .unwrap();
        let got: MetadataResponse = dec(out, v).unwrap();
        assert_eq!(names_of(&got), ["orders", "payments"], "v{v}");
        // The remaining `orders` is the canary topic's entry, renamed.
        assert_eq!(got.topics[0], metadata_topic(TopicName(s("orders"))));
    }
}

#[test]
fn hidden_groups_and_topic_responses_are_dropped() {
    for v in 0..=5 {
        let input = ListGroupsResponse::default().with_groups(
            ["g", "g-canary", "other"]
                .iter()
                .map(|g| ListedGroup::default().with_group_id(GroupId(s(g))))
                .collect(),
        );
        let got: ListGroupsResponse = dec(
            rewrite_response(16, v, enc(&input, v), &Exact)
                .unwrap()
                .unwrap(),
            v,
        )
        .unwrap();
        let ids: Vec<_> = got.groups.iter().map(|g| g.group_id.0.as_str()).collect();
        assert_eq!(ids, ["g", "other"], "ListGroups v{v}");
    }
    for v in 3..=12 {
        let input = ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default().with_name(TopicName(s("team-b.x"))),
            TopicProduceResponse::default().with_name(TopicName(s("team-a.x"))),
        ]);
        let got: ProduceResponse = dec(
            rewrite_response(0, v, enc(&input, v), &Prefix)
                .unwrap()
                .unwrap(),
            v,
        )
        .unwrap();
        assert_eq!(got.responses.len(), 1, "Produce v{v}");
        assert_eq!(got.responses[0].name.0.as_str(), "x");
    }
    for v in 8..=9 {
        // A hidden group goes with its topics; a hidden topic of a kept group goes alone.
        let group = |g: &str, topics: &[&str]| {
            OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(s(g)))
                .with_topics(
                    topics
                        .iter()
                        .map(|t| OffsetFetchResponseTopics::default().with_name(TopicName(s(t))))
                        .collect(),
                )
        };
        let input = OffsetFetchResponse::default().with_groups(vec![
            group("g", &["orders-canary"]),
            group("g-canary", &["orders", "orders-canary"]),
        ]);
        let got: OffsetFetchResponse = dec(
            rewrite_response(9, v, enc(&input, v), &Exact)
                .unwrap()
                .unwrap(),
            v,
        )
        .unwrap();
        assert_eq!(
            got,
            OffsetFetchResponse::default().with_groups(vec![group("g", &["orders"])])
        );
    }
    for v in 0..=1 {
        let member = |topics: &[&str]| {
            consumer_group_describe_response::Member::default()
                .with_subscribed_topic_names(topics.iter().map(|t| TopicName(s(t))).collect())
        };
        let input = ConsumerGroupDescribeResponse::default().with_groups(vec![
            consumer_group_describe_response::DescribedGroup::default()
                .with_group_id(GroupId(s("team-a.g")))
                .with_members(vec![member(&["team-a.x", "y", "team-a.z"])]),
        ]);
        let got: ConsumerGroupDescribeResponse = dec(
            rewrite_response(69, v, enc(&input, v), &Prefix)
                .unwrap()
                .unwrap(),
            v,
        )
        .unwrap();
        assert_eq!(got.groups[0].group_id.0.as_str(), "g");
        assert_eq!(got.groups[0].members, vec![member(&["x", "z"])]);
    }
    for v in 1..=4 {
        let result = |t: i8, n: &str| {
            DescribeConfigsResult::default()
                .with_resource_type(t)
                .with_resource_name(s(n))
        };
        let input = DescribeConfigsResponse::default().with_results(vec![
            result(2, "orders"),
            result(32, "g"),
            result(4, "orders"),
        ]);
        let got: DescribeConfigsResponse = dec(
            rewrite_response(32, v, enc(&input, v), &Exact)
                .unwrap()
                .unwrap(),
            v,
        )
        .unwrap();
        assert_eq!(
            got.results,
            vec![result(4, "orders")],
            "DescribeConfigs v{v}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Names that cannot be mapped
// ---------------------------------------------------------------------------------------------

#[test]
fn a_topic_regex_subscription_is_refused() {
    let r = consumer_group_heartbeat_req(1, &N::logical())
        .with_subscribed_topic_regex(Some(s("orders.*")));
    let out = rewrite_request(68, 1, enc(&r, 1), &Prefix);
    assert!(
        matches!(out, Err(RewriteError::Unmappable("subscribed_topic_regex"))),
        "{out:?}"
    );
    // An empty regex names nothing.
    let r = consumer_group_heartbeat_req(1, &N::logical()).with_subscribed_topic_regex(Some(s("")));
    let out = rewrite_request(68, 1, enc(&r, 1), &Prefix)
        .unwrap()
        .unwrap();
    let got: ConsumerGroupHeartbeatRequest = dec(out, 1).unwrap();
    assert_eq!(got.group_id.0.as_str(), "team-a.g");
}

#[test]
fn find_coordinator_keys() {
    // An unknown key type is refused rather than forwarded with unmapped names.
    for v in 1..=6 {
        let r = find_coordinator_req(v, &N::logical()).with_key_type(2);
        let out = rewrite_request(10, v, enc(&r, v), &Exact);
        assert!(
            matches!(out, Err(RewriteError::Unmappable(_))),
            "v{v}: {out:?}"
        );
    }
    // Keys are never dropped: a key the client sent as is comes back as is.
    for v in 4..=6 {
        let coordinator = |k: &str| Coordinator::default().with_key(s(k));
        let input = FindCoordinatorResponse::default()
            .with_coordinators(vec![coordinator("g"), coordinator("other")]);
        assert!(matches!(
            rewrite_response(10, v, enc(&input, v), &Exact),
            Ok(None)
        ));
        // Two kinds giving two different logical names: refused.
        let out = rewrite_response(10, v, enc(&input, v), &Conflicting);
        assert!(
            matches!(out, Err(RewriteError::Unmappable(_))),
            "v{v}: {out:?}"
        );
    }
}

#[test]
fn coordinator_keys_are_mapped_back_as_the_kind_the_request_asked_for() {
    // Found by fuzzing: without the request's key type, a key no mapping can map back (another
    // tenant's group, which only a misbehaving broker sends) was shown as the broker sent it.
    for v in 4..=6 {
        let group_request = find_coordinator_req(v, &N::logical()).with_key_type(0);
        let txn_request = find_coordinator_req(v, &N::logical()).with_key_type(1);
        let body = enc(&group_request, v);
        assert_eq!(
            coordinator_key_type(v, &body),
            Some(NameKind::Group),
            "v{v}"
        );
        let body = enc(&txn_request, v);
        assert_eq!(
            coordinator_key_type(v, &body),
            Some(NameKind::TransactionalId),
            "v{v}"
        );
        let hints = |kind| Hints {
            coordinator_keys: Some(kind),
        };
        let coordinator = |k: &str| Coordinator::default().with_key(s(k));
        let respond = |keys: &[&str], kind| {
            let input = FindCoordinatorResponse::default()
                .with_coordinators(keys.iter().map(|k| coordinator(k)).collect());
            rewrite_response_after(10, v, enc(&input, v), &Prefix, hints(kind), b"head")
        };
        let out = respond(&["team-a.g"], NameKind::Group).unwrap().unwrap();
        assert_eq!(&out[..4], b"head");
        let got: FindCoordinatorResponse = dec(out.freeze().slice(4..), v).unwrap();
        assert_eq!(got.coordinators[0].key.as_str(), "g", "v{v}");
        let out = respond(&["team-a.g", "team-b.g1"], NameKind::Group);
        assert!(
            matches!(out, Err(RewriteError::Unmappable(_))),
            "v{v}: {out:?}"
        );
        let out = respond(&["team-b.t"], NameKind::TransactionalId);
        assert!(
            matches!(out, Err(RewriteError::Unmappable(_))),
            "v{v}: {out:?}"
        );
    }
    // Before v4 the response carries no key; the body does not lead with a key type.
    assert_eq!(coordinator_key_type(3, &[1]), None);
    assert_eq!(coordinator_key_type(4, &[]), None);
    assert_eq!(coordinator_key_type(4, &[2]), None);
}

// ---------------------------------------------------------------------------------------------
// Malformed bodies
// ---------------------------------------------------------------------------------------------

#[test]
fn a_huge_array_length_fails_fast() {
    let started = Instant::now();
    for v in 0..=13 {
        let mut body = BytesMut::new();
        if v >= 9 {
            // Compact array: unsigned varint of length + 1 = 0x80000000.
            body.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]);
        } else {
            body.extend_from_slice(&0x7fff_ffff_i32.to_be_bytes());
        }
        body.extend_from_slice(&[0, 1, b'x']);
        let out = rewrite_request(3, v, body.freeze(), &Prefix);
        assert!(matches!(out, Err(RewriteError::Decode(_))), "v{v}: {out:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn trailing_bytes_are_ignored_like_brokers_do() {
    // librdkafka 2.16.1's Metadata v12 request for all topics (body after the request header):
    // topics=null, no auto-creation, no authorized operations, no tagged fields, then 3 bytes
    // more. Brokers ignore them; so does the filter.
    let body = Bytes::from_static(&[0, 0, 0, 0, 0x01, 0, 0]);
    assert!(matches!(rewrite_request(3, 12, body, &Prefix), Ok(None)));
    let mut body = BytesMut::from(&enc(&heartbeat_req(0, &N::logical()), 0)[..]);
    body.extend_from_slice(b"x");
    let out = rewrite_request(12, 0, body.freeze(), &Exact)
        .unwrap()
        .unwrap();
    assert_eq!(
        dec::<HeartbeatRequest>(out, 0),
        Some(heartbeat_req(0, &N::physical(&Exact)))
    );
}

// ---------------------------------------------------------------------------------------------
// Error responses
// ---------------------------------------------------------------------------------------------

/// Decodes `error_response_body` for every version of a response type, and checks the error
/// code where the type has a top-level one at that version. Returns the number of versions.
fn check_error_body<T>(key: ApiKey, error_code: Option<fn(&T) -> i16>, set: fn(&mut T)) -> usize
where
    T: Message + Decodable + Encodable + Default + Debug,
{
    let code = 42;
    assert!(error_response_body(key as i16, T::VERSIONS.min - 1, code).is_none());
    assert!(error_response_body(key as i16, T::VERSIONS.max + 1, code).is_none());
    for v in T::VERSIONS.min..=T::VERSIONS.max {
        let body = error_response_body(key as i16, v, code)
            .unwrap_or_else(|| panic!("{key:?} v{v}: no error body"));
        let got: T = dec(body, v).unwrap_or_else(|| panic!("{key:?} v{v}: does not decode"));
        if let Some(get) = error_code {
            // Whether the field exists at `v`: kafka-protocol refuses to encode some fields at
            // versions without them and silently skips others (the "ignorable" ones).
            let mut with_code = T::default();
            set(&mut with_code);
            let mut b = BytesMut::new();
            let has_field = with_code.encode(&mut b, v).is_ok()
                && dec::<T>(b, v).is_some_and(|r| get(&r) == code);
            let want = if has_field { code } else { 0 };
            assert_eq!(get(&got), want, "{key:?} v{v}");
        }
    }
    (T::VERSIONS.max - T::VERSIONS.min + 1) as usize
}

macro_rules! check_error_bodies {
    (
        with_error_code { $($with:ident => $with_resp:ident;)* }
        without_error_code { $($without:ident => $without_resp:ident;)* }
    ) => {{
        let mut apis = 0;
        let mut versions = 0;
        $(
            versions += check_error_body::<$with_resp>(
                ApiKey::$with,
                Some(|r| r.error_code),
                |r| r.error_code = 42,
            );
            apis += 1;
        )*
        $(
            versions += check_error_body::<$without_resp>(ApiKey::$without, None, |_| {});
            apis += 1;
        )*
        (apis, versions)
    }};
}

#[test]
fn error_response_bodies_decode_for_every_api_and_version() {
    let (apis, versions) = check_error_bodies! {
        with_error_code {
            Fetch => FetchResponse;
            Metadata => MetadataResponse;
            OffsetFetch => OffsetFetchResponse;
            FindCoordinator => FindCoordinatorResponse;
            JoinGroup => JoinGroupResponse;
            Heartbeat => HeartbeatResponse;
            LeaveGroup => LeaveGroupResponse;
            SyncGroup => SyncGroupResponse;
            ListGroups => ListGroupsResponse;
            SaslHandshake => SaslHandshakeResponse;
            ApiVersions => ApiVersionsResponse;
            InitProducerId => InitProducerIdResponse;
            AddPartitionsToTxn => AddPartitionsToTxnResponse;
            AddOffsetsToTxn => AddOffsetsToTxnResponse;
            EndTxn => EndTxnResponse;
            DescribeAcls => DescribeAclsResponse;
            DescribeLogDirs => DescribeLogDirsResponse;
            SaslAuthenticate => SaslAuthenticateResponse;
            CreateDelegationToken => CreateDelegationTokenResponse;
            RenewDelegationToken => RenewDelegationTokenResponse;
            ExpireDelegationToken => ExpireDelegationTokenResponse;
            DescribeDelegationToken => DescribeDelegationTokenResponse;
            ElectLeaders => ElectLeadersResponse;
            AlterPartitionReassignments => AlterPartitionReassignmentsResponse;
            ListPartitionReassignments => ListPartitionReassignmentsResponse;
            OffsetDelete => OffsetDeleteResponse;
            DescribeClientQuotas => DescribeClientQuotasResponse;
            DescribeUserScramCredentials => DescribeUserScramCredentialsResponse;
            Vote => VoteResponse;
            BeginQuorumEpoch => BeginQuorumEpochResponse;
            EndQuorumEpoch => EndQuorumEpochResponse;
            DescribeQuorum => DescribeQuorumResponse;
            AlterPartition => AlterPartitionResponse;
            UpdateFeatures => UpdateFeaturesResponse;
            Envelope => EnvelopeResponse;
            FetchSnapshot => FetchSnapshotResponse;
            DescribeCluster => DescribeClusterResponse;
            BrokerRegistration => BrokerRegistrationResponse;
            BrokerHeartbeat => BrokerHeartbeatResponse;
            UnregisterBroker => UnregisterBrokerResponse;
            ListTransactions => ListTransactionsResponse;
            AllocateProducerIds => AllocateProducerIdsResponse;
            ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse;
            ControllerRegistration => ControllerRegistrationResponse;
            GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse;
            PushTelemetry => PushTelemetryResponse;
            AssignReplicasToDirs => AssignReplicasToDirsResponse;
            ListConfigResources => ListConfigResourcesResponse;
            ShareGroupHeartbeat => ShareGroupHeartbeatResponse;
            ShareFetch => ShareFetchResponse;
            ShareAcknowledge => ShareAcknowledgeResponse;
            AddRaftVoter => AddRaftVoterResponse;
            RemoveRaftVoter => RemoveRaftVoterResponse;
            UpdateRaftVoter => UpdateRaftVoterResponse;
            AlterShareGroupOffsets => AlterShareGroupOffsetsResponse;
            DeleteShareGroupOffsets => DeleteShareGroupOffsetsResponse;
        }
        without_error_code {
            Produce => ProduceResponse;
            ListOffsets => ListOffsetsResponse;
            OffsetCommit => OffsetCommitResponse;
            DescribeGroups => DescribeGroupsResponse;
            CreateTopics => CreateTopicsResponse;
            DeleteTopics => DeleteTopicsResponse;
            DeleteRecords => DeleteRecordsResponse;
            OffsetForLeaderEpoch => OffsetForLeaderEpochResponse;
            WriteTxnMarkers => WriteTxnMarkersResponse;
            TxnOffsetCommit => TxnOffsetCommitResponse;
            CreateAcls => CreateAclsResponse;
            DeleteAcls => DeleteAclsResponse;
            DescribeConfigs => DescribeConfigsResponse;
            AlterConfigs => AlterConfigsResponse;
            AlterReplicaLogDirs => AlterReplicaLogDirsResponse;
            CreatePartitions => CreatePartitionsResponse;
            DeleteGroups => DeleteGroupsResponse;
            IncrementalAlterConfigs => IncrementalAlterConfigsResponse;
            AlterClientQuotas => AlterClientQuotasResponse;
            AlterUserScramCredentials => AlterUserScramCredentialsResponse;
            DescribeProducers => DescribeProducersResponse;
            DescribeTransactions => DescribeTransactionsResponse;
            ConsumerGroupDescribe => ConsumerGroupDescribeResponse;
            DescribeTopicPartitions => DescribeTopicPartitionsResponse;
            ShareGroupDescribe => ShareGroupDescribeResponse;
            InitializeShareGroupState => InitializeShareGroupStateResponse;
            ReadShareGroupState => ReadShareGroupStateResponse;
            WriteShareGroupState => WriteShareGroupStateResponse;
            DeleteShareGroupState => DeleteShareGroupStateResponse;
            ReadShareGroupStateSummary => ReadShareGroupStateSummaryResponse;
            DescribeShareGroupOffsets => DescribeShareGroupOffsetsResponse;
        }
    };
    eprintln!("error bodies: {apis} APIs, {versions} versions");
    assert_eq!(apis, ApiKey::iter().count());
    assert!(error_response_body(1000, 0, 42).is_none());
    assert!(error_response_body(-1, 0, 42).is_none());
}
