//! Structured generation: valid request and response frames built with kafka-protocol from the
//! fuzz input's choices (API, version, list lengths, names), so that inputs reach the rewriters
//! without libFuzzer having to discover Kafka's framing first.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::input::Cursor;
use crate::names::Kind;

/// Where generated names come from.
pub struct NamePool {
    /// Names chosen most of the time.
    pub pool: &'static [&'static str],
    /// Names seen elsewhere in the scenario (a broker answers with the names it was asked for).
    pub echo: Vec<(Kind, String)>,
}

impl NamePool {
    pub fn name(&self, c: &mut Cursor<'_>, kind: Kind) -> String {
        let b = c.u8();
        match b {
            0..=159 => self.pool[usize::from(b) % self.pool.len()].to_string(),
            160..=223 if !self.echo.is_empty() => {
                let same: Vec<&String> = self
                    .echo
                    .iter()
                    .filter(|(k, _)| *k == kind || *k == Kind::Key)
                    .map(|(_, n)| n)
                    .collect();
                if same.is_empty() {
                    self.echo[usize::from(b) % self.echo.len()].1.clone()
                } else {
                    same[usize::from(b) % same.len()].clone()
                }
            }
            _ => {
                let len = usize::from(c.u8() % 24);
                String::from_utf8_lossy(c.bytes(len)).into_owned()
            }
        }
    }
}

/// The APIs requests are generated for: every rewritten one, the name-free ones, and some the
/// filter must refuse under a rule (plus a key no schema knows).
pub const REQUEST_APIS: &[i16] = &[
    0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 25, 26, 28, 32, 37, 42,
    47, 68, 69, // rewritten
    18, 17, 36, 60, 71, 72, // name-free
    29, 33, 35, 43, 44, 61, 65, 66, 75, 10000, // refused
    0, 1, 3, 3, 8, 9, 10, 18, // the common ones again
];

struct G<'c, 'a, 'p> {
    c: &'c mut Cursor<'a>,
    p: &'p NamePool,
}

