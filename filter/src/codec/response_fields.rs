//! Where a response keeps `throttle_time_ms` and its top-level `error_code`, for each API and
//! version: kafka-protocol's schemas decide, not a hand-written table (each is found once per VM
//! by encoding a response with a marker value). What a response's first bytes say of them, for
//! observers.

use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use super::{read_i16, read_i32};

/// The APIs whose responses have `throttle_time_ms` (kafka-protocol's schemas decide, not a
/// hand-written table): for each, the versions where it is the body's first field, found by
/// encoding a response with a marker value once per VM.
macro_rules! throttled_responses {
    ($($key:ident => $resp:ident),* $(,)?) => {
        fn first_field_versions() -> Vec<(i16, u64)> {
            use kafka_protocol::messages::*;
            use kafka_protocol::protocol::Message;
            const MARK: i32 = 0x5eed_7177;
            let mut out = Vec::new();
            $(
                let mut versions = 0u64;
                let range = <$resp as Message>::VERSIONS;
                for v in range.min.max(0)..=range.max.min(63) {
                    let mut b = bytes::BytesMut::new();
                    let r = $resp::default().with_throttle_time_ms(MARK);
                    if r.encode(&mut b, v).is_ok() && b.get(..4) == Some(&MARK.to_be_bytes()[..]) {
                        versions |= 1 << v;
                    }
                }
                out.push((ApiKey::$key as i16, versions));
            )*
            out
        }
    };
}

throttled_responses! {
    AddOffsetsToTxn => AddOffsetsToTxnResponse, AddPartitionsToTxn => AddPartitionsToTxnResponse,
    AlterClientQuotas => AlterClientQuotasResponse, AlterConfigs => AlterConfigsResponse,
    AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
    AlterReplicaLogDirs => AlterReplicaLogDirsResponse,
    AlterUserScramCredentials => AlterUserScramCredentialsResponse,
    ApiVersions => ApiVersionsResponse, ConsumerGroupDescribe => ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse, CreateAcls => CreateAclsResponse,
    CreateDelegationToken => CreateDelegationTokenResponse,
    CreatePartitions => CreatePartitionsResponse, CreateTopics => CreateTopicsResponse,
    DeleteAcls => DeleteAclsResponse, DeleteGroups => DeleteGroupsResponse,
    DeleteRecords => DeleteRecordsResponse, DeleteTopics => DeleteTopicsResponse,
    DescribeAcls => DescribeAclsResponse, DescribeClientQuotas => DescribeClientQuotasResponse,
    DescribeCluster => DescribeClusterResponse, DescribeConfigs => DescribeConfigsResponse,
    DescribeDelegationToken => DescribeDelegationTokenResponse,
    DescribeGroups => DescribeGroupsResponse, DescribeLogDirs => DescribeLogDirsResponse,
    DescribeProducers => DescribeProducersResponse,
    DescribeTopicPartitions => DescribeTopicPartitionsResponse,
    DescribeTransactions => DescribeTransactionsResponse,
    DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
    ElectLeaders => ElectLeadersResponse, EndTxn => EndTxnResponse,
    ExpireDelegationToken => ExpireDelegationTokenResponse, Fetch => FetchResponse,
    FindCoordinator => FindCoordinatorResponse,
    GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
    Heartbeat => HeartbeatResponse, IncrementalAlterConfigs => IncrementalAlterConfigsResponse,
    InitProducerId => InitProducerIdResponse, JoinGroup => JoinGroupResponse,
    LeaveGroup => LeaveGroupResponse, ListGroups => ListGroupsResponse,
    ListOffsets => ListOffsetsResponse,
    ListPartitionReassignments => ListPartitionReassignmentsResponse,
    ListTransactions => ListTransactionsResponse, Metadata => MetadataResponse,
    OffsetCommit => OffsetCommitResponse, OffsetDelete => OffsetDeleteResponse,
    OffsetFetch => OffsetFetchResponse, OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
    Produce => ProduceResponse, PushTelemetry => PushTelemetryResponse,
    RenewDelegationToken => RenewDelegationTokenResponse, SyncGroup => SyncGroupResponse,
    TxnOffsetCommit => TxnOffsetCommitResponse,
}

