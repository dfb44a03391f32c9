//! Where partitions' logs end, for consumer lag: after a Produce request's append (its
//! response's base offset plus the records it carried), and what a ListOffsets request for the
//! latest offset was told (consumers ask it when they start, lag tools all the time). Both
//! responses are small and read whole (see `whole_reads`), only when an observer follows log ends.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, ProduceResponse, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion};

use super::examine::ConnState;
use super::whole_reads::{topic_name, Whole};
use crate::codec::frame::FrameHead;
use crate::codec::walk::{TopicRef, MAX_PARTITIONS};
use crate::codec::{budgeted, Step};
use crate::limits::BucketStore;
use crate::pipeline::facts::Facts;
use crate::pipeline::RequestProgress;

const LIST_OFFSETS: i16 = 2;
/// ListOffsets' "latest" timestamp: the log end.
const LATEST: i64 = -1;

impl ConnState {
    /// A ListOffsets request, read whole when an observer follows log ends: the partitions it
    /// asks the latest offset of (read-uncommitted only: a read-committed client is told the last
    /// stable offset); `Some(step)` while more of it is needed.
    pub(super) fn read_list_offsets_request(
        &mut self,
        p: &mut RequestProgress,
        h: &FrameHead<'_>,
    ) -> Option<Step> {
        let wanted = p.head.api_key == LIST_OFFSETS
            && p.head.api_version >= 1
            && self.pipeline.wants_log_ends();
        let mut body = match self.whole_request(p, h, wanted) {
            Whole::Body(b) => b,
            Whole::Need(step) => return Some(step),
            Whole::Skip => return None,
        };
        let req = budgeted::decode::<ListOffsetsRequest>(&mut body, p.head.api_version)?;
        if req.isolation_level != 0 {
            return None;
        }
        let latest: Vec<(String, i32)> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.timestamp == LATEST)
                    .map(move |p| (t.name.to_string(), p.partition_index))
            })
            .take(MAX_PARTITIONS)
            .collect();
        if !latest.is_empty() {
            p.facts
                .get_or_insert_with(|| Box::new(Facts::default()))
                .latest_asked = latest;
        }
        None
    }
}

/// The log ends a ListOffsets response (`frame`) gave for the partitions asked the latest offset.
pub(super) fn list_offsets_log_ends(
    facts: &Facts,
    frame: &[u8],
    version: i16,
) -> Vec<(String, i32, i64)> {
    let mut buf = Bytes::copy_from_slice(frame);
    let decoded = budgeted::within(buf.len(), || {
        ResponseHeader::decode(&mut buf, ListOffsetsResponse::header_version(version))
            .and_then(|_| ListOffsetsResponse::decode(&mut buf, version))
    });
    let Some(response) = decoded else {
        return Vec::new();
    };
    let mut ends = Vec::new();
    // Sets: a hostile request and response name thousands of partitions each.
    let asked: HashSet<(&str, i32)> = facts
        .latest_asked
        .iter()
        .map(|(t, p)| (t.as_str(), *p))
        .collect();
    for t in &response.topics {
        for p in &t.partitions {
            let asked = asked.contains(&(t.name.as_str(), p.partition_index));
            if asked && p.error_code == 0 && p.offset >= 0 && ends.len() < MAX_PARTITIONS {
                ends.push((t.name.to_string(), p.partition_index, p.offset));
            }
        }
    }
    ends
}

/// Where each partition's log ends after a Produce request's append: the response's base
/// offset plus the records the request carried for it (partitions the broker refused, or that
/// the request walk did not count, give none).
pub(super) fn produce_log_ends(
    facts: &Facts,
    frame: &[u8],
    version: i16,
    store: &dyn BucketStore,
) -> Vec<(String, i32, i64)> {
    let Some(produced) = &facts.produced else {
        return Vec::new();
    };
    let mut buf = Bytes::copy_from_slice(frame);
    let decoded = budgeted::within(buf.len(), || {
        ResponseHeader::decode(&mut buf, ProduceResponse::header_version(version))
            .and_then(|_| ProduceResponse::decode(&mut buf, version))
    });
    let Some(response) = decoded else {
        return Vec::new();
    };
    // Records sent per topic and partition (a topic named twice adds up).
    let mut sent: HashMap<(&TopicRef, i32), u64> = HashMap::new();
    for t in &produced.topics {
        for p in &t.partitions {
            *sent.entry((&t.topic, p.partition)).or_default() += p.records;
        }
    }
    let mut ends = Vec::new();
    for t in &response.responses {
        let topic = if t.name.is_empty() {
            TopicRef::Id(*t.topic_id.as_bytes())
        } else {
            TopicRef::Name(t.name.to_string())
        };
        let Some(name) = topic_name(&topic, store) else {
            continue;
        };
        for p in &t.partition_responses {
            let records = sent.get(&(&topic, p.index)).copied();
            if let (0, Some(records)) = (p.error_code, records) {
                if p.base_offset >= 0 && records > 0 && ends.len() < MAX_PARTITIONS {
                    let end = p
                        .base_offset
                        .saturating_add(i64::try_from(records).unwrap_or(0));
                    ends.push((name.clone(), p.index, end));
                }
            }
        }
    }
    ends
}
