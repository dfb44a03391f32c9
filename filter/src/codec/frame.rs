//! Incremental framing of size-prefixed Kafka frames over arbitrary TCP chunks.
//!
//! Every Kafka request and response is an `int32` size followed by that many bytes. The reader
//! collects only a frame's first bytes (as many as the caller's examiner asks for, typically the
//! header) and then skips the rest of the frame without reading it, so the cost per frame does not
//! grow with record size. State survives between chunks: any split of the stream gives the same
//! result.

use super::source::ByteSource;

/// What the examiner wants after looking at a frame's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Collect the frame's first `n` bytes (more than it has now) and ask again.
    Need(usize),
    /// Finished with this frame: skip the rest of it.
    Done,
}

/// A frame the examiner is shown.
#[derive(Debug)]
pub struct FrameHead<'a> {
    /// The frame's size field: bytes after the 4-byte size.
    pub frame_len: usize,
    /// The frame's first bytes (after the size field).
    pub prefix: &'a [u8],
}

impl FrameHead<'_> {
    /// True when the examiner will not be shown more of this frame (the prefix is the whole
    /// frame, or as much as any examiner may collect): it must finish with what it has.
    pub fn last_look(&self) -> bool {
        self.prefix.len() >= self.frame_len || self.prefix.len() >= MAX_HEAD_BYTES
    }
}

/// A stream that can no longer be framed: past this point its bytes cannot be interpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} exceeds max_frame_bytes {max}")]
    Oversized { size: usize, max: usize },
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    #[error("the host could not provide the stream's bytes")]
    HostRead,
}

#[derive(Debug)]
enum State {
    /// Reading the 4-byte size field; `size_buf` holds what has arrived.
    Size,
    /// Collecting the first `want` bytes of a frame of `frame_len` bytes into `head`.
    Head { frame_len: usize, want: usize },
    /// Skipping the rest of the current frame.
    Skip { remaining: usize },
    /// A framing error happened; the stream is no longer interpreted.
    Failed(FrameError),
}

/// Upper bound on how much of one frame an examiner may collect: far above any Kafka header, far
/// below anything that could hurt the VM.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;

#[derive(Debug)]
pub struct FrameReader {
    state: State,
    size_buf: Vec<u8>,
    head: Vec<u8>,
    first_want: usize,
    max_frame: usize,
}

impl FrameReader {
    /// `first_want`: how many bytes of each frame to show the examiner first.
    /// `max_frame`: frames whose size field exceeds this fail the stream.
    pub fn new(first_want: usize, max_frame: usize) -> Self {
        Self {
            state: State::Size,
            size_buf: Vec::with_capacity(4),
            head: Vec::new(),
            first_want,
            max_frame,
        }
    }

    /// If the whole next chunk of `len` bytes lies inside the body of the current frame, account
    /// for it without touching it and return true. The common case for large requests and
    /// responses: their records pass in many chunks, each costing only this.
    pub fn skip_within_frame(&mut self, len: usize) -> bool {
        match &mut self.state {
            State::Skip { remaining } if *remaining > len => {
                *remaining -= len;
                true
            }
            _ => false,
        }
    }