/// Whether `throttle_time_ms` is the first field of the API's response body at `version`.
pub fn throttle_first(api_key: i16, version: i16) -> bool {
    thread_local! {
        static TABLE: Vec<(i16, u64)> = first_field_versions();
    }
    let Ok(v) = u32::try_from(version) else {
        return false;
    };
    v < 64
        && TABLE.with(|t| {
            t.iter()
                .any(|(k, versions)| *k == api_key && versions & (1u64 << v) != 0)
        })
}

/// The APIs whose responses have a top-level `error_code`: for each, the versions where it is
/// the body's first field, and those where it follows a leading `throttle_time_ms`.
macro_rules! errored_responses {
    ($($key:ident => $resp:ident),* $(,)?) => {
        fn error_field_versions() -> Vec<(i16, u64, u64)> {
            use kafka_protocol::messages::*;
            use kafka_protocol::protocol::Message;
            const MARK: i16 = 0x5eed;
            let mut out = Vec::new();
            $(
                let (mut first, mut second) = (0u64, 0u64);
                let range = <$resp as Message>::VERSIONS;
                for v in range.min.max(0)..=range.max.min(63) {
                    let mut b = bytes::BytesMut::new();
                    let r = $resp::default().with_error_code(MARK);
                    if r.encode(&mut b, v).is_ok() {
                        if b.get(..2) == Some(&MARK.to_be_bytes()[..]) {
                            first |= 1 << v;
                        } else if b.get(4..6) == Some(&MARK.to_be_bytes()[..])
                            && throttle_first(ApiKey::$key as i16, v)
                        {
                            second |= 1 << v;
                        }
                    }
                }
                out.push((ApiKey::$key as i16, first, second));
            )*
            out
        }
    };
}

errored_responses! {
    AddOffsetsToTxn => AddOffsetsToTxnResponse, AddPartitionsToTxn => AddPartitionsToTxnResponse,
    AllocateProducerIds => AllocateProducerIdsResponse,
    AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
    ApiVersions => ApiVersionsResponse, BeginQuorumEpoch => BeginQuorumEpochResponse,
    ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
    CreateDelegationToken => CreateDelegationTokenResponse, DescribeAcls => DescribeAclsResponse,
    DescribeClientQuotas => DescribeClientQuotasResponse, DescribeCluster => DescribeClusterResponse,
    DescribeDelegationToken => DescribeDelegationTokenResponse,
    DescribeLogDirs => DescribeLogDirsResponse, DescribeQuorum => DescribeQuorumResponse,
    ElectLeaders => ElectLeadersResponse, EndQuorumEpoch => EndQuorumEpochResponse,
    EndTxn => EndTxnResponse, ExpireDelegationToken => ExpireDelegationTokenResponse,
    Fetch => FetchResponse, FindCoordinator => FindCoordinatorResponse,
    GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
    Heartbeat => HeartbeatResponse, InitProducerId => InitProducerIdResponse,
    JoinGroup => JoinGroupResponse, LeaveGroup => LeaveGroupResponse,
    ListGroups => ListGroupsResponse,
    ListPartitionReassignments => ListPartitionReassignmentsResponse,
    ListTransactions => ListTransactionsResponse, OffsetDelete => OffsetDeleteResponse,
    OffsetFetch => OffsetFetchResponse, PushTelemetry => PushTelemetryResponse,
    RenewDelegationToken => RenewDelegationTokenResponse,
    SaslAuthenticate => SaslAuthenticateResponse, SaslHandshake => SaslHandshakeResponse,
    SyncGroup => SyncGroupResponse, Vote => VoteResponse,
}

