//! The per-API rewriters: topic, group and transactional-id names in requests (client names to
//! broker names) and responses (broker names to what the client is shown), with kafka-protocol
//! decoding and re-encoding every message. Records stay opaque `Bytes`, never copied or parsed.
//!
//! [`coverage`] says how the filter treats each API and version under a rule; the rewriters refuse
//! (with an error) anything that is not [`Coverage::Rewritten`] or that they cannot map safely.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use super::mapping::{NameKind, NameMapper};

mod codec;
mod coverage;
mod names;
mod requests;
mod responses;

pub use coverage::{coverage, usable_versions, Coverage};
pub use requests::coordinator_key_type;

/// What a request said that its response does not repeat, for mapping the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hints {
    /// The kind of the keys a FindCoordinator v4+ request asked for: its response echoes them
    /// without their type. Without it a key is shown as either mapping maps it back.
    pub coordinator_keys: Option<NameKind>,
}

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("decode: {0}")]
    Decode(String),
    #[error("encode: {0}")]
    Encode(String),
    /// The message holds a name the rule cannot map (a topic regex, a name that cannot be
    /// hidden): the caller refuses the request or fails the response.
    #[error("{0} cannot be mapped")]
    Unmappable(&'static str),
    /// [`coverage`] is [`Coverage::Unsupported`] for this API and version.
    #[error("API {api_key} v{api_version} is not supported under a rule")]
    Unsupported { api_key: i16, api_version: i16 },
}

/// The rewritten APIs: key, request type, request rewriter, response rewriter (the response type
/// is the request's). One table for [`coverage`] and both directions, so they cannot disagree.
macro_rules! rewritten_apis {
    ($then:ident) => {
        $then! {
            Produce => ProduceRequest, requests::produce, responses::produce;
            Fetch => FetchRequest, requests::fetch, responses::fetch;
            ListOffsets => ListOffsetsRequest, requests::list_offsets, responses::list_offsets;
            Metadata => MetadataRequest, requests::metadata, responses::metadata;
            OffsetCommit => OffsetCommitRequest, requests::offset_commit, responses::offset_commit;
            OffsetFetch => OffsetFetchRequest, requests::offset_fetch, responses::offset_fetch;
            FindCoordinator => FindCoordinatorRequest,
                requests::find_coordinator, responses::find_coordinator;
            JoinGroup => JoinGroupRequest, requests::join_group, codec::no_names;
            SyncGroup => SyncGroupRequest, requests::sync_group, codec::no_names;
            Heartbeat => HeartbeatRequest, requests::heartbeat, codec::no_names;
            LeaveGroup => LeaveGroupRequest, requests::leave_group, codec::no_names;
            DescribeGroups => DescribeGroupsRequest,
                requests::describe_groups, responses::describe_groups;
            ListGroups => ListGroupsRequest, codec::no_names, responses::list_groups;
            OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
                requests::offset_for_leader_epoch, responses::offset_for_leader_epoch;
            CreateTopics => CreateTopicsRequest, requests::create_topics, responses::create_topics;
            DeleteTopics => DeleteTopicsRequest, requests::delete_topics, responses::delete_topics;
            CreatePartitions => CreatePartitionsRequest,
                requests::create_partitions, responses::create_partitions;
            DescribeConfigs => DescribeConfigsRequest,
                requests::describe_configs, responses::describe_configs;
            DeleteRecords => DeleteRecordsRequest,
                requests::delete_records, responses::delete_records;
            InitProducerId => InitProducerIdRequest, requests::init_producer_id, codec::no_names;
            AddPartitionsToTxn => AddPartitionsToTxnRequest,
                requests::add_partitions_to_txn, responses::add_partitions_to_txn;
            AddOffsetsToTxn => AddOffsetsToTxnRequest,
                requests::add_offsets_to_txn, codec::no_names;
            TxnOffsetCommit => TxnOffsetCommitRequest,
                requests::txn_offset_commit, responses::txn_offset_commit;
            EndTxn => EndTxnRequest, requests::end_txn, codec::no_names;
            DeleteGroups => DeleteGroupsRequest, requests::delete_groups, responses::delete_groups;
            OffsetDelete => OffsetDeleteRequest, requests::offset_delete, responses::offset_delete;
            ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
                requests::consumer_group_heartbeat, codec::no_names;
            ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
                requests::consumer_group_describe, responses::consumer_group_describe;
        }
    };
}
use rewritten_apis;

