//! Requests: every topic, group and transactional id the client sent becomes its broker-side name.
//!
//! Each rewriter touches a name field only at the versions where the schema has it: at other
//! versions kafka-protocol leaves the field empty, and mapping that empty name (a prefix rule
//! would make it `prefix`) would put a value in a field the version cannot encode.

use kafka_protocol::messages::*;

use super::names::Names;
use super::RewriteError;
use crate::topics::mapping::NameKind;
use crate::topics::mapping::NameKind::{Group, Topic, TransactionalId as Txn};

type R = Result<(), RewriteError>;

pub(super) fn produce(n: &mut Names<'_>, r: &mut ProduceRequest, v: i16) -> R {
    n.for_broker_opt(Txn, &mut r.transactional_id);
    // v13+ names topics by id.
    if v <= 12 {
        for t in &mut r.topic_data {
            n.for_broker(Topic, &mut t.name);
        }
    }
    Ok(())
}

pub(super) fn fetch(n: &mut Names<'_>, r: &mut FetchRequest, v: i16) -> R {
    // v13+ names topics by id: nothing to map.
    if v <= 12 {
        for t in &mut r.topics {
            n.for_broker(Topic, &mut t.topic);
        }
        for t in &mut r.forgotten_topics_data {
            n.for_broker(Topic, &mut t.topic);
        }
    }
    Ok(())
}

pub(super) fn list_offsets(n: &mut Names<'_>, r: &mut ListOffsetsRequest, _: i16) -> R {
    for t in &mut r.topics {
        n.for_broker(Topic, &mut t.name);
    }
    Ok(())
}

pub(super) fn metadata(n: &mut Names<'_>, r: &mut MetadataRequest, _: i16) -> R {
    // `None` (or, at v0, an empty list) asks for every topic: nothing to map; the response
    // hides what the client must not see.
    for t in r.topics.iter_mut().flatten() {
        n.for_broker_opt(Topic, &mut t.name);
    }
    Ok(())
}

pub(super) fn offset_commit(n: &mut Names<'_>, r: &mut OffsetCommitRequest, _: i16) -> R {
    n.for_broker(Group, &mut r.group_id);
    for t in &mut r.topics {
        n.for_broker(Topic, &mut t.name);
    }
    Ok(())
}

pub(super) fn offset_fetch(n: &mut Names<'_>, r: &mut OffsetFetchRequest, v: i16) -> R {
    if v <= 7 {
        n.for_broker(Group, &mut r.group_id);
        for t in r.topics.iter_mut().flatten() {
            n.for_broker(Topic, &mut t.name);
        }
    } else {
        for g in &mut r.groups {
            n.for_broker(Group, &mut g.group_id);
            for t in g.topics.iter_mut().flatten() {
                n.for_broker(Topic, &mut t.name);
            }
        }
    }
    Ok(())
}

/// The kind of name a FindCoordinator key is. Other key types (share-group coordinators, used
/// between brokers) embed names in a format of their own: refused rather than forwarded.
pub(super) fn coordinator_key_kind(key_type: i8) -> Result<NameKind, RewriteError> {
    match key_type {
        0 => Ok(Group),
        1 => Ok(Txn),
        _ => Err(RewriteError::Unmappable("FindCoordinator key_type")),
    }
}

/// The kind of the keys of a FindCoordinator v4+ request body, read from its first byte
/// (`key_type` leads the body from v4), for mapping its response; `None` for other versions or
/// key types.
pub fn coordinator_key_type(api_version: i16, body: &[u8]) -> Option<NameKind> {
    if api_version < 4 {
        return None;
    }
    let key_type = i8::from_be_bytes([*body.first()?]);
    coordinator_key_kind(key_type).ok()
}

pub(super) fn find_coordinator(n: &mut Names<'_>, r: &mut FindCoordinatorRequest, v: i16) -> R {
    // v0 has no key_type: its default, 0, is a group, as at v0.
    let kind = coordinator_key_kind(r.key_type)?;
    if v <= 3 {
        n.for_broker(kind, &mut r.key);
    } else {
        n.for_broker_all(kind, &mut r.coordinator_keys);
    }
    Ok(())
}

// JoinGroup and SyncGroup carry the consumer protocol (subscribed topics, assigned partitions) as
// opaque bytes (`protocols[].metadata`, `assignments[].assignment`). They stay untouched: the
// members of a group under a rule all see logical names, so the leader assigns logical names to
// logical subscriptions consistently, and the broker never reads those bytes. Each member then
// fetches and commits the logical names it was assigned, which this filter maps.

pub(super) fn join_group(n: &mut Names<'_>, r: &mut JoinGroupRequest, _: i16) -> R {
    n.for_broker(Group, &mut r.group_id);
    Ok(())
}

pub(super) fn sync_group(n: &mut Names<'_>, r: &mut SyncGroupRequest, _: i16) -> R {
    n.for_broker(Group, &mut r.group_id);
    Ok(())
}

pub(super) fn heartbeat(n: &mut Names<'_>, r: &mut HeartbeatRequest, _: i16) -> R {
    n.for_broker(Group, &mut r.group_id);
    Ok(())
}

pub(super) fn leave_group(n: &mut Names<'_>, r: &mut LeaveGroupRequest, _: i16) -> R {
    n.for_broker(Group, &mut r.group_id);
    Ok(())
}

