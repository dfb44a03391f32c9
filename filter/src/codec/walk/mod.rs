//! Walkers: read a Produce request's or a Fetch response's structure (topics, partitions,
//! record-batch headers) as the frame streams past, through [`crate::codec::Step::Peek`], without
//! holding or copying its records. Hand-written because decoding these frames with
//! `kafka-protocol` would copy every record; the tests check every walker against
//! `kafka-protocol` on the same bytes.
//!
//! A walker is fed the bytes it asked for and answers with the next range it wants. It keeps at
//! most one field's worth of bytes (a name, a partition's fixed fields, a batch header), so its
//! memory does not grow with the frame; and what it counts is capped ([`MAX_PARTITIONS`]).

mod cursor;
pub mod fetch;
pub mod produce;
mod shape;

pub use cursor::{Cursor, Stop};
pub use fetch::{FetchLayout, FetchPartition};
pub use produce::ProduceLayout;
pub use shape::{Layout, Topic, Walker};

/// A Produce request's walker: topics, and per partition its record set's bytes and records.
pub type ProduceWalker = Walker<ProduceLayout>;
/// A Fetch response's walker: topics, and per partition its offsets, bytes and records.
pub type FetchWalker = Walker<FetchLayout>;

/// Versions the walkers read (those `kafka-protocol` has schemas for, which the tests check).
pub const PRODUCE_VERSIONS: std::ops::RangeInclusive<i16> = 3..=13;
pub const FETCH_VERSIONS: std::ops::RangeInclusive<i16> = 4..=18;
const PRODUCE: i16 = 0;
const FETCH: i16 = 1;

/// Whether a walker reads this request: a Produce request whose header decoded, at a version
/// the walkers know.
pub fn walks_request(api_key: i16, version: i16, header_decoded: bool) -> bool {
    api_key == PRODUCE && header_decoded && PRODUCE_VERSIONS.contains(&version)
}

/// Whether a walker reads the response to this request: a Fetch response, at a version the
/// walkers know.
pub fn walks_response(api_key: i16, version: i16) -> bool {
    api_key == FETCH && FETCH_VERSIONS.contains(&version)
}

/// What a walker wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Frame bytes `at..at + len` (the frame reader cuts them at the frame's end).
    Peek { at: usize, len: usize },
    /// Finished (or given up): the rest of the frame passes unread.
    Done,
}

/// A topic as a frame names it: by name, or by id (Produce v13+, Fetch v13+).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Name(String),
    Id([u8; 16]),
}

impl TopicRef {
    /// The topic a message names: by its id in the versions that name topics so, by its name
    /// otherwise (the message carries both fields; the other is left at its default).
    pub fn named(by_id: bool, name: &str, id: &[u8; 16]) -> Self {
        if by_id {
            TopicRef::Id(*id)
        } else {
            TopicRef::Name(name.to_string())
        }
    }
}

/// A topic id in hex, as labels, keys and log lines show it.
pub fn id_hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A topic's share of a frame: its record sets' bytes and records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCount {
    pub topic: TopicRef,
    pub bytes: u64,
    pub records: u64,
    /// Its partitions, in frame order.
    pub partitions: Vec<PartitionSummary>,
}

/// What a walk keeps of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSummary {
    pub partition: i32,
    pub records: u64,
    /// Its log end (a Fetch response's high watermark, when it answered without an error).
    pub end: Option<i64>,
    /// Its last stable offset (Fetch v4+, likewise).
    pub stable_end: Option<i64>,
    /// The offset after the last batch a Fetch response carried for it (0: none, or unknown).
    pub next_offset: i64,
    /// The error a Fetch response gave it (0: none; always 0 in a Produce request).
    pub error_code: i16,
}

/// What a walk found, per topic in frame order (a topic named twice is listed twice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walked {
    pub topics: Vec<TopicCount>,
    /// False when the walk stopped early: the counts are those of the part walked.
    pub complete: bool,
}

/// One partition's records in a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionRecords {
    pub partition: i32,
    /// Bytes of its record set (batch headers included).
    pub bytes: u64,
    /// Records, from the batch headers (a compressed batch counts what it holds).
    pub records: u64,
    /// The offset after its last batch (base offset + last offset delta + 1), where the batch
    /// headers carry offsets (Fetch); 0 when unknown.
    pub next_offset: i64,
}

/// Past this many partitions in one frame a walker stops counting (marked incomplete): a hostile
/// frame's partition count is bounded by its bytes, not by what is worth keeping per request.
pub const MAX_PARTITIONS: usize = 4096;
/// Bytes asked for at a time when a field's length is not known yet: one host read usually
/// covers a partition's fixed fields and its first batch header.
const READ_AHEAD: usize = 256;
/// A field the walker must hold whole (a topic name, a run of tagged fields): no larger.
const MAX_HELD: usize = 64 * 1024;
/// A record batch header (magic 2) up to and including its record count.
pub const BATCH_HEADER: usize = 61;