macro_rules! dispatch {
    ($($key:ident => $req:ident, $rewrite_req:path, $rewrite_resp:path;)*) => {
        fn dispatch_request(
            key: ApiKey,
            version: i16,
            body: Bytes,
            names: &dyn NameMapper,
            hints: Hints,
            before: &[u8],
        ) -> Option<Result<Option<BytesMut>, RewriteError>> {
            use kafka_protocol::messages::*;
            match key {
                $(ApiKey::$key => {
                    Some(codec::apply::<$req>(body, version, names, hints, $rewrite_req, before))
                })*
                _ => None,
            }
        }

        fn dispatch_response(
            key: ApiKey,
            version: i16,
            body: Bytes,
            names: &dyn NameMapper,
            hints: Hints,
            before: &[u8],
        ) -> Option<Result<Option<BytesMut>, RewriteError>> {
            use kafka_protocol::messages::*;
            use kafka_protocol::protocol::Request;
            match key {
                $(ApiKey::$key => Some(codec::apply::<<$req as Request>::Response>(
                    body,
                    version,
                    names,
                    hints,
                    $rewrite_resp,
                    before,
                )),)*
                _ => None,
            }
        }
    };
}
rewritten_apis!(dispatch);

type Dispatch = fn(
    ApiKey,
    i16,
    Bytes,
    &dyn NameMapper,
    Hints,
    &[u8],
) -> Option<Result<Option<BytesMut>, RewriteError>>;

fn rewrite(
    dispatch: Dispatch,
    api_key: i16,
    api_version: i16,
    body: Bytes,
    names: &dyn NameMapper,
    hints: Hints,
    before: &[u8],
) -> Result<Option<BytesMut>, RewriteError> {
    let unsupported = RewriteError::Unsupported {
        api_key,
        api_version,
    };
    match coverage(api_key, api_version) {
        Coverage::NameFree => Ok(None),
        Coverage::Unsupported => Err(unsupported),
        Coverage::Rewritten => match ApiKey::try_from(api_key) {
            Ok(key) => {
                dispatch(key, api_version, body, names, hints, before).unwrap_or(Err(unsupported))
            }
            Err(()) => Err(unsupported),
        },
    }
}

/// Rewrites a request body (the bytes after the request header) for a client under a rule.
///
/// `Ok(None)`: nothing changed, forward the original bytes (also for [`Coverage::NameFree`]
/// APIs, which are not decoded). `Ok(Some(body))`: forward this body instead. `Err`: refuse the
/// request (malformed, [`Coverage::Unsupported`], or a name that cannot be mapped).
pub fn rewrite_request(
    api_key: i16,
    api_version: i16,
    body: Bytes,
    names: &dyn NameMapper,
) -> Result<Option<BytesMut>, RewriteError> {
    rewrite(
        dispatch_request,
        api_key,
        api_version,
        body,
        names,
        Hints::default(),
        &[],
    )
}

/// [`rewrite_request`] whose result starts with `before` (a frame's size field and header):
/// the message is encoded once, straight into the frame that is forwarded.
pub fn rewrite_request_after(
    api_key: i16,
    api_version: i16,
    body: Bytes,
    names: &dyn NameMapper,
    before: &[u8],
) -> Result<Option<BytesMut>, RewriteError> {
    rewrite(
        dispatch_request,
        api_key,
        api_version,
        body,
        names,
        Hints::default(),
        before,
    )
}

/// Rewrites a response body (the bytes after the response header) for a client under a rule;
/// same results as [`rewrite_request`].
pub fn rewrite_response(
    api_key: i16,
    api_version: i16,
    body: Bytes,
    names: &dyn NameMapper,
) -> Result<Option<BytesMut>, RewriteError> {
    rewrite(
        dispatch_response,
        api_key,
        api_version,
        body,
        names,
        Hints::default(),
        &[],
    )
}

/// [`rewrite_response`] whose result starts with `before`, like [`rewrite_request_after`], with
/// what the request said that the response does not repeat.
pub fn rewrite_response_after(
    api_key: i16,
    api_version: i16,
    body: Bytes,
    names: &dyn NameMapper,
    hints: Hints,
    before: &[u8],
) -> Result<Option<BytesMut>, RewriteError> {
    rewrite(
        dispatch_response,
        api_key,
        api_version,
        body,
        names,
        hints,
        before,
    )
}
