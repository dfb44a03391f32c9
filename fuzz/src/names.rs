//! The topic names, group ids and transactional ids a decoded request or response carries, read
//! with kafka-protocol field by field at the versions where the schema has each field (at other
//! versions the decoder leaves a field at its default, which is not a name).
//!
//! Written from kafka-protocol's schemas, not from the filter's rewriters: the oracles must not
//! share the filter's idea of where names are.

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Message, Request, StrBytes, VersionRange};

/// The kind of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Topic,
    Group,
    Txn,
    /// A FindCoordinator v4+ response key: a group or a transactional id (the response does not
    /// say which).
    Key,
}

/// What a message carries.
#[derive(Debug, Default, Clone)]
pub struct Found {
    pub names: Vec<(Kind, String)>,
    /// Things a rule cannot map (a FindCoordinator key type other than group or transaction, a
    /// topic regex): such a request must never reach the broker from a client under a rule.
    pub unmappable: Vec<&'static str>,
}

impl Found {
    fn add(&mut self, kind: Kind, name: &StrBytes) {
        self.names.push((kind, name.as_str().to_string()));
    }
    fn add_opt(&mut self, kind: Kind, name: &Option<impl std::ops::Deref<Target = StrBytes>>) {
        if let Some(n) = name {
            self.add(kind, n);
        }
    }
}

fn dec<T: Decodable>(body: &Bytes, v: i16) -> Result<T, String> {
    let mut b = body.clone();
    T::decode(&mut b, v).map_err(|e| format!("{e:#}"))
}

fn contains(r: VersionRange, v: i16) -> bool {
    r.min <= v && v <= r.max
}

/// Versions at which kafka-protocol has both the request and the response schema of `R`.
fn both<R: Request>(key: ApiKey) -> VersionRange {
    R::VERSIONS
        .intersect(&<R::Response as Message>::VERSIONS)
        .intersect(&key.valid_versions())
}

/// How the README says an API and version is treated for a client under a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Names mapped in the request and back in the response.
    Rewritten,
    /// Carries no name (ApiVersions, SASL, DescribeCluster, telemetry, Fetch v13+): passes.
    NameFree,
    /// Every other API and version: refused (the broker never sees it).
    Refused,
}

/// README, "What is rewritten, and what is refused".
pub fn treatment(api_key: i16, v: i16) -> Treatment {
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Treatment::Refused;
    };
    let range = match key {
        ApiKey::Produce => both::<ProduceRequest>(key),
        ApiKey::Fetch => {
            if v >= 13 && contains(key.valid_versions(), v) {
                return Treatment::NameFree;
            }
            both::<FetchRequest>(key)
        }
        ApiKey::ListOffsets => both::<ListOffsetsRequest>(key),
        ApiKey::Metadata => both::<MetadataRequest>(key),
        ApiKey::OffsetCommit => both::<OffsetCommitRequest>(key),
        ApiKey::OffsetFetch => both::<OffsetFetchRequest>(key),
        ApiKey::FindCoordinator => both::<FindCoordinatorRequest>(key),
        ApiKey::JoinGroup => both::<JoinGroupRequest>(key),
        ApiKey::SyncGroup => both::<SyncGroupRequest>(key),
        ApiKey::Heartbeat => both::<HeartbeatRequest>(key),
        ApiKey::LeaveGroup => both::<LeaveGroupRequest>(key),
        ApiKey::DescribeGroups => both::<DescribeGroupsRequest>(key),
        ApiKey::ListGroups => both::<ListGroupsRequest>(key),
        ApiKey::OffsetForLeaderEpoch => both::<OffsetForLeaderEpochRequest>(key),
        ApiKey::CreateTopics => both::<CreateTopicsRequest>(key),
        ApiKey::DeleteTopics => both::<DeleteTopicsRequest>(key),
        ApiKey::CreatePartitions => both::<CreatePartitionsRequest>(key),
        ApiKey::DescribeConfigs => both::<DescribeConfigsRequest>(key),
        ApiKey::DeleteRecords => both::<DeleteRecordsRequest>(key),
        ApiKey::InitProducerId => both::<InitProducerIdRequest>(key),
        ApiKey::AddPartitionsToTxn => both::<AddPartitionsToTxnRequest>(key),
        ApiKey::AddOffsetsToTxn => both::<AddOffsetsToTxnRequest>(key),
        ApiKey::TxnOffsetCommit => both::<TxnOffsetCommitRequest>(key),
        ApiKey::EndTxn => both::<EndTxnRequest>(key),
        ApiKey::DeleteGroups => both::<DeleteGroupsRequest>(key),
        ApiKey::OffsetDelete => both::<OffsetDeleteRequest>(key),
        ApiKey::ConsumerGroupHeartbeat => both::<ConsumerGroupHeartbeatRequest>(key),
        ApiKey::ConsumerGroupDescribe => both::<ConsumerGroupDescribeRequest>(key),
        // Carries no names at any version (a client under a rule negotiates with it; the
        // filter passes even a negative version, which the broker answers with an error).
        ApiKey::ApiVersions => return Treatment::NameFree,
        ApiKey::SaslHandshake
        | ApiKey::SaslAuthenticate
        | ApiKey::DescribeCluster
        | ApiKey::GetTelemetrySubscriptions
        | ApiKey::PushTelemetry
            if contains(key.valid_versions(), v) =>
        {
            return Treatment::NameFree
        }
        _ => return Treatment::Refused,
    };
    if contains(range, v) {
        Treatment::Rewritten
    } else {
        Treatment::Refused
    }
}