/// Where the top-level `error_code` is in the API's response body at `version`, if it leads it
/// (offset 0) or follows a leading `throttle_time_ms` (offset 4).
pub fn error_at(api_key: i16, version: i16) -> Option<usize> {
    thread_local! {
        static TABLE: Vec<(i16, u64, u64)> = error_field_versions();
    }
    let v = u32::try_from(version).ok().filter(|v| *v < 64)?;
    TABLE.with(|t| {
        let (_, first, second) = t.iter().find(|(k, _, _)| *k == api_key)?;
        if first & (1u64 << v) != 0 {
            Some(0)
        } else if second & (1u64 << v) != 0 {
            Some(4)
        } else {
            None
        }
    })
}

/// What a response's first bytes say, for observers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// `throttle_time_ms` as the broker sent it, where it leads the body.
    pub throttle_ms: Option<i32>,
    /// The top-level `error_code`, where the response has one near its start.
    pub error_code: Option<i16>,
}

/// The response header's length: the correlation id, and in flexible versions its tagged
/// fields (read only when there are none, as brokers send it).
fn header_len(api_key: i16, version: i16, prefix: &[u8]) -> Option<usize> {
    let api = ApiKey::try_from(api_key).ok()?;
    match api.response_header_version(version) {
        0 => Some(4),
        _ => (prefix.get(4) == Some(&0)).then_some(5),
    }
}

const PRODUCE: i16 = 0;
/// A Produce response keeps `throttle_time_ms` after its results, and its errors per partition:
/// it is read only when the whole response lies in the first bytes the reader reads anyway (one
/// partition's answer is some 50 bytes).
const PRODUCE_WHOLE: usize = super::frame::HEAD_WINDOW;

/// Bytes of a response (of `frame_len` bytes after its size field) to read for [`read_head`]:
/// `None` when it has neither field where they can be read cheaply.
pub fn head_want(api_key: i16, version: i16, frame_len: usize) -> Option<usize> {
    if api_key == PRODUCE {
        return (version >= 1 && frame_len <= PRODUCE_WHOLE).then_some(frame_len);
    }
    let throttle = throttle_first(api_key, version).then_some(4);
    let error = error_at(api_key, version).map(|at| at + 2);
    // The flexible header's tagged fields: one byte when empty.
    Some(5 + throttle.max(error)?)
}

/// The broker's throttle time and top-level error code, from a response's first bytes (for
/// Produce, the whole response of `frame_len` bytes).
pub fn read_head(api_key: i16, version: i16, prefix: &[u8], frame_len: usize) -> ResponseHead {
    if api_key == PRODUCE {
        return produce_head(version, prefix, frame_len).unwrap_or_default();
    }
    let Some(body) = header_len(api_key, version, prefix) else {
        return ResponseHead::default();
    };
    ResponseHead {
        throttle_ms: throttle_first(api_key, version)
            .then(|| read_i32(prefix, body))
            .flatten(),
        error_code: error_at(api_key, version).and_then(|at| read_i16(prefix, body + at)),
    }
}

