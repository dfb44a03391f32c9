//! Small frames read whole for observers: a Metadata response for its topic ids (names for
//! topics fetched by id), an OffsetCommit request for the offsets a group commits and its
//! response for which of them the broker accepted. Read only when an observer wants them, and
//! only up to [`MAX_WHOLE_BYTES`]; they pass unchanged and are never held.

use std::collections::HashSet;

use bytes::Bytes;
use kafka_protocol::messages::{
    MetadataResponse, OffsetCommitRequest, OffsetCommitResponse, ResponseHeader,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion};

use super::examine::ConnState;
use super::log_ends::{list_offsets_log_ends, produce_log_ends};
use super::walking::ResponseWalk;
use crate::codec::frame::{FrameHead, HEAD_WINDOW, MAX_HEAD_BYTES};
use crate::codec::inflight::Inflight;
use crate::codec::walk::{id_hex, TopicRef, MAX_PARTITIONS};
use crate::codec::{budgeted, Step};
use crate::limits::BucketStore;
use crate::metrics::MetricsSink;
use crate::pipeline::facts::{Commits, CommittedOffset, Facts};
use crate::pipeline::RequestProgress;

const PRODUCE: i16 = 0;
const LIST_OFFSETS: i16 = 2;
const METADATA: i16 = 3;
const OFFSET_COMMIT: i16 = 8;
const TXN_OFFSET_COMMIT: i16 = 28;
/// Topic ids appear in Metadata v10.
const METADATA_TOPIC_IDS: i16 = 10;
/// Read whole up to this size: a cluster of a thousand topics or so, a commit of a few thousand
/// partitions. In a larger Metadata response topics fetched by id keep their id as label; a
/// larger commit is not followed.
const MAX_WHOLE_BYTES: usize = MAX_HEAD_BYTES;

/// A request an observer reads whole: its body once all of it is shown, or the step that
/// collects it, or nothing (not wanted, too large, or no room).
pub(super) enum Whole {
    Body(Bytes),
    Need(Step),
    Skip,
}

impl ConnState {
    /// Read a request whole if `wanted` (by an observer): up to [`MAX_WHOLE_BYTES`], collected in
    /// the VM and counted in its held-bytes budget like a held frame (when that is used up, the
    /// request passes unread).
    pub(super) fn whole_request(
        &mut self,
        p: &RequestProgress,
        h: &FrameHead<'_>,
        wanted: bool,
    ) -> Whole {
        let head = &p.head;
        if !wanted || !head.header_decoded || !head.version_known || h.frame_len > MAX_WHOLE_BYTES {
            return Whole::Skip;
        }
        if h.prefix.len() < h.frame_len && !h.last_look() {
            if h.frame_len > HEAD_WINDOW && !self.held_request.take(&self.budget, h.frame_len) {
                return Whole::Skip;
            }
            return Whole::Need(Step::Need(h.frame_len));
        }
        Whole::Body(Bytes::copy_from_slice(
            h.prefix.get(head.header_len..).unwrap_or_default(),
        ))
    }

    /// An OffsetCommit or TxnOffsetCommit request is read whole when an observer follows
    /// commits; `Some(step)` while more of it is needed.
    pub(super) fn read_commit_request(
        &mut self,
        p: &mut RequestProgress,
        h: &FrameHead<'_>,
    ) -> Option<Step> {
        let wanted = matches!(p.head.api_key, OFFSET_COMMIT | TXN_OFFSET_COMMIT)
            && self.pipeline.wants_commits();
        let mut buf = match self.whole_request(p, h, wanted) {
            Whole::Body(b) => b,
            Whole::Need(step) => return Some(step),
            Whole::Skip => return None,
        };
        let head = &p.head;
        // OffsetCommit and TxnOffsetCommit ask alike: a group, per topic, per partition, an offset.
        macro_rules! commits {
            ($request:ty) => {
                budgeted::decode::<$request>(&mut buf, head.api_version).map(|req| Commits {
                    offsets: offsets(req.topics.iter().flat_map(|t| {
                        t.partitions
                            .iter()
                            .map(|p| (t.name.as_str(), p.partition_index, p.committed_offset))
                    })),
                    group: req.group_id.to_string(),
                })
            };
        }
        let commits = if head.api_key == OFFSET_COMMIT {
            commits!(OffsetCommitRequest)
        } else {
            commits!(TxnOffsetCommitRequest)
        };
        let Some(commits) = commits else {
            log::debug!(
                "connection {}: an offset commit request (API key {}) did not decode; not followed",
                self.id,
                head.api_key
            );
            return None;
        };
        p.facts = Some(Box::new(Facts {
            commits: Some(commits),
            ..Facts::default()
        }));
        None
    }

    /// Start reading a response whole if an observer wants it (its record then waits); `Err`
    /// gives the request back otherwise.
    pub(super) fn start_whole_read(
        &mut self,
        request: Inflight,
        latency_us: u64,
        h: &FrameHead<'_>,
        m: &mut dyn MetricsSink,
    ) -> Result<Step, Inflight> {
        let wanted = match request.api_key {
            METADATA => request.api_version >= METADATA_TOPIC_IDS && self.pipeline.wants_topics(),
            OFFSET_COMMIT | TXN_OFFSET_COMMIT => {
                request.facts.as_ref().is_some_and(|f| f.commits.is_some())
            }
            PRODUCE => {
                self.pipeline.wants_log_ends()
                    && request.facts.as_ref().is_some_and(|f| f.produced.is_some())
            }
            LIST_OFFSETS => request
                .facts
                .as_ref()
                .is_some_and(|f| !f.latest_asked.is_empty()),
            _ => false,
        };
        if !wanted || h.frame_len > MAX_WHOLE_BYTES {
            return Err(request);
        }
        // Collected in the VM: counted in its held-bytes budget (given back when read).
        if h.frame_len > HEAD_WINDOW && !self.held_response.take(&self.budget, h.frame_len) {
            return Err(request);
        }
        self.walking_response = Some(ResponseWalk {
            request,
            latency_us,
            response_bytes: h.frame_len.saturating_add(4),
            walker: None,
            now_ns: 0,
            shift: 0,
        });
        Ok(self.whole_read(h.prefix, h.last_look(), m))
    }

