//! Peeking: showing an examiner chosen byte ranges of a decided frame as it streams past.

use super::{FrameHead, FrameReader, Peeked, State, Step, MAX_HEAD_BYTES};

impl FrameReader {
    /// Ask for frame bytes `at..at + len` next (see [`Step::Peek`]); a range out of order or
    /// past the frame ends the peeking.
    pub(super) fn want_peek(&mut self, want_at: usize, want_len: usize) {
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
    pub(super) fn settle_peek<F>(&mut self, examine: &mut F)
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
}