/// A whole Produce response's `throttle_time_ms` (after its results) and the error of its first
/// partition in error (Produce answers per partition), decoded with kafka-protocol.
fn produce_head(version: i16, frame: &[u8], frame_len: usize) -> Option<ResponseHead> {
    if version < 1 || frame.len() != frame_len {
        return None;
    }
    let mut buf = bytes::Bytes::copy_from_slice(frame);
    let r = super::budgeted::within(frame_len, || {
        ResponseHeader::decode(&mut buf, ProduceResponse::header_version(version))
            .and_then(|_| ProduceResponse::decode(&mut buf, version))
    })?;
    let error_code = r
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.error_code)
        .find(|c| *c != 0);
    Some(ResponseHead {
        throttle_ms: Some(r.throttle_time_ms),
        error_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::{
        ApiVersionsResponse, FetchResponse, JoinGroupResponse, MetadataResponse, ResponseHeader,
    };
    use kafka_protocol::protocol::Encodable;

    fn frame_body<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Vec<u8> {
        let mut b = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(7)
            .encode(&mut b, api.response_header_version(version))
            .unwrap();
        body.encode(&mut b, version).unwrap();
        b.to_vec()
    }

    #[test]
    fn a_whole_produce_response_gives_its_throttle_time_on_every_version() {
        use kafka_protocol::messages::produce_response::{
            PartitionProduceResponse, TopicProduceResponse,
        };
        use kafka_protocol::messages::{ProduceResponse, TopicName};
        use kafka_protocol::protocol::{Message, StrBytes};
        let r = ProduceResponse::default()
            .with_throttle_time_ms(1234)
            .with_responses(vec![TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_responses(vec![
                    PartitionProduceResponse::default().with_base_offset(77)
                ])]);
        let versions = <ProduceResponse as Message>::VERSIONS;
        for v in versions.min.max(1)..=versions.max {
            let b = frame_body(ApiKey::Produce, v, &r);
            assert_eq!(head_want(0, v, b.len()), Some(b.len()));
            assert_eq!(read_head(0, v, &b, b.len()).throttle_ms, Some(1234), "v{v}");
            assert_eq!(read_head(0, v, &b, b.len()).error_code, None);
            // Not whole: nothing read.
            assert_eq!(
                read_head(0, v, &b[..b.len() - 1], b.len()).throttle_ms,
                None
            );
        }
        // Too large to read whole for it.
        assert_eq!(head_want(0, 9, 4096), None);
        // Errors are per partition: the first one in error.
        let failed = r.with_responses(vec![TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partition_responses(vec![
                PartitionProduceResponse::default().with_index(0),
                PartitionProduceResponse::default()
                    .with_index(1)
                    .with_error_code(6),
            ])]);
        let b = frame_body(ApiKey::Produce, 9, &failed);
        assert_eq!(read_head(0, 9, &b, b.len()).error_code, Some(6));
    }

    #[test]
    fn throttle_and_error_read_where_the_schemas_put_them() {
        let join = JoinGroupResponse::default()
            .with_throttle_time_ms(250)
            .with_error_code(79);
        for v in [2, 5, 6, 9] {
            let b = frame_body(ApiKey::JoinGroup, v, &join);
            assert!(head_want(11, v, b.len()).unwrap() <= b.len());
            let got = read_head(11, v, &b, b.len());
            assert_eq!(
                (got.throttle_ms, got.error_code),
                (Some(250), Some(79)),
                "v{v}"
            );
        }
        // ApiVersions leads with its error code; its throttle time comes later (not read).
        let av = ApiVersionsResponse::default()
            .with_error_code(35)
            .with_throttle_time_ms(9);
        let got = read_head(18, 3, &frame_body(ApiKey::ApiVersions, 3, &av), usize::MAX);
        assert_eq!((got.throttle_ms, got.error_code), (None, Some(35)));
        // Fetch v7+ has a top-level error after its throttle time; v4 only the throttle time.
        let f = FetchResponse::default()
            .with_throttle_time_ms(12)
            .with_error_code(70);
        let got = read_head(1, 12, &frame_body(ApiKey::Fetch, 12, &f), usize::MAX);
        assert_eq!((got.throttle_ms, got.error_code), (Some(12), Some(70)));
        let got = read_head(1, 4, &frame_body(ApiKey::Fetch, 4, &f), usize::MAX);
        assert_eq!((got.throttle_ms, got.error_code), (Some(12), None));
        // Metadata: throttle time only (its errors are per topic).
        let m = MetadataResponse::default().with_throttle_time_ms(3);
        let got = read_head(3, 12, &frame_body(ApiKey::Metadata, 12, &m), usize::MAX);
        assert_eq!((got.throttle_ms, got.error_code), (Some(3), None));
        // Nothing near the start: nothing to read; short or odd bytes: nothing read.
        assert_eq!(head_want(8, 0, 100), None);
        assert_eq!(read_head(11, 5, &[0, 0, 0, 7], 4), ResponseHead::default());
        assert_eq!(read_head(-1, 0, &[0; 16], 16), ResponseHead::default());
        assert_eq!(error_at(11, -1), None);
        assert_eq!(error_at(11, 99), None);
    }
}
