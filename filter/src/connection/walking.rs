//! Walking frames for observers that count per topic (see `codec::walk`): a Produce request as
//! it streams to the broker, a Fetch response as it streams back. Only frames that pass
//! unchanged are walked (a frame a stage holds or replaces is not); the records are never read.

use super::examine::ConnState;
use crate::codec::frame::{FrameHead, Peeked};
use crate::codec::inflight::Inflight;
use crate::codec::walk::{FetchWalker, ProduceWalker, Want};
use crate::codec::{RequestHead, Step};
use crate::metrics::MetricsSink;
use crate::pipeline::facts::Facts;
use crate::pipeline::RequestRecord;

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
/// Versions the walkers read (those `kafka-protocol` has schemas for, which the tests check).
const PRODUCE_VERSIONS: std::ops::RangeInclusive<i16> = 3..=13;
const FETCH_VERSIONS: std::ops::RangeInclusive<i16> = 4..=18;

/// A Produce request being walked.
pub(super) struct RequestWalk {
    correlation_id: i32,
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
        (head.api_key == PRODUCE
            && head.header_decoded
            && PRODUCE_VERSIONS.contains(&head.api_version)
            && self.pipeline.wants_topics())
        .then(|| ProduceWalker::produce(head.api_version, head.header_len, frame_len))
    }

    /// Start walking the request just finished (`entry`: kept until the walk ends when the
    /// broker will not answer it); the frame's step.
    pub(super) fn start_request_walk(
        &mut self,
        mut walker: ProduceWalker,
        correlation_id: i32,
        unanswered: Option<Inflight>,
        m: &mut dyn MetricsSink,
    ) -> Step {
        let want = walker.start();
        self.walking_request = Some(RequestWalk {
            correlation_id,
            walker,
            unanswered,
        });
        if want == Want::Done {
            self.end_request_walk(m);
        }
        to_step(want)
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
        let walked = Some(Box::new(Facts {
            produced: Some(w.walker.into_summary()),
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
        m: &mut dyn MetricsSink,
    ) -> Result<Step, Inflight> {
        let response_bytes = h.frame_len.saturating_add(4);
        let request = match self.start_whole_read(request, latency_us, h, m) {
            Ok(step) => return Ok(step),
            Err(request) => request,
        };
        if request.api_key != FETCH
            || !FETCH_VERSIONS.contains(&request.api_version)
            || !self.pipeline.wants_topics()
        {
            return Err(request);
        }
        // After the correlation id (the flexible header's tagged fields are the walker's).
        let mut walker = FetchWalker::fetch(request.api_version, 4, response_bytes - 4);
        let want = walker.start();
        self.walking_response = Some(ResponseWalk {
            request,
            latency_us,
            response_bytes,
            walker: Some(walker),
        });
        if want == Want::Done {
            self.end_response_walk(m);
        }
        Ok(to_step(want))
    }

    pub(super) fn response_peeked(&mut self, p: Peeked<'_>, m: &mut dyn MetricsSink) -> Step {
        let want = match self
            .walking_response
            .as_mut()
            .and_then(|w| w.walker.as_mut())
        {
            Some(w) => w.feed(p.at, p.bytes),
            None => Want::Done,
        };
        if want == Want::Done {
            self.end_response_walk(m);
        }
        to_step(want)
    }

    pub(super) fn end_response_walk(&mut self, m: &mut dyn MetricsSink) {
        let Some(w) = self.walking_response.take() else {
            return;
        };
        // What a whole read took of the VM's budget.
        self.held_response.release(&self.budget);
        let walked = w.walker.map(|w| w.into_summary());
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
