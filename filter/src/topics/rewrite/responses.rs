//! Responses: every name the broker sent becomes what the client is shown, and an element whose
//! name the client must not see (another tenant's topic, the production topic a canary topic
//! stands in for) is dropped.
//!
//! As for requests, a name field is touched only at the versions where the schema has it.

use kafka_protocol::messages::*;

use super::names::Names;
use super::requests::config_resource_kind;
use super::RewriteError;
use crate::topics::mapping::NameKind::{Group, Topic, TransactionalId as Txn};

type R = Result<(), RewriteError>;

pub(super) fn produce(n: &mut Names<'_>, r: &mut ProduceResponse, v: i16) -> R {
    if v <= 12 {
        n.retain(&mut r.responses, |n, t| n.for_client(Topic, &mut t.name));
    }
    Ok(())
}

pub(super) fn fetch(n: &mut Names<'_>, r: &mut FetchResponse, v: i16) -> R {
    if v <= 12 {
        n.retain(&mut r.responses, |n, t| n.for_client(Topic, &mut t.topic));
    }
    Ok(())
}

pub(super) fn list_offsets(n: &mut Names<'_>, r: &mut ListOffsetsResponse, _: i16) -> R {
    n.retain(&mut r.topics, |n, t| n.for_client(Topic, &mut t.name));
    Ok(())
}

pub(super) fn metadata(n: &mut Names<'_>, r: &mut MetadataResponse, _: i16) -> R {
    n.retain(&mut r.topics, |n, t| n.for_client_opt(Topic, &mut t.name));
    Ok(())
}

pub(super) fn offset_commit(n: &mut Names<'_>, r: &mut OffsetCommitResponse, v: i16) -> R {
    if v <= 9 {
        n.retain(&mut r.topics, |n, t| n.for_client(Topic, &mut t.name));
    }
    Ok(())
}

pub(super) fn offset_fetch(n: &mut Names<'_>, r: &mut OffsetFetchResponse, v: i16) -> R {
    if v <= 7 {
        n.retain(&mut r.topics, |n, t| n.for_client(Topic, &mut t.name));
    } else {
        n.retain(&mut r.groups, |n, g| {
            if !n.for_client(Group, &mut g.group_id) {
                return false;
            }
            if v <= 9 {
                n.retain(&mut g.topics, |n, t| n.for_client(Topic, &mut t.name));
            }
            true
        });
    }
    Ok(())
}

pub(super) fn find_coordinator(n: &mut Names<'_>, r: &mut FindCoordinatorResponse, v: i16) -> R {
    // v4+ echoes each key the client asked for, and the client matches coordinators to its keys
    // by name, so a key is never dropped: one the client may not see (a key it cannot have asked
    // for: a misbehaving broker) fails the response. The response does not say whether the keys
    // are groups or transactional ids; the request did, and the caller passes it on. Without it
    // a key is shown as the logical name either mapping gives it, and refused only if the two
    // mappings give different logical names.
    if v >= 4 {
        let unmappable = RewriteError::Unmappable("FindCoordinator coordinators.key");
        let kind = n.hints().coordinator_keys;
        for c in &mut r.coordinators {
            let shown = match kind {
                Some(kind) => n.for_client(kind, &mut c.key),
                None => n.for_client_either([Group, Txn], &mut c.key).is_some(),
            };
            if !shown {
                return Err(unmappable);
            }
        }
    }
    Ok(())
}

pub(super) fn describe_groups(n: &mut Names<'_>, r: &mut DescribeGroupsResponse, _: i16) -> R {
    // `members[].member_metadata` and `member_assignment` are the opaque consumer-protocol bytes
    // of JoinGroup/SyncGroup, left as they are (see `requests`): they hold logical names already.
    n.retain(&mut r.groups, |n, g| n.for_client(Group, &mut g.group_id));
    Ok(())
}

pub(super) fn list_groups(n: &mut Names<'_>, r: &mut ListGroupsResponse, _: i16) -> R {
    n.retain(&mut r.groups, |n, g| n.for_client(Group, &mut g.group_id));
    Ok(())
}

