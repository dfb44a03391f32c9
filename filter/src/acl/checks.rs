//! What Kafka's own authorizer checks for each request (`KafkaApis`): per API, the operations
//! on the resources the request names. A request names its resources in its body, so it is
//! decoded with `kafka-protocol`; topics named by id (Fetch v13+, Produce v13, DeleteTopics v6+,
//! OffsetFetch v10+) are given as ids, for the caller to resolve to the names a Metadata
//! response gave them or to deny.
//!
//! Fails closed: an API this table does not know, a version `kafka-protocol` has no schema for,
//! or a body that does not decode gives [`Needs::Unknown`], which a policy must deny.

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

use super::config::CLUSTER_NAME;
use super::policy::{Operation, ResourceType};
use crate::codec::walk::TopicRef;

/// A resource a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Topic(TopicRef),
    Group(String),
    TransactionalId(String),
    Cluster,
}

impl Resource {
    pub fn resource_type(&self) -> ResourceType {
        match self {
            Resource::Topic(_) => ResourceType::Topic,
            Resource::Group(_) => ResourceType::Group,
            Resource::TransactionalId(_) => ResourceType::TransactionalId,
            Resource::Cluster => ResourceType::Cluster,
        }
    }

    /// Its name as ACL patterns match it (`None`: a topic id not resolved).
    pub fn name(&self) -> Option<&str> {
        match self {
            Resource::Topic(TopicRef::Name(n)) => Some(n),
            Resource::Topic(TopicRef::Id(_)) => None,
            Resource::Group(g) | Resource::TransactionalId(g) => Some(g),
            Resource::Cluster => Some(CLUSTER_NAME),
        }
    }
}

/// One operation on one resource a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub operation: Operation,
    pub resource: Resource,
    /// What Kafka also accepts instead.
    pub or: Alternative,
}

/// Another authorization Kafka accepts for a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alternative {
    None,
    /// The same operation on the cluster (CreateTopics: Create on the cluster or the topic).
    Cluster,
    /// Write on some topic (an idempotent producer's InitProducerId, since Kafka 2.8).
    WriteSomeTopic,
}

/// What a request needs authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: the connection's setup (ApiVersions, SASL) and telemetry.
    Nothing,
    /// Every one of these; `filtered`: the response also lists resources the request did not
    /// name (Metadata for all topics, ListGroups, ListTransactions), which the caller must
    /// filter by `Describe`.
    Checks { checks: Vec<Check>, filtered: bool },
    /// Not known to this table, or not decodable: deny.
    Unknown,
}

/// Whether the table knows the API (the others are denied whatever they carry, so clients
/// under ACLs are not offered them).
pub fn in_table(api: ApiKey) -> bool {
    use ApiKey::*;
    matches!(
        api,
        ApiVersions
            | SaslHandshake
            | SaslAuthenticate
            | GetTelemetrySubscriptions
            | PushTelemetry
            | Produce
            | Fetch
            | ListOffsets
            | Metadata
            | OffsetCommit
            | OffsetFetch
            | FindCoordinator
            | JoinGroup
            | Heartbeat
            | LeaveGroup
            | SyncGroup
            | ConsumerGroupHeartbeat
            | DescribeGroups
            | ListGroups
            | DeleteGroups
            | OffsetDelete
            | CreateTopics
            | DeleteTopics
            | CreatePartitions
            | DeleteRecords
            | OffsetForLeaderEpoch
            | InitProducerId
            | AddPartitionsToTxn
            | AddOffsetsToTxn
            | EndTxn
            | TxnOffsetCommit
            | DescribeTransactions
            | ListTransactions
            | DescribeProducers
            | DescribeConfigs
            | AlterConfigs
            | IncrementalAlterConfigs
            | DescribeCluster
            | DescribeAcls
            | DescribeLogDirs
            | ListPartitionReassignments
            | CreateAcls
            | DeleteAcls
            | ElectLeaders
            | AlterPartitionReassignments
    )
}