    /// True between frames (no partial frame pending).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Size) && self.size_buf.is_empty()
    }

    /// Feed the next chunk of the stream. `examine` is called once or more per frame with the
    /// frame's first bytes; frames are reported in stream order.
    pub fn feed<S, F>(&mut self, src: &mut S, mut examine: F) -> Result<(), FrameError>
    where
        S: ByteSource + ?Sized,
        F: FnMut(&FrameHead<'_>) -> Step,
    {
        let total = src.len();
        let mut pos = 0usize;
        while pos < total {
            let avail = total - pos;
            match self.state {
                State::Failed(ref e) => return Err(e.clone()),
                State::Skip { remaining } => {
                    let n = remaining.min(avail);
                    pos += n;
                    self.state = if remaining == n {
                        State::Size
                    } else {
                        State::Skip {
                            remaining: remaining - n,
                        }
                    };
                }
                State::Size => {
                    if self.size_buf.is_empty() {
                        // Size field and first header bytes in one read: even when the frame is
                        // shorter, what follows is the next frame's size and header, never records.
                        src.prefetch(pos, (4 + self.first_want).min(avail));
                    }
                    let n = (4 - self.size_buf.len()).min(avail);
                    if !src.copy_into(pos, n, &mut self.size_buf) {
                        return self.fail(FrameError::HostRead);
                    }
                    pos += n;
                    if let Ok(size) = <[u8; 4]>::try_from(self.size_buf.as_slice()) {
                        self.size_buf.clear();
                        self.start_frame(i32::from_be_bytes(size), &mut examine)?;
                    }
                }
                State::Head { frame_len, want } => {
                    let n = (want - self.head.len()).min(avail);
                    if !src.copy_into(pos, n, &mut self.head) {
                        return self.fail(FrameError::HostRead);
                    }
                    pos += n;
                    if self.head.len() == want {
                        self.examine_head(frame_len, &mut examine);
                    }
                }
            }
        }
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn fail(&mut self, e: FrameError) -> Result<(), FrameError> {
        self.state = State::Failed(e.clone());
        Err(e)
    }

    fn start_frame<F>(&mut self, size: i32, examine: &mut F) -> Result<(), FrameError>
    where
        F: FnMut(&FrameHead<'_>) -> Step,
    {
        let frame_len = match usize::try_from(size) {
            Ok(len) => len,
            Err(_) => return self.fail(FrameError::NegativeSize(size)),
        };
        if frame_len > self.max_frame {
            return self.fail(FrameError::Oversized {
                size: frame_len,
                max: self.max_frame,
            });
        }
        self.head.clear();
        if frame_len == 0 {
            // Nothing to collect: show the empty frame and move on.
            examine(&FrameHead {
                frame_len,
                prefix: &[],
            });
            self.state = State::Size;
        } else {
            self.state = State::Head {
                frame_len,
                want: self.first_want.clamp(1, frame_len),
            };
        }
        Ok(())
    }

    fn examine_head<F>(&mut self, frame_len: usize, examine: &mut F)
    where
        F: FnMut(&FrameHead<'_>) -> Step,
    {
        let head = FrameHead {
            frame_len,
            prefix: &self.head,
        };
        let have = self.head.len();
        let last_look = head.last_look();
        let step = examine(&head);
        self.state = match step {
            Step::Need(n) if n > have && !last_look => State::Head {
                frame_len,
                want: n.min(frame_len).min(MAX_HEAD_BYTES),
            },
            _ if have >= frame_len => State::Size,
            _ => State::Skip {
                remaining: frame_len - have,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// Feeds `stream` in the given chunk sizes and returns the prefixes the examiner kept.
    fn run(stream: &[u8], chunks: &[usize], want: usize) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
        let mut reader = FrameReader::new(want, 1 << 20);
        let mut seen = Vec::new();
        let mut pos = 0;
        let mut result = Ok(());
        for &c in chunks.iter().cycle() {
            if pos >= stream.len() {
                break;
            }
            let end = (pos + c.max(1)).min(stream.len());
            let mut chunk = &stream[pos..end];
            result = reader.feed(&mut chunk, |h| {
                seen.push(h.prefix.to_vec());
                Step::Done
            });
            pos = end;
        }
        (seen, result)
    }

    #[test]
    fn every_split_gives_the_same_frames() {
        let mut stream = frame(b"hello world");
        stream.extend(frame(b""));
        stream.extend(frame(b"abc"));
        stream.extend(frame(&[7u8; 300]));
        let (whole, r) = run(&stream, &[stream.len()], 5);
        assert!(r.is_ok());
        assert_eq!(
            whole,
            vec![b"hello".to_vec(), vec![], b"abc".to_vec(), vec![7u8; 5]]
        );
        for split in 1..stream.len() {
            let (parts, r) = run(&stream, &[split, stream.len()], 5);
            assert!(r.is_ok());
            assert_eq!(parts, whole, "split at {split}");
        }
        for size in 1..8 {
            let (parts, _) = run(&stream, &[size], 5);
            assert_eq!(parts, whole, "chunks of {size}");
        }
    }

    #[test]
    fn examiner_can_ask_for_more() {
        let stream = frame(b"0123456789");
        let mut reader = FrameReader::new(2, 1024);
        let mut lens = Vec::new();
        for b in stream.chunks(1) {
            let mut c = b;
            reader
                .feed(&mut c, |h| {
                    lens.push(h.prefix.len());
                    if h.prefix.len() < 6 {
                        Step::Need(6)
                    } else {
                        Step::Done
                    }
                })
                .unwrap();
        }
        assert_eq!(lens, vec![2, 6]);
        assert!(reader.at_boundary());
    }

    #[test]
    fn need_is_capped_at_frame_length() {
        let stream = frame(b"abc");
        let mut reader = FrameReader::new(2, 1024);
        let mut lens = Vec::new();
        reader
            .feed(&mut stream.as_slice(), |h| {
                lens.push((h.prefix.len(), h.last_look()));
                Step::Need(100)
            })
            .unwrap();
        assert_eq!(lens, vec![(2, false), (3, true)]);
        assert!(reader.at_boundary());
    }

    #[test]
    fn oversized_and_negative_sizes_fail_the_stream() {
        let mut reader = FrameReader::new(4, 100);
        let big = 101i32.to_be_bytes();
        assert_eq!(
            reader.feed(&mut big.as_slice(), |_| Step::Done),
            Err(FrameError::Oversized {
                size: 101,
                max: 100
            })
        );
        // Once failed, always failed.
        assert!(reader
            .feed(&mut [0u8; 3].as_slice(), |_| Step::Done)
            .is_err());
        let mut reader = FrameReader::new(4, 100);
        let neg = (-5i32).to_be_bytes();
        assert_eq!(
            reader.feed(&mut neg.as_slice(), |_| Step::Done),
            Err(FrameError::NegativeSize(-5))
        );
    }

    #[test]
    fn skip_within_frame_only_inside_a_body() {
        let stream = frame(&[3u8; 100]);
        let mut reader = FrameReader::new(10, 1024);
        assert!(!reader.skip_within_frame(5));
        reader.feed(&mut &stream[..20], |_| Step::Done).unwrap();
        assert!(reader.skip_within_frame(50));
        // 34 bytes of the frame are left: a chunk reaching its end takes the full path.
        assert!(!reader.skip_within_frame(34));
        reader.feed(&mut &stream[70..], |_| Step::Done).unwrap();
        assert!(reader.at_boundary());
    }

    #[test]
    fn large_frames_are_skipped_not_copied() {
        let body = vec![1u8; 1 << 20];
        let stream = frame(&body);
        let mut src = crate::codec::source::CountingSource::new(&stream);
        let mut reader = FrameReader::new(10, 2 << 20);
        reader.feed(&mut src, |_| Step::Done).unwrap();
        assert_eq!(src.copied, 4 + 10);
    }
}
