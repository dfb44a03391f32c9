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

use bytes::Bytes;

pub use super::edits::{Edit, Edits};
use super::source::ByteSource;

/// What the examiner wants after looking at a frame's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Collect the frame's first `n` bytes (more than it has now) and ask again.
    Need(usize),
    /// Finished with this frame: skip the rest of it (forwarded as it is).
    Done,
    /// Hold the whole frame and show it again once complete (holding readers only; others
    /// treat it as `Done`). Then `Done` forwards it unchanged and `Replace` replaces it.
    Collect,
    /// Forward these bytes (whole frames, size fields included, or nothing) instead of the
    /// collected frame.
    Replace(Vec<u8>),
    /// Forward these bytes instead of the frame's size field and the bytes shown so far, then
    /// the rest of the frame unchanged (holding readers only).
    ReplaceHead(Vec<u8>),
    /// Forward these bytes instead of the whole frame, dropping the rest of it as it streams
    /// through, without holding it (holding readers only).
    Discard(Vec<u8>),
    /// Decided: the frame passes unchanged, never held; show the examiner its bytes
    /// `at..at + len` (offsets after the size field, cut at the frame's end) as they stream
    /// past, in [`FrameHead::peek`]. Ranges must come in frame order: one that starts before
    /// bytes already shown ends the peeking. A range at or past the frame's end shows its end
    /// (no bytes, at the frame's length), once, last. How a frame's records are counted without
    /// reading them: a few bytes of each partition and batch header, the rest skipped.
    Peek { at: usize, len: usize },
}

/// A frame the examiner is shown.
#[derive(Debug)]
pub struct FrameHead<'a> {
    /// The frame's size field: bytes after the 4-byte size.
    pub frame_len: usize,
    /// The frame's first bytes (after the size field).
    pub prefix: &'a [u8],
    /// True when this is the whole frame, collected after [`Step::Collect`].
    pub collected: bool,
    /// The collected frame as shared bytes (when `collected`): a decoder can keep slices of it
    /// instead of copying it again.
    pub shared: Option<&'a Bytes>,
    /// The bytes a [`Step::Peek`] asked for (empty `prefix` then, unless they lie in it).
    pub peek: Option<Peeked<'a>>,
}

/// Bytes of a frame shown after a [`Step::Peek`].
#[derive(Debug, Clone, Copy)]
pub struct Peeked<'a> {
    /// Their offset after the frame's size field.
    pub at: usize,
    /// As many as asked for, fewer only where the frame ends first.
    pub bytes: &'a [u8],
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

/// Upper bound on how much of one frame an examiner may collect: far above any Kafka header, far
/// below anything that could hurt the VM.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;

