//! The answer to a request the filter refuses: the response type's default, with the top-level
//! error code set where the response has one at that version.

use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Message};

/// A complete error response body (no header) for `api_key` at `api_version`: the default
/// response with its top-level `error_code` set to `error_code` where the response has one at
/// that version (responses with per-item error codes only are returned empty). `None` if
/// kafka-protocol has no schema for this API and version.
pub fn error_response_body(api_key: i16, api_version: i16, error_code: i16) -> Option<BytesMut> {
    let key = ApiKey::try_from(api_key).ok()?;
    macro_rules! bodies {
        (
            with_error_code { $($with:ident => $with_resp:ident;)* }
            without_error_code { $($without:ident => $without_resp:ident;)* }
        ) => {
            match key {
                $(ApiKey::$with => body(api_version, |r: &mut $with_resp| {
                    r.error_code = error_code
                }),)*
                $(ApiKey::$without => body(api_version, |_: &mut $without_resp| {}),)*
            }
        };
    }
    bodies! {
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
    }
}

/// `T::default()` after `set`, encoded at `version`; the plain default if the field `set` fills
/// does not exist at `version` (kafka-protocol refuses to encode a non-default value there).
fn body<T: Message + Encodable + Default>(
    version: i16,
    set: impl FnOnce(&mut T),
) -> Option<BytesMut> {
    if version < T::VERSIONS.min || version > T::VERSIONS.max {
        return None;
    }
    let mut response = T::default();
    set(&mut response);
    let encode = |message: &T| {
        let mut out = BytesMut::new();
        message.encode(&mut out, version).map(|()| out)
    };
    encode(&response).or_else(|_| encode(&T::default())).ok()
}
