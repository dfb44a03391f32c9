//! Per-resource enforcement, the way a broker answers: a request naming several topics (or
//! groups) is forwarded without the denied ones, and its response gets an entry for each denied
//! one with the authorization error, as Kafka's own `KafkaApis` would have written it. A request
//! with nothing left to forward is answered from the same entries alone.
//!
//! Decoded and re-encoded with `kafka-protocol`; the records of what is forwarded are never
//! copied (they stay slices of the frame).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::fetch_response::{self, FetchableTopicResponse};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use uuid::Uuid;

use crate::codec::budgeted;

/// A resource of a request, as the split asks about it.
#[derive(Debug, Clone, Copy)]
pub enum Named<'a> {
    Topic(&'a str),
    TopicId(&'a [u8; 16]),
    Group(&'a str),
}

/// The error a denied resource gets; `None`: allowed.
pub type Deny<'a> = &'a dyn Fn(Named<'_>) -> Option<i16>;

/// A topic the split took out of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedTopic {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<i32>,
    pub code: i16,
}

/// What was taken out of a request, for its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Topics(Vec<DeniedTopic>),
    /// Groups, or a FindCoordinator request's keys (groups or transactional ids).
    Groups(Vec<(String, i16)>),
}

impl Denied {
    /// What keeping it costs, in entries: each denied topic and partition, or group.
    pub fn weight(&self) -> usize {
        match self {
            Denied::Topics(t) => t.iter().map(|t| 1 + t.partitions.len()).sum(),
            Denied::Groups(g) => g.len(),
        }
    }
}

/// What else the forwarded request must not do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Metadata: the client may not create topics by asking for them.
    pub no_auto_create: bool,
    /// Fetch: the most the response may hold (it is held whole to add the denied entries).
    pub fetch_max_bytes: i32,
}

/// A request split in two.
#[derive(Debug)]
pub struct Split {
    /// The request body to forward; `None`: nothing is left to forward.
    pub forward: Option<BytesMut>,
    pub denied: Denied,
}

/// Whether requests of this API are split per resource (others are allowed or denied whole).
pub fn splits(api_key: i16) -> bool {
    matches!(
        ApiKey::try_from(api_key),
        Ok(ApiKey::Produce
            | ApiKey::Fetch
            | ApiKey::Metadata
            | ApiKey::ListOffsets
            | ApiKey::OffsetCommit
            | ApiKey::CreateTopics
            | ApiKey::DeleteTopics
            | ApiKey::DescribeGroups
            | ApiKey::FindCoordinator)
    )
}

fn decode<T: Decodable>(body: &Bytes, version: i16) -> Option<T> {
    budgeted::decode(&mut body.clone(), version)
}

fn encode<T: Encodable>(m: &T, version: i16) -> Option<BytesMut> {
    let mut out = BytesMut::new();
    m.encode(&mut out, version).ok()?;
    Some(out)
}

/// The re-encoded request, or `None` (nothing to forward) when `nothing_left`; `None` outside
/// if it does not encode.
fn forward_unless<T: Encodable>(
    nothing_left: bool,
    r: &T,
    version: i16,
) -> Option<Option<BytesMut>> {
    if nothing_left {
        return Some(None);
    }
    encode(r, version).map(Some)
}

