//! A Produce request's layout: topics, partitions and their record sets.

use super::{Cursor, Layout, PartitionRecords, Stop, Walker};

#[derive(Debug, Clone, Copy)]
pub struct ProduceLayout {
    version: i16,
}

impl Walker<ProduceLayout> {
    /// `body_at`: where the body starts (the request header's length); `frame_len` as framed.
    pub fn produce(version: i16, body_at: usize, frame_len: usize) -> Self {
        Walker::new(ProduceLayout { version }, body_at, frame_len)
    }
}

impl Layout for ProduceLayout {
    type Partition = PartitionRecords;

    fn flexible(&self) -> bool {
        self.version >= 9
    }

    fn topic_ids(&self) -> bool {
        self.version >= 13
    }

    fn body(&self, c: &mut Cursor<'_>) -> Result<(), Stop> {
        if self.version >= 3 {
            let _transactional_id = c.string(self.flexible())?;
        }
        let _acks = c.i16()?;
        let _timeout_ms = c.i32()?;
        Ok(())
    }

    fn partition(&self, c: &mut Cursor<'_>) -> Result<(PartitionRecords, usize), Stop> {
        let partition = c.i32()?;
        let len = c.bytes_len(self.flexible())?.unwrap_or(0);
        Ok((
            PartitionRecords {
                partition,
                ..PartitionRecords::default()
            },
            len,
        ))
    }

    fn records(p: &mut PartitionRecords) -> &mut PartitionRecords {
        p
    }

    fn records_of(p: &PartitionRecords) -> &PartitionRecords {
        p
    }
}