impl G<'_, '_, '_> {
    fn n(&mut self) -> usize {
        // Mostly one element, sometimes none or several.
        match self.c.u8() % 8 {
            0 => 0,
            1..=4 => 1,
            5 | 6 => 2,
            _ => 3,
        }
    }
    fn s(&mut self, kind: Kind) -> StrBytes {
        StrBytes::from_string(self.p.name(self.c, kind))
    }
    fn t(&mut self) -> TopicName {
        TopicName(self.s(Kind::Topic))
    }
    fn g(&mut self) -> GroupId {
        GroupId(self.s(Kind::Group))
    }
    fn x(&mut self) -> TransactionalId {
        TransactionalId(self.s(Kind::Txn))
    }
    fn ts(&mut self) -> Vec<TopicName> {
        (0..self.n()).map(|_| self.t()).collect()
    }
    fn gs(&mut self) -> Vec<GroupId> {
        (0..self.n()).map(|_| self.g()).collect()
    }
    fn vec<T>(&mut self, mut f: impl FnMut(&mut Self) -> T) -> Vec<T> {
        (0..self.n()).map(|_| f(self)).collect()
    }
    fn records(&mut self) -> Option<Bytes> {
        let len = usize::from(self.c.u8() % 64);
        Some(Bytes::copy_from_slice(self.c.bytes(len)))
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn enc<T: Encodable>(m: &T, v: i16) -> Option<Vec<u8>> {
    let mut b = BytesMut::new();
    m.encode(&mut b, v).ok()?;
    Some(b.to_vec())
}

/// A request body of `api_key` at `v`; `None` if kafka-protocol cannot encode one (an unknown
/// API or version).
pub fn request_body(c: &mut Cursor<'_>, p: &NamePool, api_key: i16, v: i16) -> Option<Vec<u8>> {
    let key = ApiKey::try_from(api_key).ok()?;
    let mut g = G { c, p };
    let g = &mut g;
    use kafka_protocol::messages::*;
    match key {
        ApiKey::Produce => {
            use produce_request::*;
            let txn = if g.c.chance(128) { Some(g.x()) } else { None };
            let acks = *g.c.pick(&[-1i16, 1, 1, -1, 0]);
            let topics = g.vec(|g| {
                let mut t = TopicProduceData::default().with_partition_data(g.vec(|g| {
                    PartitionProduceData::default()
                        .with_index(1)
                        .with_records(g.records())
                }));
                if v <= 12 {
                    t.name = g.t();
                }
                t
            });
            enc(
                &ProduceRequest::default()
                    .with_transactional_id(txn)
                    .with_acks(acks)
                    .with_timeout_ms(30_000)
                    .with_topic_data(topics),
                v,
            )
        }
        ApiKey::Fetch => {
            use fetch_request::*;
            let mut r = FetchRequest::default().with_max_wait_ms(500);
            r.topics = g.vec(|g| {
                let t = FetchTopic::default().with_partitions(vec![FetchPartition::default()]);
                if v <= 12 {
                    t.with_topic(g.t())
                } else {
                    t
                }
            });
            if (7..=12).contains(&v) {
                r.forgotten_topics_data = g.vec(|g| {
                    ForgottenTopic::default()
                        .with_topic(g.t())
                        .with_partitions(vec![0])
                });
            }
            enc(&r, v)
        }
        ApiKey::ListOffsets => {
            use list_offsets_request::*;
            let topics = g.vec(|g| {
                ListOffsetsTopic::default()
                    .with_name(g.t())
                    .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])
            });
            enc(&ListOffsetsRequest::default().with_topics(topics), v)
        }
        ApiKey::Metadata => {
            use metadata_request::*;
            let topics = if g.c.chance(40) && v >= 1 {
                None
            } else {
                Some(g.vec(|g| MetadataRequestTopic::default().with_name(Some(g.t()))))
            };
            enc(&MetadataRequest::default().with_topics(topics), v)
        }
        ApiKey::OffsetCommit => {
            use offset_commit_request::*;
            let group = g.g();
            let topics = g.vec(|g| {
                OffsetCommitRequestTopic::default()
                    .with_name(g.t())
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default().with_committed_offset(9)
                    ])
            });
            enc(
                &OffsetCommitRequest::default()
                    .with_group_id(group)
                    .with_member_id(s("m"))
                    .with_topics(topics),
                v,
            )
        }
        ApiKey::OffsetFetch => {
            use offset_fetch_request::*;
            if v <= 7 {
                let group = g.g();
                let topics = if g.c.chance(40) && v >= 2 {
                    None
                } else {
                    Some(g.vec(|g| {
                        OffsetFetchRequestTopic::default()
                            .with_name(g.t())
                            .with_partition_indexes(vec![0])
                    }))
                };
                enc(
                    &OffsetFetchRequest::default()
                        .with_group_id(group)
                        .with_topics(topics),
                    v,
                )
            } else {
                let groups = g.vec(|g| {
                    let group = g.g();
                    let topics = if g.c.chance(40) {
                        None
                    } else {
                        Some(g.vec(|g| {
                            OffsetFetchRequestTopics::default()
                                .with_name(g.t())
                                .with_partition_indexes(vec![0])
                        }))
                    };
                    OffsetFetchRequestGroup::default()
                        .with_group_id(group)
                        .with_topics(topics)
                });
                enc(&OffsetFetchRequest::default().with_groups(groups), v)
            }
        }
        ApiKey::FindCoordinator => {
            let key_type = if v == 0 {
                0
            } else {
                *g.c.pick(&[0i8, 1, 0, 1, 2])
            };
            let kind = if key_type == 1 {
                Kind::Txn
            } else {
                Kind::Group
            };
            let r = FindCoordinatorRequest::default().with_key_type(key_type);
            let r = if v <= 3 {
                r.with_key(g.s(kind))
            } else {
                let keys = (0..g.n()).map(|_| g.s(kind)).collect();
                r.with_coordinator_keys(keys)
            };
            enc(&r, v)
        }
        ApiKey::JoinGroup => {
            use join_group_request::*;
            let r = JoinGroupRequest::default()
                .with_group_id(g.g())
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(if v >= 1 { 30_000 } else { -1 })
                .with_member_id(s(""))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(
                        b"\x00\x01\x00\x00\x00\x01\x00\x01x",
                    ))]);
            enc(&r, v)
        }
        ApiKey::SyncGroup => enc(
            &SyncGroupRequest::default()
                .with_group_id(g.g())
                .with_member_id(s("m")),
            v,
        ),
        ApiKey::Heartbeat => enc(
            &HeartbeatRequest::default()
                .with_group_id(g.g())
                .with_member_id(s("m")),
            v,
        ),
        ApiKey::LeaveGroup => {
            use leave_group_request::*;
            let r = LeaveGroupRequest::default().with_group_id(g.g());
            let r = if v <= 2 {
                r.with_member_id(s("m"))
            } else {
                r.with_members(vec![MemberIdentity::default().with_member_id(s("m"))])
            };
            enc(&r, v)
        }
        ApiKey::DescribeGroups => enc(&DescribeGroupsRequest::default().with_groups(g.gs()), v),
        ApiKey::ListGroups => enc(&ListGroupsRequest::default(), v),
        ApiKey::OffsetForLeaderEpoch => {
            use offset_for_leader_epoch_request::*;
            let topics = g.vec(|g| {
                OffsetForLeaderTopic::default()
                    .with_topic(g.t())
                    .with_partitions(vec![OffsetForLeaderPartition::default()])
            });
            enc(
                &OffsetForLeaderEpochRequest::default().with_topics(topics),
                v,
            )
        }
        ApiKey::CreateTopics => {
            use create_topics_request::*;
            let topics = g.vec(|g| {
                CreatableTopic::default()
                    .with_name(g.t())
                    .with_num_partitions(1)
                    .with_replication_factor(1)
            });
            enc(&CreateTopicsRequest::default().with_topics(topics), v)
        }
        ApiKey::DeleteTopics => {
            use delete_topics_request::*;
            let r = if v <= 5 {
                DeleteTopicsRequest::default().with_topic_names(g.ts())
            } else {
                DeleteTopicsRequest::default().with_topics(g.vec(|g| {
                    let name = if g.c.chance(30) { None } else { Some(g.t()) };
                    DeleteTopicState::default().with_name(name)
                }))
            };
            enc(&r, v)
        }
        ApiKey::CreatePartitions => {
            use create_partitions_request::*;
            let topics = g.vec(|g| {
                CreatePartitionsTopic::default()
                    .with_name(g.t())
                    .with_count(3)
            });
            enc(&CreatePartitionsRequest::default().with_topics(topics), v)
        }
        ApiKey::DescribeConfigs => {
            use describe_configs_request::*;
            let resources = g.vec(|g| {
                let t = *g.c.pick(&[2i8, 32, 4, 2, 32]);
                let kind = if t == 32 { Kind::Group } else { Kind::Topic };
                DescribeConfigsResource::default()
                    .with_resource_type(t)
                    .with_resource_name(g.s(kind))
            });
            enc(
                &DescribeConfigsRequest::default().with_resources(resources),
                v,
            )
        }
        ApiKey::DeleteRecords => {
            use delete_records_request::*;
            let topics = g.vec(|g| {
                DeleteRecordsTopic::default()
                    .with_name(g.t())
                    .with_partitions(vec![DeleteRecordsPartition::default()])
            });
            enc(&DeleteRecordsRequest::default().with_topics(topics), v)
        }
        ApiKey::InitProducerId => {
            let txn = if g.c.chance(200) { Some(g.x()) } else { None };
            enc(
                &InitProducerIdRequest::default()
                    .with_transactional_id(txn)
                    .with_transaction_timeout_ms(60_000),
                v,
            )
        }
        ApiKey::AddPartitionsToTxn => {
            use add_partitions_to_txn_request::*;
            let topics = |g: &mut G| {
                g.vec(|g| {
                    AddPartitionsToTxnTopic::default()
                        .with_name(g.t())
                        .with_partitions(vec![0])
                })
            };
            let r = if v <= 3 {
                let x = g.x();
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(x)
                    .with_v3_and_below_topics(topics(g))
            } else {
                AddPartitionsToTxnRequest::default().with_transactions(g.vec(|g| {
                    let x = g.x();
                    AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(x)
                        .with_topics(topics(g))
                }))
            };
            enc(&r, v)
        }
        ApiKey::AddOffsetsToTxn => enc(
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(g.x())
                .with_group_id(g.g()),
            v,
        ),
        ApiKey::TxnOffsetCommit => {
            use txn_offset_commit_request::*;
            let x = g.x();
            let group = g.g();
            let topics = g.vec(|g| {
                TxnOffsetCommitRequestTopic::default()
                    .with_name(g.t())
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()])
            });
            enc(
                &TxnOffsetCommitRequest::default()
                    .with_transactional_id(x)
                    .with_group_id(group)
                    .with_topics(topics),
                v,
            )
        }
        ApiKey::EndTxn => enc(&EndTxnRequest::default().with_transactional_id(g.x()), v),
        ApiKey::DeleteGroups => enc(&DeleteGroupsRequest::default().with_groups_names(g.gs()), v),
        ApiKey::OffsetDelete => {
            use offset_delete_request::*;
            let group = g.g();
            let topics = g.vec(|g| {
                OffsetDeleteRequestTopic::default()
                    .with_name(g.t())
                    .with_partitions(vec![OffsetDeleteRequestPartition::default()])
            });
            enc(
                &OffsetDeleteRequest::default()
                    .with_group_id(group)
                    .with_topics(topics),
                v,
            )
        }
        ApiKey::ConsumerGroupHeartbeat => {
            let group = g.g();
            let topics = if g.c.chance(60) { None } else { Some(g.ts()) };
            let regex = if v >= 1 && g.c.chance(30) {
                Some(s(g.c.pick::<&str>(&["", "orders.*", ".*"])))
            } else {
                None
            };
            enc(
                &ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(group)
                    .with_member_id(s("m"))
                    .with_subscribed_topic_names(topics)
                    .with_subscribed_topic_regex(regex),
                v,
            )
        }
        ApiKey::ConsumerGroupDescribe => enc(
            &ConsumerGroupDescribeRequest::default().with_group_ids(g.gs()),
            v,
        ),
        ApiKey::ApiVersions => enc(
            &ApiVersionsRequest::default()
                .with_client_software_name(s("fuzz"))
                .with_client_software_version(s("1.0")),
            v,
        )
        .or_else(|| enc(&ApiVersionsRequest::default(), v)),
        ApiKey::SaslHandshake => enc(
            &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
            v,
        ),
        ApiKey::SaslAuthenticate => enc(&SaslAuthenticateRequest::default(), v),
        ApiKey::DescribeCluster => enc(&DescribeClusterRequest::default(), v),
        ApiKey::GetTelemetrySubscriptions => enc(&GetTelemetrySubscriptionsRequest::default(), v),
        ApiKey::PushTelemetry => enc(&PushTelemetryRequest::default(), v),
        ApiKey::DescribeLogDirs => {
            use describe_log_dirs_request::*;
            let topics = g.vec(|g| DescribableLogDirTopic::default().with_topic(g.t()));
            enc(
                &DescribeLogDirsRequest::default().with_topics(Some(topics)),
                v,
            )
        }
        ApiKey::DescribeProducers => {
            use describe_producers_request::*;
            let topics = g.vec(|g| TopicRequest::default().with_name(g.t()));
            enc(&DescribeProducersRequest::default().with_topics(topics), v)
        }
        ApiKey::DescribeTopicPartitions => {
            use describe_topic_partitions_request::*;
            let topics = g.vec(|g| TopicRequest::default().with_name(g.t()));
            enc(
                &DescribeTopicPartitionsRequest::default().with_topics(topics),
                v,
            )
        }
        ApiKey::DescribeTransactions => {
            let ids = g.vec(|g| g.x());
            enc(
                &DescribeTransactionsRequest::default().with_transactional_ids(ids),
                v,
            )
        }
        ApiKey::DescribeAcls => enc(&DescribeAclsRequest::default(), v),
        ApiKey::AlterConfigs => enc(&AlterConfigsRequest::default(), v),
        ApiKey::ElectLeaders => enc(&ElectLeadersRequest::default(), v),
        ApiKey::IncrementalAlterConfigs => enc(&IncrementalAlterConfigsRequest::default(), v),
        ApiKey::ListTransactions => enc(&ListTransactionsRequest::default(), v),
        _ => None,
    }
}

