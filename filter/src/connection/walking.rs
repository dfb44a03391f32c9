//! Walking frames for observers and stages that count per topic (see `codec::walk`): a Produce
//! request as it streams to the broker, a Fetch response as it streams back. A frame is walked
//! as the client sees it, also when a stage changed it: a request as the client sent it (a
//! replaced head or frame is read from what the stage was shown), a response as the client gets
//! it (from the stage's replacement, then the rest of the frame). A frame refused or dropped is
//! not walked. The records are never read.

use super::examine::ConnState;
use crate::codec::frame::{FrameHead, Peeked};
use crate::codec::inflight::Inflight;
use crate::codec::walk::{
    walks_request, walks_response, FetchWalker, Layout, ProduceWalker, Walker, Want,
};
use crate::codec::{RequestHead, Step};
use crate::metrics::MetricsSink;
use crate::pipeline::facts::Facts;
use crate::pipeline::{Action, RequestRecord, TopicsCx};

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;

/// A Produce request being walked.
pub(super) struct RequestWalk {
    correlation_id: i32,
    sent_at_ns: u64,
    frame_bytes: u64,
    walker: ProduceWalker,
    /// A request the broker will not answer (acks=0): its record waits for the walk.
    unanswered: Option<Inflight>,
}

/// A Fetch response being walked, or a response being read whole (`walker` is `None`; see
/// `whole_reads`): its request's record waits for it.
pub(super) struct ResponseWalk {
    pub(super) request: Inflight,
    pub(super) latency_us: u64,
    pub(super) response_bytes: usize,
    pub(super) walker: Option<FetchWalker>,
    /// When the response was read.
    pub(super) now_ns: u64,
    /// The walker's offsets minus the reader's: a stage replaced the response's head by one
    /// of another length.
    pub(super) shift: isize,
}

/// How a walked frame goes on, as the stages decided.
pub(super) enum Then {
    /// Unchanged: the reader still holds the bytes shown, and peeks show them.
    Pass,
    /// Its head replaced by these bytes: the walk reads the bytes shown itself.
    Head(Vec<u8>),
    /// Replaced whole by these bytes (it was shown whole): walked in the VM at once.
    Whole(Vec<u8>),
}

impl Then {
    /// For an action that forwards the frame, or a version of it; `None` for the others.
    pub(super) fn of(action: Action) -> Result<Self, Action> {
        match action {
            Action::Forward => Ok(Then::Pass),
            Action::ReplaceHead(b) => Ok(Then::Head(b)),
            Action::Replace(b) => Ok(Then::Whole(b)),
            other => Err(other),
        }
    }

    pub(super) fn into_action(self) -> Action {
        match self {
            Then::Pass => Action::Forward,
            Then::Head(b) => Action::ReplaceHead(b),
            Then::Whole(b) => Action::Replace(b),
        }
    }

    /// The frame's step, given what the walk wants after reading the bytes shown (at the
    /// walker's offsets, `shift` past the reader's).
    fn step(self, want: Want, shift: isize) -> Step {
        match (self, unshift(want, shift)) {
            (Then::Pass, want) => to_step(want),
            (Then::Head(head), Want::Peek { at, len }) => Step::ReplaceHeadPeek { head, at, len },
            (Then::Head(head), Want::Done) => Step::ReplaceHead(head),
            (Then::Whole(bytes), _) => Step::Replace(bytes),
        }
    }
}

/// Feed a walker what it wants of the frame's bytes shown (`shown`, from the frame's start),
/// as the reader would: in frame order, a range that goes back ends the walk, and a frame shown
/// whole shows its end. What it wants past them is for the reader to peek.
fn walk_shown<L: Layout>(
    walker: &mut Walker<L>,
    mut want: Want,
    shown: &[u8],
    frame_len: usize,
) -> Want {
    let mut shown_to = 0;
    loop {
        match want {
            Want::Peek { at, len } if at < shown_to || (len == 0 && at < frame_len) => {
                return Want::Done
            }
            Want::Peek { at, len } if at < shown.len() => {
                let end = at.saturating_add(len).min(shown.len());
                shown_to = end;
                want = walker.feed(at, shown.get(at..end).unwrap_or_default());
            }
            Want::Peek { .. } if shown.len() >= frame_len => {
                // The frame's end, once, last.
                walker.feed(frame_len, &[]);
                return Want::Done;
            }
            other => return other,
        }
    }
}