/// Bytes of the frame a walker holds: a contiguous run starting at frame offset `at`.
#[derive(Debug, Default)]
struct Held {
    at: usize,
    bytes: Vec<u8>,
    /// The frame's length: nothing can be asked for past it.
    frame_len: usize,
}

impl Held {
    fn new(frame_len: usize) -> Self {
        Self {
            at: 0,
            bytes: Vec::new(),
            frame_len,
        }
    }

    /// Take bytes shown at `at` (right after those held, or after a skip).
    fn take(&mut self, at: usize, bytes: &[u8]) {
        if at != self.at + self.bytes.len() {
            self.bytes.clear();
            self.at = at;
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// The held bytes from frame offset `from`, if it lies in them.
    fn from(&self, from: usize) -> Option<&[u8]> {
        self.bytes.get(from.checked_sub(self.at)?..)
    }

    /// Ask for what parsing at `from` lacks. `None` when there is nothing more (the frame ends
    /// first: it is cut short) or it would hold more than [`MAX_HELD`].
    fn want_more(&mut self, from: usize) -> Option<Want> {
        let end = self.at + self.bytes.len();
        if from >= end {
            self.bytes.clear();
            self.at = from;
            return (from < self.frame_len).then_some(Want::Peek {
                at: from,
                len: READ_AHEAD,
            });
        }
        let drop = (from - self.at).min(self.bytes.len());
        self.bytes.drain(..drop);
        self.at = from;
        if self.bytes.len() >= MAX_HELD || end >= self.frame_len {
            return None;
        }
        Some(Want::Peek {
            at: end,
            len: READ_AHEAD.max(self.bytes.len()),
        })
    }
}

/// How a record set's batches are counted: from the batch at `at` to the set's `end`.
#[derive(Debug, Clone, Copy)]
pub struct Batches {
    at: usize,
    end: usize,
}

impl Batches {
    /// The record set of `len` bytes at `start`, if the frame holds it.
    fn new(start: usize, len: usize, frame_len: usize) -> Result<Self, Stop> {
        let end = start.checked_add(len).ok_or(Stop::Invalid)?;
        if end > frame_len {
            return Err(Stop::Invalid);
        }
        Ok(Self { at: start, end })
    }

    fn done(&self) -> bool {
        self.at >= self.end
    }

    /// Count the batch at the start of `buf` into `p`; the batches after it.
    fn count(self, buf: &[u8], p: &mut PartitionRecords) -> Result<Self, Stop> {
        let room = self.end - self.at;
        let header = buf.get(..BATCH_HEADER.min(room)).ok_or(Stop::Short)?;
        let (records, next_offset, size) = match read_batch(header, room) {
            // A header cut by the record set's end: nothing more to count in it.
            Err(Stop::Short) => (0, 0, room),
            other => other?,
        };
        p.records = p.records.saturating_add(records);
        if next_offset > 0 {
            p.next_offset = next_offset;
        }
        Ok(Self {
            at: self.at + size.max(1),
            end: self.end,
        })
    }
}

/// What reading one batch header at the start of `buf` gives: records, the offset after the
/// batch, and where the next batch starts (relative to the header). `Err(Stop::Short)`: more
/// bytes are needed; a batch that does not fit its record set is invalid.
fn read_batch(buf: &[u8], room: usize) -> Result<(u64, i64, usize), Stop> {
    let mut c = Cursor::new(buf);
    let base_offset = c.i64()?;
    let length = c.i32()?;
    let length = usize::try_from(length).map_err(|_| Stop::Invalid)?;
    let total = length.checked_add(12).ok_or(Stop::Invalid)?;
    if total > room {
        // The last batch of a fetched record set may be cut off by the broker's size limit:
        // what remains is not a batch to count.
        return Ok((0, 0, room));
    }
    let _leader_epoch = c.i32()?;
    let magic = c.i8()?;
    if magic < 2 {
        // A legacy message (magic 0 or 1): one record, or one compressed wrapper counted as one.
        return Ok((1, base_offset.saturating_add(1), total));
    }
    let _crc = c.i32()?;
    let _attributes = c.i16()?;
    let last_offset_delta = c.i32()?;
    c.skip(8 + 8 + 8 + 2 + 4)?;
    let records = c.i32()?;
    let next = base_offset
        .saturating_add(i64::from(last_offset_delta))
        .saturating_add(1);
    Ok((u64::try_from(records).unwrap_or(0), next, total))
}
