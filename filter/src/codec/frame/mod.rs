//! Incremental framing of size-prefixed Kafka frames over arbitrary TCP chunks.
//!
//! Every Kafka request and response is an `int32` size followed by that many bytes. The reader
//! collects only a frame's first bytes (as many as the caller's examiner asks for, typically the
//! header) and then skips the rest of the frame without reading it, so the cost per frame does not
//! grow with record size. State survives between chunks: any split of the stream gives the same
//! result.
//!
//! A reader may also *hold* frames (for connections whose frames may be rewritten): bytes of a
//! frame that is not yet decided are kept out of the forwarded stream, and an examiner may ask
//! for a whole frame and replace it. What to forward is then described by [`Edits`] on the
//! chunk, which the host applies as one prefix replacement of its buffer.

pub use super::edits::{Edit, Edits};
use super::source::ByteSource;
pub use step::{FrameError, FrameHead, Peeked, Step, HEAD_WINDOW, MAX_HEAD_BYTES};

mod decide;
mod peek;
mod step;

#[derive(Debug)]
enum State {
    /// Reading the 4-byte size field; `size_buf` holds what has arrived.
    Size,
    /// Collecting the first `want` bytes of a frame of `frame_len` bytes into `head`.
    Head { frame_len: usize, want: usize },
    /// Skipping the rest of the current frame.
    Skip { remaining: usize },
    /// Holding the whole frame of `frame_len` bytes in `head`.
    Collect { frame_len: usize },
    /// Leaving out the rest of a discarded frame.
    Drop { remaining: usize },
    /// Passing a decided frame while collecting bytes `at..at + len` into `head`, which holds
    /// the frame's bytes from offset `held_from` on; `pos` is the frame offset of the next byte
    /// of the stream.
    Peek {
        frame_len: usize,
        pos: usize,
        held_from: usize,
        at: usize,
        len: usize,
    },
    /// A framing error happened; the stream is no longer interpreted.
    Failed(FrameError),
}

/// A frame held whole (a multi-topic Produce, a large Metadata response) grows the head buffer
/// to its size; past this the buffer is freed once the frame is decided, so a connection that
/// once carried a large frame does not keep its size in the VM for the rest of its life.
const RETAINED_HEAD_BYTES: usize = 4 * HEAD_WINDOW;