    /// Whether the response being examined is one read whole.
    pub(super) fn reading_whole(&self) -> bool {
        self.walking_response
            .as_ref()
            .is_some_and(|w| w.walker.is_none())
    }

    /// A response being read whole, shown again with more of it: once whole (or as much as
    /// there will be), what it says is kept and its record is due.
    pub(super) fn whole_read(
        &mut self,
        prefix: &[u8],
        last_look: bool,
        m: &mut dyn MetricsSink,
    ) -> Step {
        let Some(w) = self.walking_response.as_mut() else {
            return Step::Done;
        };
        let frame_len = w.response_bytes - 4;
        if prefix.len() < frame_len && !last_look {
            return Step::Need(frame_len);
        }
        let version = w.request.api_version;
        match w.request.api_key {
            METADATA => learn_topic_ids(prefix, version, &*self.store),
            PRODUCE => {
                if let Some(f) = w.request.facts.as_mut() {
                    f.log_ends = produce_log_ends(f, prefix, version, &*self.store);
                }
            }
            LIST_OFFSETS => {
                if let Some(f) = w.request.facts.as_mut() {
                    f.log_ends = list_offsets_log_ends(f, prefix, version);
                }
            }
            api @ (OFFSET_COMMIT | TXN_OFFSET_COMMIT) => {
                if let Some(commits) = w.request.facts.as_mut().and_then(|f| f.commits.as_mut()) {
                    keep_accepted(commits, api, prefix, version);
                }
            }
            _ => {}
        }
        self.end_response_walk(m);
        Step::Done
    }
}

/// The key a topic id's name is kept under in the shared store.
pub fn topic_id_key(id: &[u8; 16]) -> String {
    format!("topic-id/{}", id_hex(id))
}

/// A topic's name: as the frame gave it, or the one a Metadata response gave its id.
pub fn topic_name(topic: &TopicRef, store: &dyn BucketStore) -> Option<String> {
    match topic {
        TopicRef::Name(n) => Some(n.clone()),
        TopicRef::Id(id) => store.recall(&topic_id_key(id)),
    }
}

/// Remember the name of every topic a Metadata response (`frame`: after its size field) names
/// with an id.
fn learn_topic_ids(frame: &[u8], version: i16, store: &dyn BucketStore) {
    let mut buf = Bytes::copy_from_slice(frame);
    let decoded = budgeted::within(buf.len(), || {
        ResponseHeader::decode(&mut buf, MetadataResponse::header_version(version))
            .and_then(|_| MetadataResponse::decode(&mut buf, version))
    });
    let Some(metadata) = decoded else {
        log::debug!("a Metadata v{version} response did not decode; its topic ids are not learned");
        return;
    };
    for t in &metadata.topics {
        if let Some(name) = &t.name {
            if !t.topic_id.is_nil() {
                store.remember(&topic_id_key(t.topic_id.as_bytes()), name.as_str());
            }
        }
    }
}

/// The offsets of a commit request, at most [`MAX_PARTITIONS`] of them.
fn offsets<'a>(all: impl Iterator<Item = (&'a str, i32, i64)>) -> Vec<CommittedOffset> {
    all.take(MAX_PARTITIONS)
        .map(|(topic, partition, offset)| CommittedOffset {
            topic: topic.to_string(),
            partition,
            offset,
        })
        .collect()
}

/// Keep only the commits the OffsetCommit or TxnOffsetCommit response (`frame`) accepted
/// (error code 0); none if it does not decode. A transaction's commits count once its
/// TxnOffsetCommit is accepted, before the transaction ends (a transaction that aborts later
/// leaves them counted until the group's next commit).
fn keep_accepted(commits: &mut Commits, api: i16, frame: &[u8], version: i16) {
    let mut buf = Bytes::copy_from_slice(frame);
    // A set: a hostile commit names thousands of partitions in the request and the response.
    // OffsetCommit and TxnOffsetCommit answer alike: per topic, per partition, an error code.
    macro_rules! accepted {
        ($response:ty) => {
            budgeted::within(buf.len(), || {
                ResponseHeader::decode(&mut buf, <$response>::header_version(version))
                    .and_then(|_| <$response>::decode(&mut buf, version))
            })
            .map(|r| {
                r.topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .filter(|p| p.error_code == 0)
                            .map(|p| (t.name.to_string(), p.partition_index))
                    })
                    .collect::<HashSet<_>>()
            })
        };
    }
    let accepted = if api == OFFSET_COMMIT {
        accepted!(OffsetCommitResponse)
    } else {
        accepted!(TxnOffsetCommitResponse)
    };
    let Some(accepted) = accepted else {
        commits.offsets.clear();
        return;
    };
    commits
        .offsets
        .retain(|c| accepted.contains(&(c.topic.clone(), c.partition)));
}