/// Bytes read from the host in one go at a frame's start: the size field and the header, and
/// the next frames if they are small. Each read is a host call that costs about as much as
/// copying tens of kilobytes (Envoy calls back into the VM to allocate), so one read of up to
/// this many bytes is cheaper than two of a few bytes; and it is bounded, so record data is
/// never copied in proportion to its size.
pub const HEAD_WINDOW: usize = 1024;

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

    /// `pos`: where the frame's body begins in the chunk.
    fn start_frame<F>(
        &mut self,
        size: i32,
        examine: &mut F,
        edits: &mut Edits,
        pos: usize,
    ) -> Result<(), FrameError>
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
            self.examine_head(0, false, examine, edits, pos);
        } else {
            self.state = State::Head {
                frame_len,
                want: self.first_want.clamp(1, frame_len),
            };
        }
        Ok(())
    }

    /// Show the examiner the frame's first bytes (all of them if `collected`) and act on its
    /// answer. `pos`: the chunk position just after the bytes shown.
    fn examine_head<F>(
        &mut self,
        frame_len: usize,
        collected: bool,
        examine: &mut F,
        edits: &mut Edits,
        pos: usize,
    ) where
        F: FnMut(&FrameHead<'_>) -> Step,
    {
        // A collected frame is lent as `Bytes`, without a copy, and taken back after.
        let shared = collected.then(|| Bytes::from(std::mem::take(&mut self.head)));
        let head = FrameHead {
            frame_len,
            prefix: shared.as_deref().unwrap_or(&self.head),
            collected,
            shared: shared.as_ref(),
            peek: None,
        };
        let have = head.prefix.len();
        let last_look = head.last_look();
        let step = examine(&head);
        if let Some(bytes) = shared {
            self.head = match bytes.try_into_mut() {
                Ok(unique) => unique.into(),
                // The examiner kept a slice: the reader needs its own bytes back.
                Err(still_shared) => still_shared.to_vec(),
            };
        }
        let finished = have >= frame_len;
        self.state = match step {
            Step::Need(n) if n > have && !last_look && !collected => {
                // Still undecided: whatever is held stays held.
                self.state = State::Head {
                    frame_len,
                    want: n.min(frame_len).min(MAX_HEAD_BYTES),
                };
                return;
            }
            Step::Collect if self.hold && !collected && !finished => {
                // Room for the whole frame at once: growing by doubling could reserve twice it.
                self.head.reserve_exact(frame_len - have);
                self.state = State::Collect { frame_len };
                return;
            }
            Step::Replace(bytes) if self.hold && (collected || finished) => {
                // The whole frame is in `head`: forward `bytes` instead.
                self.replace_seen(edits, pos, bytes);
                self.state = State::Size;
                self.release_head();
                return;
            }
            Step::ReplaceHead(bytes) if self.hold && !collected => {
                self.replace_seen(edits, pos, bytes);
                self.state = if finished {
                    State::Size
                } else {
                    State::Skip {
                        remaining: frame_len - have,
                    }
                };
                self.release_head();
                return;
            }
            Step::Discard(bytes) if self.hold => {
                self.replace_seen(edits, pos, bytes);
                self.state = if finished {
                    State::Size
                } else {
                    State::Drop {
                        remaining: frame_len - have,
                    }
                };
                self.release_head();
                return;
            }
            Step::Collect if self.hold && !collected => {
                // Already whole: show it again as collected.
                return self.examine_head(frame_len, true, examine, edits, pos);
            }
            Step::Peek { at, len } => {
                // Decided and unchanged, as `Done`; the head shown so far stays for peeks
                // that fall in it.
                self.release_carried(edits);
                self.size_buf.clear();
                self.state = State::Peek {
                    frame_len,
                    pos: have,
                    held_from: 0,
                    at: 0,
                    len: 0,
                };
                self.want_peek(at, len);
                return self.settle_peek(examine);
            }
            _ if finished => State::Size,
            _ => State::Skip {
                remaining: frame_len - have,
            },
        };
        // Decided: the frame passes unchanged.
        self.release_carried(edits);
        self.size_buf.clear();
        self.release_head();
    }

    /// Ask for frame bytes `at..at + len` next (see [`Step::Peek`]); a range out of order or
    /// past the frame ends the peeking.
    fn want_peek(&mut self, want_at: usize, want_len: usize) {
        let State::Peek {
            frame_len,
            pos,
            held_from,
            ..
        } = self.state
        else {
            return;
        };
        if want_at < held_from || (want_len == 0 && want_at < frame_len) {
            self.head.clear();
            self.state = Self::pass_rest(frame_len, pos);
            return;
        }
        let want_at = want_at.min(frame_len);
        let len = want_len.min(frame_len - want_at).min(MAX_HEAD_BYTES);
        // Keep only what the wanted range needs of the bytes held.
        let keep_from = want_at.min(pos);
        self.head
            .drain(..(keep_from - held_from).min(self.head.len()));
        self.state = State::Peek {
            frame_len,
            pos,
            held_from: keep_from,
            at: want_at,
            len,
        };
    }

    /// Show the examiner every wanted range the bytes held already cover.
    fn settle_peek<F>(&mut self, examine: &mut F)
    where
        F: FnMut(&FrameHead<'_>) -> Step,
    {
        while let State::Peek {
            frame_len,
            pos,
            held_from,
            at,
            len,
        } = self.state
        {
            if pos < at + len {
                return;
            }
            let from = at - held_from;
            let step = match self.head.get(from..from + len) {
                Some(bytes) => examine(&FrameHead {
                    frame_len,
                    prefix: &[],
                    collected: false,
                    shared: None,
                    peek: Some(Peeked { at, bytes }),
                }),
                None => Step::Done,
            };
            // Bytes before the end of the range shown are never shown again: every range
            // moves forward, so this loop ends.
            self.head.drain(..(from + len).min(self.head.len()));
            let shown_end = at + len;
            // The frame's end (a range of no bytes at its length) is shown once, last.
            let end_shown = len == 0;
            match step {
                Step::Peek { at, len } if !end_shown => {
                    self.state = State::Peek {
                        frame_len,
                        pos,
                        held_from: shown_end,
                        at: shown_end,
                        len: 0,
                    };
                    self.want_peek(at, len);
                }
                _ => {
                    self.head.clear();
                    self.state = Self::pass_rest(frame_len, pos);
                }
            }
        }
        self.release_head();
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

    /// What one frame's examiner was shown: (offset, bytes) per range.
    type Shown = Vec<(usize, Vec<u8>)>;

    /// Feeds `stream` in chunks to a reader whose examiner peeks at `ranges` of every frame
    /// (then asks for the frame's end); returns per frame what it was shown, and the forwarded
    /// stream.
    fn peek_run(
        stream: &[u8],
        chunks: &[usize],
        want: usize,
        ranges: &[(usize, usize)],
        hold: bool,
    ) -> (Vec<Shown>, Vec<u8>) {
        let mut reader = FrameReader::new(want, 1 << 20);
        reader.set_hold(hold);
        let mut seen: Vec<Shown> = Vec::new();
        let mut forwarded = Vec::new();
        let mut pos = 0;
        for &c in chunks.iter().cycle() {
            if pos >= stream.len() {
                break;
            }
            let end = (pos + c.max(1)).min(stream.len());
            let mut chunk = &stream[pos..end];
            let mut edits = Edits::default();
            reader
                .feed_editing(
                    &mut chunk,
                    |h| {
                        let next = match h.peek {
                            None => {
                                seen.push(Vec::new());
                                0
                            }
                            Some(p) => {
                                let shown = seen.last_mut().unwrap();
                                shown.push((p.at, p.bytes.to_vec()));
                                if p.bytes.is_empty() && p.at == h.frame_len {
                                    return Step::Done;
                                }
                                shown.len()
                            }
                        };
                        match ranges.get(next) {
                            Some(&(at, len)) => Step::Peek { at, len },
                            None => Step::Peek {
                                at: h.frame_len,
                                len: 0,
                            },
                        }
                    },
                    &mut edits,
                )
                .unwrap();
            let mut src = &stream[pos..end];
            match edits.apply(&mut src) {
                Some((prefix, bytes)) => {
                    forwarded.extend_from_slice(&bytes);
                    forwarded.extend_from_slice(&stream[pos + prefix..end]);
                }
                None => forwarded.extend_from_slice(&stream[pos..end]),
            }
            pos = end;
        }
        (seen, forwarded)
    }

    #[test]
    fn peeks_show_the_asked_ranges_whatever_the_chunking() {
        let bodies: Vec<Vec<u8>> = [0usize, 3, 40, 300, 5000]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
        // In the head, across the head's end, far past it, one cut at the frame's end.
        let ranges = [(2, 3), (10, 30), (250, 8), (4990, 50)];
        for want in [1, 8, 64] {
            for chunks in [&[1][..], &[2, 5], &[7], &[64, 3], &[1000], &[stream.len()]] {
                for hold in [false, true] {
                    let (seen, forwarded) = peek_run(&stream, chunks, want, &ranges, hold);
                    assert_eq!(forwarded, stream, "forwarded unchanged");
                    assert_eq!(seen.len(), bodies.len());
                    for (body, shown) in bodies.iter().zip(&seen) {
                        let n = body.len();
                        let mut expect: Vec<(usize, Vec<u8>)> = ranges
                            .iter()
                            .take_while(|(at, _)| *at <= n)
                            .map(|&(at, len)| (at, body[at..(at + len).min(n)].to_vec()))
                            .filter(|(at, b)| !b.is_empty() || *at == n)
                            .collect();
                        if expect.last().map(|(at, b)| (*at, b.len())) != Some((n, 0)) {
                            expect.push((n, Vec::new()));
                        }
                        assert_eq!(shown, &expect, "body {n}, want {want}, chunks {chunks:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_range_out_of_order_ends_the_peeking_and_framing_goes_on() {
        let a: Vec<u8> = (0..100u8).collect();
        let stream: Vec<u8> = [frame(&a), frame(&a)].concat();
        for chunks in [&[1][..], &[9], &[stream.len()]] {
            let (seen, forwarded) = peek_run(&stream, chunks, 4, &[(50, 4), (10, 4)], false);
            assert_eq!(forwarded, stream);
            assert_eq!(seen.len(), 2);
            for shown in &seen {
                assert_eq!(shown, &vec![(50, a[50..54].to_vec())]);
            }
        }
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
        // 34 bytes of the frame are left: a chunk going past its end takes the full path, one
        // ending with it does not.
        assert!(!reader.skip_within_frame(35));
        assert!(reader.skip_within_frame(34));
        assert!(reader.at_boundary());
        reader.feed(&mut &stream[..20], |_| Step::Done).unwrap();
        assert!(!reader.skip_within_frame(5_000));
        reader.feed(&mut &stream[20..], |_| Step::Done).unwrap();
        assert!(reader.at_boundary());
    }

    #[test]
    fn large_frames_are_skipped_not_copied() {
        let body = vec![1u8; 1 << 20];
        let stream = frame(&body);
        let mut src = crate::codec::source::CountingSource::new(&stream);
        let mut reader = FrameReader::new(10, 2 << 20);
        reader.feed(&mut src, |_| Step::Done).unwrap();
        assert_eq!(
            src.copied, HEAD_WINDOW,
            "one read of the head window, then skipped"
        );
        assert_eq!(src.reads, 1);
    }

    /// Feeds `stream` in chunks of the given sizes through a holding reader whose examiner
    /// replaces frames starting with `R` by their body reversed and doubled, drops frames
    /// starting with `D`, and passes the rest; returns what would be forwarded.
    fn run_holding(stream: &[u8], chunks: &[usize]) -> Vec<u8> {
        let mut reader = FrameReader::new(1, 1 << 20);
        reader.set_hold(true);
        let mut out = Vec::new();
        let mut pos = 0;
        for &c in chunks.iter().cycle() {
            if pos >= stream.len() {
                break;
            }
            let end = (pos + c.max(1)).min(stream.len());
            let chunk = &stream[pos..end];
            let mut edits = Edits::default();
            reader
                .feed_editing(
                    &mut &chunk[..],
                    |h| match (h.prefix.first(), h.collected) {
                        // Look at frames in two steps, like a header parser asking for more.
                        _ if !h.collected && h.prefix.len() < 3 && !h.last_look() => Step::Need(3),
                        (Some(b'R' | b'D'), false) => Step::Collect,
                        (Some(b'R'), true) => Step::Replace(reversed_twice(h.prefix)),
                        // Head-only: `H` + rest becomes `hh` + rest (the frame grows by one).
                        (Some(b'H'), false) => {
                            let mut head = ((h.frame_len + 1) as i32).to_be_bytes().to_vec();
                            head.extend_from_slice(b"hh");
                            head.extend_from_slice(&h.prefix[1..]);
                            Step::ReplaceHead(head)
                        }
                        (Some(b'D'), true) => Step::Replace(Vec::new()),
                        // Discarded as it streams: never collected, replaced by `x`.
                        (Some(b'X'), false) => Step::Discard(frame(b"x")),
                        (Some(b'X'), true) => panic!("a discarded frame was collected"),
                        _ => Step::Done,
                    },
                    &mut edits,
                )
                .unwrap();
            match edits.apply(&mut &chunk[..]) {
                Some((prefix_len, new_prefix)) => {
                    out.extend(new_prefix);
                    out.extend_from_slice(&chunk[prefix_len..]);
                }
                None => out.extend_from_slice(chunk),
            }
            pos = end;
        }
        out
    }

    fn reversed_twice(body: &[u8]) -> Vec<u8> {
        let mut out: Vec<u8> = body.iter().rev().copied().collect();
        out.extend(out.clone());
        frame(&out)
    }

    #[test]
    fn holding_reader_replaces_whole_frames_under_any_split() {
        let mut stream = frame(b"pass one");
        stream.extend(frame(b"R123456789"));
        stream.extend(frame(b""));
        stream.extend(frame(b"Dropped"));
        stream.extend(frame(&[b'x'; 40]));
        stream.extend(frame(b"Rab"));
        stream.extend(frame(b"Hello, world"));
        stream.extend(frame(b"H"));
        stream.extend(frame(b"Xdropped as it streams, whatever its size"));
        stream.extend(frame(b"X"));
        let mut expected = frame(b"pass one");
        expected.extend(frame(b"987654321R987654321R"));
        expected.extend(frame(b""));
        expected.extend(frame(&[b'x'; 40]));
        expected.extend(frame(b"baRbaR"));
        expected.extend(frame(b"hhello, world"));
        expected.extend(frame(b"hh"));
        expected.extend(frame(b"x"));
        expected.extend(frame(b"x"));
        assert_eq!(run_holding(&stream, &[stream.len()]), expected);
        for split in 1..stream.len() {
            assert_eq!(
                run_holding(&stream, &[split, stream.len()]),
                expected,
                "split at {split}"
            );
        }
        for size in 1..12 {
            assert_eq!(run_holding(&stream, &[size]), expected, "chunks of {size}");
        }
    }

    #[test]
    fn a_large_held_frame_is_not_kept_after_it_is_decided() {
        for last in [&b"Rreplaced"[..], b"Dropped", b"passed"] {
            let mut body = last.to_vec();
            body.resize(200_000, b'x');
            let stream = frame(&body);
            let mut reader = FrameReader::new(1, 1 << 20);
            reader.set_hold(true);
            for chunk in stream.chunks(16 * 1024) {
                let mut edits = Edits::default();
                reader
                    .feed_editing(
                        &mut &chunk[..],
                        |h| match (h.prefix.first(), h.collected) {
                            (Some(b'R' | b'D'), false) => Step::Collect,
                            (Some(b'R'), true) => Step::Replace(frame(b"small")),
                            (Some(b'D'), true) => Step::Replace(Vec::new()),
                            // Asks for the whole frame before letting it pass.
                            (_, false) if h.prefix.len() < h.frame_len => Step::Need(h.frame_len),
                            _ => Step::Done,
                        },
                        &mut edits,
                    )
                    .unwrap();
            }
            assert!(reader.at_boundary());
            assert!(
                reader.head.capacity() <= RETAINED_HEAD_BYTES,
                "{} bytes kept after a {}-byte frame starting {:?}",
                reader.head.capacity(),
                stream.len(),
                last.first().map(|b| *b as char)
            );
        }
    }

    #[test]
    fn holding_reader_forwards_passed_frames_without_edits() {
        let mut stream = frame(b"abc");
        stream.extend(frame(&[1u8; 100]));
        let mut reader = FrameReader::new(2, 1024);
        reader.set_hold(true);
        let mut edits = Edits::default();
        reader
            .feed_editing(&mut stream.as_slice(), |_| Step::Done, &mut edits)
            .unwrap();
        assert!(edits.is_empty());
        // A header split across chunks is held, then given back once decided.
        let mut edits = Edits::default();
        reader
            .feed_editing(&mut &stream[..5], |_| Step::Done, &mut edits)
            .unwrap();
        assert_eq!(edits.ops, vec![Edit::Drop { from: 0, to: 5 }]);
        let mut edits = Edits::default();
        reader
            .feed_editing(&mut &stream[5..], |_| Step::Done, &mut edits)
            .unwrap();
        assert_eq!(
            edits.ops,
            vec![Edit::Insert {
                at: 0,
                bytes: stream[..5].to_vec()
            }]
        );
    }
}
