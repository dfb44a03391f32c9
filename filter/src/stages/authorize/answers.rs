//! Whole-request denials of APIs that answer per resource and have no top-level error code
//! (the generic error response would be an empty, error-free answer): every resource the request
//! names gets the error, as a broker with ACLs writes it. Built from the request, decoded with
//! kafka-protocol.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_response;
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message};

use crate::codec::budgeted;

fn decode<T: Decodable>(body: &Bytes, version: i16) -> Option<T> {
    budgeted::decode(&mut body.clone(), version)
}

fn encode<T: Encodable + Message>(m: &T, version: i16) -> Option<BytesMut> {
    if version < T::VERSIONS.min || version > T::VERSIONS.max {
        return None;
    }
    let mut out = BytesMut::new();
    m.encode(&mut out, version).ok()?;
    Some(out)
}

/// The response body denying every resource of the request (`body`: after its header) with
/// `code`; `None` for an API this module does not answer (the generic error response is used).
pub fn deny_all(api_key: i16, version: i16, body: &Bytes, code: i16) -> Option<BytesMut> {
    match ApiKey::try_from(api_key).ok()? {
        ApiKey::OffsetFetch if version >= 8 => {
            let r: OffsetFetchRequest = decode(body, version)?;
            let groups = r
                .groups
                .iter()
                .map(|g| {
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(code)
                })
                .collect();
            encode(&OffsetFetchResponse::default().with_groups(groups), version)
        }
        ApiKey::TxnOffsetCommit => {
            let r: TxnOffsetCommitRequest = decode(body, version)?;
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    TxnOffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    TxnOffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            encode(
                &TxnOffsetCommitResponse::default().with_topics(topics),
                version,
            )
        }
        ApiKey::DescribeConfigs => {
            let r: DescribeConfigsRequest = decode(body, version)?;
            let results = r
                .resources
                .iter()
                .map(|x| {
                    DescribeConfigsResult::default()
                        .with_resource_type(x.resource_type)
                        .with_resource_name(x.resource_name.clone())
                        .with_error_code(code)
                })
                .collect();
            encode(
                &DescribeConfigsResponse::default().with_results(results),
                version,
            )
        }
        ApiKey::AlterConfigs => {
            let r: AlterConfigsRequest = decode(body, version)?;
            let responses = r
                .resources
                .iter()
                .map(|x| {
                    alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(x.resource_type)
                        .with_resource_name(x.resource_name.clone())
                        .with_error_code(code)
                })
                .collect();
            encode(
                &AlterConfigsResponse::default().with_responses(responses),
                version,
            )
        }
        ApiKey::IncrementalAlterConfigs => {
            let r: IncrementalAlterConfigsRequest = decode(body, version)?;
            let responses = r
                .resources
                .iter()
                .map(|x| {
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(x.resource_type)
                        .with_resource_name(x.resource_name.clone())
                        .with_error_code(code)
                })
                .collect();
            encode(
                &IncrementalAlterConfigsResponse::default().with_responses(responses),
                version,
            )
        }
        ApiKey::DeleteGroups => {
            let r: DeleteGroupsRequest = decode(body, version)?;
            let results = r
                .groups_names
                .iter()
                .map(|g| {
                    DeletableGroupResult::default()
                        .with_group_id(g.clone())
                        .with_error_code(code)
                })
                .collect();
            encode(
                &DeleteGroupsResponse::default().with_results(results),
                version,
            )
        }
        ApiKey::CreatePartitions => {
            let r: CreatePartitionsRequest = decode(body, version)?;
            let results = r
                .topics
                .iter()
                .map(|t| {
                    CreatePartitionsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(code)
                })
                .collect();
            encode(
                &CreatePartitionsResponse::default().with_results(results),
                version,
            )
        }
        ApiKey::DeleteRecords => {
            let r: DeleteRecordsRequest = decode(body, version)?;
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    DeleteRecordsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    DeleteRecordsPartitionResult::default()
                                        .with_partition_index(p.partition_index)
                                        .with_low_watermark(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            encode(
                &DeleteRecordsResponse::default().with_topics(topics),
                version,
            )
        }
        ApiKey::AddPartitionsToTxn if version <= 3 => {
            let r: AddPartitionsToTxnRequest = decode(body, version)?;
            let topics = r
                .v3_and_below_topics
                .iter()
                .map(|t| {
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(t.name.clone())
                        .with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(*p)
                                        .with_partition_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            encode(
                &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics),
                version,
            )
        }
        _ => None,
    }
}