pub(super) fn offset_for_leader_epoch(
    n: &mut Names<'_>,
    r: &mut OffsetForLeaderEpochResponse,
    _: i16,
) -> R {
    n.retain(&mut r.topics, |n, t| n.for_client(Topic, &mut t.topic));
    Ok(())
}

pub(super) fn create_topics(n: &mut Names<'_>, r: &mut CreateTopicsResponse, _: i16) -> R {
    n.retain(&mut r.topics, |n, t| n.for_client(Topic, &mut t.name));
    Ok(())
}

pub(super) fn delete_topics(n: &mut Names<'_>, r: &mut DeleteTopicsResponse, _: i16) -> R {
    n.retain(&mut r.responses, |n, t| {
        n.for_client_opt(Topic, &mut t.name)
    });
    Ok(())
}

pub(super) fn create_partitions(n: &mut Names<'_>, r: &mut CreatePartitionsResponse, _: i16) -> R {
    n.retain(&mut r.results, |n, t| n.for_client(Topic, &mut t.name));
    Ok(())
}

pub(super) fn describe_configs(n: &mut Names<'_>, r: &mut DescribeConfigsResponse, _: i16) -> R {
    n.retain(&mut r.results, |n, res| {
        match config_resource_kind(res.resource_type) {
            Some(kind) => n.for_client(kind, &mut res.resource_name),
            None => true,
        }
    });
    Ok(())
}

pub(super) fn delete_records(n: &mut Names<'_>, r: &mut DeleteRecordsResponse, _: i16) -> R {
    n.retain(&mut r.topics, |n, t| n.for_client(Topic, &mut t.name));
    Ok(())
}

pub(super) fn add_partitions_to_txn(
    n: &mut Names<'_>,
    r: &mut AddPartitionsToTxnResponse,
    v: i16,
) -> R {
    if v <= 3 {
        n.retain(&mut r.results_by_topic_v3_and_below, |n, t| {
            n.for_client(Topic, &mut t.name)
        });
    } else {
        n.retain(&mut r.results_by_transaction, |n, txn| {
            if !n.for_client(Txn, &mut txn.transactional_id) {
                return false;
            }
            n.retain(&mut txn.topic_results, |n, t| {
                n.for_client(Topic, &mut t.name)
            });
            true
        });
    }
    Ok(())
}

pub(super) fn txn_offset_commit(n: &mut Names<'_>, r: &mut TxnOffsetCommitResponse, _: i16) -> R {
    n.retain(&mut r.topics, |n, t| n.for_client(Topic, &mut t.name));
    Ok(())
}

pub(super) fn delete_groups(n: &mut Names<'_>, r: &mut DeleteGroupsResponse, _: i16) -> R {
    n.retain(&mut r.results, |n, g| n.for_client(Group, &mut g.group_id));
    Ok(())
}

pub(super) fn offset_delete(n: &mut Names<'_>, r: &mut OffsetDeleteResponse, _: i16) -> R {
    n.retain(&mut r.topics, |n, t| n.for_client(Topic, &mut t.name));
    Ok(())
}

pub(super) fn consumer_group_describe(
    n: &mut Names<'_>,
    r: &mut ConsumerGroupDescribeResponse,
    _: i16,
) -> R {
    n.retain(&mut r.groups, |n, g| {
        if !n.for_client(Group, &mut g.group_id) {
            return false;
        }
        for m in &mut g.members {
            // `subscribed_topic_regex` is what the member sent; requests with a regex are
            // refused under a rule, so a regex here is another client's and stays as it is.
            n.retain_names(Topic, &mut m.subscribed_topic_names);
            for assignment in [&mut m.assignment, &mut m.target_assignment] {
                n.retain(&mut assignment.topic_partitions, |n, tp| {
                    n.for_client(Topic, &mut tp.topic_name)
                });
            }
        }
        true
    });
    Ok(())
}