fn check(operation: Operation, resource: Resource) -> Check {
    Check {
        operation,
        resource,
        or: Alternative::None,
    }
}

fn topic(name: &TopicName) -> Resource {
    Resource::Topic(TopicRef::Name(name.to_string()))
}

fn topic_or_id(name: &TopicName, id: &[u8; 16], by_id: bool) -> Resource {
    Resource::Topic(TopicRef::named(by_id, name, id))
}

fn group(g: &GroupId) -> Resource {
    Resource::Group(g.to_string())
}

fn txn(t: &TransactionalId) -> Resource {
    Resource::TransactionalId(t.to_string())
}

/// The resource of a config resource type (2 topic, 4 broker, 8 broker logger).
fn config_resource(resource_type: i8, name: &str) -> Option<Resource> {
    match resource_type {
        2 => Some(Resource::Topic(TopicRef::Name(name.to_string()))),
        4 | 8 => Some(Resource::Cluster),
        _ => None,
    }
}

/// `operation` on each config resource (type and name); `None` if one is of a type the table
/// does not know.
fn config_checks<'a>(
    resources: impl Iterator<Item = (i8, &'a str)>,
    operation: Operation,
) -> Option<Needs> {
    let checks = resources
        .map(|(t, name)| config_resource(t, name).map(|res| check(operation, res)))
        .collect::<Option<Vec<_>>>()?;
    Some(Needs::Checks {
        checks,
        filtered: false,
    })
}

fn decode<T: Decodable>(body: &Bytes, version: i16) -> Option<T> {
    crate::codec::budgeted::decode(&mut body.clone(), version)
}