pub(super) fn describe_groups(n: &mut Names<'_>, r: &mut DescribeGroupsRequest, _: i16) -> R {
    n.for_broker_all(Group, &mut r.groups);
    Ok(())
}

/// Kafka's `ConfigResource.Type` values that name a topic or a group; the other types (broker,
/// broker logger, client metrics) carry no mapped name.
pub(super) fn config_resource_kind(resource_type: i8) -> Option<NameKind> {
    match resource_type {
        2 => Some(Topic),
        32 => Some(Group),
        _ => None,
    }
}

pub(super) fn offset_for_leader_epoch(
    n: &mut Names<'_>,
    r: &mut OffsetForLeaderEpochRequest,
    _: i16,
) -> R {
    for t in &mut r.topics {
        n.for_broker(Topic, &mut t.topic);
    }
    Ok(())
}

pub(super) fn create_topics(n: &mut Names<'_>, r: &mut CreateTopicsRequest, _: i16) -> R {
    for t in &mut r.topics {
        n.for_broker(Topic, &mut t.name);
    }
    Ok(())
}

pub(super) fn delete_topics(n: &mut Names<'_>, r: &mut DeleteTopicsRequest, v: i16) -> R {
    if v <= 5 {
        n.for_broker_all(Topic, &mut r.topic_names);
    } else {
        // A null name deletes by topic id.
        for t in &mut r.topics {
            n.for_broker_opt(Topic, &mut t.name);
        }
    }
    Ok(())
}

pub(super) fn create_partitions(n: &mut Names<'_>, r: &mut CreatePartitionsRequest, _: i16) -> R {
    for t in &mut r.topics {
        n.for_broker(Topic, &mut t.name);
    }
    Ok(())
}

pub(super) fn describe_configs(n: &mut Names<'_>, r: &mut DescribeConfigsRequest, _: i16) -> R {
    for res in &mut r.resources {
        if let Some(kind) = config_resource_kind(res.resource_type) {
            n.for_broker(kind, &mut res.resource_name);
        }
    }
    Ok(())
}

pub(super) fn delete_records(n: &mut Names<'_>, r: &mut DeleteRecordsRequest, _: i16) -> R {
    for t in &mut r.topics {
        n.for_broker(Topic, &mut t.name);
    }
    Ok(())
}

pub(super) fn init_producer_id(n: &mut Names<'_>, r: &mut InitProducerIdRequest, _: i16) -> R {
    n.for_broker_opt(Txn, &mut r.transactional_id);
    Ok(())
}

pub(super) fn add_partitions_to_txn(
    n: &mut Names<'_>,
    r: &mut AddPartitionsToTxnRequest,
    v: i16,
) -> R {
    if v <= 3 {
        n.for_broker(Txn, &mut r.v3_and_below_transactional_id);
        for t in &mut r.v3_and_below_topics {
            n.for_broker(Topic, &mut t.name);
        }
    } else {
        for txn in &mut r.transactions {
            n.for_broker(Txn, &mut txn.transactional_id);
            for t in &mut txn.topics {
                n.for_broker(Topic, &mut t.name);
            }
        }
    }
    Ok(())
}

pub(super) fn add_offsets_to_txn(n: &mut Names<'_>, r: &mut AddOffsetsToTxnRequest, _: i16) -> R {
    n.for_broker(Txn, &mut r.transactional_id);
    n.for_broker(Group, &mut r.group_id);
    Ok(())
}

pub(super) fn txn_offset_commit(n: &mut Names<'_>, r: &mut TxnOffsetCommitRequest, _: i16) -> R {
    n.for_broker(Txn, &mut r.transactional_id);
    n.for_broker(Group, &mut r.group_id);
    for t in &mut r.topics {
        n.for_broker(Topic, &mut t.name);
    }
    Ok(())
}

pub(super) fn end_txn(n: &mut Names<'_>, r: &mut EndTxnRequest, _: i16) -> R {
    n.for_broker(Txn, &mut r.transactional_id);
    Ok(())
}

pub(super) fn delete_groups(n: &mut Names<'_>, r: &mut DeleteGroupsRequest, _: i16) -> R {
    n.for_broker_all(Group, &mut r.groups_names);
    Ok(())
}

pub(super) fn offset_delete(n: &mut Names<'_>, r: &mut OffsetDeleteRequest, _: i16) -> R {
    n.for_broker(Group, &mut r.group_id);
    for t in &mut r.topics {
        n.for_broker(Topic, &mut t.name);
    }
    Ok(())
}

pub(super) fn consumer_group_heartbeat(
    n: &mut Names<'_>,
    r: &mut ConsumerGroupHeartbeatRequest,
    _: i16,
) -> R {
    // A regex matches broker-side names the filter cannot enumerate or translate back: refused.
    // (An empty regex clears a regex subscription and names nothing.)
    if r.subscribed_topic_regex
        .as_ref()
        .is_some_and(|re| !re.is_empty())
    {
        return Err(RewriteError::Unmappable("subscribed_topic_regex"));
    }
    n.for_broker(Group, &mut r.group_id);
    if let Some(topics) = &mut r.subscribed_topic_names {
        n.for_broker_all(Topic, topics);
    }
    Ok(())
}

pub(super) fn consumer_group_describe(
    n: &mut Names<'_>,
    r: &mut ConsumerGroupDescribeRequest,
    _: i16,
) -> R {
    n.for_broker_all(Group, &mut r.group_ids);
    Ok(())
}