/// A response body of `key` at `v` naming what `p` offers.
pub fn response_body(c: &mut Cursor<'_>, p: &NamePool, key: ApiKey, v: i16) -> Option<Vec<u8>> {
    let mut g = G { c, p };
    let g = &mut g;
    match key {
        ApiKey::Produce => {
            use produce_response::*;
            let topics = g.vec(|g| {
                let t = TopicProduceResponse::default().with_partition_responses(vec![
                    PartitionProduceResponse::default()
                        .with_index(0)
                        .with_base_offset(42),
                ]);
                if v <= 12 {
                    t.with_name(g.t())
                } else {
                    t
                }
            });
            enc(&ProduceResponse::default().with_responses(topics), v)
        }
        ApiKey::Fetch => {
            use fetch_response::*;
            let topics = g.vec(|g| {
                let parts = g.vec(|g| {
                    PartitionData::default()
                        .with_high_watermark(100)
                        .with_records(g.records())
                });
                let t = FetchableTopicResponse::default().with_partitions(parts);
                if v <= 12 {
                    t.with_topic(g.t())
                } else {
                    t
                }
            });
            enc(&FetchResponse::default().with_responses(topics), v)
        }
        ApiKey::ListOffsets => {
            use list_offsets_response::*;
            let topics = g.vec(|g| {
                ListOffsetsTopicResponse::default()
                    .with_name(g.t())
                    .with_partitions(vec![ListOffsetsPartitionResponse::default()])
            });
            enc(&ListOffsetsResponse::default().with_topics(topics), v)
        }
        ApiKey::Metadata => {
            use metadata_response::*;
            let topics = g.vec(|g| {
                let name = if v >= 10 && g.c.chance(20) {
                    None
                } else {
                    Some(g.t())
                };
                MetadataResponseTopic::default()
                    .with_name(name)
                    .with_partitions(vec![MetadataResponsePartition::default()
                        .with_leader_id(BrokerId(1))
                        .with_replica_nodes(vec![BrokerId(1)])
                        .with_isr_nodes(vec![BrokerId(1)])])
            });
            enc(
                &MetadataResponse::default()
                    .with_brokers(vec![MetadataResponseBroker::default()
                        .with_node_id(BrokerId(1))
                        .with_host(s("127.0.0.1"))
                        .with_port(9092)])
                    .with_topics(topics),
                v,
            )
        }
        ApiKey::OffsetCommit => {
            use offset_commit_response::*;
            let topics = if v <= 9 {
                g.vec(|g| {
                    OffsetCommitResponseTopic::default()
                        .with_name(g.t())
                        .with_partitions(vec![OffsetCommitResponsePartition::default()])
                })
            } else {
                vec![]
            };
            enc(&OffsetCommitResponse::default().with_topics(topics), v)
        }
        ApiKey::OffsetFetch => {
            use offset_fetch_response::*;
            if v <= 7 {
                let topics = g.vec(|g| {
                    OffsetFetchResponseTopic::default()
                        .with_name(g.t())
                        .with_partitions(vec![
                            OffsetFetchResponsePartition::default().with_committed_offset(3)
                        ])
                });
                enc(&OffsetFetchResponse::default().with_topics(topics), v)
            } else {
                let groups = g.vec(|g| {
                    let group = g.g();
                    let topics = if v <= 9 {
                        g.vec(|g| {
                            OffsetFetchResponseTopics::default()
                                .with_name(g.t())
                                .with_partitions(vec![OffsetFetchResponsePartitions::default()])
                        })
                    } else {
                        vec![]
                    };
                    OffsetFetchResponseGroup::default()
                        .with_group_id(group)
                        .with_topics(topics)
                });
                enc(&OffsetFetchResponse::default().with_groups(groups), v)
            }
        }
        ApiKey::FindCoordinator => {
            use find_coordinator_response::*;
            let r = if v <= 3 {
                FindCoordinatorResponse::default()
                    .with_node_id(BrokerId(1))
                    .with_host(s("127.0.0.1"))
                    .with_port(9092)
            } else {
                FindCoordinatorResponse::default().with_coordinators(g.vec(|g| {
                    let kind = if g.c.chance(128) {
                        Kind::Group
                    } else {
                        Kind::Txn
                    };
                    Coordinator::default()
                        .with_key(g.s(kind))
                        .with_node_id(BrokerId(1))
                        .with_host(s("127.0.0.1"))
                        .with_port(9092)
                }))
            };
            enc(&r, v)
        }
        ApiKey::DescribeGroups => {
            use describe_groups_response::*;
            let groups = g.vec(|g| {
                DescribedGroup::default()
                    .with_group_id(g.g())
                    .with_group_state(s("Stable"))
            });
            enc(&DescribeGroupsResponse::default().with_groups(groups), v)
        }
        ApiKey::ListGroups => {
            use list_groups_response::*;
            let groups = g.vec(|g| {
                ListedGroup::default()
                    .with_group_id(g.g())
                    .with_protocol_type(s("consumer"))
            });
            enc(&ListGroupsResponse::default().with_groups(groups), v)
        }
        ApiKey::OffsetForLeaderEpoch => {
            use offset_for_leader_epoch_response::*;
            let topics = g.vec(|g| {
                OffsetForLeaderTopicResult::default()
                    .with_topic(g.t())
                    .with_partitions(vec![EpochEndOffset::default()])
            });
            enc(
                &OffsetForLeaderEpochResponse::default().with_topics(topics),
                v,
            )
        }
        ApiKey::CreateTopics => {
            use create_topics_response::*;
            let topics = g.vec(|g| CreatableTopicResult::default().with_name(g.t()));
            enc(&CreateTopicsResponse::default().with_topics(topics), v)
        }
        ApiKey::DeleteTopics => {
            use delete_topics_response::*;
            let topics = g.vec(|g| {
                let name = if v >= 6 && g.c.chance(30) {
                    None
                } else {
                    Some(g.t())
                };
                DeletableTopicResult::default().with_name(name)
            });
            enc(&DeleteTopicsResponse::default().with_responses(topics), v)
        }
        ApiKey::CreatePartitions => {
            use create_partitions_response::*;
            let topics = g.vec(|g| CreatePartitionsTopicResult::default().with_name(g.t()));
            enc(&CreatePartitionsResponse::default().with_results(topics), v)
        }
        ApiKey::DescribeConfigs => {
            use describe_configs_response::*;
            let results = g.vec(|g| {
                let t = *g.c.pick(&[2i8, 32, 4, 2, 32]);
                let kind = if t == 32 { Kind::Group } else { Kind::Topic };
                DescribeConfigsResult::default()
                    .with_resource_type(t)
                    .with_resource_name(g.s(kind))
            });
            enc(&DescribeConfigsResponse::default().with_results(results), v)
        }
        ApiKey::DeleteRecords => {
            use delete_records_response::*;
            let topics = g.vec(|g| DeleteRecordsTopicResult::default().with_name(g.t()));
            enc(&DeleteRecordsResponse::default().with_topics(topics), v)
        }
        ApiKey::AddPartitionsToTxn => {
            use add_partitions_to_txn_response::*;
            let topics =
                |g: &mut G| g.vec(|g| AddPartitionsToTxnTopicResult::default().with_name(g.t()));
            let r = if v <= 3 {
                AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics(g))
            } else {
                AddPartitionsToTxnResponse::default().with_results_by_transaction(g.vec(|g| {
                    let x = g.x();
                    AddPartitionsToTxnResult::default()
                        .with_transactional_id(x)
                        .with_topic_results(topics(g))
                }))
            };
            enc(&r, v)
        }
        ApiKey::TxnOffsetCommit => {
            use txn_offset_commit_response::*;
            let topics = g.vec(|g| TxnOffsetCommitResponseTopic::default().with_name(g.t()));
            enc(&TxnOffsetCommitResponse::default().with_topics(topics), v)
        }
        ApiKey::DeleteGroups => {
            use delete_groups_response::*;
            let groups = g.vec(|g| DeletableGroupResult::default().with_group_id(g.g()));
            enc(&DeleteGroupsResponse::default().with_results(groups), v)
        }
        ApiKey::OffsetDelete => {
            use offset_delete_response::*;
            let topics = g.vec(|g| OffsetDeleteResponseTopic::default().with_name(g.t()));
            enc(&OffsetDeleteResponse::default().with_topics(topics), v)
        }
        ApiKey::ConsumerGroupDescribe => {
            use consumer_group_describe_response::*;
            let groups = g.vec(|g| {
                let group = g.g();
                let members = g.vec(|g| {
                    let tp = |g: &mut G| {
                        Assignment::default().with_topic_partitions(
                            g.vec(|g| TopicPartitions::default().with_topic_name(g.t())),
                        )
                    };
                    Member::default()
                        .with_member_id(s("m"))
                        .with_subscribed_topic_names(g.ts())
                        .with_assignment(tp(g))
                        .with_target_assignment(tp(g))
                });
                DescribedGroup::default()
                    .with_group_id(group)
                    .with_members(members)
            });
            enc(
                &ConsumerGroupDescribeResponse::default().with_groups(groups),
                v,
            )
        }
        ApiKey::ApiVersions => {
            use api_versions_response::*;
            let keys = g.vec(|g| {
                let k = *g.c.pick(REQUEST_APIS);
                let (min, max) = match ApiKey::try_from(k) {
                    Ok(a) => (a.valid_versions().min, a.valid_versions().max + 1),
                    Err(()) => (0, 3),
                };
                ApiVersion::default()
                    .with_api_key(k)
                    .with_min_version(min)
                    .with_max_version(max)
            });
            enc(&ApiVersionsResponse::default().with_api_keys(keys), v)
        }
        // A response without names: the default message.
        _ => default_response(key, v),
    }
}

