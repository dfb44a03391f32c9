//! A Fetch response's layout: topics, partitions with their offsets, and their record sets.

use super::{Cursor, Layout, PartitionRecords, Stop, Walker};

/// One partition of a Fetch response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchPartition {
    pub records: PartitionRecords,
    pub error_code: i16,
    pub high_watermark: i64,
    /// -1 where the version has none (before v4).
    pub last_stable_offset: i64,
    /// -1 where the version has none (before v5).
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct FetchLayout {
    version: i16,
}

impl Walker<FetchLayout> {
    /// `body_at`: just after the correlation id (in flexible versions the response header's
    /// tagged fields are read as the body's first field).
    pub fn fetch(version: i16, body_at: usize, frame_len: usize) -> Self {
        Walker::new(FetchLayout { version }, body_at, frame_len)
    }
}

impl Layout for FetchLayout {
    type Partition = FetchPartition;

    fn flexible(&self) -> bool {
        self.version >= 12
    }

    fn topic_ids(&self) -> bool {
        self.version >= 13
    }

    fn body(&self, c: &mut Cursor<'_>) -> Result<(), Stop> {
        if self.flexible() {
            c.tagged_fields()?;
        }
        if self.version >= 1 {
            let _throttle_time_ms = c.i32()?;
        }
        if self.version >= 7 {
            let _error_code = c.i16()?;
            let _session_id = c.i32()?;
        }
        Ok(())
    }

    fn partition(&self, c: &mut Cursor<'_>) -> Result<(FetchPartition, usize), Stop> {
        let (v, flexible) = (self.version, self.flexible());
        let mut p = FetchPartition {
            records: PartitionRecords {
                partition: c.i32()?,
                ..PartitionRecords::default()
            },
            error_code: c.i16()?,
            high_watermark: c.i64()?,
            last_stable_offset: -1,
            log_start_offset: -1,
        };
        if v >= 4 {
            p.last_stable_offset = c.i64()?;
        }
        if v >= 5 {
            p.log_start_offset = c.i64()?;
        }
        if v >= 4 {
            for _ in 0..c.count(flexible)? {
                let _producer_id = c.i64()?;
                let _first_offset = c.i64()?;
                if flexible {
                    c.tagged_fields()?;
                }
            }
        }
        if v >= 11 {
            let _preferred_read_replica = c.i32()?;
        }
        let len = c.bytes_len(flexible)?.unwrap_or(0);
        Ok((p, len))
    }

    fn records(p: &mut FetchPartition) -> &mut PartitionRecords {
        &mut p.records
    }

    fn records_of(p: &FetchPartition) -> &PartitionRecords {
        &p.records
    }

    /// The high watermark, when the partition answered without an error.
    fn log_end(p: &FetchPartition) -> Option<i64> {
        (p.error_code == 0 && p.high_watermark >= 0).then_some(p.high_watermark)
    }

    fn error_code(p: &FetchPartition) -> i16 {
        p.error_code
    }

    /// The last stable offset, when the partition answered without an error (v4+).
    fn stable_end(p: &FetchPartition) -> Option<i64> {
        (p.error_code == 0 && p.last_stable_offset >= 0).then_some(p.last_stable_offset)
    }
}
