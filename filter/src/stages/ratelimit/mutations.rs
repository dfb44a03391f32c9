//! Topic mutations (CreateTopics, CreatePartitions, DeleteTopics), limited as Kafka's
//! controller mutation quota limits them (KIP-599): counted in partitions, and over the rate
//! the API's own answer, `THROTTLING_QUOTA_EXCEEDED` for every topic of the request, on the
//! versions that define it; older versions are delayed like any other request.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub(super) const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
const CREATE_TOPICS: i16 = ApiKey::CreateTopics as i16;
const DELETE_TOPICS: i16 = ApiKey::DeleteTopics as i16;
const CREATE_PARTITIONS: i16 = ApiKey::CreatePartitions as i16;

pub(super) fn is_mutation(api_key: i16) -> bool {
    matches!(api_key, CREATE_TOPICS | DELETE_TOPICS | CREATE_PARTITIONS)
}

/// A decoded mutation request.
pub(super) enum Mutation {
    CreateTopics(CreateTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DeleteTopics(DeleteTopicsRequest),
}

impl Mutation {
    pub(super) fn decode(api_key: i16, version: i16, mut body: Bytes) -> Option<Self> {
        Some(match api_key {
            CREATE_TOPICS => {
                Mutation::CreateTopics(CreateTopicsRequest::decode(&mut body, version).ok()?)
            }
            CREATE_PARTITIONS => Mutation::CreatePartitions(
                CreatePartitionsRequest::decode(&mut body, version).ok()?,
            ),
            DELETE_TOPICS => {
                Mutation::DeleteTopics(DeleteTopicsRequest::decode(&mut body, version).ok()?)
            }
            _ => return None,
        })
    }

    /// Partitions created or deleted, as far as the request tells: a topic created with the
    /// broker's default partition count, new partitions without assignments, and a deleted
    /// topic count one each (the broker knows more; this filter does not ask it).
    pub(super) fn partitions(&self) -> f64 {
        let n: i64 = match self {
            Mutation::CreateTopics(r) => r
                .topics
                .iter()
                .map(|t| match (t.num_partitions, t.assignments.len()) {
                    (n, _) if n > 0 => i64::from(n),
                    (_, a) if a > 0 => a as i64,
                    _ => 1,
                })
                .sum(),
            Mutation::CreatePartitions(r) => r
                .topics
                .iter()
                .map(|t| t.assignments.as_ref().map_or(1, |a| a.len().max(1) as i64))
                .sum(),
            Mutation::DeleteTopics(r) => (r.topics.len() + r.topic_names.len()) as i64,
        };
        n as f64
    }

    /// Whether the API answers a mutation over the rate with THROTTLING_QUOTA_EXCEEDED at
    /// this version (KIP-599), rather than being delayed.
    pub(super) fn rejects(api_key: i16, version: i16) -> bool {
        match api_key {
            CREATE_TOPICS => version >= 6,
            CREATE_PARTITIONS => version >= 3,
            DELETE_TOPICS => version >= 5,
            _ => false,
        }
    }

    /// The whole response frame refusing every topic of the request with
    /// THROTTLING_QUOTA_EXCEEDED, telling the client to wait `throttle_ms`.
    pub(super) fn refusal(
        &self,
        version: i16,
        correlation_id: i32,
        throttle_ms: u32,
    ) -> Option<Vec<u8>> {
        let throttle = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
        let message = Some(StrBytes::from_static_str(
            "the topic mutation rate of this client is exceeded (kafka filter limit)",
        ));
        let code = THROTTLING_QUOTA_EXCEEDED;
        let mut body = BytesMut::new();
        let api = match self {
            Mutation::CreateTopics(r) => {
                CreateTopicsResponse::default()
                    .with_throttle_time_ms(throttle)
                    .with_topics(
                        r.topics
                            .iter()
                            .map(|t| {
                                CreatableTopicResult::default()
                                    .with_name(t.name.clone())
                                    .with_error_code(code)
                                    .with_error_message(message.clone())
                                    .with_num_partitions(-1)
                                    .with_replication_factor(-1)
                            })
                            .collect(),
                    )
                    .encode(&mut body, version)
                    .ok()?;
                ApiKey::CreateTopics
            }
            Mutation::CreatePartitions(r) => {
                CreatePartitionsResponse::default()
                    .with_throttle_time_ms(throttle)
                    .with_results(
                        r.topics
                            .iter()
                            .map(|t| {
                                CreatePartitionsTopicResult::default()
                                    .with_name(t.name.clone())
                                    .with_error_code(code)
                                    .with_error_message(message.clone())
                            })
                            .collect(),
                    )
                    .encode(&mut body, version)
                    .ok()?;
                ApiKey::CreatePartitions
            }
            Mutation::DeleteTopics(r) => {
                let by_name = r.topic_names.iter().map(|n| {
                    DeletableTopicResult::default()
                        .with_name(Some(n.clone()))
                        .with_error_code(code)
                        .with_error_message(message.clone())
                });
                let by_state = r.topics.iter().map(|t| {
                    DeletableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id)
                        .with_error_code(code)
                        .with_error_message(message.clone())
                });
                DeleteTopicsResponse::default()
                    .with_throttle_time_ms(throttle)
                    .with_responses(by_name.chain(by_state).collect())
                    .encode(&mut body, version)
                    .ok()?;
                ApiKey::DeleteTopics
            }
        };
        let mut head = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut head, api.response_header_version(version))
            .ok()?;
        let len = i32::try_from(head.len() + body.len()).ok()?;
        let mut frame = Vec::with_capacity(4 + head.len() + body.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&head);
        frame.extend_from_slice(&body);
        Some(frame)
    }
}