/// A walker's want at the reader's offsets; one that falls before them ends the walk.
fn unshift(want: Want, shift: isize) -> Want {
    match want {
        Want::Peek { at, len } => match at.checked_add_signed(-shift) {
            Some(at) => Want::Peek { at, len },
            None => Want::Done,
        },
        Want::Done => Want::Done,
    }
}

/// A replacement frame's body (after its size field) and its length as the size field says.
fn replaced_frame(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let size = i32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    Some((bytes.get(4..)?, usize::try_from(size).ok()?))
}

fn to_step(want: Want) -> Step {
    match want {
        Want::Peek { at, len } => Step::Peek { at, len },
        Want::Done => Step::Done,
    }
}

impl ConnState {
    /// A walker for a request about to pass unchanged, if observers count per topic.
    pub(super) fn produce_walker(
        &self,
        head: &RequestHead,
        frame_len: usize,
    ) -> Option<ProduceWalker> {
        (walks_request(head.api_key, head.api_version, head.header_decoded)
            && self.pipeline.wants_topics())
        .then(|| ProduceWalker::produce(head.api_version, head.header_len, frame_len))
    }

    /// Start walking the request just finished (`entry`: kept until the walk ends when the
    /// broker will not answer it); the frame's step.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_request_walk(
        &mut self,
        mut walker: ProduceWalker,
        h: &FrameHead<'_>,
        then: Then,
        correlation_id: i32,
        sent_at_ns: u64,
        unanswered: Option<Inflight>,
        m: &mut dyn MetricsSink,
    ) -> Step {
        let mut want = walker.start();
        if !matches!(then, Then::Pass) {
            want = walk_shown(&mut walker, want, h.prefix, h.frame_len);
        }
        self.walking_request = Some(RequestWalk {
            correlation_id,
            sent_at_ns,
            frame_bytes: h.frame_len as u64 + 4,
            walker,
            unanswered,
        });
        if want == Want::Done {
            self.end_request_walk(m);
        }
        then.step(want, 0)
    }

    pub(super) fn request_peeked(&mut self, p: Peeked<'_>, m: &mut dyn MetricsSink) -> Step {
        let want = match &mut self.walking_request {
            Some(w) => w.walker.feed(p.at, p.bytes),
            None => Want::Done,
        };
        if want == Want::Done {
            self.end_request_walk(m);
        }
        to_step(want)
    }

    /// The request walk is over (finished, or the frame ended): what it found goes with the
    /// request's record.
    pub(super) fn end_request_walk(&mut self, m: &mut dyn MetricsSink) {
        let Some(w) = self.walking_request.take() else {
            return;
        };
        let produced = w.walker.into_summary();
        let cx = TopicsCx {
            correlation_id: w.correlation_id,
            api_key: PRODUCE,
            response: false,
            frame_bytes: w.frame_bytes,
            now_ns: w.sent_at_ns,
        };
        let hold = self.pipeline.topics_counted(&cx, &produced, m);
        self.delay_ms = self.delay_ms.max(hold);
        let walked = Some(Box::new(Facts {
            produced: Some(produced),
            ..Facts::default()
        }));
        match w.unanswered {
            Some(mut entry) => {
                entry.facts = walked;
                let record = RequestRecord::of(&entry, &self.identity, None, None);
                self.pipeline.finished(&record, m);
            }
            None => {
                if let Some(entry) = self.inflight.find_mut(w.correlation_id) {
                    entry.facts = walked;
                }
            }
        }
    }

    /// Walk a response that passes unchanged, if observers count per topic; `Err` gives the
    /// request back when it is not walked (its record is then due now).
    pub(super) fn start_response_walk(
        &mut self,
        request: Inflight,
        latency_us: u64,
        h: &FrameHead<'_>,
        now_ns: u64,
        m: &mut dyn MetricsSink,
    ) -> Result<Step, Inflight> {
        let request = match self.start_whole_read(request, latency_us, h, m) {
            Ok(step) => return Ok(step),
            Err(request) => request,
        };
        self.start_fetch_walk(request, latency_us, h, Then::Pass, now_ns, m)
            .map_err(|(request, _)| request)
    }

    /// Walk a Fetch response going on as `then` says, if observers or stages count per topic;
    /// `Err` gives the request back (with `then`) when it is not walked.
    pub(super) fn start_fetch_walk(
        &mut self,
        request: Inflight,
        latency_us: u64,
        h: &FrameHead<'_>,
        then: Then,
        now_ns: u64,
        m: &mut dyn MetricsSink,
    ) -> Result<Step, (Inflight, Then)> {
        // A refused request's response answers its stand-in, not a Fetch.
        if !walks_response(request.api_key, request.api_version)
            || request.plan.refused.is_some()
            || !self.pipeline.wants_topics()
        {
            return Err((request, then));
        }
        // The response as the client gets it: the stage's replacement, if any, then the rest.
        let (shown, frame_len) = match &then {
            Then::Pass => (h.prefix, h.frame_len),
            Then::Head(b) | Then::Whole(b) => match replaced_frame(b) {
                Some(frame) => frame,
                None => return Err((request, then)),
            },
        };
        let shift = shown.len() as isize - h.prefix.len() as isize;
        let response_bytes = frame_len.saturating_add(4);
        // After the correlation id (the flexible header's tagged fields are the walker's).
        let mut walker = FetchWalker::fetch(request.api_version, 4, frame_len);
        let mut want = walker.start();
        if !matches!(then, Then::Pass) {
            want = walk_shown(&mut walker, want, shown, frame_len);
        }
        self.walking_response = Some(ResponseWalk {
            request,
            latency_us,
            response_bytes,
            walker: Some(walker),
            now_ns,
            shift,
        });
        if want == Want::Done {
            self.end_response_walk(m);
        }
        Ok(then.step(want, shift))
    }

    pub(super) fn response_peeked(&mut self, p: Peeked<'_>, m: &mut dyn MetricsSink) -> Step {
        let (want, shift) = match self.walking_response.as_mut() {
            Some(ResponseWalk {
                walker: Some(w),
                shift,
                ..
            }) => match p.at.checked_add_signed(*shift) {
                Some(at) => (w.feed(at, p.bytes), *shift),
                None => (Want::Done, 0),
            },
            _ => (Want::Done, 0),
        };
        if want == Want::Done {
            self.end_response_walk(m);
        }
        to_step(unshift(want, shift))
    }

    pub(super) fn end_response_walk(&mut self, m: &mut dyn MetricsSink) {
        let Some(w) = self.walking_response.take() else {
            return;
        };
        // What a whole read took of the VM's budget.
        self.held_response.release(&self.budget);
        let walked = w.walker.map(|w| w.into_summary());
        if let Some(fetched) = &walked {
            let cx = TopicsCx {
                correlation_id: w.request.correlation_id,
                api_key: FETCH,
                response: true,
                frame_bytes: w.response_bytes as u64,
                now_ns: w.now_ns,
            };
            let hold = self.pipeline.topics_counted(&cx, fetched, m);
            self.delay_ms = self.delay_ms.max(hold);
        }
        let record = RequestRecord::of(
            &w.request,
            &self.identity,
            Some(w.response_bytes),
            Some(w.latency_us),
        );
        let record = match &walked {
            Some(walked) => record.with_fetched(walked),
            None => record,
        };
        self.pipeline.finished(&record, m);
    }
}