/// What the request (`body`: after its header) of `api_key` at `version` needs.
pub fn needs(api_key: i16, version: i16, body: &Bytes) -> Needs {
    use Operation::*;
    let Ok(api) = ApiKey::try_from(api_key) else {
        return Needs::Unknown;
    };
    let all = |checks: Vec<Check>| Needs::Checks {
        checks,
        filtered: false,
    };
    let got: Option<Needs> = match api {
        ApiKey::ApiVersions
        | ApiKey::SaslHandshake
        | ApiKey::SaslAuthenticate
        | ApiKey::GetTelemetrySubscriptions
        | ApiKey::PushTelemetry => Some(Needs::Nothing),
        ApiKey::Produce => decode::<ProduceRequest>(body, version).map(|r| {
            let mut c: Vec<Check> = r
                .transactional_id
                .iter()
                .map(|t| check(Write, txn(t)))
                .collect();
            c.extend(r.topic_data.iter().map(|t| {
                check(
                    Write,
                    topic_or_id(&t.name, t.topic_id.as_bytes(), version >= 13),
                )
            }));
            all(c)
        }),
        ApiKey::Fetch => decode::<FetchRequest>(body, version).map(|r| {
            if r.replica_id.0 >= 0 || r.replica_state.replica_id.0 >= 0 {
                // A follower replicating: only brokers do that.
                return all(vec![check(ClusterAction, Resource::Cluster)]);
            }
            all(r
                .topics
                .iter()
                .map(|t| {
                    check(
                        Read,
                        topic_or_id(&t.topic, t.topic_id.as_bytes(), version >= 13),
                    )
                })
                .collect())
        }),
        ApiKey::ListOffsets => decode::<ListOffsetsRequest>(body, version).map(|r| {
            all(r
                .topics
                .iter()
                .map(|t| check(Describe, topic(&t.name)))
                .collect())
        }),
        ApiKey::Metadata => decode::<MetadataRequest>(body, version).map(|r| match r.topics {
            // All topics: the response is filtered.
            None => Needs::Checks {
                checks: Vec::new(),
                filtered: true,
            },
            Some(topics) => all(topics
                .iter()
                .map(|t| match &t.name {
                    Some(n) => check(Describe, topic(n)),
                    None => check(
                        Describe,
                        Resource::Topic(TopicRef::Id(*t.topic_id.as_bytes())),
                    ),
                })
                .collect()),
        }),
        ApiKey::OffsetCommit => decode::<OffsetCommitRequest>(body, version).map(|r| {
            let mut c = vec![check(Read, group(&r.group_id))];
            c.extend(r.topics.iter().map(|t| check(Read, topic(&t.name))));
            all(c)
        }),
        ApiKey::OffsetFetch => decode::<OffsetFetchRequest>(body, version).map(|r| {
            // Topics left out (null): the group's offsets for every topic, filtered by Describe.
            let filtered = if version < 8 {
                r.topics.is_none()
            } else {
                r.groups.iter().any(|g| g.topics.is_none())
            };
            let mut c = Vec::new();
            if version < 8 {
                c.push(check(Describe, group(&r.group_id)));
                c.extend(
                    r.topics
                        .iter()
                        .flatten()
                        .map(|t| check(Describe, topic(&t.name))),
                );
            }
            for g in &r.groups {
                c.push(check(Describe, group(&g.group_id)));
                c.extend(g.topics.iter().flatten().map(|t| {
                    check(
                        Describe,
                        topic_or_id(&t.name, t.topic_id.as_bytes(), version >= 10),
                    )
                }));
            }
            Needs::Checks {
                checks: c,
                filtered,
            }
        }),
        ApiKey::FindCoordinator => decode::<FindCoordinatorRequest>(body, version).map(|r| {
            let keys: Vec<String> = if version >= 4 {
                r.coordinator_keys.iter().map(|k| k.to_string()).collect()
            } else {
                vec![r.key.to_string()]
            };
            let c = keys.into_iter().map(|k| match r.key_type {
                1 => Some(check(Describe, Resource::TransactionalId(k))),
                0 => Some(check(Describe, Resource::Group(k))),
                _ => None,
            });
            match c.collect::<Option<Vec<_>>>() {
                Some(c) => all(c),
                None => Needs::Unknown,
            }
        }),
        ApiKey::JoinGroup => decode::<JoinGroupRequest>(body, version)
            .map(|r| all(vec![check(Read, group(&r.group_id))])),
        ApiKey::Heartbeat => decode::<HeartbeatRequest>(body, version)
            .map(|r| all(vec![check(Read, group(&r.group_id))])),
        ApiKey::LeaveGroup => decode::<LeaveGroupRequest>(body, version)
            .map(|r| all(vec![check(Read, group(&r.group_id))])),
        ApiKey::SyncGroup => decode::<SyncGroupRequest>(body, version)
            .map(|r| all(vec![check(Read, group(&r.group_id))])),
        // Kafka also checks Describe on every topic a member subscribes to by name (a regex is
        // resolved by the broker, which filters it by Describe itself).
        ApiKey::ConsumerGroupHeartbeat => decode::<ConsumerGroupHeartbeatRequest>(body, version)
            .map(|r| {
                let mut c = vec![check(Read, group(&r.group_id))];
                c.extend(
                    r.subscribed_topic_names
                        .iter()
                        .flatten()
                        .map(|t| check(Describe, topic(t))),
                );
                all(c)
            }),
        ApiKey::DescribeGroups => decode::<DescribeGroupsRequest>(body, version)
            .map(|r| all(r.groups.iter().map(|g| check(Describe, group(g))).collect())),
        ApiKey::ListGroups => Some(Needs::Checks {
            checks: Vec::new(),
            filtered: true,
        }),
        ApiKey::DeleteGroups => decode::<DeleteGroupsRequest>(body, version).map(|r| {
            all(r
                .groups_names
                .iter()
                .map(|g| check(Delete, group(g)))
                .collect())
        }),
        ApiKey::OffsetDelete => decode::<OffsetDeleteRequest>(body, version).map(|r| {
            let mut c = vec![check(Delete, group(&r.group_id))];
            c.extend(r.topics.iter().map(|t| check(Read, topic(&t.name))));
            all(c)
        }),
        ApiKey::CreateTopics => decode::<CreateTopicsRequest>(body, version).map(|r| {
            all(r
                .topics
                .iter()
                .map(|t| Check {
                    operation: Create,
                    resource: topic(&t.name),
                    or: Alternative::Cluster,
                })
                .collect())
        }),
        ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(body, version).map(|r| {
            let mut c: Vec<Check> = r
                .topic_names
                .iter()
                .map(|n| check(Delete, topic(n)))
                .collect();
            for t in &r.topics {
                c.push(match &t.name {
                    // Both a name and an id: Kafka refuses it (INVALID_REQUEST); a broker that
                    // went by the id would delete what the name did not say.
                    Some(_) if !t.topic_id.is_nil() => return Needs::Unknown,
                    Some(n) => check(Delete, topic(n)),
                    None => check(
                        Delete,
                        Resource::Topic(TopicRef::Id(*t.topic_id.as_bytes())),
                    ),
                });
            }
            all(c)
        }),
        ApiKey::CreatePartitions => decode::<CreatePartitionsRequest>(body, version).map(|r| {
            all(r
                .topics
                .iter()
                .map(|t| check(Alter, topic(&t.name)))
                .collect())
        }),
        ApiKey::DeleteRecords => decode::<DeleteRecordsRequest>(body, version).map(|r| {
            all(r
                .topics
                .iter()
                .map(|t| check(Delete, topic(&t.name)))
                .collect())
        }),
        ApiKey::OffsetForLeaderEpoch => {
            decode::<OffsetForLeaderEpochRequest>(body, version).map(|r| {
                if r.replica_id.0 >= 0 {
                    return all(vec![check(ClusterAction, Resource::Cluster)]);
                }
                all(r
                    .topics
                    .iter()
                    .map(|t| check(Describe, topic(&t.topic)))
                    .collect())
            })
        }
        ApiKey::InitProducerId => {
            decode::<InitProducerIdRequest>(body, version).map(|r| match &r.transactional_id {
                Some(t) => all(vec![check(Write, txn(t))]),
                None => all(vec![Check {
                    operation: IdempotentWrite,
                    resource: Resource::Cluster,
                    or: Alternative::WriteSomeTopic,
                }]),
            })
        }
        // v4+ is sent by brokers only (to verify a partition is in a transaction).
        ApiKey::AddPartitionsToTxn if version >= 4 => {
            Some(all(vec![check(ClusterAction, Resource::Cluster)]))
        }
        ApiKey::AddPartitionsToTxn => decode::<AddPartitionsToTxnRequest>(body, version).map(|r| {
            let mut c = Vec::new();
            if version <= 3 {
                c.push(check(Write, txn(&r.v3_and_below_transactional_id)));
                c.extend(
                    r.v3_and_below_topics
                        .iter()
                        .map(|t| check(Write, topic(&t.name))),
                );
            }
            for t in &r.transactions {
                c.push(check(Write, txn(&t.transactional_id)));
                c.extend(t.topics.iter().map(|tp| check(Write, topic(&tp.name))));
            }
            all(c)
        }),
        ApiKey::AddOffsetsToTxn => decode::<AddOffsetsToTxnRequest>(body, version).map(|r| {
            all(vec![
                check(Write, txn(&r.transactional_id)),
                check(Read, group(&r.group_id)),
            ])
        }),
        ApiKey::EndTxn => decode::<EndTxnRequest>(body, version)
            .map(|r| all(vec![check(Write, txn(&r.transactional_id))])),
        ApiKey::TxnOffsetCommit => decode::<TxnOffsetCommitRequest>(body, version).map(|r| {
            let mut c = vec![
                check(Write, txn(&r.transactional_id)),
                check(Read, group(&r.group_id)),
            ];
            c.extend(r.topics.iter().map(|t| check(Read, topic(&t.name))));
            all(c)
        }),
        ApiKey::DescribeTransactions => {
            decode::<DescribeTransactionsRequest>(body, version).map(|r| {
                all(r
                    .transactional_ids
                    .iter()
                    .map(|t| check(Describe, txn(t)))
                    .collect())
            })
        }
        ApiKey::ListTransactions => Some(Needs::Checks {
            checks: Vec::new(),
            filtered: true,
        }),
        ApiKey::DescribeProducers => decode::<DescribeProducersRequest>(body, version).map(|r| {
            all(r
                .topics
                .iter()
                .map(|t| check(Read, topic(&t.name)))
                .collect())
        }),
        ApiKey::DescribeConfigs => decode::<DescribeConfigsRequest>(body, version).and_then(|r| {
            config_checks(
                r.resources
                    .iter()
                    .map(|x| (x.resource_type, x.resource_name.as_str())),
                DescribeConfigs,
            )
        }),
        ApiKey::AlterConfigs => decode::<AlterConfigsRequest>(body, version).and_then(|r| {
            config_checks(
                r.resources
                    .iter()
                    .map(|x| (x.resource_type, x.resource_name.as_str())),
                AlterConfigs,
            )
        }),
        ApiKey::IncrementalAlterConfigs => decode::<IncrementalAlterConfigsRequest>(body, version)
            .and_then(|r| {
                config_checks(
                    r.resources
                        .iter()
                        .map(|x| (x.resource_type, x.resource_name.as_str())),
                    AlterConfigs,
                )
            }),
        // Kafka authorizes nothing for DescribeCluster (its authorized operations are asked for
        // apart, and answered by the broker).
        ApiKey::DescribeCluster => Some(Needs::Nothing),
        ApiKey::DescribeAcls | ApiKey::DescribeLogDirs | ApiKey::ListPartitionReassignments => {
            Some(all(vec![check(Describe, Resource::Cluster)]))
        }
        ApiKey::CreateAcls
        | ApiKey::DeleteAcls
        | ApiKey::ElectLeaders
        | ApiKey::AlterPartitionReassignments => Some(all(vec![check(Alter, Resource::Cluster)])),
        _ => None,
    };
    got.unwrap_or(Needs::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::fetch_request::{FetchTopic, ReplicaState};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
    use kafka_protocol::messages::produce_request::TopicProduceData;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use Operation::*;

    fn body<M: Encodable>(m: &M, version: i16) -> Bytes {
        let mut b = BytesMut::new();
        m.encode(&mut b, version).unwrap();
        b.freeze()
    }

    fn name(n: &str) -> TopicName {
        TopicName(StrBytes::from_string(n.into()))
    }

    fn t(n: &str) -> Resource {
        Resource::Topic(TopicRef::Name(n.into()))
    }

    fn checks_of(needs: Needs) -> Vec<(Operation, Resource)> {
        match needs {
            Needs::Checks { checks, .. } => checks
                .into_iter()
                .map(|c| (c.operation, c.resource))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn produce_and_fetch_name_their_topics_transactions_and_replicas() {
        let p = ProduceRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx-1"))))
            .with_topic_data(vec![
                TopicProduceData::default().with_name(name("a")),
                TopicProduceData::default().with_name(name("b")),
            ]);
        assert_eq!(
            checks_of(needs(0, 9, &body(&p, 9))),
            vec![
                (Write, Resource::TransactionalId("tx-1".into())),
                (Write, t("a")),
                (Write, t("b"))
            ]
        );
        let f =
            FetchRequest::default().with_topics(vec![FetchTopic::default().with_topic(name("a"))]);
        assert_eq!(checks_of(needs(1, 12, &body(&f, 12))), vec![(Read, t("a"))]);
        let id = [7u8; 16];
        let f13 = FetchRequest::default().with_topics(vec![
            FetchTopic::default().with_topic_id(uuid::Uuid::from_bytes(id))
        ]);
        assert_eq!(
            checks_of(needs(1, 13, &body(&f13, 13))),
            vec![(Read, Resource::Topic(TopicRef::Id(id)))]
        );
        // A follower: ClusterAction, whatever it fetches (v15+ carries the id in ReplicaState).
        let follower = f
            .clone()
            .with_replica_state(ReplicaState::default().with_replica_id(BrokerId(2)));
        assert_eq!(
            checks_of(needs(1, 15, &body(&follower, 15))),
            vec![(ClusterAction, Resource::Cluster)]
        );
    }

    #[test]
    fn metadata_groups_admin_and_fail_closed() {
        let all = MetadataRequest::default().with_topics(None);
        assert_eq!(
            needs(3, 12, &body(&all, 12)),
            Needs::Checks {
                checks: vec![],
                filtered: true
            }
        );
        let some = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("a"))),
        ]));
        assert_eq!(
            checks_of(needs(3, 12, &body(&some, 12))),
            vec![(Describe, t("a"))]
        );
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_topics(vec![
                OffsetCommitRequestTopic::default().with_name(name("a"))
            ]);
        assert_eq!(
            checks_of(needs(8, 8, &body(&commit, 8))),
            vec![(Read, Resource::Group("g".into())), (Read, t("a"))]
        );
        for (version, key_type, want) in [
            (3, 0, Resource::Group("k".into())),
            (4, 1, Resource::TransactionalId("k".into())),
        ] {
            let fc = FindCoordinatorRequest::default().with_key_type(key_type);
            let fc = if version >= 4 {
                fc.with_coordinator_keys(vec![StrBytes::from_static_str("k")])
            } else {
                fc.with_key(StrBytes::from_static_str("k"))
            };
            assert_eq!(
                checks_of(needs(10, version, &body(&fc, version))),
                vec![(Describe, want)]
            );
        }
        let create = CreateTopicsRequest::default().with_topics(vec![
            kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                .with_name(name("new")),
        ]);
        match needs(19, 7, &body(&create, 7)) {
            Needs::Checks { checks, .. } => {
                assert_eq!(checks.len(), 1);
                assert!(checks[0].or == Alternative::Cluster && checks[0].operation == Create);
            }
            other => panic!("{other:?}"),
        }
        let dc = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1")),
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("a")),
        ]);
        assert_eq!(
            checks_of(needs(32, 4, &body(&dc, 4))),
            vec![
                (DescribeConfigs, Resource::Cluster),
                (DescribeConfigs, t("a"))
            ]
        );
        // Fail closed: an unknown resource type, API key, version or body.
        let odd = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default().with_resource_type(99),
        ]);
        assert_eq!(needs(32, 4, &body(&odd, 4)), Needs::Unknown);
        assert_eq!(needs(999, 0, &Bytes::new()), Needs::Unknown);
        assert_eq!(
            needs(0, 99, &body(&ProduceRequest::default(), 9)),
            Needs::Unknown
        );
        assert_eq!(
            needs(11, 5, &Bytes::from_static(&[0, 5, b'x'])),
            Needs::Unknown
        );
        assert_eq!(needs(18, 3, &Bytes::new()), Needs::Nothing);
        // Brokers only: AddPartitionsToTxn v4+.
        assert_eq!(
            checks_of(needs(24, 4, &Bytes::new())),
            vec![(ClusterAction, Resource::Cluster)]
        );
        // An idempotent producer: IdempotentWrite on the cluster, or Write on some topic.
        match needs(
            22,
            4,
            &body(
                &InitProducerIdRequest::default().with_transactional_id(None),
                4,
            ),
        ) {
            Needs::Checks { checks, .. } => assert_eq!(checks[0].or, Alternative::WriteSomeTopic),
            other => panic!("{other:?}"),
        }
        // A group's offsets for every topic: filtered.
        let of = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_topics(None);
        assert_eq!(
            needs(9, 7, &body(&of, 7)),
            Needs::Checks {
                checks: vec![check(Describe, Resource::Group("g".into()))],
                filtered: true
            }
        );
    }
}
