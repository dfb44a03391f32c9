//! What the connection reads of a request for observers, beyond its header: kept in the
//! correlation table with the request until its record is due.

use crate::codec::walk::Walked;

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// A Produce request's topics and records.
    pub produced: Option<Walked>,
    /// An OffsetCommit request's offsets; once its response is read, only the accepted ones.
    pub commits: Option<Commits>,
    /// The consumer group a group request (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) is about.
    pub group: Option<String>,
}