fn name_of(n: &TopicName) -> String {
    n.as_str().to_string()
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn id_of(u: &Uuid) -> [u8; 16] {
    *u.as_bytes()
}

/// The verdict on a topic named by name or (from `by_id_from` on) by id.
fn topic_verdict(deny: Deny<'_>, by_id: bool, name: &TopicName, id: &Uuid) -> Option<i16> {
    if by_id {
        deny(Named::TopicId(id.as_bytes()))
    } else {
        deny(Named::Topic(name.as_str()))
    }
}

/// Take the denied topics out of `items`; what stays, and what was taken.
fn partition_topics<T>(
    items: Vec<T>,
    verdict: impl Fn(&T) -> Option<i16>,
    describe: impl Fn(&T) -> DeniedTopic,
) -> (Vec<T>, Vec<DeniedTopic>) {
    let mut kept = Vec::with_capacity(items.len());
    let mut denied = Vec::new();
    for item in items {
        match verdict(&item) {
            None => kept.push(item),
            Some(code) => {
                let mut d = describe(&item);
                d.code = code;
                denied.push(d);
            }
        }
    }
    (kept, denied)
}

fn denied_topic(name: &TopicName, id: &Uuid, partitions: Vec<i32>) -> DeniedTopic {
    DeniedTopic {
        name: name_of(name),
        id: id_of(id),
        partitions,
        code: 0,
    }
}

/// Split the request (`body`: after its header). `None`: the body does not decode or
/// re-encode, or the API is not one that [`splits`].
pub fn split(
    api_key: i16,
    version: i16,
    body: &Bytes,
    deny: Deny<'_>,
    limits: Limits,
) -> Option<Split> {
    let topics = |forward: Option<BytesMut>, denied| {
        Some(Split {
            forward,
            denied: Denied::Topics(denied),
        })
    };
    match ApiKey::try_from(api_key).ok()? {
        ApiKey::Produce => {
            let mut r: ProduceRequest = decode(body, version)?;
            let by_id = version >= 13;
            let (kept, denied) = partition_topics(
                std::mem::take(&mut r.topic_data),
                |t| topic_verdict(deny, by_id, &t.name, &t.topic_id),
                |t| {
                    let parts = t.partition_data.iter().map(|p| p.index).collect();
                    denied_topic(&t.name, &t.topic_id, parts)
                },
            );
            r.topic_data = kept;
            let forward = forward_unless(r.topic_data.is_empty(), &r, version)?;
            topics(forward, denied)
        }
        ApiKey::Fetch => {
            let mut r: FetchRequest = decode(body, version)?;
            let by_id = version >= 13;
            let (kept, denied) = partition_topics(
                std::mem::take(&mut r.topics),
                |t| topic_verdict(deny, by_id, &t.topic, &t.topic_id),
                |t| {
                    let parts = t.partitions.iter().map(|p| p.partition).collect();
                    denied_topic(&t.topic, &t.topic_id, parts)
                },
            );
            r.topics = kept;
            if limits.fetch_max_bytes > 0 && version >= 3 {
                r.max_bytes = r.max_bytes.clamp(0, limits.fetch_max_bytes);
            }
            // A fetch session's forgotten topics name nothing to read: they stay.
            let forward = forward_unless(r.topics.is_empty() && r.session_id == 0, &r, version)?;
            topics(forward, denied)
        }
        ApiKey::Metadata => {
            let mut r: MetadataRequest = decode(body, version)?;
            let mut denied = Vec::new();
            if let Some(list) = r.topics.take() {
                let (kept, d) = partition_topics(
                    list,
                    |t| match &t.name {
                        Some(n) => deny(Named::Topic(n.as_str())),
                        None => deny(Named::TopicId(t.topic_id.as_bytes())),
                    },
                    |t| DeniedTopic {
                        name: t.name.as_ref().map(name_of).unwrap_or_default(),
                        id: id_of(&t.topic_id),
                        partitions: Vec::new(),
                        code: 0,
                    },
                );
                // Nothing left: still asked (for no topic), so the client gets the brokers.
                r.topics = Some(kept);
                denied = d;
            }
            if limits.no_auto_create {
                r.allow_auto_topic_creation = false;
            }
            topics(Some(encode(&r, version)?), denied)
        }
        ApiKey::ListOffsets => {
            let mut r: ListOffsetsRequest = decode(body, version)?;
            let (kept, denied) = partition_topics(
                std::mem::take(&mut r.topics),
                |t| deny(Named::Topic(t.name.as_str())),
                |t| {
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    denied_topic(&t.name, &Uuid::nil(), parts)
                },
            );
            r.topics = kept;
            let forward = forward_unless(r.topics.is_empty(), &r, version)?;
            topics(forward, denied)
        }
        ApiKey::OffsetCommit => {
            let mut r: OffsetCommitRequest = decode(body, version)?;
            let (kept, denied) = partition_topics(
                std::mem::take(&mut r.topics),
                |t| deny(Named::Topic(t.name.as_str())),
                |t| {
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    denied_topic(&t.name, &t.topic_id, parts)
                },
            );
            r.topics = kept;
            let forward = forward_unless(r.topics.is_empty(), &r, version)?;
            topics(forward, denied)
        }
        ApiKey::CreateTopics => {
            let mut r: CreateTopicsRequest = decode(body, version)?;
            let (kept, denied) = partition_topics(
                std::mem::take(&mut r.topics),
                |t| deny(Named::Topic(t.name.as_str())),
                |t| denied_topic(&t.name, &Uuid::nil(), Vec::new()),
            );
            r.topics = kept;
            let forward = forward_unless(r.topics.is_empty(), &r, version)?;
            topics(forward, denied)
        }
        ApiKey::DeleteTopics => {
            let mut r: DeleteTopicsRequest = decode(body, version)?;
            let denied = if version >= 6 {
                let (kept, d) = partition_topics(
                    std::mem::take(&mut r.topics),
                    |t| match &t.name {
                        Some(n) if t.topic_id.is_nil() => deny(Named::Topic(n.as_str())),
                        _ => deny(Named::TopicId(t.topic_id.as_bytes())),
                    },
                    |t| DeniedTopic {
                        name: t.name.as_ref().map(name_of).unwrap_or_default(),
                        id: id_of(&t.topic_id),
                        partitions: Vec::new(),
                        code: 0,
                    },
                );
                r.topics = kept;
                d
            } else {
                let (kept, d) = partition_topics(
                    std::mem::take(&mut r.topic_names),
                    |n| deny(Named::Topic(n.as_str())),
                    |n| denied_topic(n, &Uuid::nil(), Vec::new()),
                );
                r.topic_names = kept;
                d
            };
            let forward =
                forward_unless(r.topics.is_empty() && r.topic_names.is_empty(), &r, version)?;
            topics(forward, denied)
        }
        ApiKey::FindCoordinator => {
            let mut r: FindCoordinatorRequest = decode(body, version)?;
            let mut denied = Vec::new();
            let forward = if version >= 4 {
                r.coordinator_keys
                    .retain(|k| match deny(Named::Group(k.as_str())) {
                        None => true,
                        Some(code) => {
                            denied.push((k.as_str().to_string(), code));
                            false
                        }
                    });
                (!r.coordinator_keys.is_empty()).then_some(())
            } else {
                match deny(Named::Group(r.key.as_str())) {
                    None => Some(()),
                    Some(code) => {
                        denied.push((r.key.as_str().to_string(), code));
                        None
                    }
                }
            };
            let forward = match forward {
                Some(()) => Some(encode(&r, version)?),
                None => None,
            };
            Some(Split {
                forward,
                denied: Denied::Groups(denied),
            })
        }
        ApiKey::DescribeGroups => {
            let mut r: DescribeGroupsRequest = decode(body, version)?;
            let mut denied = Vec::new();
            r.groups.retain(|g| match deny(Named::Group(g.as_str())) {
                None => true,
                Some(code) => {
                    denied.push((g.as_str().to_string(), code));
                    false
                }
            });
            let forward = forward_unless(r.groups.is_empty(), &r, version)?;
            Some(Split {
                forward,
                denied: Denied::Groups(denied),
            })
        }
        _ => None,
    }
}

/// The response body (after its header) with an entry for each denied resource; `response`
/// `None`: nothing was forwarded, the entries are the whole answer. `None` if the response
/// does not decode or re-encode.
pub fn merge(
    api_key: i16,
    version: i16,
    response: Option<&Bytes>,
    denied: &Denied,
) -> Option<BytesMut> {
    fn base<T: Decodable + Default>(response: Option<&Bytes>, version: i16) -> Option<T> {
        match response {
            None => Some(T::default()),
            Some(b) => decode(b, version),
        }
    }
    let empty = Vec::new();
    let topics = match denied {
        Denied::Topics(t) => t,
        Denied::Groups(_) => &empty,
    };
    match ApiKey::try_from(api_key).ok()? {
        ApiKey::Produce => {
            let mut r: ProduceResponse = base(response, version)?;
            r.responses.extend(topics.iter().map(|t| {
                TopicProduceResponse::default()
                    .with_name(topic_name(&t.name))
                    .with_topic_id(Uuid::from_bytes(t.id))
                    .with_partition_responses(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionProduceResponse::default()
                                    .with_index(*p)
                                    .with_error_code(t.code)
                                    .with_base_offset(-1)
                                    .with_log_append_time_ms(-1)
                                    .with_log_start_offset(-1)
                            })
                            .collect(),
                    )
            }));
            encode(&r, version)
        }
        ApiKey::Fetch => {
            let mut r: FetchResponse = base(response, version)?;
            if r.error_code != 0 {
                // The whole fetch failed (a fetch session error): nothing to add to.
                return encode(&r, version);
            }
            r.responses.extend(topics.iter().map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(topic_name(&t.name))
                    .with_topic_id(Uuid::from_bytes(t.id))
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                fetch_response::PartitionData::default()
                                    .with_partition_index(*p)
                                    .with_error_code(t.code)
                                    .with_high_watermark(-1)
                                    .with_last_stable_offset(-1)
                                    .with_log_start_offset(-1)
                                    .with_records(Some(Bytes::new()))
                            })
                            .collect(),
                    )
            }));
            encode(&r, version)
        }
        ApiKey::Metadata => {
            let mut r: MetadataResponse = base(response, version)?;
            r.topics.extend(topics.iter().map(|t| {
                MetadataResponseTopic::default()
                    .with_error_code(t.code)
                    .with_name(Some(topic_name(&t.name)))
                    .with_topic_id(Uuid::from_bytes(t.id))
                    .with_topic_authorized_operations(i32::MIN)
            }));
            encode(&r, version)
        }
        ApiKey::ListOffsets => {
            let mut r: ListOffsetsResponse = base(response, version)?;
            r.topics.extend(topics.iter().map(|t| {
                ListOffsetsTopicResponse::default()
                    .with_name(topic_name(&t.name))
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(*p)
                                    .with_error_code(t.code)
                                    .with_timestamp(-1)
                                    .with_offset(-1)
                            })
                            .collect(),
                    )
            }));
            encode(&r, version)
        }
        ApiKey::OffsetCommit => {
            let mut r: OffsetCommitResponse = base(response, version)?;
            r.topics.extend(topics.iter().map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(topic_name(&t.name))
                    .with_topic_id(Uuid::from_bytes(t.id))
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(*p)
                                    .with_error_code(t.code)
                            })
                            .collect(),
                    )
            }));
            encode(&r, version)
        }
        ApiKey::CreateTopics => {
            let mut r: CreateTopicsResponse = base(response, version)?;
            r.topics.extend(topics.iter().map(|t| {
                CreatableTopicResult::default()
                    .with_name(topic_name(&t.name))
                    .with_error_code(t.code)
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            }));
            encode(&r, version)
        }
        ApiKey::DeleteTopics => {
            let mut r: DeleteTopicsResponse = base(response, version)?;
            r.responses.extend(topics.iter().map(|t| {
                DeletableTopicResult::default()
                    .with_name((!t.name.is_empty()).then(|| topic_name(&t.name)))
                    .with_topic_id(Uuid::from_bytes(t.id))
                    .with_error_code(t.code)
            }));
            encode(&r, version)
        }
        ApiKey::FindCoordinator => {
            let mut r: FindCoordinatorResponse = base(response, version)?;
            let Denied::Groups(keys) = denied else {
                return encode(&r, version);
            };
            if version >= 4 {
                r.coordinators.extend(keys.iter().map(|(k, code)| {
                    Coordinator::default()
                        .with_key(StrBytes::from_string(k.clone()))
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(*code)
                }));
            } else if let Some((_, code)) = keys.first() {
                r = r
                    .with_error_code(*code)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1);
            }
            encode(&r, version)
        }
        ApiKey::DescribeGroups => {
            let mut r: DescribeGroupsResponse = base(response, version)?;
            if let Denied::Groups(groups) = denied {
                r.groups.extend(groups.iter().map(|(g, code)| {
                    DescribedGroup::default()
                        .with_group_id(GroupId(StrBytes::from_string(g.clone())))
                        .with_error_code(*code)
                        .with_authorized_operations(i32::MIN)
                }));
            }
            encode(&r, version)
        }
        _ => None,
    }
}

/// Whether `kafka-protocol` has the response schema for this request version (the merge
/// needs it).
pub fn mergeable(api_key: i16, version: i16) -> bool {
    let Ok(api) = ApiKey::try_from(api_key) else {
        return false;
    };
    let range = match api {
        ApiKey::Produce => ProduceResponse::VERSIONS,
        ApiKey::Fetch => FetchResponse::VERSIONS,
        ApiKey::Metadata => MetadataResponse::VERSIONS,
        ApiKey::ListOffsets => ListOffsetsResponse::VERSIONS,
        ApiKey::OffsetCommit => OffsetCommitResponse::VERSIONS,
        ApiKey::CreateTopics => CreateTopicsResponse::VERSIONS,
        ApiKey::DeleteTopics => DeleteTopicsResponse::VERSIONS,
        ApiKey::DescribeGroups => DescribeGroupsResponse::VERSIONS,
        ApiKey::FindCoordinator => FindCoordinatorResponse::VERSIONS,
        _ => return false,
    };
    (range.min..=range.max).contains(&version)
}
