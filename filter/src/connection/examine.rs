//! What a connection does with each frame its readers find: read the header, account for it,
//! run the pipeline, keep the correlation table, and turn the pipeline's flow into a frame step.

use std::rc::Rc;

use super::headers::PRODUCE;
use super::walking::{RequestWalk, ResponseWalk, Then};
use super::LazyNow;
use crate::client_log;
use crate::codec::frame::FrameHead;
use crate::codec::inflight::Inflight;
use crate::codec::request::{parse_request, RequestParse};
use crate::codec::{
    response, response_fields, Ambiguous, Answer, InflightTable, RequestHead, Step,
};
use crate::config::Config;
use crate::limits::BucketStore;
use crate::metrics::{len_i64, MetricKey, MetricsSink};
use crate::pipeline::held::{HeldBudget, Reservation};
use crate::pipeline::{
    Action, Flow, FrameView, Identity, Pipeline, RequestProgress, RequestRecord, ResponseProgress,
};

/// Everything of a connection but its two frame readers, so that the readers' examiners can
/// borrow it while the readers are being fed.
pub(super) struct ConnState {
    pub id: u32,
    pub config: Rc<Config>,
    pub inflight: InflightTable,
    pub identity: Identity,
    pub pipeline: Pipeline,
    /// The request frame being decided, and the response frame.
    request: Option<RequestProgress>,
    response: Option<ResponseProgress>,
    pub(super) budget: HeldBudget,
    pub(super) held_request: Reservation,
    pub(super) held_response: Reservation,
    /// The connection must close (fail closed, or a stage said so).
    pub must_close: bool,
    /// A request frame has begun whose header has not been read (set per response chunk).
    pub request_unread: bool,
    /// The longest hold a stage asked for since the host last took it.
    pub delay_ms: u32,
    /// The hold starts before the bytes of the chunk being read (`RequestCx::hold_first`).
    pub hold_first: bool,
    pub malformed: i64,
    pub undecodable_logged: bool,
    pub(super) held_logged: bool,
    /// The Produce request and the Fetch response being walked for observers, if any.
    pub(super) walking_request: Option<RequestWalk>,
    pub(super) walking_response: Option<ResponseWalk>,
    /// Shared by the VMs of every worker: limits' buckets, admitted keys, topic ids' names.
    pub(super) store: Rc<dyn BucketStore>,
}

impl ConnState {
    pub fn new(
        id: u32,
        config: Rc<Config>,
        budget: HeldBudget,
        limits: Rc<dyn BucketStore>,
    ) -> Self {
        Self {
            id,
            inflight: InflightTable::new(config.max_inflight_requests),
            identity: Identity::default(),
            pipeline: Pipeline::for_config(id, &config, Rc::clone(&limits)),
            store: limits,
            request: None,
            response: None,
            budget,
            held_request: Reservation::default(),
            held_response: Reservation::default(),
            must_close: false,
            request_unread: false,
            delay_ms: 0,
            hold_first: false,
            malformed: 0,
            undecodable_logged: false,
            held_logged: false,
            walking_request: None,
            walking_response: None,
            config,
        }
    }

