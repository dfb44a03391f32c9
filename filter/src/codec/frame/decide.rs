//! Acting on the examiner's answer for a frame: collect more, pass, hold, replace, drop or peek.

use bytes::Bytes;

use super::{Edits, FrameError, FrameHead, FrameReader, State, Step, MAX_HEAD_BYTES};

impl FrameReader {
    /// `pos`: where the frame's body begins in the chunk.
    pub(super) fn start_frame<F>(
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
    pub(super) fn examine_head<F>(
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
                self.state = Self::pass_rest(frame_len, have);
                self.release_head();
                return;
            }
            Step::ReplaceHeadPeek { head, at, len } if self.hold && !collected => {
                // The bytes shown are replaced: peeks start after them.
                self.replace_seen(edits, pos, head);
                self.head.clear();
                self.state = State::Peek {
                    frame_len,
                    pos: have,
                    held_from: have,
                    at: have,
                    len: 0,
                };
                self.want_peek(at, len);
                return self.settle_peek(examine);
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
            _ => Self::pass_rest(frame_len, have),
        };
        // Decided: the frame passes unchanged.
        self.release_carried(edits);
        self.size_buf.clear();
        self.release_head();
    }
}