/// Whether kafka-protocol has a response schema for this API and version (the filter can only
/// answer a refused request when it has one).
pub fn has_response_schema(api_key: i16, v: i16) -> bool {
    ApiKey::try_from(api_key).is_ok_and(|k| contains(k.valid_versions(), v))
}

fn config_kind(resource_type: i8) -> Option<Kind> {
    match resource_type {
        2 => Some(Kind::Topic),
        32 => Some(Kind::Group),
        _ => None,
    }
}

/// The names in a request body of a rewritten API. `Err`: the body does not decode.
pub fn request_names(key: ApiKey, v: i16, body: &Bytes) -> Result<Found, String> {
    use Kind::*;
    let mut f = Found::default();
    match key {
        ApiKey::Produce => {
            let r: ProduceRequest = dec(body, v)?;
            f.add_opt(Txn, &r.transactional_id);
            if v <= 12 {
                r.topic_data.iter().for_each(|t| f.add(Topic, &t.name));
            }
        }
        ApiKey::Fetch => {
            let r: FetchRequest = dec(body, v)?;
            if v <= 12 {
                r.topics.iter().for_each(|t| f.add(Topic, &t.topic));
                if v >= 7 {
                    r.forgotten_topics_data
                        .iter()
                        .for_each(|t| f.add(Topic, &t.topic));
                }
            }
        }
        ApiKey::ListOffsets => {
            let r: ListOffsetsRequest = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::Metadata => {
            let r: MetadataRequest = dec(body, v)?;
            r.topics
                .iter()
                .flatten()
                .for_each(|t| f.add_opt(Topic, &t.name));
        }
        ApiKey::OffsetCommit => {
            let r: OffsetCommitRequest = dec(body, v)?;
            f.add(Group, &r.group_id);
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::OffsetFetch => {
            let r: OffsetFetchRequest = dec(body, v)?;
            if v <= 7 {
                f.add(Group, &r.group_id);
                r.topics
                    .iter()
                    .flatten()
                    .for_each(|t| f.add(Topic, &t.name));
            } else {
                for g in &r.groups {
                    f.add(Group, &g.group_id);
                    g.topics
                        .iter()
                        .flatten()
                        .for_each(|t| f.add(Topic, &t.name));
                }
            }
        }
        ApiKey::FindCoordinator => {
            let r: FindCoordinatorRequest = dec(body, v)?;
            let kind = match r.key_type {
                0 => Group,
                1 => Txn,
                _ => {
                    f.unmappable.push("FindCoordinator key_type");
                    Group
                }
            };
            if v <= 3 {
                f.add(kind, &r.key);
            } else {
                r.coordinator_keys.iter().for_each(|k| f.add(kind, k));
            }
        }
        ApiKey::JoinGroup => f.add(Group, &dec::<JoinGroupRequest>(body, v)?.group_id),
        ApiKey::SyncGroup => f.add(Group, &dec::<SyncGroupRequest>(body, v)?.group_id),
        ApiKey::Heartbeat => f.add(Group, &dec::<HeartbeatRequest>(body, v)?.group_id),
        ApiKey::LeaveGroup => f.add(Group, &dec::<LeaveGroupRequest>(body, v)?.group_id),
        ApiKey::DescribeGroups => {
            let r: DescribeGroupsRequest = dec(body, v)?;
            r.groups.iter().for_each(|g| f.add(Group, g));
        }
        ApiKey::ListGroups => {
            dec::<ListGroupsRequest>(body, v)?;
        }
        ApiKey::OffsetForLeaderEpoch => {
            let r: OffsetForLeaderEpochRequest = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.topic));
        }
        ApiKey::CreateTopics => {
            let r: CreateTopicsRequest = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::DeleteTopics => {
            let r: DeleteTopicsRequest = dec(body, v)?;
            if v <= 5 {
                r.topic_names.iter().for_each(|t| f.add(Topic, t));
            } else {
                r.topics.iter().for_each(|t| f.add_opt(Topic, &t.name));
            }
        }
        ApiKey::CreatePartitions => {
            let r: CreatePartitionsRequest = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::DescribeConfigs => {
            let r: DescribeConfigsRequest = dec(body, v)?;
            for res in &r.resources {
                if let Some(k) = config_kind(res.resource_type) {
                    f.add(k, &res.resource_name);
                }
            }
        }
        ApiKey::DeleteRecords => {
            let r: DeleteRecordsRequest = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::InitProducerId => {
            let r: InitProducerIdRequest = dec(body, v)?;
            f.add_opt(Txn, &r.transactional_id);
        }
        ApiKey::AddPartitionsToTxn => {
            let r: AddPartitionsToTxnRequest = dec(body, v)?;
            if v <= 3 {
                f.add(Txn, &r.v3_and_below_transactional_id);
                r.v3_and_below_topics
                    .iter()
                    .for_each(|t| f.add(Topic, &t.name));
            } else {
                for t in &r.transactions {
                    f.add(Txn, &t.transactional_id);
                    t.topics.iter().for_each(|t| f.add(Topic, &t.name));
                }
            }
        }
        ApiKey::AddOffsetsToTxn => {
            let r: AddOffsetsToTxnRequest = dec(body, v)?;
            f.add(Txn, &r.transactional_id);
            f.add(Group, &r.group_id);
        }
        ApiKey::TxnOffsetCommit => {
            let r: TxnOffsetCommitRequest = dec(body, v)?;
            f.add(Txn, &r.transactional_id);
            f.add(Group, &r.group_id);
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::EndTxn => f.add(Txn, &dec::<EndTxnRequest>(body, v)?.transactional_id),
        ApiKey::DeleteGroups => {
            let r: DeleteGroupsRequest = dec(body, v)?;
            r.groups_names.iter().for_each(|g| f.add(Group, g));
        }
        ApiKey::OffsetDelete => {
            let r: OffsetDeleteRequest = dec(body, v)?;
            f.add(Group, &r.group_id);
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::ConsumerGroupHeartbeat => {
            let r: ConsumerGroupHeartbeatRequest = dec(body, v)?;
            f.add(Group, &r.group_id);
            r.subscribed_topic_names
                .iter()
                .flatten()
                .for_each(|t| f.add(Topic, t));
            if v >= 1
                && r.subscribed_topic_regex
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
            {
                f.unmappable
                    .push("ConsumerGroupHeartbeat subscribed_topic_regex");
            }
        }
        ApiKey::ConsumerGroupDescribe => {
            let r: ConsumerGroupDescribeRequest = dec(body, v)?;
            r.group_ids.iter().for_each(|g| f.add(Group, g));
        }
        _ => return Err(format!("{key:?} is not a rewritten API")),
    }
    Ok(f)
}

/// The names in a response body of a rewritten API. `Err`: the body does not decode.
pub fn response_names(key: ApiKey, v: i16, body: &Bytes) -> Result<Found, String> {
    use Kind::*;
    let mut f = Found::default();
    match key {
        ApiKey::Produce => {
            let r: ProduceResponse = dec(body, v)?;
            if v <= 12 {
                r.responses.iter().for_each(|t| f.add(Topic, &t.name));
            }
        }
        ApiKey::Fetch => {
            let r: FetchResponse = dec(body, v)?;
            if v <= 12 {
                r.responses.iter().for_each(|t| f.add(Topic, &t.topic));
            }
        }
        ApiKey::ListOffsets => {
            let r: ListOffsetsResponse = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::Metadata => {
            let r: MetadataResponse = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add_opt(Topic, &t.name));
        }
        ApiKey::OffsetCommit => {
            let r: OffsetCommitResponse = dec(body, v)?;
            if v <= 9 {
                r.topics.iter().for_each(|t| f.add(Topic, &t.name));
            }
        }
        ApiKey::OffsetFetch => {
            let r: OffsetFetchResponse = dec(body, v)?;
            if v <= 7 {
                r.topics.iter().for_each(|t| f.add(Topic, &t.name));
            } else {
                for g in &r.groups {
                    f.add(Group, &g.group_id);
                    if v <= 9 {
                        g.topics.iter().for_each(|t| f.add(Topic, &t.name));
                    }
                }
            }
        }
        ApiKey::FindCoordinator => {
            let r: FindCoordinatorResponse = dec(body, v)?;
            if v >= 4 {
                r.coordinators.iter().for_each(|c| f.add(Key, &c.key));
            }
        }
        ApiKey::DescribeGroups => {
            let r: DescribeGroupsResponse = dec(body, v)?;
            r.groups.iter().for_each(|g| f.add(Group, &g.group_id));
        }
        ApiKey::ListGroups => {
            let r: ListGroupsResponse = dec(body, v)?;
            r.groups.iter().for_each(|g| f.add(Group, &g.group_id));
        }
        ApiKey::OffsetForLeaderEpoch => {
            let r: OffsetForLeaderEpochResponse = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.topic));
        }
        ApiKey::CreateTopics => {
            let r: CreateTopicsResponse = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::DeleteTopics => {
            let r: DeleteTopicsResponse = dec(body, v)?;
            r.responses.iter().for_each(|t| f.add_opt(Topic, &t.name));
        }
        ApiKey::CreatePartitions => {
            let r: CreatePartitionsResponse = dec(body, v)?;
            r.results.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::DescribeConfigs => {
            let r: DescribeConfigsResponse = dec(body, v)?;
            for res in &r.results {
                if let Some(k) = config_kind(res.resource_type) {
                    f.add(k, &res.resource_name);
                }
            }
        }
        ApiKey::DeleteRecords => {
            let r: DeleteRecordsResponse = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::AddPartitionsToTxn => {
            let r: AddPartitionsToTxnResponse = dec(body, v)?;
            if v <= 3 {
                r.results_by_topic_v3_and_below
                    .iter()
                    .for_each(|t| f.add(Topic, &t.name));
            } else {
                for t in &r.results_by_transaction {
                    f.add(Txn, &t.transactional_id);
                    t.topic_results.iter().for_each(|t| f.add(Topic, &t.name));
                }
            }
        }
        ApiKey::TxnOffsetCommit => {
            let r: TxnOffsetCommitResponse = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::DeleteGroups => {
            let r: DeleteGroupsResponse = dec(body, v)?;
            r.results.iter().for_each(|g| f.add(Group, &g.group_id));
        }
        ApiKey::OffsetDelete => {
            let r: OffsetDeleteResponse = dec(body, v)?;
            r.topics.iter().for_each(|t| f.add(Topic, &t.name));
        }
        ApiKey::ConsumerGroupDescribe => {
            let r: ConsumerGroupDescribeResponse = dec(body, v)?;
            for g in &r.groups {
                f.add(Group, &g.group_id);
                for m in &g.members {
                    m.subscribed_topic_names
                        .iter()
                        .for_each(|t| f.add(Topic, t));
                    for a in [&m.assignment, &m.target_assignment] {
                        a.topic_partitions
                            .iter()
                            .for_each(|tp| f.add(Topic, &tp.topic_name));
                    }
                }
            }
        }
        // Rewritten APIs whose responses carry no names at any version.
        ApiKey::JoinGroup => drop(dec::<JoinGroupResponse>(body, v)?),
        ApiKey::SyncGroup => drop(dec::<SyncGroupResponse>(body, v)?),
        ApiKey::Heartbeat => drop(dec::<HeartbeatResponse>(body, v)?),
        ApiKey::LeaveGroup => drop(dec::<LeaveGroupResponse>(body, v)?),
        ApiKey::InitProducerId => drop(dec::<InitProducerIdResponse>(body, v)?),
        ApiKey::AddOffsetsToTxn => drop(dec::<AddOffsetsToTxnResponse>(body, v)?),
        ApiKey::EndTxn => drop(dec::<EndTxnResponse>(body, v)?),
        ApiKey::ConsumerGroupHeartbeat => drop(dec::<ConsumerGroupHeartbeatResponse>(body, v)?),
        _ => return Err(format!("{key:?} is not a rewritten API")),
    }
    Ok(f)
}

/// Decodes any response body (for refused requests: the filter's own error response).
pub fn response_decodes(key: ApiKey, v: i16, body: &Bytes) -> Result<(), String> {
    let mut b = body.clone();
    ResponseKind::decode(key, &mut b, v)
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

/// Whether a message holds an unknown tagged field whose tag does not fit an `i32` (kafka-protocol
/// keeps such a tag under a negative key, counts it when it re-encodes the message but does not
/// write it: finding `tag-overflow`). `request`: the body is a request's, else a response's.
pub fn has_overflowing_tag(key: ApiKey, v: i16, body: &Bytes, request: bool) -> bool {
    let mut b = body.clone();
    let debug = if request {
        RequestKind::decode(key, &mut b, v).map(|r| format!("{r:?}"))
    } else {
        ResponseKind::decode(key, &mut b, v).map(|r| format!("{r:?}"))
    };
    debug.is_ok_and(|d| d.contains("unknown_tagged_fields: {-"))
}