    /// A request frame's first bytes (or all of it).
    pub fn examine_request<F: FnOnce() -> u64>(
        &mut self,
        h: &FrameHead<'_>,
        now: &mut LazyNow<F>,
        m: &mut dyn MetricsSink,
    ) -> Step {
        if self.must_close {
            // The connection is closing: nothing after the frame that closed it is looked at.
            return Step::Discard(Vec::new());
        }
        if let Some(peek) = h.peek {
            return self.request_peeked(peek, m);
        }
        // A new frame: a walk the reader stopped early is over.
        self.end_request_walk(m);
        let mut p = match self.request.take() {
            Some(p) => p,
            None => match parse_request(h.prefix, h.last_look()) {
                RequestParse::Need(n) => return Step::Need(n),
                RequestParse::Malformed => {
                    self.malformed += 1;
                    if self.pipeline.holds() {
                        // No correlation id to pair its answer with (a broker closes the
                        // connection for it anyway).
                        return self.step(Action::Close);
                    }
                    return Step::Done;
                }
                RequestParse::Done(head) => {
                    self.account_request(&head, m);
                    if let Some(step) = self.ambiguous(&head, m) {
                        return step;
                    }
                    RequestProgress::new(head)
                }
            },
        };
        if !p.software_read {
            if let Some(need) = self.read_client_software(&mut p, h) {
                self.request = Some(p);
                return need;
            }
        }
        if !p.facts_read {
            let need = self
                .read_commit_request(&mut p, h)
                .or_else(|| self.read_group_id(&mut p, h))
                .or_else(|| self.read_fetch_request(&mut p, h))
                .or_else(|| self.read_list_offsets_request(&mut p, h));
            if let Some(need) = need {
                self.request = Some(p);
                return need;
            }
            p.facts_read = true;
        }
        let frame = view(h);
        let flow = if self.pipeline.holds() {
            self.pipeline
                .run_request(&mut p, &self.identity, &frame, now.get(), m)
        } else {
            Flow::Done(Action::Forward)
        };
        let action = match flow {
            Flow::Head(n) => {
                self.request = Some(p);
                return Step::Need(n);
            }
            Flow::Frame => match self.hold(true, h.frame_len, p.head.api_key, m) {
                Ok(()) => {
                    self.request = Some(p);
                    return Step::Collect;
                }
                Err(code) => self.pipeline.refuse_request(&mut p, code),
            },
            Flow::Done(action) => action,
        };
        self.held_request.release(&self.budget);
        self.delay_ms = self.delay_ms.max(p.delay_ms);
        self.hold_first |= p.hold_first && p.delay_ms > 0;
        let walker = match action {
            Action::Forward | Action::ReplaceHead(_) | Action::Replace(_) => {
                self.produce_walker(&p.head, h.frame_len)
            }
            _ => None,
        };
        let forwarded = forwards(&action);
        match (walker, Then::of(action)) {
            (Some(walker), Ok(then)) => {
                let id = p.head.correlation_id;
                let unanswered = self.finish_request(p, h.frame_len, now, m, true, forwarded);
                let sent_at_ns = now.get();
                self.start_request_walk(walker, h, then, id, sent_at_ns, unanswered, m)
            }
            (_, then) => {
                self.finish_request(p, h.frame_len, now, m, false, forwarded);
                match then {
                    Ok(then) => self.step(then.into_action()),
                    Err(action) => self.step(action),
                }
            }
        }
    }

    /// A response frame's first bytes (or all of it).
    pub fn examine_response<F: FnOnce() -> u64>(
        &mut self,
        h: &FrameHead<'_>,
        now: &mut LazyNow<F>,
        m: &mut dyn MetricsSink,
    ) -> Step {
        if self.must_close {
            return Step::Discard(Vec::new());
        }
        if let Some(peek) = h.peek {
            return self.response_peeked(peek, m);
        }
        if self.reading_whole() {
            return self.whole_read(h.prefix, h.last_look(), m);
        }
        self.end_response_walk(m);
        let mut p = match self.response.take() {
            Some(p) => p,
            None => match self.match_response(h, now, m) {
                Ok(p) => p,
                Err(step) => return step,
            },
        };
        let frame = view(h);
        let action = match self
            .pipeline
            .run_response(&mut p, &self.identity, &frame, m)
        {
            Flow::Head(n) => {
                self.response = Some(p);
                return Step::Need(n);
            }
            Flow::Frame => match self.hold(false, h.frame_len, p.request.api_key, m) {
                Ok(()) => {
                    self.response = Some(p);
                    return Step::Collect;
                }
                Err(code) => self.pipeline.refuse_response(&p.request, code),
            },
            Flow::Done(action) => action,
        };
        self.held_response.release(&self.budget);
        self.delay_ms = self.delay_ms.max(p.delay_ms);
        self.response_decided(p, h, action, m)
    }

    /// A response the stages decided: walked as it goes on if it is a Fetch response and
    /// topics are counted (its record waits for the walk), its record due now otherwise.
    fn response_decided(
        &mut self,
        p: ResponseProgress,
        h: &FrameHead<'_>,
        action: Action,
        m: &mut dyn MetricsSink,
    ) -> Step {
        let latency_us = p.now_ns.saturating_sub(p.request.sent_at_ns) / 1_000;
        let (request, then) = match Then::of(action) {
            Ok(then) => match self.start_fetch_walk(p.request, latency_us, h, then, p.now_ns, m) {
                Ok(step) => return step,
                Err((request, then)) => (request, then.into_action()),
            },
            Err(action) => (p.request, action),
        };
        let response_bytes = h.frame_len.saturating_add(4);
        let record = RequestRecord::of(
            &request,
            &self.identity,
            Some(response_bytes),
            Some(latency_us),
        );
        self.pipeline.finished(&record, m);
        self.step(then)
    }