/// The default response of an API without names in it.
fn default_response(key: ApiKey, v: i16) -> Option<Vec<u8>> {
    macro_rules! defaults {
        ($($k:ident => $t:ident),* $(,)?) => {
            match key {
                $(ApiKey::$k => enc(&$t::default(), v),)*
                _ => None,
            }
        };
    }
    defaults! {
        JoinGroup => JoinGroupResponse,
        SyncGroup => SyncGroupResponse,
        Heartbeat => HeartbeatResponse,
        LeaveGroup => LeaveGroupResponse,
        InitProducerId => InitProducerIdResponse,
        AddOffsetsToTxn => AddOffsetsToTxnResponse,
        EndTxn => EndTxnResponse,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
        SaslHandshake => SaslHandshakeResponse,
        SaslAuthenticate => SaslAuthenticateResponse,
        DescribeCluster => DescribeClusterResponse,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
        PushTelemetry => PushTelemetryResponse,
        DescribeLogDirs => DescribeLogDirsResponse,
        DescribeProducers => DescribeProducersResponse,
        DescribeTopicPartitions => DescribeTopicPartitionsResponse,
        DescribeTransactions => DescribeTransactionsResponse,
        DescribeAcls => DescribeAclsResponse,
        AlterConfigs => AlterConfigsResponse,
        ElectLeaders => ElectLeadersResponse,
        IncrementalAlterConfigs => IncrementalAlterConfigsResponse,
        ListTransactions => ListTransactionsResponse,
    }
}

/// A request frame: header (at the header version the API and version imply) and body.
pub fn request_frame(
    api_key: i16,
    v: i16,
    corr: i32,
    client: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut b = BytesMut::new();
    let hv = ApiKey::try_from(api_key)
        .map(|k| k.request_header_version(v))
        .unwrap_or(1);
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(v)
        .with_correlation_id(corr)
        .with_client_id(client.map(s));
    if header.encode(&mut b, hv.max(1)).is_err() {
        b.clear();
    }
    b.extend_from_slice(body);
    crate::frames::frame(&b)
}

/// A response frame for a request of `key` at `v`.
pub fn response_frame(key: ApiKey, v: i16, corr: i32, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(corr);
    if header
        .encode(&mut b, key.response_header_version(v))
        .is_err()
    {
        b.clear();
        b.extend_from_slice(&corr.to_be_bytes());
    }
    b.extend_from_slice(body);
    crate::frames::frame(&b)
}
