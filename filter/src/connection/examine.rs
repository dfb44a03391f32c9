//! What a connection does with each frame its readers find: read the header, account for it,
//! run the pipeline, keep the correlation table, and turn the pipeline's flow into a frame step.

use std::rc::Rc;

use super::walking::{RequestWalk, ResponseWalk, Then};
use super::LazyNow;
use crate::codec::frame::FrameHead;
use crate::codec::inflight::Inflight;
use crate::codec::request::{parse_request, RequestParse};
use crate::codec::{response, response_fields, InflightTable, Step};
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
                    return Step::Done;
                }
                RequestParse::Done(head) => {
                    self.account_request(&head, m);
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
        let walker = match action {
            Action::Forward | Action::ReplaceHead(_) | Action::Replace(_) => {
                self.produce_walker(&p.head, h.frame_len)
            }
            _ => None,
        };
        match (walker, Then::of(action)) {
            (Some(walker), Ok(then)) => {
                let id = p.head.correlation_id;
                let unanswered = self.finish_request(p, h.frame_len, now, m, true);
                let sent_at_ns = now.get();
                self.start_request_walk(walker, h, then, id, sent_at_ns, unanswered, m)
            }
            (_, then) => {
                self.finish_request(p, h.frame_len, now, m, false);
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
        let Some(mut matched) = self.inflight.take(id) else {
            m.add(MetricKey::ResponsesUnmatched, 1);
            return Err(self.unmatched("a response answers no request in flight"));
        };
        if !matched.skipped.is_empty() {
            m.add(
                MetricKey::RequestsUnanswered,
                len_i64(matched.skipped.len()),
            );
            for s in &matched.skipped {
                self.unanswered(s, m);
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

    /// A response the filter cannot tie to a request: under a rule it could carry names the
    /// client must not see, and dropping it would leave the client waiting, so the connection
    /// closes; otherwise it passes.
    fn unmatched(&mut self, what: &str) -> Step {
        let unread = self.request_unread && self.request.is_none() && self.pipeline.may_guard();
        if !self.pipeline.guarded() && !unread {
            return Step::Done;
        }
        log::warn!(
            "connection {} (client_id {}): {what}, under a rule; closing the connection",
            self.id,
            self.identity.client_id.as_deref().unwrap_or("-")
        );
        self.must_close = true;
        Step::Discard(Vec::new())
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
        };
        if !head.expects_response {
            if walked {
                return Some(entry);
            }
            let record = RequestRecord::of(&entry, &self.identity, None, None);
            self.pipeline.finished(&record, m);
            return None;
        }
        if let Some(evicted) = self.inflight.push(entry) {
            m.add(MetricKey::InflightOverflow, 1);
            self.unanswered(&evicted, m);
            if evicted.plan.is_active() {
                // Its response could no longer be handled as planned.
                log::warn!(
                    "connection {}: correlation table full under a rule; closing the connection",
                    self.id
                );
                self.must_close = true;
            }
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
        // First time per connection at warn, then quietly: a broken client must not flood the log.
        if self.undecodable_logged {
            log::debug!("connection {}: {what}, forwarded untouched", self.id);
        } else {
            self.undecodable_logged = true;
            log::warn!(
                "connection {} (client_id {}): {what}, forwarded untouched (further ones logged at debug)",
                self.id,
                self.identity.client_id.as_deref().unwrap_or("-")
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