    /// Read the response's correlation id and take its request from the table. `Err`: the
    /// frame's step (it needs more bytes, or it answers nothing known).
    fn match_response<F: FnOnce() -> u64>(
        &mut self,
        h: &FrameHead<'_>,
        now: &mut LazyNow<F>,
        m: &mut dyn MetricsSink,
    ) -> Result<ResponseProgress, Step> {
        let Some(id) = response::correlation_id(h.prefix) else {
            if !h.last_look() {
                return Err(Step::Need(response::FIRST_WANT));
            }
            self.malformed += 1;
            return Err(self.unmatched("a response frame too short for a response header"));
        };
        if self.pipeline.wants_response_heads() {
            // Observers want the broker's throttle time and top-level error code: a few bytes
            // more of the frame (in the window the reader has already read).
            let want = self
                .inflight
                .find_mut(id)
                .and_then(|r| response_fields::head_want(r.api_key, r.api_version, h.frame_len));
            if let Some(want) = want {
                if h.prefix.len() < want && !h.last_look() {
                    return Err(Step::Need(want));
                }
            }
        }
        let strict = self.pipeline.holds();
        let mut matched = match self.inflight.take(id) {
            Answer::Request(matched) => matched,
            Answer::Acks0 => return Err(self.acks0_answered(strict, m)),
            Answer::Nothing => {
                m.add(MetricKey::ResponsesUnmatched, 1);
                return Err(self.unmatched("a response answers no request in flight"));
            }
        };
        if !matched.skipped.is_empty() {
            m.add(
                MetricKey::RequestsUnanswered,
                len_i64(matched.skipped.len()),
            );
            for s in &matched.skipped {
                self.unanswered(s, m);
            }
            if strict && matched.skipped.iter().any(|s| !s.answer_optional) {
                // Kafka answers in order: this answers none of the requests waiting first.
                self.unanswered(&matched.request, m);
                m.add(MetricKey::ResponsesUnmatched, 1);
                return Err(
                    self.unmatched("a response answers a request sent after others still waiting")
                );
            }
        }
        // A refused request's response answers its stand-in: nothing in it is the client's.
        if self.pipeline.wants_response_heads() && matched.request.plan.refused.is_none() {
            let r = &mut matched.request;
            r.response_head =
                response_fields::read_head(r.api_key, r.api_version, h.prefix, h.frame_len);
        }
        let r = matched.request;
        let now_ns = now.get();
        let latency_us = now_ns.saturating_sub(r.sent_at_ns) / 1_000;
        let response_bytes = h.frame_len.saturating_add(4);
        if r.plan.is_active() {
            // The stages decide first; its record is due once they have (see `decided`).
            return Ok(ResponseProgress::new(r, now_ns));
        }
        match self.start_response_walk(r, latency_us, h, now_ns, m) {
            Ok(step) => Err(step),
            Err(r) => {
                let record =
                    RequestRecord::of(&r, &self.identity, Some(response_bytes), Some(latency_us));
                self.pipeline.finished(&record, m);
                Err(Step::Done)
            }
        }
    }

    /// Observers see every request once: one the broker will not answer (passed over, evicted,
    /// or still waiting when the connection ends) without a response.
    fn unanswered(&mut self, request: &Inflight, m: &mut dyn MetricsSink) {
        let record = RequestRecord::of(request, &self.identity, None, None);
        self.pipeline.finished(&record, m);
    }

    /// The connection has ended: observers hear of the requests left unanswered, then end.
    pub fn end(&mut self, m: &mut dyn MetricsSink) {
        self.end_request_walk(m);
        self.end_response_walk(m);
        if let Some(p) = self.response.take() {
            // Its head was still being decided: it never reached the client.
            self.unanswered(&p.request, m);
        }
        let left: Vec<Inflight> = self.inflight.drain().collect();
        for r in &left {
            self.unanswered(r, m);
        }
        self.pipeline.end(m);
    }

    /// A response the filter cannot tie to the request it answers. With stages, whose
    /// decisions on it depend on that request (names to map back, topics to hide, a throttle to
    /// raise), the connection closes before any of it reaches the client: dropping it would
    /// leave the client waiting. A connection that is only observed passes it.
    fn unmatched(&mut self, what: &str) -> Step {
        if !self.pipeline.holds() {
            return Step::Done;
        }
        client_log::warn(
            self.id,
            format_args!(
                "connection {} (client_id {}): {what}; closing the connection",
                self.id,
                self.identity.client_id.as_deref().unwrap_or("-")
            ),
        );
        self.must_close = true;
        Step::Discard(Vec::new())
    }

    /// The broker answered an acks=0 Produce (Kafka never does). With stages the client gets
    /// what Kafka would send, nothing: the answer is dropped (its names were never mapped, and
    /// the client is not waiting for it). Observed only, it passes as it came.
    fn acks0_answered(&mut self, strict: bool, m: &mut dyn MetricsSink) -> Step {
        m.add(MetricKey::ResponsesAcks0, 1);
        if !strict {
            return Step::Done;
        }
        Step::Discard(Vec::new())
    }

