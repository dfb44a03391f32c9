//! What the connection reads of a request for observers, beyond its header: kept in the
//! correlation table with the request until its record is due.

use crate::codec::walk::{TopicRef, Walked};

/// Offsets a consumer group commits (an OffsetCommit request), as far as they are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commits {
    pub group: String,
    pub offsets: Vec<CommittedOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Where a Fetch request asks to read from (the consumer's position per partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPositions {
    /// `isolation_level` 1: the consumer reads up to the last stable offset.
    pub read_committed: bool,
    /// KIP-227: -1 a fetch without a session, 0 a full fetch opening one, above 0 an incremental
    /// fetch that lists only what changed.
    pub session_epoch: i32,
    /// The partitions listed, with their fetch offsets.
    pub partitions: Vec<(TopicRef, i32, i64)>,
    /// Partitions an incremental fetch takes out of its session.
    pub forgotten: Vec<(TopicRef, i32)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// A Produce request's topics and records.
    pub produced: Option<Walked>,
    /// An OffsetCommit request's offsets; once its response is read, only the accepted ones.
    pub commits: Option<Commits>,
    /// The consumer group a group request (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) is about.
    pub group: Option<String>,
    /// A Fetch request's positions.
    pub fetch: Option<FetchPositions>,
    /// Where partitions' logs end after a Produce request's append (topic, partition, end),
    /// from its response's base offsets and the records it carried.
    pub log_ends: Vec<(String, i32, i64)>,
    /// The partitions a ListOffsets request asks the latest offset (the log end) of.
    pub latest_asked: Vec<(String, i32)>,
}