#[derive(Debug)]
pub struct FrameReader {
    state: State,
    size_buf: Vec<u8>,
    head: Vec<u8>,
    first_want: usize,
    max_frame: usize,
    /// Hold undecided frames out of the forwarded stream (see the module docs).
    hold: bool,
    /// Where the current frame began in the current chunk; `None` if in an earlier one.
    frame_start: Option<usize>,
    /// Bytes of the current frame held back from earlier chunks (its first bytes).
    carried: usize,
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
            hold: false,
            frame_start: None,
            carried: 0,
        }
    }

    /// Switch holding on (see the module docs).
    pub fn set_hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// If the whole next chunk of `len` bytes lies inside the body of the current frame (up to
    /// its last byte), account for it without touching it and return true. The common case for
    /// large requests and responses: their records pass in many chunks, each costing only this.
    #[inline(always)]
    pub fn skip_within_frame(&mut self, len: usize) -> bool {
        match &mut self.state {
            State::Skip { remaining } if *remaining > len => {
                *remaining -= len;
                true
            }
            State::Skip { remaining } if *remaining == len => {
                // The chunk ends with the frame: the next one starts at a boundary.
                self.state = State::Size;
                true
            }
            _ => false,
        }
    }

    /// True between frames (no partial frame pending).
    /// A frame has begun whose head has not been shown to the examiner yet (its size field or
    /// its first bytes are still arriving).
    pub fn awaiting_head(&self) -> bool {
        match self.state {
            State::Size => !self.size_buf.is_empty(),
            State::Head { .. } => true,
            _ => false,
        }
    }

    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Size) && self.size_buf.is_empty()
    }

    /// Feed the next chunk of the stream. `examine` is called once or more per frame with the
    /// frame's first bytes; frames are reported in stream order.
    pub fn feed<S, F>(&mut self, src: &mut S, examine: F) -> Result<(), FrameError>
    where
        S: ByteSource + ?Sized,
        F: FnMut(&FrameHead<'_>) -> Step,
    {
        let mut edits = Edits::default();
        self.feed_editing(src, examine, &mut edits)
    }

    /// [`Self::feed`] that also reports how the forwarded chunk differs from `src` (only a
    /// holding reader ever edits).
    pub fn feed_editing<S, F>(
        &mut self,
        src: &mut S,
        mut examine: F,
        edits: &mut Edits,
    ) -> Result<(), FrameError>
    where
        S: ByteSource + ?Sized,
        F: FnMut(&FrameHead<'_>) -> Step,
    {
        let total = src.len();
        self.frame_start = None;
        let result = self.feed_frames(src, &mut examine, edits, total);
        if self.hold {
            match result {
                Ok(()) if self.undecided() => {
                    // Hold what has arrived of an undecided frame until it is decided.
                    let from = self.frame_start.unwrap_or(0);
                    edits.drop_range(from, total);
                    self.carried += total - from;
                }
                Ok(()) => {}
                // The stream is no longer framed: give back what was held; the caller's policy
                // decides what happens to the rest.
                Err(_) => self.release_carried(edits),
            }
        }
        result
    }

    fn feed_frames<S, F>(
        &mut self,
        src: &mut S,
        examine: &mut F,
        edits: &mut Edits,
        total: usize,
    ) -> Result<(), FrameError>
    where
        S: ByteSource + ?Sized,
        F: FnMut(&FrameHead<'_>) -> Step,
    {
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
                State::Drop { remaining } => {
                    let n = remaining.min(avail);
                    edits.drop_range(pos, pos + n);
                    pos += n;
                    self.state = if remaining == n {
                        State::Size
                    } else {
                        State::Drop {
                            remaining: remaining - n,
                        }
                    };
                }
                State::Size => {
                    if self.size_buf.is_empty() {
                        self.frame_start = Some(pos);
                        // Size field and header in one read, with the frames that follow when
                        // they are small: a read costs the host far more than the bytes do.
                        src.prefetch(
                            pos,
                            (4 + self.first_want).min(avail),
                            HEAD_WINDOW.max(4 + self.first_want).min(avail),
                        );
                    }
                    let n = (4 - self.size_buf.len()).min(avail);
                    if !src.copy_into(pos, n, &mut self.size_buf) {
                        return self.fail(FrameError::HostRead);
                    }
                    pos += n;
                    if let Ok(size) = <[u8; 4]>::try_from(self.size_buf.as_slice()) {
                        self.start_frame(i32::from_be_bytes(size), examine, edits, pos)?;
                    }
                }
                State::Head { frame_len, want } => {
                    if self.fill_head(src, &mut pos, avail, want)? {
                        self.examine_head(frame_len, false, examine, edits, pos);
                    }
                }
                State::Collect { frame_len } => {
                    if self.fill_head(src, &mut pos, avail, frame_len)? {
                        self.examine_head(frame_len, true, examine, edits, pos);
                    }
                }
                State::Peek {
                    frame_len,
                    pos: at_frame,
                    held_from,
                    at,
                    len,
                } => {
                    let (at_frame, held_from) = if at_frame < at {
                        // Not wanted: passed without a look.
                        let n = (at - at_frame).min(avail);
                        pos += n;
                        (at_frame + n, at_frame + n)
                    } else {
                        let n = (at + len - at_frame).min(avail);
                        if !src.copy_into(pos, n, &mut self.head) {
                            return self.fail(FrameError::HostRead);
                        }
                        pos += n;
                        (at_frame + n, held_from)
                    };
                    self.state = State::Peek {
                        frame_len,
                        pos: at_frame,
                        held_from,
                        at,
                        len,
                    };
                    self.settle_peek(examine);
                }
            }
        }
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Copy the chunk's bytes at `pos` into `head` until it holds `want` bytes or the chunk
    /// ends; true once it holds them.
    fn fill_head<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        pos: &mut usize,
        avail: usize,
        want: usize,
    ) -> Result<bool, FrameError> {
        let n = want.saturating_sub(self.head.len()).min(avail);
        if !src.copy_into(*pos, n, &mut self.head) {
            self.fail(FrameError::HostRead)?;
        }
        *pos += n;
        Ok(self.head.len() == want)
    }

    /// In the middle of a frame that is not decided yet (or being collected).
    fn undecided(&self) -> bool {
        match self.state {
            State::Size => !self.size_buf.is_empty(),
            State::Head { .. } | State::Collect { .. } => true,
            State::Skip { .. } | State::Drop { .. } | State::Peek { .. } | State::Failed(_) => {
                false
            }
        }
    }

    /// The current frame passes unchanged: forward its first bytes, held back from earlier
    /// chunks, at the start of this chunk where they belong.
    fn release_carried(&mut self, edits: &mut Edits) {
        if self.carried == 0 {
            return;
        }
        let mut bytes = Vec::with_capacity(self.carried);
        bytes.extend_from_slice(&self.size_buf);
        bytes.extend_from_slice(&self.head);
        bytes.truncate(self.carried);
        edits.insert(0, bytes);
        self.carried = 0;
    }

    /// Forward `bytes` instead of everything seen of the current frame (its size field and
    /// `head`): what this chunk holds of it is left out, what earlier chunks held is dropped.
    fn replace_seen(&mut self, edits: &mut Edits, pos: usize, bytes: Vec<u8>) {
        edits.drop_range(self.frame_start.unwrap_or(0), pos);
        edits.insert(pos, bytes);
        self.carried = 0;
        self.size_buf.clear();
    }

    fn fail(&mut self, e: FrameError) -> Result<(), FrameError> {
        self.state = State::Failed(e.clone());
        Err(e)
    }

    /// Skip what is left of a frame after offset `pos`.
    fn pass_rest(frame_len: usize, pos: usize) -> State {
        if pos >= frame_len {
            State::Size
        } else {
            State::Skip {
                remaining: frame_len - pos,
            }
        }
    }

    fn release_head(&mut self) {
        if self.head.capacity() > RETAINED_HEAD_BYTES {
            self.head = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests;
