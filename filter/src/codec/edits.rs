//! What a holding frame reader forwards instead of the chunk that came in: drops and inserts in
//! chunk order, applied by the host as one replacement of its buffer's prefix.

use super::source::ByteSource;

/// How the forwarded chunk differs from the chunk that came in, in chunk order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Edits {
    pub ops: Vec<Edit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Leave out bytes `from..to` of the chunk.
    Drop { from: usize, to: usize },
    /// Forward `bytes` at this position of the chunk.
    Insert { at: usize, bytes: Vec<u8> },
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn clear(&mut self) {
        self.ops.clear();
    }

    pub(super) fn drop_range(&mut self, from: usize, to: usize) {
        if to > from {
            self.ops.push(Edit::Drop { from, to });
        }
    }

    pub(super) fn insert(&mut self, at: usize, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.ops.push(Edit::Insert { at, bytes });
        }
    }

    /// The forwarded form of the chunk's first `prefix_len` bytes, where `prefix_len` is the
    /// end of the last edit; the rest of the chunk is forwarded as it is. `None` if there are no
    /// edits, or if the source could not provide the kept bytes. Inserted bytes are moved, not
    /// copied, when nothing comes before them (a replaced frame at the start of a chunk).
    pub fn apply<S: ByteSource + ?Sized>(&mut self, src: &mut S) -> Option<(usize, Vec<u8>)> {
        if self.ops.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        let mut cursor = 0usize;
        for op in &mut self.ops {
            let (keep_to, next) = match op {
                Edit::Drop { from, to } => (*from, *to),
                Edit::Insert { at, .. } => (*at, *at),
            };
            if keep_to > cursor && !src.copy_into(cursor, keep_to - cursor, &mut out) {
                return None;
            }
            if let Edit::Insert { bytes, .. } = op {
                if out.is_empty() {
                    out = std::mem::take(bytes);
                } else {
                    out.extend_from_slice(bytes);
                }
            }
            cursor = cursor.max(next);
        }
        Some((cursor, out))
    }
}
