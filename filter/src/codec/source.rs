//! Access to the bytes of one chunk of a TCP stream without copying all of it.

/// One chunk of stream data as the host holds it. The core asks only for the byte ranges it needs
/// (frame sizes and headers), so record data stays in the host's buffer and is never copied in.
pub trait ByteSource {
    /// Number of bytes in this chunk.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append bytes `start..start + len` of this chunk to `out`. Returns false if the host could
    /// not provide them (the caller then treats the stream as unreadable).
    fn copy_into(&mut self, start: usize, len: usize, out: &mut Vec<u8>) -> bool;
}

impl ByteSource for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn copy_into(&mut self, start: usize, len: usize, out: &mut Vec<u8>) -> bool {
        match start.checked_add(len).and_then(|end| self.get(start..end)) {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

/// A byte source that counts how many bytes were copied out of it, for tests and benchmarks that
/// check the pass-through path does not touch record data.
pub struct CountingSource<'a> {
    pub data: &'a [u8],
    pub copied: usize,
}

impl<'a> CountingSource<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, copied: 0 }
    }
}

impl ByteSource for CountingSource<'_> {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn copy_into(&mut self, start: usize, len: usize, out: &mut Vec<u8>) -> bool {
        let ok = self.data.copy_into(start, len, out);
        if ok {
            self.copied += len;
        }
        ok
    }
}
