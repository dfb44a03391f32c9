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

    /// A hint that the reader is about to ask for bytes `start..start + need` in several small
    /// reads, and may want bytes up to `start + ahead` after them: a host where each read is
    /// costly fetches `start..start + ahead` in one go ([`Window`]) unless it already holds the
    /// needed range. `ahead` is bounded by the reader (a frame head, never a frame's body).
    fn prefetch(&mut self, _start: usize, _need: usize, _ahead: usize) {}
}

/// Bytes fetched ahead by [`ByteSource::prefetch`], served to the reads that follow.
#[derive(Debug, Default)]
pub struct Window {
    start: usize,
    bytes: Vec<u8>,
}

impl Window {
    /// Unless the window already holds `start..start + need`, replace it with the bytes at
    /// `start` that `fetch` puts into the given buffer.
    pub fn fill(&mut self, start: usize, need: usize, fetch: impl FnOnce(&mut Vec<u8>) -> bool) {
        if self.holds(start, need) {
            return;
        }
        self.bytes.clear();
        self.start = start;
        if !fetch(&mut self.bytes) {
            self.bytes.clear();
        }
    }

    fn holds(&self, start: usize, len: usize) -> bool {
        start >= self.start
            && start
                .checked_add(len)
                .is_some_and(|end| end <= self.start + self.bytes.len())
    }

    /// Copy `start..start + len` to `out` if the window holds all of it.
    pub fn serve(&self, start: usize, len: usize, out: &mut Vec<u8>) -> bool {
        let Some(from) = start.checked_sub(self.start) else {
            return false;
        };
        match from
            .checked_add(len)
            .and_then(|to| self.bytes.get(from..to))
        {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                true
            }
            None => false,
        }
    }
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

/// A byte source that behaves like the wasm host's (reads are copies, prefetches fill a
/// [`Window`]) and counts what it copies and how many reads it took, for tests and benchmarks
/// that check the pass-through path does not touch record data.
pub struct CountingSource<'a> {
    pub data: &'a [u8],
    /// Bytes copied out of `data`.
    pub copied: usize,
    /// Reads of `data` (each one a host call in the wasm host).
    pub reads: usize,
    window: Window,
}

impl<'a> CountingSource<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            copied: 0,
            reads: 0,
            window: Window::default(),
        }
    }
}

impl ByteSource for CountingSource<'_> {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn copy_into(&mut self, start: usize, len: usize, out: &mut Vec<u8>) -> bool {
        if self.window.serve(start, len, out) {
            return true;
        }
        let ok = self.data.copy_into(start, len, out);
        if ok {
            self.copied += len;
            self.reads += 1;
        }
        ok
    }

    fn prefetch(&mut self, start: usize, need: usize, ahead: usize) {
        let mut data = self.data;
        let mut fetched = false;
        self.window.fill(start, need, |buf| {
            fetched = data.copy_into(start, ahead, buf);
            fetched
        });
        if fetched {
            self.copied += ahead;
            self.reads += 1;
        }
    }
}
