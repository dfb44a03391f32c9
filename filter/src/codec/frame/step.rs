//! What a frame reader shows its examiner, and what the examiner answers.

use bytes::Bytes;

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
    /// As [`Step::ReplaceHead`], then peek the rest of the (original) frame as
    /// [`Step::Peek`] does, from `at` (at or after the bytes shown: the frame's bytes seen so
    /// far are the examiner's to read from the head it was shown).
    ReplaceHeadPeek {
        head: Vec<u8>,
        at: usize,
        len: usize,
    },
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

/// Upper bound on how much of one frame an examiner may collect: far above any Kafka header, far
/// below anything that could hurt the VM.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;

/// Bytes read from the host in one go at a frame's start: the size field and the header, and
/// the next frames if they are small. Each read is a host call that costs about as much as
/// copying tens of kilobytes (Envoy calls back into the VM to allocate), so one read of up to
/// this many bytes is cheaper than two of a few bytes; and it is bounded, so record data is
/// never copied in proportion to its size.
pub const HEAD_WINDOW: usize = 1024;