    /// A request that would make pairing ambiguous: its id is still waiting for an answer, or
    /// the table is full. With stages the connection closes before the request is forwarded (a
    /// duplicate id could have one request's answer handled as another's; a forgotten entry
    /// would shift every answer after it). Observed only, it is counted and goes on.
    fn ambiguous(&mut self, head: &RequestHead, m: &mut dyn MetricsSink) -> Option<Step> {
        let why = match self
            .inflight
            .check(head.correlation_id, head.expects_response)
        {
            Ok(()) => return None,
            Err(Ambiguous::Duplicate) => {
                m.add(MetricKey::RequestsDuplicateCorrelation, 1);
                "reuses the correlation id of a request still waiting for its answer"
            }
            Err(Ambiguous::Full) => {
                if !self.pipeline.holds() {
                    // Counted when the oldest entry is forgotten (`finish_request`).
                    return None;
                }
                m.add(MetricKey::InflightOverflow, 1);
                "would overflow the correlation table (max_inflight_requests)"
            }
        };
        if !self.pipeline.holds() {
            return None;
        }
        client_log::warn(
            self.id,
            format_args!(
                "connection {} (client_id {}): a request (correlation id {}) {why}; closing the connection",
                self.id,
                head.client_id.as_ref().map_or("-", |c| c.as_str()),
                head.correlation_id
            ),
        );
        Some(self.step(Action::Close))
    }

    /// The request is decided: remember it until its response, or tell observers now if the
    /// broker will not answer it; when it is to be `walked`, such a request is given back
    /// instead (its record waits for the walk).
    fn finish_request<F: FnOnce() -> u64>(
        &mut self,
        p: RequestProgress,
        frame_len: usize,
        now: &mut LazyNow<F>,
        m: &mut dyn MetricsSink,
        walked: bool,
        forwarded: bool,
    ) -> Option<Inflight> {
        let head = &p.head;
        let entry = Inflight {
            correlation_id: head.correlation_id,
            api_key: head.api_key,
            api: head.api,
            api_version: head.api_version,
            sent_at_ns: now.get(),
            request_bytes: u32::try_from(frame_len.saturating_add(4)).unwrap_or(u32::MAX),
            plan: p.plan,
            facts: p.facts,
            response_head: Default::default(),
            answer_optional: head.api_key == PRODUCE
                && !(head.version_known && head.header_decoded),
        };
        if !head.expects_response {
            if forwarded {
                self.inflight.push_acks0(head.correlation_id);
            }
            if walked {
                return Some(entry);
            }
            let record = RequestRecord::of(&entry, &self.identity, None, None);
            self.pipeline.finished(&record, m);
            return None;
        }
        // With stages, `ambiguous` has closed the connection before a push could overflow.
        if let Some(evicted) = self.inflight.push(entry) {
            m.add(MetricKey::InflightOverflow, 1);
            self.unanswered(&evicted, m);
        }
        None
    }

    fn step(&mut self, action: Action) -> Step {
        match action {
            Action::Forward => Step::Done,
            Action::Replace(b) => Step::Replace(b),
            Action::ReplaceHead(b) => Step::ReplaceHead(b),
            Action::Discard(b) => Step::Discard(b),
            Action::Close => {
                self.must_close = true;
                Step::Discard(Vec::new())
            }
        }
    }

    pub fn log_undecodable(&mut self, what: &str) {
        let fate = if self.must_close {
            "closing the connection (stages configured)"
        } else {
            "forwarded untouched"
        };
        // First time per connection at warn, then quietly: a broken client must not flood the log.
        if self.undecodable_logged {
            log::debug!("connection {}: {what}, {fate}", self.id);
        } else {
            self.undecodable_logged = true;
            client_log::warn(
                self.id,
                format_args!(
                    "connection {} (client_id {}): {what}, {fate} (further ones logged at debug)",
                    self.id,
                    self.identity.client_id.as_deref().unwrap_or("-")
                ),
            );
        }
    }

    /// Give back what the connection holds of the VM's budget.
    pub fn release_held(&mut self) {
        self.held_request.release(&self.budget);
        self.held_response.release(&self.budget);
    }
}

fn view<'a>(h: &FrameHead<'a>) -> FrameView<'a> {
    FrameView {
        bytes: h.prefix,
        frame_len: h.frame_len,
        collected: h.collected,
        last_look: h.last_look(),
        shared: h.shared,
    }
}

/// Whether the request (or a stand-in answered in its place) goes on to the broker.
fn forwards(action: &Action) -> bool {
    match action {
        Action::Forward | Action::ReplaceHead(_) => true,
        Action::Replace(b) | Action::Discard(b) => !b.is_empty(),
        Action::Close => false,
    }
}
