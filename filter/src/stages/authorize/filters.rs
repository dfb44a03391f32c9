//! Responses that list more than the request named (Metadata for all topics, ListGroups,
//! ListTransactions, OffsetFetch for all of a group's topics) show only what the identity may
//! Describe, as Kafka's authorizer filters them. Metadata responses also tell the stage the
//! names of topic ids (of the topics it shows).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::split::{Denied, DeniedTopic};
use crate::codec::budgeted;

/// What may be shown: a topic, group or transactional id by name.
pub type Keep<'a> = &'a dyn Fn(&str) -> bool;

/// The response does not decode (or re-encode) as its request's version says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecodable;

fn decode<T: Decodable>(body: &Bytes, version: i16) -> Result<T, Undecodable> {
    budgeted::decode(&mut body.clone(), version).ok_or(Undecodable)
}

fn encode<T: Encodable>(m: &T, version: i16) -> Result<BytesMut, Undecodable> {
    let mut out = BytesMut::new();
    m.encode(&mut out, version).map_err(|_| Undecodable)?;
    Ok(out)
}

/// A Metadata response: topics `keep` refuses dropped (when `filter`), the denied ones added,
/// and `learn` told the id of every topic shown. `Ok(None)`: unchanged. `Err`: does not decode.
pub fn metadata(
    version: i16,
    body: &Bytes,
    filter: Option<Keep<'_>>,
    denied: Option<&Denied>,
    learn: &mut dyn FnMut(&[u8; 16], &str),
) -> Result<Option<BytesMut>, Undecodable> {
    let mut r: MetadataResponse = decode(body, version)?;
    let before = r.topics.len();
    if let Some(keep) = filter {
        r.topics
            .retain(|t| t.name.as_ref().is_some_and(|n| keep(n.as_str())));
    }
    for t in &r.topics {
        if let (Some(n), false) = (&t.name, t.topic_id.is_nil()) {
            learn(t.topic_id.as_bytes(), n.as_str());
        }
    }
    let mut changed = r.topics.len() != before;
    if let Some(Denied::Topics(d)) = denied {
        changed |= !d.is_empty();
        r.topics.extend(d.iter().map(denied_metadata_topic));
    }
    if !changed {
        return Ok(None);
    }
    encode(&r, version).map(Some)
}

fn denied_metadata_topic(t: &DeniedTopic) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(t.code)
        .with_name(Some(TopicName(t.name.clone().into())))
        // Never the id: a denied topic's id would let a client name it.
        .with_topic_authorized_operations(i32::MIN)
}

/// A ListGroups response without the groups `keep` refuses.
pub fn list_groups(
    version: i16,
    body: &Bytes,
    keep: Keep<'_>,
) -> Result<Option<BytesMut>, Undecodable> {
    let mut r: ListGroupsResponse = decode(body, version)?;
    let before = r.groups.len();
    r.groups.retain(|g| keep(g.group_id.as_str()));
    if r.groups.len() == before {
        return Ok(None);
    }
    encode(&r, version).map(Some)
}

/// A ListTransactions response without the transactional ids `keep` refuses.
pub fn list_transactions(
    version: i16,
    body: &Bytes,
    keep: Keep<'_>,
) -> Result<Option<BytesMut>, Undecodable> {
    let mut r: ListTransactionsResponse = decode(body, version)?;
    let before = r.transaction_states.len();
    r.transaction_states
        .retain(|t| keep(t.transactional_id.as_str()));
    if r.transaction_states.len() == before {
        return Ok(None);
    }
    encode(&r, version).map(Some)
}

/// An OffsetFetch response without the topics `keep` refuses.
pub fn offset_fetch(
    version: i16,
    body: &Bytes,
    keep: Keep<'_>,
) -> Result<Option<BytesMut>, Undecodable> {
    let mut r: OffsetFetchResponse = decode(body, version)?;
    let mut changed = false;
    let before = r.topics.len();
    r.topics.retain(|t| keep(t.name.as_str()));
    changed |= r.topics.len() != before;
    for g in &mut r.groups {
        let before = g.topics.len();
        // v10+ names topics by id only: those are kept only if named.
        g.topics
            .retain(|t| !t.name.as_str().is_empty() && keep(t.name.as_str()));
        changed |= g.topics.len() != before;
    }
    if !changed {
        return Ok(None);
    }
    encode(&r, version).map(Some)
}
